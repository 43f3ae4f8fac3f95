//! `inline-callbacks/gen-2.py` of Dave Peticolas' series (Part 17): `gen-1` with the loop
//! written out. The loop calls `next` and the generator runs until its next yield; when
//! it finishes, `next` returns `None` (Python's `StopIteration`) and the loop ends. Seen
//! from the generator, the loop is a reactor and the code between yields its callbacks.
//!
//! `cargo run -p torsion-examples --bin gen-2`

use std::process::ExitCode;

use clap::Parser;
use torsion_examples::generator::Generator;

/// Drives a generator by hand, one `next` at a time.
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
    let mut generator = my_generator();
    loop {
        match generator.next() {
            None => break, // StopIteration
            Some(n) => println!("{n}"),
        }
    }
    ExitCode::SUCCESS
}
