//! The wrapper every policy is built on (Twisted's `WrappingFactory` and `ProtocolWrapper`
//! in `twisted.protocols.policies`): the [`WrapperHooks`] a policy implements, the
//! [`WrappingTransport`] a wrapped protocol writes to, the [`ProtocolWrapper`] the
//! connection drives, the [`WrappingFactory`] that builds them, and the registry of a
//! factory's live connections.
//!
//! Invariant: a wrapper's hooks hear `connection_lost` exactly once (from the connection,
//! or from `Drop` for a wrapper never connected), and its connection is listed in the
//! factory's registry from `connection_made` until then; reading stays paused while either
//! the wrapped protocol or a policy asks for it, and resumes only when neither does.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::rc::{Rc, Weak};

use crate::defer::Failure;
use crate::error::ConnectionDone;
use crate::net::{Address, Producer, Transport, TransportOps};
use crate::protocol::{ClientFactory, Factory, Protocol};

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
pub(super) struct Registry {
    next_id: Cell<u64>,
    live: RefCell<BTreeMap<u64, Weak<WrappingTransport>>>,
}

impl Registry {
    fn allocate(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    pub(super) fn transports(&self) -> Vec<Rc<WrappingTransport>> {
        self.live
            .borrow()
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }

    pub(super) fn len(&self) -> usize {
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

    fn start_tls(&self, tls: crate::tls::StartTls) -> Result<(), Failure> {
        self.transport.start_tls(tls)
    }

    fn tls_info(&self) -> Option<crate::tls::TlsInfo> {
        self.transport.tls_info()
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

    crate::protocol::forward_protocol_events!(
        inner:
        supports_half_close,
        read_connection_lost,
        write_connection_lost,
        handshake_completed
    );
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
    pub(super) registry: Rc<Registry>,
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
    fn started_connecting(&self, connector: &crate::net::Connector) {
        self.wrapped.started_connecting(connector);
    }

    fn client_connection_failed(&self, connector: &crate::net::Connector, reason: Failure) {
        self.wrapped.client_connection_failed(connector, reason);
    }

    fn client_connection_lost(&self, connector: &crate::net::Connector, reason: Failure) {
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
