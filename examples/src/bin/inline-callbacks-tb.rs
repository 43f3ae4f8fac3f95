//! `inline-callbacks/inline-callbacks-tb.py` of Dave Peticolas' series (Part 17): the
//! stack seen from inside an `async` block the reactor runs. `Reactor::run` is near the
//! bottom, torsion's executor in between, the block itself at the top: its code runs one
//! step at a time, called by the reactor, like any other callback. (Python prints the
//! outermost frame first; Rust's backtrace prints the innermost first.)
//!
//! `cargo run -p torsion-examples --bin inline-callbacks-tb`
//!
//! The frames shown are those of torsion and of this program; the standard library's and
//! the runtime's are left out. A build without symbols shows none.

use std::backtrace::Backtrace;
use std::process::ExitCode;

use clap::Parser;
use torsion::prelude::*;
use torsion_examples::program;

/// Prints the stack from inside an async block run by the reactor.
#[derive(Parser)]
#[command(version)]
struct Args {}

/// The frames of `backtrace` that belong to torsion or to this program, innermost first.
fn our_frames(backtrace: &Backtrace) -> Vec<String> {
    backtrace
        .to_string()
        .lines()
        .map(str::trim)
        // Frame lines look like `12: torsion::reactor::Reactor::run`; the `at FILE:LINE`
        // lines under them are left out.
        .filter_map(|line| line.split_once(": ").map(|(_, name)| name))
        .filter(|name| name.starts_with("torsion::") || name.starts_with("inline_callbacks_tb::"))
        .map(str::to_string)
        .collect()
}

async fn my_callbacks(reactor: Reactor) -> Result<(), Failure> {
    torsion::defer::succeed(1).await?;
    for frame in our_frames(&Backtrace::force_capture()) {
        println!("  {frame}");
    }
    let _ = reactor.stop();
    Ok(())
}

fn run() -> Result<(), Failure> {
    let reactor = program::reactor()?;
    let r = reactor.clone();
    reactor.call_when_running(move || {
        spawn(my_callbacks(r));
    });
    reactor.run()
}

fn main() -> ExitCode {
    Args::parse();
    program::exit(run())
}
