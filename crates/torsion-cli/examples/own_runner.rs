//! A program with a plugin of its own, run by torsion's runner: the Rust form of dropping a
//! module with an `IServiceMaker` into `twisted/plugins` and running `twist qotd`.
//!
//! `cargo run -p torsion-cli --example own_runner -- qotd --listen tcp:8017 --quote "Ask not."`
//! serves the quote of the day (RFC 865, Twisted's `QOTD` protocol) to each client; the
//! built-in plugins are there too (`own_runner poetry --listen tcp:10000 poems/science.txt`),
//! and so are the runner's options (`own_runner --log-format json qotd ...`).

use std::process::ExitCode;
use std::rc::Rc;

use clap::{Arg, ArgMatches, Command};
use torsion::application::{Service, StreamServerEndpointService};
use torsion::endpoints::server_from_string;
use torsion::net::{Address, Transport};
use torsion::protocol::{Factory, Protocol};
use torsion::{Failure, Reactor};
use torsion_cli::{Plugin, Runner};

/// Sends the quote, then closes (Twisted's `protocols.wire.QOTD`).
struct Qotd(Rc<Vec<u8>>);

impl Protocol for Qotd {
    fn connection_made(&mut self, transport: Transport) {
        transport.write(&self.0);
        transport.write(b"\r\n");
        transport.lose_connection();
    }
}

/// One quote for every connection.
struct QotdFactory(Rc<Vec<u8>>);

impl Factory for QotdFactory {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Qotd(self.0.clone())))
    }
}

/// The plugin: its name, its options, and the service it builds.
struct QotdPlugin;

impl Plugin for QotdPlugin {
    fn name(&self) -> &'static str {
        "qotd"
    }

    fn description(&self) -> &'static str {
        "Quote of the day (RFC 865): one quote to each client, then close"
    }

    fn command(&self) -> Command {
        Command::new(self.name())
            .arg(
                Arg::new("listen")
                    .long("listen")
                    .value_name("ENDPOINT")
                    .required(true)
                    .help("Where to listen, e.g. tcp:8017"),
            )
            .arg(
                Arg::new("quote")
                    .long("quote")
                    .value_name("TEXT")
                    .default_value("An apple a day keeps the doctor away.")
                    .help("The quote"),
            )
    }

    fn make_service(
        &self,
        reactor: &Reactor,
        options: &ArgMatches,
    ) -> Result<Rc<dyn Service>, Failure> {
        let listen = options
            .get_one::<String>("listen")
            .ok_or_else(|| Failure::msg("--listen is required"))?;
        let quote = options
            .get_one::<String>("quote")
            .cloned()
            .unwrap_or_default();
        let endpoint = server_from_string(reactor, listen)?;
        let factory = Rc::new(QotdFactory(Rc::new(quote.into_bytes())));
        Ok(StreamServerEndpointService::new(endpoint, factory))
    }
}

fn main() -> ExitCode {
    let mut runner = Runner::new("own_runner").plugin(QotdPlugin);
    for plugin in torsion_cli::plugins::builtin() {
        runner = runner.boxed_plugin(plugin);
    }
    runner.main()
}
