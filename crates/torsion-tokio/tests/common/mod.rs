//! Shared by the integration tests: a reactor run bounded in time, and test certificates.
#![allow(dead_code)]

/// The engine's test PKI (rcgen), shared rather than copied.
#[path = "../../../torsion/tests/common/pki.rs"]
pub mod pki;

use std::future::Future;
use std::time::{Duration, Instant};

use torsion::time::ReactorTime;
use torsion::{Failure, Reactor};

/// Runs `main` on a fresh reactor to completion, failing if it takes longer than `secs`
/// (the reactor is stopped with a failure, so a broken test fails instead of hanging).
pub fn run<F, Fut>(secs: f64, main: F) -> Result<(), Failure>
where
    F: FnOnce(Reactor) -> Fut + 'static,
    Fut: Future<Output = Result<(), Failure>> + 'static,
{
    let reactor = Reactor::new()?;
    let r = reactor.clone();
    let watchdog = reactor.call_later(secs, move || {
        r.stop_with_failure(Failure::msg(format!(
            "the test did not finish within {secs} s"
        )));
    });
    reactor.add_system_event_trigger(
        torsion::reactor::Phase::Before,
        torsion::reactor::SystemEvent::Shutdown,
        move || {
            let _ = watchdog.cancel();
        },
    );
    torsion::task::react_result(reactor, main)
}

/// Waits on the reactor for `d` (a torsion-side sleep).
pub fn sleep(reactor: &Reactor, secs: f64) -> torsion::Deferred<()> {
    torsion::task::defer_later(reactor, secs, || Ok(()))
}

/// Polls `cond` until it holds or `limit` passes; whether it held.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}
