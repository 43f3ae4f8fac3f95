//! Serving with tokio-style handlers: [`serve`] is a torsion factory (Twisted's
//! `Factory.forProtocol`) whose protocol hands each connection, as a
//! [`TokioStream`], to an `async fn` run on the reactor's local executor
//! ([`torsion::spawn`], Twisted's `ensureDeferred`).
//!
//! Invariant: the handler starts once the connection is made, from the protocol's
//! `connection_made` with no borrow held; its failure is logged, never dropped silently.

use std::future::Future;
use std::rc::Rc;

use torsion::Failure;
use torsion::log::Logger;
use torsion::net::Address;
use torsion::protocol::{Factory, Protocol};

use super::TokioStream;
use super::protocol::StreamProtocol;
use super::shared::Shared;

/// The factory [`serve`] returns (Twisted's `Factory.forProtocol`): listen with it on any
/// stream server endpoint.
pub struct Serve<F> {
    handler: F,
    log: Logger,
}

impl<F> std::fmt::Debug for Serve<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve").finish_non_exhaustive()
    }
}

/// A factory that runs `handler` with a [`TokioStream`] for each connection, as a task on
/// the reactor's thread (Twisted's `Factory.forProtocol`, with the protocol written as an
/// `async fn` against tokio's I/O traits). Listen with it anywhere a factory goes:
/// `reactor.listen_tcp(port, serve(h))`, `listen_unix`, `listen_tls`, or any
/// [`ServerEndpoint`](torsion::endpoints::ServerEndpoint). A handler that fails is logged
/// (namespace `torsion_tokio.serve`); the connection closes when the handler drops its
/// stream.
///
/// # Examples
///
/// ```
/// use tokio::io::AsyncWriteExt;
/// use torsion::net::tcp::ListenOptions;
/// use torsion_tokio::serve;
///
/// let reactor = torsion::Reactor::new().unwrap();
/// let hello = serve(|mut stream| async move {
///     stream.write_all(b"hello from tokio's traits\r\n").await?;
///     Ok(())
/// });
/// let options = ListenOptions { interface: [127, 0, 0, 1].into(), ..Default::default() };
/// let port = reactor.listen_tcp_with(0, hello, options).unwrap();
/// assert_ne!(port.host().port(), Some(0));
/// ```
pub fn serve<F, Fut>(handler: F) -> Rc<Serve<F>>
where
    F: Fn(TokioStream) -> Fut + 'static,
    Fut: Future<Output = Result<(), Failure>> + 'static,
{
    Rc::new(Serve {
        handler,
        log: Logger::new("torsion_tokio.serve"),
    })
}

impl<F, Fut> Factory for Serve<F>
where
    F: Fn(TokioStream) -> Fut + 'static,
    Fut: Future<Output = Result<(), Failure>> + 'static,
{
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>> {
        let peer = addr.clone();
        let start = Box::new(move |stream: TokioStream| {
            let log = self.log.clone();
            let handled = torsion::spawn((self.handler)(stream));
            drop(handled.add_errback(move |failure| {
                log.failure(
                    format_args!("the handler of a connection from {peer} failed"),
                    &failure,
                );
                Ok(())
            }));
        });
        Some(Box::new(StreamProtocol::new(Shared::new(), Some(start))))
    }
}
