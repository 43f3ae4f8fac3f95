//! TLS against real peers over loopback sockets, on every backend: torsion's server with
//! `openssl s_client` (TLS 1.3 and forced TLS 1.2) and with a Twisted client, torsion's
//! client with `openssl s_server` (which requires a client certificate) and with a Twisted
//! server (whose `loseConnection` sends `close_notify`).
//!
//! The peers are separate programs: `openssl` from `PATH`, and Twisted from a Python that
//! can import `twisted`, `OpenSSL` and `service_identity` (`$TORSION_INTEROP_PYTHON`, else
//! `/work/venv-twisted/bin/python`, else `python3`) running `tests/interop/twisted_peer.py`.
//! A missing peer skips its test (a `skipped:` line on stderr), or fails it when
//! `TORSION_REQUIRE_INTEROP=1`. Every peer is killed after 20 s, every reactor stopped.

mod common;

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::pki::Pki;
use common::{Log, TempDir, log, push, safety_stop};
use torsion::Reactor;
use torsion::defer::Failure;
use torsion::error::ConnectionDone;
use torsion::net::tcp::ListenOptions;
use torsion::net::{Address, Connector, Transport};
use torsion::protocol::{ClientFactory, Factory, Protocol};
use torsion::time::ReactorTime;
use torsion::tls::{
    CertificateDer, ClientConfig, Identity, ProtocolVersion, ServerConfig, TlsClientFactory,
    TlsError, TlsInfo,
};

/// How long a peer may live before it is killed.
const PEER_LIFETIME: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Finding the peers.

/// Whether a missing peer fails the test instead of skipping it.
fn required() -> bool {
    std::env::var("TORSION_REQUIRE_INTEROP").is_ok_and(|v| v == "1")
}

/// `Some(found)`, or `None` after saying the test is skipped (a panic naming what to
/// install when peers are required).
fn need<T>(found: Option<T>, what: &str, install: &str) -> Option<T> {
    if found.is_none() {
        if required() {
            panic!("TORSION_REQUIRE_INTEROP=1 and {what} is missing: {install}");
        }
        eprintln!("skipped: {what} is missing ({install})");
    }
    found
}

fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The `openssl` command line tool.
fn openssl() -> Option<&'static str> {
    need(
        runs("openssl", &["version"]).then_some("openssl"),
        "the openssl command",
        "apt-get install openssl",
    )
}

/// A Python with Twisted's TLS support.
fn twisted_python() -> Option<String> {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("TORSION_INTEROP_PYTHON") {
        candidates.push(p);
    }
    candidates.push("/work/venv-twisted/bin/python".into());
    candidates.push("python3".into());
    let found = candidates
        .into_iter()
        .find(|p| runs(p, &["-c", "import twisted, OpenSSL, service_identity"]));
    need(
        found,
        "a Python with twisted[tls] (set TORSION_INTEROP_PYTHON)",
        "python3 -m venv /work/venv-twisted && /work/venv-twisted/bin/pip install 'twisted[tls]'",
    )
}

fn twisted_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/twisted_peer.py")
}

// ---------------------------------------------------------------------------------------
// A peer process.

/// What a peer printed and how it ended.
struct Finished {
    status: ExitStatus,
    killed: bool,
    stdout: String,
    stderr: String,
}

impl Finished {
    /// Both streams, for assertions that do not care which one a line went to.
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (killed: {})\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.killed, self.stdout, self.stderr
        )
    }
}

/// A running peer: its standard output line by line, killed after [`PEER_LIFETIME`] or
/// when dropped.
struct Peer {
    lines: mpsc::Receiver<String>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    exited: Arc<AtomicBool>,
    kill: Arc<AtomicBool>,
    watchdog: Option<JoinHandle<(ExitStatus, bool)>>,
    readers: Vec<JoinHandle<()>>,
}

impl Peer {
    /// Starts `command`, writing `input` to its standard input and then closing it.
    fn spawn(command: &mut Command, input: &[u8]) -> Peer {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let mut readers = vec![std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        })];
        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let o = stdout.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                o.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        }));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let e = stderr.clone();
        readers.push(std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            e.lock().unwrap().push_str(&String::from_utf8_lossy(&buf));
        }));
        let exited = Arc::new(AtomicBool::new(false));
        let kill = Arc::new(AtomicBool::new(false));
        let (ex, k) = (exited.clone(), kill.clone());
        let watchdog = std::thread::spawn(move || {
            let start = Instant::now();
            let mut killed = false;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    ex.store(true, Ordering::SeqCst);
                    return (status, killed);
                }
                if !killed && (k.load(Ordering::SeqCst) || start.elapsed() > PEER_LIFETIME) {
                    let _ = child.kill();
                    killed = true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Peer {
            lines,
            stdout,
            stderr,
            exited,
            kill,
            watchdog: Some(watchdog),
            readers,
        }
    }

    /// Waits (10 s at most) for a line of standard output starting with `prefix`; returns
    /// the rest of it.
    fn line_starting(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line[prefix.len()..].to_string(),
                Ok(_) => {}
                Err(_) => panic!(
                    "the peer printed no line starting with {prefix:?}\n--- stdout\n{}\n--- stderr\n{}",
                    self.stdout.lock().unwrap(),
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    /// A flag that turns true when the peer has exited.
    fn exited(&self) -> Arc<AtomicBool> {
        self.exited.clone()
    }

    /// Waits for the peer to exit (it is killed at the end of its lifetime).
    fn finish(mut self) -> Finished {
        let (status, killed) = self.watchdog.take().unwrap().join().unwrap();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Finished {
            status,
            killed,
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------
// The torsion side.

/// A reason as the logs write it: `done`, `tls:Kind`, or the message.
fn kind(reason: &Failure) -> String {
    if reason.check::<ConnectionDone>() {
        "done".into()
    } else if let Some(tls) = reason.downcast_ref::<TlsError>() {
        format!("tls:{:?}", tls.kind())
    } else {
        reason.to_string()
    }
}

type Info = Rc<RefCell<Option<TlsInfo>>>;

/// The server side: echoes what comes, and closes (`close_notify`) once a whole line has
/// gone back.
struct LineEcho {
    log: Log,
    transport: Option<Transport>,
    info: Info,
}

impl Protocol for LineEcho {
    fn connection_made(&mut self, transport: Transport) {
        push(&self.log, "s-made");
        self.transport = Some(transport);
    }
    fn handshake_completed(&mut self) {
        push(&self.log, "s-handshake");
        *self.info.borrow_mut() = self.transport.as_ref().and_then(|t| t.tls_info());
    }
    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            t.write(data);
            if data.contains(&b'\n') {
                t.lose_connection();
            }
        }
    }
    fn connection_lost(&mut self, reason: Failure) {
        push(&self.log, format!("s-lost:{}", kind(&reason)));
    }
}

/// Listens on an ephemeral port of 127.0.0.1 with [`LineEcho`]; returns the port number.
fn listen_echo(reactor: &Reactor, config: &ServerConfig, log: &Log) -> (u16, Info) {
    let info: Info = Rc::default();
    let (l, i) = (log.clone(), info.clone());
    let factory = Rc::new(move || LineEcho {
        log: l.clone(),
        transport: None,
        info: i.clone(),
    });
    let options = ListenOptions {
        interface: [127, 0, 0, 1].into(),
        ..Default::default()
    };
    let port = reactor
        .listen_tls_with(0, factory, config, options)
        .expect("cannot listen on 127.0.0.1");
    (port.host().port().unwrap(), info)
}

/// The client side: writes `send` at once, collects what comes back, and waits for the
/// server to close.
struct Client {
    side: Rc<ClientSide>,
    transport: Option<Transport>,
}

impl Protocol for Client {
    fn connection_made(&mut self, transport: Transport) {
        push(&self.side.log, "c-made");
        transport.write(&self.side.send);
        self.transport = Some(transport);
    }
    fn handshake_completed(&mut self) {
        push(&self.side.log, "c-handshake");
        *self.side.info.borrow_mut() = self.transport.as_ref().and_then(|t| t.tls_info());
    }
    fn data_received(&mut self, data: &[u8]) {
        self.side.got.borrow_mut().extend_from_slice(data);
    }
    fn connection_lost(&mut self, reason: Failure) {
        push(&self.side.log, format!("c-lost:{}", kind(&reason)));
    }
}

struct ClientSide {
    log: Log,
    send: Vec<u8>,
    got: Rc<RefCell<Vec<u8>>>,
    info: Info,
}

impl Factory for ClientSide {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Client {
            side: self,
            transport: None,
        }))
    }
}

impl ClientFactory for ClientSide {
    fn client_connection_failed(&self, _c: &Connector, reason: Failure) {
        push(&self.log, format!("c-failed:{}", kind(&reason)));
    }
    fn client_connection_lost(&self, _c: &Connector, reason: Failure) {
        push(&self.log, format!("c-closed:{}", kind(&reason)));
    }
}

/// Connects to 127.0.0.1:`port` over TLS, verifying that the certificate is for
/// `localhost`, and sends `send`.
fn connect_localhost(
    reactor: &Reactor,
    port: u16,
    config: &ClientConfig,
    send: &[u8],
) -> Rc<ClientSide> {
    let side = Rc::new(ClientSide {
        log: log(),
        send: send.to_vec(),
        got: Rc::default(),
        info: Rc::default(),
    });
    reactor.connect_tcp(
        "127.0.0.1",
        port,
        TlsClientFactory::new(config, "localhost", side.clone()),
    );
    side
}

/// Runs the reactor until `done` says so (checked every 5 ms), 20 s at most.
fn run_until(reactor: &Reactor, done: impl Fn() -> bool + 'static) {
    fn poll(reactor: Reactor, done: Rc<dyn Fn() -> bool>) {
        if done() {
            let _ = reactor.stop();
        } else {
            let r = reactor.clone();
            reactor.call_later(0.005, move || poll(r, done));
        }
    }
    let r = reactor.clone();
    let done: Rc<dyn Fn() -> bool> = Rc::new(done);
    reactor.call_soon(move || poll(r, done));
    safety_stop(reactor, 20.0);
    reactor.run().unwrap();
    common::assert_not_timed_out();
}

fn has(log: &Log, prefix: &str) -> bool {
    log.borrow().iter().any(|e| e.starts_with(prefix))
}

fn entries(log: &Log) -> Vec<String> {
    log.borrow().clone()
}

/// Files of one test's certificates.
struct Files {
    dir: TempDir,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: TempDir::new(),
        }
    }

    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_string()
    }
}

// ---------------------------------------------------------------------------------------
// torsion's server, `openssl s_client`.

/// Runs `openssl s_client` (with `extra` options) against a torsion echo server: it
/// verifies our certificate for `localhost`, sends a line and prints the echo.
fn s_client_round_trip(reactor: &Reactor, extra: &[&str], version: &str, ours: ProtocolVersion) {
    let Some(openssl) = openssl() else { return };
    let pki = Pki::new();
    let files = Files::new();
    let ca = files.write("ca.pem", &pki.ca_pem());
    let log = log();
    let (port, info) = listen_echo(reactor, &pki.server_config(), &log);
    let peer = Peer::spawn(
        Command::new(openssl)
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(["-servername", "localhost", "-verify_hostname", "localhost"])
            .args(["-CAfile", &ca, "-verify_return_error", "-brief", "-ign_eof"])
            .args(extra),
        b"hello from openssl\n",
    );
    let exited = peer.exited();
    let l = log.clone();
    run_until(reactor, move || {
        has(&l, "s-lost") && exited.load(Ordering::SeqCst)
    });
    let out = peer.finish();
    assert!(out.status.success(), "s_client failed: {out:?}");
    assert!(
        out.stdout.lines().any(|l| l == "hello from openssl"),
        "no echo: {out:?}"
    );
    let all = out.all();
    assert!(
        all.contains(&format!("Protocol version: {version}")),
        "{out:?}"
    );
    assert!(all.contains("Verification: OK"), "{out:?}");
    assert!(all.contains("Verified peername: localhost"), "{out:?}");
    assert_eq!(
        entries(&log),
        ["s-made", "s-handshake", "s-lost:done"],
        "{out:?}"
    );
    let info = info.borrow().clone().unwrap();
    assert_eq!(info.protocol_version, Some(ours));
    assert_eq!(info.server_name.as_deref(), Some("localhost"));
}

// ---------------------------------------------------------------------------------------
// torsion's client, `openssl s_server`.

/// An `openssl s_server -rev` (each line comes back reversed; `CLOSE` closes) for one
/// connection, serving a certificate for `localhost` and requiring a client certificate
/// from `pki`; returns it, its port and its certificate.
fn s_server(openssl: &str, pki: &Pki, files: &Files) -> (Peer, u16, CertificateDer<'static>) {
    let (cert, key) = pki.server_pem(&["localhost"]);
    let der = Identity::from_pem(&cert, &key).unwrap().chain()[0].clone();
    let cert = files.write("server.pem", &cert);
    let key = files.write("server.key", &key);
    let ca = files.write("ca.pem", &pki.ca_pem());
    let peer = Peer::spawn(
        Command::new(openssl)
            .args(["s_server", "-accept", "127.0.0.1:0", "-naccept", "1"])
            .args(["-cert", &cert, "-key", &key, "-rev"])
            .args(["-Verify", "1", "-CAfile", &ca, "-verify_return_error"]),
        b"",
    );
    let addr = peer.line_starting("ACCEPT ");
    let port = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr:?}"));
    (peer, port, der)
}

// ---------------------------------------------------------------------------------------
// Twisted.

fn twisted_client(python: &str, port: u16, ca: &str, hostname: &str) -> Peer {
    Peer::spawn(
        Command::new(python).arg(twisted_script()).args([
            "client",
            &port.to_string(),
            ca,
            hostname,
            "hello from twisted",
        ]),
        b"",
    )
}

reactor_test! {
    fn openssl_s_client_talks_tls_1_3_to_our_server(reactor: Reactor) {
        s_client_round_trip(&reactor, &[], "TLSv1.3", ProtocolVersion::TLSv1_3);
    }

    fn openssl_s_client_talks_tls_1_2_to_our_server(reactor: Reactor) {
        s_client_round_trip(&reactor, &["-tls1_2"], "TLSv1.2", ProtocolVersion::TLSv1_2);
    }

    fn our_client_verifies_openssl_s_server_and_presents_its_certificate(reactor: Reactor) {
        let Some(openssl) = openssl() else { return };
        let pki = Pki::new();
        let files = Files::new();
        let (peer, port, server_cert) = s_server(openssl, &pki, &files);
        let (cert, key) = pki.client_pem("torsion client");
        let config = ClientConfig::builder()
            .roots(pki.roots())
            .identity(Identity::from_pem(&cert, &key).unwrap())
            .build()
            .unwrap();
        let side = connect_localhost(&reactor, port, &config, b"hello torsion\nCLOSE\n");
        let l = side.log.clone();
        let exited = peer.exited();
        run_until(&reactor, move || has(&l, "c-closed") && exited.load(Ordering::SeqCst));
        let out = peer.finish();
        let log = entries(&side.log);
        assert_eq!(String::from_utf8_lossy(&side.got.borrow()), "noisrot olleh\n", "{log:?} {out:?}");
        assert!(log.starts_with(&["c-made".into(), "c-handshake".into()]), "{log:?} {out:?}");
        let all = out.all();
        assert!(all.contains("Peer certificate: CN = torsion client"), "s_server saw no client certificate: {out:?}");
        assert!(all.contains("Verification: OK"), "{out:?}");
        let info = side.info.borrow().clone().unwrap();
        assert_eq!(info.protocol_version, Some(ProtocolVersion::TLSv1_3));
        // OpenSSL completes the chain from -CAfile: the leaf, then the authority.
        assert_eq!(info.peer_certificates.first(), Some(&server_cert));
        eprintln!("torsion client against s_server: {log:?}");
    }

    fn our_client_without_a_certificate_is_refused_by_openssl_s_server(reactor: Reactor) {
        let Some(openssl) = openssl() else { return };
        let pki = Pki::new();
        let files = Files::new();
        let (peer, port, _) = s_server(openssl, &pki, &files);
        let side = connect_localhost(&reactor, port, &pki.client_config(), b"hello torsion\n");
        let l = side.log.clone();
        let exited = peer.exited();
        run_until(&reactor, move || {
            (has(&l, "c-closed") || has(&l, "c-failed")) && exited.load(Ordering::SeqCst)
        });
        let out = peer.finish();
        let log = entries(&side.log);
        assert!(side.got.borrow().is_empty(), "{log:?} {out:?}");
        assert!(
            log.iter().any(|e| e.ends_with("tls:CertificateRequired")),
            "{log:?} {out:?}"
        );
    }

    fn a_twisted_client_verifies_our_certificate_and_gets_its_echo(reactor: Reactor) {
        let Some(python) = twisted_python() else { return };
        let pki = Pki::new();
        let files = Files::new();
        let ca = files.write("ca.pem", &pki.ca_pem());
        let log = log();
        let (port, info) = listen_echo(&reactor, &pki.server_config(), &log);
        let peer = twisted_client(&python, port, &ca, "localhost");
        let exited = peer.exited();
        let l = log.clone();
        run_until(&reactor, move || has(&l, "s-lost") && exited.load(Ordering::SeqCst));
        let out = peer.finish();
        assert!(out.status.success(), "{out:?}");
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert!(lines.contains(&"HANDSHAKE"), "{out:?}");
        assert!(lines.contains(&"PEER-CN localhost"), "{out:?}");
        assert!(lines.contains(&"VERSION TLSv1.3"), "{out:?}");
        assert!(lines.contains(&"ECHO hello from twisted"), "{out:?}");
        assert_eq!(entries(&log), ["s-made", "s-handshake", "s-lost:done"], "{out:?}");
        let info = info.borrow().clone().unwrap();
        assert_eq!(info.server_name.as_deref(), Some("localhost"));
    }

    fn a_twisted_client_refuses_our_certificate_for_another_name(reactor: Reactor) {
        let Some(python) = twisted_python() else { return };
        let pki = Pki::new();
        let files = Files::new();
        let ca = files.write("ca.pem", &pki.ca_pem());
        let log = log();
        let (port, _) = listen_echo(&reactor, &pki.server_config(), &log);
        let peer = twisted_client(&python, port, &ca, "elsewhere.example");
        let exited = peer.exited();
        let l = log.clone();
        run_until(&reactor, move || has(&l, "s-lost") && exited.load(Ordering::SeqCst));
        let out = peer.finish();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(!out.stdout.contains("ECHO"), "{out:?}");
        assert!(out.stdout.contains("LOST VerificationError"), "{out:?}");
        assert!(out.stdout.contains("DNSMismatch"), "{out:?}");
        // Twisted checks the name once its side of the handshake is done and then aborts
        // the TCP connection (no alert): our side never completes its handshake.
        let log = entries(&log);
        assert_eq!(log.len(), 2, "{log:?} {out:?}");
        assert_eq!(log[0], "s-made", "{log:?} {out:?}");
        assert!(log[1].starts_with("s-lost:"), "{log:?} {out:?}");
        assert_ne!(log[1], "s-lost:done", "{log:?} {out:?}");
    }

    fn our_client_gets_a_twisted_servers_echo_and_its_close_notify(reactor: Reactor) {
        let Some(python) = twisted_python() else { return };
        let pki = Pki::new();
        let files = Files::new();
        let (cert, key) = pki.server_pem(&["localhost"]);
        let cert = files.write("server.pem", &cert);
        let key = files.write("server.key", &key);
        let peer = Peer::spawn(
            Command::new(&python).arg(twisted_script()).args(["server", &cert, &key]),
            b"",
        );
        let port: u16 = peer.line_starting("PORT ").parse().unwrap();
        let side = connect_localhost(&reactor, port, &pki.client_config(), b"hello from torsion\n");
        let l = side.log.clone();
        let exited = peer.exited();
        run_until(&reactor, move || has(&l, "c-closed") && exited.load(Ordering::SeqCst));
        let out = peer.finish();
        assert!(out.status.success(), "{out:?}");
        assert!(out.stdout.contains("GOT hello from torsion"), "{out:?}");
        assert_eq!(&*side.got.borrow(), b"hello from torsion\n", "{out:?}");
        assert_eq!(
            entries(&side.log),
            ["c-made", "c-handshake", "c-lost:done", "c-closed:done"],
            "{out:?}"
        );
        let info = side.info.borrow().clone().unwrap();
        assert_eq!(info.peer_certificates.len(), 1);
    }
}
