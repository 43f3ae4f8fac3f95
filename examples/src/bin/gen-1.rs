//! `inline-callbacks/gen-1.py` of Dave Peticolas' series (Part 17): a generator that
//! yields 1, 2 and 3, its prints interleaved with those of the `for` loop that consumes
//! it. The body runs only when the loop asks for the next value.
//!
//! `cargo run -p torsion-examples --bin gen-1`
//!
//! Stable Rust has no `yield`: the generator is an `async` block that awaits
//! `co.yield_(n)` ([`torsion_examples::generator`]).

use std::process::ExitCode;

use clap::Parser;
use torsion_examples::generator::Generator;

/// Iterates over a generator whose body prints as it goes.
#[derive(Parser)]
#[command(version)]
struct Args {}

fn my_generator() -> Generator<u32> {
    Generator::new(|co| async move {
        println!("starting up");
        let _ = co.yield_(1).await;
        println!("workin'");
        let _ = co.yield_(2).await;
        println!("still workin'");
        let _ = co.yield_(3).await;
        println!("done");
    })
}

fn main() -> ExitCode {
    Args::parse();
    for n in my_generator() {
        println!("{n}");
    }
    ExitCode::SUCCESS
}
