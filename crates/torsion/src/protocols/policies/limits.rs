//! Limiting how many connections a factory serves at once (Twisted's
//! `LimitTotalConnectionsFactory`), with an optional overflow protocol for the rest.
//!
//! Invariant: every connection built counts, overflow ones included, from
//! `build_protocol` until its wrapper hears `connection_lost` (which every wrapper does
//! exactly once), so the count never drifts.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;

use super::{WrapperHooks, WrappingFactory, WrappingTransport};
use crate::defer::Failure;
use crate::net::Address;
use crate::protocol::{Factory, Protocol};

/// Counts a [`LimitTotalConnectionsFactory`]'s connections down as they close.
#[derive(Default)]
struct ConnectionCounter {
    count: Cell<usize>,
}

impl WrapperHooks for ConnectionCounter {
    fn connection_lost(&self, _reason: &Failure) {
        self.count.set(self.count.get().saturating_sub(1));
    }
}

type OverflowMaker = Rc<dyn Fn() -> Box<dyn Protocol>>;

/// Limits how many connections a factory serves at once (Twisted's
/// `LimitTotalConnectionsFactory`).
///
/// Below [`connection_limit`](Self::connection_limit) connections, the wrapped factory
/// builds the protocol. At the limit, the overflow protocol serves the connection if one
/// is set (to tell the client to come back later), else the connection is refused:
/// `build_protocol` returns `None` and it is closed at once. Overflow connections count
/// too, as in Twisted; every connection counts until it is lost.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use torsion::net::Transport;
/// use torsion::protocol::{Factory, Protocol};
/// use torsion::protocols::policies::LimitTotalConnectionsFactory;
/// use torsion::testing::{default_peer_address, StringTransport};
///
/// struct Chat;
/// impl Protocol for Chat {}
///
/// /// Says why, then hangs up.
/// struct Busy;
/// impl Protocol for Busy {
///     fn connection_made(&mut self, transport: Transport) {
///         transport.write(b"too busy, try later\r\n");
///         transport.lose_connection();
///     }
/// }
///
/// let factory = LimitTotalConnectionsFactory::new(Rc::new(|| Chat), Some(1));
/// let addr = default_peer_address();
///
/// let mut first = factory.clone().build_protocol(&addr).unwrap();
/// first.connection_made(StringTransport::new());
/// assert_eq!(factory.connection_count(), 1);
///
/// // Over the limit, with no overflow protocol: refused.
/// assert!(factory.clone().build_protocol(&addr).is_none());
///
/// // With one, it serves the extra connection.
/// factory.set_overflow_protocol(|| Busy);
/// let mut second = factory.clone().build_protocol(&addr).unwrap();
/// let transport = StringTransport::new();
/// second.connection_made(transport.clone());
/// assert_eq!(transport.value(), b"too busy, try later\r\n");
///
/// // Closing connections counts them down.
/// first.connection_lost(torsion::error::ConnectionDone.into());
/// second.connection_lost(torsion::error::ConnectionDone.into());
/// assert_eq!(factory.connection_count(), 0);
/// ```
pub struct LimitTotalConnectionsFactory<F: ?Sized> {
    wrapping: Rc<WrappingFactory<F>>,
    counter: Rc<ConnectionCounter>,
    connection_limit: Cell<Option<usize>>,
    overflow: RefCell<Option<OverflowMaker>>,
}

impl<F: Factory + ?Sized> LimitTotalConnectionsFactory<F> {
    /// Wraps `wrapped`, serving at most `connection_limit` connections at once (`None`: no
    /// limit, Twisted's default), with no overflow protocol.
    pub fn new(wrapped: Rc<F>, connection_limit: Option<usize>) -> Rc<Self> {
        Rc::new(LimitTotalConnectionsFactory {
            wrapping: WrappingFactory::new(wrapped),
            counter: Rc::new(ConnectionCounter::default()),
            connection_limit: Cell::new(connection_limit),
            overflow: RefCell::new(None),
        })
    }

    /// The wrapped factory.
    pub fn wrapped(&self) -> &Rc<F> {
        self.wrapping.wrapped()
    }

    /// How many connections are served now, overflow ones included (Twisted's
    /// `connectionCount`).
    pub fn connection_count(&self) -> usize {
        self.counter.count.get()
    }

    /// The limit (Twisted's `connectionLimit`).
    pub fn connection_limit(&self) -> Option<usize> {
        self.connection_limit.get()
    }

    /// Changes the limit; connections already served stay.
    pub fn set_connection_limit(&self, limit: Option<usize>) {
        self.connection_limit.set(limit);
    }

    /// Serves connections over the limit with the protocols `make` builds (Twisted's
    /// `overflowProtocol`), instead of refusing them.
    pub fn set_overflow_protocol<P: Protocol>(&self, make: impl Fn() -> P + 'static) {
        let make: OverflowMaker = Rc::new(move || Box::new(make()));
        *self.overflow.borrow_mut() = Some(make);
    }

    /// Refuses connections over the limit again (Twisted's `overflowProtocol = None`).
    pub fn clear_overflow_protocol(&self) {
        let old = self.overflow.borrow_mut().take();
        drop(old);
    }

    /// Whether an overflow protocol is set.
    pub fn has_overflow_protocol(&self) -> bool {
        self.overflow.borrow().is_some()
    }

    /// The transports of the connections served now.
    pub fn connections(&self) -> Vec<Rc<WrappingTransport>> {
        self.wrapping.connections()
    }
}

impl<F: Factory + ?Sized> Factory for LimitTotalConnectionsFactory<F> {
    /// Below the limit, the wrapped factory's protocol; above it, the overflow protocol, or
    /// `None`.
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>> {
        let count = self.counter.count.get();
        let protocol = if self
            .connection_limit
            .get()
            .is_none_or(|limit| count < limit)
        {
            self.wrapping.wrapped().clone().build_protocol(addr)?
        } else {
            let overflow = self.overflow.borrow().clone();
            match overflow {
                Some(make) => make(),
                None => {
                    tracing::info!(
                        target: "torsion::policies",
                        "connection limit reached: refusing {addr}"
                    );
                    return None;
                }
            }
        };
        self.counter.count.set(self.counter.count.get() + 1);
        let hooks: Rc<dyn WrapperHooks> = self.counter.clone();
        Some(Box::new(self.wrapping.wrap(protocol, hooks)))
    }

    fn start_factory(&self) {
        self.wrapping.start_factory();
    }

    fn stop_factory(&self) {
        self.wrapping.stop_factory();
    }
}

impl<F: ?Sized> fmt::Debug for LimitTotalConnectionsFactory<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitTotalConnectionsFactory")
            .field("connection_count", &self.counter.count.get())
            .field("connection_limit", &self.connection_limit.get())
            .field("overflow_protocol", &self.overflow.borrow().is_some())
            .finish_non_exhaustive()
    }
}
