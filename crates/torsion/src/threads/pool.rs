//! [`ThreadPool`]: worker threads for blocking work (Twisted's
//! `twisted.python.threadpool.ThreadPool`).
//!
//! Jobs wait in one FIFO queue. A worker is started only when a job is queued that no idle
//! worker will take and fewer than `max` workers are alive; idle workers wait on a condition
//! variable and never time out, as in Twisted. Lowering `max` retires idle workers at once
//! and busy ones after their current job. `stop` lets the queue drain, then joins every
//! worker.
//!
//! The invariant to keep: the pool's lock is never held while user code runs, and every job
//! runs inside `catch_unwind`, so a worker leaves its loop only when the pool is stopped or
//! shrunk, and the pool's counts of threads, idle and busy workers stay true.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};

use crate::Failure;
use crate::error::PoolStopped;

/// A queued job.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// The name prefix of the threads of a pool built with [`ThreadPool::new`].
const DEFAULT_NAME: &str = "torsion-pool";

/// A pool of worker threads (Twisted's `twisted.python.threadpool.ThreadPool`): min 0, max 10
/// by default.
///
/// Threads are started on demand up to `max`, idle ones wait for work, and all of them are
/// joined by [`stop`](ThreadPool::stop) (or when the pool is dropped). Jobs start in the order
/// they were queued. A `ThreadPool` is `Send + Sync`: share it behind an [`Arc`].
///
/// # Examples
///
/// ```
/// use std::sync::mpsc;
/// use torsion::threads::ThreadPool;
///
/// let pool = ThreadPool::default();
/// let (tx, rx) = mpsc::channel();
/// pool.call_in_thread_with_callback(|| 6 * 7, move |result| tx.send(result).unwrap())
///     .unwrap();
/// assert_eq!(rx.recv().unwrap().unwrap(), 42);
/// pool.stop();
/// ```
pub struct ThreadPool {
    shared: Arc<Shared>,
}

/// What the pool and its workers share.
struct Shared {
    state: Mutex<State>,
    /// Signalled when a job is queued, when the pool stops and when `max` shrinks.
    work: Condvar,
    /// Thread names are `{name}-{n}`.
    name: String,
    /// Makes every thread spawn fail, to test what happens then.
    #[cfg(test)]
    fail_spawns: std::sync::atomic::AtomicBool,
}

struct State {
    queue: VecDeque<Job>,
    min: usize,
    max: usize,
    /// Workers started and not yet retired (each is idle, busy, or between the two).
    threads: usize,
    /// Workers waiting on `Shared::work`.
    idle: usize,
    /// Workers running a job.
    busy: usize,
    stopped: bool,
    /// Every worker not yet joined, including retired ones that may still be exiting.
    handles: Vec<JoinHandle<()>>,
    /// The number in the next thread's name.
    next_id: usize,
}

impl ThreadPool {
    /// Builds a pool of at most `max` threads and starts `min` of them now. Its threads are
    /// named `torsion-pool-0`, `torsion-pool-1`, ….
    ///
    /// # Panics
    ///
    /// When `max` is 0 or `min > max` (Twisted asserts the same).
    pub fn new(min: usize, max: usize) -> ThreadPool {
        ThreadPool::with_name(min, max, DEFAULT_NAME)
    }

    /// Like [`new`](ThreadPool::new), with threads named `{name}-0`, `{name}-1`, … (Twisted's
    /// `ThreadPool(minthreads, maxthreads, name)`).
    ///
    /// # Panics
    ///
    /// When `max` is 0 or `min > max`.
    pub fn with_name(min: usize, max: usize, name: impl Into<String>) -> ThreadPool {
        assert!(max >= 1, "a ThreadPool needs max >= 1 thread, got max = 0");
        assert!(
            min <= max,
            "a ThreadPool needs min <= max, got min = {min}, max = {max}"
        );
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                min,
                max,
                threads: 0,
                idle: 0,
                busy: 0,
                stopped: false,
                handles: Vec::new(),
                next_id: 0,
            }),
            work: Condvar::new(),
            name: name.into(),
            #[cfg(test)]
            fail_spawns: std::sync::atomic::AtomicBool::new(false),
        });
        {
            let mut state = shared.lock();
            for _ in 0..min {
                if !shared.spawn_worker(&mut state) {
                    break;
                }
            }
        }
        ThreadPool { shared }
    }

    /// Queues `f` to run on a worker thread (Twisted's `callInThread`). Jobs start in FIFO
    /// order. A panic inside `f` is caught and logged as a
    /// [`Failure`]; the worker survives.
    ///
    /// If no worker is alive and none can be started (the OS refuses to spawn a thread),
    /// `f` runs on the calling thread before this returns, so that work is never stranded;
    /// the spawn error is logged.
    ///
    /// # Errors
    ///
    /// [`PoolStopped`] after [`stop`](ThreadPool::stop); `f` is dropped without running.
    pub fn call_in_thread(&self, f: impl FnOnce() + Send + 'static) -> Result<(), PoolStopped> {
        self.submit(Box::new(f))
    }

    /// Like [`call_in_thread`](ThreadPool::call_in_thread), then `on_result` runs on the same
    /// worker with `f`'s outcome: `Ok(value)`, or `Err(failure)` carrying
    /// [`Panicked`](crate::error::Panicked) if `f` panicked (Twisted's
    /// `callInThreadWithCallback`). A panic inside `on_result` is caught and logged.
    ///
    /// # Errors
    ///
    /// [`PoolStopped`] after [`stop`](ThreadPool::stop); neither closure runs.
    pub fn call_in_thread_with_callback<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
        on_result: impl FnOnce(Result<T, Failure>) + Send + 'static,
    ) -> Result<(), PoolStopped> {
        self.submit(Box::new(move || {
            let result = panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
                let failure = Failure::from_panic(&*payload);
                drop_payload(payload);
                failure
            });
            on_result(result);
        }))
    }

    /// Changes the maximum number of threads (Twisted's `suggestThreadPoolSize` and
    /// `adjustPoolsize`). Growing starts threads for work already queued; shrinking retires
    /// idle threads at once, and busy ones once their current job returns. `min` is lowered
    /// to `max` if it was above.
    ///
    /// # Panics
    ///
    /// When `max` is 0.
    pub fn set_max(&self, max: usize) {
        assert!(max >= 1, "a ThreadPool needs max >= 1 thread, got max = 0");
        let mut state = self.shared.lock();
        state.max = max;
        state.min = state.min.min(max);
        if state.stopped {
            return;
        }
        if state.threads > max {
            self.shared.work.notify_all();
        } else {
            let wanted = state
                .queue
                .len()
                .saturating_sub(state.idle)
                .min(max - state.threads);
            for _ in 0..wanted {
                if !self.shared.spawn_worker(&mut state) {
                    break;
                }
            }
        }
    }

    /// The maximum number of threads.
    pub fn max(&self) -> usize {
        self.shared.lock().max
    }

    /// The number of threads started by [`new`](ThreadPool::new).
    pub fn min(&self) -> usize {
        self.shared.lock().min
    }

    /// The number of threads started and not yet retired.
    pub fn threads(&self) -> usize {
        self.shared.lock().threads
    }

    /// The number of threads running a job now.
    pub fn busy(&self) -> usize {
        self.shared.lock().busy
    }

    /// The number of jobs waiting for a thread.
    pub fn queued(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Stops the pool: no new work is accepted, queued work still runs, then every thread
    /// exits and is joined (Twisted's `ThreadPool.stop`). Idempotent; [`Drop`] calls it too.
    ///
    /// Called from one of the pool's own threads (a job that stops or drops its pool), it
    /// joins the others and leaves its own thread to exit once its current job returns.
    /// A second `stop` racing the first on another thread returns without waiting for the
    /// first to finish joining.
    pub fn stop(&self) {
        let handles = {
            let mut state = self.shared.lock();
            state.stopped = true;
            self.shared.work.notify_all();
            std::mem::take(&mut state.handles)
        };
        let me = thread::current().id();
        for handle in handles {
            if handle.thread().id() == me {
                continue; // Joining ourselves would never return: detach instead.
            }
            if handle.join().is_err() {
                crate::log::error!(target: "torsion::threads", "a worker of thread pool {} panicked", self.shared.name);
            }
        }
        // Work is left only if no worker was alive to take it; run it here rather than drop it.
        loop {
            let job = self.shared.lock().queue.pop_front();
            match job {
                Some(job) => run_job(job),
                None => break,
            }
        }
    }

    fn submit(&self, job: Job) -> Result<(), PoolStopped> {
        let mut state = self.shared.lock();
        if state.stopped {
            return Err(PoolStopped);
        }
        state.queue.push_back(job);
        if state.queue.len() > state.idle && state.threads < state.max {
            // A failure is logged; the job waits for a worker already alive, if any.
            self.shared.spawn_worker(&mut state);
        }
        if state.idle > 0 {
            self.shared.work.notify_one();
        }
        if state.threads == 0 {
            // No worker is alive and none could be started: run the work here.
            let jobs: Vec<Job> = state.queue.drain(..).collect();
            drop(state);
            crate::log::warning!(
                target: "torsion::threads",
                "no worker of thread pool {} could be started; running the job on the calling thread",
                self.shared.name
            );
            jobs.into_iter().for_each(run_job);
        }
        Ok(())
    }

    #[cfg(test)]
    fn fail_spawns(&self, fail: bool) {
        self.shared
            .fail_spawns
            .store(fail, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Default for ThreadPool {
    /// A pool of 0 to 10 threads, as the one behind Twisted's `reactor.callInThread`.
    fn default() -> Self {
        ThreadPool::new(0, 10)
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("ThreadPool")
            .field("name", &self.shared.name)
            .field("min", &state.min)
            .field("max", &state.max)
            .field("threads", &state.threads)
            .field("busy", &state.busy)
            .field("queued", &state.queue.len())
            .field("stopped", &state.stopped)
            .finish()
    }
}

impl Shared {
    /// Locks the state. A poisoned lock is recovered: user code never runs under it, so the
    /// state is consistent whatever panicked.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts one worker, with the lock held so that `stop` sees its handle. Returns false,
    /// after logging why, when the OS refuses.
    fn spawn_worker(self: &Arc<Self>, state: &mut State) -> bool {
        let name = format!("{}-{}", self.name, state.next_id);
        let worker = Arc::clone(self);
        #[cfg(test)]
        let spawned = if self.fail_spawns.load(std::sync::atomic::Ordering::SeqCst) {
            Err(io::Error::other("spawning is made to fail by the test"))
        } else {
            thread::Builder::new()
                .name(name)
                .spawn(move || worker.work())
        };
        #[cfg(not(test))]
        let spawned = thread::Builder::new()
            .name(name)
            .spawn(move || worker.work());
        match spawned {
            Ok(handle) => {
                // Forget retired workers that have exited, so `handles` stays small.
                state.handles.retain(|handle| !handle.is_finished());
                state.handles.push(handle);
                state.threads += 1;
                state.next_id += 1;
                true
            }
            Err(error) => {
                let error: io::Error = error;
                crate::log::error!(
                    target: "torsion::threads",
                    "could not start a worker of thread pool {} ({} running): {error}",
                    self.name,
                    state.threads
                );
                false
            }
        }
    }

    /// A worker's loop: take jobs until the pool stops with an empty queue, or until there
    /// are more threads than `max`.
    fn work(&self) {
        let mut state = self.lock();
        loop {
            if state.threads > state.max {
                state.threads -= 1;
                if !state.queue.is_empty() {
                    // We may have been woken for this job: pass it on.
                    self.work.notify_one();
                }
                return;
            }
            if let Some(job) = state.queue.pop_front() {
                state.busy += 1;
                drop(state);
                run_job(job);
                state = self.lock();
                state.busy -= 1;
                continue;
            }
            if state.stopped {
                state.threads -= 1;
                return;
            }
            state.idle += 1;
            state = self
                .work
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.idle -= 1;
        }
    }
}

/// Runs a job, logging a panic as a [`Failure`] instead of letting it end the thread.
fn run_job(job: Job) {
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(job)) {
        let failure = Failure::from_panic(&*payload);
        drop_payload(payload);
        crate::log::error!(target: "torsion::threads", "a job in the thread pool panicked: {failure}");
    }
}

/// Drops a panic's payload, whose own `Drop` may panic in turn (that second payload is
/// leaked rather than dropped).
fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Panicked;
    use std::cell::RefCell;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    const PATIENCE: Duration = Duration::from_secs(20);

    /// Waits until `condition` holds, failing the test after a generous timeout.
    fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// A gate jobs wait at until the test opens it.
    #[derive(Clone, Default)]
    struct Gate(Arc<(Mutex<bool>, Condvar)>);

    impl Gate {
        fn wait(&self) {
            let (open, cv) = &*self.0;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
        }

        fn open(&self) {
            let (open, cv) = &*self.0;
            *open.lock().unwrap() = true;
            cv.notify_all();
        }
    }

    /// Counts the threads that have exited after calling `mark_thread`.
    struct ExitCounter(Arc<AtomicUsize>);

    impl Drop for ExitCounter {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    thread_local! {
        static EXIT_COUNTER: RefCell<Option<ExitCounter>> = const { RefCell::new(None) };
    }

    /// Makes `exited` count up when the current thread exits (once per thread).
    fn mark_thread(exited: &Arc<AtomicUsize>) {
        EXIT_COUNTER.with(|slot| {
            slot.borrow_mut()
                .get_or_insert_with(|| ExitCounter(Arc::clone(exited)));
        });
    }

    #[test]
    fn the_pool_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ThreadPool>();
    }

    #[test]
    fn runs_work_on_another_thread() {
        let pool = ThreadPool::default();
        assert_eq!((pool.min(), pool.max(), pool.threads()), (0, 10, 0));
        let (tx, rx) = mpsc::channel();
        pool.call_in_thread(move || {
            let me = thread::current();
            tx.send((me.id(), me.name().map(str::to_owned))).unwrap();
        })
        .unwrap();
        let (id, name) = rx.recv_timeout(PATIENCE).unwrap();
        assert_ne!(id, thread::current().id());
        assert_eq!(name.as_deref(), Some("torsion-pool-0"));
        assert_eq!(pool.threads(), 1);
    }

    #[test]
    fn threads_are_named_after_the_pool() {
        let pool = ThreadPool::with_name(1, 1, "db");
        let (tx, rx) = mpsc::channel();
        pool.call_in_thread(move || {
            tx.send(thread::current().name().map(str::to_owned))
                .unwrap()
        })
        .unwrap();
        assert_eq!(rx.recv_timeout(PATIENCE).unwrap().as_deref(), Some("db-0"));
    }

    #[test]
    fn min_threads_are_started_at_once() {
        let pool = ThreadPool::new(3, 5);
        assert_eq!(pool.threads(), 3);
        eventually("the min threads are idle", || pool.shared.lock().idle == 3);
        // Idle threads take the work: no new thread is started for it.
        let (tx, rx) = mpsc::channel();
        for _ in 0..3 {
            let tx = tx.clone();
            pool.call_in_thread(move || tx.send(()).unwrap()).unwrap();
        }
        for _ in 0..3 {
            rx.recv_timeout(PATIENCE).unwrap();
        }
        assert_eq!(pool.threads(), 3);
    }

    #[test]
    fn results_arrive_in_fifo_order_with_one_thread() {
        let pool = ThreadPool::new(0, 1);
        let (tx, rx) = mpsc::channel();
        for i in 0..200 {
            let tx = tx.clone();
            pool.call_in_thread_with_callback(move || i, move |r| tx.send(r.unwrap()).unwrap())
                .unwrap();
        }
        drop(tx);
        let results: Vec<i32> = rx.iter().collect();
        assert_eq!(results, (0..200).collect::<Vec<_>>());
        assert_eq!(pool.threads(), 1);
    }

    #[test]
    fn at_most_max_threads_run_at_once() {
        let pool = ThreadPool::new(0, 3);
        let gate = Gate::default();
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..20 {
            let (gate, running, peak, done) =
                (gate.clone(), running.clone(), peak.clone(), done.clone());
            pool.call_in_thread(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                gate.wait();
                running.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        }
        eventually("3 jobs run", || running.load(Ordering::SeqCst) == 3);
        assert_eq!(pool.threads(), 3);
        assert_eq!(pool.busy(), 3);
        assert_eq!(pool.queued(), 17);
        // Give a wrongly started fourth thread the time to show up.
        thread::sleep(Duration::from_millis(50));
        assert_eq!(running.load(Ordering::SeqCst), 3);
        gate.open();
        pool.stop();
        assert_eq!(done.load(Ordering::SeqCst), 20);
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_panicking_job_becomes_a_failure_and_the_pool_survives() {
        let pool = ThreadPool::new(0, 1);
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        pool.call_in_thread_with_callback(
            || -> i32 { panic!("boom") },
            move |result| tx2.send(result.map(|_| ())).unwrap(),
        )
        .unwrap();
        let failure = rx.recv_timeout(PATIENCE).unwrap().unwrap_err();
        assert!(failure.check::<Panicked>());
        assert_eq!(failure.downcast_ref::<Panicked>().unwrap().message, "boom");

        // A panic in a plain job, and in a callback, is logged and the worker goes on.
        pool.call_in_thread(|| panic!("plain boom")).unwrap();
        pool.call_in_thread_with_callback(|| 1, |_| panic!("callback boom"))
            .unwrap();
        pool.call_in_thread(move || tx.send(Ok(())).unwrap())
            .unwrap();
        rx.recv_timeout(PATIENCE).unwrap().unwrap();
        assert_eq!(pool.threads(), 1);
        eventually("the last job returns", || pool.busy() == 0);
    }

    #[test]
    fn stop_runs_queued_work_then_joins_all_threads() {
        let pool = ThreadPool::new(0, 2);
        let gate = Gate::default();
        let done = Arc::new(AtomicUsize::new(0));
        let exited = Arc::new(AtomicUsize::new(0));
        for _ in 0..50 {
            let (gate, done, exited) = (gate.clone(), done.clone(), exited.clone());
            pool.call_in_thread(move || {
                mark_thread(&exited);
                gate.wait();
                done.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        }
        assert_eq!(pool.threads(), 2);
        assert!(pool.queued() >= 48);
        let opener = {
            let gate = gate.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                gate.open();
            })
        };
        pool.stop();
        assert_eq!(done.load(Ordering::SeqCst), 50);
        assert_eq!(exited.load(Ordering::SeqCst), 2, "both threads joined");
        assert_eq!((pool.threads(), pool.busy(), pool.queued()), (0, 0, 0));
        pool.stop(); // idempotent
        opener.join().unwrap();
    }

    #[test]
    fn call_after_stop_is_pool_stopped() {
        let pool = ThreadPool::new(1, 2);
        pool.stop();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        assert_eq!(
            pool.call_in_thread(move || {
                r.fetch_add(1, Ordering::SeqCst);
            }),
            Err(PoolStopped)
        );
        let r = ran.clone();
        let err = pool
            .call_in_thread_with_callback(
                || (),
                move |_| {
                    r.fetch_add(1, Ordering::SeqCst);
                },
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "the thread pool has been stopped");
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        assert_eq!(pool.threads(), 0);
    }

    #[test]
    fn set_max_shrinks_idle_threads() {
        let pool = ThreadPool::new(4, 4);
        assert_eq!(pool.threads(), 4);
        pool.set_max(1);
        assert_eq!((pool.max(), pool.min()), (1, 1));
        eventually("idle threads retire", || pool.threads() == 1);
        let (tx, rx) = mpsc::channel();
        pool.call_in_thread(move || tx.send(()).unwrap()).unwrap();
        rx.recv_timeout(PATIENCE).unwrap();
        assert_eq!(pool.threads(), 1);
    }

    #[test]
    fn set_max_lets_busy_threads_finish_their_job_first() {
        let pool = ThreadPool::new(0, 3);
        let gate = Gate::default();
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..6 {
            let (gate, done) = (gate.clone(), done.clone());
            pool.call_in_thread(move || {
                gate.wait();
                done.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        }
        eventually("3 jobs run", || pool.busy() == 3);
        pool.set_max(1);
        assert_eq!(pool.threads(), 3, "busy threads are not interrupted");
        gate.open();
        eventually("all jobs ran", || done.load(Ordering::SeqCst) == 6);
        eventually("extra threads retire", || pool.threads() == 1);
    }

    #[test]
    fn set_max_grows_the_pool_for_queued_work() {
        let pool = ThreadPool::new(0, 1);
        let gate = Gate::default();
        for _ in 0..4 {
            let gate = gate.clone();
            pool.call_in_thread(move || gate.wait()).unwrap();
        }
        eventually("1 job runs", || pool.busy() == 1);
        assert_eq!(pool.queued(), 3);
        pool.set_max(3);
        assert_eq!(pool.threads(), 3);
        eventually("3 jobs run", || pool.busy() == 3);
        gate.open();
        pool.stop();
        assert_eq!(pool.queued(), 0);
    }

    #[test]
    fn drop_joins() {
        let exited = Arc::new(AtomicUsize::new(0));
        let gate = Gate::default();
        let pool = ThreadPool::new(0, 3);
        for _ in 0..3 {
            let (gate, exited) = (gate.clone(), exited.clone());
            pool.call_in_thread(move || {
                mark_thread(&exited);
                gate.wait();
            })
            .unwrap();
        }
        eventually("3 jobs run", || pool.busy() == 3);
        gate.open();
        drop(pool);
        assert_eq!(exited.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn dropping_the_pool_on_its_own_thread_does_not_deadlock() {
        let pool = Arc::new(ThreadPool::new(0, 2));
        let gate = Gate::default();
        let (tx, rx) = mpsc::channel();
        let (inner_pool, inner_gate) = (Arc::clone(&pool), gate.clone());
        pool.call_in_thread(move || {
            inner_gate.wait();
            drop(inner_pool); // the last handle: stops the pool from one of its threads
            tx.send(()).unwrap();
        })
        .unwrap();
        drop(pool);
        gate.open();
        rx.recv_timeout(PATIENCE).unwrap();
    }

    #[test]
    fn work_runs_on_the_caller_when_no_thread_can_be_started() {
        let pool = ThreadPool::new(0, 2);
        pool.fail_spawns(true);
        let (tx, rx) = mpsc::channel();
        pool.call_in_thread(move || tx.send(thread::current().id()).unwrap())
            .unwrap();
        assert_eq!(rx.try_recv().unwrap(), thread::current().id());
        assert_eq!(pool.threads(), 0);

        // With one thread alive, a failed spawn leaves the work queued for it.
        pool.fail_spawns(false);
        let gate = Gate::default();
        let g = gate.clone();
        pool.call_in_thread(move || g.wait()).unwrap();
        eventually("the gated job runs", || pool.busy() == 1);
        pool.fail_spawns(true);
        let (tx, rx) = mpsc::channel();
        pool.call_in_thread(move || tx.send(thread::current().id()).unwrap())
            .unwrap();
        assert_eq!((pool.threads(), pool.queued()), (1, 1));
        gate.open();
        assert_ne!(rx.recv_timeout(PATIENCE).unwrap(), thread::current().id());
    }

    #[test]
    #[should_panic(expected = "max >= 1")]
    fn a_pool_of_zero_threads_is_refused() {
        ThreadPool::new(0, 0);
    }

    #[test]
    fn stress_every_job_runs_exactly_once() {
        const SUBMITTERS: usize = 8;
        const JOBS: usize = 1_000;
        let pool = Arc::new(ThreadPool::new(0, 4));
        let runs: Arc<Vec<AtomicUsize>> = Arc::new(
            (0..SUBMITTERS * JOBS)
                .map(|_| AtomicUsize::new(0))
                .collect(),
        );
        let workers = Arc::new(Mutex::new(HashSet::new()));
        let submitters: Vec<_> = (0..SUBMITTERS)
            .map(|s| {
                let (pool, runs, workers) = (pool.clone(), runs.clone(), workers.clone());
                thread::spawn(move || {
                    for j in 0..JOBS {
                        let (runs, workers) = (runs.clone(), workers.clone());
                        pool.call_in_thread(move || {
                            runs[s * JOBS + j].fetch_add(1, Ordering::SeqCst);
                            workers.lock().unwrap().insert(thread::current().id());
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for submitter in submitters {
            submitter.join().unwrap();
        }
        pool.stop();
        for (i, count) in runs.iter().enumerate() {
            assert_eq!(count.load(Ordering::SeqCst), 1, "job {i}");
        }
        assert!(workers.lock().unwrap().len() <= 4);
        assert_eq!(pool.threads(), 0);
    }
}
