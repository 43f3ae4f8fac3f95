//! Starting the child: pipes for its descriptor map, then `posix_spawnp` (Twisted's
//! `process._BaseProcess._fork` and its `posix_spawnp` path).
//!
//! Every descriptor torsion opens is close-on-exec, and the spawn closes whatever else is
//! above the child's highest mapped descriptor in one step (`closefrom` in the spawn's file
//! actions, `close_range` on the other path), so the cost of a spawn does not grow with
//! `ulimit -n` (Twisted's #4522 closed them one by one). `posix_spawnp` reports a program
//! that cannot be run as an error, having reaped the child, so no zombie is left.
//!
//! A child to run as another user or group cannot go through `posix_spawnp`; it goes
//! through `std::process::Command` instead, which supports the standard descriptors only.
//!
//! Invariant: before a mapped descriptor is placed, every source is first duplicated above
//! the highest target, so that placing one can never overwrite another still to be placed.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;

use super::spec::{ChildFd, ProcessSpec};
use crate::net::pipe::set_nonblocking;

/// The parent's side of a started child.
pub(crate) struct Spawned {
    pub(crate) pid: i32,
    /// The parent's ends of the pipes, by the child's descriptor number, non-blocking.
    pub(crate) pipes: Vec<(RawFd, ChildFd, OwnedFd)>,
    /// The pty's master, non-blocking, for a child on a pty.
    pub(crate) pty_master: Option<OwnedFd>,
}

/// What the child gets at one of its descriptors.
enum Source<'a> {
    Owned(OwnedFd),
    Borrowed(BorrowedFd<'a>),
}

impl Source<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Source::Owned(fd) => fd.as_fd(),
            Source::Borrowed(fd) => *fd,
        }
    }
}

fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// Starts the child `spec` describes.
pub(crate) fn spawn(spec: &ProcessSpec) -> io::Result<Spawned> {
    let mut pipes = Vec::new();
    let mut sources: Vec<(RawFd, Source<'_>)> = Vec::new();
    let mut pty_master = None;
    let mut pty_slave_path = None;
    if spec.use_pty {
        let master = rustix::pty::openpt(
            rustix::pty::OpenptFlags::RDWR
                | rustix::pty::OpenptFlags::NOCTTY
                | rustix::pty::OpenptFlags::CLOEXEC,
        )?;
        rustix::pty::grantpt(&master)?;
        rustix::pty::unlockpt(&master)?;
        pty_slave_path = Some(rustix::pty::ptsname(&master, Vec::new())?);
        set_nonblocking(&master)?;
        pty_master = Some(master);
    } else {
        for (&target, &what) in &spec.child_fds {
            match what {
                ChildFd::Read => {
                    let (read, write) = cloexec_pipe()?;
                    set_nonblocking(&read)?;
                    pipes.push((target, what, read));
                    sources.push((target, Source::Owned(write)));
                }
                ChildFd::Write => {
                    let (read, write) = cloexec_pipe()?;
                    set_nonblocking(&write)?;
                    pipes.push((target, what, write));
                    sources.push((target, Source::Owned(read)));
                }
                ChildFd::Inherit(fd) => {
                    // SAFETY: the caller named `fd` as one of its open descriptors to pass
                    // on; it is only read (duplicated) during this call, while it stays
                    // open under the caller's ownership.
                    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
                    sources.push((target, Source::Borrowed(borrowed)));
                }
            }
        }
    }
    let pid = if spec.uid.is_some() || spec.gid.is_some() {
        spawn_with_command(spec, sources, pty_slave_path)?
    } else {
        posix_spawn(spec, sources, pty_slave_path)?
    };
    Ok(Spawned {
        pid,
        pipes,
        pty_master,
    })
}

fn cstring(bytes: impl Into<Vec<u8>>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a program name, argument or environment entry contains a NUL byte",
        )
    })
}

/// The child's environment as `KEY=VALUE` entries.
fn environment(spec: &ProcessSpec) -> io::Result<Vec<CString>> {
    let mut env: Vec<(OsString, OsString)> = if spec.env_clear {
        Vec::new()
    } else {
        std::env::vars_os().collect()
    };
    for (key, value) in &spec.env {
        env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            env.push((key.clone(), value.clone()));
        }
    }
    env.into_iter()
        .map(|(k, v)| {
            let mut entry = k.into_vec();
            entry.push(b'=');
            entry.extend(v.into_vec());
            cstring(entry)
        })
        .collect()
}

/// Owns a `posix_spawn_file_actions_t` and a `posix_spawnattr_t`.
struct SpawnSetup {
    actions: libc::posix_spawn_file_actions_t,
    attr: libc::posix_spawnattr_t,
}

impl SpawnSetup {
    fn new() -> io::Result<Box<SpawnSetup>> {
        // SAFETY: both are plain C structs that the init calls below fill in before any
        // other use; zeroed memory is only a placeholder.
        let mut setup: Box<SpawnSetup> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: initialising the structs we own; on failure nothing needs destroying.
        check(unsafe { libc::posix_spawn_file_actions_init(&mut setup.actions) })?;
        // SAFETY: as above.
        let attr = unsafe { libc::posix_spawnattr_init(&mut setup.attr) };
        if attr != 0 {
            // SAFETY: `actions` was initialised just above.
            unsafe { libc::posix_spawn_file_actions_destroy(&mut setup.actions) };
            return Err(io::Error::from_raw_os_error(attr));
        }
        Ok(setup)
    }
}

impl Drop for SpawnSetup {
    fn drop(&mut self) {
        // SAFETY: both were initialised in `new` and are destroyed once, here.
        unsafe {
            libc::posix_spawn_file_actions_destroy(&mut self.actions);
            libc::posix_spawnattr_destroy(&mut self.attr);
        }
    }
}

fn check(code: libc::c_int) -> io::Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(code))
    }
}

fn posix_spawn(
    spec: &ProcessSpec,
    sources: Vec<(RawFd, Source<'_>)>,
    pty_slave: Option<CString>,
) -> io::Result<i32> {
    let program = cstring(spec.program.as_bytes())?;
    let arg0 = cstring(spec.arg0.as_ref().unwrap_or(&spec.program).as_bytes())?;
    let mut argv = vec![arg0];
    for arg in &spec.args {
        argv.push(cstring(arg.as_bytes())?);
    }
    let envp = environment(spec)?;
    let dir = match &spec.path {
        Some(dir) => Some(cstring(dir.as_os_str().as_bytes())?),
        None => None,
    };
    let highest = sources.iter().map(|(t, _)| *t).max().unwrap_or(2).max(2);
    // Every source moves above every target first (the invariant in the module doc).
    let mut lifted = Vec::with_capacity(sources.len());
    for (target, source) in &sources {
        let copy = rustix::io::fcntl_dupfd_cloexec(source.fd(), highest + 1)?;
        lifted.push((*target, copy));
    }
    drop(sources);

    let mut setup = SpawnSetup::new()?;
    let actions = &mut setup.actions;
    if let Some(slave) = &pty_slave {
        // After setsid, the first terminal the session leader opens without O_NOCTTY
        // becomes its controlling terminal.
        // SAFETY: `actions` is initialised; the path outlives the spawn call.
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(actions, 0, slave.as_ptr(), libc::O_RDWR, 0)
        })?;
        for target in [1, 2] {
            // SAFETY: as above.
            check(unsafe { libc::posix_spawn_file_actions_adddup2(actions, 0, target) })?;
        }
    } else {
        for (target, copy) in &lifted {
            // SAFETY: `actions` is initialised; `copy` stays open until after the spawn.
            check(unsafe {
                libc::posix_spawn_file_actions_adddup2(actions, copy.as_raw_fd(), *target)
            })?;
        }
        for standard in 0..=2 {
            if !spec.child_fds.contains_key(&standard) {
                // SAFETY: as above.
                check(unsafe { libc::posix_spawn_file_actions_addclose(actions, standard) })?;
            }
        }
    }
    // SAFETY: as above.
    check(unsafe { libc::posix_spawn_file_actions_addclosefrom_np(actions, highest + 1) })?;
    if let Some(dir) = &dir {
        // SAFETY: as above; `dir` outlives the spawn call.
        check(unsafe { libc::posix_spawn_file_actions_addchdir_np(actions, dir.as_ptr()) })?;
    }

    let mut flags = libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
    if pty_slave.is_some() {
        flags |= libc::POSIX_SPAWN_SETSID as libc::c_int;
    }
    // SAFETY: `attr` is initialised; the signal sets are plain values filled by the calls.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        // Signals this process ignores (SIGPIPE, by Rust's runtime) or blocks would stay so
        // in the child: every signal starts at its default, unblocked.
        check(libc::posix_spawnattr_setsigmask(&mut setup.attr, &empty))?;
        check(libc::posix_spawnattr_setsigdefault(&mut setup.attr, &all))?;
        check(libc::posix_spawnattr_setflags(
            &mut setup.attr,
            flags as libc::c_short,
        ))?;
    }

    let mut argv_ptrs: Vec<*mut libc::c_char> =
        argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut envp_ptrs: Vec<*mut libc::c_char> =
        envp.iter().map(|e| e.as_ptr().cast_mut()).collect();
    envp_ptrs.push(std::ptr::null_mut());
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: the program, argv and envp are
    // NUL-terminated strings in null-terminated arrays owned above, and the file actions
    // and attributes are initialised.
    let code = unsafe {
        libc::posix_spawnp(
            &mut pid,
            program.as_ptr(),
            &setup.actions,
            &setup.attr,
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
        )
    };
    drop(lifted);
    check(code)?;
    Ok(pid)
}

/// The path for a child that switches user or group: `std::process::Command`.
fn spawn_with_command(
    spec: &ProcessSpec,
    sources: Vec<(RawFd, Source<'_>)>,
    pty_slave: Option<CString>,
) -> io::Result<i32> {
    if sources.iter().any(|(target, _)| *target > 2) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a child run with a uid or gid can only be given descriptors 0, 1 and 2",
        ));
    }
    let mut command = std::process::Command::new(&spec.program);
    command.args(&spec.args);
    if let Some(arg0) = &spec.arg0 {
        command.arg0(arg0);
    }
    if spec.env_clear {
        command.env_clear();
    }
    for (key, value) in &spec.env {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    if let Some(dir) = &spec.path {
        command.current_dir(dir);
    }
    if let Some(uid) = spec.uid {
        command.uid(uid);
    }
    if let Some(gid) = spec.gid {
        command.gid(gid);
    }
    let mut standard: [Option<OwnedFd>; 3] = [None, None, None];
    if let Some(slave) = &pty_slave {
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(slave.as_bytes()));
        let terminal = rustix::fs::open(
            path,
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        for slot in &mut standard {
            *slot = Some(terminal.try_clone()?);
        }
        // SAFETY: runs in the child between fork and exec and calls only async-signal-safe
        // functions (setsid, ioctl) on its own descriptor 0, the terminal.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    } else {
        for (target, source) in sources {
            let fd = match source {
                Source::Owned(fd) => fd,
                Source::Borrowed(fd) => fd.try_clone_to_owned()?,
            };
            standard[target as usize] = Some(fd);
        }
    }
    let [stdin, stdout, stderr] = standard;
    let stdio = |fd: Option<OwnedFd>| fd.map_or_else(std::process::Stdio::null, Into::into);
    command.stdin(stdio(stdin));
    command.stdout(stdio(stdout));
    command.stderr(stdio(stderr));
    // SAFETY: runs in the child between fork and exec; close_range is async-signal-safe
    // and only marks descriptors close-on-exec (std's own error pipe among them, which is
    // close-on-exec already).
    unsafe {
        command.pre_exec(|| {
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
    let child = command.spawn()?;
    i32::try_from(child.id()).map_err(|_| io::Error::other("process id out of range"))
}
