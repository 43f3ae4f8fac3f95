//! Endpoints: where to listen and where to connect, as values and as strings (Twisted's
//! `twisted.internet.endpoints`).
//!
//! A [`ServerEndpoint`] listens with a factory and hands back a [`ListeningPort`]; a
//! [`ClientEndpoint`] connects with a factory and hands back the connection's
//! [`Transport`]. Code written against the two traits runs unchanged over TCP, TCP over
//! IPv6, UNIX sockets and TLS, and a program can take its endpoints from its
//! configuration as strings in Twisted's syntax, `type:positional:key=value`, with `\:` for
//! a colon and `\\` for a backslash inside an argument:
//!
//! | string | endpoint |
//! | --- | --- |
//! | `tcp:8080`, `tcp:8080:interface=127.0.0.1:backlog=100` | [`TcpServerEndpoint`] (positional: port, interface, backlog) |
//! | `tcp6:8080:interface=\:\:1` | [`Tcp6ServerEndpoint`] (positional: port, backlog, interface) |
//! | `unix:/var/run/finger:mode=660:lockfile=0` | [`UnixServerEndpoint`] (positional: address, mode, backlog, lockfile) |
//! | `systemd:domain=INET:index=0` | [`SystemdServerEndpoint`] (positional: domain, index, name) |
//! | `tcp:example.com:80:timeout=5:bindAddress=10.0.0.2` | [`TcpClientEndpoint`] (positional: host, port) |
//! | `unix:/var/run/finger:timeout=5` | [`UnixClientEndpoint`] (positional: path) |
//! | `stdio:` | [`StandardIoEndpoint`] (server only: one protocol on standard input and output) |
//! | `ssl:8443:privateKey=key.pem:certKey=cert.pem:extraCertChain=chain.pem:interface=…` | [`TlsServerEndpoint`] over TCP (positional: port, privateKey, certKey, sslmethod, interface, backlog, extraCertChain, dhParameters) |
//! | `tls:example.com:443:trustRoots=ca.pem:certificate=me.pem:privateKey=me.key` | [`TlsClientEndpoint`] over a [`HostnameEndpoint`] (positional: host, port, timeout, bindAddress, certificate, privateKey, trustRoots) |
//!
//! Stream server endpoints listen with a backlog of
//! [`DEFAULT_BACKLOG`](crate::net::tcp::DEFAULT_BACKLOG) (1024, where Twisted's is 50, so
//! that a burst of connects is served) unless a value's `backlog` or a string's
//! `backlog=N` says otherwise; a
//! [`StreamServerEndpointService`](crate::application::StreamServerEndpointService) listens
//! with its endpoint's.
//!
//! [`server_from_string`] and [`client_from_string`] parse them; programs add their own
//! types with [`register_server_parser`] and [`register_client_parser`].
//! [`HostnameEndpoint`] connects to a name with several addresses the way RFC 8305 ("Happy
//! Eyeballs") asks. A [`TlsClientEndpoint`]'s Deferred fires once the TLS handshake has
//! completed, and fails with the [`TlsError`](crate::tls::TlsError) if it does not.
//!
//! UNIX socket endpoints listen and connect with [`Reactor::listen_unix_with`](crate::Reactor::listen_unix_with) and
//! [`Reactor::connect_unix_with`](crate::Reactor::connect_unix_with), as [`UnixServerSpec`] and [`UnixClientSpec`] say;
//! `systemd:` endpoints adopt a socket inherited through socket activation
//! ([`listen_fds`](crate::net::systemd::listen_fds)) with [`Reactor::adopt_stream_port`](crate::Reactor::adopt_stream_port).
//! Finding an inherited socket by name (`systemd:…:name=X`, `LISTEN_FDNAMES`) is parsed but
//! not supported yet: it fails with
//! [`EndpointUnavailable`](crate::error::EndpointUnavailable). There is no `udp:` endpoint:
//! Twisted's string syntax has none.
//!
//! This file holds the two endpoint traits, [`connect_protocol`], and the factory adapters
//! every endpoint listens and connects through; the endpoints themselves are in `tcp.rs`,
//! `unix.rs`, `systemd.rs`, `hostname.rs` and `tls.rs`, the string syntax in `parser.rs`, all
//! re-exported here.
//!
//! Invariant: no user code (a factory, a protocol, a Deferred's callbacks, a registered
//! parser) runs while a `RefCell` of this module is borrowed; state is taken out, the
//! borrow released, and only then is the user called.

mod hostname;
mod parser;
mod stdio;
mod systemd;
mod tcp;
mod tls;
mod unix;

pub use hostname::{DEFAULT_ATTEMPT_DELAY, HostnameEndpoint};
pub use parser::{
    BoundArgs, EndpointArgs, client_from_string, quote_string_argument, register_client_parser,
    register_server_parser, server_from_string, unregister_client_parser, unregister_server_parser,
};
pub use stdio::StandardIoEndpoint;
pub use systemd::{SystemdDomain, SystemdServerEndpoint, SystemdSocket, SystemdSpec};
pub use tcp::{Tcp6ServerEndpoint, TcpClientEndpoint, TcpServerEndpoint};
pub use tls::{TlsClientEndpoint, TlsServerEndpoint};
pub use unix::{
    DEFAULT_UNIX_MODE, UnixClientEndpoint, UnixClientSpec, UnixServerEndpoint, UnixServerSpec,
};

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use crate::defer::{Deferred, Failure, Resolver};
use crate::error::NoProtocol;
use crate::net::udp::UdpPort;
use crate::net::{Address, Transport};
use crate::net::{Connector, Port};
use crate::protocol::{ClientFactory, Factory, Protocol};

// ===== the endpoint traits =====

/// What a listening port offers once listening (Twisted's `IListeningPort`): implemented
/// by the stream [`Port`] (TCP, UNIX sockets, adopted sockets) and by [`UdpPort`].
pub trait ListeningPortOps {
    /// The address it listens on; with port 0, the port the kernel chose (Twisted's
    /// `getHost`).
    fn host(&self) -> Address;

    /// Stops listening (Twisted's `stopListening`); the Deferred fires once the socket is
    /// closed. Established connections are left alone.
    fn stop_listening(&self) -> Deferred<()>;
}

/// A listening port of any kind, as [`ServerEndpoint::listen`] hands it back.
pub type ListeningPort = Rc<dyn ListeningPortOps>;

impl ListeningPortOps for Port {
    fn host(&self) -> Address {
        Port::host(self)
    }

    fn stop_listening(&self) -> Deferred<()> {
        Port::stop_listening(self)
    }
}

impl ListeningPortOps for UdpPort {
    fn host(&self) -> Address {
        UdpPort::host(self)
    }

    fn stop_listening(&self) -> Deferred<()> {
        UdpPort::stop_listening(self)
    }
}

/// Somewhere to listen (Twisted's `IStreamServerEndpoint`).
///
/// Endpoints are `Any`, so one made by [`server_from_string`] can be inspected:
/// `(&*endpoint as &dyn Any).downcast_ref::<TcpServerEndpoint>()`.
pub trait ServerEndpoint: Any + fmt::Debug {
    /// Listens, building each connection's protocol with `factory` (Twisted's `listen`).
    /// The Deferred fires with the port once listening, or fails with why not (for TCP,
    /// [`CannotListen`](crate::error::CannotListen)).
    fn listen(&self, factory: Rc<dyn Factory>) -> Deferred<ListeningPort>;
}

/// Somewhere to connect to (Twisted's `IStreamClientEndpoint`).
///
/// Endpoints are `Any`, so one made by [`client_from_string`] can be inspected by
/// downcasting, as for [`ServerEndpoint`].
pub trait ClientEndpoint: Any + fmt::Debug {
    /// Connects, building the protocol with `factory` (Twisted's `connect`).
    ///
    /// The Deferred fires with the connection's [`Transport`] once the protocol's
    /// `connection_made` has run (Twisted fires with the protocol; here the connection owns
    /// it). It fails with why the attempt failed (refused, timed out, the name did not
    /// resolve, or [`NoProtocol`] when the factory built none), and cancelling it stops the
    /// attempt: it then fails with [`Cancelled`](crate::error::Cancelled), so
    /// [`Deferred::add_timeout`] turns it into a timeout.
    fn connect(&self, factory: Rc<dyn Factory>) -> Deferred<Transport>;
}

/// Connects `protocol` itself through `endpoint`, with no factory to write (Twisted's
/// `connectProtocol`).
///
/// The protocol is moved into the connection, which owns it from then on, so the Deferred
/// fires with the connection's [`Transport`] once `connection_made` has run, rather than
/// with the protocol as in Twisted. To reach the protocol's state afterwards, share it:
/// give the protocol an `Rc<RefCell<..>>` or a [`Resolver`] before
/// connecting. The Deferred fails as the connection attempt does (refused, timed out, the
/// name did not resolve), and cancelling it stops the attempt.
///
/// # Examples
///
/// ```
/// use torsion::endpoints::{TcpClientEndpoint, connect_protocol};
/// use torsion::prelude::*;
///
/// struct Hello;
///
/// impl Protocol for Hello {
///     fn connection_made(&mut self, transport: Transport) {
///         transport.write(b"hello\r\n");
///     }
/// }
///
/// let reactor = Reactor::new().unwrap();
/// let endpoint = TcpClientEndpoint::new(&reactor, "127.0.0.1", 7);
/// let _done = connect_protocol(&endpoint, Hello).map(|transport| transport.lose_connection());
/// ```
pub fn connect_protocol<P: Protocol>(
    endpoint: &dyn ClientEndpoint,
    protocol: P,
) -> Deferred<Transport> {
    let protocol: Box<dyn Protocol> = Box::new(protocol);
    endpoint.connect(Rc::new(OneShotFactory(RefCell::new(Some(protocol)))))
}

/// Builds one given protocol, once (Twisted's `OneShotFactory` in `connectProtocol`).
struct OneShotFactory(RefCell<Option<Box<dyn Protocol>>>);

impl Factory for OneShotFactory {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        self.0.borrow_mut().take()
    }
}

// ===== factory adapters =====

/// A `dyn Factory` as the sized factory the reactor's `listen_*` take, one per port.
struct PortFactory {
    inner: Rc<dyn Factory>,
}

impl Factory for PortFactory {
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>> {
        self.inner.clone().build_protocol(addr)
    }

    fn start_factory(&self) {
        crate::protocol::factory_started(&self.inner);
    }

    fn stop_factory(&self) {
        crate::protocol::factory_stopped(&self.inner);
    }
}

/// The per-connection client factory of [`TcpClientEndpoint`] (Twisted's
/// `_WrappingFactory`): builds the user's protocol wrapped so that `connection_made` fires
/// the endpoint's Deferred, and fails that Deferred when the attempt fails.
struct ConnectingFactory {
    inner: Rc<dyn Factory>,
    resolver: Resolver<Transport>,
    /// The connector while the attempt runs, for cancelling; taken once it ends, so the
    /// connector and this factory do not keep each other alive.
    connector: Rc<RefCell<Option<Connector>>>,
}

impl ConnectingFactory {
    fn attempt_over(&self) {
        let connector = self.connector.borrow_mut().take();
        drop(connector);
    }
}

impl Factory for ConnectingFactory {
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>> {
        self.attempt_over();
        match self.inner.clone().build_protocol(addr) {
            Some(protocol) => Some(Box::new(Notifying {
                inner: protocol,
                resolver: Some(self.resolver.clone()),
            })),
            None => {
                let _ = self.resolver.try_errback(NoProtocol);
                None
            }
        }
    }

    fn start_factory(&self) {
        crate::protocol::factory_started(&self.inner);
    }

    fn stop_factory(&self) {
        crate::protocol::factory_stopped(&self.inner);
    }
}

impl ClientFactory for ConnectingFactory {
    fn client_connection_failed(&self, _connector: &Connector, reason: Failure) {
        self.attempt_over();
        // Already fired (cancelled, or no protocol): nothing to tell.
        let _ = self.resolver.try_errback(reason);
    }

    fn client_connection_lost(&self, _connector: &Connector, reason: Failure) {
        self.attempt_over();
        let _ = self.resolver.try_errback(reason);
    }
}

/// Wraps a protocol to fire a Deferred with the transport once connected (Twisted's
/// `_WrappingProtocol`); every event is passed through.
struct Notifying {
    inner: Box<dyn Protocol>,
    resolver: Option<Resolver<Transport>>,
}

impl Protocol for Notifying {
    fn connection_made(&mut self, transport: Transport) {
        self.inner.connection_made(transport.clone());
        if let Some(resolver) = self.resolver.take() {
            let _ = resolver.try_callback(transport);
        }
    }

    fn connection_lost(&mut self, reason: Failure) {
        if let Some(resolver) = self.resolver.take() {
            let _ = resolver.try_errback(reason.clone());
        }
        self.inner.connection_lost(reason);
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

/// Starts a connector with `start`, given a [`ConnectingFactory`] that fires the returned
/// Deferred; the Deferred's canceller stops the attempt. Shared by TCP and UNIX sockets.
fn connect_endpoint(
    factory: Rc<dyn Factory>,
    start: impl FnOnce(Rc<ConnectingFactory>) -> Connector,
) -> Deferred<Transport> {
    let slot: Rc<RefCell<Option<Connector>>> = Rc::new(RefCell::new(None));
    let cancel_slot = slot.clone();
    let (resolver, d) = Deferred::with_canceller(move |_resolver| {
        let connector = cancel_slot.borrow_mut().take();
        if let Some(connector) = connector {
            connector.stop_connecting();
        }
    });
    let wrapping = Rc::new(ConnectingFactory {
        inner: factory,
        resolver,
        connector: slot.clone(),
    });
    // Failures always arrive from the loop, so the attempt is still running here.
    let connector = start(wrapping);
    *slot.borrow_mut() = Some(connector);
    d
}
