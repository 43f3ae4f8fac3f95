//! Coordination between callback chains: [`DeferredLock`], [`DeferredSemaphore`] and
//! [`DeferredQueue`] (Twisted's `defer.DeferredLock`, `defer.DeferredSemaphore` and
//! `defer.DeferredQueue`).
//!
//! Waiters are served first in, first out. A waiting `acquire` or `get` is a Deferred with a
//! canceller that takes it out of the waiters, so a cancelled waiter never gets the lock, a
//! token or an item.
//!
//! Invariant: no `RefCell` borrow is held while a waiter is fired (firing runs user
//! callbacks synchronously, and those may call back into the same lock or queue): what is
//! needed is taken out, the borrow dropped, then the waiter fired.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::rc::{Rc, Weak};

use super::{Deferred, IntoOutcome, Resolver, maybe_deferred};
use crate::error::{InvalidArgument, QueueOverflow, QueueUnderflow};

/// Waiters, each with an id so that its canceller can find it again.
struct Waiters<T> {
    queue: VecDeque<(u64, Resolver<T>)>,
    next_id: u64,
}

impl<T: 'static> Waiters<T> {
    fn new() -> Self {
        Waiters {
            queue: VecDeque::new(),
            next_id: 0,
        }
    }

    fn len(&self) -> usize {
        self.queue.len()
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn push(&mut self, resolver: Resolver<T>) {
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back((id, resolver));
    }

    /// The id the next [`push`](Waiters::push) will use.
    fn peek_id(&self) -> u64 {
        self.next_id
    }

    fn remove(&mut self, id: u64) -> Option<Resolver<T>> {
        let position = self.queue.iter().position(|(i, _)| *i == id)?;
        self.queue.remove(position).map(|(_, r)| r)
    }

    /// The first waiter still waiting. Waiters are taken out when cancelled, so a fired one
    /// is not expected here; it is skipped all the same.
    fn pop(&mut self) -> Option<Resolver<T>> {
        while let Some((_, resolver)) = self.queue.pop_front() {
            if !resolver.is_fired() {
                return Some(resolver);
            }
        }
        None
    }
}

/// A new waiter: an unfired Deferred, registered in `waiters` (reached through `state`),
/// whose canceller takes it out again.
#[track_caller]
fn wait_in<S: 'static, T: 'static>(
    state: &Rc<RefCell<S>>,
    waiters: fn(&mut S) -> &mut Waiters<T>,
) -> Deferred<T> {
    let id = waiters(&mut state.borrow_mut()).peek_id();
    let weak: Weak<RefCell<S>> = Rc::downgrade(state);
    let (resolver, d) = Deferred::with_canceller(move |_: Resolver<T>| {
        if let Some(state) = weak.upgrade() {
            let removed = waiters(&mut state.borrow_mut()).remove(id);
            // Dropped outside the borrow; `Cancelled` follows.
            drop(removed);
        }
    });
    waiters(&mut state.borrow_mut()).push(resolver);
    d
}

/// The counter of tokens behind both [`DeferredLock`] (one token) and
/// [`DeferredSemaphore`].
struct Tokens {
    limit: usize,
    available: usize,
    waiters: Waiters<()>,
    /// A `release` is handing tokens out; a nested `release` (from a waiter's callback) only
    /// returns its token, and the outer loop hands it on. This keeps the stack flat however
    /// many waiters release from their callbacks.
    dispatching: bool,
}

#[derive(Clone)]
struct TokenPool(Rc<RefCell<Tokens>>);

/// Clears `dispatching` even if firing a waiter unwinds.
struct Dispatching<'a>(&'a RefCell<Tokens>);

impl Drop for Dispatching<'_> {
    fn drop(&mut self) {
        self.0.borrow_mut().dispatching = false;
    }
}

impl TokenPool {
    fn new(limit: usize) -> TokenPool {
        TokenPool(Rc::new(RefCell::new(Tokens {
            limit,
            available: limit,
            waiters: Waiters::new(),
            dispatching: false,
        })))
    }

    #[track_caller]
    fn acquire(&self) -> Deferred<()> {
        {
            let mut s = self.0.borrow_mut();
            // Only when nobody waits: a token freed while waiters are being served is theirs.
            if s.available > 0 && s.waiters.is_empty() {
                s.available -= 1;
                drop(s);
                return Deferred::succeed(());
            }
        }
        wait_in(&self.0, |s: &mut Tokens| &mut s.waiters)
    }

    /// Returns a token; `false` (and nothing changed) if every token was already free.
    fn release(&self) -> bool {
        {
            let mut s = self.0.borrow_mut();
            if s.available >= s.limit {
                return false;
            }
            s.available += 1;
            if s.dispatching {
                return true;
            }
            s.dispatching = true;
        }
        let _dispatching = Dispatching(&self.0);
        loop {
            let next = {
                let mut s = self.0.borrow_mut();
                if s.available == 0 {
                    None
                } else {
                    let next = s.waiters.pop();
                    if next.is_some() {
                        s.available -= 1;
                    }
                    next
                }
            };
            let Some(waiter) = next else { break };
            // Not fired (checked by `pop`), so this cannot fail.
            let fired = waiter.try_callback(());
            debug_assert!(fired.is_ok());
        }
        true
    }

    fn available(&self) -> usize {
        self.0.borrow().available
    }

    fn limit(&self) -> usize {
        self.0.borrow().limit
    }

    fn waiting(&self) -> usize {
        self.0.borrow().waiters.len()
    }

    #[track_caller]
    fn run<R: IntoOutcome>(
        &self,
        f: impl FnOnce() -> R + 'static,
        release: impl FnOnce() + 'static,
    ) -> Deferred<R::Output> {
        self.acquire().add_callback(move |()| {
            maybe_deferred(f).add_both(move |result| {
                release();
                result
            })
        })
    }
}

/// A lock for callback chains (Twisted's `DeferredLock`).
///
/// [`acquire`](DeferredLock::acquire) gives a Deferred that fires once the lock is held:
/// at once when it is free, otherwise when the holders before it have
/// [`release`](DeferredLock::release)d it, first come first served. Cancelling a waiting
/// acquire takes it out of the queue; it never gets the lock. [`run`](DeferredLock::run)
/// holds the lock around a function and the Deferred it returns.
///
/// Clones share the same lock. Dropping a waiting acquire's Deferred without cancelling it
/// does not take it out of the queue: the lock would be handed to it and never released.
///
/// # Examples
///
/// ```
/// use torsion::defer::DeferredLock;
///
/// let lock = DeferredLock::new();
/// let mut first = lock.acquire();
/// assert!(first.take_result().is_some(), "a free lock is acquired at once");
/// let mut second = lock.acquire();
/// assert!(second.take_result().is_none(), "held: the second acquire waits");
/// lock.release();
/// assert!(second.take_result().is_some(), "released: the waiter holds it now");
/// assert!(lock.locked());
/// lock.release();
/// assert!(!lock.locked());
/// ```
#[derive(Clone)]
pub struct DeferredLock(TokenPool);

impl Default for DeferredLock {
    fn default() -> Self {
        DeferredLock::new()
    }
}

impl fmt::Debug for DeferredLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferredLock")
            .field("locked", &self.locked())
            .field("waiting", &self.0.waiting())
            .finish()
    }
}

impl DeferredLock {
    /// A new, unlocked lock (Twisted's `DeferredLock()`).
    pub fn new() -> DeferredLock {
        DeferredLock(TokenPool::new(1))
    }

    /// Asks for the lock (Twisted's `DeferredLock.acquire`): the Deferred fires with `()`
    /// once the lock is held by the caller, who must then [`release`](DeferredLock::release)
    /// it. Waiters are served in the order they asked.
    #[track_caller]
    pub fn acquire(&self) -> Deferred<()> {
        self.0.acquire()
    }

    /// Releases the lock (Twisted's `DeferredLock.release`); the first waiter, if any, holds
    /// it now, and its callbacks run before this returns.
    ///
    /// # Panics
    ///
    /// Panics if the lock is not locked: releasing a lock nobody holds is a bug in the
    /// caller (Twisted asserts it too).
    #[track_caller]
    pub fn release(&self) {
        assert!(
            self.0.release(),
            "DeferredLock::release: the lock is not locked (released more often than acquired)"
        );
    }

    /// Whether the lock is held (Twisted's `DeferredLock.locked`).
    pub fn locked(&self) -> bool {
        self.0.available() == 0
    }

    /// Acquires the lock, calls `f`, holds the lock until the Deferred `f` returns has
    /// fired, releases it, and passes `f`'s result on (Twisted's `DeferredLock.run`).
    /// `f` may return `Result<U, Failure>` or a `Deferred<U>`; a panic in `f` becomes a
    /// failure, and the lock is released whatever the outcome. Cancelling the returned
    /// Deferred while it waits for the lock takes it out of the queue and `f` never runs;
    /// once `f` has run, the cancel goes to `f`'s Deferred.
    #[track_caller]
    pub fn run<R: IntoOutcome>(&self, f: impl FnOnce() -> R + 'static) -> Deferred<R::Output> {
        let lock = self.clone();
        self.0.run(f, move || lock.release())
    }
}

/// A semaphore for callback chains: at most `limit` holders at once (Twisted's
/// `DeferredSemaphore`).
///
/// Like [`DeferredLock`] with `limit` tokens instead of one: [`acquire`](Self::acquire) fires
/// at once while a token is free, otherwise waits its turn, first come first served;
/// cancelling a waiting acquire takes it out of the queue. Clones share the same semaphore.
///
/// # Examples
///
/// ```
/// use torsion::defer::DeferredSemaphore;
///
/// let sem = DeferredSemaphore::new(2).unwrap();
/// let (_a, _b) = (sem.acquire(), sem.acquire());
/// assert_eq!(sem.tokens(), 0);
/// let mut c = sem.acquire();
/// assert!(c.take_result().is_none());
/// sem.release();
/// assert!(c.take_result().is_some());
/// ```
#[derive(Clone)]
pub struct DeferredSemaphore(TokenPool);

impl fmt::Debug for DeferredSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferredSemaphore")
            .field("tokens", &self.tokens())
            .field("limit", &self.limit())
            .field("waiting", &self.0.waiting())
            .finish()
    }
}

impl DeferredSemaphore {
    /// A semaphore with `tokens` tokens, all free (Twisted's `DeferredSemaphore(tokens)`).
    /// Zero tokens is rejected with [`InvalidArgument`] (Twisted raises `ValueError`): no
    /// acquire could ever succeed.
    pub fn new(tokens: usize) -> Result<DeferredSemaphore, InvalidArgument> {
        if tokens == 0 {
            return Err(InvalidArgument(
                "a DeferredSemaphore needs at least one token".to_string(),
            ));
        }
        Ok(DeferredSemaphore(TokenPool::new(tokens)))
    }

    /// Asks for a token (Twisted's `DeferredSemaphore.acquire`): the Deferred fires with
    /// `()` once the caller holds one, and the caller must then
    /// [`release`](DeferredSemaphore::release) it. Waiters are served in the order they
    /// asked.
    #[track_caller]
    pub fn acquire(&self) -> Deferred<()> {
        self.0.acquire()
    }

    /// Gives a token back (Twisted's `DeferredSemaphore.release`); the first waiter, if any,
    /// gets it, and its callbacks run before this returns.
    ///
    /// # Panics
    ///
    /// Panics if every token is already free: more releases than acquires is a bug in the
    /// caller (Twisted asserts it too).
    #[track_caller]
    pub fn release(&self) {
        assert!(
            self.0.release(),
            "DeferredSemaphore::release: all {} tokens are already free (released more often \
             than acquired)",
            self.limit()
        );
    }

    /// The number of free tokens (Twisted's `DeferredSemaphore.tokens`).
    pub fn tokens(&self) -> usize {
        self.0.available()
    }

    /// The number of tokens it was made with (Twisted's `DeferredSemaphore.limit`).
    pub fn limit(&self) -> usize {
        self.0.limit()
    }

    /// Acquires a token, calls `f`, holds the token until the Deferred `f` returns has
    /// fired, releases it, and passes `f`'s result on (Twisted's `DeferredSemaphore.run`).
    /// See [`DeferredLock::run`].
    #[track_caller]
    pub fn run<R: IntoOutcome>(&self, f: impl FnOnce() -> R + 'static) -> Deferred<R::Output> {
        let sem = self.clone();
        self.0.run(f, move || sem.release())
    }
}

struct QueueState<T> {
    size: Option<usize>,
    backlog: Option<usize>,
    items: VecDeque<T>,
    getters: Waiters<T>,
}

/// A queue whose [`get`](DeferredQueue::get) gives a Deferred, fired with an item as soon as
/// there is one (Twisted's `DeferredQueue`).
///
/// [`put`](DeferredQueue::put) hands the item straight to the first waiting getter, first
/// come first served, or keeps it while nobody waits. `size` bounds the items kept (a put
/// beyond it is [`QueueOverflow`]) and `backlog` the getters waiting (a get beyond it is
/// [`QueueUnderflow`]); `None` is unbounded. Cancelling a waiting get takes it out of the
/// getters: it never receives an item, which goes to the next getter or into the queue.
/// Clones share the same queue.
///
/// # Examples
///
/// ```
/// use torsion::defer::DeferredQueue;
/// use torsion::error::QueueOverflow;
///
/// let queue = DeferredQueue::new(Some(1), None);
/// let mut waiting = queue.get().unwrap();
/// queue.put("first").unwrap(); // straight to the waiting getter
/// assert_eq!(waiting.take_result().unwrap().unwrap(), "first");
/// queue.put("second").unwrap(); // kept
/// assert_eq!(queue.put("third"), Err(QueueOverflow));
/// let mut ready = queue.get().unwrap();
/// assert_eq!(ready.take_result().unwrap().unwrap(), "second");
/// ```
pub struct DeferredQueue<T>(Rc<RefCell<QueueState<T>>>);

impl<T> Clone for DeferredQueue<T> {
    fn clone(&self) -> Self {
        DeferredQueue(self.0.clone())
    }
}

impl<T: 'static> fmt::Debug for DeferredQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.borrow();
        f.debug_struct("DeferredQueue")
            .field("items", &s.items.len())
            .field("waiting_gets", &s.getters.len())
            .field("size", &s.size)
            .field("backlog", &s.backlog)
            .finish()
    }
}

impl<T: 'static> DeferredQueue<T> {
    /// An empty queue keeping at most `size` items and `backlog` waiting gets, `None` for no
    /// limit (Twisted's `DeferredQueue(size, backlog)`).
    pub fn new(size: Option<usize>, backlog: Option<usize>) -> DeferredQueue<T> {
        DeferredQueue(Rc::new(RefCell::new(QueueState {
            size,
            backlog,
            items: VecDeque::new(),
            getters: Waiters::new(),
        })))
    }

    /// Adds an item (Twisted's `DeferredQueue.put`): the first waiting get receives it, and
    /// its callbacks run before this returns; with no get waiting, the item is kept. With
    /// `size` items already kept, fails with [`QueueOverflow`] and drops `item`.
    pub fn put(&self, item: T) -> Result<(), QueueOverflow> {
        let getter = {
            let mut s = self.0.borrow_mut();
            match s.getters.pop() {
                Some(getter) => getter,
                None if s.size.is_none_or(|size| s.items.len() < size) => {
                    s.items.push_back(item);
                    return Ok(());
                }
                None => {
                    drop(s);
                    drop(item);
                    return Err(QueueOverflow);
                }
            }
        };
        // Not fired (checked by `pop`), so this cannot fail.
        let fired = getter.try_callback(item);
        debug_assert!(fired.is_ok());
        Ok(())
    }

    /// Asks for an item (Twisted's `DeferredQueue.get`): a Deferred fired at once with the
    /// oldest item kept, or else with the item of a later [`put`](DeferredQueue::put),
    /// first come first served. With `backlog` gets already waiting, fails with
    /// [`QueueUnderflow`].
    #[track_caller]
    pub fn get(&self) -> Result<Deferred<T>, QueueUnderflow> {
        {
            let mut s = self.0.borrow_mut();
            if let Some(item) = s.items.pop_front() {
                drop(s);
                return Ok(Deferred::succeed(item));
            }
            if s.backlog.is_some_and(|backlog| s.getters.len() >= backlog) {
                return Err(QueueUnderflow);
            }
        }
        Ok(wait_in(&self.0, |s: &mut QueueState<T>| &mut s.getters))
    }

    /// The number of items kept, waiting for a get.
    pub fn len(&self) -> usize {
        self.0.borrow().items.len()
    }

    /// Whether no item is kept.
    pub fn is_empty(&self) -> bool {
        self.0.borrow().items.is_empty()
    }
}
