//! DeferredList, gather_results and race (CHECKLIST "Deferred" 17–20; Twisted's
//! test_defer.py `DeferredListTests`, `GatherResultsTests`, `RaceTests`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use torsion::defer::{DeferredList, fail, gather_results, race, succeed};
use torsion::error::{Cancelled, FailureGroup, FirstError};
use torsion::testing::collect_unhandled_failures;
use torsion::{Deferred, Failure};

#[derive(Debug)]
struct Boom(u32);
impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "boom {}", self.0)
    }
}
impl std::error::Error for Boom {}

fn result_of<T: 'static>(mut d: Deferred<T>) -> Result<T, Failure> {
    d.take_result().expect("the Deferred has no result yet")
}

fn boom_of(failure: &Failure) -> u32 {
    failure.downcast_ref::<Boom>().expect("a Boom").0
}

/// A Deferred whose canceller counts its calls.
fn cancellable(count: &Rc<Cell<u32>>) -> (torsion::Resolver<u32>, Deferred<u32>) {
    let count = count.clone();
    Deferred::with_canceller(move |_| count.set(count.get() + 1))
}

#[test]
fn deferred_list_results_are_in_input_order_not_firing_order() {
    let (r0, d0) = Deferred::<u32>::new();
    let (r1, d1) = Deferred::<u32>::new();
    let (r2, d2) = Deferred::<u32>::new();
    let mut list = DeferredList::new(vec![d0, d1, d2])
        .consume_errors(true)
        .into_deferred();
    r2.callback(2);
    r1.errback(Boom(1));
    assert!(list.take_result().is_none(), "one input is still pending");
    r0.callback(0);
    let results = list.take_result().unwrap().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(*results[0].as_ref().unwrap(), 0);
    assert_eq!(boom_of(results[1].as_ref().unwrap_err()), 1);
    assert_eq!(*results[2].as_ref().unwrap(), 2);
}

#[test]
fn deferred_list_of_already_fired_inputs_fires_at_once() {
    let list = DeferredList::new(vec![succeed(1u32), fail(Boom(2)), succeed(3)])
        .consume_errors(true)
        .into_deferred();
    let results = result_of(list).unwrap();
    assert_eq!(*results[0].as_ref().unwrap(), 1);
    assert_eq!(boom_of(results[1].as_ref().unwrap_err()), 2);
    assert_eq!(*results[2].as_ref().unwrap(), 3);
}

#[test]
fn empty_deferred_list_fires_at_once() {
    let list = DeferredList::<u32>::new(vec![]).into_deferred();
    assert!(result_of(list).unwrap().is_empty());
    let list = DeferredList::<u32>::new(vec![])
        .fire_on_one_errback(true)
        .into_deferred();
    assert!(result_of(list).unwrap().is_empty());
    assert!(result_of(gather_results::<u32>(vec![])).unwrap().is_empty());
    // No success can come: the first-success forms fail at once with an empty group.
    let f = result_of(DeferredList::<u32>::new(vec![]).first_callback()).unwrap_err();
    assert!(
        f.downcast_ref::<FailureGroup>()
            .unwrap()
            .failures
            .is_empty()
    );
    let f = result_of(race::<u32>(vec![])).unwrap_err();
    assert!(
        f.downcast_ref::<FailureGroup>()
            .unwrap()
            .failures
            .is_empty()
    );
}

#[test]
fn fire_on_one_errback_gives_first_error_with_index() {
    let (r0, d0) = Deferred::<u32>::new();
    let (r1, d1) = Deferred::<u32>::new();
    let (r2, d2) = Deferred::<u32>::new();
    let mut list = DeferredList::new(vec![d0, d1, d2])
        .fire_on_one_errback(true)
        .consume_errors(true)
        .into_deferred();
    r0.callback(0);
    assert!(list.take_result().is_none());
    r2.errback(Boom(2));
    let failure = list.take_result().unwrap().unwrap_err();
    let first = failure.downcast_ref::<FirstError>().expect("a FirstError");
    assert_eq!(first.index, 2);
    assert_eq!(boom_of(&first.failure), 2);
    // Later results change nothing.
    r1.errback(Boom(1));
}

#[test]
fn fire_on_one_errback_with_every_input_succeeding_gives_the_full_list() {
    let list = DeferredList::new(vec![succeed(1u32), succeed(2)])
        .fire_on_one_errback(true)
        .into_deferred();
    let values: Vec<u32> = result_of(list)
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(values, [1, 2]);
}

#[test]
fn fire_on_one_callback_gives_the_first_success_with_its_index() {
    let (r0, d0) = Deferred::<u32>::new();
    let (r1, d1) = Deferred::<u32>::new();
    let (r2, d2) = Deferred::<u32>::new();
    let d0_handle = d0.handle();
    let mut first = DeferredList::new(vec![d0, d1, d2])
        .consume_errors(true)
        .first_callback();
    r1.errback(Boom(1));
    assert!(first.take_result().is_none(), "a failure does not decide");
    r2.callback(20);
    assert_eq!(first.take_result().unwrap().unwrap(), (2, 20));
    // Unlike race, the others are left alone.
    assert!(!d0_handle.is_fired());
    r0.callback(0);
}

#[test]
fn fire_on_one_callback_with_every_input_failing_gives_a_failure_group_in_input_order() {
    let (r0, d0) = Deferred::<u32>::new();
    let (r1, d1) = Deferred::<u32>::new();
    let first = DeferredList::new(vec![d0, d1])
        .consume_errors(true)
        .first_callback();
    r1.errback(Boom(1));
    r0.errback(Boom(0));
    let failure = result_of(first).unwrap_err();
    let group = failure
        .downcast_ref::<FailureGroup>()
        .expect("a FailureGroup");
    let order: Vec<u32> = group.failures.iter().map(boom_of).collect();
    assert_eq!(order, [0, 1]);
}

#[test]
fn fire_on_one_callback_and_errback_together_stop_at_the_first_of_either() {
    let (_r0, d0) = Deferred::<u32>::new();
    let (r1, d1) = Deferred::<u32>::new();
    let first = DeferredList::new(vec![d0, d1])
        .fire_on_one_errback(true)
        .consume_errors(true)
        .first_callback();
    r1.errback(Boom(1));
    let failure = result_of(first).unwrap_err();
    assert_eq!(failure.downcast_ref::<FirstError>().unwrap().index, 1);
}

#[test]
fn without_consume_errors_an_input_failure_is_also_reported_unhandled() {
    let ((), unhandled) = collect_unhandled_failures(|| {
        let (r0, d0) = Deferred::<u32>::new();
        let (r1, d1) = Deferred::<u32>::new();
        let list = DeferredList::new(vec![d0, d1]).into_deferred();
        r0.callback(0);
        r1.errback(Boom(1));
        drop(r1);
        let results = result_of(list).unwrap();
        assert_eq!(boom_of(results[1].as_ref().unwrap_err()), 1);
    });
    assert_eq!(unhandled.len(), 1, "{unhandled:?}");
    assert_eq!(boom_of(&unhandled[0]), 1);
}

#[test]
fn with_consume_errors_an_input_failure_is_handled_by_the_list() {
    let ((), unhandled) = collect_unhandled_failures(|| {
        let (r0, d0) = Deferred::<u32>::new();
        let list = DeferredList::new(vec![d0, fail(Boom(1))])
            .consume_errors(true)
            .into_deferred();
        r0.callback(0);
        drop(r0);
        assert!(result_of(list).unwrap()[1].is_err());
    });
    assert!(unhandled.is_empty(), "{unhandled:?}");
}

#[test]
fn gather_results_gives_values_in_order() {
    let (r0, d0) = Deferred::<&str>::new();
    let (r1, d1) = Deferred::<&str>::new();
    let mut all = gather_results(vec![d0, succeed("middle"), d1]);
    r1.callback("last");
    assert!(all.take_result().is_none());
    r0.callback("first");
    assert_eq!(
        all.take_result().unwrap().unwrap(),
        ["first", "middle", "last"]
    );
}

#[test]
fn gather_results_one_failure_gives_first_error() {
    let ((), unhandled) = collect_unhandled_failures(|| {
        let (r0, d0) = Deferred::<u32>::new();
        let (r1, d1) = Deferred::<u32>::new();
        let mut all = gather_results(vec![d0, d1]);
        r1.errback(Boom(1));
        drop(r1);
        let failure = all.take_result().unwrap().unwrap_err();
        let first = failure.downcast_ref::<FirstError>().expect("a FirstError");
        assert_eq!(first.index, 1);
        assert_eq!(boom_of(&first.failure), 1);
        r0.callback(0);
    });
    // Twisted's default consumeErrors=False: the input keeps its failure too.
    assert_eq!(unhandled.len(), 1, "{unhandled:?}");
}

#[test]
fn gather_results_consuming_errors_leaves_nothing_unhandled() {
    let ((), unhandled) = collect_unhandled_failures(|| {
        let all = DeferredList::new(vec![succeed(0u32), fail(Boom(1))])
            .consume_errors(true)
            .gather();
        let failure = result_of(all).unwrap_err();
        assert!(failure.check::<FirstError>());
    });
    assert!(unhandled.is_empty(), "{unhandled:?}");
}

#[test]
fn cancelling_deferred_list_cancels_every_input() {
    let cancels = Rc::new(Cell::new(0));
    let (_r0, d0) = cancellable(&cancels);
    let (_r1, d1) = cancellable(&cancels);
    // A canceller that fires its Deferred decides that input's result.
    let (_r2, d2) = Deferred::<u32>::with_canceller(|r| r.callback(22));
    // Already fired: not cancelled.
    let (r3, d3) = cancellable(&cancels);
    r3.callback(3);
    let handles: Vec<_> = [&d0, &d1, &d2, &d3].iter().map(|d| d.handle()).collect();
    let ((), unhandled) = collect_unhandled_failures(|| {
        let list = DeferredList::new(vec![d0, d1, d2, d3]).into_deferred();
        list.cancel();
        assert_eq!(cancels.get(), 2);
        assert!(handles.iter().all(|h| h.is_fired()));
        // As in Twisted, the list then fires with what the cancellations gave.
        let results = result_of(list).unwrap();
        assert!(results[0].as_ref().unwrap_err().check::<Cancelled>());
        assert!(results[1].as_ref().unwrap_err().check::<Cancelled>());
        assert_eq!(*results[2].as_ref().unwrap(), 22);
        assert_eq!(*results[3].as_ref().unwrap(), 3);
    });
    // The Cancelled failures asked for by the cancel are not reported as unhandled.
    assert!(unhandled.is_empty(), "{unhandled:?}");
}

#[test]
fn cancelling_a_fired_deferred_list_does_nothing() {
    let cancels = Rc::new(Cell::new(0));
    let (_r0, d0) = cancellable(&cancels);
    let list = DeferredList::new(vec![d0, fail(Boom(1))])
        .fire_on_one_errback(true)
        .consume_errors(true)
        .into_deferred();
    list.cancel();
    assert_eq!(cancels.get(), 0);
    assert!(result_of(list).unwrap_err().check::<FirstError>());
}

#[test]
fn cancelling_gather_results_cancels_every_input() {
    let cancels = Rc::new(Cell::new(0));
    let (_r0, d0) = cancellable(&cancels);
    let (_r1, d1) = cancellable(&cancels);
    let ((), unhandled) = collect_unhandled_failures(|| {
        let all = gather_results(vec![d0, d1]);
        all.cancel();
        assert_eq!(cancels.get(), 2);
        let failure = result_of(all).unwrap_err();
        let first = failure.downcast_ref::<FirstError>().expect("a FirstError");
        assert_eq!(first.index, 0);
        assert!(first.failure.check::<Cancelled>());
    });
    assert!(unhandled.is_empty(), "{unhandled:?}");
}

#[test]
fn race_first_success_wins_and_cancels_the_rest() {
    let cancels = Rc::new(Cell::new(0));
    let (_r0, d0) = cancellable(&cancels);
    let (r1, d1) = cancellable(&cancels);
    let (_r2, d2) = cancellable(&cancels);
    let (h0, h2) = (d0.handle(), d2.handle());
    let ((), unhandled) = collect_unhandled_failures(|| {
        let mut winner = race(vec![d0, d1, d2]);
        assert!(winner.take_result().is_none());
        r1.callback(11);
        assert_eq!(winner.take_result().unwrap().unwrap(), (1, 11));
        assert_eq!(cancels.get(), 2, "both losers were cancelled");
        assert!(h0.is_fired() && h2.is_fired());
    });
    assert!(unhandled.is_empty(), "{unhandled:?}");
}

#[test]
fn race_losers_are_cancelled_before_the_winner_is_delivered() {
    let cancels = Rc::new(Cell::new(0));
    let (_r0, d0) = cancellable(&cancels);
    let (r1, d1) = cancellable(&cancels);
    let seen = Rc::new(Cell::new(u32::MAX));
    let (c, s) = (cancels.clone(), seen.clone());
    let _winner = race(vec![d0, d1]).map(move |_| s.set(c.get()));
    r1.callback(1);
    assert_eq!(seen.get(), 1);
}

#[test]
fn race_failures_do_not_decide_while_one_is_pending() {
    let (r0, d0) = Deferred::<u32>::new();
    let (r1, d1) = Deferred::<u32>::new();
    let mut winner = race(vec![d0, d1]);
    r0.errback(Boom(0));
    assert!(winner.take_result().is_none());
    r1.callback(5);
    assert_eq!(winner.take_result().unwrap().unwrap(), (1, 5));
}

#[test]
fn race_all_failing_gives_failure_group() {
    let ((), unhandled) = collect_unhandled_failures(|| {
        let (r0, d0) = Deferred::<u32>::new();
        let (r1, d1) = Deferred::<u32>::new();
        let winner = race(vec![d0, d1, fail(Boom(2))]);
        r1.errback(Boom(1));
        r0.errback(Boom(0));
        drop((r0, r1));
        let failure = result_of(winner).unwrap_err();
        let group = failure
            .downcast_ref::<FailureGroup>()
            .expect("a FailureGroup");
        let order: Vec<u32> = group.failures.iter().map(boom_of).collect();
        assert_eq!(order, [0, 1, 2], "input order, not firing order");
    });
    // race consumes its inputs' failures (they are in the group).
    assert!(unhandled.is_empty(), "{unhandled:?}");
}

#[test]
fn cancelling_race_cancels_every_input() {
    let cancels = Rc::new(Cell::new(0));
    let (_r0, d0) = cancellable(&cancels);
    let (_r1, d1) = cancellable(&cancels);
    let winner = race(vec![d0, d1]);
    winner.cancel();
    assert_eq!(cancels.get(), 2);
    let failure = result_of(winner).unwrap_err();
    let group = failure
        .downcast_ref::<FailureGroup>()
        .expect("a FailureGroup");
    assert!(group.failures.iter().all(|f| f.check::<Cancelled>()));
}

#[test]
fn a_callback_on_the_list_may_fire_another_of_its_inputs() {
    // Re-entrancy: the list's own callback runs while an input is firing.
    let (r0, d0) = Deferred::<u32>::new();
    let (r1, d1) = Deferred::<u32>::new();
    let r1 = Rc::new(RefCell::new(Some(r1)));
    let r1b = r1.clone();
    let first = DeferredList::new(vec![d0, d1])
        .first_callback()
        .map(move |x| {
            r1b.borrow_mut().take().unwrap().callback(100);
            x
        });
    r0.callback(1);
    assert_eq!(result_of(first).unwrap(), (0, 1));
    assert!(r1.borrow().is_none());
}

#[test]
fn inputs_that_wait_on_other_deferreds_are_followed() {
    let (inner_r, inner) = Deferred::<u32>::new();
    let inner = RefCell::new(Some(inner));
    let chained = succeed(0u32).add_callback(move |_| inner.borrow_mut().take().unwrap());
    let mut all = gather_results(vec![chained, succeed(2)]);
    assert!(all.take_result().is_none());
    inner_r.callback(1);
    assert_eq!(all.take_result().unwrap().unwrap(), [1, 2]);
}
