//! Time and delayed calls: [`Time`], [`DelayedCall`], the timer queue the reactor runs, and
//! [`Clock`], deterministic time for tests.
//!
//! This stands for Twisted's `IReactorTime` and `IDelayedCall` (`twisted.internet.interfaces`),
//! `twisted.internet.base.DelayedCall` and `twisted.internet.task.Clock`. The reactor and
//! [`Clock`] share one engine, so code written against [`ReactorTime`] behaves the same with
//! either, and a test can drive it with [`Clock::advance`].
//!
//! The queue is a binary heap of `(time, seq)` keys over a slab of entries, as Twisted's is a
//! heap of `DelayedCall`s. Equal deadlines fire in scheduling order (the sequence number
//! breaks ties). Scheduling is O(log n) worst case and O(1) on average (a new key rarely
//! rises far, and one due after all others, as a fixed timeout's is, does not move at all);
//! cancelling is O(1); resetting and delaying push a new key. As in Twisted, a cancelled or
//! moved call leaves its old key in the heap, *stale*, until it reaches the top or the heap
//! is compacted (when stale keys pass 50 and half the heap: amortised O(1), and never more
//! than about twice the pending calls). A key is live only while its slot's current sequence
//! number is the key's, so a slot freed and reused is never mistaken for the call that once
//! held it. A call costs no allocation besides its boxed closure (none for a closure that
//! captures nothing). A [`DelayedCall`] handle owns its slot: the slot is freed once the call
//! has finished (run or cancelled) and the handle is gone.
//!
//! Why not a `BTreeMap<(time, seq), slot>` with eager removal, the first design: with
//! 100,000 timers pending, its two O(log n) descents per call (insert, then remove on
//! cancel) made `call_later` + `cancel` cost about 2.5 times tokio's `sleep` + drop; the heap
//! with lazy cancellation costs about half of tokio's (`benches/timers.rs`).
//!
//! The invariant to keep: **never run user code while the queue's `RefCell` is borrowed**.
//! That includes *dropping* a callback, since a closure may own [`DelayedCall`] handles whose
//! `Drop` touches the queue. Callbacks are taken out of their entry, the borrow is released,
//! and only then are they called or dropped, so a callback may schedule, cancel, reset and
//! drop any call, itself included.

use std::cell::{Cell, RefCell};
use std::collections::BinaryHeap;
use std::fmt;
use std::ops::Add;
use std::panic::{AssertUnwindSafe, Location};
use std::rc::Rc;
use std::time::Duration;

use slab::Slab;

use crate::Failure;
use crate::error::{DelayedCallError, InvalidArgument};

/// A point in time: the duration since the clock's epoch (the reactor's start, or the
/// creation of a [`Clock`]).
///
/// Twisted measures time as `float` seconds from `seconds()`; torsion keeps a [`Duration`]
/// so arithmetic is exact, and converts with [`Time::as_secs_f64`] and [`Time::from_secs_f64`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use torsion::time::Time;
///
/// let t = Time::from_secs_f64(1.5) + Duration::from_millis(500);
/// assert_eq!(t.as_secs_f64(), 2.0);
/// assert_eq!(t.to_string(), "2s");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Time(Duration);

impl Time {
    /// The epoch itself: the time at which a reactor starts or a [`Clock`] is created.
    pub const ZERO: Time = Time(Duration::ZERO);

    /// The time `secs` seconds after the epoch (Twisted's float timestamps).
    ///
    /// # Panics
    ///
    /// Panics if `secs` is negative, not finite, or too large for a [`Duration`].
    #[track_caller]
    pub fn from_secs_f64(secs: f64) -> Time {
        Time(secs.into_delay())
    }

    /// Seconds since the epoch as a float (the value Twisted's `seconds()` returns).
    pub fn as_secs_f64(self) -> f64 {
        self.0.as_secs_f64()
    }

    /// The time `since_epoch` after the epoch.
    pub const fn from_duration(since_epoch: Duration) -> Time {
        Time(since_epoch)
    }

    /// The duration since the epoch.
    pub const fn as_duration(self) -> Duration {
        self.0
    }

    /// How long after `earlier` this time is, or zero if it is not after it.
    pub fn saturating_sub(self, earlier: Time) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Time {
    type Output = Time;

    /// The time `rhs` later.
    ///
    /// # Panics
    ///
    /// Panics if the result overflows a [`Duration`].
    fn add(self, rhs: Duration) -> Time {
        Time(self.0 + rhs)
    }
}

impl fmt::Display for Time {
    /// Seconds since the epoch, exactly and without trailing zeros: `0s`, `1.5s`, `0.000001s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let nanos = self.0.subsec_nanos();
        if nanos == 0 {
            return write!(f, "{secs}s");
        }
        let mut frac = nanos;
        let mut width = 9;
        while frac.is_multiple_of(10) {
            frac /= 10;
            width -= 1;
        }
        write!(f, "{secs}.{frac:0width$}s")
    }
}

/// A delay or interval argument: a [`Duration`], `f64` seconds as in Twisted
/// (`call_later(1.5, f)`), or whole seconds as an integer. The one conversion every API
/// taking a time span uses.
///
/// A negative, NaN or infinite `f64`, one too large for a [`Duration`], and a negative
/// integer are refused with one [`InvalidArgument`] message (`delay must be a finite,
/// non-negative number of seconds, got -1`), and one policy decides what happens then,
/// following Twisted:
///
/// - APIs that return a `Result` anyway return it as their error:
///   [`LoopingCall::start`](crate::task::LoopingCall::start) and the
///   [`TimerService`](crate::application::TimerService)'s start (Twisted raises
///   `ValueError`).
/// - APIs that cannot otherwise fail ([`call_later`](ReactorTime::call_later),
///   [`defer_later`](crate::task::defer_later), [`sleep`](crate::task::sleep),
///   `add_timeout`, `Clock::advance`) panic at the caller's line with that message, as
///   Twisted's `callLater` asserts and `Duration::from_secs_f64` panics: a bad constant is a
///   programming error. For a span read from outside the program, check it first with
///   [`try_into_delay`](IntoDelay::try_into_delay).
pub trait IntoDelay {
    /// The span as a [`Duration`].
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`] if it is negative, not finite, or too large for a [`Duration`].
    fn try_into_delay(self) -> Result<Duration, InvalidArgument>;

    /// The span as a [`Duration`], for APIs that cannot fail otherwise.
    ///
    /// # Panics
    ///
    /// Where [`try_into_delay`](IntoDelay::try_into_delay) fails, with its message.
    #[track_caller]
    fn into_delay(self) -> Duration
    where
        Self: Sized,
    {
        match self.try_into_delay() {
            Ok(delay) => delay,
            Err(InvalidArgument(message)) => panic!("{message}"),
        }
    }
}

fn refused(value: impl fmt::Display) -> InvalidArgument {
    InvalidArgument(format!(
        "delay must be a finite, non-negative number of seconds, got {value}"
    ))
}

impl IntoDelay for Duration {
    fn try_into_delay(self) -> Result<Duration, InvalidArgument> {
        Ok(self)
    }
}

impl IntoDelay for f64 {
    fn try_into_delay(self) -> Result<Duration, InvalidArgument> {
        Duration::try_from_secs_f64(self).map_err(|_| refused(self))
    }
}

impl IntoDelay for u64 {
    fn try_into_delay(self) -> Result<Duration, InvalidArgument> {
        Ok(Duration::from_secs(self))
    }
}

impl IntoDelay for u32 {
    fn try_into_delay(self) -> Result<Duration, InvalidArgument> {
        Ok(Duration::from_secs(u64::from(self)))
    }
}

impl IntoDelay for i32 {
    fn try_into_delay(self) -> Result<Duration, InvalidArgument> {
        u64::try_from(self)
            .map(Duration::from_secs)
            .map_err(|_| refused(self))
    }
}

/// The time interface shared by the reactor and [`Clock`] (Twisted's `IReactorTime`).
///
/// Write code that schedules against `&impl ReactorTime` (or `&dyn ReactorTime`) and a test
/// can hand it a [`Clock`] instead of a reactor.
pub trait ReactorTime {
    /// The current time, since this clock's epoch.
    fn now(&self) -> Time;

    /// The current time in seconds as a float (Twisted's `seconds()`).
    fn seconds(&self) -> f64 {
        self.now().as_secs_f64()
    }

    /// Schedules `f` to run once, `delay` from now; the object-safe form of
    /// [`call_later`](ReactorTime::call_later), which most code should use instead
    /// (through a `&dyn ReactorTime`, only this one can be called).
    ///
    /// The caller's location is recorded for [`delayed_calls`](ReactorTime::delayed_calls).
    #[track_caller]
    fn call_later_boxed(&self, delay: Duration, f: Box<dyn FnOnce()>) -> DelayedCall;

    /// Schedules `f` to run once, `delay` from now (Twisted's `callLater`).
    ///
    /// `delay` is a [`Duration`], `f64` seconds or whole seconds ([`IntoDelay`]). Calls with
    /// equal deadlines run in the order they were scheduled. Dropping the returned handle
    /// does not cancel the call; use [`DelayedCall::cancel`].
    ///
    /// # Panics
    ///
    /// Panics if `delay` is negative or not finite (see [`IntoDelay`]).
    #[track_caller]
    fn call_later(&self, delay: impl IntoDelay, f: impl FnOnce() + 'static) -> DelayedCall
    where
        Self: Sized,
    {
        self.call_later_boxed(delay.into_delay(), Box::new(f))
    }

    /// The calls still pending, in the order they are due (Twisted's `getDelayedCalls`).
    fn delayed_calls(&self) -> Vec<DelayedCallInfo>;
}

/// A description of a pending call: when it is due and where it was scheduled, as a reactor
/// left dirty by a test reports it (one entry of Twisted's `getDelayedCalls()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DelayedCallInfo {
    /// When the call is due.
    pub time: Time,
    /// Where `call_later` was called.
    pub location: &'static Location<'static>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Pending,
    Called,
    Cancelled,
}

struct Entry {
    time: Time,
    /// `Some` exactly while the call is pending.
    callback: Option<Box<dyn FnOnce()>>,
    state: State,
    /// Whether the [`DelayedCall`] for this entry still exists. A finished entry is freed as
    /// soon as its handle is gone; a pending one waits until it runs or is cleared.
    handle_alive: bool,
    location: &'static Location<'static>,
}

/// A key of the heap: when a call is due, and which scheduling it was.
///
/// The deadline is kept in nanoseconds since the epoch; deadlines beyond `u64::MAX`
/// nanoseconds (584 years) share the largest value and are ordered among themselves by
/// scheduling order only.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct HeapKey {
    nanos: u64,
    /// Unique per scheduling (and per reset or delay), so it breaks ties in FIFO order and
    /// tells a live key from a stale one.
    seq: u64,
    slot: usize,
}

impl HeapKey {
    fn new(time: Time, seq: u64, slot: usize) -> Self {
        let nanos = u64::try_from(time.0.as_nanos()).unwrap_or(u64::MAX);
        HeapKey { nanos, seq, slot }
    }
}

impl Ord for HeapKey {
    /// Reversed, so `BinaryHeap` (a max-heap) yields the earliest (time, seq) first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.nanos, other.seq).cmp(&(self.nanos, self.seq))
    }
}

impl PartialOrd for HeapKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The sequence number of a slot whose entry is not pending.
const NOT_PENDING: u64 = u64::MAX;

/// Cancelled and moved calls leave stale keys in the heap (as Twisted leaves cancelled calls
/// in its heap); the heap is compacted when more than this many are stale and they are over
/// half of it.
const COMPACT_AFTER: usize = 50;

struct Inner {
    /// Every pending call's key, plus stale keys of calls since cancelled or moved.
    heap: BinaryHeap<HeapKey>,
    /// Keys a `run_due` pass took off the heap because they were scheduled during the pass;
    /// they go back when it ends.
    held: Vec<HeapKey>,
    entries: Slab<Entry>,
    /// For each slot, the sequence number of its pending call's live key, or [`NOT_PENDING`].
    /// Dense (8 bytes a slot), so checking keys while compacting stays in cache.
    live_seq: Vec<u64>,
    next_seq: u64,
    /// How many keys in `heap` and `held` are stale.
    stale: usize,
}

impl Inner {
    fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn is_live(&self, key: HeapKey) -> bool {
        self.live_seq[key.slot] == key.seq
    }

    /// Gives `slot` a new live key due at `time`.
    fn push_key(&mut self, slot: usize, time: Time) {
        let seq = self.next_seq();
        if slot >= self.live_seq.len() {
            self.live_seq.resize(slot + 1, NOT_PENDING);
        }
        self.live_seq[slot] = seq;
        self.heap.push(HeapKey::new(time, seq, slot));
    }

    /// Records that one key went stale, and compacts if stale keys have come to dominate
    /// (amortised O(1) per cancellation).
    fn note_stale(&mut self) {
        self.stale += 1;
        if self.stale > COMPACT_AFTER && self.stale > (self.heap.len() + self.held.len()) / 2 {
            let live_seq = &self.live_seq;
            self.heap.retain(|key| live_seq[key.slot] == key.seq);
            self.held.retain(|key| live_seq[key.slot] == key.seq);
            self.stale = 0;
        }
    }

    /// Pops stale keys off the top of the heap, so its top is a pending call's.
    fn purge_top(&mut self) {
        while let Some(&top) = self.heap.peek() {
            if self.is_live(top) {
                break;
            }
            self.heap.pop();
            self.stale -= 1;
        }
    }

    fn pending(&self) -> usize {
        self.heap.len() + self.held.len() - self.stale
    }
}

struct Shared {
    now: Rc<dyn Fn() -> Time>,
    inner: RefCell<Inner>,
}

/// The timer engine shared by the reactor and [`Clock`]: a cheap, cloneable handle.
#[derive(Clone)]
pub(crate) struct TimerQueue {
    shared: Rc<Shared>,
}

impl TimerQueue {
    /// An empty queue whose [`DelayedCall::reset`] measures from `now()`.
    pub(crate) fn new(now: Rc<dyn Fn() -> Time>) -> Self {
        TimerQueue {
            shared: Rc::new(Shared {
                now,
                inner: RefCell::new(Inner {
                    heap: BinaryHeap::new(),
                    held: Vec::new(),
                    entries: Slab::new(),
                    live_seq: Vec::new(),
                    next_seq: 0,
                    stale: 0,
                }),
            }),
        }
    }

    /// Schedules `f` to run at `at`, recording the caller's location.
    #[track_caller]
    pub(crate) fn schedule(&self, at: Time, f: Box<dyn FnOnce()>) -> DelayedCall {
        let location = Location::caller();
        let mut inner = self.shared.inner.borrow_mut();
        let slot = inner.entries.insert(Entry {
            time: at,
            callback: Some(f),
            state: State::Pending,
            handle_alive: true,
            location,
        });
        inner.push_key(slot, at);
        drop(inner);
        DelayedCall {
            queue: Rc::clone(&self.shared),
            slot,
        }
    }

    /// When the earliest pending call is due, if any is pending.
    pub(crate) fn next_deadline(&self) -> Option<Time> {
        let mut inner = self.shared.inner.borrow_mut();
        inner.purge_top();
        let top = *inner.heap.peek()?;
        Some(inner.entries[top.slot].time)
    }

    /// Runs every call due at or before `now`, in (time, scheduling order), and returns how
    /// many ran.
    ///
    /// Calls scheduled, reset or delayed while this runs are not run in this pass even if
    /// they are due: as in Twisted's `runUntilCurrent`, they wait for the next iteration. A
    /// panicking call is logged as a [`Failure`] and the pass goes on.
    pub(crate) fn run_due(&self, now: Time) -> usize {
        let limit = self.shared.inner.borrow().next_seq;
        let mut ran = 0;
        loop {
            let mut guard = self.shared.inner.borrow_mut();
            let inner = &mut *guard;
            let Some(&top) = inner.heap.peek() else {
                break;
            };
            if !inner.is_live(top) {
                inner.heap.pop();
                inner.stale -= 1;
                continue;
            }
            let entry = &mut inner.entries[top.slot];
            if entry.time > now {
                break;
            }
            inner.heap.pop();
            if top.seq >= limit {
                // Scheduled during this pass: it waits for the next.
                inner.held.push(top);
                continue;
            }
            // Called is set before the call runs, as Twisted does: cancelling a call from
            // inside itself gives AlreadyCalled.
            entry.state = State::Called;
            let callback = entry.callback.take();
            let location = entry.location;
            if !entry.handle_alive {
                inner.entries.remove(top.slot);
            }
            inner.live_seq[top.slot] = NOT_PENDING;
            drop(guard);
            if let Some(callback) = callback {
                ran += 1;
                run_logged(callback, location);
            }
        }
        let mut inner = self.shared.inner.borrow_mut();
        while let Some(key) = inner.held.pop() {
            inner.heap.push(key);
        }
        ran
    }

    /// How many calls are pending.
    pub(crate) fn len(&self) -> usize {
        self.shared.inner.borrow().pending()
    }

    /// Whether no call is pending.
    #[allow(dead_code, reason = "for the reactor's loop")]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pending calls, in the order they are due.
    pub(crate) fn infos(&self) -> Vec<DelayedCallInfo> {
        let inner = self.shared.inner.borrow();
        let mut keys: Vec<HeapKey> = (inner.heap.iter().chain(&inner.held))
            .copied()
            .filter(|&key| inner.is_live(key))
            .collect();
        keys.sort_unstable_by(|a, b| b.cmp(a));
        keys.iter()
            .map(|key| {
                let entry = &inner.entries[key.slot];
                DelayedCallInfo {
                    time: entry.time,
                    location: entry.location,
                }
            })
            .collect()
    }

    /// Cancels every pending call without running it, and returns how many there were.
    ///
    /// For the reactor's shutdown: a callback that owns a [`DelayedCall`] of its own queue
    /// keeps the queue alive through an `Rc` cycle until it runs, so a reactor that is dropped
    /// with calls pending clears them to free them.
    pub(crate) fn clear(&self) -> usize {
        let mut guard = self.shared.inner.borrow_mut();
        let inner = &mut *guard;
        let mut keys = std::mem::take(&mut inner.heap).into_vec();
        keys.append(&mut inner.held);
        inner.stale = 0;
        let mut callbacks = Vec::with_capacity(keys.len());
        for key in keys {
            if !inner.is_live(key) {
                continue;
            }
            inner.live_seq[key.slot] = NOT_PENDING;
            let entry = &mut inner.entries[key.slot];
            entry.state = State::Cancelled;
            callbacks.extend(entry.callback.take());
            if !entry.handle_alive {
                inner.entries.remove(key.slot);
            }
        }
        drop(guard);
        // Dropped after the borrow ends: a closure may own handles into this queue.
        let cleared = callbacks.len();
        drop(callbacks);
        cleared
    }

    #[cfg(test)]
    fn slots(&self) -> usize {
        self.shared.inner.borrow().entries.len()
    }

    /// Keys held, live or stale.
    #[cfg(test)]
    fn keys(&self) -> usize {
        let inner = self.shared.inner.borrow();
        inner.heap.len() + inner.held.len()
    }
}

/// Runs one delayed call, logging a panic as a [`Failure`] instead of letting it unwind into
/// the loop (Twisted log-wraps every timed call the same way).
fn run_logged(callback: Box<dyn FnOnce()>, location: &'static Location<'static>) {
    if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(callback)) {
        let failure = Failure::from_panic(&*payload);
        crate::log::error!(
            target: "torsion::time",
            "unhandled panic in a delayed call scheduled at {location}: {failure:#}"
        );
    }
}

/// A call scheduled with [`ReactorTime::call_later`] (Twisted's `IDelayedCall`).
///
/// There is one handle per call, so it is not `Clone`. Dropping the handle does **not**
/// cancel the call: it still runs when due, as in Twisted. Keep the handle to
/// [`cancel`](DelayedCall::cancel), [`reset`](DelayedCall::reset) or
/// [`delay`](DelayedCall::delay) the call, or to ask whether it is still
/// [`active`](DelayedCall::active).
///
/// # Examples
///
/// ```
/// use torsion::error::DelayedCallError;
/// use torsion::time::{Clock, ReactorTime};
///
/// let clock = Clock::new();
/// let call = clock.call_later(2.0, || println!("two seconds later"));
/// assert!(call.active());
/// call.delay(1.0).unwrap(); // now due at 3s
/// assert_eq!(call.time().as_secs_f64(), 3.0);
///
/// call.cancel().unwrap();
/// assert!(!call.active());
/// assert_eq!(call.cancel(), Err(DelayedCallError::AlreadyCancelled));
/// clock.advance(5.0); // nothing runs
/// ```
pub struct DelayedCall {
    queue: Rc<Shared>,
    /// This call's slot, which stays ours until the handle drops.
    slot: usize,
}

impl DelayedCall {
    /// Cancels the call so it never runs (Twisted's `cancel`), and drops its closure.
    ///
    /// # Errors
    ///
    /// [`DelayedCallError::AlreadyCalled`] if the call has run or is running now (so a call
    /// cannot cancel itself), [`DelayedCallError::AlreadyCancelled`] if it was cancelled
    /// before.
    pub fn cancel(&self) -> Result<(), DelayedCallError> {
        let mut inner = self.queue.inner.borrow_mut();
        let entry = &mut inner.entries[self.slot];
        check_pending(entry.state)?;
        entry.state = State::Cancelled;
        let callback = entry.callback.take();
        // Its key stays in the heap, stale, until it reaches the top or the heap is compacted.
        inner.live_seq[self.slot] = NOT_PENDING;
        inner.note_stale();
        drop(inner);
        // The closure may own handles into this queue: drop it only after the borrow ends.
        drop(callback);
        Ok(())
    }

    /// Moves the call to `delay` from now (Twisted's `reset`).
    ///
    /// The call then runs after every call already due at the same time.
    ///
    /// # Errors
    ///
    /// [`DelayedCallError::AlreadyCalled`] or [`DelayedCallError::AlreadyCancelled`] if
    /// the call is no longer pending.
    ///
    /// # Panics
    ///
    /// Panics if `delay` is negative or not finite (see [`IntoDelay`]).
    #[track_caller]
    pub fn reset(&self, delay: impl IntoDelay) -> Result<(), DelayedCallError> {
        let delay = delay.into_delay();
        let now = (self.queue.now)();
        self.move_to(|_| now + delay)
    }

    /// Moves the call `by` later than it is now due (Twisted's `delay`).
    ///
    /// # Errors
    ///
    /// [`DelayedCallError::AlreadyCalled`] or [`DelayedCallError::AlreadyCancelled`] if
    /// the call is no longer pending.
    ///
    /// # Panics
    ///
    /// Panics if `by` is negative or not finite (see [`IntoDelay`]).
    #[track_caller]
    pub fn delay(&self, by: impl IntoDelay) -> Result<(), DelayedCallError> {
        let by = by.into_delay();
        self.move_to(|time| time + by)
    }

    fn move_to(&self, new_time: impl FnOnce(Time) -> Time) -> Result<(), DelayedCallError> {
        let mut inner = self.queue.inner.borrow_mut();
        let entry = &mut inner.entries[self.slot];
        check_pending(entry.state)?;
        entry.time = new_time(entry.time);
        let time = entry.time;
        // The new key's fresh sequence number makes the old key stale.
        inner.push_key(self.slot, time);
        inner.note_stale();
        Ok(())
    }

    /// Whether the call is still pending: neither run nor cancelled (Twisted's `active`).
    pub fn active(&self) -> bool {
        self.state() == State::Pending
    }

    /// When the call is due, or was due if it has run (Twisted's `getTime`).
    pub fn time(&self) -> Time {
        self.queue.inner.borrow().entries[self.slot].time
    }

    /// Whether the call has run or is running now (Twisted's `called` attribute).
    pub fn called(&self) -> bool {
        self.state() == State::Called
    }

    /// Whether the call was cancelled (Twisted's `cancelled` attribute).
    pub fn cancelled(&self) -> bool {
        self.state() == State::Cancelled
    }

    fn state(&self) -> State {
        self.queue.inner.borrow().entries[self.slot].state
    }
}

fn check_pending(state: State) -> Result<(), DelayedCallError> {
    match state {
        State::Pending => Ok(()),
        State::Called => Err(DelayedCallError::AlreadyCalled),
        State::Cancelled => Err(DelayedCallError::AlreadyCancelled),
    }
}

impl Drop for DelayedCall {
    fn drop(&mut self) {
        let mut inner = self.queue.inner.borrow_mut();
        let entry = &mut inner.entries[self.slot];
        if entry.state == State::Pending {
            // It still runs; the slot is freed then.
            entry.handle_alive = false;
        } else {
            // A stale key may still name this slot; its sequence number tells it apart from
            // the slot's next occupant.
            inner.entries.remove(self.slot);
        }
    }
}

impl fmt::Debug for DelayedCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.queue.inner.borrow();
        let entry = &inner.entries[self.slot];
        f.debug_struct("DelayedCall")
            .field("time", &format_args!("{}", entry.time))
            .field("state", &entry.state)
            .field("location", &format_args!("{}", entry.location))
            .finish()
    }
}

/// Deterministic time for tests (Twisted's `task.Clock`): a [`ReactorTime`] whose time only
/// moves when [`advance`](Clock::advance) is called.
///
/// It starts at [`Time::ZERO`]. Clones share the same time and calls.
///
/// # Examples
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use torsion::time::{Clock, ReactorTime};
///
/// let clock = Clock::new();
/// let fired = Rc::new(Cell::new(false));
/// let flag = fired.clone();
/// clock.call_later(2, move || flag.set(true));
///
/// clock.advance(1.0);
/// assert!(!fired.get());
/// clock.advance(1.0);
/// assert!(fired.get());
/// assert_eq!(clock.seconds(), 2.0);
/// ```
#[derive(Clone)]
pub struct Clock {
    now: Rc<Cell<Time>>,
    queue: TimerQueue,
}

impl Clock {
    /// A clock at time zero with no calls pending.
    pub fn new() -> Clock {
        let now = Rc::new(Cell::new(Time::ZERO));
        let source = Rc::clone(&now);
        Clock {
            now,
            queue: TimerQueue::new(Rc::new(move || source.get())),
        }
    }

    /// Moves time forward `by` and runs every call that is then due, in order (Twisted's
    /// `Clock.advance`).
    ///
    /// As in Twisted, a call scheduled (or reset) by a callback during the advance also runs
    /// in it if it is due, so `advance` returns only when no due call remains.
    ///
    /// # Panics
    ///
    /// Panics if `by` is negative or not finite (see [`IntoDelay`]).
    #[track_caller]
    pub fn advance(&self, by: impl IntoDelay) {
        let by = by.into_delay();
        self.now.set(self.now.get() + by);
        loop {
            // Read afresh: a callback may itself have advanced the clock.
            let now = self.now.get();
            match self.queue.next_deadline() {
                Some(deadline) if deadline <= now => {
                    self.queue.run_due(now);
                }
                _ => break,
            }
        }
    }

    /// Advances by each step in turn, running due calls after each (Twisted's `Clock.pump`).
    ///
    /// # Panics
    ///
    /// Panics if a step is negative or not finite (see [`IntoDelay`]).
    #[track_caller]
    pub fn pump(&self, steps: &[f64]) {
        for &step in steps {
            self.advance(step);
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

impl ReactorTime for Clock {
    fn now(&self) -> Time {
        self.now.get()
    }

    #[track_caller]
    fn call_later_boxed(&self, delay: Duration, f: Box<dyn FnOnce()>) -> DelayedCall {
        self.queue.schedule(self.now.get() + delay, f)
    }

    fn delayed_calls(&self) -> Vec<DelayedCallInfo> {
        self.queue.infos()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clock")
            .field("now", &format_args!("{}", self.now.get()))
            .field("pending", &self.queue.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A shared log of what ran, in order.
    #[derive(Clone, Default)]
    struct Log(Rc<RefCell<Vec<&'static str>>>);

    impl Log {
        fn push(&self, name: &'static str) -> impl FnOnce() + 'static {
            let log = self.clone();
            move || log.0.borrow_mut().push(name)
        }

        fn take(&self) -> Vec<&'static str> {
            std::mem::take(&mut *self.0.borrow_mut())
        }
    }

    fn secs(t: f64) -> Time {
        Time::from_secs_f64(t)
    }

    /// A queue driven by a hand-set time, as the reactor drives its own.
    fn manual_queue() -> (TimerQueue, Rc<Cell<Time>>) {
        let now = Rc::new(Cell::new(Time::ZERO));
        let source = Rc::clone(&now);
        (TimerQueue::new(Rc::new(move || source.get())), now)
    }

    // CHECKLIST 32–34

    #[test]
    fn clock_starts_at_zero() {
        let clock = Clock::new();
        assert_eq!(clock.now(), Time::ZERO);
        assert_eq!(clock.seconds(), 0.0);
        assert!(clock.delayed_calls().is_empty());
    }

    #[test]
    fn call_later_time_is_now_plus_delay() {
        let clock = Clock::new();
        clock.advance(1.5);
        let call = clock.call_later(2.0, || {});
        assert_eq!(call.time(), secs(3.5));
    }

    #[test]
    fn call_due_at_2_fires_on_second_advance_of_1() {
        let clock = Clock::new();
        let log = Log::default();
        clock.call_later(2, log.push("fired"));
        clock.advance(1);
        assert!(log.take().is_empty());
        clock.advance(1);
        assert_eq!(log.take(), ["fired"]);
    }

    #[test]
    fn active_false_after_firing_or_cancel() {
        let clock = Clock::new();
        let fired = clock.call_later(1, || {});
        let cancelled = clock.call_later(1, || {});
        assert!(fired.active() && cancelled.active());
        cancelled.cancel().unwrap();
        clock.advance(1);
        assert!(!fired.active() && fired.called() && !fired.cancelled());
        assert!(!cancelled.active() && cancelled.cancelled() && !cancelled.called());
    }

    #[test]
    fn cancel_after_call_is_already_called() {
        let clock = Clock::new();
        let call = clock.call_later(1, || {});
        clock.advance(1);
        assert_eq!(call.cancel(), Err(DelayedCallError::AlreadyCalled));
        assert_eq!(call.reset(1), Err(DelayedCallError::AlreadyCalled));
        assert_eq!(call.delay(1), Err(DelayedCallError::AlreadyCalled));
    }

    #[test]
    fn cancel_twice_is_already_cancelled() {
        let clock = Clock::new();
        let call = clock.call_later(1, || {});
        assert_eq!(call.cancel(), Ok(()));
        assert_eq!(call.cancel(), Err(DelayedCallError::AlreadyCancelled));
    }

    #[test]
    fn delay_moves_call_later() {
        let clock = Clock::new();
        let log = Log::default();
        let call = clock.call_later(1, log.push("fired"));
        call.delay(2).unwrap();
        assert_eq!(call.time(), secs(3.0));
        clock.advance(2);
        assert!(log.take().is_empty());
        clock.advance(1);
        assert_eq!(log.take(), ["fired"]);
    }

    #[test]
    fn reset_at_1_by_3_gives_4() {
        let clock = Clock::new();
        let log = Log::default();
        let call = clock.call_later(2, log.push("fired"));
        clock.advance(1);
        call.reset(3).unwrap();
        assert_eq!(call.time(), secs(4.0));
        clock.advance(2);
        assert!(log.take().is_empty());
        clock.advance(1);
        assert_eq!(log.take(), ["fired"]);
    }

    // Ordering

    #[test]
    fn equal_deadlines_fire_in_scheduling_order() {
        let clock = Clock::new();
        let log = Log::default();
        clock.call_later(1, log.push("a"));
        clock.call_later(1, log.push("b"));
        clock.call_later(0.5, log.push("early"));
        clock.call_later(1, log.push("c"));
        clock.advance(1);
        assert_eq!(log.take(), ["early", "a", "b", "c"]);
    }

    #[test]
    fn reset_call_goes_after_others_due_at_the_same_time() {
        let clock = Clock::new();
        let log = Log::default();
        let a = clock.call_later(1, log.push("a"));
        clock.call_later(1, log.push("b"));
        a.reset(1).unwrap();
        clock.advance(1);
        assert_eq!(log.take(), ["b", "a"]);
    }

    #[test]
    fn ten_thousand_calls_in_random_order_fire_in_time_order() {
        let clock = Clock::new();
        let fired = Rc::new(RefCell::new(Vec::new()));
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut expected = Vec::new();
        for i in 0..10_000u32 {
            // xorshift64: a fixed pseudo-random sequence, with many equal deadlines.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = Duration::from_millis(state % 2_000);
            expected.push((at, i));
            let fired = Rc::clone(&fired);
            clock.call_later(at, move || fired.borrow_mut().push((at, i)));
        }
        expected.sort();
        clock.advance(1);
        assert_eq!(clock.delayed_calls().len(), 10_000 - fired.borrow().len());
        clock.advance(1);
        assert_eq!(*fired.borrow(), expected);
        assert_eq!(clock.queue.slots(), 0);
    }

    /// xorshift64: a fixed pseudo-random sequence for the randomised tests.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn random_operations_match_a_simple_model() {
        #[derive(Clone, Copy)]
        struct Model {
            due: u64,
            seq: u64,
            state: State,
        }
        for seed in 1..=100u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let clock = Clock::new();
            let fired = Rc::new(RefCell::new(Vec::new()));
            let mut expected = Vec::new();
            let mut handles: Vec<Option<DelayedCall>> = Vec::new();
            let mut model: Vec<Model> = Vec::new();
            let (mut now, mut seq) = (0u64, 0u64);
            let ms = Duration::from_millis;
            for _ in 0..400 {
                let target = if handles.is_empty() {
                    None
                } else {
                    let id = rng.below(handles.len() as u64) as usize;
                    handles[id].as_ref().map(|call| (id, call))
                };
                let outcome = |m: &Model| match m.state {
                    State::Pending => Ok(()),
                    State::Called => Err(DelayedCallError::AlreadyCalled),
                    State::Cancelled => Err(DelayedCallError::AlreadyCancelled),
                };
                match (rng.below(12), target) {
                    (0..=3, _) | (_, None) => {
                        let delay = rng.below(50);
                        let id = model.len();
                        model.push(Model {
                            due: now + delay,
                            seq,
                            state: State::Pending,
                        });
                        seq += 1;
                        let fired = Rc::clone(&fired);
                        let call = clock.call_later(ms(delay), move || fired.borrow_mut().push(id));
                        handles.push(Some(call));
                    }
                    (4, Some((id, call))) => {
                        assert_eq!(call.cancel(), outcome(&model[id]));
                        if model[id].state == State::Pending {
                            model[id].state = State::Cancelled;
                        }
                    }
                    (5, Some((id, call))) => {
                        let delay = rng.below(50);
                        assert_eq!(call.reset(ms(delay)), outcome(&model[id]));
                        if model[id].state == State::Pending {
                            (model[id].due, model[id].seq) = (now + delay, seq);
                            seq += 1;
                        }
                    }
                    (6, Some((id, call))) => {
                        let by = rng.below(50);
                        assert_eq!(call.delay(ms(by)), outcome(&model[id]));
                        if model[id].state == State::Pending {
                            (model[id].due, model[id].seq) = (model[id].due + by, seq);
                            seq += 1;
                        }
                    }
                    (7, Some((id, _))) => handles[id] = None,
                    _ => {
                        now += rng.below(30);
                        clock.advance(ms(now) - clock.now().as_duration());
                        let mut due: Vec<usize> = (0..model.len())
                            .filter(|&i| model[i].state == State::Pending && model[i].due <= now)
                            .collect();
                        due.sort_by_key(|&i| (model[i].due, model[i].seq));
                        for i in due {
                            model[i].state = State::Called;
                            expected.push(i);
                        }
                        assert_eq!(*fired.borrow(), expected, "seed {seed}");
                    }
                }
                for (id, call) in handles.iter().enumerate() {
                    if let Some(call) = call {
                        assert_eq!(call.time(), Time::from_duration(ms(model[id].due)));
                        assert_eq!(call.active(), model[id].state == State::Pending);
                    }
                }
                let mut pending: Vec<_> =
                    model.iter().filter(|m| m.state == State::Pending).collect();
                pending.sort_by_key(|m| (m.due, m.seq));
                let listed: Vec<Time> = clock.delayed_calls().iter().map(|c| c.time).collect();
                let wanted: Vec<Time> = pending
                    .iter()
                    .map(|m| Time::from_duration(ms(m.due)))
                    .collect();
                assert_eq!(listed, wanted, "seed {seed}");
            }
            clock.advance(10);
            drop(handles);
            assert_eq!((clock.queue.len(), clock.queue.slots()), (0, 0));
        }
    }

    // Re-entrancy

    #[test]
    fn cancel_from_inside_its_own_callback_is_already_called() {
        let clock = Clock::new();
        let me: Rc<RefCell<Option<DelayedCall>>> = Rc::default();
        let result = Rc::new(Cell::new(None));
        let (me2, result2) = (Rc::clone(&me), Rc::clone(&result));
        let call = clock.call_later(1, move || {
            let call = me2.borrow();
            let call = call.as_ref().unwrap();
            assert!(call.called() && !call.active());
            result2.set(Some(call.cancel()));
        });
        *me.borrow_mut() = Some(call);
        clock.advance(1);
        assert_eq!(result.get(), Some(Err(DelayedCallError::AlreadyCalled)));
    }

    #[test]
    fn clock_runs_a_zero_delay_call_scheduled_during_advance_in_the_same_advance() {
        let clock = Clock::new();
        let log = Log::default();
        let (inner_clock, inner_log) = (clock.clone(), log.clone());
        clock.call_later(1, move || {
            inner_log.0.borrow_mut().push("outer");
            inner_clock.call_later(0, inner_log.push("inner"));
        });
        clock.advance(1);
        assert_eq!(log.take(), ["outer", "inner"]);
    }

    #[test]
    fn run_due_leaves_a_zero_delay_call_scheduled_during_the_pass_for_the_next() {
        let (queue, now) = manual_queue();
        let log = Log::default();
        let (q, l) = (queue.clone(), log.clone());
        let n = Rc::clone(&now);
        let _outer = queue.schedule(secs(1.0), {
            Box::new(move || {
                l.0.borrow_mut().push("outer");
                let at = n.get();
                q.schedule(at, Box::new(l.push("inner")));
            })
        });
        queue.schedule(secs(1.0), Box::new(log.push("sibling")));
        now.set(secs(1.0));
        assert_eq!(queue.run_due(secs(1.0)), 2);
        assert_eq!(log.take(), ["outer", "sibling"]);
        assert_eq!(queue.next_deadline(), Some(secs(1.0)));
        assert_eq!(queue.run_due(secs(1.0)), 1);
        assert_eq!(log.take(), ["inner"]);
        assert_eq!(queue.len(), 0);
        assert!(queue.is_empty());
    }

    #[test]
    fn run_due_skips_a_call_scheduled_into_the_past_during_the_pass() {
        // Even a call placed ahead of the remaining due ones waits for the next pass, and
        // the ones behind it still run in this one.
        let (queue, _now) = manual_queue();
        let log = Log::default();
        let (q, l) = (queue.clone(), log.clone());
        queue.schedule(
            secs(1.0),
            Box::new(move || {
                l.0.borrow_mut().push("a");
                q.schedule(secs(1.5), Box::new(l.push("past")));
            }),
        );
        queue.schedule(secs(2.0), Box::new(log.push("b")));
        queue.schedule(secs(2.0), Box::new(log.push("c")));
        assert_eq!(queue.run_due(secs(2.0)), 3);
        assert_eq!(log.take(), ["a", "b", "c"]);
        assert_eq!(queue.run_due(secs(2.0)), 1);
        assert_eq!(log.take(), ["past"]);
    }

    #[test]
    fn run_due_leaves_a_call_reset_during_the_pass_for_the_next() {
        let (queue, now) = manual_queue();
        now.set(secs(1.0));
        let log = Log::default();
        let later: Rc<RefCell<Option<DelayedCall>>> = Rc::default();
        let (l, later2) = (log.clone(), Rc::clone(&later));
        queue.schedule(
            secs(1.0),
            Box::new(move || {
                l.0.borrow_mut().push("a");
                later2.borrow().as_ref().unwrap().reset(0).unwrap();
            }),
        );
        *later.borrow_mut() = Some(queue.schedule(secs(1.0), Box::new(log.push("b"))));
        assert_eq!(queue.run_due(secs(1.0)), 1);
        assert_eq!(log.take(), ["a"]);
        assert_eq!(queue.run_due(secs(1.0)), 1);
        assert_eq!(log.take(), ["b"]);
    }

    #[test]
    fn nested_advance_from_a_callback_runs_each_due_call_once_in_order() {
        let clock = Clock::new();
        let log = Log::default();
        let (c, l) = (clock.clone(), log.clone());
        clock.call_later(1, move || {
            l.0.borrow_mut().push("a");
            c.call_later(0, l.push("scheduled by a"));
            c.advance(1);
        });
        clock.call_later(1, log.push("b"));
        clock.call_later(2, log.push("c"));
        clock.call_later(3, log.push("d"));
        clock.advance(1);
        assert_eq!(log.take(), ["a", "b", "scheduled by a", "c"]);
        assert_eq!(clock.now(), secs(2.0));
        clock.advance(1);
        assert_eq!(log.take(), ["d"]);
    }

    #[test]
    fn cancel_from_an_earlier_call_in_the_same_pass_prevents_it() {
        let clock = Clock::new();
        let log = Log::default();
        let victim: Rc<RefCell<Option<DelayedCall>>> = Rc::default();
        let (l, v) = (log.clone(), Rc::clone(&victim));
        clock.call_later(1, move || {
            l.0.borrow_mut().push("first");
            v.borrow().as_ref().unwrap().cancel().unwrap();
        });
        *victim.borrow_mut() = Some(clock.call_later(1, log.push("victim")));
        clock.call_later(1, log.push("last"));
        clock.advance(1);
        assert_eq!(log.take(), ["first", "last"]);
        assert!(victim.borrow().as_ref().unwrap().cancelled());
    }

    #[test]
    fn callback_may_drop_handles_and_reset_others() {
        let clock = Clock::new();
        let log = Log::default();
        let handles: Rc<RefCell<Vec<DelayedCall>>> = Rc::default();
        handles
            .borrow_mut()
            .push(clock.call_later(2, log.push("moved")));
        handles
            .borrow_mut()
            .push(clock.call_later(5, log.push("dropped")));
        let (l, h) = (log.clone(), Rc::clone(&handles));
        clock.call_later(1, move || {
            l.0.borrow_mut().push("first");
            let mut h = h.borrow_mut();
            h[0].delay(1).unwrap();
            h.pop(); // dropping a pending handle does not cancel
        });
        clock.advance(2);
        assert_eq!(log.take(), ["first"]);
        clock.advance(3);
        assert_eq!(log.take(), ["moved", "dropped"]);
    }

    #[test]
    fn cancelling_a_call_whose_closure_owns_handles_does_not_reenter() {
        // The cancelled closure is dropped after the queue's borrow ends: its handle's Drop
        // and the queue see no conflict.
        let clock = Clock::new();
        let owned = clock.call_later(5, || {});
        let owner = clock.call_later(1, move || drop(owned));
        owner.cancel().unwrap();
        drop(owner);
        assert_eq!(clock.delayed_calls().len(), 1);
        clock.advance(5);
        assert_eq!(clock.queue.slots(), 0);
    }

    // Stale keys of cancelled and moved calls

    #[test]
    fn cancelled_call_does_not_count_or_set_the_next_deadline() {
        let (queue, _now) = manual_queue();
        let first = queue.schedule(secs(1.0), Box::new(|| {}));
        let _second = queue.schedule(secs(2.0), Box::new(|| {}));
        first.cancel().unwrap();
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.infos().len(), 1);
        assert_eq!(queue.next_deadline(), Some(secs(2.0)));
        assert_eq!(queue.run_due(secs(1.0)), 0);
    }

    #[test]
    fn reused_slot_is_not_run_at_the_stale_key_of_its_previous_call() {
        let clock = Clock::new();
        let log = Log::default();
        let old = clock.call_later(1, log.push("old"));
        old.cancel().unwrap();
        drop(old); // frees the slot; its key stays in the map
        let _new = clock.call_later(5, log.push("new"));
        assert_eq!(clock.queue.slots(), 1);
        clock.advance(1);
        assert!(log.take().is_empty());
        clock.advance(4);
        assert_eq!(log.take(), ["new"]);
    }

    #[test]
    fn map_is_compacted_when_cancelled_keys_dominate() {
        let clock = Clock::new();
        let log = Log::default();
        let calls: Vec<_> = (0..1_000u64)
            .map(|i| clock.call_later(Duration::from_millis(1 + i % 37), log.push("ran")))
            .collect();
        for call in &calls[100..] {
            call.cancel().unwrap();
        }
        assert_eq!(clock.queue.len(), 100);
        assert!(clock.queue.keys() <= 2 * 100 + COMPACT_AFTER + 1);
        for call in &calls[..100] {
            for _ in 0..10 {
                call.delay(0.001).unwrap();
            }
        }
        assert!(clock.queue.keys() <= 2 * 100 + COMPACT_AFTER + 1);
        clock.advance(1);
        assert_eq!(log.take().len(), 100);
        assert_eq!(clock.queue.keys(), 0);
        drop(calls);
        assert_eq!(clock.queue.slots(), 0);
    }

    // Failures and lifetimes

    #[test]
    fn panicking_call_is_caught_and_logged_and_the_next_still_runs() {
        let captured = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_ansi(false)
            .finish();
        let clock = Clock::new();
        let log = Log::default();
        tracing::subscriber::with_default(subscriber, || {
            clock.call_later(1, || panic!("boom at one"));
            clock.call_later(1, log.push("next"));
            clock.advance(1);
        });
        assert_eq!(log.take(), ["next"]);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("ERROR"), "{text}");
        assert!(text.contains("boom at one"), "{text}");
        assert!(text.contains(file!()), "{text}");
    }

    #[derive(Clone, Default)]
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    #[test]
    fn dropping_the_handle_does_not_cancel() {
        let clock = Clock::new();
        let log = Log::default();
        drop(clock.call_later(1, log.push("fired")));
        assert_eq!(clock.delayed_calls().len(), 1);
        clock.advance(1);
        assert_eq!(log.take(), ["fired"]);
        assert_eq!(clock.queue.slots(), 0);
    }

    #[test]
    fn finished_slot_is_kept_while_its_handle_lives() {
        let clock = Clock::new();
        let fired = clock.call_later(1, || {});
        let cancelled = clock.call_later(1, || {});
        cancelled.cancel().unwrap();
        clock.advance(1);
        assert_eq!(clock.queue.slots(), 2);
        assert!(fired.called() && cancelled.cancelled());
        drop(fired);
        drop(cancelled);
        assert_eq!(clock.queue.slots(), 0);
    }

    /// Sets a flag when dropped, to see whether a closure was run or merely dropped.
    struct DropFlag(Rc<Cell<bool>>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }

    #[test]
    fn cancel_drops_the_closure_without_running_it() {
        let clock = Clock::new();
        let (ran, dropped) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(false)));
        let (r, flag) = (Rc::clone(&ran), DropFlag(Rc::clone(&dropped)));
        let call = clock.call_later(1, move || {
            let _flag = flag;
            r.set(true);
        });
        call.cancel().unwrap();
        assert!(dropped.get() && !ran.get());
    }

    #[test]
    fn dropping_the_queue_drops_pending_closures_without_running_them() {
        let (ran, dropped) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(false)));
        {
            let clock = Clock::new();
            let (r, flag) = (Rc::clone(&ran), DropFlag(Rc::clone(&dropped)));
            clock.call_later(1, move || {
                let _flag = flag;
                r.set(true);
            });
        }
        assert!(dropped.get() && !ran.get());
    }

    #[test]
    fn clear_cancels_pending_calls_and_breaks_handle_cycles() {
        let clock = Clock::new();
        let (ran, dropped) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(false)));
        let me: Rc<RefCell<Option<DelayedCall>>> = Rc::default();
        let (r, flag, me2) = (
            Rc::clone(&ran),
            DropFlag(Rc::clone(&dropped)),
            Rc::clone(&me),
        );
        let call = clock.call_later(1, move || {
            let _keep = (flag, me2);
            r.set(true);
        });
        *me.borrow_mut() = Some(call);
        drop(me); // now only the closure owns its own handle
        assert_eq!(clock.queue.clear(), 1);
        assert!(dropped.get() && !ran.get());
        assert_eq!(clock.queue.slots(), 0);
        clock.advance(1);
        assert!(!ran.get());
    }

    #[test]
    fn reset_or_delay_of_a_cancelled_call_is_already_cancelled() {
        let clock = Clock::new();
        let call = clock.call_later(1, || {});
        call.cancel().unwrap();
        assert_eq!(call.reset(1), Err(DelayedCallError::AlreadyCancelled));
        assert_eq!(call.delay(1), Err(DelayedCallError::AlreadyCancelled));
    }

    // Introspection

    #[test]
    fn delayed_calls_lists_pending_ones_with_their_locations() {
        let clock = Clock::new();
        let later_line = line!() + 1;
        let later = clock.call_later(3, || {});
        let sooner_line = line!() + 1;
        let sooner = clock.call_later(1, || {});
        let gone = clock.call_later(2, || {});
        gone.cancel().unwrap();
        let dyn_clock: &dyn ReactorTime = &clock;
        let dyn_line = line!() + 1;
        let _via_dyn = dyn_clock.call_later_boxed(Duration::from_secs(4), Box::new(|| {}));
        let calls = clock.delayed_calls();
        let seen: Vec<_> = calls.iter().map(|c| (c.time, c.location.line())).collect();
        assert_eq!(
            seen,
            [
                (secs(1.0), sooner_line),
                (secs(3.0), later_line),
                (secs(4.0), dyn_line)
            ]
        );
        assert!(calls.iter().all(|c| c.location.file() == file!()));
        drop((later, sooner));
    }

    #[test]
    fn debug_shows_time_state_and_location() {
        let clock = Clock::new();
        let call = clock.call_later(1.5, || {});
        let text = format!("{call:?}");
        assert!(text.contains("time: 1.5s"), "{text}");
        assert!(text.contains("Pending"), "{text}");
        assert!(text.contains(file!()), "{text}");
        assert_eq!(format!("{clock:?}"), "Clock { now: 0s, pending: 1 }");
    }

    // Time and delays

    #[test]
    fn delays_accept_f64_duration_and_integers() {
        let clock = Clock::new();
        assert_eq!(clock.call_later(0.25, || {}).time(), secs(0.25));
        assert_eq!(
            clock.call_later(Duration::from_millis(1500), || {}).time(),
            secs(1.5)
        );
        assert_eq!(clock.call_later(2u64, || {}).time(), secs(2.0));
        assert_eq!(clock.call_later(3u32, || {}).time(), secs(3.0));
        assert_eq!(clock.call_later(4, || {}).time(), secs(4.0));
        clock.pump(&[0.5, 0.5, 1.0]);
        assert_eq!(clock.now(), secs(2.0));
        assert_eq!(clock.delayed_calls().len(), 2);
    }

    #[test]
    #[should_panic(expected = "delay must be a finite, non-negative number of seconds, got -1")]
    fn negative_f64_delay_panics() {
        Clock::new().call_later(-1.0, || {});
    }

    #[test]
    #[should_panic(expected = "delay must be a finite, non-negative number of seconds, got -1")]
    fn negative_i32_delay_panics() {
        Clock::new().call_later(-1, || {});
    }

    #[test]
    #[should_panic(expected = "got NaN")]
    fn nan_delay_panics() {
        Clock::new().advance(f64::NAN);
    }

    #[test]
    #[should_panic(expected = "got inf")]
    fn infinite_delay_panics() {
        let clock = Clock::new();
        let call = clock.call_later(1, || {});
        let _ = call.reset(f64::INFINITY);
    }

    #[test]
    #[should_panic(expected = "got 1000000000000000000000000000000")]
    fn delay_too_large_for_a_duration_panics() {
        Time::from_secs_f64(1e30);
    }

    #[test]
    fn time_displays_exact_seconds() {
        assert_eq!(Time::ZERO.to_string(), "0s");
        assert_eq!(secs(1.5).to_string(), "1.5s");
        assert_eq!(
            Time::from_duration(Duration::from_micros(1)).to_string(),
            "0.000001s"
        );
        assert_eq!(
            Time::from_duration(Duration::new(12, 340_000_000)).to_string(),
            "12.34s"
        );
        assert_eq!(secs(3.0).saturating_sub(secs(1.0)), Duration::from_secs(2));
        assert_eq!(secs(1.0).saturating_sub(secs(3.0)), Duration::ZERO);
        assert_eq!(secs(2.5).as_duration(), Duration::from_millis(2500));
    }
}
