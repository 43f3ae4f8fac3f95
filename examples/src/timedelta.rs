//! Elapsed times printed as Python prints a `datetime.timedelta` (`0:00:02.104573`), as the
//! blocking and asynchronous clients of the Krondo series report how long each download
//! took.
//!
//! Invariant: the output is always `H:MM:SS` followed by `.` and six digits of
//! microseconds, hours unbounded, so times line up whatever their size.

use std::time::Duration;

/// `elapsed` as `H:MM:SS.ffffff` (Python's `str(timedelta)` for a duration of less than a
/// day, with the microseconds always shown).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use torsion_examples::timedelta::format_elapsed;
///
/// assert_eq!(format_elapsed(Duration::from_micros(2_104_573)), "0:00:02.104573");
/// assert_eq!(format_elapsed(Duration::from_secs(3_725)), "1:02:05.000000");
/// ```
pub fn format_elapsed(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    format!(
        "{}:{:02}:{:02}.{:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        elapsed.subsec_micros()
    )
}
