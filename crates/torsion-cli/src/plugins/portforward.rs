//! The `portforward` plugin: every connection accepted is relayed, both ways, to a
//! connection opened to the destination (Twisted's `twisted.protocols.portforward`, served
//! as the old `twistd portforward` plugin served it).
//!
//! It wraps the engine's [`ProxyFactory`] with the destination as any client endpoint
//! ([`ProxyFactory::with_endpoint`]),
//! so `--dest` takes the endpoint string syntax: `tcp:HOST:PORT`, `unix:PATH`, with the
//! endpoint's options (`timeout=SECS`, `bindAddress=ADDR`). The engine does the flow control
//! (each side is the other's streaming producer, so a fast sender and a slow receiver keep
//! memory bounded) and the closing (when one side closes, the other follows once drained).
//!
//! [`portforward_service`] is the service a library user embeds, [`PortForwardPlugin`] the
//! runner's `torsion portforward --listen ENDPOINT --dest ENDPOINT`.
//!
//! Invariant: this file only builds; everything that happens on a connection is the
//! engine's `portforward`, so a fix there applies here unchanged.

use std::rc::Rc;

use clap::{Arg, ArgMatches, Command};
use torsion::application::{Service, StreamServerEndpointService};
use torsion::endpoints::{ClientEndpoint, ServerEndpoint, client_from_string, server_from_string};
use torsion::protocols::portforward::ProxyFactory;
use torsion::{Failure, Reactor};

use super::required_string;
use crate::Plugin;

/// A stopped service that forwards each connection accepted on `listen` to `dest` once
/// started (Twisted's `StreamServerEndpointService(endpoint, ProxyFactory(host, port))`).
///
/// # Examples
///
/// Forwarding a local port to a UNIX socket:
///
/// ```
/// use std::rc::Rc;
/// use torsion::Reactor;
/// use torsion::application::Service;
/// use torsion::endpoints::{client_from_string, server_from_string};
/// use torsion_cli::plugins::portforward::portforward_service;
///
/// let reactor = Reactor::new().unwrap();
/// let listen = server_from_string(&reactor, "tcp:0:interface=127.0.0.1").unwrap();
/// let dest = client_from_string(&reactor, "unix:/run/app.sock:timeout=5").unwrap();
/// let service = portforward_service(listen, Rc::from(dest));
/// service.start_service().unwrap();
/// assert!(service.port().is_some());
/// drop(service.stop_service());
/// ```
pub fn portforward_service(
    listen: Box<dyn ServerEndpoint>,
    dest: Rc<dyn ClientEndpoint>,
) -> Rc<StreamServerEndpointService> {
    StreamServerEndpointService::new(listen, ProxyFactory::with_endpoint(dest))
}

/// `torsion portforward --listen ENDPOINT --dest ENDPOINT`: the port forwarder as a runner
/// plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct PortForwardPlugin;

impl Plugin for PortForwardPlugin {
    fn name(&self) -> &'static str {
        "portforward"
    }

    fn description(&self) -> &'static str {
        "Port forwarder: relays every connection, both ways, to a destination endpoint"
    }

    fn command(&self) -> Command {
        Command::new(self.name())
            .about(self.description())
            .long_about(
                "Port forwarder (Twisted's twisted.protocols.portforward): each connection \
                 accepted on --listen is relayed, both ways, to a new connection to --dest. \
                 Reading from one side stops while the other side's send buffer is full, so \
                 memory stays bounded between a fast and a slow peer. When one side closes, \
                 the other is closed once what it still has to send is sent; if --dest \
                 cannot be reached, the accepted connection is closed.",
            )
            .arg(super::listen_arg())
            .arg(
                Arg::new("dest")
                    .long("dest")
                    .value_name("ENDPOINT")
                    .required(true)
                    .help(
                        "Where to forward to, as a client endpoint string: \
                         tcp:HOST:PORT[:timeout=SECS], tls:HOST:PORT[:trustRoots=PEM], \
                         unix:PATH",
                    ),
            )
    }

    fn make_service(
        &self,
        reactor: &Reactor,
        options: &ArgMatches,
    ) -> Result<Rc<dyn Service>, Failure> {
        let listen = required_string(options, "listen")?;
        let dest = required_string(options, "dest")?;
        let dest: Rc<dyn ClientEndpoint> = Rc::from(client_from_string(reactor, dest)?);
        let listen = server_from_string(reactor, listen)?;
        Ok(portforward_service(listen, dest))
    }
}
