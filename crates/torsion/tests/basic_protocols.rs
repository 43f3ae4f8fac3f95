//! Line, netstring and length-prefixed receivers and FileSender (CHECKLIST 48–58): driven
//! through the `Protocol` interface over a recording transport, then end to end over real
//! TCP on every backend.

mod common;

use std::cell::{Cell, RefCell};
use std::io::{self, Cursor, Read};
use std::rc::Rc;

use torsion::error::{
    ConnectionDone, LengthLimitExceeded, LineTooLong, ProducerAlreadyRegistered, ProducerStopped,
    StringTooLong,
};
use torsion::net::tcp::ListenOptions;
use torsion::net::{Address, Producer, Transport, TransportOps};
use torsion::protocol::{Factory, Protocol};
use torsion::protocols::basic::{
    FileSender, IntN, IntNStringReceiver, LineContext, LineHandler, LineOnlyContext,
    LineOnlyHandler, LineOnlyReceiver, LineReceiver, LineSender, Netstring, NetstringReceiver,
    StringContext, StringFraming, StringHandler, StringSender,
};
use torsion::protocols::framing::{LineParser, PrefixWidth};
use torsion::testing::StringTransport;
use torsion::time::{Clock, ReactorTime};
use torsion::{Failure, Reactor};

// ---------------------------------------------------------------------------------------
// A transport that records what a protocol does to it
// ---------------------------------------------------------------------------------------

/// Records writes, closes, pauses and the producer registered on it.
#[derive(Default)]
struct Recorder {
    written: RefCell<Vec<u8>>,
    writes: Cell<usize>,
    events: RefCell<Vec<&'static str>>,
    disconnecting: Cell<bool>,
    producer: RefCell<Option<Rc<dyn Producer>>>,
}

impl Recorder {
    fn new() -> Rc<Recorder> {
        Rc::new(Recorder::default())
    }

    fn written(&self) -> Vec<u8> {
        self.written.borrow().clone()
    }

    fn events(&self) -> Vec<&'static str> {
        self.events.borrow().clone()
    }

    fn producer(&self) -> Option<Rc<dyn Producer>> {
        self.producer.borrow().clone()
    }
}

impl TransportOps for Recorder {
    fn write(&self, data: &[u8]) {
        self.written.borrow_mut().extend_from_slice(data);
        self.writes.set(self.writes.get() + 1);
    }
    fn lose_connection(&self) {
        self.disconnecting.set(true);
        self.events.borrow_mut().push("lose_connection");
    }
    fn abort_connection(&self) {
        self.disconnecting.set(true);
        self.events.borrow_mut().push("abort_connection");
    }
    fn lose_write_connection(&self) {
        self.events.borrow_mut().push("lose_write_connection");
    }
    fn peer(&self) -> Address {
        Address::Tcp(([127, 0, 0, 1], 2).into())
    }
    fn host(&self) -> Address {
        Address::Tcp(([127, 0, 0, 1], 1).into())
    }
    fn pause_producing(&self) {
        self.events.borrow_mut().push("pause");
    }
    fn resume_producing(&self) {
        self.events.borrow_mut().push("resume");
    }
    fn stop_producing(&self) {
        self.disconnecting.set(true);
        self.events.borrow_mut().push("stop_producing");
    }
    fn register_producer(
        &self,
        producer: Rc<dyn Producer>,
        streaming: bool,
    ) -> Result<(), Failure> {
        if self.producer.borrow().is_some() {
            return Err(ProducerAlreadyRegistered.into());
        }
        *self.producer.borrow_mut() = Some(producer.clone());
        self.events.borrow_mut().push("register_producer");
        if !streaming {
            producer.resume_producing();
        }
        Ok(())
    }
    fn unregister_producer(&self) {
        self.producer.borrow_mut().take();
        self.events.borrow_mut().push("unregister_producer");
    }
    fn buffered(&self) -> usize {
        0
    }
    fn is_connected(&self) -> bool {
        true
    }
}

/// Connects `protocol` to a fresh recorder.
fn connect(protocol: &mut dyn Protocol) -> Rc<Recorder> {
    let recorder = Recorder::new();
    let transport: Transport = recorder.clone();
    protocol.connection_made(transport);
    recorder
}

/// Feeds `data` to `protocol` `size` bytes at a time.
fn feed(protocol: &mut dyn Protocol, data: &[u8], size: usize) {
    for chunk in data.chunks(size) {
        protocol.data_received(chunk);
    }
}

type Lines = Rc<RefCell<Vec<Vec<u8>>>>;

fn lines(expected: &[&[u8]]) -> Vec<Vec<u8>> {
    expected.iter().map(|l| l.to_vec()).collect()
}

// ---------------------------------------------------------------------------------------
// LineReceiver (48–50)
// ---------------------------------------------------------------------------------------

/// Twisted's `LineTester`: acts on some lines (`len N` reads N raw bytes after the next
/// empty line, `pause`, `rawpause`, `stop`).
struct LineTester {
    received: Lines,
    length: usize,
    clock: Option<Clock>,
}

impl LineTester {
    fn new(clock: Option<Clock>) -> (LineTester, Lines) {
        let received = Lines::default();
        let tester = LineTester {
            received: received.clone(),
            length: 0,
            clock,
        };
        (tester, received)
    }

    /// Resumes on the next turn of the clock, from outside any callback.
    fn resume_soon(&self, ctx: &LineContext<'_>) {
        let handle = ctx.handle();
        if let Some(clock) = &self.clock {
            clock.call_later(0, move || handle.resume_producing());
        }
    }
}

impl LineHandler for LineTester {
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        self.received.borrow_mut().push(line.to_vec());
        if line.is_empty() {
            ctx.set_raw_mode();
        } else if line == b"pause" {
            ctx.pause_producing();
            self.resume_soon(ctx);
        } else if line == b"rawpause" {
            ctx.pause_producing();
            ctx.set_raw_mode();
            self.received.borrow_mut().push(Vec::new());
            self.resume_soon(ctx);
        } else if line == b"stop" {
            ctx.stop_producing();
        } else if let Some(n) = line.strip_prefix(b"len ") {
            self.length = std::str::from_utf8(n).unwrap().parse().unwrap();
        }
    }

    fn raw_data_received(&mut self, ctx: &mut LineContext<'_>, data: &[u8]) {
        let (used, rest) = data.split_at(self.length.min(data.len()));
        self.length -= used.len();
        if let Some(last) = self.received.borrow_mut().last_mut() {
            last.extend_from_slice(used);
        }
        if self.length == 0 {
            ctx.set_line_mode(rest);
        }
    }
}

fn line_tester(clock: Option<Clock>) -> (LineReceiver<LineTester>, Lines) {
    let (tester, received) = LineTester::new(clock);
    let receiver = LineReceiver::new(tester)
        .with_delimiter(b"\n")
        .with_max_length(64);
    (receiver, received)
}

/// Twisted's `LineReceiverTests.buffer`, without its over-long line (see
/// `over_long_lines_*`): lines, raw stretches of 10, 5, 20 and 0 bytes, and the switch
/// back to lines with what the raw stretch did not use.
const BUFFER: &[u8] = b"len 10\n\n0123456789len 5\n\n1234\nlen 20\nfoo 123\n\n0123456789\n012345678len 0\nfoo 5\n\n67890\nlen 1\n\na";

const OUTPUT: &[&[u8]] = &[
    b"len 10",
    b"0123456789",
    b"len 5",
    b"1234\n",
    b"len 20",
    b"foo 123",
    b"0123456789\n012345678",
    b"len 0",
    b"foo 5",
    b"",
    b"67890",
    b"len 1",
    b"a",
];

#[test]
fn checklist_48_line_receiver_output_is_the_same_whatever_the_packet_sizes() {
    for size in 1..=9 {
        let (mut receiver, received) = line_tester(None);
        let recorder = connect(&mut receiver);
        feed(&mut receiver, BUFFER, size);
        assert_eq!(*received.borrow(), lines(OUTPUT), "packets of {size} bytes");
        assert!(!recorder.disconnecting.get());
    }
}

#[test]
fn checklist_48_raw_mode_from_connection_made_and_back_to_lines() {
    struct Header {
        received: Lines,
    }
    impl LineHandler for Header {
        fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
            ctx.set_raw_mode();
        }
        fn line_received(&mut self, _ctx: &mut LineContext<'_>, line: &[u8]) {
            self.received.borrow_mut().push(line.to_vec());
        }
        fn raw_data_received(&mut self, ctx: &mut LineContext<'_>, data: &[u8]) {
            // A 4-byte binary header, then lines.
            let mut seen = self.received.borrow_mut();
            let header = seen.first_mut().expect("a header slot");
            let need = 4 - header.len();
            let (used, rest) = data.split_at(need.min(data.len()));
            header.extend_from_slice(used);
            if header.len() == 4 {
                ctx.set_line_mode(rest);
            }
        }
    }
    for size in 1..=9 {
        let received = Lines::new(RefCell::new(vec![Vec::new()]));
        let mut receiver = LineReceiver::new(Header {
            received: received.clone(),
        });
        connect(&mut receiver);
        feed(&mut receiver, b"\x00\x01\r\nab\r\ncd\r\n", size);
        assert_eq!(
            *received.borrow(),
            lines(&[b"\x00\x01\r\n", b"ab", b"cd"]),
            "packets of {size} bytes"
        );
    }
}

#[test]
fn checklist_48_mode_switches_many_times_on_the_same_data() {
    // Twisted's `test_stackRecursion`: a line, then raw, then back, thousands of times.
    struct Flipping {
        lines: Lines,
    }
    impl LineHandler for Flipping {
        fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
            self.lines.borrow_mut().push(line.to_vec());
            ctx.set_raw_mode();
        }
        fn raw_data_received(&mut self, ctx: &mut LineContext<'_>, data: &[u8]) {
            ctx.set_line_mode(&data[1..]);
        }
    }
    let received = Lines::default();
    let mut receiver = LineReceiver::new(Flipping {
        lines: received.clone(),
    })
    .with_delimiter(b"\n");
    connect(&mut receiver);
    receiver.data_received(&b"x\nx".repeat(10_000));
    assert_eq!(received.borrow().concat(), b"x".repeat(10_000));
}

#[test]
fn checklist_48_clear_line_buffer_returns_the_rest_from_inside_line_received() {
    /// Each line with what clear_line_buffer returned after it.
    type Seen = Rc<RefCell<Vec<(Vec<u8>, Vec<u8>)>>>;
    struct Clearing {
        seen: Seen,
    }
    impl LineHandler for Clearing {
        fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
            let rest = ctx.clear_line_buffer();
            self.seen.borrow_mut().push((line.to_vec(), rest));
        }
    }
    let seen = Rc::new(RefCell::new(Vec::new()));
    let mut receiver = LineReceiver::new(Clearing { seen: seen.clone() });
    connect(&mut receiver);
    receiver.data_received(b"foo\r\nbar\r\nbaz");
    receiver.data_received(b"quux\r\n");
    assert_eq!(
        *seen.borrow(),
        vec![
            (b"foo".to_vec(), b"bar\r\nbaz".to_vec()),
            (b"quux".to_vec(), Vec::new())
        ]
    );
}

#[test]
fn send_line_appends_the_delimiter() {
    struct Echo;
    impl LineHandler for Echo {
        fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
            ctx.send_line(line);
        }
    }
    let mut receiver = LineReceiver::new(Echo);
    let recorder = connect(&mut receiver);
    receiver.data_received(b"one\r\ntwo\r\nthr");
    assert_eq!(recorder.written(), b"one\r\ntwo\r\n");
    let mut receiver = LineReceiver::new(Echo).with_delimiter(b"\n");
    let recorder = connect(&mut receiver);
    receiver.data_received(b"one\n");
    assert_eq!(recorder.written(), b"one\n");
}

const PAUSE_BUF: &[u8] = b"twiddle1\ntwiddle2\npause\ntwiddle3\n";

#[test]
fn checklist_49_pause_inside_line_received_stops_delivery_until_resume() {
    for size in 1..=9 {
        let clock = Clock::new();
        let (mut receiver, received) = line_tester(Some(clock.clone()));
        let recorder = connect(&mut receiver);
        feed(&mut receiver, PAUSE_BUF, size);
        assert_eq!(
            *received.borrow(),
            lines(&[b"twiddle1", b"twiddle2", b"pause"]),
            "packets of {size} bytes"
        );
        assert_eq!(recorder.events(), ["pause"]);
        assert!(receiver.handle().is_paused());
        clock.advance(0);
        assert_eq!(
            *received.borrow(),
            lines(&[b"twiddle1", b"twiddle2", b"pause", b"twiddle3"]),
            "packets of {size} bytes"
        );
        assert_eq!(recorder.events(), ["pause", "resume"]);
        assert!(!receiver.handle().is_paused());
    }
}

#[test]
fn checklist_49_pause_also_holds_raw_data() {
    let buf: &[u8] = b"twiddle1\ntwiddle2\nlen 5\nrawpause\n12345twiddle3\n";
    for size in 1..=9 {
        let clock = Clock::new();
        let (mut receiver, received) = line_tester(Some(clock.clone()));
        connect(&mut receiver);
        feed(&mut receiver, buf, size);
        assert_eq!(
            *received.borrow(),
            lines(&[b"twiddle1", b"twiddle2", b"len 5", b"rawpause", b""]),
            "packets of {size} bytes"
        );
        clock.advance(0);
        assert_eq!(
            *received.borrow(),
            lines(&[
                b"twiddle1",
                b"twiddle2",
                b"len 5",
                b"rawpause",
                b"12345",
                b"twiddle3"
            ]),
            "packets of {size} bytes"
        );
    }
}

#[test]
fn checklist_49_bytes_arriving_while_paused_wait_for_resume() {
    let clock = Clock::new();
    let (mut receiver, received) = line_tester(Some(clock.clone()));
    connect(&mut receiver);
    receiver.data_received(b"pause\nlen 3\n");
    receiver.data_received(b"\nabc");
    receiver.data_received(b"after\n");
    assert_eq!(*received.borrow(), lines(&[b"pause"]));
    clock.advance(0);
    assert_eq!(
        *received.borrow(),
        lines(&[b"pause", b"len 3", b"abc", b"after"])
    );
}

#[test]
fn checklist_49_stop_producing_delivers_nothing_more() {
    for size in 1..=9 {
        let (mut receiver, received) = line_tester(None);
        let recorder = connect(&mut receiver);
        feed(
            &mut receiver,
            b"twiddle1\ntwiddle2\nstop\nmore\nstuff\n",
            size,
        );
        assert_eq!(
            *received.borrow(),
            lines(&[b"twiddle1", b"twiddle2", b"stop"]),
            "packets of {size} bytes"
        );
        assert!(recorder.events().contains(&"stop_producing"));
    }
}

#[test]
fn checklist_49_a_handle_resumed_from_inside_a_callback_delivers_after_it_returns() {
    struct PauseThenResume {
        received: Lines,
        depth: Rc<Cell<usize>>,
    }
    impl LineHandler for PauseThenResume {
        fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
            self.depth.set(self.depth.get() + 1);
            assert_eq!(self.depth.get(), 1, "the handler was re-entered");
            self.received.borrow_mut().push(line.to_vec());
            ctx.pause_producing();
            // Nothing is delivered from inside this call: it would re-enter the handler.
            ctx.handle().resume_producing();
            self.depth.set(self.depth.get() - 1);
        }
    }
    let received = Lines::default();
    let mut receiver = LineReceiver::new(PauseThenResume {
        received: received.clone(),
        depth: Rc::default(),
    });
    connect(&mut receiver);
    receiver.data_received(b"a\r\nb\r\nc\r\n");
    assert_eq!(*received.borrow(), lines(&[b"a", b"b", b"c"]));
}

#[test]
fn checklist_49_the_handle_is_a_producer_for_another_transport() {
    let (mut receiver, received) = line_tester(None);
    let own = connect(&mut receiver);
    let other = Recorder::new();
    other
        .register_producer(Rc::new(receiver.handle()), true)
        .unwrap();
    let producer = other.producer().unwrap();
    producer.pause_producing();
    receiver.data_received(b"one\ntwo\n");
    assert!(received.borrow().is_empty());
    producer.resume_producing();
    assert_eq!(*received.borrow(), lines(&[b"one", b"two"]));
    assert_eq!(own.events(), ["pause", "resume"]);
}

/// Records lines and the too-long errors, and keeps going after them.
struct Tolerant {
    received: Lines,
    too_long: Rc<RefCell<Vec<LineTooLong>>>,
}

impl LineHandler for Tolerant {
    fn line_received(&mut self, _ctx: &mut LineContext<'_>, line: &[u8]) {
        self.received.borrow_mut().push(line.to_vec());
    }
    fn line_length_exceeded(&mut self, _ctx: &mut LineContext<'_>, error: LineTooLong) {
        self.too_long.borrow_mut().push(error);
    }
}

impl LineOnlyHandler for Tolerant {
    fn line_received(&mut self, _ctx: &mut LineOnlyContext<'_>, line: &[u8]) {
        self.received.borrow_mut().push(line.to_vec());
    }
    fn line_length_exceeded(&mut self, _ctx: &mut LineOnlyContext<'_>, error: LineTooLong) {
        self.too_long.borrow_mut().push(error);
    }
}

/// Records lines and leaves line_length_exceeded to its default.
struct Recording(Lines);

impl LineHandler for Recording {
    fn line_received(&mut self, _ctx: &mut LineContext<'_>, line: &[u8]) {
        self.0.borrow_mut().push(line.to_vec());
    }
}

#[test]
fn checklist_50_a_line_longer_than_max_length_disconnects() {
    let received = Lines::default();
    let mut receiver = LineReceiver::new(Recording(received.clone()));
    let recorder = connect(&mut receiver);
    let mut data = vec![b'x'; LineParser::DEFAULT_MAX_LENGTH + 1];
    data.extend_from_slice(b"\r\nr\r\n");
    receiver.data_received(&data);
    assert!(recorder.disconnecting.get());
    assert_eq!(recorder.events(), ["lose_connection"]);
    assert!(received.borrow().is_empty());
}

#[test]
fn checklist_50_an_unfinished_over_long_line_disconnects_before_its_delimiter() {
    // As Twisted's LineReceiver: once MAX_LENGTH + len(delimiter) bytes have no delimiter.
    for size in [1, 7, 1000] {
        let received = Lines::default();
        let mut receiver = LineReceiver::new(Recording(received.clone())).with_max_length(100);
        let recorder = connect(&mut receiver);
        feed(&mut receiver, &[b'x'; 101], size);
        assert!(!recorder.disconnecting.get(), "packets of {size} bytes");
        receiver.data_received(b"x");
        assert!(recorder.disconnecting.get(), "packets of {size} bytes");
    }
    // A line of the maximum followed by the start of the delimiter may still be fine.
    let mut receiver = LineReceiver::new(Recording(Lines::default())).with_max_length(100);
    let recorder = connect(&mut receiver);
    let mut data = vec![b'x'; 100];
    data.push(b'\r');
    receiver.data_received(&data);
    assert!(!recorder.disconnecting.get());
}

#[test]
fn checklist_50_a_max_length_line_with_a_split_delimiter_is_delivered() {
    for size in 1..=9 {
        let received = Lines::default();
        let mut receiver = LineReceiver::new(Recording(received.clone())).with_max_length(4);
        let recorder = connect(&mut receiver);
        feed(&mut receiver, b"xxxx\r\nyyy", size);
        assert_eq!(
            *received.borrow(),
            lines(&[b"xxxx"]),
            "packets of {size} bytes"
        );
        assert!(!recorder.disconnecting.get());
    }
    // Twisted's test_maximumLineLengthPartialDelimiter, packet by packet.
    let received = Lines::default();
    let mut receiver = LineReceiver::new(Recording(received.clone())).with_max_length(4);
    let recorder = connect(&mut receiver);
    receiver.data_received(b"xxxx");
    receiver.data_received(b"\r");
    receiver.data_received(b"\nxxx");
    assert_eq!(*received.borrow(), lines(&[b"xxxx"]));
    assert!(!recorder.disconnecting.get());
}

#[test]
fn checklist_50_an_overriding_handler_gets_the_error_and_goes_on() {
    let received = Lines::default();
    let too_long = Rc::new(RefCell::new(Vec::new()));
    let mut receiver = LineReceiver::new(Tolerant {
        received: received.clone(),
        too_long: too_long.clone(),
    })
    .with_max_length(6)
    .with_delimiter(b"\n");
    let recorder = connect(&mut receiver);
    receiver.data_received(b"short\nmuch too long\n");
    receiver.data_received(b"next\n");
    assert_eq!(*received.borrow(), lines(&[b"short", b"next"]));
    assert_eq!(
        *too_long.borrow(),
        [LineTooLong {
            length: 13,
            max: 6,
            line: b"much too long\n".to_vec()
        }]
    );
    assert!(!recorder.disconnecting.get());
}

#[test]
fn line_length_exceeded_gets_the_rest_of_the_buffer_from_the_start_of_the_over_long_line() {
    // Measured against Twisted 24.11's basic.py with a lineLengthExceeded that records and
    // does not disconnect, fed the same two packets: LineReceiver passes the line, its
    // delimiter and everything after; LineOnlyReceiver the line alone.
    let packets: [&[u8]; 2] = [b"short\nmuch too long\nlost\nlo", b"st\nnext\n"];
    let received = Lines::default();
    let too_long = Rc::new(RefCell::new(Vec::new()));
    let tolerant = || Tolerant {
        received: received.clone(),
        too_long: too_long.clone(),
    };
    let mut receiver = LineReceiver::new(tolerant())
        .with_max_length(6)
        .with_delimiter(b"\n");
    connect(&mut receiver);
    for packet in packets {
        receiver.data_received(packet);
    }
    assert_eq!(*received.borrow(), lines(&[b"short", b"st", b"next"]));
    let lines_passed: Vec<Vec<u8>> = too_long.borrow().iter().map(|e| e.line.clone()).collect();
    assert_eq!(lines_passed, lines(&[b"much too long\nlost\nlo"]));

    received.borrow_mut().clear();
    too_long.borrow_mut().clear();
    let mut receiver = LineOnlyReceiver::new(tolerant())
        .with_max_length(6)
        .with_delimiter(b"\n");
    connect(&mut receiver);
    for packet in packets {
        receiver.data_received(packet);
    }
    let lines_passed: Vec<Vec<u8>> = too_long.borrow().iter().map(|e| e.line.clone()).collect();
    assert_eq!(lines_passed, lines(&[b"much too long"]));
    // Twisted's LineOnlyReceiver would keep "lo" and deliver "lost"; torsion discards the
    // whole buffer with the over-long line (see LineOnlyParser).
    assert_eq!(*received.borrow(), lines(&[b"short", b"st", b"next"]));
}

/// Which Twisted receiver a row of [`TWISTED_LINE_LIMITS`] is about.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Line,
    LineOnly,
}

/// How a row's input is fed: in one `data_received`, or one byte at a time.
#[derive(Debug, Clone, Copy)]
enum Feed {
    Whole,
    Bytes,
}

use Feed::{Bytes, Whole};
use Kind::{Line, LineOnly};

/// (receiver, delimiter, MAX_LENGTH, input, feeding, lines delivered, the argument of
/// lineLengthExceeded, how many bytes had been fed when the receiver asked to disconnect).
type LimitRow = (
    Kind,
    &'static [u8],
    usize,
    &'static [u8],
    Feed,
    &'static [&'static [u8]],
    Option<&'static [u8]>,
    Option<usize>,
);

/// Measured against Twisted 24.11's `twisted/protocols/basic.py` (Python 3.11): each input
/// fed to a `LineReceiver` or `LineOnlyReceiver` subclass over
/// `twisted.internet.testing.StringTransport`, whole or one byte per `dataReceived`, with no
/// more bytes fed once `transport.disconnecting` was set (a real transport stops reading
/// then). Its `lineLengthExceeded` records its argument, then calls the default, which
/// calls `loseConnection`. The script:
///
/// ```python
/// def run(base, delimiter, max_length, data, bytewise):
///     class R(base):
///         MAX_LENGTH = max_length
///         def lineReceived(self, line): events.append(("line", line))
///         def lineLengthExceeded(self, line):
///             events.append(("exceeded", line))
///             return base.lineLengthExceeded(self, line)
///     R.delimiter = delimiter
///     events, p, t = [], R(), StringTransport()
///     p.makeConnection(t)
///     fed = closed_at = 0
///     for packet in ([data[i:i + 1] for i in range(len(data))] if bytewise else [data]):
///         if t.disconnecting:
///             break
///         p.dataReceived(packet)
///         fed += len(packet)
///         if t.disconnecting and not closed_at:
///             closed_at = fed
///     return events, closed_at
/// ```
const TWISTED_LINE_LIMITS: &[LimitRow] = &[
    (Line, b"\r\n", 4, b"xxxx\r\n", Whole, &[b"xxxx"], None, None),
    (Line, b"\r\n", 4, b"xxxx\r\n", Bytes, &[b"xxxx"], None, None),
    (Line, b"\r\n", 4, b"xxxx\r", Whole, &[], None, None),
    (Line, b"\r\n", 4, b"xxxx\r", Bytes, &[], None, None),
    (Line, b"\r\n", 4, b"xxxxx", Whole, &[], None, None),
    (Line, b"\r\n", 4, b"xxxxx", Bytes, &[], None, None),
    (
        Line,
        b"\r\n",
        4,
        b"xxxxxx",
        Whole,
        &[],
        Some(b"xxxxxx"),
        Some(6),
    ),
    (
        Line,
        b"\r\n",
        4,
        b"xxxxxx",
        Bytes,
        &[],
        Some(b"xxxxxx"),
        Some(6),
    ),
    (
        Line,
        b"\r\n",
        4,
        b"xxxxx\r\n",
        Whole,
        &[],
        Some(b"xxxxx\r\n"),
        Some(7),
    ),
    (
        Line,
        b"\r\n",
        4,
        b"xxxxx\r\n",
        Bytes,
        &[],
        Some(b"xxxxx\r"),
        Some(6),
    ),
    (
        Line,
        b"\r\n",
        4,
        b"xxxx\rx",
        Whole,
        &[],
        Some(b"xxxx\rx"),
        Some(6),
    ),
    (
        Line,
        b"\r\n",
        4,
        b"xxxx\rx",
        Bytes,
        &[],
        Some(b"xxxx\rx"),
        Some(6),
    ),
    (
        Line,
        b"\r\n",
        4,
        b"xxxx\r\r\n",
        Whole,
        &[],
        Some(b"xxxx\r\r\n"),
        Some(7),
    ),
    (
        Line,
        b"\r\n",
        4,
        b"xxxx\r\r\n",
        Bytes,
        &[],
        Some(b"xxxx\r\r"),
        Some(6),
    ),
    (
        Line,
        b"\r\n",
        4,
        b"ab\r\nxxxxx\r\ncd\r\nef",
        Whole,
        &[b"ab"],
        Some(b"xxxxx\r\ncd\r\nef"),
        Some(17),
    ),
    (
        Line,
        b"\r\n",
        4,
        b"ab\r\nxxxxx\r\ncd\r\nef",
        Bytes,
        &[b"ab"],
        Some(b"xxxxx\r"),
        Some(10),
    ),
    (
        Line,
        b"\r\n",
        4,
        b"ab\r\nxxxxxxyy\r\n",
        Whole,
        &[b"ab"],
        Some(b"xxxxxxyy\r\n"),
        Some(14),
    ),
    (
        Line,
        b"\r\n",
        4,
        b"ab\r\nxxxxxxyy\r\n",
        Bytes,
        &[b"ab"],
        Some(b"xxxxxx"),
        Some(10),
    ),
    (
        Line,
        b"\r\n",
        0,
        b"\r\n\r\nx",
        Whole,
        &[b"", b""],
        None,
        None,
    ),
    (
        Line,
        b"\r\n",
        0,
        b"\r\n\r\nx",
        Bytes,
        &[b"", b""],
        None,
        None,
    ),
    (Line, b"\r\n", 0, b"xx", Whole, &[], Some(b"xx"), Some(2)),
    (Line, b"\r\n", 0, b"xx", Bytes, &[], Some(b"xx"), Some(2)),
    (
        Line,
        b"\n",
        4,
        b"xxxx\nxxxxx\n",
        Whole,
        &[b"xxxx"],
        Some(b"xxxxx\n"),
        Some(11),
    ),
    (
        Line,
        b"\n",
        4,
        b"xxxx\nxxxxx\n",
        Bytes,
        &[b"xxxx"],
        Some(b"xxxxx"),
        Some(10),
    ),
    (
        Line,
        b"\n",
        4,
        b"xxxxx",
        Whole,
        &[],
        Some(b"xxxxx"),
        Some(5),
    ),
    (
        Line,
        b"\n",
        4,
        b"xxxxx",
        Bytes,
        &[],
        Some(b"xxxxx"),
        Some(5),
    ),
    (Line, b"\r\n\r\n", 3, b"abc\r\n\r", Whole, &[], None, None),
    (Line, b"\r\n\r\n", 3, b"abc\r\n\r", Bytes, &[], None, None),
    (
        Line,
        b"\r\n\r\n",
        3,
        b"abc\r\n\r\n",
        Whole,
        &[b"abc"],
        None,
        None,
    ),
    (
        Line,
        b"\r\n\r\n",
        3,
        b"abc\r\n\r\n",
        Bytes,
        &[b"abc"],
        None,
        None,
    ),
    (
        Line,
        b"\r\n\r\n",
        3,
        b"abcd\r\n\r\n",
        Whole,
        &[],
        Some(b"abcd\r\n\r\n"),
        Some(8),
    ),
    (
        Line,
        b"\r\n\r\n",
        3,
        b"abcd\r\n\r\n",
        Bytes,
        &[],
        Some(b"abcd\r\n\r"),
        Some(7),
    ),
    (
        LineOnly,
        b"\r\n",
        4,
        b"xxxx\r\n",
        Whole,
        &[b"xxxx"],
        None,
        None,
    ),
    (
        LineOnly,
        b"\r\n",
        4,
        b"xxxx\r\n",
        Bytes,
        &[],
        Some(b"xxxx\r"),
        Some(5),
    ),
    (
        LineOnly,
        b"\r\n",
        4,
        b"xxxx\r",
        Whole,
        &[],
        Some(b"xxxx\r"),
        Some(5),
    ),
    (
        LineOnly,
        b"\r\n",
        4,
        b"xxxx\r",
        Bytes,
        &[],
        Some(b"xxxx\r"),
        Some(5),
    ),
    (
        LineOnly,
        b"\r\n",
        4,
        b"xxxxx",
        Whole,
        &[],
        Some(b"xxxxx"),
        Some(5),
    ),
    (
        LineOnly,
        b"\r\n",
        4,
        b"xxxxx",
        Bytes,
        &[],
        Some(b"xxxxx"),
        Some(5),
    ),
    (
        LineOnly,
        b"\r\n",
        4,
        b"xxxxx\r\nyy\r\n",
        Whole,
        &[],
        Some(b"xxxxx"),
        Some(11),
    ),
    (
        LineOnly,
        b"\r\n",
        4,
        b"xxxxx\r\nyy\r\n",
        Bytes,
        &[],
        Some(b"xxxxx"),
        Some(5),
    ),
    (
        LineOnly,
        b"\r\n",
        4,
        b"ab\r\nxxxxx",
        Whole,
        &[b"ab"],
        Some(b"xxxxx"),
        Some(9),
    ),
    (
        LineOnly,
        b"\r\n",
        4,
        b"ab\r\nxxxxx",
        Bytes,
        &[b"ab"],
        Some(b"xxxxx"),
        Some(9),
    ),
    (
        LineOnly,
        b"\r\n",
        4,
        b"ab\r\nxxxxxxyy\r\ncd\r\n",
        Whole,
        &[b"ab"],
        Some(b"xxxxxxyy"),
        Some(18),
    ),
    (
        LineOnly,
        b"\r\n",
        4,
        b"ab\r\nxxxxxxyy\r\ncd\r\n",
        Bytes,
        &[b"ab"],
        Some(b"xxxxx"),
        Some(9),
    ),
    (
        LineOnly,
        b"\r\n",
        0,
        b"\r\nx",
        Whole,
        &[b""],
        Some(b"x"),
        Some(3),
    ),
    (
        LineOnly,
        b"\r\n",
        0,
        b"\r\nx",
        Bytes,
        &[],
        Some(b"\r"),
        Some(1),
    ),
    (
        LineOnly,
        b"\n",
        4,
        b"xxxx\nxxxxx\n",
        Whole,
        &[b"xxxx"],
        Some(b"xxxxx"),
        Some(11),
    ),
    (
        LineOnly,
        b"\n",
        4,
        b"xxxx\nxxxxx\n",
        Bytes,
        &[b"xxxx"],
        Some(b"xxxxx"),
        Some(10),
    ),
    (
        LineOnly,
        b"\r\n\r\n",
        3,
        b"abc\r\n\r\n",
        Whole,
        &[b"abc"],
        None,
        None,
    ),
    (
        LineOnly,
        b"\r\n\r\n",
        3,
        b"abc\r\n\r\n",
        Bytes,
        &[],
        Some(b"abc\r"),
        Some(4),
    ),
];

/// Records lines and the argument of `line_length_exceeded`, then disconnects as the
/// default does.
#[derive(Default, Clone)]
struct LimitRecorder {
    lines: Lines,
    exceeded: Rc<RefCell<Vec<Vec<u8>>>>,
}

impl LineHandler for LimitRecorder {
    fn line_received(&mut self, _ctx: &mut LineContext<'_>, line: &[u8]) {
        self.lines.borrow_mut().push(line.to_vec());
    }
    fn line_length_exceeded(&mut self, ctx: &mut LineContext<'_>, error: LineTooLong) {
        self.exceeded.borrow_mut().push(error.line);
        ctx.lose_connection();
    }
}

impl LineOnlyHandler for LimitRecorder {
    fn line_received(&mut self, _ctx: &mut LineOnlyContext<'_>, line: &[u8]) {
        self.lines.borrow_mut().push(line.to_vec());
    }
    fn line_length_exceeded(&mut self, ctx: &mut LineOnlyContext<'_>, error: LineTooLong) {
        self.exceeded.borrow_mut().push(error.line);
        ctx.lose_connection();
    }
}

#[test]
fn over_long_lines_disconnect_at_the_byte_twisted_does_with_what_twisted_passes() {
    for &(kind, delimiter, max, input, feeding, want_lines, want_exceeded, want_closed_at) in
        TWISTED_LINE_LIMITS
    {
        let seen = LimitRecorder::default();
        let mut receiver: Box<dyn Protocol> = match kind {
            Line => Box::new(
                LineReceiver::new(seen.clone())
                    .with_delimiter(delimiter)
                    .with_max_length(max),
            ),
            LineOnly => Box::new(
                LineOnlyReceiver::new(seen.clone())
                    .with_delimiter(delimiter)
                    .with_max_length(max),
            ),
        };
        let recorder = connect(&mut *receiver);
        let packets: Vec<&[u8]> = match feeding {
            Whole => vec![input],
            Bytes => input.chunks(1).collect(),
        };
        let mut fed = 0;
        let mut closed_at = None;
        for packet in packets {
            if recorder.disconnecting.get() {
                break;
            }
            receiver.data_received(packet);
            fed += packet.len();
            if recorder.disconnecting.get() && closed_at.is_none() {
                closed_at = Some(fed);
            }
        }
        let case = format!(
            "{kind:?} {:?} max {max} {:?} {feeding:?}",
            String::from_utf8_lossy(delimiter),
            String::from_utf8_lossy(input)
        );
        assert_eq!(*seen.lines.borrow(), lines(want_lines), "lines of {case}");
        let exceeded: Vec<Vec<u8>> = want_exceeded.iter().map(|e| e.to_vec()).collect();
        assert_eq!(*seen.exceeded.borrow(), exceeded, "exceeded of {case}");
        assert_eq!(closed_at, want_closed_at, "disconnect of {case}");
    }
}

// ---------------------------------------------------------------------------------------
// LineOnlyReceiver (51)
// ---------------------------------------------------------------------------------------

struct LineOnlyTester(Lines);

impl LineOnlyHandler for LineOnlyTester {
    fn line_received(&mut self, _ctx: &mut LineOnlyContext<'_>, line: &[u8]) {
        self.0.borrow_mut().push(line.to_vec());
    }
}

#[test]
fn checklist_51_line_only_receiver_handles_one_byte_feeding() {
    let buffer: &[u8] = b"foo\n    bleakness\n    desolation\n    plastic forks\n    ";
    let received = Lines::default();
    let mut receiver = LineOnlyReceiver::new(LineOnlyTester(received.clone()))
        .with_delimiter(b"\n")
        .with_max_length(64);
    let recorder = connect(&mut receiver);
    feed(&mut receiver, buffer, 1);
    let mut expected: Vec<Vec<u8>> = buffer.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    expected.pop();
    assert_eq!(*received.borrow(), expected);
    assert!(!recorder.disconnecting.get());
}

#[test]
fn checklist_51_line_only_receiver_disconnects_on_an_over_long_line() {
    let received = Lines::default();
    let mut receiver = LineOnlyReceiver::new(LineOnlyTester(received.clone()))
        .with_delimiter(b"\n")
        .with_max_length(64);
    let recorder = connect(&mut receiver);
    receiver.data_received(&[b'x'; 200]);
    assert!(recorder.disconnecting.get());
    assert!(received.borrow().is_empty());
}

#[test]
fn line_receiver_delivers_no_more_buffered_lines_after_lose_connection() {
    struct QuitOnBye;
    impl LineHandler for QuitOnBye {
        fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
            ctx.send_line(line);
            if line == b"bye" {
                ctx.lose_connection();
            }
        }
    }
    let mut receiver = LineReceiver::new(QuitOnBye);
    let recorder = connect(&mut receiver);
    receiver.data_received(b"hi\r\nbye\r\nignored\r\n");
    assert_eq!(recorder.written(), b"hi\r\nbye\r\n");
    assert_eq!(recorder.events(), ["lose_connection"]);
}

#[test]
fn line_only_receiver_sends_lines_and_stops_after_lose_connection() {
    struct QuitOnBye;
    impl LineOnlyHandler for QuitOnBye {
        fn line_received(&mut self, ctx: &mut LineOnlyContext<'_>, line: &[u8]) {
            ctx.send_line(line);
            if line == b"bye" {
                ctx.lose_connection();
            }
        }
    }
    let mut receiver = LineOnlyReceiver::new(QuitOnBye);
    let recorder = connect(&mut receiver);
    receiver.data_received(b"hi\r\nbye\r\nignored\r\n");
    assert_eq!(recorder.written(), b"hi\r\nbye\r\n");
    assert_eq!(recorder.events(), ["lose_connection"]);
}

// ---------------------------------------------------------------------------------------
// NetstringReceiver (52–54)
// ---------------------------------------------------------------------------------------

/// Records strings, and, with `echo`, sends each back.
struct Strings {
    received: Lines,
    too_long: Rc<RefCell<Vec<LengthLimitExceeded>>>,
    echo: bool,
    tolerate: bool,
}

impl Strings {
    fn new() -> (Strings, Lines) {
        let received = Lines::default();
        let strings = Strings {
            received: received.clone(),
            too_long: Rc::default(),
            echo: false,
            tolerate: false,
        };
        (strings, received)
    }
}

impl<K: StringFraming> StringHandler<K> for Strings {
    fn string_received(&mut self, ctx: &mut StringContext<'_, K>, string: Vec<u8>) {
        if self.echo {
            ctx.try_send_string(&string).unwrap();
        }
        self.received.borrow_mut().push(string);
    }
    fn length_limit_exceeded(
        &mut self,
        ctx: &mut StringContext<'_, K>,
        error: LengthLimitExceeded,
    ) {
        self.too_long.borrow_mut().push(error);
        if !self.tolerate {
            ctx.lose_connection();
        }
    }
}

#[test]
fn checklist_52_netstrings_at_every_chunk_size() {
    let wire: &[u8] = b"0:,4:1:a,,5:hello,";
    for size in 1..=wire.len() {
        let (strings, received) = Strings::new();
        let mut receiver = NetstringReceiver::new(strings);
        let recorder = connect(&mut receiver);
        feed(&mut receiver, wire, size);
        assert_eq!(
            *received.borrow(),
            lines(&[b"", b"1:a,", b"hello"]),
            "packets of {size} bytes"
        );
        assert!(!recorder.disconnecting.get());
    }
}

#[test]
fn checklist_53_each_malformed_netstring_disconnects() {
    let malformed: &[&[u8]] = &[
        b"2:aaa,",
        b"0:a,",
        b":aaa,",
        b"3aaa,",
        b"aaa,",
        b"-1:a,",
        b"3:aaa;",
        b"01:a,",
        b"9999999999999999999999:a,",
    ];
    for wire in malformed {
        for size in [1, wire.len()] {
            let (strings, received) = Strings::new();
            let mut receiver = NetstringReceiver::new(strings);
            let recorder = connect(&mut receiver);
            feed(&mut receiver, wire, size);
            feed(&mut receiver, b"3:abc,", size);
            let shown = String::from_utf8_lossy(wire);
            assert!(
                recorder.disconnecting.get(),
                "{shown:?} in packets of {size}"
            );
            assert_eq!(recorder.events(), ["lose_connection"], "{shown:?}");
            assert!(received.borrow().is_empty(), "{shown:?} delivered a string");
        }
    }
}

#[test]
fn checklist_53_a_good_netstring_before_the_bad_one_is_delivered() {
    let (strings, received) = Strings::new();
    let mut receiver = NetstringReceiver::new(strings);
    let recorder = connect(&mut receiver);
    receiver.data_received(b"3:abc,3:abc;3:def,");
    assert_eq!(*received.borrow(), lines(&[b"abc"]));
    assert!(recorder.disconnecting.get());
}

#[test]
fn checklist_54_a_netstring_of_max_length_is_accepted_one_more_disconnects_early() {
    let (strings, received) = Strings::new();
    let mut receiver = NetstringReceiver::new(strings).with_max_length(10);
    let recorder = connect(&mut receiver);
    receiver.data_received(b"10:0123456789,");
    assert_eq!(*received.borrow(), lines(&[b"0123456789"]));
    assert!(!recorder.disconnecting.get());
    // 11 bytes: refused as soon as the length is read, before the body.
    receiver.data_received(b"11:");
    assert!(recorder.disconnecting.get());
}

/// Answers each string with `ok:` and the string; after the first, closes the connection.
#[derive(Default)]
struct AnswerThenClose {
    answered: usize,
}

impl<K: StringFraming> StringHandler<K> for AnswerThenClose {
    fn string_received(&mut self, ctx: &mut StringContext<'_, K>, string: Vec<u8>) {
        ctx.try_send_string(&[b"ok:", &string[..]].concat())
            .unwrap();
        self.answered += 1;
        if self.answered == 1 {
            ctx.lose_connection();
        }
    }
}

#[test]
fn netstring_receiver_answers_every_string_already_received_after_lose_connection() {
    // Twisted's NetstringReceiver.dataReceived does not check transport.disconnecting.
    let mut receiver = NetstringReceiver::new(AnswerThenClose::default());
    let recorder = connect(&mut receiver);
    receiver.data_received(b"3:one,3:two,");
    assert_eq!(recorder.written(), b"6:ok:one,6:ok:two,");
    assert_eq!(recorder.events(), ["lose_connection"]);
}

#[test]
fn int_n_string_receiver_delivers_strings_already_received_after_lose_connection() {
    // Nor does Twisted's IntNStringReceiver.dataReceived.
    let mut receiver = IntNStringReceiver::int16(AnswerThenClose::default());
    let recorder = connect(&mut receiver);
    receiver.data_received(b"\0\x03one\0\x03two");
    assert_eq!(recorder.written(), b"\0\x06ok:one\0\x06ok:two");
    assert_eq!(recorder.events(), ["lose_connection"]);
}

#[test]
fn string_receivers_deliver_nothing_more_after_abort_connection() {
    struct AbortAtOnce(Lines);
    impl StringHandler for AbortAtOnce {
        fn string_received(&mut self, ctx: &mut StringContext<'_>, string: Vec<u8>) {
            self.0.borrow_mut().push(string);
            ctx.abort_connection();
        }
    }
    let received = Lines::default();
    let mut receiver = NetstringReceiver::new(AbortAtOnce(received.clone()));
    let recorder = connect(&mut receiver);
    receiver.data_received(b"3:one,3:two,");
    assert_eq!(*received.borrow(), lines(&[b"one"]));
    assert_eq!(recorder.events(), ["abort_connection"]);
}

#[test]
fn netstring_send_string_frames_the_data() {
    let (mut strings, _) = Strings::new();
    strings.echo = true;
    let mut receiver = NetstringReceiver::new(strings);
    let recorder = connect(&mut receiver);
    receiver.data_received(b"4:1:a,,0:,");
    assert_eq!(recorder.written(), b"4:1:a,,0:,");
}

// ---------------------------------------------------------------------------------------
// Int8/16/32StringReceiver (55–57)
// ---------------------------------------------------------------------------------------

/// Sends its strings when connected, recording what send_string said.
struct Sender {
    strings: Vec<Vec<u8>>,
    results: Rc<RefCell<Vec<Result<(), StringTooLong>>>>,
}

impl StringHandler<IntN> for Sender {
    fn connection_made(&mut self, ctx: &mut StringContext<'_, IntN>) {
        for string in &self.strings {
            let result = ctx.send_string(string);
            self.results.borrow_mut().push(result);
        }
    }
    fn string_received(&mut self, _ctx: &mut StringContext<'_, IntN>, _string: Vec<u8>) {}
}

fn sent_by(
    make: fn(Sender) -> IntNStringReceiver<Sender>,
    strings: &[&[u8]],
) -> (Vec<u8>, Vec<Result<(), StringTooLong>>) {
    let results = Rc::new(RefCell::new(Vec::new()));
    let mut receiver = make(Sender {
        strings: strings.iter().map(|s| s.to_vec()).collect(),
        results: results.clone(),
    });
    let recorder = connect(&mut receiver);
    let results = results.borrow().clone();
    (recorder.written(), results)
}

#[test]
fn checklist_55_send_string_writes_the_big_endian_length_then_the_string() {
    assert_eq!(
        sent_by(IntNStringReceiver::int32, &[b"foo"]).0,
        b"\0\0\0\x03foo"
    );
    assert_eq!(
        sent_by(IntNStringReceiver::int16, &[b"foo"]).0,
        b"\0\x03foo"
    );
    assert_eq!(sent_by(IntNStringReceiver::int8, &[b"foo"]).0, b"\x03foo");
}

#[test]
fn checklist_55_strings_are_received_at_every_chunk_size() {
    for width in [PrefixWidth::U8, PrefixWidth::U16, PrefixWidth::U32] {
        let mut wire = Vec::new();
        for string in [&b"foo"[..], b"", b"a longer string"] {
            torsion::protocols::framing::encode_prefixed(width, string, &mut wire).unwrap();
        }
        for size in 1..=9 {
            let (strings, received) = Strings::new();
            let mut receiver = IntNStringReceiver::new(width, strings);
            connect(&mut receiver);
            feed(&mut receiver, &wire, size);
            assert_eq!(
                *received.borrow(),
                lines(&[b"foo", b"", b"a longer string"]),
                "{width:?} in packets of {size}"
            );
        }
    }
}

#[test]
fn checklist_56_a_prefix_over_max_length_calls_length_limit_exceeded() {
    for size in 1..=9 {
        let (mut strings, received) = Strings::new();
        strings.tolerate = true;
        let too_long = strings.too_long.clone();
        let mut receiver = IntNStringReceiver::int16(strings).with_max_length(10);
        let recorder = connect(&mut receiver);
        feed(
            &mut receiver,
            b"\0\x0a0123456789\0\x0b01234567890\0\x01x",
            size,
        );
        assert_eq!(
            *received.borrow(),
            lines(&[b"0123456789"]),
            "packets of {size}"
        );
        assert_eq!(
            *too_long.borrow(),
            [LengthLimitExceeded {
                length: 11,
                max: 10
            }]
        );
        assert!(!recorder.disconnecting.get());
    }
}

#[test]
fn checklist_56_by_default_length_limit_exceeded_disconnects() {
    struct Quiet(Lines);
    impl StringHandler<IntN> for Quiet {
        fn string_received(&mut self, _ctx: &mut StringContext<'_, IntN>, string: Vec<u8>) {
            self.0.borrow_mut().push(string);
        }
    }
    let received = Lines::default();
    let mut receiver = IntNStringReceiver::int32(Quiet(received.clone())).with_max_length(3);
    let recorder = connect(&mut receiver);
    receiver.data_received(b"\0\0\0\x04");
    assert!(
        recorder.disconnecting.get(),
        "refused before the body arrived"
    );
    receiver.data_received(b"abcd");
    assert!(received.borrow().is_empty());
}

#[test]
fn checklist_57_a_string_too_long_for_its_prefix_is_an_error_and_nothing_is_written() {
    let long8 = vec![b'x'; 256];
    let (written, results) = sent_by(IntNStringReceiver::int8, &[&long8]);
    assert!(written.is_empty());
    assert_eq!(
        results,
        [Err(StringTooLong {
            length: 256,
            max: 255
        })]
    );
    let long16 = vec![b'x'; 65536];
    let (written, results) = sent_by(IntNStringReceiver::int16, &[&long16, b"ok"]);
    assert_eq!(written, b"\0\x02ok");
    assert_eq!(
        results,
        [
            Err(StringTooLong {
                length: 65536,
                max: 65535
            }),
            Ok(())
        ]
    );
    // The longest string a prefix can announce is fine.
    let (written, results) = sent_by(IntNStringReceiver::int8, &[&long8[..255]]);
    assert_eq!(written.len(), 256);
    assert_eq!(results, [Ok(())]);
}

// ---------------------------------------------------------------------------------------
// FileSender (58)
// ---------------------------------------------------------------------------------------

fn file_contents(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn checklist_58_file_sender_sends_one_chunk_per_resume_then_unregisters_and_fires() {
    let data = file_contents(2 * FileSender::CHUNK_SIZE + 1000);
    let recorder = Recorder::new();
    let transport: Transport = recorder.clone();
    let mut done = FileSender::begin_file_transfer(Cursor::new(data.clone()), &transport, None);
    // Registered as a pull producer, and asked for a first chunk at once.
    assert_eq!(recorder.events(), ["register_producer"]);
    assert_eq!(recorder.writes.get(), 1);
    assert_eq!(recorder.written().len(), FileSender::CHUNK_SIZE);
    let producer = recorder.producer().expect("registered");
    producer.resume_producing();
    assert_eq!(recorder.writes.get(), 2);
    producer.resume_producing();
    assert_eq!(recorder.writes.get(), 3);
    assert_eq!(recorder.written(), data);
    assert!(done.take_result().is_none(), "fires only at the end");
    producer.resume_producing();
    assert_eq!(recorder.writes.get(), 3);
    assert_eq!(
        recorder.events(),
        ["register_producer", "unregister_producer"]
    );
    assert_eq!(done.take_result().unwrap().unwrap(), data.last().copied());
    // A late resume does nothing.
    producer.resume_producing();
    assert_eq!(recorder.writes.get(), 3);
}

#[test]
fn checklist_58_an_empty_file_fires_with_no_last_byte() {
    let recorder = Recorder::new();
    let transport: Transport = recorder.clone();
    let mut done = FileSender::begin_file_transfer(io::empty(), &transport, None);
    assert_eq!(
        recorder.events(),
        ["register_producer", "unregister_producer"]
    );
    assert_eq!(done.take_result().unwrap().unwrap(), None);
    assert_eq!(recorder.writes.get(), 0);
}

#[test]
fn checklist_58_the_transform_applies_to_each_chunk_and_to_the_last_byte() {
    let recorder = Recorder::new();
    let transport: Transport = recorder.clone();
    let chunks = Rc::new(Cell::new(0));
    let counted = chunks.clone();
    let mut done = FileSender::begin_file_transfer(
        Cursor::new(b"hello, world".to_vec()),
        &transport,
        Some(Box::new(move |mut chunk: Vec<u8>| {
            counted.set(counted.get() + 1);
            chunk.make_ascii_uppercase();
            chunk.push(b'!');
            chunk
        })),
    );
    recorder.producer().unwrap().resume_producing();
    assert_eq!(recorder.written(), b"HELLO, WORLD!");
    assert_eq!(chunks.get(), 1);
    assert_eq!(done.take_result().unwrap().unwrap(), Some(b'!'));
}

#[test]
fn checklist_58_stop_producing_fails_the_deferred() {
    let recorder = Recorder::new();
    let transport: Transport = recorder.clone();
    let data = file_contents(3 * FileSender::CHUNK_SIZE);
    let mut done = FileSender::begin_file_transfer(Cursor::new(data), &transport, None);
    let producer = recorder.producer().unwrap();
    producer.stop_producing();
    let failure = done.take_result().unwrap().unwrap_err();
    assert!(failure.check::<ProducerStopped>(), "{failure}");
    producer.resume_producing();
    assert_eq!(recorder.writes.get(), 1, "nothing is sent after a stop");
}

#[test]
fn checklist_58_a_read_error_unregisters_and_fails_the_deferred() {
    /// Gives `good` bytes, then fails.
    struct Failing {
        good: usize,
    }
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.good == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            let n = self.good.min(buf.len());
            buf[..n].fill(b'z');
            self.good -= n;
            Ok(n)
        }
    }
    let recorder = Recorder::new();
    let transport: Transport = recorder.clone();
    let mut done = FileSender::begin_file_transfer(Failing { good: 10 }, &transport, None);
    // The bytes read before the error are sent; the error comes with the next resume.
    assert_eq!(recorder.written(), b"zzzzzzzzzz");
    assert!(done.take_result().is_none());
    recorder.producer().unwrap().resume_producing();
    let failure = done.take_result().unwrap().unwrap_err();
    assert!(failure.check::<io::Error>(), "{failure}");
    assert_eq!(
        recorder.events(),
        ["register_producer", "unregister_producer"]
    );
}

#[test]
fn checklist_58_a_transport_with_a_producer_refuses_a_second_one() {
    let recorder = Recorder::new();
    let transport: Transport = recorder.clone();
    let first =
        FileSender::begin_file_transfer(Cursor::new(file_contents(100_000)), &transport, None);
    let mut second = FileSender::begin_file_transfer(Cursor::new(vec![1]), &transport, None);
    let failure = second.take_result().unwrap().unwrap_err();
    assert!(failure.check::<ProducerAlreadyRegistered>());
    assert_eq!(
        recorder.events(),
        ["register_producer"],
        "the first stays registered"
    );
    drop(first);
}

// ---------------------------------------------------------------------------------------
// Senders: writing from outside a receiver's callbacks
// ---------------------------------------------------------------------------------------

/// A chat room: everyone connected, by id.
type Room = Rc<RefCell<Vec<(usize, LineSender)>>>;

/// A chat client's connection: each line it sends goes to every other client.
struct Chatter {
    id: usize,
    room: Room,
}

impl LineHandler for Chatter {
    fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
        self.room.borrow_mut().push((self.id, ctx.sender()));
    }
    fn line_received(&mut self, _ctx: &mut LineContext<'_>, line: &[u8]) {
        let message = [format!("<{}> ", self.id).as_bytes(), line].concat();
        for (id, sender) in self.room.borrow().iter() {
            if *id != self.id {
                sender.send_line(&message);
            }
        }
    }
    fn connection_lost(&mut self, _ctx: &mut LineContext<'_>, _reason: Failure) {
        self.room.borrow_mut().retain(|(id, _)| *id != self.id);
    }
}

#[test]
fn a_chat_server_broadcasts_each_line_to_the_other_clients_through_line_senders() {
    let room = Room::default();
    let transports: Vec<Rc<StringTransport>> = (0..3).map(|_| StringTransport::new()).collect();
    let mut receivers: Vec<LineReceiver<Chatter>> = (0..3)
        .map(|id| {
            LineReceiver::new(Chatter {
                id,
                room: room.clone(),
            })
            .with_delimiter(b"\n")
        })
        .collect();
    for (receiver, transport) in receivers.iter_mut().zip(&transports) {
        receiver.connection_made(transport.clone());
    }
    receivers[0].data_received(b"hello\nhow are you?\n");
    receivers[2].data_received(b"fine\n");
    assert_eq!(transports[0].take_value(), b"<2> fine\n");
    assert_eq!(
        transports[1].take_value(),
        b"<0> hello\n<0> how are you?\n<2> fine\n"
    );
    assert_eq!(transports[2].take_value(), b"<0> hello\n<0> how are you?\n");
    // The senders carry their connection's delimiter.
    assert!(room.borrow().iter().all(|(_, s)| s.delimiter() == b"\n"));

    // Client 1 leaves: its sender is dropped with it, the others still get the lines.
    receivers[1].connection_lost(Failure::new(ConnectionDone));
    receivers[2].data_received(b"bye\n");
    assert_eq!(transports[0].take_value(), b"<2> bye\n");
    assert!(transports[1].take_value().is_empty());
    assert_eq!(room.borrow().len(), 2);
}

#[test]
fn a_line_only_context_gives_a_sender_too() {
    struct Keep(Rc<RefCell<Option<LineSender>>>);
    impl LineOnlyHandler for Keep {
        fn connection_made(&mut self, ctx: &mut LineOnlyContext<'_>) {
            *self.0.borrow_mut() = Some(ctx.sender());
        }
        fn line_received(&mut self, _ctx: &mut LineOnlyContext<'_>, _line: &[u8]) {}
    }
    let kept = Rc::new(RefCell::new(None));
    let mut receiver = LineOnlyReceiver::new(Keep(kept.clone())).with_delimiter(b"|");
    let transport = StringTransport::new();
    receiver.connection_made(transport.clone());
    let sender = kept.borrow().clone().expect("connected");
    sender.send_line(b"one");
    sender.clone().send_line(b"two");
    assert_eq!(transport.value(), b"one|two|");
}

/// The hub's connections, by id.
type Peers<K> = Rc<RefCell<Vec<(usize, StringSender<K>)>>>;

/// Relays each string to every other connection of the hub.
struct Relay<K: StringFraming> {
    id: usize,
    peers: Peers<K>,
    refused: Rc<RefCell<Vec<StringTooLong>>>,
}

impl<K: StringFraming> StringHandler<K> for Relay<K> {
    fn connection_made(&mut self, ctx: &mut StringContext<'_, K>) {
        self.peers.borrow_mut().push((self.id, ctx.sender()));
    }
    fn string_received(&mut self, _ctx: &mut StringContext<'_, K>, string: Vec<u8>) {
        let mut relayed = b"from ".to_vec();
        relayed.extend_from_slice(self.id.to_string().as_bytes());
        relayed.push(b':');
        relayed.extend_from_slice(&string);
        for (id, peer) in self.peers.borrow().iter() {
            if *id != self.id
                && let Err(error) = peer.try_send_string(&relayed)
            {
                self.refused.borrow_mut().push(error);
            }
        }
    }
}

#[test]
fn string_senders_relay_netstrings_and_length_prefixed_strings_between_connections() {
    let peers = Rc::new(RefCell::new(Vec::new()));
    let refused = Rc::new(RefCell::new(Vec::new()));
    let relay = |id| Relay::<Netstring> {
        id,
        peers: peers.clone(),
        refused: refused.clone(),
    };
    let (a, b) = (StringTransport::new(), StringTransport::new());
    let mut first = NetstringReceiver::new(relay(1));
    let mut second = NetstringReceiver::new(relay(2));
    first.connection_made(a.clone());
    second.connection_made(b.clone());
    first.data_received(b"2:hi,");
    assert_eq!(b.take_value(), b"9:from 1:hi,");
    second.data_received(b"0:,");
    assert_eq!(a.take_value(), b"7:from 2:,");
    // A netstring sender cannot fail.
    let sender: StringSender = peers.borrow()[0].1.clone();
    sender.send_string(b"direct");
    assert_eq!(a.take_value(), b"6:direct,");
    assert!(refused.borrow().is_empty());

    // Over one-byte prefixes a relayed string may no longer fit: refused, nothing written.
    let peers = Rc::new(RefCell::new(Vec::new()));
    let relay = |id| Relay::<IntN> {
        id,
        peers: peers.clone(),
        refused: refused.clone(),
    };
    let (a, b) = (StringTransport::new(), StringTransport::new());
    let mut first = IntNStringReceiver::int8(relay(1));
    let mut second = IntNStringReceiver::int8(relay(2));
    first.connection_made(a.clone());
    second.connection_made(b.clone());
    first.data_received(b"\x02hi");
    assert_eq!(b.take_value(), b"\x09from 1:hi");
    let mut long = vec![250];
    long.extend_from_slice(&[b'x'; 250]);
    first.data_received(&long);
    assert!(b.take_value().is_empty());
    assert_eq!(
        *refused.borrow(),
        [StringTooLong {
            length: 257,
            max: 255
        }]
    );
    let sender: StringSender<IntN> = peers.borrow()[1].1.clone();
    assert_eq!(sender.framing().width(), PrefixWidth::U8);
    assert!(sender.send_string(&[0; 256]).is_err());
    sender.send_string(b"ok").unwrap();
    assert_eq!(b.take_value(), b"\x02ok");
}

// ---------------------------------------------------------------------------------------
// End to end over TCP
// ---------------------------------------------------------------------------------------

fn listen(reactor: &Reactor, factory: Rc<impl Factory>) -> (torsion::net::Port, u16) {
    let options = ListenOptions {
        interface: [127, 0, 0, 1].into(),
        ..ListenOptions::default()
    };
    let port = reactor.listen_tcp_with(0, factory, options).unwrap();
    let n = port.host().port().unwrap();
    (port, n)
}

/// Twisted's "echo lines" server.
struct EchoLines;

impl LineHandler for EchoLines {
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        ctx.send_line(line);
    }
}

fn nth_line(i: usize) -> Vec<u8> {
    let mut line = format!("line {i} ").into_bytes();
    line.extend(std::iter::repeat_n(b'x', i % 97));
    line
}

/// Keeps `window` lines in flight until `total` have come back, then closes.
struct LineClient {
    total: usize,
    window: usize,
    sent: usize,
    received: Lines,
    reactor: Reactor,
}

impl LineClient {
    fn send_next(&mut self, ctx: &LineContext<'_>) {
        if self.sent < self.total {
            ctx.send_line(&nth_line(self.sent));
            self.sent += 1;
        }
    }
}

impl LineHandler for LineClient {
    fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
        for _ in 0..self.window {
            self.send_next(ctx);
        }
    }
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        self.received.borrow_mut().push(line.to_vec());
        if self.received.borrow().len() == self.total {
            ctx.lose_connection();
        } else {
            self.send_next(ctx);
        }
    }
    fn connection_lost(&mut self, _ctx: &mut LineContext<'_>, _reason: Failure) {
        let _ = self.reactor.stop();
    }
}

/// Echoes lines, pausing for a moment after each `pause` line.
struct PausingEcho {
    reactor: Reactor,
    pauses: Rc<Cell<usize>>,
}

impl LineHandler for PausingEcho {
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        ctx.send_line(line);
        if line == b"pause" {
            self.pauses.set(self.pauses.get() + 1);
            ctx.pause_producing();
            let handle = ctx.handle();
            self.reactor
                .call_later(0.02, move || handle.resume_producing());
        }
    }
}

/// Sends what it is given at once, and collects lines until it has `expect` of them.
struct Burst {
    payload: Vec<u8>,
    expect: usize,
    received: Lines,
    reactor: Reactor,
}

impl LineHandler for Burst {
    fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
        ctx.transport().write(&self.payload);
    }
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        self.received.borrow_mut().push(line.to_vec());
        if self.received.borrow().len() == self.expect {
            ctx.lose_connection();
        }
    }
    fn connection_lost(&mut self, _ctx: &mut LineContext<'_>, _reason: Failure) {
        let _ = self.reactor.stop();
    }
}

/// Answers each netstring with its bytes reversed, and records how the connection ended.
struct ReverseStrings {
    lost: Rc<RefCell<Option<Failure>>>,
    ended: Rc<Cell<usize>>,
    reactor: Reactor,
}

impl StringHandler for ReverseStrings {
    fn string_received(&mut self, ctx: &mut StringContext<'_>, mut string: Vec<u8>) {
        string.reverse();
        ctx.send_string(&string);
    }
    fn connection_lost(&mut self, _ctx: &mut StringContext<'_>, reason: Failure) {
        *self.lost.borrow_mut() = Some(reason);
        end_one(&self.ended, &self.reactor);
    }
}

/// Sends netstrings, checks the answers, then sends a malformed one.
struct StringClient {
    strings: Vec<Vec<u8>>,
    received: Lines,
    ended: Rc<Cell<usize>>,
    reactor: Reactor,
}

impl StringHandler for StringClient {
    fn connection_made(&mut self, ctx: &mut StringContext<'_>) {
        for string in &self.strings {
            ctx.send_string(string);
        }
    }
    fn string_received(&mut self, ctx: &mut StringContext<'_>, string: Vec<u8>) {
        self.received.borrow_mut().push(string);
        if self.received.borrow().len() == self.strings.len() {
            // Not a netstring: the server drops the connection.
            ctx.transport().write(b"3:abc;");
        }
    }
    fn connection_lost(&mut self, _ctx: &mut StringContext<'_>, _reason: Failure) {
        end_one(&self.ended, &self.reactor);
    }
}

/// Stops the reactor once both ends of the connection have ended.
fn end_one(ended: &Cell<usize>, reactor: &Reactor) {
    ended.set(ended.get() + 1);
    if ended.get() == 2 {
        let _ = reactor.stop();
    }
}

reactor_test! {
    fn line_echo_server_and_client_exchange_a_thousand_lines(reactor: Reactor) {
        let (port, n) = listen(&reactor, Rc::new(|| LineReceiver::new(EchoLines)));
        let received = Lines::default();
        let (r, rx) = (reactor.clone(), received.clone());
        reactor.connect_tcp("127.0.0.1", n, Rc::new(move || {
            LineReceiver::new(LineClient {
                total: 1000,
                window: 16,
                sent: 0,
                received: rx.clone(),
                reactor: r.clone(),
            })
        }));
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        drop(port);
        let expected: Vec<Vec<u8>> = (0..1000).map(nth_line).collect();
        assert_eq!(*received.borrow(), expected);
    }

    fn a_paused_line_receiver_resumes_from_a_timer_over_tcp(reactor: Reactor) {
        let pauses = Rc::new(Cell::new(0));
        let (r, p) = (reactor.clone(), pauses.clone());
        let (port, n) = listen(&reactor, Rc::new(move || {
            LineReceiver::new(PausingEcho { reactor: r.clone(), pauses: p.clone() })
        }));
        let received = Lines::default();
        let (r, rx) = (reactor.clone(), received.clone());
        reactor.connect_tcp("127.0.0.1", n, Rc::new(move || {
            LineReceiver::new(Burst {
                payload: b"a\r\npause\r\nb\r\npause\r\nc\r\n".to_vec(),
                expect: 5,
                received: rx.clone(),
                reactor: r.clone(),
            })
        }));
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        drop(port);
        assert_eq!(*received.borrow(), lines(&[b"a", b"pause", b"b", b"pause", b"c"]));
        assert_eq!(pauses.get(), 2);
    }

    fn netstring_exchange_then_a_malformed_netstring_drops_the_connection(reactor: Reactor) {
        let lost = Rc::new(RefCell::new(None));
        let ended = Rc::new(Cell::new(0));
        let (r, l, e) = (reactor.clone(), lost.clone(), ended.clone());
        let (port, n) = listen(&reactor, Rc::new(move || {
            NetstringReceiver::new(ReverseStrings {
                lost: l.clone(),
                ended: e.clone(),
                reactor: r.clone(),
            })
        }));
        let strings: Vec<Vec<u8>> = vec![
            b"hello".to_vec(),
            Vec::new(),
            b"1:a,".to_vec(),
            file_contents(50_000),
        ];
        let received = Lines::default();
        let (r, rx, e, s) = (reactor.clone(), received.clone(), ended.clone(), strings.clone());
        reactor.connect_tcp("127.0.0.1", n, Rc::new(move || {
            NetstringReceiver::new(StringClient {
                strings: s.clone(),
                received: rx.clone(),
                ended: e.clone(),
                reactor: r.clone(),
            })
        }));
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        drop(port);
        let expected: Vec<Vec<u8>> = strings
            .iter()
            .map(|s| s.iter().rev().copied().collect())
            .collect();
        assert_eq!(*received.borrow(), expected);
        let reason = lost.borrow_mut().take().expect("the server's connection_lost ran");
        assert!(reason.check::<ConnectionDone>(), "{reason}");
    }

    fn file_sender_sends_a_file_over_tcp(reactor: Reactor) {
        let data = file_contents(10 * FileSender::CHUNK_SIZE + 123);
        let path = std::env::temp_dir().join(format!(
            "torsion-file-sender-{}-{:?}.bin",
            std::process::id(),
            reactor.backend()
        ));
        std::fs::write(&path, &data).unwrap();
        let last = Rc::new(Cell::new(None));
        let (l, p) = (last.clone(), path.clone());
        let (port, n) = listen(&reactor, Rc::new(move || {
            LineReceiver::new(SendFile { path: p.clone(), last: l.clone() })
        }));
        let received = Rc::new(RefCell::new(Vec::new()));
        let (r, rx) = (reactor.clone(), received.clone());
        reactor.connect_tcp("127.0.0.1", n, Rc::new(move || {
            LineReceiver::new(RawCollector { received: rx.clone(), reactor: r.clone() })
        }));
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        drop(port);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(received.borrow().len(), data.len());
        assert!(*received.borrow() == data);
        assert_eq!(last.get(), Some(data.last().copied()));
    }
}

/// Sends a file to each client, then closes.
struct SendFile {
    path: std::path::PathBuf,
    last: Rc<Cell<Option<Option<u8>>>>,
}

impl LineHandler for SendFile {
    fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
        let file = std::fs::File::open(&self.path).unwrap();
        let transport = ctx.transport().clone();
        let last = self.last.clone();
        let done = FileSender::begin_file_transfer(file, &transport, None);
        drop(done.add_callback(move |byte| {
            last.set(Some(byte));
            transport.lose_connection();
            Ok(())
        }));
    }
    fn line_received(&mut self, _ctx: &mut LineContext<'_>, _line: &[u8]) {}
}

/// Takes everything in raw mode.
struct RawCollector {
    received: Rc<RefCell<Vec<u8>>>,
    reactor: Reactor,
}

impl LineHandler for RawCollector {
    fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
        ctx.set_raw_mode();
    }
    fn line_received(&mut self, _ctx: &mut LineContext<'_>, _line: &[u8]) {
        panic!("raw mode only");
    }
    fn raw_data_received(&mut self, _ctx: &mut LineContext<'_>, data: &[u8]) {
        self.received.borrow_mut().extend_from_slice(data);
    }
    fn connection_lost(&mut self, _ctx: &mut LineContext<'_>, _reason: Failure) {
        let _ = self.reactor.stop();
    }
}
