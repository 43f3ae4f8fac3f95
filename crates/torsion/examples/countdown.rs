//! The tutorials' countdown (`countdown.py` of the Krondo series): `call_later`
//! rescheduling itself, then `stop`. The callbacks find the running reactor with
//! [`Reactor::current`], as Twisted code imports the global `reactor`.
//!
//! Run with `cargo run -p torsion --example countdown`.

use torsion::prelude::*;

fn count(left: u32) {
    let Some(reactor) = Reactor::current() else {
        return;
    };
    if left == 0 {
        let _ = reactor.stop();
    } else {
        println!("{left} ...");
        reactor.call_later(1.0, move || count(left - 1));
    }
}

fn main() -> Result<(), Failure> {
    let reactor = Reactor::new()?;
    reactor.call_when_running(|| count(5));
    println!("Start!");
    reactor.run()?;
    println!("Stop!");
    Ok(())
}
