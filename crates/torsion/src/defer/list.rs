//! Combining several Deferreds into one: [`DeferredList`], [`gather_results`] and [`race`]
//! (Twisted's `DeferredList`, `gatherResults` and `race`).
//!
//! Each input is consumed: a step is added to its chain that records its result. Cancelling
//! the combined Deferred cancels every input that has not fired yet.
//!
//! Invariant: no `RefCell` borrow is held while a Deferred is fired or cancelled (both run
//! user code synchronously).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::{Deferred, DeferredHandle, Failure, Resolver};
use crate::error::{Cancelled, FailureGroup, FirstError};

/// Waits for several Deferreds and combines their results (Twisted's `DeferredList`).
///
/// Built with [`DeferredList::new`], configured with
/// [`consume_errors`](DeferredList::consume_errors) and
/// [`fire_on_one_errback`](DeferredList::fire_on_one_errback), then turned into one
/// Deferred by one of:
///
/// | method | Twisted | result |
/// |---|---|---|
/// | [`into_deferred`](DeferredList::into_deferred) | `DeferredList(ds)` | `Vec<Result<T, Failure>>`, in input order |
/// | [`first_callback`](DeferredList::first_callback) | `fireOnOneCallback=True` | `(index, value)` of the first success |
/// | [`gather`](DeferredList::gather) | `gatherResults(ds)` | `Vec<T>`, or [`FirstError`] |
///
/// Each input is consumed. Its result is moved into the combined result; a failure is also
/// left in the input's own chain unless [`consume_errors`](DeferredList::consume_errors) is
/// set, so that, as in Twisted, a failure nobody asked to consume is still reported as
/// "Unhandled error in Deferred" when the input goes. Set `consume_errors(true)` when the
/// combined result is where failures get handled (the usual case).
///
/// Cancelling the combined Deferred cancels every input that has not fired; the combined
/// Deferred then fires as those cancellations decide (with `into_deferred`, a list whose
/// cancelled entries are `Err(Cancelled)`, as in Twisted). The `Cancelled` failures of inputs
/// cancelled this way are always consumed: the cancel was asked for, so they are not
/// reported as unhandled.
///
/// The list holds its inputs only through the steps it added to them: an input that nothing
/// can fire any more (its every [`Resolver`] dropped) is freed, and the list then never
/// fires, as in Twisted.
///
/// # Examples
///
/// ```
/// use torsion::defer::{Deferred, DeferredList};
/// use torsion::Failure;
///
/// let (first, d1) = Deferred::<u32>::new();
/// let (second, d2) = Deferred::<u32>::new();
/// let mut all = DeferredList::new(vec![d1, d2]).consume_errors(true).into_deferred();
/// second.errback(Failure::msg("no luck"));
/// assert!(all.take_result().is_none());
/// first.callback(1);
/// // Input order, not firing order.
/// let results = all.take_result().unwrap().unwrap();
/// assert_eq!(*results[0].as_ref().unwrap(), 1);
/// assert!(results[1].is_err());
/// ```
#[must_use = "a DeferredList does nothing until turned into a Deferred"]
pub struct DeferredList<T> {
    inputs: Vec<Deferred<T>>,
    fire_on_one_errback: bool,
    consume_errors: bool,
}

impl<T> std::fmt::Debug for DeferredList<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredList")
            .field("inputs", &self.inputs.len())
            .field("fire_on_one_errback", &self.fire_on_one_errback)
            .field("consume_errors", &self.consume_errors)
            .finish()
    }
}

impl<T: 'static> DeferredList<T> {
    /// A list over `ds`, with Twisted's defaults: no `fire_on_one_errback`, no
    /// `consume_errors` (Twisted's `DeferredList(deferredList)`).
    pub fn new(ds: Vec<Deferred<T>>) -> DeferredList<T> {
        DeferredList {
            inputs: ds,
            fire_on_one_errback: false,
            consume_errors: false,
        }
    }

    /// Whether to consume the inputs' failures (Twisted's `consumeErrors`, default
    /// `false`). When `false`, a failed input keeps its failure in its own chain after the
    /// list recorded it, and it is reported as unhandled when the input goes; when `true`,
    /// the list's record is the only one.
    pub fn consume_errors(mut self, consume: bool) -> DeferredList<T> {
        self.consume_errors = consume;
        self
    }

    /// Whether the first failure fails the whole list at once with a [`FirstError`]
    /// naming the input's index and failure (Twisted's `fireOnOneErrback`, default `false`).
    /// The inputs still pending are left alone (not cancelled), as in Twisted.
    pub fn fire_on_one_errback(mut self, fire: bool) -> DeferredList<T> {
        self.fire_on_one_errback = fire;
        self
    }

    /// The Deferred of every input's result, in input order whatever the firing order
    /// (Twisted's `DeferredList` result `[(success, result)]`, with `Result` standing for
    /// the pair). An empty list fires at once with `vec![]`. With
    /// [`fire_on_one_errback`](DeferredList::fire_on_one_errback), the first failure fails
    /// it with a [`FirstError`] instead (and when it succeeds, every entry is `Ok`).
    #[track_caller]
    pub fn into_deferred(self) -> Deferred<Vec<Result<T, Failure>>> {
        if self.inputs.is_empty() {
            return Deferred::succeed(Vec::new());
        }
        let fire_on_one_errback = self.fire_on_one_errback;
        combine(
            self.inputs,
            Options {
                consume_errors: self.consume_errors,
                cancel_rest_on_success: false,
            },
            move |tally: &mut Tally<T>, index, result| match result {
                Err(failure) if fire_on_one_errback => Some(Err(first_error(failure, index))),
                result => {
                    tally.record(index, result);
                    tally.complete().then(|| Ok(tally.drain().collect()))
                }
            },
        )
    }

    /// The Deferred of the first input to succeed, as `(index, value)` (Twisted's
    /// `fireOnOneCallback=True`, which gives `(value, index)`). The other inputs are left
    /// alone (use [`race`] to cancel them).
    ///
    /// When every input fails, Twisted fires with the plain list of failures; here the
    /// Deferred fails with a [`FailureGroup`] of them in input order, as [`race`] does. An
    /// empty list therefore fails at once with an empty `FailureGroup`. With
    /// [`fire_on_one_errback`](DeferredList::fire_on_one_errback), the first failure fails
    /// it with a [`FirstError`] instead.
    #[track_caller]
    pub fn first_callback(self) -> Deferred<(usize, T)> {
        if self.inputs.is_empty() {
            return Deferred::fail(FailureGroup {
                failures: Vec::new(),
            });
        }
        let fire = self.fire_on_one_errback;
        combine(
            self.inputs,
            Options {
                consume_errors: self.consume_errors,
                cancel_rest_on_success: false,
            },
            move |tally: &mut Tally<T>, index, result| first_success(fire, tally, index, result),
        )
    }

    /// The Deferred of every input's value, in input order; the first failure fails it
    /// with a [`FirstError`] naming the input's index and failure (Twisted's
    /// `gatherResults(ds, consumeErrors)`, which is a `DeferredList` with
    /// `fireOnOneErrback=True`). An empty list fires at once with `vec![]`. The other inputs
    /// are left alone after a failure. [`gather_results`] is the short form with
    /// Twisted's default `consume_errors(false)`.
    #[track_caller]
    pub fn gather(self) -> Deferred<Vec<T>> {
        if self.inputs.is_empty() {
            return Deferred::succeed(Vec::new());
        }
        combine(
            self.inputs,
            Options {
                consume_errors: self.consume_errors,
                cancel_rest_on_success: false,
            },
            |tally: &mut Tally<T>, index, result| match result {
                Err(failure) => Some(Err(first_error(failure, index))),
                ok => {
                    tally.record(index, ok);
                    tally
                        .complete()
                        .then(|| Ok(tally.drain().filter_map(Result::ok).collect()))
                }
            },
        )
    }
}

/// Waits for every Deferred and gives their values in input order; the first failure gives
/// a [`FirstError`] with the input's index and failure (Twisted's `gatherResults`).
///
/// Short for `DeferredList::new(ds).gather()`: failures are not consumed, as with Twisted's
/// default `consumeErrors=False`, so a failed input is also reported as unhandled when it
/// goes. For `consumeErrors=True` write `DeferredList::new(ds).consume_errors(true).gather()`.
/// An empty list fires at once with `vec![]`. Cancelling the result cancels every input that
/// has not fired (and so it fails with a `FirstError` wrapping the first input's
/// [`Cancelled`]).
///
/// # Examples
///
/// ```
/// use torsion::defer::{Deferred, gather_results, succeed};
///
/// let (later, d) = Deferred::<&str>::new();
/// let mut all = gather_results(vec![succeed("a"), d, succeed("c")]);
/// assert!(all.take_result().is_none());
/// later.callback("b");
/// assert_eq!(all.take_result().unwrap().unwrap(), ["a", "b", "c"]);
/// ```
#[track_caller]
pub fn gather_results<T: 'static>(ds: Vec<Deferred<T>>) -> Deferred<Vec<T>> {
    DeferredList::new(ds).gather()
}

/// Gives the first input to succeed as `(index, value)` and cancels the others (Twisted's
/// `race`).
///
/// When every input fails, it fails with a [`FailureGroup`] of their failures in input
/// order; an empty list fails at once with an empty `FailureGroup` (Twisted's `race` never
/// fires then). Every input's failure is consumed, as in Twisted: it ends up in the
/// `FailureGroup` or, for the inputs cancelled by the win, is expected. Cancelling the race
/// cancels every input.
///
/// # Examples
///
/// ```
/// use torsion::defer::{Deferred, race};
///
/// let (slow, d1) = Deferred::<&str>::new();
/// let (fast, d2) = Deferred::<&str>::new();
/// let loser = d1.handle();
/// let mut winner = race(vec![d1, d2]);
/// fast.callback("fast");
/// assert_eq!(winner.take_result().unwrap().unwrap(), (1, "fast"));
/// assert!(loser.is_fired(), "the other input was cancelled");
/// # drop(slow);
/// ```
#[track_caller]
pub fn race<T: 'static>(ds: Vec<Deferred<T>>) -> Deferred<(usize, T)> {
    if ds.is_empty() {
        return Deferred::fail(FailureGroup {
            failures: Vec::new(),
        });
    }
    combine(
        ds,
        Options {
            consume_errors: true,
            cancel_rest_on_success: true,
        },
        |tally: &mut Tally<T>, index, result| first_success(false, tally, index, result),
    )
}

fn first_error(failure: Failure, index: usize) -> Failure {
    Failure::new(FirstError { failure, index })
}

/// The rule of `first_callback` and `race`: the first success wins; all failing gives a
/// `FailureGroup`, or the first failure a `FirstError` with `fire_on_one_errback`.
fn first_success<T: 'static>(
    fire_on_one_errback: bool,
    tally: &mut Tally<T>,
    index: usize,
    result: Result<T, Failure>,
) -> Decision<(usize, T)> {
    match result {
        Ok(value) => Some(Ok((index, value))),
        Err(failure) if fire_on_one_errback => Some(Err(first_error(failure, index))),
        failed => {
            tally.record(index, failed);
            tally.complete().then(|| {
                Err(Failure::new(FailureGroup {
                    failures: tally.drain().filter_map(Result::err).collect(),
                }))
            })
        }
    }
}

/// What one input's result decides: `None` to wait for more, or the combined result.
type Decision<O> = Option<Result<O, Failure>>;

/// The inputs' results recorded so far.
struct Tally<T> {
    slots: Vec<Option<Result<T, Failure>>>,
    pending: usize,
    /// The combined Deferred has been fired (or its result decided); later results are
    /// ignored.
    done: bool,
}

impl<T> Tally<T> {
    fn record(&mut self, index: usize, result: Result<T, Failure>) {
        self.slots[index] = Some(result);
        self.pending -= 1;
    }

    fn complete(&self) -> bool {
        self.pending == 0
    }

    /// Every recorded result, in input order.
    fn drain(&mut self) -> impl Iterator<Item = Result<T, Failure>> + '_ {
        self.slots.drain(..).flatten()
    }
}

struct Options {
    consume_errors: bool,
    /// Cancel every other input when one succeeds and decides the result (`race`).
    cancel_rest_on_success: bool,
}

/// The state shared by the steps added to the inputs.
struct Core<T, O, F> {
    tally: RefCell<Tally<T>>,
    resolver: Resolver<O>,
    handles: Vec<DeferredHandle>,
    /// Set once the combined Deferred is cancelled: the inputs' `Cancelled` failures are
    /// then consumed.
    cancelled: Rc<Cell<bool>>,
    options: Options,
    /// Records one input's result and says whether that decides the combined result.
    decide: F,
}

impl<T, O, F> Core<T, O, F>
where
    T: 'static,
    O: 'static,
    F: Fn(&mut Tally<T>, usize, Result<T, Failure>) -> Decision<O>,
{
    /// Whether an input's failure stops at the list: with `consume_errors`, or when it is
    /// the `Cancelled` of a cancel asked for through the list.
    fn consumes(&self, failure: &Failure) -> bool {
        self.options.consume_errors || (self.cancelled.get() && failure.check::<Cancelled>())
    }

    /// Handles input `index`'s result; what it returns is what the input's chain carries on
    /// with: the failure again unless it is consumed.
    fn settle(&self, index: usize, result: Result<T, Failure>) -> Result<(), Failure> {
        let carry_on = match &result {
            Err(failure) if !self.consumes(failure) => Err(failure.clone()),
            _ => Ok(()),
        };
        let decided = {
            let mut tally = self.tally.borrow_mut();
            if tally.done {
                Err(result)
            } else {
                let decided = (self.decide)(&mut tally, index, result);
                tally.done = decided.is_some();
                Ok(decided)
            }
        };
        match decided {
            // Late: dropped here, outside the borrow.
            Err(late) => drop(late),
            Ok(None) => {}
            Ok(Some(outcome)) => {
                if self.options.cancel_rest_on_success && outcome.is_ok() {
                    for (i, handle) in self.handles.iter().enumerate() {
                        if i != index {
                            handle.cancel();
                        }
                    }
                }
                // The combined Deferred's only firing end is this one; after a cancel of it,
                // a late fire is dropped, so neither of these can fail.
                let fired = match outcome {
                    Ok(value) => self.resolver.try_callback(value),
                    Err(failure) => self.resolver.try_errback(failure),
                };
                debug_assert!(fired.is_ok());
            }
        }
        carry_on
    }
}

/// Adds a recording step to every input and returns the combined Deferred, whose canceller
/// cancels every input. `inputs` must not be empty.
#[track_caller]
fn combine<T, O, F>(inputs: Vec<Deferred<T>>, options: Options, decide: F) -> Deferred<O>
where
    T: 'static,
    O: 'static,
    F: Fn(&mut Tally<T>, usize, Result<T, Failure>) -> Decision<O> + 'static,
{
    let handles: Vec<DeferredHandle> = inputs.iter().map(Deferred::handle).collect();
    let cancelled = Rc::new(Cell::new(false));
    let (resolver, combined) = {
        let handles = handles.clone();
        let cancelled = cancelled.clone();
        Deferred::with_canceller(move |_: Resolver<O>| {
            cancelled.set(true);
            for handle in &handles {
                handle.cancel();
            }
        })
    };
    let n = inputs.len();
    let core = Rc::new(Core {
        tally: RefCell::new(Tally {
            slots: (0..n).map(|_| None).collect(),
            pending: n,
            done: false,
        }),
        resolver,
        handles,
        cancelled,
        options,
        decide,
    });
    for (index, d) in inputs.into_iter().enumerate() {
        let core = core.clone();
        drop(d.add_both(move |result| core.settle(index, result)));
    }
    combined
}
