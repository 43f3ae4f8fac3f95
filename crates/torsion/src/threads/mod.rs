//! Threads: the reactor's thread pool, for blocking work that must not run on the reactor
//! thread, and the ways back to the reactor thread (Twisted's `twisted.internet.threads`,
//! `IReactorThreads` and `twisted.python.threadpool`).
//!
//! Values cross threads only as `Send` data: a pooled function's result travels back to
//! the reactor thread through [`ReactorHandle::call_from_thread`], where its Deferred fires.
//! Deferreds themselves never leave the reactor thread.

mod pool;

use std::any::Any;
use std::sync::mpsc;

pub use pool::ThreadPool;

use crate::defer::{Deferred, Failure, IntoOutcome, maybe_deferred};
use crate::error::{InvalidArgument, ReactorShutDown};
use crate::reactor::{Reactor, ReactorHandle};

impl Reactor {
    /// Runs `f` on the reactor's thread pool (Twisted's `callInThread`). The pool (at most
    /// 10 threads unless [`suggest_thread_pool_size`](Reactor::suggest_thread_pool_size)
    /// says otherwise) starts on first use and is stopped and joined when the reactor
    /// shuts down. A panic in `f` is logged; the pool survives.
    pub fn call_in_thread(&self, f: impl FnOnce() + Send + 'static) {
        if self.thread_pool().call_in_thread(f).is_err() {
            crate::log::warning!(target: "torsion::threads", "call_in_thread after the pool stopped");
        }
    }

    /// Runs `f` on the thread pool and returns a Deferred of its result, fired on the
    /// reactor thread (Twisted's `threads.deferToThread`). A panic in `f` becomes a
    /// [`Panicked`](crate::error::Panicked) failure. Cancelling the Deferred cannot stop
    /// the thread: its result is then dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use torsion::Reactor;
    ///
    /// let reactor = Reactor::new().unwrap();
    /// let r = reactor.clone();
    /// reactor.call_when_running(move || {
    ///     let r2 = r.clone();
    ///     drop(r.defer_to_thread(|| (1..=10u64).product::<u64>()).map(move |n| {
    ///         assert_eq!(n, 3_628_800);
    ///         r2.stop().unwrap();
    ///     }));
    /// });
    /// reactor.run().unwrap();
    /// ```
    #[track_caller]
    pub fn defer_to_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Deferred<T> {
        let (resolver, d) = Deferred::new();
        let id = {
            let mut results = self.thread_results().borrow_mut();
            results.insert(Box::new(move |any: Box<dyn Any + Send>| {
                match any.downcast::<Result<T, Failure>>() {
                    Ok(result) => resolver.resolve(*result),
                    Err(_) => resolver.errback(Failure::msg(
                        "internal error: a thread result of an unexpected type",
                    )),
                }
            }) as crate::reactor::ThreadResult)
        };
        let handle = self.handle();
        let queued = self
            .thread_pool()
            .call_in_thread_with_callback(f, move |result| {
                handle.call_from_thread(move |reactor| reactor.complete_thread_call(id, result));
            });
        if queued.is_err() {
            self.complete_thread_call::<T>(id, Err(Failure::new(ReactorShutDown)));
        }
        d
    }

    fn complete_thread_call<T: Send + 'static>(&self, id: usize, result: Result<T, Failure>) {
        let complete = self.thread_results().borrow_mut().try_remove(id);
        if let Some(complete) = complete {
            complete(Box::new(result));
        }
    }

    /// Sets the maximum number of threads in the reactor's pool (Twisted's
    /// `suggestThreadPoolSize`).
    ///
    /// # Panics
    ///
    /// Panics if `max` is 0.
    pub fn suggest_thread_pool_size(&self, max: usize) {
        assert!(
            max > 0,
            "suggest_thread_pool_size: the pool needs at least one thread"
        );
        self.set_pool_max(max);
    }
}

/// Runs `f` on the reactor's thread and blocks the calling thread until the Deferred (or
/// value) it returns fires, then returns that result (Twisted's
/// `threads.blockingCallFromThread`; the Tribler tutorial's
/// `blocking_call_on_reactor_thread`).
///
/// # Errors
///
/// `f`'s failure; [`ReactorShutDown`] if the reactor finished before `f` could run or its
/// Deferred could fire; [`InvalidArgument`] if called on the reactor's own thread, where
/// waiting would deadlock.
///
/// # Examples
///
/// ```
/// use torsion::Reactor;
/// use torsion::threads::blocking_call_from_thread;
///
/// let reactor = Reactor::new().unwrap();
/// let handle = reactor.handle();
/// let worker = std::thread::spawn(move || {
///     let answer = blocking_call_from_thread(&handle, |_reactor| Ok(6 * 7));
///     handle.stop();
///     answer.unwrap()
/// });
/// reactor.run().unwrap();
/// assert_eq!(worker.join().unwrap(), 42);
/// ```
pub fn blocking_call_from_thread<T, R>(
    handle: &ReactorHandle,
    f: impl FnOnce(&Reactor) -> R + Send + 'static,
) -> Result<T, Failure>
where
    T: Send + 'static,
    R: IntoOutcome<Output = T>,
{
    if handle.is_reactor_thread() {
        return Err(InvalidArgument(
            "blocking_call_from_thread on the reactor's own thread would deadlock".into(),
        )
        .into());
    }
    let (tx, rx) = mpsc::sync_channel::<Result<T, Failure>>(1);
    handle.call_from_thread(move |reactor| {
        let d = maybe_deferred(|| f(reactor));
        drop(d.add_both(move |result| {
            let _ = tx.send(result);
            Ok(())
        }));
    });
    rx.recv().unwrap_or_else(|_| Err(ReactorShutDown.into()))
}
