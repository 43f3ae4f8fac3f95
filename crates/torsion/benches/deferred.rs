//! Deferred costs, each next to a tokio (or plain Rust) counterpart in the same group so
//! that ratios can be read from one run.
//!
//! ```text
//! cargo bench -p torsion --bench deferred -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! - `fire_10_callbacks`: a Deferred, 10 `add_callback`s, fire, `take_result` (divide by 10
//!   for the cost per callback); a tokio oneshot send and receive; 10 boxed closures in a
//!   `Vec`, the floor for any callback list.
//! - `nested_1000`: 1,000 levels of waiting on a Deferred fired afterwards (divide by
//!   1,000): a chain whose callbacks each return an unfired Deferred, a spawned future
//!   awaiting 1,000 unfired Deferreds in turn, and a future awaiting 1,000 tokio oneshots
//!   in turn, polled by hand and as a `spawn_local` task.
//! - `spawn_await_fired`: 1,000 spawned futures that each await a result already there, run
//!   to completion with their results taken (divide by 1,000).

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use tokio::sync::oneshot;
use torsion::defer::succeed;
use torsion::{Deferred, spawn};

const NESTED: usize = 1000;
const TASKS: usize = 1000;

fn fire_10_callbacks(c: &mut Criterion) {
    let mut group = c.benchmark_group("fire_10_callbacks");
    group.bench_function("torsion", |b| {
        b.iter(|| {
            let (resolver, mut d) = Deferred::<u64>::new();
            for _ in 0..10 {
                d = d.add_callback(|x| Ok(x + 1));
            }
            resolver.callback(black_box(1));
            d.take_result().unwrap().unwrap()
        })
    });
    group.bench_function("tokio_oneshot", |b| {
        let mut cx = Context::from_waker(Waker::noop());
        b.iter(|| {
            let (tx, rx) = oneshot::channel::<u64>();
            tx.send(black_box(1)).unwrap();
            let mut rx = pin!(rx);
            match rx.as_mut().poll(&mut cx) {
                Poll::Ready(v) => v.unwrap(),
                Poll::Pending => unreachable!("the value was sent"),
            }
        })
    });
    group.bench_function("vec_box_fnonce_baseline", |b| {
        b.iter(|| {
            let mut steps: Vec<Box<dyn FnOnce(u64) -> u64>> = Vec::with_capacity(10);
            for _ in 0..10 {
                steps.push(Box::new(|x| x + 1));
            }
            steps.into_iter().fold(black_box(1), |x, f| f(x))
        })
    });
    group.finish();
}

fn nested_1000(c: &mut Criterion) {
    let mut group = c.benchmark_group("nested_1000");
    group.bench_function("torsion_chain", |b| {
        b.iter(|| {
            let (first, mut d) = Deferred::<u64>::new();
            let mut resolvers = Vec::with_capacity(NESTED);
            for _ in 0..NESTED {
                let (resolver, inner) = Deferred::<u64>::new();
                resolvers.push(resolver);
                d = d.add_callback(move |_| inner);
            }
            first.callback(0);
            for (i, resolver) in resolvers.into_iter().enumerate() {
                resolver.callback(black_box(i as u64));
            }
            d.take_result().unwrap().unwrap()
        })
    });
    group.bench_function("torsion_spawn_await_unfired", |b| {
        b.iter(|| {
            let mut resolvers = Vec::with_capacity(NESTED);
            let mut inners = Vec::with_capacity(NESTED);
            for _ in 0..NESTED {
                let (resolver, inner) = Deferred::<u64>::new();
                resolvers.push(resolver);
                inners.push(inner);
            }
            let mut d = spawn(async move {
                let mut sum = 0;
                for inner in inners {
                    sum += inner.await?;
                }
                Ok(sum)
            });
            for (i, resolver) in resolvers.into_iter().enumerate() {
                resolver.callback(black_box(i as u64));
            }
            d.take_result().unwrap().unwrap()
        })
    });
    group.bench_function("tokio_oneshot_polled_by_hand", |b| {
        let mut cx = Context::from_waker(Waker::noop());
        b.iter(|| {
            let (senders, receivers): (Vec<_>, Vec<_>) =
                (0..NESTED).map(|_| oneshot::channel::<u64>()).unzip();
            let mut fut = pin!(async move {
                let mut sum = 0;
                for rx in receivers {
                    sum += rx.await.unwrap();
                }
                sum
            });
            assert!(fut.as_mut().poll(&mut cx).is_pending());
            let mut out = None;
            for (i, tx) in senders.into_iter().enumerate() {
                tx.send(black_box(i as u64)).unwrap();
                if let Poll::Ready(sum) = fut.as_mut().poll(&mut cx) {
                    out = Some(sum);
                }
            }
            out.unwrap()
        })
    });
    group.bench_function("tokio_spawn_local_oneshot", |b| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        b.iter(|| {
            local.block_on(&rt, async {
                let (senders, receivers): (Vec<_>, Vec<_>) =
                    (0..NESTED).map(|_| oneshot::channel::<u64>()).unzip();
                let task = tokio::task::spawn_local(async move {
                    let mut sum = 0;
                    for rx in receivers {
                        sum += rx.await.unwrap();
                    }
                    sum
                });
                for (i, tx) in senders.into_iter().enumerate() {
                    tx.send(black_box(i as u64)).unwrap();
                    // Let the task take the value and wait on the next one.
                    tokio::task::yield_now().await;
                }
                task.await.unwrap()
            })
        })
    });
    group.finish();
}

fn spawn_await_fired(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn_await_fired");
    group.bench_function("torsion_x1000", |b| {
        b.iter(|| {
            let mut sum = 0;
            for _ in 0..TASKS {
                let mut d = spawn(async { succeed(black_box(1u64)).await });
                sum += d.take_result().unwrap().unwrap();
            }
            sum
        })
    });
    group.bench_function("tokio_spawn_local_x1000", |b| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        b.iter(|| {
            local.block_on(&rt, async {
                let tasks: Vec<_> = (0..TASKS)
                    .map(|_| {
                        tokio::task::spawn_local(async {
                            std::future::ready(black_box(1u64)).await
                        })
                    })
                    .collect();
                let mut sum = 0;
                for task in tasks {
                    sum += task.await.unwrap();
                }
                sum
            })
        })
    });
    group.finish();
}

criterion_group!(benches, fire_10_callbacks, nested_1000, spawn_await_fired);
criterion_main!(benches);
