//! `inline-callbacks/inline-callbacks-2.py` of Dave Peticolas' series (Part 17): calling
//! an `@inlineCallbacks` function returns a Deferred that fires when the generator is
//! done: with the value it returns (`returnValue`, here `Ok`), or with the exception it
//! raises (here `Err`). Two run at once; their callbacks interleave.
//!
//! `cargo run -p torsion-examples --bin inline-callbacks-2` (`--delay 0.2 --err-delay 0.3`
//! to wait less)

use std::cell::Cell;
use std::process::ExitCode;
use std::rc::Rc;

use clap::Parser;
use torsion::prelude::*;
use torsion_examples::delay::parse_seconds;
use torsion_examples::program;

/// Runs an async function that returns a value and one that fails, at once.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Seconds between the steps of my_callbacks_1
    #[arg(long, default_value_t = 2.0, value_parser = parse_seconds)]
    delay: f64,
    /// Seconds between the steps of my_callbacks_err
    #[arg(long, default_value_t = 3.0, value_parser = parse_seconds)]
    err_delay: f64,
}

/// A Deferred that fires with `()` after `delay` seconds.
fn later(reactor: &Reactor, delay: f64) -> Deferred<()> {
    let (resolver, d) = Deferred::new();
    reactor.call_later(delay, move || resolver.callback(()));
    d
}

async fn my_callbacks_1(reactor: Reactor, delay: f64) -> Result<u32, Failure> {
    println!("my_callbacks_1 first callback");
    later(&reactor, delay).await?;
    println!("my_callbacks_1 second callback");
    later(&reactor, delay).await?;
    println!("my_callbacks_1 third callback");
    Ok(1) // returnValue(1)
}

async fn my_callbacks_err(reactor: Reactor, delay: f64) -> Result<u32, Failure> {
    println!("my_callbacks_err first callback");
    later(&reactor, delay).await?;
    println!("my_callbacks_err second callback");
    later(&reactor, delay).await?;
    println!("my_callbacks_err third callback");
    Err(Failure::msg("uh oh")) // raise Exception('uh oh')
}

fn got_result(res: u32) -> Result<(), Failure> {
    println!("got result: {res}");
    Ok(())
}

fn got_error(err: Failure) -> Result<(), Failure> {
    println!("got error: {err}");
    Ok(())
}

fn run_callbacks(reactor: &Reactor, args: &Args) {
    let d1 =
        spawn(my_callbacks_1(reactor.clone(), args.delay)).add_callbacks(got_result, got_error);
    let d2 = spawn(my_callbacks_err(reactor.clone(), args.err_delay))
        .add_callbacks(got_result, got_error);
    let count = Rc::new(Cell::new(0));
    for d in [d1, d2] {
        let (count, reactor) = (count.clone(), reactor.clone());
        d.add_both(move |_| {
            count.set(count.get() + 1);
            if count.get() == 2 {
                println!("all done");
                let _ = reactor.stop();
            }
            Ok(())
        });
    }
}

fn run(args: Args) -> Result<(), Failure> {
    let reactor = program::reactor()?;
    let r = reactor.clone();
    reactor.call_when_running(move || run_callbacks(&r, &args));
    reactor.run()
}

fn main() -> ExitCode {
    program::exit(run(Args::parse()))
}
