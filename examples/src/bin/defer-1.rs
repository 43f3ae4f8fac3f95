//! `twisted-deferred/defer-1.py` of Dave Peticolas' series (Part 7): a Deferred holds a
//! callback and an errback (`add_callbacks`), and firing it runs one of them, at once and
//! without a reactor. With `--fail` it is fired with an error, and the errback runs.
//!
//! `cargo run -p torsion-examples --bin defer-1` (and `-- --fail`)

use std::process::ExitCode;

use clap::Parser;
use torsion::prelude::*;

/// Fires a Deferred with a poem (or, with --fail, an error) and shows which of its two
/// callbacks ran.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Fire the Deferred's errback instead of its callback
    #[arg(long)]
    fail: bool,
}

fn got_poem(res: &'static str) -> Result<(), Failure> {
    println!("Your poem is served:");
    println!("{res}");
    Ok(())
}

fn poem_failed(_err: Failure) -> Result<(), Failure> {
    println!("No poetry for you.");
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (resolver, d) = Deferred::<&'static str>::new();
    let _d = d.add_callbacks(got_poem, poem_failed);
    if args.fail {
        resolver.errback(Failure::msg("I have failed."));
    } else {
        resolver.callback("This poem is short.");
    }
    println!("Finished");
    ExitCode::SUCCESS
}
