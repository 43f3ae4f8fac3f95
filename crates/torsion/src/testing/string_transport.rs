//! Transports that record what a protocol does instead of sending it (Twisted's
//! `twisted.internet.testing.StringTransport` and `StringTransportWithDisconnection`).
//!
//! A test hands a [`StringTransport`] to a protocol's `connection_made`, feeds it bytes with
//! `data_received`, and looks at what it wrote with [`value`](StringTransport::value), whether
//! it asked to disconnect with [`disconnecting`](StringTransport::disconnecting), and which
//! producer it registered.
//!
//! Invariant: a `StringTransport` never calls into anything; only
//! [`StringTransportWithDisconnection::lose_connection`] calls its protocol, and only while
//! that protocol is not running (see there).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;

use crate::defer::Failure;
use crate::error::{ConnectionDone, ProducerAlreadyRegistered};
use crate::net::{Address, Producer, Transport, TransportOps};
use crate::protocol::Protocol;

/// The host address a [`StringTransport`] reports by default: `10.0.0.1:12345`, as
/// Twisted's `StringTransport`.
pub fn default_host_address() -> Address {
    Address::Tcp(SocketAddr::from(([10, 0, 0, 1], 12345)))
}

/// The peer address a [`StringTransport`] reports by default: `192.168.1.1:54321`, as
/// Twisted's `StringTransport`.
pub fn default_peer_address() -> Address {
    Address::Tcp(SocketAddr::from(([192, 168, 1, 1], 54321)))
}

/// What was last asked of a transport acting as a producer (Twisted's `StringTransport`
/// attribute `producerState`: `"producing"`, `"paused"`, `"stopped"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProducerState {
    /// Producing: the initial state, and after `resume_producing`.
    #[default]
    Producing,
    /// After `pause_producing`.
    Paused,
    /// After `stop_producing`; it cannot be paused or resumed any more.
    Stopped,
}

#[derive(Default)]
struct State {
    written: Vec<u8>,
    disconnecting: bool,
    aborted: bool,
    write_disconnected: bool,
    producer: Option<Rc<dyn Producer>>,
    streaming: bool,
    producer_state: ProducerState,
    tcp_nodelay: bool,
    tcp_keepalive: bool,
}

/// A transport that records everything written to it (Twisted's `StringTransport`).
///
/// It sends nothing and never calls the protocol: `lose_connection` only sets
/// [`disconnecting`](StringTransport::disconnecting), and `connection_lost` is for the test to
/// deliver (or use [`StringTransportWithDisconnection`]). Writes are recorded even after
/// `lose_connection`, as in Twisted.
///
/// # Panics
///
/// [`pause_producing`](TransportOps::pause_producing) and
/// [`resume_producing`](TransportOps::resume_producing) panic after `lose_connection` or
/// `stop_producing` (Twisted raises `RuntimeError`): a protocol that pauses a closing
/// transport has a bug the test should see.
///
/// # Examples
///
/// ```
/// use torsion::net::{Transport, TransportOps};
/// use torsion::protocol::Protocol;
/// use torsion::testing::StringTransport;
///
/// /// Says hello, then hangs up.
/// struct Greeter;
///
/// impl Protocol for Greeter {
///     fn connection_made(&mut self, transport: Transport) {
///         transport.write(b"hello, ");
///         transport.write_sequence(&[b"world", b"\r\n"]);
///         transport.lose_connection();
///     }
/// }
///
/// let transport = StringTransport::new();
/// Greeter.connection_made(transport.clone());
/// assert_eq!(transport.value(), b"hello, world\r\n");
/// assert!(transport.disconnecting());
/// assert_eq!(transport.peer().to_string(), "tcp:192.168.1.1:54321");
/// ```
pub struct StringTransport {
    host: Address,
    peer: Address,
    state: RefCell<State>,
}

impl StringTransport {
    /// A transport with host `10.0.0.1:12345` and peer `192.168.1.1:54321` (Twisted's
    /// `StringTransport()`).
    ///
    /// It comes as an `Rc`, so a clone can be handed to the protocol as its
    /// [`Transport`] while the test keeps typed access.
    pub fn new() -> Rc<StringTransport> {
        Rc::new(StringTransport::unshared(
            default_host_address(),
            default_peer_address(),
        ))
    }

    /// A transport reporting the given addresses (Twisted's
    /// `StringTransport(hostAddress, peerAddress)`).
    pub fn with_addresses(host: Address, peer: Address) -> Rc<StringTransport> {
        Rc::new(StringTransport::unshared(host, peer))
    }

    fn unshared(host: Address, peer: Address) -> StringTransport {
        StringTransport {
            host,
            peer,
            state: RefCell::new(State::default()),
        }
    }

    /// Everything written so far (Twisted's `value()`).
    pub fn value(&self) -> Vec<u8> {
        self.state.borrow().written.clone()
    }

    /// Forgets what was written so far (Twisted's `clear()`).
    pub fn clear(&self) {
        self.state.borrow_mut().written.clear();
    }

    /// Takes what was written so far, leaving the record empty (`value()` then `clear()`).
    pub fn take_value(&self) -> Vec<u8> {
        std::mem::take(&mut self.state.borrow_mut().written)
    }

    /// Whether `lose_connection` (or `abort_connection`) was called (Twisted's
    /// `disconnecting`).
    pub fn disconnecting(&self) -> bool {
        self.state.borrow().disconnecting
    }

    /// Whether `abort_connection` was called (Twisted's `aborted`).
    pub fn aborted(&self) -> bool {
        self.state.borrow().aborted
    }

    /// Whether `lose_write_connection` was called.
    pub fn write_disconnected(&self) -> bool {
        self.state.borrow().write_disconnected
    }

    /// The registered producer, if any (Twisted's `producer`).
    pub fn producer(&self) -> Option<Rc<dyn Producer>> {
        self.state.borrow().producer.clone()
    }

    /// Whether the registered producer is a streaming (push) producer (Twisted's
    /// `streaming`); `false` when none is registered.
    pub fn streaming(&self) -> bool {
        let st = self.state.borrow();
        st.producer.is_some() && st.streaming
    }

    /// What was last asked of the transport as a producer (Twisted's `producerState`).
    pub fn producer_state(&self) -> ProducerState {
        self.state.borrow().producer_state
    }

    /// The last value given to `set_tcp_nodelay` (`false` until then).
    pub fn tcp_nodelay(&self) -> bool {
        self.state.borrow().tcp_nodelay
    }

    /// The last value given to `set_tcp_keepalive` (`false` until then).
    pub fn tcp_keepalive(&self) -> bool {
        self.state.borrow().tcp_keepalive
    }

    /// Twisted's `_checkState`: pausing or resuming is an error once the transport is
    /// disconnecting or stopped.
    #[track_caller]
    fn check_producing(&self, what: &str) {
        let st = self.state.borrow();
        if st.disconnecting {
            drop(st);
            panic!(
                "StringTransport::{what}: cannot pause or resume producing after lose_connection"
            );
        }
        if st.producer_state == ProducerState::Stopped {
            drop(st);
            panic!("StringTransport::{what}: cannot pause or resume a stopped producer");
        }
    }
}

impl TransportOps for StringTransport {
    /// Records `data` (even after `lose_connection`, as Twisted does).
    fn write(&self, data: &[u8]) {
        self.state.borrow_mut().written.extend_from_slice(data);
    }

    /// Sets [`disconnecting`](StringTransport::disconnecting); nothing else happens.
    fn lose_connection(&self) {
        self.state.borrow_mut().disconnecting = true;
    }

    /// Sets [`aborted`](StringTransport::aborted) and
    /// [`disconnecting`](StringTransport::disconnecting) (Twisted's `abortConnection`).
    fn abort_connection(&self) {
        let mut st = self.state.borrow_mut();
        st.aborted = true;
        st.disconnecting = true;
    }

    /// Sets [`write_disconnected`](StringTransport::write_disconnected).
    fn lose_write_connection(&self) {
        self.state.borrow_mut().write_disconnected = true;
    }

    fn peer(&self) -> Address {
        self.peer.clone()
    }

    fn host(&self) -> Address {
        self.host.clone()
    }

    /// Sets the producer state to [`ProducerState::Paused`].
    ///
    /// # Panics
    ///
    /// After `lose_connection` or `stop_producing` (Twisted raises `RuntimeError`).
    #[track_caller]
    fn pause_producing(&self) {
        self.check_producing("pause_producing");
        self.state.borrow_mut().producer_state = ProducerState::Paused;
    }

    /// Sets the producer state to [`ProducerState::Producing`].
    ///
    /// # Panics
    ///
    /// After `lose_connection` or `stop_producing` (Twisted raises `RuntimeError`).
    #[track_caller]
    fn resume_producing(&self) {
        self.check_producing("resume_producing");
        self.state.borrow_mut().producer_state = ProducerState::Producing;
    }

    /// Sets the producer state to [`ProducerState::Stopped`] (and does not disconnect).
    fn stop_producing(&self) {
        self.state.borrow_mut().producer_state = ProducerState::Stopped;
    }

    /// Records the producer; it is not resumed or stopped, whatever the transport's state.
    ///
    /// # Errors
    ///
    /// [`ProducerAlreadyRegistered`] if one is registered (Twisted raises `RuntimeError`).
    fn register_producer(
        &self,
        producer: Rc<dyn Producer>,
        streaming: bool,
    ) -> Result<(), Failure> {
        let mut st = self.state.borrow_mut();
        if st.producer.is_some() {
            return Err(ProducerAlreadyRegistered.into());
        }
        st.producer = Some(producer);
        st.streaming = streaming;
        Ok(())
    }

    /// Forgets the producer. Unlike Twisted's, unregistering when none is registered is
    /// allowed, as on real transports.
    fn unregister_producer(&self) {
        let mut st = self.state.borrow_mut();
        st.producer = None;
        st.streaming = false;
    }

    /// Always 0: everything written is recorded at once, nothing waits to be sent.
    fn buffered(&self) -> usize {
        0
    }

    /// True until `lose_connection` or `abort_connection`.
    fn is_connected(&self) -> bool {
        !self.state.borrow().disconnecting
    }

    /// Records the value (see [`tcp_nodelay`](StringTransport::tcp_nodelay)).
    fn set_tcp_nodelay(&self, enabled: bool) -> std::io::Result<()> {
        self.state.borrow_mut().tcp_nodelay = enabled;
        Ok(())
    }

    /// Records the value (see [`tcp_keepalive`](StringTransport::tcp_keepalive)).
    fn set_tcp_keepalive(&self, enabled: bool) -> std::io::Result<()> {
        self.state.borrow_mut().tcp_keepalive = enabled;
        Ok(())
    }
}

impl fmt::Debug for StringTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.borrow();
        f.debug_struct("StringTransport")
            .field("host", &self.host)
            .field("peer", &self.peer)
            .field("written", &st.written.len())
            .field("disconnecting", &st.disconnecting)
            .field("aborted", &st.aborted)
            .field("producer_state", &st.producer_state)
            .finish_non_exhaustive()
    }
}

/// A [`StringTransport`] whose `lose_connection` tells its protocol
/// `connection_lost(ConnectionDone)` (Twisted's `StringTransportWithDisconnection`).
///
/// The protocol is shared as `Rc<RefCell<P>>` (so the test keeps typed access to it) and
/// attached with [`make_connection`](StringTransportWithDisconnection::make_connection) or
/// [`set_protocol`](StringTransportWithDisconnection::set_protocol). It derefs to
/// [`StringTransport`] for `value()`, `disconnecting()` and the rest.
///
/// # When `connection_lost` runs
///
/// Twisted calls `connectionLost` synchronously from `loseConnection`. This transport does
/// too when the protocol is not running (the test called `lose_connection`): that is not
/// re-entrant. When the protocol itself calls `lose_connection` from one of its methods, its
/// `RefCell` is borrowed, and calling it again would be re-entrant: the loss is then kept
/// and delivered as soon as the protocol returns, if the test drives the protocol through
/// [`receive`](StringTransportWithDisconnection::receive) or
/// [`make_connection`](StringTransportWithDisconnection::make_connection), or by
/// [`deliver_pending_loss`](StringTransportWithDisconnection::deliver_pending_loss) if the
/// test called the protocol directly. `connection_lost` runs once; the transport then lets
/// go of the protocol, which breaks the protocol → transport → protocol cycle.
///
/// # Examples
///
/// ```
/// use std::cell::RefCell;
/// use std::rc::Rc;
/// use torsion::net::Transport;
/// use torsion::protocol::Protocol;
/// use torsion::testing::{AccumulatingProtocol, StringTransportWithDisconnection};
///
/// let protocol = AccumulatingProtocol::new();
/// let state = protocol.state();
/// let transport = StringTransportWithDisconnection::new();
/// transport.make_connection(Rc::new(RefCell::new(protocol)));
/// transport.receive(b"hello");
/// assert_eq!(state.data(), b"hello");
///
/// let t: Transport = transport.clone();
/// t.lose_connection();
/// assert!(state.closed());
/// ```
pub struct StringTransportWithDisconnection {
    inner: StringTransport,
    me: std::rc::Weak<StringTransportWithDisconnection>,
    protocol: RefCell<Option<Rc<RefCell<dyn Protocol>>>>,
    connected: Cell<bool>,
    pending_loss: Cell<bool>,
}

impl StringTransportWithDisconnection {
    /// A transport with the default addresses and no protocol yet.
    pub fn new() -> Rc<StringTransportWithDisconnection> {
        StringTransportWithDisconnection::with_addresses(
            default_host_address(),
            default_peer_address(),
        )
    }

    /// A transport reporting the given addresses.
    pub fn with_addresses(host: Address, peer: Address) -> Rc<StringTransportWithDisconnection> {
        Rc::new_cyclic(|me| StringTransportWithDisconnection {
            inner: StringTransport::unshared(host, peer),
            me: me.clone(),
            protocol: RefCell::new(None),
            connected: Cell::new(true),
            pending_loss: Cell::new(false),
        })
    }

    /// Attaches the protocol that `lose_connection` tells (Twisted's `transport.protocol =
    /// protocol`), without calling it.
    pub fn set_protocol(&self, protocol: Rc<RefCell<dyn Protocol>>) {
        *self.protocol.borrow_mut() = Some(protocol);
    }

    /// Attaches `protocol` and calls its `connection_made` with this transport (Twisted's
    /// `protocol.makeConnection(transport)`).
    pub fn make_connection(&self, protocol: Rc<RefCell<dyn Protocol>>) {
        self.set_protocol(protocol.clone());
        if let Some(me) = self.me.upgrade() {
            let transport: Transport = me;
            protocol.borrow_mut().connection_made(transport);
        }
        self.deliver_pending_loss();
    }

    /// Delivers `data` to the attached protocol's `data_received`, as if the peer had sent
    /// it; a `lose_connection` it called meanwhile is delivered when it returns. Does
    /// nothing once the connection is lost.
    ///
    /// # Panics
    ///
    /// If no protocol is attached, or the protocol is already borrowed.
    pub fn receive(&self, data: &[u8]) {
        if !self.connected.get() && !self.pending_loss.get() {
            return;
        }
        let protocol = self
            .protocol
            .borrow()
            .clone()
            .expect("StringTransportWithDisconnection::receive: no protocol attached");
        if !self.pending_loss.get() {
            protocol.borrow_mut().data_received(data);
        }
        drop(protocol);
        self.deliver_pending_loss();
    }

    /// Delivers `connection_lost(ConnectionDone)` if the protocol called `lose_connection`
    /// while it was running and it has not been delivered yet.
    pub fn deliver_pending_loss(&self) {
        if !self.pending_loss.get() {
            return;
        }
        let protocol = self.protocol.borrow().clone();
        if let Some(protocol) = protocol
            && let Ok(mut p) = protocol.try_borrow_mut()
        {
            self.pending_loss.set(false);
            *self.protocol.borrow_mut() = None;
            p.connection_lost(Failure::new(ConnectionDone));
        }
    }

    /// Whether the connection is still up (Twisted's `connected`): false once
    /// `lose_connection` was called.
    pub fn connected(&self) -> bool {
        self.connected.get()
    }

    /// The attached protocol, until its `connection_lost` was delivered.
    pub fn protocol(&self) -> Option<Rc<RefCell<dyn Protocol>>> {
        self.protocol.borrow().clone()
    }
}

impl std::ops::Deref for StringTransportWithDisconnection {
    type Target = StringTransport;

    fn deref(&self) -> &StringTransport {
        &self.inner
    }
}

impl TransportOps for StringTransportWithDisconnection {
    fn write(&self, data: &[u8]) {
        self.inner.write(data);
    }

    /// Sets `disconnecting`, and the first time tells the protocol
    /// `connection_lost(ConnectionDone)`: at once if it is not running, else when it returns
    /// (see the type's docs).
    fn lose_connection(&self) {
        self.inner.lose_connection();
        if !self.connected.replace(false) {
            return;
        }
        self.pending_loss.set(true);
        self.deliver_pending_loss();
    }

    /// As `lose_connection`, also setting `aborted`; the protocol still gets
    /// `ConnectionDone`, as in Twisted.
    fn abort_connection(&self) {
        self.inner.abort_connection();
        self.lose_connection();
    }

    fn lose_write_connection(&self) {
        self.inner.lose_write_connection();
    }

    fn peer(&self) -> Address {
        self.inner.peer()
    }

    fn host(&self) -> Address {
        self.inner.host()
    }

    /// As [`StringTransport`]'s.
    ///
    /// # Panics
    ///
    /// After `lose_connection` or `stop_producing`.
    #[track_caller]
    fn pause_producing(&self) {
        self.inner.pause_producing();
    }

    /// As [`StringTransport`]'s.
    ///
    /// # Panics
    ///
    /// After `lose_connection` or `stop_producing`.
    #[track_caller]
    fn resume_producing(&self) {
        self.inner.resume_producing();
    }

    fn stop_producing(&self) {
        self.inner.stop_producing();
    }

    fn register_producer(
        &self,
        producer: Rc<dyn Producer>,
        streaming: bool,
    ) -> Result<(), Failure> {
        self.inner.register_producer(producer, streaming)
    }

    fn unregister_producer(&self) {
        self.inner.unregister_producer();
    }

    fn buffered(&self) -> usize {
        0
    }

    fn is_connected(&self) -> bool {
        self.connected.get()
    }

    fn set_tcp_nodelay(&self, enabled: bool) -> std::io::Result<()> {
        self.inner.set_tcp_nodelay(enabled)
    }

    fn set_tcp_keepalive(&self, enabled: bool) -> std::io::Result<()> {
        self.inner.set_tcp_keepalive(enabled)
    }
}

impl fmt::Debug for StringTransportWithDisconnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StringTransportWithDisconnection")
            .field("inner", &self.inner)
            .field("connected", &self.connected.get())
            .finish_non_exhaustive()
    }
}
