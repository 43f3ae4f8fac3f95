//! The io_uring backend (no Twisted counterpart: Twisted has no io_uring reactor), here a
//! level-triggered readiness poller on an io_uring instance.
//!
//! Every registered descriptor has at most one single-shot `IORING_OP_POLL_ADD` armed in the
//! ring. Its completion is the readiness event; the descriptor is armed again at the next
//! wait, and since arming checks readiness at once, a descriptor that is still ready
//! completes again straight away: level-triggered, as the other backends are. All the arms
//! of one loop iteration and the wait itself go to the kernel in **one `io_uring_enter`**
//! (epoll needs no call to re-arm, so the count of system calls per event is the same; what
//! this backend adds is the ring the completion-based transports are to use). The wait's
//! timeout rides on the same call (`IORING_ENTER_EXT_ARG`), and the reactor's waker is an
//! eventfd polled like any descriptor.
//!
//! Where the kernel or a seccomp profile (Docker's and containerd's defaults) refuses
//! io_uring, [`UringPoller::new`] fails with [`UringUnavailable`]'s message; the reactor
//! builder's `auto` choice then falls back to epoll.
//!
//! Invariants:
//! - An arm's `user_data` is the descriptor number in the high half and a ring-wide serial
//!   in the low half; only the completion whose `user_data` equals the entry's `armed`
//!   counts. A completion for a removed or replaced arm is dropped, so a descriptor number
//!   reused after deregistering never sees its predecessor's events.
//! - `deregister` removes the armed poll from the ring before it returns (one
//!   `io_uring_enter`): an armed poll holds a reference to the file, and a socket closed
//!   right after must really close (send its FIN) then, not at the next wait.
//! - Regular files and directories are refused with `EPERM`, as epoll refuses them, so the
//!   callers' fallbacks for them work alike on both.

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, squeue, types};

use super::{Event, Interest, timeout_millis};

/// Submission queue slots; the completion queue gets twice as many, and the kernel keeps
/// any overflow (`IORING_FEAT_NODROP`), so this only bounds a batch between two enters.
const RING_ENTRIES: u32 = 256;

/// The `user_data` of removal requests, whose completions are not events. No descriptor
/// number has all its bits set in the high half (descriptors are non-negative `i32`s).
const REMOVAL: u64 = u64::MAX;

/// Why io_uring cannot be used here, as a message naming the likely cause.
pub(crate) struct UringUnavailable;

impl UringUnavailable {
    /// The error for a failed `io_uring_setup`, or for a kernel lacking a needed feature.
    fn error(cause: impl fmt::Display) -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "io_uring is not available: {cause} (the kernel may be older than 5.11, \
                 io_uring may be disabled by the kernel.io_uring_disabled sysctl, or a seccomp \
                 profile such as Docker's default may refuse io_uring_setup)"
            ),
        )
    }
}

/// One registered descriptor.
#[derive(Debug, Clone, Copy)]
struct Entry {
    token: u64,
    interest: Interest,
    /// The `user_data` of the poll armed for it, if one is.
    armed: Option<u64>,
    /// Its last single-shot poll completed with nothing asked for (see [`UringPoller::reap`]):
    /// it is armed multishot until something asked for is reported.
    quiet: bool,
}

/// An io_uring instance used as a readiness poller.
pub(crate) struct UringPoller {
    ring: IoUring,
    /// Registered descriptors, indexed by number (descriptor numbers are small and dense).
    entries: Vec<Option<Entry>>,
    /// How many entries are `Some`.
    registered: usize,
    /// Descriptors to arm at the next wait (duplicates and stale numbers are skipped then).
    to_arm: Vec<RawFd>,
    /// The low half of the next arm's `user_data`.
    serial: u32,
}

impl fmt::Debug for UringPoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringPoller")
            .field("registered", &self.registered)
            .field("to_arm", &self.to_arm.len())
            .finish_non_exhaustive()
    }
}

impl UringPoller {
    /// Creates a ring, checking the features this backend relies on.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`] with a message naming the likely cause when
    /// `io_uring_setup` is refused (`ENOSYS`, `EPERM`) or the kernel lacks
    /// `IORING_FEAT_EXT_ARG` (5.11) or `IORING_FEAT_NODROP` (5.5); other creation errors
    /// (`EMFILE`, `ENOMEM`) as they are.
    pub(crate) fn new() -> io::Result<UringPoller> {
        let ring =
            IoUring::builder()
                .build(RING_ENTRIES)
                .map_err(|err| match err.raw_os_error() {
                    Some(libc::ENOSYS | libc::EPERM | libc::EACCES | libc::EINVAL) => {
                        UringUnavailable::error(err)
                    }
                    _ => err,
                })?;
        let params = ring.params();
        if !params.is_feature_ext_arg() {
            return Err(UringUnavailable::error("no IORING_FEAT_EXT_ARG"));
        }
        if !params.is_feature_nodrop() {
            return Err(UringUnavailable::error("no IORING_FEAT_NODROP"));
        }
        Ok(UringPoller {
            ring,
            entries: Vec::new(),
            registered: 0,
            to_arm: Vec::new(),
            serial: 0,
        })
    }

    /// Starts watching `fd`; `EEXIST` if it is registered, `EPERM` for a regular file or a
    /// directory (as epoll), `EBADF` if it is not open.
    pub(crate) fn register(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let index = index(fd)?;
        if self.entries.get(index).is_some_and(Option::is_some) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        refuse_files(fd)?;
        if self.entries.len() <= index {
            self.entries.resize(index + 1, None);
        }
        self.entries[index] = Some(Entry {
            token,
            interest,
            armed: None,
            quiet: false,
        });
        self.registered += 1;
        self.to_arm.push(fd);
        Ok(())
    }

    /// Changes `fd`'s token and interest; `ENOENT` if it is not registered. A new interest
    /// replaces the armed poll at the next wait; a new token alone needs nothing.
    pub(crate) fn reregister(
        &mut self,
        fd: RawFd,
        token: u64,
        interest: Interest,
    ) -> io::Result<()> {
        let entry = self.entry_mut(fd)?;
        entry.token = token;
        if entry.interest == interest {
            return Ok(());
        }
        entry.interest = interest;
        entry.quiet = false;
        if let Some(armed) = entry.armed.take() {
            self.push(removal(armed))?;
        }
        self.to_arm.push(fd);
        Ok(())
    }

    /// Stops watching `fd`, removing its armed poll from the ring before returning (see
    /// the module doc); `ENOENT` if it is not registered.
    pub(crate) fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        let entry = *self.entry_mut(fd)?;
        self.entries[fd as usize] = None;
        self.registered -= 1;
        if let Some(armed) = entry.armed {
            self.push(removal(armed))?;
            self.enter(|ring| ring.submit())?;
        }
        Ok(())
    }

    fn entry_mut(&mut self, fd: RawFd) -> io::Result<&mut Entry> {
        let index = index(fd).map_err(|_| io::Error::from_raw_os_error(libc::ENOENT))?;
        self.entries
            .get_mut(index)
            .and_then(Option::as_mut)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }

    /// Queues one submission, submitting what is queued first if the queue is full.
    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the entries this backend makes (`POLL_ADD`, `POLL_REMOVE`) point at no
            // memory: a poll names a descriptor number and an event mask, a removal the
            // `user_data` of the poll to remove. Nothing has to outlive the submission.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            self.enter(|ring| ring.submit())?;
        }
    }

    /// Arms a poll for every registered, unarmed descriptor in `to_arm`.
    fn arm_pending(&mut self) -> io::Result<()> {
        let mut pending = std::mem::take(&mut self.to_arm);
        for &fd in &pending {
            let Some(Some(entry)) = self.entries.get(fd as usize) else {
                continue;
            };
            if entry.armed.is_some() {
                continue;
            }
            let user_data = (u64::from(fd as u32) << 32) | u64::from(self.serial);
            self.serial = self.serial.wrapping_add(1);
            let poll = opcode::PollAdd::new(types::Fd(fd), poll_mask(entry.interest))
                .multi(entry.quiet)
                .build()
                .user_data(user_data);
            self.push(poll)?;
            if let Some(Some(entry)) = self.entries.get_mut(fd as usize) {
                entry.armed = Some(user_data);
            }
        }
        pending.clear();
        self.to_arm = pending;
        Ok(())
    }

    /// One `io_uring_enter` through `call`, retried on `EINTR` only when nothing was
    /// submitted (so no submission is made twice) and with `EBUSY` (the completion queue's
    /// overflow is full) reported as a wait that found nothing.
    fn enter(&self, call: impl Fn(&IoUring) -> io::Result<usize>) -> io::Result<()> {
        match call(&self.ring) {
            Ok(_) => Ok(()),
            Err(err) if matches!(err.raw_os_error(), Some(libc::EBUSY)) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Submits the pending arms and waits, in one `io_uring_enter`; clears `events`, then
    /// fills it with the completions that are events.
    pub(crate) fn wait(
        &mut self,
        events: &mut Vec<Event>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        events.clear();
        self.arm_pending()?;
        // The same whole milliseconds as the other backends.
        let timeout = timeout
            .map(|t| Duration::from_millis(u64::try_from(timeout_millis(Some(t))).unwrap_or(0)));
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let outcome = match deadline {
                Some(_) if timeout == Some(Duration::ZERO) => self.ring.submit(),
                None => self.ring.submit_and_wait(1),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let ts = types::Timespec::new()
                        .sec(left.as_secs())
                        .nsec(left.subsec_nanos());
                    let args = types::SubmitArgs::new().timespec(&ts);
                    self.ring.submitter().submit_with_args(1, &args)
                }
            };
            let interrupted = match outcome {
                Ok(_) => false,
                Err(err) => match err.raw_os_error() {
                    Some(libc::ETIME | libc::EBUSY) => false,
                    Some(libc::EINTR) => true,
                    _ => return Err(err),
                },
            };
            self.reap(events);
            // Completions of removed arms wake a wait without being events: wait again
            // for what is left of the timeout, unless a signal came in.
            let expired = deadline.is_some_and(|deadline| Instant::now() >= deadline);
            if !events.is_empty() || interrupted || expired {
                return Ok(());
            }
            // A submission that did not all go in (the queue was full) is retried here.
            self.arm_pending()?;
        }
    }

    /// Moves the completions out of the ring: an event for each current arm's.
    ///
    /// The kernel adds `POLLRDHUP` to every poll, so once a peer has shut its sending side a
    /// single-shot poll asking for nothing, or for writing while the socket cannot take more,
    /// completes at once every time it is armed, with nothing asked for: re-arming it
    /// would spin. Such a descriptor is armed **multishot** instead, which completes on each
    /// wake-up of the file rather than at once, and goes back to single-shot polls (and so
    /// to level-triggering) as soon as it reports something asked for.
    fn reap(&mut self, events: &mut Vec<Event>) {
        let mut removals = Vec::new();
        for completion in self.ring.completion() {
            let user_data = completion.user_data();
            if user_data == REMOVAL {
                continue;
            }
            let fd = (user_data >> 32) as RawFd;
            let Some(Some(entry)) = self.entries.get_mut(fd as usize) else {
                continue;
            };
            if entry.armed != Some(user_data) {
                continue;
            }
            let result = completion.result();
            let event = if result >= 0 {
                let mask = result as libc::c_short;
                Event {
                    token: entry.token,
                    readable: mask & libc::POLLIN != 0,
                    writable: mask & libc::POLLOUT != 0,
                    hangup: mask & libc::POLLHUP != 0,
                    error: mask & (libc::POLLERR | libc::POLLNVAL) != 0,
                }
            } else if result == -libc::ECANCELED {
                entry.armed = None;
                self.to_arm.push(fd);
                continue;
            } else {
                // EBADF and the like: the descriptor is not open, as poll(2)'s POLLNVAL.
                Event {
                    token: entry.token,
                    readable: false,
                    writable: false,
                    hangup: false,
                    error: true,
                }
            };
            let reported = event.readable || event.writable || event.hangup || event.error;
            let more = io_uring::cqueue::more(completion.flags());
            if entry.quiet {
                if !reported && more {
                    continue;
                }
                entry.quiet = false;
                if more {
                    removals.push(user_data);
                }
            } else if !reported {
                entry.quiet = true;
            }
            entry.armed = None;
            self.to_arm.push(fd);
            if reported {
                events.push(event);
            }
        }
        for user_data in removals {
            // A full queue is submitted by `push`; an error there shows again at the wait.
            let _ = self.push(removal(user_data));
        }
    }
}

/// A removal of the poll armed with `user_data`, whose own completion is skipped when it
/// succeeds.
fn removal(user_data: u64) -> squeue::Entry {
    opcode::PollRemove::new(user_data)
        .build()
        .user_data(REMOVAL)
        .flags(squeue::Flags::SKIP_SUCCESS)
}

/// A descriptor number as an index, `EBADF` if it is negative.
fn index(fd: RawFd) -> io::Result<usize> {
    usize::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))
}

/// `EPERM` for a regular file or a directory, which epoll refuses; `EBADF` if `fd` is not
/// open.
fn refuse_files(fd: RawFd) -> io::Result<()> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fstat` writes a `stat` into the pointed-to buffer, which is large enough and
    // lives across the call; `fd` is a plain number the kernel checks (`EBADF`).
    let rc = unsafe { libc::fstat(fd, stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fstat` succeeded, so it initialised the whole buffer.
    let mode = unsafe { stat.assume_init() }.st_mode & libc::S_IFMT;
    if mode == libc::S_IFREG || mode == libc::S_IFDIR {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    Ok(())
}

/// The poll mask for an interest: `POLLIN` and/or `POLLOUT`; the kernel adds hang-ups and
/// errors to every poll.
fn poll_mask(interest: Interest) -> u32 {
    let mut mask = 0;
    if interest.readable {
        mask |= libc::POLLIN as u32;
    }
    if interest.writable {
        mask |= libc::POLLOUT as u32;
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::Shutdown;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn wait(poller: &mut UringPoller, millis: u64) -> Vec<Event> {
        let mut events = Vec::new();
        poller
            .wait(&mut events, Some(Duration::from_millis(millis)))
            .unwrap();
        events
    }

    /// Arms made since `before`: a spinning poller would make thousands in 50 ms.
    fn arms_since(poller: &UringPoller, before: u32) -> u32 {
        poller.serial.wrapping_sub(before)
    }

    #[test]
    fn a_half_closed_peer_without_interest_reports_nothing_and_does_not_spin() {
        let mut poller = UringPoller::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        b.shutdown(Shutdown::Write).unwrap();
        poller.register(a.as_raw_fd(), 1, Interest::NONE).unwrap();
        assert_eq!(wait(&mut poller, 50), []);
        assert!(arms_since(&poller, 0) <= 3, "{} arms", poller.serial);
        // A full close is still reported.
        drop(b);
        let events = wait(&mut poller, 1000);
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(events[0].hangup, "{events:?}");
    }

    #[test]
    fn a_half_closed_peer_with_a_full_buffer_reports_writable_once_it_drains() {
        let mut poller = UringPoller::new().unwrap();
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let chunk = [7u8; 4096];
        let mut sent = 0;
        while let Ok(n) = a.write(&chunk) {
            sent += n;
        }
        b.shutdown(Shutdown::Write).unwrap();
        poller
            .register(a.as_raw_fd(), 1, Interest::WRITABLE)
            .unwrap();
        assert_eq!(wait(&mut poller, 50), [], "the buffer is full");
        let before = poller.serial;
        assert_eq!(wait(&mut poller, 50), []);
        assert!(arms_since(&poller, before) <= 2, "it spins");
        let mut drained = vec![0u8; sent];
        b.read_exact(&mut drained).unwrap();
        let events = wait(&mut poller, 1000);
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(events[0].writable, "{events:?}");
        // Back to level-triggering: still writable, so reported again.
        assert!(wait(&mut poller, 1000)[0].writable);
    }

    #[test]
    fn regular_files_and_directories_are_refused_as_epoll_refuses_them() {
        let mut poller = UringPoller::new().unwrap();
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let err = poller
            .register(file.as_raw_fd(), 1, Interest::READABLE)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        let dir = std::fs::File::open("/").unwrap();
        let err = poller
            .register(dir.as_raw_fd(), 1, Interest::READABLE)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        let err = poller.register(-1, 1, Interest::READABLE).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }
}
