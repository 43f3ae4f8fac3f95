//! The `@inlineCallbacks` functions of "Twisted in Tribler": `yield some_deferred_object`
//! pauses the function until the Deferred fires, `value = yield ...` gets its result, and
//! `returnValue(value)` returns it through the function's own Deferred. In Rust the
//! function is an `async fn`: `.await` in place of `yield`, `return` (here `Ok(value)`)
//! in place of `returnValue`, and `spawn` runs it on the reactor, returning the Deferred.
//!
//! `cargo run -p torsion-examples --bin await-deferred` (`-- --delay 0.1`)

use std::process::ExitCode;

use clap::Parser;
use torsion::prelude::*;
use torsion_examples::delay::parse_seconds;
use torsion_examples::program;

/// Awaits a Deferred that an event fires, and returns its value through spawn's Deferred.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Seconds until the event that fires the Deferred
    #[arg(long, default_value_t = 1.0, value_parser = parse_seconds)]
    delay: f64,
}

/// Waits for `some_deferred_object`, prints its value and returns it.
async fn some_function(some_deferred_object: Deferred<String>) -> Result<String, Failure> {
    println!("some_function: waiting for the Deferred");
    // Wait for some_deferred_object to produce a value.
    let value = some_deferred_object.await?;
    // Now we can continue our control flow.
    println!("some_function: the Deferred fired with {value:?}");
    Ok(value) // returnValue(value)
}

fn run(args: Args) -> Result<(), Failure> {
    let reactor = program::reactor()?;
    let (resolver, some_deferred_object) = Deferred::new();
    // The event: here a timer, in Tribler a message from the network.
    reactor.call_later(args.delay, move || {
        println!("event: firing the Deferred");
        resolver.callback("a value from the event".to_string());
    });
    spawn(some_function(some_deferred_object))
        .map(|value| println!("main: some_function returned {value:?}"))
        .add_both(reactor.stopper());
    reactor.run()
}

fn main() -> ExitCode {
    program::exit(run(Args::parse()))
}
