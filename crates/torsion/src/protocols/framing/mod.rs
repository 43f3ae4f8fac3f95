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
//! ([`LineTooLong::line`](crate::error::LineTooLong::line)); `tests/basic_protocols.rs`
//! holds a table of cases measured against Twisted.
//!
//! Each framer has its file (`line.rs`, `line_only.rs`, `netstring.rs`, `prefixed.rs`),
//! over the receive buffer they share (`buffer.rs`); `header.rs` builds the header a sender
//! writes before a frame's data. All are re-exported here.
//!
//! The invariant to keep: **every byte is looked at a bounded number of times**. The
//! buffers keep a read offset instead of removing each frame from the front of a `Vec`, and
//! move the unread bytes to the front only once the read ones are at least as many, so
//! parsing is O(n) in the bytes fed, however they are split; the line search resumes where
//! the last one stopped.

mod buffer;
mod header;
mod line;
mod line_only;
mod netstring;
mod prefixed;

pub(crate) use header::FrameHeader;
pub use line::{LineEvent, LineParser};
pub use line_only::LineOnlyParser;
pub use netstring::{NetstringParser, netstring_encode};
pub use prefixed::{PrefixWidth, PrefixedParser, encode_prefixed};
