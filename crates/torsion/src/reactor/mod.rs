//! The reactor: the event loop at the centre of torsion (Twisted's
//! `twisted.internet.reactor`, with `IReactorCore`, `IReactorTime`, `IReactorFDSet` and
//! `IReactorThreads`).
//!
//! A [`Reactor`] is a cheap, `!Send` handle used on the thread that runs it; a
//! [`ReactorHandle`] is its `Send + Sync` face for other threads
//! ([`call_from_thread`](ReactorHandle::call_from_thread), [`stop`](ReactorHandle::stop)).
//!
//! One iteration of the loop: the calls queued from other threads (those present when the
//! iteration starts), due timers, queued tasks of the local executor (within a budget), the
//! shutdown if `stop` was called, then one wait for I/O readiness in the
//! [`backend`], with timeout 0 if work remains and otherwise until the next timer.
//!
//! Invariant: no borrow of the reactor's state is held while user code runs; everything
//! user code calls from inside a callback (`stop`, `call_later`, `add_reader`, …) works.

pub mod backend;
mod descriptors;
mod signals;
mod triggers;
pub(crate) mod waker;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::defer::{Deferred, DeferredList, Failure};
use crate::error::{
    ConnectionDone, ConnectionLost, InvalidArgument, ReactorAlreadyRunning, ReactorNotRestartable,
    ReactorNotRunning,
};
use crate::threads::ThreadPool;
use crate::time::{DelayedCall, DelayedCallInfo, ReactorTime, Time, TimerQueue};

use backend::{BackendKind, Event, Interest, Poller};
use descriptors::Registration;
pub use descriptors::{FileDescriptor, ReadDescriptor, WriteDescriptor};
use triggers::{EventTriggers, Trigger, run_trigger};
pub use triggers::{Phase, SystemEvent, TriggerId, TriggerOutput};
use waker::Waker;

/// The token the waker is registered under (descriptor tokens carry a generation ≥ 1).
const WAKER_TOKEN: u64 = u64::MAX;
/// Numbers reactors, so that a [`TriggerId`] names the reactor it belongs to.
static NEXT_REACTOR_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The reactor running on this thread, for [`Reactor::current`].
    static CURRENT: RefCell<Option<Weak<Inner>>> = const { RefCell::new(None) };
}

/// How many queued tasks one iteration polls before it looks at I/O again.
const TASK_BUDGET: usize = 128;
/// Twisted's default for how long shutdown waits for `before` triggers' Deferreds.
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

type ThreadCall = Box<dyn FnOnce(&Reactor) + Send>;
/// Completes the Deferred of a thread-pool call with its (type-erased) result.
pub(crate) type ThreadResult = Box<dyn FnOnce(Box<dyn std::any::Any + Send>)>;

/// The part of a reactor other threads (and signal handlers) reach.
struct Shared {
    owner: ThreadId,
    waker: Waker,
    calls: Mutex<ThreadCalls>,
    /// Set when calls are queued and not yet taken, so a burst costs one wake-up.
    notified: AtomicBool,
    /// A signal asked the reactor to stop (the signal number, or 0).
    stop_signal: AtomicI32,
}

struct ThreadCalls {
    queue: VecDeque<ThreadCall>,
    /// The reactor has finished: calls are dropped instead of queued.
    closed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    /// Built, `run` not called yet.
    Idle,
    /// `run` is in progress (startup, the loop, or shutdown).
    Running,
    /// `run` has returned; the reactor cannot run again.
    Finished,
}

struct Inner {
    poller: RefCell<Poller>,
    shared: Arc<Shared>,
    timers: TimerQueue,
    epoch: Instant,
    state: Cell<RunState>,
    /// Between the end of startup and `stop` (Twisted's `reactor.running`).
    running: Cell<bool>,
    /// `stop` was called; the shutdown event fires at the end of the next iteration.
    just_stopped: Cell<bool>,
    /// The loop keeps going while this is set (cleared by the during-shutdown phase).
    looping: Cell<bool>,
    /// The shutdown event has begun.
    shutting_down: Cell<bool>,
    /// The failure `run` returns, from [`Reactor::stop_with_failure`].
    exit_failure: RefCell<Option<Failure>>,
    /// Work to run after the current callback returns (see [`Reactor::call_soon`]).
    soon: RefCell<VecDeque<Box<dyn FnOnce()>>>,
    /// Tells this reactor's trigger ids from another's.
    id: u64,
    startup: RefCell<EventTriggers>,
    shutdown: RefCell<EventTriggers>,
    trigger_serial: Cell<u64>,
    shutdown_timeout: Cell<Duration>,
    descriptors: RefCell<Slab<Registration>>,
    by_fd: RefCell<HashMap<RawFd, usize>>,
    generation: Cell<u32>,
    events: RefCell<Vec<Event>>,
    pool: RefCell<Option<Arc<ThreadPool>>>,
    pool_max: Cell<usize>,
    thread_results: RefCell<Slab<ThreadResult>>,
    install_signals: bool,
    /// The one buffer every connection reads into (taken out while a read is delivered).
    read_buffer: RefCell<Option<Box<[u8]>>>,
    /// Transports with output to send before the next wait.
    flushes: RefCell<Vec<Rc<dyn Flush>>>,
    /// How many ports and connectors use each factory (by address), for
    /// `start_factory` / `stop_factory`.
    factory_users: RefCell<HashMap<usize, usize>>,
}

/// Size of the shared read buffer: one `recv` reads at most this much (Twisted's 64 KiB).
pub(crate) const READ_BUFFER_SIZE: usize = 64 * 1024;

/// Something with buffered output to send when the loop gets to it.
pub(crate) trait Flush {
    fn flush(&self);
}

/// The event loop (Twisted's reactor). A cheap handle: clones share one reactor.
///
/// Unlike Twisted's, a reactor is an ordinary value: build as many as you like (one per
/// thread at a time runs), each with its own backend. It runs once: after
/// [`run`](Reactor::run) returns, build a new one.
///
/// # Examples
///
/// The tutorials' countdown; callbacks reach the running reactor through
/// [`Reactor::current`], so none captures a clone:
///
/// ```
/// use torsion::prelude::*;
///
/// fn count(left: u32) {
///     let Some(reactor) = Reactor::current() else { return };
///     if left == 0 {
///         let _ = reactor.stop();
///     } else {
///         println!("{left}...");
///         reactor.call_later(0.01, move || count(left - 1));
///     }
/// }
///
/// let reactor = Reactor::new().unwrap();
/// reactor.call_when_running(|| count(3));
/// reactor.run().unwrap();
/// ```
#[derive(Clone)]
pub struct Reactor {
    inner: Rc<Inner>,
}

/// The `Send + Sync` handle of a [`Reactor`], for other threads (Twisted's
/// `callFromThread` and `stop` from a thread).
#[derive(Clone)]
pub struct ReactorHandle {
    shared: Arc<Shared>,
}

/// Builds a [`Reactor`] with options (Twisted: which reactor is installed, and how).
#[derive(Debug, Clone)]
pub struct Builder {
    backend: Option<BackendKind>,
    install_signals: bool,
    shutdown_timeout: Duration,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            backend: None,
            install_signals: false,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}

impl Builder {
    /// Chooses the backend. Without this, `TORSION_REACTOR` decides, then the platform's
    /// default (epoll on Linux).
    pub fn backend(mut self, kind: BackendKind) -> Self {
        self.backend = Some(kind);
        self
    }

    /// Whether `run` makes SIGINT and SIGTERM stop the reactor gracefully (Twisted's
    /// `installSignalHandlers`). Off by default for an embedded reactor; on for
    /// [`react`](crate::task::react) and the runner.
    pub fn install_signal_handlers(mut self, yes: bool) -> Self {
        self.install_signals = yes;
        self
    }

    /// How long shutdown waits for the Deferreds of `before`-shutdown triggers before it
    /// goes on (logging that it did); 30 s by default.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Builds the reactor.
    ///
    /// # Errors
    ///
    /// `TORSION_REACTOR` names no backend ([`UnknownBackend`](crate::error::UnknownBackend)),
    /// or the backend or its waker cannot be created (descriptor limits).
    pub fn build(self) -> Result<Reactor, Failure> {
        let kind = match self.backend {
            Some(kind) => kind,
            None => BackendKind::from_env()?.unwrap_or_else(BackendKind::default_for_platform),
        };
        let mut poller = Poller::new(kind)?;
        let waker = Waker::new()?;
        poller.register(waker.as_fd().as_raw_fd(), WAKER_TOKEN, Interest::READABLE)?;
        let epoch = Instant::now();
        let timers = TimerQueue::new(Rc::new(move || Time::from_duration(epoch.elapsed())));
        let inner = Inner {
            poller: RefCell::new(poller),
            shared: Arc::new(Shared {
                owner: std::thread::current().id(),
                waker,
                calls: Mutex::new(ThreadCalls {
                    queue: VecDeque::new(),
                    closed: false,
                }),
                notified: AtomicBool::new(false),
                stop_signal: AtomicI32::new(0),
            }),
            timers,
            epoch,
            state: Cell::new(RunState::Idle),
            running: Cell::new(false),
            just_stopped: Cell::new(false),
            looping: Cell::new(false),
            shutting_down: Cell::new(false),
            exit_failure: RefCell::new(None),
            soon: RefCell::new(VecDeque::new()),
            id: NEXT_REACTOR_ID.fetch_add(1, Ordering::Relaxed),
            startup: RefCell::new(EventTriggers::default()),
            shutdown: RefCell::new(EventTriggers::default()),
            trigger_serial: Cell::new(0),
            shutdown_timeout: Cell::new(self.shutdown_timeout),
            descriptors: RefCell::new(Slab::new()),
            by_fd: RefCell::new(HashMap::new()),
            generation: Cell::new(0),
            events: RefCell::new(Vec::with_capacity(64)),
            pool: RefCell::new(None),
            pool_max: Cell::new(10),
            thread_results: RefCell::new(Slab::new()),
            install_signals: self.install_signals,
            read_buffer: RefCell::new(None),
            flushes: RefCell::new(Vec::new()),
            factory_users: RefCell::new(HashMap::new()),
        };
        Ok(Reactor {
            inner: Rc::new(inner),
        })
    }
}

impl Reactor {
    /// A reactor on the backend `TORSION_REACTOR` names, or the platform's default, without
    /// signal handling (right for a reactor embedded in a larger program). A server that
    /// should stop cleanly on Ctrl-C uses
    /// `Reactor::builder().install_signal_handlers(true).build()`, or
    /// [`task::react`](crate::task::react), which does so. See [`Reactor::builder`].
    ///
    /// # Errors
    ///
    /// As [`Builder::build`].
    pub fn new() -> Result<Reactor, Failure> {
        Builder::default().build()
    }

    /// A [`Builder`] to choose the backend, signal handling and shutdown timeout.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The backend this reactor runs on.
    pub fn backend(&self) -> BackendKind {
        self.inner.poller.borrow().kind()
    }

    /// The `Send + Sync` handle for other threads.
    pub fn handle(&self) -> ReactorHandle {
        ReactorHandle {
            shared: self.inner.shared.clone(),
        }
    }

    /// Whether the reactor is running: startup has finished and `stop` has not been called
    /// (Twisted's `reactor.running`).
    pub fn is_running(&self) -> bool {
        self.inner.running.get()
    }

    /// Runs the loop until [`stop`](Reactor::stop) and the shutdown that follows have
    /// completed (Twisted's `reactor.run`). Startup triggers run first, synchronously.
    ///
    /// # Errors
    ///
    /// [`ReactorAlreadyRunning`] if called from inside `run`, [`ReactorNotRestartable`] if
    /// this reactor has run before, and the failure given to
    /// [`stop_with_failure`](Reactor::stop_with_failure) if the reactor was stopped with one.
    pub fn run(&self) -> Result<(), Failure> {
        match self.inner.state.get() {
            RunState::Idle => {}
            RunState::Running => return Err(ReactorAlreadyRunning.into()),
            RunState::Finished => return Err(ReactorNotRestartable.into()),
        }
        self.inner.state.set(RunState::Running);
        self.inner.looping.set(true);
        let previous = CURRENT.with(|c| c.replace(Some(Rc::downgrade(&self.inner))));
        let weak = Rc::downgrade(&self.inner);
        let previous_hook = crate::defer::chain::set_after_callback(Some(Rc::new(move |work| {
            match weak.upgrade() {
                Some(inner) => inner.soon.borrow_mut().push_back(work),
                None => work(),
            }
        })));
        let unpark_target = self.inner.shared.clone();
        crate::executor::set_unpark(Some(Arc::new(move || unpark_target.waker.wake())));
        let signals = if self.inner.install_signals {
            signals::install(&self.inner.shared)
        } else {
            Vec::new()
        };
        self.fire_event(SystemEvent::Startup);
        self.run_soon();
        while self.inner.looping.get() {
            self.iterate();
        }
        // One last look at the thread-call queue and I/O, as Twisted does after shutdown.
        self.run_thread_calls();
        self.run_soon();
        signals::uninstall(signals);
        crate::executor::set_unpark(None);
        if let Some(pool) = self.inner.pool.borrow_mut().take() {
            pool.stop();
        }
        self.close_thread_calls();
        CURRENT.with(|c| *c.borrow_mut() = previous);
        crate::defer::chain::set_after_callback(previous_hook);
        // What the steps since the loop's end queued (a Resolver dropped with the thread
        // pool, say) runs now rather than never.
        self.run_soon();
        self.inner.state.set(RunState::Finished);
        match self.inner.exit_failure.borrow_mut().take() {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    /// Stops the reactor (Twisted's `reactor.stop`): the shutdown event fires at the end of
    /// the current iteration, then `run` returns. Safe from inside any callback; at the end
    /// of a Deferred chain, Twisted's `d.addBoth(lambda _: reactor.stop())` is
    /// `d.add_both(move |_| Ok(reactor.stop()?))`.
    ///
    /// # Errors
    ///
    /// [`ReactorNotRunning`] if the reactor is not running or already stopping.
    pub fn stop(&self) -> Result<(), ReactorNotRunning> {
        if !self.inner.running.get() || self.inner.just_stopped.get() {
            return Err(ReactorNotRunning);
        }
        self.inner.running.set(false);
        self.inner.just_stopped.set(true);
        Ok(())
    }

    /// Stops the reactor as [`stop`](Reactor::stop) does, and makes [`run`](Reactor::run)
    /// return `failure` (so a program exits non-zero without stashing it somewhere). If the
    /// reactor is already stopping, `run` still returns the first failure given. Twisted has
    /// no counterpart: its programs call `stop` and keep the error aside.
    pub fn stop_with_failure(&self, failure: impl Into<Failure>) {
        let failure = failure.into();
        if matches!(self.inner.state.get(), RunState::Finished) {
            crate::log::error!(target: "torsion::reactor", "stop_with_failure after the reactor finished: {failure:#}");
            return;
        }
        self.inner.exit_failure.borrow_mut().get_or_insert(failure);
        let stopping = self.inner.just_stopped.get() || self.inner.shutting_down.get();
        if self.stop().is_err() && !stopping {
            // Not running yet (before `run`, or during startup): stop once it is.
            let r = self.clone();
            self.add_system_event_trigger(Phase::After, SystemEvent::Startup, move || {
                let _ = r.stop();
            });
        }
    }

    /// A callback for the end of a chain that stops the reactor: with the chain's failure if
    /// it failed ([`stop_with_failure`](Reactor::stop_with_failure)), plainly otherwise.
    /// Twisted's `d.addBoth(lambda _: reactor.stop())` is `d.add_both(reactor.stopper())`.
    /// A reactor that is already stopping is left to stop.
    ///
    /// # Examples
    ///
    /// ```
    /// use torsion::{Failure, Reactor};
    ///
    /// let reactor = Reactor::new().unwrap();
    /// let r = reactor.clone();
    /// reactor.call_when_running(move || {
    ///     torsion::task::defer_later(&r, 0.01, || Err::<(), _>(Failure::msg("no poem")))
    ///         .add_both(r.stopper());
    /// });
    /// let outcome = reactor.run();
    /// assert_eq!(outcome.unwrap_err().to_string(), "no poem");
    /// ```
    pub fn stopper<T: 'static>(
        &self,
    ) -> impl FnOnce(Result<T, Failure>) -> Result<(), Failure> + 'static {
        let reactor = self.clone();
        move |result| {
            match result {
                Ok(_) => {
                    let _ = reactor.stop();
                }
                Err(failure) => reactor.stop_with_failure(failure),
            }
            Ok(())
        }
    }

    /// A Deferred that fires when the reactor begins to shut down (at the start of the
    /// before-shutdown phase), so a server's `async` main can end with
    /// `reactor.until_shutdown().await` and return as the reactor stops, after a signal
    /// or a `stop`. Twisted has no counterpart: its servers return from `main` into
    /// `reactor.run()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use torsion::prelude::*;
    ///
    /// let reactor = Reactor::new().unwrap();
    /// let r = reactor.clone();
    /// reactor.call_later(0.01, move || {
    ///     let _ = r.stop();
    /// });
    /// let mut stopped = reactor.until_shutdown();
    /// reactor.run().unwrap();
    /// assert!(stopped.take_result().unwrap().is_ok());
    /// ```
    #[track_caller]
    pub fn until_shutdown(&self) -> Deferred<()> {
        let (resolver, stopped) = Deferred::new();
        if self.inner.shutting_down.get() {
            resolver.callback(());
        } else {
            self.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move || {
                resolver.callback(());
            });
        }
        stopped
    }

    /// The reactor running on this thread, if one is: valid from anywhere `run` has called
    /// into (callbacks, protocols, tasks), so code there needs no clone of the reactor
    /// (Twisted's global `from twisted.internet import reactor`). `None` outside `run`.
    pub fn current() -> Option<Reactor> {
        CURRENT
            .with(|c| c.borrow().as_ref().and_then(Weak::upgrade))
            .map(|inner| Reactor { inner })
    }

    /// Runs `f` after the callback running now returns, before the loop next waits for I/O,
    /// in the order queued (Twisted's `callLater(0, f)`, without a timer). This is the
    /// reactor's one answer to "an action requested from inside a callback": what closing,
    /// disconnecting or stopping causes (`connection_lost`, the rest of a shutdown, …) is
    /// queued here, so no object is ever called while it is already running. Work queued
    /// before `run` runs once the reactor has started. A panic in `f` is reported and the
    /// queue goes on.
    pub fn call_soon(&self, f: impl FnOnce() + 'static) {
        self.inner.soon.borrow_mut().push_back(Box::new(f));
    }

    /// Runs the work [`call_soon`](Reactor::call_soon) queued, including what it queues.
    fn run_soon(&self) {
        loop {
            let next = self.inner.soon.borrow_mut().pop_front();
            let Some(f) = next else { return };
            if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
                crate::log::error!(
                    target: "torsion::reactor",
                    "work queued with call_soon panicked: {}",
                    Failure::from_panic(&*payload)
                );
            }
        }
    }

    /// Runs `f` once the reactor is running: now if it is, else after startup (Twisted's
    /// `callWhenRunning`).
    pub fn call_when_running(&self, f: impl FnOnce() + 'static) -> Option<TriggerId> {
        if self.is_running() {
            f();
            None
        } else {
            Some(self.add_system_event_trigger(Phase::After, SystemEvent::Startup, f))
        }
    }

    /// Adds a trigger for a system event (Twisted's `addSystemEventTrigger`). A `before`
    /// trigger of shutdown may return a Deferred: the `during` and `after` phases wait for it
    /// (at most the builder's shutdown timeout). A trigger that fails or panics is logged and
    /// the others still run.
    pub fn add_system_event_trigger<R: TriggerOutput>(
        &self,
        phase: Phase,
        event: SystemEvent,
        f: impl FnOnce() -> R + 'static,
    ) -> TriggerId {
        let serial = self.inner.trigger_serial.get() + 1;
        self.inner.trigger_serial.set(serial);
        let trigger: Trigger = Box::new(move || f().into_wait());
        self.triggers(event)
            .borrow_mut()
            .phase_mut(phase)
            .push_back((serial, trigger));
        TriggerId {
            reactor: self.inner.id,
            event,
            phase,
            serial,
        }
    }

    /// Removes a trigger that has not run yet (Twisted's `removeSystemEventTrigger`).
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`] if `id` belongs to another reactor, or its trigger has already
    /// run or been removed (Twisted raises `ValueError`).
    pub fn remove_system_event_trigger(&self, id: TriggerId) -> Result<(), InvalidArgument> {
        if id.reactor != self.inner.id {
            return Err(InvalidArgument(format!(
                "{id:?} belongs to another reactor"
            )));
        }
        let removed = {
            let mut triggers = self.triggers(id.event).borrow_mut();
            let list = triggers.phase_mut(id.phase);
            list.iter()
                .position(|(serial, _)| *serial == id.serial)
                .and_then(|i| list.remove(i))
        };
        match removed {
            Some(trigger) => {
                drop(trigger);
                Ok(())
            }
            None => Err(InvalidArgument(format!(
                "{id:?} has already run or been removed"
            ))),
        }
    }

    fn triggers(&self, event: SystemEvent) -> &RefCell<EventTriggers> {
        match event {
            SystemEvent::Startup => &self.inner.startup,
            SystemEvent::Shutdown => &self.inner.shutdown,
        }
    }

    /// Fires `event`: the before phase, then (once its Deferreds fired) during and after.
    fn fire_event(&self, event: SystemEvent) {
        let mut waits = Vec::new();
        while let Some((_, trigger)) = self.pop_trigger(event, Phase::Before) {
            if let Some(d) = run_trigger(trigger) {
                waits.push(d);
            }
        }
        if waits.is_empty() {
            self.continue_event(event);
            return;
        }
        let this = self.clone();
        let continued = Rc::new(Cell::new(false));
        let timeout = self.inner.shutdown_timeout.get();
        let on_timeout = {
            let this = this.clone();
            let continued = continued.clone();
            self.call_later(timeout, move || {
                if !continued.replace(true) {
                    crate::log::warning!(
                        target: "torsion::reactor",
                        "{event:?} went on after {timeout:?}: a before-{event:?} trigger's Deferred had not fired"
                    );
                    this.continue_event(event);
                }
            })
        };
        // The last Deferred may fire inside any callback (a protocol's `data_received`):
        // the rest of the event runs after it returns, never inside it.
        drop(DeferredList::new(waits).into_deferred().map(move |_| {
            let _ = on_timeout.cancel();
            if !continued.replace(true) {
                let r = this.clone();
                this.call_soon(move || r.continue_event(event));
            }
        }));
    }

    fn continue_event(&self, event: SystemEvent) {
        match event {
            SystemEvent::Startup => self.inner.running.set(true),
            SystemEvent::Shutdown => {
                self.inner.looping.set(false);
                self.disconnect_all();
            }
        }
        while let Some((_, trigger)) = self.pop_trigger(event, Phase::During) {
            drop(run_trigger(trigger));
        }
        while let Some((_, trigger)) = self.pop_trigger(event, Phase::After) {
            drop(run_trigger(trigger));
        }
    }

    fn pop_trigger(&self, event: SystemEvent, phase: Phase) -> Option<(u64, Trigger)> {
        self.triggers(event)
            .borrow_mut()
            .phase_mut(phase)
            .pop_front()
    }

    /// One turn of the loop.
    fn iterate(&self) {
        self.run_thread_calls();
        self.run_soon();
        let now = self.now();
        self.inner.timers.run_due(now);
        self.run_soon();
        crate::executor::run_ready(TASK_BUDGET);
        self.run_soon();
        if self.inner.shared.stop_signal.swap(0, Ordering::AcqRel) != 0 {
            let _ = self.stop();
        }
        if self.inner.just_stopped.replace(false) {
            self.inner.shutting_down.set(true);
            self.fire_event(SystemEvent::Shutdown);
            self.run_soon();
        }
        self.flush_pending();
        if !self.inner.looping.get() {
            return;
        }
        let timeout = self.timeout();
        self.poll_once(timeout);
    }

    /// Sends what transports buffered during this iteration, and runs what that queues.
    fn flush_pending(&self) {
        loop {
            let batch = std::mem::take(&mut *self.inner.flushes.borrow_mut());
            if batch.is_empty() {
                if self.inner.soon.borrow().is_empty() {
                    return;
                }
                self.run_soon();
                continue;
            }
            for transport in batch {
                transport.flush();
            }
        }
    }

    /// Queues `transport` to send its buffered output before the next wait.
    pub(crate) fn schedule_flush(&self, transport: Rc<dyn Flush>) {
        self.inner.flushes.borrow_mut().push(transport);
    }

    /// Takes the shared read buffer (or a fresh one if it is out already).
    pub(crate) fn take_read_buffer(&self) -> Box<[u8]> {
        self.inner
            .read_buffer
            .borrow_mut()
            .take()
            .unwrap_or_else(|| vec![0u8; READ_BUFFER_SIZE].into_boxed_slice())
    }

    /// Gives the shared read buffer back.
    pub(crate) fn return_read_buffer(&self, buffer: Box<[u8]>) {
        *self.inner.read_buffer.borrow_mut() = Some(buffer);
    }

    /// Counts one more user of `factory` (a port or a connector); the first calls its
    /// `start_factory` (Twisted's `Factory.doStart`).
    pub(crate) fn factory_started(&self, key: usize, start: impl FnOnce()) {
        let first = {
            let mut users = self.inner.factory_users.borrow_mut();
            let n = users.entry(key).or_insert(0);
            *n += 1;
            *n == 1
        };
        if first {
            start();
        }
    }

    /// Counts one user of `factory` less; the last calls its `stop_factory` (Twisted's
    /// `Factory.doStop`).
    pub(crate) fn factory_stopped(&self, key: usize, stop: impl FnOnce()) {
        let last = {
            let mut users = self.inner.factory_users.borrow_mut();
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
        };
        if last {
            stop();
        }
    }

    /// How long the next wait may block.
    fn timeout(&self) -> Option<Duration> {
        if self.inner.just_stopped.get()
            || !self.inner.soon.borrow().is_empty()
            || self.inner.shared.notified.load(Ordering::Acquire)
            || crate::executor::has_ready()
        {
            return Some(Duration::ZERO);
        }
        self.inner
            .timers
            .next_deadline()
            .map(|deadline| deadline.saturating_sub(self.now()))
    }

    fn poll_once(&self, timeout: Option<Duration>) {
        let mut events = std::mem::take(&mut *self.inner.events.borrow_mut());
        let waited = self.inner.poller.borrow_mut().wait(&mut events, timeout);
        if let Err(err) = waited {
            crate::log::error!(target: "torsion::reactor", "waiting for I/O failed: {err}");
            // Do not spin on a persistent error.
            std::thread::sleep(Duration::from_millis(10));
        }
        for event in &events {
            if event.token == WAKER_TOKEN {
                self.inner.shared.waker.drain();
            } else {
                self.dispatch(*event);
                self.run_soon();
            }
        }
        events.clear();
        *self.inner.events.borrow_mut() = events;
    }

    fn dispatch(&self, event: Event) {
        let key = (event.token & 0xffff_ffff) as usize;
        let generation = (event.token >> 32) as u32;
        let (reader, writer) = {
            let descriptors = self.inner.descriptors.borrow();
            match descriptors.get(key) {
                Some(r) if r.generation == generation => (r.reader.clone(), r.writer.clone()),
                _ => return,
            }
        };
        let mut why: Option<Failure> = None;
        if (event.hangup || event.error) && !event.readable {
            why = Some(if reader.is_some() {
                ConnectionDone.into()
            } else {
                ConnectionLost.into()
            });
        } else {
            if event.readable
                && let Some(reader) = &reader
            {
                why = guarded(|| reader.do_read()).err();
            }
            if why.is_none()
                && event.writable
                && let Some(writer) = &writer
                && self.still_writer(key, generation)
            {
                why = guarded(|| writer.do_write()).err();
            }
        }
        if let Some(reason) = why {
            let fd = match (&reader, &writer) {
                (Some(r), _) => r.fileno(),
                (None, Some(w)) => w.fileno(),
                (None, None) => return,
            };
            self.remove_fd(fd);
            let target: Option<Rc<dyn FileDescriptor>> = match (reader, writer) {
                (Some(r), _) => Some(r),
                (None, Some(w)) => Some(w),
                (None, None) => None,
            };
            if let Some(target) = target {
                let lost = catch_unwind(AssertUnwindSafe(|| target.connection_lost(reason)));
                if let Err(payload) = lost {
                    crate::log::error!(
                        target: "torsion::reactor",
                        "connection_lost of {} panicked: {}",
                        target.log_prefix(),
                        Failure::from_panic(&*payload)
                    );
                }
            }
        }
    }

    fn still_writer(&self, key: usize, generation: u32) -> bool {
        self.inner
            .descriptors
            .borrow()
            .get(key)
            .is_some_and(|r| r.generation == generation && r.writer.is_some())
    }

    /// Watches `reader` for readability (Twisted's `addReader`). Adding the same descriptor
    /// again replaces it.
    ///
    /// # Errors
    ///
    /// The backend refused the descriptor (for example epoll and a regular file: `EPERM`).
    #[track_caller]
    pub fn add_reader(&self, reader: Rc<dyn ReadDescriptor>) -> std::io::Result<()> {
        let fd = reader.fileno();
        self.update_fd(fd, |r| r.reader = Some(reader))
    }

    /// Watches `writer` for writability (Twisted's `addWriter`).
    ///
    /// # Errors
    ///
    /// As [`add_reader`](Reactor::add_reader).
    #[track_caller]
    pub fn add_writer(&self, writer: Rc<dyn WriteDescriptor>) -> std::io::Result<()> {
        let fd = writer.fileno();
        self.update_fd(fd, |r| r.writer = Some(writer))
    }

    /// Stops watching `fd` for readability (Twisted's `removeReader`).
    pub fn remove_reader(&self, fd: RawFd) {
        if let Err(err) = self.update_fd_existing(fd, |r| r.reader = None) {
            tracing::debug!(target: "torsion::reactor", "remove_reader({fd}): {err}");
        }
    }

    /// Stops watching `fd` for writability (Twisted's `removeWriter`).
    pub fn remove_writer(&self, fd: RawFd) {
        if let Err(err) = self.update_fd_existing(fd, |r| r.writer = None) {
            tracing::debug!(target: "torsion::reactor", "remove_writer({fd}): {err}");
        }
    }

    /// Stops watching every descriptor and returns them (Twisted's `removeAll`).
    pub fn remove_all(&self) -> Vec<Rc<dyn FileDescriptor>> {
        let fds: Vec<RawFd> = self.inner.by_fd.borrow().keys().copied().collect();
        let mut removed = Vec::new();
        for fd in fds {
            if let Some(reg) = self.remove_fd(fd) {
                match (reg.reader, reg.writer) {
                    (Some(r), _) => removed.push(r as Rc<dyn FileDescriptor>),
                    (None, Some(w)) => removed.push(w as Rc<dyn FileDescriptor>),
                    (None, None) => {}
                }
            }
        }
        removed
    }

    /// The descriptors being read from (Twisted's `getReaders`).
    pub fn readers(&self) -> Vec<RawFd> {
        self.inner
            .descriptors
            .borrow()
            .iter()
            .filter(|(_, r)| r.reader.is_some())
            .map(|(_, r)| r.fd)
            .collect()
    }

    /// The descriptors waiting to write (Twisted's `getWriters`).
    pub fn writers(&self) -> Vec<RawFd> {
        self.inner
            .descriptors
            .borrow()
            .iter()
            .filter(|(_, r)| r.writer.is_some())
            .map(|(_, r)| r.fd)
            .collect()
    }

    fn update_fd(&self, fd: RawFd, change: impl FnOnce(&mut Registration)) -> std::io::Result<()> {
        let existing = self.inner.by_fd.borrow().get(&fd).copied();
        match existing {
            Some(_) => self.update_fd_existing(fd, change),
            None => {
                let generation = self.next_generation();
                let mut reg = Registration {
                    fd,
                    generation,
                    reader: None,
                    writer: None,
                    added_at: std::panic::Location::caller(),
                };
                change(&mut reg);
                let interest = interest_of(&reg);
                let key = self.inner.descriptors.borrow().vacant_key();
                self.inner
                    .poller
                    .borrow_mut()
                    .register(fd, token(key, generation), interest)?;
                self.inner.descriptors.borrow_mut().insert(reg);
                self.inner.by_fd.borrow_mut().insert(fd, key);
                Ok(())
            }
        }
    }

    fn update_fd_existing(
        &self,
        fd: RawFd,
        change: impl FnOnce(&mut Registration),
    ) -> std::io::Result<()> {
        let Some(key) = self.inner.by_fd.borrow().get(&fd).copied() else {
            return Ok(());
        };
        let (interest, generation, old) = {
            let mut descriptors = self.inner.descriptors.borrow_mut();
            let Some(reg) = descriptors.get_mut(key) else {
                return Ok(());
            };
            let before = (reg.reader.clone(), reg.writer.clone());
            change(reg);
            (interest_of(reg), reg.generation, before)
        };
        if interest.is_none() {
            drop(old);
            self.remove_fd(fd);
            return Ok(());
        }
        let mut poller = self.inner.poller.borrow_mut();
        let mut result = poller.reregister(fd, token(key, generation), interest);
        if matches!(&result, Err(e) if e.raw_os_error() == Some(libc::ENOENT)) {
            // The descriptor number was closed and reused without being removed first
            // (epoll forgot it): register the new one.
            result = poller.register(fd, token(key, generation), interest);
        }
        drop(poller);
        drop(old);
        result
    }

    fn remove_fd(&self, fd: RawFd) -> Option<Registration> {
        let key = self.inner.by_fd.borrow_mut().remove(&fd)?;
        let reg = self.inner.descriptors.borrow_mut().try_remove(key)?;
        if let Err(err) = self.inner.poller.borrow_mut().deregister(fd) {
            tracing::debug!(target: "torsion::reactor", "deregistering fd {fd}: {err}");
        }
        Some(reg)
    }

    fn next_generation(&self) -> u32 {
        let g = self.inner.generation.get().wrapping_add(1).max(1);
        self.inner.generation.set(g);
        g
    }

    /// At shutdown: every descriptor is removed and told `ConnectionLost` (Twisted's
    /// `disconnectAll`).
    fn disconnect_all(&self) {
        for descriptor in self.remove_all() {
            let lost = catch_unwind(AssertUnwindSafe(|| {
                descriptor.connection_lost(ConnectionLost.into())
            }));
            if let Err(payload) = lost {
                crate::log::error!(
                    target: "torsion::reactor",
                    "connection_lost of {} panicked: {}",
                    descriptor.log_prefix(),
                    Failure::from_panic(&*payload)
                );
            }
        }
    }

    fn run_thread_calls(&self) {
        if !self.inner.shared.notified.swap(false, Ordering::AcqRel) {
            return;
        }
        let calls = std::mem::take(
            &mut self
                .inner
                .shared
                .calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .queue,
        );
        for call in calls {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| call(self))) {
                crate::log::error!(
                    target: "torsion::reactor",
                    "a call from another thread panicked: {}",
                    Failure::from_panic(&*payload)
                );
            }
        }
    }

    fn close_thread_calls(&self) {
        let dropped = {
            let mut calls = self
                .inner
                .shared
                .calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            calls.closed = true;
            std::mem::take(&mut calls.queue)
        };
        drop(dropped);
    }

    /// What is left on the reactor that a finished test should not leave behind: pending
    /// delayed calls, registered descriptors, unfinished spawned tasks, and Deferreds of
    /// functions still running in the thread pool.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .delayed_calls()
            .into_iter()
            .map(|c| {
                format!(
                    "a delayed call due at {} scheduled at {}",
                    c.time, c.location
                )
            })
            .collect();
        for (_, reg) in self.inner.descriptors.borrow().iter() {
            let what = match (&reg.reader, &reg.writer) {
                (Some(r), _) => r.log_prefix(),
                (None, Some(w)) => w.log_prefix(),
                (None, None) => format!("fd {}", reg.fd),
            };
            out.push(format!(
                "{what} still registered, added at {}",
                reg.added_at
            ));
        }
        for location in crate::executor::live_tasks() {
            out.push(format!(
                "a spawned task still running, spawned at {location}"
            ));
        }
        let threads = self.inner.thread_results.borrow().len();
        if threads > 0 {
            out.push(format!(
                "{threads} thread-pool call(s) whose Deferred has not fired"
            ));
        }
        out
    }

    /// Drops what a finished reactor still holds (pending delayed calls, descriptors,
    /// triggers, thread-call completions), breaking reference cycles between the reactor
    /// and the callbacks that hold it.
    pub(crate) fn release_leftovers(&self) {
        self.inner.timers.clear();
        drop(std::mem::take(&mut *self.inner.soon.borrow_mut()));
        drop(self.remove_all());
        drop(std::mem::take(&mut *self.inner.startup.borrow_mut()));
        drop(std::mem::take(&mut *self.inner.shutdown.borrow_mut()));
        let results = std::mem::take(&mut *self.inner.thread_results.borrow_mut());
        drop(results);
    }

    pub(crate) fn thread_pool(&self) -> Arc<ThreadPool> {
        let mut pool = self.inner.pool.borrow_mut();
        pool.get_or_insert_with(|| {
            Arc::new(ThreadPool::with_name(
                0,
                self.inner.pool_max.get(),
                "torsion-pool",
            ))
        })
        .clone()
    }

    pub(crate) fn set_pool_max(&self, max: usize) {
        self.inner.pool_max.set(max);
        if let Some(pool) = self.inner.pool.borrow().as_ref() {
            pool.set_max(max);
        }
    }

    pub(crate) fn thread_results(&self) -> &RefCell<Slab<ThreadResult>> {
        &self.inner.thread_results
    }
}

fn guarded(f: impl FnOnce() -> Result<(), Failure>) -> Result<(), Failure> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(Failure::from_panic(&*payload)),
    }
}

fn interest_of(reg: &Registration) -> Interest {
    Interest {
        readable: reg.reader.is_some(),
        writable: reg.writer.is_some(),
    }
}

fn token(key: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | key as u64
}

impl ReactorTime for Reactor {
    fn now(&self) -> Time {
        Time::from_duration(self.inner.epoch.elapsed())
    }

    #[track_caller]
    fn call_later_boxed(&self, delay: Duration, f: Box<dyn FnOnce()>) -> DelayedCall {
        let at = self.now() + delay;
        self.inner.timers.schedule(at, f)
    }

    fn delayed_calls(&self) -> Vec<DelayedCallInfo> {
        self.inner.timers.infos()
    }
}

impl fmt::Debug for Reactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor")
            .field("backend", &self.backend())
            .field("state", &self.inner.state.get())
            .field("running", &self.inner.running.get())
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let mut calls = self
            .shared
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        calls.closed = true;
        let dropped = std::mem::take(&mut calls.queue);
        drop(calls);
        drop(dropped);
    }
}

impl ReactorHandle {
    /// Runs `f` on the reactor's thread, in the order calls were made, on the reactor's
    /// next iteration (Twisted's `callFromThread`). Calls made before `run` wait for it. A
    /// burst of calls costs one wake-up. After the reactor has finished, `f` is dropped
    /// without running.
    pub fn call_from_thread(&self, f: impl FnOnce(&Reactor) + Send + 'static) {
        {
            let mut calls = self
                .shared
                .calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if calls.closed {
                return;
            }
            calls.queue.push_back(Box::new(f));
        }
        if !self.shared.notified.swap(true, Ordering::AcqRel) {
            self.shared.waker.wake();
        }
    }

    /// Asks the reactor to stop from another thread (Twisted's
    /// `callFromThread(reactor.stop)`); a reactor not running ignores it.
    pub fn stop(&self) {
        self.call_from_thread(|reactor| {
            let _ = reactor.stop();
        });
    }

    /// Whether the calling thread is the reactor's own (Twisted's `isInIOThread`).
    pub fn is_reactor_thread(&self) -> bool {
        std::thread::current().id() == self.shared.owner
    }

    fn signal_stop(shared: &Shared, signal: i32) {
        shared.stop_signal.store(signal, Ordering::Release);
        shared.waker.wake_from_signal();
    }
}

impl fmt::Debug for ReactorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReactorHandle").finish_non_exhaustive()
    }
}
