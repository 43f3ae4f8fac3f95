//! The examples' command lines, as users expect them: `--help` everywhere, options as
//! `--opt=V` or `--opt V`, the tutorials' `PORT` or `HOST:PORT` arguments, and errors that
//! say what is wrong (`error: ...`, a non-zero exit), never a panic or a Rust source
//! location.

mod common;

use common::{Child, closed_port, run};

/// Every binary of this crate.
const PROGRAMS: &[&str] = &[
    example!("async-client"),
    example!("await-deferred"),
    example!("blocking-call-from-thread"),
    example!("blocking-client"),
    example!("blocking-server"),
    example!("call-in-thread"),
    example!("call-later"),
    example!("countdown"),
    example!("defer-1"),
    example!("defer-10"),
    example!("defer-cancel-12"),
    example!("defer-to-thread"),
    example!("deferred-list"),
    example!("gen-1"),
    example!("gen-2"),
    example!("gen-3"),
    example!("gen-4"),
    example!("get-id"),
    example!("get-page"),
    example!("get-poetry-1"),
    example!("get-poetry-2"),
    example!("get-poetry-3"),
    example!("get-poetry-3-errback"),
    example!("get-poetry-4"),
    example!("get-poetry-5"),
    example!("get-poetry-6"),
    example!("get-poetry-7"),
    example!("get-poetry-8"),
    example!("hello"),
    example!("inline-callbacks-1"),
    example!("inline-callbacks-2"),
    example!("inline-callbacks-tb"),
    example!("print-later"),
    example!("print-later-twice"),
    example!("torsion-runner"),
];

/// The clients that take `[HOST:]PORT` arguments.
const CLIENTS: &[&str] = &[
    example!("async-client"),
    example!("blocking-client"),
    example!("get-poetry-1"),
    example!("get-poetry-2"),
    example!("get-poetry-3"),
    example!("get-poetry-3-errback"),
    example!("get-poetry-4"),
    example!("get-poetry-5"),
    example!("get-poetry-6"),
    example!("get-poetry-7"),
    example!("get-poetry-8"),
];

/// Fails if `stderr` looks like a panic or names a Rust source file.
fn assert_no_rust_internals(stderr: &str) {
    for telltale in ["panicked", ".rs:", "RUST_BACKTRACE", "Failure("] {
        assert!(!stderr.contains(telltale), "{telltale:?} in {stderr:?}");
    }
}

#[test]
fn every_program_has_a_help() {
    assert_eq!(
        PROGRAMS.len(),
        std::fs::read_dir(common::repository().join("examples/src/bin"))
            .unwrap()
            .count(),
        "every binary is listed here"
    );
    for program in PROGRAMS {
        let out = run(program, ["--help"]);
        out.assert_success();
        let help = out.stdout_text();
        assert!(help.contains("Usage:"), "{program}: {help}");
        assert!(help.contains("-h, --help"), "{program}: {help}");
    }
}

#[test]
fn a_client_without_servers_prints_its_help_and_fails() {
    for client in CLIENTS {
        let out = run(client, Vec::<String>::new());
        out.assert_code(2);
        assert!(out.stderr.contains("Usage:"), "{client}: {}", out.stderr);
        assert!(
            out.stderr.contains("[HOST:]PORT"),
            "{client}: {}",
            out.stderr
        );
    }
}

#[test]
fn a_bad_address_is_refused_with_the_reason() {
    for client in CLIENTS {
        let out = run(client, ["10001", "localhost:poetry"]);
        out.assert_code(2);
        assert!(
            out.stderr
                .starts_with("error: invalid value 'localhost:poetry'"),
            "{client}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("ports must be integers"),
            "{client}: {}",
            out.stderr
        );
        assert_no_rust_internals(&out.stderr);
    }
}

#[test]
fn a_server_that_is_down_is_an_error_line_not_a_panic() {
    let port = closed_port();
    for client in [example!("blocking-client"), example!("get-poetry-1")] {
        let out = run(client, [format!("127.0.0.1:{port}")]);
        out.assert_code(1);
        assert!(
            out.stderr
                .starts_with(&format!("error: cannot connect to 127.0.0.1:{port}: ")),
            "{client}: {}",
            out.stderr
        );
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert_no_rust_internals(&out.stderr);
    }
}

#[test]
fn options_take_their_value_after_an_equals_sign_or_a_space() {
    for port_args in [vec!["--port=0"], vec!["--port", "0"]] {
        let mut args = port_args.clone();
        args.push("poems/science.txt");
        let mut server = Child::start(example!("blocking-server"), &args);
        server.wait_for_stdout("its banner", |out| out.ends_with(b".\n"));
        let banner = server.stdout.text();
        assert!(
            banner.starts_with("Serving poems/science.txt on port "),
            "{port_args:?}: {banner}"
        );
        drop(server); // killed: the blocking server runs until it is
    }
    let out = run(example!("countdown"), ["--delay=0"]);
    out.assert_success();
    let out = run(example!("countdown"), ["--delay", "0"]);
    out.assert_success();
}

#[test]
fn bad_option_values_say_what_is_wrong() {
    let out = run(example!("countdown"), ["--delay", "soon"]);
    out.assert_code(2);
    assert!(
        out.stderr.starts_with(
            "error: invalid value 'soon' for '--delay <DELAY>': not a number of seconds"
        ),
        "{}",
        out.stderr
    );
    let out = run(
        example!("blocking-server"),
        ["--port", "70000", "poems/science.txt"],
    );
    out.assert_code(2);
    assert!(out.stderr.contains("'70000'"), "{}", out.stderr);
    let out = run(example!("blocking-server"), ["poems/no-such-poem.txt"]);
    out.assert_code(1);
    assert_eq!(out.stderr, "error: no such file: poems/no-such-poem.txt\n");
    let out = run(
        example!("get-poetry-5"),
        ["--cummingsify", "sometimes", "10001"],
    );
    out.assert_code(2);
    assert!(
        out.stderr
            .contains("[possible values: success, gibberish, bug]"),
        "{}",
        out.stderr
    );
    assert_no_rust_internals(&out.stderr);
}
