//! Policies (Twisted's `twisted.protocols.policies`, test_policies.py): idle timeouts
//! (CHECKLIST 69), connection limits (CHECKLIST 70), wrapping and throttling factories; with
//! a `Clock` and string transports, and over real TCP on every backend.

mod common;

use common::listen_local;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use torsion::error::ConnectionDone;
use torsion::net::{Address, Producer, Transport, TransportOps};
use torsion::protocol::{Factory, Protocol};
use torsion::protocols::policies::{
    LimitTotalConnectionsFactory, ThrottleLimits, ThrottlingFactory, Timeout, TimeoutFactory,
    WrapperHooks, WrappingFactory, WrappingTransport,
};
use torsion::task::sleep;
use torsion::testing::{
    AccumulatingProtocol, AccumulatorState, ProducerState, StringTransport, default_peer_address,
};
use torsion::time::{Clock, ReactorTime};
use torsion::{Failure, Reactor, spawn};

type States = Rc<RefCell<Vec<Rc<AccumulatorState>>>>;

/// A factory of [`AccumulatingProtocol`]s that keeps each one's state.
fn accumulating() -> (impl Fn() -> AccumulatingProtocol + 'static, States) {
    let states: States = Rc::new(RefCell::new(Vec::new()));
    let keep = states.clone();
    let make = move || {
        let protocol = AccumulatingProtocol::new();
        keep.borrow_mut().push(protocol.state());
        protocol
    };
    (make, states)
}

fn done() -> Failure {
    ConnectionDone.into()
}

// ===== CHECKLIST 69: Timeout (TimeoutMixin) =====

/// A protocol with an idle timeout, as a Twisted protocol mixing in `TimeoutMixin`.
struct Idle {
    timeout: Timeout,
    period: f64,
}

impl Idle {
    fn new(clock: &Clock, period: f64) -> Idle {
        Idle {
            timeout: Timeout::new(clock),
            period,
        }
    }
}

impl Protocol for Idle {
    fn connection_made(&mut self, transport: Transport) {
        self.timeout.attach(&transport);
        self.timeout.set_timeout(self.period);
    }
    fn data_received(&mut self, _data: &[u8]) {
        self.timeout.reset_timeout();
    }
}

#[test]
fn a_timeout_of_3s_has_not_fired_at_2_5s_and_has_at_3_5s() {
    let clock = Clock::new();
    let mut protocol = Idle::new(&clock, 3.0);
    let transport = StringTransport::new();
    protocol.connection_made(transport.clone());
    assert!(protocol.timeout.is_pending());

    clock.advance(2.5);
    assert!(!transport.disconnecting(), "no timeout at 2.5 s");
    clock.advance(1.0);
    assert!(transport.disconnecting(), "timeout at 3.5 s");
    assert!(!protocol.timeout.is_pending());
    // The period stays set after firing, as Twisted's `timeOut`.
    assert_eq!(protocol.timeout.timeout(), Some(Duration::from_secs(3)));
    assert!(clock.delayed_calls().is_empty());
}

#[test]
fn received_data_resets_the_timeout() {
    let clock = Clock::new();
    let mut protocol = Idle::new(&clock, 3.0);
    let transport = StringTransport::new();
    protocol.connection_made(transport.clone());

    clock.advance(2.0);
    protocol.data_received(b"hello");
    clock.advance(2.5); // 4.5 s since the start, 2.5 s since the data
    assert!(!transport.disconnecting());
    protocol.data_received(b"again");
    clock.advance(2.9);
    assert!(!transport.disconnecting());
    clock.advance(0.2);
    assert!(transport.disconnecting());
}

#[test]
fn clearing_the_timeout_returns_the_previous_value() {
    let clock = Clock::new();
    let mut protocol = Idle::new(&clock, 3.0);
    let transport = StringTransport::new();
    assert_eq!(protocol.timeout.set_timeout(None), None, "nothing set yet");
    protocol.connection_made(transport.clone());

    assert_eq!(
        protocol.timeout.set_timeout(None),
        Some(Duration::from_secs(3))
    );
    assert_eq!(protocol.timeout.timeout(), None);
    assert!(
        clock.delayed_calls().is_empty(),
        "clearing cancels the call"
    );
    clock.advance(10.0);
    assert!(!transport.disconnecting());

    // Setting again returns the previous value (None) and starts a new countdown; changing
    // the period of a running countdown restarts it from now.
    assert_eq!(protocol.timeout.set_timeout(5.0), None);
    clock.advance(4.0);
    assert_eq!(
        protocol.timeout.set_timeout(Duration::from_secs(2)),
        Some(Duration::from_secs(5))
    );
    clock.advance(1.5);
    assert!(!transport.disconnecting());
    clock.advance(0.5);
    assert!(transport.disconnecting());
}

#[test]
fn cancel_timeout_forgets_the_period_and_reset_then_does_nothing() {
    let clock = Clock::new();
    let timeout = Timeout::new(&clock);
    let fired = Rc::new(Cell::new(0));
    let count = fired.clone();
    timeout.on_timeout(move || count.set(count.get() + 1));
    timeout.set_timeout(1);
    timeout.cancel_timeout();
    assert_eq!(timeout.timeout(), None);
    timeout.reset_timeout();
    clock.advance(5.0);
    assert_eq!(fired.get(), 0);
    assert!(clock.delayed_calls().is_empty());
}

#[test]
fn a_timeout_callback_replaces_closing_and_may_set_the_timeout_again() {
    let clock = Clock::new();
    let transport = StringTransport::new();
    let timeout = Rc::new(Timeout::new(&clock));
    let t: Transport = transport.clone();
    timeout.attach(&t);
    let fired = Rc::new(Cell::new(0));
    let (count, again) = (fired.clone(), Rc::downgrade(&timeout));
    timeout.on_timeout(move || {
        count.set(count.get() + 1);
        if count.get() == 1
            && let Some(timeout) = again.upgrade()
        {
            // Twisted's idiom: send a keep-alive and wait once more.
            timeout.set_timeout(1.0);
        }
    });
    timeout.set_timeout(1.0);
    clock.advance(1.0);
    assert_eq!(fired.get(), 1);
    assert!(timeout.is_pending(), "the callback set it again");
    clock.advance(1.0);
    assert_eq!(fired.get(), 2);
    assert!(
        !transport.disconnecting(),
        "the callback replaced lose_connection"
    );
}

#[test]
fn dropping_the_protocol_cancels_its_timeout() {
    let clock = Clock::new();
    let mut protocol = Idle::new(&clock, 3.0);
    protocol.connection_made(StringTransport::new());
    assert_eq!(clock.delayed_calls().len(), 1);
    drop(protocol);
    assert!(clock.delayed_calls().is_empty());
}

#[test]
fn timeout_factory_closes_idle_connections_and_traffic_both_ways_resets_it() {
    let clock = Clock::new();
    let (make, states) = accumulating();
    let factory = TimeoutFactory::new(&clock, Rc::new(make), Duration::from_secs(3));
    let mut protocol = factory
        .clone()
        .build_protocol(&default_peer_address())
        .unwrap();
    let transport = StringTransport::new();
    protocol.connection_made(transport.clone());

    clock.advance(2.0);
    protocol.data_received(b"in");
    clock.advance(2.0);
    // The wrapped protocol writes through its (wrapping) transport: that resets it too.
    states.borrow()[0].transport().unwrap().write(b"out");
    clock.advance(2.0);
    assert!(!transport.disconnecting());
    assert_eq!(transport.value(), b"out");
    clock.advance(1.5);
    assert!(transport.disconnecting());

    protocol.connection_lost(done());
    assert!(states.borrow()[0].closed());
    assert!(factory.connections().is_empty());
    assert!(clock.delayed_calls().is_empty());
}

#[test]
fn timeout_factory_leaves_no_timer_behind_a_closed_connection() {
    let clock = Clock::new();
    let factory = TimeoutFactory::new(
        &clock,
        Rc::new(AccumulatingProtocol::new),
        Duration::from_secs(60),
    );
    let mut protocol = factory
        .clone()
        .build_protocol(&default_peer_address())
        .unwrap();
    protocol.connection_made(StringTransport::new());
    assert_eq!(clock.delayed_calls().len(), 1);
    protocol.connection_lost(done());
    assert!(clock.delayed_calls().is_empty());
}

// ===== CHECKLIST 70: LimitTotalConnectionsFactory =====

#[test]
fn limit_total_connections_refuses_over_the_limit_and_counts_down_on_close() {
    let (make, states) = accumulating();
    let factory = LimitTotalConnectionsFactory::new(Rc::new(make), Some(2));
    let addr = default_peer_address();
    assert_eq!(factory.connection_limit(), Some(2));

    let mut first = factory.clone().build_protocol(&addr).unwrap();
    first.connection_made(StringTransport::new());
    let mut second = factory.clone().build_protocol(&addr).unwrap();
    second.connection_made(StringTransport::new());
    assert_eq!(factory.connection_count(), 2);

    assert!(
        factory.clone().build_protocol(&addr).is_none(),
        "over the limit"
    );
    assert_eq!(factory.connection_count(), 2);
    assert_eq!(
        states.borrow().len(),
        2,
        "the wrapped factory was not asked"
    );

    first.connection_lost(done());
    assert_eq!(factory.connection_count(), 1);
    let mut third = factory.clone().build_protocol(&addr).unwrap();
    third.connection_made(StringTransport::new());
    assert_eq!(factory.connection_count(), 2);
    assert_eq!(factory.connections().len(), 2);

    second.connection_lost(done());
    third.connection_lost(done());
    assert_eq!(factory.connection_count(), 0);
    assert!(states.borrow().iter().all(|s| s.closed()));
}

/// Tells the client to come back later.
struct Busy;

impl Protocol for Busy {
    fn connection_made(&mut self, transport: Transport) {
        transport.write(b"busy\r\n");
        transport.lose_connection();
    }
}

#[test]
fn limit_total_connections_serves_the_overflow_with_the_overflow_protocol() {
    let (make, states) = accumulating();
    let factory = LimitTotalConnectionsFactory::new(Rc::new(make), Some(1));
    factory.set_overflow_protocol(|| Busy);
    let addr = default_peer_address();

    let mut normal = factory.clone().build_protocol(&addr).unwrap();
    let normal_transport = StringTransport::new();
    normal.connection_made(normal_transport.clone());
    let mut overflow = factory.clone().build_protocol(&addr).unwrap();
    let overflow_transport = StringTransport::new();
    overflow.connection_made(overflow_transport.clone());

    assert_eq!(states.borrow().len(), 1);
    assert_eq!(normal_transport.value(), b"");
    assert_eq!(overflow_transport.value(), b"busy\r\n");
    assert!(overflow_transport.disconnecting());
    assert_eq!(
        factory.connection_count(),
        2,
        "overflow connections count too"
    );

    overflow.connection_lost(done());
    assert_eq!(factory.connection_count(), 1);
    factory.clear_overflow_protocol();
    assert!(factory.clone().build_protocol(&addr).is_none());
    normal.connection_lost(done());
    assert_eq!(factory.connection_count(), 0);
}

#[test]
fn limit_total_connections_without_a_limit_takes_everyone_and_a_refusal_by_the_wrapped_factory_is_not_counted()
 {
    let factory = LimitTotalConnectionsFactory::new(Rc::new(AccumulatingProtocol::new), None);
    let addr = default_peer_address();
    let built: Vec<_> = (0..50)
        .map(|_| factory.clone().build_protocol(&addr).unwrap())
        .collect();
    assert_eq!(factory.connection_count(), 50);
    // A protocol built but dropped without a connection counts down too.
    drop(built);
    assert_eq!(factory.connection_count(), 0);

    struct Refusing;
    impl Factory for Refusing {
        fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
            None
        }
    }
    let factory = LimitTotalConnectionsFactory::new(Rc::new(Refusing), Some(3));
    assert!(factory.clone().build_protocol(&addr).is_none());
    assert_eq!(factory.connection_count(), 0);
}

// ===== WrappingFactory =====

/// Records what a policy sees.
#[derive(Default)]
struct Spy {
    log: RefCell<Vec<String>>,
}

struct SpyHooks(Rc<Spy>);

impl WrapperHooks for SpyHooks {
    fn connection_made(&self, transport: &Rc<WrappingTransport>) {
        self.0
            .log
            .borrow_mut()
            .push(format!("made {}", transport.peer()));
    }
    fn data_received(&self, _transport: &Rc<WrappingTransport>, data: &[u8]) {
        self.0
            .log
            .borrow_mut()
            .push(format!("read {}", String::from_utf8_lossy(data)));
    }
    fn connection_lost(&self, _reason: &Failure) {
        self.0.log.borrow_mut().push("lost".into());
    }
    fn write(&self, transport: &Transport, data: &[u8]) {
        self.0
            .log
            .borrow_mut()
            .push(format!("write {}", String::from_utf8_lossy(data)));
        // A policy may change what reaches the real transport.
        transport.write(&data.to_ascii_uppercase());
    }
    fn lose_connection(&self, transport: &Transport) {
        self.0.log.borrow_mut().push("lose".into());
        transport.lose_connection();
    }
}

#[test]
fn wrapping_factory_passes_every_event_through_its_hooks_and_tracks_connections() {
    let (make, states) = accumulating();
    let spy = Rc::new(Spy::default());
    let hooks = spy.clone();
    let factory = WrappingFactory::with_hooks(Rc::new(make), move |_| SpyHooks(hooks.clone()));
    let mut protocol = factory
        .clone()
        .build_protocol(&default_peer_address())
        .unwrap();
    assert_eq!(factory.connection_count(), 0, "registered once connected");
    let transport = StringTransport::new();
    protocol.connection_made(transport.clone());
    assert_eq!(factory.connection_count(), 1);
    let live = factory.connections();
    let real: Transport = transport.clone();
    assert!(Rc::ptr_eq(live[0].transport(), &real));

    protocol.data_received(b"ping");
    let state = states.borrow()[0].clone();
    assert_eq!(state.data(), b"ping");
    let seen = state.transport().unwrap();
    seen.write(b"pong");
    seen.write_sequence(&[b"a", b"b"]); // passed on as a sequence: not through `write`
    seen.lose_connection();
    assert_eq!(transport.value(), b"PONGab");
    assert!(transport.disconnecting());
    assert!(live[0].disconnecting());
    assert_eq!(seen.peer(), transport.peer());
    assert_eq!(seen.host(), transport.host());

    protocol.connection_lost(done());
    assert!(state.closed());
    assert_eq!(factory.connection_count(), 0);
    assert_eq!(
        *spy.log.borrow(),
        [
            "made tcp:192.168.1.1:54321",
            "read ping",
            "write pong",
            "lose",
            "lost"
        ]
    );
}

#[test]
fn wrapping_factory_refuses_when_the_wrapped_factory_does() {
    struct Refusing;
    impl Factory for Refusing {
        fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
            None
        }
    }
    let factory = WrappingFactory::new(Rc::new(Refusing));
    assert!(
        factory
            .clone()
            .build_protocol(&default_peer_address())
            .is_none()
    );
}

/// A push producer that records what it is asked.
#[derive(Default)]
struct Recorder {
    calls: RefCell<Vec<&'static str>>,
}

impl Producer for Recorder {
    fn resume_producing(&self) {
        self.calls.borrow_mut().push("resume");
    }
    fn pause_producing(&self) {
        self.calls.borrow_mut().push("pause");
    }
    fn stop_producing(&self) {
        self.calls.borrow_mut().push("stop");
    }
}

#[test]
fn a_throttle_and_the_protocols_own_pause_do_not_undo_each_other() {
    let (make, states) = accumulating();
    let factory = WrappingFactory::new(Rc::new(make));
    let mut protocol = factory
        .clone()
        .build_protocol(&default_peer_address())
        .unwrap();
    let transport = StringTransport::new();
    protocol.connection_made(transport.clone());
    let wrapping = factory.connections()[0].clone();
    let seen = states.borrow()[0].transport().unwrap();

    seen.pause_producing(); // the protocol pauses itself
    wrapping.throttle_reads(); // a policy throttles
    assert_eq!(transport.producer_state(), ProducerState::Paused);
    wrapping.unthrottle_reads();
    assert_eq!(
        transport.producer_state(),
        ProducerState::Paused,
        "still paused by the protocol"
    );
    wrapping.throttle_reads();
    seen.resume_producing();
    assert_eq!(
        transport.producer_state(),
        ProducerState::Paused,
        "still throttled"
    );
    wrapping.unthrottle_reads();
    assert_eq!(transport.producer_state(), ProducerState::Producing);

    // Writes: the transport's flow control and a throttle, on a push producer.
    let producer = Rc::new(Recorder::default());
    seen.register_producer(producer.clone(), true).unwrap();
    assert!(wrapping.producer().is_some() && wrapping.streaming());
    let registered = transport.producer().unwrap(); // what the real transport got
    registered.pause_producing(); // buffer full
    wrapping.throttle_writes();
    registered.resume_producing(); // buffer drained, but throttled
    wrapping.unthrottle_writes();
    assert_eq!(*producer.calls.borrow(), ["pause", "resume"]);
    seen.unregister_producer();
    assert!(transport.producer().is_none() && wrapping.producer().is_none());
    protocol.connection_lost(done());
}

#[test]
fn a_pull_producer_is_not_asked_for_more_while_writes_are_throttled() {
    let factory = WrappingFactory::new(Rc::new(AccumulatingProtocol::new));
    let mut protocol = factory
        .clone()
        .build_protocol(&default_peer_address())
        .unwrap();
    let transport = StringTransport::new();
    protocol.connection_made(transport.clone());
    let wrapping = factory.connections()[0].clone();

    wrapping.throttle_writes();
    let producer = Rc::new(Recorder::default());
    wrapping.register_producer(producer.clone(), false).unwrap();
    let registered = transport.producer().unwrap();
    registered.resume_producing(); // the transport wants more
    assert!(producer.calls.borrow().is_empty());
    wrapping.unthrottle_writes();
    assert_eq!(*producer.calls.borrow(), ["resume"]);
    registered.stop_producing();
    assert_eq!(*producer.calls.borrow(), ["resume", "stop"]);
    protocol.connection_lost(done());
}

// ===== ThrottlingFactory with a Clock =====

#[test]
fn throttling_refuses_connections_beyond_the_maximum() {
    let clock = Clock::new();
    let limits = ThrottleLimits {
        max_connection_count: 2,
        ..ThrottleLimits::default()
    };
    let factory = ThrottlingFactory::new(&clock, Rc::new(AccumulatingProtocol::new), limits);
    let addr = default_peer_address();
    let mut a = factory.clone().build_protocol(&addr).unwrap();
    let _b = factory.clone().build_protocol(&addr).unwrap();
    assert!(factory.clone().build_protocol(&addr).is_none());
    assert_eq!(factory.connection_count(), 2);
    a.connection_made(StringTransport::new());
    a.connection_lost(done());
    assert_eq!(factory.connection_count(), 1);
    assert!(factory.clone().build_protocol(&addr).is_some());
    assert!(clock.delayed_calls().is_empty(), "no limits, no timers");
}

#[test]
fn throttling_pauses_reading_for_the_excess_and_resumes_after() {
    let clock = Clock::new();
    let limits = ThrottleLimits {
        read_limit: Some(10),
        ..ThrottleLimits::default()
    };
    let (make, states) = accumulating();
    let factory = ThrottlingFactory::new(&clock, Rc::new(make), limits);
    let addr = default_peer_address();
    let mut protocols: Vec<_> = (0..2)
        .map(|_| factory.clone().build_protocol(&addr).unwrap())
        .collect();
    let transports: Vec<_> = protocols
        .iter_mut()
        .map(|p| {
            let t = StringTransport::new();
            p.connection_made(t.clone());
            t
        })
        .collect();

    protocols[0].data_received(&[0; 20]);
    protocols[1].data_received(&[0; 10]);
    assert_eq!(factory.read_this_second(), 30);
    assert_eq!(
        states.borrow()[0].data().len(),
        20,
        "counted, and passed on"
    );

    clock.advance(1.0); // 30 bytes in a second at 10 B/s: pause for 2 s
    assert!(factory.reads_throttled());
    assert_eq!(factory.read_this_second(), 0);
    for t in &transports {
        assert_eq!(t.producer_state(), ProducerState::Paused);
    }
    // A connection made meanwhile waits with the others.
    let mut late = factory.clone().build_protocol(&addr).unwrap();
    let late_transport = StringTransport::new();
    late.connection_made(late_transport.clone());
    assert_eq!(late_transport.producer_state(), ProducerState::Paused);

    clock.advance(1.9);
    assert!(factory.reads_throttled());
    clock.advance(0.1);
    assert!(!factory.reads_throttled());
    for t in transports.iter().chain([&late_transport]) {
        assert_eq!(t.producer_state(), ProducerState::Producing);
    }

    // Under the limit: no throttling at the next check.
    protocols[0].data_received(&[0; 10]);
    clock.advance(1.0);
    assert!(!factory.reads_throttled());

    // The last connection gone, no timer is left.
    for mut p in protocols.into_iter().chain([late]) {
        p.connection_lost(done());
    }
    assert_eq!(factory.connection_count(), 0);
    assert!(clock.delayed_calls().is_empty());
}

#[test]
fn throttling_pauses_the_registered_producers_when_writes_exceed_the_limit() {
    let clock = Clock::new();
    let limits = ThrottleLimits {
        write_limit: Some(100),
        ..ThrottleLimits::default()
    };
    let (make, states) = accumulating();
    let factory = ThrottlingFactory::new(&clock, Rc::new(make), limits);
    let mut protocol = factory
        .clone()
        .build_protocol(&default_peer_address())
        .unwrap();
    let transport = StringTransport::new();
    protocol.connection_made(transport.clone());
    let seen = states.borrow()[0].transport().unwrap();
    let producer = Rc::new(Recorder::default());
    seen.register_producer(producer.clone(), true).unwrap();

    seen.write(&[1; 100]);
    seen.write_sequence(&[&[2; 50], &[3; 50]]);
    assert_eq!(factory.written_this_second(), 200);
    assert_eq!(transport.value().len(), 200);

    clock.advance(1.0); // 200 bytes at 100 B/s: 1 s of pause
    assert!(factory.writes_throttled());
    assert_eq!(*producer.calls.borrow(), ["pause"]);
    clock.advance(1.0);
    assert!(!factory.writes_throttled());
    assert_eq!(*producer.calls.borrow(), ["pause", "resume"]);

    protocol.connection_lost(done());
    assert!(clock.delayed_calls().is_empty());
}

// ===== over real TCP =====

/// Connects an [`AccumulatingProtocol`] to `port` and hands back its state.
fn connect(reactor: &Reactor, port: u16) -> Rc<AccumulatorState> {
    let protocol = AccumulatingProtocol::new();
    let state = protocol.state();
    let slot = RefCell::new(Some(protocol));
    reactor.connect_tcp(
        "127.0.0.1",
        port,
        Rc::new(move || slot.borrow_mut().take().unwrap_or_default()),
    );
    state
}

/// Waits, on the reactor, until `condition` holds.
async fn until(reactor: &Reactor, condition: impl Fn() -> bool) -> Result<(), Failure> {
    while !condition() {
        sleep(reactor, 0.005).await?;
    }
    Ok(())
}

/// Runs `body` on `reactor` and fails the test if it fails or does not finish.
fn run<F>(reactor: &Reactor, body: F)
where
    F: std::future::Future<Output = Result<(), Failure>> + 'static,
{
    common::safety_stop(reactor, 10.0);
    // However the body ends (a failed assertion too), the reactor stops.
    let r = reactor.clone();
    let mut out = spawn(body).add_both(move |result| {
        let stop = r.clone();
        r.call_later(0.0, move || {
            let _ = stop.stop();
        });
        Ok::<_, Failure>(result)
    });
    reactor.run().unwrap();
    match out.take_result() {
        Some(result) => result.unwrap().unwrap(),
        None => panic!("the test body did not finish"),
    }
}

reactor_test! {
    fn limit_total_connections_over_tcp_refuses_the_third_and_counts_down_on_close(
        reactor: Reactor
    ) {
        let (make, server_states) = accumulating();
        let factory = LimitTotalConnectionsFactory::new(Rc::new(make), Some(2));
        let (port, n) = listen_local(&reactor, factory.clone());
        let r = reactor.clone();
        run(&reactor, async move {
            let a = connect(&r, n);
            let b = connect(&r, n);
            until(&r, || factory.connection_count() == 2 && a.made() && b.made()).await?;

            let refused = connect(&r, n);
            until(&r, || refused.closed()).await?;
            assert!(refused.made(), "accepted, then closed by the server");
            assert_eq!(factory.connection_count(), 2);
            assert_eq!(server_states.borrow().len(), 2);

            a.transport().unwrap().lose_connection();
            until(&r, || factory.connection_count() == 1).await?;
            let c = connect(&r, n);
            until(&r, || factory.connection_count() == 2 && c.made()).await?;
            c.transport().unwrap().write(b"hello");
            until(&r, || server_states.borrow().len() == 3
                && server_states.borrow()[2].data() == b"hello").await?;
            assert!(!b.closed() && !c.closed());

            b.transport().unwrap().lose_connection();
            c.transport().unwrap().lose_connection();
            until(&r, || factory.connection_count() == 0).await?;
            drop(port.stop_listening());
            Ok(())
        });
    }

    fn throttling_over_tcp_caps_connections_and_delays_reads_past_the_limit(reactor: Reactor) {
        let limits = ThrottleLimits {
            max_connection_count: 1,
            read_limit: Some(40_000),
            write_limit: None,
        };
        let (make, server_states) = accumulating();
        let factory = ThrottlingFactory::new(&reactor, Rc::new(make), limits);
        let (port, n) = listen_local(&reactor, factory.clone());
        let r = reactor.clone();
        run(&reactor, async move {
            let client = connect(&r, n);
            until(&r, || factory.connection_count() == 1 && client.made()).await?;
            let start = r.seconds();

            let refused = connect(&r, n);
            until(&r, || refused.closed()).await?;
            assert_eq!(factory.connection_count(), 1);

            // 80 kB in the first second at 40 kB/s: reads pause for a second after the
            // first check, one second in.
            client.transport().unwrap().write(&[7; 80_000]);
            let server = || server_states.borrow()[0].clone();
            until(&r, || server().data().len() == 80_000).await?;
            sleep(&r, (start + 1.2 - r.seconds()).max(0.0)).await?;
            assert!(factory.reads_throttled());
            assert!(factory.connections()[0].reads_throttled());
            client.transport().unwrap().write(b"!");
            until(&r, || server().data().len() == 80_001).await?;
            let arrived = r.seconds() - start;
            assert!(arrived >= 1.9, "the byte arrived at {arrived:.3} s, while throttled");
            assert!(!factory.reads_throttled());

            client.transport().unwrap().lose_connection();
            until(&r, || factory.connection_count() == 0).await?;
            let leftover: Vec<_> = r
                .delayed_calls()
                .into_iter()
                .filter(|call| call.location.file().contains("src/protocols/policies/"))
                .collect();
            assert!(leftover.is_empty(), "timers left behind: {leftover:?}");
            drop(port.stop_listening());
            Ok(())
        });
    }
}
