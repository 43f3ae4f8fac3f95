//! The transform service (`twisted-server-1/transformedpoetry.py`) and its client
//! (`TransformProxy` in `twisted-client-6` and `-7`): an RPC over netstrings. The request is
//! `xform_name.poem`, the reply the transformed poem; an unknown transform closes the
//! connection without a reply. Requests, poems and replies are bytes, as in Twisted: a
//! transform changes ASCII letters only and leaves every other byte alone, whatever the
//! poem's encoding.

use std::cell::Cell;
use std::rc::Rc;

use torsion::net::Address;
use torsion::net::Connector;
use torsion::protocol::{ClientFactory, Factory, Protocol};
use torsion::protocols::basic::{NetstringReceiver, StringContext, StringHandler};
use torsion::{Deferred, Failure, Reactor, Resolver};

use super::client::get_poetry;

// ===== the server =====

/// What the transforms do, apart from any protocol (the tutorial's `TransformService`).
pub struct TransformService;

impl TransformService {
    /// Lower-cases the ASCII letters, leaving every other byte as it is (Python's
    /// `bytes.lower()`).
    pub fn cummingsify(&self, poem: &[u8]) -> Vec<u8> {
        poem.to_ascii_lowercase()
    }
}

/// Answers transform requests, then closes (Twisted's
/// `TransformProtocol(NetstringReceiver)`). As in Twisted, closing does not stop the
/// requests already received: two requests arriving together get two replies.
pub struct TransformProtocol {
    factory: Rc<TransformFactory>,
}

impl StringHandler for TransformProtocol {
    fn string_received(&mut self, ctx: &mut StringContext<'_>, request: Vec<u8>) {
        let Some(dot) = request.iter().position(|&byte| byte == b'.') else {
            ctx.lose_connection(); // a bad request
            return;
        };
        let (xform_name, poem) = (&request[..dot], &request[dot + 1..]);
        if let Some(new_poem) = self.factory.transform(xform_name, poem) {
            ctx.send_string(&new_poem);
        }
        ctx.lose_connection();
    }
}

/// Maps transform names to the service's methods: only the names listed here can be
/// called (the tutorial's `TransformFactory` with its `xform_` methods).
pub struct TransformFactory {
    pub service: TransformService,
}

impl TransformFactory {
    pub fn new(service: TransformService) -> Rc<TransformFactory> {
        Rc::new(TransformFactory { service })
    }

    /// The transformed poem, or `None` for an unknown transform.
    pub fn transform(&self, xform_name: &[u8], poem: &[u8]) -> Option<Vec<u8>> {
        match xform_name {
            b"cummingsify" => Some(self.service.cummingsify(poem)),
            _ => None,
        }
    }
}

impl Factory for TransformFactory {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(NetstringReceiver::new(TransformProtocol {
            factory: self,
        })))
    }
}

// ===== the client =====

/// Sends the request once connected and hands the reply to its factory (Twisted's
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
/// fails or closes before a reply came (Twisted's `TransformClientFactory`).
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
            d.errback(reason);
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
    pub fn new(reactor: &Reactor, host: &str, port: u16) -> TransformProxy {
        TransformProxy {
            reactor: reactor.clone(),
            host: host.to_string(),
            port,
        }
    }

    /// Asks the service to apply `xform_name` to `poem`.
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

// ===== client 7.0 =====

/// Downloads the poem at `host:port` and cummingsifies it through `proxy`, keeping the
/// original poem if the transform fails (client 7.0's `get_transformed_poem`, an
/// `@inlineCallbacks` generator: each `.await` is a `yield`, each `match` a `try`/`except`).
pub async fn get_transformed_poem(
    reactor: Reactor,
    proxy: Rc<TransformProxy>,
    host: String,
    port: u16,
) -> Result<Vec<u8>, Failure> {
    let poem = match get_poetry(&reactor, &host, port).await {
        Ok(poem) => poem,
        Err(e) => {
            eprintln!("The poem download failed: {}", e.as_error());
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
