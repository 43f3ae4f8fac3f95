//! [`defer_later`] and [`sleep`] (Twisted's `task.deferLater`): a Deferred that fires
//! after a delay, with the result of a function called then.
//!
//! Invariant: cancelling the Deferred cancels the delayed call, so the function never runs.

use std::cell::Cell;
use std::rc::Rc;

use crate::Deferred;
use crate::defer::IntoOutcome;
use crate::time::{DelayedCall, IntoDelay, ReactorTime};

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
