//! `reactor.callInThread(function, *args, **kwargs)` from "Twisted Reactor Basics" (the
//! droned wiki): a blocking operation whose result nobody waits for runs on the reactor's
//! thread pool, so the reactor stays free. Here the blocking work is a file written with
//! plain `std::fs` and a sleep; while it runs, a timer on the reactor thread fires on time.
//! The thread tells the reactor it is done with `call_from_thread`, the only way back.
//!
//! `cargo run -p torsion-examples --bin call-in-thread -- /tmp/poem-copy.txt`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use torsion::prelude::*;
use torsion_examples::delay::parse_seconds;
use torsion_examples::program;

/// Writes a poem to FILE in a thread, while the reactor goes on.
#[derive(Parser)]
#[command(version, arg_required_else_help = true)]
struct Args {
    /// How long the blocking work sleeps, in seconds
    #[arg(long, default_value_t = 0.5, value_parser = parse_seconds)]
    delay: f64,
    /// Where to write the poem
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

const POEM: &[u8] =
    b"Roses are red,\nViolets are blue,\nThis line was written\nIn a thread just for you.\n";

fn run(args: Args) -> Result<(), Failure> {
    let reactor = program::reactor()?;
    let handle = reactor.handle();
    let (file, delay) = (args.file.clone(), args.delay);
    reactor.call_when_running(move || {
        println!("reactor: handing the blocking work to a thread");
        let r = Reactor::current();
        if let Some(r) = r {
            r.call_in_thread(move || {
                // Blocking calls: fine here, never on the reactor thread.
                let written = std::fs::write(&file, POEM);
                std::thread::sleep(Duration::from_secs_f64(delay));
                let outcome = match written {
                    Ok(()) => format!("wrote {} bytes to {}", POEM.len(), file.display()),
                    Err(e) => format!("could not write {}: {e}", file.display()),
                };
                println!("thread: {outcome}");
                handle.call_from_thread(|reactor| {
                    println!("reactor: the thread is done, stopping");
                    let _ = reactor.stop();
                });
            });
            r.call_later(0.0, || {
                println!("reactor: a timer fired while the thread works")
            });
        }
    });
    reactor.run()
}

fn main() -> ExitCode {
    program::exit(run(Args::parse()))
}
