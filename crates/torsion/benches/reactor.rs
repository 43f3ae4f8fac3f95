//! Cross-thread hand-offs: `call_from_thread` against tokio's `Handle::spawn` on a
//! current-thread runtime, each measured in the same run.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

/// A torsion reactor running on its own thread.
fn torsion_reactor() -> (torsion::ReactorHandle, thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let join = thread::spawn(move || {
        let reactor = torsion::Reactor::new().unwrap();
        tx.send(reactor.handle()).unwrap();
        reactor.run().unwrap();
    });
    let handle = rx.recv().unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    handle.call_from_thread(move |_| ready_tx.send(()).unwrap());
    ready_rx.recv().unwrap();
    (handle, join)
}

/// A tokio current-thread runtime running on its own thread.
fn tokio_runtime() -> (
    tokio::runtime::Handle,
    tokio::sync::oneshot::Sender<()>,
    thread::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let join = thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tx.send(rt.handle().clone()).unwrap();
        rt.block_on(async {
            let _ = stop_rx.await;
        });
    });
    (rx.recv().unwrap(), stop_tx, join)
}

fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("call_from_thread_round_trip");
    group.measurement_time(Duration::from_secs(3));

    let (handle, join) = torsion_reactor();
    group.bench_function("torsion", |b| {
        let (tx, rx) = mpsc::sync_channel::<()>(1);
        b.iter(|| {
            let tx = tx.clone();
            handle.call_from_thread(move |_| tx.send(()).unwrap());
            rx.recv().unwrap();
        });
    });
    handle.stop();
    join.join().unwrap();

    let (rt, stop, join) = tokio_runtime();
    group.bench_function("tokio_handle_spawn", |b| {
        let (tx, rx) = mpsc::sync_channel::<()>(1);
        b.iter(|| {
            let tx = tx.clone();
            rt.spawn(async move { tx.send(()).unwrap() });
            rx.recv().unwrap();
        });
    });
    let _ = stop.send(());
    join.join().unwrap();
    group.finish();
}

fn burst(c: &mut Criterion) {
    const BURST: u32 = 10_000;
    let mut group = c.benchmark_group("call_from_thread_burst_10000");
    group.measurement_time(Duration::from_secs(3));

    let (handle, join) = torsion_reactor();
    group.bench_function("torsion", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let (tx, rx) = mpsc::sync_channel::<()>(1);
                for i in 0..BURST {
                    let tx = tx.clone();
                    handle.call_from_thread(move |_| {
                        if i == BURST - 1 {
                            tx.send(()).unwrap();
                        }
                    });
                }
                rx.recv().unwrap();
            }
            start.elapsed()
        });
    });
    handle.stop();
    join.join().unwrap();

    let (rt, stop, join) = tokio_runtime();
    group.bench_function("tokio_handle_spawn", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let (tx, rx) = mpsc::sync_channel::<()>(1);
                for i in 0..BURST {
                    let tx = tx.clone();
                    rt.spawn(async move {
                        if i == BURST - 1 {
                            tx.send(()).unwrap();
                        }
                    });
                }
                rx.recv().unwrap();
            }
            start.elapsed()
        });
    });
    let _ = stop.send(());
    join.join().unwrap();
    group.finish();
}

criterion_group!(benches, round_trip, burst);
criterion_main!(benches);
