//! Sans-I/O framers: turn a byte stream into lines, netstrings or length-prefixed strings,
//! and back (the parsing half of Twisted's `twisted.protocols.basic`).
//!
//! | torsion | Twisted |
//! | --- | --- |
//! | [`LineParser`] | `LineReceiver` (lines, raw mode, `setLineMode(extra)`, `clearLineBuffer`) |
//! | [`LineOnlyParser`] | `LineOnlyReceiver` |
//! | [`NetstringParser`], [`netstring_encode`] | `NetstringReceiver` |
//! | [`PrefixedParser`], [`encode_prefixed`] | `Int8StringReceiver`, `Int16StringReceiver`, `Int32StringReceiver` |
//!
//! None of them does I/O or needs a reactor: [`feed`](LineParser::feed) them bytes as they
//! arrive, then take frames out one at a time until they return `None`. A protocol wrapper
//! calls its callback between two frames, so the callback may switch modes, pause (by not
//! asking for the next frame until resumed) or disconnect, and what it does applies from the
//! very next byte, exactly as in Twisted. The frames they return do not depend on how the
//! stream was cut into packets, with one exception copied from Twisted: a
//! [`LineOnlyParser`] counts the start of a delimiter as part of the line, so a line of
//! exactly the maximum whose delimiter arrives cut in two is refused.
//!
//! Over-long lines are reported at the very byte where Twisted's `LineReceiver` and
//! `LineOnlyReceiver` report them, with the bytes Twisted hands to `lineLengthExceeded`
//! ([`LineTooLong::line`]); `tests/basic_protocols.rs` holds a table of cases measured
//! against Twisted.
//!
//! The invariant to keep: **every byte is looked at a bounded number of times**. The
//! buffers keep a read offset instead of removing each frame from the front of a `Vec`, and
//! move the unread bytes to the front only once the read ones are at least as many, so
//! parsing is O(n) in the bytes fed, however they are split; the line search resumes where
//! the last one stopped.

use crate::error::{LengthLimitExceeded, LineTooLong, NetstringError, StringTooLong};

/// Bytes received and not parsed yet: a `Vec` with a read offset.
#[derive(Debug, Clone, Default)]
struct RecvBuffer {
    data: Vec<u8>,
    /// Bytes before this index have been parsed.
    start: usize,
}

impl RecvBuffer {
    /// Appends `bytes`, first moving the unread bytes to the front if the read ones are at
    /// least as many (each byte is moved at most once for each byte read before it: O(1)
    /// amortised). Returns how far the unread bytes moved back.
    fn feed(&mut self, bytes: &[u8]) -> usize {
        let shift = self.compact();
        self.data.extend_from_slice(bytes);
        shift
    }

    fn compact(&mut self) -> usize {
        let shift = self.start;
        let live = self.data.len() - shift;
        if shift == 0 || shift < live {
            return 0;
        }
        self.data.copy_within(shift.., 0);
        self.data.truncate(live);
        self.start = 0;
        shift
    }

    fn unread(&self) -> &[u8] {
        &self.data[self.start..]
    }

    fn len(&self) -> usize {
        self.data.len() - self.start
    }

    fn is_empty(&self) -> bool {
        self.start == self.data.len()
    }

    /// Marks the next `n` unread bytes read and returns them.
    fn take(&mut self, n: usize) -> &[u8] {
        let from = self.start;
        self.start += n;
        &self.data[from..self.start]
    }

    fn take_all(&mut self) -> &[u8] {
        self.take(self.len())
    }

    fn take_all_owned(&mut self) -> Vec<u8> {
        let bytes = if self.start == 0 {
            std::mem::take(&mut self.data)
        } else {
            self.unread().to_vec()
        };
        self.clear();
        bytes
    }

    fn clear(&mut self) {
        self.data.clear();
        self.start = 0;
    }

    /// Puts `bytes` in front of the unread bytes.
    fn prepend(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.is_empty() {
            self.clear();
            self.data.extend_from_slice(bytes);
        } else if bytes.len() <= self.start {
            let at = self.start - bytes.len();
            self.data[at..self.start].copy_from_slice(bytes);
            self.start = at;
        } else {
            let mut data = Vec::with_capacity(bytes.len() + self.len());
            data.extend_from_slice(bytes);
            data.extend_from_slice(self.unread());
            self.data = data;
            self.start = 0;
        }
    }
}

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
    rules: LengthRules,
}

/// When an unterminated line is too long, and what the error carries: Twisted's
/// `LineReceiver` and `LineOnlyReceiver` differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LengthRules {
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
    fn next_line(&mut self) -> Option<Result<&[u8], LineTooLong>> {
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

/// Where a [`NetstringParser`] is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NetstringState {
    /// Reading the decimal length: its value and digit count so far.
    Length { value: usize, digits: usize },
    /// The length was read: waiting for that many bytes and the comma.
    Data { length: usize },
    /// A parse error was reported; nothing more is parsed.
    Broken(NetstringError),
}

/// Splits a byte stream into netstrings, `len:data,` (the parsing of Twisted's
/// `NetstringReceiver`, see <http://cr.yp.to/proto/netstrings.txt>).
///
/// The length is decimal digits without leading zeros (`0:,` is the empty string, `01:a,`
/// is an error, as in Twisted), and at most the maximum (Twisted's `MAX_LENGTH`, 99999 by
/// default): a longer one is an error as soon as its digits pass the maximum, before any of
/// the data arrives.
///
/// After an error the parser is broken for good (Twisted's `brokenPeer`): the error is
/// returned once, then [`next_frame`](NetstringParser::next_frame) returns `None` and
/// [`feed`](NetstringParser::feed) drops what it is given; [`error`](NetstringParser::error)
/// tells which error it was. The caller normally disconnects.
///
/// # Examples
///
/// ```
/// use torsion::error::NetstringError;
/// use torsion::protocols::framing::{NetstringParser, netstring_encode};
///
/// let mut wire = Vec::new();
/// netstring_encode(b"hello", &mut wire);
/// netstring_encode(b"", &mut wire);
/// assert_eq!(wire, b"5:hello,0:,");
///
/// let mut parser = NetstringParser::new();
/// parser.feed(&wire);
/// parser.feed(b"3:abc;");
/// assert_eq!(parser.next_frame(), Some(Ok(b"hello".to_vec())));
/// assert_eq!(parser.next_frame(), Some(Ok(Vec::new())));
/// assert_eq!(parser.next_frame(), Some(Err(NetstringError::MissingComma)));
/// assert_eq!(parser.next_frame(), None);
/// assert_eq!(parser.error(), Some(NetstringError::MissingComma));
/// ```
#[derive(Debug, Clone)]
pub struct NetstringParser {
    buf: RecvBuffer,
    max_length: usize,
    state: NetstringState,
}

impl Default for NetstringParser {
    fn default() -> Self {
        Self::new()
    }
}

impl NetstringParser {
    /// Twisted's default `NetstringReceiver.MAX_LENGTH`: 99999 bytes.
    pub const DEFAULT_MAX_LENGTH: usize = 99999;

    /// A parser accepting netstrings of at most 99999 bytes (Twisted's default).
    pub fn new() -> Self {
        NetstringParser {
            buf: RecvBuffer::default(),
            max_length: Self::DEFAULT_MAX_LENGTH,
            state: NetstringState::Length {
                value: 0,
                digits: 0,
            },
        }
    }

    /// Accepts netstrings of at most `max_length` bytes (Twisted's `MAX_LENGTH`).
    #[must_use]
    pub fn with_max_length(mut self, max_length: usize) -> Self {
        self.max_length = max_length;
        self
    }

    /// The longest netstring accepted, in bytes of data.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Appends received bytes to the buffer (or drops them, once the parser is broken);
    /// nothing is parsed until [`next_frame`](NetstringParser::next_frame).
    pub fn feed(&mut self, data: &[u8]) {
        if !matches!(self.state, NetstringState::Broken(_)) {
            self.buf.feed(data);
        }
    }

    /// Takes the next complete netstring's data out of the buffer, or `None` if more bytes
    /// are needed (or the parser is broken).
    ///
    /// # Errors
    ///
    /// A [`NetstringError`] saying why the stream is not netstrings. It is returned once;
    /// the parser is then broken, and the buffer discarded.
    pub fn next_frame(&mut self) -> Option<Result<Vec<u8>, NetstringError>> {
        loop {
            match self.state {
                NetstringState::Broken(_) => return None,
                NetstringState::Length { value, digits } => {
                    let (read, outcome) = self.read_length(value, digits);
                    self.buf.take(read);
                    match outcome {
                        LengthOutcome::Partial { value, digits } => {
                            self.state = NetstringState::Length { value, digits };
                            return None;
                        }
                        LengthOutcome::Done(length) => {
                            self.state = NetstringState::Data { length };
                        }
                        LengthOutcome::Failed(error) => return Some(Err(self.fail(error))),
                    }
                }
                NetstringState::Data { length } => {
                    // `length + 1` may overflow with a maximum of `usize::MAX`.
                    if self.buf.len() <= length {
                        return None;
                    }
                    let bytes = self.buf.take(length + 1);
                    if bytes[length] != b',' {
                        return Some(Err(self.fail(NetstringError::MissingComma)));
                    }
                    let data = bytes[..length].to_vec();
                    self.state = NetstringState::Length {
                        value: 0,
                        digits: 0,
                    };
                    return Some(Ok(data));
                }
            }
        }
    }

    /// Reads length digits from the buffer, continuing from `value` and `digits`: how many
    /// bytes were read, and what came of them.
    fn read_length(&self, mut value: usize, mut digits: usize) -> (usize, LengthOutcome) {
        let bytes = self.buf.unread();
        for (i, &byte) in bytes.iter().enumerate() {
            let outcome = match byte {
                b'0'..=b'9' if digits > 0 && value == 0 => {
                    LengthOutcome::Failed(NetstringError::BadLength)
                }
                b'0'..=b'9' => match value
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(usize::from(byte - b'0')))
                {
                    None => LengthOutcome::Failed(NetstringError::LengthTooLongToParse),
                    Some(declared) if declared > self.max_length => {
                        LengthOutcome::Failed(NetstringError::TooLong {
                            declared,
                            max: self.max_length,
                        })
                    }
                    Some(next) => {
                        value = next;
                        digits += 1;
                        continue;
                    }
                },
                b':' if digits > 0 => LengthOutcome::Done(value),
                _ => LengthOutcome::Failed(NetstringError::BadLength),
            };
            return (i + 1, outcome);
        }
        (bytes.len(), LengthOutcome::Partial { value, digits })
    }

    fn fail(&mut self, error: NetstringError) -> NetstringError {
        self.state = NetstringState::Broken(error);
        self.buf = RecvBuffer::default();
        error
    }

    /// The error that broke the parser, if one did (Twisted's `brokenPeer`).
    pub fn error(&self) -> Option<NetstringError> {
        match self.state {
            NetstringState::Broken(error) => Some(error),
            _ => None,
        }
    }

    /// The bytes received and not parsed yet (the digits of a length already read are not
    /// among them).
    pub fn buffered(&self) -> &[u8] {
        self.buf.unread()
    }
}

/// What reading a netstring's length prefix came to.
enum LengthOutcome {
    /// The buffer ended inside the prefix.
    Partial {
        value: usize,
        digits: usize,
    },
    /// The prefix and its colon were read.
    Done(usize),
    Failed(NetstringError),
}

/// Appends `data` as a netstring, `len:data,`, to `out` (what Twisted's
/// `NetstringReceiver.sendString` writes).
///
/// # Examples
///
/// ```
/// let mut out = Vec::new();
/// torsion::protocols::framing::netstring_encode(b"1:a,", &mut out);
/// assert_eq!(out, b"4:1:a,,");
/// ```
pub fn netstring_encode(data: &[u8], out: &mut Vec<u8>) {
    let header = FrameHeader::netstring(data.len());
    out.reserve(header.as_bytes().len() + data.len() + 1);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out.push(b',');
}

/// What goes before a frame's data, built on the stack: a netstring's `len:`, or a
/// big-endian length prefix. Lets a sender write a frame as a sequence of slices, without
/// copying the data.
pub(crate) struct FrameHeader {
    bytes: [u8; 21],
    start: usize,
}

impl FrameHeader {
    /// A netstring's header, `len:` (the frame ends with `,` after the data).
    pub(crate) fn netstring(length: usize) -> FrameHeader {
        let mut bytes = [0u8; 21];
        let mut at = bytes.len() - 1;
        bytes[at] = b':';
        let mut length = length;
        loop {
            at -= 1;
            // `length % 10` is a digit: the cast cannot truncate.
            bytes[at] = b'0' + (length % 10) as u8;
            length /= 10;
            if length == 0 {
                break;
            }
        }
        FrameHeader { bytes, start: at }
    }

    /// A `width`-byte big-endian length prefix.
    ///
    /// # Errors
    ///
    /// [`StringTooLong`] if the prefix cannot announce `length`.
    pub(crate) fn prefix(width: PrefixWidth, length: usize) -> Result<FrameHeader, StringTooLong> {
        let max = width.max_string_len();
        if length > max {
            return Err(StringTooLong { length, max });
        }
        // Fits in `width` bytes, so in a u32.
        let be = (length as u64).to_be_bytes();
        let mut bytes = [0u8; 21];
        let start = bytes.len() - width.bytes();
        bytes[start..].copy_from_slice(&be[8 - width.bytes()..]);
        Ok(FrameHeader { bytes, start })
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

/// The size of a big-endian length prefix: Twisted's `Int8StringReceiver`,
/// `Int16StringReceiver` and `Int32StringReceiver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrefixWidth {
    /// One byte (`Int8StringReceiver`, struct format `!B`).
    U8,
    /// Two bytes (`Int16StringReceiver`, struct format `!H`).
    U16,
    /// Four bytes (`Int32StringReceiver`, struct format `!I`).
    U32,
}

impl PrefixWidth {
    /// How many bytes the prefix takes (Twisted's `prefixLength`).
    pub fn bytes(self) -> usize {
        match self {
            PrefixWidth::U8 => 1,
            PrefixWidth::U16 => 2,
            PrefixWidth::U32 => 4,
        }
    }

    /// The longest string the prefix can announce: 255, 65535 or 4294967295 bytes.
    pub fn max_string_len(self) -> usize {
        match self {
            PrefixWidth::U8 => u8::MAX.into(),
            PrefixWidth::U16 => u16::MAX.into(),
            PrefixWidth::U32 => usize::try_from(u32::MAX).unwrap_or(usize::MAX),
        }
    }

    /// Reads a prefix from the first [`bytes`](PrefixWidth::bytes) of `prefix`.
    fn read(self, prefix: &[u8]) -> usize {
        let value = prefix[..self.bytes()]
            .iter()
            .fold(0u64, |value, &byte| (value << 8) | u64::from(byte));
        usize::try_from(value).unwrap_or(usize::MAX)
    }
}

/// Splits a byte stream into strings each preceded by its length, a big-endian integer of
/// 1, 2 or 4 bytes (the parsing of Twisted's `Int8StringReceiver`, `Int16StringReceiver` and
/// `Int32StringReceiver`, all `IntNStringReceiver`).
///
/// A prefix announcing more than the maximum (Twisted's `MAX_LENGTH`, 99999 by default) is an
/// error as soon as the prefix arrives; the body is never delivered. The parser is then
/// broken for good: the error is returned once, then
/// [`next_frame`](PrefixedParser::next_frame) returns `None` and
/// [`feed`](PrefixedParser::feed) drops what it is given. (Twisted calls
/// `lengthLimitExceeded` again on every later packet unless the connection was dropped.)
///
/// # Examples
///
/// ```
/// use torsion::error::LengthLimitExceeded;
/// use torsion::protocols::framing::{PrefixWidth, PrefixedParser, encode_prefixed};
///
/// let mut wire = Vec::new();
/// encode_prefixed(PrefixWidth::U16, b"foo", &mut wire).unwrap();
/// assert_eq!(wire, b"\0\x03foo");
///
/// let mut parser = PrefixedParser::new(PrefixWidth::U16).with_max_length(10);
/// parser.feed(&wire[..2]);
/// assert_eq!(parser.next_frame(), None);
/// parser.feed(&wire[2..]);
/// assert_eq!(parser.next_frame(), Some(Ok(b"foo".to_vec())));
/// parser.feed(b"\0\x0b");
/// assert_eq!(
///     parser.next_frame(),
///     Some(Err(LengthLimitExceeded { length: 11, max: 10 }))
/// );
/// ```
#[derive(Debug, Clone)]
pub struct PrefixedParser {
    buf: RecvBuffer,
    width: PrefixWidth,
    max_length: usize,
    broken: Option<LengthLimitExceeded>,
}

impl PrefixedParser {
    /// Twisted's default `IntNStringReceiver.MAX_LENGTH`: 99999 bytes.
    pub const DEFAULT_MAX_LENGTH: usize = 99999;

    /// A parser for strings prefixed with `width` bytes of length, of at most 99999 bytes
    /// (Twisted's default).
    pub fn new(width: PrefixWidth) -> Self {
        PrefixedParser {
            buf: RecvBuffer::default(),
            width,
            max_length: Self::DEFAULT_MAX_LENGTH,
            broken: None,
        }
    }

    /// Accepts strings of at most `max_length` bytes (Twisted's `MAX_LENGTH`).
    #[must_use]
    pub fn with_max_length(mut self, max_length: usize) -> Self {
        self.max_length = max_length;
        self
    }

    /// The size of the length prefix.
    pub fn width(&self) -> PrefixWidth {
        self.width
    }

    /// The longest string accepted, in bytes.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Appends received bytes to the buffer (or drops them, once the parser is broken);
    /// nothing is parsed until [`next_frame`](PrefixedParser::next_frame).
    pub fn feed(&mut self, data: &[u8]) {
        if self.broken.is_none() {
            self.buf.feed(data);
        }
    }

    /// Takes the next complete string out of the buffer, or `None` if more bytes are needed
    /// (or the parser is broken).
    ///
    /// # Errors
    ///
    /// [`LengthLimitExceeded`] when a prefix announces more than the maximum (Twisted's
    /// `lengthLimitExceeded(length)`). It is returned once; the parser is then broken, and
    /// the buffer discarded.
    pub fn next_frame(&mut self) -> Option<Result<Vec<u8>, LengthLimitExceeded>> {
        if self.broken.is_some() {
            return None;
        }
        let header = self.width.bytes();
        let bytes = self.buf.unread();
        if bytes.len() < header {
            return None;
        }
        let length = self.width.read(bytes);
        if length > self.max_length {
            let error = LengthLimitExceeded {
                length,
                max: self.max_length,
            };
            self.broken = Some(error);
            self.buf = RecvBuffer::default();
            return Some(Err(error));
        }
        if bytes.len() - header < length {
            return None;
        }
        let frame = self.buf.take(header + length)[header..].to_vec();
        Some(Ok(frame))
    }

    /// The error that broke the parser, if one did.
    pub fn error(&self) -> Option<LengthLimitExceeded> {
        self.broken
    }

    /// The bytes received and not parsed yet.
    pub fn buffered(&self) -> &[u8] {
        self.buf.unread()
    }
}

/// Appends `data` to `out` preceded by its length as a big-endian integer of `width` (what
/// Twisted's `IntNStringReceiver.sendString` writes).
///
/// # Errors
///
/// [`StringTooLong`] if `data` is longer than the prefix can announce (Twisted's
/// `StringTooLongError`); nothing is written then.
///
/// # Examples
///
/// ```
/// use torsion::protocols::framing::{PrefixWidth, encode_prefixed};
///
/// let mut out = Vec::new();
/// encode_prefixed(PrefixWidth::U32, b"foo", &mut out).unwrap();
/// assert_eq!(out, b"\0\0\0\x03foo");
/// assert!(encode_prefixed(PrefixWidth::U8, &[0; 256], &mut out).is_err());
/// assert_eq!(out.len(), 7);
/// ```
pub fn encode_prefixed(
    width: PrefixWidth,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), StringTooLong> {
    let header = FrameHeader::prefix(width, data.len())?;
    out.reserve(header.as_bytes().len() + data.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    Ok(())
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

    #[test]
    fn the_buffer_compacts_only_when_the_read_bytes_outnumber_the_unread() {
        let mut buf = RecvBuffer::default();
        buf.feed(b"abcdef");
        buf.take(2);
        assert_eq!(buf.feed(b"g"), 0);
        assert_eq!(buf.unread(), b"cdefg");
        buf.take(3);
        assert_eq!(buf.feed(b"h"), 5);
        assert_eq!(buf.data, b"fgh");
        buf.take(1);
        buf.prepend(b"x");
        assert_eq!(buf.unread(), b"xgh");
        buf.prepend(b"yz");
        assert_eq!(buf.unread(), b"yzxgh");
        assert_eq!(buf.take_all_owned(), b"yzxgh");
        assert!(buf.is_empty());
    }
}
