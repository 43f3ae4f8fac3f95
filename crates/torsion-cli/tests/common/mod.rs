//! Shared by the runner's end-to-end tests: temporary directories, the `torsion` binary as
//! a child process (killed on drop, every wait bounded), loopback clients and servers.
//!
//! Invariant: nothing here leaves a process behind; every wait has a deadline.
#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process, test_kill_process};
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_torsion");

/// How long a runner may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a runner may take to exit once told to (or once it should exit by itself).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a socket operation may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a condition is polled.
pub const POLL: Duration = Duration::from_millis(10);

/// The `tcp:` endpoint every plugin listens on: a free port of the loopback interface.
pub const ANY_LOOPBACK_PORT: &str = "tcp:0:interface=127.0.0.1";

/// A poem of the repository's `poems/` directory.
pub fn poem_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../poems")
        .join(name)
}

pub fn read_poem(name: &str) -> Vec<u8> {
    let path = poem_path(name);
    fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A fresh directory under the system's temporary directory, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "torsion-runner-e2e-{}-{n}-{tag}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Bytes a reader thread collects from one of the child's pipes.
#[derive(Clone, Default)]
pub struct Collected(Arc<Mutex<Vec<u8>>>);

impl Collected {
    pub fn spawn_reader(mut source: impl Read + Send + 'static) -> (Collected, JoinHandle<()>) {
        let collected = Collected::default();
        let sink = collected.clone();
        let handle = thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match source.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => sink.lock().extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        });
        (collected, handle)
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.lock().clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock()).into_owned()
    }
}

/// The complete lines of `bytes` (a trailing piece without its newline is still being
/// written, and left out).
pub fn complete_lines(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    lines.pop(); // after the last '\n': empty, or an incomplete line
    lines
}

/// Where a runner's log lines are read from.
#[derive(Clone, Debug)]
pub enum LogSource {
    Stdout,
    Stderr,
    File(PathBuf),
}

/// How a runner ended, and everything it wrote.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub log_lines: Vec<String>,
}

impl Stopped {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Fails, showing what the runner said, unless it exited with `code`.
    pub fn assert_code(&self, code: i32) {
        assert_eq!(
            self.status.code(),
            Some(code),
            "exit status {:?} (signal {:?}), expected code {code}\nstderr:\n{}\nlog:\n{}",
            self.status,
            self.status.signal(),
            self.stderr,
            self.log_lines.join("\n")
        );
    }
}

/// The `torsion` binary running as a child process, with its stdout and stderr collected
/// by threads. Dropping it kills the child (SIGKILL) if it has not been waited for.
pub struct Torsion {
    pub child: Child,
    pub stdout: Collected,
    stderr: Collected,
    readers: Vec<JoinHandle<()>>,
    logs: LogSource,
    reaped: bool,
}

impl Torsion {
    /// The binary with `args`, stdin on /dev/null, stdout and stderr piped, and none of
    /// the environment variables that would change what it does.
    pub fn command<I, S>(args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Torsion::command_of(BIN, args)
    }

    /// As [`command`](Torsion::command), for another program: a runner with plugins of
    /// its own, or a shell that execs the binary.
    pub fn command_of<I, S>(program: impl AsRef<OsStr>, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut command = Command::new(program);
        command
            .args(args.into_iter().map(Into::into))
            .env_remove("NOTIFY_SOCKET")
            .env_remove("TORSION_REACTOR")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Starts the binary with `args`, its log read from stdout (JSON, as stdout is a pipe).
    pub fn start<I, S>(args: I) -> Torsion
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Torsion::spawn(Torsion::command(args), LogSource::Stdout)
    }

    /// Starts `command`, whose log lines are read from `logs`.
    pub fn spawn(mut command: Command, logs: LogSource) -> Torsion {
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        let mut readers = Vec::new();
        let stdout = match child.stdout.take() {
            Some(pipe) => {
                let (collected, handle) = Collected::spawn_reader(pipe);
                readers.push(handle);
                collected
            }
            None => Collected::default(),
        };
        let stderr = match child.stderr.take() {
            Some(pipe) => {
                let (collected, handle) = Collected::spawn_reader(pipe);
                readers.push(handle);
                collected
            }
            None => Collected::default(),
        };
        Torsion {
            child,
            stdout,
            stderr,
            readers,
            logs,
            reaped: false,
        }
    }

    /// Runs the binary with `args` to its end (killed past [`STOP_TIMEOUT`]).
    pub fn run<I, S>(args: I) -> Stopped
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Torsion::start(args).finish()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The complete log lines written so far.
    pub fn log_lines(&self) -> Vec<String> {
        match &self.logs {
            LogSource::Stdout => complete_lines(&self.stdout.bytes()),
            LogSource::Stderr => complete_lines(&self.stderr.bytes()),
            LogSource::File(path) => complete_lines(&fs::read(path).unwrap_or_default()),
        }
    }

    /// Waits until a log line satisfies `wanted` and returns it; fails (killing the child)
    /// if the child exits first or [`START_TIMEOUT`] passes.
    pub fn wait_for_log(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(line) = self.log_lines().into_iter().find(|l| wanted(l)) {
                return line;
            }
            let exited = self.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                // One last look: the line may have been written just before the exit.
                thread::sleep(Duration::from_millis(50));
                if let Some(line) = self.log_lines().into_iter().find(|l| wanted(l)) {
                    return line;
                }
                let stopped = self.kill();
                panic!(
                    "no log line {what} ({}); stderr:\n{}\nlog:\n{}",
                    match exited {
                        Some(status) => format!("the runner exited first: {status}"),
                        None => format!("not within {START_TIMEOUT:?}"),
                    },
                    stopped.stderr,
                    stopped.log_lines.join("\n")
                );
            }
            thread::sleep(POLL);
        }
    }

    /// The address the plugin listens on, from its `listening on tcp:…` JSON log line.
    pub fn listening(&mut self) -> SocketAddr {
        let line = self.wait_for_log("saying where the plugin listens", |line| {
            listening_address(line).is_some()
        });
        listening_address(&line).expect("checked by wait_for_log")
    }

    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(self.pid() as i32).expect("a child's pid is positive");
        kill_process(pid, signal).expect("cannot signal the runner");
    }

    /// SIGTERM, then [`finish`](Torsion::finish).
    pub fn stop(mut self) -> Stopped {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(Signal::TERM);
        }
        self.finish()
    }

    /// Waits for the child to exit (at most [`STOP_TIMEOUT`]; past it the child is killed
    /// and the test fails), then for its pipes to close; what it wrote.
    pub fn finish(mut self) -> Stopped {
        match self.wait_exit(STOP_TIMEOUT) {
            Some(status) => self.collect(status),
            None => {
                let stopped = self.kill();
                panic!(
                    "the runner did not exit within {STOP_TIMEOUT:?}; killed. stderr:\n{}\nlog:\n{}",
                    stopped.stderr,
                    stopped.log_lines.join("\n")
                );
            }
        }
    }

    /// The exit status, if the child exits within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.reaped = true;
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
                Ok(None) => return None,
                Err(e) => panic!("cannot wait for the runner: {e}"),
            }
        }
    }

    /// SIGKILL and reap the child; what it wrote.
    pub fn kill(&mut self) -> Stopped {
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .expect("cannot wait for the killed runner");
        self.reaped = true;
        self.collect(status)
    }

    /// Once the child has exited: waits (a little) for the reader threads to see the pipes
    /// close, and gathers the output.
    pub fn collect(&mut self, status: ExitStatus) -> Stopped {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            thread::sleep(POLL);
        }
        for reader in std::mem::take(&mut self.readers) {
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
        let mut log_lines = self.log_lines();
        // A last line without its newline (cut short) is shown too.
        let tail = match &self.logs {
            LogSource::Stdout => self.stdout.bytes(),
            LogSource::Stderr => self.stderr.bytes(),
            LogSource::File(path) => fs::read(path).unwrap_or_default(),
        };
        if let Some(rest) = String::from_utf8_lossy(&tail).rsplit('\n').next()
            && !rest.is_empty()
        {
            log_lines.push(rest.to_owned());
        }
        Stopped {
            status,
            stdout: self.stdout.bytes(),
            stderr: self.stderr.text(),
            log_lines,
        }
    }
}

impl Drop for Torsion {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether `pid` names a live process (not a zombie).
pub fn alive(pid: u32) -> bool {
    let Some(raw) = Pid::from_raw(pid as i32) else {
        return false;
    };
    if test_kill_process(raw).is_err() {
        return false;
    }
    // "PID (comm) STATE …": a zombie has exited.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => false,
    }
}

/// A daemon that is not our child: SIGKILLed on drop if it is still alive.
pub struct DaemonGuard {
    pub pid: u32,
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if alive(self.pid)
            && let Some(pid) = Pid::from_raw(self.pid as i32)
        {
            let _ = kill_process(pid, Signal::KILL);
        }
    }
}

/// Polls `condition` until it holds or `timeout` passes; whether it held.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

/// The address of a `listening on tcp:127.0.0.1:PORT` JSON log line.
pub fn listening_address(line: &str) -> Option<SocketAddr> {
    let event: Value = serde_json::from_str(line).ok()?;
    let message = event.get("message")?.as_str()?;
    if !message.starts_with("listening on ") {
        return None;
    }
    event
        .get("address")?
        .as_str()?
        .strip_prefix("tcp:")?
        .parse()
        .ok()
}

/// Checks that every line is a JSON object with Twisted's keys (`message`, `log_level`,
/// `log_namespace`, `log_time`); the parsed events.
pub fn assert_json_log(lines: &[String]) -> Vec<Value> {
    assert!(!lines.is_empty(), "no log lines at all");
    lines
        .iter()
        .map(|line| {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line:?}"));
            assert!(event.is_object(), "log line is not an object: {line}");
            for key in ["message", "log_level", "log_namespace"] {
                assert!(
                    event.get(key).is_some_and(Value::is_string),
                    "log line without a string {key:?}: {line}"
                );
            }
            assert!(
                event.get("log_time").is_some_and(Value::is_f64),
                "log line without a numeric log_time: {line}"
            );
            let level = event["log_level"].as_str().unwrap_or_default();
            assert!(
                ["debug", "info", "warn", "error", "critical"].contains(&level),
                "unknown log_level {level:?}: {line}"
            );
            event
        })
        .collect()
}

/// Whether some event's message is exactly `message`.
pub fn has_message(events: &[Value], message: &str) -> bool {
    events
        .iter()
        .any(|e| e.get("message").and_then(Value::as_str) == Some(message))
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream
}

/// Sends `data` on a new connection and reads as many bytes back (an echo's answer).
pub fn fetch_echo(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    stream.write_all(data).expect("send");
    let mut answer = vec![0u8; data.len()];
    stream.read_exact(&mut answer).expect("echo");
    answer
}

/// Everything the server sends until it closes, and in how many reads it came.
pub fn read_all(stream: &mut TcpStream) -> (Vec<u8>, usize) {
    let mut data = Vec::new();
    let mut reads = 0;
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (data, reads),
            Ok(n) => {
                data.extend_from_slice(&buf[..n]);
                reads += 1;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "reading from the server failed after {} bytes: {e}",
                data.len()
            ),
        }
    }
}

/// Connects, and reads what the server sends until it closes.
pub fn fetch(addr: SocketAddr) -> Vec<u8> {
    read_all(&mut connect(addr)).0
}

pub fn netstring(payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{}:", payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out.push(b',');
    out
}

/// A thread accepting on a loopback listener until dropped, handing each connection to
/// `serve` on a thread of its own and counting them.
pub struct TestServer {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("local address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let serve = Arc::new(serve);
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            stream.set_nonblocking(false).expect("blocking");
                            stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
                            stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
                            let serve = serve.clone();
                            thread::spawn(move || serve(stream));
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(POLL),
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            })
        };
        TestServer {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The client endpoint string of this server.
    pub fn endpoint(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.addr.port())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
