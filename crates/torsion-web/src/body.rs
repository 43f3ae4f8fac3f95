//! Request bodies, collected or streamed as they arrive.
//!
//! Twisted's `http.Request` buffers every body whole before `render` runs (its #4688).
//! Here a body is collected like that by default (up to
//! [`SiteConfig::max_body`](crate::SiteConfig::max_body)), and a resource that says so
//! ([`Resource::streams_body`](crate::Resource::streams_body)) is rendered as soon as the
//! head is in and reads the body as it arrives: [`Request::deliver_body`] hands it to a
//! [`RequestBodyReceiver`] (Twisted's `IProtocol` given to `IResponse.deliverBody`, on the server
//! side), which can pause and resume it ([`Request::pause_body`],
//! [`Request::resume_body`]). Bytes not yet taken wait here; past [`BODY_BACKLOG`] of
//! them the connection stops reading, so a slow receiver holds a bounded amount of memory
//! and TCP slows the client down.
//!
//! Invariant: a receiver is never called while this module's `RefCell` is borrowed (it
//! may pause, resume or answer the request from inside its calls), and it is told
//! [`body_finished`](RequestBodyReceiver::body_finished) exactly once, after every byte.
//!
//! [`Request::deliver_body`]: crate::Request::deliver_body
//! [`Request::pause_body`]: crate::Request::pause_body
//! [`Request::resume_body`]: crate::Request::resume_body

use std::cell::{OnceCell, RefCell};
use std::fmt;

/// Body bytes that may wait for a paused (or not yet given) receiver before the
/// connection stops reading.
pub const BODY_BACKLOG: usize = 64 * 1024;

/// Takes a request body as it arrives (Twisted's `IProtocol` for `deliverBody`).
///
/// # Examples
///
/// ```
/// use torsion_web::{RequestBodyError, RequestBodyReceiver};
///
/// /// Counts the bytes of an upload.
/// struct Count(u64);
///
/// impl RequestBodyReceiver for Count {
///     fn data_received(&mut self, data: &[u8]) {
///         self.0 += data.len() as u64;
///     }
///     fn body_finished(&mut self, result: Result<(), RequestBodyError>) {
///         match result {
///             Ok(()) => println!("{} bytes", self.0),
///             Err(why) => println!("cut short after {} bytes: {why}", self.0),
///         }
///     }
/// }
/// ```
pub trait RequestBodyReceiver: 'static {
    /// Some of the body, in order (Twisted's `dataReceived`).
    fn data_received(&mut self, data: &[u8]);

    /// The body is complete (`Ok`), or will not be (Twisted's `connectionLost` with
    /// `ResponseDone` or a failure); called once, last.
    fn body_finished(&mut self, result: Result<(), RequestBodyError>);
}

/// Why a request body ended before it was complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestBodyError {
    /// The client went away.
    Disconnected,
    /// The body's framing is broken (a bad chunk); the client was answered 400.
    Malformed(String),
    /// The client stopped sending for longer than the site's body timeout.
    TimedOut,
    /// The response was finished before the body was read; the rest is not read, and the
    /// connection closes after the response.
    NotRead,
    /// [`deliver_body`](crate::Request::deliver_body) was called already for this
    /// streamed body, which went to the first receiver.
    AlreadyDelivered,
}

impl fmt::Display for RequestBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestBodyError::Disconnected => f.write_str("the client went away during the body"),
            RequestBodyError::Malformed(why) => write!(f, "the request body is malformed: {why}"),
            RequestBodyError::TimedOut => f.write_str("the client stopped sending the body"),
            RequestBodyError::NotRead => {
                f.write_str("the response was finished before the request body was read")
            }
            RequestBodyError::AlreadyDelivered => {
                f.write_str("the request body was delivered to another receiver already")
            }
        }
    }
}

impl std::error::Error for RequestBodyError {}

/// A request's body: collected whole (the default), or streamed once the channel starts
/// it.
#[derive(Default)]
pub(crate) struct RequestBody {
    /// The collected body, once read.
    content: OnceCell<Vec<u8>>,
    /// Set when the body is streamed.
    stream: OnceCell<RefCell<Stream>>,
}

pub(crate) struct Stream {
    /// Arrived, not yet taken by the receiver.
    pending: Vec<u8>,
    receiver: Slot,
    paused: bool,
    /// How the body ended, once it did and until the receiver is told.
    end: Option<Result<(), RequestBodyError>>,
    /// Whether the body ended (told or not).
    ended: bool,
}

enum Slot {
    /// No receiver yet.
    Waiting,
    Given(Box<dyn RequestBodyReceiver>),
    /// Out of the slot while it is being called.
    Calling,
    /// Told that the body finished.
    Done,
}

impl RequestBody {
    /// The body is streamed from now on, not collected.
    pub(crate) fn start_stream(&self) {
        let _ = self.stream.set(RefCell::new(Stream {
            pending: Vec::new(),
            receiver: Slot::Waiting,
            paused: false,
            end: None,
            ended: false,
        }));
    }

    /// The collected body; empty for a streamed one.
    pub(crate) fn content(&self) -> &[u8] {
        self.content.get().map_or(&[], Vec::as_slice)
    }

    /// Sets the collected body, once read.
    pub(crate) fn set_content(&self, body: Vec<u8>) {
        let _ = self.content.set(body);
    }

    /// Whether part of a streamed body is still to arrive.
    pub(crate) fn is_incomplete(&self) -> bool {
        self.stream.get().is_some_and(|s| !s.borrow().ended)
    }

    /// Bytes of a streamed body waiting for their receiver.
    pub(crate) fn backlog(&self) -> usize {
        self.stream.get().map_or(0, |s| s.borrow().pending.len())
    }

    /// More of a streamed body arrived (the caller flushes it next).
    pub(crate) fn push(&self, data: Vec<u8>) {
        if let Some(stream) = self.stream.get() {
            let mut stream = stream.borrow_mut();
            if stream.ended || data.is_empty() {
                return;
            }
            if stream.pending.is_empty() {
                stream.pending = data;
            } else {
                stream.pending.extend_from_slice(&data);
            }
        }
    }

    /// A streamed body ended, completely or not (the caller flushes next); only the first
    /// end counts.
    pub(crate) fn end(&self, result: Result<(), RequestBodyError>) {
        if let Some(stream) = self.stream.get() {
            let mut stream = stream.borrow_mut();
            if !stream.ended {
                stream.ended = true;
                if result.is_err() {
                    // What was not taken is not part of a complete body: dropped with it.
                    stream.pending = Vec::new();
                }
                stream.end = Some(result);
            }
        }
    }

    /// Gives the body to `receiver`: a collected one at once, a streamed one as it
    /// arrives.
    pub(crate) fn deliver(&self, mut receiver: Box<dyn RequestBodyReceiver>) {
        let Some(stream) = self.stream.get() else {
            let content = self.content();
            if !content.is_empty() {
                receiver.data_received(content);
            }
            receiver.body_finished(Ok(()));
            return;
        };
        let refused = {
            let mut stream = stream.borrow_mut();
            if matches!(stream.receiver, Slot::Waiting) {
                stream.receiver = Slot::Given(receiver);
                None
            } else {
                Some(receiver)
            }
        };
        match refused {
            Some(mut receiver) => receiver.body_finished(Err(RequestBodyError::AlreadyDelivered)),
            None => self.flush(),
        }
    }

    /// Pauses (`true`) or resumes a streamed body's delivery.
    pub(crate) fn set_paused(&self, paused: bool) {
        if let Some(stream) = self.stream.get() {
            stream.borrow_mut().paused = paused;
        }
    }

    /// Hands what waits to the receiver, and its end once everything is taken, while it
    /// is given and not paused.
    pub(crate) fn flush(&self) {
        let Some(cell) = self.stream.get() else {
            return;
        };
        loop {
            let (mut receiver, data, end) = {
                let mut stream = cell.borrow_mut();
                // An error end has nothing left to deliver (what waited was dropped with
                // it): a paused receiver is told at once, as Twisted's connectionLost.
                let failed = stream.pending.is_empty() && matches!(stream.end, Some(Err(_)));
                if (stream.paused && !failed) || !matches!(stream.receiver, Slot::Given(_)) {
                    return;
                }
                if stream.pending.is_empty() && stream.end.is_none() {
                    return;
                }
                let Slot::Given(receiver) = std::mem::replace(&mut stream.receiver, Slot::Calling)
                else {
                    return;
                };
                let data = std::mem::take(&mut stream.pending);
                let end = if data.is_empty() {
                    stream.end.take()
                } else {
                    None
                };
                (receiver, data, end)
            };
            if let Some(end) = end {
                receiver.body_finished(end);
                cell.borrow_mut().receiver = Slot::Done;
                return;
            }
            receiver.data_received(&data);
            let mut stream = cell.borrow_mut();
            stream.receiver = Slot::Given(receiver);
            if stream.pending.is_empty() {
                // The buffer goes back for the next bytes: no allocation per read.
                let mut data = data;
                data.clear();
                stream.pending = data;
            }
        }
    }
}
