//! The bridge's costs: a round trip reactor → tokio → reactor (`defer_to_tokio`) and
//! tokio → reactor → tokio (`call_from_tokio`), per call; and a loopback echo served three
//! ways, with the same blocking client: a `TokioStream` handler (the adapter), a plain
//! torsion `Protocol`, and plain tokio (`TcpListener` on a current-thread runtime), for
//! 64 B and 16 KiB messages. Besides criterion's wall time per message, the echo reports
//! the server thread's CPU time per message (`CLOCK_THREAD_CPUTIME_ID`), which is what the
//! adapter's target (at most 1.2× the plain protocol) is about.
//!
//! Invariant: each server runs on a thread of its own, and the client is the same for all
//! three, so the differences are the servers'.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use torsion::net::Transport;
use torsion::net::tcp::ListenOptions;
use torsion::protocol::Protocol;
use torsion::{Failure, Reactor};
use torsion_tokio::{ReactorThread, TokioStream, call_from_tokio, defer_to_tokio, serve};

fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn bench_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

// ===== the bridge both ways =====

fn round_trips(c: &mut Criterion) {
    let rt = bench_runtime();
    torsion_tokio::set_runtime(rt.handle().clone());
    let mut group = c.benchmark_group("bridge");
    group.bench_function("reactor_tokio_reactor", |b| {
        b.iter_custom(|iters| {
            let took = Rc::new(RefCell::new(Duration::ZERO));
            let t = took.clone();
            torsion::task::react_result(Reactor::new().unwrap(), move |_r| async move {
                let start = Instant::now();
                for i in 0..iters {
                    let v = defer_to_tokio(async move { i }).await?;
                    assert_eq!(v, i);
                }
                *t.borrow_mut() = start.elapsed();
                Ok(())
            })
            .unwrap();
            *took.borrow()
        });
    });
    let reactor = ReactorThread::start().unwrap();
    let handle = reactor.handle().clone();
    group.bench_function("tokio_reactor_tokio", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let v = call_from_tokio(&handle, move |_r: &Reactor| Ok(i))
                        .await
                        .unwrap();
                    assert_eq!(v, i);
                }
                start.elapsed()
            })
        });
    });
    group.finish();
    reactor.stop_blocking().unwrap();
    torsion_tokio::clear_runtime();
}

// ===== the echo three ways =====

#[derive(Default)]
struct Echo(Option<Transport>);

impl Protocol for Echo {
    fn connection_made(&mut self, transport: Transport) {
        self.0 = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(transport) = &self.0 {
            transport.write(data);
        }
    }
}

/// The adapter's handler: what a user writes against tokio's traits.
async fn adapter_echo(mut stream: TokioStream) -> Result<(), Failure> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}

/// A server on its own thread: its port, and a way to read its thread's CPU time.
struct Server {
    port: u16,
    cpu: Box<dyn Fn() -> Duration>,
    stop: Option<Box<dyn FnOnce()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

fn localhost() -> ListenOptions {
    ListenOptions {
        interface: [127, 0, 0, 1].into(),
        ..Default::default()
    }
}

fn torsion_server(adapter: bool) -> Server {
    let (tx, rx) = mpsc::channel();
    let reactor = ReactorThread::start_with(Reactor::new, move |r| {
        let port = if adapter {
            r.listen_tcp_with(0, serve(adapter_echo), localhost())?
        } else {
            r.listen_tcp_with(0, Rc::new(Echo::default), localhost())?
        };
        let _ = tx.send(port.host().port().unwrap_or(0));
        Ok(())
    })
    .unwrap();
    let port = rx.recv().unwrap();
    let handle = reactor.handle().clone();
    Server {
        port,
        cpu: Box::new(move || {
            torsion::threads::blocking_call_from_thread(&handle, |_r| Ok(thread_cpu())).unwrap()
        }),
        stop: Some(Box::new(move || reactor.stop_blocking().unwrap())),
    }
}

fn tokio_server() -> Server {
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let join = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send((
                listener.local_addr().unwrap().port(),
                tokio::runtime::Handle::current(),
            ))
            .unwrap();
            let accept = async move {
                loop {
                    let (mut sock, _) = listener.accept().await.unwrap();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            match sock.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    if sock.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    });
                }
            };
            tokio::select! {
                _ = accept => {}
                _ = stop_rx => {}
            }
        });
    });
    let (port, handle) = rx.recv().unwrap();
    Server {
        port,
        cpu: Box::new(move || {
            let (tx, rx) = mpsc::channel();
            handle.spawn(async move {
                let _ = tx.send(thread_cpu());
            });
            rx.recv().unwrap()
        }),
        stop: Some(Box::new(move || {
            let _ = stop_tx.send(());
            let _ = join.join();
        })),
    }
}

/// Sends `count` messages of `size` bytes, `window` at a time, reading each window's
/// echo back before the next.
fn drive(sock: &mut TcpStream, message: &[u8], window: usize, count: u64, back: &mut [u8]) {
    let mut left = count;
    while left > 0 {
        let now = (window as u64).min(left) as usize;
        for _ in 0..now {
            sock.write_all(message).unwrap();
        }
        sock.read_exact(&mut back[..now * message.len()]).unwrap();
        left -= now as u64;
    }
}

fn echo(c: &mut Criterion) {
    let mut cpu_per_message: BTreeMap<(usize, &'static str), (Duration, u64)> = BTreeMap::new();
    for (size, window) in [(64usize, 16usize), (16 * 1024, 4)] {
        let mut group = c.benchmark_group(format!("echo_{size}B"));
        group.throughput(Throughput::Bytes(size as u64));
        let message = vec![0x5au8; size];
        let mut back = vec![0u8; size * window];
        for (name, server) in [
            ("torsion_protocol", torsion_server(false)),
            ("tokio_stream_adapter", torsion_server(true)),
            ("plain_tokio", tokio_server()),
        ] {
            let mut sock = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
            sock.set_nodelay(true).unwrap();
            let mut cpu = Duration::ZERO;
            let mut messages = 0u64;
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let before = (server.cpu)();
                    let start = Instant::now();
                    drive(&mut sock, &message, window, iters, &mut back);
                    let took = start.elapsed();
                    cpu += (server.cpu)() - before;
                    messages += iters;
                    took
                });
            });
            cpu_per_message.insert((size, name), (cpu, messages));
            drop(sock);
            drop(server);
        }
        group.finish();
    }
    eprintln!("\nserver thread CPU per message:");
    for size in [64usize, 16 * 1024] {
        let per = |name| {
            cpu_per_message
                .get(&(size, name))
                .filter(|(_, n)| *n > 0)
                .map(|(cpu, n)| cpu.as_nanos() as f64 / *n as f64)
        };
        // A filtered run (`cargo bench -- echo_64B`) measures only some of them.
        let (Some(protocol), Some(adapter), Some(tokio)) = (
            per("torsion_protocol"),
            per("tokio_stream_adapter"),
            per("plain_tokio"),
        ) else {
            continue;
        };
        eprintln!(
            "  {size:>6} B: torsion protocol {protocol:.0} ns, adapter {adapter:.0} ns ({:.2}x the protocol), plain tokio {tokio:.0} ns (adapter {:.2}x tokio)",
            adapter / protocol,
            adapter / tokio
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = round_trips, echo
}
criterion_main!(benches);
