//! The `torsion` runner and its plugins (Twisted's `twist`, `twisted.application.runner`
//! and the `IServiceMaker` plugins).
//!
//! A [`Plugin`] names a subcommand, declares its options and builds a service from them;
//! the runner parses the command line, sets up logging, builds the chosen plugin's
//! service, starts it once the reactor runs and stops it on SIGINT or SIGTERM. The binary
//! `torsion` is the runner with the built-in plugins ([`plugins`]); a program with plugins
//! of its own registers them and calls the same entry point, the Rust form of Twisted's
//! plugin discovery.
//!
//! Invariant: a plugin's service is built once, before the reactor runs, and everything a
//! plugin does at run time goes through that service.
#![warn(missing_docs)]

pub mod daemon;
pub mod logging;
pub mod notify;
pub mod pidfile;
pub mod plugin;
pub mod plugins;
mod runner;
mod workers;

pub use plugin::Plugin;
pub use runner::{DEFAULT_SHUTDOWN_TIMEOUT, Runner};
