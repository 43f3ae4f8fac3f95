//! Adopting sockets opened elsewhere (Twisted's `IReactorSocket`: `adoptStreamPort`,
//! `adoptStreamConnection`, `adoptDatagramPort`): a listening socket inherited from systemd
//! (see [`systemd`](super::systemd)) or a parent process, one end of a `socketpair`, a
//! socket passed over a UNIX socket.
//!
//! Unlike Twisted, which duplicates the descriptor and leaves the caller's open, these take
//! an [`OwnedFd`]: ownership moves to the reactor, which closes the socket when the port or
//! connection ends. The address family is read from the socket (`getsockname`), so one call
//! serves TCP and UNIX alike; the socket is made non-blocking and close-on-exec. An adopted
//! UNIX port never removes its socket file: whoever bound it owns it.
//!
//! Invariant: a socket of the wrong kind is refused with a typed error and closed, never
//! half-registered.

use std::os::fd::OwnedFd;
use std::rc::Rc;

use socket2::{Domain, SockAddr, Socket, Type};

use super::Port;
use super::connection::Connection;
use super::udp::{DEFAULT_MAX_PACKET_SIZE, UdpPort};
use super::unix::unix_address_of;
use crate::defer::Failure;
use crate::error::InvalidArgument;
use crate::net::{Address, Transport};
use crate::protocol::{DatagramProtocol, Factory};
use crate::reactor::Reactor;

/// The stream address of `address`: TCP for IPv4 and IPv6, UNIX for a UNIX socket.
fn stream_address(address: &SockAddr) -> Result<Address, Failure> {
    if let Some(inet) = address.as_socket() {
        Ok(Address::Tcp(inet))
    } else if address.is_unix() {
        Ok(unix_address_of(address))
    } else {
        Err(InvalidArgument(format!(
            "cannot adopt a socket of address family {}: only IPv4, IPv6 and UNIX",
            address.family()
        ))
        .into())
    }
}

/// Checks `socket` is of type `expected`, then makes it non-blocking and close-on-exec.
fn prepare(socket: &Socket, expected: Type, what: &str) -> Result<(), Failure> {
    let kind = socket.r#type().map_err(Failure::new)?;
    if kind != expected {
        return Err(InvalidArgument(format!("cannot adopt as {what}: wrong socket type")).into());
    }
    socket.set_nonblocking(true).map_err(Failure::new)?;
    socket.set_cloexec(true).map_err(Failure::new)?;
    Ok(())
}

impl Reactor {
    /// Accepts connections on an already listening stream socket, TCP or UNIX, building a
    /// protocol for each with `factory` (Twisted's `adoptStreamPort`). The reactor takes
    /// ownership of `fd`.
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`] if `fd` is not a listening stream socket of a supported family;
    /// the I/O error if it cannot be inspected or set up.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::fd::OwnedFd;
    /// use std::rc::Rc;
    /// use torsion::Reactor;
    /// use torsion::protocol::Protocol;
    ///
    /// struct Quiet;
    /// impl Protocol for Quiet {}
    ///
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let address = listener.local_addr().unwrap();
    /// let reactor = Reactor::new().unwrap();
    /// let port = reactor.adopt_stream_port(OwnedFd::from(listener), Rc::new(|| Quiet)).unwrap();
    /// assert_eq!(port.host().socket_addr(), Some(address));
    /// ```
    pub fn adopt_stream_port<F: Factory>(
        &self,
        fd: OwnedFd,
        factory: Rc<F>,
    ) -> Result<Port, Failure> {
        let socket = Socket::from(fd);
        prepare(&socket, Type::STREAM, "a stream port")?;
        if !socket.is_listener().map_err(Failure::new)? {
            return Err(InvalidArgument(
                "cannot adopt as a stream port: the socket is not listening".into(),
            )
            .into());
        }
        let host = stream_address(&socket.local_addr().map_err(Failure::new)?)?;
        Port::start(self, socket, host, factory, None)
    }

    /// Runs a protocol built by `factory` on an already connected stream socket, TCP or
    /// UNIX (Twisted's `adoptStreamConnection`). The reactor takes ownership of `fd`.
    /// Returns the connection's transport, or `None` when `build_protocol` refused (the
    /// socket is then closed). The factory's `start_factory` is not called, as in Twisted.
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`] if `fd` is not a connected stream socket of a supported family.
    pub fn adopt_stream_connection<F: Factory>(
        &self,
        fd: OwnedFd,
        factory: Rc<F>,
    ) -> Result<Option<Transport>, Failure> {
        let socket = Socket::from(fd);
        prepare(&socket, Type::STREAM, "a stream connection")?;
        if socket.is_listener().map_err(Failure::new)? {
            return Err(InvalidArgument(
                "cannot adopt a listening socket as a connection: use adopt_stream_port".into(),
            )
            .into());
        }
        let host = stream_address(&socket.local_addr().map_err(Failure::new)?)?;
        let peer = match socket.peer_addr() {
            Ok(peer) => stream_address(&peer)?,
            Err(err) => {
                return Err(InvalidArgument(format!(
                    "cannot adopt as a stream connection: the socket is not connected ({err})"
                ))
                .into());
            }
        };
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            factory.build_protocol(&peer)
        }));
        let protocol = match built {
            Ok(Some(protocol)) => protocol,
            Ok(None) => return Ok(None),
            Err(payload) => return Err(Failure::from_panic(&*payload)),
        };
        let conn = Connection::new(self, socket, peer, Some(host), None);
        conn.start(protocol);
        Ok(Some(conn))
    }

    /// Hands the datagrams of an already bound UDP socket to `protocol` (Twisted's
    /// `adoptDatagramPort`), reading datagrams of up to
    /// [`DEFAULT_MAX_PACKET_SIZE`] bytes. The reactor takes ownership of `fd`.
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`] if `fd` is not an IPv4 or IPv6 datagram socket.
    pub fn adopt_datagram_port(
        &self,
        fd: OwnedFd,
        protocol: Box<dyn DatagramProtocol>,
    ) -> Result<UdpPort, Failure> {
        self.adopt_datagram_port_with(fd, protocol, DEFAULT_MAX_PACKET_SIZE)
    }

    /// [`adopt_datagram_port`](Reactor::adopt_datagram_port) with a maximum datagram size
    /// (Twisted's `maxPacketSize`).
    ///
    /// # Errors
    ///
    /// As for `adopt_datagram_port`.
    pub fn adopt_datagram_port_with(
        &self,
        fd: OwnedFd,
        protocol: Box<dyn DatagramProtocol>,
        max_packet_size: usize,
    ) -> Result<UdpPort, Failure> {
        let socket = Socket::from(fd);
        prepare(&socket, Type::DGRAM, "a datagram port")?;
        let domain = socket.domain().map_err(Failure::new)?;
        if domain != Domain::IPV4 && domain != Domain::IPV6 {
            return Err(InvalidArgument(
                "cannot adopt as a datagram port: only IPv4 and IPv6 UDP sockets".into(),
            )
            .into());
        }
        UdpPort::start(self, socket, protocol, max_packet_size)
    }
}
