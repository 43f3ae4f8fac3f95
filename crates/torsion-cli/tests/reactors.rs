//! The runner's reactor choices end to end: `--reactor io_uring|auto`, and `--workers N`
//! (N reactors on N threads sharing the port with `SO_REUSEPORT`).

use std::net::{SocketAddr, TcpListener};

use rustix::process::Signal;
use torsion::reactor::backend::BackendKind;

mod common;
use common::*;

/// A loopback port free a moment ago, for runners whose workers must agree on one (with
/// port 0 each worker would get its own).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// How many sockets of process `pid` listen on `port` (its /proc/PID/net/tcp, state 0A).
fn listening_sockets(pid: u32, port: u16) -> usize {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).expect("net/tcp");
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[1].ends_with(&local) && fields[3] == "0A"
        })
        .count()
}

#[test]
fn io_uring_and_auto_serve_echo_and_the_log_names_the_backend() {
    if let Err(err) = BackendKind::IoUring.probe() {
        assert!(
            std::env::var_os("TORSION_REQUIRE_IO_URING").is_none_or(|v| v != "1"),
            "io_uring is required: {err}"
        );
        eprintln!("skipped: {err}");
        return;
    }
    for choice in ["io_uring", "auto"] {
        let mut runner =
            Torsion::start(["--reactor", choice, "echo", "--listen", ANY_LOOPBACK_PORT]);
        let addr = runner.listening();
        assert_eq!(fetch_echo(addr, b"over the ring"), b"over the ring");
        let started = runner.wait_for_log("saying it started", |l| l.contains(" started: "));
        assert!(started.contains("reactor io_uring"), "{choice}: {started}");
        runner.signal(Signal::TERM);
        runner.stop().assert_code(0);
    }
}

#[test]
fn two_workers_both_listen_on_the_port_serve_every_client_and_stop_together() {
    let port = free_port();
    let listen = format!("tcp:{port}:interface=127.0.0.1");
    let mut runner = Torsion::start(["--workers", "2", "echo", "--listen", listen.as_str()]);
    let started = runner.wait_for_log("saying it started", |l| l.contains(" started: "));
    assert!(started.contains("2 workers"), "{started}");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    assert_eq!(
        listening_sockets(runner.pid(), port),
        2,
        "one listening socket per worker"
    );
    let threads = std::fs::read_dir(format!("/proc/{}/task", runner.pid()))
        .expect("tasks")
        .count();
    assert!(threads >= 2, "{threads} threads");
    for i in 0..50u32 {
        let data = format!("client {i}");
        assert_eq!(fetch_echo(addr, data.as_bytes()), data.as_bytes());
    }
    runner.signal(Signal::TERM);
    let stopped = runner.stop();
    stopped.assert_code(0);
    assert!(
        stopped
            .log_lines
            .iter()
            .any(|l| l.contains("\"stopped\"") || l.contains("stopped")),
        "{:?}",
        stopped.log_lines
    );
}

#[test]
fn workers_on_a_port_another_program_holds_fail_to_start_together_with_the_reason() {
    // A listener without SO_REUSEPORT: no worker can share its port.
    let holder = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = holder.local_addr().expect("address").port();
    let listen = format!("tcp:{port}:interface=127.0.0.1");
    let stopped = Torsion::run(["--workers", "3", "echo", "--listen", listen.as_str()]);
    stopped.assert_code(1);
    assert!(
        stopped.stderr.contains("could not start") && stopped.stderr.contains("in use"),
        "{}",
        stopped.stderr
    );
    drop(holder);
}
