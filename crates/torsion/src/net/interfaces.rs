//! The reactor's network methods as traits (Twisted's `IReactorTCP`, `IReactorUNIX`,
//! `IReactorUDP`, `IListeningPort`, `IConnector`), implemented by [`Reactor`] and by
//! [`MemoryReactor`](crate::testing::MemoryReactor) (whose implementations live beside it), so code written against them is tested without sockets.
//!
//! Write a server's set-up against `&impl ReactorTcp`; run it on a [`Reactor`], and hand a
//! `MemoryReactor` to its test, which then looks at what was asked for
//! (`tcp_servers()`, `tcp_clients()`, …) and drives the factories itself.
//!
//! Invariant: every method here is the reactor's own inherent method of the same name with
//! the same meaning; the traits add nothing of their own.
//!
//! # Examples
//!
//! ```
//! use std::rc::Rc;
//! use torsion::net::ReactorTcp;
//! use torsion::prelude::*;
//! use torsion::testing::{AccumulatingProtocol, MemoryReactor};
//!
//! /// Listens on `port` with the poetry server's factory, on any reactor.
//! fn serve(reactor: &impl ReactorTcp, port: u16) -> Result<(), Failure> {
//!     reactor.listen_tcp(port, Rc::new(AccumulatingProtocol::default))?;
//!     Ok(())
//! }
//!
//! let memory = MemoryReactor::new();
//! serve(&memory, 10000).unwrap();
//! assert_eq!(memory.tcp_servers()[0].port, 10000);
//! ```

use std::path::Path;
use std::rc::Rc;

use crate::defer::{Deferred, Failure};
use crate::net::Address;
use crate::net::tcp::{ConnectOptions, ListenOptions};
use crate::net::udp::{UdpOptions, UdpPort};
use crate::net::unix::{UnixConnectOptions, UnixListenOptions};
use crate::net::{Connector, Port};
use crate::protocol::{ClientFactory, DatagramProtocol, Factory};
use crate::reactor::Reactor;

/// A port that listens (Twisted's `IListeningPort`).
pub trait ListeningPort {
    /// The address listened on (Twisted's `getHost`).
    fn host(&self) -> Address;

    /// Stops listening (Twisted's `stopListening`); the Deferred fires once it has.
    fn stop_listening(&self) -> Deferred<()>;
}

/// An outgoing connection attempt and the connection it makes (Twisted's `IConnector`).
pub trait ConnectorOps {
    /// Tries again (Twisted's `connect`), as a reconnecting factory does.
    fn connect(&self);

    /// Gives up an attempt in progress (Twisted's `stopConnecting`).
    fn stop_connecting(&self);

    /// Closes the connection if there is one, else stops the attempt (Twisted's
    /// `disconnect`).
    fn disconnect(&self);

    /// Where it connects to, for messages (Twisted's `getDestination`).
    fn destination(&self) -> String;
}

/// TCP listening and connecting (Twisted's `IReactorTCP`).
pub trait ReactorTcp {
    /// What a listen returns.
    type Port: ListeningPort;
    /// What a connect returns.
    type Connector: ConnectorOps;

    /// Listens on `port` of every interface (Twisted's `listenTCP`); see
    /// [`Reactor::listen_tcp`].
    ///
    /// # Errors
    ///
    /// As [`Reactor::listen_tcp`]: the port cannot be bound or listened on.
    fn listen_tcp<F: Factory>(&self, port: u16, factory: Rc<F>) -> Result<Self::Port, Failure> {
        self.listen_tcp_with(port, factory, ListenOptions::default())
    }

    /// [`listen_tcp`](ReactorTcp::listen_tcp) with a backlog, an interface and
    /// `SO_REUSEPORT`.
    ///
    /// # Errors
    ///
    /// As [`Reactor::listen_tcp_with`].
    fn listen_tcp_with<F: Factory>(
        &self,
        port: u16,
        factory: Rc<F>,
        options: ListenOptions,
    ) -> Result<Self::Port, Failure>;

    /// Connects to `host:port` (Twisted's `connectTCP`); see [`Reactor::connect_tcp`].
    fn connect_tcp<F: ClientFactory>(
        &self,
        host: &str,
        port: u16,
        factory: Rc<F>,
    ) -> Self::Connector {
        self.connect_tcp_with(host, port, factory, ConnectOptions::default())
    }

    /// [`connect_tcp`](ReactorTcp::connect_tcp) with a timeout and a bind address.
    fn connect_tcp_with<F: ClientFactory>(
        &self,
        host: &str,
        port: u16,
        factory: Rc<F>,
        options: ConnectOptions,
    ) -> Self::Connector;
}

/// UNIX stream sockets (Twisted's `IReactorUNIX`).
pub trait ReactorUnix {
    /// What a listen returns.
    type Port: ListeningPort;
    /// What a connect returns.
    type Connector: ConnectorOps;

    /// Listens on the socket `path` (Twisted's `listenUNIX`); see [`Reactor::listen_unix_with`].
    ///
    /// # Errors
    ///
    /// As [`Reactor::listen_unix_with`].
    fn listen_unix_with<F: Factory>(
        &self,
        path: &Path,
        factory: Rc<F>,
        options: UnixListenOptions,
    ) -> Result<Self::Port, Failure>;

    /// Connects to the socket `path` (Twisted's `connectUNIX`); see
    /// [`Reactor::connect_unix_with`].
    fn connect_unix_with<F: ClientFactory>(
        &self,
        path: &Path,
        factory: Rc<F>,
        options: UnixConnectOptions,
    ) -> Self::Connector;
}

/// UDP (Twisted's `IReactorUDP`).
pub trait ReactorUdp {
    /// What a listen returns.
    type Port: ListeningPort;

    /// Listens for datagrams on `port` (Twisted's `listenUDP`); see
    /// [`Reactor::listen_udp_with`].
    ///
    /// # Errors
    ///
    /// As [`Reactor::listen_udp_with`].
    fn listen_udp_with(
        &self,
        port: u16,
        protocol: Box<dyn DatagramProtocol>,
        options: UdpOptions,
    ) -> Result<Self::Port, Failure>;
}

impl ListeningPort for Port {
    fn host(&self) -> Address {
        Port::host(self)
    }
    fn stop_listening(&self) -> Deferred<()> {
        Port::stop_listening(self)
    }
}

impl ListeningPort for UdpPort {
    fn host(&self) -> Address {
        UdpPort::host(self)
    }
    fn stop_listening(&self) -> Deferred<()> {
        UdpPort::stop_listening(self)
    }
}

impl ConnectorOps for Connector {
    fn connect(&self) {
        Connector::connect(self);
    }
    fn stop_connecting(&self) {
        Connector::stop_connecting(self);
    }
    fn disconnect(&self) {
        Connector::disconnect(self);
    }
    fn destination(&self) -> String {
        Connector::destination(self)
    }
}

impl ReactorTcp for Reactor {
    type Port = Port;
    type Connector = Connector;

    fn listen_tcp_with<F: Factory>(
        &self,
        port: u16,
        factory: Rc<F>,
        options: ListenOptions,
    ) -> Result<Port, Failure> {
        Reactor::listen_tcp_with(self, port, factory, options)
    }

    fn connect_tcp_with<F: ClientFactory>(
        &self,
        host: &str,
        port: u16,
        factory: Rc<F>,
        options: ConnectOptions,
    ) -> Connector {
        Reactor::connect_tcp_with(self, host, port, factory, options)
    }
}

impl ReactorUnix for Reactor {
    type Port = Port;
    type Connector = Connector;

    fn listen_unix_with<F: Factory>(
        &self,
        path: &Path,
        factory: Rc<F>,
        options: UnixListenOptions,
    ) -> Result<Port, Failure> {
        Reactor::listen_unix_with(self, path, factory, options)
    }

    fn connect_unix_with<F: ClientFactory>(
        &self,
        path: &Path,
        factory: Rc<F>,
        options: UnixConnectOptions,
    ) -> Connector {
        Reactor::connect_unix_with(self, path, factory, options)
    }
}

impl ReactorUdp for Reactor {
    type Port = UdpPort;

    fn listen_udp_with(
        &self,
        port: u16,
        protocol: Box<dyn DatagramProtocol>,
        options: UdpOptions,
    ) -> Result<UdpPort, Failure> {
        Reactor::listen_udp_with(self, port, protocol, options)
    }
}
