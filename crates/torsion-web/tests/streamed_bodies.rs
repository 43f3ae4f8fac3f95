//! Request bodies streamed to resources as they arrive, over real loopback sockets: large
//! uploads past the site's collection limit, rendering before the body, back-pressure
//! from a paused resource (the client is slowed, the server's memory bounded), chunked
//! uploads, `Expect: 100-continue`, and bodies that end badly (the client goes away, a
//! malformed chunk, a stall, a response finished before the body was read).

use std::cell::RefCell;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use http::Method;
use torsion::Reactor;
use torsion::time::ReactorTime;
use torsion_web::{
    Node, Render, Request, RequestBodyError, RequestBodyReceiver, Resource, SiteConfig,
};

mod common;
use common::{connect, read_response, serve, try_read_response};

thread_local! {
    /// What the receivers saw, in the reactor's thread.
    static SEEN: RefCell<Vec<Seen>> = const { RefCell::new(Vec::new()) };
}

/// One body as a receiver saw it.
#[derive(Debug, Clone, Default)]
struct Seen {
    calls: usize,
    bytes: u64,
    /// A simple checksum of the bytes, in order.
    sum: u64,
    end: Option<Result<(), RequestBodyError>>,
}

fn seen() -> Vec<Seen> {
    SEEN.with(|s| s.borrow().clone())
}

fn checksum(sum: u64, data: &[u8]) -> u64 {
    data.iter()
        .fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)))
}

/// Records the body into `SEEN[index]`, and answers the request with what it saw once
/// the body ends well (if `answer`).
struct Recorder {
    index: usize,
    request: Option<Rc<Request>>,
}

impl Recorder {
    fn new(request: &Rc<Request>, answer: bool) -> Recorder {
        let index = SEEN.with(|s| {
            let mut s = s.borrow_mut();
            s.push(Seen::default());
            s.len() - 1
        });
        Recorder {
            index,
            request: answer.then(|| request.clone()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        SEEN.with(|s| f(&mut s.borrow_mut()[self.index]))
    }
}

impl RequestBodyReceiver for Recorder {
    fn data_received(&mut self, data: &[u8]) {
        self.with(|s| {
            s.calls += 1;
            s.bytes += data.len() as u64;
            s.sum = checksum(s.sum, data);
        });
    }

    fn body_finished(&mut self, result: Result<(), RequestBodyError>) {
        let ok = result.is_ok();
        let (bytes, sum) = self.with(|s| {
            assert!(s.end.is_none(), "body_finished twice");
            s.end = Some(result);
            (s.bytes, s.sum)
        });
        if let Some(request) = self.request.take()
            && ok
        {
            let _ = request.write(format!("{bytes} {sum}").as_bytes());
            let _ = request.finish();
        }
    }
}

/// Streams its bodies to a [`Recorder`] and answers with their length and checksum.
struct Upload;

impl Resource for Upload {
    fn allowed_methods(&self) -> Vec<Method> {
        vec![Method::POST, Method::PUT]
    }
    fn streams_body(&self, _request: &Request) -> bool {
        true
    }
    fn render_post(&self, request: &Rc<Request>) -> Render {
        request.deliver_body(Recorder::new(request, true));
        Render::Later
    }
    fn render_put(&self, request: &Rc<Request>) -> Render {
        // Answers at once, before any of the body; tells the client so.
        let _ = request.write(b"started\n");
        request.deliver_body(Recorder::new(request, true));
        request.deliver_body(Recorder::new(request, false));
        Render::Later
    }
}

/// Pauses its bodies for `pause` seconds at first, then takes them.
struct Paused(f64);

impl Resource for Paused {
    fn allowed_methods(&self) -> Vec<Method> {
        vec![Method::POST]
    }
    fn streams_body(&self, _request: &Request) -> bool {
        true
    }
    fn render_post(&self, request: &Rc<Request>) -> Render {
        request.pause_body();
        request.deliver_body(Recorder::new(request, true));
        let r = request.clone();
        Reactor::current()
            .unwrap()
            .call_later(self.0, move || r.resume_body());
        Render::Later
    }
}

/// Answers 401 at once, never reading the body.
struct Refuses;

impl Resource for Refuses {
    fn allowed_methods(&self) -> Vec<Method> {
        vec![Method::POST]
    }
    fn streams_body(&self, _request: &Request) -> bool {
        true
    }
    fn render_post(&self, request: &Rc<Request>) -> Render {
        request.deliver_body(Recorder::new(request, false));
        request.set_response_code(http::StatusCode::UNAUTHORIZED);
        Render::text("no")
    }
}

/// Collects its bodies (the default) and answers with their length.
struct Collected;

impl Resource for Collected {
    fn allowed_methods(&self) -> Vec<Method> {
        vec![Method::POST]
    }
    fn render_post(&self, request: &Rc<Request>) -> Render {
        // deliver_body works on a collected body too: at once.
        request.deliver_body(Recorder::new(request, false));
        Render::text(request.content().len().to_string())
    }
}

/// Streams its bodies but never reads them, and answers 0.3 s after the head.
struct AnswersLater;

impl Resource for AnswersLater {
    fn allowed_methods(&self) -> Vec<Method> {
        vec![Method::POST]
    }
    fn streams_body(&self, _request: &Request) -> bool {
        true
    }
    fn render_post(&self, request: &Rc<Request>) -> Render {
        let r = request.clone();
        Reactor::current().unwrap().call_later(0.3, move || {
            let _ = r.write(b"later");
            let _ = r.finish();
        });
        Render::Later
    }
}

/// Answers its body's failure itself, from `body_finished`.
struct AnswersFailure(Rc<Request>);

impl RequestBodyReceiver for AnswersFailure {
    fn data_received(&mut self, _data: &[u8]) {}
    fn body_finished(&mut self, result: Result<(), RequestBodyError>) {
        let status = if result.is_ok() { 200 } else { 503 };
        self.0
            .set_response_code(http::StatusCode::from_u16(status).unwrap());
        let _ = self.0.write(format!("{result:?}").as_bytes());
        let _ = self.0.finish();
    }
}

/// Streams its bodies to [`AnswersFailure`].
struct OnFailure;

impl Resource for OnFailure {
    fn allowed_methods(&self) -> Vec<Method> {
        vec![Method::POST]
    }
    fn streams_body(&self, _request: &Request) -> bool {
        true
    }
    fn render_post(&self, request: &Rc<Request>) -> Render {
        request.deliver_body(AnswersFailure(request.clone()));
        Render::Later
    }
}

/// Answers 0.2 s later with `Connection: close`.
struct ClosesLater;

impl Resource for ClosesLater {
    fn render_get(&self, request: &Rc<Request>) -> Render {
        request.set_header("connection", "close");
        let r = request.clone();
        Reactor::current().unwrap().call_later(0.2, move || {
            let _ = r.write(b"last");
            let _ = r.finish();
        });
        Render::Later
    }
}

struct Hello;

impl Resource for Hello {
    fn render_get(&self, _request: &Rc<Request>) -> Render {
        Render::text("hello")
    }
}

fn root(pause: f64) -> Rc<dyn Resource> {
    let root = Node::new();
    root.put_child("upload", Rc::new(Upload));
    root.put_child("paused", Rc::new(Paused(pause)));
    root.put_child("refuses", Rc::new(Refuses));
    root.put_child("collected", Rc::new(Collected));
    root.put_child("hello", Rc::new(Hello));
    root.put_child("later", Rc::new(AnswersLater));
    root.put_child("on-failure", Rc::new(OnFailure));
    root.put_child("closes-later", Rc::new(ClosesLater));
    Rc::new(root)
}

/// A site whose collected bodies are limited to 1 KiB.
fn config() -> SiteConfig {
    SiteConfig {
        max_body: 1024,
        ..SiteConfig::default()
    }
}

/// Runs `client` against the test site, then returns its result and what the receivers
/// saw.
fn with_site<T: Send + 'static>(
    pause: f64,
    config: SiteConfig,
    client: impl FnOnce(u16) -> T + Send + 'static,
) -> (T, Vec<Seen>) {
    SEEN.with(|s| s.borrow_mut().clear());
    let out = serve(root(pause), config, client);
    (out, seen())
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn a_large_upload_streams_past_the_collection_limit_and_keeps_the_connection() {
    let body = pattern(8 << 20);
    let expected = format!("{} {}", body.len(), checksum(0, &body));
    let ((answer, collected, hello), seen) = with_site(0.0, config(), move |port| {
        let (mut stream, mut reader) = connect(port);
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body).unwrap();
        let answer = read_response(&mut reader, false);
        // The same body to a collecting resource is over its limit.
        stream
            .write_all(b"POST /collected HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\n\r\n")
            .unwrap();
        let collected = read_response(&mut reader, false);
        let (mut stream, mut reader) = connect(port);
        stream
            .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        (answer, collected, read_response(&mut reader, false))
    });
    assert_eq!(answer.status, 200);
    assert_eq!(String::from_utf8_lossy(&answer.body), expected);
    assert_eq!(collected.status, 413);
    assert_eq!(hello.body, b"hello");
    assert_eq!(seen[0].end, Some(Ok(())));
    assert!(
        seen[0].calls > 4,
        "8 MiB arrived in {} calls: not streamed",
        seen[0].calls
    );
}

#[test]
fn a_streamed_resource_answers_before_the_body_is_sent() {
    let ((first, rest), seen) = with_site(0.0, config(), |port| {
        let (mut stream, mut reader) = connect(port);
        stream
            .write_all(b"PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
            .unwrap();
        // The resource renders at the head: its first bytes come before the body is sent.
        let mut first = Vec::new();
        let mut byte = [0];
        while !first.ends_with(b"started\n") {
            reader.read_exact(&mut byte).unwrap();
            first.push(byte[0]);
        }
        stream.write_all(b"0123456789").unwrap();
        let mut rest = Vec::new();
        while !rest.ends_with(b"0\r\n\r\n") {
            reader.read_exact(&mut byte).unwrap();
            rest.push(byte[0]);
        }
        (
            String::from_utf8_lossy(&first).into_owned(),
            String::from_utf8_lossy(&rest).into_owned(),
        )
    });
    assert!(first.starts_with("HTTP/1.1 200 OK"), "{first:?}");
    assert!(
        rest.contains(&format!("10 {}", checksum(0, b"0123456789"))),
        "{rest:?}"
    );
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].bytes, 10);
    assert_eq!(seen[0].end, Some(Ok(())));
    // A second receiver for the same body is refused.
    assert_eq!(seen[1].end, Some(Err(RequestBodyError::AlreadyDelivered)));
    assert_eq!(seen[1].bytes, 0);
}

#[test]
fn a_chunked_upload_streams_in_order() {
    let body = pattern(300_000);
    let expected = format!("{} {}", body.len(), checksum(0, &body));
    let (answer, seen) = with_site(0.0, config(), move |port| {
        let (mut stream, mut reader) = connect(port);
        stream
            .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        for chunk in body.chunks(7_777) {
            stream
                .write_all(format!("{:x};ext=1\r\n", chunk.len()).as_bytes())
                .unwrap();
            stream.write_all(chunk).unwrap();
            stream.write_all(b"\r\n").unwrap();
        }
        stream.write_all(b"0\r\n\r\n").unwrap();
        read_response(&mut reader, false)
    });
    assert_eq!(String::from_utf8_lossy(&answer.body), expected);
    assert_eq!(seen[0].end, Some(Ok(())));
}

#[test]
fn a_paused_resource_slows_the_client_and_bounds_the_server() {
    // The resource takes nothing for a second; its body timeout is shorter, and must not
    // fire while the resource (not the client) is the one waiting.
    let config = SiteConfig {
        body_timeout: Some(Duration::from_millis(300)),
        ..config()
    };
    let total = 64 << 20;
    let ((accepted_while_paused, answer), seen) = with_site(1.0, config, move |port| {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut writer = stream.try_clone().unwrap();
        writer
            .write_all(
                format!("POST /paused HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
        let block = vec![b'x'; 64 * 1024];
        // For 0.6 s (the resource is paused), write what the server lets through.
        writer.set_nonblocking(true).unwrap();
        let start = Instant::now();
        let mut sent = 0usize;
        while start.elapsed() < Duration::from_millis(600) {
            match writer.write(&block[..block.len().min(total - sent)]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        let accepted_while_paused = sent;
        writer.set_nonblocking(false).unwrap();
        while sent < total {
            let n = (total - sent).min(block.len());
            writer.write_all(&block[..n]).unwrap();
            sent += n;
        }
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream);
        (accepted_while_paused, read_response(&mut reader, false))
    });
    assert_eq!(
        answer.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(
        String::from_utf8_lossy(&answer.body).starts_with(&format!("{total} ")),
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(seen[0].end, Some(Ok(())));
    // Socket buffers on both sides plus the server's backlog, not the 64 MiB.
    assert!(
        accepted_while_paused < 24 << 20,
        "{accepted_while_paused} bytes accepted while the resource was paused"
    );
}

#[test]
fn expect_continue_is_sent_to_a_resource_that_reads_and_not_to_one_that_refuses() {
    let ((reads, refuses), seen) = with_site(0.0, config(), |port| {
        let (mut stream, mut reader) = connect(port);
        stream
            .write_all(
                b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
            )
            .unwrap();
        let cont = read_response(&mut reader, false);
        stream.write_all(b"hello").unwrap();
        let answer = read_response(&mut reader, false);
        let reads = (cont.status, answer.status, answer.body);

        let (mut stream, mut reader) = connect(port);
        stream
            .write_all(
                b"POST /refuses HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
            )
            .unwrap();
        let answer = read_response(&mut reader, false);
        let mut rest = Vec::new();
        let closed = reader.read_to_end(&mut rest).is_ok() && rest.is_empty();
        (
            reads,
            (
                answer.status,
                answer.header("connection").map(str::to_string),
                closed,
            ),
        )
    });
    assert_eq!(reads.0, 100);
    assert_eq!(reads.1, 200);
    assert_eq!(
        String::from_utf8_lossy(&reads.2),
        format!("5 {}", checksum(0, b"hello"))
    );
    // No 100 Continue: the answer, and a close, since the body was never read.
    assert_eq!(refuses.0, 401);
    assert_eq!(refuses.1.as_deref(), Some("close"));
    assert!(refuses.2, "the connection stayed open with the body unread");
    assert_eq!(seen[1].end, Some(Err(RequestBodyError::NotRead)));
}

#[test]
fn a_response_finished_before_the_body_arrives_whole_and_the_connection_closes() {
    // The client sends its whole 2 MiB body although the answer came first: it must read
    // that answer, not a reset.
    let (answer, seen) = with_site(0.0, config(), |port| {
        let (mut stream, mut reader) = connect(port);
        let body = vec![b'y'; 2 << 20];
        stream
            .write_all(
                format!(
                    "POST /refuses HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .unwrap();
        let writer = std::thread::spawn(move || {
            let _ = stream.write_all(&body);
        });
        let answer = try_read_response(&mut reader, false).map(|r| (r.status, r.body));
        let _ = writer.join();
        answer.map_err(|e| e.kind())
    });
    assert_eq!(answer, Ok((401, b"no".to_vec())));
    assert_eq!(seen[0].end, Some(Err(RequestBodyError::NotRead)));
}

#[test]
fn a_client_gone_mid_body_ends_the_body_with_disconnected() {
    let ((), seen) = with_site(0.0, config(), |port| {
        let (mut stream, _reader) = connect(port);
        stream
            .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly this")
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        drop(stream);
        std::thread::sleep(Duration::from_millis(200));
    });
    assert_eq!(seen[0].bytes, 9);
    assert_eq!(seen[0].end, Some(Err(RequestBodyError::Disconnected)));
}

#[test]
fn a_malformed_chunk_mid_stream_is_400_to_the_client_and_malformed_to_the_resource() {
    let ((status, closed), seen) = with_site(0.0, config(), |port| {
        let (mut stream, mut reader) = connect(port);
        stream
            .write_all(
                b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n-3\r\nabc\r\n",
            )
            .unwrap();
        let answer = read_response(&mut reader, false);
        let mut rest = Vec::new();
        let closed = reader.read_to_end(&mut rest).is_ok() && rest.is_empty();
        (answer.status, closed)
    });
    assert_eq!(status, 400);
    assert!(closed);
    assert_eq!(seen[0].bytes, 5);
    assert!(
        matches!(seen[0].end, Some(Err(RequestBodyError::Malformed(_)))),
        "{:?}",
        seen[0].end
    );
}

#[test]
fn a_stalled_streamed_body_is_408_and_timed_out() {
    let config = SiteConfig {
        body_timeout: Some(Duration::from_millis(200)),
        ..config()
    };
    let (status, seen) = with_site(0.0, config, |port| {
        let (mut stream, mut reader) = connect(port);
        stream
            .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            .unwrap();
        read_response(&mut reader, false).status
    });
    assert_eq!(status, 408);
    assert_eq!(seen[0].end, Some(Err(RequestBodyError::TimedOut)));
}

#[test]
fn a_collected_body_is_delivered_whole_at_once() {
    let (answer, seen) = with_site(0.0, config(), |port| {
        let (mut stream, mut reader) = connect(port);
        stream
            .write_all(b"POST /collected HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabcdef")
            .unwrap();
        read_response(&mut reader, false)
    });
    assert_eq!(answer.body, b"6");
    assert_eq!(seen[0].calls, 1);
    assert_eq!(seen[0].bytes, 6);
    assert_eq!(seen[0].end, Some(Ok(())));
}

#[test]
fn pipelined_after_a_streamed_body_in_one_write() {
    let (bodies, seen) = with_site(0.0, config(), |port| {
        let (mut stream, mut reader) = connect(port);
        stream
            .write_all(
                b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /hello HTTP/1.1\r\nHost: x\r\n\r\nPOST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nde",
            )
            .unwrap();
        (0..3)
            .map(|_| String::from_utf8_lossy(&read_response(&mut reader, false).body).into_owned())
            .collect::<Vec<_>>()
    });
    assert_eq!(
        bodies,
        [
            format!("3 {}", checksum(0, b"abc")),
            "hello".to_string(),
            format!("2 {}", checksum(0, b"de")),
        ]
    );
    assert_eq!(seen.len(), 2);
}

#[test]
fn curl_streams_a_chunked_upload_from_its_stdin() {
    let body = pattern(4 << 20);
    let expected = format!("{} {}", body.len(), checksum(0, &body));
    let (output, seen) = with_site(0.0, config(), move |port| {
        common::run_peer(
            "curl",
            &[
                "-s",
                "-T",
                "-",
                "-X",
                "POST",
                "-H",
                "Transfer-Encoding: chunked",
                &format!("http://127.0.0.1:{port}/upload"),
            ],
            &body,
        )
    });
    let Some(output) = output else { return };
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
    assert_eq!(seen[0].end, Some(Ok(())));
}

const TWISTED_UPLOAD: &str = r#"
import sys
from io import BytesIO
from twisted.internet import reactor, defer
from twisted.web.client import Agent, readBody, FileBodyProducer
port, size = int(sys.argv[1]), int(sys.argv[2])
body = bytes((i * 7 % 251) for i in range(size))
out = []
@defer.inlineCallbacks
def main():
    try:
        r = yield Agent(reactor).request(b"POST", b"http://127.0.0.1:%d/upload" % port, None, FileBodyProducer(BytesIO(body)))
        out.append("%d %s" % (r.code, (yield readBody(r)).decode()))
    except Exception as e:
        out.append("error %r" % (e,))
    reactor.stop()
reactor.callWhenRunning(main)
reactor.callLater(20, reactor.stop)
reactor.run()
print("\n".join(out))
"#;

#[test]
fn twisted_agent_uploads_a_body_the_resource_streams() {
    let size = 3 << 20;
    let body = pattern(size);
    let expected = format!("200 {} {}\n", body.len(), checksum(0, &body));
    let (output, seen) = with_site(0.0, config(), move |port| {
        common::run_peer(
            &common::twisted_python(),
            &["-c", TWISTED_UPLOAD, &port.to_string(), &size.to_string()],
            b"",
        )
    });
    let Some(output) = output else { return };
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        expected,
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(seen[0].end, Some(Ok(())));
}

#[test]
fn a_kept_connection_reads_on_after_a_whole_body_left_waiting_past_the_backlog() {
    // The whole body (past BODY_BACKLOG) is in before the resource answers, without
    // reading it: the connection is kept, and the next request on it is answered (when
    // the reads split the body so that its end arrives with the bytes that cross the
    // backlog, as 64 KiB reads do).
    let body = vec![b'z'; 70_000];
    let (answers, _) = with_site(0.0, config(), move |port| {
        let (mut stream, mut reader) = connect(port);
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let head = format!(
            "POST /later HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body).unwrap();
        let first = read_response(&mut reader, false);
        stream
            .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let second = try_read_response(&mut reader, false).map(|r| (r.status, r.body));
        (
            (
                first.status,
                first.header("connection").map(str::to_string),
                first.body,
            ),
            second.map_err(|e| e.kind()),
        )
    });
    // Whether the whole body is in depends on how the reads split it: past the backlog
    // reading stops, and a body not read whole makes the answer close. Either way the
    // connection must not hang.
    match answers.0 {
        (200, None, ref body) if body == b"later" => {
            assert_eq!(answers.1, Ok((200, b"hello".to_vec())));
        }
        (200, Some(ref close), ref body) if close == "close" && body == b"later" => {
            assert_eq!(answers.1, Err(std::io::ErrorKind::UnexpectedEof));
        }
        ref other => panic!("unexpected first answer {other:?}"),
    }
}

/// Sends `raw`, reads one answer, then everything until the server closes (3 s at most):
/// the answer, and what followed it (`Ok(0)` and nothing: a clean close right after).
fn answer_then_close(
    port: u16,
    raw: &[u8],
) -> (common::Response, Result<usize, std::io::ErrorKind>, String) {
    let (mut stream, mut reader) = connect(port);
    stream.write_all(raw).unwrap();
    let answer = read_response(&mut reader, false);
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut rest = Vec::new();
    let closed = reader.read_to_end(&mut rest).map_err(|e| e.kind());
    (answer, closed, String::from_utf8_lossy(&rest).into_owned())
}

#[test]
fn a_resource_answering_its_timed_out_body_itself_closes_the_connection_after() {
    // The resource answers from body_finished(Err(TimedOut)): that answer is the last on
    // the connection, which then closes (no second answer, no connection left open).
    let config = SiteConfig {
        body_timeout: Some(Duration::from_millis(200)),
        ..config()
    };
    let ((answer, closed, rest), _) = with_site(0.0, config, |port| {
        answer_then_close(
            port,
            b"POST /on-failure HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
        )
    });
    assert_eq!(answer.status, 503);
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(answer.body, b"Err(TimedOut)");
    assert_eq!((closed, rest.as_str()), (Ok(0), ""));
}

#[test]
fn a_resource_answering_its_malformed_body_itself_closes_the_connection_after() {
    let ((answer, closed, rest), _) = with_site(0.0, config(), |port| {
        answer_then_close(
            port,
            b"POST /on-failure HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n",
        )
    });
    assert_eq!(answer.status, 503);
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!((closed, rest.as_str()), (Ok(0), ""));
}

#[test]
fn nothing_is_sent_after_a_response_that_closes_though_a_streamed_request_behind_it_answers() {
    // The first response closes the connection; the streamed request behind it, its body
    // cut, answers from body_finished: that answer must not follow the closing one.
    let ((answer, closed, rest), seen) = with_site(0.0, config(), |port| {
        answer_then_close(
            port,
            b"GET /closes-later HTTP/1.1\r\nHost: x\r\n\r\nPOST /on-failure HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
        )
    });
    assert_eq!((answer.status, &answer.body[..]), (200, &b"last"[..]));
    assert_eq!((closed, rest.as_str()), (Ok(0), ""));
    assert!(seen.is_empty(), "AnswersFailure records nothing");
}

#[test]
fn a_paused_receiver_is_told_at_once_that_the_client_went_away() {
    // Paused for 30 s: the end must not wait for the resume.
    let ((), seen) = with_site(30.0, config(), |port| {
        let (mut stream, _reader) = connect(port);
        stream
            .write_all(b"POST /paused HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nsome")
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        drop(stream);
        std::thread::sleep(Duration::from_millis(300));
    });
    assert_eq!(seen[0].end, Some(Err(RequestBodyError::Disconnected)));
    assert_eq!(seen[0].bytes, 0, "a paused receiver gets no bytes");
}
