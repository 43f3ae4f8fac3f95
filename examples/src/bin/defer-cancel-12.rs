//! `deferred-cancel/defer-cancel-12.py` of Dave Peticolas' series (Part 19, "I Thought I
//! Wanted It But I Changed My Mind"): cancelling an outer Deferred that waits on an inner
//! one. The outer Deferred has fired already (its first callback returned the inner
//! Deferred), so its own canceller is not called: the cancel goes to the inner Deferred,
//! whose canceller runs, and the inner one's `Cancelled` failure comes back down the outer
//! chain to its errback.
//!
//! `cargo run -p torsion-examples --bin defer-cancel-12`

use std::process::ExitCode;

use clap::Parser;
use torsion::prelude::*;

/// Cancels an outer Deferred while it waits on an inner one.
#[derive(Parser)]
#[command(version)]
struct Args {}

fn main() -> ExitCode {
    Args::parse();
    let (outer_resolver, outer_d) = Deferred::<&'static str>::with_canceller(|_d| {
        println!("outer cancel callback.");
    });
    let (_inner_resolver, inner_d) = Deferred::<&'static str>::with_canceller(|_d| {
        println!("inner cancel callback.");
    });
    let first_outer_callback = move |_res: &'static str| {
        println!("first outer callback, returning inner deferred");
        inner_d
    };
    let second_outer_callback = |res: &'static str| {
        println!("second outer callback got: {res}");
        Ok(())
    };
    let outer_errback = |err: Failure| {
        println!("outer errback got: {err}");
        Ok(())
    };
    let outer_d = outer_d
        .add_callback(first_outer_callback)
        .add_callbacks(second_outer_callback, outer_errback);
    outer_resolver.callback("result");
    println!("canceling outer deferred.");
    outer_d.cancel();
    println!("done");
    ExitCode::SUCCESS
}
