//! The protocol under a [`TokioStream`](super::TokioStream) (Twisted's `IProtocol` feeding a
//! consumer, and the streaming `IPushProducer` a consumer registers): it puts what the
//! transport reads into the shared buffer, pausing the transport when too much is unread,
//! and registers a producer whose pause and resume gate the stream's writes.
//!
//! Invariant: the protocol never calls user code while the shared state is borrowed; the
//! one user code it runs (the [`serve`](super::serve) handler, in `connection_made`) runs
//! after every borrow is released.

use std::rc::{Rc, Weak};

use torsion::Failure;
use torsion::net::{Producer, Transport};
use torsion::protocol::Protocol;

use super::TokioStream;
use super::shared::Shared;

/// What runs once the connection is up: the handler of [`serve`](super::serve).
pub(crate) type OnConnected = Box<dyn FnOnce(TokioStream)>;

/// The torsion protocol of one [`TokioStream`] (see [`stream_protocol`](super::stream_protocol)):
/// Twisted's `Protocol` whose `dataReceived` feeds a reader, and whose transport has it
/// registered as a streaming producer (`IPushProducer`).
/// Connect or listen with it as with any protocol; it supports half-close, so the stream's
/// reader sees end of input while its writer can go on.
pub struct StreamProtocol {
    shared: Rc<Shared>,
    on_connected: Option<OnConnected>,
}

impl StreamProtocol {
    pub(crate) fn new(shared: Rc<Shared>, on_connected: Option<OnConnected>) -> StreamProtocol {
        StreamProtocol {
            shared,
            on_connected,
        }
    }
}

impl std::fmt::Debug for StreamProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamProtocol")
            .field("unread", &self.shared.unread())
            .finish_non_exhaustive()
    }
}

/// Gates the stream's writes on the transport's buffer (Twisted's streaming producer).
struct WriteGate(Weak<Shared>);

impl Producer for WriteGate {
    fn resume_producing(&self) {
        if let Some(shared) = self.0.upgrade() {
            shared.resume_writes();
        }
    }

    fn pause_producing(&self) {
        if let Some(shared) = self.0.upgrade() {
            shared.pause_writes();
        }
    }

    fn stop_producing(&self) {
        if let Some(shared) = self.0.upgrade() {
            shared.stop_writes();
        }
    }
}

impl Protocol for StreamProtocol {
    fn connection_made(&mut self, transport: Transport) {
        let gate: Rc<dyn Producer> = Rc::new(WriteGate(Rc::downgrade(&self.shared)));
        if transport.register_producer(gate, true).is_err() {
            torsion::log::Logger::new("torsion_tokio.stream").warn(
                "the transport already has a producer: the stream's writes are not flow-controlled",
            );
        }
        if !self.shared.connected(&transport) {
            // The stream was dropped while connecting.
            transport.unregister_producer();
            transport.lose_connection();
            return;
        }
        if let Some(on_connected) = self.on_connected.take() {
            on_connected(TokioStream::from_shared(self.shared.clone()));
        }
    }

    fn data_received(&mut self, data: &[u8]) {
        self.shared.received(data);
    }

    fn supports_half_close(&self) -> bool {
        true
    }

    fn read_connection_lost(&mut self) {
        self.shared.read_closed();
    }

    fn connection_lost(&mut self, reason: Failure) {
        self.shared.lost(&reason);
    }
}
