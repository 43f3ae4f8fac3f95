//! How the tutorial programs start and end: a reactor that behaves like Twisted's global
//! one (SIGINT and SIGTERM stop it cleanly, as `reactor.run()` arranges), and an ending
//! that prints `error: ...` and exits non-zero, without Rust source locations, where a
//! Python program would have printed a traceback.
//!
//! Invariant: no program panics on a user's input or on I/O; every failure reaches
//! [`exit`] and becomes one `error:` line on stderr and exit code 1.

use std::fmt;
use std::process::ExitCode;

use torsion::{Failure, Reactor};

/// A reactor for a program's `main`: the default backend (or `TORSION_REACTOR`'s), with
/// SIGINT and SIGTERM stopping it gracefully, as Twisted's `reactor.run()` installs.
///
/// # Errors
///
/// `TORSION_REACTOR` names no backend, or the backend cannot be created.
pub fn reactor() -> Result<Reactor, Failure> {
    Reactor::builder().install_signal_handlers(true).build()
}

/// The exit code for a program's outcome: 0 for `Ok`; for a failure, `error: MESSAGE` on
/// stderr and 1.
pub fn exit(outcome: Result<(), Failure>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure}");
            ExitCode::FAILURE
        }
    }
}

/// No poem could be had from any server: the clients' reason to exit non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllDownloadsFailed {
    /// How many downloads there were.
    pub attempted: usize,
}

impl fmt::Display for AllDownloadsFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.attempted {
            1 => f.write_str("no poem came from the server"),
            n => write!(f, "no poem came from any of the {n} servers"),
        }
    }
}

impl std::error::Error for AllDownloadsFailed {}

/// `Ok` if at least one of `attempted` downloads gave a poem, else [`AllDownloadsFailed`].
///
/// # Errors
///
/// `succeeded` is 0 (and `attempted` is not).
pub fn some_succeeded(succeeded: usize, attempted: usize) -> Result<(), Failure> {
    if succeeded == 0 && attempted > 0 {
        Err(AllDownloadsFailed { attempted }.into())
    } else {
        Ok(())
    }
}
