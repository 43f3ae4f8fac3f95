//! The io_uring backend's receive buffers (no Twisted counterpart; Twisted reads into a
//! fresh string per `doRead`): one pool per ring, shared by every stream socket the ring
//! receives for, so an idle connection holds no read buffer.
//!
//! The buffers are provided to the kernel as one buffer group (`IORING_OP_PROVIDE_BUFFERS`);
//! a multishot receive picks one per completion and names it in the completion's flags.
//! The pool starts with [`INITIAL_BUFFERS`] and grows by as many when the kernel runs out
//! (`ENOBUFS`), up to [`MAX_BUFFERS`].
//!
//! Invariants:
//! - A buffer is in exactly one place: **provided** (its slot is `Some` and the kernel may
//!   write into it at any time: Rust code never reads or writes it), or **taken** (its slot
//!   is `None` and the [`RingBuffer`] holding it is the only handle to it). A buffer moves
//!   from provided to taken only when a completion names it (the kernel has written it and
//!   let go), and back only through [`BufferPool::give_back`], which queues its provision.
//! - The memory of a provided buffer stays where it is: it is a `Box<[u8]>` that is never
//!   reallocated, and the pool is dropped only after the ring is done with it (see the
//!   backend's `Drop`).

use std::collections::VecDeque;
use std::ops::Deref;

use io_uring::{opcode, squeue};

/// Bytes per buffer: one completion delivers at most this much, as one `recv` does on the
/// other backends (Twisted's 64 KiB).
pub(crate) const BUFFER_SIZE: usize = crate::net::read_buffer::READ_BUFFER_SIZE;
/// Buffers provided when the first stream socket is registered.
const INITIAL_BUFFERS: usize = 64;
/// The most buffers one ring provides (64 MiB of 64 KiB buffers).
const MAX_BUFFERS: usize = 1024;
/// The buffer group the ring's multishot receives pick from.
pub(crate) const GROUP: u16 = 0;

/// A buffer the kernel filled, out of the pool until it is given back.
#[derive(Debug)]
pub(crate) struct RingBuffer {
    id: u16,
    bytes: Box<[u8]>,
    len: usize,
}

impl Deref for RingBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The ring's receive buffers (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    /// Indexed by buffer id: `Some` while provided, `None` while taken.
    slots: Vec<Option<Box<[u8]>>>,
    /// Provisions to submit with the next `io_uring_enter`.
    to_provide: VecDeque<u16>,
}

impl BufferPool {
    /// Whether the pool has been filled yet.
    pub(crate) fn is_started(&self) -> bool {
        !self.slots.is_empty()
    }

    /// Adds buffers (the first call, and when the kernel ran out): whether any were added.
    pub(crate) fn grow(&mut self) -> bool {
        let now = self.slots.len();
        let target = if now == 0 {
            INITIAL_BUFFERS
        } else {
            (now + INITIAL_BUFFERS).min(MAX_BUFFERS)
        };
        for id in now..target {
            self.slots
                .push(Some(vec![0u8; BUFFER_SIZE].into_boxed_slice()));
            self.to_provide.push_back(id as u16);
        }
        target > now
    }

    /// Takes out the buffer a completion named, holding its first `len` bytes; `None` for an
    /// id the pool did not provide (a kernel error, reported by the caller).
    pub(crate) fn take(&mut self, id: u16, len: usize) -> Option<RingBuffer> {
        let bytes = self.slots.get_mut(usize::from(id))?.take()?;
        let len = len.min(bytes.len());
        Some(RingBuffer { id, bytes, len })
    }

    /// Takes out the buffer a completion named and gives it back at once (a completion
    /// nobody waits for any more still used a buffer).
    pub(crate) fn recycle(&mut self, id: u16) {
        if let Some(buffer) = self.take(id, 0) {
            self.give_back(buffer);
        }
    }

    /// Puts a buffer back, to be provided again with the next submission.
    pub(crate) fn give_back(&mut self, buffer: RingBuffer) {
        if let Some(slot) = self.slots.get_mut(usize::from(buffer.id))
            && slot.is_none()
        {
            *slot = Some(buffer.bytes);
            self.to_provide.push_back(buffer.id);
        }
    }

    /// The next provision to submit, if any: its entry points at the buffer's memory, which
    /// stays put and untouched by Rust code until a completion names it again.
    pub(crate) fn next_provision(&mut self, user_data: u64) -> Option<squeue::Entry> {
        let id = self.to_provide.pop_front()?;
        let slot = self.slots.get_mut(usize::from(id))?.as_mut()?;
        let entry = opcode::ProvideBuffers::new(slot.as_mut_ptr(), slot.len() as i32, 1, GROUP, id)
            .build()
            .user_data(user_data)
            .flags(squeue::Flags::SKIP_SUCCESS);
        Some(entry)
    }
}
