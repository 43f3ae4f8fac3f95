//! Where torsion's own errors and warnings go (the part of Twisted's `twisted.logger` that
//! prints "Unhandled error in Deferred" when nothing else is set up), and the namespaced
//! [`Logger`] programs log through (Twisted's `twisted.logger.Logger`).
//!
//! torsion logs through [`tracing`], with its module paths (`torsion::net`,
//! `torsion::defer`, …) as targets, so a program that installs a subscriber gets every
//! event there and only there, filtered as it likes. A program that installs none (every
//! small server, every example) would lose them all; so errors and warnings, such as an
//! unhandled failure, a panic in a callback or protocol, or a failed listen, are printed to
//! stderr instead, with where they arose. Debug and info events need a subscriber.
//!
//! A program logs through a [`Logger`] (see [`logger`](mod@logger)): events with a runtime
//! namespace (`"poetry.server"`), emitted under the fixed target [`LOGGER_TARGET`] with the
//! namespace in the field `log_namespace`; the runner's observers (`torsion-cli`) show and
//! filter by that field. Its warnings, errors and failures are never silent either.
//!
//! Invariant: every error or warning torsion reports goes through the crate's `log::error!` or `log::warning!`
//! here, never straight through `tracing`, so that none can vanish.

use std::fmt;

pub mod logger;

pub use logger::{LOGGER_TARGET, LogLevel, Logger, event};

#[doc(hidden)]
pub use tracing as __tracing;

/// Whether a `tracing` subscriber is in effect on this thread (a global default or a
/// scoped one). When none is, errors and warnings go to stderr.
pub fn subscriber_installed() -> bool {
    tracing::dispatcher::get_default(|d| !d.is::<tracing::subscriber::NoSubscriber>())
}

/// Prints one event to stderr: `LEVEL target: message`. Used when no subscriber is
/// installed. It goes through `eprintln!`, so the test harness captures it per test.
#[doc(hidden)]
pub fn to_stderr(level: &str, target: &str, message: fmt::Arguments<'_>) {
    eprintln!("{level} {target}: {message}");
}

/// Reports an error: to the installed subscriber, else to stderr.
macro_rules! error {
    (target: $target:expr, $($arg:tt)+) => {{
        if $crate::log::subscriber_installed() {
            tracing::error!(target: $target, $($arg)+);
        } else {
            $crate::log::to_stderr("ERROR", $target, format_args!($($arg)+));
        }
    }};
}

/// Reports a warning: to the installed subscriber, else to stderr.
macro_rules! warning {
    (target: $target:expr, $($arg:tt)+) => {{
        if $crate::log::subscriber_installed() {
            tracing::warn!(target: $target, $($arg)+);
        } else {
            $crate::log::to_stderr("WARN", $target, format_args!($($arg)+));
        }
    }};
}

pub(crate) use {error, warning};
