//! The `web` plugin: a directory served over HTTP (Twisted's `twist web --path DIR`, the
//! `twisted.web.tap` plugin), with the access log.
//!
//! [`web_service`] is the service a library user embeds, and [`WebPlugin`] the runner's
//! `torsion web --listen ENDPOINT --path DIR`; over `ssl:` it serves HTTPS.
//!
//! Invariant: nothing outside `--path` is served (see
//! [`StaticFile`]).

use std::path::Path;
use std::rc::Rc;

use clap::{Arg, ArgAction, ArgMatches, Command};
use torsion::application::{Service, StreamServerEndpointService};
use torsion::endpoints::{ServerEndpoint, server_from_string};
use torsion::{Failure, Reactor};
use torsion_web::{Site, StaticFile};

use super::required_string;
use crate::Plugin;

/// A stopped service serving the directory `path` on `endpoint` once started (Twisted's
/// `StreamServerEndpointService(endpoint, Site(static.File(path)))`).
pub fn web_service(
    endpoint: Box<dyn ServerEndpoint>,
    path: &Path,
    listings: bool,
) -> Rc<StreamServerEndpointService> {
    let root = StaticFile::new(path).listings(listings);
    StreamServerEndpointService::new(endpoint, Site::new(Rc::new(root)))
}

/// `torsion web --listen ENDPOINT --path DIR`: the static web server as a runner plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct WebPlugin;

impl Plugin for WebPlugin {
    fn name(&self) -> &'static str {
        "web"
    }

    fn description(&self) -> &'static str {
        "Web server: serves a directory over HTTP/1.1"
    }

    fn command(&self) -> Command {
        Command::new(self.name())
            .about(self.description())
            .long_about(
                "Web server (Twisted's `twist web --path`): serves the files under --path \
                 over HTTP/1.1, with directory listings, index.html, byte ranges, \
                 conditional requests and keep-alive; each response goes to the access log \
                 (namespace torsion_web.access) in the combined log format. Over an ssl: \
                 endpoint it serves HTTPS.",
            )
            .arg(super::listen_arg())
            .arg(
                Arg::new("path")
                    .long("path")
                    .value_name("DIR")
                    .required(true)
                    .help("The directory (or file) to serve"),
            )
            .arg(
                Arg::new("no-listing")
                    .long("no-listing")
                    .action(ArgAction::SetTrue)
                    .help("Answer 404 for a directory without index.html instead of listing it"),
            )
    }

    fn make_service(
        &self,
        reactor: &Reactor,
        options: &ArgMatches,
    ) -> Result<Rc<dyn Service>, Failure> {
        let listen = required_string(options, "listen")?;
        let path = Path::new(required_string(options, "path")?);
        if !path.exists() {
            return Err(Failure::msg(format!(
                "--path {}: no such file or directory",
                path.display()
            )));
        }
        let listings = !options.get_flag("no-listing");
        Ok(web_service(
            server_from_string(reactor, listen)?,
            path,
            listings,
        ))
    }
}
