//! Spawning a child and waiting for its end: torsion's `spawn_process` (posix_spawn,
//! pipes, a pidfd) against `std::process::Command::output` (fork or posix_spawn, pipes,
//! a blocking wait) and tokio's `process::Command::output`, each measured in the same run,
//! with the descriptor limit raised as far as this process may raise it: the cost of a
//! spawn must not grow with `ulimit -n` (Twisted's #4522: 70 ms a spawn at 1,000,000).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use torsion::Reactor;
use torsion::process::{ProcessProtocol, ProcessSpec};

/// Stops the reactor once the child has ended.
struct Ended(Reactor, Rc<Cell<bool>>);

impl ProcessProtocol for Ended {
    fn process_ended(&mut self, _reason: torsion::Failure) {
        self.1.set(true);
        let _ = self.0.stop();
    }
}

fn raise_descriptor_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let wanted = Rlimit {
        current: Some(1_000_000),
        maximum: Some(1_000_000),
    };
    if setrlimit(Resource::Nofile, wanted).is_err() {
        let hard = getrlimit(Resource::Nofile).maximum;
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: hard,
                maximum: hard,
            },
        );
    }
    getrlimit(Resource::Nofile).current.unwrap_or(0)
}

fn spawn_and_wait(c: &mut Criterion) {
    let limit = raise_descriptor_limit();
    let mut group = c.benchmark_group(format!("spawn_true_and_wait_nofile_{limit}"));
    group.measurement_time(Duration::from_secs(4));

    group.bench_function("torsion", |b| {
        b.iter(|| {
            let reactor = Reactor::new().unwrap();
            let ended = Rc::new(Cell::new(false));
            reactor
                .spawn_process(
                    Ended(reactor.clone(), ended.clone()),
                    ProcessSpec::new("true"),
                )
                .unwrap();
            reactor.run().unwrap();
            assert!(ended.get());
        });
    });

    group.bench_function("std", |b| {
        b.iter(|| {
            let out = std::process::Command::new("true").output().unwrap();
            assert!(out.status.success());
        });
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    group.bench_function("tokio", |b| {
        b.iter(|| {
            let out = rt
                .block_on(async { tokio::process::Command::new("true").output().await })
                .unwrap();
            assert!(out.status.success());
        });
    });
    group.finish();
}

criterion_group!(benches, spawn_and_wait);
criterion_main!(benches);
