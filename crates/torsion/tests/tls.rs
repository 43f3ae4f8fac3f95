//! TLS over real loopback sockets (Twisted's `twisted.test.test_sslverify` and
//! `twisted.protocols.test.test_tls`): echo, bulk transfer, verification failures, client
//! certificates, SNI, ALPN, STARTTLS, flow control and bad input, on every backend.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;

use common::pki::Pki;
use common::{Log, log, push, safety_stop};
use std::cell::Cell;
use std::io::{Read, Write};
use torsion::Reactor;
use torsion::defer::Failure;
use torsion::error::ConnectionDone;
use torsion::net::tcp::ListenOptions;
use torsion::net::{Address, Connector, Transport};
use torsion::protocol::{ClientFactory, Factory, Protocol};
use torsion::time::ReactorTime;

use std::net::TcpStream;

use torsion::endpoints::{client_from_string, server_from_string};
use torsion::net::Producer;
use torsion::protocols::basic::{LineContext, LineHandler, LineReceiver};
use torsion::tls::{
    ClientAuth, ClientConfig, ServerConfig, StartTls, TlsClientFactory, TlsError, TlsInfo,
};

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

fn listen(reactor: &Reactor, factory: Rc<impl Factory>, config: &ServerConfig) -> u16 {
    let options = ListenOptions {
        interface: [127, 0, 0, 1].into(),
        ..Default::default()
    };
    let port = reactor
        .listen_tls_with(0, factory, config, options)
        .unwrap();
    port.host().port().unwrap()
}

/// The server side: echoes, and logs what happened to it.
struct Server {
    log: Log,
    transport: Option<Transport>,
    info: Rc<RefCell<Option<TlsInfo>>>,
}

impl Protocol for Server {
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
        }
    }
    fn connection_lost(&mut self, reason: Failure) {
        push(&self.log, format!("s-lost:{}", kind(&reason)));
    }
}

fn server_factory(log: &Log) -> (Rc<impl Factory>, Rc<RefCell<Option<TlsInfo>>>) {
    let info = Rc::new(RefCell::new(None));
    let (log, i) = (log.clone(), info.clone());
    let factory = Rc::new(move || Server {
        log: log.clone(),
        transport: None,
        info: i.clone(),
    });
    (factory, info)
}

/// The client side: writes `send` at once (before the handshake), closes once as much came
/// back, logs what happened.
struct Client {
    log: Log,
    send: Vec<u8>,
    got: Rc<RefCell<Vec<u8>>>,
    transport: Option<Transport>,
    info: Rc<RefCell<Option<TlsInfo>>>,
}

impl Protocol for Client {
    fn connection_made(&mut self, transport: Transport) {
        push(&self.log, "c-made");
        transport.write(&self.send);
        self.transport = Some(transport);
    }
    fn handshake_completed(&mut self) {
        push(&self.log, "c-handshake");
        *self.info.borrow_mut() = self.transport.as_ref().and_then(|t| t.tls_info());
    }
    fn data_received(&mut self, data: &[u8]) {
        let mut got = self.got.borrow_mut();
        got.extend_from_slice(data);
        if got.len() >= self.send.len()
            && let Some(t) = &self.transport
        {
            t.lose_connection();
        }
    }
    fn connection_lost(&mut self, reason: Failure) {
        push(&self.log, format!("c-lost:{}", kind(&reason)));
    }
}

/// Builds [`Client`]s; logs the connector's outcome and stops the reactor.
struct ClientSide {
    log: Log,
    send: Vec<u8>,
    got: Rc<RefCell<Vec<u8>>>,
    info: Rc<RefCell<Option<TlsInfo>>>,
}

impl ClientSide {
    fn new(reactor: &Reactor, log: &Log, send: &[u8]) -> Rc<ClientSide> {
        let _ = reactor;
        Rc::new(ClientSide {
            log: log.clone(),
            send: send.to_vec(),
            got: Rc::default(),
            info: Rc::default(),
        })
    }
}

impl Factory for ClientSide {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Client {
            log: self.log.clone(),
            send: self.send.clone(),
            got: self.got.clone(),
            transport: None,
            info: self.info.clone(),
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

/// Sets up one client against a server configured with `server`: run the reactor next.
fn exchange(
    reactor: &Reactor,
    server: &ServerConfig,
    client: &ClientConfig,
    name: &str,
    send: &[u8],
) -> (Log, Rc<ClientSide>, Rc<RefCell<Option<TlsInfo>>>) {
    let log = log();
    let (factory, server_info) = server_factory(&log);
    let port = listen(reactor, factory, server);
    let side = ClientSide::new(reactor, &log, send);
    reactor.connect_tls_with(
        "127.0.0.1",
        port,
        side.clone(),
        &ClientConfig::from_rustls(client.rustls().clone()),
        Default::default(),
    );
    let _ = name;
    (log, side, server_info)
}

/// As [`exchange`], the client asking that the certificate be for `name`.
fn exchange_named(
    reactor: &Reactor,
    server: &ServerConfig,
    client: &ClientConfig,
    name: &str,
    send: &[u8],
) -> (Log, Rc<ClientSide>, Rc<RefCell<Option<TlsInfo>>>) {
    let log = log();
    let (factory, server_info) = server_factory(&log);
    let port = listen(reactor, factory, server);
    let side = ClientSide::new(reactor, &log, send);
    let tls = torsion::tls::TlsClientFactory::new(client, name, side.clone());
    reactor.connect_tcp("127.0.0.1", port, tls);
    (log, side, server_info)
}

/// Runs the reactor until `done` says so (checked every 5 ms), 20 s at most.
fn run_until(reactor: &Reactor, done: impl Fn() -> bool + 'static) {
    run_steps(reactor, vec![Box::new(done)]);
}

/// Runs the reactor through `steps`: each is polled every 5 ms until it returns true, then
/// the next; the reactor stops after the last (or after 20 s).
fn run_steps(reactor: &Reactor, steps: Vec<Box<dyn FnMut() -> bool>>) {
    type Steps = Rc<RefCell<std::collections::VecDeque<Box<dyn FnMut() -> bool>>>>;
    fn poll(reactor: Reactor, steps: Steps) {
        loop {
            let done = match steps.borrow_mut().front_mut() {
                Some(step) => step(),
                None => {
                    let _ = reactor.stop();
                    return;
                }
            };
            if !done {
                break;
            }
            steps.borrow_mut().pop_front();
        }
        let r = reactor.clone();
        reactor.call_later(0.005, move || poll(r, steps));
    }
    let steps: Steps = Rc::new(RefCell::new(steps.into()));
    let r = reactor.clone();
    reactor.call_soon(move || poll(r, steps));
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

reactor_test! {
    fn echo_over_tls_with_writes_before_the_handshake_and_close_notify(reactor: Reactor) {
        let pki = Pki::new();
        let (log, side, server_info) = exchange(&reactor, &pki.server_config(), &pki.client_config(), "127.0.0.1", b"hello, world");
        let l = log.clone();
        run_until(&reactor, move || has(&l, "c-closed") && has(&l, "s-lost"));
        assert_eq!(&*side.got.borrow(), b"hello, world");
        let log = entries(&log);
        let at = |s: &str| log.iter().position(|e| e == s).unwrap_or_else(|| panic!("no {s} in {log:?}"));
        assert!(at("c-made") < at("c-handshake"), "{log:?}");
        assert!(at("s-made") < at("s-handshake"), "{log:?}");
        assert!(log.contains(&"c-lost:done".to_string()), "{log:?}");
        assert!(log.contains(&"c-closed:done".to_string()), "{log:?}");
        let info = side.info.borrow().clone().unwrap();
        assert!(info.handshake_complete);
        assert_eq!(info.protocol_version, Some(torsion::tls::ProtocolVersion::TLSv1_3));
        assert!(info.cipher_suite.is_some());
        assert_eq!(info.peer_certificates.len(), 1);
        assert_eq!(info.alpn_protocol, None);
        let server_info = server_info.borrow().clone().unwrap();
        assert!(server_info.peer_certificates.is_empty(), "no client certificate was asked for");
    }

    fn a_peers_close_notify_is_a_clean_connection_done_on_the_server(reactor: Reactor) {
        let pki = Pki::new();
        let (log, _, _) = exchange(&reactor, &pki.server_config(), &pki.client_config(), "127.0.0.1", b"x");
        let l = log.clone();
        run_until(&reactor, move || has(&l, "s-lost"));
        assert!(entries(&log).contains(&"s-lost:done".to_string()), "{:?}", entries(&log));
    }

    fn a_certificate_for_another_host_is_refused_by_default(reactor: Reactor) {
        let pki = Pki::new();
        let (log, side, _) = exchange_named(&reactor, &pki.server_config(), &pki.client_config(), "elsewhere.example", b"secret");
        let l = log.clone();
        run_until(&reactor, move || has(&l, "c-failed") && has(&l, "s-lost"));
        let log = entries(&log);
        assert!(log.contains(&"c-failed:tls:CertificateNotValidForName".to_string()), "{log:?}");
        assert!(!has_entry(&log, "c-handshake"), "{log:?}");
        assert!(side.got.borrow().is_empty());
        assert!(log.iter().any(|e| e.starts_with("s-lost:tls:AlertReceived")), "{log:?}");
    }
}

reactor_test! {
    fn an_expired_certificate_is_refused(reactor: Reactor) {
        let pki = Pki::new();
        let server = ServerConfig::new(pki.expired_server(&["localhost"])).unwrap();
        let (log, _, _) = exchange_named(&reactor, &server, &pki.client_config(), "localhost", b"x");
        let l = log.clone();
        run_until(&reactor, move || has(&l, "c-failed") && has(&l, "s-lost"));
        assert!(has_entry(&entries(&log), "c-failed:tls:CertificateExpired"), "{:?}", entries(&log));
    }

    fn a_certificate_from_an_authority_not_trusted_is_refused(reactor: Reactor) {
        let pki = Pki::new();
        let stranger = Pki::new();
        let (log, _, _) = exchange_named(&reactor, &stranger.server_config(), &pki.client_config(), "localhost", b"x");
        let l = log.clone();
        run_until(&reactor, move || has(&l, "c-failed") && has(&l, "s-lost"));
        assert!(has_entry(&entries(&log), "c-failed:tls:UnknownIssuer"), "{:?}", entries(&log));
    }

    fn a_required_client_certificate_that_is_missing_refuses_the_client(reactor: Reactor) {
        let pki = Pki::new();
        let server = ServerConfig::builder(pki.server(&["localhost"]))
            .client_auth(ClientAuth::Required(pki.roots()))
            .build()
            .unwrap();
        let (log, side, _) = exchange_named(&reactor, &server, &pki.client_config(), "localhost", b"x");
        let l = log.clone();
        run_until(&reactor, move || (has(&l, "c-failed") || has(&l, "c-closed")) && has(&l, "s-lost"));
        let log = entries(&log);
        assert!(has_entry(&log, "s-lost:tls:CertificateRequired"), "{log:?}");
        assert!(!has_entry(&log, "s-handshake"), "{log:?}");
        assert!(log.iter().any(|e| e.starts_with("c-lost:tls:")), "{log:?}");
        assert!(side.got.borrow().is_empty());
    }

    fn a_required_client_certificate_is_checked_and_visible_to_the_server(reactor: Reactor) {
        let pki = Pki::new();
        let server = ServerConfig::builder(pki.server(&["localhost"]))
            .client_auth(ClientAuth::Required(pki.roots()))
            .build()
            .unwrap();
        let alice = pki.client("alice");
        let alice_der = alice.chain()[0].clone();
        let client = ClientConfig::builder().roots(pki.roots()).identity(alice).build().unwrap();
        let (log, side, server_info) = exchange_named(&reactor, &server, &client, "localhost", b"ping");
        let l = log.clone();
        run_until(&reactor, move || has(&l, "c-closed") && has(&l, "s-lost"));
        assert_eq!(&*side.got.borrow(), b"ping", "{:?}", entries(&log));
        let info = server_info.borrow().clone().unwrap();
        assert_eq!(info.peer_certificates, vec![alice_der]);
    }

    fn an_optional_client_certificate_may_be_left_out(reactor: Reactor) {
        let pki = Pki::new();
        let server = ServerConfig::builder(pki.server(&["localhost"]))
            .client_auth(ClientAuth::Optional(pki.roots()))
            .build()
            .unwrap();
        let (log, side, server_info) = exchange_named(&reactor, &server, &pki.client_config(), "localhost", b"ping");
        let l = log.clone();
        run_until(&reactor, move || has(&l, "c-closed") && has(&l, "s-lost"));
        assert_eq!(&*side.got.borrow(), b"ping", "{:?}", entries(&log));
        assert!(server_info.borrow().clone().unwrap().peer_certificates.is_empty());
    }

    fn sni_chooses_the_certificate_by_name(reactor: Reactor) {
        let pki = Pki::new();
        let (a, b) = (pki.server(&["a.test"]), pki.server(&["b.test"]));
        let (a_der, b_der) = (a.chain()[0].clone(), b.chain()[0].clone());
        let server = ServerConfig::builder(pki.server(&["default.test"]))
            .sni("a.test", a)
            .sni("b.test", b)
            .build()
            .unwrap();
        let log = log();
        let (factory, server_info) = server_factory(&log);
        let port = listen(&reactor, factory, &server);
        let sides: Vec<Rc<ClientSide>> = ["a.test", "b.test"]
            .iter()
            .map(|name| {
                let side = ClientSide::new(&reactor, &log, b"x");
                reactor.connect_tcp("127.0.0.1", port, TlsClientFactory::new(&pki.client_config(), name, side.clone()));
                side
            })
            .collect();
        let l = log.clone();
        run_until(&reactor, move || l.borrow().iter().filter(|e| e.starts_with("c-closed")).count() == 2);
        assert_eq!(sides[0].info.borrow().clone().unwrap().peer_certificates, vec![a_der], "{:?}", entries(&log));
        assert_eq!(sides[1].info.borrow().clone().unwrap().peer_certificates, vec![b_der]);
        let names: Option<String> = server_info.borrow().clone().unwrap().server_name;
        assert!(matches!(names.as_deref(), Some("a.test" | "b.test")), "{names:?}");
    }

    fn alpn_agrees_on_a_protocol_both_sides_see(reactor: Reactor) {
        let pki = Pki::new();
        let server = ServerConfig::builder(pki.server(&["localhost"]))
            .alpn_protocols(&["h2", "http/1.1"])
            .build()
            .unwrap();
        let client = ClientConfig::builder().roots(pki.roots()).alpn_protocols(&["http/1.1"]).build().unwrap();
        let (log, side, server_info) = exchange_named(&reactor, &server, &client, "localhost", b"GET");
        let l = log.clone();
        run_until(&reactor, move || has(&l, "c-closed") && has(&l, "s-lost"));
        assert_eq!(side.info.borrow().clone().unwrap().alpn_protocol.as_deref(), Some(&b"http/1.1"[..]));
        assert_eq!(server_info.borrow().clone().unwrap().alpn_protocol.as_deref(), Some(&b"http/1.1"[..]));
    }

    fn alpn_without_a_shared_protocol_fails_the_handshake(reactor: Reactor) {
        let pki = Pki::new();
        let server = ServerConfig::builder(pki.server(&["localhost"])).alpn_protocols(&["h2"]).build().unwrap();
        let client = ClientConfig::builder().roots(pki.roots()).alpn_protocols(&["imap"]).build().unwrap();
        let (log, _, _) = exchange_named(&reactor, &server, &client, "localhost", b"x");
        let l = log.clone();
        run_until(&reactor, move || has(&l, "c-failed") && has(&l, "s-lost"));
        let log = entries(&log);
        assert!(has_entry(&log, "c-failed:tls:NoApplicationProtocol"), "{log:?}");
        assert!(has_entry(&log, "s-lost:tls:NoApplicationProtocol"), "{log:?}");
    }

    fn sixty_four_mebibytes_each_way_arrive_intact(reactor: Reactor) {
        const TOTAL: usize = 64 << 20;
        let pki = Pki::new();
        let log = log();
        let (factory, _) = server_factory(&log);
        let port = listen(&reactor, factory, &pki.server_config());
        let got = Rc::new(Cell::new(0usize));
        let sum = Rc::new(Cell::new(Checksum::default()));
        let (g, s2) = (got.clone(), sum.clone());
        let client = Rc::new(move || Bulk { total: TOTAL, got: g.clone(), sum: s2.clone(), transport: None });
        reactor.connect_tls("127.0.0.1", port, client, &pki.client_config());
        let g = got.clone();
        run_until(&reactor, move || g.get() >= TOTAL);
        assert_eq!(got.get(), TOTAL);
        let mut expected = Checksum::default();
        for chunk in 0..TOTAL / CHUNK {
            expected.add(&pattern(chunk));
        }
        assert_eq!(sum.get(), expected, "the echoed stream differs from the one sent");
    }

    fn a_slow_reader_behind_tls_keeps_the_writers_memory_bounded(reactor: Reactor) {
        let pki = Pki::new();
        let peak = Rc::new(Cell::new(0usize));
        let paused = Rc::new(Cell::new(0u32));
        let written = Rc::new(Cell::new(0usize));
        let (p, pa, w) = (peak.clone(), paused.clone(), written.clone());
        let server = Rc::new(move || Flood { peak: p.clone(), paused: pa.clone(), written: w.clone() });
        let port = listen(&reactor, server, &pki.server_config());
        let client_transport: Rc<RefCell<Option<Transport>>> = Rc::default();
        let received = Rc::new(Cell::new(0usize));
        let (ct, rc) = (client_transport.clone(), received.clone());
        let client = Rc::new(move || Sink { transport: ct.clone(), received: rc.clone() });
        reactor.connect_tls("127.0.0.1", port, client, &pki.client_config());
        // The client reads nothing until the server's producer has been paused.
        let peak_at_pause = Rc::new(Cell::new(0usize));
        let (pa, pk, pap) = (paused.clone(), peak.clone(), peak_at_pause.clone());
        let (r, w) = (received.clone(), written.clone());
        run_steps(
            &reactor,
            vec![
                Box::new(move || {
                    if pa.get() == 0 {
                        return false;
                    }
                    pap.set(pk.get());
                    if let Some(t) = client_transport.borrow().as_ref() {
                        t.resume_producing();
                    }
                    true
                }),
                Box::new(move || w.get() >= FLOOD_TOTAL && r.get() >= FLOOD_TOTAL),
            ],
        );
        let high = torsion::net::tcp::HIGH_WATER_MARK;
        assert!(
            peak_at_pause.get() <= high + FLOOD_CHUNK,
            "buffered {} over a high-water mark of {high}",
            peak_at_pause.get()
        );
        assert!(peak.get() <= high + FLOOD_CHUNK, "buffered {}", peak.get());
        assert_eq!(received.get(), FLOOD_TOTAL);
    }

    fn starttls_over_a_line_receiver_loses_nothing_at_the_boundary(reactor: Reactor) {
        let log = starttls(&reactor, false);
        assert!(has_entry(&log, "s-line:before"), "{log:?}");
        assert!(has_entry(&log, "s-line:after"), "{log:?}");
        assert!(has_entry(&log, "c-got:GO|echo:after|"), "{log:?}");
        assert!(has_entry(&log, "c-tls:true"), "{log:?}");
    }

    fn starttls_with_the_hello_in_the_same_packet_as_the_command(reactor: Reactor) {
        let log = starttls(&reactor, true);
        assert!(has_entry(&log, "s-line:after"), "{log:?}");
        assert!(has_entry(&log, "c-got:echo:after|"), "{log:?}");
    }

    fn plaintext_or_random_bytes_close_only_that_connection(reactor: Reactor) {
        let pki = Pki::new();
        let log = log();
        let (factory, _) = server_factory(&log);
        let port = listen(&reactor, factory, &pki.server_config());
        for garbage in [&b"GET / HTTP/1.0\r\n\r\n"[..], &[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3][..], &[0xde; 300][..]] {
            let l = log.clone();
            let g = garbage.to_vec();
            reactor.connect_tcp("127.0.0.1", port, Rc::new(move || Garbage { bytes: g.clone(), log: l.clone() }));
        }
        let side = ClientSide::new(&reactor, &log, b"still here");
        let (l, r, sd, config) = (log.clone(), reactor.clone(), side.clone(), pki.client_config());
        let l2 = log.clone();
        run_steps(
            &reactor,
            vec![
                Box::new(move || {
                    if l.borrow().iter().filter(|e| e.starts_with("s-lost")).count() < 3 {
                        return false;
                    }
                    // The server still serves.
                    r.connect_tls("127.0.0.1", port, sd.clone(), &config);
                    true
                }),
                Box::new(move || {
                    has(&l2, "c-closed") && l2.borrow().iter().filter(|e| e.starts_with("s-lost")).count() == 4
                }),
            ],
        );
        let lost: Vec<String> = entries(&log).into_iter().filter(|e| e.starts_with("s-lost")).collect();
        assert_eq!(lost.len(), 4, "{lost:?}");
        assert!(lost[..3].iter().all(|e| e.starts_with("s-lost:tls:")), "{lost:?}");
        assert!(lost.iter().any(|e| e == "s-lost:tls:NotTls"), "{lost:?}");
        assert_eq!(&*side.got.borrow(), b"still here");
    }

    fn a_tcp_close_without_close_notify_is_reported_as_truncation(reactor: Reactor) {
        let pki = Pki::new();
        let log = log();
        let (factory, _) = server_factory(&log);
        let port = listen(&reactor, factory, &pki.server_config());
        let config = pki.client_config().rustls().clone();
        let peer = std::thread::spawn(move || {
            let name = "localhost".try_into().unwrap();
            let conn = rustls::ClientConnection::new(config, name).unwrap();
            let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            tls.write_all(b"cut").unwrap();
            let mut echo = [0u8; 3];
            tls.read_exact(&mut echo).unwrap();
            // Close TCP without a close_notify.
            tls.sock.shutdown(std::net::Shutdown::Both).unwrap();
            echo
        });
        let l = log.clone();
        run_until(&reactor, move || has(&l, "s-lost"));
        assert_eq!(&peer.join().unwrap(), b"cut");
        assert!(has_entry(&entries(&log), "s-lost:tls:Truncated"), "{:?}", entries(&log));
    }

    fn the_server_answers_a_peers_close_notify_with_its_own(reactor: Reactor) {
        let pki = Pki::new();
        let log = log();
        let (factory, _) = server_factory(&log);
        let port = listen(&reactor, factory, &pki.server_config());
        let config = pki.client_config().rustls().clone();
        let peer = std::thread::spawn(move || {
            let name = "localhost".try_into().unwrap();
            let conn = rustls::ClientConnection::new(config, name).unwrap();
            let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            tls.write_all(b"bye").unwrap();
            let mut echo = [0u8; 3];
            tls.read_exact(&mut echo).unwrap();
            tls.conn.send_close_notify();
            tls.flush().unwrap();
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest).map(|_| rest.len()).map_err(|e| e.to_string())
        });
        let l = log.clone();
        run_until(&reactor, move || has(&l, "s-lost"));
        assert_eq!(peer.join().unwrap(), Ok(0), "the client saw no close_notify");
        assert!(has_entry(&entries(&log), "s-lost:done"), "{:?}", entries(&log));
    }

    fn small_writes_in_one_callback_go_out_in_few_records(reactor: Reactor) {
        let pki = Pki::new();
        let factory = Rc::new(|| Chatty { transport: None });
        let port = listen(&reactor, factory, &pki.server_config());
        let config = pki.client_config().rustls().clone();
        let peer = std::thread::spawn(move || {
            let name = "localhost".try_into().unwrap();
            let conn = rustls::ClientConnection::new(config, name).unwrap();
            let read = Rc::new(Cell::new(0usize));
            let sock = Counting(TcpStream::connect(("127.0.0.1", port)).unwrap(), read.clone());
            let mut tls = rustls::StreamOwned::new(conn, sock);
            tls.write_all(b"warm").unwrap();
            let mut warm = [0u8; 4];
            tls.read_exact(&mut warm).unwrap();
            let before = read.get();
            tls.write_all(b"go").unwrap();
            let mut all = vec![0u8; CHATTY_WRITES * 10];
            tls.read_exact(&mut all).unwrap();
            read.get() - before
        });
        let done = Rc::new(RefCell::new(Some(peer)));
        let d = done.clone();
        run_until(&reactor, move || d.borrow().as_ref().is_some_and(|p| p.is_finished()));
        let ciphertext = done.borrow_mut().take().unwrap().join().unwrap();
        let plaintext = CHATTY_WRITES * 10;
        // One record per write would add at least 22 bytes each (22,000 here); a session
        // ticket or two may arrive in the same window.
        assert!(
            ciphertext < plaintext + 2_000,
            "{CHATTY_WRITES} writes of 10 bytes took {ciphertext} bytes of ciphertext"
        );
    }

    fn half_close_over_tls_sends_close_notify_and_keeps_reading(reactor: Reactor) {
        let pki = Pki::new();
        let log = log();
        let l = log.clone();
        let server = Rc::new(move || HalfCloser { log: l.clone(), transport: None });
        let port = listen(&reactor, server, &pki.server_config());
        let l = log.clone();
        let client = Rc::new(move || HalfCloseClient { log: l.clone(), got: Vec::new(), transport: None });
        reactor.connect_tls("127.0.0.1", port, client, &pki.client_config());
        let l = log.clone();
        run_until(&reactor, move || has(&l, "c-lost") && has(&l, "s-lost"));
        let log = entries(&log);
        assert!(has_entry(&log, "c-write-closed"), "{log:?}");
        assert!(has_entry(&log, "s-read-closed"), "{log:?}");
        assert!(has_entry(&log, "c-got:pingEND"), "{log:?}");
        assert!(has_entry(&log, "c-lost:done"), "{log:?}");
        assert!(has_entry(&log, "s-lost:done"), "{log:?}");
    }

    fn a_handshake_that_does_not_complete_in_time_closes_the_connection(reactor: Reactor) {
        let pki = Pki::new();
        let log = log();
        let (factory, _) = server_factory(&log);
        let config = pki
            .server_config()
            .with_handshake_timeout(Some(std::time::Duration::from_millis(200)));
        let port = listen(&reactor, factory, &config);
        let l = log.clone();
        // Connects and says nothing.
        reactor.connect_tcp("127.0.0.1", port, Rc::new(move || Garbage { bytes: Vec::new(), log: l.clone() }));
        let l = log.clone();
        run_until(&reactor, move || has(&l, "s-lost") && has(&l, "g-lost"));
        assert!(has_entry(&entries(&log), "s-lost:tls:HandshakeTimeout"), "{:?}", entries(&log));
    }

    fn no_shared_protocol_version_fails_the_handshake_on_both_sides(reactor: Reactor) {
        let pki = Pki::new();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let identity = pki.server_pem(&["localhost"]);
        let chain = rustls::pki_types::CertificateDer::pem_slice_iter(identity.0.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(identity.1.as_bytes()).unwrap();
        let tls13_only = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in pki.roots_der() {
            roots.add(cert).unwrap();
        }
        let tls12_only = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server = ServerConfig::from_rustls(Arc::new(tls13_only));
        let client = ClientConfig::from_rustls(Arc::new(tls12_only));
        let (log, _, _) = exchange_named(&reactor, &server, &client, "localhost", b"x");
        let l = log.clone();
        run_until(&reactor, move || has(&l, "c-failed") && has(&l, "s-lost"));
        let log = entries(&log);
        assert!(has_entry(&log, "c-failed:tls:NoSharedVersion"), "{log:?}");
        assert!(has_entry(&log, "s-lost:tls:NoSharedVersion"), "{log:?}");
    }

    fn start_tls_twice_or_on_a_closed_connection_is_an_error(reactor: Reactor) {
        let pki = Pki::new();
        let log = log();
        let (config, l) = (pki.server_config(), log.clone());
        let factory = Rc::new(move || Twice { config: config.clone(), log: l.clone() });
        let (_, port) = common::listen_local(&reactor, factory);
        let side = ClientSide::new(&reactor, &log, b"x");
        reactor.connect_tls("127.0.0.1", port, side, &pki.client_config());
        let l = log.clone();
        run_until(&reactor, move || has(&l, "twice:"));
        let log = entries(&log);
        assert!(has_entry(&log, "twice:tls:CannotStart(\"TLS was started on this connection already\")"), "{log:?}");
    }
}

reactor_test! {
    fn ssl_and_tls_endpoint_strings_serve_and_connect_with_pem_files(reactor: Reactor) {
        let pki = Pki::new();
        let dir = common::TempDir::new();
        let (cert, key) = pki.server_pem(&["localhost"]);
        std::fs::write(dir.join("cert.pem"), cert).unwrap();
        std::fs::write(dir.join("key.pem"), key).unwrap();
        std::fs::write(dir.join("ca.pem"), pki.ca_pem()).unwrap();
        let log = log();
        let (factory, _) = server_factory(&log);
        let description = format!(
            "ssl:0:privateKey={}:certKey={}:interface=127.0.0.1",
            dir.join("key.pem").display(),
            dir.join("cert.pem").display()
        );
        let server = server_from_string(&reactor, &description).unwrap();
        let port = server.listen(factory).take_result().unwrap().unwrap();
        let number = port.host().port().unwrap();
        let ok = client_from_string(&reactor, &format!("tls:localhost:{number}:trustRoots={}", dir.join("ca.pem").display())).unwrap();
        // The certificate is for localhost only: 127.0.0.1 is refused.
        let wrong = client_from_string(&reactor, &format!("tls:127.0.0.1:{number}:trustRoots={}", dir.0.display())).unwrap();
        let outcomes: Rc<RefCell<Vec<String>>> = Rc::default();
        for (name, endpoint) in [("ok", ok), ("wrong", wrong)] {
            let side = ClientSide::new(&reactor, &log, b"via endpoints");
            let o = outcomes.clone();
            let mut d = endpoint.connect(side).add_callbacks(
                move |t: Transport| {
                    let done = t.tls_info().is_some_and(|i| i.handshake_complete);
                    o.borrow_mut().push(format!("{name}:connected:{done}"));
                    Ok::<(), Failure>(())
                },
                {
                    let o = outcomes.clone();
                    move |f: Failure| {
                        o.borrow_mut().push(format!("{name}:failed:{}", kind(&f)));
                        Ok::<(), Failure>(())
                    }
                },
            );
            let _ = d.take_result();
        }
        let o = outcomes.clone();
        let l = log.clone();
        run_until(&reactor, move || o.borrow().len() == 2 && has(&l, "c-lost:done"));
        let mut outcomes = outcomes.borrow().clone();
        outcomes.sort();
        assert_eq!(outcomes, ["ok:connected:true", "wrong:failed:tls:CertificateNotValidForName"]);
    }
}

#[test]
fn ssl_endpoint_strings_report_missing_files_and_unsupported_options() {
    let reactor = Reactor::new().unwrap();
    let err = server_from_string(&reactor, "ssl:0:privateKey=/nonexistent/key.pem").unwrap_err();
    assert!(err.to_string().contains("/nonexistent/key.pem"), "{err}");
    let err = server_from_string(&reactor, "ssl:0:sslmethod=TLSv1_2_METHOD").unwrap_err();
    assert!(err.to_string().contains("sslmethod"), "{err}");
    let err =
        client_from_string(&reactor, "tls:example.com:443:trustRoots=/nonexistent").unwrap_err();
    assert!(err.to_string().contains("/nonexistent"), "{err}");
    let err = client_from_string(&reactor, "tls:example.com:443:privateKey=k.pem").unwrap_err();
    assert!(err.to_string().contains("needs a certificate"), "{err}");
}

const CHATTY_WRITES: usize = 1000;

/// Echoes `warm`; on `go`, writes 1000 lines of 10 bytes in one callback.
struct Chatty {
    transport: Option<Transport>,
}

impl Protocol for Chatty {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        let Some(t) = &self.transport else { return };
        if data == b"go" {
            for _ in 0..CHATTY_WRITES {
                t.write(b"123456789\n");
            }
        } else {
            t.write(data);
        }
    }
}

/// A socket that counts the bytes read from it.
struct Counting(TcpStream, Rc<Cell<usize>>);

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.set(self.1.get() + n);
        Ok(n)
    }
}

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// A half-closing server: echoes, and once the client's side is shut writes `END` and
/// closes.
struct HalfCloser {
    log: Log,
    transport: Option<Transport>,
}

impl Protocol for HalfCloser {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }
    fn supports_half_close(&self) -> bool {
        true
    }
    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            t.write(data);
        }
    }
    fn read_connection_lost(&mut self) {
        push(&self.log, "s-read-closed");
        if let Some(t) = &self.transport {
            t.write(b"END");
            t.lose_connection();
        }
    }
    fn connection_lost(&mut self, reason: Failure) {
        push(&self.log, format!("s-lost:{}", kind(&reason)));
    }
}

/// Sends `ping` and shuts its sending side at once; reads on until the server's end.
struct HalfCloseClient {
    log: Log,
    got: Vec<u8>,
    transport: Option<Transport>,
}

impl Protocol for HalfCloseClient {
    fn connection_made(&mut self, transport: Transport) {
        transport.write(b"ping");
        transport.lose_write_connection();
        self.transport = Some(transport);
    }
    fn read_connection_lost(&mut self) {
        if let Some(t) = &self.transport {
            t.lose_connection();
        }
    }
    fn supports_half_close(&self) -> bool {
        true
    }
    fn write_connection_lost(&mut self) {
        push(&self.log, "c-write-closed");
    }
    fn data_received(&mut self, data: &[u8]) {
        self.got.extend_from_slice(data);
    }
    fn connection_lost(&mut self, reason: Failure) {
        push(
            &self.log,
            format!("c-got:{}", String::from_utf8_lossy(&self.got)),
        );
        push(&self.log, format!("c-lost:{}", kind(&reason)));
    }
}

/// A STARTTLS exchange over a line receiver: the server answers `GO` in the clear unless
/// the client is `pipelined` (sends its hello right after the command); the log.
fn starttls(reactor: &Reactor, pipelined: bool) -> Vec<String> {
    let pki = Pki::new();
    let log = log();
    let (config, l) = (pki.server_config(), log.clone());
    let server = Rc::new(move || {
        LineReceiver::new(StartTlsServer {
            config: config.clone(),
            log: l.clone(),
            reply: !pipelined,
        })
    });
    let (_, port) = common::listen_local(reactor, server);
    let (config, l) = (pki.client_config(), log.clone());
    let client = Rc::new(move || StartTlsClient {
        config: config.clone(),
        log: l.clone(),
        pipelined,
        transport: None,
        got: Vec::new(),
    });
    reactor.connect_tcp("127.0.0.1", port, client);
    let l = log.clone();
    run_until(reactor, move || has(&l, "c-lost"));
    entries(&log)
}

/// Starts TLS a second time in `connection_made`, over the first that the factory started.
struct Twice {
    config: ServerConfig,
    log: Log,
}

impl Protocol for Twice {
    fn connection_made(&mut self, transport: Transport) {
        transport.start_tls(StartTls::server(&self.config)).unwrap();
        let second = transport
            .start_tls(StartTls::server(&self.config))
            .unwrap_err();
        push(&self.log, format!("twice:{}", kind(&second)));
    }
}

const CHUNK: usize = 64 * 1024;

/// Chunk `n` of the bulk stream: bytes that differ from chunk to chunk.
fn pattern(n: usize) -> Vec<u8> {
    (0..CHUNK)
        .map(|i| (i.wrapping_mul(31) ^ n.wrapping_mul(7)) as u8)
        .collect()
}

/// An order-sensitive checksum (FNV-1a over 64-bit words).
#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
struct Checksum(u64, u64);

impl Checksum {
    fn add(&mut self, data: &[u8]) {
        let mut h = if self.1 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in data {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h;
        self.1 += data.len() as u64;
    }
}

/// Sends `total` bytes through a pull producer and checks what comes back.
struct Bulk {
    total: usize,
    got: Rc<Cell<usize>>,
    sum: Rc<Cell<Checksum>>,
    transport: Option<Transport>,
}

struct BulkProducer {
    transport: Transport,
    next: Cell<usize>,
    chunks: usize,
}

impl Producer for BulkProducer {
    fn resume_producing(&self) {
        let n = self.next.get();
        if n == self.chunks {
            self.transport.unregister_producer();
            return;
        }
        self.next.set(n + 1);
        self.transport.write(&pattern(n));
    }
    fn stop_producing(&self) {}
}

impl Protocol for Bulk {
    fn connection_made(&mut self, transport: Transport) {
        let producer = Rc::new(BulkProducer {
            transport: transport.clone(),
            next: Cell::new(0),
            chunks: self.total / CHUNK,
        });
        transport.register_producer(producer, false).unwrap();
        self.transport = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        let mut sum = self.sum.get();
        // The checksum is over chunk boundaries of the stream, not of the reads: feed it
        // byte-exactly in order.
        sum.add(data);
        self.sum.set(sum);
        self.got.set(self.got.get() + data.len());
        if self.got.get() >= self.total
            && let Some(t) = &self.transport
        {
            t.lose_connection();
        }
    }
}

const FLOOD_CHUNK: usize = 16 * 1024;
const FLOOD_TOTAL: usize = 8 << 20;

/// Writes `FLOOD_TOTAL` bytes as a push producer, pausing when told; records the largest
/// buffer it saw.
struct Flood {
    peak: Rc<Cell<usize>>,
    paused: Rc<Cell<u32>>,
    written: Rc<Cell<usize>>,
}

struct FloodProducer {
    transport: Transport,
    reactor: Reactor,
    me: std::rc::Weak<FloodProducer>,
    running: Cell<bool>,
    peak: Rc<Cell<usize>>,
    paused: Rc<Cell<u32>>,
    written: Rc<Cell<usize>>,
}

impl FloodProducer {
    fn pump(&self) {
        while self.running.get() && self.written.get() < FLOOD_TOTAL {
            self.transport.write(&[b'f'; FLOOD_CHUNK]);
            self.written.set(self.written.get() + FLOOD_CHUNK);
            self.peak
                .set(self.peak.get().max(self.transport.buffered()));
        }
        if self.written.get() >= FLOOD_TOTAL {
            self.transport.unregister_producer();
        }
    }
}

impl Producer for FloodProducer {
    fn resume_producing(&self) {
        self.running.set(true);
        if let Some(me) = self.me.upgrade() {
            self.reactor.call_soon(move || me.pump());
        }
    }
    fn pause_producing(&self) {
        self.running.set(false);
        self.paused.set(self.paused.get() + 1);
    }
    fn stop_producing(&self) {
        self.running.set(false);
    }
}

impl Protocol for Flood {
    fn handshake_completed(&mut self) {}
    fn connection_made(&mut self, transport: Transport) {
        let reactor = Reactor::current().expect("a reactor runs this protocol");
        let producer = Rc::new_cyclic(|me| FloodProducer {
            transport: transport.clone(),
            reactor,
            me: me.clone(),
            running: Cell::new(true),
            peak: self.peak.clone(),
            paused: self.paused.clone(),
            written: self.written.clone(),
        });
        transport.register_producer(producer.clone(), true).unwrap();
        producer.resume_producing();
    }
}

/// Reads nothing at first (paused), then counts what arrives.
struct Sink {
    transport: Rc<RefCell<Option<Transport>>>,
    received: Rc<Cell<usize>>,
}

impl Protocol for Sink {
    fn connection_made(&mut self, transport: Transport) {
        transport.pause_producing();
        *self.transport.borrow_mut() = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.received.set(self.received.get() + data.len());
    }
}

/// The STARTTLS server: lines in the clear until `STARTTLS`, then TLS; echoes other lines.
struct StartTlsServer {
    config: ServerConfig,
    log: Log,
    /// Answer `GO` in the clear before switching (as SMTP and IMAP do).
    reply: bool,
}

impl LineHandler for StartTlsServer {
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        let line = String::from_utf8_lossy(line).into_owned();
        push(&self.log, format!("s-line:{line}"));
        match line.as_str() {
            "STARTTLS" => {
                if self.reply {
                    ctx.send_line(b"GO");
                }
                ctx.start_tls(StartTls::server(&self.config)).unwrap();
            }
            "before" => {}
            other => ctx.send_line(format!("echo:{other}").as_bytes()),
        }
    }
}

/// The STARTTLS client: `before`, `STARTTLS`, then `after` over TLS; closes once echoed.
struct StartTlsClient {
    config: ClientConfig,
    log: Log,
    /// Start TLS right after the command, without waiting for `GO`.
    pipelined: bool,
    transport: Option<Transport>,
    got: Vec<u8>,
}

impl Protocol for StartTlsClient {
    fn connection_made(&mut self, transport: Transport) {
        transport.write(b"before\r\nSTARTTLS\r\n");
        if self.pipelined {
            transport
                .start_tls(StartTls::client(&self.config, "localhost"))
                .unwrap();
            transport.write(b"after\r\n");
        }
        self.transport = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.got.extend_from_slice(data);
        let Some(t) = self.transport.clone() else {
            return;
        };
        if !self.pipelined && t.tls_info().is_none() && self.got.ends_with(b"GO\r\n") {
            t.start_tls(StartTls::client(&self.config, "localhost"))
                .unwrap();
            t.write(b"after\r\n");
        }
        if self.got.ends_with(b"echo:after\r\n") {
            let text = String::from_utf8_lossy(&self.got).replace("\r\n", "|");
            push(&self.log, format!("c-got:{text}"));
            push(
                &self.log,
                format!(
                    "c-tls:{}",
                    t.tls_info().is_some_and(|i| i.handshake_complete)
                ),
            );
            t.lose_connection();
        }
    }
    fn connection_lost(&mut self, reason: Failure) {
        push(&self.log, format!("c-lost:{}", kind(&reason)));
    }
}

/// Sends bytes that are not TLS to a TLS port.
struct Garbage {
    bytes: Vec<u8>,
    log: Log,
}

impl Protocol for Garbage {
    fn connection_made(&mut self, transport: Transport) {
        transport.write(&self.bytes);
    }
    fn connection_lost(&mut self, reason: Failure) {
        push(&self.log, format!("g-lost:{}", kind(&reason)));
    }
}

fn has_entry(log: &[String], entry: &str) -> bool {
    log.iter().any(|e| e == entry)
}
