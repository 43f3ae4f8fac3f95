//! The state machine of a stream transport, without I/O (what Twisted's
//! `abstract.FileDescriptor` keeps beside the socket): the write buffer, the registered
//! producer and its water marks, the read throttle, half-close, lose and abort, and the
//! loss that happens once.
//!
//! A driver owns one [`StreamCore`] and does the I/O: the socket connection
//! (`connection.rs`) sends [`pending`](StreamCore::pending) bytes and reports how many
//! went; the in-memory [`Pump`](crate::testing::Pump) moves them all at once. Each call
//! returns what the driver must then do (pause or resume a producer, stop reading, close),
//! so every driver follows the same rules and a test double behaves as a socket does.
//! TLS, process pipes and stdio are to drive it the same way.
//! [`StringTransport`](crate::testing::StringTransport) does not: like Twisted's, it
//! records what a protocol did and sends nothing, so it has no buffer to drain.
//!
//! Invariant: the core never calls out. It hands producers back to the driver, which calls
//! them after releasing its own borrow of the core.

use std::rc::Rc;

use crate::error::ProducerAlreadyRegistered;
use crate::net::Producer;

/// An idle transport keeps at most this much write-buffer capacity.
const KEEP_CAPACITY: usize = 16 * 1024;

/// What a [`StreamCore::write`] asks of the driver.
pub(crate) struct Written {
    /// Pause this streaming producer: the buffer went over the high-water mark.
    pub(crate) pause: Option<Rc<dyn Producer>>,
    /// Stop reading: the throttle is on and the buffer went over the high-water mark.
    pub(crate) stop_reading: bool,
}

/// What a registration asks of the driver.
pub(crate) enum Registered {
    /// The transport is closed: stop the producer at once.
    Stop,
    /// A pull producer: ask it for its first chunk once the caller has returned, if
    /// [`StreamCore::first_resume`] still says so for this registration number.
    PullFirst(u64),
    /// A push producer: nothing to do until the buffer fills.
    Push,
}

/// What to do once the buffer has emptied, in Twisted's order (`doWrite`).
pub(crate) enum Drained {
    /// Ask the producer for more: a pull producer, or a paused push producer.
    Resume(Rc<dyn Producer>),
    /// `lose_connection` was called: close.
    Close,
    /// `lose_write_connection` was called: shut the sending side.
    ShutWrite,
    /// Nothing.
    Idle,
}

/// The rules of a stream transport, for one connection (see the module doc).
pub(crate) struct StreamCore {
    out: Vec<u8>,
    sent: usize,
    disconnecting: bool,
    aborting: bool,
    lost: bool,
    write_shut_pending: bool,
    write_shut: bool,
    producer: Option<Rc<dyn Producer>>,
    streaming: bool,
    producer_paused: bool,
    /// Counts registrations; the one whose first `resume_producing` is still due, if any.
    registrations: u64,
    first_resume_due: Option<u64>,
    /// `throttle_reading(true)`, and whether the throttle holds reading now.
    throttle: bool,
    throttled: bool,
    high_water: usize,
    low_water: usize,
}

impl StreamCore {
    /// A new open transport's state with the given water marks.
    pub(crate) fn new(high_water: usize, low_water: usize) -> StreamCore {
        StreamCore {
            out: Vec::new(),
            sent: 0,
            disconnecting: false,
            aborting: false,
            lost: false,
            write_shut_pending: false,
            write_shut: false,
            producer: None,
            streaming: false,
            producer_paused: false,
            registrations: 0,
            first_resume_due: None,
            throttle: false,
            throttled: false,
            high_water,
            low_water,
        }
    }

    /// Changes the water marks (the pump's `set_water_marks`).
    pub(crate) fn set_water_marks(&mut self, high: usize, low: usize) {
        self.high_water = high;
        self.low_water = low;
    }

    /// Bytes written and not yet sent.
    pub(crate) fn buffered(&self) -> usize {
        self.out.len() - self.sent
    }

    /// The bytes to send next.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.out[self.sent..]
    }

    /// `n` bytes of [`pending`](StreamCore::pending) went out.
    pub(crate) fn consume(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.out.len());
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
    }

    /// Takes every pending byte at once (a driver that moves whole buffers).
    pub(crate) fn take_pending(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.drain(..self.sent);
        self.sent = 0;
        out
    }

    /// Puts bytes taken with [`take_pending`](StreamCore::take_pending) back in front of
    /// what was written since.
    pub(crate) fn put_back(&mut self, mut taken: Vec<u8>) {
        taken.extend_from_slice(self.pending());
        self.out = taken;
        self.sent = 0;
    }

    /// Buffers `data`; `None` if the transport no longer writes (lost, aborting, or its
    /// sending side shut or shutting), when the bytes are dropped as Twisted drops them.
    pub(crate) fn write(&mut self, data: &[u8]) -> Option<Written> {
        if self.lost || self.aborting || self.write_shut || self.write_shut_pending {
            return None;
        }
        if self.sent > 0 && self.sent >= self.out.len() / 2 {
            // Sent bytes make at least half the buffer: drop them, so that a buffer that
            // never quite drains (a send always in flight) does not grow for ever.
            self.out.drain(..self.sent);
            self.sent = 0;
        }
        self.out.extend_from_slice(data);
        let over = self.buffered() > self.high_water;
        let stop_reading = self.throttle && !self.throttled && over;
        if stop_reading {
            self.throttled = true;
        }
        let pause = self.streaming && !self.producer_paused && over && self.producer.is_some();
        if pause {
            self.producer_paused = true;
        }
        Some(Written {
            pause: pause.then(|| self.producer.clone()).flatten(),
            stop_reading,
        })
    }

    /// After some bytes went out: the paused push producer to resume, once the buffer is
    /// below the low-water mark, and whether the throttle lets reading go again.
    pub(crate) fn progressed(&mut self) -> (Option<Rc<dyn Producer>>, bool) {
        let low = self.buffered() < self.low_water;
        let resume = low && self.producer_paused && self.streaming && self.producer.is_some();
        if resume {
            self.producer_paused = false;
        }
        let release = low && self.throttled;
        if release {
            self.throttled = false;
        }
        (resume.then(|| self.producer.clone()).flatten(), release)
    }

    /// The buffer is empty: releases its memory and says what follows (Twisted's
    /// `doWrite` once `dataBuffer` is empty), and whether the throttle lets reading go.
    pub(crate) fn drained(&mut self) -> (Drained, bool) {
        let release = std::mem::replace(&mut self.throttled, false);
        (self.after_drain(), release)
    }

    fn after_drain(&mut self) -> Drained {
        self.out.clear();
        self.sent = 0;
        if self.out.capacity() > KEEP_CAPACITY {
            self.out.shrink_to(KEEP_CAPACITY);
        }
        if let Some(producer) = &self.producer
            && (!self.streaming || self.producer_paused)
        {
            self.producer_paused = false;
            self.first_resume_due = None;
            return Drained::Resume(producer.clone());
        }
        if self.disconnecting {
            Drained::Close
        } else if self.write_shut_pending && !self.write_shut {
            self.write_shut = true;
            Drained::ShutWrite
        } else {
            Drained::Idle
        }
    }

    /// Registers `producer` (Twisted's `registerProducer`).
    pub(crate) fn register(
        &mut self,
        producer: Rc<dyn Producer>,
        streaming: bool,
    ) -> Result<Registered, ProducerAlreadyRegistered> {
        if self.producer.is_some() {
            return Err(ProducerAlreadyRegistered);
        }
        if self.lost {
            return Ok(Registered::Stop);
        }
        self.producer = Some(producer);
        self.streaming = streaming;
        self.producer_paused = false;
        self.registrations += 1;
        if streaming {
            Ok(Registered::Push)
        } else {
            self.first_resume_due = Some(self.registrations);
            Ok(Registered::PullFirst(self.registrations))
        }
    }

    /// Whether registration `number`'s first resume is still due (not overtaken by an
    /// unregistration, a drain that resumed it, or the loss); claims it if so.
    pub(crate) fn first_resume(&mut self, number: u64) -> Option<Rc<dyn Producer>> {
        if self.lost || self.first_resume_due != Some(number) {
            return None;
        }
        self.first_resume_due = None;
        self.producer.clone()
    }

    /// Unregisters the producer; says whether a close is waiting (so the driver flushes).
    pub(crate) fn unregister(&mut self) -> bool {
        self.producer = None;
        self.producer_paused = false;
        self.first_resume_due = None;
        self.disconnecting
    }

    /// The registered producer, if any, and whether it streams.
    pub(crate) fn producer(&self) -> Option<(Rc<dyn Producer>, bool)> {
        self.producer.clone().map(|p| (p, self.streaming))
    }

    /// `lose_connection`: whether this is news (not lost or closing already).
    pub(crate) fn lose_connection(&mut self) -> bool {
        if self.lost || self.disconnecting {
            return false;
        }
        self.disconnecting = true;
        true
    }

    /// `abort_connection`: drops what is buffered; whether this is news.
    pub(crate) fn abort(&mut self) -> bool {
        if self.lost || self.aborting {
            return false;
        }
        self.aborting = true;
        self.out.clear();
        self.sent = 0;
        true
    }

    /// `lose_write_connection`: whether this is news.
    pub(crate) fn lose_write_connection(&mut self) -> bool {
        if self.lost || self.write_shut_pending {
            return false;
        }
        self.write_shut_pending = true;
        true
    }

    /// A pending `lose_write_connection` with nothing left to send takes effect now;
    /// whether it did (a driver that does not go through [`drained`](StreamCore::drained)).
    pub(crate) fn shut_write_now(&mut self) -> bool {
        let shut = self.write_shut_pending && !self.write_shut && !self.lost && self.out.is_empty();
        if shut {
            self.write_shut = true;
        }
        shut
    }

    /// `throttle_reading(on)`; `true` if reading, held by the throttle, may go again.
    pub(crate) fn set_throttle(&mut self, on: bool) -> bool {
        self.throttle = on;
        !on && std::mem::replace(&mut self.throttled, false)
    }

    /// Whether the throttle holds reading now (as the last write or drain left it).
    pub(crate) fn is_throttled(&self) -> bool {
        self.throttled
    }

    /// Whether the throttle holds reading, judged afresh from the buffer (a driver that
    /// moves whole buffers: the pump).
    pub(crate) fn throttled(&mut self) -> bool {
        if self.throttle {
            if self.buffered() > self.high_water {
                self.throttled = true;
            } else if self.buffered() < self.low_water {
                self.throttled = false;
            }
        }
        self.throttle && self.throttled
    }

    /// A close waits on nothing more: `lose_connection` was called, the buffer is empty,
    /// and no pull or paused push producer must be asked for more first.
    pub(crate) fn ready_to_close(&self) -> bool {
        let producer_done = self.producer.is_none() || (self.streaming && !self.producer_paused);
        self.disconnecting && !self.lost && self.out.is_empty() && producer_done
    }

    /// The transport is lost: the first time, returns `Some` with the producer to stop (if
    /// any); after that `None`, so the loss is handled once.
    pub(crate) fn lose(&mut self) -> Option<Option<Rc<dyn Producer>>> {
        if self.lost {
            return None;
        }
        self.lost = true;
        self.out = Vec::new();
        self.sent = 0;
        self.producer_paused = false;
        self.first_resume_due = None;
        Some(self.producer.take())
    }

    /// Whether the transport was lost.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost
    }

    /// Whether `lose_connection` was called.
    pub(crate) fn is_disconnecting(&self) -> bool {
        self.disconnecting
    }

    /// Whether `abort_connection` was called.
    pub(crate) fn is_aborting(&self) -> bool {
        self.aborting
    }

    /// Whether the sending side is shut.
    pub(crate) fn is_write_shut(&self) -> bool {
        self.write_shut
    }
}
