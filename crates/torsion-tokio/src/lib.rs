//! The bridge between torsion and tokio, both ways (Twisted's `Deferred.fromFuture`,
//! `Deferred.asFuture` and `asyncioreactor`, for a reactor that does not run on tokio).
//!
//! A torsion reactor and a tokio runtime each own their threads; this crate passes work
//! and results between them through [`ReactorHandle::call_from_thread`] and tokio's
//! channels, and lets code written for tokio's I/O traits run over torsion's transports:
//!
//! - **tokio work from the reactor**: [`defer_to_tokio`] runs a `Send` future on the
//!   process's tokio runtime (one started on first use, or the program's, given with
//!   [`set_runtime`]) and returns a Deferred fired on the reactor's thread, so
//!   `defer_to_tokio(reqwest::get(url)).await` works inside torsion's `async` code.
//!   Cancelling the Deferred aborts the task; a panic becomes a failure; the reactor's
//!   shutdown aborts what is still running and shuts the runtime down.
//! - **torsion from tokio**: [`call_from_tokio`] runs a closure on a reactor and gives tokio
//!   a `Send` future of the Deferred it returns (dropping the future cancels the Deferred);
//!   [`ReactorThread`] runs a reactor on its own thread inside a tokio program.
//! - **tokio's I/O traits over torsion transports**: [`TokioStream`] is
//!   `tokio::io::AsyncRead + AsyncWrite` over any torsion stream transport (TCP, UNIX,
//!   TLS), on the reactor's own executor, with flow control both ways; [`serve`] is a
//!   factory that runs an `async fn(TokioStream)` per connection, [`connect_stream`]
//!   connects one through any client endpoint. So `tokio-tungstenite` or `h2` run over
//!   torsion's transports.
//!
//! The engine (`torsion`) does not depend on tokio; this crate uses its public API only.
//!
//! # Examples
//!
//! A tokio future awaited inside a torsion program:
//!
//! ```
//! use torsion::task::react_result;
//! use torsion_tokio::defer_to_tokio;
//!
//! react_result(torsion::Reactor::new().unwrap(), |_reactor| async {
//!     let (tx, rx) = tokio::sync::oneshot::channel();
//!     defer_to_tokio(async move { tx.send("from tokio") }).await?.ok();
//!     let got = defer_to_tokio(rx).await??;
//!     assert_eq!(got, "from tokio");
//!     Ok(())
//! })
//! .unwrap();
//! ```
//!
//! Invariant of the whole crate: a `Resolver`, a `Deferred` or a `Transport` never leaves
//! its reactor's thread; only ids, values and failures (all `Send`) cross to tokio.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod as_future;
mod catch_panic;
pub mod error;
mod from_future;
mod reactor_thread;
mod registry;
mod runtime;
pub mod stream;

pub use as_future::{CallFromTokio, call_from_tokio};
pub use error::{NoReactor, RuntimeUnavailable, TokioShutDown};
pub use from_future::{defer_to_tokio, defer_to_tokio_on, try_defer_to_tokio};
pub use reactor_thread::ReactorThread;
pub use registry::in_flight;
pub use runtime::{
    DEFAULT_SHUTDOWN_TIMEOUT, clear_runtime, runtime_handle, set_runtime, set_runtime_builder,
    set_shutdown_timeout,
};
pub use stream::{Serve, StreamProtocol, TokioStream, connect_stream, serve, stream_protocol};

#[doc(no_inline)]
pub use torsion::ReactorHandle;
