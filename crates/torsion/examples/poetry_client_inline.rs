//! The tutorial's poetry client 7.0, `twisted-client-7/get-poetry.py` (Part 17,
//! "inlineCallbacks"): `get_transformed_poem` is an `async fn` where Twisted has an
//! `@inlineCallbacks` generator. It downloads a poem, has the transform service cummingsify
//! it, and keeps the original poem if the transform fails.
//!
//! Run a `transform_server` on port 10001 and `poetry_server`s on 10002 and 10003, then
//! `cargo run -p torsion --example poetry_client_inline -- 10001 10002 10003`
//! (the transform service first, each as `[host:]port`). Stop the transform server to see
//! the client fall back to the original poems.

#[path = "poetry/mod.rs"]
mod poetry;

use std::rc::Rc;

use torsion::{Failure, Reactor, spawn};

use poetry::transform::{TransformProxy, get_transformed_poem};
use poetry::{parse_address, print_poem};

#[torsion::main]
async fn main(reactor: Reactor) -> Result<(), Failure> {
    let mut addresses = std::env::args()
        .skip(1)
        .map(|arg| parse_address(&arg))
        .collect::<Result<Vec<_>, _>>()?;
    if addresses.len() < 2 {
        return Err(Failure::msg(
            "usage: poetry_client_inline XFORM_[HOST:]PORT [HOST:]PORT ...",
        ));
    }
    let (xform_host, xform_port) = addresses.remove(0);
    let proxy = Rc::new(TransformProxy::new(&reactor, &xform_host, xform_port));

    // Start every download at once, print each poem as it arrives.
    let downloads: Vec<_> = addresses
        .into_iter()
        .map(|(host, port)| {
            spawn(get_transformed_poem(
                reactor.clone(),
                proxy.clone(),
                host,
                port,
            ))
            .add_callback(|poem| print_poem(&poem))
        })
        .collect();
    for download in downloads {
        // A failed download was reported inside get_transformed_poem.
        let _ = download.await;
    }
    Ok(())
}
