//! Poetry client 6.0 (`twisted-client-6/get-poetry.py` of Dave Peticolas' series, Part
//! 12): the poems are cummingsified by the transform service, a remote procedure call
//! over netstrings (`TransformProxy.xform`), instead of inside the client. The first
//! address is the transform server's, the others poetry servers'. `try_to_cummingsify`
//! returns the service's Deferred with an errback that falls back to the original poem,
//! so the outer chain waits for the service's reply.
//!
//! ```text
//! cargo run -p torsion-cli -- transform --listen tcp:10001
//! cargo run -p torsion-cli -- poetry --listen tcp:10002 poems/science.txt
//! cargo run -p torsion-cli -- poetry --listen tcp:10003 poems/tyger.txt
//! cargo run -p torsion-examples --bin get-poetry-6 -- 10001 10002 10003
//! ```
//!
//! The poems are printed, as their bytes, once the reactor has stopped. Stop the transform
//! server to see `Cummingsify failed!` and the original poems. It exits non-zero if no
//! poem came.

use std::process::ExitCode;
use std::rc::Rc;

use clap::Parser;
use torsion::prelude::*;
use torsion_examples::address::ServerAddress;
use torsion_examples::client::get_poetry;
use torsion_examples::poem::print_poem;
use torsion_examples::program;
use torsion_examples::tally::Tally;
use torsion_examples::transform::TransformProxy;

/// This is the Get Poetry Now! client, Twisted version 6.0: the transform service
/// cummingsifies the poems.
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
    let tally = Rc::new(Tally::default());
    let wanted = args.servers.len();
    for address in &args.servers {
        let proxy = proxy.clone();
        let try_to_cummingsify = move |poem: Vec<u8>| {
            let d = proxy.xform("cummingsify", &poem);
            d.add_errback(move |_err| {
                eprintln!("Cummingsify failed!");
                Ok(poem)
            })
        };
        let (t1, t2, t3) = (tally.clone(), tally.clone(), tally.clone());
        let r = reactor.clone();
        let got_poem = move |poem: Vec<u8>| {
            t1.poems.borrow_mut().push(poem);
            Ok(())
        };
        let poem_failed = move |err: Failure| {
            eprintln!("The poem download failed.");
            t2.errors.borrow_mut().push(err);
            Ok(())
        };
        let poem_done = move |_: Result<(), Failure>| {
            if t3.done() == wanted {
                let _ = r.stop();
            }
            Ok(())
        };
        get_poetry(&reactor, &address.host, address.port)
            .add_callback(try_to_cummingsify)
            .add_callbacks(got_poem, poem_failed)
            .add_both(poem_done);
    }
    reactor.run()?;
    for poem in tally.poems.borrow().iter() {
        print_poem(poem)?;
    }
    for error in tally.errors.borrow().iter() {
        println!("{error}");
    }
    program::some_succeeded(tally.poems.borrow().len(), wanted)
}

fn main() -> ExitCode {
    program::exit(run(Args::parse()))
}
