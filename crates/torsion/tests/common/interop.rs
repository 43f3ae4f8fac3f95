//! Real peers for the interop tests: finding them (a missing one skips its test, or fails
//! it when `TORSION_REQUIRE_INTEROP=1`), and running one as a child process whose output
//! is read line by line, killed after [`PEER_LIFETIME`] or when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use torsion::Reactor;
use torsion::time::ReactorTime;

/// How long a peer may live before it is killed.
pub const PEER_LIFETIME: Duration = Duration::from_secs(20);

/// Whether a missing peer fails the test instead of skipping it.
pub fn required() -> bool {
    std::env::var("TORSION_REQUIRE_INTEROP").is_ok_and(|v| v == "1")
}

/// `Some(found)`, or `None` after saying the test is skipped (a panic naming what to
/// install when peers are required).
pub fn need<T>(found: Option<T>, what: &str, install: &str) -> Option<T> {
    if found.is_none() {
        if required() {
            panic!("TORSION_REQUIRE_INTEROP=1 and {what} is missing: {install}");
        }
        eprintln!("skipped: {what} is missing ({install})");
    }
    found
}

pub fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A Python that can import `modules` (Twisted's, for the peers), or `None` after saying
/// the test is skipped: `$TORSION_INTEROP_PYTHON` (set by `.ci/run`), else the venv
/// `tests/interop/setup.sh` makes, else `/work/venv-twisted`, else `python3`.
pub fn twisted_python(modules: &str) -> Option<String> {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("TORSION_INTEROP_PYTHON") {
        candidates.push(p);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let venv = Path::new(&home).join(".cache/torsion-interop-venv/bin/python");
        candidates.push(venv.to_string_lossy().into_owned());
    }
    candidates.push("/work/venv-twisted/bin/python".into());
    candidates.push("python3".into());
    let found = candidates
        .into_iter()
        .find(|p| runs(p, &["-c", &format!("import {modules}")]));
    need(
        found,
        &format!("a Python with {modules} (set TORSION_INTEROP_PYTHON)"),
        "eval \"$(tests/interop/setup.sh)\"",
    )
}

/// A peer script of the repository's `tests/interop/`.
pub fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/interop")
        .join(name)
}

/// What a peer printed and how it ended.
pub struct Finished {
    pub status: ExitStatus,
    pub killed: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Both streams, for assertions that do not care which one a line went to.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (killed: {})\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.killed, self.stdout, self.stderr
        )
    }
}

/// A running peer: its standard output line by line, killed after [`PEER_LIFETIME`] or
/// when dropped.
pub struct Peer {
    lines: mpsc::Receiver<String>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    exited: Arc<AtomicBool>,
    kill: Arc<AtomicBool>,
    watchdog: Option<JoinHandle<(ExitStatus, bool)>>,
    readers: Vec<JoinHandle<()>>,
}

impl Peer {
    /// Starts `command`, writing `input` to its standard input and then closing it.
    pub fn spawn(command: &mut Command, input: &[u8]) -> Peer {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let mut readers = vec![std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        })];
        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let o = stdout.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                o.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        }));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let e = stderr.clone();
        readers.push(std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            e.lock().unwrap().push_str(&String::from_utf8_lossy(&buf));
        }));
        let exited = Arc::new(AtomicBool::new(false));
        let kill = Arc::new(AtomicBool::new(false));
        let (ex, k) = (exited.clone(), kill.clone());
        let watchdog = std::thread::spawn(move || {
            let start = Instant::now();
            let mut killed = false;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    ex.store(true, Ordering::SeqCst);
                    return (status, killed);
                }
                if !killed && (k.load(Ordering::SeqCst) || start.elapsed() > PEER_LIFETIME) {
                    let _ = child.kill();
                    killed = true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Peer {
            lines,
            stdout,
            stderr,
            exited,
            kill,
            watchdog: Some(watchdog),
            readers,
        }
    }

    /// Waits (10 s at most) for a line of standard output starting with `prefix`; returns
    /// the rest of it.
    pub fn line_starting(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line[prefix.len()..].to_string(),
                Ok(_) => {}
                Err(_) => panic!(
                    "the peer printed no line starting with {prefix:?}\n--- stdout\n{}\n--- stderr\n{}",
                    self.stdout.lock().unwrap(),
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    /// A flag that turns true when the peer has exited.
    pub fn exited(&self) -> Arc<AtomicBool> {
        self.exited.clone()
    }

    /// Waits for the peer to exit (it is killed at the end of its lifetime).
    pub fn finish(mut self) -> Finished {
        let (status, killed) = self.watchdog.take().unwrap().join().unwrap();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Finished {
            status,
            killed,
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill.store(true, Ordering::SeqCst);
    }
}

/// Runs the reactor until `done` says so (checked every 5 ms), 20 s at most.
pub fn run_until(reactor: &Reactor, done: impl Fn() -> bool + 'static) {
    fn poll(reactor: Reactor, done: Rc<dyn Fn() -> bool>) {
        if done() {
            let _ = reactor.stop();
        } else {
            let r = reactor.clone();
            reactor.call_later(0.005, move || poll(r, done));
        }
    }
    let r = reactor.clone();
    let done: Rc<dyn Fn() -> bool> = Rc::new(done);
    reactor.call_soon(move || poll(r, done));
    super::safety_stop(reactor, 20.0);
    reactor.run().unwrap();
    super::assert_not_timed_out();
}
