//! [`Logger`]: a namespaced logger over `tracing` (Twisted's `twisted.logger.Logger`).
//!
//! A `Logger` has a namespace chosen at run time (`Logger::new("poetry.server")`, or
//! [`logger!()`](crate::logger) for the module's path, as Twisted's default namespace comes
//! from `__name__`). `tracing` targets are part of a callsite's static metadata, so a runtime
//! namespace cannot be one: every event is emitted under the fixed target [`LOGGER_TARGET`]
//! with the namespace in the field `log_namespace` (Twisted's own key). The runner's
//! observers (`torsion-cli`'s `logging`) show and filter by `log_namespace` when an event has
//! it, and by the target otherwise.
//!
//! Structured fields ride as real `tracing` fields, typed, through the macro
//! [`event!`](crate::log::event): `torsion::log::event!(log, info, bytes = n, "sent {n} bytes")`.
//! [`Logger::failure`] emits an error event carrying the failure's message, its origin, the
//! path it passed through and its chain of sources (Twisted's `Logger.failure`).
//!
//! Invariant: a `Logger` is never silent. When no subscriber is installed, its warnings,
//! errors, critical events and failures go to stderr through the crate's fallback
//! ([`to_stderr`](crate::log::to_stderr)), fields included; debug and info events need a
//! subscriber.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Level, Metadata, Subscriber, span};

use crate::defer::Failure;

/// The `tracing` target of every event a [`Logger`] emits; the namespace is in the field
/// `log_namespace`.
pub const LOGGER_TARGET: &str = "torsion::logger";

/// The level of an event (Twisted's `twisted.logger.LogLevel`).
///
/// `tracing` has no critical level: a critical event is an error-level event with the field
/// `log_level = "critical"`, which the runner's observers show as `critical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Information useful to a developer (Twisted's `LogLevel.debug`).
    Debug,
    /// Normal operation worth recording (Twisted's `LogLevel.info`).
    Info,
    /// Something that may need attention (Twisted's `LogLevel.warn`).
    Warn,
    /// A failure of some operation (Twisted's `LogLevel.error`).
    Error,
    /// A failure that threatens the whole program (Twisted's `LogLevel.critical`).
    Critical,
}

impl LogLevel {
    /// The level's name, as Twisted spells it: `debug`, `info`, `warn`, `error`, `critical`.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A logger with a namespace (Twisted's `twisted.logger.Logger`).
///
/// Cheap to create and to clone; its methods cost a level check when their level is
/// disabled, and format nothing.
///
/// # Examples
///
/// ```
/// use torsion::Failure;
/// use torsion::log::Logger;
///
/// let log = Logger::new("poetry.server");
/// log.info("serving poems");
/// log.info(format_args!("{} poems loaded", 3));
///
/// // Structured fields, typed (numbers stay numbers in the JSON log):
/// let n = 42;
/// torsion::log::event!(log, info, bytes = n, peer = "127.0.0.1:10000", "sent {n} bytes");
///
/// // A failure with its origin, path and sources; printed to stderr when no subscriber is
/// // installed, as here.
/// let failure = Failure::msg("the poem went missing");
/// log.failure("cannot serve a poem", &failure);
///
/// // A logger named for the module it is created in (Twisted's default namespace).
/// let here = torsion::logger!();
/// assert_eq!(here.namespace(), module_path!());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Logger {
    namespace: Cow<'static, str>,
}

impl Logger {
    /// A logger for `namespace` (Twisted's `Logger(namespace=...)`), e.g. `"poetry.server"`.
    pub fn new(namespace: impl Into<Cow<'static, str>>) -> Self {
        Logger {
            namespace: namespace.into(),
        }
    }

    /// The logger's namespace (Twisted's `Logger.namespace`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Emits `message` at `level` (Twisted's `Logger.emit`).
    pub fn emit(&self, level: LogLevel, message: impl fmt::Display) {
        match level {
            LogLevel::Debug => crate::log::event!(self, debug, "{}", message),
            LogLevel::Info => crate::log::event!(self, info, "{}", message),
            LogLevel::Warn => crate::log::event!(self, warn, "{}", message),
            LogLevel::Error => crate::log::event!(self, error, "{}", message),
            LogLevel::Critical => crate::log::event!(self, critical, "{}", message),
        }
    }

    /// Emits a debug event (Twisted's `Logger.debug`). Needs a subscriber to be seen.
    pub fn debug(&self, message: impl fmt::Display) {
        crate::log::event!(self, debug, "{}", message);
    }

    /// Emits an info event (Twisted's `Logger.info`). Needs a subscriber to be seen.
    pub fn info(&self, message: impl fmt::Display) {
        crate::log::event!(self, info, "{}", message);
    }

    /// Emits a warning (Twisted's `Logger.warn`); to stderr when no subscriber is installed.
    pub fn warn(&self, message: impl fmt::Display) {
        crate::log::event!(self, warn, "{}", message);
    }

    /// Emits an error event (Twisted's `Logger.error`); to stderr when no subscriber is
    /// installed.
    pub fn error(&self, message: impl fmt::Display) {
        crate::log::event!(self, error, "{}", message);
    }

    /// Emits a critical event (Twisted's `Logger.critical`): an error-level event with the
    /// field `log_level = "critical"`; to stderr when no subscriber is installed.
    pub fn critical(&self, message: impl fmt::Display) {
        crate::log::event!(self, critical, "{}", message);
    }

    /// Emits an error event for `failure` (Twisted's `Logger.failure`), with `message` and
    /// these fields:
    ///
    /// - `log_failure`: the failure in full, on several lines: its message and origin, each
    ///   hand-off it passed through, each source of the error (`caused by: …`), and the
    ///   backtrace when one was captured;
    /// - `failure_message`: the error's message;
    /// - `failure_origin`: where the failure arose (`file:line:column`).
    ///
    /// To stderr when no subscriber is installed.
    pub fn failure(&self, message: impl fmt::Display, failure: &Failure) {
        crate::log::event!(
            self,
            error,
            log_failure = %FailureText(failure),
            failure_message = %failure.as_error(),
            failure_origin = %failure.origin(),
            "{}",
            message
        );
    }
}

/// A failure in full, as [`Logger::failure`] logs it in the field `log_failure`.
struct FailureText<'a>(&'a Failure);

impl fmt::Display for FailureText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `{:#}` is the message, the origin and every hand-off the failure passed through.
        write!(f, "{:#}", self.0)?;
        let mut source = self.0.as_error().source();
        while let Some(error) = source {
            write!(f, "\n  caused by: {error}")?;
            source = error.source();
        }
        if let Some(backtrace) = self.0.backtrace() {
            f.write_str("\n  backtrace:")?;
            for line in backtrace.to_string().lines() {
                write!(f, "\n    {line}")?;
            }
        }
        Ok(())
    }
}

/// Emits an event through a [`Logger`], with structured fields (Twisted's
/// `log.info("...", key=value)`); also reachable as `torsion::log::event!`.
///
/// `event!(logger, level, fields…, "format", args…)`: `level` is one of `debug`, `info`,
/// `warn`, `error`, `critical`; fields and message take `tracing`'s syntax (`key = value`,
/// `key = %display`, `key = ?debug`). Values keep their types, so a JSON observer writes
/// numbers as numbers. Nothing is formatted when the level is disabled. Warnings and above
/// reach stderr, fields included, when no subscriber is installed.
///
/// # Examples
///
/// ```
/// let log = torsion::log::Logger::new("poetry.client");
/// let poem = "A poem";
/// torsion::log::event!(log, info, bytes = poem.len(), done = true, "got a poem");
/// torsion::log::event!(log, warn, peer = %"10.0.0.1:10000", "slow peer");
/// ```
#[macro_export]
macro_rules! log_event {
    (@emit $logger:expr, $level:expr, $($rest:tt)+) => {{
        let logger: &$crate::log::Logger = &$logger;
        if $crate::log::subscriber_installed() {
            $crate::log::__tracing::event!(
                target: $crate::log::LOGGER_TARGET,
                $level,
                log_namespace = logger.namespace(),
                $($rest)+
            );
        } else if $level <= $crate::log::__tracing::Level::WARN {
            $crate::log::logger::with_stderr_fallback(|| {
                $crate::log::__tracing::event!(
                    target: $crate::log::LOGGER_TARGET,
                    $level,
                    log_namespace = logger.namespace(),
                    $($rest)+
                );
            });
        }
    }};
    ($logger:expr, critical, $($rest:tt)+) => {
        $crate::log_event!(
            @emit $logger, $crate::log::__tracing::Level::ERROR, log_level = "critical", $($rest)+
        )
    };
    ($logger:expr, error, $($rest:tt)+) => {
        $crate::log_event!(@emit $logger, $crate::log::__tracing::Level::ERROR, $($rest)+)
    };
    ($logger:expr, warn, $($rest:tt)+) => {
        $crate::log_event!(@emit $logger, $crate::log::__tracing::Level::WARN, $($rest)+)
    };
    ($logger:expr, info, $($rest:tt)+) => {
        $crate::log_event!(@emit $logger, $crate::log::__tracing::Level::INFO, $($rest)+)
    };
    ($logger:expr, debug, $($rest:tt)+) => {
        $crate::log_event!(@emit $logger, $crate::log::__tracing::Level::DEBUG, $($rest)+)
    };
}

#[doc(inline)]
pub use crate::log_event as event;

/// A [`Logger`] named for the module it is written in (`module_path!()`), as Twisted's
/// `Logger()` takes its namespace from the caller's `__name__`.
///
/// # Examples
///
/// ```
/// let log = torsion::logger!();
/// assert_eq!(log.namespace(), module_path!());
/// ```
#[macro_export]
macro_rules! logger {
    () => {
        $crate::log::Logger::new(::core::module_path!())
    };
}

/// Runs `emit` with the stderr fallback as the thread's subscriber, so that an event with
/// fields, emitted when no subscriber is installed, reaches stderr whole. Used by
/// [`event!`](crate::log::event).
#[doc(hidden)]
pub fn with_stderr_fallback(emit: impl FnOnce()) {
    static FALLBACK: OnceLock<Dispatch> = OnceLock::new();
    let dispatch = FALLBACK.get_or_init(|| Dispatch::new(StderrFallback));
    tracing::dispatcher::with_default(dispatch, emit);
}

/// The subscriber behind [`with_stderr_fallback`]: warnings and errors to stderr, nothing
/// else. Its level hint is `WARN`, so that it never makes debug events more expensive for
/// the subscribers installed later.
struct StderrFallback;

impl Subscriber for StderrFallback {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.enabled(metadata) {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::WARN
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::WARN)
    }

    fn new_span(&self, _span: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _span: &span::Id, _values: &span::Record<'_>) {}

    fn record_follows_from(&self, _span: &span::Id, _follows: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = FallbackLine::default();
        event.record(&mut line);
        let level = match (line.critical, *event.metadata().level()) {
            (true, _) => "CRITICAL",
            (false, Level::ERROR) => "ERROR",
            (false, _) => "WARN",
        };
        let target = line
            .namespace
            .as_deref()
            .unwrap_or(event.metadata().target());
        let mut text = line.message;
        text.push_str(&line.fields);
        if let Some(failure) = line.failure {
            text.push('\n');
            text.push_str(&failure);
        }
        report(level, target, &text);
    }

    fn enter(&self, _span: &span::Id) {}

    fn exit(&self, _span: &span::Id) {}
}

/// One event, as the stderr fallback prints it.
#[derive(Default)]
struct FallbackLine {
    message: String,
    fields: String,
    namespace: Option<String>,
    failure: Option<String>,
    critical: bool,
}

impl Visit for FallbackLine {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "log_namespace" => self.namespace = Some(value.to_owned()),
            "log_level" => self.critical = value == "critical",
            _ => self.record_debug(field, &value),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // Writing to a String cannot fail.
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "log_failure" => self.failure = Some(format!("{value:?}")),
            name => {
                let _ = write!(self.fields, " {name}={value:?}");
            }
        }
    }
}

#[cfg(not(test))]
fn report(level: &str, target: &str, text: &str) {
    crate::log::to_stderr(level, target, format_args!("{text}"));
}

#[cfg(test)]
thread_local! {
    /// What the fallback printed on this thread, for the tests.
    static REPORTED: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
fn report(level: &str, target: &str, text: &str) {
    REPORTED.with(|r| r.borrow_mut().push(format!("{level} {target}: {text}")));
    crate::log::to_stderr(level, target, format_args!("{text}"));
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::error::Error;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::registry::Registry;

    use super::*;

    /// One captured event: its target, level and fields (as `Debug` text, strings bare).
    #[derive(Debug)]
    struct Captured {
        target: String,
        level: Level,
        fields: BTreeMap<String, String>,
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<Captured>>>);

    struct Fields(BTreeMap<String, String>);

    impl Visit for Fields {
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
    }

    impl<S: Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _cx: Context<'_, S>) {
            let mut fields = Fields(BTreeMap::new());
            event.record(&mut fields);
            self.0.lock().unwrap().push(Captured {
                target: event.metadata().target().to_owned(),
                level: *event.metadata().level(),
                fields: fields.0,
            });
        }
    }

    fn capture(f: impl FnOnce()) -> Vec<Captured> {
        let capture = Capture::default();
        let subscriber = Registry::default().with(capture.clone());
        tracing::subscriber::with_default(subscriber, f);
        std::mem::take(&mut *capture.0.lock().unwrap())
    }

    #[test]
    fn events_carry_the_namespace_as_a_field_under_the_fixed_target() {
        let events = capture(|| {
            let log = Logger::new("poetry.server");
            log.debug("d");
            log.info(format_args!("{} poems", 3));
            log.warn("w");
            log.error("e");
            log.critical("c");
        });
        let levels: Vec<Level> = events.iter().map(|e| e.level).collect();
        assert_eq!(
            levels,
            [
                Level::DEBUG,
                Level::INFO,
                Level::WARN,
                Level::ERROR,
                Level::ERROR
            ]
        );
        for event in &events {
            assert_eq!(event.target, LOGGER_TARGET);
            assert_eq!(event.fields["log_namespace"], "poetry.server");
        }
        assert_eq!(events[1].fields["message"], "3 poems");
        assert_eq!(events[4].fields["log_level"], "critical");
        assert!(!events[3].fields.contains_key("log_level"));
    }

    #[test]
    fn event_macro_keeps_structured_fields() {
        let events = capture(|| {
            let log = Logger::new("poetry.client");
            let n = 42u64;
            event!(log, info, bytes = n, ratio = 0.5, peer = %"10.0.0.1", "sent {n} bytes");
        });
        assert_eq!(events.len(), 1);
        let fields = &events[0].fields;
        assert_eq!(fields["bytes"], "42");
        assert_eq!(fields["ratio"], "0.5");
        assert_eq!(fields["peer"], "10.0.0.1");
        assert_eq!(fields["message"], "sent 42 bytes");
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("cannot load the poem")
        }
    }

    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn failure_carries_message_origin_path_and_sources() {
        let failure = Failure::new(Outer(std::io::Error::other("disk on fire")));
        let failure = failure.passed_through(std::panic::Location::caller());
        let events = capture(|| Logger::new("poetry").failure("poem lost", &failure));
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!(event.level, Level::ERROR);
        assert_eq!(event.fields["message"], "poem lost");
        assert_eq!(event.fields["failure_message"], "cannot load the poem");
        assert_eq!(event.fields["failure_origin"], failure.origin().to_string());
        let text = &event.fields["log_failure"];
        assert!(
            text.starts_with(&format!("cannot load the poem (at {}", failure.origin())),
            "{text}"
        );
        assert!(text.contains("\n  passed through "), "{text}");
        assert!(text.contains("\n  caused by: disk on fire"), "{text}");
    }

    #[test]
    fn logger_macro_names_the_module() {
        assert_eq!(crate::logger!().namespace(), "torsion::log::logger::tests");
    }

    #[test]
    fn without_a_subscriber_warnings_and_failures_reach_the_fallback() {
        if crate::log::subscriber_installed() {
            return; // another test installed a global subscriber; nothing to check here
        }
        REPORTED.with(|r| r.borrow_mut().clear());
        let log = Logger::new("poetry.server");
        log.info("not shown without a subscriber");
        log.warn("w");
        event!(log, error, code = 7, "e");
        log.critical("c");
        log.failure("lost", &Failure::msg("boom"));
        let reported = REPORTED.with(|r| r.borrow_mut().split_off(0));
        assert_eq!(reported.len(), 4, "{reported:?}");
        assert_eq!(reported[0], "WARN poetry.server: w");
        assert_eq!(reported[1], "ERROR poetry.server: e code=7");
        assert_eq!(reported[2], "CRITICAL poetry.server: c");
        assert!(
            reported[3].starts_with("ERROR poetry.server: lost failure_message=boom"),
            "{}",
            reported[3]
        );
        assert!(reported[3].contains("\nboom (at "), "{}", reported[3]);
        assert!(!crate::log::subscriber_installed());
    }
}
