//! The exit codes of a program run by `react` (and so `#[torsion::main]`): 0 when `main`
//! succeeds or the reactor is stopped by SIGINT or SIGTERM, 1 with the failure printed when
//! `main` fails or the reactor is stopped with a failure.
//!
//! Each program runs in a child process (this test binary again, told which by an
//! environment variable), since signals and exit codes are per process.

mod common;

use std::process::ExitCode;

use torsion::Failure;
use torsion::time::ReactorTime;

const PROGRAM: &str = "TORSION_MAIN_EXIT_PROGRAM";

fn run(program: &str) -> (i32, String) {
    let (code, stderr) = common::run_child(PROGRAM, program);
    (code.expect("exited, not killed by a signal"), stderr)
}

fn exit(code: ExitCode) -> ! {
    std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 })
}

/// A server's main: listens, then waits for the reactor to shut down; `signal` is raised at
/// the process after 50 ms.
fn server_stopped_by(signal: rustix::process::Signal) -> ExitCode {
    torsion::task::react(move |reactor| async move {
        let _port = reactor.listen_tcp(
            0,
            std::rc::Rc::new(torsion::testing::AccumulatingProtocol::default),
        )?;
        reactor.call_later(0.05, move || {
            let _ = rustix::process::kill_process(rustix::process::getpid(), signal);
        });
        reactor.until_shutdown().await?;
        Ok(())
    })
}

/// The child side: runs the program named in the environment, if any, and exits.
#[test]
fn child() {
    let Ok(program) = std::env::var(PROGRAM) else {
        return;
    };
    let code = match program.as_str() {
        "succeeds" => torsion::task::react(|_reactor| async { Ok(()) }),
        "fails" => {
            torsion::task::react(|_reactor| async { Err(Failure::msg("the poem server is gone")) })
        }
        "stopped_with_failure" => torsion::task::react(|reactor| async move {
            reactor.stop_with_failure(Failure::msg("cannot listen anywhere"));
            reactor.until_shutdown().await
        }),
        "sigint" => server_stopped_by(rustix::process::Signal::INT),
        "sigterm" => server_stopped_by(rustix::process::Signal::TERM),
        other => panic!("unknown program {other}"),
    };
    exit(code)
}

#[test]
fn main_that_succeeds_exits_0() {
    assert_eq!(run("succeeds").0, 0);
}

#[test]
fn main_that_fails_exits_1_and_prints_the_failure() {
    let (code, err) = run("fails");
    assert_eq!(code, 1);
    assert!(err.contains("the poem server is gone"), "{err}");
    // What went wrong, not where in the Rust sources.
    assert!(!err.contains(".rs:"), "{err}");
}

#[test]
fn a_reactor_stopped_with_a_failure_exits_1_and_prints_it() {
    let (code, err) = run("stopped_with_failure");
    assert_eq!(code, 1);
    assert!(err.contains("cannot listen anywhere"), "{err}");
}

#[test]
fn a_server_stopped_by_sigint_exits_0_quietly() {
    let (code, err) = run("sigint");
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("shut down before"), "{err}");
}

#[test]
fn a_server_stopped_by_sigterm_exits_0() {
    let (code, err) = run("sigterm");
    assert_eq!(code, 0, "{err}");
}
