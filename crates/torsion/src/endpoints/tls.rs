//! TLS endpoints (Twisted's `SSL4ServerEndpoint`, `wrapClientTLS` and the `ssl:` and
//! `tls:` string types): any stream endpoint with TLS between it and the protocol.
//!
//! A server endpoint wraps the factory it is given in a
//! [`TlsServerFactory`](crate::tls::TlsServerFactory) and listens with the endpoint under
//! it; a client endpoint wraps it in a [`TlsClientFactory`](crate::tls::TlsClientFactory),
//! and its Deferred fires once the handshake has completed, or fails with the
//! [`TlsError`](crate::tls::TlsError) if it did not (so a
//! [`ClientService`](crate::application::ClientService) retries a server it cannot
//! authenticate as it retries one that refuses connections).
//!
//! Invariant: nothing here touches TLS state; the socket connection carries it.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use super::{ClientEndpoint, ListeningPort, ServerEndpoint};
use crate::defer::{Deferred, DeferredHandle, Failure, Resolver};
use crate::net::{Address, Transport};
use crate::protocol::{Factory, Protocol};
use crate::tls::{
    ClientConfig, ServerConfig, TlsClientFactory, TlsError, TlsErrorKind, TlsServerFactory,
};

/// Serves TLS over another stream server endpoint (Twisted's `SSL4ServerEndpoint`,
/// `ssl:PORT:privateKey=…:certKey=…`).
///
/// # Examples
///
/// ```no_run
/// use torsion::Reactor;
/// use torsion::endpoints::{TcpServerEndpoint, TlsServerEndpoint};
/// use torsion::tls::ServerConfig;
///
/// let reactor = Reactor::new().unwrap();
/// let config = ServerConfig::from_pem_files("cert.pem", "key.pem").unwrap();
/// let endpoint = TlsServerEndpoint::new(Box::new(TcpServerEndpoint::new(&reactor, 8443)), config);
/// # let _ = endpoint;
/// ```
pub struct TlsServerEndpoint {
    /// The endpoint listening under TLS.
    pub inner: Box<dyn ServerEndpoint>,
    /// The server's configuration.
    pub config: ServerConfig,
}

impl TlsServerEndpoint {
    /// TLS with `config` over `inner`.
    pub fn new(inner: Box<dyn ServerEndpoint>, config: ServerConfig) -> TlsServerEndpoint {
        TlsServerEndpoint { inner, config }
    }
}

impl fmt::Debug for TlsServerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServerEndpoint")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl ServerEndpoint for TlsServerEndpoint {
    fn listen(&self, factory: Rc<dyn Factory>) -> Deferred<ListeningPort> {
        self.inner
            .listen(TlsServerFactory::new(&self.config, factory))
    }
}

/// Speaks TLS over another stream client endpoint, verifying the server as
/// `server_name` (Twisted's `wrapClientTLS(optionsForClientTLS(name), endpoint)`,
/// `tls:HOST:PORT`).
pub struct TlsClientEndpoint {
    /// The endpoint connecting under TLS.
    pub inner: Box<dyn ClientEndpoint>,
    /// The client's configuration.
    pub config: ClientConfig,
    /// The name the server's certificate must be for, sent by SNI.
    pub server_name: String,
}

impl TlsClientEndpoint {
    /// TLS with `config` to `server_name` over `inner`.
    pub fn new(
        inner: Box<dyn ClientEndpoint>,
        config: ClientConfig,
        server_name: &str,
    ) -> TlsClientEndpoint {
        TlsClientEndpoint {
            inner,
            config,
            server_name: server_name.to_string(),
        }
    }
}

impl fmt::Debug for TlsClientEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClientEndpoint")
            .field("inner", &self.inner)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientEndpoint for TlsClientEndpoint {
    fn connect(&self, factory: Rc<dyn Factory>) -> Deferred<Transport> {
        if rustls::pki_types::ServerName::try_from(self.server_name.as_str()).is_err() {
            return Deferred::fail(TlsError::new(
                TlsErrorKind::CannotStart("the server name is not a DNS name or an IP address"),
                true,
            ));
        }
        let watch = Rc::new(Watch::default());
        let cancel_watch = watch.clone();
        let (resolver, d) = Deferred::with_canceller(move |_resolver| cancel_watch.cancel());
        *watch.resolver.borrow_mut() = Some(resolver);
        let watching = Rc::new(WatchingFactory {
            inner: factory,
            watch: watch.clone(),
        });
        let tls = TlsClientFactory::new(&self.config, &self.server_name, watching);
        let (connected, failed) = (watch.clone(), watch.clone());
        // The connection under TLS: keep its transport (to abort it if cancelled during the
        // handshake), or fail with its failure.
        let connecting = self.inner.connect(tls).add_callbacks(
            move |transport: Transport| {
                if transport.tls_info().is_none() {
                    // TLS could not start: the connection is being closed.
                    connected.fail(Failure::new(TlsError::new(
                        TlsErrorKind::CannotStart("this transport cannot carry TLS"),
                        true,
                    )));
                } else {
                    *connected.transport.borrow_mut() = Some(transport);
                }
                Ok::<(), Failure>(())
            },
            move |failure| {
                failed.fail(failure);
                Ok::<(), Failure>(())
            },
        );
        *watch.connecting.borrow_mut() = Some(connecting.handle());
        d
    }
}

/// Fires the endpoint's Deferred when the handshake completes.
#[derive(Default)]
struct Watch {
    resolver: RefCell<Option<Resolver<Transport>>>,
    connecting: RefCell<Option<DeferredHandle>>,
    transport: RefCell<Option<Transport>>,
}

impl Watch {
    fn succeed(&self, transport: Transport) {
        let resolver = self.resolver.borrow_mut().take();
        if let Some(resolver) = resolver {
            let _ = resolver.try_callback(transport);
        }
    }

    fn fail(&self, failure: Failure) {
        let resolver = self.resolver.borrow_mut().take();
        if let Some(resolver) = resolver {
            let _ = resolver.try_errback(failure);
        }
    }

    /// Cancelled: stop connecting, or close a connection still in its handshake.
    fn cancel(&self) {
        let transport = self.transport.borrow_mut().take();
        if let Some(transport) = transport {
            transport.abort_connection();
        }
        let connecting = self.connecting.borrow_mut().take();
        if let Some(connecting) = connecting {
            connecting.cancel();
        }
    }
}

struct WatchingFactory {
    inner: Rc<dyn Factory>,
    watch: Rc<Watch>,
}

impl Factory for WatchingFactory {
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>> {
        let inner = self.inner.clone().build_protocol(addr)?;
        Some(Box::new(Watching {
            inner,
            watch: self.watch.clone(),
            transport: None,
        }))
    }

    fn start_factory(&self) {
        self.inner.start_factory();
    }

    fn stop_factory(&self) {
        self.inner.stop_factory();
    }
}

/// Passes everything on, and tells the watch about the handshake.
struct Watching {
    inner: Box<dyn Protocol>,
    watch: Rc<Watch>,
    transport: Option<Transport>,
}

impl Protocol for Watching {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport.clone());
        self.inner.connection_made(transport);
    }

    fn handshake_completed(&mut self) {
        if let Some(transport) = &self.transport {
            self.watch.succeed(transport.clone());
        }
        self.inner.handshake_completed();
    }

    fn connection_lost(&mut self, reason: Failure) {
        let reason_for_watch = if reason.check::<TlsError>() {
            reason.clone()
        } else {
            Failure::new(TlsError::new(TlsErrorKind::ClosedDuringHandshake, true))
        };
        self.watch.fail(reason_for_watch);
        self.inner.connection_lost(reason);
    }

    crate::protocol::forward_protocol_events!(
        inner:
        data_received,
        supports_half_close,
        read_connection_lost,
        write_connection_lost
    );
}
