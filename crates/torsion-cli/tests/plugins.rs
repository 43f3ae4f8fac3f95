//! The built-in plugins over real sockets on 127.0.0.1: each service is built through its
//! [`Plugin`] from a command line, started with `run_application` on a fresh reactor, and
//! talked to by plain `std::net::TcpStream` clients on a thread, while the reactor runs on
//! the test's thread. A safety timer stops the reactor and fails the test if the clients
//! take too long.

use std::cell::{Cell, RefCell};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use torsion::application::{Service, StreamServerEndpointService, run_application};
use torsion::endpoints::server_from_string;
use torsion::net::{Address, Transport};
use torsion::protocol::{Factory, Protocol};
use torsion::time::ReactorTime;
use torsion::{Failure, Reactor};
use torsion_cli::Plugin;
use torsion_cli::plugins::echo::EchoPlugin;
use torsion_cli::plugins::poetry::PoetryPlugin;
use torsion_cli::plugins::portforward::PortForwardPlugin;
use torsion_cli::plugins::proxy::ProxyPlugin;
use torsion_cli::plugins::transform::TransformPlugin;

// ===== helpers =====

const LOCAL: &str = "tcp:0:interface=127.0.0.1";

/// A poem shipped at the top of the repository.
fn poem_path(name: &str) -> String {
    format!("{}/../../poems/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn poem(name: &str) -> Vec<u8> {
    std::fs::read(poem_path(name)).expect("the poems ship with the repository")
}

/// Builds `plugin`'s service from `args` (without the program name) as the runner would.
fn make(reactor: &Reactor, plugin: &dyn Plugin, args: &[&str]) -> Result<Rc<dyn Service>, Failure> {
    let argv = std::iter::once(plugin.name()).chain(args.iter().copied());
    let matches = plugin
        .command()
        .try_get_matches_from(argv)
        .map_err(|e| Failure::msg(e.to_string()))?;
    plugin.make_service(reactor, &matches)
}

/// The listening service inside a plugin's service.
fn endpoint_service(service: &Rc<dyn Service>) -> &StreamServerEndpointService {
    let any: &dyn std::any::Any = &**service;
    any.downcast_ref::<StreamServerEndpointService>()
        .expect("the plugin's service is a StreamServerEndpointService")
}

/// The TCP port a started service listens on.
fn port_of(service: &Rc<dyn Service>) -> u16 {
    endpoint_service(service)
        .port()
        .and_then(|p| p.host().port())
        .expect("the service listens on a TCP port")
}

/// Builds and starts `plugin`'s service on `reactor`; returns it and its port.
fn start(reactor: &Reactor, plugin: &dyn Plugin, args: &[&str]) -> (Rc<dyn Service>, u16) {
    let service = make(reactor, plugin, args).expect("the plugin builds its service");
    run_application(reactor, &service).expect("the service starts");
    let port = port_of(&service);
    (service, port)
}

/// Stops the reactor when dropped, even if the client thread panics.
struct StopOnDrop(torsion::reactor::ReactorHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.call_from_thread(|reactor| {
            let _ = reactor.stop();
        });
    }
}

/// Runs `reactor` while `client` runs on a thread; returns what `client` returned. Fails
/// the test if the reactor is still running after `secs` seconds.
fn run_client<T: Send + 'static>(
    reactor: &Reactor,
    secs: f64,
    client: impl FnOnce() -> T + Send + 'static,
) -> T {
    let timed_out = Rc::new(Cell::new(false));
    let flag = timed_out.clone();
    let r = reactor.clone();
    let safety = reactor.call_later(secs, move || {
        flag.set(true);
        let _ = r.stop();
    });
    let guard = StopOnDrop(reactor.handle());
    let thread = std::thread::spawn(move || {
        let _guard = guard;
        client()
    });
    reactor.run().expect("the reactor runs cleanly");
    if safety.active() {
        let _ = safety.cancel();
    }
    assert!(
        !timed_out.get(),
        "safety stop: the clients did not finish in {secs} s"
    );
    match thread.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the plugin");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a read timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("set a write timeout");
    stream
}

/// Everything the server sends until it closes.
fn read_all(mut stream: TcpStream) -> Vec<u8> {
    let mut data = Vec::new();
    stream
        .read_to_end(&mut data)
        .expect("read until the server closes");
    data
}

/// How many connections a [`Spy`] saw made and lost; readable from any thread.
#[derive(Clone, Default)]
struct Counts {
    made: Arc<AtomicUsize>,
    lost: Arc<AtomicUsize>,
}

impl Counts {
    fn made(&self) -> usize {
        self.made.load(Ordering::SeqCst)
    }
    fn lost(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }
}

/// Wraps a factory to count its connections and keep each one's transport where the test
/// can see it.
struct Spy {
    inner: Rc<dyn Factory>,
    transports: Rc<RefCell<Vec<Transport>>>,
    counts: Counts,
}

struct SpyProtocol {
    inner: Box<dyn Protocol>,
    transports: Rc<RefCell<Vec<Transport>>>,
    counts: Counts,
}

impl Factory for Spy {
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>> {
        let inner = self.inner.clone().build_protocol(addr)?;
        Some(Box::new(SpyProtocol {
            inner,
            transports: self.transports.clone(),
            counts: self.counts.clone(),
        }))
    }
}

impl Protocol for SpyProtocol {
    fn connection_made(&mut self, transport: Transport) {
        self.counts.made.fetch_add(1, Ordering::SeqCst);
        self.transports.borrow_mut().push(transport.clone());
        self.inner.connection_made(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.inner.data_received(data);
    }
    fn connection_lost(&mut self, reason: Failure) {
        self.counts.lost.fetch_add(1, Ordering::SeqCst);
        self.inner.connection_lost(reason);
    }
}

/// Listens on 127.0.0.1 with `factory` behind a [`Spy`]; returns the port, the transports
/// and the counts.
fn listen_spied(
    reactor: &Reactor,
    factory: Rc<dyn Factory>,
) -> (u16, Rc<RefCell<Vec<Transport>>>, Counts) {
    let (service, transports, counts) = listen_spied_on(reactor, LOCAL, factory);
    let port = service.port().and_then(|p| p.host().port()).unwrap();
    (port, transports, counts)
}

/// Listens on `endpoint` with `factory` behind a [`Spy`].
fn listen_spied_on(
    reactor: &Reactor,
    endpoint: &str,
    factory: Rc<dyn Factory>,
) -> (
    Rc<StreamServerEndpointService>,
    Rc<RefCell<Vec<Transport>>>,
    Counts,
) {
    let transports = Rc::new(RefCell::new(Vec::new()));
    let counts = Counts::default();
    let spy = Rc::new(Spy {
        inner: factory,
        transports: transports.clone(),
        counts: counts.clone(),
    });
    let endpoint = server_from_string(reactor, endpoint).unwrap();
    let service = StreamServerEndpointService::new(endpoint, spy);
    run_application(reactor, &service).unwrap();
    (service, transports, counts)
}

/// Waits up to 5 s for `condition`.
fn wait_for(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ===== echo =====

#[test]
fn echo_sends_back_what_it_receives() {
    let reactor = Reactor::new().unwrap();
    let (_service, port) = start(&reactor, &EchoPlugin, &["--listen", LOCAL]);
    let echoed = run_client(&reactor, 10.0, move || {
        let mut stream = connect(port);
        stream.write_all(b"hello, echo\n").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        read_all(stream)
    });
    assert_eq!(echoed, b"hello, echo\n");
}

/// A peer that writes 50 MiB and reads nothing: the server stops reading once its send
/// buffer is over the high-water mark, so what it holds stays about that mark (sampled on
/// the real transport every few milliseconds) and the peer's writes stall long before
/// 50 MiB; once the peer reads, everything it managed to write comes back intact.
#[test]
fn echo_memory_stays_bounded_against_a_peer_that_does_not_read() {
    const TOTAL: usize = 50 << 20;
    let reactor = Reactor::new().unwrap();
    let plugin_service = make(&reactor, &EchoPlugin, &["--listen", LOCAL]).unwrap();
    // The plugin's own factory, behind a spy that lets the test see each transport.
    let factory = endpoint_service(&plugin_service).factory().clone();
    let (port, transports, _counts) = listen_spied(&reactor, factory);

    // Sample the server's send buffer.
    let max_buffered = Rc::new(Cell::new(0usize));
    let sampler = torsion::task::LoopingCall::new(reactor.clone(), {
        let transports = transports.clone();
        let max_buffered = max_buffered.clone();
        move || {
            for t in transports.borrow().iter() {
                max_buffered.set(max_buffered.get().max(t.buffered()));
            }
            Ok(())
        }
    });
    drop(sampler.start(0.005, true).unwrap());

    let (written, intact) = run_client(&reactor, 60.0, move || {
        let mut stream = connect(port);
        stream
            .set_write_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        let mut written = 0usize;
        while written < TOTAL {
            let offset = written % chunk.len();
            match stream.write(&chunk[offset..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break;
                }
                Err(e) => panic!("write failed: {e}"),
            }
        }
        // Now read back all that was written.
        let mut received = 0usize;
        let mut intact = true;
        let mut buf = vec![0u8; 256 * 1024];
        while received < written {
            let n = stream.read(&mut buf).expect("read the echo");
            assert!(n > 0, "the server closed before echoing everything");
            for (i, byte) in buf[..n].iter().enumerate() {
                intact &= *byte == ((received + i) % chunk.len() % 251) as u8;
            }
            received += n;
        }
        (written, intact)
    });
    sampler.stop();
    eprintln!(
        "the peer wrote {written} bytes; the server buffered at most {}",
        max_buffered.get()
    );
    assert!(intact, "the echo came back different");
    assert!(
        written < TOTAL,
        "the peer wrote all {TOTAL} bytes without reading: the server read them all"
    );
    let bound = torsion::net::tcp::HIGH_WATER_MARK + (1 << 20);
    assert!(
        max_buffered.get() <= bound,
        "the server buffered {} bytes (bound {bound})",
        max_buffered.get()
    );
}

// ===== poetry =====

#[test]
fn poetry_sends_the_poem_byte_for_byte_to_each_client() {
    let reactor = Reactor::new().unwrap();
    let path = poem_path("science.txt");
    let (_service, port) = start(&reactor, &PoetryPlugin, &["--listen", LOCAL, &path]);
    let poems = run_client(&reactor, 10.0, move || {
        let clients: Vec<_> = (0..3).map(|_| connect(port)).collect();
        clients.into_iter().map(read_all).collect::<Vec<_>>()
    });
    let expected = poem("science.txt");
    for received in poems {
        assert_eq!(received, expected);
    }
}

#[test]
fn poetry_sends_a_latin1_poem_untouched() {
    let reactor = Reactor::new().unwrap();
    let path = poem_path("nachtlied.latin1.txt");
    let (_service, port) = start(&reactor, &PoetryPlugin, &["--listen", LOCAL, &path]);
    let received = run_client(&reactor, 10.0, move || read_all(connect(port)));
    let expected = poem("nachtlied.latin1.txt");
    assert!(
        std::str::from_utf8(&expected).is_err(),
        "the poem is not UTF-8"
    );
    assert_eq!(received, expected);
}

#[test]
fn slow_poetry_arrives_in_chunks_over_time() {
    let reactor = Reactor::new().unwrap();
    let path = poem_path("science.txt");
    let args = [
        "--listen",
        LOCAL,
        "--num-bytes",
        "100",
        "--delay",
        "0.1",
        &path,
    ];
    let (_service, port) = start(&reactor, &PoetryPlugin, &args);
    let (received, reads, elapsed) = run_client(&reactor, 20.0, move || {
        let mut stream = connect(port);
        let started = Instant::now();
        let mut received = Vec::new();
        let mut reads = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).expect("read the poem");
            if n == 0 {
                break;
            }
            reads.push(n);
            received.extend_from_slice(&buf[..n]);
        }
        (received, reads, started.elapsed())
    });
    let expected = poem("science.txt");
    assert_eq!(received, expected);
    let chunks = expected.len().div_ceil(100); // 7 for science.txt
    // The first chunk at once, then one every 0.1 s.
    assert!(
        elapsed >= Duration::from_secs_f64(0.1 * (chunks - 1) as f64 * 0.9),
        "the poem came too fast: {elapsed:?}"
    );
    assert!(
        reads.len() >= 3,
        "the poem came in too few pieces: {reads:?}"
    );
}

#[test]
fn slow_poetry_stops_its_timer_when_the_client_leaves() {
    let reactor = Reactor::new().unwrap();
    let path = poem_path("science.txt");
    let args = [
        "--listen",
        LOCAL,
        "--num-bytes",
        "10",
        "--delay",
        "5",
        &path,
    ];
    let (_service, port) = start(&reactor, &PoetryPlugin, &args);
    let handle = reactor.handle();
    let pending = run_client(&reactor, 30.0, move || {
        let mut stream = connect(port);
        let mut buf = [0u8; 10];
        stream.read_exact(&mut buf).expect("the first chunk");
        drop(stream);
        // Let the server see the close.
        std::thread::sleep(Duration::from_millis(300));
        let (tx, rx) = std::sync::mpsc::channel();
        handle.call_from_thread(move |reactor| {
            // Calls due within 6 s: the next chunk's timer would be one (due in 5 s), the
            // safety timer (30 s) is not.
            let soon = reactor.now() + Duration::from_secs(6);
            let due = reactor
                .delayed_calls()
                .iter()
                .filter(|c| c.time <= soon)
                .count();
            let _ = tx.send(due);
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the reactor answers")
    });
    assert_eq!(pending, 0, "a chunk timer is still scheduled");
}

#[test]
fn poetry_listens_on_a_unix_socket() {
    let reactor = Reactor::new().unwrap();
    let dir = std::env::temp_dir().join(format!("torsion-cli-poetry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("poetry.sock");
    let _ = std::fs::remove_file(&path);
    let listen = format!("unix:{}", path.display());
    let poem_file = poem_path("science.txt");
    let service = make(&reactor, &PoetryPlugin, &["--listen", &listen, &poem_file]).unwrap();
    run_application(&reactor, &service).unwrap();
    let received = run_client(&reactor, 10.0, move || {
        let mut stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut data = Vec::new();
        stream.read_to_end(&mut data).unwrap();
        data
    });
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(received, poem("science.txt"));
}

#[test]
fn a_bad_endpoint_string_is_a_make_service_error() {
    let reactor = Reactor::new().unwrap();
    let failure = make(&reactor, &EchoPlugin, &["--listen", "tcp:80x"])
        .err()
        .expect("a bad port");
    assert!(failure.to_string().contains("tcp:80x"), "{failure}");
    let failure = make(
        &reactor,
        &ProxyPlugin,
        &["--listen", LOCAL, "--server", "carrier-pigeon:10001"],
    )
    .err()
    .expect("an unknown endpoint type");
    assert!(failure.to_string().contains("carrier-pigeon"), "{failure}");
}

#[test]
fn poetry_with_an_unreadable_file_fails_naming_it() {
    let reactor = Reactor::new().unwrap();
    let path = "/nonexistent/torsion/poem.txt";
    let failure = make(&reactor, &PoetryPlugin, &["--listen", LOCAL, path])
        .err()
        .expect("an unreadable poem cannot be served");
    assert!(failure.to_string().contains(path), "{failure}");
}

#[test]
fn poetry_rejects_a_bad_delay() {
    let failure = PoetryPlugin
        .command()
        .try_get_matches_from(["poetry", "--listen", LOCAL, "--delay", "-1", "poem"])
        .expect_err("a negative delay is refused");
    assert!(failure.to_string().contains("-1"), "{failure}");
}

// ===== transform =====

fn netstring(data: &[u8]) -> Vec<u8> {
    [format!("{}:", data.len()).as_bytes(), data, b","].concat()
}

/// The netstrings in `data`, which must hold only whole netstrings.
fn parse_netstrings(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut strings = Vec::new();
    while !data.is_empty() {
        let colon = data.iter().position(|&b| b == b':').expect("a length");
        let len: usize = std::str::from_utf8(&data[..colon])
            .unwrap()
            .parse()
            .unwrap();
        let body = &data[colon + 1..colon + 1 + len];
        assert_eq!(data[colon + 1 + len], b',', "a netstring ends with a comma");
        strings.push(body.to_vec());
        data = &data[colon + 2 + len..];
    }
    strings
}

/// Sends `request` as it is and returns everything the server sends before it closes (a
/// reset after a close counts as the end).
fn exchange(port: u16, request: &[u8]) -> Vec<u8> {
    let mut stream = connect(port);
    stream.write_all(request).expect("send the request");
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server neither answered nor closed: {e}"),
        }
    }
    data
}

fn transform_request(name: &str, text: &[u8]) -> Vec<u8> {
    netstring(&[name.as_bytes(), b".", text].concat())
}

#[test]
fn transform_answers_each_transform_exactly() {
    let reactor = Reactor::new().unwrap();
    let (_service, port) = start(&reactor, &TransformPlugin, &["--listen", LOCAL]);
    let science = poem("science.txt");
    let nachtlied = poem("nachtlied.latin1.txt");
    let (s, n) = (science.clone(), nachtlied.clone());
    let answers = run_client(&reactor, 10.0, move || {
        [
            exchange(port, &transform_request("cummingsify", &s)),
            exchange(port, &transform_request("upper", &n)),
            exchange(port, &transform_request("swapcase", b"Roses are RED")),
            exchange(port, &transform_request("rot13", b"Uryyb, jbeyq!")),
            exchange(port, &transform_request("upper", b"")),
        ]
    });
    let answers: Vec<Vec<Vec<u8>>> = answers.iter().map(|a| parse_netstrings(a)).collect();
    assert_eq!(answers[0], [science.to_ascii_lowercase()]);
    let upper = nachtlied.to_ascii_uppercase();
    assert_eq!(answers[1], std::slice::from_ref(&upper));
    // Only ASCII letters changed: the Latin-1 bytes are where they were.
    for (a, b) in nachtlied.iter().zip(&upper) {
        assert!(a == b || a.to_ascii_uppercase() == *b);
    }
    assert!(nachtlied.iter().any(|b| !b.is_ascii()));
    assert_eq!(answers[2], [b"rOSES ARE red".to_vec()]);
    assert_eq!(answers[3], [b"Hello, world!".to_vec()]);
    assert_eq!(answers[4], [Vec::<u8>::new()]);
}

#[test]
fn transform_answers_requests_sent_together_then_closes() {
    let reactor = Reactor::new().unwrap();
    let (_service, port) = start(&reactor, &TransformPlugin, &["--listen", LOCAL]);
    let answer = run_client(&reactor, 10.0, move || {
        let request = [
            transform_request("upper", b"one"),
            transform_request("rot13", b"two"),
        ]
        .concat();
        exchange(port, &request)
    });
    assert_eq!(
        parse_netstrings(&answer),
        [b"ONE".to_vec(), b"gjb".to_vec()]
    );
}

#[test]
fn transform_closes_without_an_answer_for_an_unknown_name() {
    let reactor = Reactor::new().unwrap();
    let (_service, port) = start(&reactor, &TransformPlugin, &["--listen", LOCAL]);
    let (unknown, no_dot, after) = run_client(&reactor, 10.0, move || {
        (
            exchange(port, &transform_request("explode", b"a poem")),
            exchange(port, &netstring(b"no dot here")),
            exchange(port, &transform_request("cummingsify", b"STILL HERE")),
        )
    });
    assert_eq!(unknown, b"", "an unknown transform gets no answer");
    let help = TransformPlugin.command().render_long_help().to_string();
    assert!(
        help.contains("unknown NAME closes the connection without an answer"),
        "{help}"
    );
    assert_eq!(no_dot, b"", "a request without a '.' gets no answer");
    assert_eq!(parse_netstrings(&after), [b"still here".to_vec()]);
}

#[test]
fn transform_survives_malformed_netstrings() {
    let reactor = Reactor::new().unwrap();
    let (_service, port) = start(
        &reactor,
        &TransformPlugin,
        &["--listen", LOCAL, "--max-length", "1000"],
    );
    let (bad, missing_comma, too_long, good) = run_client(&reactor, 10.0, move || {
        (
            exchange(port, b"hello, not a netstring"),
            exchange(port, b"5:upper;"),
            exchange(port, b"1000000:upper.x"),
            exchange(port, &transform_request("upper", b"fine")),
        )
    });
    assert_eq!(bad, b"");
    assert_eq!(missing_comma, b"");
    assert_eq!(too_long, b"");
    assert_eq!(parse_netstrings(&good), [b"FINE".to_vec()]);
}

// ===== proxy =====

/// A slow poetry server (the poetry plugin's own factory) behind a [`Spy`].
fn slow_upstream(reactor: &Reactor, num_bytes: &str, delay: &str) -> (u16, Counts) {
    let path = poem_path("science.txt");
    let args = [
        "--listen",
        LOCAL,
        "--num-bytes",
        num_bytes,
        "--delay",
        delay,
        &path,
    ];
    let service = make(reactor, &PoetryPlugin, &args).unwrap();
    let factory = endpoint_service(&service).factory().clone();
    let (port, _transports, counts) = listen_spied(reactor, factory);
    (port, counts)
}

fn start_proxy(reactor: &Reactor, upstream: u16) -> u16 {
    let server = format!("tcp:127.0.0.1:{upstream}");
    let (_service, port) = start(
        reactor,
        &ProxyPlugin,
        &["--listen", LOCAL, "--server", &server],
    );
    port
}

/// What the server sends until it closes; `Err` if it resets the connection.
fn read_to_close(mut stream: TcpStream) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    stream.read_to_end(&mut data).map(|_| data)
}

#[test]
fn proxy_shares_one_download_among_cold_clients_then_serves_the_cache() {
    let reactor = Reactor::new().unwrap();
    // About 0.9 s to send science.txt: long enough for three clients to arrive meanwhile.
    let (upstream, counts) = slow_upstream(&reactor, "200", "0.3");
    let port = start_proxy(&reactor, upstream);
    let (poems, downloads, cached, after) = run_client(&reactor, 20.0, move || {
        let clients: Vec<_> = (0..3).map(|_| connect(port)).collect();
        let poems: Vec<_> = clients.into_iter().map(read_all).collect();
        let downloads = counts.made();
        let cached = read_all(connect(port));
        (poems, downloads, cached, counts.made())
    });
    let expected = poem("science.txt");
    for received in &poems {
        assert_eq!(received, &expected);
    }
    assert_eq!(downloads, 1, "three cold clients share one download");
    assert_eq!(cached, expected);
    assert_eq!(after, 1, "a later client gets the cached poem");
}

#[test]
fn proxy_cancels_the_download_when_its_last_client_leaves() {
    let reactor = Reactor::new().unwrap();
    // About 34 s to send science.txt: it never finishes during the test.
    let (upstream, counts) = slow_upstream(&reactor, "10", "0.5");
    let port = start_proxy(&reactor, upstream);
    run_client(&reactor, 30.0, move || {
        let first = connect(port);
        let second = connect(port);
        wait_for("the download to start", || counts.made() == 1);
        drop(first);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            counts.lost(),
            0,
            "one client still waits: the download goes on"
        );
        drop(second);
        wait_for("the download to be cancelled", || counts.lost() == 1);
        // Nothing was cached: the next client starts another download.
        let third = connect(port);
        wait_for("a second download", || counts.made() == 2);
        drop(third);
        wait_for("the second download to be cancelled", || counts.lost() == 2);
    });
}

/// A poetry server that resets its first connection and serves the poem on the others.
struct FlakyUpstream {
    poem: Vec<u8>,
    connections: Arc<AtomicUsize>,
}

struct FlakyConnection {
    poem: Option<Vec<u8>>,
}

impl Factory for FlakyUpstream {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        let n = self.connections.fetch_add(1, Ordering::SeqCst);
        Some(Box::new(FlakyConnection {
            poem: (n > 0).then(|| self.poem.clone()),
        }))
    }
}

impl Protocol for FlakyConnection {
    fn connection_made(&mut self, transport: Transport) {
        match &self.poem {
            Some(poem) => {
                transport.write(poem);
                transport.lose_connection();
            }
            None => transport.abort_connection(),
        }
    }
}

#[test]
fn proxy_reports_a_failed_download_and_does_not_cache_it() {
    let reactor = Reactor::new().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let upstream = Rc::new(FlakyUpstream {
        poem: poem("nachtlied.latin1.txt"),
        connections: connections.clone(),
    });
    let (upstream, _, _) = listen_spied(&reactor, upstream);
    let port = start_proxy(&reactor, upstream);
    let (failed, retried, cached, downloads) = run_client(&reactor, 20.0, move || {
        // The reset may come before `connect` has even returned, on a loaded machine.
        let failed = TcpStream::connect(("127.0.0.1", port)).and_then(|stream| {
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            read_to_close(stream)
        });
        let retried = read_all(connect(port));
        let cached = read_all(connect(port));
        (failed, retried, cached, connections.load(Ordering::SeqCst))
    });
    match failed {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
        Ok(data) => panic!("the failed download was served as a poem: {data:?}"),
    }
    let expected = poem("nachtlied.latin1.txt");
    assert_eq!(retried, expected, "the next client retries the download");
    assert_eq!(cached, expected);
    assert_eq!(downloads, 2, "the failure was not cached; the success was");
}

#[test]
fn proxy_with_a_refused_server_keeps_serving() {
    let reactor = Reactor::new().unwrap();
    // A port nobody listens on: bound and never listening, so it refuses connections and
    // no other test can be given it meanwhile (a port merely freed could be).
    let closed = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::STREAM,
        None,
    )
    .unwrap();
    rustix::net::bind(&closed, &std::net::SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let upstream = rustix::net::getsockname(&closed)
        .ok()
        .and_then(|a| std::net::SocketAddr::try_from(a).ok())
        .unwrap()
        .port();
    let port = start_proxy(&reactor, upstream);
    let results = run_client(&reactor, 20.0, move || {
        (0..2)
            .map(|_| {
                TcpStream::connect(("127.0.0.1", port)).and_then(|stream| {
                    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                    read_to_close(stream)
                })
            })
            .collect::<Vec<_>>()
    });
    for result in results {
        assert!(
            matches!(&result, Err(e) if e.kind() == ErrorKind::ConnectionReset),
            "a failed download is a reset: {result:?}"
        );
    }
}

// ===== portforward =====

const BULK: usize = 10 << 20;

/// The byte at `i` of what the client sends.
fn upstream_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// The byte at `i` of what the destination sends.
fn downstream_byte(i: usize) -> u8 {
    ((i * 7 + 3) % 253) as u8
}

/// Writes `BULK` bytes of [`upstream_byte`] on a thread of its own.
fn write_bulk(stream: &TcpStream) -> std::thread::JoinHandle<()> {
    let mut writer = stream.try_clone().expect("clone the stream");
    std::thread::spawn(move || {
        let mut sent = 0;
        let mut chunk = vec![0u8; 64 * 1024];
        while sent < BULK {
            let n = chunk.len().min(BULK - sent);
            for (i, byte) in chunk[..n].iter_mut().enumerate() {
                *byte = upstream_byte(sent + i);
            }
            writer
                .write_all(&chunk[..n])
                .expect("write through the forwarder");
            sent += n;
        }
    })
}

/// Reads up to `limit` bytes (or until the peer closes); returns how many were read and
/// whether each was `expected(i)`.
fn read_bulk(stream: &mut TcpStream, limit: usize, expected: fn(usize) -> u8) -> (usize, bool) {
    let mut received = 0;
    let mut intact = true;
    let mut buf = vec![0u8; 256 * 1024];
    while received < limit {
        let n = stream.read(&mut buf).expect("read through the forwarder");
        if n == 0 {
            break;
        }
        for (i, byte) in buf[..n].iter().enumerate() {
            intact &= *byte == expected(received + i);
        }
        received += n;
    }
    (received, intact)
}

#[test]
fn portforward_relays_10_mib_to_an_echo_and_back() {
    let reactor = Reactor::new().unwrap();
    let (_echo, echo_port) = start(&reactor, &EchoPlugin, &["--listen", LOCAL]);
    let dest = format!("tcp:127.0.0.1:{echo_port}");
    let (_forwarder, port) = start(
        &reactor,
        &PortForwardPlugin,
        &["--listen", LOCAL, "--dest", &dest],
    );
    let (received, intact) = run_client(&reactor, 60.0, move || {
        let mut stream = connect(port);
        let writer = write_bulk(&stream);
        let result = read_bulk(&mut stream, BULK, upstream_byte);
        writer.join().expect("the writer finishes");
        result
    });
    assert_eq!(received, BULK);
    assert!(intact, "the echo came back different");
}

/// A destination that sends `BULK` bytes of [`downstream_byte`], checks what it receives
/// against [`upstream_byte`], and closes once it has received `BULK` bytes.
struct SourceAndSink {
    transport: Option<Transport>,
    received: Arc<AtomicUsize>,
    corrupt: Arc<AtomicUsize>,
}

impl Protocol for SourceAndSink {
    fn connection_made(&mut self, transport: Transport) {
        let data: Vec<u8> = (0..BULK).map(downstream_byte).collect();
        transport.write(&data);
        self.transport = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        let before = self.received.fetch_add(data.len(), Ordering::SeqCst);
        for (i, byte) in data.iter().enumerate() {
            if *byte != upstream_byte(before + i) {
                self.corrupt.fetch_add(1, Ordering::SeqCst);
            }
        }
        if before + data.len() >= BULK
            && let Some(transport) = &self.transport
        {
            transport.lose_connection();
        }
    }
}

#[test]
fn portforward_moves_10_mib_each_way_to_a_unix_socket() {
    let reactor = Reactor::new().unwrap();
    let dir = std::env::temp_dir().join(format!("torsion-cli-plugins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dest.sock");
    let _ = std::fs::remove_file(&path);
    let received = Arc::new(AtomicUsize::new(0));
    let corrupt = Arc::new(AtomicUsize::new(0));
    let (r, c) = (received.clone(), corrupt.clone());
    let dest_factory = Rc::new(move || SourceAndSink {
        transport: None,
        received: r.clone(),
        corrupt: c.clone(),
    });
    let unix = format!("unix:{}", path.display());
    let (_dest, _, dest_counts) = listen_spied_on(&reactor, &unix, dest_factory);
    let (_forwarder, port) = start(
        &reactor,
        &PortForwardPlugin,
        &["--listen", LOCAL, "--dest", &unix],
    );
    let (downstream, intact) = run_client(&reactor, 60.0, move || {
        let mut stream = connect(port);
        let writer = write_bulk(&stream);
        // Everything the destination sends, until it closes (after receiving it all).
        let result = read_bulk(&mut stream, usize::MAX, downstream_byte);
        writer.join().expect("the writer finishes");
        result
    });
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(dest_counts.made(), 1);
    assert_eq!(
        downstream, BULK,
        "the destination's 10 MiB reached the client"
    );
    assert!(intact, "the destination's bytes arrived changed");
    assert_eq!(
        received.load(Ordering::SeqCst),
        BULK,
        "the client's 10 MiB reached the destination"
    );
    assert_eq!(
        corrupt.load(Ordering::SeqCst),
        0,
        "the client's bytes arrived changed"
    );
}

#[test]
fn portforward_closes_the_client_when_the_destination_is_unreachable() {
    let reactor = Reactor::new().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dest = format!("tcp:127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let (_forwarder, port) = start(
        &reactor,
        &PortForwardPlugin,
        &["--listen", LOCAL, "--dest", &dest],
    );
    let results = run_client(&reactor, 20.0, move || {
        (0..2)
            .map(|_| {
                TcpStream::connect(("127.0.0.1", port)).and_then(|stream| {
                    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                    read_to_close(stream)
                })
            })
            .collect::<Vec<_>>()
    });
    // Closed, with nothing sent (a reset counts as closed too).
    for data in results.into_iter().flatten() {
        assert!(data.is_empty(), "{data:?}");
    }
}

#[test]
fn every_builtin_plugin_has_help() {
    let mut names = Vec::new();
    for plugin in torsion_cli::plugins::builtin() {
        let mut command = plugin.command();
        assert_eq!(command.get_name(), plugin.name());
        let help = command.render_long_help().to_string();
        assert!(help.contains("--listen"), "{}: {help}", plugin.name());
        names.push(plugin.name());
    }
    assert!(
        names.contains(&"echo") && names.contains(&"poetry"),
        "{names:?}"
    );
}
