//! An `async` torsion program that fetches a page with `reqwest` (a tokio-based client)
//! through [`try_defer_to_tokio`], from a `torsion-web` site it serves itself on
//! 127.0.0.1 (Twisted: `Deferred.fromFuture(aiohttp.get(...))` under `asyncioreactor`).
//!
//! Run it with `cargo run -p torsion-tokio --example reqwest_fetch`: it prints the page.
//!
//! Invariant: the site and the fetch share the reactor's thread only through Deferreds;
//! reqwest runs on the bridge's tokio runtime, never on the reactor's thread.

use std::process::ExitCode;
use std::rc::Rc;

use torsion::net::tcp::ListenOptions;
use torsion::{Failure, Reactor};
use torsion_tokio::try_defer_to_tokio;
use torsion_web::{Render, Request, Resource, Site};

/// The page the site serves.
pub const POEM: &str = "roses are red, violets are blue, torsion serves, reqwest fetches too\n";

struct Poem;

impl Resource for Poem {
    fn is_leaf(&self) -> bool {
        true
    }

    fn render_get(&self, _request: &Rc<Request>) -> Render {
        Render::text(POEM)
    }
}

/// Serves [`POEM`] on 127.0.0.1 (a port the kernel picks), fetches it with reqwest, stops
/// listening, and returns what was fetched.
pub async fn fetch_from_local_site(reactor: &Reactor) -> Result<String, Failure> {
    let options = ListenOptions {
        interface: [127, 0, 0, 1].into(),
        ..Default::default()
    };
    let port = reactor.listen_tcp_with(0, Site::new(Rc::new(Poem)), options)?;
    let url = format!("http://127.0.0.1:{}/poem", port.host().port().unwrap_or(0));
    // reqwest is built with rustls and no provider of its own: ring, as torsion's TLS.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let body = try_defer_to_tokio(async move {
        let client = reqwest::Client::builder().no_proxy().build()?;
        let response = client.get(url).send().await?.error_for_status()?;
        response.text().await
    })
    .await;
    port.stop_listening().await?;
    body
}

fn main() -> ExitCode {
    torsion::task::react(|reactor| async move {
        let body = fetch_from_local_site(&reactor).await?;
        print!("{body}");
        Ok(())
    })
}
