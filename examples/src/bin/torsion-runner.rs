//! The `torsion` runner with its built-in plugins, the very `Runner` that
//! `cargo run -p torsion-cli -- ...` runs (Twisted's `twist` and `twistd`), built again as
//! a binary of this crate so that the end-to-end tests in `examples/tests/` can start it by
//! `env!("CARGO_BIN_EXE_torsion-runner")`: cargo gives a test the paths of its own
//! package's binaries only, and building `torsion-cli`'s from inside a test would mean a
//! second cargo run on the same target directory, with other features, rebuilding what the
//! first one built.
//!
//! Use `cargo run -p torsion-cli -- PLUGIN ...` yourself; this one takes the same command
//! line (`cargo run -p torsion-examples --bin torsion-runner -- --help`).
//!
//! Invariant: nothing here but the call, as in `torsion-cli`'s `main.rs`.

use std::process::ExitCode;

fn main() -> ExitCode {
    torsion_cli::Runner::with_builtin_plugins().main()
}
