//! [`NetstringParser`] and [`netstring_encode`]: netstrings, `len:data,` (Twisted's
//! `twisted.protocols.basic.NetstringReceiver`, see <http://cr.yp.to/proto/netstrings.txt>).
//!
//! The invariant to keep: **the length is checked digit by digit**: a length that passes
//! the maximum, or cannot be parsed, is an error as soon as the digit that makes it so
//! arrives, before any of the data, and then the parser is broken for good.

use super::buffer::RecvBuffer;
use super::header::FrameHeader;
use crate::error::NetstringError;

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
