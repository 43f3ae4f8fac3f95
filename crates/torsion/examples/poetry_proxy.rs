//! The tutorial's caching poetry proxy, `twisted-server-3/poetry-proxy.py` (with the
//! cancellation from `twisted-server-4`): the first client makes the proxy fetch the poem
//! from the real server; every later client gets the cached copy, through a Deferred that
//! has already fired (`Deferred::succeed`, Twisted's `succeed`). A client that leaves
//! before the poem arrives cancels the download.
//!
//! Run a `poetry_server` on port 10002, then
//! `cargo run -p torsion --example poetry_proxy -- --port 10000 10002`
//! (the server as `[host:]port`; `--iface` as for `poetry_server`), and fetch the poem
//! twice with `cargo run -p torsion --example poetry_client -- 10000`.

#[path = "poetry/mod.rs"]
mod poetry;

use torsion::net::tcp::ListenOptions;
use torsion::prelude::*;

use poetry::proxy::{PoetryProxyFactory, ProxyService};
use poetry::{ServerArgs, parse_address};

#[torsion::main]
async fn main(reactor: Reactor) -> Result<(), Failure> {
    let args = ServerArgs::parse(std::env::args().skip(1))?;
    let [server] = args.rest.as_slice() else {
        return Err(Failure::msg(
            "usage: poetry_proxy [--port P] [--iface I] [SERVER_HOST:]SERVER_PORT",
        ));
    };
    let (host, server_port) = parse_address(server)?;

    let service = ProxyService::new(&reactor, &host, server_port);
    let options = ListenOptions {
        interface: args.iface,
        ..Default::default()
    };
    let port = reactor.listen_tcp_with(args.port, PoetryProxyFactory::new(service), options)?;
    println!("Proxying {host}:{server_port} on {}.", port.host());
    // Serve until Ctrl-C or SIGTERM; the program then exits 0.
    reactor.until_shutdown().await
}
