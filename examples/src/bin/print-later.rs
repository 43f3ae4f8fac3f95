//! `print_later.py` of the Deferred tutorial ("This tutorial introduces the Twisted
//! networking library..."): `defer_later` (Twisted's `task.deferLater`) calls a function
//! after a delay, a timer event for the reactor, like JavaScript's `setTimeout`. Nothing
//! tells the reactor to stop, so once the message is printed it runs on: stop it with
//! Ctrl-C, as the tutorial says.
//!
//! `cargo run -p torsion-examples --bin print-later` (or `-- "another message"`)

use std::process::ExitCode;

use clap::Parser;
use torsion::prelude::*;
use torsion::task::defer_later;
use torsion_examples::delay::parse_seconds;
use torsion_examples::program;

/// Prints MESSAGE after DELAY seconds, then waits for Ctrl-C.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Seconds to wait before printing
    #[arg(long, default_value_t = 1.0, value_parser = parse_seconds)]
    delay: f64,
    /// What to print
    #[arg(default_value = "The future is now!")]
    message: String,
}

/// Prints `mesg` after `delay` seconds.
fn print_later(reactor: &Reactor, delay: f64, mesg: String) {
    let _d = defer_later(reactor, delay, move || {
        println!("{mesg}");
        Ok(())
    });
}

fn run(args: Args) -> Result<(), Failure> {
    let reactor = program::reactor()?;
    print_later(&reactor, args.delay, args.message);
    reactor.run()
}

fn main() -> ExitCode {
    program::exit(run(Args::parse()))
}
