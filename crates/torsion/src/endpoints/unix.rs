//! UNIX socket endpoints (Twisted's `UNIXServerEndpoint` and `UNIXClientEndpoint`, `unix:`
//! strings): what to listen on and connect to, as [`UnixServerSpec`] and [`UnixClientSpec`],
//! and the check of the server's lock file that `lockfile=1` asks a client for.
//!
//! Invariant: this module only reads a socket's lock file (`check_server_lock`) and never
//! writes or removes it; the listening side in [`net::unix`](crate::net::unix) owns it.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use super::{ClientEndpoint, ListeningPort, PortFactory, ServerEndpoint, connect_endpoint};
use crate::defer::Deferred;
use crate::error::BadFileError;
use crate::net::Transport;
use crate::net::tcp::{DEFAULT_BACKLOG, DEFAULT_CONNECT_TIMEOUT};
use crate::net::unix::{UnixConnectOptions, UnixListenOptions};
use crate::protocol::Factory;
use crate::reactor::Reactor;

/// The default mode of a UNIX socket file (Twisted's `0o666`).
pub const DEFAULT_UNIX_MODE: u32 = 0o666;

/// Where and how to listen on a UNIX socket: what `unix:PATH:mode=…:backlog=…:lockfile=…`
/// says (the arguments of Twisted's `listenUNIX`), which [`UnixServerEndpoint`] passes to
/// [`Reactor::listen_unix_with`] as its [`UnixListenOptions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixServerSpec {
    /// The socket file's path.
    pub path: PathBuf,
    /// The socket file's permission bits (0o666).
    pub mode: u32,
    /// The listen backlog ([`DEFAULT_BACKLOG`], 1024; Twisted's is 50).
    pub backlog: i32,
    /// Guard the path with a lock file holding our PID, so a stale socket file of a dead
    /// process is replaced and a live one's is not (Twisted's `wantPID`). Off for
    /// [`UnixServerSpec::new`], on by default in strings (`lockfile=1`), as in Twisted.
    pub want_pid: bool,
}

impl UnixServerSpec {
    /// `path` with mode 0o666, backlog [`DEFAULT_BACKLOG`] and no lock file (Twisted's
    /// `UNIXServerEndpoint` defaults, but for the backlog, which is 50 there).
    pub fn new(path: impl Into<PathBuf>) -> UnixServerSpec {
        UnixServerSpec {
            path: path.into(),
            mode: DEFAULT_UNIX_MODE,
            backlog: DEFAULT_BACKLOG,
            want_pid: false,
        }
    }
}

/// Where and how to connect to a UNIX socket: what `unix:PATH:timeout=…:lockfile=…` says
/// (the arguments of Twisted's `connectUNIX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixClientSpec {
    /// The socket file's path.
    pub path: PathBuf,
    /// Give up after this long (30 s).
    pub timeout: Option<Duration>,
    /// Refuse to connect unless the server's lock file names a live process (Twisted's
    /// `checkPID`, `lockfile=1`). Off by default.
    pub check_pid: bool,
}

impl UnixClientSpec {
    /// `path`, with a 30 s timeout and no lock file check.
    pub fn new(path: impl Into<PathBuf>) -> UnixClientSpec {
        UnixClientSpec {
            path: path.into(),
            timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            check_pid: false,
        }
    }
}

/// Listens on a UNIX socket (Twisted's `UNIXServerEndpoint`, `unix:PATH`), with
/// [`Reactor::listen_unix_with`]: the socket file gets [`spec.mode`](UnixServerSpec::mode)
/// whatever the umask, a stale socket file is replaced, and with
/// [`spec.want_pid`](UnixServerSpec::want_pid) the lock file `PATH.lock` guards it. A path
/// beginning with `@` names a socket in the abstract namespace.
///
/// # Examples
///
/// ```
/// use std::os::unix::fs::PermissionsExt;
/// use std::rc::Rc;
/// use torsion::Reactor;
/// use torsion::endpoints::{ServerEndpoint, server_from_string};
/// use torsion::protocol::Protocol;
///
/// struct Quiet;
/// impl Protocol for Quiet {}
///
/// let reactor = Reactor::new().unwrap();
/// let path = std::env::temp_dir().join(format!("torsion-endpoint-doc-{}.sock", std::process::id()));
/// let description = format!("unix:{}:mode=660:lockfile=0", path.display());
/// let endpoint = server_from_string(&reactor, &description).unwrap();
/// let port = endpoint.listen(Rc::new(|| Quiet)).take_result().unwrap().unwrap();
/// assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o660);
/// drop(port.stop_listening());
/// # let _ = std::fs::remove_file(&path);
/// ```
#[derive(Debug, Clone)]
pub struct UnixServerEndpoint {
    reactor: Reactor,
    /// Where and how to listen.
    pub spec: UnixServerSpec,
}

impl UnixServerEndpoint {
    /// Listens as `spec` says.
    pub fn new(reactor: &Reactor, spec: UnixServerSpec) -> UnixServerEndpoint {
        UnixServerEndpoint {
            reactor: reactor.clone(),
            spec,
        }
    }

    /// The reactor it listens on.
    pub fn reactor(&self) -> &Reactor {
        &self.reactor
    }
}

impl ServerEndpoint for UnixServerEndpoint {
    fn listen(&self, factory: Rc<dyn Factory>) -> Deferred<ListeningPort> {
        let adapter = Rc::new(PortFactory { inner: factory });
        let options = UnixListenOptions {
            backlog: self.spec.backlog,
            mode: self.spec.mode,
            want_pid: self.spec.want_pid,
        };
        match self
            .reactor
            .listen_unix_with(&self.spec.path, adapter, options)
        {
            Ok(port) => Deferred::succeed(Rc::new(port) as ListeningPort),
            Err(failure) => Deferred::fail(failure),
        }
    }
}

/// Connects to a UNIX socket (Twisted's `UNIXClientEndpoint`, `unix:PATH`), with
/// [`Reactor::connect_unix_with`]. As for [`TcpClientEndpoint`], the Deferred fires with the
/// transport once connected, fails with why not
/// ([`ConnectionRefused`](crate::error::ConnectionRefused) when nobody listens on the
/// socket file, the I/O error such as `NotFound` otherwise), and cancelling it stops the
/// attempt. With [`spec.check_pid`](UnixClientSpec::check_pid) (`lockfile=1`), it fails at
/// once with [`BadFileError`] unless the server's lock file `PATH.lock` names a live
/// process.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use torsion::Reactor;
/// use torsion::endpoints::{ClientEndpoint, UnixClientEndpoint, UnixClientSpec};
/// use torsion::protocol::Protocol;
///
/// struct Quiet;
/// impl Protocol for Quiet {}
///
/// let reactor = Reactor::new().unwrap();
/// let endpoint = UnixClientEndpoint::new(&reactor, UnixClientSpec::new("/run/app.sock"));
/// let connected = endpoint.connect(Rc::new(|| Quiet));
/// // Cancelling the Deferred stops the attempt.
/// connected.cancel();
/// ```
///
/// [`TcpClientEndpoint`]: super::TcpClientEndpoint
#[derive(Debug, Clone)]
pub struct UnixClientEndpoint {
    reactor: Reactor,
    /// Where and how to connect.
    pub spec: UnixClientSpec,
}

impl UnixClientEndpoint {
    /// Connects as `spec` says.
    pub fn new(reactor: &Reactor, spec: UnixClientSpec) -> UnixClientEndpoint {
        UnixClientEndpoint {
            reactor: reactor.clone(),
            spec,
        }
    }

    /// The reactor it connects on.
    pub fn reactor(&self) -> &Reactor {
        &self.reactor
    }
}

impl ClientEndpoint for UnixClientEndpoint {
    fn connect(&self, factory: Rc<dyn Factory>) -> Deferred<Transport> {
        if self.spec.check_pid
            && let Err(reason) = check_server_lock(&self.spec.path)
        {
            return Deferred::fail(BadFileError {
                path: self.spec.path.display().to_string(),
                reason,
            });
        }
        let options = UnixConnectOptions {
            timeout: self.spec.timeout,
        };
        connect_endpoint(factory, |wrapping| {
            self.reactor
                .connect_unix_with(&self.spec.path, wrapping, options)
        })
    }
}

/// Whether the lock file of the UNIX socket `path` (`path.lock`, a symbolic link whose
/// target is the listening process's pid, as [`UnixListenOptions::want_pid`] and Twisted's
/// `FilesystemLock` make it) names a live process (Twisted's `lockfile.isLocked`); if not,
/// why not.
fn check_server_lock(path: &Path) -> Result<(), String> {
    if matches!(
        path.as_os_str().as_bytes().first(),
        Some(b'@') | Some(b'\0')
    ) {
        return Err("an abstract socket has no lock file (use lockfile=0)".into());
    }
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    let lock = PathBuf::from(lock);
    let target = std::fs::read_link(&lock)
        .map_err(|err| format!("cannot read its lock file {}: {err}", lock.display()))?;
    let pid = target
        .to_str()
        .and_then(|t| t.parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| format!("its lock file {} names no process", lock.display()))?;
    let gone = u32::try_from(pid.as_raw_pid()) != Ok(std::process::id())
        && matches!(
            rustix::process::test_kill_process(pid),
            Err(rustix::io::Errno::SRCH)
        );
    if gone {
        return Err(format!(
            "its lock file {} names process {}, which is gone",
            lock.display(),
            pid.as_raw_pid()
        ));
    }
    Ok(())
}
