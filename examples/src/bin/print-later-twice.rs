//! `print_later_twice.py` of the Deferred tutorial: the Deferred of `print-later` made by
//! hand. A Deferred is created, two callbacks are added to its chain, each printing its
//! argument and passing it on, and `call_later` fires it with the message after a delay.
//! Then the reactor runs on: stop it with Ctrl-C.
//!
//! `cargo run -p torsion-examples --bin print-later-twice`

use std::process::ExitCode;

use clap::Parser;
use torsion::prelude::*;
use torsion_examples::delay::parse_seconds;
use torsion_examples::program;

/// Prints MESSAGE twice after DELAY seconds, through a Deferred's two callbacks, then
/// waits for Ctrl-C.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Seconds to wait before firing the Deferred
    #[arg(long, default_value_t = 1.0, value_parser = parse_seconds)]
    delay: f64,
    /// What to print
    #[arg(default_value = "The future is now!")]
    message: String,
}

fn print_and_passthrough(result: String) -> Result<String, Failure> {
    println!("{result}");
    Ok(result)
}

/// Prints `mesg` twice after `delay` seconds.
fn print_later_twice(reactor: &Reactor, delay: f64, mesg: String) {
    let (resolver, d) = Deferred::new();
    let _d = d
        .add_callback(print_and_passthrough)
        .add_callback(print_and_passthrough);
    reactor.call_later(delay, move || resolver.callback(mesg));
}

fn run(args: Args) -> Result<(), Failure> {
    let reactor = program::reactor()?;
    print_later_twice(&reactor, args.delay, args.message);
    reactor.run()
}

fn main() -> ExitCode {
    program::exit(run(Args::parse()))
}
