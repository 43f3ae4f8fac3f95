//! One HTTP/1.1 client connection (Twisted's `twisted.web._newclient.HTTP11ClientProtocol`
//! with its `HTTPClientParser`): it writes one request at a time, parses the response
//! head, delivers the body to the response's receiver, and says when the exchange is over
//! and whether the connection can carry another request.
//!
//! A connection is `Idle` (fresh, or kept in the pool: it keeps reading, so a close by the
//! server or stray bytes are seen at once), then waits for a response `Head`, then
//! delivers the `Body`, then is `Idle` again or `Closed`. Everything that happens
//! (bytes, the close, a receiver given or dropped, a pause lifted, a timeout) is an event
//! for one loop, [`Shared::pump`], which works out the next step while the state is
//! borrowed and takes it (firing a Deferred, calling a receiver, handing the connection
//! back) once the borrow is released.
//!
//! Invariant: no `RefCell` borrow of the state is held while user code runs (a receiver,
//! a Deferred's callbacks, a body producer), and the pump is never entered twice: an
//! event that comes from inside a step is left in the state for the running pump to find.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, Method};
use torsion::error::ConnectionDone;
use torsion::net::{Producer, Transport};
use torsion::protocol::Protocol;
use torsion::{Deferred, Failure, Reactor, Resolver};

use super::body::{Body, BodyProducer, BodyWriter};
use super::error::AgentError;
use super::response::{
    BodyControl, BodyFlow, BodyReceiver, BodySource, FailedBody, NoBody, Response,
};
use super::target::Target;
use crate::parse::{ChunkedDecoder, ResponseBody, parse_response_head};

/// A request ready to go on a connection.
pub(crate) struct Outgoing {
    pub(crate) method: Method,
    pub(crate) url: String,
    pub(crate) head: Vec<u8>,
    /// The head asks for the connection to close after this exchange.
    pub(crate) closes: bool,
    pub(crate) body: Body,
}

/// How an exchange ended, for whoever handed the connection out.
pub(crate) struct Ending {
    /// The connection, if it can carry another request (the response was read to its
    /// end on a kept-alive connection and the request was written whole).
    pub(crate) conn: Option<HttpConnection>,
    /// Whether a response head had arrived.
    pub(crate) answered: bool,
}

/// Called once when an exchange is over.
pub(crate) type OnDone = Box<dyn FnOnce(Ending)>;

/// The head of a request (Twisted's `Request._writeHeaders`): the request line, the
/// caller's headers less the framing ones, `Host`, the body's framing and, when the
/// connection is not to be kept, `Connection: close`; and whether it says so.
pub(crate) fn request_head(
    method: &Method,
    target: &Target,
    headers: &HeaderMap,
    body: &Body,
    persistent: bool,
) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut close = !persistent;
    for (name, value) in headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        if name == CONNECTION {
            close |= value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !headers.contains_key(HOST) {
        out.extend_from_slice(b"Host: ");
        out.extend_from_slice(target.authority.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let length = match body {
        Body::Empty => {
            let expects_body =
                *method == Method::POST || *method == Method::PUT || method.as_str() == "PATCH";
            expects_body.then_some(0)
        }
        Body::Bytes(bytes) => Some(bytes.len() as u64),
        Body::Producer(producer) => match producer.length() {
            Some(n) => Some(n),
            None => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                None
            }
        },
    };
    if let Some(n) = length {
        out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (out, close)
}

/// A client connection: a cheap handle, held by the pool, the request in flight and the
/// response's body.
#[derive(Clone)]
pub(crate) struct HttpConnection(Rc<Shared>);

pub(crate) struct Shared {
    reactor: Reactor,
    state: RefCell<State>,
    pumping: Cell<bool>,
}

struct State {
    transport: Option<Transport>,
    lost: bool,
    phase: Phase,
    /// What has arrived and not been used.
    input: Vec<u8>,
    /// The connection's end, once it came, until the pump has dealt with it.
    eof: Option<Failure>,
    /// The current (or last) exchange's number.
    seq: u64,
    /// How many requests this connection has carried.
    requests: u64,
    /// The pool's: called if the connection ends while idle.
    idle_hook: Option<Box<dyn FnOnce()>>,
    /// Whether the transport is paused by us.
    read_paused: bool,
    close_waiters: Vec<Resolver<()>>,
    /// An exchange that failed before its body was given a receiver: the failure, for the
    /// receiver that may still come.
    unread: Option<(u64, Failure)>,
}

enum Phase {
    Idle,
    Head(Exchange),
    Body(Exchange),
    Closed,
}

/// Where a response's body goes.
enum Slot {
    /// No receiver yet: the connection is paused.
    Waiting,
    Attached(Box<dyn BodyReceiver>),
    /// Taken out to be called.
    Busy,
    /// The response was dropped with its body unread.
    Dropped,
}

/// One request and its response.
struct Exchange {
    seq: u64,
    method: Method,
    url: String,
    reused: bool,
    resolver: Option<Resolver<Response>>,
    received_any: bool,
    answered: bool,
    framing: ResponseBody,
    chunks: ChunkedDecoder,
    remaining: u64,
    complete: bool,
    keep_alive: bool,
    slot: Slot,
    started: bool,
    paused: bool,
    abort: Option<Failure>,
    /// The request said `Connection: close`: no other request goes on this connection
    /// (RFC 9112 §9.6), whatever the response says.
    closes: bool,
    request_written: bool,
    producer: Option<(Rc<dyn BodyProducer>, BodyWriter)>,
    on_done: Option<OnDone>,
}

/// What an exchange's end leaves to do once the borrow is released.
struct Done {
    on_done: Option<OnDone>,
    ending: Ending,
    stop: Option<Rc<dyn BodyProducer>>,
}

impl Done {
    fn run(self) {
        if let Some(producer) = self.stop {
            producer.stop_producing();
        }
        if let Some(on_done) = self.on_done {
            on_done(self.ending);
        }
    }
}

/// The pump's next step.
enum Step {
    Wait,
    IdleLost(Box<dyn FnOnce()>),
    Head {
        resolver: Option<Resolver<Response>>,
        result: Result<Response, Failure>,
        done: Option<Done>,
    },
    Started(u64, Box<dyn BodyReceiver>, BodyControl),
    Data(u64, Box<dyn BodyReceiver>, Vec<u8>),
    Finished {
        receiver: Option<Box<dyn BodyReceiver>>,
        result: Result<(), Failure>,
        done: Done,
    },
}

/// Clears the pump's flag however the pump is left.
struct Pumping<'a>(&'a Cell<bool>);

impl Drop for Pumping<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl HttpConnection {
    /// A connection not yet connected, and the protocol to connect it with.
    pub(crate) fn new(reactor: &Reactor) -> (HttpConnection, ClientProtocol) {
        let shared = Rc::new(Shared {
            reactor: reactor.clone(),
            state: RefCell::new(State {
                transport: None,
                lost: false,
                phase: Phase::Idle,
                input: Vec::new(),
                eof: None,
                seq: 0,
                requests: 0,
                idle_hook: None,
                read_paused: false,
                close_waiters: Vec::new(),
                unread: None,
            }),
            pumping: Cell::new(false),
        });
        (
            HttpConnection(shared.clone()),
            ClientProtocol(HttpConnection(shared)),
        )
    }

    /// Whether the connection is open with nothing in flight.
    pub(crate) fn is_idle(&self) -> bool {
        let st = self.0.state.borrow();
        matches!(st.phase, Phase::Idle) && !st.lost && st.eof.is_none() && st.transport.is_some()
    }

    /// Sets what to call if the connection ends while idle (the pool's removal).
    pub(crate) fn set_idle_hook(&self, hook: Box<dyn FnOnce()>) {
        self.0.state.borrow_mut().idle_hook = Some(hook);
    }

    /// Closes the connection once its output is sent; fires once it is closed.
    pub(crate) fn close(&self) -> Deferred<()> {
        let transport = {
            let mut st = self.0.state.borrow_mut();
            if st.lost {
                return Deferred::succeed(());
            }
            st.idle_hook = None;
            let (resolver, d) = Deferred::new();
            st.close_waiters.push(resolver);
            match st.transport.clone() {
                Some(t) => (t, d),
                None => return d,
            }
        };
        transport.0.lose_connection();
        transport.1
    }

    /// Sends `out`; the Deferred fires with the response once its head has arrived.
    /// `on_done` is called once, when the exchange is over (before the response's
    /// Deferred fires if it fails, before the body's receiver hears of its end otherwise).
    pub(crate) fn request(&self, out: Outgoing, on_done: OnDone) -> Deferred<Response> {
        let shared = &self.0;
        let (resolver, d) = Deferred::new();
        // The producer's length, asked before the state is borrowed (it is user code).
        let declared = match &out.body {
            Body::Producer(p) => p.length(),
            _ => None,
        };
        let started = {
            let mut st = shared.state.borrow_mut();
            let usable = matches!(st.phase, Phase::Idle) && !st.lost && st.eof.is_none();
            match st.transport.clone() {
                Some(transport) if usable => {
                    st.idle_hook = None;
                    st.requests += 1;
                    st.seq += 1;
                    let producer = match &out.body {
                        Body::Producer(p) => Some(p.clone()),
                        _ => None,
                    };
                    let seq = st.seq;
                    let writer = producer.as_ref().map(|_| {
                        let weak = Rc::downgrade(shared);
                        let on_excess = Box::new(move |failure: Failure| {
                            if let Some(shared) = weak.upgrade() {
                                shared.with_exchange(seq, |ex| {
                                    ex.abort.get_or_insert(failure);
                                });
                                shared.schedule_pump();
                            }
                        });
                        BodyWriter::new(transport.clone(), declared, on_excess)
                    });
                    st.phase = Phase::Head(Exchange {
                        seq: st.seq,
                        method: out.method.clone(),
                        url: out.url,
                        reused: st.requests > 1,
                        resolver: Some(resolver),
                        received_any: false,
                        answered: false,
                        framing: ResponseBody::Empty,
                        chunks: ChunkedDecoder::new(),
                        remaining: 0,
                        complete: false,
                        keep_alive: false,
                        slot: Slot::Waiting,
                        started: false,
                        paused: false,
                        abort: None,
                        closes: out.closes,
                        request_written: producer.is_none(),
                        producer: producer.clone().zip(writer.clone()),
                        on_done: Some(on_done),
                    });
                    Ok((transport, st.seq, producer.zip(writer)))
                }
                _ => Err((st.requests > 0, on_done, resolver)),
            }
        };
        let (transport, seq, producer) = match started {
            Ok(started) => started,
            Err((reused, on_done, resolver)) => {
                on_done(Ending {
                    conn: None,
                    answered: false,
                });
                let _ = resolver.try_errback(AgentError::ResponseNeverReceived {
                    method: out.method,
                    reused,
                    reason: "the connection was closed".into(),
                });
                return d;
            }
        };
        transport.write(&out.head);
        match out.body {
            Body::Empty | Body::Producer(_) => {}
            Body::Bytes(bytes) => transport.write(&bytes),
        }
        if let Some((producer, writer)) = producer {
            let as_producer: Rc<dyn Producer> = producer.clone();
            if let Err(failure) = transport.register_producer(as_producer, true) {
                self.abort_exchange(seq, failure);
                return d;
            }
            let weak = Rc::downgrade(shared);
            // User code: no borrow is held.
            let written = producer.start_producing(writer);
            drop(written.add_both(move |result: Result<(), Failure>| {
                if let Some(shared) = weak.upgrade() {
                    shared.request_body_done(seq, result);
                }
                Ok::<(), Failure>(())
            }));
        }
        d
    }

    /// Fails the exchange `seq` (if still current) with `failure`: the response's
    /// Deferred if its head has not arrived, the body's receiver otherwise.
    pub(crate) fn abort_exchange(&self, seq: u64, failure: Failure) {
        if self.0.with_exchange(seq, |ex| {
            ex.abort.get_or_insert(failure);
        }) {
            self.0.pump();
        }
    }

    /// The current exchange's number.
    pub(crate) fn seq(&self) -> u64 {
        self.0.state.borrow().seq
    }
}

impl Shared {
    /// Runs `f` on exchange `seq` if it is the current one; whether it was.
    fn with_exchange(&self, seq: u64, f: impl FnOnce(&mut Exchange)) -> bool {
        let mut st = self.state.borrow_mut();
        match &mut st.phase {
            Phase::Head(ex) | Phase::Body(ex) if ex.seq == seq => {
                f(ex);
                true
            }
            _ => false,
        }
    }

    /// The request body producer of exchange `seq` is done.
    fn request_body_done(self: &Rc<Self>, seq: u64, result: Result<(), Failure>) {
        let mut taken = None;
        self.with_exchange(seq, |ex| taken = ex.producer.take());
        let Some((_producer, writer)) = taken else {
            return;
        };
        let transport = self.state.borrow().transport.clone();
        if let Some(transport) = &transport {
            transport.unregister_producer();
        }
        let outcome = result.and_then(|()| writer.finish().map_err(Failure::new));
        self.with_exchange(seq, |ex| match outcome {
            Ok(()) => ex.request_written = true,
            Err(failure) => {
                ex.abort.get_or_insert(failure);
            }
        });
        self.schedule_pump();
    }

    fn schedule_pump(self: &Rc<Self>) {
        let me = self.clone();
        self.reactor.call_soon(move || me.pump());
    }

    /// Takes steps until there is nothing to do.
    fn pump(self: &Rc<Self>) {
        if self.pumping.replace(true) {
            return;
        }
        let _pumping = Pumping(&self.pumping);
        loop {
            let step = {
                let mut st = self.state.borrow_mut();
                let step = self.step(&mut st);
                sync_reading(&mut st);
                step
            };
            match step {
                Step::Wait => break,
                Step::IdleLost(hook) => hook(),
                Step::Head {
                    resolver,
                    result,
                    done,
                } => {
                    if let Some(done) = done {
                        done.run();
                    }
                    if let Some(resolver) = resolver {
                        let _ = match result {
                            Ok(response) => resolver.try_callback(response),
                            Err(failure) => resolver.try_errback(failure),
                        };
                    }
                }
                Step::Started(seq, mut receiver, control) => {
                    receiver.body_started(control);
                    self.put_back(seq, receiver);
                }
                Step::Data(seq, mut receiver, data) => {
                    receiver.data_received(&data);
                    self.put_back(seq, receiver);
                }
                Step::Finished {
                    receiver,
                    result,
                    done,
                } => {
                    done.run();
                    if let Some(mut receiver) = receiver {
                        receiver.body_finished(result);
                    }
                }
            }
        }
    }

    /// Puts a receiver back after calling it.
    fn put_back(&self, seq: u64, receiver: Box<dyn BodyReceiver>) {
        let mut receiver = Some(receiver);
        self.with_exchange(seq, |ex| {
            if matches!(ex.slot, Slot::Busy)
                && let Some(r) = receiver.take()
            {
                ex.slot = Slot::Attached(r);
            }
        });
        // Dropped here if the exchange is gone (it cannot be: it ends through the pump).
        drop(receiver);
    }

    /// Works out the next step, with the state borrowed.
    fn step(self: &Rc<Self>, st: &mut State) -> Step {
        match std::mem::replace(&mut st.phase, Phase::Closed) {
            Phase::Closed => {
                st.input.clear();
                Step::Wait
            }
            Phase::Idle => {
                if !st.input.is_empty() {
                    // Bytes nobody asked for: the connection cannot be trusted.
                    st.input.clear();
                    if let Some(t) = &st.transport {
                        t.abort_connection();
                    }
                } else if st.eof.is_none() {
                    st.phase = Phase::Idle;
                    return Step::Wait;
                }
                match st.idle_hook.take() {
                    Some(hook) => Step::IdleLost(hook),
                    None => Step::Wait,
                }
            }
            Phase::Head(ex) => self.head_step(st, ex),
            Phase::Body(ex) => self.body_step(st, ex),
        }
    }

    fn head_step(self: &Rc<Self>, st: &mut State, mut ex: Exchange) -> Step {
        if let Some(failure) = ex.abort.take() {
            return self.fail_head(st, ex, failure);
        }
        let head = loop {
            match parse_response_head(&st.input, &ex.method) {
                Ok(None) => {
                    let Some(reason) = st.eof.clone() else {
                        st.phase = Phase::Head(ex);
                        return Step::Wait;
                    };
                    let failure = if !ex.received_any {
                        Failure::new(AgentError::ResponseNeverReceived {
                            method: ex.method.clone(),
                            reused: ex.reused,
                            reason: reason.to_string(),
                        })
                    } else if reason.check::<ConnectionDone>() {
                        Failure::new(AgentError::Incomplete)
                    } else {
                        reason
                    };
                    return self.fail_head(st, ex, failure);
                }
                Err(error) => {
                    return self.fail_head(st, ex, Failure::new(AgentError::BadResponse(error.0)));
                }
                Ok(Some((head, used))) => {
                    st.input.drain(..used);
                    if head.status.is_informational() {
                        // 100 Continue and the like: the real head follows.
                        continue;
                    }
                    break head;
                }
            }
        };
        let resolver = ex.resolver.take();
        ex.answered = true;
        ex.framing = head.body;
        ex.keep_alive = head.keep_alive && !ex.closes;
        if let ResponseBody::Fixed(n) = head.body {
            ex.remaining = n;
        }
        let url = std::mem::take(&mut ex.url);
        let (body, done): (Box<dyn BodySource>, _) = if head.body == ResponseBody::Empty {
            ex.complete = true;
            (
                Box::new(NoBody(self.reactor.clone())),
                Some(self.end_exchange(st, ex, true)),
            )
        } else {
            let body = ConnBody {
                conn: self.clone(),
                seq: ex.seq,
                delivered: false,
            };
            st.phase = Phase::Body(ex);
            (Box::new(body), None)
        };
        let response = Response::new(head.status, head.version, head.headers, url, body);
        Step::Head {
            resolver,
            result: Ok(response),
            done,
        }
    }

    fn fail_head(self: &Rc<Self>, st: &mut State, mut ex: Exchange, failure: Failure) -> Step {
        let resolver = ex.resolver.take();
        Step::Head {
            resolver,
            result: Err(failure),
            done: Some(self.end_exchange(st, ex, false)),
        }
    }

    fn body_step(self: &Rc<Self>, st: &mut State, mut ex: Exchange) -> Step {
        if let Some(failure) = ex.abort.take() {
            let receiver = match std::mem::replace(&mut ex.slot, Slot::Dropped) {
                Slot::Attached(receiver) => Some(receiver),
                Slot::Waiting => {
                    st.unread = Some((ex.seq, failure.clone()));
                    None
                }
                Slot::Busy => {
                    ex.slot = Slot::Busy;
                    ex.abort = Some(failure);
                    st.phase = Phase::Body(ex);
                    return Step::Wait;
                }
                Slot::Dropped => None,
            };
            return Step::Finished {
                receiver,
                result: Err(failure),
                done: self.end_exchange(st, ex, false),
            };
        }
        match ex.slot {
            Slot::Attached(_) => {}
            Slot::Dropped => {
                return Step::Finished {
                    receiver: None,
                    result: Ok(()),
                    done: self.end_exchange(st, ex, false),
                };
            }
            Slot::Waiting | Slot::Busy => {
                st.phase = Phase::Body(ex);
                return Step::Wait;
            }
        }
        if !ex.started {
            ex.started = true;
            let control = BodyControl::new(Rc::new(ConnFlow {
                conn: Rc::downgrade(self),
                seq: ex.seq,
            }));
            return match take_receiver(&mut ex) {
                Some(receiver) => {
                    let seq = ex.seq;
                    st.phase = Phase::Body(ex);
                    Step::Started(seq, receiver, control)
                }
                None => {
                    st.phase = Phase::Body(ex);
                    Step::Wait
                }
            };
        }
        if ex.paused && !ex.complete {
            // A body complete on the wire ends even while paused: nothing more is read.
            st.phase = Phase::Body(ex);
            return Step::Wait;
        }
        loop {
            if ex.complete {
                let receiver = take_receiver(&mut ex);
                return Step::Finished {
                    receiver,
                    result: Ok(()),
                    done: self.end_exchange(st, ex, true),
                };
            }
            let data: Vec<u8> = match ex.framing {
                ResponseBody::Empty => {
                    ex.complete = true;
                    continue;
                }
                ResponseBody::Fixed(_) => {
                    if ex.remaining == 0 {
                        ex.complete = true;
                        continue;
                    }
                    let n = (ex.remaining.min(st.input.len() as u64)) as usize;
                    ex.remaining -= n as u64;
                    ex.complete = ex.remaining == 0;
                    st.input.drain(..n).collect()
                }
                ResponseBody::UntilClose => std::mem::take(&mut st.input),
                ResponseBody::Chunked => match ex.chunks.decode(&st.input) {
                    Err(error) => {
                        let receiver = take_receiver(&mut ex);
                        return Step::Finished {
                            receiver,
                            result: Err(Failure::new(AgentError::BadResponse(error.to_string()))),
                            done: self.end_exchange(st, ex, false),
                        };
                    }
                    Ok(decoded) => {
                        let data = decoded.data.to_vec();
                        let consumed = decoded.consumed;
                        ex.complete = decoded.done;
                        st.input.drain(..consumed);
                        if data.is_empty() && !ex.complete && consumed > 0 {
                            continue;
                        }
                        data
                    }
                },
            };
            if !data.is_empty() {
                let seq = ex.seq;
                return match take_receiver(&mut ex) {
                    Some(receiver) => {
                        st.phase = Phase::Body(ex);
                        Step::Data(seq, receiver, data)
                    }
                    None => {
                        st.phase = Phase::Body(ex);
                        Step::Wait
                    }
                };
            }
            if ex.complete {
                continue;
            }
            break;
        }
        // Everything that arrived is used: the end of the connection, or more to come.
        let Some(reason) = st.eof.clone() else {
            st.phase = Phase::Body(ex);
            return Step::Wait;
        };
        let result = if !reason.check::<ConnectionDone>() {
            Err(reason)
        } else if ex.framing == ResponseBody::UntilClose {
            Ok(())
        } else {
            Err(Failure::new(AgentError::Incomplete))
        };
        let receiver = take_receiver(&mut ex);
        let clean = result.is_ok();
        Step::Finished {
            receiver,
            result,
            done: self.end_exchange(st, ex, clean),
        }
    }

    /// Ends `ex`: back to idle if the connection can carry another request, else closed
    /// (gracefully after a complete response, with a reset otherwise).
    fn end_exchange(self: &Rc<Self>, st: &mut State, mut ex: Exchange, clean: bool) -> Done {
        let reusable = clean
            && ex.complete
            && ex.keep_alive
            && ex.request_written
            && st.input.is_empty()
            && st.eof.is_none()
            && !st.lost;
        let mut stop = None;
        if let Some((producer, writer)) = ex.producer.take() {
            writer.close();
            if let Some(t) = &st.transport {
                t.unregister_producer();
            }
            stop = Some(producer);
        }
        let conn = if reusable {
            st.phase = Phase::Idle;
            Some(HttpConnection(self.clone()))
        } else {
            st.phase = Phase::Closed;
            st.input.clear();
            if let Some(t) = &st.transport {
                if clean {
                    t.lose_connection();
                } else {
                    t.abort_connection();
                }
            }
            None
        };
        Done {
            on_done: ex.on_done.take(),
            ending: Ending {
                conn,
                answered: ex.answered,
            },
            stop,
        }
    }
}

fn take_receiver(ex: &mut Exchange) -> Option<Box<dyn BodyReceiver>> {
    match std::mem::replace(&mut ex.slot, Slot::Busy) {
        Slot::Attached(receiver) => Some(receiver),
        other => {
            ex.slot = other;
            None
        }
    }
}

/// Pauses the transport while a body waits for its receiver or its receiver asked for a
/// pause, and reads otherwise.
fn sync_reading(st: &mut State) {
    let want_paused = match &st.phase {
        Phase::Body(ex) => matches!(ex.slot, Slot::Waiting) || ex.paused,
        _ => false,
    };
    if want_paused != st.read_paused {
        st.read_paused = want_paused;
        if let Some(t) = &st.transport {
            if want_paused {
                t.pause_producing();
            } else {
                t.resume_producing();
            }
        }
    }
}

/// The body of a response on a connection.
struct ConnBody {
    conn: Rc<Shared>,
    seq: u64,
    delivered: bool,
}

impl BodySource for ConnBody {
    fn deliver(mut self: Box<Self>, receiver: Box<dyn BodyReceiver>) -> BodyControl {
        self.delivered = true;
        let seq = self.seq;
        let control = BodyControl::new(Rc::new(ConnFlow {
            conn: Rc::downgrade(&self.conn),
            seq,
        }));
        let mut receiver = Some(receiver);
        let attached = self.conn.with_exchange(seq, |ex| {
            if matches!(ex.slot, Slot::Waiting) {
                ex.slot = receiver.take().map_or(Slot::Waiting, Slot::Attached);
            }
        });
        if let Some(receiver) = receiver {
            let failure = {
                let mut st = self.conn.state.borrow_mut();
                match st.unread.take() {
                    Some((s, failure)) if s == seq => failure,
                    other => {
                        st.unread = other;
                        Failure::new(AgentError::Incomplete)
                    }
                }
            };
            return Box::new(FailedBody(self.conn.reactor.clone(), failure)).deliver(receiver);
        }
        if attached {
            self.conn.schedule_pump();
        }
        control
    }
}

impl Drop for ConnBody {
    fn drop(&mut self) {
        if self.delivered {
            return;
        }
        let dropped = self.conn.with_exchange(self.seq, |ex| {
            if matches!(ex.slot, Slot::Waiting) {
                ex.slot = Slot::Dropped;
            }
        });
        {
            let mut st = self.conn.state.borrow_mut();
            if st.unread.as_ref().is_some_and(|(s, _)| *s == self.seq) {
                st.unread = None;
            }
        }
        if dropped {
            self.conn.pump();
        }
    }
}

/// A body's [`BodyControl`] on a connection.
struct ConnFlow {
    conn: Weak<Shared>,
    seq: u64,
}

impl BodyFlow for ConnFlow {
    fn pause(&self) {
        let Some(conn) = self.conn.upgrade() else {
            return;
        };
        if conn.with_exchange(self.seq, |ex| ex.paused = true) {
            sync_reading(&mut conn.state.borrow_mut());
        }
    }

    fn resume(&self) {
        let Some(conn) = self.conn.upgrade() else {
            return;
        };
        if conn.with_exchange(self.seq, |ex| ex.paused = false) {
            conn.schedule_pump();
        }
    }

    fn stop(&self) {
        let Some(conn) = self.conn.upgrade() else {
            return;
        };
        if conn.with_exchange(self.seq, |ex| {
            ex.abort
                .get_or_insert_with(|| Failure::new(AgentError::BodyStopped));
        }) {
            conn.schedule_pump();
        }
    }
}

/// The protocol on the wire: hands every event to the connection's pump.
pub(crate) struct ClientProtocol(HttpConnection);

impl Protocol for ClientProtocol {
    fn connection_made(&mut self, transport: Transport) {
        self.0.0.state.borrow_mut().transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        {
            let mut st = self.0.0.state.borrow_mut();
            st.input.extend_from_slice(data);
            if let Phase::Head(ex) = &mut st.phase {
                ex.received_any = true;
            }
        }
        self.0.0.pump();
    }

    fn connection_lost(&mut self, reason: Failure) {
        let waiters = {
            let mut st = self.0.0.state.borrow_mut();
            st.lost = true;
            st.transport = None;
            st.eof = Some(reason);
            std::mem::take(&mut st.close_waiters)
        };
        self.0.0.pump();
        for waiter in waiters {
            let _ = waiter.try_callback(());
        }
    }
}
