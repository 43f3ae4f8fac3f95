//! [`FrameHeader`]: what goes before a frame's data, a netstring's `len:` or a big-endian
//! length prefix, built on the stack (what Twisted's `NetstringReceiver.sendString` and
//! `IntNStringReceiver.sendString` put before the string, in
//! `twisted.protocols.basic`). The encoders here and the senders of
//! [`basic`](crate::protocols::basic) write a frame as header, data (and a netstring's
//! comma) without copying the data.
//!
//! The invariant to keep: **a header never allocates**: 21 bytes hold the longest, a
//! `usize` in decimal and its colon.

use super::PrefixWidth;
use crate::error::StringTooLong;

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
