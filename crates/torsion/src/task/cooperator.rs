//! [`Cooperator`] and [`CooperativeTask`] (Twisted's `task.Cooperator`,
//! `task.CooperativeTask`): many iterators run a step at a time, round-robin, in time
//! slices, so long jobs never starve the reactor.
//!
//! Invariant: no borrow of the scheduler or a task is held while an iterator's `next` runs
//! or a Deferred it returned is fired.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use crate::defer::{IntoOutcome, Resolved};
use crate::error::{SchedulerStopped, TaskFinished, TaskNotPaused, TaskStopped};
use crate::time::{DelayedCall, ReactorTime};
use crate::{Deferred, Failure, Resolver};

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
