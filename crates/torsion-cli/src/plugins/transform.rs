//! The `transform` plugin: the tutorial's transform service, a small RPC over netstrings
//! (Dave Peticolas' `twisted-server-1/transformedpoetry.py`, called by the clients of
//! `twisted-client-6` and `-7` through their `TransformProxy`).
//!
//! A client sends one netstring, `NAME.TEXT`, and gets back one netstring, the text
//! transformed by the transform called `NAME`; then the server closes the connection
//! (requests that arrived together are all answered first, as Twisted's
//! `NetstringReceiver` does). Only the transforms registered in the [`TransformService`]
//! can be called; the built-in ones ([`TransformService::standard`]) change ASCII letters
//! only and leave every other byte as it is, so a poem in any ASCII-compatible encoding
//! (Latin-1, UTF-8, …) comes back in the same encoding.
//!
//! **An unknown transform name closes the connection without an answer**, as in the
//! tutorial, and is logged. An error string sent in place of the answer would be
//! indistinguishable from a transformed poem (the reply is only a netstring), so a
//! client would print it as the poem; a close without a reply is what the tutorial's
//! client already treats as a failed transform ("Cummingsify failed!", keeping the
//! original poem). A request without a `.` is closed the same way; bytes that are not a
//! netstring are closed by the engine's [`NetstringReceiver`], which logs why. Either way
//! only that connection ends; the server goes on.
//!
//! [`TransformService`] is the tutorial's class of the same name (the transforms),
//! [`TransformFactory`] and [`TransformProtocol`] the tutorial's, [`transform_service`] the
//! service a library user embeds, [`TransformPlugin`] the runner's
//! `torsion transform --listen ENDPOINT`.
//!
//! Invariant: a request is answered only by a transform found by its exact name in the
//! service's table; nothing a client sends can call anything else.

use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;

use clap::{Arg, ArgMatches, Command, value_parser};
use torsion::application::{Service, StreamServerEndpointService};
use torsion::endpoints::{ServerEndpoint, server_from_string};
use torsion::log::Logger;
use torsion::net::Address;
use torsion::protocol::{Factory, Protocol};
use torsion::protocols::basic::{NetstringReceiver, StringContext, StringHandler};
use torsion::{Failure, Reactor};

use super::required_string;
use crate::Plugin;

const LOG_TARGET: &str = "torsion_cli::plugins::transform";

/// The longest request accepted by default, in bytes: Twisted's `NetstringReceiver.MAX_LENGTH`.
pub const DEFAULT_MAX_LENGTH: usize = 99_999;

/// A transform: text in, text out, as bytes.
pub type Transform = Box<dyn Fn(&[u8]) -> Vec<u8>>;

/// The transforms a client can call, by name (the tutorial's `TransformService`, with the
/// table its `TransformFactory` builds from the `xform_` methods).
pub struct TransformService {
    transforms: BTreeMap<String, Transform>,
}

impl TransformService {
    /// A service with no transforms: register some with [`register`](Self::register).
    pub fn empty() -> TransformService {
        TransformService {
            transforms: BTreeMap::new(),
        }
    }

    /// A service with the built-in transforms, each changing ASCII letters only:
    ///
    /// | name | does |
    /// | --- | --- |
    /// | `cummingsify` | lower-cases (the tutorial's transform, Python's `bytes.lower()`) |
    /// | `upper` | upper-cases |
    /// | `swapcase` | swaps the case of each letter |
    /// | `rot13` | rotates each letter 13 places |
    ///
    /// # Examples
    ///
    /// ```
    /// use torsion_cli::plugins::transform::TransformService;
    ///
    /// let service = TransformService::standard();
    /// assert_eq!(service.transform(b"cummingsify", b"Roses ARE Red").unwrap(), b"roses are red");
    /// assert_eq!(service.transform(b"rot13", b"Uryyb").unwrap(), b"Hello");
    /// // Latin-1 bytes pass through untouched.
    /// assert_eq!(service.transform(b"upper", b"\xfcber").unwrap(), b"\xfcBER");
    /// assert!(service.transform(b"__init__", b"x").is_none());
    /// ```
    pub fn standard() -> TransformService {
        let mut service = TransformService::empty();
        service.register("cummingsify", cummingsify);
        service.register("upper", |text: &[u8]| text.to_ascii_uppercase());
        service.register("swapcase", swapcase);
        service.register("rot13", rot13);
        service
    }

    /// Adds (or replaces) the transform called `name`.
    pub fn register(
        &mut self,
        name: impl Into<String>,
        transform: impl Fn(&[u8]) -> Vec<u8> + 'static,
    ) {
        self.transforms.insert(name.into(), Box::new(transform));
    }

    /// `text` transformed by the transform called `name`, or `None` if there is none by
    /// that name.
    pub fn transform(&self, name: &[u8], text: &[u8]) -> Option<Vec<u8>> {
        let name = std::str::from_utf8(name).ok()?;
        self.transforms.get(name).map(|transform| transform(text))
    }

    /// The names that can be called, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.transforms.keys().map(String::as_str)
    }
}

impl Default for TransformService {
    /// [`TransformService::standard`].
    fn default() -> Self {
        TransformService::standard()
    }
}

impl fmt::Debug for TransformService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransformService")
            .field("names", &self.names().collect::<Vec<_>>())
            .finish()
    }
}

/// Lower-cases the ASCII letters, leaving every other byte as it is (the tutorial's
/// `cummingsify`, Python's `bytes.lower()`).
pub fn cummingsify(text: &[u8]) -> Vec<u8> {
    text.to_ascii_lowercase()
}

/// Swaps the case of the ASCII letters (Python's `bytes.swapcase()`).
pub fn swapcase(text: &[u8]) -> Vec<u8> {
    text.iter()
        .map(|&b| match b {
            b'a'..=b'z' => b.to_ascii_uppercase(),
            b'A'..=b'Z' => b.to_ascii_lowercase(),
            _ => b,
        })
        .collect()
}

/// Rotates the ASCII letters 13 places (Python's `codecs.encode(text, "rot13")`), its own
/// inverse.
pub fn rot13(text: &[u8]) -> Vec<u8> {
    text.iter()
        .map(|&b| match b {
            b'a'..=b'z' => (b - b'a' + 13) % 26 + b'a',
            b'A'..=b'Z' => (b - b'A' + 13) % 26 + b'A',
            _ => b,
        })
        .collect()
}

/// Shows a client-supplied name in a log line: printable ASCII as it is, other bytes
/// escaped, at most 64 bytes.
fn printable(name: &[u8]) -> String {
    let shown: String = name
        .iter()
        .take(64)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if name.len() > 64 {
        format!("{shown}…")
    } else {
        shown
    }
}

/// Answers transform requests, then closes (Twisted's
/// `TransformProtocol(NetstringReceiver)`).
pub struct TransformProtocol {
    factory: Rc<TransformFactory>,
}

impl StringHandler for TransformProtocol {
    fn string_received(&mut self, ctx: &mut StringContext<'_>, request: Vec<u8>) {
        let Some(dot) = request.iter().position(|&byte| byte == b'.') else {
            Logger::new(LOG_TARGET).warn(format_args!(
                "closing the connection to {}: a request without a '.' between NAME and TEXT",
                ctx.transport().peer()
            ));
            ctx.lose_connection();
            return;
        };
        let (name, text) = (&request[..dot], &request[dot + 1..]);
        match self.factory.service.transform(name, text) {
            Some(answer) => ctx.send_string(&answer),
            None => Logger::new(LOG_TARGET).warn(format_args!(
                "closing the connection to {} without an answer: no transform named \"{}\"",
                ctx.transport().peer(),
                printable(name)
            )),
        }
        ctx.lose_connection();
    }
}

impl fmt::Debug for TransformProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransformProtocol").finish_non_exhaustive()
    }
}

/// Builds a [`TransformProtocol`] inside a [`NetstringReceiver`] for each connection
/// (the tutorial's `TransformFactory`).
pub struct TransformFactory {
    service: TransformService,
    max_length: usize,
}

impl TransformFactory {
    /// A factory calling `service`'s transforms, accepting requests of at most
    /// [`DEFAULT_MAX_LENGTH`] bytes.
    pub fn new(service: TransformService) -> Rc<TransformFactory> {
        TransformFactory::with_max_length(service, DEFAULT_MAX_LENGTH)
    }

    /// A factory accepting requests of at most `max_length` bytes (longer ones close the
    /// connection; Twisted's `MAX_LENGTH`).
    pub fn with_max_length(service: TransformService, max_length: usize) -> Rc<TransformFactory> {
        Rc::new(TransformFactory {
            service,
            max_length,
        })
    }

    /// The transforms it calls.
    pub fn service(&self) -> &TransformService {
        &self.service
    }

    /// The longest request it accepts.
    pub fn max_length(&self) -> usize {
        self.max_length
    }
}

impl Factory for TransformFactory {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        let max_length = self.max_length;
        Some(Box::new(
            NetstringReceiver::new(TransformProtocol { factory: self }).with_max_length(max_length),
        ))
    }
}

impl fmt::Debug for TransformFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransformFactory")
            .field("service", &self.service)
            .field("max_length", &self.max_length)
            .finish()
    }
}

/// A stopped service answering transform requests on `endpoint` once started (Twisted's
/// `StreamServerEndpointService(endpoint, TransformFactory(TransformService()))`).
///
/// # Examples
///
/// The built-in transforms and one more:
///
/// ```
/// use torsion::Reactor;
/// use torsion::application::Service;
/// use torsion::endpoints::server_from_string;
/// use torsion_cli::plugins::transform::{TransformFactory, TransformService, transform_service};
///
/// let reactor = Reactor::new().unwrap();
/// let mut transforms = TransformService::standard();
/// transforms.register("shout", |text: &[u8]| [&text.to_ascii_uppercase()[..], b"!"].concat());
/// let endpoint = server_from_string(&reactor, "tcp:0:interface=127.0.0.1").unwrap();
/// let service = transform_service(endpoint, TransformFactory::new(transforms));
/// service.start_service().unwrap();
/// assert!(service.port().is_some());
/// drop(service.stop_service());
/// ```
pub fn transform_service(
    endpoint: Box<dyn ServerEndpoint>,
    factory: Rc<TransformFactory>,
) -> Rc<StreamServerEndpointService> {
    StreamServerEndpointService::new(endpoint, factory)
}

/// `torsion transform --listen ENDPOINT [--max-length BYTES]`: the transform service as a
/// runner plugin, with the [standard](TransformService::standard) transforms.
#[derive(Debug, Default, Clone, Copy)]
pub struct TransformPlugin;

impl Plugin for TransformPlugin {
    fn name(&self) -> &'static str {
        "transform"
    }

    fn description(&self) -> &'static str {
        "Poetry transform service: NAME.TEXT in a netstring, the transformed TEXT back"
    }

    fn command(&self) -> Command {
        let names = TransformService::standard()
            .names()
            .collect::<Vec<_>>()
            .join(", ");
        Command::new(self.name())
            .about(self.description())
            .long_about(format!(
                "Poetry transform service (the Twisted tutorial's transformedpoetry.py): a \
                 client sends one netstring, NAME.TEXT, and gets back one netstring, TEXT \
                 transformed by NAME; then the connection closes. The transforms are: \
                 {names}. Each changes ASCII letters only, so text in any ASCII-compatible \
                 encoding comes back in the same encoding.\n\n\
                 An unknown NAME closes the connection without an answer (as in the \
                 tutorial; a client sees no reply and keeps its text), and is logged. A \
                 request without a '.' or bytes that are not a netstring close that \
                 connection, with the reason logged; the server goes on."
            ))
            .arg(super::listen_arg())
            .arg(
                Arg::new("max-length")
                    .long("max-length")
                    .value_name("BYTES")
                    .value_parser(value_parser!(u64).range(1..))
                    .default_value(DEFAULT_MAX_LENGTH.to_string())
                    .help("The longest request accepted, in bytes; a longer one closes the connection"),
            )
    }

    fn make_service(
        &self,
        reactor: &Reactor,
        options: &ArgMatches,
    ) -> Result<Rc<dyn Service>, Failure> {
        let listen = required_string(options, "listen")?;
        let max_length = match options.get_one::<u64>("max-length") {
            Some(&n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => DEFAULT_MAX_LENGTH,
        };
        let factory = TransformFactory::with_max_length(TransformService::standard(), max_length);
        Ok(transform_service(
            server_from_string(reactor, listen)?,
            factory,
        ))
    }
}
