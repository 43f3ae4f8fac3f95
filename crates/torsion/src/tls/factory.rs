//! Factories that put TLS under any factory's protocols (Twisted's `TLSMemoryBIOFactory`),
//! and the reactor's `listen_tls` and `connect_tls` (Twisted's `listenSSL`, `connectSSL`)
//! built on them.
//!
//! Each protocol the wrapped factory builds is wrapped in one that starts TLS on its
//! transport in `connection_made`, before passing the call on, and passes every other
//! event on unchanged.
//!
//! Invariant: a wrapped protocol sees exactly the events it would see without TLS, plus
//! `handshake_completed`; a transport that cannot start TLS closes the connection with the
//! reason, never runs the protocol in the clear.

use std::rc::Rc;

use super::{ClientConfig, ServerConfig, StartTls, TlsError};
use crate::defer::Failure;
use crate::net::tcp::{ConnectOptions, ListenOptions};
use crate::net::{Address, Connector, Port, Transport};
use crate::protocol::{ClientFactory, Factory, Protocol};
use crate::reactor::Reactor;

/// Wraps a factory so that its protocols serve TLS (Twisted's
/// `TLSMemoryBIOFactory(options, isClient=False, factory)`).
pub struct TlsServerFactory<F: ?Sized> {
    config: ServerConfig,
    inner: Rc<F>,
}

impl<F: Factory + ?Sized> TlsServerFactory<F> {
    /// Serves TLS with `config` under `inner`'s protocols.
    pub fn new(config: &ServerConfig, inner: Rc<F>) -> Rc<TlsServerFactory<F>> {
        Rc::new(TlsServerFactory {
            config: config.clone(),
            inner,
        })
    }

    /// The wrapped factory.
    pub fn inner(&self) -> &Rc<F> {
        &self.inner
    }
}

impl<F: Factory + ?Sized> Factory for TlsServerFactory<F> {
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>> {
        let inner = self.inner.clone().build_protocol(addr)?;
        Some(Box::new(TlsProtocol::new(
            inner,
            StartTls::server(&self.config),
        )))
    }

    fn start_factory(&self) {
        self.inner.start_factory();
    }

    fn stop_factory(&self) {
        self.inner.stop_factory();
    }
}

/// Wraps a client factory so that its protocols speak TLS to `server_name` (Twisted's
/// `TLSMemoryBIOFactory(options, isClient=True, factory)`).
///
/// A handshake that fails reaches the wrapped factory's `client_connection_failed`, not
/// `client_connection_lost`: the connection never carried its data (its protocol saw
/// `connection_made` and `connection_lost` with the [`TlsError`]). One exception comes from
/// TLS 1.3 itself: a server that refuses our client certificate says so after our side of
/// the handshake has completed, so that refusal (a [`TlsError`] of kind
/// [`CertificateRequired`](super::TlsErrorKind::CertificateRequired) or an alert) arrives
/// after `handshake_completed`, through `client_connection_lost`.
pub struct TlsClientFactory<F: ?Sized> {
    config: ClientConfig,
    server_name: String,
    inner: Rc<F>,
}

impl<F: Factory + ?Sized> TlsClientFactory<F> {
    /// Speaks TLS with `config` to `server_name` under `inner`'s protocols.
    pub fn new(config: &ClientConfig, server_name: &str, inner: Rc<F>) -> Rc<TlsClientFactory<F>> {
        Rc::new(TlsClientFactory {
            config: config.clone(),
            server_name: server_name.to_string(),
            inner,
        })
    }

    /// The wrapped factory.
    pub fn inner(&self) -> &Rc<F> {
        &self.inner
    }
}

impl<F: Factory + ?Sized> Factory for TlsClientFactory<F> {
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>> {
        let inner = self.inner.clone().build_protocol(addr)?;
        Some(Box::new(TlsProtocol::new(
            inner,
            StartTls::client(&self.config, &self.server_name),
        )))
    }

    fn start_factory(&self) {
        self.inner.start_factory();
    }

    fn stop_factory(&self) {
        self.inner.stop_factory();
    }
}

impl<F: ClientFactory + ?Sized> ClientFactory for TlsClientFactory<F> {
    fn started_connecting(&self, connector: &Connector) {
        self.inner.started_connecting(connector);
    }

    fn client_connection_failed(&self, connector: &Connector, reason: Failure) {
        self.inner.client_connection_failed(connector, reason);
    }

    fn client_connection_lost(&self, connector: &Connector, reason: Failure) {
        let handshake = reason
            .downcast_ref::<TlsError>()
            .is_some_and(TlsError::during_handshake);
        if handshake {
            self.inner.client_connection_failed(connector, reason);
        } else {
            self.inner.client_connection_lost(connector, reason);
        }
    }
}

/// Starts TLS in `connection_made`, then passes everything on to the wrapped protocol.
struct TlsProtocol {
    inner: Box<dyn Protocol>,
    start: Option<StartTls>,
    /// TLS could not start: the wrapped protocol never saw `connection_made`.
    failed: bool,
}

impl TlsProtocol {
    fn new(inner: Box<dyn Protocol>, start: StartTls) -> TlsProtocol {
        TlsProtocol {
            inner,
            start: Some(start),
            failed: false,
        }
    }
}

impl Protocol for TlsProtocol {
    fn connection_made(&mut self, transport: Transport) {
        if let Some(start) = self.start.take()
            && let Err(failure) = transport.start_tls(start)
        {
            crate::log::error!(target: "torsion::tls", "cannot start TLS with {}: {failure}", transport.peer());
            self.failed = true;
            transport.abort_connection();
            return;
        }
        self.inner.connection_made(transport);
    }

    fn connection_lost(&mut self, reason: Failure) {
        if !self.failed {
            self.inner.connection_lost(reason);
        }
    }

    crate::protocol::forward_protocol_events!(
        inner:
        data_received,
        supports_half_close,
        read_connection_lost,
        write_connection_lost,
        handshake_completed
    );
}

impl Reactor {
    /// Listens on TCP `port` (all IPv4 interfaces) and serves TLS with `config` under
    /// `factory`'s protocols (Twisted's `listenSSL`).
    ///
    /// # Errors
    ///
    /// As for [`listen_tcp`](Reactor::listen_tcp).
    #[doc(alias = "listenSSL")]
    #[doc(alias = "listen_ssl")]
    pub fn listen_tls<F: Factory>(
        &self,
        port: u16,
        factory: Rc<F>,
        config: &ServerConfig,
    ) -> Result<Port, Failure> {
        self.listen_tls_with(port, factory, config, ListenOptions::default())
    }

    /// [`listen_tls`](Reactor::listen_tls) with a backlog, an interface and `SO_REUSEPORT`.
    ///
    /// # Errors
    ///
    /// As for [`listen_tcp`](Reactor::listen_tcp).
    pub fn listen_tls_with<F: Factory>(
        &self,
        port: u16,
        factory: Rc<F>,
        config: &ServerConfig,
        options: ListenOptions,
    ) -> Result<Port, Failure> {
        self.listen_tcp_with(port, TlsServerFactory::new(config, factory), options)
    }

    /// Connects to `host:port` over TCP and speaks TLS with `config`, verifying that the
    /// server's certificate is for `host` (Twisted's `connectSSL`, with
    /// `optionsForClientTLS(host)`). A failed handshake reaches `factory`'s
    /// `client_connection_failed` with a [`TlsError`].
    #[doc(alias = "connectSSL")]
    #[doc(alias = "connect_ssl")]
    pub fn connect_tls<F: ClientFactory>(
        &self,
        host: &str,
        port: u16,
        factory: Rc<F>,
        config: &ClientConfig,
    ) -> Connector {
        self.connect_tls_with(host, port, factory, config, ConnectOptions::default())
    }

    /// [`connect_tls`](Reactor::connect_tls) with a timeout and a local address to bind.
    pub fn connect_tls_with<F: ClientFactory>(
        &self,
        host: &str,
        port: u16,
        factory: Rc<F>,
        config: &ClientConfig,
        options: ConnectOptions,
    ) -> Connector {
        self.connect_tcp_with(
            host,
            port,
            TlsClientFactory::new(config, host, factory),
            options,
        )
    }
}
