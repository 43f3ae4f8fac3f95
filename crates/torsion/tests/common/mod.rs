//! Shared by the integration tests: one test body per reactor backend.
#![allow(dead_code)]

pub mod interop;
pub mod pki;

/// Defines each test once per backend: `fn name(reactor: Reactor) { .. }` becomes the tests
/// `name::epoll`, `name::poll`, … (torsion's one list of backends), each given a fresh
/// reactor on that backend.
#[macro_export]
macro_rules! reactor_test {
    ($(#[$meta:meta])* fn $name:ident($reactor:ident: Reactor) $body:block $($rest:tt)*) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn body($reactor: torsion::Reactor) $body
            torsion::__test_each_backend! {
                $(#[$meta])* |kind| {
                    body($crate::common::reactor_on(kind));
                    $crate::common::assert_not_timed_out();
                }
            }
        }
        $crate::reactor_test! { $($rest)* }
    };
    () => {};
}

pub fn reactor_on(kind: torsion::reactor::backend::BackendKind) -> torsion::Reactor {
    torsion::Reactor::builder()
        .backend(kind)
        .build()
        .expect("cannot build a reactor")
}

/// Stops `reactor` after `secs` whatever happens, so a broken test fails instead of hanging.
pub fn safety_stop(reactor: &torsion::Reactor, secs: f64) {
    use torsion::time::ReactorTime;
    let r = reactor.clone();
    let call = reactor.call_later(secs, move || {
        TIMED_OUT.with(|t| t.set(true));
        let _ = r.stop();
    });
    // Cancelled at shutdown so it does not fire after a normal stop.
    let r = reactor.clone();
    reactor.add_system_event_trigger(
        torsion::reactor::Phase::Before,
        torsion::reactor::SystemEvent::Shutdown,
        move || {
            let _ = call.cancel();
            drop(r);
        },
    );
}

thread_local! {
    static TIMED_OUT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Fails the test if a [`safety_stop`] had to stop its reactor.
pub fn assert_not_timed_out() {
    assert!(
        !TIMED_OUT.with(|t| t.replace(false)),
        "safety stop: the test did not finish in time"
    );
}

/// Echoes everything back: the servers of many tests.
#[derive(Default)]
pub struct Echo(Option<torsion::net::Transport>);

impl torsion::protocol::Protocol for Echo {
    fn connection_made(&mut self, transport: torsion::net::Transport) {
        self.0 = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.0 {
            t.write(data);
        }
    }
}

torsion::error_type!(
    /// The error tests fail with.
    pub Boom, "boom"
);

/// What a test's callbacks saw, in order.
pub type Log = std::rc::Rc<std::cell::RefCell<Vec<String>>>;

/// An empty [`Log`].
pub fn log() -> Log {
    Log::default()
}

/// Appends to a [`Log`].
pub fn push(log: &Log, s: impl Into<String>) {
    log.borrow_mut().push(s.into());
}

/// Listens on an ephemeral port of 127.0.0.1; returns the port and its number.
pub fn listen_local(
    reactor: &torsion::Reactor,
    factory: std::rc::Rc<impl torsion::protocol::Factory>,
) -> (torsion::net::Port, u16) {
    let options = torsion::net::tcp::ListenOptions {
        interface: [127, 0, 0, 1].into(),
        ..Default::default()
    };
    let port = reactor
        .listen_tcp_with(0, factory, options)
        .expect("cannot listen on 127.0.0.1");
    let n = port.host().port().expect("a TCP port");
    (port, n)
}

/// A fresh directory under the system's temporary directory, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// A new empty directory, named after this process and a counter.
    pub fn new() -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("torsion-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cannot create a temporary directory");
        TempDir(dir)
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs this test binary again with only its test named `child`, the environment variable
/// `var` set to `value` (which tells the child what to do), and returns the child's exit
/// code and stderr: for behaviour that is per process (exit codes, signals, the global
/// logging subscriber).
pub fn run_child(var: &str, value: &str) -> (Option<i32>, String) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(exe)
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(var, value)
        // As a user runs it: what it prints does not change with the tester's settings.
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("cannot run the test binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
