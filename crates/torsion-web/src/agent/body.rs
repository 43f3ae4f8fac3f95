//! Request bodies (Twisted's `IBodyProducer`, `FileBodyProducer` and the
//! `LengthEnforcingConsumer` of `twisted.web._newclient`): none, bytes sent with their
//! `Content-Length`, or a producer that writes the body as it goes, paced by the
//! connection, with `Content-Length` when it knows its length and chunked otherwise.
//!
//! Invariant: a producer writes only through the [`BodyWriter`] it is given, and never
//! holds a borrow of its own state across [`BodyWriter::write`] (the connection may call
//! its `pause_producing` from inside that write, when its buffer passes the high-water
//! mark). Only [`Body::Empty`] and [`Body::Bytes`] can be sent twice: a retry never resends
//! a producer's body.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::Read;
use std::rc::Rc;
use std::time::Duration;

use torsion::net::{Producer, Transport};
use torsion::time::ReactorTime;
use torsion::{Deferred, Failure, Reactor, Resolver};

use crate::parse::LAST_CHUNK;

/// A request's body (Twisted's `bodyProducer` argument to `Agent.request`).
#[derive(Clone, Default)]
pub enum Body {
    /// No body (Twisted's `None`): `Content-Length: 0` for POST, PUT and PATCH, nothing
    /// for other methods.
    #[default]
    Empty,
    /// These bytes, with their `Content-Length`.
    Bytes(Vec<u8>),
    /// What the producer writes: with `Content-Length` if it tells its
    /// [`length`](BodyProducer::length), chunked otherwise. It cannot be sent again, so a
    /// request with such a body is never retried.
    Producer(Rc<dyn BodyProducer>),
}

impl Body {
    /// A body written by `producer`.
    pub fn producer(producer: impl BodyProducer + 'static) -> Body {
        Body::Producer(Rc::new(producer))
    }

    /// Whether the body can be sent again (for a retry or a redirect): empty or bytes.
    /// Twisted retries only requests without a body (its #7843).
    pub fn is_replayable(&self) -> bool {
        !matches!(self, Body::Producer(_))
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Empty => f.write_str("Empty"),
            Body::Bytes(bytes) => write!(f, "Bytes({} bytes)", bytes.len()),
            Body::Producer(p) => match p.length() {
                Some(n) => write!(f, "Producer({n} bytes)"),
                None => f.write_str("Producer(chunked)"),
            },
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Body {
        Body::Bytes(bytes)
    }
}

impl From<&[u8]> for Body {
    fn from(bytes: &[u8]) -> Body {
        Body::Bytes(bytes.to_vec())
    }
}

impl From<&str> for Body {
    fn from(text: &str) -> Body {
        Body::Bytes(text.as_bytes().to_vec())
    }
}

impl From<String> for Body {
    fn from(text: String) -> Body {
        Body::Bytes(text.into_bytes())
    }
}

impl From<Option<Vec<u8>>> for Body {
    fn from(bytes: Option<Vec<u8>>) -> Body {
        bytes.map_or(Body::Empty, Body::Bytes)
    }
}

/// Writes a request's body (Twisted's `IBodyProducer`, a push producer).
///
/// The connection calls [`start_producing`](BodyProducer::start_producing) once the
/// request's head is written, with the [`BodyWriter`] to write to; the producer writes
/// and fires the returned Deferred when the body is complete (a failure aborts the
/// request with it). Meanwhile the connection calls the [`Producer`] methods: it pauses
/// the producer while its send buffer is over the high-water mark, resumes it when it has
/// drained, and stops it if the request ends first (the connection was lost, the response
/// came early, the request timed out).
pub trait BodyProducer: Producer + 'static {
    /// The body's length if known (Twisted's `length`; `None` is its `UNKNOWN_LENGTH`,
    /// and the body is sent chunked).
    fn length(&self) -> Option<u64>;

    /// Starts writing the body to `writer` (Twisted's `startProducing(consumer)`); the
    /// Deferred fires when the whole body is written.
    fn start_producing(&self, writer: BodyWriter) -> Deferred<()>;
}

/// Where a [`BodyProducer`] writes (Twisted's consumer given to `startProducing`, a
/// `LengthEnforcingConsumer` when the length is known): chunks the data if the body is
/// chunked, and counts it against the announced length.
#[derive(Clone)]
pub struct BodyWriter(Rc<WriterInner>);

struct WriterInner {
    transport: Transport,
    chunked: bool,
    declared: Option<u64>,
    written: Cell<u64>,
    closed: Cell<bool>,
    /// Fails the request (from the next turn of the loop) when the producer writes past
    /// its length.
    on_excess: Box<dyn Fn(Failure)>,
}

impl BodyWriter {
    pub(crate) fn new(
        transport: Transport,
        declared: Option<u64>,
        on_excess: Box<dyn Fn(Failure)>,
    ) -> BodyWriter {
        BodyWriter(Rc::new(WriterInner {
            transport,
            chunked: declared.is_none(),
            declared,
            written: Cell::new(0),
            closed: Cell::new(false),
            on_excess,
        }))
    }

    /// Writes part of the body. Past the announced length, the excess is dropped and the
    /// request fails with [`AgentError::WrongBodyLength`](crate::AgentError::WrongBodyLength)
    /// (Twisted's `ExcessWrite`); after the request has ended, writes are dropped.
    pub fn write(&self, data: &[u8]) {
        let w = &self.0;
        if w.closed.get() || data.is_empty() {
            return;
        }
        let before = w.written.get();
        w.written.set(before + data.len() as u64);
        if w.chunked {
            let size = format!("{:x}\r\n", data.len());
            w.transport
                .write_sequence(&[size.as_bytes(), data, b"\r\n"]);
        } else {
            let declared = w.declared.unwrap_or(0);
            let room = declared.saturating_sub(before);
            let n = (data.len() as u64).min(room) as usize;
            w.transport.write(&data[..n]);
            if n < data.len() {
                w.closed.set(true);
                (w.on_excess)(Failure::new(super::AgentError::WrongBodyLength {
                    declared,
                    written: w.written.get(),
                }));
            }
        }
    }

    /// How many bytes the producer has written (what Twisted's `LengthEnforcingConsumer`
    /// counts).
    pub fn written(&self) -> u64 {
        self.0.written.get()
    }

    /// Ends the body: the last chunk if chunked; whether the length was kept.
    pub(crate) fn finish(&self) -> Result<(), super::AgentError> {
        let w = &self.0;
        if w.closed.replace(true) {
            return Ok(());
        }
        match w.declared {
            None => {
                w.transport.write(LAST_CHUNK);
                Ok(())
            }
            Some(declared) if declared == w.written.get() => Ok(()),
            Some(declared) => Err(super::AgentError::WrongBodyLength {
                declared,
                written: w.written.get(),
            }),
        }
    }

    /// Drops every later write.
    pub(crate) fn close(&self) {
        self.0.closed.set(true);
    }
}

impl fmt::Debug for BodyWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyWriter")
            .field("chunked", &self.0.chunked)
            .field("declared", &self.0.declared)
            .field("written", &self.0.written.get())
            .finish()
    }
}

/// How much a [`FileBodyProducer`] reads and writes at a time (Twisted's `readSize`,
/// 2¹⁶).
pub const FILE_BODY_READ_SIZE: usize = 64 * 1024;

/// A body read from a file or any reader (Twisted's `FileBodyProducer`): 64 KiB a turn of
/// the loop while the connection takes it, paused while its buffer is full.
pub struct FileBodyProducer(Rc<FileInner>);

struct FileInner {
    reactor: Reactor,
    length: Option<u64>,
    reader: RefCell<Option<Box<dyn Read>>>,
    writer: RefCell<Option<BodyWriter>>,
    resolver: RefCell<Option<Resolver<()>>>,
    paused: Cell<bool>,
    scheduled: Cell<bool>,
}

impl FileBodyProducer {
    /// The body `reader` gives, `length` bytes if known (chunked if not).
    pub fn new(reactor: &Reactor, reader: impl Read + 'static, length: Option<u64>) -> Self {
        FileBodyProducer(Rc::new(FileInner {
            reactor: reactor.clone(),
            length,
            reader: RefCell::new(Some(Box::new(reader))),
            writer: RefCell::new(None),
            resolver: RefCell::new(None),
            paused: Cell::new(false),
            scheduled: Cell::new(false),
        }))
    }

    /// The contents of `file`, its length from its metadata (Twisted finds it by seeking).
    ///
    /// # Errors
    ///
    /// The file's metadata could not be read.
    pub fn from_file(reactor: &Reactor, file: std::fs::File) -> std::io::Result<Self> {
        let length = file.metadata()?.len();
        Ok(FileBodyProducer::new(reactor, file, Some(length)))
    }
}

impl FileInner {
    /// Runs `step` on a later turn of the loop, unless it is scheduled already.
    fn schedule(self: &Rc<Self>) {
        if self.scheduled.replace(true) {
            return;
        }
        let me = self.clone();
        self.reactor.call_later(Duration::ZERO, move || {
            me.scheduled.set(false);
            me.step();
        });
    }

    /// Reads one piece and writes it; ends the body at the end of the reader.
    fn step(self: &Rc<Self>) {
        if self.paused.get() {
            return;
        }
        let Some(writer) = self.writer.borrow().clone() else {
            return;
        };
        let mut buffer = vec![0; FILE_BODY_READ_SIZE];
        let read = {
            let mut reader = self.reader.borrow_mut();
            let Some(reader) = reader.as_mut() else {
                return;
            };
            loop {
                match reader.read(&mut buffer) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            }
        };
        match read {
            Ok(0) => self.end(Ok(())),
            Ok(n) => {
                // No borrow is held here: the write may pause us.
                writer.write(&buffer[..n]);
                self.schedule();
            }
            Err(e) => self.end(Err(Failure::new(e))),
        }
    }

    fn end(&self, result: Result<(), Failure>) {
        self.reader.borrow_mut().take();
        self.writer.borrow_mut().take();
        let resolver = self.resolver.borrow_mut().take();
        let _ = match (resolver, result) {
            (Some(resolver), Ok(())) => resolver.try_callback(()),
            (Some(resolver), Err(failure)) => resolver.try_errback(failure),
            (None, _) => Ok(()),
        };
    }
}

impl Producer for FileBodyProducer {
    fn resume_producing(&self) {
        self.0.paused.set(false);
        self.0.schedule();
    }

    fn pause_producing(&self) {
        self.0.paused.set(true);
    }

    fn stop_producing(&self) {
        self.0.end(Err(Failure::new(torsion::error::Cancelled)));
    }
}

impl BodyProducer for FileBodyProducer {
    fn length(&self) -> Option<u64> {
        self.0.length
    }

    fn start_producing(&self, writer: BodyWriter) -> Deferred<()> {
        let (resolver, d) = Deferred::new();
        *self.0.writer.borrow_mut() = Some(writer);
        *self.0.resolver.borrow_mut() = Some(resolver);
        self.0.schedule();
        d
    }
}

impl fmt::Debug for FileBodyProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileBodyProducer")
            .field("length", &self.0.length)
            .finish_non_exhaustive()
    }
}
