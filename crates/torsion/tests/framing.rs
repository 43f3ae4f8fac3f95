//! The framers of `twisted.protocols.basic` (CHECKLIST "Line, netstring and length-prefixed
//! receivers" 48, 50–57; Twisted's protocols/test/test_basic.py), driven the way a protocol
//! wrapper drives them: feed a packet, then take events one at a time until there are none.

use proptest::prelude::*;
use proptest::sample::Index;

use torsion::error::{LengthLimitExceeded, LineTooLong, NetstringError, StringTooLong};
use torsion::protocols::framing::{
    LineEvent, LineOnlyParser, LineParser, NetstringParser, PrefixWidth, PrefixedParser,
    encode_prefixed, netstring_encode,
};

/// What the test protocols saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Line(Vec<u8>),
    /// A whole raw body, however many raw events it came in.
    Body(Vec<u8>),
    Error(String),
}

fn line(bytes: &[u8]) -> Got {
    Got::Line(bytes.to_vec())
}

fn body(bytes: &[u8]) -> Got {
    Got::Body(bytes.to_vec())
}

/// `input` cut at `cuts` (positions, in any order, duplicates allowed).
fn cut<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut from = 0;
    for c in cuts.into_iter().chain([input.len()]) {
        chunks.push(&input[from..c]);
        from = c;
    }
    chunks
}

/// `input` in pieces of `size` bytes.
fn pieces(input: &[u8], size: usize) -> Vec<&[u8]> {
    input.chunks(size).collect()
}

/// Every way of cutting `input` into 1 to 9 byte pieces, in two, and in three.
fn every_split(input: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut splits: Vec<Vec<&[u8]>> = (1..=9).map(|size| pieces(input, size)).collect();
    for a in 0..=input.len() {
        splits.push(cut(input, &[a]));
        for b in a..=input.len() {
            splits.push(cut(input, &[a, b]));
        }
    }
    splits
}

/// A protocol over [`LineParser`] that reads `RAW n` as "n bytes of raw data follow": it
/// switches to raw mode, collects them, and hands the rest back with `set_line_mode(rest)`.
/// It stops at the first error, as a protocol that disconnects would.
struct RawBodies {
    parser: LineParser,
    got: Vec<Got>,
    body: Option<(usize, Vec<u8>)>,
    failed: bool,
}

impl RawBodies {
    fn new(parser: LineParser) -> Self {
        RawBodies {
            parser,
            got: Vec::new(),
            body: None,
            failed: false,
        }
    }

    fn data_received(&mut self, data: &[u8]) {
        if self.failed {
            return;
        }
        self.parser.feed(data);
        while let Some(event) = self.parser.next_event() {
            match event {
                Err(e) => {
                    self.got.push(Got::Error(format!("{e:?}")));
                    self.failed = true;
                    return;
                }
                Ok(LineEvent::Line(l)) => {
                    self.got.push(line(l));
                    if let Some(n) = l.strip_prefix(b"RAW ") {
                        let n: usize = std::str::from_utf8(n).unwrap().parse().unwrap();
                        if n == 0 {
                            self.got.push(body(b""));
                        } else {
                            self.body = Some((n, Vec::new()));
                            self.parser.set_raw_mode();
                        }
                    }
                }
                Ok(LineEvent::Raw(data)) => {
                    assert!(!data.is_empty(), "a raw event is never empty");
                    let (remaining, collected) = self.body.as_mut().expect("raw mode");
                    let used = (*remaining).min(data.len());
                    collected.extend_from_slice(&data[..used]);
                    *remaining -= used;
                    if *remaining == 0 {
                        let rest = data[used..].to_vec();
                        let (_, collected) = self.body.take().unwrap();
                        self.got.push(Got::Body(collected));
                        self.parser.set_line_mode(&rest);
                    }
                }
            }
        }
    }
}

fn run_raw_bodies(parser: LineParser, chunks: &[&[u8]]) -> Vec<Got> {
    let mut protocol = RawBodies::new(parser);
    for chunk in chunks {
        protocol.data_received(chunk);
    }
    protocol.got
}

/// Every event of a [`LineOnlyParser`] fed `chunks`, up to the first error.
fn run_line_only(mut parser: LineOnlyParser, chunks: &[&[u8]]) -> Vec<Got> {
    let mut got = Vec::new();
    for chunk in chunks {
        parser.feed(chunk);
        while let Some(event) = parser.next_line() {
            match event {
                Ok(l) => got.push(line(l)),
                Err(e) => {
                    got.push(Got::Error(format!("{e:?}")));
                    return got;
                }
            }
        }
    }
    got
}

fn run_netstrings(
    mut parser: NetstringParser,
    chunks: &[&[u8]],
) -> Vec<Result<Vec<u8>, NetstringError>> {
    let mut got = Vec::new();
    for chunk in chunks {
        parser.feed(chunk);
        got.extend(std::iter::from_fn(|| parser.next_frame()));
    }
    got
}

fn run_prefixed(
    mut parser: PrefixedParser,
    chunks: &[&[u8]],
) -> Vec<Result<Vec<u8>, LengthLimitExceeded>> {
    let mut got = Vec::new();
    for chunk in chunks {
        parser.feed(chunk);
        got.extend(std::iter::from_fn(|| parser.next_frame()));
    }
    got
}

// CHECKLIST 48 ----------------------------------------------------------------------------

const RAW_SCRIPT: &[u8] = b"first\r\nRAW 10\r\n0123456789RAW 5\r\n\r\n\r\nxRAW 0\r\n\
after\r\nRAW 3\r\n\r\n\r\nlast\r\n\r\nRAW 1\r\n\rtail";

fn raw_script_output() -> Vec<Got> {
    vec![
        line(b"first"),
        line(b"RAW 10"),
        body(b"0123456789"),
        line(b"RAW 5"),
        body(b"\r\n\r\nx"),
        line(b"RAW 0"),
        body(b""),
        line(b"after"),
        line(b"RAW 3"),
        body(b"\r\n\r"),
        line(b"\nlast"),
        line(b""),
        line(b"RAW 1"),
        body(b"\r"),
    ]
}

#[test]
fn line_output_is_the_same_whatever_the_packet_sizes_with_raw_mode_and_back() {
    let expected = raw_script_output();
    for split in every_split(RAW_SCRIPT) {
        assert_eq!(
            run_raw_bodies(LineParser::new(), &split),
            expected,
            "split {split:?}"
        );
    }
}

#[test]
fn line_output_is_the_same_whatever_the_packet_sizes_with_a_one_byte_delimiter() {
    let input = b"a\n\nlong line here\nRAW 4\n\n\n\nb\nend";
    let expected = vec![
        line(b"a"),
        line(b""),
        line(b"long line here"),
        line(b"RAW 4"),
        body(b"\n\n\nb"),
        line(b""),
    ];
    for split in every_split(input) {
        let parser = LineParser::new().with_delimiter(b"\n");
        assert_eq!(run_raw_bodies(parser, &split), expected, "split {split:?}");
    }
}

#[test]
fn line_output_is_the_same_whatever_the_packet_sizes_with_a_self_overlapping_delimiter() {
    // "aab" can start inside a partial match of itself: "aaab" holds it at 1, not 0.
    let input = b"xaaabyaabaabRAW 2aabaaaaaab";
    let expected = vec![
        line(b"xa"),
        line(b"y"),
        line(b""),
        line(b"RAW 2"),
        body(b"aa"),
        line(b"aa"),
    ];
    for split in every_split(input) {
        let parser = LineParser::new().with_delimiter(b"aab");
        assert_eq!(run_raw_bodies(parser, &split), expected, "split {split:?}");
    }
}

#[test]
fn raw_mode_hands_over_everything_buffered_at_once() {
    let mut parser = LineParser::new();
    parser.feed(b"one\r\ntwo\r\nthree");
    assert_eq!(parser.next_event(), Some(Ok(LineEvent::Line(b"one"))));
    parser.set_raw_mode();
    assert!(parser.is_raw());
    assert_eq!(
        parser.next_event(),
        Some(Ok(LineEvent::Raw(b"two\r\nthree")))
    );
    assert_eq!(parser.next_event(), None);
    parser.feed(b"more");
    assert_eq!(parser.next_event(), Some(Ok(LineEvent::Raw(b"more"))));
    parser.set_line_mode(b"");
    assert!(!parser.is_raw());
    parser.feed(b"x\r\n");
    assert_eq!(parser.next_event(), Some(Ok(LineEvent::Line(b"x"))));
}

#[test]
fn set_line_mode_parses_the_extra_bytes_before_the_buffered_rest() {
    let mut parser = LineParser::new();
    parser.feed(b"head\r\nrest\r\n");
    assert_eq!(parser.next_event(), Some(Ok(LineEvent::Line(b"head"))));
    // From a line handler too: the extra bytes come first.
    parser.set_line_mode(b"extra\r\npart");
    assert_eq!(parser.next_event(), Some(Ok(LineEvent::Line(b"extra"))));
    assert_eq!(parser.next_event(), Some(Ok(LineEvent::Line(b"partrest"))));
    assert_eq!(parser.next_event(), None);
}

#[test]
fn clear_line_buffer_returns_the_unparsed_bytes_and_forgets_them() {
    let mut parser = LineParser::new();
    parser.feed(b"one\r\ntwo\r\nthr");
    assert_eq!(parser.next_event(), Some(Ok(LineEvent::Line(b"one"))));
    assert_eq!(parser.buffered(), b"two\r\nthr");
    assert_eq!(parser.clear_line_buffer(), b"two\r\nthr");
    assert_eq!(parser.buffered(), b"");
    assert_eq!(parser.next_event(), None);
    parser.feed(b"ee\r\n");
    assert_eq!(parser.next_event(), Some(Ok(LineEvent::Line(b"ee"))));
}

#[test]
fn lines_stay_buffered_while_the_caller_does_not_ask_for_them() {
    // A paused protocol simply stops calling next_event; nothing is lost or reordered.
    let mut parser = LineParser::new();
    parser.feed(b"a\r\nb\r\n");
    assert_eq!(parser.next_event(), Some(Ok(LineEvent::Line(b"a"))));
    parser.feed(b"c\r\n");
    parser.feed(b"d\r\n");
    let rest: Vec<Vec<u8>> =
        std::iter::from_fn(|| parser.next_event().map(|e| e.unwrap().bytes().to_vec())).collect();
    assert_eq!(rest, [b"b", b"c", b"d"]);
}

#[test]
#[should_panic(expected = "the delimiter must not be empty")]
fn an_empty_delimiter_is_refused() {
    let _ = LineParser::new().with_delimiter(Vec::new());
}

// CHECKLIST 50, 51 ------------------------------------------------------------------------

#[test]
fn a_line_longer_than_max_length_is_an_error_once() {
    let mut parser = LineParser::new().with_max_length(5);
    parser.feed(b"12345\r\n123456\r\nnext\r\n");
    assert_eq!(parser.next_event(), Some(Ok(LineEvent::Line(b"12345"))));
    // The error carries the buffer from the start of the line on, what Twisted's
    // LineReceiver passes to lineLengthExceeded; the parser discarded it.
    assert_eq!(
        parser.next_event(),
        Some(Err(LineTooLong {
            length: 6,
            max: 5,
            line: b"123456\r\nnext\r\n".to_vec()
        }))
    );
    assert_eq!(parser.next_event(), None);
    assert_eq!(parser.buffered(), b"");
}

#[test]
fn a_line_only_parser_error_carries_the_line_alone() {
    // Twisted's LineOnlyReceiver passes the over-long line, without what follows.
    let mut parser = LineOnlyParser::new().with_max_length(5);
    parser.feed(b"12345\r\n123456\r\nnext\r\n");
    assert_eq!(parser.next_line(), Some(Ok(&b"12345"[..])));
    assert_eq!(
        parser.next_line(),
        Some(Err(LineTooLong {
            length: 6,
            max: 5,
            line: b"123456".to_vec()
        }))
    );
    assert_eq!(parser.next_line(), None);
    assert_eq!(parser.buffered(), b"");
}

#[test]
fn an_over_long_line_is_reported_before_its_delimiter_arrives() {
    // As Twisted's LineReceiver: once max + len(delimiter) bytes arrived without one.
    let max = LineParser::DEFAULT_MAX_LENGTH;
    let mut parser = LineParser::new();
    parser.feed(&vec![b'a'; max + 1]);
    assert_eq!(parser.next_event(), None);
    parser.feed(b"a");
    assert_eq!(
        parser.next_event(),
        Some(Err(LineTooLong {
            length: max + 2,
            max,
            line: vec![b'a'; max + 2]
        }))
    );
    // As Twisted's LineOnlyReceiver: once more than max bytes arrived without one.
    let mut parser = LineOnlyParser::new();
    parser.feed(&vec![b'a'; max]);
    assert_eq!(parser.next_line(), None);
    parser.feed(b"a");
    assert_eq!(
        parser.next_line(),
        Some(Err(LineTooLong {
            length: max + 1,
            max,
            line: vec![b'a'; max + 1]
        }))
    );
}

#[test]
fn a_max_length_line_whose_delimiter_arrives_split_is_delivered() {
    let max = LineParser::DEFAULT_MAX_LENGTH;
    let content = vec![b'x'; max];
    let mut parser = LineParser::new();
    parser.feed(&content);
    assert_eq!(parser.next_event(), None);
    parser.feed(b"\r");
    assert_eq!(parser.next_event(), None);
    parser.feed(b"\n");
    assert_eq!(parser.next_event(), Some(Ok(LineEvent::Line(&content[..]))));
    assert_eq!(parser.next_event(), None);
}

#[test]
fn a_max_length_line_is_delivered_at_every_split_of_a_long_delimiter() {
    let delimiter = b"\r\n\r\n";
    let mut input = vec![b'x'; 8];
    input.extend_from_slice(delimiter);
    input.extend_from_slice(b"y\r\n\r\n");
    for split in every_split(&input) {
        let parser = LineParser::new()
            .with_delimiter(&delimiter[..])
            .with_max_length(8);
        assert_eq!(
            run_raw_bodies(parser, &split),
            [line(&input[..8]), line(b"y")],
            "split {split:?}"
        );
    }
}

#[test]
fn a_line_one_byte_too_long_fails_at_every_split() {
    let input = b"123456\r\n";
    for split in every_split(input) {
        let got = run_raw_bodies(LineParser::new().with_max_length(5), &split);
        assert_eq!(got.len(), 1, "split {split:?}");
        assert!(matches!(got[0], Got::Error(_)), "split {split:?}");
    }
    // Without a delimiter, the error waits for max + len(delimiter) bytes, as in Twisted:
    // "12345\r" may still end at 5, "12345\r\r" cannot.
    let mut parser = LineParser::new().with_max_length(5);
    parser.feed(b"12345\r");
    assert_eq!(parser.next_event(), None);
    parser.feed(b"\r");
    assert_eq!(
        parser.next_event(),
        Some(Err(LineTooLong {
            length: 7,
            max: 5,
            line: b"12345\r\r".to_vec()
        }))
    );
}

#[test]
fn a_line_only_parser_refuses_a_max_length_line_whose_delimiter_is_cut_as_twisted_does() {
    // Twisted's LineOnlyReceiver counts the start of the delimiter as part of the line.
    let mut parser = LineOnlyParser::new().with_max_length(5);
    parser.feed(b"12345\r");
    assert_eq!(
        parser.next_line(),
        Some(Err(LineTooLong {
            length: 6,
            max: 5,
            line: b"12345\r".to_vec()
        }))
    );
    // In one packet, the same line is fine.
    let mut parser = LineOnlyParser::new().with_max_length(5);
    parser.feed(b"12345\r\n");
    assert_eq!(parser.next_line(), Some(Ok(&b"12345"[..])));
}

#[test]
fn line_only_parser_handles_one_byte_feeding() {
    let input = b"first line\r\nsecond\r\n\r\nthird\r\npartial";
    let expected = [
        line(b"first line"),
        line(b"second"),
        line(b""),
        line(b"third"),
    ];
    for split in every_split(input) {
        assert_eq!(run_line_only(LineOnlyParser::new(), &split), expected);
    }
    let mut parser = LineOnlyParser::new();
    for &byte in input.iter() {
        parser.feed(&[byte]);
        while let Some(l) = parser.next_line() {
            l.unwrap();
        }
    }
    assert_eq!(parser.buffered(), b"partial");
    assert_eq!(parser.clear_line_buffer(), b"partial");
}

#[test]
fn line_only_parser_fails_on_an_over_long_line() {
    let max = LineOnlyParser::DEFAULT_MAX_LENGTH;
    let mut input = b"ok\r\n".to_vec();
    input.extend(std::iter::repeat_n(b'z', max + 1));
    input.extend_from_slice(b"\r\n");
    for size in [1, 7, 4096, input.len()] {
        let got = run_line_only(LineOnlyParser::new(), &pieces(&input, size));
        assert_eq!(got.len(), 2, "pieces of {size}");
        assert_eq!(got[0], line(b"ok"));
        assert!(matches!(got[1], Got::Error(_)), "pieces of {size}");
    }
}

#[test]
fn parsing_stays_linear_in_the_bytes_fed() {
    // Quadratic buffer handling (removing each line from the front of the buffer, or
    // searching it from the start for every packet) would not finish these.
    let mut parser = LineParser::new();
    let many: Vec<u8> = b"ab\r\n".repeat(500_000);
    parser.feed(&many);
    let mut count = 0;
    while let Some(event) = parser.next_event() {
        assert_eq!(event, Ok(LineEvent::Line(b"ab")));
        count += 1;
    }
    assert_eq!(count, 500_000);

    let long = 1 << 20;
    let mut parser = LineParser::new().with_max_length(long);
    for _ in 0..long {
        parser.feed(b"q");
        assert_eq!(parser.next_event(), None);
    }
    parser.feed(b"\r\n");
    assert_eq!(parser.next_event().unwrap().unwrap().bytes().len(), long);

    let mut wire = Vec::new();
    for _ in 0..200_000 {
        netstring_encode(b"xyz", &mut wire);
    }
    let mut parser = NetstringParser::new();
    parser.feed(&wire);
    assert_eq!(std::iter::from_fn(|| parser.next_frame()).count(), 200_000);
}

// CHECKLIST 52–54 -------------------------------------------------------------------------

#[test]
fn netstrings_decode_at_every_chunk_size() {
    let input = b"0:,4:1:a,,5:hello,1:,,3:\r\n\0,";
    let expected: Vec<Result<Vec<u8>, NetstringError>> =
        [&b""[..], b"1:a,", b"hello", b",", b"\r\n\0"]
            .iter()
            .map(|s| Ok(s.to_vec()))
            .collect();
    for split in every_split(input) {
        assert_eq!(run_netstrings(NetstringParser::new(), &split), expected);
    }
}

#[test]
fn netstring_encoding_matches_twisted() {
    let mut out = Vec::new();
    netstring_encode(b"", &mut out);
    netstring_encode(b"1:a,", &mut out);
    netstring_encode(&[b'x'; 12], &mut out);
    assert_eq!(&out[..9], b"0:,4:1:a,");
    assert_eq!(&out[9..13], b",12:");
}

fn netstring_error(input: &[u8]) -> NetstringError {
    let mut parser = NetstringParser::new();
    parser.feed(input);
    let error = loop {
        match parser.next_frame() {
            Some(Ok(_)) => continue,
            Some(Err(e)) => break e,
            None => panic!("{:?} parsed without error", String::from_utf8_lossy(input)),
        }
    };
    assert_eq!(parser.error(), Some(error));
    error
}

#[test]
fn malformed_netstrings_are_errors_with_their_reason() {
    use NetstringError::*;
    let cases: [(&[u8], NetstringError); 10] = [
        (b"2:aaa,", MissingComma),
        (b"0:a,", MissingComma),
        (b":aaa,", BadLength),
        (b"3aaa,", BadLength),
        (b"aaa,", BadLength),
        (b"x3:aaa,", BadLength),
        (b"-3:aaa,", BadLength),
        (b" 3:aaa,", BadLength),
        (b"3:aaa;", MissingComma),
        (b"3:aaa,4:abcd", MissingComma),
    ];
    for (input, reason) in cases {
        // The last case only fails once the byte after "abcd" arrives.
        let mut input = input.to_vec();
        if input.ends_with(b"abcd") {
            input.push(b'!');
        }
        for split in every_split(&input) {
            let got = run_netstrings(NetstringParser::new(), &split);
            assert_eq!(got.last(), Some(&Err(reason)), "{input:?} cut {split:?}");
        }
        assert_eq!(netstring_error(&input), reason);
    }
}

#[test]
fn netstring_lengths_with_leading_zeros_are_refused_as_twisted_does() {
    assert_eq!(netstring_error(b"01:a,"), NetstringError::BadLength);
    assert_eq!(netstring_error(b"00:,"), NetstringError::BadLength);
    let mut parser = NetstringParser::new();
    parser.feed(b"0");
    assert_eq!(parser.next_frame(), None);
    parser.feed(b"0");
    assert_eq!(parser.next_frame(), Some(Err(NetstringError::BadLength)));
}

#[test]
fn a_broken_netstring_parser_stays_broken() {
    let mut parser = NetstringParser::new();
    parser.feed(b"1:ab,");
    assert_eq!(parser.next_frame(), Some(Err(NetstringError::MissingComma)));
    parser.feed(b"1:a,");
    assert_eq!(parser.next_frame(), None);
    assert_eq!(parser.error(), Some(NetstringError::MissingComma));
    assert_eq!(parser.buffered(), b"");
}

#[test]
fn a_netstring_of_max_length_is_accepted() {
    let max = NetstringParser::DEFAULT_MAX_LENGTH;
    let data = vec![b'n'; max];
    let mut wire = Vec::new();
    netstring_encode(&data, &mut wire);
    assert!(wire.starts_with(b"99999:"));
    for size in [1, 1000, wire.len()] {
        let got = run_netstrings(NetstringParser::new(), &pieces(&wire, size));
        assert_eq!(got, [Ok(data.clone())]);
    }
}

#[test]
fn a_netstring_over_max_length_fails_before_the_body_arrives() {
    let max = NetstringParser::DEFAULT_MAX_LENGTH;
    let mut parser = NetstringParser::new();
    parser.feed(b"10000");
    assert_eq!(parser.next_frame(), None);
    parser.feed(b"0");
    let too_long = NetstringError::TooLong {
        declared: max + 1,
        max,
    };
    assert_eq!(parser.next_frame(), Some(Err(too_long)));
    assert_eq!(parser.next_frame(), None);

    // The same with a small maximum, and with the colon already there.
    let mut parser = NetstringParser::new().with_max_length(3);
    parser.feed(b"4:");
    assert_eq!(
        parser.next_frame(),
        Some(Err(NetstringError::TooLong {
            declared: 4,
            max: 3
        }))
    );
}

#[test]
fn a_netstring_length_beyond_usize_cannot_be_parsed() {
    let mut parser = NetstringParser::new().with_max_length(usize::MAX);
    parser.feed(b"99999999999999999999999:");
    assert_eq!(
        parser.next_frame(),
        Some(Err(NetstringError::LengthTooLongToParse))
    );
}

// CHECKLIST 55–57 -------------------------------------------------------------------------

#[test]
fn send_string_writes_a_big_endian_length_prefix() {
    let mut out = Vec::new();
    encode_prefixed(PrefixWidth::U32, b"foo", &mut out).unwrap();
    assert_eq!(out, b"\0\0\0\x03foo");
    out.clear();
    encode_prefixed(PrefixWidth::U16, b"foo", &mut out).unwrap();
    assert_eq!(out, b"\0\x03foo");
    out.clear();
    encode_prefixed(PrefixWidth::U8, b"foo", &mut out).unwrap();
    assert_eq!(out, b"\x03foo");
    out.clear();
    encode_prefixed(PrefixWidth::U16, &[7; 258], &mut out).unwrap();
    assert_eq!(&out[..3], b"\x01\x02\x07");
}

#[test]
fn a_length_prefix_over_max_length_fails_and_the_body_is_never_delivered() {
    let cases = [
        (PrefixWidth::U32, PrefixedParser::DEFAULT_MAX_LENGTH),
        (PrefixWidth::U16, 1000),
    ];
    for (width, max) in cases {
        let body = vec![b'b'; max + 1];
        let mut parser = PrefixedParser::new(width).with_max_length(max);
        let mut wire = Vec::new();
        encode_prefixed(width, b"ok", &mut wire).unwrap();
        encode_prefixed(width, &body, &mut wire).unwrap();
        encode_prefixed(width, b"after", &mut wire).unwrap();
        let header = 2 + 2 * width.bytes();
        parser.feed(&wire[..header]);
        assert_eq!(parser.next_frame(), Some(Ok(b"ok".to_vec())));
        assert_eq!(
            parser.next_frame(),
            Some(Err(LengthLimitExceeded {
                length: max + 1,
                max
            }))
        );
        parser.feed(&wire[header..]);
        assert_eq!(parser.next_frame(), None);
        assert!(parser.error().is_some());
    }
    let mut parser = PrefixedParser::new(PrefixWidth::U8).with_max_length(2);
    parser.feed(b"\x02ab\x03abc");
    assert_eq!(parser.next_frame(), Some(Ok(b"ab".to_vec())));
    assert_eq!(
        parser.next_frame(),
        Some(Err(LengthLimitExceeded { length: 3, max: 2 }))
    );
    assert_eq!(parser.next_frame(), None);
}

#[test]
fn a_string_too_long_for_its_prefix_is_an_error_and_nothing_is_written() {
    let mut out = b"kept".to_vec();
    assert_eq!(
        encode_prefixed(PrefixWidth::U8, &[0; 256], &mut out),
        Err(StringTooLong {
            length: 256,
            max: 255
        })
    );
    assert_eq!(
        encode_prefixed(PrefixWidth::U16, &[0; 65536], &mut out),
        Err(StringTooLong {
            length: 65536,
            max: 65535
        })
    );
    assert_eq!(out, b"kept");
    encode_prefixed(PrefixWidth::U8, &[0; 255], &mut out).unwrap();
    assert_eq!(out.len(), 4 + 1 + 255);
}

#[test]
fn prefixed_strings_decode_at_every_chunk_size() {
    for width in [PrefixWidth::U8, PrefixWidth::U16, PrefixWidth::U32] {
        let frames: [&[u8]; 4] = [b"", b"a", b"\0\0\0\0", b"hello world"];
        let mut wire = Vec::new();
        for frame in frames {
            encode_prefixed(width, frame, &mut wire).unwrap();
        }
        let expected: Vec<_> = frames.iter().map(|f| Ok(f.to_vec())).collect();
        for split in every_split(&wire) {
            assert_eq!(run_prefixed(PrefixedParser::new(width), &split), expected);
        }
    }
}

#[test]
fn errors_have_messages_a_user_can_act_on() {
    let messages = [
        LineTooLong {
            length: 9,
            max: 8,
            line: Vec::new(),
        }
        .to_string(),
        NetstringError::BadLength.to_string(),
        NetstringError::TooLong {
            declared: 100000,
            max: 99999,
        }
        .to_string(),
        NetstringError::MissingComma.to_string(),
        NetstringError::LengthTooLongToParse.to_string(),
        LengthLimitExceeded {
            length: 100000,
            max: 99999,
        }
        .to_string(),
        StringTooLong {
            length: 256,
            max: 255,
        }
        .to_string(),
    ];
    assert!(messages[0].contains('9') && messages[0].contains('8'));
    assert!(messages[2].contains("100000") && messages[2].contains("99999"));
    assert!(messages[6].contains("256") && messages[6].contains("255"));
    for message in messages {
        assert!(message.len() > 20, "{message}");
    }
}

// Round trips with random frames and random packet boundaries -----------------------------

fn cuts() -> impl Strategy<Value = Vec<Index>> {
    prop::collection::vec(any::<Index>(), 0..12)
}

fn at(cuts: &[Index], len: usize) -> Vec<usize> {
    cuts.iter().map(|i| i.index(len + 1)).collect()
}

fn frames(max_len: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..max_len), 0..16)
}

/// Bytes from a small alphabet that makes delimiters and near-delimiters common.
fn tricky_frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let byte = prop::sample::select(&b"ab\r\n\0"[..]);
    prop::collection::vec(prop::collection::vec(byte, 0..24), 0..16)
}

/// An item of the RAW-body protocol's stream.
#[derive(Debug, Clone)]
enum Item {
    Line(Vec<u8>),
    Body(Vec<u8>),
}

proptest! {
    #[test]
    fn netstrings_round_trip_whatever_the_packet_boundaries(
        frames in frames(300),
        cuts in cuts(),
    ) {
        let mut wire = Vec::new();
        for frame in &frames {
            netstring_encode(frame, &mut wire);
        }
        let got = run_netstrings(NetstringParser::new(), &cut(&wire, &at(&cuts, wire.len())));
        let expected: Vec<_> = frames.into_iter().map(Ok).collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn prefixed_strings_round_trip_whatever_the_packet_boundaries(
        frames in frames(300),
        cuts in cuts(),
        width in prop::sample::select(vec![PrefixWidth::U8, PrefixWidth::U16, PrefixWidth::U32]),
    ) {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for frame in frames {
            if encode_prefixed(width, &frame, &mut wire).is_ok() {
                expected.push(Ok(frame));
            } else {
                prop_assert!(frame.len() > width.max_string_len());
            }
        }
        let got = run_prefixed(PrefixedParser::new(width), &cut(&wire, &at(&cuts, wire.len())));
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn lines_round_trip_whatever_the_packet_boundaries(
        frames in tricky_frames(),
        cuts in cuts(),
        delimiter in prop::sample::select(vec![&b"\r\n"[..], b"\n", b"\r\n\r\n", b"aab", b"\0"]),
    ) {
        // A line may not hold its delimiter, nor end with a start of it that completes
        // early with the delimiter ("a" + "aab").
        let frames: Vec<Vec<u8>> = frames
            .into_iter()
            .filter(|f| {
                let mut framed = f.clone();
                framed.extend_from_slice(delimiter);
                framed.windows(delimiter.len()).position(|w| w == delimiter) == Some(f.len())
            })
            .collect();
        let longest = frames.iter().map(Vec::len).max().unwrap_or(0);
        let mut wire = Vec::new();
        for frame in &frames {
            wire.extend_from_slice(frame);
            wire.extend_from_slice(delimiter);
        }
        let chunks = cut(&wire, &at(&cuts, wire.len()));
        // The longest line is exactly at the maximum: accepted however it is cut.
        let line_parser = LineParser::new().with_delimiter(delimiter).with_max_length(longest);
        let expected: Vec<Got> = frames.iter().map(|f| line(f)).collect();
        prop_assert_eq!(run_raw_bodies(line_parser, &chunks), expected.clone());
        // A line-only parser counts a delimiter's start cut off by a packet as part of the
        // line (as Twisted's LineOnlyReceiver does): with room for that, every cut is fine;
        // at the maximum, a cut can only bring an error forward.
        let roomy = longest + delimiter.len() - 1;
        let line_only = LineOnlyParser::new().with_delimiter(delimiter).with_max_length(roomy);
        prop_assert_eq!(run_line_only(line_only, &chunks), expected.clone());
        let tight = LineOnlyParser::new().with_delimiter(delimiter).with_max_length(longest);
        let got = run_line_only(tight, &chunks);
        if got != expected {
            prop_assert!(matches!(got.last(), Some(Got::Error(_))), "{:?}", got);
            prop_assert_eq!(&got[..got.len() - 1], &expected[..got.len() - 1]);
        }
    }

    #[test]
    fn lines_and_raw_bodies_round_trip_whatever_the_packet_boundaries(
        items in prop::collection::vec(
            prop_oneof![
                prop::collection::vec(prop::sample::select(&b"ab\r"[..]), 0..20).prop_map(Item::Line),
                prop::collection::vec(any::<u8>(), 0..40).prop_map(Item::Body),
            ],
            0..16,
        ),
        cuts in cuts(),
    ) {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for item in items {
            match item {
                Item::Line(l) => {
                    // "\r" at the end would join the delimiter's: "a\r" + "\r\n" is fine,
                    // but keep lines free of "\r\n" (they cannot hold one).
                    wire.extend_from_slice(&l);
                    wire.extend_from_slice(b"\r\n");
                    expected.push(Got::Line(l));
                }
                Item::Body(b) => {
                    let header = format!("RAW {}", b.len());
                    wire.extend_from_slice(header.as_bytes());
                    wire.extend_from_slice(b"\r\n");
                    wire.extend_from_slice(&b);
                    expected.push(line(header.as_bytes()));
                    expected.push(Got::Body(b));
                }
            }
        }
        let chunks = cut(&wire, &at(&cuts, wire.len()));
        prop_assert_eq!(run_raw_bodies(LineParser::new(), &chunks), expected);
    }

    #[test]
    fn garbage_parses_the_same_whatever_the_packet_boundaries(
        input in prop::collection::vec(prop::sample::select(&b"0123:,ab\r\n\x01"[..]), 0..200),
        cuts in cuts(),
        max in 0usize..40,
    ) {
        let whole = [&input[..]];
        let chunks = cut(&input, &at(&cuts, input.len()));

        let netstrings = |c: &[&[u8]]| run_netstrings(NetstringParser::new().with_max_length(max), c);
        prop_assert_eq!(netstrings(&whole), netstrings(&chunks));

        for width in [PrefixWidth::U8, PrefixWidth::U16] {
            let prefixed = |c: &[&[u8]]| run_prefixed(PrefixedParser::new(width).with_max_length(max * 10), c);
            prop_assert_eq!(prefixed(&whole), prefixed(&chunks));
        }

        // Up to the first error; an error's length and bytes say how much had arrived, so
        // only its place in the stream is compared.
        let errors_alike = |got: Vec<Got>| {
            got.into_iter()
                .map(|g| match g {
                    Got::Error(_) => Got::Error(String::new()),
                    other => other,
                })
                .collect::<Vec<_>>()
        };
        let lines = |c: &[&[u8]]| errors_alike(run_raw_bodies(LineParser::new().with_max_length(max), c));
        prop_assert_eq!(lines(&whole), lines(&chunks));
        // A line-only parser may fail earlier when a packet cuts a delimiter (Twisted's
        // LineOnlyReceiver does), never later, and agrees up to there.
        let line_only = |c: &[&[u8]]| errors_alike(run_line_only(LineOnlyParser::new().with_max_length(max), c));
        let (whole, cut) = (line_only(&whole), line_only(&chunks));
        if cut != whole {
            prop_assert_eq!(cut.last(), Some(&Got::Error(String::new())));
            prop_assert_eq!(&cut[..cut.len() - 1], &whole[..cut.len() - 1]);
        }
        if whole.last() == Some(&Got::Error(String::new())) {
            prop_assert_eq!(cut.last(), Some(&Got::Error(String::new())));
        }
    }
}
