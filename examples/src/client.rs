//! The Deferred-returning poetry client of Dave Peticolas' series, from
//! `twisted-client-4/get-poetry.py` on (clients 4 to 8 share it): `get_poetry(host, port)`
//! returns a Deferred that fires with the poem, or fails if it could not be downloaded.
//!
//! A poem is bytes: whatever its encoding, it arrives as it was sent. One difference from
//! the tutorial's `PoetryProtocol`: a connection that ends in an error (a reset) fails the
//! Deferred rather than delivering the part of the poem that came before.
//!
//! Invariant: the Deferred fires once. The factory takes the resolver out before firing
//! it (the tutorial's `d, self.deferred = self.deferred, None`), so a late event finds
//! nothing to fire.

use std::cell::Cell;
use std::rc::Rc;

use torsion::error::ConnectionDone;
use torsion::net::{Address, Connector};
use torsion::protocol::{ClientFactory, Factory, Protocol};
use torsion::{Deferred, Failure, Reactor, Resolver};

/// Collects the poem until the server closes the connection (the tutorial's client-side
/// `PoetryProtocol`).
pub struct PoetryProtocol {
    poem: Vec<u8>,
    factory: Rc<PoetryClientFactory>,
}

impl Protocol for PoetryProtocol {
    fn data_received(&mut self, data: &[u8]) {
        self.poem.extend_from_slice(data);
    }

    fn connection_lost(&mut self, reason: Failure) {
        if reason.check::<ConnectionDone>() {
            let poem = std::mem::take(&mut self.poem);
            self.factory.poem_finished(poem);
        } else {
            self.factory.poem_failed(reason);
        }
    }
}

/// Fires its Deferred with the poem, or with the reason the connection failed (the
/// tutorial's `PoetryClientFactory(deferred)`).
pub struct PoetryClientFactory {
    deferred: Cell<Option<Resolver<Vec<u8>>>>,
}

impl PoetryClientFactory {
    /// A factory that fires `deferred` once.
    pub fn new(deferred: Resolver<Vec<u8>>) -> Rc<PoetryClientFactory> {
        Rc::new(PoetryClientFactory {
            deferred: Cell::new(Some(deferred)),
        })
    }

    /// The whole poem arrived.
    pub fn poem_finished(&self, poem: Vec<u8>) {
        if let Some(d) = self.deferred.take() {
            d.callback(poem);
        }
    }

    /// The download failed.
    pub fn poem_failed(&self, reason: Failure) {
        if let Some(d) = self.deferred.take() {
            d.errback(reason);
        }
    }
}

impl Factory for PoetryClientFactory {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(PoetryProtocol {
            poem: Vec::new(),
            factory: self,
        }))
    }
}

impl ClientFactory for PoetryClientFactory {
    fn client_connection_failed(&self, _connector: &Connector, reason: Failure) {
        self.poem_failed(reason);
    }
}

/// Downloads a poem from `host:port` (the tutorial's `get_poetry`): the Deferred fires with
/// the poem's bytes, or fails if the poem could not be downloaded (connection refused,
/// host not found, connection reset). Cancelling it drops the connection.
///
/// # Examples
///
/// ```no_run
/// use torsion::Reactor;
/// use torsion_examples::client::get_poetry;
///
/// let reactor = Reactor::new().unwrap();
/// let stopper = reactor.stopper();
/// get_poetry(&reactor, "127.0.0.1", 10001)
///     .map(|poem| println!("{} bytes of poetry", poem.len()))
///     .add_both(stopper);
/// reactor.run().unwrap();
/// ```
pub fn get_poetry(reactor: &Reactor, host: &str, port: u16) -> Deferred<Vec<u8>> {
    let connector: Rc<Cell<Option<Connector>>> = Rc::new(Cell::new(None));
    let slot = connector.clone();
    let (resolver, d) = Deferred::with_canceller(move |_resolver| {
        if let Some(connector) = slot.take() {
            connector.disconnect();
        }
    });
    let factory = PoetryClientFactory::new(resolver);
    connector.set(Some(reactor.connect_tcp(host, port, factory)));
    d
}
