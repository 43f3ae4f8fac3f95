//! Poetry client 3.0 (`twisted-client-3/get-poetry.py` of Dave Peticolas' series, Part
//! 6): `get_poetry(host, port, callback)` hands each poem to a callback, and the code that
//! asked for the poems decides when to stop, not the factory. The factory only builds
//! protocols and passes on finished poems.
//!
//! ```text
//! cargo run -p torsion-cli -- poetry --listen tcp:10001 poems/science.txt
//! cargo run -p torsion-cli -- poetry --listen tcp:10002 poems/tyger.txt
//! cargo run -p torsion-examples --bin get-poetry-3 -- 10001 10002
//! ```
//!
//! The poems are printed, as their bytes, once the reactor has stopped. As in the
//! tutorial, nothing here handles a failed connection: `client_connection_failed` does
//! nothing by default, so with a server down the program waits forever (stop it with
//! Ctrl-C). `get-poetry-3-errback` fixes that.

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;

use clap::Parser;
use torsion::prelude::*;
use torsion_examples::address::ServerAddress;
use torsion_examples::poem::print_poem;
use torsion_examples::program;

/// This is the Get Poetry Now! client, Twisted version 3.0: a callback gets each poem.
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

/// Passes each finished poem to its callback (the tutorial's
/// `PoetryClientFactory(callback)`).
struct PoetryClientFactory {
    callback: Box<dyn Fn(Vec<u8>)>,
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

// The default `client_connection_failed` does nothing: the point of this version.
impl ClientFactory for PoetryClientFactory {}

/// Downloads a poem from `host:port` and calls `callback(poem)` when it is complete.
fn get_poetry(reactor: &Reactor, host: &str, port: u16, callback: impl Fn(Vec<u8>) + 'static) {
    let factory = Rc::new(PoetryClientFactory {
        callback: Box::new(callback),
    });
    reactor.connect_tcp(host, port, factory);
}

fn run(args: Args) -> Result<(), Failure> {
    let reactor = program::reactor()?;
    let poems: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
    let wanted = args.servers.len();
    for address in &args.servers {
        let (poems, reactor_) = (poems.clone(), reactor.clone());
        get_poetry(&reactor, &address.host, address.port, move |poem| {
            poems.borrow_mut().push(poem);
            if poems.borrow().len() == wanted {
                let _ = reactor_.stop();
            }
        });
    }
    reactor.run()?;
    for poem in poems.borrow().iter() {
        print_poem(poem)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    program::exit(run(Args::parse()))
}
