//! What to run: the program, its arguments, environment, working directory, user and
//! group, and the map of the child's descriptors (the arguments of Twisted's
//! `reactor.spawnProcess`), and the signals a child can be sent.
//!
//! Invariant: a [`ProcessSpec`] is plain data; nothing is opened or checked until
//! [`Reactor::spawn_process`](crate::Reactor::spawn_process) runs it.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::InvalidArgument;

/// What one of the child's descriptors is (a value of Twisted's `childFDs` map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildFd {
    /// A pipe the parent reads from and the child writes to (Twisted's `"r"`): its data
    /// arrives in [`child_data_received`](super::ProcessProtocol::child_data_received).
    Read,
    /// A pipe the parent writes to and the child reads from (Twisted's `"w"`): written
    /// with [`write_to_child`](super::ProcessTransportOps::write_to_child).
    Write,
    /// The parent's own descriptor, passed through as it is (Twisted's integer value).
    Inherit(RawFd),
}

/// A child process to start: the program and everything about how it runs (the arguments
/// of Twisted's `spawnProcess`, gathered in one value).
///
/// Unlike Twisted's `spawnProcess`, `args` does not include the program name (set a
/// different `argv[0]` with [`arg0`](ProcessSpec::arg0)), the program is looked up in
/// `PATH` when it has no `/`, and the child inherits this process's environment unless
/// [`env_clear`](ProcessSpec::env_clear) is called (Twisted's default `env={}` starts
/// children with no `PATH`, a common surprise).
///
/// # Examples
///
/// ```
/// use torsion::process::{ChildFd, ProcessSpec};
///
/// let spec = ProcessSpec::new("sh")
///     .args(["-c", "echo hello >&3"])
///     .env("LANG", "C")
///     .child_fd(3, ChildFd::Read);
/// assert_eq!(spec.program(), "sh");
/// ```
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub(crate) program: OsString,
    pub(crate) arg0: Option<OsString>,
    pub(crate) args: Vec<OsString>,
    pub(crate) env_clear: bool,
    pub(crate) env: BTreeMap<OsString, Option<OsString>>,
    pub(crate) path: Option<PathBuf>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) child_fds: BTreeMap<RawFd, ChildFd>,
    pub(crate) use_pty: bool,
}

impl ProcessSpec {
    /// Runs `program` with no arguments, this process's environment and working
    /// directory, and Twisted's default descriptors: `{0: Write, 1: Read, 2: Read}`.
    pub fn new(program: impl AsRef<OsStr>) -> ProcessSpec {
        ProcessSpec {
            program: program.as_ref().to_owned(),
            arg0: None,
            args: Vec::new(),
            env_clear: false,
            env: BTreeMap::new(),
            path: None,
            uid: None,
            gid: None,
            child_fds: BTreeMap::from([
                (0, ChildFd::Write),
                (1, ChildFd::Read),
                (2, ChildFd::Read),
            ]),
            use_pty: false,
        }
    }

    /// The program, as given.
    pub fn program(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> ProcessSpec {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments (Twisted's `args`, without the program name).
    pub fn args<I, S>(mut self, args: I) -> ProcessSpec
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// The name the child sees as `argv[0]` (Twisted's `args[0]`); the program by default.
    pub fn arg0(mut self, arg0: impl AsRef<OsStr>) -> ProcessSpec {
        self.arg0 = Some(arg0.as_ref().to_owned());
        self
    }

    /// Sets one environment variable (Twisted's `env`).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> ProcessSpec {
        self.env
            .insert(key.as_ref().to_owned(), Some(value.as_ref().to_owned()));
        self
    }

    /// Removes one environment variable from what the child inherits.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> ProcessSpec {
        self.env.insert(key.as_ref().to_owned(), None);
        self
    }

    /// Starts from an empty environment (Twisted's `env={}`) instead of this process's.
    pub fn env_clear(mut self) -> ProcessSpec {
        self.env_clear = true;
        self.env.retain(|_, v| v.is_some());
        self
    }

    /// The child's working directory (Twisted's `path`).
    pub fn path(mut self, dir: impl Into<PathBuf>) -> ProcessSpec {
        self.path = Some(dir.into());
        self
    }

    /// Runs the child as this user (Twisted's `uid`; needs the privilege to switch).
    pub fn uid(mut self, uid: u32) -> ProcessSpec {
        self.uid = Some(uid);
        self
    }

    /// Runs the child with this group (Twisted's `gid`).
    pub fn gid(mut self, gid: u32) -> ProcessSpec {
        self.gid = Some(gid);
        self
    }

    /// Replaces the whole descriptor map (Twisted's `childFDs`): the child gets exactly
    /// these descriptors; its other standard ones (0, 1, 2) are closed.
    pub fn child_fds(mut self, map: impl IntoIterator<Item = (RawFd, ChildFd)>) -> ProcessSpec {
        self.child_fds = map.into_iter().collect();
        self
    }

    /// Sets one entry of the descriptor map.
    pub fn child_fd(mut self, fd: RawFd, what: ChildFd) -> ProcessSpec {
        self.child_fds.insert(fd, what);
        self
    }

    /// Runs the child on a new pseudo-terminal (Twisted's `usePTY`): its descriptors 0, 1
    /// and 2 are the terminal, it leads a new session with the terminal as its controlling
    /// one, what it prints arrives as descriptor 1 and what is written goes to its input.
    /// The descriptor map must then be left at its default.
    pub fn use_pty(mut self, on: bool) -> ProcessSpec {
        self.use_pty = on;
        self
    }

    /// Checks what can be checked before spawning.
    pub(crate) fn validate(&self) -> Result<(), InvalidArgument> {
        if self.use_pty && self.child_fds != ProcessSpec::new("").child_fds {
            return Err(InvalidArgument(
                "a process on a pty has the terminal as descriptors 0, 1 and 2: leave the \
                 descriptor map at its default (Twisted raises ValueError)"
                    .into(),
            ));
        }
        if let Some(fd) = self.child_fds.keys().find(|fd| **fd < 0) {
            return Err(InvalidArgument(format!(
                "child descriptor {fd} is negative"
            )));
        }
        for (target, what) in &self.child_fds {
            if let ChildFd::Inherit(fd) = *what {
                // SAFETY: `fd` is not negative; fcntl(F_GETFD) only asks whether the number
                // is an open descriptor, and reports EBADF if it is not.
                let open = fd >= 0
                    && rustix::io::fcntl_getfd(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
                        .is_ok();
                if !open {
                    return Err(InvalidArgument(format!(
                        "descriptor {fd} to pass as the child's {target} is not open"
                    )));
                }
            }
        }
        if self.program.is_empty() {
            return Err(InvalidArgument("the program name is empty".into()));
        }
        Ok(())
    }
}

/// A signal to send a child (the argument of Twisted's `signalProcess`): by name
/// (`"TERM"`, `"SIGKILL"`) or number.
///
/// # Examples
///
/// ```
/// use torsion::process::Signal;
///
/// assert_eq!("TERM".parse::<Signal>().unwrap(), Signal::TERM);
/// assert_eq!("SIGKILL".parse::<Signal>().unwrap(), Signal::KILL);
/// assert_eq!("2".parse::<Signal>().unwrap(), Signal::INT);
/// assert!("NOPE".parse::<Signal>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

const NAMES: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("WINCH", libc::SIGWINCH),
];

impl Signal {
    /// `SIGTERM`: please stop.
    pub const TERM: Signal = Signal(libc::SIGTERM);
    /// `SIGKILL`: stop now.
    pub const KILL: Signal = Signal(libc::SIGKILL);
    /// `SIGINT`: what Ctrl-C sends.
    pub const INT: Signal = Signal(libc::SIGINT);
    /// `SIGHUP`: the terminal went away; by convention, reload.
    pub const HUP: Signal = Signal(libc::SIGHUP);

    /// The signal numbered `number`, if it is one this system knows by name.
    pub fn from_number(number: i32) -> Option<Signal> {
        rustix::process::Signal::from_named_raw(number).map(|_| Signal(number))
    }

    /// The signal's number.
    pub fn number(self) -> i32 {
        self.0
    }

    pub(crate) fn to_rustix(self) -> Option<rustix::process::Signal> {
        rustix::process::Signal::from_named_raw(self.0)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match NAMES.iter().find(|(_, n)| *n == self.0) {
            Some((name, _)) => write!(f, "SIG{name}"),
            None => write!(f, "signal {}", self.0),
        }
    }
}

impl FromStr for Signal {
    type Err = InvalidArgument;

    fn from_str(s: &str) -> Result<Signal, InvalidArgument> {
        let bad = || InvalidArgument(format!("{s:?} is not a signal name or number"));
        if let Ok(number) = s.parse::<i32>() {
            return Signal::from_number(number).ok_or_else(bad);
        }
        let upper = s.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, number)| Signal(*number))
            .ok_or_else(bad)
    }
}

impl From<Signal> for i32 {
    fn from(signal: Signal) -> i32 {
        signal.0
    }
}
