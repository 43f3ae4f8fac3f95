//! Protocols built on torsion's transports (Twisted's `twisted.protocols`): for now the
//! sans-I/O framers of `twisted.protocols.basic`, in [`framing`], which turn bytes into
//! lines, netstrings and length-prefixed strings without any reactor.
//!
//! The invariant to keep: a framer hands out one frame at a time, so whatever a protocol
//! does while handling a frame (switch modes, pause, disconnect) applies from the next byte.

pub mod framing;
