//! torsion: an event-driven networking engine, Twisted's model in idiomatic Rust.
//!
//! The pieces, and the Twisted modules they stand for:
//!
//! - `Deferred` and [`Failure`] (`twisted.internet.defer`, `twisted.python.failure`):
//!   results that arrive later, with callback and errback chains.
//! - [`error`] (`twisted.internet.error`): every error torsion reports.
//! - [`time`] (`IReactorTime`, `DelayedCall`, `task.Clock`): delayed calls, and a clock for
//!   tests.
#![warn(missing_docs)]

pub mod defer;
pub mod error;
pub mod time;

pub use defer::Failure;
