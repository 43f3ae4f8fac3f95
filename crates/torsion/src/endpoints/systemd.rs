//! Endpoints over listening sockets inherited from systemd socket activation (Twisted's
//! `AdoptedStreamServerEndpoint`, as its `_SystemdParser` makes it from `systemd:` strings).
//!
//! Invariant: the inherited descriptors are taken from the environment once per process
//! (`INHERITED`) and never handed out themselves: each `listen` adopts a duplicate, so an
//! endpoint can listen again after `stop_listening`.

use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::OnceLock;

use socket2::{Domain, SockRef};

use super::{ListeningPort, PortFactory, ServerEndpoint};
use crate::defer::{Deferred, Failure};
use crate::error::{EndpointUnavailable, InvalidArgument, NoInheritedSocket};
use crate::net::systemd::listen_fds;
use crate::protocol::Factory;
use crate::reactor::Reactor;

/// The address family of a socket inherited from systemd (`domain=` in `systemd:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemdDomain {
    /// `INET`: TCP over IPv4.
    Inet,
    /// `INET6`: TCP over IPv6.
    Inet6,
    /// `UNIX`: a UNIX stream socket.
    Unix,
}

impl SystemdDomain {
    fn socket_domain(self) -> Domain {
        match self {
            SystemdDomain::Inet => Domain::IPV4,
            SystemdDomain::Inet6 => Domain::IPV6,
            SystemdDomain::Unix => Domain::UNIX,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SystemdDomain::Inet => "INET",
            SystemdDomain::Inet6 => "INET6",
            SystemdDomain::Unix => "UNIX",
        }
    }
}

/// Which inherited socket to adopt: by position or by `FileDescriptorName`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemdSocket {
    /// The N-th inherited descriptor (`index=N`), counted from 0 (descriptor 3 + N).
    Index(usize),
    /// The descriptor named so in `LISTEN_FDNAMES` (`name=X`). Parsed, but not supported
    /// yet: listening fails with [`EndpointUnavailable`].
    Name(String),
}

/// A listening socket inherited from systemd socket activation:
/// `systemd:domain=INET|INET6|UNIX:index=N` or `…:name=X` (Twisted's `_SystemdParser`,
/// which makes an `AdoptedStreamServerEndpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdSpec {
    /// The socket's address family.
    pub domain: SystemdDomain,
    /// Which inherited socket.
    pub socket: SystemdSocket,
}

/// The sockets this process inherited from systemd, taken from the environment once, by
/// [`listen_fds`], the first time a `systemd:` endpoint listens, and kept for every such
/// endpoint of the process.
static INHERITED: OnceLock<Vec<OwnedFd>> = OnceLock::new();

/// Listens on a socket inherited from systemd (Twisted's `AdoptedStreamServerEndpoint`
/// made by `systemd:`), with [`Reactor::adopt_stream_port`].
///
/// The first time a `systemd:` endpoint listens, the process's inherited sockets are taken
/// with [`listen_fds`] (which hands them out once per process) and kept; each `listen`
/// then adopts a duplicate of the descriptor at [`SystemdSocket::Index`], as Twisted's
/// `adoptStreamPort` does, so the endpoint can listen again after `stop_listening`. So a
/// program uses either `systemd:` endpoints or `listen_fds` itself, not both: whichever
/// comes second finds nothing (or give the endpoint the descriptors with
/// [`with_fds`](Self::with_fds)).
///
/// `listen` fails with [`NoInheritedSocket`] when systemd passed no socket at that index,
/// with [`InvalidArgument`] when the socket is not of [`spec.domain`](SystemdSpec::domain)
/// or not a listening stream socket, and with [`EndpointUnavailable`] for
/// [`SystemdSocket::Name`]: finding a socket by name (`LISTEN_FDNAMES`) is not supported
/// yet.
///
/// # Examples
///
/// ```
/// use std::any::Any;
/// use std::os::fd::OwnedFd;
/// use std::rc::Rc;
/// use torsion::Reactor;
/// use torsion::endpoints::{ServerEndpoint, SystemdServerEndpoint, server_from_string};
/// use torsion::protocol::Protocol;
///
/// struct Quiet;
/// impl Protocol for Quiet {}
///
/// let reactor = Reactor::new().unwrap();
/// let endpoint = server_from_string(&reactor, "systemd:domain=INET:index=0").unwrap();
/// let systemd = (&*endpoint as &dyn Any).downcast_ref::<SystemdServerEndpoint>().unwrap();
/// // Outside socket activation, hand it the sockets directly.
/// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let address = listener.local_addr().unwrap();
/// let endpoint = systemd.clone().with_fds(vec![OwnedFd::from(listener)]);
/// let port = endpoint.listen(Rc::new(|| Quiet)).take_result().unwrap().unwrap();
/// assert_eq!(port.host().socket_addr(), Some(address));
/// ```
#[derive(Debug, Clone)]
pub struct SystemdServerEndpoint {
    reactor: Reactor,
    /// Which socket to adopt.
    pub spec: SystemdSpec,
    /// Descriptors given with `with_fds`, in place of the inherited ones.
    fds: Option<Rc<[OwnedFd]>>,
}

impl SystemdServerEndpoint {
    /// Adopts the socket `spec` names.
    pub fn new(reactor: &Reactor, spec: SystemdSpec) -> SystemdServerEndpoint {
        SystemdServerEndpoint {
            reactor: reactor.clone(),
            spec,
            fds: None,
        }
    }

    /// Adopts from `fds` instead of the sockets the process inherited: `index=N` is
    /// `fds[N]`. The endpoint keeps them (closing them when the last clone of it is
    /// dropped) and adopts a duplicate at each `listen`.
    ///
    /// For tests, which cannot set `LISTEN_PID` and `LISTEN_FDS` (changing the environment
    /// of a multi-threaded process is unsound), and for programs that took the inherited
    /// sockets with [`listen_fds`] themselves.
    pub fn with_fds(mut self, fds: Vec<OwnedFd>) -> SystemdServerEndpoint {
        self.fds = Some(fds.into());
        self
    }

    /// The reactor it listens on.
    pub fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    fn adopt(&self, factory: Rc<dyn Factory>) -> Result<ListeningPort, Failure> {
        let index = match &self.spec.socket {
            SystemdSocket::Index(index) => *index,
            SystemdSocket::Name(name) => {
                return Err(EndpointUnavailable {
                    endpoint: "systemd".into(),
                    missing: format!(
                        "support for LISTEN_FDNAMES, to find the socket named {name:?} \
                         (use index=N)"
                    ),
                }
                .into());
            }
        };
        let fds: &[OwnedFd] = match &self.fds {
            Some(fds) => fds,
            None => INHERITED.get_or_init(listen_fds),
        };
        let Some(fd) = fds.get(index) else {
            return Err(NoInheritedSocket {
                index,
                inherited: fds.len(),
            }
            .into());
        };
        let family = SockRef::from(fd).domain().map_err(Failure::new)?;
        if family != self.spec.domain.socket_domain() {
            return Err(InvalidArgument(format!(
                "systemd socket {index} is not of domain {}: its family is {family:?}",
                self.spec.domain.name()
            ))
            .into());
        }
        let duplicate = fd.try_clone().map_err(Failure::new)?;
        let adapter = Rc::new(PortFactory { inner: factory });
        let port = self.reactor.adopt_stream_port(duplicate, adapter)?;
        Ok(Rc::new(port))
    }
}

impl ServerEndpoint for SystemdServerEndpoint {
    fn listen(&self, factory: Rc<dyn Factory>) -> Deferred<ListeningPort> {
        match self.adopt(factory) {
            Ok(port) => Deferred::succeed(port),
            Err(failure) => Deferred::fail(failure),
        }
    }
}
