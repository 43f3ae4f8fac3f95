//! Running a program for its output or exit status, as a Deferred (Twisted's
//! `twisted.internet.utils`: `getProcessOutput`, `getProcessValue`,
//! `getProcessOutputAndValue`).
//!
//! Each closes the child's standard input at once, so a program that reads it sees
//! end-of-file instead of waiting forever, and fires once the child has ended (exited,
//! pipes closed). Cancelling the Deferred kills the child.
//!
//! Invariant: the Deferred fires exactly once, from `process_ended` or from a failed
//! spawn, never from inside the caller's call.

use std::cell::RefCell;
use std::rc::Rc;

use super::{ProcessProtocol, ProcessSpec, ProcessTransport, Signal};
use crate::defer::{Deferred, Failure, Resolver};
use crate::error::{ProcessDone, ProcessTerminated};
use crate::reactor::Reactor;

/// What a finished child wrote and how it ended (the tuple Twisted's
/// `getProcessOutputAndValue` fires with, plus the signal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessOutput {
    /// Everything it wrote to its standard output.
    pub stdout: Vec<u8>,
    /// Everything it wrote to its standard error.
    pub stderr: Vec<u8>,
    /// Its exit status, if it exited by itself.
    pub exit_code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
}

/// The child wrote to its standard error while only its output was asked for (Twisted's
/// `getProcessOutput` fails with an `IOError` then); both streams are kept.
#[derive(Debug, Clone)]
pub struct GotStderr {
    /// What it wrote to its standard output.
    pub stdout: Vec<u8>,
    /// What it wrote to its standard error.
    pub stderr: Vec<u8>,
}

impl std::fmt::Display for GotStderr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the process wrote to its standard error: {}",
            String::from_utf8_lossy(&self.stderr).trim_end()
        )
    }
}

impl std::error::Error for GotStderr {}

/// Collects a child's output and fires with it when the child ends.
struct Collector {
    output: ProcessOutput,
    resolver: Resolver<ProcessOutput>,
}

impl ProcessProtocol for Collector {
    fn connection_made(&mut self, transport: ProcessTransport) {
        transport.close_stdin();
    }

    fn out_received(&mut self, data: &[u8]) {
        self.output.stdout.extend_from_slice(data);
    }

    fn err_received(&mut self, data: &[u8]) {
        self.output.stderr.extend_from_slice(data);
    }

    fn process_ended(&mut self, reason: Failure) {
        if let Some(terminated) = reason.downcast_ref::<ProcessTerminated>() {
            self.output.exit_code = terminated.exit_code;
            self.output.signal = terminated.signal;
        } else if reason.check::<ProcessDone>() {
            self.output.exit_code = Some(0);
        }
        let _ = self
            .resolver
            .try_callback(std::mem::replace(&mut self.output, empty()));
    }
}

fn empty() -> ProcessOutput {
    ProcessOutput {
        stdout: Vec::new(),
        stderr: Vec::new(),
        exit_code: None,
        signal: None,
    }
}

/// Runs `spec` to its end and fires with what it wrote and how it ended (Twisted's
/// `getProcessOutputAndValue`). Unlike Twisted's, a child killed by a signal is not a
/// failure: the signal is in the result.
///
/// # Errors
///
/// The Deferred fails with [`CannotSpawn`](crate::error::CannotSpawn) if the program
/// cannot be run, and with [`Cancelled`](crate::error::Cancelled) if cancelled (the child
/// is then killed).
pub fn get_process_output_and_value(
    reactor: &Reactor,
    spec: ProcessSpec,
) -> Deferred<ProcessOutput> {
    let transport: Rc<RefCell<Option<ProcessTransport>>> = Rc::new(RefCell::new(None));
    let to_kill = transport.clone();
    let (resolver, deferred) = Deferred::with_canceller(move |_| {
        let process = to_kill.borrow().clone();
        if let Some(process) = process {
            let _ = process.signal_process(Signal::KILL);
        }
    });
    let collector = Collector {
        output: empty(),
        resolver: resolver.clone(),
    };
    match reactor.spawn_process(collector, spec) {
        Ok(process) => *transport.borrow_mut() = Some(process),
        Err(failure) => resolver.errback(failure),
    }
    deferred
}

/// Runs `spec` to its end and fires with what it wrote to its standard output (Twisted's
/// `getProcessOutput`). The exit status is not looked at, as in Twisted.
///
/// # Errors
///
/// The Deferred fails with [`GotStderr`] if the child wrote to its standard error, and as
/// [`get_process_output_and_value`] says.
pub fn get_process_output(reactor: &Reactor, spec: ProcessSpec) -> Deferred<Vec<u8>> {
    get_process_output_and_value(reactor, spec).try_map(|out| {
        if out.stderr.is_empty() {
            Ok(out.stdout)
        } else {
            Err(GotStderr {
                stdout: out.stdout,
                stderr: out.stderr,
            })
        }
    })
}

/// Runs `spec` to its end and fires with its exit status (Twisted's `getProcessValue`).
///
/// # Errors
///
/// The Deferred fails with [`ProcessTerminated`] if the child was killed by a signal, and
/// as [`get_process_output_and_value`] says.
pub fn get_process_value(reactor: &Reactor, spec: ProcessSpec) -> Deferred<i32> {
    get_process_output_and_value(reactor, spec).try_map(|out| match out.exit_code {
        Some(code) => Ok(code),
        None => Err(ProcessTerminated {
            exit_code: None,
            signal: out.signal,
            core_dumped: false,
        }),
    })
}
