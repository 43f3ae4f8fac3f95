//! Services (CHECKLIST 74–75): MultiService, Application and run_application, TimerService,
//! StreamServerEndpointService and ClientService, with a Clock where time matters and real
//! loopback sockets on every backend where I/O does.

mod common;

use common::{Boom, Log, log};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use torsion::application::{
    Application, ClientService, MultiService, Service, ServiceState, StreamServerEndpointService,
    TimerService, backoff_policy, run_application,
};
use torsion::endpoints::{
    ClientEndpoint, TcpServerEndpoint, client_from_string, server_from_string,
};
use torsion::error::{
    Cancelled, CannotListen, ConnectionLost, ConnectionRefused, DuplicateServiceName,
    InvalidArgument, ServiceHasParent, ServiceNotFound,
};
use torsion::net::tcp::{DEFAULT_BACKLOG, ListenOptions};
use torsion::net::{Transport, TransportOps};
use torsion::protocol::{Factory, Protocol};
use torsion::reactor::{Phase, SystemEvent};
use torsion::testing::StringTransport;
use torsion::time::{Clock, ReactorTime};
use torsion::{Deferred, Failure, Reactor, Resolver};

fn take(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.borrow_mut())
}

/// A service that records what is done to it; its stops can be held pending.
struct Recorder {
    state: ServiceState,
    label: String,
    log: Log,
    hold_stop: bool,
    pending_stops: RefCell<Vec<Resolver<()>>>,
}

impl Recorder {
    fn new(name: Option<&str>, label: &str, log: &Log) -> Rc<Recorder> {
        Rc::new(Recorder {
            state: name.map_or_else(ServiceState::new, ServiceState::named),
            label: label.to_string(),
            log: log.clone(),
            hold_stop: false,
            pending_stops: RefCell::new(Vec::new()),
        })
    }

    fn holding_stop(name: &str, log: &Log) -> Rc<Recorder> {
        Rc::new(Recorder {
            state: ServiceState::named(name),
            label: name.to_string(),
            log: log.clone(),
            hold_stop: true,
            pending_stops: RefCell::new(Vec::new()),
        })
    }

    fn finish_stop(&self) {
        let pending = std::mem::take(&mut *self.pending_stops.borrow_mut());
        for resolver in pending {
            resolver.callback(());
        }
    }
}

impl Service for Recorder {
    fn service_state(&self) -> &ServiceState {
        &self.state
    }

    fn privileged_start_service(&self) -> Result<(), Failure> {
        self.log
            .borrow_mut()
            .push(format!("privileged {}", self.label));
        Ok(())
    }

    fn start_service(&self) -> Result<(), Failure> {
        self.state.set_running(true);
        self.log.borrow_mut().push(format!("start {}", self.label));
        Ok(())
    }

    fn stop_service(&self) -> Deferred<()> {
        self.state.set_running(false);
        self.log.borrow_mut().push(format!("stop {}", self.label));
        if self.hold_stop {
            let (resolver, d) = Deferred::new();
            self.pending_stops.borrow_mut().push(resolver);
            d
        } else {
            Deferred::succeed(())
        }
    }
}

type Outcome<T> = Rc<RefCell<Option<Result<T, Failure>>>>;

/// Stores the Deferred's result when it fires.
fn capture<T: 'static>(d: Deferred<T>) -> Outcome<T> {
    let out: Outcome<T> = Rc::new(RefCell::new(None));
    let o = out.clone();
    drop(d.add_both(move |r| {
        *o.borrow_mut() = Some(r);
        Ok::<(), Failure>(())
    }));
    out
}

fn fired<T>(outcome: &Outcome<T>) -> bool {
    outcome.borrow().is_some()
}

fn succeeded<T>(outcome: &Outcome<T>) -> bool {
    matches!(&*outcome.borrow(), Some(Ok(_)))
}

fn failed_with<T, E: std::error::Error + 'static>(outcome: &Outcome<T>) -> bool {
    matches!(&*outcome.borrow(), Some(Err(f)) if f.check::<E>())
}

// ===== MultiService (CHECKLIST 74, 75) =====

#[test]
fn a_duplicate_child_name_is_an_error() {
    // CHECKLIST 74.
    let log = log();
    let parent = MultiService::new();
    let first = Recorder::new(Some("web"), "first", &log);
    let second = Recorder::new(Some("web"), "second", &log);
    parent.add_service(first.clone()).unwrap();
    let err = parent.add_service(second.clone()).unwrap_err();
    assert_eq!(
        err.downcast_ref::<DuplicateServiceName>(),
        Some(&DuplicateServiceName { name: "web".into() })
    );
    assert!(err.to_string().contains("\"web\""), "{err}");
    // Nothing changed: the second is not a child and has no parent.
    assert_eq!(parent.services().len(), 1);
    assert!(second.parent().is_none());
    let found = parent.get_service_named("web").unwrap();
    let found = Rc::downcast::<Recorder>(found as Rc<dyn Any>).ok().unwrap();
    assert!(Rc::ptr_eq(&found, &first));

    // Unnamed children are allowed, any number of them.
    parent
        .add_service(Recorder::new(None, "anon1", &log))
        .unwrap();
    parent
        .add_service(Recorder::new(None, "anon2", &log))
        .unwrap();
    assert_eq!(parent.services().len(), 3);

    // A child cannot be renamed while parented (its parent knows it by name).
    assert_eq!(
        first.set_name("other"),
        Err(ServiceHasParent {
            name: Some("web".into())
        })
    );
    // Adding a child twice does nothing.
    parent.add_service(first.clone()).unwrap();
    assert_eq!(parent.services().len(), 3);
    assert!(
        take(&log).is_empty(),
        "nothing was started: the parent is stopped"
    );
}

#[test]
fn a_child_added_to_a_running_multiservice_starts_and_removing_it_stops_it() {
    // CHECKLIST 74.
    let log = log();
    let parent = MultiService::new();
    parent.start_service().unwrap();
    assert!(parent.running());

    let late = Recorder::new(Some("late"), "late", &log);
    parent.add_service(late.clone()).unwrap();
    assert_eq!(take(&log), ["privileged late", "start late"]);
    assert!(late.running());
    assert!(Rc::ptr_eq(&late.parent().unwrap(), &parent));

    let removed = capture(parent.remove_service(&late).unwrap());
    assert_eq!(take(&log), ["stop late"]);
    assert!(succeeded(&removed));
    assert!(!late.running());
    assert!(late.parent().is_none());
    assert!(parent.get_service_named("late").is_none());

    // Removing by name, with a stop that takes time: the Deferred is the child's stop.
    let slow = Recorder::holding_stop("slow", &log);
    parent.add_service(slow.clone()).unwrap();
    take(&log);
    let removed = capture(parent.remove_service_named("slow").unwrap());
    assert_eq!(take(&log), ["stop slow"]);
    assert!(!fired(&removed));
    slow.finish_stop();
    assert!(succeeded(&removed));

    // Not a child.
    assert_eq!(
        parent.remove_service(&late).unwrap_err(),
        ServiceNotFound { name: None }
    );
    assert_eq!(
        parent.remove_service_named("nobody").unwrap_err(),
        ServiceNotFound {
            name: Some("nobody".into())
        }
    );

    // Once stopped, removing a child does not stop it.
    let quiet = Recorder::new(Some("quiet"), "quiet", &log);
    parent.add_service(quiet.clone()).unwrap();
    take(&log);
    drop(parent.stop_service());
    assert_eq!(take(&log), ["stop quiet"]);
    let removed = capture(parent.remove_service(&quiet).unwrap());
    assert!(succeeded(&removed));
    assert!(take(&log).is_empty());
}

#[test]
fn disowning_a_parent_and_moving_a_child_to_another_parent() {
    let log = log();
    let a = MultiService::named("a");
    let b = MultiService::named("b");
    a.start_service().unwrap();
    b.start_service().unwrap();
    let child = Recorder::new(Some("child"), "child", &log);
    a.add_service(child.clone()).unwrap();
    take(&log);

    // As Twisted's setServiceParent: leave the old parent (stopped), join the new one
    // (started).
    b.add_service(child.clone()).unwrap();
    assert_eq!(
        take(&log),
        ["stop child", "privileged child", "start child"]
    );
    assert!(a.services().is_empty());
    assert!(Rc::ptr_eq(&child.parent().unwrap(), &b));

    let disowned = capture(child.disown_service_parent());
    assert!(succeeded(&disowned));
    assert_eq!(take(&log), ["stop child"]);
    assert!(child.parent().is_none());
    assert!(b.services().is_empty());
    // Without a parent, disowning does nothing.
    assert!(succeeded(&capture(child.disown_service_parent())));
    // Renaming is allowed again.
    child.set_name("renamed").unwrap();
    assert_eq!(child.name().as_deref(), Some("renamed"));
}

#[test]
#[should_panic(expected = "cannot be added to itself")]
fn a_multiservice_cannot_be_its_own_descendant() {
    let outer = MultiService::new();
    let inner = MultiService::new();
    outer.add_service(inner.clone()).unwrap();
    let _ = inner.add_service(outer.clone());
}

#[test]
fn multiservice_starts_children_in_order_and_passes_privileged_start_down() {
    let log = log();
    let root = MultiService::new();
    let nested = MultiService::named("nested");
    root.add_service(Recorder::new(Some("a"), "a", &log))
        .unwrap();
    root.add_service(nested.clone()).unwrap();
    nested
        .add_service(Recorder::new(Some("b"), "b", &log))
        .unwrap();
    root.add_service(Recorder::new(Some("c"), "c", &log))
        .unwrap();

    root.privileged_start_service().unwrap();
    assert_eq!(take(&log), ["privileged a", "privileged b", "privileged c"]);
    assert!(!root.running(), "privileged start does not mark it running");
    root.start_service().unwrap();
    assert_eq!(take(&log), ["start a", "start b", "start c"]);
    assert!(nested.running());
    // Starting again does nothing.
    root.start_service().unwrap();
    assert!(take(&log).is_empty());
    drop(root.stop_service());
    assert_eq!(take(&log), ["stop c", "stop b", "stop a"]);
}

#[test]
fn multiservice_stops_children_in_reverse_order_and_its_stop_waits_for_all_of_them() {
    // CHECKLIST 75.
    let log = log();
    let parent = MultiService::new();
    let children: Vec<Rc<Recorder>> = ["a", "b", "c"]
        .iter()
        .map(|name| Recorder::holding_stop(name, &log))
        .collect();
    for child in &children {
        parent.add_service(child.clone()).unwrap();
    }
    parent.start_service().unwrap();
    assert_eq!(take(&log), ["start a", "start b", "start c"]);

    let stopped = capture(parent.stop_service());
    assert_eq!(take(&log), ["stop c", "stop b", "stop a"]);
    assert!(!parent.running());
    assert!(children.iter().all(|c| !c.running()));

    // The children's stops fire later, in another order: the parent's waits for the last.
    children[0].finish_stop();
    assert!(!fired(&stopped));
    children[2].finish_stop();
    assert!(!fired(&stopped));
    children[1].finish_stop();
    assert!(succeeded(&stopped));
}

#[test]
fn a_child_failing_to_stop_does_not_keep_the_others_running() {
    struct Failing(ServiceState);
    impl Service for Failing {
        fn service_state(&self) -> &ServiceState {
            &self.0
        }
        fn stop_service(&self) -> Deferred<()> {
            self.0.set_running(false);
            Deferred::fail(Failure::msg("cannot stop"))
        }
    }
    let log = log();
    let parent = MultiService::new();
    parent
        .add_service(Recorder::new(Some("a"), "a", &log))
        .unwrap();
    parent
        .add_service(Rc::new(Failing(ServiceState::new())))
        .unwrap();
    parent.start_service().unwrap();
    take(&log);
    // As Twisted's DeferredList: the stop succeeds; the failure is reported as unhandled.
    assert!(succeeded(&capture(parent.stop_service())));
    assert_eq!(take(&log), ["stop a"]);
}

/// A service that cannot start: its start fails with `Boom`, in the privileged start or
/// the plain one.
struct CannotStart {
    state: ServiceState,
    privileged: bool,
    log: Log,
}

impl CannotStart {
    fn new(name: &str, privileged: bool, log: &Log) -> Rc<CannotStart> {
        Rc::new(CannotStart {
            state: ServiceState::named(name),
            privileged,
            log: log.clone(),
        })
    }
}

impl Service for CannotStart {
    fn service_state(&self) -> &ServiceState {
        &self.state
    }
    fn privileged_start_service(&self) -> Result<(), Failure> {
        if self.privileged {
            self.log.borrow_mut().push("privileged failed".into());
            return Err(Failure::new(Boom));
        }
        Ok(())
    }
    fn start_service(&self) -> Result<(), Failure> {
        self.log.borrow_mut().push("start failed".into());
        Err(Failure::new(Boom))
    }
    fn stop_service(&self) -> Deferred<()> {
        self.log.borrow_mut().push("stop failed one".into());
        self.state.set_running(false);
        Deferred::succeed(())
    }
}

#[test]
fn a_child_that_cannot_start_fails_the_multiservice_start_and_later_children_wait() {
    // As Twisted's MultiService.startService, where the child's exception propagates out of
    // the loop: the children after it are not started.
    let log = log();
    let parent = MultiService::new();
    parent
        .add_service(Recorder::new(Some("a"), "a", &log))
        .unwrap();
    parent
        .add_service(CannotStart::new("bad", false, &log))
        .unwrap();
    parent
        .add_service(Recorder::new(Some("c"), "c", &log))
        .unwrap();
    let failure = parent.start_service().unwrap_err();
    assert!(failure.check::<Boom>(), "{failure}");
    assert_eq!(take(&log), ["start a", "start failed"]);
    assert!(
        parent.running(),
        "marked running, so that its stop stops what started"
    );
    assert!(succeeded(&capture(parent.stop_service())));
    assert_eq!(take(&log), ["stop c", "stop failed one", "stop a"]);

    // The privileged start stops at the failure the same way.
    let parent = MultiService::new();
    parent
        .add_service(Recorder::new(Some("a"), "a", &log))
        .unwrap();
    parent
        .add_service(CannotStart::new("bad", true, &log))
        .unwrap();
    parent
        .add_service(Recorder::new(Some("c"), "c", &log))
        .unwrap();
    assert!(
        parent
            .privileged_start_service()
            .unwrap_err()
            .check::<Boom>()
    );
    assert_eq!(take(&log), ["privileged a", "privileged failed"]);
}

#[test]
fn adding_a_child_that_cannot_start_to_a_running_multiservice_fails() {
    // Twisted's setServiceParent raises what the child's startService raised; the child
    // stays added.
    let log = log();
    let parent = MultiService::new();
    parent.start_service().unwrap();
    let bad = CannotStart::new("bad", false, &log);
    let failure = parent.add_service(bad.clone()).unwrap_err();
    assert!(failure.check::<Boom>(), "{failure}");
    assert_eq!(take(&log), ["start failed"]);
    assert!(Rc::ptr_eq(&bad.parent().unwrap(), &parent));
    assert!(!bad.running());
    // A stopped parent starts nothing, so adding cannot fail that way.
    let stopped = MultiService::new();
    stopped
        .add_service(CannotStart::new("bad", true, &log))
        .unwrap();
    assert!(take(&log).is_empty());
}

#[test]
fn every_service_constructor_gives_an_rc_ready_to_add() {
    // One shape: `Rc<Self>`, infallible, added to a parent without wrapping.
    let clock = Clock::new();
    let reactor = Reactor::new().unwrap();
    let root: Rc<MultiService> = MultiService::new();
    let named: Rc<MultiService> = MultiService::named("named");
    let app: Rc<Application> = Application::new("app");
    let timer: Rc<TimerService> = TimerService::new(&clock, 1.0, || Ok(()));
    let server: Rc<StreamServerEndpointService> = StreamServerEndpointService::new(
        server_from_string(&reactor, "tcp:0:interface=127.0.0.1").unwrap(),
        Rc::new(|| Greeter),
    );
    let client: Rc<ClientService> = ClientService::new(
        &clock,
        Box::new(Manual::default()),
        recording_factory(&log()),
    )
    .retry_policy(|_| Duration::from_secs(1));
    root.add_service(named.clone()).unwrap();
    root.add_service(app.clone()).unwrap();
    named.add_service(timer.clone()).unwrap();
    app.add_service(server.clone()).unwrap();
    app.add_service(client.clone()).unwrap();
    assert_eq!(root.services().len(), 2);
    assert!(Rc::ptr_eq(&timer.parent().unwrap(), &named));
    assert!(Rc::ptr_eq(&server.parent().unwrap(), app.multi_service()));
}

#[test]
fn an_empty_multiservice_stops_at_once() {
    let parent = MultiService::new();
    parent.start_service().unwrap();
    assert!(succeeded(&capture(parent.stop_service())));
}

// ===== TimerService =====

#[test]
fn timer_service_calls_at_once_then_every_interval_until_stopped() {
    let clock = Clock::new();
    let calls = Rc::new(RefCell::new(Vec::new()));
    let (c, k) = (calls.clone(), clock.clone());
    let timer = TimerService::new(&clock, 2.0, move || {
        c.borrow_mut().push(k.seconds());
        Ok(())
    });
    assert_eq!(timer.interval(), Some(Duration::from_secs(2)));
    assert!(calls.borrow().is_empty(), "nothing before start");

    timer.start_service().unwrap();
    assert!(timer.running());
    assert_eq!(*calls.borrow(), [0.0], "the first call is made at once");
    clock.pump(&[1.0, 1.0, 1.0, 1.0, 1.0]);
    assert_eq!(*calls.borrow(), [0.0, 2.0, 4.0]);
    assert_eq!(timer.call_count(), 3);

    let stopped = capture(timer.stop_service());
    assert!(succeeded(&stopped));
    assert!(!timer.running());
    assert!(clock.delayed_calls().is_empty());
    clock.advance(10.0);
    assert_eq!(calls.borrow().len(), 3);

    // It starts again.
    timer.start_service().unwrap();
    assert_eq!(*calls.borrow(), [0.0, 2.0, 4.0, 15.0]);
    drop(timer.stop_service());
    assert!(clock.delayed_calls().is_empty());
}

#[test]
fn timer_service_stop_waits_for_a_call_in_progress() {
    let clock = Clock::new();
    let pending: Rc<RefCell<Option<Resolver<()>>>> = Rc::new(RefCell::new(None));
    let p = pending.clone();
    let timer = TimerService::new(&clock, 1.0, move || {
        let (resolver, d) = Deferred::new();
        *p.borrow_mut() = Some(resolver);
        d
    });
    timer.start_service().unwrap();
    let stopped = capture(timer.stop_service());
    assert!(!fired(&stopped), "the first call's Deferred has not fired");
    pending.borrow_mut().take().unwrap().callback(());
    assert!(succeeded(&stopped));
    assert!(clock.delayed_calls().is_empty());
}

#[test]
fn timer_service_logs_a_failure_and_stops_looping() {
    let clock = Clock::new();
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    let timer = TimerService::new(&clock, 1.0, move || {
        c.set(c.get() + 1);
        if c.get() == 2 {
            Err(Failure::msg("boom"))
        } else {
            Ok(())
        }
    });
    timer.start_service().unwrap();
    clock.pump(&[1.0, 1.0, 1.0]);
    assert_eq!(calls.get(), 2, "the loop stopped at the failure");
    assert!(clock.delayed_calls().is_empty());
    // The stop still succeeds: the failure was logged, as Twisted's TimerService does.
    assert!(succeeded(&capture(timer.stop_service())));
}

#[test]
fn timer_service_reports_a_bad_interval_when_it_starts() {
    // Twisted's TimerService(-1, f) is made, and startService raises ValueError.
    let clock = Clock::new();
    for interval in [-1.0, f64::NAN, f64::INFINITY] {
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        let timer = TimerService::new(&clock, interval, move || {
            c.set(c.get() + 1);
            Ok(())
        });
        assert_eq!(timer.interval(), None);
        let failure = timer.start_service().unwrap_err();
        assert!(failure.check::<InvalidArgument>(), "{failure}");
        assert!(!timer.running());
        assert_eq!(calls.get(), 0);
        assert!(clock.delayed_calls().is_empty());
        // Through a parent and run_application alike.
        let app = Application::new("timers");
        app.add_service(timer.clone()).unwrap();
        let reactor = Reactor::new().unwrap();
        let failure = run_application(&reactor, &app).unwrap_err();
        assert!(failure.check::<InvalidArgument>(), "{failure}");
        assert!(!app.running());
    }
}

// ===== shared protocols =====

/// Writes a greeting and keeps the connection open.
struct Greeter;

impl Protocol for Greeter {
    fn connection_made(&mut self, transport: Transport) {
        transport.write(b"hello\r\n");
    }
}

/// Records a client connection's events.
struct Recording {
    events: Log,
}

impl Protocol for Recording {
    fn connection_made(&mut self, _transport: Transport) {
        self.events.borrow_mut().push("made".into());
    }
    fn data_received(&mut self, data: &[u8]) {
        self.events
            .borrow_mut()
            .push(format!("data {}", String::from_utf8_lossy(data).trim_end()));
    }
    fn connection_lost(&mut self, _reason: Failure) {
        self.events.borrow_mut().push("lost".into());
    }
}

fn recording_factory(events: &Log) -> Rc<dyn Factory> {
    let events = events.clone();
    Rc::new(move || Recording {
        events: events.clone(),
    })
}

// ===== StreamServerEndpointService and ClientService over loopback =====

/// Waits (on the reactor) until `check` holds.
async fn wait_until(reactor: &Reactor, check: impl Fn() -> bool) {
    while !check() {
        torsion::task::sleep(reactor, 0.01).await.unwrap();
    }
}

/// Runs `body` on the running reactor, stops the reactor when it ends, and panics with its
/// failure if it failed.
fn run_async<F>(reactor: &Reactor, body: F)
where
    F: std::future::Future<Output = Result<(), Failure>> + 'static,
{
    common::safety_stop(reactor, 10.0);
    let r = reactor.clone();
    let mut done = torsion::spawn(async move {
        let result = body.await;
        let _ = r.stop();
        result
    });
    reactor.run().unwrap();
    common::assert_not_timed_out();
    match done.take_result() {
        Some(Ok(())) => {}
        Some(Err(failure)) => panic!("the test failed: {failure}"),
        None => panic!("the test did not finish"),
    }
}

/// Drops the connection at once if it is the server's first, else greets.
struct DropFirst {
    first: bool,
}

impl Protocol for DropFirst {
    fn connection_made(&mut self, transport: Transport) {
        if self.first {
            transport.lose_connection();
        } else {
            transport.write(b"hello\r\n");
        }
    }
}

reactor_test! {
    fn stream_server_endpoint_service_listens_on_start_and_closes_on_stop(reactor: Reactor) {
        let endpoint = server_from_string(&reactor, "tcp:0:interface=127.0.0.1").unwrap();
        let service = StreamServerEndpointService::new(endpoint, Rc::new(|| Greeter));
        assert!(service.port().is_none());

        // privileged_start_service listens (as Twisted, to bind low ports early); the
        // start that follows does not listen again.
        service.privileged_start_service().unwrap();
        let port = service.port().expect("listening after the privileged start");
        assert!(!service.running());
        service.start_service().unwrap();
        assert!(service.running());
        assert!(Rc::ptr_eq(&port, &service.port().unwrap()));
        let address = port.host().socket_addr().unwrap();
        assert_eq!(address.ip(), std::net::IpAddr::from([127, 0, 0, 1]));
        assert_ne!(address.port(), 0);

        let r = reactor.clone();
        run_async(&reactor, async move {
            // A client reaches it.
            let events = log();
            let description = format!("tcp:127.0.0.1:{}", address.port());
            let client = client_from_string(&r, &description).unwrap();
            let transport = client.connect(recording_factory(&events)).await?;
            wait_until(&r, || events.borrow().iter().any(|e| e == "data hello")).await;

            // Stopping closes the port; the Deferred fires once it is closed.
            let stopped = service.stop_service();
            assert!(!service.running());
            assert!(service.port().is_none());
            stopped.await?;
            let refused = client.connect(recording_factory(&log())).await;
            match refused {
                Err(failure) => assert!(failure.check::<ConnectionRefused>(), "{failure}"),
                Ok(_) => panic!("connected after the service stopped"),
            }
            // The connection already accepted is left alone, as in Twisted.
            assert!(transport.is_connected());
            transport.lose_connection();
            Ok(())
        });
    }

    fn stream_server_endpoint_service_on_a_port_in_use_fails_to_start(reactor: Reactor) {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = taken.local_addr().unwrap().port();
        let endpoint =
            server_from_string(&reactor, &format!("tcp:{busy}:interface=127.0.0.1")).unwrap();
        let service = StreamServerEndpointService::new(endpoint, Rc::new(|| Greeter));
        // The privileged start (where a runner binds) and the plain start both say so.
        let failure = service.privileged_start_service().unwrap_err();
        assert!(failure.check::<CannotListen>(), "{failure}");
        let failure = service.start_service().unwrap_err();
        assert!(failure.check::<CannotListen>(), "{failure}");
        assert!(!service.running(), "a service that cannot listen is not running");
        assert!(service.port().is_none());
        let kept = service.listen_failure().expect("the failure is kept");
        assert!(kept.check::<CannotListen>(), "{kept}");
        assert!(succeeded(&capture(service.stop_service())));

        // Once the port is free, starting again listens.
        drop(taken);
        service.start_service().unwrap();
        assert!(service.running());
        assert_eq!(service.port().unwrap().host().port(), Some(busy));
        assert!(service.listen_failure().is_none());
        run_async(&reactor, async move {
            service.stop_service().await?;
            Ok(())
        });
    }

    fn run_application_fails_when_a_service_cannot_listen(reactor: Reactor) {
        // Twisted's twistd exits when a port is taken; the program is told, instead of
        // running while listening nowhere.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = taken.local_addr().unwrap().port();
        let log = log();
        let app = Application::new("busy");
        let first = StreamServerEndpointService::new(
            server_from_string(&reactor, "tcp:0:interface=127.0.0.1").unwrap(),
            Rc::new(|| Greeter),
        );
        app.add_service(first.clone()).unwrap();
        app.add_service(Recorder::new(Some("before"), "before", &log)).unwrap();
        app.add_service(StreamServerEndpointService::new(
            server_from_string(&reactor, &format!("tcp:{busy}:interface=127.0.0.1")).unwrap(),
            Rc::new(|| Greeter),
        ))
        .unwrap();
        app.add_service(Recorder::new(Some("after"), "after", &log)).unwrap();

        let failure = run_application(&reactor, &app).unwrap_err();
        assert!(failure.check::<CannotListen>(), "{failure}");
        assert!(failure.to_string().contains(&busy.to_string()), "{failure}");
        // The privileged start stopped at the busy port; nothing was started, and what
        // had listened was stopped again.
        assert_eq!(take(&log), ["privileged before", "stop after", "stop before"]);
        assert!(!app.running());
        assert!(first.port().is_none(), "the first service's port is closed again");

        // No shutdown trigger stops the application a second time.
        let r = reactor.clone();
        reactor.call_when_running(move || {
        let _ = r.stop();
    });
        common::safety_stop(&reactor, 10.0);
        reactor.run().unwrap();
        common::assert_not_timed_out();
        assert!(take(&log).is_empty());
    }

    fn stream_server_endpoint_service_listens_with_its_endpoints_backlog(reactor: Reactor) {
        // The backlog is the endpoint's: DEFAULT_BACKLOG unless `backlog=N` says otherwise.
        let tcp = StreamServerEndpointService::new(
            server_from_string(&reactor, "tcp:0:interface=127.0.0.1").unwrap(),
            Rc::new(|| Greeter),
        );
        let endpoint = (tcp.endpoint() as &dyn Any).downcast_ref::<TcpServerEndpoint>().unwrap();
        assert_eq!(endpoint.backlog, DEFAULT_BACKLOG);

        // Over a UNIX socket the backlog can be seen: with the loop not running nothing is
        // accepted, and Linux queues backlog + 1 connections, refusing the next (EAGAIN).
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("torsion-app-{}-{n}.sock", std::process::id()));
        let description = format!("unix:{}:backlog=7:lockfile=0", path.display());
        let service = StreamServerEndpointService::new(
            server_from_string(&reactor, &description).unwrap(),
            Rc::new(|| Greeter),
        );
        service.start_service().unwrap();
        assert!(service.port().is_some(), "{:?}", service.listen_failure());
        let address = socket2::SockAddr::unix(&path).unwrap();
        let mut queued = Vec::new();
        loop {
            let socket = socket2::Socket::new(
                socket2::Domain::UNIX,
                socket2::Type::STREAM.nonblocking(),
                None,
            )
            .unwrap();
            match socket.connect(&address) {
                Ok(()) => queued.push(socket),
                Err(err) if err.raw_os_error() == Some(libc::EAGAIN) => break,
                Err(err) => panic!("connect #{}: {err}", queued.len() + 1),
            }
            assert!(queued.len() < 10_000, "the backlog never filled");
        }
        assert_eq!(queued.len(), 7 + 1);
        drop(queued);
        run_async(&reactor, async move {
            service.stop_service().await?;
            Ok(())
        });
        assert!(!path.exists(), "the socket file is removed once the port closes");
    }

    fn client_service_reconnects_after_the_server_drops_the_connection(reactor: Reactor) {
        // The server drops its first connection at once and greets the later ones.
        let accepted = Rc::new(Cell::new(0u32));
        let a = accepted.clone();
        let server_factory = Rc::new(move || {
            a.set(a.get() + 1);
            DropFirst { first: a.get() == 1 }
        });
        let options = ListenOptions {
            interface: [127, 0, 0, 1].into(),
            ..ListenOptions::default()
        };
        let port = reactor.listen_tcp_with(0, server_factory, options).unwrap();
        let address = port.host().socket_addr().unwrap();

        let events = log();
        let description = format!("tcp:127.0.0.1:{}", address.port());
        let endpoint = client_from_string(&reactor, &description).unwrap();
        let retries = Rc::new(RefCell::new(Vec::new()));
        let r = retries.clone();
        let client = ClientService::new(&reactor, endpoint, recording_factory(&events))
            .retry_policy(move |failures| {
                r.borrow_mut().push(failures);
                Duration::from_millis(20)
            });

        let reactor2 = reactor.clone();
        run_async(&reactor, async move {
            let first = client.when_connected();
            client.start_service().unwrap();
            let first = first.await?;
            wait_until(&reactor2, || events.borrow().iter().any(|e| e == "data hello")).await;

            assert_eq!(accepted.get(), 2, "one reconnection");
            assert_eq!(take(&events), ["made", "lost", "made", "data hello"]);
            assert_eq!(*retries.borrow(), [1], "the loss counted as one failure");
            assert!(!first.is_connected());

            // Connected now: when_connected fires at once, with the live connection.
            let transport = match client.when_connected().take_result() {
                Some(Ok(transport)) => transport,
                Some(Err(failure)) => panic!("when_connected failed: {failure}"),
                None => panic!("when_connected did not fire at once"),
            };
            assert!(transport.is_connected());
            assert_eq!(transport.peer().socket_addr(), Some(address));

            // Stopping closes the connection; the stop's Deferred fires once it is gone,
            // and no reconnection follows.
            let stopped = client.stop_service();
            assert!(!stopped.is_fired(), "the connection is still closing");
            let mut after_stop = client.when_connected();
            match after_stop.take_result() {
                Some(Err(failure)) => assert!(failure.check::<Cancelled>(), "{failure}"),
                _ => panic!("when_connected after stop must fail with Cancelled"),
            }
            stopped.await?;
            assert!(!transport.is_connected());
            assert_eq!(take(&events), ["lost"]);
            torsion::task::sleep(&reactor2, 0.1).await?;
            assert_eq!(accepted.get(), 2, "no reconnection after stop");
            assert_eq!(*retries.borrow(), [1]);
            port.stop_listening().await?;
            Ok(())
        });
    }

    fn client_service_retries_a_refused_connection_until_the_server_is_up(reactor: Reactor) {
        // Take a free port, then close it: the first attempts are refused.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = probe.local_addr().unwrap();
        drop(probe);
        let endpoint =
            client_from_string(&reactor, &format!("tcp:127.0.0.1:{}", address.port())).unwrap();
        let events = log();
        let client = ClientService::new(&reactor, endpoint, recording_factory(&events))
            .retry_policy(|_| Duration::from_millis(20));

        let r = reactor.clone();
        run_async(&reactor, async move {
            let gave_up = client.when_connected_fail_after(1);
            let waiting = client.when_connected();
            client.start_service().unwrap();
            match gave_up.await {
                Err(failure) => assert!(failure.check::<ConnectionRefused>(), "{failure}"),
                Ok(_) => panic!("connected to a closed port"),
            }
            assert!(!waiting.is_fired(), "without a limit, it keeps waiting");
            let options = ListenOptions {
                interface: [127, 0, 0, 1].into(),
                ..ListenOptions::default()
            };
            let port = r.listen_tcp_with(address.port(), Rc::new(|| Greeter), options)?;
            let transport = waiting.await?;
            assert!(transport.is_connected());
            client.stop_service().await?;
            port.stop_listening().await?;
            Ok(())
        });
    }

    fn the_reactor_shutdown_waits_for_the_application_to_stop(reactor: Reactor) {
        let log = log();
        let app = Application::new("waiting");
        assert_eq!(app.name().as_deref(), Some("waiting"));
        let slow = Rc::new(SlowStop {
            state: ServiceState::named("slow"),
            reactor: reactor.clone(),
            log: log.clone(),
        });
        app.add_service(slow.clone()).unwrap();
        app.add_service(Recorder::new(Some("quick"), "quick", &log)).unwrap();

        run_application(&reactor, &app).unwrap();
        assert!(app.running(), "started at once, as twistd starts it before the reactor runs");
        let l = log.clone();
        reactor.add_system_event_trigger(Phase::After, SystemEvent::Shutdown, move || {
            l.borrow_mut().push("after shutdown".into());
        });
        let (r, a, l) = (reactor.clone(), app.clone(), log.clone());
        reactor.call_when_running(move || {
            assert!(a.running());
            l.borrow_mut().push("running".into());
            let _ = r.stop();
        });
        common::safety_stop(&reactor, 10.0);
        reactor.run().unwrap();
        common::assert_not_timed_out();

        assert_eq!(
            take(&log),
            [
                "privileged quick",
                "start slow",
                "start quick",
                "running",
                "stop quick",
                "stop slow",
                "slow stopped",
                "after shutdown",
            ]
        );
        assert!(!app.running());
        assert!(!slow.running());
    }
}

/// A service whose stop takes 50 ms of reactor time.
struct SlowStop {
    state: ServiceState,
    reactor: Reactor,
    log: Log,
}

impl Service for SlowStop {
    fn service_state(&self) -> &ServiceState {
        &self.state
    }

    fn start_service(&self) -> Result<(), Failure> {
        self.state.set_running(true);
        self.log.borrow_mut().push("start slow".into());
        Ok(())
    }

    fn stop_service(&self) -> Deferred<()> {
        self.state.set_running(false);
        self.log.borrow_mut().push("stop slow".into());
        let log = self.log.clone();
        torsion::task::defer_later(&self.reactor, 0.05, move || {
            log.borrow_mut().push("slow stopped".into());
            Ok(())
        })
    }
}

#[test]
fn an_application_is_a_named_root_with_optional_ids() {
    assert_eq!(
        (
            Application::new("finger").uid,
            Application::new("finger").gid
        ),
        (None, None)
    );
    let app = Application::with_ids("finger", Some(1000), Some(1000));
    assert_eq!((app.uid, app.gid), (Some(1000), Some(1000)));
    assert_eq!(app.name().as_deref(), Some("finger"));
    let log = log();
    let child = Recorder::new(Some("web"), "web", &log);
    app.add_service(child.clone()).unwrap();
    assert!(Rc::ptr_eq(&child.parent().unwrap(), app.multi_service()));
    assert!(app.get_service_named("web").is_some());
    assert!(
        app.add_service(Recorder::new(Some("web"), "again", &log))
            .is_err()
    );
    app.privileged_start_service().unwrap();
    app.start_service().unwrap();
    assert_eq!(take(&log), ["privileged web", "start web"]);
    assert!(succeeded(&capture(app.remove_service(&child).unwrap())));
    assert_eq!(take(&log), ["stop web"]);
    assert!(app.services().is_empty());
}

// ===== ClientService with a Clock and an endpoint driven by hand =====

/// The attempts in progress: the firing end of each and its factory.
type Attempts = RefCell<Vec<(Resolver<Transport>, Rc<dyn Factory>)>>;

/// An endpoint whose attempts the test completes by hand.
#[derive(Default)]
struct ManualEndpoint {
    attempts: Attempts,
}

impl fmt::Debug for ManualEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ManualEndpoint")
    }
}

/// A handle on a `ManualEndpoint` moved into the service.
#[derive(Clone, Default)]
struct Manual(Rc<ManualEndpoint>);

impl fmt::Debug for Manual {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Manual")
    }
}

impl ClientEndpoint for Manual {
    fn connect(&self, factory: Rc<dyn Factory>) -> Deferred<Transport> {
        let (resolver, d) = Deferred::new();
        self.0.attempts.borrow_mut().push((resolver, factory));
        d
    }
}

impl Manual {
    fn attempts(&self) -> usize {
        self.0.attempts.borrow().len()
    }

    fn refuse(&self) {
        let (resolver, _) = self.0.attempts.borrow_mut().pop().expect("an attempt");
        resolver.errback(ConnectionRefused {
            address: "manual".into(),
        });
    }

    /// Completes the last attempt: builds the protocol, connects it to a StringTransport.
    fn accept(&self) -> (Box<dyn Protocol>, Rc<StringTransport>) {
        let (resolver, factory) = self.0.attempts.borrow_mut().pop().expect("an attempt");
        let transport = StringTransport::new();
        let peer = transport.peer();
        let mut protocol = factory.build_protocol(&peer).expect("a protocol");
        protocol.connection_made(transport.clone());
        resolver.callback(transport.clone());
        (protocol, transport)
    }
}

fn retry_times(clock: &Clock) -> Vec<f64> {
    clock
        .delayed_calls()
        .iter()
        .map(|c| c.time.as_secs_f64())
        .collect()
}

#[test]
fn client_service_backs_off_and_when_connected_fails_after_failures() {
    let clock = Clock::new();
    let endpoint = Manual::default();
    let events = log();
    let client = ClientService::new(
        &clock,
        Box::new(endpoint.clone()),
        recording_factory(&events),
    )
    .retry_policy(backoff_policy(1.0, 60.0, 1.5, || 0.0));

    let patient = capture(client.when_connected());
    let after_two = capture(client.when_connected_fail_after(2));
    assert_eq!(endpoint.attempts(), 0, "nothing before start");
    client.start_service().unwrap();
    assert_eq!(endpoint.attempts(), 1);

    endpoint.refuse();
    assert_eq!(retry_times(&clock), [1.5], "1.0 * 1.5^1");
    assert!(!fired(&after_two));
    clock.advance(1.5);
    assert_eq!(endpoint.attempts(), 1);
    endpoint.refuse();
    assert!(failed_with::<_, ConnectionRefused>(&after_two));
    assert!(!fired(&patient));
    assert_eq!(retry_times(&clock), [1.5 + 2.25], "1.0 * 1.5^2");

    // A waiter added now counts failures from now on.
    let after_one = capture(client.when_connected_fail_after(1));
    clock.advance(2.25);
    endpoint.refuse();
    assert!(failed_with::<_, ConnectionRefused>(&after_one));

    clock.advance(3.375);
    let (mut protocol, transport) = endpoint.accept();
    assert!(succeeded(&patient));
    assert_eq!(take(&events), ["made"]);
    assert!(clock.delayed_calls().is_empty());
    // Connected: at once.
    assert!(succeeded(&capture(client.when_connected())));

    // A loss starts over from the first delay (the success reset the count).
    protocol.connection_lost(Failure::new(ConnectionLost));
    let now = clock.seconds();
    assert_eq!(retry_times(&clock), [now + 1.5]);
    let next = capture(client.when_connected());
    assert!(
        !fired(&next),
        "no connection until the next attempt succeeds"
    );
    drop(transport);

    // Stopping cancels the pending retry and fails the waiters.
    let stopped = capture(client.stop_service());
    assert!(succeeded(&stopped));
    assert!(failed_with::<_, Cancelled>(&next));
    assert!(clock.delayed_calls().is_empty());
    clock.advance(100.0);
    assert_eq!(endpoint.attempts(), 0, "no attempt after stop");
}

#[test]
fn client_service_stop_cancels_an_attempt_in_progress_and_waits_for_the_connection() {
    let clock = Clock::new();
    let endpoint = Manual::default();
    let events = log();
    let client = ClientService::new(
        &clock,
        Box::new(endpoint.clone()),
        recording_factory(&events),
    );

    // Stopping while connecting cancels the attempt; the stop fires at once.
    client.start_service().unwrap();
    assert_eq!(endpoint.attempts(), 1);
    let stopped = capture(client.stop_service());
    assert!(succeeded(&stopped));
    assert!(
        clock.delayed_calls().is_empty(),
        "no retry after a cancelled attempt"
    );

    // Started again: connects, and stopping while connected waits for the loss.
    endpoint.0.attempts.borrow_mut().clear();
    client.start_service().unwrap();
    let (mut protocol, transport) = endpoint.accept();
    let stopped = capture(client.stop_service());
    assert!(transport.disconnecting(), "the connection is being closed");
    assert!(!fired(&stopped));
    protocol.connection_lost(Failure::new(torsion::error::ConnectionDone));
    assert!(succeeded(&stopped));
    assert!(clock.delayed_calls().is_empty());
    assert_eq!(endpoint.attempts(), 0);

    // Restarted while the connection is still closing: it reconnects once it is gone.
    client.start_service().unwrap();
    let (mut protocol, _transport) = endpoint.accept();
    let stopped = capture(client.stop_service());
    client.start_service().unwrap();
    assert_eq!(endpoint.attempts(), 0, "waits for the old connection to go");
    protocol.connection_lost(Failure::new(torsion::error::ConnectionDone));
    assert!(succeeded(&stopped));
    assert_eq!(endpoint.attempts(), 1, "then connects again");
    drop(client.stop_service());
}

#[test]
fn client_service_prepares_each_connection_before_handing_it_out() {
    let clock = Clock::new();
    let endpoint = Manual::default();
    let events = log();
    let pending: Rc<RefCell<Vec<Resolver<()>>>> = Rc::new(RefCell::new(Vec::new()));
    let p = pending.clone();
    let client = ClientService::new(
        &clock,
        Box::new(endpoint.clone()),
        recording_factory(&events),
    )
    .retry_policy(|_| Duration::from_secs(1))
    .prepare_connection(move |transport: &Transport| {
        transport.write(b"LOGIN\r\n");
        let (resolver, d) = Deferred::new();
        p.borrow_mut().push(resolver);
        d
    });
    let connected = capture(client.when_connected());
    client.start_service().unwrap();
    let (_protocol, transport) = endpoint.accept();
    assert_eq!(transport.value(), b"LOGIN\r\n");
    assert!(!fired(&connected), "waits for the preparation");
    assert!(!fired(&capture(client.when_connected_fail_after(1))));

    // A failed preparation closes the connection and counts as a failed attempt.
    pending
        .borrow_mut()
        .remove(0)
        .errback(Failure::msg("bad password"));
    assert!(transport.disconnecting());
    assert!(!fired(&connected));
    assert_eq!(retry_times(&clock), [1.0]);
    clock.advance(1.0);

    let (_protocol, transport) = endpoint.accept();
    pending.borrow_mut().remove(0).callback(());
    assert!(succeeded(&connected));
    assert!(!transport.disconnecting());
    drop(client.stop_service());
}
