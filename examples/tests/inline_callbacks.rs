//! The programs of Part 17 of Dave Peticolas' series ("Just Another Way to Spell
//! 'Callback'"), end to end: the generator demos, whose output shows when a generator's
//! body runs, and the inlineCallbacks demos written with `async`, with their 2, 3 and 5 s
//! waits shortened by `--delay`. Client 7.0 is in `krondo_clients.rs`.

mod common;

use std::time::{Duration, Instant};

use common::{lines, run};

const GEN_1: &[&str] = &[
    "starting up",
    "1",
    "workin'",
    "2",
    "still workin'",
    "3",
    "done",
];

#[test]
fn gen_1_and_gen_2_interleave_the_generators_prints_with_the_loops() {
    for program in [example!("gen-1"), example!("gen-2")] {
        let out = run(program, Vec::<String>::new());
        out.assert_success();
        assert_eq!(out.lines(), lines(GEN_1), "{program}");
    }
}

#[test]
fn gen_3_takes_turns_between_two_generators() {
    let out = run(example!("gen-3"), Vec::<String>::new());
    out.assert_success();
    assert_eq!(out.lines(), lines(&["1", "10", "2", "20", "3", "30", "40"]));
}

#[test]
fn gen_4_sends_values_and_throws_an_error_into_the_generator() {
    let out = run(example!("gen-4"), Vec::<String>::new());
    out.assert_success();
    assert_eq!(
        out.lines(),
        lines(&[
            "starting up",
            "1",
            "got: 10",
            "2",
            "got: 20",
            "3",
            "malfunction!",
            "4",
            "done",
        ])
    );
}

#[test]
fn inline_callbacks_1_pauses_at_each_deferred_and_gets_its_failure_as_an_err() {
    let started = Instant::now();
    let out = run(example!("inline-callbacks-1"), ["--delay", "0.1"]);
    out.assert_success();
    assert_eq!(
        out.lines(),
        lines(&[
            "first callback",
            "second callback got 1",
            "third callback got 2",
            r#"fourth callback got Failure("3")"#,
        ])
    );
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "two waits of 100 ms"
    );
}

#[test]
fn inline_callbacks_2_returns_a_value_or_a_failure_through_the_deferred() {
    let out = run(
        example!("inline-callbacks-2"),
        ["--delay=0.2", "--err-delay=0.3"],
    );
    out.assert_success();
    assert_eq!(
        out.lines(),
        lines(&[
            "my_callbacks_1 first callback",
            "my_callbacks_err first callback",
            "my_callbacks_1 second callback",
            "my_callbacks_err second callback",
            "my_callbacks_1 third callback",
            "got result: 1",
            "my_callbacks_err third callback",
            "got error: uh oh",
            "all done",
        ])
    );
}

#[test]
fn inline_callbacks_tb_shows_the_reactor_calling_the_async_block() {
    let out = run(example!("inline-callbacks-tb"), Vec::<String>::new());
    out.assert_success();
    let frames: Vec<String> = out.lines().iter().map(|l| l.trim().to_string()).collect();
    let position = |name: &str| {
        frames
            .iter()
            .position(|frame| frame.contains(name))
            .unwrap_or_else(|| panic!("no frame {name} in {frames:#?}"))
    };
    // Innermost first: the block, then torsion's executor, then the reactor's run.
    let block = position("inline_callbacks_tb::my_callbacks");
    let executor = position("torsion::defer::executor");
    let run = position("torsion::reactor::Reactor::run");
    assert_eq!(block, 0, "{frames:#?}");
    assert!(block < executor && executor < run, "{frames:#?}");
    assert_eq!(
        frames.last().map(String::as_str),
        Some("inline_callbacks_tb::main")
    );
}
