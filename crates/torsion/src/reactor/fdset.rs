//! The reactor's descriptor set (Twisted's `IReactorFDSet`): `add_reader`, `add_writer`,
//! their removal, and the dispatch of one readiness event to the descriptors it concerns.
//!
//! Invariant: a descriptor's number is registered once with the backend under a token that
//! carries a generation, so an event for a slot reused within one batch is ignored; no
//! borrow of the registry is held while `do_read`, `do_write` or `connection_lost` runs.

use std::os::fd::RawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use super::backend::{Event, Interest, Received, RingBuffer, RingRole, Taken};
use super::descriptors::Registration;
use super::{FileDescriptor, Reactor, ReadDescriptor, WriteDescriptor};
use crate::defer::Failure;
use crate::error::{ConnectionDone, ConnectionLost};

impl Reactor {
    pub(super) fn dispatch(&self, event: Event) {
        let key = (event.token & 0xffff_ffff) as usize;
        let generation = (event.token >> 32) as u32;
        let (reader, writer) = {
            let descriptors = self.inner.descriptors.borrow();
            match descriptors.get(key) {
                Some(r) if r.generation == generation => (r.reader.clone(), r.writer.clone()),
                _ => return,
            }
        };
        let mut why: Option<Failure> = None;
        if (event.hangup || event.error) && !event.readable {
            why = Some(if reader.is_some() {
                ConnectionDone.into()
            } else {
                ConnectionLost.into()
            });
        } else {
            if event.readable
                && let Some(reader) = &reader
            {
                why = guarded(|| reader.do_read()).err();
            }
            if why.is_none()
                && event.writable
                && let Some(writer) = &writer
                && self.still_writer(key, generation)
            {
                why = guarded(|| writer.do_write()).err();
            }
        }
        if let Some(reason) = why {
            let fd = match (&reader, &writer) {
                (Some(r), _) => r.fileno(),
                (None, Some(w)) => w.fileno(),
                (None, None) => return,
            };
            self.remove_fd(fd);
            let target: Option<Rc<dyn FileDescriptor>> = match (reader, writer) {
                (Some(r), _) => Some(r),
                (None, Some(w)) => Some(w),
                (None, None) => None,
            };
            if let Some(target) = target {
                let lost = catch_unwind(AssertUnwindSafe(|| target.connection_lost(reason)));
                if let Err(payload) = lost {
                    crate::log::error!(
                        target: "torsion::reactor",
                        "connection_lost of {} panicked: {}",
                        target.log_prefix(),
                        Failure::from_panic(&*payload)
                    );
                }
            }
        }
    }

    pub(super) fn still_writer(&self, key: usize, generation: u32) -> bool {
        self.inner
            .descriptors
            .borrow()
            .get(key)
            .is_some_and(|r| r.generation == generation && r.writer.is_some())
    }

    /// Watches `reader` for readability (Twisted's `addReader`). Adding the same descriptor
    /// again replaces it.
    ///
    /// # Errors
    ///
    /// The backend refused the descriptor (for example epoll and a regular file: `EPERM`).
    #[track_caller]
    pub fn add_reader(&self, reader: Rc<dyn ReadDescriptor>) -> std::io::Result<()> {
        let fd = reader.fileno();
        self.update_fd(fd, |r| r.reader = Some(reader))
    }

    /// Watches `writer` for writability (Twisted's `addWriter`).
    ///
    /// # Errors
    ///
    /// As [`add_reader`](Reactor::add_reader).
    #[track_caller]
    pub fn add_writer(&self, writer: Rc<dyn WriteDescriptor>) -> std::io::Result<()> {
        let fd = writer.fileno();
        self.update_fd(fd, |r| r.writer = Some(writer))
    }

    /// [`add_reader`](Reactor::add_reader) for a connection's stream socket, which nothing
    /// but `reader` reads: on io_uring its input is received on the ring, and `do_read`
    /// takes it with [`take_received`](Reactor::take_received) rather than calling `recv`.
    #[track_caller]
    pub(crate) fn add_stream_reader(&self, reader: Rc<dyn ReadDescriptor>) -> std::io::Result<()> {
        let fd = reader.fileno();
        self.update_fd(fd, |r| {
            r.reader = Some(reader);
            r.ring = Some(RingRole::Connection);
        })
    }

    /// [`add_reader`](Reactor::add_reader) for a listening socket that only `port`
    /// accepts on: on io_uring it accepts on the ring (a multishot accept), and its
    /// `do_read` takes the connections with [`take_received`](Reactor::take_received).
    #[track_caller]
    pub(crate) fn add_listener(&self, port: Rc<dyn ReadDescriptor>) -> std::io::Result<()> {
        let fd = port.fileno();
        self.update_fd(fd, |r| {
            r.reader = Some(port);
            r.ring = Some(RingRole::Listener);
        })
    }

    /// [`add_writer`](Reactor::add_writer) for a connection's stream socket (see
    /// [`add_stream_reader`](Reactor::add_stream_reader)).
    #[track_caller]
    pub(crate) fn add_stream_writer(&self, writer: Rc<dyn WriteDescriptor>) -> std::io::Result<()> {
        let fd = writer.fileno();
        self.update_fd(fd, |r| {
            r.writer = Some(writer);
            r.ring = Some(RingRole::Connection);
        })
    }

    /// Stops watching a stream socket added with
    /// [`add_stream_reader`](Reactor::add_stream_reader): what it received and did not take
    /// is dropped. (Removing its reader and writer alone keeps it registered, wanting
    /// nothing, so that what the ring received for it stays queued.)
    pub(crate) fn remove_stream(&self, fd: RawFd) {
        self.remove_fd(fd);
    }

    /// What the stream socket `fd` received on the ring, for its `do_read`:
    /// [`Taken::NotOnRing`] when it is to `recv` itself.
    pub(crate) fn take_received(&self, fd: RawFd) -> Taken {
        self.inner.poller.borrow_mut().take_received(fd)
    }

    /// Sends on the ring for the stream socket `fd` what `fill` writes into the send's
    /// buffer: `Ok(false)` when the transport is to send itself (not on io_uring). The
    /// send's end is a writable event, then [`take_sent`](Reactor::take_sent).
    pub(crate) fn ring_send(
        &self,
        fd: RawFd,
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> std::io::Result<bool> {
        self.inner.poller.borrow_mut().send(fd, fill)
    }

    /// How the stream socket `fd`'s last send on the ring ended, once it has.
    pub(crate) fn take_sent(&self, fd: RawFd) -> Option<std::io::Result<usize>> {
        self.inner.poller.borrow_mut().take_sent(fd)
    }

    /// Whether `fd` is a stream socket on the ring (io_uring), which sends and receives
    /// through it.
    pub(crate) fn on_ring(&self, fd: RawFd) -> bool {
        self.inner.poller.borrow().on_ring(fd)
    }

    /// Whether the stream socket `fd` has a send on the ring not ended, or not taken.
    pub(crate) fn ring_sending(&self, fd: RawFd) -> bool {
        self.inner.poller.borrow().sending(fd)
    }

    /// Puts back what [`take_received`](Reactor::take_received) gave, to be taken first.
    pub(crate) fn untake(&self, fd: RawFd, item: Received) {
        self.inner.poller.borrow_mut().untake(fd, item);
    }

    /// Gives back a receive buffer [`take_received`](Reactor::take_received) handed out.
    pub(crate) fn give_back(&self, buffer: RingBuffer) {
        self.inner.poller.borrow_mut().give_back(buffer);
    }

    /// Stops watching `fd` for readability (Twisted's `removeReader`).
    pub fn remove_reader(&self, fd: RawFd) {
        if let Err(err) = self.update_fd_existing(fd, |r| r.reader = None) {
            tracing::debug!(target: "torsion::reactor", "remove_reader({fd}): {err}");
        }
    }

    /// Stops watching `fd` for writability (Twisted's `removeWriter`).
    pub fn remove_writer(&self, fd: RawFd) {
        if let Err(err) = self.update_fd_existing(fd, |r| r.writer = None) {
            tracing::debug!(target: "torsion::reactor", "remove_writer({fd}): {err}");
        }
    }

    /// Stops watching every descriptor and returns them (Twisted's `removeAll`).
    pub fn remove_all(&self) -> Vec<Rc<dyn FileDescriptor>> {
        let fds: Vec<RawFd> = self.inner.by_fd.borrow().keys().copied().collect();
        let mut removed = Vec::new();
        for fd in fds {
            if let Some(reg) = self.remove_fd(fd) {
                match (reg.reader, reg.writer) {
                    (Some(r), _) => removed.push(r as Rc<dyn FileDescriptor>),
                    (None, Some(w)) => removed.push(w as Rc<dyn FileDescriptor>),
                    (None, None) => {}
                }
            }
        }
        removed
    }

    /// The descriptors being read from (Twisted's `getReaders`).
    pub fn readers(&self) -> Vec<RawFd> {
        self.inner
            .descriptors
            .borrow()
            .iter()
            .filter(|(_, r)| r.reader.is_some())
            .map(|(_, r)| r.fd)
            .collect()
    }

    /// The descriptors waiting to write (Twisted's `getWriters`).
    pub fn writers(&self) -> Vec<RawFd> {
        self.inner
            .descriptors
            .borrow()
            .iter()
            .filter(|(_, r)| r.writer.is_some())
            .map(|(_, r)| r.fd)
            .collect()
    }

    pub(super) fn update_fd(
        &self,
        fd: RawFd,
        change: impl FnOnce(&mut Registration),
    ) -> std::io::Result<()> {
        let existing = self.inner.by_fd.borrow().get(&fd).copied();
        match existing {
            Some(_) => self.update_fd_existing(fd, change),
            None => {
                let generation = self.next_generation();
                let mut reg = Registration {
                    fd,
                    generation,
                    reader: None,
                    writer: None,
                    ring: None,
                    added_at: std::panic::Location::caller(),
                };
                change(&mut reg);
                let interest = interest_of(&reg);
                let key = self.inner.descriptors.borrow().vacant_key();
                let mut poller = self.inner.poller.borrow_mut();
                if let Some(role) = reg.ring {
                    poller.register_stream(fd, token(key, generation), interest, role)?;
                } else {
                    poller.register(fd, token(key, generation), interest)?;
                }
                drop(poller);
                self.inner.descriptors.borrow_mut().insert(reg);
                self.inner.by_fd.borrow_mut().insert(fd, key);
                Ok(())
            }
        }
    }

    pub(super) fn update_fd_existing(
        &self,
        fd: RawFd,
        change: impl FnOnce(&mut Registration),
    ) -> std::io::Result<()> {
        let Some(key) = self.inner.by_fd.borrow().get(&fd).copied() else {
            return Ok(());
        };
        let (interest, generation, ring, old) = {
            let mut descriptors = self.inner.descriptors.borrow_mut();
            let Some(reg) = descriptors.get_mut(key) else {
                return Ok(());
            };
            let before = (reg.reader.clone(), reg.writer.clone());
            change(reg);
            (interest_of(reg), reg.generation, reg.ring, before)
        };
        if interest.is_none() && !(ring.is_some() && self.inner.poller.borrow().on_ring(fd)) {
            drop(old);
            self.remove_fd(fd);
            return Ok(());
        }
        let mut poller = self.inner.poller.borrow_mut();
        let mut result = poller.reregister(fd, token(key, generation), interest);
        if matches!(&result, Err(e) if e.raw_os_error() == Some(libc::ENOENT)) {
            // The descriptor number was closed and reused without being removed first
            // (epoll forgot it): register the new one.
            result = if let Some(role) = ring {
                poller.register_stream(fd, token(key, generation), interest, role)
            } else {
                poller.register(fd, token(key, generation), interest)
            };
        }
        drop(poller);
        drop(old);
        result
    }

    pub(super) fn remove_fd(&self, fd: RawFd) -> Option<Registration> {
        let key = self.inner.by_fd.borrow_mut().remove(&fd)?;
        let reg = self.inner.descriptors.borrow_mut().try_remove(key)?;
        if let Err(err) = self.inner.poller.borrow_mut().deregister(fd) {
            tracing::debug!(target: "torsion::reactor", "deregistering fd {fd}: {err}");
        }
        Some(reg)
    }

    pub(super) fn next_generation(&self) -> u32 {
        let g = self.inner.generation.get().wrapping_add(1).max(1);
        self.inner.generation.set(g);
        g
    }

    /// At shutdown: every descriptor is removed and told `ConnectionLost` (Twisted's
    /// `disconnectAll`).
    pub(super) fn disconnect_all(&self) {
        for descriptor in self.remove_all() {
            let lost = catch_unwind(AssertUnwindSafe(|| {
                descriptor.connection_lost(ConnectionLost.into())
            }));
            if let Err(payload) = lost {
                crate::log::error!(
                    target: "torsion::reactor",
                    "connection_lost of {} panicked: {}",
                    descriptor.log_prefix(),
                    Failure::from_panic(&*payload)
                );
            }
        }
    }
}

fn guarded(f: impl FnOnce() -> Result<(), Failure>) -> Result<(), Failure> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(Failure::from_panic(&*payload)),
    }
}

fn interest_of(reg: &Registration) -> Interest {
    Interest {
        readable: reg.reader.is_some(),
        writable: reg.writer.is_some(),
    }
}

fn token(key: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | key as u64
}
