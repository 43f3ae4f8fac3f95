//! The `torsion` binary: the runner with the built-in plugins (Twisted's `twist`).
//! `torsion --help` lists the plugins; `torsion PLUGIN --help` lists a plugin's options.
//!
//! Invariant: nothing here but the call; everything lives in the library, where a
//! program of its own can reuse it.

use std::process::ExitCode;

fn main() -> ExitCode {
    torsion_cli::Runner::with_builtin_plugins().main()
}
