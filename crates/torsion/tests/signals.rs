//! SIGTERM and SIGINT stop a reactor that installed its signal handlers. In a test binary of
//! their own, so no other test's reactor sees the signals.

use std::cell::RefCell;
use std::rc::Rc;

use rustix::process::{Signal, getpid, kill_process};
use torsion::Reactor;
use torsion::reactor::backend::BackendKind;
use torsion::reactor::{Phase, SystemEvent};

fn stops_gracefully_on(signal: Signal) {
    for kind in BackendKind::ALL {
        let reactor = Reactor::builder()
            .backend(kind)
            .install_signal_handlers(true)
            .build()
            .unwrap();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let s = seen.clone();
        reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move || {
            s.borrow_mut().push("shutdown triggers ran")
        });
        reactor.call_when_running(move || {
            kill_process(getpid(), signal).expect("cannot signal ourselves");
        });
        reactor.run().unwrap();
        assert_eq!(*seen.borrow(), vec!["shutdown triggers ran"], "{kind}");
    }
}

#[test]
fn sigterm_and_sigint_stop_the_reactor_gracefully() {
    stops_gracefully_on(Signal::TERM);
    stops_gracefully_on(Signal::INT);
}
