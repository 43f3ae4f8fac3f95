//! Lines without a raw mode: [`LineOnlyReceiver`], the [`LineOnlyHandler`] it calls and the
//! [`LineOnlyContext`] a handler gets (Twisted's `twisted.protocols.basic.LineOnlyReceiver`).
//! Its senders are [`LineSender`]s, as a [`LineReceiver`](super::LineReceiver)'s are.
//!
//! The framer is a [`LineOnlyParser`]. With no mode to switch and no buffer to clear, the
//! context does not reach the parser, so each line goes to the handler straight from the
//! parser's buffer, without a copy.
//!
//! The invariant to keep: **the context never reaches the parser** (the line it hands over
//! borrows the parser's buffer); what it needs of the parser, the delimiter, is kept beside
//! it.

use std::fmt;
use std::rc::Rc;

use super::LineSender;
use super::receiver::{
    Base, Framing, Receiver, ReceiverHandle, context_common, log_framing_error, receiver_protocol,
};
use crate::defer::Failure;
use crate::error::LineTooLong;
use crate::protocols::framing::LineOnlyParser;

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
