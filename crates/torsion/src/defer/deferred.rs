//! The typed face of a Deferred: [`Deferred`], [`Resolver`], [`DeferredHandle`] and the
//! conversions a callback's return value goes through ([`IntoOutcome`]).
//!
//! Invariant: a `Deferred<T>` is the only consuming handle of its chain, so the type of the
//! value at the end of the chain is always `T`; `add_callback` consumes it and hands back
//! the handle typed by the callback's output.

use std::future::Future;
use std::marker::PhantomData;
use std::panic::Location;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};

use super::Failure;
use super::chain::{Canceller, Chain, FireError, Next, Outcome, Step, type_mismatch};
use super::erased::Erased;
use crate::error::AlreadyCalled;

/// A result that will arrive later, with a chain of callbacks and errbacks to process it
/// (Twisted's `Deferred`).
///
/// The firing end is a separate [`Resolver`]: [`Deferred::new`] returns both. Callbacks run
/// in the order added, each getting the previous one's output; a callback that returns
/// `Err` switches to the errback side, an errback that returns `Ok` switches back; a
/// callback that returns another `Deferred` pauses the chain until that one fires.
/// Callbacks added after the Deferred fired run at once. A `Deferred` is also a
/// [`Future`]: `.await` it inside [`spawn`](crate::spawn).
///
/// A failure that is still in the chain when the last handle goes is logged as
/// "Unhandled error in Deferred", naming where it arose.
///
/// # Examples
///
/// ```
/// use torsion::{Deferred, Failure};
///
/// let (resolver, d) = Deferred::<String>::new();
/// let seen = std::rc::Rc::new(std::cell::Cell::new(0));
/// let seen2 = seen.clone();
/// let _d = d
///     .add_callback(|poem| Ok(poem.len()))
///     .add_callback(|n: usize| if n > 3 { Ok(n) } else { Err(Failure::msg("too short")) })
///     .add_callbacks(
///         move |n| { seen2.set(n); Ok(()) },
///         |failure| { eprintln!("failed: {failure}"); Ok(()) },
///     );
/// resolver.callback("roses are red".to_string());
/// assert_eq!(seen.get(), 13);
/// ```
pub struct Deferred<T> {
    pub(crate) chain: Rc<Chain>,
    _type: PhantomData<fn() -> T>,
}

/// The firing end of a [`Deferred`] (Twisted's `Deferred.callback` and `Deferred.errback`).
///
/// Clone it to hand it to several places; the first to fire wins, and a later fire is an
/// error ([`AlreadyCalled`]), except after the Deferred was cancelled, when later fires are
/// silently dropped (an operation finishing just after its cancellation is not a bug).
pub struct Resolver<T> {
    chain: Rc<Chain>,
    _type: PhantomData<fn(T)>,
}

impl<T> Clone for Resolver<T> {
    fn clone(&self) -> Self {
        self.chain.resolver_added();
        Resolver {
            chain: self.chain.clone(),
            _type: PhantomData,
        }
    }
}

/// Dropping the last Resolver of a Deferred that has not fired, and has no canceller, fails
/// it with [`ResolverDropped`](crate::error::ResolverDropped) naming where it was created,
/// as a dropped oneshot sender does: nothing could fire it any more, and a chain waiting on
/// it would otherwise hang without a word. A Deferred with a canceller stays pending, to
/// be cancelled. With a reactor running on this thread, the failure is delivered once the
/// callback running now has returned. Two cases stay silent, as an unfired Deferred is no
/// error in Twisted either: a Deferred nothing else holds and no callback waits on goes
/// with its Resolver; and the Resolvers a reactor drops with its pending calls and
/// triggers when it is dropped fail nothing, so a program stopped with timers pending
/// reports nothing. A chain waiting on a cancel-only Deferred is freed with it once
/// neither can be reached (no handle, Resolver or [`DeferredHandle`] left).
impl<T> Drop for Resolver<T> {
    fn drop(&mut self) {
        self.chain.resolver_dropped();
        self.chain.collect_if_unreachable(1);
    }
}

impl<T> std::fmt::Debug for Resolver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("fired", &self.chain.is_fired())
            .field("created_at", &format_args!("{}", self.chain.origin))
            .finish()
    }
}

impl<T> std::fmt::Debug for Deferred<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deferred")
            .field("fired", &self.chain.is_fired())
            .field("paused", &self.chain.is_paused())
            .field("created_at", &format_args!("{}", self.chain.origin))
            .finish()
    }
}

impl<T: 'static> Resolver<T> {
    /// Fires the Deferred with a value (Twisted's `callback`).
    ///
    /// # Panics
    ///
    /// Panics if the Deferred was already fired and not cancelled; use
    /// [`try_callback`](Resolver::try_callback) to get an error instead.
    #[track_caller]
    pub fn callback(&self, value: T) {
        if self.try_callback(value).is_err() {
            panic!("{AlreadyCalled}: Resolver::callback on a Deferred that already fired");
        }
    }

    /// Fires the Deferred with a failure (Twisted's `errback`). The caller is recorded as the
    /// failure's origin when `failure` is an error converted here.
    ///
    /// # Panics
    ///
    /// Panics if the Deferred was already fired and not cancelled; use
    /// [`try_errback`](Resolver::try_errback) to get an error instead.
    #[track_caller]
    pub fn errback(&self, failure: impl Into<Failure>) {
        if self.try_errback(failure).is_err() {
            panic!("{AlreadyCalled}: Resolver::errback on a Deferred that already fired");
        }
    }

    /// Fires with a value, or fails with [`AlreadyCalled`] if the Deferred already fired.
    /// After a cancel, the value is dropped and `Ok` is returned.
    pub fn try_callback(&self, value: T) -> Result<(), AlreadyCalled> {
        map_fire(self.chain.fire(Outcome::value(value)))
    }

    /// Fails, or returns [`AlreadyCalled`] if the Deferred already fired.
    #[track_caller]
    pub fn try_errback(&self, failure: impl Into<Failure>) -> Result<(), AlreadyCalled> {
        map_fire(self.chain.fire(Outcome::Err(failure.into())))
    }

    /// Fires with `Ok` as a value and `Err` as a failure.
    #[track_caller]
    pub fn resolve(&self, result: Result<T, Failure>) {
        match result {
            Ok(v) => self.callback(v),
            Err(f) => self.errback(f),
        }
    }

    /// Whether the Deferred has been fired (or cancelled).
    pub fn is_fired(&self) -> bool {
        self.chain.is_fired()
    }

    /// An untyped handle to the Deferred, for `cancel`, `pause` and inspection.
    pub fn handle(&self) -> DeferredHandle {
        DeferredHandle(Rc::downgrade(&self.chain))
    }
}

impl<T: 'static> Resolver<T> {
    pub(crate) fn from_chain(chain: Rc<Chain>) -> Resolver<T> {
        chain.resolver_added();
        Resolver {
            chain,
            _type: PhantomData,
        }
    }
}

/// A [`Resolver`] whose value type is forgotten, able only to fail its Deferred (what a
/// spawned task keeps to report a panic, without boxing a closure for it).
pub(crate) struct Failer(Resolver<std::convert::Infallible>);

impl Failer {
    pub(crate) fn new<T: 'static>(resolver: &Resolver<T>) -> Failer {
        Failer(Resolver::from_chain(resolver.chain.clone()))
    }

    /// See [`Resolver::try_errback`].
    pub(crate) fn try_errback(&self, failure: Failure) -> Result<(), AlreadyCalled> {
        self.0.try_errback(failure)
    }
}

fn map_fire(r: Result<(), FireError>) -> Result<(), AlreadyCalled> {
    r.map_err(|FireError::AlreadyCalled| AlreadyCalled)
}

/// What a callback or errback may return: `Result<U, Failure>` (a value or a failure) or a
/// `Deferred<U>` (the chain waits for it). Implemented for exactly these two; for a callback
/// that returns a plain value use [`Deferred::map`].
#[diagnostic::on_unimplemented(
    message = "a Deferred callback must return `Result<U, Failure>` or `Deferred<U>`",
    label = "returns `{Self}`",
    note = "wrap a plain value in `Ok(..)`, or use `Deferred::map` for a callback returning a plain value"
)]
pub trait IntoOutcome: 'static {
    /// The value type the chain carries on with.
    type Output: 'static;
    #[doc(hidden)]
    fn into_resolved(self) -> Resolved<Self::Output>;
}

/// A callback's return value, sorted (an implementation detail of [`IntoOutcome`]).
#[doc(hidden)]
pub enum Resolved<U> {
    Value(U),
    Failure(Failure),
    Deferred(Deferred<U>),
}

impl<U: 'static> IntoOutcome for Result<U, Failure> {
    type Output = U;
    fn into_resolved(self) -> Resolved<U> {
        match self {
            Ok(v) => Resolved::Value(v),
            Err(f) => Resolved::Failure(f),
        }
    }
}

impl<U: 'static> IntoOutcome for Deferred<U> {
    type Output = U;
    fn into_resolved(self) -> Resolved<U> {
        Resolved::Deferred(self)
    }
}

/// One step of a chain, typed: `h` takes `Result<T, Failure>` (only the sides it handles).
/// Stored in the chain without an allocation when small; [`run_node`] knows its type.
struct Node<T, H> {
    h: H,
    on_ok: bool,
    on_err: bool,
    _input: PhantomData<fn(T)>,
}

/// Runs a [`Node`] on the chain's result (the `run` of its [`Step`]).
fn run_node<T, U, H>(node: Erased, input: Outcome) -> Next
where
    T: 'static,
    U: 'static,
    H: FnOnce(Result<T, Failure>) -> Resolved<U> + 'static,
{
    let Ok(node) = node.take::<Node<T, H>>() else {
        return Next::Done(Outcome::Err(type_mismatch()));
    };
    let arg = match input {
        Outcome::Ok(value) => {
            if !node.on_ok {
                // An errback-only step: the value passes through untouched (T == U).
                return Next::Done(Outcome::Ok(value));
            }
            match value.take::<T>() {
                Ok(value) => Ok(value),
                Err(_) => return Next::Done(Outcome::Err(type_mismatch())),
            }
        }
        Outcome::Err(failure) => {
            if !node.on_err {
                return Next::Done(Outcome::Err(failure));
            }
            Err(failure)
        }
    };
    match (node.h)(arg) {
        Resolved::Value(v) => Next::Done(Outcome::value(v)),
        Resolved::Failure(f) => Next::Done(Outcome::Err(f)),
        Resolved::Deferred(d) => d.into_next(),
    }
}

impl<T: 'static> Deferred<T> {
    /// A new unfired Deferred and the [`Resolver`] that fires it.
    #[track_caller]
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> (Resolver<T>, Deferred<T>) {
        let chain = Chain::new(Location::caller());
        (
            Resolver::from_chain(chain.clone()),
            Deferred::from_chain(chain),
        )
    }

    /// A new unfired Deferred whose [`cancel`](Deferred::cancel) calls `canceller` first
    /// (Twisted's `Deferred(canceller)`). The canceller gets a resolver: if it fires the
    /// Deferred, that decides the result; otherwise the Deferred fails with
    /// [`Cancelled`](crate::error::Cancelled).
    #[track_caller]
    pub fn with_canceller(
        canceller: impl FnOnce(Resolver<T>) + 'static,
    ) -> (Resolver<T>, Deferred<T>) {
        let (resolver, d) = Deferred::new();
        d.chain
            .set_canceller(Canceller::Once(Box::new(move |chain: &Rc<Chain>| {
                canceller(Resolver::from_chain(chain.clone()));
            })));
        (resolver, d)
    }

    /// A Deferred already fired with `value` (Twisted's `succeed`).
    #[track_caller]
    pub fn succeed(value: T) -> Deferred<T> {
        Deferred::from_chain(Chain::fired(Location::caller(), Outcome::value(value)))
    }

    /// A Deferred already failed with `failure` (Twisted's `fail`).
    #[track_caller]
    pub fn fail(failure: impl Into<Failure>) -> Deferred<T> {
        Deferred::from_chain(Chain::fired(
            Location::caller(),
            Outcome::Err(failure.into()),
        ))
    }

    pub(crate) fn from_chain(chain: Rc<Chain>) -> Deferred<T> {
        Deferred {
            chain,
            _type: PhantomData,
        }
    }

    fn push<U: 'static, H>(self, on_ok: bool, on_err: bool, h: H) -> Deferred<U>
    where
        H: FnOnce(Result<T, Failure>) -> Resolved<U> + 'static,
    {
        let node = Node::<T, H> {
            h,
            on_ok,
            on_err,
            _input: PhantomData,
        };
        self.chain.push(Step::new(node, run_node::<T, U, H>));
        Deferred::from_chain(self.chain)
    }

    /// Adds a callback (Twisted's `addCallback`): it gets the value and returns
    /// `Ok(next value)`, `Err(failure)` or another `Deferred`. A failure passes it by.
    pub fn add_callback<R, F>(self, f: F) -> Deferred<R::Output>
    where
        R: IntoOutcome,
        F: FnOnce(T) -> R + 'static,
    {
        self.push(true, false, move |r: Result<T, Failure>| match r {
            Ok(v) => f(v).into_resolved(),
            Err(e) => Resolved::Failure(e),
        })
    }

    /// Adds a callback returning a plain value, which cannot fail.
    pub fn map<U: 'static>(self, f: impl FnOnce(T) -> U + 'static) -> Deferred<U> {
        self.push(true, false, move |r: Result<T, Failure>| match r {
            Ok(v) => Resolved::Value(f(v)),
            Err(e) => Resolved::Failure(e),
        })
    }

    /// Adds a callback that may fail with any error convertible to a [`Failure`] (an
    /// `std::io::Error`, a type from [`error_type!`](crate::error_type), …): Twisted's
    /// `addCallback` with a function that raises. `Ok` carries on with the value, `Err`
    /// switches to the errbacks.
    ///
    /// # Examples
    ///
    /// ```
    /// use torsion::Deferred;
    ///
    /// let mut len = Deferred::succeed("/no/such/poem")
    ///     .try_map(std::fs::read)
    ///     .map(|poem| poem.len());
    /// let failure = len.take_result().unwrap().unwrap_err();
    /// assert!(failure.check::<std::io::Error>());
    /// ```
    pub fn try_map<U: 'static, E: Into<Failure>>(
        self,
        f: impl FnOnce(T) -> Result<U, E> + 'static,
    ) -> Deferred<U> {
        self.push(true, false, move |r: Result<T, Failure>| match r {
            Ok(v) => match f(v) {
                Ok(u) => Resolved::Value(u),
                Err(e) => Resolved::Failure(e.into()),
            },
            Err(e) => Resolved::Failure(e),
        })
    }

    /// Adds an errback (Twisted's `addErrback`): it gets the failure and returns `Ok(value)`
    /// to recover, `Err(failure)` to go on failing, or a `Deferred`. A value passes it by.
    pub fn add_errback<R, G>(self, g: G) -> Deferred<T>
    where
        R: IntoOutcome<Output = T>,
        G: FnOnce(Failure) -> R + 'static,
    {
        self.push(false, true, move |r: Result<T, Failure>| match r {
            Ok(v) => Resolved::Value(v),
            Err(e) => g(e).into_resolved(),
        })
    }

    /// Adds a callback and an errback at the same level (Twisted's `addCallbacks`): exactly
    /// one of them runs.
    pub fn add_callbacks<R1, R2, F, G>(self, f: F, g: G) -> Deferred<R1::Output>
    where
        R1: IntoOutcome,
        R2: IntoOutcome<Output = R1::Output>,
        F: FnOnce(T) -> R1 + 'static,
        G: FnOnce(Failure) -> R2 + 'static,
    {
        self.push(true, true, move |r: Result<T, Failure>| match r {
            Ok(v) => f(v).into_resolved(),
            Err(e) => g(e).into_resolved(),
        })
    }

    /// Adds one function for both outcomes (Twisted's `addBoth`).
    pub fn add_both<R, F>(self, f: F) -> Deferred<R::Output>
    where
        R: IntoOutcome,
        F: FnOnce(Result<T, Failure>) -> R + 'static,
    {
        self.push(true, true, move |r: Result<T, Failure>| {
            f(r).into_resolved()
        })
    }

    /// Fires `other` with this Deferred's result (Twisted's `chainDeferred`). This Deferred's
    /// chain then carries `()` on.
    pub fn chain_deferred(self, other: &Resolver<T>) -> Deferred<()> {
        let other = other.clone();
        self.push(true, true, move |r: Result<T, Failure>| {
            let fired = match r {
                Ok(v) => other.try_callback(v),
                Err(f) => other.try_errback(f),
            };
            match fired {
                Ok(()) => Resolved::Value(()),
                Err(e) => Resolved::Failure(Failure::new(e)),
            }
        })
    }

    /// Pauses the chain: callbacks wait for [`unpause`](Deferred::unpause). Pauses are
    /// counted (Twisted's `pause`).
    pub fn pause(&self) {
        self.chain.pause();
    }

    /// Undoes one [`pause`](Deferred::pause); the last one resumes the chain.
    pub fn unpause(&self) {
        self.chain.unpause();
    }

    /// Cancels the Deferred (Twisted's `cancel`): see [`DeferredHandle::cancel`].
    #[track_caller]
    pub fn cancel(&self) {
        self.chain.cancel();
    }

    /// Whether the Deferred has fired (Twisted's `called`).
    pub fn is_fired(&self) -> bool {
        self.chain.is_fired()
    }

    /// An untyped, weak handle for cancelling or pausing from elsewhere.
    pub fn handle(&self) -> DeferredHandle {
        DeferredHandle(Rc::downgrade(&self.chain))
    }

    /// Where this Deferred was created.
    pub fn origin(&self) -> &'static Location<'static> {
        self.chain.origin
    }

    /// Cancels the Deferred if it has not fired `timeout` from now on `clock`, turning the
    /// resulting [`Cancelled`](crate::error::Cancelled) into a
    /// [`TimeoutError`](crate::error::TimeoutError) (Twisted's `addTimeout`). A Deferred
    /// that fires in time cancels the timer; a cancel by hand before the deadline stays
    /// `Cancelled`; a canceller that fires the Deferred with a value decides the result.
    ///
    /// # Examples
    ///
    /// ```
    /// use torsion::Deferred;
    /// use torsion::error::TimeoutError;
    /// use torsion::time::Clock;
    ///
    /// let clock = Clock::new();
    /// let (_resolver, d) = Deferred::<u32>::new();
    /// let mut d = d.add_timeout(10.0, &clock);
    /// clock.advance(15.0);
    /// assert!(d.take_result().unwrap().unwrap_err().check::<TimeoutError>());
    /// ```
    pub fn add_timeout<C: crate::time::ReactorTime>(
        self,
        timeout: impl crate::time::IntoDelay,
        clock: &C,
    ) -> Deferred<T> {
        let timed_out = Rc::new(std::cell::Cell::new(false));
        let handle = self.handle();
        let flag = timed_out.clone();
        let call = clock.call_later(timeout, move || {
            flag.set(true);
            handle.cancel();
        });
        self.add_both(move |result: Result<T, Failure>| {
            let _ = call.cancel();
            match result {
                Err(f) if timed_out.get() && f.check::<crate::error::Cancelled>() => {
                    Err(Failure::new(crate::error::TimeoutError))
                }
                other => other,
            }
        })
    }

    /// Turns a returned Deferred into the loop's next step.
    fn into_next(self) -> Next {
        match self.chain.try_steal() {
            Some(outcome) => Next::Done(outcome),
            None => Next::Wait(self.chain),
        }
    }

    /// The result if the Deferred has fired and nothing is pending, taking it out of the
    /// chain (Twisted's trial `successResultOf` / `failureResultOf`); `None` if it has no
    /// result yet.
    pub fn take_result(&mut self) -> Option<Result<T, Failure>> {
        self.chain
            .poll_result(std::task::Waker::noop())
            .map(Outcome::into_result)
    }
}

impl<T: 'static> Future for Deferred<T> {
    type Output = Result<T, Failure>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.chain.poll_result(cx.waker()) {
            Some(outcome) => Poll::Ready(outcome.into_result()),
            None => {
                crate::defer::executor::note_awaiting(&self.chain);
                Poll::Pending
            }
        }
    }
}

/// A weak, untyped handle to a Deferred: cancel or pause it from elsewhere without keeping
/// it alive. Every method does nothing once the Deferred is gone.
#[derive(Clone, Debug)]
pub struct DeferredHandle(Weak<Chain>);

impl DeferredHandle {
    /// Cancels the Deferred (Twisted's `Deferred.cancel`). An unfired Deferred runs its
    /// canceller; unless that fired it, it fails with
    /// [`Cancelled`](crate::error::Cancelled). A Deferred waiting on another one (returned by
    /// a callback) cancels that one instead. A fired Deferred is left alone.
    #[track_caller]
    pub fn cancel(&self) {
        if let Some(chain) = self.0.upgrade() {
            chain.cancel();
        }
    }

    /// See [`Deferred::pause`].
    pub fn pause(&self) {
        if let Some(chain) = self.0.upgrade() {
            chain.pause();
        }
    }

    /// See [`Deferred::unpause`].
    pub fn unpause(&self) {
        if let Some(chain) = self.0.upgrade() {
            chain.unpause();
        }
    }

    /// Whether the Deferred has fired; `true` once it is gone.
    pub fn is_fired(&self) -> bool {
        self.0.upgrade().is_none_or(|c| c.is_fired())
    }

    /// Whether the Deferred currently holds a failure.
    pub fn has_failure(&self) -> bool {
        self.0.upgrade().is_some_and(|c| c.has_failure())
    }

    pub(crate) fn from_chain(chain: &Rc<Chain>) -> DeferredHandle {
        DeferredHandle(Rc::downgrade(chain))
    }
}

/// A Deferred already fired with `value` (Twisted's `defer.succeed`).
#[track_caller]
pub fn succeed<T: 'static>(value: T) -> Deferred<T> {
    Deferred::succeed(value)
}

/// A Deferred already failed (Twisted's `defer.fail`).
#[track_caller]
pub fn fail<T: 'static>(failure: impl Into<Failure>) -> Deferred<T> {
    Deferred::fail(failure)
}

/// Calls `f` and turns whatever it returns into a Deferred (Twisted's `maybeDeferred`): a
/// value becomes a fired Deferred, an error a failed one, a Deferred passes through, and a
/// panic becomes a failure.
#[track_caller]
pub fn maybe_deferred<R: IntoOutcome>(f: impl FnOnce() -> R) -> Deferred<R::Output> {
    let location = Location::caller();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => match r.into_resolved() {
            Resolved::Value(v) => Deferred::from_chain(Chain::fired(location, Outcome::value(v))),
            Resolved::Failure(f) => Deferred::from_chain(Chain::fired(location, Outcome::Err(f))),
            Resolved::Deferred(d) => d,
        },
        Err(payload) => Deferred::from_chain(Chain::fired(
            location,
            Outcome::Err(Failure::from_panic(&*payload)),
        )),
    }
}
