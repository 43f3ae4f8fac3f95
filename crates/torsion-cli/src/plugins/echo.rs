//! The `echo` plugin: every byte a client sends is sent back (Twisted's `echoserv.py` and
//! the `Echo` protocol of `twisted.protocols.wire`, served as `twist` would serve a
//! plugin).
//!
//! [`Echo`] is the protocol, [`echo_service`] the service a library user embeds, and
//! [`EchoPlugin`] the runner's `torsion echo --listen ENDPOINT`.
//!
//! Invariant: the server's memory stays bounded against a peer that sends and never reads:
//! each connection turns on [`throttle_reading`](torsion::net::TransportOps::throttle_reading),
//! so reading stops while the send buffer is over the transport's high-water mark and
//! resumes once it drains. Never write to a connection without that throttle on.

use std::rc::Rc;

use clap::{ArgMatches, Command};
use torsion::application::{Service, StreamServerEndpointService};
use torsion::endpoints::{ServerEndpoint, server_from_string};
use torsion::net::Transport;
use torsion::protocol::Protocol;
use torsion::{Failure, Reactor};

use super::required_string;
use crate::Plugin;

/// Sends back every byte it receives (Twisted's `twisted.protocols.wire.Echo`).
///
/// Reading is throttled by the connection's own output: a peer that writes without reading
/// is stopped by TCP flow control once about a high-water mark of echoed bytes is queued,
/// instead of making the server buffer everything it sent.
#[derive(Default)]
pub struct Echo {
    transport: Option<Transport>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, transport: Transport) {
        // Echo each piece at once rather than waiting to fill a segment (not TCP: no-op).
        let _ = transport.set_tcp_nodelay(true);
        transport.throttle_reading(true);
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(transport) = &self.transport {
            transport.write(data);
        }
    }
}

impl std::fmt::Debug for Echo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Echo")
            .field("peer", &self.transport.as_ref().map(|t| t.peer()))
            .finish()
    }
}

/// A stopped service that echoes on `endpoint` once started (Twisted's
/// `StreamServerEndpointService(endpoint, Factory.forProtocol(Echo))`).
///
/// # Examples
///
/// ```
/// use torsion::Reactor;
/// use torsion::application::Service;
/// use torsion::endpoints::server_from_string;
/// use torsion_cli::plugins::echo::echo_service;
///
/// let reactor = Reactor::new().unwrap();
/// let endpoint = server_from_string(&reactor, "tcp:0:interface=127.0.0.1").unwrap();
/// let service = echo_service(endpoint);
/// service.start_service().unwrap();
/// assert_ne!(service.port().unwrap().host().port(), Some(0));
/// drop(service.stop_service());
/// ```
pub fn echo_service(endpoint: Box<dyn ServerEndpoint>) -> Rc<StreamServerEndpointService> {
    StreamServerEndpointService::new(endpoint, Rc::new(Echo::default))
}

/// `torsion echo --listen ENDPOINT`: the echo server as a runner plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoPlugin;

impl Plugin for EchoPlugin {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn description(&self) -> &'static str {
        "Echo server: sends every byte back to the client that sent it"
    }

    fn command(&self) -> Command {
        Command::new(self.name())
            .about(self.description())
            .long_about(
                "Echo server (Twisted's echoserv.py): sends every byte back to the client \
                 that sent it. A client that sends without reading is slowed down by TCP \
                 flow control once the echo it has not read fills the server's send \
                 buffer, so the server's memory stays bounded.",
            )
            .arg(super::listen_arg())
    }

    fn make_service(
        &self,
        reactor: &Reactor,
        options: &ArgMatches,
    ) -> Result<Rc<dyn Service>, Failure> {
        let listen = required_string(options, "listen")?;
        Ok(echo_service(server_from_string(reactor, listen)?))
    }
}
