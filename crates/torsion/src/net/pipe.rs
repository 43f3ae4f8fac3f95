//! The two ends of a pipe as the reactor drives them (Twisted's `process.ProcessReader`,
//! `process.ProcessWriter` and the descriptors under `StandardIO`): a [`PipeReader`] hands
//! what it reads to its owner; a [`PipeWriter`] buffers what is written to it and sends it
//! when the descriptor takes it, through the shared [`StreamCore`](super::stream), so flow
//! control, producers and closing follow the same rules as on a socket.
//!
//! The owner ([`PipeOwner`]: a child process's transport, or standard I/O) is told of data
//! and of each end's close, with the key it gave the end (the child's descriptor number
//! for a process). A regular file cannot be watched (epoll refuses it): a reader on one
//! reads a chunk per turn of the loop instead, as Twisted polls it.
//!
//! Invariant: the owner is only ever called from the loop (a readiness event, a flush, or
//! the [`call_soon`](crate::Reactor::call_soon) queue), never from inside a call the owner
//! made, and each end tells it of its close exactly once.

use std::cell::{Cell, RefCell};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::time::Duration;

use rustix::io::Errno;

use super::Producer;
use super::stream::{Drained, Registered, StreamCore};
use crate::defer::Failure;
use crate::error::{ConnectionDone, ConnectionLost};
use crate::reactor::{FileDescriptor, Flush, Reactor, ReadDescriptor, WriteDescriptor};
use crate::time::ReactorTime;

/// What a pipe end reports to.
pub(crate) trait PipeOwner {
    /// `data` was read from the end known as `key`.
    fn pipe_data(&self, key: i32, data: &[u8]);
    /// The end known as `key` is closed: its other side closed it, an error, or our own
    /// close; `reason` says which.
    fn pipe_closed(&self, key: i32, reason: Failure);
}

/// Makes `fd` non-blocking (its file description: use it on descriptors we own alone).
pub(crate) fn set_nonblocking(fd: impl AsFd) -> std::io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}

/// The read end of a pipe (or a pty's master, or standard input).
pub(crate) struct PipeReader {
    me: Weak<PipeReader>,
    fd: RefCell<Option<Rc<OwnedFd>>>,
    raw: RawFd,
    key: i32,
    reactor: Reactor,
    owner: RefCell<Option<Rc<dyn PipeOwner>>>,
    /// Reading is wanted: not paused, not closed.
    paused: Cell<bool>,
    closed: Cell<bool>,
    /// The descriptor cannot be watched (a regular file): read a chunk per turn instead.
    polled: Cell<bool>,
    /// A turn's read is scheduled (at most one at a time).
    poll_scheduled: Cell<bool>,
    /// `EIO` is the end of input (a pty's master once the child side is gone).
    eio_is_eof: bool,
    /// Read with `recv(MSG_DONTWAIT)`: a socket whose file description others share.
    dontwait: Cell<bool>,
}

impl PipeReader {
    /// A reader for `fd` (already non-blocking, or a regular file) reporting to `owner`.
    pub(crate) fn new(
        reactor: &Reactor,
        fd: Rc<OwnedFd>,
        key: i32,
        owner: Rc<dyn PipeOwner>,
        eio_is_eof: bool,
    ) -> Rc<PipeReader> {
        let raw = fd.as_raw_fd();
        Rc::new_cyclic(|me| PipeReader {
            me: me.clone(),
            fd: RefCell::new(Some(fd)),
            raw,
            key,
            reactor: reactor.clone(),
            owner: RefCell::new(Some(owner)),
            paused: Cell::new(false),
            closed: Cell::new(false),
            polled: Cell::new(false),
            poll_scheduled: Cell::new(false),
            eio_is_eof,
            dontwait: Cell::new(false),
        })
    }

    /// Reads with `recv(MSG_DONTWAIT)` (a shared socket left blocking).
    pub(crate) fn set_dontwait(&self) {
        self.dontwait.set(true);
    }

    /// Starts reading.
    pub(crate) fn start(&self) {
        self.watch();
    }

    fn watch(&self) {
        let Some(me) = self.me.upgrade() else { return };
        if self.closed.get() || self.paused.get() {
            return;
        }
        if self.polled.get() {
            self.poll_soon();
            return;
        }
        match self.reactor.add_reader(me) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(libc::EPERM) => {
                // A regular file or a directory: always "ready", so read it in turns.
                self.polled.set(true);
                self.poll_soon();
            }
            Err(err) => {
                crate::log::error!(target: "torsion::net", "cannot watch pipe {}: {err}", self.raw);
                self.close_soon(Failure::new(err));
            }
        }
    }

    fn poll_soon(&self) {
        if self.poll_scheduled.replace(true) {
            return;
        }
        let me = self.me.clone();
        self.reactor.call_later(Duration::ZERO, move || {
            let Some(me) = me.upgrade() else { return };
            me.poll_scheduled.set(false);
            if me.closed.get() || me.paused.get() {
                return;
            }
            match me.do_read() {
                Ok(()) => me.poll_soon(),
                Err(reason) => me.finish(reason),
            }
        });
    }

    /// Stops reading until [`resume`](PipeReader::resume).
    pub(crate) fn pause(&self) {
        if self.closed.get() || self.paused.replace(true) {
            return;
        }
        if !self.polled.get() {
            self.reactor.remove_reader(self.raw);
        }
    }

    /// Reads again after [`pause`](PipeReader::pause).
    pub(crate) fn resume(&self) {
        if self.closed.get() || !self.paused.replace(false) {
            return;
        }
        self.watch();
    }

    /// Closes the end at our side; the owner hears of it from the loop.
    pub(crate) fn close(&self) {
        self.close_soon(Failure::routine(ConnectionDone));
    }

    fn close_soon(&self, reason: Failure) {
        if self.closed.get() {
            return;
        }
        if !self.polled.get() {
            self.reactor.remove_reader(self.raw);
        }
        self.paused.set(true);
        let me = self.me.clone();
        self.reactor.call_soon(move || {
            if let Some(me) = me.upgrade() {
                me.finish(reason);
            }
        });
    }

    fn finish(&self, reason: Failure) {
        if self.closed.replace(true) {
            return;
        }
        if !self.polled.get() {
            self.reactor.remove_reader(self.raw);
        }
        self.fd.borrow_mut().take();
        let owner = self.owner.borrow_mut().take();
        if let Some(owner) = owner {
            owner.pipe_closed(self.key, reason);
        }
    }
}

impl FileDescriptor for PipeReader {
    fn fileno(&self) -> RawFd {
        self.raw
    }

    fn connection_lost(&self, reason: Failure) {
        self.finish(reason);
    }

    fn log_prefix(&self) -> String {
        format!("pipe {} (fd {})", self.key, self.raw)
    }
}

impl ReadDescriptor for PipeReader {
    fn do_read(&self) -> Result<(), Failure> {
        if self.closed.get() || self.paused.get() {
            return Ok(());
        }
        let Some(fd) = self.fd.borrow().clone() else {
            return Ok(());
        };
        let mut buffer = super::read_buffer::take();
        let read = loop {
            let read = if self.dontwait.get() {
                rustix::net::recv(&*fd, &mut buffer[..], rustix::net::RecvFlags::DONTWAIT)
                    .map(|(n, _)| n)
            } else {
                rustix::io::read(&*fd, &mut buffer[..])
            };
            match read {
                Err(Errno::INTR) => continue,
                other => break other,
            }
        };
        let result = match read {
            Ok(0) => Err(Failure::routine(ConnectionDone)),
            Ok(n) => {
                let owner = self.owner.borrow().clone();
                if let Some(owner) = owner {
                    owner.pipe_data(self.key, &buffer[..n]);
                }
                Ok(())
            }
            Err(Errno::AGAIN) => Ok(()),
            Err(Errno::IO) if self.eio_is_eof => Err(Failure::routine(ConnectionDone)),
            Err(err) => {
                tracing::debug!(target: "torsion::net", "read from pipe {} failed: {err}", self.raw);
                Err(Failure::routine(ConnectionLost))
            }
        };
        super::read_buffer::give_back(buffer);
        result
    }
}

/// The write end of a pipe (or a pty's master, or standard output).
pub(crate) struct PipeWriter {
    me: Weak<PipeWriter>,
    fd: RefCell<Option<Rc<OwnedFd>>>,
    raw: RawFd,
    key: i32,
    reactor: Reactor,
    owner: RefCell<Option<Rc<dyn PipeOwner>>>,
    state: RefCell<WriterState>,
    /// Watch the end for readability, which on a write end means the reader went away
    /// (Twisted's `ProcessWriter.doRead`); off where a reader shares the descriptor.
    watch_close: bool,
    /// Whether writes may be made with `send(MSG_DONTWAIT)` because the descriptor is a
    /// socket shared with others (standard output left blocking).
    dontwait: bool,
}

struct WriterState {
    core: StreamCore,
    writer_registered: bool,
    flush_scheduled: bool,
}

impl PipeWriter {
    /// A writer for `fd` reporting to `owner`.
    pub(crate) fn new(
        reactor: &Reactor,
        fd: Rc<OwnedFd>,
        key: i32,
        owner: Rc<dyn PipeOwner>,
        watch_close: bool,
        dontwait: bool,
    ) -> Rc<PipeWriter> {
        let raw = fd.as_raw_fd();
        Rc::new_cyclic(|me| PipeWriter {
            me: me.clone(),
            fd: RefCell::new(Some(fd)),
            raw,
            key,
            reactor: reactor.clone(),
            owner: RefCell::new(Some(owner)),
            state: RefCell::new(WriterState {
                core: StreamCore::new(
                    super::connection::HIGH_WATER_MARK,
                    super::connection::LOW_WATER_MARK,
                ),
                writer_registered: false,
                flush_scheduled: false,
            }),
            watch_close,
            dontwait,
        })
    }

    /// Starts watching for the reader going away (where that is on).
    pub(crate) fn start(&self) {
        if !self.watch_close {
            return;
        }
        if let Some(me) = self.me.upgrade()
            && let Err(err) = self.reactor.add_reader(me)
        {
            // A regular file or /dev/null as output: nothing will go away.
            tracing::debug!(target: "torsion::net", "not watching pipe {} for its close: {err}", self.raw);
        }
    }

    /// Buffers `data` for the pipe; dropped once the end is closed or closing.
    pub(crate) fn write(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let Some(written) = self.state.borrow_mut().core.write(data) else {
            return;
        };
        self.schedule_flush();
        if let Some(producer) = written.pause {
            producer.pause_producing();
        }
    }

    /// Bytes written and not yet taken by the pipe.
    pub(crate) fn buffered(&self) -> usize {
        self.state.borrow().core.buffered()
    }

    /// Closes the end once what is buffered has gone (`loseConnection`).
    pub(crate) fn close(&self) {
        if self.state.borrow_mut().core.lose_connection() {
            self.schedule_flush();
        }
    }

    /// Closes the end now, dropping what is buffered.
    pub(crate) fn abort(&self) {
        if self.state.borrow_mut().core.abort() {
            let me = self.me.clone();
            self.reactor.call_soon(move || {
                if let Some(me) = me.upgrade() {
                    me.finish(Failure::routine(crate::error::ConnectionAborted));
                }
            });
        }
    }

    /// Registers a producer for what is written to this end (`registerProducer`).
    pub(crate) fn register_producer(
        &self,
        producer: Rc<dyn Producer>,
        streaming: bool,
    ) -> Result<(), Failure> {
        let registered = self
            .state
            .borrow_mut()
            .core
            .register(producer.clone(), streaming)?;
        match registered {
            Registered::Stop => producer.stop_producing(),
            Registered::Push => {}
            Registered::PullFirst(number) => {
                let me = self.me.clone();
                self.reactor.call_soon(move || {
                    let due = me
                        .upgrade()
                        .and_then(|w| w.state.borrow_mut().core.first_resume(number));
                    if let Some(producer) = due {
                        producer.resume_producing();
                    }
                });
            }
        }
        Ok(())
    }

    /// Unregisters the producer (`unregisterProducer`).
    pub(crate) fn unregister_producer(&self) {
        if self.state.borrow_mut().core.unregister() {
            self.schedule_flush();
        }
    }

    fn schedule_flush(&self) {
        let mut st = self.state.borrow_mut();
        if st.flush_scheduled || st.core.is_lost() {
            return;
        }
        st.flush_scheduled = true;
        drop(st);
        if let Some(me) = self.me.upgrade() {
            self.reactor.schedule_flush(me);
        }
    }

    fn send_buffered(&self) {
        let result = {
            let mut st = self.state.borrow_mut();
            st.flush_scheduled = false;
            if st.core.is_lost() {
                return;
            }
            let Some(fd) = self.fd.borrow().clone() else {
                return;
            };
            let mut error = None;
            while st.core.buffered() > 0 {
                let sent = if self.dontwait {
                    rustix::net::send(
                        &*fd,
                        st.core.pending(),
                        rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL,
                    )
                } else {
                    rustix::io::write(&*fd, st.core.pending())
                };
                match sent {
                    Ok(n) => st.core.consume(n),
                    Err(Errno::INTR) => continue,
                    Err(Errno::AGAIN) => break,
                    Err(err) => {
                        error = Some(err);
                        break;
                    }
                }
            }
            match error {
                Some(err) => Err(err),
                None => Ok(st.core.buffered() == 0),
            }
        };
        let drained = match result {
            Ok(drained) => drained,
            Err(err) => {
                tracing::debug!(target: "torsion::net", "write to pipe {} failed: {err}", self.raw);
                self.finish(Failure::routine(ConnectionLost));
                return;
            }
        };
        if !drained {
            let (resume, _) = self.state.borrow_mut().core.progressed();
            let register = !std::mem::replace(&mut self.state.borrow_mut().writer_registered, true);
            if register
                && let Some(me) = self.me.upgrade()
                && let Err(err) = self.reactor.add_writer(me)
            {
                crate::log::error!(target: "torsion::net", "cannot watch pipe {} for writing: {err}", self.raw);
                self.finish(Failure::new(err));
                return;
            }
            if let Some(producer) = resume {
                producer.resume_producing();
            }
            return;
        }
        let (unregister, (next, _)) = {
            let mut st = self.state.borrow_mut();
            let unregister = std::mem::replace(&mut st.writer_registered, false);
            (unregister, st.core.drained())
        };
        if unregister {
            self.reactor.remove_writer(self.raw);
        }
        match next {
            Drained::Resume(producer) => producer.resume_producing(),
            Drained::Idle => {}
            Drained::Close | Drained::ShutWrite => self.finish(Failure::routine(ConnectionDone)),
        }
    }

    fn finish(&self, reason: Failure) {
        let producer = {
            let mut st = self.state.borrow_mut();
            let Some(producer) = st.core.lose() else {
                return;
            };
            st.flush_scheduled = false;
            st.writer_registered = false;
            producer
        };
        self.reactor.remove_writer(self.raw);
        if self.watch_close {
            self.reactor.remove_reader(self.raw);
        }
        self.fd.borrow_mut().take();
        if let Some(producer) = producer {
            producer.stop_producing();
        }
        let owner = self.owner.borrow_mut().take();
        if let Some(owner) = owner {
            owner.pipe_closed(self.key, reason);
        }
    }
}

impl Flush for PipeWriter {
    fn flush(&self) {
        self.send_buffered();
    }
}

impl FileDescriptor for PipeWriter {
    fn fileno(&self) -> RawFd {
        self.raw
    }

    fn connection_lost(&self, reason: Failure) {
        // Readiness on a write end that is watched for reading means its reader is gone.
        let reason = if reason.check::<ConnectionDone>() {
            Failure::routine(ConnectionLost)
        } else {
            reason
        };
        self.finish(reason);
    }

    fn log_prefix(&self) -> String {
        format!("pipe {} (fd {})", self.key, self.raw)
    }
}

impl ReadDescriptor for PipeWriter {
    fn do_read(&self) -> Result<(), Failure> {
        // Only watched for reading to learn that the reader closed its end.
        Err(Failure::routine(ConnectionLost))
    }
}

impl WriteDescriptor for PipeWriter {
    fn do_write(&self) -> Result<(), Failure> {
        self.send_buffered();
        Ok(())
    }
}
