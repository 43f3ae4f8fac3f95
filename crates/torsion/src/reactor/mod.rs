//! The reactor: torsion's event loop (Twisted's `twisted.internet.reactor`).
//!
//! For now this holds the readiness backends the loop waits in ([`backend`]) and the
//! cross-thread wake-up; the `Reactor` itself comes on top of them.

pub mod backend;
pub(crate) mod waker;
