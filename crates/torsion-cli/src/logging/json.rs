//! JSON lines, one event per line (Twisted's `jsonFileLogObserver` and `eventAsJSON`).
//!
//! Each event is one JSON object followed by `\n`, with Twisted's keys where they map:
//! `log_time` (UNIX time as a float), `log_level`, `log_namespace`, `message` (the formatted
//! text; Twisted keeps the `log_format` template instead), `log_failure` (a failure's
//! multi-line text, escaped inside one string), then every field of the event with its type
//! (numbers stay numbers, booleans booleans).
//!
//! Twisted prefixes each record with `\x1e` (RFC 7464's record separator) so that a
//! record corrupted by a raw newline can be resynchronised (its #8858). We do not: a record
//! here can never contain a raw newline (serde_json escapes every control character), so
//! plain `\n` framing is already unambiguous, and every line stays plain JSON that `jq`,
//! log shippers and `serde_json` read without stripping a byte first.
//!
//! Invariant: one event is exactly one line; nothing but the final `\n` may be a newline.

use std::time::UNIX_EPOCH;

use super::record::{FieldValue, Format, Record};

/// The JSON-lines format (see the module doc).
pub(crate) struct JsonFormat;

/// Keys the format writes itself; an event field with one of these names is left out
/// rather than written twice.
const RESERVED: [&str; 5] = [
    "log_time",
    "log_level",
    "log_namespace",
    "message",
    "log_failure",
];

/// Appends `"key":value`, `value` written by serde_json. Serializing a string, a number or
/// a bool into a `Vec` cannot fail (a non-finite float becomes `null`); should it ever,
/// `null` keeps the line valid.
macro_rules! entry {
    ($out:expr, $key:expr, $value:expr) => {{
        let out: &mut Vec<u8> = $out;
        if serde_json::to_writer(&mut *out, $key).is_err() {
            out.extend_from_slice(b"\"?\"");
        }
        out.push(b':');
        let start = out.len();
        if serde_json::to_writer(&mut *out, $value).is_err() {
            out.truncate(start);
            out.extend_from_slice(b"null");
        }
    }};
}

impl Format for JsonFormat {
    fn format(&self, record: &Record, out: &mut Vec<u8>) {
        let time = match record.time.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        };
        out.push(b'{');
        entry!(out, "log_time", &time);
        out.push(b',');
        entry!(out, "log_level", record.level);
        out.push(b',');
        entry!(out, "log_namespace", &record.namespace);
        out.push(b',');
        entry!(out, "message", &record.message);
        if let Some(failure) = &record.failure {
            out.push(b',');
            entry!(out, "log_failure", failure);
        }
        for (key, value) in &record.fields {
            if RESERVED.contains(key) {
                continue;
            }
            out.push(b',');
            match value {
                FieldValue::Bool(v) => entry!(out, *key, v),
                FieldValue::I64(v) => entry!(out, *key, v),
                FieldValue::U64(v) => entry!(out, *key, v),
                FieldValue::I128(v) => entry!(out, *key, v),
                FieldValue::U128(v) => entry!(out, *key, v),
                FieldValue::F64(v) => entry!(out, *key, v),
                FieldValue::Str(v) => entry!(out, *key, v),
            }
        }
        out.extend_from_slice(b"}\n");
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use serde_json::Value;

    use super::*;

    #[test]
    fn one_line_with_typed_fields_and_an_escaped_failure() {
        let record = Record {
            time: UNIX_EPOCH + Duration::from_millis(1_796_197_473_250),
            level: "error",
            namespace: "poetry.server".into(),
            message: "poem lost\non two lines".into(),
            failure: Some("boom (at src/a.rs:1:1)\n  caused by: disk".into()),
            fields: vec![
                ("bytes", FieldValue::U64(42)),
                ("delta", FieldValue::I64(-3)),
                ("ratio", FieldValue::F64(0.5)),
                ("done", FieldValue::Bool(true)),
                ("peer", FieldValue::Str("10.0.0.1".into())),
                ("message", FieldValue::Str("duplicate".into())),
                ("nan", FieldValue::F64(f64::NAN)),
            ],
        };
        let mut out = Vec::new();
        JsonFormat.format(&record, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with('\n'));
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["log_time"].as_f64(), Some(1_796_197_473.25));
        assert_eq!(v["log_level"], "error");
        assert_eq!(v["log_namespace"], "poetry.server");
        assert_eq!(v["message"], "poem lost\non two lines");
        assert_eq!(
            v["log_failure"],
            "boom (at src/a.rs:1:1)\n  caused by: disk"
        );
        assert_eq!(v["bytes"], 42);
        assert_eq!(v["delta"], -3);
        assert_eq!(v["ratio"], 0.5);
        assert_eq!(v["done"], true);
        assert_eq!(v["peer"], "10.0.0.1");
        assert!(v["nan"].is_null());
    }

    #[test]
    fn the_time_is_a_float() {
        let record = Record::dropped(3);
        let mut out = Vec::new();
        JsonFormat.format(&record, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((v["log_time"].as_f64().unwrap() - now).abs() < 60.0);
        assert_eq!(v["dropped"], 3);
        assert_eq!(v["message"], "3 log events dropped");
    }
}
