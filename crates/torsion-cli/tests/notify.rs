//! The `sd_notify` protocol against real datagram sockets standing in for systemd: one
//! bound to a path, one abstract; `$NOTIFY_SOCKET` is set only in child processes of this
//! test binary, never in the test process itself.
//!
//! Invariant: every socket file lives in a temporary directory removed when its test ends,
//! and every receive has a timeout.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use torsion_cli::notify::{NOTIFY_SOCKET, notify, notify_to, ready, status, stopping};

/// The variable that turns this test binary into a process that notifies.
const HELPER: &str = "TORSION_TEST_NOTIFY_HELPER";

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "torsion-cli-notify-{}-{}",
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

/// A socket systemd would listen on, at a path.
fn listener(dir: &TempDir) -> (UnixDatagram, PathBuf) {
    let path = dir.0.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (socket, path)
}

fn receive(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

/// Runs this binary's [`notify_helper`] with `NOTIFY_SOCKET` set to `socket` (or unset),
/// returning its PID and what it printed.
fn run_helper(mode: &str, socket: Option<&OsStr>) -> (u32, String) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "notify_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER, mode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    match socket {
        Some(socket) => command.env(NOTIFY_SOCKET, socket),
        None => command.env_remove(NOTIFY_SOCKET),
    };
    let child = command.spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the helper failed: {out:?}");
    (pid, String::from_utf8(out.stdout).unwrap())
}

/// Not a test: the body of [`run_helper`], a no-op unless `HELPER` is set.
#[test]
fn notify_helper() {
    let Ok(mode) = std::env::var(HELPER) else {
        return;
    };
    match mode.as_str() {
        "lifecycle" => {
            assert!(ready().unwrap());
            assert!(status("serving\non two ports").unwrap());
            assert!(stopping().unwrap());
        }
        "unset" => {
            println!(
                "notify={} ready={} stopping={}",
                notify("READY=1").unwrap(),
                ready().unwrap(),
                stopping().unwrap()
            );
        }
        other => panic!("unknown helper mode {other}"),
    }
}

#[test]
fn ready_status_and_stopping_reach_the_socket_in_notify_socket() {
    let dir = TempDir::new();
    let (socket, path) = listener(&dir);
    let (pid, _) = run_helper("lifecycle", Some(path.as_os_str()));
    assert_eq!(receive(&socket), format!("READY=1\nMAINPID={pid}"));
    assert_eq!(receive(&socket), "STATUS=serving on two ports");
    assert_eq!(receive(&socket), "STOPPING=1");
}

#[test]
fn an_abstract_notify_socket_is_reached() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("torsion-cli-notify-test-{}", std::process::id());
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    notify_to(OsStr::new(&format!("@{name}")), "READY=1").unwrap();
    assert_eq!(receive(&socket), "READY=1");

    let (pid, _) = run_helper("lifecycle", Some(OsStr::new(&format!("@{name}"))));
    assert_eq!(receive(&socket), format!("READY=1\nMAINPID={pid}"));
}

#[test]
fn notify_to_a_path_sends_the_state_as_one_datagram() {
    let dir = TempDir::new();
    let (socket, path) = listener(&dir);
    notify_to(path.as_os_str(), "READY=1\nSTATUS=up").unwrap();
    assert_eq!(receive(&socket), "READY=1\nSTATUS=up");
}

#[test]
fn without_notify_socket_nothing_is_sent() {
    let (_, out) = run_helper("unset", None);
    // libtest prints the helper's name on the same line.
    assert!(
        out.contains("notify=false ready=false stopping=false\n"),
        "{out}"
    );
}

#[test]
fn an_address_that_is_neither_a_path_nor_abstract_is_refused() {
    let err = notify_to(OsStr::new("relative/notify.sock"), "READY=1").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(
        err.to_string()
            .contains("NOTIFY_SOCKET=relative/notify.sock"),
        "{err}"
    );
}

#[test]
fn a_socket_nobody_listens_on_is_an_error() {
    let dir = TempDir::new();
    let err = notify_to(dir.0.join("gone.sock").as_os_str(), "READY=1").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}
