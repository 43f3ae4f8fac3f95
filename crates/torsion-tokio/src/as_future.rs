//! torsion from tokio: [`call_from_tokio`] runs a closure on a reactor's thread and gives
//! tokio code a `Send` future of the Deferred it returns (Twisted's `Deferred.asFuture`,
//! reached from another thread as `blockingCallFromThread` does, without blocking).
//!
//! The closure crosses to the reactor through
//! [`ReactorHandle::call_from_thread`](torsion::ReactorHandle::call_from_thread); the result
//! comes back through a `tokio::sync::oneshot` channel, which works on any executor. While
//! the Deferred is pending, the reactor thread's [registry](crate::registry) holds it by
//! id, so dropping the future can cancel it (the cancel travels the same queue as the
//! call, so it never overtakes it) and the reactor's shutdown can answer the caller.
//!
//! Invariant: the caller hears exactly once: the Deferred's result, a cancellation it
//! caused (then nobody listens), or [`ReactorShutDown`](torsion::error::ReactorShutDown).

use std::cell::Cell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use torsion::defer::{IntoOutcome, maybe_deferred};
use torsion::{Failure, Reactor, ReactorHandle};

use crate::registry::{self, FromTokio, Registry};

/// Runs `f` on the reactor's thread and returns a `Send` future of the result of the
/// Deferred (or value) it returns (Twisted's `Deferred.asFuture`, called from tokio).
///
/// `f` is queued at once, in call order with other calls from this thread, not when the
/// future is first polled. Dropping the future before it resolves cancels the Deferred
/// (its canceller runs on the reactor's thread). A panic in `f` resolves the future with a
/// [`Panicked`](torsion::error::Panicked) failure.
///
/// # Errors
///
/// The Deferred's failure, or [`ReactorShutDown`](torsion::error::ReactorShutDown) if the
/// reactor finished before `f` could run or before its Deferred fired.
///
/// # Examples
///
/// A tokio program asks a reactor on its own thread for a value:
///
/// ```
/// use torsion::task::defer_later;
/// use torsion_tokio::{ReactorThread, call_from_tokio};
///
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() {
///     let reactor = ReactorThread::start().unwrap();
///     let answer = call_from_tokio(reactor.handle(), |r: &torsion::Reactor| {
///         defer_later(r, 0.01, || Ok(6 * 7))
///     })
///     .await
///     .unwrap();
///     assert_eq!(answer, 42);
///     reactor.stop().await.unwrap();
/// }
/// ```
#[doc(alias = "asFuture")]
#[doc(alias = "Deferred.asFuture")]
pub fn call_from_tokio<T, R>(
    handle: &ReactorHandle,
    f: impl FnOnce(&Reactor) -> R + Send + 'static,
) -> CallFromTokio<T>
where
    T: Send + 'static,
    R: IntoOutcome<Output = T>,
{
    let id = registry::next_id();
    let (tx, rx) = oneshot::channel();
    handle.call_from_thread(move |reactor| start(reactor, id, f, tx));
    CallFromTokio {
        handle: handle.clone(),
        id,
        rx,
        done: false,
    }
}

/// The future [`call_from_tokio`] returns (the future of Twisted's `Deferred.asFuture`):
/// `Send`, resolved from the reactor's thread.
/// Dropping it before it resolves cancels the Deferred.
#[must_use = "dropping it cancels the Deferred"]
pub struct CallFromTokio<T> {
    handle: ReactorHandle,
    id: u64,
    rx: oneshot::Receiver<Result<T, Failure>>,
    done: bool,
}

impl<T> std::fmt::Debug for CallFromTokio<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallFromTokio")
            .field("id", &self.id)
            .field("done", &self.done)
            .finish()
    }
}

impl<T> Future for CallFromTokio<T> {
    type Output = Result<T, Failure>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(Err(Failure::msg("CallFromTokio polled after it resolved")));
        }
        match Pin::new(&mut this.rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                this.done = true;
                Poll::Ready(result.unwrap_or_else(|_| Err(registry::reactor_gone())))
            }
        }
    }
}

impl<T> Drop for CallFromTokio<T> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Closes the channel first, so a result racing this drop is dropped with it.
        self.rx.close();
        let id = self.id;
        self.handle.call_from_thread(move |_reactor| {
            let entry = Registry::current().and_then(|r| r.take_from_tokio(id));
            if let Some(entry) = entry {
                entry.deferred.cancel();
            }
        });
    }
}

/// On the reactor's thread: runs `f` and wires its Deferred to the caller's channel.
fn start<T, R>(
    reactor: &Reactor,
    id: u64,
    f: impl FnOnce(&Reactor) -> R,
    tx: oneshot::Sender<Result<T, Failure>>,
) where
    T: Send + 'static,
    R: IntoOutcome<Output = T>,
{
    if tx.is_closed() {
        // The caller is gone already: nothing to run for.
        return;
    }
    let deferred = match catch_unwind(AssertUnwindSafe(|| maybe_deferred(|| f(reactor)))) {
        Ok(deferred) => deferred,
        Err(payload) => {
            let _ = tx.send(Err(Failure::from_panic(&*payload)));
            return;
        }
    };
    // Shared by the chain's answer and the shutdown's, so only one is given.
    let tx = Rc::new(Cell::new(Some(tx)));
    let answer = tx.clone();
    let done = deferred.add_both(move |result| {
        if let Some(tx) = answer.take() {
            let _ = tx.send(result);
        }
        let entry = Registry::current().and_then(|r| r.take_from_tokio(id));
        drop(entry);
        Ok(())
    });
    // Answered already only if the result was final: a Deferred that has fired may still
    // wait on one its callback returned (`is_fired` is true then), and is held like any
    // pending one, so a drop cancels it and the shutdown answers its caller.
    let Some(waiting) = tx.take() else { return };
    tx.set(Some(waiting));
    let registry = Registry::for_reactor(reactor);
    if registry.is_closed() {
        if let Some(tx) = tx.take() {
            let _ = tx.send(Err(registry::reactor_gone()));
        }
        done.cancel();
        return;
    }
    let tx_shutdown = tx;
    registry.insert_from_tokio(
        id,
        FromTokio {
            deferred: done,
            shut_down: Box::new(move || {
                if let Some(tx) = tx_shutdown.take() {
                    let _ = tx.send(Err(registry::reactor_gone()));
                }
            }),
        },
    );
}
