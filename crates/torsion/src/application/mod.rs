//! Services: the long-running parts of a program and the tree they form (Twisted's
//! `twisted.application.service` and the basics of `twisted.application.internet`).
//!
//! A [`Service`] is something that is started and stopped: a listening port, a client
//! connection kept up, a timer. Services are shared as `Rc<dyn Service>` and keep their
//! state behind `&self` (a [`ServiceState`] they embed, plus their own cells). A
//! [`MultiService`] holds children, starts them in order and stops them in reverse order;
//! an [`Application`] is the named root of a program's tree, and [`run_application`] ties
//! it to a reactor: started at once (or the reason it cannot start returned), stopped
//! before the reactor shuts down, the shutdown waiting for the stop.
//!
//! | torsion | Twisted |
//! | --- | --- |
//! | [`Service`], [`ServiceState`] | `IService`, `Service` |
//! | [`MultiService`] | `MultiService` (`IServiceCollection`) |
//! | [`Application`], [`run_application`] | `Application(name)`, `app.startApplication` |
//! | [`TimerService`] | `internet.TimerService` |
//! | [`StreamServerEndpointService`] | `internet.StreamServerEndpointService` |
//! | [`ClientService`], [`backoff_policy`] | `internet.ClientService`, `backoffPolicy` |
//!
//! Where Twisted's `setServiceParent(parent)` is called on the child, here the parent
//! adopts it: [`MultiService::add_service`] (which, like `setServiceParent`, first takes
//! the child away from a previous parent). [`Service::disown_service_parent`] is kept.
//!
//! **Constructors.** Every service constructor of this module ([`MultiService::new`] and
//! [`named`](MultiService::named), [`Application::new`], [`TimerService::new`],
//! [`StreamServerEndpointService::new`], [`ClientService::new`]) returns an `Rc<Self>`, and
//! none can fail. Services are always shared: a parent holds its children as
//! `Rc<dyn Service>`, [`run_application`] takes an `Rc`, and a program keeps a handle to ask
//! a service things later ([`port`](StreamServerEndpointService::port),
//! [`when_connected`](ClientService::when_connected)). So the `Rc` is made once, by the
//! constructor, and `parent.add_service(child.clone())?` needs no wrapping; a
//! `MultiService` has to be born in an `Rc` anyway, since its children point back to it.
//! What can be wrong with a service's settings (a [`TimerService`]'s negative interval) is
//! reported when it starts, as Twisted's `TimerService.startService` raises it.
//!
//! **Starting can fail.** [`Service::privileged_start_service`] and
//! [`Service::start_service`] return `Result<(), Failure>`, as Twisted's
//! `privilegedStartService` and `startService` may raise: a
//! [`StreamServerEndpointService`] whose port is taken says so. A [`MultiService`] passes a
//! child's failure on, and [`run_application`] returns it, so a program exits instead of
//! running while listening nowhere.
//!
//! The pieces are in `service.rs` (the trait, `MultiService`, `Application`), `internet.rs`
//! (`TimerService`, `StreamServerEndpointService`) and `client.rs` (`ClientService` and its
//! retry policy), all re-exported here; this file holds [`run_application`].
//!
//! Invariant: no `RefCell` of this module is borrowed while user code runs (a child's
//! `start_service` or `stop_service`, a factory or protocol, a Deferred's callbacks, the
//! timer's function, a retry policy): state is taken out or cloned, the borrow released,
//! and only then is the user called.

mod client;
mod internet;
mod service;

pub use client::{ClientService, RetryPolicy, backoff_policy, uniform_jitter};
pub use internet::{StreamServerEndpointService, TimerService};
pub use service::{Application, MultiService, Service, ServiceState};

use std::rc::Rc;

use crate::defer::maybe_deferred;
use crate::reactor::{Phase, SystemEvent};
use crate::{Failure, Reactor};

/// The `tracing` target every service of this module logs under.
const LOG_TARGET: &str = "torsion::application";

/// Starts `app` and ties it to `reactor`, as Twisted's `twistd` does with an application
/// (`privilegedStartService`, then `app.startApplication`): `app` gets
/// [`privileged_start_service`](Service::privileged_start_service) then
/// [`start_service`](Service::start_service) now, before the reactor runs, so that its
/// ports are bound (or known not to be) before the program goes on; and before the reactor
/// shuts down, [`stop_service`](Service::stop_service), the shutdown waiting for its
/// Deferred (up to the reactor's shutdown timeout).
///
/// Any service can be the root; usually it is an [`Application`]. The runner that will
/// drop privileges between the two starts does its own sequencing.
///
/// # Errors
///
/// The failure of the first service that could not start, for example a
/// [`StreamServerEndpointService`] whose port is in use
/// ([`CannotListen`](crate::error::CannotListen)). Twisted's `twistd` exits then; here
/// `app` is stopped again (the services that did start close their ports once the reactor
/// turns), no shutdown trigger is added, and the program should exit rather than run:
///
/// ```
/// # use torsion::{Failure, Reactor};
/// # use torsion::application::{Application, run_application};
/// # fn main() -> Result<(), Failure> {
/// # let reactor = Reactor::new()?;
/// # let app = Application::new("example");
/// run_application(&reactor, &app)?;
/// # let r = reactor.clone();
/// # reactor.call_when_running(move || {
/// #     let _ = r.stop();
/// # });
/// reactor.run()?;
/// # Ok(())
/// # }
/// ```
pub fn run_application<S: Service + ?Sized>(reactor: &Reactor, app: &Rc<S>) -> Result<(), Failure> {
    let started = app
        .privileged_start_service()
        .and_then(|()| app.start_service());
    if let Err(failure) = started {
        // What did start is stopped; a failure to stop is reported as unhandled.
        drop(maybe_deferred(|| app.stop_service()));
        return Err(failure);
    }
    let stopping = app.clone();
    reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move || {
        stopping.stop_service()
    });
    Ok(())
}
