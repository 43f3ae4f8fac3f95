//! The epoll(7) backend, level-triggered (Twisted's `twisted.internet.epollreactor`).
//!
//! Interest maps to `EPOLLIN` / `EPOLLOUT` only; the kernel adds `EPOLLHUP` and `EPOLLERR` to
//! every registration, so they are reported whatever the interest. No `EPOLLET`, no
//! `EPOLLONESHOT`, no `EPOLLRDHUP`: a ready descriptor is reported by every wait until it is
//! drained, as Twisted expects.
//!
//! The event buffer grows with the number of registered descriptors (from
//! [`MIN_EVENTS`] up to [`MAX_EVENTS`] per wait). With more ready descriptors than that,
//! epoll hands out the rest on the next waits, round-robin, and being level-triggered loses
//! nothing.
//!
//! Invariant: the registration count only sizes the buffer; epoll itself is the record of
//! what is registered (a descriptor closed without deregistering leaves the count high,
//! which costs a little memory and nothing else).

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use rustix::buffer::spare_capacity;
use rustix::event::{Timespec, epoll};
use rustix::io::Errno;

use super::{Event, Interest, timeout_millis};

/// The fewest events one wait can return.
const MIN_EVENTS: usize = 64;
/// The most events one wait can return, however many descriptors are registered.
const MAX_EVENTS: usize = 4096;

/// A level-triggered epoll instance and its event buffer.
pub(crate) struct EpollPoller {
    /// The epoll descriptor (close-on-exec).
    epoll: OwnedFd,
    /// Where `epoll_wait` writes; emptied after each wait, its capacity kept.
    buffer: Vec<epoll::Event>,
    /// How many descriptors are registered, to size `buffer`.
    registered: usize,
}

impl fmt::Debug for EpollPoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpollPoller")
            .field("epoll", &self.epoll)
            .field("registered", &self.registered)
            .finish_non_exhaustive()
    }
}

impl EpollPoller {
    /// Creates an epoll instance.
    pub(crate) fn new() -> io::Result<EpollPoller> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        Ok(EpollPoller {
            epoll,
            buffer: Vec::with_capacity(MIN_EVENTS),
            registered: 0,
        })
    }

    /// `EPOLL_CTL_ADD`; `EEXIST` if `fd` is already registered.
    pub(crate) fn register(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)?;
        self.registered += 1;
        Ok(())
    }

    /// `EPOLL_CTL_MOD`; `ENOENT` if `fd` is not registered.
    pub(crate) fn reregister(
        &mut self,
        fd: RawFd,
        token: u64,
        interest: Interest,
    ) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    /// `EPOLL_CTL_DEL`; `ENOENT` if `fd` is not registered.
    pub(crate) fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, Interest::NONE)?;
        self.registered = self.registered.saturating_sub(1);
        Ok(())
    }

    /// One `epoll_ctl` on a descriptor *number*. The reactor registers numbers it does not
    /// own (a [`FileDescriptor`](crate::reactor::FileDescriptor)'s `fileno`), so it never
    /// claims to borrow them: epoll only records the number.
    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: flags(interest).bits(),
            u64: token,
        };
        // SAFETY: `epoll_ctl` reads `event`, a live local, and takes `fd` as a plain number
        // that the kernel checks: a closed or reused number fails with `EBADF` or watches
        // another file (a logic error, ruled out by `fileno`'s contract), and never touches
        // this process's memory.
        let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `epoll_wait`: clears `events`, then fills it with what the wait reports.
    pub(crate) fn wait(
        &mut self,
        events: &mut Vec<Event>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        events.clear();
        let millis = timeout_millis(timeout);
        // Whole milliseconds, so rustix's own conversion back to milliseconds is exact.
        let timespec = (millis >= 0).then(|| Timespec {
            tv_sec: (millis / 1000).into(),
            tv_nsec: ((millis % 1000) * 1_000_000).into(),
        });

        self.buffer.clear();
        let capacity = self.registered.clamp(MIN_EVENTS, MAX_EVENTS);
        if self.buffer.capacity() < capacity {
            self.buffer.reserve_exact(capacity);
        }
        match epoll::wait(
            &self.epoll,
            spare_capacity(&mut self.buffer),
            timespec.as_ref(),
        ) {
            Ok(_) => {}
            Err(Errno::INTR) => return Ok(()),
            Err(err) => return Err(err.into()),
        }

        events.reserve(self.buffer.len());
        for ready in self.buffer.drain(..) {
            // `epoll::Event` is packed on x86-64: copy the fields out, never borrow them.
            let flags = ready.flags;
            let token = ready.data.u64();
            events.push(Event {
                token,
                readable: flags.contains(epoll::EventFlags::IN),
                writable: flags.contains(epoll::EventFlags::OUT),
                hangup: flags.contains(epoll::EventFlags::HUP),
                error: flags.contains(epoll::EventFlags::ERR),
            });
        }
        Ok(())
    }
}

/// The epoll flags for an interest: `EPOLLIN` and/or `EPOLLOUT`, level-triggered.
fn flags(interest: Interest) -> epoll::EventFlags {
    let mut flags = epoll::EventFlags::empty();
    if interest.readable {
        flags |= epoll::EventFlags::IN;
    }
    if interest.writable {
        flags |= epoll::EventFlags::OUT;
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn interest_maps_to_level_triggered_flags() {
        assert_eq!(flags(Interest::NONE), epoll::EventFlags::empty());
        assert_eq!(flags(Interest::READABLE), epoll::EventFlags::IN);
        assert_eq!(flags(Interest::WRITABLE), epoll::EventFlags::OUT);
        assert_eq!(
            flags(Interest::BOTH),
            epoll::EventFlags::IN | epoll::EventFlags::OUT
        );
    }

    #[test]
    fn buffer_grows_with_registrations_within_bounds() {
        let mut poller = EpollPoller::new().unwrap();
        let mut events = Vec::new();
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(poller.buffer.capacity() >= MIN_EVENTS);

        let fds: Vec<OwnedFd> = (0..200)
            .map(|_| {
                rustix::event::eventfd(1, rustix::event::EventfdFlags::CLOEXEC).expect("eventfd")
            })
            .collect();
        for (token, fd) in (0u64..).zip(&fds) {
            poller
                .register(fd.as_raw_fd(), token, Interest::READABLE)
                .unwrap();
        }
        assert_eq!(poller.registered, 200);
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(events.len(), 200, "all ready in a single wait");
        assert!(poller.buffer.capacity() >= 200);
        assert!(poller.buffer.is_empty());

        for fd in &fds[..150] {
            poller.deregister(fd.as_raw_fd()).unwrap();
        }
        assert_eq!(poller.registered, 50);
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(events.len(), 50);
    }

    #[test]
    fn failed_registration_is_not_counted() {
        let mut poller = EpollPoller::new().unwrap();
        let (r, _w) = rustix::pipe::pipe().unwrap();
        poller
            .register(r.as_raw_fd(), 1, Interest::READABLE)
            .unwrap();
        assert!(
            poller
                .register(r.as_raw_fd(), 1, Interest::READABLE)
                .is_err()
        );
        assert_eq!(poller.registered, 1);
        poller.deregister(r.as_raw_fd()).unwrap();
        assert!(poller.deregister(r.as_raw_fd()).is_err());
        assert_eq!(poller.registered, 0);
    }

    #[test]
    fn regular_files_are_refused() {
        // epoll cannot watch regular files (Twisted's epollreactor polls them separately).
        let mut poller = EpollPoller::new().unwrap();
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let err = poller
            .register(file.as_raw_fd(), 1, Interest::READABLE)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    }
}
