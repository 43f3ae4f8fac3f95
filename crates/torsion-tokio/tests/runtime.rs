//! The runtime's lifetime: the bridge's own runtime shuts down with the last reactor that
//! used it and starts afresh for the next; a runtime the program gave is never shut down.
//! One test, alone in its binary, since the runtime is the process's.

use std::time::Duration;

use torsion::Reactor;

/// Whether a task spawned on `handle` runs (a shut-down runtime drops it at once).
fn runs_tasks(handle: &tokio::runtime::Handle) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    drop(handle.spawn(async move {
        let _ = tx.send(());
    }));
    rx.recv_timeout(Duration::from_secs(2)).is_ok()
}

fn use_the_bridge_once() -> tokio::runtime::Handle {
    let reactor = Reactor::new().unwrap();
    let r = reactor.clone();
    let mut seen =
        torsion_tokio::defer_to_tokio_on(&reactor, async { tokio::runtime::Handle::current() })
            .add_both(move |handle| {
                let _ = r.stop();
                handle
            });
    reactor.run().unwrap();
    seen.take_result().unwrap().unwrap()
}

#[test]
fn the_bridge_runtime_shuts_down_with_its_last_reactor_and_a_given_one_does_not() {
    let first = use_the_bridge_once();
    assert!(
        !runs_tasks(&first),
        "the bridge's runtime outlived its reactor"
    );
    // The next reactor gets a fresh one.
    let second = use_the_bridge_once();
    assert!(!runs_tasks(&second));

    let given = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    torsion_tokio::set_runtime(given.handle().clone());
    let used = use_the_bridge_once();
    assert!(runs_tasks(&used), "the program's runtime was shut down");
    assert!(runs_tasks(given.handle()));
    torsion_tokio::clear_runtime();
}
