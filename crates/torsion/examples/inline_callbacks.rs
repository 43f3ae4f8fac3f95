//! The tutorials' `inline-callbacks-1.py`: an `async` block is an inlineCallbacks generator.
//! Each `.await` of a Deferred pauses it until the Deferred fires; a failure comes back as
//! an `Err` to match.
//!
//! Run with `cargo run -p torsion --example inline_callbacks`.

use torsion::prelude::*;

async fn my_callbacks(reactor: Reactor) -> Result<(), Failure> {
    println!("first callback");
    let result = torsion::defer::succeed(1).await?; // a value that is already there
    println!("second callback got {result}");

    let (resolver, d) = Deferred::new();
    reactor.call_later(1.0, move || resolver.callback(2));
    let result = d.await?; // pauses until the Deferred fires
    println!("third callback got {result}");

    let (resolver, d) = Deferred::<u32>::new();
    reactor.call_later(1.0, move || resolver.errback(Failure::msg(3)));
    let result = match d.await {
        Ok(value) => format!("{value}"),
        Err(failure) => format!("{failure}"), // the failure from the Deferred
    };
    println!("fourth callback got {result}");
    Ok(())
}

fn main() -> Result<(), Failure> {
    let reactor = Reactor::new()?;
    // The chain's end stops the reactor, and a failure of my_callbacks comes out of run.
    spawn(my_callbacks(reactor.clone())).add_both(reactor.stopper());
    reactor.run()
}
