//! One HTTP request and its response (Twisted's `twisted.web.server.Request`, from
//! `http.Request`): what the client asked, and the calls a resource answers with.
//!
//! The request formats its own response (status line, headers, framing: a
//! `Content-Length`, or chunks, or a close for HTTP/1.0) into a buffer; the connection's
//! channel takes that buffer and writes it when every earlier pipelined response is out.
//! Body bytes of a length-framed response skip the buffer once the head is out and the
//! request is first in line: they go to the transport as written (one copy less for each
//! chunk of a streamed file).
//!
//! Invariant: once finished, or once the client is gone, a request accepts no more output:
//! `write` and `finish` return [`RequestDone`] (which a resource may ignore) and never
//! panic.

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::rc::{Rc, Weak};

use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, DATE, LOCATION, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use torsion::net::{Address, Producer};
use torsion::{Deferred, Failure, Resolver};

use crate::body::{RequestBody, RequestBodyError, RequestBodyReceiver};
use crate::parse::{LAST_CHUNK, RequestHead, encode_chunk};

/// Why a request took no more output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestDone {
    /// `finish` was called already.
    Finished,
    /// The client went away first.
    Disconnected,
}

impl fmt::Display for RequestDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestDone::Finished => f.write_str("the request was finished already"),
            RequestDone::Disconnected => {
                f.write_str("the client disconnected before the response was finished")
            }
        }
    }
}

impl std::error::Error for RequestDone {}

/// The connection a request belongs to.
pub(crate) trait Channel {
    /// The request has output, or has finished.
    fn output_ready(&self);
    /// The request's streamed body was given a receiver or resumed: reading may go on.
    fn body_wanted(&self);

    /// Sends body bytes of `request` straight to the transport, if it is the one in
    /// front (so nothing of an earlier response is still to go) and has no output
    /// waiting; says whether it did. Nothing else is called.
    fn write_through(&self, request: &Request, data: &[u8]) -> bool;
}

/// An HTTP request (Twisted's `Request`): read it, then answer with
/// [`set_response_code`](Request::set_response_code), [`set_header`](Request::set_header),
/// [`write`](Request::write) and [`finish`](Request::finish).
pub struct Request {
    head: RequestHead,
    /// Where the path ends in the target (at its `?`, or its end).
    path_end: usize,
    body: RequestBody,
    client: Address,
    host: Address,
    args: OnceCell<HashMap<String, Vec<String>>>,
    prepath: RefCell<Vec<String>>,
    /// Split and decoded when first asked for (a leaf at the root never asks).
    postpath: RefCell<Option<Vec<String>>>,
    response: RefCell<Response>,
    channel: Weak<dyn Channel>,
}

struct Response {
    code: StatusCode,
    /// Set with `set_header`, one value per name, in the order first set (a handful: a
    /// list costs less than a map).
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The status line and headers are in `out` (or were sent).
    head_written: bool,
    chunked: bool,
    finished: bool,
    disconnected: bool,
    /// The connection closes after this response.
    close: bool,
    /// Formatted and not yet taken by the channel.
    out: Vec<u8>,
    waiters: Vec<Resolver<()>>,
    producer: ProducerState,
    /// Body bytes written (for the access log).
    sent: u64,
}

/// A producer writing this request's body, and where it is with the transport.
pub(crate) enum ProducerState {
    None,
    /// Registered with the request; goes to the transport once the request is first in
    /// line.
    Pending(Rc<dyn Producer>, bool),
    /// Registered with the transport.
    Registered,
    /// Unregistered while registered with the transport: the channel unregisters it there.
    Released,
}

impl Request {
    /// A request for `head`; its response is formatted into `out` (a buffer the channel
    /// lends, to save an allocation per response).
    pub(crate) fn new(
        head: RequestHead,
        client: Address,
        host: Address,
        channel: Weak<dyn Channel>,
        out: Vec<u8>,
    ) -> Rc<Request> {
        let path_end = head.target.find('?').unwrap_or(head.target.len());
        let close = !head.keep_alive;
        Rc::new(Request {
            head,
            path_end,
            body: RequestBody::default(),
            client,
            host,
            args: OnceCell::new(),
            prepath: RefCell::new(Vec::new()),
            postpath: RefCell::new(None),
            response: RefCell::new(Response {
                code: StatusCode::OK,
                headers: Vec::new(),
                head_written: false,
                chunked: false,
                finished: false,
                disconnected: false,
                close,
                out,
                waiters: Vec::new(),
                producer: ProducerState::None,
                sent: 0,
            }),
            channel,
        })
    }

    /// The method (Twisted's `method`).
    pub fn method(&self) -> &Method {
        &self.head.method
    }

    /// The request-target as sent, path and query (Twisted's `uri`).
    pub fn uri(&self) -> &str {
        &self.head.target
    }

    /// The path, without the query, not decoded (Twisted's `path`).
    pub fn path(&self) -> &str {
        &self.head.target[..self.path_end]
    }

    /// The query, after the `?`, not decoded.
    fn query(&self) -> Option<&str> {
        self.head.target.get(self.path_end + 1..)
    }

    /// HTTP/1.0 or HTTP/1.1 (Twisted's `clientproto`).
    pub fn version(&self) -> Version {
        self.head.version
    }

    /// The request headers (Twisted's `requestHeaders`).
    pub fn headers(&self) -> &HeaderMap {
        &self.head.headers
    }

    /// The first value of header `name`, if it is text (Twisted's `getHeader`).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The query arguments, each name with its values in order (Twisted's `args`).
    pub fn args(&self) -> &HashMap<String, Vec<String>> {
        self.args.get_or_init(|| {
            let mut args: HashMap<String, Vec<String>> = HashMap::new();
            if let Some(query) = self.query() {
                for (name, value) in form_urlencoded::parse(query.as_bytes()) {
                    args.entry(name.into_owned())
                        .or_default()
                        .push(value.into_owned());
                }
            }
            args
        })
    }

    /// The first value of query argument `name`.
    pub fn arg(&self, name: &str) -> Option<&str> {
        self.args()
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// The value of cookie `name` (Twisted's `getCookie`).
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.head
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    }

    /// The client's address (Twisted's `getClientAddress`).
    pub fn client(&self) -> &Address {
        &self.client
    }

    /// Our address, where the request arrived (Twisted's `getHost`).
    pub fn host_address(&self) -> &Address {
        &self.host
    }

    /// The request body, whole (Twisted's `content`); empty under a resource that
    /// [streams](crate::Resource::streams_body) its bodies, which reads them with
    /// [`deliver_body`](Request::deliver_body).
    pub fn content(&self) -> &[u8] {
        self.body.content()
    }

    /// Gives the body to `receiver` (Twisted's `deliverBody`, on the server side): a
    /// collected body at once; a streamed one as it arrives, paced by
    /// [`pause_body`](Request::pause_body) and [`resume_body`](Request::resume_body).
    /// A streamed body goes to one receiver: another is told
    /// [`RequestBodyError::AlreadyDelivered`](crate::RequestBodyError::AlreadyDelivered).
    pub fn deliver_body(&self, receiver: impl RequestBodyReceiver) {
        self.body.deliver(Box::new(receiver));
        self.wake_body();
    }

    /// Stops delivering a streamed body until [`resume_body`](Request::resume_body)
    /// (Twisted's `pauseProducing` on the body): past
    /// [`BODY_BACKLOG`](crate::BODY_BACKLOG) waiting bytes, the connection stops reading.
    pub fn pause_body(&self) {
        self.body.set_paused(true);
    }

    /// Delivers a paused streamed body again (Twisted's `resumeProducing`).
    pub fn resume_body(&self) {
        self.body.set_paused(false);
        self.body.flush();
        self.wake_body();
    }

    /// The body, for the channel.
    pub(crate) fn body(&self) -> &RequestBody {
        &self.body
    }

    /// The path segments walked so far, decoded (Twisted's `prepath`).
    pub fn prepath(&self) -> Vec<String> {
        self.prepath.borrow().clone()
    }

    /// The path segments not walked yet, decoded (Twisted's `postpath`): under a leaf
    /// resource, the rest of the path.
    pub fn postpath(&self) -> Vec<String> {
        self.with_postpath(|postpath| postpath.clone())
    }

    /// Runs `f` on `postpath`, split from the path the first time.
    fn with_postpath<T>(&self, f: impl FnOnce(&mut Vec<String>) -> T) -> T {
        let mut postpath = self.postpath.borrow_mut();
        let postpath = postpath.get_or_insert_with(|| {
            let path = self.path();
            path.strip_prefix('/')
                .unwrap_or(path)
                .split('/')
                .map(percent_decode)
                .collect()
        });
        f(postpath)
    }

    /// Moves the next segment from `postpath` to `prepath`; `None` at the end.
    pub(crate) fn walk(&self) -> Option<String> {
        let segment =
            self.with_postpath(|postpath| (!postpath.is_empty()).then(|| postpath.remove(0)))?;
        self.prepath.borrow_mut().push(segment.clone());
        Some(segment)
    }

    /// Sets the status (Twisted's `setResponseCode`); ignored once the head is written.
    pub fn set_response_code(&self, code: StatusCode) {
        let mut response = self.response.borrow_mut();
        if !response.head_written {
            response.code = code;
        }
    }

    /// How many body bytes were written so far.
    pub fn bytes_sent(&self) -> u64 {
        self.response.borrow().sent
    }

    /// The status set so far.
    pub fn response_code(&self) -> StatusCode {
        self.response.borrow().code
    }

    /// Sets a response header, replacing any earlier value (Twisted's `setHeader`); an
    /// invalid name or value is logged and ignored, and so is a header set once the head
    /// is written.
    pub fn set_header(&self, name: &str, value: &str) {
        let parsed = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        );
        let (Ok(name), Ok(value)) = parsed else {
            torsion::log::Logger::new("torsion_web::request").warn(format_args!(
                "invalid response header ignored: {name:?}: {value:?}"
            ));
            return;
        };
        let mut response = self.response.borrow_mut();
        if response.head_written {
            return;
        }
        match response.headers.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => response.headers.push((name, value)),
        }
    }

    /// Redirects to `url` with 302 Found (Twisted's `redirect`); finish the request next.
    pub fn redirect(&self, url: &str) {
        self.set_response_code(StatusCode::FOUND);
        self.set_header(LOCATION.as_str(), url);
    }

    /// Writes part of the body (Twisted's `write`); the status line and headers go first.
    ///
    /// # Errors
    ///
    /// [`RequestDone`] once finished or after the client went away; nothing is written.
    pub fn write(&self, data: &[u8]) -> Result<(), RequestDone> {
        let direct = {
            let mut response = self.response.borrow_mut();
            response.check()?;
            self.write_head(&mut response, None);
            !data.is_empty()
                && self.has_body(&response)
                && !response.chunked
                && response.out.is_empty()
        };
        // Once the head is out, a length-framed body need not be copied into `out` and
        // again into the transport: it goes straight there when nothing is ahead of it (a
        // file's chunks, each time the connection asks for more).
        if direct && self.write_direct(data) {
            self.response.borrow_mut().sent += data.len() as u64;
            return Ok(());
        }
        {
            let mut response = self.response.borrow_mut();
            if !data.is_empty() && self.has_body(&response) {
                response.sent += data.len() as u64;
                if response.chunked {
                    encode_chunk(data, &mut response.out);
                } else {
                    response.out.extend_from_slice(data);
                }
            }
        }
        self.wake();
        Ok(())
    }

    fn write_direct(&self, data: &[u8]) -> bool {
        self.channel
            .upgrade()
            .is_some_and(|channel| channel.write_through(self, data))
    }

    /// Ends the response (Twisted's `finish`).
    ///
    /// # Errors
    ///
    /// [`RequestDone`] if finished already or the client went away.
    pub fn finish(&self) -> Result<(), RequestDone> {
        let waiters = {
            let mut response = self.response.borrow_mut();
            response.check()?;
            // HEAD: the length of a GET body is not known here, so none is sent.
            let length = if self.head.method == Method::HEAD {
                None
            } else {
                Some(0)
            };
            self.write_head(&mut response, length);
            if response.chunked {
                response.out.extend_from_slice(LAST_CHUNK);
            }
            response.finished = true;
            std::mem::take(&mut response.waiters)
        };
        self.wake();
        for waiter in waiters {
            let _ = waiter.try_callback(());
        }
        Ok(())
    }

    /// Writes `body` with its length and finishes (what a [`Render::Body`](crate::Render)
    /// does).
    pub(crate) fn respond(&self, body: &[u8]) -> Result<(), RequestDone> {
        {
            let mut response = self.response.borrow_mut();
            response.check()?;
            if !response.head_written {
                self.write_head(&mut response, Some(body.len() as u64));
            }
        }
        self.write(body)?;
        self.finish()
    }

    /// Registers the producer that writes this response's body (Twisted's
    /// `Request.registerProducer`): it goes to the connection once every earlier
    /// pipelined response is out, so its writes are paced by the client's reading (a pull
    /// producer is asked for more each time the connection's buffer empties; a push
    /// producer is paused over the high-water mark).
    ///
    /// # Errors
    ///
    /// [`RequestDone`] once finished or after the client went away.
    pub fn register_producer(
        &self,
        producer: Rc<dyn Producer>,
        streaming: bool,
    ) -> Result<(), RequestDone> {
        {
            let mut response = self.response.borrow_mut();
            response.check()?;
            response.producer = ProducerState::Pending(producer, streaming);
        }
        self.wake();
        Ok(())
    }

    /// Unregisters the producer (Twisted's `Request.unregisterProducer`).
    pub fn unregister_producer(&self) {
        {
            let mut response = self.response.borrow_mut();
            response.producer = match std::mem::replace(&mut response.producer, ProducerState::None)
            {
                ProducerState::Registered => ProducerState::Released,
                _ => ProducerState::None,
            };
        }
        self.wake();
    }

    /// What the channel must do with the producer: a pending one to register with the
    /// transport (then marked registered), or whether a registered one was released.
    pub(crate) fn take_producer(&self) -> ProducerState {
        let mut response = self.response.borrow_mut();
        match std::mem::replace(&mut response.producer, ProducerState::None) {
            ProducerState::Pending(producer, streaming) => {
                response.producer = ProducerState::Registered;
                ProducerState::Pending(producer, streaming)
            }
            ProducerState::Registered => {
                response.producer = ProducerState::Registered;
                ProducerState::None
            }
            other => other,
        }
    }

    /// Whether a producer is still registered with the transport (now forgotten): the
    /// channel unregisters it when the request is done.
    pub(crate) fn release_producer(&self) -> bool {
        let mut response = self.response.borrow_mut();
        matches!(
            std::mem::replace(&mut response.producer, ProducerState::None),
            ProducerState::Registered | ProducerState::Released
        )
    }

    /// Fires when the response is finished, and fails if the client goes away first
    /// (Twisted's `notifyFinish`).
    pub fn notify_finish(&self) -> Deferred<()> {
        let mut response = self.response.borrow_mut();
        if response.finished {
            return Deferred::succeed(());
        }
        if response.disconnected {
            return Deferred::fail(RequestDone::Disconnected);
        }
        let (resolver, d) = Deferred::new();
        response.waiters.push(resolver);
        d
    }

    /// Whether `finish` was called.
    pub fn is_finished(&self) -> bool {
        self.response.borrow().finished
    }

    /// Whether the client went away before the response was finished.
    pub fn is_disconnected(&self) -> bool {
        self.response.borrow().disconnected
    }

    /// The formatted output not yet taken, and whether the request is finished; `spare`
    /// (empty) takes its place, so a buffer goes back and forth instead of being made
    /// anew.
    pub(crate) fn take_output(&self, spare: Vec<u8>) -> (Vec<u8>, bool) {
        let mut response = self.response.borrow_mut();
        (
            std::mem::replace(&mut response.out, spare),
            response.finished,
        )
    }

    /// Whether the connection must close after this response.
    pub(crate) fn closes_connection(&self) -> bool {
        self.response.borrow().close
    }

    /// The client went away: `notify_finish` fails, output is refused.
    pub(crate) fn disconnected(&self) {
        let waiters = {
            let mut response = self.response.borrow_mut();
            if response.finished || response.disconnected {
                return;
            }
            response.disconnected = true;
            response.out.clear();
            std::mem::take(&mut response.waiters)
        };
        self.body.end(Err(RequestBodyError::Disconnected));
        self.body.flush();
        for waiter in waiters {
            let _ = waiter.try_errback(RequestDone::Disconnected);
        }
    }

    /// Fails the request with 500 if nothing was written yet; finishes it either way.
    pub(crate) fn fail(&self, failure: &Failure) {
        torsion::log::Logger::new("torsion_web::request").failure(
            format_args!("rendering {} {} failed", self.method(), self.uri()),
            failure,
        );
        self.end_with_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 Internal Server Error\n",
            failure,
        );
    }

    /// Answers `status` with `text` and closes, for a streamed body the channel refused
    /// (malformed or timed out) while its resource was answering; a response already begun
    /// is cut short instead.
    pub(crate) fn refuse(&self, status: StatusCode, text: &str, why: RequestBodyError) {
        self.close_after();
        self.end_with_error(status, text, &Failure::new(why));
    }

    /// The connection closes after this response (its head says so, if not written yet).
    pub(crate) fn close_after(&self) {
        self.response.borrow_mut().close = true;
    }

    /// Whether the status line and headers were written.
    pub(crate) fn head_started(&self) -> bool {
        self.response.borrow().head_written
    }

    /// Answers `code` with `text` if nothing was written yet; else ends the response
    /// without its proper end, `notify_finish` failing with `failure`.
    fn end_with_error(&self, code: StatusCode, text: &str, failure: &Failure) {
        let written = self.response.borrow().head_written;
        if written {
            // Part of the response is out: end it without its proper end (no last chunk),
            // and close, so the client sees a truncated response, not a complete one.
            let waiters = {
                let mut response = self.response.borrow_mut();
                if response.finished || response.disconnected {
                    return;
                }
                response.close = true;
                response.finished = true;
                std::mem::take(&mut response.waiters)
            };
            self.wake();
            for waiter in waiters {
                let _ = waiter.try_errback(failure.clone());
            }
            return;
        }
        // The resource's headers (a Content-Length, a type) were for another answer.
        self.response.borrow_mut().headers.clear();
        self.set_response_code(code);
        self.set_header(CONTENT_TYPE.as_str(), "text/plain; charset=utf-8");
        let _ = self.respond(text.as_bytes());
    }

    fn wake(&self) {
        if let Some(channel) = self.channel.upgrade() {
            channel.output_ready();
        }
    }

    fn wake_body(&self) {
        if let Some(channel) = self.channel.upgrade() {
            channel.body_wanted();
        }
    }

    fn has_body(&self, response: &Response) -> bool {
        self.head.method != Method::HEAD && status_has_body(response.code)
    }

    /// Formats the status line and headers into the output, once. `length` is the body's
    /// length when known (`finish` without a write: 0).
    fn write_head(&self, response: &mut Response, length: Option<u64>) {
        if response.head_written {
            return;
        }
        response.head_written = true;
        let code = response.code;
        let version = if self.head.version == Version::HTTP_10 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        };
        let has = |name: &HeaderName| response.headers.iter().any(|(n, _)| n == name);
        let mut length_line = None;
        let mut chunked_line = false;
        let mut type_line = false;
        if status_has_body(code) {
            if !has(&CONTENT_LENGTH) {
                match length {
                    Some(n) => length_line = Some(n),
                    None if self.head.version == Version::HTTP_11 => {
                        if self.head.method != Method::HEAD {
                            chunked_line = true;
                            response.chunked = true;
                        }
                    }
                    // HEAD has no body to delimit.
                    None if self.head.method == Method::HEAD => {}
                    // HTTP/1.0 and no length: the end of the body is the close.
                    None => response.close = true,
                }
            }
            type_line = !has(&CONTENT_TYPE);
        }
        if self.body.is_incomplete() {
            // The rest of the body will not be read: the connection cannot carry another
            // request.
            response.close = true;
        }
        let asked_close = response.headers.iter().any(|(n, v)| {
            *n == CONNECTION && v.to_str().is_ok_and(|v| v.eq_ignore_ascii_case("close"))
        });
        response.close |= asked_close;
        // Ours replaces the resource's when the connection closes, or on HTTP/1.0.
        let own_connection = response.close || self.head.version == Version::HTTP_10;
        let has_date = has(&DATE);
        let Response {
            out,
            headers,
            close,
            ..
        } = &mut *response;
        // The usual headers are written straight in, not through `headers`.
        out.reserve(256);
        out.extend_from_slice(version.as_bytes());
        out.push(b' ');
        out.extend_from_slice(code.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(code.canonical_reason().unwrap_or("Unknown").as_bytes());
        out.extend_from_slice(b"\r\n");
        if !has_date {
            out.extend_from_slice(b"date: ");
            crate::date::write_now(out);
            out.extend_from_slice(b"\r\n");
        }
        if let Some(n) = length_line {
            out.extend_from_slice(b"content-length: ");
            write_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        if chunked_line {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        if type_line {
            out.extend_from_slice(b"content-type: text/html\r\n");
        }
        if *close {
            out.extend_from_slice(b"connection: close\r\n");
        } else if self.head.version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        for (name, value) in headers.iter() {
            // Ours replace the resource's: Connection as above, Transfer-Encoding when we
            // chunk.
            if (own_connection && *name == CONNECTION)
                || (chunked_line && *name == TRANSFER_ENCODING)
            {
                continue;
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

impl Response {
    fn check(&self) -> Result<(), RequestDone> {
        if self.disconnected {
            Err(RequestDone::Disconnected)
        } else if self.finished {
            Err(RequestDone::Finished)
        } else {
            Ok(())
        }
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", self.method())
            .field("uri", &self.uri())
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// Appends `n` in decimal.
fn write_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Whether a response with this status has a body (not 1xx, 204 or 304).
fn status_has_body(code: StatusCode) -> bool {
    !(code.is_informational() || code == StatusCode::NO_CONTENT || code == StatusCode::NOT_MODIFIED)
}

/// Decodes `%XX` escapes; a malformed escape stays as it is, bytes that are not UTF-8
/// become U+FFFD.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_are_decoded_and_malformed_ones_kept() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("%2e%2E"), "..");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%41"), "A");
    }
}
