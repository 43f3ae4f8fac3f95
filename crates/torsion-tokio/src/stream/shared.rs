//! The state one connection's [`StreamProtocol`](super::StreamProtocol) and its
//! [`TokioStream`](super::TokioStream) share (what Twisted's `IProtocol` and a consumer of
//! its bytes would share): the unread bytes, how the read side ended, whether the
//! transport has paused our writes, and the wakers of the reader and the writer.
//!
//! Both ends run on the reactor's thread: the protocol inside the reactor's dispatch, the
//! stream inside a task of the reactor's local executor.
//!
//! Invariant: no borrow of [`Shared`] is held while a transport method, a waker or user
//! code runs; every method takes what it needs out, releases the borrow, then calls.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::task::Waker;

use tokio::io::ReadBuf;
use torsion::Failure;
use torsion::error::{ConnectionAborted, ConnectionDone, ConnectionLost};
use torsion::net::Transport;

/// Unread bytes above which the transport is paused (as torsion's write high-water mark).
pub(crate) const READ_HIGH_WATER: usize = 64 * 1024;
/// Unread bytes below which a paused transport reads again.
pub(crate) const READ_LOW_WATER: usize = 16 * 1024;
/// The most one `poll_write` hands the transport, so one huge write cannot take the
/// transport's buffer far past its high-water mark.
pub(crate) const MAX_WRITE: usize = 64 * 1024;
/// An emptied read buffer keeps at most this much capacity.
const KEEP_CAPACITY: usize = 64 * 1024;

/// How the read side ended.
#[derive(Debug, Clone)]
pub(crate) enum ReadEnd {
    Open,
    Eof,
    Failed(io::ErrorKind, String),
}

pub(crate) struct State {
    pub(crate) transport: Option<Transport>,
    read: Vec<u8>,
    read_pos: usize,
    read_end: ReadEnd,
    /// The connection was lost: why, as writes report it (`None` while open).
    lost: Option<(io::ErrorKind, String)>,
    /// We paused the transport because too much is unread.
    reading_paused: bool,
    /// The transport paused us (its buffer is over its high-water mark).
    write_paused: bool,
    /// The transport stopped us for good (it is closing).
    write_stopped: bool,
    /// `poll_shutdown` closed our sending side.
    write_shut: bool,
    /// The stream was dropped: drop what arrives, close when connected.
    detached: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
    high_water: usize,
    low_water: usize,
}

/// The shared cell (see the module doc).
pub(crate) struct Shared(RefCell<State>);

fn store(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(w) if w.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// The `io::ErrorKind` a torsion connection loss stands for.
pub(crate) fn kind_of(reason: &Failure) -> io::ErrorKind {
    if reason.check::<ConnectionDone>() {
        io::ErrorKind::BrokenPipe
    } else if reason.check::<ConnectionAborted>() {
        io::ErrorKind::ConnectionAborted
    } else if reason.check::<ConnectionLost>() {
        io::ErrorKind::ConnectionReset
    } else if let Some(e) = reason.downcast_ref::<io::Error>() {
        e.kind()
    } else if reason.check::<torsion::tls::TlsError>() {
        io::ErrorKind::InvalidData
    } else {
        io::ErrorKind::Other
    }
}

/// What a poll of the read side found.
pub(crate) enum Read {
    /// Copied some bytes; the transport to resume, if reading may go on.
    Data(Option<Transport>),
    Eof,
    Failed(io::Error),
    Pending,
}

/// What a poll of the write side found.
pub(crate) enum Write {
    /// Hand the bytes to this transport.
    To(Transport),
    Failed(io::Error),
    Pending,
}

impl Shared {
    pub(crate) fn new() -> Rc<Shared> {
        Rc::new(Shared(RefCell::new(State {
            transport: None,
            read: Vec::new(),
            read_pos: 0,
            read_end: ReadEnd::Open,
            lost: None,
            reading_paused: false,
            write_paused: false,
            write_stopped: false,
            write_shut: false,
            detached: false,
            reader: None,
            writer: None,
            high_water: READ_HIGH_WATER,
            low_water: READ_LOW_WATER,
        })))
    }

    /// The connection is up. Returns `false` if the stream was dropped before it was.
    pub(crate) fn connected(&self, transport: &Transport) -> bool {
        let (detached, writer) = {
            let mut st = self.0.borrow_mut();
            st.transport = Some(transport.clone());
            (st.detached, st.writer.take())
        };
        wake(writer);
        !detached
    }

    /// Bytes arrived.
    pub(crate) fn received(&self, data: &[u8]) {
        let (reader, pause) = {
            let mut st = self.0.borrow_mut();
            if st.detached {
                return;
            }
            if st.read_pos == st.read.len() {
                st.read.clear();
                st.read_pos = 0;
            } else if st.read_pos > st.read.len() / 2 {
                let pos = st.read_pos;
                st.read.drain(..pos);
                st.read_pos = 0;
            }
            st.read.extend_from_slice(data);
            let unread = st.read.len() - st.read_pos;
            let pause = !st.reading_paused && unread >= st.high_water;
            if pause {
                st.reading_paused = true;
            }
            (
                st.reader.take(),
                pause.then(|| st.transport.clone()).flatten(),
            )
        };
        if let Some(transport) = pause {
            transport.pause_producing();
        }
        wake(reader);
    }

    /// The peer closed its sending side.
    pub(crate) fn read_closed(&self) {
        let reader = {
            let mut st = self.0.borrow_mut();
            if matches!(st.read_end, ReadEnd::Open) {
                st.read_end = ReadEnd::Eof;
            }
            st.reader.take()
        };
        wake(reader);
    }

    /// The connection is gone.
    pub(crate) fn lost(&self, reason: &Failure) {
        let kind = kind_of(reason);
        let clean = reason.check::<ConnectionDone>();
        let (reader, writer, transport) = {
            let mut st = self.0.borrow_mut();
            if matches!(st.read_end, ReadEnd::Open) {
                st.read_end = if clean {
                    ReadEnd::Eof
                } else {
                    ReadEnd::Failed(kind, reason.to_string())
                };
            }
            st.lost = Some((kind, reason.to_string()));
            (st.reader.take(), st.writer.take(), st.transport.take())
        };
        drop(transport);
        wake(reader);
        wake(writer);
    }

    /// The transport's buffer went over its high-water mark.
    pub(crate) fn pause_writes(&self) {
        self.0.borrow_mut().write_paused = true;
    }

    /// The transport's buffer drained below its low-water mark.
    pub(crate) fn resume_writes(&self) {
        let writer = {
            let mut st = self.0.borrow_mut();
            st.write_paused = false;
            st.writer.take()
        };
        wake(writer);
    }

    /// The transport is closing and takes no more.
    pub(crate) fn stop_writes(&self) {
        let writer = {
            let mut st = self.0.borrow_mut();
            st.write_stopped = true;
            st.writer.take()
        };
        wake(writer);
    }

    /// Copies unread bytes into `out`, or says why not.
    pub(crate) fn poll_read(&self, out: &mut ReadBuf<'_>, waker: &Waker) -> Read {
        let mut st = self.0.borrow_mut();
        let unread = st.read.len() - st.read_pos;
        if unread > 0 {
            let n = unread.min(out.remaining());
            let start = st.read_pos;
            out.put_slice(&st.read[start..start + n]);
            st.read_pos += n;
            if st.read_pos == st.read.len() {
                st.read.clear();
                st.read_pos = 0;
                if st.read.capacity() > KEEP_CAPACITY {
                    st.read.shrink_to(KEEP_CAPACITY);
                }
            }
            let left = st.read.len() - st.read_pos;
            let resume = st.reading_paused && left <= st.low_water;
            if resume {
                st.reading_paused = false;
            }
            return Read::Data(resume.then(|| st.transport.clone()).flatten());
        }
        match &st.read_end {
            ReadEnd::Eof => Read::Eof,
            ReadEnd::Failed(kind, message) => Read::Failed(io::Error::new(*kind, message.clone())),
            ReadEnd::Open => {
                store(&mut st.reader, waker);
                Read::Pending
            }
        }
    }

    /// Whether a write may go now, and where.
    pub(crate) fn poll_write(&self, waker: &Waker) -> Write {
        let mut st = self.0.borrow_mut();
        if let Some(err) = st.write_error() {
            return Write::Failed(err);
        }
        match &st.transport {
            Some(transport) if !st.write_paused => Write::To(transport.clone()),
            _ => {
                // Not connected yet, or paused: the connection or a resume wakes us.
                store(&mut st.writer, waker);
                Write::Pending
            }
        }
    }

    /// `poll_flush`: the transport sends on its own; only a lost connection is news.
    pub(crate) fn flush_error(&self) -> Option<io::Error> {
        let st = self.0.borrow();
        match &st.lost {
            Some((kind, message)) if *kind != io::ErrorKind::BrokenPipe => {
                Some(io::Error::new(*kind, message.clone()))
            }
            _ => None,
        }
    }

    /// `poll_shutdown`: the transport to half-close, if it is still to be done.
    pub(crate) fn shut_write(&self) -> Result<Option<Transport>, io::Error> {
        let mut st = self.0.borrow_mut();
        if st.write_shut {
            return Ok(None);
        }
        if let Some((kind, message)) = &st.lost {
            return if *kind == io::ErrorKind::BrokenPipe {
                Ok(None)
            } else {
                Err(io::Error::new(*kind, message.clone()))
            };
        }
        match st.transport.clone() {
            Some(transport) => {
                st.write_shut = true;
                Ok(Some(transport))
            }
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// The stream is dropped: the transport to close, if connected.
    pub(crate) fn detach(&self) -> Option<Transport> {
        let (transport, wakers) = {
            let mut st = self.0.borrow_mut();
            st.detached = true;
            st.read = Vec::new();
            st.read_pos = 0;
            (st.transport.take(), (st.reader.take(), st.writer.take()))
        };
        // Dropped outside the borrow, as everything another executor hands us.
        drop(wakers);
        transport
    }

    pub(crate) fn transport(&self) -> Option<Transport> {
        self.0.borrow().transport.clone()
    }

    pub(crate) fn unread(&self) -> usize {
        let st = self.0.borrow();
        st.read.len() - st.read_pos
    }

    pub(crate) fn set_read_water_marks(&self, high: usize, low: usize) {
        let mut st = self.0.borrow_mut();
        st.high_water = high.max(1);
        st.low_water = low.min(st.high_water);
    }

    pub(crate) fn is_reading_paused(&self) -> bool {
        self.0.borrow().reading_paused
    }
}

impl State {
    fn write_error(&self) -> Option<io::Error> {
        if let Some((kind, message)) = &self.lost {
            return Some(io::Error::new(*kind, message.clone()));
        }
        if self.write_shut {
            return Some(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown: the sending side is closed",
            ));
        }
        if self.write_stopped {
            return Some(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the transport is closing and takes no more writes",
            ));
        }
        None
    }
}
