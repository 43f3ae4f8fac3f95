//! The tutorial's Deferred-based poetry client, `twisted-client-5/get-poetry.py`:
//! `get_poetry` returns a Deferred of the poem, a `cummingsify` step transforms it (and
//! fails at random: gibberish goes down the errback chain, any other error keeps the
//! original poem), and the reactor stops once every download is done (a `DeferredList`,
//! as in client 8.0).
//!
//! Run one or more `poetry_server`s (say on ports 10002 and 10003), then
//! `cargo run -p torsion --example poetry_client -- 10002 10003`
//! (each server as `[host:]port`, the host 127.0.0.1 by default).

#[path = "poetry/mod.rs"]
mod poetry;

use torsion::prelude::*;

use poetry::client::{Fate, get_poetry, try_to_cummingsify};
use poetry::{parse_address, print_poem};

fn main() -> Result<(), Failure> {
    let addresses = std::env::args()
        .skip(1)
        .map(|arg| parse_address(&arg))
        .collect::<Result<Vec<_>, _>>()?;
    if addresses.is_empty() {
        return Err(Failure::msg("usage: poetry_client [HOST:]PORT ..."));
    }

    // As in Twisted's client, the downloads start before the reactor runs.
    let reactor = Reactor::new()?;
    let downloads = addresses
        .iter()
        .map(|(host, port)| {
            get_poetry(&reactor, host, *port)
                .add_callback(|poem| try_to_cummingsify(poem, Fate::random()))
                .add_callbacks(got_poem, poem_failed)
        })
        .collect();
    DeferredList::new(downloads)
        .into_deferred()
        .add_both(reactor.stopper());
    reactor.run()
}

fn got_poem(poem: Vec<u8>) -> Result<(), Failure> {
    print_poem(&poem)
}

fn poem_failed(failure: Failure) -> Result<(), Failure> {
    eprintln!("The poem download failed: {}", failure.as_error());
    Ok(())
}
