//! [`PrefixedParser`], [`PrefixWidth`] and [`encode_prefixed`]: strings each after their
//! length, a big-endian integer of 1, 2 or 4 bytes (Twisted's
//! `twisted.protocols.basic.IntNStringReceiver`, as `Int8StringReceiver`,
//! `Int16StringReceiver` and `Int32StringReceiver`).
//!
//! The invariant to keep: **a prefix over the maximum is reported once, before its body**:
//! the parser is then broken, drops what it is fed, and returns no more frames.

use super::buffer::RecvBuffer;
use super::header::FrameHeader;
use crate::error::{LengthLimitExceeded, StringTooLong};

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
