//! The io_uring backend (no Twisted counterpart: Twisted has no io_uring reactor): a
//! completion-based receiver and sender for stream connections, and a level-triggered
//! readiness poller for every other descriptor, on one io_uring instance.
//!
//! **Stream sockets** (a connection's, registered with [`UringPoller::register_stream`]) are
//! not polled. While the connection wants to read, a multishot `IORING_OP_RECV` is armed on
//! it, receiving into the ring's shared buffers (`uring_buffers.rs`, so an idle connection
//! holds no read buffer); each completion's bytes (or the end of input, or the error) are
//! queued on the descriptor and reported as a readable event, and the connection's
//! `do_read` takes them with [`UringPoller::take_received`] instead of calling `recv`. When
//! it stops wanting to read, or has [`MAX_QUEUED`] receives it has not taken, the receive
//! is cancelled, and what arrives meanwhile stays queued (copied out, so the shared buffers
//! are not held) until it reads again: nothing is lost or reordered, and a slow reader
//! leaves the rest to TCP's flow control. Its output goes in one `IORING_OP_SEND` at a time
//! ([`UringPoller::send`]), from a buffer the send owns until its last completion; a short
//! send is finished here, and the end is reported as a writable event, with
//! [`UringPoller::take_sent`] saying how it went. So a message costs no system call of its
//! own: the loop's one `io_uring_enter` per iteration carries every submission and wait.
//! **Listening sockets** registered as such accept the same way: a multishot
//! `IORING_OP_ACCEPT` queues the connections (at most [`MAX_ACCEPTED`] not taken), which the
//! port takes in place of `accept4`; what nobody took is closed with the registration.
//!
//! **Other descriptors** (pipes, UDP, the reactor's waker, a user's
//! descriptors) have at most one single-shot `IORING_OP_POLL_ADD` armed in the ring. Its
//! completion is the readiness event; the descriptor is armed again at the next wait, and
//! since arming checks readiness at once, a descriptor that is still ready completes again
//! straight away: level-triggered, as the other backends are. The arms go to the kernel
//! with the wait, whose timeout rides on the same call (`IORING_ENTER_EXT_ARG`).
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
//! - A stream descriptor has at most one receive and one send in flight; completions of
//!   earlier ones (cancelled, or of a number since reused) are dropped, their buffers given
//!   back. Nothing but the ring reads or writes a stream socket, so the queue holds its
//!   bytes in order and its sends go out in order.
//! - Memory the kernel may touch (provided buffers, a send's bytes) is freed only after
//!   the last completion of the operation using it: a deregistered stream's send is kept
//!   in `orphans`, and dropping the ring cancels everything and waits (or leaks).
//! - `deregister` submits the cancellation of a stream's receive and send at once, as it
//!   does a poll's removal, for the same reason.
//! - Regular files and directories are refused with `EPERM`, as epoll refuses them, so the
//!   callers' fallbacks for them work alike on both.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::uring_buffers::{self, BufferPool, RingBuffer};
use super::{Event, Interest, RingRole, timeout_millis};

/// Submission queue slots; the completion queue gets twice as many, and the kernel keeps
/// any overflow (`IORING_FEAT_NODROP`), so this only bounds a batch between two enters.
const RING_ENTRIES: u32 = 256;

/// The `user_data` of removal, cancellation and provision requests, whose completions are
/// not events. No descriptor number has all its bits set in the high half (descriptors are
/// non-negative `i32`s).
const REMOVAL: u64 = u64::MAX;

/// The bit set in the `user_data` of a stream's receive, and the one of its sends (never in
/// a poll's: streams are descriptors below [`STREAM_FDS`]).
const RECEIVE: u64 = 1 << 63;
const SEND: u64 = 1 << 62;
/// Both bits: a listening socket's multishot accept.
const ACCEPT: u64 = RECEIVE | SEND;
/// The bit added to a receive's or a send's `user_data` to make its cancellation's.
const CANCEL: u64 = 1 << 61;
/// Descriptors from this number on are not registered as streams (they are polled), so that
/// `fd << 32` leaves bits 61 to 63 clear.
const STREAM_FDS: RawFd = 1 << 29;
/// The descriptor number in a receive's or a send's `user_data`.
fn stream_fd(user_data: u64) -> RawFd {
    ((user_data >> 32) & (STREAM_FDS as u64 - 1)) as RawFd
}
/// A send's buffer kept for the next send if it is no larger than this.
const KEEP_SEND_CAPACITY: usize = 64 * 1024;

/// The most receives a stream queues: at this many its receive is cancelled, and armed
/// again once its reader has taken some, so a reader slower than its peer leaves the rest
/// in the kernel (and TCP's flow control slows the peer), as with `recv`.
const MAX_QUEUED: usize = 4;
/// The same for the connections a listening socket accepted and its port has not taken
/// (a port takes up to 100 per event, as Twisted's `numberAccepts`).
const MAX_ACCEPTED: usize = 128;

/// How long dropping the ring waits for its cancelled receives to complete.
const DROP_WAIT: Duration = Duration::from_secs(1);

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

/// What a stream socket's receive delivered, taken in order by its `do_read`.
#[derive(Debug)]
pub(crate) enum Received {
    /// Bytes in one of the ring's buffers: give it back with
    /// [`UringPoller::give_back`] once they are read.
    Ring(RingBuffer),
    /// Bytes copied out of the ring's buffers, because they arrived while the socket was
    /// not being read (so that no shared buffer waits on a paused connection).
    Copied(Vec<u8>),
    /// End of input.
    Eof,
    /// A connection a listening socket accepted (non-blocking, close-on-exec).
    Accepted(OwnedFd),
    /// The receive failed with the socket's error.
    Failed(io::Error),
}

/// What [`UringPoller::take_received`] found.
#[derive(Debug)]
pub(crate) enum Taken {
    /// The descriptor does not receive on the ring: read it with `recv`.
    NotOnRing,
    /// Nothing is queued (yet).
    Nothing,
    /// The next thing the socket received.
    Got(Received),
}

/// The ring-side state of a stream socket (see the module doc).
#[derive(Debug, Default)]
struct Stream {
    /// A listening socket, which accepts on the ring instead of receiving.
    listener: bool,
    /// The `user_data` of its armed multishot receive (or accept).
    armed: Option<u64>,
    /// That receive's cancellation is submitted.
    cancelling: bool,
    /// End of input or an error is queued: no receive is armed again.
    ended: bool,
    /// What was received and not taken yet, in order.
    queue: VecDeque<Received>,
    /// The wait that last reported it, and where its event is in that wait's events: one
    /// event per descriptor per wait.
    reported: u32,
    reported_at: usize,
    /// The send in flight.
    send: Option<SendInFlight>,
    /// How the last send ended, until its writer takes it: every byte sent, or the error.
    sent: Option<io::Result<usize>>,
    /// The last send's buffer, for the next.
    spare: Vec<u8>,
}

impl Stream {
    /// How many completions it queues before its receive or accept is cancelled.
    fn limit(&self) -> usize {
        if self.listener {
            MAX_ACCEPTED
        } else {
            MAX_QUEUED
        }
    }
}

/// A send on the ring: its bytes are the kernel's to read until its last completion.
#[derive(Debug)]
struct SendInFlight {
    user_data: u64,
    bytes: Vec<u8>,
    /// How many the kernel has sent: a short send is submitted again for the rest.
    done: usize,
}

/// One registered descriptor.
#[derive(Debug)]
struct Entry {
    token: u64,
    interest: Interest,
    /// The `user_data` of the poll armed for it, if one is.
    armed: Option<u64>,
    /// Its last single-shot poll completed with nothing asked for (see [`UringPoller::reap`]):
    /// it is armed multishot until something asked for is reported.
    quiet: bool,
    /// A stream socket receiving on the ring ([`UringPoller::register_stream`]).
    stream: Option<Box<Stream>>,
}

impl Entry {
    fn new(token: u64, interest: Interest, role: Option<RingRole>) -> Entry {
        Entry {
            token,
            interest,
            armed: None,
            quiet: false,
            stream: role.map(|role| {
                Box::new(Stream {
                    listener: role == RingRole::Listener,
                    ..Stream::default()
                })
            }),
        }
    }

    /// The mask of the poll this descriptor needs, if it needs one. A stream needs none: it
    /// learns of its input, end of input and errors from its receive, and of its output's
    /// progress from its sends, which wait for room in the socket themselves. (One that
    /// does neither, a paused connection, is not watched, as the other backends do not
    /// watch a connection that wants nothing: it learns of a hang-up once it reads again.)
    fn poll_wanted(&self) -> Option<u32> {
        match &self.stream {
            Some(_) => None,
            None => Some(poll_mask(self.interest)),
        }
    }

    /// Whether a receive should be armed for it now.
    fn receive_wanted(&self) -> bool {
        self.interest.readable
            && self
                .stream
                .as_ref()
                .is_some_and(|s| s.armed.is_none() && !s.ended && s.queue.len() < s.limit())
    }
}

/// An io_uring instance: a readiness poller, and the receiver of stream sockets.
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
    /// The buffers stream sockets receive into.
    buffers: BufferPool,
    /// Receives and sends submitted whose last completion has not come yet: each holds
    /// memory the kernel may use until then.
    in_flight: usize,
    /// The sends of streams deregistered while their send was in flight, kept until its
    /// completion.
    orphans: Vec<SendInFlight>,
    /// Receives and sends cancelled whose last completion has not come yet. A
    /// cancellation can miss its target while the kernel is running it (`ENOENT`,
    /// `EALREADY`): it is then submitted again with the next wait, until the target ends.
    cancelled: Vec<u64>,
    /// Cancellations that missed, to submit again.
    cancel_again: Vec<u64>,
    /// Multishot polls found quiet twice, to be removed with the next submission (pushed
    /// by `arm_pending`, where a failure to submit is reported).
    removals: Vec<u64>,
    /// Whether this kernel takes multishot receives (6.0); cleared at the first refusal,
    /// after which stream sockets are polled and read as any descriptor.
    ring_receive: bool,
    /// The same for multishot accepts (5.19).
    ring_accept: bool,
    /// Streams whose queue still held something when one item was taken: reported again
    /// by the next wait, which then does not block.
    backlog: Vec<RawFd>,
    /// Waits so far, to report each queue once per wait.
    waits: u32,
}

impl fmt::Debug for UringPoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringPoller")
            .field("registered", &self.registered)
            .field("to_arm", &self.to_arm.len())
            .field("in_flight", &self.in_flight)
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
        // The ring is used by the reactor's thread alone, so the kernel need not interrupt
        // it to post completions (5.19), which are then posted at its next system call.
        // (Deferring them until it asks, `IORING_SETUP_DEFER_TASKRUN`, would hold a
        // cancelled receive, and so the file, past `deregister`, and split one wait's
        // readiness over several.)
        let ring = IoUring::builder()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(RING_ENTRIES)
            .or_else(|_| IoUring::builder().build(RING_ENTRIES))
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
            buffers: BufferPool::default(),
            in_flight: 0,
            orphans: Vec::new(),
            cancelled: Vec::new(),
            cancel_again: Vec::new(),
            removals: Vec::new(),
            ring_receive: true,
            ring_accept: true,
            backlog: Vec::new(),
            waits: 0,
        })
    }

    /// Starts watching `fd`; `EEXIST` if it is registered, `EPERM` for a regular file or a
    /// directory (as epoll), `EBADF` if it is not open.
    pub(crate) fn register(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.add(fd, Entry::new(token, interest, None))
    }

    /// Starts watching the stream socket `fd`, whose input (a connection's bytes, a
    /// listening socket's connections) is received on the ring and taken with
    /// [`take_received`](Self::take_received) (see the module doc).
    pub(crate) fn register_stream(
        &mut self,
        fd: RawFd,
        token: u64,
        interest: Interest,
        role: RingRole,
    ) -> io::Result<()> {
        let supported = match role {
            RingRole::Connection => self.ring_receive,
            RingRole::Listener => self.ring_accept,
        };
        let on_ring = supported && fd < STREAM_FDS;
        if on_ring && role == RingRole::Connection && !self.buffers.is_started() {
            self.buffers.grow();
        }
        self.add(fd, Entry::new(token, interest, on_ring.then_some(role)))
    }

    fn add(&mut self, fd: RawFd, entry: Entry) -> io::Result<()> {
        let index = index(fd)?;
        if self.entries.get(index).is_some_and(Option::is_some) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        refuse_files(fd)?;
        if self.entries.len() <= index {
            self.entries.resize_with(index + 1, || None);
        }
        self.entries[index] = Some(entry);
        self.registered += 1;
        self.to_arm.push(fd);
        Ok(())
    }

    /// Changes `fd`'s token and interest; `ENOENT` if it is not registered. A new interest
    /// replaces the armed poll at the next wait; a new token alone needs nothing. A stream
    /// that stops reading has its receive cancelled; one that reads again gets what was
    /// queued meanwhile first.
    pub(crate) fn reregister(
        &mut self,
        fd: RawFd,
        token: u64,
        interest: Interest,
    ) -> io::Result<()> {
        self.entry_mut(fd)?;
        let Some(Some(entry)) = self.entries.get_mut(fd as usize) else {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        };
        entry.token = token;
        if entry.interest == interest {
            return Ok(());
        }
        let was_reading = entry.interest.readable;
        entry.interest = interest;
        entry.quiet = false;
        let poll = entry.armed.take();
        let mut cancel = None;
        let mut queued = false;
        if let Some(stream) = entry.stream.as_mut() {
            if was_reading && !interest.readable {
                if let Some(receive) = stream.armed
                    && !stream.cancelling
                {
                    stream.cancelling = true;
                    cancel = Some(receive);
                }
                // What waits for a paused reader does not hold the shared buffers.
                for item in &mut stream.queue {
                    if let Received::Ring(buffer) = item {
                        let copy = Received::Copied(buffer.to_vec());
                        if let Received::Ring(buffer) = std::mem::replace(item, copy) {
                            self.buffers.give_back(buffer);
                        }
                    }
                }
            }
            queued = (interest.readable && !stream.queue.is_empty())
                || (interest.writable && stream.sent.is_some());
        }
        if let Some(poll) = poll {
            self.push(removal(poll))?;
        }
        if let Some(receive) = cancel {
            // Submitted now (see `received`).
            self.cancel(receive)?;
            self.enter(|ring| ring.submit())?;
        }
        if queued {
            self.backlog.push(fd);
        }
        self.to_arm.push(fd);
        Ok(())
    }

    /// Stops watching `fd`, removing its armed poll and cancelling its receive before
    /// returning (see the module doc), and dropping what it had received and not taken;
    /// `ENOENT` if it is not registered.
    pub(crate) fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        self.entry_mut(fd)?;
        let Some(entry) = self.entries[fd as usize].take() else {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        };
        self.registered -= 1;
        let mut submit = false;
        if let Some(armed) = entry.armed {
            self.push(removal(armed))?;
            submit = true;
        }
        if let Some(stream) = entry.stream {
            if let Some(receive) = stream.armed {
                self.cancel(receive)?;
                submit = true;
            }
            if let Some(send) = stream.send {
                self.cancel(send.user_data)?;
                self.orphans.push(send);
                submit = true;
            }
            for item in stream.queue {
                if let Received::Ring(buffer) = item {
                    self.buffers.give_back(buffer);
                }
            }
        }
        if submit {
            self.enter(|ring| ring.submit())?;
        }
        Ok(())
    }

    /// Takes the next thing the stream socket `fd` received (see the module doc).
    pub(crate) fn take_received(&mut self, fd: RawFd) -> Taken {
        let Some(Some(entry)) = usize::try_from(fd)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
        else {
            return Taken::NotOnRing;
        };
        let Some(stream) = entry.stream.as_mut() else {
            return Taken::NotOnRing;
        };
        let Some(item) = stream.queue.pop_front() else {
            return Taken::Nothing;
        };
        if !stream.queue.is_empty() {
            self.backlog.push(fd);
        }
        if entry.receive_wanted() {
            self.to_arm.push(fd);
        }
        Taken::Got(item)
    }

    /// Sends on the ring for the stream `fd`, the bytes `fill` puts in the send's buffer
    /// (a copy of the transport's, or ciphertext): `Ok(false)` if `fd` is not a stream on
    /// the ring (the caller sends itself). The send waits for room in the socket; its end is
    /// reported as a writable event, and [`take_sent`](Self::take_sent) says how it went.
    ///
    /// # Errors
    ///
    /// `EBUSY` while a send is in flight or its end not taken yet; an error queueing it.
    pub(crate) fn send(&mut self, fd: RawFd, fill: impl FnOnce(&mut Vec<u8>)) -> io::Result<bool> {
        let Some(Some(Entry {
            stream: Some(stream),
            ..
        })) = usize::try_from(fd)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
        else {
            return Ok(false);
        };
        if stream.send.is_some() || stream.sent.is_some() {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        let mut bytes = std::mem::take(&mut stream.spare);
        bytes.clear();
        fill(&mut bytes);
        if bytes.is_empty() {
            stream.sent = Some(Ok(0));
            return Ok(true);
        }
        let user_data = SEND | (u64::from(fd as u32) << 32) | u64::from(self.serial);
        self.serial = self.serial.wrapping_add(1);
        let entry = send_entry(fd, &bytes, user_data);
        stream.send = Some(SendInFlight {
            user_data,
            bytes,
            done: 0,
        });
        self.push(entry)?;
        self.in_flight += 1;
        Ok(true)
    }

    /// How the last send of the stream `fd` ended, once it has (taken once).
    pub(crate) fn take_sent(&mut self, fd: RawFd) -> Option<io::Result<usize>> {
        match usize::try_from(fd)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
        {
            Some(Some(Entry {
                stream: Some(stream),
                ..
            })) => stream.sent.take(),
            _ => None,
        }
    }

    /// Whether `fd` is registered as a stream on the ring.
    pub(crate) fn on_ring(&self, fd: RawFd) -> bool {
        matches!(
            usize::try_from(fd).ok().and_then(|i| self.entries.get(i)),
            Some(Some(Entry {
                stream: Some(_),
                ..
            }))
        )
    }

    /// Whether the stream `fd` has a send in flight, or one whose end was not taken.
    pub(crate) fn sending(&self, fd: RawFd) -> bool {
        matches!(
            usize::try_from(fd).ok().and_then(|i| self.entries.get(i)),
            Some(Some(Entry { stream: Some(stream), .. }))
                if stream.send.is_some() || stream.sent.is_some()
        )
    }

    /// Puts back what [`take_received`](Self::take_received) gave, to be taken first next
    /// time (a transport not ready for it yet).
    pub(crate) fn untake(&mut self, fd: RawFd, item: Received) {
        if let Some(Some(Entry {
            stream: Some(stream),
            ..
        })) = usize::try_from(fd)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
        {
            stream.queue.push_front(item);
            self.backlog.push(fd);
        } else if let Received::Ring(buffer) = item {
            self.buffers.give_back(buffer);
        }
    }

    /// Gives a receive buffer back to the ring, once its bytes are read.
    pub(crate) fn give_back(&mut self, buffer: RingBuffer) {
        self.buffers.give_back(buffer);
    }

    /// Cancels the receive or send submitted with `target` (see `cancelled`).
    fn cancel(&mut self, target: u64) -> io::Result<()> {
        if !self.cancelled.contains(&target) {
            self.cancelled.push(target);
        }
        self.push(cancellation(target))
    }

    /// `target` has had its last completion: no cancellation is due for it any more.
    fn ended(&mut self, target: u64) {
        if !self.cancelled.is_empty() {
            self.cancelled.retain(|&t| t != target);
        }
    }

    fn entry_mut(&mut self, fd: RawFd) -> io::Result<&mut Entry> {
        let index = index(fd).map_err(|_| io::Error::from_raw_os_error(libc::ENOENT))?;
        self.entries
            .get_mut(index)
            .and_then(Option::as_mut)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }

    /// Queues one submission, submitting what is queued first if the queue is full.
    ///
    /// Every entry this backend makes points at no memory (a poll names a descriptor and a
    /// mask; a removal or a cancellation the `user_data` of its target; a multishot receive
    /// a buffer group) except a buffer provision, whose buffer stays put and untouched
    /// until a completion names it (`uring_buffers.rs`).
    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: see above: nothing an entry points at is moved or freed while the
            // kernel may use it.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            self.enter(|ring| ring.submit())?;
        }
    }

    /// Arms a poll and/or a receive for every registered descriptor in `to_arm` that needs
    /// one and has none, and queues the buffers given back since the last wait.
    fn arm_pending(&mut self) -> io::Result<()> {
        // Buffers first, so that a receive armed in the same submission finds them.
        while let Some(provision) = self.buffers.next_provision(REMOVAL) {
            self.push(provision)?;
        }
        for target in std::mem::take(&mut self.cancel_again) {
            if self.cancelled.contains(&target) {
                self.push(cancellation(target))?;
            }
        }
        for user_data in std::mem::take(&mut self.removals) {
            self.push(removal(user_data))?;
        }
        let mut pending = std::mem::take(&mut self.to_arm);
        for &fd in &pending {
            let Some(Some(entry)) = self.entries.get(fd as usize) else {
                continue;
            };
            let poll = match (entry.armed, entry.poll_wanted()) {
                (None, Some(mask)) => Some((mask, entry.quiet)),
                _ => None,
            };
            let receive = entry
                .receive_wanted()
                .then(|| entry.stream.as_ref().is_some_and(|s| s.listener));
            if let Some((mask, quiet)) = poll {
                let user_data = (u64::from(fd as u32) << 32) | u64::from(self.serial);
                self.serial = self.serial.wrapping_add(1);
                let poll = opcode::PollAdd::new(types::Fd(fd), mask)
                    .multi(quiet)
                    .build()
                    .user_data(user_data);
                self.push(poll)?;
                if let Some(Some(entry)) = self.entries.get_mut(fd as usize) {
                    entry.armed = Some(user_data);
                }
            }
            if let Some(listener) = receive {
                let tag = if listener { ACCEPT } else { RECEIVE };
                let user_data = tag | (u64::from(fd as u32) << 32) | u64::from(self.serial);
                self.serial = self.serial.wrapping_add(1);
                let receive = if listener {
                    opcode::AcceptMulti::new(types::Fd(fd))
                        .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
                        .build()
                } else {
                    opcode::RecvMulti::new(types::Fd(fd), uring_buffers::GROUP).build()
                };
                let receive = receive.user_data(user_data);
                self.push(receive)?;
                self.in_flight += 1;
                if let Some(Some(Entry {
                    stream: Some(stream),
                    ..
                })) = self.entries.get_mut(fd as usize)
                {
                    stream.armed = Some(user_data);
                }
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
    /// fills it with the completions that are events. A stream with something queued still
    /// is reported at once, without blocking.
    pub(crate) fn wait(
        &mut self,
        events: &mut Vec<Event>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        events.clear();
        self.waits = self.waits.wrapping_add(1);
        for fd in std::mem::take(&mut self.backlog) {
            self.report(fd, events);
        }
        let timeout = if events.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
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
            // A submission that did not all go in (the queue was full) is retried here,
            // and receives ended by a completion are armed again.
            self.arm_pending()?;
        }
    }

    /// Reports the stream `fd` if it has something for its transport: readable if it reads
    /// and has something queued, writable if it writes and its send has ended. One event per
    /// descriptor per wait: a second report adds to the first.
    fn report(&mut self, fd: RawFd, events: &mut Vec<Event>) {
        let waits = self.waits;
        let Some(Some(entry)) = self.entries.get_mut(fd as usize) else {
            return;
        };
        let Some(stream) = entry.stream.as_mut() else {
            return;
        };
        let readable = entry.interest.readable && !stream.queue.is_empty();
        let writable = entry.interest.writable && stream.sent.is_some();
        if !readable && !writable {
            return;
        }
        if stream.reported == waits
            && let Some(event) = events.get_mut(stream.reported_at)
            && event.token == entry.token
        {
            event.readable |= readable;
            event.writable |= writable;
            return;
        }
        stream.reported = waits;
        stream.reported_at = events.len();
        events.push(Event {
            token: entry.token,
            readable,
            writable,
            hangup: false,
            error: false,
        });
    }

    /// Moves the completions out of the ring: an event for each current arm's, and the
    /// receives' bytes onto their streams' queues.
    ///
    /// The kernel adds `POLLRDHUP` to every poll, so once a peer has shut its sending side a
    /// single-shot poll asking for nothing, or for writing while the socket cannot take more,
    /// completes at once every time it is armed, with nothing asked for: re-arming it
    /// would spin. Such a descriptor is armed **multishot** instead, which completes on each
    /// wake-up of the file rather than at once, and goes back to single-shot polls (and so
    /// to level-triggering) as soon as it reports something asked for.
    fn reap(&mut self, events: &mut Vec<Event>) {
        let completions: Vec<(u64, i32, u32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result(), c.flags()))
            .collect();
        for (user_data, result, flags) in completions {
            if user_data == REMOVAL {
                continue;
            }
            if user_data & CANCEL != 0 {
                // A cancellation that missed (its success is not posted).
                let target = user_data & !CANCEL;
                if self.cancelled.contains(&target) && !self.cancel_again.contains(&target) {
                    self.cancel_again.push(target);
                }
                continue;
            }
            if user_data & ACCEPT == ACCEPT {
                self.accepted(user_data, result, flags, events);
                continue;
            }
            if user_data & RECEIVE != 0 {
                self.received(user_data, result, flags, events);
                continue;
            }
            if user_data & SEND != 0 {
                self.send_completed(user_data, result, events);
                continue;
            }
            let fd = (user_data >> 32) as RawFd;
            let Some(Some(entry)) = self.entries.get_mut(fd as usize) else {
                continue;
            };
            if entry.armed != Some(user_data) {
                continue;
            }
            let mut event = if result >= 0 {
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
            if entry.stream.is_some() && entry.interest.readable {
                // Its receive reports input, end of input and errors, in order with the
                // bytes before them.
                event.readable = false;
                event.hangup = false;
                event.error = false;
            }
            let reported = event.readable || event.writable || event.hangup || event.error;
            let more = cqueue::more(flags);
            if entry.quiet {
                if !reported && more {
                    continue;
                }
                entry.quiet = false;
                if more {
                    self.removals.push(user_data);
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
    }

    /// One completion of a stream's multishot receive: its bytes, end of input or error
    /// queued, the stream reported, and the receive armed again if it ended early.
    fn received(&mut self, user_data: u64, result: i32, flags: u32, events: &mut Vec<Event>) {
        let more = cqueue::more(flags);
        if !more {
            self.in_flight = self.in_flight.saturating_sub(1);
            self.ended(user_data);
        }
        let buffer = cqueue::buffer_select(flags);
        let fd = stream_fd(user_data);
        let current = matches!(
            self.entries.get(fd as usize),
            Some(Some(Entry { stream: Some(stream), .. })) if stream.armed == Some(user_data)
        );
        if !current {
            // Cancelled, or of a descriptor since deregistered: its bytes are dropped.
            if let Some(id) = buffer {
                self.buffers.recycle(id);
            }
            return;
        }
        let Some(Some(entry)) = self.entries.get_mut(fd as usize) else {
            return;
        };
        let reading = entry.interest.readable;
        let Some(stream) = entry.stream.as_mut() else {
            return;
        };
        if !more {
            stream.armed = None;
            stream.cancelling = false;
        }
        let item = match result {
            n if n > 0 => match buffer.and_then(|id| self.buffers.take(id, n as usize)) {
                Some(buffer) if reading => Some(Received::Ring(buffer)),
                Some(buffer) => {
                    let copy = buffer.to_vec();
                    self.buffers.give_back(buffer);
                    Some(Received::Copied(copy))
                }
                None => {
                    stream.ended = true;
                    Some(Received::Failed(io::Error::other(
                        "io_uring completed a receive without a buffer of its pool",
                    )))
                }
            },
            0 => {
                stream.ended = true;
                Some(Received::Eof)
            }
            n => match -n {
                libc::ECANCELED | libc::EINTR | libc::EAGAIN => None,
                libc::ENOBUFS => {
                    // Every buffer is out: more are provided before the receive is armed
                    // again (at the most, the same ones once they come back).
                    self.buffers.grow();
                    None
                }
                libc::EINVAL if stream.queue.is_empty() => {
                    // A kernel without multishot receives (before 6.0): this stream, and
                    // every one registered from now on, is polled and read with `recv`.
                    self.ring_receive = false;
                    back_to_readiness(entry, fd, reading, &mut self.to_arm, events);
                    return;
                }
                errno => {
                    stream.ended = true;
                    Some(Received::Failed(io::Error::from_raw_os_error(errno)))
                }
            },
        };
        if let Some(item) = item {
            stream.queue.push_back(item);
        }
        let full = stream.queue.len() >= stream.limit();
        let cancel = full && more && !stream.cancelling;
        if cancel {
            stream.cancelling = true;
        }
        if !more && reading && !stream.ended && !full {
            self.to_arm.push(fd);
        }
        if cancel {
            // Submitted now, not with the next wait, so that no more than what is on its
            // way already is queued; an error there shows again at the wait.
            if self.cancel(user_data).is_ok() {
                let _ = self.enter(|ring| ring.submit());
            }
        }
        self.report(fd, events);
    }
}

impl UringPoller {
    /// The completion of a stream's send: the rest submitted again after a short send,
    /// else its end recorded and reported as a writable event.
    fn send_completed(&mut self, user_data: u64, result: i32, events: &mut Vec<Event>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let fd = stream_fd(user_data);
        let current = matches!(
            self.entries.get(fd as usize),
            Some(Some(Entry { stream: Some(stream), .. }))
                if stream.send.as_ref().is_some_and(|send| send.user_data == user_data)
        );
        if !current {
            // Of a stream deregistered since: its bytes can go now.
            self.orphans.retain(|send| send.user_data != user_data);
            self.ended(user_data);
            return;
        }
        let Some(Some(Entry {
            stream: Some(stream),
            ..
        })) = self.entries.get_mut(fd as usize)
        else {
            return;
        };
        let Some(send) = stream.send.as_mut() else {
            return;
        };
        let (again, mut outcome) = match result {
            n if n > 0 => {
                send.done += n as usize;
                let rest = &send.bytes[send.done.min(send.bytes.len())..];
                let again = (!rest.is_empty()).then(|| send_entry(fd, rest, user_data));
                (again, Ok(send.done))
            }
            0 => (None, Err(io::Error::from(io::ErrorKind::WriteZero))),
            n if -n == libc::EINTR || -n == libc::EAGAIN => {
                let rest = &send.bytes[send.done.min(send.bytes.len())..];
                (Some(send_entry(fd, rest, user_data)), Ok(send.done))
            }
            n => (None, Err(io::Error::from_raw_os_error(-n))),
        };
        if let Some(again) = again {
            // The rest stays where it is, in the stream's send, until this completes.
            if self.push(again).is_ok() {
                self.in_flight += 1;
                return;
            }
            outcome = Err(io::Error::other(
                "io_uring refused to queue the rest of a send",
            ));
        }
        self.ended(user_data);
        let Some(Some(Entry {
            stream: Some(stream),
            ..
        })) = self.entries.get_mut(fd as usize)
        else {
            return;
        };
        if let Some(send) = stream.send.take()
            && send.bytes.capacity() <= KEEP_SEND_CAPACITY
        {
            stream.spare = send.bytes;
        }
        stream.sent = Some(outcome);
        self.report(fd, events);
    }
}

/// Moves a registration whose ring operation the kernel refused (`EINVAL`: no multishot
/// receive or accept) to readiness: its ring state goes, it is armed for polling, and it is
/// reported now (`readable` as its interest says) so its reads or accepts go on by syscall.
fn back_to_readiness(
    entry: &mut Entry,
    fd: RawFd,
    readable: bool,
    to_arm: &mut Vec<RawFd>,
    events: &mut Vec<Event>,
) {
    entry.stream = None;
    if entry.armed.is_none() {
        to_arm.push(fd);
    }
    events.push(Event {
        token: entry.token,
        readable,
        writable: false,
        hangup: false,
        error: false,
    });
}

impl UringPoller {
    /// One completion of a listening socket's multishot accept: the connection (or the
    /// error, such as `EMFILE`, for the port to act on) queued, the socket reported, and
    /// the accept armed again if it ended.
    fn accepted(&mut self, user_data: u64, result: i32, flags: u32, events: &mut Vec<Event>) {
        let more = cqueue::more(flags);
        if !more {
            self.in_flight = self.in_flight.saturating_sub(1);
            self.ended(user_data);
        }
        // SAFETY: a non-negative result of an accept is a descriptor the kernel has just
        // opened for this process; nothing else knows of it, so it is owned here from now
        // on (and closed if nobody takes it).
        let connection = (result >= 0).then(|| unsafe { OwnedFd::from_raw_fd(result) });
        let fd = stream_fd(user_data);
        let Some(Some(entry)) = self.entries.get_mut(fd as usize) else {
            return;
        };
        let listening = entry.interest.readable;
        let Some(stream) = entry
            .stream
            .as_mut()
            .filter(|stream| stream.armed == Some(user_data))
        else {
            return;
        };
        if !more {
            stream.armed = None;
            stream.cancelling = false;
        }
        let item = match connection {
            Some(connection) => Some(Received::Accepted(connection)),
            None => match -result {
                libc::ECANCELED | libc::EINTR | libc::EAGAIN | libc::ECONNABORTED | libc::EPERM => {
                    None
                }
                libc::EINVAL if stream.queue.is_empty() => {
                    // A kernel without multishot accepts (before 5.19): this socket, and
                    // every one registered from now on, is polled and accepts with
                    // `accept4`.
                    self.ring_accept = false;
                    back_to_readiness(entry, fd, listening, &mut self.to_arm, events);
                    return;
                }
                errno => Some(Received::Failed(io::Error::from_raw_os_error(errno))),
            },
        };
        if let Some(item) = item {
            stream.queue.push_back(item);
        }
        let full = stream.queue.len() >= stream.limit();
        let cancel = full && more && !stream.cancelling;
        if cancel {
            stream.cancelling = true;
        }
        if !more && listening && !full {
            self.to_arm.push(fd);
        }
        if cancel && self.cancel(user_data).is_ok() {
            let _ = self.enter(|ring| ring.submit());
        }
        self.report(fd, events);
    }
}

impl Drop for UringPoller {
    /// Cancels every receive and send and waits (at most [`DROP_WAIT`]) for their last
    /// completions, so the kernel is done with their buffers before they are freed; if it
    /// is not by then, the buffers are leaked rather than freed under it.
    fn drop(&mut self) {
        if self.in_flight == 0 {
            return;
        }
        let cancel_all = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(REMOVAL);
        let deadline = Instant::now() + DROP_WAIT;
        for entry in self.entries.iter_mut().flatten() {
            if let Some(send) = entry.stream.as_mut().and_then(|stream| stream.send.take()) {
                self.orphans.push(send);
            }
        }
        self.entries.clear();
        if self.push(cancel_all).is_ok() {
            let mut events = Vec::new();
            while self.in_flight > 0 && Instant::now() < deadline {
                let ts = types::Timespec::new().nsec(10_000_000);
                let args = types::SubmitArgs::new().timespec(&ts);
                let _ = self.ring.submitter().submit_with_args(1, &args);
                self.reap(&mut events);
            }
        }
        if self.in_flight > 0 {
            std::mem::forget(std::mem::take(&mut self.buffers));
            std::mem::forget(std::mem::take(&mut self.orphans));
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

/// A send of `bytes` on `fd` (without `SIGPIPE`), which must stay where they are until its
/// completion.
fn send_entry(fd: RawFd, bytes: &[u8], user_data: u64) -> squeue::Entry {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    opcode::Send::new(types::Fd(fd), bytes.as_ptr(), len)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(user_data)
}

/// A cancellation of the receive or send submitted with `user_data`; its own last
/// completion (`ECANCELED`) says when it is done.
fn cancellation(user_data: u64) -> squeue::Entry {
    opcode::AsyncCancel::new(user_data)
        .build()
        .user_data(user_data | CANCEL)
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

    /// Takes everything queued for `fd`, as bytes, up to the end of input (`true`).
    fn take_all(poller: &mut UringPoller, fd: RawFd) -> (Vec<u8>, bool) {
        let mut bytes = Vec::new();
        loop {
            match poller.take_received(fd) {
                Taken::Got(Received::Ring(buffer)) => {
                    bytes.extend_from_slice(&buffer);
                    poller.give_back(buffer);
                }
                Taken::Got(Received::Copied(copy)) => bytes.extend_from_slice(&copy),
                Taken::Got(Received::Eof) => return (bytes, true),
                Taken::Got(Received::Failed(err)) => panic!("receive failed: {err}"),
                Taken::Got(Received::Accepted(_)) => panic!("a connection accepted"),
                Taken::Nothing => return (bytes, false),
                Taken::NotOnRing => panic!("not on the ring"),
            }
        }
    }

    #[test]
    fn a_stream_receives_on_the_ring_and_keeps_what_came_while_paused_in_order() {
        let mut poller = UringPoller::new().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        poller
            .register_stream(fd, 7, Interest::READABLE, RingRole::Connection)
            .unwrap();
        assert_eq!(wait(&mut poller, 20), []);
        b.write_all(b"one ").unwrap();
        let events = wait(&mut poller, 1000);
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(events[0].readable && events[0].token == 7, "{events:?}");
        assert_eq!(take_all(&mut poller, fd), (b"one ".to_vec(), false));
        // Paused: nothing is reported, and what comes meanwhile waits.
        poller.reregister(fd, 7, Interest::NONE).unwrap();
        assert_eq!(wait(&mut poller, 20), []);
        b.write_all(b"two ").unwrap();
        assert_eq!(wait(&mut poller, 50), []);
        b.write_all(b"three").unwrap();
        drop(b);
        poller.reregister(fd, 7, Interest::READABLE).unwrap();
        let mut got = Vec::new();
        let mut eof = false;
        for _ in 0..10 {
            if eof {
                break;
            }
            let events = wait(&mut poller, 1000);
            assert!(events.iter().all(|e| e.readable), "{events:?}");
            let (bytes, end) = take_all(&mut poller, fd);
            got.extend(bytes);
            eof = end;
        }
        assert_eq!(got, b"two three");
        assert!(eof, "the end of input follows the bytes");
    }

    #[test]
    fn a_stream_nobody_takes_from_holds_a_bounded_queue_and_the_peer_blocks() {
        let mut poller = UringPoller::new().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        poller
            .register_stream(fd, 1, Interest::READABLE, RingRole::Connection)
            .unwrap();
        // A peer writing 32 MiB as fast as it can, on its own thread.
        b.set_write_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let writer = std::thread::spawn(move || {
            let chunk = [5u8; 16 * 1024];
            let mut sent = 0;
            while sent < 32 * 1024 * 1024 {
                match b.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(_) => break, // blocked for 300 ms: the reader holds back
                }
            }
            (sent, b)
        });
        let mut most = 0;
        while !writer.is_finished() {
            let _ = wait(&mut poller, 10);
            let queued = poller.entries[fd as usize]
                .as_ref()
                .and_then(|e| e.stream.as_ref())
                .map_or(0, |s| s.queue.len());
            most = most.max(queued);
        }
        let (sent, _b) = writer.join().unwrap();
        // What the kernel had completed when the queue filled is queued too: at most one
        // buffer pool's worth (64 of 64 KiB), not the 32 MiB.
        assert!(most <= 64, "{most} receives queued");
        assert!(sent < 32 * 1024 * 1024, "the peer never blocked");
        // Everything arrives once the reader takes it.
        let mut got = 0;
        while got < sent {
            let _ = wait(&mut poller, 1000);
            got += take_all(&mut poller, fd).0.len();
        }
        assert_eq!(got, sent);
    }

    #[test]
    fn a_send_on_the_ring_reports_its_end_as_writable() {
        let mut poller = UringPoller::new().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        poller
            .register_stream(fd, 3, Interest::WRITABLE, RingRole::Connection)
            .unwrap();
        // 1 MiB: more than the socket takes at once, so the send waits for the reader.
        let payload: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
        assert!(
            poller
                .send(fd, |out| out.extend_from_slice(&payload))
                .unwrap()
        );
        assert!(poller.sending(fd));
        let err = poller.send(fd, |out| out.push(0)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBUSY));
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; 1024 * 1024];
            b.read_exact(&mut got).unwrap();
            got
        });
        let mut ended = None;
        for _ in 0..100 {
            let events = wait(&mut poller, 100);
            if events.iter().any(|e| e.writable && e.token == 3) {
                ended = poller.take_sent(fd);
                break;
            }
        }
        assert_eq!(ended.map(|r| r.unwrap()), Some(payload.len()));
        assert!(!poller.sending(fd));
        assert_eq!(reader.join().unwrap(), payload);
    }

    #[test]
    fn a_stream_deregistered_with_a_send_in_flight_lets_go_of_it_safely() {
        let mut poller = UringPoller::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        poller
            .register_stream(fd, 3, Interest::BOTH, RingRole::Connection)
            .unwrap();
        // The peer never reads: the send stays in flight.
        assert!(
            poller
                .send(fd, |out| out.resize(4 * 1024 * 1024, 1))
                .unwrap()
        );
        let _ = wait(&mut poller, 20);
        poller.deregister(fd).unwrap();
        drop(a);
        assert!(!poller.on_ring(fd));
        // The cancelled send completes; its bytes were kept until then.
        for _ in 0..20 {
            let _ = wait(&mut poller, 20);
            if poller.in_flight == 0 {
                break;
            }
        }
        assert_eq!(poller.in_flight, 0);
        assert!(poller.orphans.is_empty());
        drop(b);
    }

    #[test]
    fn a_listening_socket_accepts_on_the_ring_and_closes_what_nobody_took() {
        let mut poller = UringPoller::new().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let fd = listener.as_raw_fd();
        poller
            .register_stream(fd, 9, Interest::READABLE, RingRole::Listener)
            .unwrap();
        assert_eq!(wait(&mut poller, 20), []);
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(address).unwrap())
            .collect();
        let mut accepted = Vec::new();
        for _ in 0..20 {
            if accepted.len() == 3 {
                break;
            }
            let events = wait(&mut poller, 500);
            assert!(
                events.iter().all(|e| e.readable && e.token == 9),
                "{events:?}"
            );
            while let Taken::Got(item) = poller.take_received(fd) {
                match item {
                    Received::Accepted(connection) => accepted.push(connection),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(accepted.len(), 3);
        // One more, accepted and never taken: deregistering closes it, and its client sees
        // the end of input.
        let mut late = std::net::TcpStream::connect(address).unwrap();
        for _ in 0..20 {
            if !wait(&mut poller, 100).is_empty() {
                break;
            }
        }
        poller.deregister(fd).unwrap();
        late.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(late.read(&mut buf).unwrap_or(0), 0);
        drop(clients);
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
