//! CPU time of a process (all its threads) from `/proc/PID/stat`.

use std::time::Duration;

/// Clock ticks per second for the `utime`/`stime` fields.
fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Parses `utime + stime` (fields 14 and 15) out of a `/proc/PID/stat` line.
/// The command name (field 2) is in parentheses and may hold spaces or
/// parentheses itself, so fields are counted from the last `)`.
fn parse_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3 (state): utime is field 14, i.e. the 12th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// User plus system CPU time consumed so far by `pid` (`None`: this process).
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let ticks = parse_ticks(&std::fs::read_to_string(path).ok()?)?;
    let tck = clk_tck();
    Some(Duration::from_nanos(ticks * 1_000_000_000 / tck))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_after_the_command_name() {
        let line = "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 17 0 0 20 0 1 0 12345 1000000 200 18446744073709551615";
        assert_eq!(parse_ticks(line), Some(267));
        assert_eq!(parse_ticks("garbage"), None);
    }

    #[test]
    fn reads_own_cpu_time() {
        assert!(cpu_time(None).is_some());
        assert!(cpu_time(Some(std::process::id())).is_some());
    }
}
