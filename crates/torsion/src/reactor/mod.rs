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
mod fdset;
mod handle;
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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::defer::{Deferred, Failure};
use crate::error::{ReactorAlreadyRunning, ReactorNotRestartable, ReactorNotRunning};
use crate::threads::ThreadPool;
use crate::time::{DelayedCall, DelayedCallInfo, ReactorTime, Time, TimerQueue};

use backend::{BackendKind, Event, Interest, Poller};
use descriptors::Registration;
pub use descriptors::{FileDescriptor, ReadDescriptor, WriteDescriptor};
pub use handle::ReactorHandle;
pub(crate) use handle::ThreadResult;
use handle::{Shared, ThreadCalls};
use triggers::EventTriggers;
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

/// At most this many passes of queued work and output after the loop ends.
const FINAL_PASSES: usize = 1_000;

/// How many times one loop iteration flushes the transports that asked for it (a flush
/// can ask for another: a pull producer's next chunk).
const FLUSH_PASSES: usize = 8;

/// How many queued tasks one iteration polls before it looks at I/O again.
const TASK_BUDGET: usize = 128;
/// Twisted's default for how long shutdown waits for `before` triggers' Deferreds.
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// Every TCP port is opened with `SO_REUSEPORT` ([`Builder::share_ports`]).
    share_ports: bool,
    /// Transports with output to send before the next wait.
    flushes: RefCell<Vec<Rc<dyn Flush>>>,
}

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

/// Builds a [`Reactor`] with options (Twisted: which reactor is installed, and how).
#[derive(Debug, Clone)]
pub struct Builder {
    backend: Option<BackendKind>,
    install_signals: bool,
    shutdown_timeout: Duration,
    share_ports: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            backend: None,
            install_signals: false,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            share_ports: false,
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

    /// Whether every TCP port this reactor listens on is opened with `SO_REUSEPORT`, so
    /// that several reactors, one per thread, can listen on the same port and the kernel
    /// spreads the connections between them (what the runner's `--workers N` does). Off by
    /// default: with it, a second program listening on the same port does not fail but
    /// takes a share of the connections.
    pub fn share_ports(mut self, yes: bool) -> Self {
        self.share_ports = yes;
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
            share_ports: self.share_ports,
            flushes: RefCell::new(Vec::new()),
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

    /// A number no other reactor of this process has.
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    /// The backend this reactor runs on.
    pub fn backend(&self) -> BackendKind {
        self.inner.poller.borrow().kind()
    }

    /// Whether this reactor opens its TCP ports with `SO_REUSEPORT`
    /// ([`Builder::share_ports`]).
    pub fn shares_ports(&self) -> bool {
        self.inner.share_ports
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
        crate::defer::executor::set_unpark(Some(Arc::new(move || unpark_target.waker.wake())));
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
        // One last look at the thread-call queue and I/O, as Twisted does after shutdown;
        // what the during and after phases left to send or to run goes now.
        self.run_thread_calls();
        self.drain_after_loop();
        signals::uninstall(signals);
        crate::defer::executor::set_unpark(None);
        let pool = self.inner.pool.borrow_mut().take();
        if let Some(pool) = pool {
            pool.stop();
        }
        self.close_thread_calls();
        // What stopping the pool queued (a Resolver dropped with a job, say).
        self.drain_after_loop();
        CURRENT.with(|c| *c.borrow_mut() = previous);
        crate::defer::chain::set_after_callback(previous_hook);
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
        self.stop_when_running();
    }

    /// Stops now, or, before `run` or during startup, once the reactor runs; a reactor
    /// already stopping is left to stop.
    fn stop_when_running(&self) {
        let stopping = self.inner.just_stopped.get() || self.inner.shutting_down.get();
        if self.stop().is_err() && !stopping {
            let r = self.clone();
            self.add_system_event_trigger(Phase::After, SystemEvent::Startup, move || {
                let _ = r.stop();
            });
        }
    }

    /// A callback for the end of a chain that stops the reactor: with the chain's failure if
    /// it failed ([`stop_with_failure`](Reactor::stop_with_failure)), plainly otherwise.
    /// Twisted's `d.addBoth(lambda _: reactor.stop())` is `d.add_both(reactor.stopper())`.
    /// A reactor that is already stopping is left to stop; one not running yet stops once
    /// it runs.
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
                // A chain that ends before `run` (or during startup) stops it once it runs.
                Ok(_) => reactor.stop_when_running(),
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
    /// before `run` runs once the reactor has started; after `run` has returned, `f` runs at
    /// once, as no loop will come back for it. A panic in `f` is reported and the queue goes
    /// on.
    pub fn call_soon(&self, f: impl FnOnce() + 'static) {
        if self.inner.state.get() == RunState::Finished {
            // No loop will come back for it: run it now rather than never.
            f();
            return;
        }
        self.inner.soon.borrow_mut().push_back(Box::new(f));
    }

    /// Runs the work [`call_soon`](Reactor::call_soon) queued, including what it queues.
    ///
    /// Only the work queued when the pass starts runs; what it queues waits for the next
    /// pass, so work that queues itself again (Twisted's `callLater(0, tick)`) lets timers,
    /// I/O and `stop` take their turn.
    fn run_soon(&self) {
        let queued = self.inner.soon.borrow().len();
        for _ in 0..queued {
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

    /// One turn of the loop.
    fn iterate(&self) {
        self.run_thread_calls();
        self.run_soon();
        let now = self.now();
        self.inner.timers.run_due(now);
        self.run_soon();
        crate::defer::executor::run_ready(TASK_BUDGET);
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

    /// Sends what transports buffered during this iteration, and runs what that queues:
    /// at most [`FLUSH_PASSES`] passes, since a pull producer asked for more by a flush
    /// writes again at once, and against a fast reader would keep this loop (and every
    /// other connection, timer and accept) waiting until its whole stream is sent. What
    /// is left is flushed after the next wait, which then does not block.
    fn flush_pending(&self) {
        for _ in 0..FLUSH_PASSES {
            let batch = std::mem::take(&mut *self.inner.flushes.borrow_mut());
            if batch.is_empty() {
                break;
            }
            for transport in batch {
                transport.flush();
            }
        }
        self.run_soon();
    }

    /// After the loop: runs queued work and sends buffered output until none is left (a
    /// pass at a time, and at most [`FINAL_PASSES`] passes, so work that keeps queueing
    /// itself cannot hold `run` up for ever).
    fn drain_after_loop(&self) {
        for _ in 0..FINAL_PASSES {
            if self.inner.soon.borrow().is_empty() && self.inner.flushes.borrow().is_empty() {
                return;
            }
            self.flush_pending();
        }
    }

    /// Queues `transport` to send its buffered output before the next wait.
    pub(crate) fn schedule_flush(&self, transport: Rc<dyn Flush>) {
        self.inner.flushes.borrow_mut().push(transport);
    }

    /// How long the next wait may block.
    fn timeout(&self) -> Option<Duration> {
        if self.inner.just_stopped.get()
            || !self.inner.soon.borrow().is_empty()
            || !self.inner.flushes.borrow().is_empty()
            || self.inner.shared.notified.load(Ordering::Acquire)
            || crate::defer::executor::has_ready()
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
        for location in crate::defer::executor::live_tasks() {
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
        // Each taken out first and dropped after the borrow ends: dropping runs user code
        // (destructors, a Resolver's last drop) that may use the reactor. What they held
        // is discarded with the reactor, quietly.
        crate::defer::chain::quietly(|| {
            self.inner.timers.clear();
            let soon = std::mem::take(&mut *self.inner.soon.borrow_mut());
            drop(soon);
            drop(self.remove_all());
            let startup = std::mem::take(&mut *self.inner.startup.borrow_mut());
            drop(startup);
            let shutdown = std::mem::take(&mut *self.inner.shutdown.borrow_mut());
            drop(shutdown);
        });
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
