//! The transform service's client (`TransformProxy` in `twisted-client-6` to `-8`): a
//! remote procedure call over netstrings to the server `torsion transform` runs (the
//! tutorial's `transformedpoetry.py`). The request is `NAME.POEM`, the reply the
//! transformed poem; a server that closes without a reply has refused the transform.
//!
//! Also [`get_transformed_poem`], clients 7 and 8's `@inlineCallbacks` generator, as an
//! `async fn`. Requests, poems and replies are bytes.
//!
//! Invariant: each request's Deferred fires once: with the reply, or with the reason no
//! reply came (connection refused, or closed first).

use std::cell::Cell;
use std::rc::Rc;

use torsion::error::ConnectionDone;
use torsion::net::{Address, Connector};
use torsion::protocol::{ClientFactory, Factory, Protocol};
use torsion::protocols::basic::{NetstringReceiver, StringContext, StringHandler};
use torsion::{Deferred, Failure, Reactor, Resolver};

use crate::client::get_poetry;

torsion::error_type!(
    /// The transform server closed the connection without a reply: it does not know the
    /// transform asked for, or could not read the request.
    pub NoReply,
    "the transform server closed the connection without a reply"
);

/// Sends the request once connected and hands the reply to its factory (the tutorial's
/// `TransformClientProtocol(NetstringReceiver)`).
pub struct TransformClientProtocol {
    factory: Rc<TransformClientFactory>,
}

impl StringHandler for TransformClientProtocol {
    fn connection_made(&mut self, ctx: &mut StringContext<'_>) {
        let name = self.factory.xform_name.as_bytes();
        let poem = &self.factory.poem;
        let mut request = Vec::with_capacity(name.len() + 1 + poem.len());
        request.extend_from_slice(name);
        request.push(b'.');
        request.extend_from_slice(poem);
        ctx.send_string(&request);
    }

    fn string_received(&mut self, ctx: &mut StringContext<'_>, poem: Vec<u8>) {
        ctx.lose_connection();
        self.factory.handle_poem(poem);
    }
}

/// One transform request: fires its Deferred with the reply, or fails if the connection
/// fails or closes before a reply came (the tutorial's `TransformClientFactory`).
pub struct TransformClientFactory {
    xform_name: String,
    poem: Vec<u8>,
    deferred: Cell<Option<Resolver<Vec<u8>>>>,
}

impl TransformClientFactory {
    fn handle_poem(&self, poem: Vec<u8>) {
        if let Some(d) = self.deferred.take() {
            d.callback(poem);
        }
    }

    fn fail(&self, reason: Failure) {
        if let Some(d) = self.deferred.take() {
            if reason.check::<ConnectionDone>() {
                d.errback(NoReply);
            } else {
                d.errback(reason);
            }
        }
    }
}

impl Factory for TransformClientFactory {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(NetstringReceiver::new(TransformClientProtocol {
            factory: self,
        })))
    }
}

impl ClientFactory for TransformClientFactory {
    fn client_connection_failed(&self, _connector: &Connector, reason: Failure) {
        self.fail(reason);
    }

    fn client_connection_lost(&self, _connector: &Connector, reason: Failure) {
        self.fail(reason);
    }
}

/// The transform service at `host:port`, called like a local object (the tutorial's
/// `TransformProxy`).
pub struct TransformProxy {
    reactor: Reactor,
    host: String,
    port: u16,
}

impl TransformProxy {
    /// A proxy for the service at `host:port`; nothing connects until [`xform`](Self::xform).
    pub fn new(reactor: &Reactor, host: &str, port: u16) -> TransformProxy {
        TransformProxy {
            reactor: reactor.clone(),
            host: host.to_string(),
            port,
        }
    }

    /// Asks the service to apply the transform `xform_name` to `poem`, over a connection of
    /// its own: the Deferred fires with the reply, or fails with the reason there was none.
    pub fn xform(&self, xform_name: &str, poem: &[u8]) -> Deferred<Vec<u8>> {
        let (resolver, d) = Deferred::new();
        let factory = Rc::new(TransformClientFactory {
            xform_name: xform_name.to_string(),
            poem: poem.to_vec(),
            deferred: Cell::new(Some(resolver)),
        });
        self.reactor.connect_tcp(&self.host, self.port, factory);
        d
    }
}

/// Downloads the poem at `host:port` and cummingsifies it through `proxy`, keeping the
/// original poem if the transform fails (clients 7 and 8's `get_transformed_poem`, an
/// `@inlineCallbacks` generator: each `.await` is a `yield`, each `match` a `try`/`except`,
/// `return` is `returnValue`). Both failures are reported on stderr, as in the tutorial.
///
/// # Errors
///
/// The download failed (the failure is passed on, as the tutorial's `raise`).
pub async fn get_transformed_poem(
    reactor: Reactor,
    proxy: Rc<TransformProxy>,
    host: String,
    port: u16,
) -> Result<Vec<u8>, Failure> {
    let poem = match get_poetry(&reactor, &host, port).await {
        Ok(poem) => poem,
        Err(e) => {
            eprintln!("The poem download failed: {e}");
            return Err(e);
        }
    };
    match proxy.xform("cummingsify", &poem).await {
        Ok(new_poem) => Ok(new_poem),
        Err(_) => {
            eprintln!("Cummingsify failed!");
            Ok(poem)
        }
    }
}
