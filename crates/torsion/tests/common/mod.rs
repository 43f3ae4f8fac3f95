//! Shared by the integration tests: one test body per reactor backend.
#![allow(dead_code)]

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
