//! The caveat of "Twisted in Tribler" about `@blocking_call_on_reactor_thread`: a function
//! that must run on the reactor thread, called by another thread that blocks until it is
//! done, whose Deferred is then fired by the reactor, never by the waiting thread. Twisted
//! spells it `threads.blockingCallFromThread(reactor, f)`; torsion
//! `threads::blocking_call_from_thread(&handle, f)`.
//!
//! Here a worker thread asks the reactor thread for a poem that takes a while to arrive
//! (a Deferred fired by a timer), waits for it, prints it, and stops the reactor.
//!
//! `cargo run -p torsion-examples --bin blocking-call-from-thread` (`-- --delay 0.1`)

use std::process::ExitCode;

use clap::Parser;
use torsion::prelude::*;
use torsion::task::defer_later;
use torsion::threads::blocking_call_from_thread;
use torsion_examples::delay::parse_seconds;
use torsion_examples::program;

/// A worker thread blocks on a call run on the reactor thread.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Seconds the reactor takes to produce the poem
    #[arg(long, default_value_t = 0.5, value_parser = parse_seconds)]
    delay: f64,
}

/// Which thread this is, as the program prints it.
fn thread_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_string()
}

fn run(args: Args) -> Result<(), Failure> {
    let reactor = program::reactor()?;
    let handle = reactor.handle();
    let delay = args.delay;
    let worker = std::thread::Builder::new()
        .name("worker".into())
        .spawn(move || {
            println!("{}: asking the reactor thread for a poem", thread_name());
            let poem = blocking_call_from_thread(&handle, move |reactor| {
                println!("{}: producing the poem, ready in {delay} s", thread_name());
                defer_later(reactor, delay, || {
                    Ok("Once upon a midnight dreary".to_string())
                })
            });
            match &poem {
                Ok(poem) => println!("{}: got {poem:?}", thread_name()),
                Err(failure) => println!("{}: failed: {failure}", thread_name()),
            }
            handle.stop();
            poem.map(|_| ())
        })
        .map_err(|e| Failure::msg(format!("cannot start a thread: {e}")))?;
    reactor.run()?;
    match worker.join() {
        Ok(outcome) => outcome,
        Err(_) => Err(Failure::msg("the worker thread panicked")),
    }
}

fn main() -> ExitCode {
    program::exit(run(Args::parse()))
}
