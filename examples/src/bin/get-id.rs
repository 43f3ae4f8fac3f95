//! `get_id` of "Twisted in Tribler" (the Tribler guide's generator section): a generator
//! yields identifiers one at a time without giving up its local state, and the caller
//! takes as many as it needs and stops when it likes. The guide prints the first one,
//! `get_id().next()`; `--count` takes more.
//!
//! `cargo run -p torsion-examples --bin get-id` (`-- --count 5`)

use std::process::ExitCode;

use clap::Parser;
use torsion_examples::generator::Generator;

/// Prints the first COUNT identifiers of an endless generator.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// How many identifiers to take
    #[arg(long, default_value_t = 1)]
    count: usize,
}

fn get_id() -> Generator<u64> {
    Generator::new(|co| async move {
        let mut i = 0;
        loop {
            let _ = co.yield_(i).await;
            i += 1;
        }
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    for id in get_id().take(args.count) {
        println!("{id}");
    }
    ExitCode::SUCCESS
}
