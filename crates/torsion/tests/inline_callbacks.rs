//! async as inlineCallbacks (CHECKLIST 27–31; Twisted's test_inlinecb.py).

mod common;

use common::Boom;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use torsion::defer::succeed;
use torsion::error::Cancelled;
use torsion::{Deferred, Failure, spawn};

#[test]
fn awaiting_gives_the_value_failures_can_be_matched_and_return_ends() {
    let (r1, d1) = Deferred::<u32>::new();
    let (r2, d2) = Deferred::<u32>::new();
    let mut out = spawn(async move {
        let a = d1.await?;
        let b = match d2.await {
            Ok(v) => v,
            Err(f) if f.check::<Boom>() => 100,
            Err(f) => return Err(f),
        };
        Ok(a + b)
    });
    assert!(out.take_result().is_none());
    r1.callback(1);
    assert!(out.take_result().is_none());
    r2.errback(Boom);
    assert_eq!(out.take_result().unwrap().unwrap(), 101);
}

#[test]
fn the_body_runs_synchronously_up_to_the_first_unfired_await() {
    let steps = Rc::new(Cell::new(0));
    let s = steps.clone();
    let (r, d) = Deferred::<()>::new();
    let _out = spawn(async move {
        s.set(1);
        succeed(()).await?;
        s.set(2);
        d.await?;
        s.set(3);
        Ok(())
    });
    assert_eq!(steps.get(), 2);
    r.callback(());
    assert_eq!(
        steps.get(),
        3,
        "resumed inside the callback, as inlineCallbacks does"
    );
}

#[test]
fn five_thousand_awaits_of_fired_deferreds_do_not_overflow() {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let mut out = spawn(async {
                let mut total = 0u64;
                for i in 0..5_000u64 {
                    total += succeed(i).await?;
                }
                Ok(total)
            });
            assert_eq!(out.take_result().unwrap().unwrap(), 12_497_500);
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn cancelling_spawned_future_cancels_the_deferred_it_awaits() {
    let inner_cancelled = Rc::new(Cell::new(false));
    let ic = inner_cancelled.clone();
    let (_r, inner) = Deferred::<u32>::with_canceller(move |_| ic.set(true));
    let mut out = spawn(async move {
        let v = inner.await?;
        Ok(v)
    });
    out.cancel();
    assert!(inner_cancelled.get());
    assert!(out.take_result().unwrap().unwrap_err().check::<Cancelled>());
}

#[test]
fn future_handling_the_cancellers_failure_decides_the_result() {
    let (_r, inner) = Deferred::<u32>::with_canceller(|r| r.errback(Boom));
    let mut out = spawn(async move {
        match inner.await {
            Err(f) if f.check::<Boom>() => Ok(7),
            other => other,
        }
    });
    out.cancel();
    assert_eq!(out.take_result().unwrap().unwrap(), 7);
}

#[test]
fn future_awaiting_nothing_cancellable_is_dropped_on_cancel() {
    struct Forever;
    impl std::future::Future for Forever {
        type Output = Result<u32, Failure>;
        fn poll(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Self::Output> {
            std::task::Poll::Pending
        }
    }
    let dropped = Rc::new(Cell::new(false));
    struct SetOnDrop(Rc<Cell<bool>>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let guard = SetOnDrop(dropped.clone());
    let mut out = spawn(async move {
        let _guard = guard;
        Forever.await
    });
    out.cancel();
    assert!(dropped.get());
    assert!(out.take_result().unwrap().unwrap_err().check::<Cancelled>());
}

#[test]
fn failure_through_nested_spawns_names_each_level() {
    let inner_line = line!() + 1;
    let inner = spawn(async { Err::<u32, _>(Failure::new(Boom)) });
    let outer_line = line!() + 1;
    let mut outer = spawn(async move {
        let v = inner.await?;
        Ok(v)
    });
    let f = outer.take_result().unwrap().unwrap_err();
    assert!(f.check::<Boom>());
    let lines: Vec<u32> = f.path().iter().map(|l| l.line()).collect();
    assert_eq!(lines, vec![inner_line, outer_line]);
    let text = format!("{f:#}");
    assert!(text.contains("passed through"), "{text}");
}

#[test]
fn a_panicking_future_becomes_a_failure() {
    let mut out = spawn(async {
        if true {
            panic!("inside");
        }
        Ok(())
    });
    let f = out.take_result().unwrap().unwrap_err();
    assert!(f.check::<torsion::error::Panicked>());
}

#[test]
fn two_tasks_interleave_at_their_awaits() {
    let order = Rc::new(RefCell::new(Vec::new()));
    let (ra, a) = Deferred::<()>::new();
    let (rb, b) = Deferred::<()>::new();
    let o1 = order.clone();
    let _t1 = spawn(async move {
        o1.borrow_mut().push("t1 start");
        a.await?;
        o1.borrow_mut().push("t1 end");
        Ok(())
    });
    let o2 = order.clone();
    let _t2 = spawn(async move {
        o2.borrow_mut().push("t2 start");
        b.await?;
        o2.borrow_mut().push("t2 end");
        Ok(())
    });
    rb.callback(());
    ra.callback(());
    assert_eq!(
        *order.borrow(),
        vec!["t1 start", "t2 start", "t2 end", "t1 end"]
    );
}

#[test]
fn a_long_line_of_tasks_each_awaiting_the_previous_does_not_overflow() {
    std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(|| {
            let (first_r, first) = Deferred::<u64>::new();
            let mut previous = first;
            for _ in 0..5_000 {
                let awaited = previous;
                previous = spawn(async move { Ok(awaited.await? + 1) });
            }
            first_r.callback(0);
            let mut last = previous;
            assert_eq!(last.take_result().unwrap().unwrap(), 5_000);
        })
        .unwrap()
        .join()
        .unwrap();
}
