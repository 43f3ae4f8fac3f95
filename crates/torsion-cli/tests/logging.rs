//! The runner's log observers, seen from outside: what each writes, parsed back; rotation's
//! bound; filters by namespace and level; syslog datagrams; `install`'s errors.
//!
//! Every test but one uses a scoped subscriber (`tracing::dispatcher::with_default`), so
//! none touches the process's global one; the test of `install` itself runs in a child
//! process (this test binary again, told so by an environment variable).

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use torsion::Failure;
use torsion::log::Logger;
use torsion_cli::logging::{
    LogConfig, LogDestination, LogFormat, LogSetupError, build, build_with_syslog_at, install,
};

/// A fresh directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("torsion-logging-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn file_config(path: &Path, format: LogFormat) -> LogConfig {
    LogConfig {
        destination: LogDestination::File(path.to_owned()),
        format,
        ..LogConfig::default()
    }
}

/// Runs `f` with the observers of `config`, then stops them (flushing the file).
fn with_logging(config: &LogConfig, f: impl FnOnce()) {
    let (dispatch, guard) = build(config).expect("build");
    tracing::dispatcher::with_default(&dispatch, f);
    drop(guard);
}

fn json_lines(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).expect("read log");
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect()
}

#[derive(Debug)]
struct Outer(std::io::Error);

impl std::fmt::Display for Outer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cannot load the poem")
    }
}

impl std::error::Error for Outer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[test]
fn json_lines_parse_keep_field_types_and_hold_a_multi_line_failure() {
    let dir = temp_dir("json");
    let path = dir.join("app.log");
    with_logging(&file_config(&path, LogFormat::Json), || {
        let log = Logger::new("poetry.server");
        torsion::log::event!(
            log,
            info,
            bytes = 42u64,
            delta = -3i64,
            ratio = 0.5,
            done = true,
            peer = "10.0.0.1:10000",
            "sent a poem"
        );
        let failure = Failure::new(Outer(std::io::Error::other("disk on fire")))
            .passed_through(std::panic::Location::caller());
        log.failure("poem lost", &failure);
        tracing::info!(target: "plain::target", answer = 7, "a plain tracing event");
    });
    let lines = json_lines(&path);
    assert_eq!(lines.len(), 3, "{lines:?}");

    let sent = &lines[0];
    assert_eq!(sent["log_namespace"], "poetry.server");
    assert_eq!(sent["log_level"], "info");
    assert_eq!(sent["message"], "sent a poem");
    assert!(sent["log_time"].is_f64());
    assert_eq!(sent["bytes"].as_u64(), Some(42));
    assert_eq!(sent["delta"].as_i64(), Some(-3));
    assert_eq!(sent["ratio"].as_f64(), Some(0.5));
    assert_eq!(sent["done"].as_bool(), Some(true));
    assert_eq!(sent["peer"], "10.0.0.1:10000");

    let lost = &lines[1];
    assert_eq!(lost["log_level"], "error");
    assert_eq!(lost["message"], "poem lost");
    assert_eq!(lost["failure_message"], "cannot load the poem");
    let failure = lost["log_failure"].as_str().expect("log_failure");
    assert!(
        failure.starts_with("cannot load the poem (at "),
        "{failure}"
    );
    assert!(failure.contains("\n  passed through "), "{failure}");
    assert!(failure.contains("\n  caused by: disk on fire"), "{failure}");

    let plain = &lines[2];
    assert_eq!(plain["log_namespace"], "plain::target");
    assert_eq!(plain["answer"].as_i64(), Some(7));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn text_lines_show_namespace_and_level_and_indent_a_failure() {
    let dir = temp_dir("text");
    let path = dir.join("app.log");
    with_logging(&file_config(&path, LogFormat::Text), || {
        let log = Logger::new("poetry.server");
        torsion::log::event!(log, info, bytes = 42, "sent a poem");
        log.critical("out of poems");
        log.failure(
            "poem lost",
            &Failure::new(Outer(std::io::Error::other("disk"))),
        );
    });
    let text = fs::read_to_string(&path).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    // Five lines, and the backtrace's below them when RUST_BACKTRACE asks for one.
    assert!(lines.len() >= 5, "{text}");
    assert!(
        lines[0].ends_with(" [poetry.server#info] sent a poem bytes=42"),
        "{text}"
    );
    // 2026-12-02T07:44:33+0000
    assert_eq!(lines[0].find(' '), Some(24), "{text}");
    assert!(lines[0][..24].ends_with("+0000"), "{text}");
    assert!(
        lines[1].ends_with(" [poetry.server#critical] out of poems"),
        "{text}"
    );
    assert!(
        lines[2].ends_with(" [poetry.server#error] poem lost"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("  cannot load the poem (at "),
        "{text}"
    );
    assert_eq!(lines[4], "    caused by: disk", "{text}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn rotation_keeps_at_most_the_bound_of_files_each_within_the_size() {
    let dir = temp_dir("rotate");
    let path = dir.join("app.log");
    let config = LogConfig {
        rotate_bytes: 1000,
        max_rotated_files: 3,
        ..file_config(&path, LogFormat::Text)
    };
    let log = Logger::new("poetry.rotate");
    // Each line is 74 bytes, so 13 fit in a file of at most 1000: 70 lines fill five files
    // and start a sixth, five rotations.
    with_logging(&config, || {
        for i in 0..70 {
            log.info(format_args!("event {i:04} padding to sixty"));
        }
    });
    let mut names: Vec<String> = fs::read_dir(&dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["app.log", "app.log.1", "app.log.2", "app.log.3"]);
    for name in &names {
        let size = fs::metadata(dir.join(name)).expect("metadata").len();
        assert!(size <= 1000, "{name} is {size} bytes");
        assert!(size > 0, "{name} is empty");
    }
    let current = fs::read_to_string(&path).expect("read");
    let line = current.lines().next().expect("a line");
    assert_eq!(line.len() + 1, 74, "{line}");
    assert!(current.contains("event 0069"), "{current}");
    let oldest = fs::read_to_string(dir.join("app.log.3")).expect("read");
    assert!(
        !oldest.contains("event 0000"),
        "the oldest file was not deleted"
    );
    // The files, oldest first, hold consecutive events up to the last.
    let all: String = ["app.log.3", "app.log.2", "app.log.1", "app.log"]
        .iter()
        .map(|n| fs::read_to_string(dir.join(n)).expect("read"))
        .collect();
    let numbers: Vec<u32> = all
        .lines()
        .map(|l| {
            let at = l.find("event ").expect("event") + 6;
            l[at..at + 4].parse().expect("number")
        })
        .collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    // The first two files' worth (26 events) went with the rotations past the bound.
    assert_eq!(numbers.first(), Some(&26));
    assert_eq!(numbers.last(), Some(&69));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn namespace_filters_hide_and_show_and_the_longest_prefix_wins() {
    let dir = temp_dir("filter");
    let path = dir.join("app.log");
    let config = LogConfig {
        filters: vec!["poetry=warn".into(), "poetry.server.chatty=debug".into()],
        ..file_config(&path, LogFormat::Json)
    };
    with_logging(&config, || {
        let server = Logger::new("poetry.server");
        server.info("hidden: poetry=warn at info");
        server.warn("shown: poetry=warn at warn");
        let chatty = Logger::new("poetry.server.chatty");
        chatty.debug("shown: the longest prefix says debug");
        Logger::new("poetryfoo").info("shown: not under poetry");
        Logger::new("other").debug("hidden: the default is info");
        tracing::info!(target: "poetry::client", "hidden: targets are filtered too");
        tracing::info!(target: "elsewhere", "shown: a plain target at info");
    });
    let messages: Vec<String> = json_lines(&path)
        .iter()
        .map(|v| v["message"].as_str().expect("message").to_owned())
        .collect();
    assert_eq!(
        messages,
        [
            "shown: poetry=warn at warn",
            "shown: the longest prefix says debug",
            "shown: not under poetry",
            "shown: a plain target at info",
        ]
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn the_global_level_filters_too() {
    let dir = temp_dir("level");
    let path = dir.join("app.log");
    let config = LogConfig {
        level: LogConfig::parse_level("WARN").expect("level"),
        ..file_config(&path, LogFormat::Json)
    };
    with_logging(&config, || {
        let log = Logger::new("poetry");
        log.info("hidden");
        log.warn("shown");
        log.error("shown too");
    });
    assert_eq!(json_lines(&path).len(), 2);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn syslog_gets_one_datagram_per_event() {
    let dir = temp_dir("syslog");
    let socket = dir.join("log.sock");
    let server = UnixDatagram::bind(&socket).expect("bind");
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let config = LogConfig {
        destination: LogDestination::Syslog {
            prefix: "poetry".into(),
        },
        ..LogConfig::default()
    };
    let (dispatch, guard) = build_with_syslog_at(&config, &socket).expect("build");
    tracing::dispatcher::with_default(&dispatch, || {
        let log = Logger::new("poetry.server");
        log.debug("hidden at info");
        log.warn("a warning");
        log.failure(
            "poem lost",
            &Failure::new(Outer(std::io::Error::other("disk"))),
        );
    });
    drop(guard);
    let mut buf = vec![0; 65536];
    let pid = std::process::id();
    let n = server.recv(&mut buf).expect("first datagram");
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        format!("<12>poetry[{pid}]: [poetry.server#warn] a warning")
    );
    let n = server.recv(&mut buf).expect("second datagram");
    let failure = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        failure.starts_with(&format!(
            "<11>poetry[{pid}]: [poetry.server#error] poem lost | "
        )),
        "{failure}"
    );
    assert!(failure.contains(" | caused by: disk"), "{failure}");
    assert!(!failure.contains('\n'), "{failure}");
    server.set_nonblocking(true).expect("nonblocking");
    assert!(server.recv(&mut buf).is_err(), "the debug event was sent");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn setup_errors_say_what_is_wrong() {
    let missing = std::env::temp_dir().join("torsion-no-such-dir/sub/app.log");
    let err = build(&file_config(&missing, LogFormat::Json)).expect_err("an error");
    assert!(matches!(err, LogSetupError::OpenFile { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("cannot open log file '{}': ", missing.display())),
        "{text}"
    );
    assert!(std::error::Error::source(&err).is_some());
    // A LogSetupError is an error a Failure can carry.
    let failure = Failure::new(err);
    assert!(failure.check::<LogSetupError>());

    let config = LogConfig {
        filters: vec!["poetry".into()],
        ..LogConfig::default()
    };
    let err = build(&config).expect_err("an error");
    assert!(
        err.to_string().starts_with("bad log filter 'poetry': "),
        "{err}"
    );

    let config = LogConfig {
        destination: LogDestination::Syslog { prefix: "p".into() },
        ..LogConfig::default()
    };
    let nowhere = temp_dir("nosyslog").join("log.sock");
    let err = build_with_syslog_at(&config, &nowhere).expect_err("an error");
    assert!(
        err.to_string()
            .starts_with(&format!("no syslog socket at {}", nowhere.display())),
        "{err}"
    );
}

#[test]
fn levels_parse_and_formats_default_as_twist_does() {
    for (name, level) in [
        ("debug", tracing::Level::DEBUG),
        ("INFO", tracing::Level::INFO),
        ("Warn", tracing::Level::WARN),
        ("error", tracing::Level::ERROR),
        ("critical", tracing::Level::ERROR),
    ] {
        assert_eq!(LogConfig::parse_level(name), Ok(level));
    }
    let err = LogConfig::parse_level("loud").unwrap_err();
    assert!(err.contains("'loud'"), "{err}");
    assert_eq!(
        LogConfig::default_format_for(&LogDestination::File("x.log".into())),
        LogFormat::Json
    );
    assert_eq!(
        LogConfig::default_format_for(&LogDestination::Syslog { prefix: "p".into() }),
        LogFormat::Text
    );
    let config = LogConfig::default();
    assert_eq!(config.level, tracing::Level::INFO);
    assert_eq!(config.destination, LogDestination::Stdout);
    assert_eq!(config.format, LogFormat::Text);
    assert!(config.filters.is_empty());
    assert_eq!(
        (config.rotate_bytes, config.max_rotated_files),
        (1_000_000, 10)
    );
}

const CHILD: &str = "TORSION_CLI_LOGGING_INSTALL_CHILD";

/// The child side of [`install_sets_the_global_subscriber_once`]: installs logging to the
/// file named in the environment, logs, and tries to install again.
#[test]
fn install_child() {
    let Ok(path) = std::env::var(CHILD) else {
        return;
    };
    let guard = install(&file_config(Path::new(&path), LogFormat::Json)).expect("install");
    Logger::new("poetry.child").info("installed");
    tracing::warn!(target: "torsion::net", "a torsion event");
    let again = install(&LogConfig::default()).expect_err("second install fails");
    assert!(matches!(again, LogSetupError::AlreadyInstalled), "{again}");
    drop(guard);
}

#[test]
fn install_sets_the_global_subscriber_once() {
    let dir = temp_dir("install");
    let path = dir.join("app.log");
    let output = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .args([
            "--exact",
            "install_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, &path)
        .output()
        .expect("run the child");
    assert!(
        output.status.success(),
        "child failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = json_lines(&path);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["log_namespace"], "poetry.child");
    assert_eq!(lines[0]["message"], "installed");
    assert_eq!(lines[1]["log_namespace"], "torsion::net");
    assert_eq!(lines[1]["log_level"], "warn");
    let _ = fs::remove_dir_all(&dir);
}

const BARE_CHILD: &str = "TORSION_CLI_LOGGING_BARE_CHILD";

/// The child side of [`without_install_a_logger_still_reaches_stderr`]: logs with no
/// subscriber at all.
#[test]
fn bare_child() {
    if std::env::var_os(BARE_CHILD).is_none() {
        return;
    }
    let log = Logger::new("poetry.bare");
    log.info("not shown without a subscriber");
    torsion::log::event!(log, warn, peer = "10.0.0.1", "a warning");
    log.failure(
        "poem lost",
        &Failure::new(Outer(std::io::Error::other("disk"))),
    );
}

#[test]
fn without_install_a_logger_still_reaches_stderr() {
    let output = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .args(["--exact", "bare_child", "--nocapture", "--test-threads=1"])
        .env(BARE_CHILD, "1")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run the child");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed: {stderr}");
    assert!(!stderr.contains("not shown"), "{stderr}");
    assert!(
        stderr.contains("WARN poetry.bare: a warning peer=\"10.0.0.1\""),
        "{stderr}"
    );
    assert!(stderr.contains("ERROR poetry.bare: poem lost"), "{stderr}");
    assert!(stderr.contains("\n  caused by: disk"), "{stderr}");
}
