//! Spawning a child and waiting for its end: torsion's `spawn_process` (posix_spawn,
//! pipes, a pidfd) against `std::process::Command::output` (fork or posix_spawn, pipes,
//! a blocking wait) and tokio's `process::Command::output`, each measured in the same run,
//! with the descriptor limit raised as far as this process may raise it: the cost of a
//! spawn must not grow with `ulimit -n` (Twisted's #4522: 70 ms a spawn at 1,000,000). A
//! second group spawns with torsion at a soft limit of 1,024 and at the hard limit, to
//! show that.

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

/// Sets the soft descriptor limit to `soft` (at most the hard limit, which stays); the
/// limit now in force.
fn set_soft_descriptor_limit(soft: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let hard = getrlimit(Resource::Nofile).maximum;
    let soft = hard.map_or(soft, |hard| soft.min(hard));
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(soft),
            maximum: hard,
        },
    );
    getrlimit(Resource::Nofile).current.unwrap_or(0)
}

/// torsion's spawn of `true` at a low soft limit (1,024) and at the hard limit, in one run:
/// the two times should match, the spawn closing what it does not pass in one step.
fn spawn_by_descriptor_limit(c: &mut Criterion) {
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(1_000_000);
    let mut group = c.benchmark_group("spawn_true_by_nofile");
    group.measurement_time(Duration::from_secs(4));
    for wanted in [1024, hard] {
        let limit = set_soft_descriptor_limit(wanted);
        group.bench_function(format!("torsion_nofile_{limit}"), |b| {
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
    }
    group.finish();
}

criterion_group!(benches, spawn_and_wait, spawn_by_descriptor_limit);
criterion_main!(benches);
