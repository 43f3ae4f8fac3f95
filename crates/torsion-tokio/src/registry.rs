//! The reactor-thread registry of bridged operations in flight, keyed by id (what Twisted
//! keeps in the Deferred and the asyncio future themselves, which live on one thread):
//! the Resolvers of [`defer_to_tokio`](crate::defer_to_tokio) Deferreds waiting for their
//! tokio task, and the Deferreds [`call_from_tokio`](crate::call_from_tokio) callers wait
//! on. A `Resolver` is `!Send`, so it stays here, on its reactor's thread, and only an id
//! travels to tokio and back through `call_from_thread`.
//!
//! There is one registry per thread, for the reactor running there (one reactor per thread
//! at a time). It is made on first use; in the during phase of that reactor's shutdown it
//! aborts the tokio tasks still running, fails their Deferreds with [`TokioShutDown`],
//! tells the tokio callers still waiting [`ReactorShutDown`], and releases the runtime.
//! From then until the reactor's `run` returns, new operations fail at once; the next
//! reactor on the thread gets a fresh registry. One whose reactor was dropped without
//! shutting down is replaced the same way, and its `Drop` does the same clean-up.
//!
//! Invariant: no `RefCell` of this module is borrowed while user code runs (a Resolver
//! firing, a Deferred cancelled, a task aborted): entries are taken out first.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::task::AbortHandle;
use torsion::error::ReactorShutDown;
use torsion::reactor::{Phase, SystemEvent};
use torsion::{Deferred, Failure, Reactor, ReactorHandle, Resolver};

use crate::error::TokioShutDown;

/// Numbers operations across the process, so an id never names another's entry.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Registry>>> = const { RefCell::new(None) };
}

/// A Resolver whose value type is known only where the result arrives.
pub(crate) trait PendingResolver {
    /// Fires with the task's result, a `Result<T, Failure>` boxed as `Any`.
    fn complete(self: Box<Self>, result: Box<dyn Any + Send>);
    /// Fails it.
    fn fail(self: Box<Self>, failure: Failure);
}

impl<T: 'static> PendingResolver for Resolver<T> {
    fn complete(self: Box<Self>, result: Box<dyn Any + Send>) {
        match result.downcast::<Result<T, Failure>>() {
            Ok(result) => {
                let _ = match *result {
                    Ok(value) => self.try_callback(value),
                    Err(failure) => self.try_errback(failure),
                };
            }
            Err(_) => {
                let _ = self.try_errback(Failure::msg(
                    "internal error: a tokio result of an unexpected type",
                ));
            }
        }
    }

    fn fail(self: Box<Self>, failure: Failure) {
        let _ = self.try_errback(failure);
    }
}

/// A `defer_to_tokio` Deferred waiting for its task.
pub(crate) struct ToTokio {
    pub(crate) resolver: Box<dyn PendingResolver>,
    pub(crate) abort: Option<AbortHandle>,
}

/// A Deferred a `call_from_tokio` caller waits on.
pub(crate) struct FromTokio {
    /// The end of the caller's chain (holding it keeps a cancel-only Deferred alive).
    pub(crate) deferred: Deferred<()>,
    /// Tells the caller the reactor shut down (and disarms the chain's own answer).
    pub(crate) shut_down: Box<dyn FnOnce()>,
}

/// The bridged operations of the reactor running on this thread (see the module doc).
pub(crate) struct Registry {
    handle: ReactorHandle,
    /// Alive while the reactor still holds the registry's shutdown trigger: dead with the
    /// registry still open means the reactor was dropped without shutting down.
    alive: Weak<()>,
    to_tokio: RefCell<HashMap<u64, ToTokio>>,
    from_tokio: RefCell<HashMap<u64, FromTokio>>,
    closed: Cell<bool>,
    /// Counted as a user of the runtime (and not yet released).
    runtime_user: Cell<bool>,
}

impl Registry {
    /// This thread's registry, made (with its shutdown trigger on `reactor`) if there is
    /// none, or if the one there belongs to a reactor that is gone.
    pub(crate) fn for_reactor(reactor: &Reactor) -> Rc<Registry> {
        let existing = CURRENT.with(|c| c.borrow().clone());
        if let Some(existing) = existing {
            let current = if existing.closed.get() {
                // Closed by its reactor's shutdown: still that reactor's until its `run`
                // has returned, so late calls fail at once.
                !finished(&existing.handle)
            } else {
                existing.alive.strong_count() > 0
            };
            if current {
                return existing;
            }
        }
        let token = Rc::new(());
        let registry = Rc::new(Registry {
            handle: reactor.handle(),
            alive: Rc::downgrade(&token),
            to_tokio: RefCell::new(HashMap::new()),
            from_tokio: RefCell::new(HashMap::new()),
            closed: Cell::new(false),
            runtime_user: Cell::new(false),
        });
        let weak = Rc::downgrade(&registry);
        reactor.add_system_event_trigger(Phase::During, SystemEvent::Shutdown, move || {
            if let Some(registry) = weak.upgrade() {
                registry.close();
            }
            drop(token);
        });
        // The one it replaces (if any) is dropped here, outside the slot's borrow, and
        // abandons what it still held.
        let replaced = CURRENT.with(|c| c.borrow_mut().replace(registry.clone()));
        drop(replaced);
        registry
    }

    /// This thread's registry, if it has one (where a result arrives).
    pub(crate) fn current() -> Option<Rc<Registry>> {
        CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()
    }

    pub(crate) fn handle(&self) -> &ReactorHandle {
        &self.handle
    }

    /// Whether the reactor's shutdown has closed it.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Counts this reactor as a user of the runtime, once; the runtime's handle.
    pub(crate) fn runtime(&self) -> Result<tokio::runtime::Handle, Failure> {
        if self.runtime_user.get() {
            return crate::runtime::handle(false);
        }
        let handle = crate::runtime::handle(true)?;
        self.runtime_user.set(true);
        Ok(handle)
    }

    pub(crate) fn insert_to_tokio(&self, id: u64, entry: ToTokio) {
        self.to_tokio.borrow_mut().insert(id, entry);
    }

    pub(crate) fn set_abort(&self, id: u64, abort: AbortHandle) {
        if let Some(entry) = self.to_tokio.borrow_mut().get_mut(&id) {
            entry.abort = Some(abort);
        }
    }

    pub(crate) fn take_to_tokio(&self, id: u64) -> Option<ToTokio> {
        self.to_tokio.borrow_mut().remove(&id)
    }

    pub(crate) fn insert_from_tokio(&self, id: u64, entry: FromTokio) {
        self.from_tokio.borrow_mut().insert(id, entry);
    }

    pub(crate) fn take_from_tokio(&self, id: u64) -> Option<FromTokio> {
        self.from_tokio.borrow_mut().remove(&id)
    }

    /// How many operations are in flight, both ways (for tests and `leftovers`-style
    /// checks).
    pub(crate) fn in_flight(&self) -> usize {
        self.to_tokio.borrow().len() + self.from_tokio.borrow().len()
    }

    /// The reactor is shutting down: abandons everything in flight (see the module doc).
    fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        let to_tokio = std::mem::take(&mut *self.to_tokio.borrow_mut());
        let from_tokio = std::mem::take(&mut *self.from_tokio.borrow_mut());
        let abandoned = to_tokio.len();
        for (_, entry) in to_tokio {
            if let Some(abort) = &entry.abort {
                abort.abort();
            }
            entry.resolver.fail(Failure::new(TokioShutDown));
        }
        for (_, entry) in from_tokio {
            (entry.shut_down)();
            entry.deferred.cancel();
        }
        if abandoned > 0 {
            torsion::log::Logger::new("torsion_tokio.registry").info(format_args!(
                "the reactor shut down with {abandoned} tokio task(s) in flight: aborted, their Deferreds failed with TokioShutDown"
            ));
        }
        if self.runtime_user.replace(false) {
            crate::runtime::release();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Possibly from this thread's exit, when other thread-locals may be gone already:
        // a panic must not escape a destructor there.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.close()));
    }
}

/// Whether `handle`'s reactor has finished (its `run` returned, or it was dropped): a call
/// from a thread is then dropped at once, unrun, which the probe's drop tells.
fn finished(handle: &ReactorHandle) -> bool {
    struct Probe(Arc<AtomicBool>);
    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let probe = Probe(dropped.clone());
    handle.call_from_thread(move |_reactor| drop(probe));
    // Set already only if the call was dropped unrun; a queued probe runs (and sets it)
    // later, on the reactor's next turn.
    dropped.load(Ordering::Acquire)
}

/// How many bridged operations are in flight on this thread's reactor, both ways:
/// [`defer_to_tokio`](crate::defer_to_tokio) Deferreds waiting for their task, and
/// Deferreds [`call_from_tokio`](crate::call_from_tokio) callers wait on. Twisted has no
/// counterpart; a test checks it is 0 when it is done, as it checks `Reactor::leftovers`.
pub fn in_flight() -> usize {
    Registry::current().map_or(0, |r| r.in_flight())
}

/// The failure of an operation started after the reactor's shutdown closed the registry.
pub(crate) fn closed_failure() -> Failure {
    Failure::new(TokioShutDown)
}

/// The failure a tokio caller gets when the reactor went away first.
pub(crate) fn reactor_gone() -> Failure {
    Failure::new(ReactorShutDown)
}
