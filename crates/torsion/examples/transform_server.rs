//! The tutorial's transform service, `twisted-server-1/transformedpoetry.py`: a small RPC
//! over netstrings. A client sends `xform_name.poem` and gets the transformed poem back;
//! the one transform is `cummingsify` (lower-case the ASCII letters, leaving every other
//! byte as it is, like Python's `bytes.lower()`), and an unknown one closes the connection
//! without a reply. Requests arriving together are all answered before the connection
//! closes.
//!
//! Run with `cargo run -p torsion --example transform_server -- --port 10001`
//! (`--iface` as for `poetry_server`), then use it from the `poetry_client_inline` example.

#[path = "poetry/mod.rs"]
mod poetry;

use torsion::net::tcp::ListenOptions;
use torsion::prelude::*;

use poetry::ServerArgs;
use poetry::transform::{TransformFactory, TransformService};

#[torsion::main]
async fn main(reactor: Reactor) -> Result<(), Failure> {
    let args = ServerArgs::parse(std::env::args().skip(1))?;
    if !args.rest.is_empty() {
        return Err(Failure::msg(
            "usage: transform_server [--port P] [--iface I]",
        ));
    }
    let options = ListenOptions {
        interface: args.iface,
        ..Default::default()
    };
    let factory = TransformFactory::new(TransformService);
    let port = reactor.listen_tcp_with(args.port, factory, options)?;
    println!("Serving transforms on {}.", port.host());
    // Serve until Ctrl-C or SIGTERM; the program then exits 0.
    reactor.until_shutdown().await
}
