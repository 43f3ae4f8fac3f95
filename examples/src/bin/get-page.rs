//! `blocking_input.py` of the Deferred tutorial, renamed for what it does: it asks for
//! several web pages at once with `torsion_web::get_page` (Twisted's `getPage`), each
//! returning a Deferred at once, and reports each download as it ends, in the order they
//! end, not the order they were asked for. The pages are saved in one map, without locks:
//! the callbacks run one at a time, on the reactor's thread.
//!
//! Serve a directory with the runner's web plugin and ask for some of its files:
//!
//! ```text
//! cargo run -p torsion-cli -- web --listen tcp:8080:interface=127.0.0.1 --path poems
//! cargo run -p torsion-examples --bin get-page -- http://127.0.0.1:8080/science.txt \
//!     http://127.0.0.1:8080/tyger.txt http://127.0.0.1:8080/missing.txt a_bad_url
//! ```
//!
//! Unlike the tutorial's program, which leaves the reactor running until Ctrl-C, this one
//! stops once every download has ended and prints the size of each page it saved. It
//! exits non-zero if none could be downloaded.

use std::cell::RefCell;
use std::collections::HashMap;
use std::process::ExitCode;
use std::rc::Rc;

use clap::Parser;
use torsion::prelude::*;
use torsion_examples::program;

/// Downloads the pages at URL... at once and reports each as it ends.
#[derive(Parser)]
#[command(version, arg_required_else_help = true)]
struct Args {
    /// The pages to download (http:// or https:// URLs)
    #[arg(value_name = "URL", required = true)]
    urls: Vec<String>,
}

/// Asks for the page at `url`, with three closures as its callbacks and errback (the
/// tutorial's `request_page`).
fn request_page(
    reactor: &Reactor,
    url: &str,
    pages: &Rc<RefCell<HashMap<String, Vec<u8>>>>,
) -> Deferred<()> {
    let (u1, u2, u3) = (url.to_string(), url.to_string(), url.to_string());
    let pages = pages.clone();
    let save_result = move |result: Option<Vec<u8>>| {
        if let Some(page) = result {
            pages.borrow_mut().insert(u1, page);
        }
        Ok(())
    };
    let report_success = move |result: Vec<u8>| {
        println!("Successfully downloaded `{u2}`.");
        Ok(Some(result))
    };
    let report_failure = move |failure: Failure| {
        println!("Failed to download `{u3}`: {failure}");
        Ok(None)
    };
    torsion_web::get_page(reactor, url)
        .add_callbacks(report_success, report_failure)
        .add_callback(save_result)
}

fn run(args: Args) -> Result<(), Failure> {
    let reactor = program::reactor()?;
    let pages: Rc<RefCell<HashMap<String, Vec<u8>>>> = Rc::default();
    // The requests start once the reactor runs: a bad URL fails at once, and the list
    // may then fire at once too, when stopping the reactor has to work.
    let (r, urls, saved) = (reactor.clone(), args.urls.clone(), pages.clone());
    reactor.call_when_running(move || {
        let downloads = urls
            .iter()
            .map(|url| request_page(&r, url, &saved))
            .collect();
        DeferredList::new(downloads)
            .into_deferred()
            .add_both(r.stopper());
    });
    reactor.run()?;
    let pages = pages.borrow();
    for url in &args.urls {
        if let Some(page) = pages.get(url) {
            println!("`{url}`: {} bytes", page.len());
        }
    }
    if pages.is_empty() {
        return Err(Failure::msg("no page could be downloaded"));
    }
    Ok(())
}

fn main() -> ExitCode {
    program::exit(run(Args::parse()))
}
