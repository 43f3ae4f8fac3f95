//! torsion: an event-driven networking engine, Twisted's model in idiomatic Rust.
//!
//! The pieces, and the Twisted modules they stand for:
//!
//! - [`Deferred`] and [`Failure`] (`twisted.internet.defer`, `twisted.python.failure`):
//!   results that arrive later, with callback and errback chains.
//! - [`spawn`] (`inlineCallbacks`, `ensureDeferred`): `async` code over Deferreds.
//! - [`error`] (`twisted.internet.error`): every error torsion reports.
//! - [`threads`] (`twisted.internet.threads`, `twisted.python.threadpool`): the thread pool
//!   for blocking work.
//! - [`reactor`] (`twisted.internet.reactor`): the event loop; for now its readiness
//!   backends, [`reactor::backend`] (`epollreactor`, `pollreactor`).
//! - [`task`] (`twisted.internet.task`): [`LoopingCall`](task::LoopingCall),
//!   [`defer_later`](task::defer_later), [`Cooperator`](task::Cooperator) and
//!   [`react`](task::react).
#![warn(missing_docs)]

pub mod defer;
pub mod error;
mod executor;
pub mod reactor;
pub mod task;
pub mod testing;
pub mod threads;
pub mod time;

pub use defer::{Deferred, Failure, Resolver};
pub use executor::spawn;
pub use reactor::{Reactor, ReactorHandle};
