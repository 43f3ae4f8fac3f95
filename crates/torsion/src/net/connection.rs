//! Stream connections over a socket, TCP or UNIX (Twisted's `abstract.FileDescriptor` and
//! `tcp.Connection`): the transport a protocol writes to.
//!
//! A connection reads with one `recv` into the reactor's shared buffer per readiness event
//! (level-triggered, as Twisted's `doRead`), so an idle connection holds no read buffer. On
//! io_uring the ring receives for it instead (into buffers shared by the ring's
//! connections), and each readiness event hands over one receive's bytes.
//! Writes are buffered and sent when the loop flushes, right after the callback that wrote
//! returns; only when the kernel's buffer is full does the connection wait for
//! writability.
//!
//! The rules (buffer, producer and water marks, throttle, half-close, lose and abort) are
//! the shared [`StreamCore`](super::stream)'s; this file does the socket I/O and the
//! reactor registrations they call for.
//!
//! Once TLS starts ([`start_tls`](TransportOps::start_tls)), the connection holds a
//! [`TlsSession`]: what is read is ciphertext fed to it, and the protocol gets what it
//! decrypts; what the protocol writes stays in the core's buffer until the handshake has
//! completed, is then encrypted as the socket takes it, and the ciphertext goes straight
//! from rustls to the socket. Bytes written before `start_tls` go out in the clear first.
//!
//! Invariant: `connection_lost` is delivered exactly once, from the loop, never from inside
//! a call the protocol made; the protocol is dropped right after it, which breaks the
//! protocol → transport → connection cycle.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::rc::{Rc, Weak};
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};
use socket2::Socket;

use super::stream::{Drained, Registered, StreamCore};
use crate::defer::Failure;
use crate::error::{ConnectionAborted, ConnectionDone, ConnectionLost};
use crate::net::{Address, Producer, Transport, TransportOps};
use crate::protocol::Protocol;
use crate::reactor::backend::{Received, Taken};
use crate::reactor::{FileDescriptor, Flush, Reactor, ReadDescriptor, WriteDescriptor};
use crate::time::{DelayedCall, ReactorTime};
use crate::tls::session::{self, TlsSession};
use crate::tls::{StartTls, TlsError, TlsErrorKind, TlsInfo};

/// A streaming producer is paused when this much output is buffered (Twisted's
/// `bufferSize`, 64 KiB).
pub const HIGH_WATER_MARK: usize = 64 * 1024;
/// A paused streaming producer is resumed when the buffer drains below this.
pub const LOW_WATER_MARK: usize = 16 * 1024;

/// How long a TLS connection closing cleanly waits for the peer's `close_notify` (or end
/// of input) once its own is out, before closing anyway.
const CLOSE_NOTIFY_WAIT: Duration = Duration::from_secs(2);

/// The most receives of the ring one readiness event delivers (see `do_read`).
const RING_READS_PER_EVENT: usize = 16;

/// Told when a client connection ends, after its protocol (the connector, which then tells
/// its factory's `client_connection_lost`).
pub(crate) trait ConnectionEnded {
    fn connection_ended(&self, reason: Failure);
}

/// One stream connection: the transport its protocol writes to.
pub(crate) struct Connection {
    me: Weak<Connection>,
    socket: RefCell<Option<Socket>>,
    fd: RawFd,
    reactor: Reactor,
    protocol: RefCell<Option<Box<dyn Protocol>>>,
    state: RefCell<State>,
    /// The TLS state, once `start_tls` was called.
    tls: RefCell<Option<TlsSession>>,
    /// What TLS negotiated, kept when the session goes so `connection_lost` can still ask.
    last_tls_info: RefCell<Option<TlsInfo>>,
    peer: Address,
    /// The local address: given, or looked up (one getsockname) the first time it is asked
    /// for, for a connection accepted on a wildcard address.
    host: std::cell::OnceCell<Address>,
    ended: Option<Rc<dyn ConnectionEnded>>,
    /// For log lines: "tcp" or "unix".
    kind: &'static str,
}

struct State {
    /// Reading is wanted (not paused, not stopped by lose_connection or EOF).
    reading: bool,
    /// `pause_producing` was called.
    paused: bool,
    writer_registered: bool,
    flush_scheduled: bool,
    /// How many of the buffered bytes were written before TLS started: they go out in the
    /// clear, first.
    clear_before_tls: usize,
    /// `lose_write_connection` over TLS: shut the socket's sending side once the
    /// `close_notify` is out.
    shut_after_close_notify: bool,
    /// Closes the connection if the TLS handshake has not completed by then.
    handshake_deadline: Option<DelayedCall>,
    /// Our `close_notify` and FIN are out: reading on (discarding) until the peer's
    /// `close_notify` or end of input, so that unread bytes (TLS 1.3 session tickets) do
    /// not turn the close into a reset that destroys what the peer has not read yet.
    lingering: bool,
    /// Ends the lingering close if the peer does not answer.
    linger_deadline: Option<DelayedCall>,
    /// The buffer, producer, throttle and closing rules, shared with the other stream
    /// transports.
    core: StreamCore,
    /// How many of the core's bytes the send on the ring in flight carries: consumed once
    /// it has ended (none when it carries ciphertext).
    ring_from_core: usize,
    /// The ring delivered the end of input while output was still on its way: it waits,
    /// with reading off, until the output is out (see `do_read`).
    eof_deferred: bool,
}

impl Connection {
    pub(crate) fn new(
        reactor: &Reactor,
        socket: Socket,
        peer: Address,
        host: Option<Address>,
        ended: Option<Rc<dyn ConnectionEnded>>,
    ) -> Rc<Connection> {
        let kind = match peer {
            Address::Unix(_) => "unix",
            _ => "tcp",
        };
        let fd = socket.as_raw_fd();
        Rc::new_cyclic(|me| Connection {
            me: me.clone(),
            socket: RefCell::new(Some(socket)),
            fd,
            reactor: reactor.clone(),
            protocol: RefCell::new(None),
            state: RefCell::new(State {
                reading: false,
                paused: false,
                writer_registered: false,
                flush_scheduled: false,
                clear_before_tls: 0,
                shut_after_close_notify: false,
                handshake_deadline: None,
                lingering: false,
                linger_deadline: None,
                core: StreamCore::new(HIGH_WATER_MARK, LOW_WATER_MARK),
                ring_from_core: 0,
                eof_deferred: false,
            }),
            tls: RefCell::new(None),
            last_tls_info: RefCell::new(None),
            peer,
            host: host.map(std::cell::OnceCell::from).unwrap_or_default(),
            ended,
            kind,
        })
    }

    fn rc(&self) -> Option<Rc<Connection>> {
        self.me.upgrade()
    }

    /// Starts the connection: reads, then tells the protocol it is connected.
    pub(crate) fn start(self: &Rc<Self>, protocol: Box<dyn Protocol>) {
        *self.protocol.borrow_mut() = Some(protocol);
        self.state.borrow_mut().reading = true;
        if let Err(err) = self.reactor.add_stream_reader(self.clone()) {
            crate::log::error!(target: "torsion::net", "cannot watch {}: {err}", self.peer);
            self.schedule_loss(Failure::new(err));
            return;
        }
        let transport: Transport = self.clone();
        self.with_protocol(|p| p.connection_made(transport));
    }

    /// Runs `f` on the protocol; a panic is logged and closes the connection (as an
    /// exception in Twisted's `dataReceived` does).
    fn with_protocol(&self, f: impl FnOnce(&mut dyn Protocol)) {
        let Ok(mut slot) = self.protocol.try_borrow_mut() else {
            crate::log::error!(target: "torsion::net", "protocol re-entered; event dropped");
            return;
        };
        let Some(protocol) = slot.as_mut() else {
            return;
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut **protocol)));
        drop(slot);
        if let Err(payload) = outcome {
            let failure = Failure::from_panic(&*payload);
            crate::log::error!(target: "torsion::net", "protocol for {} panicked: {failure:#}", self.peer);
            self.schedule_loss(failure);
        }
    }

    fn schedule_flush(&self) {
        let mut st = self.state.borrow_mut();
        if st.flush_scheduled || st.core.is_lost() {
            return;
        }
        st.flush_scheduled = true;
        drop(st);
        if let Some(me) = self.rc() {
            self.reactor.schedule_flush(me);
        }
    }

    /// Closes the connection with `reason` once the callback running now has returned
    /// (through the reactor's [`call_soon`](Reactor::call_soon) queue).
    fn schedule_loss(&self, reason: Failure) {
        if let Some(me) = self.rc() {
            self.reactor.call_soon(move || me.finish(reason));
        }
    }

    /// Starts or stops watching for readability. A descriptor the backend will not watch
    /// again would leave the connection stalled for good: it is closed with that error.
    fn set_reading(&self, on: bool) {
        let me = match self.rc() {
            Some(me) => me,
            None => return,
        };
        if on || self.tls_needs_input() {
            if let Err(err) = self.reactor.add_stream_reader(me) {
                crate::log::error!(target: "torsion::net", "cannot watch {} for reading: {err}", self.peer);
                self.schedule_loss(Failure::new(err));
            }
        } else {
            self.reactor.remove_reader(self.fd);
        }
    }

    /// Whether TLS must read whatever the protocol wants: during the handshake (a paused,
    /// throttled or closing protocol would otherwise stall it) and during a lingering
    /// close.
    fn tls_needs_input(&self) -> bool {
        let lingering = self.state.borrow().lingering;
        lingering
            || self
                .tls
                .try_borrow()
                .is_ok_and(|tls| tls.as_ref().is_some_and(TlsSession::is_handshaking))
    }

    /// Watches for readability as the protocol's state says, once TLS no longer needs to
    /// read regardless (the handshake completed).
    fn refresh_reading(&self) {
        let want = self.reading_unpaused() && !self.state.borrow().core.is_throttled();
        self.set_reading(want);
    }

    /// Whether reading is wanted apart from the throttle: not stopped, paused or lost.
    fn reading_unpaused(&self) -> bool {
        let st = self.state.borrow();
        st.reading && !st.paused && !st.core.is_lost()
    }

    fn eof(&self) -> Result<(), Failure> {
        let half_close = self
            .protocol
            .try_borrow()
            .ok()
            .and_then(|p| p.as_ref().map(|p| p.supports_half_close()))
            .unwrap_or(false);
        if !half_close {
            return Err(Failure::routine(ConnectionDone));
        }
        self.state.borrow_mut().reading = false;
        self.set_reading(false);
        self.with_protocol(|p| p.read_connection_lost());
        Ok(())
    }

    /// Sends buffered output; after draining, resumes a producer, completes a close, or
    /// shuts the write side, in Twisted's order (the core decides which).
    fn send_buffered(&self) {
        let result = {
            let mut st = self.state.borrow_mut();
            st.flush_scheduled = false;
            if st.core.is_lost() {
                return;
            }
            let sock = self.socket.borrow();
            let Some(sock) = sock.as_ref() else { return };
            let mut tls = self.tls.borrow_mut();
            match ring_send(&self.reactor, self.fd, &mut st, tls.as_mut()) {
                Some(sent) => sent,
                None => match tls.as_mut() {
                    None => send_clear(sock.as_fd(), &mut st.core, usize::MAX),
                    Some(session) => send_tls(sock.as_fd(), &mut st, session),
                },
            }
        };
        let sent = match result {
            Ok(sent) => sent,
            Err(err) => {
                tracing::debug!(target: "torsion::net", "send to {} failed: {err}", self.peer);
                let reason = self.lost_reason(err);
                self.finish(reason);
                return;
            }
        };
        let handshaking = self
            .tls
            .borrow()
            .as_ref()
            .is_some_and(TlsSession::is_handshaking);
        if sent == Sent::AwaitingHandshake || (sent == Sent::Drained && handshaking) {
            // Nothing to send until the handshake completes, which schedules a flush.
            let unregister =
                std::mem::replace(&mut self.state.borrow_mut().writer_registered, false);
            if unregister {
                self.reactor.remove_writer(self.fd);
            }
            return;
        }
        if sent == Sent::Blocked {
            let (resume, release) = self.state.borrow_mut().core.progressed();
            if release && self.reading_unpaused() {
                self.set_reading(true);
            }
            let register = !std::mem::replace(&mut self.state.borrow_mut().writer_registered, true);
            if register
                && let Some(me) = self.rc()
                && let Err(err) = self.reactor.add_stream_writer(me)
            {
                crate::log::error!(target: "torsion::net", "cannot watch {} for writing: {err}", self.peer);
                self.finish(Failure::new(err));
                return;
            }
            if let Some(producer) = resume {
                producer.resume_producing();
            }
            return;
        }
        let (unregister, (next, release)) = {
            let mut st = self.state.borrow_mut();
            let unregister = std::mem::replace(&mut st.writer_registered, false);
            (unregister, st.core.drained())
        };
        if unregister {
            self.reactor.remove_writer(self.fd);
        }
        if release && self.reading_unpaused() {
            self.set_reading(true);
        }
        if std::mem::take(&mut self.state.borrow_mut().eof_deferred) {
            // The end of input the ring delivered early is read now.
            self.refresh_reading();
        }
        match next {
            Drained::Resume(producer) => producer.resume_producing(),
            Drained::Idle => {
                let shut =
                    std::mem::replace(&mut self.state.borrow_mut().shut_after_close_notify, false);
                if shut {
                    self.shut_write();
                }
            }
            Drained::Close => {
                if self.queue_close_notify() {
                    // Send it, then come back here to close.
                    self.send_buffered();
                } else if self.tls.borrow().is_some() {
                    self.linger();
                } else {
                    self.finish(Failure::routine(ConnectionDone));
                }
            }
            Drained::ShutWrite => {
                if self.queue_close_notify() {
                    self.state.borrow_mut().shut_after_close_notify = true;
                    self.send_buffered();
                } else {
                    self.shut_write();
                }
            }
        }
    }

    /// Our `close_notify` is out: shuts the sending side and reads on, discarding, until
    /// the peer answers or closes (at most [`CLOSE_NOTIFY_WAIT`]), then closes.
    fn linger(&self) {
        let peer_closed = self
            .tls
            .borrow()
            .as_ref()
            .is_some_and(TlsSession::peer_closed);
        if peer_closed || self.state.borrow().lingering {
            if peer_closed {
                self.finish(Failure::routine(ConnectionDone));
            }
            return;
        }
        self.state.borrow_mut().lingering = true;
        if let Some(sock) = self.socket.borrow().as_ref() {
            let _ = sock.shutdown(std::net::Shutdown::Write);
        }
        self.set_reading(true);
        let me = self.me.clone();
        let deadline = self.reactor.call_later(CLOSE_NOTIFY_WAIT, move || {
            if let Some(me) = me.upgrade() {
                me.state.borrow_mut().linger_deadline = None;
                me.finish(Failure::routine(ConnectionDone));
            }
        });
        self.state.borrow_mut().linger_deadline = Some(deadline);
    }

    /// Shuts the socket's sending side and tells the protocol.
    fn shut_write(&self) {
        if let Some(sock) = self.socket.borrow().as_ref() {
            let _ = sock.shutdown(std::net::Shutdown::Write);
        }
        self.with_protocol(|p| p.write_connection_lost());
    }

    /// Over TLS, queues `close_notify` if it was not; whether it did.
    fn queue_close_notify(&self) -> bool {
        let mut tls = self.tls.borrow_mut();
        match tls.as_mut() {
            Some(session) if !session.close_notify_sent() => {
                session.close_notify();
                true
            }
            _ => false,
        }
    }

    /// Feeds received ciphertext to the TLS session and delivers what it decrypts:
    /// `handshake_completed` first if it completed, then the data, then the end of input
    /// if the peer sent `close_notify`.
    fn tls_received(&self, ciphertext: &[u8]) -> Result<(), Failure> {
        let mut plaintext = session::take_plaintext_buffer();
        let outcome = {
            let mut tls = self.tls.borrow_mut();
            let Some(session) = tls.as_mut() else {
                return Ok(());
            };
            let outcome = session.receive(ciphertext, &mut plaintext);
            if outcome.is_err() {
                // Best effort: the alert saying why.
                if let Some(sock) = self.socket.borrow().as_ref()
                    && !self.reactor.ring_sending(self.fd)
                {
                    let _ = session.send(sock.as_fd());
                }
            }
            (outcome, session.wants_write())
        };
        let received = match outcome {
            (Err(err), _) => {
                session::give_back_plaintext_buffer(plaintext);
                tracing::debug!(target: "torsion::tls", "TLS with {} failed: {err}", self.peer);
                return Err(err.into());
            }
            (Ok(received), wants_write) => {
                if wants_write || received.handshake_completed {
                    self.schedule_flush();
                }
                received
            }
        };
        if received.handshake_completed {
            let deadline = self.state.borrow_mut().handshake_deadline.take();
            if let Some(deadline) = deadline {
                let _ = deadline.cancel();
            }
            self.refresh_reading();
            self.with_protocol(|p| p.handshake_completed());
        }
        if received.plaintext > 0 && self.state.borrow().reading {
            self.with_protocol(|p| p.data_received(&plaintext[..received.plaintext]));
        }
        session::give_back_plaintext_buffer(plaintext);
        if received.peer_closed {
            if self.state.borrow().reading {
                return self.eof();
            }
            if self.state.borrow().lingering {
                return Err(Failure::routine(ConnectionDone));
            }
        }
        Ok(())
    }

    /// The socket reached end of input over TLS: why, unless the peer said goodbye with
    /// `close_notify` first (then `None`: an ordinary end of input).
    fn tls_eof(&self) -> Option<Failure> {
        let tls = self.tls.borrow();
        let session = tls.as_ref()?;
        if session.peer_closed() {
            return None;
        }
        if self.state.borrow().lingering {
            return Some(Failure::routine(ConnectionDone));
        }
        let kind = if session.is_handshaking() {
            TlsErrorKind::ClosedDuringHandshake
        } else {
            TlsErrorKind::Truncated
        };
        Some(TlsError::new(kind, session.is_handshaking()).into())
    }

    /// Why the connection is lost after an I/O error: [`ConnectionLost`], or during a TLS
    /// handshake a [`TlsError`] saying the handshake failed, with the error as its cause.
    fn lost_reason(&self, err: io::Error) -> Failure {
        let handshaking = self
            .tls
            .borrow()
            .as_ref()
            .is_some_and(TlsSession::is_handshaking);
        if handshaking {
            TlsError::closed_during_handshake(err.to_string()).into()
        } else {
            Failure::routine(ConnectionLost)
        }
    }

    /// Decrypts bytes handed over with `start_tls` (received before TLS started).
    fn feed_received(&self, ciphertext: Vec<u8>) {
        if !self.state.borrow().reading || self.state.borrow().core.is_lost() {
            return;
        }
        if let Err(reason) = self.tls_received(&ciphertext) {
            self.finish(reason);
        }
    }

    /// Closes the connection and tells the protocol (and the connector's factory), once.
    fn finish(&self, reason: Failure) {
        let (producer, aborting, deadline) = {
            let mut st = self.state.borrow_mut();
            let aborting = st.core.is_aborting();
            let Some(producer) = st.core.lose() else {
                return;
            };
            st.reading = false;
            st.flush_scheduled = false;
            st.lingering = false;
            let deadlines = [st.handshake_deadline.take(), st.linger_deadline.take()];
            (producer, aborting, deadlines)
        };
        for deadline in deadline.into_iter().flatten() {
            let _ = deadline.cancel();
        }
        self.reactor.remove_stream(self.fd);
        if let Ok(tls) = self.tls.try_borrow()
            && let Some(session) = tls.as_ref()
        {
            *self.last_tls_info.borrow_mut() = Some(session.info());
        }
        if let Ok(mut tls) = self.tls.try_borrow_mut()
            && let Some(mut session) = tls.take()
            && !aborting
            && reason.check::<ConnectionDone>()
            && !session.close_notify_sent()
            && let Some(sock) = self.socket.borrow().as_ref()
            && !self.reactor.ring_sending(self.fd)
        {
            // A clean end we did not start (the peer's close_notify or end of input):
            // answer with our close_notify, best effort, without waiting.
            session.close_notify();
            let _ = session.send(sock.as_fd());
        }
        if let Some(sock) = self.socket.borrow_mut().take() {
            if !aborting && reason.check::<ConnectionDone>() {
                // Not after an error: the socket is dead already.
                let _ = sock.shutdown(std::net::Shutdown::Both);
            }
            drop(sock);
        }
        if let Some(producer) = producer {
            producer.stop_producing();
        }
        let protocol = self.protocol.borrow_mut().take();
        if let Some(mut protocol) = protocol {
            let r = reason.clone();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                protocol.connection_lost(r)
            }));
            if let Err(payload) = outcome {
                crate::log::error!(
                    target: "torsion::net",
                    "connection_lost of the protocol for {} panicked: {}",
                    self.peer,
                    Failure::from_panic(&*payload)
                );
            }
            drop(protocol);
        }
        if let Some(ended) = &self.ended {
            ended.connection_ended(reason);
        }
    }
}

/// How far a flush got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// Everything went out.
    Drained,
    /// The socket's buffer is full: wait until it is writable.
    Blocked,
    /// The rest waits for the TLS handshake to complete.
    AwaitingHandshake,
}

/// Sends up to `limit` of the buffered bytes as they are.
fn send_clear(fd: BorrowedFd<'_>, core: &mut StreamCore, limit: usize) -> Result<Sent, io::Error> {
    let mut left = limit.min(core.buffered());
    while left > 0 {
        let pending = &core.pending()[..left];
        match rustix::net::send(fd, pending, SendFlags::NOSIGNAL) {
            Ok(n) => {
                core.consume(n);
                left -= n;
            }
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Ok(Sent::Blocked),
            Err(err) => return Err(err.into()),
        }
    }
    Ok(Sent::Drained)
}

/// The most of the buffer one send on the ring carries.
const RING_SEND_MAX: usize = 256 * 1024;

/// Sends on the ring (io_uring), as [`send_clear`] and [`send_tls`] do on the socket: a copy
/// of the buffered bytes (the ones written before TLS first), or the ciphertext waiting, in
/// one send whose end comes back to `do_write`; [`Sent::Blocked`] until then. `None` when
/// the connection is not on the ring.
fn ring_send(
    reactor: &Reactor,
    fd: RawFd,
    st: &mut State,
    tls: Option<&mut TlsSession>,
) -> Option<Result<Sent, io::Error>> {
    if reactor.ring_sending(fd) {
        return Some(Ok(Sent::Blocked));
    }
    let clear = match &tls {
        None => st.core.buffered(),
        Some(_) => st.clear_before_tls.min(st.core.buffered()),
    };
    if clear > 0 || tls.is_none() {
        if clear == 0 {
            return None;
        }
        let n = clear.min(RING_SEND_MAX);
        let pending = &st.core.pending()[..n];
        return match reactor.ring_send(fd, |out| out.extend_from_slice(pending)) {
            Ok(false) => None,
            Ok(true) => {
                st.ring_from_core = n;
                Some(Ok(Sent::Blocked))
            }
            Err(err) => Some(Err(err)),
        };
    }
    let session = tls?;
    if !reactor.on_ring(fd) {
        return None;
    }
    loop {
        if session.wants_write() {
            return match reactor.ring_send(fd, |out| session.send_into(out)) {
                Ok(false) => None,
                Ok(true) => {
                    st.ring_from_core = 0;
                    Some(Ok(Sent::Blocked))
                }
                Err(err) => Some(Err(err)),
            };
        }
        if st.core.buffered() == 0 {
            return Some(Ok(Sent::Drained));
        }
        if session.close_notify_sent() {
            // Written after the close began: dropped, as after `lose_write_connection`.
            let n = st.core.buffered();
            st.core.consume(n);
            return Some(Ok(Sent::Drained));
        }
        match session.encrypt(st.core.pending()) {
            0 => return Some(Ok(Sent::AwaitingHandshake)),
            n => st.core.consume(n),
        }
    }
}

/// Sends over TLS: the bytes written before TLS started in the clear, then waiting
/// ciphertext, then the buffered plaintext, encrypted as rustls's outgoing buffer (64 KiB)
/// takes it, until the socket is full or all is out.
fn send_tls(
    fd: BorrowedFd<'_>,
    st: &mut State,
    session: &mut TlsSession,
) -> Result<Sent, io::Error> {
    if st.clear_before_tls > 0 {
        let before = st.core.buffered();
        let sent = send_clear(fd, &mut st.core, st.clear_before_tls)?;
        st.clear_before_tls -= before - st.core.buffered();
        if sent == Sent::Blocked {
            return Ok(Sent::Blocked);
        }
    }
    loop {
        while session.wants_write() {
            match session.send(fd) {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(Sent::Blocked),
                Err(err) => return Err(err),
            }
        }
        if st.core.buffered() == 0 {
            return Ok(Sent::Drained);
        }
        if session.close_notify_sent() {
            // Written after the close began: dropped, as after `lose_write_connection`.
            let n = st.core.buffered();
            st.core.consume(n);
            return Ok(Sent::Drained);
        }
        match session.encrypt(st.core.pending()) {
            0 => return Ok(Sent::AwaitingHandshake),
            n => st.core.consume(n),
        }
    }
}

impl Flush for Connection {
    fn flush(&self) {
        self.send_buffered();
    }
}

impl FileDescriptor for Connection {
    fn fileno(&self) -> RawFd {
        self.fd
    }

    fn connection_lost(&self, reason: Failure) {
        self.finish(reason);
    }

    fn log_prefix(&self) -> String {
        format!("{} {}", self.kind, self.peer)
    }
}

impl ReadDescriptor for Connection {
    /// One read: what the ring received (io_uring), or one `recv` (the other backends).
    ///
    /// What the ring received is taken while the connection reads, up to
    /// [`RING_READS_PER_EVENT`] receives (the ring may have received several since the
    /// last event); what is left is reported again by the next wait.
    fn do_read(&self) -> Result<(), Failure> {
        for _ in 0..RING_READS_PER_EVENT {
            let wanted = self.reading_unpaused() && !self.state.borrow().core.is_throttled();
            if !wanted && !self.tls_needs_input() {
                return Ok(());
            }
            match self.reactor.take_received(self.fd) {
                Taken::NotOnRing => return self.read_socket(),
                Taken::Nothing => return Ok(()),
                Taken::Got(Received::Ring(buffer)) => {
                    let result = self.deliver(Ok(&buffer));
                    self.reactor.give_back(buffer);
                    result?;
                }
                Taken::Got(Received::Copied(bytes)) => self.deliver(Ok(&bytes))?,
                Taken::Got(Received::Eof) if self.output_on_its_way() => {
                    // The ring may deliver the end of input with the bytes before it, whose
                    // answer is not out yet: it waits for that, as it does with `recv`
                    // (where the flush comes first).
                    self.reactor.untake(self.fd, Received::Eof);
                    self.state.borrow_mut().eof_deferred = true;
                    self.reactor.remove_reader(self.fd);
                    return Ok(());
                }
                Taken::Got(Received::Eof) => return self.deliver(Ok(&[])),
                Taken::Got(Received::Failed(err)) => return self.deliver(Err(err)),
                // Only a listening socket accepts.
                Taken::Got(Received::Accepted(_)) => return Ok(()),
            }
        }
        Ok(())
    }
}

impl Connection {
    /// Whether output is buffered or being sent on the ring.
    fn output_on_its_way(&self) -> bool {
        self.state.borrow().core.buffered() > 0 || self.reactor.ring_sending(self.fd)
    }

    /// One `recv` into the thread's shared read buffer, delivered.
    fn read_socket(&self) -> Result<(), Failure> {
        let mut buffer = super::read_buffer::take();
        let received = {
            let sock = self.socket.borrow();
            match sock.as_ref() {
                Some(sock) => loop {
                    match rustix::net::recv(sock.as_fd(), &mut buffer[..], RecvFlags::empty())
                        .map(|(n, _)| n)
                    {
                        Err(Errno::INTR) => continue,
                        other => break other,
                    }
                },
                None => Ok(0),
            }
        };
        let result = match received {
            Ok(n) => self.deliver(Ok(&buffer[..n])),
            Err(Errno::AGAIN) => Ok(()),
            Err(err) => self.deliver(Err(io::Error::from(err))),
        };
        super::read_buffer::give_back(buffer);
        result
    }

    /// Hands what one read got (no bytes: the end of input) to TLS or the protocol.
    fn deliver(&self, received: io::Result<&[u8]>) -> Result<(), Failure> {
        match received {
            Ok([]) => match self.tls_eof() {
                Some(reason) => Err(reason),
                None => self.eof(),
            },
            Ok(bytes) if self.tls.borrow().is_some() => self.tls_received(bytes),
            Ok(bytes) => {
                self.with_protocol(|p| p.data_received(bytes));
                Ok(())
            }
            Err(err) => {
                tracing::debug!(target: "torsion::net", "recv from {} failed: {err}", self.peer);
                Err(self.lost_reason(err))
            }
        }
    }
}

impl WriteDescriptor for Connection {
    /// Sends more: the socket has room (the other backends), or the send on the ring has
    /// ended (io_uring), its bytes then consumed from the buffer.
    fn do_write(&self) -> Result<(), Failure> {
        if let Some(sent) = self.reactor.take_sent(self.fd) {
            let mut st = self.state.borrow_mut();
            let from_core = std::mem::take(&mut st.ring_from_core);
            if let Err(err) = sent {
                drop(st);
                tracing::debug!(target: "torsion::net", "send to {} failed: {err}", self.peer);
                return Err(self.lost_reason(err));
            }
            if !st.core.is_lost() {
                st.core.consume(from_core);
                st.clear_before_tls = st.clear_before_tls.saturating_sub(from_core);
            }
        }
        self.send_buffered();
        Ok(())
    }
}

impl TransportOps for Connection {
    fn write(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let Some(written) = self.state.borrow_mut().core.write(data) else {
            return;
        };
        self.schedule_flush();
        if written.stop_reading && self.reading_unpaused() {
            self.set_reading(false);
        }
        if let Some(producer) = written.pause {
            producer.pause_producing();
        }
    }

    fn throttle_reading(&self, on: bool) {
        let resume = self.state.borrow_mut().core.set_throttle(on);
        if resume && self.reading_unpaused() {
            self.set_reading(true);
        }
    }

    fn lose_connection(&self) {
        {
            let mut st = self.state.borrow_mut();
            if !st.core.lose_connection() {
                return;
            }
            st.reading = false;
        }
        self.set_reading(false);
        self.schedule_flush();
    }

    fn abort_connection(&self) {
        {
            let mut st = self.state.borrow_mut();
            if !st.core.abort() {
                return;
            }
            st.reading = false;
        }
        if let Some(sock) = self.socket.borrow().as_ref() {
            let _ = sock.set_linger(Some(Duration::ZERO));
        }
        self.reactor.remove_stream(self.fd);
        self.schedule_loss(Failure::routine(ConnectionAborted));
    }

    fn lose_write_connection(&self) {
        if self.state.borrow_mut().core.lose_write_connection() {
            self.schedule_flush();
        }
    }

    fn peer(&self) -> Address {
        self.peer.clone()
    }

    fn host(&self) -> Address {
        self.host
            .get_or_init(|| {
                let local = self
                    .socket
                    .borrow()
                    .as_ref()
                    .and_then(|s| s.local_addr().ok());
                match (local, &self.peer) {
                    (Some(local), Address::Unix(_)) => super::unix::unix_address_of(&local),
                    (Some(local), _) => local.as_socket().map_or(
                        Address::Tcp(SocketAddr::from(([0, 0, 0, 0], 0))),
                        Address::Tcp,
                    ),
                    (None, Address::Unix(_)) => Address::Unix(None),
                    (None, _) => Address::Tcp(SocketAddr::from(([0, 0, 0, 0], 0))),
                }
            })
            .clone()
    }

    fn pause_producing(&self) {
        let change = {
            let mut st = self.state.borrow_mut();
            let was = st.reading && !st.paused && !st.core.is_throttled();
            st.paused = true;
            was
        };
        if change {
            self.set_reading(false);
        }
    }

    fn resume_producing(&self) {
        let change = {
            let mut st = self.state.borrow_mut();
            let change = st.paused && st.reading && !st.core.is_lost() && !st.core.is_throttled();
            st.paused = false;
            change
        };
        if change {
            self.set_reading(true);
        }
    }

    fn register_producer(
        &self,
        producer: Rc<dyn Producer>,
        streaming: bool,
    ) -> Result<(), Failure> {
        let registered = self
            .state
            .borrow_mut()
            .core
            .register(producer.clone(), streaming)?;
        match registered {
            Registered::Stop => producer.stop_producing(),
            Registered::Push => {}
            Registered::PullFirst(number) => {
                // A pull producer is asked for its first chunk after the caller returns,
                // so that `register_producer` never calls back into the code calling it;
                // by then it may have been unregistered, resumed already by a drain, or
                // the connection lost.
                let me = self.me.clone();
                self.reactor.call_soon(move || {
                    let due = me
                        .upgrade()
                        .and_then(|c| c.state.borrow_mut().core.first_resume(number));
                    if let Some(producer) = due {
                        producer.resume_producing();
                    }
                });
            }
        }
        Ok(())
    }

    fn unregister_producer(&self) {
        let disconnecting = self.state.borrow_mut().core.unregister();
        if disconnecting {
            self.schedule_flush();
        }
    }

    fn buffered(&self) -> usize {
        self.state.borrow().core.buffered()
    }

    fn is_connected(&self) -> bool {
        !self.state.borrow().core.is_lost()
    }

    fn set_tcp_nodelay(&self, enabled: bool) -> io::Result<()> {
        if self.kind != "tcp" {
            return Err(io::ErrorKind::Unsupported.into());
        }
        match self.socket.borrow().as_ref() {
            Some(sock) => sock.set_tcp_nodelay(enabled),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn set_tcp_keepalive(&self, enabled: bool) -> io::Result<()> {
        if self.kind != "tcp" {
            return Err(io::ErrorKind::Unsupported.into());
        }
        match self.socket.borrow().as_ref() {
            Some(sock) => sock.set_keepalive(enabled),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
    fn start_tls(&self, start: StartTls) -> Result<(), Failure> {
        if self.tls.borrow().is_some() {
            return Err(
                TlsError::cannot_start("TLS was started on this connection already").into(),
            );
        }
        if self.state.borrow().core.is_lost() {
            return Err(TlsError::cannot_start("the connection is closed").into());
        }
        let session = match TlsSession::new(&start) {
            Ok(session) => session,
            Err(err) => {
                let reason = Failure::new(err);
                self.schedule_loss(reason.clone());
                return Err(reason);
            }
        };
        {
            let mut st = self.state.borrow_mut();
            st.clear_before_tls = st.core.buffered();
        }
        *self.tls.borrow_mut() = Some(session);
        if let Some(timeout) = start.handshake_timeout() {
            let me = self.me.clone();
            let deadline = self.reactor.call_later(timeout, move || {
                let Some(me) = me.upgrade() else { return };
                let handshaking = me.tls.borrow().as_ref().is_some_and(TlsSession::is_handshaking);
                if handshaking {
                    me.state.borrow_mut().handshake_deadline = None;
                    tracing::debug!(target: "torsion::tls", "TLS handshake with {} timed out", me.peer);
                    me.finish(TlsError::new(TlsErrorKind::HandshakeTimeout, true).into());
                }
            });
            self.state.borrow_mut().handshake_deadline = Some(deadline);
        }
        if !start.received.is_empty()
            && let Some(me) = self.rc()
        {
            let received = start.received;
            self.reactor.call_soon(move || me.feed_received(received));
        }
        // A client's hello goes out now.
        self.schedule_flush();
        Ok(())
    }

    fn tls_info(&self) -> Option<TlsInfo> {
        match self.tls.borrow().as_ref() {
            Some(session) => Some(session.info()),
            None => self.last_tls_info.borrow().clone(),
        }
    }

    fn peer_credentials(&self) -> Option<super::unix::PeerCredentials> {
        if self.kind != "unix" {
            return None;
        }
        let sock = self.socket.borrow();
        super::unix::peer_credentials(sock.as_ref()?.as_fd())
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}
