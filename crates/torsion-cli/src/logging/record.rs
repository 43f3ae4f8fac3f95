//! The event as every observer sees it ([`Record`], Twisted's event dictionary), and the
//! `tracing` layer that hands each event to an observer (Twisted's `ILogObserver`).
//!
//! A [`Record`] is collected once per event from its `tracing` fields: `log_namespace`
//! (else the target) is the namespace, `message` the text, `log_failure` a failure's
//! multi-line text, `log_level = "critical"` raises an error to critical, and every other
//! field is kept with its type.
//!
//! Invariant: observers never see `tracing` types, only records; a new format or
//! destination is a [`Format`] or an [`Observer`], never another layer.

use std::fmt;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// A field's value, with its type kept (numbers stay numbers in JSON).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum FieldValue {
    Bool(bool),
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    F64(f64),
    Str(String),
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Bool(v) => write!(f, "{v}"),
            FieldValue::I64(v) => write!(f, "{v}"),
            FieldValue::U64(v) => write!(f, "{v}"),
            FieldValue::I128(v) => write!(f, "{v}"),
            FieldValue::U128(v) => write!(f, "{v}"),
            FieldValue::F64(v) => write!(f, "{v}"),
            FieldValue::Str(v) => f.write_str(v),
        }
    }
}

/// One event, as the observers format it (Twisted's event dictionary).
#[derive(Clone, Debug)]
pub(crate) struct Record {
    /// When the event was observed (Twisted's `log_time`).
    pub time: SystemTime,
    /// `debug`, `info`, `warn`, `error` or `critical` (`trace` for `tracing`'s trace level).
    pub level: &'static str,
    /// `log_namespace` when the event has it, else its target.
    pub namespace: String,
    /// The formatted message (empty when the event had none).
    pub message: String,
    /// A failure's text on several lines (`Logger::failure`'s `log_failure`).
    pub failure: Option<String>,
    /// Every other field, in the event's order.
    pub fields: Vec<(&'static str, FieldValue)>,
}

/// The namespace of the runner's own notices ("N log events dropped").
pub(crate) const NOTICE_NAMESPACE: &str = "torsion_cli::logging";

impl Record {
    /// Collects `event`.
    pub(crate) fn from_event(event: &Event<'_>) -> Record {
        let metadata = event.metadata();
        let mut collect = Collect {
            namespace: None,
            message: String::new(),
            failure: None,
            critical: false,
            fields: Vec::new(),
        };
        event.record(&mut collect);
        let level = if collect.critical {
            "critical"
        } else {
            level_name(*metadata.level())
        };
        Record {
            time: SystemTime::now(),
            level,
            namespace: collect
                .namespace
                .unwrap_or_else(|| metadata.target().to_owned()),
            message: collect.message,
            failure: collect.failure,
            fields: collect.fields,
        }
    }

    /// The runner's notice that `count` events were dropped, at warn level.
    pub(crate) fn dropped(count: u64) -> Record {
        Record {
            time: SystemTime::now(),
            level: "warn",
            namespace: NOTICE_NAMESPACE.to_owned(),
            message: format!("{count} log events dropped"),
            failure: None,
            fields: vec![("dropped", FieldValue::U64(count))],
        }
    }
}

/// Twisted's name for a `tracing` level.
pub(crate) fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

struct Collect {
    namespace: Option<String>,
    message: String,
    failure: Option<String>,
    critical: bool,
    fields: Vec<(&'static str, FieldValue)>,
}

impl Collect {
    fn push(&mut self, field: &Field, value: FieldValue) {
        self.fields.push((field.name(), value));
    }
}

impl Visit for Collect {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, FieldValue::F64(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, FieldValue::I64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, FieldValue::U64(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.push(field, FieldValue::I128(value));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.push(field, FieldValue::U128(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, FieldValue::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "log_namespace" => self.namespace = Some(value.to_owned()),
            "log_level" if value == "critical" => self.critical = true,
            "message" => self.message = value.to_owned(),
            "log_failure" => self.failure = Some(value.to_owned()),
            _ => self.push(field, FieldValue::Str(value.to_owned())),
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(error) = source {
            text.push_str(": ");
            text.push_str(&error.to_string());
            source = error.source();
        }
        self.push(field, FieldValue::Str(text));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%x` and format_args! messages arrive here; their Debug is their Display.
        self.record_str(field, &format!("{value:?}"));
    }
}

/// Writes a [`Record`] as bytes: one line, `\n`-terminated (text, JSON).
pub(crate) trait Format: Send + Sync + 'static {
    /// Appends `record` to `out`, ending with `\n`.
    fn format(&self, record: &Record, out: &mut Vec<u8>);
}

/// Where an observer puts what it formats (Twisted's `ILogObserver`).
pub(crate) trait Observer: Send + Sync + 'static {
    /// Handles one event. Never blocks for long and never panics.
    fn observe(&self, record: &Record);
}

/// Where formatted lines go: stdout, stderr, the log file's writer thread.
pub(crate) trait LineSink: Send + Sync + 'static {
    /// Writes one formatted line.
    fn write_line(&self, line: &[u8]);
}

/// An observer that formats each record and hands the line to a sink.
pub(crate) struct LineObserver {
    pub format: std::sync::Arc<dyn Format>,
    pub sink: Box<dyn LineSink>,
}

impl Observer for LineObserver {
    fn observe(&self, record: &Record) {
        let mut line = Vec::with_capacity(256);
        self.format.format(record, &mut line);
        self.sink.write_line(&line);
    }
}

/// The `tracing` layer that collects each event into a [`Record`] for its observer.
pub(crate) struct ObserverLayer(pub Box<dyn Observer>);

impl<S: Subscriber> Layer<S> for ObserverLayer {
    fn on_event(&self, event: &Event<'_>, _cx: Context<'_, S>) {
        self.0.observe(&Record::from_event(event));
    }
}
