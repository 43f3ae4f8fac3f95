//! Outgoing stream connections, TCP or UNIX (Twisted's `tcp.Connector` and its
//! `BaseConnector`, which `unix.Connector` subclasses): one attempt at a time, tried address
//! by address, with a timeout, told to the client factory; and made again on demand.
//!
//! Invariant: the connector and its attempt keep each other alive only while the attempt
//! runs; a connector's factory hears `client_connection_failed` or, once connected,
//! `client_connection_lost`, exactly once per attempt.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::{Rc, Weak};
use std::time::Duration;

use socket2::{Domain, Protocol as SockProtocol, SockAddr, Socket, Type};

use super::connection::{Connection, ConnectionEnded};
use crate::defer::Failure;
use crate::error::{
    ConnectCancelled, ConnectTimeout, ConnectionDone, ConnectionRefused, InvalidArgument,
};
use crate::net::{Address, Transport, TransportOps};
use crate::protocol::ClientFactory;
use crate::reactor::{FileDescriptor, Reactor, WriteDescriptor};
use crate::time::{DelayedCall, ReactorTime};

use super::port::address_label;
use super::tcp::{ConnectOptions, resolve};

/// Where a [`Connector`] is in its life (Twisted's connector `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorState {
    /// Not connected and not trying.
    Disconnected,
    /// Resolving or connecting.
    Connecting,
    /// Connected.
    Connected,
}

/// An outgoing stream connection, TCP or UNIX, which can be stopped, dropped and made
/// again (Twisted's `IConnector`, as `connectTCP` and `connectUNIX` return it).
#[derive(Clone)]
pub struct Connector(Rc<ConnectorInner>);

/// Where a connector connects to.
pub(crate) enum Destination {
    /// A host name or IP literal, and a port.
    Tcp { host: String, port: u16 },
    /// Addresses to try in order.
    TcpAddresses(Vec<SocketAddr>),
    /// A UNIX socket path, as given (a leading `@` or NUL names an abstract socket).
    Unix(std::path::PathBuf),
}

struct ConnectorInner {
    reactor: Reactor,
    destination: Destination,
    factory: Rc<dyn ClientFactory>,
    options: ConnectOptions,
    state: Cell<ConnectorState>,
    attempt: RefCell<Option<Rc<Attempt>>>,
    connection: RefCell<Option<Weak<Connection>>>,
    factory_active: Cell<bool>,
}

/// One connection attempt in progress.
struct Attempt {
    /// Strong while the attempt runs (the caller may drop the `Connector`); the link back
    /// from the connector is cleared when the attempt ends, breaking the cycle.
    connector: Rc<ConnectorInner>,
    socket: RefCell<Option<Socket>>,
    fd: Cell<RawFd>,
    /// The address being connected to, once resolved.
    peer: RefCell<Option<Address>>,
    /// The TCP addresses still to try if this one fails.
    remaining: RefCell<VecDeque<SocketAddr>>,
    timeout: RefCell<Option<DelayedCall>>,
    done: Cell<bool>,
}

/// How long to wait before trying again when a UNIX socket's backlog is full (`EAGAIN`).
const UNIX_RETRY: Duration = Duration::from_millis(10);

impl Connector {
    /// Makes a connector for `destination` and starts connecting.
    pub(crate) fn start<F: ClientFactory>(
        reactor: &Reactor,
        destination: Destination,
        factory: Rc<F>,
        options: ConnectOptions,
    ) -> Connector {
        let factory: Rc<dyn ClientFactory> = factory;
        let connector = Connector(Rc::new(ConnectorInner {
            reactor: reactor.clone(),
            destination,
            factory,
            options,
            state: Cell::new(ConnectorState::Disconnected),
            attempt: RefCell::new(None),
            connection: RefCell::new(None),
            factory_active: Cell::new(false),
        }));
        connector.connect();
        connector
    }

    /// Starts connecting (again) (Twisted's `connect`): after a failure or a lost
    /// connection, this is how to retry or reconnect.
    ///
    /// # Panics
    ///
    /// If the connector is already connecting or connected, as Twisted raises.
    pub fn connect(&self) {
        let inner = &self.0;
        assert!(
            inner.state.get() == ConnectorState::Disconnected,
            "Connector::connect: already {:?}",
            inner.state.get()
        );
        inner.state.set(ConnectorState::Connecting);
        if !inner.factory_active.replace(true) {
            crate::protocol::factory_started(&inner.factory);
        }
        let attempt = Rc::new(Attempt {
            connector: inner.clone(),
            socket: RefCell::new(None),
            fd: Cell::new(-1),
            peer: RefCell::new(None),
            remaining: RefCell::new(VecDeque::new()),
            timeout: RefCell::new(None),
            done: Cell::new(false),
        });
        *inner.attempt.borrow_mut() = Some(attempt.clone());
        if let Some(timeout) = inner.options.timeout {
            let a = attempt.clone();
            let address = self.destination();
            let call = inner.reactor.call_later(timeout, move || {
                a.fail(ConnectTimeout { address, timeout }.into());
            });
            *attempt.timeout.borrow_mut() = Some(call);
        }
        inner.factory.started_connecting(self);
        let (host, port) = match &inner.destination {
            Destination::Tcp { host, port } => (host.clone(), *port),
            Destination::TcpAddresses(addresses) => {
                let a = attempt.clone();
                let addresses = addresses.clone();
                inner
                    .reactor
                    .call_later(Duration::ZERO, move || a.try_addresses(addresses));
                return;
            }
            Destination::Unix(path) => {
                let a = attempt.clone();
                let path = path.clone();
                inner.reactor.call_later(
                    Duration::ZERO,
                    move || match super::unix::unix_sock_addr(&path) {
                        Ok((target, name)) => a.start(target, Address::Unix(Some(name))),
                        Err(err) => a.fail(Failure::new(err)),
                    },
                );
                return;
            }
        };
        match host.parse::<IpAddr>() {
            Ok(ip) => {
                let a = attempt.clone();
                let address = SocketAddr::new(ip, port);
                inner
                    .reactor
                    .call_later(Duration::ZERO, move || a.try_addresses(vec![address]));
            }
            Err(_) => {
                let a = attempt.clone();
                let resolved = inner.reactor.defer_to_thread(move || resolve(&host, port));
                drop(resolved.add_both(move |result| {
                    match result {
                        Ok(Ok(addresses)) => a.try_addresses(addresses),
                        Ok(Err(lookup)) => a.fail(Failure::new(lookup)),
                        // The thread pool could not run the lookup (it is stopping).
                        Err(failure) => a.fail(failure),
                    }
                    Ok::<(), Failure>(())
                }));
            }
        }
    }

    /// Stops a connection attempt in progress (Twisted's `stopConnecting`): the factory's
    /// `client_connection_failed` gets [`ConnectCancelled`] on the next turn of the loop.
    pub fn stop_connecting(&self) {
        if self.0.state.get() != ConnectorState::Connecting {
            return;
        }
        if let Some(attempt) = self.0.attempt.borrow().clone() {
            self.0.reactor.call_later(Duration::ZERO, move || {
                attempt.fail(ConnectCancelled.into())
            });
        }
    }

    /// Drops the connection, or stops the attempt (Twisted's `disconnect`).
    pub fn disconnect(&self) {
        match self.0.state.get() {
            ConnectorState::Connecting => self.stop_connecting(),
            ConnectorState::Connected => {
                let conn = self.0.connection.borrow().as_ref().and_then(Weak::upgrade);
                if let Some(conn) = conn {
                    conn.lose_connection();
                }
            }
            ConnectorState::Disconnected => {}
        }
    }

    /// Where this connector connects to (Twisted's `getDestination`): `host:port` as given
    /// for TCP, the socket path for UNIX.
    pub fn destination(&self) -> String {
        match &self.0.destination {
            Destination::Tcp { host, port } => format!("{host}:{port}"),
            Destination::TcpAddresses(addresses) => addresses
                .iter()
                .map(SocketAddr::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            Destination::Unix(path) => path.display().to_string(),
        }
    }

    /// The connector's state.
    pub fn state(&self) -> ConnectorState {
        self.0.state.get()
    }

    /// The established connection's transport, while connected.
    pub fn transport(&self) -> Option<Transport> {
        let conn = self
            .0
            .connection
            .borrow()
            .as_ref()
            .and_then(Weak::upgrade)?;
        Some(conn)
    }

    fn from_inner(inner: &Rc<ConnectorInner>) -> Connector {
        Connector(inner.clone())
    }

    /// The connection it made was lost: tell the factory, after the protocol.
    fn lost(&self, reason: Failure) {
        let inner = &self.0;
        inner.state.set(ConnectorState::Disconnected);
        *inner.connection.borrow_mut() = None;
        inner.factory.client_connection_lost(self, reason);
        self.maybe_stop_factory();
    }

    fn maybe_stop_factory(&self) {
        let inner = &self.0;
        if inner.state.get() == ConnectorState::Disconnected && inner.factory_active.replace(false)
        {
            crate::protocol::factory_stopped(&inner.factory);
        }
    }
}

impl ConnectionEnded for Connector {
    fn connection_ended(&self, reason: Failure) {
        self.lost(reason);
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("destination", &self.destination())
            .field("state", &self.0.state.get())
            .finish()
    }
}

impl Attempt {
    /// Tries `addresses` in order, from the first.
    fn try_addresses(self: Rc<Self>, addresses: Vec<SocketAddr>) {
        if self.done.get() {
            return;
        }
        *self.remaining.borrow_mut() = addresses.into();
        self.next_address(None);
    }

    /// Connects to the next address left, or fails with `last` (the previous address's
    /// failure) if none is.
    fn next_address(self: Rc<Self>, last: Option<Failure>) {
        let next = self.remaining.borrow_mut().pop_front();
        match (next, last) {
            (Some(address), _) => self.start(SockAddr::from(address), Address::Tcp(address)),
            (None, Some(last)) => self.fail(last),
            (None, None) => self.fail(
                InvalidArgument("connect_tcp_addresses: no address to connect to".into()).into(),
            ),
        }
    }

    /// Connecting to the current address failed with `reason`: try the next one, or end
    /// the attempt with `reason` if it was the last.
    fn address_failed(self: Rc<Self>, reason: Failure) {
        if self.done.get() {
            return;
        }
        if self.remaining.borrow().is_empty() {
            return self.fail(reason);
        }
        if self.fd.get() >= 0 {
            self.connector.reactor.remove_writer(self.fd.get());
            self.fd.set(-1);
        }
        // Kept open until the next socket exists, so the two never share a descriptor
        // number within one dispatch.
        let failed = self.socket.borrow_mut().take();
        let peer = self.peer.borrow().clone();
        if let Some(peer) = peer {
            tracing::debug!(
                target: "torsion::tcp",
                "connecting to {peer} failed: {reason}; trying the next address"
            );
        }
        self.next_address(Some(reason));
        drop(failed);
    }

    /// The attempt itself as the `Rc` it is registered as, while it is the connector's
    /// current attempt.
    fn current(&self) -> Option<Rc<Attempt>> {
        let me = self.connector.attempt.borrow().clone()?;
        std::ptr::eq(Rc::as_ptr(&me), self).then_some(me)
    }

    /// Connects a new socket to `target`, whose address is `peer`.
    fn start(self: Rc<Self>, target: SockAddr, peer: Address) {
        if self.done.get() {
            return;
        }
        let connector = self.connector.clone();
        *self.peer.borrow_mut() = Some(peer.clone());
        let unix = matches!(peer, Address::Unix(_));
        let socket = match Socket::new(
            Domain::from(i32::from(target.family())),
            Type::STREAM.nonblocking().cloexec(),
            (!unix).then_some(SockProtocol::TCP),
        ) {
            Ok(s) => s,
            Err(err) => return self.address_failed(Failure::new(err)),
        };
        if let Some(bind) = connector.options.bind_address
            && !unix
            && let Err(err) = socket.bind(&SockAddr::from(bind))
        {
            return self.address_failed(Failure::new(err));
        }
        match socket.connect(&target) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(err) if unix && err.raw_os_error() == Some(libc::EAGAIN) => {
                // The listener's backlog is full: a UNIX connect does not wait in the
                // kernel as TCP's does, so try again shortly (the timeout still applies).
                drop(socket);
                let reactor = connector.reactor.clone();
                reactor.call_later(UNIX_RETRY, move || self.start(target, peer));
                return;
            }
            Err(err) => return self.address_failed(connect_error(err, &peer)),
        }
        self.fd.set(socket.as_raw_fd());
        *self.socket.borrow_mut() = Some(socket);
        if let Err(err) = connector.reactor.add_writer(self.clone()) {
            self.fail(Failure::new(err));
        }
    }

    fn connected(self: &Rc<Self>) {
        let inner = self.connector.clone();
        let Some(socket) = self.socket.borrow_mut().take() else {
            return;
        };
        self.done.set(true);
        inner.reactor.remove_writer(self.fd.get());
        if let Some(timeout) = self.timeout.borrow_mut().take() {
            let _ = timeout.cancel();
        }
        *inner.attempt.borrow_mut() = None;
        let peer = self
            .peer
            .borrow_mut()
            .take()
            .unwrap_or_else(|| Address::Tcp(SocketAddr::from(([0, 0, 0, 0], 0))));
        let host = match &peer {
            Address::Unix(_) => socket
                .local_addr()
                .map(|a| super::unix::unix_address_of(&a))
                .unwrap_or(Address::Unix(None)),
            _ => Address::Tcp(
                socket
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_socket())
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            ),
        };
        let connector = Connector::from_inner(&inner);
        let factory = inner.factory.clone();
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            factory.clone().build_protocol(&peer)
        }));
        let protocol = match built {
            Ok(Some(p)) => p,
            Ok(None) => {
                drop(socket);
                inner.state.set(ConnectorState::Disconnected);
                factory.client_connection_lost(&connector, Failure::routine(ConnectionDone));
                connector.maybe_stop_factory();
                return;
            }
            Err(payload) => {
                drop(socket);
                inner.state.set(ConnectorState::Disconnected);
                factory.client_connection_failed(&connector, Failure::from_panic(&*payload));
                connector.maybe_stop_factory();
                return;
            }
        };
        inner.state.set(ConnectorState::Connected);
        let ended: Rc<dyn ConnectionEnded> = Rc::new(connector);
        let conn = Connection::new(&inner.reactor, socket, peer, Some(host), Some(ended));
        *inner.connection.borrow_mut() = Some(Rc::downgrade(&conn));
        conn.start(protocol);
    }

    /// Ends the attempt with `reason`: close, tell the factory, stop it unless it
    /// reconnected.
    fn fail(&self, reason: Failure) {
        if self.done.replace(true) {
            return;
        }
        let inner = self.connector.clone();
        if self.fd.get() >= 0 {
            inner.reactor.remove_writer(self.fd.get());
        }
        drop(self.socket.borrow_mut().take());
        if let Some(timeout) = self.timeout.borrow_mut().take() {
            let _ = timeout.cancel();
        }
        *inner.attempt.borrow_mut() = None;
        inner.state.set(ConnectorState::Disconnected);
        let connector = Connector::from_inner(&inner);
        inner.factory.client_connection_failed(&connector, reason);
        connector.maybe_stop_factory();
    }
}

fn connect_error(err: io::Error, address: &Address) -> Failure {
    if err.raw_os_error() == Some(libc::ECONNREFUSED) {
        ConnectionRefused {
            address: address_label(address),
        }
        .into()
    } else {
        Failure::new(err)
    }
}

impl FileDescriptor for Attempt {
    fn fileno(&self) -> RawFd {
        self.fd.get()
    }

    fn connection_lost(&self, reason: Failure) {
        // An error or hang-up while connecting: the socket's pending error says why.
        let error = self
            .socket
            .borrow()
            .as_ref()
            .and_then(|sock| sock.take_error().ok().flatten());
        let peer = self.peer.borrow().clone();
        match (error, peer, self.current()) {
            (Some(err), Some(peer), Some(me)) => me.address_failed(connect_error(err, &peer)),
            (Some(err), Some(peer), None) => self.fail(connect_error(err, &peer)),
            _ => self.fail(reason),
        }
    }
}

impl WriteDescriptor for Attempt {
    fn do_write(&self) -> Result<(), Failure> {
        let error = match self.socket.borrow().as_ref() {
            Some(sock) => sock.take_error(),
            None => return Ok(()),
        };
        let peer = self
            .peer
            .borrow()
            .clone()
            .unwrap_or_else(|| Address::Tcp(SocketAddr::from(([0, 0, 0, 0], 0))));
        // `self` is registered as an `Rc`; find it again to hand on.
        match (error, self.current()) {
            (Ok(None), Some(me)) => me.connected(),
            (Ok(None), None) => {}
            (Ok(Some(err)) | Err(err), Some(me)) => me.address_failed(connect_error(err, &peer)),
            (Ok(Some(err)) | Err(err), None) => self.fail(connect_error(err, &peer)),
        }
        Ok(())
    }
}
