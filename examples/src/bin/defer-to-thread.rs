//! `threads.deferToThread(function, *args)` with `addCallback(doSomethingWithTheResult)`
//! from "Twisted Reactor Basics" (the droned wiki): a blocking function runs on the
//! reactor's thread pool, and its result comes back as a Deferred, fired on the reactor
//! thread, where the callback uses it. Here the function reads a poem file with plain
//! `std::fs` and counts its lines.
//!
//! `cargo run -p torsion-examples --bin defer-to-thread -- poems/science.txt`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use torsion::prelude::*;
use torsion_examples::program;

/// Reads FILE in a thread and reports on it from the reactor thread.
#[derive(Parser)]
#[command(version, arg_required_else_help = true)]
struct Args {
    /// The file to read
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// The blocking function: reads the file, on a pool thread.
fn read_poem(file: PathBuf) -> Result<(Vec<u8>, bool), String> {
    let on_reactor_thread = std::thread::current().name() == Some("main");
    std::fs::read(&file)
        .map(|poem| (poem, on_reactor_thread))
        .map_err(|e| format!("cannot read {}: {e}", file.display()))
}

fn run(args: Args) -> Result<(), Failure> {
    let reactor = program::reactor()?;
    let file = args.file.clone();
    let do_something_with_the_result = move |result: Result<(Vec<u8>, bool), String>| {
        let (poem, read_on_main) = result.map_err(Failure::msg)?;
        let lines = poem.iter().filter(|&&b| b == b'\n').count();
        let here = if std::thread::current().name() == Some("main") {
            "the reactor thread"
        } else {
            "another thread"
        };
        println!(
            "read {} bytes, {lines} lines, from {} on {}",
            poem.len(),
            args.file.display(),
            if read_on_main {
                "the reactor thread"
            } else {
                "a pool thread"
            }
        );
        println!("the callback runs on {here}");
        Ok(())
    };
    let r = reactor.clone();
    reactor.call_when_running(move || {
        r.defer_to_thread(move || read_poem(file))
            .add_callback(do_something_with_the_result)
            .add_both(r.stopper());
    });
    reactor.run()
}

fn main() -> ExitCode {
    program::exit(run(Args::parse()))
}
