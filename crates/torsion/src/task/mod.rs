//! Scheduling helpers over a time source (Twisted's `twisted.internet.task`).
//!
//! - [`LoopingCall`] (`task.LoopingCall`): call a function every interval, aligned to interval
//!   slots, skipping missed ones; [`LoopingCall::with_count`] (`LoopingCall.withCount`)
//!   reports how many slots went by.
//! - [`defer_later`] (`task.deferLater`) and [`sleep`]: a Deferred that fires after a delay.
//! - [`Cooperator`], [`CooperativeTask`] (`task.Cooperator`, `task.CooperativeTask`): run
//!   many iterators a step at a time, round-robin, in time slices, so long jobs never starve
//!   the reactor.
//! - [`react`], [`react_with`], [`react_result`] (`task.react`): run a main function on a
//!   reactor and turn its outcome into a process exit code.
//!
//! Everything but `react` is generic over the time source `C: ReactorTime`: give it the
//! [`Reactor`](crate::Reactor) in a program and a [`Clock`](crate::time::Clock) in a test, where time only
//! moves on [`Clock::advance`](crate::time::Clock::advance).
//!
//! One file each: `looping_call.rs`, `defer_later.rs`, `cooperator.rs`, `react.rs`.
//!
//! Invariant, as in the rest of torsion: no `RefCell` borrow is held while user code runs
//! (the looped function, an iterator's `next`, a Deferred being fired, a user value being
//! dropped).

mod cooperator;
mod defer_later;
mod looping_call;
mod react;

pub use cooperator::{CooperativeTask, Cooperator, DEFAULT_SLICE, WorkUnit};
pub use defer_later::{defer_later, sleep};
pub use looping_call::LoopingCall;
pub use react::{react, react_result, react_with};
