//! `#[torsion::test]`: async tests on a fresh reactor.

use torsion::time::ReactorTime;
use torsion::{Deferred, Failure, Reactor};

#[torsion::test]
async fn body_runs_on_a_running_reactor(reactor: Reactor) -> Result<(), Failure> {
    assert!(reactor.is_running());
    let (resolver, d) = Deferred::new();
    reactor.call_later(0.01, move || resolver.callback(5u32));
    assert_eq!(d.await?, 5);
    Ok(())
}

#[torsion::test]
async fn body_without_reactor_or_result() {
    let v = torsion::defer::succeed(1).await;
    assert_eq!(v.unwrap(), 1);
}

#[torsion::test(all_backends, timeout = 10)]
async fn instantiated_per_backend(reactor: Reactor) -> Result<(), Failure> {
    let r = reactor.clone();
    let v = reactor.defer_to_thread(|| 2 + 2).await?;
    assert_eq!(v, 4);
    assert!(r.is_running());
    Ok(())
}

#[test]
#[should_panic(expected = "the test failed")]
fn a_failing_body_fails_the_test() {
    torsion::testing::run_test(std::time::Duration::from_secs(5), |_r| async {
        Err::<(), _>(Failure::msg("body failed"))
    });
}

#[test]
#[should_panic(expected = "timed out")]
fn a_hanging_body_times_out() {
    torsion::testing::run_test(std::time::Duration::from_millis(50), |_r| async {
        let (_keep, never) = Deferred::<()>::new();
        never.await
    });
}

#[test]
#[should_panic(expected = "dirty reactor: a delayed call")]
fn a_pending_delayed_call_makes_the_reactor_dirty() {
    torsion::testing::run_test(std::time::Duration::from_secs(5), |r| async move {
        r.call_later(100.0, || {});
    });
}

#[test]
#[should_panic(expected = "unhandled error in Deferred")]
fn an_unhandled_failure_fails_the_test() {
    torsion::testing::run_test(std::time::Duration::from_secs(5), |_r| async move {
        drop(Deferred::<()>::fail(Failure::msg("nobody handles me")));
    });
}
