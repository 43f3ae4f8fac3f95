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
//! - [`reactor`] (`twisted.internet.reactor`): the event loop and its readiness
//!   backends, [`reactor::backend`] (`epollreactor`, `pollreactor`).
//! - [`time`] (`IReactorTime`, `DelayedCall`, `task.Clock`): delayed calls, and a clock for
//!   tests.
//! - [`protocol`] (`twisted.internet.protocol`): protocols, factories, client factories
//!   and the reconnecting client factory.
//! - [`endpoints`] (`twisted.internet.endpoints`): where to listen and connect, as values
//!   and as `"tcp:8080"`-style strings; Happy Eyeballs connections to host names.
//! - [`protocols`] (`twisted.protocols`): protocols over transports; so far the framers of
//!   `twisted.protocols.basic` (lines, netstrings, length-prefixed strings).
#![warn(missing_docs)]

#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod defer;
pub mod endpoints;
pub mod error;
mod executor;
pub mod net;
pub mod protocol;
pub mod protocols;
pub mod reactor;
pub mod testing;
pub mod threads;
pub mod time;

pub use defer::{Deferred, Failure, Resolver};
pub use executor::spawn;
pub use reactor::{Reactor, ReactorHandle};
pub use torsion_macros::{main, test};
