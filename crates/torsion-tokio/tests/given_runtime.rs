//! A runtime the program gave that shuts down under the bridge: the Deferreds of the tasks
//! it drops fail with `TokioShutDown` instead of never firing. Alone in its binary, since
//! the runtime is the process's.

mod common;

use std::time::Duration;

use torsion_tokio::{TokioShutDown, defer_to_tokio, in_flight};

#[test]
fn a_given_runtime_shutting_down_fails_the_deferreds_of_its_dropped_tasks() {
    let given = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    torsion_tokio::set_runtime(given.handle().clone());
    let given = std::sync::Mutex::new(Some(given));
    let outcome = common::run(10.0, move |reactor| async move {
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let running = defer_to_tokio(async move {
            let _ = started_tx.send(());
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        defer_to_tokio(started_rx).await??;
        // The program shuts its runtime down with the task in flight: the task is dropped.
        let rt = given.lock().unwrap().take().unwrap();
        rt.shutdown_timeout(Duration::from_secs(2));
        let failure = running.await.unwrap_err();
        assert!(failure.check::<TokioShutDown>(), "{failure}");
        // Spawning on the runtime that is gone drops the task at once.
        let late = defer_to_tokio(async { 1 }).await.unwrap_err();
        assert!(late.check::<TokioShutDown>(), "{late}");
        assert_eq!(in_flight(), 0);
        let _ = reactor;
        Ok(())
    });
    torsion_tokio::clear_runtime();
    outcome.unwrap();
}
