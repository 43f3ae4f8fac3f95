//! Actions requested from inside a callback: what they cause runs after that callback
//! returns, through the reactor's one queue (`call_soon`), on every backend. Also stopping
//! with a failure, `stopper`, `Reactor::current`, and trigger ids that belong to one reactor.

mod common;

use common::listen_local;
use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::Duration;

use torsion::error::{ConnectionLost, InvalidArgument};
use torsion::net::Transport;
use torsion::protocol::Protocol;
use torsion::reactor::{Phase, SystemEvent};
use torsion::time::ReactorTime;
use torsion::{Deferred, Failure, Reactor, Resolver};

type Drain = Rc<RefCell<Option<Resolver<()>>>>;

/// Stops the reactor on its first bytes, and finishes the shutdown's drain on its second,
/// both from inside `data_received`.
struct Draining {
    reactor: Reactor,
    drain: Drain,
    reads: usize,
    lost: Rc<RefCell<Vec<Failure>>>,
}

impl Protocol for Draining {
    fn connection_made(&mut self, _transport: Transport) {}
    fn data_received(&mut self, _data: &[u8]) {
        self.reads += 1;
        if self.reads == 1 {
            let _ = self.reactor.stop();
        } else if let Some(drain) = self.drain.borrow_mut().take() {
            drain.callback(());
        }
    }
    fn connection_lost(&mut self, reason: Failure) {
        self.lost.borrow_mut().push(reason);
    }
}

reactor_test! {
    fn shutdown_continued_from_data_received_still_delivers_connection_lost(reactor: Reactor) {
        let drain: Drain = Rc::new(RefCell::new(None));
        let lost = Rc::new(RefCell::new(Vec::new()));
        let (r, d, l) = (reactor.clone(), drain.clone(), lost.clone());
        let (port, n) = listen_local(&reactor, Rc::new(move || Draining {
            reactor: r.clone(),
            drain: d.clone(),
            reads: 0,
            lost: l.clone(),
        }));
        let d = drain.clone();
        reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move || {
            let (resolver, wait) = Deferred::<()>::new();
            *d.borrow_mut() = Some(resolver);
            wait
        });
        let client = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", n)).expect("connect");
            s.write_all(b"stop").expect("write");
            std::thread::sleep(Duration::from_millis(150));
            s.write_all(b"drained").expect("write");
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
        });
        common::safety_stop(&reactor, 20.0);
        reactor.run().expect("run");
        client.join().expect("client thread");
        drop(port);
        let lost = lost.borrow();
        assert_eq!(lost.len(), 1, "connection_lost delivered once");
        assert!(lost[0].check::<ConnectionLost>(), "{}", lost[0]);
    }

    fn call_soon_runs_after_the_current_callback_in_order(reactor: Reactor) {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let (r, s) = (reactor.clone(), seen.clone());
        reactor.call_when_running(move || {
            let s1 = s.clone();
            r.call_soon(move || s1.borrow_mut().push("first"));
            let (s2, r2) = (s.clone(), r.clone());
            r.call_soon(move || {
                s2.borrow_mut().push("second");
                let s3 = s2.clone();
                r2.call_soon(move || s3.borrow_mut().push("queued by the second"));
            });
            s.borrow_mut().push("callback returns");
            let r3 = r.clone();
            r.call_later(0.01, move || {
                let _ = r3.stop();
            });
        });
        reactor.run().expect("run");
        assert_eq!(
            *seen.borrow(),
            vec!["callback returns", "first", "second", "queued by the second"]
        );
    }

    fn a_panic_in_queued_work_does_not_stop_the_queue(reactor: Reactor) {
        let ran = Rc::new(Cell::new(false));
        let (r, ran2) = (reactor.clone(), ran.clone());
        reactor.call_when_running(move || {
            r.call_soon(|| panic!("queued work blew up"));
            r.call_soon(move || ran2.set(true));
            let r2 = r.clone();
            r.call_soon(move || {
                let _ = r2.stop();
            });
        });
        reactor.run().expect("run");
        assert!(ran.get());
    }

    fn stop_with_failure_makes_run_return_it(reactor: Reactor) {
        let r = reactor.clone();
        reactor.call_later(0.0, move || r.stop_with_failure(Failure::msg("the server could not start")));
        let outcome = reactor.run();
        assert_eq!(outcome.expect_err("a failure").to_string(), "the server could not start");
    }

    fn stop_with_failure_before_run_stops_once_running(reactor: Reactor) {
        reactor.stop_with_failure(InvalidArgument("no port".into()));
        let outcome = reactor.run();
        assert!(outcome.expect_err("a failure").check::<InvalidArgument>());
    }

    fn the_first_failure_wins(reactor: Reactor) {
        let r = reactor.clone();
        reactor.call_later(0.0, move || {
            r.stop_with_failure(Failure::msg("first"));
            r.stop_with_failure(Failure::msg("second"));
        });
        assert_eq!(reactor.run().expect_err("a failure").to_string(), "first");
    }

    fn stopper_stops_plainly_on_success(reactor: Reactor) {
        let r = reactor.clone();
        reactor.call_when_running(move || {
            torsion::task::defer_later(&r, 0.01, || Ok(42)).add_both(r.stopper());
        });
        assert!(reactor.run().is_ok());
    }

    fn stopper_on_a_chain_done_before_run_stops_once_running(reactor: Reactor) {
        // A request that fails or succeeds at once, before `run`: run must still return.
        drop(Deferred::succeed(1).add_both(reactor.stopper()));
        common::safety_stop(&reactor, 10.0);
        assert!(reactor.run().is_ok());
        common::assert_not_timed_out();
    }

    fn stopper_returns_the_chain_s_failure_from_run(reactor: Reactor) {
        let r = reactor.clone();
        reactor.call_when_running(move || {
            Deferred::<u32>::fail(Failure::msg("gibberish")).add_both(r.stopper());
        });
        assert_eq!(reactor.run().expect_err("a failure").to_string(), "gibberish");
    }

    fn current_is_the_running_reactor(reactor: Reactor) {
        assert!(Reactor::current().is_none(), "no reactor runs before run");
        let same = Rc::new(Cell::new(false));
        let s = same.clone();
        reactor.call_later(0.0, move || {
            let current = Reactor::current().expect("a reactor runs");
            s.set(current.handle().is_reactor_thread());
            let _ = current.stop();
        });
        reactor.run().expect("run");
        assert!(same.get());
        assert!(Reactor::current().is_none(), "none after run");
    }

    fn removing_another_reactor_s_trigger_is_an_error(reactor: Reactor) {
        let other = Reactor::new().expect("reactor");
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        // The first trigger of each reactor: the same serial.
        let mine = reactor.add_system_event_trigger(Phase::After, SystemEvent::Startup, move || r.set(true));
        let theirs = other.add_system_event_trigger(Phase::After, SystemEvent::Startup, || ());
        assert!(reactor.remove_system_event_trigger(theirs).is_err());
        let r = reactor.clone();
        reactor.call_when_running(move || {
            let _ = r.stop();
        });
        reactor.run().expect("run");
        assert!(ran.get(), "this reactor's trigger was left in place");
        assert!(reactor.remove_system_event_trigger(mine).is_err(), "already ran");
    }
}

#[test]
fn work_that_queues_itself_again_lets_a_due_timer_run() {
    // Twisted's `def tick(): reactor.callLater(0, tick)` lets timers and I/O run between
    // ticks; call_soon work queued by call_soon work waits for the next pass.
    fn tick(r: Reactor, n: Rc<Cell<u64>>, timer_ran: Rc<Cell<bool>>) {
        n.set(n.get() + 1);
        if timer_ran.get() || n.get() >= 1_000_000 {
            let _ = r.stop();
            return;
        }
        let r2 = r.clone();
        r.call_soon(move || tick(r2, n, timer_ran));
    }
    let reactor = Reactor::new().expect("reactor");
    let n = Rc::new(Cell::new(0));
    let timer_ran = Rc::new(Cell::new(false));
    let t = timer_ran.clone();
    reactor.call_later(0.0, move || t.set(true));
    let (r, n2, t2) = (reactor.clone(), n.clone(), timer_ran.clone());
    reactor.call_when_running(move || {
        let r2 = r.clone();
        r.call_soon(move || tick(r2, n2, t2));
    });
    reactor.run().expect("run");
    assert!(
        timer_ran.get(),
        "the due timer never ran in {} ticks",
        n.get()
    );
    assert!(n.get() < 100, "took {} ticks", n.get());
}

#[test]
fn leftovers_are_released_outside_the_reactor_s_borrows() {
    // A trigger that never ran owns a value whose destructor uses the reactor's trigger list.
    struct UsesReactorOnDrop(Reactor, Rc<Cell<bool>>);
    impl Drop for UsesReactorOnDrop {
        fn drop(&mut self) {
            self.0
                .add_system_event_trigger(Phase::After, SystemEvent::Startup, || ());
            self.1.set(true);
        }
    }
    let dropped = Rc::new(Cell::new(false));
    let d = dropped.clone();
    torsion::testing::run_test(Duration::from_secs(5), move |reactor| async move {
        let owned = UsesReactorOnDrop(reactor.clone(), d);
        // Startup is over: this trigger never runs and is left for the release.
        reactor.add_system_event_trigger(Phase::Before, SystemEvent::Startup, move || {
            drop(owned);
        });
    });
    assert!(dropped.get(), "the destructor could not reach the reactor");
}
