//! `inline-callbacks/gen-4.py` of Dave Peticolas' series (Part 17): values sent into a
//! generator (`send`) become the value of its pending yield, and an error thrown into it
//! (`throw`) arrives there too, to be handled where the generator paused. That is all
//! `inlineCallbacks` needs: send a Deferred's result, or throw its failure.
//!
//! `cargo run -p torsion-examples --bin gen-4`

use std::process::ExitCode;

use clap::Parser;
use torsion_examples::generator::Generator;

torsion::error_type!(
    /// The error thrown into the generator (the tutorial's `Malfunction`).
    Malfunction,
    "malfunction"
);

/// Sends values and an error into a generator.
#[derive(Parser)]
#[command(version)]
struct Args {}

fn my_generator() -> Generator<u32, Option<u32>> {
    Generator::new(|co| async move {
        println!("starting up");

        let val = co.yield_(1).await;
        println!("got: {}", show(val));

        let val = co.yield_(2).await;
        println!("got: {}", show(val));

        match co.yield_(3).await {
            Err(failure) if failure.check::<Malfunction>() => println!("malfunction!"),
            _ => {}
        }

        let _ = co.yield_(4).await;

        println!("done");
    })
}

/// A sent value as Python prints it: `None` for a plain `next`.
fn show(val: Result<Option<u32>, torsion::Failure>) -> String {
    match val {
        Ok(Some(n)) => n.to_string(),
        Ok(None) => "None".to_string(),
        Err(failure) => format!("error: {failure}"),
    }
}

fn print(value: Option<u32>) {
    match value {
        Some(n) => println!("{n}"),
        None => println!("StopIteration"),
    }
}

fn main() -> ExitCode {
    Args::parse();
    let mut generator = my_generator();
    print(generator.next()); // start the generator
    print(generator.send(Some(10))); // send the value 10
    print(generator.send(Some(20))); // send the value 20
    print(generator.throw(Malfunction)); // raise an exception inside the generator
    // The body finishes: Python's StopIteration, caught and ignored.
    let _ = generator.next();
    ExitCode::SUCCESS
}
