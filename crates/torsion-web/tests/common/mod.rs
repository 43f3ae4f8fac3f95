//! Shared by the server tests: a site served on loopback while a blocking client runs on
//! another thread, and a small reader of raw responses.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::thread;
use std::time::Duration;

use torsion::Reactor;
use torsion::net::tcp::ListenOptions;
use torsion::time::ReactorTime;
use torsion_web::{Resource, Site, SiteConfig};

/// Serves `root` on 127.0.0.1 with `config`, runs `client` on a thread with the port, and
/// returns what it returns once it is done (30 s at most).
pub fn serve<T: Send + 'static>(
    root: Rc<dyn Resource>,
    config: SiteConfig,
    client: impl FnOnce(u16) -> T + Send + 'static,
) -> T {
    let reactor = Reactor::new().unwrap();
    let options = ListenOptions {
        interface: [127, 0, 0, 1].into(),
        ..Default::default()
    };
    let port = reactor
        .listen_tcp_with(0, Site::with_config(root, config), options)
        .unwrap()
        .host()
        .port()
        .unwrap();
    let handle = Rc::new(std::cell::RefCell::new(Some(thread::spawn(move || {
        client(port)
    }))));
    fn poll<T: Send + 'static>(
        reactor: Reactor,
        handle: Rc<std::cell::RefCell<Option<thread::JoinHandle<T>>>>,
    ) {
        if handle.borrow().as_ref().is_none_or(|h| h.is_finished()) {
            let _ = reactor.stop();
            return;
        }
        let r = reactor.clone();
        reactor.call_later(0.005, move || poll(r, handle));
    }
    let (r, h) = (reactor.clone(), handle.clone());
    reactor.call_soon(move || poll(r, h));
    let r = reactor.clone();
    reactor.call_later(30.0, move || {
        let _ = r.stop();
    });
    reactor.run().unwrap();
    let handle = handle.borrow_mut().take().unwrap();
    assert!(
        handle.is_finished(),
        "the client did not finish within 20 s"
    );
    handle.join().unwrap()
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The framing bytes of the body as received (chunk sizes included).
    pub raw_body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (`head`: the request was HEAD, so no body); an I/O error or an
/// early end is an error.
pub fn try_read_response(
    reader: &mut BufReader<TcpStream>,
    head: bool,
) -> std::io::Result<Response> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .split(' ')
        .nth(1)
        .unwrap_or_else(|| panic!("status line {line:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let mut r = Response {
        status,
        headers,
        body: Vec::new(),
        raw_body: Vec::new(),
    };
    if head || status / 100 == 1 || status == 204 || status == 304 {
        return Ok(r);
    }
    if let Some(length) = r.header("content-length") {
        let mut body = vec![0; length.parse().unwrap()];
        reader.read_exact(&mut body)?;
        r.raw_body = body.clone();
        r.body = body;
    } else if r.header("transfer-encoding") == Some("chunked") {
        loop {
            let mut size = String::new();
            if reader.read_line(&mut size)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            r.raw_body.extend_from_slice(size.as_bytes());
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk)?;
            r.raw_body.extend_from_slice(&chunk);
            if n == 0 {
                break;
            }
            r.body.extend_from_slice(&chunk[..n]);
        }
    } else {
        reader.read_to_end(&mut r.body)?;
        r.raw_body = r.body.clone();
    }
    Ok(r)
}

/// [`try_read_response`], which must succeed.
pub fn read_response(reader: &mut BufReader<TcpStream>, head: bool) -> Response {
    try_read_response(reader, head).unwrap()
}

/// A connection to the server and a reader of it (10 s read timeout).
pub fn connect(port: u16) -> (TcpStream, BufReader<TcpStream>) {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let reader = BufReader::new(stream.try_clone().unwrap());
    (stream, reader)
}

/// Sends `raw` and reads one response, then whether the server closed the connection.
pub fn exchange(port: u16, raw: &[u8]) -> (Response, bool) {
    let (mut stream, mut reader) = connect(port);
    stream.write_all(raw).unwrap();
    let response = read_response(&mut reader, raw.starts_with(b"HEAD"));
    let mut rest = Vec::new();
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let closed = reader.read_to_end(&mut rest).is_ok() && rest.is_empty();
    (response, closed)
}

/// Runs a peer program `cmd args` with `stdin` written to it, once it is started; `None`
/// if it cannot be started (the test is skipped, or fails when `TORSION_REQUIRE_INTEROP`
/// is set, as in `.ci/run`).
pub fn run_peer(cmd: &str, args: &[&str], stdin: &[u8]) -> Option<std::process::Output> {
    use std::process::{Command, Stdio};
    let child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(_) => {
            assert!(
                std::env::var_os("TORSION_REQUIRE_INTEROP").is_none(),
                "{cmd} is required (TORSION_REQUIRE_INTEROP is set): install it"
            );
            eprintln!("skipped: {cmd} is not installed");
            return None;
        }
    };
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let feeder = thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let output = child.wait_with_output().unwrap();
    let _ = feeder.join();
    Some(output)
}

/// The Python with Twisted: `TORSION_INTEROP_PYTHON` (set by `.ci/run`), or a local venv.
pub fn twisted_python() -> String {
    std::env::var("TORSION_INTEROP_PYTHON")
        .unwrap_or_else(|_| "/work/venv-twisted/bin/python".to_string())
}

pub mod agent;

/// `hello world` for GET, at any path below it.
pub struct Hello;

impl torsion_web::Resource for Hello {
    fn is_leaf(&self) -> bool {
        true
    }
    fn render_get(&self, _request: &Rc<torsion_web::Request>) -> torsion_web::Render {
        torsion_web::Render::text("hello world")
    }
}

/// Echoes the body of a POST, and the query's `x` for GET.
pub struct Echo;

impl torsion_web::Resource for Echo {
    fn allowed_methods(&self) -> Vec<http::Method> {
        vec![http::Method::GET, http::Method::HEAD, http::Method::POST]
    }
    fn render_get(&self, request: &Rc<torsion_web::Request>) -> torsion_web::Render {
        torsion_web::Render::text(request.arg("x").unwrap_or("none").to_string())
    }
    fn render_post(&self, request: &Rc<torsion_web::Request>) -> torsion_web::Render {
        torsion_web::Render::Body(request.content().to_vec())
    }
}
