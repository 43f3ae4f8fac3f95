//! tokio's I/O traits over torsion's stream transports: [`TokioStream`] is
//! `tokio::io::AsyncRead + AsyncWrite + Unpin` over a TCP, UNIX or TLS connection (or any
//! [`Transport`]), polled by the reactor's own local executor, with no thread of its own.
//! Twisted's nearest counterparts are `twisted.internet.protocol.Protocol` seen through
//! an asyncio `StreamReader`/`StreamWriter` pair, as `asyncioreactor` users do it.
//!
//! Flow control both ways:
//! - reading: the [`StreamProtocol`] buffers what the transport reads and wakes the reader;
//!   past 64 KiB unread it pauses the transport (`pause_producing`: torsion stops reading
//!   the socket, so TCP slows the peer), and resumes it once the reader has drained the
//!   buffer below 16 KiB ([`TokioStream::set_read_water_marks`] changes both);
//! - writing: `poll_write` hands at most 64 KiB at a time to `transport.write` and is
//!   `Pending` while the transport has paused the stream's streaming producer (its send
//!   buffer is over its high-water mark), until it resumes it. `poll_flush` is ready at
//!   once (the transport sends its buffer by itself, as the kernel does a socket's);
//!   `poll_shutdown` closes the sending side after the buffer (`lose_write_connection`).
//!
//! End of input reads as 0 bytes; a connection lost uncleanly reads and writes as an
//! `io::Error`: `ConnectionReset` for a lost connection, `ConnectionAborted` for an aborted
//! one, `InvalidData` for a TLS error, the socket's own error otherwise; `BrokenPipe` for a
//! write after the connection closed. Dropping the stream closes the connection once its
//! buffered output is sent (`lose_connection`).
//!
//! [`serve`] runs an `async fn(TokioStream)` for each connection a listener accepts;
//! [`connect_stream`] connects one through any client endpoint.
//!
//! Invariant: a stream and its protocol live on the reactor's thread; neither holds a
//! borrow of their shared state while calling the transport, a waker or user code.

mod connect;
mod protocol;
mod serve;
mod shared;

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use torsion::net::{Address, Transport};

pub use connect::connect_stream;
pub use protocol::StreamProtocol;
pub use serve::{Serve, serve};
use shared::{MAX_WRITE, Read, Shared, Write};

/// A torsion connection as a tokio byte stream (`AsyncRead + AsyncWrite + Unpin`; in
/// Twisted's world, an asyncio `StreamReader`/`StreamWriter` pair over a transport): see the
/// [module doc](crate::stream) for its flow control and errors. Get one from [`serve`],
/// [`connect_stream`] or [`stream_protocol`]; use it from tasks on the reactor's thread
/// ([`torsion::spawn`]), not from tokio's runtime (it is `!Send`).
///
/// # Examples
///
/// An echo server written against tokio's traits, serving over torsion's TCP:
///
/// ```
/// use std::rc::Rc;
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// use torsion::endpoints::TcpClientEndpoint;
/// use torsion::net::tcp::ListenOptions;
/// use torsion_tokio::{connect_stream, serve};
///
/// let reactor = torsion::Reactor::new().unwrap();
/// let echo = serve(|mut stream| async move {
///     let (mut reader, mut writer) = tokio::io::split(&mut stream);
///     tokio::io::copy(&mut reader, &mut writer).await?;
///     Ok(())
/// });
/// let options = ListenOptions { interface: [127, 0, 0, 1].into(), ..Default::default() };
/// let port = reactor.listen_tcp_with(0, echo, options).unwrap();
/// let addr = port.host().port().unwrap();
/// let r = reactor.clone();
/// let mut done = torsion::spawn(async move {
///     let endpoint = TcpClientEndpoint::new(&r, "127.0.0.1", addr);
///     let mut stream = connect_stream(&endpoint).await?;
///     stream.write_all(b"hello").await?;
///     stream.shutdown().await?;
///     let mut echoed = String::new();
///     stream.read_to_string(&mut echoed).await?;
///     r.stop()?;
///     Ok(echoed)
/// });
/// reactor.run().unwrap();
/// assert_eq!(done.take_result().unwrap().unwrap(), "hello");
/// ```
pub struct TokioStream {
    shared: Rc<Shared>,
}

/// A [`StreamProtocol`] and the [`TokioStream`] it feeds, to wire by hand (Twisted's
/// `protocol.Protocol()` instance handed to `connectProtocol`): connect or
/// listen with the protocol (`connect_protocol`, a one-connection factory, `start_tls`, …)
/// and use the stream. Until the connection is made, reads and writes wait.
///
/// # Examples
///
/// ```
/// use torsion::endpoints::{TcpClientEndpoint, connect_protocol};
///
/// let reactor = torsion::Reactor::new().unwrap();
/// let (protocol, stream) = torsion_tokio::stream_protocol();
/// let endpoint = TcpClientEndpoint::new(&reactor, "127.0.0.1", 9);
/// let _connected = connect_protocol(&endpoint, protocol);
/// assert!(stream.transport().is_none());
/// ```
pub fn stream_protocol() -> (StreamProtocol, TokioStream) {
    let shared = Shared::new();
    (
        StreamProtocol::new(shared.clone(), None),
        TokioStream { shared },
    )
}

impl TokioStream {
    pub(crate) fn from_shared(shared: Rc<Shared>) -> TokioStream {
        TokioStream { shared }
    }

    /// The connection's transport, while it is connected (Twisted's `self.transport`): for
    /// its addresses, `tls_info`, socket options.
    pub fn transport(&self) -> Option<Transport> {
        self.shared.transport()
    }

    /// The other end's address, while connected (Twisted's `transport.getPeer()`).
    pub fn peer(&self) -> Option<Address> {
        self.transport().map(|t| t.peer())
    }

    /// Our end's address, while connected (Twisted's `transport.getHost()`).
    pub fn host(&self) -> Option<Address> {
        self.transport().map(|t| t.host())
    }

    /// How many received bytes wait to be read.
    pub fn unread(&self) -> usize {
        self.shared.unread()
    }

    /// Whether the stream has paused its transport's reading because too much is unread.
    pub fn is_reading_paused(&self) -> bool {
        self.shared.is_reading_paused()
    }

    /// Sets the read side's water marks: the transport is paused once `high` bytes are
    /// unread and resumed once the reader has taken all but `low` (64 KiB and 16 KiB by
    /// default).
    pub fn set_read_water_marks(&self, high: usize, low: usize) {
        self.shared.set_read_water_marks(high, low);
    }
}

impl std::fmt::Debug for TokioStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokioStream")
            .field("peer", &self.peer())
            .field("unread", &self.unread())
            .finish()
    }
}

impl AsyncRead for TokioStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        match self.shared.poll_read(buf, cx.waker()) {
            Read::Data(resume) => {
                if let Some(transport) = resume {
                    transport.resume_producing();
                }
                Poll::Ready(Ok(()))
            }
            Read::Eof => Poll::Ready(Ok(())),
            Read::Failed(err) => Poll::Ready(Err(err)),
            Read::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for TokioStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        match self.shared.poll_write(cx.waker()) {
            Write::To(transport) => {
                let n = buf.len().min(MAX_WRITE);
                transport.write(&buf[..n]);
                Poll::Ready(Ok(n))
            }
            Write::Failed(err) => Poll::Ready(Err(err)),
            Write::Pending => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.shared.flush_error() {
            Some(err) => Poll::Ready(Err(err)),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.shared.shut_write() {
            Ok(Some(transport)) => {
                // No more writes: the gate goes first. A paused producer still registered
                // would be resumed by the drain in place of the half-close (a transport
                // resumes its paused producer before it acts on a pending shutdown).
                transport.unregister_producer();
                transport.lose_write_connection();
                Poll::Ready(Ok(()))
            }
            Ok(None) => Poll::Ready(Ok(())),
            Err(err) => Poll::Ready(Err(err)),
        }
    }
}

impl Drop for TokioStream {
    fn drop(&mut self) {
        if let Some(transport) = self.shared.detach() {
            transport.unregister_producer();
            transport.lose_connection();
        }
    }
}
