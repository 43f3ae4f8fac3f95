//! Syslog over the local datagram socket `/dev/log` (Twisted's
//! `twisted.python.syslog.SyslogObserver`, `twistd --syslog --prefix`).
//!
//! Each event is one datagram in RFC 3164's local form, `<PRI>prefix[pid]: body`, where
//! the body is the text format without its time (`[poetry.server#info] message key=value`;
//! the syslog daemon stamps the time and host) and PRI is facility `user` (1, Twisted's
//! default) × 8 + the severity: critical → 2 (crit), error → 3 (err), warn → 4 (warning),
//! info → 6 (info), debug and trace → 7 (debug). A failure's lines are joined with ` | `,
//! so one event stays one message (Twisted sends each line as its own message, which
//! interleaves with other programs' lines).
//!
//! The socket is non-blocking: when the daemon's queue is full the event is dropped and
//! counted, and "N log events dropped" goes out with the next message that fits; any other
//! error is reported once on stderr (after one attempt to reconnect, for a restarted daemon).
//!
//! Invariant: one event is one datagram, and sending never blocks the reactor.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::LogSetupError;
use super::record::{Observer, Record};
use super::text::write_body;

/// The local syslog socket.
pub(crate) const SYSLOG_PATH: &str = "/dev/log";

/// The `user` facility (Twisted's default `LOG_USER`).
const FACILITY_USER: u8 = 1;

/// Longer messages are cut here; the limit of many syslog daemons is lower still.
const MAX_MESSAGE: usize = 16 * 1024;

/// The syslog severity of a level name.
fn severity(level: &str) -> u8 {
    match level {
        "critical" => 2,
        "error" => 3,
        "warn" => 4,
        "info" => 6,
        _ => 7,
    }
}

/// The syslog observer (see the module doc).
pub(crate) struct SyslogObserver {
    socket: Mutex<UnixDatagram>,
    path: PathBuf,
    prefix: String,
    pid: u32,
    dropped: AtomicU64,
    failing: AtomicBool,
}

impl SyslogObserver {
    /// Connects to the syslog socket at `path`, tagging messages with `prefix`.
    ///
    /// # Errors
    ///
    /// [`LogSetupError::NoSyslogSocket`] when nothing is at `path`,
    /// [`LogSetupError::Syslog`] when connecting fails.
    pub(crate) fn connect(path: &Path, prefix: &str) -> Result<Self, LogSetupError> {
        if !path.exists() {
            return Err(LogSetupError::NoSyslogSocket {
                path: path.to_owned(),
            });
        }
        let socket = connect(path).map_err(|source| LogSetupError::Syslog {
            path: path.to_owned(),
            source,
        })?;
        Ok(SyslogObserver {
            socket: Mutex::new(socket),
            path: path.to_owned(),
            prefix: prefix.to_owned(),
            pid: std::process::id(),
            dropped: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        })
    }

    /// The datagram for `record`.
    fn message(&self, record: &Record) -> Vec<u8> {
        let pri = FACILITY_USER * 8 + severity(record.level);
        let mut body = String::new();
        write_body(record, &mut body);
        if let Some(failure) = &record.failure {
            for line in failure.lines() {
                body.push_str(" | ");
                body.push_str(line.trim());
            }
        }
        let body = one_line(&body);
        let mut message = format!("<{pri}>{}[{}]: {body}", self.prefix, self.pid);
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        message.into_bytes()
    }

    fn send(&self, socket: &mut UnixDatagram, message: &[u8]) -> io::Result<()> {
        match socket.send(message) {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                // The daemon may have restarted: reconnect once and retry.
                *socket = connect(&self.path)?;
                socket.send(message).map(drop)
            }
            result => result.map(drop),
        }
    }
}

/// Replaces every line break (and other control character) in `text` so the message is
/// one line.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut lines = text.lines();
    if let Some(first) = lines.next() {
        out.push_str(first);
    }
    for line in lines {
        out.push_str(" | ");
        out.push_str(line.trim());
    }
    out.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn connect(path: &Path) -> io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    socket.connect(path)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

impl Observer for SyslogObserver {
    fn observe(&self, record: &Record) {
        let message = self.message(record);
        let Ok(mut socket) = self.socket.lock() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match self.send(&mut socket, &message) {
            Ok(()) => {
                self.failing.store(false, Ordering::Relaxed);
                let dropped = self.dropped.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    let notice = self.message(&Record::dropped(dropped));
                    if self.send(&mut socket, &notice).is_err() {
                        self.dropped.fetch_add(dropped, Ordering::Relaxed);
                    }
                }
            }
            Err(e) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                if e.kind() != io::ErrorKind::WouldBlock
                    && !self.failing.swap(true, Ordering::Relaxed)
                {
                    eprintln!(
                        "torsion: cannot send to syslog at '{}': {e}; log events are lost \
                         until it accepts them again",
                        self.path.display()
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::logging::record::FieldValue;

    fn temp_socket(name: &str) -> (PathBuf, UnixDatagram) {
        let path =
            std::env::temp_dir().join(format!("torsion-syslog-{}-{name}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (path, server)
    }

    fn recv(server: &UnixDatagram) -> String {
        let mut buf = vec![0; 65536];
        let n = server.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    fn record(level: &'static str) -> Record {
        Record {
            time: SystemTime::now(),
            level,
            namespace: "poetry.server".into(),
            message: "served".into(),
            failure: None,
            fields: vec![("bytes", FieldValue::U64(42))],
        }
    }

    #[test]
    fn one_datagram_per_event_with_priority_prefix_and_pid() {
        let (path, server) = temp_socket("basic");
        let observer = SyslogObserver::connect(&path, "poetry").unwrap();
        observer.observe(&record("info"));
        let pid = std::process::id();
        assert_eq!(
            recv(&server),
            format!("<14>poetry[{pid}]: [poetry.server#info] served bytes=42")
        );
        for (level, pri) in [("debug", 15), ("warn", 12), ("error", 11), ("critical", 10)] {
            observer.observe(&record(level));
            assert!(recv(&server).starts_with(&format!("<{pri}>poetry[")));
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_failure_stays_in_one_datagram_without_newlines() {
        let (path, server) = temp_socket("failure");
        let observer = SyslogObserver::connect(&path, "poetry").unwrap();
        let mut r = record("error");
        r.message = "poem\nlost".into();
        r.failure = Some("boom (at src/a.rs:1:1)\n  caused by: disk".into());
        observer.observe(&r);
        let message = recv(&server);
        assert!(!message.contains('\n'), "{message}");
        assert!(
            message.ends_with("poem | lost bytes=42 | boom (at src/a.rs:1:1) | caused by: disk"),
            "{message}"
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_missing_socket_is_a_clear_error() {
        let path = std::env::temp_dir().join("torsion-no-such-syslog.sock");
        let err = SyslogObserver::connect(&path, "p").err().unwrap();
        let expected = format!("no syslog socket at {}", path.display());
        assert!(err.to_string().contains(&expected), "{err}");
    }
}
