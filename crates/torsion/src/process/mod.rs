//! Child processes (Twisted's `twisted.internet.process`, `IReactorProcess.spawnProcess`,
//! `ProcessProtocol` and `twisted.internet.utils`).
//!
//! [`Reactor::spawn_process`] starts a program described by a [`ProcessSpec`] and connects
//! it to a [`ProcessProtocol`]: what the child writes to its pipes arrives in
//! [`child_data_received`](ProcessProtocol::child_data_received) (its standard output and
//! error in [`out_received`](ProcessProtocol::out_received) and
//! [`err_received`](ProcessProtocol::err_received)); what the protocol writes to the
//! [`ProcessTransport`] goes to the child's standard input, buffered and flow-controlled
//! like a socket's writes. The child's exit is reported twice, as in Twisted:
//! [`process_exited`](ProcessProtocol::process_exited) when it exits, and
//! [`process_ended`](ProcessProtocol::process_ended) once its pipes are closed too, each
//! with [`ProcessDone`](crate::error::ProcessDone) for status 0 or
//! [`ProcessTerminated`](crate::error::ProcessTerminated) with the exit code or signal.
//!
//! | torsion | Twisted |
//! | --- | --- |
//! | [`Reactor::spawn_process`], [`ProcessSpec`], [`ChildFd`] | `reactor.spawnProcess(proto, executable, args, env, path, uid, gid, usePTY, childFDs)` |
//! | [`ProcessProtocol`] | `protocol.ProcessProtocol` |
//! | [`ProcessTransport`], [`ProcessTransportOps`] | `IProcessTransport` (`process.Process`, `PTYProcess`) |
//! | [`Signal`] | the argument of `signalProcess("TERM")` |
//! | [`get_process_output`], [`get_process_value`], [`get_process_output_and_value`] | `utils.getProcessOutput`, `getProcessValue`, `getProcessOutputAndValue` |
//!
//! How it differs from Twisted: a program that cannot be run is an error from
//! `spawn_process` naming it ([`CannotSpawn`]), not a child that
//! exits with status 1; exits are watched through a pidfd, one per child, so reaping costs
//! the same with one child or ten thousand (Linux 5.3 or later; before that, SIGCHLD, as
//! Twisted does); the spawn does not close
//! descriptors one by one (see `spawn.rs`); the child inherits the environment unless told
//! otherwise ([`ProcessSpec::env_clear`]).
//!
//! The pieces: `spec.rs` (what to run), `spawn.rs` (starting it), `child.rs` (the
//! transport and the exit watch) and `output.rs` (the Deferred helpers); the pipes are
//! `net::pipe`'s.
//!
//! Invariant: a protocol's methods are called from the loop only, one at a time, never
//! from inside a call it makes on its transport.
//!
//! # Examples
//!
//! ```
//! use torsion::process::{ProcessSpec, get_process_output};
//! use torsion::Reactor;
//!
//! # fn main() -> Result<(), torsion::Failure> {
//! let reactor = Reactor::new()?;
//! let output = get_process_output(&reactor, ProcessSpec::new("sh").args(["-c", "echo hello"]));
//! let stop = reactor.clone();
//! let mut done = output.map(move |out| {
//!     let _ = stop.stop();
//!     out
//! });
//! reactor.run()?;
//! assert_eq!(done.take_result().unwrap()?, b"hello\n");
//! # Ok(())
//! # }
//! ```

mod child;
mod output;
mod reaper;
mod spawn;
mod spec;

pub use output::{
    GotStderr, ProcessOutput, get_process_output, get_process_output_and_value, get_process_value,
};
pub use spec::{ChildFd, ProcessSpec, Signal};

use std::os::fd::RawFd;
use std::rc::Rc;

use crate::defer::Failure;
use crate::error::{CannotSpawn, InvalidArgument};
use crate::net::Producer;
use crate::reactor::Reactor;

/// What a protocol talking to a child process is told (Twisted's `ProcessProtocol`).
/// Every method has a default that does nothing, except the two dispatchers, which pass
/// descriptors 0, 1 and 2 on to the named methods as Twisted's do.
pub trait ProcessProtocol: 'static {
    /// The child started; `transport` talks to it (Twisted's `makeConnection` /
    /// `connectionMade`).
    fn connection_made(&mut self, transport: ProcessTransport) {
        let _ = transport;
    }

    /// The child wrote `data` to its descriptor `child_fd` (Twisted's
    /// `childDataReceived`). By default descriptor 1 goes to
    /// [`out_received`](ProcessProtocol::out_received) and 2 to
    /// [`err_received`](ProcessProtocol::err_received).
    fn child_data_received(&mut self, child_fd: RawFd, data: &[u8]) {
        match child_fd {
            1 => self.out_received(data),
            2 => self.err_received(data),
            _ => {}
        }
    }

    /// The child wrote to its standard output (Twisted's `outReceived`).
    fn out_received(&mut self, data: &[u8]) {
        let _ = data;
    }

    /// The child wrote to its standard error (Twisted's `errReceived`).
    fn err_received(&mut self, data: &[u8]) {
        let _ = data;
    }

    /// The pipe at the child's descriptor `child_fd` closed (Twisted's
    /// `childConnectionLost`). By default 0, 1 and 2 go to the three methods below.
    fn child_connection_lost(&mut self, child_fd: RawFd) {
        match child_fd {
            0 => self.in_connection_lost(),
            1 => self.out_connection_lost(),
            2 => self.err_connection_lost(),
            _ => {}
        }
    }

    /// The child's standard input closed (Twisted's `inConnectionLost`).
    fn in_connection_lost(&mut self) {}

    /// The child's standard output closed (Twisted's `outConnectionLost`).
    fn out_connection_lost(&mut self) {}

    /// The child's standard error closed (Twisted's `errConnectionLost`).
    fn err_connection_lost(&mut self) {}

    /// The child exited, whether or not its pipes are closed (Twisted's `processExited`):
    /// `reason` is [`ProcessDone`](crate::error::ProcessDone) or
    /// [`ProcessTerminated`](crate::error::ProcessTerminated).
    fn process_exited(&mut self, reason: Failure) {
        let _ = reason;
    }

    /// The child exited and every pipe to it is closed (Twisted's `processEnded`); the
    /// last call the protocol gets.
    fn process_ended(&mut self, reason: Failure) {
        let _ = reason;
    }
}

/// A child process as its protocol drives it (Twisted's `IProcessTransport`).
pub trait ProcessTransportOps {
    /// The child's process id, until it has been reaped (Twisted's `pid`, `None` after).
    fn pid(&self) -> Option<u32>;

    /// Queues `data` for the child's standard input (Twisted's `write`); dropped once that
    /// pipe is closed.
    fn write(&self, data: &[u8]);

    /// Queues `data` for the pipe at the child's descriptor `child_fd` (Twisted's
    /// `writeToChild`).
    ///
    /// # Errors
    ///
    /// `child_fd` is not a pipe the parent writes to ([`ChildFd::Write`]) or is closed.
    fn write_to_child(&self, child_fd: RawFd, data: &[u8]) -> Result<(), InvalidArgument>;

    /// Closes the pipe at the child's descriptor `child_fd`, once what is queued for it
    /// has gone (Twisted's `closeChildFD`).
    fn close_child_fd(&self, child_fd: RawFd);

    /// Closes the child's standard input, so it reads end-of-file (Twisted's
    /// `closeStdin`).
    fn close_stdin(&self) {
        self.close_child_fd(0);
    }

    /// Closes the pipe from the child's standard output (Twisted's `closeStdout`).
    fn close_stdout(&self) {
        self.close_child_fd(1);
    }

    /// Closes the pipe from the child's standard error (Twisted's `closeStderr`).
    fn close_stderr(&self) {
        self.close_child_fd(2);
    }

    /// Closes the standard input, output and error pipes (Twisted's `loseConnection`).
    /// The child is not signalled.
    fn lose_connection(&self);

    /// Sends the child `signal` (Twisted's `signalProcess`), through its pidfd, so the
    /// signal cannot reach a process that reused its id.
    ///
    /// # Errors
    ///
    /// [`ProcessExitedAlready`](crate::error::ProcessExitedAlready) once the child has
    /// been reaped; an [`InvalidArgument`] for a signal that cannot be sent.
    fn signal_process(&self, signal: Signal) -> Result<(), Failure>;

    /// Stops reading the child's output pipes until
    /// [`resume_producing`](ProcessTransportOps::resume_producing) (Twisted's
    /// `pauseProducing`); the child blocks once the pipes fill.
    fn pause_producing(&self);

    /// Reads the child's output again.
    fn resume_producing(&self);

    /// Registers a producer of what is written to the child's standard input (Twisted's
    /// `registerProducer`), paused and resumed by that pipe's water marks.
    ///
    /// # Errors
    ///
    /// [`ProducerAlreadyRegistered`](crate::error::ProducerAlreadyRegistered).
    fn register_producer(&self, producer: Rc<dyn Producer>, streaming: bool)
    -> Result<(), Failure>;

    /// Unregisters the producer of the standard input (Twisted's `unregisterProducer`).
    fn unregister_producer(&self);

    /// Bytes queued for the child's standard input and not yet taken by the pipe.
    fn buffered(&self) -> usize;

    /// Whether the child has exited (`process_exited` has been or is being called).
    fn has_exited(&self) -> bool;
}

/// The handle to a child process, as `spawn_process` returns it and its protocol gets it.
pub type ProcessTransport = Rc<dyn ProcessTransportOps>;

impl Reactor {
    /// Starts the program `spec` describes and connects it to `protocol` (Twisted's
    /// `reactor.spawnProcess`). `protocol`'s
    /// [`connection_made`](ProcessProtocol::connection_made) is called before this
    /// returns.
    ///
    /// # Errors
    ///
    /// [`CannotSpawn`] naming the program when it cannot be run (not found, not
    /// executable, a bad working directory), and [`InvalidArgument`] for
    /// a descriptor map a pty cannot have. Nothing is left behind: no pipe, no zombie.
    pub fn spawn_process(
        &self,
        protocol: impl ProcessProtocol,
        spec: ProcessSpec,
    ) -> Result<ProcessTransport, Failure> {
        spec.validate()?;
        let program = spec.program();
        let cannot = |source: std::io::Error| CannotSpawn {
            program: program.clone(),
            source,
        };
        // Without pidfds, the SIGCHLD handler must be in place before the child exists.
        let sigchld = if reaper::forced() {
            Some(reaper::SigchldReaper::for_reactor(self).map_err(cannot)?)
        } else {
            None
        };
        let spawned = match spawn::spawn(&spec) {
            Ok(spawned) => spawned,
            Err(err) => {
                if let Some(reaper) = &sigchld {
                    reaper.release_if_idle();
                }
                return Err(cannot(err).into());
            }
        };
        let pid = rustix::process::Pid::from_raw(spawned.pid)
            .ok_or_else(|| cannot(std::io::Error::other("the spawn returned no process id")))?;
        let watch = match &sigchld {
            Some(reaper) => child::ExitWatch::Sigchld(reaper.clone()),
            // No PIDFD_NONBLOCK (Linux 5.10): `waitid` is asked with WNOHANG anyway.
            None => match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
                Ok(fd) => child::ExitWatch::Pidfd(Rc::new(fd)),
                Err(rustix::io::Errno::NOSYS | rustix::io::Errno::INVAL) => {
                    // An old kernel: watch SIGCHLD. The handler comes after this first
                    // child, so the reaper checks it once at once as well.
                    child::ExitWatch::Sigchld(
                        reaper::SigchldReaper::for_reactor(self).map_err(cannot)?,
                    )
                }
                Err(rustix::io::Errno::SRCH) => {
                    // Reaped already by other code (SIGCHLD ignored, or a `waitpid(-1)`):
                    // the pid may belong to another process now, so send it nothing.
                    return Err(cannot(std::io::Error::other(
                        "the child was reaped by other code before it could be watched",
                    ))
                    .into());
                }
                Err(err) => {
                    // No way to watch this child: do not leave it running unwatched, or
                    // as a zombie. It is not reaped yet, so its pid is still its own.
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    let _ =
                        rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
                    return Err(cannot(std::io::Error::new(
                        std::io::ErrorKind::Unsupported,
                        format!("cannot watch the child through a pidfd: {err}"),
                    ))
                    .into());
                }
            },
        };
        let child = child::Child::start(self, program, spawned, watch, Box::new(protocol));
        Ok(child)
    }
}
