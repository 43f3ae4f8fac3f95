//! A response and the delivery of its body (Twisted's `twisted.web._newclient.Response`,
//! `IResponse.deliverBody` and `twisted.web.client.readBody`).
//!
//! A [`Response`] comes as soon as its head has arrived; its body is then read by exactly
//! one of [`Response::deliver_body`] (a [`BodyReceiver`] gets the bytes as they arrive,
//! and can pause and resume the connection through its [`BodyControl`]) or
//! [`Response::collect_body`] (the whole body in a `Vec`). Until a receiver is given, the
//! connection is paused, so an unread body holds at most one read of memory.
//!
//! Invariant: a body is delivered to one receiver, which gets `body_started` first, then
//! `data_received` for each piece, then exactly one `body_finished`, each from the
//! reactor's loop, never from inside the call that gave the receiver (nor from inside
//! `resume`), and never while the connection's state is borrowed. A response dropped with
//! its body unread closes its connection (Twisted's #6711: there, such a connection
//! stayed paused in the pool for ever).

use std::fmt;
use std::rc::Rc;

use http::{HeaderMap, StatusCode, Version};
use torsion::{Deferred, Failure, Reactor, Resolver};

/// Receives a response's body as it arrives (the `IProtocol` Twisted's
/// `IResponse.deliverBody` takes).
///
/// # Examples
///
/// Counting the bytes of a body without keeping them:
///
/// ```
/// use torsion::Failure;
/// use torsion_web::agent::{BodyControl, BodyReceiver};
///
/// struct Count(u64);
///
/// impl BodyReceiver for Count {
///     fn data_received(&mut self, data: &[u8]) {
///         self.0 += data.len() as u64;
///     }
///     fn body_finished(&mut self, result: Result<(), Failure>) {
///         match result {
///             Ok(()) => println!("{} bytes", self.0),
///             Err(why) => println!("truncated after {} bytes: {why}", self.0),
///         }
///     }
/// }
/// ```
pub trait BodyReceiver: 'static {
    /// The body starts: `control` pauses, resumes or stops its delivery (Twisted's
    /// `makeConnection` with the response's transport proxy). Called once, first.
    fn body_started(&mut self, control: BodyControl) {
        let _ = control;
    }

    /// Bytes of the body, in order (Twisted's `dataReceived`), already stripped of the
    /// transfer coding (chunks).
    fn data_received(&mut self, data: &[u8]);

    /// The body ended (Twisted's `connectionLost`): `Ok` when it is complete (Twisted's
    /// `ResponseDone`), otherwise why not: [`AgentError::Incomplete`](crate::AgentError::Incomplete)
    /// for a body cut short by the connection's close (Twisted's `PotentialDataLoss`), a
    /// [`Timeout`](crate::AgentError::Timeout), [`BodyStopped`](crate::AgentError::BodyStopped),
    /// a decoding error, or the connection's own failure. Called exactly once.
    fn body_finished(&mut self, result: Result<(), Failure>);
}

/// Pauses, resumes or stops the delivery of a body (Twisted's `TransportProxyProducer`,
/// the producer a body protocol is given): pausing stops reading from the connection, so
/// the server is slowed down by TCP's flow control and a slow receiver holds bounded
/// memory. A cheap handle; it does nothing once the body has ended.
#[derive(Clone)]
pub struct BodyControl(Option<Rc<dyn BodyFlow>>);

impl BodyControl {
    /// A control over `flow`.
    pub(crate) fn new(flow: Rc<dyn BodyFlow>) -> BodyControl {
        BodyControl(Some(flow))
    }

    /// A control over a body that has already ended.
    pub(crate) fn ended() -> BodyControl {
        BodyControl(None)
    }

    /// Stops delivering until [`resume`](BodyControl::resume) (Twisted's
    /// `pauseProducing`): no `data_received` comes after this returns. The connection
    /// stops reading.
    pub fn pause(&self) {
        if let Some(flow) = &self.0 {
            flow.pause();
        }
    }

    /// Delivers again (Twisted's `resumeProducing`), from the next turn of the loop.
    pub fn resume(&self) {
        if let Some(flow) = &self.0 {
            flow.resume();
        }
    }

    /// Gives the body up (Twisted's `stopProducing`): the connection is closed and the
    /// receiver's `body_finished` gets [`AgentError::BodyStopped`](crate::AgentError::BodyStopped).
    pub fn stop(&self) {
        if let Some(flow) = &self.0 {
            flow.stop();
        }
    }
}

impl fmt::Debug for BodyControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "BodyControl"
        } else {
            "BodyControl(ended)"
        })
    }
}

/// What a [`BodyControl`] acts on.
pub(crate) trait BodyFlow {
    fn pause(&self);
    fn resume(&self);
    fn stop(&self);
}

/// Where a response's body comes from: a connection, a decoder over another source, or
/// nothing. Dropping a source before delivering it gives the body up.
pub(crate) trait BodySource {
    /// Delivers the body to `receiver`, from the next turn of the loop.
    fn deliver(self: Box<Self>, receiver: Box<dyn BodyReceiver>) -> BodyControl;
}

/// The body of a response that has none (HEAD, 204, 304, `Content-Length: 0`), or whose
/// body was already read.
pub(crate) struct NoBody(pub(crate) Reactor);

impl BodySource for NoBody {
    fn deliver(self: Box<Self>, mut receiver: Box<dyn BodyReceiver>) -> BodyControl {
        self.0.call_soon(move || {
            receiver.body_started(BodyControl::ended());
            receiver.body_finished(Ok(()));
        });
        BodyControl::ended()
    }
}

/// A body that failed before it was delivered (its connection timed out, for one).
pub(crate) struct FailedBody(pub(crate) Reactor, pub(crate) Failure);

impl BodySource for FailedBody {
    fn deliver(self: Box<Self>, mut receiver: Box<dyn BodyReceiver>) -> BodyControl {
        let failure = self.1;
        self.0.call_soon(move || {
            receiver.body_started(BodyControl::ended());
            receiver.body_finished(Err(failure));
        });
        BodyControl::ended()
    }
}

/// An HTTP response, from the moment its head has arrived (Twisted's `IResponse`).
///
/// Read its body with exactly one of [`deliver_body`](Response::deliver_body) or
/// [`collect_body`](Response::collect_body); both consume the response. Dropping a
/// response without reading its body closes the connection it came on (it is not
/// returned to the pool, and nothing waits for it).
///
/// # Examples
///
/// Serving a page and reading it back, head first, then the body:
///
/// ```
/// use std::rc::Rc;
/// use torsion::net::tcp::ListenOptions;
/// use torsion::{Failure, Reactor};
/// use torsion_web::agent::{Agent, Body, Response};
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
/// let reactor = Reactor::new().unwrap();
/// let options = ListenOptions { interface: [127, 0, 0, 1].into(), ..Default::default() };
/// let port = reactor.listen_tcp_with(0, Site::new(Rc::new(Hello)), options).unwrap();
/// let url = format!("http://127.0.0.1:{}/", port.host().port().unwrap());
///
/// let agent = Agent::new(&reactor);
/// let pool = agent.pool().clone();
/// let r = reactor.clone();
/// let _done = agent
///     .request(http::Method::GET, &url, http::HeaderMap::new(), Body::Empty)
///     .add_callback(|response: Response| {
///         assert_eq!(response.status, 200);
///         assert_eq!(response.headers["content-length"], "11");
///         response.collect_body()
///     })
///     .add_both(move |body: Result<Vec<u8>, Failure>| {
///         assert_eq!(body.unwrap(), b"hello world");
///         // The kept-alive connection is closed so the program can end.
///         pool.close_cached_connections().map(move |()| {
///             let _ = r.stop();
///         })
///     });
/// reactor.run().unwrap();
/// ```
pub struct Response {
    /// The status (Twisted's `code` and `phrase`).
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1 (Twisted's `version`).
    pub version: Version,
    /// The headers (Twisted's `headers`).
    pub headers: HeaderMap,
    /// The URL this response answers (Twisted's `request.absoluteURI`): after redirects,
    /// the last one.
    pub url: String,
    /// The redirect that led here, its body already read (Twisted's `previousResponse`);
    /// each has its own `previous`, back to the first request.
    pub previous: Option<Box<Response>>,
    body: Option<Box<dyn BodySource>>,
}

impl Response {
    pub(crate) fn new(
        status: StatusCode,
        version: Version,
        headers: HeaderMap,
        url: String,
        body: Box<dyn BodySource>,
    ) -> Response {
        Response {
            status,
            version,
            headers,
            url,
            previous: None,
            body: Some(body),
        }
    }

    /// The value of header `name` if it is there and is text (Twisted's
    /// `headers.getRawHeaders(name)[0]`).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The URLs requested to get here, the first request's first and this one's last
    /// (Twisted's chain of `previousResponse`s, flattened).
    pub fn redirect_chain(&self) -> Vec<&str> {
        let mut chain = vec![self.url.as_str()];
        let mut at = self;
        while let Some(previous) = &at.previous {
            chain.push(&previous.url);
            at = previous;
        }
        chain.reverse();
        chain
    }

    /// Delivers the body to `receiver` as it arrives (Twisted's `deliverBody`); the
    /// returned [`BodyControl`] is the one the receiver gets in `body_started`.
    ///
    /// The receiver is called from the next turn of the reactor's loop on, never from
    /// inside this call.
    pub fn deliver_body(mut self, receiver: impl BodyReceiver) -> BodyControl {
        match self.body.take() {
            Some(source) => source.deliver(Box::new(receiver)),
            None => BodyControl::ended(),
        }
    }

    /// The whole body (Twisted's `readBody`), or why it could not be read whole.
    pub fn collect_body(self) -> Deferred<Vec<u8>> {
        let (resolver, d) = Deferred::new();
        self.deliver_body(Collect {
            body: Vec::new(),
            resolver,
        });
        d
    }

    /// The whole body, and the response it came with (for [`HttpClient::fetch`](super::HttpClient::fetch)).
    pub(crate) fn collect_keeping_head(mut self) -> Deferred<(Response, Vec<u8>)> {
        let Some(body) = self.body.take() else {
            return Deferred::succeed((self, Vec::new()));
        };
        let (resolver, d) = Deferred::new();
        body.deliver(Box::new(Collect {
            body: Vec::new(),
            resolver,
        }));
        d.map(move |bytes| (self, bytes))
    }

    /// Takes the body's source out, leaving the response without one.
    pub(crate) fn take_body(&mut self) -> Option<Box<dyn BodySource>> {
        self.body.take()
    }

    /// Puts a body source in (a decoder around the one taken).
    pub(crate) fn set_body(&mut self, body: Box<dyn BodySource>) {
        self.body = Some(body);
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("version", &self.version)
            .field("headers", &self.headers)
            .field("url", &self.url)
            .field("previous", &self.previous)
            .field("body_unread", &self.body.is_some())
            .finish()
    }
}

/// Collects a body for [`Response::collect_body`].
struct Collect {
    body: Vec<u8>,
    resolver: Resolver<Vec<u8>>,
}

impl BodyReceiver for Collect {
    fn data_received(&mut self, data: &[u8]) {
        self.body.extend_from_slice(data);
    }

    fn body_finished(&mut self, result: Result<(), Failure>) {
        let _ = match result {
            Ok(()) => self.resolver.try_callback(std::mem::take(&mut self.body)),
            Err(failure) => self.resolver.try_errback(failure),
        };
    }
}
