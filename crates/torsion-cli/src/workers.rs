//! One reactor per core: the runner's `--workers N` (no Twisted counterpart; Twisted runs
//! one reactor per process, and its users run N processes behind a balancer).
//!
//! Each worker is a thread with its own reactor and its own instance of the plugin's
//! service, listening on the same TCP ports with `SO_REUSEPORT`
//! ([`Builder::share_ports`](torsion::reactor::Builder::share_ports)), so the kernel spreads
//! the connections between them and nothing inside one reactor takes a lock. Worker 0 is
//! the main thread: it holds the signal handlers and, on shutdown, stops the others through
//! their [`ReactorHandle`]s, the only thing that crosses between workers.
//!
//! The workers come up in step, through a [`Gate`]: all build and do their privileged start
//! (binding ports), then worker 0 drops privileges (which holds for the whole process),
//! then all start the rest. A failure in any worker at any step is seen by every worker at
//! the next step, and all of them stop what they started.
//!
//! Invariant: every worker reaches every [`Gate::pass`] (or [`Gate::leave`]s), whatever
//! fails, or the others wait for ever.

use std::rc::Rc;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use clap::ArgMatches;
use torsion::Reactor;
use torsion::application::Service;
use torsion::reactor::backend::BackendKind;
use torsion::reactor::{Phase, ReactorHandle, SystemEvent};

use crate::Plugin;
use crate::daemon::drop_privileges;

/// What each worker is built with.
pub(crate) struct WorkerConfig<'a> {
    pub(crate) plugin: &'a dyn Plugin,
    pub(crate) plugin_options: &'a ArgMatches,
    pub(crate) backend: BackendKind,
    pub(crate) workers: usize,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
}

/// The workers' meeting point between start-up steps, and what they share: the first
/// failure, and the handles of workers 1 to N-1.
pub(crate) struct Gate {
    state: Mutex<GateState>,
    turned: Condvar,
}

struct GateState {
    /// Workers still taking part.
    parties: usize,
    /// Workers waiting at the current step.
    arrived: usize,
    /// Counts the steps passed, so a waiter knows when its step is over.
    step: u64,
    failure: Option<String>,
    handles: Vec<ReactorHandle>,
    /// A worker's reactor failed after start-up.
    worker_failed: bool,
}

impl Gate {
    pub(crate) fn new(parties: usize) -> Gate {
        Gate {
            state: Mutex::new(GateState {
                parties,
                arrived: 0,
                step: 0,
                failure: None,
                handles: Vec::new(),
                worker_failed: false,
            }),
            turned: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a failure (the first one is kept and reported).
    pub(crate) fn fail(&self, message: String) {
        self.lock().failure.get_or_insert(message);
    }

    /// Leaves the gate for good: a worker that could not be started.
    pub(crate) fn leave(&self) {
        let mut state = self.lock();
        state.parties -= 1;
        if state.parties > 0 && state.arrived == state.parties {
            state.arrived = 0;
            state.step += 1;
            self.turned.notify_all();
        }
    }

    /// Waits until every worker has reached this step; then the first failure any of them
    /// recorded, if there is one.
    pub(crate) fn pass(&self) -> Result<(), String> {
        let mut state = self.lock();
        state.arrived += 1;
        if state.arrived == state.parties {
            state.arrived = 0;
            state.step += 1;
            self.turned.notify_all();
        } else {
            let step = state.step;
            while state.step == step {
                state = self
                    .turned
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
        match &state.failure {
            Some(failure) => Err(failure.clone()),
            None => Ok(()),
        }
    }

    fn add_handle(&self, handle: ReactorHandle) {
        self.lock().handles.push(handle);
    }

    /// Records that a worker's reactor failed after start-up (the exit code says so).
    pub(crate) fn record_worker_failure(&self) {
        self.lock().worker_failed = true;
    }

    /// Whether a worker's reactor failed after start-up.
    pub(crate) fn worker_failed(&self) -> bool {
        self.lock().worker_failed
    }

    /// The handles of workers 1 to N-1, for worker 0 to stop them.
    pub(crate) fn handles(&self) -> Vec<ReactorHandle> {
        self.lock().handles.clone()
    }
}

/// Brings worker `index` up in step with the others (see the module doc): its reactor, and
/// the plugin's service, started and to be stopped on shutdown; the first failure of any
/// worker if they could not all come up. The caller keeps the service until the reactor has
/// stopped: the shutdown trigger lets go of it once called, and a service dropped while its
/// stop is pending would end that stop early.
pub(crate) fn bring_up(
    index: usize,
    gate: &Gate,
    config: &WorkerConfig<'_>,
) -> Result<(Reactor, Rc<dyn Service>), String> {
    let plugin = config.plugin;
    let mut service = None;
    let reactor = Reactor::builder()
        .backend(config.backend)
        .install_signal_handlers(index == 0)
        .share_ports(config.workers > 1)
        .shutdown_timeout(config.shutdown_timeout)
        .build();
    match &reactor {
        Ok(reactor) => match plugin.make_service(reactor, config.plugin_options) {
            Ok(made) => match made.privileged_start_service() {
                Ok(()) => service = Some(made),
                Err(failure) => {
                    stop_quietly(&made);
                    gate.fail(format!("{} could not start: {failure}", plugin.name()));
                }
            },
            Err(failure) => gate.fail(format!("{}: {failure}", plugin.name())),
        },
        Err(failure) => gate.fail(format!("cannot build the reactor: {failure}")),
    }
    let stop_and = |message: String| {
        if let Some(service) = &service {
            stop_quietly(service);
        }
        message
    };
    gate.pass().map_err(stop_and)?;
    if index == 0
        && (config.uid.is_some() || config.gid.is_some())
        && let Err(failure) = drop_privileges(config.uid, config.gid)
    {
        gate.fail(format!("{} could not start: {failure}", plugin.name()));
    }
    gate.pass().map_err(stop_and)?;
    // Every worker passed the steps, so none failed: each has its reactor and service.
    let (Ok(reactor), Some(started)) = (reactor, service.clone()) else {
        gate.leave();
        return Err("a worker came up without a reactor or a service".to_string());
    };
    if let Err(failure) = started.start_service() {
        gate.fail(format!("{} could not start: {failure}", plugin.name()));
    }
    if index > 0 {
        gate.add_handle(reactor.handle());
    }
    gate.pass().map_err(stop_and)?;
    let stopping = started.clone();
    reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move || {
        stopping.stop_service()
    });
    Ok((reactor, started))
}

fn stop_quietly(service: &Rc<dyn Service>) {
    drop(torsion::defer::maybe_deferred(|| service.stop_service()));
}
