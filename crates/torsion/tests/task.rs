//! LoopingCall, defer_later, Cooperator and react (CHECKLIST 35–40; Twisted's test_task.py
//! and test_cooperator.py). Deterministic with `Clock`, except react and the starvation
//! check, which run on a real reactor of each backend.

mod common;

use common::{Boom, Log, log};
use std::cell::{Cell, RefCell};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use torsion::error::{
    Cancelled, InvalidArgument, Panicked, SchedulerStopped, TaskFinished, TaskNotPaused,
    TaskStopped,
};
use torsion::task::{Cooperator, LoopingCall, defer_later, react_result, react_with, sleep};
use torsion::testing::collect_unhandled_failures;
use torsion::time::{Clock, ReactorTime};
use torsion::{Deferred, Failure};

fn take(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.borrow_mut())
}

fn result_of<T: 'static>(d: &mut Deferred<T>) -> Result<T, Failure> {
    d.take_result().expect("the Deferred has no result yet")
}

/// A LoopingCall on `clock` counting its calls.
fn counting(clock: &Clock) -> (LoopingCall<Clock>, Rc<Cell<u32>>) {
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    let lc = LoopingCall::new(clock.clone(), move || {
        c.set(c.get() + 1);
        Ok(())
    });
    (lc, calls)
}

// LoopingCall (CHECKLIST 35–37)

#[test]
fn looping_call_at_0_1_s_calls_three_times_with_now_and_twice_without() {
    for (now, expected) in [(true, 3), (false, 2)] {
        let clock = Clock::new();
        let (lc, calls) = counting(&clock);
        let mut done = lc.start(0.1, now).unwrap();
        clock.pump(&[0.05, 0.1, 0.1]);
        assert_eq!(calls.get(), expected, "now = {now}");
        assert_eq!(lc.call_count(), u64::from(expected));
        assert!(done.take_result().is_none());
        lc.stop();
        result_of(&mut done).unwrap();
        assert!(!lc.running());
        assert!(clock.delayed_calls().is_empty());
        clock.advance(1.0);
        assert_eq!(calls.get(), expected);
    }
}

#[test]
fn calls_are_aligned_to_interval_slots_and_missed_ones_are_skipped() {
    let clock = Clock::new();
    let times = log();
    let (t, c) = (times.clone(), clock.clone());
    let lc = LoopingCall::new(clock.clone(), move || {
        t.borrow_mut().push(c.now().to_string());
        Ok(())
    });
    let _done = lc.start(1, false).unwrap();
    clock.advance(3.5); // slots 1, 2 and 3 missed: one call, now
    clock.advance(0.4); // 3.9: nothing
    clock.advance(0.1); // 4: the next slot
    clock.advance(1.0); // 5
    assert_eq!(take(&times), ["3.5s", "4s", "5s"]);
    assert_eq!(
        clock.delayed_calls()[0].time,
        torsion::time::Time::from_secs_f64(6.0)
    );
    lc.stop();
}

#[test]
fn interval_accepts_a_duration_and_reports_it() {
    let clock = Clock::new();
    let (lc, calls) = counting(&clock);
    assert_eq!(lc.interval(), None);
    let _done = lc.start(Duration::from_millis(250), false).unwrap();
    assert_eq!(lc.interval(), Some(Duration::from_millis(250)));
    clock.pump(&[0.25, 0.25]);
    assert_eq!(calls.get(), 2);
    lc.stop();
}

#[test]
fn negative_or_nan_interval_is_rejected() {
    let clock = Clock::new();
    let (lc, calls) = counting(&clock);
    let err = lc.start(-1.0, true).unwrap_err();
    assert!(err.0.contains("got -1"), "{err}");
    assert!(lc.start(f64::NAN, true).is_err());
    assert!(lc.start(-1, true).is_err());
    assert!(!lc.running());
    assert_eq!(calls.get(), 0);
    assert!(clock.delayed_calls().is_empty());
}

#[test]
fn starting_a_running_loop_is_rejected() {
    let clock = Clock::new();
    let (lc, _calls) = counting(&clock);
    let _done = lc.start(1, false).unwrap();
    let err: InvalidArgument = lc.start(1, false).unwrap_err();
    assert!(err.0.contains("already running"), "{err}");
    lc.stop();
}

#[test]
fn stopping_before_the_first_run_means_no_calls() {
    let clock = Clock::new();
    let (lc, calls) = counting(&clock);
    let mut done = lc.start(0.1, false).unwrap();
    lc.stop();
    result_of(&mut done).unwrap();
    clock.advance(1.0);
    assert_eq!(calls.get(), 0);
    assert!(clock.delayed_calls().is_empty());
    lc.stop(); // stopping a stopped loop does nothing
}

#[test]
fn failing_function_errbacks_start_deferred_and_stops_the_loop() {
    let clock = Clock::new();
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    let lc = LoopingCall::new(clock.clone(), move || {
        c.set(c.get() + 1);
        if c.get() == 2 {
            Err(Failure::new(Boom))
        } else {
            Ok(())
        }
    });
    let mut done = lc.start(1, true).unwrap();
    clock.advance(1);
    assert!(result_of(&mut done).unwrap_err().check::<Boom>());
    assert!(!lc.running());
    assert!(clock.delayed_calls().is_empty());
    clock.advance(5);
    assert_eq!(calls.get(), 2);
}

#[test]
fn failing_deferred_of_the_function_errbacks_start_deferred() {
    let clock = Clock::new();
    let pending: Rc<RefCell<Option<torsion::Resolver<()>>>> = Rc::default();
    let p = pending.clone();
    let lc = LoopingCall::new(clock.clone(), move || {
        let (resolver, d) = Deferred::new();
        *p.borrow_mut() = Some(resolver);
        d
    });
    let mut done = lc.start(1, true).unwrap();
    assert!(done.take_result().is_none());
    let resolver = pending.borrow_mut().take().unwrap();
    resolver.errback(Boom);
    assert!(result_of(&mut done).unwrap_err().check::<Boom>());
    assert!(!lc.running());
    assert!(clock.delayed_calls().is_empty());
}

#[test]
fn panicking_function_errbacks_start_deferred() {
    let clock = Clock::new();
    let lc = LoopingCall::new(clock.clone(), || -> Result<(), Failure> {
        panic!("looped")
    });
    let mut done = lc.start(1, true).unwrap();
    let failure = result_of(&mut done).unwrap_err();
    assert_eq!(
        failure.downcast_ref::<Panicked>().unwrap().message,
        "looped"
    );
    assert!(!lc.running());
}

#[test]
fn with_count_reports_skipped_intervals() {
    let clock = Clock::new();
    let counts = Rc::new(RefCell::new(Vec::new()));
    let c = counts.clone();
    let lc = LoopingCall::with_count(clock.clone(), move |count| {
        c.borrow_mut().push(count);
        Ok(())
    });
    let _done = lc.start(0.1, true).unwrap();
    clock.advance(0.1);
    clock.advance(0.35); // t = 0.45: the calls due at 0.2, 0.3 and 0.4 collapse into one
    clock.advance(0.05); // t = 0.5
    assert_eq!(*counts.borrow(), [1, 1, 3, 1]);
    lc.stop();
}

#[test]
fn with_count_counts_three_after_an_advance_of_0_35_at_once() {
    let clock = Clock::new();
    let counts = Rc::new(RefCell::new(Vec::new()));
    let c = counts.clone();
    let lc = LoopingCall::with_count(clock.clone(), move |count| {
        c.borrow_mut().push(count);
        Ok(())
    });
    let _done = lc.start(0.1, true).unwrap();
    clock.advance(0.35);
    assert_eq!(*counts.borrow(), [1, 3]);
    lc.stop();
}

#[test]
fn with_count_is_always_one_with_interval_zero() {
    let clock = Clock::new();
    let counts = Rc::new(RefCell::new(Vec::new()));
    let slot: Rc<RefCell<Option<LoopingCall<Clock>>>> = Rc::default();
    let (c, s) = (counts.clone(), slot.clone());
    let lc = LoopingCall::with_count(clock.clone(), move |count| {
        c.borrow_mut().push(count);
        if c.borrow().len() == 3 {
            s.borrow().as_ref().unwrap().stop();
        }
        Ok(())
    });
    *slot.borrow_mut() = Some(lc.clone());
    let mut done = lc.start(0.0, true).unwrap();
    clock.advance(0.0);
    assert_eq!(*counts.borrow(), [1, 1, 1]);
    result_of(&mut done).unwrap();
    assert!(clock.delayed_calls().is_empty());
    slot.borrow_mut().take();
}

#[test]
fn a_returned_unfired_deferred_delays_the_next_call() {
    let clock = Clock::new();
    let times = log();
    let pending: Rc<RefCell<Option<torsion::Resolver<()>>>> = Rc::default();
    let (t, c, p) = (times.clone(), clock.clone(), pending.clone());
    let lc = LoopingCall::new(clock.clone(), move || {
        t.borrow_mut().push(c.now().to_string());
        let (resolver, d) = Deferred::new();
        *p.borrow_mut() = Some(resolver);
        d
    });
    let _done = lc.start(0.1, true).unwrap();
    clock.advance(0.25);
    assert_eq!(take(&times), ["0s"]);
    assert!(clock.delayed_calls().is_empty());
    pending.borrow_mut().take().unwrap().callback(());
    clock.advance(0.05); // the next slot after 0.25 is 0.3
    assert_eq!(take(&times), ["0.3s"]);
    pending.borrow_mut().take().unwrap().callback(());
    lc.stop();
}

#[test]
fn stop_while_the_functions_deferred_is_pending_fires_when_it_does() {
    let clock = Clock::new();
    let pending: Rc<RefCell<Option<torsion::Resolver<()>>>> = Rc::default();
    let p = pending.clone();
    let lc = LoopingCall::new(clock.clone(), move || {
        let (resolver, d) = Deferred::new();
        *p.borrow_mut() = Some(resolver);
        d
    });
    let mut done = lc.start(0.1, true).unwrap();
    lc.stop();
    assert!(!lc.running());
    assert!(done.take_result().is_none());
    pending.borrow_mut().take().unwrap().callback(());
    result_of(&mut done).unwrap();
    assert!(clock.delayed_calls().is_empty());
}

#[test]
fn the_function_can_stop_its_own_loop() {
    let clock = Clock::new();
    let slot: Rc<RefCell<Option<LoopingCall<Clock>>>> = Rc::default();
    let s = slot.clone();
    let lc = LoopingCall::new(clock.clone(), move || {
        let lc = s.borrow().clone().unwrap();
        if lc.call_count() == 3 {
            lc.stop();
        }
        Ok(())
    });
    *slot.borrow_mut() = Some(lc.clone());
    let mut done = lc.start(1, true).unwrap();
    clock.pump(&[1.0, 1.0, 1.0, 1.0]);
    result_of(&mut done).unwrap();
    assert_eq!(lc.call_count(), 3);
    assert!(clock.delayed_calls().is_empty());
    slot.borrow_mut().take();
}

#[test]
fn the_function_can_restart_its_own_loop() {
    let clock = Clock::new();
    let slot: Rc<RefCell<Option<LoopingCall<Clock>>>> = Rc::default();
    let second: Rc<RefCell<Option<Deferred<()>>>> = Rc::default();
    let times = log();
    let (s, sec, t, c) = (slot.clone(), second.clone(), times.clone(), clock.clone());
    let lc = LoopingCall::new(clock.clone(), move || {
        t.borrow_mut().push(c.now().to_string());
        let lc = s.borrow().clone().unwrap();
        if c.now().as_secs_f64() == 1.0 && sec.borrow().is_none() {
            lc.stop();
            *sec.borrow_mut() = Some(lc.start(0.5, true).unwrap());
        }
        Ok(())
    });
    *slot.borrow_mut() = Some(lc.clone());
    let mut first = lc.start(1, true).unwrap();
    clock.advance(1); // the restart's immediate call runs once the current call returns
    result_of(&mut first).unwrap();
    assert!(lc.running());
    clock.advance(0.5);
    assert_eq!(take(&times), ["0s", "1s", "1s", "1.5s"]);
    lc.stop();
    result_of(second.borrow_mut().as_mut().unwrap()).unwrap();
    assert!(clock.delayed_calls().is_empty());
    slot.borrow_mut().take();
}

#[test]
fn the_loop_can_be_restarted_after_stop() {
    let clock = Clock::new();
    let (lc, calls) = counting(&clock);
    let _first = lc.start(1, true).unwrap();
    lc.stop();
    clock.advance(0.5);
    let mut second = lc.start(1, false).unwrap();
    clock.advance(1.0);
    assert_eq!(calls.get(), 2);
    lc.stop();
    result_of(&mut second).unwrap();
}

#[test]
fn reset_restarts_the_interval_from_now() {
    let clock = Clock::new();
    let (lc, calls) = counting(&clock);
    let _done = lc.start(1, false).unwrap();
    clock.advance(0.5);
    lc.reset();
    clock.advance(0.9); // 1.4: the old slot at 1 is gone
    assert_eq!(calls.get(), 0);
    clock.advance(0.1); // 1.5
    assert_eq!(calls.get(), 1);
    clock.advance(1.0); // 2.5
    assert_eq!(calls.get(), 2);
    assert_eq!(clock.delayed_calls().len(), 1);
    lc.stop();
}

#[test]
fn cancelling_start_deferred_stops_the_loop() {
    let clock = Clock::new();
    let (lc, calls) = counting(&clock);
    let mut done = lc.start(1, true).unwrap();
    done.cancel();
    assert!(result_of(&mut done).unwrap_err().check::<Cancelled>());
    assert!(!lc.running());
    assert!(clock.delayed_calls().is_empty());
    clock.advance(2);
    assert_eq!(calls.get(), 1);
}

// defer_later (CHECKLIST 38)

#[test]
fn defer_later_fires_with_the_value_at_3_not_at_2_9() {
    let clock = Clock::new();
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let mut d = defer_later(&clock, 3, move || {
        r.set(true);
        Ok(42)
    });
    clock.advance(2.9);
    assert!(!ran.get());
    assert!(d.take_result().is_none());
    clock.advance(0.1);
    assert_eq!(result_of(&mut d).unwrap(), 42);
    assert!(clock.delayed_calls().is_empty());
}

#[test]
fn defer_later_errbacks_if_the_function_fails() {
    let clock = Clock::new();
    let mut d = defer_later(&clock, 1.5, || -> Result<u8, Failure> { Err(Boom.into()) });
    clock.advance(1.5);
    assert!(result_of(&mut d).unwrap_err().check::<Boom>());
}

#[test]
fn defer_later_follows_a_returned_deferred() {
    let clock = Clock::new();
    let (resolver, inner) = Deferred::<&str>::new();
    let mut d = defer_later(&clock, 1, move || inner);
    clock.advance(1);
    assert!(d.take_result().is_none());
    resolver.callback("later");
    assert_eq!(result_of(&mut d).unwrap(), "later");
}

#[test]
fn cancelling_defer_later_removes_the_timer_and_never_calls() {
    let clock = Clock::new();
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let mut d = defer_later(&clock, 3, move || {
        r.set(true);
        Ok(())
    });
    assert_eq!(clock.delayed_calls().len(), 1);
    d.cancel();
    assert!(result_of(&mut d).unwrap_err().check::<Cancelled>());
    assert!(clock.delayed_calls().is_empty());
    clock.advance(5);
    assert!(!ran.get());
}

#[test]
fn sleep_fires_after_the_delay() {
    let clock = Clock::new();
    let mut d = sleep(&clock, Duration::from_millis(500));
    clock.advance(0.4);
    assert!(d.take_result().is_none());
    clock.advance(0.1);
    result_of(&mut d).unwrap();
}

// Cooperator (CHECKLIST 40)

/// An iterator of `n` steps logging `name0`, `name1`, ….
fn logging(log: &Log, name: &'static str, n: usize) -> impl Iterator<Item = ()> + 'static {
    let log = log.clone();
    (0..n).map(move |i| log.borrow_mut().push(format!("{name}{i}")))
}

#[test]
fn cooperator_tasks_interleave_round_robin() {
    let clock = Clock::new();
    let coop = Cooperator::new(clock.clone());
    let seen = log();
    let a = coop.cooperate(logging(&seen, "a", 3)).unwrap();
    let b = coop.cooperate(logging(&seen, "b", 2)).unwrap();
    let c = coop.cooperate(logging(&seen, "c", 4)).unwrap();
    let mut done = [a.when_done(), b.when_done(), c.when_done()];
    assert!(take(&seen).is_empty()); // nothing runs before the first tick
    clock.advance(0);
    assert_eq!(
        take(&seen),
        ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "c2", "c3"]
    );
    for d in &mut done {
        result_of(d).unwrap();
    }
    assert!(clock.delayed_calls().is_empty());
}

#[test]
fn round_robin_order_is_the_same_one_step_per_tick() {
    let clock = Clock::new();
    let coop = Cooperator::new(clock.clone()).with_slice(Duration::ZERO);
    let seen = log();
    let _a = coop.cooperate(logging(&seen, "a", 2)).unwrap();
    let _b = coop.cooperate(logging(&seen, "b", 3)).unwrap();
    clock.advance(0);
    assert_eq!(take(&seen), ["a0", "b0", "a1", "b1", "b2"]);
    assert!(clock.delayed_calls().is_empty());
}

#[test]
fn pause_and_resume_are_counted() {
    let clock = Clock::new();
    let coop = Cooperator::new(clock.clone());
    let seen = log();
    let a = coop.cooperate(logging(&seen, "a", 2)).unwrap();
    let b = coop.cooperate(logging(&seen, "b", 2)).unwrap();
    a.pause().unwrap();
    a.pause().unwrap();
    clock.advance(0);
    assert_eq!(take(&seen), ["b0", "b1"]);
    assert!(b.is_finished());
    a.resume().unwrap();
    clock.advance(0);
    assert!(take(&seen).is_empty());
    assert!(clock.delayed_calls().is_empty());
    a.resume().unwrap();
    clock.advance(0);
    assert_eq!(take(&seen), ["a0", "a1"]);
    assert_eq!(a.resume(), Err(TaskNotPaused));
    assert!(matches!(a.pause(), Err(TaskFinished::Done)));
}

#[test]
fn stop_gives_task_stopped_to_when_done_and_a_second_stop_says_it_was_stopped() {
    let clock = Clock::new();
    let coop = Cooperator::new(clock.clone());
    let seen = log();
    let a = coop.cooperate(logging(&seen, "a", 3)).unwrap();
    let b = coop.cooperate(logging(&seen, "b", 2)).unwrap();
    let mut before = a.when_done();
    a.stop().unwrap();
    let mut after = a.when_done();
    assert!(result_of(&mut before).unwrap_err().check::<TaskStopped>());
    assert!(result_of(&mut after).unwrap_err().check::<TaskStopped>());
    // As Twisted's _checkFinish raises the completion state: TaskStopped, then TaskDone.
    assert!(matches!(a.stop(), Err(TaskFinished::Stopped)));
    assert!(matches!(a.pause(), Err(TaskFinished::Stopped)));
    clock.advance(0);
    assert_eq!(take(&seen), ["b0", "b1"]);
    let mut late = b.when_done(); // after it finished: already fired
    result_of(&mut late).unwrap();
    assert!(matches!(b.stop(), Err(TaskFinished::Done)));
}

#[test]
fn stopping_a_failed_task_reports_its_failure_not_task_done() {
    // Twisted's CooperativeTask._checkFinish raises TaskFailed for a task whose iterator
    // failed; here the failure itself comes with it.
    let clock = Clock::new();
    let coop = Cooperator::new(clock.clone());
    let failing = coop
        .cooperate((0..3).map(|i| {
            if i == 1 {
                Err(Failure::new(Boom))
            } else {
                Ok(())
            }
        }))
        .unwrap();
    let (resolver, gate) = Deferred::<()>::new();
    let waiting = coop.cooperate(std::iter::once(gate)).unwrap();
    let panicking = coop
        .cooperate(std::iter::once_with(|| -> () {
            panic!("iterator panicked")
        }))
        .unwrap();
    clock.advance(0);
    resolver.errback(Boom);

    for (task, name) in [(&failing, "Err"), (&waiting, "failed Deferred")] {
        match task.stop() {
            Err(TaskFinished::Failed(failure)) => assert!(failure.check::<Boom>(), "{failure}"),
            other => panic!("stop after a {name} gave {other:?}"),
        }
        match task.pause() {
            Err(TaskFinished::Failed(failure)) => assert!(failure.check::<Boom>(), "{failure}"),
            other => panic!("pause after a {name} gave {other:?}"),
        }
    }
    let stopped = panicking.stop().unwrap_err();
    assert!(
        matches!(&stopped, TaskFinished::Failed(f) if f.check::<Panicked>()),
        "{stopped:?}"
    );
    // The failure is the error's source, and its message says the task failed.
    let source = std::error::Error::source(&stopped).expect("the failure as the source");
    assert!(source.to_string().contains("iterator panicked"), "{source}");
    assert!(stopped.to_string().contains("failed"), "{stopped}");
    assert!(clock.delayed_calls().is_empty());
}

#[test]
fn stopping_a_task_of_a_stopped_cooperator_says_the_scheduler_stopped() {
    let clock = Clock::new();
    let coop = Cooperator::new(clock.clone());
    let seen = log();
    let task = coop.cooperate(logging(&seen, "a", 3)).unwrap();
    coop.stop();
    assert!(matches!(task.stop(), Err(TaskFinished::SchedulerStopped)));
    assert!(matches!(task.pause(), Err(TaskFinished::SchedulerStopped)));
}

#[test]
fn a_task_can_stop_itself_from_inside_its_iterator() {
    let clock = Clock::new();
    let coop = Cooperator::new(clock.clone());
    let me: Rc<RefCell<Option<torsion::task::CooperativeTask>>> = Rc::default();
    let (m, steps) = (me.clone(), Rc::new(Cell::new(0)));
    let s = steps.clone();
    let task = coop
        .cooperate(std::iter::repeat_with(move || {
            s.set(s.get() + 1);
            if s.get() == 3 {
                m.borrow().as_ref().unwrap().stop().unwrap();
            }
        }))
        .unwrap();
    *me.borrow_mut() = Some(task.clone());
    let mut done = task.when_done();
    clock.advance(0);
    assert_eq!(steps.get(), 3);
    assert!(result_of(&mut done).unwrap_err().check::<TaskStopped>());
    assert!(clock.delayed_calls().is_empty());
    me.borrow_mut().take();
}

#[test]
fn a_stopped_cooperator_stops_its_tasks_and_rejects_new_ones() {
    let clock = Clock::new();
    let coop = Cooperator::new(clock.clone());
    let seen = log();
    let a = coop.cooperate(logging(&seen, "a", 3)).unwrap();
    let paused = coop.cooperate(logging(&seen, "p", 3)).unwrap();
    paused.pause().unwrap();
    let (mut a_done, mut p_done) = (a.when_done(), paused.when_done());
    assert!(coop.running());
    coop.stop();
    assert!(!coop.running());
    assert!(
        result_of(&mut a_done)
            .unwrap_err()
            .check::<SchedulerStopped>()
    );
    assert!(
        result_of(&mut p_done)
            .unwrap_err()
            .check::<SchedulerStopped>()
    );
    assert!(clock.delayed_calls().is_empty());
    assert_eq!(
        coop.cooperate(logging(&seen, "c", 1)).unwrap_err(),
        SchedulerStopped
    );
    let mut coiterated = coop.coiterate(logging(&seen, "d", 1));
    assert!(
        result_of(&mut coiterated)
            .unwrap_err()
            .check::<SchedulerStopped>()
    );
    clock.advance(1);
    assert!(take(&seen).is_empty());
}

#[test]
fn a_deferred_item_pauses_only_that_task() {
    let clock = Clock::new();
    let coop = Cooperator::new(clock.clone());
    let seen = log();
    let (resolver, gate) = Deferred::<()>::new();
    let mut gate = Some(gate);
    let s = seen.clone();
    let a = coop
        .cooperate((0..4).map(move |i| -> Deferred<()> {
            s.borrow_mut().push(format!("a{i}"));
            match i {
                1 => gate.take().unwrap(),
                _ => Deferred::succeed(()), // already fired: no pause
            }
        }))
        .unwrap();
    let _b = coop.cooperate(logging(&seen, "b", 4)).unwrap();
    let mut done = a.when_done();
    clock.advance(0);
    assert_eq!(take(&seen), ["a0", "b0", "a1", "b1", "b2", "b3"]);
    assert!(done.take_result().is_none());
    assert!(clock.delayed_calls().is_empty());
    resolver.callback(());
    clock.advance(0);
    assert_eq!(take(&seen), ["a2", "a3"]);
    result_of(&mut done).unwrap();
}

#[test]
fn a_failing_item_or_deferred_item_fails_when_done() {
    let clock = Clock::new();
    let coop = Cooperator::new(clock.clone());
    let seen = log();
    let s = seen.clone();
    let failing = coop
        .cooperate((0..5).map(move |i| {
            s.borrow_mut().push(format!("f{i}"));
            if i == 1 {
                Err(Failure::new(Boom))
            } else {
                Ok(())
            }
        }))
        .unwrap();
    let (resolver, gate) = Deferred::<()>::new();
    let waiting = coop.cooperate(std::iter::once(gate)).unwrap();
    let mut failed = failing.when_done();
    let mut waited = waiting.when_done();
    clock.advance(0);
    assert_eq!(take(&seen), ["f0", "f1"]);
    assert!(result_of(&mut failed).unwrap_err().check::<Boom>());
    resolver.errback(Boom);
    assert!(result_of(&mut waited).unwrap_err().check::<Boom>());
    assert!(clock.delayed_calls().is_empty());
}

#[test]
fn a_panicking_iterator_fails_its_task_and_the_others_go_on() {
    let clock = Clock::new();
    let coop = Cooperator::new(clock.clone());
    let seen = log();
    let bad = coop
        .cooperate((0..3).map(|i| {
            if i == 1 {
                panic!("iterator panicked");
            }
        }))
        .unwrap();
    let _good = coop.cooperate(logging(&seen, "g", 3)).unwrap();
    let mut failed = bad.when_done();
    clock.advance(0);
    assert_eq!(take(&seen), ["g0", "g1", "g2"]);
    assert!(result_of(&mut failed).unwrap_err().check::<Panicked>());
}

#[test]
fn an_unobserved_task_failure_is_reported_as_unhandled() {
    let ((), unhandled) = collect_unhandled_failures(|| {
        let clock = Clock::new();
        let coop = Cooperator::new(clock.clone());
        let task = coop
            .cooperate(std::iter::once(Err(Failure::new(Boom))))
            .unwrap();
        clock.advance(0);
        assert!(task.is_finished());
    });
    assert_eq!(unhandled.len(), 1);
    assert!(unhandled[0].check::<Boom>());
}

// On a real reactor: react (CHECKLIST 39) and a Cooperator that does not starve timers.

reactor_test! {
    fn react_exits_0_when_main_succeeds(reactor: Reactor) {
        common::safety_stop(&reactor, 10.0);
        let code = react_with(reactor, |r| async move {
            sleep(&r, 0.01).await?;
            Ok(())
        });
        assert_eq!(code, ExitCode::SUCCESS);
    }

    fn react_exits_1_when_main_fails(reactor: Reactor) {
        common::safety_stop(&reactor, 10.0);
        let code = react_with(reactor, |r| async move {
            sleep(&r, 0.01).await?;
            Err(Failure::new(Boom))
        });
        assert_eq!(code, ExitCode::FAILURE);
    }

    fn react_result_is_mains_failure(reactor: Reactor) {
        common::safety_stop(&reactor, 10.0);
        let result = react_result(reactor, |_r| async move { Err(Failure::new(Boom)) });
        assert!(result.unwrap_err().check::<Boom>());
    }

    fn react_does_not_stop_a_reactor_main_already_stopped(reactor: Reactor) {
        common::safety_stop(&reactor, 10.0);
        let r = reactor.clone();
        let code = react_with(reactor, |main_reactor| async move {
            main_reactor.stop()?;
            Ok(())
        });
        assert_eq!(code, ExitCode::SUCCESS);
        assert!(!r.is_running());
    }

    fn react_when_the_reactor_stops_before_main_finishes_succeeds_as_in_twisted(reactor: Reactor) {
        common::safety_stop(&reactor, 10.0);
        let result = react_result(reactor, |r| async move {
            let stopper = r.clone();
            r.call_later(0.01, move || stopper.stop().unwrap());
            sleep(&r, 60.0).await?; // never reached: the reactor stops first
            Ok(())
        });
        assert!(result.is_ok(), "{result:?}");
    }

    fn react_returns_the_failure_the_reactor_was_stopped_with(reactor: Reactor) {
        common::safety_stop(&reactor, 10.0);
        let result = react_result(reactor, |r| async move {
            let stopper = r.clone();
            r.call_later(0.01, move || stopper.stop_with_failure(Failure::msg("no poems left")));
            sleep(&r, 60.0).await?;
            Ok(())
        });
        assert_eq!(result.unwrap_err().to_string(), "no poems left");
    }

    fn a_server_main_ending_with_until_shutdown_returns_as_the_reactor_stops(reactor: Reactor) {
        common::safety_stop(&reactor, 10.0);
        let returned = Rc::new(Cell::new(false));
        let ret = returned.clone();
        let result = react_result(reactor, move |r| async move {
            let stopper = r.clone();
            r.call_later(0.01, move || stopper.stop().unwrap());
            r.until_shutdown().await?;
            ret.set(true);
            Ok(())
        });
        assert!(result.is_ok(), "{result:?}");
        assert!(returned.get(), "main ran to its end");
    }

    fn cooperator_on_a_reactor_does_not_starve_a_timer(reactor: Reactor) {
        common::safety_stop(&reactor, 60.0);
        const ITEMS: u64 = 1_000_000;
        let consumed = Rc::new(Cell::new(0u64));
        let at_timer = Rc::new(Cell::new(None));
        let (c, t, r) = (consumed.clone(), at_timer.clone(), reactor.clone());
        reactor.call_when_running(move || {
            let coop = Cooperator::new(r.clone());
            let counter = c.clone();
            let task = coop.cooperate((0..ITEMS).map(move |_| counter.set(counter.get() + 1))).unwrap();
            r.call_later(0.01, move || t.set(Some(c.get())));
            let stopper = r.clone();
            drop(task.when_done().add_both(move |result| {
                stopper.stop().unwrap();
                result
            }));
        });
        reactor.run().unwrap();
        assert_eq!(consumed.get(), ITEMS);
        let at_timer = at_timer.get().expect("the timer never fired");
        assert!(at_timer < ITEMS, "the timer fired only after all {ITEMS} items");
    }
}
