//! Deferreds: results that arrive later (Twisted's `twisted.internet.defer`).

mod failure;

pub use failure::{Failure, FailureError};
