//! The tutorial's poetry server, `twisted-server-1/fastpoetry.py`: every client gets the
//! whole poem at once, then the connection closes. The poem lives in the factory, which
//! each protocol reaches as Twisted's `self.factory`. The poem is the file's bytes, sent as
//! they are, whatever its encoding.
//!
//! Run with
//! `cargo run -p torsion --example poetry_server -- --port 10002 poems/science.txt`
//! (`--iface` chooses the interface, 127.0.0.1 by default; without `--port`, any free port),
//! then fetch the poem with `nc localhost 10002` or the `poetry_client` example.

#[path = "poetry/mod.rs"]
mod poetry;

use torsion::net::tcp::ListenOptions;
use torsion::prelude::*;

use poetry::ServerArgs;
use poetry::server::PoetryFactory;

#[torsion::main]
async fn main(reactor: Reactor) -> Result<(), Failure> {
    let args = ServerArgs::parse(std::env::args().skip(1))?;
    let [poetry_file] = args.rest.as_slice() else {
        return Err(Failure::msg(
            "usage: poetry_server [--port P] [--iface I] POETRY_FILE",
        ));
    };
    let poem = std::fs::read(poetry_file)
        .map_err(|e| Failure::msg(format!("cannot read {poetry_file}: {e}")))?;

    let options = ListenOptions {
        interface: args.iface,
        ..Default::default()
    };
    let port = reactor.listen_tcp_with(args.port, PoetryFactory::new(poem), options)?;
    println!("Serving {poetry_file} on {}.", port.host());
    // Serve until Ctrl-C or SIGTERM; the program then exits 0.
    reactor.until_shutdown().await
}
