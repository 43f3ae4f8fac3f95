//! Test support in the spirit of Twisted's trial (`twisted.trial` and
//! `twisted.internet.testing`): deterministic time, and the checks `#[torsion::test]` runs
//! after a test.
//!
//! - [`StringTransport`] and [`StringTransportWithDisconnection`]
//!   (`twisted.internet.testing.StringTransport`): a transport that records what a protocol
//!   writes.
//! - [`AccumulatingProtocol`] (`twisted.internet.testing.AccumulatingProtocol`): a protocol
//!   that records what it receives.
//! - [`Pump`] and [`loopback`] (`twisted.test.iosim`, `twisted.test.loopback`): two protocols
//!   connected in memory.
//! - [`MemoryReactor`] (`twisted.internet.testing.MemoryReactorClock`): records listens and
//!   connects, with a [`Clock`](crate::time::Clock) for time.
//! - [`run_test`] and [`collect_unhandled_failures`]: what `#[torsion::test]` runs.

mod accumulating;
mod memory_reactor;
mod pump;
mod string_transport;

pub use accumulating::{AccumulatingProtocol, AccumulatorState};
pub use memory_reactor::{
    ConnectorRecord, DEFAULT_MAX_PACKET_SIZE, DEFAULT_UNIX_MODE, ListeningPortRecord,
    MemoryReactor, TcpClientRecord, TcpServerRecord, UdpServerRecord, UnixClientRecord,
    UnixServerRecord,
};
pub use pump::{FakeTransport, MAX_FLUSH_ROUNDS, Pump, loopback};
pub use string_transport::{
    ProducerState, StringTransport, StringTransportWithDisconnection, default_host_address,
    default_peer_address,
};

/// Runs `f` and returns what it returned together with every [`Failure`]
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

use std::future::Future;
use std::time::Duration;

use crate::error::TimeoutError;
use crate::time::ReactorTime;
use crate::{Failure, Reactor};

/// What a test body may return: `()` or `Result<(), Failure>`.
pub trait TestOutcome: 'static {
    /// The outcome as a result.
    fn into_result(self) -> Result<(), Failure>;
}

impl TestOutcome for () {
    fn into_result(self) -> Result<(), Failure> {
        Ok(())
    }
}

impl TestOutcome for Result<(), Failure> {
    fn into_result(self) -> Result<(), Failure> {
        self
    }
}

/// Runs an async test body on a fresh reactor, as `#[torsion::test]` does (Twisted's trial
/// running a test that returns a Deferred).
///
/// The reactor is built on the backend `TORSION_REACTOR` names (or the default); the body
/// runs once the reactor runs; the reactor stops when the body finishes. The test fails
/// (panics) when the body fails, when it takes longer than `timeout`, when it leaves the
/// reactor dirty (pending delayed calls, registered descriptors, unfinished spawned tasks,
/// thread-pool calls whose Deferred has not fired: each named with where it was created),
/// or when a Failure was dropped unhandled meanwhile.
///
/// # Panics
///
/// In each of the cases above, with a message naming what went wrong.
///
/// # Examples
///
/// ```
/// use torsion::testing::run_test;
/// use torsion::time::ReactorTime;
/// use torsion::Deferred;
///
/// run_test(std::time::Duration::from_secs(5), |reactor| async move {
///     let (resolver, d) = Deferred::new();
///     reactor.call_later(0.01, move || resolver.callback(3));
///     assert_eq!(d.await?, 3);
///     Ok(())
/// });
/// ```
pub fn run_test<F, Fut, O>(timeout: Duration, body: F)
where
    F: FnOnce(Reactor) -> Fut + 'static,
    Fut: Future<Output = O> + 'static,
    O: TestOutcome,
{
    let reactor = Reactor::new().expect("cannot build a reactor for the test");
    run_test_on(reactor, timeout, body);
}

/// [`run_test`] on a reactor of your choosing (for example one per backend).
pub fn run_test_on<F, Fut, O>(reactor: Reactor, timeout: Duration, body: F)
where
    F: FnOnce(Reactor) -> Fut + 'static,
    Fut: Future<Output = O> + 'static,
    O: TestOutcome,
{
    use std::cell::RefCell;
    use std::rc::Rc;

    let outcome: Rc<RefCell<Option<Result<(), Failure>>>> = Rc::new(RefCell::new(None));
    let ((), unhandled) = collect_unhandled_failures(|| {
        let r = reactor.clone();
        let out = outcome.clone();
        reactor.call_when_running(move || {
            let test = crate::spawn({
                let r = r.clone();
                async move { body(r).await.into_result() }
            });
            let handle = test.handle();
            let out_timeout = out.clone();
            let stopper = r.clone();
            let deadline = r.call_later(timeout, move || {
                out_timeout
                    .borrow_mut()
                    .get_or_insert(Err(Failure::new(TimeoutError)));
                handle.cancel();
                let _ = stopper.stop();
            });
            let finisher = r.clone();
            drop(test.add_both(move |result| {
                let _ = deadline.cancel();
                out.borrow_mut().get_or_insert(result);
                let _ = finisher.stop();
                Ok(())
            }));
        });
        if let Err(f) = reactor.run() {
            outcome.borrow_mut().get_or_insert(Err(f));
        }
    });
    let leftovers = reactor.leftovers();
    reactor.release_leftovers();
    crate::defer::executor::drop_all_tasks();
    let mut problems = Vec::new();
    match outcome.borrow_mut().take() {
        Some(Ok(())) => {}
        Some(Err(f)) if f.check::<TimeoutError>() => {
            problems.push(format!("the test timed out after {timeout:?}"))
        }
        Some(Err(f)) => problems.push(format!("the test failed: {f:#}")),
        None => problems.push("the reactor stopped before the test finished".into()),
    }
    for leftover in leftovers {
        problems.push(format!("dirty reactor: {leftover}"));
    }
    for failure in unhandled {
        problems.push(format!("unhandled error in Deferred: {failure:#}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
