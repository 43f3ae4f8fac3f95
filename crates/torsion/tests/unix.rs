//! UNIX sockets over real socket files and the abstract namespace, adopted descriptors and
//! systemd socket activation, on every backend (CHECKLIST 71).

mod common;

use common::Echo;
use common::TempDir;

use std::cell::RefCell;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use socket2::{Domain, SockAddr, Socket, Type};
use torsion::error::{CannotListen, ConnectionDone, ConnectionRefused, InvalidArgument};
use torsion::net::Connector;
use torsion::net::systemd::{LISTEN_FDS_START, listen_fds, parse_listen_fds};
use torsion::net::tcp::DEFAULT_BACKLOG;
use torsion::net::unix::{PeerCredentials, UnixListenOptions};
use torsion::net::{Address, Transport};
use torsion::protocol::{ClientFactory, Factory, Protocol};
use torsion::{Deferred, Failure, Reactor};

/// A name in the abstract namespace no other test uses.
fn abstract_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("torsion-test-{}-{n}", std::process::id())
}

/// What a client saw.
#[derive(Default)]
struct Seen {
    received: Vec<u8>,
    lost: Option<Failure>,
    failed: Option<Failure>,
    peer: Option<Address>,
    host: Option<Address>,
    credentials: Option<PeerCredentials>,
}

/// Sends `payload` on connect, closes once `expect` bytes came back, stops the reactor when
/// the connection ends or fails.
struct Client {
    reactor: Reactor,
    payload: Vec<u8>,
    expect: usize,
    seen: Rc<RefCell<Seen>>,
}

impl Client {
    fn new(reactor: &Reactor, payload: &[u8]) -> Rc<Client> {
        Rc::new(Client {
            reactor: reactor.clone(),
            payload: payload.to_vec(),
            expect: payload.len(),
            seen: Rc::default(),
        })
    }
}

struct ClientProtocol {
    payload: Vec<u8>,
    expect: usize,
    seen: Rc<RefCell<Seen>>,
    transport: Option<Transport>,
}

impl Protocol for ClientProtocol {
    fn connection_made(&mut self, transport: Transport) {
        {
            let mut seen = self.seen.borrow_mut();
            seen.peer = Some(transport.peer());
            seen.host = Some(transport.host());
            seen.credentials = transport.peer_credentials();
        }
        transport.write(&self.payload);
        if self.expect == 0 {
            transport.lose_connection();
        }
        self.transport = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        let mut seen = self.seen.borrow_mut();
        seen.received.extend_from_slice(data);
        if seen.received.len() >= self.expect
            && let Some(t) = &self.transport
        {
            t.lose_connection();
        }
    }
    fn connection_lost(&mut self, reason: Failure) {
        self.seen.borrow_mut().lost = Some(reason);
    }
}

impl Factory for Client {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(ClientProtocol {
            payload: self.payload.clone(),
            expect: self.expect,
            seen: self.seen.clone(),
            transport: None,
        }))
    }
}

impl ClientFactory for Client {
    fn client_connection_failed(&self, _c: &Connector, reason: Failure) {
        self.seen.borrow_mut().failed = Some(reason);
        let _ = self.reactor.stop();
    }
    fn client_connection_lost(&self, _c: &Connector, _reason: Failure) {
        let _ = self.reactor.stop();
    }
}

/// Stops the reactor once `d` fires, and runs it.
fn run_until(reactor: &Reactor, d: Deferred<()>) {
    let r = reactor.clone();
    drop(d.map(move |()| {
        let _ = r.stop();
    }));
    common::safety_stop(reactor, 20.0);
    reactor.run().unwrap();
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Connects non-blocking clients to `path` until the listener's queue is full.
fn fill_backlog(path: &Path) -> Vec<Socket> {
    let address = SockAddr::unix(path).unwrap();
    let mut clients = Vec::new();
    loop {
        let socket = Socket::new(Domain::UNIX, Type::STREAM.nonblocking(), None).unwrap();
        match socket.connect(&address) {
            Ok(()) => clients.push(socket),
            Err(err) if err.raw_os_error() == Some(libc::EAGAIN) => return clients,
            Err(err) => panic!("connect #{}: {err}", clients.len() + 1),
        }
        assert!(clients.len() < 10_000, "the backlog never filled");
    }
}

reactor_test! {
    fn unix_echo_round_trip_then_clean_close(reactor: Reactor) {
        let dir = TempDir::new();
        let path = dir.join("echo.sock");
        let port = reactor.listen_unix(&path, Rc::new(Echo::default)).unwrap();
        assert_eq!(port.host(), Address::Unix(Some(path.clone())));
        let client = Client::new(&reactor, b"hello, unix");
        let connector = reactor.connect_unix(&path, client.clone());
        assert_eq!(connector.destination(), path.display().to_string());
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        let seen = client.seen.borrow();
        assert_eq!(seen.received, b"hello, unix");
        assert!(seen.lost.as_ref().unwrap().check::<ConnectionDone>());
        assert_eq!(seen.peer, Some(Address::Unix(Some(path.clone()))));
        assert_eq!(seen.host, Some(Address::Unix(None)), "the client's end is unnamed");
    }

    fn listen_unix_defaults_to_mode_0o666_and_the_default_backlog(reactor: Reactor) {
        // CHECKLIST 71: `unix:/var/run/finger` gives mode 0o666 and, unlike Twisted's 50,
        // the default backlog of 1024 (clamped by the kernel to net.core.somaxconn).
        assert_eq!(UnixListenOptions::default().backlog, DEFAULT_BACKLOG);
        let dir = TempDir::new();
        let path = dir.join("finger");
        let port = reactor.listen_unix(&path, Rc::new(Echo::default)).unwrap();
        assert!(fs::metadata(&path).unwrap().file_type().is_socket());
        assert_eq!(mode_of(&path), 0o666);
        // The loop is not running, so nothing is accepted: Linux queues backlog + 1
        // connections and refuses the next one with EAGAIN.
        let somaxconn = fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(usize::MAX);
        let clients = fill_backlog(&path);
        assert_eq!(clients.len(), (DEFAULT_BACKLOG as usize).min(somaxconn) + 1);
        drop(clients);
        run_until(&reactor, port.stop_listening());
    }

    fn listen_unix_honours_mode_0o660(reactor: Reactor) {
        let dir = TempDir::new();
        let path = dir.join("private.sock");
        let options = UnixListenOptions { mode: 0o660, backlog: 5, ..UnixListenOptions::default() };
        let port = reactor.listen_unix_with(&path, Rc::new(Echo::default), options).unwrap();
        assert_eq!(mode_of(&path), 0o660);
        assert_eq!(fill_backlog(&path).len(), 5 + 1);
        run_until(&reactor, port.stop_listening());
    }

    fn stop_listening_removes_the_socket_file(reactor: Reactor) {
        let dir = TempDir::new();
        let path = dir.join("gone.sock");
        let port = reactor.listen_unix(&path, Rc::new(Echo::default)).unwrap();
        assert!(path.exists());
        run_until(&reactor, port.stop_listening());
        assert!(!path.exists());
    }

    fn a_stale_socket_file_is_replaced(reactor: Reactor) {
        let dir = TempDir::new();
        let path = dir.join("stale.sock");
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "the dead listener left its file behind");
        let _port = reactor.listen_unix(&path, Rc::new(Echo::default)).unwrap();
        let client = Client::new(&reactor, b"fresh");
        reactor.connect_unix(&path, client.clone());
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        assert_eq!(client.seen.borrow().received, b"fresh");
    }

    fn a_live_socket_file_is_refused_with_cannot_listen(reactor: Reactor) {
        let dir = TempDir::new();
        let path = dir.join("live.sock");
        let live = UnixListener::bind(&path).unwrap();
        let err = reactor.listen_unix(&path, Rc::new(Echo::default)).unwrap_err();
        let cannot = err.downcast_ref::<CannotListen>().unwrap_or_else(|| panic!("{err}"));
        assert_eq!(cannot.source.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(cannot.address, path.display().to_string());
        // The live listener keeps its file and still accepts.
        live.set_nonblocking(true).unwrap();
        let _client = UnixStream::connect(&path).unwrap();
        assert!(live.accept().is_ok(), "the probe's or this connection");
    }

    fn a_file_that_is_not_a_socket_is_left_alone(reactor: Reactor) {
        let dir = TempDir::new();
        let path = dir.join("data.txt");
        fs::write(&path, b"precious").unwrap();
        let err = reactor.listen_unix(&path, Rc::new(Echo::default)).unwrap_err();
        assert!(err.check::<CannotListen>());
        assert_eq!(fs::read(&path).unwrap(), b"precious");
    }

    fn abstract_namespace_echo(reactor: Reactor) {
        let name = abstract_name();
        let port = reactor.listen_unix(format!("@{name}"), Rc::new(Echo::default)).unwrap();
        assert_eq!(port.host(), Address::Unix(Some(PathBuf::from(format!("@{name}")))));
        assert!(!Path::new(&format!("@{name}")).exists(), "no file for an abstract socket");
        // The NUL form names the same socket.
        let client = Client::new(&reactor, b"abstract");
        reactor.connect_unix(format!("\0{name}"), client.clone());
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        let seen = client.seen.borrow();
        assert_eq!(seen.received, b"abstract");
        assert_eq!(seen.peer, Some(Address::Unix(Some(PathBuf::from(format!("@{name}"))))));
    }

    fn peer_credentials_name_our_own_process(reactor: Reactor) {
        let server_saw: Rc<RefCell<Option<PeerCredentials>>> = Rc::default();
        struct Record(Rc<RefCell<Option<PeerCredentials>>>, Echo);
        impl Protocol for Record {
            fn connection_made(&mut self, t: Transport) {
                *self.0.borrow_mut() = t.peer_credentials();
                self.1.connection_made(t);
            }
            fn data_received(&mut self, data: &[u8]) {
                self.1.data_received(data);
            }
        }
        let dir = TempDir::new();
        let path = dir.join("creds.sock");
        let s = server_saw.clone();
        let _port = reactor
            .listen_unix(&path, Rc::new(move || Record(s.clone(), Echo::default())))
            .unwrap();
        let client = Client::new(&reactor, b"who am i");
        reactor.connect_unix(&path, client.clone());
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        let us = PeerCredentials {
            pid: std::process::id(),
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
        };
        assert_eq!(*server_saw.borrow(), Some(us));
        assert_eq!(client.seen.borrow().credentials, Some(us));
    }

    fn tcp_transports_have_no_peer_credentials(reactor: Reactor) {
        let options = torsion::net::tcp::ListenOptions {
            interface: [127, 0, 0, 1].into(),
            ..Default::default()
        };
        let port = reactor.listen_tcp_with(0, Rc::new(Echo::default), options).unwrap();
        let client = Client::new(&reactor, b"x");
        reactor.connect_tcp("127.0.0.1", port.host().port().unwrap(), client.clone());
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        assert_eq!(client.seen.borrow().received, b"x");
        assert_eq!(client.seen.borrow().credentials, None);
    }

    fn connect_unix_to_a_missing_path_fails(reactor: Reactor) {
        let dir = TempDir::new();
        let client = Client::new(&reactor, b"");
        reactor.connect_unix(dir.join("nobody.sock"), client.clone());
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        let seen = client.seen.borrow();
        let failed = seen.failed.as_ref().unwrap();
        assert_eq!(failed.downcast_ref::<io::Error>().map(|e| e.kind()), Some(io::ErrorKind::NotFound));
    }

    fn connect_unix_to_a_stale_socket_is_connection_refused(reactor: Reactor) {
        let dir = TempDir::new();
        let path = dir.join("dead.sock");
        drop(UnixListener::bind(&path).unwrap());
        let client = Client::new(&reactor, b"");
        reactor.connect_unix(&path, client.clone());
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        let seen = client.seen.borrow();
        assert!(seen.failed.as_ref().unwrap().check::<ConnectionRefused>(), "{:?}", seen.failed);
    }

    fn connect_unix_retries_while_the_backlog_is_full(reactor: Reactor) {
        // A UNIX connect does not wait in the kernel when the listener's queue is full: it
        // fails with EAGAIN, and the connector tries again until the queue has room.
        use torsion::time::ReactorTime;
        let dir = TempDir::new();
        let path = dir.join("busy.sock");
        let listener = Rc::new(UnixListener::bind(&path).unwrap());
        listener.set_nonblocking(true).unwrap();
        let queued = fill_backlog(&path);
        let client = Client::new(&reactor, b"");
        reactor.connect_unix(&path, client.clone());
        let l = listener.clone();
        reactor.call_later(0.1, move || {
            while l.accept().is_ok() {}
            drop(queued);
        });
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        let seen = client.seen.borrow();
        assert!(seen.failed.is_none(), "{:?}", seen.failed);
        assert!(seen.lost.is_some(), "the connection was made, then closed");
    }

    fn want_pid_takes_and_releases_a_lock_file(reactor: Reactor) {
        let dir = TempDir::new();
        let path = dir.join("locked.sock");
        let lock = dir.join("locked.sock.lock");
        let options = UnixListenOptions { want_pid: true, ..UnixListenOptions::default() };
        let port = reactor.listen_unix_with(&path, Rc::new(Echo::default), options.clone()).unwrap();
        assert_eq!(fs::read_link(&lock).unwrap(), PathBuf::from(std::process::id().to_string()));
        // Our own live lock refuses a second port.
        fs::remove_file(&path).unwrap();
        let err = reactor.listen_unix_with(&path, Rc::new(Echo::default), options).unwrap_err();
        assert!(err.check::<CannotListen>());
        run_until(&reactor, port.stop_listening());
        assert!(!lock.exists(), "the lock is released with the port");
    }

    fn a_lock_held_by_a_live_process_refuses_and_a_dead_ones_is_taken_over(reactor: Reactor) {
        let dir = TempDir::new();
        let options = UnixListenOptions { want_pid: true, ..UnixListenOptions::default() };
        // Process 1 always exists.
        let held = dir.join("held.sock");
        std::os::unix::fs::symlink("1", dir.join("held.sock.lock")).unwrap();
        let err = reactor.listen_unix_with(&held, Rc::new(Echo::default), options.clone()).unwrap_err();
        assert!(err.to_string().contains("held by process 1"), "{err}");
        assert_eq!(fs::read_link(dir.join("held.sock.lock")).unwrap(), PathBuf::from("1"));
        // No process has the largest pid.
        let stale = dir.join("stale.sock");
        std::os::unix::fs::symlink(i32::MAX.to_string(), dir.join("stale.sock.lock")).unwrap();
        let port = reactor.listen_unix_with(&stale, Rc::new(Echo::default), options).unwrap();
        assert_eq!(
            fs::read_link(dir.join("stale.sock.lock")).unwrap(),
            PathBuf::from(std::process::id().to_string())
        );
        run_until(&reactor, port.stop_listening());
    }

    fn adopting_a_listening_unix_socket(reactor: Reactor) {
        let dir = TempDir::new();
        let path = dir.join("adopted.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let port = reactor.adopt_stream_port(OwnedFd::from(listener), Rc::new(Echo::default)).unwrap();
        assert_eq!(port.host(), Address::Unix(Some(path.clone())));
        let client = Client::new(&reactor, b"adopted unix");
        reactor.connect_unix(&path, client.clone());
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        assert_eq!(client.seen.borrow().received, b"adopted unix");
        assert!(path.exists(), "an adopted port leaves its file to whoever bound it");
    }

    fn adopting_a_listening_tcp_socket(reactor: Reactor) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let port = reactor.adopt_stream_port(OwnedFd::from(listener), Rc::new(Echo::default)).unwrap();
        assert_eq!(port.host(), Address::Tcp(address));
        let client = Client::new(&reactor, b"adopted tcp");
        reactor.connect_tcp("127.0.0.1", address.port(), client.clone());
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        assert_eq!(client.seen.borrow().received, b"adopted tcp");
    }

    fn adopting_a_connected_socketpair(reactor: Reactor) {
        let (a, b) = UnixStream::pair().unwrap();
        let server = reactor.adopt_stream_connection(OwnedFd::from(a), Rc::new(Echo::default)).unwrap();
        assert!(server.is_some());
        let client = Client::new(&reactor, b"through the pair");
        let transport = reactor
            .adopt_stream_connection(OwnedFd::from(b), Rc::new(ClientOnly(client.clone())))
            .unwrap()
            .unwrap();
        assert_eq!(transport.peer(), Address::Unix(None));
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        let seen = client.seen.borrow();
        assert_eq!(seen.received, b"through the pair");
        assert_eq!(seen.credentials.map(|c| c.pid), Some(std::process::id()));
    }

    fn adopt_stream_port_refuses_a_socket_that_is_not_listening(reactor: Reactor) {
        let (a, _b) = UnixStream::pair().unwrap();
        let err = reactor.adopt_stream_port(OwnedFd::from(a), Rc::new(Echo::default)).unwrap_err();
        assert!(err.check::<InvalidArgument>(), "{err}");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let Err(err) = reactor.adopt_stream_connection(OwnedFd::from(listener), Rc::new(Echo::default)) else {
            panic!("a listening socket adopted as a connection");
        };
        assert!(err.check::<InvalidArgument>(), "{err}");
    }
}

/// [`Client`]'s protocol for an adopted connection: with no connector to tell, it stops the
/// reactor itself when the connection ends.
struct ClientOnly(Rc<Client>);

struct StopOnLost(Box<dyn Protocol>, Reactor);

impl Protocol for StopOnLost {
    fn connection_made(&mut self, transport: Transport) {
        self.0.connection_made(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.0.data_received(data);
    }
    fn connection_lost(&mut self, reason: Failure) {
        self.0.connection_lost(reason);
        let _ = self.1.stop();
    }
}

impl Factory for ClientOnly {
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>> {
        let inner = self.0.clone().build_protocol(addr)?;
        Some(Box::new(StopOnLost(inner, self.0.reactor.clone())))
    }
}

#[test]
fn systemd_listen_fds_are_ours_only_when_listen_pid_is_our_pid() {
    let us = 4242;
    let env =
        |pid: &str, fds: &str| parse_listen_fds(Some(OsStr::new(pid)), Some(OsStr::new(fds)), us);
    assert_eq!(LISTEN_FDS_START, 3);
    assert_eq!(env("4242", "1"), 3..4);
    assert_eq!(env("4242", "3"), 3..6);
    assert_eq!(env(" 4242\n", "2"), 3..5, "whitespace is tolerated");
    assert!(env("4242", "0").is_empty());
    assert!(env("4243", "2").is_empty(), "another process's sockets");
    assert!(env("1", "2").is_empty());
    assert!(
        parse_listen_fds(None, Some(OsStr::new("2")), us).is_empty(),
        "no LISTEN_PID"
    );
    assert!(
        parse_listen_fds(Some(OsStr::new("4242")), None, us).is_empty(),
        "no LISTEN_FDS"
    );
    assert!(parse_listen_fds(None, None, us).is_empty());
}

#[test]
fn systemd_malformed_listen_fds_give_nothing() {
    let us = 4242;
    let env =
        |pid: &str, fds: &str| parse_listen_fds(Some(OsStr::new(pid)), Some(OsStr::new(fds)), us);
    assert!(env("4242", "two").is_empty());
    assert!(env("4242", "-1").is_empty());
    assert!(env("4242", "").is_empty());
    assert!(
        env("4242", "2147483647").is_empty(),
        "would overflow past the last descriptor"
    );
    assert!(env("-4242", "2").is_empty());
    assert!(env("pid", "2").is_empty());
}

#[test]
fn systemd_listen_fds_is_empty_without_socket_activation() {
    // The test runner is not socket-activated: LISTEN_PID is unset or names another process.
    let pid = std::env::var_os("LISTEN_PID");
    let activated = pid.as_deref() == Some(OsStr::new(&std::process::id().to_string()));
    if !activated {
        assert!(listen_fds().is_empty());
    }
}
