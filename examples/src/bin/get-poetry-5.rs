//! Poetry client 5.0 (`twisted-client-5/get-poetry.py` of Dave Peticolas' series, Part
//! 10, "Poetry Transformed"): a `cummingsify` step in the chain, which fails at random in
//! one of two ways. A `GibberishError` goes on down the errback chain (`The poem download
//! failed.`); any other error is a bug in `cummingsify`, so `try_to_cummingsify` keeps
//! the original poem (`Cummingsify failed!`). Each poem is printed as it arrives.
//!
//! ```text
//! cargo run -p torsion-cli -- poetry --listen tcp:10001 poems/science.txt
//! cargo run -p torsion-cli -- poetry --listen tcp:10002 poems/tyger.txt
//! cargo run -p torsion-examples --bin get-poetry-5 -- 10001 10002
//! ```
//!
//! `--cummingsify success|gibberish|bug` chooses what `cummingsify` does instead of
//! chance. It exits non-zero if no poem came.

use std::process::ExitCode;
use std::rc::Rc;

use clap::Parser;
use torsion::prelude::*;
use torsion_examples::address::ServerAddress;
use torsion_examples::client::get_poetry;
use torsion_examples::cummingsify::{Fate, try_to_cummingsify};
use torsion_examples::poem::print_poem;
use torsion_examples::program;
use torsion_examples::tally::Tally;

/// This is the Get Poetry Now! client, Twisted version 5.0: the poems are cummingsified,
/// which sometimes fails.
#[derive(Parser)]
#[command(version, arg_required_else_help = true)]
struct Args {
    /// What cummingsify does to every poem [default: one of the three at random, for each
    /// poem]
    #[arg(long, value_enum, value_name = "FATE")]
    cummingsify: Option<Fate>,
    /// The poetry servers, each as PORT or HOST:PORT (the host is 127.0.0.1 by default)
    #[arg(value_name = "[HOST:]PORT", required = true)]
    servers: Vec<ServerAddress>,
}

fn run(args: Args) -> Result<(), Failure> {
    let reactor = program::reactor()?;
    let tally = Rc::new(Tally::default());
    let wanted = args.servers.len();
    for address in &args.servers {
        let fate = args.cummingsify.unwrap_or_else(Fate::random);
        let (t1, t2, t3) = (tally.clone(), tally.clone(), tally.clone());
        let r = reactor.clone();
        let got_poem = move |poem: Vec<u8>| {
            print_poem(&poem)?;
            t1.poems.borrow_mut().push(poem);
            Ok(())
        };
        let poem_failed = move |err: Failure| {
            eprintln!("The poem download failed.");
            t2.errors.borrow_mut().push(err);
            Ok(())
        };
        let poem_done = move |outcome: Result<(), Failure>| {
            if t3.done() == wanted {
                let _ = r.stop();
            }
            // A poem that cannot be printed stops the program with that error.
            if let Err(failure) = outcome {
                r.stop_with_failure(failure);
            }
            Ok(())
        };
        get_poetry(&reactor, &address.host, address.port)
            .add_callback(move |poem| try_to_cummingsify(poem, fate))
            .add_callbacks(got_poem, poem_failed)
            .add_both(poem_done);
    }
    reactor.run()?;
    program::some_succeeded(tally.poems.borrow().len(), wanted)
}

fn main() -> ExitCode {
    program::exit(run(Args::parse()))
}
