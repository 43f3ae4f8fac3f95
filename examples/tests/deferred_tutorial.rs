//! The programs of the Deferred tutorial ("This tutorial introduces the Twisted networking
//! library..."), end to end: `print-later` and `print-later-twice`, which print after a
//! delay and then, as in the tutorial, run until Ctrl-C; and `get-page` (the tutorial's
//! `blocking_input.py`), which downloads pages from a local `torsion web` with
//! `torsion_web::get_page`.

mod common;

use std::collections::BTreeSet;

use common::{Child, Server, lines, run};

#[test]
fn print_later_prints_after_the_delay_and_runs_on_until_ctrl_c() {
    let mut child = Child::start(example!("print-later"), ["--delay", "0.1"]);
    child.wait_for_stdout("the message", |out| out == b"The future is now!\n");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(child.running(), "the reactor should run on");
    let out = child.interrupt();
    out.assert_success();
    assert_eq!(out.lines(), lines(&["The future is now!"]));
}

#[test]
fn print_later_twice_prints_through_two_callbacks_of_one_deferred() {
    let mut child = Child::start(
        example!("print-later-twice"),
        ["--delay=0.1", "Roses are red."],
    );
    child.wait_for_stdout("two lines", |out| out.ends_with(b"red.\nRoses are red.\n"));
    let out = child.interrupt();
    out.assert_success();
    assert_eq!(out.lines(), lines(&["Roses are red.", "Roses are red."]));
}

#[test]
fn get_page_downloads_from_a_local_web_server_and_reports_each_page() {
    let path = common::repository().join("poems");
    let web = Server::start("web", &["--path", path.to_str().unwrap()]);
    let url = |name: &str| format!("http://127.0.0.1:{}/{name}", web.port);
    let out = run(
        example!("get-page"),
        [
            url("science.txt"),
            url("tyger.txt"),
            url("missing.txt"),
            "a_bad_url".into(),
        ],
    );
    out.assert_success();
    let lines = out.lines();
    // The reports come in the order the downloads end; the sizes at the end, in the
    // order asked.
    let reports: BTreeSet<String> = lines[..4].iter().cloned().collect();
    let expected: BTreeSet<String> = [
        format!("Successfully downloaded `{}`.", url("science.txt")),
        format!("Successfully downloaded `{}`.", url("tyger.txt")),
        format!(
            "Failed to download `{}`: the server answered 404 Not Found",
            url("missing.txt")
        ),
        "Failed to download `a_bad_url`: cannot request this URL: \"a_bad_url\" is not an http: or https: URL".to_string(),
    ]
    .into();
    assert_eq!(reports, expected, "{lines:#?}");
    assert_eq!(
        lines[4..],
        [
            format!("`{}`: 681 bytes", url("science.txt")),
            format!("`{}`: 841 bytes", url("tyger.txt")),
        ]
    );
}

#[test]
fn get_page_exits_non_zero_when_no_page_could_be_downloaded() {
    let out = run(example!("get-page"), ["a_bad_url"]);
    out.assert_code(1);
    assert_eq!(out.stderr, "error: no page could be downloaded\n");
}
