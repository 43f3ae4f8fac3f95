//! Shared by the client tests: a site on loopback (plain or TLS) in the test's own
//! reactor, running the reactor until a Deferred fires, and the resources the tests
//! request.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use http::Method;
use torsion::net::tcp::ListenOptions;
use torsion::time::ReactorTime;
use torsion::tls::{Identity, Roots, ServerConfig};
use torsion::{Deferred, Failure, Reactor};
use torsion_web::{Node, Render, Request, Resource, Site};

pub fn local() -> ListenOptions {
    ListenOptions {
        interface: [127, 0, 0, 1].into(),
        ..Default::default()
    }
}

/// Serves `root` on 127.0.0.1; its port.
pub fn serve(reactor: &Reactor, root: Rc<dyn Resource>) -> u16 {
    reactor
        .listen_tcp_with(0, Site::new(root), local())
        .unwrap()
        .host()
        .port()
        .unwrap()
}

/// A self-signed identity for `localhost`, and the roots that trust it.
pub fn self_signed() -> (Identity, Roots) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let identity = Identity::from_pem(&made.cert.pem(), &made.signing_key.serialize_pem()).unwrap();
    let mut roots = Roots::new();
    roots.add(made.cert.der().clone()).unwrap();
    (identity, roots)
}

/// Serves `root` over TLS with `identity` on 127.0.0.1; its port.
pub fn serve_tls(reactor: &Reactor, root: Rc<dyn Resource>, identity: Identity) -> u16 {
    reactor
        .listen_tls_with(
            0,
            Site::new(root),
            &ServerConfig::new(identity).unwrap(),
            local(),
        )
        .unwrap()
        .host()
        .port()
        .unwrap()
}

/// Runs the reactor until `d` fires (10 s at most) and returns its outcome (for a test
/// with one request: a reactor runs once).
pub fn wait<T: 'static>(reactor: &Reactor, d: Deferred<T>) -> Result<T, Failure> {
    let out: Rc<RefCell<Option<Result<T, Failure>>>> = Rc::default();
    let (o, r) = (out.clone(), reactor.clone());
    drop(d.add_both(move |result: Result<T, Failure>| {
        *o.borrow_mut() = Some(result);
        let _ = r.stop();
        Ok::<(), Failure>(())
    }));
    if out.borrow().is_none() {
        let r = reactor.clone();
        let guard = reactor.call_later(10.0, move || {
            let _ = r.stop();
        });
        reactor.run().unwrap();
        let _ = guard.cancel();
    }
    out.borrow_mut()
        .take()
        .expect("the request did not finish within 10 s")
}

/// Runs the test `body` on a fresh reactor (20 s at most; its failure or panic fails the
/// test), then checks that no request left its timeout behind.
pub fn run<F, Fut>(body: F)
where
    F: FnOnce(Reactor) -> Fut + 'static,
    Fut: Future<Output = Result<(), Failure>> + 'static,
{
    let reactor = Reactor::new().unwrap();
    let out: Rc<RefCell<Option<Result<(), Failure>>>> = Rc::default();
    let (o, r) = (out.clone(), reactor.clone());
    reactor.call_when_running(move || {
        let test = torsion::spawn(body(r.clone()));
        drop(test.add_both(move |result: Result<(), Failure>| {
            *o.borrow_mut() = Some(result);
            let _ = r.stop();
            Ok::<(), Failure>(())
        }));
    });
    let r = reactor.clone();
    let guard = reactor.call_later(20.0, move || {
        let _ = r.stop();
    });
    reactor.run().unwrap();
    let _ = guard.cancel();
    match out.borrow_mut().take() {
        Some(Ok(())) => {}
        Some(Err(failure)) => panic!("the test failed: {failure:#}"),
        None => panic!("the test did not finish within 20 s"),
    }
    let timers: Vec<String> = reactor
        .delayed_calls()
        .into_iter()
        .map(|c| c.location.to_string())
        .filter(|l| l.contains("agent/mod.rs"))
        .collect();
    assert!(
        timers.is_empty(),
        "request timeouts left behind: {timers:?}"
    );
}

/// Waits `time` on `reactor`.
pub async fn sleep(reactor: &Reactor, time: Duration) {
    let _ = torsion::task::sleep(reactor, time).await;
}

/// `hello world`.
pub struct Hello;

impl Resource for Hello {
    fn render_get(&self, _request: &Rc<Request>) -> Render {
        Render::text("hello world")
    }
}

/// Answers with the body it was sent.
pub struct Echo;

impl Resource for Echo {
    fn allowed_methods(&self) -> Vec<Method> {
        vec![Method::POST, Method::PUT]
    }
    fn render_post(&self, request: &Rc<Request>) -> Render {
        let framing = if request.header("transfer-encoding").is_some() {
            "chunked"
        } else {
            "length"
        };
        request.set_header("X-Framing", framing);
        Render::Body(request.content().to_vec())
    }
    fn render_put(&self, request: &Rc<Request>) -> Render {
        self.render_post(request)
    }
}

/// Written in parts, later: chunked.
pub struct Parts;

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

/// Answers with the client's port, so a test can tell connections apart; counts its
/// requests.
#[derive(Default)]
pub struct ClientPort {
    pub requests: Cell<usize>,
}

impl Resource for ClientPort {
    fn allowed_methods(&self) -> Vec<Method> {
        vec![Method::GET, Method::HEAD, Method::POST]
    }
    fn render_get(&self, request: &Rc<Request>) -> Render {
        self.requests.set(self.requests.get() + 1);
        Render::text(request.client().port().unwrap_or(0).to_string())
    }
    fn render_post(&self, request: &Rc<Request>) -> Render {
        self.render_get(request)
    }
}

/// Answers after `?t=` seconds, with the client's port.
pub struct Slow;

impl Resource for Slow {
    fn render_get(&self, request: &Rc<Request>) -> Render {
        let t: f64 = request.arg("t").and_then(|t| t.parse().ok()).unwrap_or(0.1);
        let request = request.clone();
        Reactor::current().unwrap().call_later(t, move || {
            let port = request.client().port().unwrap_or(0).to_string();
            let _ = request.write(port.as_bytes());
            let _ = request.finish();
        });
        Render::Later
    }
}

/// The site most tests use: `/hello`, `/echo`, `/parts`, `/port`, `/slow`.
pub fn site_root() -> Rc<Node> {
    let root = Node::new();
    root.put_child("hello", Rc::new(Hello));
    root.put_child("echo", Rc::new(Echo));
    root.put_child("parts", Rc::new(Parts));
    root.put_child("port", Rc::new(ClientPort::default()));
    root.put_child("slow", Rc::new(Slow));
    Rc::new(root)
}
