//! One connection's TLS state (what Twisted's `TLSMemoryBIOProtocol` keeps around its
//! OpenSSL `Connection` and memory BIOs): the rustls connection, fed ciphertext as it is
//! received and plaintext as the stream core releases it, and drained of ciphertext into
//! the socket.
//!
//! The socket connection (`net/connection.rs`) owns one [`TlsSession`] once TLS starts and
//! calls it from its read and write paths; the session does no reactor work and never
//! calls a protocol.
//!
//! Invariant: plaintext reaches rustls only after the handshake has completed (until then
//! it waits in the stream core, under its water marks), and every plaintext byte rustls
//! decrypts is taken out at once, so rustls's 16 KiB received-plaintext limit is never
//! reached and `read_tls` never refuses for it.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::BorrowedFd;

use rustix::net::SendFlags;
use rustls::pki_types::ServerName;

use super::{Side, StartTls, TlsError, TlsErrorKind, TlsInfo};

/// The rustls connection of one transport and what the transport must know of it.
pub(crate) struct TlsSession {
    conn: rustls::Connection,
    /// `handshake_completed` was reported.
    reported: bool,
    close_notify_sent: bool,
    peer_closed: bool,
}

/// What [`TlsSession::receive`] found.
#[derive(Default)]
pub(crate) struct Received {
    /// The handshake completed with these bytes.
    pub(crate) handshake_completed: bool,
    /// The peer sent `close_notify`: no more data comes.
    pub(crate) peer_closed: bool,
    /// How many decrypted bytes are at the start of the plaintext buffer.
    pub(crate) plaintext: usize,
}

impl TlsSession {
    /// A session for `start` (its already-received bytes are the caller's to feed).
    pub(crate) fn new(start: &StartTls) -> Result<TlsSession, TlsError> {
        let conn: rustls::Connection = match &start.side {
            Side::Server(config) => rustls::ServerConnection::new(config.rustls.clone())
                .map_err(|e| TlsError::from_rustls(e, true))?
                .into(),
            Side::Client(config, name) => {
                let name = ServerName::try_from(name.clone()).map_err(|_| {
                    TlsError::new(
                        TlsErrorKind::CannotStart(
                            "the server name is not a DNS name or an IP address",
                        ),
                        true,
                    )
                })?;
                rustls::ClientConnection::new(config.rustls.clone(), name)
                    .map_err(|e| TlsError::from_rustls(e, true))?
                    .into()
            }
        };
        Ok(TlsSession {
            conn,
            reported: false,
            close_notify_sent: false,
            peer_closed: false,
        })
    }

    /// Whether the handshake is still going on.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether the peer sent `close_notify`.
    pub(crate) fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Feeds received ciphertext; writes what it decrypts at the start of `plaintext`
    /// (grown as needed, never zeroed again: only the first [`Received::plaintext`] bytes
    /// mean anything).
    ///
    /// # Errors
    ///
    /// The peer broke the protocol or the handshake failed; the session may then have an
    /// alert to send (see [`wants_write`](TlsSession::wants_write)).
    pub(crate) fn receive(
        &mut self,
        mut ciphertext: &[u8],
        plaintext: &mut Vec<u8>,
    ) -> Result<Received, TlsError> {
        let mut received = Received::default();
        while !ciphertext.is_empty() && !self.peer_closed {
            let handshaking = self.conn.is_handshaking();
            let before = ciphertext.len();
            match self.conn.read_tls(&mut ciphertext) {
                // No room taken: a record whose length is out of range (rustls then reads
                // nothing); processing below says so, or the check after it does.
                Ok(_) => {}
                // Cannot happen while every decrypted byte is taken out below; if it does,
                // take them out and go on.
                Err(e) if e.kind() == io::ErrorKind::Other => {}
                // A handshake message over rustls's 64 KiB limit, or the like.
                Err(e) => return Err(TlsError::malformed(e.to_string(), handshaking)),
            }
            let state = self
                .conn
                .process_new_packets()
                .map_err(|e| TlsError::from_rustls(e, handshaking))?;
            if ciphertext.len() == before && !ciphertext.is_empty() && !state.peer_has_closed() {
                return Err(TlsError::malformed(
                    "a record rustls cannot take".to_string(),
                    handshaking,
                ));
            }
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = received.plaintext;
                if plaintext.len() < start + n {
                    plaintext.resize(start + n, 0);
                }
                let got = self
                    .conn
                    .reader()
                    .read(&mut plaintext[start..start + n])
                    .unwrap_or(0);
                received.plaintext += got;
            }
            if state.peer_has_closed() {
                self.peer_closed = true;
                received.peer_closed = true;
            }
        }
        if !self.reported && !self.conn.is_handshaking() {
            self.reported = true;
            received.handshake_completed = true;
        }
        Ok(received)
    }

    /// Encrypts as much of `plaintext` as rustls's outgoing buffer takes; how many bytes it
    /// took (none during the handshake).
    pub(crate) fn encrypt(&mut self, plaintext: &[u8]) -> usize {
        if self.conn.is_handshaking() || self.close_notify_sent {
            return 0;
        }
        self.conn.writer().write(plaintext).unwrap_or(0)
    }

    /// Whether ciphertext waits to be sent.
    pub(crate) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Sends waiting ciphertext on `socket`, without blocking.
    pub(crate) fn send(&mut self, socket: BorrowedFd<'_>) -> io::Result<usize> {
        self.conn.write_tls(&mut SocketWriter(socket))
    }

    /// Moves waiting ciphertext into `out` (for a send on the ring).
    pub(crate) fn send_into(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Queues `close_notify` (once); plaintext given after it is refused.
    pub(crate) fn close_notify(&mut self) {
        if !self.close_notify_sent {
            self.close_notify_sent = true;
            self.conn.send_close_notify();
        }
    }

    /// Whether `close_notify` was queued.
    pub(crate) fn close_notify_sent(&self) -> bool {
        self.close_notify_sent
    }

    /// What was negotiated.
    pub(crate) fn info(&self) -> TlsInfo {
        let server_name = match &self.conn {
            rustls::Connection::Server(server) => server.server_name().map(str::to_string),
            rustls::Connection::Client(_) => None,
        };
        TlsInfo {
            handshake_complete: !self.conn.is_handshaking(),
            protocol_version: self.conn.protocol_version(),
            cipher_suite: self.conn.negotiated_cipher_suite().map(|s| s.suite()),
            alpn_protocol: self.conn.alpn_protocol().map(<[u8]>::to_vec),
            peer_certificates: self
                .conn
                .peer_certificates()
                .map(<[_]>::to_vec)
                .unwrap_or_default(),
            server_name,
        }
    }
}

/// A non-blocking socket as rustls's writer: `send` (and `sendmsg` for several records)
/// with `MSG_NOSIGNAL`, so a peer that went away is an `EPIPE`, not a signal.
struct SocketWriter<'a>(BorrowedFd<'a>);

impl Write for SocketWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match rustix::net::send(self.0, buf, SendFlags::NOSIGNAL) {
                Err(rustix::io::Errno::INTR) => continue,
                other => return other.map_err(io::Error::from),
            }
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            match rustix::net::sendmsg(
                self.0,
                bufs,
                &mut rustix::net::SendAncillaryBuffer::default(),
                SendFlags::NOSIGNAL,
            ) {
                Err(rustix::io::Errno::INTR) => continue,
                other => return other.map_err(io::Error::from),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

thread_local! {
    static PLAINTEXT: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
}

/// Takes this thread's buffer for decrypted bytes (its old contents are overwritten by
/// [`TlsSession::receive`]), or a fresh one if it is out, as the read buffer is shared
/// (`net/read_buffer.rs`).
pub(crate) fn take_plaintext_buffer() -> Vec<u8> {
    PLAINTEXT
        .try_with(|b| b.borrow_mut().take())
        .ok()
        .flatten()
        .unwrap_or_else(|| vec![0; crate::net::read_buffer::READ_BUFFER_SIZE])
}

/// Gives the buffer back; one grown past twice the read size is let go.
pub(crate) fn give_back_plaintext_buffer(buffer: Vec<u8>) {
    if buffer.capacity() > 2 * crate::net::read_buffer::READ_BUFFER_SIZE {
        return;
    }
    let _ = PLAINTEXT.try_with(|b| *b.borrow_mut() = Some(buffer));
}
