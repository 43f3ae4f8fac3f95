//! Timer costs: torsion's `call_later` + `cancel` against tokio's `sleep` + drop.
//!
//! Each iteration schedules 100,000 timers with deadlines spread over 10 s in a scattered
//! order (so the queue really holds 100,000 entries and each insert lands at a random place),
//! then cancels or drops them all; the figures are per timer (schedule + cancel). The
//! `same delay` variants give every timer the same delay, as a fixed timeout does, so each
//! insert lands at the end of the queue.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Waker};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use torsion::time::{Clock, DelayedCall, ReactorTime};

const N: u64 = 100_000;

fn delay(i: u64) -> Duration {
    Duration::from_millis(1 + (i * 7_919) % 10_000)
}

fn torsion_timers(c: &mut Criterion) {
    let mut group = c.benchmark_group("timers");
    group.throughput(Throughput::Elements(N));

    let clock = Clock::new();
    let mut handles: Vec<DelayedCall> = Vec::with_capacity(N as usize);
    group.bench_function("torsion call_later + cancel", |b| {
        b.iter(|| {
            for i in 0..N {
                handles.push(clock.call_later(delay(i), || {}));
            }
            for call in handles.drain(..) {
                black_box(call.cancel()).unwrap();
            }
        })
    });

    let clock = Clock::new();
    group.bench_function("torsion call_later + cancel, same delay", |b| {
        b.iter(|| {
            for _ in 0..N {
                handles.push(clock.call_later(Duration::from_secs(30), || {}));
            }
            for call in handles.drain(..) {
                black_box(call.cancel()).unwrap();
            }
        })
    });

    let clock = Clock::new();
    group.bench_function("torsion call_later + fire", |b| {
        b.iter(|| {
            for i in 0..N {
                drop(clock.call_later(delay(i), || {}));
            }
            clock.advance(Duration::from_secs(11));
        })
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());

    let mut sleeps = Vec::with_capacity(N as usize);
    group.bench_function("tokio sleep + poll + drop", |b| {
        b.iter(|| {
            for i in 0..N {
                let mut sleep = Box::pin(tokio::time::sleep(delay(i)));
                assert!(Pin::new(&mut sleep).poll(&mut cx).is_pending());
                sleeps.push(sleep);
            }
            sleeps.clear();
        })
    });

    group.bench_function("tokio sleep + poll + drop, same delay", |b| {
        b.iter(|| {
            for _ in 0..N {
                let mut sleep = Box::pin(tokio::time::sleep(Duration::from_secs(30)));
                assert!(Pin::new(&mut sleep).poll(&mut cx).is_pending());
                sleeps.push(sleep);
            }
            sleeps.clear();
        })
    });

    let mut sleeps = Vec::with_capacity(N as usize);
    group.bench_function("tokio sleep + drop (not polled)", |b| {
        b.iter(|| {
            for i in 0..N {
                sleeps.push(Box::pin(tokio::time::sleep(delay(i))));
            }
            sleeps.clear();
        })
    });

    group.finish();
}

criterion_group!(benches, torsion_timers);
criterion_main!(benches);
