//! Waking the reactor from other threads (the self-pipe of Twisted's `_Waker` in
//! `twisted.internet.posixbase`, as an eventfd).
//!
//! The reactor registers [`Waker::as_fd`] with its poller under a reserved token; any thread
//! calls [`Waker::wake`] to make a blocked wait return, and the loop calls [`Waker::drain`]
//! when it sees that token. The eventfd is a counter: a burst of wakes before the loop
//! drains costs one readiness event.
//!
//! Invariant: `wake` never blocks and never fails in a way its caller must handle, so it is
//! safe to call from any thread at any time (`Waker` is `Send + Sync`).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::{EventfdFlags, eventfd};
use rustix::io::Errno;

/// A nonblocking, close-on-exec eventfd that makes the reactor's wait return.
#[derive(Debug)]
pub(crate) struct Waker {
    /// The eventfd: readable while its counter is non-zero.
    fd: OwnedFd,
}

impl Waker {
    /// Creates the eventfd, counter at zero.
    ///
    /// # Errors
    ///
    /// `EMFILE`, `ENFILE` or `ENOMEM` from `eventfd2`.
    pub(crate) fn new() -> io::Result<Waker> {
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Waker { fd })
    }

    /// The descriptor to register with the poller, for readable interest.
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Wakes from a signal handler: only async-signal-safe work (one `write(2)`), errors
    /// ignored.
    pub(crate) fn wake_from_signal(&self) {
        let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
    }

    /// Makes the poller's wait return (now, or at once next time if it is not waiting).
    ///
    /// Callable from any thread. A full counter (`EAGAIN`) means a wake is already pending,
    /// which is as good.
    pub(crate) fn wake(&self) {
        loop {
            match rustix::io::write(&self.fd, &1u64.to_ne_bytes()) {
                Ok(_) | Err(Errno::AGAIN) => return,
                Err(Errno::INTR) => continue,
                Err(err) => {
                    crate::log::error!(target: "torsion::reactor", "cannot wake the reactor: eventfd write failed: {err}");
                    return;
                }
            }
        }
    }

    /// Resets the counter, so the descriptor is no longer readable until the next wake.
    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 8];
        loop {
            match rustix::io::read(&self.fd, &mut buf) {
                // A read takes the whole counter; the next one reports EAGAIN.
                Ok(_) | Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return,
                Err(err) => {
                    crate::log::error!(target: "torsion::reactor", "cannot drain the reactor's waker: eventfd read failed: {err}");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::backend::{BackendKind, Event, Interest, Poller, every_backend};
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    /// The token the tests register the waker under.
    const WAKER: u64 = u64::MAX;

    const fn assert_send_sync<T: Send + Sync>() {}
    const _: () = assert_send_sync::<Waker>();

    fn setup(kind: BackendKind) -> (Poller, Arc<Waker>) {
        let mut poller = Poller::new(kind).unwrap();
        let waker = Arc::new(Waker::new().unwrap());
        poller
            .register(
                std::os::fd::AsRawFd::as_raw_fd(&waker.as_fd()),
                WAKER,
                Interest::READABLE,
            )
            .unwrap();
        (poller, waker)
    }

    fn poll_now(poller: &mut Poller) -> Vec<Event> {
        let mut events = Vec::new();
        poller
            .wait(&mut events, Some(Duration::ZERO))
            .expect("wait");
        events
    }

    #[test]
    fn descriptor_is_nonblocking_and_close_on_exec() {
        let waker = Waker::new().unwrap();
        let status = rustix::fs::fcntl_getfl(waker.as_fd()).unwrap();
        assert!(status.contains(rustix::fs::OFlags::NONBLOCK));
        let fd_flags = rustix::io::fcntl_getfd(waker.as_fd()).unwrap();
        assert!(fd_flags.contains(rustix::io::FdFlags::CLOEXEC));
        // Draining a waker that was never woken returns at once.
        waker.drain();
    }

    every_backend! {
        fn not_readable_until_woken(kind: BackendKind) {
            let (mut poller, waker) = setup(kind);
            assert_eq!(poll_now(&mut poller), []);
            waker.wake();
            let events = poll_now(&mut poller);
            assert_eq!(events.len(), 1, "{events:?}");
            assert!(events[0].token == WAKER && events[0].readable);
        }

        fn wakes_a_wait_blocked_in_another_thread(kind: BackendKind) {
            let (mut poller, waker) = setup(kind);
            let remote = Arc::clone(&waker);
            let waking = thread::spawn(move || {
                thread::sleep(Duration::from_millis(50));
                remote.wake();
            });
            let start = Instant::now();
            let mut events = Vec::new();
            poller.wait(&mut events, Some(Duration::from_secs(10))).unwrap();
            let elapsed = start.elapsed();
            waking.join().unwrap();
            assert_eq!(events.len(), 1, "{events:?}");
            assert_eq!(events[0].token, WAKER);
            assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        }

        fn drain_then_no_event(kind: BackendKind) {
            let (mut poller, waker) = setup(kind);
            for _ in 0..1000 {
                waker.wake();
            }
            assert_eq!(poll_now(&mut poller).len(), 1, "a burst is one event");
            assert_eq!(poll_now(&mut poller).len(), 1, "still readable until drained");
            waker.drain();
            assert_eq!(poll_now(&mut poller), []);
            waker.wake();
            assert_eq!(poll_now(&mut poller).len(), 1, "wakes again after a drain");
        }

        fn wakes_from_many_threads(kind: BackendKind) {
            let (mut poller, waker) = setup(kind);
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let waker = Arc::clone(&waker);
                    thread::spawn(move || {
                        for _ in 0..100 {
                            waker.wake();
                        }
                    })
                })
                .collect();
            for thread in threads {
                thread.join().unwrap();
            }
            assert_eq!(poll_now(&mut poller).len(), 1);
            waker.drain();
            assert_eq!(poll_now(&mut poller), []);
        }
    }
}
