//! A protocol on this process's standard input and output (Twisted's
//! `twisted.internet.stdio.StandardIO`): what arrives on stdin goes to
//! [`data_received`](crate::protocol::Protocol::data_received), what the protocol writes
//! goes to stdout, buffered and flow-controlled like a socket's writes, with half-close.
//!
//! **The descriptors' flags are left as they were.** Twisted sets `O_NONBLOCK` on
//! descriptors 0 and 1; the flag belongs to the open file description, which the shell and
//! every other process on the terminal share, so they start failing with `EAGAIN`
//! (Twisted's #3442; Rust's `println!` then panics). Here a pipe or terminal is opened
//! again through `/proc/self/fd`, which gives torsion a description of its own to make
//! non-blocking; a socket is read and written with `MSG_DONTWAIT`; a regular file (which
//! epoll refuses) or `/dev/null` is read a chunk per turn of the loop, as Twisted polls it.
//! Only where none of that is possible is `O_NONBLOCK` set on the shared description, and
//! then it is put back when the transport closes.
//!
//! End of input: a protocol that [`supports_half_close`](crate::protocol::Protocol::supports_half_close)
//! gets `read_connection_lost` and may go on writing; any other protocol's transport
//! closes once what it wrote has gone, with [`ConnectionDone`].
//!
//! Invariant: `connection_lost` comes exactly once, from the loop, after both ends are
//! closed, and the protocol is dropped right after it.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::rc::Rc;

use rustix::fs::{FileType, OFlags};

use crate::defer::{Deferred, Failure, Resolver};
use crate::endpoints::ListeningPortOps;
use crate::error::{ConnectionAborted, ConnectionDone};
use crate::net::pipe::{PipeOwner, PipeReader, PipeWriter};
use crate::net::{Address, Producer, Transport, TransportOps};
use crate::protocol::Protocol;
use crate::reactor::Reactor;

const LOG_TARGET: &str = "torsion::stdio";
const STDIN: i32 = 0;
const STDOUT: i32 = 1;

/// How torsion got a non-blocking view of one standard descriptor.
struct Opened {
    fd: OwnedFd,
    /// A socket: use `MSG_DONTWAIT`.
    socket: bool,
    /// A pipe: the only kind whose reader going away shows as readiness of a write end
    /// (a terminal's write end looks readable whenever input waits; poll calls a regular
    /// file always readable).
    fifo: bool,
    /// `O_NONBLOCK` was set on the shared description: these flags go back at the end.
    restore: Option<OFlags>,
}

/// Opens standard descriptor `fd` for torsion's own use, as the module doc says.
fn open_own(fd: RawFd, write: bool) -> std::io::Result<Opened> {
    // SAFETY: the standard descriptors stay open for the life of the process; `fd` is
    // only inspected and duplicated here.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let kind = FileType::from_raw_mode(rustix::fs::fstat(borrowed)?.st_mode);
    let fifo = kind == FileType::Fifo;
    let dup = || rustix::io::fcntl_dupfd_cloexec(borrowed, 3);
    match kind {
        FileType::RegularFile | FileType::Directory => Ok(Opened {
            fd: dup()?,
            socket: false,
            fifo,
            restore: None,
        }),
        FileType::Socket => Ok(Opened {
            fd: dup()?,
            socket: true,
            fifo,
            restore: None,
        }),
        _ => {
            let access = if write {
                OFlags::WRONLY
            } else {
                OFlags::RDONLY
            };
            let path = format!("/proc/self/fd/{fd}");
            match rustix::fs::open(
                path.as_str(),
                access | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
                rustix::fs::Mode::empty(),
            ) {
                Ok(own) => Ok(Opened {
                    fd: own,
                    socket: false,
                    fifo,
                    restore: None,
                }),
                Err(err) => {
                    tracing::debug!(target: LOG_TARGET, "cannot reopen {path} ({err}); setting O_NONBLOCK until the end");
                    let own = dup()?;
                    let flags = rustix::fs::fcntl_getfl(&own)?;
                    rustix::fs::fcntl_setfl(&own, flags | OFlags::NONBLOCK)?;
                    Ok(Opened {
                        fd: own,
                        socket: false,
                        fifo,
                        restore: Some(flags),
                    })
                }
            }
        }
    }
}

/// A protocol connected to standard input and output (Twisted's `StandardIO`). It is
/// also the [`ListeningPort`](crate::endpoints::ListeningPort) the `stdio:` endpoint hands
/// back: [`stop_listening`](ListeningPortOps::stop_listening) closes it.
///
/// # Examples
///
/// ```no_run
/// use torsion::net::Transport;
/// use torsion::prelude::*;
/// use torsion::stdio::StandardIo;
///
/// /// Echoes each line back, upper-cased.
/// #[derive(Default)]
/// struct Shout(Option<Transport>);
///
/// impl Protocol for Shout {
///     fn connection_made(&mut self, transport: Transport) {
///         self.0 = Some(transport);
///     }
///     fn data_received(&mut self, data: &[u8]) {
///         if let Some(t) = &self.0 {
///             t.write(&data.to_ascii_uppercase());
///         }
///     }
/// }
///
/// # fn main() -> Result<(), Failure> {
/// let reactor = Reactor::new()?;
/// StandardIo::new(&reactor, Shout::default())?;
/// reactor.run()
/// # }
/// ```
pub struct StandardIo {
    protocol: RefCell<Option<Box<dyn Protocol>>>,
    reader: RefCell<Option<Rc<PipeReader>>>,
    writer: RefCell<Option<Rc<PipeWriter>>>,
    /// Flags to put back on descriptors whose shared description we made non-blocking.
    restore: RefCell<Vec<(RawFd, OFlags)>>,
    disconnecting: Cell<bool>,
    write_shut: Cell<bool>,
    lost: Cell<bool>,
    aborting: Cell<bool>,
    closed: RefCell<Vec<Resolver<()>>>,
    /// The first reason an end was lost other than a clean close: what `connection_lost`
    /// reports.
    broken: RefCell<Option<Failure>>,
}

impl StandardIo {
    /// Connects `protocol` to descriptors 0 and 1 and calls its `connection_made`.
    ///
    /// # Errors
    ///
    /// A descriptor that is closed or cannot be opened again for torsion's use.
    pub fn new(reactor: &Reactor, protocol: impl Protocol) -> Result<Rc<StandardIo>, Failure> {
        StandardIo::with_descriptors(reactor, Box::new(protocol), STDIN, STDOUT)
    }

    /// As [`new`](StandardIo::new), on other descriptors (Twisted's `stdin=`, `stdout=`).
    ///
    /// # Errors
    ///
    /// As [`new`](StandardIo::new).
    pub fn with_descriptors(
        reactor: &Reactor,
        protocol: Box<dyn Protocol>,
        stdin: RawFd,
        stdout: RawFd,
    ) -> Result<Rc<StandardIo>, Failure> {
        if stdin < 0 || stdout < 0 {
            return Err(crate::error::InvalidArgument(format!(
                "standard I/O on descriptors {stdin} and {stdout}: descriptors are not negative"
            ))
            .into());
        }
        let input = open_own(stdin, false)?;
        let output = open_own(stdout, true)?;
        let io = Rc::new(StandardIo {
            protocol: RefCell::new(Some(protocol)),
            reader: RefCell::new(None),
            writer: RefCell::new(None),
            restore: RefCell::new(Vec::new()),
            disconnecting: Cell::new(false),
            write_shut: Cell::new(false),
            lost: Cell::new(false),
            aborting: Cell::new(false),
            closed: RefCell::new(Vec::new()),
            broken: RefCell::new(None),
        });
        for (fd, opened) in [(stdin, &input), (stdout, &output)] {
            if let Some(flags) = opened.restore {
                io.restore.borrow_mut().push((fd, flags));
            }
        }
        let owner: Rc<dyn PipeOwner> = io.clone();
        let (in_socket, out_socket, out_fifo) = (input.socket, output.socket, output.fifo);
        let reader = PipeReader::new(reactor, Rc::new(input.fd), STDIN, owner.clone(), false);
        if in_socket {
            reader.set_dontwait();
        }
        let writer = PipeWriter::new(
            reactor,
            Rc::new(output.fd),
            STDOUT,
            owner,
            out_fifo,
            out_socket,
        );
        *io.reader.borrow_mut() = Some(reader.clone());
        *io.writer.borrow_mut() = Some(writer.clone());
        reader.start();
        writer.start();
        let transport: Transport = io.clone();
        io.with_protocol(|p| p.connection_made(transport));
        Ok(io)
    }

    fn with_protocol(&self, f: impl FnOnce(&mut dyn Protocol)) {
        let Ok(mut slot) = self.protocol.try_borrow_mut() else {
            crate::log::error!(target: LOG_TARGET, "protocol re-entered; event dropped");
            return;
        };
        let Some(protocol) = slot.as_mut() else {
            return;
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut **protocol)));
        drop(slot);
        if let Err(payload) = outcome {
            let failure = Failure::from_panic(&*payload);
            crate::log::error!(target: LOG_TARGET, "the protocol on standard I/O panicked: {failure:#}");
            self.abort_connection();
        }
    }

    fn reader(&self) -> Option<Rc<PipeReader>> {
        self.reader.borrow().clone()
    }

    fn writer(&self) -> Option<Rc<PipeWriter>> {
        self.writer.borrow().clone()
    }

    /// Both ends are closed: tell the protocol, once.
    fn maybe_finish(&self, reason: Failure) {
        if self.lost.get() || self.reader.borrow().is_some() || self.writer.borrow().is_some() {
            return;
        }
        self.lost.set(true);
        // In reverse: where 0 and 1 share a description, the flags saved first (before
        // any change) are the ones put back last.
        let restore: Vec<_> = self.restore.borrow_mut().drain(..).rev().collect();
        for (fd, flags) in restore {
            // SAFETY: a standard descriptor, open for the life of the process.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            let _ = rustix::fs::fcntl_setfl(borrowed, flags);
        }
        let reason = if self.aborting.get() {
            ConnectionAborted.into()
        } else {
            self.broken.borrow_mut().take().unwrap_or(reason)
        };
        let protocol = self.protocol.borrow_mut().take();
        if let Some(mut protocol) = protocol {
            let r = reason.clone();
            if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                protocol.connection_lost(r)
            })) {
                crate::log::error!(target: LOG_TARGET, "connection_lost of the protocol on standard I/O panicked: {}", Failure::from_panic(&*payload));
            }
        }
        let closed: Vec<_> = self.closed.borrow_mut().drain(..).collect();
        for resolver in closed {
            resolver.callback(());
        }
    }
}

impl PipeOwner for StandardIo {
    fn pipe_data(&self, _key: i32, data: &[u8]) {
        self.with_protocol(|p| p.data_received(data));
    }

    fn pipe_closed(&self, key: i32, reason: Failure) {
        if !reason.check::<ConnectionDone>() && self.broken.borrow().is_none() {
            *self.broken.borrow_mut() = Some(reason.clone());
        }
        if key == STDIN {
            self.reader.borrow_mut().take();
            let writer_open = self.writer.borrow().is_some();
            if writer_open && !self.disconnecting.get() {
                let half_close = self
                    .protocol
                    .try_borrow()
                    .ok()
                    .and_then(|p| p.as_ref().map(|p| p.supports_half_close()))
                    .unwrap_or(false);
                if half_close && reason.check::<ConnectionDone>() {
                    self.with_protocol(|p| p.read_connection_lost());
                } else {
                    self.lose_connection();
                }
                return;
            }
            self.maybe_finish(reason);
        } else {
            self.writer.borrow_mut().take();
            let reader_open = self.reader.borrow().is_some();
            if reader_open && self.write_shut.get() && !self.disconnecting.get() {
                self.with_protocol(|p| p.write_connection_lost());
                return;
            }
            if let Some(reader) = self.reader() {
                reader.close();
            }
            self.maybe_finish(reason);
        }
    }
}

impl TransportOps for StandardIo {
    fn write(&self, data: &[u8]) {
        if self.write_shut.get() {
            return;
        }
        if let Some(writer) = self.writer() {
            writer.write(data);
        }
    }

    fn lose_connection(&self) {
        if self.lost.get() || self.disconnecting.replace(true) {
            return;
        }
        if let Some(reader) = self.reader() {
            reader.pause();
        }
        match self.writer() {
            Some(writer) => writer.close(),
            None => {
                if let Some(reader) = self.reader() {
                    reader.close();
                }
            }
        }
    }

    fn abort_connection(&self) {
        if self.lost.get() || self.aborting.replace(true) {
            return;
        }
        self.disconnecting.set(true);
        if let Some(reader) = self.reader() {
            reader.close();
        }
        if let Some(writer) = self.writer() {
            writer.abort();
        }
    }

    fn lose_write_connection(&self) {
        if self.write_shut.replace(true) {
            return;
        }
        if let Some(writer) = self.writer() {
            writer.close();
        }
    }

    fn peer(&self) -> Address {
        Address::Pipe
    }

    fn host(&self) -> Address {
        Address::Pipe
    }

    fn pause_producing(&self) {
        if let Some(reader) = self.reader() {
            reader.pause();
        }
    }

    fn resume_producing(&self) {
        if !self.disconnecting.get()
            && let Some(reader) = self.reader()
        {
            reader.resume();
        }
    }

    fn register_producer(
        &self,
        producer: Rc<dyn Producer>,
        streaming: bool,
    ) -> Result<(), Failure> {
        match self.writer() {
            Some(writer) => writer.register_producer(producer, streaming),
            None => {
                producer.stop_producing();
                Ok(())
            }
        }
    }

    fn unregister_producer(&self) {
        if let Some(writer) = self.writer() {
            writer.unregister_producer();
        }
    }

    fn buffered(&self) -> usize {
        self.writer().map_or(0, |w| w.buffered())
    }

    fn is_connected(&self) -> bool {
        !self.lost.get()
    }
}

impl ListeningPortOps for StandardIo {
    fn host(&self) -> Address {
        Address::Pipe
    }

    fn stop_listening(&self) -> Deferred<()> {
        if self.lost.get() {
            return Deferred::succeed(());
        }
        let (resolver, deferred) = Deferred::new();
        self.closed.borrow_mut().push(resolver);
        self.lose_connection();
        deferred
    }
}

impl Drop for StandardIo {
    fn drop(&mut self) {
        for (fd, flags) in self.restore.get_mut().drain(..).rev() {
            // SAFETY: a standard descriptor, open for the life of the process.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            let _ = rustix::fs::fcntl_setfl(borrowed.as_fd(), flags);
        }
    }
}

impl fmt::Debug for StandardIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StandardIo")
            .field("lost", &self.lost.get())
            .finish_non_exhaustive()
    }
}
