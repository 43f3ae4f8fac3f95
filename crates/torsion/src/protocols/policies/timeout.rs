//! Idle timeouts (Twisted's `TimeoutMixin`, `TimeoutFactory` and `TimeoutProtocol`):
//! [`Timeout`], which a protocol embeds, and [`TimeoutFactory`], which gives one to each
//! connection of a factory and resets it on every read and write.
//!
//! Invariant: a `Timeout` holds its transport weakly and cancels its timer when dropped,
//! so it never keeps a connection alive nor leaves a call pending after it; the timer runs
//! from the loop, never from inside the protocol.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::Duration;

use super::{WrapperHooks, WrappingFactory, WrappingTransport};
use crate::defer::Failure;
use crate::net::{Address, Transport, TransportOps};
use crate::protocol::{Factory, Protocol};
use crate::time::{DelayedCall, ReactorTime};

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
