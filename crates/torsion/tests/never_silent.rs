//! With no logging configured, what a program did not handle reaches stderr; with a
//! subscriber installed, it goes there and only there.
//!
//! Each scenario runs in a child process (this test binary again, told which scenario by an
//! environment variable), because whether a global subscriber is installed is per process.

mod common;

const SCENARIO: &str = "TORSION_NEVER_SILENT_SCENARIO";

/// Runs `scenario` in a child process and returns its stderr.
fn stderr_of(scenario: &str) -> String {
    let (code, stderr) = common::run_child(SCENARIO, scenario);
    assert_eq!(code, Some(0), "scenario {scenario} failed: {stderr}");
    stderr
}

/// The child side: runs the scenario named in the environment, if any.
#[test]
fn child() {
    let Ok(scenario) = std::env::var(SCENARIO) else {
        return;
    };
    match scenario.as_str() {
        "unhandled" => drop(torsion::Deferred::<()>::fail(torsion::Failure::msg(
            "the poem was gibberish",
        ))),
        "panic_in_timer" => {
            use torsion::time::ReactorTime;
            let reactor = torsion::Reactor::new().expect("reactor");
            reactor.call_later(0.0, || panic!("a delayed call blew up"));
            let r = reactor.clone();
            reactor.call_later(0.01, move || {
                let _ = r.stop();
            });
            reactor.run().expect("run");
        }
        "subscriber" => {
            let (writer, lines) = Capture::new();
            tracing_subscriber::fmt()
                .with_writer(writer)
                .with_ansi(false)
                .init();
            drop(torsion::Deferred::<()>::fail(torsion::Failure::msg(
                "the poem was gibberish",
            )));
            let seen = lines.lock().expect("lock").clone();
            let seen = String::from_utf8_lossy(&seen).into_owned();
            // The subscriber got it; the test below checks stderr did not.
            assert!(seen.contains("Unhandled error in Deferred"), "{seen}");
            assert!(seen.contains("the poem was gibberish"), "{seen}");
        }
        other => panic!("unknown scenario {other}"),
    }
}

#[test]
fn unhandled_failure_is_printed_to_stderr_without_a_subscriber() {
    let err = stderr_of("unhandled");
    assert!(err.contains("Unhandled error in Deferred"), "{err}");
    assert!(err.contains("the poem was gibberish"), "{err}");
    // Where it arose: this file.
    assert!(err.contains("never_silent.rs"), "{err}");
}

#[test]
fn panic_in_a_delayed_call_is_printed_to_stderr_without_a_subscriber() {
    let err = stderr_of("panic_in_timer");
    assert!(err.contains("unhandled panic in a delayed call"), "{err}");
    assert!(err.contains("a delayed call blew up"), "{err}");
}

#[test]
fn with_a_subscriber_errors_go_there_and_not_to_stderr() {
    let err = stderr_of("subscriber");
    assert!(!err.contains("Unhandled error in Deferred"), "{err}");
}

/// A `tracing_subscriber` writer that keeps what it is given.
#[derive(Clone)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Capture {
    fn new() -> (Capture, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        (Capture(lines.clone()), lines)
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}
