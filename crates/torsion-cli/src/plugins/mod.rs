//! The built-in plugins of the `torsion` binary, each also a service a library user can
//! embed without the runner.
//!
//! Invariant: every plugin here is listed once, in [`builtin`], which is what the binary
//! registers.

use crate::Plugin;

/// The plugins the `torsion` binary ships with, in the order `torsion --help` lists them.
pub fn builtin() -> Vec<Box<dyn Plugin>> {
    Vec::new()
}
