//! The runner's plugins against real Twisted peers (from PyPI), over loopback: Twisted
//! poetry clients download from `torsion poetry` (fast, slow, and 500 in bursts), Twisted's
//! `NetstringReceiver` calls `torsion transform` (pipelined, at the limit, over it,
//! malformed), and 200 Twisted clients go through `torsion proxy` in front of a Twisted
//! poetry server. Everything is asserted byte for byte, in the peers
//! (`tests/interop/*.py`, which compare what they receive with the poem file) or here.
//!
//! The peers run under the Python of `TORSION_INTEROP_PYTHON` (set by `.ci/run`; locally,
//! `tests/interop/setup.sh` makes one), else the venv that script makes. Without one the
//! tests are skipped with a note, unless `TORSION_REQUIRE_INTEROP=1`, when they fail.
//!
//! Invariant: every peer process is killed when its test ends (a [`Peer`] kills on drop),
//! and every wait is bounded.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

mod common;
use common::*;

/// How long a peer may run.
const PEER_TIMEOUT: Duration = Duration::from_secs(60);

/// The Python with Twisted, or `None` (the test is skipped; a panic if peers are
/// required).
fn python() -> Option<String> {
    let mut candidates = Vec::new();
    if let Ok(python) = std::env::var("TORSION_INTEROP_PYTHON") {
        candidates.push(python);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let venv = PathBuf::from(home).join(".cache/torsion-interop-venv/bin/python");
        candidates.push(venv.to_string_lossy().into_owned());
    }
    let found = candidates.into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import twisted"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        assert!(
            std::env::var("TORSION_REQUIRE_INTEROP").map_or(true, |v| v != "1"),
            "TORSION_REQUIRE_INTEROP=1 and no Python with Twisted: run tests/interop/setup.sh"
        );
        eprintln!("skipped: no Python with Twisted (tests/interop/setup.sh makes one)");
    }
    found
}

/// A peer script of `tests/interop/`.
fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/interop")
        .join(name)
}

/// A Twisted peer process, its stdout read line by line; killed on drop.
struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Peer {
    fn start(python: &str, script_name: &str, args: &[&str]) -> Peer {
        let mut child = Command::new(python)
            .arg(script(script_name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {python} {script_name}: {e}"));
        let stdout = child.stdout.take().expect("a piped stdout");
        let (send, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Peer {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line, within the deadline.
    fn line(&mut self, deadline: Instant) -> Option<String> {
        let wait = deadline.saturating_duration_since(Instant::now());
        let line = self.lines.recv_timeout(wait).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// The port a server peer printed as `PORT n`.
    fn port(&mut self) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(line) = self.line(deadline) {
            if let Some(port) = line.strip_prefix("PORT ") {
                return port.parse().expect("a port number");
            }
        }
        panic!("the peer printed no port: {:?}", self.seen);
    }

    /// Every line until the peer exits (within [`PEER_TIMEOUT`]), and whether it exited 0.
    fn finish(mut self) -> (Vec<String>, bool) {
        let deadline = Instant::now() + PEER_TIMEOUT;
        while self.line(deadline).is_some() {}
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => break None,
            }
        };
        (
            std::mem::take(&mut self.seen),
            status.is_some_and(|s| s.success()),
        )
    }

    /// The lines seen so far, and any that arrive within `wait`.
    fn lines_after(&mut self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        while self.line(deadline).is_some() {}
        self.seen.clone()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the Twisted poetry clients against `port`: `count` downloads, `burst` at a time,
/// each compared with `poem` by the peer.
fn twisted_clients(python: &str, port: u16, count: usize, burst: usize, poem: &str) {
    let peer = Peer::start(
        python,
        "poetry_peers.py",
        &[
            "clients",
            &port.to_string(),
            &count.to_string(),
            &burst.to_string(),
            poem_path(poem).to_str().expect("a UTF-8 path"),
        ],
    );
    let (lines, ok) = peer.finish();
    assert!(ok, "the Twisted clients failed: {lines:?}");
    assert_eq!(lines, [format!("OK {count}")]);
}

/// Serves `poem` with `torsion poetry` and `extra` options.
fn torsion_poetry(poem: &str, extra: &[&str]) -> Torsion {
    let mut args = vec!["poetry", "--listen", ANY_LOOPBACK_PORT];
    args.extend_from_slice(extra);
    let path = poem_path(poem);
    let path = path.to_str().expect("a UTF-8 path").to_string();
    args.push(&path);
    Torsion::start(args)
}

#[test]
fn twisted_clients_download_fast_poetry_byte_for_byte() {
    let Some(python) = python() else { return };
    for poem in ["science.txt", "nachtlied.latin1.txt"] {
        let mut runner = torsion_poetry(poem, &[]);
        let port = runner.listening().port();
        twisted_clients(&python, port, 10, 10, poem);
        runner.stop().assert_code(0);
    }
}

#[test]
fn twisted_clients_download_slow_poetry_byte_for_byte() {
    let Some(python) = python() else { return };
    let mut runner = torsion_poetry("science.txt", &["--num-bytes", "10", "--delay", "0.01"]);
    let port = runner.listening().port();
    twisted_clients(&python, port, 5, 5, "science.txt");
    runner.stop().assert_code(0);
}

#[test]
fn five_hundred_twisted_clients_in_bursts_of_a_hundred() {
    let Some(python) = python() else { return };
    let mut runner = torsion_poetry("science.txt", &[]);
    let port = runner.listening().port();
    twisted_clients(&python, port, 500, 100, "science.txt");
    runner.stop().assert_code(0);
}

/// What the Twisted netstring client got from `torsion transform` for `case`.
fn transform_case(python: &str, port: u16, case: &str) -> Vec<String> {
    let peer = Peer::start(
        python,
        "netstring_peers.py",
        &["client", &port.to_string(), case],
    );
    let (lines, ok) = peer.finish();
    assert!(
        ok,
        "the Twisted netstring client failed on {case}: {lines:?}"
    );
    lines
}

#[test]
fn twisted_netstring_client_calls_torsion_transform() {
    let Some(python) = python() else { return };
    let mut runner = Torsion::start(["transform", "--listen", ANY_LOOPBACK_PORT]);
    let port = runner.listening().port();
    // Requests that arrive together are all answered, in order, then the server closes.
    assert_eq!(
        transform_case(&python, port, "pipelined"),
        [
            "ANSWER 11 hello world",
            "ANSWER 14 PIPELINED POEM",
            "ANSWER 7 the end",
            "CLOSED",
            "DONE",
        ]
    );
    // A request of exactly NetstringReceiver.MAX_LENGTH is answered.
    let limit = transform_case(&python, port, "limit");
    assert_eq!(
        limit,
        [
            format!("ANSWER 99993 {}", "X".repeat(40)),
            "CLOSED".to_string(),
            "DONE".to_string(),
        ]
    );
    // Over the limit, or not a netstring: that connection is closed without an answer...
    for case in ["over", "malformed"] {
        assert_eq!(
            transform_case(&python, port, case),
            ["CLOSED", "DONE"],
            "{case}"
        );
    }
    // ... and only that one: the service goes on.
    assert_eq!(transform_case(&python, port, "pipelined").len(), 5);
    let stopped = runner.stop();
    stopped.assert_code(0);
}

#[test]
fn two_hundred_twisted_clients_through_torsion_proxy_share_one_upstream_download() {
    let Some(python) = python() else { return };
    let mut upstream = Peer::start(
        &python,
        "poetry_peers.py",
        &[
            "server",
            poem_path("science.txt").to_str().expect("a UTF-8 path"),
        ],
    );
    let upstream_port = upstream.port();
    let server = format!("tcp:127.0.0.1:{upstream_port}");
    let mut proxy = Torsion::start(["proxy", "--listen", ANY_LOOPBACK_PORT, "--server", &server]);
    let port = proxy.listening().port();
    twisted_clients(&python, port, 200, 200, "science.txt");
    // Then from the cache.
    twisted_clients(&python, port, 10, 10, "science.txt");
    let lines = upstream.lines_after(Duration::from_millis(200));
    let connections = lines.iter().filter(|l| *l == "CONNECTION").count();
    assert_eq!(connections, 1, "the upstream server's lines: {lines:?}");
    proxy.stop().assert_code(0);
}
