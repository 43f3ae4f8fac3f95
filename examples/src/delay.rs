//! Delays given on the command line, in seconds (the tutorials' `--delay` options, and the
//! flag that shortens the fixed delays of their demos so tests need not wait 5 s).
//!
//! Invariant: a parsed delay is finite and not negative, so it can be handed to
//! `call_later` and `Duration::from_secs_f64` without panicking.

/// Parses a number of seconds, fractions allowed: `clap`'s value parser for `--delay`.
///
/// # Errors
///
/// `arg` is not a finite, non-negative number.
///
/// # Examples
///
/// ```
/// use torsion_examples::delay::parse_seconds;
///
/// assert_eq!(parse_seconds("0.7"), Ok(0.7));
/// assert!(parse_seconds("-1").is_err());
/// assert!(parse_seconds("soon").is_err());
/// ```
pub fn parse_seconds(arg: &str) -> Result<f64, String> {
    match arg.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(secs),
        _ => Err(format!("not a number of seconds: {arg:?}")),
    }
}
