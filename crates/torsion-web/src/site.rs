//! The site (Twisted's `twisted.web.server.Site`): the factory of HTTP connections, holding
//! the root resource, the limits and timeouts every connection keeps, and the access log.
//!
//! Invariant: a site is shared by all its connections and never changes once serving; its
//! configuration is read, never written, by the channels.

use std::rc::Rc;
use std::time::Duration;

use torsion::log::Logger;
use torsion::net::Address;
use torsion::protocol::{Factory, Protocol};

use crate::channel::HttpChannel;
use crate::parse::Limits;
use crate::request::Request;
use crate::resource::{NotFound, Resource};

/// The limits and timeouts of a [`Site`], with the defaults a user expects.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// Sizes of the request line, the headers and the URI (16 KiB, 100 headers, 8 KiB:
    /// over them, 431 or 414).
    pub limits: Limits,
    /// The largest request body read (16 MiB; over it, 413).
    pub max_body: u64,
    /// A request's head must arrive within this, from its first byte (30 s; then 408).
    pub head_timeout: Option<Duration>,
    /// A request's body may stall this long between reads (30 s; then 408).
    pub body_timeout: Option<Duration>,
    /// A kept-alive connection with nothing to do closes after this (60 s).
    pub idle_timeout: Option<Duration>,
    /// Log each response in the combined log format (on).
    pub access_log: bool,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            limits: Limits::default(),
            max_body: 16 << 20,
            head_timeout: Some(Duration::from_secs(30)),
            body_timeout: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(60)),
            access_log: true,
        }
    }
}

/// Serves a tree of [`Resource`]s over HTTP/1.x (Twisted's `Site`): listen with it as the
/// factory, on any stream endpoint (TCP, UNIX, TLS).
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use torsion::net::tcp::ListenOptions;
/// use torsion_web::{Render, Request, Resource, Site};
///
/// struct Hello;
/// impl Resource for Hello {
///     fn is_leaf(&self) -> bool {
///         true
///     }
///     fn render_get(&self, _request: &Rc<Request>) -> Render {
///         Render::text("hello world")
///     }
/// }
///
/// let reactor = torsion::Reactor::new().unwrap();
/// let options = ListenOptions { interface: [127, 0, 0, 1].into(), ..Default::default() };
/// let port = reactor.listen_tcp_with(0, Site::new(Rc::new(Hello)), options).unwrap();
/// assert_ne!(port.host().port(), Some(0));
/// ```
pub struct Site(Rc<SiteInner>);

pub(crate) struct SiteInner {
    root: Rc<dyn Resource>,
    pub(crate) config: SiteConfig,
    log: Logger,
}

impl Site {
    /// A site serving `root` with the default [`SiteConfig`].
    pub fn new(root: Rc<dyn Resource>) -> Rc<Site> {
        Site::with_config(root, SiteConfig::default())
    }

    /// A site serving `root` with `config`.
    pub fn with_config(root: Rc<dyn Resource>, config: SiteConfig) -> Rc<Site> {
        Rc::new(Site(Rc::new(SiteInner {
            root,
            config,
            log: Logger::new("torsion_web.access"),
        })))
    }

    /// The configuration.
    pub fn config(&self) -> &SiteConfig {
        &self.0.config
    }
}

impl Factory for Site {
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(HttpChannel::new(self.0.clone(), addr.clone())))
    }
}

impl SiteInner {
    /// Walks the path from the root to the resource that renders it (Twisted's
    /// `getResourceFor` and `getChildForRequest`).
    pub(crate) fn resource_for(&self, request: &Request) -> Rc<dyn Resource> {
        let mut resource = self.root.clone();
        while !resource.is_leaf() {
            let Some(segment) = request.walk() else { break };
            resource = match resource.child(&segment, request) {
                Some(child) => child,
                None => return Rc::new(NotFound),
            };
        }
        resource
    }

    /// One line of the access log for a finished request, in the combined log format
    /// (Twisted's `combinedLogFormatter`).
    pub(crate) fn log_access(&self, request: &Request) {
        if !self.config.access_log {
            return;
        }
        let client = match request.client() {
            Address::Tcp(addr) => addr.ip().to_string(),
            _ => "-".to_string(),
        };
        let quote = |s: Option<&str>| s.unwrap_or("-").replace('"', "\\\"");
        let sent = match request.bytes_sent() {
            0 => "-".to_string(),
            n => n.to_string(),
        };
        self.log.info(format_args!(
            "{client} - - [{}] \"{} {} {:?}\" {} {sent} \"{}\" \"{}\"",
            clf_date(std::time::SystemTime::now()),
            request.method(),
            request.uri().replace('"', "%22"),
            request.version(),
            request.response_code().as_u16(),
            quote(request.header("referer")),
            quote(request.header("user-agent")),
        ));
    }
}

/// A time as the common log format writes it: `02/Dec/2026:14:01:13 +0000`.
fn clf_date(time: std::time::SystemTime) -> String {
    // From the HTTP date ("Wed, 02 Dec 2026 14:01:13 GMT"), which is UTC.
    let http = httpdate::fmt_http_date(time);
    let parts: Vec<&str> = http.split(' ').collect();
    match parts.as_slice() {
        [_, day, month, year, clock, _] => format!("{day}/{month}/{year}:{clock} +0000"),
        _ => http,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_dates_are_in_the_common_log_format() {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(super::clf_date(time), "14/Nov/2023:22:13:20 +0000");
    }
}
