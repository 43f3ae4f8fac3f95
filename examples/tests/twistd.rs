//! The twistd part of Dave Peticolas' series (Part 16, "Twisted Daemonologie"): the
//! poetry server as a service run by the runner, detached from the terminal, its process
//! id in a pidfile and its log as JSON lines in a file, as `examples/README.md` shows:
//!
//! ```text
//! torsion --daemon --pidfile poetry.pid --log-format json --log-file poetry.log \
//!     poetry --listen tcp:10000:interface=127.0.0.1 poems/science.txt
//! ```
//!
//! The test runs that command, reads the pidfile, fetches the poem with client 4.0, sends
//! the daemon SIGTERM and checks that it stopped, removed its pidfile and logged it.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Child, listening_port, poem, poem_path, printed, run, torsion_bin};
use rustix::process::{Pid, Signal, kill_process, test_kill_process};

/// A directory of its own under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("torsion-examples-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("a temporary directory");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `pid` names a live process, not a zombie waiting to be reaped.
fn alive(pid: u32) -> bool {
    let Some(raw) = Pid::from_raw(pid as i32) else {
        return false;
    };
    if test_kill_process(raw).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => false,
    }
}

/// The daemon, which is not our child: killed on drop if still alive.
struct Daemon(u32);

impl Drop for Daemon {
    fn drop(&mut self) {
        if alive(self.0)
            && let Some(pid) = Pid::from_raw(self.0 as i32)
        {
            let _ = kill_process(pid, Signal::KILL);
        }
    }
}

/// Polls `condition` for up to 10 s; whether it held.
fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + common::DEADLINE;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}

/// The complete JSON events of the log file.
fn events(log: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line:?}"))
        })
        .collect()
}

fn daemon_args(pidfile: &std::path::Path, log: &std::path::Path) -> Vec<String> {
    let poem = poem_path("science.txt");
    [
        "--daemon",
        "--pidfile",
        pidfile.to_str().unwrap(),
        "--log-format",
        "json",
        "--log-file",
        log.to_str().unwrap(),
        "poetry",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        poem.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn the_poetry_daemon_writes_its_pidfile_serves_the_poem_and_stops_on_sigterm() {
    let dir = TempDir::new("twistd");
    let pidfile = dir.0.join("poetry.pid");
    let log = dir.0.join("poetry.log");
    let launched = run(torsion_bin(), daemon_args(&pidfile, &log));
    // Read the pidfile first, so that the daemon is killed whatever fails next.
    let pid: Option<u32> = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|text| text.trim().parse().ok());
    let _daemon = pid.map(Daemon);
    launched.assert_success();
    assert_eq!(launched.stdout_text(), "", "the launcher returns silently");
    let pid = pid.expect("the pidfile names the daemon once the launcher has returned");
    assert!(alive(pid), "the daemon {pid} is not running");

    // The port, from the log's "listening on" event.
    let mut port = None;
    assert!(
        eventually(|| {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            port = listening_port(&text);
            port.is_some()
        }),
        "no listening event in {}",
        log.display()
    );
    let port = port.expect("checked");
    let out = run(example!("get-poetry-4"), [port.to_string()]);
    out.assert_success();
    assert_eq!(out.stdout, printed(&poem("science.txt")));

    // A second daemon with the same pidfile is refused.
    let second = run(
        torsion_bin(),
        daemon_args(&pidfile, &dir.0.join("second.log")),
    );
    assert_ne!(second.status.code(), Some(0), "a second daemon started");
    assert!(
        second.stderr.contains(&pid.to_string()),
        "the refusal should name the running daemon: {}",
        second.stderr
    );

    kill_process(Pid::from_raw(pid as i32).expect("positive"), Signal::TERM).expect("SIGTERM");
    assert!(eventually(|| !alive(pid)), "the daemon is still running");
    assert!(!pidfile.exists(), "the pidfile was left behind");
    let events = events(&log);
    for event in &events {
        for key in ["message", "log_level", "log_namespace", "log_time"] {
            assert!(event.get(key).is_some(), "no {key} in {event}");
        }
    }
    let messages: Vec<&str> = events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        messages.iter().any(|m| m.starts_with("poetry started")),
        "{messages:#?}"
    );
    assert_eq!(messages.last(), Some(&"stopped"), "{messages:#?}");
}

#[test]
fn the_runner_refuses_a_poem_file_that_does_not_exist() {
    let out = Child::start(
        torsion_bin(),
        [
            "poetry",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "poems/no-such-poem.txt",
        ],
    )
    .finish();
    out.assert_code(1);
    assert!(
        out.stderr
            .contains("cannot read poem file poems/no-such-poem.txt"),
        "{}",
        out.stderr
    );
}
