//! [`FileSender`]: everything a reader produces, sent to a transport one chunk at a time as
//! a pull producer (Twisted's `twisted.protocols.basic.FileSender`), with the optional
//! [`Transform`] applied to each chunk.
//!
//! The invariant to keep: **the sender holds at most one chunk, and its Deferred fires
//! once**. It reads only when the transport asks for more (`resume_producing`) and reuses
//! one buffer, so a large file is never held in memory; the end of the reader, a read error
//! and `stop_producing` each take the resolver out of the state first, so whichever comes
//! first fires it, and no borrow of the state is held while it does.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read};
use std::rc::Rc;

use crate::defer::{Deferred, Failure, Resolver};
use crate::error::ProducerStopped;
use crate::net::{Producer, Transport};

/// A function applied to each chunk before it is sent (the `transform` of Twisted's
/// `FileSender.beginFileTransfer`), for example to encode or compress it.
pub type Transform = Box<dyn FnMut(Vec<u8>) -> Vec<u8>>;

/// Sends everything a reader produces to a transport, one chunk each time the transport
/// asks for more (Twisted's `FileSender`, a pull producer).
///
/// Start it with [`begin_file_transfer`](FileSender::begin_file_transfer). Each time the
/// transport's buffer drains it calls [`resume_producing`](Producer::resume_producing),
/// and the sender reads and writes at most [`CHUNK_SIZE`](FileSender::CHUNK_SIZE) bytes,
/// so a large file is never held in memory. At the end of the reader it unregisters from
/// the transport, then fires its Deferred.
///
/// # Examples
///
/// Send a file, then close the connection:
///
/// ```
/// use torsion::net::Transport;
/// use torsion::protocols::basic::FileSender;
///
/// fn send_file(transport: Transport, path: &str) -> std::io::Result<()> {
///     let file = std::fs::File::open(path)?;
///     let done = FileSender::begin_file_transfer(file, &transport, None);
///     drop(done.add_both(move |_last_byte| {
///         transport.lose_connection();
///         Ok(())
///     }));
///     Ok(())
/// }
/// ```
pub struct FileSender {
    state: RefCell<SenderState>,
    transform: RefCell<Option<Transform>>,
}

struct SenderState {
    /// `None` once finished, failed or stopped.
    reader: Option<Box<dyn Read>>,
    consumer: Option<Transport>,
    resolver: Option<Resolver<Option<u8>>>,
    /// The last byte written (Twisted's `lastSent`).
    last_sent: Option<u8>,
    /// Reused for each chunk.
    buffer: Vec<u8>,
    /// A read error that came after some bytes of a chunk, reported at the next resume.
    error: Option<io::Error>,
}

impl FileSender {
    /// How much is read and sent per [`resume_producing`](Producer::resume_producing):
    /// 16 KiB (Twisted's `CHUNK_SIZE`).
    pub const CHUNK_SIZE: usize = 16 * 1024;

    /// Registers a sender of everything `reader` produces as `consumer`'s pull producer
    /// (Twisted's `FileSender().beginFileTransfer(file, consumer, transform)`); the first
    /// chunk is sent at once. Each chunk goes through `transform` first, if given.
    ///
    /// The Deferred fires with the last byte sent (`None` if nothing was), after the sender
    /// unregistered, once `reader` reports its end.
    ///
    /// # Errors
    ///
    /// The Deferred fails with the reader's [`io::Error`] (after unregistering), with
    /// [`ProducerStopped`] if the transport stopped the transfer (the connection closed),
    /// or with [`ProducerAlreadyRegistered`](crate::error::ProducerAlreadyRegistered) if
    /// `consumer` already has a producer.
    pub fn begin_file_transfer(
        reader: impl Read + 'static,
        consumer: &Transport,
        transform: Option<Transform>,
    ) -> Deferred<Option<u8>> {
        let (resolver, deferred) = Deferred::new();
        let sender = Rc::new(FileSender {
            state: RefCell::new(SenderState {
                reader: Some(Box::new(reader)),
                consumer: Some(consumer.clone()),
                resolver: Some(resolver),
                last_sent: None,
                buffer: Vec::new(),
                error: None,
            }),
            transform: RefCell::new(transform),
        });
        if let Err(failure) = consumer.register_producer(sender.clone(), false) {
            // Not registered: fail without unregistering the producer that is.
            let resolver = {
                let mut st = sender.state.borrow_mut();
                st.reader = None;
                st.consumer = None;
                st.resolver.take()
            };
            if let Some(resolver) = resolver {
                resolver.errback(failure);
            }
        }
        deferred
    }

    /// Reads the next chunk into `buffer`: up to `CHUNK_SIZE` bytes, fewer only at the
    /// end of the reader or when an error came after some bytes (which are kept).
    fn read_chunk(reader: &mut dyn Read, buffer: &mut Vec<u8>) -> io::Result<()> {
        buffer.clear();
        buffer.reserve(Self::CHUNK_SIZE);
        Read::take(reader, Self::CHUNK_SIZE as u64)
            .read_to_end(buffer)
            .map(drop)
    }

    /// Ends the transfer: unregisters, then fires the Deferred.
    fn finish(&self, outcome: Result<(), Failure>) {
        let (consumer, resolver, last_sent) = {
            let mut st = self.state.borrow_mut();
            st.reader = None;
            st.buffer = Vec::new();
            (st.consumer.take(), st.resolver.take(), st.last_sent)
        };
        if let Some(consumer) = consumer {
            consumer.unregister_producer();
        }
        if let Some(resolver) = resolver {
            match outcome {
                Ok(()) => resolver.callback(last_sent),
                Err(failure) => resolver.errback(failure),
            }
        }
    }
}

impl Producer for FileSender {
    /// Reads and writes the next chunk, or, at the end, unregisters and fires the Deferred
    /// (Twisted's `FileSender.resumeProducing`).
    fn resume_producing(&self) {
        let (reader, mut buffer, earlier_error) = {
            let Ok(mut st) = self.state.try_borrow_mut() else {
                return;
            };
            let Some(reader) = st.reader.take() else {
                return;
            };
            let buffer = std::mem::take(&mut st.buffer);
            (reader, buffer, st.error.take())
        };
        if let Some(error) = earlier_error {
            drop(reader);
            self.finish(Err(Failure::new(error)));
            return;
        }
        let mut reader = reader;
        let read = Self::read_chunk(&mut *reader, &mut buffer);
        let error = match read {
            Ok(()) => None,
            Err(error) if buffer.is_empty() => {
                drop(reader);
                self.finish(Err(Failure::new(error)));
                return;
            }
            Err(error) => Some(error),
        };
        if buffer.is_empty() {
            drop(reader);
            self.finish(Ok(()));
            return;
        }
        let transform = self.transform.borrow_mut().take();
        let chunk = match transform {
            Some(mut transform) => {
                let chunk = transform(buffer);
                *self.transform.borrow_mut() = Some(transform);
                chunk
            }
            None => buffer,
        };
        let consumer = {
            let mut st = self.state.borrow_mut();
            if st.resolver.is_none() {
                // Stopped while reading.
                return;
            }
            st.reader = Some(reader);
            st.error = error;
            st.last_sent = chunk.last().copied();
            st.consumer.clone()
        };
        if let Some(consumer) = consumer {
            consumer.write(&chunk);
        }
        let mut chunk = chunk;
        chunk.clear();
        if chunk.capacity() <= 2 * Self::CHUNK_SIZE
            && let Ok(mut st) = self.state.try_borrow_mut()
            && st.buffer.capacity() == 0
        {
            st.buffer = chunk;
        }
    }

    /// Does nothing: a pull producer is only asked for more when the transport wants it.
    fn pause_producing(&self) {}

    /// Gives up: the Deferred fails with [`ProducerStopped`] (Twisted's "Consumer asked us
    /// to stop producing").
    fn stop_producing(&self) {
        let resolver = {
            let mut st = self.state.borrow_mut();
            st.reader = None;
            st.consumer = None;
            st.buffer = Vec::new();
            st.resolver.take()
        };
        if let Some(resolver) = resolver {
            resolver.errback(ProducerStopped);
        }
    }
}

impl fmt::Debug for FileSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.try_borrow();
        let mut d = f.debug_struct("FileSender");
        if let Ok(st) = st {
            d.field("sending", &st.reader.is_some())
                .field("last_sent", &st.last_sent);
        }
        d.finish_non_exhaustive()
    }
}
