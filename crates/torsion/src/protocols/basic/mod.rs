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
//! [`Protocol`](crate::protocol::Protocol) the reactor talks to. The receiver owns the
//! framer (from [`framing`](super::framing)) and calls the handler with one frame at a
//! time and a *context* ([`LineContext`], [`LineOnlyContext`], [`StringContext`]): what
//! Twisted reaches through `self` — the transport, `sendLine`, `setRawMode`,
//! `pauseProducing`, … .
//! Whatever the handler does through the context applies from the very next byte.
//!
//! Pausing: [`pause_producing`](LineContext::pause_producing) stops the delivery of frames
//! already buffered and stops reading from the transport, until
//! [`resume_producing`](LineContext::resume_producing). The resume usually comes later, from
//! a timer or another connection's flow control, outside any callback: keep a
//! [`ReceiverHandle`] ([`LineContext::handle`]) for that. Its `resume_producing` delivers
//! the buffered frames at once, as Twisted's `resumeProducing` does; the handle is also a
//! [`Producer`](crate::net::Producer), so a receiver can be registered as the producer of
//! another transport (a proxy slowing its reading side down).
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
//! The shared machinery (the receiver's cell, its delivery loop, [`ReceiverHandle`]) is in
//! `receiver.rs`; each receiver kind, with its handler trait, context and sender, has its
//! file, `line.rs`, `line_only.rs` and `string.rs`, and [`FileSender`] is in
//! `file_sender.rs`, all re-exported here.
//!
//! The invariant to keep: **no borrow is held while a handler runs**. The framer and the
//! handler are taken out of the receiver's cell for the duration of a delivery loop;
//! anything that reaches the receiver meanwhile (bytes, a resume through a handle) only
//! sets a flag or queues bytes, which the running loop picks up.

mod file_sender;
mod line;
mod line_only;
mod receiver;
mod string;

pub use file_sender::{FileSender, Transform};
pub use line::{LineContext, LineHandler, LineReceiver, LineSender};
pub use line_only::{LineOnlyContext, LineOnlyHandler, LineOnlyReceiver};
pub use receiver::ReceiverHandle;
pub use string::{
    IntN, IntNStringReceiver, Netstring, NetstringReceiver, StringContext, StringFraming,
    StringHandler, StringSender,
};
