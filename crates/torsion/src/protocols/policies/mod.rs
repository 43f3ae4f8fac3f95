//! Resource-limiting policies (Twisted's `twisted.protocols.policies`): protocol and factory
//! wrappers that watch or limit connections without changing the protocols they wrap.
//!
//! | torsion | Twisted |
//! | --- | --- |
//! | [`WrappingFactory`], [`ProtocolWrapper`], [`WrappingTransport`], [`WrapperHooks`] | `WrappingFactory`, `ProtocolWrapper` (and the methods its subclasses override) |
//! | [`ThrottlingFactory`], [`ThrottleLimits`] | `ThrottlingFactory`, `ThrottlingProtocol` |
//! | [`LimitTotalConnectionsFactory`] | `LimitTotalConnectionsFactory` |
//! | [`TimeoutFactory`] | `TimeoutFactory`, `TimeoutProtocol` |
//! | [`Timeout`] | `TimeoutMixin` |
//!
//! A Twisted policy subclasses `ProtocolWrapper`, which stands between the connection and
//! the wrapped protocol: it is the connection's protocol and the wrapped protocol's
//! transport, so it sees every event and every write. Here the wrapper is split along that
//! line: a [`ProtocolWrapper`] is the connection's protocol, and hands the wrapped protocol
//! a [`WrappingTransport`] instead of the real transport. What a subclass overrides is a
//! [`WrapperHooks`] implementation, called by both halves: a policy is a hooks type, not a
//! new wrapper.
//!
//! Two things go further than Twisted. A wrapping transport keeps track of who paused
//! reading: a policy throttling reads and the wrapped protocol pausing itself do not undo
//! each other's pause. Likewise a producer registered through it is paused while either its
//! transport's buffer is full or a policy throttles writes, and resumed only when neither
//! holds.
//!
//! The wrapper is in `wrapping.rs`; the policies built on it are in `throttling.rs`,
//! `limits.rs` and `timeout.rs`, all re-exported here.
//!
//! Invariant: no `RefCell` borrow is held while user code runs (a wrapped protocol, a
//! producer, a timeout callback); the list of connections is copied before a policy walks
//! it.

mod limits;
mod throttling;
mod timeout;
mod wrapping;

pub use limits::LimitTotalConnectionsFactory;
pub use throttling::{ThrottleLimits, ThrottlingFactory};
pub use timeout::{DEFAULT_TIMEOUT_PERIOD, IntoTimeout, Timeout, TimeoutFactory};
pub use wrapping::{ProtocolWrapper, WrapperHooks, WrappingFactory, WrappingTransport};
