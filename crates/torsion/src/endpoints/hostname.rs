//! Connecting to a host name with several addresses, IPv6 and IPv4, as RFC 8305 ("Happy
//! Eyeballs") asks (Twisted's `HostnameEndpoint`): [`HostnameEndpoint`], and the race of
//! staggered attempts one `connect` runs.
//!
//! Invariant: a race ends once (`RaceState::done`): after a win, a failure or a cancel, no
//! attempt starts, no timer stays scheduled, and the endpoint's Deferred fires only once.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::rc::{Rc, Weak};
use std::time::Duration;

use super::{ClientEndpoint, Notifying};
use crate::defer::{Deferred, Failure, Resolver};
use crate::error::NoProtocol;
use crate::net::Connector;
use crate::net::tcp::{ConnectOptions, DEFAULT_CONNECT_TIMEOUT, no_address};
use crate::net::{Address, Transport};
use crate::protocol::{ClientFactory, Factory, Protocol};
use crate::reactor::Reactor;
use crate::time::{DelayedCall, ReactorTime};

/// The default delay between the starts of two connection attempts of a
/// [`HostnameEndpoint`] (Twisted's `attemptDelay`, 0.3 s).
pub const DEFAULT_ATTEMPT_DELAY: Duration = Duration::from_millis(300);

/// Connects to a host name that may have several addresses, IPv6 and IPv4, trying them in
/// parallel with staggered starts (Twisted's `HostnameEndpoint`; RFC 8305, "Happy
/// Eyeballs").
///
/// The name is resolved in the thread pool (`getaddrinfo`). The addresses are tried in the
/// resolver's order, alternating address families from the first one's (RFC 8305 §4):
/// an attempt starts [`attempt_delay`](Self::attempt_delay) (0.3 s) after the previous one
/// started, or at once when every attempt so far has failed. The first connection made
/// wins: every other attempt is stopped and no timer is left behind. When all fail, the
/// Deferred fails with the last failure; cancelling it stops every attempt.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use torsion::Reactor;
/// use torsion::endpoints::{ClientEndpoint, HostnameEndpoint};
/// use torsion::protocol::Protocol;
///
/// struct Quiet;
/// impl Protocol for Quiet {}
///
/// let reactor = Reactor::new().unwrap();
/// let endpoint = HostnameEndpoint::new(&reactor, "localhost", 80);
/// let connected = endpoint.connect(Rc::new(|| Quiet));
/// let _logged = connected.map(|transport| println!("connected to {}", transport.peer()));
/// ```
pub struct HostnameEndpoint {
    reactor: Reactor,
    clock: Rc<dyn ReactorTime>,
    host: String,
    port: u16,
    timeout: Option<Duration>,
    bind_address: Option<SocketAddr>,
    attempt_delay: Duration,
    addresses: Option<Vec<SocketAddr>>,
}

impl HostnameEndpoint {
    /// Connects to `host` (a name or an IP address) on `port`, with a 30 s timeout per
    /// attempt and 0.3 s between attempts.
    pub fn new(reactor: &Reactor, host: &str, port: u16) -> HostnameEndpoint {
        HostnameEndpoint {
            reactor: reactor.clone(),
            clock: Rc::new(reactor.clone()),
            host: host.to_string(),
            port,
            timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            bind_address: None,
            attempt_delay: DEFAULT_ATTEMPT_DELAY,
            addresses: None,
        }
    }

    /// With another timeout for each attempt (`None`: as long as the kernel tries).
    pub fn timeout(mut self, timeout: Option<Duration>) -> HostnameEndpoint {
        self.timeout = timeout;
        self
    }

    /// With a local address to bind each attempt to (attempts to addresses of the other
    /// family then fail).
    pub fn bind_address(mut self, bind_address: Option<SocketAddr>) -> HostnameEndpoint {
        self.bind_address = bind_address;
        self
    }

    /// With another delay between the starts of two attempts (Twisted's `attemptDelay`).
    pub fn attempt_delay(mut self, delay: Duration) -> HostnameEndpoint {
        self.attempt_delay = delay;
        self
    }

    /// Times the attempts on `clock` instead of the reactor (for tests, with a
    /// [`Clock`](crate::time::Clock)); the connections themselves and their timeouts stay
    /// on the reactor.
    pub fn clock<C: ReactorTime + Clone + 'static>(mut self, clock: &C) -> HostnameEndpoint {
        self.clock = Rc::new(clock.clone());
        self
    }

    /// Skips name resolution and tries these addresses, ports included, in this order (for
    /// tests, and for callers that resolved the name themselves).
    pub fn with_addresses(mut self, addresses: Vec<SocketAddr>) -> HostnameEndpoint {
        self.addresses = Some(addresses);
        self
    }
}

impl fmt::Debug for HostnameEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostnameEndpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("timeout", &self.timeout)
            .field("bind_address", &self.bind_address)
            .field("attempt_delay", &self.attempt_delay)
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

impl ClientEndpoint for HostnameEndpoint {
    fn connect(&self, factory: Rc<dyn Factory>) -> Deferred<Transport> {
        let race_slot: Rc<RefCell<Weak<Race>>> = Rc::new(RefCell::new(Weak::new()));
        let cancel_slot = race_slot.clone();
        let (resolver, d) = Deferred::with_canceller(move |_resolver| {
            let race = cancel_slot.borrow().upgrade();
            if let Some(race) = race {
                race.cancel();
            }
        });
        let race = Rc::new(Race {
            reactor: self.reactor.clone(),
            clock: self.clock.clone(),
            factory,
            host: self.host.clone(),
            options: ConnectOptions {
                timeout: self.timeout,
                bind_address: self.bind_address,
            },
            attempt_delay: self.attempt_delay,
            resolver,
            state: RefCell::new(RaceState::default()),
        });
        *race_slot.borrow_mut() = Rc::downgrade(&race);
        if let Some(addresses) = &self.addresses {
            race.resolved(Ok(addresses.clone()));
        } else if let Ok(ip) = self.host.parse::<IpAddr>() {
            race.resolved(Ok(vec![SocketAddr::new(ip, self.port)]));
        } else {
            let (host, port) = (self.host.clone(), self.port);
            let lookup = self
                .reactor
                .defer_to_thread(move || crate::net::tcp::resolve(&host, port));
            drop(lookup.add_both(move |result| {
                let addresses = match result {
                    Ok(Ok(addresses)) => Ok(addresses),
                    Ok(Err(lookup)) => Err(Failure::new(lookup)),
                    Err(failure) => Err(failure),
                };
                race.resolved(addresses);
                Ok::<(), Failure>(())
            }));
        }
        d
    }
}

/// One `HostnameEndpoint::connect`: the addresses left, the attempts running, the timer.
struct Race {
    reactor: Reactor,
    clock: Rc<dyn ReactorTime>,
    factory: Rc<dyn Factory>,
    host: String,
    options: ConnectOptions,
    attempt_delay: Duration,
    resolver: Resolver<Transport>,
    state: RefCell<RaceState>,
}

#[derive(Default)]
struct RaceState {
    remaining: VecDeque<SocketAddr>,
    /// Attempts running, by id.
    pending: Vec<(u64, Connector)>,
    /// When the next attempt starts.
    timer: Option<DelayedCall>,
    last_failure: Option<Failure>,
    next_id: u64,
    /// Won, failed or cancelled: start nothing more.
    done: bool,
}

impl Race {
    fn resolved(self: &Rc<Self>, addresses: Result<Vec<SocketAddr>, Failure>) {
        let addresses = match addresses {
            Ok(addresses) => addresses,
            Err(failure) => {
                let was_done = std::mem::replace(&mut self.state.borrow_mut().done, true);
                if !was_done {
                    let _ = self.resolver.try_errback(failure);
                }
                return;
            }
        };
        {
            let mut st = self.state.borrow_mut();
            if st.done {
                return;
            }
            st.remaining = interleave_families(addresses);
            if st.remaining.is_empty() {
                st.last_failure = Some(Failure::new(no_address(&self.host)));
            }
        }
        self.start_next();
    }

    /// Starts the next attempt now, and schedules the one after.
    fn start_next(self: &Rc<Self>) {
        let (address, id, timer) = {
            let mut st = self.state.borrow_mut();
            if st.done {
                return;
            }
            let timer = st.timer.take();
            match st.remaining.pop_front() {
                Some(address) => {
                    st.next_id += 1;
                    (Some(address), st.next_id, timer)
                }
                None => (None, 0, timer),
            }
        };
        if let Some(timer) = timer {
            let _ = timer.cancel();
        }
        let Some(address) = address else {
            self.check_failed();
            return;
        };
        let attempt = Rc::new(AttemptFactory {
            race: self.clone(),
            id,
            won: Cell::new(false),
        });
        let connector = self.reactor.connect_tcp_with(
            &address.ip().to_string(),
            address.port(),
            attempt,
            self.options.clone(),
        );
        let more = {
            let mut st = self.state.borrow_mut();
            st.pending.push((id, connector));
            !st.remaining.is_empty()
        };
        if more {
            let me = self.clone();
            let timer = self
                .clock
                .call_later_boxed(self.attempt_delay, Box::new(move || me.start_next()));
            self.state.borrow_mut().timer = Some(timer);
        }
    }

    /// Attempt `id` connected: it wins unless another did. Returns whether it won.
    fn won(&self, id: u64) -> bool {
        let (timer, others) = {
            let mut st = self.state.borrow_mut();
            if st.done {
                return false;
            }
            st.done = true;
            st.remaining.clear();
            let others: Vec<Connector> = std::mem::take(&mut st.pending)
                .into_iter()
                .filter(|(other, _)| *other != id)
                .map(|(_, connector)| connector)
                .collect();
            (st.timer.take(), others)
        };
        if let Some(timer) = timer {
            let _ = timer.cancel();
        }
        for connector in others {
            connector.stop_connecting();
        }
        true
    }

    /// Attempt `id` failed: remember why; if nothing else is running, go on at once.
    fn failed(self: &Rc<Self>, id: u64, reason: Failure) {
        let idle = {
            let mut st = self.state.borrow_mut();
            st.pending.retain(|(other, _)| *other != id);
            if st.done {
                return;
            }
            st.last_failure = Some(reason);
            st.pending.is_empty()
        };
        if idle {
            self.start_next();
        }
    }

    /// Nothing left to try and nothing running: fail with the last failure.
    fn check_failed(&self) {
        let failure = {
            let mut st = self.state.borrow_mut();
            if st.done || !st.pending.is_empty() || !st.remaining.is_empty() {
                return;
            }
            st.done = true;
            st.last_failure.take()
        };
        let failure = failure.unwrap_or_else(|| Failure::new(no_address(&self.host)));
        let _ = self.resolver.try_errback(failure);
    }

    fn cancel(&self) {
        let (timer, pending) = {
            let mut st = self.state.borrow_mut();
            st.done = true;
            st.remaining.clear();
            (st.timer.take(), std::mem::take(&mut st.pending))
        };
        if let Some(timer) = timer {
            let _ = timer.cancel();
        }
        for (_, connector) in pending {
            connector.stop_connecting();
        }
    }
}

/// RFC 8305 §4: alternate address families, starting with the first address's, keeping
/// the resolver's order within each family; duplicates dropped.
fn interleave_families(addresses: Vec<SocketAddr>) -> VecDeque<SocketAddr> {
    let mut seen = Vec::with_capacity(addresses.len());
    for address in addresses {
        if !seen.contains(&address) {
            seen.push(address);
        }
    }
    let Some(first) = seen.first() else {
        return VecDeque::new();
    };
    let first_v6 = first.is_ipv6();
    let (mut preferred, mut other): (VecDeque<_>, VecDeque<_>) =
        seen.into_iter().partition(|a| a.is_ipv6() == first_v6);
    let mut out = VecDeque::with_capacity(preferred.len() + other.len());
    loop {
        match (preferred.pop_front(), other.pop_front()) {
            (None, None) => break,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
    out
}

/// The client factory of one attempt of a [`Race`].
struct AttemptFactory {
    race: Rc<Race>,
    id: u64,
    won: Cell<bool>,
}

impl Factory for AttemptFactory {
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>> {
        if !self.race.won(self.id) {
            // Another attempt connected first (in the same turn of the loop).
            return None;
        }
        self.won.set(true);
        match self.race.factory.clone().build_protocol(addr) {
            Some(protocol) => Some(Box::new(Notifying {
                inner: protocol,
                resolver: Some(self.race.resolver.clone()),
            })),
            None => {
                let _ = self.race.resolver.try_errback(NoProtocol);
                None
            }
        }
    }

    fn start_factory(&self) {
        crate::protocol::factory_started(&self.race.factory);
    }

    fn stop_factory(&self) {
        crate::protocol::factory_stopped(&self.race.factory);
    }
}

impl ClientFactory for AttemptFactory {
    fn client_connection_failed(&self, _connector: &Connector, reason: Failure) {
        if self.won.get() {
            // The winner's factory panicked in build_protocol.
            let _ = self.race.resolver.try_errback(reason);
        } else {
            self.race.failed(self.id, reason);
        }
    }

    fn client_connection_lost(&self, _connector: &Connector, reason: Failure) {
        if self.won.get() {
            let _ = self.race.resolver.try_errback(reason);
        }
    }
}
