//! The port forwarder (Twisted's `twisted.protocols.portforward`, test_portforward.py) over
//! real loopback TCP, on every backend (CHECKLIST 67, and flow control through the proxy).

mod common;

use common::listen_local;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use torsion::endpoints::{ClientEndpoint, TcpClientEndpoint};
use torsion::net::Port;
use torsion::net::tcp::HIGH_WATER_MARK;
use torsion::net::{Producer, Transport, TransportOps};
use torsion::protocol::{Factory, Protocol};
use torsion::protocols::policies::{WrappingFactory, WrappingTransport};
use torsion::protocols::portforward::ProxyFactory;
use torsion::task::sleep;
use torsion::testing::{AccumulatingProtocol, AccumulatorState};
use torsion::time::ReactorTime;
use torsion::{Deferred, Failure, Reactor, spawn};

/// The size of one read from a socket (the reactor's read buffer).
const READ_SIZE: usize = 64 * 1024;

/// Connects `protocol` to `port` on loopback.
fn connect<P: Protocol + Default>(reactor: &Reactor, port: u16, protocol: P) {
    let slot = RefCell::new(Some(protocol));
    reactor.connect_tcp(
        "127.0.0.1",
        port,
        Rc::new(move || slot.borrow_mut().take().unwrap_or_default()),
    );
}

/// Waits, on the reactor, until `condition` holds.
async fn until(reactor: &Reactor, condition: impl Fn() -> bool) -> Result<(), Failure> {
    while !condition() {
        sleep(reactor, 0.005).await?;
    }
    Ok(())
}

/// Runs `body` on `reactor` and fails the test if it fails or does not finish.
fn run<F>(reactor: &Reactor, secs: f64, body: F)
where
    F: std::future::Future<Output = Result<(), Failure>> + 'static,
{
    common::safety_stop(reactor, secs);
    // However the body ends (a failed assertion too), the reactor stops.
    let r = reactor.clone();
    let mut out = spawn(body).add_both(move |result| {
        let stop = r.clone();
        r.call_later(0.0, move || {
            let _ = stop.stop();
        });
        Ok::<_, Failure>(result)
    });
    reactor.run().unwrap();
    match out.take_result() {
        Some(result) => result.unwrap().unwrap(),
        None => panic!("the test body did not finish"),
    }
}

/// Connects over TCP with each factory wrapped in a [`WrappingFactory`] it keeps, so the
/// test can look at the proxy's outgoing transports.
#[derive(Debug)]
struct Tracking {
    inner: TcpClientEndpoint,
    factories: RefCell<Vec<Rc<WrappingFactory<dyn Factory>>>>,
}

impl Tracking {
    fn connections(&self) -> Vec<Rc<WrappingTransport>> {
        self.factories
            .borrow()
            .iter()
            .flat_map(|f| f.connections())
            .collect()
    }
}

impl ClientEndpoint for Tracking {
    fn connect(&self, factory: Rc<dyn Factory>) -> Deferred<Transport> {
        let wrapping = WrappingFactory::new(factory);
        self.factories.borrow_mut().push(wrapping.clone());
        self.inner.connect(wrapping)
    }
}

/// A proxy listening on loopback in front of `target`, with both of its sides observable.
struct Proxy {
    port: Port,
    number: u16,
    accepted: Rc<WrappingFactory<ProxyFactory>>,
    outgoing: Rc<Tracking>,
}

impl Proxy {
    fn new(reactor: &Reactor, target: u16) -> Proxy {
        let outgoing = Rc::new(Tracking {
            inner: TcpClientEndpoint::new(reactor, "127.0.0.1", target),
            factories: RefCell::new(Vec::new()),
        });
        let endpoint: Rc<dyn ClientEndpoint> = outgoing.clone();
        let accepted = WrappingFactory::new(ProxyFactory::with_endpoint(endpoint));
        let (port, number) = listen_local(reactor, accepted.clone());
        Proxy {
            port,
            number,
            accepted,
            outgoing,
        }
    }

    fn transports(&self) -> Vec<Rc<WrappingTransport>> {
        let mut all = self.accepted.connections();
        all.extend(self.outgoing.connections());
        all
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Sends `payload` on connect and records what comes back.
#[derive(Default)]
struct Sender {
    payload: Vec<u8>,
    state: Rc<AccumulatorState>,
    inner: AccumulatingProtocol,
}

impl Sender {
    fn new(payload: Vec<u8>) -> Sender {
        let inner = AccumulatingProtocol::new();
        Sender {
            payload,
            state: inner.state(),
            inner,
        }
    }
}

impl Protocol for Sender {
    fn connection_made(&mut self, transport: Transport) {
        transport.write(&self.payload);
        self.inner.connection_made(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.inner.data_received(data);
    }
    fn connection_lost(&mut self, reason: Failure) {
        self.inner.connection_lost(reason);
    }
}

reactor_test! {
    fn the_port_forwarder_delivers_1000_bytes_intact_each_side_the_others_streaming_producer(
        reactor: Reactor
    ) {
        // The server answers with its own 1,000 bytes.
        let server_seen: Rc<RefCell<Option<Rc<AccumulatorState>>>> = Rc::default();
        let keep = server_seen.clone();
        let server = Rc::new(move || {
            let s = Sender::new(pattern(1000, 2));
            *keep.borrow_mut() = Some(s.state.clone());
            s
        });
        let (server_port, target) = listen_local(&reactor, server);
        let proxy = Proxy::new(&reactor, target);

        let client = Sender::new(pattern(1000, 1));
        let client_seen = client.state.clone();
        connect(&reactor, proxy.number, client);

        let r = reactor.clone();
        run(&reactor, 10.0, async move {
            let server = || server_seen.borrow().clone();
            until(&r, || {
                server().is_some_and(|s| s.data().len() >= 1000) && client_seen.data().len() >= 1000
            })
            .await?;
            assert_eq!(server().unwrap().data(), pattern(1000, 1), "client to server");
            assert_eq!(client_seen.data(), pattern(1000, 2), "server to client");

            // Each side of the proxy has the other registered as its streaming producer:
            // pausing the producer of one pauses reading on the other.
            let accepted = proxy.accepted.connections();
            let outgoing = proxy.outgoing.connections();
            assert_eq!((accepted.len(), outgoing.len()), (1, 1));
            for (consumer, producer_side) in [(&accepted[0], &outgoing[0]), (&outgoing[0], &accepted[0])] {
                assert!(consumer.streaming(), "a streaming producer is registered");
                assert!(!producer_side.is_paused());
                consumer.producer().unwrap().pause_producing();
                assert!(producer_side.is_paused());
                consumer.producer().unwrap().resume_producing();
                assert!(!producer_side.is_paused());
            }

            // A close on one side closes the other.
            client_seen.transport().unwrap().lose_connection();
            until(&r, || server().unwrap().closed()).await?;
            until(&r, || proxy.transports().is_empty()).await?;
            drop(proxy.port.stop_listening());
            drop(server_port.stop_listening());
            Ok(())
        });
    }

    fn the_port_forwarder_closes_the_accepted_side_when_it_cannot_connect(reactor: Reactor) {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = closed.local_addr().unwrap().port();
        drop(closed);
        let proxy = Proxy::new(&reactor, target);
        let client = AccumulatingProtocol::new();
        let seen = client.state();
        connect(&reactor, proxy.number, client);
        let r = reactor.clone();
        run(&reactor, 10.0, async move {
            until(&r, || seen.closed()).await?;
            assert!(seen.made());
            until(&r, || proxy.accepted.connection_count() == 0).await?;
            drop(proxy.port.stop_listening());
            Ok(())
        });
    }

    fn a_closed_server_side_closes_the_client_after_flushing(reactor: Reactor) {
        // The server sends 300 kB and hangs up at once: the client still gets all of it.
        let big = pattern(300_000, 9);
        let payload = big.clone();
        let server = Rc::new(move || Hangup(payload.clone()));
        let (server_port, target) = listen_local(&reactor, server);
        let proxy = Proxy::new(&reactor, target);
        let client = AccumulatingProtocol::new();
        let seen = client.state();
        connect(&reactor, proxy.number, client);
        let r = reactor.clone();
        run(&reactor, 10.0, async move {
            until(&r, || seen.closed()).await?;
            assert_eq!(seen.data().len(), big.len());
            assert!(seen.data() == big);
            until(&r, || proxy.transports().is_empty()).await?;
            drop(proxy.port.stop_listening());
            drop(server_port.stop_listening());
            Ok(())
        });
    }

    fn a_fast_writer_and_a_slow_reader_keep_the_proxys_buffers_bounded(reactor: Reactor) {
        const TOTAL: usize = 16 * 1024 * 1024;
        let reader = Rc::new(SlowReaderState::default());
        let state = reader.clone();
        let r = reactor.clone();
        let server = Rc::new(move || SlowReader {
            reactor: r.clone(),
            state: state.clone(),
            transport: None,
        });
        let (server_port, target) = listen_local(&reactor, server);
        let proxy = Rc::new(Proxy::new(&reactor, target));
        connect(&reactor, proxy.number, Writer { left: TOTAL, transport: None, me: None });

        // Sample the proxy's send buffers every millisecond.
        let largest = Rc::new(Cell::new(0usize));
        let samples = Rc::new(Cell::new(0usize));
        let sampling = {
            let (proxy, largest, samples) = (proxy.clone(), largest.clone(), samples.clone());
            torsion::task::LoopingCall::new(reactor.clone(), move || {
                for t in proxy.transports() {
                    largest.set(largest.get().max(t.buffered()));
                }
                samples.set(samples.get() + 1);
                Ok::<(), Failure>(())
            })
        };
        drop(sampling.start(0.001, true));

        let r = reactor.clone();
        run(&reactor, 30.0, async move {
            until(&r, || reader.closed.get()).await?;
            sampling.stop();
            assert_eq!(reader.received.get(), TOTAL);
            assert!(reader.intact.get(), "the bytes arrived in order and unchanged");
            assert!(reader.pauses.get() > 10, "the reader paused itself");
            let bound = HIGH_WATER_MARK + READ_SIZE;
            assert!(
                largest.get() <= bound,
                "the proxy buffered {} bytes, over {bound}",
                largest.get()
            );
            assert!(samples.get() > 10, "{} samples", samples.get());
            until(&r, || proxy.transports().is_empty()).await?;
            drop(proxy.port.stop_listening());
            drop(server_port.stop_listening());
            Ok(())
        });
    }
}

/// Sends its bytes, then hangs up at once.
struct Hangup(Vec<u8>);

impl Protocol for Hangup {
    fn connection_made(&mut self, transport: Transport) {
        transport.write(&self.0);
        transport.lose_connection();
    }
}

/// The byte at offset `i` of the stream the [`Writer`] sends.
fn stream_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// Writes `left` bytes of the stream as a pull producer, 64 KiB each time the transport
/// asks for more, then hangs up.
#[derive(Default)]
struct Writer {
    left: usize,
    transport: Option<Transport>,
    me: Option<Rc<WriterProducer>>,
}

struct WriterProducer {
    transport: Transport,
    sent: Cell<usize>,
    total: usize,
}

impl Producer for WriterProducer {
    fn resume_producing(&self) {
        let sent = self.sent.get();
        if sent == self.total {
            self.transport.unregister_producer();
            self.transport.lose_connection();
            return;
        }
        let n = (self.total - sent).min(64 * 1024);
        let chunk: Vec<u8> = (sent..sent + n).map(stream_byte).collect();
        self.sent.set(sent + n);
        self.transport.write(&chunk);
    }
    fn stop_producing(&self) {}
}

impl Protocol for Writer {
    fn connection_made(&mut self, transport: Transport) {
        let producer = Rc::new(WriterProducer {
            transport: transport.clone(),
            sent: Cell::new(0),
            total: self.left,
        });
        transport
            .register_producer(producer.clone(), false)
            .unwrap();
        self.me = Some(producer);
        self.transport = Some(transport);
    }
    fn connection_lost(&mut self, _reason: Failure) {
        // Break the producer ↔ transport cycle.
        self.me = None;
        self.transport = None;
    }
}

#[derive(Default)]
struct SlowReaderState {
    received: Cell<usize>,
    intact: Cell<bool>,
    pauses: Cell<usize>,
    closed: Cell<bool>,
    next_pause: Cell<usize>,
}

/// Checks the stream as it arrives and pauses itself for 10 ms after every 256 KiB.
struct SlowReader {
    reactor: Reactor,
    state: Rc<SlowReaderState>,
    transport: Option<Transport>,
}

impl Protocol for SlowReader {
    fn connection_made(&mut self, transport: Transport) {
        self.state.intact.set(true);
        self.state.next_pause.set(256 * 1024);
        self.transport = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        let start = self.state.received.get();
        if !data
            .iter()
            .enumerate()
            .all(|(i, b)| *b == stream_byte(start + i))
        {
            self.state.intact.set(false);
        }
        let received = start + data.len();
        self.state.received.set(received);
        if received >= self.state.next_pause.get()
            && let Some(t) = &self.transport
        {
            self.state.next_pause.set(received + 256 * 1024);
            self.state.pauses.set(self.state.pauses.get() + 1);
            t.pause_producing();
            let t = t.clone();
            self.reactor.call_later(0.01, move || t.resume_producing());
        }
    }
    fn connection_lost(&mut self, _reason: Failure) {
        self.state.closed.set(true);
        self.transport = None;
    }
}
