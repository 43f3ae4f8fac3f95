//! System event triggers (Twisted's `addSystemEventTrigger` and `_ThreePhaseEvent`): code
//! run before, during and after the reactor's startup and shutdown.
//!
//! Each trigger runs once, in the order added within its phase; triggers added while a
//! phase runs also run. Deferreds returned by `before` triggers delay the `during` and
//! `after` phases until they fire.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::Reactor;
use crate::defer::{Deferred, DeferredList, Failure};
use crate::error::InvalidArgument;
use crate::time::ReactorTime;

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

impl Reactor {
    /// Adds a trigger for a system event (Twisted's `addSystemEventTrigger`). A `before`
    /// trigger of shutdown may return a Deferred: the `during` and `after` phases wait for it
    /// (at most the builder's shutdown timeout). A trigger that fails or panics is logged and
    /// the others still run.
    pub fn add_system_event_trigger<R: TriggerOutput>(
        &self,
        phase: Phase,
        event: SystemEvent,
        f: impl FnOnce() -> R + 'static,
    ) -> TriggerId {
        let serial = self.inner.trigger_serial.get() + 1;
        self.inner.trigger_serial.set(serial);
        let trigger: Trigger = Box::new(move || f().into_wait());
        self.triggers(event)
            .borrow_mut()
            .phase_mut(phase)
            .push_back((serial, trigger));
        TriggerId {
            reactor: self.inner.id,
            event,
            phase,
            serial,
        }
    }

    /// Removes a trigger that has not run yet (Twisted's `removeSystemEventTrigger`).
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`] if `id` belongs to another reactor, or its trigger has already
    /// run or been removed (Twisted raises `ValueError`).
    pub fn remove_system_event_trigger(&self, id: TriggerId) -> Result<(), InvalidArgument> {
        if id.reactor != self.inner.id {
            return Err(InvalidArgument(format!(
                "{id:?} belongs to another reactor"
            )));
        }
        let removed = {
            let mut triggers = self.triggers(id.event).borrow_mut();
            let list = triggers.phase_mut(id.phase);
            list.iter()
                .position(|(serial, _)| *serial == id.serial)
                .and_then(|i| list.remove(i))
        };
        match removed {
            Some(trigger) => {
                drop(trigger);
                Ok(())
            }
            None => Err(InvalidArgument(format!(
                "{id:?} has already run or been removed"
            ))),
        }
    }

    pub(super) fn triggers(&self, event: SystemEvent) -> &RefCell<EventTriggers> {
        match event {
            SystemEvent::Startup => &self.inner.startup,
            SystemEvent::Shutdown => &self.inner.shutdown,
        }
    }

    /// Fires `event`: the before phase, then (once its Deferreds fired) during and after.
    pub(super) fn fire_event(&self, event: SystemEvent) {
        let mut waits = Vec::new();
        while let Some((_, trigger)) = self.pop_trigger(event, Phase::Before) {
            if let Some(d) = run_trigger(trigger) {
                waits.push(d);
            }
        }
        if waits.is_empty() {
            self.continue_event(event);
            return;
        }
        let this = self.clone();
        let continued = Rc::new(Cell::new(false));
        let timeout = self.inner.shutdown_timeout.get();
        let on_timeout = {
            let this = this.clone();
            let continued = continued.clone();
            self.call_later(timeout, move || {
                if !continued.replace(true) {
                    crate::log::warning!(
                        target: "torsion::reactor",
                        "{event:?} went on after {timeout:?}: a before-{event:?} trigger's Deferred had not fired"
                    );
                    this.continue_event(event);
                }
            })
        };
        // The last Deferred may fire inside any callback (a protocol's `data_received`):
        // the rest of the event runs after it returns, never inside it.
        drop(DeferredList::new(waits).into_deferred().map(move |_| {
            let _ = on_timeout.cancel();
            if !continued.replace(true) {
                let r = this.clone();
                this.call_soon(move || r.continue_event(event));
            }
        }));
    }

    pub(super) fn continue_event(&self, event: SystemEvent) {
        match event {
            SystemEvent::Startup => self.inner.running.set(true),
            SystemEvent::Shutdown => {
                self.inner.looping.set(false);
                self.disconnect_all();
            }
        }
        while let Some((_, trigger)) = self.pop_trigger(event, Phase::During) {
            drop(run_trigger(trigger));
        }
        while let Some((_, trigger)) = self.pop_trigger(event, Phase::After) {
            drop(run_trigger(trigger));
        }
    }

    pub(super) fn pop_trigger(&self, event: SystemEvent, phase: Phase) -> Option<(u64, Trigger)> {
        self.triggers(event)
            .borrow_mut()
            .phase_mut(phase)
            .pop_front()
    }
}
