//! The HTTP server over real loopback sockets (Twisted's `twisted.web.test.test_http` and
//! `test_web`): responses and their framing, keep-alive, pipelining in order, bodies,
//! `Expect: 100-continue`, the refusals of malformed requests with their status and a
//! close, the timeouts, and curl as a client.

use std::io::{Read, Write};
use std::rc::Rc;
use std::time::Duration;

use torsion::time::ReactorTime;
use torsion::{Deferred, Reactor};
use torsion_web::{Node, Render, Request, Resource, SiteConfig};

mod common;
use common::{Echo, Hello, connect, exchange, read_response};

/// Serves the test tree.
fn with_server<T: Send + 'static>(
    config: SiteConfig,
    client: impl FnOnce(u16) -> T + Send + 'static,
) -> T {
    common::serve(root(), config, client)
}

/// Answers after `delay`, through a Deferred.
struct Slow(f64);

impl Resource for Slow {
    fn render_get(&self, _request: &Rc<Request>) -> Render {
        let (resolver, d) = Deferred::new();
        let reactor = Reactor::current().unwrap();
        reactor.call_later(self.0, move || resolver.callback(b"slow".to_vec()));
        Render::Deferred(d)
    }
}

/// Writes in three parts, later, without a length: chunked on HTTP/1.1.
struct Parts;

impl Resource for Parts {
    fn render_get(&self, request: &Rc<Request>) -> Render {
        let reactor = Reactor::current().unwrap();
        let request = request.clone();
        reactor.call_later(0.01, move || {
            for part in ["one ", "two ", "three"] {
                request.write(part.as_bytes()).unwrap();
            }
            request.finish().unwrap();
            assert!(
                request.write(b"late").is_err(),
                "writing after finish is an error"
            );
        });
        Render::Later
    }
}

fn root() -> Rc<dyn Resource> {
    let root = Node::new();
    root.put_child("", Rc::new(Hello));
    root.put_child("hello", Rc::new(Hello));
    root.put_child("echo", Rc::new(Echo));
    root.put_child("slow", Rc::new(Slow(0.05)));
    root.put_child("parts", Rc::new(Parts));
    Rc::new(root)
}

#[test]
fn get_answers_with_its_length_and_the_connection_stays_open_for_the_next_request() {
    let (first, second) = with_server(SiteConfig::default(), |port| {
        let (mut stream, mut reader) = connect(port);
        stream
            .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let first = read_response(&mut reader, false);
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        (first, read_response(&mut reader, false))
    });
    assert_eq!(first.status, 200);
    assert_eq!(first.body, b"hello world");
    assert_eq!(first.header("content-length"), Some("11"));
    assert!(first.header("date").is_some_and(|d| d.ends_with("GMT")));
    assert_eq!(second.body, b"hello world");
}

#[test]
fn head_has_the_headers_of_get_without_the_body() {
    let (response, _) = with_server(SiteConfig::default(), |port| {
        exchange(
            port,
            b"HEAD /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    });
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-length"), Some("11"));
    assert!(response.body.is_empty());
}

#[test]
fn an_unknown_method_is_405_with_allow_and_an_unknown_path_404() {
    let (put, missing) = with_server(SiteConfig::default(), |port| {
        let put = exchange(
            port,
            b"PUT /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        )
        .0;
        let missing = exchange(port, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n").0;
        (put, missing)
    });
    assert_eq!(put.status, 405);
    assert_eq!(put.header("allow"), Some("GET, HEAD"));
    assert_eq!(missing.status, 404);
}

#[test]
fn pipelined_requests_are_answered_in_order_even_when_the_first_is_slower() {
    let responses = with_server(SiteConfig::default(), |port| {
        let (mut stream, mut reader) = connect(port);
        stream
            .write_all(
                b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /echo?x=2 HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nthreeGET /parts HTTP/1.1\r\nHost: x\r\n\r\n",
            )
            .unwrap();
        (0..4)
            .map(|_| read_response(&mut reader, false).body)
            .collect::<Vec<_>>()
    });
    assert_eq!(responses, [&b"slow"[..], b"2", b"three", b"one two three"]);
}

#[test]
fn a_chunked_request_body_is_collected_and_a_response_without_length_is_chunked() {
    let (echo, parts) = with_server(SiteConfig::default(), |port| {
        let echo = exchange(
            port,
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
        )
        .0;
        let parts = exchange(port, b"GET /parts HTTP/1.1\r\nHost: x\r\n\r\n").0;
        (echo, parts)
    });
    assert_eq!(echo.body, b"hello world");
    assert_eq!(parts.header("transfer-encoding"), Some("chunked"));
    assert_eq!(parts.body, b"one two three");
}

#[test]
fn http_1_0_closes_after_the_response_unless_kept_alive() {
    let ((plain, closed), (kept, kept_closed)) = with_server(SiteConfig::default(), |port| {
        (
            exchange(port, b"GET /hello HTTP/1.0\r\n\r\n"),
            exchange(
                port,
                b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            ),
        )
    });
    assert_eq!(plain.header("connection"), Some("close"));
    assert!(closed);
    assert_eq!(kept.header("connection"), Some("keep-alive"));
    assert!(!kept_closed);
}

#[test]
fn expect_100_continue_gets_100_before_the_body_is_sent() {
    let (interim, response) = with_server(SiteConfig::default(), |port| {
        let (mut stream, mut reader) = connect(port);
        stream
            .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
            .unwrap();
        let interim = read_response(&mut reader, false);
        stream.write_all(b"body").unwrap();
        (interim.status, read_response(&mut reader, false))
    });
    assert_eq!(interim, 100);
    assert_eq!(response.body, b"body");
}

#[test]
fn malformed_requests_get_their_status_and_a_close() {
    let config = SiteConfig {
        max_body: 10,
        ..SiteConfig::default()
    };
    let cases: Vec<(&'static str, Vec<u8>, u16)> = vec![
        // CVE-2020-10108: conflicting Content-Length.
        ("conflicting lengths", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(), 400),
        // CVE-2020-10109: Content-Length with Transfer-Encoding.
        ("length and chunked", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400),
        ("no version", b"GET /\r\n\r\n".to_vec(), 400),
        // CVE-2022-24801: a 0x chunk size.
        ("0x chunk size", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n".to_vec(), 400),
        ("headers too large", [b"GET / HTTP/1.1\r\nHost: x\r\nX: ".to_vec(), vec![b'a'; 17 * 1024], b"\r\n\r\n".to_vec()].concat(), 431),
        ("uri too long", [b"GET /".to_vec(), vec![b'a'; 9 * 1024], b" HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()].concat(), 414),
        ("body too large", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world".to_vec(), 413),
    ];
    let results = with_server(config, move |port| {
        cases
            .into_iter()
            .map(|(name, raw, want)| {
                let (response, closed) = exchange(port, &raw);
                (name, response.status, want, closed)
            })
            .collect::<Vec<_>>()
    });
    for (name, status, want, closed) in results {
        assert_eq!(status, want, "{name}");
        assert!(closed, "{name}: the connection stays open");
    }
}

#[test]
fn an_idle_connection_closes_and_a_slow_head_gets_408() {
    let config = SiteConfig {
        idle_timeout: Some(Duration::from_millis(200)),
        head_timeout: Some(Duration::from_millis(200)),
        ..SiteConfig::default()
    };
    let (idle_closed, slow) = with_server(config, |port| {
        let (_stream, mut reader) = connect(port);
        let mut rest = Vec::new();
        let idle_closed = reader.read_to_end(&mut rest).is_ok() && rest.is_empty();
        let (mut stream, mut reader) = connect(port);
        stream.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
        (idle_closed, read_response(&mut reader, false).status)
    });
    assert!(idle_closed);
    assert_eq!(slow, 408);
}

#[test]
fn curl_reuses_the_connection_and_uploads_chunked() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("TORSION_REQUIRE_INTEROP").is_none(),
            "curl is required: install curl"
        );
        eprintln!("skipped: curl is not installed");
        return;
    }
    let output = with_server(SiteConfig::default(), |port| {
        let base = format!("http://127.0.0.1:{port}");
        let two = std::process::Command::new("curl")
            .args([
                "-sv",
                &format!("{base}/hello"),
                &format!("{base}/echo?x=curl"),
            ])
            .output()
            .unwrap();
        let upload = std::process::Command::new("curl")
            .args([
                "-s",
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                "@-",
                &format!("{base}/echo"),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                child.stdin.take().unwrap().write_all(b"sent in chunks")?;
                child.wait_with_output()
            })
            .unwrap();
        (two, upload)
    });
    let (two, upload) = output;
    assert_eq!(String::from_utf8_lossy(&two.stdout), "hello worldcurl");
    let verbose = String::from_utf8_lossy(&two.stderr);
    assert!(
        verbose.contains("Re-using existing connection") || verbose.contains("Reusing existing"),
        "{verbose}"
    );
    assert_eq!(String::from_utf8_lossy(&upload.stdout), "sent in chunks");
}
