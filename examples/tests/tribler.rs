//! The patterns of "Twisted in Tribler", end to end: a generator of identifiers, an
//! `async` function awaiting a Deferred that an event fires (the guide's
//! `@inlineCallbacks` with `returnValue`), and a worker thread blocking on a call run on
//! the reactor thread (`blocking_call_from_thread`).

mod common;

use common::{lines, run};

#[test]
fn get_id_yields_identifiers_as_long_as_the_caller_asks() {
    let out = run(example!("get-id"), Vec::<String>::new());
    out.assert_success();
    assert_eq!(out.lines(), lines(&["0"]));
    let out = run(example!("get-id"), ["--count", "4"]);
    out.assert_success();
    assert_eq!(out.lines(), lines(&["0", "1", "2", "3"]));
}

#[test]
fn await_deferred_pauses_until_the_event_and_returns_the_value() {
    let out = run(example!("await-deferred"), ["--delay", "0.05"]);
    out.assert_success();
    assert_eq!(
        out.lines(),
        lines(&[
            "some_function: waiting for the Deferred",
            "event: firing the Deferred",
            r#"some_function: the Deferred fired with "a value from the event""#,
            r#"main: some_function returned "a value from the event""#,
        ])
    );
}

#[test]
fn blocking_call_from_thread_runs_on_the_reactor_thread_while_the_worker_waits() {
    let out = run(example!("blocking-call-from-thread"), ["--delay", "0.05"]);
    out.assert_success();
    assert_eq!(
        out.lines(),
        lines(&[
            "worker: asking the reactor thread for a poem",
            "main: producing the poem, ready in 0.05 s",
            r#"worker: got "Once upon a midnight dreary""#,
        ])
    );
}
