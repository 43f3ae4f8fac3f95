//! A reactor that only records what it is asked to listen on and connect to (Twisted's
//! `twisted.internet.testing.MemoryReactor` and `MemoryReactorClock`).
//!
//! Code that sets up ports and connections (endpoints, client services, reconnecting
//! factories) is tested with a [`MemoryReactor`]: the test calls the code, then looks at the
//! recorded calls, and builds protocols from the recorded factories itself (for example to
//! connect them with a [`Pump`](super::Pump)). Time is a [`Clock`] moved by hand.
//!
//! Invariant: recording never calls into a factory; `start_factory`,
//! `started_connecting` and the rest are for the test to call if it wants them.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use crate::defer::{Deferred, Failure};
use crate::net::tcp::{ConnectOptions, DEFAULT_BACKLOG, DEFAULT_CONNECT_TIMEOUT, ListenOptions};
use crate::net::udp::UdpOptions;
use crate::net::unix::{UnixConnectOptions, UnixListenOptions};
use crate::net::{Address, ConnectorOps, ListeningPort, ReactorTcp, ReactorUdp, ReactorUnix};
use crate::protocol::{ClientFactory, DatagramProtocol, Factory};
use crate::time::{Clock, DelayedCall, DelayedCallInfo, IntoDelay, ReactorTime, Time};

/// The default mode of a listening UNIX socket (Twisted's `listenUNIX(mode=0o666)`).
pub const DEFAULT_UNIX_MODE: u32 = 0o666;
/// The default largest datagram a UDP port reads (Twisted's `listenUDP(maxPacketSize=8192)`).
pub const DEFAULT_MAX_PACKET_SIZE: usize = 8192;

/// A call to [`MemoryReactor::listen_tcp`] (one entry of Twisted's `tcpServers`:
/// `(port, factory, backlog, interface)`).
#[derive(Clone)]
pub struct TcpServerRecord {
    /// The port asked for.
    pub port: u16,
    /// The factory given.
    pub factory: Rc<dyn Factory>,
    /// The listen backlog.
    pub backlog: i32,
    /// The interface to bind.
    pub interface: IpAddr,
    /// Whether `SO_REUSEPORT` was asked for.
    pub reuse_port: bool,
    /// The port returned.
    pub listening_port: ListeningPortRecord,
}

/// A call to [`MemoryReactor::connect_tcp`] (one entry of Twisted's `tcpClients`:
/// `(host, port, factory, timeout, bindAddress)`).
#[derive(Clone)]
pub struct TcpClientRecord {
    /// The host name or address to connect to.
    pub host: String,
    /// The port to connect to.
    pub port: u16,
    /// The factory given.
    pub factory: Rc<dyn ClientFactory>,
    /// The connect timeout.
    pub timeout: Option<Duration>,
    /// The local address to bind, if any.
    pub bind_address: Option<SocketAddr>,
    /// The connector returned.
    pub connector: ConnectorRecord,
}

/// A call to [`MemoryReactor::listen_unix`] (one entry of Twisted's `unixServers`:
/// `(address, factory, backlog, mode, wantPID)`).
#[derive(Clone)]
pub struct UnixServerRecord {
    /// The socket path.
    pub path: PathBuf,
    /// The factory given.
    pub factory: Rc<dyn Factory>,
    /// The listen backlog.
    pub backlog: i32,
    /// The socket file's mode.
    pub mode: u32,
    /// Whether a lock file with the process id was asked for.
    pub want_pid: bool,
    /// The port returned.
    pub listening_port: ListeningPortRecord,
}

/// A call to [`MemoryReactor::connect_unix`] (one entry of Twisted's `unixClients`:
/// `(address, factory, timeout, checkPID)`).
#[derive(Clone)]
pub struct UnixClientRecord {
    /// The socket path.
    pub path: PathBuf,
    /// The factory given.
    pub factory: Rc<dyn ClientFactory>,
    /// The connect timeout.
    pub timeout: Option<Duration>,
    /// Whether the server's lock file was to be checked.
    pub check_pid: bool,
    /// The connector returned.
    pub connector: ConnectorRecord,
}

/// A call to [`MemoryReactor::listen_udp`] (one entry of Twisted's `udpServers`:
/// `(port, protocol, interface, maxPacketSize)`).
#[derive(Clone)]
pub struct UdpServerRecord {
    /// The port asked for.
    pub port: u16,
    /// The protocol given, as it was given; see [`protocol`](UdpServerRecord::protocol).
    pub protocol: Rc<dyn Any>,
    /// The interface to bind.
    pub interface: IpAddr,
    /// The largest datagram to read.
    pub max_packet_size: usize,
    /// The port returned.
    pub listening_port: ListeningPortRecord,
}

impl UdpServerRecord {
    /// The protocol given, if it is a `P`.
    pub fn protocol<P: 'static>(&self) -> Option<&P> {
        self.protocol.downcast_ref::<P>()
    }
}

struct PortState {
    host: Address,
    stopped: Cell<bool>,
}

/// The port a [`MemoryReactor`] returns from `listen_*` (Twisted's `_FakePort`): it
/// remembers whether it was stopped.
#[derive(Clone)]
pub struct ListeningPortRecord(Rc<PortState>);

impl ListeningPortRecord {
    fn new(host: Address) -> ListeningPortRecord {
        ListeningPortRecord(Rc::new(PortState {
            host,
            stopped: Cell::new(false),
        }))
    }

    /// The address it "listens" on (Twisted's `getHost`): the interface and port asked
    /// for, or the socket path. Port 0 stays 0.
    pub fn host(&self) -> Address {
        self.0.host.clone()
    }

    /// Records the stop and returns a Deferred that has fired (Twisted's `stopListening`).
    pub fn stop_listening(&self) -> Deferred<()> {
        self.0.stopped.set(true);
        Deferred::succeed(())
    }

    /// Whether [`stop_listening`](ListeningPortRecord::stop_listening) was called.
    pub fn stopped(&self) -> bool {
        self.0.stopped.get()
    }
}

impl fmt::Debug for ListeningPortRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListeningPortRecord")
            .field("host", &self.0.host)
            .field("stopped", &self.0.stopped.get())
            .finish()
    }
}

struct ConnectorState {
    destination: String,
    connects: Cell<usize>,
    stopped_connecting: Cell<bool>,
    disconnected: Cell<bool>,
}

/// The connector a [`MemoryReactor`] returns from `connect_*` (Twisted's `_FakeConnector`):
/// it records the calls made on it and does nothing else.
#[derive(Clone)]
pub struct ConnectorRecord(Rc<ConnectorState>);

impl ConnectorRecord {
    fn new(destination: String) -> ConnectorRecord {
        ConnectorRecord(Rc::new(ConnectorState {
            destination,
            connects: Cell::new(0),
            stopped_connecting: Cell::new(false),
            disconnected: Cell::new(false),
        }))
    }

    /// Records a (re)connect (Twisted's `connect`).
    pub fn connect(&self) {
        self.0.connects.set(self.0.connects.get() + 1);
    }

    /// Records the call (Twisted's `stopConnecting`).
    pub fn stop_connecting(&self) {
        self.0.stopped_connecting.set(true);
    }

    /// Records the call (Twisted's `disconnect`).
    pub fn disconnect(&self) {
        self.0.disconnected.set(true);
    }

    /// Where it would connect (Twisted's `getDestination`): `host:port`, or the socket path.
    pub fn destination(&self) -> String {
        self.0.destination.clone()
    }

    /// How many times [`connect`](ConnectorRecord::connect) was called (the reactor's own
    /// first attempt is not counted).
    pub fn connect_calls(&self) -> usize {
        self.0.connects.get()
    }

    /// Whether [`stop_connecting`](ConnectorRecord::stop_connecting) was called (Twisted's
    /// `stoppedConnecting`).
    pub fn stopped_connecting(&self) -> bool {
        self.0.stopped_connecting.get()
    }

    /// Whether [`disconnect`](ConnectorRecord::disconnect) was called.
    pub fn disconnected(&self) -> bool {
        self.0.disconnected.get()
    }
}

impl fmt::Debug for ConnectorRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorRecord")
            .field("destination", &self.0.destination)
            .field("connect_calls", &self.0.connects.get())
            .field("stopped_connecting", &self.0.stopped_connecting.get())
            .field("disconnected", &self.0.disconnected.get())
            .finish()
    }
}

#[derive(Default)]
struct Records {
    tcp_servers: Vec<TcpServerRecord>,
    tcp_clients: Vec<TcpClientRecord>,
    unix_servers: Vec<UnixServerRecord>,
    unix_clients: Vec<UnixClientRecord>,
    udp_servers: Vec<UdpServerRecord>,
    connectors: Vec<ConnectorRecord>,
}

/// A stand-in for [`Reactor`](crate::Reactor) that records `listen_*` and `connect_*`
/// calls and keeps time with a [`Clock`] (Twisted's `MemoryReactorClock`).
///
/// Its methods have the names and arguments of the reactor's; they return records instead
/// of ports and connectors, and never fail. It is a cheap handle: clones share the records
/// and the clock. It implements [`ReactorTime`], so code scheduling against
/// `&impl ReactorTime` runs on it.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use torsion::net::{Address, TransportOps};
/// use torsion::testing::{AccumulatingProtocol, MemoryReactor, Pump};
/// use torsion::time::ReactorTime;
///
/// // Code under test: connects, and gives up after 5 s.
/// fn start_client(reactor: &MemoryReactor) {
///     let connector = reactor.connect_tcp("example.com", 79, Rc::new(AccumulatingProtocol::new));
///     reactor.call_later(5.0, move || connector.disconnect());
/// }
///
/// let reactor = MemoryReactor::new();
/// start_client(&reactor);
/// let clients = reactor.tcp_clients();
/// assert_eq!((clients[0].host.as_str(), clients[0].port), ("example.com", 79));
/// assert_eq!(clients[0].timeout, Some(std::time::Duration::from_secs(30)));
///
/// // Complete the connection in memory with the recorded factory.
/// let server_address = Address::Tcp("10.0.0.1:79".parse().unwrap());
/// let client = clients[0].factory.clone().build_protocol(&server_address).unwrap();
/// let server = AccumulatingProtocol::new();
/// let pump = Pump::connect(Box::new(server), client);
/// assert!(pump.client_transport().is_connected());
///
/// reactor.advance(5.0);
/// assert!(clients[0].connector.disconnected());
/// ```
#[derive(Clone)]
pub struct MemoryReactor {
    clock: Clock,
    records: Rc<RefCell<Records>>,
}

impl MemoryReactor {
    /// A reactor with no calls recorded, its clock at zero.
    pub fn new() -> MemoryReactor {
        MemoryReactor {
            clock: Clock::new(),
            records: Rc::new(RefCell::new(Records::default())),
        }
    }

    /// The clock that keeps this reactor's time.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Moves time forward and runs the calls then due ([`Clock::advance`]).
    ///
    /// # Panics
    ///
    /// If `by` is negative or not finite.
    #[track_caller]
    pub fn advance(&self, by: impl IntoDelay) {
        self.clock.advance(by);
    }

    /// Records a TCP listen with the default options (Twisted's `listenTCP`).
    ///
    /// # Errors
    ///
    /// Never; the `Result` matches [`Reactor::listen_tcp`](crate::Reactor::listen_tcp).
    pub fn listen_tcp<F: Factory>(
        &self,
        port: u16,
        factory: Rc<F>,
    ) -> Result<ListeningPortRecord, Failure> {
        self.listen_tcp_with(port, factory, ListenOptions::default())
    }

    /// Records a TCP listen with its options.
    ///
    /// # Errors
    ///
    /// Never; the `Result` matches
    /// [`Reactor::listen_tcp_with`](crate::Reactor::listen_tcp_with).
    pub fn listen_tcp_with<F: Factory>(
        &self,
        port: u16,
        factory: Rc<F>,
        options: ListenOptions,
    ) -> Result<ListeningPortRecord, Failure> {
        let listening_port =
            ListeningPortRecord::new(Address::Tcp(SocketAddr::new(options.interface, port)));
        self.records.borrow_mut().tcp_servers.push(TcpServerRecord {
            port,
            factory,
            backlog: options.backlog,
            interface: options.interface,
            reuse_port: options.reuse_port,
            listening_port: listening_port.clone(),
        });
        Ok(listening_port)
    }

    /// Records a TCP connect with the default options (Twisted's `connectTCP`).
    pub fn connect_tcp<F: ClientFactory>(
        &self,
        host: &str,
        port: u16,
        factory: Rc<F>,
    ) -> ConnectorRecord {
        self.connect_tcp_with(host, port, factory, ConnectOptions::default())
    }

    /// Records a TCP connect with its options.
    pub fn connect_tcp_with<F: ClientFactory>(
        &self,
        host: &str,
        port: u16,
        factory: Rc<F>,
        options: ConnectOptions,
    ) -> ConnectorRecord {
        let connector = ConnectorRecord::new(format!("{host}:{port}"));
        let mut records = self.records.borrow_mut();
        records.tcp_clients.push(TcpClientRecord {
            host: host.to_string(),
            port,
            factory,
            timeout: options.timeout,
            bind_address: options.bind_address,
            connector: connector.clone(),
        });
        records.connectors.push(connector.clone());
        connector
    }

    /// Records a UNIX socket listen with backlog 50 and mode 0o666 (Twisted's
    /// `listenUNIX`).
    ///
    /// # Errors
    ///
    /// Never; the `Result` has the shape of the reactor's listen calls.
    pub fn listen_unix<F: Factory>(
        &self,
        path: impl AsRef<Path>,
        factory: Rc<F>,
    ) -> Result<ListeningPortRecord, Failure> {
        self.listen_unix_with(path, factory, DEFAULT_BACKLOG, DEFAULT_UNIX_MODE, false)
    }

    /// Records a UNIX socket listen with a backlog, a mode and whether to write a PID lock
    /// file (Twisted's `listenUNIX(address, factory, backlog, mode, wantPID)`).
    ///
    /// # Errors
    ///
    /// Never; the `Result` has the shape of the reactor's listen calls.
    pub fn listen_unix_with<F: Factory>(
        &self,
        path: impl AsRef<Path>,
        factory: Rc<F>,
        backlog: i32,
        mode: u32,
        want_pid: bool,
    ) -> Result<ListeningPortRecord, Failure> {
        let path = path.as_ref().to_path_buf();
        let listening_port = ListeningPortRecord::new(Address::Unix(Some(path.clone())));
        self.records
            .borrow_mut()
            .unix_servers
            .push(UnixServerRecord {
                path,
                factory,
                backlog,
                mode,
                want_pid,
                listening_port: listening_port.clone(),
            });
        Ok(listening_port)
    }

    /// Records a UNIX socket connect with the 30 s timeout (Twisted's `connectUNIX`).
    pub fn connect_unix<F: ClientFactory>(
        &self,
        path: impl AsRef<Path>,
        factory: Rc<F>,
    ) -> ConnectorRecord {
        self.connect_unix_with(path, factory, Some(DEFAULT_CONNECT_TIMEOUT), false)
    }

    /// Records a UNIX socket connect with a timeout and whether to check the server's PID
    /// lock file (Twisted's `connectUNIX(address, factory, timeout, checkPID)`).
    pub fn connect_unix_with<F: ClientFactory>(
        &self,
        path: impl AsRef<Path>,
        factory: Rc<F>,
        timeout: Option<Duration>,
        check_pid: bool,
    ) -> ConnectorRecord {
        let path = path.as_ref().to_path_buf();
        let connector = ConnectorRecord::new(path.display().to_string());
        let mut records = self.records.borrow_mut();
        records.unix_clients.push(UnixClientRecord {
            path,
            factory,
            timeout,
            check_pid,
            connector: connector.clone(),
        });
        records.connectors.push(connector.clone());
        connector
    }

    /// Records a UDP listen on every IPv4 interface with the default packet size (Twisted's
    /// `listenUDP`). The protocol is kept as given, whatever its type.
    ///
    /// # Errors
    ///
    /// Never; the `Result` has the shape of the reactor's listen calls.
    pub fn listen_udp<P: 'static>(
        &self,
        port: u16,
        protocol: P,
    ) -> Result<ListeningPortRecord, Failure> {
        self.listen_udp_with(
            port,
            protocol,
            IpAddr::from([0, 0, 0, 0]),
            DEFAULT_MAX_PACKET_SIZE,
        )
    }

    /// Records a UDP listen with an interface and a packet size (Twisted's
    /// `listenUDP(port, protocol, interface, maxPacketSize)`).
    ///
    /// # Errors
    ///
    /// Never; the `Result` has the shape of the reactor's listen calls.
    pub fn listen_udp_with<P: 'static>(
        &self,
        port: u16,
        protocol: P,
        interface: IpAddr,
        max_packet_size: usize,
    ) -> Result<ListeningPortRecord, Failure> {
        let listening_port =
            ListeningPortRecord::new(Address::Udp(SocketAddr::new(interface, port)));
        self.records.borrow_mut().udp_servers.push(UdpServerRecord {
            port,
            protocol: Rc::new(protocol),
            interface,
            max_packet_size,
            listening_port: listening_port.clone(),
        });
        Ok(listening_port)
    }

    /// The recorded TCP listens, in order (Twisted's `tcpServers`).
    pub fn tcp_servers(&self) -> Vec<TcpServerRecord> {
        self.records.borrow().tcp_servers.clone()
    }

    /// The recorded TCP connects, in order (Twisted's `tcpClients`).
    pub fn tcp_clients(&self) -> Vec<TcpClientRecord> {
        self.records.borrow().tcp_clients.clone()
    }

    /// The recorded UNIX socket listens, in order (Twisted's `unixServers`).
    pub fn unix_servers(&self) -> Vec<UnixServerRecord> {
        self.records.borrow().unix_servers.clone()
    }

    /// The recorded UNIX socket connects, in order (Twisted's `unixClients`).
    pub fn unix_clients(&self) -> Vec<UnixClientRecord> {
        self.records.borrow().unix_clients.clone()
    }

    /// The recorded UDP listens, in order (Twisted's `udpServers`).
    pub fn udp_servers(&self) -> Vec<UdpServerRecord> {
        self.records.borrow().udp_servers.clone()
    }

    /// Every connector returned, TCP and UNIX, in order (Twisted's `connectors`).
    pub fn connectors(&self) -> Vec<ConnectorRecord> {
        self.records.borrow().connectors.clone()
    }
}

impl Default for MemoryReactor {
    fn default() -> Self {
        MemoryReactor::new()
    }
}

impl ReactorTime for MemoryReactor {
    fn now(&self) -> Time {
        self.clock.now()
    }

    #[track_caller]
    fn call_later_boxed(&self, delay: Duration, f: Box<dyn FnOnce()>) -> DelayedCall {
        self.clock.call_later_boxed(delay, f)
    }

    fn delayed_calls(&self) -> Vec<DelayedCallInfo> {
        self.clock.delayed_calls()
    }
}

impl fmt::Debug for MemoryReactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let records = self.records.borrow();
        f.debug_struct("MemoryReactor")
            .field("now", &self.clock.now())
            .field("tcp_servers", &records.tcp_servers.len())
            .field("tcp_clients", &records.tcp_clients.len())
            .field("unix_servers", &records.unix_servers.len())
            .field("unix_clients", &records.unix_clients.len())
            .field("udp_servers", &records.udp_servers.len())
            .finish()
    }
}

// The reactor's network traits, as the real reactor implements them (net/interfaces.rs).

impl ListeningPort for ListeningPortRecord {
    fn host(&self) -> Address {
        ListeningPortRecord::host(self)
    }
    fn stop_listening(&self) -> Deferred<()> {
        ListeningPortRecord::stop_listening(self)
    }
}

impl ConnectorOps for ConnectorRecord {
    fn connect(&self) {
        ConnectorRecord::connect(self);
    }
    fn stop_connecting(&self) {
        ConnectorRecord::stop_connecting(self);
    }
    fn disconnect(&self) {
        ConnectorRecord::disconnect(self);
    }
    fn destination(&self) -> String {
        ConnectorRecord::destination(self)
    }
}

impl ReactorTcp for MemoryReactor {
    type Port = ListeningPortRecord;
    type Connector = ConnectorRecord;

    fn listen_tcp_with<F: Factory>(
        &self,
        port: u16,
        factory: Rc<F>,
        options: ListenOptions,
    ) -> Result<ListeningPortRecord, Failure> {
        MemoryReactor::listen_tcp_with(self, port, factory, options)
    }

    fn connect_tcp_with<F: ClientFactory>(
        &self,
        host: &str,
        port: u16,
        factory: Rc<F>,
        options: ConnectOptions,
    ) -> ConnectorRecord {
        MemoryReactor::connect_tcp_with(self, host, port, factory, options)
    }
}

impl ReactorUnix for MemoryReactor {
    type Port = ListeningPortRecord;
    type Connector = ConnectorRecord;

    fn listen_unix_with<F: Factory>(
        &self,
        path: &Path,
        factory: Rc<F>,
        options: UnixListenOptions,
    ) -> Result<ListeningPortRecord, Failure> {
        MemoryReactor::listen_unix_with(
            self,
            path,
            factory,
            options.backlog,
            options.mode,
            options.want_pid,
        )
    }

    fn connect_unix_with<F: ClientFactory>(
        &self,
        path: &Path,
        factory: Rc<F>,
        options: UnixConnectOptions,
    ) -> ConnectorRecord {
        MemoryReactor::connect_unix_with(self, path, factory, options.timeout, false)
    }
}

impl ReactorUdp for MemoryReactor {
    type Port = ListeningPortRecord;

    fn listen_udp_with(
        &self,
        port: u16,
        protocol: Box<dyn DatagramProtocol>,
        options: UdpOptions,
    ) -> Result<ListeningPortRecord, Failure> {
        MemoryReactor::listen_udp_with(
            self,
            port,
            protocol,
            options.interface,
            options.max_packet_size,
        )
    }
}
