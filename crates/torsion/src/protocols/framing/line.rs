//! [`LineParser`] and the [`LineEvent`]s it hands out: lines, with a raw mode for the
//! stretches that are not lines (the framing of Twisted's
//! `twisted.protocols.basic.LineReceiver`), and the rules for over-long lines that
//! [`LineOnlyParser`](super::LineOnlyParser) reuses with `LineOnlyReceiver`'s limits.
//!
//! The invariant to keep: **`search_from` is a promise**: no full delimiter starts in the
//! unread bytes before it, so the next search resumes there instead of scanning the line
//! again. Every change to the buffer (feeding, taking, prepending, clearing, a new
//! delimiter) moves it so that the promise still holds.

use super::buffer::RecvBuffer;
use crate::error::LineTooLong;

/// The first index at which `needle` (not empty) occurs in `hay`: a scan for its first byte,
/// then a comparison of the rest.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let last_start = hay.len().checked_sub(needle.len())?;
    let mut at = 0;
    while at <= last_start {
        let p = at + hay[at..=last_start].iter().position(|&b| b == first)?;
        if hay[p + 1..p + needle.len()] == *rest {
            return Some(p);
        }
        at = p + 1;
    }
    None
}

/// One event out of a [`LineParser`]: a line in line mode, or everything buffered in raw
/// mode (what Twisted's `LineReceiver` passes to `lineReceived` and `rawDataReceived`).
///
/// The bytes borrow the parser's buffer until the next call on it; copy them
/// ([`to_vec`](slice::to_vec)) to keep them longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEvent<'a> {
    /// A line, without its delimiter (`lineReceived(line)`).
    Line(&'a [u8]),
    /// All the bytes buffered in raw mode (`rawDataReceived(data)`); never empty.
    Raw(&'a [u8]),
}

impl<'a> LineEvent<'a> {
    /// The line or raw bytes, whichever this is.
    pub fn bytes(&self) -> &'a [u8] {
        match *self {
            LineEvent::Line(bytes) | LineEvent::Raw(bytes) => bytes,
        }
    }
}

/// Splits a byte stream into lines, with a raw mode for the stretches that are not lines
/// (the framing of Twisted's `LineReceiver`).
///
/// [`feed`](LineParser::feed) it bytes, then call [`next_event`](LineParser::next_event)
/// until it returns `None`. Each call takes a single event, so whoever handles an event can
/// switch modes ([`set_raw_mode`](LineParser::set_raw_mode),
/// [`set_line_mode`](LineParser::set_line_mode)) or stop asking (Twisted's
/// `pauseProducing`) and the change applies from the next byte on. The event borrows the
/// parser, so a wrapper whose handler switches modes either copies the bytes first or lets
/// the handler record the switch and applies it once the handler returns (the same thing,
/// since nothing is parsed in between).
///
/// A line longer than the maximum (Twisted's `MAX_LENGTH`, 16384 bytes by default) is an
/// error, reported when its delimiter arrives, or, before that, once the maximum plus the
/// delimiter's length have arrived without one: then no line of at most the maximum can
/// start there (Twisted's `len(self._buffer) >= self.MAX_LENGTH + len(self.delimiter)`). A
/// line of exactly the maximum is accepted, also when its delimiter arrives cut in two.
///
/// # Examples
///
/// An HTTP-like exchange: a header line announces a body, read in raw mode, then lines again.
///
/// ```
/// use torsion::protocols::framing::{LineEvent, LineParser};
///
/// let mut parser = LineParser::new();
/// parser.feed(b"BODY 5\r\nhelloQUIT\r");
/// assert_eq!(parser.next_event(), Some(Ok(LineEvent::Line(b"BODY 5"))));
/// parser.set_raw_mode();
/// let raw = match parser.next_event() {
///     Some(Ok(LineEvent::Raw(raw))) => raw.to_vec(),
///     other => panic!("expected raw bytes, got {other:?}"),
/// };
/// assert_eq!(raw, b"helloQUIT\r");
/// // The body was 5 bytes: hand back the rest to be parsed as lines.
/// parser.set_line_mode(&raw[5..]);
/// assert_eq!(parser.next_event(), None); // "QUIT\r" waits for its "\n"
/// parser.feed(b"\n");
/// assert_eq!(parser.next_event(), Some(Ok(LineEvent::Line(b"QUIT"))));
/// ```
#[derive(Debug, Clone)]
pub struct LineParser {
    buf: RecvBuffer,
    delimiter: Vec<u8>,
    max_length: usize,
    raw: bool,
    /// No full delimiter starts in `buf.data[buf.start..search_from]`.
    search_from: usize,
    /// Whose rules for over-long lines apply.
    pub(super) rules: LengthRules,
}

/// When an unterminated line is too long, and what the error carries: Twisted's
/// `LineReceiver` and `LineOnlyReceiver` differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LengthRules {
    /// `LineReceiver`: too long once `max + len(delimiter)` bytes arrived without a
    /// delimiter; the error carries everything buffered from the line's start.
    LineReceiver,
    /// `LineOnlyReceiver`: too long once more than `max` bytes arrived without a delimiter;
    /// the error carries the line alone when its delimiter arrived.
    LineOnlyReceiver,
}

impl Default for LineParser {
    fn default() -> Self {
        Self::new()
    }
}

impl LineParser {
    /// Twisted's default `LineReceiver.MAX_LENGTH`: 16384 bytes.
    pub const DEFAULT_MAX_LENGTH: usize = 16384;

    /// A parser in line mode, splitting on `b"\r\n"`, with lines of at most 16384 bytes
    /// (Twisted's `LineReceiver` defaults).
    pub fn new() -> Self {
        LineParser {
            buf: RecvBuffer::default(),
            delimiter: b"\r\n".to_vec(),
            max_length: Self::DEFAULT_MAX_LENGTH,
            raw: false,
            search_from: 0,
            rules: LengthRules::LineReceiver,
        }
    }

    /// Splits lines on `delimiter` instead (Twisted's `delimiter` attribute).
    ///
    /// # Panics
    ///
    /// If `delimiter` is empty.
    #[must_use]
    pub fn with_delimiter(mut self, delimiter: impl Into<Vec<u8>>) -> Self {
        let delimiter = delimiter.into();
        assert!(
            !delimiter.is_empty(),
            "LineParser::with_delimiter: the delimiter must not be empty"
        );
        self.delimiter = delimiter;
        self.search_from = self.buf.start;
        self
    }

    /// Accepts lines of at most `max_length` bytes, delimiter not counted (Twisted's
    /// `MAX_LENGTH`).
    #[must_use]
    pub fn with_max_length(mut self, max_length: usize) -> Self {
        self.max_length = max_length;
        self
    }

    /// The delimiter lines end with (what Twisted's `sendLine` appends).
    pub fn delimiter(&self) -> &[u8] {
        &self.delimiter
    }

    /// The longest line accepted, in bytes, delimiter not counted.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Appends received bytes to the buffer; nothing is parsed until
    /// [`next_event`](LineParser::next_event).
    pub fn feed(&mut self, data: &[u8]) {
        let shift = self.buf.feed(data);
        self.search_from = self.search_from.saturating_sub(shift);
    }

    /// Takes the next event out of the buffer, or `None` if more bytes are needed.
    ///
    /// In line mode this is the next complete line, without its delimiter; in raw mode, all
    /// the buffered bytes at once (`None` if there are none).
    ///
    /// # Errors
    ///
    /// [`LineTooLong`] when the line at the front of the buffer is longer than the maximum:
    /// its delimiter arrived more than the maximum bytes after its start, or the maximum
    /// plus the delimiter's length arrived without one. The error carries the whole buffer
    /// from the start of that line ([`LineTooLong::line`], what Twisted's `LineReceiver`
    /// passes to `lineLengthExceeded`), which is discarded, so the error is reported once;
    /// the caller normally disconnects. Bytes fed afterwards start a new line.
    pub fn next_event(&mut self) -> Option<Result<LineEvent<'_>, LineTooLong>> {
        if self.raw {
            if self.buf.is_empty() {
                return None;
            }
            self.search_from = self.buf.data.len();
            return Some(Ok(LineEvent::Raw(self.buf.take_all())));
        }
        self.next_line().map(|result| result.map(LineEvent::Line))
    }

    /// The next line (line mode's half of `next_event`).
    pub(super) fn next_line(&mut self) -> Option<Result<&[u8], LineTooLong>> {
        let start = self.buf.start;
        let end = self.buf.data.len();
        if start == end {
            return None;
        }
        let width = self.delimiter.len();
        let from = self.search_from.max(start);
        match find(&self.buf.data[from..], &self.delimiter) {
            Some(at) => {
                let length = from + at - start;
                if length > self.max_length {
                    return Some(Err(self.too_long(length, true)));
                }
                self.search_from = start + length + width;
                let line = self.buf.take(length + width);
                Some(Ok(&line[..length]))
            }
            None => {
                // Every start up to the last `width - 1` bytes has been ruled out.
                self.search_from = (end + 1).saturating_sub(width).max(from);
                let length = end - start;
                let too_long = match self.rules {
                    // `len(self._buffer) >= self.MAX_LENGTH + len(self.delimiter)`
                    LengthRules::LineReceiver => length >= self.max_length.saturating_add(width),
                    // `len(self._buffer) > self.MAX_LENGTH`
                    LengthRules::LineOnlyReceiver => length > self.max_length,
                };
                if too_long {
                    return Some(Err(self.too_long(length, false)));
                }
                None
            }
        }
    }

    /// Empties the buffer into the error for a line of `length` bytes (`delimited` if its
    /// delimiter arrived).
    fn too_long(&mut self, length: usize, delimited: bool) -> LineTooLong {
        let mut line = self.buf.take_all_owned();
        if delimited && self.rules == LengthRules::LineOnlyReceiver {
            line.truncate(length);
        }
        self.search_from = 0;
        LineTooLong {
            length,
            max: self.max_length,
            line,
        }
    }

    /// Switches to raw mode: [`next_event`](LineParser::next_event) returns everything
    /// buffered as [`LineEvent::Raw`] (Twisted's `setRawMode`).
    pub fn set_raw_mode(&mut self) {
        self.raw = true;
    }

    /// Switches to line mode, parsing `extra` first, then what is still buffered (Twisted's
    /// `setLineMode(extra)`).
    ///
    /// From a raw-mode handler, `extra` is the part of the raw bytes it did not use. Unlike
    /// Twisted, which appends `extra` to the buffer, it goes in front of the buffered bytes,
    /// so it is also safe to pass from a line handler.
    pub fn set_line_mode(&mut self, extra: &[u8]) {
        self.raw = false;
        if !extra.is_empty() {
            self.buf.prepend(extra);
            self.search_from = self.buf.start;
        }
    }

    /// Whether the parser is in raw mode.
    pub fn is_raw(&self) -> bool {
        self.raw
    }

    /// Empties the buffer, returning the bytes not parsed yet (Twisted's `clearLineBuffer`).
    pub fn clear_line_buffer(&mut self) -> Vec<u8> {
        self.search_from = 0;
        self.buf.take_all_owned()
    }

    /// The bytes received and not parsed yet.
    pub fn buffered(&self) -> &[u8] {
        self.buf.unread()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_locates_the_first_full_occurrence() {
        assert_eq!(find(b"abc", b"\r\n"), None);
        assert_eq!(find(b"a\r\r\nb", b"\r\n"), Some(2));
        assert_eq!(find(b"aab", b"ab"), Some(1));
        assert_eq!(find(b"\r", b"\r\n"), None);
        assert_eq!(find(b"", b"x"), None);
        assert_eq!(find(b"x", b"x"), Some(0));
    }
}
