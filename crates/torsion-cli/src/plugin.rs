//! The plugin trait: a subcommand of the runner that makes a service (Twisted's
//! `IServiceMaker`, found there through `twisted.plugins` and here registered by the
//! program).
//!
//! Invariant: [`Plugin::make_service`] only builds; nothing listens or connects until the
//! runner starts the service it returns.

use std::rc::Rc;

use torsion::application::Service;
use torsion::{Failure, Reactor};

/// A subcommand of the `torsion` runner that builds a service from its options (Twisted's
/// `IServiceMaker`: `tapname`, `description`, `options`, `makeService`).
///
/// # Examples
///
/// A plugin that serves TCP echo on the endpoint it is given:
///
/// ```
/// use std::rc::Rc;
/// use clap::{Arg, ArgMatches, Command};
/// use torsion::application::{Service, StreamServerEndpointService};
/// use torsion::endpoints::server_from_string;
/// use torsion::net::Transport;
/// use torsion::protocol::Protocol;
/// use torsion::{Failure, Reactor};
/// use torsion_cli::Plugin;
///
/// #[derive(Default)]
/// struct Echo(Option<Transport>);
///
/// impl Protocol for Echo {
///     fn connection_made(&mut self, transport: Transport) {
///         self.0 = Some(transport);
///     }
///     fn data_received(&mut self, data: &[u8]) {
///         if let Some(t) = &self.0 {
///             t.write(data);
///         }
///     }
/// }
///
/// struct MyEcho;
///
/// impl Plugin for MyEcho {
///     fn name(&self) -> &'static str {
///         "my-echo"
///     }
///     fn description(&self) -> &'static str {
///         "Echoes what each client sends"
///     }
///     fn command(&self) -> Command {
///         Command::new(self.name()).arg(Arg::new("listen").long("listen").required(true))
///     }
///     fn make_service(
///         &self,
///         reactor: &Reactor,
///         options: &ArgMatches,
///     ) -> Result<Rc<dyn Service>, Failure> {
///         let listen = options.get_one::<String>("listen").expect("required by clap");
///         let endpoint = server_from_string(reactor, listen)?;
///         Ok(StreamServerEndpointService::new(endpoint, Rc::new(Echo::default)))
///     }
/// }
/// ```
pub trait Plugin: Sync {
    /// The subcommand's name, as typed after `torsion` (Twisted's `tapname`).
    fn name(&self) -> &'static str;

    /// One line saying what the plugin serves, shown by `torsion --help` (Twisted's
    /// `description`).
    fn description(&self) -> &'static str;

    /// The subcommand and its options (Twisted's `options`): a [`clap::Command`] named
    /// [`name`](Plugin::name). `torsion NAME --help` prints its help.
    fn command(&self) -> clap::Command;

    /// Builds the service from the parsed options (Twisted's `makeService`). Called once,
    /// before the reactor runs; the runner starts the service once the reactor runs and
    /// stops it on shutdown.
    ///
    /// # Errors
    ///
    /// Options that parse but make no sense (an endpoint string with a bad port, a file
    /// that cannot be read): the runner prints the failure and exits non-zero.
    fn make_service(
        &self,
        reactor: &Reactor,
        options: &clap::ArgMatches,
    ) -> Result<Rc<dyn Service>, Failure>;
}
