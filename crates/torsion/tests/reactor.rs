//! Reactor core (CHECKLIST 41–45, Twisted's test_internet.py), timers and descriptors, on
//! every backend.

mod common;

use common::{log, push};
use std::cell::{Cell, RefCell};
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use torsion::error::{ConnectionDone, ReactorNotRestartable, ReactorNotRunning};
use torsion::reactor::{FileDescriptor, Phase, ReadDescriptor, SystemEvent, WriteDescriptor};
use torsion::threads::blocking_call_from_thread;
use torsion::time::ReactorTime;
use torsion::{Deferred, Failure, Reactor};

fn stop_soon(reactor: &Reactor) {
    let r = reactor.clone();
    reactor.call_when_running(move || {
        let r2 = r.clone();
        r.call_later(0.0, move || r2.stop().unwrap());
    });
}

reactor_test! {
    fn stop_when_not_running_is_reactor_not_running(reactor: Reactor) {
        assert_eq!(reactor.stop(), Err(ReactorNotRunning));
    }

    fn run_after_stop_is_reactor_not_restartable(reactor: Reactor) {
        stop_soon(&reactor);
        reactor.run().unwrap();
        assert_eq!(reactor.stop(), Err(ReactorNotRunning));
        let err = reactor.run().unwrap_err();
        assert!(err.check::<ReactorNotRestartable>());
    }

    fn stop_twice_is_reactor_not_running(reactor: Reactor) {
        let r = reactor.clone();
        let second = Rc::new(Cell::new(None));
        let s = second.clone();
        reactor.call_when_running(move || {
            r.stop().unwrap();
            s.set(Some(r.stop()));
        });
        reactor.run().unwrap();
        assert_eq!(second.get(), Some(Err(ReactorNotRunning)));
    }

    fn triggers_run_before_during_after_in_order_added(reactor: Reactor) {
        let seen = log();
        for event in [SystemEvent::Startup, SystemEvent::Shutdown] {
            for phase in [Phase::After, Phase::During, Phase::Before] {
                for n in 0..2 {
                    let s = seen.clone();
                    reactor.add_system_event_trigger(phase, event, move || {
                        push(&s, format!("{event:?} {phase:?} {n}"))
                    });
                }
            }
        }
        let s = seen.clone();
        reactor.call_when_running(move || push(&s, "running"));
        stop_soon(&reactor);
        reactor.run().unwrap();
        let expected: Vec<String> = [
            "Startup Before 0", "Startup Before 1", "Startup During 0", "Startup During 1",
            "Startup After 0", "Startup After 1", "running",
            "Shutdown Before 0", "Shutdown Before 1", "Shutdown During 0", "Shutdown During 1",
            "Shutdown After 0", "Shutdown After 1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(*seen.borrow(), expected);
    }

    fn before_shutdown_deferred_delays_during_and_after(reactor: Reactor) {
        let seen = log();
        let s = seen.clone();
        let r = reactor.clone();
        reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move || {
            push(&s, "before");
            let (resolver, d) = Deferred::<()>::new();
            let s2 = s.clone();
            r.call_later(0.05, move || {
                push(&s2, "fired");
                resolver.callback(());
            });
            d
        });
        let s = seen.clone();
        reactor.add_system_event_trigger(Phase::During, SystemEvent::Shutdown, move || {
            push(&s, "during")
        });
        let s = seen.clone();
        reactor.add_system_event_trigger(Phase::After, SystemEvent::Shutdown, move || {
            push(&s, "after")
        });
        stop_soon(&reactor);
        reactor.run().unwrap();
        assert_eq!(*seen.borrow(), vec!["before", "fired", "during", "after"]);
    }

    fn shutdown_goes_on_when_a_before_trigger_deferred_never_fires(reactor: Reactor) {
        let reactor = Reactor::builder()
            .backend(reactor.backend())
            .shutdown_timeout(std::time::Duration::from_millis(50))
            .build()
            .unwrap();
        let keep = Rc::new(RefCell::new(None));
        let k = keep.clone();
        reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move || {
            let (resolver, d) = Deferred::<()>::new();
            *k.borrow_mut() = Some(resolver);
            d
        });
        let after = Rc::new(Cell::new(false));
        let a = after.clone();
        reactor.add_system_event_trigger(Phase::After, SystemEvent::Shutdown, move || a.set(true));
        stop_soon(&reactor);
        reactor.run().unwrap();
        assert!(after.get());
    }

    fn failing_trigger_is_logged_and_others_still_run(reactor: Reactor) {
        let seen = log();
        reactor.add_system_event_trigger(Phase::Before, SystemEvent::Startup, || -> Result<(), Failure> {
            Err(Failure::msg("trigger failed"))
        });
        reactor.add_system_event_trigger(Phase::Before, SystemEvent::Startup, || -> () {
            panic!("trigger panicked")
        });
        let s = seen.clone();
        reactor.add_system_event_trigger(Phase::Before, SystemEvent::Startup, move || push(&s, "third"));
        let s = seen.clone();
        reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move || {
            Deferred::<()>::fail(Failure::msg("deferred failed"))
        });
        reactor.add_system_event_trigger(Phase::After, SystemEvent::Shutdown, move || push(&s, "after shutdown"));
        stop_soon(&reactor);
        reactor.run().unwrap();
        assert_eq!(*seen.borrow(), vec!["third", "after shutdown"]);
    }

    fn removed_trigger_does_not_run(reactor: Reactor) {
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        let id = reactor.add_system_event_trigger(Phase::During, SystemEvent::Startup, move || r.set(true));
        assert!(reactor.remove_system_event_trigger(id).is_ok());
        assert!(reactor.remove_system_event_trigger(id).is_err());
        stop_soon(&reactor);
        reactor.run().unwrap();
        assert!(!ran.get());
    }

    fn call_when_running_while_running_runs_at_once(reactor: Reactor) {
        let seen = log();
        let r = reactor.clone();
        let s = seen.clone();
        reactor.call_when_running(move || {
            let s2 = s.clone();
            assert!(r.call_when_running(move || push(&s2, "inner")).is_none());
            push(&s, "outer");
            r.stop().unwrap();
        });
        reactor.run().unwrap();
        assert_eq!(*seen.borrow(), vec!["inner", "outer"]);
    }

    fn call_later_fires_in_deadline_order_and_zero_delay_after_current_calls(reactor: Reactor) {
        let seen = log();
        for (delay, name) in [(0.03, "c"), (0.01, "a"), (0.02, "b"), (0.02, "b2")] {
            let s = seen.clone();
            reactor.call_later(delay, move || push(&s, name));
        }
        let s = seen.clone();
        let r = reactor.clone();
        reactor.call_later(0.0, move || {
            let s2 = s.clone();
            r.call_later(0.0, move || push(&s2, "zero inside zero"));
            push(&s, "zero");
        });
        let r = reactor.clone();
        reactor.call_later(0.05, move || r.stop().unwrap());
        reactor.run().unwrap();
        assert_eq!(*seen.borrow(), vec!["zero", "zero inside zero", "a", "b", "b2", "c"]);
    }

    fn cancel_delayed_call_from_its_own_callback_is_already_called(reactor: Reactor) {
        let slot: Rc<RefCell<Option<torsion::time::DelayedCall>>> = Rc::new(RefCell::new(None));
        let s = slot.clone();
        let result = Rc::new(Cell::new(None));
        let res = result.clone();
        let r = reactor.clone();
        let call = reactor.call_later(0.0, move || {
            res.set(Some(s.borrow().as_ref().unwrap().cancel()));
            r.stop().unwrap();
        });
        *slot.borrow_mut() = Some(call);
        reactor.run().unwrap();
        assert_eq!(result.get(), Some(Err(torsion::error::DelayedCallError::AlreadyCalled)));
    }

    fn cancelled_call_never_runs(reactor: Reactor) {
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        let call = reactor.call_later(0.01, move || r.set(true));
        call.cancel().unwrap();
        let r = reactor.clone();
        reactor.call_later(0.03, move || r.stop().unwrap());
        reactor.run().unwrap();
        assert!(!ran.get());
    }

    fn panicking_delayed_call_is_logged_and_the_loop_keeps_running(reactor: Reactor) {
        reactor.call_later(0.0, || panic!("delayed call panicked"));
        let after = Rc::new(Cell::new(false));
        let a = after.clone();
        let r = reactor.clone();
        reactor.call_later(0.01, move || {
            a.set(true);
            r.stop().unwrap();
        });
        reactor.run().unwrap();
        assert!(after.get());
    }

    fn call_from_thread_runs_in_order_once_the_reactor_runs(reactor: Reactor) {
        let handle = reactor.handle();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        for i in 0..5 {
            let s = seen.clone();
            handle.call_from_thread(move |_| s.lock().unwrap().push(i));
        }
        assert!(seen.lock().unwrap().is_empty());
        handle.stop();
        reactor.run().unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    }

    fn call_from_thread_8_threads_10000_each_arrive_in_per_thread_order(reactor: Reactor) {
        const THREADS: usize = 8;
        const CALLS: usize = 10_000;
        let next: Rc<RefCell<Vec<usize>>> = Rc::new(RefCell::new(vec![0; THREADS]));
        let total = Rc::new(Cell::new(0));
        let handle = reactor.handle();
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let handle = handle.clone();
                std::thread::spawn(move || {
                    for i in 0..CALLS {
                        handle.call_from_thread(move |reactor| {
                            ORDER.with(|o| o.borrow_mut().push((t, i)));
                            if ORDER.with(|o| o.borrow().len()) == THREADS * CALLS {
                                reactor.stop().unwrap();
                            }
                        });
                    }
                })
            })
            .collect();
        thread_local! {
            static ORDER: RefCell<Vec<(usize, usize)>> = const { RefCell::new(Vec::new()) };
        }
        ORDER.with(|o| o.borrow_mut().clear());
        common::safety_stop(&reactor, 60.0);
        reactor.run().unwrap();
        for w in workers {
            w.join().unwrap();
        }
        ORDER.with(|o| {
            for &(t, i) in o.borrow().iter() {
                assert_eq!(next.borrow()[t], i, "thread {t} out of order");
                next.borrow_mut()[t] += 1;
                total.set(total.get() + 1);
            }
        });
        assert_eq!(total.get(), THREADS * CALLS);
    }

    fn nested_call_from_thread_does_not_starve_timers(reactor: Reactor) {
        // Each call queues another: the timer must still get its turn.
        fn again(handle: torsion::ReactorHandle, count: Arc<AtomicUsize>) {
            let h = handle.clone();
            handle.call_from_thread(move |_| {
                count.fetch_add(1, Ordering::Relaxed);
                again(h, count);
            });
        }
        let count = Arc::new(AtomicUsize::new(0));
        again(reactor.handle(), count.clone());
        let r = reactor.clone();
        reactor.call_later(0.02, move || r.stop().unwrap());
        reactor.run().unwrap();
        assert!(count.load(Ordering::Relaxed) > 1);
    }

    fn defer_to_thread_fires_on_the_reactor_thread(reactor: Reactor) {
        let reactor_thread = std::thread::current().id();
        let got = Rc::new(Cell::new(None));
        let g = got.clone();
        let r = reactor.clone();
        reactor.call_when_running(move || {
            let r2 = r.clone();
            drop(r.defer_to_thread(move || {
                assert_ne!(std::thread::current().id(), reactor_thread);
                21 * 2
            })
            .map(move |v| {
                assert_eq!(std::thread::current().id(), reactor_thread);
                g.set(Some(v));
                r2.stop().unwrap();
            }));
        });
        reactor.run().unwrap();
        assert_eq!(got.get(), Some(42));
        assert!(reactor.leftovers().is_empty(), "{:?}", reactor.leftovers());
    }

    fn defer_to_thread_panic_becomes_a_failure_and_the_pool_survives(reactor: Reactor) {
        let seen = log();
        let r = reactor.clone();
        let s = seen.clone();
        reactor.call_when_running(move || {
            r.suggest_thread_pool_size(1);
            let s1 = s.clone();
            drop(r.defer_to_thread(|| -> u32 { panic!("in a thread") }).add_callbacks(
                |_| Ok(()),
                move |f| {
                    assert!(f.check::<torsion::error::Panicked>());
                    push(&s1, "failed");
                    Ok(())
                },
            ));
            let r2 = r.clone();
            let s2 = s.clone();
            drop(r.defer_to_thread(|| 5).map(move |v| {
                push(&s2, format!("then {v}"));
                r2.stop().unwrap();
            }));
        });
        reactor.run().unwrap();
        assert_eq!(*seen.borrow(), vec!["failed", "then 5"]);
    }

    fn blocking_call_from_thread_waits_for_the_deferred(reactor: Reactor) {
        let handle = reactor.handle();
        let worker = std::thread::spawn(move || {
            let value: u32 = blocking_call_from_thread(&handle, |reactor| {
                let (resolver, d) = Deferred::new();
                reactor.call_later(0.01, move || resolver.callback(7u32));
                d
            })
            .unwrap();
            let failed = blocking_call_from_thread(&handle, |_| -> Result<u32, Failure> {
                Err(Failure::msg("no"))
            });
            handle.stop();
            (value, failed.is_err())
        });
        common::safety_stop(&reactor, 30.0);
        reactor.run().unwrap();
        assert_eq!(worker.join().unwrap(), (7, true));
    }

    fn blocking_call_after_the_reactor_finished_is_reactor_shut_down(reactor: Reactor) {
        stop_soon(&reactor);
        reactor.run().unwrap();
        let handle = reactor.handle();
        let result = std::thread::spawn(move || {
            blocking_call_from_thread(&handle, |_| Ok(1u32))
        })
        .join()
        .unwrap();
        assert!(result.unwrap_err().check::<torsion::error::ReactorShutDown>());
    }

    fn spawned_future_is_resumed_by_a_timer(reactor: Reactor) {
        let r = reactor.clone();
        let d = torsion::spawn(async move {
            let (resolver, tick) = Deferred::<u32>::new();
            r.call_later(0.01, move || resolver.callback(3));
            let v = tick.await?;
            r.stop().unwrap();
            Ok(v * 2)
        });
        reactor.run().unwrap();
        let mut d = d;
        assert_eq!(d.take_result().unwrap().unwrap(), 6);
    }

    fn reader_gets_data_then_connection_done_on_eof(reactor: Reactor) {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let socket = Rc::new(PoetrySocket {
            stream: ours,
            poem: RefCell::new(Vec::new()),
            lost: RefCell::new(None),
            reactor: reactor.clone(),
        });
        reactor.add_reader(socket.clone()).unwrap();
        assert_eq!(reactor.readers(), vec![socket.fileno()]);
        let writer = std::thread::spawn(move || {
            for line in ["roses are red\n", "violets are blue\n"] {
                theirs.write_all(line.as_bytes()).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
        common::safety_stop(&reactor, 30.0);
        reactor.run().unwrap();
        writer.join().unwrap();
        assert_eq!(&*socket.poem.borrow(), b"roses are red\nviolets are blue\n");
        assert!(socket.lost.borrow().as_ref().unwrap().check::<ConnectionDone>());
        assert!(reactor.readers().is_empty());
    }

    fn writer_is_called_while_writable_and_removes_itself(reactor: Reactor) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let w = Rc::new(OneShotWriter { stream: ours, reactor: reactor.clone(), writes: Cell::new(0) });
        reactor.add_writer(w.clone()).unwrap();
        assert_eq!(reactor.writers(), vec![w.fileno()]);
        common::safety_stop(&reactor, 30.0);
        reactor.run().unwrap();
        assert_eq!(w.writes.get(), 1);
        let mut buf = [0u8; 5];
        use std::io::Read;
        (&theirs).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
    }

    fn shutdown_disconnects_registered_descriptors_with_connection_lost(reactor: Reactor) {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let socket = Rc::new(PoetrySocket {
            stream: ours,
            poem: RefCell::new(Vec::new()),
            lost: RefCell::new(None),
            reactor: reactor.clone(),
        });
        reactor.add_reader(socket.clone()).unwrap();
        stop_soon(&reactor);
        reactor.run().unwrap();
        assert!(socket.lost.borrow().as_ref().unwrap().check::<torsion::error::ConnectionLost>());
    }

    fn leftovers_name_pending_calls(reactor: Reactor) {
        let call = reactor.call_later(100.0, || {});
        let left = reactor.leftovers();
        assert_eq!(left.len(), 1);
        assert!(left[0].contains("reactor.rs"), "{left:?}");
        call.cancel().unwrap();
        assert!(reactor.leftovers().is_empty());
    }
}

/// The tutorials' PoetrySocket: reads a poem from a socket through `add_reader`.
struct PoetrySocket {
    stream: UnixStream,
    poem: RefCell<Vec<u8>>,
    lost: RefCell<Option<Failure>>,
    reactor: Reactor,
}

impl FileDescriptor for PoetrySocket {
    fn fileno(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
    fn connection_lost(&self, reason: Failure) {
        *self.lost.borrow_mut() = Some(reason);
        let r = self.reactor.clone();
        if r.is_running() {
            r.stop().unwrap();
        }
    }
}

impl ReadDescriptor for PoetrySocket {
    fn do_read(&self) -> Result<(), Failure> {
        use std::io::Read;
        let mut buf = [0u8; 1024];
        loop {
            match (&self.stream).read(&mut buf) {
                Ok(0) => return Err(ConnectionDone.into()),
                Ok(n) => self.poem.borrow_mut().extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

struct OneShotWriter {
    stream: UnixStream,
    reactor: Reactor,
    writes: Cell<u32>,
}

impl FileDescriptor for OneShotWriter {
    fn fileno(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
    fn connection_lost(&self, _reason: Failure) {}
}

impl WriteDescriptor for OneShotWriter {
    fn do_write(&self) -> Result<(), Failure> {
        (&self.stream).write_all(b"hello")?;
        self.writes.set(self.writes.get() + 1);
        self.reactor.remove_writer(self.fileno());
        let r = self.reactor.clone();
        self.reactor.call_later(0.01, move || r.stop().unwrap());
        Ok(())
    }
}
