//! [`LineOnlyParser`]: lines without a raw mode, with the limits of Twisted's
//! `twisted.protocols.basic.LineOnlyReceiver`, over a [`LineParser`] kept in line mode.
//!
//! The invariant to keep: **it is a `LineParser` that never leaves line mode**; it only
//! chooses `LineOnlyReceiver`'s rules for over-long lines, and the line search itself is
//! `LineParser`'s.

use super::line::{LengthRules, LineParser};
use crate::error::LineTooLong;

/// Splits a byte stream into lines, without raw mode (the framing of Twisted's
/// `LineOnlyReceiver`): a [`LineParser`] that stays in line mode, with
/// `LineOnlyReceiver`'s rules for over-long lines.
///
/// Those differ from `LineReceiver`'s. A line with more than the maximum bytes before its
/// delimiter is an error, the error carrying that line alone; and so is an unterminated
/// stretch of more than the maximum (Twisted's `len(self._buffer) > self.MAX_LENGTH`),
/// even when it ends with the start of the delimiter: a line of exactly the maximum whose
/// delimiter is cut in two by the packets is refused, as Twisted refuses it. The caller
/// sees this by asking for the next line after each packet, as a receiver does. Use
/// [`LineParser`] (Twisted's `LineReceiver`) where that matters.
///
/// After an error everything buffered is discarded and bytes fed afterwards start a new
/// line. (Twisted's `LineOnlyReceiver` drops the rest of the packet's complete lines but
/// keeps its unterminated tail, and calls `lineLengthExceeded` again with each packet while
/// that tail stays too long; nothing of this is seen by a handler that disconnects, the
/// default.)
///
/// # Examples
///
/// ```
/// use torsion::protocols::framing::LineOnlyParser;
///
/// let mut parser = LineOnlyParser::new().with_delimiter(b"\n");
/// parser.feed(b"one\ntwo\nthr");
/// assert_eq!(parser.next_line(), Some(Ok(&b"one"[..])));
/// assert_eq!(parser.next_line(), Some(Ok(&b"two"[..])));
/// assert_eq!(parser.next_line(), None);
/// assert_eq!(parser.buffered(), b"thr");
/// ```
#[derive(Debug, Clone)]
pub struct LineOnlyParser {
    inner: LineParser,
}

impl Default for LineOnlyParser {
    fn default() -> Self {
        Self::new()
    }
}

impl LineOnlyParser {
    /// Twisted's default `LineOnlyReceiver.MAX_LENGTH`: 16384 bytes.
    pub const DEFAULT_MAX_LENGTH: usize = LineParser::DEFAULT_MAX_LENGTH;

    /// A parser splitting on `b"\r\n"`, with lines of at most 16384 bytes (Twisted's
    /// `LineOnlyReceiver` defaults).
    pub fn new() -> Self {
        let mut inner = LineParser::new();
        inner.rules = LengthRules::LineOnlyReceiver;
        LineOnlyParser { inner }
    }

    /// Splits lines on `delimiter` instead (Twisted's `delimiter` attribute).
    ///
    /// # Panics
    ///
    /// If `delimiter` is empty.
    #[must_use]
    pub fn with_delimiter(self, delimiter: impl Into<Vec<u8>>) -> Self {
        LineOnlyParser {
            inner: self.inner.with_delimiter(delimiter),
        }
    }

    /// Accepts lines of at most `max_length` bytes, delimiter not counted (Twisted's
    /// `MAX_LENGTH`).
    #[must_use]
    pub fn with_max_length(self, max_length: usize) -> Self {
        LineOnlyParser {
            inner: self.inner.with_max_length(max_length),
        }
    }

    /// The delimiter lines end with (what Twisted's `sendLine` appends).
    pub fn delimiter(&self) -> &[u8] {
        self.inner.delimiter()
    }

    /// The longest line accepted, in bytes, delimiter not counted.
    pub fn max_length(&self) -> usize {
        self.inner.max_length()
    }

    /// Appends received bytes to the buffer; nothing is parsed until
    /// [`next_line`](LineOnlyParser::next_line).
    pub fn feed(&mut self, data: &[u8]) {
        self.inner.feed(data);
    }

    /// Takes the next complete line out of the buffer, without its delimiter, or `None` if
    /// more bytes are needed.
    ///
    /// # Errors
    ///
    /// [`LineTooLong`] when the next line has more than the maximum bytes before its
    /// delimiter, or more than the maximum bytes are buffered without a delimiter (Twisted's
    /// `lineLengthExceeded`). The error carries the line, or the bytes buffered when no
    /// delimiter arrived; the buffer is discarded.
    pub fn next_line(&mut self) -> Option<Result<&[u8], LineTooLong>> {
        self.inner.next_line()
    }

    /// Empties the buffer, returning the bytes not parsed yet.
    pub fn clear_line_buffer(&mut self) -> Vec<u8> {
        self.inner.clear_line_buffer()
    }

    /// The bytes received and not parsed yet.
    pub fn buffered(&self) -> &[u8] {
        self.inner.buffered()
    }
}
