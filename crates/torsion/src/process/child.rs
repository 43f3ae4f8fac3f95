//! A running child process as its protocol sees it (Twisted's `process.Process` and
//! `PTYProcess`): the transport over its pipes, and the watch on its exit.
//!
//! The exit is watched through a pidfd (Linux ≥ 5.3): the reactor waits for it to become
//! readable and `waitid` then reaps that one child, so each exit costs O(1) however many
//! children run (Twisted calls `waitpid` on every child at every SIGCHLD, its #2967). The
//! pidfd also names the process when it is signalled, so a signal can never reach another
//! process that reused the PID. Without pidfds, `reaper.rs` watches SIGCHLD instead.
//!
//! [`process_exited`](super::ProcessProtocol::process_exited) comes when the child exits,
//! whatever its pipes do (a grandchild may hold them open);
//! [`process_ended`](super::ProcessProtocol::process_ended) comes once it has exited and
//! every pipe is closed. The protocol is dropped right after `process_ended`, which ends
//! the protocol → transport → child cycle.
//!
//! Invariant: the protocol is called only from the loop (pipe events, the exit watch, the
//! `call_soon` queue), never while one of its own calls into the transport runs, and never
//! while a `RefCell` of this file is borrowed.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use rustix::process::{WaitIdOptions, WaitIdStatus};

use super::spec::{ChildFd, Signal};
use super::{ProcessProtocol, ProcessTransport, ProcessTransportOps};
use crate::defer::Failure;
use crate::error::{InvalidArgument, ProcessDone, ProcessExitedAlready, ProcessTerminated};
use crate::net::Producer;
use crate::net::pipe::{PipeOwner, PipeReader, PipeWriter};
use crate::reactor::{FileDescriptor, Reactor, ReadDescriptor};

const LOG_TARGET: &str = "torsion::process";

/// One child process: its pipes, its exit, its protocol.
pub(crate) struct Child {
    reactor: Reactor,
    program: String,
    pid: i32,
    /// The pidfd, until the child is reaped; `None` from the start under the SIGCHLD
    /// reaper.
    pidfd: RefCell<Option<Rc<OwnedFd>>>,
    /// Set once the child is reaped (its pid may then belong to another process).
    reaped: Cell<bool>,
    protocol: RefCell<Option<Box<dyn ProcessProtocol>>>,
    readers: RefCell<BTreeMap<RawFd, Rc<PipeReader>>>,
    writers: RefCell<BTreeMap<RawFd, Rc<PipeWriter>>>,
    /// How it exited, once it has.
    exit: RefCell<Option<Failure>>,
    ended: Cell<bool>,
    paused: Cell<bool>,
    /// On a pty: one descriptor is both the input (0) and the output (1).
    pty: bool,
}

impl Child {
    /// Wraps a started child, its pipes and its pidfd, and tells `protocol` it is connected.
    pub(crate) fn start(
        reactor: &Reactor,
        program: String,
        spawned: super::spawn::Spawned,
        exit_watch: ExitWatch,
        protocol: Box<dyn ProcessProtocol>,
    ) -> Rc<Child> {
        let pidfd = match &exit_watch {
            ExitWatch::Pidfd(fd) => Some(fd.clone()),
            ExitWatch::Sigchld(_) => None,
        };
        let child = Rc::new(Child {
            reactor: reactor.clone(),
            program,
            pid: spawned.pid,
            pidfd: RefCell::new(pidfd),
            reaped: Cell::new(false),
            protocol: RefCell::new(Some(protocol)),
            readers: RefCell::new(BTreeMap::new()),
            writers: RefCell::new(BTreeMap::new()),
            exit: RefCell::new(None),
            ended: Cell::new(false),
            paused: Cell::new(false),
            pty: spawned.pty_master.is_some(),
        });
        let owner: Rc<dyn PipeOwner> = child.clone();
        if let Some(master) = spawned.pty_master {
            let master = Rc::new(master);
            let reader = PipeReader::new(reactor, master.clone(), 1, owner.clone(), true);
            let writer = PipeWriter::new(reactor, master, 0, owner.clone(), false, false);
            child.readers.borrow_mut().insert(1, reader);
            child.writers.borrow_mut().insert(0, writer);
        }
        for (target, what, fd) in spawned.pipes {
            let fd = Rc::new(fd);
            match what {
                ChildFd::Read => {
                    let reader = PipeReader::new(reactor, fd, target, owner.clone(), false);
                    child.readers.borrow_mut().insert(target, reader);
                }
                ChildFd::Write => {
                    let writer = PipeWriter::new(reactor, fd, target, owner.clone(), true, false);
                    child.writers.borrow_mut().insert(target, writer);
                }
                ChildFd::Inherit(_) => {}
            }
        }
        let readers: Vec<_> = child.readers.borrow().values().cloned().collect();
        for reader in readers {
            reader.start();
        }
        let writers: Vec<_> = child.writers.borrow().values().cloned().collect();
        for writer in writers {
            writer.start();
        }
        match exit_watch {
            ExitWatch::Pidfd(fd) => {
                let watch = Rc::new(PidfdWatch {
                    child: child.clone(),
                    fd: fd.as_raw_fd(),
                });
                if let Err(err) = reactor.add_reader(watch) {
                    // Cannot happen for a pidfd on a working backend; say so rather than hang.
                    crate::log::error!(target: LOG_TARGET, "cannot watch {} (pid {}) for its exit: {err}", child.program, child.pid);
                }
            }
            ExitWatch::Sigchld(reaper) => reaper.watch(child.pid, child.clone()),
        }
        let transport: ProcessTransport = child.clone();
        child.with_protocol(|p| p.connection_made(transport));
        child
    }

    /// Runs `f` on the protocol; a panic is logged and closes the pipes (as an exception
    /// in a Twisted process protocol loses the connection).
    fn with_protocol(&self, f: impl FnOnce(&mut dyn ProcessProtocol)) {
        let Ok(mut slot) = self.protocol.try_borrow_mut() else {
            crate::log::error!(target: LOG_TARGET, "process protocol re-entered; event dropped");
            return;
        };
        let Some(protocol) = slot.as_mut() else {
            return;
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut **protocol)));
        drop(slot);
        if let Err(payload) = outcome {
            let failure = Failure::from_panic(&*payload);
            crate::log::error!(target: LOG_TARGET, "the protocol of {} (pid {}) panicked: {failure:#}", self.program, self.pid);
            self.lose_connection();
        }
    }

    /// The child was reaped with `status` (`None`: reaped by someone else, status unknown).
    pub(crate) fn exited(&self, status: Option<WaitIdStatus>) {
        self.reaped.set(true);
        self.pidfd.borrow_mut().take();
        let reason = match status {
            Some(status) if status.exit_status() == Some(0) => Failure::new(ProcessDone),
            Some(status) => Failure::new(ProcessTerminated {
                exit_code: status.exit_status(),
                signal: status.terminating_signal(),
                core_dumped: status.dumped(),
            }),
            None => Failure::new(ProcessTerminated {
                exit_code: None,
                signal: None,
                core_dumped: false,
            }),
        };
        *self.exit.borrow_mut() = Some(reason.clone());
        self.with_protocol(|p| p.process_exited(reason));
        self.maybe_ended();
    }

    fn maybe_ended(&self) {
        if self.ended.get()
            || !self.readers.borrow().is_empty()
            || !self.writers.borrow().is_empty()
        {
            return;
        }
        let Some(reason) = self.exit.borrow().clone() else {
            return;
        };
        self.ended.set(true);
        self.with_protocol(|p| p.process_ended(reason));
        let protocol = self.protocol.borrow_mut().take();
        drop(protocol);
    }

    fn writer(&self, child_fd: RawFd) -> Option<Rc<PipeWriter>> {
        self.writers.borrow().get(&child_fd).cloned()
    }
}

impl PipeOwner for Child {
    fn pipe_data(&self, key: i32, data: &[u8]) {
        self.with_protocol(|p| p.child_data_received(key, data));
    }

    fn pipe_closed(&self, key: i32, reason: Failure) {
        let _ = reason;
        let was_reader = self.readers.borrow_mut().remove(&key).is_some();
        let was_writer = self.writers.borrow_mut().remove(&key).is_some();
        if was_reader || was_writer {
            self.with_protocol(|p| p.child_connection_lost(key));
        }
        if self.pty
            && key == 1
            && let Some(input) = self.writer(0)
        {
            // The terminal's output ended (the child side closed): so has its input.
            input.abort();
        }
        self.maybe_ended();
    }
}

impl ProcessTransportOps for Child {
    fn pid(&self) -> Option<u32> {
        (!self.reaped.get()).then_some(self.pid as u32)
    }

    fn write(&self, data: &[u8]) {
        if let Some(writer) = self.writer(0) {
            writer.write(data);
        }
    }

    fn write_to_child(&self, child_fd: RawFd, data: &[u8]) -> Result<(), InvalidArgument> {
        match self.writer(child_fd) {
            Some(writer) => {
                writer.write(data);
                Ok(())
            }
            None => Err(InvalidArgument(format!(
                "the child's descriptor {child_fd} is not a pipe the parent writes to"
            ))),
        }
    }

    fn close_child_fd(&self, child_fd: RawFd) {
        if let Some(writer) = self.writer(child_fd) {
            writer.close();
        }
        let reader = self.readers.borrow().get(&child_fd).cloned();
        if let Some(reader) = reader {
            reader.close();
        }
    }

    fn lose_connection(&self) {
        for fd in [0, 1, 2] {
            self.close_child_fd(fd);
        }
    }

    fn signal_process(&self, signal: Signal) -> Result<(), Failure> {
        if self.reaped.get() {
            return Err(ProcessExitedAlready.into());
        }
        let Some(sig) = signal.to_rustix() else {
            return Err(InvalidArgument(format!("{signal} cannot be sent")).into());
        };
        let pidfd = self.pidfd.borrow().clone();
        let sent = match (pidfd, rustix::process::Pid::from_raw(self.pid)) {
            (Some(pidfd), _) => rustix::process::pidfd_send_signal(pidfd.as_fd(), sig),
            // Not reaped yet, so the pid is still this child's (a zombie keeps it).
            (None, Some(pid)) => rustix::process::kill_process(pid, sig),
            (None, None) => return Err(ProcessExitedAlready.into()),
        };
        match sent {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::SRCH) => Err(ProcessExitedAlready.into()),
            Err(err) => Err(Failure::new(std::io::Error::from(err))),
        }
    }

    fn pause_producing(&self) {
        if self.paused.replace(true) {
            return;
        }
        let readers: Vec<_> = self.readers.borrow().values().cloned().collect();
        for reader in readers {
            reader.pause();
        }
    }

    fn resume_producing(&self) {
        if !self.paused.replace(false) {
            return;
        }
        let readers: Vec<_> = self.readers.borrow().values().cloned().collect();
        for reader in readers {
            reader.resume();
        }
    }

    fn register_producer(
        &self,
        producer: Rc<dyn Producer>,
        streaming: bool,
    ) -> Result<(), Failure> {
        match self.writer(0) {
            Some(writer) => writer.register_producer(producer, streaming),
            None => {
                producer.stop_producing();
                Ok(())
            }
        }
    }

    fn unregister_producer(&self) {
        if let Some(writer) = self.writer(0) {
            writer.unregister_producer();
        }
    }

    fn buffered(&self) -> usize {
        self.writer(0).map_or(0, |w| w.buffered())
    }

    fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }
}

/// How a child's exit is watched.
pub(crate) enum ExitWatch {
    /// Through its pidfd (Linux 5.3 and later).
    Pidfd(Rc<OwnedFd>),
    /// Through SIGCHLD, where there are no pidfds.
    Sigchld(Rc<super::reaper::SigchldReaper>),
}

/// Watches a child's pidfd; reaps the child when it becomes readable.
struct PidfdWatch {
    child: Rc<Child>,
    fd: RawFd,
}

impl FileDescriptor for PidfdWatch {
    fn fileno(&self) -> RawFd {
        self.fd
    }

    fn connection_lost(&self, reason: Failure) {
        // The reactor shut down with the child still running: it is left to run, as
        // Twisted leaves it, and reaped by nobody until this process exits.
        tracing::debug!(target: LOG_TARGET, "stopped watching pid {}: {reason}", self.child.pid);
    }

    fn log_prefix(&self) -> String {
        format!("process {} (pid {})", self.child.program, self.child.pid)
    }
}

impl ReadDescriptor for PidfdWatch {
    fn do_read(&self) -> Result<(), Failure> {
        let Some(pidfd) = self.child.pidfd.borrow().clone() else {
            return Ok(());
        };
        let status = loop {
            match rustix::process::waitid(
                rustix::process::WaitId::PidFd(pidfd.as_fd()),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
            ) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other,
            }
        };
        let status = match status {
            Ok(None) => return Ok(()),
            Ok(Some(status)) => Some(status),
            Err(err) => {
                // Reaped by someone else (a `waitpid(-1)` elsewhere in the program).
                crate::log::warning!(target: LOG_TARGET, "cannot reap {} (pid {}): {err}; its exit status is unknown", self.child.program, self.child.pid);
                None
            }
        };
        self.child.reactor.remove_reader(self.fd);
        self.child.exited(status);
        Ok(())
    }
}
