//! The tutorials' `inline-callbacks-1.py`: an `async` block is an inlineCallbacks generator.
//! Each `.await` of a Deferred pauses it until the Deferred fires; a failure comes back as
//! an `Err` to match.
//!
//! Run with `cargo run -p torsion --example inline_callbacks`.

use torsion::time::ReactorTime;
use torsion::{Deferred, Failure, Reactor};

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

    reactor.stop()?;
    Ok(())
}

fn main() -> Result<(), Failure> {
    let reactor = Reactor::new()?;
    let r = reactor.clone();
    reactor.call_when_running(move || {
        let done = torsion::spawn(my_callbacks(r.clone()));
        drop(done.add_errback(|failure| {
            eprintln!("my_callbacks failed: {failure}");
            Ok(())
        }));
    });
    reactor.run()
}
