//! One HTTP/1.x connection (Twisted's `http.HTTPChannel`): requests parsed as they arrive,
//! pipelined ones answered strictly in order, keep-alive, bad requests refused with their
//! status and a close, and the timeouts that keep a slow or idle client from holding the
//! connection.
//!
//! Every complete request in one read is parsed and rendered in that read, so the
//! responses of a pipelined burst go out together (the transport coalesces them). A
//! response waits in its request until every earlier one is finished; at most
//! [`MAX_PIPELINED`] requests are in flight, after which reading pauses.
//!
//! A body is collected before its resource renders, or, for a resource that
//! [streams](crate::Resource::streams_body) them, the resource renders once the head is
//! in and the body goes to its request as it is read (`crate::body`); reading pauses while
//! more than [`BODY_BACKLOG`] of it waits for the resource.
//!
//! Invariant: no resource, Deferred or request method is called while a `RefCell` of the
//! channel is borrowed; a request's output reaches the transport only through the channel,
//! in queue order: [`Channel::pump`], or `write_through` for body bytes of the request in
//! front once everything it wrote before is out.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::time::Duration;

use http::StatusCode;
use torsion::net::{Address, Transport};
use torsion::protocol::Protocol;
use torsion::time::{DelayedCall, ReactorTime};
use torsion::{Failure, Reactor};

use crate::body::{BODY_BACKLOG, RequestBodyError};
use crate::parse::{BodyLength, ChunkedDecoder, RequestHead, parse_request_head};
use crate::request::{self, ProducerState, Request};
use crate::resource::{Render, Resource};
use crate::site::SiteInner;

/// At most this many requests of one connection are in flight; reading pauses beyond.
pub const MAX_PIPELINED: usize = 16;

/// How much a connection that takes no more requests reads and drops before it stops
/// reading.
const MAX_DROPPED: usize = 1 << 20;

/// The largest output buffer kept for the next response.
const MAX_SPARE: usize = 64 * 1024;

/// How long a refused connection reads and drops what the client still sends before it
/// closes (so the refusal is not lost to a reset).
const REFUSAL_LINGER: f64 = 2.0;

/// The protocol of one HTTP connection, built by a [`Site`](crate::Site).
pub(crate) struct HttpChannel(Rc<Channel>);

impl HttpChannel {
    pub(crate) fn new(site: Rc<SiteInner>, client: Address) -> HttpChannel {
        HttpChannel(Rc::new_cyclic(|me| Channel {
            me: me.clone(),
            site,
            client,
            transport: RefCell::new(None),
            reactor: RefCell::new(None),
            input: RefCell::new(Vec::new()),
            reading: RefCell::new(Reading::Head),
            queue: RefCell::new(VecDeque::new()),
            timer: RefCell::new(None),
            paused: Cell::new(false),
            closing: Cell::new(false),
            refusal: RefCell::new(None),
            continue_owed: Cell::new(false),
            output_blocked: Cell::new(false),
            dropped: Cell::new(0),
            processing: Cell::new(false),
            refused: Cell::new(false),
            body_blocked: Cell::new(false),
            transport_paused: Cell::new(false),
            cut_body: Cell::new(false),
            spare: RefCell::new(Vec::new()),
            pump_owed: Cell::new(false),
            since: Cell::new(0.0),
        }))
    }
}

pub(crate) struct Channel {
    me: Weak<Channel>,
    site: Rc<SiteInner>,
    client: Address,
    transport: RefCell<Option<Transport>>,
    reactor: RefCell<Option<Reactor>>,
    input: RefCell<Vec<u8>>,
    reading: RefCell<Reading>,
    /// Requests in flight, oldest first: only the first may write to the transport.
    queue: RefCell<VecDeque<Rc<Request>>>,
    /// The running timeout, if any, and what it is for.
    timer: RefCell<Option<(Timeout, DelayedCall)>>,
    /// Parsing is paused: too many requests in flight.
    paused: Cell<bool>,
    /// Parsing is paused: a streamed body's resource has [`BODY_BACKLOG`] bytes waiting.
    body_blocked: Cell<bool>,
    /// The transport is paused, for either of the two above.
    transport_paused: Cell<bool>,
    /// A body was left unread (its response finished first, or it was refused): the
    /// connection closes lingering, so the client reads the response, not a reset.
    cut_body: Cell<bool>,
    /// An output buffer lent to each new request and taken back by [`Channel::pump`]:
    /// responses are formatted without an allocation each.
    spare: RefCell<Vec<u8>>,
    /// Output became ready while `process` ran: it pumps once it ends.
    pump_owed: Cell<bool>,
    /// When the running timer's period began (the reactor's seconds): the head's first
    /// byte, or the last activity for the body and idle timers.
    since: Cell<f64>,
    /// A response said close, or a request was refused: no more requests are read.
    closing: Cell<bool>,
    /// The answer to a refused request, sent once the responses before it are out.
    refusal: RefCell<Option<Vec<u8>>>,
    /// A `100 Continue` is owed to the request whose body is being read, once the requests
    /// before it are answered (and if no body byte came first).
    continue_owed: Cell<bool>,
    /// Parsing waits because the transport holds more than its high-water mark of output.
    output_blocked: Cell<bool>,
    /// Bytes read and dropped since reading stopped.
    dropped: Cell<usize>,
    /// `process` is running: the timers are set, and the output pumped, once, when it
    /// ends.
    processing: Cell<bool>,
    /// A refusal is out and the connection closes after [`REFUSAL_LINGER`]: reading goes
    /// on until then, so the client, still sending its body, reads the answer.
    refused: Cell<bool>,
}

/// Where the parser is.
enum Reading {
    /// Waiting for a request's head.
    Head,
    /// Reading a request's body: `read` holds what was read (all of it when collecting,
    /// what the last step read when streaming).
    Body {
        framing: BodyReader,
        read: Vec<u8>,
        target: BodyTarget,
    },
    /// No more requests on this connection.
    Stopped,
}

/// Whom a body is read for.
enum BodyTarget {
    /// Collected (up to the site's `max_body`), then the resource renders the request.
    Collect(Rc<Request>, Rc<dyn Resource>),
    /// Streamed to the request, which was rendered at its head.
    Stream(Rc<Request>),
}

impl Reading {
    /// The request whose body is being streamed, if one is.
    fn streaming(&self) -> Option<Rc<Request>> {
        match self {
            Reading::Body {
                target: BodyTarget::Stream(request),
                ..
            } => Some(request.clone()),
            _ => None,
        }
    }
}

enum BodyReader {
    Fixed(u64),
    Chunked(ChunkedDecoder),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timeout {
    /// The head did not arrive in time (a slowloris client).
    Head,
    /// The body stalled.
    Body,
    /// Nothing happens on a kept-alive connection.
    Idle,
}

impl request::Channel for Channel {
    fn output_ready(&self) {
        if self.processing.get() {
            // Once, when the burst is parsed: its responses go out together.
            self.pump_owed.set(true);
        } else {
            self.pump();
        }
    }

    fn body_wanted(&self) {
        if !self.body_blocked.get() {
            return;
        }
        let backlog = self
            .reading
            .borrow()
            .streaming()
            .map(|r| r.body().backlog());
        if backlog.is_none_or(|b| b < BODY_BACKLOG) {
            self.body_blocked.set(false);
            self.sync_pause();
            self.process_soon();
        }
    }

    fn write_through(&self, request: &Request, data: &[u8]) -> bool {
        let in_front = self
            .queue
            .borrow()
            .front()
            .is_some_and(|front| std::ptr::eq(Rc::as_ptr(front), request));
        let Some(transport) = self.transport().filter(|_| in_front) else {
            return false;
        };
        transport.write(data);
        true
    }
}

impl Channel {
    fn transport(&self) -> Option<Transport> {
        self.transport.borrow().clone()
    }

    /// Parses and dispatches what the input holds.
    fn process(&self) {
        self.output_blocked.set(false);
        self.processing.set(true);
        // Requests are parsed from `input[parsed..]`; the parsed bytes are removed once, at
        // the end, not after each request of a pipelined burst.
        let mut parsed = 0;
        loop {
            if self.closing.get() || self.paused.get() || self.body_blocked.get() {
                break;
            }
            if self.output_over_high_water() {
                self.block_on_output();
                break;
            }
            let (step, head_done) = {
                let mut reading = self.reading.borrow_mut();
                let input = self.input.borrow();
                if parsed > input.len() {
                    break;
                }
                let was_head = matches!(*reading, Reading::Head);
                let step = step(&mut reading, &input[parsed..], &mut parsed, &self.site);
                let head_done = was_head && !matches!(step, Step::NeedMore | Step::Refuse(..));
                (step, head_done)
            };
            if head_done && self.timer_kind() == Some(Timeout::Head) {
                // The next head gets its own deadline.
                self.cancel_timer();
            }
            self.stream_body();
            match step {
                Step::NeedMore => break,
                Step::Request(head) => {
                    if let Some((request, resource)) = self.new_request(head) {
                        self.render(request, resource);
                    }
                }
                Step::Head(head) => {
                    let rest = self.input.borrow().len() - parsed.min(self.input.borrow().len());
                    self.begin_body(head, rest == 0);
                }
                Step::BodyDone => self.end_body(),
                Step::Refuse(status, why) => {
                    self.refuse(status, why);
                    break;
                }
                Step::Progress => {}
            }
        }
        {
            let mut input = self.input.borrow_mut();
            let parsed = parsed.min(input.len());
            input.drain(..parsed);
        }
        self.processing.set(false);
        if self.pump_owed.replace(false) {
            self.pump();
        } else {
            self.arm_timer();
        }
    }

    /// Whether the transport holds more output than its high-water mark: a client that
    /// pipelines and does not read gets no more requests answered until it reads.
    fn output_over_high_water(&self) -> bool {
        self.transport()
            .is_some_and(|t| t.buffered() > torsion::net::tcp::HIGH_WATER_MARK)
    }

    /// Parses again once the output has drained (looked at every 10 ms meanwhile: the
    /// transport's own producer slot belongs to the responses).
    fn block_on_output(&self) {
        if self.output_blocked.replace(true) {
            return;
        }
        let me = self.me.clone();
        if let Some(reactor) = self.reactor.borrow().clone() {
            reactor.call_later(0.01, move || {
                if let Some(me) = me.upgrade()
                    && me.output_blocked.get()
                {
                    me.process();
                }
            });
        }
    }

    /// No more requests are read on this connection: what arrives is dropped (and read,
    /// so that closing does not reset the connection). A body being read is cut: a
    /// streamed one ends with [`RequestBodyError::NotRead`].
    fn stop_reading(&self) {
        self.closing.set(true);
        let was = std::mem::replace(&mut *self.reading.borrow_mut(), Reading::Stopped);
        self.input.borrow_mut().clear();
        self.paused.set(false);
        self.body_blocked.set(false);
        self.sync_pause();
        if let Reading::Body { target, .. } = was {
            self.cut_body.set(true);
            if let BodyTarget::Stream(request) = target {
                request.body().end(Err(RequestBodyError::NotRead));
                request.body().flush();
            }
        }
    }

    /// Pauses the transport while parsing is paused (too many requests in flight, or a
    /// streamed body backed up), resumes it otherwise.
    fn sync_pause(&self) {
        let want = self.paused.get() || self.body_blocked.get();
        if self.transport_paused.replace(want) == want {
            return;
        }
        if let Some(t) = self.transport() {
            if want {
                t.pause_producing();
            } else {
                t.resume_producing();
            }
        }
    }

    /// Parses what is buffered once the current call returns.
    fn process_soon(&self) {
        if let Some(me) = self.me.upgrade()
            && let Some(reactor) = self.reactor.borrow().clone()
        {
            reactor.call_soon(move || me.process());
        }
    }

    /// Hands what the last step read of a streamed body to its request; parsing stops
    /// while [`BODY_BACKLOG`] of it waits for the resource.
    fn stream_body(&self) {
        let taken = match &mut *self.reading.borrow_mut() {
            Reading::Body {
                read,
                target: BodyTarget::Stream(request),
                ..
            } if !read.is_empty() => Some((request.clone(), std::mem::take(read))),
            _ => None,
        };
        let Some((request, data)) = taken else { return };
        request.body().push(data);
        request.body().flush();
        if request.body().backlog() >= BODY_BACKLOG && !self.closing.get() {
            self.body_blocked.set(true);
            self.sync_pause();
        }
    }

    /// Whether the request whose body is read is the one being answered: nothing before
    /// it is in flight (and, streamed, its own response has not begun).
    fn body_is_next(&self) -> bool {
        let queue = self.queue.borrow();
        match self.reading.borrow().streaming() {
            Some(request) => {
                queue.front().is_some_and(|f| Rc::ptr_eq(f, &request)) && !request.head_started()
            }
            None => queue.is_empty(),
        }
    }

    fn cancel_timer(&self) {
        if let Some((_, call)) = self.timer.borrow_mut().take() {
            let _ = call.cancel();
        }
    }

    /// `100 Continue` for a client waiting on `Expect: 100-continue` whose body we want.
    fn send_continue(&self) {
        if !self.body_is_next() {
            self.continue_owed.set(true);
            return;
        }
        if let Some(t) = self.transport() {
            t.write(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
    }

    /// Answers a request that cannot be parsed with `status` and closes.
    fn refuse(&self, status: StatusCode, why: String) {
        let streaming = self.reading.borrow().streaming();
        let error = if status == StatusCode::REQUEST_TIMEOUT {
            RequestBodyError::TimedOut
        } else {
            RequestBodyError::Malformed(why.clone())
        };
        if let Some(request) = &streaming {
            // Before its receiver hears of the end (stop_reading tells it), since the
            // resource may answer from there: that answer is the connection's last.
            request.close_after();
            request.body().end(Err(error.clone()));
        }
        self.stop_reading();
        let logger = torsion::log::Logger::new("torsion_web::channel");
        logger.info(format_args!(
            "refused a request from {} with {status}: {why}",
            self.client
        ));
        let body = format!(
            "{} {}: {why}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        if let Some(request) = streaming {
            // Its resource was answering already: the request answers the refusal itself
            // (or, its response begun, is cut short), so the responses stay in order.
            request.refuse(status, &body, error);
            return;
        }
        let response = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nDate: {}\r\n\r\n{body}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("Error"),
            body.len(),
            crate::date::now().to_str().unwrap_or(""),
        );
        // After every response already in flight (they stay in order).
        if self.queue.borrow().is_empty() {
            self.send_refusal(response.into_bytes());
        } else {
            *self.refusal.borrow_mut() = Some(response.into_bytes());
        }
    }

    /// Writes a refusal and closes without destroying it: the sending side is shut once it
    /// is out, and what the client still sends is read and dropped for a moment, since
    /// closing with unread input would reset the connection and lose the answer.
    fn send_refusal(&self, response: Vec<u8>) {
        let Some(t) = self.transport() else { return };
        t.write(&response);
        self.linger_close(t);
    }

    /// Closes once the output is out, reading and dropping what the client still sends
    /// for [`REFUSAL_LINGER`] (closing with unread input would reset the connection).
    fn linger_close(&self, t: Transport) {
        self.refused.set(true);
        self.cancel_timer();
        t.lose_write_connection();
        if let Some(reactor) = self.reactor.borrow().clone() {
            reactor.call_later(REFUSAL_LINGER, move || t.lose_connection());
        }
    }

    /// The request for `head`, and the resource its path leads to.
    fn new_request(&self, head: RequestHead) -> Option<(Rc<Request>, Rc<dyn Resource>)> {
        let transport = self.transport()?;
        let me: Weak<dyn request::Channel> = self.me.clone();
        let out = std::mem::take(&mut *self.spare.borrow_mut());
        let request = Request::new(head, self.client.clone(), transport.host(), me, out);
        let resource = self.site.resource_for(&request);
        Some((request, resource))
    }

    /// A head with a body: the body is read for the resource, collected or streamed (then
    /// the resource renders now).
    fn begin_body(&self, head: RequestHead, nothing_after: bool) {
        let (length, expect) = (head.body, head.expect_continue);
        let Some((request, resource)) = self.new_request(head) else {
            return;
        };
        let framing = match length {
            BodyLength::Chunked => BodyReader::Chunked(ChunkedDecoder::new()),
            BodyLength::Fixed(n) => BodyReader::Fixed(n),
            BodyLength::Empty => BodyReader::Fixed(0),
        };
        if resource.streams_body(&request) {
            request.body().start_stream();
            *self.reading.borrow_mut() = Reading::Body {
                framing,
                read: Vec::new(),
                target: BodyTarget::Stream(request.clone()),
            };
            self.render(request, resource);
        } else {
            if let BodyLength::Fixed(n) = length
                && n > self.site.config.max_body
            {
                self.refuse(StatusCode::PAYLOAD_TOO_LARGE, too_large(&self.site));
                return;
            }
            *self.reading.borrow_mut() = Reading::Body {
                framing,
                read: Vec::new(),
                target: BodyTarget::Collect(request, resource),
            };
        }
        if expect && nothing_after && matches!(*self.reading.borrow(), Reading::Body { .. }) {
            self.send_continue();
        }
    }

    /// The body was read whole: a collected one is rendered, a streamed one ends.
    fn end_body(&self) {
        let reading = std::mem::replace(&mut *self.reading.borrow_mut(), Reading::Head);
        let Reading::Body { read, target, .. } = reading else {
            return;
        };
        match target {
            BodyTarget::Collect(request, resource) => {
                request.body().set_content(read);
                self.render(request, resource);
            }
            BodyTarget::Stream(request) => {
                request.body().push(read);
                request.body().end(Ok(()));
                request.body().flush();
                // Nothing more of this body comes: what of it still waits for the resource
                // (bounded, since reading stopped past BODY_BACKLOG) no longer holds up the
                // requests after it.
                if self.body_blocked.replace(false) {
                    self.sync_pause();
                }
                if request.closes_connection() {
                    self.stop_reading();
                }
            }
        }
    }

    /// Queues the request and renders it.
    fn render(&self, request: Rc<Request>, resource: Rc<dyn Resource>) {
        if request.closes_connection() && !request.body().is_incomplete() {
            self.stop_reading();
        }
        self.queue.borrow_mut().push_back(request.clone());
        let rendered =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| resource.render(&request)));
        match rendered {
            Ok(Render::Body(body)) => {
                let _ = request.respond(&body);
            }
            Ok(Render::Later) => {}
            Ok(Render::Deferred(d)) => {
                let r = request.clone();
                let outcome = d.add_callbacks(
                    move |body: Vec<u8>| {
                        let _ = r.respond(&body);
                        Ok::<(), Failure>(())
                    },
                    {
                        let r = request.clone();
                        move |failure: Failure| {
                            r.fail(&failure);
                            Ok::<(), Failure>(())
                        }
                    },
                );
                drop(outcome);
            }
            Err(payload) => request.fail(&Failure::from_panic(&*payload)),
        }
        let full = self.queue.borrow().len() >= MAX_PIPELINED;
        if self.processing.get() && !request.closes_connection() && !full {
            self.pump_owed.set(true);
        } else {
            // A response that closes stops the parsing of what follows it now; a full
            // queue lets the finished responses out before it counts.
            self.pump();
        }
        if self.queue.borrow().len() >= MAX_PIPELINED {
            self.paused.set(true);
            self.sync_pause();
        }
    }

    /// Writes the output of the requests at the front of the queue, in order, and moves
    /// on past the finished ones.
    fn pump(&self) {
        let Some(transport) = self.transport() else {
            return;
        };
        loop {
            let front = self.queue.borrow().front().cloned();
            let Some(front) = front else { break };
            let spare = std::mem::take(&mut *self.spare.borrow_mut());
            let (mut out, finished) = front.take_output(spare);
            if !out.is_empty() {
                transport.write(&out);
            }
            if out.capacity() <= MAX_SPARE {
                out.clear();
                *self.spare.borrow_mut() = out;
            }
            match front.take_producer() {
                ProducerState::Pending(producer, streaming) => {
                    if let Err(failure) = transport.register_producer(producer, streaming) {
                        front.fail(&failure);
                    }
                }
                ProducerState::Released => transport.unregister_producer(),
                ProducerState::None | ProducerState::Registered => {}
            }
            if !finished {
                break;
            }
            if front.release_producer() {
                transport.unregister_producer();
            }
            self.queue.borrow_mut().pop_front();
            self.site.log_access(&front);
            if front.closes_connection() {
                // Nothing goes out after this response: the requests behind it leave the
                // queue, and a refusal waiting for them is dropped, before anyone is told
                // (what they run may answer, and so pump again).
                let behind: Vec<Rc<Request>> = self.queue.borrow_mut().drain(..).collect();
                self.refusal.borrow_mut().take();
                // They will not be answered: tell them.
                for request in behind {
                    request.disconnected();
                }
                self.stop_reading();
                if self.cut_body.get() {
                    self.linger_close(transport);
                } else {
                    transport.lose_connection();
                }
                return;
            }
        }
        let refusal = if self.queue.borrow().is_empty() {
            self.refusal.borrow_mut().take()
        } else {
            None
        };
        if let Some(refusal) = refusal {
            self.send_refusal(refusal);
            return;
        }
        if self.continue_owed.get() && self.body_is_next() {
            self.continue_owed.set(false);
            let waiting = matches!(&*self.reading.borrow(), Reading::Body { read, .. } if read.is_empty())
                && self.input.borrow().is_empty();
            if waiting {
                transport.write(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
        }
        if self.paused.get() && self.queue.borrow().len() < MAX_PIPELINED {
            self.paused.set(false);
            self.sync_pause();
            // Requests already buffered are parsed after this call returns.
            self.process_soon();
        }
        self.arm_timer();
    }

    /// Starts the timeout the state calls for: the head's, the body's, or the idle one.
    fn arm_timer(&self) {
        if self.processing.get() {
            return;
        }
        let want = if self.closing.get() {
            None
        } else {
            match &*self.reading.borrow() {
                Reading::Stopped => None,
                // A streamed body backed up waits for its resource, not for the client.
                Reading::Body { .. } if self.body_blocked.get() => None,
                Reading::Body { .. } => Some(Timeout::Body),
                // Nothing is timed while a request is being answered or parsing waits.
                _ if !self.queue.borrow().is_empty()
                    || self.paused.get()
                    || self.output_blocked.get() =>
                {
                    None
                }
                Reading::Head
                    if self
                        .input
                        .borrow()
                        .iter()
                        .any(|b| !matches!(b, b'\r' | b'\n')) =>
                {
                    Some(Timeout::Head)
                }
                Reading::Head => Some(Timeout::Idle),
            }
        };
        let current = self.timer_kind();
        let Some(reactor) = self.reactor.borrow().clone() else {
            return;
        };
        if current == want {
            // The head's deadline runs from the head's first byte: more bytes do not
            // reset it. The body's and the idle one run from the last activity: the
            // running timer is kept, and looks at `since` when it fires (no timer made
            // anew per request or per read).
            if want != Some(Timeout::Head) {
                self.since.set(reactor.seconds());
            }
            return;
        }
        if let Some((_, call)) = self.timer.borrow_mut().take() {
            let _ = call.cancel();
        }
        let Some(kind) = want else { return };
        let Some(delay) = self.timeout_of(kind) else {
            return;
        };
        self.since.set(reactor.seconds());
        self.schedule(&reactor, kind, delay);
    }

    fn timer_kind(&self) -> Option<Timeout> {
        self.timer.borrow().as_ref().map(|(kind, _)| *kind)
    }

    fn timeout_of(&self, kind: Timeout) -> Option<Duration> {
        match kind {
            Timeout::Head => self.site.config.head_timeout,
            Timeout::Body => self.site.config.body_timeout,
            Timeout::Idle => self.site.config.idle_timeout,
        }
    }

    /// Runs the timer `kind` for `delay`: when it fires, the time since `since` decides
    /// whether it timed out or runs on for the rest.
    fn schedule(&self, reactor: &Reactor, kind: Timeout, delay: Duration) {
        let me = self.me.clone();
        let call = reactor.call_later(delay, move || {
            let Some(me) = me.upgrade() else { return };
            me.timer.borrow_mut().take();
            let (Some(timeout), Some(reactor)) = (me.timeout_of(kind), me.reactor.borrow().clone())
            else {
                return;
            };
            let idle = reactor.seconds() - me.since.get();
            let left = timeout.as_secs_f64() - idle;
            if left > 0.001 {
                me.schedule(&reactor, kind, Duration::from_secs_f64(left));
            } else {
                me.timed_out(kind);
            }
        });
        *self.timer.borrow_mut() = Some((kind, call));
    }

    fn timed_out(&self, kind: Timeout) {
        match kind {
            Timeout::Idle => {
                *self.reading.borrow_mut() = Reading::Stopped;
                if let Some(t) = self.transport() {
                    t.lose_connection();
                }
            }
            Timeout::Head | Timeout::Body => {
                self.refuse(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request did not arrive within its {} timeout",
                        if kind == Timeout::Head {
                            "header"
                        } else {
                            "body"
                        }
                    ),
                );
            }
        }
    }
}

/// What one parsing step found.
enum Step {
    NeedMore,
    Progress,
    /// A complete request without a body.
    Request(RequestHead),
    /// A head whose body follows.
    Head(RequestHead),
    /// The body being read is complete.
    BodyDone,
    Refuse(StatusCode, String),
}

/// One step of the parser over `input`: a head, or some of a body into `read`.
fn step(reading: &mut Reading, input: &[u8], consumed: &mut usize, site: &SiteInner) -> Step {
    match reading {
        Reading::Stopped => Step::NeedMore,
        Reading::Head => match parse_request_head(input, &site.config.limits) {
            Ok(None) => Step::NeedMore,
            Err(error) => Step::Refuse(error.status(), error.to_string()),
            Ok(Some((head, used))) => {
                *consumed += used;
                if head.body == BodyLength::Empty {
                    Step::Request(head)
                } else {
                    Step::Head(head)
                }
            }
        },
        Reading::Body {
            framing,
            read,
            target,
        } => {
            // A streamed body has no limit but its resource's.
            let limit = match target {
                BodyTarget::Collect(..) => Some(site.config.max_body),
                BodyTarget::Stream(_) => None,
            };
            let done = match framing {
                BodyReader::Fixed(left) => {
                    let take = (*left).min(input.len() as u64) as usize;
                    read.extend_from_slice(&input[..take]);
                    *consumed += take;
                    *left -= take as u64;
                    if *left > 0 && take == 0 {
                        return Step::NeedMore;
                    }
                    *left == 0
                }
                BodyReader::Chunked(decoder) => {
                    let decoded = match decoder.decode(input) {
                        Ok(decoded) => decoded,
                        Err(error) => {
                            return Step::Refuse(StatusCode::BAD_REQUEST, error.to_string());
                        }
                    };
                    if let Some(limit) = limit
                        && read.len() as u64 + decoded.data.len() as u64 > limit
                    {
                        return Step::Refuse(StatusCode::PAYLOAD_TOO_LARGE, too_large(site));
                    }
                    read.extend_from_slice(decoded.data);
                    let (used, done) = (decoded.consumed, decoded.done);
                    *consumed += used;
                    if used == 0 && !done {
                        return Step::NeedMore;
                    }
                    done
                }
            };
            if done { Step::BodyDone } else { Step::Progress }
        }
    }
}

fn too_large(site: &SiteInner) -> String {
    format!(
        "the body is over this site's limit of {} bytes",
        site.config.max_body
    )
}

impl Protocol for HttpChannel {
    fn connection_made(&mut self, transport: Transport) {
        *self.0.reactor.borrow_mut() = Reactor::current();
        // Reading stops while the responses are backed up (a client that does not read).
        transport.throttle_reading(true);
        *self.0.transport.borrow_mut() = Some(transport);
        self.0.arm_timer();
    }

    fn data_received(&mut self, data: &[u8]) {
        if matches!(*self.0.reading.borrow(), Reading::Stopped) {
            // Read and dropped, so that closing does not reset the connection under the
            // last response; past a limit, reading stops and TCP slows the client down.
            let dropped = self.0.dropped.get() + data.len();
            self.0.dropped.set(dropped);
            if dropped > MAX_DROPPED
                && !self.0.refused.get()
                && let Some(t) = self.0.transport()
            {
                self.0.transport_paused.set(true);
                t.pause_producing();
            }
            return;
        }
        if !data.is_empty() {
            self.0.continue_owed.set(false);
        }
        self.0.input.borrow_mut().extend_from_slice(data);
        self.0.process();
    }

    fn connection_lost(&mut self, _reason: Failure) {
        if let Some((_, call)) = self.0.timer.borrow_mut().take() {
            let _ = call.cancel();
        }
        let reading = std::mem::replace(&mut *self.0.reading.borrow_mut(), Reading::Stopped);
        let queue: Vec<Rc<Request>> = self.0.queue.borrow_mut().drain(..).collect();
        for request in queue {
            request.disconnected();
        }
        if let Some(request) = reading.streaming() {
            // Answered already, its body still arriving.
            request.body().end(Err(RequestBodyError::Disconnected));
            request.body().flush();
        }
        self.0.transport.borrow_mut().take();
    }
}
