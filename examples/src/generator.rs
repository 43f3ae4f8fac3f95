//! Python's generators for the generator demos of Part 17 (`inline-callbacks/gen-1.py` to
//! `gen-4.py`) and the Tribler guide's `get_id`: stable Rust has no `yield`, so a generator
//! here is an `async` block that awaits [`Co::yield_`], driven by hand with
//! [`Generator::next`], [`send`](Generator::send) and [`throw`](Generator::throw).
//!
//! This is what `inlineCallbacks` builds on, and the same idea as torsion's executor: a
//! body runs until it pauses, and whoever resumes it decides what the pause evaluates to.
//! Here the driver is a loop in `main`; under [`torsion::spawn`] it is the reactor, and
//! the pauses are Deferreds.
//!
//! Invariant: the body runs only inside `next`, `send` or `throw`, from one pause to the
//! next; a body that awaits anything other than its own yields stops there, and the
//! generator counts as finished.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use torsion::Failure;

/// What a pause hands over and what it gets back.
struct Exchange<Y, S> {
    yielded: Option<Y>,
    sent: Option<Result<S, Failure>>,
}

/// The body's side of a generator: its way to yield (Python's `yield` expression).
pub struct Co<Y, S> {
    exchange: Rc<RefCell<Exchange<Y, S>>>,
}

impl<Y, S> Co<Y, S> {
    /// Yields `value` to the driver and pauses; resumes with what the driver sends
    /// (`Ok(value)`; `Ok(S::default())` for a plain `next`, as Python's `None`) or
    /// throws (`Err(failure)`, to be handled like a Python `except`).
    pub fn yield_(&self, value: Y) -> Yield<'_, Y, S> {
        Yield {
            co: self,
            value: Some(value),
        }
    }
}

/// The pause [`Co::yield_`] returns: `.await` it.
pub struct Yield<'a, Y, S> {
    co: &'a Co<Y, S>,
    value: Option<Y>,
}

impl<Y, S> Future for Yield<'_, Y, S> {
    type Output = Result<S, Failure>;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<S, Failure>> {
        let mut exchange = self.co.exchange.borrow_mut();
        if let Some(value) = self.value.take() {
            // The first poll: hand the value over and pause.
            exchange.yielded = Some(value);
            exchange.sent = None;
            return Poll::Pending;
        }
        match exchange.sent.take() {
            Some(sent) => Poll::Ready(sent),
            None => Poll::Pending,
        }
    }
}

// `Yield` holds no pinned data.
impl<Y, S> Unpin for Yield<'_, Y, S> {}

/// A generator: a body that yields values of type `Y` and is resumed with values of type
/// `S` (Python's generator object, with `next`, `send` and `throw`).
///
/// # Examples
///
/// ```
/// use torsion_examples::generator::Generator;
///
/// let mut generator = Generator::new(|co| async move {
///     let got = co.yield_(1).await;
///     assert_eq!(got.unwrap(), 10);
///     let _ = co.yield_(2).await;
/// });
/// assert_eq!(generator.next(), Some(1)); // start it: runs to the first yield
/// assert_eq!(generator.send(10), Some(2)); // the first yield evaluates to 10
/// assert_eq!(generator.next(), None); // the body finished: Python's StopIteration
/// ```
pub struct Generator<Y, S = ()> {
    exchange: Rc<RefCell<Exchange<Y, S>>>,
    body: Option<Pin<Box<dyn Future<Output = ()>>>>,
}

impl<Y: 'static, S: 'static> Generator<Y, S> {
    /// A generator running `body`, which yields through the [`Co`] it is given. Nothing
    /// runs until the first [`next`](Generator::next) (a Python generator function called).
    pub fn new<F, Fut>(body: F) -> Generator<Y, S>
    where
        F: FnOnce(Co<Y, S>) -> Fut,
        Fut: Future<Output = ()> + 'static,
    {
        let exchange = Rc::new(RefCell::new(Exchange {
            yielded: None,
            sent: None,
        }));
        let co = Co {
            exchange: exchange.clone(),
        };
        Generator {
            exchange,
            body: Some(Box::pin(body(co))),
        }
    }

    /// Resumes the body with `input` as the value of the pending yield; the next value it
    /// yields, or `None` once it has finished.
    fn resume(&mut self, input: Result<S, Failure>) -> Option<Y> {
        let body = self.body.as_mut()?;
        self.exchange.borrow_mut().sent = Some(input);
        let mut cx = Context::from_waker(Waker::noop());
        let finished = body.as_mut().poll(&mut cx).is_ready();
        let yielded = self.exchange.borrow_mut().yielded.take();
        if finished || yielded.is_none() {
            self.body = None;
        }
        yielded
    }

    /// Resumes the body with `value` (Python's `gen.send(value)`): the pending yield
    /// evaluates to `Ok(value)`. Sent before the first yield, the value is dropped, as
    /// Python allows only `None` there.
    pub fn send(&mut self, value: S) -> Option<Y> {
        self.resume(Ok(value))
    }

    /// Resumes the body with an error (Python's `gen.throw(exc)`): the pending yield
    /// evaluates to `Err(failure)`. The next value yielded, if the body handles it and
    /// yields again.
    pub fn throw(&mut self, failure: impl Into<Failure>) -> Option<Y> {
        self.resume(Err(failure.into()))
    }
}

impl<Y: 'static, S: Default + 'static> Iterator for Generator<Y, S> {
    type Item = Y;

    /// Resumes the body with `S::default()` (Python's `next(gen)`, which sends `None`).
    fn next(&mut self) -> Option<Y> {
        self.resume(Ok(S::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    torsion::error_type!(Malfunction, "malfunction");

    #[test]
    fn the_body_runs_only_between_pauses() {
        let steps = Rc::new(Cell::new(0));
        let seen = steps.clone();
        let mut generator: Generator<u32> = Generator::new(move |co| async move {
            seen.set(1);
            let _ = co.yield_(1).await;
            seen.set(2);
        });
        assert_eq!(steps.get(), 0, "nothing runs before next");
        assert_eq!(generator.next(), Some(1));
        assert_eq!(steps.get(), 1);
        assert_eq!(generator.next(), None);
        assert_eq!(steps.get(), 2);
        assert_eq!(generator.next(), None, "finished stays finished");
    }

    #[test]
    fn a_thrown_error_arrives_at_the_pending_yield() {
        let mut generator: Generator<u32, u32> = Generator::new(|co| async move {
            match co.yield_(3).await {
                Err(failure) if failure.check::<Malfunction>() => {
                    let _ = co.yield_(4).await;
                }
                _ => {}
            }
        });
        assert_eq!(generator.next(), Some(3));
        assert_eq!(generator.throw(Malfunction), Some(4));
        assert_eq!(generator.next(), None);
    }
}
