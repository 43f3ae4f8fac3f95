//! Running out of descriptors while accepting (EMFILE): the port logs it, stops accepting
//! for a moment, and recovers, without spinning a core (CHECKLIST: "EMFILE/ENFILE on
//! accept").
//!
//! `RLIMIT_NOFILE` and CPU time belong to the whole process, so each run re-executes this
//! test binary for itself alone (`--exact NAME --test-threads=1`, with [`ISOLATED`] set)
//! and lowers the limit only in that child: no other test, not even the other backend's
//! run, shares the lowered limit or the CPU-time count. The clients connect in the child,
//! before the limit is lowered, so the kernel holds them complete in the accept queue and
//! the server runs out of descriptors accepting them.

mod common;

use common::Echo;

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use torsion::endpoints::{TcpClientEndpoint, connect_protocol};
use torsion::net::Transport;
use torsion::net::tcp::ListenOptions;
use torsion::protocol::Protocol;
use torsion::time::ReactorTime;
use torsion::{Failure, Reactor, Resolver};

/// Set in the child process that runs one test with the lowered limit.
const ISOLATED: &str = "TORSION_EMFILE_ISOLATED";

/// How many clients wait in the accept queue.
const CROWD: usize = 50;

/// How many descriptors the server may still open once the limit is lowered.
const ROOM: usize = 4;

reactor_test! {
    fn emfile_on_accept_backs_off_and_recovers_without_spinning(reactor: Reactor) {
        if std::env::var_os(ISOLATED).is_none() {
            // `module_path!()` is `emfile::<test>`; libtest names the test `<test>::<backend>`.
            let module = module_path!().split_once("::").map_or(module_path!(), |(_, m)| m);
            let name = format!("{module}::{}", reactor.backend().name());
            drop(reactor);
            run_isolated(&name);
        } else {
            server_runs_out_of_descriptors(reactor);
        }
    }
}

/// Runs the test `name` alone in a child process of this test binary and fails with its
/// output if it fails (or if it did not run, or hangs).
fn run_isolated(name: &str) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let child = Command::new(exe)
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(ISOLATED, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run the test binary again");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(output) => output.expect("waiting for the isolated run"),
        Err(_) => {
            if let Some(pid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            panic!("the isolated run of {name} did not finish in 120 s");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("test result: ok. 1 passed"),
        "isolated run of {name} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
}

/// Sends its payload once connected; fires `echoed` with what came back once as many bytes
/// did.
struct RoundTrip {
    payload: Vec<u8>,
    received: Vec<u8>,
    echoed: Option<Resolver<Vec<u8>>>,
}

impl Protocol for RoundTrip {
    fn connection_made(&mut self, transport: Transport) {
        transport.write(&self.payload);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.received.extend_from_slice(data);
        if self.received.len() >= self.payload.len()
            && let Some(echoed) = self.echoed.take()
        {
            echoed.callback(std::mem::take(&mut self.received));
        }
    }
    fn connection_lost(&mut self, reason: Failure) {
        if let Some(echoed) = self.echoed.take() {
            echoed.errback(reason);
        }
    }
}

/// The descriptors open in this process.
fn open_descriptors() -> Vec<i32> {
    let listed: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // Without the directory's own descriptor, closed by now.
    listed
        .into_iter()
        .filter(|fd| {
            Path::new(&format!("/proc/self/fd/{fd}"))
                .symlink_metadata()
                .is_ok()
        })
        .collect()
}

/// The descriptor limit that leaves exactly `room` descriptors free below it.
fn limit_leaving(room: usize) -> u64 {
    let open = open_descriptors();
    let mut free = 0;
    let mut fd = 0;
    while free < room {
        if !open.contains(&fd) {
            free += 1;
        }
        fd += 1;
    }
    u64::try_from(fd).unwrap()
}

/// CPU time used by this process so far, all threads.
fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap(),
        u32::try_from(t.tv_nsec).unwrap(),
    )
}

/// Collects what torsion logs, in memory (writing needs no descriptor).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the window of one second out of descriptors showed.
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    cpu: Duration,
    ticks: u32,
    built: usize,
    reset: usize,
}

fn server_runs_out_of_descriptors(reactor: Reactor) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    let built = Rc::new(Cell::new(0usize));
    let b = built.clone();
    let options = ListenOptions {
        backlog: 128,
        interface: [127, 0, 0, 1].into(),
        ..ListenOptions::default()
    };
    let port = reactor
        .listen_tcp_with(
            0,
            Rc::new(move || {
                b.set(b.get() + 1);
                Echo::default()
            }),
            options,
        )
        .unwrap();
    let address = port.host().socket_addr().unwrap();
    // The crowd: complete connections in the accept queue (the backlog holds them all),
    // nobody accepted yet.
    let clients: Vec<TcpStream> = (0..CROWD)
        .map(|_| TcpStream::connect(address).expect("a client connects"))
        .collect();
    for client in &clients {
        client.set_nonblocking(true).unwrap();
    }
    let clients = Rc::new(RefCell::new(clients));

    let original = getrlimit(Resource::Nofile);
    let lowered = Rlimit {
        current: Some(limit_leaving(ROOM)),
        maximum: original.maximum,
    };
    setrlimit(Resource::Nofile, lowered).expect("lowering RLIMIT_NOFILE");

    // A timer every 50 ms: the loop must keep turning.
    let ticks = Rc::new(Cell::new(0u32));
    fn tick(reactor: &Reactor, ticks: &Rc<Cell<u32>>) {
        ticks.set(ticks.get() + 1);
        let (r, t) = (reactor.clone(), ticks.clone());
        reactor.call_later(0.05, move || tick(&r, &t));
    }
    tick(&reactor, &ticks);

    // A one-second window out of descriptors, from 0.1 s (after the first burst of
    // accepts) to 1.1 s.
    let window = Rc::new(Cell::new(Window::default()));
    let start = Rc::new(Cell::new((Duration::ZERO, 0u32)));
    let (s, t) = (start.clone(), ticks.clone());
    reactor.call_later(0.1, move || s.set((cpu_time(), t.get())));

    let echoed = Rc::new(RefCell::new(None));
    let (r, s, t, w, b, c, e) = (
        reactor.clone(),
        start.clone(),
        ticks.clone(),
        window.clone(),
        built.clone(),
        clients.clone(),
        echoed.clone(),
    );
    reactor.call_later(1.1, move || {
        let (cpu0, ticks0) = s.get();
        let cpu = cpu_time().saturating_sub(cpu0);
        // Clients the port accepted and closed at once to shed load: reset.
        let reset = c
            .borrow()
            .iter()
            .filter(|client| {
                let mut stream: &TcpStream = client;
                let mut byte = [0u8; 1];
                matches!(stream.read(&mut byte), Err(err) if err.kind() == io::ErrorKind::ConnectionReset)
            })
            .count();
        w.set(Window {
            cpu,
            ticks: t.get() - ticks0,
            built: b.get(),
            reset,
        });
        // Recovery: the limit back, the crowd gone; a new client is served.
        setrlimit(Resource::Nofile, original).expect("restoring RLIMIT_NOFILE");
        c.borrow_mut().clear();
        let (resolver, d) = torsion::Deferred::new();
        let protocol = RoundTrip {
            payload: b"still here".to_vec(),
            received: Vec::new(),
            echoed: Some(resolver),
        };
        drop(connect_protocol(&TcpClientEndpoint::new(&r, "127.0.0.1", address.port()), protocol));
        let r2 = r.clone();
        drop(d.add_both(move |result| {
            *e.borrow_mut() = Some(result);
            let _ = r2.stop();
            Ok::<(), Failure>(())
        }));
    });
    common::safety_stop(&reactor, 20.0);
    reactor.run().unwrap();
    drop(port.stop_listening());

    let window = window.get();
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    eprintln!("{window:?}");
    assert!(
        window.built >= 1 && window.built <= ROOM,
        "accepted only while there was room: {window:?}"
    );
    assert!(
        window.reset >= 2,
        "out of descriptors, the port shed a pending client, and again after backing off: \
         {window:?}"
    );
    assert!(
        window.reset <= 20,
        "at most one client shed per 100 ms back-off, not all at once: {window:?}"
    );
    assert!(
        window.ticks >= 5,
        "the timer kept firing while out of descriptors: {window:?}"
    );
    assert!(
        window.cpu < Duration::from_millis(500),
        "the loop did not spin: {window:?}"
    );
    assert!(
        logged.contains("accept on") && logged.contains("refusing pending connections"),
        "running out of descriptors is logged: {logged}"
    );
    let echoed = echoed.borrow_mut().take().expect("the new client finished");
    assert_eq!(echoed.expect("the new client was served"), b"still here");
    assert_eq!(getrlimit(Resource::Nofile), original);
}
