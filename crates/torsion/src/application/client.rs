//! Keeping a client connection up (Twisted's `internet.ClientService` and the
//! `_ClientMachine` behind it): [`ClientService`], its retry policy ([`RetryPolicy`],
//! [`backoff_policy`], [`uniform_jitter`]), and the factory and protocol wrappers through
//! which it hears of connections made and lost.
//!
//! Invariant: every event carries the number of the attempt it belongs to (`generation`),
//! and an event of an older attempt changes nothing; the retry policy and the
//! `prepare_connection` function are taken out of their cells while they run.

use std::cell::RefCell;
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::Duration;

use super::{LOG_TARGET, Service, ServiceState};
use crate::defer::{DeferredHandle, IntoOutcome, maybe_deferred};
use crate::endpoints::ClientEndpoint;
use crate::error::Cancelled;
use crate::net::{Address, Transport};
use crate::protocol::{Factory, Protocol};
use crate::time::{DelayedCall, ReactorTime};
use crate::{Deferred, Failure, Resolver};

/// How long a [`ClientService`] waits before its next attempt, given how many attempts in a
/// row have failed (1 after the first failure); Twisted's `retryPolicy`.
pub type RetryPolicy = Box<dyn FnMut(u32) -> Duration>;

/// An exponential backoff for [`ClientService`] (Twisted's `backoffPolicy`): after `n`
/// failed attempts, waits `min(initial_delay * factor^min(n, 100), max_delay) + jitter()`
/// seconds. The default [`ClientService`] policy is `backoff_policy(1.0, 60.0, 1.5,
/// uniform_jitter())`.
///
/// A delay that is not a number or is negative counts as zero; one too large for a
/// [`Duration`] as `max_delay`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use torsion::application::backoff_policy;
///
/// let mut policy = backoff_policy(1.0, 60.0, 1.5, || 0.0);
/// assert_eq!(policy(1), Duration::from_secs_f64(1.5));
/// assert_eq!(policy(2), Duration::from_secs_f64(2.25));
/// assert_eq!(policy(20), Duration::from_secs(60));
/// ```
pub fn backoff_policy(
    initial_delay: f64,
    max_delay: f64,
    factor: f64,
    mut jitter: impl FnMut() -> f64 + 'static,
) -> impl FnMut(u32) -> Duration + 'static {
    move |attempt| {
        let exponent = attempt.min(100) as i32;
        let grown = initial_delay * factor.powi(exponent);
        // Twisted catches the OverflowError and waits `max_delay`.
        let delay = if grown.is_finite() {
            grown.min(max_delay)
        } else {
            max_delay
        };
        let total = delay + jitter();
        if total.is_nan() || total <= 0.0 {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64(total)
            .or_else(|_| Duration::try_from_secs_f64(max_delay))
            .unwrap_or(Duration::from_secs(u64::from(u32::MAX)))
    }
}

/// Uniform draws from `[0, 1)`, seeded at random (Twisted's `random.random`, the default
/// jitter of [`backoff_policy`]). Not for cryptography; only to spread retries out.
pub fn uniform_jitter() -> impl FnMut() -> f64 + 'static {
    let mut source = crate::jitter::JitterSource::seeded();
    move || source.uniform()
}

/// Keeps one connection to an endpoint up, reconnecting after a failure or a loss with a
/// growing delay (Twisted's `internet.ClientService`).
///
/// Once started, it connects with its factory; when an attempt fails or the connection is
/// lost, it waits for the retry policy's delay (by default [`backoff_policy`]`(1.0, 60.0,
/// 1.5, jitter)`, the count of failures in a row starting again after each success) and
/// tries again. [`when_connected`](Self::when_connected) hands out the connection's
/// [`Transport`], at once if connected. Stopping it stops retrying, cancels an attempt in
/// progress, and closes the connection; the stop's Deferred fires once the connection is
/// gone.
///
/// As with [endpoints](crate::endpoints), Deferreds fire with the [`Transport`], not the
/// protocol (the connection owns the protocol): share state with the protocol through the
/// factory to reach it.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use std::time::Duration;
/// use torsion::application::{ClientService, Service};
/// use torsion::endpoints::client_from_string;
/// use torsion::protocol::Protocol;
/// use torsion::Reactor;
///
/// struct Chat;
/// impl Protocol for Chat {}
///
/// let reactor = Reactor::new().unwrap();
/// let endpoint = client_from_string(&reactor, "tcp:127.0.0.1:6667").unwrap();
/// let client = ClientService::new(&reactor, endpoint, Rc::new(|| Chat))
///     .retry_policy(|failures| Duration::from_secs(u64::from(failures.min(30))));
/// let greeted = client.when_connected().add_callbacks(
///     |transport| {
///         transport.write(b"hello\r\n");
///         Ok(())
///     },
///     |_stopped_first| Ok(()),
/// );
/// client.start_service().unwrap();
/// // ... reactor.run() ...
/// let mut stopped = client.stop_service();
/// assert!(stopped.take_result().unwrap().is_ok());
/// drop(greeted);
/// ```
pub struct ClientService {
    state: ServiceState,
    core: Rc<ClientCore>,
}

type Prepare = Box<dyn FnMut(&Transport) -> Deferred<()>>;

struct ClientCore {
    me: Weak<ClientCore>,
    endpoint: Box<dyn ClientEndpoint>,
    /// The user's factory, wrapped to report connections made and lost.
    factory: Rc<ServiceFactory>,
    clock: Rc<dyn ReactorTime>,
    /// Taken out while it runs (user code).
    policy: RefCell<Option<RetryPolicy>>,
    /// Taken out while it runs (user code).
    prepare: RefCell<Option<Prepare>>,
    machine: RefCell<Machine>,
}

/// The connection state (Twisted's `_ClientMachine`, flattened into fields).
#[derive(Default)]
struct Machine {
    /// Started and not stopped since.
    wanted: bool,
    /// Stopped since the last start: `when_connected` fails at once.
    stopped: bool,
    /// Numbers the attempts; events of an older attempt are stale.
    generation: u64,
    /// The attempt in progress (connecting, or preparing the connection).
    attempt: Option<u64>,
    /// Cancels the attempt in progress.
    attempt_handle: Option<DeferredHandle>,
    /// The current attempt's connection once made, until lost.
    connection: Option<(u64, Transport)>,
    /// Whether `connection` is prepared and handed out.
    connected: bool,
    retry: Option<DelayedCall>,
    failed_attempts: u32,
    /// `when_connected` callers and how many more failures each tolerates.
    waiters: Vec<(Resolver<Transport>, Option<u32>)>,
    stop_waiters: Vec<Resolver<()>>,
}

impl ClientService {
    /// A stopped service that will keep a connection to `endpoint` with protocols from
    /// `factory`, scheduling its retries on `clock` (the reactor, or a
    /// [`Clock`](crate::time::Clock) in tests; Twisted's `clock`).
    pub fn new<C: ReactorTime + Clone + 'static>(
        clock: &C,
        endpoint: Box<dyn ClientEndpoint>,
        factory: Rc<dyn Factory>,
    ) -> Rc<ClientService> {
        let core = Rc::new_cyclic(|me: &Weak<ClientCore>| ClientCore {
            me: me.clone(),
            endpoint,
            factory: Rc::new(ServiceFactory {
                inner: factory,
                core: me.clone(),
            }),
            clock: Rc::new(clock.clone()),
            policy: RefCell::new(Some(Box::new(backoff_policy(
                1.0,
                60.0,
                1.5,
                uniform_jitter(),
            )))),
            prepare: RefCell::new(None),
            machine: RefCell::new(Machine::default()),
        });
        Rc::new(ClientService {
            state: ServiceState::new(),
            core,
        })
    }

    /// Sets the retry policy (Twisted's `retryPolicy`): given the number of attempts that
    /// failed in a row (counting a lost connection as one), the delay before the next.
    /// Takes and gives back the service, to chain after [`new`](Self::new).
    pub fn retry_policy(self: Rc<Self>, policy: impl FnMut(u32) -> Duration + 'static) -> Rc<Self> {
        *self.core.policy.borrow_mut() = Some(Box::new(policy));
        self
    }

    /// Sets a function run on each new connection before it counts as connected (Twisted's
    /// `prepareConnection`): to log in, or to check the peer. It returns
    /// `Result<(), Failure>` or a `Deferred<()>`; [`when_connected`](Self::when_connected)
    /// waits for it. If it fails (or panics), the connection is closed and the attempt
    /// counts as failed. Takes and gives back the service, to chain after
    /// [`new`](Self::new).
    pub fn prepare_connection<R>(
        self: Rc<Self>,
        mut f: impl FnMut(&Transport) -> R + 'static,
    ) -> Rc<Self>
    where
        R: IntoOutcome<Output = ()>,
    {
        let prepare: Prepare = Box::new(move |transport| maybe_deferred(|| f(transport)));
        *self.core.prepare.borrow_mut() = Some(prepare);
        self
    }

    /// The connection's transport: now if connected, else once the next connection is made
    /// (Twisted's `whenConnected()`). It fails with [`Cancelled`] when the service is
    /// stopped, and at once if it is stopped already.
    pub fn when_connected(&self) -> Deferred<Transport> {
        self.core.when_connected(None)
    }

    /// As [`when_connected`](Self::when_connected), but fails with the attempt's failure
    /// once `failures` attempts in a row have failed after this call (Twisted's
    /// `whenConnected(failAfterFailures)`): with 1, the first failed attempt fails it.
    pub fn when_connected_fail_after(&self, failures: u32) -> Deferred<Transport> {
        self.core.when_connected(Some(failures))
    }

    /// The endpoint it connects to.
    pub fn endpoint(&self) -> &dyn ClientEndpoint {
        &*self.core.endpoint
    }
}

impl Service for ClientService {
    fn service_state(&self) -> &ServiceState {
        &self.state
    }

    /// Marks the service running and starts connecting. Starting a running service does
    /// nothing (Twisted logs a warning).
    fn start_service(&self) -> Result<(), Failure> {
        if self.running() {
            crate::log::warning!(target: LOG_TARGET, "duplicate ClientService::start_service");
            return Ok(());
        }
        self.state.set_running(true);
        self.core.start();
        Ok(())
    }

    /// Marks the service stopped, stops retrying and closes the connection; the Deferred
    /// fires once no attempt is in progress and the connection is gone.
    fn stop_service(&self) -> Deferred<()> {
        self.state.set_running(false);
        self.core.stop()
    }
}

impl fmt::Debug for ClientService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.core.machine.borrow();
        f.debug_struct("ClientService")
            .field("state", &self.state)
            .field("endpoint", &self.core.endpoint)
            .field("connected", &m.connected)
            .field("failed_attempts", &m.failed_attempts)
            .finish()
    }
}

impl ClientCore {
    fn start(&self) {
        {
            let mut m = self.machine.borrow_mut();
            if m.wanted {
                return;
            }
            m.wanted = true;
            m.stopped = false;
            m.failed_attempts = 0;
        }
        // Connects now, or once a connection still closing from a stop is gone.
        self.settle();
    }

    fn stop(&self) -> Deferred<()> {
        let (retry, handle, transport, waiters, stopped) = {
            let mut m = self.machine.borrow_mut();
            m.wanted = false;
            m.stopped = true;
            m.connected = false;
            let retry = m.retry.take();
            let handle = m.attempt_handle.clone();
            let transport = m.connection.as_ref().map(|(_, t)| t.clone());
            let waiters = std::mem::take(&mut m.waiters);
            let stopped = if m.attempt.is_none() && m.connection.is_none() {
                Deferred::succeed(())
            } else {
                let (resolver, d) = Deferred::new();
                m.stop_waiters.push(resolver);
                d
            };
            (retry, handle, transport, waiters, stopped)
        };
        if let Some(retry) = retry {
            let _ = retry.cancel();
        }
        for (waiter, _) in waiters {
            let _ = waiter.try_errback(Cancelled);
        }
        if let Some(handle) = handle {
            handle.cancel();
        }
        if let Some(transport) = transport {
            transport.lose_connection();
        }
        stopped
    }

    fn when_connected(&self, fail_after: Option<u32>) -> Deferred<Transport> {
        let mut m = self.machine.borrow_mut();
        if m.connected
            && let Some((_, transport)) = &m.connection
        {
            return Deferred::succeed(transport.clone());
        }
        if m.stopped {
            return Deferred::fail(Cancelled);
        }
        let (resolver, d) = Deferred::new();
        m.waiters.push((resolver, fail_after));
        d
    }

    /// Starts an attempt (Twisted's `_connect`).
    fn connect(&self) {
        let generation = {
            let mut m = self.machine.borrow_mut();
            m.generation += 1;
            m.attempt = Some(m.generation);
            m.attempt_handle = None;
            m.generation
        };
        let connecting = self.endpoint.connect(self.factory.clone());
        let me = self.me.clone();
        let prepared = connecting.add_callback(move |transport| match me.upgrade() {
            Some(core) => core.prepare(transport),
            None => Deferred::succeed(transport),
        });
        let me = self.me.clone();
        let ended = prepared.add_both(move |result| {
            if let Some(core) = me.upgrade() {
                core.attempt_ended(generation, result);
            }
            Ok::<(), Failure>(())
        });
        let mut m = self.machine.borrow_mut();
        if m.attempt == Some(generation) {
            m.attempt_handle = Some(ended.handle());
        }
    }

    /// Runs the user's `prepare_connection`, if any.
    fn prepare(&self, transport: Transport) -> Deferred<Transport> {
        let prepare = self.prepare.borrow_mut().take();
        let Some(mut prepare) = prepare else {
            return Deferred::succeed(transport);
        };
        let prepared = prepare(&transport);
        {
            let mut slot = self.prepare.borrow_mut();
            if slot.is_none() {
                *slot = Some(prepare);
            }
        }
        prepared.map(move |()| transport)
    }

    /// The protocol's `connection_made` ran.
    fn transport_up(&self, generation: u64, transport: &Transport) {
        let lose = {
            let mut m = self.machine.borrow_mut();
            let current = m.attempt == Some(generation)
                || m.connection.as_ref().is_some_and(|(g, _)| *g == generation);
            if current {
                m.connection = Some((generation, transport.clone()));
            }
            !current || !m.wanted
        };
        if lose {
            transport.lose_connection();
        }
    }

    /// The attempt is over: connected and prepared, or failed.
    fn attempt_ended(&self, generation: u64, result: Result<Transport, Failure>) {
        let mut m = self.machine.borrow_mut();
        if m.attempt != Some(generation) {
            drop(m);
            // An abandoned attempt: a connection it made anyway is closed.
            if let Ok(transport) = result {
                transport.lose_connection();
            }
            return;
        }
        m.attempt = None;
        m.attempt_handle = None;
        match result {
            Ok(transport) if m.wanted => {
                m.connection = Some((generation, transport.clone()));
                m.connected = true;
                m.failed_attempts = 0;
                let waiters = std::mem::take(&mut m.waiters);
                drop(m);
                tracing::debug!(
                    target: LOG_TARGET,
                    "connected to {:?}",
                    self.endpoint
                );
                for (waiter, _) in waiters {
                    let _ = waiter.try_callback(transport.clone());
                }
            }
            Ok(transport) => {
                // Stopped meanwhile: close it; the stop waits for the loss.
                m.connection = Some((generation, transport.clone()));
                drop(m);
                transport.lose_connection();
            }
            Err(failure) => {
                // A connection made but not prepared is rejected. While retrying, it is
                // forgotten; while stopping, the stop waits for it.
                let rejected = if m.wanted {
                    m.connection.take().map(|(_, t)| t)
                } else {
                    m.connection.as_ref().map(|(_, t)| t.clone())
                };
                drop(m);
                if let Some(transport) = rejected {
                    transport.lose_connection();
                }
                self.failed(Some(failure));
            }
        }
    }

    /// The protocol's `connection_lost` ran.
    fn connection_lost(&self, generation: u64, reason: Failure) {
        let (was_connected, preparing) = {
            let mut m = self.machine.borrow_mut();
            if m.connection.as_ref().is_none_or(|(g, _)| *g != generation) {
                return;
            }
            m.connection = None;
            let was_connected = std::mem::replace(&mut m.connected, false);
            let preparing = if m.attempt == Some(generation) {
                m.attempt = None;
                m.attempt_handle.take()
            } else {
                None
            };
            (was_connected, preparing)
        };
        if let Some(handle) = preparing {
            // Lost while being prepared: the attempt failed with the loss; the
            // preparation's own outcome is stale now.
            handle.cancel();
            self.failed(Some(reason));
        } else if was_connected {
            tracing::info!(
                target: LOG_TARGET,
                "connection to {:?} lost: {reason}",
                self.endpoint
            );
            self.failed(None);
        } else {
            self.settle();
        }
    }

    /// An attempt failed (`Some`) or the connection was lost (`None`): schedule the next
    /// attempt (Twisted's `_wait`) and fail the waiters that gave up.
    fn failed(&self, failure: Option<Failure>) {
        let wanted = self.machine.borrow().wanted;
        if wanted {
            let attempts = {
                let mut m = self.machine.borrow_mut();
                m.failed_attempts = m.failed_attempts.saturating_add(1);
                m.failed_attempts
            };
            let delay = self.retry_delay(attempts);
            if let Some(failure) = &failure {
                tracing::info!(
                    target: LOG_TARGET,
                    "connecting to {:?} failed: {failure}; retry {attempts} in {:.3} s",
                    self.endpoint,
                    delay.as_secs_f64()
                );
            } else {
                tracing::info!(
                    target: LOG_TARGET,
                    "reconnecting to {:?} in {:.3} s",
                    self.endpoint,
                    delay.as_secs_f64()
                );
            }
            let me = self.me.clone();
            let call = self.clock.call_later_boxed(
                delay,
                Box::new(move || {
                    if let Some(core) = me.upgrade() {
                        core.retry_due();
                    }
                }),
            );
            let previous = self.machine.borrow_mut().retry.replace(call);
            if let Some(previous) = previous {
                let _ = previous.cancel();
            }
            if let Some(failure) = failure {
                self.deliver_failure(failure);
            }
        }
        self.settle();
    }

    fn retry_delay(&self, attempts: u32) -> Duration {
        let policy = self.policy.borrow_mut().take();
        let Some(mut policy) = policy else {
            // The policy itself is running and caused this: no reentrant call.
            return Duration::ZERO;
        };
        let delay = policy(attempts);
        let mut slot = self.policy.borrow_mut();
        if slot.is_none() {
            *slot = Some(policy);
        }
        delay
    }

    /// Fails the waiters whose count of tolerated failures ran out (Twisted's
    /// `_deliverConnectionFailure`).
    fn deliver_failure(&self, failure: Failure) {
        let ready = {
            let mut m = self.machine.borrow_mut();
            let mut ready = Vec::new();
            let mut kept = Vec::new();
            for (waiter, remaining) in std::mem::take(&mut m.waiters) {
                match remaining {
                    _ if waiter.is_fired() => {}
                    Some(n) if n <= 1 => ready.push(waiter),
                    Some(n) => kept.push((waiter, Some(n - 1))),
                    None => kept.push((waiter, None)),
                }
            }
            m.waiters = kept;
            ready
        };
        for waiter in ready {
            let _ = waiter.try_errback(failure.clone());
        }
    }

    fn retry_due(&self) {
        let connect = {
            let mut m = self.machine.borrow_mut();
            m.retry = None;
            m.wanted && m.attempt.is_none() && m.connection.is_none()
        };
        if connect {
            self.connect();
        }
    }

    /// Once nothing is in progress: fires the stop's Deferreds, and connects if started
    /// again meanwhile.
    fn settle(&self) {
        let (stop_waiters, connect) = {
            let mut m = self.machine.borrow_mut();
            if m.attempt.is_some() || m.connection.is_some() {
                return;
            }
            let stop_waiters = std::mem::take(&mut m.stop_waiters);
            (stop_waiters, m.wanted && m.retry.is_none())
        };
        for waiter in stop_waiters {
            let _ = waiter.try_callback(());
        }
        if connect {
            self.connect();
        }
    }
}

/// Wraps the user's factory so the service hears of connections made and lost (Twisted's
/// `_DisconnectFactory`).
struct ServiceFactory {
    inner: Rc<dyn Factory>,
    core: Weak<ClientCore>,
}

impl Factory for ServiceFactory {
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>> {
        let generation = self
            .core
            .upgrade()
            .and_then(|core| core.machine.borrow().attempt)
            .unwrap_or(0);
        let inner = self.inner.clone().build_protocol(addr)?;
        Some(Box::new(ServiceProtocol {
            inner,
            core: self.core.clone(),
            generation,
        }))
    }

    fn start_factory(&self) {
        self.inner.start_factory();
    }

    fn stop_factory(&self) {
        self.inner.stop_factory();
    }
}

/// Passes every event on, and tells the service when the connection is made and lost
/// (Twisted's `_ReconnectingProtocolProxy`).
struct ServiceProtocol {
    inner: Box<dyn Protocol>,
    core: Weak<ClientCore>,
    generation: u64,
}

impl Protocol for ServiceProtocol {
    fn connection_made(&mut self, transport: Transport) {
        self.inner.connection_made(transport.clone());
        if let Some(core) = self.core.upgrade() {
            core.transport_up(self.generation, &transport);
        }
    }

    fn connection_lost(&mut self, reason: Failure) {
        self.inner.connection_lost(reason.clone());
        if let Some(core) = self.core.upgrade() {
            core.connection_lost(self.generation, reason);
        }
    }

    crate::protocol::forward_protocol_events!(
        inner:
        data_received,
        supports_half_close,
        read_connection_lost,
        write_connection_lost,
        handshake_completed
    );
}
