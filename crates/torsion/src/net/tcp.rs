//! TCP: listening ports and connectors (Twisted's `twisted.internet.tcp`); the connections
//! themselves are the stream connections shared with UNIX sockets (`net/connection.rs`).
//!
//! Accepting follows Twisted's `Port.doRead`: up to a growing number of accepts per
//! readiness event, a protocol built for each, and a descriptor held in reserve so that
//! running out of descriptors (EMFILE) refuses pending clients instead of spinning.
//!
//! The ports and connectors themselves are not TCP-specific: [`Port`]
//! (`port.rs`) accepts on any listening stream socket and [`Connector`]
//! (`connector.rs`) connects to a TCP host or a UNIX socket path, so
//! [`unix`](super::unix) and [`Reactor::adopt_stream_port`] share them.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Duration;

use socket2::{Domain, Protocol as SockProtocol, SockAddr, Socket, Type};

use crate::defer::Failure;
use crate::error::{CannotListen, DnsLookupError};
use crate::net::Address;
use crate::protocol::{ClientFactory, Factory};
use crate::reactor::Reactor;

use super::connector::{Connector, Destination};
use super::port::Port;

pub use super::connection::{HIGH_WATER_MARK, LOW_WATER_MARK};

/// The default listen backlog of TCP and UNIX ports: 1024 pending connections.
///
/// A deviation from Twisted, whose default is 50. With 50, a burst of a few hundred
/// simultaneous connects overflows the accept queue: Linux drops the handshakes that do not
/// fit, and a client whose final ACK was dropped believes it is connected while the server
/// never accepts it. Against a server that speaks first (a greeting, a banner) such a client
/// waits for good. 1024 is tokio's default (nginx uses 511); the kernel clamps any backlog
/// to `net.core.somaxconn` (4096 on Linux since 5.4, 128 before), so raise that too for
/// bigger bursts. Set another backlog with [`ListenOptions::backlog`],
/// [`UnixListenOptions::backlog`](super::unix::UnixListenOptions::backlog), or an
/// endpoint's `backlog=N` (see [`endpoints`](crate::endpoints)).
pub const DEFAULT_BACKLOG: i32 = 1024;
/// The default connect timeout (Twisted's 30 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Options for [`Reactor::listen_tcp_with`]: backlog and interface (Twisted's
/// `listenTCP(port, factory, backlog=50, interface='')`, with a larger default backlog).
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// The listen backlog: [`DEFAULT_BACKLOG`], 1024, by default, where Twisted's is 50 (a
    /// deviation, so that a burst of connects is served; see the constant). The kernel
    /// clamps it to `net.core.somaxconn`.
    pub backlog: i32,
    /// The address to bind: `0.0.0.0` by default; `::` for IPv6.
    pub interface: IpAddr,
    /// Set `SO_REUSEPORT`, so several reactors (one per core) can share the port.
    pub reuse_port: bool,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            backlog: DEFAULT_BACKLOG,
            interface: IpAddr::from([0, 0, 0, 0]),
            reuse_port: false,
        }
    }
}

impl Reactor {
    /// Listens for TCP connections on `port` of every IPv4 interface, building a protocol
    /// for each with `factory` (Twisted's `listenTCP`). Port 0 picks a free port: see
    /// [`Port::host`].
    ///
    /// # Errors
    ///
    /// [`CannotListen`] naming the address (for example when it is in use).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::rc::Rc;
    /// use torsion::Reactor;
    /// use torsion::net::Transport;
    /// use torsion::protocol::Protocol;
    ///
    /// #[derive(Default)]
    /// struct Echo(Option<Transport>);
    ///
    /// impl Protocol for Echo {
    ///     fn connection_made(&mut self, transport: Transport) {
    ///         self.0 = Some(transport);
    ///     }
    ///     fn data_received(&mut self, data: &[u8]) {
    ///         if let Some(t) = &self.0 {
    ///             t.write(data);
    ///         }
    ///     }
    /// }
    ///
    /// let reactor = Reactor::new().unwrap();
    /// let port = reactor.listen_tcp(0, Rc::new(Echo::default)).unwrap();
    /// assert_ne!(port.host().port(), Some(0));
    /// ```
    pub fn listen_tcp<F: Factory>(&self, port: u16, factory: Rc<F>) -> Result<Port, Failure> {
        self.listen_tcp_with(port, factory, ListenOptions::default())
    }

    /// [`listen_tcp`](Reactor::listen_tcp) with a backlog, an interface and `SO_REUSEPORT`.
    ///
    /// # Errors
    ///
    /// As for `listen_tcp`.
    pub fn listen_tcp_with<F: Factory>(
        &self,
        port: u16,
        factory: Rc<F>,
        options: ListenOptions,
    ) -> Result<Port, Failure> {
        let address = SocketAddr::new(options.interface, port);
        let cannot = |source: io::Error| CannotListen {
            address: address.to_string(),
            source,
        };
        let socket = Socket::new(
            Domain::for_address(address),
            Type::STREAM.nonblocking().cloexec(),
            Some(SockProtocol::TCP),
        )
        .map_err(cannot)?;
        socket.set_reuse_address(true).map_err(cannot)?;
        if options.reuse_port || self.shares_ports() {
            socket.set_reuse_port(true).map_err(cannot)?;
        }
        if address.is_ipv6() {
            socket.set_only_v6(true).map_err(cannot)?;
        }
        socket.bind(&SockAddr::from(address)).map_err(cannot)?;
        socket.listen(options.backlog).map_err(cannot)?;
        let host = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(address);
        Port::start(self, socket, Address::Tcp(host), factory, None)
    }

    /// Connects to `host:port` over TCP, building the protocol with `factory` once connected
    /// (Twisted's `connectTCP`, with its 30 s timeout). Failures always arrive
    /// asynchronously, through [`ClientFactory::client_connection_failed`].
    ///
    /// `host` is an IP address or a name. A name is resolved in the thread pool, never
    /// blocking the loop, and every address it resolves to is tried in the resolver's
    /// order, one after another, until one connects (Twisted's `connectTCP` takes only the
    /// first IPv4 address). So `localhost` connects whether the server listens on `::1` or
    /// on `127.0.0.1`. If none connects, the failure is the last address's (for example
    /// [`ConnectionRefused`](crate::error::ConnectionRefused)); the timeout covers all the attempts together. A name that
    /// does not resolve fails with [`DnsLookupError`], whose
    /// [`source`](std::error::Error::source) is the resolver's [`io::Error`]. To race the
    /// addresses instead of trying them in turn (RFC 8305, "Happy Eyeballs"), use
    /// [`HostnameEndpoint`](crate::endpoints::HostnameEndpoint).
    pub fn connect_tcp<F: ClientFactory>(
        &self,
        host: &str,
        port: u16,
        factory: Rc<F>,
    ) -> Connector {
        self.connect_tcp_with(host, port, factory, ConnectOptions::default())
    }

    /// [`connect_tcp`](Reactor::connect_tcp) with a timeout and a local address to bind.
    pub fn connect_tcp_with<F: ClientFactory>(
        &self,
        host: &str,
        port: u16,
        factory: Rc<F>,
        options: ConnectOptions,
    ) -> Connector {
        let destination = Destination::Tcp {
            host: host.to_string(),
            port,
        };
        Connector::start(self, destination, factory, options)
    }

    /// Connects over TCP to the first of `addresses` that accepts, trying them in order,
    /// one after another, as [`connect_tcp`](Reactor::connect_tcp) tries the addresses a
    /// name resolves to; for addresses resolved some other way. The connector's
    /// [`connect`](Connector::connect) starts again from the first address.
    ///
    /// If none connects, the factory's `client_connection_failed` gets the last address's
    /// failure; with no address at all, [`InvalidArgument`](crate::error::InvalidArgument).
    pub fn connect_tcp_addresses<F: ClientFactory>(
        &self,
        addresses: Vec<SocketAddr>,
        factory: Rc<F>,
        options: ConnectOptions,
    ) -> Connector {
        Connector::start(self, Destination::TcpAddresses(addresses), factory, options)
    }
}

/// Resolves `host` to its addresses, in the resolver's order (blocking: run it in the
/// thread pool). Shared by the connectors and the endpoints.
///
/// # Errors
///
/// [`DnsLookupError`] with the resolver's error, or with one of kind `NotFound` when the
/// name has no address.
pub(crate) fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, DnsLookupError> {
    let addresses: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|source| DnsLookupError {
            host: host.to_string(),
            source,
        })?
        .collect();
    if addresses.is_empty() {
        return Err(no_address(host));
    }
    Ok(addresses)
}

/// The [`DnsLookupError`] of a name that resolved to no address.
pub(crate) fn no_address(host: &str) -> DnsLookupError {
    DnsLookupError {
        host: host.to_string(),
        source: io::Error::new(io::ErrorKind::NotFound, "the name has no address"),
    }
}

/// Options for [`Reactor::connect_tcp_with`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Give up after this long (30 s by default; `None` waits as long as the kernel does).
    pub timeout: Option<Duration>,
    /// Bind the local end to this address first.
    pub bind_address: Option<SocketAddr>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            bind_address: None,
        }
    }
}
