//! TCP: listening ports and connectors (Twisted's `twisted.internet.tcp`); the connections
//! themselves are the stream connections shared with UNIX sockets (`net/connection.rs`).
//!
//! Accepting follows Twisted's `Port.doRead`: up to a growing number of accepts per
//! readiness event, a protocol built for each, and a descriptor held in reserve so that
//! running out of descriptors (EMFILE) refuses pending clients instead of spinning.
//!
//! [`Port`] and [`Connector`] are not TCP-specific inside: a port accepts on any listening
//! stream socket and a connector connects to a TCP host or a UNIX socket path, so
//! [`unix`](super::unix) and [`Reactor::adopt_stream_port`] reuse them (Twisted's
//! `unix.Port` and `unix.Connector` subclass the TCP ones the same way).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::SocketFlags;
use socket2::{Domain, Protocol as SockProtocol, SockAddr, Socket, Type};

use super::connection::{Connection, ConnectionEnded};
use crate::defer::{Deferred, Failure};
use crate::error::{
    CannotListen, ConnectCancelled, ConnectTimeout, ConnectionDone, ConnectionRefused,
    DnsLookupError, InvalidArgument,
};
use crate::net::{Address, Transport, TransportOps};
use crate::protocol::{ClientFactory, Factory};
use crate::reactor::{FileDescriptor, Reactor, ReadDescriptor, WriteDescriptor};
use crate::time::{DelayedCall, ReactorTime};

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

// ===== listening ports =====

/// A listening stream port, TCP or UNIX (Twisted's `tcp.Port` and `unix.Port`, the
/// `IListeningPort` that `listen_tcp`, `listen_unix` and `adopt_stream_port` return).
#[derive(Clone)]
pub struct Port(Rc<PortInner>);

struct PortInner {
    me: Weak<PortInner>,
    socket: RefCell<Option<Socket>>,
    fd: RawFd,
    reactor: Reactor,
    factory: Rc<dyn Factory>,
    host: Address,
    /// How many connections one readiness event may accept (Twisted's `numberAccepts`).
    accepts: Cell<usize>,
    /// A descriptor held in reserve, given up to accept-and-close when the process runs out
    /// of descriptors (EMFILE), so the listening socket does not spin.
    reserve: RefCell<Option<OwnedFd>>,
    listening: Cell<bool>,
    /// Runs once when the port closes (a UNIX port removes its socket file and lock file).
    on_close: RefCell<Option<Box<dyn FnOnce()>>>,
}

impl Port {
    /// The address the port listens on; with port 0, the port the kernel chose (Twisted's
    /// `getHost`).
    pub fn host(&self) -> Address {
        self.0.host.clone()
    }

    /// Stops listening (Twisted's `stopListening`): no new connections are accepted; the
    /// returned Deferred fires on the next turn of the loop, once the socket is closed and
    /// the factory told (`stop_factory` if this was its last port). Established connections
    /// are left alone.
    pub fn stop_listening(&self) -> Deferred<()> {
        let inner = self.0.clone();
        if !inner.listening.replace(false) {
            return Deferred::succeed(());
        }
        inner.reactor.remove_reader(inner.fd);
        let (resolver, d) = Deferred::new();
        let reactor = inner.reactor.clone();
        reactor.call_later(Duration::ZERO, move || {
            inner.close();
            resolver.callback(());
        });
        d
    }

    /// Starts accepting on `socket`, which is bound and listening (or adopted), with
    /// `on_close` to run when the port closes.
    pub(crate) fn start<F: Factory>(
        reactor: &Reactor,
        socket: Socket,
        host: Address,
        factory: Rc<F>,
        on_close: Option<Box<dyn FnOnce()>>,
    ) -> Result<Port, Failure> {
        let factory: Rc<dyn Factory> = factory;
        crate::protocol::factory_started(&factory);
        let fd = socket.as_raw_fd();
        let inner = Rc::new_cyclic(|me| PortInner {
            me: me.clone(),
            socket: RefCell::new(Some(socket)),
            fd,
            reactor: reactor.clone(),
            factory,
            host,
            accepts: Cell::new(100),
            reserve: RefCell::new(open_reserve()),
            listening: Cell::new(true),
            on_close: RefCell::new(on_close),
        });
        if let Err(source) = reactor.add_reader(inner.clone()) {
            inner.listening.set(false);
            inner.close();
            return Err(CannotListen {
                address: address_label(&inner.host),
                source,
            }
            .into());
        }
        Ok(Port(inner))
    }
}

/// An address as error messages name it: `127.0.0.1:80`, `/run/app.sock`.
pub(crate) fn address_label(address: &Address) -> String {
    match address {
        Address::Tcp(a) | Address::Udp(a) => a.to_string(),
        Address::Unix(Some(path)) => path.display().to_string(),
        Address::Unix(None) => "<unnamed>".to_string(),
    }
}

impl PortInner {
    fn close(&self) {
        drop(self.socket.borrow_mut().take());
        let on_close = self.on_close.borrow_mut().take();
        if let Some(on_close) = on_close {
            on_close();
        }
        crate::protocol::factory_stopped(&self.factory);
    }

    fn accept_one(&self) -> Result<Option<(Socket, Address)>, Errno> {
        let sock = self.socket.borrow();
        let Some(sock) = sock.as_ref() else {
            return Ok(None);
        };
        loop {
            match rustix::net::acceptfrom_with(
                sock.as_fd(),
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            ) {
                Ok((fd, addr)) => {
                    let peer = match self.host {
                        Address::Unix(_) => super::unix::unix_address_of_any(addr),
                        _ => Address::Tcp(
                            addr.and_then(|a| SocketAddr::try_from(a).ok())
                                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                        ),
                    };
                    return Ok(Some((Socket::from(fd), peer)));
                }
                Err(Errno::INTR) => continue,
                Err(err) => return Err(err),
            }
        }
    }

    /// Out of descriptors: use the reserve to accept and close one pending client, and stop
    /// accepting for a moment, so the level-triggered socket does not spin.
    fn out_of_descriptors(&self, err: Errno) {
        crate::log::error!(
            target: "torsion::tcp",
            "accept on {} failed: {err}; refusing pending connections for 100 ms",
            self.host
        );
        // Taken out first: the borrow must end before the reserve is put back.
        let reserve = self.reserve.borrow_mut().take();
        if let Some(reserve) = reserve {
            drop(reserve);
            if let Ok(Some((sock, _))) = self.accept_one() {
                let _ = sock.set_linger(Some(Duration::ZERO));
                drop(sock);
            }
            *self.reserve.borrow_mut() = open_reserve();
        }
        self.reactor.remove_reader(self.fd);
        let me = self.me.clone();
        self.reactor
            .call_later(Duration::from_millis(100), move || {
                if let Some(me) = me.upgrade()
                    && me.listening.get()
                    && let Err(err) = me.reactor.add_reader(me.clone())
                {
                    crate::log::error!(target: "torsion::tcp", "cannot resume accepting: {err}");
                }
            });
    }
}

fn open_reserve() -> Option<OwnedFd> {
    std::fs::File::open("/dev/null").ok().map(OwnedFd::from)
}

impl FileDescriptor for PortInner {
    fn fileno(&self) -> RawFd {
        self.fd
    }

    fn connection_lost(&self, reason: Failure) {
        if self.listening.replace(false) {
            tracing::debug!(target: "torsion::tcp", "port {} closed: {reason}", self.host);
            self.close();
        }
    }

    fn log_prefix(&self) -> String {
        format!("port {}", self.host)
    }
}

impl ReadDescriptor for PortInner {
    fn do_read(&self) -> Result<(), Failure> {
        let allowed = self.accepts.get();
        let mut accepted = 0;
        while accepted < allowed && self.listening.get() {
            let (sock, peer) = match self.accept_one() {
                Ok(Some(pair)) => pair,
                Ok(None) | Err(Errno::AGAIN) => break,
                Err(Errno::PERM) | Err(Errno::CONNABORTED) => continue,
                Err(err @ (Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)) => {
                    self.out_of_descriptors(err);
                    break;
                }
                Err(err) => {
                    crate::log::error!(target: "torsion::tcp", "accept on {} failed: {err}", self.host);
                    break;
                }
            };
            accepted += 1;
            let factory = self.factory.clone();
            let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                factory.build_protocol(&peer)
            }));
            let protocol = match built {
                Ok(Some(protocol)) => protocol,
                Ok(None) => continue,
                Err(payload) => {
                    crate::log::error!(
                        target: "torsion::tcp",
                        "build_protocol for {peer} panicked: {}",
                        Failure::from_panic(&*payload)
                    );
                    continue;
                }
            };
            let host = match &self.host {
                // A listening socket on a wildcard address: the connection's own address
                // says which interface it arrived on.
                Address::Tcp(listening) => Address::Tcp(
                    sock.local_addr()
                        .ok()
                        .and_then(|a| a.as_socket())
                        .unwrap_or(*listening),
                ),
                other => other.clone(),
            };
            let conn = Connection::new(&self.reactor, sock, peer, host, None);
            conn.start(protocol);
        }
        self.accepts.set(if accepted == allowed {
            (allowed + 20).min(1000)
        } else {
            accepted.max(1)
        });
        Ok(())
    }
}

impl fmt::Debug for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Port")
            .field("host", &self.0.host)
            .finish_non_exhaustive()
    }
}

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
        if options.reuse_port {
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
    /// [`ConnectionRefused`]); the timeout covers all the attempts together. A name that
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
    /// failure; with no address at all, [`InvalidArgument`].
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

// ===== connectors =====

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

/// Where a [`Connector`] is in its life (Twisted's connector `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorState {
    /// Not connected and not trying.
    Disconnected,
    /// Resolving or connecting.
    Connecting,
    /// Connected.
    Connected,
}

/// An outgoing stream connection, TCP or UNIX, which can be stopped, dropped and made
/// again (Twisted's `IConnector`, as `connectTCP` and `connectUNIX` return it).
#[derive(Clone)]
pub struct Connector(Rc<ConnectorInner>);

/// Where a connector connects to.
pub(crate) enum Destination {
    /// A host name or IP literal, and a port.
    Tcp { host: String, port: u16 },
    /// Addresses to try in order.
    TcpAddresses(Vec<SocketAddr>),
    /// A UNIX socket path, as given (a leading `@` or NUL names an abstract socket).
    Unix(std::path::PathBuf),
}

struct ConnectorInner {
    reactor: Reactor,
    destination: Destination,
    factory: Rc<dyn ClientFactory>,
    options: ConnectOptions,
    state: Cell<ConnectorState>,
    attempt: RefCell<Option<Rc<Attempt>>>,
    connection: RefCell<Option<Weak<Connection>>>,
    factory_active: Cell<bool>,
}

/// One connection attempt in progress.
struct Attempt {
    /// Strong while the attempt runs (the caller may drop the `Connector`); the link back
    /// from the connector is cleared when the attempt ends, breaking the cycle.
    connector: Rc<ConnectorInner>,
    socket: RefCell<Option<Socket>>,
    fd: Cell<RawFd>,
    /// The address being connected to, once resolved.
    peer: RefCell<Option<Address>>,
    /// The TCP addresses still to try if this one fails.
    remaining: RefCell<VecDeque<SocketAddr>>,
    timeout: RefCell<Option<DelayedCall>>,
    done: Cell<bool>,
}

/// How long to wait before trying again when a UNIX socket's backlog is full (`EAGAIN`).
const UNIX_RETRY: Duration = Duration::from_millis(10);

impl Connector {
    /// Makes a connector for `destination` and starts connecting.
    pub(crate) fn start<F: ClientFactory>(
        reactor: &Reactor,
        destination: Destination,
        factory: Rc<F>,
        options: ConnectOptions,
    ) -> Connector {
        let factory: Rc<dyn ClientFactory> = factory;
        let connector = Connector(Rc::new(ConnectorInner {
            reactor: reactor.clone(),
            destination,
            factory,
            options,
            state: Cell::new(ConnectorState::Disconnected),
            attempt: RefCell::new(None),
            connection: RefCell::new(None),
            factory_active: Cell::new(false),
        }));
        connector.connect();
        connector
    }

    /// Starts connecting (again) (Twisted's `connect`): after a failure or a lost
    /// connection, this is how to retry or reconnect.
    ///
    /// # Panics
    ///
    /// If the connector is already connecting or connected, as Twisted raises.
    pub fn connect(&self) {
        let inner = &self.0;
        assert!(
            inner.state.get() == ConnectorState::Disconnected,
            "Connector::connect: already {:?}",
            inner.state.get()
        );
        inner.state.set(ConnectorState::Connecting);
        if !inner.factory_active.replace(true) {
            crate::protocol::factory_started(&inner.factory);
        }
        let attempt = Rc::new(Attempt {
            connector: inner.clone(),
            socket: RefCell::new(None),
            fd: Cell::new(-1),
            peer: RefCell::new(None),
            remaining: RefCell::new(VecDeque::new()),
            timeout: RefCell::new(None),
            done: Cell::new(false),
        });
        *inner.attempt.borrow_mut() = Some(attempt.clone());
        if let Some(timeout) = inner.options.timeout {
            let a = attempt.clone();
            let address = self.destination();
            let call = inner.reactor.call_later(timeout, move || {
                a.fail(ConnectTimeout { address, timeout }.into());
            });
            *attempt.timeout.borrow_mut() = Some(call);
        }
        inner.factory.started_connecting(self);
        let (host, port) = match &inner.destination {
            Destination::Tcp { host, port } => (host.clone(), *port),
            Destination::TcpAddresses(addresses) => {
                let a = attempt.clone();
                let addresses = addresses.clone();
                inner
                    .reactor
                    .call_later(Duration::ZERO, move || a.try_addresses(addresses));
                return;
            }
            Destination::Unix(path) => {
                let a = attempt.clone();
                let path = path.clone();
                inner.reactor.call_later(
                    Duration::ZERO,
                    move || match super::unix::unix_sock_addr(&path) {
                        Ok((target, name)) => a.start(target, Address::Unix(Some(name))),
                        Err(err) => a.fail(Failure::new(err)),
                    },
                );
                return;
            }
        };
        match host.parse::<IpAddr>() {
            Ok(ip) => {
                let a = attempt.clone();
                let address = SocketAddr::new(ip, port);
                inner
                    .reactor
                    .call_later(Duration::ZERO, move || a.try_addresses(vec![address]));
            }
            Err(_) => {
                let a = attempt.clone();
                let resolved = inner.reactor.defer_to_thread(move || resolve(&host, port));
                drop(resolved.add_both(move |result| {
                    match result {
                        Ok(Ok(addresses)) => a.try_addresses(addresses),
                        Ok(Err(lookup)) => a.fail(Failure::new(lookup)),
                        // The thread pool could not run the lookup (it is stopping).
                        Err(failure) => a.fail(failure),
                    }
                    Ok::<(), Failure>(())
                }));
            }
        }
    }

    /// Stops a connection attempt in progress (Twisted's `stopConnecting`): the factory's
    /// `client_connection_failed` gets [`ConnectCancelled`] on the next turn of the loop.
    pub fn stop_connecting(&self) {
        if self.0.state.get() != ConnectorState::Connecting {
            return;
        }
        if let Some(attempt) = self.0.attempt.borrow().clone() {
            self.0.reactor.call_later(Duration::ZERO, move || {
                attempt.fail(ConnectCancelled.into())
            });
        }
    }

    /// Drops the connection, or stops the attempt (Twisted's `disconnect`).
    pub fn disconnect(&self) {
        match self.0.state.get() {
            ConnectorState::Connecting => self.stop_connecting(),
            ConnectorState::Connected => {
                let conn = self.0.connection.borrow().as_ref().and_then(Weak::upgrade);
                if let Some(conn) = conn {
                    conn.lose_connection();
                }
            }
            ConnectorState::Disconnected => {}
        }
    }

    /// Where this connector connects to (Twisted's `getDestination`): `host:port` as given
    /// for TCP, the socket path for UNIX.
    pub fn destination(&self) -> String {
        match &self.0.destination {
            Destination::Tcp { host, port } => format!("{host}:{port}"),
            Destination::TcpAddresses(addresses) => addresses
                .iter()
                .map(SocketAddr::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            Destination::Unix(path) => path.display().to_string(),
        }
    }

    /// The connector's state.
    pub fn state(&self) -> ConnectorState {
        self.0.state.get()
    }

    /// The established connection's transport, while connected.
    pub fn transport(&self) -> Option<Transport> {
        let conn = self
            .0
            .connection
            .borrow()
            .as_ref()
            .and_then(Weak::upgrade)?;
        Some(conn)
    }

    fn from_inner(inner: &Rc<ConnectorInner>) -> Connector {
        Connector(inner.clone())
    }

    /// The connection it made was lost: tell the factory, after the protocol.
    fn lost(&self, reason: Failure) {
        let inner = &self.0;
        inner.state.set(ConnectorState::Disconnected);
        *inner.connection.borrow_mut() = None;
        inner.factory.client_connection_lost(self, reason);
        self.maybe_stop_factory();
    }

    fn maybe_stop_factory(&self) {
        let inner = &self.0;
        if inner.state.get() == ConnectorState::Disconnected && inner.factory_active.replace(false)
        {
            crate::protocol::factory_stopped(&inner.factory);
        }
    }
}

impl ConnectionEnded for Connector {
    fn connection_ended(&self, reason: Failure) {
        self.lost(reason);
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("destination", &self.destination())
            .field("state", &self.0.state.get())
            .finish()
    }
}

impl Attempt {
    /// Tries `addresses` in order, from the first.
    fn try_addresses(self: Rc<Self>, addresses: Vec<SocketAddr>) {
        if self.done.get() {
            return;
        }
        *self.remaining.borrow_mut() = addresses.into();
        self.next_address(None);
    }

    /// Connects to the next address left, or fails with `last` (the previous address's
    /// failure) if none is.
    fn next_address(self: Rc<Self>, last: Option<Failure>) {
        let next = self.remaining.borrow_mut().pop_front();
        match (next, last) {
            (Some(address), _) => self.start(SockAddr::from(address), Address::Tcp(address)),
            (None, Some(last)) => self.fail(last),
            (None, None) => self.fail(
                InvalidArgument("connect_tcp_addresses: no address to connect to".into()).into(),
            ),
        }
    }

    /// Connecting to the current address failed with `reason`: try the next one, or end
    /// the attempt with `reason` if it was the last.
    fn address_failed(self: Rc<Self>, reason: Failure) {
        if self.done.get() {
            return;
        }
        if self.remaining.borrow().is_empty() {
            return self.fail(reason);
        }
        if self.fd.get() >= 0 {
            self.connector.reactor.remove_writer(self.fd.get());
            self.fd.set(-1);
        }
        // Kept open until the next socket exists, so the two never share a descriptor
        // number within one dispatch.
        let failed = self.socket.borrow_mut().take();
        let peer = self.peer.borrow().clone();
        if let Some(peer) = peer {
            tracing::debug!(
                target: "torsion::tcp",
                "connecting to {peer} failed: {reason}; trying the next address"
            );
        }
        self.next_address(Some(reason));
        drop(failed);
    }

    /// The attempt itself as the `Rc` it is registered as, while it is the connector's
    /// current attempt.
    fn current(&self) -> Option<Rc<Attempt>> {
        let me = self.connector.attempt.borrow().clone()?;
        std::ptr::eq(Rc::as_ptr(&me), self).then_some(me)
    }

    /// Connects a new socket to `target`, whose address is `peer`.
    fn start(self: Rc<Self>, target: SockAddr, peer: Address) {
        if self.done.get() {
            return;
        }
        let connector = self.connector.clone();
        *self.peer.borrow_mut() = Some(peer.clone());
        let unix = matches!(peer, Address::Unix(_));
        let socket = match Socket::new(
            Domain::from(i32::from(target.family())),
            Type::STREAM.nonblocking().cloexec(),
            (!unix).then_some(SockProtocol::TCP),
        ) {
            Ok(s) => s,
            Err(err) => return self.address_failed(Failure::new(err)),
        };
        if let Some(bind) = connector.options.bind_address
            && !unix
            && let Err(err) = socket.bind(&SockAddr::from(bind))
        {
            return self.address_failed(Failure::new(err));
        }
        match socket.connect(&target) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(err) if unix && err.raw_os_error() == Some(libc::EAGAIN) => {
                // The listener's backlog is full: a UNIX connect does not wait in the
                // kernel as TCP's does, so try again shortly (the timeout still applies).
                drop(socket);
                let reactor = connector.reactor.clone();
                reactor.call_later(UNIX_RETRY, move || self.start(target, peer));
                return;
            }
            Err(err) => return self.address_failed(connect_error(err, &peer)),
        }
        self.fd.set(socket.as_raw_fd());
        *self.socket.borrow_mut() = Some(socket);
        if let Err(err) = connector.reactor.add_writer(self.clone()) {
            self.fail(Failure::new(err));
        }
    }

    fn connected(self: &Rc<Self>) {
        let inner = self.connector.clone();
        let Some(socket) = self.socket.borrow_mut().take() else {
            return;
        };
        self.done.set(true);
        inner.reactor.remove_writer(self.fd.get());
        if let Some(timeout) = self.timeout.borrow_mut().take() {
            let _ = timeout.cancel();
        }
        *inner.attempt.borrow_mut() = None;
        let peer = self
            .peer
            .borrow_mut()
            .take()
            .unwrap_or_else(|| Address::Tcp(SocketAddr::from(([0, 0, 0, 0], 0))));
        let host = match &peer {
            Address::Unix(_) => socket
                .local_addr()
                .map(|a| super::unix::unix_address_of(&a))
                .unwrap_or(Address::Unix(None)),
            _ => Address::Tcp(
                socket
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_socket())
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            ),
        };
        let connector = Connector::from_inner(&inner);
        let factory = inner.factory.clone();
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            factory.clone().build_protocol(&peer)
        }));
        let protocol = match built {
            Ok(Some(p)) => p,
            Ok(None) => {
                drop(socket);
                inner.state.set(ConnectorState::Disconnected);
                factory.client_connection_lost(&connector, Failure::new(ConnectionDone));
                connector.maybe_stop_factory();
                return;
            }
            Err(payload) => {
                drop(socket);
                inner.state.set(ConnectorState::Disconnected);
                factory.client_connection_failed(&connector, Failure::from_panic(&*payload));
                connector.maybe_stop_factory();
                return;
            }
        };
        inner.state.set(ConnectorState::Connected);
        let ended: Rc<dyn ConnectionEnded> = Rc::new(connector);
        let conn = Connection::new(&inner.reactor, socket, peer, host, Some(ended));
        *inner.connection.borrow_mut() = Some(Rc::downgrade(&conn));
        conn.start(protocol);
    }

    /// Ends the attempt with `reason`: close, tell the factory, stop it unless it
    /// reconnected.
    fn fail(&self, reason: Failure) {
        if self.done.replace(true) {
            return;
        }
        let inner = self.connector.clone();
        if self.fd.get() >= 0 {
            inner.reactor.remove_writer(self.fd.get());
        }
        drop(self.socket.borrow_mut().take());
        if let Some(timeout) = self.timeout.borrow_mut().take() {
            let _ = timeout.cancel();
        }
        *inner.attempt.borrow_mut() = None;
        inner.state.set(ConnectorState::Disconnected);
        let connector = Connector::from_inner(&inner);
        inner.factory.client_connection_failed(&connector, reason);
        connector.maybe_stop_factory();
    }
}

fn connect_error(err: io::Error, address: &Address) -> Failure {
    if err.raw_os_error() == Some(libc::ECONNREFUSED) {
        ConnectionRefused {
            address: address_label(address),
        }
        .into()
    } else {
        Failure::new(err)
    }
}

impl FileDescriptor for Attempt {
    fn fileno(&self) -> RawFd {
        self.fd.get()
    }

    fn connection_lost(&self, reason: Failure) {
        // An error or hang-up while connecting: the socket's pending error says why.
        let error = self
            .socket
            .borrow()
            .as_ref()
            .and_then(|sock| sock.take_error().ok().flatten());
        let peer = self.peer.borrow().clone();
        match (error, peer, self.current()) {
            (Some(err), Some(peer), Some(me)) => me.address_failed(connect_error(err, &peer)),
            (Some(err), Some(peer), None) => self.fail(connect_error(err, &peer)),
            _ => self.fail(reason),
        }
    }
}

impl WriteDescriptor for Attempt {
    fn do_write(&self) -> Result<(), Failure> {
        let error = match self.socket.borrow().as_ref() {
            Some(sock) => sock.take_error(),
            None => return Ok(()),
        };
        let peer = self
            .peer
            .borrow()
            .clone()
            .unwrap_or_else(|| Address::Tcp(SocketAddr::from(([0, 0, 0, 0], 0))));
        // `self` is registered as an `Rc`; find it again to hand on.
        match (error, self.current()) {
            (Ok(None), Some(me)) => me.connected(),
            (Ok(None), None) => {}
            (Ok(Some(err)) | Err(err), Some(me)) => me.address_failed(connect_error(err, &peer)),
            (Ok(Some(err)) | Err(err), None) => self.fail(connect_error(err, &peer)),
        }
        Ok(())
    }
}
