//! The string syntax of endpoints (Twisted's `serverFromString`, `clientFromString`,
//! `_tokenize`, `_parse`, `quoteStringArgument` and its string parser plugins): splitting a
//! description ([`EndpointArgs`]), binding its arguments to parameters ([`BoundArgs`]), the
//! parsers of the built-in types, and the per-thread registry of added types.
//!
//! Invariant: splitting and binding touch no reactor and no socket
//! ([`EndpointArgs::parse`] is a pure function of the string); a registered parser is
//! cloned out of its thread-local map before it runs, so it may itself register or
//! unregister parsers.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use super::{
    ClientEndpoint, DEFAULT_UNIX_MODE, ServerEndpoint, SystemdDomain, SystemdServerEndpoint,
    SystemdSocket, SystemdSpec, Tcp6ServerEndpoint, TcpClientEndpoint, TcpServerEndpoint,
    UnixClientEndpoint, UnixClientSpec, UnixServerEndpoint, UnixServerSpec,
};
use crate::error::{EndpointSyntaxError, EndpointSyntaxProblem, InvalidArgument};
use crate::net::tcp::{DEFAULT_BACKLOG, DEFAULT_CONNECT_TIMEOUT};
use crate::reactor::Reactor;

/// An endpoint description split into its parts (Twisted's `_parse`): the type, the
/// positional arguments and the `key=value` ones, escapes resolved.
///
/// A colon separates arguments and the first `=` of an argument separates its key from its
/// value (so a value may hold `=`); a backslash makes the next character literal (`\:`,
/// `\=`, `\\`).
///
/// # Examples
///
/// ```
/// use torsion::endpoints::EndpointArgs;
///
/// let args = EndpointArgs::parse(r"unix:foo\:bar\=baz\:qux\\:mode=0660").unwrap();
/// assert_eq!(args.endpoint_type, "unix");
/// assert_eq!(args.positional, [r"foo:bar=baz:qux\"]);
/// assert_eq!(args.keywords, [("mode".to_string(), "0660".to_string())]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointArgs {
    /// The endpoint type, as written (types are matched without regard to case).
    pub endpoint_type: String,
    /// The arguments without `=`, in order.
    pub positional: Vec<String>,
    /// The `key=value` arguments, in order.
    pub keywords: Vec<(String, String)>,
}

impl EndpointArgs {
    /// Splits `description` (Twisted's `_tokenize` and `_parse`).
    ///
    /// # Errors
    ///
    /// [`Empty`](EndpointSyntaxProblem::Empty) when it names no type,
    /// [`TrailingBackslash`](EndpointSyntaxProblem::TrailingBackslash).
    pub fn parse(description: &str) -> Result<EndpointArgs, EndpointSyntaxProblem> {
        let mut fields: Vec<(String, Option<String>)> = Vec::new();
        let mut key: Option<String> = None;
        let mut current = String::new();
        let mut chars = description.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(next) => current.push(next),
                    None => return Err(EndpointSyntaxProblem::TrailingBackslash),
                },
                ':' => {
                    let text = std::mem::take(&mut current);
                    fields.push(match key.take() {
                        Some(k) => (k, Some(text)),
                        None => (text, None),
                    });
                }
                '=' if key.is_none() => key = Some(std::mem::take(&mut current)),
                c => current.push(c),
            }
        }
        fields.push(match key.take() {
            Some(k) => (k, Some(current)),
            None => (current, None),
        });
        let mut fields = fields.into_iter();
        let endpoint_type = match fields.next() {
            Some((name, None)) if !name.is_empty() => name,
            _ => return Err(EndpointSyntaxProblem::Empty),
        };
        let mut args = EndpointArgs {
            endpoint_type,
            positional: Vec::new(),
            keywords: Vec::new(),
        };
        for (first, value) in fields {
            match value {
                Some(value) => args.keywords.push((first, value)),
                None => args.positional.push(first),
            }
        }
        Ok(args)
    }

    /// Binds the arguments to named parameters, as Python binds a call's: the first
    /// `max_positional` parameters may be given by position, any by keyword.
    ///
    /// A parameter is written `"name"` or `"name|alias|…"` (a keyword may use any of its
    /// names; [`BoundArgs`] knows it by the first).
    ///
    /// # Errors
    ///
    /// [`TooManyArguments`](EndpointSyntaxProblem::TooManyArguments),
    /// [`UnknownKeyword`](EndpointSyntaxProblem::UnknownKeyword) (naming those accepted),
    /// [`DuplicateArgument`](EndpointSyntaxProblem::DuplicateArgument).
    pub fn bind(
        &self,
        params: &[&'static str],
        max_positional: usize,
    ) -> Result<BoundArgs, EndpointSyntaxProblem> {
        let endpoint = self.endpoint_type.clone();
        let max_positional = max_positional.min(params.len());
        if self.positional.len() > max_positional {
            return Err(EndpointSyntaxProblem::TooManyArguments {
                endpoint,
                given: self.positional.len(),
                max: max_positional,
            });
        }
        let canonical = |param: &'static str| param.split('|').next().unwrap_or(param);
        let mut values: Vec<(&'static str, String)> = self
            .positional
            .iter()
            .zip(params)
            .map(|(value, param)| (canonical(param), value.clone()))
            .collect();
        for (keyword, value) in &self.keywords {
            let Some(param) = params
                .iter()
                .find(|param| param.split('|').any(|name| name == keyword))
            else {
                return Err(EndpointSyntaxProblem::UnknownKeyword {
                    endpoint,
                    keyword: keyword.clone(),
                    accepted: params
                        .iter()
                        .map(|p| canonical(p))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            let name = canonical(param);
            if values.iter().any(|(bound, _)| *bound == name) {
                return Err(EndpointSyntaxProblem::DuplicateArgument {
                    endpoint,
                    argument: name.to_string(),
                });
            }
            values.push((name, value.clone()));
        }
        Ok(BoundArgs { endpoint, values })
    }
}

/// Arguments bound to parameter names by [`EndpointArgs::bind`], with helpers that turn
/// them into values or into errors naming the argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundArgs {
    endpoint: String,
    values: Vec<(&'static str, String)>,
}

impl BoundArgs {
    /// The value given for `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(bound, _)| *bound == name)
            .map(|(_, value)| value.as_str())
    }

    /// The value given for `name`.
    ///
    /// # Errors
    ///
    /// [`MissingArgument`](EndpointSyntaxProblem::MissingArgument) if none was given, or
    /// an empty one.
    pub fn required(&self, name: &str) -> Result<&str, EndpointSyntaxProblem> {
        match self.get(name) {
            Some(value) if !value.is_empty() => Ok(value),
            _ => Err(EndpointSyntaxProblem::MissingArgument {
                endpoint: self.endpoint.clone(),
                argument: name.to_string(),
            }),
        }
    }

    /// The value of `name` converted by `convert`, `None` if not given.
    ///
    /// # Errors
    ///
    /// [`BadValue`](EndpointSyntaxProblem::BadValue) naming the argument, its value and
    /// `expected`, when `convert` returns `None`.
    pub fn parse_with<T>(
        &self,
        name: &str,
        expected: &str,
        convert: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, EndpointSyntaxProblem> {
        match self.get(name) {
            None => Ok(None),
            Some(value) => match convert(value) {
                Some(v) => Ok(Some(v)),
                None => Err(self.bad_value(name, value, expected)),
            },
        }
    }

    /// A [`BadValue`](EndpointSyntaxProblem::BadValue) for this endpoint.
    pub fn bad_value(&self, name: &str, value: &str, expected: &str) -> EndpointSyntaxProblem {
        EndpointSyntaxProblem::BadValue {
            endpoint: self.endpoint.clone(),
            argument: name.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }

    /// An [`Invalid`](EndpointSyntaxProblem::Invalid) for this endpoint.
    pub fn invalid(&self, message: impl Into<String>) -> EndpointSyntaxProblem {
        EndpointSyntaxProblem::Invalid {
            endpoint: self.endpoint.clone(),
            message: message.into(),
        }
    }

    fn port(&self, name: &str) -> Result<u16, EndpointSyntaxProblem> {
        let value = self.required(name)?;
        value
            .parse::<u16>()
            .map_err(|_| self.bad_value(name, value, "a port number from 0 to 65535"))
    }

    fn backlog(&self) -> Result<i32, EndpointSyntaxProblem> {
        Ok(self
            .parse_with("backlog", "a whole number of connections, 0 or more", |v| {
                v.parse::<u32>().ok().and_then(|n| i32::try_from(n).ok())
            })?
            .unwrap_or(DEFAULT_BACKLOG))
    }

    fn interface(&self, default: IpAddr) -> Result<IpAddr, EndpointSyntaxProblem> {
        Ok(self
            .parse_with(
                "interface",
                "an IP address such as 127.0.0.1 or ::1 (escape colons as \\:)",
                |v| {
                    if v.is_empty() {
                        Some(default)
                    } else {
                        v.parse().ok()
                    }
                },
            )?
            .unwrap_or(default))
    }

    fn timeout(&self) -> Result<Option<Duration>, EndpointSyntaxProblem> {
        Ok(Some(
            self.parse_with("timeout", "a number of seconds, 0 or more", |v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
            })?
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        ))
    }

    fn flag(&self, name: &str, default: bool) -> Result<bool, EndpointSyntaxProblem> {
        Ok(self
            .parse_with(name, "0 or 1", |v| v.parse::<i64>().ok().map(|n| n != 0))?
            .unwrap_or(default))
    }
}

/// Escapes `\` and `:` in `argument` for a description string (Twisted's
/// `quoteStringArgument`).
///
/// # Examples
///
/// ```
/// use torsion::endpoints::quote_string_argument;
///
/// assert_eq!(quote_string_argument(r"some : stuff \"), r"some \: stuff \\");
/// ```
pub fn quote_string_argument(argument: &str) -> String {
    let mut out = String::with_capacity(argument.len());
    for c in argument.chars() {
        if c == '\\' || c == ':' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

type ServerParser =
    dyn Fn(&Reactor, &EndpointArgs) -> Result<Box<dyn ServerEndpoint>, EndpointSyntaxProblem>;
type ClientParser =
    dyn Fn(&Reactor, &EndpointArgs) -> Result<Box<dyn ClientEndpoint>, EndpointSyntaxProblem>;

thread_local! {
    static SERVER_PARSERS: RefCell<HashMap<String, Rc<ServerParser>>> = RefCell::new(HashMap::new());
    static CLIENT_PARSERS: RefCell<HashMap<String, Rc<ClientParser>>> = RefCell::new(HashMap::new());
}

const SERVER_TYPES: [&str; 6] = ["tcp", "tcp6", "unix", "systemd", "ssl", "stdio"];
const CLIENT_TYPES: [&str; 4] = ["tcp", "tls", "ssl", "unix"];

fn check_plugin_name(name: &str, builtin: &[&str]) -> Result<String, InvalidArgument> {
    let name = name.to_ascii_lowercase();
    if name.is_empty() || name.contains([':', '=', '\\']) {
        return Err(InvalidArgument(format!(
            "{name:?} cannot name an endpoint type: it must be non-empty, without : = or \\"
        )));
    }
    if builtin.contains(&name.as_str()) {
        return Err(InvalidArgument(format!(
            "{name:?} is a built-in endpoint type and cannot be replaced"
        )));
    }
    Ok(name)
}

/// Adds a server endpoint type to the string syntax on this thread (Twisted's
/// `IStreamServerEndpointStringParser` plugins): [`server_from_string`] calls `parser` for
/// descriptions of type `name` (matched without regard to case), with the reactor and the
/// split description; [`EndpointArgs::bind`] does the usual argument handling. Registering
/// a name again replaces its parser.
///
/// # Errors
///
/// [`InvalidArgument`] for a built-in type (`tcp`, `tcp6`, `unix`, `systemd`) or a name that
/// cannot appear in a description.
///
/// # Examples
///
/// ```
/// use torsion::Reactor;
/// use torsion::endpoints::{register_server_parser, server_from_string, TcpServerEndpoint};
///
/// // "loopback:PORT" listens on 127.0.0.1.
/// register_server_parser("loopback", |reactor, args| {
///     let args = args.bind(&["port"], 1)?;
///     let port = args
///         .parse_with("port", "a port number", |v| v.parse().ok())?
///         .unwrap_or(0);
///     Ok(Box::new(TcpServerEndpoint::new(reactor, port).interface([127, 0, 0, 1].into())))
/// })
/// .unwrap();
/// let reactor = Reactor::new().unwrap();
/// assert!(server_from_string(&reactor, "loopback:8080").is_ok());
/// ```
pub fn register_server_parser(
    name: &str,
    parser: impl Fn(&Reactor, &EndpointArgs) -> Result<Box<dyn ServerEndpoint>, EndpointSyntaxProblem>
    + 'static,
) -> Result<(), InvalidArgument> {
    let name = check_plugin_name(name, &SERVER_TYPES)?;
    let parser: Rc<ServerParser> = Rc::new(parser);
    let previous = SERVER_PARSERS.with(|p| p.borrow_mut().insert(name, parser));
    drop(previous);
    Ok(())
}

/// Adds a client endpoint type to the string syntax on this thread, as
/// [`register_server_parser`] does for servers (Twisted's
/// `IStreamClientEndpointStringParserWithReactor` plugins).
///
/// # Errors
///
/// [`InvalidArgument`] for a built-in type (`tcp`, `unix`) or a name that cannot appear in
/// a description.
pub fn register_client_parser(
    name: &str,
    parser: impl Fn(&Reactor, &EndpointArgs) -> Result<Box<dyn ClientEndpoint>, EndpointSyntaxProblem>
    + 'static,
) -> Result<(), InvalidArgument> {
    let name = check_plugin_name(name, &CLIENT_TYPES)?;
    let parser: Rc<ClientParser> = Rc::new(parser);
    let previous = CLIENT_PARSERS.with(|p| p.borrow_mut().insert(name, parser));
    drop(previous);
    Ok(())
}

/// Removes a server endpoint type added by [`register_server_parser`]; returns whether it
/// was there.
pub fn unregister_server_parser(name: &str) -> bool {
    let removed = SERVER_PARSERS.with(|p| p.borrow_mut().remove(&name.to_ascii_lowercase()));
    removed.is_some()
}

/// Removes a client endpoint type added by [`register_client_parser`]; returns whether it
/// was there.
pub fn unregister_client_parser(name: &str) -> bool {
    let removed = CLIENT_PARSERS.with(|p| p.borrow_mut().remove(&name.to_ascii_lowercase()));
    removed.is_some()
}

/// Makes a server endpoint from a description such as `"tcp:8080:interface=127.0.0.1"`
/// (Twisted's `serverFromString`); see the [module docs](super) for the types and their
/// arguments.
///
/// # Errors
///
/// [`EndpointSyntaxError`] naming the problem: an unknown type (naming it), an unknown
/// keyword, a bad port, backlog, interface or mode, a missing argument, too many
/// positional ones.
///
/// # Examples
///
/// ```
/// use std::any::Any;
/// use torsion::Reactor;
/// use torsion::endpoints::{server_from_string, UnixServerEndpoint};
///
/// let reactor = Reactor::new().unwrap();
/// let endpoint = server_from_string(&reactor, "unix:/var/run/finger:mode=660").unwrap();
/// let unix = (&*endpoint as &dyn Any).downcast_ref::<UnixServerEndpoint>().unwrap();
/// assert_eq!(unix.spec.mode, 0o660);
/// assert_eq!(unix.spec.backlog, torsion::net::tcp::DEFAULT_BACKLOG);
///
/// let err = server_from_string(&reactor, "tcp:80x").unwrap_err();
/// assert!(err.to_string().contains("bad port"));
/// ```
pub fn server_from_string(
    reactor: &Reactor,
    description: &str,
) -> Result<Box<dyn ServerEndpoint>, EndpointSyntaxError> {
    let result = EndpointArgs::parse(description).and_then(|args| {
        match args.endpoint_type.to_ascii_lowercase().as_str() {
            "tcp" => parse_tcp_server(reactor, &args),
            "tcp6" => parse_tcp6_server(reactor, &args),
            "unix" => parse_unix_server(reactor, &args),
            "systemd" => parse_systemd_server(reactor, &args),
            "ssl" => parse_ssl_server(reactor, &args),
            "stdio" => {
                // `stdio:` tokenizes to one empty argument, which Twisted ignores too.
                let mut args = args.clone();
                args.positional.retain(|a| !a.is_empty());
                args.bind(&[], 0)?;
                Ok(Box::new(super::StandardIoEndpoint::new(reactor)) as Box<dyn ServerEndpoint>)
            }
            other => {
                let parser = SERVER_PARSERS.with(|p| p.borrow().get(other).cloned());
                match parser {
                    Some(parser) => parser(reactor, &args),
                    None => Err(EndpointSyntaxProblem::UnknownType(args.endpoint_type)),
                }
            }
        }
    });
    result.map_err(|problem| EndpointSyntaxError {
        description: description.to_string(),
        problem,
    })
}

/// Makes a client endpoint from a description such as `"tcp:host=example.com:port=80"`
/// (Twisted's `clientFromString`); see the [module docs](super) for the types and their
/// arguments.
///
/// # Errors
///
/// As for [`server_from_string`].
///
/// # Examples
///
/// ```
/// use std::any::Any;
/// use std::time::Duration;
/// use torsion::Reactor;
/// use torsion::endpoints::{client_from_string, TcpClientEndpoint};
///
/// let reactor = Reactor::new().unwrap();
/// let endpoint = client_from_string(&reactor, "tcp:host=example.com:port=80:timeout=5").unwrap();
/// let tcp = (&*endpoint as &dyn Any).downcast_ref::<TcpClientEndpoint>().unwrap();
/// assert_eq!((tcp.host.as_str(), tcp.port), ("example.com", 80));
/// assert_eq!(tcp.timeout, Some(Duration::from_secs(5)));
/// ```
pub fn client_from_string(
    reactor: &Reactor,
    description: &str,
) -> Result<Box<dyn ClientEndpoint>, EndpointSyntaxError> {
    let result = EndpointArgs::parse(description).and_then(|args| {
        match args.endpoint_type.to_ascii_lowercase().as_str() {
            "tcp" => parse_tcp_client(reactor, &args),
            "tls" => parse_tls_client(reactor, &args),
            "ssl" => Err(EndpointSyntaxProblem::Invalid {
                endpoint: args.endpoint_type.clone(),
                message: "the ssl: client endpoint of Twisted does not verify the server unless \
                          given caCertsDir; use tls:HOST:PORT, which does"
                    .to_string(),
            }),
            "unix" => parse_unix_client(reactor, &args),
            other => {
                let parser = CLIENT_PARSERS.with(|p| p.borrow().get(other).cloned());
                match parser {
                    Some(parser) => parser(reactor, &args),
                    None => Err(EndpointSyntaxProblem::UnknownType(args.endpoint_type)),
                }
            }
        }
    });
    result.map_err(|problem| EndpointSyntaxError {
        description: description.to_string(),
        problem,
    })
}

/// `tcp:PORT[:INTERFACE[:BACKLOG]]` (Twisted's `_parseTCP`).
fn parse_tcp_server(
    reactor: &Reactor,
    args: &EndpointArgs,
) -> Result<Box<dyn ServerEndpoint>, EndpointSyntaxProblem> {
    let args = args.bind(&["port", "interface", "backlog"], 3)?;
    let port = args.port("port")?;
    Ok(Box::new(
        TcpServerEndpoint::new(reactor, port)
            .interface(args.interface(IpAddr::from([0, 0, 0, 0]))?)
            .backlog(args.backlog()?),
    ))
}

/// `tcp6:PORT[:BACKLOG[:INTERFACE]]` (Twisted's `_TCP6ServerParser`, whose second
/// positional argument is the backlog).
fn parse_tcp6_server(
    reactor: &Reactor,
    args: &EndpointArgs,
) -> Result<Box<dyn ServerEndpoint>, EndpointSyntaxProblem> {
    let args = args.bind(&["port", "backlog", "interface"], 3)?;
    let port = args.port("port")?;
    Ok(Box::new(
        Tcp6ServerEndpoint::new(reactor, port)
            .interface(args.interface(IpAddr::from([0u16; 8]))?)
            .backlog(args.backlog()?),
    ))
}

/// `unix:ADDRESS[:MODE[:BACKLOG[:LOCKFILE]]]` (Twisted's `_parseUNIX`): mode in octal
/// (666), backlog [`DEFAULT_BACKLOG`], lockfile 1.
fn parse_unix_server(
    reactor: &Reactor,
    args: &EndpointArgs,
) -> Result<Box<dyn ServerEndpoint>, EndpointSyntaxProblem> {
    let args = args.bind(&["address|path", "mode", "backlog", "lockfile"], 4)?;
    let mut spec = UnixServerSpec::new(args.required("address")?);
    spec.mode = args
        .parse_with(
            "mode",
            "octal permission bits such as 666 or 0660",
            parse_octal_mode,
        )?
        .unwrap_or(DEFAULT_UNIX_MODE);
    spec.backlog = args.backlog()?;
    spec.want_pid = args.flag("lockfile", true)?;
    Ok(Box::new(UnixServerEndpoint::new(reactor, spec)))
}

fn parse_octal_mode(value: &str) -> Option<u32> {
    let digits = value
        .strip_prefix("0o")
        .or_else(|| value.strip_prefix("0O"))
        .unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
}

/// `systemd:domain=INET|INET6|UNIX:index=N` or `:name=X` (Twisted's `_SystemdParser`).
fn parse_systemd_server(
    reactor: &Reactor,
    args: &EndpointArgs,
) -> Result<Box<dyn ServerEndpoint>, EndpointSyntaxProblem> {
    let args = args.bind(&["domain", "index", "name"], 3)?;
    let domain_value = args.required("domain")?;
    let domain = match domain_value.to_ascii_uppercase().as_str() {
        "INET" => SystemdDomain::Inet,
        "INET6" => SystemdDomain::Inet6,
        "UNIX" => SystemdDomain::Unix,
        _ => return Err(args.bad_value("domain", domain_value, "INET, INET6 or UNIX")),
    };
    let index = args.parse_with("index", "a descriptor index, 0 or more", |v| {
        v.parse::<usize>().ok()
    })?;
    let socket = match (index, args.get("name")) {
        (Some(index), None) => SystemdSocket::Index(index),
        (None, Some(name)) if !name.is_empty() => SystemdSocket::Name(name.to_string()),
        _ => return Err(args.invalid("give exactly one of index and name")),
    };
    Ok(Box::new(SystemdServerEndpoint::new(
        reactor,
        SystemdSpec { domain, socket },
    )))
}

/// `tcp:HOST:PORT[:timeout=…][:bindAddress=…]`, either part as a keyword too (Twisted's
/// `_parseClientTCP`: one positional argument is the port when `host=` is given).
fn parse_tcp_client(
    reactor: &Reactor,
    args: &EndpointArgs,
) -> Result<Box<dyn ClientEndpoint>, EndpointSyntaxProblem> {
    let port_first = args.positional.len() == 1 && args.keywords.iter().any(|(k, _)| k == "host");
    let args = if port_first {
        args.bind(&["port", "host", "timeout", "bindAddress|bind_address"], 1)?
    } else {
        args.bind(&["host", "port", "timeout", "bindAddress|bind_address"], 2)?
    };
    let host = args.required("host")?;
    let port = args.port("port")?;
    let bind_address = args.parse_with(
        "bindAddress",
        "a local IP address (escape colons as \\:)",
        |v| {
            v.parse::<IpAddr>()
                .map(|ip| SocketAddr::new(ip, 0))
                .or_else(|_| v.parse::<SocketAddr>())
                .ok()
        },
    )?;
    Ok(Box::new(
        TcpClientEndpoint::new(reactor, host, port)
            .timeout(args.timeout()?)
            .bind_address(bind_address),
    ))
}

/// `ssl:PORT[:privateKey[:certKey[:sslmethod[:interface[:backlog[:extraCertChain[:dhParameters]]]]]]]`
/// (Twisted's `_parseSSL`): the key in `privateKey` (`server.pem` by default), the
/// certificate in `certKey` (the key's file by default, which may hold both), the
/// intermediates in `extraCertChain`. rustls negotiates its own versions and uses no
/// finite-field Diffie-Hellman: `sslmethod` is refused, and `dhParameters` is ignored
/// with a warning.
fn parse_ssl_server(
    reactor: &Reactor,
    args: &EndpointArgs,
) -> Result<Box<dyn ServerEndpoint>, EndpointSyntaxProblem> {
    let args = args.bind(
        &[
            "port",
            "privateKey",
            "certKey",
            "sslmethod",
            "interface",
            "backlog",
            "extraCertChain",
            "dhParameters",
        ],
        8,
    )?;
    let port = args.port("port")?;
    if args.get("sslmethod").is_some() {
        return Err(
            args.invalid("sslmethod is not supported: rustls negotiates TLS 1.2 or 1.3 by itself")
        );
    }
    if args.get("dhParameters").is_some() {
        crate::log::warning!(
            target: "torsion::tls",
            "ssl: dhParameters is ignored: rustls uses elliptic-curve key exchange only"
        );
    }
    let key = args.get("privateKey").unwrap_or("server.pem");
    let cert = args.get("certKey").unwrap_or(key);
    let invalid = |e: crate::tls::TlsConfigError| args.invalid(e.to_string());
    let mut identity = crate::tls::Identity::from_pem_files(cert, key).map_err(invalid)?;
    if let Some(chain) = args.get("extraCertChain") {
        identity = identity.with_extra_chain(chain).map_err(invalid)?;
    }
    let config = crate::tls::ServerConfig::new(identity).map_err(invalid)?;
    let tcp = TcpServerEndpoint::new(reactor, port)
        .interface(args.interface(IpAddr::from([0, 0, 0, 0]))?)
        .backlog(args.backlog()?);
    Ok(Box::new(super::TlsServerEndpoint::new(
        Box::new(tcp),
        config,
    )))
}

/// `tls:HOST:PORT[:timeout=…][:bindAddress=…][:certificate=…][:privateKey=…][:trustRoots=…]`
/// (Twisted's `_parseClientTLS`), over a [`HostnameEndpoint`](super::HostnameEndpoint)
/// (Happy Eyeballs): the server must have a certificate for HOST, signed by the system's
/// roots or by those in `trustRoots` (a PEM file, or a directory of them); `certificate`
/// (also `clientCertificate`) is our own, with its key in `privateKey` (also
/// `clientKey`; by default the certificate's file).
fn parse_tls_client(
    reactor: &Reactor,
    args: &EndpointArgs,
) -> Result<Box<dyn ClientEndpoint>, EndpointSyntaxProblem> {
    let args = args.bind(
        &[
            "host",
            "port",
            "timeout",
            "bindAddress|bind_address",
            "certificate|clientCertificate",
            "privateKey|clientKey",
            "trustRoots",
        ],
        7,
    )?;
    let host = args.required("host")?;
    let port = args.port("port")?;
    let bind_address = args.parse_with(
        "bindAddress",
        "a local IP address (escape colons as \\:)",
        |v| v.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 0)).ok(),
    )?;
    let invalid = |e: crate::tls::TlsConfigError| args.invalid(e.to_string());
    let mut config = crate::tls::ClientConfig::builder();
    if let Some(roots) = args.get("trustRoots") {
        config = config.roots(crate::tls::Roots::from_pem_path(roots).map_err(invalid)?);
    }
    if let Some(cert) = args.get("certificate") {
        let key = args.get("privateKey").unwrap_or(cert);
        config = config.identity(crate::tls::Identity::from_pem_files(cert, key).map_err(invalid)?);
    } else if args.get("privateKey").is_some() {
        return Err(args.invalid("privateKey needs a certificate"));
    }
    let config = config.build().map_err(invalid)?;
    let tcp = super::HostnameEndpoint::new(reactor, host, port)
        .timeout(args.timeout()?)
        .bind_address(bind_address);
    Ok(Box::new(super::TlsClientEndpoint::new(
        Box::new(tcp),
        config,
        host,
    )))
}

/// `unix:PATH[:timeout=…][:lockfile=…]` (Twisted's `_parseClientUNIX`).
fn parse_unix_client(
    reactor: &Reactor,
    args: &EndpointArgs,
) -> Result<Box<dyn ClientEndpoint>, EndpointSyntaxProblem> {
    let args = args.bind(&["path", "timeout", "lockfile"], 1)?;
    let mut spec = UnixClientSpec::new(args.required("path")?);
    spec.timeout = args.timeout()?;
    spec.check_pid = args.flag("lockfile", false)?;
    Ok(Box::new(UnixClientEndpoint::new(reactor, spec)))
}

#[cfg(test)]
mod tests {
    //! The splitting and binding of descriptions, pinned against what Twisted's
    //! `twisted.internet.endpoints._parse` (and `serverFromString`, `clientFromString`) do
    //! with the same strings; where torsion is stricter, the test says so.

    use std::any::Any;

    use super::*;

    fn split(description: &str) -> (String, Vec<String>, Vec<(String, String)>) {
        let args = EndpointArgs::parse(description)
            .unwrap_or_else(|problem| panic!("{description:?} did not split: {problem:?}"));
        (args.endpoint_type, args.positional, args.keywords)
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn server_problem(description: &str) -> EndpointSyntaxProblem {
        let reactor = Reactor::new().unwrap();
        match server_from_string(&reactor, description) {
            Ok(endpoint) => panic!("{description:?} parsed as {endpoint:?}"),
            Err(err) => {
                assert_eq!(err.description, description);
                err.problem
            }
        }
    }

    fn client_problem(description: &str) -> EndpointSyntaxProblem {
        let reactor = Reactor::new().unwrap();
        match client_from_string(&reactor, description) {
            Ok(endpoint) => panic!("{description:?} parsed as {endpoint:?}"),
            Err(err) => {
                assert_eq!(err.description, description);
                err.problem
            }
        }
    }

    #[test]
    fn colons_separate_the_type_positional_and_keyword_arguments() {
        // _parse: (['tcp', '8080'], {'interface': '127.0.0.1', 'backlog': '100'})
        assert_eq!(
            split("tcp:8080:interface=127.0.0.1:backlog=100"),
            (
                "tcp".into(),
                strings(&["8080"]),
                pairs(&[("interface", "127.0.0.1"), ("backlog", "100")])
            )
        );
        // _parse: (['tcp'], {'port': '80', 'interface': '127.0.0.1'})
        assert_eq!(
            split("tcp:port=80:interface=127.0.0.1"),
            (
                "tcp".into(),
                vec![],
                pairs(&[("port", "80"), ("interface", "127.0.0.1")])
            )
        );
    }

    #[test]
    fn a_type_alone_has_no_arguments() {
        // _parse: (['tcp'], {})
        assert_eq!(split("tcp"), ("tcp".into(), vec![], vec![]));
    }

    #[test]
    fn a_backslash_escapes_colons_equals_and_backslashes() {
        // _parse: (['unix', 'foo:bar=baz:qux\\'], {'mode': '0660'})
        assert_eq!(
            split(r"unix:foo\:bar\=baz\:qux\\:mode=0660"),
            (
                "unix".into(),
                strings(&[r"foo:bar=baz:qux\"]),
                pairs(&[("mode", "0660")])
            )
        );
        // _parse: (['tcp', '8080'], {'interface': '::1'})
        assert_eq!(
            split(r"tcp:8080:interface=\:\:1"),
            (
                "tcp".into(),
                strings(&["8080"]),
                pairs(&[("interface", "::1")])
            )
        );
    }

    #[test]
    fn a_backslash_makes_any_character_literal() {
        // _parse: (['tcp', 'ab'], {}): the backslash goes, the character stays.
        assert_eq!(split(r"tcp:a\b"), ("tcp".into(), strings(&["ab"]), vec![]));
        // _parse: (['tcp'], {'=x': 'y'}): an escaped `=` belongs to the key.
        assert_eq!(
            split(r"tcp:\=x=y"),
            ("tcp".into(), vec![], pairs(&[("=x", "y")]))
        );
    }

    #[test]
    fn a_trailing_backslash_is_an_error() {
        // Twisted's _tokenize runs out of characters (RuntimeError from StopIteration).
        assert_eq!(
            EndpointArgs::parse("tcp:80\\"),
            Err(EndpointSyntaxProblem::TrailingBackslash)
        );
        assert_eq!(
            server_problem("tcp:80\\"),
            EndpointSyntaxProblem::TrailingBackslash
        );
    }

    #[test]
    fn only_the_first_equals_separates_key_and_value() {
        // _parse: (['tcp', '80'], {'interface': 'a=b'})
        assert_eq!(
            split("tcp:80:interface=a=b"),
            (
                "tcp".into(),
                strings(&["80"]),
                pairs(&[("interface", "a=b")])
            )
        );
        // _parse: (['tcp', '80'], {'': 'x'}): an empty key is still a key.
        assert_eq!(
            split("tcp:80:=x"),
            ("tcp".into(), strings(&["80"]), pairs(&[("", "x")]))
        );
        // _parse: (['tcp', '80'], {'interface': ''}): and an empty value a value.
        assert_eq!(
            split("tcp:80:interface="),
            ("tcp".into(), strings(&["80"]), pairs(&[("interface", "")]))
        );
    }

    #[test]
    fn trailing_and_doubled_colons_give_empty_positional_arguments() {
        // _parse: (['tcp', ''], {}), (['tcp', '80', ''], {}), (['tcp', '', '80'], {})
        assert_eq!(split("tcp:"), ("tcp".into(), strings(&[""]), vec![]));
        assert_eq!(
            split("tcp:80:"),
            ("tcp".into(), strings(&["80", ""]), vec![])
        );
        assert_eq!(
            split("tcp::80"),
            ("tcp".into(), strings(&["", "80"]), vec![])
        );
        // The empty argument is there, but counts as missing where one is required
        // (Twisted: int('') raises ValueError).
        assert_eq!(
            server_problem("tcp:"),
            EndpointSyntaxProblem::MissingArgument {
                endpoint: "tcp".into(),
                argument: "port".into()
            }
        );
        // One argument more than a TCP server takes positionally is too many.
        assert_eq!(
            server_problem("tcp:80:0.0.0.0:50:"),
            EndpointSyntaxProblem::TooManyArguments {
                endpoint: "tcp".into(),
                given: 4,
                max: 3
            }
        );
    }

    #[test]
    fn a_description_without_a_type_is_empty() {
        // Twisted fails on these too: "", ":" and ":80" split to a type of '' ("Unknown
        // endpoint type: ''"), "=x" to no positional argument at all (an IndexError).
        for description in ["", ":", ":80", "=x"] {
            assert_eq!(
                EndpointArgs::parse(description),
                Err(EndpointSyntaxProblem::Empty),
                "{description:?}"
            );
            assert_eq!(server_problem(description), EndpointSyntaxProblem::Empty);
            assert_eq!(client_problem(description), EndpointSyntaxProblem::Empty);
        }
        // An escaped colon is a type named ":", which no parser knows (as in Twisted).
        assert_eq!(
            server_problem("\\:"),
            EndpointSyntaxProblem::UnknownType(":".into())
        );
    }

    #[test]
    fn a_type_given_as_a_keyword_is_refused() {
        // Stricter than Twisted, whose _parse gives (['c'], {'a': 'b'}) and so takes the
        // first positional argument as the type wherever it stands.
        assert_eq!(
            EndpointArgs::parse("a=b:c"),
            Err(EndpointSyntaxProblem::Empty)
        );
    }

    #[test]
    fn non_ascii_text_passes_through_unchanged() {
        // _parse: (['unix', '/tmp/ü.sock'], {'mode': '660'})
        assert_eq!(
            split("unix:/tmp/ü.sock:mode=660"),
            (
                "unix".into(),
                strings(&["/tmp/ü.sock"]),
                pairs(&[("mode", "660")])
            )
        );
        // A backslash escapes a character, not a byte; keys may be any text (Twisted's
        // _parse fails on a non-ASCII key, which it makes a native ASCII string).
        assert_eq!(
            split(r"x:\ü\€=\日本"),
            ("x".into(), vec![], pairs(&[("ü€", "日本")]))
        );
        let reactor = Reactor::new().unwrap();
        let endpoint = server_from_string(&reactor, "unix:/tmp/😀 sock:lockfile=0").unwrap();
        let unix = (&*endpoint as &dyn Any)
            .downcast_ref::<UnixServerEndpoint>()
            .unwrap();
        assert_eq!(unix.spec.path, std::path::Path::new("/tmp/😀 sock"));
        // A non-ASCII interface is a bad value, not a panic (Twisted keeps it until
        // listening fails).
        assert!(matches!(
            server_problem("tcp:80:interface=ü"),
            EndpointSyntaxProblem::BadValue { argument, .. } if argument == "interface"
        ));
        // A non-ASCII type is an unknown type, named as written.
        assert_eq!(
            server_problem("ťcp:80"),
            EndpointSyntaxProblem::UnknownType("ťcp".into())
        );
    }

    #[test]
    fn quoted_arguments_split_back_to_themselves() {
        // quoteStringArgument escapes `\` and `:` only, as Twisted's does.
        assert_eq!(
            quote_string_argument(r"some : stuff \ "),
            r"some \: stuff \\ "
        );
        assert_eq!(quote_string_argument("ü:\\"), "ü\\:\\\\");
        assert_eq!(quote_string_argument(""), "");
        assert_eq!(quote_string_argument("a=b"), "a=b");
        let awkward = [
            "",
            ":",
            "\\",
            "\\:",
            "::\\\\",
            "some : stuff \\ ",
            "ü:\\日本",
            "/var/run/a:b.sock",
            "a=b",
            "=",
            "x=y:z=w",
        ];
        for argument in awkward {
            let quoted = quote_string_argument(argument);
            // As a keyword's value, anything round-trips: after the first `=` of an
            // argument, another `=` is a character.
            assert_eq!(
                split(&format!("x:k={quoted}")).2,
                pairs(&[("k", argument)]),
                "{argument:?} quoted as {quoted:?}"
            );
            // As a positional argument, anything without `=` does (as in Twisted, where
            // `a=b` would become a keyword).
            if !argument.contains('=') {
                assert_eq!(
                    split(&format!("x:{quoted}:y")).1,
                    strings(&[argument, "y"]),
                    "{argument:?} quoted as {quoted:?}"
                );
            }
        }
    }

    #[test]
    fn arguments_bind_by_position_then_by_keyword() {
        let args = EndpointArgs::parse(r"tcp:80:backlog=7:interface=\:\:1").unwrap();
        let bound = args.bind(&["port", "interface", "backlog"], 3).unwrap();
        assert_eq!(bound.get("port"), Some("80"));
        assert_eq!(bound.get("interface"), Some("::1"));
        assert_eq!(bound.get("backlog"), Some("7"));
        assert_eq!(bound.get("timeout"), None);
        assert_eq!(bound.port("port"), Ok(80));
        assert_eq!(bound.backlog(), Ok(7));
        assert_eq!(
            bound.interface(IpAddr::from([0, 0, 0, 0])),
            Ok("::1".parse().unwrap())
        );

        // A keyword may use any name of its parameter; the first is the one bound.
        let args = EndpointArgs::parse("unix:path=/tmp/s").unwrap();
        let bound = args.bind(&["address|path", "mode"], 2).unwrap();
        assert_eq!(bound.get("address"), Some("/tmp/s"));
        assert_eq!(bound.get("path"), None);
    }

    #[test]
    fn positional_arguments_beyond_the_maximum_are_too_many() {
        // Twisted: "_parseTCP() takes from 2 to 4 positional arguments but 5 were given".
        let args = EndpointArgs::parse("tcp:80:1.2.3.4:5:6").unwrap();
        assert_eq!(
            args.bind(&["port", "interface", "backlog"], 3),
            Err(EndpointSyntaxProblem::TooManyArguments {
                endpoint: "tcp".into(),
                given: 4,
                max: 3
            })
        );
        // A maximum beyond the parameters is the number of parameters.
        let args = EndpointArgs::parse("x:1:2").unwrap();
        assert!(matches!(
            args.bind(&["a"], 5),
            Err(EndpointSyntaxProblem::TooManyArguments {
                given: 2,
                max: 1,
                ..
            })
        ));
    }

    #[test]
    fn an_unknown_keyword_is_an_error_naming_those_accepted() {
        // Twisted: "_parseTCP() got an unexpected keyword argument 'bogus'".
        assert_eq!(
            server_problem("tcp:80:bogus=1"),
            EndpointSyntaxProblem::UnknownKeyword {
                endpoint: "tcp".into(),
                keyword: "bogus".into(),
                accepted: "port, interface, backlog".into()
            }
        );
        // Keywords are matched with their case.
        assert!(matches!(
            server_problem("tcp:80:Backlog=1"),
            EndpointSyntaxProblem::UnknownKeyword { keyword, .. } if keyword == "Backlog"
        ));
    }

    #[test]
    fn an_argument_given_twice_is_an_error() {
        // Twisted: "_parseTCP() got multiple values for argument 'port'".
        let twice = EndpointSyntaxProblem::DuplicateArgument {
            endpoint: "tcp".into(),
            argument: "port".into(),
        };
        assert_eq!(server_problem("tcp:port=80:80"), twice);
        // Stricter than Twisted, whose keyword dict keeps the last of a repeated keyword.
        assert_eq!(
            server_problem("tcp:80:backlog=1:backlog=2"),
            EndpointSyntaxProblem::DuplicateArgument {
                endpoint: "tcp".into(),
                argument: "backlog".into()
            }
        );
        // Twisted's _parseClientTCP lets `port=81` override the positional 80 here.
        assert_eq!(client_problem("tcp:80:host=h:port=81"), twice);
    }

    #[test]
    fn an_unknown_type_is_an_error_naming_it_as_written() {
        // Twisted: "Unknown endpoint type: 'foo'".
        assert_eq!(
            server_problem("foo:80"),
            EndpointSyntaxProblem::UnknownType("foo".into())
        );
        assert_eq!(
            client_problem("Foo:80"),
            EndpointSyntaxProblem::UnknownType("Foo".into())
        );
        // tcp6 listens but does not connect.
        assert!(matches!(
            client_problem("tcp6:host:80"),
            EndpointSyntaxProblem::UnknownType(_)
        ));
        // Twisted's ssl: client does not check the server unless told: torsion points to tls:.
        let problem = client_problem("ssl:host=example.com:port=443");
        assert!(problem.to_string().contains("tls:HOST:PORT"), "{problem}");
    }

    #[test]
    fn types_match_without_regard_to_case() {
        // Looser than Twisted, which refuses `TcP:80` as an unknown type.
        let reactor = Reactor::new().unwrap();
        let endpoint = server_from_string(&reactor, "TcP:80").unwrap();
        let tcp = (&*endpoint as &dyn Any)
            .downcast_ref::<TcpServerEndpoint>()
            .unwrap();
        assert_eq!(tcp.port, 80);
    }

    #[test]
    fn ports_are_whole_numbers_from_0_to_65535() {
        let bad_port = |value: &str| EndpointSyntaxProblem::BadValue {
            endpoint: "tcp".into(),
            argument: "port".into(),
            value: value.into(),
            expected: "a port number from 0 to 65535".into(),
        };
        // Twisted: int('80x') raises ValueError.
        assert_eq!(server_problem("tcp:80x"), bad_port("80x"));
        // Stricter than Twisted, which takes 65536 and -1 and fails only when listening.
        assert_eq!(server_problem("tcp:65536"), bad_port("65536"));
        assert_eq!(server_problem("tcp:-1"), bad_port("-1"));
        // Nor, unlike Python's int(), spaces around the number.
        assert_eq!(server_problem("tcp: 80"), bad_port(" 80"));
        assert_eq!(client_problem("tcp:h:99999"), bad_port("99999"));
        // A client needs both host and port (Twisted: missing argument 'port').
        assert_eq!(
            client_problem("tcp:h"),
            EndpointSyntaxProblem::MissingArgument {
                endpoint: "tcp".into(),
                argument: "port".into()
            }
        );
        let args = EndpointArgs::parse("tcp:0").unwrap();
        assert_eq!(args.bind(&["port"], 1).unwrap().port("port"), Ok(0));
        let args = EndpointArgs::parse("tcp:65535").unwrap();
        assert_eq!(args.bind(&["port"], 1).unwrap().port("port"), Ok(65535));
    }

    #[test]
    fn a_client_port_comes_first_when_the_host_is_a_keyword() {
        // Twisted's _parseClientTCP: one positional argument is the port when host= is
        // given.
        let reactor = Reactor::new().unwrap();
        for description in ["tcp:host=example.com:80", "tcp:example.com:80"] {
            let endpoint = client_from_string(&reactor, description).unwrap();
            let tcp = (&*endpoint as &dyn Any)
                .downcast_ref::<TcpClientEndpoint>()
                .unwrap();
            assert_eq!((tcp.host.as_str(), tcp.port), ("example.com", 80));
        }
    }

    #[test]
    fn a_timeout_too_long_for_a_duration_is_a_bad_value_not_a_panic() {
        // Twisted's clientFromString takes whole seconds only, so 1e300 is a ValueError
        // there; here it parses as a number, too large for a Duration.
        for description in [
            "tcp:example.com:80:timeout=1e300",
            "tcp:example.com:80:timeout=18446744073709551616",
            "unix:/run/app.sock:timeout=1e20",
        ] {
            assert!(
                matches!(
                    client_problem(description),
                    EndpointSyntaxProblem::BadValue { argument, .. } if argument == "timeout"
                ),
                "{description}"
            );
        }
        // The largest whole number of seconds a Duration holds still parses.
        let reactor = Reactor::new().unwrap();
        let endpoint = client_from_string(&reactor, "tcp:example.com:80:timeout=1e19").unwrap();
        let tcp = (&*endpoint as &dyn Any)
            .downcast_ref::<TcpClientEndpoint>()
            .unwrap();
        assert_eq!(
            tcp.timeout,
            Some(Duration::from_secs(10_000_000_000_000_000_000))
        );
    }

    #[test]
    fn modes_are_octal_permission_bits() {
        assert_eq!(parse_octal_mode("660"), Some(0o660));
        assert_eq!(parse_octal_mode("0660"), Some(0o660));
        assert_eq!(parse_octal_mode("0o660"), Some(0o660));
        assert_eq!(parse_octal_mode("0O7777"), Some(0o7777));
        for bad in [
            "",
            "0o",
            "8",
            "66x",
            "17777",
            "-660",
            "+660",
            "ü",
            "7".repeat(40).as_str(),
        ] {
            assert_eq!(parse_octal_mode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn flags_and_timeouts_parse_as_numbers() {
        let bind = |description: &str| {
            EndpointArgs::parse(description)
                .unwrap()
                .bind(&["lockfile", "timeout"], 0)
                .unwrap()
        };
        assert_eq!(bind("x:lockfile=0").flag("lockfile", true), Ok(false));
        assert_eq!(bind("x:lockfile=2").flag("lockfile", false), Ok(true));
        assert_eq!(bind("x").flag("lockfile", true), Ok(true));
        assert!(bind("x:lockfile=yes").flag("lockfile", false).is_err());
        assert_eq!(
            bind("x:timeout=2.5").timeout(),
            Ok(Some(Duration::from_millis(2500)))
        );
        assert_eq!(bind("x").timeout(), Ok(Some(DEFAULT_CONNECT_TIMEOUT)));
        for bad in [
            "-1",
            "nan",
            "inf",
            "five",
            "",
            "1e300",
            "18446744073709551616",
        ] {
            assert!(
                bind(&format!("x:timeout={bad}")).timeout().is_err(),
                "{bad:?}"
            );
        }
    }
}
