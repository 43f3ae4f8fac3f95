//! The `DeferredList` demo of Dave Peticolas' series (Part 18, "Deferreds En Masse":
//! `deferred-list/deferred-list-3.py`, with the third Deferred of the seed's version): a
//! list of three Deferreds fires once all three have, with their results in the list's order, each `Ok(result)` or `Err(failure)`
//! (Twisted's `(True, result)` and `(False, failure)` pairs). With `--fail` the second
//! Deferred fails.
//!
//! `cargo run -p torsion-examples --bin deferred-list` (and `-- --fail`)

use std::process::ExitCode;

use clap::Parser;
use torsion::prelude::*;

/// Fires three Deferreds in a DeferredList and prints what the list fires with.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Fire the second Deferred's errback
    #[arg(long)]
    fail: bool,
}

fn got_results(res: Vec<Result<&'static str, Failure>>) -> Result<(), Failure> {
    let pairs: Vec<String> = res
        .iter()
        .map(|result| match result {
            Ok(value) => format!("(true, {value:?})"),
            Err(failure) => format!("(false, Failure({:?}))", failure.to_string()),
        })
        .collect();
    println!("We got: [{}]", pairs.join(", "));
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    println!("Three Deferreds.");
    let (r1, d1) = Deferred::new();
    let (r2, d2) = Deferred::new();
    let (r3, d3) = Deferred::new();
    let d = DeferredList::new(vec![d1, d2, d3]).consume_errors(true);
    println!("Adding Callback.");
    let _d = d.into_deferred().add_callback(got_results);
    println!("Firing d1.");
    r1.callback("d1 result");
    println!("Firing d2.");
    if args.fail {
        r2.errback(Failure::msg("d2 failure"));
    } else {
        r2.callback("d2 result");
    }
    println!("Firing d3.");
    r3.callback("d3 result");
    ExitCode::SUCCESS
}
