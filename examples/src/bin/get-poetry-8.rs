//! Poetry client 8.0 (`twisted-client-8/get-poetry.py` of Dave Peticolas' series, Part
//! 18, "Deferreds En Masse"): client 7.0 with a `DeferredList` in place of the counting in
//! `poem_done`. The list fires once every download's Deferred has fired, either way
//! (`consume_errors`, as Twisted's `consumeErrors=True`), and its callback stops the
//! reactor.
//!
//! ```text
//! cargo run -p torsion-cli -- transform --listen tcp:10001
//! cargo run -p torsion-cli -- poetry --listen tcp:10002 poems/science.txt
//! cargo run -p torsion-cli -- poetry --listen tcp:10003 poems/tyger.txt
//! cargo run -p torsion-examples --bin get-poetry-8 -- 10001 10002 10003
//! ```
//!
//! The first address is the transform server's. Each poem is printed, as its bytes, as it
//! is ready. It exits non-zero if no poem came.

use std::cell::Cell;
use std::process::ExitCode;
use std::rc::Rc;

use clap::Parser;
use torsion::prelude::*;
use torsion_examples::address::ServerAddress;
use torsion_examples::poem::print_poem;
use torsion_examples::program;
use torsion_examples::transform::{TransformProxy, get_transformed_poem};

/// This is the Get Poetry Now! client, Twisted version 8.0: a DeferredList stops the
/// reactor once every download is done.
#[derive(Parser)]
#[command(version, arg_required_else_help = true)]
struct Args {
    /// The transform server, as PORT or HOST:PORT
    #[arg(value_name = "XFORM_[HOST:]PORT")]
    xform: ServerAddress,
    /// The poetry servers, each as PORT or HOST:PORT (the host is 127.0.0.1 by default)
    #[arg(value_name = "[HOST:]PORT", required = true)]
    servers: Vec<ServerAddress>,
}

fn run(args: Args) -> Result<(), Failure> {
    let reactor = program::reactor()?;
    let proxy = Rc::new(TransformProxy::new(
        &reactor,
        &args.xform.host,
        args.xform.port,
    ));
    let ds = args
        .servers
        .iter()
        .map(|address| {
            let download = get_transformed_poem(
                reactor.clone(),
                proxy.clone(),
                address.host.clone(),
                address.port,
            );
            spawn(download).add_callback(|poem| print_poem(&poem))
        })
        .collect();
    let poems = Rc::new(Cell::new(0));
    let counted = poems.clone();
    let r = reactor.clone();
    DeferredList::new(ds)
        .consume_errors(true)
        .into_deferred()
        .add_callback(move |results| {
            counted.set(results.iter().filter(|result| result.is_ok()).count());
            let _ = r.stop();
            Ok(())
        });
    reactor.run()?;
    program::some_succeeded(poems.get(), args.servers.len())
}

fn main() -> ExitCode {
    program::exit(run(Args::parse()))
}
