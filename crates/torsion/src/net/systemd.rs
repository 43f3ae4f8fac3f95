//! systemd socket activation (`sd_listen_fds(3)`; Twisted's `systemd:` endpoint and
//! `twisted.python.systemd.ListenFDs`): the listening sockets systemd opened for us, ready
//! for [`Reactor::adopt_stream_port`](crate::Reactor::adopt_stream_port) and
//! [`Reactor::adopt_datagram_port`](crate::Reactor::adopt_datagram_port).
//!
//! ```no_run
//! use std::rc::Rc;
//! use torsion::Reactor;
//! use torsion::protocol::Protocol;
//!
//! struct Quiet;
//! impl Protocol for Quiet {}
//!
//! let reactor = Reactor::new().unwrap();
//! for fd in torsion::net::systemd::listen_fds() {
//!     reactor.adopt_stream_port(fd, Rc::new(|| Quiet)).unwrap();
//! }
//! ```
//!
//! systemd passes the sockets as descriptors 3, 4, … and says how many in `LISTEN_FDS`,
//! for the process named by `LISTEN_PID` (so that children, which inherit the environment,
//! do not take them too).
//!
//! **The environment is left alone.** `sd_listen_fds(1)` unsets `LISTEN_PID`, `LISTEN_FDS`
//! and `LISTEN_FDNAMES`; in Rust 2024 `std::env::remove_var` is `unsafe`, because another
//! thread (the thread pool, a library) may read the environment at the same moment, which
//! is undefined behaviour in libc. Leaving the variables set is harmless: a child process
//! has another pid, so `LISTEN_PID` tells it the sockets are not its own. Instead, the
//! descriptors are handed out once per process: a second call to [`listen_fds`] returns
//! nothing, so no descriptor ever gets two owners.
//!
//! Invariant: a descriptor becomes an [`OwnedFd`] at most once per process, and only if it
//! is open.

use std::ffi::OsStr;
use std::ops::Range;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

static TAKEN: AtomicBool = AtomicBool::new(false);

/// The sockets systemd passed to this process, as owned descriptors, marked close-on-exec
/// (`sd_listen_fds(0)`). Empty when the process was not socket-activated, when
/// `LISTEN_PID` names another process, or on any call after the first.
pub fn listen_fds() -> Vec<OwnedFd> {
    let range = parse_listen_fds(
        std::env::var_os("LISTEN_PID").as_deref(),
        std::env::var_os("LISTEN_FDS").as_deref(),
        std::process::id(),
    );
    if range.is_empty() || TAKEN.swap(true, Ordering::AcqRel) {
        return Vec::new();
    }
    let mut fds = Vec::with_capacity(range.len());
    for raw in range {
        // SAFETY: F_GETFD only reads the descriptor's flags; on a number that is not an
        // open descriptor it fails with EBADF and touches nothing.
        if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
            crate::log::warning!(target: "torsion::systemd", "LISTEN_FDS names descriptor {raw}, which is not open");
            continue;
        }
        // SAFETY: the descriptor is open (checked just above), systemd passed it to this
        // process (LISTEN_PID is our pid), and TAKEN guarantees this happens once per
        // process, so the OwnedFd is its only owner.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if let Err(err) = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC) {
            crate::log::warning!(target: "torsion::systemd", "cannot set close-on-exec on {raw}: {err}");
        }
        fds.push(fd);
    }
    fds
}

/// The descriptors that `LISTEN_PID` and `LISTEN_FDS` (given as their values, `None` when
/// unset) pass to the process `pid`: `3..3 + n`, or an empty range when the variables are
/// unset, name another process, or are malformed (logged).
///
/// # Examples
///
/// ```
/// use std::ffi::OsStr;
/// use torsion::net::systemd::parse_listen_fds;
///
/// let us = 4242;
/// assert_eq!(parse_listen_fds(Some(OsStr::new("4242")), Some(OsStr::new("2")), us), 3..5);
/// assert!(parse_listen_fds(Some(OsStr::new("1")), Some(OsStr::new("2")), us).is_empty());
/// assert!(parse_listen_fds(None, None, us).is_empty());
/// ```
pub fn parse_listen_fds(
    listen_pid: Option<&OsStr>,
    listen_fds: Option<&OsStr>,
    pid: u32,
) -> Range<RawFd> {
    let empty = LISTEN_FDS_START..LISTEN_FDS_START;
    let (Some(listen_pid), Some(listen_fds)) = (listen_pid, listen_fds) else {
        return empty;
    };
    let Some(listen_pid) = listen_pid
        .to_str()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        crate::log::warning!(target: "torsion::systemd", "LISTEN_PID is not a process id: {listen_pid:?}");
        return empty;
    };
    if listen_pid != pid {
        return empty;
    }
    let count = listen_fds
        .to_str()
        .and_then(|s| s.trim().parse::<RawFd>().ok());
    match count {
        Some(n) if (0..=RawFd::MAX - LISTEN_FDS_START).contains(&n) => {
            LISTEN_FDS_START..LISTEN_FDS_START + n
        }
        _ => {
            crate::log::warning!(target: "torsion::systemd", "LISTEN_FDS is not a descriptor count: {listen_fds:?}");
            empty
        }
    }
}
