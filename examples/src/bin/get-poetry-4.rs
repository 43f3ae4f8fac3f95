//! Poetry client 4.0 (`twisted-client-4/get-poetry.py` of Dave Peticolas' series, Part
//! 8): `get_poetry(host, port)` returns a Deferred, and the caller adds its own callback
//! and errback (`add_callbacks(got_poem, poem_failed)`) and a last step for both outcomes
//! (`add_both(poem_done)`), which stops the reactor once every download has ended.
//!
//! ```text
//! cargo run -p torsion-cli -- poetry --listen tcp:10001 poems/science.txt
//! cargo run -p torsion-cli -- poetry --listen tcp:10002 poems/tyger.txt
//! cargo run -p torsion-examples --bin get-poetry-4 -- 10001 10002
//! ```
//!
//! The poems are printed, as their bytes, once the reactor has stopped; each failure is
//! reported on stderr (`Poem failed: ...`). It exits non-zero if no poem came.

use std::process::ExitCode;
use std::rc::Rc;

use clap::Parser;
use torsion::prelude::*;
use torsion_examples::address::ServerAddress;
use torsion_examples::client::get_poetry;
use torsion_examples::poem::print_poem;
use torsion_examples::program;
use torsion_examples::tally::Tally;

/// This is the Get Poetry Now! client, Twisted version 4.0: get_poetry returns a
/// Deferred.
#[derive(Parser)]
#[command(version, arg_required_else_help = true)]
struct Args {
    /// The poetry servers, each as PORT or HOST:PORT (the host is 127.0.0.1 by default)
    #[arg(value_name = "[HOST:]PORT", required = true)]
    servers: Vec<ServerAddress>,
}

fn run(args: Args) -> Result<(), Failure> {
    let reactor = program::reactor()?;
    let tally = Rc::new(Tally::default());
    let wanted = args.servers.len();
    for address in &args.servers {
        let (t1, t2, t3) = (tally.clone(), tally.clone(), tally.clone());
        let r = reactor.clone();
        let got_poem = move |poem: Vec<u8>| {
            t1.poems.borrow_mut().push(poem);
            Ok(())
        };
        let poem_failed = move |err: Failure| {
            eprintln!("Poem failed: {err}");
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
            .add_callbacks(got_poem, poem_failed)
            .add_both(poem_done);
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
