//! Protocols and factories (Twisted's `twisted.internet.protocol`): what a connection does
//! with its bytes, and what makes a protocol for each new connection.
//!
//! A protocol gets its [`Transport`] in [`Protocol::connection_made`] and keeps it to write.
//! State shared between the connections of one server lives in the factory: the factory
//! gets itself as an `Rc` in [`Factory::build_protocol`] and hands a clone to each protocol,
//! as Twisted protocols reach `self.factory`:
//!
//! ```
//! use std::cell::Cell;
//! use std::rc::Rc;
//! use torsion::net::{Address, Transport};
//! use torsion::protocol::{Factory, Protocol};
//!
//! /// Counts the connections the server has seen, across all of them.
//! struct CountingFactory {
//!     seen: Cell<u64>,
//! }
//!
//! struct Greeter {
//!     factory: Rc<CountingFactory>,
//! }
//!
//! impl Protocol for Greeter {
//!     fn connection_made(&mut self, transport: Transport) {
//!         let n = self.factory.seen.get() + 1;
//!         self.factory.seen.set(n);
//!         transport.write(format!("you are visitor {n}\r\n").as_bytes());
//!         transport.lose_connection();
//!     }
//! }
//!
//! impl Factory for CountingFactory {
//!     fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
//!         Some(Box::new(Greeter { factory: self }))
//!     }
//! }
//! ```
//!
//! Invariant: the reactor never calls into a protocol while that protocol is running; what
//! a protocol causes from inside a callback (`lose_connection`, …) is delivered afterwards.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::defer::Failure;
use crate::net::{Address, Transport};
use crate::net::{Connector, ConnectorState};
use crate::time::{DelayedCall, ReactorTime};

/// What a connection does with its events (Twisted's `Protocol` with `IProtocol`).
///
/// Every method has a default that does nothing, except
/// [`read_connection_lost`](Protocol::read_connection_lost) (see there).
pub trait Protocol: 'static {
    /// The connection is up; keep `transport` to write to it (Twisted's `makeConnection`
    /// followed by `connectionMade`).
    fn connection_made(&mut self, transport: Transport) {
        let _ = transport;
    }

    /// Bytes arrived (Twisted's `dataReceived`). They may be any part of what the peer
    /// sent: a protocol frames them itself (see [`protocols`](crate::protocols)).
    fn data_received(&mut self, data: &[u8]) {
        let _ = data;
    }

    /// The connection is closed (Twisted's `connectionLost`): `reason` is
    /// [`ConnectionDone`](crate::error::ConnectionDone) for a clean close and
    /// [`ConnectionLost`](crate::error::ConnectionLost) (or an I/O error) otherwise. Called
    /// exactly once, after `connection_made`.
    fn connection_lost(&mut self, reason: Failure) {
        let _ = reason;
    }

    /// Whether the protocol handles half-closed connections (Twisted's
    /// `IHalfCloseableProtocol`). If not, the peer closing its sending side closes the
    /// whole connection, and unsent output is dropped, as in Twisted.
    fn supports_half_close(&self) -> bool {
        false
    }

    /// The peer closed its sending side; the protocol may still write (Twisted's
    /// `readConnectionLost`). Called only when
    /// [`supports_half_close`](Protocol::supports_half_close) is true.
    fn read_connection_lost(&mut self) {}

    /// The TLS handshake completed: the peer is authenticated, and
    /// [`tls_info`](crate::net::TransportOps::tls_info) tells what was negotiated (Twisted's
    /// `IHandshakeListener.handshakeCompleted`). Only for connections over TLS.
    fn handshake_completed(&mut self) {}

    /// Our sending side was closed by
    /// [`lose_write_connection`](crate::net::TransportOps::lose_write_connection) once the
    /// buffered output was sent (Twisted's `writeConnectionLost`).
    fn write_connection_lost(&mut self) {}
}

/// Writes, inside `impl Protocol for Wrapper`, the methods that only pass an event on to
/// the wrapped protocol in `self.$inner` (Twisted's `ProtocolWrapper`): a wrapper names the
/// events it leaves alone and writes the others itself, so a new event reaches every
/// wrapper that lists it.
macro_rules! forward_protocol_events {
    ($inner:ident: $($event:ident),* $(,)?) => {
        $( $crate::protocol::forward_protocol_events!(@one $inner $event); )*
    };
    (@one $inner:ident data_received) => {
        fn data_received(&mut self, data: &[u8]) {
            self.$inner.data_received(data);
        }
    };
    (@one $inner:ident connection_lost) => {
        fn connection_lost(&mut self, reason: $crate::defer::Failure) {
            self.$inner.connection_lost(reason);
        }
    };
    (@one $inner:ident supports_half_close) => {
        fn supports_half_close(&self) -> bool {
            self.$inner.supports_half_close()
        }
    };
    (@one $inner:ident read_connection_lost) => {
        fn read_connection_lost(&mut self) {
            self.$inner.read_connection_lost();
        }
    };
    (@one $inner:ident write_connection_lost) => {
        fn write_connection_lost(&mut self) {
            self.$inner.write_connection_lost();
        }
    };
    (@one $inner:ident handshake_completed) => {
        fn handshake_completed(&mut self) {
            self.$inner.handshake_completed();
        }
    };
}
pub(crate) use forward_protocol_events;

/// Makes a protocol for each new connection (Twisted's `Factory` / `ServerFactory`).
///
/// A closure returning a protocol is a factory: `Rc::new(|| Echo::default())`.
pub trait Factory: 'static {
    /// A protocol for a connection from (or to) `addr`, or `None` to refuse it: the
    /// connection is then closed (Twisted's `buildProtocol`).
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>>;

    /// Called before the factory's first port starts listening or its first connection
    /// attempt (Twisted's `startFactory`).
    fn start_factory(&self) {}

    /// Called after the factory's last port stopped listening or its last connection
    /// attempt ended (Twisted's `stopFactory`).
    fn stop_factory(&self) {}
}

impl<F, P> Factory for F
where
    F: Fn() -> P + 'static,
    P: Protocol,
{
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(self()))
    }
}

/// A factory for outgoing connections, told how connecting went (Twisted's
/// `ClientFactory`). Closures returning a protocol are client factories too.
pub trait ClientFactory: Factory {
    /// A connection attempt started (Twisted's `startedConnecting`).
    fn started_connecting(&self, connector: &crate::net::Connector) {
        let _ = connector;
    }

    /// The attempt failed: refused, timed out, or the name did not resolve (Twisted's
    /// `clientConnectionFailed`). `connector.connect()` tries again.
    fn client_connection_failed(&self, connector: &crate::net::Connector, reason: Failure) {
        let _ = (connector, reason);
    }

    /// An established connection was lost, after the protocol's `connection_lost`
    /// (Twisted's `clientConnectionLost`). `connector.connect()` reconnects.
    fn client_connection_lost(&self, connector: &crate::net::Connector, reason: Failure) {
        let _ = (connector, reason);
    }
}

impl<F, P> ClientFactory for F
where
    F: Fn() -> P + 'static,
    P: Protocol,
{
}

/// What a UDP port does with its datagrams (Twisted's `DatagramProtocol` with
/// `ConnectedDatagramProtocol`'s `connectionRefused`).
///
/// Unlike a stream [`Protocol`], one datagram protocol serves one port for its whole life:
/// [`Reactor::listen_udp`](crate::Reactor::listen_udp) takes the protocol itself, not a
/// factory. Every method has a default that does nothing.
///
/// # Examples
///
/// ```
/// use std::net::SocketAddr;
/// use torsion::net::udp::DatagramTransport;
/// use torsion::protocol::DatagramProtocol;
///
/// /// Sends every datagram back where it came from.
/// #[derive(Default)]
/// struct Echo(Option<DatagramTransport>);
///
/// impl DatagramProtocol for Echo {
///     fn start_protocol(&mut self, transport: DatagramTransport) {
///         self.0 = Some(transport);
///     }
///     fn datagram_received(&mut self, data: &[u8], addr: SocketAddr) {
///         if let Some(t) = &self.0 {
///             let _ = t.write(data, addr);
///         }
///     }
/// }
///
/// let reactor = torsion::Reactor::new().unwrap();
/// let port = reactor.listen_udp(0, Box::new(Echo::default())).unwrap();
/// assert_ne!(port.host().port(), Some(0));
/// ```
pub trait DatagramProtocol: 'static {
    /// The port is bound; keep `transport` to send (Twisted's `makeConnection` followed by
    /// `startProtocol`). Called once, from inside `listen_udp` (or `adopt_datagram_port`),
    /// before it returns, as in Twisted, so a protocol may send at once.
    fn start_protocol(&mut self, transport: crate::net::udp::DatagramTransport) {
        let _ = transport;
    }

    /// The port stopped listening (Twisted's `stopProtocol`): after
    /// [`stop_listening`](crate::net::udp::UdpPort::stop_listening), or at reactor
    /// shutdown. Called once; the protocol is dropped right after.
    fn stop_protocol(&mut self) {}

    /// A datagram arrived from `addr` (Twisted's `datagramReceived`). A datagram longer than
    /// the port's `max_packet_size` arrives truncated to that size, as in Twisted.
    fn datagram_received(&mut self, data: &[u8], addr: SocketAddr) {
        let _ = (data, addr);
    }

    /// A datagram sent on a connected port (see
    /// [`connect`](crate::net::udp::UdpPort::connect)) was refused: nothing listens at the
    /// other end (an ICMP port unreachable; Twisted's `connectionRefused`). Delivered from
    /// the loop, never from inside `write`.
    fn connection_refused(&mut self) {}
}
// ===== reconnecting =====

/// How a [`ReconnectingClientFactory`] spaces its attempts: Twisted's class attributes
/// `initialDelay`, `maxDelay`, `factor`, `jitter` and `maxRetries`, with their defaults.
///
/// After each failure the delay is drawn from a normal distribution around the current
/// delay (standard deviation `delay * jitter`), the reconnection is scheduled after it, and
/// the delay grows by `factor`, up to `max_delay`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay before the first reconnection (1 s).
    pub initial_delay: Duration,
    /// The longest delay between attempts (3600 s). As in Twisted, jitter may take one
    /// delay slightly past it.
    pub max_delay: Duration,
    /// How much the delay grows after each attempt (e, 2.718…).
    pub factor: f64,
    /// The standard deviation of the random part, as a fraction of the delay (0.1196…, so
    /// that clients restarted together do not all reconnect at once); 0 turns it off.
    pub jitter: f64,
    /// Give up after this many consecutive failed attempts (`None`: never).
    pub max_retries: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(3600),
            factor: std::f64::consts::E,
            jitter: 0.119626565582,
            max_retries: None,
        }
    }
}

/// A client factory that reconnects when a connection fails or is lost, waiting longer
/// after each failure (Twisted's `ReconnectingClientFactory`).
///
/// It wraps the factory `F` that builds the protocols: protocols and the other factory
/// methods are `F`'s, and after `F`'s `client_connection_failed` or
/// `client_connection_lost` it calls `connector.connect()` again after the
/// [`Backoff`]'s delay, on the clock it was given (the reactor, or a
/// [`Clock`](crate::time::Clock) in tests).
///
/// As in Twisted, the protocol should call [`reset_delay`](Self::reset_delay) once its
/// connection is made, so the next outage starts again from the initial delay. The factory
/// is shared as an `Rc`; build the inner factory with
/// [`new_cyclic`](Self::new_cyclic) to hand it a `Weak` link back, which it passes on to
/// each protocol:
///
/// # Examples
///
/// ```
/// use std::rc::{Rc, Weak};
/// use torsion::Reactor;
/// use torsion::net::{Address, Transport};
/// use torsion::protocol::{ClientFactory, Factory, Protocol, ReconnectingClientFactory};
///
/// type Reconnecting = ReconnectingClientFactory<ChatFactory>;
///
/// struct ChatFactory {
///     reconnecting: Weak<Reconnecting>,
/// }
///
/// struct Chat {
///     reconnecting: Weak<Reconnecting>,
/// }
///
/// impl Protocol for Chat {
///     fn connection_made(&mut self, transport: Transport) {
///         // Connected: the next outage starts again from a short delay.
///         if let Some(factory) = self.reconnecting.upgrade() {
///             factory.reset_delay();
///         }
///         transport.write(b"hello\r\n");
///     }
/// }
///
/// impl Factory for ChatFactory {
///     fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
///         Some(Box::new(Chat { reconnecting: self.reconnecting.clone() }))
///     }
/// }
///
/// impl ClientFactory for ChatFactory {}
///
/// let reactor = Reactor::new().unwrap();
/// let factory = Reconnecting::new_cyclic(&reactor, |me| ChatFactory {
///     reconnecting: me.clone(),
/// });
/// let _connector = reactor.connect_tcp("127.0.0.1", 6667, factory.clone());
/// // ... reactor.run(); later, to give up:
/// factory.stop_trying();
/// ```
pub struct ReconnectingClientFactory<F> {
    inner: Rc<F>,
    me: Weak<ReconnectingClientFactory<F>>,
    clock: Rc<dyn ReactorTime>,
    backoff: Cell<Backoff>,
    /// The next delay before jitter, in seconds (Twisted's `delay`).
    delay: Cell<f64>,
    retries: Cell<u32>,
    continue_trying: Cell<bool>,
    /// The scheduled reconnection (Twisted's `_callID`).
    call: RefCell<Option<DelayedCall>>,
    /// The connector while an attempt is in progress, for `stop_trying`. Cleared once the
    /// attempt ends, so the factory and its connector do not keep each other alive.
    connector: RefCell<Option<Connector>>,
    normal: RefCell<Box<dyn FnMut() -> f64>>,
}

impl<F: ClientFactory> ReconnectingClientFactory<F> {
    /// Wraps `inner`, scheduling reconnections on `clock` (the reactor, or a
    /// [`Clock`](crate::time::Clock) in tests), with the default [`Backoff`].
    pub fn new<C: ReactorTime + Clone + 'static>(clock: &C, inner: Rc<F>) -> Rc<Self> {
        Self::build(clock, |_| inner)
    }

    /// Like [`new`](Self::new), with the inner factory built by `make`, which gets a `Weak`
    /// link to the reconnecting factory to keep (for protocols to call
    /// [`reset_delay`](Self::reset_delay) through). The link cannot be upgraded inside
    /// `make`.
    pub fn new_cyclic<C: ReactorTime + Clone + 'static>(
        clock: &C,
        make: impl FnOnce(&Weak<Self>) -> F,
    ) -> Rc<Self> {
        Self::build(clock, |me| Rc::new(make(me)))
    }

    fn build<C: ReactorTime + Clone + 'static>(
        clock: &C,
        make: impl FnOnce(&Weak<Self>) -> Rc<F>,
    ) -> Rc<Self> {
        let clock: Rc<dyn ReactorTime> = Rc::new(clock.clone());
        let backoff = Backoff::default();
        Rc::new_cyclic(|me| ReconnectingClientFactory {
            inner: make(me),
            me: me.clone(),
            clock,
            backoff: Cell::new(backoff),
            delay: Cell::new(backoff.initial_delay.as_secs_f64()),
            retries: Cell::new(0),
            continue_trying: Cell::new(true),
            call: RefCell::new(None),
            connector: RefCell::new(None),
            normal: RefCell::new(Box::new({
                let mut source = crate::jitter::JitterSource::seeded();
                move || source.sample()
            })),
        })
    }

    /// The wrapped factory.
    pub fn inner(&self) -> &Rc<F> {
        &self.inner
    }

    /// The backoff policy in force.
    pub fn backoff(&self) -> Backoff {
        self.backoff.get()
    }

    /// Sets the backoff policy (Twisted sets the class attributes). Before the first retry,
    /// the next delay becomes the new `initial_delay`; later, it takes effect from the next
    /// [`reset_delay`](Self::reset_delay) (the growth and limits apply at once).
    pub fn set_backoff(&self, backoff: Backoff) {
        self.backoff.set(backoff);
        if self.retries.get() == 0 {
            self.delay.set(backoff.initial_delay.as_secs_f64());
        }
    }

    /// Replaces the source of randomness for the jitter: `sample` returns draws from the
    /// standard normal distribution (mean 0, standard deviation 1). The default is a small
    /// generator seeded from the time; tests inject a fixed sequence.
    pub fn set_normal_source(&self, sample: impl FnMut() -> f64 + 'static) {
        *self.normal.borrow_mut() = Box::new(sample);
    }

    /// How many attempts have failed in a row since the last success (Twisted's `retries`).
    pub fn retries(&self) -> u32 {
        self.retries.get()
    }

    /// The delay the next retry starts from, before jitter (Twisted's `delay`).
    pub fn delay(&self) -> Duration {
        Duration::from_secs_f64(self.delay.get())
    }

    /// Whether it will still reconnect (Twisted's `continueTrying`).
    pub fn continue_trying(&self) -> bool {
        self.continue_trying.get()
    }

    /// Whether a reconnection is scheduled and not yet made.
    pub fn retry_pending(&self) -> bool {
        self.call.borrow().as_ref().is_some_and(DelayedCall::active)
    }

    /// Call after a successful connection, typically from the protocol's `connection_made`:
    /// the delay goes back to `initial_delay` and the count of retries to 0, and trying is
    /// on again (Twisted's `resetDelay`).
    pub fn reset_delay(&self) {
        self.delay
            .set(self.backoff.get().initial_delay.as_secs_f64());
        self.retries.set(0);
        self.continue_trying.set(true);
    }

    /// Stops reconnecting (Twisted's `stopTrying`): a scheduled reconnection is cancelled,
    /// an attempt in progress is stopped, and a connection that is up stays up but is not
    /// remade once lost.
    pub fn stop_trying(&self) {
        let call = self.call.borrow_mut().take();
        if let Some(call) = call {
            let _ = call.cancel();
        }
        self.continue_trying.set(false);
        let connector = self.connector.borrow_mut().take();
        if let Some(connector) = connector {
            connector.stop_connecting();
        }
    }

    /// Has `connector` connect again after the next delay (Twisted's `retry`); called on
    /// every failure or loss while trying. Does nothing after
    /// [`stop_trying`](Self::stop_trying), or once `max_retries` attempts in a row failed.
    pub fn retry(&self, connector: &Connector) {
        if !self.continue_trying.get() {
            tracing::debug!(target: "torsion::protocol", "abandoning {connector:?} on request");
            return;
        }
        let backoff = self.backoff.get();
        let retries = self.retries.get().saturating_add(1);
        self.retries.set(retries);
        if backoff.max_retries.is_some_and(|max| retries > max) {
            tracing::info!(
                target: "torsion::protocol",
                "abandoning {connector:?} after {retries} retries"
            );
            return;
        }
        let mut delay = self.delay.get();
        if backoff.jitter != 0.0 {
            // Take the source out while it runs: it may be user code.
            let mut sample = self.normal.replace(Box::new(|| 0.0));
            let z = sample();
            *self.normal.borrow_mut() = sample;
            delay += delay * backoff.jitter * z;
        }
        if !delay.is_finite() || delay < 0.0 {
            delay = 0.0;
        }
        tracing::debug!(
            target: "torsion::protocol",
            "{connector:?} will retry in {delay:.3} seconds"
        );
        let me = self.me.clone();
        let connector = connector.clone();
        let call = self.clock.call_later_boxed(
            Duration::from_secs_f64(delay),
            Box::new(move || {
                if let Some(me) = me.upgrade() {
                    let call = me.call.borrow_mut().take();
                    drop(call);
                }
                // The user may have reconnected by hand meanwhile.
                if connector.state() == ConnectorState::Disconnected {
                    connector.connect();
                }
            }),
        );
        let previous = self.call.borrow_mut().replace(call);
        if let Some(previous) = previous {
            let _ = previous.cancel();
        }
        self.delay
            .set((delay * backoff.factor).min(backoff.max_delay.as_secs_f64()));
    }
}

impl<F: ClientFactory> Factory for ReconnectingClientFactory<F> {
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>> {
        // The attempt succeeded: forget the connector (see `connector`).
        let connector = self.connector.borrow_mut().take();
        drop(connector);
        self.inner.clone().build_protocol(addr)
    }

    fn start_factory(&self) {
        self.inner.start_factory();
    }

    fn stop_factory(&self) {
        self.inner.stop_factory();
    }
}

impl<F: ClientFactory> ClientFactory for ReconnectingClientFactory<F> {
    fn started_connecting(&self, connector: &Connector) {
        *self.connector.borrow_mut() = Some(connector.clone());
        self.inner.started_connecting(connector);
    }

    fn client_connection_failed(&self, connector: &Connector, reason: Failure) {
        let attempt = self.connector.borrow_mut().take();
        drop(attempt);
        self.inner.client_connection_failed(connector, reason);
        if self.continue_trying.get() {
            self.retry(connector);
        }
    }

    fn client_connection_lost(&self, connector: &Connector, reason: Failure) {
        let attempt = self.connector.borrow_mut().take();
        drop(attempt);
        self.inner.client_connection_lost(connector, reason);
        if self.continue_trying.get() {
            self.retry(connector);
        }
    }
}

impl<F> fmt::Debug for ReconnectingClientFactory<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconnectingClientFactory")
            .field("backoff", &self.backoff.get())
            .field("delay", &self.delay.get())
            .field("retries", &self.retries.get())
            .field("continue_trying", &self.continue_trying.get())
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// How many ports and connectors use each factory, by address (Twisted's
    /// `Factory.numPorts`), so `start_factory` and `stop_factory` run once per spell of use.
    static FACTORY_USERS: std::cell::RefCell<std::collections::HashMap<usize, usize>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn factory_key<F: Factory + ?Sized>(factory: &Rc<F>) -> usize {
    Rc::as_ptr(factory) as *const () as usize
}

/// Counts one more user of `factory` (a port, a connector, an endpoint); the first calls
/// its `start_factory` (Twisted's `Factory.doStart`).
pub(crate) fn factory_started<F: Factory + ?Sized>(factory: &Rc<F>) {
    let first = FACTORY_USERS.with(|users| {
        let mut users = users.borrow_mut();
        let n = users.entry(factory_key(factory)).or_insert(0);
        *n += 1;
        *n == 1
    });
    if first {
        factory.start_factory();
    }
}

/// Counts one user of `factory` less; the last calls its `stop_factory` (Twisted's
/// `Factory.doStop`).
pub(crate) fn factory_stopped<F: Factory + ?Sized>(factory: &Rc<F>) {
    let last = FACTORY_USERS.with(|users| {
        let mut users = users.borrow_mut();
        let key = factory_key(factory);
        match users.get_mut(&key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                users.remove(&key);
                true
            }
            None => false,
        }
    });
    if last {
        factory.stop_factory();
    }
}
