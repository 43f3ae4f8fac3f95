//! The runner's pidfile, held with an advisory lock for as long as the program runs
//! (Twisted's `twisted.application.runner._pidfile.PIDFile`, with the lock Twisted's #3851
//! asks for).
//!
//! Twisted decides whether a pidfile is stale by sending signal 0 to the PID in it, which
//! goes wrong both ways: a PID reused by an unrelated process keeps a dead program "running"
//! (#3851), and a live process of another user answers `EPERM` and blocks the start (#7555).
//! Here the file is locked with `flock(2)` while the program runs, so the question is only
//! "does anyone hold the lock?": if so, the file names a live torsion and
//! [`Pidfile::acquire`] refuses, naming its PID; if not, whatever the file says is stale by
//! definition (a dead process, or a reused PID that does not hold the lock) and it is
//! replaced. The lock goes away with the process, however it dies.
//!
//! # Why `flock` and not `fcntl` locks
//!
//! - Classic POSIX (`F_SETLK`) locks belong to the process and are dropped when the process
//!   closes *any* descriptor of the file (a library reading the pidfile by its path would
//!   silently release it), and they are not inherited across `fork`.
//! - Open-file-description locks (`F_OFD_SETLK`) behave like `flock` but are Linux-only.
//! - `flock` locks belong to the open file description, are available on Linux, the BSDs and
//!   macOS, and an administrator or a script can test them with util-linux's `flock(1)`
//!   (`flock -n /run/x.pid true` fails while torsion runs).
//!
//! The rule that follows: after a `fork` without `exec`, parent and child share the lock.
//! Either closing its descriptor leaves it held by the other, but an explicit unlock in
//! either releases it for both. So a [`Pidfile`] only unlocks (and removes the file) in the
//! process whose PID the file names, and the file is opened with `O_CLOEXEC`, so a program
//! the service spawns never holds the lock past the runner's exit. The runner daemonizes
//! *before* it acquires the pidfile (see [`crate::daemon`]); a program that acquires first
//! must call [`Pidfile::write_pid`] with its new PID in the daemon.
//!
//! Invariant: the file at the path names a live process exactly while that process holds
//! the lock on it; nothing here removes or unlocks a pidfile that names another process.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use rustix::fs::{FlockOperation, Mode, flock};

/// The permissions a pidfile gets: readable by everyone (monitoring and init scripts read
/// it; it holds nothing secret), whatever the umask (0o077 under `--daemon`).
const MODE: u32 = 0o644;

/// How many times [`Pidfile::acquire`] opens the path again when the file it locked was
/// removed or replaced in the meantime by the process that held it.
const OPEN_ATTEMPTS: usize = 8;

/// How long to wait, at most, for a process that has just taken the lock to write its PID,
/// so that the refusal can name it.
const PID_SETTLE: Duration = Duration::from_millis(50);

/// The longest pidfile content that is read back (a PID is at most 10 digits).
const MAX_CONTENT: usize = 64;

/// A pidfile this process holds: the path, locked, with this process's PID in it.
///
/// Dropping it (or [`remove`](Pidfile::remove)) removes the file and releases the lock, if
/// the file still names the current process.
///
/// # Examples
///
/// ```no_run
/// use std::path::Path;
/// use torsion_cli::pidfile::{Pidfile, PidfileError};
///
/// match Pidfile::acquire(Path::new("/run/echo.pid")) {
///     Ok(pidfile) => {
///         // … run the program; the file goes away with `pidfile`.
///         drop(pidfile);
///     }
///     Err(e @ PidfileError::Running { .. }) => eprintln!("{e}"),
///     Err(e) => eprintln!("{e}"),
/// }
/// ```
#[derive(Debug)]
pub struct Pidfile {
    file: File,
    path: PathBuf,
    released: bool,
}

/// Why a pidfile could not be acquired, read or removed. Each message names the path.
#[derive(Debug)]
#[non_exhaustive]
pub enum PidfileError {
    /// Another process holds the lock: a torsion program is running with this pidfile.
    Running {
        /// The PID written in the file, if it could be read.
        pid: Option<u32>,
        /// The pidfile.
        path: PathBuf,
    },
    /// The directory the pidfile should be in does not exist.
    NoDirectory {
        /// The pidfile.
        path: PathBuf,
        /// Its directory, which is missing.
        dir: PathBuf,
    },
    /// The file could not be opened or created (permissions, a read-only file system, a
    /// directory or a symbolic link at the path, …).
    Open {
        /// The pidfile.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The lock could not be taken for a reason other than another holder (for example a
    /// file system without locks), or the file kept being replaced while it was taken.
    Lock {
        /// The pidfile.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The PID could not be written, or the file's permissions set.
    Write {
        /// The pidfile.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The file could not be read back.
    Read {
        /// The pidfile.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The file could not be removed when the program stopped.
    Remove {
        /// The pidfile.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
}

impl fmt::Display for PidfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PidfileError::Running {
                pid: Some(pid),
                path,
            } => write!(
                f,
                "another torsion (PID {pid}) holds {}; stop it first, or choose another --pidfile",
                path.display()
            ),
            PidfileError::Running { pid: None, path } => write!(
                f,
                "another process holds the lock on {} (its PID could not be read); stop it \
                 first, or choose another --pidfile",
                path.display()
            ),
            PidfileError::NoDirectory { path, dir } => write!(
                f,
                "cannot create pidfile {}: the directory {} does not exist",
                path.display(),
                dir.display()
            ),
            PidfileError::Open { path, source } => {
                write!(f, "cannot open pidfile {}: {source}", path.display())?;
                match source.raw_os_error() {
                    Some(libc::ELOOP) => {
                        f.write_str(" (pidfiles are not opened through a symbolic link)")
                    }
                    Some(libc::EACCES | libc::EPERM) => f.write_str(
                        " (run as a user who may write there, or choose another --pidfile)",
                    ),
                    Some(libc::EROFS) => f.write_str(" (the file system is read-only)"),
                    _ => Ok(()),
                }
            }
            PidfileError::Lock { path, source } => {
                write!(f, "cannot lock pidfile {}: {source}", path.display())
            }
            PidfileError::Write { path, source } => {
                write!(f, "cannot write pidfile {}: {source}", path.display())
            }
            PidfileError::Read { path, source } => {
                write!(f, "cannot read pidfile {}: {source}", path.display())
            }
            PidfileError::Remove { path, source } => {
                write!(f, "cannot remove pidfile {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for PidfileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PidfileError::Open { source, .. }
            | PidfileError::Lock { source, .. }
            | PidfileError::Write { source, .. }
            | PidfileError::Read { source, .. }
            | PidfileError::Remove { source, .. } => Some(source),
            PidfileError::Running { .. } | PidfileError::NoDirectory { .. } => None,
        }
    }
}

impl Pidfile {
    /// Takes the pidfile at `path`: creates it if needed (mode 0644, not through a symbolic
    /// link, close-on-exec), locks it with a non-blocking exclusive `flock`, and writes this
    /// process's PID and a newline into it, synced to disk.
    ///
    /// A file nobody holds the lock on is stale, whatever PID it names, and is replaced.
    /// Call it after [`daemonize`](crate::daemon::daemonize), so that the PID written is
    /// the daemon's (or call [`write_pid`](Pidfile::write_pid) in the daemon).
    ///
    /// # Errors
    ///
    /// - [`PidfileError::Running`] if another process holds the lock, with the PID in the
    ///   file ("another torsion (PID 1234) holds /run/x.pid").
    /// - [`PidfileError::NoDirectory`] if the file's directory does not exist.
    /// - [`PidfileError::Open`] if the file cannot be opened or created.
    /// - [`PidfileError::Lock`] if the lock fails for another reason.
    /// - [`PidfileError::Write`] if the PID cannot be written.
    pub fn acquire(path: &Path) -> Result<Pidfile, PidfileError> {
        for _ in 0..OPEN_ATTEMPTS {
            let file = open(path)?;
            match try_lock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(PidfileError::Running {
                        pid: read_pid_settled(&file),
                        path: path.to_owned(),
                    });
                }
                Err(source) => {
                    return Err(PidfileError::Lock {
                        path: path.to_owned(),
                        source,
                    });
                }
            }
            // The previous holder may have removed the file between our open and our lock
            // (it removes, then unlocks): then we hold a lock on a file nobody can find, and
            // must open the path again.
            if !is_at_path(&file, path) {
                continue;
            }
            let pidfile = Pidfile {
                file,
                path: path.to_owned(),
                released: false,
            };
            pidfile.set_mode()?;
            pidfile.write_pid(std::process::id())?;
            return Ok(pidfile);
        }
        Err(PidfileError::Lock {
            path: path.to_owned(),
            source: io::Error::other(format!(
                "the file was removed or replaced {OPEN_ATTEMPTS} times while it was being locked"
            )),
        })
    }

    /// Writes `pid` and a newline into the held pidfile, replacing what it said, and syncs
    /// it to disk.
    ///
    /// [`acquire`](Pidfile::acquire) writes the current PID already; this is for a program
    /// that acquired the pidfile before a `fork` and continues in the child (pass
    /// `std::process::id()` there). The lock is shared with the child, so it stays held
    /// once the parent exits.
    ///
    /// The new content is written over the old before the file is cut to length, so a
    /// reader never sees an empty file, only the old PID or the new one on the first line.
    ///
    /// # Errors
    ///
    /// [`PidfileError::Write`] if writing, truncating or syncing fails.
    pub fn write_pid(&self, pid: u32) -> Result<(), PidfileError> {
        let text = format!("{pid}\n");
        let result = self
            .file
            .write_all_at(text.as_bytes(), 0)
            .and_then(|()| self.file.set_len(text.len() as u64))
            .and_then(|()| self.file.sync_data());
        result.map_err(|source| PidfileError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// The pidfile's path, as given to [`acquire`](Pidfile::acquire).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The PID the file names now, as read back from it (`None` if it is empty or not a
    /// PID).
    ///
    /// # Errors
    ///
    /// [`PidfileError::Read`] if the file cannot be read.
    pub fn pid(&self) -> Result<Option<u32>, PidfileError> {
        read_pid(&self.file).map_err(|source| PidfileError::Read {
            path: self.path.clone(),
            source,
        })
    }

    /// The PID of the running program that holds the pidfile at `path`, or `None` if there
    /// is no file or nobody holds its lock (the file is stale).
    ///
    /// This is what a "stop" or "status" command needs: a PID to signal, never a stale one.
    /// It takes a shared lock for an instant to find out, so a runner starting at that very
    /// moment may be refused once.
    ///
    /// # Errors
    ///
    /// - [`PidfileError::Running`] with `pid: None` if a process holds the lock but the
    ///   file does not name a PID.
    /// - [`PidfileError::Open`], [`PidfileError::Lock`] if the file cannot be opened or
    ///   tested.
    pub fn pid_of(path: &Path) -> Result<Option<u32>, PidfileError> {
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(PidfileError::Open {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        match try_lock(&file, FlockOperation::NonBlockingLockShared) {
            // Nobody holds it; closing the file releases our shared lock.
            Ok(true) => Ok(None),
            Ok(false) => match read_pid_settled(&file) {
                Some(pid) => Ok(Some(pid)),
                None => Err(PidfileError::Running {
                    pid: None,
                    path: path.to_owned(),
                }),
            },
            Err(source) => Err(PidfileError::Lock {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Removes the pidfile and releases its lock, reporting a failure to remove it (which
    /// dropping the [`Pidfile`] only logs as a warning).
    ///
    /// Nothing is removed or unlocked if the file no longer names the current process (a
    /// process forked from the holder, or a file replaced behind our back): the lock is
    /// then only released when the last descriptor sharing it closes.
    ///
    /// # Errors
    ///
    /// [`PidfileError::Remove`] if the file names this process but cannot be removed; the
    /// lock is released anyway.
    pub fn remove(mut self) -> Result<(), PidfileError> {
        self.release()
    }

    /// Removes the file and unlocks, once, if the file names the current process.
    fn release(&mut self) -> Result<(), PidfileError> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        let ours = matches!(read_pid(&self.file), Ok(Some(pid)) if pid == std::process::id());
        if !ours {
            return Ok(());
        }
        // Remove, then unlock: a process that opened the file before the removal and locks
        // it after our unlock finds it is no longer at the path and opens the path again.
        let removed = if is_at_path(&self.file, &self.path) {
            std::fs::remove_file(&self.path).map_err(|source| PidfileError::Remove {
                path: self.path.clone(),
                source,
            })
        } else {
            Ok(())
        };
        // Unlocking cannot usefully fail; closing the descriptor releases it anyway.
        let _ = flock(&self.file, FlockOperation::Unlock);
        removed
    }

    /// Gives the file mode 0644 if it has another and belongs to us (the umask applied at
    /// creation, or an old file).
    fn set_mode(&self) -> Result<(), PidfileError> {
        let write_error = |source| PidfileError::Write {
            path: self.path.clone(),
            source,
        };
        let meta = self.file.metadata().map_err(write_error)?;
        if meta.mode() & 0o7777 != MODE && meta.uid() == rustix::process::geteuid().as_raw() {
            rustix::fs::fchmod(&self.file, Mode::from_raw_mode(MODE))
                .map_err(|e| write_error(e.into()))?;
        }
        Ok(())
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            if torsion::log::subscriber_installed() {
                tracing::warn!(target: "torsion_cli::pidfile", "{e}");
            } else {
                torsion::log::to_stderr("WARN", "torsion_cli::pidfile", format_args!("{e}"));
            }
        }
    }
}

/// Opens or creates the pidfile for reading and writing.
fn open(path: &Path) -> Result<File, PidfileError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| {
            let dir = match path.parent() {
                Some(dir) if dir.as_os_str().is_empty() => Path::new("."),
                Some(dir) => dir,
                None => Path::new("/"),
            };
            if source.kind() == io::ErrorKind::NotFound && !dir.is_dir() {
                PidfileError::NoDirectory {
                    path: path.to_owned(),
                    dir: dir.to_owned(),
                }
            } else {
                PidfileError::Open {
                    path: path.to_owned(),
                    source,
                }
            }
        })
}

/// Tries a non-blocking `flock`: `Ok(true)` if taken, `Ok(false)` if another holds it.
fn try_lock(file: &File, operation: FlockOperation) -> io::Result<bool> {
    loop {
        match flock(file, operation) {
            Ok(()) => return Ok(true),
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(false),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether `path` still names the file `file` is open on (same device and inode).
fn is_at_path(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(ours), Ok(there)) => ours.dev() == there.dev() && ours.ino() == there.ino(),
        _ => false,
    }
}

/// The PID on the file's first line, if there is one.
fn read_pid(file: &File) -> io::Result<Option<u32>> {
    let mut buf = [0u8; MAX_CONTENT];
    let mut len = 0;
    while len < buf.len() {
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let text = String::from_utf8_lossy(&buf[..len]);
    let line = text.lines().next().unwrap_or("").trim();
    Ok(line.parse::<u32>().ok().filter(|&pid| pid != 0))
}

/// The PID in a file another process holds, waiting a little for a holder that has only
/// just created it to write it.
fn read_pid_settled(file: &File) -> Option<u32> {
    const STEP: Duration = Duration::from_millis(5);
    let mut waited = Duration::ZERO;
    loop {
        if let Ok(Some(pid)) = read_pid(file) {
            return Some(pid);
        }
        if waited >= PID_SETTLE {
            return None;
        }
        thread::sleep(STEP);
        waited += STEP;
    }
}
