//! The small programs of Dave Peticolas' series, end to end: the reactor's first steps
//! (`hello`, `countdown`), and the Deferred demos (`defer-1`, `defer-10`, `deferred-list`,
//! `defer-cancel-12`). Each is run as a process and its whole output compared, line for
//! line, with what the tutorial's program prints.

mod common;

use common::{Child, lines, run};

#[test]
fn hello_runs_its_callback_once_the_reactor_runs_then_waits_for_ctrl_c() {
    let mut hello = Child::start(example!("hello"), Vec::<String>::new());
    hello.wait_for_stdout("both lines", |out| out.ends_with(b"rut.\n"));
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(hello.running(), "the reactor should sit there");
    let out = hello.interrupt();
    out.assert_success();
    assert_eq!(
        out.lines(),
        lines(&[
            "Starting the reactor.",
            "Hello from the reactor loop!",
            "Lately I feel like I'm stuck in a rut.",
        ])
    );
}

#[test]
fn countdown_counts_from_5_with_call_later_then_stops() {
    let started = std::time::Instant::now();
    let out = run(example!("countdown"), ["--delay", "0.05"]);
    out.assert_success();
    assert_eq!(
        out.lines(),
        lines(&[
            "Start!", "5 ...", "4 ...", "3 ...", "2 ...", "1 ...", "Stop!"
        ])
    );
    // Five waits of 50 ms between the numbers and the stop.
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
}

#[test]
fn defer_1_runs_the_callback_or_with_fail_the_errback() {
    let out = run(example!("defer-1"), Vec::<String>::new());
    out.assert_success();
    assert_eq!(
        out.lines(),
        lines(&["Your poem is served:", "This poem is short.", "Finished"])
    );
    let out = run(example!("defer-1"), ["--fail"]);
    out.assert_success();
    assert_eq!(out.lines(), lines(&["No poetry for you.", "Finished"]));
}

#[test]
fn defer_10_pauses_the_outer_chain_until_the_inner_deferred_fires() {
    let out = run(example!("defer-10"), Vec::<String>::new());
    out.assert_success();
    let callbacks: Vec<String> = out
        .lines()
        .into_iter()
        .filter(|line| line.starts_with("callback_"))
        .collect();
    assert_eq!(
        callbacks,
        lines(&[
            "callback_1 got 0",
            "callback_2 got 1",
            "callback_3 got 2",
            "callback_1 got 0",
            "callback_2 got 1",
            "callback_3 got 2",
        ])
    );
    // The third callback of the second chain runs only after the inner Deferred fired.
    let text = out.stdout_text();
    let firing = text
        .find("by firing the inner deferred:")
        .expect("the explanation");
    let last = text.rfind("callback_3 got 2").expect("the last callback");
    assert!(firing < last, "{text}");
    let paused = &text[text.find("returning a deferred:").unwrap()..firing];
    assert!(!paused.contains("callback_3"), "{paused}");
}

#[test]
fn deferred_list_fires_with_every_result_in_the_lists_order() {
    let out = run(example!("deferred-list"), Vec::<String>::new());
    out.assert_success();
    assert_eq!(
        out.lines(),
        lines(&[
            "Three Deferreds.",
            "Adding Callback.",
            "Firing d1.",
            "Firing d2.",
            "Firing d3.",
            r#"We got: [(true, "d1 result"), (true, "d2 result"), (true, "d3 result")]"#,
        ])
    );
    let out = run(example!("deferred-list"), ["--fail"]);
    out.assert_success();
    assert_eq!(
        out.lines().last().map(String::as_str),
        Some(
            r#"We got: [(true, "d1 result"), (false, Failure("d2 failure")), (true, "d3 result")]"#
        )
    );
}

#[test]
fn defer_cancel_12_cancels_the_inner_deferred_the_outer_one_waits_on() {
    let out = run(example!("defer-cancel-12"), Vec::<String>::new());
    out.assert_success();
    assert_eq!(
        out.lines(),
        lines(&[
            "first outer callback, returning inner deferred",
            "canceling outer deferred.",
            "inner cancel callback.",
            "outer errback got: cancelled",
            "done",
        ])
    );
}
