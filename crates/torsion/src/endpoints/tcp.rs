//! TCP endpoints (Twisted's `TCP4ServerEndpoint`, `TCP6ServerEndpoint`,
//! `TCP4ClientEndpoint` and `TCP6ClientEndpoint` in `twisted.internet.endpoints`):
//! listening on a port of the IPv4 or IPv6 interfaces, and connecting to a host and port.
//!
//! Invariant: an endpoint is a description and holds no socket; each `listen` and `connect`
//! makes a new port or attempt, and the user's factory reaches the reactor only through
//! the adapters of [the parent module](super) (`PortFactory`, `ConnectingFactory`), so its
//! `start_factory` and `stop_factory` run once however many endpoints share it.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use super::{ClientEndpoint, ListeningPort, PortFactory, ServerEndpoint, connect_endpoint};
use crate::defer::Deferred;
use crate::net::Transport;
use crate::net::tcp::{ConnectOptions, DEFAULT_BACKLOG, DEFAULT_CONNECT_TIMEOUT, ListenOptions};
use crate::protocol::Factory;
use crate::reactor::Reactor;

/// Connects over TCP with a [`ConnectingFactory`]; the Deferred's canceller stops the
/// attempt.
fn connect_tcp_endpoint(
    reactor: &Reactor,
    host: &str,
    port: u16,
    options: ConnectOptions,
    factory: Rc<dyn Factory>,
) -> Deferred<Transport> {
    connect_endpoint(factory, |wrapping| {
        reactor.connect_tcp_with(host, port, wrapping, options)
    })
}

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
    let adapter = Rc::new(PortFactory { inner: factory });
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
///
/// [`HostnameEndpoint`]: super::HostnameEndpoint
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
