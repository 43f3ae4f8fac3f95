//! TLS around the handshake and the close, over loopback on every backend: closing,
//! producers, throttling and STARTTLS while the handshake runs; a clean close that reads
//! the peer's last bytes (TLS 1.3 session tickets) instead of resetting; error
//! classification (resets, forged and truncated records, refused client certificates);
//! re-entrant calls from the protocol; the client endpoint's Deferred in every path; SNI,
//! client authentication and resumption settings.

mod common;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::Duration;

use common::pki::Pki;
use common::{Log, log, push};
use torsion::Reactor;
use torsion::defer::Failure;
use torsion::endpoints::{ClientEndpoint, TcpClientEndpoint, TlsClientEndpoint};
use torsion::error::{Cancelled, ConnectionAborted, ConnectionDone, ConnectionLost};
use torsion::net::tcp::ListenOptions;
use torsion::net::{Address, Connector, Producer, Transport};
use torsion::protocol::{ClientFactory, Factory, Protocol};
use torsion::time::ReactorTime;
use torsion::tls::{ClientAuth, ClientConfig, ServerConfig, StartTls, TlsError};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A reason as the logs write it.
fn kind(reason: &Failure) -> String {
    if reason.check::<ConnectionDone>() {
        "done".into()
    } else if reason.check::<ConnectionAborted>() {
        "aborted".into()
    } else if reason.check::<Cancelled>() {
        "cancelled".into()
    } else if let Some(tls) = reason.downcast_ref::<TlsError>() {
        format!(
            "tls:{:?}:{}",
            tls.kind(),
            if tls.during_handshake() {
                "hs"
            } else {
                "after"
            }
        )
    } else if reason.check::<ConnectionLost>() {
        format!("lost({reason})")
    } else {
        format!("other:{reason}")
    }
}

fn listen_tls(reactor: &Reactor, factory: Rc<impl Factory>, config: &ServerConfig) -> u16 {
    let options = ListenOptions {
        interface: [127, 0, 0, 1].into(),
        ..Default::default()
    };
    let port = reactor
        .listen_tls_with(0, factory, config, options)
        .unwrap();
    let n = port.host().port().unwrap();
    std::mem::forget(port);
    n
}

fn listen_tcp(reactor: &Reactor, factory: Rc<impl Factory>) -> u16 {
    let (port, n) = common::listen_local(reactor, factory);
    std::mem::forget(port);
    n
}

/// Runs the reactor until `done` (polled every 5 ms) or `secs`; whether `done` came true.
/// A reactor runs once: a test with several phases uses [`run_phases`].
fn run_for(reactor: &Reactor, secs: f64, done: impl Fn() -> bool + 'static) -> bool {
    let done: Rc<dyn Fn() -> bool> = Rc::new(done);
    let d = done.clone();
    run_phases(reactor, secs, vec![Box::new(move || d())]);
    done()
}

/// Runs the reactor through `phases`, each polled every 5 ms until it returns true, then the
/// next; stops after the last, or after `secs` in all.
fn run_phases(reactor: &Reactor, secs: f64, phases: Vec<Box<dyn FnMut() -> bool>>) {
    type Phases = Rc<RefCell<std::collections::VecDeque<Box<dyn FnMut() -> bool>>>>;
    let over = Rc::new(Cell::new(false));
    fn poll(r: Reactor, phases: Phases, over: Rc<Cell<bool>>) {
        if over.get() {
            return;
        }
        loop {
            let done = match phases.borrow_mut().front_mut() {
                Some(phase) => phase(),
                None => {
                    over.set(true);
                    let _ = r.stop();
                    return;
                }
            };
            if !done {
                break;
            }
            phases.borrow_mut().pop_front();
        }
        let r2 = r.clone();
        r.call_later(0.005, move || poll(r2, phases, over));
    }
    let phases: Phases = Rc::new(RefCell::new(phases.into()));
    let (r, o) = (reactor.clone(), over.clone());
    reactor.call_soon(move || poll(r, phases, o));
    let (r, o) = (reactor.clone(), over.clone());
    let timer = reactor.call_later(secs, move || {
        if !o.replace(true) {
            let _ = r.stop();
        }
    });
    reactor.run().unwrap();
    over.set(true);
    let _ = timer.cancel();
}

/// A phase that is over once `secs` have passed since it was first polled.
fn wait(secs: f64) -> Box<dyn FnMut() -> bool> {
    let mut start = None;
    Box::new(move || {
        let s = *start.get_or_insert_with(std::time::Instant::now);
        s.elapsed().as_secs_f64() >= secs
    })
}

fn has(log: &Log, prefix: &str) -> bool {
    log.borrow().iter().any(|e| e.starts_with(prefix))
}

fn count(log: &Log, prefix: &str) -> usize {
    log.borrow()
        .iter()
        .filter(|e| e.starts_with(prefix))
        .count()
}

fn entries(log: &Log) -> Vec<String> {
    log.borrow().clone()
}

/// CPU time of this thread so far, in clock ticks (1/100 s).
fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

type Hook = Box<dyn Fn(&Transport)>;
type DataHook = Box<dyn Fn(&Transport, &[u8])>;

/// What a [`Probe`] does when its connection is lost.
type LostHook = Box<dyn Fn(&Transport, &Failure)>;

/// What a [`Probe`] does at each event (nothing by default).
#[derive(Default)]
struct Hooks {
    made: Option<Hook>,
    handshake: Option<Hook>,
    data: Option<DataHook>,
    read_lost: Option<Hook>,
    lost: Option<LostHook>,
    half_close: bool,
}

/// One side: logs `NAME-made`, `NAME-hs`, `NAME-lost:KIND`, … and keeps what it received.
#[derive(Clone)]
struct Side {
    name: &'static str,
    log: Log,
    got: Rc<RefCell<Vec<u8>>>,
    data_calls: Rc<Cell<usize>>,
    transport: Rc<RefCell<Option<Transport>>>,
    hooks: Rc<Hooks>,
}

impl Side {
    fn new(name: &'static str, log: &Log, hooks: Hooks) -> Rc<Side> {
        Rc::new(Side {
            name,
            log: log.clone(),
            got: Rc::default(),
            data_calls: Rc::default(),
            transport: Rc::default(),
            hooks: Rc::new(hooks),
        })
    }
    fn got_len(&self) -> usize {
        self.got.borrow().len()
    }
}

struct Probe(Side);

impl Protocol for Probe {
    fn connection_made(&mut self, transport: Transport) {
        push(&self.0.log, format!("{}-made", self.0.name));
        *self.0.transport.borrow_mut() = Some(transport.clone());
        if let Some(h) = &self.0.hooks.made {
            h(&transport);
        }
    }
    fn handshake_completed(&mut self) {
        push(&self.0.log, format!("{}-hs", self.0.name));
        let t = self.0.transport.borrow().clone().unwrap();
        if let Some(h) = &self.0.hooks.handshake {
            h(&t);
        }
    }
    fn data_received(&mut self, data: &[u8]) {
        self.0.got.borrow_mut().extend_from_slice(data);
        self.0.data_calls.set(self.0.data_calls.get() + 1);
        let t = self.0.transport.borrow().clone().unwrap();
        if let Some(h) = &self.0.hooks.data {
            h(&t, data);
        }
    }
    fn supports_half_close(&self) -> bool {
        self.0.hooks.half_close
    }
    fn read_connection_lost(&mut self) {
        push(&self.0.log, format!("{}-readlost", self.0.name));
        let t = self.0.transport.borrow().clone().unwrap();
        if let Some(h) = &self.0.hooks.read_lost {
            h(&t);
        }
    }
    fn write_connection_lost(&mut self) {
        push(&self.0.log, format!("{}-writelost", self.0.name));
    }
    fn connection_lost(&mut self, reason: Failure) {
        push(
            &self.0.log,
            format!("{}-lost:{}", self.0.name, kind(&reason)),
        );
        let t = self.0.transport.borrow().clone();
        if let (Some(h), Some(t)) = (&self.0.hooks.lost, t) {
            h(&t, &reason);
        }
    }
}

impl Factory for Side {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Probe((*self).clone())))
    }
}

impl ClientFactory for Side {
    fn client_connection_failed(&self, _c: &Connector, reason: Failure) {
        push(&self.log, format!("{}-failed:{}", self.name, kind(&reason)));
    }
    fn client_connection_lost(&self, _c: &Connector, reason: Failure) {
        push(&self.log, format!("{}-closed:{}", self.name, kind(&reason)));
    }
}

fn short(config: ServerConfig) -> ServerConfig {
    config.with_handshake_timeout(Some(Duration::from_secs(3)))
}

fn short_client(config: ClientConfig) -> ClientConfig {
    config.with_handshake_timeout(Some(Duration::from_secs(3)))
}

/// A TLS server `s` and a TLS client `c` to it, with these hooks.
fn pair(reactor: &Reactor, pki: &Pki, server: Hooks, client: Hooks) -> (Log, Rc<Side>, Rc<Side>) {
    pair_with(reactor, pki.server_config(), pki, server, client)
}

/// As [`pair`], with this server configuration.
fn pair_with(
    reactor: &Reactor,
    config: ServerConfig,
    pki: &Pki,
    server: Hooks,
    client: Hooks,
) -> (Log, Rc<Side>, Rc<Side>) {
    let log = log();
    let s = Side::new("s", &log, server);
    let port = listen_tls(reactor, s.clone(), &short(config));
    let c = Side::new("c", &log, client);
    reactor.connect_tls(
        "127.0.0.1",
        port,
        c.clone(),
        &short_client(pki.client_config()),
    );
    (log, s, c)
}

// ---------------------------------------------------------------------------------------
// 2. Closing around the handshake
// ---------------------------------------------------------------------------------------

reactor_test! {
    // lose_connection() during the handshake with data buffered: reading goes on until the
    // handshake completes, then the data goes out, then close_notify.
    fn lose_connection_during_the_handshake_with_data_pending(reactor: Reactor) {
        let pki = Pki::new();
        let client = Hooks {
            made: Some(Box::new(|t| {
                t.write(b"hello");
                t.lose_connection();
            })),
            ..Default::default()
        };
        let (log, s, _c) = pair(&reactor, &pki, Hooks::default(), client);
        let (l, s2) = (log.clone(), s.clone());
        run_for(&reactor, 6.0, move || has(&l, "c-lost") && has(&l, "s-lost") && s2.got_len() == 5);
        let log = entries(&log);
        assert_eq!(&*s.got.borrow(), b"hello", "{log:?}");
        assert!(log.contains(&"c-lost:done".to_string()), "{log:?}");
        assert_eq!(count_in(&log, "c-lost"), 1, "{log:?}");
    }

    // The same on a server: a banner written and lose_connection() in connection_made (an
    // SMTP server refusing a client with "554") still reaches the client.
    fn a_server_that_writes_a_banner_and_closes_before_the_handshake(reactor: Reactor) {
        let pki = Pki::new();
        let server = Hooks {
            made: Some(Box::new(|t| {
                t.write(b"554 go away\r\n");
                t.lose_connection();
            })),
            ..Default::default()
        };
        let (log, _s, c) = pair(&reactor, &pki, server, Hooks::default());
        let (l, c2) = (log.clone(), c.clone());
        run_for(&reactor, 6.0, move || has(&l, "c-lost") && has(&l, "s-lost") && c2.got_len() > 0);
        let log = entries(&log);
        assert_eq!(&*c.got.borrow(), b"554 go away\r\n", "{log:?}");
        assert!(log.contains(&"s-lost:done".to_string()), "{log:?}");
    }

    // Passes: with nothing written, lose_connection() during the handshake sends a
    // close_notify at once and ends the connection with ConnectionDone, once.
    fn lose_connection_during_the_handshake_with_nothing_written(reactor: Reactor) {
        let pki = Pki::new();
        let client = Hooks {
            made: Some(Box::new(|t| t.lose_connection())),
            ..Default::default()
        };
        let (log, _s, _c) = pair(&reactor, &pki, Hooks::default(), client);
        let l = log.clone();
        run_for(&reactor, 6.0, move || has(&l, "c-closed") && has(&l, "s-lost"));
        let log = entries(&log);
        assert_eq!(count_in(&log, "c-lost"), 1, "{log:?}");
        assert!(log.contains(&"c-lost:done".to_string()), "{log:?}");
        assert_eq!(count_in(&log, "s-lost"), 1, "{log:?}");
        eprintln!("nothing written, lose during handshake: {log:?}");
    }

    // Passes: abort during the handshake ends with ConnectionAborted, once.
    fn abort_during_the_handshake(reactor: Reactor) {
        let pki = Pki::new();
        let client = Hooks {
            made: Some(Box::new(|t| {
                t.write(b"never");
                t.abort_connection();
            })),
            ..Default::default()
        };
        let (log, s, _c) = pair(&reactor, &pki, Hooks::default(), client);
        let l = log.clone();
        run_for(&reactor, 6.0, move || has(&l, "c-closed") && has(&l, "s-lost"));
        let log = entries(&log);
        assert_eq!(count_in(&log, "c-lost"), 1, "{log:?}");
        assert!(log.contains(&"c-lost:aborted".to_string()), "{log:?}");
        assert!(s.got.borrow().is_empty());
        eprintln!("abort during handshake: {log:?}");
    }

    // lose_write_connection() with an empty buffer during the handshake waits for the
    // handshake to complete, then half-closes (no close_notify in its middle).
    fn lose_write_connection_before_the_handshake_with_nothing_written(reactor: Reactor) {
        let pki = Pki::new();
        let client = Hooks {
            made: Some(Box::new(|t| t.lose_write_connection())),
            read_lost: Some(Box::new(|t| t.lose_connection())),
            half_close: true,
            ..Default::default()
        };
        let server = Hooks {
            half_close: true,
            read_lost: Some(Box::new(|t| {
                t.write(b"bye");
                t.lose_connection();
            })),
            ..Default::default()
        };
        let (log, _s, c) = pair(&reactor, &pki, server, client);
        let l = log.clone();
        run_for(&reactor, 6.0, move || has(&l, "c-lost") && has(&l, "s-lost"));
        let log = entries(&log);
        assert!(log.contains(&"c-hs".to_string()), "{log:?}");
        assert!(log.contains(&"s-hs".to_string()), "{log:?}");
        assert!(log.contains(&"s-readlost".to_string()), "{log:?}");
        assert_eq!(&*c.got.borrow(), b"bye", "{log:?}");
    }

    // A client that writes 4 MiB after the handshake and closes: the server's TLS 1.3
    // session tickets sit unread in the client's socket; the close reads them (lingering
    // until the server's close_notify) instead of closing with unread input, which would
    // send a reset and make the server's kernel drop what it had not read yet.
    fn write_then_close_after_the_handshake_delivers_everything(reactor: Reactor) {
        const TOTAL: usize = 4 << 20;
        let pki = Pki::new();
        let client = Hooks {
            handshake: Some(Box::new(|t| {
                t.write(&vec![b'w'; TOTAL]);
                t.lose_connection();
            })),
            ..Default::default()
        };
        let (log, s, _c) = pair(&reactor, &pki, Hooks::default(), client);
        let l = log.clone();
        run_for(&reactor, 10.0, move || has(&l, "c-lost") && has(&l, "s-lost"));
        let log = entries(&log);
        assert_eq!(s.got_len(), TOTAL, "{log:?}");
        assert!(log.contains(&"s-lost:done".to_string()), "{log:?}");
    }

    // Passes: with data pending, lose_write_connection() waits for the handshake, sends the
    // data, then close_notify and FIN.
    fn lose_write_connection_before_the_handshake_with_data_pending(reactor: Reactor) {
        let pki = Pki::new();
        let client = Hooks {
            made: Some(Box::new(|t| {
                t.write(b"ping");
                t.lose_write_connection();
            })),
            read_lost: Some(Box::new(|t| t.lose_connection())),
            half_close: true,
            ..Default::default()
        };
        let server = Hooks {
            half_close: true,
            read_lost: Some(Box::new(|t| {
                t.write(b"END");
                t.lose_connection();
            })),
            data: Some(Box::new(|t, d| t.write(d))),
            ..Default::default()
        };
        let (log, _s, c) = pair(&reactor, &pki, server, client);
        let l = log.clone();
        run_for(&reactor, 6.0, move || has(&l, "c-lost") && has(&l, "s-lost"));
        let log = entries(&log);
        assert_eq!(&*c.got.borrow(), b"pingEND", "{log:?}");
        assert!(log.contains(&"c-writelost".to_string()), "{log:?}");
        assert!(log.contains(&"c-lost:done".to_string()), "{log:?}");
    }
}

fn count_in(log: &[String], prefix: &str) -> usize {
    log.iter().filter(|e| e.starts_with(prefix)).count()
}

// ---------------------------------------------------------------------------------------
// 2. Producers registered before the handshake
// ---------------------------------------------------------------------------------------

const PRODUCED: usize = 1 << 20;
const PIECE: usize = 16 * 1024;

struct Push {
    t: Transport,
    sent: Cell<usize>,
    paused: Cell<bool>,
    pauses: Cell<usize>,
    done: Cell<bool>,
}

impl Push {
    fn pump(&self) {
        while !self.paused.get() && !self.done.get() {
            if self.sent.get() >= PRODUCED {
                self.done.set(true);
                self.t.unregister_producer();
                self.t.lose_connection();
                return;
            }
            self.sent.set(self.sent.get() + PIECE);
            self.t.write(&[b'p'; PIECE]);
        }
    }
}

impl Producer for Push {
    fn resume_producing(&self) {
        self.paused.set(false);
        self.pump();
    }
    fn pause_producing(&self) {
        self.pauses.set(self.pauses.get() + 1);
        self.paused.set(true);
    }
    fn stop_producing(&self) {
        self.done.set(true);
    }
}

struct Pull {
    t: Transport,
    sent: Cell<usize>,
}

impl Producer for Pull {
    fn resume_producing(&self) {
        if self.sent.get() >= PRODUCED {
            self.t.unregister_producer();
            self.t.lose_connection();
            return;
        }
        self.sent.set(self.sent.get() + PIECE);
        self.t.write(&[b'q'; PIECE]);
    }
    fn stop_producing(&self) {}
}

reactor_test! {
    // A push producer registered in connection_made is paused at the high-water mark during
    // the handshake, resumed after it, and everything arrives.
    fn a_push_producer_registered_before_the_handshake(reactor: Reactor) {
        let pki = Pki::new();
        let pauses = Rc::new(Cell::new(0usize));
        let p = pauses.clone();
        let client = Hooks {
            made: Some(Box::new(move |t| {
                let producer = Rc::new(Push { t: t.clone(), sent: Cell::new(0), paused: Cell::new(false), pauses: Cell::new(0), done: Cell::new(false) });
                t.register_producer(producer.clone(), true).unwrap();
                producer.pump();
                p.set(producer.pauses.get());
            })),
            ..Default::default()
        };
        let (log, s, _c) = pair(&reactor, &pki, Hooks::default(), client);
        let (l, s2) = (log.clone(), s.clone());
        run_for(&reactor, 10.0, move || has(&l, "c-lost") && has(&l, "s-lost") && s2.got_len() >= PRODUCED);
        let log = entries(&log);
        assert_eq!(s.got_len(), PRODUCED, "{log:?}");
        assert_eq!(pauses.get(), 1, "paused once at the high-water mark before the handshake");
        assert_eq!(count_in(&log, "c-lost"), 1, "{log:?}");
        assert!(log.contains(&"c-lost:done".to_string()), "{log:?}");
    }

    // Passes: the same without session tickets from the server (nothing unread on the
    // client when it closes): everything arrives. The failure above is the reset.
    fn a_push_producer_registered_before_the_handshake_no_tickets(reactor: Reactor) {
        let pki = Pki::new();
        let client = Hooks {
            made: Some(Box::new(move |t| {
                let producer = Rc::new(Push { t: t.clone(), sent: Cell::new(0), paused: Cell::new(false), pauses: Cell::new(0), done: Cell::new(false) });
                t.register_producer(producer.clone(), true).unwrap();
                producer.pump();
            })),
            ..Default::default()
        };
        let config = ServerConfig::builder(pki.server(&["localhost", "127.0.0.1"])).session_resumption(false).build().unwrap();
        let (log, s, _c) = pair_with(&reactor, config, &pki, Hooks::default(), client);
        let (l, s2) = (log.clone(), s.clone());
        run_for(&reactor, 10.0, move || has(&l, "c-lost") && has(&l, "s-lost") && s2.got_len() >= PRODUCED);
        let log = entries(&log);
        assert_eq!(s.got_len(), PRODUCED, "{log:?}");
        assert!(log.contains(&"s-lost:done".to_string()), "{log:?}");
    }

    // A pull producer registered in connection_made: everything arrives.
    fn a_pull_producer_registered_before_the_handshake(reactor: Reactor) {
        let pki = Pki::new();
        let client = Hooks {
            made: Some(Box::new(|t| {
                t.register_producer(Rc::new(Pull { t: t.clone(), sent: Cell::new(0) }), false).unwrap();
            })),
            ..Default::default()
        };
        let (log, s, _c) = pair(&reactor, &pki, Hooks::default(), client);
        let (l, s2) = (log.clone(), s.clone());
        run_for(&reactor, 10.0, move || has(&l, "c-lost") && has(&l, "s-lost") && s2.got_len() >= PRODUCED);
        let log = entries(&log);
        assert_eq!(s.got_len(), PRODUCED, "{log:?}");
        assert_eq!(count_in(&log, "c-lost"), 1, "{log:?}");
        assert!(log.contains(&"c-lost:done".to_string()), "{log:?}");
    }
}

// ---------------------------------------------------------------------------------------
// 1. Busy loops
// ---------------------------------------------------------------------------------------

reactor_test! {
    // Passes: a client whose server never answers the hello, with 1 MiB written (waiting
    // for the handshake), uses no CPU while it waits.
    fn waiting_for_the_handshake_with_data_buffered_does_not_spin(reactor: Reactor) {
        let log = log();
        let silent = Side::new("s", &log, Hooks::default());
        let port = listen_tcp(&reactor, silent);
        let pki = Pki::new();
        let client = Side::new("c", &log, Hooks {
            made: Some(Box::new(|t| t.write(&vec![b'x'; 1 << 20]))),
            ..Default::default()
        });
        reactor.connect_tls("127.0.0.1", port, client, &pki.client_config());
        let l = log.clone();
        let used = Rc::new(Cell::new(u64::MAX));
        let (u1, u2) = (used.clone(), used.clone());
        run_phases(&reactor, 5.0, vec![
            Box::new(move || has(&l, "s-made") && has(&l, "c-made")),
            wait(0.1),
            Box::new(move || { u1.set(thread_cpu_ticks()); true }),
            wait(0.6),
            Box::new(move || { u2.set(thread_cpu_ticks() - u2.get()); true }),
        ]);
        assert!(used.get() < 20, "{} ticks of CPU in 0.6 s of waiting", used.get());
    }

    // Passes: lose_connection with 8 MiB buffered to a peer that does not read: waits on
    // writability (close_notify after the data), without spinning.
    fn closing_towards_a_peer_that_does_not_read_does_not_spin(reactor: Reactor) {
        let pki = Pki::new();
        let server = Hooks {
            handshake: Some(Box::new(|t| t.pause_producing())),
            ..Default::default()
        };
        let client = Hooks {
            handshake: Some(Box::new(|t| {
                t.write(&vec![b'x'; 8 << 20]);
                t.lose_connection();
            })),
            ..Default::default()
        };
        let (log, _s, _c) = pair(&reactor, &pki, server, client);
        let (l, l2) = (log.clone(), log.clone());
        let used = Rc::new(Cell::new(u64::MAX));
        let (u1, u2) = (used.clone(), used.clone());
        let lost_early = Rc::new(Cell::new(true));
        let le = lost_early.clone();
        run_phases(&reactor, 5.0, vec![
            Box::new(move || has(&l, "s-hs") && has(&l, "c-hs")),
            wait(0.3),
            Box::new(move || { u1.set(thread_cpu_ticks()); true }),
            wait(0.6),
            Box::new(move || {
                u2.set(thread_cpu_ticks() - u2.get());
                le.set(has(&l2, "c-lost"));
                true
            }),
        ]);
        assert!(used.get() < 20, "{} ticks of CPU in 0.6 s of waiting", used.get());
        assert!(!lost_early.get(), "{:?}", entries(&log));
    }
}

// ---------------------------------------------------------------------------------------
// 4. Flow control
// ---------------------------------------------------------------------------------------

reactor_test! {
    // throttle_reading(true), then a write over the high-water mark before the handshake: the
    // throttle does not stop the handshake's reads (it applies once the handshake is done).
    fn throttle_on_and_a_big_write_before_the_handshake_deadlock(reactor: Reactor) {
        let pki = Pki::new();
        let client = Hooks {
            made: Some(Box::new(|t| {
                t.throttle_reading(true);
                t.write(&vec![b'x'; 200 * 1024]);
            })),
            ..Default::default()
        };
        let (log, s, _c) = pair(&reactor, &pki, Hooks::default(), client);
        let s2 = s.clone();
        run_for(&reactor, 6.0, move || s2.got_len() >= 200 * 1024);
        assert_eq!(s.got_len(), 200 * 1024, "{:?}", entries(&log));
    }

    // Passes: an echo server with the throttle on, and a client that stops reading: the
    // server stops reading too, its buffer stays bounded, and everything is echoed once the
    // client reads again.
    fn an_echo_server_with_the_throttle_and_a_client_that_does_not_read(reactor: Reactor) {
        const TOTAL: usize = 32 << 20;
        let pki = Pki::new();
        let peak = Rc::new(Cell::new(0usize));
        let p = peak.clone();
        let server = Hooks {
            made: Some(Box::new(|t| t.throttle_reading(true))),
            data: Some(Box::new(move |t, d| {
                t.write(d);
                p.set(p.get().max(t.buffered()));
            })),
            ..Default::default()
        };
        let client = Hooks {
            handshake: Some(Box::new(|t| {
                t.pause_producing();
                t.write(&vec![b'e'; TOTAL]);
            })),
            ..Default::default()
        };
        let (log, s, c) = pair(&reactor, &pki, server, client);
        let read_while_not_reading = Rc::new(Cell::new(usize::MAX));
        let (rw, s2, c0, c1, c2) = (read_while_not_reading.clone(), s.clone(), c.clone(), c.clone(), c.clone());
        run_phases(&reactor, 15.0, vec![
            Box::new(move || c0.transport.borrow().is_some()),
            wait(1.5),
            Box::new(move || {
                rw.set(s2.got_len());
                c1.transport.borrow().as_ref().unwrap().resume_producing();
                true
            }),
            Box::new(move || c2.got_len() >= TOTAL),
        ]);
        assert!(read_while_not_reading.get() < TOTAL, "the server read everything: no back-pressure");
        assert_eq!(c.got_len(), TOTAL, "{:?}", entries(&log));
        let high = torsion::net::tcp::HIGH_WATER_MARK;
        assert!(peak.get() <= high + 64 * 1024, "server buffered {} (high-water {high})", peak.get());
        let _ = s;
    }

    // Passes: three records that arrive together are decrypted by one recv and delivered in
    // one data_received.
    fn several_records_in_one_read_are_one_data_received(reactor: Reactor) {
        let pki = Pki::new();
        let server = Hooks {
            handshake: Some(Box::new(|t| t.write(&vec![b'r'; 40_000]))),
            ..Default::default()
        };
        let reactor2 = reactor.clone();
        let client = Hooks {
            handshake: Some(Box::new(move |t| {
                t.pause_producing();
                let t = t.clone();
                reactor2.call_later(0.3, move || t.resume_producing());
            })),
            ..Default::default()
        };
        let (log, _s, c) = pair(&reactor, &pki, server, client);
        let c2 = c.clone();
        run_for(&reactor, 5.0, move || c2.got_len() >= 40_000);
        assert_eq!(c.got_len(), 40_000, "{:?}", entries(&log));
        assert_eq!(c.data_calls.get(), 1);
    }

    // Passes: pausing in every data_received and resuming a little later loses nothing.
    fn pausing_in_every_data_received_loses_nothing(reactor: Reactor) {
        const TOTAL: usize = 2 << 20;
        let pki = Pki::new();
        let server = Hooks {
            handshake: Some(Box::new(|t| t.write(&vec![b'z'; TOTAL]))),
            ..Default::default()
        };
        let reactor2 = reactor.clone();
        let client = Hooks {
            data: Some(Box::new(move |t, _| {
                t.pause_producing();
                let t = t.clone();
                reactor2.call_later(0.001, move || t.resume_producing());
            })),
            ..Default::default()
        };
        let (log, _s, c) = pair(&reactor, &pki, server, client);
        let c2 = c.clone();
        run_for(&reactor, 10.0, move || c2.got_len() >= TOTAL);
        assert_eq!(c.got_len(), TOTAL, "{:?}", entries(&log));
        assert!(c.got.borrow().iter().all(|&b| b == b'z'));
    }
}

// ---------------------------------------------------------------------------------------
// 3. STARTTLS
// ---------------------------------------------------------------------------------------

const CLEAR: usize = 4 << 20;

/// A STARTTLS server: takes exactly CLEAR bytes in the clear, then starts TLS with the rest
/// of that read handed over; it reads nothing for its first 200 ms, so that the client's
/// socket is full when it starts TLS.
fn starttls_server(reactor: &Reactor, pki: &Pki, log: &Log) -> (u16, Rc<Cell<usize>>, Rc<Side>) {
    let clear = Rc::new(Cell::new(0usize));
    let tls_side = Side::new("s", log, Hooks::default());
    let (c, config, r, side, l) = (
        clear.clone(),
        pki.server_config(),
        reactor.clone(),
        tls_side.clone(),
        log.clone(),
    );
    let server = Side::new(
        "raw",
        log,
        Hooks {
            made: Some(Box::new(move |t| {
                t.pause_producing();
                let t = t.clone();
                r.call_later(0.2, move || t.resume_producing());
            })),
            data: Some(Box::new(move |t, d| {
                if t.tls_info().is_some() {
                    side.got.borrow_mut().extend_from_slice(d);
                    return;
                }
                let want = CLEAR - c.get();
                if d.len() < want {
                    c.set(c.get() + d.len());
                    if d.iter().any(|&b| b != b'a') {
                        push(&l, "raw-bad-clear");
                    }
                    return;
                }
                c.set(CLEAR);
                let rest = d[want..].to_vec();
                t.start_tls(StartTls::server(&config).with_received(rest))
                    .unwrap();
            })),
            ..Default::default()
        },
    );
    let port = listen_tcp(reactor, server);
    (port, clear, tls_side)
}

reactor_test! {
    // Passes: 4 MiB written in the clear then start_tls at once (nothing sent yet): all of
    // the clear bytes go first, in the clear, then the TLS stream.
    fn starttls_with_the_clear_bytes_not_sent_yet(reactor: Reactor) {
        let pki = Pki::new();
        let log = log();
        let (port, clear, s) = starttls_server(&reactor, &pki, &log);
        let config = pki.client_config();
        let client = Side::new("c", &log, Hooks {
            made: Some(Box::new(move |t| {
                t.write(&vec![b'a'; CLEAR]);
                t.start_tls(StartTls::client(&config, "localhost")).unwrap();
                t.write(b"secret");
            })),
            ..Default::default()
        });
        reactor.connect_tcp("127.0.0.1", port, client);
        let s2 = s.clone();
        run_for(&reactor, 10.0, move || s2.got_len() >= 6);
        assert_eq!(clear.get(), CLEAR, "{:?}", entries(&log));
        assert_eq!(&*s.got.borrow(), b"secret", "{:?}", entries(&log));
        assert!(!has(&log, "raw-bad-clear"));
    }

    // Passes: start_tls while the clear bytes are partly sent and the socket is full.
    fn starttls_with_the_clear_bytes_partly_sent_and_the_socket_full(reactor: Reactor) {
        let pki = Pki::new();
        let log = log();
        let (port, clear, s) = starttls_server(&reactor, &pki, &log);
        let (config, r) = (pki.client_config(), reactor.clone());
        let client = Side::new("c", &log, Hooks {
            made: Some(Box::new(move |t| {
                t.write(&vec![b'a'; CLEAR]);
                let (t, config) = (t.clone(), config.clone());
                r.call_later(0.05, move || {
                    assert!(t.buffered() > 0 && t.buffered() < CLEAR, "buffered {}", t.buffered());
                    t.start_tls(StartTls::client(&config, "localhost")).unwrap();
                    t.write(b"secret");
                });
            })),
            ..Default::default()
        });
        reactor.connect_tcp("127.0.0.1", port, client);
        let s2 = s.clone();
        run_for(&reactor, 10.0, move || s2.got_len() >= 6);
        assert_eq!(clear.get(), CLEAR, "{:?}", entries(&log));
        assert_eq!(&*s.got.borrow(), b"secret", "{:?}", entries(&log));
    }
}

// ---------------------------------------------------------------------------------------
// 5. Error classification
// ---------------------------------------------------------------------------------------

/// A TLS server outside the reactor (rustls on a blocking socket, in a thread): completes
/// the handshake, then writes `raw` bytes straight to the socket and closes it.
fn raw_server(config: &ServerConfig, raw: Vec<u8>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let rustls_config = config.rustls().clone();
    std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut conn = rustls::ServerConnection::new(rustls_config).unwrap();
        while conn.is_handshaking() {
            if conn.complete_io(&mut sock).is_err() {
                return;
            }
        }
        while conn.wants_write() {
            let _ = conn.write_tls(&mut sock);
        }
        std::thread::sleep(Duration::from_millis(100));
        let _ = sock.write_all(&raw);
        std::thread::sleep(Duration::from_millis(100));
        let _ = sock.shutdown(std::net::Shutdown::Both);
        let mut rest = Vec::new();
        let _ = sock.read_to_end(&mut rest);
    });
    port
}

fn raw_client(reactor: &Reactor, pki: &Pki, raw: Vec<u8>) -> Vec<String> {
    let log = log();
    let port = raw_server(&pki.server_config(), raw);
    let client = Side::new("c", &log, Hooks::default());
    reactor.connect_tls("127.0.0.1", port, client, &pki.client_config());
    let l = log.clone();
    run_for(reactor, 6.0, move || {
        has(&l, "c-closed") || has(&l, "c-failed")
    });
    entries(&log)
}

reactor_test! {
    // Passes: a forged application-data record after the handshake is a Protocol error
    // (bad record MAC), not during the handshake.
    fn a_bad_record_after_the_handshake(reactor: Reactor) {
        let pki = Pki::new();
        let mut raw = vec![0x17, 0x03, 0x03, 0x00, 0x20];
        raw.extend_from_slice(&[0x5a; 0x20]);
        let log = raw_client(&reactor, &pki, raw);
        assert!(log.contains(&"c-hs".to_string()), "{log:?}");
        assert!(log.contains(&"c-lost:tls:Protocol:after".to_string()), "{log:?}");
        assert!(log.contains(&"c-closed:tls:Protocol:after".to_string()), "{log:?}");
    }

    // Passes: the TCP connection ends in the middle of a record: Truncated.
    fn end_of_input_in_the_middle_of_a_record(reactor: Reactor) {
        let pki = Pki::new();
        let mut raw = vec![0x17, 0x03, 0x03, 0x01, 0x00];
        raw.extend_from_slice(&[0x11; 10]);
        let log = raw_client(&reactor, &pki, raw);
        assert!(log.contains(&"c-lost:tls:Truncated:after".to_string()), "{log:?}");
    }

    // Passes: a record header with an impossible length after the handshake.
    fn an_oversized_record_after_the_handshake(reactor: Reactor) {
        let pki = Pki::new();
        let raw = vec![0x17, 0x03, 0x03, 0xff, 0xff, 0, 0, 0];
        let log = raw_client(&reactor, &pki, raw);
        assert!(log.iter().any(|e| e.starts_with("c-lost:tls:") && e.ends_with(":after")), "{log:?}");
    }

    // Passes: under TLS 1.3, a server that refuses the client's certificate (from an
    // authority it does not trust) sends a fatal alert after the client's handshake
    // completed: the client gets AlertReceived, after the handshake, through
    // client_connection_lost, as documented.
    fn a_fatal_alert_after_the_handshake(reactor: Reactor) {
        let pki = Pki::new();
        let stranger = Pki::new();
        let server_config = ServerConfig::builder(pki.server(&["localhost"]))
            .client_auth(ClientAuth::Required(pki.roots()))
            .build()
            .unwrap();
        let log = log();
        let s = Side::new("s", &log, Hooks::default());
        let port = listen_tls(&reactor, s, &server_config);
        let client_config = ClientConfig::builder().roots(pki.roots()).identity(stranger.client("mallory")).build().unwrap();
        let c = Side::new("c", &log, Hooks::default());
        reactor.connect_tcp("127.0.0.1", port, torsion::tls::TlsClientFactory::new(&client_config, "localhost", c));
        let l = log.clone();
        run_for(&reactor, 6.0, move || (has(&l, "c-closed") || has(&l, "c-failed")) && has(&l, "s-lost"));
        let log = entries(&log);
        assert!(log.iter().any(|e| e.starts_with("c-lost:tls:AlertReceived")), "{log:?}");
        assert!(log.iter().any(|e| e.starts_with("s-lost:tls:") && e.ends_with(":hs")), "{log:?}");
    }

    // A reset during the handshake (the peer aborts on reading our hello) is a TlsError
    // during the handshake (ClosedDuringHandshake, the OS error as its cause), so it reaches
    // client_connection_failed.
    fn a_reset_during_the_handshake_is_a_failed_handshake(reactor: Reactor) {
        let log = log();
        let resetting = Side::new("s", &log, Hooks {
            data: Some(Box::new(|t, _| t.abort_connection())),
            ..Default::default()
        });
        let port = listen_tcp(&reactor, resetting);
        let pki = Pki::new();
        let client = Side::new("c", &log, Hooks::default());
        reactor.connect_tls("127.0.0.1", port, client, &pki.client_config());
        let l = log.clone();
        run_for(&reactor, 6.0, move || has(&l, "c-closed") || has(&l, "c-failed"));
        let log = entries(&log);
        eprintln!("reset during handshake: {log:?}");
        assert!(log.iter().any(|e| e.starts_with("c-lost:tls:")), "{log:?}");
        assert!(log.iter().any(|e| e.starts_with("c-failed:")), "{log:?}");
    }
}

// ---------------------------------------------------------------------------------------
// 6. Re-entrancy
// ---------------------------------------------------------------------------------------

reactor_test! {
    // Passes: tls_info, a second start_tls and lose_connection from inside
    // handshake_completed and data_received: no panic, no double borrow, one loss.
    fn transport_calls_from_inside_tls_callbacks(reactor: Reactor) {
        let pki = Pki::new();
        let log = log();
        let (l1, l2, l3) = (log.clone(), log.clone(), log.clone());
        let config = pki.server_config();
        let server = Hooks {
            handshake: Some(Box::new(move |t| {
                assert!(t.tls_info().unwrap().handshake_complete);
                let again = t.start_tls(StartTls::server(&config));
                push(&l1, format!("s-again:{}", again.is_err()));
                t.write(b"x");
            })),
            data: Some(Box::new(move |t, _| {
                push(&l2, format!("s-info-in-data:{}", t.tls_info().is_some()));
            })),
            ..Default::default()
        };
        let client = Hooks {
            made: Some(Box::new(|t| t.write(b"y"))),
            data: Some(Box::new(move |t, _| {
                push(&l3, format!("c-info-in-data:{}", t.tls_info().is_some()));
                t.lose_connection();
                t.lose_connection();
            })),
            ..Default::default()
        };
        let s = Side::new("s", &log, server);
        let port = listen_tls(&reactor, s, &pki.server_config());
        let c = Side::new("c", &log, client);
        reactor.connect_tls("127.0.0.1", port, c, &pki.client_config());
        let l = log.clone();
        run_for(&reactor, 6.0, move || has(&l, "c-closed") && has(&l, "s-lost"));
        let log = entries(&log);
        assert!(log.contains(&"s-again:true".to_string()), "{log:?}");
        assert!(log.contains(&"s-info-in-data:true".to_string()), "{log:?}");
        assert!(log.contains(&"c-info-in-data:true".to_string()), "{log:?}");
        assert_eq!(count_in(&log, "c-lost"), 1, "{log:?}");
        assert_eq!(count_in(&log, "s-lost"), 1, "{log:?}");
        assert!(log.contains(&"c-lost:done".to_string()), "{log:?}");
    }

    // Passes: lose_connection from inside handshake_completed.
    fn lose_connection_inside_handshake_completed(reactor: Reactor) {
        let pki = Pki::new();
        let client = Hooks {
            handshake: Some(Box::new(|t| {
                t.write(b"last");
                t.lose_connection();
            })),
            ..Default::default()
        };
        let (log, s, _c) = pair(&reactor, &pki, Hooks::default(), client);
        let l = log.clone();
        run_for(&reactor, 6.0, move || has(&l, "c-closed") && has(&l, "s-lost"));
        let log = entries(&log);
        assert_eq!(&*s.got.borrow(), b"last", "{log:?}");
        assert_eq!(count_in(&log, "c-lost"), 1, "{log:?}");
        assert!(log.contains(&"s-lost:done".to_string()), "{log:?}");
    }

    // tls_info() still answers in connection_lost, so a protocol can log the peer's
    // certificate or the version when the connection ends.
    fn tls_info_is_still_there_in_connection_lost(reactor: Reactor) {
        let pki = Pki::new();
        let log = log();
        let l = log.clone();
        let client = Hooks {
            handshake: Some(Box::new(|t| t.lose_connection())),
            lost: Some(Box::new(move |t, _| push(&l, format!("c-info-in-lost:{}", t.tls_info().is_some())))),
            ..Default::default()
        };
        let s = Side::new("s", &log, Hooks::default());
        let port = listen_tls(&reactor, s, &pki.server_config());
        let c = Side::new("c", &log, client);
        reactor.connect_tls("127.0.0.1", port, c, &pki.client_config());
        let l = log.clone();
        run_for(&reactor, 6.0, move || has(&l, "c-closed"));
        let log = entries(&log);
        assert!(log.contains(&"c-info-in-lost:true".to_string()), "{log:?}");
    }
}

// ---------------------------------------------------------------------------------------
// 7. The client endpoint's Deferred
// ---------------------------------------------------------------------------------------

/// Connects through a TlsClientEndpoint over TCP to `port`, as `name`; logs each firing of
/// the Deferred as `d-ok` or `d-err:KIND`; returns the Deferred's handle.
fn endpoint_connect(
    reactor: &Reactor,
    config: &ClientConfig,
    port: u16,
    name: &str,
    log: &Log,
) -> torsion::defer::DeferredHandle {
    let tcp = TcpClientEndpoint::new(reactor, "127.0.0.1", port);
    let endpoint = TlsClientEndpoint::new(Box::new(tcp), config.clone(), name);
    let side = Side::new("c", log, Hooks::default());
    let d = endpoint.connect(side);
    let handle = d.handle();
    let l = log.clone();
    let outcome = d.add_both(move |r: Result<Transport, Failure>| {
        match r {
            Ok(t) => {
                push(
                    &l,
                    format!(
                        "d-ok:{}",
                        t.tls_info().is_some_and(|i| i.handshake_complete)
                    ),
                );
                t.lose_connection();
            }
            Err(f) => push(&l, format!("d-err:{}", kind(&f))),
        }
        Ok::<(), Failure>(())
    });
    drop(outcome);
    handle
}

/// The certificate each client saw: its index among the names tried, and the DER.
type Seen = Vec<(usize, Vec<u8>)>;

fn capture_logs() -> (
    tracing::subscriber::DefaultGuard,
    std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) {
    #[derive(Clone)]
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::fmt()
        .with_writer(Capture(lines.clone()))
        .with_max_level(tracing::Level::WARN)
        .finish();
    (tracing::subscriber::set_default(subscriber), lines)
}

fn captured(lines: &std::sync::Arc<std::sync::Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&lines.lock().unwrap()).into_owned()
}

reactor_test! {
    // Passes: success, TCP failure, handshake failure, cancel before connecting, cancel
    // during the handshake: the Deferred fires once each time, and nothing is logged as an
    // unhandled error.
    fn the_endpoint_deferred_fires_once_in_every_path(reactor: Reactor) {
        let (_guard, lines) = capture_logs();
        let pki = Pki::new();
        let log = log();
        let echo = Side::new("s", &log, Hooks::default());
        let tls_port = listen_tls(&reactor, echo, &pki.server_config());
        let silent = Side::new("silent", &log, Hooks::default());
        let silent_port = listen_tcp(&reactor, silent);
        let closed_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let config = pki.client_config();
        let logs: Vec<Log> = (0..5).map(|_| common::log()).collect();
        endpoint_connect(&reactor, &config, tls_port, "localhost", &logs[0]);
        endpoint_connect(&reactor, &config, closed_port, "localhost", &logs[1]);
        endpoint_connect(&reactor, &config, tls_port, "elsewhere.test", &logs[2]);
        let h = endpoint_connect(&reactor, &config, tls_port, "localhost", &logs[3]);
        h.cancel();
        let during = endpoint_connect(&reactor, &config, silent_port, "localhost", &logs[4]);
        let (l, logs2, logs3) = (log.clone(), logs.clone(), logs.clone());
        run_phases(&reactor, 8.0, vec![
            Box::new(move || has(&l, "silent-made") && !logs2[0].borrow().is_empty()),
            Box::new(move || { during.cancel(); true }),
            Box::new(move || logs3.iter().all(|l| has(l, "d-"))),
            wait(0.3),
        ]);
        let d: Vec<Vec<String>> = logs.iter().map(|l| l.borrow().iter().filter(|e| e.starts_with("d-")).cloned().collect()).collect();
        assert_eq!(d[0], vec!["d-ok:true"], "{d:?}");
        assert_eq!(d[1].len(), 1, "{d:?}");
        assert!(d[1][0].starts_with("d-err:"), "{d:?}");
        assert_eq!(d[2], vec!["d-err:tls:CertificateNotValidForName:hs"], "{d:?}");
        assert_eq!(d[3], vec!["d-err:cancelled"], "{d:?}");
        assert_eq!(d[4], vec!["d-err:cancelled"], "{d:?}");
        assert!(has(&log, "silent-lost"), "the cancelled handshake's connection was closed: {:?}", entries(&log));
        let text = captured(&lines);
        assert!(!text.to_lowercase().contains("unhandled"), "{text}");
    }

    // A server name that is not a DNS name or an IP address fails the TlsClientEndpoint's
    // Deferred at once.
    fn an_endpoint_whose_server_name_is_invalid_fires_its_deferred(reactor: Reactor) {
        let pki = Pki::new();
        let log = log();
        let echo = Side::new("s", &log, Hooks::default());
        let tls_port = listen_tls(&reactor, echo, &pki.server_config());
        let d = common::log();
        endpoint_connect(&reactor, &pki.client_config(), tls_port, "not a host name", &d);
        let d2 = d.clone();
        run_for(&reactor, 3.0, move || has(&d2, "d-"));
        assert_eq!(count(&d, "d-err:tls:CannotStart"), 1, "{:?} {:?}", entries(&d), entries(&log));
    }
}

// ---------------------------------------------------------------------------------------
// 8. Configuration: SNI
// ---------------------------------------------------------------------------------------

reactor_test! {
    // Passes: `*.wild.test` covers exactly one label; other names get the default.
    fn sni_wildcards_cover_one_label(reactor: Reactor) {
        let pki = Pki::new();
        let wild = pki.server(&["*.wild.test"]);
        let wild_der = wild.chain()[0].clone();
        let default = pki.server(&["default.test"]);
        let default_der = default.chain()[0].clone();
        let server = ServerConfig::builder(default).sni("*.WILD.test", wild).build().unwrap();
        let log = log();
        let s = Side::new("s", &log, Hooks::default());
        let port = listen_tls(&reactor, s, &server);
        let any = ClientConfig::builder().dangerous_accept_any_certificate().build().unwrap();
        let names = ["a.wild.test", "A.Wild.Test", "wild.test", "a.b.wild.test", "x.other.test"];
        let seen: Rc<RefCell<Seen>> = Rc::default();
        for (i, name) in names.iter().enumerate() {
            let seen = seen.clone();
            let c = Side::new("c", &log, Hooks {
                handshake: Some(Box::new(move |t| {
                    let cert = t.tls_info().unwrap().peer_certificates[0].to_vec();
                    seen.borrow_mut().push((i, cert));
                    t.lose_connection();
                })),
                ..Default::default()
            });
            let tls = torsion::tls::TlsClientFactory::new(&any, name, c);
            reactor.connect_tcp("127.0.0.1", port, tls);
        }
        let s2 = seen.clone();
        run_for(&reactor, 6.0, move || s2.borrow().len() == names.len());
        let mut seen = seen.borrow().clone();
        seen.sort();
        let expect = [true, true, false, false, false];
        assert_eq!(seen.len(), names.len(), "{:?}", entries(&log));
        for (i, cert) in seen {
            let want = if expect[i] { wild_der.to_vec() } else { default_der.to_vec() };
            assert_eq!(cert, want, "{}", names[i]);
        }
    }
}
