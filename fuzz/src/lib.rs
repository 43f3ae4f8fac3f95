//! Checks shared by the fuzz targets.
//!
//! The framers' targets (`line`, `netstring`, `prefixed`) each parse a stream fed whole and
//! fed cut at fuzzer-chosen points, and assert the two give the same frames, that the frames
//! obey the format, and that nothing panics. Their fuzz input is one configuration byte
//! (delimiter, maximum length, prefix width, mode), one byte giving the number of cuts
//! (mod 16), two bytes for each cut (big-endian, taken modulo the stream's length + 1), then
//! the stream.
//!
//! The `endpoint_string` target takes its input as an endpoint description (inputs that are
//! not UTF-8 are skipped) and checks the string parser: see [`check_endpoint_string`].
//!
//! The HTTP targets (`http_request_head`, `http_chunked`) take the framers' input format
//! (the configuration byte picks the request-head limits, unused by `http_chunked`) and
//! check torsion-web's parsers the same way: see [`check_http_request_head`] and
//! [`check_http_chunked`].

use std::cell::OnceCell;

use torsion::Reactor;
use torsion::endpoints::{
    EndpointArgs, client_from_string, quote_string_argument, server_from_string,
};
use torsion::error::{EndpointSyntaxProblem, LengthLimitExceeded, NetstringError};
use torsion::protocols::framing::{
    LineEvent, LineOnlyParser, LineParser, NetstringParser, PrefixWidth, PrefixedParser,
    encode_prefixed, netstring_encode,
};
use torsion_web::parse::{
    BodyLength, ChunkError, ChunkedDecoder, LAST_CHUNK, Limits, ParseError, encode_chunk,
    parse_request_head,
};

/// A decoded fuzz input.
struct Input<'a> {
    config: u8,
    cuts: Vec<usize>,
    stream: &'a [u8],
}

impl<'a> Input<'a> {
    fn parse(data: &'a [u8]) -> Option<Self> {
        let (&config, rest) = data.split_first()?;
        let (&cuts, rest) = rest.split_first()?;
        let cuts = usize::from(cuts % 16).min(rest.len() / 2);
        let (cut_bytes, stream) = rest.split_at(cuts * 2);
        let mut cuts: Vec<usize> = cut_bytes
            .chunks_exact(2)
            .map(|c| usize::from(u16::from_be_bytes([c[0], c[1]])) % (stream.len() + 1))
            .collect();
        cuts.sort_unstable();
        Some(Input {
            config,
            cuts,
            stream,
        })
    }

    /// The stream whole, as one packet.
    fn whole(&self) -> Vec<&'a [u8]> {
        vec![self.stream]
    }

    /// The stream cut at the fuzzer's points (empty packets included).
    fn packets(&self) -> Vec<&'a [u8]> {
        let mut packets = Vec::with_capacity(self.cuts.len() + 1);
        let mut from = 0;
        for &at in self.cuts.iter().chain([&self.stream.len()]) {
            packets.push(&self.stream[from..at]);
            from = at;
        }
        packets
    }
}

/// What a line protocol saw. Errors keep their length and bytes apart: they say how much
/// of the over-long line had arrived, which depends on the packets.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Line(Vec<u8>),
    Body(Vec<u8>),
    TooLong,
}

const DELIMITERS: [&[u8]; 4] = [b"\r\n", b"\n", b"aab", b"\r\n\r\n"];

/// A protocol over [`LineParser`]: `RAW n` announces n bytes of raw data (read in raw mode,
/// the rest handed back with `set_line_mode`); `PUSH` clears the buffer and hands it back
/// (which must change nothing). Stops at the first error, as a protocol that disconnects.
struct RawBodies {
    parser: LineParser,
    max: usize,
    seen: Vec<Seen>,
    error_lengths: Vec<usize>,
    body: Option<(usize, Vec<u8>)>,
    failed: bool,
}

impl RawBodies {
    fn data_received(&mut self, data: &[u8]) {
        if self.failed {
            return;
        }
        self.parser.feed(data);
        while let Some(event) = self.parser.next_event() {
            match event {
                Err(e) => {
                    assert!(e.length > e.max, "{e:?}");
                    // The bytes from the line's start on, the line at least.
                    assert!(e.line.len() >= e.length, "{e:?}");
                    self.seen.push(Seen::TooLong);
                    self.error_lengths.push(e.length);
                    self.failed = true;
                    return;
                }
                Ok(LineEvent::Line(line)) => {
                    assert!(line.len() <= self.max);
                    self.seen.push(Seen::Line(line.to_vec()));
                    let announced = line
                        .strip_prefix(b"RAW ")
                        .filter(|n| n.len() <= 4)
                        .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok());
                    if line == b"PUSH" {
                        let buffered = self.parser.clear_line_buffer();
                        assert!(self.parser.buffered().is_empty());
                        self.parser.set_line_mode(&buffered);
                        assert_eq!(self.parser.buffered(), &buffered[..]);
                    } else if let Some(n) = announced {
                        if n == 0 {
                            self.seen.push(Seen::Body(Vec::new()));
                        } else {
                            self.body = Some((n, Vec::new()));
                            self.parser.set_raw_mode();
                        }
                    }
                }
                Ok(LineEvent::Raw(data)) => {
                    assert!(!data.is_empty());
                    let (remaining, collected) = self.body.as_mut().expect("raw mode");
                    let used = (*remaining).min(data.len());
                    collected.extend_from_slice(&data[..used]);
                    *remaining -= used;
                    if *remaining == 0 {
                        let rest = data[used..].to_vec();
                        let (_, collected) = self.body.take().unwrap();
                        self.seen.push(Seen::Body(collected));
                        self.parser.set_line_mode(&rest);
                    }
                }
            }
        }
    }
}

fn raw_bodies(delimiter: &[u8], max: usize, packets: &[&[u8]]) -> Vec<Seen> {
    let mut protocol = RawBodies {
        parser: LineParser::new()
            .with_delimiter(delimiter)
            .with_max_length(max),
        max,
        seen: Vec::new(),
        error_lengths: Vec::new(),
        body: None,
        failed: false,
    };
    for packet in packets {
        protocol.data_received(packet);
    }
    protocol.seen
}

fn line_only(delimiter: &[u8], max: usize, packets: &[&[u8]]) -> Vec<Seen> {
    let mut parser = LineOnlyParser::new()
        .with_delimiter(delimiter)
        .with_max_length(max);
    let mut seen = Vec::new();
    for packet in packets {
        parser.feed(packet);
        while let Some(event) = parser.next_line() {
            match event {
                Ok(line) => seen.push(Seen::Line(line.to_vec())),
                Err(e) => {
                    assert!(e.length > e.max, "{e:?}");
                    // The line alone, or the unterminated bytes.
                    assert_eq!(e.line.len(), e.length, "{e:?}");
                    seen.push(Seen::TooLong);
                    return seen;
                }
            }
        }
    }
    seen
}

/// Lines and raw mode: the same events however the stream is cut (except that a line-only
/// parser, as Twisted's `LineOnlyReceiver`, may fail earlier where a packet cuts a
/// delimiter); lines hold no delimiter; a plain line stream is the lines and their
/// delimiters, in order.
pub fn check_lines(data: &[u8]) {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let delimiter = DELIMITERS[usize::from(input.config & 3)];
    let max = usize::from((input.config >> 2) & 0x1f);

    if input.config & 0x80 != 0 {
        let whole = raw_bodies(delimiter, max, &input.whole());
        assert_eq!(whole, raw_bodies(delimiter, max, &input.packets()));
        return;
    }

    let whole = line_only(delimiter, max, &input.whole());
    let cut = line_only(delimiter, max, &input.packets());
    if cut != whole {
        // Only an error brought forward by a delimiter cut in two.
        assert_eq!(cut.last(), Some(&Seen::TooLong), "{cut:?} vs {whole:?}");
        assert_eq!(cut[..cut.len() - 1], whole[..cut.len() - 1]);
    }
    if whole.last() == Some(&Seen::TooLong) {
        assert_eq!(cut.last(), Some(&Seen::TooLong), "{cut:?} vs {whole:?}");
    }
    let mut rebuilt = Vec::new();
    for seen in &whole {
        if let Seen::Line(line) = seen {
            let at = rebuilt.len();
            rebuilt.extend_from_slice(line);
            rebuilt.extend_from_slice(delimiter);
            // The delimiter ending this line is the first one in it.
            let first = rebuilt[at..]
                .windows(delimiter.len())
                .position(|w| w == delimiter);
            assert_eq!(first, Some(line.len()), "{line:?} holds its delimiter");
        }
    }
    assert!(input.stream.starts_with(&rebuilt));
}

fn netstrings(max: usize, packets: &[&[u8]]) -> Vec<Result<Vec<u8>, NetstringError>> {
    let mut parser = NetstringParser::new().with_max_length(max);
    let mut got = Vec::new();
    for packet in packets {
        parser.feed(packet);
        got.extend(std::iter::from_fn(|| parser.next_frame()));
    }
    assert_eq!(parser.error(), got.last().and_then(|r| r.clone().err()));
    got
}

/// Netstrings: the same frames and error however the stream is cut; nothing after an error;
/// the frames re-encode to the start of the stream.
pub fn check_netstrings(data: &[u8]) {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let max = usize::from(input.config) * 4;
    let whole = netstrings(max, &input.whole());
    assert_eq!(whole, netstrings(max, &input.packets()));
    let mut rebuilt = Vec::new();
    for (i, result) in whole.iter().enumerate() {
        match result {
            Ok(frame) => {
                assert!(frame.len() <= max);
                netstring_encode(frame, &mut rebuilt);
            }
            Err(NetstringError::TooLong { declared, max: m }) => {
                assert!(*declared > max && *m == max);
                assert_eq!(i, whole.len() - 1);
            }
            Err(_) => assert_eq!(i, whole.len() - 1, "an error is the last output"),
        }
    }
    assert!(input.stream.starts_with(&rebuilt));
}

fn prefixed(
    width: PrefixWidth,
    max: usize,
    packets: &[&[u8]],
) -> Vec<Result<Vec<u8>, LengthLimitExceeded>> {
    let mut parser = PrefixedParser::new(width).with_max_length(max);
    let mut got = Vec::new();
    for packet in packets {
        parser.feed(packet);
        got.extend(std::iter::from_fn(|| parser.next_frame()));
    }
    got
}

/// Length-prefixed strings: the same frames and error however the stream is cut; nothing
/// after an error; the frames re-encode to the start of the stream.
pub fn check_prefixed(data: &[u8]) {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let width = [
        PrefixWidth::U8,
        PrefixWidth::U16,
        PrefixWidth::U32,
        PrefixWidth::U16,
    ][usize::from(input.config & 3)];
    let max = usize::from(input.config >> 2) * 8;
    let whole = prefixed(width, max, &input.whole());
    assert_eq!(whole, prefixed(width, max, &input.packets()));
    let mut rebuilt = Vec::new();
    for (i, result) in whole.iter().enumerate() {
        match result {
            Ok(frame) => encode_prefixed(width, frame, &mut rebuilt).unwrap(),
            Err(e) => {
                assert!(e.length > max && e.max == max);
                assert_eq!(i, whole.len() - 1, "an error is the last output");
            }
        }
    }
    assert!(input.stream.starts_with(&rebuilt));
}

/// Quotes `text` so that it splits back to itself in any place of a description: as
/// [`quote_string_argument`] does, and `=` escaped too. That function leaves `=` alone, as
/// Twisted's does: enough for a keyword's value, not for a key or a positional argument
/// holding one.
fn quote_anywhere(text: &str) -> String {
    quote_string_argument(text).replace('=', "\\=")
}

/// Builds a description back from its parts, positional arguments first.
fn unparse(args: &EndpointArgs) -> String {
    let mut out = quote_anywhere(&args.endpoint_type);
    for positional in &args.positional {
        out.push(':');
        out.push_str(&quote_anywhere(positional));
    }
    for (key, value) in &args.keywords {
        out.push(':');
        out.push_str(&quote_anywhere(key));
        out.push('=');
        out.push_str(&quote_string_argument(value));
    }
    out
}

/// The parameter lists of the built-in types, and how many each takes by position.
const SIGNATURES: [(&[&str], usize); 4] = [
    (&["port", "interface", "backlog"], 3),
    (&["address|path", "mode", "backlog", "lockfile"], 4),
    (&["host", "port", "timeout", "bindAddress|bind_address"], 2),
    (&["domain", "index", "name"], 3),
];

thread_local! {
    /// One reactor for the whole run: making endpoints needs one, though none of them
    /// listens or connects here.
    static REACTOR: OnceCell<Reactor> = const { OnceCell::new() };
}

/// Endpoint descriptions (`data` as UTF-8; other inputs are skipped):
///
/// - [`EndpointArgs::parse`] fails only for a description ending in an unescaped
///   backslash, or naming no type; what it splits, put back together with every argument
///   quoted, splits to the same parts;
/// - any text, quoted with [`quote_string_argument`], is read back as a keyword's value,
///   and, if it holds no `=`, as a positional argument;
/// - binding the parts to the built-in types' parameters puts each positional argument
///   under its parameter's name;
/// - `server_from_string` and `client_from_string` return an endpoint or an error naming
///   the description, and never panic. They only build endpoint values: nothing listens
///   or connects.
pub fn check_endpoint_string(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    let trailing_backslashes = text.chars().rev().take_while(|&c| c == '\\').count();
    match EndpointArgs::parse(text) {
        Ok(args) => {
            assert!(trailing_backslashes % 2 == 0, "{text:?} split: {args:?}");
            assert!(!args.endpoint_type.is_empty());
            let again = unparse(&args);
            assert_eq!(EndpointArgs::parse(&again).as_ref(), Ok(&args), "{again:?}");
            for (params, max) in SIGNATURES {
                if let Ok(bound) = args.bind(params, max) {
                    for (value, param) in args.positional.iter().zip(params) {
                        let name = param.split('|').next().unwrap();
                        assert_eq!(bound.get(name), Some(value.as_str()));
                    }
                }
            }
        }
        Err(EndpointSyntaxProblem::TrailingBackslash) => {
            assert!(trailing_backslashes % 2 == 1, "{text:?}");
        }
        Err(EndpointSyntaxProblem::Empty) => assert!(trailing_backslashes % 2 == 0),
        Err(other) => {
            panic!("{text:?}: splitting fails only as Empty or TrailingBackslash: {other:?}")
        }
    }

    let quoted = quote_string_argument(text);
    let as_value = EndpointArgs::parse(&format!("x:k={quoted}")).unwrap();
    assert_eq!(as_value.keywords, [("k".to_string(), text.to_string())]);
    assert!(as_value.positional.is_empty());
    if !text.contains('=') {
        let as_positional = EndpointArgs::parse(&format!("x:{quoted}")).unwrap();
        assert_eq!(as_positional.positional, [text]);
    }

    REACTOR.with(|cell| {
        let reactor = cell.get_or_init(|| Reactor::new().expect("a reactor"));
        if let Err(err) = server_from_string(reactor, text) {
            assert_eq!(err.description, text);
        }
        if let Err(err) = client_from_string(reactor, text) {
            assert_eq!(err.description, text);
        }
    });
}

/// The request-head limits a configuration byte picks: the defaults when its top bit is
/// clear, else small ones, so that every limit is reached.
fn head_limits(config: u8) -> Limits {
    if config & 0x80 == 0 {
        return Limits::default();
    }
    Limits {
        max_head_bytes: usize::from(config & 0x0f) * 16,
        max_headers: usize::from(config & 0x03) * 3,
        max_uri_bytes: usize::from((config >> 4) & 0x07) * 8,
    }
}

/// Request heads: every prefix of the stream (cut where the packets end) answers "need
/// more" or what the whole stream answers; a head is read from no more bytes than it says
/// and within the limits, and its framing follows the rules (chunked only on HTTP/1.1 and
/// never with Content-Length, one Host on HTTP/1.1); errors name a status of theirs. Then
/// the rest of the stream is read as pipelined requests (head, body, head…), which must
/// not panic.
pub fn check_http_request_head(data: &[u8]) {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let limits = head_limits(input.config);
    let whole = parse_request_head(input.stream, &limits);
    for &at in &input.cuts {
        let prefix = parse_request_head(&input.stream[..at], &limits);
        assert!(
            prefix == Ok(None) || prefix == whole,
            "prefix of {at} bytes: {prefix:?}, whole: {whole:?}"
        );
    }
    match &whole {
        Ok(None) => assert!(input.stream.len() <= limits.max_head_bytes + 2 * 8 + 1),
        Ok(Some((head, n))) => {
            assert!(*n <= input.stream.len());
            assert_eq!(
                parse_request_head(&input.stream[..*n], &limits).as_ref(),
                Ok(&Some((head.clone(), *n)))
            );
            assert!(head.target.len() <= limits.max_uri_bytes);
            assert!(head.headers.len() <= limits.max_headers);
            assert!(
                head.version == http::Version::HTTP_10 || head.version == http::Version::HTTP_11
            );
            let lengths = head
                .headers
                .get_all(http::header::CONTENT_LENGTH)
                .iter()
                .count();
            match head.body {
                BodyLength::Chunked => {
                    assert_eq!(head.version, http::Version::HTTP_11);
                    assert_eq!(lengths, 0);
                }
                BodyLength::Fixed(len) => assert!(len > 0 && lengths > 0),
                BodyLength::Empty => {}
            }
            if head.version == http::Version::HTTP_11 {
                assert_eq!(head.headers.get_all(http::header::HOST).iter().count(), 1);
            }
        }
        Err(error) => {
            let status = error.status().as_u16();
            let expected = match error {
                ParseError::BadRequest(_) => 400,
                ParseError::HeadersTooLarge | ParseError::TooManyHeaders => 431,
                ParseError::UriTooLong => 414,
                ParseError::VersionNotSupported => 505,
            };
            assert_eq!(status, expected);
        }
    }

    // The rest as a pipeline, as a server reads it.
    let mut rest = input.stream;
    while let Ok(Some((head, n))) = parse_request_head(rest, &limits) {
        assert!(n > 0);
        rest = &rest[n..];
        match head.body {
            BodyLength::Empty => {}
            BodyLength::Fixed(len) => {
                let len = usize::try_from(len).unwrap_or(usize::MAX).min(rest.len());
                rest = &rest[len..];
            }
            BodyLength::Chunked => match decode(&[rest]) {
                (_, Ok(Some(end))) => rest = &rest[end..],
                _ => return,
            },
        }
    }
}

/// Decodes a chunked body fed in `packets`: the body, and where it ended (counted from the
/// start of the first packet), or the error.
fn decode(packets: &[&[u8]]) -> (Vec<u8>, Result<Option<usize>, ChunkError>) {
    let mut decoder = ChunkedDecoder::new();
    let mut body = Vec::new();
    let mut offset = 0;
    for packet in packets {
        let mut at = 0;
        loop {
            match decoder.decode(&packet[at..]) {
                Err(error) => return (body, Err(error)),
                Ok(step) => {
                    assert!(step.consumed <= packet.len() - at);
                    assert!(step.data.len() <= step.consumed);
                    body.extend_from_slice(step.data);
                    at += step.consumed;
                    if step.done {
                        assert!(decoder.is_done());
                        return (body, Ok(Some(offset + at)));
                    }
                    if step.consumed == 0 {
                        break;
                    }
                }
            }
        }
        assert_eq!(
            at,
            packet.len(),
            "a packet was left unread before the body ended"
        );
        offset += packet.len();
    }
    (body, Ok(None))
}

/// Chunked bodies: the same data, end and error however the stream is cut; the data is
/// never more than the stream; a decoded body, encoded again with `encode_chunk` and
/// `LAST_CHUNK`, decodes back to itself and ends exactly there.
pub fn check_http_chunked(data: &[u8]) {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let whole = decode(&input.whole());
    assert_eq!(whole, decode(&input.packets()));
    let (body, ended) = whole;
    assert!(body.len() <= input.stream.len());
    if let Ok(Some(end)) = ended {
        assert!(end <= input.stream.len());
    }
    let mut encoded = Vec::new();
    for piece in body.chunks(usize::from(input.config).max(1)) {
        encode_chunk(piece, &mut encoded);
    }
    encoded.extend_from_slice(LAST_CHUNK);
    let end = encoded.len();
    encoded.extend_from_slice(b"0\r\n");
    assert_eq!(decode(&[&encoded]), (body, Ok(Some(end))));
}
