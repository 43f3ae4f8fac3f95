//! The trial-style test helpers: StringTransport (CHECKLIST 68), AccumulatingProtocol, the
//! in-memory pump between two protocols, loopback, and MemoryReactor.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use torsion::Failure;
use torsion::error::{
    ConnectionAborted, ConnectionDone, ConnectionLost, ProducerAlreadyRegistered,
};
use torsion::net::tcp::{ConnectOptions, DEFAULT_BACKLOG, ListenOptions};
use torsion::net::{Address, Producer, Transport, TransportOps};
use torsion::protocol::Protocol;
use torsion::testing::{
    AccumulatingProtocol, MemoryReactor, ProducerState, Pump, StringTransport,
    StringTransportWithDisconnection, loopback, run_test,
};
use torsion::time::{Clock, ReactorTime};

type Log = Rc<RefCell<Vec<String>>>;

fn new_log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

fn entries(log: &Log) -> Vec<String> {
    log.borrow().clone()
}

fn reason_name(reason: &Failure) -> &'static str {
    if reason.check::<ConnectionDone>() {
        "done"
    } else if reason.check::<ConnectionAborted>() {
        "aborted"
    } else if reason.check::<ConnectionLost>() {
        "lost"
    } else {
        "other"
    }
}

type OnData = Box<dyn FnMut(&Transport, &[u8])>;
type OnEvent = Box<dyn FnOnce(&Transport)>;

/// A protocol that logs every event as "<name> <event>", runs a script on data, and checks
/// that no protocol is entered while another one runs.
struct Peer {
    name: &'static str,
    log: Log,
    transport: Rc<RefCell<Option<Transport>>>,
    on_made: Option<OnEvent>,
    on_data: Option<OnData>,
    on_read_lost: Option<OnEvent>,
    half_close: bool,
    running: Rc<Cell<bool>>,
}

impl Peer {
    fn new(name: &'static str, log: &Log, running: &Rc<Cell<bool>>) -> Peer {
        Peer {
            name,
            log: log.clone(),
            transport: Rc::new(RefCell::new(None)),
            on_made: None,
            on_data: None,
            on_read_lost: None,
            half_close: false,
            running: running.clone(),
        }
    }

    fn on_made(mut self, f: impl FnOnce(&Transport) + 'static) -> Peer {
        self.on_made = Some(Box::new(f));
        self
    }

    fn on_data(mut self, f: impl FnMut(&Transport, &[u8]) + 'static) -> Peer {
        self.on_data = Some(Box::new(f));
        self
    }

    fn on_read_lost(mut self, f: impl FnOnce(&Transport) + 'static) -> Peer {
        self.on_read_lost = Some(Box::new(f));
        self
    }

    fn half_close(mut self) -> Peer {
        self.half_close = true;
        self
    }

    /// The transport, once connected.
    fn transport_slot(&self) -> Rc<RefCell<Option<Transport>>> {
        self.transport.clone()
    }

    fn enter(&self, event: String) {
        assert!(
            !self.running.replace(true),
            "{}: entered while a protocol was running ({event})",
            self.name
        );
        self.log.borrow_mut().push(format!("{} {event}", self.name));
    }

    fn leave(&self) {
        self.running.set(false);
    }

    fn transport(&self) -> Transport {
        self.transport.borrow().clone().expect("connected")
    }
}

impl Protocol for Peer {
    fn connection_made(&mut self, transport: Transport) {
        self.enter("made".into());
        *self.transport.borrow_mut() = Some(transport.clone());
        if let Some(f) = self.on_made.take() {
            f(&transport);
        }
        self.leave();
    }

    fn data_received(&mut self, data: &[u8]) {
        self.enter(format!("got {}", String::from_utf8_lossy(data)));
        let transport = self.transport();
        if let Some(f) = self.on_data.as_mut() {
            f(&transport, data);
        }
        self.leave();
    }

    fn connection_lost(&mut self, reason: Failure) {
        self.enter(format!("lost {}", reason_name(&reason)));
        self.leave();
    }

    fn supports_half_close(&self) -> bool {
        self.half_close
    }

    fn read_connection_lost(&mut self) {
        self.enter("read lost".into());
        let transport = self.transport();
        if let Some(f) = self.on_read_lost.take() {
            f(&transport);
        }
        self.leave();
    }

    fn write_connection_lost(&mut self) {
        self.enter("write lost".into());
        self.leave();
    }
}

fn count(log: &Log, entry: &str) -> usize {
    log.borrow().iter().filter(|e| e.as_str() == entry).count()
}

// ===== StringTransport =====

#[test]
fn string_transport_records_writes() {
    let transport = StringTransport::new();
    let t: Transport = transport.clone();
    t.write(b"hello");
    t.write_sequence(&[b", ", b"world"]);
    assert_eq!(transport.value(), b"hello, world");
    transport.clear();
    assert!(transport.value().is_empty());
    t.write(b"again");
    assert_eq!(transport.take_value(), b"again");
    assert!(transport.value().is_empty());

    assert_eq!(
        t.peer(),
        Address::Tcp(SocketAddr::from(([192, 168, 1, 1], 54321)))
    );
    assert_eq!(
        t.host(),
        Address::Tcp(SocketAddr::from(([10, 0, 0, 1], 12345)))
    );
    assert!(t.is_connected());
    assert_eq!(t.buffered(), 0);
}

#[test]
fn string_transport_reports_the_addresses_it_was_given() {
    let host = Address::Unix(Some(PathBuf::from("/tmp/server.sock")));
    let peer = Address::Unix(None);
    let transport = StringTransport::with_addresses(host.clone(), peer.clone());
    assert_eq!(transport.host(), host);
    assert_eq!(transport.peer(), peer);
}

#[test]
fn string_transport_records_lose_and_abort() {
    let transport = StringTransport::new();
    assert!(!transport.disconnecting());
    transport.lose_connection();
    assert!(transport.disconnecting());
    assert!(!transport.aborted());
    assert!(!transport.is_connected());
    // Writes are still recorded, as in Twisted.
    transport.write(b"late");
    assert_eq!(transport.value(), b"late");

    let aborted = StringTransport::new();
    aborted.abort_connection();
    assert!(aborted.aborted());
    assert!(aborted.disconnecting());

    let half = StringTransport::new();
    half.lose_write_connection();
    assert!(half.write_disconnected());
    assert!(!half.disconnecting());
}

#[test]
#[should_panic(expected = "cannot pause or resume producing after lose_connection")]
fn string_transport_pause_after_lose_connection_is_an_error() {
    let transport = StringTransport::new();
    transport.lose_connection();
    transport.pause_producing();
}

#[test]
#[should_panic(expected = "cannot pause or resume producing after lose_connection")]
fn string_transport_resume_after_lose_connection_is_an_error() {
    let transport = StringTransport::new();
    transport.lose_connection();
    transport.resume_producing();
}

#[test]
#[should_panic(expected = "cannot pause or resume a stopped producer")]
fn string_transport_resume_after_stop_producing_is_an_error() {
    let transport = StringTransport::new();
    transport.stop_producing();
    transport.resume_producing();
}

#[test]
fn string_transport_tracks_its_producer_state() {
    let transport = StringTransport::new();
    assert_eq!(transport.producer_state(), ProducerState::Producing);
    transport.pause_producing();
    assert_eq!(transport.producer_state(), ProducerState::Paused);
    transport.resume_producing();
    assert_eq!(transport.producer_state(), ProducerState::Producing);
    transport.stop_producing();
    assert_eq!(transport.producer_state(), ProducerState::Stopped);
    // stop_producing on a StringTransport records, it does not disconnect.
    assert!(!transport.disconnecting());
}

struct CountingProducer {
    name: &'static str,
    log: Log,
}

impl Producer for CountingProducer {
    fn resume_producing(&self) {
        self.log.borrow_mut().push(format!("{} resume", self.name));
    }
    fn pause_producing(&self) {
        self.log.borrow_mut().push(format!("{} pause", self.name));
    }
    fn stop_producing(&self) {
        self.log.borrow_mut().push(format!("{} stop", self.name));
    }
}

#[test]
fn string_transport_keeps_one_producer() {
    let log = new_log();
    let transport = StringTransport::new();
    let first: Rc<dyn Producer> = Rc::new(CountingProducer {
        name: "first",
        log: log.clone(),
    });
    transport.register_producer(first.clone(), true).unwrap();
    assert!(Rc::ptr_eq(&transport.producer().unwrap(), &first));
    assert!(transport.streaming());

    let second = Rc::new(CountingProducer {
        name: "second",
        log: log.clone(),
    });
    let err = transport
        .register_producer(second.clone(), false)
        .unwrap_err();
    assert!(err.check::<ProducerAlreadyRegistered>());

    transport.unregister_producer();
    assert!(transport.producer().is_none());
    assert!(!transport.streaming());
    transport.register_producer(second, false).unwrap();
    assert!(!transport.streaming());
    // The transport never calls its producer.
    assert!(entries(&log).is_empty());
}

#[test]
fn string_transport_records_socket_options() {
    let transport = StringTransport::new();
    transport.set_tcp_nodelay(true).unwrap();
    transport.set_tcp_keepalive(true).unwrap();
    assert!(transport.tcp_nodelay());
    assert!(transport.tcp_keepalive());
}

// ===== StringTransportWithDisconnection =====

#[test]
fn string_transport_with_disconnection_tells_the_protocol_once() {
    let protocol = Rc::new(RefCell::new(AccumulatingProtocol::new()));
    let state = protocol.borrow().state();
    let transport = StringTransportWithDisconnection::new();
    transport.make_connection(protocol.clone());
    assert!(state.made());

    transport.lose_connection();
    assert!(state.closed());
    assert!(state.closed_reason().unwrap().check::<ConnectionDone>());
    assert!(transport.disconnecting());
    assert!(!transport.connected());
    assert!(transport.protocol().is_none());

    let closed_count = Rc::new(Cell::new(0));
    let c = closed_count.clone();
    drop(state.closed_deferred().map(move |()| c.set(c.get() + 1)));
    transport.lose_connection();
    transport.abort_connection();
    assert_eq!(closed_count.get(), 1);
}

#[test]
fn string_transport_with_disconnection_waits_for_the_protocol_to_return() {
    let log = new_log();
    let running = Rc::new(Cell::new(false));
    let peer = Peer::new("server", &log, &running).on_data(|t, data| {
        t.write(data);
        t.lose_connection();
        t.write(b"!");
    });
    let protocol = Rc::new(RefCell::new(peer));
    let transport = StringTransportWithDisconnection::new();
    transport.make_connection(protocol.clone());

    transport.receive(b"bye");
    assert_eq!(
        entries(&log),
        ["server made", "server got bye", "server lost done"]
    );
    assert_eq!(transport.value(), b"bye!");

    // Nothing more reaches the protocol once it is lost.
    transport.receive(b"more");
    assert_eq!(entries(&log).len(), 3);
}

#[test]
fn string_transport_with_disconnection_delivers_a_loss_requested_during_a_direct_call() {
    let log = new_log();
    let running = Rc::new(Cell::new(false));
    let peer = Peer::new("server", &log, &running).on_data(|t, _| t.lose_connection());
    let protocol = Rc::new(RefCell::new(peer));
    let transport = StringTransportWithDisconnection::new();
    transport.make_connection(protocol.clone());

    protocol.borrow_mut().data_received(b"x");
    assert_eq!(entries(&log), ["server made", "server got x"]);
    transport.deliver_pending_loss();
    assert_eq!(
        entries(&log),
        ["server made", "server got x", "server lost done"]
    );
}

// ===== AccumulatingProtocol =====

#[test]
fn accumulating_protocol_records_its_connection() {
    let protocol = AccumulatingProtocol::new();
    let state = protocol.state();
    let made = state.made_deferred();
    let closed = state.closed_deferred();
    let mut protocol: Box<dyn Protocol> = Box::new(protocol);
    assert!(!state.made() && !made.is_fired());

    let transport = StringTransport::new();
    protocol.connection_made(transport.clone());
    assert!(state.made());
    assert!(made.is_fired());
    assert!(state.made_deferred().is_fired());
    state.transport().unwrap().write(b"via the transport");
    assert_eq!(transport.value(), b"via the transport");

    protocol.data_received(b"ab");
    protocol.data_received(b"cd");
    assert_eq!(state.data(), b"abcd");
    assert_eq!(state.take_data(), b"abcd");
    assert!(state.data().is_empty());

    assert!(!closed.is_fired());
    protocol.connection_lost(Failure::new(ConnectionLost));
    assert!(state.closed());
    assert!(closed.is_fired());
    assert!(state.closed_deferred().is_fired());
    assert!(state.closed_reason().unwrap().check::<ConnectionLost>());
}

#[test]
fn accumulating_protocol_half_close_is_opt_in() {
    let plain = AccumulatingProtocol::new();
    assert!(!plain.supports_half_close());
    let mut half = AccumulatingProtocol::new().with_half_close();
    assert!(half.supports_half_close());
    half.read_connection_lost();
    half.write_connection_lost();
    assert!(half.state().read_closed());
    assert!(half.state().write_closed());
}

// ===== Pump =====

#[test]
fn pump_delivers_a_reply_on_the_next_round_without_reentrancy() {
    let log = new_log();
    let running = Rc::new(Cell::new(false));
    let server = Peer::new("server", &log, &running).on_data(|t, data| {
        if data == b"ping" {
            t.write(b"pong");
        }
    });
    let client = Peer::new("client", &log, &running)
        .on_made(|t| t.write(b"ping"))
        .on_data(|t, data| {
            if data == b"pong" {
                t.write(b"thanks");
            }
        });
    let pump = Pump::new(Box::new(server), Box::new(client));
    assert_eq!(entries(&log), ["server made", "client made"]);
    assert_eq!(pump.client_transport().buffered(), 4);

    assert!(pump.pump());
    assert_eq!(entries(&log)[2..], ["server got ping"]);
    assert_eq!(pump.server_transport().buffered(), 4);
    assert!(pump.pump());
    assert_eq!(entries(&log)[3..], ["client got pong"]);
    assert!(pump.pump());
    assert_eq!(entries(&log)[4..], ["server got thanks"]);
    assert!(!pump.pump());
    assert!(!pump.flush());
    assert_eq!(entries(&log).len(), 5);
}

#[test]
fn pump_moves_both_directions_in_one_round() {
    let log = new_log();
    let running = Rc::new(Cell::new(false));
    let server = Peer::new("server", &log, &running).on_made(|t| t.write(b"banner"));
    let client = Peer::new("client", &log, &running).on_made(|t| t.write(b"hello"));
    let pump = Pump::new(Box::new(server), Box::new(client));
    assert!(pump.pump());
    assert_eq!(
        entries(&log)[2..],
        ["server got hello", "client got banner"]
    );
}

#[test]
fn pump_connect_exchanges_greetings() {
    let server = AccumulatingProtocol::new();
    let seen = server.state();
    let log = new_log();
    let running = Rc::new(Cell::new(false));
    let client = Peer::new("client", &log, &running).on_made(|t| t.write(b"hi"));
    let pump = Pump::connect(Box::new(server), Box::new(client));
    assert_eq!(seen.data(), b"hi");
    let server_t = pump.server_transport();
    let client_t = pump.client_transport();
    assert_eq!(server_t.host(), client_t.peer());
    assert_eq!(server_t.peer(), client_t.host());
}

#[test]
fn pump_lose_connection_delivers_pending_bytes_then_one_connection_lost_each() {
    let log = new_log();
    let running = Rc::new(Cell::new(false));
    let server = Peer::new("server", &log, &running);
    let client = Peer::new("client", &log, &running).on_made(|t| {
        t.write(b"last words");
        t.lose_connection();
        t.lose_connection();
    });
    let pump = Pump::new(Box::new(server), Box::new(client));
    pump.flush();
    assert_eq!(
        entries(&log),
        [
            "server made",
            "client made",
            "server got last words",
            "client lost done",
            "server lost done"
        ]
    );
    assert!(pump.is_closed());
    assert!(!pump.server_transport().is_connected());
    pump.client_transport().lose_connection();
    pump.client_transport().abort_connection();
    assert!(!pump.flush());
    assert_eq!(count(&log, "client lost done"), 1);
    assert_eq!(count(&log, "server lost done"), 1);
}

#[test]
fn pump_drops_bytes_for_a_side_that_stopped_reading() {
    let log = new_log();
    let running = Rc::new(Cell::new(false));
    // The server answers, but the client has already hung up.
    let server = Peer::new("server", &log, &running).on_data(|t, _| t.write(b"answer"));
    let client = Peer::new("client", &log, &running).on_made(|t| {
        t.write(b"question");
        t.lose_connection();
    });
    let pump = Pump::new(Box::new(server), Box::new(client));
    pump.flush();
    assert_eq!(
        entries(&log)[2..],
        [
            "server got question",
            "client lost done",
            "server lost done"
        ]
    );
}

#[test]
fn pump_abort_drops_unsent_bytes_and_loses_each_side_once() {
    let log = new_log();
    let running = Rc::new(Cell::new(false));
    let server = Peer::new("server", &log, &running);
    let client = Peer::new("client", &log, &running).on_made(|t| {
        t.write(b"never sent");
        t.abort_connection();
        t.abort_connection();
        t.lose_connection();
        t.write(b"nor this");
    });
    let pump = Pump::new(Box::new(server), Box::new(client));
    pump.flush();
    assert_eq!(
        entries(&log)[2..],
        ["client lost aborted", "server lost lost"]
    );
    assert!(pump.client_transport().aborted());
    assert!(!pump.flush());
}

#[test]
fn pump_abort_from_the_server_side() {
    let server = AccumulatingProtocol::new();
    let server_seen = server.state();
    let client = AccumulatingProtocol::new();
    let client_seen = client.state();
    let pump = Pump::connect(Box::new(server), Box::new(client));
    server_seen.transport().unwrap().abort_connection();
    pump.flush();
    assert!(
        server_seen
            .closed_reason()
            .unwrap()
            .check::<ConnectionAborted>()
    );
    assert!(
        client_seen
            .closed_reason()
            .unwrap()
            .check::<ConnectionLost>()
    );
}

#[test]
fn pump_half_close_with_a_half_closeable_peer() {
    let log = new_log();
    let running = Rc::new(Cell::new(false));
    let request = Rc::new(RefCell::new(Vec::new()));
    let r = request.clone();
    let server = Peer::new("server", &log, &running)
        .half_close()
        .on_data(move |_, data| r.borrow_mut().extend_from_slice(data))
        .on_read_lost(|t| {
            t.write(b"reply");
            t.lose_connection();
        });
    let client = Peer::new("client", &log, &running)
        .half_close()
        .on_made(|t| {
            t.write(b"request");
            t.lose_write_connection();
            t.write(b"dropped: the write side is closing");
        });
    let pump = Pump::new(Box::new(server), Box::new(client));
    pump.flush();
    assert_eq!(
        entries(&log)[2..],
        [
            "server got request",
            "client write lost",
            "server read lost",
            "client got reply",
            "server lost done",
            "client lost done"
        ]
    );
    assert_eq!(*request.borrow(), b"request");
    assert!(pump.client_transport().write_shut());
    assert!(pump.server_transport().read_shut());
}

#[test]
fn pump_half_close_with_a_peer_without_half_close_closes_both_once() {
    let log = new_log();
    let running = Rc::new(Cell::new(false));
    let server = Peer::new("server", &log, &running);
    let client = Peer::new("client", &log, &running)
        .half_close()
        .on_made(|t| {
            t.write(b"request");
            t.lose_write_connection();
        });
    let pump = Pump::new(Box::new(server), Box::new(client));
    pump.flush();
    assert_eq!(
        entries(&log)[2..],
        [
            "server got request",
            "client write lost",
            "server lost done",
            "client lost done"
        ]
    );
    assert!(!pump.flush());
}

#[test]
fn pump_holds_bytes_for_a_paused_side() {
    let server = AccumulatingProtocol::new();
    let seen = server.state();
    let client = AccumulatingProtocol::new();
    let client_seen = client.state();
    let pump = Pump::connect(Box::new(server), Box::new(client));
    let server_t = seen.transport().unwrap();
    let client_t = client_seen.transport().unwrap();

    server_t.pause_producing();
    assert!(pump.server_transport().is_paused());
    client_t.write(b"wait for it");
    client_t.lose_connection();
    assert!(!pump.flush());
    assert!(seen.data().is_empty());
    assert_eq!(client_t.buffered(), 11);
    assert!(!seen.closed(), "the close waits for the bytes");

    server_t.resume_producing();
    assert!(pump.flush());
    assert_eq!(seen.data(), b"wait for it");
    assert!(seen.closed() && client_seen.closed());
}

/// A push producer that writes a chunk each time it is resumed, and logs.
struct PushProducer {
    transport: Transport,
    log: Log,
}

impl Producer for PushProducer {
    fn resume_producing(&self) {
        self.log.borrow_mut().push("resume".into());
    }
    fn pause_producing(&self) {
        self.log.borrow_mut().push("pause".into());
    }
    fn stop_producing(&self) {
        self.log.borrow_mut().push("stop".into());
        let _ = &self.transport;
    }
}

#[test]
fn pump_pauses_a_push_producer_over_the_high_water_mark_and_resumes_it_when_drained() {
    let server = AccumulatingProtocol::new();
    let seen = server.state();
    let client = AccumulatingProtocol::new();
    let client_seen = client.state();
    let pump = Pump::connect(Box::new(server), Box::new(client));
    let client_t = client_seen.transport().unwrap();
    pump.client_transport().set_water_marks(10, 5);
    let log = new_log();
    let producer = Rc::new(PushProducer {
        transport: client_t.clone(),
        log: log.clone(),
    });
    client_t.register_producer(producer, true).unwrap();
    assert!(pump.client_transport().streaming());

    // The server stops reading, so the client's buffer fills up.
    seen.transport().unwrap().pause_producing();
    client_t.write(b"0123456789");
    assert!(entries(&log).is_empty(), "10 bytes is not over the mark");
    client_t.write(b"a");
    assert_eq!(entries(&log), ["pause"]);
    client_t.write(b"more");
    pump.flush();
    assert_eq!(entries(&log), ["pause"], "still held for the paused server");

    seen.transport().unwrap().resume_producing();
    pump.flush();
    assert_eq!(seen.data(), b"0123456789amore");
    assert_eq!(entries(&log), ["pause", "resume"]);

    // Paused again, the producer holds the close up, as on a socket; once it is resumed
    // (unpaused), the drained connection closes and stops it.
    seen.transport().unwrap().pause_producing();
    client_t.write(b"0123456789a");
    assert_eq!(entries(&log), ["pause", "resume", "pause"]);
    client_t.lose_connection();
    pump.flush();
    assert!(
        !seen.closed(),
        "a paused producer is resumed before the close"
    );
    seen.transport().unwrap().resume_producing();
    pump.flush();
    assert!(seen.closed());
    assert_eq!(
        entries(&log),
        ["pause", "resume", "pause", "resume", "stop"]
    );
}

#[test]
fn pump_stops_a_registered_producer_when_the_connection_is_lost() {
    let server = AccumulatingProtocol::new();
    let seen = server.state();
    let client = AccumulatingProtocol::new();
    let client_seen = client.state();
    let pump = Pump::connect(Box::new(server), Box::new(client));
    let client_t = client_seen.transport().unwrap();
    let log = new_log();
    let producer = Rc::new(PushProducer {
        transport: client_t.clone(),
        log: log.clone(),
    });
    client_t.register_producer(producer, true).unwrap();
    seen.transport().unwrap().lose_connection();
    pump.flush();
    assert!(client_seen.closed());
    assert_eq!(entries(&log), ["stop"]);
}

/// A pull producer that sends `chunks` chunks, one per resume, then unregisters and closes.
struct PullProducer {
    transport: Transport,
    chunks: Cell<usize>,
    resumes: Cell<usize>,
}

impl Producer for PullProducer {
    fn resume_producing(&self) {
        self.resumes.set(self.resumes.get() + 1);
        let left = self.chunks.get();
        if left == 0 {
            self.transport.unregister_producer();
            self.transport.lose_connection();
            return;
        }
        self.chunks.set(left - 1);
        self.transport.write(format!("chunk{left};").as_bytes());
    }
    fn stop_producing(&self) {}
}

#[test]
fn pump_resumes_a_pull_producer_each_time_its_buffer_drains() {
    let server = AccumulatingProtocol::new();
    let seen = server.state();
    let client = AccumulatingProtocol::new();
    let client_seen = client.state();
    let pump = Pump::connect(Box::new(server), Box::new(client));
    let client_t = client_seen.transport().unwrap();
    let producer = Rc::new(PullProducer {
        transport: client_t.clone(),
        chunks: Cell::new(3),
        resumes: Cell::new(0),
    });
    client_t.register_producer(producer.clone(), false).unwrap();
    assert_eq!(
        producer.resumes.get(),
        0,
        "resumed by the pump, not at once"
    );

    assert!(pump.pump());
    assert_eq!(seen.data(), b"chunk3;");
    pump.flush();
    assert_eq!(seen.data(), b"chunk3;chunk2;chunk1;");
    assert_eq!(producer.resumes.get(), 4);
    assert!(seen.closed() && client_seen.closed());
}

#[test]
fn pump_does_not_resume_a_pull_producer_while_its_peer_is_paused() {
    let server = AccumulatingProtocol::new();
    let seen = server.state();
    let client = AccumulatingProtocol::new();
    let client_seen = client.state();
    let pump = Pump::connect(Box::new(server), Box::new(client));
    let client_t = client_seen.transport().unwrap();
    seen.transport().unwrap().pause_producing();
    let producer = Rc::new(PullProducer {
        transport: client_t.clone(),
        chunks: Cell::new(3),
        resumes: Cell::new(0),
    });
    client_t.register_producer(producer.clone(), false).unwrap();
    pump.flush();
    pump.flush();
    assert_eq!(producer.resumes.get(), 1);
    assert!(seen.data().is_empty());
}

#[test]
fn pump_register_producer_twice_is_an_error() {
    let client = AccumulatingProtocol::new();
    let client_seen = client.state();
    let _pump = Pump::connect(Box::new(AccumulatingProtocol::new()), Box::new(client));
    let t = client_seen.transport().unwrap();
    let log = new_log();
    let p = Rc::new(PushProducer {
        transport: t.clone(),
        log: log.clone(),
    });
    t.register_producer(p.clone(), true).unwrap();
    let err = t.register_producer(p, true).unwrap_err();
    assert!(err.check::<ProducerAlreadyRegistered>());
}

#[test]
#[should_panic(expected = "still busy")]
fn pump_flush_gives_up_on_protocols_that_talk_forever() {
    let log = new_log();
    let running = Rc::new(Cell::new(false));
    let echo = |t: &Transport, data: &[u8]| t.write(data);
    let server = Peer::new("server", &log, &running).on_data(echo);
    let client = Peer::new("client", &log, &running)
        .on_made(|t| t.write(b"x"))
        .on_data(echo);
    Pump::connect(Box::new(server), Box::new(client));
}

#[test]
fn pump_transport_slot_is_the_pump_transport() {
    let log = new_log();
    let running = Rc::new(Cell::new(false));
    let server = Peer::new("server", &log, &running);
    let slot = server.transport_slot();
    let pump = Pump::new(Box::new(server), Box::new(AccumulatingProtocol::new()));
    let t = slot.borrow().clone().unwrap();
    assert_eq!(t.host(), pump.server_transport().host());
}

// ===== loopback =====

#[test]
fn loopback_on_a_clock_runs_until_both_sides_are_lost() {
    let clock = Clock::new();
    let log = new_log();
    let running = Rc::new(Cell::new(false));
    let server = Peer::new("server", &log, &running).on_data(|t, data| {
        t.write(data);
        t.lose_connection();
    });
    let client = Peer::new("client", &log, &running).on_made(|t| t.write(b"echo me"));
    let done = loopback(&clock, Box::new(server), Box::new(client));
    assert!(!done.is_fired());
    clock.advance(0);
    assert!(done.is_fired());
    assert_eq!(
        entries(&log)[2..],
        [
            "server got echo me",
            "client got echo me",
            "server lost done",
            "client lost done"
        ]
    );
    assert!(clock.delayed_calls().is_empty());
}

#[test]
fn loopback_waits_for_a_timer_without_spinning() {
    let clock = Clock::new();
    let server = AccumulatingProtocol::new();
    let seen = server.state();
    let client = AccumulatingProtocol::new();
    let client_seen = client.state();
    let done = loopback(&clock, Box::new(server), Box::new(client));
    clock.advance(0);
    assert!(clock.delayed_calls().is_empty(), "idle: nothing scheduled");

    let t = client_seen.transport().unwrap();
    clock.call_later(1.0, move || {
        t.write(b"later");
        t.lose_connection();
    });
    clock.advance(0.5);
    assert!(!done.is_fired());
    clock.advance(0.5);
    assert!(done.is_fired());
    assert_eq!(seen.data(), b"later");
}

#[test]
fn loopback_on_a_reactor_leaves_it_clean() {
    run_test(Duration::from_secs(5), |reactor| async move {
        let server = AccumulatingProtocol::new();
        let seen = server.state();
        let log = new_log();
        let running = Rc::new(Cell::new(false));
        let client = Peer::new("client", &log, &running).on_made(|t| {
            t.write(b"over the loop");
            t.lose_connection();
        });
        loopback(&reactor, Box::new(server), Box::new(client)).await?;
        assert_eq!(seen.data(), b"over the loop");
        Ok(())
    });
}

// ===== MemoryReactor =====

#[test]
fn memory_reactor_records_tcp_listens() {
    let reactor = MemoryReactor::new();
    let factory = Rc::new(AccumulatingProtocol::new);
    let port = reactor.listen_tcp(8080, factory.clone()).unwrap();
    let options = ListenOptions {
        backlog: 5,
        interface: IpAddr::from([127, 0, 0, 1]),
        reuse_port: true,
    };
    reactor
        .listen_tcp_with(0, factory.clone(), options)
        .unwrap();

    let servers = reactor.tcp_servers();
    assert_eq!(servers.len(), 2);
    assert_eq!(servers[0].port, 8080);
    assert_eq!(servers[0].backlog, DEFAULT_BACKLOG);
    assert_eq!(servers[0].interface, IpAddr::from([0, 0, 0, 0]));
    assert!(!servers[0].reuse_port);
    let as_dyn: Rc<dyn torsion::protocol::Factory> = factory;
    assert!(Rc::ptr_eq(&servers[0].factory, &as_dyn));
    assert_eq!((servers[1].port, servers[1].backlog), (0, 5));
    assert_eq!(servers[1].interface, IpAddr::from([127, 0, 0, 1]));
    assert!(servers[1].reuse_port);

    assert_eq!(port.host(), Address::Tcp("0.0.0.0:8080".parse().unwrap()));
    assert!(!port.stopped());
    assert!(port.stop_listening().is_fired());
    assert!(servers[0].listening_port.stopped());

    // The recorded factory builds protocols.
    let protocol = servers[0]
        .factory
        .clone()
        .build_protocol(&Address::Tcp("192.168.1.1:54321".parse().unwrap()));
    assert!(protocol.is_some());
}

#[test]
fn memory_reactor_records_tcp_connects_and_connector_calls() {
    let reactor = MemoryReactor::new();
    let connector = reactor.connect_tcp("example.com", 443, Rc::new(AccumulatingProtocol::new));
    let options = ConnectOptions {
        timeout: Some(Duration::from_secs(3)),
        bind_address: Some("127.0.0.1:4000".parse().unwrap()),
    };
    reactor.connect_tcp_with("10.0.0.2", 25, Rc::new(AccumulatingProtocol::new), options);

    let clients = reactor.tcp_clients();
    assert_eq!(clients.len(), 2);
    assert_eq!(
        (clients[0].host.as_str(), clients[0].port),
        ("example.com", 443)
    );
    assert_eq!(clients[0].timeout, Some(Duration::from_secs(30)));
    assert_eq!(clients[0].bind_address, None);
    assert_eq!(clients[1].timeout, Some(Duration::from_secs(3)));
    assert_eq!(
        clients[1].bind_address,
        Some("127.0.0.1:4000".parse().unwrap())
    );

    assert_eq!(connector.destination(), "example.com:443");
    connector.stop_connecting();
    connector.connect();
    connector.disconnect();
    let recorded = &clients[0].connector;
    assert!(recorded.stopped_connecting());
    assert!(recorded.disconnected());
    assert_eq!(recorded.connect_calls(), 1);
    assert_eq!(reactor.connectors().len(), 2);
    assert!(!reactor.connectors()[1].disconnected());
}

#[test]
fn memory_reactor_records_unix_and_udp() {
    let reactor = MemoryReactor::new();
    reactor
        .listen_unix("/var/run/finger", Rc::new(AccumulatingProtocol::new))
        .unwrap();
    reactor
        .listen_unix_with("/tmp/s", Rc::new(AccumulatingProtocol::new), 7, 0o660, true)
        .unwrap();
    let connector = reactor.connect_unix("/var/run/finger", Rc::new(AccumulatingProtocol::new));
    reactor.connect_unix_with("/tmp/s", Rc::new(AccumulatingProtocol::new), None, true);

    let servers = reactor.unix_servers();
    assert_eq!(servers[0].path, PathBuf::from("/var/run/finger"));
    assert_eq!(
        (servers[0].backlog, servers[0].mode, servers[0].want_pid),
        (DEFAULT_BACKLOG, 0o666, false)
    );
    assert_eq!(
        (servers[1].backlog, servers[1].mode, servers[1].want_pid),
        (7, 0o660, true)
    );
    assert_eq!(
        servers[0].listening_port.host(),
        Address::Unix(Some(PathBuf::from("/var/run/finger")))
    );
    let clients = reactor.unix_clients();
    assert_eq!(clients[0].timeout, Some(Duration::from_secs(30)));
    assert!(!clients[0].check_pid);
    assert_eq!((clients[1].timeout, clients[1].check_pid), (None, true));
    assert_eq!(connector.destination(), "/var/run/finger");

    struct Dns;
    let port = reactor.listen_udp(53, Rc::new(Dns)).unwrap();
    reactor
        .listen_udp_with(
            5353,
            "any protocol value",
            IpAddr::from([127, 0, 0, 1]),
            512,
        )
        .unwrap();
    let udp = reactor.udp_servers();
    assert_eq!((udp[0].port, udp[0].max_packet_size), (53, 8192));
    assert!(udp[0].protocol::<Rc<Dns>>().is_some());
    assert_eq!(udp[1].protocol::<&str>(), Some(&"any protocol value"));
    assert_eq!(udp[1].interface, IpAddr::from([127, 0, 0, 1]));
    assert_eq!(port.host(), Address::Udp("0.0.0.0:53".parse().unwrap()));
}

#[test]
fn memory_reactor_keeps_time_with_a_clock() {
    let reactor = MemoryReactor::new();
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    reactor.call_later(2.0, move || f.set(true));
    assert_eq!(reactor.delayed_calls().len(), 1);
    reactor.advance(1.5);
    assert!(!fired.get());
    let clone = reactor.clone();
    clone.clock().advance(0.5);
    assert!(fired.get());
    assert_eq!(reactor.seconds(), 2.0);
}
