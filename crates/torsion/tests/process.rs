//! Child processes with real programs (Twisted's `test_process.py`): pipes both ways with
//! flow control, exit codes and signals, a missing program, a grandchild holding the pipes,
//! many children and no zombies, a pty, extra descriptors, and the Deferred helpers; closing
//! the pipes (`lose_connection`, `close_stdout`, `close_stderr`), signals by name and number.

mod common;

use std::cell::RefCell;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use common::{Log, log, push, safety_stop};
use torsion::error::{CannotSpawn, ProcessDone, ProcessExitedAlready, ProcessTerminated};
use torsion::net::Producer;
use torsion::process::{
    ChildFd, ProcessProtocol, ProcessSpec, ProcessTransport, Signal, get_process_output,
    get_process_output_and_value, get_process_value,
};
use torsion::time::ReactorTime;
use torsion::{Failure, Reactor};

/// Called with each chunk of the child's standard output.
type OnOut = Box<dyn FnMut(&ProcessTransport, &[u8])>;

/// Records every event, with the data, and stops the reactor when the process ends.
struct Recorder {
    log: Log,
    out: Rc<RefCell<Vec<u8>>>,
    err: Rc<RefCell<Vec<u8>>>,
    reactor: Reactor,
    transport: Option<ProcessTransport>,
    on_out: Option<OnOut>,
}

impl Recorder {
    fn new(reactor: &Reactor, log: &Log) -> Recorder {
        Recorder {
            log: log.clone(),
            out: Rc::default(),
            err: Rc::default(),
            reactor: reactor.clone(),
            transport: None,
            on_out: None,
        }
    }
}

fn describe(reason: &Failure) -> String {
    if reason.check::<ProcessDone>() {
        "done".into()
    } else if let Some(t) = reason.downcast_ref::<ProcessTerminated>() {
        format!("terminated code={:?} signal={:?}", t.exit_code, t.signal)
    } else {
        format!("other: {reason}")
    }
}

impl ProcessProtocol for Recorder {
    fn connection_made(&mut self, transport: ProcessTransport) {
        push(&self.log, "made");
        self.transport = Some(transport);
    }
    fn child_data_received(&mut self, child_fd: RawFd, data: &[u8]) {
        match child_fd {
            1 => {
                self.out.borrow_mut().extend_from_slice(data);
                if let (Some(f), Some(t)) = (&mut self.on_out, &self.transport) {
                    f(t, data);
                }
            }
            2 => self.err.borrow_mut().extend_from_slice(data),
            fd => push(
                &self.log,
                format!("data {fd} {}", String::from_utf8_lossy(data)),
            ),
        }
    }
    fn child_connection_lost(&mut self, child_fd: RawFd) {
        push(&self.log, format!("lost {child_fd}"));
    }
    fn process_exited(&mut self, reason: Failure) {
        push(&self.log, format!("exited {}", describe(&reason)));
    }
    fn process_ended(&mut self, reason: Failure) {
        push(&self.log, format!("ended {}", describe(&reason)));
        let _ = self.reactor.stop();
    }
}

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec::new("/bin/sh").args(["-c", script])
}

fn events(log: &Log) -> Vec<String> {
    log.borrow().clone()
}

reactor_test! {
    fn output_error_and_a_clean_exit(reactor: Reactor) {
        safety_stop(&reactor, 10.0);
        let log = log();
        let recorder = Recorder::new(&reactor, &log);
        let (out, err) = (recorder.out.clone(), recorder.err.clone());
        let process = reactor
            .spawn_process(recorder, sh("echo out; echo err >&2"))
            .unwrap();
        assert!(process.pid().is_some());
        reactor.run().unwrap();
        assert_eq!(&*out.borrow(), b"out\n");
        assert_eq!(&*err.borrow(), b"err\n");
        let seen = events(&log);
        assert_eq!(seen.first().map(String::as_str), Some("made"));
        assert_eq!(seen.last().map(String::as_str), Some("ended done"));
        for event in ["lost 0", "lost 1", "lost 2", "exited done"] {
            assert!(seen.iter().any(|e| e == event), "{event} missing from {seen:?}");
        }
        assert_eq!(process.pid(), None, "no pid once reaped");
        assert!(process.has_exited());
    }

    fn a_non_zero_exit_is_process_terminated_with_its_code(reactor: Reactor) {
        safety_stop(&reactor, 10.0);
        let log = log();
        reactor.spawn_process(Recorder::new(&reactor, &log), sh("exit 3")).unwrap();
        reactor.run().unwrap();
        assert!(events(&log).contains(&"ended terminated code=Some(3) signal=None".to_string()));
    }

    fn cat_echoes_ten_mebibytes_through_stdin_and_stdout_with_flow_control(reactor: Reactor) {
        safety_stop(&reactor, 30.0);
        const TOTAL: usize = 10 * 1024 * 1024;
        /// Writes numbered chunks to the child's stdin until paused, as a push producer.
        struct Feeder {
            transport: RefCell<Option<ProcessTransport>>,
            sent: RefCell<usize>,
            paused: RefCell<bool>,
            pauses: RefCell<usize>,
            max_buffered: RefCell<usize>,
        }
        impl Feeder {
            fn feed(&self) {
                let Some(t) = self.transport.borrow().clone() else { return };
                while !*self.paused.borrow() && *self.sent.borrow() < TOTAL {
                    let start = *self.sent.borrow();
                    let chunk: Vec<u8> = (start..start + 8192).map(|i| (i % 251) as u8).collect();
                    *self.sent.borrow_mut() += chunk.len();
                    t.write(&chunk);
                    let b = t.buffered();
                    let mut max = self.max_buffered.borrow_mut();
                    *max = (*max).max(b);
                }
                if *self.sent.borrow() >= TOTAL {
                    t.unregister_producer();
                    t.close_stdin();
                }
            }
        }
        impl Producer for Feeder {
            fn resume_producing(&self) {
                *self.paused.borrow_mut() = false;
                self.feed();
            }
            fn pause_producing(&self) {
                *self.paused.borrow_mut() = true;
                *self.pauses.borrow_mut() += 1;
            }
            fn stop_producing(&self) {}
        }
        let feeder = Rc::new(Feeder {
            transport: RefCell::new(None),
            sent: RefCell::new(0),
            paused: RefCell::new(false),
            pauses: RefCell::new(0),
            max_buffered: RefCell::new(0),
        });
        let log = log();
        let recorder = Recorder::new(&reactor, &log);
        let out = recorder.out.clone();
        let process = reactor.spawn_process(recorder, ProcessSpec::new("cat")).unwrap();
        *feeder.transport.borrow_mut() = Some(process.clone());
        process.register_producer(feeder.clone(), true).unwrap();
        feeder.feed();
        reactor.run().unwrap();
        let out = out.borrow();
        assert_eq!(out.len(), TOTAL);
        assert!(out.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8), "bytes changed on the way");
        assert!(*feeder.pauses.borrow() > 0, "the producer was never paused");
        assert!(*feeder.max_buffered.borrow() <= 64 * 1024 + 8192, "buffered {}", feeder.max_buffered.borrow());
        assert!(events(&log).contains(&"ended done".to_string()));
    }

    fn pausing_the_transport_stops_reading_the_child(reactor: Reactor) {
        safety_stop(&reactor, 10.0);
        let log = log();
        let recorder = Recorder::new(&reactor, &log);
        let out = recorder.out.clone();
        let process = reactor.spawn_process(recorder, sh("echo one; sleep 0.3; echo two")).unwrap();
        process.pause_producing();
        let (p, o, r) = (process.clone(), out.clone(), reactor.clone());
        reactor.call_later(0.6, move || {
            assert!(o.borrow().is_empty(), "read while paused");
            p.resume_producing();
            drop(r);
        });
        reactor.run().unwrap();
        assert_eq!(&*out.borrow(), b"one\ntwo\n");
    }

    fn a_child_that_ignores_sigterm_is_then_killed(reactor: Reactor) {
        safety_stop(&reactor, 10.0);
        let log = log();
        let mut recorder = Recorder::new(&reactor, &log);
        let (l, r) = (log.clone(), reactor.clone());
        recorder.on_out = Some(Box::new(move |t, data| {
            if data.starts_with(b"ready") {
                t.signal_process(Signal::TERM).unwrap();
                push(&l, "sent TERM");
                let (t, l) = (t.clone(), l.clone());
                r.call_later(0.3, move || {
                    assert!(!t.has_exited(), "SIGTERM was not ignored");
                    push(&l, "sent KILL");
                    t.signal_process("KILL".parse().unwrap()).unwrap();
                });
            }
        }));
        let process = reactor
            .spawn_process(recorder, sh("trap '' TERM; echo ready; while :; do sleep 0.05; done"))
            .unwrap();
        reactor.run().unwrap();
        let seen = events(&log);
        assert!(seen.contains(&"ended terminated code=None signal=Some(9)".to_string()), "{seen:?}");
        let err = process.signal_process(Signal::TERM).unwrap_err();
        assert!(err.check::<ProcessExitedAlready>());
    }

    fn a_missing_program_is_an_error_naming_it(reactor: Reactor) {
        let log = log();
        let err = reactor
            .spawn_process(Recorder::new(&reactor, &log), ProcessSpec::new("/no/such/program-x"))
            .err()
            .expect("spawned a missing program");
        let cannot = err.downcast_ref::<CannotSpawn>().expect("CannotSpawn");
        assert_eq!(cannot.program, "/no/such/program-x");
        assert_eq!(cannot.source.kind(), std::io::ErrorKind::NotFound);
        assert!(err.to_string().contains("/no/such/program-x"));
        assert!(events(&log).is_empty(), "the protocol heard of a process that never was");
        let err = reactor
            .spawn_process(Recorder::new(&reactor, &log), ProcessSpec::new("/etc/passwd"))
            .err()
            .expect("spawned a file that is not executable");
        assert_eq!(err.downcast_ref::<CannotSpawn>().unwrap().source.kind(), std::io::ErrorKind::PermissionDenied);
    }

    fn lose_connection_closes_the_pipes_and_cat_exits_on_the_end_of_its_input(reactor: Reactor) {
        safety_stop(&reactor, 10.0);
        let log = log();
        let process = reactor.spawn_process(Recorder::new(&reactor, &log), ProcessSpec::new("cat")).unwrap();
        process.lose_connection();
        reactor.run().unwrap();
        let seen = events(&log);
        assert_eq!(seen.last().map(String::as_str), Some("ended done"), "{seen:?}");
        for event in ["lost 0", "lost 1", "lost 2", "exited done"] {
            assert!(seen.iter().any(|e| e == event), "{event} missing from {seen:?}");
        }
        assert!(process.has_exited());
        // Closed: what is written now goes nowhere, and says nothing.
        process.write(b"too late");
        assert!(process.write_to_child(0, b"too late").is_err());
    }

    fn close_stdout_breaks_the_childs_stdout_while_its_stderr_still_arrives(reactor: Reactor) {
        safety_stop(&reactor, 10.0);
        let log = log();
        let recorder = Recorder::new(&reactor, &log);
        let (out, err) = (recorder.out.clone(), recorder.err.clone());
        // `yes` writes to stdout until it fails; the shell then reports how it ended on
        // stderr and becomes a `yes` itself. Every signal starts at its default in the
        // child (spawn.rs), so a write to the closed pipe is SIGPIPE (141 = 128 + 13).
        let script = "echo before >&2; yes; echo \"yes ended $?\" >&2; exec yes";
        let process = reactor.spawn_process(recorder, sh(script)).unwrap();
        process.close_stdout();
        reactor.run().unwrap();
        assert!(out.borrow().is_empty(), "read {} bytes after close_stdout", out.borrow().len());
        assert_eq!(String::from_utf8_lossy(&err.borrow()), "before\nyes ended 141\n");
        let seen = events(&log);
        let lost = seen.iter().position(|e| e == "lost 1").expect("stdout loss");
        let exited = seen.iter().position(|e| e.starts_with("exited")).expect("exited");
        assert!(lost < exited, "{seen:?}");
        assert_eq!(seen.last().map(String::as_str), Some("ended terminated code=None signal=Some(13)"), "{seen:?}");
    }

    fn close_stderr_breaks_the_childs_stderr_while_its_stdout_still_arrives(reactor: Reactor) {
        safety_stop(&reactor, 10.0);
        let log = log();
        let recorder = Recorder::new(&reactor, &log);
        let (out, err) = (recorder.out.clone(), recorder.err.clone());
        let script = "echo before; yes >&2; echo \"yes ended $?\"; exec yes >&2";
        let process = reactor.spawn_process(recorder, sh(script)).unwrap();
        process.close_stderr();
        reactor.run().unwrap();
        assert!(err.borrow().is_empty(), "read {} bytes after close_stderr", err.borrow().len());
        assert_eq!(String::from_utf8_lossy(&out.borrow()), "before\nyes ended 141\n");
        let seen = events(&log);
        let lost = seen.iter().position(|e| e == "lost 2").expect("stderr loss");
        let exited = seen.iter().position(|e| e.starts_with("exited")).expect("exited");
        assert!(lost < exited, "{seen:?}");
        assert_eq!(seen.last().map(String::as_str), Some("ended terminated code=None signal=Some(13)"), "{seen:?}");
    }

    fn signal_process_by_name_ends_the_child_with_that_signal(reactor: Reactor) {
        check_signal_ends_sleep(&reactor, "INT", libc::SIGINT);
    }

    fn signal_process_by_number_ends_the_child_with_that_signal(reactor: Reactor) {
        check_signal_ends_sleep(&reactor, "15", libc::SIGTERM);
    }

    fn a_bad_inherited_descriptor_is_an_error_not_a_panic(reactor: Reactor) {
        let log = log();
        for fd in [-1, 1_000_000] {
            let spec = sh("true").child_fds([(1, ChildFd::Inherit(fd))]);
            let err = reactor
                .spawn_process(Recorder::new(&reactor, &log), spec)
                .err()
                .expect("spawned with a descriptor that is not open");
            assert!(err.to_string().contains("not open"), "{err}");
        }
        assert!(events(&log).is_empty());
    }

    fn exited_is_reported_while_a_grandchild_holds_stdout(reactor: Reactor) {
        safety_stop(&reactor, 10.0);
        let log = log();
        reactor.spawn_process(Recorder::new(&reactor, &log), sh("sleep 1 & echo started")).unwrap();
        reactor.run().unwrap();
        let seen = events(&log);
        let exited = seen.iter().position(|e| e == "exited done").expect("exited");
        let out_lost = seen.iter().position(|e| e == "lost 1").expect("stdout closed");
        let ended = seen.iter().position(|e| e == "ended done").expect("ended");
        assert!(exited < out_lost, "exit waited for the grandchild: {seen:?}");
        assert!(out_lost < ended);
    }

    fn five_hundred_short_children_leave_no_zombies(reactor: Reactor) {
        safety_stop(&reactor, 60.0);
        const N: usize = 500;
        struct Counter(Rc<RefCell<usize>>, Reactor);
        impl ProcessProtocol for Counter {
            fn process_ended(&mut self, reason: Failure) {
                assert!(reason.check::<ProcessDone>(), "{reason}");
                *self.0.borrow_mut() += 1;
                if *self.0.borrow() == N {
                    let _ = self.1.stop();
                }
            }
        }
        let done = Rc::new(RefCell::new(0));
        let mut pids = Vec::new();
        for _ in 0..N {
            let p = reactor.spawn_process(Counter(done.clone(), reactor.clone()), ProcessSpec::new("true")).unwrap();
            pids.push(p.pid().unwrap());
        }
        reactor.run().unwrap();
        assert_eq!(*done.borrow(), N);
        for pid in pids {
            // Reaped: no /proc entry left (a zombie keeps one, with state Z).
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                let state = stat.rsplit(')').next().and_then(|s| s.split_whitespace().next());
                assert_ne!(state, Some("Z"), "pid {pid} is a zombie");
            }
        }
    }

    fn a_child_closing_its_stdin_is_noticed_without_writing(reactor: Reactor) {
        safety_stop(&reactor, 10.0);
        let log = log();
        reactor.spawn_process(Recorder::new(&reactor, &log), sh("exec 0<&-; sleep 0.3; echo x")).unwrap();
        reactor.run().unwrap();
        let seen = events(&log);
        let stdin = seen.iter().position(|e| e == "lost 0").expect("stdin loss");
        let exited = seen.iter().position(|e| e == "exited done").expect("exited");
        assert!(stdin < exited, "{seen:?}");
    }

    fn extra_descriptors_environment_and_working_directory(reactor: Reactor) {
        safety_stop(&reactor, 10.0);
        let log = log();
        let recorder = Recorder::new(&reactor, &log);
        let out = recorder.out.clone();
        let spec = sh("echo three >&3; echo \"$FOO\"; pwd; read line <&4; echo \"got $line\"")
            .env("FOO", "bar")
            .path("/tmp")
            .child_fd(3, ChildFd::Read)
            .child_fd(4, ChildFd::Write);
        let process = reactor.spawn_process(recorder, spec).unwrap();
        process.write_to_child(4, b"hello\n").unwrap();
        process.close_child_fd(4);
        assert!(process.write_to_child(7, b"x").is_err());
        reactor.run().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.borrow()), "bar\n/tmp\ngot hello\n");
        assert!(events(&log).contains(&"data 3 three\n".to_string()));
    }

    fn an_inherited_descriptor_is_passed_through(reactor: Reactor) {
        safety_stop(&reactor, 10.0);
        let (read, write) = rustix::pipe::pipe().unwrap();
        let log = log();
        let spec = sh("echo through").child_fds([(1, ChildFd::Inherit(write.as_raw_fd()))]);
        reactor.spawn_process(Recorder::new(&reactor, &log), spec).unwrap();
        reactor.run().unwrap();
        drop(write);
        let mut got = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(read), &mut got).unwrap();
        assert_eq!(got, "through\n");
    }

    fn a_child_on_a_pty_sees_a_terminal(reactor: Reactor) {
        safety_stop(&reactor, 10.0);
        let log = log();
        let mut recorder = Recorder::new(&reactor, &log);
        let out = recorder.out.clone();
        recorder.on_out = Some(Box::new(|t, data| {
            if data.windows(5).any(|w| w == b"ready") {
                t.write(b"typed\n");
            }
        }));
        let spec = sh("tty; echo ready; read x; echo \"read $x\"").use_pty(true);
        reactor.spawn_process(recorder, spec).unwrap();
        reactor.run().unwrap();
        let text = String::from_utf8_lossy(&out.borrow()).into_owned();
        assert!(text.starts_with("/dev/pts/"), "{text:?}");
        assert!(text.contains("read typed"), "{text:?}");
        assert!(events(&log).iter().any(|e| e == "ended done"));
        let err = reactor
            .spawn_process(Recorder::new(&reactor, &log), sh("true").use_pty(true).child_fd(3, ChildFd::Read))
            .err()
            .expect("a pty with a descriptor map");
        assert!(err.to_string().contains("pty"), "{err}");
    }

    fn a_panicking_protocol_is_logged_and_the_child_still_reaped(reactor: Reactor) {
        safety_stop(&reactor, 10.0);
        let log = log();
        let mut recorder = Recorder::new(&reactor, &log);
        recorder.on_out = Some(Box::new(|_, _| panic!("protocol bug")));
        reactor.spawn_process(recorder, sh("echo boom; sleep 0.1")).unwrap();
        reactor.run().unwrap();
        assert!(events(&log).iter().any(|e| e.starts_with("ended")), "{:?}", events(&log));
    }

    fn the_deferred_helpers(reactor: Reactor) {
        safety_stop(&reactor, 10.0);
        let mut output = get_process_output(&reactor, sh("printf 'a\\nb'"));
        let mut with_err = get_process_output(&reactor, sh("echo oops >&2"));
        let mut value = get_process_value(&reactor, sh("exit 7"));
        let mut killed = get_process_value(&reactor, sh("kill -9 $$"));
        let mut both = get_process_output_and_value(&reactor, sh("cat; echo e >&2; exit 2"));
        let mut missing = get_process_output(&reactor, ProcessSpec::new("/no/such/x"));
        let mut cancelled = get_process_value(&reactor, ProcessSpec::new("sleep").arg("30"));
        cancelled.cancel();
        let r = reactor.clone();
        reactor.call_later(1.5, move || { let _ = r.stop(); });
        reactor.run().unwrap();
        assert_eq!(output.take_result().unwrap().unwrap(), b"a\nb");
        let err = with_err.take_result().unwrap().unwrap_err();
        assert!(err.to_string().contains("oops"), "{err}");
        assert_eq!(value.take_result().unwrap().unwrap(), 7);
        let err = killed.take_result().unwrap().unwrap_err();
        assert_eq!(err.downcast_ref::<ProcessTerminated>().unwrap().signal, Some(9));
        let both = both.take_result().unwrap().unwrap();
        assert_eq!((both.stdout.as_slice(), both.stderr.as_slice(), both.exit_code), (&b""[..], &b"e\n"[..], Some(2)));
        assert!(missing.take_result().unwrap().unwrap_err().check::<CannotSpawn>());
        assert!(cancelled.take_result().unwrap().unwrap_err().check::<torsion::error::Cancelled>());
    }
}

/// Sends `sleep 30` the signal `name` parses to, and checks it ends the child with
/// ProcessTerminated carrying `number`.
fn check_signal_ends_sleep(reactor: &Reactor, name: &str, number: i32) {
    safety_stop(reactor, 10.0);
    let log = log();
    let process = reactor
        .spawn_process(
            Recorder::new(reactor, &log),
            ProcessSpec::new("sleep").arg("30"),
        )
        .unwrap();
    let signal: Signal = name.parse().unwrap();
    assert_eq!(signal.number(), number);
    process.signal_process(signal).unwrap();
    reactor.run().unwrap();
    let seen = events(&log);
    let ended = format!("ended terminated code=None signal=Some({number})");
    assert_eq!(seen.last(), Some(&ended), "{seen:?}");
    assert!(
        seen.contains(&format!(
            "exited terminated code=None signal=Some({number})"
        )),
        "{seen:?}"
    );
}

/// A name or number that is no signal is an `InvalidArgument` naming it, not a panic.
#[test]
fn an_unknown_signal_is_a_typed_error() {
    for bad in ["NOPE", "SIGNOPE", "", "99999", "-1", "0"] {
        let err: torsion::error::InvalidArgument = bad.parse::<Signal>().unwrap_err();
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
    assert_eq!(Signal::from_number(99999), None);
    assert_eq!("sigint".parse::<Signal>().unwrap(), Signal::INT);
}

/// A program that cannot be run leaves no zombie and no descriptor behind: checked in a
/// child run of this binary, which has no other children for `waitid` to find.
#[test]
fn a_missing_program_leaves_no_zombie_and_no_descriptor() {
    let (code, stderr) = common::run_child("TORSION_TEST_MISSING_PROGRAM", "1");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("no child and no descriptor left"),
        "the check did not run: {stderr}"
    );
}

fn missing_program_child() {
    let reactor = Reactor::new().unwrap();
    let open_fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let before = open_fds();
    for program in [
        "/no/such/program-x",
        "no-such-program-on-path-x",
        "/etc/passwd",
    ] {
        let log = log();
        let err = reactor
            .spawn_process(Recorder::new(&reactor, &log), ProcessSpec::new(program))
            .err()
            .unwrap_or_else(|| panic!("spawned {program}"));
        assert!(err.check::<CannotSpawn>(), "{err}");
    }
    // ECHILD: no child at all, running or a zombie waiting to be reaped.
    let waited = rustix::process::waitid(
        rustix::process::WaitId::All,
        rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOHANG,
    );
    assert!(
        matches!(waited, Err(rustix::io::Errno::CHILD)),
        "a child is left: {:?}",
        waited.map(|s| s.map(|s| s.exit_status()))
    );
    assert_eq!(open_fds(), before, "a descriptor is left open");
    eprintln!("no child and no descriptor left");
}

/// With `ulimit -n` at 1,000,000 (or as high as the machine lets it go), a spawn does not hand the child a descriptor it was not
/// given, even one opened without close-on-exec near the top of the range. (How long the
/// spawn takes is measured by the `process` benchmark, not here.)
#[test]
fn a_high_descriptor_limit_leaks_nothing_into_the_child() {
    let (code, stderr) = common::run_child("TORSION_TEST_HIGH_NOFILE", "1");
    assert_eq!(code, Some(0), "{stderr}");
}

/// What a child run of this binary does ([`common::run_child`]).
#[test]
fn child() {
    if std::env::var_os("TORSION_TEST_MISSING_PROGRAM").is_some() {
        missing_program_child();
    } else if std::env::var_os("TORSION_TEST_HIGH_NOFILE").is_some() {
        high_nofile_child();
    }
}

fn high_nofile_child() {
    // 1,000,000 where the sandbox allows raising the hard limit; else as high as it goes.
    let wanted = rustix::process::Rlimit {
        current: Some(1_000_000),
        maximum: Some(1_000_000),
    };
    if rustix::process::setrlimit(rustix::process::Resource::Nofile, wanted).is_err() {
        let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
        let limit = rustix::process::Rlimit {
            current: hard,
            maximum: hard,
        };
        rustix::process::setrlimit(rustix::process::Resource::Nofile, limit).unwrap();
    }
    let top = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1_000_000)
        .min(1_000_000) as i32;
    eprintln!("descriptor limit {top}");
    let file = std::fs::File::open("/dev/null").unwrap();
    let mut high = rustix::io::fcntl_dupfd_cloexec(&file, top - 2).unwrap();
    // Not close-on-exec: what a careless library might leave open.
    rustix::io::dup2(&file, &mut high).unwrap();
    rustix::io::fcntl_setfd(&high, rustix::io::FdFlags::empty()).unwrap();
    let reactor = Reactor::new().unwrap();
    let r = reactor.clone();
    let mut listing = get_process_output(&reactor, ProcessSpec::new("ls").arg("/proc/self/fd"))
        .map(move |out| {
            let _ = r.stop();
            out
        });
    let r = reactor.clone();
    reactor.call_later(5.0, move || {
        let _ = r.stop();
    });
    reactor.run().unwrap();
    let out = listing.take_result().expect("ls did not finish").unwrap();
    let fds: Vec<String> = String::from_utf8_lossy(&out)
        .split_whitespace()
        .map(String::from)
        .collect();
    assert!(
        !fds.contains(&high.as_raw_fd().to_string()),
        "leaked {} into the child: {fds:?}",
        high.as_raw_fd()
    );
}

/// Every test of this file again, with exits watched through SIGCHLD instead of pidfds
/// (the path kernels before 5.3 take), in a child run of this binary.
#[test]
fn every_process_test_passes_with_the_sigchld_reaper() {
    if std::env::var_os("TORSION_REAPER").is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(exe)
        .args([
            "--skip",
            "every_process_test_passes_with_the_sigchld_reaper",
            "--skip",
            "a_high_descriptor_limit",
        ])
        .env("TORSION_REAPER", "sigchld")
        .output()
        .expect("cannot run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("test result: ok"), "{stdout}");
}

/// Under the SIGCHLD reaper, a child spawned by other code (`std::process`) is left to
/// that code: torsion waits for its own children by pid only.
#[test]
fn the_sigchld_reaper_leaves_other_children_alone() {
    if std::env::var_os("TORSION_REAPER").is_none() {
        return;
    }
    let mut other = std::process::Command::new("sh")
        .args(["-c", "sleep 0.3; exit 5"])
        .spawn()
        .unwrap();
    let reactor = Reactor::new().unwrap();
    let r = reactor.clone();
    let mut value = get_process_value(&reactor, sh("sleep 0.1; exit 4")).map(move |v| {
        let _ = r.stop();
        v
    });
    reactor.run().unwrap();
    assert_eq!(value.take_result().unwrap().unwrap(), 4);
    assert_eq!(other.wait().unwrap().code(), Some(5));
}
