//! I/O readiness backends, chosen at run time (Twisted's choice of reactor:
//! `epollreactor`, `pollreactor`, installed by `installReactor` or `twistd --reactor`), and
//! an io_uring one Twisted does not have.
//!
//! The crate-internal `Poller` is an enum over the backends, so the loop dispatches
//! statically and one build can run on any of them: [`BackendKind::from_env`] reads
//! `TORSION_REACTOR`, and the test suite runs every test body on every backend. All backends
//! behave alike:
//!
//! - **Level-triggered**, as Twisted's reactors are: a descriptor that stays ready is reported
//!   again by every wait until it is read or written (no `EPOLLET`, no `EPOLLONESHOT`).
//! - **Interest is readable and/or writable only**; hang-up and error conditions are reported
//!   whatever the interest, even an empty one ([`Interest::NONE`] keeps a descriptor
//!   registered while it wants nothing).
//! - **Timeouts round up** to whole milliseconds (a 0.3 ms timeout waits 1 ms, never 0, so the
//!   loop does not spin just before a timer is due) and are capped at `i32::MAX` ms.
//!
//! The invariant to keep: **deregister a descriptor before closing it.** epoll forgets a
//! closed descriptor on its own, but poll(2) would keep reporting it as invalid
//! ([`Event::error`]), a new descriptor reusing its number could not be registered, and
//! io_uring's armed poll would keep the file open.

mod epoll;
mod poll;
mod uring;
mod uring_buffers;

pub(crate) use uring::{Received, Taken};

/// What a stream socket the ring receives for is (see [`Poller::register_stream`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RingRole {
    /// A connection: the ring receives its bytes and sends its output.
    Connection,
    /// A listening socket: the ring accepts its connections.
    Listener,
}
pub(crate) use uring_buffers::RingBuffer;

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::str::FromStr;
use std::time::Duration;

pub use crate::error::UnknownBackend;

/// The environment variable [`BackendKind::from_env`] reads.
const ENV_VAR: &str = "TORSION_REACTOR";

/// Which readiness backend a reactor uses (Twisted: which reactor is installed).
///
/// # Examples
///
/// ```
/// use torsion::reactor::backend::BackendKind;
///
/// let kind: BackendKind = "Poll".parse().unwrap();
/// assert_eq!(kind, BackendKind::Poll);
/// assert_eq!(kind.name(), "poll");
/// assert!("kqueue".parse::<BackendKind>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Linux `epoll(7)`, level-triggered: the default (Twisted's `epollreactor`).
    Epoll,
    /// POSIX `poll(2)`: the portable fallback, O(n) in the registered descriptors per wait
    /// (Twisted's `pollreactor`).
    Poll,
    /// Linux io_uring (5.11 or later; 6.0 for its completion-based connections): stream
    /// connections receive and send through the ring, other descriptors are polled in it,
    /// and all of it goes with the wait in one `io_uring_enter` per loop iteration. Probed when a reactor is built:
    /// where the kernel or a seccomp profile refuses io_uring, building fails with a clear
    /// error; [`BackendKind::auto`] falls back to epoll instead.
    IoUring,
}

impl BackendKind {
    /// Every backend, default first: what the test suite iterates over.
    pub const ALL: [BackendKind; 3] = [BackendKind::Epoll, BackendKind::Poll, BackendKind::IoUring];

    /// The backend's name, as `TORSION_REACTOR` and `--reactor` spell it: `"epoll"`, `"poll"`,
    /// `"io_uring"`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Epoll => "epoll",
            BackendKind::Poll => "poll",
            BackendKind::IoUring => "io_uring",
        }
    }

    /// Whether this backend can run here: `Ok` for epoll and poll, and for io_uring when a
    /// ring can be set up with the features the backend needs; otherwise the error building
    /// a reactor on it would give (the kernel or a seccomp profile refusing io_uring).
    ///
    /// # Errors
    ///
    /// The backend's creation error.
    pub fn probe(self) -> io::Result<()> {
        Poller::new(self).map(drop)
    }

    /// io_uring where it can run, and epoll otherwise, logging once at info level why
    /// io_uring could not be used: what `TORSION_REACTOR=auto` and `--reactor auto` pick.
    pub fn auto() -> BackendKind {
        match BackendKind::IoUring.probe() {
            Ok(()) => BackendKind::IoUring,
            Err(err) => {
                tracing::info!(target: "torsion::reactor", "using epoll: {err}");
                BackendKind::Epoll
            }
        }
    }

    /// The backend named by the environment variable `TORSION_REACTOR`, if it is set.
    ///
    /// Returns `Ok(None)` when the variable is unset or empty (the caller then uses
    /// [`default_for_platform`](Self::default_for_platform)). The name is matched as
    /// [`FromStr`] does, ignoring case and surrounding white space; `auto` is resolved by
    /// [`auto`](Self::auto).
    ///
    /// # Errors
    ///
    /// [`UnknownBackend`] when the variable names no backend (or is not valid UTF-8).
    pub fn from_env() -> Result<Option<BackendKind>, UnknownBackend> {
        Self::from_env_value(std::env::var_os(ENV_VAR).as_deref())
    }

    /// [`from_env`](Self::from_env) on a given value, so tests need not mutate the
    /// environment.
    fn from_env_value(
        value: Option<&std::ffi::OsStr>,
    ) -> Result<Option<BackendKind>, UnknownBackend> {
        let Some(value) = value else {
            return Ok(None);
        };
        let Some(text) = value.to_str() else {
            return Err(UnknownBackend(value.to_string_lossy().into_owned()));
        };
        let text = text.trim();
        if text.is_empty() {
            Ok(None)
        } else if text.eq_ignore_ascii_case("auto") {
            Ok(Some(BackendKind::auto()))
        } else {
            text.parse().map(Some)
        }
    }

    /// The backend used when none is asked for: [`Epoll`](BackendKind::Epoll) on Linux, as
    /// Twisted's `default` reactor picks `epollreactor` there.
    pub fn default_for_platform() -> BackendKind {
        BackendKind::Epoll
    }
}

impl FromStr for BackendKind {
    type Err = UnknownBackend;

    /// Parses `"epoll"`, `"poll"` or `"io_uring"` (also `"io-uring"`), ignoring ASCII case.
    /// `"auto"` is not a backend: [`BackendKind::from_env`] and the runner resolve it with
    /// [`BackendKind::auto`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("io-uring") {
            return Ok(BackendKind::IoUring);
        }
        BackendKind::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownBackend(s.to_owned()))
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a registered descriptor waits for (Twisted's `addReader` / `addWriter`).
///
/// Hang-up and error conditions are reported whatever the interest, even with
/// [`Interest::NONE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interest {
    /// Report when a read would not block (`EPOLLIN` / `POLLIN`).
    pub readable: bool,
    /// Report when a write would not block (`EPOLLOUT` / `POLLOUT`).
    pub writable: bool,
}

impl Interest {
    /// Neither readable nor writable: registered, but only hang-ups and errors are reported.
    pub const NONE: Interest = Interest {
        readable: false,
        writable: false,
    };
    /// Readable only (a reader).
    pub const READABLE: Interest = Interest {
        readable: true,
        writable: false,
    };
    /// Writable only (a writer).
    pub const WRITABLE: Interest = Interest {
        readable: false,
        writable: true,
    };
    /// Readable and writable (both a reader and a writer).
    pub const BOTH: Interest = Interest {
        readable: true,
        writable: true,
    };

    /// Whether this is [`Interest::NONE`].
    pub const fn is_none(self) -> bool {
        !self.readable && !self.writable
    }
}

/// The readiness of one registered descriptor, as one wait reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The token the descriptor was registered with.
    pub token: u64,
    /// A read would not block: data, end of file, or a pending connection (`EPOLLIN` /
    /// `POLLIN`).
    pub readable: bool,
    /// A write would not block (`EPOLLOUT` / `POLLOUT`).
    pub writable: bool,
    /// The peer hung up (`EPOLLHUP` / `POLLHUP`): a pipe's other end closed, or a socket shut
    /// down both ways. Unread data may remain: read until end of file.
    pub hangup: bool,
    /// An error is pending on the descriptor (`EPOLLERR` / `POLLERR`), or, with poll(2), the
    /// descriptor is not open (`POLLNVAL`).
    pub error: bool,
}

/// The poller a reactor waits in: an enum over the backends, so dispatch is static.
///
/// Single-threaded: every method takes `&mut self`. Other threads interrupt a wait through the
/// reactor's `Waker`, registered here like any descriptor.
#[derive(Debug)]
pub(crate) enum Poller {
    /// epoll(7).
    Epoll(epoll::EpollPoller),
    /// poll(2).
    Poll(poll::PollPoller),
    /// io_uring.
    IoUring(Box<uring::UringPoller>),
}

impl Poller {
    /// Creates a poller of the given kind.
    ///
    /// # Errors
    ///
    /// The backend's creation error, e.g. `EMFILE` from `epoll_create1`.
    pub(crate) fn new(kind: BackendKind) -> io::Result<Poller> {
        Ok(match kind {
            BackendKind::Epoll => Poller::Epoll(epoll::EpollPoller::new()?),
            BackendKind::Poll => Poller::Poll(poll::PollPoller::new()),
            BackendKind::IoUring => Poller::IoUring(Box::new(uring::UringPoller::new()?)),
        })
    }

    /// Which backend this is.
    pub(crate) fn kind(&self) -> BackendKind {
        match self {
            Poller::Epoll(_) => BackendKind::Epoll,
            Poller::Poll(_) => BackendKind::Poll,
            Poller::IoUring(_) => BackendKind::IoUring,
        }
    }

    /// Starts watching descriptor number `fd`, reporting its readiness under `token`. The
    /// poller records the number only; it is up to the caller that it stays open while
    /// registered.
    ///
    /// # Errors
    ///
    /// `EEXIST` if `fd` is already registered; with epoll, `EPERM` for a descriptor epoll
    /// cannot watch (a regular file or a directory).
    pub(crate) fn register(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        match self {
            Poller::Epoll(p) => p.register(fd, token, interest),
            Poller::Poll(p) => p.register(fd, token, interest),
            Poller::IoUring(p) => p.register(fd, token, interest),
        }
    }

    /// Starts watching the stream socket `fd` (a connection's, which nothing but its
    /// transport reads and writes, or a listening one, which nothing but its port accepts
    /// on), as [`register`](Self::register) does. On io_uring its input (bytes, or
    /// connections) is then received on the ring and taken with
    /// [`take_received`](Self::take_received); the other backends watch it as any
    /// descriptor.
    ///
    /// # Errors
    ///
    /// As [`register`](Self::register).
    pub(crate) fn register_stream(
        &mut self,
        fd: RawFd,
        token: u64,
        interest: Interest,
        role: RingRole,
    ) -> io::Result<()> {
        match self {
            Poller::Epoll(p) => p.register(fd, token, interest),
            Poller::Poll(p) => p.register(fd, token, interest),
            Poller::IoUring(p) => p.register_stream(fd, token, interest, role),
        }
    }

    /// The next thing the stream socket `fd` received on the ring, or
    /// [`Taken::NotOnRing`] when its reader is to `recv` itself (every backend but
    /// io_uring, and descriptors not registered as streams).
    pub(crate) fn take_received(&mut self, fd: RawFd) -> Taken {
        match self {
            Poller::IoUring(p) => p.take_received(fd),
            Poller::Epoll(_) | Poller::Poll(_) => Taken::NotOnRing,
        }
    }

    /// Sends on the ring for the stream `fd` the bytes `fill` writes: `Ok(false)` when the
    /// caller is to send itself (every backend but io_uring). See
    /// `UringPoller::send`.
    ///
    /// # Errors
    ///
    /// `EBUSY` while the stream's last send has not ended or its end was not taken.
    pub(crate) fn send(&mut self, fd: RawFd, fill: impl FnOnce(&mut Vec<u8>)) -> io::Result<bool> {
        match self {
            Poller::IoUring(p) => p.send(fd, fill),
            Poller::Epoll(_) | Poller::Poll(_) => Ok(false),
        }
    }

    /// Whether `fd` is a stream socket on the ring.
    pub(crate) fn on_ring(&self, fd: RawFd) -> bool {
        match self {
            Poller::IoUring(p) => p.on_ring(fd),
            Poller::Epoll(_) | Poller::Poll(_) => false,
        }
    }

    /// How the stream `fd`'s last send on the ring ended, once it has (taken once).
    pub(crate) fn take_sent(&mut self, fd: RawFd) -> Option<io::Result<usize>> {
        match self {
            Poller::IoUring(p) => p.take_sent(fd),
            Poller::Epoll(_) | Poller::Poll(_) => None,
        }
    }

    /// Whether the stream `fd` has a send on the ring that has not ended, or whose end was
    /// not taken.
    pub(crate) fn sending(&self, fd: RawFd) -> bool {
        match self {
            Poller::IoUring(p) => p.sending(fd),
            Poller::Epoll(_) | Poller::Poll(_) => false,
        }
    }

    /// Puts back what [`take_received`](Self::take_received) gave, to be taken first next
    /// time.
    pub(crate) fn untake(&mut self, fd: RawFd, item: Received) {
        if let Poller::IoUring(p) = self {
            p.untake(fd, item);
        }
    }

    /// Gives a receive buffer from [`take_received`](Self::take_received) back.
    pub(crate) fn give_back(&mut self, buffer: RingBuffer) {
        if let Poller::IoUring(p) = self {
            p.give_back(buffer);
        }
    }

    /// Changes the token and interest of a registered `fd`. [`Interest::NONE`] keeps it
    /// registered while it wants nothing.
    ///
    /// # Errors
    ///
    /// `ENOENT` if `fd` is not registered.
    pub(crate) fn reregister(
        &mut self,
        fd: RawFd,
        token: u64,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            Poller::Epoll(p) => p.reregister(fd, token, interest),
            Poller::Poll(p) => p.reregister(fd, token, interest),
            Poller::IoUring(p) => p.reregister(fd, token, interest),
        }
    }

    /// Stops watching `fd`. Do it before closing `fd`.
    ///
    /// # Errors
    ///
    /// `ENOENT` if `fd` is not registered.
    pub(crate) fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        match self {
            Poller::Epoll(p) => p.deregister(fd),
            Poller::Poll(p) => p.deregister(fd),
            Poller::IoUring(p) => p.deregister(fd),
        }
    }

    /// Waits for readiness. timeout `None` blocks; `Some(Duration::ZERO)` polls. Clears
    /// `events`, then fills it.
    ///
    /// A timeout is rounded up to whole milliseconds and capped at `i32::MAX` ms. A wait
    /// interrupted by a signal (`EINTR`) returns `Ok(())` with no events.
    ///
    /// # Errors
    ///
    /// The backend's wait error (`EINVAL`, `ENOMEM`...), never `EINTR`.
    pub(crate) fn wait(
        &mut self,
        events: &mut Vec<Event>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        match self {
            Poller::Epoll(p) => p.wait(events, timeout),
            Poller::Poll(p) => p.wait(events, timeout),
            Poller::IoUring(p) => p.wait(events, timeout),
        }
    }
}

/// A wait's timeout in the milliseconds `epoll_wait` and `poll` take: `-1` blocks, and any
/// other timeout is rounded **up** to whole milliseconds and capped at `i32::MAX`.
fn timeout_millis(timeout: Option<Duration>) -> i32 {
    match timeout {
        None => -1,
        Some(timeout) => {
            let millis = timeout.as_nanos().div_ceil(1_000_000);
            i32::try_from(millis).unwrap_or(i32::MAX)
        }
    }
}

/// Whether a per-backend test on `kind` should be skipped because the backend cannot run
/// here (io_uring refused by the kernel or a seccomp profile), saying so on stderr. With
/// `TORSION_REQUIRE_IO_URING=1` (as `.ci/run` sets) an unavailable backend fails the test
/// instead, so CI cannot pass by skipping.
#[doc(hidden)]
pub fn __skip_unavailable(kind: BackendKind) -> bool {
    let Err(err) = kind.probe() else {
        return false;
    };
    let required = std::env::var_os("TORSION_REQUIRE_IO_URING").is_some_and(|v| v == "1");
    assert!(
        !required,
        "the {kind} backend is required but cannot run: {err}"
    );
    eprintln!("skipped on {kind}: {err}");
    true
}

/// One `#[test]` function per reactor backend, named after it (`epoll`, `poll`, `io_uring`), each
/// running `$body` with `$kind` bound to that [`BackendKind`]: the one list of backends the
/// whole test suite iterates over (`#[torsion::test(all_backends)]`, the integration
/// tests' `reactor_test!` and this module's tests all expand to it). A new backend is one
/// more line here.
#[doc(hidden)]
#[macro_export]
macro_rules! __test_each_backend {
    ($(#[$meta:meta])* |$kind:ident| $body:block) => {
        $(#[$meta])*
        #[test]
        fn epoll() {
            let $kind = $crate::reactor::backend::BackendKind::Epoll;
            $body
        }
        $(#[$meta])*
        #[test]
        fn poll() {
            let $kind = $crate::reactor::backend::BackendKind::Poll;
            $body
        }
        $(#[$meta])*
        #[test]
        fn io_uring() {
            let $kind = $crate::reactor::backend::BackendKind::IoUring;
            if $crate::reactor::backend::__skip_unavailable($kind) {
                return;
            }
            $body
        }
    };
}

/// This module's tests, once per backend:
///
/// ```ignore
/// every_backend! {
///     fn readable_after_write(kind: BackendKind) { let poller = Poller::new(kind)?; ... }
/// }
/// ```
#[cfg(test)]
macro_rules! every_backend {
    ($(
        $(#[$meta:meta])*
        fn $name:ident($kind:ident: BackendKind) $body:block
    )*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($kind: $crate::reactor::backend::BackendKind) $body

            $crate::__test_each_backend! { $(#[$meta])* |kind| { body(kind) } }
        }
    )*};
}
#[cfg(test)]
pub(crate) use every_backend;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::thread;
    use std::time::Instant;

    const T1: u64 = 1;
    const T2: u64 = 2;

    fn poller(kind: BackendKind) -> Poller {
        let poller = Poller::new(kind).expect("create poller");
        assert_eq!(poller.kind(), kind);
        poller
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        rustix::pipe::pipe().expect("pipe")
    }

    fn write_byte(fd: &OwnedFd) {
        rustix::io::write(fd, b"x").expect("write");
    }

    /// Waits without blocking and returns the events.
    fn poll_now(poller: &mut Poller) -> Vec<Event> {
        let mut events = Vec::new();
        poller
            .wait(&mut events, Some(Duration::ZERO))
            .expect("wait");
        events
    }

    /// Waits up to a second, for tests where an event is expected.
    fn wait_some(poller: &mut Poller) -> Vec<Event> {
        let mut events = Vec::new();
        poller
            .wait(&mut events, Some(Duration::from_secs(1)))
            .expect("wait");
        events
    }

    fn only(events: &[Event], token: u64) -> Event {
        assert_eq!(events.len(), 1, "expected one event, got {events:?}");
        assert_eq!(events[0].token, token);
        events[0]
    }

    #[test]
    fn names_parse_case_insensitively() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.name().parse::<BackendKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.name());
        }
        assert_eq!("EPOLL".parse(), Ok(BackendKind::Epoll));
        assert_eq!("Poll".parse(), Ok(BackendKind::Poll));
        assert_eq!(
            "select".parse::<BackendKind>(),
            Err(UnknownBackend("select".into()))
        );
        assert_eq!("".parse::<BackendKind>(), Err(UnknownBackend("".into())));
        assert_eq!(
            UnknownBackend("kqueue".into()).to_string(),
            "unknown reactor backend `kqueue`: expected epoll, poll, io_uring or auto"
        );
        assert_eq!(BackendKind::default_for_platform(), BackendKind::Epoll);
        assert_eq!(BackendKind::ALL[0], BackendKind::default_for_platform());
    }

    #[test]
    fn env_value_selects_backend() {
        use std::ffi::OsStr;
        assert_eq!(BackendKind::from_env_value(None), Ok(None));
        assert_eq!(BackendKind::from_env_value(Some(OsStr::new(""))), Ok(None));
        assert_eq!(
            BackendKind::from_env_value(Some(OsStr::new("  "))),
            Ok(None)
        );
        assert_eq!(
            BackendKind::from_env_value(Some(OsStr::new("poll"))),
            Ok(Some(BackendKind::Poll))
        );
        assert_eq!(
            BackendKind::from_env_value(Some(OsStr::new(" Epoll\n"))),
            Ok(Some(BackendKind::Epoll))
        );
        assert_eq!(
            BackendKind::from_env_value(Some(OsStr::new("iocp"))),
            Err(UnknownBackend("iocp".into()))
        );
        // Whatever the test environment holds, from_env agrees with its helper.
        assert_eq!(
            BackendKind::from_env(),
            BackendKind::from_env_value(std::env::var_os(ENV_VAR).as_deref())
        );
    }

    #[test]
    fn timeouts_round_up_to_whole_milliseconds() {
        assert_eq!(timeout_millis(None), -1);
        assert_eq!(timeout_millis(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_millis(Some(Duration::from_nanos(1))), 1);
        assert_eq!(timeout_millis(Some(Duration::from_micros(300))), 1);
        assert_eq!(timeout_millis(Some(Duration::from_millis(1))), 1);
        assert_eq!(
            timeout_millis(Some(Duration::from_millis(1) + Duration::from_nanos(1))),
            2
        );
        assert_eq!(timeout_millis(Some(Duration::from_millis(20))), 20);
        assert_eq!(
            timeout_millis(Some(Duration::from_millis(i32::MAX as u64))),
            i32::MAX
        );
        assert_eq!(
            timeout_millis(Some(Duration::from_millis(i32::MAX as u64 + 1))),
            i32::MAX
        );
        assert_eq!(timeout_millis(Some(Duration::MAX)), i32::MAX);
    }

    #[test]
    fn interest_constants() {
        assert_eq!(Interest::default(), Interest::NONE);
        assert!(Interest::NONE.is_none());
        assert!(!Interest::READABLE.is_none());
        assert_eq!(
            Interest::BOTH,
            Interest {
                readable: Interest::READABLE.readable,
                writable: Interest::WRITABLE.writable,
            }
        );
    }

    every_backend! {
        fn pipe_not_readable_before_write(kind: BackendKind) {
            let mut poller = poller(kind);
            let (r, _w) = pipe();
            poller.register(r.as_raw_fd(), T1, Interest::READABLE).unwrap();
            assert_eq!(poll_now(&mut poller), []);
        }

        fn pipe_readable_after_write(kind: BackendKind) {
            let mut poller = poller(kind);
            let (r, w) = pipe();
            poller.register(r.as_raw_fd(), T1, Interest::READABLE).unwrap();
            write_byte(&w);
            let event = only(&wait_some(&mut poller), T1);
            assert!(event.readable);
            assert!(!event.writable && !event.hangup && !event.error, "{event:?}");
        }

        fn socket_writable_at_once(kind: BackendKind) {
            let mut poller = poller(kind);
            let (a, _b) = UnixStream::pair().unwrap();
            poller.register(a.as_raw_fd(), T1, Interest::WRITABLE).unwrap();
            let event = only(&poll_now(&mut poller), T1);
            assert!(event.writable && !event.readable, "{event:?}");
        }

        fn zero_timeout_returns_at_once(kind: BackendKind) {
            let mut poller = poller(kind);
            let (r, _w) = pipe();
            poller.register(r.as_raw_fd(), T1, Interest::READABLE).unwrap();
            let mut events = vec![Event {
                token: 99,
                readable: true,
                writable: true,
                hangup: true,
                error: true,
            }];
            let start = Instant::now();
            poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
            assert!(start.elapsed() < Duration::from_millis(500));
            assert_eq!(events, [], "wait clears the events it is given");
        }

        fn timeout_waits_at_least_its_duration(kind: BackendKind) {
            let mut poller = poller(kind);
            let (r, _w) = pipe();
            poller.register(r.as_raw_fd(), T1, Interest::READABLE).unwrap();
            let mut events = Vec::new();
            let start = Instant::now();
            poller.wait(&mut events, Some(Duration::from_millis(20))).unwrap();
            let elapsed = start.elapsed();
            assert_eq!(events, []);
            assert!(elapsed >= Duration::from_millis(20), "{elapsed:?}");
            assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
        }

        fn sub_millisecond_timeout_still_waits(kind: BackendKind) {
            let mut poller = poller(kind);
            let mut events = Vec::new();
            let start = Instant::now();
            poller.wait(&mut events, Some(Duration::from_micros(300))).unwrap();
            let elapsed = start.elapsed();
            assert!(elapsed >= Duration::from_micros(300), "{elapsed:?}");
            assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
        }

        fn pipe_hangup_when_writer_closes(kind: BackendKind) {
            let mut poller = poller(kind);
            let (r, w) = pipe();
            poller.register(r.as_raw_fd(), T1, Interest::READABLE).unwrap();
            drop(w);
            let event = only(&wait_some(&mut poller), T1);
            assert!(event.hangup, "{event:?}");
        }

        fn socket_readable_and_hangup_when_peer_closes(kind: BackendKind) {
            let mut poller = poller(kind);
            let (a, b) = UnixStream::pair().unwrap();
            poller.register(a.as_raw_fd(), T1, Interest::READABLE).unwrap();
            assert_eq!(poll_now(&mut poller), []);
            drop(b);
            let event = only(&wait_some(&mut poller), T1);
            assert!(event.readable && event.hangup, "{event:?}");
            let mut buf = [0u8; 8];
            assert_eq!((&a).read(&mut buf).unwrap(), 0, "end of file");
        }

        fn hangup_reported_without_interest(kind: BackendKind) {
            let mut poller = poller(kind);
            let (r, w) = pipe();
            poller.register(r.as_raw_fd(), T1, Interest::NONE).unwrap();
            write_byte(&w);
            assert_eq!(poll_now(&mut poller), [], "data alone is not reported");
            drop(w);
            let event = only(&wait_some(&mut poller), T1);
            assert!(event.hangup && !event.readable, "{event:?}");
        }

        fn deregister_stops_events(kind: BackendKind) {
            let mut poller = poller(kind);
            let (r, w) = pipe();
            poller.register(r.as_raw_fd(), T1, Interest::READABLE).unwrap();
            write_byte(&w);
            only(&wait_some(&mut poller), T1);
            poller.deregister(r.as_raw_fd()).unwrap();
            assert_eq!(poll_now(&mut poller), []);
            drop(w);
            assert_eq!(poll_now(&mut poller), [], "not even a hang-up");
            let err = poller.deregister(r.as_raw_fd()).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
            // It can be registered again afterwards.
            poller.register(r.as_raw_fd(), T2, Interest::READABLE).unwrap();
            let event = only(&wait_some(&mut poller), T2);
            assert!(event.readable && event.hangup, "{event:?}");
        }

        fn reregister_from_readable_to_writable(kind: BackendKind) {
            let mut poller = poller(kind);
            let (a, mut b) = UnixStream::pair().unwrap();
            poller.register(a.as_raw_fd(), T1, Interest::READABLE).unwrap();
            assert_eq!(poll_now(&mut poller), [], "writable is not asked for");
            poller.reregister(a.as_raw_fd(), T2, Interest::WRITABLE).unwrap();
            let event = only(&poll_now(&mut poller), T2);
            assert!(event.writable && !event.readable, "{event:?}");
            b.write_all(b"hello").unwrap();
            let event = only(&poll_now(&mut poller), T2);
            assert!(!event.readable, "readable is no longer asked for: {event:?}");
            poller.reregister(a.as_raw_fd(), T1, Interest::BOTH).unwrap();
            let event = only(&poll_now(&mut poller), T1);
            assert!(event.readable && event.writable, "{event:?}");
            poller.reregister(a.as_raw_fd(), T1, Interest::NONE).unwrap();
            assert_eq!(poll_now(&mut poller), []);
        }

        fn reregister_unknown_fd_fails(kind: BackendKind) {
            let mut poller = poller(kind);
            let (r, _w) = pipe();
            let err = poller.reregister(r.as_raw_fd(), T1, Interest::READABLE).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        }

        fn level_triggered_reports_unread_data_again(kind: BackendKind) {
            let mut poller = poller(kind);
            let (r, w) = pipe();
            poller.register(r.as_raw_fd(), T1, Interest::READABLE).unwrap();
            write_byte(&w);
            write_byte(&w);
            for _ in 0..3 {
                assert!(only(&wait_some(&mut poller), T1).readable);
            }
            let mut buf = [0u8; 1];
            rustix::io::read(&r, &mut buf).unwrap();
            assert!(only(&wait_some(&mut poller), T1).readable, "one byte left");
            rustix::io::read(&r, &mut buf).unwrap();
            assert_eq!(poll_now(&mut poller), []);
        }

        fn double_register_is_eexist(kind: BackendKind) {
            let mut poller = poller(kind);
            let (r, _w) = pipe();
            poller.register(r.as_raw_fd(), T1, Interest::READABLE).unwrap();
            let err = poller.register(r.as_raw_fd(), T2, Interest::WRITABLE).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        }

        fn many_fds_all_reported(kind: BackendKind) {
            let mut poller = poller(kind);
            let mut pipes = Vec::new();
            for token in 0..300u64 {
                let (r, w) = pipe();
                poller.register(r.as_raw_fd(), token, Interest::READABLE).unwrap();
                pipes.push((r, w));
            }
            assert_eq!(poll_now(&mut poller), []);
            for (_, w) in &pipes {
                write_byte(w);
            }
            let mut tokens: Vec<u64> = wait_some(&mut poller)
                .iter()
                .inspect(|event| assert!(event.readable, "{event:?}"))
                .map(|event| event.token)
                .collect();
            tokens.sort_unstable();
            assert_eq!(tokens, (0..300).collect::<Vec<_>>());
            // Deregister every other one; the rest are still reported.
            for (r, _) in pipes.iter().step_by(2) {
                poller.deregister(r.as_raw_fd()).unwrap();
            }
            let mut tokens: Vec<u64> = wait_some(&mut poller).iter().map(|e| e.token).collect();
            tokens.sort_unstable();
            assert_eq!(tokens, (1..300).step_by(2).collect::<Vec<_>>());
        }

        fn signal_interrupts_wait_with_no_events(kind: BackendKind) {
            use std::os::unix::thread::JoinHandleExt;
            use std::sync::Arc;
            use std::sync::atomic::{AtomicBool, Ordering};

            // SAFETY: the handler does nothing, which is async-signal-safe. Its only purpose
            // is that SIGUSR1 interrupts a blocked system call instead of killing the process.
            unsafe { signal_hook_registry::register(libc::SIGUSR1, || {}) }.unwrap();
            let done = Arc::new(AtomicBool::new(false));
            let waiter = thread::spawn({
                let done = Arc::clone(&done);
                move || {
                    let mut poller = poller(kind);
                    let (r, _w) = pipe();
                    poller.register(r.as_raw_fd(), T1, Interest::READABLE).unwrap();
                    let mut events = Vec::new();
                    let start = Instant::now();
                    let result = poller.wait(&mut events, Some(Duration::from_secs(10)));
                    let elapsed = start.elapsed();
                    done.store(true, Ordering::SeqCst);
                    (result.map_err(|e| e.to_string()), events, elapsed)
                }
            });
            // The signal may land before the thread blocks, so repeat it until the wait ends.
            while !done.load(Ordering::SeqCst) {
                // SAFETY: the thread is not joined yet, so its pthread_t is still valid.
                let rc = unsafe { libc::pthread_kill(waiter.as_pthread_t(), libc::SIGUSR1) };
                assert_eq!(rc, 0);
                thread::sleep(Duration::from_millis(20));
            }
            let (result, events, elapsed) = waiter.join().unwrap();
            assert_eq!(result, Ok(()));
            assert_eq!(events, []);
            assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        }

        fn a_socket_closed_after_deregistering_closes_at_once(kind: BackendKind) {
            let mut poller = poller(kind);
            let (a, mut b) = UnixStream::pair().unwrap();
            poller.register(a.as_raw_fd(), T1, Interest::READABLE).unwrap();
            assert_eq!(poll_now(&mut poller), []);
            poller.deregister(a.as_raw_fd()).unwrap();
            drop(a);
            b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 1];
            assert_eq!(b.read(&mut buf).unwrap(), 0, "the peer sees end of file");
        }

        fn a_reused_descriptor_number_gets_none_of_its_predecessors_events(kind: BackendKind) {
            let mut poller = poller(kind);
            let (mut r, w) = pipe();
            let number = r.as_raw_fd();
            poller.register(number, T1, Interest::READABLE).unwrap();
            assert_eq!(poll_now(&mut poller), []);
            write_byte(&w);
            poller.deregister(number).unwrap();
            // The number now names a new, empty pipe (dup2 replaces the old one in place, so
            // no other thread can take the number in between).
            let (r2, w2) = pipe();
            rustix::io::dup2(&r2, &mut r).unwrap();
            assert_eq!(r.as_raw_fd(), number);
            poller.register(number, T2, Interest::READABLE).unwrap();
            assert_eq!(poll_now(&mut poller), [], "the new pipe is empty");
            write_byte(&w2);
            assert_eq!(only(&wait_some(&mut poller), T2).token, T2);
        }

        fn wait_without_timeout_blocks_until_ready(kind: BackendKind) {
            let mut poller = poller(kind);
            let (r, w) = pipe();
            poller.register(r.as_raw_fd(), T1, Interest::READABLE).unwrap();
            let writer = thread::spawn(move || {
                thread::sleep(Duration::from_millis(30));
                write_byte(&w);
                w
            });
            let mut events = Vec::new();
            let start = Instant::now();
            poller.wait(&mut events, None).unwrap();
            assert!(start.elapsed() >= Duration::from_millis(20));
            assert!(only(&events, T1).readable);
            drop(writer.join().unwrap());
        }
    }
}
