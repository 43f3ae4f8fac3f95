//! The one buffer the connections of a thread read into (Twisted reads into a fresh 64 KiB
//! string per `doRead`; torsion reuses one), so an idle connection holds no read buffer.
//!
//! Invariant: a reader takes the buffer out for one read and the delivery of what it read,
//! then gives it back; a reader running while it is out (a protocol's `data_received`
//! making another connection read) gets a fresh one, never a borrow of the shared one.

use std::cell::RefCell;

/// One `recv` reads at most this much (Twisted's 64 KiB).
pub(crate) const READ_BUFFER_SIZE: usize = 64 * 1024;

thread_local! {
    static SHARED: RefCell<Option<Box<[u8]>>> = const { RefCell::new(None) };
}

/// Takes the shared read buffer, or a fresh one if it is out already.
pub(crate) fn take() -> Box<[u8]> {
    SHARED
        .try_with(|b| b.borrow_mut().take())
        .ok()
        .flatten()
        .unwrap_or_else(|| vec![0u8; READ_BUFFER_SIZE].into_boxed_slice())
}

/// Gives the shared read buffer back.
pub(crate) fn give_back(buffer: Box<[u8]>) {
    let _ = SHARED.try_with(|b| *b.borrow_mut() = Some(buffer));
}
