//! Following redirects (Twisted's `twisted.web.client.RedirectAgent`) around any
//! [`HttpClient`].
//!
//! 301, 302, 307 and 308 are followed for GET and HEAD, keeping the method (and a body
//! that can be sent again); 303 is followed as GET (HEAD stays HEAD) without a body, for
//! any method; 301, 302, 307 and 308 to another method fail with
//! [`AgentError::PageRedirect`], since resending a POST is the caller's decision. A
//! relative `Location` is resolved against the URL that answered it. Credentials
//! (`Authorization`, `Cookie`, `Proxy-Authorization`) are dropped as soon as a redirect
//! leaves the origin (scheme, host and port) of the URL before it. A redirect's own body
//! is read and dropped (up to [`MAX_DRAINED`] bytes) before the next request, so its
//! connection can be reused for it.
//!
//! Invariant: each hop is counted, and the chain stops at the limit with
//! [`AgentError::InfiniteRedirection`]; every response handed out carries the redirects
//! before it in [`Response::previous`].

use std::rc::Rc;

use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, COOKIE, PROXY_AUTHORIZATION};
use http::{HeaderMap, Method, StatusCode};
use torsion::{Deferred, Failure, Resolver};

use super::body::Body;
use super::error::AgentError;
use super::response::{BodyControl, BodyReceiver, Response};
use super::target::{Target, resolve};
use super::{Agent, HttpClient};

/// How many redirects are followed by default (Twisted's `redirectLimit`, 20).
pub const DEFAULT_MAX_REDIRECTS: usize = 20;

/// The most bytes of a redirect's body read (and dropped) so that its connection can be
/// kept; past it, the connection is closed.
pub const MAX_DRAINED: usize = 64 * 1024;

/// Follows redirects of the agent it wraps (Twisted's `RedirectAgent`).
///
/// # Examples
///
/// A site that sends `/old` to `/new`:
///
/// ```
/// use std::rc::Rc;
/// use torsion::net::tcp::ListenOptions;
/// use torsion::{Failure, Reactor};
/// use torsion_web::agent::{Agent, Body, HttpClient, RedirectAgent, Response};
/// use torsion_web::{Node, Render, Request, Resource, Site};
///
/// struct Moved;
/// impl Resource for Moved {
///     fn render_get(&self, request: &Rc<Request>) -> Render {
///         request.set_response_code(http::StatusCode::MOVED_PERMANENTLY);
///         request.set_header("Location", "/new");
///         Render::text("moved")
///     }
/// }
/// struct New;
/// impl Resource for New {
///     fn render_get(&self, _request: &Rc<Request>) -> Render {
///         Render::text("the new page")
///     }
/// }
///
/// let reactor = Reactor::new().unwrap();
/// let root = Node::new();
/// root.put_child("old", Rc::new(Moved));
/// root.put_child("new", Rc::new(New));
/// let options = ListenOptions { interface: [127, 0, 0, 1].into(), ..Default::default() };
/// let port = reactor.listen_tcp_with(0, Site::new(Rc::new(root)), options).unwrap();
/// let url = format!("http://127.0.0.1:{}/old", port.host().port().unwrap());
///
/// let agent = Agent::new(&reactor);
/// let (pool, r) = (agent.pool().clone(), reactor.clone());
/// let _done = RedirectAgent::new(agent)
///     .fetch(http::Method::GET, &url, http::HeaderMap::new(), Body::Empty)
///     .add_both(move |fetched: Result<(Response, Vec<u8>), Failure>| {
///         let (response, body) = fetched.unwrap();
///         assert_eq!(body, b"the new page");
///         assert!(response.url.ends_with("/new"));
///         assert_eq!(response.previous.as_ref().unwrap().status, 301);
///         pool.close_cached_connections().map(move |()| {
///             let _ = r.stop();
///         })
///     });
/// reactor.run().unwrap();
/// ```
pub struct RedirectAgent<A: HttpClient = Agent> {
    inner: Rc<A>,
    limit: usize,
}

impl<A: HttpClient> Clone for RedirectAgent<A> {
    fn clone(&self) -> Self {
        RedirectAgent {
            inner: self.inner.clone(),
            limit: self.limit,
        }
    }
}

impl<A: HttpClient + 'static> RedirectAgent<A> {
    /// Follows the redirects of `agent`'s responses, up to [`DEFAULT_MAX_REDIRECTS`].
    pub fn new(agent: A) -> Self {
        RedirectAgent {
            inner: Rc::new(agent),
            limit: DEFAULT_MAX_REDIRECTS,
        }
    }

    /// Follows at most `limit` redirects (Twisted's `redirectLimit`).
    pub fn max_redirects(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// The wrapped agent (Twisted's `_agent`).
    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// Requests `url` and follows its redirects (Twisted's `RedirectAgent.request`): the
    /// Deferred fires with the first response that is not a redirect to follow.
    ///
    /// # Errors
    ///
    /// As the wrapped agent's, and [`AgentError::PageRedirect`],
    /// [`AgentError::RedirectWithNoLocation`], [`AgentError::InfiniteRedirection`].
    pub fn request(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Body,
    ) -> Deferred<Response> {
        hop(
            self.inner.clone(),
            self.limit,
            Hop {
                method,
                url: url.to_string(),
                headers,
                body,
                count: 0,
                previous: None,
            },
        )
    }
}

impl<A: HttpClient + 'static> HttpClient for RedirectAgent<A> {
    fn request(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Body,
    ) -> Deferred<Response> {
        RedirectAgent::request(self, method, url, headers, body)
    }
}

/// One request of a chain of redirects.
struct Hop {
    method: Method,
    url: String,
    headers: HeaderMap,
    body: Body,
    count: usize,
    previous: Option<Box<Response>>,
}

fn hop<A: HttpClient + 'static>(inner: Rc<A>, limit: usize, this: Hop) -> Deferred<Response> {
    let Hop {
        method,
        url,
        mut headers,
        body,
        count,
        previous,
    } = this;
    let replay = body.is_replayable().then(|| body.clone());
    let sent = inner.request(method.clone(), &url, headers.clone(), body);
    sent.add_callback(move |mut response: Response| {
        if previous.is_some() {
            response.previous = previous;
        }
        let status = response.status;
        if ![301, 302, 303, 307, 308].contains(&status.as_u16()) {
            return Deferred::succeed(response);
        }
        let Some(location) = response.header("location").map(str::to_string) else {
            return Deferred::fail(AgentError::RedirectWithNoLocation { status, url });
        };
        let location = resolve(&url, &location);
        let (method, body) = if status == StatusCode::SEE_OTHER {
            headers.remove(CONTENT_TYPE);
            headers.remove(CONTENT_ENCODING);
            let method = if method == Method::HEAD {
                Method::HEAD
            } else {
                Method::GET
            };
            (method, Body::Empty)
        } else if method == Method::GET || method == Method::HEAD {
            match replay {
                Some(body) => (method, body),
                None => return Deferred::fail(AgentError::PageRedirect { status, location }),
            }
        } else {
            return Deferred::fail(AgentError::PageRedirect { status, location });
        };
        if count >= limit {
            return Deferred::fail(AgentError::InfiniteRedirection { limit, location });
        }
        let same_origin = match (Target::parse(&url), Target::parse(&location)) {
            (Ok(from), Ok(to)) => from.origin() == to.origin(),
            _ => false,
        };
        if !same_origin {
            for name in [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION] {
                headers.remove(name);
            }
        }
        // Read the redirect's body away, then follow.
        let (resolver, drained) = Deferred::new();
        match response.take_body() {
            Some(source) => {
                source.deliver(Box::new(Drain {
                    left: MAX_DRAINED,
                    control: None,
                    resolver,
                }));
            }
            None => {
                let _ = resolver.try_callback(());
            }
        }
        drained.add_callback(move |()| {
            hop(
                inner,
                limit,
                Hop {
                    method,
                    url: location,
                    headers,
                    body,
                    count: count + 1,
                    previous: Some(Box::new(response)),
                },
            )
        })
    })
}

/// Reads a redirect's body and drops it.
struct Drain {
    left: usize,
    control: Option<BodyControl>,
    resolver: Resolver<()>,
}

impl BodyReceiver for Drain {
    fn body_started(&mut self, control: BodyControl) {
        self.control = Some(control);
    }

    fn data_received(&mut self, data: &[u8]) {
        match self.left.checked_sub(data.len()) {
            Some(left) => self.left = left,
            None => {
                if let Some(control) = &self.control {
                    control.stop();
                }
            }
        }
    }

    fn body_finished(&mut self, _result: Result<(), Failure>) {
        // Cut short or not, the redirect is followed.
        let _ = self.resolver.try_callback(());
    }
}
