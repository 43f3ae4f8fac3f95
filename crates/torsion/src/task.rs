//! Scheduling helpers over a time source (Twisted's `twisted.internet.task`).
//!
//! - [`LoopingCall`] (`task.LoopingCall`): call a function every interval, aligned to interval
//!   slots, skipping missed ones; [`LoopingCall::with_count`] (`LoopingCall.withCount`)
//!   reports how many slots went by.
//! - [`defer_later`] (`task.deferLater`) and [`sleep`]: a Deferred that fires after a delay.
//! - [`Cooperator`], [`CooperativeTask`] (`task.Cooperator`, `task.CooperativeTask`): run
//!   many iterators a step at a time, round-robin, in time slices, so long jobs never starve
//!   the reactor.
//! - [`react`], [`react_with`], [`react_result`] (`task.react`): run a main function on a
//!   reactor and turn its outcome into a process exit code.
//!
//! Everything but `react` is generic over the time source `C: ReactorTime`: give it the
//! [`Reactor`] in a program and a [`Clock`](crate::time::Clock) in a test, where time only
//! moves on [`Clock::advance`](crate::time::Clock::advance).
//!
//! Invariant, as in the rest of torsion: no `RefCell` borrow is held while user code runs
//! (the looped function, an iterator's `next`, a Deferred being fired, a user value being
//! dropped).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use crate::defer::{IntoOutcome, Resolved, maybe_deferred};
use crate::error::{InvalidArgument, SchedulerStopped, TaskFinished, TaskNotPaused, TaskStopped};
use crate::time::{DelayedCall, IntoDelay, ReactorTime, Time};
use crate::{Deferred, Failure, Reactor, Resolver};

const NANOS_PER_SEC: u128 = 1_000_000_000;

fn duration_from_nanos(nanos: u128) -> Duration {
    // Callers pass values below an interval, itself a Duration, so this cannot overflow.
    Duration::new(
        (nanos / NANOS_PER_SEC) as u64,
        (nanos % NANOS_PER_SEC) as u32,
    )
}

// ---------------------------------------------------------------------------------------
// LoopingCall
// ---------------------------------------------------------------------------------------

/// Conversion of a [`LoopingCall`] interval: `f64` seconds as in Twisted (`start(0.1)`), a
/// [`Duration`], or whole seconds as an integer.
///
/// Unlike [`IntoDelay`], the conversion does not panic: a negative, NaN, infinite or too
/// large `f64` (or a negative integer) is an [`InvalidArgument`], as Twisted raises
/// `ValueError` for a negative interval.
pub trait IntoInterval {
    /// The interval as a [`Duration`].
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`] if the value is negative, not finite, or too large for a
    /// [`Duration`].
    fn into_interval(self) -> Result<Duration, InvalidArgument>;
}

impl IntoInterval for f64 {
    fn into_interval(self) -> Result<Duration, InvalidArgument> {
        Duration::try_from_secs_f64(self).map_err(|_| {
            InvalidArgument(format!(
                "interval must be a finite, non-negative number of seconds, got {self}"
            ))
        })
    }
}

impl IntoInterval for Duration {
    fn into_interval(self) -> Result<Duration, InvalidArgument> {
        Ok(self)
    }
}

impl IntoInterval for u64 {
    fn into_interval(self) -> Result<Duration, InvalidArgument> {
        Ok(Duration::from_secs(self))
    }
}

impl IntoInterval for u32 {
    fn into_interval(self) -> Result<Duration, InvalidArgument> {
        Ok(Duration::from_secs(u64::from(self)))
    }
}

impl IntoInterval for i32 {
    fn into_interval(self) -> Result<Duration, InvalidArgument> {
        u64::try_from(self).map(Duration::from_secs).map_err(|_| {
            InvalidArgument(format!(
                "interval must be a non-negative number of seconds, got {self}"
            ))
        })
    }
}

/// The looped function, type-erased: given the count of slots, returns the call's Deferred
/// (already fired unless the function returned an unfired one).
type LoopFn = Box<dyn FnMut(u64) -> Deferred<()>>;

/// One `start` of a [`LoopingCall`]: the firing end of the Deferred `start` returned, and
/// whether a call of this run is in progress (its function running or its Deferred not yet
/// fired).
struct Run {
    done: Cell<Option<Resolver<()>>>,
    busy: Cell<bool>,
}

struct LoopState {
    running: bool,
    interval: Option<Duration>,
    start_time: Time,
    /// The interval slot (since `start_time`) of the last call; -1 before a `now` start.
    last_slot: i128,
    call: Option<DelayedCall>,
    run: Option<Rc<Run>>,
    call_count: u64,
}

struct LoopInner<C> {
    clock: C,
    /// Taken out while it runs.
    f: RefCell<Option<LoopFn>>,
    state: RefCell<LoopState>,
}

/// Calls a function repeatedly, every interval (Twisted's `task.LoopingCall`).
///
/// [`start`](LoopingCall::start) calls the function now (or after one interval), then at
/// each later multiple of the interval since the start. When a call finishes late (a slow
/// reactor, or a Deferred the function returned fired late) the missed slots are skipped,
/// not made up: the next call is at the next slot boundary. [`with_count`](LoopingCall::with_count)
/// tells the function how many slots went by. An interval of zero calls the function as
/// often as possible (`call_later(0)` each time), letting I/O run in between.
///
/// The function returns `Result<(), Failure>` or `Deferred<()>`. When it returns a Deferred,
/// the next call waits for that Deferred to fire. When it fails (an `Err`, a failed
/// Deferred or a panic), the loop stops and `start`'s Deferred errbacks with the failure.
/// [`stop`](LoopingCall::stop) fires `start`'s Deferred with `()` (Twisted fires it with the
/// `LoopingCall` itself; keep a clone of the handle instead).
///
/// A `LoopingCall` is a cheap handle: clones share one loop, so the function can hold a
/// clone and stop its own loop. While the loop runs, the time source keeps it alive, as the
/// reactor does in Twisted.
///
/// # Examples
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use torsion::task::LoopingCall;
/// use torsion::time::{Clock, ReactorTime};
///
/// let clock = Clock::new();
/// let ticks = Rc::new(Cell::new(0));
/// let t = ticks.clone();
/// let lc = LoopingCall::new(clock.clone(), move || {
///     t.set(t.get() + 1);
///     Ok(())
/// });
/// let mut done = lc.start(0.1, true).unwrap(); // calls at once, then every 0.1 s
/// clock.pump(&[0.05, 0.1, 0.1]); // t = 0.05, 0.15, 0.25
/// assert_eq!(ticks.get(), 3); // at 0, 0.1 and 0.2
///
/// lc.stop();
/// assert!(done.take_result().unwrap().is_ok());
/// assert!(clock.delayed_calls().is_empty());
/// ```
pub struct LoopingCall<C: ReactorTime + 'static> {
    inner: Rc<LoopInner<C>>,
}

impl<C: ReactorTime + 'static> Clone for LoopingCall<C> {
    fn clone(&self) -> Self {
        LoopingCall {
            inner: self.inner.clone(),
        }
    }
}

impl<C: ReactorTime + 'static> LoopingCall<C> {
    /// A looping call of `f` on `clock`, not started yet (Twisted's `LoopingCall(f)`, with
    /// the `clock` attribute set).
    pub fn new<R>(clock: C, mut f: impl FnMut() -> R + 'static) -> Self
    where
        R: IntoOutcome<Output = ()>,
    {
        Self::from_fn(clock, Box::new(move |_count| maybe_deferred(&mut f)))
    }

    /// A looping call of `f` that is told, at each call, how many interval slots have gone
    /// by since the previous call (Twisted's `LoopingCall.withCount`): 1 normally, more when
    /// calls were skipped because the loop ran late. The first call of a `start(_, true)`
    /// gets 1, and so does the first call after [`reset`](LoopingCall::reset). With an
    /// interval of zero the count is always 1.
    pub fn with_count<R>(clock: C, mut f: impl FnMut(u64) -> R + 'static) -> Self
    where
        R: IntoOutcome<Output = ()>,
    {
        Self::from_fn(clock, Box::new(move |count| maybe_deferred(|| f(count))))
    }

    fn from_fn(clock: C, f: LoopFn) -> Self {
        LoopingCall {
            inner: Rc::new(LoopInner {
                clock,
                f: RefCell::new(Some(f)),
                state: RefCell::new(LoopState {
                    running: false,
                    interval: None,
                    start_time: Time::ZERO,
                    last_slot: 0,
                    call: None,
                    run: None,
                    call_count: 0,
                }),
            }),
        }
    }

    /// Starts the loop (Twisted's `LoopingCall.start`): calls the function every `interval`
    /// ([`IntoInterval`]: `f64` seconds, a [`Duration`] or whole seconds), the first time at
    /// once if `now`, else after one interval.
    ///
    /// Returns a Deferred that fires with `()` when the loop is [stopped](LoopingCall::stop),
    /// or errbacks with the function's failure, which also stops the loop. Cancelling it
    /// stops the loop too (and it errbacks [`Cancelled`](crate::error::Cancelled)).
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`] if the interval is negative or not finite (Twisted raises
    /// `ValueError`), or if the loop is already running (Twisted asserts).
    #[track_caller]
    pub fn start(
        &self,
        interval: impl IntoInterval,
        now: bool,
    ) -> Result<Deferred<()>, InvalidArgument> {
        let interval = interval.into_interval()?;
        if self.running() {
            return Err(InvalidArgument(
                "LoopingCall::start: the loop is already running; stop it first".into(),
            ));
        }
        let run = Rc::new(Run {
            done: Cell::new(None),
            busy: Cell::new(false),
        });
        let weak_inner = Rc::downgrade(&self.inner);
        let weak_run = Rc::downgrade(&run);
        let (resolver, deferred) = Deferred::with_canceller(move |_resolver| {
            // Stop the loop without firing: the cancel then errbacks `Cancelled`.
            if let (Some(inner), Some(run)) = (weak_inner.upgrade(), weak_run.upgrade()) {
                drop(run.done.take());
                let current = inner
                    .state
                    .borrow()
                    .run
                    .as_ref()
                    .is_some_and(|r| Rc::ptr_eq(r, &run));
                if current {
                    LoopingCall { inner }.stop();
                }
            }
        });
        run.done.set(Some(resolver));
        let start_time = {
            let mut st = self.inner.state.borrow_mut();
            st.running = true;
            st.interval = Some(interval);
            st.start_time = self.inner.clock.now();
            st.last_slot = if now { -1 } else { 0 };
            st.call_count = 0;
            st.run = Some(run);
            st.start_time
        };
        if now {
            fire(&self.inner);
        } else {
            schedule_from(&self.inner, start_time);
        }
        Ok(deferred)
    }

    /// Stops the loop (Twisted's `LoopingCall.stop`): no further call is made, the pending
    /// one is cancelled and `start`'s Deferred fires with `()`. If a call is in progress
    /// (the function is running, or its Deferred has not fired), the Deferred fires when
    /// that call finishes, with its outcome. Stopping a loop that is not running does
    /// nothing (Twisted asserts).
    pub fn stop(&self) {
        let (call, resolver) = {
            let mut st = self.inner.state.borrow_mut();
            if !st.running {
                return;
            }
            st.running = false;
            let call = st.call.take();
            let resolver = st
                .run
                .as_ref()
                .filter(|run| !run.busy.get())
                .and_then(|run| run.done.take());
            (call, resolver)
        };
        if let Some(call) = call {
            let _ = call.cancel();
        }
        if let Some(resolver) = resolver {
            let _ = resolver.try_callback(());
        }
    }

    /// Restarts the interval from now (Twisted's `LoopingCall.reset`): the pending call is
    /// moved to one interval from now, and later calls align to that new start. Does nothing
    /// while a call is in progress or when the loop is not running.
    pub fn reset(&self) {
        let (call, start_time) = {
            let mut st = self.inner.state.borrow_mut();
            if !st.running {
                return;
            }
            let Some(call) = st.call.take() else {
                return;
            };
            st.start_time = self.inner.clock.now();
            st.last_slot = 0;
            (call, st.start_time)
        };
        let _ = call.cancel();
        drop(call);
        schedule_from(&self.inner, start_time);
    }

    /// Whether the loop is running: started and not stopped (Twisted's `running`).
    pub fn running(&self) -> bool {
        self.inner.state.borrow().running
    }

    /// How many times the function has been called since the last
    /// [`start`](LoopingCall::start).
    pub fn call_count(&self) -> u64 {
        self.inner.state.borrow().call_count
    }

    /// The interval of the last [`start`](LoopingCall::start), or `None` before the first
    /// (Twisted's `interval`).
    pub fn interval(&self) -> Option<Duration> {
        self.inner.state.borrow().interval
    }

    /// The time source the loop runs on (Twisted's `clock`).
    pub fn clock(&self) -> &C {
        &self.inner.clock
    }
}

impl<C: ReactorTime + 'static> fmt::Debug for LoopingCall<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.state.borrow();
        f.debug_struct("LoopingCall")
            .field("running", &st.running)
            .field("interval", &st.interval)
            .field("call_count", &st.call_count)
            .finish()
    }
}

/// Schedules the next call at the first slot boundary after `when` (Twisted's
/// `_scheduleFrom`), computed exactly in nanoseconds: a call made exactly on a boundary
/// schedules the next boundary.
fn schedule_from<C: ReactorTime + 'static>(inner: &Rc<LoopInner<C>>, when: Time) {
    let delay = {
        let st = inner.state.borrow();
        let interval = st.interval.unwrap_or_default().as_nanos();
        if interval == 0 {
            Duration::ZERO
        } else {
            let running_for = when.saturating_sub(st.start_time).as_nanos();
            duration_from_nanos(interval - running_for % interval)
        }
    };
    let me = inner.clone();
    let call = inner.clock.call_later(delay, move || fire(&me));
    replace_call(inner, call);
}

/// Makes `call` the loop's pending call, cancelling any other one.
fn replace_call<C: ReactorTime + 'static>(inner: &LoopInner<C>, call: DelayedCall) {
    let old = inner.state.borrow_mut().call.replace(call);
    if let Some(old) = old {
        let _ = old.cancel();
    }
}

/// One call of the looped function (Twisted's `LoopingCall.__call__`).
fn fire<C: ReactorTime + 'static>(inner: &Rc<LoopInner<C>>) {
    let taken = inner.f.borrow_mut().take();
    let Some(mut f) = taken else {
        // The function is running and restarted its own loop with `now`: make that first
        // call as soon as the running one has returned.
        let me = inner.clone();
        let call = inner.clock.call_later(Duration::ZERO, move || fire(&me));
        replace_call(inner, call);
        return;
    };
    let prepared = {
        let mut st = inner.state.borrow_mut();
        match st.run.clone().filter(|_| st.running) {
            None => None,
            Some(run) => {
                let old_call = st.call.take();
                let interval = st.interval.unwrap_or_default().as_nanos();
                let elapsed = inner.clock.now().saturating_sub(st.start_time).as_nanos();
                // An interval of zero counts 1 each time (Twisted's `withCount`).
                let count = match elapsed.checked_div(interval) {
                    None => 1,
                    Some(slot) => {
                        let slot = slot as i128;
                        let count = (slot - st.last_slot).max(1);
                        st.last_slot = slot;
                        u64::try_from(count).unwrap_or(u64::MAX)
                    }
                };
                st.call_count += 1;
                run.busy.set(true);
                Some((run, count, old_call))
            }
        }
    };
    let Some((run, count, old_call)) = prepared else {
        *inner.f.borrow_mut() = Some(f);
        return;
    };
    drop(old_call);
    let outcome = f(count);
    *inner.f.borrow_mut() = Some(f);
    let me = inner.clone();
    drop(outcome.add_both(move |result| {
        call_finished(&me, &run, result);
        Ok(())
    }));
}

/// A call's outcome is known: schedule the next one, or finish the run.
fn call_finished<C: ReactorTime + 'static>(
    inner: &Rc<LoopInner<C>>,
    run: &Rc<Run>,
    result: Result<(), Failure>,
) {
    run.busy.set(false);
    let current = {
        let st = inner.state.borrow();
        st.running && st.run.as_ref().is_some_and(|r| Rc::ptr_eq(r, run))
    };
    match result {
        Ok(()) if current => schedule_from(inner, inner.clock.now()),
        Ok(()) => {
            if let Some(resolver) = run.done.take() {
                let _ = resolver.try_callback(());
            }
        }
        Err(failure) => {
            let call = if current {
                let mut st = inner.state.borrow_mut();
                st.running = false;
                st.call.take()
            } else {
                None
            };
            if let Some(call) = call {
                let _ = call.cancel();
            }
            match run.done.take() {
                Some(resolver) => {
                    let _ = resolver.try_errback(failure);
                }
                None => crate::defer::chain::report_unhandled(failure),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// deferLater
// ---------------------------------------------------------------------------------------

/// A Deferred that calls `f` after `delay` and fires with its result (Twisted's
/// `task.deferLater`).
///
/// `f` returns `Result<T, Failure>` (the Deferred fires with the value or errbacks with the
/// failure) or a `Deferred<T>` (the result follows it); a panic in `f` becomes a failure.
/// Cancelling the Deferred before the deadline cancels the timer, so nothing stays scheduled
/// and `f` never runs; the Deferred errbacks [`Cancelled`](crate::error::Cancelled).
///
/// # Panics
///
/// Panics if `delay` is negative or not finite (see [`IntoDelay`]).
///
/// # Examples
///
/// ```
/// use torsion::task::defer_later;
/// use torsion::time::{Clock, ReactorTime};
///
/// let clock = Clock::new();
/// let mut d = defer_later(&clock, 3, || Ok("done"));
/// clock.advance(2.9);
/// assert!(d.take_result().is_none());
/// clock.advance(0.1);
/// assert_eq!(d.take_result().unwrap().unwrap(), "done");
/// ```
#[track_caller]
pub fn defer_later<C, R>(
    clock: &C,
    delay: impl IntoDelay,
    f: impl FnOnce() -> R + 'static,
) -> Deferred<R::Output>
where
    C: ReactorTime + ?Sized,
    R: IntoOutcome,
{
    let delay = delay.into_delay();
    let timer: Rc<Cell<Option<DelayedCall>>> = Rc::new(Cell::new(None));
    let slot = timer.clone();
    let (resolver, deferred) = Deferred::<()>::with_canceller(move |_resolver| {
        if let Some(call) = slot.take() {
            let _ = call.cancel();
        }
    });
    let deferred = deferred.add_callback(move |()| f());
    let call = clock.call_later_boxed(delay, Box::new(move || resolver.callback(())));
    timer.set(Some(call));
    deferred
}

/// A Deferred that fires with `()` after `delay`: [`defer_later`] with nothing to call
/// (Twisted's `deferLater(clock, delay)`).
///
/// # Panics
///
/// Panics if `delay` is negative or not finite (see [`IntoDelay`]).
///
/// # Examples
///
/// ```
/// use torsion::task::sleep;
/// use torsion::time::Clock;
///
/// let clock = Clock::new();
/// let mut d = sleep(&clock, 0.5);
/// clock.advance(0.5);
/// assert!(d.take_result().unwrap().is_ok());
/// ```
#[track_caller]
pub fn sleep<C: ReactorTime + ?Sized>(clock: &C, delay: impl IntoDelay) -> Deferred<()> {
    defer_later(clock, delay, || Ok(()))
}

// ---------------------------------------------------------------------------------------
// Cooperator
// ---------------------------------------------------------------------------------------

/// How long a [`Cooperator`] runs work per tick before it yields to the reactor, unless set
/// with [`Cooperator::with_slice`] (Twisted's default termination predicate: 10 ms).
pub const DEFAULT_SLICE: Duration = Duration::from_millis(10);

/// What the iterator of a cooperative task may yield (one unit of work, in Twisted's
/// terms): `()`, `Result<(), Failure>` (an `Err` stops the task and fails its
/// [`when_done`](CooperativeTask::when_done)) or `Deferred<()>` (the task pauses until it
/// fires; a failure stops the task).
#[diagnostic::on_unimplemented(
    message = "a cooperative task's iterator must yield `()`, `Result<(), Failure>` or `Deferred<()>`",
    label = "yields `{Self}`"
)]
pub trait WorkUnit: 'static {
    #[doc(hidden)]
    fn into_resolved(self) -> Resolved<()>;
}

impl WorkUnit for () {
    fn into_resolved(self) -> Resolved<()> {
        Resolved::Value(())
    }
}

impl WorkUnit for Result<(), Failure> {
    fn into_resolved(self) -> Resolved<()> {
        IntoOutcome::into_resolved(self)
    }
}

impl WorkUnit for Deferred<()> {
    fn into_resolved(self) -> Resolved<()> {
        Resolved::Deferred(self)
    }
}

type WorkIter = Box<dyn Iterator<Item = Resolved<()>>>;

/// What a task needs from its cooperator, without its time-source type.
trait Scheduler {
    /// The task can run: add it to the round-robin.
    fn activate(&self, task: &Rc<TaskCore>);
    /// The task is paused or waiting: take it out of the round-robin.
    fn deactivate(&self, task: &Rc<TaskCore>);
    /// The task has finished: forget it.
    fn forget(&self, task: &Rc<TaskCore>);
}

struct TaskState {
    /// Pauses by `pause()`; the task runs when this is zero and it is not waiting.
    pauses: u32,
    /// Waiting for a Deferred the iterator yielded.
    waiting: bool,
    /// `Some` once the task has finished: what its `when_done` Deferreds fire with.
    outcome: Option<Result<(), Failure>>,
    /// How it finished (Twisted's `_completionState`), set with `outcome`: what `pause`
    /// and `stop` report afterwards.
    finished: Option<TaskFinished>,
    waiters: Vec<Resolver<()>>,
    /// Whether `when_done` was ever called, so an unseen failure can be reported.
    observed: bool,
    /// Dropped when the task finishes, breaking the cooperator–task cycle.
    scheduler: Option<Rc<dyn Scheduler>>,
}

struct TaskCore {
    /// Taken out while `next` runs, and for good once the task finishes.
    iterator: RefCell<Option<WorkIter>>,
    state: RefCell<TaskState>,
}

impl TaskCore {
    /// Runs one step of the iterator (Twisted's `CooperativeTask._oneWorkUnit`).
    fn one_unit(self: &Rc<Self>) {
        let Some(mut iterator) = self.iterator.borrow_mut().take() else {
            return;
        };
        let item = catch_unwind(AssertUnwindSafe(|| iterator.next()));
        if self.state.borrow().outcome.is_some() {
            // Stopped from inside `next`: drop what it produced.
            drop(item);
            drop(iterator);
            return;
        }
        match item {
            Err(payload) => {
                drop(iterator);
                self.fail(Failure::from_panic(&*payload));
            }
            Ok(None) => {
                drop(iterator);
                self.complete(TaskFinished::Done, Ok(()));
            }
            Ok(Some(unit)) => {
                *self.iterator.borrow_mut() = Some(iterator);
                match unit {
                    Resolved::Value(()) => {}
                    Resolved::Failure(failure) => self.fail(failure),
                    Resolved::Deferred(d) => self.wait_for(d),
                }
            }
        }
    }

    /// Pauses this task (only) until `d` fires.
    fn wait_for(self: &Rc<Self>, d: Deferred<()>) {
        self.state.borrow_mut().waiting = true;
        let synchronous = Rc::new(Cell::new(true));
        let (me, sync) = (self.clone(), synchronous.clone());
        drop(d.add_both(move |result| {
            me.deferred_fired(result, sync.get());
            Ok(())
        }));
        synchronous.set(false);
        let scheduler = {
            let st = self.state.borrow();
            if st.waiting && st.outcome.is_none() {
                st.scheduler.clone()
            } else {
                None
            }
        };
        if let Some(scheduler) = scheduler {
            scheduler.deactivate(self);
        }
    }

    fn deferred_fired(self: &Rc<Self>, result: Result<(), Failure>, synchronous: bool) {
        let scheduler = {
            let mut st = self.state.borrow_mut();
            st.waiting = false;
            if st.outcome.is_some() {
                return;
            }
            if synchronous || st.pauses > 0 {
                None
            } else {
                st.scheduler.clone()
            }
        };
        match result {
            Err(failure) => self.fail(failure),
            Ok(()) => {
                if let Some(scheduler) = scheduler {
                    scheduler.activate(self);
                }
            }
        }
    }

    /// The iterator failed (Twisted's `_completeWith(TaskFailed(), failure)`).
    fn fail(self: &Rc<Self>, failure: Failure) {
        self.complete(TaskFinished::Failed(failure.clone()), Err(failure));
    }

    /// Finishes the task (Twisted's `_completeWith`): it leaves its cooperator first, then
    /// every `when_done` Deferred fires with `outcome`, so their callbacks see a consistent
    /// cooperator. `how` is what later `pause` and `stop` calls report.
    fn complete(self: &Rc<Self>, how: TaskFinished, outcome: Result<(), Failure>) {
        let (scheduler, waiters) = {
            let mut st = self.state.borrow_mut();
            if st.outcome.is_some() {
                return;
            }
            st.outcome = Some(outcome.clone());
            st.finished = Some(how);
            (st.scheduler.take(), std::mem::take(&mut st.waiters))
        };
        if let Some(scheduler) = scheduler {
            scheduler.forget(self);
        }
        let iterator = self.iterator.borrow_mut().take();
        drop(iterator);
        for waiter in waiters {
            let _ = match &outcome {
                Ok(()) => waiter.try_callback(()),
                Err(failure) => waiter.try_errback(failure.clone()),
            };
        }
    }
}

impl Drop for TaskCore {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        if let Some(TaskFinished::Failed(failure)) = st.finished.take()
            && !st.observed
        {
            crate::defer::chain::report_unhandled(failure);
        }
    }
}

impl TaskState {
    /// Twisted's `_checkFinish`: how the task finished, if it has. A failure handed to the
    /// caller this way counts as seen.
    fn check_finish(&mut self) -> Result<(), TaskFinished> {
        match &self.finished {
            None => Ok(()),
            Some(how) => {
                if matches!(how, TaskFinished::Failed(_)) {
                    self.observed = true;
                }
                Err(how.clone())
            }
        }
    }
}

/// A task running in a [`Cooperator`] (Twisted's `task.CooperativeTask`): pause, resume or
/// stop it, or wait for it with [`when_done`](CooperativeTask::when_done).
///
/// A cheap handle: clones refer to the same task. An iterator failure that no `when_done`
/// Deferred ever saw (and no [`pause`](CooperativeTask::pause) or
/// [`stop`](CooperativeTask::stop) reported) is logged as an unhandled error when the last
/// handle goes.
#[derive(Clone)]
pub struct CooperativeTask {
    core: Rc<TaskCore>,
}

impl CooperativeTask {
    /// Pauses the task (Twisted's `pause`). Pauses are counted: each needs its own
    /// [`resume`](CooperativeTask::resume).
    ///
    /// # Errors
    ///
    /// [`TaskFinished`] if the task has finished, saying how: exhausted
    /// ([`Done`](TaskFinished::Done)), failed ([`Failed`](TaskFinished::Failed), with the
    /// failure), stopped, or stopped with its cooperator (Twisted raises `TaskDone`,
    /// `TaskFailed`, `TaskStopped` or `SchedulerStopped`).
    pub fn pause(&self) -> Result<(), TaskFinished> {
        let scheduler = {
            let mut st = self.core.state.borrow_mut();
            st.check_finish()?;
            st.pauses += 1;
            if st.pauses == 1 {
                st.scheduler.clone()
            } else {
                None
            }
        };
        if let Some(scheduler) = scheduler {
            scheduler.deactivate(&self.core);
        }
        Ok(())
    }

    /// Undoes one [`pause`](CooperativeTask::pause); the last one lets the task run again
    /// (Twisted's `resume`).
    ///
    /// # Errors
    ///
    /// [`TaskNotPaused`] if the task is not paused.
    pub fn resume(&self) -> Result<(), TaskNotPaused> {
        let scheduler = {
            let mut st = self.core.state.borrow_mut();
            if st.pauses == 0 {
                return Err(TaskNotPaused);
            }
            st.pauses -= 1;
            if st.pauses == 0 && !st.waiting && st.outcome.is_none() {
                st.scheduler.clone()
            } else {
                None
            }
        };
        if let Some(scheduler) = scheduler {
            scheduler.activate(&self.core);
        }
        Ok(())
    }

    /// Stops the task for good (Twisted's `stop`): its iterator is dropped and every
    /// [`when_done`](CooperativeTask::when_done) Deferred errbacks [`TaskStopped`].
    ///
    /// # Errors
    ///
    /// [`TaskFinished`] if the task had already finished, saying how, as Twisted's
    /// `_checkFinish` does: a task whose iterator failed gives
    /// [`TaskFinished::Failed`] with that failure (Twisted's `TaskFailed`), one that was
    /// exhausted [`TaskFinished::Done`], one already stopped [`TaskFinished::Stopped`].
    #[track_caller]
    pub fn stop(&self) -> Result<(), TaskFinished> {
        self.core.state.borrow_mut().check_finish()?;
        self.core
            .complete(TaskFinished::Stopped, Err(Failure::new(TaskStopped)));
        Ok(())
    }

    /// A new Deferred that fires with `()` when the iterator is exhausted (Twisted's
    /// `whenDone`), or errbacks with the iterator's failure, [`TaskStopped`] or
    /// [`SchedulerStopped`]. Each call gives a new Deferred; once the task has finished it
    /// is already fired.
    #[track_caller]
    pub fn when_done(&self) -> Deferred<()> {
        let (resolver, deferred) = Deferred::new();
        let finished = {
            let mut st = self.core.state.borrow_mut();
            st.observed = true;
            match &st.outcome {
                Some(outcome) => Some(outcome.clone()),
                None => {
                    st.waiters.push(resolver.clone());
                    None
                }
            }
        };
        match finished {
            Some(Ok(())) => resolver.callback(()),
            Some(Err(failure)) => resolver.errback(failure),
            None => {}
        }
        deferred
    }

    /// Whether the task has finished: exhausted, failed or stopped.
    pub fn is_finished(&self) -> bool {
        self.core.state.borrow().outcome.is_some()
    }
}

impl fmt::Debug for CooperativeTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.core.state.borrow();
        f.debug_struct("CooperativeTask")
            .field("pauses", &st.pauses)
            .field("waiting", &st.waiting)
            .field("finished", &st.outcome.is_some())
            .finish()
    }
}

struct CoopState {
    /// The tasks that can run, in round-robin order.
    active: Vec<Rc<TaskCore>>,
    /// The index in `active` of the next task to run.
    cursor: usize,
    /// Every unfinished task, running or not.
    all: Vec<Rc<TaskCore>>,
    call: Option<DelayedCall>,
    ticking: bool,
    stopped: bool,
}

struct CoopInner<C> {
    clock: C,
    slice: Cell<Duration>,
    me: Weak<CoopInner<C>>,
    state: RefCell<CoopState>,
}

impl<C: ReactorTime + 'static> CoopInner<C> {
    /// Schedules a tick if work is waiting and none is scheduled (Twisted's `_reschedule`).
    fn reschedule(&self) {
        let needed = {
            let st = self.state.borrow();
            !st.stopped && !st.ticking && st.call.is_none() && !st.active.is_empty()
        };
        if !needed {
            return;
        }
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let call = self.clock.call_later(Duration::ZERO, move || me.tick());
        let old = self.state.borrow_mut().call.replace(call);
        drop(old);
    }

    /// Runs tasks round-robin, one step each per turn, until the slice is used up or no task
    /// can run (Twisted's `_tick`).
    fn tick(&self) {
        let old = {
            let mut st = self.state.borrow_mut();
            st.ticking = true;
            st.call.take()
        };
        drop(old);
        let deadline = Instant::now().checked_add(self.slice.get());
        loop {
            let task = {
                let mut st = self.state.borrow_mut();
                if st.stopped || st.active.is_empty() {
                    break;
                }
                if st.cursor >= st.active.len() {
                    st.cursor = 0;
                }
                let task = st.active[st.cursor].clone();
                st.cursor += 1;
                task
            };
            task.one_unit();
            drop(task);
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                break;
            }
        }
        self.state.borrow_mut().ticking = false;
        self.reschedule();
    }

    fn remove_active(st: &mut CoopState, task: &Rc<TaskCore>) -> Option<Rc<TaskCore>> {
        let index = st.active.iter().position(|t| Rc::ptr_eq(t, task))?;
        if index < st.cursor {
            st.cursor -= 1;
        }
        Some(st.active.remove(index))
    }
}

impl<C: ReactorTime + 'static> Scheduler for CoopInner<C> {
    fn activate(&self, task: &Rc<TaskCore>) {
        {
            let mut st = self.state.borrow_mut();
            if st.stopped || st.active.iter().any(|t| Rc::ptr_eq(t, task)) {
                return;
            }
            st.active.push(task.clone());
        }
        self.reschedule();
    }

    fn deactivate(&self, task: &Rc<TaskCore>) {
        let removed = Self::remove_active(&mut self.state.borrow_mut(), task);
        drop(removed);
    }

    fn forget(&self, task: &Rc<TaskCore>) {
        let removed = {
            let mut st = self.state.borrow_mut();
            let active = Self::remove_active(&mut st, task);
            let all = st
                .all
                .iter()
                .position(|t| Rc::ptr_eq(t, task))
                .map(|i| st.all.remove(i));
            (active, all)
        };
        drop(removed);
    }
}

/// Runs many iterators a step at a time, interleaved, without starving the reactor
/// (Twisted's `task.Cooperator`).
///
/// [`cooperate`](Cooperator::cooperate) adds an iterator as a [`CooperativeTask`]. On each
/// tick, tasks take turns round-robin, one `next()` each per turn, until the time slice
/// ([`DEFAULT_SLICE`], 10 ms, or [`with_slice`](Cooperator::with_slice)) is used up; then
/// the cooperator yields and schedules the next tick with `call_later(0)` on its time
/// source, so timers and I/O run in between. The round-robin goes on across ticks where it
/// left off. The slice is measured in real time ([`Instant`]); the ticks are scheduled on
/// the time source, so with a [`Clock`](crate::time::Clock) they run only when the test
/// advances it: `advance(0)` runs ticks until every task has finished or is paused or
/// waiting on a Deferred (the clock runs calls that become due during an advance).
///
/// An iterator yields [`WorkUnit`]s: `()`, `Result<(), Failure>` or `Deferred<()>`; a
/// Deferred pauses only its own task until it fires.
///
/// A cheap handle: clones share one cooperator. While ticks are pending, the time source
/// keeps it alive.
///
/// # Examples
///
/// ```
/// use std::cell::RefCell;
/// use std::rc::Rc;
/// use torsion::task::Cooperator;
/// use torsion::time::{Clock, ReactorTime};
///
/// let clock = Clock::new();
/// let coop = Cooperator::new(clock.clone());
/// let log = Rc::new(RefCell::new(Vec::new()));
/// let (l1, l2) = (log.clone(), log.clone());
/// let a = coop.cooperate((0..3).map(move |i| l1.borrow_mut().push(format!("a{i}")))).unwrap();
/// let b = coop.cooperate((0..2).map(move |i| l2.borrow_mut().push(format!("b{i}")))).unwrap();
/// let mut done = a.when_done();
///
/// clock.advance(0.0);
/// assert_eq!(*log.borrow(), ["a0", "b0", "a1", "b1", "a2"]);
/// assert!(done.take_result().unwrap().is_ok());
/// assert!(b.is_finished());
/// ```
pub struct Cooperator<C: ReactorTime + 'static> {
    inner: Rc<CoopInner<C>>,
}

impl<C: ReactorTime + 'static> Clone for Cooperator<C> {
    fn clone(&self) -> Self {
        Cooperator {
            inner: self.inner.clone(),
        }
    }
}

impl<C: ReactorTime + 'static> Cooperator<C> {
    /// A cooperator scheduling its ticks on `clock`, with the default 10 ms slice (Twisted's
    /// `Cooperator()`).
    pub fn new(clock: C) -> Self {
        Cooperator {
            inner: Rc::new_cyclic(|me| CoopInner {
                clock,
                slice: Cell::new(DEFAULT_SLICE),
                me: me.clone(),
                state: RefCell::new(CoopState {
                    active: Vec::new(),
                    cursor: 0,
                    all: Vec::new(),
                    call: None,
                    ticking: false,
                    stopped: false,
                }),
            }),
        }
    }

    /// Sets how long each tick may run work before it yields (Twisted's
    /// `terminationPredicateFactory`). A zero slice runs one step per tick.
    pub fn with_slice(self, slice: Duration) -> Self {
        self.inner.slice.set(slice);
        self
    }

    /// Adds `iterator` as a new task, run from the next tick on (Twisted's
    /// `Cooperator.cooperate`).
    ///
    /// # Errors
    ///
    /// [`SchedulerStopped`] if the cooperator has been [stopped](Cooperator::stop).
    pub fn cooperate<I>(&self, iterator: I) -> Result<CooperativeTask, SchedulerStopped>
    where
        I: IntoIterator,
        I::IntoIter: 'static,
        I::Item: WorkUnit,
    {
        if self.inner.state.borrow().stopped {
            return Err(SchedulerStopped);
        }
        let scheduler: Rc<dyn Scheduler> = self.inner.clone();
        let core = Rc::new(TaskCore {
            iterator: RefCell::new(Some(Box::new(
                iterator.into_iter().map(WorkUnit::into_resolved),
            ))),
            state: RefCell::new(TaskState {
                pauses: 0,
                waiting: false,
                outcome: None,
                finished: None,
                waiters: Vec::new(),
                observed: false,
                scheduler: Some(scheduler),
            }),
        });
        self.inner.state.borrow_mut().all.push(core.clone());
        self.inner.activate(&core);
        Ok(CooperativeTask { core })
    }

    /// Runs `iterator` as a task and returns its [`when_done`](CooperativeTask::when_done)
    /// Deferred (Twisted's `Cooperator.coiterate`); it errbacks [`SchedulerStopped`] if the
    /// cooperator has been stopped.
    #[track_caller]
    pub fn coiterate<I>(&self, iterator: I) -> Deferred<()>
    where
        I: IntoIterator,
        I::IntoIter: 'static,
        I::Item: WorkUnit,
    {
        match self.cooperate(iterator) {
            Ok(task) => task.when_done(),
            Err(stopped) => Deferred::fail(stopped),
        }
    }

    /// Stops the cooperator (Twisted's `Cooperator.stop`): every unfinished task, paused ones
    /// included, is stopped and its `when_done` Deferreds errback [`SchedulerStopped`]; the
    /// pending tick is cancelled; later [`cooperate`](Cooperator::cooperate) calls fail.
    #[track_caller]
    pub fn stop(&self) {
        let (tasks, active, call) = {
            let mut st = self.inner.state.borrow_mut();
            st.stopped = true;
            st.cursor = 0;
            (
                std::mem::take(&mut st.all),
                std::mem::take(&mut st.active),
                st.call.take(),
            )
        };
        drop(active);
        if let Some(call) = call {
            let _ = call.cancel();
        }
        for task in tasks {
            task.complete(
                TaskFinished::SchedulerStopped,
                Err(Failure::new(SchedulerStopped)),
            );
        }
    }

    /// Whether the cooperator accepts tasks: it has not been stopped (Twisted's `running`).
    pub fn running(&self) -> bool {
        !self.inner.state.borrow().stopped
    }

    /// The time source ticks are scheduled on.
    pub fn clock(&self) -> &C {
        &self.inner.clock
    }
}

impl<C: ReactorTime + 'static> fmt::Debug for Cooperator<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.state.borrow();
        f.debug_struct("Cooperator")
            .field("tasks", &st.all.len())
            .field("runnable", &st.active.len())
            .field("slice", &self.inner.slice.get())
            .field("stopped", &st.stopped)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------
// react
// ---------------------------------------------------------------------------------------

/// Runs `main` on a new reactor and returns the process exit code (Twisted's `task.react`).
///
/// The reactor is built with SIGINT and SIGTERM handlers installed, so either stops it
/// gracefully. See [`react_with`] for what happens next, and to choose the reactor.
///
/// # Examples
///
/// ```
/// use std::process::ExitCode;
/// use torsion::task::{react, sleep};
///
/// let code = react(|reactor| async move {
///     sleep(&reactor, 0.01).await?;
///     println!("slept");
///     Ok(())
/// });
/// assert_eq!(code, ExitCode::SUCCESS);
/// ```
///
/// A program's `main` returns it:
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     torsion::task::react(|_reactor| async { Ok(()) })
/// }
/// ```
pub fn react<F, Fut>(main: F) -> ExitCode
where
    F: FnOnce(Reactor) -> Fut + 'static,
    Fut: Future<Output = Result<(), Failure>> + 'static,
{
    match Reactor::builder().install_signal_handlers(true).build() {
        Ok(reactor) => react_with(reactor, main),
        Err(failure) => {
            eprintln!("cannot build a reactor: {failure}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `main` on `reactor` and returns the process exit code ([`react`] with a reactor of
/// your choosing; Twisted's `react(main, argv, _reactor)`).
///
/// Runs [`react_result`], then returns [`ExitCode::SUCCESS`] if it is `Ok`; otherwise prints
/// the failure to stderr (`main function encountered error: ...`) and returns
/// [`ExitCode::FAILURE`].
pub fn react_with<F, Fut>(reactor: Reactor, main: F) -> ExitCode
where
    F: FnOnce(Reactor) -> Fut + 'static,
    Fut: Future<Output = Result<(), Failure>> + 'static,
{
    match react_result(reactor, main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("main function encountered error: {failure:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `main` on `reactor` and returns its outcome (the testable core of [`react`]).
///
/// Once the reactor runs, `main(reactor)` is [spawned](crate::spawn). When it finishes, the
/// reactor is stopped, unless it is already stopping (`main` may have stopped it itself: it
/// is never stopped twice); `run` returns and so does this, with `main`'s outcome.
///
/// If the reactor stops before `main` has finished (SIGINT or SIGTERM, or other code calling
/// `stop`), the outcome is `Ok`, so the program exits 0, as Twisted's `react` does; `main`'s
/// unfinished future is cancelled (see [`spawn`](crate::spawn)). A server's `main` usually
/// ends with [`Reactor::until_shutdown`], so it finishes as the reactor stops.
///
/// # Errors
///
/// `main`'s failure (a panic included), the failure the reactor was stopped with
/// ([`Reactor::stop_with_failure`]), or `run`'s error if the reactor has already run
/// ([`ReactorNotRestartable`](crate::error::ReactorNotRestartable)).
pub fn react_result<F, Fut>(reactor: Reactor, main: F) -> Result<(), Failure>
where
    F: FnOnce(Reactor) -> Fut + 'static,
    Fut: Future<Output = Result<(), Failure>> + 'static,
{
    let outcome: Rc<RefCell<Option<Result<(), Failure>>>> = Rc::new(RefCell::new(None));
    let main_handle: Rc<RefCell<Option<crate::defer::DeferredHandle>>> =
        Rc::new(RefCell::new(None));
    let (out, handle_slot, r) = (outcome.clone(), main_handle.clone(), reactor.clone());
    reactor.call_when_running(move || {
        let finished = crate::spawn(main(r.clone()));
        *handle_slot.borrow_mut() = Some(finished.handle());
        drop(finished.add_both(move |result| {
            out.borrow_mut().get_or_insert(result);
            if r.is_running() {
                let _ = r.stop();
            }
            Ok(())
        }));
    });
    let ran = reactor.run();
    let result = outcome.borrow_mut().take();
    let unfinished = main_handle.borrow_mut().take().filter(|_| result.is_none());
    if let Some(handle) = unfinished {
        handle.cancel();
    }
    ran?;
    result.unwrap_or(Ok(()))
}
