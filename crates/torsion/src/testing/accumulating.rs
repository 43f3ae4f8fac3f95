//! A protocol that records what happens to it (Twisted's
//! `twisted.internet.testing.AccumulatingProtocol`).
//!
//! The reactor (or a [`Pump`](super::Pump)) owns the protocol's box, so what it records lives
//! in an [`AccumulatorState`] shared through an `Rc`: the test keeps that handle and reads
//! it after the events.
//!
//! Invariant: no `RefCell` of the state is borrowed while a Deferred fires, so a callback may
//! read the state.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;

use crate::defer::{Deferred, Failure, Resolver};
use crate::net::Transport;
use crate::protocol::Protocol;

/// What an [`AccumulatingProtocol`] saw, shared between the protocol and the test.
#[derive(Default)]
pub struct AccumulatorState {
    data: RefCell<Vec<u8>>,
    made: Cell<bool>,
    closed: Cell<bool>,
    read_closed: Cell<bool>,
    write_closed: Cell<bool>,
    closed_reason: RefCell<Option<Failure>>,
    transport: RefCell<Option<Transport>>,
    on_made: RefCell<Vec<Resolver<()>>>,
    on_closed: RefCell<Vec<Resolver<()>>>,
}

impl AccumulatorState {
    /// Everything received so far (Twisted's `data`).
    pub fn data(&self) -> Vec<u8> {
        self.data.borrow().clone()
    }

    /// Takes what was received so far, leaving the record empty.
    pub fn take_data(&self) -> Vec<u8> {
        std::mem::take(&mut self.data.borrow_mut())
    }

    /// Whether `connection_made` ran (Twisted's `made`).
    pub fn made(&self) -> bool {
        self.made.get()
    }

    /// Whether `connection_lost` ran (Twisted's `closed`).
    pub fn closed(&self) -> bool {
        self.closed.get()
    }

    /// The reason `connection_lost` was given (Twisted's `closedReason`).
    pub fn closed_reason(&self) -> Option<Failure> {
        self.closed_reason.borrow().clone()
    }

    /// Whether `read_connection_lost` ran (only with half-close support).
    pub fn read_closed(&self) -> bool {
        self.read_closed.get()
    }

    /// Whether `write_connection_lost` ran.
    pub fn write_closed(&self) -> bool {
        self.write_closed.get()
    }

    /// The transport `connection_made` was given, to write through it (Twisted's
    /// `transport`).
    pub fn transport(&self) -> Option<Transport> {
        self.transport.borrow().clone()
    }

    /// A Deferred that fires once `connection_made` has run, at once if it already has
    /// (Twisted's `factory.protocolConnectionMade`).
    pub fn made_deferred(&self) -> Deferred<()> {
        if self.made.get() {
            return Deferred::succeed(());
        }
        let (resolver, d) = Deferred::new();
        self.on_made.borrow_mut().push(resolver);
        d
    }

    /// A Deferred that fires once `connection_lost` has run, at once if it already has
    /// (Twisted's `closedDeferred`). The reason is in
    /// [`closed_reason`](AccumulatorState::closed_reason).
    pub fn closed_deferred(&self) -> Deferred<()> {
        if self.closed.get() {
            return Deferred::succeed(());
        }
        let (resolver, d) = Deferred::new();
        self.on_closed.borrow_mut().push(resolver);
        d
    }
}

impl fmt::Debug for AccumulatorState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccumulatorState")
            .field("data", &self.data.borrow().len())
            .field("made", &self.made.get())
            .field("closed", &self.closed.get())
            .field("closed_reason", &*self.closed_reason.borrow())
            .finish_non_exhaustive()
    }
}

/// A protocol that records the bytes it receives and whether it was connected and closed
/// (Twisted's `AccumulatingProtocol`). It writes nothing.
///
/// # Examples
///
/// ```
/// use torsion::error::ConnectionDone;
/// use torsion::testing::{AccumulatingProtocol, Pump};
///
/// let server = AccumulatingProtocol::new();
/// let seen = server.state();
/// let client = AccumulatingProtocol::new();
/// let client_seen = client.state();
/// let closed = seen.closed_deferred();
///
/// let pump = Pump::connect(Box::new(server), Box::new(client));
/// client_seen.transport().unwrap().write(b"ping");
/// client_seen.transport().unwrap().lose_connection();
/// pump.flush();
///
/// assert!(seen.made());
/// assert_eq!(seen.data(), b"ping");
/// assert!(closed.is_fired());
/// assert!(seen.closed_reason().unwrap().check::<ConnectionDone>());
/// ```
pub struct AccumulatingProtocol {
    state: Rc<AccumulatorState>,
    half_close: bool,
}

impl AccumulatingProtocol {
    /// A protocol with a fresh state; get the state with
    /// [`state`](AccumulatingProtocol::state) before handing the protocol over.
    pub fn new() -> AccumulatingProtocol {
        AccumulatingProtocol::with_state(Rc::new(AccumulatorState::default()))
    }

    /// A protocol recording into `state` (for example a state a factory hands out).
    pub fn with_state(state: Rc<AccumulatorState>) -> AccumulatingProtocol {
        AccumulatingProtocol {
            state,
            half_close: false,
        }
    }

    /// Makes the protocol support half-closed connections: the peer's
    /// `lose_write_connection` then gives `read_connection_lost` (recorded as
    /// [`read_closed`](AccumulatorState::read_closed)) instead of closing.
    pub fn with_half_close(mut self) -> AccumulatingProtocol {
        self.half_close = true;
        self
    }

    /// The shared record of what this protocol saw.
    pub fn state(&self) -> Rc<AccumulatorState> {
        self.state.clone()
    }
}

impl Default for AccumulatingProtocol {
    fn default() -> Self {
        AccumulatingProtocol::new()
    }
}

impl fmt::Debug for AccumulatingProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccumulatingProtocol")
            .field("state", &self.state)
            .field("half_close", &self.half_close)
            .finish()
    }
}

impl Protocol for AccumulatingProtocol {
    fn connection_made(&mut self, transport: Transport) {
        self.state.made.set(true);
        *self.state.transport.borrow_mut() = Some(transport);
        let waiting = std::mem::take(&mut *self.state.on_made.borrow_mut());
        for resolver in waiting {
            resolver.callback(());
        }
    }

    fn data_received(&mut self, data: &[u8]) {
        self.state.data.borrow_mut().extend_from_slice(data);
    }

    fn connection_lost(&mut self, reason: Failure) {
        self.state.closed.set(true);
        *self.state.closed_reason.borrow_mut() = Some(reason);
        let waiting = std::mem::take(&mut *self.state.on_closed.borrow_mut());
        for resolver in waiting {
            resolver.callback(());
        }
    }

    fn supports_half_close(&self) -> bool {
        self.half_close
    }

    fn read_connection_lost(&mut self) {
        self.state.read_closed.set(true);
    }

    fn write_connection_lost(&mut self) {
        self.state.write_closed.set(true);
    }
}
