//! Poetry client 3.1 (`twisted-client-3/get-poetry-1.py` of Dave Peticolas' series, Part
//! 6): client 3.0 with an errback beside the callback. The factory's
//! `client_connection_failed` calls the errback, so a server that is down no longer
//! leaves the program waiting forever: each download ends in one of the two, and the
//! reactor stops when all have.
//!
//! ```text
//! cargo run -p torsion-cli -- poetry --listen tcp:10001 poems/science.txt
//! cargo run -p torsion-examples --bin get-poetry-3-errback -- 10001 10009
//! ```
//!
//! (with nothing on port 10009: `Poem failed: ...` on stderr, the other poem printed). It
//! exits non-zero if no poem came.

use std::process::ExitCode;
use std::rc::Rc;

use clap::Parser;
use torsion::net::Connector;
use torsion::prelude::*;
use torsion_examples::address::ServerAddress;
use torsion_examples::poem::print_poem;
use torsion_examples::program;
use torsion_examples::tally::Tally;

/// This is the Get Poetry Now! client, Twisted version 3.1: a callback gets each poem, an
/// errback each failure.
#[derive(Parser)]
#[command(version, arg_required_else_help = true)]
struct Args {
    /// The poetry servers, each as PORT or HOST:PORT (the host is 127.0.0.1 by default)
    #[arg(value_name = "[HOST:]PORT", required = true)]
    servers: Vec<ServerAddress>,
}

/// Collects the poem and hands it to the factory at the end (the tutorial's
/// `PoetryProtocol`).
struct PoetryProtocol {
    poem: Vec<u8>,
    factory: Rc<PoetryClientFactory>,
}

impl Protocol for PoetryProtocol {
    fn data_received(&mut self, data: &[u8]) {
        self.poem.extend_from_slice(data);
    }

    fn connection_lost(&mut self, _reason: Failure) {
        self.factory.poem_finished(std::mem::take(&mut self.poem));
    }
}

/// Passes each finished poem to its callback, each failed connection to its errback (the
/// tutorial's `PoetryClientFactory(callback, errback)`).
struct PoetryClientFactory {
    callback: Box<dyn Fn(Vec<u8>)>,
    errback: Box<dyn Fn(Failure)>,
}

impl PoetryClientFactory {
    fn poem_finished(&self, poem: Vec<u8>) {
        (self.callback)(poem);
    }
}

impl Factory for PoetryClientFactory {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(PoetryProtocol {
            poem: Vec::new(),
            factory: self,
        }))
    }
}

impl ClientFactory for PoetryClientFactory {
    fn client_connection_failed(&self, _connector: &Connector, reason: Failure) {
        (self.errback)(reason);
    }
}

/// Downloads a poem from `host:port` and calls `callback(poem)` when it is complete, or
/// `errback(failure)` if the connection failed.
fn get_poetry(
    reactor: &Reactor,
    host: &str,
    port: u16,
    callback: impl Fn(Vec<u8>) + 'static,
    errback: impl Fn(Failure) + 'static,
) {
    let factory = Rc::new(PoetryClientFactory {
        callback: Box::new(callback),
        errback: Box::new(errback),
    });
    reactor.connect_tcp(host, port, factory);
}

fn run(args: Args) -> Result<(), Failure> {
    let reactor = program::reactor()?;
    let tally = Rc::new(Tally::default());
    let wanted = args.servers.len();
    let poem_done = {
        let (tally, reactor) = (tally.clone(), reactor.clone());
        Rc::new(move || {
            if tally.done() == wanted {
                let _ = reactor.stop();
            }
        })
    };
    for address in &args.servers {
        let (t1, done1) = (tally.clone(), poem_done.clone());
        let (t2, done2) = (tally.clone(), poem_done.clone());
        get_poetry(
            &reactor,
            &address.host,
            address.port,
            move |poem| {
                t1.poems.borrow_mut().push(poem);
                done1();
            },
            move |err| {
                eprintln!("Poem failed: {err}");
                t2.errors.borrow_mut().push(err);
                done2();
            },
        );
    }
    reactor.run()?;
    for poem in tally.poems.borrow().iter() {
        print_poem(poem)?;
    }
    program::some_succeeded(tally.poems.borrow().len(), wanted)
}

fn main() -> ExitCode {
    program::exit(run(Args::parse()))
}
