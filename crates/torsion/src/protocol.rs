//! Protocols and factories (Twisted's `twisted.internet.protocol`): what a connection does
//! with its bytes, and what makes a protocol for each new connection.
//!
//! A protocol gets its [`Transport`] in [`Protocol::connection_made`] and keeps it to write.
//! State shared between the connections of one server lives in the factory: the factory
//! gets itself as an `Rc` in [`Factory::build_protocol`] and hands a clone to each protocol,
//! as Twisted protocols reach `self.factory`:
//!
//! ```
//! use std::cell::Cell;
//! use std::rc::Rc;
//! use torsion::net::{Address, Transport};
//! use torsion::protocol::{Factory, Protocol};
//!
//! /// Counts the connections the server has seen, across all of them.
//! struct CountingFactory {
//!     seen: Cell<u64>,
//! }
//!
//! struct Greeter {
//!     factory: Rc<CountingFactory>,
//! }
//!
//! impl Protocol for Greeter {
//!     fn connection_made(&mut self, transport: Transport) {
//!         let n = self.factory.seen.get() + 1;
//!         self.factory.seen.set(n);
//!         transport.write(format!("you are visitor {n}\r\n").as_bytes());
//!         transport.lose_connection();
//!     }
//! }
//!
//! impl Factory for CountingFactory {
//!     fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
//!         Some(Box::new(Greeter { factory: self }))
//!     }
//! }
//! ```
//!
//! Invariant: the reactor never calls into a protocol while that protocol is running; what
//! a protocol causes from inside a callback (`lose_connection`, …) is delivered afterwards.

use std::net::SocketAddr;
use std::rc::Rc;

use crate::defer::Failure;
use crate::net::{Address, Transport};

/// What a connection does with its events (Twisted's `Protocol` with `IProtocol`).
///
/// Every method has a default that does nothing, except
/// [`read_connection_lost`](Protocol::read_connection_lost) (see there).
pub trait Protocol: 'static {
    /// The connection is up; keep `transport` to write to it (Twisted's `makeConnection`
    /// followed by `connectionMade`).
    fn connection_made(&mut self, transport: Transport) {
        let _ = transport;
    }

    /// Bytes arrived (Twisted's `dataReceived`). They may be any part of what the peer
    /// sent: a protocol frames them itself (see [`protocols`](crate::protocols)).
    fn data_received(&mut self, data: &[u8]) {
        let _ = data;
    }

    /// The connection is closed (Twisted's `connectionLost`): `reason` is
    /// [`ConnectionDone`](crate::error::ConnectionDone) for a clean close and
    /// [`ConnectionLost`](crate::error::ConnectionLost) (or an I/O error) otherwise. Called
    /// exactly once, after `connection_made`.
    fn connection_lost(&mut self, reason: Failure) {
        let _ = reason;
    }

    /// Whether the protocol handles half-closed connections (Twisted's
    /// `IHalfCloseableProtocol`). If not, the peer closing its sending side closes the
    /// whole connection, and unsent output is dropped, as in Twisted.
    fn supports_half_close(&self) -> bool {
        false
    }

    /// The peer closed its sending side; the protocol may still write (Twisted's
    /// `readConnectionLost`). Called only when
    /// [`supports_half_close`](Protocol::supports_half_close) is true.
    fn read_connection_lost(&mut self) {}

    /// Our sending side was closed by
    /// [`lose_write_connection`](crate::net::TransportOps::lose_write_connection) once the
    /// buffered output was sent (Twisted's `writeConnectionLost`).
    fn write_connection_lost(&mut self) {}
}

/// Makes a protocol for each new connection (Twisted's `Factory` / `ServerFactory`).
///
/// A closure returning a protocol is a factory: `Rc::new(|| Echo::default())`.
pub trait Factory: 'static {
    /// A protocol for a connection from (or to) `addr`, or `None` to refuse it: the
    /// connection is then closed (Twisted's `buildProtocol`).
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>>;

    /// Called before the factory's first port starts listening or its first connection
    /// attempt (Twisted's `startFactory`).
    fn start_factory(&self) {}

    /// Called after the factory's last port stopped listening or its last connection
    /// attempt ended (Twisted's `stopFactory`).
    fn stop_factory(&self) {}
}

impl<F, P> Factory for F
where
    F: Fn() -> P + 'static,
    P: Protocol,
{
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(self()))
    }
}

/// A factory for outgoing connections, told how connecting went (Twisted's
/// `ClientFactory`). Closures returning a protocol are client factories too.
pub trait ClientFactory: Factory {
    /// A connection attempt started (Twisted's `startedConnecting`).
    fn started_connecting(&self, connector: &crate::net::tcp::Connector) {
        let _ = connector;
    }

    /// The attempt failed: refused, timed out, or the name did not resolve (Twisted's
    /// `clientConnectionFailed`). `connector.connect()` tries again.
    fn client_connection_failed(&self, connector: &crate::net::tcp::Connector, reason: Failure) {
        let _ = (connector, reason);
    }

    /// An established connection was lost, after the protocol's `connection_lost`
    /// (Twisted's `clientConnectionLost`). `connector.connect()` reconnects.
    fn client_connection_lost(&self, connector: &crate::net::tcp::Connector, reason: Failure) {
        let _ = (connector, reason);
    }
}

impl<F, P> ClientFactory for F
where
    F: Fn() -> P + 'static,
    P: Protocol,
{
}

/// What a UDP port does with its datagrams (Twisted's `DatagramProtocol` with
/// `ConnectedDatagramProtocol`'s `connectionRefused`).
///
/// Unlike a stream [`Protocol`], one datagram protocol serves one port for its whole life:
/// [`Reactor::listen_udp`](crate::Reactor::listen_udp) takes the protocol itself, not a
/// factory. Every method has a default that does nothing.
///
/// # Examples
///
/// ```
/// use std::net::SocketAddr;
/// use torsion::net::udp::DatagramTransport;
/// use torsion::protocol::DatagramProtocol;
///
/// /// Sends every datagram back where it came from.
/// #[derive(Default)]
/// struct Echo(Option<DatagramTransport>);
///
/// impl DatagramProtocol for Echo {
///     fn start_protocol(&mut self, transport: DatagramTransport) {
///         self.0 = Some(transport);
///     }
///     fn datagram_received(&mut self, data: &[u8], addr: SocketAddr) {
///         if let Some(t) = &self.0 {
///             let _ = t.write(data, addr);
///         }
///     }
/// }
///
/// let reactor = torsion::Reactor::new().unwrap();
/// let port = reactor.listen_udp(0, Box::new(Echo::default())).unwrap();
/// assert_ne!(port.host().port(), Some(0));
/// ```
pub trait DatagramProtocol: 'static {
    /// The port is bound; keep `transport` to send (Twisted's `makeConnection` followed by
    /// `startProtocol`). Called once, from inside `listen_udp` (or `adopt_datagram_port`),
    /// before it returns, as in Twisted, so a protocol may send at once.
    fn start_protocol(&mut self, transport: crate::net::udp::DatagramTransport) {
        let _ = transport;
    }

    /// The port stopped listening (Twisted's `stopProtocol`): after
    /// [`stop_listening`](crate::net::udp::UdpPort::stop_listening), or at reactor
    /// shutdown. Called once; the protocol is dropped right after.
    fn stop_protocol(&mut self) {}

    /// A datagram arrived from `addr` (Twisted's `datagramReceived`). A datagram longer than
    /// the port's `max_packet_size` arrives truncated to that size, as in Twisted.
    fn datagram_received(&mut self, data: &[u8], addr: SocketAddr) {
        let _ = (data, addr);
    }

    /// A datagram sent on a connected port (see
    /// [`connect`](crate::net::udp::UdpPort::connect)) was refused: nothing listens at the
    /// other end (an ICMP port unreachable; Twisted's `connectionRefused`). Delivered from
    /// the loop, never from inside `write`.
    fn connection_refused(&mut self) {}
}
