//! The services of a program and the tree they form (Twisted's
//! `twisted.application.service`): the [`Service`] trait and the [`ServiceState`] every
//! service embeds, [`MultiService`], and [`Application`] at the root.
//!
//! Invariant: parent and child point at each other (the parent holds its children's `Rc`,
//! the child its parent's `Weak` in its [`ServiceState`]), and only
//! [`MultiService::add_service`] and the removals change both sides together; no
//! `RefCell` of a `MultiService` is borrowed while a child's `start_service` or
//! `stop_service` runs.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::{Rc, Weak};

use crate::defer::{DeferredList, maybe_deferred};
use crate::error::{DuplicateServiceName, ServiceHasParent, ServiceNotFound};
use crate::{Deferred, Failure};

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
    ///
    /// [`run_application`]: super::run_application
    fn privileged_start_service(&self) -> Result<(), Failure> {
        Ok(())
    }

    /// Starts the service (Twisted's `startService`); by default, marks it running.
    ///
    /// # Errors
    ///
    /// Why the service cannot start (Twisted's `startService` raising); a service that
    /// fails to start should leave itself stopped. [`run_application`] returns the error.
    ///
    /// [`run_application`]: super::run_application
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
///
/// [`run_application`]: super::run_application
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
