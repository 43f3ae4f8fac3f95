//! Resource-limiting policies (Twisted's `twisted.protocols.policies`): protocol and factory
//! wrappers that watch or limit connections without changing the protocols they wrap.
//!
//! | torsion | Twisted |
//! | --- | --- |
//! | [`WrappingFactory`], [`ProtocolWrapper`], [`WrappingTransport`], [`WrapperHooks`] | `WrappingFactory`, `ProtocolWrapper` (and the methods its subclasses override) |
//! | [`ThrottlingFactory`], [`ThrottleLimits`] | `ThrottlingFactory`, `ThrottlingProtocol` |
//! | [`LimitTotalConnectionsFactory`] | `LimitTotalConnectionsFactory` |
//! | [`TimeoutFactory`] | `TimeoutFactory`, `TimeoutProtocol` |
//! | [`Timeout`] | `TimeoutMixin` |
//!
//! A Twisted policy subclasses `ProtocolWrapper`, which stands between the connection and
//! the wrapped protocol: it is the connection's protocol and the wrapped protocol's
//! transport, so it sees every event and every write. Here the wrapper is split along that
//! line: a [`ProtocolWrapper`] is the connection's protocol, and hands the wrapped protocol
//! a [`WrappingTransport`] instead of the real transport. What a subclass overrides is a
//! [`WrapperHooks`] implementation, called by both halves: a policy is a hooks type, not a
//! new wrapper.
//!
//! Two things go further than Twisted. A wrapping transport keeps track of who paused
//! reading: a policy throttling reads and the wrapped protocol pausing itself do not undo
//! each other's pause. Likewise a producer registered through it is paused while either its
//! transport's buffer is full or a policy throttles writes, and resumed only when neither
//! holds.
//!
//! Invariant: no `RefCell` borrow is held while user code runs (a wrapped protocol, a
//! producer, a timeout callback); the list of connections is copied before a policy walks
//! it.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::defer::Failure;
use crate::error::ConnectionDone;
use crate::net::{Address, Producer, Transport, TransportOps};
use crate::protocol::{ClientFactory, Factory, Protocol};
use crate::time::{DelayedCall, ReactorTime};

// ===== wrapping =====

/// What a policy does at each point where a [`ProtocolWrapper`] passes an event on (the
/// methods Twisted's `ProtocolWrapper` subclasses override).
///
/// The protocol-side methods run before the wrapped protocol's; the transport-side methods
/// (`write`, `write_sequence`, `lose_connection`) run when the wrapped protocol calls its
/// [`WrappingTransport`] and by default pass the call on to the real transport: a policy
/// that overrides them decides what reaches it. Every method has a default; `()` is the
/// policy that does nothing.
///
/// Methods take `&self`: a policy keeps its state in `Cell`s and `RefCell`s, and must not
/// hold a borrow across a call into the transport it is given.
pub trait WrapperHooks: 'static {
    /// The connection is made and registered with its factory; the wrapped protocol's
    /// `connection_made` follows (Twisted's `makeConnection`).
    fn connection_made(&self, transport: &Rc<WrappingTransport>) {
        let _ = transport;
    }

    /// Bytes arrived; the wrapped protocol's `data_received` follows.
    fn data_received(&self, transport: &Rc<WrappingTransport>, data: &[u8]) {
        let _ = (transport, data);
    }

    /// The connection is lost and unregistered from its factory; the wrapped protocol's
    /// `connection_lost` follows (Twisted's `connectionLost` and `unregisterProtocol`).
    ///
    /// Called exactly once for every wrapper built: a wrapper dropped without its
    /// connection being lost (built but never connected) calls it from its `Drop` with
    /// [`ConnectionDone`], so counts kept here stay right.
    fn connection_lost(&self, reason: &Failure) {
        let _ = reason;
    }

    /// The wrapped protocol writes `data`; the default passes it to `transport`, the real
    /// transport (Twisted's `ProtocolWrapper.write`).
    fn write(&self, transport: &Transport, data: &[u8]) {
        transport.write(data);
    }

    /// The wrapped protocol writes several buffers; the default passes them on (Twisted's
    /// `ProtocolWrapper.writeSequence`).
    fn write_sequence(&self, transport: &Transport, data: &[&[u8]]) {
        transport.write_sequence(data);
    }

    /// The wrapped protocol (or a policy) closes the connection; the default passes it on
    /// (Twisted's `ProtocolWrapper.loseConnection`).
    fn lose_connection(&self, transport: &Transport) {
        transport.lose_connection();
    }
}

/// The policy that does nothing: every event and call passes straight through.
impl WrapperHooks for () {}

/// The live connections of a wrapping factory (Twisted's `WrappingFactory.protocols`).
#[derive(Default)]
struct Registry {
    next_id: Cell<u64>,
    live: RefCell<BTreeMap<u64, Weak<WrappingTransport>>>,
}

impl Registry {
    fn allocate(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    fn transports(&self) -> Vec<Rc<WrappingTransport>> {
        self.live
            .borrow()
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }

    fn len(&self) -> usize {
        self.live.borrow().len()
    }
}

/// Who wants reading paused on a [`WrappingTransport`].
#[derive(Default, Clone, Copy)]
struct ReadPause {
    /// The wrapped protocol (or whoever uses the wrapping transport as a producer).
    by_protocol: bool,
    /// A policy ([`WrappingTransport::throttle_reads`]).
    throttled: bool,
}

impl ReadPause {
    fn paused(self) -> bool {
        self.by_protocol || self.throttled
    }
}

/// The transport a wrapped protocol gets: it passes every call on to the real transport,
/// through the policy's [`WrapperHooks`] for writes and closes (the transport half of
/// Twisted's `ProtocolWrapper`).
///
/// It also lets a policy pause reading ([`throttle_reads`](Self::throttle_reads)) and the
/// registered producer ([`throttle_writes`](Self::throttle_writes)) without undoing a
/// pause that the wrapped protocol, or the transport's flow control, asked for.
pub struct WrappingTransport {
    transport: Transport,
    hooks: Rc<dyn WrapperHooks>,
    reads: Cell<ReadPause>,
    writes_throttled: Cell<bool>,
    producer: RefCell<Option<Rc<GatedProducer>>>,
    disconnecting: Cell<bool>,
}

impl WrappingTransport {
    fn new(transport: Transport, hooks: Rc<dyn WrapperHooks>) -> WrappingTransport {
        WrappingTransport {
            transport,
            hooks,
            reads: Cell::new(ReadPause::default()),
            writes_throttled: Cell::new(false),
            producer: RefCell::new(None),
            disconnecting: Cell::new(false),
        }
    }

    /// The real transport, the connection's own (Twisted's `ProtocolWrapper.transport`).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The producer the wrapped protocol registered, if any.
    pub fn producer(&self) -> Option<Rc<dyn Producer>> {
        self.producer
            .borrow()
            .as_ref()
            .map(|gate| gate.inner.clone())
    }

    /// Whether the registered producer is a streaming (push) producer; `false` when none is.
    pub fn streaming(&self) -> bool {
        self.producer.borrow().as_ref().is_some_and(|g| g.streaming)
    }

    /// Whether `lose_connection` was called through this transport (Twisted's
    /// `disconnecting`).
    pub fn disconnecting(&self) -> bool {
        self.disconnecting.get()
    }

    /// Whether reading is paused, by the wrapped protocol or by a policy.
    pub fn is_paused(&self) -> bool {
        self.reads.get().paused()
    }

    /// Whether a policy throttles reading.
    pub fn reads_throttled(&self) -> bool {
        self.reads.get().throttled
    }

    /// Whether a policy throttles writing.
    pub fn writes_throttled(&self) -> bool {
        self.writes_throttled.get()
    }

    /// Stops reading from the connection for a policy (Twisted's
    /// `ThrottlingProtocol.throttleReads`), until
    /// [`unthrottle_reads`](Self::unthrottle_reads).
    pub fn throttle_reads(&self) {
        self.set_reads(|r| r.throttled = true);
    }

    /// Lifts [`throttle_reads`](Self::throttle_reads); reading restarts unless the wrapped
    /// protocol paused it (Twisted's `unthrottleReads`).
    pub fn unthrottle_reads(&self) {
        self.set_reads(|r| r.throttled = false);
    }

    /// Pauses the registered producer for a policy (Twisted's `throttleWrites`), until
    /// [`unthrottle_writes`](Self::unthrottle_writes). A producer registered later starts
    /// paused. Without a producer, writes cannot be slowed down, as in Twisted: the wrapped
    /// protocol writes when it wants.
    ///
    /// A pull producer is not asked for more while writes are throttled; a request the
    /// transport makes meanwhile is passed on when they are lifted.
    pub fn throttle_writes(&self) {
        if self.writes_throttled.replace(true) {
            return;
        }
        let gate = self.producer.borrow().clone();
        if let Some(gate) = gate {
            gate.throttle();
        }
    }

    /// Lifts [`throttle_writes`](Self::throttle_writes): the producer is resumed unless its
    /// transport's buffer is still full (Twisted's `unthrottleWrites`).
    pub fn unthrottle_writes(&self) {
        if !self.writes_throttled.replace(false) {
            return;
        }
        let gate = self.producer.borrow().clone();
        if let Some(gate) = gate {
            gate.unthrottle();
        }
    }

    fn set_reads(&self, change: impl FnOnce(&mut ReadPause)) {
        let before = self.reads.get();
        let mut after = before;
        change(&mut after);
        self.reads.set(after);
        if before.paused() == after.paused() || !self.transport.is_connected() {
            return;
        }
        if after.paused() {
            self.transport.pause_producing();
        } else {
            self.transport.resume_producing();
        }
    }
}

impl TransportOps for WrappingTransport {
    fn write(&self, data: &[u8]) {
        self.hooks.write(&self.transport, data);
    }

    fn write_sequence(&self, data: &[&[u8]]) {
        self.hooks.write_sequence(&self.transport, data);
    }

    fn lose_connection(&self) {
        self.disconnecting.set(true);
        self.hooks.lose_connection(&self.transport);
    }

    fn abort_connection(&self) {
        self.disconnecting.set(true);
        self.transport.abort_connection();
    }

    fn lose_write_connection(&self) {
        self.transport.lose_write_connection();
    }

    fn peer(&self) -> Address {
        self.transport.peer()
    }

    fn host(&self) -> Address {
        self.transport.host()
    }

    fn pause_producing(&self) {
        self.set_reads(|r| r.by_protocol = true);
    }

    fn resume_producing(&self) {
        self.set_reads(|r| r.by_protocol = false);
    }

    fn stop_producing(&self) {
        self.transport.stop_producing();
    }

    fn register_producer(
        &self,
        producer: Rc<dyn Producer>,
        streaming: bool,
    ) -> Result<(), Failure> {
        if self.producer.borrow().is_some() {
            return Err(crate::error::ProducerAlreadyRegistered.into());
        }
        let gate = Rc::new(GatedProducer {
            inner: producer,
            streaming,
            transport_paused: Cell::new(false),
            throttled: Cell::new(false),
            pull_wanted: Cell::new(false),
        });
        if self.writes_throttled.get() {
            // Registered while writes are throttled: it starts paused.
            gate.throttle();
        }
        // Recorded first: the transport may call the producer (which may unregister)
        // before it returns.
        *self.producer.borrow_mut() = Some(gate.clone());
        let registered = self.transport.register_producer(gate.clone(), streaming);
        if registered.is_err() {
            let mut slot = self.producer.borrow_mut();
            if slot.as_ref().is_some_and(|g| Rc::ptr_eq(g, &gate)) {
                *slot = None;
            }
            return registered;
        }
        Ok(())
    }

    fn unregister_producer(&self) {
        let gate = self.producer.borrow_mut().take();
        drop(gate);
        self.transport.unregister_producer();
    }

    fn buffered(&self) -> usize {
        self.transport.buffered()
    }

    fn is_connected(&self) -> bool {
        self.transport.is_connected()
    }

    fn set_tcp_nodelay(&self, enabled: bool) -> std::io::Result<()> {
        self.transport.set_tcp_nodelay(enabled)
    }

    fn set_tcp_keepalive(&self, enabled: bool) -> std::io::Result<()> {
        self.transport.set_tcp_keepalive(enabled)
    }

    fn peer_credentials(&self) -> Option<crate::net::unix::PeerCredentials> {
        self.transport.peer_credentials()
    }
}

impl fmt::Debug for WrappingTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappingTransport")
            .field("peer", &self.transport.peer())
            .field("paused", &self.is_paused())
            .field("reads_throttled", &self.reads_throttled())
            .field("writes_throttled", &self.writes_throttled())
            .field("producer", &self.producer.borrow().is_some())
            .finish_non_exhaustive()
    }
}

/// The producer registered with the real transport in place of the wrapped protocol's:
/// it passes the transport's flow control on, except while a policy throttles writes.
struct GatedProducer {
    inner: Rc<dyn Producer>,
    streaming: bool,
    /// The transport paused this (streaming) producer: its buffer is full.
    transport_paused: Cell<bool>,
    throttled: Cell<bool>,
    /// The transport asked this pull producer for more while throttled.
    pull_wanted: Cell<bool>,
}

impl GatedProducer {
    fn throttle(&self) {
        if self.throttled.replace(true) {
            return;
        }
        if self.streaming && !self.transport_paused.get() {
            self.inner.pause_producing();
        }
    }

    fn unthrottle(&self) {
        if !self.throttled.replace(false) {
            return;
        }
        if self.streaming {
            if !self.transport_paused.get() {
                self.inner.resume_producing();
            }
        } else if self.pull_wanted.replace(false) {
            self.inner.resume_producing();
        }
    }
}

impl Producer for GatedProducer {
    fn resume_producing(&self) {
        self.transport_paused.set(false);
        if self.throttled.get() {
            if !self.streaming {
                self.pull_wanted.set(true);
            }
            return;
        }
        self.inner.resume_producing();
    }

    fn pause_producing(&self) {
        let was = self.transport_paused.replace(true);
        if !was && !self.throttled.get() {
            self.inner.pause_producing();
        }
    }

    fn stop_producing(&self) {
        self.inner.stop_producing();
    }
}

/// The protocol a [`WrappingFactory`] gives the connection: it passes every event to the
/// wrapped protocol, through the policy's [`WrapperHooks`], and gives the wrapped protocol
/// a [`WrappingTransport`] (Twisted's `ProtocolWrapper`).
///
/// Made by [`WrappingFactory::wrap`]. It registers with its factory when the connection is
/// made and unregisters when it is lost.
pub struct ProtocolWrapper {
    inner: Box<dyn Protocol>,
    hooks: Rc<dyn WrapperHooks>,
    registry: Rc<Registry>,
    id: u64,
    transport: Option<Rc<WrappingTransport>>,
    /// The hooks' `connection_lost` has run.
    released: bool,
}

impl ProtocolWrapper {
    /// The wrapped protocol (Twisted's `wrappedProtocol`).
    pub fn wrapped(&self) -> &dyn Protocol {
        &*self.inner
    }

    /// The wrapped protocol, to change.
    pub fn wrapped_mut(&mut self) -> &mut dyn Protocol {
        &mut *self.inner
    }

    /// The transport the wrapped protocol got, once connected.
    pub fn transport(&self) -> Option<&Rc<WrappingTransport>> {
        self.transport.as_ref()
    }

    fn release(&mut self, reason: &Failure) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        let gone = self.registry.live.borrow_mut().remove(&self.id);
        drop(gone);
        self.hooks.connection_lost(reason);
    }
}

impl Protocol for ProtocolWrapper {
    fn connection_made(&mut self, transport: Transport) {
        let wrapping = Rc::new(WrappingTransport::new(transport, self.hooks.clone()));
        if !self.released {
            self.registry
                .live
                .borrow_mut()
                .insert(self.id, Rc::downgrade(&wrapping));
        }
        self.transport = Some(wrapping.clone());
        self.hooks.connection_made(&wrapping);
        self.inner.connection_made(wrapping);
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(transport) = &self.transport {
            self.hooks.data_received(transport, data);
        }
        self.inner.data_received(data);
    }

    fn connection_lost(&mut self, reason: Failure) {
        self.release(&reason);
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

impl Drop for ProtocolWrapper {
    fn drop(&mut self) {
        if !self.released {
            self.release(&Failure::new(ConnectionDone));
        }
    }
}

impl fmt::Debug for ProtocolWrapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtocolWrapper")
            .field("transport", &self.transport)
            .field("released", &self.released)
            .finish_non_exhaustive()
    }
}

type HooksMaker = Box<dyn Fn(&Address) -> Rc<dyn WrapperHooks>>;

/// Wraps a factory: each protocol it builds is wrapped in a [`ProtocolWrapper`], which the
/// factory keeps track of while its connection lives (Twisted's `WrappingFactory`).
///
/// On its own it changes nothing but lets a program list its connections
/// ([`connections`](Self::connections)); with [`WrapperHooks`] it applies a policy to each
/// connection. The other factories of this module are built on it.
///
/// # Examples
///
/// Counting the bytes every connection of an echo server receives:
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use torsion::net::{Transport, TransportOps};
/// use torsion::protocol::{Factory, Protocol};
/// use torsion::protocols::policies::{WrapperHooks, WrappingFactory, WrappingTransport};
/// use torsion::testing::{default_peer_address, StringTransport};
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
/// /// Adds up what arrives, across all connections.
/// struct Meter(Rc<Cell<usize>>);
///
/// impl WrapperHooks for Meter {
///     fn data_received(&self, _transport: &Rc<WrappingTransport>, data: &[u8]) {
///         self.0.set(self.0.get() + data.len());
///     }
/// }
///
/// let received = Rc::new(Cell::new(0));
/// let total = received.clone();
/// let factory = WrappingFactory::with_hooks(Rc::new(Echo::default), move |_addr| {
///     Meter(total.clone())
/// });
///
/// // What the reactor does for each connection:
/// let mut protocol = factory.clone().build_protocol(&default_peer_address()).unwrap();
/// let transport = StringTransport::new();
/// protocol.connection_made(transport.clone());
/// protocol.data_received(b"hello");
///
/// assert_eq!(transport.value(), b"hello"); // the echo went through
/// assert_eq!(received.get(), 5);
/// assert_eq!(factory.connection_count(), 1);
/// protocol.connection_lost(torsion::error::ConnectionDone.into());
/// assert_eq!(factory.connection_count(), 0);
/// ```
pub struct WrappingFactory<F: ?Sized> {
    wrapped: Rc<F>,
    registry: Rc<Registry>,
    hooks: Option<HooksMaker>,
    no_hooks: Rc<dyn WrapperHooks>,
}

impl<F: Factory + ?Sized> WrappingFactory<F> {
    /// Wraps `wrapped`, with no policy (Twisted's `WrappingFactory(wrappedFactory)`).
    pub fn new(wrapped: Rc<F>) -> Rc<Self> {
        Rc::new(Self::unshared(wrapped, None))
    }

    /// Wraps `wrapped`, applying to each connection the policy `make` returns for its
    /// peer's address (what a Twisted subclass of `ProtocolWrapper` does). `make` runs in
    /// `build_protocol`, after the wrapped factory built a protocol.
    pub fn with_hooks<H: WrapperHooks>(
        wrapped: Rc<F>,
        make: impl Fn(&Address) -> H + 'static,
    ) -> Rc<Self> {
        let maker: HooksMaker = Box::new(move |addr| Rc::new(make(addr)));
        Rc::new(Self::unshared(wrapped, Some(maker)))
    }

    fn unshared(wrapped: Rc<F>, hooks: Option<HooksMaker>) -> Self {
        WrappingFactory {
            wrapped,
            registry: Rc::new(Registry::default()),
            hooks,
            no_hooks: Rc::new(()),
        }
    }

    /// The wrapped factory (Twisted's `wrappedFactory`).
    pub fn wrapped(&self) -> &Rc<F> {
        &self.wrapped
    }

    /// Wraps `protocol` with the policy `hooks`, as this factory's `build_protocol` does:
    /// its connection is listed by [`connections`](Self::connections) from
    /// `connection_made` to `connection_lost`. For factories built on this one that choose
    /// the protocol themselves.
    pub fn wrap(
        &self,
        protocol: Box<dyn Protocol>,
        hooks: Rc<dyn WrapperHooks>,
    ) -> ProtocolWrapper {
        ProtocolWrapper {
            inner: protocol,
            hooks,
            registry: self.registry.clone(),
            id: self.registry.allocate(),
            transport: None,
            released: false,
        }
    }

    /// The transports of the connections made and not yet lost, oldest first (Twisted's
    /// `protocols`).
    pub fn connections(&self) -> Vec<Rc<WrappingTransport>> {
        self.registry.transports()
    }

    /// How many connections are made and not yet lost.
    pub fn connection_count(&self) -> usize {
        self.registry.len()
    }
}

impl<F: Factory + ?Sized> Factory for WrappingFactory<F> {
    /// The wrapped factory's protocol, wrapped; `None` when the wrapped factory refuses.
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>> {
        let protocol = self.wrapped.clone().build_protocol(addr)?;
        let hooks = match &self.hooks {
            Some(make) => make(addr),
            None => self.no_hooks.clone(),
        };
        Some(Box::new(self.wrap(protocol, hooks)))
    }

    fn start_factory(&self) {
        self.wrapped.start_factory();
    }

    fn stop_factory(&self) {
        self.wrapped.stop_factory();
    }
}

impl<F: ClientFactory + ?Sized> ClientFactory for WrappingFactory<F> {
    fn started_connecting(&self, connector: &crate::net::tcp::Connector) {
        self.wrapped.started_connecting(connector);
    }

    fn client_connection_failed(&self, connector: &crate::net::tcp::Connector, reason: Failure) {
        self.wrapped.client_connection_failed(connector, reason);
    }

    fn client_connection_lost(&self, connector: &crate::net::tcp::Connector, reason: Failure) {
        self.wrapped.client_connection_lost(connector, reason);
    }
}

impl<F: ?Sized> fmt::Debug for WrappingFactory<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappingFactory")
            .field("connections", &self.registry.len())
            .finish_non_exhaustive()
    }
}

// ===== throttling =====

/// The limits of a [`ThrottlingFactory`] (the arguments of Twisted's `ThrottlingFactory`,
/// with their defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleLimits {
    /// Refuse connections beyond this many at once (`usize::MAX`: no limit).
    pub max_connection_count: usize,
    /// Read at most about this many bytes per second, across all connections (`None`: no
    /// limit). A limit of 0 counts as 1.
    pub read_limit: Option<u64>,
    /// Write at most about this many bytes per second, across all connections, by pausing
    /// the producers the protocols registered (`None`: no limit). A limit of 0 counts as 1.
    pub write_limit: Option<u64>,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        ThrottleLimits {
            max_connection_count: usize::MAX,
            read_limit: None,
            write_limit: None,
        }
    }
}

/// One direction's bookkeeping: bytes this second, the next check, the pending lift.
#[derive(Default)]
struct Meter {
    this_second: Cell<u64>,
    throttled: Cell<bool>,
    check: RefCell<Option<DelayedCall>>,
    lift: RefCell<Option<DelayedCall>>,
}

impl Meter {
    fn add(&self, n: usize) {
        self.this_second
            .set(self.this_second.get().saturating_add(n as u64));
    }

    fn stop(&self) {
        let calls = [
            self.check.borrow_mut().take(),
            self.lift.borrow_mut().take(),
        ];
        for call in calls.into_iter().flatten() {
            let _ = call.cancel();
        }
        self.this_second.set(0);
        self.throttled.set(false);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Direction {
    Reads,
    Writes,
}

/// The state a [`ThrottlingFactory`] shares with its connections; it is also their policy.
struct Throttle {
    me: Weak<Throttle>,
    clock: Rc<dyn ReactorTime>,
    registry: Rc<Registry>,
    limits: ThrottleLimits,
    connection_count: Cell<usize>,
    reads: Meter,
    writes: Meter,
}

impl Throttle {
    fn meter(&self, direction: Direction) -> &Meter {
        match direction {
            Direction::Reads => &self.reads,
            Direction::Writes => &self.writes,
        }
    }

    fn limit(&self, direction: Direction) -> Option<u64> {
        match direction {
            Direction::Reads => self.limits.read_limit,
            Direction::Writes => self.limits.write_limit,
        }
        .map(|l| l.max(1))
    }

    /// The first connection arrived: start the once-a-second checks.
    fn start(&self) {
        for direction in [Direction::Reads, Direction::Writes] {
            if self.limit(direction).is_some() {
                self.meter(direction).this_second.set(0);
                self.schedule_check(direction);
            }
        }
    }

    /// The last connection went: no timer is left behind.
    fn stop(&self) {
        self.reads.stop();
        self.writes.stop();
    }

    fn schedule_check(&self, direction: Direction) {
        if self.connection_count.get() == 0 {
            return;
        }
        let me = self.me.clone();
        let call = self.clock.call_later_boxed(
            Duration::from_secs(1),
            Box::new(move || {
                if let Some(me) = me.upgrade() {
                    me.check(direction);
                }
            }),
        );
        let old = self.meter(direction).check.borrow_mut().replace(call);
        drop(old);
    }

    /// Twisted's `checkReadBandwidth` / `checkWriteBandwidth`: over the limit in the last
    /// second, throttle for as long as the excess takes at the limit's rate.
    fn check(&self, direction: Direction) {
        let Some(limit) = self.limit(direction) else {
            return;
        };
        let meter = self.meter(direction);
        let done = meter.this_second.replace(0);
        if done > limit {
            let pause = Duration::from_secs_f64(done as f64 / limit as f64 - 1.0);
            self.throttle(direction, pause);
        }
        self.schedule_check(direction);
    }

    fn throttle(&self, direction: Direction, pause: Duration) {
        if self.connection_count.get() == 0 {
            return;
        }
        let meter = self.meter(direction);
        let until = self.clock.now() + pause;
        let pending = meter
            .lift
            .borrow()
            .as_ref()
            .is_some_and(DelayedCall::active);
        if pending {
            // Already throttled: extend the pause if this one ends later.
            let lift = meter.lift.borrow();
            if let Some(call) = lift.as_ref()
                && call.time() < until
            {
                let _ = call.reset(pause);
            }
            return;
        }
        tracing::debug!(
            target: "torsion::policies",
            "throttling {direction:?} for {:.3} s",
            pause.as_secs_f64()
        );
        meter.throttled.set(true);
        let me = self.me.clone();
        let call = self.clock.call_later_boxed(
            pause,
            Box::new(move || {
                if let Some(me) = me.upgrade() {
                    me.unthrottle(direction);
                }
            }),
        );
        let old = meter.lift.borrow_mut().replace(call);
        drop(old);
        for transport in self.registry.transports() {
            match direction {
                Direction::Reads => transport.throttle_reads(),
                Direction::Writes => transport.throttle_writes(),
            }
        }
    }

    fn unthrottle(&self, direction: Direction) {
        let meter = self.meter(direction);
        let lift = meter.lift.borrow_mut().take();
        drop(lift);
        meter.throttled.set(false);
        tracing::debug!(target: "torsion::policies", "stopped throttling {direction:?}");
        for transport in self.registry.transports() {
            match direction {
                Direction::Reads => transport.unthrottle_reads(),
                Direction::Writes => transport.unthrottle_writes(),
            }
        }
    }
}

impl WrapperHooks for Throttle {
    fn connection_made(&self, transport: &Rc<WrappingTransport>) {
        // A connection made while the others are throttled waits with them.
        if self.reads.throttled.get() {
            transport.throttle_reads();
        }
        if self.writes.throttled.get() {
            transport.throttle_writes();
        }
    }

    fn data_received(&self, _transport: &Rc<WrappingTransport>, data: &[u8]) {
        self.reads.add(data.len());
    }

    fn connection_lost(&self, _reason: &Failure) {
        let count = self.connection_count.get().saturating_sub(1);
        self.connection_count.set(count);
        if count == 0 {
            self.stop();
        }
    }

    fn write(&self, transport: &Transport, data: &[u8]) {
        self.writes.add(data.len());
        transport.write(data);
    }

    fn write_sequence(&self, transport: &Transport, data: &[&[u8]]) {
        self.writes.add(data.iter().map(|d| d.len()).sum());
        transport.write_sequence(data);
    }
}

/// Limits the number of connections and the bandwidth of a factory's connections
/// (Twisted's `ThrottlingFactory`).
///
/// - Beyond [`max_connection_count`](ThrottleLimits::max_connection_count) connections,
///   `build_protocol` returns `None`: the connection is closed at once.
/// - Bytes read and written are counted across all connections. Once a second (on the
///   clock given, starting with the first connection and stopping with the last, so no
///   timer outlives the connections), a direction that went over its limit in the last
///   second is throttled for as long as the excess takes at the limit's rate: reading
///   `3 × read_limit` bytes pauses reading for 2 s. The average rate thus stays near the
///   limit, as in Twisted.
/// - Reads are throttled by pausing every connection's transport (a connection made
///   meanwhile starts paused).
/// - Writes are throttled by pausing the producer each protocol registered with its
///   transport; as in Twisted, a protocol that writes without a producer is not slowed
///   down.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use torsion::Reactor;
/// use torsion::protocol::Protocol;
/// use torsion::protocols::policies::{ThrottleLimits, ThrottlingFactory};
///
/// struct Upload;
/// impl Protocol for Upload {}
///
/// let reactor = Reactor::new().unwrap();
/// let limits = ThrottleLimits {
///     max_connection_count: 100,
///     read_limit: Some(1_000_000), // about 1 MB/s, all uploads together
///     ..ThrottleLimits::default()
/// };
/// let factory = ThrottlingFactory::new(&reactor, Rc::new(|| Upload), limits);
/// let port = reactor.listen_tcp(0, factory.clone()).unwrap();
/// assert_eq!(factory.connection_count(), 0);
/// drop(port.stop_listening());
/// ```
pub struct ThrottlingFactory<F: ?Sized> {
    wrapping: Rc<WrappingFactory<F>>,
    throttle: Rc<Throttle>,
}

impl<F: Factory + ?Sized> ThrottlingFactory<F> {
    /// Wraps `wrapped` with `limits`, timing on `clock` (the reactor, or a
    /// [`Clock`](crate::time::Clock) in tests).
    pub fn new<C: ReactorTime + Clone + 'static>(
        clock: &C,
        wrapped: Rc<F>,
        limits: ThrottleLimits,
    ) -> Rc<Self> {
        let wrapping = WrappingFactory::new(wrapped);
        let clock: Rc<dyn ReactorTime> = Rc::new(clock.clone());
        let registry = wrapping.registry.clone();
        let throttle = Rc::new_cyclic(|me| Throttle {
            me: me.clone(),
            clock,
            registry,
            limits,
            connection_count: Cell::new(0),
            reads: Meter::default(),
            writes: Meter::default(),
        });
        Rc::new(ThrottlingFactory { wrapping, throttle })
    }

    /// The wrapped factory.
    pub fn wrapped(&self) -> &Rc<F> {
        self.wrapping.wrapped()
    }

    /// The limits in force.
    pub fn limits(&self) -> ThrottleLimits {
        self.throttle.limits
    }

    /// How many connections were accepted and not yet lost (Twisted's `connectionCount`).
    pub fn connection_count(&self) -> usize {
        self.throttle.connection_count.get()
    }

    /// The transports of the live connections.
    pub fn connections(&self) -> Vec<Rc<WrappingTransport>> {
        self.wrapping.connections()
    }

    /// Bytes read so far in the current second (Twisted's `readThisSecond`).
    pub fn read_this_second(&self) -> u64 {
        self.throttle.reads.this_second.get()
    }

    /// Bytes written so far in the current second (Twisted's `writtenThisSecond`).
    pub fn written_this_second(&self) -> u64 {
        self.throttle.writes.this_second.get()
    }

    /// Whether reads are throttled now.
    pub fn reads_throttled(&self) -> bool {
        self.throttle.reads.throttled.get()
    }

    /// Whether writes are throttled now.
    pub fn writes_throttled(&self) -> bool {
        self.throttle.writes.throttled.get()
    }
}

impl<F: Factory + ?Sized> Factory for ThrottlingFactory<F> {
    /// The wrapped factory's protocol, wrapped, or `None` at the connection limit.
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>> {
        let count = self.throttle.connection_count.get();
        if count >= self.throttle.limits.max_connection_count {
            tracing::info!(
                target: "torsion::policies",
                "max connection count reached: refusing {addr}"
            );
            return None;
        }
        let protocol = self.wrapping.wrapped().clone().build_protocol(addr)?;
        self.throttle.connection_count.set(count + 1);
        if count == 0 {
            self.throttle.start();
        }
        let hooks: Rc<dyn WrapperHooks> = self.throttle.clone();
        Some(Box::new(self.wrapping.wrap(protocol, hooks)))
    }

    fn start_factory(&self) {
        self.wrapping.start_factory();
    }

    fn stop_factory(&self) {
        self.wrapping.stop_factory();
    }
}

impl<F: ClientFactory + ?Sized> ClientFactory for ThrottlingFactory<F> {
    fn started_connecting(&self, connector: &crate::net::tcp::Connector) {
        self.wrapping.started_connecting(connector);
    }

    fn client_connection_failed(&self, connector: &crate::net::tcp::Connector, reason: Failure) {
        self.wrapping.client_connection_failed(connector, reason);
    }

    fn client_connection_lost(&self, connector: &crate::net::tcp::Connector, reason: Failure) {
        self.wrapping.client_connection_lost(connector, reason);
    }
}

impl<F: ?Sized> fmt::Debug for ThrottlingFactory<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottlingFactory")
            .field("limits", &self.throttle.limits)
            .field("connection_count", &self.throttle.connection_count.get())
            .field("reads_throttled", &self.throttle.reads.throttled.get())
            .field("writes_throttled", &self.throttle.writes.throttled.get())
            .finish_non_exhaustive()
    }
}

// ===== limiting connections =====

/// Counts a [`LimitTotalConnectionsFactory`]'s connections down as they close.
#[derive(Default)]
struct ConnectionCounter {
    count: Cell<usize>,
}

impl WrapperHooks for ConnectionCounter {
    fn connection_lost(&self, _reason: &Failure) {
        self.count.set(self.count.get().saturating_sub(1));
    }
}

type OverflowMaker = Rc<dyn Fn() -> Box<dyn Protocol>>;

/// Limits how many connections a factory serves at once (Twisted's
/// `LimitTotalConnectionsFactory`).
///
/// Below [`connection_limit`](Self::connection_limit) connections, the wrapped factory
/// builds the protocol. At the limit, the overflow protocol serves the connection if one
/// is set (to tell the client to come back later), else the connection is refused:
/// `build_protocol` returns `None` and it is closed at once. Overflow connections count
/// too, as in Twisted; every connection counts until it is lost.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use torsion::net::Transport;
/// use torsion::protocol::{Factory, Protocol};
/// use torsion::protocols::policies::LimitTotalConnectionsFactory;
/// use torsion::testing::{default_peer_address, StringTransport};
///
/// struct Chat;
/// impl Protocol for Chat {}
///
/// /// Says why, then hangs up.
/// struct Busy;
/// impl Protocol for Busy {
///     fn connection_made(&mut self, transport: Transport) {
///         transport.write(b"too busy, try later\r\n");
///         transport.lose_connection();
///     }
/// }
///
/// let factory = LimitTotalConnectionsFactory::new(Rc::new(|| Chat), Some(1));
/// let addr = default_peer_address();
///
/// let mut first = factory.clone().build_protocol(&addr).unwrap();
/// first.connection_made(StringTransport::new());
/// assert_eq!(factory.connection_count(), 1);
///
/// // Over the limit, with no overflow protocol: refused.
/// assert!(factory.clone().build_protocol(&addr).is_none());
///
/// // With one, it serves the extra connection.
/// factory.set_overflow_protocol(|| Busy);
/// let mut second = factory.clone().build_protocol(&addr).unwrap();
/// let transport = StringTransport::new();
/// second.connection_made(transport.clone());
/// assert_eq!(transport.value(), b"too busy, try later\r\n");
///
/// // Closing connections counts them down.
/// first.connection_lost(torsion::error::ConnectionDone.into());
/// second.connection_lost(torsion::error::ConnectionDone.into());
/// assert_eq!(factory.connection_count(), 0);
/// ```
pub struct LimitTotalConnectionsFactory<F: ?Sized> {
    wrapping: Rc<WrappingFactory<F>>,
    counter: Rc<ConnectionCounter>,
    connection_limit: Cell<Option<usize>>,
    overflow: RefCell<Option<OverflowMaker>>,
}

impl<F: Factory + ?Sized> LimitTotalConnectionsFactory<F> {
    /// Wraps `wrapped`, serving at most `connection_limit` connections at once (`None`: no
    /// limit, Twisted's default), with no overflow protocol.
    pub fn new(wrapped: Rc<F>, connection_limit: Option<usize>) -> Rc<Self> {
        Rc::new(LimitTotalConnectionsFactory {
            wrapping: WrappingFactory::new(wrapped),
            counter: Rc::new(ConnectionCounter::default()),
            connection_limit: Cell::new(connection_limit),
            overflow: RefCell::new(None),
        })
    }

    /// The wrapped factory.
    pub fn wrapped(&self) -> &Rc<F> {
        self.wrapping.wrapped()
    }

    /// How many connections are served now, overflow ones included (Twisted's
    /// `connectionCount`).
    pub fn connection_count(&self) -> usize {
        self.counter.count.get()
    }

    /// The limit (Twisted's `connectionLimit`).
    pub fn connection_limit(&self) -> Option<usize> {
        self.connection_limit.get()
    }

    /// Changes the limit; connections already served stay.
    pub fn set_connection_limit(&self, limit: Option<usize>) {
        self.connection_limit.set(limit);
    }

    /// Serves connections over the limit with the protocols `make` builds (Twisted's
    /// `overflowProtocol`), instead of refusing them.
    pub fn set_overflow_protocol<P: Protocol>(&self, make: impl Fn() -> P + 'static) {
        let make: OverflowMaker = Rc::new(move || Box::new(make()));
        *self.overflow.borrow_mut() = Some(make);
    }

    /// Refuses connections over the limit again (Twisted's `overflowProtocol = None`).
    pub fn clear_overflow_protocol(&self) {
        let old = self.overflow.borrow_mut().take();
        drop(old);
    }

    /// Whether an overflow protocol is set.
    pub fn has_overflow_protocol(&self) -> bool {
        self.overflow.borrow().is_some()
    }

    /// The transports of the connections served now.
    pub fn connections(&self) -> Vec<Rc<WrappingTransport>> {
        self.wrapping.connections()
    }
}

impl<F: Factory + ?Sized> Factory for LimitTotalConnectionsFactory<F> {
    /// Below the limit, the wrapped factory's protocol; above it, the overflow protocol, or
    /// `None`.
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>> {
        let count = self.counter.count.get();
        let protocol = if self
            .connection_limit
            .get()
            .is_none_or(|limit| count < limit)
        {
            self.wrapping.wrapped().clone().build_protocol(addr)?
        } else {
            let overflow = self.overflow.borrow().clone();
            match overflow {
                Some(make) => make(),
                None => {
                    tracing::info!(
                        target: "torsion::policies",
                        "connection limit reached: refusing {addr}"
                    );
                    return None;
                }
            }
        };
        self.counter.count.set(self.counter.count.get() + 1);
        let hooks: Rc<dyn WrapperHooks> = self.counter.clone();
        Some(Box::new(self.wrapping.wrap(protocol, hooks)))
    }

    fn start_factory(&self) {
        self.wrapping.start_factory();
    }

    fn stop_factory(&self) {
        self.wrapping.stop_factory();
    }
}

impl<F: ?Sized> fmt::Debug for LimitTotalConnectionsFactory<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitTotalConnectionsFactory")
            .field("connection_count", &self.counter.count.get())
            .field("connection_limit", &self.connection_limit.get())
            .field("overflow_protocol", &self.overflow.borrow().is_some())
            .finish_non_exhaustive()
    }
}

// ===== timeouts =====

/// A timeout period for [`Timeout::set_timeout`]: a [`Duration`], `f64` seconds or whole
/// seconds as in Twisted, or `None` (or `Option<Duration>`) for no timeout.
///
/// # Panics
///
/// [`into_timeout`](IntoTimeout::into_timeout) panics for a negative or non-finite `f64`
/// and a negative `i32`, as [`IntoDelay`](crate::time::IntoDelay) does.
pub trait IntoTimeout {
    /// The period, or `None` for no timeout.
    #[track_caller]
    fn into_timeout(self) -> Option<Duration>;
}

impl IntoTimeout for Option<Duration> {
    fn into_timeout(self) -> Option<Duration> {
        self
    }
}

impl IntoTimeout for Duration {
    fn into_timeout(self) -> Option<Duration> {
        Some(self)
    }
}

impl IntoTimeout for f64 {
    #[track_caller]
    fn into_timeout(self) -> Option<Duration> {
        Some(crate::time::IntoDelay::into_delay(self))
    }
}

impl IntoTimeout for u64 {
    fn into_timeout(self) -> Option<Duration> {
        Some(Duration::from_secs(self))
    }
}

impl IntoTimeout for u32 {
    fn into_timeout(self) -> Option<Duration> {
        Some(Duration::from_secs(u64::from(self)))
    }
}

impl IntoTimeout for i32 {
    #[track_caller]
    fn into_timeout(self) -> Option<Duration> {
        Some(crate::time::IntoDelay::into_delay(self))
    }
}

struct TimeoutState {
    clock: Rc<dyn ReactorTime>,
    /// Twisted's `timeOut`.
    period: Cell<Option<Duration>>,
    /// Twisted's `__timeoutCall`.
    call: RefCell<Option<DelayedCall>>,
    /// Closed on timeout when no callback is set.
    transport: RefCell<Option<Weak<dyn TransportOps>>>,
    /// Twisted's overridden `timeoutConnection`.
    callback: RefCell<Option<Box<dyn FnMut()>>>,
}

impl TimeoutState {
    fn timed_out(&self) {
        let call = self.call.borrow_mut().take();
        drop(call);
        // Take the callback out while it runs: it may set another one, or the timeout.
        let callback = self.callback.borrow_mut().take();
        match callback {
            Some(mut callback) => {
                callback();
                let mut slot = self.callback.borrow_mut();
                if slot.is_none() {
                    *slot = Some(callback);
                }
            }
            None => {
                let transport = self.transport.borrow().as_ref().and_then(Weak::upgrade);
                match transport {
                    Some(transport) => {
                        tracing::debug!(
                            target: "torsion::policies",
                            "timing out the connection to {}",
                            transport.peer()
                        );
                        transport.lose_connection();
                    }
                    None => tracing::debug!(
                        target: "torsion::policies",
                        "timed out with no transport attached"
                    ),
                }
            }
        }
    }
}

/// An idle timeout a protocol embeds: the period passes with no
/// [`reset_timeout`](Self::reset_timeout) and the connection is closed, or a callback runs
/// (Twisted's `TimeoutMixin`).
///
/// The protocol keeps a `Timeout`, [attaches](Self::attach) its transport in
/// `connection_made` and starts it with [`set_timeout`](Self::set_timeout), calls
/// `reset_timeout` when data arrives, and
/// [`set_timeout(None)`](Self::set_timeout) or [`cancel_timeout`](Self::cancel_timeout) to
/// stop it. When the period passes, the timer, running from the loop and never from inside
/// the protocol, calls the callback set with [`on_timeout`](Self::on_timeout) (Twisted's
/// overridden `timeoutConnection`) or, by default, the attached transport's
/// `lose_connection`. The transport is held weakly, so the timeout never keeps a
/// connection alive, and dropping the `Timeout` (the protocol going away) cancels its
/// timer: no call is left pending after the connection.
///
/// # Examples
///
/// ```
/// use torsion::net::{Transport, TransportOps};
/// use torsion::protocol::Protocol;
/// use torsion::protocols::policies::Timeout;
/// use torsion::testing::StringTransport;
/// use torsion::time::Clock;
///
/// /// Hangs up on clients silent for 3 seconds.
/// struct Impatient {
///     timeout: Timeout,
/// }
///
/// impl Protocol for Impatient {
///     fn connection_made(&mut self, transport: Transport) {
///         self.timeout.attach(&transport);
///         self.timeout.set_timeout(3.0);
///     }
///     fn data_received(&mut self, _data: &[u8]) {
///         self.timeout.reset_timeout();
///     }
/// }
///
/// let clock = Clock::new();
/// let mut protocol = Impatient { timeout: Timeout::new(&clock) };
/// let transport = StringTransport::new();
/// protocol.connection_made(transport.clone());
///
/// clock.advance(2.0);
/// protocol.data_received(b"still here");
/// clock.advance(2.5);
/// assert!(!transport.disconnecting()); // 2.5 s since the data
/// clock.advance(1.0);
/// assert!(transport.disconnecting());
/// ```
pub struct Timeout {
    state: Rc<TimeoutState>,
}

impl Timeout {
    /// A timeout timing on `clock` (the reactor, or a [`Clock`](crate::time::Clock) in
    /// tests), not started, that closes the attached transport when it fires.
    pub fn new<C: ReactorTime + Clone + 'static>(clock: &C) -> Timeout {
        Timeout {
            state: Rc::new(TimeoutState {
                clock: Rc::new(clock.clone()),
                period: Cell::new(None),
                call: RefCell::new(None),
                transport: RefCell::new(None),
                callback: RefCell::new(None),
            }),
        }
    }

    /// Sets the transport the default action closes (held weakly).
    pub fn attach(&self, transport: &Transport) {
        *self.state.transport.borrow_mut() = Some(Rc::downgrade(transport));
    }

    /// Runs `callback` when the timeout passes, instead of closing the attached transport
    /// (Twisted's overridden `timeoutConnection`). It runs from the loop, so it may reach
    /// the protocol's state only through what it captured (an `Rc<RefCell<..>>`, a
    /// transport); it may set the timeout again.
    pub fn on_timeout(&self, callback: impl FnMut() + 'static) {
        let old = self.state.callback.borrow_mut().replace(Box::new(callback));
        drop(old);
    }

    /// Changes the period and restarts the countdown from now, or stops it with `None`;
    /// returns the previous period (Twisted's `setTimeout`).
    ///
    /// # Panics
    ///
    /// For a negative or non-finite period (see [`IntoTimeout`]).
    #[track_caller]
    pub fn set_timeout(&self, period: impl IntoTimeout) -> Option<Duration> {
        let period = period.into_timeout();
        let previous = self.state.period.replace(period);
        let pending = self.state.call.borrow_mut().take();
        match (pending, period) {
            (Some(call), Some(period)) if call.reset(period).is_ok() => {
                *self.state.call.borrow_mut() = Some(call);
            }
            (pending, period) => {
                if let Some(call) = pending {
                    let _ = call.cancel();
                }
                if let Some(period) = period {
                    self.schedule(period);
                }
            }
        }
        previous
    }

    /// Restarts the countdown from now (Twisted's `resetTimeout`): call it when the peer
    /// shows signs of life. Does nothing when no timeout is set or it already fired.
    pub fn reset_timeout(&self) {
        let Some(period) = self.state.period.get() else {
            return;
        };
        if let Some(call) = self.state.call.borrow().as_ref() {
            let _ = call.reset(period);
        }
    }

    /// Stops the timeout and forgets the period (Twisted's `cancelTimeout`).
    pub fn cancel_timeout(&self) {
        self.state.period.set(None);
        let call = self.state.call.borrow_mut().take();
        if let Some(call) = call {
            let _ = call.cancel();
        }
    }

    /// The period (Twisted's `timeOut`); it stays set after the timeout fired.
    pub fn timeout(&self) -> Option<Duration> {
        self.state.period.get()
    }

    /// Whether the countdown runs: a period is set and has not passed yet.
    pub fn is_pending(&self) -> bool {
        self.state
            .call
            .borrow()
            .as_ref()
            .is_some_and(DelayedCall::active)
    }

    #[track_caller]
    fn schedule(&self, period: Duration) {
        let state = Rc::downgrade(&self.state);
        let call = self.state.clock.call_later_boxed(
            period,
            Box::new(move || {
                if let Some(state) = state.upgrade() {
                    state.timed_out();
                }
            }),
        );
        let old = self.state.call.borrow_mut().replace(call);
        drop(old);
    }
}

impl Drop for Timeout {
    fn drop(&mut self) {
        let call = self.state.call.borrow_mut().take();
        if let Some(call) = call {
            let _ = call.cancel();
        }
    }
}

impl fmt::Debug for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("timeout", &self.state.period.get())
            .field("pending", &self.is_pending())
            .finish_non_exhaustive()
    }
}

/// The idle period of a [`TimeoutFactory`] in Twisted: 30 minutes.
pub const DEFAULT_TIMEOUT_PERIOD: Duration = Duration::from_secs(30 * 60);

/// The policy of a [`TimeoutFactory`]: one [`Timeout`] per connection, reset by every read
/// and write.
struct IdleHooks {
    timeout: Timeout,
    period: Duration,
}

impl WrapperHooks for IdleHooks {
    fn connection_made(&self, transport: &Rc<WrappingTransport>) {
        let transport: Transport = transport.clone();
        self.timeout.attach(&transport);
        self.timeout.set_timeout(self.period);
    }

    fn data_received(&self, _transport: &Rc<WrappingTransport>, _data: &[u8]) {
        self.timeout.reset_timeout();
    }

    fn connection_lost(&self, _reason: &Failure) {
        self.timeout.cancel_timeout();
    }

    fn write(&self, transport: &Transport, data: &[u8]) {
        self.timeout.reset_timeout();
        transport.write(data);
    }

    fn write_sequence(&self, transport: &Transport, data: &[&[u8]]) {
        self.timeout.reset_timeout();
        transport.write_sequence(data);
    }
}

/// Closes a factory's connections once idle for a period: no bytes read or written
/// (Twisted's `TimeoutFactory` and `TimeoutProtocol`).
///
/// The countdown starts when the connection is made; each read and each write restarts
/// it; when it runs out the connection is closed with `lose_connection`.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use std::time::Duration;
/// use torsion::protocol::{Factory, Protocol};
/// use torsion::protocols::policies::TimeoutFactory;
/// use torsion::testing::{default_peer_address, StringTransport};
/// use torsion::time::Clock;
///
/// struct Quiet;
/// impl Protocol for Quiet {}
///
/// let clock = Clock::new();
/// let factory = TimeoutFactory::new(&clock, Rc::new(|| Quiet), Duration::from_secs(60));
/// let mut protocol = factory.clone().build_protocol(&default_peer_address()).unwrap();
/// let transport = StringTransport::new();
/// protocol.connection_made(transport.clone());
/// clock.advance(61.0);
/// assert!(transport.disconnecting());
/// ```
pub struct TimeoutFactory<F: ?Sized> {
    wrapping: Rc<WrappingFactory<F>>,
    make_timeout: Rc<dyn Fn() -> Timeout>,
    period: Duration,
}

impl<F: Factory + ?Sized> TimeoutFactory<F> {
    /// Wraps `wrapped`, closing its connections after `period` idle, timed on `clock` (the
    /// reactor, or a [`Clock`](crate::time::Clock) in tests). Twisted's default period is
    /// [`DEFAULT_TIMEOUT_PERIOD`].
    pub fn new<C: ReactorTime + Clone + 'static>(
        clock: &C,
        wrapped: Rc<F>,
        period: Duration,
    ) -> Rc<Self> {
        let clock = clock.clone();
        Rc::new(TimeoutFactory {
            wrapping: WrappingFactory::new(wrapped),
            make_timeout: Rc::new(move || Timeout::new(&clock)),
            period,
        })
    }

    /// The wrapped factory.
    pub fn wrapped(&self) -> &Rc<F> {
        self.wrapping.wrapped()
    }

    /// The idle period (Twisted's `timeoutPeriod`).
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The transports of the live connections.
    pub fn connections(&self) -> Vec<Rc<WrappingTransport>> {
        self.wrapping.connections()
    }
}

impl<F: Factory + ?Sized> Factory for TimeoutFactory<F> {
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>> {
        let protocol = self.wrapping.wrapped().clone().build_protocol(addr)?;
        let hooks = Rc::new(IdleHooks {
            timeout: (self.make_timeout)(),
            period: self.period,
        });
        Some(Box::new(self.wrapping.wrap(protocol, hooks)))
    }

    fn start_factory(&self) {
        self.wrapping.start_factory();
    }

    fn stop_factory(&self) {
        self.wrapping.stop_factory();
    }
}

impl<F: ?Sized> fmt::Debug for TimeoutFactory<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutFactory")
            .field("period", &self.period)
            .field("connections", &self.wrapping.registry.len())
            .finish_non_exhaustive()
    }
}
