//! The HTTP client (Twisted's `twisted.web.client`): the [`Agent`] and what wraps it.
//!
//! - [`Agent`] (Twisted's `Agent`) requests `http:` and `https:` URLs (HTTPS verified
//!   against the system's roots unless told otherwise) over the connections of a
//!   persistent [`Pool`] (Twisted's `HTTPConnectionPool(persistent=True)`), with connect
//!   and whole-request timeouts on by default. Its Deferred fires with the [`Response`] as
//!   soon as the head has arrived; the body is then read with
//!   [`Response::collect_body`] (Twisted's `readBody`) or streamed to a [`BodyReceiver`]
//!   (Twisted's `deliverBody`), with back-pressure through its [`BodyControl`].
//! - A request's [`Body`] is empty, bytes, or a [`BodyProducer`] (Twisted's
//!   `IBodyProducer`; [`FileBodyProducer`] reads a file).
//! - [`RedirectAgent`] follows redirects and [`ContentDecoderAgent`] decodes gzip bodies,
//!   each around any [`HttpClient`] (Twisted's `IAgent`), so they stack.
//! - [`get_page`] gets a page's body in one call (Twisted's removed `getPage`).
//!
//! Invariant: every request's Deferred fires exactly once, with the response or with the
//! reason (an [`AgentError`], a connection failure, a [`TlsError`](torsion::tls::TlsError));
//! a response's body ends exactly once for its receiver; and a connection that is not
//! back in the pool at the end of an exchange is closed.

mod body;
mod connection;
mod decoder;
mod error;
mod pool;
mod redirect;
mod response;
mod target;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use http::{HeaderMap, Method};
use torsion::defer::DeferredHandle;
use torsion::endpoints::{ClientEndpoint, HostnameEndpoint, TlsClientEndpoint};
use torsion::time::{DelayedCall, ReactorTime};
use torsion::tls::ClientConfig;
use torsion::{Deferred, Failure, Reactor, Resolver};

pub use body::{Body, BodyProducer, BodyWriter, FILE_BODY_READ_SIZE, FileBodyProducer};
pub use decoder::ContentDecoderAgent;
pub use error::AgentError;
pub use pool::{DEFAULT_CACHED_CONNECTION_TIMEOUT, DEFAULT_MAX_PERSISTENT_PER_HOST, Pool};
pub use redirect::{DEFAULT_MAX_REDIRECTS, RedirectAgent};
pub use response::{BodyControl, BodyReceiver, Response};

use connection::{Ending, HttpConnection, Outgoing, request_head};
use pool::PoolKey;
use target::Target;

/// Makes HTTP requests and gives their responses (Twisted's `IAgent`): the [`Agent`], and
/// the agents that wrap one ([`RedirectAgent`], [`ContentDecoderAgent`]).
pub trait HttpClient {
    /// Requests `url` (Twisted's `IAgent.request`); the Deferred fires with the response
    /// once its head has arrived.
    fn request(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Body,
    ) -> Deferred<Response>;

    /// Requests `url` and reads the whole body (Twisted's `request` then `readBody`): the
    /// response (its body read) and the body.
    fn fetch(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Body,
    ) -> Deferred<(Response, Vec<u8>)> {
        self.request(method, url, headers, body)
            .add_callback(Response::collect_keeping_head)
    }
}

/// The connect timeout by default (Twisted's 30 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The whole-request timeout by default (Twisted's Agent has none: its #5773).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Makes HTTP/1.1 requests over pooled connections (Twisted's `Agent`).
///
/// Clones share the agent's [`Pool`]. The timeouts are on by default: 30 s to connect,
/// and 60 s for the whole request, from the call until the body has been read to its end
/// (the response head, then the body); a body not read in time ends with
/// [`AgentError::Timeout`].
///
/// # Examples
///
/// A request to a local site, the head first, then the body:
///
/// ```
/// use std::rc::Rc;
/// use torsion::net::tcp::ListenOptions;
/// use torsion::{Failure, Reactor};
/// use torsion_web::agent::{Agent, Body, HttpClient, Response};
/// use torsion_web::{Render, Request, Resource, Site};
///
/// struct Hello;
/// impl Resource for Hello {
///     fn is_leaf(&self) -> bool {
///         true
///     }
///     fn render_get(&self, _request: &Rc<Request>) -> Render {
///         Render::text("hello world")
///     }
/// }
///
/// let reactor = Reactor::new().unwrap();
/// let options = ListenOptions { interface: [127, 0, 0, 1].into(), ..Default::default() };
/// let port = reactor.listen_tcp_with(0, Site::new(Rc::new(Hello)), options).unwrap();
/// let url = format!("http://127.0.0.1:{}/", port.host().port().unwrap());
///
/// let agent = Agent::new(&reactor);
/// let (pool, r) = (agent.pool().clone(), reactor.clone());
/// let _done = agent
///     .fetch(http::Method::GET, &url, http::HeaderMap::new(), Body::Empty)
///     .add_both(move |fetched: Result<(Response, Vec<u8>), Failure>| {
///         let (response, body) = fetched.unwrap();
///         assert_eq!((response.status.as_u16(), &body[..]), (200, &b"hello world"[..]));
///         assert_eq!(pool.idle_connections(), 1, "kept for the next request");
///         pool.close_cached_connections().map(move |()| {
///             let _ = r.stop();
///         })
///     });
/// reactor.run().unwrap();
/// ```
#[derive(Clone)]
pub struct Agent {
    reactor: Reactor,
    pool: Pool,
    tls: Option<ClientConfig>,
    /// The system's roots, made once for the agent and its clones (one configuration, so
    /// one pool key).
    default_tls: Rc<RefCell<Option<ClientConfig>>>,
    connect_timeout: Option<Duration>,
    timeout: Option<Duration>,
}

impl Agent {
    /// An agent with its own persistent [`Pool`] and the default timeouts, verifying HTTPS
    /// servers against the system's roots.
    pub fn new(reactor: &Reactor) -> Agent {
        Agent {
            reactor: reactor.clone(),
            pool: Pool::new(reactor),
            tls: None,
            default_tls: Rc::default(),
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            timeout: Some(DEFAULT_REQUEST_TIMEOUT),
        }
    }

    /// Uses `pool` (Twisted's `Agent(reactor, pool=pool)`): share one between agents, or
    /// give [`Pool::non_persistent`] for a new connection per request.
    pub fn with_pool(mut self, pool: Pool) -> Agent {
        self.pool = pool;
        self
    }

    /// The agent's pool (Twisted's `Agent._pool`).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// With this TLS configuration for `https:` URLs (Twisted's `contextFactory`).
    pub fn tls(mut self, config: ClientConfig) -> Agent {
        self.tls = Some(config);
        self
    }

    /// With another connect timeout (Twisted's `connectTimeout`; `None`: the system's).
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Agent {
        self.connect_timeout = timeout;
        self
    }

    /// With another whole-request timeout, which covers the response head and the whole
    /// body (`None`: none).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Agent {
        self.timeout = timeout;
        self
    }

    /// Requests `url` (Twisted's `Agent.request`); the Deferred fires with the response
    /// once its head has arrived.
    ///
    /// `headers` are sent as given, but for the framing ones: `Host` is added if missing,
    /// `Content-Length` or `Transfer-Encoding: chunked` follows from `body`, and
    /// `Connection: close` is sent when the pool is not persistent or `headers` ask for it
    /// (other `Connection` options are dropped); a connection whose request said close is
    /// not kept, whatever the response says. A request on a kept
    /// connection that the server had closed is sent again on a new one when its method
    /// is idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) and its body can be sent
    /// again; otherwise it fails with [`AgentError::ResponseNeverReceived`].
    ///
    /// # Errors
    ///
    /// The Deferred fails with [`AgentError::InvalidUrl`] at once for a URL that cannot be
    /// requested, and later with why the request failed: the connection's failure
    /// (refused, a DNS error, a [`TlsError`](torsion::tls::TlsError)), a timeout, or
    /// another [`AgentError`].
    pub fn request(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Body,
    ) -> Deferred<Response> {
        let target = match Target::parse(url) {
            Ok(target) => target,
            Err(error) => return Deferred::fail(error),
        };
        let tls = if target.https {
            match self.tls_config() {
                Ok(config) => Some(config),
                Err(failure) => return Deferred::fail(failure),
            }
        } else {
            None
        };
        let key = PoolKey {
            https: target.https,
            host: target.host.clone(),
            port: target.port,
            tls,
        };
        let (head, closes) =
            request_head(&method, &target, &headers, &body, self.pool.is_persistent());
        let (resolver, d) = Deferred::new();
        let call = Rc::new(Call {
            agent: self.clone(),
            method,
            url: url.to_string(),
            key,
            head,
            closes,
            body: RefCell::new(Some(body)),
            resolver: RefCell::new(Some(resolver)),
            timer: RefCell::new(None),
            conn: RefCell::new(None),
            connecting: RefCell::new(None),
        });
        if let Some(timeout) = self.timeout {
            let weak = Rc::downgrade(&call);
            let timer = self.reactor.call_later(timeout, move || {
                if let Some(call) = weak.upgrade() {
                    call.time_out(timeout);
                }
            });
            *call.timer.borrow_mut() = Some(timer);
        }
        call.attempt(false);
        d
    }

    /// The TLS configuration for `https:`: the one given, or the system's roots.
    fn tls_config(&self) -> Result<ClientConfig, Failure> {
        if let Some(config) = &self.tls {
            return Ok(config.clone());
        }
        if let Some(config) = self.default_tls.borrow().as_ref() {
            return Ok(config.clone());
        }
        let config = ClientConfig::new().map_err(Failure::new)?;
        *self.default_tls.borrow_mut() = Some(config.clone());
        Ok(config)
    }

    /// Where to connect for `key`.
    fn endpoint(&self, key: &PoolKey) -> Box<dyn ClientEndpoint> {
        let tcp =
            HostnameEndpoint::new(&self.reactor, &key.host, key.port).timeout(self.connect_timeout);
        match &key.tls {
            Some(config) => Box::new(TlsClientEndpoint::new(
                Box::new(tcp),
                config.clone(),
                &key.host,
            )),
            None => Box::new(tcp),
        }
    }
}

impl HttpClient for Agent {
    fn request(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Body,
    ) -> Deferred<Response> {
        Agent::request(self, method, url, headers, body)
    }
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("pool", &self.pool)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Whether a request with `method` may be sent twice (RFC 9110 §9.2.2).
fn idempotent(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

/// One call of [`Agent::request`], through its attempts (a retry is a second one).
struct Call {
    agent: Agent,
    method: Method,
    url: String,
    key: PoolKey,
    head: Vec<u8>,
    /// The head says `Connection: close`.
    closes: bool,
    /// The body, until it is sent for the last time.
    body: RefCell<Option<Body>>,
    resolver: RefCell<Option<Resolver<Response>>>,
    timer: RefCell<Option<DelayedCall>>,
    /// The connection and exchange in flight.
    conn: RefCell<Option<(HttpConnection, u64)>>,
    /// The connection attempt in flight.
    connecting: RefCell<Option<DeferredHandle>>,
}

impl Call {
    /// Gets a connection (`fresh`: a new one, for a retry) and sends the request on it.
    fn attempt(self: &Rc<Self>, fresh: bool) {
        let pool = &self.agent.pool;
        let endpoint = self.agent.endpoint(&self.key);
        let got = if fresh {
            pool.new_connection(endpoint.as_ref())
                .map(|conn| (conn, false))
        } else {
            pool.get_connection(&self.key, endpoint.as_ref())
        };
        *self.connecting.borrow_mut() = Some(got.handle());
        let (me, me2) = (self.clone(), self.clone());
        drop(got.add_callbacks(
            move |(conn, reused): (HttpConnection, bool)| {
                me.send(conn, reused, fresh);
                Ok::<(), Failure>(())
            },
            move |failure: Failure| {
                me2.finish(Err(failure));
                Ok::<(), Failure>(())
            },
        ));
    }

    /// Sends the request on `conn`.
    fn send(self: &Rc<Self>, conn: HttpConnection, reused: bool, fresh: bool) {
        self.connecting.borrow_mut().take();
        if self.resolver.borrow().is_none() {
            // Timed out while connecting: keep the connection for another request.
            self.agent.pool.put_connection(self.key.clone(), conn);
            return;
        }
        let retryable = reused
            && !fresh
            && self.agent.pool.retries()
            && idempotent(&self.method)
            && self.body.borrow().as_ref().is_some_and(Body::is_replayable);
        let body = if retryable {
            self.body.borrow().clone()
        } else {
            self.body.borrow_mut().take()
        }
        .unwrap_or_default();
        let out = Outgoing {
            method: self.method.clone(),
            url: self.url.clone(),
            head: self.head.clone(),
            closes: self.closes,
            body,
        };
        let me = self.clone();
        let response = conn.request(out, Box::new(move |ending| me.exchange_done(ending)));
        if response.is_fired() {
            // Failed at once: the connection was closed.
        } else {
            *self.conn.borrow_mut() = Some((conn.clone(), conn.seq()));
        }
        let (me, me2) = (self.clone(), self.clone());
        drop(response.add_callbacks(
            move |response: Response| {
                me.finish(Ok(response));
                Ok::<(), Failure>(())
            },
            move |failure: Failure| {
                let stale = failure
                    .downcast_ref::<AgentError>()
                    .is_some_and(|e| matches!(e, AgentError::ResponseNeverReceived { .. }));
                if retryable && stale && me2.resolver.borrow().is_some() {
                    me2.attempt(true);
                } else {
                    me2.finish(Err(failure));
                }
                Ok::<(), Failure>(())
            },
        ));
    }

    /// An exchange is over: the connection goes back to the pool or is closed.
    fn exchange_done(&self, ending: Ending) {
        self.conn.borrow_mut().take();
        if ending.answered {
            self.cancel_timer();
        }
        if let Some(conn) = ending.conn {
            self.agent.pool.put_connection(self.key.clone(), conn);
        }
    }

    /// Fires the request's Deferred (once; a failure also ends the timer).
    fn finish(&self, result: Result<Response, Failure>) {
        let resolver = self.resolver.borrow_mut().take();
        let Some(resolver) = resolver else { return };
        let _ = match result {
            Ok(response) => resolver.try_callback(response),
            Err(failure) => {
                self.cancel_timer();
                resolver.try_errback(failure)
            }
        };
    }

    fn cancel_timer(&self) {
        let timer = self.timer.borrow_mut().take();
        if let Some(timer) = timer {
            let _ = timer.cancel();
        }
    }

    /// The whole-request timeout: fails the request, or ends its body.
    fn time_out(&self, timeout: Duration) {
        self.timer.borrow_mut().take();
        let failure = Failure::new(AgentError::Timeout(timeout));
        self.finish(Err(failure.clone()));
        let connecting = self.connecting.borrow_mut().take();
        if let Some(connecting) = connecting {
            connecting.cancel();
        }
        let conn = self.conn.borrow().clone();
        if let Some((conn, seq)) = conn {
            conn.abort_exchange(seq, failure);
        }
    }
}

/// `GET url` and its body, following redirects and failing on an error status (Twisted's
/// removed `getPage`, kept as a convenience): over a connection of its own, closed after.
///
/// # Errors
///
/// As [`Agent::request`], and [`AgentError::Status`] for a status other than 2xx.
pub fn get_page(reactor: &Reactor, url: &str) -> Deferred<Vec<u8>> {
    let agent = Agent::new(reactor).with_pool(Pool::non_persistent(reactor));
    RedirectAgent::new(agent)
        .fetch(Method::GET, url, HeaderMap::new(), Body::Empty)
        .add_callback(|(response, body): (Response, Vec<u8>)| {
            if response.status.is_success() {
                Ok(body)
            } else {
                Err(Failure::new(AgentError::Status(response.status)))
            }
        })
}
