//! Endpoints and their string syntax, HostnameEndpoint and ReconnectingClientFactory
//! (CHECKLIST 71–73), over real loopback sockets on every backend.

mod common;

use common::Echo;
use common::TempDir;

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};
use torsion::endpoints::{
    ClientEndpoint, EndpointArgs, HostnameEndpoint, ServerEndpoint, SystemdDomain,
    SystemdServerEndpoint, SystemdSocket, Tcp6ServerEndpoint, TcpClientEndpoint, TcpServerEndpoint,
    UnixClientEndpoint, UnixClientSpec, UnixServerEndpoint, UnixServerSpec, client_from_string,
    connect_protocol as connect_endpoint_protocol, quote_string_argument, register_client_parser,
    register_server_parser, server_from_string, unregister_server_parser,
};
use torsion::error::{
    BadFileError, Cancelled, CannotListen, ConnectionRefused, EndpointSyntaxProblem,
    EndpointUnavailable, InvalidArgument, NoInheritedSocket, NoProtocol,
};
use torsion::net::tcp::{ConnectOptions, DEFAULT_BACKLOG, ListenOptions};
use torsion::net::{Address, Transport};
use torsion::net::{Connector, Port};
use torsion::protocol::{Backoff, ClientFactory, Factory, Protocol, ReconnectingClientFactory};
use torsion::time::{Clock, ReactorTime};
use torsion::{Deferred, Failure, Reactor, Resolver};

fn reactor() -> Reactor {
    Reactor::new().expect("cannot build a reactor")
}

fn server(description: &str) -> Box<dyn ServerEndpoint> {
    server_from_string(&reactor(), description).unwrap_or_else(|e| panic!("{description}: {e}"))
}

fn client(description: &str) -> Box<dyn ClientEndpoint> {
    client_from_string(&reactor(), description).unwrap_or_else(|e| panic!("{description}: {e}"))
}

fn downcast<T: 'static>(endpoint: &dyn Any) -> &T {
    endpoint
        .downcast_ref::<T>()
        .unwrap_or_else(|| panic!("not a {}", std::any::type_name::<T>()))
}

fn server_problem(description: &str) -> EndpointSyntaxProblem {
    match server_from_string(&reactor(), description) {
        Ok(endpoint) => panic!("{description} parsed as {endpoint:?}"),
        Err(err) => {
            assert_eq!(err.description, description);
            err.problem
        }
    }
}

fn client_problem(description: &str) -> EndpointSyntaxProblem {
    match client_from_string(&reactor(), description) {
        Ok(endpoint) => panic!("{description} parsed as {endpoint:?}"),
        Err(err) => err.problem,
    }
}

// ===== parsing =====

#[test]
fn unix_path_gives_mode_0o666_and_the_default_backlog_and_mode_is_octal() {
    // CHECKLIST 71.
    let endpoint = server("unix:/var/run/finger");
    let unix = downcast::<UnixServerEndpoint>(&*endpoint);
    assert_eq!(unix.spec.path.to_str(), Some("/var/run/finger"));
    assert_eq!(unix.spec.mode, 0o666);
    assert_eq!(unix.spec.backlog, DEFAULT_BACKLOG);
    assert!(
        unix.spec.want_pid,
        "lockfile defaults to 1 in strings, as in Twisted"
    );

    for (mode, expected) in [
        ("0660", 0o660),
        ("660", 0o660),
        ("0o600", 0o600),
        ("7", 0o7),
    ] {
        let endpoint = server(&format!("unix:/var/run/finger:mode={mode}"));
        assert_eq!(
            downcast::<UnixServerEndpoint>(&*endpoint).spec.mode,
            expected
        );
    }

    // Twisted's test_unix.
    let endpoint = server("unix:/var/foo/bar:backlog=7:mode=0123:lockfile=1");
    let spec = &downcast::<UnixServerEndpoint>(&*endpoint).spec;
    assert_eq!((spec.mode, spec.backlog, spec.want_pid), (0o123, 7, true));
    let endpoint = server("unix:/var/foo/bar:lockfile=0");
    assert!(!downcast::<UnixServerEndpoint>(&*endpoint).spec.want_pid);
    // Positionally: address, mode, backlog, lockfile.
    let endpoint = server("unix:/tmp/s:600:9:0");
    let spec = &downcast::<UnixServerEndpoint>(&*endpoint).spec;
    assert_eq!((spec.mode, spec.backlog, spec.want_pid), (0o600, 9, false));
}

#[test]
fn a_bad_mode_is_an_error_naming_the_mode() {
    for mode in ["999", "rw-rw-rw-", "0x1ff", "", "17777"] {
        let problem = server_problem(&format!("unix:/tmp/s:mode={mode}"));
        match &problem {
            EndpointSyntaxProblem::BadValue {
                argument, value, ..
            } => assert_eq!((argument.as_str(), value.as_str()), ("mode", mode)),
            other => panic!("mode {mode:?}: {other:?}"),
        }
        assert!(problem.to_string().contains("octal"), "{problem}");
    }
}

#[test]
fn unix_clients_take_path_timeout_and_lockfile() {
    let endpoint = client("unix:path=/var/foo/bar:lockfile=1:timeout=9");
    let spec = &downcast::<UnixClientEndpoint>(&*endpoint).spec;
    assert_eq!(spec.path.to_str(), Some("/var/foo/bar"));
    assert_eq!(spec.timeout, Some(Duration::from_secs(9)));
    assert!(spec.check_pid);
    let endpoint = client("unix:/var/foo/bar");
    let spec = &downcast::<UnixClientEndpoint>(&*endpoint).spec;
    assert_eq!(spec.timeout, Some(Duration::from_secs(30)));
    assert!(!spec.check_pid);
}

#[test]
fn an_unknown_endpoint_type_is_an_error_naming_the_type() {
    // CHECKLIST 72.
    let problem = server_problem("foo:bar:baz");
    assert_eq!(problem, EndpointSyntaxProblem::UnknownType("foo".into()));
    let err = server_from_string(&reactor(), "foo:bar:baz").unwrap_err();
    assert!(err.to_string().contains("\"foo\""), "{err}");
    assert_eq!(
        client_problem("gopher:host=x"),
        EndpointSyntaxProblem::UnknownType("gopher".into())
    );
    // ssl and tls are built in: known, and checked (no key file here).
    assert!(matches!(
        server_problem("ssl:443:privateKey=/nonexistent.pem"),
        EndpointSyntaxProblem::Invalid { .. }
    ));
}

#[test]
fn backslash_escapes_colons_equals_and_backslashes() {
    // Twisted's test_escape.
    let endpoint = server(r"unix:foo\:bar\=baz\:qux\\");
    let spec = &downcast::<UnixServerEndpoint>(&*endpoint).spec;
    assert_eq!(spec.path.to_str(), Some(r"foo:bar=baz:qux\"));
    // Twisted's test_impliedEscape: `=` in a value needs no escape.
    let endpoint = server("unix:address=foo=bar");
    let spec = &downcast::<UnixServerEndpoint>(&*endpoint).spec;
    assert_eq!(spec.path.to_str(), Some("foo=bar"));
    // IPv6 interfaces need their colons escaped.
    let endpoint = server(r"tcp6:8080:interface=\:\:1");
    let tcp6 = downcast::<Tcp6ServerEndpoint>(&*endpoint);
    assert_eq!(tcp6.interface, "::1".parse::<std::net::IpAddr>().unwrap());
    let endpoint = server(r"tcp:80:interface=\:\:1");
    let tcp = downcast::<TcpServerEndpoint>(&*endpoint);
    assert_eq!(tcp.interface.to_string(), "::1");
    // Twisted's test_quoteStringArgument, and back.
    let quoted = quote_string_argument(r"some : stuff \");
    assert_eq!(quoted, r"some \: stuff \\");
    let args = EndpointArgs::parse(&format!("x:{quoted}:k={quoted}")).unwrap();
    assert_eq!(args.positional, [r"some : stuff \"]);
    assert_eq!(args.keywords, [("k".into(), r"some : stuff \".into())]);
}

#[test]
fn tcp_servers_take_port_interface_and_backlog() {
    let endpoint = server("tcp:8080:interface=127.0.0.1:backlog=100");
    let tcp = downcast::<TcpServerEndpoint>(&*endpoint);
    assert_eq!((tcp.port, tcp.backlog), (8080, 100));
    assert_eq!(tcp.interface.to_string(), "127.0.0.1");
    // Twisted's test_tcp.
    let endpoint = server("tcp:1234:backlog=12:interface=10.0.0.1");
    let tcp = downcast::<TcpServerEndpoint>(&*endpoint);
    assert_eq!((tcp.port, tcp.backlog), (1234, 12));
    assert_eq!(tcp.interface.to_string(), "10.0.0.1");
    // Defaults, and positionally: port, interface, backlog.
    let endpoint = server("tcp:80");
    let tcp = downcast::<TcpServerEndpoint>(&*endpoint);
    assert_eq!((tcp.port, tcp.backlog), (80, DEFAULT_BACKLOG));
    assert_eq!(tcp.interface.to_string(), "0.0.0.0");
    let endpoint = server("TCP:80:127.0.0.1:5");
    let tcp = downcast::<TcpServerEndpoint>(&*endpoint);
    assert_eq!(
        (tcp.interface.to_string(), tcp.backlog),
        ("127.0.0.1".into(), 5)
    );
    // tcp6 listens on :: by default.
    let endpoint = server("tcp6:8080");
    let tcp6 = downcast::<Tcp6ServerEndpoint>(&*endpoint);
    assert_eq!((tcp6.port, tcp6.interface.to_string()), (8080, "::".into()));
}

#[test]
fn tcp_clients_take_host_and_port_by_position_or_keyword() {
    for description in [
        "tcp:host=example.com:port=80:timeout=5",
        "tcp:example.com:80:timeout=5",
        "tcp:host=example.com:80:timeout=5",
        "tcp:example.com:port=80:timeout=5",
    ] {
        let endpoint = client(description);
        let tcp = downcast::<TcpClientEndpoint>(&*endpoint);
        assert_eq!(
            (tcp.host.as_str(), tcp.port),
            ("example.com", 80),
            "{description}"
        );
        assert_eq!(tcp.timeout, Some(Duration::from_secs(5)));
        assert_eq!(tcp.bind_address, None);
    }
    let endpoint = client("tcp:www.example.com:80:bindAddress=192.0.2.100");
    let tcp = downcast::<TcpClientEndpoint>(&*endpoint);
    assert_eq!(tcp.timeout, Some(Duration::from_secs(30)));
    assert_eq!(tcp.bind_address, Some("192.0.2.100:0".parse().unwrap()));
}

#[test]
fn systemd_takes_a_domain_and_an_index_or_a_name() {
    let endpoint = server("systemd:domain=INET:index=0");
    let systemd = downcast::<SystemdServerEndpoint>(&*endpoint);
    assert_eq!(systemd.spec.domain, SystemdDomain::Inet);
    assert_eq!(systemd.spec.socket, SystemdSocket::Index(0));
    let endpoint = server("systemd:domain=UNIX:name=control");
    let systemd = downcast::<SystemdServerEndpoint>(&*endpoint);
    assert_eq!(systemd.spec.domain, SystemdDomain::Unix);
    assert_eq!(systemd.spec.socket, SystemdSocket::Name("control".into()));
    let endpoint = server("systemd:INET6:3");
    let systemd = downcast::<SystemdServerEndpoint>(&*endpoint);
    assert_eq!(systemd.spec.domain, SystemdDomain::Inet6);

    assert!(matches!(
        server_problem("systemd:domain=IPX:index=0"),
        EndpointSyntaxProblem::BadValue { argument, .. } if argument == "domain"
    ));
    for both_or_neither in ["systemd:domain=INET", "systemd:domain=INET:index=0:name=x"] {
        let problem = server_problem(both_or_neither);
        assert!(
            problem
                .to_string()
                .contains("exactly one of index and name"),
            "{problem}"
        );
    }
    // This process was not socket-activated: it inherited no socket.
    let mut listening = endpoint.listen(Rc::new(|| Quiet));
    let failure = listening.take_result().unwrap().err().unwrap();
    assert_eq!(
        failure.downcast_ref::<NoInheritedSocket>(),
        Some(&NoInheritedSocket {
            index: 3,
            inherited: 0
        })
    );
    // Finding a socket by name is not supported yet, and says so.
    let endpoint = server("systemd:domain=UNIX:name=control");
    let mut listening = endpoint.listen(Rc::new(|| Quiet));
    let failure = listening.take_result().unwrap().err().unwrap();
    assert!(failure.check::<EndpointUnavailable>(), "{failure}");
    assert!(failure.to_string().contains("LISTEN_FDNAMES"), "{failure}");
    assert!(failure.to_string().contains("\"control\""), "{failure}");
}

#[test]
fn malformed_descriptions_are_errors_naming_the_problem() {
    use EndpointSyntaxProblem::*;
    let bad = |p: EndpointSyntaxProblem, arg: &str, val: &str| match p {
        BadValue {
            argument, value, ..
        } => assert_eq!((argument.as_str(), value.as_str()), (arg, val)),
        other => panic!("expected a bad {arg}: {other:?}"),
    };
    bad(server_problem("tcp:80x"), "port", "80x");
    bad(server_problem("tcp:70000"), "port", "70000");
    bad(server_problem("tcp:-1"), "port", "-1");
    bad(server_problem("tcp:80:backlog=lots"), "backlog", "lots");
    bad(
        server_problem("tcp:80:interface=localhost"),
        "interface",
        "localhost",
    );
    bad(client_problem("tcp:example.com:http"), "port", "http");
    bad(
        client_problem("tcp:example.com:80:timeout=soon"),
        "timeout",
        "soon",
    );
    bad(
        client_problem("tcp:example.com:80:timeout=-1"),
        "timeout",
        "-1",
    );
    bad(
        client_problem("tcp:h:80:bindAddress=here"),
        "bindAddress",
        "here",
    );
    bad(client_problem("unix:/x:lockfile=yes"), "lockfile", "yes");
    let msg = server_problem("tcp:80x").to_string();
    assert!(
        msg.contains("bad port \"80x\"") && msg.contains("0 to 65535"),
        "{msg}"
    );

    match server_problem("tcp:80:bogus=1") {
        UnknownKeyword {
            keyword, accepted, ..
        } => {
            assert_eq!(keyword, "bogus");
            assert_eq!(accepted, "port, interface, backlog");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        server_problem("tcp:interface=127.0.0.1"),
        MissingArgument { argument, .. } if argument == "port"
    ));
    assert!(matches!(
        client_problem("tcp:port=80"),
        MissingArgument { argument, .. } if argument == "host"
    ));
    assert!(matches!(
        client_problem("unix:timeout=3"),
        MissingArgument { argument, .. } if argument == "path"
    ));
    assert!(matches!(
        server_problem("tcp:80:127.0.0.1:50:extra"),
        TooManyArguments {
            given: 4,
            max: 3,
            ..
        }
    ));
    assert!(matches!(
        client_problem("tcp:a:1:2"),
        TooManyArguments {
            given: 3,
            max: 2,
            ..
        }
    ));
    assert!(matches!(
        server_problem("tcp:80:port=81"),
        DuplicateArgument { argument, .. } if argument == "port"
    ));
    assert!(matches!(
        server_problem("unix:/a:path=/b"),
        DuplicateArgument { argument, .. } if argument == "address"
    ));
    assert_eq!(server_problem(r"tcp:80\"), TrailingBackslash);
    assert_eq!(server_problem(""), Empty);
    assert_eq!(server_problem("port=80"), Empty);
    let err = server_from_string(&reactor(), "tcp:80:bogus=1").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid endpoint description \"tcp:80:bogus=1\": unknown keyword \"bogus\" for tcp: \
         it takes port, interface, backlog"
    );
}

#[test]
fn registered_parsers_add_endpoint_types() {
    let reactor = reactor();
    register_server_parser("loopback", |reactor, args| {
        let args = args.bind(&["port"], 1)?;
        let port = args
            .parse_with("port", "a port number", |v| v.parse().ok())?
            .unwrap_or(0);
        Ok(Box::new(
            TcpServerEndpoint::new(reactor, port).interface([127, 0, 0, 1].into()),
        ))
    })
    .unwrap();
    let endpoint = server_from_string(&reactor, "LOOPBACK:8080").unwrap();
    let tcp = downcast::<TcpServerEndpoint>(&*endpoint);
    assert_eq!(
        (tcp.port, tcp.interface.to_string()),
        (8080, "127.0.0.1".into())
    );
    // A plugin's arguments are checked by the same binder.
    assert!(matches!(
        server_problem("loopback:1:2"),
        EndpointSyntaxProblem::TooManyArguments { .. }
    ));
    assert!(unregister_server_parser("loopback"));
    assert_eq!(
        server_problem("loopback:8080"),
        EndpointSyntaxProblem::UnknownType("loopback".into())
    );
    // Built-in types cannot be replaced.
    assert!(register_server_parser("tcp", |_, _| unreachable!()).is_err());
    assert!(register_client_parser("Unix", |_, _| unreachable!()).is_err());
    assert!(register_client_parser("a:b", |_, _| unreachable!()).is_err());
}

// ===== over loopback =====

struct Quiet;
impl Protocol for Quiet {}

/// A server factory counting connections and start/stop calls.
#[derive(Default)]
struct Counting {
    built: Cell<u32>,
    started: Cell<u32>,
    stopped: Cell<u32>,
}

impl Factory for Counting {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        self.built.set(self.built.get() + 1);
        Some(Box::new(Echo::default()))
    }
    fn start_factory(&self) {
        self.started.set(self.started.get() + 1);
    }
    fn stop_factory(&self) {
        self.stopped.set(self.stopped.get() + 1);
    }
}

impl ClientFactory for Counting {}

/// Collects what arrives; stops the reactor once `want` bytes came.
struct Collect {
    received: Rc<RefCell<Vec<u8>>>,
    want: usize,
    reactor: Reactor,
}

impl Protocol for Collect {
    fn data_received(&mut self, data: &[u8]) {
        self.received.borrow_mut().extend_from_slice(data);
        if self.received.borrow().len() >= self.want {
            let _ = self.reactor.stop();
        }
    }
}

fn local_port(reactor: &Reactor, factory: Rc<impl Factory>) -> (Port, SocketAddr) {
    let options = ListenOptions {
        interface: [127, 0, 0, 1].into(),
        ..ListenOptions::default()
    };
    let port = reactor.listen_tcp_with(0, factory, options).unwrap();
    let address = port.host().socket_addr().unwrap();
    (port, address)
}

fn a_closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    address
}

/// An address that never answers: a listener that never accepts, its backlog filled, so
/// further SYNs are dropped. Keep the returned sockets alive while it is needed.
fn an_address_that_never_answers() -> (SocketAddr, Vec<socket2::Socket>) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    listener.listen(0).unwrap();
    let address = listener.local_addr().unwrap().as_socket().unwrap();
    let mut keep = Vec::new();
    for _ in 0..16 {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&address.into());
        keep.push(s);
    }
    keep.push(listener);
    (address, keep)
}

type Outcome<T> = Rc<RefCell<Option<Result<T, Failure>>>>;

/// Stores the Deferred's result when it fires.
fn capture<T: 'static>(d: torsion::Deferred<T>) -> Outcome<T> {
    let out: Outcome<T> = Rc::new(RefCell::new(None));
    let o = out.clone();
    drop(d.add_both(move |r| {
        *o.borrow_mut() = Some(r);
        Ok::<(), Failure>(())
    }));
    out
}

/// Delayed calls scheduled by torsion itself (not by the test) still pending.
fn library_timers(clock: &dyn ReactorTime) -> Vec<String> {
    clock
        .delayed_calls()
        .into_iter()
        .filter(|c| !c.location.file().contains("tests"))
        .map(|c| format!("{} from {}", c.time, c.location))
        .collect()
}

/// Stops the reactor soon after the Deferred behind `outcome` fired.
fn stop_when_fired<T: 'static>(reactor: &Reactor, outcome: &Outcome<T>) {
    let (r, o) = (reactor.clone(), outcome.clone());
    reactor.call_later(0.01, move || {
        if o.borrow().is_some() {
            let _ = r.stop();
        } else {
            stop_when_fired(&r, &o);
        }
    });
}

fn stop_after(reactor: &Reactor, secs: f64) {
    let r = reactor.clone();
    reactor.call_later(secs, move || {
        let _ = r.stop();
    });
}

reactor_test! {
    fn tcp_endpoints_listen_and_connect_on_loopback(reactor: Reactor) {
        let server_factory = Rc::new(Counting::default());
        let endpoint = server_from_string(&reactor, "tcp:0:interface=127.0.0.1").unwrap();
        let port = endpoint.listen(server_factory.clone()).take_result().unwrap().unwrap();
        // The same factory on a second endpoint is started once, as Twisted counts ports.
        let second = TcpServerEndpoint::new(&reactor, 0).interface([127, 0, 0, 1].into());
        let port2 = second.listen(server_factory.clone()).take_result().unwrap().unwrap();
        assert_eq!(server_factory.started.get(), 1);
        let address = port.host().socket_addr().unwrap();

        let description = format!("tcp:127.0.0.1:{}:timeout=5", address.port());
        let endpoint = client_from_string(&reactor, &description).unwrap();
        let received = Rc::new(RefCell::new(Vec::new()));
        let (r, rr) = (received.clone(), reactor.clone());
        let connected = endpoint.connect(Rc::new(move || Collect {
            received: r.clone(),
            want: 5,
            reactor: rr.clone(),
        }));
        let peer = Rc::new(RefCell::new(None));
        let p = peer.clone();
        drop(connected.map(move |transport: Transport| {
            *p.borrow_mut() = Some(transport.peer());
            transport.write(b"hello");
        }));
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        assert_eq!(&*received.borrow(), b"hello");
        assert_eq!(*peer.borrow(), Some(Address::Tcp(address)));
        assert_eq!(server_factory.built.get(), 1);
        drop((port.stop_listening(), port2.stop_listening()));
    }

    fn a_refused_connection_fails_the_connect_deferred(reactor: Reactor) {
        let address = a_closed_port();
        let endpoint = TcpClientEndpoint::new(&reactor, "127.0.0.1", address.port());
        let outcome = capture(endpoint.connect(Rc::new(|| Quiet)));
        stop_after(&reactor, 1.0);
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        let outcome = outcome.borrow_mut().take().expect("the Deferred fired");
        let failure = outcome.err().unwrap();
        assert!(failure.check::<ConnectionRefused>(), "{failure}");
    }

    fn a_factory_that_builds_no_protocol_fails_with_no_protocol(reactor: Reactor) {
        struct Refuses;
        impl Factory for Refuses {
            fn build_protocol(self: Rc<Self>, _a: &Address) -> Option<Box<dyn Protocol>> {
                None
            }
        }
        let (_port, address) = local_port(&reactor, Rc::new(Echo::default));
        let endpoint = TcpClientEndpoint::new(&reactor, "127.0.0.1", address.port());
        let outcome = capture(endpoint.connect(Rc::new(Refuses)));
        stop_after(&reactor, 0.5);
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        let failure = outcome.borrow_mut().take().unwrap().err().unwrap();
        assert!(failure.check::<NoProtocol>(), "{failure}");
    }

    fn cancelling_a_connect_deferred_stops_the_attempt(reactor: Reactor) {
        let (slow, _keep) = an_address_that_never_answers();
        let endpoint = TcpClientEndpoint::new(&reactor, "127.0.0.1", slow.port());
        let built = Rc::new(Cell::new(false));
        let b = built.clone();
        let connected = endpoint.connect(Rc::new(move || {
            b.set(true);
            Quiet
        }));
        let handle = connected.handle();
        let outcome = capture(connected);
        let r = reactor.clone();
        let attempting = Rc::new(Cell::new(0));
        let a = attempting.clone();
        reactor.call_later(0.2, move || {
            a.set(r.writers().len());
            handle.cancel();
        });
        stop_after(&reactor, 0.5);
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        assert_eq!(attempting.get(), 1, "the attempt was under way when cancelled");
        let failure = outcome.borrow_mut().take().unwrap().err().unwrap();
        assert!(failure.check::<Cancelled>(), "{failure}");
        assert!(reactor.writers().is_empty(), "the attempt's socket is closed");
        assert_eq!(library_timers(&reactor), Vec::<String>::new(), "its timeout is cancelled");
        assert!(!built.get());
    }

    fn connect_protocol_fires_with_the_transport(reactor: Reactor) {
        let (_port, address) = local_port(&reactor, Rc::new(Echo::default));
        let received = Rc::new(RefCell::new(Vec::new()));
        let protocol = Collect { received: received.clone(), want: 4, reactor: reactor.clone() };
        let connected = connect_endpoint_protocol(&TcpClientEndpoint::new(&reactor, "127.0.0.1", address.port()), protocol);
        drop(connected.map(|transport: Transport| transport.write(b"ping")));
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        assert_eq!(&*received.borrow(), b"ping");
    }

    fn hostname_endpoint_tries_the_next_address_after_the_attempt_delay(reactor: Reactor) {
        // CHECKLIST 73, on an injected clock: the good address is tried only once the clock
        // passes 0.3 s; its win stops the slow attempt and leaves no timer.
        let (slow, _keep) = an_address_that_never_answers();
        let server = Rc::new(Counting::default());
        let (_port, good) = local_port(&reactor, server.clone());
        let clock = Clock::new();
        let endpoint = HostnameEndpoint::new(&reactor, "example.test", 0)
            .clock(&clock)
            .with_addresses(vec![slow, good]);
        let outcome = capture(endpoint.connect(Rc::new(|| Quiet)));
        let checks = Rc::new(RefCell::new(Vec::new()));
        let (c, s, o, k) = (checks.clone(), server.clone(), outcome.clone(), clock.clone());
        reactor.call_later(0.2, move || {
            c.borrow_mut().push(("before 0.29 s", s.built.get(), o.borrow().is_some()));
            k.advance(0.29);
        });
        let (c, s, o, k) = (checks.clone(), server.clone(), outcome.clone(), clock.clone());
        let r = reactor.clone();
        reactor.call_later(0.4, move || {
            c.borrow_mut().push(("at 0.29 s", s.built.get(), o.borrow().is_some()));
            k.advance(0.01);
            stop_when_fired(&r, &o);
        });
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        assert_eq!(*checks.borrow(), [("before 0.29 s", 0, false), ("at 0.29 s", 0, false)]);
        assert_eq!(server.built.get(), 1, "the good address was tried at 0.3 s");
        let transport = outcome.borrow_mut().take().unwrap().unwrap();
        assert_eq!(transport.peer(), Address::Tcp(good));
        assert!(reactor.writers().is_empty(), "the slow attempt was stopped");
        assert_eq!(library_timers(&reactor), Vec::<String>::new());
        assert_eq!(library_timers(&clock), Vec::<String>::new());
    }

    fn hostname_endpoint_attempt_delay_in_real_time(reactor: Reactor) {
        let (slow, _keep) = an_address_that_never_answers();
        let (_port, good) = local_port(&reactor, Rc::new(Echo::default));
        let endpoint = HostnameEndpoint::new(&reactor, "example.test", 0)
            .with_addresses(vec![slow, good]);
        let started = Instant::now();
        let elapsed = Rc::new(Cell::new(None));
        let (e, r) = (elapsed.clone(), reactor.clone());
        drop(endpoint.connect(Rc::new(|| Quiet)).map(move |_t| {
            e.set(Some(started.elapsed()));
            // Let the stopped attempt finish before looking for leftovers.
            let r2 = r.clone();
            r.call_later(0.1, move || { let _ = r2.stop(); });
        }));
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        let elapsed = elapsed.get().expect("connected");
        assert!(elapsed >= Duration::from_millis(290), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        assert!(reactor.writers().is_empty());
        assert_eq!(library_timers(&reactor), Vec::<String>::new());
    }

    fn hostname_endpoint_fails_with_the_last_failure_once_all_fail(reactor: Reactor) {
        // A refused attempt starts the next one at once, whatever the attempt delay.
        let addresses = vec![a_closed_port(), a_closed_port()];
        let last = addresses[1];
        let endpoint = HostnameEndpoint::new(&reactor, "example.test", 0)
            .attempt_delay(Duration::from_secs(10))
            .with_addresses(addresses);
        let outcome = capture(endpoint.connect(Rc::new(|| Quiet)));
        stop_when_fired(&reactor, &outcome);
        let started = Instant::now();
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "did not wait 10 s between attempts");
        let failure = outcome.borrow_mut().take().unwrap().err().unwrap();
        let refused = failure.downcast_ref::<ConnectionRefused>().expect("refused");
        assert_eq!(refused.address, last.to_string());
        assert_eq!(library_timers(&reactor), Vec::<String>::new());
    }

    fn cancelling_a_hostname_endpoint_stops_every_attempt(reactor: Reactor) {
        let (slow1, _keep1) = an_address_that_never_answers();
        let (slow2, _keep2) = an_address_that_never_answers();
        let endpoint = HostnameEndpoint::new(&reactor, "example.test", 0)
            .attempt_delay(Duration::from_millis(50))
            .with_addresses(vec![slow1, slow2]);
        let connected = endpoint.connect(Rc::new(|| Quiet));
        let handle = connected.handle();
        let outcome = capture(connected);
        let r = reactor.clone();
        let attempting = Rc::new(Cell::new(0));
        let a = attempting.clone();
        reactor.call_later(0.3, move || {
            a.set(r.writers().len());
            handle.cancel();
        });
        stop_after(&reactor, 0.5);
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        assert_eq!(attempting.get(), 2);
        let failure = outcome.borrow_mut().take().unwrap().err().unwrap();
        assert!(failure.check::<Cancelled>(), "{failure}");
        assert!(reactor.writers().is_empty());
        assert_eq!(library_timers(&reactor), Vec::<String>::new());
    }

    fn hostname_endpoint_resolves_names_in_the_thread_pool(reactor: Reactor) {
        // localhost may resolve to ::1 first, where nothing listens: the refusal moves on
        // to 127.0.0.1 at once.
        let (_port, good) = local_port(&reactor, Rc::new(Echo::default));
        let endpoint = HostnameEndpoint::new(&reactor, "localhost", good.port());
        let outcome = capture(endpoint.connect(Rc::new(|| Quiet)));
        stop_when_fired(&reactor, &outcome);
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        let transport = outcome.borrow_mut().take().unwrap().unwrap();
        assert_eq!(transport.peer(), Address::Tcp(good));
    }

    fn an_empty_address_list_fails_with_a_dns_lookup_error(reactor: Reactor) {
        // What a name that resolves to nothing gives (no name is looked up here: tests send
        // no DNS queries).
        let endpoint = HostnameEndpoint::new(&reactor, "example.test", 80).with_addresses(vec![]);
        let failure = endpoint.connect(Rc::new(|| Quiet)).take_result().unwrap().err().unwrap();
        let lookup = failure.downcast_ref::<torsion::error::DnsLookupError>().expect("lookup error");
        assert_eq!(lookup.host, "example.test");
        // The cause stays typed: an io::Error of kind NotFound, as the error's source.
        assert_eq!(lookup.source.kind(), std::io::ErrorKind::NotFound);
        assert!(std::error::Error::source(lookup).is_some());
        assert_eq!(library_timers(&reactor), Vec::<String>::new());
    }
}

// ===== ReconnectingClientFactory =====

/// A connector that exists but never gets to run (the reactor is not run).
fn idle_connector(reactor: &Reactor) -> Connector {
    reactor.connect_tcp("127.0.0.1", 9, Rc::new(|| Quiet))
}

fn scheduled_delay(clock: &Clock) -> f64 {
    let calls = clock.delayed_calls();
    assert_eq!(calls.len(), 1, "one reconnection scheduled");
    calls[0].time.as_secs_f64() - clock.seconds()
}

#[test]
fn reconnecting_delays_grow_by_e_up_to_max_delay() {
    let reactor = reactor();
    let clock = Clock::new();
    let factory = ReconnectingClientFactory::new(&clock, Rc::new(|| Quiet));
    assert_eq!(factory.backoff(), Backoff::default());
    assert_eq!(factory.backoff().factor, std::f64::consts::E);
    assert_eq!(factory.backoff().initial_delay, Duration::from_secs(1));
    assert_eq!(factory.backoff().max_delay, Duration::from_secs(3600));
    factory.set_backoff(Backoff {
        jitter: 0.0,
        max_delay: Duration::from_secs(10),
        ..Backoff::default()
    });
    let connector = idle_connector(&reactor);
    let e = std::f64::consts::E;
    for (i, expected) in [1.0, e, e * e, 10.0, 10.0].into_iter().enumerate() {
        factory.retry(&connector);
        let delay = scheduled_delay(&clock);
        assert!(
            (delay - expected).abs() < 1e-6,
            "retry {i}: {delay} != {expected}"
        );
        assert_eq!(factory.retries(), i as u32 + 1);
    }
    assert_eq!(factory.delay(), Duration::from_secs(10));
    factory.stop_trying();
    assert!(clock.delayed_calls().is_empty());
}

#[test]
fn reconnecting_jitter_draws_from_a_normal_distribution() {
    let reactor = reactor();
    let clock = Clock::new();
    let factory = ReconnectingClientFactory::new(&clock, Rc::new(|| Quiet));
    let jitter = Backoff::default().jitter;
    assert!((jitter - 0.119626565582).abs() < 1e-12);
    let draws = Rc::new(RefCell::new(vec![1.0, -1.0, 2.0].into_iter()));
    let d = draws.clone();
    factory.set_normal_source(move || d.borrow_mut().next().unwrap());
    let connector = idle_connector(&reactor);
    let e = std::f64::consts::E;
    // Twisted: delay = normalvariate(delay, delay * jitter); then delay *= factor.
    let mut base = 1.0;
    for z in [1.0, -1.0, 2.0] {
        factory.retry(&connector);
        let expected = base * (1.0 + jitter * z);
        let delay = scheduled_delay(&clock);
        assert!((delay - expected).abs() < 1e-9, "{delay} != {expected}");
        base = expected * e;
        assert!((factory.delay().as_secs_f64() - base).abs() < 1e-6);
    }
    // The default source spreads delays out.
    let a = ReconnectingClientFactory::new(&clock, Rc::new(|| Quiet));
    let b = ReconnectingClientFactory::new(&clock, Rc::new(|| Quiet));
    factory.stop_trying();
    a.retry(&connector);
    let first = scheduled_delay(&clock);
    a.stop_trying();
    b.retry(&connector);
    let second = scheduled_delay(&clock);
    b.stop_trying();
    assert_ne!(first, second);
    assert!((first - 1.0).abs() < 1.0 && (second - 1.0).abs() < 1.0);
}

#[test]
fn stop_trying_cancels_the_scheduled_reconnection() {
    let reactor = reactor();
    let clock = Clock::new();
    let factory = ReconnectingClientFactory::new(&clock, Rc::new(|| Quiet));
    let connector = idle_connector(&reactor);
    factory.retry(&connector);
    assert!(factory.retry_pending());
    factory.stop_trying();
    assert!(!factory.retry_pending());
    assert!(!factory.continue_trying());
    assert!(clock.delayed_calls().is_empty());
    factory.retry(&connector);
    assert!(
        clock.delayed_calls().is_empty(),
        "no retry after stop_trying"
    );
}

/// The inner factory of the live tests: records failures, and stops the reactor (and the
/// retries) after `stop_after` failures.
struct Tracking {
    me: Weak<ReconnectingClientFactory<Tracking>>,
    reactor: Reactor,
    failures: Cell<u32>,
    stop_after: u32,
    connected: Cell<u32>,
    retries_when_connected: Cell<Option<u32>>,
    /// Runs at the first failure.
    on_failure: RefCell<Option<Box<dyn FnOnce()>>>,
}

struct Greets {
    factory: Rc<Tracking>,
}

impl Protocol for Greets {
    fn connection_made(&mut self, transport: Transport) {
        let f = &self.factory;
        f.connected.set(f.connected.get() + 1);
        if let Some(rcf) = f.me.upgrade() {
            f.retries_when_connected.set(Some(rcf.retries()));
            rcf.reset_delay();
        }
        transport.lose_connection();
    }
}

impl Factory for Tracking {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Greets { factory: self }))
    }
}

impl ClientFactory for Tracking {
    fn client_connection_failed(&self, _c: &Connector, _reason: Failure) {
        self.failures.set(self.failures.get() + 1);
        let hook = self.on_failure.borrow_mut().take();
        if let Some(hook) = hook {
            hook();
        }
        if self.failures.get() >= self.stop_after
            && let Some(rcf) = self.me.upgrade()
        {
            rcf.stop_trying();
            let _ = self.reactor.stop();
        }
    }

    fn client_connection_lost(&self, _c: &Connector, _reason: Failure) {
        if let Some(rcf) = self.me.upgrade() {
            rcf.stop_trying();
        }
        let _ = self.reactor.stop();
    }
}

fn tracking(reactor: &Reactor, stop_after: u32) -> Rc<ReconnectingClientFactory<Tracking>> {
    let factory = ReconnectingClientFactory::new_cyclic(reactor, |me| Tracking {
        me: me.clone(),
        reactor: reactor.clone(),
        failures: Cell::new(0),
        stop_after,
        connected: Cell::new(0),
        retries_when_connected: Cell::new(None),
        on_failure: RefCell::new(None),
    });
    factory.set_backoff(Backoff {
        initial_delay: Duration::from_millis(20),
        jitter: 0.0,
        factor: 1.5,
        ..Backoff::default()
    });
    factory
}

reactor_test! {
    fn reconnecting_retries_until_stop_trying(reactor: Reactor) {
        let factory = tracking(&reactor, 3);
        let connector = reactor.connect_tcp("127.0.0.1", a_closed_port().port(), factory.clone());
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        assert_eq!(factory.inner().failures.get(), 3);
        assert_eq!(factory.retries(), 2, "two retries after the first attempt");
        assert!(!factory.retry_pending());
        assert_eq!(library_timers(&reactor), Vec::<String>::new());
        assert_eq!(connector.state(), torsion::net::ConnectorState::Disconnected);
    }

    fn reconnecting_honours_max_retries(reactor: Reactor) {
        let factory = tracking(&reactor, u32::MAX);
        factory.set_backoff(Backoff { max_retries: Some(2), ..factory.backoff() });
        reactor.connect_tcp("127.0.0.1", a_closed_port().port(), factory.clone());
        stop_after(&reactor, 1.0);
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        assert_eq!(factory.inner().failures.get(), 3, "the first attempt and 2 retries");
        assert_eq!(factory.retries(), 3);
        assert!(!factory.retry_pending());
    }

    fn reconnecting_reaches_a_server_started_after_the_first_failure(reactor: Reactor) {
        // The first attempt is refused; the server starts; the retry connects and the
        // protocol's reset_delay puts the delay back to the initial one.
        let address = a_closed_port();
        let factory = tracking(&reactor, u32::MAX);
        let r = reactor.clone();
        let server: Rc<RefCell<Option<Port>>> = Rc::new(RefCell::new(None));
        let s = server.clone();
        *factory.inner().on_failure.borrow_mut() = Some(Box::new(move || {
            let options = ListenOptions { interface: [127, 0, 0, 1].into(), ..ListenOptions::default() };
            *s.borrow_mut() = Some(r.listen_tcp_with(address.port(), Rc::new(Echo::default), options).unwrap());
        }));
        reactor.connect_tcp("127.0.0.1", address.port(), factory.clone());
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        let inner = factory.inner();
        assert_eq!(inner.connected.get(), 1);
        assert!(inner.retries_when_connected.get() >= Some(1));
        assert_eq!(factory.retries(), 0, "reset_delay after connecting");
        assert_eq!(factory.delay(), Duration::from_millis(20));
        drop(server.borrow_mut().take().map(|p| p.stop_listening()));
    }
}

#[test]
fn connect_options_default_to_twisteds() {
    // The endpoints' defaults are the connector's.
    let reactor = reactor();
    let tcp = TcpClientEndpoint::new(&reactor, "h", 1);
    assert_eq!(tcp.timeout, ConnectOptions::default().timeout);
    let server = TcpServerEndpoint::new(&reactor, 1);
    assert_eq!(server.backlog, ListenOptions::default().backlog);
}

#[test]
fn server_endpoints_listen_with_the_default_backlog_unless_told_otherwise() {
    // Not Twisted's 50 but DEFAULT_BACKLOG, in endpoint values and strings alike; a value's
    // `backlog` and a string's `backlog=N` set another.
    let reactor = reactor();
    assert_eq!(DEFAULT_BACKLOG, 1024);
    assert_eq!(TcpServerEndpoint::new(&reactor, 1).backlog, DEFAULT_BACKLOG);
    assert_eq!(
        Tcp6ServerEndpoint::new(&reactor, 1).backlog,
        DEFAULT_BACKLOG
    );
    assert_eq!(UnixServerSpec::new("/run/x").backlog, DEFAULT_BACKLOG);
    assert_eq!(
        TcpServerEndpoint::new(&reactor, 1).backlog(2048).backlog,
        2048
    );
    assert_eq!(
        Tcp6ServerEndpoint::new(&reactor, 1).backlog(2048).backlog,
        2048
    );
    for (description, expected) in [("tcp:80", DEFAULT_BACKLOG), ("tcp:80:backlog=2048", 2048)] {
        assert_eq!(
            downcast::<TcpServerEndpoint>(&*server(description)).backlog,
            expected
        );
    }
    for (description, expected) in [("tcp6:80", DEFAULT_BACKLOG), ("tcp6:80:backlog=2048", 2048)] {
        assert_eq!(
            downcast::<Tcp6ServerEndpoint>(&*server(description)).backlog,
            expected
        );
    }
    for (description, expected) in [
        ("unix:/run/x", DEFAULT_BACKLOG),
        ("unix:/run/x:backlog=2048", 2048),
    ] {
        assert_eq!(
            downcast::<UnixServerEndpoint>(&*server(description))
                .spec
                .backlog,
            expected
        );
    }
}

// ===== UNIX sockets and systemd, over real sockets =====

/// `path` as an endpoint string argument.
fn quoted(path: &Path) -> String {
    quote_string_argument(path.to_str().expect("a UTF-8 temporary path"))
}

/// The lock file of the UNIX socket `path`.
fn lock_of(path: &Path) -> PathBuf {
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    PathBuf::from(lock)
}

/// Sends its payload once connected; fires `echoed` with what came back once as many bytes
/// did, then closes.
struct RoundTrip {
    payload: Vec<u8>,
    received: Vec<u8>,
    echoed: Option<Resolver<Vec<u8>>>,
    transport: Option<Transport>,
}

impl Protocol for RoundTrip {
    fn connection_made(&mut self, transport: Transport) {
        transport.write(&self.payload);
        self.transport = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.received.extend_from_slice(data);
        if self.received.len() >= self.payload.len()
            && let Some(echoed) = self.echoed.take()
        {
            echoed.callback(std::mem::take(&mut self.received));
            if let Some(t) = &self.transport {
                t.lose_connection();
            }
        }
    }
    fn connection_lost(&mut self, reason: Failure) {
        if let Some(echoed) = self.echoed.take() {
            echoed.errback(reason);
        }
    }
}

/// Connects through `endpoint` and sends `payload`: the connection's transport, and what
/// came back.
fn round_trip(
    endpoint: &dyn ClientEndpoint,
    payload: &[u8],
) -> (Deferred<Transport>, Deferred<Vec<u8>>) {
    let (resolver, echoed) = Deferred::new();
    let protocol = RoundTrip {
        payload: payload.to_vec(),
        received: Vec::new(),
        echoed: Some(resolver),
        transport: None,
    };
    (connect_endpoint_protocol(endpoint, protocol), echoed)
}

/// Runs `future` on `reactor` until it finishes (20 s at most) and gives its result.
fn run_until_done<T: 'static>(
    reactor: &Reactor,
    future: impl Future<Output = Result<T, Failure>> + 'static,
) -> Result<T, Failure> {
    let outcome = capture(torsion::spawn(future));
    stop_when_fired(reactor, &outcome);
    common::safety_stop(reactor, 20.0);
    reactor.run().unwrap();
    let result = outcome.borrow_mut().take();
    result.expect("the future finished")
}

fn listen_failure(endpoint: &dyn ServerEndpoint) -> Failure {
    match endpoint.listen(Rc::new(|| Quiet)).take_result() {
        Some(Err(failure)) => failure,
        Some(Ok(port)) => panic!("{endpoint:?} listens on {}", port.host()),
        None => panic!("{endpoint:?}: listen did not fire"),
    }
}

#[test]
fn unix_mode_660_gives_the_socket_file_mode_0o660() {
    // CHECKLIST 71.
    let reactor = reactor();
    let dir = TempDir::new();
    let path = dir.join("mode.sock");
    let endpoint =
        server_from_string(&reactor, &format!("unix:{}:mode=660", quoted(&path))).unwrap();
    let port = endpoint
        .listen(Rc::new(|| Quiet))
        .take_result()
        .unwrap()
        .unwrap();
    let meta = fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    drop(port.stop_listening());

    // The default is 0o666, positional modes work too.
    for (description, expected) in [("", 0o666), (":600", 0o600)] {
        let path = dir.join(&format!("mode{expected:o}.sock"));
        let endpoint = server_from_string(
            &reactor,
            &format!("unix:{}{description}:lockfile=0", quoted(&path)),
        )
        .unwrap();
        let port = endpoint
            .listen(Rc::new(|| Quiet))
            .take_result()
            .unwrap()
            .unwrap();
        let mode = fs::symlink_metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, expected, "unix:PATH{description}");
        drop(port.stop_listening());
    }

    // A directory that does not exist: listening fails, naming the path.
    let nowhere = dir.join("no/such/dir.sock");
    for lockfile in ["0", "1"] {
        let endpoint = server_from_string(
            &reactor,
            &format!("unix:{}:lockfile={lockfile}", quoted(&nowhere)),
        )
        .unwrap();
        let failure = listen_failure(&*endpoint);
        let cannot = failure
            .downcast_ref::<CannotListen>()
            .expect("CannotListen");
        assert_eq!(cannot.address, nowhere.display().to_string());
    }
}

#[test]
fn unix_client_lockfile_1_needs_a_lock_naming_a_live_process() {
    // Twisted's checkPID: without a live server's lock file, connecting fails at once.
    let reactor = reactor();
    let dir = TempDir::new();
    let path = dir.join("locked.sock");
    let endpoint =
        client_from_string(&reactor, &format!("unix:{}:lockfile=1", quoted(&path))).unwrap();
    let connect_failure = || {
        endpoint
            .connect(Rc::new(|| Quiet))
            .take_result()
            .expect("fails at once")
            .err()
            .expect("fails")
    };
    let failure = connect_failure();
    let bad = failure
        .downcast_ref::<BadFileError>()
        .expect("BadFileError");
    assert_eq!(bad.path, path.display().to_string());
    assert!(bad.reason.contains("lock file"), "{failure}");

    // No process has pid 999999999 (pid_max is at most 2^22).
    std::os::unix::fs::symlink("999999999", lock_of(&path)).unwrap();
    let failure = connect_failure();
    assert!(failure.to_string().contains("gone"), "{failure}");

    fs::remove_file(lock_of(&path)).unwrap();
    std::os::unix::fs::symlink("not a pid", lock_of(&path)).unwrap();
    assert!(connect_failure().check::<BadFileError>());

    let endpoint = client_from_string(&reactor, "unix:@torsion-abstract:lockfile=1").unwrap();
    let failure = endpoint
        .connect(Rc::new(|| Quiet))
        .take_result()
        .unwrap()
        .err()
        .unwrap();
    assert!(failure.to_string().contains("abstract"), "{failure}");
}

reactor_test! {
    fn unix_endpoints_listen_and_connect_end_to_end(reactor: Reactor) {
        // CHECKLIST 71: unix:PATH from strings, both ends, with the lock file strings
        // default to, and a client that checks it.
        let dir = TempDir::new();
        let path = dir.join("echo.sock");
        let description = format!("unix:{}", quoted(&path));
        let server = server_from_string(&reactor, &description).unwrap();
        let client =
            client_from_string(&reactor, &format!("{description}:timeout=5:lockfile=1")).unwrap();
        let server_factory = Rc::new(Counting::default());
        let (p, f) = (path.clone(), server_factory.clone());
        let result = run_until_done(&reactor, async move {
            let port = server.listen(f).await?;
            assert_eq!(port.host(), Address::Unix(Some(p.clone())));
            assert!(fs::symlink_metadata(&p)?.file_type().is_socket());
            let holder = fs::read_link(lock_of(&p))?;
            assert_eq!(holder, PathBuf::from(std::process::id().to_string()));
            let (connected, echoed) = round_trip(&*client, b"hello over unix");
            let transport = connected.await?;
            assert_eq!(transport.peer(), Address::Unix(Some(p.clone())));
            let echoed = echoed.await?;
            port.stop_listening().await?;
            Ok(echoed)
        });
        assert_eq!(result.unwrap(), b"hello over unix");
        assert_eq!(server_factory.built.get(), 1);
        assert_eq!((server_factory.started.get(), server_factory.stopped.get()), (1, 1));
        assert!(!path.exists(), "the port removes its socket file");
        assert!(fs::symlink_metadata(lock_of(&path)).is_err(), "and its lock file");
    }

    fn unix_client_endpoint_failures_fail_the_connect_deferred(reactor: Reactor) {
        let dir = TempDir::new();
        let missing = dir.join("missing.sock");
        // A socket file nobody listens on any more.
        let stale = dir.join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        // A lock naming a live process (this one) lets the attempt go on.
        std::os::unix::fs::symlink(std::process::id().to_string(), lock_of(&stale)).unwrap();
        let missing = UnixClientEndpoint::new(&reactor, UnixClientSpec::new(&missing));
        let mut spec = UnixClientSpec::new(&stale);
        spec.check_pid = true;
        let stale = UnixClientEndpoint::new(&reactor, spec);
        let result = run_until_done(&reactor, async move {
            let not_found = missing.connect(Rc::new(|| Quiet)).await.err();
            let refused = stale.connect(Rc::new(|| Quiet)).await.err();
            Ok((not_found, refused))
        });
        let (not_found, refused) = result.unwrap();
        let not_found = not_found.expect("connecting to a missing path fails");
        let io = not_found.downcast_ref::<io::Error>().expect("an I/O error");
        assert_eq!(io.kind(), io::ErrorKind::NotFound, "{not_found}");
        let refused = refused.expect("connecting to a stale socket file fails");
        assert!(refused.check::<ConnectionRefused>(), "{refused}");
        assert_eq!(library_timers(&reactor), Vec::<String>::new());
    }

    fn cancelling_a_unix_connect_deferred_stops_the_attempt(reactor: Reactor) {
        // A listener that never accepts, its backlog full: a UNIX connect gets EAGAIN and
        // the connector retries until it is stopped.
        let dir = TempDir::new();
        let path = dir.join("full.sock");
        let address = SockAddr::unix(&path).unwrap();
        let listener = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        listener.bind(&address).unwrap();
        listener.listen(0).unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut fillers = Vec::new();
        loop {
            let s = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            match s.connect(&address) {
                Ok(()) => fillers.push(s),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => panic!("filling the backlog: {err}"),
            }
            assert!(fillers.len() < 64, "the backlog never filled");
        }
        let endpoint = UnixClientEndpoint::new(&reactor, UnixClientSpec::new(&path));
        let built = Rc::new(Cell::new(false));
        let b = built.clone();
        let connected = endpoint.connect(Rc::new(move || {
            b.set(true);
            Quiet
        }));
        let handle = connected.handle();
        let outcome = capture(connected);
        let pending_when_cancelled = Rc::new(Cell::new(false));
        let (p, o) = (pending_when_cancelled.clone(), outcome.clone());
        reactor.call_later(0.2, move || {
            p.set(o.borrow().is_none());
            handle.cancel();
        });
        // Once cancelled, the attempt never gets in, even when there is room.
        let listener = Rc::new(listener);
        let drain = |listener: &Socket| {
            let mut n = 0;
            while listener.accept().is_ok() {
                n += 1;
            }
            n
        };
        let accepted = Rc::new(Cell::new((0, 0)));
        let (l, a) = (listener.clone(), accepted.clone());
        reactor.call_later(0.3, move || a.set((drain(&l), 0)));
        let (l, a) = (listener.clone(), accepted.clone());
        reactor.call_later(0.5, move || a.set((a.get().0, drain(&l))));
        stop_after(&reactor, 0.6);
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        assert!(pending_when_cancelled.get(), "the attempt was under way when cancelled");
        let failure = outcome.borrow_mut().take().unwrap().err().unwrap();
        assert!(failure.check::<Cancelled>(), "{failure}");
        assert_eq!(accepted.get(), (fillers.len(), 0), "only the fillers ever connected");
        assert!(!built.get());
        assert!(reactor.writers().is_empty());
        assert_eq!(library_timers(&reactor), Vec::<String>::new());
    }

    fn systemd_endpoints_adopt_the_socket_at_their_index(reactor: Reactor) {
        // The sockets as systemd would pass them (index 0 is descriptor 3, …), handed to
        // endpoints parsed from strings: a UNIX listener, a TCP listener, a UDP socket.
        let dir = TempDir::new();
        let unix_path = dir.join("activated.sock");
        let unix = std::os::unix::net::UnixListener::bind(&unix_path).unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp_address = tcp.local_addr().unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fds = vec![OwnedFd::from(unix), OwnedFd::from(tcp), OwnedFd::from(udp)];
        let parsed = server_from_string(&reactor, "systemd:domain=INET:index=1").unwrap();
        let inet = downcast::<SystemdServerEndpoint>(&*parsed).clone().with_fds(fds);
        let with_spec = |description: &str| {
            let mut endpoint = inet.clone();
            endpoint.spec = downcast::<SystemdServerEndpoint>(&*server(description)).spec.clone();
            endpoint
        };

        let failure = listen_failure(&with_spec("systemd:domain=INET6:index=1"));
        assert!(failure.check::<InvalidArgument>(), "{failure}");
        assert!(failure.to_string().contains("INET6"), "{failure}");
        let failure = listen_failure(&with_spec("systemd:domain=INET:index=2"));
        assert!(failure.check::<InvalidArgument>(), "a UDP socket is no stream port: {failure}");
        let failure = listen_failure(&with_spec("systemd:domain=INET:index=3"));
        assert_eq!(
            failure.downcast_ref::<NoInheritedSocket>(),
            Some(&NoInheritedSocket { index: 3, inherited: 3 })
        );

        let unix_endpoint = with_spec("systemd:domain=UNIX:index=0");
        let tcp_client = TcpClientEndpoint::new(&reactor, "127.0.0.1", tcp_address.port());
        let unix_client = UnixClientEndpoint::new(&reactor, UnixClientSpec::new(&unix_path));
        let server_factory = Rc::new(Counting::default());
        let (f, p) = (server_factory.clone(), unix_path.clone());
        let result = run_until_done(&reactor, async move {
            let port = inet.listen(f.clone()).await?;
            assert_eq!(port.host(), Address::Tcp(tcp_address));
            let (connected, echoed) = round_trip(&tcp_client, b"over tcp");
            connected.await?;
            let first = echoed.await?;
            // The endpoint adopted a duplicate: it can listen again once stopped.
            port.stop_listening().await?;
            let port = inet.listen(f.clone()).await?;
            let (connected, echoed) = round_trip(&tcp_client, b"again");
            connected.await?;
            let second = echoed.await?;
            port.stop_listening().await?;

            let port = unix_endpoint.listen(f.clone()).await?;
            assert_eq!(port.host(), Address::Unix(Some(p.clone())));
            let (connected, echoed) = round_trip(&unix_client, b"over unix");
            connected.await?;
            let third = echoed.await?;
            port.stop_listening().await?;
            Ok([first, second, third])
        });
        let [first, second, third] = result.unwrap();
        assert_eq!((&first[..], &second[..], &third[..]), (&b"over tcp"[..], &b"again"[..], &b"over unix"[..]));
        assert_eq!(server_factory.built.get(), 3);
        assert!(unix_path.exists(), "an adopted UNIX port leaves the socket file to its owner");
    }
}

#[test]
fn every_kind_of_port_is_a_listening_port() {
    // Twisted's IListeningPort: TCP, UNIX and UDP ports alike.
    struct Ignore;
    impl torsion::protocol::DatagramProtocol for Ignore {}
    let reactor = reactor();
    let dir = TempDir::new();
    let path = dir.join("any.sock");
    let (tcp, _) = local_port(&reactor, Rc::new(|| Quiet));
    let unix = reactor.listen_unix(&path, Rc::new(|| Quiet)).unwrap();
    let udp = reactor.listen_udp(0, Box::new(Ignore)).unwrap();
    let ports: Vec<torsion::endpoints::ListeningPort> =
        vec![Rc::new(tcp), Rc::new(unix), Rc::new(udp)];
    let hosts: Vec<Address> = ports.iter().map(|p| p.host()).collect();
    assert!(matches!(hosts[0], Address::Tcp(_)));
    assert_eq!(hosts[1], Address::Unix(Some(path)));
    assert!(matches!(hosts[2], Address::Udp(a) if a.port() != 0));
    for port in ports {
        drop(port.stop_listening());
    }
}
