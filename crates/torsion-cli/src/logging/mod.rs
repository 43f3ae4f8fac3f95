//! The runner's logging: what to log, where and how ([`LogConfig`]), and [`install`], which
//! sets up the observers (Twisted's `twisted.logger` observers as `twist` and `twistd`
//! install them: `globalLogBeginner.beginLoggingTo`).
//!
//! Everything logged through `tracing` reaches one observer, chosen by the destination and
//! the format:
//!
//! - text for a terminal (`text.rs`: `TIME [NAMESPACE#LEVEL] MESSAGE key=value`),
//! - JSON lines (`json.rs`: one event per line, fields typed, a failure escaped
//!   inside one string),
//! - a log file rotated by size with a bounded number of old files, written on a thread of
//!   its own so the reactor never waits on the disk (`file.rs`),
//! - syslog over `/dev/log` (`syslog.rs`),
//!
//! behind a filter by level and by namespace (`filter.rs`). The namespace of an
//! event is its `log_namespace` field (events of [`torsion::log::Logger`]), else its
//! `tracing` target.
//!
//! Invariant: nothing on the reactor thread waits on a slow destination for long, and
//! nothing is lost silently: events a destination could not take are counted and the
//! count is logged ("N log events dropped").

use std::error::Error;
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{Dispatch, Level};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::registry::Registry;

mod file;
mod filter;
mod json;
mod record;
mod syslog;
mod text;

use record::{Format, LineObserver, LineSink, Observer, ObserverLayer};

/// How events are written (Twisted's `twist --log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogFormat {
    /// `TIME [NAMESPACE#LEVEL] MESSAGE key=value`, a failure's lines indented below
    /// (Twisted's `formatEventAsClassicLogText`, `--log-format=text`).
    Text,
    /// One JSON object per line (Twisted's `jsonFileLogObserver`, `--log-format=json`).
    Json,
}

/// Where events go (Twisted's `twist --log-file`, `twistd --logfile`, `--syslog`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LogDestination {
    /// Standard output (`--log-file=-`).
    Stdout,
    /// Standard error (`--log-file=+`).
    Stderr,
    /// A file, rotated by size (Twisted's `LogFile`).
    File(PathBuf),
    /// The local syslog daemon over `/dev/log`, messages tagged `prefix[pid]`
    /// (`twistd --syslog --prefix`). Always in the text format, without the time.
    Syslog {
        /// The tag of each message (Twisted's `--prefix`, default `twisted`).
        prefix: String,
    },
}

/// What the runner logs, where and how (Twisted's `twist` logging options).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// The least severe level logged (Twisted's `--log-level`, default `info`).
    pub level: Level,
    /// Where events go.
    pub destination: LogDestination,
    /// How they are written (ignored for syslog).
    pub format: LogFormat,
    /// Per-namespace levels, `namespace=level` (`torsion::net=debug`, `poetry=warn`); the
    /// longest matching namespace wins, matched on `.` and `::` boundaries
    /// (Twisted's `LogLevelFilterPredicate.setLogLevelForNamespace`).
    pub filters: Vec<String>,
    /// A log file is rotated when it would pass this size (Twisted's `rotateLength`,
    /// 1,000,000 bytes).
    pub rotate_bytes: u64,
    /// How many rotated files are kept, `NAME.1` the newest; older ones are deleted
    /// (Twisted's `maxRotatedFiles`, unbounded there by default, 10 here).
    pub max_rotated_files: usize,
}

impl LogConfig {
    /// Parses a level name: `debug`, `info`, `warn`, `error` or `critical` (the same as
    /// `error`: `tracing` has no more severe level), in any case (Twisted's
    /// `LogLevel.levelWithName`).
    ///
    /// # Errors
    ///
    /// A message naming the bad level and the good ones.
    ///
    /// # Examples
    ///
    /// ```
    /// use torsion_cli::logging::LogConfig;
    /// use tracing::Level;
    ///
    /// assert_eq!(LogConfig::parse_level("Warn"), Ok(Level::WARN));
    /// assert_eq!(LogConfig::parse_level("critical"), Ok(Level::ERROR));
    /// assert!(LogConfig::parse_level("loud").is_err());
    /// ```
    pub fn parse_level(s: &str) -> Result<Level, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "debug" => Ok(Level::DEBUG),
            "info" => Ok(Level::INFO),
            "warn" => Ok(Level::WARN),
            "error" | "critical" => Ok(Level::ERROR),
            _ => Err(format!(
                "unknown log level '{s}' (expected debug, info, warn, error or critical)"
            )),
        }
    }

    /// The format `twist` picks when none is given: text when the destination is a
    /// terminal, JSON otherwise (a pipe, a file); text for syslog.
    pub fn default_format_for(destination: &LogDestination) -> LogFormat {
        let terminal = match destination {
            LogDestination::Stdout => io::stdout().is_terminal(),
            LogDestination::Stderr => io::stderr().is_terminal(),
            LogDestination::File(_) => false,
            LogDestination::Syslog { .. } => true,
        };
        if terminal {
            LogFormat::Text
        } else {
            LogFormat::Json
        }
    }
}

impl Default for LogConfig {
    /// `info` to stdout as text, no filters, rotation at 1,000,000 bytes, 10 old files.
    fn default() -> Self {
        LogConfig {
            level: Level::INFO,
            destination: LogDestination::Stdout,
            format: LogFormat::Text,
            filters: Vec::new(),
            rotate_bytes: 1_000_000,
            max_rotated_files: 10,
        }
    }
}

/// Why logging could not be set up.
#[derive(Debug)]
#[non_exhaustive]
pub enum LogSetupError {
    /// The log file could not be opened.
    OpenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Nothing listens at the syslog socket (no syslog daemon, or a container without one).
    NoSyslogSocket {
        /// The socket's path, `/dev/log`.
        path: PathBuf,
    },
    /// The syslog socket exists but could not be connected to.
    Syslog {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A filter directive is not `namespace=level`.
    BadFilter {
        /// The directive as given.
        directive: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The log file's writer thread could not be started.
    SpawnWriter(io::Error),
    /// A global `tracing` subscriber was already installed (by an earlier `install`, or by
    /// the program).
    AlreadyInstalled,
}

impl fmt::Display for LogSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogSetupError::OpenFile { path, source } => {
                write!(f, "cannot open log file '{}': {source}", path.display())
            }
            LogSetupError::NoSyslogSocket { path } => write!(
                f,
                "no syslog socket at {} (is a syslog daemon running? use --log-file instead)",
                path.display()
            ),
            LogSetupError::Syslog { path, source } => {
                write!(
                    f,
                    "cannot connect to syslog at {}: {source}",
                    path.display()
                )
            }
            LogSetupError::BadFilter { directive, reason } => {
                write!(f, "bad log filter '{directive}': {reason}")
            }
            LogSetupError::SpawnWriter(source) => {
                write!(f, "cannot start the log writer thread: {source}")
            }
            LogSetupError::AlreadyInstalled => {
                f.write_str("a tracing subscriber is already installed for this process")
            }
        }
    }
}

impl Error for LogSetupError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            LogSetupError::OpenFile { source, .. }
            | LogSetupError::Syslog { source, .. }
            | LogSetupError::SpawnWriter(source) => Some(source),
            _ => None,
        }
    }
}

/// Keeps logging's background work alive; dropping it writes out what is queued for the
/// log file, stops its writer thread and waits for it (what Twisted does as the reactor
/// shuts down). Keep it until the program ends: events logged after it is dropped go
/// to stderr.
#[must_use = "dropping the LogGuard stops the log file's writer thread"]
pub struct LogGuard {
    writer: Option<file::WriterGuard>,
}

impl fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogGuard")
            .field("writer_thread", &self.writer.is_some())
            .finish()
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        drop(self.writer.take());
        let _ = io::stdout().flush();
    }
}

/// Sets up the observers `config` describes as the process's global `tracing` subscriber
/// (Twisted's `globalLogBeginner.beginLoggingTo`).
///
/// # Errors
///
/// [`LogSetupError`]: the file cannot be opened, there is no syslog socket, a filter is
/// malformed, or a global subscriber is already installed.
///
/// # Examples
///
/// ```no_run
/// use torsion_cli::logging::{LogConfig, LogDestination, install};
///
/// let config = LogConfig {
///     destination: LogDestination::File("poetry.log".into()),
///     filters: vec!["poetry=debug".into()],
///     ..LogConfig::default()
/// };
/// let _guard = install(&config)?;
/// torsion::log::Logger::new("poetry.server").info("logging to poetry.log");
/// # Ok::<(), torsion_cli::logging::LogSetupError>(())
/// ```
pub fn install(config: &LogConfig) -> Result<LogGuard, LogSetupError> {
    let (dispatch, guard) = build(config)?;
    tracing::dispatcher::set_global_default(dispatch)
        .map_err(|_| LogSetupError::AlreadyInstalled)?;
    Ok(guard)
}

/// Builds the subscriber `config` describes without installing it, for use with
/// `tracing::dispatcher::with_default` (tests, a scoped change of destination).
///
/// # Errors
///
/// As [`install`], except that nothing is installed.
///
/// # Examples
///
/// ```
/// use torsion_cli::logging::{LogConfig, LogDestination, build};
///
/// let config = LogConfig { destination: LogDestination::Stderr, ..LogConfig::default() };
/// let (dispatch, _guard) = build(&config)?;
/// tracing::dispatcher::with_default(&dispatch, || {
///     torsion::log::Logger::new("poetry").info("to stderr, as text");
/// });
/// # Ok::<(), torsion_cli::logging::LogSetupError>(())
/// ```
pub fn build(config: &LogConfig) -> Result<(Dispatch, LogGuard), LogSetupError> {
    build_with_syslog_at(config, Path::new(syslog::SYSLOG_PATH))
}

/// [`build`], with the syslog socket at `syslog_path` (for tests).
#[doc(hidden)]
pub fn build_with_syslog_at(
    config: &LogConfig,
    syslog_path: &Path,
) -> Result<(Dispatch, LogGuard), LogSetupError> {
    let filter = filter::NamespaceFilter::new(config.level, &config.filters)?;
    let format: Arc<dyn Format> = match config.format {
        LogFormat::Text => Arc::new(text::TextFormat),
        LogFormat::Json => Arc::new(json::JsonFormat),
    };
    let mut writer = None;
    let observer: Box<dyn Observer> = match &config.destination {
        LogDestination::Stdout => Box::new(LineObserver {
            format,
            sink: Box::new(Stdout),
        }),
        LogDestination::Stderr => Box::new(LineObserver {
            format,
            sink: Box::new(Stderr),
        }),
        LogDestination::File(path) => {
            let file =
                file::RotatingFile::open(path, config.rotate_bytes, config.max_rotated_files)
                    .map_err(|source| LogSetupError::OpenFile {
                        path: path.clone(),
                        source,
                    })?;
            let (sink, guard) = file::spawn_writer(
                file,
                file::CHANNEL_LINES,
                format.clone(),
                path.display().to_string(),
            )
            .map_err(LogSetupError::SpawnWriter)?;
            writer = Some(guard);
            Box::new(LineObserver {
                format,
                sink: Box::new(sink),
            })
        }
        LogDestination::Syslog { prefix } => {
            Box::new(syslog::SyslogObserver::connect(syslog_path, prefix)?)
        }
    };
    let subscriber = Registry::default().with(ObserverLayer(observer).with_filter(filter));
    Ok((Dispatch::new(subscriber), LogGuard { writer }))
}

/// Standard output as a sink: one `write_all` per line under the lock.
struct Stdout;

impl LineSink for Stdout {
    fn write_line(&self, line: &[u8]) {
        // Nowhere better to report a closed stdout than the stdout it failed on.
        let _ = io::stdout().lock().write_all(line);
    }
}

/// Standard error as a sink.
struct Stderr;

impl LineSink for Stderr {
    fn write_line(&self, line: &[u8]) {
        let _ = io::stderr().lock().write_all(line);
    }
}
