//! Lines with a raw mode: [`LineReceiver`] and the [`LineHandler`] it calls, the
//! [`LineContext`] a handler gets, and the [`LineSender`] it can keep (Twisted's
//! `twisted.protocols.basic.LineReceiver`).
//!
//! The framer is a [`LineParser`]. A line borrows the parser's buffer, and the context gives
//! the handler the parser itself (to switch modes or clear the buffer from inside
//! `line_received`), so each line or raw chunk is first copied into a buffer the receiver
//! reuses: one `memcpy`, no allocation. In raw mode with nothing buffered, received bytes go
//! to `raw_data_received` straight from the transport's read buffer.
//!
//! The invariant to keep: **whatever the handler does through its context applies from the
//! very next byte**: the receiver asks the parser for one event at a time, and never
//! parses ahead of the handler.

use std::fmt;
use std::rc::Rc;

use super::receiver::{
    Base, Framing, Receiver, ReceiverHandle, context_common, log_framing_error, receiver_protocol,
};
use crate::defer::Failure;
use crate::error::LineTooLong;
use crate::net::Transport;
use crate::protocols::framing::{LineEvent, LineParser};

/// A reused buffer keeps at most this much capacity between frames.
const KEEP_CAPACITY: usize = 64 * 1024;

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

    /// Starts TLS on the connection after this line (STARTTLS, Twisted's
    /// `transport.startTLS` from `lineReceived`): the bytes received after the line are
    /// the start of the TLS stream, so they are taken from the line buffer and handed to
    /// the transport to decrypt, and nothing at the boundary is lost or read as lines.
    ///
    /// # Errors
    ///
    /// As for [`TransportOps::start_tls`](crate::net::TransportOps::start_tls).
    pub fn start_tls(&mut self, start: crate::tls::StartTls) -> Result<(), Failure> {
        let received = self.parser.clear_line_buffer();
        self.base.transport.start_tls(start.with_received(received))
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
/// Get one from [`LineContext::sender`] or
/// [`LineOnlyContext::sender`](super::LineOnlyContext::sender), typically in
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
    pub(super) transport: Transport,
    pub(super) delimiter: Rc<[u8]>,
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
