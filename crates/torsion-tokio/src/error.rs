//! The errors of the bridge (beside torsion's own in `torsion::error`), each with a message
//! a user can act on, so `Failure::check::<E>()` tells them apart.
//!
//! Twisted has no counterparts: `Deferred.fromFuture` and `asFuture` live in one asyncio
//! loop and cannot outlive it. Invariant: every pending bridged operation that the reactor
//! or the runtime abandons ends with one of these (or torsion's
//! [`ReactorShutDown`](torsion::error::ReactorShutDown)), never by hanging.

torsion::error_type!(
    /// The reactor shut down (or the bridge's tokio runtime could not run the task) before
    /// a [`defer_to_tokio`](crate::defer_to_tokio) task finished: its tokio task was
    /// aborted and its Deferred failed with this.
    pub TokioShutDown,
    "the tokio task was abandoned: its reactor shut down before the task finished"
);

torsion::error_type!(
    /// [`defer_to_tokio`](crate::defer_to_tokio) was called with no reactor running on this
    /// thread; call it from code the reactor runs, or use
    /// [`defer_to_tokio_on`](crate::defer_to_tokio_on) with the reactor.
    pub NoReactor,
    "no reactor is running on this thread: call defer_to_tokio from code the reactor runs, or use defer_to_tokio_on(&reactor, ..)"
);

/// The bridge's tokio runtime could not be started (Twisted has no counterpart): the
/// builder given to [`set_runtime_builder`](crate::set_runtime_builder), or tokio's own,
/// failed with this I/O error.
#[derive(Debug)]
pub struct RuntimeUnavailable(pub std::io::Error);

impl std::fmt::Display for RuntimeUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the tokio runtime could not be started: {}", self.0)
    }
}

impl std::error::Error for RuntimeUnavailable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}
