//! Line, netstring and length-prefixed protocols over a transport, and a file producer
//! (Twisted's `twisted.protocols.basic`).
//!
//! | torsion | Twisted |
//! | --- | --- |
//! | [`LineReceiver`] + [`LineHandler`] | `LineReceiver` (`lineReceived`, `rawDataReceived`, `setRawMode`, `setLineMode`, `clearLineBuffer`, `lineLengthExceeded`, `sendLine`) |
//! | [`LineOnlyReceiver`] + [`LineOnlyHandler`] | `LineOnlyReceiver` |
//! | [`NetstringReceiver`] + [`StringHandler`] (framing [`Netstring`]) | `NetstringReceiver` (`stringReceived`, `sendString`) |
//! | [`IntNStringReceiver`] + [`StringHandler<IntN>`](StringHandler) (framing [`IntN`]) | `Int8StringReceiver`, `Int16StringReceiver`, `Int32StringReceiver` (`lengthLimitExceeded`) |
//! | [`LineSender`], [`StringSender`] | `sendLine`, `sendString` on a protocol kept elsewhere |
//! | [`ReceiverHandle`], `pause_producing` on the contexts | `pauseProducing`, `resumeProducing`, `stopProducing` (`_PauseableMixin`) |
//! | [`FileSender`] | `FileSender.beginFileTransfer` |
//!
//! A Twisted subclass becomes a *handler*: a type implementing [`LineHandler`],
//! [`LineOnlyHandler`] or [`StringHandler`], wrapped by the receiver, which is the
//! [`Protocol`] the reactor talks to. The receiver owns the framer (from
//! [`framing`](super::framing)) and calls the handler with one frame at a time and a
//! *context* ([`LineContext`], [`LineOnlyContext`], [`StringContext`]): what Twisted
//! reaches through `self` — the transport, `sendLine`, `setRawMode`, `pauseProducing`, … .
//! Whatever the handler does through the context applies from the very next byte.
//!
//! Pausing: [`pause_producing`](LineContext::pause_producing) stops the delivery of frames
//! already buffered and stops reading from the transport, until
//! [`resume_producing`](LineContext::resume_producing). The resume usually comes later, from
//! a timer or another connection's flow control, outside any callback: keep a
//! [`ReceiverHandle`] ([`LineContext::handle`]) for that. Its `resume_producing` delivers
//! the buffered frames at once, as Twisted's `resumeProducing` does; the handle is also a
//! [`Producer`], so a receiver can be registered as the producer of another transport (a
//! proxy slowing its reading side down).
//!
//! Sending from outside a callback (a chat server's broadcast, where one connection writes
//! lines to the others): take a *sender* from the context, [`LineContext::sender`] (or
//! [`LineOnlyContext::sender`]) or [`StringContext::sender`], and store it. A
//! [`LineSender`] or [`StringSender`] holds the transport and the framing, nothing of the
//! receiver, so it is `Clone`, cheap, and usable from any callback of any connection on the
//! reactor's thread, also while its own receiver is running. Sending a netstring cannot
//! fail, with a context or a sender; sending after a length prefix fails only when the
//! string is longer than the prefix can announce. The [`LineSender`] example is a chat
//! server.
//!
//! Closing, as in Twisted: after [`lose_connection`](LineContext::lose_connection) the line
//! receivers deliver no more of the lines already buffered (Twisted's `LineReceiver` checks
//! `transport.disconnecting` after each line), while the string receivers go on delivering
//! the strings already received, so that what the handler writes in answer is still sent
//! before the connection closes (Twisted's `NetstringReceiver` and `IntNStringReceiver` do
//! not check it). After [`abort_connection`](LineContext::abort_connection),
//! [`stop_producing`](LineContext::stop_producing) or the end of the connection, no
//! receiver delivers anything more.
//!
//! Design notes. The line handler's context gives direct access to the parser, so
//! [`clear_line_buffer`](LineContext::clear_line_buffer) can return the buffered bytes from
//! inside `line_received`, as in Twisted. For that, a line (which borrows the parser's
//! buffer) is first copied into a buffer the receiver reuses: one `memcpy` of the line, no
//! allocation. In raw mode with nothing buffered, received bytes go to `raw_data_received`
//! straight from the transport's read buffer, without any copy.
//!
//! The invariant to keep: **no borrow is held while a handler runs**. The framer and the
//! handler are taken out of the receiver's cell for the duration of a delivery loop;
//! anything that reaches the receiver meanwhile (bytes, a resume through a handle) only
//! sets a flag or queues bytes, which the running loop picks up.

use std::cell::{Cell, OnceCell, RefCell};
use std::fmt;
use std::io::{self, Read};
use std::rc::{Rc, Weak};

use crate::defer::{Deferred, Failure, Resolver};
use crate::error::{LengthLimitExceeded, LineTooLong, ProducerStopped, StringTooLong};
use crate::net::{Producer, Transport};
use crate::protocol::Protocol;
use crate::protocols::framing::{
    FrameHeader, LineEvent, LineOnlyParser, LineParser, NetstringParser, PrefixWidth,
    PrefixedParser,
};

/// A reused buffer keeps at most this much capacity between frames.
const KEEP_CAPACITY: usize = 64 * 1024;

/// What a receiver's handle and contexts reach: flags and the transport, never the handler.
struct Core {
    transport: OnceCell<Transport>,
    /// `pause_producing` was called and not `resume_producing` (Twisted's `paused`).
    paused: Cell<bool>,
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
    me: Weak<dyn Control>,
}

impl Core {
    fn pause(&self) {
        self.paused.set(true);
        if let Some(transport) = self.transport.get() {
            transport.pause_producing();
        }
    }

    fn resume(&self) {
        self.paused.set(false);
        if let Some(transport) = self.transport.get() {
            transport.resume_producing();
        }
    }

    fn stop(&self) {
        self.paused.set(true);
        self.stopped.set(true);
        if let Some(transport) = self.transport.get() {
            transport.stop_producing();
        }
    }

    fn lose_connection(&self) {
        self.closing.set(true);
        if let Some(transport) = self.transport.get() {
            transport.lose_connection();
        }
    }

    fn abort_connection(&self) {
        self.stopped.set(true);
        if let Some(transport) = self.transport.get() {
            transport.abort_connection();
        }
    }
}

/// A receiver, seen from a handle.
trait Control {
    fn core(&self) -> &Core;
    /// Delivers buffered frames, unless a delivery loop is already running.
    fn deliver(&self);
}

/// One framing with its handler: what a receiver takes out of its cell to run.
trait Framing: 'static {
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
struct Receiver<F: Framing> {
    core: Core,
    body: RefCell<Option<F>>,
}

impl<F: Framing> Receiver<F> {
    fn new(framing: F) -> Rc<Self> {
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
    fn configure(&self, f: impl FnOnce(&mut F)) {
        if let Some(body) = self.body.borrow_mut().as_mut() {
            f(body);
        }
    }

    fn handle(&self) -> ReceiverHandle {
        ReceiverHandle {
            control: self.core.me.clone(),
        }
    }

    fn connection_made(&self, transport: Transport) {
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

    fn data_received(&self, data: &[u8]) {
        if self.done() {
            return;
        }
        if self.core.running.get() {
            self.core.pending.borrow_mut().extend_from_slice(data);
            return;
        }
        self.run(|body, base| body.receive(base, data));
    }

    fn connection_lost(&self, reason: Failure) {
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
        impl<H: $($handler)+> Protocol for $receiver<H> {
            fn connection_made(&mut self, transport: Transport) {
                self.inner.connection_made(transport);
            }

            fn data_received(&mut self, data: &[u8]) {
                self.inner.data_received(data);
            }

            fn connection_lost(&mut self, reason: Failure) {
                self.inner.connection_lost(reason);
            }
        }

        impl<H: $($handler)+> fmt::Debug for $receiver<H> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($receiver))
                    .field("handle", &self.inner.handle())
                    .finish_non_exhaustive()
            }
        }
    };
}

/// What every context holds.
#[derive(Clone, Copy)]
struct Base<'a> {
    core: &'a Core,
    transport: &'a Transport,
}

/// The methods every context shares: the transport, flow control, closing.
macro_rules! context_common {
    ($after_close:literal) => {
        /// The connection's transport (Twisted's `self.transport`): write to it, ask for its
        /// addresses, or clone it to write later. Close through
        /// [`lose_connection`](Self::lose_connection) rather than on the transport, so that
        /// the receiver knows.
        pub fn transport(&self) -> &Transport {
            self.base.transport
        }

        /// A handle to this receiver that outlives the callback: keep it to resume a paused
        /// receiver from a timer, or register it as another transport's producer.
        pub fn handle(&self) -> ReceiverHandle {
            ReceiverHandle {
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
    control: Weak<dyn Control>,
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
fn log_framing_error(base: Base<'_>, error: &dyn std::error::Error) {
    crate::log::warning!(
        target: "torsion::protocols",
        "closing the connection to {}: {error}",
        base.transport.peer()
    );
}

/// Empties a reused buffer, keeping its capacity bounded.
fn shrink(out: &mut Vec<u8>) {
    out.clear();
    if out.capacity() > KEEP_CAPACITY {
        out.shrink_to(KEEP_CAPACITY);
    }
}

/// What a [`LineReceiver`] does with its lines: the methods a Twisted `LineReceiver`
/// subclass overrides.
///
/// Every method gets a [`LineContext`] to write, switch modes, pause or close.
pub trait LineHandler: 'static {
    /// The connection is up (Twisted's `connectionMade`). The default does nothing.
    fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
        let _ = ctx;
    }

    /// A line arrived, without its delimiter (Twisted's `lineReceived`).
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]);

    /// Bytes arrived in raw mode (Twisted's `rawDataReceived`): everything received since
    /// the last call, never empty. Call [`set_line_mode`](LineContext::set_line_mode) with
    /// the bytes not used to go back to lines. The default drops the bytes.
    fn raw_data_received(&mut self, ctx: &mut LineContext<'_>, data: &[u8]) {
        let _ = (ctx, data);
    }

    /// A line was longer than the maximum (Twisted's `lineLengthExceeded(line)`).
    ///
    /// [`error.line`](LineTooLong::line) holds what Twisted passes as `line`: every byte
    /// received from the start of the over-long line on, its delimiter and whatever followed
    /// included (so a handler that goes on can parse the rest itself). The receiver has
    /// discarded them: the bytes received next start a new line. This is called when the
    /// line's delimiter arrives more than [`max_length`](LineContext::max_length) bytes
    /// after its start, or once `max_length` plus the delimiter's length arrived without
    /// one, as in Twisted.
    ///
    /// The default logs `error` and closes the connection, as Twisted's does.
    fn line_length_exceeded(&mut self, ctx: &mut LineContext<'_>, error: LineTooLong) {
        log_framing_error(ctx.base, &error);
        ctx.lose_connection();
    }

    /// The connection is closed (Twisted's `connectionLost`); `reason` is
    /// [`ConnectionDone`](crate::error::ConnectionDone) for a clean close. The default does
    /// nothing.
    fn connection_lost(&mut self, ctx: &mut LineContext<'_>, reason: Failure) {
        let _ = (ctx, reason);
    }
}

/// What a [`LineHandler`] can do from inside a callback: what Twisted's `LineReceiver`
/// offers on `self` (`sendLine`, `setRawMode`, `setLineMode`, `clearLineBuffer`,
/// `pauseProducing`, `transport`, …). Everything applies from the next byte on.
pub struct LineContext<'a> {
    base: Base<'a>,
    parser: &'a mut LineParser,
    /// The parser's delimiter, shared with the senders.
    delimiter: &'a Rc<[u8]>,
}

impl LineContext<'_> {
    context_common!(
        "The lines already buffered are not delivered, as in Twisted's `LineReceiver` and `LineOnlyReceiver`, which check `transport.disconnecting` between lines."
    );

    /// Writes `line` followed by the delimiter (Twisted's `sendLine`).
    pub fn send_line(&self, line: &[u8]) {
        self.base.transport.write_sequence(&[line, self.delimiter]);
    }

    /// A [`LineSender`] for this connection: keep it to send lines from outside this
    /// receiver's callbacks, for example from another connection's.
    pub fn sender(&self) -> LineSender {
        LineSender {
            transport: self.base.transport.clone(),
            delimiter: self.delimiter.clone(),
        }
    }

    /// Switches to raw mode: what follows goes to
    /// [`raw_data_received`](LineHandler::raw_data_received) (Twisted's `setRawMode`).
    pub fn set_raw_mode(&mut self) {
        self.parser.set_raw_mode();
    }

    /// Switches to line mode, parsing `extra` (the raw bytes not used) before what is still
    /// buffered (Twisted's `setLineMode(extra)`).
    pub fn set_line_mode(&mut self, extra: &[u8]) {
        self.parser.set_line_mode(extra);
    }

    /// Whether the receiver is in raw mode.
    pub fn is_raw(&self) -> bool {
        self.parser.is_raw()
    }

    /// Discards the bytes received and not parsed yet, and returns them (Twisted's
    /// `clearLineBuffer`): from inside `line_received`, the bytes after this line.
    pub fn clear_line_buffer(&mut self) -> Vec<u8> {
        self.parser.clear_line_buffer()
    }

    /// The bytes received and not parsed yet.
    pub fn buffered(&self) -> &[u8] {
        self.parser.buffered()
    }

    /// The delimiter lines end with (Twisted's `delimiter`).
    pub fn delimiter(&self) -> &[u8] {
        self.parser.delimiter()
    }

    /// The longest line accepted (Twisted's `MAX_LENGTH`).
    pub fn max_length(&self) -> usize {
        self.parser.max_length()
    }
}

impl fmt::Debug for LineContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineContext")
            .field("peer", &self.base.transport.peer())
            .field("raw", &self.parser.is_raw())
            .field("paused", &self.base.core.paused.get())
            .finish_non_exhaustive()
    }
}

/// Sends lines on one connection from anywhere, for as long as it is open (Twisted's
/// `sendLine`, reached through a kept reference to the protocol): the transport and the
/// delimiter, cheap to clone.
///
/// Get one from [`LineContext::sender`] or [`LineOnlyContext::sender`], typically in
/// `connection_made`, and store it where other connections find it. Writing needs nothing
/// else from the receiver, so a sender works while that receiver is running, paused or
/// gone; once the connection is closed, what it sends is dropped.
///
/// # Examples
///
/// A chat server: each line a client sends goes to every other client.
///
/// ```
/// use std::cell::{Cell, RefCell};
/// use std::rc::Rc;
/// use torsion::protocols::basic::{LineContext, LineHandler, LineReceiver, LineSender};
/// use torsion::{Failure, Reactor};
///
/// /// Everyone connected, by id.
/// type Room = Rc<RefCell<Vec<(u64, LineSender)>>>;
///
/// struct Chatter {
///     id: u64,
///     room: Room,
/// }
///
/// impl LineHandler for Chatter {
///     fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
///         self.room.borrow_mut().push((self.id, ctx.sender()));
///     }
///
///     fn line_received(&mut self, _ctx: &mut LineContext<'_>, line: &[u8]) {
///         for (id, sender) in self.room.borrow().iter() {
///             if *id != self.id {
///                 sender.send_line(line);
///             }
///         }
///     }
///
///     fn connection_lost(&mut self, _ctx: &mut LineContext<'_>, _reason: Failure) {
///         self.room.borrow_mut().retain(|(id, _)| *id != self.id);
///     }
/// }
///
/// let reactor = Reactor::new().unwrap();
/// let room = Room::default();
/// let next_id = Cell::new(0);
/// let factory = Rc::new(move || {
///     next_id.set(next_id.get() + 1);
///     LineReceiver::new(Chatter { id: next_id.get(), room: room.clone() })
/// });
/// let _port = reactor.listen_tcp(0, factory).unwrap();
/// ```
#[derive(Clone)]
pub struct LineSender {
    transport: Transport,
    delimiter: Rc<[u8]>,
}

impl LineSender {
    /// Writes `line` followed by the delimiter (Twisted's `sendLine`).
    pub fn send_line(&self, line: &[u8]) {
        self.transport.write_sequence(&[line, &self.delimiter]);
    }

    /// The delimiter each line is sent with (Twisted's `delimiter`).
    pub fn delimiter(&self) -> &[u8] {
        &self.delimiter
    }

    /// The connection's transport, to write other bytes or close it.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }
}

impl fmt::Debug for LineSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineSender")
            .field("peer", &self.transport.peer())
            .field("delimiter", &self.delimiter)
            .finish()
    }
}

struct LineFraming<H> {
    parser: LineParser,
    /// The parser's delimiter, shared with the senders.
    delimiter: Rc<[u8]>,
    /// The current line or raw bytes, copied out of the parser so that the handler may use
    /// the parser meanwhile.
    frame: Vec<u8>,
    handler: H,
}

impl<H> LineFraming<H> {
    fn context<'a>(
        base: Base<'a>,
        parser: &'a mut LineParser,
        delimiter: &'a Rc<[u8]>,
    ) -> LineContext<'a> {
        LineContext {
            base,
            parser,
            delimiter,
        }
    }
}

impl<H: LineHandler> Framing for LineFraming<H> {
    const STOPS_WHEN_CLOSING: bool = true;

    fn connection_made(&mut self, base: Base<'_>) {
        let mut ctx = Self::context(base, &mut self.parser, &self.delimiter);
        self.handler.connection_made(&mut ctx);
    }

    fn receive(&mut self, base: Base<'_>, data: &[u8]) {
        if self.parser.is_raw()
            && self.parser.buffered().is_empty()
            && !data.is_empty()
            && !base.core.paused.get()
        {
            // Raw mode with nothing buffered: the event would be `data` itself.
            let mut ctx = Self::context(base, &mut self.parser, &self.delimiter);
            self.handler.raw_data_received(&mut ctx, data);
        } else {
            self.parser.feed(data);
        }
    }

    fn feed(&mut self, data: &[u8]) {
        self.parser.feed(data);
    }

    fn deliver_one(&mut self, base: Base<'_>) -> bool {
        let raw = match self.parser.next_event() {
            None => return false,
            Some(Ok(event)) => {
                self.frame.clear();
                self.frame.extend_from_slice(event.bytes());
                matches!(event, LineEvent::Raw(_))
            }
            Some(Err(error)) => {
                let mut ctx = Self::context(base, &mut self.parser, &self.delimiter);
                self.handler.line_length_exceeded(&mut ctx, error);
                return true;
            }
        };
        let mut ctx = Self::context(base, &mut self.parser, &self.delimiter);
        if raw {
            self.handler.raw_data_received(&mut ctx, &self.frame);
        } else {
            self.handler.line_received(&mut ctx, &self.frame);
        }
        shrink(&mut self.frame);
        true
    }

    fn connection_lost(&mut self, base: Base<'_>, reason: Failure) {
        let mut ctx = Self::context(base, &mut self.parser, &self.delimiter);
        self.handler.connection_lost(&mut ctx, reason);
    }
}

/// A protocol that splits what it receives into lines for a [`LineHandler`], with a raw
/// mode for the parts that are not lines (Twisted's `LineReceiver`).
///
/// Lines end with `\r\n` and may be 16384 bytes long unless set otherwise
/// ([`with_delimiter`](LineReceiver::with_delimiter),
/// [`with_max_length`](LineReceiver::with_max_length)). The lines handed to the handler do
/// not depend on how the peer's bytes were cut into packets.
///
/// # Examples
///
/// Twisted's "echo lines" server:
///
/// ```
/// use std::rc::Rc;
/// use torsion::Reactor;
/// use torsion::protocols::basic::{LineContext, LineHandler, LineReceiver};
///
/// struct EchoLines;
///
/// impl LineHandler for EchoLines {
///     fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
///         if line == b"quit" {
///             ctx.send_line(b"bye");
///             ctx.lose_connection();
///         } else {
///             ctx.send_line(line);
///         }
///     }
/// }
///
/// let reactor = Reactor::new().unwrap();
/// let port = reactor
///     .listen_tcp(0, Rc::new(|| LineReceiver::new(EchoLines)))
///     .unwrap();
/// assert_ne!(port.host().port(), Some(0));
/// // reactor.run() would now serve clients.
/// ```
pub struct LineReceiver<H: LineHandler> {
    inner: Rc<Receiver<LineFraming<H>>>,
}

impl<H: LineHandler> LineReceiver<H> {
    /// A receiver in line mode handing lines to `handler`, with Twisted's defaults:
    /// `\r\n`, at most 16384 bytes a line.
    pub fn new(handler: H) -> Self {
        let parser = LineParser::new();
        LineReceiver {
            inner: Receiver::new(LineFraming {
                delimiter: parser.delimiter().into(),
                parser,
                frame: Vec::new(),
                handler,
            }),
        }
    }

    /// Splits lines on `delimiter` instead (Twisted's `delimiter` attribute).
    ///
    /// # Panics
    ///
    /// If `delimiter` is empty.
    #[must_use]
    pub fn with_delimiter(self, delimiter: impl Into<Vec<u8>>) -> Self {
        let delimiter = delimiter.into();
        self.inner.configure(|body| {
            body.parser = std::mem::take(&mut body.parser).with_delimiter(delimiter);
            body.delimiter = body.parser.delimiter().into();
        });
        self
    }

    /// Accepts lines of at most `max_length` bytes, delimiter not counted (Twisted's
    /// `MAX_LENGTH`).
    #[must_use]
    pub fn with_max_length(self, max_length: usize) -> Self {
        self.inner.configure(|body| {
            body.parser = std::mem::take(&mut body.parser).with_max_length(max_length);
        });
        self
    }

    /// A handle to pause and resume this receiver from outside its callbacks.
    pub fn handle(&self) -> ReceiverHandle {
        self.inner.handle()
    }
}

receiver_protocol!(LineReceiver, LineHandler);

/// What a [`LineOnlyReceiver`] does with its lines (a Twisted `LineOnlyReceiver`
/// subclass).
pub trait LineOnlyHandler: 'static {
    /// The connection is up (Twisted's `connectionMade`). The default does nothing.
    fn connection_made(&mut self, ctx: &mut LineOnlyContext<'_>) {
        let _ = ctx;
    }

    /// A line arrived, without its delimiter (Twisted's `lineReceived`).
    fn line_received(&mut self, ctx: &mut LineOnlyContext<'_>, line: &[u8]);

    /// A line was longer than the maximum (Twisted's `lineLengthExceeded(line)`).
    ///
    /// As in Twisted's `LineOnlyReceiver`, [`error.line`](LineTooLong::line) is the
    /// over-long line without its delimiter when the delimiter arrived more than the
    /// maximum bytes after the line's start, or the bytes buffered once more than the
    /// maximum arrived without a delimiter (counting the start of a delimiter cut by the
    /// packets: see [`LineOnlyParser`]). The receiver has discarded everything buffered: the
    /// bytes received next start a new line.
    ///
    /// The default logs `error` and closes the connection, as Twisted's does.
    fn line_length_exceeded(&mut self, ctx: &mut LineOnlyContext<'_>, error: LineTooLong) {
        log_framing_error(ctx.base, &error);
        ctx.lose_connection();
    }

    /// The connection is closed (Twisted's `connectionLost`). The default does nothing.
    fn connection_lost(&mut self, ctx: &mut LineOnlyContext<'_>, reason: Failure) {
        let _ = (ctx, reason);
    }
}

/// What a [`LineOnlyHandler`] can do from inside a callback (Twisted's `sendLine`,
/// `transport`, and, beyond Twisted's `LineOnlyReceiver`, pausing).
pub struct LineOnlyContext<'a> {
    base: Base<'a>,
    delimiter: &'a Rc<[u8]>,
}

impl LineOnlyContext<'_> {
    context_common!(
        "The lines already buffered are not delivered, as in Twisted's `LineReceiver` and `LineOnlyReceiver`, which check `transport.disconnecting` between lines."
    );

    /// Writes `line` followed by the delimiter (Twisted's `sendLine`).
    pub fn send_line(&self, line: &[u8]) {
        self.base.transport.write_sequence(&[line, self.delimiter]);
    }

    /// A [`LineSender`] for this connection: keep it to send lines from outside this
    /// receiver's callbacks, for example from another connection's.
    pub fn sender(&self) -> LineSender {
        LineSender {
            transport: self.base.transport.clone(),
            delimiter: self.delimiter.clone(),
        }
    }

    /// The delimiter lines end with (Twisted's `delimiter`).
    pub fn delimiter(&self) -> &[u8] {
        self.delimiter
    }
}

impl fmt::Debug for LineOnlyContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineOnlyContext")
            .field("peer", &self.base.transport.peer())
            .field("paused", &self.base.core.paused.get())
            .finish_non_exhaustive()
    }
}

struct LineOnlyFraming<H> {
    parser: LineOnlyParser,
    /// The parser's delimiter, for `send_line` while a line borrows the parser, and for the
    /// senders.
    delimiter: Rc<[u8]>,
    handler: H,
}

impl<H: LineOnlyHandler> Framing for LineOnlyFraming<H> {
    const STOPS_WHEN_CLOSING: bool = true;

    fn connection_made(&mut self, base: Base<'_>) {
        let mut ctx = LineOnlyContext {
            base,
            delimiter: &self.delimiter,
        };
        self.handler.connection_made(&mut ctx);
    }

    fn feed(&mut self, data: &[u8]) {
        self.parser.feed(data);
    }

    fn deliver_one(&mut self, base: Base<'_>) -> bool {
        let mut ctx = LineOnlyContext {
            base,
            delimiter: &self.delimiter,
        };
        match self.parser.next_line() {
            None => false,
            Some(Ok(line)) => {
                self.handler.line_received(&mut ctx, line);
                true
            }
            Some(Err(error)) => {
                self.handler.line_length_exceeded(&mut ctx, error);
                true
            }
        }
    }

    fn connection_lost(&mut self, base: Base<'_>, reason: Failure) {
        let mut ctx = LineOnlyContext {
            base,
            delimiter: &self.delimiter,
        };
        self.handler.connection_lost(&mut ctx, reason);
    }
}

/// A protocol that splits what it receives into lines for a [`LineOnlyHandler`], without
/// raw mode (Twisted's `LineOnlyReceiver`). Lines are handed over without being copied.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use torsion::Reactor;
/// use torsion::protocols::basic::{LineOnlyContext, LineOnlyHandler, LineOnlyReceiver};
///
/// /// Answers each line with its length.
/// struct Lengths;
///
/// impl LineOnlyHandler for Lengths {
///     fn line_received(&mut self, ctx: &mut LineOnlyContext<'_>, line: &[u8]) {
///         ctx.send_line(line.len().to_string().as_bytes());
///     }
/// }
///
/// let reactor = Reactor::new().unwrap();
/// let factory = Rc::new(|| LineOnlyReceiver::new(Lengths).with_delimiter(b"\n"));
/// let _port = reactor.listen_tcp(0, factory).unwrap();
/// ```
pub struct LineOnlyReceiver<H: LineOnlyHandler> {
    inner: Rc<Receiver<LineOnlyFraming<H>>>,
}

impl<H: LineOnlyHandler> LineOnlyReceiver<H> {
    /// A receiver handing lines to `handler`, with Twisted's defaults: `\r\n`, at most
    /// 16384 bytes a line.
    pub fn new(handler: H) -> Self {
        let parser = LineOnlyParser::new();
        LineOnlyReceiver {
            inner: Receiver::new(LineOnlyFraming {
                delimiter: parser.delimiter().into(),
                parser,
                handler,
            }),
        }
    }

    /// Splits lines on `delimiter` instead (Twisted's `delimiter` attribute).
    ///
    /// # Panics
    ///
    /// If `delimiter` is empty.
    #[must_use]
    pub fn with_delimiter(self, delimiter: impl Into<Vec<u8>>) -> Self {
        let delimiter = delimiter.into();
        self.inner.configure(|body| {
            body.parser = std::mem::take(&mut body.parser).with_delimiter(delimiter);
            body.delimiter = body.parser.delimiter().into();
        });
        self
    }

    /// Accepts lines of at most `max_length` bytes, delimiter not counted (Twisted's
    /// `MAX_LENGTH`).
    #[must_use]
    pub fn with_max_length(self, max_length: usize) -> Self {
        self.inner.configure(|body| {
            body.parser = std::mem::take(&mut body.parser).with_max_length(max_length);
        });
        self
    }

    /// A handle to pause and resume this receiver from outside its callbacks.
    pub fn handle(&self) -> ReceiverHandle {
        self.inner.handle()
    }
}

receiver_protocol!(LineOnlyReceiver, LineOnlyHandler);

/// Sealing [`StringFraming`]: only this module's framings implement it.
mod sealed {
    pub trait Sealed {}
}

/// How a string receiver frames its strings, as a type: [`Netstring`] for a
/// [`NetstringReceiver`], [`IntN`] for an [`IntNStringReceiver`].
///
/// It is the type parameter of [`StringHandler`], [`StringContext`] and [`StringSender`], so
/// the compiler knows whether sending a string can fail: never for a netstring, which has
/// no length limit, only for a length prefix too small for the string. A handler written
/// for both framings implements `StringHandler<K>` for every `K: StringFraming` and sends
/// with `try_send_string`. Sealed: no other type implements it.
pub trait StringFraming: sealed::Sealed + Copy + fmt::Debug + 'static {
    /// Writes `string` to `transport` framed this way (Twisted's `sendString`).
    ///
    /// # Errors
    ///
    /// [`StringTooLong`] if the length prefix cannot announce `string`'s length (never for
    /// [`Netstring`]); nothing is written then.
    fn write_string(self, transport: &Transport, string: &[u8]) -> Result<(), StringTooLong>;
}

/// Netstrings, `len:data,`: the framing of a [`NetstringReceiver`] (Twisted's
/// `NetstringReceiver`). Any string can be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Netstring;

impl Netstring {
    /// Writes `string` to `transport` as a netstring, as one write sequence.
    fn write(transport: &Transport, string: &[u8]) {
        let header = FrameHeader::netstring(string.len());
        transport.write_sequence(&[header.as_bytes(), string, b","]);
    }
}

impl sealed::Sealed for Netstring {}

impl StringFraming for Netstring {
    /// Writes `string` as a netstring; this cannot fail.
    fn write_string(self, transport: &Transport, string: &[u8]) -> Result<(), StringTooLong> {
        Netstring::write(transport, string);
        Ok(())
    }
}

/// Strings each after its length, a big-endian integer of 1, 2 or 4 bytes: the framing of
/// an [`IntNStringReceiver`] (Twisted's `IntNStringReceiver` with its `prefixLength`). A
/// string longer than the prefix can announce cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IntN {
    width: PrefixWidth,
}

impl IntN {
    /// Strings after a `width`-byte length prefix.
    pub const fn new(width: PrefixWidth) -> IntN {
        IntN { width }
    }

    /// The size of the length prefix (Twisted's `prefixLength`).
    pub const fn width(self) -> PrefixWidth {
        self.width
    }
}

impl sealed::Sealed for IntN {}

impl StringFraming for IntN {
    fn write_string(self, transport: &Transport, string: &[u8]) -> Result<(), StringTooLong> {
        let header = FrameHeader::prefix(self.width, string.len())?;
        transport.write_sequence(&[header.as_bytes(), string]);
        Ok(())
    }
}

/// What a [`NetstringReceiver`] (`StringHandler`, that is `StringHandler<Netstring>`) or an
/// [`IntNStringReceiver`] (`StringHandler<IntN>`) does with its strings: a Twisted
/// `NetstringReceiver` or `IntNStringReceiver` subclass.
///
/// The type parameter is the [framing](StringFraming); it decides whether
/// [`send_string`](StringContext::send_string) can fail. A handler for both implements the
/// trait for every framing:
///
/// ```
/// use torsion::protocols::basic::{
///     IntNStringReceiver, NetstringReceiver, StringContext, StringFraming, StringHandler,
/// };
///
/// struct Echo;
///
/// impl<K: StringFraming> StringHandler<K> for Echo {
///     fn string_received(&mut self, ctx: &mut StringContext<'_, K>, string: Vec<u8>) {
///         // As long as what it received: it fits the prefix, if there is one.
///         let _ = ctx.try_send_string(&string);
///     }
/// }
///
/// let _netstrings = NetstringReceiver::new(Echo);
/// let _int16 = IntNStringReceiver::int16(Echo);
/// ```
pub trait StringHandler<K: StringFraming = Netstring>: 'static {
    /// The connection is up (Twisted's `connectionMade`). The default does nothing.
    fn connection_made(&mut self, ctx: &mut StringContext<'_, K>) {
        let _ = ctx;
    }

    /// A complete string arrived (Twisted's `stringReceived`).
    fn string_received(&mut self, ctx: &mut StringContext<'_, K>, string: Vec<u8>);

    /// A length prefix announced more than the maximum (Twisted's
    /// `IntNStringReceiver.lengthLimitExceeded`); the string is never delivered and nothing
    /// more is parsed. Only an [`IntNStringReceiver`] calls it. The default logs `error`
    /// and closes the connection, as Twisted's does.
    fn length_limit_exceeded(
        &mut self,
        ctx: &mut StringContext<'_, K>,
        error: LengthLimitExceeded,
    ) {
        log_framing_error(ctx.base, &error);
        ctx.lose_connection();
    }

    /// The connection is closed (Twisted's `connectionLost`). The default does nothing.
    fn connection_lost(&mut self, ctx: &mut StringContext<'_, K>, reason: Failure) {
        let _ = (ctx, reason);
    }
}

/// What a [`StringHandler`] can do from inside a callback (Twisted's `sendString`,
/// `transport`, `pauseProducing`, …). `K` is the receiver's [framing](StringFraming):
/// `StringContext<'_>` for netstrings, `StringContext<'_, IntN>` for length prefixes.
pub struct StringContext<'a, K: StringFraming = Netstring> {
    base: Base<'a>,
    framing: K,
}

impl<K: StringFraming> StringContext<'_, K> {
    context_common!(
        "The strings already received are still delivered, and what the handler sends in answer is sent before the connection closes, as with Twisted's `NetstringReceiver` and `IntNStringReceiver`, which do not check `transport.disconnecting`."
    );

    /// Sends `string` in the receiver's framing, whichever it is: for a handler written
    /// for every framing (see [`StringHandler`]). Otherwise
    /// [`send_string`](Self::send_string) says more.
    ///
    /// # Errors
    ///
    /// [`StringTooLong`] if the length prefix cannot announce `string`'s length (never for
    /// netstrings); nothing is written then.
    pub fn try_send_string(&self, string: &[u8]) -> Result<(), StringTooLong> {
        self.framing.write_string(self.base.transport, string)
    }

    /// A [`StringSender`] for this connection: keep it to send strings from outside this
    /// receiver's callbacks, for example from another connection's.
    pub fn sender(&self) -> StringSender<K> {
        StringSender {
            transport: self.base.transport.clone(),
            framing: self.framing,
        }
    }

    /// The receiver's framing.
    pub fn framing(&self) -> K {
        self.framing
    }
}

impl StringContext<'_, Netstring> {
    /// Sends `string` as a netstring, `len:string,` (Twisted's
    /// `NetstringReceiver.sendString`). A netstring has no length limit: this cannot fail.
    pub fn send_string(&self, string: &[u8]) {
        Netstring::write(self.base.transport, string);
    }
}

impl StringContext<'_, IntN> {
    /// Sends `string` after its big-endian length (Twisted's
    /// `IntNStringReceiver.sendString`).
    ///
    /// # Errors
    ///
    /// [`StringTooLong`] if the length prefix cannot announce `string`'s length (255 bytes
    /// for `Int8StringReceiver`, 65535 for `Int16StringReceiver`, 4 GiB − 1 for
    /// `Int32StringReceiver`; Twisted's `StringTooLongError`); nothing is written then.
    pub fn send_string(&self, string: &[u8]) -> Result<(), StringTooLong> {
        self.framing.write_string(self.base.transport, string)
    }
}

impl<K: StringFraming> fmt::Debug for StringContext<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StringContext")
            .field("peer", &self.base.transport.peer())
            .field("framing", &self.framing)
            .field("paused", &self.base.core.paused.get())
            .finish_non_exhaustive()
    }
}

/// Sends strings on one connection from anywhere, for as long as it is open (Twisted's
/// `sendString`, reached through a kept reference to the protocol): the transport and the
/// [framing](StringFraming), cheap to clone.
///
/// Get one from [`StringContext::sender`], typically in `connection_made`, and store it
/// where other connections find it. For netstrings
/// ([`StringSender<Netstring>`](StringSender)) sending cannot fail; for length prefixes
/// ([`StringSender<IntN>`](StringSender)) it fails only for a string longer than the prefix
/// can announce. Once the connection is closed, what it sends is dropped.
///
/// # Examples
///
/// A hub relaying each netstring to every other client:
///
/// ```
/// use std::cell::RefCell;
/// use std::rc::Rc;
/// use torsion::protocols::basic::{StringContext, StringHandler, StringSender};
///
/// struct Relay {
///     id: u64,
///     peers: Rc<RefCell<Vec<(u64, StringSender)>>>,
/// }
///
/// impl StringHandler for Relay {
///     fn connection_made(&mut self, ctx: &mut StringContext<'_>) {
///         self.peers.borrow_mut().push((self.id, ctx.sender()));
///     }
///
///     fn string_received(&mut self, _ctx: &mut StringContext<'_>, string: Vec<u8>) {
///         for (id, peer) in self.peers.borrow().iter() {
///             if *id != self.id {
///                 peer.send_string(&string);
///             }
///         }
///     }
/// }
/// ```
#[derive(Clone)]
pub struct StringSender<K: StringFraming = Netstring> {
    transport: Transport,
    framing: K,
}

impl<K: StringFraming> StringSender<K> {
    /// Sends `string` in the connection's framing, whichever it is, for code written for
    /// every framing; otherwise [`send_string`](Self::send_string) says more.
    ///
    /// # Errors
    ///
    /// [`StringTooLong`] if the length prefix cannot announce `string`'s length (never for
    /// netstrings); nothing is written then.
    pub fn try_send_string(&self, string: &[u8]) -> Result<(), StringTooLong> {
        self.framing.write_string(&self.transport, string)
    }

    /// The connection's framing.
    pub fn framing(&self) -> K {
        self.framing
    }

    /// The connection's transport, to write other bytes or close it.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }
}

impl StringSender<Netstring> {
    /// Sends `string` as a netstring, `len:string,` (Twisted's `sendString`). This cannot
    /// fail.
    pub fn send_string(&self, string: &[u8]) {
        Netstring::write(&self.transport, string);
    }
}

impl StringSender<IntN> {
    /// Sends `string` after its big-endian length (Twisted's `sendString`).
    ///
    /// # Errors
    ///
    /// [`StringTooLong`] if the length prefix cannot announce `string`'s length; nothing
    /// is written then.
    pub fn send_string(&self, string: &[u8]) -> Result<(), StringTooLong> {
        self.framing.write_string(&self.transport, string)
    }
}

impl<K: StringFraming> fmt::Debug for StringSender<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StringSender")
            .field("peer", &self.transport.peer())
            .field("framing", &self.framing)
            .finish()
    }
}

struct NetstringFraming<H> {
    parser: NetstringParser,
    handler: H,
}

fn netstring_context(base: Base<'_>) -> StringContext<'_> {
    StringContext {
        base,
        framing: Netstring,
    }
}

impl<H: StringHandler> Framing for NetstringFraming<H> {
    // Twisted's `NetstringReceiver.dataReceived` goes on after `loseConnection`.
    const STOPS_WHEN_CLOSING: bool = false;

    fn connection_made(&mut self, base: Base<'_>) {
        self.handler.connection_made(&mut netstring_context(base));
    }

    fn feed(&mut self, data: &[u8]) {
        self.parser.feed(data);
    }

    fn deliver_one(&mut self, base: Base<'_>) -> bool {
        match self.parser.next_frame() {
            None => false,
            Some(Ok(string)) => {
                self.handler
                    .string_received(&mut netstring_context(base), string);
                true
            }
            Some(Err(error)) => {
                // Twisted's `_handleParseError`: `brokenPeer`, then `loseConnection`.
                log_framing_error(base, &error);
                base.core.lose_connection();
                true
            }
        }
    }

    fn connection_lost(&mut self, base: Base<'_>, reason: Failure) {
        self.handler
            .connection_lost(&mut netstring_context(base), reason);
    }
}

/// A protocol that reads and writes netstrings, `len:data,`, for a [`StringHandler`]
/// (Twisted's `NetstringReceiver`, see <http://cr.yp.to/proto/netstrings.txt>).
///
/// Netstrings may be 99999 bytes long unless set otherwise
/// ([`with_max_length`](NetstringReceiver::with_max_length)). Bytes that are not a
/// netstring (a bad length, a missing comma, a length over the maximum, detected before its
/// data arrives) close the connection: the
/// [`NetstringError`](crate::error::NetstringError) is logged, nothing more is delivered,
/// and the handler's `connection_lost` gets the transport's reason,
/// [`ConnectionDone`](crate::error::ConnectionDone) once the output is sent (Twisted sets
/// `brokenPeer` and calls `loseConnection`).
///
/// A handler's [`lose_connection`](StringContext::lose_connection) does not stop the
/// delivery of the netstrings already received, as in Twisted: a client that sends two
/// requests at once gets two answers from a server that closes after answering.
///
/// # Examples
///
/// A server echoing each netstring back:
///
/// ```
/// use std::rc::Rc;
/// use torsion::Reactor;
/// use torsion::protocols::basic::{NetstringReceiver, StringContext, StringHandler};
///
/// struct EchoStrings;
///
/// impl StringHandler for EchoStrings {
///     fn string_received(&mut self, ctx: &mut StringContext<'_>, string: Vec<u8>) {
///         ctx.send_string(&string);
///     }
/// }
///
/// let reactor = Reactor::new().unwrap();
/// let port = reactor
///     .listen_tcp(0, Rc::new(|| NetstringReceiver::new(EchoStrings)))
///     .unwrap();
/// assert_ne!(port.host().port(), Some(0));
/// ```
pub struct NetstringReceiver<H: StringHandler> {
    inner: Rc<Receiver<NetstringFraming<H>>>,
}

impl<H: StringHandler> NetstringReceiver<H> {
    /// A receiver handing netstrings of at most 99999 bytes to `handler` (Twisted's
    /// default `MAX_LENGTH`).
    pub fn new(handler: H) -> Self {
        NetstringReceiver {
            inner: Receiver::new(NetstringFraming {
                parser: NetstringParser::new(),
                handler,
            }),
        }
    }

    /// Accepts netstrings of at most `max_length` bytes (Twisted's `MAX_LENGTH`).
    #[must_use]
    pub fn with_max_length(self, max_length: usize) -> Self {
        self.inner.configure(|body| {
            body.parser = std::mem::take(&mut body.parser).with_max_length(max_length);
        });
        self
    }

    /// A handle to pause and resume this receiver from outside its callbacks.
    pub fn handle(&self) -> ReceiverHandle {
        self.inner.handle()
    }
}

receiver_protocol!(NetstringReceiver, StringHandler);

struct PrefixedFraming<H> {
    parser: PrefixedParser,
    handler: H,
}

impl<H> PrefixedFraming<H> {
    fn context<'a>(&self, base: Base<'a>) -> StringContext<'a, IntN> {
        StringContext {
            base,
            framing: IntN::new(self.parser.width()),
        }
    }
}

impl<H: StringHandler<IntN>> Framing for PrefixedFraming<H> {
    // Twisted's `IntNStringReceiver.dataReceived` goes on after `loseConnection`.
    const STOPS_WHEN_CLOSING: bool = false;

    fn connection_made(&mut self, base: Base<'_>) {
        let mut ctx = self.context(base);
        self.handler.connection_made(&mut ctx);
    }

    fn feed(&mut self, data: &[u8]) {
        self.parser.feed(data);
    }

    fn deliver_one(&mut self, base: Base<'_>) -> bool {
        let mut ctx = self.context(base);
        match self.parser.next_frame() {
            None => false,
            Some(Ok(string)) => {
                self.handler.string_received(&mut ctx, string);
                true
            }
            Some(Err(error)) => {
                self.handler.length_limit_exceeded(&mut ctx, error);
                true
            }
        }
    }

    fn connection_lost(&mut self, base: Base<'_>, reason: Failure) {
        let mut ctx = self.context(base);
        self.handler.connection_lost(&mut ctx, reason);
    }
}

/// A protocol that reads and writes strings each preceded by its length, a big-endian
/// integer of 1, 2 or 4 bytes, for a [`StringHandler<IntN>`](StringHandler) (Twisted's
/// `IntNStringReceiver`: [`int8`](IntNStringReceiver::int8) is `Int8StringReceiver`,
/// [`int16`](IntNStringReceiver::int16) `Int16StringReceiver`,
/// [`int32`](IntNStringReceiver::int32) `Int32StringReceiver`).
///
/// Strings may be 99999 bytes long unless set otherwise
/// ([`with_max_length`](IntNStringReceiver::with_max_length)); a prefix announcing more
/// calls [`length_limit_exceeded`](StringHandler::length_limit_exceeded), which closes the
/// connection by default, before the string's body arrives. As in Twisted, a handler's
/// [`lose_connection`](StringContext::lose_connection) does not stop the delivery of the
/// strings already received.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use torsion::Reactor;
/// use torsion::protocols::basic::{IntN, IntNStringReceiver, StringContext, StringHandler};
///
/// /// Answers each string with its bytes reversed.
/// struct Reverse;
///
/// impl StringHandler<IntN> for Reverse {
///     fn string_received(&mut self, ctx: &mut StringContext<'_, IntN>, mut string: Vec<u8>) {
///         string.reverse();
///         // As long as what it received: it fits the prefix.
///         let _ = ctx.send_string(&string);
///     }
/// }
///
/// let reactor = Reactor::new().unwrap();
/// let _port = reactor
///     .listen_tcp(0, Rc::new(|| IntNStringReceiver::int32(Reverse)))
///     .unwrap();
/// ```
pub struct IntNStringReceiver<H: StringHandler<IntN>> {
    inner: Rc<Receiver<PrefixedFraming<H>>>,
}

impl<H: StringHandler<IntN>> IntNStringReceiver<H> {
    /// A receiver for strings prefixed with `width` bytes of length, of at most 99999 bytes
    /// (Twisted's default `MAX_LENGTH`).
    pub fn new(width: PrefixWidth, handler: H) -> Self {
        IntNStringReceiver {
            inner: Receiver::new(PrefixedFraming {
                parser: PrefixedParser::new(width),
                handler,
            }),
        }
    }

    /// A receiver with a one-byte length prefix (Twisted's `Int8StringReceiver`).
    #[doc(alias = "Int8StringReceiver")]
    pub fn int8(handler: H) -> Self {
        Self::new(PrefixWidth::U8, handler)
    }

    /// A receiver with a two-byte length prefix (Twisted's `Int16StringReceiver`).
    #[doc(alias = "Int16StringReceiver")]
    pub fn int16(handler: H) -> Self {
        Self::new(PrefixWidth::U16, handler)
    }

    /// A receiver with a four-byte length prefix (Twisted's `Int32StringReceiver`).
    #[doc(alias = "Int32StringReceiver")]
    pub fn int32(handler: H) -> Self {
        Self::new(PrefixWidth::U32, handler)
    }

    /// Accepts strings of at most `max_length` bytes (Twisted's `MAX_LENGTH`).
    #[must_use]
    pub fn with_max_length(self, max_length: usize) -> Self {
        self.inner.configure(|body| {
            let width = body.parser.width();
            body.parser = PrefixedParser::new(width).with_max_length(max_length);
        });
        self
    }

    /// A handle to pause and resume this receiver from outside its callbacks.
    pub fn handle(&self) -> ReceiverHandle {
        self.inner.handle()
    }
}

receiver_protocol!(IntNStringReceiver, StringHandler<IntN>);

/// A function applied to each chunk before it is sent (the `transform` of Twisted's
/// `FileSender.beginFileTransfer`), for example to encode or compress it.
pub type Transform = Box<dyn FnMut(Vec<u8>) -> Vec<u8>>;

/// Sends everything a reader produces to a transport, one chunk each time the transport
/// asks for more (Twisted's `FileSender`, a pull producer).
///
/// Start it with [`begin_file_transfer`](FileSender::begin_file_transfer). Each time the
/// transport's buffer drains it calls [`resume_producing`](Producer::resume_producing),
/// and the sender reads and writes at most [`CHUNK_SIZE`](FileSender::CHUNK_SIZE) bytes,
/// so a large file is never held in memory. At the end of the reader it unregisters from
/// the transport, then fires its Deferred.
///
/// # Examples
///
/// Send a file, then close the connection:
///
/// ```
/// use torsion::net::Transport;
/// use torsion::protocols::basic::FileSender;
///
/// fn send_file(transport: Transport, path: &str) -> std::io::Result<()> {
///     let file = std::fs::File::open(path)?;
///     let done = FileSender::begin_file_transfer(file, &transport, None);
///     drop(done.add_both(move |_last_byte| {
///         transport.lose_connection();
///         Ok(())
///     }));
///     Ok(())
/// }
/// ```
pub struct FileSender {
    state: RefCell<SenderState>,
    transform: RefCell<Option<Transform>>,
}

struct SenderState {
    /// `None` once finished, failed or stopped.
    reader: Option<Box<dyn Read>>,
    consumer: Option<Transport>,
    resolver: Option<Resolver<Option<u8>>>,
    /// The last byte written (Twisted's `lastSent`).
    last_sent: Option<u8>,
    /// Reused for each chunk.
    buffer: Vec<u8>,
    /// A read error that came after some bytes of a chunk, reported at the next resume.
    error: Option<io::Error>,
}

impl FileSender {
    /// How much is read and sent per [`resume_producing`](Producer::resume_producing):
    /// 16 KiB (Twisted's `CHUNK_SIZE`).
    pub const CHUNK_SIZE: usize = 16 * 1024;

    /// Registers a sender of everything `reader` produces as `consumer`'s pull producer
    /// (Twisted's `FileSender().beginFileTransfer(file, consumer, transform)`); the first
    /// chunk is sent at once. Each chunk goes through `transform` first, if given.
    ///
    /// The Deferred fires with the last byte sent (`None` if nothing was), after the sender
    /// unregistered, once `reader` reports its end.
    ///
    /// # Errors
    ///
    /// The Deferred fails with the reader's [`io::Error`] (after unregistering), with
    /// [`ProducerStopped`] if the transport stopped the transfer (the connection closed),
    /// or with [`ProducerAlreadyRegistered`](crate::error::ProducerAlreadyRegistered) if
    /// `consumer` already has a producer.
    pub fn begin_file_transfer(
        reader: impl Read + 'static,
        consumer: &Transport,
        transform: Option<Transform>,
    ) -> Deferred<Option<u8>> {
        let (resolver, deferred) = Deferred::new();
        let sender = Rc::new(FileSender {
            state: RefCell::new(SenderState {
                reader: Some(Box::new(reader)),
                consumer: Some(consumer.clone()),
                resolver: Some(resolver),
                last_sent: None,
                buffer: Vec::new(),
                error: None,
            }),
            transform: RefCell::new(transform),
        });
        if let Err(failure) = consumer.register_producer(sender.clone(), false) {
            // Not registered: fail without unregistering the producer that is.
            let resolver = {
                let mut st = sender.state.borrow_mut();
                st.reader = None;
                st.consumer = None;
                st.resolver.take()
            };
            if let Some(resolver) = resolver {
                resolver.errback(failure);
            }
        }
        deferred
    }

    /// Reads the next chunk into `buffer`: up to `CHUNK_SIZE` bytes, fewer only at the
    /// end of the reader or when an error came after some bytes (which are kept).
    fn read_chunk(reader: &mut dyn Read, buffer: &mut Vec<u8>) -> io::Result<()> {
        buffer.clear();
        buffer.reserve(Self::CHUNK_SIZE);
        Read::take(reader, Self::CHUNK_SIZE as u64)
            .read_to_end(buffer)
            .map(drop)
    }

    /// Ends the transfer: unregisters, then fires the Deferred.
    fn finish(&self, outcome: Result<(), Failure>) {
        let (consumer, resolver, last_sent) = {
            let mut st = self.state.borrow_mut();
            st.reader = None;
            st.buffer = Vec::new();
            (st.consumer.take(), st.resolver.take(), st.last_sent)
        };
        if let Some(consumer) = consumer {
            consumer.unregister_producer();
        }
        if let Some(resolver) = resolver {
            match outcome {
                Ok(()) => resolver.callback(last_sent),
                Err(failure) => resolver.errback(failure),
            }
        }
    }
}

impl Producer for FileSender {
    /// Reads and writes the next chunk, or, at the end, unregisters and fires the Deferred
    /// (Twisted's `FileSender.resumeProducing`).
    fn resume_producing(&self) {
        let (reader, mut buffer, earlier_error) = {
            let Ok(mut st) = self.state.try_borrow_mut() else {
                return;
            };
            let Some(reader) = st.reader.take() else {
                return;
            };
            let buffer = std::mem::take(&mut st.buffer);
            (reader, buffer, st.error.take())
        };
        if let Some(error) = earlier_error {
            drop(reader);
            self.finish(Err(Failure::new(error)));
            return;
        }
        let mut reader = reader;
        let read = Self::read_chunk(&mut *reader, &mut buffer);
        let error = match read {
            Ok(()) => None,
            Err(error) if buffer.is_empty() => {
                drop(reader);
                self.finish(Err(Failure::new(error)));
                return;
            }
            Err(error) => Some(error),
        };
        if buffer.is_empty() {
            drop(reader);
            self.finish(Ok(()));
            return;
        }
        let transform = self.transform.borrow_mut().take();
        let chunk = match transform {
            Some(mut transform) => {
                let chunk = transform(buffer);
                *self.transform.borrow_mut() = Some(transform);
                chunk
            }
            None => buffer,
        };
        let consumer = {
            let mut st = self.state.borrow_mut();
            if st.resolver.is_none() {
                // Stopped while reading.
                return;
            }
            st.reader = Some(reader);
            st.error = error;
            st.last_sent = chunk.last().copied();
            st.consumer.clone()
        };
        if let Some(consumer) = consumer {
            consumer.write(&chunk);
        }
        let mut chunk = chunk;
        chunk.clear();
        if chunk.capacity() <= 2 * Self::CHUNK_SIZE
            && let Ok(mut st) = self.state.try_borrow_mut()
            && st.buffer.capacity() == 0
        {
            st.buffer = chunk;
        }
    }

    /// Does nothing: a pull producer is only asked for more when the transport wants it.
    fn pause_producing(&self) {}

    /// Gives up: the Deferred fails with [`ProducerStopped`] (Twisted's "Consumer asked us
    /// to stop producing").
    fn stop_producing(&self) {
        let resolver = {
            let mut st = self.state.borrow_mut();
            st.reader = None;
            st.consumer = None;
            st.buffer = Vec::new();
            st.resolver.take()
        };
        if let Some(resolver) = resolver {
            resolver.errback(ProducerStopped);
        }
    }
}

impl fmt::Debug for FileSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.try_borrow();
        let mut d = f.debug_struct("FileSender");
        if let Ok(st) = st {
            d.field("sending", &st.reader.is_some())
                .field("last_sent", &st.last_sent);
        }
        d.finish_non_exhaustive()
    }
}
