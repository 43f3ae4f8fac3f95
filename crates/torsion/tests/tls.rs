//! TLS over real loopback sockets (Twisted's `twisted.test.test_sslverify` and
//! `twisted.protocols.test.test_tls`): echo, bulk transfer, verification failures, client
//! certificates, SNI, ALPN, STARTTLS, flow control and bad input, on every backend.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::pki::Pki;
use common::{Log, log, push, safety_stop};
use torsion::Reactor;
use torsion::defer::Failure;
use torsion::error::ConnectionDone;
use torsion::net::tcp::ListenOptions;
use torsion::net::{Address, Connector, Transport};
use torsion::protocol::{ClientFactory, Factory, Protocol};
use torsion::time::ReactorTime;
use torsion::tls::{ClientConfig, ServerConfig, TlsError, TlsInfo};

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

fn has_entry(log: &[String], entry: &str) -> bool {
    log.iter().any(|e| e == entry)
}
