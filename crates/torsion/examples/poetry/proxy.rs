//! The caching poetry proxy (`twisted-server-3/poetry-proxy.py`, with the cancellation of
//! `twisted-server-4`): the first client's request fetches the poem from the real server;
//! later clients get the cached copy at once. The poem's bytes go through unchanged.

use std::cell::RefCell;
use std::rc::Rc;

use torsion::defer::DeferredHandle;
use torsion::error::Cancelled;
use torsion::net::{Address, Transport};
use torsion::protocol::{Factory, Protocol};
use torsion::{Deferred, Failure, Reactor};

use super::client::get_poetry;

/// Gets the poem, from the cache or from the server (the tutorial's `ProxyService`).
pub struct ProxyService {
    reactor: Reactor,
    host: String,
    port: u16,
    /// The cached poem.
    poem: Rc<RefCell<Option<Vec<u8>>>>,
}

impl ProxyService {
    pub fn new(reactor: &Reactor, host: &str, port: u16) -> ProxyService {
        ProxyService {
            reactor: reactor.clone(),
            host: host.to_string(),
            port,
            poem: Rc::new(RefCell::new(None)),
        }
    }

    /// The poem: sometimes at once, sometimes later, so always as a Deferred, already fired
    /// when the poem is cached (Twisted's `succeed(self.poem)`).
    pub fn get_poem(&self) -> Deferred<Vec<u8>> {
        let cached = self.poem.borrow().clone();
        if let Some(poem) = cached {
            println!("Using cached poem.");
            return Deferred::succeed(poem);
        }
        println!("Fetching poem from server.");
        let cache = self.poem.clone();
        get_poetry(&self.reactor, &self.host, self.port).map(move |poem| {
            *cache.borrow_mut() = Some(poem.clone()); // set_poem
            poem
        })
    }

    /// Whether the poem is cached.
    pub fn is_cached(&self) -> bool {
        self.poem.borrow().is_some()
    }
}

/// Serves the poem to a client of the proxy (Twisted's `PoetryProxyProtocol`). If the
/// client goes away before the poem arrives, the download is cancelled.
pub struct PoetryProxyProtocol {
    factory: Rc<PoetryProxyFactory>,
    deferred: Option<DeferredHandle>,
}

impl Protocol for PoetryProxyProtocol {
    fn connection_made(&mut self, transport: Transport) {
        let writer = transport.clone();
        let d = self
            .factory
            .service
            .get_poem()
            .map(move |poem| writer.write(&poem))
            .add_both(move |result| {
                if let Err(failure) = result
                    && !failure.check::<Cancelled>()
                {
                    eprintln!("No poem to serve: {}", failure.as_error());
                }
                transport.lose_connection();
                Ok(())
            });
        self.deferred = Some(d.handle());
    }

    fn connection_lost(&mut self, _reason: Failure) {
        if let Some(d) = self.deferred.take()
            && !d.is_fired()
        {
            println!("Canceling poem download.");
            d.cancel();
        }
    }
}

/// Holds the service for the proxy's connections (Twisted's `PoetryProxyFactory`).
pub struct PoetryProxyFactory {
    pub service: ProxyService,
}

impl PoetryProxyFactory {
    pub fn new(service: ProxyService) -> Rc<PoetryProxyFactory> {
        Rc::new(PoetryProxyFactory { service })
    }
}

impl Factory for PoetryProxyFactory {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(PoetryProxyProtocol {
            factory: self,
            deferred: None,
        }))
    }
}
