//! The terminal format (Twisted's `formatEventAsClassicLogText` and `textFileLogObserver`):
//! `2026-12-02T07:44:33+0000 [poetry.server#info] message key=value …`, a failure's lines
//! indented below.
//!
//! Times are UTC (`+0000`), so that lines from several machines sort together and no time
//! zone database is needed. Fields named `log_*` or `failure_*` are the logger's own and are
//! not repeated as `key=value` (the failure's text below says it all).
//!
//! Invariant: one event starts exactly one line that begins with its time; everything a
//! failure adds below it is indented, so a reader (or `grep`) can tell events apart.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use super::record::{FieldValue, Format, Record};

/// The text format (see the module doc).
pub(crate) struct TextFormat;

impl Format for TextFormat {
    fn format(&self, record: &Record, out: &mut Vec<u8>) {
        let mut text = format_time(record.time);
        text.push(' ');
        let mut body = String::new();
        write_body(record, &mut body);
        // A message on several lines keeps its continuation lines indented.
        text.push_str(&body.replace('\n', "\n  "));
        if let Some(failure) = &record.failure {
            for line in failure.lines() {
                text.push_str("\n  ");
                text.push_str(line);
            }
        }
        text.push('\n');
        out.extend_from_slice(text.as_bytes());
    }
}

/// `[namespace#level] message key=value …`: the line without its time (what syslog shows).
pub(crate) fn write_body(record: &Record, out: &mut String) {
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "[{}#{}] {}",
        record.namespace, record.level, record.message
    );
    for (key, value) in &record.fields {
        if key.starts_with("log_") || key.starts_with("failure_") {
            continue;
        }
        match value {
            FieldValue::Str(s) if needs_quotes(s) => {
                let _ = write!(out, " {key}={s:?}");
            }
            value => {
                let _ = write!(out, " {key}={value}");
            }
        }
    }
}

fn needs_quotes(s: &str) -> bool {
    s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control())
}

/// `time` as `YYYY-MM-DDTHH:MM:SS+0000` (UTC), Twisted's `formatTime` default.
pub(crate) fn format_time(time: SystemTime) -> String {
    let secs = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    };
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+0000",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn record() -> Record {
        Record {
            time: UNIX_EPOCH + Duration::from_secs(1_796_197_473),
            level: "info",
            namespace: "poetry.server".into(),
            message: "sent a poem".into(),
            failure: None,
            fields: vec![
                ("bytes", FieldValue::U64(42)),
                ("peer", FieldValue::Str("10.0.0.1:10000".into())),
                ("title", FieldValue::Str("The Raven".into())),
            ],
        }
    }

    #[test]
    fn times_are_utc_in_twisted_form() {
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01T00:00:00+0000");
        assert_eq!(
            format_time(UNIX_EPOCH + Duration::from_secs(1_796_197_473)),
            "2026-12-02T07:44:33+0000"
        );
        assert_eq!(
            format_time(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00+0000"
        );
    }

    #[test]
    fn a_line_is_time_namespace_level_message_and_fields() {
        let mut out = Vec::new();
        TextFormat.format(&record(), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-12-02T07:44:33+0000 [poetry.server#info] sent a poem bytes=42 \
             peer=10.0.0.1:10000 title=\"The Raven\"\n"
        );
    }

    #[test]
    fn a_failure_is_indented_below() {
        let mut r = record();
        r.level = "error";
        r.fields = vec![("failure_origin", FieldValue::Str("src/a.rs:1:1".into()))];
        r.message = "poem\nlost".into();
        r.failure = Some("boom (at src/a.rs:1:1)\n  caused by: disk".into());
        let mut out = Vec::new();
        TextFormat.format(&r, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-12-02T07:44:33+0000 [poetry.server#error] poem\n  lost\n  \
             boom (at src/a.rs:1:1)\n    caused by: disk\n"
        );
    }
}
