//! tokio's I/O traits over torsion transports: echo over TCP, UNIX and TLS, flow control
//! both ways against slow readers, end of input, half-close and errors.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use torsion::endpoints::{
    ClientEndpoint, TcpClientEndpoint, TlsClientEndpoint, UnixClientEndpoint, UnixClientSpec,
};
use torsion::net::tcp::ListenOptions;
use torsion::{Failure, Reactor};
use torsion_tokio::{TokioStream, connect_stream, serve};

fn localhost() -> ListenOptions {
    ListenOptions {
        interface: [127, 0, 0, 1].into(),
        ..Default::default()
    }
}

/// An echo handler written against tokio's traits only.
async fn echo(stream: TokioStream) -> Result<(), Failure> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    tokio::io::copy(&mut reader, &mut writer).await?;
    writer.shutdown().await?;
    Ok(())
}

/// A deterministic payload of `len` bytes.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Sends `data` through `stream` while reading the echo back, both as tasks on the
/// reactor; returns what came back.
async fn round_trip<S>(stream: S, data: Vec<u8>) -> Result<Vec<u8>, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let sent = torsion::spawn(async move {
        for chunk in data.chunks(10_007) {
            writer.write_all(chunk).await?;
        }
        writer.shutdown().await?;
        Ok(())
    });
    let mut back = Vec::new();
    reader.read_to_end(&mut back).await?;
    sent.await?;
    Ok(back)
}

async fn echo_through(endpoint: Box<dyn ClientEndpoint>, len: usize) -> Result<(), Failure> {
    let data = payload(len);
    let stream = connect_stream(&*endpoint).await?;
    assert!(stream.peer().is_some());
    let back = round_trip(stream, data.clone()).await?;
    assert_eq!(back.len(), data.len());
    assert!(back == data, "the echo differs");
    Ok(())
}

#[test]
fn echo_over_tcp() {
    common::run(20.0, |reactor| async move {
        let port = reactor.listen_tcp_with(0, serve(echo), localhost())?;
        let addr = port.host().port().unwrap_or(0);
        for len in [0, 1, 100, 4 << 20] {
            let endpoint = TcpClientEndpoint::new(&reactor, "127.0.0.1", addr);
            echo_through(Box::new(endpoint), len).await?;
        }
        port.stop_listening().await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn echo_over_unix() {
    let dir = std::env::temp_dir().join(format!("torsion-tokio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);
    let p = path.clone();
    common::run(20.0, move |reactor| async move {
        let port = reactor.listen_unix(&p, serve(echo))?;
        for len in [1, 4 << 20] {
            let endpoint = UnixClientEndpoint::new(&reactor, UnixClientSpec::new(&p));
            echo_through(Box::new(endpoint), len).await?;
        }
        port.stop_listening().await?;
        Ok(())
    })
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn echo_over_tls() {
    let pki = common::pki::Pki::new();
    let server = pki.server_config();
    let client = pki.client_config();
    common::run(20.0, move |reactor| async move {
        let port = reactor.listen_tls_with(0, serve(echo), &server, localhost())?;
        let addr = port.host().port().unwrap_or(0);
        for len in [1, 100_000, 2 << 20] {
            let tcp = TcpClientEndpoint::new(&reactor, "127.0.0.1", addr);
            let endpoint = TlsClientEndpoint::new(Box::new(tcp), client.clone(), "localhost");
            echo_through(Box::new(endpoint), len).await?;
        }
        port.stop_listening().await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn tls_info_is_reachable_through_the_stream() {
    let pki = common::pki::Pki::new();
    let server = pki.server_config();
    let client = pki.client_config();
    common::run(20.0, move |reactor| async move {
        let hello = serve(|mut stream: TokioStream| async move {
            let tls = stream.transport().and_then(|t| t.tls_info()).is_some();
            stream
                .write_all(if tls { b"tls" } else { b"clear" })
                .await?;
            Ok(())
        });
        let port = reactor.listen_tls_with(0, hello, &server, localhost())?;
        let addr = port.host().port().unwrap_or(0);
        let tcp = TcpClientEndpoint::new(&reactor, "127.0.0.1", addr);
        let endpoint = TlsClientEndpoint::new(Box::new(tcp), client, "localhost");
        let mut stream = connect_stream(&endpoint).await?;
        let mut said = String::new();
        stream.read_to_string(&mut said).await?;
        assert_eq!(said, "tls");
        port.stop_listening().await?;
        Ok(())
    })
    .unwrap();
}

// ===== flow control =====

/// The peer writes as fast as it can; the handler does not read for a while. The adapter
/// must pause the transport (so the kernel's buffers fill and the peer's writes block)
/// instead of buffering everything the peer sends.
#[test]
fn a_slow_reader_pauses_the_transport_and_the_peer_blocks() {
    const TOTAL: usize = 64 << 20;
    let max_unread = Arc::new(AtomicUsize::new(0));
    let read_back = Arc::new(AtomicUsize::new(0));
    let peer_result: Arc<std::sync::Mutex<Option<(usize, bool)>>> = Default::default();
    let (mu, rb, pr) = (max_unread.clone(), read_back.clone(), peer_result.clone());
    common::run(30.0, move |reactor| async move {
        let go = Rc::new(std::cell::Cell::new(false));
        let g = go.clone();
        let r = reactor.clone();
        let (mu2, rb2) = (mu.clone(), rb.clone());
        let handler = serve(move |mut stream: TokioStream| {
            let (go, r, mu, rb) = (g.clone(), r.clone(), mu2.clone(), rb2.clone());
            async move {
                // Not reading: only watching what piles up.
                while !go.get() {
                    mu.fetch_max(stream.unread(), Ordering::SeqCst);
                    common::sleep(&r, 0.01).await?;
                }
                assert!(stream.is_reading_paused(), "the transport was never paused");
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    mu.fetch_max(stream.unread(), Ordering::SeqCst);
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    rb.fetch_add(n, Ordering::SeqCst);
                }
                Ok(())
            }
        });
        let port = reactor.listen_tcp_with(0, handler, localhost())?;
        let addr = port.host().port().unwrap_or(0);
        // The peer: a plain blocking socket on its own thread.
        let peer = std::thread::spawn(move || {
            let mut sock = TcpStream::connect(("127.0.0.1", addr)).unwrap();
            sock.set_write_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let chunk = vec![7u8; 64 * 1024];
            let mut accepted = 0usize;
            let mut stalled = false;
            while accepted < TOTAL {
                match sock.write(&chunk) {
                    Ok(n) => accepted += n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        stalled = true;
                        break;
                    }
                    Err(e) => panic!("peer write failed: {e}"),
                }
            }
            (sock, accepted, stalled)
        });
        // Let the peer stall (or not), then let the handler read.
        let waited = Instant::now();
        while !peer.is_finished() && waited.elapsed() < Duration::from_secs(15) {
            common::sleep(&reactor, 0.02).await?;
        }
        let (sock, accepted, stalled) =
            peer.join().map_err(|_| Failure::msg("the peer panicked"))?;
        *pr.lock().unwrap() = Some((accepted, stalled));
        go.set(true);
        drop(sock);
        // Wait for the handler to read everything the peer had sent.
        let waited = Instant::now();
        while rb.load(Ordering::SeqCst) < accepted && waited.elapsed() < Duration::from_secs(10) {
            common::sleep(&reactor, 0.02).await?;
        }
        port.stop_listening().await?;
        Ok(())
    })
    .unwrap();
    let (accepted, stalled) = peer_result.lock().unwrap().unwrap();
    assert!(
        stalled,
        "the peer sent all {TOTAL} bytes without blocking: nothing paused it"
    );
    let unread = max_unread.load(Ordering::SeqCst);
    // The high-water mark plus at most one read from the socket.
    assert!(
        unread <= 64 * 1024 + 256 * 1024,
        "{unread} bytes piled up unread"
    );
    assert_eq!(read_back.load(Ordering::SeqCst), accepted);
    eprintln!("slow reader: the peer got {accepted} bytes accepted, at most {unread} unread");
}

/// The handler writes as fast as `poll_write` lets it; the peer does not read for a while.
/// The writer must be held (`Pending`) once the transport's buffer passes its high-water
/// mark, so the bytes it gets accepted stay bounded.
#[test]
fn a_slow_peer_holds_the_writer_and_bounds_its_buffer() {
    const TOTAL: usize = 64 << 20;
    let accepted = Arc::new(AtomicUsize::new(0));
    let max_buffered = Arc::new(AtomicUsize::new(0));
    let done_writing = Arc::new(AtomicBool::new(false));
    let (acc, mb, dw) = (accepted.clone(), max_buffered.clone(), done_writing.clone());
    let seen_by_peer: Arc<std::sync::Mutex<Option<(usize, usize)>>> = Default::default();
    let sp = seen_by_peer.clone();
    common::run(30.0, move |reactor| async move {
        let (acc2, mb2, dw2) = (acc.clone(), mb.clone(), dw.clone());
        let handler = serve(move |mut stream: TokioStream| {
            let (acc, mb, dw) = (acc2.clone(), mb2.clone(), dw2.clone());
            async move {
                let chunk = vec![1u8; 16 * 1024];
                let transport = stream
                    .transport()
                    .ok_or_else(|| Failure::msg("no transport"))?;
                let mut sent = 0;
                while sent < TOTAL {
                    let n = stream.write(&chunk).await?;
                    sent += n;
                    acc.store(sent, Ordering::SeqCst);
                    mb.fetch_max(transport.buffered(), Ordering::SeqCst);
                }
                dw.store(true, Ordering::SeqCst);
                Ok(())
            }
        });
        let port = reactor.listen_tcp_with(0, handler, localhost())?;
        let addr = port.host().port().unwrap_or(0);
        let acc3 = acc.clone();
        let peer = std::thread::spawn(move || {
            let mut sock = TcpStream::connect(("127.0.0.1", addr)).unwrap();
            // Not reading for a while.
            std::thread::sleep(Duration::from_millis(700));
            let before = acc3.load(Ordering::SeqCst);
            let mut got = 0usize;
            let mut buf = vec![0u8; 256 * 1024];
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            while got < TOTAL {
                match sock.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) => panic!("peer read failed: {e}"),
                }
            }
            (before, got)
        });
        let waited = Instant::now();
        while !peer.is_finished() && waited.elapsed() < Duration::from_secs(25) {
            common::sleep(&reactor, 0.02).await?;
        }
        let seen = peer.join().map_err(|_| Failure::msg("the peer panicked"))?;
        *sp.lock().unwrap() = Some(seen);
        port.stop_listening().await?;
        Ok(())
    })
    .unwrap();
    let (before, got) = seen_by_peer.lock().unwrap().unwrap();
    eprintln!(
        "slow peer: {before} bytes accepted while the peer did not read, transport buffer at most {}",
        max_buffered.load(Ordering::SeqCst)
    );
    assert!(
        before < 32 << 20,
        "{before} bytes accepted while the peer did not read: the writer was not held"
    );
    let buffered = max_buffered.load(Ordering::SeqCst);
    assert!(
        buffered <= 64 * 1024 + 64 * 1024,
        "the transport buffered {buffered} bytes"
    );
    assert_eq!(got, TOTAL);
    assert!(done_writing.load(Ordering::SeqCst));
}

// ===== end of input, half-close, errors =====

#[test]
fn end_of_input_reads_zero_and_the_writer_goes_on() {
    common::run(20.0, |reactor| async move {
        let handler = serve(|mut stream: TokioStream| async move {
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await?;
            // The peer closed its sending side; ours is still open.
            stream.write_all(b"you said: ").await?;
            stream.write_all(&got).await?;
            Ok(())
        });
        let port = reactor.listen_tcp_with(0, handler, localhost())?;
        let addr = port.host().port().unwrap_or(0);
        let peer = std::thread::spawn(move || {
            let mut sock = TcpStream::connect(("127.0.0.1", addr)).unwrap();
            sock.write_all(b"abc").unwrap();
            sock.shutdown(std::net::Shutdown::Write).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut back = String::new();
            sock.read_to_string(&mut back).unwrap();
            back
        });
        while !peer.is_finished() {
            common::sleep(&reactor, 0.01).await?;
        }
        let back = peer.join().map_err(|_| Failure::msg("the peer panicked"))?;
        assert_eq!(back, "you said: abc");
        port.stop_listening().await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_reset_reads_as_connection_reset_and_writes_fail() {
    let outcome: Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let o = outcome.clone();
    common::run(20.0, move |reactor| async move {
        let o2 = o.clone();
        let r = reactor.clone();
        let handler = serve(move |mut stream: TokioStream| {
            let (o, r) = (o2.clone(), r.clone());
            async move {
                let mut buf = [0u8; 16];
                let n = stream.read(&mut buf).await?;
                o.lock().unwrap().push(format!("read {n}"));
                let err = stream.read(&mut buf).await.unwrap_err();
                o.lock()
                    .unwrap()
                    .push(format!("read error {:?}", err.kind()));
                common::sleep(&r, 0.01).await?;
                let err = stream.write_all(b"too late").await.unwrap_err();
                o.lock()
                    .unwrap()
                    .push(format!("write error {:?}", err.kind()));
                Ok(())
            }
        });
        let port = reactor.listen_tcp_with(0, handler, localhost())?;
        let addr = port.host().port().unwrap_or(0);
        let peer = std::thread::spawn(move || {
            let sock = TcpStream::connect(("127.0.0.1", addr)).unwrap();
            let sock = socket2::Socket::from(sock);
            sock.set_linger(Some(Duration::ZERO)).unwrap();
            let mut sock = TcpStream::from(sock);
            sock.write_all(b"hi").unwrap();
            std::thread::sleep(Duration::from_millis(100));
            drop(sock); // SO_LINGER 0: a reset
        });
        let waited = Instant::now();
        while o.lock().unwrap().len() < 3 && waited.elapsed() < Duration::from_secs(10) {
            common::sleep(&reactor, 0.01).await?;
        }
        peer.join().map_err(|_| Failure::msg("the peer panicked"))?;
        port.stop_listening().await?;
        Ok(())
    })
    .unwrap();
    let outcome = outcome.lock().unwrap();
    assert_eq!(
        *outcome,
        vec![
            "read 2".to_string(),
            "read error ConnectionReset".to_string(),
            "write error ConnectionReset".to_string()
        ]
    );
}

#[test]
fn dropping_the_stream_closes_the_connection_after_its_output() {
    common::run(20.0, |reactor| async move {
        let handler = serve(|mut stream: TokioStream| async move {
            stream.write_all(&payload(300_000)).await?;
            Ok(()) // dropped here
        });
        let port = reactor.listen_tcp_with(0, handler, localhost())?;
        let addr = port.host().port().unwrap_or(0);
        let endpoint = TcpClientEndpoint::new(&reactor, "127.0.0.1", addr);
        let mut stream = connect_stream(&endpoint).await?;
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await?;
        assert!(got == payload(300_000));
        port.stop_listening().await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_refused_connection_fails_the_deferred() {
    common::run(20.0, |reactor| async move {
        // A port nothing listens on: bind one, then close it.
        let free = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let endpoint = TcpClientEndpoint::new(&reactor, "127.0.0.1", free);
        let failed = connect_stream(&endpoint).await;
        assert!(
            failed
                .unwrap_err()
                .check::<torsion::error::ConnectionRefused>()
        );
        Ok(())
    })
    .unwrap();
}

#[test]
fn writes_wait_for_the_connection_when_wired_by_hand() {
    common::run(20.0, |reactor| async move {
        let port = reactor.listen_tcp_with(0, serve(echo), localhost())?;
        let addr = port.host().port().unwrap_or(0);
        let (protocol, mut stream) = torsion_tokio::stream_protocol();
        let endpoint = TcpClientEndpoint::new(&reactor, "127.0.0.1", addr);
        let connected = torsion::endpoints::connect_protocol(&endpoint, protocol);
        // Written before the connection is made: waits for it.
        stream.write_all(b"early").await?;
        stream.shutdown().await?;
        let mut back = Vec::new();
        stream.read_to_end(&mut back).await?;
        assert_eq!(back, b"early");
        drop(connected);
        port.stop_listening().await?;
        let _: &Reactor = &reactor;
        Ok(())
    })
    .unwrap();
}
