//! Reaping children where there is no pidfd (Linux before 5.3, such as RHEL 8's 4.18): a
//! SIGCHLD handler writes to a pipe the reactor watches, and each wake-up asks each child
//! of this reactor, by pid, whether it has exited (Twisted's `reapAllProcesses`). That is
//! O(children) per SIGCHLD where the pidfd path is O(1), so it is only the fallback:
//! `spawn_process` takes it when `pidfd_open` is missing, or when `TORSION_REAPER=sigchld`
//! asks for it (to test it on a newer kernel). Only this reactor's children are waited
//! for, by pid, so children spawned by other code (`std::process`) are left to it.
//!
//! The handler is installed before the first child is spawned and removed once the last
//! one has been reaped, so a program that spawns nothing keeps SIGCHLD as it was.
//!
//! Invariant: a child is in the map from its spawn until it is reaped, and the handler is
//! installed the whole time one is; a SIGCHLD that arrives before a child is in the map
//! leaves a byte in the pipe, so the check that follows sees that child.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;

use rustix::process::{Pid, WaitId, WaitIdOptions};
use signal_hook_registry::SigId;

use super::child::Child;
use crate::defer::Failure;
use crate::reactor::{FileDescriptor, Reactor, ReadDescriptor};

const LOG_TARGET: &str = "torsion::process";

/// Whether to reap through SIGCHLD even though pidfds may work (`TORSION_REAPER=sigchld`).
pub(crate) fn forced() -> bool {
    std::env::var_os("TORSION_REAPER").is_some_and(|v| v == "sigchld")
}

thread_local! {
    /// The reaper of each reactor of this thread that has fallback children, by reactor id.
    static REAPERS: RefCell<HashMap<u64, Rc<SigchldReaper>>> = RefCell::new(HashMap::new());
}

/// One reactor's SIGCHLD watch and the children it waits for.
pub(crate) struct SigchldReaper {
    reactor: Reactor,
    read: OwnedFd,
    signal: Option<SigId>,
    children: RefCell<BTreeMap<i32, Rc<Child>>>,
}

impl SigchldReaper {
    /// The reaper of `reactor`, installed if it was not: call before spawning.
    pub(crate) fn for_reactor(reactor: &Reactor) -> std::io::Result<Rc<SigchldReaper>> {
        if let Some(reaper) = REAPERS.with(|r| r.borrow().get(&reactor.id()).cloned()) {
            return Ok(reaper);
        }
        let flags = rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK;
        let (read, write) = rustix::pipe::pipe_with(flags)?;
        // The handler owns the write end, so it stays open as long as the handler may run.
        let write = Arc::new(write);
        // SAFETY: the action is async-signal-safe: one write(2) of one byte to a pipe it
        // owns (non-blocking, so a full pipe only drops the byte), no allocation or lock.
        let signal = unsafe {
            signal_hook_registry::register(libc::SIGCHLD, move || {
                let _ = rustix::io::write(write.as_fd(), b"c");
            })
        }?;
        let reaper = Rc::new(SigchldReaper {
            reactor: reactor.clone(),
            read,
            signal: Some(signal),
            children: RefCell::new(BTreeMap::new()),
        });
        reactor.add_reader(reaper.clone())?;
        REAPERS.with(|r| r.borrow_mut().insert(reactor.id(), reaper.clone()));
        Ok(reaper)
    }

    /// Waits for `child` (spawned after [`for_reactor`](SigchldReaper::for_reactor)).
    pub(crate) fn watch(self: &Rc<Self>, pid: i32, child: Rc<Child>) {
        self.children.borrow_mut().insert(pid, child);
        // In case its SIGCHLD came and went while the child was being set up.
        let me = self.clone();
        self.reactor.call_soon(move || me.check());
    }

    /// Removes the handler again if no child is waited for (a spawn failed).
    pub(crate) fn release_if_idle(&self) {
        if self.children.borrow().is_empty() {
            self.uninstall();
        }
    }

    /// Reaps every child of this reactor that has exited.
    fn check(&self) {
        let pids: Vec<i32> = self.children.borrow().keys().copied().collect();
        for pid in pids {
            let Some(id) = Pid::from_raw(pid) else {
                continue;
            };
            let status = loop {
                match rustix::process::waitid(
                    WaitId::Pid(id),
                    WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
                ) {
                    Err(rustix::io::Errno::INTR) => continue,
                    other => break other,
                }
            };
            let status = match status {
                Ok(None) => continue,
                Ok(Some(status)) => Some(status),
                Err(err) => {
                    crate::log::warning!(target: LOG_TARGET, "cannot reap pid {pid}: {err}; its exit status is unknown");
                    None
                }
            };
            let child = self.children.borrow_mut().remove(&pid);
            if let Some(child) = child {
                child.exited(status);
            }
        }
        if self.children.borrow().is_empty() {
            self.uninstall();
        }
    }

    fn uninstall(&self) {
        self.reactor.remove_reader(self.read.as_raw_fd());
        REAPERS.with(|r| r.borrow_mut().remove(&self.reactor.id()));
    }
}

impl Drop for SigchldReaper {
    fn drop(&mut self) {
        if let Some(signal) = self.signal.take() {
            signal_hook_registry::unregister(signal);
        }
    }
}

impl FileDescriptor for SigchldReaper {
    fn fileno(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    fn connection_lost(&self, reason: Failure) {
        // The reactor shut down: its children are left running, as with pidfds.
        tracing::debug!(target: LOG_TARGET, "stopped watching for SIGCHLD: {reason}");
        REAPERS.with(|r| r.borrow_mut().remove(&self.reactor.id()));
    }

    fn log_prefix(&self) -> String {
        "SIGCHLD reaper".into()
    }
}

impl ReadDescriptor for SigchldReaper {
    fn do_read(&self) -> Result<(), Failure> {
        let mut drain = [0u8; 64];
        while let Ok(n) = rustix::io::read(&self.read, &mut drain) {
            if n < drain.len() {
                break;
            }
        }
        self.check();
        Ok(())
    }
}
