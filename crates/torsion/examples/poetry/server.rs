//! The "fastpoetry" server (`twisted-server-1/fastpoetry.py`): each client gets the whole
//! poem at once, then the connection closes. The poem is bytes, sent as they were read.

use std::rc::Rc;

use torsion::net::{Address, Transport};
use torsion::protocol::{Factory, Protocol};

/// Serves the poem held by its factory (Twisted's `PoetryProtocol`).
pub struct PoetryProtocol {
    factory: Rc<PoetryFactory>,
}

impl Protocol for PoetryProtocol {
    fn connection_made(&mut self, transport: Transport) {
        transport.write(&self.factory.poem);
        transport.lose_connection();
    }
}

/// Holds the poem for every connection (Twisted's `PoetryFactory(ServerFactory)`).
pub struct PoetryFactory {
    pub poem: Vec<u8>,
}

impl PoetryFactory {
    pub fn new(poem: impl Into<Vec<u8>>) -> Rc<PoetryFactory> {
        Rc::new(PoetryFactory { poem: poem.into() })
    }
}

impl Factory for PoetryFactory {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(PoetryProtocol { factory: self }))
    }
}
