//! UDP: datagram ports (Twisted's `twisted.internet.udp`: `udp.Port` and `MulticastPort`,
//! with `IReactorUDP`, `IUDPTransport` and `IMulticastTransport`).
//!
//! A [`UdpPort`] is both the listening port and the transport its
//! [`DatagramProtocol`] sends with, as Twisted's `udp.Port` is; the protocol gets a clone
//! (named [`DatagramTransport`]) in [`DatagramProtocol::start_protocol`].
//!
//! Reading follows Twisted's `Port.doRead`: up to [`READS_PER_EVENT`] datagrams per
//! readiness event, each read with one `recvfrom` into the reactor's shared read buffer, so
//! an idle port holds no buffer. Writing is not buffered: [`UdpPort::write`] sends at once
//! and drops the datagram (with a debug log) when the kernel's buffer is full, as Twisted
//! does: UDP may lose datagrams anyway.
//!
//! Connected UDP ([`UdpPort::connect`]): the kernel then reports an ICMP "port unreachable"
//! for a datagram we sent; the protocol hears of it through
//! [`DatagramProtocol::connection_refused`], always from the loop.
//!
//! Invariant: the protocol's cell is never borrowed while another call into it is running,
//! and no borrow of the socket is held while the protocol runs (it may write or stop the
//! port from inside `datagram_received`).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::rc::{Rc, Weak};
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};
use socket2::{Domain, Protocol as SockProtocol, SockAddr, Socket, Type};

use crate::defer::{Deferred, Failure};
use crate::error::{CannotListen, InvalidArgument, MessageLengthError, MulticastJoinError};
use crate::net::Address;
use crate::net::read_buffer::{self, READ_BUFFER_SIZE};
use crate::protocol::DatagramProtocol;
use crate::reactor::{FileDescriptor, Reactor, ReadDescriptor};
use crate::time::ReactorTime;

/// The default largest datagram a port reads whole (Twisted's `maxPacketSize`, 8192);
/// longer ones are truncated.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 8192;

/// How many datagrams one readiness event may read (Twisted reads up to 256 per `doRead`),
/// so one busy port cannot starve the others.
pub const READS_PER_EVENT: usize = 256;

/// Options for [`Reactor::listen_udp_with`] (Twisted's `listenUDP(port, protocol,
/// interface='', maxPacketSize=8192)`, and `listenMulticast`'s `listenMultiple`).
#[derive(Debug, Clone)]
pub struct UdpOptions {
    /// The address to bind: `0.0.0.0` by default; `::` for IPv6.
    pub interface: IpAddr,
    /// The largest datagram read whole (8192 by default, as Twisted's; at least 1); a longer
    /// one is delivered truncated to this many bytes, the rest dropped by the kernel.
    pub max_packet_size: usize,
    /// Set `SO_REUSEADDR` and `SO_REUSEPORT`, so several sockets can bind the same port
    /// (Twisted's `listenMulticast(.., listenMultiple=True)`; one reactor per core sharing
    /// a unicast port).
    pub reuse_port: bool,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            interface: IpAddr::from([0, 0, 0, 0]),
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            reuse_port: false,
        }
    }
}

/// A bound UDP socket, listening for datagrams and sending them (Twisted's `udp.Port` and
/// `MulticastPort`, the `IUDPTransport` and `IMulticastTransport` a protocol writes to).
///
/// Cloning gives another handle to the same port.
///
/// # Examples
///
/// ```
/// use std::cell::RefCell;
/// use std::net::SocketAddr;
/// use std::rc::Rc;
/// use torsion::Reactor;
/// use torsion::net::udp::{DatagramTransport, UdpOptions};
/// use torsion::protocol::DatagramProtocol;
///
/// struct Receiver(Reactor, Rc<RefCell<Vec<u8>>>);
///
/// impl DatagramProtocol for Receiver {
///     fn datagram_received(&mut self, data: &[u8], _from: SocketAddr) {
///         self.1.borrow_mut().extend_from_slice(data);
///         let _ = self.0.stop();
///     }
/// }
///
/// let reactor = Reactor::new().unwrap();
/// let got = Rc::new(RefCell::new(Vec::new()));
/// let local = UdpOptions { interface: [127, 0, 0, 1].into(), ..UdpOptions::default() };
/// let server = reactor
///     .listen_udp_with(0, Box::new(Receiver(reactor.clone(), got.clone())), local.clone())
///     .unwrap();
/// let to = server.host().socket_addr().unwrap();
///
/// struct Sender(SocketAddr);
/// impl DatagramProtocol for Sender {
///     fn start_protocol(&mut self, transport: DatagramTransport) {
///         transport.write(b"hello", self.0).unwrap();
///     }
/// }
/// let _client = reactor.listen_udp_with(0, Box::new(Sender(to)), local).unwrap();
/// reactor.run().unwrap();
/// assert_eq!(&*got.borrow(), b"hello");
/// ```
#[derive(Clone)]
pub struct UdpPort(Rc<UdpInner>);

/// What a [`DatagramProtocol`] sends with: the [`UdpPort`] itself (Twisted's
/// `IUDPTransport`, which is the port).
pub type DatagramTransport = UdpPort;

struct UdpInner {
    me: Weak<UdpInner>,
    socket: RefCell<Option<Socket>>,
    fd: RawFd,
    reactor: Reactor,
    protocol: RefCell<Option<Box<dyn DatagramProtocol>>>,
    host: SocketAddr,
    max_packet_size: usize,
    /// A read buffer of our own, only when `max_packet_size` exceeds the shared one.
    big_buffer: RefCell<Option<Box<[u8]>>>,
    connected: Cell<Option<SocketAddr>>,
    listening: Cell<bool>,
}

impl UdpPort {
    /// Binds `socket` and starts reading, then calls the protocol's `start_protocol`.
    pub(crate) fn start(
        reactor: &Reactor,
        socket: Socket,
        protocol: Box<dyn DatagramProtocol>,
        max_packet_size: usize,
    ) -> Result<UdpPort, Failure> {
        let host = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let connected = socket.peer_addr().ok().and_then(|a| a.as_socket());
        let max_packet_size = max_packet_size.max(1);
        let fd = socket.as_raw_fd();
        let inner = Rc::new_cyclic(|me| UdpInner {
            me: me.clone(),
            socket: RefCell::new(Some(socket)),
            fd,
            reactor: reactor.clone(),
            protocol: RefCell::new(Some(protocol)),
            host,
            max_packet_size,
            big_buffer: RefCell::new(None),
            connected: Cell::new(connected),
            listening: Cell::new(true),
        });
        if let Err(source) = reactor.add_reader(inner.clone()) {
            inner.listening.set(false);
            drop(inner.socket.borrow_mut().take());
            drop(inner.protocol.borrow_mut().take());
            return Err(CannotListen {
                address: host.to_string(),
                source,
            }
            .into());
        }
        let port = UdpPort(inner);
        let transport = port.clone();
        port.0.with_protocol(|p| p.start_protocol(transport));
        Ok(port)
    }

    /// The address the port is bound to; with port 0, the port the kernel chose (Twisted's
    /// `getHost`).
    pub fn host(&self) -> Address {
        Address::Udp(self.0.host)
    }

    /// The address the port is connected to, if [`connect`](UdpPort::connect) was called
    /// (Twisted's `_connectedAddr`).
    pub fn connected_to(&self) -> Option<SocketAddr> {
        self.0.connected.get()
    }

    /// The largest datagram read whole (see [`UdpOptions::max_packet_size`]).
    pub fn max_packet_size(&self) -> usize {
        self.0.max_packet_size
    }

    /// Whether the port is still open (not stopped).
    pub fn is_listening(&self) -> bool {
        self.0.listening.get()
    }

    /// Sends `data` as one datagram to `addr`, at once (Twisted's `write(datagram, addr)`).
    ///
    /// When the kernel's send buffer is full (`EWOULDBLOCK`, `ENOBUFS`) the datagram is
    /// dropped with a debug log and `Ok` returned, as Twisted does. On a connected port,
    /// `addr` must be the connected address (or use
    /// [`write_connected`](UdpPort::write_connected)); a refusal reported by the kernel is
    /// delivered to [`DatagramProtocol::connection_refused`] from the loop.
    ///
    /// # Errors
    ///
    /// [`MessageLengthError`] if the datagram is too long (`EMSGSIZE`);
    /// [`InvalidArgument`] for another address on a connected port; the I/O error for
    /// anything else (for example a closed port, or an unreachable network).
    pub fn write(&self, data: &[u8], addr: SocketAddr) -> Result<(), Failure> {
        match self.0.connected.get() {
            Some(connected) if connected != addr => Err(InvalidArgument(format!(
                "this UDP port is connected to {connected}: it cannot send to {addr}"
            ))
            .into()),
            Some(_) => self.0.send(data, None),
            None => self.0.send(data, Some(addr)),
        }
    }

    /// Sends `data` to the address the port is connected to (Twisted's `write(datagram)`
    /// on a connected port).
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`] if the port is not connected; otherwise as
    /// [`write`](UdpPort::write).
    pub fn write_connected(&self, data: &[u8]) -> Result<(), Failure> {
        if self.0.connected.get().is_none() {
            return Err(InvalidArgument(
                "this UDP port is not connected: give an address to write()".into(),
            )
            .into());
        }
        self.0.send(data, None)
    }

    /// Connects the port to `addr` (Twisted's `connect(host, port)`): it then receives only
    /// from `addr`, [`write_connected`](UdpPort::write_connected) sends there, and refusals
    /// reach [`DatagramProtocol::connection_refused`].
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`] if the port is already connected (reconnecting is not supported,
    /// as in Twisted); the I/O error if the kernel refused.
    pub fn connect(&self, addr: SocketAddr) -> Result<(), Failure> {
        if let Some(connected) = self.0.connected.get() {
            return Err(InvalidArgument(format!(
                "this UDP port is already connected to {connected}; reconnecting is not supported"
            ))
            .into());
        }
        self.0.with_socket(|s| s.connect(&SockAddr::from(addr)))?;
        self.0.connected.set(Some(addr));
        Ok(())
    }

    /// Stops listening (Twisted's `stopListening` / `loseConnection`): no more datagrams are
    /// read; on the next turn of the loop the socket is closed, the protocol's
    /// `stop_protocol` runs and the returned Deferred fires. Stopping a stopped port fires
    /// at once.
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

    /// Allows or forbids sending to broadcast addresses (Twisted's `setBroadcastAllowed`).
    ///
    /// # Errors
    ///
    /// The socket refused, or the port is closed.
    pub fn set_broadcast_allowed(&self, enabled: bool) -> Result<(), Failure> {
        self.0.with_socket(|s| s.set_broadcast(enabled))
    }

    /// Whether sending to broadcast addresses is allowed (Twisted's `getBroadcastAllowed`).
    ///
    /// # Errors
    ///
    /// As [`set_broadcast_allowed`](UdpPort::set_broadcast_allowed).
    pub fn broadcast_allowed(&self) -> Result<bool, Failure> {
        self.0.with_socket(|s| s.broadcast())
    }

    // ===== multicast (IMulticastTransport) =====

    /// Joins the IPv4 multicast `group` on the interface with address `interface`
    /// (`0.0.0.0`: the kernel's choice) (Twisted's `joinGroup`). Datagrams sent to the
    /// group and this port's number then arrive here.
    ///
    /// # Errors
    ///
    /// [`MulticastJoinError`] naming the group, the interface and the kernel's reason.
    pub fn join_group(&self, group: Ipv4Addr, interface: Ipv4Addr) -> Result<(), Failure> {
        self.0
            .io(|s| s.join_multicast_v4(&group, &interface))
            .map_err(|source| {
                MulticastJoinError {
                    group: group.into(),
                    interface: interface.to_string(),
                    source,
                }
                .into()
            })
    }

    /// Leaves an IPv4 multicast group joined with [`join_group`](UdpPort::join_group)
    /// (Twisted's `leaveGroup`).
    ///
    /// # Errors
    ///
    /// The I/O error (for example the group was not joined).
    pub fn leave_group(&self, group: Ipv4Addr, interface: Ipv4Addr) -> Result<(), Failure> {
        self.0
            .with_socket(|s| s.leave_multicast_v4(&group, &interface))
    }

    /// Joins the IPv6 multicast `group` on the interface with index `interface` (0: the
    /// kernel's choice).
    ///
    /// # Errors
    ///
    /// [`MulticastJoinError`], as [`join_group`](UdpPort::join_group).
    pub fn join_group_v6(&self, group: Ipv6Addr, interface: u32) -> Result<(), Failure> {
        self.0
            .io(|s| s.join_multicast_v6(&group, interface))
            .map_err(|source| {
                MulticastJoinError {
                    group: group.into(),
                    interface: interface.to_string(),
                    source,
                }
                .into()
            })
    }

    /// Leaves an IPv6 multicast group.
    ///
    /// # Errors
    ///
    /// The I/O error.
    pub fn leave_group_v6(&self, group: Ipv6Addr, interface: u32) -> Result<(), Failure> {
        self.0
            .with_socket(|s| s.leave_multicast_v6(&group, interface))
    }

    /// Sets the time-to-live of the multicast datagrams this port sends (Twisted's
    /// `setTTL`; 1 by default: the local network only).
    ///
    /// # Errors
    ///
    /// The socket refused, or the port is closed.
    pub fn set_ttl(&self, ttl: u32) -> Result<(), Failure> {
        self.0.with_socket(|s| s.set_multicast_ttl_v4(ttl))
    }

    /// The multicast time-to-live (Twisted's `getTTL`).
    ///
    /// # Errors
    ///
    /// As [`set_ttl`](UdpPort::set_ttl).
    pub fn ttl(&self) -> Result<u32, Failure> {
        self.0.with_socket(|s| s.multicast_ttl_v4())
    }

    /// Whether multicast datagrams this host sends are looped back to its own members of
    /// the group, this port included (Twisted's `setLoopbackMode`; on by default).
    ///
    /// # Errors
    ///
    /// As [`set_ttl`](UdpPort::set_ttl).
    pub fn set_loopback_mode(&self, enabled: bool) -> Result<(), Failure> {
        self.0.with_socket(|s| s.set_multicast_loop_v4(enabled))
    }

    /// Whether multicast loopback is on (Twisted's `getLoopbackMode`).
    ///
    /// # Errors
    ///
    /// As [`set_ttl`](UdpPort::set_ttl).
    pub fn loopback_mode(&self) -> Result<bool, Failure> {
        self.0.with_socket(|s| s.multicast_loop_v4())
    }

    /// Sends multicast datagrams through the interface with address `interface` (Twisted's
    /// `setOutgoingInterface`).
    ///
    /// # Errors
    ///
    /// As [`set_ttl`](UdpPort::set_ttl).
    pub fn set_outgoing_interface(&self, interface: Ipv4Addr) -> Result<(), Failure> {
        self.0.with_socket(|s| s.set_multicast_if_v4(&interface))
    }

    /// The interface multicast datagrams go out through (Twisted's
    /// `getOutgoingInterface`); `0.0.0.0` when the kernel chooses.
    ///
    /// # Errors
    ///
    /// As [`set_ttl`](UdpPort::set_ttl).
    pub fn outgoing_interface(&self) -> Result<Ipv4Addr, Failure> {
        self.0.with_socket(|s| s.multicast_if_v4())
    }
}

impl UdpInner {
    fn rc(&self) -> Option<Rc<UdpInner>> {
        self.me.upgrade()
    }

    /// Runs `f` on the socket; a closed port is `NotConnected`.
    fn io<T>(&self, f: impl FnOnce(&Socket) -> io::Result<T>) -> io::Result<T> {
        let sock = self.socket.borrow();
        match sock.as_ref() {
            Some(sock) => f(sock),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the UDP port is closed",
            )),
        }
    }

    /// [`io`](UdpInner::io), with the error as a Failure.
    fn with_socket<T>(&self, f: impl FnOnce(&Socket) -> io::Result<T>) -> Result<T, Failure> {
        self.io(f).map_err(Failure::new)
    }

    /// Runs `f` on the protocol; a panic is logged and the port goes on (Twisted logs an
    /// exception from `datagramReceived` and keeps reading).
    fn with_protocol(&self, f: impl FnOnce(&mut dyn DatagramProtocol)) {
        let Ok(mut slot) = self.protocol.try_borrow_mut() else {
            crate::log::error!(target: "torsion::udp", "datagram protocol re-entered; event dropped");
            return;
        };
        let Some(protocol) = slot.as_mut() else {
            return;
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut **protocol)));
        drop(slot);
        if let Err(payload) = outcome {
            crate::log::error!(
                target: "torsion::udp",
                "datagram protocol on {} panicked: {}",
                self.host,
                Failure::from_panic(&*payload)
            );
        }
    }

    /// Sends one datagram, to `to` or (connected) to the connected address.
    fn send(&self, data: &[u8], to: Option<SocketAddr>) -> Result<(), Failure> {
        let sent = {
            let sock = self.socket.borrow();
            let Some(sock) = sock.as_ref() else {
                return Err(Failure::new(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the UDP port is closed",
                )));
            };
            loop {
                let result = match to {
                    Some(addr) => {
                        rustix::net::sendto(sock.as_fd(), data, SendFlags::empty(), &addr)
                    }
                    None => rustix::net::send(sock.as_fd(), data, SendFlags::empty()),
                };
                match result {
                    Err(Errno::INTR) => continue,
                    other => break other,
                }
            }
        };
        match sent {
            Ok(_) => Ok(()),
            Err(Errno::MSGSIZE) => Err(MessageLengthError { length: data.len() }.into()),
            Err(err @ (Errno::AGAIN | Errno::NOBUFS)) => {
                tracing::debug!(
                    target: "torsion::udp",
                    "{}-byte datagram from {} dropped: {err}",
                    data.len(),
                    self.host
                );
                Ok(())
            }
            Err(Errno::CONNREFUSED) if self.connected.get().is_some() => {
                // An earlier datagram was refused; tell the protocol from the loop.
                self.schedule_refused();
                Ok(())
            }
            // Unconnected: whether the kernel reports refusals here varies by platform, and
            // it does not say which datagram it was (Twisted ignores it too).
            Err(Errno::CONNREFUSED) => Ok(()),
            Err(err) => Err(Failure::new(io::Error::from(err))),
        }
    }

    fn schedule_refused(&self) {
        if let Some(me) = self.rc() {
            self.reactor.call_later(Duration::ZERO, move || {
                if me.listening.get() {
                    me.with_protocol(|p| p.connection_refused());
                }
            });
        }
    }

    /// Closes the socket and tells the protocol, once; the protocol is dropped afterwards,
    /// which breaks the protocol → port → protocol cycle.
    fn close(&self) {
        drop(self.socket.borrow_mut().take());
        let protocol = self.protocol.borrow_mut().take();
        if let Some(mut protocol) = protocol {
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| protocol.stop_protocol()));
            if let Err(payload) = outcome {
                crate::log::error!(
                    target: "torsion::udp",
                    "stop_protocol of the datagram protocol on {} panicked: {}",
                    self.host,
                    Failure::from_panic(&*payload)
                );
            }
            drop(protocol);
        }
    }

    fn take_buffer(&self) -> Box<[u8]> {
        if self.max_packet_size <= READ_BUFFER_SIZE {
            return read_buffer::take();
        }
        self.big_buffer
            .borrow_mut()
            .take()
            .unwrap_or_else(|| vec![0u8; self.max_packet_size].into_boxed_slice())
    }

    fn return_buffer(&self, buffer: Box<[u8]>) {
        if self.max_packet_size <= READ_BUFFER_SIZE {
            read_buffer::give_back(buffer);
        } else {
            *self.big_buffer.borrow_mut() = Some(buffer);
        }
    }
}

impl FileDescriptor for UdpInner {
    fn fileno(&self) -> RawFd {
        self.fd
    }

    fn connection_lost(&self, reason: Failure) {
        // The reactor reports a pending socket error (an ICMP refusal on a connected port)
        // as an error event without data, and unregisters us: that does not end a UDP port.
        if self.reactor.is_running() && self.listening.get() {
            let error = self
                .socket
                .borrow()
                .as_ref()
                .and_then(|s| s.take_error().ok().flatten());
            if let Some(error) = error {
                if error.raw_os_error() == Some(libc::ECONNREFUSED) {
                    if self.connected.get().is_some() {
                        self.with_protocol(|p| p.connection_refused());
                    }
                } else {
                    tracing::debug!(target: "torsion::udp", "error on {}: {error}", self.host);
                }
                if let Some(me) = self.rc()
                    && self.listening.get()
                    && let Err(err) = self.reactor.add_reader(me)
                {
                    crate::log::error!(target: "torsion::udp", "cannot watch {} again: {err}", self.host);
                    self.listening.set(false);
                    self.close();
                }
                return;
            }
        }
        if self.listening.replace(false) {
            tracing::debug!(target: "torsion::udp", "port {} closed: {reason}", self.host);
            self.close();
        }
    }

    fn log_prefix(&self) -> String {
        format!("udp port {}", self.host)
    }
}

impl ReadDescriptor for UdpInner {
    fn do_read(&self) -> Result<(), Failure> {
        let mut buffer = self.take_buffer();
        let limit = self.max_packet_size.min(buffer.len());
        for _ in 0..READS_PER_EVENT {
            if !self.listening.get() {
                break;
            }
            let received = {
                let sock = self.socket.borrow();
                let Some(sock) = sock.as_ref() else { break };
                loop {
                    match rustix::net::recvfrom(
                        sock.as_fd(),
                        &mut buffer[..limit],
                        RecvFlags::TRUNC,
                    ) {
                        Err(Errno::INTR) => continue,
                        other => break other,
                    }
                }
            };
            match received {
                Ok((n, full, from)) => {
                    if full > n {
                        tracing::debug!(
                            target: "torsion::udp",
                            "{full}-byte datagram on {} truncated to max_packet_size {n}",
                            self.host
                        );
                    }
                    let from = from
                        .and_then(|a| SocketAddr::try_from(a).ok())
                        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                    self.with_protocol(|p| p.datagram_received(&buffer[..n], from));
                }
                Err(Errno::AGAIN) => break,
                Err(Errno::CONNREFUSED) => {
                    if self.connected.get().is_some() {
                        self.with_protocol(|p| p.connection_refused());
                    }
                }
                Err(err) => {
                    crate::log::error!(target: "torsion::udp", "recvfrom on {} failed: {err}", self.host);
                    break;
                }
            }
        }
        self.return_buffer(buffer);
        Ok(())
    }
}

impl fmt::Debug for UdpPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpPort")
            .field("host", &self.0.host)
            .field("connected_to", &self.0.connected.get())
            .field("listening", &self.0.listening.get())
            .finish_non_exhaustive()
    }
}

impl Reactor {
    /// Binds UDP `port` on every IPv4 interface and hands its datagrams to `protocol`
    /// (Twisted's `listenUDP`). Port 0 picks a free port: see [`UdpPort::host`]. The
    /// protocol's `start_protocol` runs before this returns.
    ///
    /// # Errors
    ///
    /// [`CannotListen`] naming the address (for example when it is in use).
    ///
    /// # Examples
    ///
    /// ```
    /// use torsion::Reactor;
    /// use torsion::protocol::DatagramProtocol;
    ///
    /// struct Ignore;
    /// impl DatagramProtocol for Ignore {}
    ///
    /// let reactor = Reactor::new().unwrap();
    /// let port = reactor.listen_udp(0, Box::new(Ignore)).unwrap();
    /// assert!(port.host().port().unwrap() > 0);
    /// drop(port.stop_listening());
    /// ```
    pub fn listen_udp(
        &self,
        port: u16,
        protocol: Box<dyn DatagramProtocol>,
    ) -> Result<UdpPort, Failure> {
        self.listen_udp_with(port, protocol, UdpOptions::default())
    }

    /// [`listen_udp`](Reactor::listen_udp) with an interface, a maximum datagram size and
    /// `SO_REUSEPORT`.
    ///
    /// # Errors
    ///
    /// As for `listen_udp`.
    pub fn listen_udp_with(
        &self,
        port: u16,
        protocol: Box<dyn DatagramProtocol>,
        options: UdpOptions,
    ) -> Result<UdpPort, Failure> {
        let address = SocketAddr::new(options.interface, port);
        let cannot = |source: io::Error| CannotListen {
            address: address.to_string(),
            source,
        };
        let socket = Socket::new(
            Domain::for_address(address),
            Type::DGRAM.nonblocking().cloexec(),
            Some(SockProtocol::UDP),
        )
        .map_err(cannot)?;
        if options.reuse_port {
            socket.set_reuse_address(true).map_err(cannot)?;
            socket.set_reuse_port(true).map_err(cannot)?;
        }
        if address.is_ipv6() {
            socket.set_only_v6(true).map_err(cannot)?;
        }
        socket.bind(&SockAddr::from(address)).map_err(cannot)?;
        UdpPort::start(self, socket, protocol, options.max_packet_size)
    }
}
