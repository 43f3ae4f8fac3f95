//! The `stdio:` server endpoint (Twisted's `StandardIOEndpoint`): "listening" on standard
//! input and output makes the one protocol a [`StandardIo`](crate::stdio::StandardIo)
//! connection, so a server written against endpoints can serve one client over a pipe
//! (inetd-style, or a test driving it through its stdin and stdout).
//!
//! Invariant: each `listen` builds exactly one protocol, connected to descriptors 0 and 1.

use std::rc::Rc;

use super::{ListeningPort, ServerEndpoint};
use crate::defer::Deferred;
use crate::error::NoProtocol;
use crate::net::Address;
use crate::protocol::Factory;
use crate::reactor::Reactor;
use crate::stdio::StandardIo;

/// Serves one protocol on this process's standard input and output (Twisted's
/// `StandardIOEndpoint`, the string `stdio:`). The port it hands back closes the
/// connection when asked to stop listening.
#[derive(Debug, Clone)]
pub struct StandardIoEndpoint {
    reactor: Reactor,
}

impl StandardIoEndpoint {
    /// The endpoint for `reactor`.
    pub fn new(reactor: &Reactor) -> StandardIoEndpoint {
        StandardIoEndpoint {
            reactor: reactor.clone(),
        }
    }
}

impl ServerEndpoint for StandardIoEndpoint {
    fn listen(&self, factory: Rc<dyn Factory>) -> Deferred<ListeningPort> {
        let Some(protocol) = factory.build_protocol(&Address::Pipe) else {
            return Deferred::fail(NoProtocol);
        };
        match StandardIo::with_descriptors(&self.reactor, protocol, 0, 1) {
            Ok(io) => Deferred::succeed(io as ListeningPort),
            Err(failure) => Deferred::fail(failure),
        }
    }
}
