//! The services of `twisted.application.internet` that run something while they run:
//! [`TimerService`], a function called every interval, and
//! [`StreamServerEndpointService`], a port listened on.
//!
//! Invariant: a stopped service leaves nothing behind: stopping a `TimerService` stops its
//! loop (no delayed call stays scheduled), and stopping a `StreamServerEndpointService`
//! cancels a listen in progress and stops listening on the port; the stop's Deferred fires
//! only once that is done.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use super::{LOG_TARGET, Service, ServiceState};
use crate::defer::IntoOutcome;
use crate::endpoints::{ListeningPort, ServerEndpoint};
use crate::error::{Cancelled, InvalidArgument};
use crate::protocol::Factory;
use crate::task::LoopingCall;
use crate::time::IntoDelay;
use crate::time::{DelayedCall, DelayedCallInfo, ReactorTime, Time};
use crate::{Deferred, Failure};

/// Any time source as one sized, clonable type, for [`LoopingCall`].
#[derive(Clone)]
struct SharedClock(Rc<dyn ReactorTime>);

impl SharedClock {
    fn new<C: ReactorTime + Clone + 'static>(clock: &C) -> SharedClock {
        SharedClock(Rc::new(clock.clone()))
    }
}

impl ReactorTime for SharedClock {
    fn now(&self) -> Time {
        self.0.now()
    }

    #[track_caller]
    fn call_later_boxed(&self, delay: Duration, f: Box<dyn FnOnce()>) -> DelayedCall {
        self.0.call_later_boxed(delay, f)
    }

    fn delayed_calls(&self) -> Vec<DelayedCallInfo> {
        self.0.delayed_calls()
    }
}

// ===== TimerService =====

/// Calls a function every interval while running (Twisted's `internet.TimerService`).
///
/// Starting it starts a [`LoopingCall`] with `now`: the first call is made at once, inside
/// [`start_service`](Service::start_service). Stopping it stops the loop; the stop's
/// Deferred fires once a call in progress (one whose Deferred has not fired yet) has
/// finished. If the function fails, the failure is logged and the loop stops, as in
/// Twisted; the service still counts as running until stopped. An interval that is
/// negative or not finite makes `start_service` fail with [`InvalidArgument`], as
/// Twisted's `startService` raises `ValueError`.
///
/// # Examples
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use torsion::application::{Service, TimerService};
/// use torsion::time::{Clock, ReactorTime};
///
/// // Settings are checked when the service starts.
/// let clock = Clock::new();
/// assert!(TimerService::new(&clock, -1.0, || Ok(())).start_service().is_err());
///
/// let ticks = Rc::new(Cell::new(0));
/// let t = ticks.clone();
/// let timer = TimerService::new(&clock, 1.0, move || {
///     t.set(t.get() + 1);
///     Ok(())
/// });
///
/// timer.start_service().unwrap();
/// clock.pump(&[1.0, 1.0]);
/// assert_eq!(ticks.get(), 3); // at 0, 1 and 2 s
///
/// let mut stopped = timer.stop_service();
/// assert!(stopped.take_result().unwrap().is_ok());
/// assert!(clock.delayed_calls().is_empty());
/// ```
pub struct TimerService {
    state: ServiceState,
    /// The interval, or why it is not one (reported by `start_service`).
    interval: Result<Duration, InvalidArgument>,
    call: LoopingCall<SharedClock>,
    /// The running loop's Deferred (failures already logged).
    finished: RefCell<Option<Deferred<()>>>,
}

impl TimerService {
    /// A stopped timer calling `f` every `interval` on `clock` (the reactor, or a
    /// [`Clock`](crate::time::Clock) in tests; Twisted's `TimerService(step, callable)`).
    /// `f` returns `Result<(), Failure>` or a `Deferred<()>`, as for [`LoopingCall::new`];
    /// the interval is `f64` seconds, a [`Duration`] or whole seconds ([`IntoDelay`]).
    /// An interval that is negative or not finite is reported by
    /// [`start_service`](Service::start_service).
    pub fn new<C, R>(
        clock: &C,
        interval: impl IntoDelay,
        f: impl FnMut() -> R + 'static,
    ) -> Rc<TimerService>
    where
        C: ReactorTime + Clone + 'static,
        R: IntoOutcome<Output = ()>,
    {
        Rc::new(TimerService {
            state: ServiceState::new(),
            interval: interval.try_into_delay(),
            call: LoopingCall::new(SharedClock::new(clock), f),
            finished: RefCell::new(None),
        })
    }

    /// The interval between calls (Twisted's `step`); `None` if the interval given is not
    /// one (negative or not finite), which makes the service fail to start.
    pub fn interval(&self) -> Option<Duration> {
        self.interval.as_ref().ok().copied()
    }

    /// How many times the function has been called since the service last started.
    pub fn call_count(&self) -> u64 {
        self.call.call_count()
    }
}

impl Service for TimerService {
    fn service_state(&self) -> &ServiceState {
        &self.state
    }

    /// Marks the service running and starts the loop, calling the function at once.
    /// Starting a running service does nothing.
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`] if the interval is negative or not finite (Twisted's
    /// `LoopingCall.start` raises `ValueError`); the service stays stopped.
    fn start_service(&self) -> Result<(), Failure> {
        if self.running() {
            return Ok(());
        }
        let interval = self.interval.clone()?;
        self.state.set_running(true);
        let started = match self.call.start(interval, true) {
            Ok(d) => d,
            Err(e) => {
                self.state.set_running(false);
                return Err(e.into());
            }
        };
        let finished = started.add_errback(|failure| {
            crate::log::error!(target: LOG_TARGET, "TimerService's function failed: {failure:#}");
            Ok(())
        });
        let previous = self.finished.borrow_mut().replace(finished);
        drop(previous);
        Ok(())
    }

    /// Marks the service stopped and stops the loop; the Deferred fires once a call in
    /// progress has finished.
    fn stop_service(&self) -> Deferred<()> {
        self.state.set_running(false);
        self.call.stop();
        let finished = self.finished.borrow_mut().take();
        finished.unwrap_or_else(|| Deferred::succeed(()))
    }
}

impl fmt::Debug for TimerService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerService")
            .field("state", &self.state)
            .field("interval", &self.interval)
            .field("call", &self.call)
            .finish()
    }
}

// ===== StreamServerEndpointService =====

/// Listens on a server endpoint while running (Twisted's
/// `internet.StreamServerEndpointService`).
///
/// It listens in [`privileged_start_service`](Service::privileged_start_service), so that a
/// runner starting as root binds low ports before dropping its privileges, or in
/// [`start_service`](Service::start_service) if that was not called. A listen that fails at
/// once (a port in use; TCP, UNIX and systemd endpoints all listen at once) fails that
/// start, which returns the failure and leaves the service stopped, so that
/// [`run_application`] fails instead of running while listening nowhere (as Twisted does
/// for the services twistd builds from strings, with `_raiseSynchronously`). A listen that
/// fails later, for an endpoint that listens asynchronously, is logged, as in Twisted.
/// Either failure is kept: see [`listen_failure`](Self::listen_failure). Stopping it stops
/// listening; the stop's Deferred fires once the port is closed (connections already
/// accepted are left alone, as in Twisted). A listen still in progress is cancelled.
///
/// It listens with its endpoint's backlog:
/// [`DEFAULT_BACKLOG`](crate::net::tcp::DEFAULT_BACKLOG) (1024; Twisted's is 50) unless the
/// endpoint sets another, as `tcp:8080:backlog=4096` or
/// [`TcpServerEndpoint::backlog`](crate::endpoints::TcpServerEndpoint::backlog) do.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use torsion::application::{Service, StreamServerEndpointService};
/// use torsion::endpoints::server_from_string;
/// use torsion::protocol::Protocol;
/// use torsion::Reactor;
///
/// struct Quiet;
/// impl Protocol for Quiet {}
///
/// let reactor = Reactor::new().unwrap();
/// let endpoint = server_from_string(&reactor, "tcp:0:interface=127.0.0.1").unwrap();
/// let service = StreamServerEndpointService::new(endpoint, Rc::new(|| Quiet));
/// service.start_service().unwrap();
/// let port = service.port().unwrap();
/// assert_ne!(port.host().port(), Some(0));
///
/// // A second service on the same port cannot start.
/// let address = format!("tcp:{}:interface=127.0.0.1", port.host().port().unwrap());
/// let again = server_from_string(&reactor, &address).unwrap();
/// let busy = StreamServerEndpointService::new(again, Rc::new(|| Quiet));
/// let failure = busy.start_service().unwrap_err();
/// assert!(failure.check::<torsion::error::CannotListen>());
/// assert!(!busy.running());
///
/// drop(service.stop_service());
/// assert!(service.port().is_none());
/// ```
///
/// [`run_application`]: super::run_application
pub struct StreamServerEndpointService {
    state: ServiceState,
    endpoint: Box<dyn ServerEndpoint>,
    factory: Rc<dyn Factory>,
    /// The listen in progress or done, yielding the port (or `None` if it failed); Twisted's
    /// `_waitingForPort`.
    waiting: RefCell<Option<Deferred<Option<ListeningPort>>>>,
    port: Rc<RefCell<Option<ListeningPort>>>,
    failure: Rc<RefCell<Option<Failure>>>,
}

impl StreamServerEndpointService {
    /// A stopped service that will listen on `endpoint` with `factory` (Twisted's
    /// `StreamServerEndpointService(endpoint, factory)`).
    pub fn new(endpoint: Box<dyn ServerEndpoint>, factory: Rc<dyn Factory>) -> Rc<Self> {
        Rc::new(StreamServerEndpointService {
            state: ServiceState::new(),
            endpoint,
            factory,
            waiting: RefCell::new(None),
            port: Rc::new(RefCell::new(None)),
            failure: Rc::new(RefCell::new(None)),
        })
    }

    /// The endpoint it listens on.
    pub fn endpoint(&self) -> &dyn ServerEndpoint {
        &*self.endpoint
    }

    /// The factory building the protocols.
    pub fn factory(&self) -> &Rc<dyn Factory> {
        &self.factory
    }

    /// The listening port, once listening and until stopped.
    pub fn port(&self) -> Option<ListeningPort> {
        self.port.borrow().clone()
    }

    /// Why the last attempt to listen failed, if it did: the failure a start returned, or
    /// one logged because the endpoint failed later. Cleared by the next attempt.
    pub fn listen_failure(&self) -> Option<Failure> {
        self.failure.borrow().clone()
    }
}

impl Service for StreamServerEndpointService {
    fn service_state(&self) -> &ServiceState {
        &self.state
    }

    /// Listens, unless already listening or trying to.
    ///
    /// # Errors
    ///
    /// Why the endpoint could not listen, if it failed at once (for TCP,
    /// [`CannotListen`](crate::error::CannotListen)). The next start tries again.
    fn privileged_start_service(&self) -> Result<(), Failure> {
        if self.waiting.borrow().is_some() {
            return Ok(());
        }
        *self.failure.borrow_mut() = None;
        let listening = self.endpoint.listen(self.factory.clone());
        let port_slot = self.port.clone();
        let failure_slot = self.failure.clone();
        let description = format!("{:?}", self.endpoint);
        // A failure while `listen` is still on the stack is returned, not logged.
        let at_once = Rc::new(Cell::new(true));
        let synchronous = at_once.clone();
        let waiting = listening.add_both(move |result| -> Result<_, Failure> {
            match result {
                Ok(port) => {
                    // Twisted logs "<Factory> starting on <port>" here.
                    tracing::info!(target: LOG_TARGET, address = %port.host(), "listening on {}", port.host());
                    *port_slot.borrow_mut() = Some(port.clone());
                    Ok(Some(port))
                }
                Err(failure) => {
                    if !failure.check::<Cancelled>() {
                        if !synchronous.get() {
                            crate::log::error!(
                                target: LOG_TARGET,
                                "{description} could not listen: {failure}"
                            );
                        }
                        *failure_slot.borrow_mut() = Some(failure);
                    }
                    Ok(None)
                }
            }
        });
        at_once.set(false);
        let failed = self.failure.borrow().clone();
        if let Some(failure) = failed {
            // Fired already, with no port: nothing to keep, so the next start listens.
            drop(waiting);
            return Err(failure);
        }
        *self.waiting.borrow_mut() = Some(waiting);
        Ok(())
    }

    /// Marks the service running and listens, if
    /// [`privileged_start_service`](Service::privileged_start_service) did not already.
    ///
    /// # Errors
    ///
    /// As for `privileged_start_service`; the service is left stopped (Twisted leaves it
    /// marked running).
    fn start_service(&self) -> Result<(), Failure> {
        self.state.set_running(true);
        let listening = self.privileged_start_service();
        if listening.is_err() {
            self.state.set_running(false);
        }
        listening
    }

    /// Marks the service stopped and stops listening; the Deferred fires once the port is
    /// closed (at once if it never listened).
    fn stop_service(&self) -> Deferred<()> {
        self.state.set_running(false);
        let waiting = self.waiting.borrow_mut().take();
        let Some(waiting) = waiting else {
            return Deferred::succeed(());
        };
        waiting.cancel();
        let port_slot = self.port.clone();
        waiting.add_callback(move |port| {
            let taken = port_slot.borrow_mut().take();
            drop(taken);
            match port {
                Some(port) => port.stop_listening(),
                None => Deferred::succeed(()),
            }
        })
    }
}

impl fmt::Debug for StreamServerEndpointService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamServerEndpointService")
            .field("state", &self.state)
            .field("endpoint", &self.endpoint)
            .field("listening", &self.port.borrow().as_ref().map(|p| p.host()))
            .finish()
    }
}
