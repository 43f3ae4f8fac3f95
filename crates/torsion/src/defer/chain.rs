//! The type-erased engine behind every [`Deferred`](super::Deferred): one callback chain, run
//! in a single loop (a port of Twisted's `Deferred._runCallbacks`), so chains of any length
//! and any depth of nesting never recurse.
//!
//! Invariant: no `RefCell` borrow of a chain is held while user code runs (a step, a
//! canceller, a waker, a drop of user values). Take what is needed out, release, call, put
//! back.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::rc::{Rc, Weak};
use std::task::Waker;

use super::Failure;
use super::erased::Erased;
use super::steps::Steps;

/// The current result of a chain: a typed value, or a failure.
pub(crate) enum Outcome {
    Ok(Erased),
    Err(Failure),
}

impl Outcome {
    /// A value.
    pub(crate) fn value<T: 'static>(value: T) -> Outcome {
        Outcome::Ok(Erased::new(value))
    }

    /// Takes the value out as a `T`. A mismatch cannot happen through the typed API; it is
    /// reported as a failure rather than a panic all the same.
    pub(crate) fn into_result<T: 'static>(self) -> Result<T, Failure> {
        match self {
            Outcome::Ok(value) => value.take().map_err(|_| type_mismatch()),
            Outcome::Err(f) => Err(f),
        }
    }
}

/// The failure for a value of a type a step did not expect.
pub(crate) fn type_mismatch() -> Failure {
    Failure::msg("internal error: Deferred result of an unexpected type")
}

/// What a step asks the loop to do next.
pub(crate) enum Next {
    /// Carry on with this result.
    Done(Outcome),
    /// The step returned a Deferred that has no result yet: wait for it.
    Wait(Rc<Chain>),
}

/// One link of the chain: a callback, an errback, or both, stored without an allocation
/// when small (`node`), and the function that knows its type and runs it (`run`).
pub(crate) struct Step {
    node: Erased,
    run: fn(Erased, Outcome) -> Next,
}

impl Step {
    pub(crate) fn new<N: 'static>(node: N, run: fn(Erased, Outcome) -> Next) -> Step {
        Step {
            node: Erased::new(node),
            run,
        }
    }
}

enum Entry {
    User(Step),
    /// Hands this chain's result on to a chain that waits for it (Twisted's `_CONTINUE`).
    Continue(Rc<Chain>),
}

/// A user's canceller, given the chain it cancels.
pub(crate) type OnceCanceller = Box<dyn FnOnce(&Rc<Chain>)>;

/// What cancelling does before the Deferred is fired.
pub(crate) enum Canceller {
    /// A user canceller: run once, given the chain; if it does not fire the Deferred,
    /// `Cancelled` follows. (It gets the chain rather than keeping a `Weak` to it, so a weak
    /// count on a chain means a handle outside it.)
    Once(OnceCanceller),
    /// An internal canceller that may leave the result to be decided later (a spawned
    /// future decides its own result after what it awaits is cancelled). Gone, it counts
    /// as a canceller that did nothing.
    Reusable(Weak<dyn ReusableCanceller>),
}

/// What a [`Canceller::Reusable`] does (a spawned task's cancel).
pub(crate) trait ReusableCanceller {
    /// Cancels; returns whether `Cancelled` should follow when the Deferred is still unfired.
    fn cancel(self: Rc<Self>) -> bool;
}

/// One chain's state. Shared (`Rc`) between the consuming handle, resolvers, and chains
/// waiting on it.
///
/// Ownership: a chain owns the chain it waits on (`chained_to`, strong, as Twisted's
/// `_chainedTo`), and that chain owns its waiter through its `Continue` entry. The pair
/// stays alive while it waits, whoever else lets go, so `pause`, `unpause` and `cancel`
/// always reach the inner one; the cycle ends when the inner one fires (and it does, once
/// its last [`Resolver`](super::Resolver) is dropped, unless it has a canceller).
pub(crate) struct Chain {
    state: RefCell<State>,
    /// Where the Deferred was created, for reports.
    pub(crate) origin: &'static Location<'static>,
    /// How many [`Resolver`](super::Resolver)s of this chain are alive.
    resolvers: Cell<usize>,
}

struct State {
    result: Option<Outcome>,
    fired: bool,
    cancelled: bool,
    running: bool,
    paused: u32,
    steps: Steps<Entry>,
    canceller: Option<Canceller>,
    /// A canceller is running: its Resolver going away is not an abandonment.
    cancelling: bool,
    chained_to: Option<Rc<Chain>>,
    waker: Option<Waker>,
}

/// Why firing failed.
pub(crate) enum FireError {
    AlreadyCalled,
}

impl Chain {
    pub(crate) fn new(origin: &'static Location<'static>) -> Rc<Chain> {
        Rc::new(Chain {
            state: RefCell::new(State {
                result: None,
                fired: false,
                cancelled: false,
                running: false,
                paused: 0,
                steps: Steps::default(),
                canceller: None,
                cancelling: false,
                chained_to: None,
                waker: None,
            }),
            origin,
            resolvers: Cell::new(0),
        })
    }

    /// Counts one more live Resolver.
    pub(crate) fn resolver_added(&self) {
        self.resolvers.set(self.resolvers.get() + 1);
    }

    /// Counts one Resolver less. When the last goes and the chain is unfired with no
    /// canceller, nothing can ever fire it: it fails with
    /// [`ResolverDropped`](crate::error::ResolverDropped), once the callback running now
    /// has returned if a reactor runs on this thread (a Resolver is often dropped inside a
    /// borrow its own callbacks would want), else at once.
    ///
    /// Not when nobody could see the failure: nothing but that Resolver holds the chain and
    /// no step waits on it (as Twisted's garbage collector takes an unfired Deferred), or a
    /// reactor is being torn down with the calls that held its Resolvers ([`quietly`]).
    pub(crate) fn resolver_dropped(self: &Rc<Self>) {
        let left = self.resolvers.get().saturating_sub(1);
        self.resolvers.set(left);
        if left > 0 || TEARDOWN.with(Cell::get) > 0 || !self.abandoned() {
            return;
        }
        if Rc::strong_count(self) <= 1 && self.state.borrow().steps.is_empty() {
            return;
        }
        let chain = self.clone();
        let fail = move || {
            if chain.resolvers.get() == 0 && chain.abandoned() {
                let failure = Failure::new(crate::error::ResolverDropped {
                    created_at: chain.origin,
                });
                let _ = chain.fire(Outcome::Err(failure));
            }
        };
        after_callback(Box::new(fail));
    }

    /// Frees a chain waiting on another, and that other, when nothing outside the pair can
    /// reach either any more: the pair keeps itself alive through `chained_to` and the
    /// `Continue` step (see [`Chain`]), and that cycle would otherwise outlive everything.
    ///
    /// `self` is either end; the caller holds `extra` strong references to it that are going
    /// away. The pair is unreachable when the inner chain cannot move on by itself (unfired
    /// with no Resolver, or fired and paused), each end is held only by the other (plus
    /// `extra`), and no [`DeferredHandle`](super::DeferredHandle) to either is alive. The
    /// waiting chain's remaining steps are then dropped without running, as Twisted's
    /// garbage collector takes such a pair.
    pub(crate) fn collect_if_unreachable(self: &Rc<Self>, extra: usize) {
        if Rc::strong_count(self) != extra + 1 || Rc::weak_count(self) != 0 {
            return;
        }
        let (waiter, inner) = {
            let s = self.state.borrow();
            match &s.chained_to {
                Some(inner) => (self.clone(), inner.clone()),
                None => {
                    let mut waiters = s.steps.iter().filter_map(|e| match e {
                        Entry::Continue(w) => Some(w.clone()),
                        Entry::User(_) => None,
                    });
                    match (waiters.next(), waiters.next()) {
                        (Some(w), None) => (w, self.clone()),
                        _ => return,
                    }
                }
            }
        };
        // Counts now include the two clones just made.
        let (extra_waiter, extra_inner) = if Rc::ptr_eq(&waiter, self) {
            (extra + 1, 1)
        } else {
            (1, extra + 1)
        };
        let unreachable = Rc::strong_count(&waiter) == extra_waiter + 1
            && Rc::weak_count(&waiter) == 0
            && Rc::strong_count(&inner) == extra_inner + 1
            && Rc::weak_count(&inner) == 0
            && inner.resolvers.get() == 0
            && {
                let s = inner.state.borrow();
                let waits_here = waiter
                    .state
                    .borrow()
                    .chained_to
                    .as_ref()
                    .is_some_and(|c| Rc::ptr_eq(c, &inner));
                waits_here && !s.running && (!s.fired || s.paused > 0)
            };
        if !unreachable {
            return;
        }
        let steps = std::mem::take(&mut inner.state.borrow_mut().steps);
        let chained = waiter.state.borrow_mut().chained_to.take();
        // Outside the borrows: dropping runs the user's closures' destructors.
        drop(chained);
        drop(steps);
    }

    /// Unfired, with no canceller and none running: only a Resolver could fire it.
    fn abandoned(&self) -> bool {
        let s = self.state.borrow();
        !s.fired && s.canceller.is_none() && !s.cancelling
    }

    /// A chain already fired with `outcome`.
    pub(crate) fn fired(origin: &'static Location<'static>, outcome: Outcome) -> Rc<Chain> {
        let chain = Chain::new(origin);
        {
            let mut s = chain.state.borrow_mut();
            s.result = Some(outcome);
            s.fired = true;
        }
        chain
    }

    pub(crate) fn set_canceller(&self, canceller: Canceller) {
        self.state.borrow_mut().canceller = Some(canceller);
    }

    pub(crate) fn is_fired(&self) -> bool {
        self.state.borrow().fired
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.state.borrow().paused > 0
    }

    /// Whether the chain holds a failure right now.
    pub(crate) fn has_failure(&self) -> bool {
        matches!(self.state.borrow().result, Some(Outcome::Err(_)))
    }

    /// Fires the chain. A fire after a cancel is silently dropped.
    pub(crate) fn fire(self: &Rc<Self>, outcome: Outcome) -> Result<(), FireError> {
        {
            let mut s = self.state.borrow_mut();
            if s.fired {
                let cancelled = s.cancelled;
                drop(s);
                // The outcome (user data) is dropped here, outside the borrow.
                drop(outcome);
                return if cancelled {
                    Ok(())
                } else {
                    Err(FireError::AlreadyCalled)
                };
            }
            s.fired = true;
            s.result = Some(outcome);
            let canceller = s.canceller.take();
            drop(s);
            drop(canceller);
        }
        run(self.clone());
        Ok(())
    }

    /// Appends a step and runs it at once if the chain has fired.
    pub(crate) fn push(self: &Rc<Self>, step: Step) {
        let fired = {
            let mut s = self.state.borrow_mut();
            s.steps.push_back(Entry::User(step));
            s.fired
        };
        if fired {
            run(self.clone());
        }
    }

    pub(crate) fn pause(&self) {
        self.state.borrow_mut().paused += 1;
    }

    pub(crate) fn unpause(self: &Rc<Self>) {
        let go = {
            let mut s = self.state.borrow_mut();
            s.paused = s.paused.saturating_sub(1);
            s.paused == 0 && s.fired
        };
        if go {
            run(self.clone());
        }
    }

    /// Takes the final result if the chain has one that nothing else will consume; otherwise
    /// registers `waker` to be woken when it does.
    pub(crate) fn poll_result(&self, waker: &Waker) -> Option<Outcome> {
        let mut s = self.state.borrow_mut();
        if s.paused == 0
            && !s.running
            && s.steps.is_empty()
            && let Some(outcome) = s.result.take()
        {
            return Some(outcome);
        }
        match &s.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => {
                let old = s.waker.replace(waker.clone());
                drop(s);
                drop(old);
            }
        }
        None
    }

    /// Steals the result when it can be taken now (fired, not paused, not running, nothing
    /// pending); used when a step returns this Deferred.
    pub(crate) fn try_steal(&self) -> Option<Outcome> {
        let mut s = self.state.borrow_mut();
        if s.paused == 0 && !s.running && s.steps.is_empty() {
            s.result.take()
        } else {
            None
        }
    }

    /// Cancels the chain (Twisted's `Deferred.cancel`): an unfired chain runs its canceller
    /// and, unless that fired it, fails with `Cancelled`; a chain waiting on another forwards
    /// the cancel to the innermost one; a fired chain ignores it.
    #[track_caller]
    pub(crate) fn cancel(self: &Rc<Self>) {
        let location = Location::caller();
        let mut current = self.clone();
        let mut visited: Vec<*const Chain> = Vec::new();
        loop {
            let next = {
                let s = current.state.borrow();
                if !s.fired {
                    break;
                }
                match s.chained_to.clone() {
                    Some(inner) => inner,
                    None => return,
                }
            };
            // Chains waiting on each other in a circle: nothing can be cancelled.
            if visited.contains(&Rc::as_ptr(&next)) {
                return;
            }
            visited.push(Rc::as_ptr(&current));
            current = next;
        }
        let canceller = {
            let mut s = current.state.borrow_mut();
            s.cancelling = true;
            match &s.canceller {
                Some(Canceller::Reusable(f)) => Some(Canceller::Reusable(f.clone())),
                _ => s.canceller.take(),
            }
        };
        let errback = match canceller {
            None => true,
            Some(Canceller::Once(f)) => {
                call_guarded(f, &current);
                true
            }
            Some(Canceller::Reusable(f)) => match catch_unwind(AssertUnwindSafe(|| {
                f.upgrade().is_none_or(|task| task.cancel())
            })) {
                Ok(errback) => errback,
                Err(payload) => {
                    crate::log::error!(
                        target: "torsion::defer",
                        "a Deferred canceller panicked: {}",
                        Failure::from_panic(&*payload)
                    );
                    true
                }
            },
        };
        current.state.borrow_mut().cancelling = false;
        if errback && !current.is_fired() {
            current.state.borrow_mut().cancelled = true;
            let failure = Failure::new(crate::error::Cancelled);
            let failure = Failure::passed_through(failure, location);
            // The Deferred is not fired, so this cannot fail.
            let _ = current.fire(Outcome::Err(failure));
        }
    }
}

fn call_guarded(f: OnceCanceller, chain: &Rc<Chain>) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(chain))) {
        crate::log::error!(
            target: "torsion::defer",
            "a Deferred canceller panicked: {}",
            Failure::from_panic(&*payload)
        );
    }
}

/// Runs the chain's pending steps, and those of every chain waiting on it, in one loop.
fn run(start: Rc<Chain>) {
    if start.state.borrow().running {
        // The loop already running this chain picks new steps up.
        return;
    }
    let mut stack = Parents::default();
    let mut current = start;
    loop {
        let mut finished = true;
        loop {
            let mut s = current.state.borrow_mut();
            if s.paused > 0 || s.running {
                return;
            }
            if s.chained_to.is_some() {
                // What it waited on has handed its result over; let go of it outside the
                // borrow (dropping it may run user code).
                let inner = s.chained_to.take();
                drop(s);
                drop(inner);
                continue;
            }
            if s.result.is_none() {
                break;
            }
            let Some(entry) = s.steps.pop_front() else {
                break;
            };
            match entry {
                Entry::Continue(waiter) => {
                    let result = s.result.take();
                    drop(s);
                    {
                        let mut w = waiter.state.borrow_mut();
                        w.result = result;
                        w.paused = w.paused.saturating_sub(1);
                    }
                    stack.push(std::mem::replace(&mut current, waiter));
                    finished = false;
                    break;
                }
                Entry::User(step) => {
                    let Some(input) = s.result.take() else {
                        break;
                    };
                    s.running = true;
                    drop(s);
                    let next = match catch_unwind(AssertUnwindSafe(|| (step.run)(step.node, input)))
                    {
                        Ok(next) => next,
                        Err(payload) => Next::Done(Outcome::Err(Failure::from_panic(&*payload))),
                    };
                    let mut s = current.state.borrow_mut();
                    s.running = false;
                    match next {
                        Next::Done(outcome) => s.result = Some(outcome),
                        Next::Wait(inner) if Rc::ptr_eq(&inner, &current) => {
                            // Waiting on itself would hang forever (Twisted warns and
                            // hangs); fail the chain instead.
                            s.result = Some(Outcome::Err(Failure::msg(
                                "a callback returned the Deferred it was added to",
                            )));
                        }
                        Next::Wait(inner) => {
                            s.paused += 1;
                            s.chained_to = Some(inner.clone());
                            drop(s);
                            inner
                                .state
                                .borrow_mut()
                                .steps
                                .push_back(Entry::Continue(current.clone()));
                            break;
                        }
                    }
                }
            }
        }
        if finished {
            wake_waiter(&current);
            match stack.pop() {
                Some(parent) => current = parent,
                None => return,
            }
        }
    }
}

/// The chains `run` returns to once the chain it handed a result on to is done: a stack whose
/// top is kept apart, so the common hand-off of one level allocates nothing.
#[derive(Default)]
struct Parents {
    top: Option<Rc<Chain>>,
    below: Vec<Rc<Chain>>,
}

impl Parents {
    fn push(&mut self, chain: Rc<Chain>) {
        if let Some(previous) = self.top.replace(chain) {
            self.below.push(previous);
        }
    }

    fn pop(&mut self) -> Option<Rc<Chain>> {
        let top = self.top.take();
        self.top = self.below.pop();
        top
    }
}

/// Wakes a future awaiting this chain once it holds a final result.
fn wake_waiter(chain: &Chain) {
    let waker = {
        let mut s = chain.state.borrow_mut();
        if s.result.is_some() && s.steps.is_empty() && s.paused == 0 {
            s.waker.take()
        } else {
            None
        }
    };
    if let Some(waker) = waker {
        crate::defer::executor::wake_inline(waker);
    }
}

/// Where a running reactor takes work that must wait for the current callback to return.
pub(crate) type AfterCallbackHook = Rc<dyn Fn(Box<dyn FnOnce()>)>;

thread_local! {
    /// Inside [`quietly`]: Resolvers dropped now fail nothing.
    static TEARDOWN: Cell<u32> = const { Cell::new(0) };
    /// Steps of dropped chains, emptied in a loop so that dropping a deep nest of waiting
    /// chains never recurses.
    static GRAVEYARD: RefCell<Vec<Steps<Entry>>> = const { RefCell::new(Vec::new()) };
    static DRAINING: Cell<bool> = const { Cell::new(false) };
    /// Where work goes that must not run inside the callback running now: the running
    /// reactor's `call_soon` queue, installed by `Reactor::run` (this layer does not know
    /// the reactor); with none, the work runs at once.
    static AFTER_CALLBACK: RefCell<Option<AfterCallbackHook>> = const { RefCell::new(None) };
    /// When set (by the test harness), unhandled failures are collected here too.
    static CAPTURE: RefCell<Option<Vec<Failure>>> = const { RefCell::new(None) };
}

impl Drop for State {
    fn drop(&mut self) {
        if let Some(Outcome::Err(failure)) = self.result.take() {
            report_unhandled(failure);
        }
        if self.steps.is_empty() {
            return;
        }
        let steps = std::mem::take(&mut self.steps);
        let queued = GRAVEYARD.try_with(|g| g.borrow_mut().push(steps)).is_ok();
        if !queued || DRAINING.with(|d| d.replace(true)) {
            return;
        }
        loop {
            let next = GRAVEYARD.with(|g| g.borrow_mut().pop());
            match next {
                Some(steps) => drop(steps),
                None => break,
            }
        }
        DRAINING.with(|d| d.set(false));
    }
}

/// Runs `f` (a reactor dropping its pending calls and triggers) with Resolvers dropped
/// meanwhile failing nothing: work discarded with its reactor is no error, as Twisted
/// discards pending calls at exit. Chains freed by it still go, cycles included.
pub(crate) fn quietly<R>(f: impl FnOnce() -> R) -> R {
    struct Depth;
    impl Drop for Depth {
        fn drop(&mut self) {
            TEARDOWN.with(|t| t.set(t.get().saturating_sub(1)));
        }
    }
    TEARDOWN.with(|t| t.set(t.get() + 1));
    let _depth = Depth;
    f()
}

/// Installs (or, with `None`, removes) where [`after_callback`] sends work on this thread;
/// returns what was installed before.
pub(crate) fn set_after_callback(hook: Option<AfterCallbackHook>) -> Option<AfterCallbackHook> {
    AFTER_CALLBACK.with(|h| h.replace(hook))
}

/// Runs `work` once the callback running now has returned: through the hook a running
/// reactor installs, else at once.
fn after_callback(work: Box<dyn FnOnce()>) {
    let hook = AFTER_CALLBACK
        .try_with(|h| h.borrow().clone())
        .ok()
        .flatten();
    match hook {
        Some(hook) => hook(work),
        None => work(),
    }
}

/// Logs a failure nobody handled (Twisted's "Unhandled error in Deferred").
pub(crate) fn report_unhandled(failure: Failure) {
    crate::log::error!(target: "torsion::defer", "Unhandled error in Deferred: {failure:#}");
    let _ = CAPTURE.try_with(|c| {
        if let Some(list) = c.borrow_mut().as_mut() {
            list.push(failure);
        }
    });
}

/// Starts collecting unhandled failures on this thread (for the test harness).
pub(crate) fn start_capture() {
    CAPTURE.with(|c| {
        c.borrow_mut().get_or_insert_with(Vec::new);
    });
}

/// Stops collecting and returns what was collected.
pub(crate) fn stop_capture() -> Vec<Failure> {
    CAPTURE.with(|c| c.borrow_mut().take()).unwrap_or_default()
}
