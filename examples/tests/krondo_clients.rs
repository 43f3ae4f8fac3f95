//! The poetry clients of Dave Peticolas' series, end to end: each example runs as its own
//! process against `torsion poetry` and `torsion transform` servers (or the blocking
//! server of this crate), and what it prints is checked: the exact bytes of each poem,
//! the exact lines of each report, the exit code and the errors on stderr.
//!
//! The poems are `poems/science.txt` (681 bytes), `tyger.txt` (841), `sonnet18.txt`
//! (673) and the Latin-1 `nachtlied.latin1.txt`, which no client may alter.

mod common;

use common::{Child, Server, closed_port, lines, poem, printed, run};

/// The lines of a report, the elapsed times cut off (`... in 0:00:00.123456`).
fn without_times(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .map(|line| match line.rfind(" in ") {
            Some(at) if line[at + 4..].starts_with("0:00:") => line[..at].to_string(),
            _ => line,
        })
        .collect()
}

/// The sum of the `got N bytes` counts for `task` in `lines`.
fn bytes_reported(lines: &[String], task: usize) -> usize {
    let prefix = format!("Task {task}: got ");
    lines
        .iter()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
        .sum()
}

/// Checks that `stdout` is exactly the `poems`, each printed once, in any order.
fn assert_poems_printed(stdout: &[u8], poems: &[Vec<u8>]) {
    let expected: usize = poems.iter().map(|p| p.len() + 1).sum();
    assert_eq!(
        stdout.len(),
        expected,
        "{}",
        String::from_utf8_lossy(stdout)
    );
    for poem in poems {
        let wanted = printed(poem);
        assert!(
            stdout.windows(wanted.len()).any(|w| w == wanted),
            "a poem is missing from:\n{}",
            String::from_utf8_lossy(stdout)
        );
    }
}

#[test]
fn the_blocking_client_downloads_from_blocking_servers_one_after_the_other() {
    let mut servers = Vec::new();
    for name in ["science.txt", "tyger.txt"] {
        let path = common::poem_path(name);
        let mut server = Child::start(
            example!("blocking-server"),
            [
                "--port=0",
                "--num-bytes",
                "300",
                "--delay",
                "0.01",
                path.to_str().unwrap(),
            ],
        );
        server.wait_for_stdout("its port", |out| out.ends_with(b".\n"));
        let banner = server.stdout.text();
        let port: u16 = banner
            .trim_end()
            .trim_end_matches('.')
            .rsplit(' ')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {banner:?}"));
        assert_eq!(
            banner,
            format!("Serving {} on port {port}.\n", path.display())
        );
        servers.push((server, port));
    }
    let (p1, p2) = (servers[0].1, servers[1].1);
    let out = run(
        example!("blocking-client"),
        [p1.to_string(), format!("127.0.0.1:{p2}")],
    );
    out.assert_success();
    assert_eq!(
        without_times(out.lines()),
        lines(&[
            &format!("Task 1: get poetry from: 127.0.0.1:{p1}"),
            &format!("Task 1: got 681 bytes of poetry from 127.0.0.1:{p1}"),
            &format!("Task 2: get poetry from: 127.0.0.1:{p2}"),
            &format!("Task 2: got 841 bytes of poetry from 127.0.0.1:{p2}"),
            "Got 2 poems",
        ])
    );
    // The first server sent 681 bytes in chunks of 300, one client at a time.
    let (server, _) = servers.remove(0);
    server.wait_for_stdout_lines_then_kill(&[
        "Sending 300 bytes",
        "Sending 300 bytes",
        "Sending 81 bytes",
    ]);
}

trait ServerLog {
    fn wait_for_stdout_lines_then_kill(self, wanted: &[&str]);
}

impl ServerLog for Child {
    fn wait_for_stdout_lines_then_kill(mut self, wanted: &[&str]) {
        let wanted: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
        self.wait_for_stdout("what it sent", |out| {
            let text = String::from_utf8_lossy(out);
            let sent: Vec<String> = text
                .lines()
                .filter(|l| l.starts_with("Sending"))
                .map(str::to_string)
                .collect();
            sent == wanted
        });
        let text = self.stdout.text();
        assert!(text.contains("Somebody at 127.0.0.1:"), "{text}");
    }
}

#[test]
fn the_async_client_interleaves_slow_downloads_and_counts_every_byte() {
    let science = Server::slow_poetry("science.txt", "100", "0.02");
    let tyger = Server::slow_poetry("tyger.txt", "100", "0.02");
    let out = run(example!("async-client"), [science.arg(), tyger.arg()]);
    out.assert_success();
    let lines = out.lines();
    assert_eq!(bytes_reported(&lines, 1), 681, "{lines:?}");
    assert_eq!(bytes_reported(&lines, 2), 841, "{lines:?}");
    // Each chunk is reported as it comes: 7 for science, 9 for the tyger, interleaved.
    let first_done = lines.iter().position(|l| l.ends_with("finished")).unwrap();
    assert!(
        lines[..first_done]
            .iter()
            .any(|l| l.starts_with("Task 1: got"))
    );
    assert!(
        lines[..first_done]
            .iter()
            .any(|l| l.starts_with("Task 2: got"))
    );
    assert!(lines.contains(&"Task 1 finished".to_string()));
    assert!(lines.contains(&"Task 2 finished".to_string()));
    let n = lines.len();
    assert_eq!(
        without_times(lines[n - 3..].to_vec()),
        [
            "Task 1: 681 bytes of poetry",
            "Task 2: 841 bytes of poetry",
            "Got 2 poems"
        ]
    );
}

#[test]
fn the_async_client_says_which_server_it_cannot_reach() {
    let port = closed_port();
    let out = run(example!("async-client"), [port.to_string()]);
    out.assert_code(1);
    assert_eq!(out.stdout_text(), "");
    assert!(
        out.stderr
            .starts_with(&format!("error: cannot connect to 127.0.0.1:{port}: ")),
        "{}",
        out.stderr
    );
}

#[test]
fn client_1_reads_from_the_reactors_add_reader_and_stops_after_the_last_socket() {
    let science = Server::slow_poetry("science.txt", "200", "0.02");
    let sonnet = Server::slow_poetry("sonnet18.txt", "200", "0.02");
    let out = run(example!("get-poetry-1"), [science.arg(), sonnet.arg()]);
    out.assert_success();
    let lines = out.lines();
    assert_eq!(bytes_reported(&lines, 1), 681, "{lines:?}");
    assert_eq!(bytes_reported(&lines, 2), 673, "{lines:?}");
    let got = |task: usize, port: u16| {
        lines
            .iter()
            .filter(|l| l.starts_with(&format!("Task {task}: got ")))
            .all(|l| l.ends_with(&format!(" bytes of poetry from 127.0.0.1:{port}")))
    };
    assert!(got(1, science.port) && got(2, sonnet.port), "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l.ends_with(" finished")).count(), 2);
    let n = lines.len();
    assert_eq!(
        without_times(lines[n - 3..].to_vec()),
        [
            "Task 1: 681 bytes of poetry",
            "Task 2: 673 bytes of poetry",
            "Got 2 poems"
        ]
    );
}

#[test]
fn client_2s_factory_numbers_the_tasks_and_reports_a_failed_connection() {
    let science = Server::slow_poetry("science.txt", "400", "0.02");
    let port = closed_port();
    let out = run(example!("get-poetry-2"), [science.arg(), port.to_string()]);
    out.assert_success();
    let lines = out.lines();
    assert_eq!(bytes_reported(&lines, 1), 681, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("Failed to connect to: 127.0.0.1:{port} ("))),
        "{lines:?}"
    );
    let peer = format!(" bytes of poetry from tcp:127.0.0.1:{}", science.port);
    let reports: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("Task 1: got "))
        .collect();
    assert!(
        !reports.is_empty() && reports.iter().all(|l| l.ends_with(&peer)),
        "{lines:?}"
    );
    let n = lines.len();
    assert_eq!(
        without_times(lines[n - 2..].to_vec()),
        ["Task 1: 681 bytes of poetry", "Got 2 poems"]
    );
}

#[test]
fn client_2_exits_non_zero_when_no_server_answers() {
    let out = run(example!("get-poetry-2"), [closed_port().to_string()]);
    out.assert_code(1);
    assert_eq!(out.stderr, "error: no poem came from the server\n");
}

#[test]
fn client_3_prints_each_poem_it_was_called_back_with() {
    let science = Server::poetry("science.txt");
    let tyger = Server::poetry("tyger.txt");
    let out = run(example!("get-poetry-3"), [science.arg(), tyger.arg()]);
    out.assert_success();
    assert_poems_printed(&out.stdout, &[poem("science.txt"), poem("tyger.txt")]);
}

#[test]
fn client_3_waits_forever_for_a_server_that_is_down_as_in_the_tutorial() {
    // No errback: client_connection_failed does nothing, so the reactor never stops.
    let mut client = Child::start(example!("get-poetry-3"), [closed_port().to_string()]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(client.running(), "client 3.0 should still be waiting");
    let out = client.interrupt(); // Ctrl-C stops the reactor cleanly
    out.assert_success();
    assert_eq!(out.stdout_text(), "");
}

#[test]
fn client_3_with_an_errback_reports_the_failure_and_prints_the_other_poem() {
    let sonnet = Server::poetry("sonnet18.txt");
    let port = closed_port();
    let out = run(
        example!("get-poetry-3-errback"),
        [port.to_string(), sonnet.arg()],
    );
    out.assert_success();
    assert_eq!(out.stdout, printed(&poem("sonnet18.txt")));
    assert!(
        out.stderr.starts_with(&format!(
            "Poem failed: connection refused by 127.0.0.1:{port}"
        )),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);

    let out = run(example!("get-poetry-3-errback"), [port.to_string()]);
    out.assert_code(1);
    assert!(
        out.stderr
            .ends_with("error: no poem came from the server\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn client_4_prints_three_poems_from_three_servers_byte_for_byte() {
    let names = ["science.txt", "tyger.txt", "sonnet18.txt"];
    let servers: Vec<Server> = names.iter().map(|n| Server::poetry(n)).collect();
    let out = run(example!("get-poetry-4"), servers.iter().map(Server::arg));
    out.assert_success();
    assert_eq!(out.stderr, "");
    let poems: Vec<Vec<u8>> = names.iter().map(|n| poem(n)).collect();
    assert_poems_printed(&out.stdout, &poems);
}

#[test]
fn client_4_prints_a_latin1_poem_as_its_bytes() {
    let latin1 = poem("nachtlied.latin1.txt");
    assert!(
        latin1.windows(4).any(|w| w == b"\xdcber"),
        "Ü in Latin-1, not UTF-8"
    );
    let server = Server::poetry("nachtlied.latin1.txt");
    let out = run(
        example!("get-poetry-4"),
        [format!("localhost:{}", server.port)],
    );
    out.assert_success();
    assert_eq!(out.stdout, printed(&latin1));
}

#[test]
fn client_4_goes_through_the_caching_proxy_twice() {
    let server = Server::poetry("tyger.txt");
    let proxy = Server::start(
        "proxy",
        &["--server", &format!("tcp:127.0.0.1:{}", server.port)],
    );
    for _ in 0..2 {
        let out = run(example!("get-poetry-4"), [proxy.arg()]);
        out.assert_success();
        assert_eq!(out.stdout, printed(&poem("tyger.txt")));
    }
    drop(server); // the poem is cached: the proxy no longer needs the server
    let out = run(example!("get-poetry-4"), [proxy.arg()]);
    out.assert_success();
    assert_eq!(out.stdout, printed(&poem("tyger.txt")));
}

#[test]
fn client_5_cummingsifies_or_keeps_the_poem_or_passes_gibberish_on() {
    let server = Server::poetry("science.txt");
    let science = poem("science.txt");

    let out = run(
        example!("get-poetry-5"),
        ["--cummingsify", "success", &server.arg()],
    );
    out.assert_success();
    assert_eq!(out.stdout, printed(&science.to_ascii_lowercase()));

    let out = run(
        example!("get-poetry-5"),
        ["--cummingsify=bug", &server.arg()],
    );
    out.assert_success();
    let mut expected = b"Cummingsify failed!\n".to_vec();
    expected.extend_from_slice(&printed(&science));
    assert_eq!(out.stdout, expected);

    let out = run(
        example!("get-poetry-5"),
        ["--cummingsify", "gibberish", &server.arg()],
    );
    out.assert_code(1);
    assert_eq!(out.stdout, b"");
    assert_eq!(
        out.stderr,
        "The poem download failed.\nerror: no poem came from the server\n"
    );
}

#[test]
fn client_6_has_the_transform_service_cummingsify_the_poems() {
    let xform = Server::transform();
    let science = Server::poetry("science.txt");
    let latin1 = Server::poetry("nachtlied.latin1.txt");
    let out = run(
        example!("get-poetry-6"),
        [xform.arg(), science.arg(), latin1.arg()],
    );
    out.assert_success();
    assert_eq!(out.stderr, "");
    assert_poems_printed(
        &out.stdout,
        &[
            poem("science.txt").to_ascii_lowercase(),
            poem("nachtlied.latin1.txt").to_ascii_lowercase(),
        ],
    );
}

#[test]
fn client_6_keeps_the_original_poem_when_the_transform_service_is_down() {
    let tyger = Server::poetry("tyger.txt");
    let out = run(
        example!("get-poetry-6"),
        [closed_port().to_string(), tyger.arg()],
    );
    out.assert_success();
    assert_eq!(out.stdout, printed(&poem("tyger.txt")));
    assert_eq!(out.stderr, "Cummingsify failed!\n");
}

#[test]
fn client_7_transforms_a_latin1_poem_changing_ascii_letters_only() {
    let xform = Server::transform();
    let server = Server::poetry("nachtlied.latin1.txt");
    let out = run(example!("get-poetry-7"), [xform.arg(), server.arg()]);
    out.assert_success();
    let latin1 = poem("nachtlied.latin1.txt");
    let lowered = latin1.to_ascii_lowercase();
    assert_eq!(out.stdout, printed(&lowered));
    // "Über" keeps its Latin-1 capital Ü (0xDC).
    assert!(lowered.starts_with(b"wandrers nachtlied"));
    assert!(lowered.windows(4).any(|w| w == b"\xdcber"));
}

#[test]
fn client_7_reports_a_failed_download_and_exits_non_zero_when_all_failed() {
    let xform = Server::transform();
    let port = closed_port();
    let out = run(example!("get-poetry-7"), [xform.arg(), port.to_string()]);
    out.assert_code(1);
    assert_eq!(out.stdout, b"");
    assert_eq!(
        out.stderr,
        format!(
            "The poem download failed: connection refused by 127.0.0.1:{port}: nothing is listening there\n\
             error: no poem came from the server\n"
        )
    );
}

#[test]
fn client_8_stops_once_the_deferred_list_has_every_result() {
    let xform = Server::transform();
    let sonnet = Server::poetry("sonnet18.txt");
    let tyger = Server::poetry("tyger.txt");
    let down = closed_port();
    let out = run(
        example!("get-poetry-8"),
        [xform.arg(), sonnet.arg(), down.to_string(), tyger.arg()],
    );
    out.assert_success();
    assert_poems_printed(
        &out.stdout,
        &[
            poem("sonnet18.txt").to_ascii_lowercase(),
            poem("tyger.txt").to_ascii_lowercase(),
        ],
    );
    assert!(
        out.stderr
            .starts_with("The poem download failed: connection refused"),
        "{}",
        out.stderr
    );
}

#[test]
fn client_8_falls_back_to_the_original_poem_without_the_transform_service() {
    let science = Server::poetry("science.txt");
    let out = run(
        example!("get-poetry-8"),
        [closed_port().to_string(), science.arg()],
    );
    out.assert_success();
    assert_eq!(out.stdout, printed(&poem("science.txt")));
    assert_eq!(out.stderr, "Cummingsify failed!\n");
}
