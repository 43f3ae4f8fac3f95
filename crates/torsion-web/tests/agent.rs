//! The HTTP client against real servers over loopback (Twisted's
//! `twisted.web.test.test_agent`): torsion's own server (plain and HTTPS, fixed, chunked
//! and error responses), Python's `http.server` (HTTP/1.0, and HTTP/1.1 with keep-alive),
//! a server that never answers, and bad URLs.

use std::rc::Rc;
use std::time::Duration;

use http::{HeaderMap, Method};
use torsion::Reactor;
use torsion::protocol::Protocol;
use torsion::tls::ClientConfig;
use torsion_web::agent::{Agent, AgentError, Body, HttpClient, Response};
use torsion_web::get_page;

mod common;
use common::agent::{local, self_signed, serve_tls, site_root, wait};

/// Serves the test site on 127.0.0.1; its port.
fn serve(reactor: &Reactor) -> u16 {
    common::agent::serve(reactor, site_root())
}

#[test]
fn get_page_fetches_a_page_from_torsions_server() {
    let reactor = Reactor::new().unwrap();
    let port = serve(&reactor);
    let body = wait(
        &reactor,
        get_page(&reactor, &format!("http://127.0.0.1:{port}/hello")),
    )
    .unwrap();
    assert_eq!(body, b"hello world");
}

#[test]
fn a_post_body_is_sent_and_a_chunked_response_assembled() {
    let reactor = Reactor::new().unwrap();
    let port = serve(&reactor);
    let agent = Agent::new(&reactor);
    let posted = agent.fetch(
        Method::POST,
        &format!("http://127.0.0.1:{port}/echo"),
        HeaderMap::new(),
        Body::from("sent"),
    );
    let (echoed, body): (Response, Vec<u8>) = wait(&reactor, posted).unwrap();
    assert_eq!(echoed.status, 200);
    assert_eq!(body, b"sent");
    let reactor = Reactor::new().unwrap();
    let port = serve(&reactor);
    let parts = wait(
        &reactor,
        get_page(&reactor, &format!("http://127.0.0.1:{port}/parts")),
    )
    .unwrap();
    assert_eq!(parts, b"one two");
}

#[test]
fn get_page_fails_on_an_error_status() {
    let reactor = Reactor::new().unwrap();
    let port = serve(&reactor);
    let failure = wait(
        &reactor,
        get_page(&reactor, &format!("http://127.0.0.1:{port}/nowhere")),
    )
    .unwrap_err();
    assert_eq!(
        failure.downcast_ref::<AgentError>(),
        Some(&AgentError::Status(http::StatusCode::NOT_FOUND))
    );
}

#[test]
fn https_is_verified_against_the_given_roots() {
    let (identity, roots) = self_signed();
    let reactor = Reactor::new().unwrap();
    let port = serve_tls(&reactor, site_root(), identity);
    let trusting = Agent::new(&reactor).tls(ClientConfig::builder().roots(roots).build().unwrap());
    let url = format!("https://localhost:{port}/hello");
    let (_, page) = wait(
        &reactor,
        trusting.fetch(Method::GET, &url, HeaderMap::new(), Body::Empty),
    )
    .unwrap();
    assert_eq!(page, b"hello world");
    // The roots of another authority: refused.
    let (identity, _) = self_signed();
    let (_, other_roots) = self_signed();
    let reactor = Reactor::new().unwrap();
    let port = serve_tls(&reactor, site_root(), identity);
    let wary =
        Agent::new(&reactor).tls(ClientConfig::builder().roots(other_roots).build().unwrap());
    let url = format!("https://localhost:{port}/hello");
    let failure = wait(
        &reactor,
        wary.request(Method::GET, &url, HeaderMap::new(), Body::Empty),
    )
    .unwrap_err();
    assert!(failure.check::<torsion::tls::TlsError>(), "{failure}");
}

#[test]
fn a_close_delimited_response_from_python_http_server() {
    let dir = std::env::temp_dir().join(format!("torsion-agent-py-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("page.txt"), "from python").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let child = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("skipped: python3 is not installed");
        return;
    };
    // Wait for it to listen.
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "python's http.server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let reactor = Reactor::new().unwrap();
    let page = wait(
        &reactor,
        get_page(&reactor, &format!("http://127.0.0.1:{port}/page.txt")),
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(page.unwrap(), b"from python");
}

/// Accepts and says nothing.
struct Silent;
impl Protocol for Silent {}

#[test]
fn a_server_that_never_answers_times_out() {
    let reactor = Reactor::new().unwrap();
    let port = reactor
        .listen_tcp_with(0, Rc::new(|| Silent), local())
        .unwrap()
        .host()
        .port()
        .unwrap();
    let agent = Agent::new(&reactor).timeout(Some(Duration::from_millis(200)));
    let failure = wait(
        &reactor,
        agent.request(
            Method::GET,
            &format!("http://127.0.0.1:{port}/"),
            HeaderMap::new(),
            Body::Empty,
        ),
    )
    .unwrap_err();
    assert_eq!(
        failure.downcast_ref::<AgentError>(),
        Some(&AgentError::Timeout(Duration::from_millis(200)))
    );
}

#[test]
fn urls_that_cannot_be_requested_fail_at_once() {
    let reactor = Reactor::new().unwrap();
    let mut d = get_page(&reactor, "gopher://example.com/");
    let failure = d.take_result().unwrap().unwrap_err();
    assert!(
        matches!(
            failure.downcast_ref::<AgentError>(),
            Some(AgentError::InvalidUrl(_))
        ),
        "{failure}"
    );
    // The authority goes into the Host header as written: no line breaks, spaces or
    // control characters in it (they would add headers of the URL's choosing), and
    // nothing but a port after an IPv6 host.
    let agent = Agent::new(&reactor);
    for url in [
        "http://[::1]\r\nX-Injected: yes/",
        "http://[::1]\nX-Injected: yes/",
        "http://[::1] x/",
        "http://[::1]x/",
        "http://exa\tmple.com/",
        "http://example.com\r\nX-Injected: yes/",
    ] {
        let mut d = agent.request(Method::GET, url, HeaderMap::new(), Body::Empty);
        let failure = d.take_result().expect(url).unwrap_err();
        assert!(
            matches!(
                failure.downcast_ref::<AgentError>(),
                Some(AgentError::InvalidUrl(_))
            ),
            "{url:?}: {failure}"
        );
    }
}

/// Python's `http.server` answering with the client's port, in HTTP/1.0 (its default:
/// one connection per request) or HTTP/1.1 (keep-alive); prints its port first.
const PY_PORT_SERVER: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = sys.argv[1]
    def do_GET(self):
        body = str(self.client_address[1]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// Runs `PY_PORT_SERVER` speaking `version`; the child and its port, or `None` without
/// python3.
fn python_port_server(version: &str) -> Option<(std::process::Child, u16)> {
    use std::io::BufRead;
    let child = std::process::Command::new("python3")
        .args(["-c", PY_PORT_SERVER, version])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn();
    let Ok(mut child) = child else {
        assert!(
            std::env::var_os("TORSION_REQUIRE_INTEROP").is_none(),
            "python3 is required (TORSION_REQUIRE_INTEROP is set)"
        );
        eprintln!("skipped: python3 is not installed");
        return None;
    };
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().unwrap();
    Some((child, port))
}

/// The ports the responses came from, and how many connections were kept.
type Seen = (Vec<String>, usize);

#[test]
fn python_http_server_keeps_http_1_1_connections_and_not_http_1_0_ones() {
    for (version, kept) in [("HTTP/1.1", true), ("HTTP/1.0", false)] {
        let Some((mut child, port)) = python_port_server(version) else {
            return;
        };
        let url = format!("http://127.0.0.1:{port}/");
        let seen: Rc<std::cell::RefCell<Option<Seen>>> = Rc::default();
        let out = seen.clone();
        common::agent::run(move |reactor| async move {
            let agent = Agent::new(&reactor);
            let mut ports = Vec::new();
            for _ in 0..3 {
                let (response, body) = agent
                    .fetch(Method::GET, &url, HeaderMap::new(), Body::Empty)
                    .await?;
                assert_eq!(response.status, 200);
                ports.push(String::from_utf8(body).unwrap());
            }
            let idle = agent.pool().idle_connections();
            agent.pool().close_cached_connections().await?;
            *out.borrow_mut() = Some((ports, idle));
            Ok(())
        });
        let _ = child.kill();
        let _ = child.wait();
        let (ports, idle) = seen.borrow_mut().take().unwrap();
        if kept {
            assert!(ports.iter().all(|p| *p == ports[0]), "{version}: {ports:?}");
            assert_eq!(idle, 1, "{version}");
        } else {
            assert!(
                ports[0] != ports[1] && ports[1] != ports[2],
                "{version}: {ports:?}"
            );
            assert_eq!(idle, 0, "{version}");
        }
    }
}
