//! Endpoints: where to listen and where to connect, as values and as strings (Twisted's
//! `twisted.internet.endpoints`).
//!
//! A [`ServerEndpoint`] listens with a factory and hands back a [`ListeningPort`]; a
//! [`ClientEndpoint`] connects with a factory and hands back the connection's
//! [`Transport`]. Code written against the two traits runs unchanged over TCP, TCP over
//! IPv6, UNIX sockets and (later) TLS, and a program can take its endpoints from its
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
//!
//! Stream server endpoints listen with a backlog of [`DEFAULT_BACKLOG`] (1024, where
//! Twisted's is 50, so that a burst of connects is served) unless a value's `backlog` or a
//! string's `backlog=N` says otherwise; a
//! [`StreamServerEndpointService`](crate::application::StreamServerEndpointService) listens
//! with its endpoint's.
//!
//! [`server_from_string`] and [`client_from_string`] parse them; other modules and
//! programs add their own types with [`register_server_parser`] and
//! [`register_client_parser`] (TLS registers `ssl` and `tls` this way: until it does, they
//! are unknown types). [`HostnameEndpoint`] connects to a name with several addresses the
//! way RFC 8305 ("Happy Eyeballs") asks.
//!
//! UNIX socket endpoints listen and connect with [`Reactor::listen_unix_with`] and
//! [`Reactor::connect_unix_with`], as [`UnixServerSpec`] and [`UnixClientSpec`] say;
//! `systemd:` endpoints adopt a socket inherited through socket activation
//! ([`listen_fds`]) with [`Reactor::adopt_stream_port`]. Finding an inherited socket by name
//! (`systemd:…:name=X`, `LISTEN_FDNAMES`) is parsed but not supported yet: it fails with
//! [`EndpointUnavailable`]. There is no `udp:` endpoint: Twisted's string syntax has none.
//!
//! Invariant: no user code (a factory, a protocol, a Deferred's callbacks, a registered
//! parser) runs while a `RefCell` of this module is borrowed; state is taken out, the
//! borrow released, and only then is the user called.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::sync::OnceLock;
use std::time::Duration;

use socket2::{Domain, SockRef};

use crate::defer::{Deferred, Failure, Resolver};
use crate::error::{
    BadFileError, EndpointSyntaxError, EndpointSyntaxProblem, EndpointUnavailable, InvalidArgument,
    NoInheritedSocket, NoProtocol,
};
use crate::net::systemd::listen_fds;
use crate::net::tcp::{
    ConnectOptions, Connector, DEFAULT_BACKLOG, DEFAULT_CONNECT_TIMEOUT, ListenOptions, Port,
    no_address,
};
use crate::net::udp::UdpPort;
use crate::net::unix::{UnixConnectOptions, UnixListenOptions};
use crate::net::{Address, Transport};
use crate::protocol::{ClientFactory, Factory, Protocol};
use crate::reactor::Reactor;
use crate::time::{DelayedCall, ReactorTime};

/// The default mode of a UNIX socket file (Twisted's `0o666`).
pub const DEFAULT_UNIX_MODE: u32 = 0o666;

/// The default delay between the starts of two connection attempts of a
/// [`HostnameEndpoint`] (Twisted's `attemptDelay`, 0.3 s).
pub const DEFAULT_ATTEMPT_DELAY: Duration = Duration::from_millis(300);

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
/// `connectProtocol`). The Deferred fires with the connection's [`Transport`]: the
/// connection owns the protocol (see
/// [`protocol::connect_protocol`](crate::protocol::connect_protocol), the same over TCP).
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

/// The key the reactor counts a factory's users by (as TCP does).
fn factory_key(factory: &Rc<dyn Factory>) -> usize {
    Rc::as_ptr(factory) as *const () as usize
}

/// Counts one more user of `factory` on `reactor`: `start_factory` runs for the first, so a
/// factory used by several endpoints (and by `listen_tcp` directly) starts once.
fn start_shared(reactor: &Reactor, factory: &Rc<dyn Factory>) {
    let f = factory.clone();
    reactor.factory_started(factory_key(factory), move || f.start_factory());
}

/// Counts one user less; the last runs `stop_factory`.
fn stop_shared(reactor: &Reactor, factory: &Rc<dyn Factory>) {
    let f = factory.clone();
    reactor.factory_stopped(factory_key(factory), move || f.stop_factory());
}

/// A `dyn Factory` as the sized factory the reactor's `listen_*` take, one per port.
struct PortFactory {
    reactor: Reactor,
    inner: Rc<dyn Factory>,
}

impl Factory for PortFactory {
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>> {
        self.inner.clone().build_protocol(addr)
    }

    fn start_factory(&self) {
        start_shared(&self.reactor, &self.inner);
    }

    fn stop_factory(&self) {
        stop_shared(&self.reactor, &self.inner);
    }
}

/// The per-connection client factory of [`TcpClientEndpoint`] (Twisted's
/// `_WrappingFactory`): builds the user's protocol wrapped so that `connection_made` fires
/// the endpoint's Deferred, and fails that Deferred when the attempt fails.
struct ConnectingFactory {
    reactor: Reactor,
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
        start_shared(&self.reactor, &self.inner);
    }

    fn stop_factory(&self) {
        stop_shared(&self.reactor, &self.inner);
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

    fn data_received(&mut self, data: &[u8]) {
        self.inner.data_received(data);
    }

    fn connection_lost(&mut self, reason: Failure) {
        if let Some(resolver) = self.resolver.take() {
            let _ = resolver.try_errback(reason.clone());
        }
        self.inner.connection_lost(reason);
    }

    fn supports_half_close(&self) -> bool {
        self.inner.supports_half_close()
    }

    fn read_connection_lost(&mut self) {
        self.inner.read_connection_lost();
    }

    fn write_connection_lost(&mut self) {
        self.inner.write_connection_lost();
    }
}

/// Connects over TCP with a [`ConnectingFactory`]; the Deferred's canceller stops the
/// attempt.
fn connect_tcp_endpoint(
    reactor: &Reactor,
    host: &str,
    port: u16,
    options: ConnectOptions,
    factory: Rc<dyn Factory>,
) -> Deferred<Transport> {
    connect_endpoint(reactor, factory, |wrapping| {
        reactor.connect_tcp_with(host, port, wrapping, options)
    })
}

/// Starts a connector with `start`, given a [`ConnectingFactory`] that fires the returned
/// Deferred; the Deferred's canceller stops the attempt. Shared by TCP and UNIX sockets.
fn connect_endpoint(
    reactor: &Reactor,
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
        reactor: reactor.clone(),
        inner: factory,
        resolver,
        connector: slot.clone(),
    });
    // Failures always arrive from the loop, so the attempt is still running here.
    let connector = start(wrapping);
    *slot.borrow_mut() = Some(connector);
    d
}

// ===== TCP =====

/// Listens on a TCP port of an IPv4 (or given) interface (Twisted's `TCP4ServerEndpoint`,
/// `tcp:PORT:interface=…:backlog=…`).
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use torsion::Reactor;
/// use torsion::endpoints::{ServerEndpoint, TcpServerEndpoint};
/// use torsion::protocol::Protocol;
///
/// struct Quiet;
/// impl Protocol for Quiet {}
///
/// let reactor = Reactor::new().unwrap();
/// let endpoint = TcpServerEndpoint::new(&reactor, 0).interface([127, 0, 0, 1].into());
/// let mut listening = endpoint.listen(Rc::new(|| Quiet));
/// let port = listening.take_result().unwrap().unwrap();
/// assert_ne!(port.host().port(), Some(0));
/// drop(port.stop_listening());
/// ```
#[derive(Debug, Clone)]
pub struct TcpServerEndpoint {
    reactor: Reactor,
    /// The port (0 picks a free one).
    pub port: u16,
    /// The listen backlog ([`DEFAULT_BACKLOG`], 1024; Twisted's is 50).
    pub backlog: i32,
    /// The address to bind (`0.0.0.0`, every IPv4 interface).
    pub interface: IpAddr,
}

impl TcpServerEndpoint {
    /// Port `port` on every IPv4 interface, backlog [`DEFAULT_BACKLOG`].
    pub fn new(reactor: &Reactor, port: u16) -> TcpServerEndpoint {
        TcpServerEndpoint {
            reactor: reactor.clone(),
            port,
            backlog: DEFAULT_BACKLOG,
            interface: IpAddr::from([0, 0, 0, 0]),
        }
    }

    /// With another interface.
    pub fn interface(mut self, interface: IpAddr) -> TcpServerEndpoint {
        self.interface = interface;
        self
    }

    /// With another backlog.
    pub fn backlog(mut self, backlog: i32) -> TcpServerEndpoint {
        self.backlog = backlog;
        self
    }
}

fn listen_tcp_endpoint(
    reactor: &Reactor,
    port: u16,
    backlog: i32,
    interface: IpAddr,
    factory: Rc<dyn Factory>,
) -> Deferred<ListeningPort> {
    let adapter = Rc::new(PortFactory {
        reactor: reactor.clone(),
        inner: factory,
    });
    let options = ListenOptions {
        backlog,
        interface,
        reuse_port: false,
    };
    match reactor.listen_tcp_with(port, adapter, options) {
        Ok(port) => Deferred::succeed(Rc::new(port) as ListeningPort),
        Err(failure) => Deferred::fail(failure),
    }
}

impl ServerEndpoint for TcpServerEndpoint {
    fn listen(&self, factory: Rc<dyn Factory>) -> Deferred<ListeningPort> {
        listen_tcp_endpoint(
            &self.reactor,
            self.port,
            self.backlog,
            self.interface,
            factory,
        )
    }
}

/// Listens on a TCP port of the IPv6 interfaces (Twisted's `TCP6ServerEndpoint`,
/// `tcp6:PORT:interface=…`); the socket is IPv6 only.
#[derive(Debug, Clone)]
pub struct Tcp6ServerEndpoint {
    reactor: Reactor,
    /// The port (0 picks a free one).
    pub port: u16,
    /// The listen backlog ([`DEFAULT_BACKLOG`], 1024; Twisted's is 50).
    pub backlog: i32,
    /// The address to bind (`::`, every IPv6 interface).
    pub interface: IpAddr,
}

impl Tcp6ServerEndpoint {
    /// Port `port` on every IPv6 interface, backlog [`DEFAULT_BACKLOG`].
    pub fn new(reactor: &Reactor, port: u16) -> Tcp6ServerEndpoint {
        Tcp6ServerEndpoint {
            reactor: reactor.clone(),
            port,
            backlog: DEFAULT_BACKLOG,
            interface: IpAddr::from([0u16; 8]),
        }
    }

    /// With another interface.
    pub fn interface(mut self, interface: IpAddr) -> Tcp6ServerEndpoint {
        self.interface = interface;
        self
    }

    /// With another backlog.
    pub fn backlog(mut self, backlog: i32) -> Tcp6ServerEndpoint {
        self.backlog = backlog;
        self
    }
}

impl ServerEndpoint for Tcp6ServerEndpoint {
    fn listen(&self, factory: Rc<dyn Factory>) -> Deferred<ListeningPort> {
        listen_tcp_endpoint(
            &self.reactor,
            self.port,
            self.backlog,
            self.interface,
            factory,
        )
    }
}

/// Connects to a host and port over TCP (Twisted's `TCP4ClientEndpoint` and
/// `TCP6ClientEndpoint`, `tcp:HOST:PORT:timeout=…:bindAddress=…`). A host name is
/// resolved in the thread pool and its first address tried; [`HostnameEndpoint`] tries
/// them all.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use std::time::Duration;
/// use torsion::Reactor;
/// use torsion::endpoints::{ClientEndpoint, TcpClientEndpoint};
/// use torsion::protocol::Protocol;
///
/// struct Quiet;
/// impl Protocol for Quiet {}
///
/// let reactor = Reactor::new().unwrap();
/// let endpoint = TcpClientEndpoint::new(&reactor, "127.0.0.1", 7)
///     .timeout(Some(Duration::from_secs(5)));
/// let connected = endpoint.connect(Rc::new(|| Quiet));
/// // Cancelling the Deferred stops the attempt.
/// connected.cancel();
/// ```
#[derive(Debug, Clone)]
pub struct TcpClientEndpoint {
    reactor: Reactor,
    /// The host: a name or an IP address.
    pub host: String,
    /// The port.
    pub port: u16,
    /// Give up after this long (30 s; `None`: as long as the kernel tries).
    pub timeout: Option<Duration>,
    /// Bind the local end to this address first.
    pub bind_address: Option<SocketAddr>,
}

impl TcpClientEndpoint {
    /// `host:port`, with a 30 s timeout.
    pub fn new(reactor: &Reactor, host: &str, port: u16) -> TcpClientEndpoint {
        TcpClientEndpoint {
            reactor: reactor.clone(),
            host: host.to_string(),
            port,
            timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            bind_address: None,
        }
    }

    /// With another timeout.
    pub fn timeout(mut self, timeout: Option<Duration>) -> TcpClientEndpoint {
        self.timeout = timeout;
        self
    }

    /// With a local address to bind.
    pub fn bind_address(mut self, bind_address: Option<SocketAddr>) -> TcpClientEndpoint {
        self.bind_address = bind_address;
        self
    }
}

impl ClientEndpoint for TcpClientEndpoint {
    fn connect(&self, factory: Rc<dyn Factory>) -> Deferred<Transport> {
        let options = ConnectOptions {
            timeout: self.timeout,
            bind_address: self.bind_address,
        };
        connect_tcp_endpoint(&self.reactor, &self.host, self.port, options, factory)
    }
}

// ===== UNIX sockets and systemd =====

/// Where and how to listen on a UNIX socket: what `unix:PATH:mode=…:backlog=…:lockfile=…`
/// says (the arguments of Twisted's `listenUNIX`), which [`UnixServerEndpoint`] passes to
/// [`Reactor::listen_unix_with`] as its [`UnixListenOptions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixServerSpec {
    /// The socket file's path.
    pub path: PathBuf,
    /// The socket file's permission bits (0o666).
    pub mode: u32,
    /// The listen backlog ([`DEFAULT_BACKLOG`], 1024; Twisted's is 50).
    pub backlog: i32,
    /// Guard the path with a lock file holding our PID, so a stale socket file of a dead
    /// process is replaced and a live one's is not (Twisted's `wantPID`). Off for
    /// [`UnixServerSpec::new`], on by default in strings (`lockfile=1`), as in Twisted.
    pub want_pid: bool,
}

impl UnixServerSpec {
    /// `path` with mode 0o666, backlog [`DEFAULT_BACKLOG`] and no lock file (Twisted's
    /// `UNIXServerEndpoint` defaults, but for the backlog, which is 50 there).
    pub fn new(path: impl Into<PathBuf>) -> UnixServerSpec {
        UnixServerSpec {
            path: path.into(),
            mode: DEFAULT_UNIX_MODE,
            backlog: DEFAULT_BACKLOG,
            want_pid: false,
        }
    }
}

/// Where and how to connect to a UNIX socket: what `unix:PATH:timeout=…:lockfile=…` says
/// (the arguments of Twisted's `connectUNIX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixClientSpec {
    /// The socket file's path.
    pub path: PathBuf,
    /// Give up after this long (30 s).
    pub timeout: Option<Duration>,
    /// Refuse to connect unless the server's lock file names a live process (Twisted's
    /// `checkPID`, `lockfile=1`). Off by default.
    pub check_pid: bool,
}

impl UnixClientSpec {
    /// `path`, with a 30 s timeout and no lock file check.
    pub fn new(path: impl Into<PathBuf>) -> UnixClientSpec {
        UnixClientSpec {
            path: path.into(),
            timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            check_pid: false,
        }
    }
}

/// Listens on a UNIX socket (Twisted's `UNIXServerEndpoint`, `unix:PATH`), with
/// [`Reactor::listen_unix_with`]: the socket file gets [`spec.mode`](UnixServerSpec::mode)
/// whatever the umask, a stale socket file is replaced, and with
/// [`spec.want_pid`](UnixServerSpec::want_pid) the lock file `PATH.lock` guards it. A path
/// beginning with `@` names a socket in the abstract namespace.
///
/// # Examples
///
/// ```
/// use std::os::unix::fs::PermissionsExt;
/// use std::rc::Rc;
/// use torsion::Reactor;
/// use torsion::endpoints::{ServerEndpoint, server_from_string};
/// use torsion::protocol::Protocol;
///
/// struct Quiet;
/// impl Protocol for Quiet {}
///
/// let reactor = Reactor::new().unwrap();
/// let path = std::env::temp_dir().join(format!("torsion-endpoint-doc-{}.sock", std::process::id()));
/// let description = format!("unix:{}:mode=660:lockfile=0", path.display());
/// let endpoint = server_from_string(&reactor, &description).unwrap();
/// let port = endpoint.listen(Rc::new(|| Quiet)).take_result().unwrap().unwrap();
/// assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o660);
/// drop(port.stop_listening());
/// # let _ = std::fs::remove_file(&path);
/// ```
#[derive(Debug, Clone)]
pub struct UnixServerEndpoint {
    reactor: Reactor,
    /// Where and how to listen.
    pub spec: UnixServerSpec,
}

impl UnixServerEndpoint {
    /// Listens as `spec` says.
    pub fn new(reactor: &Reactor, spec: UnixServerSpec) -> UnixServerEndpoint {
        UnixServerEndpoint {
            reactor: reactor.clone(),
            spec,
        }
    }

    /// The reactor it listens on.
    pub fn reactor(&self) -> &Reactor {
        &self.reactor
    }
}

impl ServerEndpoint for UnixServerEndpoint {
    fn listen(&self, factory: Rc<dyn Factory>) -> Deferred<ListeningPort> {
        let adapter = Rc::new(PortFactory {
            reactor: self.reactor.clone(),
            inner: factory,
        });
        let options = UnixListenOptions {
            backlog: self.spec.backlog,
            mode: self.spec.mode,
            want_pid: self.spec.want_pid,
        };
        match self
            .reactor
            .listen_unix_with(&self.spec.path, adapter, options)
        {
            Ok(port) => Deferred::succeed(Rc::new(port) as ListeningPort),
            Err(failure) => Deferred::fail(failure),
        }
    }
}

/// Connects to a UNIX socket (Twisted's `UNIXClientEndpoint`, `unix:PATH`), with
/// [`Reactor::connect_unix_with`]. As for [`TcpClientEndpoint`], the Deferred fires with the
/// transport once connected, fails with why not
/// ([`ConnectionRefused`](crate::error::ConnectionRefused) when nobody listens on the
/// socket file, the I/O error such as `NotFound` otherwise), and cancelling it stops the
/// attempt. With [`spec.check_pid`](UnixClientSpec::check_pid) (`lockfile=1`), it fails at
/// once with [`BadFileError`] unless the server's lock file `PATH.lock` names a live
/// process.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use torsion::Reactor;
/// use torsion::endpoints::{ClientEndpoint, UnixClientEndpoint, UnixClientSpec};
/// use torsion::protocol::Protocol;
///
/// struct Quiet;
/// impl Protocol for Quiet {}
///
/// let reactor = Reactor::new().unwrap();
/// let endpoint = UnixClientEndpoint::new(&reactor, UnixClientSpec::new("/run/app.sock"));
/// let connected = endpoint.connect(Rc::new(|| Quiet));
/// // Cancelling the Deferred stops the attempt.
/// connected.cancel();
/// ```
#[derive(Debug, Clone)]
pub struct UnixClientEndpoint {
    reactor: Reactor,
    /// Where and how to connect.
    pub spec: UnixClientSpec,
}

impl UnixClientEndpoint {
    /// Connects as `spec` says.
    pub fn new(reactor: &Reactor, spec: UnixClientSpec) -> UnixClientEndpoint {
        UnixClientEndpoint {
            reactor: reactor.clone(),
            spec,
        }
    }

    /// The reactor it connects on.
    pub fn reactor(&self) -> &Reactor {
        &self.reactor
    }
}

impl ClientEndpoint for UnixClientEndpoint {
    fn connect(&self, factory: Rc<dyn Factory>) -> Deferred<Transport> {
        if self.spec.check_pid
            && let Err(reason) = check_server_lock(&self.spec.path)
        {
            return Deferred::fail(BadFileError {
                path: self.spec.path.display().to_string(),
                reason,
            });
        }
        let options = UnixConnectOptions {
            timeout: self.spec.timeout,
        };
        connect_endpoint(&self.reactor, factory, |wrapping| {
            self.reactor
                .connect_unix_with(&self.spec.path, wrapping, options)
        })
    }
}

/// Whether the lock file of the UNIX socket `path` (`path.lock`, a symbolic link whose
/// target is the listening process's pid, as [`UnixListenOptions::want_pid`] and Twisted's
/// `FilesystemLock` make it) names a live process (Twisted's `lockfile.isLocked`); if not,
/// why not.
fn check_server_lock(path: &Path) -> Result<(), String> {
    if matches!(
        path.as_os_str().as_bytes().first(),
        Some(b'@') | Some(b'\0')
    ) {
        return Err("an abstract socket has no lock file (use lockfile=0)".into());
    }
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    let lock = PathBuf::from(lock);
    let target = std::fs::read_link(&lock)
        .map_err(|err| format!("cannot read its lock file {}: {err}", lock.display()))?;
    let pid = target
        .to_str()
        .and_then(|t| t.parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| format!("its lock file {} names no process", lock.display()))?;
    let gone = u32::try_from(pid.as_raw_pid()) != Ok(std::process::id())
        && matches!(
            rustix::process::test_kill_process(pid),
            Err(rustix::io::Errno::SRCH)
        );
    if gone {
        return Err(format!(
            "its lock file {} names process {}, which is gone",
            lock.display(),
            pid.as_raw_pid()
        ));
    }
    Ok(())
}

/// The address family of a socket inherited from systemd (`domain=` in `systemd:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemdDomain {
    /// `INET`: TCP over IPv4.
    Inet,
    /// `INET6`: TCP over IPv6.
    Inet6,
    /// `UNIX`: a UNIX stream socket.
    Unix,
}

impl SystemdDomain {
    fn socket_domain(self) -> Domain {
        match self {
            SystemdDomain::Inet => Domain::IPV4,
            SystemdDomain::Inet6 => Domain::IPV6,
            SystemdDomain::Unix => Domain::UNIX,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SystemdDomain::Inet => "INET",
            SystemdDomain::Inet6 => "INET6",
            SystemdDomain::Unix => "UNIX",
        }
    }
}

/// Which inherited socket to adopt: by position or by `FileDescriptorName`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemdSocket {
    /// The N-th inherited descriptor (`index=N`), counted from 0 (descriptor 3 + N).
    Index(usize),
    /// The descriptor named so in `LISTEN_FDNAMES` (`name=X`). Parsed, but not supported
    /// yet: listening fails with [`EndpointUnavailable`].
    Name(String),
}

/// A listening socket inherited from systemd socket activation:
/// `systemd:domain=INET|INET6|UNIX:index=N` or `…:name=X` (Twisted's `_SystemdParser`,
/// which makes an `AdoptedStreamServerEndpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdSpec {
    /// The socket's address family.
    pub domain: SystemdDomain,
    /// Which inherited socket.
    pub socket: SystemdSocket,
}

/// The sockets this process inherited from systemd, taken from the environment once, by
/// [`listen_fds`], the first time a `systemd:` endpoint listens, and kept for every such
/// endpoint of the process.
static INHERITED: OnceLock<Vec<OwnedFd>> = OnceLock::new();

/// Listens on a socket inherited from systemd (Twisted's `AdoptedStreamServerEndpoint`
/// made by `systemd:`), with [`Reactor::adopt_stream_port`].
///
/// The first time a `systemd:` endpoint listens, the process's inherited sockets are taken
/// with [`listen_fds`] (which hands them out once per process) and kept; each `listen`
/// then adopts a duplicate of the descriptor at [`SystemdSocket::Index`], as Twisted's
/// `adoptStreamPort` does, so the endpoint can listen again after `stop_listening`. So a
/// program uses either `systemd:` endpoints or `listen_fds` itself, not both: whichever
/// comes second finds nothing (or give the endpoint the descriptors with
/// [`with_fds`](Self::with_fds)).
///
/// `listen` fails with [`NoInheritedSocket`] when systemd passed no socket at that index,
/// with [`InvalidArgument`] when the socket is not of [`spec.domain`](SystemdSpec::domain)
/// or not a listening stream socket, and with [`EndpointUnavailable`] for
/// [`SystemdSocket::Name`]: finding a socket by name (`LISTEN_FDNAMES`) is not supported
/// yet.
///
/// # Examples
///
/// ```
/// use std::any::Any;
/// use std::os::fd::OwnedFd;
/// use std::rc::Rc;
/// use torsion::Reactor;
/// use torsion::endpoints::{ServerEndpoint, SystemdServerEndpoint, server_from_string};
/// use torsion::protocol::Protocol;
///
/// struct Quiet;
/// impl Protocol for Quiet {}
///
/// let reactor = Reactor::new().unwrap();
/// let endpoint = server_from_string(&reactor, "systemd:domain=INET:index=0").unwrap();
/// let systemd = (&*endpoint as &dyn Any).downcast_ref::<SystemdServerEndpoint>().unwrap();
/// // Outside socket activation, hand it the sockets directly.
/// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let address = listener.local_addr().unwrap();
/// let endpoint = systemd.clone().with_fds(vec![OwnedFd::from(listener)]);
/// let port = endpoint.listen(Rc::new(|| Quiet)).take_result().unwrap().unwrap();
/// assert_eq!(port.host().socket_addr(), Some(address));
/// ```
#[derive(Debug, Clone)]
pub struct SystemdServerEndpoint {
    reactor: Reactor,
    /// Which socket to adopt.
    pub spec: SystemdSpec,
    /// Descriptors given with `with_fds`, in place of the inherited ones.
    fds: Option<Rc<[OwnedFd]>>,
}

impl SystemdServerEndpoint {
    /// Adopts the socket `spec` names.
    pub fn new(reactor: &Reactor, spec: SystemdSpec) -> SystemdServerEndpoint {
        SystemdServerEndpoint {
            reactor: reactor.clone(),
            spec,
            fds: None,
        }
    }

    /// Adopts from `fds` instead of the sockets the process inherited: `index=N` is
    /// `fds[N]`. The endpoint keeps them (closing them when the last clone of it is
    /// dropped) and adopts a duplicate at each `listen`.
    ///
    /// For tests, which cannot set `LISTEN_PID` and `LISTEN_FDS` (changing the environment
    /// of a multi-threaded process is unsound), and for programs that took the inherited
    /// sockets with [`listen_fds`] themselves.
    pub fn with_fds(mut self, fds: Vec<OwnedFd>) -> SystemdServerEndpoint {
        self.fds = Some(fds.into());
        self
    }

    /// The reactor it listens on.
    pub fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    fn adopt(&self, factory: Rc<dyn Factory>) -> Result<ListeningPort, Failure> {
        let index = match &self.spec.socket {
            SystemdSocket::Index(index) => *index,
            SystemdSocket::Name(name) => {
                return Err(EndpointUnavailable {
                    endpoint: "systemd".into(),
                    missing: format!(
                        "support for LISTEN_FDNAMES, to find the socket named {name:?} \
                         (use index=N)"
                    ),
                }
                .into());
            }
        };
        let fds: &[OwnedFd] = match &self.fds {
            Some(fds) => fds,
            None => INHERITED.get_or_init(listen_fds),
        };
        let Some(fd) = fds.get(index) else {
            return Err(NoInheritedSocket {
                index,
                inherited: fds.len(),
            }
            .into());
        };
        let family = SockRef::from(fd).domain().map_err(Failure::new)?;
        if family != self.spec.domain.socket_domain() {
            return Err(InvalidArgument(format!(
                "systemd socket {index} is not of domain {}: its family is {family:?}",
                self.spec.domain.name()
            ))
            .into());
        }
        let duplicate = fd.try_clone().map_err(Failure::new)?;
        let adapter = Rc::new(PortFactory {
            reactor: self.reactor.clone(),
            inner: factory,
        });
        let port = self.reactor.adopt_stream_port(duplicate, adapter)?;
        Ok(Rc::new(port))
    }
}

impl ServerEndpoint for SystemdServerEndpoint {
    fn listen(&self, factory: Rc<dyn Factory>) -> Deferred<ListeningPort> {
        match self.adopt(factory) {
            Ok(port) => Deferred::succeed(port),
            Err(failure) => Deferred::fail(failure),
        }
    }
}

// ===== HostnameEndpoint =====

/// Connects to a host name that may have several addresses, IPv6 and IPv4, trying them in
/// parallel with staggered starts (Twisted's `HostnameEndpoint`; RFC 8305, "Happy
/// Eyeballs").
///
/// The name is resolved in the thread pool (`getaddrinfo`). The addresses are tried in the
/// resolver's order, alternating address families from the first one's (RFC 8305 §4):
/// an attempt starts [`attempt_delay`](Self::attempt_delay) (0.3 s) after the previous one
/// started, or at once when every attempt so far has failed. The first connection made
/// wins: every other attempt is stopped and no timer is left behind. When all fail, the
/// Deferred fails with the last failure; cancelling it stops every attempt.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use torsion::Reactor;
/// use torsion::endpoints::{ClientEndpoint, HostnameEndpoint};
/// use torsion::protocol::Protocol;
///
/// struct Quiet;
/// impl Protocol for Quiet {}
///
/// let reactor = Reactor::new().unwrap();
/// let endpoint = HostnameEndpoint::new(&reactor, "localhost", 80);
/// let connected = endpoint.connect(Rc::new(|| Quiet));
/// let _logged = connected.map(|transport| println!("connected to {}", transport.peer()));
/// ```
pub struct HostnameEndpoint {
    reactor: Reactor,
    clock: Rc<dyn ReactorTime>,
    host: String,
    port: u16,
    timeout: Option<Duration>,
    bind_address: Option<SocketAddr>,
    attempt_delay: Duration,
    addresses: Option<Vec<SocketAddr>>,
}

impl HostnameEndpoint {
    /// Connects to `host` (a name or an IP address) on `port`, with a 30 s timeout per
    /// attempt and 0.3 s between attempts.
    pub fn new(reactor: &Reactor, host: &str, port: u16) -> HostnameEndpoint {
        HostnameEndpoint {
            reactor: reactor.clone(),
            clock: Rc::new(reactor.clone()),
            host: host.to_string(),
            port,
            timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            bind_address: None,
            attempt_delay: DEFAULT_ATTEMPT_DELAY,
            addresses: None,
        }
    }

    /// With another timeout for each attempt (`None`: as long as the kernel tries).
    pub fn timeout(mut self, timeout: Option<Duration>) -> HostnameEndpoint {
        self.timeout = timeout;
        self
    }

    /// With a local address to bind each attempt to (attempts to addresses of the other
    /// family then fail).
    pub fn bind_address(mut self, bind_address: Option<SocketAddr>) -> HostnameEndpoint {
        self.bind_address = bind_address;
        self
    }

    /// With another delay between the starts of two attempts (Twisted's `attemptDelay`).
    pub fn attempt_delay(mut self, delay: Duration) -> HostnameEndpoint {
        self.attempt_delay = delay;
        self
    }

    /// Times the attempts on `clock` instead of the reactor (for tests, with a
    /// [`Clock`](crate::time::Clock)); the connections themselves and their timeouts stay
    /// on the reactor.
    pub fn clock<C: ReactorTime + Clone + 'static>(mut self, clock: &C) -> HostnameEndpoint {
        self.clock = Rc::new(clock.clone());
        self
    }

    /// Skips name resolution and tries these addresses, ports included, in this order (for
    /// tests, and for callers that resolved the name themselves).
    pub fn with_addresses(mut self, addresses: Vec<SocketAddr>) -> HostnameEndpoint {
        self.addresses = Some(addresses);
        self
    }
}

impl fmt::Debug for HostnameEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostnameEndpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("timeout", &self.timeout)
            .field("bind_address", &self.bind_address)
            .field("attempt_delay", &self.attempt_delay)
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

impl ClientEndpoint for HostnameEndpoint {
    fn connect(&self, factory: Rc<dyn Factory>) -> Deferred<Transport> {
        let race_slot: Rc<RefCell<Weak<Race>>> = Rc::new(RefCell::new(Weak::new()));
        let cancel_slot = race_slot.clone();
        let (resolver, d) = Deferred::with_canceller(move |_resolver| {
            let race = cancel_slot.borrow().upgrade();
            if let Some(race) = race {
                race.cancel();
            }
        });
        let race = Rc::new(Race {
            reactor: self.reactor.clone(),
            clock: self.clock.clone(),
            factory,
            host: self.host.clone(),
            options: ConnectOptions {
                timeout: self.timeout,
                bind_address: self.bind_address,
            },
            attempt_delay: self.attempt_delay,
            resolver,
            state: RefCell::new(RaceState::default()),
        });
        *race_slot.borrow_mut() = Rc::downgrade(&race);
        if let Some(addresses) = &self.addresses {
            race.resolved(Ok(addresses.clone()));
        } else if let Ok(ip) = self.host.parse::<IpAddr>() {
            race.resolved(Ok(vec![SocketAddr::new(ip, self.port)]));
        } else {
            let (host, port) = (self.host.clone(), self.port);
            let lookup = self
                .reactor
                .defer_to_thread(move || crate::net::tcp::resolve(&host, port));
            drop(lookup.add_both(move |result| {
                let addresses = match result {
                    Ok(Ok(addresses)) => Ok(addresses),
                    Ok(Err(lookup)) => Err(Failure::new(lookup)),
                    Err(failure) => Err(failure),
                };
                race.resolved(addresses);
                Ok::<(), Failure>(())
            }));
        }
        d
    }
}

/// One `HostnameEndpoint::connect`: the addresses left, the attempts running, the timer.
struct Race {
    reactor: Reactor,
    clock: Rc<dyn ReactorTime>,
    factory: Rc<dyn Factory>,
    host: String,
    options: ConnectOptions,
    attempt_delay: Duration,
    resolver: Resolver<Transport>,
    state: RefCell<RaceState>,
}

#[derive(Default)]
struct RaceState {
    remaining: VecDeque<SocketAddr>,
    /// Attempts running, by id.
    pending: Vec<(u64, Connector)>,
    /// When the next attempt starts.
    timer: Option<DelayedCall>,
    last_failure: Option<Failure>,
    next_id: u64,
    /// Won, failed or cancelled: start nothing more.
    done: bool,
}

impl Race {
    fn resolved(self: &Rc<Self>, addresses: Result<Vec<SocketAddr>, Failure>) {
        let addresses = match addresses {
            Ok(addresses) => addresses,
            Err(failure) => {
                let was_done = std::mem::replace(&mut self.state.borrow_mut().done, true);
                if !was_done {
                    let _ = self.resolver.try_errback(failure);
                }
                return;
            }
        };
        {
            let mut st = self.state.borrow_mut();
            if st.done {
                return;
            }
            st.remaining = interleave_families(addresses);
            if st.remaining.is_empty() {
                st.last_failure = Some(Failure::new(no_address(&self.host)));
            }
        }
        self.start_next();
    }

    /// Starts the next attempt now, and schedules the one after.
    fn start_next(self: &Rc<Self>) {
        let (address, id, timer) = {
            let mut st = self.state.borrow_mut();
            if st.done {
                return;
            }
            let timer = st.timer.take();
            match st.remaining.pop_front() {
                Some(address) => {
                    st.next_id += 1;
                    (Some(address), st.next_id, timer)
                }
                None => (None, 0, timer),
            }
        };
        if let Some(timer) = timer {
            let _ = timer.cancel();
        }
        let Some(address) = address else {
            self.check_failed();
            return;
        };
        let attempt = Rc::new(AttemptFactory {
            race: self.clone(),
            id,
            won: Cell::new(false),
        });
        let connector = self.reactor.connect_tcp_with(
            &address.ip().to_string(),
            address.port(),
            attempt,
            self.options.clone(),
        );
        let more = {
            let mut st = self.state.borrow_mut();
            st.pending.push((id, connector));
            !st.remaining.is_empty()
        };
        if more {
            let me = self.clone();
            let timer = self
                .clock
                .call_later_boxed(self.attempt_delay, Box::new(move || me.start_next()));
            self.state.borrow_mut().timer = Some(timer);
        }
    }

    /// Attempt `id` connected: it wins unless another did. Returns whether it won.
    fn won(&self, id: u64) -> bool {
        let (timer, others) = {
            let mut st = self.state.borrow_mut();
            if st.done {
                return false;
            }
            st.done = true;
            st.remaining.clear();
            let others: Vec<Connector> = std::mem::take(&mut st.pending)
                .into_iter()
                .filter(|(other, _)| *other != id)
                .map(|(_, connector)| connector)
                .collect();
            (st.timer.take(), others)
        };
        if let Some(timer) = timer {
            let _ = timer.cancel();
        }
        for connector in others {
            connector.stop_connecting();
        }
        true
    }

    /// Attempt `id` failed: remember why; if nothing else is running, go on at once.
    fn failed(self: &Rc<Self>, id: u64, reason: Failure) {
        let idle = {
            let mut st = self.state.borrow_mut();
            st.pending.retain(|(other, _)| *other != id);
            if st.done {
                return;
            }
            st.last_failure = Some(reason);
            st.pending.is_empty()
        };
        if idle {
            self.start_next();
        }
    }

    /// Nothing left to try and nothing running: fail with the last failure.
    fn check_failed(&self) {
        let failure = {
            let mut st = self.state.borrow_mut();
            if st.done || !st.pending.is_empty() || !st.remaining.is_empty() {
                return;
            }
            st.done = true;
            st.last_failure.take()
        };
        let failure = failure.unwrap_or_else(|| Failure::new(no_address(&self.host)));
        let _ = self.resolver.try_errback(failure);
    }

    fn cancel(&self) {
        let (timer, pending) = {
            let mut st = self.state.borrow_mut();
            st.done = true;
            st.remaining.clear();
            (st.timer.take(), std::mem::take(&mut st.pending))
        };
        if let Some(timer) = timer {
            let _ = timer.cancel();
        }
        for (_, connector) in pending {
            connector.stop_connecting();
        }
    }
}

/// RFC 8305 §4: alternate address families, starting with the first address's, keeping
/// the resolver's order within each family; duplicates dropped.
fn interleave_families(addresses: Vec<SocketAddr>) -> VecDeque<SocketAddr> {
    let mut seen = Vec::with_capacity(addresses.len());
    for address in addresses {
        if !seen.contains(&address) {
            seen.push(address);
        }
    }
    let Some(first) = seen.first() else {
        return VecDeque::new();
    };
    let first_v6 = first.is_ipv6();
    let (mut preferred, mut other): (VecDeque<_>, VecDeque<_>) =
        seen.into_iter().partition(|a| a.is_ipv6() == first_v6);
    let mut out = VecDeque::with_capacity(preferred.len() + other.len());
    loop {
        match (preferred.pop_front(), other.pop_front()) {
            (None, None) => break,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
    out
}

/// The client factory of one attempt of a [`Race`].
struct AttemptFactory {
    race: Rc<Race>,
    id: u64,
    won: Cell<bool>,
}

impl Factory for AttemptFactory {
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>> {
        if !self.race.won(self.id) {
            // Another attempt connected first (in the same turn of the loop).
            return None;
        }
        self.won.set(true);
        match self.race.factory.clone().build_protocol(addr) {
            Some(protocol) => Some(Box::new(Notifying {
                inner: protocol,
                resolver: Some(self.race.resolver.clone()),
            })),
            None => {
                let _ = self.race.resolver.try_errback(NoProtocol);
                None
            }
        }
    }

    fn start_factory(&self) {
        start_shared(&self.race.reactor, &self.race.factory);
    }

    fn stop_factory(&self) {
        stop_shared(&self.race.reactor, &self.race.factory);
    }
}

impl ClientFactory for AttemptFactory {
    fn client_connection_failed(&self, _connector: &Connector, reason: Failure) {
        if self.won.get() {
            // The winner's factory panicked in build_protocol.
            let _ = self.race.resolver.try_errback(reason);
        } else {
            self.race.failed(self.id, reason);
        }
    }

    fn client_connection_lost(&self, _connector: &Connector, reason: Failure) {
        if self.won.get() {
            let _ = self.race.resolver.try_errback(reason);
        }
    }
}

// ===== strings =====

/// An endpoint description split into its parts (Twisted's `_parse`): the type, the
/// positional arguments and the `key=value` ones, escapes resolved.
///
/// A colon separates arguments and the first `=` of an argument separates its key from its
/// value (so a value may hold `=`); a backslash makes the next character literal (`\:`,
/// `\=`, `\\`).
///
/// # Examples
///
/// ```
/// use torsion::endpoints::EndpointArgs;
///
/// let args = EndpointArgs::parse(r"unix:foo\:bar\=baz\:qux\\:mode=0660").unwrap();
/// assert_eq!(args.endpoint_type, "unix");
/// assert_eq!(args.positional, [r"foo:bar=baz:qux\"]);
/// assert_eq!(args.keywords, [("mode".to_string(), "0660".to_string())]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointArgs {
    /// The endpoint type, as written (types are matched without regard to case).
    pub endpoint_type: String,
    /// The arguments without `=`, in order.
    pub positional: Vec<String>,
    /// The `key=value` arguments, in order.
    pub keywords: Vec<(String, String)>,
}

impl EndpointArgs {
    /// Splits `description` (Twisted's `_tokenize` and `_parse`).
    ///
    /// # Errors
    ///
    /// [`Empty`](EndpointSyntaxProblem::Empty) when it names no type,
    /// [`TrailingBackslash`](EndpointSyntaxProblem::TrailingBackslash).
    pub fn parse(description: &str) -> Result<EndpointArgs, EndpointSyntaxProblem> {
        let mut fields: Vec<(String, Option<String>)> = Vec::new();
        let mut key: Option<String> = None;
        let mut current = String::new();
        let mut chars = description.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(next) => current.push(next),
                    None => return Err(EndpointSyntaxProblem::TrailingBackslash),
                },
                ':' => {
                    let text = std::mem::take(&mut current);
                    fields.push(match key.take() {
                        Some(k) => (k, Some(text)),
                        None => (text, None),
                    });
                }
                '=' if key.is_none() => key = Some(std::mem::take(&mut current)),
                c => current.push(c),
            }
        }
        fields.push(match key.take() {
            Some(k) => (k, Some(current)),
            None => (current, None),
        });
        let mut fields = fields.into_iter();
        let endpoint_type = match fields.next() {
            Some((name, None)) if !name.is_empty() => name,
            _ => return Err(EndpointSyntaxProblem::Empty),
        };
        let mut args = EndpointArgs {
            endpoint_type,
            positional: Vec::new(),
            keywords: Vec::new(),
        };
        for (first, value) in fields {
            match value {
                Some(value) => args.keywords.push((first, value)),
                None => args.positional.push(first),
            }
        }
        Ok(args)
    }

    /// Binds the arguments to named parameters, as Python binds a call's: the first
    /// `max_positional` parameters may be given by position, any by keyword.
    ///
    /// A parameter is written `"name"` or `"name|alias|…"` (a keyword may use any of its
    /// names; [`BoundArgs`] knows it by the first).
    ///
    /// # Errors
    ///
    /// [`TooManyArguments`](EndpointSyntaxProblem::TooManyArguments),
    /// [`UnknownKeyword`](EndpointSyntaxProblem::UnknownKeyword) (naming those accepted),
    /// [`DuplicateArgument`](EndpointSyntaxProblem::DuplicateArgument).
    pub fn bind(
        &self,
        params: &[&'static str],
        max_positional: usize,
    ) -> Result<BoundArgs, EndpointSyntaxProblem> {
        let endpoint = self.endpoint_type.clone();
        let max_positional = max_positional.min(params.len());
        if self.positional.len() > max_positional {
            return Err(EndpointSyntaxProblem::TooManyArguments {
                endpoint,
                given: self.positional.len(),
                max: max_positional,
            });
        }
        let canonical = |param: &'static str| param.split('|').next().unwrap_or(param);
        let mut values: Vec<(&'static str, String)> = self
            .positional
            .iter()
            .zip(params)
            .map(|(value, param)| (canonical(param), value.clone()))
            .collect();
        for (keyword, value) in &self.keywords {
            let Some(param) = params
                .iter()
                .find(|param| param.split('|').any(|name| name == keyword))
            else {
                return Err(EndpointSyntaxProblem::UnknownKeyword {
                    endpoint,
                    keyword: keyword.clone(),
                    accepted: params
                        .iter()
                        .map(|p| canonical(p))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            let name = canonical(param);
            if values.iter().any(|(bound, _)| *bound == name) {
                return Err(EndpointSyntaxProblem::DuplicateArgument {
                    endpoint,
                    argument: name.to_string(),
                });
            }
            values.push((name, value.clone()));
        }
        Ok(BoundArgs { endpoint, values })
    }
}

/// Arguments bound to parameter names by [`EndpointArgs::bind`], with helpers that turn
/// them into values or into errors naming the argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundArgs {
    endpoint: String,
    values: Vec<(&'static str, String)>,
}

impl BoundArgs {
    /// The value given for `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(bound, _)| *bound == name)
            .map(|(_, value)| value.as_str())
    }

    /// The value given for `name`.
    ///
    /// # Errors
    ///
    /// [`MissingArgument`](EndpointSyntaxProblem::MissingArgument) if none was given, or
    /// an empty one.
    pub fn required(&self, name: &str) -> Result<&str, EndpointSyntaxProblem> {
        match self.get(name) {
            Some(value) if !value.is_empty() => Ok(value),
            _ => Err(EndpointSyntaxProblem::MissingArgument {
                endpoint: self.endpoint.clone(),
                argument: name.to_string(),
            }),
        }
    }

    /// The value of `name` converted by `convert`, `None` if not given.
    ///
    /// # Errors
    ///
    /// [`BadValue`](EndpointSyntaxProblem::BadValue) naming the argument, its value and
    /// `expected`, when `convert` returns `None`.
    pub fn parse_with<T>(
        &self,
        name: &str,
        expected: &str,
        convert: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, EndpointSyntaxProblem> {
        match self.get(name) {
            None => Ok(None),
            Some(value) => match convert(value) {
                Some(v) => Ok(Some(v)),
                None => Err(self.bad_value(name, value, expected)),
            },
        }
    }

    /// A [`BadValue`](EndpointSyntaxProblem::BadValue) for this endpoint.
    pub fn bad_value(&self, name: &str, value: &str, expected: &str) -> EndpointSyntaxProblem {
        EndpointSyntaxProblem::BadValue {
            endpoint: self.endpoint.clone(),
            argument: name.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }

    /// An [`Invalid`](EndpointSyntaxProblem::Invalid) for this endpoint.
    pub fn invalid(&self, message: impl Into<String>) -> EndpointSyntaxProblem {
        EndpointSyntaxProblem::Invalid {
            endpoint: self.endpoint.clone(),
            message: message.into(),
        }
    }

    fn port(&self, name: &str) -> Result<u16, EndpointSyntaxProblem> {
        let value = self.required(name)?;
        value
            .parse::<u16>()
            .map_err(|_| self.bad_value(name, value, "a port number from 0 to 65535"))
    }

    fn backlog(&self) -> Result<i32, EndpointSyntaxProblem> {
        Ok(self
            .parse_with("backlog", "a whole number of connections, 0 or more", |v| {
                v.parse::<u32>().ok().and_then(|n| i32::try_from(n).ok())
            })?
            .unwrap_or(DEFAULT_BACKLOG))
    }

    fn interface(&self, default: IpAddr) -> Result<IpAddr, EndpointSyntaxProblem> {
        Ok(self
            .parse_with(
                "interface",
                "an IP address such as 127.0.0.1 or ::1 (escape colons as \\:)",
                |v| {
                    if v.is_empty() {
                        Some(default)
                    } else {
                        v.parse().ok()
                    }
                },
            )?
            .unwrap_or(default))
    }

    fn timeout(&self) -> Result<Option<Duration>, EndpointSyntaxProblem> {
        Ok(Some(
            self.parse_with("timeout", "a number of seconds, 0 or more", |v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(Duration::from_secs_f64)
            })?
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        ))
    }

    fn flag(&self, name: &str, default: bool) -> Result<bool, EndpointSyntaxProblem> {
        Ok(self
            .parse_with(name, "0 or 1", |v| v.parse::<i64>().ok().map(|n| n != 0))?
            .unwrap_or(default))
    }
}

/// Escapes `\` and `:` in `argument` for a description string (Twisted's
/// `quoteStringArgument`).
///
/// # Examples
///
/// ```
/// use torsion::endpoints::quote_string_argument;
///
/// assert_eq!(quote_string_argument(r"some : stuff \"), r"some \: stuff \\");
/// ```
pub fn quote_string_argument(argument: &str) -> String {
    let mut out = String::with_capacity(argument.len());
    for c in argument.chars() {
        if c == '\\' || c == ':' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

type ServerParser =
    dyn Fn(&Reactor, &EndpointArgs) -> Result<Box<dyn ServerEndpoint>, EndpointSyntaxProblem>;
type ClientParser =
    dyn Fn(&Reactor, &EndpointArgs) -> Result<Box<dyn ClientEndpoint>, EndpointSyntaxProblem>;

thread_local! {
    static SERVER_PARSERS: RefCell<HashMap<String, Rc<ServerParser>>> = RefCell::new(HashMap::new());
    static CLIENT_PARSERS: RefCell<HashMap<String, Rc<ClientParser>>> = RefCell::new(HashMap::new());
}

const SERVER_TYPES: [&str; 4] = ["tcp", "tcp6", "unix", "systemd"];
const CLIENT_TYPES: [&str; 2] = ["tcp", "unix"];

fn check_plugin_name(name: &str, builtin: &[&str]) -> Result<String, InvalidArgument> {
    let name = name.to_ascii_lowercase();
    if name.is_empty() || name.contains([':', '=', '\\']) {
        return Err(InvalidArgument(format!(
            "{name:?} cannot name an endpoint type: it must be non-empty, without : = or \\"
        )));
    }
    if builtin.contains(&name.as_str()) {
        return Err(InvalidArgument(format!(
            "{name:?} is a built-in endpoint type and cannot be replaced"
        )));
    }
    Ok(name)
}

/// Adds a server endpoint type to the string syntax on this thread (Twisted's
/// `IStreamServerEndpointStringParser` plugins): [`server_from_string`] calls `parser` for
/// descriptions of type `name` (matched without regard to case), with the reactor and the
/// split description; [`EndpointArgs::bind`] does the usual argument handling. Registering
/// a name again replaces its parser.
///
/// # Errors
///
/// [`InvalidArgument`] for a built-in type (`tcp`, `tcp6`, `unix`, `systemd`) or a name that
/// cannot appear in a description.
///
/// # Examples
///
/// ```
/// use torsion::Reactor;
/// use torsion::endpoints::{register_server_parser, server_from_string, TcpServerEndpoint};
///
/// // "loopback:PORT" listens on 127.0.0.1.
/// register_server_parser("loopback", |reactor, args| {
///     let args = args.bind(&["port"], 1)?;
///     let port = args
///         .parse_with("port", "a port number", |v| v.parse().ok())?
///         .unwrap_or(0);
///     Ok(Box::new(TcpServerEndpoint::new(reactor, port).interface([127, 0, 0, 1].into())))
/// })
/// .unwrap();
/// let reactor = Reactor::new().unwrap();
/// assert!(server_from_string(&reactor, "loopback:8080").is_ok());
/// ```
pub fn register_server_parser(
    name: &str,
    parser: impl Fn(&Reactor, &EndpointArgs) -> Result<Box<dyn ServerEndpoint>, EndpointSyntaxProblem>
    + 'static,
) -> Result<(), InvalidArgument> {
    let name = check_plugin_name(name, &SERVER_TYPES)?;
    let parser: Rc<ServerParser> = Rc::new(parser);
    let previous = SERVER_PARSERS.with(|p| p.borrow_mut().insert(name, parser));
    drop(previous);
    Ok(())
}

/// Adds a client endpoint type to the string syntax on this thread, as
/// [`register_server_parser`] does for servers (Twisted's
/// `IStreamClientEndpointStringParserWithReactor` plugins).
///
/// # Errors
///
/// [`InvalidArgument`] for a built-in type (`tcp`, `unix`) or a name that cannot appear in
/// a description.
pub fn register_client_parser(
    name: &str,
    parser: impl Fn(&Reactor, &EndpointArgs) -> Result<Box<dyn ClientEndpoint>, EndpointSyntaxProblem>
    + 'static,
) -> Result<(), InvalidArgument> {
    let name = check_plugin_name(name, &CLIENT_TYPES)?;
    let parser: Rc<ClientParser> = Rc::new(parser);
    let previous = CLIENT_PARSERS.with(|p| p.borrow_mut().insert(name, parser));
    drop(previous);
    Ok(())
}

/// Removes a server endpoint type added by [`register_server_parser`]; returns whether it
/// was there.
pub fn unregister_server_parser(name: &str) -> bool {
    let removed = SERVER_PARSERS.with(|p| p.borrow_mut().remove(&name.to_ascii_lowercase()));
    removed.is_some()
}

/// Removes a client endpoint type added by [`register_client_parser`]; returns whether it
/// was there.
pub fn unregister_client_parser(name: &str) -> bool {
    let removed = CLIENT_PARSERS.with(|p| p.borrow_mut().remove(&name.to_ascii_lowercase()));
    removed.is_some()
}

/// Makes a server endpoint from a description such as `"tcp:8080:interface=127.0.0.1"`
/// (Twisted's `serverFromString`); see the [module docs](self) for the types and their
/// arguments.
///
/// # Errors
///
/// [`EndpointSyntaxError`] naming the problem: an unknown type (naming it), an unknown
/// keyword, a bad port, backlog, interface or mode, a missing argument, too many
/// positional ones.
///
/// # Examples
///
/// ```
/// use std::any::Any;
/// use torsion::Reactor;
/// use torsion::endpoints::{server_from_string, UnixServerEndpoint};
///
/// let reactor = Reactor::new().unwrap();
/// let endpoint = server_from_string(&reactor, "unix:/var/run/finger:mode=660").unwrap();
/// let unix = (&*endpoint as &dyn Any).downcast_ref::<UnixServerEndpoint>().unwrap();
/// assert_eq!(unix.spec.mode, 0o660);
/// assert_eq!(unix.spec.backlog, torsion::net::tcp::DEFAULT_BACKLOG);
///
/// let err = server_from_string(&reactor, "tcp:80x").unwrap_err();
/// assert!(err.to_string().contains("bad port"));
/// ```
pub fn server_from_string(
    reactor: &Reactor,
    description: &str,
) -> Result<Box<dyn ServerEndpoint>, EndpointSyntaxError> {
    let result = EndpointArgs::parse(description).and_then(|args| {
        match args.endpoint_type.to_ascii_lowercase().as_str() {
            "tcp" => parse_tcp_server(reactor, &args),
            "tcp6" => parse_tcp6_server(reactor, &args),
            "unix" => parse_unix_server(reactor, &args),
            "systemd" => parse_systemd_server(reactor, &args),
            other => {
                let parser = SERVER_PARSERS.with(|p| p.borrow().get(other).cloned());
                match parser {
                    Some(parser) => parser(reactor, &args),
                    None => Err(EndpointSyntaxProblem::UnknownType(args.endpoint_type)),
                }
            }
        }
    });
    result.map_err(|problem| EndpointSyntaxError {
        description: description.to_string(),
        problem,
    })
}

/// Makes a client endpoint from a description such as `"tcp:host=example.com:port=80"`
/// (Twisted's `clientFromString`); see the [module docs](self) for the types and their
/// arguments.
///
/// # Errors
///
/// As for [`server_from_string`].
///
/// # Examples
///
/// ```
/// use std::any::Any;
/// use std::time::Duration;
/// use torsion::Reactor;
/// use torsion::endpoints::{client_from_string, TcpClientEndpoint};
///
/// let reactor = Reactor::new().unwrap();
/// let endpoint = client_from_string(&reactor, "tcp:host=example.com:port=80:timeout=5").unwrap();
/// let tcp = (&*endpoint as &dyn Any).downcast_ref::<TcpClientEndpoint>().unwrap();
/// assert_eq!((tcp.host.as_str(), tcp.port), ("example.com", 80));
/// assert_eq!(tcp.timeout, Some(Duration::from_secs(5)));
/// ```
pub fn client_from_string(
    reactor: &Reactor,
    description: &str,
) -> Result<Box<dyn ClientEndpoint>, EndpointSyntaxError> {
    let result = EndpointArgs::parse(description).and_then(|args| {
        match args.endpoint_type.to_ascii_lowercase().as_str() {
            "tcp" => parse_tcp_client(reactor, &args),
            "unix" => parse_unix_client(reactor, &args),
            other => {
                let parser = CLIENT_PARSERS.with(|p| p.borrow().get(other).cloned());
                match parser {
                    Some(parser) => parser(reactor, &args),
                    None => Err(EndpointSyntaxProblem::UnknownType(args.endpoint_type)),
                }
            }
        }
    });
    result.map_err(|problem| EndpointSyntaxError {
        description: description.to_string(),
        problem,
    })
}

/// `tcp:PORT[:INTERFACE[:BACKLOG]]` (Twisted's `_parseTCP`).
fn parse_tcp_server(
    reactor: &Reactor,
    args: &EndpointArgs,
) -> Result<Box<dyn ServerEndpoint>, EndpointSyntaxProblem> {
    let args = args.bind(&["port", "interface", "backlog"], 3)?;
    let port = args.port("port")?;
    Ok(Box::new(
        TcpServerEndpoint::new(reactor, port)
            .interface(args.interface(IpAddr::from([0, 0, 0, 0]))?)
            .backlog(args.backlog()?),
    ))
}

/// `tcp6:PORT[:BACKLOG[:INTERFACE]]` (Twisted's `_TCP6ServerParser`, whose second
/// positional argument is the backlog).
fn parse_tcp6_server(
    reactor: &Reactor,
    args: &EndpointArgs,
) -> Result<Box<dyn ServerEndpoint>, EndpointSyntaxProblem> {
    let args = args.bind(&["port", "backlog", "interface"], 3)?;
    let port = args.port("port")?;
    Ok(Box::new(
        Tcp6ServerEndpoint::new(reactor, port)
            .interface(args.interface(IpAddr::from([0u16; 8]))?)
            .backlog(args.backlog()?),
    ))
}

/// `unix:ADDRESS[:MODE[:BACKLOG[:LOCKFILE]]]` (Twisted's `_parseUNIX`): mode in octal
/// (666), backlog [`DEFAULT_BACKLOG`], lockfile 1.
fn parse_unix_server(
    reactor: &Reactor,
    args: &EndpointArgs,
) -> Result<Box<dyn ServerEndpoint>, EndpointSyntaxProblem> {
    let args = args.bind(&["address|path", "mode", "backlog", "lockfile"], 4)?;
    let mut spec = UnixServerSpec::new(args.required("address")?);
    spec.mode = args
        .parse_with(
            "mode",
            "octal permission bits such as 666 or 0660",
            parse_octal_mode,
        )?
        .unwrap_or(DEFAULT_UNIX_MODE);
    spec.backlog = args.backlog()?;
    spec.want_pid = args.flag("lockfile", true)?;
    Ok(Box::new(UnixServerEndpoint::new(reactor, spec)))
}

fn parse_octal_mode(value: &str) -> Option<u32> {
    let digits = value
        .strip_prefix("0o")
        .or_else(|| value.strip_prefix("0O"))
        .unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
}

/// `systemd:domain=INET|INET6|UNIX:index=N` or `:name=X` (Twisted's `_SystemdParser`).
fn parse_systemd_server(
    reactor: &Reactor,
    args: &EndpointArgs,
) -> Result<Box<dyn ServerEndpoint>, EndpointSyntaxProblem> {
    let args = args.bind(&["domain", "index", "name"], 3)?;
    let domain_value = args.required("domain")?;
    let domain = match domain_value.to_ascii_uppercase().as_str() {
        "INET" => SystemdDomain::Inet,
        "INET6" => SystemdDomain::Inet6,
        "UNIX" => SystemdDomain::Unix,
        _ => return Err(args.bad_value("domain", domain_value, "INET, INET6 or UNIX")),
    };
    let index = args.parse_with("index", "a descriptor index, 0 or more", |v| {
        v.parse::<usize>().ok()
    })?;
    let socket = match (index, args.get("name")) {
        (Some(index), None) => SystemdSocket::Index(index),
        (None, Some(name)) if !name.is_empty() => SystemdSocket::Name(name.to_string()),
        _ => return Err(args.invalid("give exactly one of index and name")),
    };
    Ok(Box::new(SystemdServerEndpoint::new(
        reactor,
        SystemdSpec { domain, socket },
    )))
}

/// `tcp:HOST:PORT[:timeout=…][:bindAddress=…]`, either part as a keyword too (Twisted's
/// `_parseClientTCP`: one positional argument is the port when `host=` is given).
fn parse_tcp_client(
    reactor: &Reactor,
    args: &EndpointArgs,
) -> Result<Box<dyn ClientEndpoint>, EndpointSyntaxProblem> {
    let port_first = args.positional.len() == 1 && args.keywords.iter().any(|(k, _)| k == "host");
    let args = if port_first {
        args.bind(&["port", "host", "timeout", "bindAddress|bind_address"], 1)?
    } else {
        args.bind(&["host", "port", "timeout", "bindAddress|bind_address"], 2)?
    };
    let host = args.required("host")?;
    let port = args.port("port")?;
    let bind_address = args.parse_with(
        "bindAddress",
        "a local IP address (escape colons as \\:)",
        |v| {
            v.parse::<IpAddr>()
                .map(|ip| SocketAddr::new(ip, 0))
                .or_else(|_| v.parse::<SocketAddr>())
                .ok()
        },
    )?;
    Ok(Box::new(
        TcpClientEndpoint::new(reactor, host, port)
            .timeout(args.timeout()?)
            .bind_address(bind_address),
    ))
}

/// `unix:PATH[:timeout=…][:lockfile=…]` (Twisted's `_parseClientUNIX`).
fn parse_unix_client(
    reactor: &Reactor,
    args: &EndpointArgs,
) -> Result<Box<dyn ClientEndpoint>, EndpointSyntaxProblem> {
    let args = args.bind(&["path", "timeout", "lockfile"], 1)?;
    let mut spec = UnixClientSpec::new(args.required("path")?);
    spec.timeout = args.timeout()?;
    spec.check_pid = args.flag("lockfile", false)?;
    Ok(Box::new(UnixClientEndpoint::new(reactor, spec)))
}
