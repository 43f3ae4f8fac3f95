//! The HTTP/1.1 server at its edges, over real loopback sockets: pipelining past
//! `MAX_PIPELINED` and against the timers, close-delimited responses and the requests
//! behind them, truncated responses after a failure, `Expect: 100-continue` for a queued
//! request, bounded memory against clients that send without end or never read, refusals
//! that survive a client still sending its body, stray CRLFs, keep-alive rules, HEAD,
//! 204/304, errors in resources, and real clients (Python's http.client, curl, Twisted's
//! Agent).

use std::cell::RefCell;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::thread;
use std::time::{Duration, Instant};

use http::StatusCode;
use torsion::time::ReactorTime;
use torsion::{Deferred, Failure, Reactor};
use torsion_web::{Node, Render, Request, RequestDone, Resource, SiteConfig};

mod common;
use common::{Echo, Hello, Response, connect, read_response, try_read_response};

thread_local! {
    /// What the resources saw, in the reactor's thread (checked after `with_server`).
    static EVENTS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static RENDERS: RefCell<usize> = const { RefCell::new(0) };
}

fn event(e: impl Into<String>) {
    EVENTS.with(|v| v.borrow_mut().push(e.into()));
}

fn events() -> Vec<String> {
    EVENTS.with(|v| v.borrow().clone())
}

/// Answers after `?t=` seconds (default 0.3) through a Deferred; records notify_finish.
struct Slow;
impl Resource for Slow {
    fn render_get(&self, request: &Rc<Request>) -> Render {
        let t: f64 = request.arg("t").and_then(|t| t.parse().ok()).unwrap_or(0.3);
        let name = request.uri().to_string();
        request.notify_finish().add_callbacks(
            {
                let name = name.clone();
                move |()| {
                    event(format!("{name} finished"));
                    Ok::<(), Failure>(())
                }
            },
            move |_f: Failure| {
                event(format!("{name} disconnected"));
                Ok::<(), Failure>(())
            },
        );
        let (resolver, d) = Deferred::new();
        Reactor::current()
            .unwrap()
            .call_later(t, move || resolver.callback(b"slow".to_vec()));
        Render::Deferred(d)
    }
}

/// Render::Later: writes twice without a length after `?t=` seconds, then finishes;
/// records what write/finish returned and notify_finish.
struct Later;
impl Resource for Later {
    fn render_get(&self, request: &Rc<Request>) -> Render {
        let t: f64 = request
            .arg("t")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0.05);
        let name = request.uri().to_string();
        request.notify_finish().add_callbacks(
            {
                let name = name.clone();
                move |()| {
                    event(format!("{name} finished"));
                    Ok::<(), Failure>(())
                }
            },
            {
                let name = name.clone();
                move |_f: Failure| {
                    event(format!("{name} disconnected"));
                    Ok::<(), Failure>(())
                }
            },
        );
        let request = request.clone();
        Reactor::current().unwrap().call_later(t, move || {
            let a = request.write(b"part one ");
            let b = request.write(b"part two");
            let c = request.finish();
            let d = request.write(b"late");
            let e = request.finish();
            event(format!(
                "{name} write {a:?} {b:?} finish {c:?} late {d:?} {e:?}"
            ));
        });
        Render::Later
    }
}

/// `?code=204` or 304, with a body given that must not be sent.
struct Code;
impl Resource for Code {
    fn render_get(&self, request: &Rc<Request>) -> Render {
        let code: u16 = request
            .arg("code")
            .and_then(|c| c.parse().ok())
            .unwrap_or(204);
        request.set_response_code(StatusCode::from_u16(code).unwrap());
        if request.arg("later").is_some() {
            let _ = request.write(b"not sent");
            let _ = request.finish();
            return Render::Later;
        }
        Render::text("must not be sent")
    }
}

struct Panics;
impl Resource for Panics {
    fn render_get(&self, request: &Rc<Request>) -> Render {
        if request.arg("after_write").is_some() {
            request.write(b"partial").unwrap();
        }
        if request.arg("with_length").is_some() {
            // Headers for the answer it never gives: not the 500's.
            request.set_header("content-length", "999");
            request.set_header("content-type", "image/png");
        }
        panic!("render panicked on purpose");
    }
}

struct Fails;
impl Resource for Fails {
    fn render_get(&self, _request: &Rc<Request>) -> Render {
        let (resolver, d) = Deferred::new();
        Reactor::current().unwrap().call_later(0.01, move || {
            resolver.errback(Failure::new(std::io::Error::other(
                "deferred failed on purpose",
            )))
        });
        Render::Deferred(d)
    }
}

/// Writes and finishes inside render, and a Deferred that fired already.
struct Inline;
impl Resource for Inline {
    fn render_get(&self, request: &Rc<Request>) -> Render {
        if request.arg("sync").is_some() {
            return Render::Deferred(Deferred::succeed(b"sync deferred".to_vec()));
        }
        request.set_header("bad name", "x");
        request.set_header("x-bad-value", "a\r\nb");
        request.set_header("x-good", "yes");
        request.write(b"inline ").unwrap();
        request.finish().unwrap();
        event(format!("inline late write {:?}", request.write(b"x")));
        Render::Later
    }
}

/// Sets its own `Transfer-Encoding: chunked`, then writes without a length.
struct OwnChunked;
impl Resource for OwnChunked {
    fn render_get(&self, request: &Rc<Request>) -> Render {
        request.set_header("Transfer-Encoding", "chunked");
        request.write(b"own ").unwrap();
        request.write(b"chunks").unwrap();
        request.finish().unwrap();
        Render::Later
    }
}

/// A 64 KiB body, counting renders.
struct Big;
impl Resource for Big {
    fn render_get(&self, _request: &Rc<Request>) -> Render {
        RENDERS.with(|r| *r.borrow_mut() += 1);
        Render::Body(vec![b'x'; 64 * 1024])
    }
}

fn root() -> Rc<dyn Resource> {
    let root = Node::new();
    root.put_child("", Rc::new(Hello));
    root.put_child("hello", Rc::new(Hello));
    root.put_child("echo", Rc::new(Echo));
    root.put_child("slow", Rc::new(Slow));
    root.put_child("later", Rc::new(Later));
    root.put_child("code", Rc::new(Code));
    root.put_child("panics", Rc::new(Panics));
    root.put_child("fails", Rc::new(Fails));
    root.put_child("inline", Rc::new(Inline));
    root.put_child("big", Rc::new(Big));
    root.put_child("own-chunked", Rc::new(OwnChunked));
    Rc::new(root)
}

fn with_server<T: Send + 'static>(
    config: SiteConfig,
    client: impl FnOnce(u16) -> T + Send + 'static,
) -> T {
    EVENTS.with(|v| v.borrow_mut().clear());
    RENDERS.with(|r| *r.borrow_mut() = 0);
    common::serve(root(), config, client)
}

/// Whether the server closed: EOF (or a reset) within `wait`, with nothing more sent.
fn closed_within(reader: &mut BufReader<TcpStream>, wait: Duration) -> bool {
    reader.get_ref().set_read_timeout(Some(wait)).unwrap();
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest) {
        Ok(_) => rest.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

const GET: &[u8] = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";

// ---- 1. Pipelining ----

#[test]
fn slow_then_fast_then_malformed_answers_everything_in_order_then_refuses_and_closes() {
    let (statuses, bodies, closed) = with_server(SiteConfig::default(), |port| {
        let (mut s, mut r) = connect(port);
        let mut burst = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        burst.extend_from_slice(GET);
        burst.extend_from_slice(b"GET /echo?x=3 HTTP/1.1\r\nHost: x\r\n\r\n");
        burst.extend_from_slice(b"GET / HTTP/9.9\r\nHost: x\r\n\r\n");
        s.write_all(&burst).unwrap();
        let rs: Vec<Response> = (0..4).map(|_| read_response(&mut r, false)).collect();
        let closed = closed_within(&mut r, Duration::from_secs(2));
        (
            rs.iter().map(|r| r.status).collect::<Vec<_>>(),
            rs.into_iter().map(|r| r.body).collect::<Vec<_>>(),
            closed,
        )
    });
    assert_eq!(statuses[..3], [200, 200, 200]);
    assert!(statuses[3] >= 400, "{statuses:?}");
    assert_eq!(bodies[..3], [&b"slow"[..], b"hello world", b"3"]);
    assert!(closed);
}

#[test]
fn a_client_closing_mid_pipeline_fails_notify_finish_of_the_unfinished() {
    with_server(SiteConfig::default(), |port| {
        let (mut s, _r) = connect(port);
        s.write_all(
            b"GET /slow?t=0.3 HTTP/1.1\r\nHost: x\r\n\r\nGET /later?t=0.4 HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .unwrap();
        thread::sleep(Duration::from_millis(50));
        s.shutdown(std::net::Shutdown::Both).unwrap();
        thread::sleep(Duration::from_millis(700));
    });
    let ev = events();
    assert!(
        ev.contains(&"/slow?t=0.3 disconnected".to_string()),
        "{ev:?}"
    );
    assert!(
        ev.contains(&"/later?t=0.4 disconnected".to_string()),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|e| e.starts_with("/later?t=0.4 write Err(Disconnected)")),
        "{ev:?}"
    );
}

#[test]
fn more_than_max_pipelined_in_one_write_are_all_answered() {
    let bodies = with_server(SiteConfig::default(), |port| {
        let (mut s, mut r) = connect(port);
        let mut burst = b"GET /slow?t=0.2 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        for i in 0..40 {
            burst.extend_from_slice(
                format!("GET /echo?x={i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            );
        }
        s.write_all(&burst).unwrap();
        (0..41)
            .map(|_| read_response(&mut r, false).body)
            .collect::<Vec<_>>()
    });
    assert_eq!(bodies[0], b"slow");
    for i in 0..40 {
        assert_eq!(bodies[i + 1], i.to_string().as_bytes());
    }
}

/// A buffered 17th head does not arm the head timer while the 1st is answered.
#[test]
fn pipelined_requests_beyond_max_pipelined_are_not_cut_by_the_head_timer() {
    let config = SiteConfig {
        head_timeout: Some(Duration::from_millis(300)),
        ..SiteConfig::default()
    };
    let statuses = with_server(config, |port| {
        let (mut s, mut r) = connect(port);
        let mut burst = b"GET /slow?t=1.0 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        for _ in 0..20 {
            burst.extend_from_slice(GET);
        }
        s.write_all(&burst).unwrap();
        let mut statuses = Vec::new();
        for _ in 0..21 {
            match try_read_response(&mut r, false) {
                Ok(resp) => statuses.push(resp.status),
                Err(_) => break,
            }
        }
        statuses
    });
    assert_eq!(statuses, vec![200; 21]);
}

/// Each head gets its own deadline.
#[test]
fn a_steady_pipeline_is_not_cut_by_the_head_timer() {
    let config = SiteConfig {
        head_timeout: Some(Duration::from_millis(500)),
        ..SiteConfig::default()
    };
    let statuses = with_server(config, |port| {
        let (mut s, mut r) = connect(port);
        let (a, b) = GET.split_at(10);
        // Every 150 ms: the end of one request and the start of the next; each head takes
        // 150 ms to arrive, the whole run 1.8 s.
        s.write_all(a).unwrap();
        for _ in 0..12 {
            thread::sleep(Duration::from_millis(150));
            let _ = s.write_all(&[b, a].concat());
        }
        thread::sleep(Duration::from_millis(150));
        let _ = s.write_all(b);
        let mut statuses = Vec::new();
        for _ in 0..13 {
            match try_read_response(&mut r, false) {
                Ok(resp) => statuses.push(resp.status),
                Err(_) => break,
            }
        }
        statuses
    });
    assert_eq!(statuses, vec![200; 13]);
}

// ---- 2. Keep-alive and close ----

#[test]
fn connection_close_on_1_1_closes_after_the_response_and_ignores_what_follows() {
    let (first, closed) = with_server(SiteConfig::default(), |port| {
        let (mut s, mut r) = connect(port);
        s.write_all(b"GET /slow?t=0.1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let first = read_response(&mut r, false);
        (first, closed_within(&mut r, Duration::from_secs(2)))
    });
    assert_eq!(first.body, b"slow");
    assert_eq!(first.header("connection"), Some("close"));
    assert!(closed);
}

#[test]
fn http_1_0_keep_alive_survives_and_plain_1_0_closes() {
    let (kept, plain, closed) = with_server(SiteConfig::default(), |port| {
        let (mut s, mut r) = connect(port);
        s.write_all(b"GET /slow?t=0.05 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let kept = read_response(&mut r, false);
        s.write_all(b"GET /hello HTTP/1.0\r\n\r\n").unwrap();
        let plain = read_response(&mut r, false);
        (kept, plain, closed_within(&mut r, Duration::from_secs(2)))
    });
    assert_eq!(kept.header("connection"), Some("keep-alive"));
    assert!(kept.header("content-length").is_some());
    assert!(plain.body == b"hello world");
    assert_eq!(plain.header("connection"), Some("close"));
    assert!(closed);
}

#[test]
fn a_later_response_without_length_on_http_1_0_is_close_delimited() {
    let (resp, closed) = with_server(SiteConfig::default(), |port| {
        let (mut s, mut r) = connect(port);
        s.write_all(b"GET /later HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        // Read the head, then the body up to the close (with a deadline).
        r.get_ref()
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let resp = try_read_response(&mut r, false);
        (resp.map_err(|e| e.kind()), true)
    });
    let resp = resp.expect("the body ends with the close");
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(resp.header("content-length").is_none());
    assert!(resp.header("transfer-encoding").is_none());
    assert_eq!(resp.body, b"part one part two");
    assert!(closed);
}

/// The requests queued behind a close-delimited response are told they were dropped.
#[test]
fn requests_queued_behind_a_close_delimited_response_are_told_they_were_dropped() {
    with_server(SiteConfig::default(), |port| {
        let (mut s, mut r) = connect(port);
        s.write_all(
            b"GET /later?t=0.1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /slow?t=0.5 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        )
        .unwrap();
        let _ = read_response(&mut r, false);
        thread::sleep(Duration::from_millis(800));
    });
    let ev = events();
    assert!(ev.contains(&"/later?t=0.1 finished".to_string()), "{ev:?}");
    // The second was rendered; it must hear that its client is gone.
    assert!(
        ev.contains(&"/slow?t=0.5 disconnected".to_string()),
        "{ev:?}"
    );
}

#[test]
fn no_content_and_not_modified_have_no_body_and_keep_the_connection() {
    let (rs, next) = with_server(SiteConfig::default(), |port| {
        let (mut s, mut r) = connect(port);
        let mut rs = Vec::new();
        for q in [
            "code=204",
            "code=304",
            "code=204&later=1",
            "code=304&later=1",
        ] {
            s.write_all(format!("GET /code?{q} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .unwrap();
            rs.push(read_response(&mut r, false));
        }
        s.write_all(GET).unwrap();
        (rs, read_response(&mut r, false))
    });
    for r in &rs {
        assert!(r.header("transfer-encoding").is_none(), "{r:?}");
        assert!(r.header("content-length").is_none(), "{r:?}");
        assert!(r.header("connection").is_none(), "{r:?}");
    }
    assert_eq!(
        next.body, b"hello world",
        "the bytes after the 204/304 are the next response"
    );
}

// ---- 3. HEAD ----

#[test]
fn head_of_a_later_resource_has_no_body_and_no_chunk_framing() {
    let (head, next) = with_server(SiteConfig::default(), |port| {
        let (mut s, mut r) = connect(port);
        s.write_all(b"HEAD /later HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        s.write_all(GET).unwrap();
        (read_response(&mut r, true), read_response(&mut r, false))
    });
    assert_eq!(head.status, 200);
    assert!(head.header("transfer-encoding").is_none());
    assert_eq!(next.body, b"hello world");
}

#[test]
fn a_transfer_encoding_set_by_the_resource_is_not_sent_twice() {
    let (answer, next) = with_server(SiteConfig::default(), |port| {
        let (mut s, mut r) = connect(port);
        s.write_all(b"GET /own-chunked HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let answer = read_response(&mut r, false);
        s.write_all(GET).unwrap();
        (answer, read_response(&mut r, false))
    });
    let encodings: Vec<&str> = answer
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(encodings, ["chunked"]);
    assert_eq!(answer.body, b"own chunks");
    assert_eq!(next.body, b"hello world");
}

#[test]
fn head_of_a_body_resource_has_the_get_length() {
    let (head, get) = with_server(SiteConfig::default(), |port| {
        let (mut s, mut r) = connect(port);
        s.write_all(b"HEAD /echo?x=abcdef HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let head = read_response(&mut r, true);
        s.write_all(b"GET /echo?x=abcdef HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        (head, read_response(&mut r, false))
    });
    assert_eq!(head.header("content-length"), Some("6"));
    assert_eq!(get.body, b"abcdef");
}

// ---- 4. Timeouts ----

#[test]
fn an_idle_kept_alive_connection_closes_after_the_idle_timeout() {
    let config = SiteConfig {
        idle_timeout: Some(Duration::from_millis(300)),
        ..SiteConfig::default()
    };
    let (elapsed, closed) = with_server(config, |port| {
        let (mut s, mut r) = connect(port);
        s.write_all(GET).unwrap();
        read_response(&mut r, false);
        let t = Instant::now();
        let closed = closed_within(&mut r, Duration::from_secs(3));
        (t.elapsed(), closed)
    });
    assert!(closed);
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_millis(1500),
        "{elapsed:?}"
    );
}

#[test]
fn a_trickled_head_gets_408_from_its_first_byte() {
    let config = SiteConfig {
        head_timeout: Some(Duration::from_millis(600)),
        ..SiteConfig::default()
    };
    let (status, elapsed) = with_server(config, |port| {
        let (s, mut r) = connect(port);
        let t = Instant::now();
        let s2 = s.try_clone().unwrap();
        let trickle = thread::spawn(move || {
            let mut s2 = s2;
            for b in GET.iter() {
                if s2.write_all(&[*b]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        let status = read_response(&mut r, false).status;
        let elapsed = t.elapsed();
        let _ = s.shutdown(std::net::Shutdown::Both);
        let _ = trickle.join();
        (status, elapsed)
    });
    assert_eq!(status, 408);
    assert!(elapsed < Duration::from_millis(1200), "{elapsed:?}");
}

#[test]
fn a_stalled_body_gets_408() {
    let config = SiteConfig {
        body_timeout: Some(Duration::from_millis(300)),
        ..SiteConfig::default()
    };
    let (status, closed) = with_server(config, |port| {
        let (mut s, mut r) = connect(port);
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            .unwrap();
        let status = read_response(&mut r, false).status;
        (status, closed_within(&mut r, Duration::from_secs(2)))
    });
    assert_eq!(status, 408);
    assert!(closed);
}

#[test]
fn a_resource_slower_than_every_timeout_is_not_cut() {
    let config = SiteConfig {
        head_timeout: Some(Duration::from_millis(200)),
        body_timeout: Some(Duration::from_millis(200)),
        idle_timeout: Some(Duration::from_millis(200)),
        ..SiteConfig::default()
    };
    let (a, b) = with_server(config, |port| {
        let (mut s, mut r) = connect(port);
        s.write_all(b"GET /slow?t=0.8 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let a = read_response(&mut r, false);
        s.write_all(b"GET /later?t=0.8 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        (a, read_response(&mut r, false))
    });
    assert_eq!(a.body, b"slow");
    assert_eq!(b.body, b"part one part two");
}

// ---- 5. Errors in resources ----

#[test]
fn a_panic_in_render_is_500_and_the_connection_survives() {
    let (a, b, c) = with_server(SiteConfig::default(), |port| {
        let (mut s, mut r) = connect(port);
        s.write_all(b"GET /panics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let a = read_response(&mut r, false);
        s.write_all(b"GET /fails HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let b = read_response(&mut r, false);
        s.write_all(GET).unwrap();
        (a, b, read_response(&mut r, false))
    });
    assert_eq!(a.status, 500);
    assert_eq!(b.status, 500);
    assert_eq!(c.body, b"hello world");
}

/// The 500 after a panic does not carry the headers the resource set for its own answer.
#[test]
fn a_500_does_not_keep_the_length_and_type_the_resource_had_set() {
    let (a, b) = with_server(SiteConfig::default(), |port| {
        let (mut s, mut r) = connect(port);
        s.write_all(b"GET /panics?with_length=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let a = read_response(&mut r, false);
        s.write_all(GET).unwrap();
        (a, read_response(&mut r, false))
    });
    assert_eq!(a.status, 500);
    assert_eq!(a.body, b"500 Internal Server Error\n");
    assert_eq!(a.header("content-length"), Some("26"));
    assert_eq!(a.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(b.body, b"hello world");
}

/// A panic after the first write does not end the chunked body with its last chunk.
#[test]
fn a_panic_after_the_head_is_written_does_not_end_the_chunked_body_cleanly() {
    let raw = with_server(SiteConfig::default(), |port| {
        let (mut s, mut r) = connect(port);
        s.write_all(b"GET /panics?after_write=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        r.get_ref()
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut raw = Vec::new();
        let _ = r.read_to_end(&mut raw);
        raw
    });
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("partial"), "{text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "a truncated response must not look complete: {text:?}"
    );
}

#[test]
fn write_and_finish_inside_render_a_sync_deferred_and_bad_headers_do_not_panic() {
    let (a, b) = with_server(SiteConfig::default(), |port| {
        let (mut s, mut r) = connect(port);
        s.write_all(b"GET /inline HTTP/1.1\r\nHost: x\r\n\r\nGET /inline?sync=1 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        (read_response(&mut r, false), read_response(&mut r, false))
    });
    assert_eq!(a.body, b"inline ");
    assert_eq!(a.header("x-good"), Some("yes"));
    assert!(a.header("x-bad-value").is_none());
    assert_eq!(b.body, b"sync deferred");
    assert_eq!(events(), ["inline late write Err(Finished)"]);
}

#[test]
fn writing_after_finish_is_finished_and_after_a_disconnect_is_disconnected() {
    with_server(SiteConfig::default(), |port| {
        let (mut s, mut r) = connect(port);
        s.write_all(b"GET /later?t=0.01 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        read_response(&mut r, false);
        s.write_all(b"GET /later?t=0.3 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        thread::sleep(Duration::from_millis(50));
        drop((s, r));
        thread::sleep(Duration::from_millis(500));
    });
    let ev = events();
    assert!(
        ev.contains(
            &"/later?t=0.01 write Ok(()) Ok(()) finish Ok(()) late Err(Finished) Err(Finished)"
                .to_string()
        ),
        "{ev:?}"
    );
    assert!(ev.contains(&"/later?t=0.3 write Err(Disconnected) Err(Disconnected) finish Err(Disconnected) late Err(Disconnected) Err(Disconnected)".to_string()), "{ev:?}");
    let _ = RequestDone::Finished;
}

// ---- 6. Expect: 100-continue ----

#[test]
fn expect_100_continue_is_not_sent_when_the_body_came_with_the_head() {
    let first = with_server(SiteConfig::default(), |port| {
        let (mut s, mut r) = connect(port);
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\nbody").unwrap();
        read_response(&mut r, false)
    });
    assert_eq!(first.status, 200);
    assert_eq!(first.body, b"body");
}

#[test]
fn expect_100_continue_is_not_sent_for_http_1_0_nor_for_a_refused_body() {
    let config = SiteConfig {
        max_body: 10,
        ..SiteConfig::default()
    };
    let (a, b) = with_server(config, |port| {
        let (mut s, mut r) = connect(port);
        s.write_all(b"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n").unwrap();
        r.get_ref()
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 1];
        let a = r.read(&mut buf).map_err(|e| e.kind());
        let (mut s, mut r) = connect(port);
        s.write_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
        (a, read_response(&mut r, false).status)
    });
    assert!(a.is_err(), "nothing is sent to an HTTP/1.0 client: {a:?}");
    assert_eq!(b, 413);
}

/// The 100 of a request queued behind another is sent once it reaches the front.
#[test]
fn expect_100_continue_is_sent_once_the_request_reaches_the_front() {
    let (first, interim) = with_server(SiteConfig::default(), |port| {
        let (mut s, mut r) = connect(port);
        s.write_all(b"GET /slow?t=0.2 HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n").unwrap();
        let first = read_response(&mut r, false);
        r.get_ref()
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let interim = try_read_response(&mut r, false)
            .map(|r| r.status)
            .map_err(|e| e.kind());
        (first, interim)
    });
    assert_eq!(first.body, b"slow");
    assert_eq!(interim, Ok(100));
}

// ---- 8. Bounded memory ----

/// While a closing request is answered, what the client sends is dropped, then no longer read.
#[test]
fn input_is_not_read_without_bound_while_a_closing_request_is_answered() {
    let written = with_server(SiteConfig::default(), |port| {
        let (mut s, _r) = connect(port);
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(b"GET /slow?t=5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let chunk = vec![b'a'; 1 << 20];
        let mut written = 0usize;
        for _ in 0..200 {
            if s.write_all(&chunk).is_err() {
                break;
            }
            written += chunk.len();
        }
        written
    });
    // Socket buffers hold a few MiB at most; the server should not take 200 MiB.
    assert!(written < 32 << 20, "the server took {} MiB", written >> 20);
}

/// The output queued for a client that never reads is bounded.
#[test]
fn responses_to_a_client_that_never_reads_are_bounded() {
    with_server(SiteConfig::default(), |port| {
        let (mut s, _r) = connect(port);
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let req = b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n";
        for _ in 0..2000 {
            if s.write_all(req).is_err() {
                break;
            }
        }
        thread::sleep(Duration::from_secs(2));
    });
    let renders = RENDERS.with(|r| *r.borrow());
    // 64 KiB each: 2000 renders is 125 MiB held for a client that reads nothing.
    assert!(
        renders < 500,
        "{renders} responses of 64 KiB rendered for a client that reads nothing"
    );
}

// ---- 7. Real clients ----

fn run(cmd: &str, args: &[&str]) -> Option<std::process::Output> {
    match std::process::Command::new(cmd).args(args).output() {
        Ok(o) => Some(o),
        Err(_) => {
            assert!(
                std::env::var_os("TORSION_REQUIRE_INTEROP").is_none(),
                "{cmd} is required (TORSION_REQUIRE_INTEROP is set): install it"
            );
            eprintln!("skipped: {cmd} is not installed");
            None
        }
    }
}

const PY_CLIENT: &str = r#"
import http.client, sys
port = int(sys.argv[1])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
out = []
socks = set()
for path in ["/hello", "/echo?x=py", "/later", "/code?code=204", "/slow?t=0.05", "/hello"]:
    c.request("GET", path)
    r = c.getresponse()
    out.append("%s %d %r" % (path, r.status, r.read()))
    socks.add(id(c.sock))
c.request("HEAD", "/later")
r = c.getresponse()
out.append("HEAD %d %r te=%s" % (r.status, r.read(), r.getheader("transfer-encoding")))
socks.add(id(c.sock))
def gen():
    yield b"chunk one, "
    yield b"chunk two"
c.request("POST", "/echo", body=gen(), encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
r = c.getresponse()
out.append("POST %d %r" % (r.status, r.read()))
socks.add(id(c.sock))
out.append("sockets %d" % len(socks))
print("\n".join(out))
"#;

#[test]
fn python_http_client_keeps_one_connection_and_posts_chunked() {
    let Some(out) = with_server(SiteConfig::default(), |port| {
        run("python3", &["-c", PY_CLIENT, &port.to_string()])
    }) else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = "/hello 200 b'hello world'\n/echo?x=py 200 b'py'\n/later 200 b'part one part two'\n/code?code=204 204 b''\n/slow?t=0.05 200 b'slow'\n/hello 200 b'hello world'\nHEAD 200 b'' te=None\nPOST 200 b'chunk one, chunk two'\nsockets 1\n";
    assert_eq!(text, want);
}

const PY_BIG_POST: &str = r#"
import http.client, sys
port = int(sys.argv[1])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
try:
    c.request("POST", "/echo", body=b"x" * (8 << 20))
    r = c.getresponse()
    print("status", r.status)
except Exception as e:
    print("error", type(e).__name__, e)
"#;

/// A body over max_body sent without Expect (what http.client, requests, … do): the 413
/// is written and the socket closed while the body is still arriving, so the kernel
/// answers the unread data with a reset and the client may see a reset instead of 413.
#[test]
fn a_client_sending_a_body_over_the_limit_without_expect_sees_413() {
    let config = SiteConfig {
        max_body: 1 << 20,
        ..SiteConfig::default()
    };
    let Some(out) = with_server(config, |port| {
        run("python3", &["-c", PY_BIG_POST, &port.to_string()])
    }) else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        "status 413",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn curl_http_1_0_head_and_expect() {
    let Some((h10, head, expect, later10)) = with_server(SiteConfig::default(), |port| {
        let base = format!("http://127.0.0.1:{port}");
        let h10 = run(
            "curl",
            &[
                "-sv",
                "--http1.0",
                &format!("{base}/hello"),
                &format!("{base}/echo?x=2"),
            ],
        )?;
        let head = run("curl", &["-sI", &format!("{base}/later")])?;
        let big = "y".repeat(2 << 20);
        let path = std::env::temp_dir().join(format!("torsion-review-{port}"));
        std::fs::write(&path, &big).unwrap();
        let expect = run(
            "curl",
            &[
                "-sv",
                "--data-binary",
                &format!("@{}", path.display()),
                &format!("{base}/echo"),
                "-o",
                "/dev/null",
                "-w",
                "%{size_download} %{time_total}",
            ],
        )?;
        let later10 = run(
            "curl",
            &[
                "-sv",
                "--http1.0",
                "-H",
                "Connection: keep-alive",
                &format!("{base}/later"),
            ],
        )?;
        let _ = std::fs::remove_file(path);
        Some((h10, head, expect, later10))
    }) else {
        return;
    };
    assert_eq!(String::from_utf8_lossy(&h10.stdout), "hello world2");
    let head_text = String::from_utf8_lossy(&head.stdout).to_lowercase();
    assert!(head_text.starts_with("http/1.1 200"), "{head_text}");
    assert!(!head_text.contains("transfer-encoding"), "{head_text}");
    let verbose = String::from_utf8_lossy(&expect.stderr);
    assert!(verbose.contains("100 Continue"), "{verbose}");
    assert!(String::from_utf8_lossy(&expect.stdout).starts_with(&(2 << 20).to_string()));
    assert_eq!(
        String::from_utf8_lossy(&later10.stdout),
        "part one part two"
    );
}

const TWISTED_AGENT: &str = r#"
import sys
from io import BytesIO
from twisted.internet import reactor, defer
from twisted.web.client import Agent, readBody, FileBodyProducer, HTTPConnectionPool
from twisted.web.http_headers import Headers
port = int(sys.argv[1])
pool = HTTPConnectionPool(reactor, persistent=True)
agent = Agent(reactor, pool=pool)
out = []
@defer.inlineCallbacks
def main():
    try:
        base = ("http://127.0.0.1:%d" % port).encode()
        r = yield agent.request(b"GET", base + b"/later")
        out.append("GET %d %r" % (r.code, (yield readBody(r))))
        r = yield agent.request(b"POST", base + b"/echo", Headers({}), FileBodyProducer(BytesIO(b"posted by agent")))
        out.append("POST %d %r" % (r.code, (yield readBody(r))))
        r = yield agent.request(b"HEAD", base + b"/later")
        out.append("HEAD %d %r" % (r.code, (yield readBody(r))))
        r = yield agent.request(b"GET", base + b"/hello")
        out.append("GET %d %r" % (r.code, (yield readBody(r))))
    except Exception as e:
        out.append("error %r" % (e,))
    yield pool.closeCachedConnections()
    reactor.stop()
reactor.callWhenRunning(main)
reactor.callLater(10, reactor.stop)
reactor.run()
print("\n".join(out))
"#;

#[test]
fn twisted_agent_gets_and_posts() {
    // The Python with Twisted that .ci/run installs, or a local venv.
    let python = std::env::var("TORSION_INTEROP_PYTHON")
        .unwrap_or_else(|_| "/work/venv-twisted/bin/python".to_string());
    if !std::path::Path::new(&python).exists() {
        assert!(
            std::env::var_os("TORSION_REQUIRE_INTEROP").is_none(),
            "a Python with Twisted is required (TORSION_REQUIRE_INTEROP is set)"
        );
        eprintln!("skipped: no Python with Twisted (set TORSION_INTEROP_PYTHON)");
        return;
    }
    let out = with_server(SiteConfig::default(), move |port| {
        run(&python, &["-c", TWISTED_AGENT, &port.to_string()]).unwrap()
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text,
        "GET 200 b'part one part two'\nPOST 200 b'posted by agent'\nHEAD 200 b''\nGET 200 b'hello world'\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A stray CRLF after a body (RFC 9112 §2.2 says servers should ignore it) sits in the
/// input, so the idle connection gets an unsolicited 408 at the head timeout instead of
/// the idle close.
#[test]
fn a_stray_crlf_after_a_request_does_not_produce_an_unsolicited_408() {
    let config = SiteConfig {
        head_timeout: Some(Duration::from_millis(300)),
        idle_timeout: Some(Duration::from_millis(1500)),
        ..SiteConfig::default()
    };
    let (first, next) = with_server(config, |port| {
        let (mut s, mut r) = connect(port);
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok\r\n")
            .unwrap();
        let first = read_response(&mut r, false);
        r.get_ref()
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let next = try_read_response(&mut r, false)
            .map(|r| r.status)
            .map_err(|e| e.kind());
        (first, next)
    });
    assert_eq!(first.body, b"ok");
    assert_eq!(
        next,
        Err(std::io::ErrorKind::UnexpectedEof),
        "the idle close, not a response"
    );
}
