//! `basic-twisted/countdown.py` of Dave Peticolas' series (Part 3): a callback that
//! counts down from 5 by scheduling itself again with `call_later`, never sleeping, and
//! stops the reactor at 0. The callbacks find the running reactor with
//! `Reactor::current`, as Twisted code imports the global `reactor`.
//!
//! `cargo run -p torsion-examples --bin countdown` (`--delay 0.2` for a quicker one)

use std::process::ExitCode;

use clap::Parser;
use torsion::Failure;
use torsion::prelude::*;
use torsion_examples::delay::parse_seconds;
use torsion_examples::program;

/// Counts down from 5, one number every DELAY seconds, without blocking the reactor.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Seconds between numbers
    #[arg(long, default_value_t = 1.0, value_parser = parse_seconds)]
    delay: f64,
}

/// The tutorial's `Countdown` class: its counter, and the delay between counts.
struct Countdown {
    counter: u32,
    delay: f64,
}

impl Countdown {
    fn count(mut self) {
        let Some(reactor) = Reactor::current() else {
            return;
        };
        if self.counter == 0 {
            let _ = reactor.stop();
        } else {
            println!("{} ...", self.counter);
            self.counter -= 1;
            let delay = self.delay;
            reactor.call_later(delay, move || self.count());
        }
    }
}

fn run(args: Args) -> Result<(), Failure> {
    let reactor = program::reactor()?;
    let countdown = Countdown {
        counter: 5,
        delay: args.delay,
    };
    reactor.call_when_running(move || countdown.count());
    println!("Start!");
    reactor.run()?;
    println!("Stop!");
    Ok(())
}

fn main() -> ExitCode {
    program::exit(run(Args::parse()))
}
