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
//! Invariant: no resource, Deferred or request method is called while a `RefCell` of the
//! channel is borrowed; a request's output reaches the transport only through the channel,
//! in queue order: [`Channel::pump`], or `write_through` for body bytes of the request in
//! front once everything it wrote before is out.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use http::StatusCode;
use torsion::net::{Address, Transport};
use torsion::protocol::Protocol;
use torsion::time::{DelayedCall, ReactorTime};
use torsion::{Failure, Reactor};

use crate::parse::{BodyLength, ChunkedDecoder, RequestHead, parse_request_head};
use crate::request::{self, ProducerState, Request};
use crate::resource::Render;
use crate::site::SiteInner;

/// At most this many requests of one connection are in flight; reading pauses beyond.
pub const MAX_PIPELINED: usize = 16;

/// How much a connection that takes no more requests reads and drops before it stops
/// reading.
const MAX_DROPPED: usize = 1 << 20;

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
    /// Reading is paused: too many requests in flight.
    paused: Cell<bool>,
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
    /// `process` is running: the timers are set once, when it ends.
    processing: Cell<bool>,
    /// A refusal is out and the connection closes after [`REFUSAL_LINGER`]: reading goes
    /// on until then, so the client, still sending its body, reads the answer.
    refused: Cell<bool>,
}

/// Where the parser is.
enum Reading {
    /// Waiting for a request's head.
    Head,
    /// Reading a request's body.
    Body {
        head: Option<Box<RequestHead>>,
        body: BodyReader,
        collected: Vec<u8>,
    },
    /// No more requests on this connection.
    Stopped,
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
        self.pump();
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
            if self.closing.get() || self.paused.get() {
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
            if head_done {
                // The next head gets its own deadline.
                self.cancel_timer();
            }
            match step {
                Step::NeedMore => break,
                Step::Request(head, body) => self.dispatch(head, body),
                Step::Continue => self.send_continue(),
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
        self.arm_timer();
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

    /// No more requests are read on this connection: what arrives is dropped.
    fn stop_reading(&self) {
        self.closing.set(true);
        *self.reading.borrow_mut() = Reading::Stopped;
        self.input.borrow_mut().clear();
    }

    fn cancel_timer(&self) {
        if let Some((_, call)) = self.timer.borrow_mut().take() {
            let _ = call.cancel();
        }
    }

    /// `100 Continue` for a client waiting on `Expect: 100-continue` whose body we want.
    fn send_continue(&self) {
        if !self.queue.borrow().is_empty() {
            self.continue_owed.set(true);
            return;
        }
        if let Some(t) = self.transport() {
            t.write(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
    }

    /// Answers a request that cannot be parsed with `status` and closes.
    fn refuse(&self, status: StatusCode, why: String) {
        *self.reading.borrow_mut() = Reading::Stopped;
        self.closing.set(true);
        self.input.borrow_mut().clear();
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
        self.refused.set(true);
        self.cancel_timer();
        t.write(&response);
        t.lose_write_connection();
        if let Some(reactor) = self.reactor.borrow().clone() {
            reactor.call_later(REFUSAL_LINGER, move || t.lose_connection());
        }
    }

    fn dispatch(&self, head: RequestHead, body: Vec<u8>) {
        let Some(transport) = self.transport() else {
            return;
        };
        let me: Weak<dyn request::Channel> = self.me.clone();
        let request = Request::new(head, body, self.client.clone(), transport.host(), me);
        if request.closes_connection() {
            self.stop_reading();
        }
        self.queue.borrow_mut().push_back(request.clone());
        if self.queue.borrow().len() >= MAX_PIPELINED {
            self.paused.set(true);
            transport.pause_producing();
        }
        let resource = self.site.resource_for(&request);
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
        self.pump();
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
            let (out, finished) = front.take_output();
            if !out.is_empty() {
                transport.write(&out);
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
                self.stop_reading();
                // Requests behind it will not be answered: tell them.
                let behind: Vec<Rc<Request>> = self.queue.borrow_mut().drain(..).collect();
                for request in behind {
                    request.disconnected();
                }
                transport.lose_connection();
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
        if self.queue.borrow().is_empty() && self.continue_owed.replace(false) {
            let waiting = matches!(&*self.reading.borrow(), Reading::Body { collected, .. } if collected.is_empty())
                && self.input.borrow().is_empty();
            if waiting {
                transport.write(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
        }
        if self.paused.get() && self.queue.borrow().len() < MAX_PIPELINED {
            self.paused.set(false);
            transport.resume_producing();
            if let Some(me) = self.me.upgrade()
                && let Some(reactor) = self.reactor.borrow().clone()
            {
                // Requests already buffered are parsed after this call returns.
                reactor.call_soon(move || me.process());
            }
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
        let current = self.timer.borrow().as_ref().map(|(kind, _)| *kind);
        // The head's deadline runs from the head's first byte: more bytes do not reset it.
        if current == want && want != Some(Timeout::Body) {
            return;
        }
        if let Some((_, call)) = self.timer.borrow_mut().take() {
            let _ = call.cancel();
        }
        let Some(kind) = want else { return };
        let delay = match kind {
            Timeout::Head => self.site.config.head_timeout,
            Timeout::Body => self.site.config.body_timeout,
            Timeout::Idle => self.site.config.idle_timeout,
        };
        let Some(delay) = delay else { return };
        let Some(reactor) = self.reactor.borrow().clone() else {
            return;
        };
        let me = self.me.clone();
        let call = reactor.call_later(delay, move || {
            if let Some(me) = me.upgrade() {
                me.timer.borrow_mut().take();
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
    Continue,
    Request(RequestHead, Vec<u8>),
    Refuse(StatusCode, String),
}

/// One step of the parser over `input`: a head, some body, or a complete request.
fn step(reading: &mut Reading, input: &[u8], consumed: &mut usize, site: &SiteInner) -> Step {
    match reading {
        Reading::Stopped => Step::NeedMore,
        Reading::Head => match parse_request_head(input, &site.config.limits) {
            Ok(None) => Step::NeedMore,
            Err(error) => Step::Refuse(error.status(), error.to_string()),
            Ok(Some((head, used))) => {
                *consumed += used;
                let input = &input[used..];
                let body = match head.body {
                    BodyLength::Empty => return Step::Request(head, Vec::new()),
                    BodyLength::Fixed(n) if n > site.config.max_body => {
                        return Step::Refuse(StatusCode::PAYLOAD_TOO_LARGE, too_large(site));
                    }
                    BodyLength::Fixed(n) => BodyReader::Fixed(n),
                    BodyLength::Chunked => BodyReader::Chunked(ChunkedDecoder::new()),
                };
                let expect = head.expect_continue;
                *reading = Reading::Body {
                    head: Some(Box::new(head)),
                    body,
                    collected: Vec::new(),
                };
                if expect && input.is_empty() {
                    Step::Continue
                } else {
                    Step::Progress
                }
            }
        },
        Reading::Body {
            head,
            body,
            collected,
        } => {
            let done = match body {
                BodyReader::Fixed(left) => {
                    let take = (*left).min(input.len() as u64) as usize;
                    collected.extend_from_slice(&input[..take]);
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
                    if collected.len() as u64 + decoded.data.len() as u64 > site.config.max_body {
                        return Step::Refuse(StatusCode::PAYLOAD_TOO_LARGE, too_large(site));
                    }
                    collected.extend_from_slice(decoded.data);
                    let (used, done) = (decoded.consumed, decoded.done);
                    *consumed += used;
                    if used == 0 && !done {
                        return Step::NeedMore;
                    }
                    done
                }
            };
            if !done {
                return Step::Progress;
            }
            let head = head.take();
            let body = std::mem::take(collected);
            *reading = Reading::Head;
            match head {
                Some(head) => Step::Request(*head, body),
                None => Step::NeedMore,
            }
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
        *self.0.reading.borrow_mut() = Reading::Stopped;
        let queue: Vec<Rc<Request>> = self.0.queue.borrow_mut().drain(..).collect();
        for request in queue {
            request.disconnected();
        }
        self.0.transport.borrow_mut().take();
    }
}
