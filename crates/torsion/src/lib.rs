//! torsion: an event-driven networking engine, Twisted's model in idiomatic Rust.
//!
//! Most programs start with `use torsion::prelude::*;` ([`prelude`]).
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
//! - [`protocols`] (`twisted.protocols`): protocols over transports; so far
//!   `twisted.protocols.basic` (line, netstring and length-prefixed receivers, `FileSender`)
//!   and its sans-I/O framers, `policies` (wrapping, throttling and connection-limiting
//!   factories, idle timeouts) and `portforward` (a TCP proxy).
//! - [`testing`] (`twisted.internet.testing`, `twisted.test.iosim`, trial): StringTransport,
//!   AccumulatingProtocol, an in-memory pump between two protocols, MemoryReactor, and the
//!   test runner behind `#[torsion::test]`.
//! - [`protocol`] and [`net`] (`twisted.internet.protocol`, `tcp`, `udp`, `unix`): protocols,
//!   factories (the reconnecting one too), transports and the TCP, UDP and UNIX socket
//!   implementations.
//! - [`endpoints`] (`twisted.internet.endpoints`): where to listen and connect, as values
//!   and as `"tcp:8080"`-style strings; Happy Eyeballs connections to host names.
//! - [`task`] (`twisted.internet.task`): [`LoopingCall`](task::LoopingCall),
//!   [`defer_later`](task::defer_later), [`Cooperator`](task::Cooperator) and
//!   [`react`](task::react).
//! - [`process`] (`twisted.internet.process`, `utils`): child processes with pipes, ptys
//!   and signals, and Deferreds of their output; [`stdio`] (`twisted.internet.stdio`): a
//!   protocol on this process's standard input and output.
//! - [`log`] (`twisted.logger`): the namespaced [`Logger`](log::Logger) over `tracing`,
//!   and where torsion's errors and warnings go: the installed `tracing` subscriber, else
//!   stderr. The observers that write them out are the runner's (`torsion-cli`).
//! - [`application`] (`twisted.application.service`, `twisted.application.internet`):
//!   services, the `MultiService` tree and the `Application` at its root, with timer,
//!   listening and reconnecting-client services.
#![warn(missing_docs)]

#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod application;
pub mod defer;
pub mod endpoints;
pub mod error;
mod jitter;
pub mod log;
pub mod net;
pub mod prelude;
pub mod process;
pub mod protocol;
pub mod protocols;
pub mod reactor;
pub mod stdio;
pub mod task;
pub mod testing;
pub mod threads;
pub mod time;
pub mod tls;

pub use defer::spawn;
pub use defer::{Deferred, Failure, Resolver};
pub use reactor::{Reactor, ReactorHandle};
pub use torsion_macros::{main, test};
