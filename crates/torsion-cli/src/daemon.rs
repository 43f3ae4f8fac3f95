//! Detaching from the terminal and dropping privileges: the runner's `--daemon`, `--umask`,
//! `--rundir`, `--uid` and `--gid` (Twisted's `twistd` `daemonize`, `--umask`, `-d`, and
//! `-u`/`-g` through `switchUID`).
//!
//! [`daemonize`] does what `twistd` does (fork, `setsid`, fork again, umask, `chdir`, stdio
//! to `/dev/null`) and one thing it does not: the process started from the shell does not
//! exit as soon as it has forked. It waits on a pipe until the daemon reports, through the
//! [`DaemonChild`] it is handed, that its services started (then it exits 0) or why they
//! did not (then it prints the reason and exits 1), so `torsion --daemon … && echo up`
//! means what it says, and a port already in use is an error on the terminal rather than a
//! line in a log file. If the daemon dies first, the pipe closes and the parent exits 1.
//!
//! [`drop_privileges`] switches to an unprivileged user and group once the privileged part
//! of start-up (binding ports below 1024, opening log files) is done.
//!
//! # The runner's order
//!
//! 1. Parse options; make every path (pidfile, log file, rundir) absolute; resolve
//!    `--uid`/`--gid` with [`uid_from_str`] and [`gid_from_str`].
//! 2. With `--daemon`, [`daemonize`]; from here on, report every start-up error with
//!    [`DaemonChild::failed`] before exiting.
//! 3. [`Pidfile::acquire`](crate::pidfile::Pidfile::acquire), so the PID is the daemon's.
//! 4. Open logging; build the reactor and the plugin's service; start it (privileged
//!    ports are bound here).
//! 5. [`drop_privileges`], then [`DaemonChild::started`] and
//!    [`notify::ready`](crate::notify::ready).
//! 6. On shutdown, [`notify::stopping`](crate::notify::stopping); drop the pidfile last.
//!    A pidfile in a directory only root may write to cannot be removed after the drop:
//!    give it a directory the service user owns.
//!
//! Invariant: [`daemonize`] runs while the process has a single thread, before the reactor
//! (or anything else that starts a thread) is built; a `fork` keeps only the calling
//! thread, so a lock held by any other thread would stay locked forever in the daemon. It
//! refuses to run otherwise.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rustix::fs::Mode;
use rustix::pipe::{PipeFlags, pipe_with};
use rustix::process::{Pid, WaitOptions};

/// The umask a daemon gets when [`DaemonOptions::umask`] is `None` (Twisted's, when it
/// daemonizes): files it creates are private to its user unless it says otherwise.
pub const DEFAULT_UMASK: u32 = 0o077;

/// The most the waiting parent reads from the daemon's report.
const MAX_REPORT: u64 = 64 * 1024;

/// The report's first byte when the services started.
const STARTED: u8 = b'+';

/// The report's first byte when start-up failed; the reason follows, in UTF-8.
const FAILED: u8 = b'-';

/// How [`daemonize`] sets the daemon up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonOptions {
    /// The daemon's umask; `None` is [`DEFAULT_UMASK`] (0o077).
    pub umask: Option<u32>,
    /// The directory the daemon runs in; `None` is `/`, so that the daemon does not keep a
    /// file system busy.
    pub rundir: Option<PathBuf>,
}

/// The daemon's end of the start-up report: tell the waiting parent whether the services
/// started, once, with [`started`](DaemonChild::started) or
/// [`failed`](DaemonChild::failed).
///
/// Dropping it without reporting closes the pipe: the parent then prints that the daemon
/// stopped before it reported, and exits 1.
#[derive(Debug)]
#[must_use = "the parent waits until the daemon calls `started` or `failed`"]
pub struct DaemonChild {
    report: File,
}

impl DaemonChild {
    /// Tells the waiting parent that the services started: it exits 0.
    ///
    /// # Errors
    ///
    /// [`DaemonError::Report`] if the pipe cannot be written (the parent was killed, for
    /// example); the daemon may carry on regardless.
    pub fn started(self) -> Result<(), DaemonError> {
        self.send(&[STARTED])
    }

    /// Tells the waiting parent that start-up failed and why: it prints `reason` (as
    /// given, followed by a newline) on its stderr, which is still the terminal's, and
    /// exits 1. The daemon should exit after this.
    ///
    /// # Errors
    ///
    /// [`DaemonError::Report`] if the pipe cannot be written.
    pub fn failed(self, reason: &str) -> Result<(), DaemonError> {
        let mut message = Vec::with_capacity(reason.len() + 1);
        message.push(FAILED);
        message.extend_from_slice(reason.as_bytes());
        self.send(&message)
    }

    fn send(mut self, message: &[u8]) -> Result<(), DaemonError> {
        // The pipe closes when `self` drops, which is what the parent waits for.
        self.report.write_all(message).map_err(DaemonError::Report)
    }
}

/// Why the process could not daemonize or drop its privileges.
#[derive(Debug)]
#[non_exhaustive]
pub enum DaemonError {
    /// The process has more than one thread, so forking it is not safe.
    Threaded {
        /// How many threads it has.
        threads: usize,
    },
    /// The start-up pipe could not be made.
    Pipe(io::Error),
    /// The first `fork` failed (the process limit, or no memory).
    Fork(io::Error),
    /// The daemon could not write its start-up report.
    Report(io::Error),
    /// `setgroups`, `setgid` or `setuid` failed.
    SetId {
        /// The call that failed.
        call: &'static str,
        /// The ID it was given.
        id: u32,
        /// What the system said.
        source: io::Error,
    },
    /// The IDs were set, but reading them back shows something else, or root could be
    /// regained.
    Unverified {
        /// What was found.
        what: String,
    },
    /// No group was given and the user has no passwd entry to take its group from.
    NoPasswdEntry {
        /// The user.
        uid: u32,
    },
    /// No user or group has this name.
    UnknownName {
        /// `"user"` or `"group"`.
        kind: &'static str,
        /// The name looked up.
        name: String,
    },
    /// The user or group database could not be read.
    Passwd {
        /// What was looked up: `UID 1000`, `user "www"`, `group "www"`.
        entry: String,
        /// What the system said.
        source: io::Error,
    },
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Threaded { threads } => write!(
                f,
                "cannot daemonize a process with {threads} threads: daemonize before the \
                 reactor or any thread is started"
            ),
            DaemonError::Pipe(e) => write!(f, "cannot daemonize: cannot make a pipe: {e}"),
            DaemonError::Fork(e) => write!(f, "cannot daemonize: fork failed: {e}"),
            DaemonError::Report(e) => write!(
                f,
                "cannot tell the process that started the daemon how start-up went: {e}"
            ),
            DaemonError::SetId { call, id, source } => {
                write!(f, "cannot drop privileges: {call}({id}) failed: {source}")?;
                if source.raw_os_error() == Some(libc::EPERM) {
                    f.write_str(" (--uid and --gid need the runner to start as root)")?;
                }
                Ok(())
            }
            DaemonError::Unverified { what } => {
                write!(f, "dropping privileges did not take effect: {what}")
            }
            DaemonError::NoPasswdEntry { uid } => write!(
                f,
                "cannot drop privileges: UID {uid} has no passwd entry to take its group \
                 from; give --gid as well"
            ),
            DaemonError::UnknownName { kind, name } => {
                write!(f, "there is no {kind} named {name:?}")
            }
            DaemonError::Passwd { entry, source } => {
                write!(f, "cannot look up {entry}: {source}")
            }
        }
    }
}

impl std::error::Error for DaemonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DaemonError::Pipe(e) | DaemonError::Fork(e) | DaemonError::Report(e) => Some(e),
            DaemonError::SetId { source, .. } | DaemonError::Passwd { source, .. } => Some(source),
            DaemonError::Threaded { .. }
            | DaemonError::Unverified { .. }
            | DaemonError::NoPasswdEntry { .. }
            | DaemonError::UnknownName { .. } => None,
        }
    }
}

/// Detaches the process from its terminal and session, returning in the daemon only.
///
/// The process forks; the child calls `setsid` (a new session, no controlling terminal)
/// and forks again, so that the daemon, the grandchild, is not a session leader and can
/// never acquire a terminal; the child exits. The daemon sets its umask
/// ([`DaemonOptions::umask`], 0o077 by default), changes to [`DaemonOptions::rundir`] (`/`
/// by default) and points stdin, stdout and stderr at `/dev/null`, then this returns the
/// [`DaemonChild`] through which it must report how start-up went.
///
/// The original process never returns: it waits for that report, then exits 0 if the
/// daemon [`started`](DaemonChild::started), or prints the reason on stderr and exits 1 if
/// it [`failed`](DaemonChild::failed), stopped before reporting, or could not finish
/// daemonizing (a `chdir` to a missing rundir, for example).
///
/// Call it first: before the reactor is built, before any thread starts, before the
/// pidfile is acquired (so that it names the daemon) and before logging opens files. Make
/// relative paths absolute before calling it, since the daemon runs in another directory.
/// Output after it goes nowhere unless a log file is set up.
///
/// # Errors
///
/// Only before the first fork, in the original process: [`DaemonError::Threaded`] if the
/// process has more than one thread (counted in `/proc/self/task` where there is one),
/// [`DaemonError::Pipe`] or [`DaemonError::Fork`] if the system refuses. Failures after
/// the fork are reported to, and printed by, the waiting parent.
pub fn daemonize(options: &DaemonOptions) -> Result<DaemonChild, DaemonError> {
    if let Some(threads) = thread_count()
        && threads > 1
    {
        return Err(DaemonError::Threaded { threads });
    }
    let (read_end, write_end) =
        pipe_with(PipeFlags::CLOEXEC).map_err(|e| DaemonError::Pipe(e.into()))?;
    // Anything buffered would otherwise be written once by each process.
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();

    // SAFETY: the process has one thread (checked above, where /proc can tell), so the child
    // is a complete copy: no lock in it is held by a thread that does not exist there.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(DaemonError::Fork(io::Error::last_os_error()));
    }
    if pid > 0 {
        drop(write_end);
        wait_for_report(File::from(read_end), pid);
    }

    // The first child: a new session, then the daemon is forked from it.
    drop(read_end);
    let mut report = File::from(write_end);
    if let Err(e) = rustix::process::setsid() {
        abort_start(
            &mut report,
            &format!("cannot daemonize: setsid failed: {e}"),
        );
    }
    // SAFETY: this child has a single thread, as its parent had.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = io::Error::last_os_error();
        abort_start(
            &mut report,
            &format!("cannot daemonize: the second fork failed: {e}"),
        );
    }
    if pid > 0 {
        exit_now(0);
    }

    // The daemon.
    rustix::process::umask(Mode::from_raw_mode(options.umask.unwrap_or(DEFAULT_UMASK)));
    let rundir = options.rundir.as_deref().unwrap_or(Path::new("/"));
    if let Err(e) = rustix::process::chdir(rundir) {
        abort_start(
            &mut report,
            &format!(
                "cannot daemonize: cannot change to the directory {}: {e}",
                rundir.display()
            ),
        );
    }
    if let Err(e) = stdio_to_dev_null() {
        abort_start(
            &mut report,
            &format!("cannot daemonize: cannot point stdio at /dev/null: {e}"),
        );
    }
    Ok(DaemonChild { report })
}

/// Switches the whole process to group `gid` (its only group: supplementary groups are
/// set to it alone) and then to user `uid`, and checks that it took.
///
/// With only `uid`, the group is the user's primary group from the passwd database, as
/// Twisted does for `-u` without `-g`; keeping root's group would keep root's files open to
/// the service. With neither, nothing changes. Call it after the privileged part of
/// start-up (ports below 1024, log files, the pidfile) and before anything handles
/// requests. It changes every thread's IDs (through the C library), so it may run after
/// the reactor started.
///
/// After switching to a user other than root, it checks that `setuid(0)` now fails.
/// Unlike Twisted, it does not add the user's other groups (`initgroups`).
///
/// # Errors
///
/// - [`DaemonError::SetId`] if `setgroups`, `setgid` or `setuid` fails: usually `EPERM`,
///   because the process does not run as root. A process already in exactly that user
///   and group succeeds without root.
/// - [`DaemonError::Unverified`] if the IDs read back differ, or root can be regained.
/// - [`DaemonError::NoPasswdEntry`] or [`DaemonError::Passwd`] if only `uid` is given
///   and its group cannot be found.
pub fn drop_privileges(uid: Option<u32>, gid: Option<u32>) -> Result<(), DaemonError> {
    let gid = match (uid, gid) {
        (_, Some(gid)) => Some(gid),
        (Some(uid), None) => Some(primary_gid(uid)?),
        (None, None) => None,
    };
    if let Some(gid) = gid {
        set_group(gid)?;
    }
    if let Some(uid) = uid {
        set_user(uid)?;
    }
    Ok(())
}

/// The UID `user` names: a number as it is, else a user name looked up in the passwd
/// database (Twisted's `uidFromString`), for `--uid`.
///
/// # Errors
///
/// [`DaemonError::UnknownName`] if no user has that name, [`DaemonError::Passwd`] if the
/// database cannot be read.
pub fn uid_from_str(user: &str) -> Result<u32, DaemonError> {
    if let Ok(uid) = user.parse::<u32>() {
        return Ok(uid);
    }
    let name = c_name(user, "user")?;
    lookup(
        |entry: *mut libc::passwd, buf: &mut [u8], found: *mut *mut libc::passwd| {
            // SAFETY: `name` is NUL-terminated, `entry` and `found` are valid for writes, `buf`
            // is valid for `buf.len()` bytes.
            unsafe {
                libc::getpwnam_r(
                    name.as_ptr(),
                    entry,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    found,
                )
            }
        },
    )
    .map_err(|source| DaemonError::Passwd {
        entry: format!("user {user:?}"),
        source,
    })?
    .map(|entry| entry.pw_uid)
    .ok_or_else(|| DaemonError::UnknownName {
        kind: "user",
        name: user.to_owned(),
    })
}

/// The GID `group` names: a number as it is, else a group name looked up in the group
/// database (Twisted's `gidFromString`), for `--gid`.
///
/// # Errors
///
/// [`DaemonError::UnknownName`] if no group has that name, [`DaemonError::Passwd`] if the
/// database cannot be read.
pub fn gid_from_str(group: &str) -> Result<u32, DaemonError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let name = c_name(group, "group")?;
    lookup(
        |entry: *mut libc::group, buf: &mut [u8], found: *mut *mut libc::group| {
            // SAFETY: `name` is NUL-terminated, `entry` and `found` are valid for writes, `buf`
            // is valid for `buf.len()` bytes.
            unsafe {
                libc::getgrnam_r(
                    name.as_ptr(),
                    entry,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    found,
                )
            }
        },
    )
    .map_err(|source| DaemonError::Passwd {
        entry: format!("group {group:?}"),
        source,
    })?
    .map(|entry| entry.gr_gid)
    .ok_or_else(|| DaemonError::UnknownName {
        kind: "group",
        name: group.to_owned(),
    })
}

/// `name` as a C string; a name with a NUL in it names nobody.
fn c_name(name: &str, kind: &'static str) -> Result<std::ffi::CString, DaemonError> {
    std::ffi::CString::new(name).map_err(|_| DaemonError::UnknownName {
        kind,
        name: name.to_owned(),
    })
}

/// Runs a `get*_r` lookup with a buffer grown until the entry fits: `Ok(None)` if there is
/// no entry. The entry's strings point into the buffer, so only its plain fields may be
/// used once this returns.
fn lookup<T: Copy>(
    mut call: impl FnMut(*mut T, &mut [u8], *mut *mut T) -> libc::c_int,
) -> io::Result<Option<T>> {
    let mut buf = vec![0u8; 4096];
    loop {
        let mut entry = std::mem::MaybeUninit::<T>::uninit();
        let mut found: *mut T = std::ptr::null_mut();
        let rc = call(entry.as_mut_ptr(), &mut buf, &mut found);
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if found.is_null() {
            return Ok(None);
        }
        // SAFETY: the lookup returned 0 with a non-null result, which points at `entry`,
        // now initialised.
        return Ok(Some(unsafe { entry.assume_init() }));
    }
}

/// `setgroups([gid])`, `setgid(gid)`, and the check.
fn set_group(gid: u32) -> Result<(), DaemonError> {
    let groups = [gid as libc::gid_t];
    // SAFETY: `groups` is a valid array of the one gid_t we pass as its length.
    if unsafe { libc::setgroups(1, groups.as_ptr()) } != 0 {
        let source = io::Error::last_os_error();
        // Without root, only a process that has no other group anyway may go on.
        let already = rustix::process::getgroups()
            .map(|current| current.iter().all(|g| g.as_raw() == gid))
            .unwrap_or(false);
        if source.raw_os_error() != Some(libc::EPERM) || !already {
            return Err(DaemonError::SetId {
                call: "setgroups",
                id: gid,
                source,
            });
        }
    }
    // SAFETY: setgid takes a plain integer; the C library applies it to every thread.
    if unsafe { libc::setgid(gid as libc::gid_t) } != 0 {
        return Err(DaemonError::SetId {
            call: "setgid",
            id: gid,
            source: io::Error::last_os_error(),
        });
    }
    let (real, effective) = (
        rustix::process::getgid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    if real != gid || effective != gid {
        return Err(DaemonError::Unverified {
            what: format!("asked for GID {gid}, the process has GID {real}, EGID {effective}"),
        });
    }
    let groups = rustix::process::getgroups().map_err(|e| DaemonError::SetId {
        call: "getgroups",
        id: gid,
        source: e.into(),
    })?;
    if groups.iter().any(|g| g.as_raw() != gid) {
        let groups: Vec<u32> = groups.iter().map(|g| g.as_raw()).collect();
        return Err(DaemonError::Unverified {
            what: format!("asked for group {gid} alone, the process is in groups {groups:?}"),
        });
    }
    Ok(())
}

/// `setuid(uid)`, and the checks.
fn set_user(uid: u32) -> Result<(), DaemonError> {
    // SAFETY: setuid takes a plain integer; the C library applies it to every thread.
    if unsafe { libc::setuid(uid as libc::uid_t) } != 0 {
        return Err(DaemonError::SetId {
            call: "setuid",
            id: uid,
            source: io::Error::last_os_error(),
        });
    }
    let (real, effective) = (
        rustix::process::getuid().as_raw(),
        rustix::process::geteuid().as_raw(),
    );
    if real != uid || effective != uid {
        return Err(DaemonError::Unverified {
            what: format!("asked for UID {uid}, the process has UID {real}, EUID {effective}"),
        });
    }
    // SAFETY: as above; this call is expected to fail.
    if uid != 0 && unsafe { libc::setuid(0) } == 0 {
        return Err(DaemonError::Unverified {
            what: format!("after switching to UID {uid}, setuid(0) still succeeds"),
        });
    }
    Ok(())
}

/// The primary group of `uid`, from the passwd database.
fn primary_gid(uid: u32) -> Result<u32, DaemonError> {
    lookup(
        |entry: *mut libc::passwd, buf: &mut [u8], found: *mut *mut libc::passwd| {
            // SAFETY: `entry` and `found` are valid for writes, `buf` is valid for `buf.len()`
            // bytes.
            unsafe {
                libc::getpwuid_r(
                    uid as libc::uid_t,
                    entry,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    found,
                )
            }
        },
    )
    .map_err(|source| DaemonError::Passwd {
        entry: format!("UID {uid}"),
        source,
    })?
    .map(|entry| entry.pw_gid)
    .ok_or(DaemonError::NoPasswdEntry { uid })
}

/// The number of threads in this process, where `/proc` can tell.
fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task")
        .ok()
        .map(|dir| dir.count())
}

/// Points stdin, stdout and stderr at `/dev/null`.
fn stdio_to_dev_null() -> io::Result<()> {
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    rustix::stdio::dup2_stdout(&null)?;
    rustix::stdio::dup2_stderr(&null)?;
    Ok(())
}

/// In a forked process that failed to become the daemon: report why, and exit.
fn abort_start(report: &mut File, reason: &str) -> ! {
    let mut message = vec![FAILED];
    message.extend_from_slice(reason.as_bytes());
    let _ = report.write_all(&message);
    exit_now(1)
}

/// Exits a forked process at once, without running the parent's exit handlers or
/// flushing buffers that belong to it.
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit only ends the process; it touches no memory of ours.
    unsafe { libc::_exit(code) }
}

/// In the original process: waits for the daemon's report, reaps the first child, and
/// exits as the report says.
fn wait_for_report(mut pipe: File, child: libc::pid_t) -> ! {
    let mut report = Vec::new();
    let read = (&mut pipe).take(MAX_REPORT).read_to_end(&mut report);
    if let Some(child) = Pid::from_raw(child) {
        while let Err(rustix::io::Errno::INTR) =
            rustix::process::waitpid(Some(child), WaitOptions::empty())
        {}
    }
    match (read, report.split_first()) {
        (Ok(_), Some((&STARTED, _))) => std::process::exit(0),
        (Ok(_), Some((&FAILED, reason))) => {
            eprintln!("{}", String::from_utf8_lossy(reason));
            std::process::exit(1)
        }
        (Ok(_), _) => {
            eprintln!("the daemon stopped before it reported that it started; see its log");
            std::process::exit(1)
        }
        (Err(e), _) => {
            eprintln!("cannot read the daemon's start-up report: {e}");
            std::process::exit(1)
        }
    }
}
