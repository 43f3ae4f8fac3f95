//! `reactor.callLater(delay, function, *args, **kwargs)` from "Twisted Reactor Basics"
//! (the droned wiki): the non-blocking way to wait. `call_later` schedules a call after
//! `delay` seconds (fractions allowed) and returns at once; the reactor makes the call
//! when the time comes. Here a greeting is scheduled with its arguments captured by the
//! closure, and a second call, later, stops the reactor.
//!
//! `cargo run -p torsion-examples --bin call-later` (`-- --delay 0.1`)

use std::process::ExitCode;

use clap::Parser;
use torsion::prelude::*;
use torsion_examples::delay::parse_seconds;
use torsion_examples::program;

/// Schedules a call DELAY seconds from now, then stops.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Seconds before the call
    #[arg(long, default_value_t = 1.0, value_parser = parse_seconds)]
    delay: f64,
}

/// The function to call later, with its arguments.
fn function(poet: &str, line: &str) {
    println!("called later: {poet} wrote {line:?}");
}

fn run(args: Args) -> Result<(), Failure> {
    let reactor = program::reactor()?;
    let (poet, line) = (
        "Poe".to_string(),
        "Science! true daughter of Old Time".to_string(),
    );
    let call = reactor.call_later(args.delay, move || function(&poet, &line));
    println!(
        "scheduled a call in {} s; call_later returned at once (active: {})",
        args.delay,
        call.active()
    );
    let r = reactor.clone();
    reactor.call_later(args.delay * 2.0, move || {
        println!("stopping");
        let _ = r.stop();
    });
    reactor.run()
}

fn main() -> ExitCode {
    program::exit(run(Args::parse()))
}
