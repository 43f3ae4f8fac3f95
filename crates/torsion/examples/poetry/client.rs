//! The Deferred-based poetry client's pieces (`twisted-client-5/get-poetry.py`):
//! `get_poetry`, and the `cummingsify` transform that sometimes fails. A poem is bytes, as
//! in Twisted: whatever its encoding, it arrives as it was sent.

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::rc::Rc;

use torsion::net::Address;
use torsion::net::Connector;
use torsion::protocol::{ClientFactory, Factory, Protocol};
use torsion::{Deferred, Failure, Reactor, Resolver};

/// Collects the poem until the server closes the connection (Twisted's
/// `PoetryProtocol` on the client side).
pub struct PoetryClientProtocol {
    poem: Vec<u8>,
    factory: Rc<PoetryClientFactory>,
}

impl Protocol for PoetryClientProtocol {
    fn data_received(&mut self, data: &[u8]) {
        self.poem.extend_from_slice(data);
    }

    fn connection_lost(&mut self, _reason: Failure) {
        let poem = std::mem::take(&mut self.poem);
        self.factory.poem_finished(poem);
    }
}

/// Fires its Deferred with the poem, or with the reason the connection failed (Twisted's
/// `PoetryClientFactory`). The resolver is taken out before it fires, so it fires once:
/// Twisted's `d, self.deferred = self.deferred, None`.
pub struct PoetryClientFactory {
    deferred: Cell<Option<Resolver<Vec<u8>>>>,
}

impl PoetryClientFactory {
    fn poem_finished(&self, poem: Vec<u8>) {
        if let Some(d) = self.deferred.take() {
            d.callback(poem);
        }
    }
}

impl Factory for PoetryClientFactory {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(PoetryClientProtocol {
            poem: Vec::new(),
            factory: self,
        }))
    }
}

impl ClientFactory for PoetryClientFactory {
    fn client_connection_failed(&self, _connector: &Connector, reason: Failure) {
        if let Some(d) = self.deferred.take() {
            d.errback(reason);
        }
    }
}

/// Downloads a poem from `host:port`: the Deferred fires with its bytes, or fails if the
/// poem could not be downloaded. Cancelling it drops the connection (as
/// `twisted-server-4`'s proxy does).
pub fn get_poetry(reactor: &Reactor, host: &str, port: u16) -> Deferred<Vec<u8>> {
    let connector: Rc<Cell<Option<Connector>>> = Rc::new(Cell::new(None));
    let slot = connector.clone();
    let (resolver, d) = Deferred::with_canceller(move |_resolver| {
        if let Some(connector) = slot.take() {
            connector.disconnect();
        }
    });
    let factory = Rc::new(PoetryClientFactory {
        deferred: Cell::new(Some(resolver)),
    });
    connector.set(Some(reactor.connect_tcp(host, port, factory)));
    d
}

/// The poem is gibberish: cummingsifying it cannot work (the tutorial's `GibberishError`).
#[derive(Debug)]
pub struct GibberishError;

impl fmt::Display for GibberishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the poem is gibberish")
    }
}

impl std::error::Error for GibberishError {}

/// A bug in `cummingsify` (the tutorial's `ValueError`).
#[derive(Debug)]
pub struct CummingsifyBug;

impl fmt::Display for CummingsifyBug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cummingsify has a bug")
    }
}

impl std::error::Error for CummingsifyBug {}

/// How a call to [`cummingsify`] goes: the tutorial's `random.choice([success, gibberish,
/// bug])`, made a parameter so tests can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Success,
    Gibberish,
    Bug,
}

impl Fate {
    /// One of the three, at random.
    pub fn random() -> Fate {
        // A fresh `RandomState` hashes with new random keys: enough for a demo.
        match RandomState::new().build_hasher().finish() % 3 {
            0 => Fate::Success,
            1 => Fate::Gibberish,
            _ => Fate::Bug,
        }
    }
}

/// Lower-cases the poem's ASCII letters, leaving every other byte as it is (Python's
/// `bytes.lower()`), unless `fate` says it fails (the tutorial's `cummingsify`).
pub fn cummingsify(poem: &[u8], fate: Fate) -> Result<Vec<u8>, Failure> {
    match fate {
        Fate::Success => Ok(poem.to_ascii_lowercase()),
        Fate::Gibberish => Err(GibberishError.into()),
        Fate::Bug => Err(CummingsifyBug.into()),
    }
}

/// Cummingsifies the poem: gibberish is an error that goes on down the chain; any other
/// failure is a bug in `cummingsify`, so the original poem is used (the tutorial's
/// `try_to_cummingsify`).
pub fn try_to_cummingsify(poem: Vec<u8>, fate: Fate) -> Result<Vec<u8>, Failure> {
    match cummingsify(&poem, fate) {
        Err(failure) if failure.check::<GibberishError>() => Err(failure),
        Err(_) => {
            eprintln!("Cummingsify failed!");
            Ok(poem)
        }
        ok => ok,
    }
}
