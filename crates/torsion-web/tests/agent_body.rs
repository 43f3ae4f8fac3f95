//! Response and request bodies over loopback (Twisted's `test_newclient` body tests and
//! `test_agent.FileBodyProducerTests`): a large body streamed to a receiver that pauses
//! and resumes, a response dropped unread, a body given its receiver late, a body stopped
//! by its receiver, a body cut short, the whole-request timeout over the body, and
//! request bodies from producers, chunked and with a length.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use http::{HeaderMap, Method};
use torsion::net::{Producer, Transport};
use torsion::protocol::Protocol;
use torsion::time::ReactorTime;
use torsion::{Deferred, Failure, Reactor, Resolver};
use torsion_web::agent::{
    Agent, AgentError, Body, BodyControl, BodyProducer, BodyReceiver, BodyWriter, FileBodyProducer,
    HttpClient, Response,
};
use torsion_web::{Node, Render, Request, Resource};

mod common;
use common::agent::{ClientPort, Echo, local, run, serve, sleep};

/// The byte at `i` of the big body.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

/// `?n=` bytes of `pattern`, written by a pull producer 64 KiB at a time; how many it
/// has written so far.
#[derive(Default)]
struct Big {
    written: Rc<Cell<u64>>,
}

struct BigProducer {
    request: Rc<Request>,
    total: u64,
    written: Rc<Cell<u64>>,
}

impl Producer for BigProducer {
    fn resume_producing(&self) {
        let at = self.written.get();
        if at >= self.total {
            self.request.unregister_producer();
            let _ = self.request.finish();
            return;
        }
        let n = (self.total - at).min(64 * 1024);
        let chunk: Vec<u8> = (at..at + n).map(pattern).collect();
        self.written.set(at + n);
        let _ = self.request.write(&chunk);
    }

    fn stop_producing(&self) {}
}

impl Resource for Big {
    fn is_leaf(&self) -> bool {
        true
    }
    fn render_get(&self, request: &Rc<Request>) -> Render {
        let total: u64 = request.arg("n").and_then(|n| n.parse().ok()).unwrap_or(0);
        self.written.set(0);
        if request.arg("chunked").is_none() {
            request.set_header("content-length", &total.to_string());
        }
        let producer = Rc::new(BigProducer {
            request: request.clone(),
            total,
            written: self.written.clone(),
        });
        let _ = request.register_producer(producer, false);
        Render::Later
    }
}

/// Checks the body against the pattern as it comes, pausing for a while after every
/// 16th piece; notes the largest piece, and whether anything came while paused.
struct Slow {
    reactor: Reactor,
    control: Option<BodyControl>,
    paused: Rc<Cell<bool>>,
    received: u64,
    pieces: u64,
    largest: usize,
    while_paused: bool,
    pause_for: Duration,
    /// The first pause is long: time for the server to fill every buffer.
    first_pause: Duration,
    done: Option<Resolver<(u64, usize, bool)>>,
}

impl BodyReceiver for Slow {
    fn body_started(&mut self, control: BodyControl) {
        self.control = Some(control);
    }

    fn data_received(&mut self, data: &[u8]) {
        if self.paused.get() {
            self.while_paused = true;
        }
        for (k, b) in data.iter().enumerate() {
            assert_eq!(
                *b,
                pattern(self.received + k as u64),
                "byte {}",
                self.received
            );
        }
        self.received += data.len() as u64;
        self.largest = self.largest.max(data.len());
        self.pieces += 1;
        let Some(control) = self.control.clone() else {
            return;
        };
        if self.pieces % 16 != 1 {
            // A pause every 16 pieces: each costs a turn of the loop's timers.
            return;
        }
        control.pause();
        self.paused.set(true);
        let paused = self.paused.clone();
        let wait = if self.pieces == 1 {
            self.first_pause
        } else {
            self.pause_for
        };
        self.reactor.call_later(wait, move || {
            paused.set(false);
            control.resume();
        });
    }

    fn body_finished(&mut self, result: Result<(), Failure>) {
        if let Some(done) = self.done.take() {
            let _ = match result {
                Ok(()) => done.try_callback((self.received, self.largest, self.while_paused)),
                Err(f) => done.try_errback(f),
            };
        }
    }
}

#[test]
fn a_large_body_streams_to_a_receiver_that_pauses_with_bounded_buffering() {
    run(|reactor| async move {
        let big = Rc::new(Big::default());
        let written = big.written.clone();
        let port = serve(&reactor, big);
        const TOTAL: u64 = 24 << 20;
        let agent = Agent::new(&reactor);
        for chunked in [false, true] {
            let url = format!(
                "http://127.0.0.1:{port}/?n={TOTAL}{}",
                if chunked { "&chunked=1" } else { "" }
            );
            let response = agent
                .request(Method::GET, &url, HeaderMap::new(), Body::Empty)
                .await?;
            assert_eq!(
                response.header("transfer-encoding").is_some(),
                chunked,
                "{:?}",
                response.headers
            );
            let (resolver, done) = Deferred::new();
            response.deliver_body(Slow {
                reactor: reactor.clone(),
                control: None,
                paused: Rc::default(),
                received: 0,
                pieces: 0,
                largest: 0,
                while_paused: false,
                pause_for: Duration::from_micros(200),
                first_pause: Duration::from_millis(500),
                done: Some(resolver),
            });
            // While the receiver sits on its first piece, the server is held back: its
            // writes stop once the socket buffers are full, well short of the body.
            sleep(&reactor, Duration::from_millis(400)).await;
            let sent_while_paused = written.get();
            assert!(
                sent_while_paused < TOTAL / 2,
                "the server wrote {sent_while_paused} bytes while the client was paused"
            );
            let (received, largest, while_paused) = done.await?;
            assert_eq!(received, TOTAL);
            assert!(!while_paused, "data came while paused");
            assert!(largest <= 1 << 20, "a piece of {largest} bytes");
        }
        assert_eq!(agent.pool().idle_connections(), 1);
        agent.pool().close_cached_connections().await?;
        Ok(())
    });
}

#[test]
fn a_response_dropped_with_its_body_unread_closes_its_connection() {
    run(|reactor| async move {
        let root = Node::new();
        let ports = Rc::new(ClientPort::default());
        root.put_child("port", ports.clone());
        root.put_child("big", Rc::new(Big::default()));
        let port = serve(&reactor, Rc::new(root));
        let agent = Agent::new(&reactor).timeout(Some(Duration::from_secs(2)));
        let url = format!("http://127.0.0.1:{port}/port");
        let response = agent
            .request(Method::GET, &url, HeaderMap::new(), Body::Empty)
            .await?;
        drop(response);
        assert_eq!(agent.pool().idle_connections(), 0, "not kept");
        // A large one, partly arrived: nothing hangs, and nothing is kept either.
        let big = format!("http://127.0.0.1:{port}/big?n={}", 8 << 20);
        let response = agent
            .request(Method::GET, &big, HeaderMap::new(), Body::Empty)
            .await?;
        sleep(&reactor, Duration::from_millis(50)).await;
        drop(response);
        let (_, first) = agent
            .fetch(Method::GET, &url, HeaderMap::new(), Body::Empty)
            .await?;
        let (_, second) = agent
            .fetch(Method::GET, &url, HeaderMap::new(), Body::Empty)
            .await?;
        assert_eq!(first, second, "a new connection, then kept");
        assert_eq!(ports.requests.get(), 3);
        agent.pool().close_cached_connections().await?;
        Ok(())
    });
}

#[test]
fn a_body_read_late_was_held_by_the_paused_connection() {
    run(|reactor| async move {
        let port = serve(&reactor, Rc::new(Big::default()));
        let agent = Agent::new(&reactor);
        let url = format!("http://127.0.0.1:{port}/?n={}", 3 << 20);
        let response = agent
            .request(Method::GET, &url, HeaderMap::new(), Body::Empty)
            .await?;
        sleep(&reactor, Duration::from_millis(300)).await;
        let body = response.collect_body().await?;
        assert_eq!(body.len(), 3 << 20);
        assert!(
            body.iter()
                .enumerate()
                .all(|(i, b)| *b == pattern(i as u64))
        );
        agent.pool().close_cached_connections().await?;
        Ok(())
    });
}

/// Stops the body after its first piece.
struct StopAfterOne {
    control: Option<BodyControl>,
    pieces: usize,
    done: Option<Resolver<usize>>,
}

impl BodyReceiver for StopAfterOne {
    fn body_started(&mut self, control: BodyControl) {
        self.control = Some(control);
    }
    fn data_received(&mut self, _data: &[u8]) {
        self.pieces += 1;
        if let Some(control) = &self.control {
            control.stop();
        }
    }
    fn body_finished(&mut self, result: Result<(), Failure>) {
        if let Some(done) = self.done.take() {
            let _ = match result {
                Ok(()) => done.try_callback(self.pieces),
                Err(f) => done.try_errback(f),
            };
        }
    }
}

#[test]
fn a_receiver_can_stop_the_body() {
    run(|reactor| async move {
        let port = serve(&reactor, Rc::new(Big::default()));
        let agent = Agent::new(&reactor);
        let url = format!("http://127.0.0.1:{port}/?n={}", 8 << 20);
        let response = agent
            .request(Method::GET, &url, HeaderMap::new(), Body::Empty)
            .await?;
        let (resolver, done) = Deferred::new();
        response.deliver_body(StopAfterOne {
            control: None,
            pieces: 0,
            done: Some(resolver),
        });
        let failure = done.await.unwrap_err();
        assert_eq!(
            failure.downcast_ref::<AgentError>(),
            Some(&AgentError::BodyStopped)
        );
        assert_eq!(agent.pool().idle_connections(), 0);
        Ok(())
    });
}

/// Answers its head with a length, part of the body, and closes.
struct Truncating;

impl Protocol for Truncating {
    fn connection_made(&mut self, transport: Transport) {
        transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf!");
        transport.lose_connection();
    }
}

#[test]
fn a_body_cut_short_by_the_close_ends_with_incomplete() {
    run(|reactor| async move {
        let port = reactor
            .listen_tcp_with(0, Rc::new(|| Truncating), local())
            .unwrap()
            .host()
            .port()
            .unwrap();
        let agent = Agent::new(&reactor);
        let url = format!("http://127.0.0.1:{port}/");
        let response = agent
            .request(Method::GET, &url, HeaderMap::new(), Body::Empty)
            .await?;
        assert_eq!(response.status, 200);
        let failure = response.collect_body().await.unwrap_err();
        assert_eq!(
            failure.downcast_ref::<AgentError>(),
            Some(&AgentError::Incomplete)
        );
        Ok(())
    });
}

/// Writes its head and a part, then nothing more.
struct Stalls;

impl Resource for Stalls {
    fn is_leaf(&self) -> bool {
        true
    }
    fn render_get(&self, request: &Rc<Request>) -> Render {
        let _ = request.write(b"a start");
        Render::Later
    }
}

#[test]
fn the_whole_request_timeout_covers_the_body() {
    run(|reactor| async move {
        let port = serve(&reactor, Rc::new(Stalls));
        let limit = Duration::from_millis(300);
        let agent = Agent::new(&reactor).timeout(Some(limit));
        let url = format!("http://127.0.0.1:{port}/");
        let started = reactor.seconds();
        let response = agent
            .request(Method::GET, &url, HeaderMap::new(), Body::Empty)
            .await?;
        let failure = response.collect_body().await.unwrap_err();
        assert_eq!(
            failure.downcast_ref::<AgentError>(),
            Some(&AgentError::Timeout(limit))
        );
        assert!(reactor.seconds() - started >= 0.29);
        // A body never given its receiver times out as well, and a receiver given later
        // hears of it.
        let response = agent
            .request(Method::GET, &url, HeaderMap::new(), Body::Empty)
            .await?;
        sleep(&reactor, Duration::from_millis(400)).await;
        let failure = response.collect_body().await.unwrap_err();
        assert_eq!(
            failure.downcast_ref::<AgentError>(),
            Some(&AgentError::Timeout(limit))
        );
        // Without a timeout, nothing is left scheduled for the request.
        let untimed = Agent::new(&reactor).timeout(None);
        let response = untimed
            .request(Method::GET, &url, HeaderMap::new(), Body::Empty)
            .await?;
        drop(response);
        assert_eq!(agent.pool().idle_connections(), 0);
        Ok(())
    });
}

/// Writes `parts`, one a turn of the loop, announcing `length`.
struct Parts {
    reactor: Reactor,
    parts: RefCell<Vec<Vec<u8>>>,
    length: Option<u64>,
}

impl Producer for Parts {
    fn resume_producing(&self) {}
    fn stop_producing(&self) {}
}

impl BodyProducer for Parts {
    fn length(&self) -> Option<u64> {
        self.length
    }

    fn start_producing(&self, writer: BodyWriter) -> Deferred<()> {
        let (resolver, d) = Deferred::new();
        let parts = std::mem::take(&mut *self.parts.borrow_mut());
        fn next(reactor: Reactor, mut parts: Vec<Vec<u8>>, writer: BodyWriter, done: Resolver<()>) {
            if parts.is_empty() {
                let _ = done.try_callback(());
                return;
            }
            writer.write(&parts.remove(0));
            let r = reactor.clone();
            reactor.call_later(0.005, move || next(r, parts, writer, done));
        }
        next(self.reactor.clone(), parts, writer, resolver);
        d
    }
}

#[test]
fn producer_bodies_go_chunked_without_a_length_and_with_content_length_with_one() {
    run(|reactor| async move {
        let root = Node::new();
        root.put_child("echo", Rc::new(Echo));
        let port = serve(&reactor, Rc::new(root));
        let agent = Agent::new(&reactor);
        let url = format!("http://127.0.0.1:{port}/echo");
        let data: Vec<u8> = (0..300_000u64).map(pattern).collect();
        for length in [None, Some(data.len() as u64)] {
            let producer =
                FileBodyProducer::new(&reactor, std::io::Cursor::new(data.clone()), length);
            let (response, echoed) = agent
                .fetch(
                    Method::POST,
                    &url,
                    HeaderMap::new(),
                    Body::producer(producer),
                )
                .await?;
            let framing = if length.is_some() {
                "length"
            } else {
                "chunked"
            };
            assert_eq!(response.header("x-framing"), Some(framing));
            assert!(echoed == data, "{framing}: {} bytes echoed", echoed.len());
        }
        // A producer writing in parts, later.
        let parts = Parts {
            reactor: reactor.clone(),
            parts: RefCell::new(vec![
                b"one, ".to_vec(),
                b"two, ".to_vec(),
                b"three".to_vec(),
            ]),
            length: None,
        };
        let (_, echoed) = agent
            .fetch(Method::PUT, &url, HeaderMap::new(), Body::producer(parts))
            .await?;
        assert_eq!(echoed, b"one, two, three");
        // A file, its length from its metadata.
        let path = std::env::temp_dir().join(format!("torsion-agent-body-{}", std::process::id()));
        std::fs::write(&path, b"from a file").unwrap();
        let producer =
            FileBodyProducer::from_file(&reactor, std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(producer.length(), Some(11));
        let (response, echoed) = agent
            .fetch(
                Method::POST,
                &url,
                HeaderMap::new(),
                Body::producer(producer),
            )
            .await?;
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            (response.header("x-framing"), &echoed[..]),
            (Some("length"), &b"from a file"[..])
        );
        agent.pool().close_cached_connections().await?;
        Ok(())
    });
}

#[test]
fn a_producer_that_breaks_its_announced_length_fails_the_request() {
    run(|reactor| async move {
        let root = Node::new();
        root.put_child("echo", Rc::new(Echo));
        let port = serve(&reactor, Rc::new(root));
        let agent = Agent::new(&reactor);
        let url = format!("http://127.0.0.1:{port}/echo");
        for (written, declared) in [(5u64, 10u64), (12, 10)] {
            let parts = Parts {
                reactor: reactor.clone(),
                parts: RefCell::new(vec![vec![b'x'; written as usize]]),
                length: Some(declared),
            };
            let failure = agent
                .request(Method::POST, &url, HeaderMap::new(), Body::producer(parts))
                .await
                .unwrap_err();
            assert_eq!(
                failure.downcast_ref::<AgentError>(),
                Some(&AgentError::WrongBodyLength { declared, written }),
                "{failure}"
            );
        }
        // A producer that fails fails the request with its failure.
        struct Broken;
        impl Producer for Broken {
            fn resume_producing(&self) {}
            fn stop_producing(&self) {}
        }
        impl BodyProducer for Broken {
            fn length(&self) -> Option<u64> {
                None
            }
            fn start_producing(&self, _writer: BodyWriter) -> Deferred<()> {
                Deferred::fail(Failure::msg("the disk is on fire"))
            }
        }
        let failure = agent
            .request(Method::POST, &url, HeaderMap::new(), Body::producer(Broken))
            .await
            .unwrap_err();
        assert!(failure.to_string().contains("on fire"), "{failure}");
        assert_eq!(agent.pool().idle_connections(), 0);
        Ok(())
    });
}

#[test]
fn responses_are_debug_and_list_their_redirect_chain() {
    run(|reactor| async move {
        let root = Node::new();
        root.put_child("port", Rc::new(ClientPort::default()));
        let port = serve(&reactor, Rc::new(root));
        let agent = Agent::new(&reactor);
        let url = format!("http://127.0.0.1:{port}/port");
        let response: Response = agent
            .request(Method::GET, &url, HeaderMap::new(), Body::Empty)
            .await?;
        assert!(format!("{response:?}").contains("body_unread: true"));
        assert_eq!(response.redirect_chain(), vec![url.as_str()]);
        let _ = response.collect_body().await?;
        agent.pool().close_cached_connections().await?;
        Ok(())
    });
}

/// Pauses after its first piece, for good.
struct PauseForGood {
    control: Option<BodyControl>,
    body: Vec<u8>,
    done: Option<Resolver<Vec<u8>>>,
}

impl BodyReceiver for PauseForGood {
    fn body_started(&mut self, control: BodyControl) {
        self.control = Some(control);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.body.extend_from_slice(data);
        if let Some(control) = &self.control {
            control.pause();
        }
    }
    fn body_finished(&mut self, result: Result<(), Failure>) {
        if let Some(done) = self.done.take() {
            let _ = match result {
                Ok(()) => done.try_callback(std::mem::take(&mut self.body)),
                Err(f) => done.try_errback(f),
            };
        }
    }
}

#[test]
fn a_body_complete_in_its_first_piece_ends_though_its_receiver_paused() {
    run(|reactor| async move {
        let root = Node::new();
        root.put_child("port", Rc::new(ClientPort::default()));
        let port = serve(&reactor, Rc::new(root));
        let agent = Agent::new(&reactor);
        let url = format!("http://127.0.0.1:{port}/port");
        let response = agent
            .request(Method::GET, &url, HeaderMap::new(), Body::Empty)
            .await?;
        let (resolver, done) = Deferred::new();
        response.deliver_body(PauseForGood {
            control: None,
            body: Vec::new(),
            done: Some(resolver),
        });
        let body = done.await?;
        assert!(!body.is_empty());
        // And the connection, reading again, went back to the pool.
        assert_eq!(agent.pool().idle_connections(), 1);
        let (_, again) = agent
            .fetch(Method::GET, &url, HeaderMap::new(), Body::Empty)
            .await?;
        assert_eq!(again, body);
        agent.pool().close_cached_connections().await?;
        Ok(())
    });
}
