//! Poetry client 7.0 (`twisted-client-7/get-poetry.py` of Dave Peticolas' series, Part
//! 17, "Just Another Way to Spell 'Callback'"): `get_transformed_poem` is an `async fn`
//! where Twisted has an `@inlineCallbacks` generator. It downloads a poem, has the
//! transform service cummingsify it, and keeps the original poem if the transform fails:
//! each `.await` is a `yield`, each `match` a `try`/`except`. Each poem is printed as it
//! is ready, and the reactor stops when every download has ended (the tutorial's
//! `poem_done`).
//!
//! ```text
//! cargo run -p torsion-cli -- transform --listen tcp:10001
//! cargo run -p torsion-cli -- poetry --listen tcp:10002 poems/science.txt
//! cargo run -p torsion-cli -- poetry --listen tcp:10003 poems/tyger.txt
//! cargo run -p torsion-examples --bin get-poetry-7 -- 10001 10002 10003
//! ```
//!
//! The first address is the transform server's. Stop it to see the client fall back to
//! the original poems. It exits non-zero if no poem came.

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;

use clap::Parser;
use torsion::prelude::*;
use torsion_examples::address::ServerAddress;
use torsion_examples::poem::print_poem;
use torsion_examples::program;
use torsion_examples::transform::{TransformProxy, get_transformed_poem};

/// This is the Get Poetry Now! client, Twisted version 7.0: inlineCallbacks, written with
/// async.
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
    // Each download's outcome: did a poem come?
    let results: Rc<RefCell<Vec<bool>>> = Rc::default();
    let wanted = args.servers.len();
    for address in &args.servers {
        let got_poem = |poem: Vec<u8>| print_poem(&poem);
        let (results, r) = (results.clone(), reactor.clone());
        let poem_done = move |outcome: Result<(), Failure>| {
            results.borrow_mut().push(outcome.is_ok());
            if results.borrow().len() == wanted {
                let _ = r.stop();
            }
            Ok(())
        };
        let download = get_transformed_poem(
            reactor.clone(),
            proxy.clone(),
            address.host.clone(),
            address.port,
        );
        spawn(download).add_callback(got_poem).add_both(poem_done);
    }
    reactor.run()?;
    let poems = results.borrow().iter().filter(|&&ok| ok).count();
    program::some_succeeded(poems, wanted)
}

fn main() -> ExitCode {
    program::exit(run(Args::parse()))
}
