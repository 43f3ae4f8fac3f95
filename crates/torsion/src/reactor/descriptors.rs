//! Raw descriptors watched by the reactor (Twisted's `IReactorFDSet` with
//! `IReadDescriptor` and `IWriteDescriptor`): anything with a file descriptor and
//! `do_read` / `do_write` methods, as the tutorials' `PoetrySocket` is.
//!
//! Invariant: the registry's borrow is released before a descriptor's method runs; a
//! descriptor may add or remove readers and writers (itself included) from inside
//! `do_read` / `do_write`.

use std::os::fd::RawFd;
use std::rc::Rc;

use crate::defer::Failure;

/// A descriptor the reactor can watch (Twisted's `IFileDescriptor`).
pub trait FileDescriptor {
    /// The descriptor number (Twisted's `fileno`). It must stay the same, and open, while
    /// registered: the reactor hands the backend the number alone (it never claims to own
    /// or borrow it), so a number closed or reused while registered is not unsafe, but its
    /// events go astray or the backend reports an error.
    fn fileno(&self) -> RawFd;

    /// The descriptor was disconnected: `do_read` or `do_write` returned an error, the
    /// descriptor hung up, or the reactor shut down. It has been removed from the reactor
    /// already; the implementation closes it (Twisted's `connectionLost`).
    fn connection_lost(&self, reason: Failure);

    /// A prefix for log lines about this descriptor (Twisted's `logPrefix`).
    fn log_prefix(&self) -> String {
        format!("fd {}", self.fileno())
    }
}

/// A descriptor with data to read (Twisted's `IReadDescriptor`).
pub trait ReadDescriptor: FileDescriptor {
    /// Reads what is available (Twisted's `doRead`). `Err(reason)` disconnects the
    /// descriptor: it is removed from the reactor and
    /// [`connection_lost`](FileDescriptor::connection_lost) gets `reason` (use
    /// [`ConnectionDone`](crate::error::ConnectionDone) for a clean end of input).
    fn do_read(&self) -> Result<(), Failure>;
}

/// A descriptor waiting to write (Twisted's `IWriteDescriptor`).
pub trait WriteDescriptor: FileDescriptor {
    /// Writes what it can (Twisted's `doWrite`); `Err(reason)` disconnects as for
    /// [`ReadDescriptor::do_read`].
    fn do_write(&self) -> Result<(), Failure>;
}

/// One registered descriptor number.
pub(crate) struct Registration {
    pub(crate) fd: RawFd,
    pub(crate) generation: u32,
    /// A connection's stream socket, which only its transport reads and writes, or a
    /// listening socket only its port accepts on: on io_uring its input is received on the
    /// ring (`add_stream_reader`, `add_listener`).
    pub(crate) ring: Option<super::backend::RingRole>,
    pub(crate) reader: Option<Rc<dyn ReadDescriptor>>,
    pub(crate) writer: Option<Rc<dyn WriteDescriptor>>,
    /// Where the descriptor was first added, for dirty-reactor reports.
    pub(crate) added_at: &'static std::panic::Location<'static>,
}
