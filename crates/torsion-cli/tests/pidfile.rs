//! The runner's pidfile against real files and real lock holders: another process of this
//! test binary holding it, util-linux's `flock(1)`, stale files naming dead and live
//! unrelated processes, and the places a pidfile cannot be.
//!
//! Invariant: every test works in its own temporary directory, removed when it ends, and
//! every process it starts is ended before it returns.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use torsion_cli::pidfile::{Pidfile, PidfileError};

/// The variable that turns this test binary into a process holding a pidfile.
const HOLD: &str = "TORSION_TEST_PIDFILE_HOLD";

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "torsion-cli-pidfile-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::set_permissions(&self.0, fs::Permissions::from_mode(0o755));
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child process, killed and reaped when dropped.
struct Holder {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Holder {
    /// Waits until the holder prints a line containing `token` (libtest's own lines come
    /// first, and it prints the helper's name on the same line as the helper's output).
    fn expect(&mut self, token: &str) {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "the holder exited without printing {token:?}");
            assert!(!line.contains("holder error:"), "{line}");
            if line.contains(token) {
                return;
            }
        }
    }

    /// Closes its stdin, which tells it to let go, and waits for it to exit.
    fn release(mut self) -> std::process::ExitStatus {
        drop(self.child.stdin.take());
        self.child.wait().unwrap()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_holder(mut command: Command) -> Holder {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    Holder { child, stdout }
}

/// Another process of this binary that acquires the pidfile at `path`, says `held`, and
/// holds it until its stdin closes.
fn hold_in_child(path: &Path) -> Holder {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "hold_helper", "--nocapture", "--test-threads=1"])
        .env(HOLD, path);
    spawn_holder(command)
}

/// Not a test: the body of [`hold_in_child`], a no-op unless `HOLD` is set.
#[test]
fn hold_helper() {
    let Some(path) = std::env::var_os(HOLD) else {
        return;
    };
    let mut out = std::io::stdout();
    match Pidfile::acquire(Path::new(&path)) {
        Ok(pidfile) => {
            writeln!(out, "held").unwrap();
            out.flush().unwrap();
            let mut rest = String::new();
            let _ = std::io::stdin().read_line(&mut rest);
            drop(pidfile);
        }
        Err(e) => {
            writeln!(out, "holder error: {e}").unwrap();
        }
    }
}

fn has_flock_command() -> bool {
    Command::new("flock")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn content(path: &Path) -> String {
    fs::read_to_string(path).unwrap()
}

#[test]
fn acquire_writes_our_pid_with_mode_0644_and_drop_removes_it() {
    let dir = TempDir::new();
    let path = dir.join("torsion.pid");
    let pidfile = Pidfile::acquire(&path).unwrap();
    assert_eq!(content(&path), format!("{}\n", std::process::id()));
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o644
    );
    assert_eq!(pidfile.path(), path);
    assert_eq!(pidfile.pid().unwrap(), Some(std::process::id()));
    drop(pidfile);
    assert!(!path.exists(), "the pidfile is removed when dropped");
}

#[test]
fn remove_removes_the_file_and_releases_the_lock() {
    let dir = TempDir::new();
    let path = dir.join("torsion.pid");
    Pidfile::acquire(&path).unwrap().remove().unwrap();
    assert!(!path.exists());
    let again = Pidfile::acquire(&path).unwrap();
    assert_eq!(content(&path), format!("{}\n", std::process::id()));
    drop(again);
}

#[test]
fn a_live_holder_is_refused_with_a_message_naming_its_pid() {
    let dir = TempDir::new();
    let path = dir.join("torsion.pid");
    let mut holder = hold_in_child(&path);
    holder.expect("held");
    let holder_pid = holder.child.id();

    let err = Pidfile::acquire(&path).unwrap_err();
    match &err {
        PidfileError::Running { pid, path: p } => {
            assert_eq!(*pid, Some(holder_pid));
            assert_eq!(p, &path);
        }
        other => panic!("expected Running, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&format!(
            "another torsion (PID {holder_pid}) holds {}",
            path.display()
        )),
        "{message}"
    );
    assert_eq!(Pidfile::pid_of(&path).unwrap(), Some(holder_pid));
    // The refusal leaves the holder's file alone.
    assert_eq!(content(&path), format!("{holder_pid}\n"));

    assert!(holder.release().success());
    assert!(
        !path.exists(),
        "the holder removes its pidfile when it stops"
    );
    let pidfile = Pidfile::acquire(&path).unwrap();
    assert_eq!(content(&path), format!("{}\n", std::process::id()));
    drop(pidfile);
}

#[test]
fn a_holder_killed_outright_leaves_a_stale_file_that_is_replaced() {
    let dir = TempDir::new();
    let path = dir.join("torsion.pid");
    let mut holder = hold_in_child(&path);
    holder.expect("held");
    let holder_pid = holder.child.id();
    holder.child.kill().unwrap();
    holder.child.wait().unwrap();
    // SIGKILL ran no destructor: the file is still there, naming the dead process.
    assert_eq!(content(&path), format!("{holder_pid}\n"));
    assert_eq!(Pidfile::pid_of(&path).unwrap(), None, "nobody holds it");

    let pidfile = Pidfile::acquire(&path).unwrap();
    assert_eq!(content(&path), format!("{}\n", std::process::id()));
    drop(pidfile);
}

#[test]
fn a_lock_held_by_flock_1_is_refused_naming_the_pid_in_the_file() {
    if !has_flock_command() {
        eprintln!("skipped: no flock(1)");
        return;
    }
    let dir = TempDir::new();
    let path = dir.join("torsion.pid");
    fs::write(&path, "4242\n").unwrap();
    // -o: the command does not inherit the lock, so closing its stdin ends every holder.
    let mut command = Command::new("flock");
    command
        .arg("-o")
        .arg(&path)
        .args(["sh", "-c", "echo locked; exec cat >/dev/null"]);
    let holder = spawn_holder(command);
    let mut holder = holder;
    holder.expect("locked");

    let err = Pidfile::acquire(&path).unwrap_err();
    assert!(
        matches!(
            err,
            PidfileError::Running {
                pid: Some(4242),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("PID 4242"), "{err}");

    assert!(holder.release().success());
    let pidfile = Pidfile::acquire(&path).unwrap();
    assert_eq!(content(&path), format!("{}\n", std::process::id()));
    drop(pidfile);
}

#[test]
fn a_stale_pidfile_naming_a_live_unrelated_process_is_replaced() {
    // Twisted's #3851: the PID was reused by a process that is not a torsion. Our parent
    // (cargo, or the shell) is alive and holds no lock on the file.
    let dir = TempDir::new();
    let path = dir.join("torsion.pid");
    let parent = rustix::process::getppid().unwrap().as_raw_nonzero().get();
    fs::write(&path, format!("{parent}\n")).unwrap();
    assert_eq!(Pidfile::pid_of(&path).unwrap(), None);

    let pidfile = Pidfile::acquire(&path).unwrap();
    assert_eq!(content(&path), format!("{}\n", std::process::id()));
    drop(pidfile);
    assert!(!path.exists());
}

#[test]
fn a_stale_pidfile_naming_a_dead_process_is_replaced() {
    let dir = TempDir::new();
    let path = dir.join("torsion.pid");
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    // A longer old content: nothing of it may survive the rewrite.
    fs::write(
        &path,
        format!("{dead_pid}\nsome trailing junk that is longer\n"),
    )
    .unwrap();

    let pidfile = Pidfile::acquire(&path).unwrap();
    assert_eq!(content(&path), format!("{}\n", std::process::id()));
    drop(pidfile);
}

#[test]
fn a_pidfile_with_garbage_in_it_is_replaced() {
    let dir = TempDir::new();
    let path = dir.join("torsion.pid");
    fs::write(&path, "not a pid\n").unwrap();
    let pidfile = Pidfile::acquire(&path).unwrap();
    assert_eq!(content(&path), format!("{}\n", std::process::id()));
    drop(pidfile);
}

#[test]
fn a_missing_directory_is_named_in_the_error() {
    let dir = TempDir::new();
    let path = dir.join("no/such/dir/torsion.pid");
    let err = Pidfile::acquire(&path).unwrap_err();
    assert!(matches!(err, PidfileError::NoDirectory { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains(&format!(
            "the directory {} does not exist",
            dir.join("no/such/dir").display()
        )),
        "{message}"
    );
}

#[test]
fn an_unwritable_place_is_an_open_error_naming_the_path() {
    let dir = TempDir::new();
    // Root may write anywhere but in /sys; anyone else is kept out of a 0555 directory.
    let path = if rustix::process::geteuid().is_root() {
        PathBuf::from("/sys/torsion-test.pid")
    } else {
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o555)).unwrap();
        dir.join("torsion.pid")
    };
    let err = Pidfile::acquire(&path).unwrap_err();
    assert!(matches!(err, PidfileError::Open { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("cannot open pidfile {}: ", path.display())),
        "{message}"
    );
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn a_directory_at_the_path_is_an_open_error() {
    let dir = TempDir::new();
    let err = Pidfile::acquire(&dir.0).unwrap_err();
    assert!(matches!(err, PidfileError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains(&dir.0.display().to_string()));
}

#[test]
fn a_symbolic_link_is_not_followed() {
    let dir = TempDir::new();
    let target = dir.join("elsewhere");
    fs::write(&target, "precious\n").unwrap();
    let path = dir.join("torsion.pid");
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let err = Pidfile::acquire(&path).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(content(&target), "precious\n");
}

#[test]
fn a_spawned_program_does_not_inherit_the_lock() {
    let dir = TempDir::new();
    let path = dir.join("torsion.pid");
    let pidfile = Pidfile::acquire(&path).unwrap();
    // A program the service spawns, still running after the runner let go.
    let mut command = Command::new("cat");
    command.stdout(Stdio::null());
    let mut spawned = command.stdin(Stdio::piped()).spawn().unwrap();
    drop(pidfile);

    let again = Pidfile::acquire(&path);
    drop(spawned.stdin.take());
    spawned.wait().unwrap();
    assert!(again.is_ok(), "{:?}", again.err());
}

#[test]
fn write_pid_replaces_the_content_and_a_file_naming_another_process_is_left_alone() {
    let dir = TempDir::new();
    let path = dir.join("torsion.pid");
    let pidfile = Pidfile::acquire(&path).unwrap();
    pidfile.write_pid(1_234_567).unwrap();
    assert_eq!(content(&path), "1234567\n");
    pidfile.write_pid(42).unwrap();
    assert_eq!(content(&path), "42\n");
    assert_eq!(pidfile.pid().unwrap(), Some(42));
    // As in a process forked from the holder: the file names someone else, so dropping
    // neither removes it nor unlocks it for them (closing our descriptor releases ours).
    drop(pidfile);
    assert_eq!(content(&path), "42\n");
    assert_eq!(Pidfile::pid_of(&path).unwrap(), None);
}

#[test]
fn pid_of_is_none_without_a_file() {
    let dir = TempDir::new();
    assert_eq!(Pidfile::pid_of(&dir.join("absent.pid")).unwrap(), None);
}

#[test]
fn errors_are_send_sync_and_static() {
    fn check<E: std::error::Error + Send + Sync + 'static>() {}
    check::<PidfileError>();
    check::<torsion_cli::daemon::DaemonError>();
}
