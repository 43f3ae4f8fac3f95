//! UNIX stream sockets: listening ports and connectors (Twisted's
//! `twisted.internet.unix`: `unix.Port`, `unix.Connector`, `listenUNIX`, `connectUNIX`).
//!
//! The port and the connector are [`tcp`](super::tcp)'s [`Port`] and [`Connector`], which
//! work on any stream socket, and the connections are the same stream connections as TCP's,
//! with [`Address::Unix`] addresses; this module adds what is particular to UNIX sockets:
//!
//! - **Paths.** A path beginning with a NUL byte or `@` names a socket in Linux's abstract
//!   namespace (no file; gone when the last socket closes). Twisted accepts the NUL form;
//!   `@` is the form `ss`, systemd's `ListenStream=@name` and Go use, and is how torsion
//!   *reports* abstract addresses ([`Port::host`] gives `@name`). A relative file whose
//!   name begins with `@` is reached as `./@name`.
//! - **Stale socket files.** A socket file outlives the process that bound it. Before
//!   binding, [`Reactor::listen_unix`] connects to an existing socket file: if that is
//!   refused, nobody listens and the file is removed; if it succeeds, the address is in use
//!   and listening fails with [`CannotListen`]. (The probe is a real connection: a live
//!   server sees one connection open and close.) When the port stops listening it removes
//!   its socket file, if the file is still its own.
//! - **File mode.** The socket file gets [`UnixListenOptions::mode`] (0o666 by default, as
//!   Twisted's), whatever the umask.
//! - **Lock file** ([`UnixListenOptions::want_pid`], Twisted's `wantPID`): `path.lock` is
//!   created as Twisted's `FilesystemLock` does it, a symbolic link whose target is our
//!   process id, atomically created. A lock whose process is gone is taken over; a live
//!   one refuses the port. The lock is removed when the port stops listening.
//! - **Peer credentials**: [`TransportOps::peer_credentials`](super::TransportOps::peer_credentials)
//!   gives the connected process's pid, uid and gid (`SO_PEERCRED`).
//!
//! Invariant: a port only ever removes files it created (its socket file, checked by
//! inode, and its own lock).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use rustix::net::SocketAddrAny;
use socket2::{Domain, SockAddr, Socket, Type};

use super::connector::Destination;
use super::tcp::{ConnectOptions, DEFAULT_BACKLOG, DEFAULT_CONNECT_TIMEOUT};
use super::{Connector, Port};
use crate::defer::Failure;
use crate::error::CannotListen;
use crate::net::Address;
use crate::protocol::{ClientFactory, Factory};
use crate::reactor::Reactor;

/// The default mode of a listening socket's file (Twisted's `mode=0o666`).
pub const DEFAULT_MODE: u32 = 0o666;

/// The credentials of the process at the other end of a UNIX socket, as the kernel recorded
/// them when it connected (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerCredentials {
    /// The peer's process id.
    pub pid: u32,
    /// The peer's user id.
    pub uid: u32,
    /// The peer's group id.
    pub gid: u32,
}

/// Options for [`Reactor::listen_unix_with`] (Twisted's `listenUNIX(address, factory,
/// backlog=50, mode=0o666, wantPID=0)`, with a larger default backlog).
#[derive(Debug, Clone)]
pub struct UnixListenOptions {
    /// The listen backlog: [`DEFAULT_BACKLOG`], 1024, by default, where Twisted's is 50 (a
    /// deviation, so that a burst of connects is served; see the constant). The kernel
    /// clamps it to `net.core.somaxconn`.
    pub backlog: i32,
    /// The socket file's permission bits (0o666 by default). Ignored for abstract sockets.
    pub mode: u32,
    /// Take the lock file `path.lock` (see the [module docs](self)). Ignored for abstract
    /// sockets.
    pub want_pid: bool,
}

impl Default for UnixListenOptions {
    fn default() -> Self {
        UnixListenOptions {
            backlog: DEFAULT_BACKLOG,
            mode: DEFAULT_MODE,
            want_pid: false,
        }
    }
}

/// Options for [`Reactor::connect_unix_with`] (Twisted's `connectUNIX(address, factory,
/// timeout=30)`).
#[derive(Debug, Clone)]
pub struct UnixConnectOptions {
    /// Give up after this long (30 s by default; `None` waits as long as it takes).
    pub timeout: Option<Duration>,
}

impl Default for UnixConnectOptions {
    fn default() -> Self {
        UnixConnectOptions {
            timeout: Some(DEFAULT_CONNECT_TIMEOUT),
        }
    }
}

impl Reactor {
    /// Listens for connections on the UNIX socket `path`, building a protocol for each with
    /// `factory` (Twisted's `listenUNIX`), with mode 0o666 and backlog [`DEFAULT_BACKLOG`]
    /// (1024; Twisted's is 50). A stale socket file is replaced; a leading NUL or `@` names
    /// an abstract socket (see the [module docs](self)).
    ///
    /// # Errors
    ///
    /// [`CannotListen`] naming the path: someone listens there already
    /// (`AddrInUse`), the file is not a socket, the directory is not writable, the path
    /// is too long, …
    ///
    /// # Examples
    ///
    /// ```
    /// use std::rc::Rc;
    /// use torsion::Reactor;
    /// use torsion::protocol::Protocol;
    ///
    /// struct Quiet;
    /// impl Protocol for Quiet {}
    ///
    /// let reactor = Reactor::new().unwrap();
    /// let path = std::env::temp_dir().join(format!("torsion-doc-{}.sock", std::process::id()));
    /// let port = reactor.listen_unix(&path, Rc::new(|| Quiet)).unwrap();
    /// assert!(path.exists());
    /// drop(port.stop_listening());
    /// # let _ = std::fs::remove_file(&path);
    /// ```
    pub fn listen_unix<F: Factory>(
        &self,
        path: impl AsRef<Path>,
        factory: Rc<F>,
    ) -> Result<Port, Failure> {
        self.listen_unix_with(path, factory, UnixListenOptions::default())
    }

    /// [`listen_unix`](Reactor::listen_unix) with a backlog, a file mode and a lock file.
    ///
    /// # Errors
    ///
    /// As for `listen_unix`; with `want_pid`, also when another live process holds the
    /// lock.
    pub fn listen_unix_with<F: Factory>(
        &self,
        path: impl AsRef<Path>,
        factory: Rc<F>,
        options: UnixListenOptions,
    ) -> Result<Port, Failure> {
        let path = path.as_ref();
        let cannot = |source: io::Error| CannotListen {
            address: path.display().to_string(),
            source,
        };
        let (address, name) = unix_sock_addr(path).map_err(cannot)?;
        let in_filesystem = address.as_abstract_namespace().is_none();
        let lock = if in_filesystem && options.want_pid {
            let mut lock = path.as_os_str().to_owned();
            lock.push(".lock");
            let lock = PathBuf::from(lock);
            take_lock(&lock).map_err(cannot)?;
            Some(lock)
        } else {
            None
        };
        let release = |lock: &Option<PathBuf>| {
            if let Some(lock) = lock {
                release_lock(lock);
            }
        };
        let bound = (|| {
            if in_filesystem {
                remove_stale_socket(path, &address)?;
            }
            let socket = Socket::new(Domain::UNIX, Type::STREAM.nonblocking().cloexec(), None)?;
            socket.bind(&address)?;
            let file = if in_filesystem {
                let file = fs::symlink_metadata(path).map(|m| (m.dev(), m.ino())).ok();
                let ready = fs::set_permissions(path, fs::Permissions::from_mode(options.mode))
                    .and_then(|()| socket.listen(options.backlog));
                if let Err(err) = ready {
                    let _ = fs::remove_file(path);
                    return Err(err);
                }
                file
            } else {
                socket.listen(options.backlog)?;
                None
            };
            Ok((socket, file))
        })();
        let (socket, file) = match bound {
            Ok(bound) => bound,
            Err(err) => {
                release(&lock);
                return Err(cannot(err).into());
            }
        };
        let socket_file = in_filesystem.then(|| path.to_path_buf());
        let on_close = Box::new(move || {
            if let (Some(path), Some(file)) = (&socket_file, file) {
                remove_if_same(path, file);
            }
            release(&lock);
        });
        Port::start(
            self,
            socket,
            Address::Unix(Some(name)),
            factory,
            Some(on_close),
        )
    }

    /// Connects to the UNIX socket `path`, building the protocol with `factory` once
    /// connected (Twisted's `connectUNIX`, with its 30 s timeout). Failures arrive
    /// asynchronously, through [`ClientFactory::client_connection_failed`]:
    /// [`ConnectionRefused`](crate::error::ConnectionRefused) when nothing listens on an
    /// existing socket file, the I/O error (`NotFound`, …) otherwise.
    pub fn connect_unix<F: ClientFactory>(
        &self,
        path: impl AsRef<Path>,
        factory: Rc<F>,
    ) -> Connector {
        self.connect_unix_with(path, factory, UnixConnectOptions::default())
    }

    /// [`connect_unix`](Reactor::connect_unix) with a timeout.
    pub fn connect_unix_with<F: ClientFactory>(
        &self,
        path: impl AsRef<Path>,
        factory: Rc<F>,
        options: UnixConnectOptions,
    ) -> Connector {
        let options = ConnectOptions {
            timeout: options.timeout,
            bind_address: None,
        };
        let destination = Destination::Unix(path.as_ref().to_path_buf());
        Connector::start(self, destination, factory, options)
    }
}

/// The socket address for `path`, and the name torsion reports for it: the path itself, or
/// `@name` for an abstract socket (given as `@name` or `\0name`).
pub(crate) fn unix_sock_addr(path: &Path) -> io::Result<(SockAddr, PathBuf)> {
    let bytes = path.as_os_str().as_bytes();
    match bytes.first() {
        Some(b'\0') | Some(b'@') => {
            let name = &bytes[1..];
            let mut raw = Vec::with_capacity(bytes.len());
            raw.push(0);
            raw.extend_from_slice(name);
            let address = SockAddr::unix(OsStr::from_bytes(&raw))?;
            Ok((address, abstract_name(name)))
        }
        Some(_) => Ok((SockAddr::unix(path)?, path.to_path_buf())),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a UNIX socket path cannot be empty",
        )),
    }
}

fn abstract_name(name: &[u8]) -> PathBuf {
    let mut out = Vec::with_capacity(name.len() + 1);
    out.push(b'@');
    out.extend_from_slice(name);
    PathBuf::from(OsString::from_vec(out))
}

/// The [`Address`] of a UNIX socket address (`@name` for an abstract one).
pub(crate) fn unix_address_of(address: &SockAddr) -> Address {
    if let Some(path) = address.as_pathname() {
        Address::Unix(Some(path.to_path_buf()))
    } else if let Some(name) = address.as_abstract_namespace() {
        Address::Unix(Some(abstract_name(name)))
    } else {
        Address::Unix(None)
    }
}

/// The [`Address`] of a UNIX socket address as `accept` returns it.
pub(crate) fn unix_address_of_any(address: Option<SocketAddrAny>) -> Address {
    let Some(unix) = address.and_then(|a| rustix::net::SocketAddrUnix::try_from(a).ok()) else {
        return Address::Unix(None);
    };
    if let Some(path) = unix.path_bytes() {
        Address::Unix(Some(PathBuf::from(OsStr::from_bytes(path))))
    } else if let Some(name) = unix.abstract_name() {
        Address::Unix(Some(abstract_name(name)))
    } else {
        Address::Unix(None)
    }
}

/// The credentials of the peer of the UNIX socket `fd`.
pub(crate) fn peer_credentials(fd: BorrowedFd<'_>) -> Option<PeerCredentials> {
    let cred = rustix::net::sockopt::socket_peercred(fd).ok()?;
    Some(PeerCredentials {
        pid: u32::try_from(cred.pid.as_raw_pid()).unwrap_or(0),
        uid: cred.uid.as_raw(),
        gid: cred.gid.as_raw(),
    })
}

/// Removes the socket file at `path` if nobody listens on it; fails with `AddrInUse` if
/// someone does. Anything else (no file, not a socket, no permission) is left for `bind`
/// to report.
fn remove_stale_socket(path: &Path, address: &SockAddr) -> io::Result<()> {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Ok(());
    }
    let probe = Socket::new(Domain::UNIX, Type::STREAM.nonblocking().cloexec(), None)?;
    match probe.connect(address) {
        // Connected, or the listener's backlog is full: it is alive.
        Ok(()) => Err(in_use(path)),
        Err(err) if err.raw_os_error() == Some(libc::EAGAIN) => Err(in_use(path)),
        Err(err) if err.raw_os_error() == Some(libc::ECONNREFUSED) => {
            tracing::debug!(target: "torsion::unix", "removing stale socket file {}", path.display());
            match fs::remove_file(path) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
                _ => Ok(()),
            }
        }
        Err(_) => Ok(()),
    }
}

fn in_use(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("another process is listening on {}", path.display()),
    )
}

/// Removes `path` if it is still the file `(dev, ino)`.
fn remove_if_same(path: &Path, (dev, ino): (u64, u64)) {
    if let Ok(meta) = fs::symlink_metadata(path)
        && meta.dev() == dev
        && meta.ino() == ino
        && let Err(err) = fs::remove_file(path)
    {
        tracing::debug!(target: "torsion::unix", "cannot remove {}: {err}", path.display());
    }
}

/// Takes the lock file `lock`: a symbolic link to our pid, as Twisted's `FilesystemLock`.
fn take_lock(lock: &Path) -> io::Result<()> {
    let me = std::process::id();
    for _ in 0..3 {
        match std::os::unix::fs::symlink(me.to_string(), lock) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
        let holder = fs::read_link(lock)
            .ok()
            .and_then(|target| target.to_str()?.parse::<i32>().ok());
        match holder {
            Some(pid) if process_alive(pid) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("lock file {} is held by process {pid}", lock.display()),
                ));
            }
            // A lock left by a process that is gone (or garbage): take it over.
            _ => match fs::remove_file(lock) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                _ => {
                    tracing::debug!(target: "torsion::unix", "removed stale lock {}", lock.display())
                }
            },
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("lock file {} keeps changing hands", lock.display()),
    ))
}

fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    if u32::try_from(pid) == Ok(std::process::id()) {
        return true;
    }
    match rustix::process::Pid::from_raw(pid) {
        Some(pid) => !matches!(
            rustix::process::test_kill_process(pid),
            Err(rustix::io::Errno::SRCH)
        ),
        None => false,
    }
}

/// Removes the lock file if it is still ours.
fn release_lock(lock: &Path) {
    let ours = fs::read_link(lock)
        .ok()
        .is_some_and(|target| target.as_os_str() == OsStr::new(&std::process::id().to_string()));
    if ours && let Err(err) = fs::remove_file(lock) {
        tracing::debug!(target: "torsion::unix", "cannot remove lock {}: {err}", lock.display());
    }
}
