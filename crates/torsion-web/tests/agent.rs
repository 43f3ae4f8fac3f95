//! The HTTP client against real servers over loopback (Twisted's
//! `twisted.web.test.test_agent`): torsion's own server (plain and HTTPS, fixed, chunked
//! and error responses), Python's `http.server`, a server that never answers, and bad
//! URLs.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use http::{HeaderMap, Method};
use torsion::net::tcp::ListenOptions;
use torsion::protocol::Protocol;
use torsion::time::ReactorTime;
use torsion::tls::{ClientConfig, Identity, Roots, ServerConfig};
use torsion::{Deferred, Failure, Reactor};
use torsion_web::{Agent, AgentError, Node, Render, Request, Resource, Response, Site, get_page};

struct Hello;

impl Resource for Hello {
    fn render_get(&self, _request: &Rc<Request>) -> Render {
        Render::text("hello world")
    }
}

struct Echo;

impl Resource for Echo {
    fn allowed_methods(&self) -> Vec<Method> {
        vec![Method::POST]
    }
    fn render_post(&self, request: &Rc<Request>) -> Render {
        Render::Body(request.content().to_vec())
    }
}

/// Written in parts, later: chunked.
struct Parts;

impl Resource for Parts {
    fn render_get(&self, request: &Rc<Request>) -> Render {
        let request = request.clone();
        Reactor::current().unwrap().call_later(0.01, move || {
            let _ = request.write(b"one ");
            let _ = request.write(b"two");
            let _ = request.finish();
        });
        Render::Later
    }
}

fn site() -> Rc<Site> {
    let root = Node::new();
    root.put_child("hello", Rc::new(Hello));
    root.put_child("echo", Rc::new(Echo));
    root.put_child("parts", Rc::new(Parts));
    Site::new(Rc::new(root))
}

fn local() -> ListenOptions {
    ListenOptions {
        interface: [127, 0, 0, 1].into(),
        ..Default::default()
    }
}

/// Serves the test site on 127.0.0.1; its port.
fn serve(reactor: &Reactor) -> u16 {
    reactor
        .listen_tcp_with(0, site(), local())
        .unwrap()
        .host()
        .port()
        .unwrap()
}

/// A self-signed identity for `localhost`, and the roots that trust it.
fn self_signed() -> (Identity, Roots) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let identity = Identity::from_pem(&made.cert.pem(), &made.signing_key.serialize_pem()).unwrap();
    let mut roots = Roots::new();
    roots.add(made.cert.der().clone()).unwrap();
    (identity, roots)
}

/// Serves the test site over TLS with `identity` on 127.0.0.1; its port.
fn serve_tls(reactor: &Reactor, identity: Identity) -> u16 {
    reactor
        .listen_tls_with(0, site(), &ServerConfig::new(identity).unwrap(), local())
        .unwrap()
        .host()
        .port()
        .unwrap()
}

/// Runs the reactor until `d` fires (10 s at most) and returns its outcome.
fn wait<T: 'static>(reactor: &Reactor, d: Deferred<T>) -> Result<T, Failure> {
    let out: Rc<RefCell<Option<Result<T, Failure>>>> = Rc::default();
    let (o, r) = (out.clone(), reactor.clone());
    drop(d.add_both(move |result: Result<T, Failure>| {
        *o.borrow_mut() = Some(result);
        let _ = r.stop();
        Ok::<(), Failure>(())
    }));
    let r = reactor.clone();
    reactor.call_later(10.0, move || {
        let _ = r.stop();
    });
    reactor.run().unwrap();
    out.borrow_mut()
        .take()
        .expect("the request did not finish within 10 s")
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
    let posted = agent.request(
        Method::POST,
        &format!("http://127.0.0.1:{port}/echo"),
        HeaderMap::new(),
        Some(b"sent".to_vec()),
    );
    let echoed: Response = wait(&reactor, posted).unwrap();
    assert_eq!(echoed.status, 200);
    assert_eq!(echoed.body, b"sent");
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
    let port = serve_tls(&reactor, identity);
    let trusting = Agent::new(&reactor).tls(ClientConfig::builder().roots(roots).build().unwrap());
    let url = format!("https://localhost:{port}/hello");
    let page = wait(
        &reactor,
        trusting.request(Method::GET, &url, HeaderMap::new(), None),
    )
    .unwrap();
    assert_eq!(page.body, b"hello world");
    // The roots of another authority: refused.
    let (identity, _) = self_signed();
    let (_, other_roots) = self_signed();
    let reactor = Reactor::new().unwrap();
    let port = serve_tls(&reactor, identity);
    let wary =
        Agent::new(&reactor).tls(ClientConfig::builder().roots(other_roots).build().unwrap());
    let url = format!("https://localhost:{port}/hello");
    let failure = wait(
        &reactor,
        wary.request(Method::GET, &url, HeaderMap::new(), None),
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
            None,
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
}
