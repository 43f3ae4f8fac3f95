//! The built-in plugins of the `torsion` binary, each also a service a library user can
//! embed without the runner (the plugins Twisted ships in `twisted.plugins`, and the
//! servers of Dave Peticolas' Twisted tutorial).
//!
//! | plugin | service | Twisted / tutorial |
//! | --- | --- | --- |
//! | [`echo`] | [`echo::echo_service`] | `echoserv.py`, `protocols.wire.Echo` |
//! | [`poetry`] | [`poetry::poetry_service`] | `fastpoetry.py`, `slowpoetry.py` |
//! | [`transform`] | [`transform::transform_service`] | `transformedpoetry.py` |
//! | [`proxy`] | [`proxy::proxy_service`] | `poetry-proxy.py` (`twisted-server-3` and `-4`) |
//! | [`portforward`] | [`portforward::portforward_service`] | `twisted.protocols.portforward` |
//! | [`web`] | [`web::web_service`] | `twist web --path`, `twisted.web.static.File` |
//!
//! Every plugin takes its endpoints as strings (`tcp:10000:interface=127.0.0.1`,
//! `unix:/path`, `systemd:domain=INET:index=0`), parsed with
//! [`server_from_string`](torsion::endpoints::server_from_string) and
//! [`client_from_string`](torsion::endpoints::client_from_string).
//!
//! Invariant: every plugin here is listed once, in [`builtin`], which is what the binary
//! registers.

pub mod echo;
pub mod poetry;
pub mod portforward;
pub mod proxy;
pub mod transform;
pub mod web;

use clap::ArgMatches;
use torsion::Failure;

use crate::Plugin;

/// The plugins the `torsion` binary ships with, in the order `torsion --help` lists them.
pub fn builtin() -> Vec<Box<dyn Plugin>> {
    vec![
        Box::new(echo::EchoPlugin),
        Box::new(poetry::PoetryPlugin),
        Box::new(transform::TransformPlugin),
        Box::new(proxy::ProxyPlugin),
        Box::new(portforward::PortForwardPlugin),
        Box::new(web::WebPlugin),
    ]
}

/// The `--listen ENDPOINT` option every plugin here takes.
fn listen_arg() -> clap::Arg {
    clap::Arg::new("listen")
        .long("listen")
        .value_name("ENDPOINT")
        .required(true)
        .help(
            "Where to listen, as an endpoint string: tcp:PORT[:interface=ADDR], \
             ssl:PORT:privateKey=KEY.pem:certKey=CERT.pem (TLS), unix:PATH, \
             systemd:domain=INET:index=N, stdio:",
        )
}

/// The value of the string option `id`, which the plugin's command marks required: a
/// failure naming it, rather than a panic, if the matches came from another command.
fn required_string<'a>(options: &'a ArgMatches, id: &str) -> Result<&'a str, Failure> {
    match options.try_get_one::<String>(id) {
        Ok(Some(value)) => Ok(value),
        Ok(None) => Err(Failure::msg(format!("--{id} is required"))),
        Err(e) => Err(Failure::msg(format!("option --{id}: {e}"))),
    }
}
