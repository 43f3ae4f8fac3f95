//! Connections: transports, addresses, producers and consumers (Twisted's `ITransport`,
//! `IAddress`, `IProducer`/`IConsumer`), and their implementations: [`tcp`], [`unix`],
//! [`udp`], adopted descriptors (`Reactor::adopt_*`) and [`systemd`] socket activation.
//!
//! A [`Transport`] is a cheap shared handle (`Rc<dyn TransportOps>`): the reactor's TCP
//! connections, test transports and (later) TLS and process pipes all implement
//! [`TransportOps`], so a protocol runs unchanged over any of them.
//!
//! Invariant: transport methods never call back into the protocol synchronously; writes are
//! buffered and sent after the current callback returns, and what `lose_connection`,
//! `abort_connection` and `register_producer` cause (`connection_lost`, a pull producer's
//! first `resume_producing`) runs through the reactor's
//! [`call_soon`](crate::Reactor::call_soon) queue. One exception, as in Twisted: a `write`
//! that takes the buffer over the high-water mark calls the registered streaming producer's
//! `pause_producing` at once, so a producer writing in a loop sees it before its next write
//! (keep no borrow of the producer's own state across a `write`). The in-memory doubles in
//! [`testing`](crate::testing) follow the same rules.

mod adopt;
mod connection;
mod connector;
mod interfaces;
pub(crate) mod pipe;
mod port;
pub(crate) mod read_buffer;
pub(crate) mod stream;
pub mod systemd;
pub mod tcp;
pub mod udp;
pub mod unix;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;

use crate::defer::Failure;

pub use connector::{Connector, ConnectorState};
pub use interfaces::{ConnectorOps, ListeningPort, ReactorTcp, ReactorUdp, ReactorUnix};
pub use port::Port;

/// The address of one end of a connection (Twisted's `IPv4Address`, `IPv6Address`,
/// `UNIXAddress`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A TCP endpoint.
    Tcp(SocketAddr),
    /// A UDP endpoint.
    Udp(SocketAddr),
    /// A UNIX socket path (`None` for an unnamed socket).
    Unix(Option<PathBuf>),
    /// The process's standard input and output, or another pair of pipes (Twisted's
    /// `PipeAddress`).
    Pipe,
}

impl Address {
    /// The socket address, for TCP and UDP.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Address::Tcp(a) | Address::Udp(a) => Some(*a),
            Address::Unix(_) | Address::Pipe => None,
        }
    }

    /// The port, for TCP and UDP.
    pub fn port(&self) -> Option<u16> {
        self.socket_addr().map(|a| a.port())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "tcp:{a}"),
            Address::Udp(a) => write!(f, "udp:{a}"),
            Address::Unix(Some(p)) => write!(f, "unix:{}", p.display()),
            Address::Unix(None) => f.write_str("unix:<unnamed>"),
            Address::Pipe => f.write_str("stdio"),
        }
    }
}

/// The shared handle to a connection's transport, as protocols keep it (Twisted's
/// `self.transport`).
pub type Transport = Rc<dyn TransportOps>;

/// What a transport offers a protocol (Twisted's `ITransport`, `ITCPTransport`,
/// `IConsumer` and, for flow control, `IPushProducer`).
pub trait TransportOps {
    /// Queues `data` to be sent, in order, without blocking (Twisted's `write`). A write
    /// after the connection closed (or after `lose_write_connection`) is dropped.
    fn write(&self, data: &[u8]);

    /// Queues several buffers, sent as one vectored write where possible (Twisted's
    /// `writeSequence`).
    fn write_sequence(&self, data: &[&[u8]]) {
        for chunk in data {
            self.write(chunk);
        }
    }

    /// Closes the connection once the queued data is sent and any registered producer has
    /// unregistered (Twisted's `loseConnection`). Reading stops at once.
    fn lose_connection(&self);

    /// Closes the connection now, dropping unsent data, with a reset (Twisted's
    /// `abortConnection`); `connection_lost` gets
    /// [`ConnectionAborted`](crate::error::ConnectionAborted) on the next turn of the loop.
    fn abort_connection(&self);

    /// Closes the sending side once the queued data is sent (Twisted's
    /// `loseWriteConnection`); the peer sees end of input, and we can still read.
    fn lose_write_connection(&self);

    /// The other end's address (Twisted's `getPeer`).
    fn peer(&self) -> Address;

    /// Our end's address (Twisted's `getHost`).
    fn host(&self) -> Address;

    /// Stops reading from the connection until `resume_producing` (Twisted's
    /// `pauseProducing` on a transport): the peer is slowed down by TCP flow control.
    fn pause_producing(&self);

    /// Starts reading again (Twisted's `resumeProducing`).
    fn resume_producing(&self);

    /// Closes the connection, as a producer asked to stop (Twisted's `stopProducing`).
    fn stop_producing(&self) {
        self.lose_connection();
    }

    /// Registers the producer that writes to this transport (Twisted's
    /// `registerProducer`). A streaming (push) producer is paused when the send buffer goes
    /// over the high-water mark and resumed once it drains below the low-water mark; a
    /// pull producer is asked for more (resumed) each time the buffer empties, and once at
    /// once.
    ///
    /// # Errors
    ///
    /// [`ProducerAlreadyRegistered`](crate::error::ProducerAlreadyRegistered) if one is
    /// registered. On a closed transport the producer is stopped at once and `Ok` returned.
    fn register_producer(&self, producer: Rc<dyn Producer>, streaming: bool)
    -> Result<(), Failure>;

    /// Unregisters the producer (Twisted's `unregisterProducer`); a pending
    /// `lose_connection` then proceeds.
    fn unregister_producer(&self);

    /// Stops reading while this transport's own output is backed up (over the high-water
    /// mark) and reads again once it drains below the low-water mark (`on = true`), so a
    /// protocol whose output grows with its input (an echo) holds bounded memory against a
    /// peer that sends and never reads. Twisted spells it
    /// `transport.registerProducer(transport, True)`. Off by default; transports without a
    /// send buffer ignore it.
    fn throttle_reading(&self, on: bool) {
        let _ = on;
    }

    /// How many bytes are queued and not yet sent.
    fn buffered(&self) -> usize;

    /// Whether the connection is open (not yet lost).
    fn is_connected(&self) -> bool;

    /// Turns Nagle's algorithm off (`true`) or on (Twisted's `setTcpNoDelay`). Off by
    /// default, as in Twisted.
    ///
    /// # Errors
    ///
    /// The socket refused, or the transport is not TCP (`Unsupported`).
    fn set_tcp_nodelay(&self, enabled: bool) -> std::io::Result<()> {
        let _ = enabled;
        Err(std::io::ErrorKind::Unsupported.into())
    }

    /// Turns TCP keep-alive on or off (Twisted's `setTcpKeepAlive`).
    ///
    /// # Errors
    ///
    /// As for [`set_tcp_nodelay`](TransportOps::set_tcp_nodelay).
    fn set_tcp_keepalive(&self, enabled: bool) -> std::io::Result<()> {
        let _ = enabled;
        Err(std::io::ErrorKind::Unsupported.into())
    }

    /// Starts TLS on this connection (Twisted's `ITLSTransport.startTLS`, STARTTLS): what
    /// was written before the call is sent in the clear, what is written after it waits for
    /// the handshake and is encrypted; [`StartTls::with_received`](crate::tls::StartTls::with_received)
    /// hands over bytes already received that belong to the TLS stream. The protocol's
    /// [`handshake_completed`](crate::protocol::Protocol::handshake_completed) follows.
    ///
    /// # Errors
    ///
    /// A [`TlsError`](crate::tls::TlsError) of kind
    /// [`CannotStart`](crate::tls::TlsErrorKind::CannotStart): the transport cannot carry
    /// TLS (only TCP and UNIX connections can), TLS was started already, or the server name
    /// is not valid. A connection that could start it but failed is then closed with the
    /// same reason.
    fn start_tls(&self, tls: crate::tls::StartTls) -> Result<(), Failure> {
        let _ = tls;
        Err(crate::tls::TlsError::cannot_start("this transport cannot carry TLS").into())
    }

    /// What TLS negotiated on this connection (Twisted's `ISSLTransport`): `None` if TLS
    /// was not started.
    fn tls_info(&self) -> Option<crate::tls::TlsInfo> {
        None
    }

    /// The pid, uid and gid of the process at the other end of a UNIX socket
    /// (`SO_PEERCRED`); `None` for other transports.
    fn peer_credentials(&self) -> Option<unix::PeerCredentials> {
        None
    }
}

/// Something that writes to a consumer (a transport) and can be told to slow down (Twisted's
/// `IPushProducer` and `IPullProducer`).
pub trait Producer {
    /// Produce more: a paused push producer restarts; a pull producer writes its next
    /// chunk (Twisted's `resumeProducing`).
    fn resume_producing(&self);

    /// Stop producing for now: the consumer's buffer is full (Twisted's `pauseProducing`;
    /// push producers only).
    fn pause_producing(&self) {}

    /// Stop for good: the consumer is going away (Twisted's `stopProducing`).
    fn stop_producing(&self);
}

/// A transport seen as the producer of the bytes it reads (Twisted passes `transport`
/// itself to `registerProducer`): pausing it stops reading from its connection, resuming
/// reads again, stopping closes it. A proxy registers each side as the other's streaming
/// producer with it (see [`portforward`](crate::protocols::portforward)).
#[derive(Clone)]
pub struct TransportProducer(pub Transport);

impl Producer for TransportProducer {
    fn resume_producing(&self) {
        self.0.resume_producing();
    }

    fn pause_producing(&self) {
        self.0.pause_producing();
    }

    fn stop_producing(&self) {
        self.0.stop_producing();
    }
}

/// `transport` as a [`Producer`], to register with another transport: a
/// [`TransportProducer`].
pub fn as_producer(transport: &Transport) -> Rc<dyn Producer> {
    Rc::new(TransportProducer(transport.clone()))
}
