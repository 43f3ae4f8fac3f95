//! The calls of "Twisted Reactor Basics" (the droned wiki), end to end: `call_later`,
//! `call_in_thread` and `defer_to_thread` with a callback, each as a program whose output
//! shows which thread did what.

mod common;

use common::{lines, poem, run};

#[test]
fn call_later_returns_at_once_and_calls_later() {
    let out = run(example!("call-later"), ["--delay", "0.05"]);
    out.assert_success();
    assert_eq!(
        out.lines(),
        lines(&[
            "scheduled a call in 0.05 s; call_later returned at once (active: true)",
            r#"called later: Poe wrote "Science! true daughter of Old Time""#,
            "stopping",
        ])
    );
}

#[test]
fn call_in_thread_does_blocking_work_while_the_reactor_goes_on() {
    let dir = std::env::temp_dir().join(format!("torsion-examples-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("poem.txt");
    let out = run(
        example!("call-in-thread"),
        ["--delay", "0.2", file.to_str().unwrap()],
    );
    let written = std::fs::read(&file);
    let _ = std::fs::remove_dir_all(&dir);
    out.assert_success();
    assert_eq!(
        out.lines(),
        lines(&[
            "reactor: handing the blocking work to a thread",
            "reactor: a timer fired while the thread works",
            &format!("thread: wrote 81 bytes to {}", file.display()),
            "reactor: the thread is done, stopping",
        ])
    );
    let written = written.expect("the thread wrote the file");
    assert!(written.starts_with(b"Roses are red,\n") && written.len() == 81);
}

#[test]
fn defer_to_thread_reads_on_a_pool_thread_and_calls_back_on_the_reactor_thread() {
    let out = run(example!("defer-to-thread"), ["poems/science.txt"]);
    out.assert_success();
    let lines_in_poem = poem("science.txt").iter().filter(|&&b| b == b'\n').count();
    assert_eq!(
        out.lines(),
        lines(&[
            &format!(
                "read 681 bytes, {lines_in_poem} lines, from poems/science.txt on a pool thread"
            ),
            "the callback runs on the reactor thread",
        ])
    );
}

#[test]
fn defer_to_thread_passes_the_threads_error_to_the_chain() {
    let out = run(example!("defer-to-thread"), ["poems/no-such-poem.txt"]);
    out.assert_code(1);
    assert_eq!(out.stdout_text(), "");
    assert_eq!(
        out.stderr,
        "error: cannot read poems/no-such-poem.txt: No such file or directory (os error 2)\n"
    );
}
