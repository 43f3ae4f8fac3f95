//! Telling systemd how the service is doing: the `sd_notify` protocol, without
//! libsystemd, for `Type=notify` units (Twisted has no counterpart; `twistd` users are told
//! to run `--nodaemon` under `Type=simple`).
//!
//! systemd puts the address of a datagram socket in `$NOTIFY_SOCKET`: a path, or an
//! abstract socket when it starts with `@`. A state is one datagram of newline-separated
//! `KEY=value` lines. The runner sends [`ready`] once its services have started (systemd
//! then considers the unit started and starts what depends on it) and [`stopping`] when it
//! begins to shut down; [`status`] sets the line `systemctl status` shows.
//!
//! Programs the service spawns inherit `$NOTIFY_SOCKET`; systemd ignores them unless the
//! unit sets `NotifyAccess=all`. The same setting is needed with `--daemon`, where the
//! daemon is not the process systemd started: [`ready`] names it with `MAINPID=`. Under
//! systemd, prefer running in the foreground.
//!
//! Invariant: without `$NOTIFY_SOCKET` every call here is a no-op returning `Ok(false)`,
//! so the runner calls them unconditionally.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

/// The environment variable systemd sets for a `Type=notify` unit.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (`KEY=value` lines, such as `"READY=1"`) to the socket named by
/// `$NOTIFY_SOCKET`.
///
/// Returns `Ok(false)` without sending if the variable is unset or empty, `Ok(true)` once
/// the datagram is sent.
///
/// # Errors
///
/// The error from [`notify_to`] if the variable is set but the state cannot be sent.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(address) if !address.is_empty() => {
            notify_to(&address, state)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Sends `state` to the notification socket at `address`: a file system path, or an
/// abstract socket name when it starts with `@` (Linux only).
///
/// [`notify`] calls it with `$NOTIFY_SOCKET`; a test or a supervisor of its own can call
/// it directly.
///
/// # Errors
///
/// - [`io::ErrorKind::InvalidInput`] if `address` is neither an absolute path nor
///   `@name` (systemd's `vsock:` addresses are not supported).
/// - [`io::ErrorKind::Unsupported`] for an abstract address outside Linux.
/// - The error from `socket` or `sendto`, for example `ENOENT` or `ECONNREFUSED` if nobody
///   listens there any more.
pub fn notify_to(address: &OsStr, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let bytes = address.as_bytes();
    let sent = match bytes.first() {
        Some(b'/') => socket.send_to(state.as_bytes(), address)?,
        Some(b'@') => send_abstract(&socket, &bytes[1..], state.as_bytes())?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{NOTIFY_SOCKET}={} is neither an absolute path nor an abstract socket (@name)",
                    address.to_string_lossy()
                ),
            ));
        }
    };
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of the {} bytes of a notification", state.len()),
        ));
    }
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(socket: &UnixDatagram, name: &[u8], data: &[u8]) -> io::Result<usize> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(data, &address)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_socket: &UnixDatagram, _name: &[u8], _data: &[u8]) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract notification sockets exist only on Linux",
    ))
}

/// Tells systemd the service is up: `READY=1` and `MAINPID=` this process's PID (which
/// matters after `--daemon`, where the daemon is not the process systemd started).
///
/// # Errors
///
/// As [`notify`].
pub fn ready() -> io::Result<bool> {
    notify(&format!("READY=1\nMAINPID={}", std::process::id()))
}

/// Tells systemd the service is shutting down: `STOPPING=1`.
///
/// # Errors
///
/// As [`notify`].
pub fn stopping() -> io::Result<bool> {
    notify("STOPPING=1")
}

/// Sets the one-line status `systemctl status` shows: `STATUS=text`, with any newline in
/// `text` turned into a space (a newline would start another assignment).
///
/// # Errors
///
/// As [`notify`].
pub fn status(text: &str) -> io::Result<bool> {
    notify(&format!("STATUS={}", text.replace(['\n', '\r'], " ")))
}
