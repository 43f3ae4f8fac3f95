//! The connection pool (Twisted's `twisted.web.client.HTTPConnectionPool`): connections
//! kept open between requests, by scheme, host, port and TLS configuration, at most
//! [`DEFAULT_MAX_PERSISTENT_PER_HOST`] idle per key, each closed after
//! [`DEFAULT_CACHED_CONNECTION_TIMEOUT`] idle.
//!
//! A connection goes back into the pool when its response was read to its end on a
//! kept-alive connection; an idle one keeps reading, so one the server closes (or that
//! receives bytes nobody asked for) is taken out at once. Unlike Twisted's, the pool an
//! [`Agent::new`](crate::Agent::new) makes is persistent; [`Pool::non_persistent`] is
//! Twisted's default.
//!
//! Invariant: a connection is in the pool only while idle (open, nothing in flight), and
//! each one there has its idle timer and its removal hook, both taken away when it leaves
//! (handed out, closed, or dropped from a full key).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use torsion::endpoints::{ClientEndpoint, connect_protocol};
use torsion::net::Transport;
use torsion::time::{DelayedCall, ReactorTime};
use torsion::tls::ClientConfig;
use torsion::{Deferred, Failure, Reactor};

use super::connection::HttpConnection;

/// How many idle connections a pool keeps per key by default (Twisted's
/// `maxPersistentPerHost`, 2).
pub const DEFAULT_MAX_PERSISTENT_PER_HOST: usize = 2;

/// How long an idle connection is kept by default (Twisted's `cachedConnectionTimeout`,
/// 240 s).
pub const DEFAULT_CACHED_CONNECTION_TIMEOUT: Duration = Duration::from_secs(240);

/// Where a connection goes: connections are shared only between requests with equal keys.
#[derive(Clone)]
pub(crate) struct PoolKey {
    pub(crate) https: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The TLS configuration, compared by identity (the same `ClientConfig`, or a clone of
    /// it): a connection verified under one configuration is not used for another.
    pub(crate) tls: Option<ClientConfig>,
}

impl PoolKey {
    fn tls_identity(&self) -> usize {
        self.tls
            .as_ref()
            .map_or(0, |config| Arc::as_ptr(config.rustls()) as usize)
    }
}

impl PartialEq for PoolKey {
    fn eq(&self, other: &PoolKey) -> bool {
        self.https == other.https
            && self.port == other.port
            && self.host == other.host
            && self.tls_identity() == other.tls_identity()
    }
}

impl Eq for PoolKey {}

impl Hash for PoolKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.https.hash(state);
        self.host.hash(state);
        self.port.hash(state);
        self.tls_identity().hash(state);
    }
}

/// Keeps connections open between requests (Twisted's `HTTPConnectionPool`).
///
/// A cheap handle: clones share one pool, and so do the clones of an
/// [`Agent`](crate::Agent) made with it. Settings changed through one handle apply to all,
/// as setting Twisted's attributes does.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use torsion_web::agent::{Agent, Pool};
///
/// let reactor = torsion::Reactor::new().unwrap();
/// let pool = Pool::new(&reactor)
///     .max_persistent_per_host(4)
///     .cached_connection_timeout(Some(Duration::from_secs(30)));
/// let agent = Agent::new(&reactor).with_pool(pool.clone());
/// assert_eq!(pool.idle_connections(), 0);
/// # let _ = agent;
/// ```
#[derive(Clone)]
pub struct Pool(Rc<PoolInner>);

struct PoolInner {
    reactor: Reactor,
    persistent: bool,
    max_per_host: Cell<usize>,
    timeout: Cell<Option<Duration>>,
    retry: Cell<bool>,
    idle: RefCell<HashMap<PoolKey, Vec<Idle>>>,
}

/// A connection waiting in the pool.
struct Idle {
    conn: HttpConnection,
    id: u64,
    timer: Option<DelayedCall>,
}

impl Idle {
    fn leave(self) -> HttpConnection {
        if let Some(timer) = self.timer {
            let _ = timer.cancel();
        }
        self.conn
    }
}

thread_local! {
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
}

impl Pool {
    /// A persistent pool with Twisted's defaults: 2 idle connections per key, closed
    /// after 240 s, requests retried once when a kept connection turns out closed
    /// (Twisted's `HTTPConnectionPool(reactor, persistent=True)`).
    pub fn new(reactor: &Reactor) -> Pool {
        Pool::build(reactor, true)
    }

    /// A pool that keeps nothing: each request has a new connection, closed after it, and
    /// sends `Connection: close` (Twisted's default `HTTPConnectionPool(reactor)`).
    pub fn non_persistent(reactor: &Reactor) -> Pool {
        Pool::build(reactor, false)
    }

    fn build(reactor: &Reactor, persistent: bool) -> Pool {
        Pool(Rc::new(PoolInner {
            reactor: reactor.clone(),
            persistent,
            max_per_host: Cell::new(DEFAULT_MAX_PERSISTENT_PER_HOST),
            timeout: Cell::new(Some(DEFAULT_CACHED_CONNECTION_TIMEOUT)),
            retry: Cell::new(true),
            idle: RefCell::new(HashMap::new()),
        }))
    }

    /// At most `n` idle connections per key (Twisted's `maxPersistentPerHost`); over it,
    /// the one idle longest is closed.
    pub fn max_persistent_per_host(self, n: usize) -> Pool {
        self.0.max_per_host.set(n);
        self
    }

    /// Closes each idle connection after `timeout` idle (Twisted's
    /// `cachedConnectionTimeout`); `None`: never.
    pub fn cached_connection_timeout(self, timeout: Option<Duration>) -> Pool {
        self.0.timeout.set(timeout);
        self
    }

    /// Whether a request that fails on a kept connection before any response arrived is
    /// retried once on a new one, when that is safe (Twisted's `retryAutomatically`: on by
    /// default).
    pub fn retry_automatically(self, on: bool) -> Pool {
        self.0.retry.set(on);
        self
    }

    /// Whether connections are kept between requests (Twisted's `persistent`).
    pub fn is_persistent(&self) -> bool {
        self.0.persistent
    }

    pub(crate) fn retries(&self) -> bool {
        self.0.retry.get()
    }

    /// How many idle connections the pool holds, over all keys (the size of Twisted's
    /// `_connections`).
    pub fn idle_connections(&self) -> usize {
        self.0.idle.borrow().values().map(Vec::len).sum()
    }

    /// Closes every idle connection (Twisted's `closeCachedConnections`); fires once they
    /// are all closed. Connections in use are left alone, and are kept afterwards as
    /// usual.
    pub fn close_cached_connections(&self) -> Deferred<()> {
        let idle: Vec<Idle> = {
            let mut map = self.0.idle.borrow_mut();
            map.drain().flat_map(|(_, list)| list).collect()
        };
        if idle.is_empty() {
            return Deferred::succeed(());
        }
        let (resolver, all) = Deferred::new();
        let left = Rc::new(Cell::new(idle.len()));
        for entry in idle {
            let (left, resolver) = (left.clone(), resolver.clone());
            drop(
                entry
                    .leave()
                    .close()
                    .add_both(move |_: Result<(), Failure>| {
                        left.set(left.get() - 1);
                        if left.get() == 0 {
                            let _ = resolver.try_callback(());
                        }
                        Ok::<(), Failure>(())
                    }),
            );
        }
        all
    }

    /// An idle connection for `key` (`true`: it was used before), or a new one through
    /// `endpoint` (Twisted's `getConnection`).
    pub(crate) fn get_connection(
        &self,
        key: &PoolKey,
        endpoint: &dyn ClientEndpoint,
    ) -> Deferred<(HttpConnection, bool)> {
        loop {
            let entry = {
                let mut map = self.0.idle.borrow_mut();
                let Some(list) = map.get_mut(key) else { break };
                let entry = list.pop();
                if list.is_empty() {
                    map.remove(key);
                }
                entry
            };
            let Some(entry) = entry else { break };
            let conn = entry.leave();
            if conn.is_idle() {
                return Deferred::succeed((conn, true));
            }
            drop(conn.close());
        }
        self.new_connection(endpoint).map(|conn| (conn, false))
    }

    /// A new connection through `endpoint` (Twisted's `_newConnection`).
    pub(crate) fn new_connection(&self, endpoint: &dyn ClientEndpoint) -> Deferred<HttpConnection> {
        let (conn, protocol) = HttpConnection::new(&self.0.reactor);
        connect_protocol(endpoint, protocol).map(move |_: Transport| conn)
    }

    /// Takes `conn` back after a request (Twisted's `_putConnection`): kept if the pool is
    /// persistent and the connection idle, closed otherwise.
    pub(crate) fn put_connection(&self, key: PoolKey, conn: HttpConnection) {
        let max = self.0.max_per_host.get();
        if !self.0.persistent || max == 0 || !conn.is_idle() {
            drop(conn.close());
            return;
        }
        let id = NEXT_ID.with(|n| n.replace(n.get() + 1));
        let weak = Rc::downgrade(&self.0);
        let timer = self.0.timeout.get().map(|timeout| {
            let (weak, key) = (weak.clone(), key.clone());
            self.0.reactor.call_later(timeout, move || {
                if let Some(conn) = PoolInner::remove(&weak, &key, id) {
                    drop(conn.close());
                }
            })
        });
        {
            let (weak, key) = (weak.clone(), key.clone());
            conn.set_idle_hook(Box::new(move || {
                drop(PoolInner::remove(&weak, &key, id));
            }));
        }
        let evicted = {
            let mut map = self.0.idle.borrow_mut();
            let list = map.entry(key).or_default();
            let evicted = if list.len() >= max {
                list.drain(..=list.len() - max).collect()
            } else {
                Vec::new()
            };
            list.push(Idle { conn, id, timer });
            evicted
        };
        for entry in evicted {
            drop(entry.leave().close());
        }
    }
}

impl PoolInner {
    /// Takes connection `id` out of the pool, if it is still there.
    fn remove(weak: &Weak<PoolInner>, key: &PoolKey, id: u64) -> Option<HttpConnection> {
        let pool = weak.upgrade()?;
        let entry = {
            let mut map = pool.idle.borrow_mut();
            let list = map.get_mut(key)?;
            let at = list.iter().position(|e| e.id == id)?;
            let entry = list.remove(at);
            if list.is_empty() {
                map.remove(key);
            }
            entry
        };
        Some(entry.leave())
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        for (_, list) in self.idle.get_mut().drain() {
            for entry in list {
                drop(entry.leave().close());
            }
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("persistent", &self.0.persistent)
            .field("max_persistent_per_host", &self.0.max_per_host.get())
            .field("cached_connection_timeout", &self.0.timeout.get())
            .field("idle", &self.idle_connections())
            .finish()
    }
}
