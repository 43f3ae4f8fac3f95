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
//! Invariant: no `RefCell` of this module is borrowed while user code runs (a child's
//! `start_service` or `stop_service`, a factory or protocol, a Deferred's callbacks, the
//! timer's function, a retry policy): state is taken out or cloned, the borrow released,
//! and only then is the user called.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::defer::{DeferredHandle, DeferredList, IntoOutcome, maybe_deferred};
use crate::endpoints::{ClientEndpoint, ListeningPort, ServerEndpoint};
use crate::error::{
    Cancelled, DuplicateServiceName, InvalidArgument, ServiceHasParent, ServiceNotFound,
};
use crate::net::{Address, Transport};
use crate::protocol::{Factory, Protocol};
use crate::reactor::{Phase, SystemEvent};
use crate::task::{IntoInterval, LoopingCall};
use crate::time::{DelayedCall, DelayedCallInfo, ReactorTime, Time};
use crate::{Deferred, Failure, Reactor, Resolver};

const LOG_TARGET: &str = "torsion::application";

// ===== Service =====

/// The state every service keeps: its name, whether it is running, and its parent (the
/// attributes `name`, `running` and `parent` of Twisted's `Service`).
///
/// Embed one in a service and return it from [`Service::service_state`]; the trait's
/// default methods then do what Twisted's `Service` does. A service that overrides
/// [`start_service`](Service::start_service) or [`stop_service`](Service::stop_service)
/// calls [`set_running`](ServiceState::set_running) itself, as a Twisted service calls
/// `Service.startService(self)`.
#[derive(Default)]
pub struct ServiceState {
    name: RefCell<Option<String>>,
    running: Cell<bool>,
    parent: RefCell<Weak<MultiService>>,
}

impl ServiceState {
    /// An unnamed, stopped service's state.
    pub fn new() -> ServiceState {
        ServiceState::default()
    }

    /// A stopped service's state, with a name.
    pub fn named(name: impl Into<String>) -> ServiceState {
        let state = ServiceState::default();
        *state.name.borrow_mut() = Some(name.into());
        state
    }

    /// The service's name, if it has one (Twisted's `name`).
    pub fn name(&self) -> Option<String> {
        self.name.borrow().clone()
    }

    /// Names the service (Twisted's `setName`).
    ///
    /// # Errors
    ///
    /// [`ServiceHasParent`] if the service has a parent: its parent knows it by its name,
    /// so take it out first (Twisted raises `RuntimeError`).
    pub fn set_name(&self, name: impl Into<String>) -> Result<(), ServiceHasParent> {
        if self.parent().is_some() {
            return Err(ServiceHasParent { name: self.name() });
        }
        *self.name.borrow_mut() = Some(name.into());
        Ok(())
    }

    /// Whether the service is running (Twisted's `running`).
    pub fn running(&self) -> bool {
        self.running.get()
    }

    /// Marks the service running or stopped: what Twisted's `Service.startService` and
    /// `Service.stopService` do.
    pub fn set_running(&self, running: bool) {
        self.running.set(running);
    }

    /// The [`MultiService`] holding the service, if any (Twisted's `parent`).
    pub fn parent(&self) -> Option<Rc<MultiService>> {
        self.parent.borrow().upgrade()
    }

    fn set_parent(&self, parent: Weak<MultiService>) {
        *self.parent.borrow_mut() = parent;
    }
}

impl fmt::Debug for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceState")
            .field("name", &*self.name.borrow())
            .field("running", &self.running.get())
            .field("has_parent", &self.parent().is_some())
            .finish()
    }
}

/// Something started and stopped with the program (Twisted's `IService`).
///
/// Services are shared as `Rc<dyn Service>` and change through `&self`: keep a
/// [`ServiceState`] for the common state and cells for your own. Only
/// [`service_state`](Service::service_state) must be written; override the `*_service`
/// methods to do the work, calling [`ServiceState::set_running`] as the defaults do.
/// Services are `Any`, so one found by [`MultiService::get_service_named`] can be
/// downcast: `Rc::downcast::<T>(service as Rc<dyn Any>)`.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use torsion::{Deferred, Failure};
/// use torsion::application::{MultiService, Service, ServiceState};
///
/// /// Says hello when started and goodbye when stopped.
/// struct Greeter {
///     state: ServiceState,
/// }
///
/// impl Service for Greeter {
///     fn service_state(&self) -> &ServiceState {
///         &self.state
///     }
///
///     fn start_service(&self) -> Result<(), Failure> {
///         self.state.set_running(true);
///         println!("hello");
///         Ok(())
///     }
///
///     fn stop_service(&self) -> Deferred<()> {
///         self.state.set_running(false);
///         println!("goodbye");
///         Deferred::succeed(())
///     }
/// }
///
/// let greeter = Rc::new(Greeter { state: ServiceState::named("greeter") });
/// let root = MultiService::new();
/// root.add_service(greeter.clone()).unwrap();
/// root.start_service().unwrap();
/// assert!(greeter.running());
/// assert!(Rc::ptr_eq(&greeter.parent().unwrap(), &root));
/// ```
pub trait Service: Any {
    /// The embedded state the default methods work on.
    fn service_state(&self) -> &ServiceState;

    /// The service's name, if any (Twisted's `name`). Names are unique among the children
    /// of one [`MultiService`].
    fn name(&self) -> Option<String> {
        self.service_state().name()
    }

    /// Names the service (Twisted's `setName`); see [`ServiceState::set_name`].
    ///
    /// # Errors
    ///
    /// [`ServiceHasParent`] while the service has a parent.
    fn set_name(&self, name: &str) -> Result<(), ServiceHasParent> {
        self.service_state().set_name(name)
    }

    /// Whether the service is running (Twisted's `running`).
    fn running(&self) -> bool {
        self.service_state().running()
    }

    /// The [`MultiService`] holding this service, if any (Twisted's `parent`).
    fn parent(&self) -> Option<Rc<MultiService>> {
        self.service_state().parent()
    }

    /// Work done while the program still has its privileges, before
    /// [`start_service`](Service::start_service): binding a port below 1024, for example
    /// (Twisted's `privilegedStartService`). Does nothing by default.
    ///
    /// # Errors
    ///
    /// Why the service cannot start (Twisted's `privilegedStartService` raising), for
    /// example a port that cannot be bound; [`run_application`] returns it.
    fn privileged_start_service(&self) -> Result<(), Failure> {
        Ok(())
    }

    /// Starts the service (Twisted's `startService`); by default, marks it running.
    ///
    /// # Errors
    ///
    /// Why the service cannot start (Twisted's `startService` raising); a service that
    /// fails to start should leave itself stopped. [`run_application`] returns the error.
    fn start_service(&self) -> Result<(), Failure> {
        self.service_state().set_running(true);
        Ok(())
    }

    /// Stops the service (Twisted's `stopService`); the Deferred fires once it has stopped
    /// (its ports closed, its connections gone, ...). By default, marks it stopped and
    /// returns a fired Deferred.
    fn stop_service(&self) -> Deferred<()> {
        self.service_state().set_running(false);
        Deferred::succeed(())
    }

    /// Leaves the parent (Twisted's `disownServiceParent`): the parent drops this service
    /// and, if the parent is running, stops it; the Deferred is that stop's. Without a
    /// parent, returns a fired Deferred.
    fn disown_service_parent(&self) -> Deferred<()> {
        let Some(parent) = self.parent() else {
            return Deferred::succeed(());
        };
        let address = self as *const Self as *const ();
        match parent.remove_at(address) {
            Ok(stopped) => stopped,
            Err(_) => {
                // Not among the parent's children (it cannot happen through this module's
                // API): forget the stale link.
                self.service_state().set_parent(Weak::new());
                Deferred::succeed(())
            }
        }
    }
}

/// The address of the value behind a service pointer, for identity comparisons.
fn address_of<S: ?Sized>(service: *const S) -> *const () {
    service as *const ()
}

// ===== MultiService =====

struct Child {
    /// The name the child had when added (names cannot change while parented).
    name: Option<String>,
    service: Rc<dyn Service>,
}

/// A service made of services (Twisted's `MultiService`, an `IServiceCollection`).
///
/// Children are kept in the order added. Starting the `MultiService` starts them in that
/// order; stopping it stops them in reverse order, and its Deferred fires once every
/// child's stop Deferred has. A child added while the `MultiService` runs is started at
/// once; a child removed while it runs is stopped. Child names are unique (unnamed
/// children are allowed, any number of them). A child that fails to start stops the start
/// there, as in Twisted: the error is returned, the children after it are not started, and
/// the `MultiService` counts as running, so that its stop stops those that did start.
///
/// A `MultiService` is born in an `Rc` ([`MultiService::new`]), because its children point
/// back to it (weakly) as their [`parent`](Service::parent). To make a service that is
/// also a collection (Twisted subclasses `MultiService`), keep an `Rc<MultiService>` for
/// the children and forward the `Service` methods to it.
///
/// # Examples
///
/// ```
/// use torsion::application::{MultiService, Service, TimerService};
/// use torsion::time::Clock;
///
/// let clock = Clock::new();
/// let heartbeat = TimerService::new(&clock, 5.0, || Ok(()));
/// heartbeat.set_name("heartbeat").unwrap();
///
/// let services = MultiService::new();
/// services.add_service(heartbeat.clone()).unwrap();
/// services.start_service().unwrap();
/// assert!(heartbeat.running());
///
/// // Two children cannot share a name.
/// let again = TimerService::new(&clock, 1.0, || Ok(()));
/// again.set_name("heartbeat").unwrap();
/// assert!(services.add_service(again).is_err());
///
/// let mut stopped = services.stop_service();
/// assert!(stopped.take_result().unwrap().is_ok());
/// assert!(!services.get_service_named("heartbeat").unwrap().running());
/// ```
pub struct MultiService {
    state: ServiceState,
    me: Weak<MultiService>,
    children: RefCell<Vec<Child>>,
}

impl MultiService {
    /// An empty, unnamed, stopped collection.
    pub fn new() -> Rc<MultiService> {
        Self::with_state(ServiceState::new())
    }

    /// An empty, stopped collection with a name.
    pub fn named(name: impl Into<String>) -> Rc<MultiService> {
        Self::with_state(ServiceState::named(name))
    }

    fn with_state(state: ServiceState) -> Rc<MultiService> {
        Rc::new_cyclic(|me| MultiService {
            state,
            me: me.clone(),
            children: RefCell::new(Vec::new()),
        })
    }

    /// Adds a child (Twisted's `addService`, and `child.setServiceParent(self)`).
    ///
    /// A child that has another parent leaves it first (stopped, if that parent runs). If
    /// this `MultiService` is running, the child is started at once
    /// ([`privileged_start_service`](Service::privileged_start_service), then
    /// [`start_service`](Service::start_service)). Adding a child that is already here
    /// does nothing.
    ///
    /// # Errors
    ///
    /// [`DuplicateServiceName`] if another child has the same name; nothing changes then.
    /// While this `MultiService` runs, the child's failure to start (Twisted's
    /// `setServiceParent` raising it); the child stays added then, as in Twisted, and
    /// stopping this `MultiService` stops it.
    ///
    /// # Panics
    ///
    /// If `service` is this `MultiService` or one of its ancestors: the tree would be a
    /// cycle.
    pub fn add_service(&self, service: Rc<dyn Service>) -> Result<(), Failure> {
        let address = address_of(Rc::as_ptr(&service));
        if self.position(address).is_some() {
            return Ok(());
        }
        assert!(
            !self.is_self_or_ancestor(service.service_state()),
            "MultiService::add_service: a service cannot be added to itself or to one of \
             its descendants"
        );
        let name = service.name();
        if let Some(name) = &name {
            let taken = self
                .children
                .borrow()
                .iter()
                .any(|c| c.name.as_deref() == Some(name.as_str()));
            if taken {
                return Err(DuplicateServiceName { name: name.clone() }.into());
            }
        }
        if service.parent().is_some() {
            // As Twisted's setServiceParent; a failed stop is reported as unhandled.
            drop(service.disown_service_parent());
        }
        service.service_state().set_parent(self.me.clone());
        self.children.borrow_mut().push(Child {
            name,
            service: service.clone(),
        });
        if self.running() {
            service.privileged_start_service()?;
            service.start_service()?;
        }
        Ok(())
    }

    /// Removes a child (Twisted's `removeService`, and `child.disownServiceParent()`). If
    /// this `MultiService` is running, the child is stopped and the Deferred is its stop's;
    /// otherwise the Deferred has fired.
    ///
    /// # Errors
    ///
    /// [`ServiceNotFound`] if `service` is not a child of this `MultiService`.
    pub fn remove_service<S: Service + ?Sized>(
        &self,
        service: &Rc<S>,
    ) -> Result<Deferred<()>, ServiceNotFound> {
        self.remove_at(address_of(Rc::as_ptr(service)))
    }

    /// Removes the child named `name`, as [`remove_service`](Self::remove_service).
    ///
    /// # Errors
    ///
    /// [`ServiceNotFound`] if no child has that name.
    pub fn remove_service_named(&self, name: &str) -> Result<Deferred<()>, ServiceNotFound> {
        let address = self
            .children
            .borrow()
            .iter()
            .find(|c| c.name.as_deref() == Some(name))
            .map(|c| address_of(Rc::as_ptr(&c.service)));
        match address {
            Some(address) => self.remove_at(address),
            None => Err(ServiceNotFound {
                name: Some(name.to_string()),
            }),
        }
    }

    /// The child named `name` (Twisted's `getServiceNamed`).
    pub fn get_service_named(&self, name: &str) -> Option<Rc<dyn Service>> {
        self.children
            .borrow()
            .iter()
            .find(|c| c.name.as_deref() == Some(name))
            .map(|c| c.service.clone())
    }

    /// The children, in the order added (Twisted's `iter(multiService)`).
    pub fn services(&self) -> Vec<Rc<dyn Service>> {
        self.children
            .borrow()
            .iter()
            .map(|c| c.service.clone())
            .collect()
    }

    fn position(&self, address: *const ()) -> Option<usize> {
        self.children
            .borrow()
            .iter()
            .position(|c| address_of(Rc::as_ptr(&c.service)) == address)
    }

    fn remove_at(&self, address: *const ()) -> Result<Deferred<()>, ServiceNotFound> {
        let Some(index) = self.position(address) else {
            return Err(ServiceNotFound { name: None });
        };
        let child = self.children.borrow_mut().remove(index);
        let is_ours = child
            .service
            .parent()
            .is_some_and(|p| std::ptr::eq(Rc::as_ptr(&p), self));
        if is_ours {
            child.service.service_state().set_parent(Weak::new());
        }
        if self.running() {
            Ok(maybe_deferred(|| child.service.stop_service()))
        } else {
            Ok(Deferred::succeed(()))
        }
    }

    /// Whether `state` is this collection's or one of its ancestors'.
    fn is_self_or_ancestor(&self, state: &ServiceState) -> bool {
        if std::ptr::eq(state, &self.state) {
            return true;
        }
        let mut next = self.state.parent();
        while let Some(ancestor) = next {
            if std::ptr::eq(state, ancestor.service_state()) {
                return true;
            }
            next = ancestor.state.parent();
        }
        false
    }
}

impl Service for MultiService {
    fn service_state(&self) -> &ServiceState {
        &self.state
    }

    /// Runs every child's `privileged_start_service`, in order, up to the first that
    /// fails, whose error it returns.
    fn privileged_start_service(&self) -> Result<(), Failure> {
        for child in self.services() {
            child.privileged_start_service()?;
        }
        Ok(())
    }

    /// Marks this collection running and starts every child, in order. Starting a running
    /// `MultiService` does nothing (Twisted would start every child again).
    ///
    /// A child that fails to start ends the start there, with its error; the children
    /// after it are not started and this collection stays marked running (as in Twisted),
    /// so [`stop_service`](Service::stop_service) stops the ones that started.
    fn start_service(&self) -> Result<(), Failure> {
        if self.running() {
            return Ok(());
        }
        self.state.set_running(true);
        for child in self.services() {
            child.start_service()?;
        }
        Ok(())
    }

    /// Marks this collection stopped and stops every child, in reverse order (Twisted's
    /// `MultiService.stopService`). The Deferred fires once every child's has. As in
    /// Twisted, it succeeds even if a child failed to stop (a panic counts as a failure);
    /// such failures are reported as unhandled.
    fn stop_service(&self) -> Deferred<()> {
        self.state.set_running(false);
        let mut children = self.services();
        children.reverse();
        let stops = children
            .into_iter()
            .map(|child| maybe_deferred(|| child.stop_service()))
            .collect();
        DeferredList::new(stops).into_deferred().map(|_| ())
    }
}

impl fmt::Debug for MultiService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let children: Vec<Option<String>> = self
            .children
            .borrow()
            .iter()
            .map(|c| c.name.clone())
            .collect();
        f.debug_struct("MultiService")
            .field("name", &self.state.name())
            .field("running", &self.state.running())
            .field("children", &children)
            .finish()
    }
}

// ===== Application =====

/// The root of a program's services (Twisted's `service.Application(name, uid, gid)`): a
/// named [`MultiService`] with the user and group the program should run as, for the
/// runner that starts it.
///
/// Give it to [`run_application`] to start it when the reactor runs and stop it before the
/// reactor shuts down.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use torsion::application::{Application, Service, StreamServerEndpointService, run_application};
/// use torsion::endpoints::server_from_string;
/// use torsion::protocol::Protocol;
/// use torsion::Reactor;
///
/// struct Hello;
/// impl Protocol for Hello {
///     fn connection_made(&mut self, transport: torsion::net::Transport) {
///         transport.write(b"hello\r\n");
///         transport.lose_connection();
///     }
/// }
///
/// # fn main() -> Result<(), torsion::Failure> {
/// let reactor = Reactor::new()?;
/// let app = Application::new("hello");
/// let endpoint = server_from_string(&reactor, "tcp:0:interface=127.0.0.1")?;
/// app.add_service(StreamServerEndpointService::new(endpoint, Rc::new(|| Hello)))?;
///
/// // Started now (listening), or the reason it cannot start.
/// run_application(&reactor, &app)?;
/// assert!(app.running());
/// let r = reactor.clone();
/// reactor.call_when_running(move || {
///     let _ = r.stop();
/// });
/// reactor.run()?;
/// // Stopped before the reactor shut down.
/// assert!(!app.running());
/// # Ok(())
/// # }
/// ```
pub struct Application {
    services: Rc<MultiService>,
    /// The user id to run as (Twisted's `IProcess.uid`); `None` keeps the current one.
    pub uid: Option<u32>,
    /// The group id to run as (Twisted's `IProcess.gid`); `None` keeps the current one.
    pub gid: Option<u32>,
}

impl Application {
    /// A stopped application named `name`, with no services, running as the current user
    /// and group. Set [`uid`](Self::uid) and [`gid`](Self::gid) with
    /// [`with_ids`](Self::with_ids).
    pub fn new(name: impl Into<String>) -> Rc<Application> {
        Self::with_ids(name, None, None)
    }

    /// A stopped application named `name`, with no services, to run as user `uid` and
    /// group `gid` (`None` keeps the current one; Twisted's `Application(name, uid, gid)`).
    pub fn with_ids(
        name: impl Into<String>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Rc<Application> {
        Rc::new(Application {
            services: MultiService::named(name),
            uid,
            gid,
        })
    }

    /// The [`MultiService`] holding the application's services (Twisted's
    /// `IServiceCollection(application)`); it is the [`parent`](Service::parent) of each.
    pub fn multi_service(&self) -> &Rc<MultiService> {
        &self.services
    }

    /// Adds a service; see [`MultiService::add_service`].
    ///
    /// # Errors
    ///
    /// [`DuplicateServiceName`] if another service has the same name; while the
    /// application runs, the service's failure to start.
    pub fn add_service(&self, service: Rc<dyn Service>) -> Result<(), Failure> {
        self.services.add_service(service)
    }

    /// Removes a service; see [`MultiService::remove_service`].
    ///
    /// # Errors
    ///
    /// [`ServiceNotFound`] if `service` is not one of the application's.
    pub fn remove_service<S: Service + ?Sized>(
        &self,
        service: &Rc<S>,
    ) -> Result<Deferred<()>, ServiceNotFound> {
        self.services.remove_service(service)
    }

    /// The service named `name`; see [`MultiService::get_service_named`].
    pub fn get_service_named(&self, name: &str) -> Option<Rc<dyn Service>> {
        self.services.get_service_named(name)
    }

    /// The services, in the order added.
    pub fn services(&self) -> Vec<Rc<dyn Service>> {
        self.services.services()
    }
}

impl Service for Application {
    fn service_state(&self) -> &ServiceState {
        self.services.service_state()
    }

    fn privileged_start_service(&self) -> Result<(), Failure> {
        self.services.privileged_start_service()
    }

    fn start_service(&self) -> Result<(), Failure> {
        self.services.start_service()
    }

    fn stop_service(&self) -> Deferred<()> {
        self.services.stop_service()
    }
}

impl fmt::Debug for Application {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Application")
            .field("services", &self.services)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .finish()
    }
}

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

// ===== clocks =====

/// Any time source as one sized, clonable type, for [`LoopingCall`].
#[derive(Clone)]
struct SharedClock(Rc<dyn ReactorTime>);

impl SharedClock {
    fn new<C: ReactorTime + Clone + 'static>(clock: &C) -> SharedClock {
        SharedClock(Rc::new(clock.clone()))
    }
}

impl ReactorTime for SharedClock {
    fn now(&self) -> Time {
        self.0.now()
    }

    #[track_caller]
    fn call_later_boxed(&self, delay: Duration, f: Box<dyn FnOnce()>) -> DelayedCall {
        self.0.call_later_boxed(delay, f)
    }

    fn delayed_calls(&self) -> Vec<DelayedCallInfo> {
        self.0.delayed_calls()
    }
}

// ===== TimerService =====

/// Calls a function every interval while running (Twisted's `internet.TimerService`).
///
/// Starting it starts a [`LoopingCall`] with `now`: the first call is made at once, inside
/// [`start_service`](Service::start_service). Stopping it stops the loop; the stop's
/// Deferred fires once a call in progress (one whose Deferred has not fired yet) has
/// finished. If the function fails, the failure is logged and the loop stops, as in
/// Twisted; the service still counts as running until stopped. An interval that is
/// negative or not finite makes `start_service` fail with [`InvalidArgument`], as
/// Twisted's `startService` raises `ValueError`.
///
/// # Examples
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use torsion::application::{Service, TimerService};
/// use torsion::time::{Clock, ReactorTime};
///
/// // Settings are checked when the service starts.
/// let clock = Clock::new();
/// assert!(TimerService::new(&clock, -1.0, || Ok(())).start_service().is_err());
///
/// let ticks = Rc::new(Cell::new(0));
/// let t = ticks.clone();
/// let timer = TimerService::new(&clock, 1.0, move || {
///     t.set(t.get() + 1);
///     Ok(())
/// });
///
/// timer.start_service().unwrap();
/// clock.pump(&[1.0, 1.0]);
/// assert_eq!(ticks.get(), 3); // at 0, 1 and 2 s
///
/// let mut stopped = timer.stop_service();
/// assert!(stopped.take_result().unwrap().is_ok());
/// assert!(clock.delayed_calls().is_empty());
/// ```
pub struct TimerService {
    state: ServiceState,
    /// The interval, or why it is not one (reported by `start_service`).
    interval: Result<Duration, InvalidArgument>,
    call: LoopingCall<SharedClock>,
    /// The running loop's Deferred (failures already logged).
    finished: RefCell<Option<Deferred<()>>>,
}

impl TimerService {
    /// A stopped timer calling `f` every `interval` on `clock` (the reactor, or a
    /// [`Clock`](crate::time::Clock) in tests; Twisted's `TimerService(step, callable)`).
    /// `f` returns `Result<(), Failure>` or a `Deferred<()>`, as for [`LoopingCall::new`];
    /// the interval is `f64` seconds, a [`Duration`] or whole seconds ([`IntoInterval`]).
    /// An interval that is negative or not finite is reported by
    /// [`start_service`](Service::start_service).
    pub fn new<C, R>(
        clock: &C,
        interval: impl IntoInterval,
        f: impl FnMut() -> R + 'static,
    ) -> Rc<TimerService>
    where
        C: ReactorTime + Clone + 'static,
        R: IntoOutcome<Output = ()>,
    {
        Rc::new(TimerService {
            state: ServiceState::new(),
            interval: interval.into_interval(),
            call: LoopingCall::new(SharedClock::new(clock), f),
            finished: RefCell::new(None),
        })
    }

    /// The interval between calls (Twisted's `step`); `None` if the interval given is not
    /// one (negative or not finite), which makes the service fail to start.
    pub fn interval(&self) -> Option<Duration> {
        self.interval.as_ref().ok().copied()
    }

    /// How many times the function has been called since the service last started.
    pub fn call_count(&self) -> u64 {
        self.call.call_count()
    }
}

impl Service for TimerService {
    fn service_state(&self) -> &ServiceState {
        &self.state
    }

    /// Marks the service running and starts the loop, calling the function at once.
    /// Starting a running service does nothing.
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`] if the interval is negative or not finite (Twisted's
    /// `LoopingCall.start` raises `ValueError`); the service stays stopped.
    fn start_service(&self) -> Result<(), Failure> {
        if self.running() {
            return Ok(());
        }
        let interval = self.interval.clone()?;
        self.state.set_running(true);
        let started = match self.call.start(interval, true) {
            Ok(d) => d,
            Err(e) => {
                self.state.set_running(false);
                return Err(e.into());
            }
        };
        let finished = started.add_errback(|failure| {
            crate::log::error!(target: LOG_TARGET, "TimerService's function failed: {failure:#}");
            Ok(())
        });
        let previous = self.finished.borrow_mut().replace(finished);
        drop(previous);
        Ok(())
    }

    /// Marks the service stopped and stops the loop; the Deferred fires once a call in
    /// progress has finished.
    fn stop_service(&self) -> Deferred<()> {
        self.state.set_running(false);
        self.call.stop();
        let finished = self.finished.borrow_mut().take();
        finished.unwrap_or_else(|| Deferred::succeed(()))
    }
}

impl fmt::Debug for TimerService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerService")
            .field("state", &self.state)
            .field("interval", &self.interval)
            .field("call", &self.call)
            .finish()
    }
}

// ===== StreamServerEndpointService =====

/// Listens on a server endpoint while running (Twisted's
/// `internet.StreamServerEndpointService`).
///
/// It listens in [`privileged_start_service`](Service::privileged_start_service), so that a
/// runner starting as root binds low ports before dropping its privileges, or in
/// [`start_service`](Service::start_service) if that was not called. A listen that fails at
/// once (a port in use; TCP, UNIX and systemd endpoints all listen at once) fails that
/// start, which returns the failure and leaves the service stopped, so that
/// [`run_application`] fails instead of running while listening nowhere (as Twisted does
/// for the services twistd builds from strings, with `_raiseSynchronously`). A listen that
/// fails later, for an endpoint that listens asynchronously, is logged, as in Twisted.
/// Either failure is kept: see [`listen_failure`](Self::listen_failure). Stopping it stops
/// listening; the stop's Deferred fires once the port is closed (connections already
/// accepted are left alone, as in Twisted). A listen still in progress is cancelled.
///
/// It listens with its endpoint's backlog:
/// [`DEFAULT_BACKLOG`](crate::net::tcp::DEFAULT_BACKLOG) (1024; Twisted's is 50) unless the
/// endpoint sets another, as `tcp:8080:backlog=4096` or
/// [`TcpServerEndpoint::backlog`](crate::endpoints::TcpServerEndpoint::backlog) do.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use torsion::application::{Service, StreamServerEndpointService};
/// use torsion::endpoints::server_from_string;
/// use torsion::protocol::Protocol;
/// use torsion::Reactor;
///
/// struct Quiet;
/// impl Protocol for Quiet {}
///
/// let reactor = Reactor::new().unwrap();
/// let endpoint = server_from_string(&reactor, "tcp:0:interface=127.0.0.1").unwrap();
/// let service = StreamServerEndpointService::new(endpoint, Rc::new(|| Quiet));
/// service.start_service().unwrap();
/// let port = service.port().unwrap();
/// assert_ne!(port.host().port(), Some(0));
///
/// // A second service on the same port cannot start.
/// let address = format!("tcp:{}:interface=127.0.0.1", port.host().port().unwrap());
/// let again = server_from_string(&reactor, &address).unwrap();
/// let busy = StreamServerEndpointService::new(again, Rc::new(|| Quiet));
/// let failure = busy.start_service().unwrap_err();
/// assert!(failure.check::<torsion::error::CannotListen>());
/// assert!(!busy.running());
///
/// drop(service.stop_service());
/// assert!(service.port().is_none());
/// ```
pub struct StreamServerEndpointService {
    state: ServiceState,
    endpoint: Box<dyn ServerEndpoint>,
    factory: Rc<dyn Factory>,
    /// The listen in progress or done, yielding the port (or `None` if it failed); Twisted's
    /// `_waitingForPort`.
    waiting: RefCell<Option<Deferred<Option<ListeningPort>>>>,
    port: Rc<RefCell<Option<ListeningPort>>>,
    failure: Rc<RefCell<Option<Failure>>>,
}

impl StreamServerEndpointService {
    /// A stopped service that will listen on `endpoint` with `factory` (Twisted's
    /// `StreamServerEndpointService(endpoint, factory)`).
    pub fn new(endpoint: Box<dyn ServerEndpoint>, factory: Rc<dyn Factory>) -> Rc<Self> {
        Rc::new(StreamServerEndpointService {
            state: ServiceState::new(),
            endpoint,
            factory,
            waiting: RefCell::new(None),
            port: Rc::new(RefCell::new(None)),
            failure: Rc::new(RefCell::new(None)),
        })
    }

    /// The endpoint it listens on.
    pub fn endpoint(&self) -> &dyn ServerEndpoint {
        &*self.endpoint
    }

    /// The factory building the protocols.
    pub fn factory(&self) -> &Rc<dyn Factory> {
        &self.factory
    }

    /// The listening port, once listening and until stopped.
    pub fn port(&self) -> Option<ListeningPort> {
        self.port.borrow().clone()
    }

    /// Why the last attempt to listen failed, if it did: the failure a start returned, or
    /// one logged because the endpoint failed later. Cleared by the next attempt.
    pub fn listen_failure(&self) -> Option<Failure> {
        self.failure.borrow().clone()
    }
}

impl Service for StreamServerEndpointService {
    fn service_state(&self) -> &ServiceState {
        &self.state
    }

    /// Listens, unless already listening or trying to.
    ///
    /// # Errors
    ///
    /// Why the endpoint could not listen, if it failed at once (for TCP,
    /// [`CannotListen`](crate::error::CannotListen)). The next start tries again.
    fn privileged_start_service(&self) -> Result<(), Failure> {
        if self.waiting.borrow().is_some() {
            return Ok(());
        }
        *self.failure.borrow_mut() = None;
        let listening = self.endpoint.listen(self.factory.clone());
        let port_slot = self.port.clone();
        let failure_slot = self.failure.clone();
        let description = format!("{:?}", self.endpoint);
        // A failure while `listen` is still on the stack is returned, not logged.
        let at_once = Rc::new(Cell::new(true));
        let synchronous = at_once.clone();
        let waiting = listening.add_both(move |result| -> Result<_, Failure> {
            match result {
                Ok(port) => {
                    *port_slot.borrow_mut() = Some(port.clone());
                    Ok(Some(port))
                }
                Err(failure) => {
                    if !failure.check::<Cancelled>() {
                        if !synchronous.get() {
                            crate::log::error!(
                                target: LOG_TARGET,
                                "{description} could not listen: {failure}"
                            );
                        }
                        *failure_slot.borrow_mut() = Some(failure);
                    }
                    Ok(None)
                }
            }
        });
        at_once.set(false);
        let failed = self.failure.borrow().clone();
        if let Some(failure) = failed {
            // Fired already, with no port: nothing to keep, so the next start listens.
            drop(waiting);
            return Err(failure);
        }
        *self.waiting.borrow_mut() = Some(waiting);
        Ok(())
    }

    /// Marks the service running and listens, if
    /// [`privileged_start_service`](Service::privileged_start_service) did not already.
    ///
    /// # Errors
    ///
    /// As for `privileged_start_service`; the service is left stopped (Twisted leaves it
    /// marked running).
    fn start_service(&self) -> Result<(), Failure> {
        self.state.set_running(true);
        let listening = self.privileged_start_service();
        if listening.is_err() {
            self.state.set_running(false);
        }
        listening
    }

    /// Marks the service stopped and stops listening; the Deferred fires once the port is
    /// closed (at once if it never listened).
    fn stop_service(&self) -> Deferred<()> {
        self.state.set_running(false);
        let waiting = self.waiting.borrow_mut().take();
        let Some(waiting) = waiting else {
            return Deferred::succeed(());
        };
        waiting.cancel();
        let port_slot = self.port.clone();
        waiting.add_callback(move |port| {
            let taken = port_slot.borrow_mut().take();
            drop(taken);
            match port {
                Some(port) => port.stop_listening(),
                None => Deferred::succeed(()),
            }
        })
    }
}

impl fmt::Debug for StreamServerEndpointService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamServerEndpointService")
            .field("state", &self.state)
            .field("endpoint", &self.endpoint)
            .field("listening", &self.port.borrow().as_ref().map(|p| p.host()))
            .finish()
    }
}

// ===== ClientService =====

/// How long a [`ClientService`] waits before its next attempt, given how many attempts in a
/// row have failed (1 after the first failure); Twisted's `retryPolicy`.
pub type RetryPolicy = Box<dyn FnMut(u32) -> Duration>;

/// An exponential backoff for [`ClientService`] (Twisted's `backoffPolicy`): after `n`
/// failed attempts, waits `min(initial_delay * factor^min(n, 100), max_delay) + jitter()`
/// seconds. The default [`ClientService`] policy is `backoff_policy(1.0, 60.0, 1.5,
/// uniform_jitter())`.
///
/// A delay that is not a number or is negative counts as zero; one too large for a
/// [`Duration`] as `max_delay`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use torsion::application::backoff_policy;
///
/// let mut policy = backoff_policy(1.0, 60.0, 1.5, || 0.0);
/// assert_eq!(policy(1), Duration::from_secs_f64(1.5));
/// assert_eq!(policy(2), Duration::from_secs_f64(2.25));
/// assert_eq!(policy(20), Duration::from_secs(60));
/// ```
pub fn backoff_policy(
    initial_delay: f64,
    max_delay: f64,
    factor: f64,
    mut jitter: impl FnMut() -> f64 + 'static,
) -> impl FnMut(u32) -> Duration + 'static {
    move |attempt| {
        let exponent = attempt.min(100) as i32;
        let grown = initial_delay * factor.powi(exponent);
        // Twisted catches the OverflowError and waits `max_delay`.
        let delay = if grown.is_finite() {
            grown.min(max_delay)
        } else {
            max_delay
        };
        let total = delay + jitter();
        if total.is_nan() || total <= 0.0 {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64(total)
            .or_else(|_| Duration::try_from_secs_f64(max_delay))
            .unwrap_or(Duration::from_secs(u64::from(u32::MAX)))
    }
}

/// Uniform draws from `[0, 1)`, seeded at random (Twisted's `random.random`, the default
/// jitter of [`backoff_policy`]). Not for cryptography; only to spread retries out.
pub fn uniform_jitter() -> impl FnMut() -> f64 + 'static {
    let mut source = crate::jitter::JitterSource::seeded();
    move || source.uniform()
}

/// Keeps one connection to an endpoint up, reconnecting after a failure or a loss with a
/// growing delay (Twisted's `internet.ClientService`).
///
/// Once started, it connects with its factory; when an attempt fails or the connection is
/// lost, it waits for the retry policy's delay (by default [`backoff_policy`]`(1.0, 60.0,
/// 1.5, jitter)`, the count of failures in a row starting again after each success) and
/// tries again. [`when_connected`](Self::when_connected) hands out the connection's
/// [`Transport`], at once if connected. Stopping it stops retrying, cancels an attempt in
/// progress, and closes the connection; the stop's Deferred fires once the connection is
/// gone.
///
/// As with [endpoints](crate::endpoints), Deferreds fire with the [`Transport`], not the
/// protocol (the connection owns the protocol): share state with the protocol through the
/// factory to reach it.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use std::time::Duration;
/// use torsion::application::{ClientService, Service};
/// use torsion::endpoints::client_from_string;
/// use torsion::protocol::Protocol;
/// use torsion::Reactor;
///
/// struct Chat;
/// impl Protocol for Chat {}
///
/// let reactor = Reactor::new().unwrap();
/// let endpoint = client_from_string(&reactor, "tcp:127.0.0.1:6667").unwrap();
/// let client = ClientService::new(&reactor, endpoint, Rc::new(|| Chat))
///     .retry_policy(|failures| Duration::from_secs(u64::from(failures.min(30))));
/// let greeted = client.when_connected().add_callbacks(
///     |transport| {
///         transport.write(b"hello\r\n");
///         Ok(())
///     },
///     |_stopped_first| Ok(()),
/// );
/// client.start_service().unwrap();
/// // ... reactor.run() ...
/// let mut stopped = client.stop_service();
/// assert!(stopped.take_result().unwrap().is_ok());
/// drop(greeted);
/// ```
pub struct ClientService {
    state: ServiceState,
    core: Rc<ClientCore>,
}

type Prepare = Box<dyn FnMut(&Transport) -> Deferred<()>>;

struct ClientCore {
    me: Weak<ClientCore>,
    endpoint: Box<dyn ClientEndpoint>,
    /// The user's factory, wrapped to report connections made and lost.
    factory: Rc<ServiceFactory>,
    clock: Rc<dyn ReactorTime>,
    /// Taken out while it runs (user code).
    policy: RefCell<Option<RetryPolicy>>,
    /// Taken out while it runs (user code).
    prepare: RefCell<Option<Prepare>>,
    machine: RefCell<Machine>,
}

/// The connection state (Twisted's `_ClientMachine`, flattened into fields).
#[derive(Default)]
struct Machine {
    /// Started and not stopped since.
    wanted: bool,
    /// Stopped since the last start: `when_connected` fails at once.
    stopped: bool,
    /// Numbers the attempts; events of an older attempt are stale.
    generation: u64,
    /// The attempt in progress (connecting, or preparing the connection).
    attempt: Option<u64>,
    /// Cancels the attempt in progress.
    attempt_handle: Option<DeferredHandle>,
    /// The current attempt's connection once made, until lost.
    connection: Option<(u64, Transport)>,
    /// Whether `connection` is prepared and handed out.
    connected: bool,
    retry: Option<DelayedCall>,
    failed_attempts: u32,
    /// `when_connected` callers and how many more failures each tolerates.
    waiters: Vec<(Resolver<Transport>, Option<u32>)>,
    stop_waiters: Vec<Resolver<()>>,
}

impl ClientService {
    /// A stopped service that will keep a connection to `endpoint` with protocols from
    /// `factory`, scheduling its retries on `clock` (the reactor, or a
    /// [`Clock`](crate::time::Clock) in tests; Twisted's `clock`).
    pub fn new<C: ReactorTime + Clone + 'static>(
        clock: &C,
        endpoint: Box<dyn ClientEndpoint>,
        factory: Rc<dyn Factory>,
    ) -> Rc<ClientService> {
        let core = Rc::new_cyclic(|me: &Weak<ClientCore>| ClientCore {
            me: me.clone(),
            endpoint,
            factory: Rc::new(ServiceFactory {
                inner: factory,
                core: me.clone(),
            }),
            clock: Rc::new(clock.clone()),
            policy: RefCell::new(Some(Box::new(backoff_policy(
                1.0,
                60.0,
                1.5,
                uniform_jitter(),
            )))),
            prepare: RefCell::new(None),
            machine: RefCell::new(Machine::default()),
        });
        Rc::new(ClientService {
            state: ServiceState::new(),
            core,
        })
    }

    /// Sets the retry policy (Twisted's `retryPolicy`): given the number of attempts that
    /// failed in a row (counting a lost connection as one), the delay before the next.
    /// Takes and gives back the service, to chain after [`new`](Self::new).
    pub fn retry_policy(self: Rc<Self>, policy: impl FnMut(u32) -> Duration + 'static) -> Rc<Self> {
        *self.core.policy.borrow_mut() = Some(Box::new(policy));
        self
    }

    /// Sets a function run on each new connection before it counts as connected (Twisted's
    /// `prepareConnection`): to log in, or to check the peer. It returns
    /// `Result<(), Failure>` or a `Deferred<()>`; [`when_connected`](Self::when_connected)
    /// waits for it. If it fails (or panics), the connection is closed and the attempt
    /// counts as failed. Takes and gives back the service, to chain after
    /// [`new`](Self::new).
    pub fn prepare_connection<R>(
        self: Rc<Self>,
        mut f: impl FnMut(&Transport) -> R + 'static,
    ) -> Rc<Self>
    where
        R: IntoOutcome<Output = ()>,
    {
        let prepare: Prepare = Box::new(move |transport| maybe_deferred(|| f(transport)));
        *self.core.prepare.borrow_mut() = Some(prepare);
        self
    }

    /// The connection's transport: now if connected, else once the next connection is made
    /// (Twisted's `whenConnected()`). It fails with [`Cancelled`] when the service is
    /// stopped, and at once if it is stopped already.
    pub fn when_connected(&self) -> Deferred<Transport> {
        self.core.when_connected(None)
    }

    /// As [`when_connected`](Self::when_connected), but fails with the attempt's failure
    /// once `failures` attempts in a row have failed after this call (Twisted's
    /// `whenConnected(failAfterFailures)`): with 1, the first failed attempt fails it.
    pub fn when_connected_fail_after(&self, failures: u32) -> Deferred<Transport> {
        self.core.when_connected(Some(failures))
    }

    /// The endpoint it connects to.
    pub fn endpoint(&self) -> &dyn ClientEndpoint {
        &*self.core.endpoint
    }
}

impl Service for ClientService {
    fn service_state(&self) -> &ServiceState {
        &self.state
    }

    /// Marks the service running and starts connecting. Starting a running service does
    /// nothing (Twisted logs a warning).
    fn start_service(&self) -> Result<(), Failure> {
        if self.running() {
            crate::log::warning!(target: LOG_TARGET, "duplicate ClientService::start_service");
            return Ok(());
        }
        self.state.set_running(true);
        self.core.start();
        Ok(())
    }

    /// Marks the service stopped, stops retrying and closes the connection; the Deferred
    /// fires once no attempt is in progress and the connection is gone.
    fn stop_service(&self) -> Deferred<()> {
        self.state.set_running(false);
        self.core.stop()
    }
}

impl fmt::Debug for ClientService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.core.machine.borrow();
        f.debug_struct("ClientService")
            .field("state", &self.state)
            .field("endpoint", &self.core.endpoint)
            .field("connected", &m.connected)
            .field("failed_attempts", &m.failed_attempts)
            .finish()
    }
}

impl ClientCore {
    fn start(&self) {
        {
            let mut m = self.machine.borrow_mut();
            if m.wanted {
                return;
            }
            m.wanted = true;
            m.stopped = false;
            m.failed_attempts = 0;
        }
        // Connects now, or once a connection still closing from a stop is gone.
        self.settle();
    }

    fn stop(&self) -> Deferred<()> {
        let (retry, handle, transport, waiters, stopped) = {
            let mut m = self.machine.borrow_mut();
            m.wanted = false;
            m.stopped = true;
            m.connected = false;
            let retry = m.retry.take();
            let handle = m.attempt_handle.clone();
            let transport = m.connection.as_ref().map(|(_, t)| t.clone());
            let waiters = std::mem::take(&mut m.waiters);
            let stopped = if m.attempt.is_none() && m.connection.is_none() {
                Deferred::succeed(())
            } else {
                let (resolver, d) = Deferred::new();
                m.stop_waiters.push(resolver);
                d
            };
            (retry, handle, transport, waiters, stopped)
        };
        if let Some(retry) = retry {
            let _ = retry.cancel();
        }
        for (waiter, _) in waiters {
            let _ = waiter.try_errback(Cancelled);
        }
        if let Some(handle) = handle {
            handle.cancel();
        }
        if let Some(transport) = transport {
            transport.lose_connection();
        }
        stopped
    }

    fn when_connected(&self, fail_after: Option<u32>) -> Deferred<Transport> {
        let mut m = self.machine.borrow_mut();
        if m.connected
            && let Some((_, transport)) = &m.connection
        {
            return Deferred::succeed(transport.clone());
        }
        if m.stopped {
            return Deferred::fail(Cancelled);
        }
        let (resolver, d) = Deferred::new();
        m.waiters.push((resolver, fail_after));
        d
    }

    /// Starts an attempt (Twisted's `_connect`).
    fn connect(&self) {
        let generation = {
            let mut m = self.machine.borrow_mut();
            m.generation += 1;
            m.attempt = Some(m.generation);
            m.attempt_handle = None;
            m.generation
        };
        let connecting = self.endpoint.connect(self.factory.clone());
        let me = self.me.clone();
        let prepared = connecting.add_callback(move |transport| match me.upgrade() {
            Some(core) => core.prepare(transport),
            None => Deferred::succeed(transport),
        });
        let me = self.me.clone();
        let ended = prepared.add_both(move |result| {
            if let Some(core) = me.upgrade() {
                core.attempt_ended(generation, result);
            }
            Ok::<(), Failure>(())
        });
        let mut m = self.machine.borrow_mut();
        if m.attempt == Some(generation) {
            m.attempt_handle = Some(ended.handle());
        }
    }

    /// Runs the user's `prepare_connection`, if any.
    fn prepare(&self, transport: Transport) -> Deferred<Transport> {
        let prepare = self.prepare.borrow_mut().take();
        let Some(mut prepare) = prepare else {
            return Deferred::succeed(transport);
        };
        let prepared = prepare(&transport);
        {
            let mut slot = self.prepare.borrow_mut();
            if slot.is_none() {
                *slot = Some(prepare);
            }
        }
        prepared.map(move |()| transport)
    }

    /// The protocol's `connection_made` ran.
    fn transport_up(&self, generation: u64, transport: &Transport) {
        let lose = {
            let mut m = self.machine.borrow_mut();
            let current = m.attempt == Some(generation)
                || m.connection.as_ref().is_some_and(|(g, _)| *g == generation);
            if current {
                m.connection = Some((generation, transport.clone()));
            }
            !current || !m.wanted
        };
        if lose {
            transport.lose_connection();
        }
    }

    /// The attempt is over: connected and prepared, or failed.
    fn attempt_ended(&self, generation: u64, result: Result<Transport, Failure>) {
        let mut m = self.machine.borrow_mut();
        if m.attempt != Some(generation) {
            drop(m);
            // An abandoned attempt: a connection it made anyway is closed.
            if let Ok(transport) = result {
                transport.lose_connection();
            }
            return;
        }
        m.attempt = None;
        m.attempt_handle = None;
        match result {
            Ok(transport) if m.wanted => {
                m.connection = Some((generation, transport.clone()));
                m.connected = true;
                m.failed_attempts = 0;
                let waiters = std::mem::take(&mut m.waiters);
                drop(m);
                tracing::debug!(
                    target: LOG_TARGET,
                    "connected to {:?}",
                    self.endpoint
                );
                for (waiter, _) in waiters {
                    let _ = waiter.try_callback(transport.clone());
                }
            }
            Ok(transport) => {
                // Stopped meanwhile: close it; the stop waits for the loss.
                m.connection = Some((generation, transport.clone()));
                drop(m);
                transport.lose_connection();
            }
            Err(failure) => {
                // A connection made but not prepared is rejected. While retrying, it is
                // forgotten; while stopping, the stop waits for it.
                let rejected = if m.wanted {
                    m.connection.take().map(|(_, t)| t)
                } else {
                    m.connection.as_ref().map(|(_, t)| t.clone())
                };
                drop(m);
                if let Some(transport) = rejected {
                    transport.lose_connection();
                }
                self.failed(Some(failure));
            }
        }
    }

    /// The protocol's `connection_lost` ran.
    fn connection_lost(&self, generation: u64, reason: Failure) {
        let (was_connected, preparing) = {
            let mut m = self.machine.borrow_mut();
            if m.connection.as_ref().is_none_or(|(g, _)| *g != generation) {
                return;
            }
            m.connection = None;
            let was_connected = std::mem::replace(&mut m.connected, false);
            let preparing = if m.attempt == Some(generation) {
                m.attempt = None;
                m.attempt_handle.take()
            } else {
                None
            };
            (was_connected, preparing)
        };
        if let Some(handle) = preparing {
            // Lost while being prepared: the attempt failed with the loss; the
            // preparation's own outcome is stale now.
            handle.cancel();
            self.failed(Some(reason));
        } else if was_connected {
            tracing::info!(
                target: LOG_TARGET,
                "connection to {:?} lost: {reason}",
                self.endpoint
            );
            self.failed(None);
        } else {
            self.settle();
        }
    }

    /// An attempt failed (`Some`) or the connection was lost (`None`): schedule the next
    /// attempt (Twisted's `_wait`) and fail the waiters that gave up.
    fn failed(&self, failure: Option<Failure>) {
        let wanted = self.machine.borrow().wanted;
        if wanted {
            let attempts = {
                let mut m = self.machine.borrow_mut();
                m.failed_attempts = m.failed_attempts.saturating_add(1);
                m.failed_attempts
            };
            let delay = self.retry_delay(attempts);
            if let Some(failure) = &failure {
                tracing::info!(
                    target: LOG_TARGET,
                    "connecting to {:?} failed: {failure}; retry {attempts} in {:.3} s",
                    self.endpoint,
                    delay.as_secs_f64()
                );
            } else {
                tracing::info!(
                    target: LOG_TARGET,
                    "reconnecting to {:?} in {:.3} s",
                    self.endpoint,
                    delay.as_secs_f64()
                );
            }
            let me = self.me.clone();
            let call = self.clock.call_later_boxed(
                delay,
                Box::new(move || {
                    if let Some(core) = me.upgrade() {
                        core.retry_due();
                    }
                }),
            );
            let previous = self.machine.borrow_mut().retry.replace(call);
            if let Some(previous) = previous {
                let _ = previous.cancel();
            }
            if let Some(failure) = failure {
                self.deliver_failure(failure);
            }
        }
        self.settle();
    }

    fn retry_delay(&self, attempts: u32) -> Duration {
        let policy = self.policy.borrow_mut().take();
        let Some(mut policy) = policy else {
            // The policy itself is running and caused this: no reentrant call.
            return Duration::ZERO;
        };
        let delay = policy(attempts);
        let mut slot = self.policy.borrow_mut();
        if slot.is_none() {
            *slot = Some(policy);
        }
        delay
    }

    /// Fails the waiters whose count of tolerated failures ran out (Twisted's
    /// `_deliverConnectionFailure`).
    fn deliver_failure(&self, failure: Failure) {
        let ready = {
            let mut m = self.machine.borrow_mut();
            let mut ready = Vec::new();
            let mut kept = Vec::new();
            for (waiter, remaining) in std::mem::take(&mut m.waiters) {
                match remaining {
                    _ if waiter.is_fired() => {}
                    Some(n) if n <= 1 => ready.push(waiter),
                    Some(n) => kept.push((waiter, Some(n - 1))),
                    None => kept.push((waiter, None)),
                }
            }
            m.waiters = kept;
            ready
        };
        for waiter in ready {
            let _ = waiter.try_errback(failure.clone());
        }
    }

    fn retry_due(&self) {
        let connect = {
            let mut m = self.machine.borrow_mut();
            m.retry = None;
            m.wanted && m.attempt.is_none() && m.connection.is_none()
        };
        if connect {
            self.connect();
        }
    }

    /// Once nothing is in progress: fires the stop's Deferreds, and connects if started
    /// again meanwhile.
    fn settle(&self) {
        let (stop_waiters, connect) = {
            let mut m = self.machine.borrow_mut();
            if m.attempt.is_some() || m.connection.is_some() {
                return;
            }
            let stop_waiters = std::mem::take(&mut m.stop_waiters);
            (stop_waiters, m.wanted && m.retry.is_none())
        };
        for waiter in stop_waiters {
            let _ = waiter.try_callback(());
        }
        if connect {
            self.connect();
        }
    }
}

/// Wraps the user's factory so the service hears of connections made and lost (Twisted's
/// `_DisconnectFactory`).
struct ServiceFactory {
    inner: Rc<dyn Factory>,
    core: Weak<ClientCore>,
}

impl Factory for ServiceFactory {
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>> {
        let generation = self
            .core
            .upgrade()
            .and_then(|core| core.machine.borrow().attempt)
            .unwrap_or(0);
        let inner = self.inner.clone().build_protocol(addr)?;
        Some(Box::new(ServiceProtocol {
            inner,
            core: self.core.clone(),
            generation,
        }))
    }

    fn start_factory(&self) {
        self.inner.start_factory();
    }

    fn stop_factory(&self) {
        self.inner.stop_factory();
    }
}

/// Passes every event on, and tells the service when the connection is made and lost
/// (Twisted's `_ReconnectingProtocolProxy`).
struct ServiceProtocol {
    inner: Box<dyn Protocol>,
    core: Weak<ClientCore>,
    generation: u64,
}

impl Protocol for ServiceProtocol {
    fn connection_made(&mut self, transport: Transport) {
        self.inner.connection_made(transport.clone());
        if let Some(core) = self.core.upgrade() {
            core.transport_up(self.generation, &transport);
        }
    }

    fn data_received(&mut self, data: &[u8]) {
        self.inner.data_received(data);
    }

    fn connection_lost(&mut self, reason: Failure) {
        self.inner.connection_lost(reason.clone());
        if let Some(core) = self.core.upgrade() {
            core.connection_lost(self.generation, reason);
        }
    }

    fn supports_half_close(&self) -> bool {
        self.inner.supports_half_close()
    }

    fn read_connection_lost(&mut self) {
        self.inner.read_connection_lost();
    }

    fn write_connection_lost(&mut self) {
        self.inner.write_connection_lost();
    }
}
