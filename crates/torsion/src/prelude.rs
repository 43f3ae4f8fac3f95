//! The names a torsion program needs, in one import: `use torsion::prelude::*;` (what a
//! Twisted program gets from `twisted.internet`'s `reactor`, `defer` and `protocol`).
//!
//! It holds the core types and the traits whose methods a program calls or implements
//! (`call_later` comes from [`ReactorTime`], a protocol implements [`Protocol`]); nothing
//! that could clash with common names. Keep it to what nearly every program uses.
//!
//! # Examples
//!
//! ```
//! use torsion::prelude::*;
//!
//! let reactor = Reactor::new().unwrap();
//! let r = reactor.clone();
//! reactor.call_later(0.01, move || {
//!     let _ = r.stop();
//! });
//! reactor.run().unwrap();
//! ```

pub use crate::defer::{Deferred, DeferredList, Failure, Resolver, spawn};
pub use crate::error_type;
pub use crate::net::{Address, Producer, Transport, TransportOps};
pub use crate::protocol::{ClientFactory, DatagramProtocol, Factory, Protocol};
pub use crate::protocols::basic::{LineHandler, LineOnlyHandler, StringHandler};
pub use crate::reactor::{Phase, Reactor, ReactorHandle, SystemEvent};
pub use crate::time::ReactorTime;
