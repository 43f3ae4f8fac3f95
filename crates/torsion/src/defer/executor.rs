//! The local executor: runs `!Send` futures on the reactor's thread and turns them into
//! Deferreds, which is how torsion spells Twisted's `inlineCallbacks` /
//! `ensureDeferred`.
//!
//! [`spawn`] polls the future at once, so it runs synchronously up to its first `.await` of
//! an unfired Deferred, as an `inlineCallbacks` generator does. When a Deferred it awaits
//! fires, the task is polled again right there, inside that Deferred's callback loop (again
//! as in Twisted). Any other wake-up (a timer future, a channel, another thread) queues the
//! task, and the reactor polls queued tasks on its next iteration, within a budget so I/O is
//! never starved.
//!
//! Invariant: a task is never polled while it is already being polled; a wake-up during
//! its own poll queues it instead.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, ThreadId};

use slab::Slab;

use crate::defer::chain::{Canceller, Chain, ReusableCanceller};
use crate::defer::deferred::Failer;
use crate::defer::{Deferred, DeferredHandle, Failure};

type BoxFuture = Pin<Box<dyn Future<Output = ()>>>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TaskState {
    Idle,
    Polling,
    /// Woken while being polled: queue it once the poll returns.
    Notified,
    Queued,
    Done,
}

struct Task {
    key: usize,
    generation: u64,
    future: RefCell<Option<BoxFuture>>,
    state: Cell<TaskState>,
    /// The Deferreds the task is waiting on (recorded by their `poll`), for cancellation.
    awaiting: RefCell<Vec<DeferredHandle>>,
    waker: Waker,
    /// Fails the task's Deferred (when its future panics).
    fail: Failer,
    spawned_at: &'static Location<'static>,
}

/// The part of the executor other threads can reach.
struct Remote {
    owner: ThreadId,
    queue: Mutex<Vec<(usize, u64)>>,
    /// Set while a remote wake-up is queued and not yet seen, so a burst costs one unpark.
    notified: AtomicBool,
    unpark: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

struct TaskWaker {
    key: usize,
    generation: u64,
    remote: Arc<Remote>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if thread::current().id() == self.remote.owner {
            let _ = EXECUTOR.try_with(|ex| ex.wake_local(self.key, self.generation));
            return;
        }
        self.remote
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((self.key, self.generation));
        if !self.remote.notified.swap(true, Ordering::AcqRel) {
            let unpark = self
                .remote
                .unpark
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(unpark) = unpark {
                unpark();
            }
        }
    }
}

struct Executor {
    tasks: RefCell<Slab<Rc<Task>>>,
    ready: RefCell<VecDeque<Rc<Task>>>,
    remote: Arc<Remote>,
    next_generation: Cell<u64>,
}

thread_local! {
    static EXECUTOR: Executor = Executor {
        tasks: RefCell::new(Slab::new()),
        ready: RefCell::new(VecDeque::new()),
        remote: Arc::new(Remote {
            owner: thread::current().id(),
            queue: Mutex::new(Vec::new()),
            notified: AtomicBool::new(false),
            unpark: Mutex::new(None),
        }),
        next_generation: Cell::new(0),
    };
    /// The task being polled, so an awaited Deferred can record itself.
    static CURRENT: RefCell<Option<Rc<Task>>> = const { RefCell::new(None) };
    /// Set while a Deferred chain wakes the future awaiting it: such a wake-up polls the task
    /// inline (Twisted's inlineCallbacks resumes inside the callback).
    static INLINE_WAKE: Cell<bool> = const { Cell::new(false) };
    /// How many inline polls are nested right now.
    static INLINE_DEPTH: Cell<usize> = const { Cell::new(0) };
    /// Tasks whose inline poll would have nested too deeply: the outermost inline poll runs
    /// them once it returns, so a long line of tasks each awaiting the previous one resumes
    /// without growing the stack.
    static TRAMPOLINE: RefCell<VecDeque<Rc<Task>>> = const { RefCell::new(VecDeque::new()) };
}

/// How deeply inline polls may nest before further ones go through the trampoline.
const MAX_INLINE_DEPTH: usize = 32;

/// Runs `wake` with inline polling allowed for this thread's tasks.
pub(crate) fn wake_inline(waker: Waker) {
    let previous = INLINE_WAKE.with(|f| f.replace(true));
    waker.wake();
    INLINE_WAKE.with(|f| f.set(previous));
}

impl Executor {
    fn get(&self, key: usize, generation: u64) -> Option<Rc<Task>> {
        let tasks = self.tasks.borrow();
        tasks
            .get(key)
            .filter(|t| t.generation == generation)
            .cloned()
    }

    fn wake_local(&self, key: usize, generation: u64) {
        let Some(task) = self.get(key, generation) else {
            return;
        };
        match task.state.get() {
            TaskState::Idle => {
                if INLINE_WAKE.with(Cell::get) {
                    self.poll_inline(task);
                } else {
                    task.state.set(TaskState::Queued);
                    self.ready.borrow_mut().push_back(task);
                }
            }
            TaskState::Polling => task.state.set(TaskState::Notified),
            TaskState::Notified | TaskState::Queued | TaskState::Done => {}
        }
    }

    /// Polls `task` right here, or, when inline polls are already nested deeply, hands it to
    /// the outermost one through the trampoline.
    fn poll_inline(&self, task: Rc<Task>) {
        let depth = INLINE_DEPTH.with(Cell::get);
        if depth >= MAX_INLINE_DEPTH {
            task.state.set(TaskState::Queued);
            TRAMPOLINE.with(|t| t.borrow_mut().push_back(task));
            return;
        }
        INLINE_DEPTH.with(|d| d.set(depth + 1));
        self.poll_task(&task);
        INLINE_DEPTH.with(|d| d.set(depth));
        if depth == 0 {
            while let Some(next) = TRAMPOLINE.with(|t| t.borrow_mut().pop_front()) {
                if next.state.get() == TaskState::Queued {
                    next.state.set(TaskState::Idle);
                    INLINE_DEPTH.with(|d| d.set(1));
                    self.poll_task(&next);
                    INLINE_DEPTH.with(|d| d.set(0));
                }
            }
        }
    }

    fn poll_task(&self, task: &Rc<Task>) {
        let Some(mut future) = task.future.borrow_mut().take() else {
            task.state.set(TaskState::Done);
            return;
        };
        task.state.set(TaskState::Polling);
        let old_awaiting = std::mem::take(&mut *task.awaiting.borrow_mut());
        drop(old_awaiting);
        let previous = CURRENT.with(|c| c.replace(Some(task.clone())));
        let inline = INLINE_WAKE.with(|f| f.replace(false));
        let mut cx = Context::from_waker(&task.waker);
        let polled = catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx)));
        INLINE_WAKE.with(|f| f.set(inline));
        CURRENT.with(|c| *c.borrow_mut() = previous);
        match polled {
            Ok(Poll::Pending) if task.state.get() != TaskState::Done => {
                *task.future.borrow_mut() = Some(future);
                if task.state.get() == TaskState::Notified {
                    task.state.set(TaskState::Queued);
                    self.ready.borrow_mut().push_back(task.clone());
                } else {
                    task.state.set(TaskState::Idle);
                }
            }
            Ok(_) => {
                self.finish(task);
                drop(future);
            }
            Err(payload) => {
                self.finish(task);
                drop(future);
                let failure = Failure::from_panic(&*payload).passed_through(task.spawned_at);
                let _ = task.fail.try_errback(failure);
            }
        }
    }

    fn finish(&self, task: &Rc<Task>) {
        task.state.set(TaskState::Done);
        let mut tasks = self.tasks.borrow_mut();
        if tasks
            .get(task.key)
            .is_some_and(|t| t.generation == task.generation)
        {
            tasks.remove(task.key);
        }
    }

    /// Drops a task's future without finishing it (its Deferred is being cancelled).
    fn abandon(&self, task: &Rc<Task>) {
        let future = task.future.borrow_mut().take();
        if task.state.get() != TaskState::Polling {
            self.finish(task);
        } else {
            // Cancelled from inside its own poll: poll_task sees Done and drops it.
            task.state.set(TaskState::Done);
        }
        drop(future);
    }
}

/// Runs `future` on this thread and returns a Deferred of its output (Twisted's
/// `inlineCallbacks`, `ensureDeferred` and `Deferred.fromCoroutine`): torsion's one way to
/// spawn.
///
/// The future runs at once, up to its first `.await` of something not yet available. `?`
/// and `match` on awaited Deferreds replace `try`/`except`; `return` replaces
/// `returnValue`. A failure coming out of the future records this call site in its
/// [`path`](Failure::path), so failures through nested spawns name every level.
///
/// Cancelling the returned Deferred cancels the Deferreds the future is awaiting; the
/// future then decides the result (usually by passing the
/// [`Cancelled`](crate::error::Cancelled) failure on with `?`). A future awaiting no
/// Deferred is dropped, and the Deferred fails with `Cancelled`. A panic in the future
/// becomes a failure.
///
/// Queued wake-ups (from timers, channels or other threads) are polled by a running
/// [`Reactor`](crate::Reactor) on this thread.
///
/// # Examples
///
/// ```
/// use torsion::{Deferred, spawn};
///
/// let (resolver, poem) = Deferred::<String>::new();
/// let lines = spawn(async move {
///     let poem = poem.await?;
///     Ok(poem.lines().count())
/// });
/// resolver.callback("roses are red\nviolets are blue".into());
/// let mut lines = lines;
/// assert_eq!(lines.take_result().unwrap().unwrap(), 2);
/// ```
#[track_caller]
#[doc(alias = "inlineCallbacks")]
#[doc(alias = "ensureDeferred")]
#[doc(alias = "fromCoroutine")]
pub fn spawn<T, F>(future: F) -> Deferred<T>
where
    T: 'static,
    F: Future<Output = Result<T, Failure>> + 'static,
{
    let location = Location::caller();
    let chain = Chain::new(location);
    let deferred = Deferred::<T>::from_chain(chain.clone());
    let resolver = crate::defer::Resolver::<T>::from_chain(chain.clone());
    let fail = Failer::new(&resolver);
    let wrapped = async move {
        match future.await {
            Ok(value) => {
                let _ = resolver.try_callback(value);
            }
            Err(failure) => {
                let _ = resolver.try_errback(failure.passed_through(location));
            }
        }
    };
    EXECUTOR.with(|ex| {
        let generation = ex.next_generation.get();
        ex.next_generation.set(generation + 1);
        let task = {
            let mut tasks = ex.tasks.borrow_mut();
            let entry = tasks.vacant_entry();
            let key = entry.key();
            let task = Rc::new(Task {
                key,
                generation,
                future: RefCell::new(Some(Box::pin(wrapped))),
                state: Cell::new(TaskState::Idle),
                awaiting: RefCell::new(Vec::new()),
                waker: Waker::from(Arc::new(TaskWaker {
                    key,
                    generation,
                    remote: ex.remote.clone(),
                })),
                fail,
                spawned_at: location,
            });
            entry.insert(task.clone());
            task
        };
        let weak: Weak<Task> = Rc::downgrade(&task);
        chain.set_canceller(Canceller::Reusable(weak));
        ex.poll_task(&task);
    });
    deferred
}

/// The canceller of a spawned task's Deferred.
impl ReusableCanceller for Task {
    fn cancel(self: Rc<Self>) -> bool {
        cancel_task(self)
    }
}

/// Cancels what the task awaits, or drops it when it awaits nothing live; returns whether
/// `Cancelled` should follow.
fn cancel_task(task: Rc<Task>) -> bool {
    let awaiting = std::mem::take(&mut *task.awaiting.borrow_mut());
    let live: Vec<DeferredHandle> = awaiting.into_iter().filter(|h| !h.is_fired()).collect();
    if live.is_empty() {
        let _ = EXECUTOR.try_with(|ex| ex.abandon(&task));
        return true;
    }
    for handle in live {
        handle.cancel();
    }
    false
}

/// Records that the task being polled awaits `chain`.
pub(crate) fn note_awaiting(chain: &Rc<Chain>) {
    let _ = CURRENT.try_with(|c| {
        if let Some(task) = c.borrow().as_ref() {
            task.awaiting
                .borrow_mut()
                .push(DeferredHandle::from_chain(chain));
        }
    });
}

/// Polls queued tasks, at most `budget` of them; returns whether some remain queued.
pub(crate) fn run_ready(budget: usize) -> bool {
    EXECUTOR.with(|ex| {
        if ex.remote.notified.swap(false, Ordering::AcqRel) {
            let remote: Vec<(usize, u64)> = std::mem::take(
                &mut *ex
                    .remote
                    .queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            for (key, generation) in remote {
                if let Some(task) = ex.get(key, generation) {
                    if task.state.get() == TaskState::Idle {
                        task.state.set(TaskState::Queued);
                        ex.ready.borrow_mut().push_back(task);
                    } else if task.state.get() == TaskState::Polling {
                        task.state.set(TaskState::Notified);
                    }
                }
            }
        }
        for _ in 0..budget {
            let Some(task) = ex.ready.borrow_mut().pop_front() else {
                return false;
            };
            if task.state.get() == TaskState::Queued {
                task.state.set(TaskState::Idle);
                ex.poll_task(&task);
            }
        }
        !ex.ready.borrow().is_empty()
    })
}

/// Whether a queued task or an unseen remote wake-up is waiting.
pub(crate) fn has_ready() -> bool {
    EXECUTOR.with(|ex| !ex.ready.borrow().is_empty() || ex.remote.notified.load(Ordering::Acquire))
}

/// Sets what a wake-up from another thread calls to get this thread's loop running.
pub(crate) fn set_unpark(unpark: Option<Arc<dyn Fn() + Send + Sync>>) {
    EXECUTOR.with(|ex| {
        *ex.remote
            .unpark
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = unpark;
    });
}

/// Where each unfinished task of this thread was spawned.
pub(crate) fn live_tasks() -> Vec<&'static Location<'static>> {
    EXECUTOR.with(|ex| {
        ex.tasks
            .borrow()
            .iter()
            .map(|(_, t)| t.spawned_at)
            .collect()
    })
}

/// Drops every unfinished task of this thread (a test's leftovers), without polling them.
pub(crate) fn drop_all_tasks() {
    let tasks: Vec<Rc<Task>> = EXECUTOR.with(|ex| {
        ex.ready.borrow_mut().clear();
        ex.tasks.borrow_mut().drain().collect()
    });
    for task in tasks {
        task.state.set(TaskState::Done);
        let future = task.future.borrow_mut().take();
        drop(future);
    }
}
