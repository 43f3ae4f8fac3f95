//! The poll(2) backend, the portable fallback (Twisted's `twisted.internet.pollreactor`).
//!
//! The table handed to `poll` is a `Vec<pollfd>`, with each entry's token in a parallel
//! `Vec<u64>` and a `HashMap` from descriptor to index, so register, reregister and
//! deregister are O(1) (deregister swaps the last entry into the hole). A wait is O(n) in the
//! registered descriptors, the price of poll(2).
//!
//! A descriptor with no interest stays in the table with `events == 0`: poll reports
//! `POLLHUP` and `POLLERR` regardless, as epoll does. `POLLNVAL` (the descriptor was closed
//! while registered) is reported as [`Event::error`].
//!
//! Invariant: `fds[i]`, `tokens[i]` and `index[&fds[i].fd] == i` agree for every `i`; the
//! table only changes between waits (`&mut self`, one thread).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{Event, Interest, timeout_millis};

/// The poll(2) table.
pub(crate) struct PollPoller {
    /// What `poll` reads and writes, one entry per registered descriptor.
    fds: Vec<libc::pollfd>,
    /// `tokens[i]` is the token of `fds[i]`.
    tokens: Vec<u64>,
    /// Where each registered descriptor sits in `fds`.
    index: HashMap<RawFd, usize>,
}

impl fmt::Debug for PollPoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PollPoller")
            .field("registered", &self.fds.len())
            .finish_non_exhaustive()
    }
}

impl PollPoller {
    /// Creates an empty table (poll needs no kernel object).
    pub(crate) fn new() -> PollPoller {
        PollPoller {
            fds: Vec::new(),
            tokens: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Adds `fd` to the table; `EEXIST` if it is already there.
    pub(crate) fn register(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        if self.index.contains_key(&fd) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        self.index.insert(fd, self.fds.len());
        self.fds.push(libc::pollfd {
            fd,
            events: events(interest),
            revents: 0,
        });
        self.tokens.push(token);
        Ok(())
    }

    /// Changes `fd`'s token and interest; `ENOENT` if it is not in the table.
    pub(crate) fn reregister(
        &mut self,
        fd: RawFd,
        token: u64,
        interest: Interest,
    ) -> io::Result<()> {
        let i = self.position(fd)?;
        self.fds[i].events = events(interest);
        self.tokens[i] = token;
        Ok(())
    }

    /// Removes `fd` from the table, moving the last entry into its place; `ENOENT` if it is
    /// not there.
    pub(crate) fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        let i = self.position(fd)?;
        self.index.remove(&fd);
        self.fds.swap_remove(i);
        self.tokens.swap_remove(i);
        if let Some(moved) = self.fds.get(i) {
            self.index.insert(moved.fd, i);
        }
        Ok(())
    }

    /// `fd`'s index in the table, or `ENOENT`.
    fn position(&self, fd: RawFd) -> io::Result<usize> {
        self.index
            .get(&fd)
            .copied()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }

    /// `poll`: clears `events`, then fills it with what the wait reports.
    pub(crate) fn wait(
        &mut self,
        events: &mut Vec<Event>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        events.clear();
        let millis = timeout_millis(timeout);
        // `nfds_t` is an unsigned long on Linux: a Vec's length always fits.
        let nfds = self.fds.len() as libc::nfds_t;
        // rustix's `poll` wants a `BorrowedFd` per entry, which would make the table borrow
        // every descriptor it holds; `libc::pollfd` keeps plain descriptor numbers instead.
        // SAFETY: the pointer and length describe `self.fds`, an initialised array of
        // `pollfd` that nothing else touches during the call; `poll` only writes `revents`
        // within it. An invalid descriptor number is not unsafe: poll reports it as POLLNVAL.
        let ready = unsafe { libc::poll(self.fds.as_mut_ptr(), nfds, millis) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            return if err.raw_os_error() == Some(libc::EINTR) {
                Ok(())
            } else {
                Err(err)
            };
        }

        let mut left = ready as usize;
        events.reserve(left);
        for (pollfd, &token) in self.fds.iter().zip(&self.tokens) {
            if left == 0 {
                break;
            }
            let revents = pollfd.revents;
            if revents == 0 {
                continue;
            }
            left -= 1;
            events.push(Event {
                token,
                readable: revents & libc::POLLIN != 0,
                writable: revents & libc::POLLOUT != 0,
                hangup: revents & libc::POLLHUP != 0,
                error: revents & (libc::POLLERR | libc::POLLNVAL) != 0,
            });
        }
        Ok(())
    }
}

/// The poll events for an interest: `POLLIN` and/or `POLLOUT` (hang-ups and errors need no
/// asking).
fn events(interest: Interest) -> libc::c_short {
    let mut events = 0;
    if interest.readable {
        events |= libc::POLLIN;
    }
    if interest.writable {
        events |= libc::POLLOUT;
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, OwnedFd};

    fn pipe() -> (OwnedFd, OwnedFd) {
        rustix::pipe::pipe().expect("pipe")
    }

    /// Checks the invariant between the table, the tokens and the index.
    fn assert_consistent(poller: &PollPoller) {
        assert_eq!(poller.fds.len(), poller.tokens.len());
        assert_eq!(poller.fds.len(), poller.index.len());
        for (i, pollfd) in poller.fds.iter().enumerate() {
            assert_eq!(poller.index[&pollfd.fd], i);
        }
    }

    fn tokens_ready(poller: &mut PollPoller) -> Vec<u64> {
        let mut events = Vec::new();
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        let mut tokens: Vec<u64> = events.iter().map(|e| e.token).collect();
        tokens.sort_unstable();
        tokens
    }

    #[test]
    fn deregister_swaps_last_entry_into_the_hole() {
        let mut poller = PollPoller::new();
        let pipes: Vec<_> = (0..4).map(|_| pipe()).collect();
        for (token, (r, w)) in (0u64..).zip(&pipes) {
            poller
                .register(r.as_raw_fd(), token, Interest::READABLE)
                .unwrap();
            rustix::io::write(w, b"x").unwrap();
        }
        assert_consistent(&poller);
        assert_eq!(tokens_ready(&mut poller), [0, 1, 2, 3]);

        poller.deregister(pipes[1].0.as_raw_fd()).unwrap();
        assert_consistent(&poller);
        assert_eq!(
            poller.fds[1].fd,
            pipes[3].0.as_raw_fd(),
            "last moved into the hole"
        );
        assert_eq!(tokens_ready(&mut poller), [0, 2, 3]);

        // The moved entry can still be changed and removed through the index.
        poller
            .reregister(pipes[3].0.as_raw_fd(), 30, Interest::READABLE)
            .unwrap();
        assert_eq!(tokens_ready(&mut poller), [0, 2, 30]);
        poller.deregister(pipes[3].0.as_raw_fd()).unwrap();
        poller.deregister(pipes[0].0.as_raw_fd()).unwrap();
        assert_consistent(&poller);
        assert_eq!(tokens_ready(&mut poller), [2]);
        poller.deregister(pipes[2].0.as_raw_fd()).unwrap();
        assert_consistent(&poller);
        assert!(poller.fds.is_empty());
        assert_eq!(tokens_ready(&mut poller), Vec::<u64>::new());
    }

    #[test]
    fn interest_maps_to_poll_events() {
        assert_eq!(events(Interest::NONE), 0);
        assert_eq!(events(Interest::READABLE), libc::POLLIN);
        assert_eq!(events(Interest::WRITABLE), libc::POLLOUT);
        assert_eq!(events(Interest::BOTH), libc::POLLIN | libc::POLLOUT);
    }

    #[test]
    fn descriptor_not_open_is_reported_as_error() {
        // What a descriptor closed without deregistering looks like. A number above the
        // process's descriptor limit is never open, so no other test can race this one.
        let not_open: RawFd = 1 << 30;
        let mut poller = PollPoller::new();
        let (r, _w) = pipe();
        poller
            .register(r.as_raw_fd(), 1, Interest::READABLE)
            .unwrap();
        poller.index.insert(not_open, poller.fds.len());
        poller.fds.push(libc::pollfd {
            fd: not_open,
            events: events(Interest::READABLE),
            revents: 0,
        });
        poller.tokens.push(7);
        assert_consistent(&poller);

        let mut events = Vec::new();
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        let event = events[0];
        assert_eq!(event.token, 7);
        assert!(event.error && !event.readable && !event.hangup, "{event:?}");
    }
}
