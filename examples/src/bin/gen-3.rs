//! `inline-callbacks/gen-3.py` of Dave Peticolas' series (Part 17): two generators active
//! at once, a loop taking one value from each in turn until both are done. Their steps
//! interleave as independent tasks do under a reactor.
//!
//! `cargo run -p torsion-examples --bin gen-3`

use std::process::ExitCode;

use clap::Parser;
use torsion_examples::generator::Generator;

/// Runs two generators in turns.
#[derive(Parser)]
#[command(version)]
struct Args {}

fn my_generator() -> Generator<u32> {
    Generator::new(|co| async move {
        for n in [1, 2, 3] {
            let _ = co.yield_(n).await;
        }
    })
}

fn my_other_generator() -> Generator<u32> {
    Generator::new(|co| async move {
        for n in [10, 20, 30, 40] {
            let _ = co.yield_(n).await;
        }
    })
}

fn main() -> ExitCode {
    Args::parse();
    let mut gens = vec![my_generator(), my_other_generator()];
    while !gens.is_empty() {
        // One step of each, dropping those that have finished.
        gens.retain_mut(|g| match g.next() {
            Some(n) => {
                println!("{n}");
                true
            }
            None => false,
        });
    }
    ExitCode::SUCCESS
}
