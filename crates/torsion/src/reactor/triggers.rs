//! System event triggers (Twisted's `addSystemEventTrigger` and `_ThreePhaseEvent`): code
//! run before, during and after the reactor's startup and shutdown.
//!
//! Each trigger runs once, in the order added within its phase; triggers added while a
//! phase runs also run. Deferreds returned by `before` triggers delay the `during` and
//! `after` phases until they fire.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::defer::{Deferred, Failure};

/// When a trigger runs relative to its event (Twisted's `"before"`, `"during"`, `"after"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Before the event; a returned Deferred delays the other phases until it fires.
    Before,
    /// The event itself (the reactor's own work happens first in this phase).
    During,
    /// After the event.
    After,
}

/// The events triggers attach to (Twisted's `"startup"` and `"shutdown"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SystemEvent {
    /// The reactor starts running.
    Startup,
    /// The reactor stops.
    Shutdown,
}

/// Identifies a trigger, to remove it with
/// [`Reactor::remove_system_event_trigger`](crate::Reactor::remove_system_event_trigger).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TriggerId {
    pub(crate) reactor: u64,
    pub(crate) event: SystemEvent,
    pub(crate) phase: Phase,
    pub(crate) serial: u64,
}

/// What a trigger may return: `()`, `Result<(), Failure>` (an error is logged), or a
/// `Deferred` (from a `before` trigger, it delays the event's other phases until it fires).
pub trait TriggerOutput: 'static {
    #[doc(hidden)]
    fn into_wait(self) -> Option<Deferred<()>>;
}

impl TriggerOutput for () {
    fn into_wait(self) -> Option<Deferred<()>> {
        None
    }
}

impl TriggerOutput for Result<(), Failure> {
    fn into_wait(self) -> Option<Deferred<()>> {
        match self {
            Ok(()) => None,
            Err(f) => {
                crate::log::error!(target: "torsion::reactor", "a system event trigger failed: {f:#}");
                None
            }
        }
    }
}

impl<T: 'static> TriggerOutput for Deferred<T> {
    fn into_wait(self) -> Option<Deferred<()>> {
        Some(self.map(|_| ()))
    }
}

pub(crate) type Trigger = Box<dyn FnOnce() -> Option<Deferred<()>>>;

/// The triggers of one event.
#[derive(Default)]
pub(crate) struct EventTriggers {
    pub(crate) before: VecDeque<(u64, Trigger)>,
    pub(crate) during: VecDeque<(u64, Trigger)>,
    pub(crate) after: VecDeque<(u64, Trigger)>,
}

impl EventTriggers {
    pub(crate) fn phase_mut(&mut self, phase: Phase) -> &mut VecDeque<(u64, Trigger)> {
        match phase {
            Phase::Before => &mut self.before,
            Phase::During => &mut self.during,
            Phase::After => &mut self.after,
        }
    }
}

/// Runs one trigger, logging a panic; returns the Deferred it asks to wait for.
pub(crate) fn run_trigger(trigger: Trigger) -> Option<Deferred<()>> {
    match catch_unwind(AssertUnwindSafe(trigger)) {
        Ok(wait) => wait.map(|d| {
            d.add_errback(|f| {
                crate::log::error!(target: "torsion::reactor", "a system event trigger failed: {f:#}");
                Ok(())
            })
        }),
        Err(payload) => {
            crate::log::error!(
                target: "torsion::reactor",
                "a system event trigger panicked: {}",
                Failure::from_panic(&*payload)
            );
            None
        }
    }
}
