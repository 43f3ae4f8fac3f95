//! The in-memory pump behaves as a socket does where the transport rules say so: the same
//! protocol, run over a `Pump` and over TCP on loopback, sees the same events.

mod common;

use std::rc::Rc;

use common::{Log, listen_local, log, push};
use torsion::net::{Producer, Transport};
use torsion::prelude::*;
use torsion::testing::{AccumulatingProtocol, Pump};

/// Records what the transport asks of it.
struct Recorder(Log);

impl Producer for Recorder {
    fn resume_producing(&self) {
        push(&self.0, "resume");
    }
    fn pause_producing(&self) {
        push(&self.0, "pause");
    }
    fn stop_producing(&self) {
        push(&self.0, "stop");
    }
}

/// Registers a push producer and a pull producer in turn, greets, and hangs up.
struct Greeter {
    log: Log,
    streaming: bool,
    reactor: Option<Reactor>,
}

impl Protocol for Greeter {
    fn connection_made(&mut self, t: Transport) {
        t.register_producer(Rc::new(Recorder(self.log.clone())), self.streaming)
            .expect("first producer");
        push(&self.log, "registered");
        t.write(b"hi");
        if !self.streaming {
            t.unregister_producer();
        }
        t.lose_connection();
    }
    fn connection_lost(&mut self, _reason: Failure) {
        push(&self.log, "lost");
        if let Some(r) = &self.reactor {
            let _ = r.stop();
        }
    }
}

fn over_the_pump(streaming: bool) -> Vec<String> {
    let events = log();
    let server = Greeter {
        log: events.clone(),
        streaming,
        reactor: None,
    };
    let client = AccumulatingProtocol::new();
    let seen = client.state();
    let pump = Pump::new(Box::new(server), Box::new(client));
    pump.flush();
    assert_eq!(seen.data(), b"hi");
    assert!(seen.closed());
    events.borrow().clone()
}

fn over_tcp(reactor: Reactor, streaming: bool) -> Vec<String> {
    let events = log();
    let (e, r) = (events.clone(), reactor.clone());
    let (port, n) = listen_local(
        &reactor,
        Rc::new(move || Greeter {
            log: e.clone(),
            streaming,
            reactor: Some(r.clone()),
        }),
    );
    let client = std::thread::spawn(move || {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", n)).expect("connect");
        let mut all = Vec::new();
        s.read_to_end(&mut all).expect("read to the end");
        all
    });
    common::safety_stop(&reactor, 20.0);
    reactor.run().expect("run");
    let received = client.join().expect("client");
    drop(port);
    assert_eq!(received, b"hi");
    events.borrow().clone()
}

reactor_test! {
    fn an_unpaused_push_producer_does_not_hold_a_close_up_on_either(reactor: Reactor) {
        let pumped = over_the_pump(true);
        assert_eq!(pumped, ["registered", "stop", "lost"]);
        assert_eq!(over_tcp(reactor, true), pumped);
    }

    fn a_pull_producer_is_first_resumed_after_register_returns_on_either(reactor: Reactor) {
        let pumped = over_the_pump(false);
        // Unregistered before the first resume could run: it never runs, on either.
        assert_eq!(pumped, ["registered", "lost"]);
        assert_eq!(over_tcp(reactor, false), pumped);
    }
}
