//! Deferreds: results that arrive later (Twisted's `twisted.internet.defer`).
//!
//! [`Deferred`] and [`Resolver`] are the two ends of one result; [`Failure`] is the error
//! side. Callbacks run in a single loop with no recursion, whatever the chain's length or
//! nesting. [`DeferredList`], [`gather_results`] and [`race`] combine several Deferreds;
//! [`DeferredLock`], [`DeferredSemaphore`] and [`DeferredQueue`] coordinate chains.
//! [`spawn`] runs `async` code as a Deferred (`executor.rs`: Twisted's `inlineCallbacks`).

pub(crate) mod chain;
pub(crate) mod deferred;
mod erased;
pub(crate) mod executor;
mod failure;
mod list;
mod steps;
mod sync;

pub use deferred::{
    Deferred, DeferredHandle, IntoOutcome, Resolved, Resolver, fail, maybe_deferred, succeed,
};
pub use executor::spawn;
pub use failure::{Failure, FailureError};
pub use list::{DeferredList, gather_results, race};
pub use sync::{DeferredLock, DeferredQueue, DeferredSemaphore};
