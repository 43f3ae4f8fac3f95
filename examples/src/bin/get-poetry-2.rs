//! Poetry client 2.0 (`twisted-client-2/get-poetry.py` of Dave Peticolas' series, Part 5):
//! no sockets of our own any more. The reactor connects (`connect_tcp`), a
//! `PoetryClientFactory` builds a `PoetryProtocol` for each connection, and the protocol
//! gets the poem through `data_received` and `connection_lost`. One factory serves every
//! connection and also counts the poems, stopping the reactor after the last one: too
//! much for a factory, which the next clients fix.
//!
//! ```text
//! cargo run -p torsion-cli -- poetry --listen tcp:10001 --num-bytes 30 --delay 0.1 poems/science.txt
//! cargo run -p torsion-cli -- poetry --listen tcp:10002 --num-bytes 30 --delay 0.1 poems/tyger.txt
//! cargo run -p torsion-examples --bin get-poetry-2 -- 10001 10002
//! ```

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Instant;

use clap::Parser;
use torsion::net::Connector;
use torsion::prelude::*;
use torsion_examples::address::ServerAddress;
use torsion_examples::program;
use torsion_examples::timedelta::format_elapsed;

/// This is the Get Poetry Now! client, Twisted version 2.0: protocols and a factory in
/// place of sockets.
#[derive(Parser)]
#[command(version, arg_required_else_help = true)]
struct Args {
    /// The poetry servers, each as PORT or HOST:PORT (the host is 127.0.0.1 by default)
    #[arg(value_name = "[HOST:]PORT", required = true)]
    servers: Vec<ServerAddress>,
}

/// One connection's poem, and its task number (the tutorial's `PoetryProtocol`).
struct PoetryProtocol {
    poem: Vec<u8>,
    task_num: usize,
    transport: Option<Transport>,
    factory: Rc<PoetryClientFactory>,
}

impl Protocol for PoetryProtocol {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.poem.extend_from_slice(data);
        let peer = self
            .transport
            .as_ref()
            .map_or_else(String::new, |t| t.peer().to_string());
        println!(
            "Task {}: got {} bytes of poetry from {peer}",
            self.task_num,
            data.len()
        );
    }

    fn connection_lost(&mut self, _reason: Failure) {
        let poem = std::mem::take(&mut self.poem);
        self.factory.poem_finished(Some((self.task_num, poem)));
    }
}

/// Builds the protocols, numbers them, collects their poems and stops the reactor after
/// the last one (the tutorial's `PoetryClientFactory(poetry_count)`).
struct PoetryClientFactory {
    next_task_num: Cell<usize>,
    poetry_count: Cell<usize>,
    /// Task number → poem.
    poems: RefCell<BTreeMap<usize, Vec<u8>>>,
    reactor: Reactor,
}

impl PoetryClientFactory {
    /// A download ended, with its poem or (a failed connection) without.
    fn poem_finished(&self, poem: Option<(usize, Vec<u8>)>) {
        if let Some((task_num, poem)) = poem {
            self.poems.borrow_mut().insert(task_num, poem);
        }
        self.poetry_count.set(self.poetry_count.get() - 1);
        if self.poetry_count.get() == 0 {
            self.report();
            let _ = self.reactor.stop();
        }
    }

    fn report(&self) {
        for (task_num, poem) in self.poems.borrow().iter() {
            println!("Task {task_num}: {} bytes of poetry", poem.len());
        }
    }
}

impl Factory for PoetryClientFactory {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        let task_num = self.next_task_num.get();
        self.next_task_num.set(task_num + 1);
        Some(Box::new(PoetryProtocol {
            poem: Vec::new(),
            task_num,
            transport: None,
            factory: self,
        }))
    }
}

impl ClientFactory for PoetryClientFactory {
    fn client_connection_failed(&self, connector: &Connector, reason: Failure) {
        println!(
            "Failed to connect to: {} ({reason})",
            connector.destination()
        );
        self.poem_finished(None);
    }
}

fn run(args: Args) -> Result<(), Failure> {
    let start = Instant::now();
    let reactor = program::reactor()?;
    let factory = Rc::new(PoetryClientFactory {
        next_task_num: Cell::new(1),
        poetry_count: Cell::new(args.servers.len()),
        poems: RefCell::new(BTreeMap::new()),
        reactor: reactor.clone(),
    });
    for address in &args.servers {
        reactor.connect_tcp(&address.host, address.port, factory.clone());
    }
    reactor.run()?;
    let elapsed = start.elapsed();
    println!(
        "Got {} poems in {}",
        args.servers.len(),
        format_elapsed(elapsed)
    );
    program::some_succeeded(factory.poems.borrow().len(), args.servers.len())
}

fn main() -> ExitCode {
    program::exit(run(Args::parse()))
}
