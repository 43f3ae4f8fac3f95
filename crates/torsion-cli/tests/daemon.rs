//! `daemonize` and `drop_privileges` in real child processes: this test binary runs itself
//! again as a helper that daemonizes (or drops privileges) and writes down what the daemon
//! sees; the tests check the helper's exit status and message, and that record.
//!
//! It has its own `main` (`harness = false` in Cargo.toml) because `daemonize` refuses a
//! process with more than one thread, and libtest runs every test on a thread of its own.
//!
//! Invariant: every helper is waited for with a deadline and killed past it, and every
//! temporary directory is removed, whatever the outcome.

use std::fs;
use std::io::Read;
use std::panic;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use torsion_cli::daemon::{
    DaemonError, DaemonOptions, daemonize, drop_privileges, gid_from_str, uid_from_str,
};

const HELPER: &str = "TORSION_TEST_DAEMON_HELPER";
const REPORT: &str = "TORSION_TEST_DAEMON_REPORT";
const UMASK: &str = "TORSION_TEST_DAEMON_UMASK";
const RUNDIR: &str = "TORSION_TEST_DAEMON_RUNDIR";
const UID: &str = "TORSION_TEST_UID";
const GID: &str = "TORSION_TEST_GID";

/// How long a helper may take.
const DEADLINE: Duration = Duration::from_secs(20);

fn main() {
    if let Ok(mode) = std::env::var(HELPER) {
        helper(&mode);
        return;
    }
    let tests: &[(&str, fn())] = &[
        (
            "the_daemon_is_detached_with_stdio_on_dev_null_and_the_parent_exits_0_after_started",
            the_daemon_is_detached_with_stdio_on_dev_null_and_the_parent_exits_0_after_started,
        ),
        (
            "without_options_the_daemon_runs_in_root_with_umask_077",
            without_options_the_daemon_runs_in_root_with_umask_077,
        ),
        (
            "the_parent_prints_the_reason_and_exits_1_after_failed",
            the_parent_prints_the_reason_and_exits_1_after_failed,
        ),
        (
            "the_parent_exits_1_when_the_daemon_stops_without_reporting",
            the_parent_exits_1_when_the_daemon_stops_without_reporting,
        ),
        (
            "a_missing_rundir_is_reported_by_the_parent",
            a_missing_rundir_is_reported_by_the_parent,
        ),
        (
            "a_process_with_threads_is_refused",
            a_process_with_threads_is_refused,
        ),
        (
            "drop_privileges_switches_user_group_and_supplementary_groups",
            drop_privileges_switches_user_group_and_supplementary_groups,
        ),
        (
            "drop_privileges_with_only_a_uid_takes_the_group_from_passwd",
            drop_privileges_with_only_a_uid_takes_the_group_from_passwd,
        ),
        (
            "drop_privileges_without_root_is_refused_with_a_clear_message",
            drop_privileges_without_root_is_refused_with_a_clear_message,
        ),
        (
            "drop_privileges_with_nothing_changes_nothing",
            drop_privileges_with_nothing_changes_nothing,
        ),
        (
            "users_and_groups_are_found_by_number_or_name",
            users_and_groups_are_found_by_number_or_name,
        ),
    ];
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed, mut filtered) = (0, 0, 0);
    println!("\nrunning {} tests", tests.len());
    for (name, test) in tests {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            filtered += 1;
            continue;
        }
        match panic::catch_unwind(test) {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {verdict}. {passed} passed; {failed} failed; 0 ignored; 0 measured; {filtered} filtered out\n"
    );
    if failed > 0 {
        std::process::exit(101);
    }
}

// ---------------------------------------------------------------------------------------
// The helper: what runs in the child processes.

fn helper(mode: &str) {
    match mode {
        "daemon" => daemon_helper(),
        "threaded" => {
            let _thread = std::thread::spawn(|| std::thread::sleep(Duration::from_secs(5)));
            match daemonize(&DaemonOptions::default()) {
                Err(e @ DaemonError::Threaded { .. }) => {
                    eprintln!("{e}");
                    std::process::exit(3);
                }
                Err(e) => {
                    eprintln!("unexpected error: {e}");
                    std::process::exit(4);
                }
                Ok(child) => {
                    let _ = child.failed("daemonize accepted a threaded process");
                    std::process::exit(5);
                }
            }
        }
        "privileges" => {
            let id = |var| {
                std::env::var(var)
                    .ok()
                    .map(|v: String| v.parse::<u32>().unwrap())
            };
            // "first" drops to nobody before the call under test, to run it unprivileged.
            if std::env::var("TORSION_TEST_FIRST").is_ok() {
                drop_privileges(Some(65534), Some(65534)).unwrap();
            }
            match drop_privileges(id(UID), id(GID)) {
                Ok(()) => {
                    let groups: Vec<u32> = rustix::process::getgroups()
                        .unwrap()
                        .iter()
                        .map(|g| g.as_raw())
                        .collect();
                    println!(
                        "{} {} {} {} {groups:?}",
                        rustix::process::getuid().as_raw(),
                        rustix::process::geteuid().as_raw(),
                        rustix::process::getgid().as_raw(),
                        rustix::process::getegid().as_raw(),
                    );
                }
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(2);
                }
            }
        }
        other => panic!("unknown helper mode {other}"),
    }
}

/// Daemonizes with the options in the environment, writes what the daemon sees to the
/// report file, then reports as `$REPORT_OUTCOME` says.
fn daemon_helper() {
    let report = PathBuf::from(std::env::var(REPORT).unwrap());
    let options = DaemonOptions {
        umask: std::env::var(UMASK)
            .ok()
            .map(|u| u32::from_str_radix(&u, 8).unwrap()),
        rundir: std::env::var_os(RUNDIR).map(PathBuf::from),
    };
    let outcome = std::env::var("TORSION_TEST_DAEMON_OUTCOME").unwrap();
    let child = match daemonize(&options) {
        Ok(child) => child,
        Err(e) => {
            eprintln!("daemonize failed in the original process: {e}");
            std::process::exit(7);
        }
    };
    // In the daemon. Wait until the first child has exited and we are reparented.
    let sid = rustix::process::getsid(None)
        .unwrap()
        .as_raw_nonzero()
        .get();
    let started = Instant::now();
    let mut ppid = parent_pid();
    while ppid == sid && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
        ppid = parent_pid();
    }
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let umask = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|u| u.trim().to_owned())
        .unwrap_or_default();
    let fd = |n: u32| {
        fs::read_link(format!("/proc/self/fd/{n}"))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|e| format!("error: {e}"))
    };
    let record = format!(
        "pid={}\nppid={ppid}\nsid={sid}\numask={umask}\ncwd={}\nstdin={}\nstdout={}\nstderr={}\n",
        std::process::id(),
        std::env::current_dir().unwrap().display(),
        fd(0),
        fd(1),
        fd(2),
    );
    // Written whole before the report, so the test finds it complete once the parent exits.
    let partial = report.with_extension("partial");
    fs::write(&partial, record).unwrap();
    fs::rename(&partial, &report).unwrap();
    // This goes to /dev/null: the test sees nothing of it.
    println!("printed by the daemon");
    eprintln!("printed by the daemon");
    match outcome.as_str() {
        "started" => child.started().unwrap(),
        "failed" => child.failed("it broke: port 80 is in use").unwrap(),
        _ => {
            // Stop without reporting: the pipe closes with the process.
            std::process::exit(3);
        }
    }
}

fn parent_pid() -> i32 {
    rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get())
}

// ---------------------------------------------------------------------------------------
// The tests' tools.

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "torsion-cli-daemon-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

struct Outcome {
    status: ExitStatus,
    pid: u32,
    stdout: String,
    stderr: String,
}

/// Runs this binary as a helper in `mode`, with `env`, within [`DEADLINE`].
fn run_helper(mode: &str, env: &[(&str, &str)]) -> Outcome {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .env(HELPER, mode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let pid = child.id();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the {mode} helper did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Outcome {
        status,
        pid,
        stdout,
        stderr,
    }
}

fn record(path: &Path) -> std::collections::HashMap<String, String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// This process's session id, or 0 when its session leader lives outside this pid
/// namespace (as in containers; rustix's `getsid` asserts on that case).
fn session_of_this_process() -> i32 {
    // SAFETY: getsid(0) takes no pointers and only reads the caller's session id.
    unsafe { libc::getsid(0) }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

// ---------------------------------------------------------------------------------------
// The tests.

fn the_daemon_is_detached_with_stdio_on_dev_null_and_the_parent_exits_0_after_started() {
    let dir = TempDir::new();
    let report = dir.0.join("report");
    let out = run_helper(
        "daemon",
        &[
            (REPORT, report.to_str().unwrap()),
            (UMASK, "027"),
            (RUNDIR, dir.0.to_str().unwrap()),
            ("TORSION_TEST_DAEMON_OUTCOME", "started"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.stderr, "");
    assert_eq!(out.stdout, "", "the daemon's output goes to /dev/null");
    let r = record(&report);
    let our_sid = session_of_this_process();
    let daemon: u32 = r["pid"].parse().unwrap();
    let sid: i32 = r["sid"].parse().unwrap();
    let ppid: i32 = r["ppid"].parse().unwrap();
    assert_ne!(
        daemon, out.pid,
        "the daemon is a grandchild of the process started"
    );
    assert_ne!(sid, our_sid, "the daemon is in a session of its own");
    assert_ne!(sid as u32, daemon, "the daemon is not the session leader");
    assert_ne!(ppid, sid, "the first child has exited");
    assert_ne!(ppid as u32, out.pid);
    assert_ne!(ppid as u32, std::process::id());
    assert_eq!(r["umask"], "0027");
    assert_eq!(PathBuf::from(&r["cwd"]), dir.0.canonicalize().unwrap());
    for fd in ["stdin", "stdout", "stderr"] {
        assert_eq!(r[fd], "/dev/null", "{fd}");
    }
}

fn without_options_the_daemon_runs_in_root_with_umask_077() {
    let dir = TempDir::new();
    let report = dir.0.join("report");
    let out = run_helper(
        "daemon",
        &[
            (REPORT, report.to_str().unwrap()),
            ("TORSION_TEST_DAEMON_OUTCOME", "started"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr);
    let r = record(&report);
    assert_eq!(r["umask"], "0077");
    assert_eq!(r["cwd"], "/");
}

fn the_parent_prints_the_reason_and_exits_1_after_failed() {
    let dir = TempDir::new();
    let report = dir.0.join("report");
    let out = run_helper(
        "daemon",
        &[
            (REPORT, report.to_str().unwrap()),
            ("TORSION_TEST_DAEMON_OUTCOME", "failed"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.stderr, "it broke: port 80 is in use\n");
    assert!(report.exists(), "the daemon ran");
}

fn the_parent_exits_1_when_the_daemon_stops_without_reporting() {
    let dir = TempDir::new();
    let report = dir.0.join("report");
    let out = run_helper(
        "daemon",
        &[
            (REPORT, report.to_str().unwrap()),
            ("TORSION_TEST_DAEMON_OUTCOME", "vanish"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr
            .contains("the daemon stopped before it reported that it started"),
        "{}",
        out.stderr
    );
}

fn a_missing_rundir_is_reported_by_the_parent() {
    let dir = TempDir::new();
    let report = dir.0.join("report");
    let missing = dir.0.join("missing");
    let out = run_helper(
        "daemon",
        &[
            (REPORT, report.to_str().unwrap()),
            (RUNDIR, missing.to_str().unwrap()),
            ("TORSION_TEST_DAEMON_OUTCOME", "started"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains(&format!(
            "cannot change to the directory {}",
            missing.display()
        )),
        "{}",
        out.stderr
    );
    assert!(!report.exists(), "the daemon never got to run");
}

fn a_process_with_threads_is_refused() {
    let out = run_helper("threaded", &[]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", out.stderr);
    assert!(
        out.stderr
            .contains("cannot daemonize a process with 2 threads"),
        "{}",
        out.stderr
    );
}

fn drop_privileges_switches_user_group_and_supplementary_groups() {
    if !is_root() {
        println!("skipped: needs root");
        return;
    }
    let out = run_helper("privileges", &[(UID, "65534"), (GID, "65534")]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "65534 65534 65534 65534 [65534]\n");
}

/// The primary group of `uid` in /etc/passwd, if it has an entry there.
fn passwd_gid(uid: u32) -> Option<u32> {
    fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find_map(|l| {
            let fields: Vec<&str> = l.split(':').collect();
            (fields.len() > 3 && fields[2] == uid.to_string()).then(|| fields[3].parse().ok())?
        })
}

fn drop_privileges_with_only_a_uid_takes_the_group_from_passwd() {
    if !is_root() {
        println!("skipped: needs root");
        return;
    }
    if let Some(gid) = passwd_gid(65534) {
        let out = run_helper("privileges", &[(UID, "65534")]);
        assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr);
        assert_eq!(out.stdout, format!("65534 65534 {gid} {gid} [{gid}]\n"));
    }
    // A UID nobody has: no group to take.
    let unknown = 3_999_123;
    assert_eq!(passwd_gid(unknown), None);
    let out = run_helper("privileges", &[(UID, "3999123")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stderr
            .contains("UID 3999123 has no passwd entry to take its group from; give --gid"),
        "{}",
        out.stderr
    );
}

fn drop_privileges_without_root_is_refused_with_a_clear_message() {
    if !is_root() {
        let out = run_helper("privileges", &[(UID, "0"), (GID, "0")]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            out.stderr.contains("need the runner to start as root"),
            "{}",
            out.stderr
        );
        return;
    }
    // Dropped to nobody first, the helper cannot get root back...
    let out = run_helper(
        "privileges",
        &[(UID, "0"), (GID, "0"), ("TORSION_TEST_FIRST", "1")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stderr
            .starts_with("cannot drop privileges: setgroups(0) failed: "),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("need the runner to start as root"),
        "{}",
        out.stderr
    );
    // ...but switching to the user and group it already is works without root.
    let out = run_helper(
        "privileges",
        &[(UID, "65534"), (GID, "65534"), ("TORSION_TEST_FIRST", "1")],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "65534 65534 65534 65534 [65534]\n");
}

fn drop_privileges_with_nothing_changes_nothing() {
    let out = run_helper("privileges", &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr);
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    assert!(
        out.stdout.starts_with(&format!("{uid} {uid} {gid} {gid} ")),
        "{}",
        out.stdout
    );
}

fn users_and_groups_are_found_by_number_or_name() {
    assert_eq!(uid_from_str("1234").unwrap(), 1234);
    assert_eq!(gid_from_str("1234").unwrap(), 1234);
    assert_eq!(uid_from_str("root").unwrap(), 0);
    assert_eq!(gid_from_str("root").unwrap(), 0);
    let err = uid_from_str("no-such-user-torsion").unwrap_err();
    assert!(
        matches!(err, DaemonError::UnknownName { kind: "user", .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "there is no user named \"no-such-user-torsion\""
    );
    let err = gid_from_str("no-such-group-torsion").unwrap_err();
    assert_eq!(
        err.to_string(),
        "there is no group named \"no-such-group-torsion\""
    );
    assert!(uid_from_str("nul\0inside").is_err());
}
