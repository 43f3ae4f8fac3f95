//! Strings framed as netstrings or after a length prefix: [`NetstringReceiver`] and
//! [`IntNStringReceiver`], the [`StringHandler`] they call, the [`StringContext`] a handler
//! gets and the [`StringSender`] it can keep, typed by their [`StringFraming`],
//! [`Netstring`] or [`IntN`] (Twisted's `twisted.protocols.basic.NetstringReceiver` and
//! `IntNStringReceiver` with `Int8StringReceiver`, `Int16StringReceiver`,
//! `Int32StringReceiver`).
//!
//! The framers are a [`NetstringParser`] and a [`PrefixedParser`]; each string leaves the
//! parser as an owned `Vec`, handed to the handler. A sender writes a frame as one write
//! sequence, its header built on the stack ([`FrameHeader`]), so the string is not copied.
//!
//! The invariant to keep: **sending fails only where the framing can refuse a string**.
//! The framing is a type parameter, so a netstring's `send_string` returns nothing, and
//! only a length prefix's returns [`StringTooLong`], before writing anything.

use std::fmt;
use std::rc::Rc;

use super::receiver::{
    Base, Framing, Receiver, ReceiverHandle, context_common, log_framing_error, receiver_protocol,
};
use crate::defer::Failure;
use crate::error::{LengthLimitExceeded, StringTooLong};
use crate::net::Transport;
use crate::protocols::framing::{FrameHeader, NetstringParser, PrefixWidth, PrefixedParser};

/// Sealing [`StringFraming`]: only this module's framings implement it.
mod sealed {
    pub trait Sealed {}
}

/// How a string receiver frames its strings, as a type: [`Netstring`] for a
/// [`NetstringReceiver`], [`IntN`] for an [`IntNStringReceiver`].
///
/// It is the type parameter of [`StringHandler`], [`StringContext`] and [`StringSender`], so
/// the compiler knows whether sending a string can fail: never for a netstring, which has
/// no length limit, only for a length prefix too small for the string. A handler written
/// for both framings implements `StringHandler<K>` for every `K: StringFraming` and sends
/// with `try_send_string`. Sealed: no other type implements it.
pub trait StringFraming: sealed::Sealed + Copy + fmt::Debug + 'static {
    /// Writes `string` to `transport` framed this way (Twisted's `sendString`).
    ///
    /// # Errors
    ///
    /// [`StringTooLong`] if the length prefix cannot announce `string`'s length (never for
    /// [`Netstring`]); nothing is written then.
    fn write_string(self, transport: &Transport, string: &[u8]) -> Result<(), StringTooLong>;
}

/// Netstrings, `len:data,`: the framing of a [`NetstringReceiver`] (Twisted's
/// `NetstringReceiver`). Any string can be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Netstring;

impl Netstring {
    /// Writes `string` to `transport` as a netstring, as one write sequence.
    fn write(transport: &Transport, string: &[u8]) {
        let header = FrameHeader::netstring(string.len());
        transport.write_sequence(&[header.as_bytes(), string, b","]);
    }
}

impl sealed::Sealed for Netstring {}

impl StringFraming for Netstring {
    /// Writes `string` as a netstring; this cannot fail.
    fn write_string(self, transport: &Transport, string: &[u8]) -> Result<(), StringTooLong> {
        Netstring::write(transport, string);
        Ok(())
    }
}

/// Strings each after its length, a big-endian integer of 1, 2 or 4 bytes: the framing of
/// an [`IntNStringReceiver`] (Twisted's `IntNStringReceiver` with its `prefixLength`). A
/// string longer than the prefix can announce cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IntN {
    width: PrefixWidth,
}

impl IntN {
    /// Strings after a `width`-byte length prefix.
    pub const fn new(width: PrefixWidth) -> IntN {
        IntN { width }
    }

    /// The size of the length prefix (Twisted's `prefixLength`).
    pub const fn width(self) -> PrefixWidth {
        self.width
    }
}

impl sealed::Sealed for IntN {}

impl StringFraming for IntN {
    fn write_string(self, transport: &Transport, string: &[u8]) -> Result<(), StringTooLong> {
        let header = FrameHeader::prefix(self.width, string.len())?;
        transport.write_sequence(&[header.as_bytes(), string]);
        Ok(())
    }
}

/// What a [`NetstringReceiver`] (`StringHandler`, that is `StringHandler<Netstring>`) or an
/// [`IntNStringReceiver`] (`StringHandler<IntN>`) does with its strings: a Twisted
/// `NetstringReceiver` or `IntNStringReceiver` subclass.
///
/// The type parameter is the [framing](StringFraming); it decides whether
/// [`send_string`](StringContext::send_string) can fail. A handler for both implements the
/// trait for every framing:
///
/// ```
/// use torsion::protocols::basic::{
///     IntNStringReceiver, NetstringReceiver, StringContext, StringFraming, StringHandler,
/// };
///
/// struct Echo;
///
/// impl<K: StringFraming> StringHandler<K> for Echo {
///     fn string_received(&mut self, ctx: &mut StringContext<'_, K>, string: Vec<u8>) {
///         // As long as what it received: it fits the prefix, if there is one.
///         let _ = ctx.try_send_string(&string);
///     }
/// }
///
/// let _netstrings = NetstringReceiver::new(Echo);
/// let _int16 = IntNStringReceiver::int16(Echo);
/// ```
pub trait StringHandler<K: StringFraming = Netstring>: 'static {
    /// The connection is up (Twisted's `connectionMade`). The default does nothing.
    fn connection_made(&mut self, ctx: &mut StringContext<'_, K>) {
        let _ = ctx;
    }

    /// A complete string arrived (Twisted's `stringReceived`).
    fn string_received(&mut self, ctx: &mut StringContext<'_, K>, string: Vec<u8>);

    /// A length prefix announced more than the maximum (Twisted's
    /// `IntNStringReceiver.lengthLimitExceeded`); the string is never delivered and nothing
    /// more is parsed. Only an [`IntNStringReceiver`] calls it. The default logs `error`
    /// and closes the connection, as Twisted's does.
    fn length_limit_exceeded(
        &mut self,
        ctx: &mut StringContext<'_, K>,
        error: LengthLimitExceeded,
    ) {
        log_framing_error(ctx.base, &error);
        ctx.lose_connection();
    }

    /// The connection is closed (Twisted's `connectionLost`). The default does nothing.
    fn connection_lost(&mut self, ctx: &mut StringContext<'_, K>, reason: Failure) {
        let _ = (ctx, reason);
    }
}

/// What a [`StringHandler`] can do from inside a callback (Twisted's `sendString`,
/// `transport`, `pauseProducing`, …). `K` is the receiver's [framing](StringFraming):
/// `StringContext<'_>` for netstrings, `StringContext<'_, IntN>` for length prefixes.
pub struct StringContext<'a, K: StringFraming = Netstring> {
    base: Base<'a>,
    framing: K,
}

impl<K: StringFraming> StringContext<'_, K> {
    context_common!(
        "The strings already received are still delivered, and what the handler sends in answer is sent before the connection closes, as with Twisted's `NetstringReceiver` and `IntNStringReceiver`, which do not check `transport.disconnecting`."
    );

    /// Sends `string` in the receiver's framing, whichever it is: for a handler written
    /// for every framing (see [`StringHandler`]). Otherwise
    /// [`send_string`](Self::send_string) says more.
    ///
    /// # Errors
    ///
    /// [`StringTooLong`] if the length prefix cannot announce `string`'s length (never for
    /// netstrings); nothing is written then.
    pub fn try_send_string(&self, string: &[u8]) -> Result<(), StringTooLong> {
        self.framing.write_string(self.base.transport, string)
    }

    /// A [`StringSender`] for this connection: keep it to send strings from outside this
    /// receiver's callbacks, for example from another connection's.
    pub fn sender(&self) -> StringSender<K> {
        StringSender {
            transport: self.base.transport.clone(),
            framing: self.framing,
        }
    }

    /// The receiver's framing.
    pub fn framing(&self) -> K {
        self.framing
    }
}

impl StringContext<'_, Netstring> {
    /// Sends `string` as a netstring, `len:string,` (Twisted's
    /// `NetstringReceiver.sendString`). A netstring has no length limit: this cannot fail.
    pub fn send_string(&self, string: &[u8]) {
        Netstring::write(self.base.transport, string);
    }
}

impl StringContext<'_, IntN> {
    /// Sends `string` after its big-endian length (Twisted's
    /// `IntNStringReceiver.sendString`).
    ///
    /// # Errors
    ///
    /// [`StringTooLong`] if the length prefix cannot announce `string`'s length (255 bytes
    /// for `Int8StringReceiver`, 65535 for `Int16StringReceiver`, 4 GiB − 1 for
    /// `Int32StringReceiver`; Twisted's `StringTooLongError`); nothing is written then.
    pub fn send_string(&self, string: &[u8]) -> Result<(), StringTooLong> {
        self.framing.write_string(self.base.transport, string)
    }
}

impl<K: StringFraming> fmt::Debug for StringContext<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StringContext")
            .field("peer", &self.base.transport.peer())
            .field("framing", &self.framing)
            .field("paused", &self.base.core.paused.get())
            .finish_non_exhaustive()
    }
}

/// Sends strings on one connection from anywhere, for as long as it is open (Twisted's
/// `sendString`, reached through a kept reference to the protocol): the transport and the
/// [framing](StringFraming), cheap to clone.
///
/// Get one from [`StringContext::sender`], typically in `connection_made`, and store it
/// where other connections find it. For netstrings
/// ([`StringSender<Netstring>`](StringSender)) sending cannot fail; for length prefixes
/// ([`StringSender<IntN>`](StringSender)) it fails only for a string longer than the prefix
/// can announce. Once the connection is closed, what it sends is dropped.
///
/// # Examples
///
/// A hub relaying each netstring to every other client:
///
/// ```
/// use std::cell::RefCell;
/// use std::rc::Rc;
/// use torsion::protocols::basic::{StringContext, StringHandler, StringSender};
///
/// struct Relay {
///     id: u64,
///     peers: Rc<RefCell<Vec<(u64, StringSender)>>>,
/// }
///
/// impl StringHandler for Relay {
///     fn connection_made(&mut self, ctx: &mut StringContext<'_>) {
///         self.peers.borrow_mut().push((self.id, ctx.sender()));
///     }
///
///     fn string_received(&mut self, _ctx: &mut StringContext<'_>, string: Vec<u8>) {
///         for (id, peer) in self.peers.borrow().iter() {
///             if *id != self.id {
///                 peer.send_string(&string);
///             }
///         }
///     }
/// }
/// ```
#[derive(Clone)]
pub struct StringSender<K: StringFraming = Netstring> {
    transport: Transport,
    framing: K,
}

impl<K: StringFraming> StringSender<K> {
    /// Sends `string` in the connection's framing, whichever it is, for code written for
    /// every framing; otherwise [`send_string`](Self::send_string) says more.
    ///
    /// # Errors
    ///
    /// [`StringTooLong`] if the length prefix cannot announce `string`'s length (never for
    /// netstrings); nothing is written then.
    pub fn try_send_string(&self, string: &[u8]) -> Result<(), StringTooLong> {
        self.framing.write_string(&self.transport, string)
    }

    /// The connection's framing.
    pub fn framing(&self) -> K {
        self.framing
    }

    /// The connection's transport, to write other bytes or close it.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }
}

impl StringSender<Netstring> {
    /// Sends `string` as a netstring, `len:string,` (Twisted's `sendString`). This cannot
    /// fail.
    pub fn send_string(&self, string: &[u8]) {
        Netstring::write(&self.transport, string);
    }
}

impl StringSender<IntN> {
    /// Sends `string` after its big-endian length (Twisted's `sendString`).
    ///
    /// # Errors
    ///
    /// [`StringTooLong`] if the length prefix cannot announce `string`'s length; nothing
    /// is written then.
    pub fn send_string(&self, string: &[u8]) -> Result<(), StringTooLong> {
        self.framing.write_string(&self.transport, string)
    }
}

impl<K: StringFraming> fmt::Debug for StringSender<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StringSender")
            .field("peer", &self.transport.peer())
            .field("framing", &self.framing)
            .finish()
    }
}

struct NetstringFraming<H> {
    parser: NetstringParser,
    handler: H,
}

fn netstring_context(base: Base<'_>) -> StringContext<'_> {
    StringContext {
        base,
        framing: Netstring,
    }
}

impl<H: StringHandler> Framing for NetstringFraming<H> {
    // Twisted's `NetstringReceiver.dataReceived` goes on after `loseConnection`.
    const STOPS_WHEN_CLOSING: bool = false;

    fn connection_made(&mut self, base: Base<'_>) {
        self.handler.connection_made(&mut netstring_context(base));
    }

    fn feed(&mut self, data: &[u8]) {
        self.parser.feed(data);
    }

    fn deliver_one(&mut self, base: Base<'_>) -> bool {
        match self.parser.next_frame() {
            None => false,
            Some(Ok(string)) => {
                self.handler
                    .string_received(&mut netstring_context(base), string);
                true
            }
            Some(Err(error)) => {
                // Twisted's `_handleParseError`: `brokenPeer`, then `loseConnection`.
                log_framing_error(base, &error);
                base.core.lose_connection();
                true
            }
        }
    }

    fn connection_lost(&mut self, base: Base<'_>, reason: Failure) {
        self.handler
            .connection_lost(&mut netstring_context(base), reason);
    }
}

/// A protocol that reads and writes netstrings, `len:data,`, for a [`StringHandler`]
/// (Twisted's `NetstringReceiver`, see <http://cr.yp.to/proto/netstrings.txt>).
///
/// Netstrings may be 99999 bytes long unless set otherwise
/// ([`with_max_length`](NetstringReceiver::with_max_length)). Bytes that are not a
/// netstring (a bad length, a missing comma, a length over the maximum, detected before its
/// data arrives) close the connection: the
/// [`NetstringError`](crate::error::NetstringError) is logged, nothing more is delivered,
/// and the handler's `connection_lost` gets the transport's reason,
/// [`ConnectionDone`](crate::error::ConnectionDone) once the output is sent (Twisted sets
/// `brokenPeer` and calls `loseConnection`).
///
/// A handler's [`lose_connection`](StringContext::lose_connection) does not stop the
/// delivery of the netstrings already received, as in Twisted: a client that sends two
/// requests at once gets two answers from a server that closes after answering.
///
/// # Examples
///
/// A server echoing each netstring back:
///
/// ```
/// use std::rc::Rc;
/// use torsion::Reactor;
/// use torsion::protocols::basic::{NetstringReceiver, StringContext, StringHandler};
///
/// struct EchoStrings;
///
/// impl StringHandler for EchoStrings {
///     fn string_received(&mut self, ctx: &mut StringContext<'_>, string: Vec<u8>) {
///         ctx.send_string(&string);
///     }
/// }
///
/// let reactor = Reactor::new().unwrap();
/// let port = reactor
///     .listen_tcp(0, Rc::new(|| NetstringReceiver::new(EchoStrings)))
///     .unwrap();
/// assert_ne!(port.host().port(), Some(0));
/// ```
pub struct NetstringReceiver<H: StringHandler> {
    inner: Rc<Receiver<NetstringFraming<H>>>,
}

impl<H: StringHandler> NetstringReceiver<H> {
    /// A receiver handing netstrings of at most 99999 bytes to `handler` (Twisted's
    /// default `MAX_LENGTH`).
    pub fn new(handler: H) -> Self {
        NetstringReceiver {
            inner: Receiver::new(NetstringFraming {
                parser: NetstringParser::new(),
                handler,
            }),
        }
    }

    /// Accepts netstrings of at most `max_length` bytes (Twisted's `MAX_LENGTH`).
    #[must_use]
    pub fn with_max_length(self, max_length: usize) -> Self {
        self.inner.configure(|body| {
            body.parser = std::mem::take(&mut body.parser).with_max_length(max_length);
        });
        self
    }

    /// A handle to pause and resume this receiver from outside its callbacks.
    pub fn handle(&self) -> ReceiverHandle {
        self.inner.handle()
    }
}

receiver_protocol!(NetstringReceiver, StringHandler);

struct PrefixedFraming<H> {
    parser: PrefixedParser,
    handler: H,
}

impl<H> PrefixedFraming<H> {
    fn context<'a>(&self, base: Base<'a>) -> StringContext<'a, IntN> {
        StringContext {
            base,
            framing: IntN::new(self.parser.width()),
        }
    }
}

impl<H: StringHandler<IntN>> Framing for PrefixedFraming<H> {
    // Twisted's `IntNStringReceiver.dataReceived` goes on after `loseConnection`.
    const STOPS_WHEN_CLOSING: bool = false;

    fn connection_made(&mut self, base: Base<'_>) {
        let mut ctx = self.context(base);
        self.handler.connection_made(&mut ctx);
    }

    fn feed(&mut self, data: &[u8]) {
        self.parser.feed(data);
    }

    fn deliver_one(&mut self, base: Base<'_>) -> bool {
        let mut ctx = self.context(base);
        match self.parser.next_frame() {
            None => false,
            Some(Ok(string)) => {
                self.handler.string_received(&mut ctx, string);
                true
            }
            Some(Err(error)) => {
                self.handler.length_limit_exceeded(&mut ctx, error);
                true
            }
        }
    }

    fn connection_lost(&mut self, base: Base<'_>, reason: Failure) {
        let mut ctx = self.context(base);
        self.handler.connection_lost(&mut ctx, reason);
    }
}

/// A protocol that reads and writes strings each preceded by its length, a big-endian
/// integer of 1, 2 or 4 bytes, for a [`StringHandler<IntN>`](StringHandler) (Twisted's
/// `IntNStringReceiver`: [`int8`](IntNStringReceiver::int8) is `Int8StringReceiver`,
/// [`int16`](IntNStringReceiver::int16) `Int16StringReceiver`,
/// [`int32`](IntNStringReceiver::int32) `Int32StringReceiver`).
///
/// Strings may be 99999 bytes long unless set otherwise
/// ([`with_max_length`](IntNStringReceiver::with_max_length)); a prefix announcing more
/// calls [`length_limit_exceeded`](StringHandler::length_limit_exceeded), which closes the
/// connection by default, before the string's body arrives. As in Twisted, a handler's
/// [`lose_connection`](StringContext::lose_connection) does not stop the delivery of the
/// strings already received.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use torsion::Reactor;
/// use torsion::protocols::basic::{IntN, IntNStringReceiver, StringContext, StringHandler};
///
/// /// Answers each string with its bytes reversed.
/// struct Reverse;
///
/// impl StringHandler<IntN> for Reverse {
///     fn string_received(&mut self, ctx: &mut StringContext<'_, IntN>, mut string: Vec<u8>) {
///         string.reverse();
///         // As long as what it received: it fits the prefix.
///         let _ = ctx.send_string(&string);
///     }
/// }
///
/// let reactor = Reactor::new().unwrap();
/// let _port = reactor
///     .listen_tcp(0, Rc::new(|| IntNStringReceiver::int32(Reverse)))
///     .unwrap();
/// ```
pub struct IntNStringReceiver<H: StringHandler<IntN>> {
    inner: Rc<Receiver<PrefixedFraming<H>>>,
}

impl<H: StringHandler<IntN>> IntNStringReceiver<H> {
    /// A receiver for strings prefixed with `width` bytes of length, of at most 99999 bytes
    /// (Twisted's default `MAX_LENGTH`).
    pub fn new(width: PrefixWidth, handler: H) -> Self {
        IntNStringReceiver {
            inner: Receiver::new(PrefixedFraming {
                parser: PrefixedParser::new(width),
                handler,
            }),
        }
    }

    /// A receiver with a one-byte length prefix (Twisted's `Int8StringReceiver`).
    #[doc(alias = "Int8StringReceiver")]
    pub fn int8(handler: H) -> Self {
        Self::new(PrefixWidth::U8, handler)
    }

    /// A receiver with a two-byte length prefix (Twisted's `Int16StringReceiver`).
    #[doc(alias = "Int16StringReceiver")]
    pub fn int16(handler: H) -> Self {
        Self::new(PrefixWidth::U16, handler)
    }

    /// A receiver with a four-byte length prefix (Twisted's `Int32StringReceiver`).
    #[doc(alias = "Int32StringReceiver")]
    pub fn int32(handler: H) -> Self {
        Self::new(PrefixWidth::U32, handler)
    }

    /// Accepts strings of at most `max_length` bytes (Twisted's `MAX_LENGTH`).
    #[must_use]
    pub fn with_max_length(self, max_length: usize) -> Self {
        self.inner.configure(|body| {
            let width = body.parser.width();
            body.parser = PrefixedParser::new(width).with_max_length(max_length);
        });
        self
    }

    /// A handle to pause and resume this receiver from outside its callbacks.
    pub fn handle(&self) -> ReceiverHandle {
        self.inner.handle()
    }
}

receiver_protocol!(IntNStringReceiver, StringHandler<IntN>);
