//! An in-memory connection between two protocols, pumped by hand (Twisted's
//! `twisted.test.iosim`: `FakeTransport`, `IOPump`, `connect`; and
//! `twisted.test.loopback.loopbackAsync`).
//!
//! [`Pump::connect`] gives a server and a client protocol one [`FakeTransport`] each and
//! connects them; what one writes stays in its transport until [`Pump::pump`] (one round) or
//! [`Pump::flush`] (rounds until nothing moves) carries it across. No socket, no reactor and
//! no time are involved, so a test of two protocols talking is deterministic and instant.
//! [`Pump`]'s docs say what a round does. Each [`FakeTransport`] keeps its buffer,
//! producer, throttle and closing state in the same core as a socket connection
//! (`net/stream.rs`), so it follows a socket's rules; only moving the bytes is the pump's.
//!
//! Invariant: the pump never holds a `RefCell` borrow while it calls a protocol or a
//! producer; a protocol is taken out of its slot for the call and put back after.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use crate::defer::{Deferred, Failure, Resolver};
use crate::error::{ConnectionAborted, ConnectionDone, ConnectionLost};
use crate::net::stream::{Registered, StreamCore};
use crate::net::tcp::{HIGH_WATER_MARK, LOW_WATER_MARK};
use crate::net::{Address, Producer, Transport, TransportOps};
use crate::protocol::Protocol;
use crate::time::ReactorTime;

/// How many rounds [`Pump::flush`] runs before it decides the protocols will never go quiet.
pub const MAX_FLUSH_ROUNDS: usize = 10_000;

/// The address of the server end of a [`Pump`]: `10.0.0.1:12345`.
fn server_address() -> Address {
    Address::Tcp(SocketAddr::from(([10, 0, 0, 1], 12345)))
}

/// The address of the client end of a [`Pump`]: `192.168.1.1:54321`.
fn client_address() -> Address {
    Address::Tcp(SocketAddr::from(([192, 168, 1, 1], 54321)))
}

struct FakeState {
    read_shut: bool,
    /// `pause_producing`: nothing is delivered to this side.
    paused: bool,
    /// The buffer, producer, throttle and closing rules, shared with sockets.
    core: StreamCore,
}

/// One end of a [`Pump`]'s connection: the transport its protocol writes to (Twisted's
/// `iosim.FakeTransport`).
///
/// It behaves as a TCP connection does, without a socket: writes are buffered until the pump
/// carries them; `lose_connection` closes once the buffer is delivered, as a socket does
/// (a pull or paused push producer must unregister first); `pause_producing` stops delivery to this side; a streaming producer is
/// paused when more than the high-water mark ([`HIGH_WATER_MARK`] by default) is buffered
/// and resumed once the buffer drains below the low-water mark; a pull producer is resumed
/// by the pump whenever the buffer is empty (the first time on the round after
/// `register_producer`, not at once as on a TCP connection).
pub struct FakeTransport {
    host: Address,
    peer: Address,
    state: RefCell<FakeState>,
    waker: RefCell<Option<Rc<dyn Fn()>>>,
}

impl FakeTransport {
    fn new(host: Address, peer: Address) -> Rc<FakeTransport> {
        Rc::new(FakeTransport {
            host,
            peer,
            state: RefCell::new(FakeState {
                read_shut: false,
                paused: false,
                core: StreamCore::new(HIGH_WATER_MARK, LOW_WATER_MARK),
            }),
            waker: RefCell::new(None),
        })
    }

    /// Whether `lose_connection` was called (Twisted's `disconnecting`).
    pub fn disconnecting(&self) -> bool {
        self.state.borrow().core.is_disconnecting()
    }

    /// Whether `abort_connection` was called.
    pub fn aborted(&self) -> bool {
        self.state.borrow().core.is_aborting()
    }

    /// Whether the protocol paused this transport (`pause_producing`): nothing is delivered
    /// to it until `resume_producing`.
    pub fn is_paused(&self) -> bool {
        self.state.borrow().paused
    }

    /// Whether the peer shut its sending side and this side got `read_connection_lost`.
    pub fn read_shut(&self) -> bool {
        self.state.borrow().read_shut
    }

    /// Whether this side's sending side is shut (`lose_write_connection` took effect).
    pub fn write_shut(&self) -> bool {
        self.state.borrow().core.is_write_shut()
    }

    /// The registered producer, if any.
    pub fn producer(&self) -> Option<Rc<dyn Producer>> {
        self.state
            .borrow()
            .core
            .producer()
            .map(|(producer, _)| producer)
    }

    /// Whether the registered producer is a streaming (push) producer; `false` when none is.
    pub fn streaming(&self) -> bool {
        self.state
            .borrow()
            .core
            .producer()
            .is_some_and(|(_, streaming)| streaming)
    }

    /// Sets the high- and low-water marks for a streaming producer (by default
    /// [`HIGH_WATER_MARK`] and [`LOW_WATER_MARK`]): it is paused when more than `high` bytes
    /// are buffered, and resumed when fewer than `low` are.
    pub fn set_water_marks(&self, high: usize, low: usize) {
        self.state.borrow_mut().core.set_water_marks(high, low);
    }

    fn set_waker(&self, waker: Option<Rc<dyn Fn()>>) {
        *self.waker.borrow_mut() = waker;
    }

    /// Tells a [`loopback`] driver that there is something to pump.
    fn wake(&self) {
        let waker = self.waker.borrow().clone();
        if let Some(waker) = waker {
            waker();
        }
    }
}

impl TransportOps for FakeTransport {
    /// Buffers `data` until the pump delivers it; dropped after the connection was lost,
    /// aborted or its write side shut. May pause a streaming producer (synchronously, as a
    /// TCP transport does).
    fn write(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let Some(written) = self.state.borrow_mut().core.write(data) else {
            return;
        };
        if let Some(producer) = written.pause {
            producer.pause_producing();
        }
        self.wake();
    }

    fn lose_connection(&self) {
        if self.state.borrow_mut().core.lose_connection() {
            self.wake();
        }
    }

    fn abort_connection(&self) {
        if self.state.borrow_mut().core.abort() {
            self.wake();
        }
    }

    fn lose_write_connection(&self) {
        if self.state.borrow_mut().core.lose_write_connection() {
            self.wake();
        }
    }

    fn peer(&self) -> Address {
        self.peer.clone()
    }

    fn host(&self) -> Address {
        self.host.clone()
    }

    /// Stops delivery to this side until `resume_producing`; the peer's writes wait in its
    /// buffer (and pause its streaming producer once over the high-water mark).
    fn pause_producing(&self) {
        self.state.borrow_mut().paused = true;
    }

    fn resume_producing(&self) {
        self.state.borrow_mut().paused = false;
        self.wake();
    }

    /// Holds delivery to this side while more than the high-water mark of its own output
    /// waits, until it drains below the low-water mark, as a TCP connection stops reading.
    fn throttle_reading(&self, on: bool) {
        self.state.borrow_mut().core.set_throttle(on);
        self.wake();
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
            // A pull producer is resumed by the next round, as a socket resumes it once the
            // caller has returned.
            Registered::Push | Registered::PullFirst(_) => self.wake(),
        }
        Ok(())
    }

    fn unregister_producer(&self) {
        self.state.borrow_mut().core.unregister();
        self.wake();
    }

    fn buffered(&self) -> usize {
        self.state.borrow().core.buffered()
    }

    fn is_connected(&self) -> bool {
        !self.state.borrow().core.is_lost()
    }

    /// Accepted and ignored: there is no Nagle delay in memory.
    fn set_tcp_nodelay(&self, enabled: bool) -> std::io::Result<()> {
        let _ = enabled;
        Ok(())
    }

    /// Accepted and ignored.
    fn set_tcp_keepalive(&self, enabled: bool) -> std::io::Result<()> {
        let _ = enabled;
        Ok(())
    }
}

impl fmt::Debug for FakeTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.borrow();
        f.debug_struct("FakeTransport")
            .field("host", &self.host)
            .field("peer", &self.peer)
            .field("buffered", &st.core.buffered())
            .field("disconnecting", &st.core.is_disconnecting())
            .field("aborting", &st.core.is_aborting())
            .field("paused", &st.paused)
            .field("lost", &st.core.is_lost())
            .finish_non_exhaustive()
    }
}

/// One side of the pump: its transport and its protocol (taken out while it runs).
struct Side {
    transport: Rc<FakeTransport>,
    protocol: RefCell<Option<Box<dyn Protocol>>>,
}

/// What the receiving side does with bytes for it.
#[derive(PartialEq, Eq)]
enum Receive {
    Deliver,
    Hold,
    Discard,
}

impl Side {
    fn new(protocol: Box<dyn Protocol>, host: Address, peer: Address) -> Side {
        Side {
            transport: FakeTransport::new(host, peer),
            protocol: RefCell::new(Some(protocol)),
        }
    }

    /// Runs `f` on the protocol with no borrow held; nothing if it is gone.
    fn call(&self, f: impl FnOnce(&mut dyn Protocol)) {
        let taken = self.protocol.borrow_mut().take();
        if let Some(mut protocol) = taken {
            f(&mut *protocol);
            *self.protocol.borrow_mut() = Some(protocol);
        }
    }

    fn supports_half_close(&self) -> bool {
        self.protocol
            .borrow()
            .as_ref()
            .is_some_and(|p| p.supports_half_close())
    }

    fn receive(&self) -> Receive {
        let mut st = self.transport.state.borrow_mut();
        let throttled = st.core.throttled();
        if st.core.is_lost() || st.core.is_disconnecting() || st.core.is_aborting() {
            Receive::Discard
        } else if st.paused || throttled {
            Receive::Hold
        } else {
            Receive::Deliver
        }
    }

    fn is_lost(&self) -> bool {
        self.transport.state.borrow().core.is_lost()
    }

    /// Resumes a registered pull producer if the buffer is empty.
    fn resume_pull_producer(&self) {
        let producer = {
            let st = self.transport.state.borrow();
            let core = &st.core;
            let idle = !core.is_lost()
                && !core.is_aborting()
                && !core.is_write_shut()
                && core.buffered() == 0;
            match core.producer() {
                Some((producer, false)) if idle => Some(producer),
                _ => None,
            }
        };
        if let Some(producer) = producer {
            producer.resume_producing();
        }
    }

    /// Takes the bytes to deliver to `to`: `(moved, data, producer to resume)`.
    fn take_output(&self, to: &Side) -> (bool, Option<Vec<u8>>, Option<Rc<dyn Producer>>) {
        let receive = to.receive();
        let mut st = self.transport.state.borrow_mut();
        if st.core.buffered() == 0 || receive == Receive::Hold {
            return (false, None, None);
        }
        let data = st.core.take_pending();
        let (producer, _) = st.core.progressed();
        let data = (receive == Receive::Deliver).then_some(data);
        (true, data, producer)
    }

    /// Delivers `data` if this side still reads, or puts it back in `from`'s buffer if it
    /// paused meanwhile.
    fn deliver(&self, from: &Side, data: Vec<u8>) {
        match self.receive() {
            Receive::Deliver => self.call(|p| p.data_received(&data)),
            Receive::Hold => from.transport.state.borrow_mut().core.put_back(data),
            Receive::Discard => {}
        }
    }

    /// Marks the side lost, stops its producer and tells its protocol, once.
    fn lose(&self, reason: Failure) {
        let lost = self.transport.state.borrow_mut().core.lose();
        let Some(producer) = lost else {
            return;
        };
        if let Some(producer) = producer {
            producer.stop_producing();
        }
        let protocol = self.protocol.borrow_mut().take();
        if let Some(mut protocol) = protocol {
            protocol.connection_lost(reason);
        }
    }
}

/// Clears `flushing` when a round ends, even by a panic.
struct RoundGuard<'a>(&'a Cell<bool>);

impl Drop for RoundGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// Two protocols connected in memory, with the bytes between them moved by hand (Twisted's
/// `iosim.IOPump`, as `iosim.connect` returns it).
///
/// The server's transport reports host `10.0.0.1:12345` and peer `192.168.1.1:54321`; the
/// client's the other way round.
///
/// # One round
///
/// A round does the first of these that applies, in this order:
///
/// 1. An `abort_connection` on either side closes both: the aborting side gets
///    [`ConnectionAborted`], the other [`ConnectionLost`] (a reset). Unsent bytes are dropped.
/// 2. Otherwise each side's registered pull producer is resumed if its transport's buffer is
///    empty; then the bytes each side wrote are taken, both directions at once, and delivered
///    (client → server first, then server → client). Bytes written during this delivery wait
///    for the next round: a protocol is never called from inside its own callback, or its
///    peer's. Bytes for a side that paused its transport (`pause_producing`) wait until it
///    resumes; bytes for a side that called `lose_connection` are dropped, since it stopped
///    reading. A paused push producer whose buffer drained below the low-water mark is
///    resumed. If any bytes moved, the round ends here.
/// 3. Otherwise a pending `lose_write_connection` whose buffer is empty shuts that direction:
///    the writer gets `write_connection_lost`, and the reader `read_connection_lost` if it
///    supports half-close; if it does not, the connection closes, both sides getting
///    [`ConnectionDone`].
/// 4. Otherwise a `lose_connection` whose buffer is empty closes the connection, unless a
///    pull producer or a paused push producer is still registered (as on a socket, where
///    Twisted's `doWrite` asks such a producer for more instead):
///    `connection_lost(ConnectionDone)` to that side, then to the other.
///
/// Each side gets `connection_lost` exactly once; its registered producer is stopped first,
/// and the pump drops the protocol right after.
///
/// # Examples
///
/// A server that answers in upper case and hangs up; its answer reaches the client on the
/// round after the question reached it:
///
/// ```
/// use torsion::net::Transport;
/// use torsion::protocol::Protocol;
/// use torsion::testing::{AccumulatingProtocol, Pump};
///
/// #[derive(Default)]
/// struct Shout(Option<Transport>);
///
/// impl Protocol for Shout {
///     fn connection_made(&mut self, transport: Transport) {
///         self.0 = Some(transport);
///     }
///     fn data_received(&mut self, data: &[u8]) {
///         let t = self.0.as_ref().unwrap();
///         t.write(&data.to_ascii_uppercase());
///         t.lose_connection();
///     }
/// }
///
/// let client = AccumulatingProtocol::new();
/// let seen = client.state();
/// let pump = Pump::connect(Box::new(Shout::default()), Box::new(client));
///
/// seen.transport().unwrap().write(b"hello");
/// assert!(pump.pump()); // "hello" reaches the server, which answers
/// assert!(seen.data().is_empty());
/// assert!(pump.pump()); // "HELLO" reaches the client
/// assert_eq!(seen.data(), b"HELLO");
/// pump.flush(); // the server's lose_connection closes both sides
/// assert!(seen.closed());
/// assert!(!pump.flush()); // nothing left to do
/// ```
pub struct Pump {
    server: Side,
    client: Side,
    flushing: Cell<bool>,
}

impl Pump {
    /// Connects `server` and `client` through two [`FakeTransport`]s: each gets
    /// `connection_made` (the server first), and nothing is pumped yet.
    pub fn new(server: Box<dyn Protocol>, client: Box<dyn Protocol>) -> Pump {
        let pump = Pump {
            server: Side::new(server, server_address(), client_address()),
            client: Side::new(client, client_address(), server_address()),
            flushing: Cell::new(false),
        };
        {
            let _round = pump.start_round();
            for side in [&pump.server, &pump.client] {
                let transport: Transport = side.transport.clone();
                side.call(|p| p.connection_made(transport));
            }
        }
        pump
    }

    /// Connects `server` and `client` as [`new`](Pump::new) does, then flushes, so their
    /// greetings are exchanged (Twisted's `iosim.connect` with `greet=True`).
    pub fn connect(server: Box<dyn Protocol>, client: Box<dyn Protocol>) -> Pump {
        let pump = Pump::new(server, client);
        pump.flush();
        pump
    }

    /// The server's transport.
    pub fn server_transport(&self) -> Rc<FakeTransport> {
        self.server.transport.clone()
    }

    /// The client's transport.
    pub fn client_transport(&self) -> Rc<FakeTransport> {
        self.client.transport.clone()
    }

    /// Whether both sides got `connection_lost`.
    pub fn is_closed(&self) -> bool {
        self.server.is_lost() && self.client.is_lost()
    }

    #[track_caller]
    fn start_round(&self) -> RoundGuard<'_> {
        assert!(
            !self.flushing.replace(true),
            "Pump::pump or Pump::flush called from inside a protocol or producer the pump is \
             running; call it from the test instead"
        );
        RoundGuard(&self.flushing)
    }

    /// Runs one round (Twisted's `IOPump.pump`) and says whether anything happened: bytes
    /// moved, or a connection was half-closed or closed.
    ///
    /// # Panics
    ///
    /// If called from inside a protocol or producer the pump is running.
    #[track_caller]
    pub fn pump(&self) -> bool {
        let _round = self.start_round();
        if self.is_closed() {
            return false;
        }
        let (server, client) = (&self.server, &self.client);

        // 1. Aborts.
        let (server_aborted, client_aborted) =
            (server.transport.aborted(), client.transport.aborted());
        if server_aborted || client_aborted {
            let reason = |aborted: bool| -> Failure {
                if aborted {
                    ConnectionAborted.into()
                } else {
                    ConnectionLost.into()
                }
            };
            if server_aborted {
                server.lose(reason(true));
                client.lose(reason(client_aborted));
            } else {
                client.lose(reason(true));
                server.lose(reason(false));
            }
            return true;
        }

        // 2. Bytes, both ways at once.
        server.resume_pull_producer();
        client.resume_pull_producer();
        let (client_moved, to_server, client_producer) = client.take_output(server);
        let (server_moved, to_client, server_producer) = server.take_output(client);
        if let Some(data) = to_server {
            server.deliver(client, data);
        }
        if let Some(data) = to_client {
            client.deliver(server, data);
        }
        for producer in [client_producer, server_producer].into_iter().flatten() {
            producer.resume_producing();
        }
        if client_moved || server_moved {
            return true;
        }

        // 3. Half-closes.
        for (writer, reader) in [(client, server), (server, client)] {
            let shut = writer.transport.state.borrow_mut().core.shut_write_now();
            if shut {
                writer.call(|p| p.write_connection_lost());
                if reader.supports_half_close() {
                    reader.transport.state.borrow_mut().read_shut = true;
                    reader.call(|p| p.read_connection_lost());
                } else {
                    reader.lose(ConnectionDone.into());
                    writer.lose(ConnectionDone.into());
                }
                return true;
            }
        }

        // 4. Full closes.
        for (closer, other) in [(server, client), (client, server)] {
            // As a socket does (Twisted's `doWrite`): a pull or paused producer is asked for
            // more first; an unpaused push producer does not hold the close up.
            let close = closer.transport.state.borrow().core.ready_to_close();
            if close {
                closer.lose(ConnectionDone.into());
                other.lose(ConnectionDone.into());
                return true;
            }
        }
        false
    }

    /// Runs rounds until one does nothing (Twisted's `IOPump.flush`); says whether anything
    /// happened.
    ///
    /// # Panics
    ///
    /// If the protocols are still busy after [`MAX_FLUSH_ROUNDS`] rounds (they talk
    /// forever), or if called from inside a protocol or producer the pump is running.
    #[track_caller]
    pub fn flush(&self) -> bool {
        let mut any = false;
        for _ in 0..MAX_FLUSH_ROUNDS {
            if !self.pump() {
                return any;
            }
            any = true;
        }
        panic!("Pump::flush: the protocols were still busy after {MAX_FLUSH_ROUNDS} rounds");
    }
}

impl fmt::Debug for Pump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pump")
            .field("server", &self.server.transport)
            .field("client", &self.client.transport)
            .finish()
    }
}

/// Drives a [`loopback`] connection from the loop.
struct Loopback<T> {
    pump: Pump,
    time: T,
    scheduled: Cell<bool>,
    done: RefCell<Option<Resolver<()>>>,
}

impl<T: ReactorTime + Clone + 'static> Loopback<T> {
    fn schedule(self: &Rc<Self>) {
        if self.scheduled.replace(true) {
            return;
        }
        let me = self.clone();
        self.time.call_later(Duration::ZERO, move || me.turn());
    }

    fn turn(self: &Rc<Self>) {
        self.pump.flush();
        self.scheduled.set(false);
        if self.pump.is_closed() {
            self.pump.server.transport.set_waker(None);
            self.pump.client.transport.set_waker(None);
            let done = self.done.borrow_mut().take();
            if let Some(done) = done {
                done.callback(());
            }
        }
    }
}

/// Connects `server` and `client` in memory and pumps the bytes between them from the loop
/// of `time` (a [`Reactor`](crate::Reactor) or a [`Clock`](crate::time::Clock)) until both
/// sides got `connection_lost` (Twisted's `loopback.loopbackAsync`).
///
/// Each write, close or resume schedules a flush with a zero delay, so other events (timers,
/// real sockets) run in between, and a pair that waits for a timer is not spun. The
/// Deferred fires once both connections are lost. A pair that never closes keeps itself
/// alive (and its Deferred unfired).
///
/// # Examples
///
/// ```
/// use torsion::testing::{loopback, AccumulatingProtocol};
/// use torsion::time::Clock;
///
/// let clock = Clock::new();
/// let server = AccumulatingProtocol::new();
/// let seen = server.state();
/// let client = AccumulatingProtocol::new();
/// let client_seen = client.state();
/// let done = loopback(&clock, Box::new(server), Box::new(client));
///
/// let t = client_seen.transport().unwrap();
/// t.write(b"bye");
/// t.lose_connection();
/// clock.advance(0);
/// assert!(done.is_fired());
/// assert_eq!(seen.data(), b"bye");
/// ```
pub fn loopback<T: ReactorTime + Clone + 'static>(
    time: &T,
    server: Box<dyn Protocol>,
    client: Box<dyn Protocol>,
) -> Deferred<()> {
    let (resolver, d) = Deferred::new();
    let driver = Rc::new(Loopback {
        pump: Pump::new(server, client),
        time: time.clone(),
        scheduled: Cell::new(false),
        done: RefCell::new(Some(resolver)),
    });
    let waker: Rc<dyn Fn()> = {
        let driver = driver.clone();
        Rc::new(move || driver.schedule())
    };
    driver.pump.server.transport.set_waker(Some(waker.clone()));
    driver.pump.client.transport.set_waker(Some(waker));
    driver.schedule();
    d
}
