//! The HTTP client (Twisted's `twisted.web.client.Agent`, and the `getPage` the seeds use):
//! one request over a new connection, HTTP or HTTPS (verified against the system's roots
//! unless told otherwise), with connect and whole-request timeouts on by default.
//!
//! A request is written at once; the response head is parsed with
//! [`parse_response_head`], and its body read by its framing (a length, chunks, or the
//! close) and collected.
//!
//! Invariant: a request's Deferred fires exactly once: with the response, or with the
//! reason (an [`AgentError`], a connection failure, a [`TlsError`](torsion::tls::TlsError));
//! the connection is closed in every case.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode, Version};
use torsion::endpoints::{ClientEndpoint, HostnameEndpoint, TlsClientEndpoint, connect_protocol};
use torsion::net::Transport;
use torsion::protocol::Protocol;
use torsion::time::{DelayedCall, ReactorTime};
use torsion::tls::ClientConfig;
use torsion::{Deferred, Failure, Reactor, Resolver};

use crate::parse::{ChunkedDecoder, ResponseBody, ResponseHead, parse_response_head};

/// A response, its body read whole (Twisted's `IResponse` after `readBody`).
#[derive(Debug, Clone)]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

/// What can go wrong with a request besides the connection itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentError {
    /// The URL cannot be requested (not `http:` or `https:`, no host, a bad port).
    InvalidUrl(String),
    /// The server's response is not valid HTTP.
    BadResponse(String),
    /// The connection ended before the response was complete.
    Incomplete,
    /// The whole request took longer than the agent's timeout.
    Timeout(Duration),
    /// `get_page`: the server answered with an error status (Twisted's `web.error.Error`).
    Status(StatusCode),
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentError::InvalidUrl(why) => write!(f, "cannot request this URL: {why}"),
            AgentError::BadResponse(why) => {
                write!(f, "the server's response is not valid HTTP: {why}")
            }
            AgentError::Incomplete => {
                f.write_str("the connection ended before the response was complete")
            }
            AgentError::Timeout(t) => write!(f, "no complete response within {t:?}"),
            AgentError::Status(code) => write!(f, "the server answered {code}"),
        }
    }
}

impl std::error::Error for AgentError {}

/// Makes HTTP requests (Twisted's `Agent`).
///
/// # Examples
///
/// ```no_run
/// use torsion::Reactor;
/// use torsion_web::Agent;
///
/// let reactor = Reactor::new().unwrap();
/// let agent = Agent::new(&reactor);
/// let page = agent.request(http::Method::GET, "http://127.0.0.1:8080/", http::HeaderMap::new(), None);
/// # let _ = page;
/// ```
#[derive(Clone)]
pub struct Agent {
    reactor: Reactor,
    tls: Option<ClientConfig>,
    connect_timeout: Option<Duration>,
    timeout: Option<Duration>,
}

/// The connect timeout by default (Twisted's 30 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The whole-request timeout by default (Twisted's Agent has none: its #5773).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl Agent {
    /// An agent with the default timeouts, verifying HTTPS servers against the system's
    /// roots.
    pub fn new(reactor: &Reactor) -> Agent {
        Agent {
            reactor: reactor.clone(),
            tls: None,
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            timeout: Some(DEFAULT_REQUEST_TIMEOUT),
        }
    }

    /// With this TLS configuration for `https:` URLs.
    pub fn tls(mut self, config: ClientConfig) -> Agent {
        self.tls = Some(config);
        self
    }

    /// With another connect timeout (`None`: the system's).
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Agent {
        self.connect_timeout = timeout;
        self
    }

    /// With another whole-request timeout (`None`: none).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Agent {
        self.timeout = timeout;
        self
    }

    /// Requests `url` (Twisted's `Agent.request`): `headers` are sent as given (`Host`,
    /// `Content-Length` and `Connection: close` are added), `body` with its length.
    pub fn request(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
    ) -> Deferred<Response> {
        let target = match Target::parse(url) {
            Ok(target) => target,
            Err(error) => return Deferred::fail(error),
        };
        let endpoint: Box<dyn ClientEndpoint> = {
            let tcp = HostnameEndpoint::new(&self.reactor, &target.host, target.port)
                .timeout(self.connect_timeout);
            if target.https {
                let config = match &self.tls {
                    Some(config) => config.clone(),
                    None => match ClientConfig::new() {
                        Ok(config) => config,
                        Err(error) => return Deferred::fail(error),
                    },
                };
                Box::new(TlsClientEndpoint::new(Box::new(tcp), config, &target.host))
            } else {
                Box::new(tcp)
            }
        };
        let wire = request_bytes(&method, &target, headers, body.as_deref());
        let (resolver, d) = Deferred::new();
        let state = Rc::new(Exchange {
            resolver: RefCell::new(Some(resolver)),
            transport: RefCell::new(None),
            deadline: RefCell::new(None),
        });
        if let Some(timeout) = self.timeout {
            let s = state.clone();
            let call = self.reactor.call_later(timeout, move || {
                s.fail(Failure::new(AgentError::Timeout(timeout)));
            });
            *state.deadline.borrow_mut() = Some(call);
        }
        let protocol = AgentProtocol {
            state: state.clone(),
            method,
            wire: Some(wire),
            input: Vec::new(),
            head: None,
            body: Vec::new(),
            chunks: None,
        };
        let connected = connect_protocol(endpoint.as_ref(), protocol);
        let s = state.clone();
        drop(connected.add_callbacks(
            |_transport: Transport| Ok::<(), Failure>(()),
            move |failure: Failure| {
                s.fail(failure);
                Ok::<(), Failure>(())
            },
        ));
        d
    }
}

/// `GET url` and its body, failing on an error status (Twisted's removed `getPage`, kept
/// as a convenience over the [`Agent`]).
pub fn get_page(reactor: &Reactor, url: &str) -> Deferred<Vec<u8>> {
    Agent::new(reactor)
        .request(Method::GET, url, HeaderMap::new(), None)
        .add_callback(|response: Response| {
            if response.status.is_success() {
                Ok(response.body)
            } else {
                Err(Failure::new(AgentError::Status(response.status)))
            }
        })
}

/// Where a URL points.
struct Target {
    https: bool,
    host: String,
    port: u16,
    /// Path and query, `/` if empty.
    path: String,
    /// The `Host` header.
    authority: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, AgentError> {
        let (https, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            return Err(AgentError::InvalidUrl(format!(
                "{url:?} is not an http: or https: URL"
            )));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let path = if path.is_empty() {
            "/".to_string()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        if authority.contains('@') {
            return Err(AgentError::InvalidUrl(
                "credentials in URLs are not supported".into(),
            ));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| AgentError::InvalidUrl(format!("bad IPv6 host in {url:?}")))?;
            (host.to_string(), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(AgentError::InvalidUrl(format!("no host in {url:?}")));
        }
        let port = match port {
            Some(port) => port
                .parse()
                .map_err(|_| AgentError::InvalidUrl(format!("bad port in {url:?}")))?,
            None if https => 443,
            None => 80,
        };
        Ok(Target {
            https,
            host,
            port,
            path,
            authority: authority.to_string(),
        })
    }
}

fn request_bytes(
    method: &Method,
    target: &Target,
    headers: HeaderMap,
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = format!("{method} {} HTTP/1.1\r\n", target.path).into_bytes();
    let mut has_host = false;
    for (name, value) in &headers {
        if name == http::header::HOST {
            has_host = true;
        }
        if name == http::header::CONTENT_LENGTH || name == http::header::CONNECTION {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !has_host {
        out.extend_from_slice(format!("Host: {}\r\n", target.authority).as_bytes());
    }
    if let Some(body) = body {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    if let Some(body) = body {
        out.extend_from_slice(body);
    }
    out
}

/// One request's outcome, shared by the protocol, the timeout and the connect errback.
struct Exchange {
    resolver: RefCell<Option<Resolver<Response>>>,
    transport: RefCell<Option<Transport>>,
    deadline: RefCell<Option<DelayedCall>>,
}

impl Exchange {
    fn finish(&self, outcome: Result<Response, Failure>) {
        let resolver = self.resolver.borrow_mut().take();
        let Some(resolver) = resolver else { return };
        if let Some(deadline) = self.deadline.borrow_mut().take() {
            let _ = deadline.cancel();
        }
        let transport = self.transport.borrow_mut().take();
        match outcome {
            Ok(response) => {
                if let Some(t) = transport {
                    t.lose_connection();
                }
                let _ = resolver.try_callback(response);
            }
            Err(failure) => {
                if let Some(t) = transport {
                    t.abort_connection();
                }
                let _ = resolver.try_errback(failure);
            }
        }
    }

    fn fail(&self, failure: Failure) {
        self.finish(Err(failure));
    }
}

/// Writes the request and reads the response.
struct AgentProtocol {
    state: Rc<Exchange>,
    method: Method,
    wire: Option<Vec<u8>>,
    input: Vec<u8>,
    head: Option<ResponseHead>,
    body: Vec<u8>,
    chunks: Option<ChunkedDecoder>,
}

impl AgentProtocol {
    /// Parses what has arrived; `Some` once the response is complete or broken.
    fn advance(&mut self) -> Option<Result<Response, Failure>> {
        loop {
            if self.head.is_none() {
                match parse_response_head(&self.input, &self.method) {
                    Ok(None) => return None,
                    Err(error) => return Some(Err(Failure::new(AgentError::BadResponse(error.0)))),
                    Ok(Some((head, used))) => {
                        self.input.drain(..used);
                        if head.status.is_informational() {
                            // 100 Continue and the like: the real head follows.
                            continue;
                        }
                        if head.body == ResponseBody::Chunked {
                            self.chunks = Some(ChunkedDecoder::new());
                        }
                        self.head = Some(head);
                    }
                }
            }
            let head = self.head.as_ref()?;
            match head.body {
                ResponseBody::Empty => return Some(self.response()),
                ResponseBody::Fixed(n) => {
                    let want = (n as usize)
                        .saturating_sub(self.body.len())
                        .min(self.input.len());
                    self.body.extend(self.input.drain(..want));
                    return (self.body.len() as u64 >= n).then(|| self.response());
                }
                ResponseBody::UntilClose => {
                    self.body.append(&mut self.input);
                    return None;
                }
                ResponseBody::Chunked => {
                    let decoder = self.chunks.as_mut()?;
                    loop {
                        let decoded = match decoder.decode(&self.input) {
                            Ok(decoded) => decoded,
                            Err(error) => {
                                return Some(Err(Failure::new(AgentError::BadResponse(
                                    error.to_string(),
                                ))));
                            }
                        };
                        self.body.extend_from_slice(decoded.data);
                        let (consumed, done) = (decoded.consumed, decoded.done);
                        self.input.drain(..consumed);
                        if done {
                            return Some(self.response());
                        }
                        if consumed == 0 {
                            return None;
                        }
                    }
                }
            }
        }
    }

    /// The response from the parsed head and the body read.
    fn response(&mut self) -> Result<Response, Failure> {
        let Some(head) = self.head.take() else {
            return Err(Failure::new(AgentError::Incomplete));
        };
        Ok(Response {
            status: head.status,
            version: head.version,
            headers: head.headers,
            body: std::mem::take(&mut self.body),
        })
    }
}

impl Protocol for AgentProtocol {
    fn connection_made(&mut self, transport: Transport) {
        if let Some(wire) = self.wire.take() {
            transport.write(&wire);
        }
        *self.state.transport.borrow_mut() = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.input.extend_from_slice(data);
        if let Some(outcome) = self.advance() {
            self.state.finish(outcome);
        }
    }

    fn connection_lost(&mut self, reason: Failure) {
        let complete = self
            .head
            .as_ref()
            .is_some_and(|h| h.body == ResponseBody::UntilClose)
            && reason.check::<torsion::error::ConnectionDone>();
        let outcome = if complete {
            self.response()
        } else if reason.check::<torsion::error::ConnectionDone>() {
            Err(Failure::new(AgentError::Incomplete))
        } else {
            Err(reason)
        };
        self.state.transport.borrow_mut().take();
        self.state.finish(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_into_host_port_and_path() {
        let t = Target::parse("http://example.com/a?b=1").unwrap();
        assert_eq!(
            (t.https, t.host.as_str(), t.port, t.path.as_str()),
            (false, "example.com", 80, "/a?b=1")
        );
        let t = Target::parse("https://[::1]:8443").unwrap();
        assert_eq!(
            (
                t.https,
                t.host.as_str(),
                t.port,
                t.path.as_str(),
                t.authority.as_str()
            ),
            (true, "::1", 8443, "/", "[::1]:8443")
        );
        let t = Target::parse("http://h:81?q").unwrap();
        assert_eq!(t.path, "/?q");
        assert!(Target::parse("ftp://x/").is_err());
        assert!(Target::parse("http:///x").is_err());
        assert!(Target::parse("http://h:99999/").is_err());
        assert!(Target::parse("http://u:p@h/").is_err());
    }
}
