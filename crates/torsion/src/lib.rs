//! torsion: an event-driven networking engine, Twisted's model in idiomatic Rust.
//!
//! The pieces, and the Twisted modules they stand for:
//!
//! - `Deferred` and [`Failure`] (`twisted.internet.defer`, `twisted.python.failure`):
//!   results that arrive later, with callback and errback chains.
//! - [`error`] (`twisted.internet.error`): every error torsion reports.
//! - [`threads`] (`twisted.internet.threads`, `twisted.python.threadpool`): the thread pool
//!   for blocking work.
#![warn(missing_docs)]

pub mod defer;
pub mod error;
pub mod threads;

pub use defer::Failure;
