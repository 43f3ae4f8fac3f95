//! A TCP port forwarder (Twisted's `twisted.protocols.portforward`): each connection
//! accepted is relayed, both ways, to a connection the proxy opens to another address.
//!
//! | torsion | Twisted |
//! | --- | --- |
//! | [`ProxyFactory`] | `ProxyFactory(host, port)` |
//! | [`ProxyServer`] | `ProxyServer` (the accepted side) |
//! | [`ProxyClient`], [`ProxyClientFactory`] | `ProxyClient`, `ProxyClientFactory` (the outgoing side) |
//!
//! As in Twisted: the accepted connection is paused (its transport's `pause_producing`) until
//! the outgoing one is made, so nothing is read that has nowhere to go; then each side's
//! transport is registered as the other's streaming producer
//! ([`TransportProducer`](crate::net::TransportProducer)), so a side whose send buffer
//! passes the high-water mark stops the other from reading until it drains. A proxy between
//! a fast sender and a slow receiver thus holds at most about
//! [`HIGH_WATER_MARK`](crate::net::tcp::HIGH_WATER_MARK) plus one read in each direction.
//! When one side closes, the other is closed once what it still has to send is sent. If the
//! outgoing connection fails, the accepted one is closed; if the accepted one closes first,
//! the outgoing attempt is cancelled.
//!
//! Beyond Twisted, [`ProxyFactory::with_endpoint`] forwards to any
//! [`ClientEndpoint`] (a UNIX socket, a host name tried the Happy Eyeballs way, …).
//! Half-closes are not forwarded: an end of input on one side closes both, as in Twisted.
//!
//! Invariant: the two sides share only their transports and a small `Link`; no borrow of
//! it is held while a transport is called.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;

use crate::defer::{DeferredHandle, Failure};
use crate::endpoints::{ClientEndpoint, TcpClientEndpoint};
use crate::error::Cancelled;
use crate::net::Connector;
use crate::net::{Address, Transport, as_producer};
use crate::protocol::{ClientFactory, Factory, Protocol};
use crate::reactor::Reactor;

/// What the two sides of one forwarded connection share.
#[derive(Default)]
struct Link {
    /// The outgoing side's transport, once connected (the server's `peer`).
    client: RefCell<Option<Transport>>,
    /// Bytes the accepted side received before the outgoing side was connected (none
    /// normally: it is paused meanwhile).
    pending: RefCell<Vec<u8>>,
    server_lost: Cell<bool>,
    client_lost: Cell<bool>,
}

/// Listens for connections to forward to one address (Twisted's `ProxyFactory`): each
/// accepted connection gets a [`ProxyServer`], which connects to the address and relays.
///
/// # Examples
///
/// Forwarding local port 8080 to a web server:
///
/// ```
/// use torsion::Reactor;
/// use torsion::protocols::portforward::ProxyFactory;
///
/// let reactor = Reactor::new().unwrap();
/// let factory = ProxyFactory::new(&reactor, "127.0.0.1", 80);
/// let port = reactor.listen_tcp(0, factory).unwrap(); // 8080 in a real program
/// assert_ne!(port.host().port(), Some(0));
/// // reactor.run();
/// # drop(port.stop_listening());
/// ```
pub struct ProxyFactory {
    endpoint: Rc<dyn ClientEndpoint>,
}

impl ProxyFactory {
    /// Forwards to `host:port` over TCP, giving up on a connection attempt after 30 s
    /// (Twisted's `ProxyFactory(host, port)`, which uses `connectTCP`).
    pub fn new(reactor: &Reactor, host: &str, port: u16) -> Rc<ProxyFactory> {
        Self::with_endpoint(Rc::new(TcpClientEndpoint::new(reactor, host, port)))
    }

    /// Forwards to wherever `endpoint` connects.
    pub fn with_endpoint(endpoint: Rc<dyn ClientEndpoint>) -> Rc<ProxyFactory> {
        Rc::new(ProxyFactory { endpoint })
    }

    /// Where connections are forwarded to.
    pub fn endpoint(&self) -> &Rc<dyn ClientEndpoint> {
        &self.endpoint
    }
}

impl Factory for ProxyFactory {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(ProxyServer::new(self)))
    }
}

impl fmt::Debug for ProxyFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyFactory")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// The accepted side of a forwarded connection (Twisted's `ProxyServer`): pauses its
/// transport, connects to the [`ProxyFactory`]'s endpoint with a [`ProxyClientFactory`],
/// and once connected writes what it receives to the outgoing side.
pub struct ProxyServer {
    factory: Rc<ProxyFactory>,
    link: Rc<Link>,
    /// The outgoing connection attempt, to cancel if this side goes first.
    attempt: Option<DeferredHandle>,
}

impl ProxyServer {
    /// The protocol for one connection accepted by `factory`.
    pub fn new(factory: Rc<ProxyFactory>) -> ProxyServer {
        ProxyServer {
            factory,
            link: Rc::new(Link::default()),
            attempt: None,
        }
    }
}

impl Protocol for ProxyServer {
    fn connection_made(&mut self, transport: Transport) {
        // Read nothing until there is somewhere to send it.
        transport.pause_producing();
        let client_factory = Rc::new(ProxyClientFactory {
            server: transport.clone(),
            link: self.link.clone(),
        });
        let connecting = self.factory.endpoint.connect(client_factory);
        self.attempt = Some(connecting.handle());
        let server = transport;
        drop(connecting.map(|_| ()).add_errback(move |failure: Failure| {
            if failure.check::<Cancelled>() {
                tracing::debug!(target: "torsion::portforward", "connection to peer cancelled");
            } else {
                tracing::info!(
                    target: "torsion::portforward",
                    "unable to connect to peer for {}: {failure}",
                    server.peer()
                );
            }
            server.lose_connection();
            Ok::<(), Failure>(())
        }));
    }

    fn data_received(&mut self, data: &[u8]) {
        let client = self.link.client.borrow().clone();
        match client {
            Some(client) => client.write(data),
            None if !self.link.client_lost.get() => {
                self.link.pending.borrow_mut().extend_from_slice(data);
            }
            None => {}
        }
    }

    fn connection_lost(&mut self, _reason: Failure) {
        self.link.server_lost.set(true);
        self.link.pending.borrow_mut().clear();
        let client = self.link.client.borrow_mut().take();
        match client {
            Some(client) => {
                // This side was the client's producer: let the client close once drained.
                client.unregister_producer();
                client.lose_connection();
            }
            None => {
                if let Some(attempt) = self.attempt.take() {
                    attempt.cancel();
                }
            }
        }
    }
}

impl fmt::Debug for ProxyServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyServer")
            .field("connected", &self.link.client.borrow().is_some())
            .finish_non_exhaustive()
    }
}

/// Builds the [`ProxyClient`] for one [`ProxyServer`]'s outgoing connection (Twisted's
/// `ProxyClientFactory`). As a client factory it closes the accepted side when the
/// connection fails (used with [`Reactor::connect_tcp`]; through an endpoint, the
/// endpoint's failure does the same).
pub struct ProxyClientFactory {
    server: Transport,
    link: Rc<Link>,
}

impl ProxyClientFactory {
    /// The accepted side's transport (Twisted's `server.transport`).
    pub fn server(&self) -> &Transport {
        &self.server
    }
}

impl Factory for ProxyClientFactory {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(ProxyClient {
            server: self.server.clone(),
            link: self.link.clone(),
        }))
    }
}

impl ClientFactory for ProxyClientFactory {
    fn client_connection_failed(&self, _connector: &Connector, reason: Failure) {
        tracing::info!(target: "torsion::portforward", "unable to connect to peer: {reason}");
        self.server.lose_connection();
    }
}

impl fmt::Debug for ProxyClientFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyClientFactory")
            .field("server", &self.server.peer())
            .finish_non_exhaustive()
    }
}

/// The outgoing side of a forwarded connection (Twisted's `ProxyClient`): once connected,
/// registers each side's transport as the other's streaming producer, resumes the accepted
/// side, and writes what it receives to it.
pub struct ProxyClient {
    server: Transport,
    link: Rc<Link>,
}

impl Protocol for ProxyClient {
    fn connection_made(&mut self, transport: Transport) {
        if self.link.server_lost.get() || !self.server.is_connected() {
            // The accepted side went while we connected.
            transport.lose_connection();
            return;
        }
        *self.link.client.borrow_mut() = Some(transport.clone());
        let pending = std::mem::take(&mut *self.link.pending.borrow_mut());
        if !pending.is_empty() {
            transport.write(&pending);
        }
        // Flow control both ways: a full send buffer on one side stops reading on the other.
        for (consumer, producer) in [(&transport, &self.server), (&self.server, &transport)] {
            if let Err(err) = consumer.register_producer(as_producer(producer), true) {
                crate::log::warning!(
                    target: "torsion::portforward",
                    "cannot register {} as the producer of {}: {err}",
                    producer.peer(),
                    consumer.peer()
                );
            }
        }
        self.server.resume_producing();
    }

    fn data_received(&mut self, data: &[u8]) {
        self.server.write(data);
    }

    fn connection_lost(&mut self, _reason: Failure) {
        self.link.client_lost.set(true);
        let client = self.link.client.borrow_mut().take();
        drop(client);
        // This side was the server's producer: let the server close once drained.
        self.server.unregister_producer();
        self.server.lose_connection();
    }
}

impl fmt::Debug for ProxyClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyClient")
            .field("server", &self.server.peer())
            .finish_non_exhaustive()
    }
}
