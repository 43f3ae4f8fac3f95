//! Model-based test of one Deferred chain: random sequences of operations (adding callbacks,
//! errbacks and both-backs, callbacks returning fired or unfired Deferreds, pause, unpause,
//! fire, cancel) run against a `Deferred<i64>` and against a plain model of Twisted's
//! `_runCallbacks` semantics (twisted-internals.md §4). After every operation the order in
//! which callbacks ran, `is_fired`, `has_failure` and the availability of a result must agree;
//! at the end everything is unpaused and fired and the final result must agree too.
//!
//! `PROPTEST_CASES` overrides the default of 256 cases.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;

use proptest::prelude::*;
use torsion::defer::{fail, succeed};
use torsion::error::{AlreadyCalled, Cancelled};
use torsion::{Deferred, Failure, Resolver};

macro_rules! error_type {
    ($name:ident, $text:literal) => {
        #[derive(Debug)]
        struct $name;
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str($text)
            }
        }
        impl std::error::Error for $name {}
    };
}

error_type!(Boom, "a callback failed");
error_type!(FiredErr, "the Deferred was fired with a failure");
error_type!(InnerErr, "an inner Deferred was fired with a failure");

/// What a failure is, as far as the model knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Boom,
    Fired,
    Inner,
    Cancelled,
}

impl Kind {
    fn failure(self) -> Failure {
        match self {
            Kind::Boom => Boom.into(),
            Kind::Fired => FiredErr.into(),
            Kind::Inner => InnerErr.into(),
            Kind::Cancelled => Cancelled.into(),
        }
    }

    /// Recognises a failure with `Failure::check`; anything else (a panic in a callback, an
    /// internal error) fails the test.
    fn of(failure: &Failure) -> Kind {
        if failure.check::<Boom>() {
            Kind::Boom
        } else if failure.check::<FiredErr>() {
            Kind::Fired
        } else if failure.check::<InnerErr>() {
            Kind::Inner
        } else if failure.check::<Cancelled>() {
            Kind::Cancelled
        } else {
            panic!("unexpected failure in the chain: {failure}")
        }
    }
}

type Outcome = Result<i64, Kind>;

fn outcome_of(r: &Result<i64, Failure>) -> Outcome {
    match r {
        Ok(v) => Ok(*v),
        Err(f) => Err(Kind::of(f)),
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// A callback returning `Ok(x + k)`.
    AddCallback(i64),
    /// A callback returning `Err(Boom)`.
    AddCallbackFailing,
    /// An errback recovering with `Ok(v)`.
    AddErrbackRecover(i64),
    /// An errback returning the failure it got.
    AddErrbackPassthrough,
    /// One function for both sides: `Ok(x)` gives `Ok(x - 1)`; a failure gives `Ok(0)` when
    /// `recover`, else passes on.
    AddBoth {
        recover: bool,
    },
    /// A callback returning a new unfired Deferred (fired later by `FireInner`).
    AddCallbackReturningUnfired,
    /// A callback returning `succeed(x + k)` (`Some(k)`) or `fail(Boom)` (`None`).
    AddCallbackReturningFired(Option<i64>),
    Pause,
    /// Only applied while paused.
    Unpause,
    Fire(i64),
    FireErr,
    /// Fires the last inner Deferred with `Ok(v)` (`Some(v)`) or `Err(InnerErr)` (`None`).
    FireInner(Option<i64>),
    Cancel,
}

fn op() -> impl Strategy<Value = Op> {
    let value = -1000i64..1000;
    prop_oneof![
        4 => value.clone().prop_map(Op::AddCallback),
        2 => Just(Op::AddCallbackFailing),
        2 => value.clone().prop_map(Op::AddErrbackRecover),
        1 => Just(Op::AddErrbackPassthrough),
        2 => any::<bool>().prop_map(|recover| Op::AddBoth { recover }),
        3 => Just(Op::AddCallbackReturningUnfired),
        2 => proptest::option::of(value.clone()).prop_map(Op::AddCallbackReturningFired),
        2 => Just(Op::Pause),
        3 => Just(Op::Unpause),
        2 => value.clone().prop_map(Op::Fire),
        1 => Just(Op::FireErr),
        3 => proptest::option::of(value).prop_map(Op::FireInner),
        1 => Just(Op::Cancel),
    ]
}

// ---------------------------------------------------------------------------------------
// The model.

#[derive(Clone, Copy, Debug)]
enum StepKind {
    Callback(i64),
    CallbackFailing,
    ErrbackRecover(i64),
    ErrbackPassthrough,
    Both { recover: bool },
    ReturningUnfired,
    ReturningFired(Option<i64>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InnerState {
    Open,
    FiredByUs,
    Cancelled,
}

/// What a fire of an already fired Deferred returns.
fn refire(cancelled: bool) -> Result<(), AlreadyCalled> {
    if cancelled {
        Ok(())
    } else {
        Err(AlreadyCalled)
    }
}

#[derive(Default, Debug)]
struct Model {
    fired: bool,
    cancelled: bool,
    paused: u32,
    result: Option<Outcome>,
    pending: VecDeque<(usize, StepKind)>,
    /// The inner Deferred the chain waits on.
    waiting: Option<usize>,
    inners: Vec<InnerState>,
    log: Vec<String>,
}

impl Model {
    /// Twisted's `_runCallbacks` for one chain: nothing runs before the fire, while paused or
    /// while waiting on an inner Deferred; otherwise steps run in order, each on its side.
    fn run(&mut self) {
        if !self.fired || self.paused > 0 || self.waiting.is_some() {
            return;
        }
        while let Some((id, step)) = self.pending.pop_front() {
            let input = self.result.take().expect("a fired chain has a result");
            let output = match (step, input) {
                (StepKind::Callback(k), Ok(x)) => {
                    self.log.push(format!("cb{id}({x})"));
                    Ok(x.wrapping_add(k))
                }
                (StepKind::CallbackFailing, Ok(x)) => {
                    self.log.push(format!("failing{id}({x})"));
                    Err(Kind::Boom)
                }
                (StepKind::ReturningFired(k), Ok(x)) => {
                    self.log.push(format!("fired{id}({x})"));
                    match k {
                        Some(k) => Ok(x.wrapping_add(k)),
                        None => Err(Kind::Boom),
                    }
                }
                (StepKind::ReturningUnfired, Ok(x)) => {
                    self.log.push(format!("unfired{id}({x})"));
                    self.inners.push(InnerState::Open);
                    self.waiting = Some(self.inners.len() - 1);
                    return;
                }
                (StepKind::ErrbackRecover(v), Err(k)) => {
                    self.log.push(format!("recover{id}({k:?})"));
                    Ok(v)
                }
                (StepKind::ErrbackPassthrough, Err(k)) => {
                    self.log.push(format!("passthrough{id}({k:?})"));
                    Err(k)
                }
                (StepKind::Both { recover }, r) => {
                    self.log.push(format!("both{id}({r:?})"));
                    match r {
                        Ok(x) => Ok(x.wrapping_sub(1)),
                        Err(_) if recover => Ok(0),
                        Err(k) => Err(k),
                    }
                }
                // A callback on the failure side or an errback on the value side: skipped.
                (_, r) => r,
            };
            self.result = Some(output);
        }
    }

    fn add(&mut self, id: usize, step: StepKind) {
        self.pending.push_back((id, step));
        self.run();
    }

    fn fire(&mut self, outcome: Outcome) -> Result<(), AlreadyCalled> {
        if self.fired {
            return refire(self.cancelled);
        }
        self.fired = true;
        self.result = Some(outcome);
        self.run();
        Ok(())
    }

    fn fire_inner(&mut self, index: usize, outcome: Outcome) -> Result<(), AlreadyCalled> {
        match self.inners[index] {
            InnerState::Open => {}
            InnerState::FiredByUs => return Err(AlreadyCalled),
            InnerState::Cancelled => return Ok(()),
        }
        self.inners[index] = InnerState::FiredByUs;
        self.resume(index, outcome);
        Ok(())
    }

    /// The inner Deferred the chain waits on has a result: the chain carries on with it.
    fn resume(&mut self, index: usize, outcome: Outcome) {
        assert_eq!(
            self.waiting,
            Some(index),
            "only the awaited inner can be open"
        );
        self.waiting = None;
        self.result = Some(outcome);
        self.run();
    }

    /// Twisted's `cancel`: an unfired chain fails with `Cancelled` (no canceller); a chain
    /// waiting on an inner Deferred cancels that one instead; otherwise nothing happens.
    fn cancel(&mut self) {
        if !self.fired {
            self.cancelled = true;
            self.fired = true;
            self.result = Some(Err(Kind::Cancelled));
            self.run();
        } else if let Some(index) = self.waiting {
            self.inners[index] = InnerState::Cancelled;
            self.resume(index, Err(Kind::Cancelled));
        }
    }

    /// Whether `take_result` would give the result now.
    fn available(&self) -> bool {
        self.fired && self.paused == 0 && self.waiting.is_none() && self.pending.is_empty()
    }
}

// ---------------------------------------------------------------------------------------
// The system under test.

type Log = Rc<RefCell<Vec<String>>>;
type Inners = Rc<RefCell<Vec<Resolver<i64>>>>;

struct Sut {
    resolver: Resolver<i64>,
    d: Option<Deferred<i64>>,
    log: Log,
    inners: Inners,
}

impl Sut {
    fn new() -> Sut {
        let (resolver, d) = Deferred::new();
        Sut {
            resolver,
            d: Some(d),
            log: Rc::default(),
            inners: Rc::default(),
        }
    }

    fn d(&self) -> &Deferred<i64> {
        self.d.as_ref().expect("the Deferred is held")
    }

    fn add(&mut self, id: usize, step: StepKind) {
        let d = self.d.take().expect("the Deferred is held");
        let log = self.log.clone();
        let d = match step {
            StepKind::Callback(k) => d.add_callback(move |x: i64| {
                log.borrow_mut().push(format!("cb{id}({x})"));
                Ok(x.wrapping_add(k))
            }),
            StepKind::CallbackFailing => d.add_callback(move |x: i64| -> Result<i64, Failure> {
                log.borrow_mut().push(format!("failing{id}({x})"));
                Err(Boom.into())
            }),
            StepKind::ReturningFired(k) => d.add_callback(move |x: i64| {
                log.borrow_mut().push(format!("fired{id}({x})"));
                match k {
                    Some(k) => succeed(x.wrapping_add(k)),
                    None => fail(Boom),
                }
            }),
            StepKind::ReturningUnfired => {
                let inners = self.inners.clone();
                d.add_callback(move |x: i64| {
                    log.borrow_mut().push(format!("unfired{id}({x})"));
                    let (resolver, inner) = Deferred::new();
                    inners.borrow_mut().push(resolver);
                    inner
                })
            }
            StepKind::ErrbackRecover(v) => d.add_errback(move |f| {
                log.borrow_mut()
                    .push(format!("recover{id}({:?})", Kind::of(&f)));
                Ok(v)
            }),
            StepKind::ErrbackPassthrough => d.add_errback(move |f| -> Result<i64, Failure> {
                log.borrow_mut()
                    .push(format!("passthrough{id}({:?})", Kind::of(&f)));
                Err(f)
            }),
            StepKind::Both { recover } => d.add_both(move |r: Result<i64, Failure>| {
                log.borrow_mut()
                    .push(format!("both{id}({:?})", outcome_of(&r)));
                match r {
                    Ok(x) => Ok(x.wrapping_sub(1)),
                    Err(_) if recover => Ok(0),
                    Err(f) => Err(f),
                }
            }),
        };
        self.d = Some(d);
    }

    fn fire(&self, outcome: Outcome) -> Result<(), AlreadyCalled> {
        match outcome {
            Ok(v) => self.resolver.try_callback(v),
            Err(k) => self.resolver.try_errback(k.failure()),
        }
    }

    fn fire_inner(&self, index: usize, outcome: Outcome) -> Result<(), AlreadyCalled> {
        // Cloned out first: firing runs callbacks, which may push new inner resolvers.
        let resolver = self.inners.borrow()[index].clone();
        match outcome {
            Ok(v) => resolver.try_callback(v),
            Err(k) => resolver.try_errback(k.failure()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Running both.

struct Harness {
    model: Model,
    sut: Sut,
    next_id: usize,
    /// What has been applied, for failure messages.
    trace: Vec<String>,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            model: Model::default(),
            sut: Sut::new(),
            next_id: 0,
            trace: Vec::new(),
        }
    }

    fn add(&mut self, step: StepKind) {
        let id = self.next_id;
        self.next_id += 1;
        self.trace.push(format!("add #{id} {step:?}"));
        self.model.add(id, step);
        self.sut.add(id, step);
    }

    fn fire(&mut self, outcome: Outcome) {
        self.trace.push(format!("fire {outcome:?}"));
        let expected = self.model.fire(outcome);
        let got = self.sut.fire(outcome);
        assert_eq!(got, expected, "fire result\n{}", self.context());
    }

    /// Fires the last inner Deferred created, if any.
    fn fire_inner(&mut self, value: Option<i64>) {
        let Some(index) = self.model.inners.len().checked_sub(1) else {
            return;
        };
        let outcome = value.ok_or(Kind::Inner);
        self.trace.push(format!("fire inner #{index} {outcome:?}"));
        let expected = self.model.fire_inner(index, outcome);
        let got = self.sut.fire_inner(index, outcome);
        assert_eq!(got, expected, "inner fire result\n{}", self.context());
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::AddCallback(k) => self.add(StepKind::Callback(k)),
            Op::AddCallbackFailing => self.add(StepKind::CallbackFailing),
            Op::AddErrbackRecover(v) => self.add(StepKind::ErrbackRecover(v)),
            Op::AddErrbackPassthrough => self.add(StepKind::ErrbackPassthrough),
            Op::AddBoth { recover } => self.add(StepKind::Both { recover }),
            Op::AddCallbackReturningUnfired => self.add(StepKind::ReturningUnfired),
            Op::AddCallbackReturningFired(k) => self.add(StepKind::ReturningFired(k)),
            Op::Pause => {
                self.trace.push("pause".into());
                self.model.paused += 1;
                self.sut.d().pause();
            }
            Op::Unpause => {
                if self.model.paused == 0 {
                    return;
                }
                self.trace.push("unpause".into());
                self.model.paused -= 1;
                self.model.run();
                self.sut.d().unpause();
            }
            Op::Fire(v) => self.fire(Ok(v)),
            Op::FireErr => self.fire(Err(Kind::Fired)),
            Op::FireInner(v) => self.fire_inner(v),
            Op::Cancel => {
                self.trace.push("cancel".into());
                self.model.cancel();
                self.sut.d().cancel();
            }
        }
        self.check();
    }

    /// Compares everything that can be observed without consuming the result.
    fn check(&mut self) {
        assert_eq!(
            *self.sut.log.borrow(),
            self.model.log,
            "callback order\n{}",
            self.context()
        );
        assert_eq!(
            self.sut.d().is_fired(),
            self.model.fired,
            "is_fired\n{}",
            self.context()
        );
        let has_failure = matches!(self.model.result, Some(Err(_)));
        assert_eq!(
            self.sut.d().handle().has_failure(),
            has_failure,
            "has_failure\n{}",
            self.context()
        );
        if !self.model.available() {
            let got = self
                .sut
                .d
                .as_mut()
                .expect("the Deferred is held")
                .take_result()
                .map(|r| outcome_of(&r));
            assert_eq!(got, None, "a result came out early\n{}", self.context());
        }
    }

    /// Unpauses everything, fires the chain if nobody did, fires every inner Deferred the
    /// chain comes to wait on, then compares the final result.
    fn finish(mut self) {
        while self.model.paused > 0 {
            self.apply(&Op::Unpause);
        }
        if !self.model.fired {
            self.apply(&Op::Fire(1_000_000));
        }
        while let Some(index) = self.model.waiting {
            self.apply(&Op::FireInner(Some(index as i64 * 7)));
        }
        assert!(
            self.model.available(),
            "model not settled\n{}",
            self.context()
        );
        let expected = self.model.result.expect("a settled chain has a result");
        let mut d = self.sut.d.take().expect("the Deferred is held");
        let got = d
            .take_result()
            .unwrap_or_else(|| panic!("no result at the end\n{}", self.context()));
        assert_eq!(
            outcome_of(&got),
            expected,
            "final result\n{}",
            self.context()
        );
        assert_eq!(*self.sut.log.borrow(), self.model.log);
    }

    fn context(&self) -> String {
        format!(
            "ops: {:#?}\nmodel: {:#?}\nsut log: {:?}",
            self.trace,
            self.model,
            self.sut.log.borrow()
        )
    }
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn one_chain_agrees_with_the_model(ops in prop::collection::vec(op(), 0..48)) {
        let mut harness = Harness::new();
        for op in &ops {
            harness.apply(op);
        }
        harness.finish();
    }
}

/// A few fixed sequences, so that the interesting paths run whatever the random seed.
#[test]
fn fixed_sequences_agree_with_the_model() {
    use Op::*;
    let sequences: Vec<Vec<Op>> = vec![
        // Waiting on an inner Deferred, paused meanwhile, cancelled through the inner.
        vec![
            AddCallback(1),
            AddCallbackReturningUnfired,
            AddCallback(2),
            Fire(10),
            Pause,
            Cancel,
            AddErrbackRecover(5),
            Unpause,
            FireInner(Some(3)),
        ],
        // Cancelled before the fire; the late fire is dropped.
        vec![
            Pause,
            AddCallback(1),
            Cancel,
            Fire(4),
            AddErrbackPassthrough,
            Unpause,
            AddBoth { recover: true },
        ],
        // Fired Deferreds returned from callbacks, failures switching sides.
        vec![
            Fire(1),
            AddCallbackReturningFired(Some(2)),
            AddCallbackReturningFired(None),
            AddCallback(100),
            AddErrbackRecover(7),
            AddCallbackFailing,
            AddBoth { recover: false },
            AddErrbackRecover(9),
        ],
        // Several inner Deferreds in turn, one failing.
        vec![
            AddCallbackReturningUnfired,
            AddCallbackReturningUnfired,
            FireErr,
            Fire(2),
            AddErrbackRecover(1),
            AddCallbackReturningUnfired,
            FireInner(None),
            AddErrbackRecover(8),
            FireInner(Some(1)),
            Cancel,
            FireInner(Some(2)),
        ],
    ];
    for ops in sequences {
        let mut harness = Harness::new();
        for op in &ops {
            harness.apply(op);
        }
        harness.finish();
    }
}

/// A callback that returns the very Deferred it is attached to (reached through a slot)
/// would make the chain wait on itself forever (Twisted warns and hangs); torsion fails the
/// chain instead, and a later cancel returns at once.
///
/// The cancel runs on a separate thread so that a regression fails after a timeout instead
/// of hanging.
#[test]
fn cancel_returns_on_a_chain_waiting_on_itself() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let slot: Rc<RefCell<Option<Deferred<u32>>>> = Rc::default();
        let slot2 = slot.clone();
        let (resolver, d) = Deferred::<u32>::new();
        let d = d.add_callback(move |_| slot2.borrow_mut().take().expect("set before firing"));
        let handle = d.handle();
        *slot.borrow_mut() = Some(d);
        resolver.callback(1);
        handle.cancel();
        assert!(
            handle.has_failure(),
            "the chain fails instead of waiting on itself"
        );
        let _ = done.send(());
    });
    finished
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("DeferredHandle::cancel did not return within 5 s");
}
