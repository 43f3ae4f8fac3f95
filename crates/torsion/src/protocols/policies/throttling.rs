//! Limiting the number and the bandwidth of a factory's connections (Twisted's
//! `ThrottlingFactory` and `ThrottlingProtocol`): [`ThrottlingFactory`], its
//! [`ThrottleLimits`], and the `Throttle` policy its connections share.
//!
//! Invariant: the once-a-second checks run only while there are connections (started with
//! the first, stopped with the last), so no timer outlives them; a throttle is lifted only
//! by its own timer, through the wrapping transports' `unthrottle_*`, never by a
//! protocol's own pause and resume.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::Duration;

use super::wrapping::Registry;
use super::{WrapperHooks, WrappingFactory, WrappingTransport};
use crate::defer::Failure;
use crate::net::{Address, Transport};
use crate::protocol::{ClientFactory, Factory, Protocol};
use crate::time::{DelayedCall, ReactorTime};

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
    fn started_connecting(&self, connector: &crate::net::Connector) {
        self.wrapping.started_connecting(connector);
    }

    fn client_connection_failed(&self, connector: &crate::net::Connector, reason: Failure) {
        self.wrapping.client_connection_failed(connector, reason);
    }

    fn client_connection_lost(&self, connector: &crate::net::Connector, reason: Failure) {
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
