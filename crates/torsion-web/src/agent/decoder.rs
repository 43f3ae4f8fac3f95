//! Content decoding (Twisted's `twisted.web.client.ContentDecoderAgent` with its
//! `GzipDecoder`) around any [`HttpClient`]: asks for `Accept-Encoding: gzip`, and
//! decodes a `Content-Encoding: gzip` body as it streams, through `flate2`.
//!
//! The decoded response has `Content-Encoding` (its last coding, gzip, taken off) and
//! `Content-Length` (the encoded length) removed from its headers. Other encodings pass
//! through untouched. A corrupt or truncated gzip body ends with
//! [`AgentError::Decoding`].
//!
//! Invariant: memory stays bounded whatever the compression ratio: each piece that
//! arrives is decoded into `flate2`'s fixed buffer and handed to the receiver a buffer at
//! a time, never collected. (A receiver that pauses still gets the rest of the piece being
//! decoded, at most one read of compressed input.)

use std::io::Write;
use std::rc::Rc;

use flate2::write::GzDecoder;
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH};
use http::{HeaderMap, HeaderValue, Method};
use torsion::{Deferred, Failure};

use super::body::Body;
use super::error::AgentError;
use super::response::{BodyControl, BodyReceiver, BodySource, Response};
use super::{Agent, HttpClient};

/// Decodes gzip-encoded bodies of the agent it wraps (Twisted's
/// `ContentDecoderAgent(agent, [(b"gzip", GzipDecoder)])`).
///
/// # Examples
///
/// ```
/// use torsion_web::agent::{Agent, ContentDecoderAgent, RedirectAgent};
///
/// let reactor = torsion::Reactor::new().unwrap();
/// // Redirects followed, each response decoded.
/// let agent = RedirectAgent::new(ContentDecoderAgent::new(Agent::new(&reactor)));
/// # let _ = agent;
/// ```
pub struct ContentDecoderAgent<A: HttpClient = Agent> {
    inner: Rc<A>,
}

impl<A: HttpClient> Clone for ContentDecoderAgent<A> {
    fn clone(&self) -> Self {
        ContentDecoderAgent {
            inner: self.inner.clone(),
        }
    }
}

impl<A: HttpClient + 'static> ContentDecoderAgent<A> {
    /// Decodes the gzip bodies of `agent`'s responses.
    pub fn new(agent: A) -> Self {
        ContentDecoderAgent {
            inner: Rc::new(agent),
        }
    }

    /// The wrapped agent (Twisted's `_agent`).
    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// Requests `url` with `Accept-Encoding: gzip` (unless `headers` has an
    /// `Accept-Encoding` of its own) and decodes the response's body if it is gzip
    /// (Twisted's `ContentDecoderAgent.request`).
    pub fn request(
        &self,
        method: Method,
        url: &str,
        mut headers: HeaderMap,
        body: Body,
    ) -> Deferred<Response> {
        if !headers.contains_key(ACCEPT_ENCODING) {
            headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        }
        self.inner
            .request(method, url, headers, body)
            .map(decode_response)
    }
}

impl<A: HttpClient + 'static> HttpClient for ContentDecoderAgent<A> {
    fn request(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Body,
    ) -> Deferred<Response> {
        ContentDecoderAgent::request(self, method, url, headers, body)
    }
}

/// Puts a decoder on `response`'s body if its last content coding is gzip.
fn decode_response(mut response: Response) -> Response {
    let codings: Vec<String> = response
        .headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .collect();
    let gzip = codings.last().is_some_and(|c| c == "gzip" || c == "x-gzip");
    if !gzip {
        return response;
    }
    let rest = codings[..codings.len() - 1].join(", ");
    response.headers.remove(CONTENT_ENCODING);
    response.headers.remove(CONTENT_LENGTH);
    if !rest.is_empty()
        && let Ok(value) = HeaderValue::from_str(&rest)
    {
        response.headers.insert(CONTENT_ENCODING, value);
    }
    if let Some(source) = response.take_body() {
        response.set_body(Box::new(GzipBody(source)));
    }
    response
}

/// A gzip-encoded body, decoded as it is delivered.
struct GzipBody(Box<dyn BodySource>);

impl BodySource for GzipBody {
    fn deliver(self: Box<Self>, receiver: Box<dyn BodyReceiver>) -> BodyControl {
        self.0.deliver(Box::new(Gunzip {
            decoder: GzDecoder::new(Forward(receiver)),
            control: None,
            received: false,
            failed: false,
        }))
    }
}

/// Hands what the decoder writes to the receiver.
struct Forward(Box<dyn BodyReceiver>);

impl Write for Forward {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !buf.is_empty() {
            self.0.data_received(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decodes a gzip body on its way to the receiver (Twisted's `_GzipProtocol`).
struct Gunzip {
    decoder: GzDecoder<Forward>,
    control: Option<BodyControl>,
    received: bool,
    failed: bool,
}

impl Gunzip {
    fn fail(&mut self, why: String) {
        self.failed = true;
        if let Some(control) = &self.control {
            control.stop();
        }
        self.decoder
            .get_mut()
            .0
            .body_finished(Err(Failure::new(AgentError::Decoding(why))));
    }
}

impl BodyReceiver for Gunzip {
    fn body_started(&mut self, control: BodyControl) {
        self.control = Some(control.clone());
        self.decoder.get_mut().0.body_started(control);
    }

    fn data_received(&mut self, data: &[u8]) {
        if self.failed {
            return;
        }
        self.received = true;
        if let Err(error) = self.decoder.write_all(data) {
            self.fail(format!("bad gzip data: {error}"));
        }
    }

    fn body_finished(&mut self, result: Result<(), Failure>) {
        if self.failed {
            return;
        }
        match result {
            Ok(()) if !self.received => self.decoder.get_mut().0.body_finished(Ok(())),
            Ok(()) => match self.decoder.try_finish() {
                Ok(()) => self.decoder.get_mut().0.body_finished(Ok(())),
                Err(error) => self.fail(format!("the gzip stream is incomplete: {error}")),
            },
            Err(failure) => {
                self.failed = true;
                self.decoder.get_mut().0.body_finished(Err(failure));
            }
        }
    }
}
