//! `basic-twisted/hello.py` of Dave Peticolas' series (Part 3): a function handed to the
//! reactor with `call_when_running` runs once the loop has started. Then the reactor just
//! sits there, waiting for events that never come: stop it with Ctrl-C.
//!
//! `cargo run -p torsion-examples --bin hello`

use std::process::ExitCode;

use clap::Parser;
use torsion::Failure;
use torsion_examples::program;

/// Runs a callback once the reactor is running, then waits for Ctrl-C.
#[derive(Parser)]
#[command(version)]
struct Args {}

fn hello() {
    println!("Hello from the reactor loop!");
    println!("Lately I feel like I'm stuck in a rut.");
}

fn run() -> Result<(), Failure> {
    let reactor = program::reactor()?;
    reactor.call_when_running(hello);
    println!("Starting the reactor.");
    reactor.run()
}

fn main() -> ExitCode {
    Args::parse();
    program::exit(run())
}
