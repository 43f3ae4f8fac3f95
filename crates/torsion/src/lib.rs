//! torsion: an event-driven networking engine, Twisted's model in idiomatic Rust.
//!
//! The pieces, and the Twisted modules they stand for:
//!
//! - `Deferred` and [`Failure`] (`twisted.internet.defer`, `twisted.python.failure`):
//!   results that arrive later, with callback and errback chains.
//! - [`error`] (`twisted.internet.error`): every error torsion reports.
//! - [`reactor`] (`twisted.internet.reactor`): the event loop; for now its readiness
//!   backends, [`reactor::backend`] (`epollreactor`, `pollreactor`).
#![warn(missing_docs)]

pub mod defer;
pub mod error;
pub mod reactor;

pub use defer::Failure;
