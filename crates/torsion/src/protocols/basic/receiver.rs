//! The machinery every receiver of [`basic`](super) shares: the [`Receiver`] cell holding a
//! framer and its handler, the [`Core`] of flags its contexts and handles reach, the delivery
//! loop, the [`ReceiverHandle`], and the two macros that give each receiver its `Protocol`
//! impl and each context its common methods (the `_PauseableMixin` part of Twisted's
//! `twisted.protocols.basic`).
//!
//! A receiver kind (lines, line-only, strings) is a [`Framing`]: a parser with its handler.
//! [`Receiver::run`] takes it out of the cell, feeds it, and asks it for one frame at a time
//! until none is left, the receiver is paused or it is done.
//!
//! The invariant to keep: **no borrow is held while a handler runs**. The framer and the
//! handler are out of the receiver's cell for the whole delivery loop (the [`Running`] guard
//! puts them back, also on a panic); anything that reaches the receiver meanwhile (bytes, a
//! resume through a handle) only sets a flag or queues bytes, which the running loop picks
//! up.

use std::cell::{Cell, OnceCell, RefCell};
use std::fmt;
use std::rc::{Rc, Weak};

use crate::defer::Failure;
use crate::net::{Producer, Transport};

/// What a receiver's handle and contexts reach: flags and the transport, never the handler.
pub(super) struct Core {
    transport: OnceCell<Transport>,
    /// `pause_producing` was called and not `resume_producing` (Twisted's `paused`).
    pub(super) paused: Cell<bool>,
    /// `lose_connection` was called. Line receivers deliver nothing more (Twisted's
    /// `LineReceiver` and `LineOnlyReceiver` check `transport.disconnecting`); string
    /// receivers go on with the frames already received (Twisted's `NetstringReceiver` and
    /// `IntNStringReceiver` do not check it).
    closing: Cell<bool>,
    /// The connection was aborted, stopped or lost: nothing more is delivered.
    stopped: Cell<bool>,
    /// A delivery loop is running: the framer and handler are out of their cell.
    running: Cell<bool>,
    /// Bytes that arrived while a delivery loop was running.
    pending: RefCell<Vec<u8>>,
    /// The receiver itself, for handles.
    pub(super) me: Weak<dyn Control>,
}

impl Core {
    pub(super) fn pause(&self) {
        self.paused.set(true);
        if let Some(transport) = self.transport.get() {
            transport.pause_producing();
        }
    }

    pub(super) fn resume(&self) {
        self.paused.set(false);
        if let Some(transport) = self.transport.get() {
            transport.resume_producing();
        }
    }

    pub(super) fn stop(&self) {
        self.paused.set(true);
        self.stopped.set(true);
        if let Some(transport) = self.transport.get() {
            transport.stop_producing();
        }
    }

    pub(super) fn lose_connection(&self) {
        self.closing.set(true);
        if let Some(transport) = self.transport.get() {
            transport.lose_connection();
        }
    }

    pub(super) fn abort_connection(&self) {
        self.stopped.set(true);
        if let Some(transport) = self.transport.get() {
            transport.abort_connection();
        }
    }
}

/// A receiver, seen from a handle.
pub(super) trait Control {
    fn core(&self) -> &Core;
    /// Delivers buffered frames, unless a delivery loop is already running.
    fn deliver(&self);
}

/// One framing with its handler: what a receiver takes out of its cell to run.
pub(super) trait Framing: 'static {
    /// Whether `lose_connection` stops the delivery of the frames already buffered: `true`
    /// for lines, as Twisted's line receivers check `transport.disconnecting` between
    /// lines; `false` for strings, as Twisted's string receivers do not.
    const STOPS_WHEN_CLOSING: bool;

    fn connection_made(&mut self, base: Base<'_>);
    /// Takes received bytes: buffers them, or hands them over directly when nothing is
    /// buffered and no framing applies (raw mode).
    fn receive(&mut self, base: Base<'_>, data: &[u8]) {
        let _ = base;
        self.feed(data);
    }
    fn feed(&mut self, data: &[u8]);
    /// Delivers the next frame (or framing error) to the handler; `false` if there is none.
    fn deliver_one(&mut self, base: Base<'_>) -> bool;
    fn connection_lost(&mut self, base: Base<'_>, reason: Failure);
}

/// The receiver shared by the protocol object and its handles.
pub(super) struct Receiver<F: Framing> {
    core: Core,
    body: RefCell<Option<F>>,
}

impl<F: Framing> Receiver<F> {
    pub(super) fn new(framing: F) -> Rc<Self> {
        Rc::new_cyclic(|me: &Weak<Receiver<F>>| {
            let me: Weak<dyn Control> = me.clone();
            Receiver {
                core: Core {
                    transport: OnceCell::new(),
                    paused: Cell::new(false),
                    closing: Cell::new(false),
                    stopped: Cell::new(false),
                    running: Cell::new(false),
                    pending: RefCell::new(Vec::new()),
                    me,
                },
                body: RefCell::new(Some(framing)),
            }
        })
    }

    /// Changes the framer's settings (before the connection starts).
    pub(super) fn configure(&self, f: impl FnOnce(&mut F)) {
        if let Some(body) = self.body.borrow_mut().as_mut() {
            f(body);
        }
    }

    pub(super) fn handle(&self) -> ReceiverHandle {
        ReceiverHandle {
            control: self.core.me.clone(),
        }
    }

    pub(super) fn connection_made(&self, transport: Transport) {
        if self.core.transport.set(transport).is_err() {
            crate::log::error!(target: "torsion::protocols", "connection_made called twice on a receiver; ignored");
            return;
        }
        self.run(|body, base| body.connection_made(base));
    }

    /// Whether nothing more is to be delivered.
    fn done(&self) -> bool {
        self.core.stopped.get() || (F::STOPS_WHEN_CLOSING && self.core.closing.get())
    }

    pub(super) fn data_received(&self, data: &[u8]) {
        if self.done() {
            return;
        }
        if self.core.running.get() {
            self.core.pending.borrow_mut().extend_from_slice(data);
            return;
        }
        self.run(|body, base| body.receive(base, data));
    }

    pub(super) fn connection_lost(&self, reason: Failure) {
        self.core.stopped.set(true);
        let Some(transport) = self.core.transport.get() else {
            return;
        };
        let Some(body) = self.body.try_borrow_mut().ok().and_then(|mut b| b.take()) else {
            crate::log::error!(target: "torsion::protocols", "connection_lost reached a receiver while it was running; dropped");
            return;
        };
        let mut running = Running::start(self, body);
        if let Some(body) = running.body.as_mut() {
            body.connection_lost(
                Base {
                    core: &self.core,
                    transport,
                },
                reason,
            );
        }
    }

    /// Takes the framer out, runs `first`, then delivers frames until none is left, the
    /// receiver is paused, or it is [`done`](Self::done); then puts the framer back.
    fn run(&self, first: impl FnOnce(&mut F, Base<'_>)) {
        let Some(transport) = self.core.transport.get() else {
            return;
        };
        if self.core.running.get() {
            return;
        }
        let Some(body) = self.body.try_borrow_mut().ok().and_then(|mut b| b.take()) else {
            return;
        };
        let mut running = Running::start(self, body);
        let Some(body) = running.body.as_mut() else {
            return;
        };
        let base = Base {
            core: &self.core,
            transport,
        };
        first(body, base);
        loop {
            let pending = std::mem::take(&mut *self.core.pending.borrow_mut());
            if !pending.is_empty() {
                body.feed(&pending);
            }
            if self.core.paused.get() || self.done() {
                break;
            }
            if !body.deliver_one(base) && self.core.pending.borrow().is_empty() {
                break;
            }
        }
    }
}

impl<F: Framing> Control for Receiver<F> {
    fn core(&self) -> &Core {
        &self.core
    }

    fn deliver(&self) {
        self.run(|_, _| {});
    }
}

/// The framer, out of its cell while a delivery loop runs; put back when dropped, also when
/// a handler panics (the connection then closes, and the handler still gets
/// `connection_lost`).
struct Running<'a, F: Framing> {
    receiver: &'a Receiver<F>,
    body: Option<F>,
}

impl<'a, F: Framing> Running<'a, F> {
    fn start(receiver: &'a Receiver<F>, body: F) -> Self {
        receiver.core.running.set(true);
        Running {
            receiver,
            body: Some(body),
        }
    }
}

impl<F: Framing> Drop for Running<'_, F> {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.receiver.body.try_borrow_mut() {
            *slot = self.body.take();
        }
        self.receiver.core.running.set(false);
    }
}

/// The `Protocol` a receiver is: every event goes to its shared [`Receiver`].
macro_rules! receiver_protocol {
    ($receiver:ident, $($handler:tt)+) => {
        impl<H: $($handler)+> $crate::protocol::Protocol for $receiver<H> {
            fn connection_made(&mut self, transport: $crate::net::Transport) {
                self.inner.connection_made(transport);
            }

            fn data_received(&mut self, data: &[u8]) {
                self.inner.data_received(data);
            }

            fn connection_lost(&mut self, reason: $crate::defer::Failure) {
                self.inner.connection_lost(reason);
            }
        }

        impl<H: $($handler)+> ::std::fmt::Debug for $receiver<H> {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($receiver))
                    .field("handle", &self.inner.handle())
                    .finish_non_exhaustive()
            }
        }
    };
}

pub(super) use receiver_protocol;

/// What every context holds.
#[derive(Clone, Copy)]
pub(super) struct Base<'a> {
    pub(super) core: &'a Core,
    pub(super) transport: &'a Transport,
}

/// The methods every context shares: the transport, flow control, closing.
macro_rules! context_common {
    ($after_close:literal) => {
        /// The connection's transport (Twisted's `self.transport`): write to it, ask for its
        /// addresses, or clone it to write later. Close through
        /// [`lose_connection`](Self::lose_connection) rather than on the transport, so that
        /// the receiver knows.
        pub fn transport(&self) -> &$crate::net::Transport {
            self.base.transport
        }

        /// A handle to this receiver that outlives the callback: keep it to resume a paused
        /// receiver from a timer, or register it as another transport's producer.
        pub fn handle(&self) -> $crate::protocols::basic::ReceiverHandle {
            $crate::protocols::basic::ReceiverHandle {
                control: self.base.core.me.clone(),
            }
        }

        /// Stops delivering frames, including those already buffered, and stops reading
        /// from the transport, until [`resume_producing`](Self::resume_producing)
        /// (Twisted's `pauseProducing` on the protocol). Takes effect when the current
        /// callback returns.
        pub fn pause_producing(&self) {
            self.base.core.pause();
        }

        /// Resumes reading and delivering (Twisted's `resumeProducing`); buffered frames
        /// are delivered once the current callback returns. From outside a callback, use
        /// [`ReceiverHandle::resume_producing`].
        pub fn resume_producing(&self) {
            self.base.core.resume();
        }

        /// Stops for good: nothing more is delivered and the transport is told to stop
        /// producing, which closes the connection (Twisted's `stopProducing`).
        pub fn stop_producing(&self) {
            self.base.core.stop();
        }

        /// Whether the receiver is paused.
        pub fn is_paused(&self) -> bool {
            self.base.core.paused.get()
        }

        /// Closes the connection once the queued output is sent (Twisted's
        /// `transport.loseConnection()`); the transport stops reading at once.
        ///
        #[doc = $after_close]
        pub fn lose_connection(&self) {
            self.base.core.lose_connection();
        }

        /// Closes the connection now, dropping unsent output (Twisted's
        /// `transport.abortConnection()`); nothing more is delivered.
        pub fn abort_connection(&self) {
            self.base.core.abort_connection();
        }
    };
}

pub(super) use context_common;

/// A handle to a line, netstring or length-prefixed receiver, for use outside its
/// callbacks: pause, resume (delivering what is buffered) and stop it (Twisted's
/// `pauseProducing`, `resumeProducing` and `stopProducing` on `LineReceiver` and
/// `IntNStringReceiver`).
///
/// It holds the receiver weakly: once the connection is gone, its methods do nothing. It
/// is also a [`Producer`], to register the receiver as the producer of another transport
/// (Twisted registers the protocol itself).
///
/// # Examples
///
/// Read a line, then hold the rest for a second before going on:
///
/// ```
/// use std::time::Duration;
/// use torsion::Reactor;
/// use torsion::protocols::basic::{LineContext, LineHandler, LineReceiver};
/// use torsion::time::ReactorTime;
///
/// struct Slow {
///     reactor: Reactor,
/// }
///
/// impl LineHandler for Slow {
///     fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
///         ctx.send_line(line);
///         ctx.pause_producing();
///         let handle = ctx.handle();
///         self.reactor
///             .call_later(Duration::from_secs(1), move || handle.resume_producing());
///     }
/// }
///
/// let reactor = Reactor::new().unwrap();
/// let _protocol = LineReceiver::new(Slow { reactor });
/// ```
#[derive(Clone)]
pub struct ReceiverHandle {
    pub(super) control: Weak<dyn Control>,
}

impl ReceiverHandle {
    /// Stops delivering frames and reading from the transport (Twisted's
    /// `pauseProducing`).
    pub fn pause_producing(&self) {
        if let Some(control) = self.control.upgrade() {
            control.core().pause();
        }
    }

    /// Resumes reading, and delivers the frames buffered meanwhile right away, unless this
    /// is called from inside one of the receiver's callbacks, in which case they are
    /// delivered when it returns (Twisted's `resumeProducing`).
    pub fn resume_producing(&self) {
        if let Some(control) = self.control.upgrade() {
            control.core().resume();
            control.deliver();
        }
    }

    /// Stops for good and closes the connection (Twisted's `stopProducing`).
    pub fn stop_producing(&self) {
        if let Some(control) = self.control.upgrade() {
            control.core().stop();
        }
    }

    /// Whether the receiver is paused (`false` once it is gone).
    pub fn is_paused(&self) -> bool {
        self.control
            .upgrade()
            .is_some_and(|control| control.core().paused.get())
    }

    /// The receiver's transport, once connected and while the receiver exists.
    pub fn transport(&self) -> Option<Transport> {
        self.control
            .upgrade()
            .and_then(|control| control.core().transport.get().cloned())
    }
}

impl Producer for ReceiverHandle {
    fn resume_producing(&self) {
        ReceiverHandle::resume_producing(self);
    }

    fn pause_producing(&self) {
        ReceiverHandle::pause_producing(self);
    }

    fn stop_producing(&self) {
        ReceiverHandle::stop_producing(self);
    }
}

impl fmt::Debug for ReceiverHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let control = self.control.upgrade();
        f.debug_struct("ReceiverHandle")
            .field("alive", &control.is_some())
            .field(
                "paused",
                &control.as_ref().is_some_and(|c| c.core().paused.get()),
            )
            .finish()
    }
}

/// Logs why a peer's bytes close the connection.
pub(super) fn log_framing_error(base: Base<'_>, error: &dyn std::error::Error) {
    crate::log::warning!(
        target: "torsion::protocols",
        "closing the connection to {}: {error}",
        base.transport.peer()
    );
}
