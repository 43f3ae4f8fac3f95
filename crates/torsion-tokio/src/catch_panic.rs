//! A future that turns a panic inside its inner future into a [`Failure`] (what Twisted
//! gets for free: an exception raised in a coroutine becomes the Deferred's failure).
//!
//! Invariant: the inner future is never polled again after it panicked; a poll after that
//! answers with a failure. The future is boxed so it can be polled through `catch_unwind`
//! without pin projection (and so without `unsafe`).

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use torsion::Failure;

/// Polls `F`, catching a panic in its `poll` as a [`Panicked`](torsion::error::Panicked)
/// failure.
pub(crate) struct CatchPanic<F> {
    inner: Option<Pin<Box<F>>>,
}

impl<F: Future> CatchPanic<F> {
    pub(crate) fn new(future: F) -> Self {
        CatchPanic {
            inner: Some(Box::pin(future)),
        }
    }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, Failure>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err(Failure::msg("polled after it panicked")));
        };
        match catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => {
                this.inner = None;
                Poll::Ready(Err(Failure::from_panic(&*payload)))
            }
        }
    }
}
