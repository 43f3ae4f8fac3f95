//! Listening stream ports, TCP or UNIX (Twisted's `tcp.Port`, which `unix.Port`
//! subclasses): the socket accepting connections and the protocol built for each.
//!
//! Accepting follows Twisted's `Port.doRead`: up to a growing number of accepts per
//! readiness event, a protocol built for each, and a descriptor held in reserve so that
//! running out of descriptors (EMFILE) refuses pending clients instead of spinning. On
//! io_uring the ring accepts (a multishot accept) and each event hands over what it
//! accepted, in place of `accept4`.
//!
//! Invariant: the factory's `start_factory` runs when the port starts listening and its
//! `stop_factory` once it stops, each once however the port ends.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::SocketFlags;
use socket2::Socket;

use super::connection::Connection;
use crate::defer::{Deferred, Failure};
use crate::error::CannotListen;
use crate::net::Address;
use crate::protocol::Factory;
use crate::reactor::backend::{Received, Taken};
use crate::reactor::{FileDescriptor, Reactor, ReadDescriptor};
use crate::time::ReactorTime;

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
        if let Err(source) = reactor.add_listener(inner.clone()) {
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
        Address::Pipe => "stdio".to_string(),
    }
}

impl PortInner {
    fn close(&self) {
        // Kept registered while not accepting on io_uring (what it accepted meanwhile
        // stays queued): removed for good before the socket closes.
        self.reactor.remove_stream(self.fd);
        drop(self.socket.borrow_mut().take());
        let on_close = self.on_close.borrow_mut().take();
        if let Some(on_close) = on_close {
            on_close();
        }
        crate::protocol::factory_stopped(&self.factory);
    }

    /// The next connection: one the ring accepted (io_uring), or one `accept4`.
    fn accept_one(&self) -> Result<Option<(Socket, Address)>, Errno> {
        match self.reactor.take_received(self.fd) {
            Taken::NotOnRing => self.accept_socket(),
            Taken::Got(Received::Accepted(fd)) => {
                let peer = rustix::net::getpeername(&fd).ok().flatten();
                Ok(Some((Socket::from(fd), self.peer_address(peer))))
            }
            Taken::Got(Received::Failed(err)) => Err(err
                .raw_os_error()
                .map_or(Errno::IO, Errno::from_raw_os_error)),
            Taken::Nothing | Taken::Got(_) => Ok(None),
        }
    }

    /// The address of a connection's peer as its port's kind says it.
    fn peer_address(&self, addr: Option<rustix::net::SocketAddrAny>) -> Address {
        match self.host {
            Address::Unix(_) => super::unix::unix_address_of_any(addr),
            _ => Address::Tcp(
                addr.and_then(|a| SocketAddr::try_from(a).ok())
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            ),
        }
    }

    /// One `accept4` on the listening socket.
    fn accept_socket(&self) -> Result<Option<(Socket, Address)>, Errno> {
        let sock = self.socket.borrow();
        let Some(sock) = sock.as_ref() else {
            return Ok(None);
        };
        loop {
            match rustix::net::acceptfrom_with(
                sock.as_fd(),
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            ) {
                Ok((fd, addr)) => return Ok(Some((Socket::from(fd), self.peer_address(addr)))),
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
            if let Ok(Some((sock, _))) = self.accept_socket() {
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
                    && let Err(err) = me.reactor.add_listener(me.clone())
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
                // says which interface it arrived on, looked up if it is asked for.
                Address::Tcp(listening) if listening.ip().is_unspecified() => None,
                other => Some(other.clone()),
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
