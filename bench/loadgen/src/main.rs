//! `loadgen`: a neutral TCP load generator for comparing echo servers.
//!
//! Modes:
//! - `pingpong`: N connections each send a payload, read the same number of
//!   bytes back, and repeat; reports msgs/s, MB/s and round-trip p50/p99.
//! - `connect`: C concurrent loops of connect, 1-byte echo, close with RST;
//!   reports connections/s and connect+echo p50/p99.
//! - `idle`: open N connections (each echoes one byte once), print
//!   `ESTABLISHED n`, hold them, exit.
//! - `handshake`: C concurrent loops of connect, full TLS handshake, 1-byte
//!   echo, close with RST; reports handshakes/s (with `--resumption` the
//!   client's session cache is shared by every connection, so all but the
//!   first handshakes are resumptions) and how many were resumed.
//! - `tls-certs`: write a throw-away authority and a server certificate for
//!   `localhost`/127.0.0.1 into a directory.
//!
//! `pingpong --tls` speaks TLS (rustls, ring provider, server name
//! `localhost`; `--tls-ca` to verify against an authority, else any
//! certificate is accepted) on the epoll engine only; see `tls.rs`.
//!
//! Connections are spread over `--threads` OS threads (by default as many as
//! the CPUs the process may run on). `pingpong` drives each thread's share
//! with an edge-triggered epoll loop by default (`--engine epoll`: one write
//! and one read per message, see `epoll.rs`); `--engine tokio` runs a tokio
//! current_thread runtime per thread instead, `--engine threads` a blocking
//! socket per OS thread. `connect` runs each loop on its own OS thread with
//! blocking sockets by default (`--engine tokio` for tasks instead); `idle`
//! uses one tokio runtime.
//! With `--server-pid` the server's CPU time is sampled from `/proc/PID/stat`
//! exactly at the edges of the measured window.

mod cpu;
mod epoll;
mod histogram;
mod tls;

use std::io::{Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use histogram::Histogram;

#[derive(Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Neutral TCP and TLS load generator for echo servers"
)]
struct Cli {
    /// Print one JSON object instead of a line of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// N connections of ping-pong with a fixed payload.
    Pingpong(PingpongArgs),
    /// Connection rate: connect, echo 1 byte, close with RST, repeat.
    Connect(ConnectArgs),
    /// Open N connections and hold them idle.
    Idle(IdleArgs),
    /// TLS handshake rate: connect, handshake, echo 1 byte, close with RST, repeat.
    Handshake(HandshakeArgs),
    /// Write a throw-away CA (ca.pem) and a localhost server certificate
    /// (cert.pem, key.pem) into a directory.
    TlsCerts(TlsCertsArgs),
}

#[derive(Args)]
struct TlsArgs {
    /// Speak TLS (server name `localhost`; epoll engine only).
    #[arg(long)]
    tls: bool,
    /// Verify the server against the authorities in this PEM file [default:
    /// accept any certificate, still checking the handshake signature].
    #[arg(long)]
    tls_ca: Option<PathBuf>,
}

#[derive(Args)]
struct HandshakeArgs {
    #[command(flatten)]
    common: Common,
    /// Concurrent handshake loops (an OS thread with a blocking socket each).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Verify the server against the authorities in this PEM file [default:
    /// accept any certificate, still checking the handshake signature].
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Keep rustls's client session cache (shared by all connections) so
    /// handshakes resume; without it every handshake is a full one.
    #[arg(long)]
    resumption: bool,
}

#[derive(Args)]
struct TlsCertsArgs {
    /// Directory to write ca.pem, cert.pem and key.pem into.
    dir: PathBuf,
}

#[derive(Args)]
struct Common {
    /// Server address (host:port).
    #[arg(long)]
    addr: String,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// OS threads for the epoll and tokio engines [default: CPUs this process may
    /// run on]; the threads engine runs one per connection or loop.
    #[arg(long)]
    threads: Option<usize>,
    /// PID of the server: report its CPU time per message over the measured window.
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Args)]
struct PingpongArgs {
    #[command(flatten)]
    common: Common,
    /// Concurrent connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Bytes per message (each way).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// How the connections are driven.
    #[arg(long, value_enum, default_value_t = Engine::Epoll)]
    engine: Engine,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Engine {
    /// An edge-triggered epoll loop per thread: one write and one read per message.
    Epoll,
    /// A tokio current_thread runtime per thread, a task per connection.
    Tokio,
    /// An OS thread with a blocking socket per connection.
    Threads,
}

#[derive(Args)]
struct ConnectArgs {
    #[command(flatten)]
    common: Common,
    /// Concurrent connect loops.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// How the loops are driven.
    #[arg(long, value_enum, default_value_t = ConnectEngine::Threads)]
    engine: ConnectEngine,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ConnectEngine {
    /// An OS thread with blocking sockets per loop (fewer syscalls per connection).
    Threads,
    /// A tokio current_thread runtime per thread (--threads), a task per loop.
    Tokio,
}

#[derive(Args)]
struct IdleArgs {
    /// Server address (host:port).
    #[arg(long)]
    addr: String,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 2000)]
    connections: usize,
    /// Seconds to hold the connections once all are established.
    #[arg(long, default_value_t = 60.0)]
    hold: f64,
    /// Also stop holding when standard input reaches end of file.
    #[arg(long)]
    until_stdin_eof: bool,
    /// Connection attempts in flight while establishing.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

// ---------------------------------------------------------------------------
// Shared run state

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

struct Shared {
    phase: AtomicU8,
    connected: AtomicUsize,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            phase: AtomicU8::new(WARMUP),
            connected: AtomicUsize::new(0),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }
}

impl Shared {
    fn error(&self, what: &str, e: std::io::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap();
        if first.is_none() {
            *first = Some(format!("{what}: {e}"));
        }
    }

    fn phase(&self) -> u8 {
        self.phase.load(Ordering::Relaxed)
    }
}

/// What one connection (or loop) measured.
#[derive(Default)]
struct Tally {
    hist: Histogram,
    /// Round trips completed in all phases, warm-up included.
    total: u64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.hist.merge(&other.hist);
        self.total += other.total;
    }
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("resolving {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Splits `total` units of work over `threads` threads, each running a
/// current_thread runtime that spawns `task(i)` for its share; every thread
/// sends back the merged tally of its tasks.
fn spawn_runtimes<F, Fut>(total: usize, threads: usize, task: F) -> mpsc::Receiver<Tally>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Tally> + Send + 'static,
{
    let threads = threads.clamp(1, total.max(1));
    let task = Arc::new(task);
    let (tx, rx) = mpsc::channel();
    for t in 0..threads {
        let share = total / threads + usize::from(t < total % threads);
        let task = task.clone();
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("loadgen-{t}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building a tokio runtime");
                let tally = rt.block_on(async move {
                    let mut set = tokio::task::JoinSet::new();
                    for i in 0..share {
                        set.spawn(task(t + i * threads));
                    }
                    let mut tally = Tally::default();
                    while let Some(r) = set.join_next().await {
                        tally.add(&r.expect("load task panicked"));
                    }
                    tally
                });
                let _ = tx.send(tally);
            })
            .expect("spawning a load thread");
    }
    rx
}

/// The measured window: warm-up, then `duration` of measuring, with CPU
/// samples of the server and of this process at both edges.
struct Window {
    elapsed: Duration,
    server_cpu: Option<Duration>,
    own_cpu: Option<Duration>,
}

fn run_window(shared: &Shared, warmup: Duration, duration: Duration, pid: Option<u32>) -> Window {
    std::thread::sleep(warmup);
    let server0 = pid.and_then(|p| cpu::cpu_time(Some(p)));
    let own0 = cpu::cpu_time(None);
    let t0 = Instant::now();
    shared.phase.store(MEASURE, Ordering::Relaxed);
    std::thread::sleep(duration);
    shared.phase.store(STOP, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let server1 = pid.and_then(|p| cpu::cpu_time(Some(p)));
    let own1 = cpu::cpu_time(None);
    Window {
        elapsed,
        server_cpu: server0.zip(server1).map(|(a, b)| b.saturating_sub(a)),
        own_cpu: own0.zip(own1).map(|(a, b)| b.saturating_sub(a)),
    }
}

/// Collects `threads` tallies, waiting at most `grace` after the stop.
fn collect(rx: mpsc::Receiver<Tally>, threads: usize, grace: Duration) -> (Tally, usize) {
    let deadline = Instant::now() + grace;
    let mut tally = Tally::default();
    let mut missing = threads;
    while missing > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(t) => {
                tally.add(&t);
                missing -= 1;
            }
            Err(_) => break,
        }
    }
    (tally, missing)
}

// ---------------------------------------------------------------------------
// Reporting

struct Report {
    fields: Vec<(&'static str, Value)>,
}

enum Value {
    Int(u64),
    Num(f64),
    Str(String),
    Null,
}

impl Report {
    fn new(mode: &str) -> Self {
        Report {
            fields: vec![("mode", Value::Str(mode.to_string()))],
        }
    }

    fn push(&mut self, key: &'static str, v: Value) {
        self.fields.push((key, v));
    }

    fn json(&self) -> String {
        let body: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::Int(i) => i.to_string(),
                    Value::Num(x) if x.is_finite() => format!("{x:.3}"),
                    Value::Num(_) | Value::Null => "null".to_string(),
                    Value::Str(s) => {
                        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
                    }
                };
                format!("\"{k}\":{v}")
            })
            .collect();
        format!("{{{}}}", body.join(","))
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn opt_num(x: Option<f64>) -> Value {
    x.map_or(Value::Null, Value::Num)
}

/// Adds the common throughput, latency and CPU fields; returns the text line's tail.
fn report_window(
    r: &mut Report,
    tally: &Tally,
    win: &Window,
    unit: &'static str,
    errors: u64,
) -> (f64, String) {
    let secs = win.elapsed.as_secs_f64();
    let n = tally.hist.count();
    let rate = n as f64 / secs;
    let p50 = us(tally.hist.percentile(50.0));
    let p99 = us(tally.hist.percentile(99.0));
    let server_per = win
        .server_cpu
        .filter(|_| n > 0)
        .map(|c| c.as_secs_f64() * 1e6 / n as f64);
    let server_util = win.server_cpu.map(|c| c.as_secs_f64() / secs);
    let own_util = win.own_cpu.map(|c| c.as_secs_f64() / secs);
    let own_per = win
        .own_cpu
        .filter(|_| n > 0)
        .map(|c| c.as_secs_f64() * 1e6 / n as f64);
    r.push("duration_s", Value::Num(secs));
    r.push(unit, Value::Int(n));
    r.push("total", Value::Int(tally.total));
    r.push("rate_per_s", Value::Num(rate));
    r.push("p50_us", Value::Num(p50));
    r.push("p99_us", Value::Num(p99));
    r.push("max_us", Value::Num(us(tally.hist.max())));
    r.push("errors", Value::Int(errors));
    r.push(
        "server_cpu_s",
        opt_num(win.server_cpu.map(|c| c.as_secs_f64())),
    );
    r.push("server_cpu_us_per_op", opt_num(server_per));
    r.push("server_cpu_util", opt_num(server_util));
    r.push("loadgen_cpu_util", opt_num(own_util));
    r.push("loadgen_cpu_us_per_op", opt_num(own_per));
    let mut tail = format!("p50 {p50:.1} us, p99 {p99:.1} us, errors {errors}");
    if let (Some(per), Some(util)) = (server_per, server_util) {
        tail += &format!(
            ", server CPU {per:.2} us/{} ({:.0}% of a core)",
            unit.trim_end_matches('s'),
            util * 100.0
        );
    }
    if let (Some(per), Some(util)) = (own_per, own_util) {
        tail += &format!(
            ", loadgen CPU {per:.2} us/{} ({:.0}%)",
            unit.trim_end_matches('s'),
            util * 100.0
        );
    }
    (rate, tail)
}

fn first_error(shared: &Shared) -> String {
    shared
        .first_error
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// pingpong

async fn pingpong_conn(addr: SocketAddr, payload: usize, shared: Arc<Shared>) -> Tally {
    let mut tally = Tally::default();
    let mut stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            shared.error("connect", e);
            return tally;
        }
    };
    let _ = stream.set_nodelay(true);
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let out = vec![0xa5u8; payload];
    let mut back = vec![0u8; payload];
    while shared.phase() != STOP {
        let t = Instant::now();
        if let Err(e) = stream.write_all(&out).await {
            shared.error("write", e);
            break;
        }
        if let Err(e) = stream.read_exact(&mut back).await {
            shared.error("read", e);
            break;
        }
        let rtt = t.elapsed().as_nanos() as u64;
        tally.total += 1;
        if shared.phase() == MEASURE {
            tally.hist.record(rtt);
        }
    }
    tally
}

fn pingpong_blocking_conn(addr: SocketAddr, payload: usize, shared: &Shared) -> Tally {
    let mut tally = Tally::default();
    let mut stream = match std::net::TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => {
            shared.error("connect", e);
            return tally;
        }
    };
    let _ = stream.set_nodelay(true);
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let out = vec![0xa5u8; payload];
    let mut back = vec![0u8; payload];
    while shared.phase() != STOP {
        let t = Instant::now();
        if let Err(e) = stream.write_all(&out) {
            shared.error("write", e);
            break;
        }
        if let Err(e) = stream.read_exact(&mut back) {
            shared.error("read", e);
            break;
        }
        let rtt = t.elapsed().as_nanos() as u64;
        tally.total += 1;
        if shared.phase() == MEASURE {
            tally.hist.record(rtt);
        }
    }
    tally
}

fn pingpong(a: PingpongArgs, json: bool) -> Result<(), String> {
    let addr = resolve(&a.common.addr)?;
    if a.connections == 0 || a.payload == 0 {
        return Err("--connections and --payload must be positive".into());
    }
    let tls_config = if a.tls.tls {
        if a.engine != Engine::Epoll {
            return Err("--tls needs --engine epoll".into());
        }
        // The pingpong connections are long-lived: resumption is irrelevant.
        Some(tls::client_config(a.tls.tls_ca.as_deref(), false)?)
    } else {
        None
    };
    let shared = Arc::new(Shared::default());
    let threads = a
        .common
        .threads
        .unwrap_or_else(default_threads)
        .clamp(1, a.connections);
    let payload = a.payload;
    let (rx, threads) = match a.engine {
        Engine::Threads => {
            let (tx, rx) = mpsc::channel();
            for _ in 0..a.connections {
                let (tx, shared) = (tx.clone(), shared.clone());
                std::thread::spawn(move || {
                    let _ = tx.send(pingpong_blocking_conn(addr, payload, &shared));
                });
            }
            (rx, a.connections)
        }
        Engine::Epoll => {
            let (tx, rx) = mpsc::channel();
            for t in 0..threads {
                let share = a.connections / threads + usize::from(t < a.connections % threads);
                let (tx, shared) = (tx.clone(), shared.clone());
                let tls_config = tls_config.clone();
                std::thread::Builder::new()
                    .name(format!("loadgen-{t}"))
                    .spawn(move || {
                        let tally = epoll::run(addr, share, payload, tls_config.as_ref(), &shared);
                        let _ = tx.send(tally);
                    })
                    .expect("spawning a load thread");
            }
            (rx, threads)
        }
        Engine::Tokio => {
            let sh = shared.clone();
            let rx = spawn_runtimes(a.connections, threads, move |_| {
                pingpong_conn(addr, payload, sh.clone())
            });
            (rx, threads)
        }
    };

    // Warm-up starts once every connection is up.
    let setup_deadline = Instant::now() + Duration::from_secs(30);
    while shared.connected.load(Ordering::Relaxed) < a.connections {
        if shared.errors.load(Ordering::Relaxed) > 0 || Instant::now() > setup_deadline {
            shared.phase.store(STOP, Ordering::Relaxed);
            return Err(format!(
                "only {} of {} connections established: {}",
                shared.connected.load(Ordering::Relaxed),
                a.connections,
                first_error(&shared)
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let win = run_window(
        &shared,
        secs(a.common.warmup),
        secs(a.common.duration),
        a.common.server_pid,
    );
    let (tally, missing) = collect(rx, threads, Duration::from_secs(10));
    let errors = shared.errors.load(Ordering::Relaxed);

    let mut r = Report::new("pingpong");
    r.push("connections", Value::Int(a.connections as u64));
    r.push("payload", Value::Int(a.payload as u64));
    let engine = match a.engine {
        Engine::Epoll => "epoll",
        Engine::Tokio => "tokio",
        Engine::Threads => "threads",
    };
    r.push("engine", Value::Str(engine.to_string()));
    r.push("threads", Value::Int(threads as u64));
    r.push("tls", Value::Int(u64::from(a.tls.tls)));
    let (rate, tail) = report_window(&mut r, &tally, &win, "msgs", errors);
    let mb = rate * a.payload as f64 / 1e6;
    r.push("msgs_per_s", Value::Num(rate));
    r.push("mb_per_s", Value::Num(mb));
    if json {
        println!("{}", r.json());
    } else {
        println!(
            "pingpong{} {} conns x {} B ({engine}, {threads} threads), {:.2} s: \
             {rate:.0} msgs/s, {mb:.2} MB/s, {tail}",
            if a.tls.tls { " TLS" } else { "" },
            a.connections,
            a.payload,
            win.elapsed.as_secs_f64()
        );
    }
    if missing > 0 {
        return Err(format!(
            "{missing} load threads did not finish within 10 s of the stop (server stuck?)"
        ));
    }
    if errors > 0 {
        return Err(format!("{errors} errors, first: {}", first_error(&shared)));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// connect

async fn connect_once(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(b"x").await?;
    let mut b = [0u8; 1];
    stream.read_exact(&mut b).await?;
    Ok(stream)
}

async fn connect_loop(addr: SocketAddr, shared: Arc<Shared>) -> Tally {
    let mut tally = Tally::default();
    while shared.phase() != STOP {
        let t = Instant::now();
        match connect_once(addr).await {
            Ok(stream) => {
                let dt = t.elapsed().as_nanos() as u64;
                // Close with RST: no TIME_WAIT on either side, so the client's
                // search for a free ephemeral port never becomes the bottleneck.
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                drop(stream);
                tally.total += 1;
                if shared.phase() == MEASURE {
                    tally.hist.record(dt);
                }
            }
            Err(e) => {
                shared.error("connect+echo", e);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    tally
}

fn connect_loop_blocking(addr: SocketAddr, shared: &Shared) -> Tally {
    let once = || -> std::io::Result<std::net::TcpStream> {
        let mut stream = std::net::TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.write_all(b"x")?;
        let mut b = [0u8; 1];
        stream.read_exact(&mut b)?;
        Ok(stream)
    };
    let mut tally = Tally::default();
    while shared.phase() != STOP {
        let t = Instant::now();
        match once() {
            Ok(stream) => {
                let dt = t.elapsed().as_nanos() as u64;
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                drop(stream);
                tally.total += 1;
                if shared.phase() == MEASURE {
                    tally.hist.record(dt);
                }
            }
            Err(e) => {
                shared.error("connect+echo", e);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    tally
}

fn connect(a: ConnectArgs, json: bool) -> Result<(), String> {
    let addr = resolve(&a.common.addr)?;
    let concurrency = a.concurrency.max(1);
    let threads = a
        .common
        .threads
        .unwrap_or_else(default_threads)
        .clamp(1, concurrency);
    let shared = Arc::new(Shared::default());
    let (rx, threads) = match a.engine {
        ConnectEngine::Tokio => {
            let sh = shared.clone();
            let rx = spawn_runtimes(concurrency, threads, move |_| {
                connect_loop(addr, sh.clone())
            });
            (rx, threads)
        }
        ConnectEngine::Threads => {
            let (tx, rx) = mpsc::channel();
            for _ in 0..concurrency {
                let (tx, shared) = (tx.clone(), shared.clone());
                std::thread::spawn(move || {
                    let _ = tx.send(connect_loop_blocking(addr, &shared));
                });
            }
            (rx, concurrency)
        }
    };
    let win = run_window(
        &shared,
        secs(a.common.warmup),
        secs(a.common.duration),
        a.common.server_pid,
    );
    let (tally, missing) = collect(rx, threads, Duration::from_secs(10));
    let errors = shared.errors.load(Ordering::Relaxed);

    let mut r = Report::new("connect");
    r.push("concurrency", Value::Int(concurrency as u64));
    r.push("threads", Value::Int(threads as u64));
    let (rate, tail) = report_window(&mut r, &tally, &win, "conns", errors);
    r.push("conns_per_s", Value::Num(rate));
    if json {
        println!("{}", r.json());
    } else {
        println!(
            "connect x{concurrency} ({threads} threads), {:.2} s: {rate:.0} conns/s, {tail}",
            win.elapsed.as_secs_f64()
        );
    }
    if missing > 0 {
        return Err(format!(
            "{missing} load threads did not finish within 10 s of the stop (server stuck?)"
        ));
    }
    if tally.hist.count() == 0 {
        return Err(format!("no connection succeeded: {}", first_error(&shared)));
    }
    if errors > 0 {
        eprintln!(
            "loadgen: {errors} failed attempts, first: {}",
            first_error(&shared)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// handshake

fn handshake(a: HandshakeArgs, json: bool) -> Result<(), String> {
    let addr = resolve(&a.common.addr)?;
    let concurrency = a.concurrency.max(1);
    let config = tls::client_config(a.tls_ca.as_deref(), a.resumption)?;
    let shared = Arc::new(Shared::default());
    let resumed = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel();
    for _ in 0..concurrency {
        let (tx, shared, config, resumed) =
            (tx.clone(), shared.clone(), config.clone(), resumed.clone());
        std::thread::spawn(move || {
            let (tally, n) = tls::handshake_loop(addr, &config, &shared);
            resumed.fetch_add(n, Ordering::Relaxed);
            let _ = tx.send(tally);
        });
    }
    let win = run_window(
        &shared,
        secs(a.common.warmup),
        secs(a.common.duration),
        a.common.server_pid,
    );
    let (tally, missing) = collect(rx, concurrency, Duration::from_secs(10));
    let errors = shared.errors.load(Ordering::Relaxed);
    let resumed = resumed.load(Ordering::Relaxed);

    let mut r = Report::new("handshake");
    r.push("concurrency", Value::Int(concurrency as u64));
    r.push("threads", Value::Int(concurrency as u64));
    r.push("resumption", Value::Int(u64::from(a.resumption)));
    let (rate, tail) = report_window(&mut r, &tally, &win, "handshakes", errors);
    r.push("handshakes_per_s", Value::Num(rate));
    r.push("resumed", Value::Int(resumed));
    if json {
        println!("{}", r.json());
    } else {
        println!(
            "handshake x{concurrency} (resumption {}), {:.2} s: {rate:.0} handshakes/s, \
             {resumed} resumed, {tail}",
            if a.resumption { "on" } else { "off" },
            win.elapsed.as_secs_f64()
        );
    }
    if missing > 0 {
        return Err(format!(
            "{missing} load threads did not finish within 10 s of the stop (server stuck?)"
        ));
    }
    if tally.hist.count() == 0 {
        return Err(format!("no handshake succeeded: {}", first_error(&shared)));
    }
    if errors > 0 {
        eprintln!(
            "loadgen: {errors} failed attempts, first: {}",
            first_error(&shared)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// idle

async fn idle_run(a: IdleArgs, addr: SocketAddr, json: bool) -> Result<(), String> {
    let started = Instant::now();
    let mut streams = Vec::with_capacity(a.connections);
    let mut pending = tokio::task::JoinSet::new();
    let mut next = 0;
    let mut first_err = None;
    loop {
        while next < a.connections && pending.len() < a.concurrency.max(1) && first_err.is_none() {
            pending.spawn(connect_once(addr));
            next += 1;
        }
        match pending.join_next().await {
            None => break,
            Some(Ok(Ok(s))) => streams.push(s),
            Some(Ok(Err(e))) => {
                first_err.get_or_insert(e.to_string());
            }
            Some(Err(e)) => {
                first_err.get_or_insert(e.to_string());
            }
        }
    }
    if let Some(e) = first_err {
        println!("FAILED {} of {}: {e}", streams.len(), a.connections);
        return Err(format!(
            "established {} of {} connections: {e}",
            streams.len(),
            a.connections
        ));
    }
    let took = started.elapsed().as_secs_f64();
    if json {
        let mut r = Report::new("idle");
        r.push("established", Value::Int(streams.len() as u64));
        r.push("setup_s", Value::Num(took));
        println!("{}", r.json());
    }
    println!("ESTABLISHED {}", streams.len());
    let _ = std::io::stdout().flush();

    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
    // Without --until-stdin-eof the sender stays here, so `eof_rx` never fires.
    let mut _unused_sender = None;
    if a.until_stdin_eof {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = eof_tx.send(());
        });
    } else {
        _unused_sender = Some(eof_tx);
    }
    tokio::select! {
        _ = tokio::time::sleep(secs(a.hold)) => {}
        _ = eof_rx => {}
    }
    drop(streams);
    Ok(())
}

fn idle(a: IdleArgs, json: bool) -> Result<(), String> {
    let addr = resolve(&a.addr)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(idle_run(a, addr, json))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.mode {
        Mode::Pingpong(a) => pingpong(a, cli.json),
        Mode::Connect(a) => connect(a, cli.json),
        Mode::Idle(a) => idle(a, cli.json),
        Mode::Handshake(a) => handshake(a, cli.json),
        Mode::TlsCerts(a) => tls::write_certificates(&a.dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            // Load threads may still be blocked on a stuck server.
            let _ = std::io::stdout().flush();
            std::process::exit(1);
        }
    }
}
