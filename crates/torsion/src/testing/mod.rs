//! Test support in the spirit of Twisted's trial (`twisted.trial` and
//! `twisted.internet.testing`): deterministic time, and the checks `#[torsion::test]` runs
//! after a test.

/// Runs `f` and returns what it returned together with every [`Failure`](crate::Failure)
/// that was dropped unhandled on this thread meanwhile ("Unhandled error in Deferred").
/// They are still logged.
///
/// # Examples
///
/// ```
/// use torsion::defer::fail;
/// use torsion::testing::collect_unhandled_failures;
///
/// let ((), unhandled) = collect_unhandled_failures(|| {
///     let _ = fail::<()>(torsion::error::Cancelled);
/// });
/// assert_eq!(unhandled.len(), 1);
/// ```
pub fn collect_unhandled_failures<R>(f: impl FnOnce() -> R) -> (R, Vec<crate::Failure>) {
    crate::defer::chain::start_capture();
    let result = f();
    (result, crate::defer::chain::stop_capture())
}
