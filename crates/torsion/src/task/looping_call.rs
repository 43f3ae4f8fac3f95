//! [`LoopingCall`] (Twisted's `task.LoopingCall`): a function called every interval,
//! aligned to interval slots, skipping the slots it missed; `with_count` reports how many
//! went by.
//!
//! Invariant: at most one delayed call is pending per LoopingCall, and none while the
//! function's Deferred has not fired; no borrow is held while the function runs.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use crate::defer::{IntoOutcome, maybe_deferred};
use crate::error::InvalidArgument;
use crate::time::{DelayedCall, IntoDelay, ReactorTime, Time};
use crate::{Deferred, Failure, Resolver};

const NANOS_PER_SEC: u128 = 1_000_000_000;

fn duration_from_nanos(nanos: u128) -> Duration {
    // Callers pass values below an interval, itself a Duration, so this cannot overflow.
    Duration::new(
        (nanos / NANOS_PER_SEC) as u64,
        (nanos % NANOS_PER_SEC) as u32,
    )
}

/// The looped function, type-erased: given the count of slots, returns the call's Deferred
/// (already fired unless the function returned an unfired one).
type LoopFn = Box<dyn FnMut(u64) -> Deferred<()>>;

/// One `start` of a [`LoopingCall`]: the firing end of the Deferred `start` returned, and
/// whether a call of this run is in progress (its function running or its Deferred not yet
/// fired).
struct Run {
    done: Cell<Option<Resolver<()>>>,
    busy: Cell<bool>,
}

struct LoopState {
    running: bool,
    interval: Option<Duration>,
    start_time: Time,
    /// The interval slot (since `start_time`) of the last call; -1 before a `now` start.
    last_slot: i128,
    call: Option<DelayedCall>,
    run: Option<Rc<Run>>,
    call_count: u64,
}

struct LoopInner<C> {
    clock: C,
    /// Taken out while it runs.
    f: RefCell<Option<LoopFn>>,
    state: RefCell<LoopState>,
}

/// Calls a function repeatedly, every interval (Twisted's `task.LoopingCall`).
///
/// [`start`](LoopingCall::start) calls the function now (or after one interval), then at
/// each later multiple of the interval since the start. When a call finishes late (a slow
/// reactor, or a Deferred the function returned fired late) the missed slots are skipped,
/// not made up: the next call is at the next slot boundary. [`with_count`](LoopingCall::with_count)
/// tells the function how many slots went by. An interval of zero calls the function as
/// often as possible (`call_later(0)` each time), letting I/O run in between.
///
/// The function returns `Result<(), Failure>` or `Deferred<()>`. When it returns a Deferred,
/// the next call waits for that Deferred to fire. When it fails (an `Err`, a failed
/// Deferred or a panic), the loop stops and `start`'s Deferred errbacks with the failure.
/// [`stop`](LoopingCall::stop) fires `start`'s Deferred with `()` (Twisted fires it with the
/// `LoopingCall` itself; keep a clone of the handle instead).
///
/// A `LoopingCall` is a cheap handle: clones share one loop, so the function can hold a
/// clone and stop its own loop. While the loop runs, the time source keeps it alive, as the
/// reactor does in Twisted.
///
/// # Examples
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use torsion::task::LoopingCall;
/// use torsion::time::{Clock, ReactorTime};
///
/// let clock = Clock::new();
/// let ticks = Rc::new(Cell::new(0));
/// let t = ticks.clone();
/// let lc = LoopingCall::new(clock.clone(), move || {
///     t.set(t.get() + 1);
///     Ok(())
/// });
/// let mut done = lc.start(0.1, true).unwrap(); // calls at once, then every 0.1 s
/// clock.pump(&[0.05, 0.1, 0.1]); // t = 0.05, 0.15, 0.25
/// assert_eq!(ticks.get(), 3); // at 0, 0.1 and 0.2
///
/// lc.stop();
/// assert!(done.take_result().unwrap().is_ok());
/// assert!(clock.delayed_calls().is_empty());
/// ```
pub struct LoopingCall<C: ReactorTime + 'static> {
    inner: Rc<LoopInner<C>>,
}

impl<C: ReactorTime + 'static> Clone for LoopingCall<C> {
    fn clone(&self) -> Self {
        LoopingCall {
            inner: self.inner.clone(),
        }
    }
}

impl<C: ReactorTime + 'static> LoopingCall<C> {
    /// A looping call of `f` on `clock`, not started yet (Twisted's `LoopingCall(f)`, with
    /// the `clock` attribute set).
    pub fn new<R>(clock: C, mut f: impl FnMut() -> R + 'static) -> Self
    where
        R: IntoOutcome<Output = ()>,
    {
        Self::from_fn(clock, Box::new(move |_count| maybe_deferred(&mut f)))
    }

    /// A looping call of `f` that is told, at each call, how many interval slots have gone
    /// by since the previous call (Twisted's `LoopingCall.withCount`): 1 normally, more when
    /// calls were skipped because the loop ran late. The first call of a `start(_, true)`
    /// gets 1, and so does the first call after [`reset`](LoopingCall::reset). With an
    /// interval of zero the count is always 1.
    pub fn with_count<R>(clock: C, mut f: impl FnMut(u64) -> R + 'static) -> Self
    where
        R: IntoOutcome<Output = ()>,
    {
        Self::from_fn(clock, Box::new(move |count| maybe_deferred(|| f(count))))
    }

    fn from_fn(clock: C, f: LoopFn) -> Self {
        LoopingCall {
            inner: Rc::new(LoopInner {
                clock,
                f: RefCell::new(Some(f)),
                state: RefCell::new(LoopState {
                    running: false,
                    interval: None,
                    start_time: Time::ZERO,
                    last_slot: 0,
                    call: None,
                    run: None,
                    call_count: 0,
                }),
            }),
        }
    }

    /// Starts the loop (Twisted's `LoopingCall.start`): calls the function every `interval`
    /// ([`IntoDelay`]: `f64` seconds, a [`Duration`] or whole seconds), the first time at
    /// once if `now`, else after one interval.
    ///
    /// Returns a Deferred that fires with `()` when the loop is [stopped](LoopingCall::stop),
    /// or errbacks with the function's failure, which also stops the loop. Cancelling it
    /// stops the loop too (and it errbacks [`Cancelled`](crate::error::Cancelled)).
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`] if the interval is negative or not finite (Twisted raises
    /// `ValueError`), or if the loop is already running (Twisted asserts).
    #[track_caller]
    pub fn start(
        &self,
        interval: impl IntoDelay,
        now: bool,
    ) -> Result<Deferred<()>, InvalidArgument> {
        let interval = interval.try_into_delay()?;
        if self.running() {
            return Err(InvalidArgument(
                "LoopingCall::start: the loop is already running; stop it first".into(),
            ));
        }
        let run = Rc::new(Run {
            done: Cell::new(None),
            busy: Cell::new(false),
        });
        let weak_inner = Rc::downgrade(&self.inner);
        let weak_run = Rc::downgrade(&run);
        let (resolver, deferred) = Deferred::with_canceller(move |_resolver| {
            // Stop the loop without firing: the cancel then errbacks `Cancelled`.
            if let (Some(inner), Some(run)) = (weak_inner.upgrade(), weak_run.upgrade()) {
                drop(run.done.take());
                let current = inner
                    .state
                    .borrow()
                    .run
                    .as_ref()
                    .is_some_and(|r| Rc::ptr_eq(r, &run));
                if current {
                    LoopingCall { inner }.stop();
                }
            }
        });
        run.done.set(Some(resolver));
        let start_time = {
            let mut st = self.inner.state.borrow_mut();
            st.running = true;
            st.interval = Some(interval);
            st.start_time = self.inner.clock.now();
            st.last_slot = if now { -1 } else { 0 };
            st.call_count = 0;
            st.run = Some(run);
            st.start_time
        };
        if now {
            fire(&self.inner);
        } else {
            schedule_from(&self.inner, start_time);
        }
        Ok(deferred)
    }

    /// Stops the loop (Twisted's `LoopingCall.stop`): no further call is made, the pending
    /// one is cancelled and `start`'s Deferred fires with `()`. If a call is in progress
    /// (the function is running, or its Deferred has not fired), the Deferred fires when
    /// that call finishes, with its outcome. Stopping a loop that is not running does
    /// nothing (Twisted asserts).
    pub fn stop(&self) {
        let (call, resolver) = {
            let mut st = self.inner.state.borrow_mut();
            if !st.running {
                return;
            }
            st.running = false;
            let call = st.call.take();
            let resolver = st
                .run
                .as_ref()
                .filter(|run| !run.busy.get())
                .and_then(|run| run.done.take());
            (call, resolver)
        };
        if let Some(call) = call {
            let _ = call.cancel();
        }
        if let Some(resolver) = resolver {
            let _ = resolver.try_callback(());
        }
    }

    /// Restarts the interval from now (Twisted's `LoopingCall.reset`): the pending call is
    /// moved to one interval from now, and later calls align to that new start. Does nothing
    /// while a call is in progress or when the loop is not running.
    pub fn reset(&self) {
        let (call, start_time) = {
            let mut st = self.inner.state.borrow_mut();
            if !st.running {
                return;
            }
            let Some(call) = st.call.take() else {
                return;
            };
            st.start_time = self.inner.clock.now();
            st.last_slot = 0;
            (call, st.start_time)
        };
        let _ = call.cancel();
        drop(call);
        schedule_from(&self.inner, start_time);
    }

    /// Whether the loop is running: started and not stopped (Twisted's `running`).
    pub fn running(&self) -> bool {
        self.inner.state.borrow().running
    }

    /// How many times the function has been called since the last
    /// [`start`](LoopingCall::start).
    pub fn call_count(&self) -> u64 {
        self.inner.state.borrow().call_count
    }

    /// The interval of the last [`start`](LoopingCall::start), or `None` before the first
    /// (Twisted's `interval`).
    pub fn interval(&self) -> Option<Duration> {
        self.inner.state.borrow().interval
    }

    /// The time source the loop runs on (Twisted's `clock`).
    pub fn clock(&self) -> &C {
        &self.inner.clock
    }
}

impl<C: ReactorTime + 'static> fmt::Debug for LoopingCall<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.state.borrow();
        f.debug_struct("LoopingCall")
            .field("running", &st.running)
            .field("interval", &st.interval)
            .field("call_count", &st.call_count)
            .finish()
    }
}

/// Schedules the next call at the first slot boundary after `when` (Twisted's
/// `_scheduleFrom`), computed exactly in nanoseconds: a call made exactly on a boundary
/// schedules the next boundary.
fn schedule_from<C: ReactorTime + 'static>(inner: &Rc<LoopInner<C>>, when: Time) {
    let delay = {
        let st = inner.state.borrow();
        let interval = st.interval.unwrap_or_default().as_nanos();
        if interval == 0 {
            Duration::ZERO
        } else {
            let running_for = when.saturating_sub(st.start_time).as_nanos();
            duration_from_nanos(interval - running_for % interval)
        }
    };
    let me = inner.clone();
    let call = inner.clock.call_later(delay, move || fire(&me));
    replace_call(inner, call);
}

/// Makes `call` the loop's pending call, cancelling any other one.
fn replace_call<C: ReactorTime + 'static>(inner: &LoopInner<C>, call: DelayedCall) {
    let old = inner.state.borrow_mut().call.replace(call);
    if let Some(old) = old {
        let _ = old.cancel();
    }
}

/// One call of the looped function (Twisted's `LoopingCall.__call__`).
fn fire<C: ReactorTime + 'static>(inner: &Rc<LoopInner<C>>) {
    let taken = inner.f.borrow_mut().take();
    let Some(mut f) = taken else {
        // The function is running and restarted its own loop with `now`: make that first
        // call as soon as the running one has returned.
        let me = inner.clone();
        let call = inner.clock.call_later(Duration::ZERO, move || fire(&me));
        replace_call(inner, call);
        return;
    };
    let prepared = {
        let mut st = inner.state.borrow_mut();
        match st.run.clone().filter(|_| st.running) {
            None => None,
            Some(run) => {
                let old_call = st.call.take();
                let interval = st.interval.unwrap_or_default().as_nanos();
                let elapsed = inner.clock.now().saturating_sub(st.start_time).as_nanos();
                // An interval of zero counts 1 each time (Twisted's `withCount`).
                let count = match elapsed.checked_div(interval) {
                    None => 1,
                    Some(slot) => {
                        let slot = slot as i128;
                        let count = (slot - st.last_slot).max(1);
                        st.last_slot = slot;
                        u64::try_from(count).unwrap_or(u64::MAX)
                    }
                };
                st.call_count += 1;
                run.busy.set(true);
                Some((run, count, old_call))
            }
        }
    };
    let Some((run, count, old_call)) = prepared else {
        *inner.f.borrow_mut() = Some(f);
        return;
    };
    drop(old_call);
    let outcome = f(count);
    *inner.f.borrow_mut() = Some(f);
    let me = inner.clone();
    drop(outcome.add_both(move |result| {
        call_finished(&me, &run, result);
        Ok(())
    }));
}

/// A call's outcome is known: schedule the next one, or finish the run.
fn call_finished<C: ReactorTime + 'static>(
    inner: &Rc<LoopInner<C>>,
    run: &Rc<Run>,
    result: Result<(), Failure>,
) {
    run.busy.set(false);
    let current = {
        let st = inner.state.borrow();
        st.running && st.run.as_ref().is_some_and(|r| Rc::ptr_eq(r, run))
    };
    match result {
        Ok(()) if current => schedule_from(inner, inner.clock.now()),
        Ok(()) => {
            if let Some(resolver) = run.done.take() {
                let _ = resolver.try_callback(());
            }
        }
        Err(failure) => {
            let call = if current {
                let mut st = inner.state.borrow_mut();
                st.running = false;
                st.call.take()
            } else {
                None
            };
            if let Some(call) = call {
                let _ = call.cancel();
            }
            match run.done.take() {
                Some(resolver) => {
                    let _ = resolver.try_errback(failure);
                }
                None => crate::defer::chain::report_unhandled(failure),
            }
        }
    }
}
