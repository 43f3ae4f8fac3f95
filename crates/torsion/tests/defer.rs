//! Deferred behaviour (CHECKLIST "Deferred" 1–16, 21; Twisted's test_defer.py).

mod common;

use common::{Boom, log};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use torsion::defer::{DeferredHandle, fail, maybe_deferred, succeed};
use torsion::error::{AlreadyCalled, Cancelled};
use torsion::{Deferred, Failure};

fn result_of<T: 'static>(mut d: Deferred<T>) -> Result<T, Failure> {
    d.take_result().expect("the Deferred has no result yet")
}

#[test]
fn callbacks_run_in_order_each_getting_the_previous_output() {
    let (r, d) = Deferred::<u32>::new();
    let d = d
        .add_callback(|x| Ok(x + 1))
        .add_callback(|x| Ok(x * 10))
        .add_callback(|x| Ok(format!("<{x}>")));
    r.callback(1);
    assert_eq!(result_of(d).unwrap(), "<20>");
}

#[test]
fn failing_callback_switches_to_errback_and_errback_value_switches_back() {
    let seen = log();
    let (r, d) = Deferred::<u32>::new();
    let s1 = seen.clone();
    let s2 = seen.clone();
    let d = d
        .add_callback(|_| -> Result<u32, Failure> { Err(Boom.into()) })
        .add_callback(move |x| {
            s1.borrow_mut().push(format!("skipped {x}"));
            Ok(x)
        })
        .add_errback(move |f| {
            s2.borrow_mut()
                .push(format!("errback {}", f.check::<Boom>()));
            Ok(7)
        })
        .add_callback(|x| Ok(x + 1));
    r.callback(1);
    assert_eq!(result_of(d).unwrap(), 8);
    assert_eq!(*seen.borrow(), vec!["errback true"]);
}

#[test]
fn absent_errback_passes_a_failure_through_unchanged() {
    let d = fail::<u32>(Boom).add_callback(|x| Ok(x + 1)).map(|x| x * 2);
    let f = result_of(d).unwrap_err();
    assert!(f.check::<Boom>());
}

#[test]
fn paused_fired_deferred_holds_new_callbacks_until_unpause_and_pause_is_counted() {
    let ran = Rc::new(Cell::new(false));
    let d = succeed(1u32);
    d.pause();
    d.pause();
    let r2 = ran.clone();
    let d = d.map(move |x| {
        r2.set(true);
        x
    });
    assert!(!ran.get());
    d.unpause();
    assert!(!ran.get(), "one pause remains");
    d.unpause();
    assert!(ran.get());
    assert_eq!(result_of(d).unwrap(), 1);
}

#[test]
fn callback_returning_unfired_deferred_pauses_outer_chain() {
    let (inner_r, inner) = Deferred::<u32>::new();
    let inner = Rc::new(RefCell::new(Some(inner)));
    let (r, d) = Deferred::<u32>::new();
    let i2 = inner.clone();
    let reached = Rc::new(Cell::new(false));
    let reached2 = reached.clone();
    let mut d = d
        .add_callback(move |_| i2.borrow_mut().take().unwrap())
        .map(move |x| {
            reached2.set(true);
            x + 100
        });
    r.callback(1);
    assert!(!reached.get());
    assert!(d.take_result().is_none());
    inner_r.callback(5);
    assert!(reached.get());
    assert_eq!(d.take_result().unwrap().unwrap(), 105);
}

#[test]
fn chaining_is_transitive() {
    let (rc, c) = Deferred::<u32>::new();
    let (rb, b) = Deferred::<u32>::new();
    let (ra, a) = Deferred::<u32>::new();
    let c = Rc::new(RefCell::new(Some(c)));
    let b = b.add_callback(move |_| c.borrow_mut().take().unwrap());
    let b = Rc::new(RefCell::new(Some(b)));
    let mut a = a.add_callback(move |_| b.borrow_mut().take().unwrap());
    ra.callback(0);
    rb.callback(0);
    assert!(a.take_result().is_none());
    rc.callback(42);
    assert_eq!(a.take_result().unwrap().unwrap(), 42);
}

#[test]
fn errback_may_return_a_deferred_and_the_chain_waits() {
    let (ri, inner) = Deferred::<u32>::new();
    let inner = Rc::new(RefCell::new(Some(inner)));
    let mut d = fail::<u32>(Boom).add_errback(move |_| inner.borrow_mut().take().unwrap());
    assert!(d.take_result().is_none());
    ri.callback(3);
    assert_eq!(d.take_result().unwrap().unwrap(), 3);
}

#[test]
fn callback_added_during_a_callback_runs_after_it_in_order() {
    let seen = log();
    let (r, d) = Deferred::<u32>::new();
    // Keep the handle reachable from inside the callback.
    let slot: Rc<RefCell<Option<Deferred<u32>>>> = Rc::new(RefCell::new(None));
    let slot2 = slot.clone();
    let s1 = seen.clone();
    let d = d.map(move |x| {
        s1.borrow_mut().push("first".into());
        let s3 = s1.clone();
        let d = slot2.borrow_mut().take().unwrap();
        let d = d.map(move |x| {
            s3.borrow_mut().push("added inside".into());
            x
        });
        s1.borrow_mut().push("first ends".into());
        *slot2.borrow_mut() = Some(d);
        x
    });
    *slot.borrow_mut() = Some(d);
    r.callback(1);
    assert_eq!(*seen.borrow(), vec!["first", "first ends", "added inside"]);
}

#[test]
fn long_chains_and_deep_nesting_do_not_grow_the_stack() {
    // Run on a small stack to make any recursion show.
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let (r, mut d) = Deferred::<u64>::new();
            for _ in 0..100_000 {
                d = d.map(|x| x + 1);
            }
            r.callback(0);
            assert_eq!(result_of(d).unwrap(), 100_000);

            // 10,000 Deferreds, each waiting on the next.
            let mut resolvers = Vec::new();
            let (first_r, first) = Deferred::<u64>::new();
            let mut outer = first;
            for _ in 0..10_000 {
                let (r, inner) = Deferred::<u64>::new();
                resolvers.push(r);
                let inner = RefCell::new(Some(inner));
                outer = outer.add_callback(move |_| inner.borrow_mut().take().unwrap());
            }
            first_r.callback(0);
            for (i, r) in resolvers.into_iter().enumerate() {
                r.callback(i as u64);
            }
            assert_eq!(result_of(outer).unwrap(), 9_999);

            // Dropping a deep nest of unfired chains does not recurse either.
            let mut keep = Vec::new();
            let (r0, mut d) = Deferred::<u64>::new();
            for _ in 0..10_000 {
                let (r, inner) = Deferred::<u64>::new();
                keep.push(r);
                let inner = RefCell::new(Some(inner));
                d = d.add_callback(move |_| inner.borrow_mut().take().unwrap());
            }
            r0.callback(1);
            drop(d);
            drop(keep);
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn firing_twice_in_any_combination_is_already_called() {
    let (r, _d) = Deferred::<u32>::new();
    r.callback(1);
    assert_eq!(r.try_callback(2), Err(AlreadyCalled));
    assert_eq!(r.try_errback(Boom), Err(AlreadyCalled));
    let (r, d) = Deferred::<u32>::new();
    r.errback(Boom);
    assert_eq!(r.try_errback(Boom), Err(AlreadyCalled));
    assert_eq!(r.try_callback(1), Err(AlreadyCalled));
    drop(d.add_errback(|_| Ok(0)));
}

#[test]
#[should_panic(expected = "already called")]
fn callback_on_a_fired_deferred_panics_with_a_clear_message() {
    let (r, _d) = Deferred::<u32>::new();
    r.callback(1);
    r.callback(2);
}

#[test]
fn callbacks_added_after_firing_run_at_once() {
    let ran = Rc::new(Cell::new(0));
    let r2 = ran.clone();
    let _d = succeed(4u32).map(move |x| r2.set(x));
    assert_eq!(ran.get(), 4);
}

#[test]
fn cancelling_unfired_deferred_without_canceller_gives_cancelled() {
    let (r, d) = Deferred::<u32>::new();
    let got_value = Rc::new(Cell::new(false));
    let g = got_value.clone();
    let d = d.map(move |x| {
        g.set(true);
        x
    });
    d.cancel();
    assert!(result_of(d).unwrap_err().check::<Cancelled>());
    // A late fire is dropped silently.
    r.callback(1);
    assert!(!got_value.get());
}

#[test]
fn canceller_gets_the_deferred_and_decides_or_cancelled_follows() {
    let called = Rc::new(Cell::new(0));
    let c = called.clone();
    let (_r, d) = Deferred::<u32>::with_canceller(move |_r| c.set(c.get() + 1));
    d.cancel();
    assert_eq!(called.get(), 1);
    assert!(result_of(d).unwrap_err().check::<Cancelled>());

    let (_r, d) = Deferred::<u32>::with_canceller(|r| r.callback(99));
    d.cancel();
    assert_eq!(result_of(d).unwrap(), 99);

    let (_r, d) = Deferred::<u32>::with_canceller(|r| r.errback(Boom));
    d.cancel();
    assert!(result_of(d).unwrap_err().check::<Boom>());
}

#[test]
fn cancelling_after_firing_does_nothing() {
    let called = Rc::new(Cell::new(false));
    let c = called.clone();
    let (r, d) = Deferred::<u32>::with_canceller(move |_| c.set(true));
    r.callback(5);
    d.cancel();
    assert!(!called.get());
    assert_eq!(result_of(d).unwrap(), 5);
}

#[test]
fn cancelling_a_waits_on_b_cancels_b() {
    let b_cancelled = Rc::new(Cell::new(false));
    let bc = b_cancelled.clone();
    let (_rb, b) = Deferred::<u32>::with_canceller(move |_| bc.set(true));
    let b = RefCell::new(Some(b));
    let (ra, a) = Deferred::<u32>::new();
    let a = a.add_callback(move |_| b.borrow_mut().take().unwrap());
    ra.callback(0);
    a.cancel();
    assert!(b_cancelled.get());
    assert!(result_of(a).unwrap_err().check::<Cancelled>());
}

#[test]
fn handle_cancels_and_pauses_from_elsewhere() {
    let (r, d) = Deferred::<u32>::new();
    let h: DeferredHandle = d.handle();
    h.pause();
    r.callback(1);
    let ran = Rc::new(Cell::new(false));
    let ran2 = ran.clone();
    let d = d.map(move |x| {
        ran2.set(true);
        x
    });
    assert!(!ran.get());
    h.unpause();
    assert!(ran.get());
    assert!(h.is_fired());
    drop(d);
    h.cancel(); // gone: nothing happens
}

#[test]
fn panicking_callback_becomes_a_failure() {
    let d = succeed(1u32).map(|_| -> u32 { panic!("kaboom") });
    let f = result_of(d).unwrap_err();
    assert!(f.check::<torsion::error::Panicked>());
    assert!(f.to_string().contains("kaboom"));
}

#[test]
fn maybe_deferred_normalises_values_errors_deferreds_and_panics() {
    assert_eq!(result_of(maybe_deferred(|| Ok(3u32))).unwrap(), 3);
    let f = result_of(maybe_deferred(|| -> Result<u32, Failure> {
        Err(Boom.into())
    }))
    .unwrap_err();
    assert!(f.check::<Boom>());
    let (r, d) = Deferred::<u32>::new();
    let mut d = maybe_deferred(move || d);
    assert!(d.take_result().is_none());
    r.callback(8);
    assert_eq!(d.take_result().unwrap().unwrap(), 8);
    let f = result_of(maybe_deferred(|| -> Result<u32, Failure> { panic!("no") })).unwrap_err();
    assert!(f.check::<torsion::error::Panicked>());
}

#[test]
fn chain_deferred_fires_the_other_with_this_result() {
    let (r2, d2) = Deferred::<u32>::new();
    let (r1, d1) = Deferred::<u32>::new();
    drop(d1.chain_deferred(&r2));
    r1.callback(11);
    assert_eq!(result_of(d2).unwrap(), 11);
}

#[test]
fn failure_origin_is_where_it_was_raised() {
    let line = line!() + 1;
    let d = succeed(1u32).add_callback(|_| -> Result<u32, Failure> { Err(Boom.into()) });
    let f = result_of(d).unwrap_err();
    assert_eq!(f.origin().file(), file!());
    assert_eq!(f.origin().line(), line);
}

#[test]
fn unhandled_failure_is_logged_once_when_the_last_handle_goes_and_chained_ones_never() {
    use torsion::testing::collect_unhandled_failures;
    let ((), unhandled) = collect_unhandled_failures(|| {
        let (r, d) = Deferred::<u32>::new();
        r.errback(Boom);
        drop(r);
        drop(d);
    });
    assert_eq!(unhandled.len(), 1);
    assert!(unhandled[0].check::<Boom>());
    assert_eq!(unhandled[0].origin().file(), file!());

    // Handed on by chaining: only the outer one holds it, and it is handled there.
    let ((), unhandled) = collect_unhandled_failures(|| {
        let (ri, inner) = Deferred::<u32>::new();
        let inner = RefCell::new(Some(inner));
        let d = succeed(0u32)
            .add_callback(move |_| inner.borrow_mut().take().unwrap())
            .add_errback(|_| Ok(0));
        ri.errback(Boom);
        drop(ri);
        drop(d);
    });
    assert!(unhandled.is_empty(), "{unhandled:?}");

    // Still held: not reported yet.
    let (d, unhandled) = collect_unhandled_failures(|| fail::<u32>(Boom));
    assert!(unhandled.is_empty());
    let ((), unhandled) = collect_unhandled_failures(|| drop(d));
    assert_eq!(unhandled.len(), 1);
}

#[test]
fn add_timeout_then_advancing_past_it_gives_timeout_error() {
    use torsion::error::TimeoutError;
    use torsion::time::{Clock, ReactorTime};
    let clock = Clock::new();
    let (_r, d) = Deferred::<u32>::new();
    let mut d = d.add_timeout(10.0, &clock);
    clock.advance(9.0);
    assert!(d.take_result().is_none());
    clock.advance(6.0);
    assert!(
        d.take_result()
            .unwrap()
            .unwrap_err()
            .check::<TimeoutError>()
    );
    assert!(clock.delayed_calls().is_empty());
}

#[test]
fn deferred_fired_before_the_deadline_is_never_cancelled_later() {
    use torsion::time::{Clock, ReactorTime};
    let clock = Clock::new();
    let (r, d) = Deferred::<u32>::new();
    let mut d = d.add_timeout(10.0, &clock);
    clock.advance(5.0);
    r.callback(4);
    assert!(clock.delayed_calls().is_empty(), "the timer was cancelled");
    clock.advance(10.0);
    assert_eq!(d.take_result().unwrap().unwrap(), 4);
}

#[test]
fn manual_cancel_before_the_deadline_stays_cancelled() {
    use torsion::time::Clock;
    let clock = Clock::new();
    let (_r, d) = Deferred::<u32>::new();
    let mut d = d.add_timeout(10.0, &clock);
    clock.advance(2.0);
    d.cancel();
    clock.advance(20.0);
    assert!(d.take_result().unwrap().unwrap_err().check::<Cancelled>());
}
