//! TLS against real peers over loopback sockets, on every backend: torsion's server with
//! `openssl s_client` (TLS 1.3 and forced TLS 1.2) and with a Twisted client, torsion's
//! client with `openssl s_server` (which requires a client certificate) and with a Twisted
//! server (whose `loseConnection` sends `close_notify`).
//!
//! The peers are separate programs: `openssl` from `PATH`, and Twisted from a Python that
//! can import `twisted`, `OpenSSL` and `service_identity` (`$TORSION_INTEROP_PYTHON`, else the venv `tests/interop/setup.sh` makes) running the repository's `tests/interop/tls_peer.py`.
//! A missing peer skips its test (a `skipped:` line on stderr), or fails it when
//! `TORSION_REQUIRE_INTEROP=1`. Every peer is killed after 20 s, every reactor stopped.

mod common;

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::Command;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use common::interop::{Peer, need, peer_script, run_until, runs, twisted_python};
use common::pki::Pki;
use common::{Log, TempDir, log, push};
use torsion::Reactor;
use torsion::defer::Failure;
use torsion::error::ConnectionDone;
use torsion::net::tcp::ListenOptions;
use torsion::net::{Address, Connector, Transport};
use torsion::protocol::{ClientFactory, Factory, Protocol};
use torsion::tls::{
    CertificateDer, ClientConfig, Identity, ProtocolVersion, ServerConfig, TlsClientFactory,
    TlsError, TlsInfo,
};

// ---------------------------------------------------------------------------------------
// The peers.

/// The `openssl` command line tool.
fn openssl() -> Option<&'static str> {
    need(
        runs("openssl", &["version"]).then_some("openssl"),
        "the openssl command",
        "apt-get install openssl",
    )
}

/// A Python with Twisted's TLS support.
fn twisted_tls_python() -> Option<String> {
    twisted_python("twisted, OpenSSL, service_identity")
}

fn twisted_script() -> PathBuf {
    peer_script("tls_peer.py")
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
        let Some(python) = twisted_tls_python() else { return };
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
        let Some(python) = twisted_tls_python() else { return };
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
        let Some(python) = twisted_tls_python() else { return };
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
