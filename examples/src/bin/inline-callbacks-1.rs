//! `inline-callbacks/inline-callbacks-1.py` of Dave Peticolas' series (Part 17, "Just
//! Another Way to Spell 'Callback'"): an `async` block is an `@inlineCallbacks` generator.
//! A value that is already there comes right back; awaiting a Deferred pauses the block
//! until the reactor fires it (5 seconds later, by `call_later`); a failed Deferred comes
//! back as an `Err` to `match`, where Python has `try`/`except`. The block stops the
//! reactor at its end.
//!
//! `cargo run -p torsion-examples --bin inline-callbacks-1` (`--delay 0.5` to wait less)

use std::process::ExitCode;

use clap::Parser;
use torsion::prelude::*;
use torsion_examples::delay::parse_seconds;
use torsion_examples::program;

/// Runs a sequence of callbacks written as one async block.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Seconds each Deferred takes to fire
    #[arg(long, default_value_t = 5.0, value_parser = parse_seconds)]
    delay: f64,
}

async fn my_callbacks(reactor: Reactor, delay: f64) -> Result<(), Failure> {
    println!("first callback");
    // A value that is not a Deferred comes right back.
    let result = torsion::defer::succeed(1).await?;

    println!("second callback got {result}");
    let (resolver, d) = Deferred::new();
    reactor.call_later(delay, move || resolver.callback(2));
    let result = d.await?; // awaiting a Deferred pauses the block

    println!("third callback got {result}"); // the result of the Deferred

    let (resolver, d) = Deferred::<u32>::new();
    reactor.call_later(delay, move || resolver.errback(Failure::msg("3")));
    let result = match d.await {
        Ok(value) => format!("{value}"),
        Err(e) => format!("Failure({:?})", e.to_string()), // the failure from the Deferred
    };

    println!("fourth callback got {result}");

    let _ = reactor.stop();
    Ok(())
}

fn run(args: Args) -> Result<(), Failure> {
    let reactor = program::reactor()?;
    let r = reactor.clone();
    reactor.call_when_running(move || {
        let stopper = r.stopper();
        // A failure of my_callbacks stops the reactor with it; if it ends well, it has
        // stopped the reactor itself.
        spawn(my_callbacks(r, args.delay)).add_both(stopper);
    });
    reactor.run()
}

fn main() -> ExitCode {
    program::exit(run(Args::parse()))
}
