//! Connecting a [`TokioStream`] through any client endpoint (Twisted's
//! `endpoints.connectProtocol`, with the protocol a tokio byte stream).
//!
//! Invariant: the stream is handed out only once the connection is made (for TLS, once the
//! handshake has completed), so its first read or write never waits for the connection.

use torsion::Deferred;
use torsion::endpoints::{ClientEndpoint, connect_protocol};

use super::{TokioStream, stream_protocol};

/// Connects through `endpoint` (TCP, UNIX, TLS, Happy Eyeballs, or one parsed from a
/// string) and fires with the connection as a [`TokioStream`] (Twisted's
/// `connectProtocol`). It fails as the connection attempt does (refused, timed out, a TLS
/// error), and cancelling it stops the attempt.
///
/// # Examples
///
/// ```
/// use torsion::endpoints::{UnixClientEndpoint, UnixClientSpec};
/// use torsion::time::ReactorTime;
///
/// let reactor = torsion::Reactor::new().unwrap();
/// let spec = UnixClientSpec::new("/nonexistent/torsion.sock");
/// let endpoint = UnixClientEndpoint::new(&reactor, spec);
/// let mut stream = torsion_tokio::connect_stream(&endpoint);
/// let r = reactor.clone();
/// reactor.call_later(0.2, move || { let _ = r.stop(); });
/// reactor.run().unwrap();
/// assert!(stream.take_result().unwrap().is_err());
/// ```
pub fn connect_stream(endpoint: &dyn ClientEndpoint) -> Deferred<TokioStream> {
    let (protocol, stream) = stream_protocol();
    connect_protocol(endpoint, protocol).map(move |_transport| stream)
}
