//! tokio work from the reactor: [`defer_to_tokio`] runs a `Send` future on the tokio
//! runtime and hands back a Deferred fired on the reactor's thread (Twisted's
//! `Deferred.fromFuture`, and `threads.deferToThread` for async work).
//!
//! The Deferred's Resolver stays in the reactor thread's [registry](crate::registry); the
//! tokio task carries only the entry's id, and sends its result back through
//! [`ReactorHandle::call_from_thread`](torsion::ReactorHandle::call_from_thread), where
//! the entry is taken out and fired. Cancelling the Deferred takes the entry out and aborts
//! the task.
//!
//! Invariant: an entry is fired, cancelled or abandoned exactly once; whichever comes
//! second (a result after a cancel, a cancel after the result) finds no entry and does
//! nothing.

use std::future::Future;

use torsion::{Deferred, Failure, Reactor, ReactorHandle};

use crate::catch_panic::CatchPanic;
use crate::error::{NoReactor, TokioShutDown};
use crate::registry::{self, Registry, ToTokio};

/// Runs `future` on the tokio runtime and returns a Deferred of its output, fired on the
/// reactor's thread (Twisted's `Deferred.fromFuture`). The reactor is the one running on
/// this thread ([`Reactor::current`]): call it from code the reactor runs, or use
/// [`defer_to_tokio_on`].
///
/// The runtime is the one given to [`set_runtime`](crate::set_runtime), or a multi-thread
/// runtime the bridge starts on first use. Cancelling the Deferred aborts the tokio task
/// (the future is dropped at its next `.await`) and fails the Deferred with
/// [`Cancelled`](torsion::error::Cancelled). A panic in the future becomes a
/// [`Panicked`](torsion::error::Panicked) failure. When the reactor shuts down with the
/// task still running, the task is aborted and the Deferred fails with
/// [`TokioShutDown`](crate::TokioShutDown).
///
/// Inside `async` code the reactor runs, awaiting a tokio-based crate's future is one call:
/// `defer_to_tokio(fut).await`.
///
/// # Errors
///
/// The Deferred fails with [`NoReactor`] when no reactor runs on this thread,
/// [`TokioShutDown`](crate::TokioShutDown) when the reactor has already shut down, and
/// [`RuntimeUnavailable`](crate::RuntimeUnavailable) when no runtime could be started.
///
/// # Examples
///
/// ```
/// use torsion::task::react_result;
/// use torsion_tokio::defer_to_tokio;
///
/// react_result(torsion::Reactor::new().unwrap(), |_reactor| async {
///     // Runs on a tokio worker, with tokio's timers and I/O.
///     let answer = defer_to_tokio(async {
///         tokio::time::sleep(std::time::Duration::from_millis(5)).await;
///         6 * 7
///     })
///     .await?;
///     assert_eq!(answer, 42);
///     Ok(())
/// })
/// .unwrap();
/// ```
#[track_caller]
#[doc(alias = "fromFuture")]
#[doc(alias = "Deferred.fromFuture")]
pub fn defer_to_tokio<T, F>(future: F) -> Deferred<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    match Reactor::current() {
        Some(reactor) => defer_to_tokio_on(&reactor, future),
        None => Deferred::fail(NoReactor),
    }
}

/// [`defer_to_tokio`] for a future whose output is a `Result`: an `Err` fails the Deferred
/// (Twisted's `Deferred.fromFuture` of a future that raises), so
/// `try_defer_to_tokio(reqwest::get(url)).await?` is the response.
///
/// # Examples
///
/// ```
/// use torsion::task::react_result;
/// use torsion_tokio::try_defer_to_tokio;
///
/// react_result(torsion::Reactor::new().unwrap(), |_reactor| async {
///     let n: u16 = try_defer_to_tokio(async { "8080".parse::<u16>() }).await?;
///     assert_eq!(n, 8080);
///     let bad = try_defer_to_tokio(async { "port".parse::<u16>() }).await;
///     assert!(bad.unwrap_err().check::<std::num::ParseIntError>());
///     Ok(())
/// })
/// .unwrap();
/// ```
#[track_caller]
pub fn try_defer_to_tokio<T, E, F>(future: F) -> Deferred<T>
where
    T: Send + 'static,
    E: Into<Failure> + Send + 'static,
    F: Future<Output = Result<T, E>> + Send + 'static,
{
    let location = std::panic::Location::caller();
    defer_to_tokio(async move { future.await.map_err(Into::into) }).add_callback(
        move |result: Result<T, Failure>| result.map_err(|f| f.passed_through(location)),
    )
}

/// [`defer_to_tokio`] on a given reactor: for code that runs before the reactor does (its
/// Deferred fires once the reactor runs). The reactor must be this thread's.
///
/// # Examples
///
/// ```
/// use torsion::Reactor;
/// use torsion_tokio::defer_to_tokio_on;
///
/// let reactor = Reactor::new().unwrap();
/// let r = reactor.clone();
/// let mut sum = defer_to_tokio_on(&reactor, async { (1..=10u32).sum::<u32>() })
///     .add_both(move |result| {
///         let _ = r.stop();
///         result
///     });
/// reactor.run().unwrap();
/// assert_eq!(sum.take_result().unwrap().unwrap(), 55);
/// ```
#[track_caller]
pub fn defer_to_tokio_on<T, F>(reactor: &Reactor, future: F) -> Deferred<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let registry = Registry::for_reactor(reactor);
    if registry.is_closed() {
        return Deferred::fail(registry::closed_failure());
    }
    let runtime = match registry.runtime() {
        Ok(runtime) => runtime,
        Err(failure) => return Deferred::fail(failure),
    };
    let id = registry::next_id();
    let weak = std::rc::Rc::downgrade(&registry);
    let (resolver, deferred) = Deferred::with_canceller(move |_resolver| {
        // Not fired here: the Deferred then fails with `Cancelled`.
        let entry = weak.upgrade().and_then(|r| r.take_to_tokio(id));
        if let Some(entry) = entry
            && let Some(abort) = &entry.abort
        {
            abort.abort();
        }
    });
    registry.insert_to_tokio(
        id,
        ToTokio {
            resolver: Box::new(resolver),
            abort: None,
        },
    );
    let mut report = Abandoned {
        handle: Some(registry.handle().clone()),
        id,
    };
    let task = runtime.spawn(async move {
        let result: Result<T, Failure> = CatchPanic::new(future).await;
        if let Some(handle) = report.handle.take() {
            handle.call_from_thread(move |_reactor| complete(id, result));
        }
    });
    registry.set_abort(id, task.abort_handle());
    deferred
}

/// Carried by the tokio task until it reports its result: a task the runtime drops
/// unfinished (a runtime shut down under the bridge, or one that was shut down before the
/// spawn) fails its Deferred with [`TokioShutDown`] instead of leaving it unfired. After an
/// abort by a cancel or the reactor's shutdown the entry is gone, and this does nothing.
struct Abandoned {
    handle: Option<ReactorHandle>,
    id: u64,
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let id = self.id;
            handle.call_from_thread(move |_reactor| {
                let entry = Registry::current().and_then(|r| r.take_to_tokio(id));
                if let Some(entry) = entry {
                    entry.resolver.fail(Failure::new(TokioShutDown));
                }
            });
        }
    }
}

/// On the reactor's thread: fires entry `id` with its task's result, if it is still there.
fn complete<T: Send + 'static>(id: u64, result: Result<T, Failure>) {
    let entry = Registry::current().and_then(|r| r.take_to_tokio(id));
    if let Some(entry) = entry {
        entry.resolver.complete(Box::new(result));
    }
}
