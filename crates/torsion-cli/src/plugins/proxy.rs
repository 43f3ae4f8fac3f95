//! The `proxy` plugin: the tutorial's caching poetry proxy (Dave Peticolas'
//! `twisted-server-3/poetry-proxy.py`, with the cancellation of `twisted-server-4`).
//!
//! The first client makes the proxy download the poem from the poetry server; every later
//! client gets the cached copy at once. A client that leaves while the download runs
//! withdraws from it, and the download is cancelled when the last client waiting for it
//! has left. The poem's bytes go through unchanged.
//!
//! Beyond the tutorial:
//! - Clients that arrive while a download runs share it: 200 clients of a cold proxy make
//!   one connection to the server, not 200.
//! - A failed download (the server refuses, resets the connection, or closes it without
//!   sending anything) is logged and reported to every client waiting for it, whose
//!   connection is aborted (a reset, so that a client can tell a failure from an empty
//!   poem); it is not cached, so the next client tries again.
//! - A download counts as successful only when the server closes the connection cleanly
//!   after sending at least one byte.
//!
//! [`PoemCache`] is the tutorial's `ProxyService` (named for what it is, to keep it apart
//! from the application's [`Service`]s), [`PoetryProxyFactory`] and
//! [`PoetryProxyProtocol`] are the tutorial's classes, [`proxy_service`] is the service a
//! library user embeds, and [`ProxyPlugin`] the runner's
//! `torsion proxy --listen ENDPOINT --server ENDPOINT`.
//!
//! Invariant: at most one download runs at a time, and it runs only while at least one
//! client waits for it; every waiting client's Deferred fires exactly once (with the poem,
//! the download's failure, or `Cancelled` when it leaves). A download's report is accepted
//! only while it is the current one (its generation), so a cancelled download that ends
//! late changes nothing. No borrow of the cache's state is held while a Deferred fires or a
//! transport or endpoint is called.

use std::cell::RefCell;
use std::fmt;
use std::rc::{Rc, Weak};

use clap::{Arg, ArgMatches, Command};
use torsion::application::{Service, StreamServerEndpointService};
use torsion::defer::DeferredHandle;
use torsion::endpoints::{ClientEndpoint, ServerEndpoint, client_from_string, server_from_string};
use torsion::error::{Cancelled, ConnectionDone};
use torsion::log::Logger;
use torsion::net::{Address, Transport};
use torsion::protocol::{Factory, Protocol};
use torsion::{Deferred, Failure, Reactor, Resolver};

use super::required_string;
use crate::Plugin;

const LOG_TARGET: &str = "torsion_cli::plugins::proxy";

/// The poem, from the cache or downloaded once from the server for every client waiting
/// (the tutorial's `ProxyService`, with its downloads shared).
///
/// A cheap handle: clones share one cache.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use torsion::Reactor;
/// use torsion::endpoints::client_from_string;
/// use torsion::error::Cancelled;
/// use torsion_cli::plugins::proxy::PoemCache;
///
/// let reactor = Reactor::new().unwrap();
/// let server = client_from_string(&reactor, "tcp:127.0.0.1:10001").unwrap();
/// let cache = PoemCache::new(Rc::from(server));
/// assert!(cache.poem().is_none());
/// // Two requests while cold: one download, for both.
/// let mut first = cache.get_poem();
/// let mut second = cache.get_poem();
/// assert_eq!(cache.downloads_started(), 1);
/// // The first leaves: the download goes on for the second.
/// first.cancel();
/// assert!(first.take_result().unwrap().unwrap_err().check::<Cancelled>());
/// assert!(cache.is_downloading());
/// // The second leaves too: the download is cancelled.
/// second.cancel();
/// assert!(second.take_result().unwrap().unwrap_err().check::<Cancelled>());
/// assert!(!cache.is_downloading());
/// ```
#[derive(Clone)]
pub struct PoemCache {
    inner: Rc<CacheInner>,
}

struct CacheInner {
    server: Rc<dyn ClientEndpoint>,
    state: RefCell<CacheState>,
}

#[derive(Default)]
struct CacheState {
    poem: Option<Rc<[u8]>>,
    download: Option<Download>,
    /// The next waiter's id.
    next_waiter: u64,
    /// How many downloads were started; also the current download's generation.
    downloads_started: u64,
}

/// The download in progress and the clients waiting for it.
struct Download {
    generation: u64,
    waiters: Vec<(u64, Resolver<Rc<[u8]>>)>,
    link: Rc<DownloadLink>,
}

/// How to stop a download: the connection attempt, then the connection.
#[derive(Default)]
struct DownloadLink {
    connecting: RefCell<Option<DeferredHandle>>,
    transport: RefCell<Option<Transport>>,
}

impl DownloadLink {
    fn cancel(&self) {
        let transport = self.transport.borrow_mut().take();
        let connecting = self.connecting.borrow_mut().take();
        match transport {
            Some(transport) => transport.abort_connection(),
            None => {
                if let Some(connecting) = connecting {
                    connecting.cancel();
                }
            }
        }
    }
}

impl PoemCache {
    /// An empty cache that downloads the poem from `server` (a poetry server: it sends the
    /// poem, then closes the connection).
    pub fn new(server: Rc<dyn ClientEndpoint>) -> PoemCache {
        PoemCache {
            inner: Rc::new(CacheInner {
                server,
                state: RefCell::new(CacheState::default()),
            }),
        }
    }

    /// The poem (Twisted's `get_poem`): already fired when it is cached (Twisted's
    /// `succeed(self.poem)`); otherwise it fires once the download, started now unless one
    /// runs already, ends.
    ///
    /// Cancelling the Deferred withdraws this request; when no request is left, the
    /// download is cancelled (`twisted-server-4`'s canceller).
    ///
    /// # Errors
    ///
    /// The Deferred fails with why the download failed (the server refused, reset the
    /// connection, or sent nothing), or with [`Cancelled`] when cancelled.
    pub fn get_poem(&self) -> Deferred<Rc<[u8]>> {
        let inner = &self.inner;
        let mut st = inner.state.borrow_mut();
        if let Some(poem) = &st.poem {
            tracing::debug!(target: LOG_TARGET, "using the cached poem");
            return Deferred::succeed(poem.clone());
        }
        let id = st.next_waiter;
        st.next_waiter += 1;
        let weak = Rc::downgrade(inner);
        let (resolver, d) = Deferred::with_canceller(move |_resolver| {
            if let Some(inner) = weak.upgrade() {
                CacheInner::withdraw(&inner, id);
            }
        });
        let start = match &mut st.download {
            Some(download) => {
                download.waiters.push((id, resolver));
                None
            }
            None => {
                st.downloads_started += 1;
                let link = Rc::new(DownloadLink::default());
                let generation = st.downloads_started;
                st.download = Some(Download {
                    generation,
                    waiters: vec![(id, resolver)],
                    link: link.clone(),
                });
                Some((generation, link))
            }
        };
        drop(st);
        if let Some((generation, link)) = start {
            CacheInner::start_download(inner, generation, link);
        }
        d
    }

    /// The cached poem, if it has been downloaded.
    pub fn poem(&self) -> Option<Rc<[u8]>> {
        self.inner.state.borrow().poem.clone()
    }

    /// Whether a download is running.
    pub fn is_downloading(&self) -> bool {
        self.inner.state.borrow().download.is_some()
    }

    /// How many downloads have been started, whatever became of them.
    pub fn downloads_started(&self) -> u64 {
        self.inner.state.borrow().downloads_started
    }

    /// Where the poem is downloaded from.
    pub fn server(&self) -> &Rc<dyn ClientEndpoint> {
        &self.inner.server
    }
}

impl CacheInner {
    fn start_download(inner: &Rc<CacheInner>, generation: u64, link: Rc<DownloadLink>) {
        tracing::info!(
            target: LOG_TARGET,
            "fetching the poem from {:?}",
            inner.server
        );
        let factory = Rc::new(DownloadFactory {
            cache: Rc::downgrade(inner),
            generation,
            link: link.clone(),
        });
        let connecting = inner.server.connect(factory);
        *link.connecting.borrow_mut() = Some(connecting.handle());
        let weak = Rc::downgrade(inner);
        // The connection's end reports the poem; a failed attempt reports itself here.
        drop(
            connecting
                .map(|_transport| ())
                .add_errback(move |failure: Failure| {
                    if let Some(inner) = weak.upgrade() {
                        CacheInner::finish(&inner, generation, Err(failure));
                    }
                    Ok::<(), Failure>(())
                }),
        );
    }

    /// The download `generation` ended: cache the poem, and tell everyone waiting.
    fn finish(inner: &Rc<CacheInner>, generation: u64, result: Result<Rc<[u8]>, Failure>) {
        let waiters = {
            let mut st = inner.state.borrow_mut();
            if st.download.as_ref().map(|d| d.generation) != Some(generation) {
                return; // cancelled, or reported already
            }
            let Some(download) = st.download.take() else {
                return;
            };
            if let Ok(poem) = &result {
                st.poem = Some(poem.clone());
            }
            download.waiters
        };
        match result {
            Ok(poem) => {
                for (_, waiter) in waiters {
                    let _ = waiter.try_callback(poem.clone());
                }
            }
            Err(failure) => {
                Logger::new(LOG_TARGET).error(format_args!(
                    "downloading the poem from {:?} failed ({} client(s) waiting): {failure}",
                    inner.server,
                    waiters.len()
                ));
                for (_, waiter) in waiters {
                    let _ = waiter.try_errback(failure.clone());
                }
            }
        }
    }

    /// The request `id` was cancelled: forget it, and cancel the download if it was the
    /// last one waiting.
    fn withdraw(inner: &Rc<CacheInner>, id: u64) {
        let (withdrawn, abandoned) = {
            let mut st = inner.state.borrow_mut();
            let Some(download) = st.download.as_mut() else {
                return;
            };
            let withdrawn = download
                .waiters
                .iter()
                .position(|(waiter, _)| *waiter == id)
                .map(|at| download.waiters.remove(at));
            let abandoned = if download.waiters.is_empty() {
                st.download.take()
            } else {
                None
            };
            (withdrawn, abandoned)
        };
        drop(withdrawn);
        if let Some(download) = abandoned {
            tracing::info!(
                target: LOG_TARGET,
                "cancelling the poem download from {:?}: no client is waiting for it",
                inner.server
            );
            download.link.cancel();
        }
    }
}

impl fmt::Debug for PoemCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.state.borrow();
        f.debug_struct("PoemCache")
            .field("server", &self.inner.server)
            .field("cached", &st.poem.as_ref().map(|p| p.len()))
            .field("waiting", &st.download.as_ref().map(|d| d.waiters.len()))
            .field("downloads_started", &st.downloads_started)
            .finish()
    }
}

/// Builds the protocol of one download.
struct DownloadFactory {
    cache: Weak<CacheInner>,
    generation: u64,
    link: Rc<DownloadLink>,
}

impl Factory for DownloadFactory {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(DownloadProtocol {
            cache: self.cache.clone(),
            generation: self.generation,
            link: self.link.clone(),
            poem: Vec::new(),
        }))
    }
}

/// Collects the poem until the server closes (the client side's `PoetryProtocol`).
struct DownloadProtocol {
    cache: Weak<CacheInner>,
    generation: u64,
    link: Rc<DownloadLink>,
    poem: Vec<u8>,
}

impl Protocol for DownloadProtocol {
    fn connection_made(&mut self, transport: Transport) {
        *self.link.transport.borrow_mut() = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.poem.extend_from_slice(data);
    }

    fn connection_lost(&mut self, reason: Failure) {
        let taken = self.link.transport.borrow_mut().take();
        drop(taken);
        let result = if !reason.check::<ConnectionDone>() {
            Err(reason)
        } else if self.poem.is_empty() {
            Err(Failure::msg(
                "the server closed the connection without sending a poem",
            ))
        } else {
            Ok(Rc::from(std::mem::take(&mut self.poem)))
        };
        if let Some(inner) = self.cache.upgrade() {
            CacheInner::finish(&inner, self.generation, result);
        }
    }
}

/// Serves the poem to one client of the proxy (Twisted's `PoetryProxyProtocol`); if the
/// client leaves before the poem arrives, its request is cancelled.
pub struct PoetryProxyProtocol {
    factory: Rc<PoetryProxyFactory>,
    request: Option<DeferredHandle>,
}

impl Protocol for PoetryProxyProtocol {
    fn connection_made(&mut self, transport: Transport) {
        let served = self.factory.cache.get_poem().add_both(move |result| {
            match result {
                Ok(poem) => {
                    transport.write(&poem);
                    transport.lose_connection();
                }
                // The client left.
                Err(failure) if failure.check::<Cancelled>() => {}
                // Logged by the cache; a reset tells the client it got no poem.
                Err(_) => transport.abort_connection(),
            }
            Ok::<(), Failure>(())
        });
        self.request = Some(served.handle());
    }

    fn connection_lost(&mut self, _reason: Failure) {
        if let Some(request) = self.request.take()
            && !request.is_fired()
        {
            request.cancel();
        }
    }
}

impl fmt::Debug for PoetryProxyProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoetryProxyProtocol")
            .field(
                "waiting",
                &self.request.as_ref().is_some_and(|r| !r.is_fired()),
            )
            .finish()
    }
}

/// Holds the cache for the proxy's connections (Twisted's `PoetryProxyFactory`).
#[derive(Debug)]
pub struct PoetryProxyFactory {
    cache: PoemCache,
}

impl PoetryProxyFactory {
    /// A factory serving the poem from `cache`.
    pub fn new(cache: PoemCache) -> Rc<PoetryProxyFactory> {
        Rc::new(PoetryProxyFactory { cache })
    }

    /// The cache it serves from.
    pub fn cache(&self) -> &PoemCache {
        &self.cache
    }
}

impl Factory for PoetryProxyFactory {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(PoetryProxyProtocol {
            factory: self,
            request: None,
        }))
    }
}

/// A stopped service that serves `cache`'s poem on `endpoint` once started (Twisted's
/// `StreamServerEndpointService(endpoint, PoetryProxyFactory(ProxyService(...)))`).
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use torsion::Reactor;
/// use torsion::application::Service;
/// use torsion::endpoints::{client_from_string, server_from_string};
/// use torsion_cli::plugins::proxy::{PoemCache, proxy_service};
///
/// let reactor = Reactor::new().unwrap();
/// let server = client_from_string(&reactor, "tcp:127.0.0.1:10001").unwrap();
/// let listen = server_from_string(&reactor, "tcp:0:interface=127.0.0.1").unwrap();
/// let cache = PoemCache::new(Rc::from(server));
/// let service = proxy_service(listen, cache.clone());
/// service.start_service().unwrap();
/// assert!(service.port().is_some());
/// assert!(cache.poem().is_none()); // nothing is fetched before a client asks
/// drop(service.stop_service());
/// ```
pub fn proxy_service(
    endpoint: Box<dyn ServerEndpoint>,
    cache: PoemCache,
) -> Rc<StreamServerEndpointService> {
    StreamServerEndpointService::new(endpoint, PoetryProxyFactory::new(cache))
}

/// `torsion proxy --listen ENDPOINT --server ENDPOINT`: the caching poetry proxy as a
/// runner plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyPlugin;

impl Plugin for ProxyPlugin {
    fn name(&self) -> &'static str {
        "proxy"
    }

    fn description(&self) -> &'static str {
        "Caching poetry proxy: downloads the poem from a poetry server once, serves it to all"
    }

    fn command(&self) -> Command {
        Command::new(self.name())
            .about(self.description())
            .long_about(
                "Caching poetry proxy (the Twisted tutorial's poetry-proxy.py, with \
                 twisted-server-4's cancellation): the first client makes the proxy \
                 download the poem from --server; later clients get the cached copy. \
                 Clients that arrive during a download share it, and a download is \
                 cancelled when every client waiting for it has left. A failed download \
                 (refused, reset, or closed without a poem) is logged, the waiting clients' \
                 connections are reset, and nothing is cached: the next client tries again.",
            )
            .arg(super::listen_arg())
            .arg(
                Arg::new("server")
                    .long("server")
                    .value_name("ENDPOINT")
                    .required(true)
                    .help(
                        "The poetry server, as a client endpoint string: tcp:HOST:PORT[:timeout=SECS], \
                         unix:PATH",
                    ),
            )
    }

    fn make_service(
        &self,
        reactor: &Reactor,
        options: &ArgMatches,
    ) -> Result<Rc<dyn Service>, Failure> {
        let listen = required_string(options, "listen")?;
        let server = required_string(options, "server")?;
        let server: Rc<dyn ClientEndpoint> = Rc::from(client_from_string(reactor, server)?);
        let endpoint = server_from_string(reactor, listen)?;
        Ok(proxy_service(endpoint, PoemCache::new(server)))
    }
}
