//! Who keeps a Deferred alive: a chain owns the Deferred it waits on (Twisted's
//! `_chainedTo`), and a Deferred whose every Resolver was dropped unfired fails instead of
//! hanging.

use std::cell::Cell;
use std::rc::Rc;

use torsion::defer::succeed;
use torsion::error::{Cancelled, ResolverDropped};
use torsion::time::ReactorTime;
use torsion::{Deferred, Failure, Reactor, spawn};

fn result_of<T: 'static>(d: &mut Deferred<T>) -> Result<T, Failure> {
    d.take_result().expect("the Deferred has no result yet")
}

#[test]
fn a_paused_inner_left_with_only_a_handle_still_resumes_its_outer() {
    let inner = succeed(42u32);
    inner.pause();
    let handle = inner.handle();
    let (resolver, outer) = Deferred::<()>::new();
    let mut outer = outer.add_callback(move |()| inner);
    resolver.callback(());
    assert!(outer.take_result().is_none(), "waits for the paused inner");
    handle.unpause();
    assert_eq!(result_of(&mut outer).expect("a value"), 42);
}

#[test]
fn cancelling_an_outer_runs_the_canceller_of_an_inner_whose_resolver_was_dropped() {
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let (inner_resolver, inner) = Deferred::<u32>::with_canceller(move |_| r.set(true));
    drop(inner_resolver);
    let (resolver, outer) = Deferred::<()>::new();
    let mut outer = outer.add_callback(move |()| inner);
    resolver.callback(());
    assert!(outer.take_result().is_none());
    outer.cancel();
    assert!(ran.get(), "the inner's canceller ran");
    let failure = result_of(&mut outer).expect_err("cancelled");
    assert!(failure.check::<Cancelled>(), "{failure}");
}

#[test]
fn dropping_the_last_resolver_fails_the_deferred_naming_where_it_was_created() {
    let line = line!() + 1;
    let (resolver, mut d) = Deferred::<u32>::new();
    let second = resolver.clone();
    drop(resolver);
    assert!(!d.is_fired(), "one Resolver is left");
    drop(second);
    let failure = result_of(&mut d).expect_err("the Resolvers are gone");
    assert!(failure.check::<ResolverDropped>(), "{failure}");
    let at = format!("defer_ownership.rs:{line}");
    assert!(
        failure.to_string().contains(&at),
        "{failure} should name {at}"
    );
}

#[test]
fn a_chain_waiting_on_an_abandoned_inner_fails_instead_of_hanging() {
    let (inner_resolver, inner) = Deferred::<u32>::new();
    let (resolver, outer) = Deferred::<()>::new();
    let mut outer = outer.add_callback(move |()| inner);
    resolver.callback(());
    drop(inner_resolver);
    assert!(
        result_of(&mut outer)
            .expect_err("abandoned")
            .check::<ResolverDropped>()
    );
}

#[test]
fn a_cancel_only_deferred_stays_pending_after_its_resolver_is_dropped() {
    let (resolver, mut d) = Deferred::<u32>::with_canceller(|_| {});
    drop(resolver);
    assert!(
        d.take_result().is_none(),
        "still pending: it can be cancelled"
    );
    d.cancel();
    assert!(
        result_of(&mut d)
            .expect_err("cancelled")
            .check::<Cancelled>()
    );
}

#[test]
fn a_canceller_that_fires_its_resolver_decides_the_result() {
    let (resolver, mut d) = Deferred::<u32>::with_canceller(|r| r.callback(7));
    drop(resolver);
    d.cancel();
    assert_eq!(result_of(&mut d).expect("the canceller's value"), 7);
}

#[test]
fn a_spawned_future_awaiting_an_abandoned_deferred_fails() {
    let (inner_resolver, inner) = Deferred::<u32>::new();
    let mut task = spawn(async move { Ok(inner.await? + 1) });
    assert!(task.take_result().is_none());
    drop(inner_resolver);
    assert!(
        result_of(&mut task)
            .expect_err("abandoned")
            .check::<ResolverDropped>()
    );
}

#[test]
fn with_a_reactor_running_a_dropped_resolver_fails_after_the_current_callback() {
    let reactor = Reactor::new().expect("reactor");
    let seen = Rc::new(Cell::new((false, false)));
    let (r, s) = (reactor.clone(), seen.clone());
    reactor.call_later(0.0, move || {
        let (resolver, d) = Deferred::<u32>::new();
        let fired = Rc::new(Cell::new(false));
        let f = fired.clone();
        let kept = d.add_errback(move |failure| {
            f.set(failure.check::<ResolverDropped>());
            Ok(0)
        });
        drop(resolver);
        let during = fired.get();
        let (r2, f2) = (r.clone(), fired.clone());
        r.call_soon(move || {
            drop(kept);
            s.set((during, f2.get()));
            let _ = r2.stop();
        });
    });
    reactor.run().expect("run");
    let (during, after) = seen.get();
    assert!(!during, "not inside the callback that dropped the Resolver");
    assert!(after, "failed right after it returned");
}

#[test]
fn a_deferred_nobody_holds_or_waits_on_goes_silently_with_its_last_resolver() {
    let ((), unhandled) = torsion::testing::collect_unhandled_failures(|| {
        let (resolver, d) = Deferred::<u32>::new();
        drop(d);
        drop(resolver);
    });
    assert!(unhandled.is_empty(), "nothing to report: {unhandled:?}");
}

#[test]
fn callbacks_left_waiting_on_a_dropped_resolver_hear_of_it() {
    let ran = Rc::new(Cell::new(false));
    let ((), unhandled) = torsion::testing::collect_unhandled_failures(|| {
        let (resolver, d) = Deferred::<u32>::new();
        let r = ran.clone();
        // The handle is dropped, but a step waits: it must not hang without a word.
        drop(d.map(move |_| r.set(true)));
        drop(resolver);
    });
    assert!(!ran.get());
    assert_eq!(unhandled.len(), 1, "{unhandled:?}");
    assert!(unhandled[0].check::<ResolverDropped>());
}

#[test]
fn a_before_shutdown_deferred_whose_resolver_is_dropped_does_not_hold_shutdown_up() {
    let reactor = Reactor::builder()
        .shutdown_timeout(std::time::Duration::from_secs(60))
        .build()
        .expect("reactor");
    let after = Rc::new(Cell::new(false));
    let a = after.clone();
    reactor.add_system_event_trigger(
        torsion::reactor::Phase::Before,
        torsion::reactor::SystemEvent::Shutdown,
        || {
            let (resolver, wait) = Deferred::<()>::new();
            drop(resolver);
            wait
        },
    );
    reactor.add_system_event_trigger(
        torsion::reactor::Phase::After,
        torsion::reactor::SystemEvent::Shutdown,
        move || a.set(true),
    );
    let r = reactor.clone();
    reactor.call_later(0.0, move || {
        let _ = r.stop();
    });
    let started = std::time::Instant::now();
    reactor.run().expect("run");
    assert!(after.get());
    // Not the 60 s shutdown timeout: the abandoned Deferred failed at once.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn a_pending_timer_dropped_with_its_reactor_leaves_no_report() {
    let ((), unhandled) = torsion::testing::collect_unhandled_failures(|| {
        let reactor = Reactor::new().expect("reactor");
        let (resolver, d) = Deferred::<()>::new();
        drop(d.map(|()| println!("never")));
        reactor.call_later(60.0, move || resolver.callback(()));
        let r = reactor.clone();
        reactor.call_later(0.0, move || {
            let _ = r.stop();
        });
        reactor.run().expect("run");
    });
    assert!(unhandled.is_empty(), "nothing to report: {unhandled:?}");
}

struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

#[test]
fn a_chain_waiting_on_a_cancel_only_deferred_is_freed_once_nothing_can_reach_either() {
    let dropped = Rc::new(Cell::new(false));
    let flag = DropFlag(dropped.clone());
    let (inner_resolver, inner) = Deferred::<u32>::with_canceller(|_| {});
    let (resolver, outer) = Deferred::<()>::new();
    let outer = outer.add_callback(move |()| inner).map(move |v| {
        let _keep = &flag;
        v
    });
    resolver.callback(());
    drop(outer);
    drop(resolver);
    assert!(!dropped.get(), "the inner's Resolver could still fire it");
    drop(inner_resolver);
    assert!(
        dropped.get(),
        "the waiting chain and what its steps capture were freed"
    );
}

#[test]
fn a_chain_waiting_on_defer_later_is_freed_with_its_reactor() {
    let dropped = Rc::new(Cell::new(false));
    {
        let reactor = Reactor::new().expect("reactor");
        let r = reactor.clone();
        let flag = DropFlag(dropped.clone());
        reactor.call_when_running(move || {
            let r2 = r.clone();
            drop(
                succeed(())
                    .add_callback(move |()| torsion::task::defer_later(&r2, 60.0, || Ok(())))
                    .map(move |()| {
                        let _keep = &flag;
                    }),
            );
            let _ = r.stop();
        });
        reactor.run().expect("run");
    }
    assert!(
        dropped.get(),
        "the waiting chain leaked with everything it captures"
    );
}

#[test]
fn a_handle_keeps_a_waiting_pair_reachable() {
    let dropped = Rc::new(Cell::new(false));
    let flag = DropFlag(dropped.clone());
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let (inner_resolver, inner) = Deferred::<u32>::with_canceller(|_| {});
    let handle = inner.handle();
    drop(
        succeed(())
            .add_callback(move |()| inner)
            .add_both(move |_| {
                let _keep = &flag;
                r.set(true);
                Ok(())
            }),
    );
    drop(inner_resolver);
    assert!(!dropped.get(), "a live handle can still cancel the inner");
    handle.cancel();
    assert!(ran.get(), "the cancel reached the waiting chain");
    assert!(dropped.get());
}
