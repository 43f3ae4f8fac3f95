//! Protocols built on torsion's transports (Twisted's `twisted.protocols`): the sans-I/O
//! framers of `twisted.protocols.basic`, in [`framing`], which turn bytes into lines,
//! netstrings and length-prefixed strings without any reactor, and the protocols over a
//! transport built on them, in [`basic`] (`LineReceiver`, `NetstringReceiver`,
//! `Int32StringReceiver`, `FileSender`, …); the wrappers of `twisted.protocols.policies`
//! (throttling, connection limits, idle timeouts), in [`policies`]; and the port forwarder
//! of `twisted.protocols.portforward`, in [`portforward`].
//!
//! The invariant to keep: a framer hands out one frame at a time, so whatever a protocol
//! does while handling a frame (switch modes, pause, disconnect) applies from the next byte.

pub mod basic;
pub mod framing;
pub mod policies;
pub mod portforward;
