//! The bridge both ways: round trips under load, ordering per caller, cancellation,
//! panics, failures, and shutdown with work in flight.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use torsion::error::{Cancelled, Panicked, ReactorShutDown};
use torsion::reactor::{Phase, SystemEvent};
use torsion::{Deferred, Failure, Reactor};
use torsion_tokio::{
    NoReactor, ReactorThread, TokioShutDown, call_from_tokio, defer_to_tokio, in_flight,
    try_defer_to_tokio,
};

torsion::error_type!(
    /// A failure made on purpose, to recognise on the other side.
    Gibberish, "the poem is gibberish"
);

/// Sets a flag when dropped: the tokio task's future was dropped (aborted or finished).
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

// ===== reactor -> tokio -> reactor =====

#[test]
fn reactor_to_tokio_10000_round_trips_in_order() {
    common::run(20.0, |_reactor| async {
        for i in 0..10_000u64 {
            let doubled = defer_to_tokio(async move { i * 2 }).await?;
            assert_eq!(doubled, i * 2, "round trip {i}");
        }
        assert_eq!(in_flight(), 0);
        Ok(())
    })
    .unwrap();
}

#[test]
fn reactor_to_tokio_10000_concurrent_calls_all_arrive() {
    common::run(20.0, |_reactor| async {
        let calls: Vec<Deferred<u64>> = (0..10_000u64)
            .map(|i| {
                defer_to_tokio(async move {
                    tokio::task::yield_now().await;
                    i + 1
                })
            })
            .collect();
        assert_eq!(in_flight(), 10_000);
        let results = torsion::defer::gather_results(calls).await?;
        let expected: Vec<u64> = (1..=10_000).collect();
        assert_eq!(results, expected);
        assert_eq!(in_flight(), 0);
        Ok(())
    })
    .unwrap();
}

#[test]
fn defer_to_tokio_runs_on_tokio_with_its_timers() {
    common::run(10.0, |_reactor| async {
        let on_tokio = defer_to_tokio(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            tokio::runtime::Handle::try_current().is_ok()
        })
        .await?;
        assert!(on_tokio);
        Ok(())
    })
    .unwrap();
}

// ===== tokio -> reactor -> tokio =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_to_reactor_10000_round_trips_in_order_per_caller() {
    let reactor = ReactorThread::start().unwrap();
    let handle = reactor.handle().clone();
    let started = Instant::now();
    // Sequential calls from one caller.
    for i in 0..2_000u64 {
        let got = call_from_tokio(&handle, move |_r: &Reactor| Ok(i * 3))
            .await
            .unwrap();
        assert_eq!(got, i * 3);
    }
    // Four callers, 2,000 calls each, all queued before any is awaited: each caller's
    // closures must run on the reactor in the order that caller made them.
    let seen: Arc<Mutex<Vec<(usize, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut callers = Vec::new();
    for caller in 0..4usize {
        let handle = handle.clone();
        let seen = seen.clone();
        callers.push(tokio::spawn(async move {
            let calls: Vec<_> = (0..2_000u64)
                .map(|seq| {
                    let seen = seen.clone();
                    call_from_tokio(&handle, move |r: &Reactor| {
                        seen.lock().unwrap().push((caller, seq));
                        // Half of them answer through a Deferred that fires later.
                        if seq % 2 == 0 {
                            torsion::task::defer_later(r, 0.0, move || Ok(seq))
                        } else {
                            torsion::defer::succeed(seq)
                        }
                    })
                })
                .collect();
            for (seq, call) in calls.into_iter().enumerate() {
                assert_eq!(call.await.unwrap(), seq as u64);
            }
        }));
    }
    for caller in callers {
        caller.await.unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(seen.len(), 8_000);
    for caller in 0..4 {
        let order: Vec<u64> = seen
            .iter()
            .filter(|(c, _)| *c == caller)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(order, (0..2_000).collect::<Vec<_>>(), "caller {caller}");
    }
    let left = call_from_tokio(&handle, |_r: &Reactor| Ok(in_flight()))
        .await
        .unwrap();
    assert_eq!(left, 0);
    assert!(started.elapsed() < Duration::from_secs(20));
    reactor.stop().await.unwrap();
}

// ===== cancellation both ways =====

#[test]
fn cancelling_the_deferred_aborts_the_tokio_task() {
    let finished = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let (f, d, s) = (finished.clone(), dropped.clone(), started.clone());
    common::run(10.0, move |reactor| async move {
        let call = defer_to_tokio(async move {
            let _guard = DropFlag(d);
            s.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            f.store(true, Ordering::SeqCst);
        });
        while !started.load(Ordering::SeqCst) {
            common::sleep(&reactor, 0.005).await?;
        }
        call.cancel();
        let outcome = call.await;
        assert!(outcome.unwrap_err().check::<Cancelled>());
        assert_eq!(in_flight(), 0);
        // Past the time the task would have set its flag.
        common::sleep(&reactor, 0.5).await?;
        Ok(())
    })
    .unwrap();
    assert!(
        dropped.load(Ordering::SeqCst),
        "the task's future was not dropped"
    );
    assert!(
        !finished.load(Ordering::SeqCst),
        "the aborted task ran to the end"
    );
}

#[test]
fn cancelling_before_the_task_runs_never_runs_it() {
    let ran = Arc::new(AtomicBool::new(false));
    let r2 = ran.clone();
    common::run(10.0, move |reactor| async move {
        let call = defer_to_tokio(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            r2.store(true, Ordering::SeqCst);
        });
        call.cancel();
        assert!(call.await.unwrap_err().check::<Cancelled>());
        common::sleep(&reactor, 0.2).await?;
        Ok(())
    })
    .unwrap();
    assert!(!ran.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_tokio_future_cancels_the_deferred() {
    let reactor = ReactorThread::start().unwrap();
    let cancelled = Arc::new(AtomicBool::new(false));
    let c = cancelled.clone();
    let call = call_from_tokio(reactor.handle(), move |_r: &Reactor| {
        // Cancel-only: nothing fires it; only its canceller can end it.
        let (_resolver, d) = Deferred::<u32>::with_canceller(move |_| {
            c.store(true, Ordering::SeqCst);
        });
        d
    });
    let timed_out = tokio::time::timeout(Duration::from_millis(50), call).await;
    assert!(timed_out.is_err(), "the Deferred fired: {timed_out:?}");
    assert!(
        common::eventually(Duration::from_secs(5), || cancelled.load(Ordering::SeqCst)),
        "the canceller did not run"
    );
    let left = call_from_tokio(reactor.handle(), |_r: &Reactor| Ok(in_flight()))
        .await
        .unwrap();
    assert_eq!(left, 0);
    reactor.stop().await.unwrap();
}

/// A Deferred that has fired but waits on another (a callback returned a pending
/// Deferred), as `f` gives it; the inner one's canceller sets `cancelled`.
fn fired_but_waiting(cancelled: Arc<AtomicBool>) -> Deferred<u32> {
    let (resolver, inner) = Deferred::<u32>::with_canceller(move |_| {
        cancelled.store(true, Ordering::SeqCst);
    });
    // Nothing fires it: only a cancel or the reactor's shutdown can end the chain.
    std::mem::forget(resolver);
    let chained = Deferred::succeed(()).add_callback(move |()| inner);
    assert!(chained.is_fired());
    chained
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_future_cancels_a_fired_deferred_still_waiting() {
    let reactor = ReactorThread::start().unwrap();
    let cancelled = Arc::new(AtomicBool::new(false));
    let c = cancelled.clone();
    let call = call_from_tokio(reactor.handle(), move |_r: &Reactor| fired_but_waiting(c));
    let timed_out = tokio::time::timeout(Duration::from_millis(50), call).await;
    assert!(timed_out.is_err(), "the Deferred fired: {timed_out:?}");
    assert!(
        common::eventually(Duration::from_secs(5), || cancelled.load(Ordering::SeqCst)),
        "the waiting chain was not cancelled"
    );
    reactor.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_a_caller_waiting_on_a_fired_deferred_still_waiting() {
    let reactor = ReactorThread::start().unwrap();
    let call = call_from_tokio(reactor.handle(), |_r: &Reactor| {
        fired_but_waiting(Arc::new(AtomicBool::new(false)))
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stopped = tokio::time::timeout(Duration::from_secs(5), reactor.stop()).await;
    assert!(stopped.unwrap().is_ok());
    let outcome = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the caller still waits after the reactor stopped");
    assert!(outcome.unwrap_err().check::<ReactorShutDown>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_that_resolved_cancels_nothing_when_dropped() {
    let reactor = ReactorThread::start().unwrap();
    let cancelled = Arc::new(AtomicBool::new(false));
    let c = cancelled.clone();
    let value = call_from_tokio(reactor.handle(), move |r: &Reactor| {
        let (resolver, d) = Deferred::<u32>::with_canceller(move |_| {
            c.store(true, Ordering::SeqCst);
        });
        torsion::time::ReactorTime::call_later(r, 0.01, move || resolver.callback(7));
        d
    })
    .await
    .unwrap();
    assert_eq!(value, 7);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!cancelled.load(Ordering::SeqCst));
    reactor.stop().await.unwrap();
}

// ===== panics and failures both ways =====

#[test]
fn a_panic_in_the_tokio_task_fails_the_deferred() {
    common::run(10.0, |_reactor| async {
        let outcome = defer_to_tokio(async {
            if true {
                panic!("the tokio side broke");
            }
            1u8
        })
        .await;
        let failure = outcome.unwrap_err();
        assert!(failure.check::<Panicked>(), "{failure}");
        assert!(
            failure.to_string().contains("the tokio side broke"),
            "{failure}"
        );
        // The runtime and the bridge go on.
        assert_eq!(defer_to_tokio(async { 5 }).await?, 5);
        Ok(())
    })
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_reactor_closure_fails_the_future() {
    let reactor = ReactorThread::start().unwrap();
    let outcome = call_from_tokio(reactor.handle(), |_r: &Reactor| -> Result<u8, Failure> {
        panic!("the reactor side broke");
    })
    .await;
    let failure = outcome.unwrap_err();
    assert!(failure.check::<Panicked>(), "{failure}");
    assert!(failure.to_string().contains("the reactor side broke"));
    // The reactor goes on.
    let ok = call_from_tokio(reactor.handle(), |_r: &Reactor| Ok(1u8)).await;
    assert_eq!(ok.unwrap(), 1);
    reactor.stop().await.unwrap();
}

#[test]
fn failures_cross_with_their_type() {
    common::run(10.0, |_reactor| async {
        let failed = try_defer_to_tokio(async { Err::<u8, _>(Gibberish) }).await;
        assert!(failed.unwrap_err().check::<Gibberish>());
        Ok(())
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let reactor = ReactorThread::start().unwrap();
        let failed = call_from_tokio(reactor.handle(), |r: &Reactor| {
            torsion::task::defer_later(r, 0.01, || Err::<u8, _>(Failure::new(Gibberish)))
        })
        .await;
        assert!(failed.unwrap_err().check::<Gibberish>());
        reactor.stop().await.unwrap();
    });
}

// ===== shutdown with work in flight =====

#[test]
fn shutdown_aborts_tokio_tasks_and_fails_their_deferreds_typed() {
    const N: usize = 100;
    let dropped = Arc::new(AtomicUsize::new(0));
    let failed = Rc::new(RefCell::new(Vec::new()));
    let reactor = Reactor::new().unwrap();
    let started = Instant::now();
    for _ in 0..N {
        let dropped = dropped.clone();
        let failed = failed.clone();
        let call = torsion_tokio::defer_to_tokio_on(&reactor, async move {
            struct Count(Arc<AtomicUsize>);
            impl Drop for Count {
                fn drop(&mut self) {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
            let _count = Count(dropped);
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        drop(call.add_both(move |result| {
            failed.borrow_mut().push(result.err());
            Ok(())
        }));
    }
    let r = reactor.clone();
    torsion::time::ReactorTime::call_later(&reactor, 0.05, move || {
        let _ = r.stop();
    });
    reactor.run().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown hung");
    let failed = failed.borrow();
    assert_eq!(failed.len(), N, "some Deferreds never fired");
    for failure in failed.iter() {
        let failure = failure.as_ref().expect("a Deferred succeeded");
        assert!(failure.check::<TokioShutDown>(), "{failure}");
    }
    assert!(
        common::eventually(Duration::from_secs(5), || dropped.load(Ordering::SeqCst)
            == N),
        "only {} of {N} tasks were dropped",
        dropped.load(Ordering::SeqCst)
    );
}

#[test]
fn defer_to_tokio_during_shutdown_fails_at_once() {
    let reactor = Reactor::new().unwrap();
    // Uses the bridge, so its registry closes during the shutdown.
    drop(torsion_tokio::defer_to_tokio_on(&reactor, async {}));
    let late: Rc<RefCell<Option<Result<(), Failure>>>> = Rc::new(RefCell::new(None));
    let l = late.clone();
    let r = reactor.clone();
    reactor.add_system_event_trigger(Phase::After, SystemEvent::Shutdown, move || {
        let mut d = torsion_tokio::defer_to_tokio_on(&r, async {});
        *l.borrow_mut() = d.take_result();
    });
    let r = reactor.clone();
    reactor.call_when_running(move || {
        let _ = r.stop();
    });
    reactor.run().unwrap();
    let late = late
        .borrow_mut()
        .take()
        .expect("the late call did not fire at once");
    assert!(late.unwrap_err().check::<TokioShutDown>());
}

#[test]
fn defer_to_tokio_without_a_reactor_fails_with_no_reactor() {
    let mut d = defer_to_tokio(async { 1 });
    assert!(d.take_result().unwrap().unwrap_err().check::<NoReactor>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_waiting_tokio_callers_with_reactor_shut_down() {
    let reactor = ReactorThread::start().unwrap();
    let handle = reactor.handle().clone();
    let waiting: Vec<_> = (0..50)
        .map(|_| {
            call_from_tokio(&handle, |_r: &Reactor| {
                // Fired by nothing: the Resolver is kept alive until the reactor goes.
                let (resolver, d) = Deferred::<u8>::new();
                thread_local! {
                    static KEPT: RefCell<Vec<torsion::Resolver<u8>>> = const { RefCell::new(Vec::new()) };
                }
                KEPT.with(|k| k.borrow_mut().push(resolver));
                d
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stopped = tokio::time::timeout(Duration::from_secs(5), reactor.stop()).await;
    assert!(stopped.unwrap().is_ok());
    for call in waiting {
        let outcome = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("a caller still waits after the reactor stopped");
        assert!(outcome.unwrap_err().check::<ReactorShutDown>());
    }
    // After the reactor finished: the call cannot run.
    let late = call_from_tokio(&handle, |_r: &Reactor| Ok(1u8)).await;
    assert!(late.unwrap_err().check::<ReactorShutDown>());
}

#[test]
fn reactor_thread_stops_from_outside_an_executor() {
    let reactor = ReactorThread::start().unwrap();
    let handle = reactor.handle().clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got = rt.block_on(call_from_tokio(&handle, |_r: &Reactor| Ok("up")));
    assert_eq!(got.unwrap(), "up");
    reactor.stop_blocking().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactor_thread_reports_a_stop_with_failure() {
    let reactor = ReactorThread::start().unwrap();
    call_from_tokio(reactor.handle(), |r: &Reactor| {
        r.stop_with_failure(Failure::new(Gibberish));
        Ok(())
    })
    .await
    .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), reactor.join())
        .await
        .unwrap();
    assert!(outcome.unwrap_err().check::<Gibberish>());
}
