//! The HTTP/1.1 parsing layer: request heads, chunked bodies, pipelining, and the
//! property that no input panics and input cut anywhere parses as it does whole.
//! Tests named after a CVE pin the Twisted bug they guard against.

use http::{Method, StatusCode, Version};
use proptest::prelude::*;
use torsion_web::parse::{
    BodyLength, ChunkError, ChunkedDecoder, LAST_CHUNK, Limits, ParseError, RequestHead,
    encode_chunk, parse_request_head,
};

type HeadResult = Result<Option<(RequestHead, usize)>, ParseError>;

fn parse(wire: &[u8]) -> HeadResult {
    parse_request_head(wire, &Limits::default())
}

#[track_caller]
fn parsed(wire: &[u8]) -> (RequestHead, usize) {
    match parse(wire) {
        Ok(Some(parsed)) => parsed,
        other => panic!(
            "expected a complete head from {:?}, got {other:?}",
            String::from_utf8_lossy(wire)
        ),
    }
}

#[track_caller]
fn error(wire: &[u8]) -> ParseError {
    match parse(wire) {
        Err(error) => error,
        other => panic!(
            "expected an error from {:?}, got {other:?}",
            String::from_utf8_lossy(wire)
        ),
    }
}

#[track_caller]
fn bad_request(wire: &[u8]) {
    let error = error(wire);
    assert!(
        matches!(error, ParseError::BadRequest(_)),
        "{:?}: {error:?}",
        String::from_utf8_lossy(wire)
    );
    assert_eq!(error.status(), StatusCode::BAD_REQUEST);
}

/// Decodes `input` whole: the body, how much was consumed, whether the body ended.
fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
    let mut decoder = ChunkedDecoder::new();
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let step = decoder.decode(&input[at..])?;
        body.extend_from_slice(step.data);
        at += step.consumed;
        if step.done || step.consumed == 0 {
            return Ok((body, at, step.done));
        }
    }
}

// ---- request heads ----------------------------------------------------------------------

#[test]
fn parses_a_simple_get_request() {
    let wire = b"GET /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
    let (head, n) = parsed(wire);
    assert_eq!(n, wire.len());
    assert_eq!(head.method, Method::GET);
    assert_eq!(head.target, "/a/b?x=1");
    assert_eq!(head.version, Version::HTTP_11);
    assert_eq!(head.headers["host"], "example.com");
    assert_eq!(head.headers["accept"], "*/*");
    assert_eq!(head.body, BodyLength::Empty);
    assert!(head.keep_alive);
    assert!(!head.expect_continue);
}

#[test]
fn request_target_is_kept_as_sent_in_every_form() {
    for target in [
        "*",
        "http://example.com/a?b=c",
        "example.com:443",
        "/%7Euser/",
    ] {
        let wire = format!("OPTIONS {target} HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(parsed(wire.as_bytes()).0.target, target);
    }
}

#[test]
fn header_values_lose_surrounding_whitespace_and_keep_repeats() {
    let (head, _) = parsed(b"GET / HTTP/1.1\r\nHost: a\r\nX-A:  one \t\r\nx-a: two\r\n\r\n");
    let values: Vec<_> = head.headers.get_all("x-a").iter().collect();
    assert_eq!(values, ["one", "two"]);
}

#[test]
fn incomplete_head_needs_more_bytes() {
    let wire = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    for end in 0..wire.len() {
        assert_eq!(parse(&wire[..end]), Ok(None), "prefix of {end} bytes");
    }
}

#[test]
fn empty_lines_before_the_request_line_are_skipped_rfc_9112_2_2() {
    let wire = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nrest";
    let (head, n) = parsed(wire);
    assert_eq!(head.target, "/");
    assert_eq!(&wire[n..], b"rest");
}

#[test]
fn endless_empty_lines_before_the_request_line_are_refused() {
    bad_request(&b"\r\n".repeat(100));
    bad_request(b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n");
}

#[test]
fn head_longer_than_the_limit_is_431_before_it_ends() {
    let limits = Limits::default();
    let mut wire = b"GET / HTTP/1.1\r\nHost: a\r\nX-Filler: ".to_vec();
    wire.resize(limits.max_head_bytes, b'x');
    assert_eq!(parse_request_head(&wire, &limits), Ok(None));
    wire.push(b'x');
    let error = parse_request_head(&wire, &limits).unwrap_err();
    assert_eq!(error, ParseError::HeadersTooLarge);
    assert_eq!(error.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

#[test]
fn complete_head_longer_than_the_limit_is_431_and_one_at_the_limit_is_accepted() {
    let limits = Limits {
        max_head_bytes: 64,
        ..Limits::default()
    };
    let mut wire = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
    wire.resize(64 - 4, b'x');
    wire.extend_from_slice(b"\r\n\r\n");
    assert_eq!(wire.len(), 64);
    assert!(matches!(
        parse_request_head(&wire, &limits),
        Ok(Some((_, 64)))
    ));
    wire.insert(30, b'x');
    assert_eq!(
        parse_request_head(&wire, &limits),
        Err(ParseError::HeadersTooLarge)
    );
}

#[test]
fn complete_head_followed_by_more_than_the_limit_of_body_is_accepted() {
    let mut wire = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 40000\r\n\r\n".to_vec();
    let n = wire.len();
    wire.resize(n + 40000, b'x');
    let (head, at) = parsed(&wire);
    assert_eq!((head.body, at), (BodyLength::Fixed(40000), n));
}

#[test]
fn limits_default_to_16_kib_of_head_100_headers_and_8_kib_of_target() {
    let limits = Limits::default();
    assert_eq!(
        (
            limits.max_head_bytes,
            limits.max_headers,
            limits.max_uri_bytes
        ),
        (16 * 1024, 100, 8 * 1024)
    );
}

#[test]
fn more_headers_than_the_limit_is_431() {
    let mut wire = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..100 {
        wire.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    wire.extend_from_slice(b"\r\n");
    let error = error(&wire);
    assert_eq!(error, ParseError::TooManyHeaders);
    assert_eq!(error.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let exactly = Limits {
        max_headers: 101,
        ..Limits::default()
    };
    assert!(matches!(parse_request_head(&wire, &exactly), Ok(Some(_))));
}

#[test]
fn request_target_longer_than_the_limit_is_414_before_the_line_ends() {
    let limits = Limits::default();
    let mut wire = b"GET /".to_vec();
    wire.resize(4 + limits.max_uri_bytes, b'a');
    assert_eq!(parse_request_head(&wire, &limits), Ok(None));
    wire.push(b'a');
    let error = parse_request_head(&wire, &limits).unwrap_err();
    assert_eq!(error, ParseError::UriTooLong);
    assert_eq!(error.status(), StatusCode::URI_TOO_LONG);
    wire.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(
        parse_request_head(&wire, &limits),
        Err(ParseError::UriTooLong)
    );
}

#[test]
fn request_line_without_a_version_is_400_http_09_cve_2020_10108() {
    bad_request(b"GET /\r\n");
    bad_request(b"GET /\r\n\r\n");
    bad_request(b"GET /\n");
    assert_eq!(
        error(b"GET /\r\n"),
        ParseError::BadRequest("request line without an HTTP version (HTTP/0.9)")
    );
}

#[test]
fn versions_other_than_1_0_and_1_1_are_505() {
    for version in ["HTTP/1.2", "HTTP/2.0", "HTTP/3", "HTTP/0.9", "HTTP/1.9"] {
        let wire = format!("GET / {version}\r\nHost: a\r\n\r\n");
        let error = error(wire.as_bytes());
        assert_eq!(error, ParseError::VersionNotSupported, "{version}");
        assert_eq!(error.status(), StatusCode::HTTP_VERSION_NOT_SUPPORTED);
    }
}

#[test]
fn http2_preface_is_505() {
    assert_eq!(
        error(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        ParseError::VersionNotSupported
    );
}

#[test]
fn malformed_version_is_400() {
    for version in ["HTTP/1.x", "FOO/1.1", "http/1.1", "HTTP/12.0", "HTTP/1.1x"] {
        bad_request(format!("GET / {version}\r\nHost: a\r\n\r\n").as_bytes());
    }
}

#[test]
fn nul_in_a_header_is_400() {
    bad_request(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n");
    bad_request(b"GET / HTTP/1.1\r\nHost: a\r\nX\0: a\r\n\r\n");
    bad_request(b"GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n");
}

#[test]
fn bare_cr_in_a_header_is_400() {
    bad_request(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n");
    bad_request(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\r\n\r\n");
    bad_request(b"GET / HTTP/1.1\rHost: a\r\n\r\n");
}

#[test]
fn obs_fold_is_400() {
    bad_request(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n");
    bad_request(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n");
}

#[test]
fn whitespace_between_a_header_name_and_the_colon_is_400() {
    bad_request(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n");
    bad_request(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length\t: 5\r\n\r\n");
}

#[test]
fn content_length_gives_a_fixed_body_and_zero_an_empty_one() {
    let (head, _) = parsed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n");
    assert_eq!(head.body, BodyLength::Fixed(42));
    let (head, _) = parsed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(head.body, BodyLength::Empty);
}

#[test]
fn differing_content_lengths_are_400_cve_2020_10108() {
    bad_request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
}

#[test]
fn content_length_list_is_400_cve_2020_10108() {
    bad_request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n");
    bad_request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,1\r\n\r\n");
}

#[test]
fn content_length_with_non_digits_a_sign_or_overflow_is_400_cve_2020_10108() {
    for value in [
        "abc",
        "+5",
        "-5",
        "5 5",
        "0x10",
        "18446744073709551616",
        "",
        "1.0",
    ] {
        let wire = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {value}\r\n\r\n");
        bad_request(wire.as_bytes());
    }
    let max = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        u64::MAX
    );
    assert_eq!(parsed(max.as_bytes()).0.body, BodyLength::Fixed(u64::MAX));
}

#[test]
fn repeated_equal_content_lengths_are_one_rfc_9110_8_6() {
    let (head, _) =
        parsed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n");
    assert_eq!(head.body, BodyLength::Fixed(7));
}

#[test]
fn transfer_encoding_with_content_length_is_400_cve_2020_10109() {
    bad_request(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    bad_request(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
    );
}

#[test]
fn transfer_encoding_chunked_gives_a_chunked_body_in_any_case() {
    for value in ["chunked", "Chunked", "CHUNKED", " chunked "] {
        let wire = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {value}\r\n\r\n");
        assert_eq!(
            parsed(wire.as_bytes()).0.body,
            BodyLength::Chunked,
            "{value:?}"
        );
    }
}

#[test]
fn transfer_encoding_other_than_chunked_is_400_cve_2020_10109() {
    for value in [
        "chunked, gzip",
        "gzip, chunked",
        "identity",
        "gzip",
        "chunked,",
        "chunkedx",
    ] {
        let wire = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {value}\r\n\r\n");
        bad_request(wire.as_bytes());
    }
    bad_request(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
}

#[test]
fn transfer_encoding_on_http_1_0_is_400() {
    bad_request(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
}

#[test]
fn http_1_1_without_host_is_400() {
    bad_request(b"GET / HTTP/1.1\r\n\r\n");
}

#[test]
fn more_than_one_host_is_400() {
    bad_request(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    bad_request(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n");
}

#[test]
fn http_1_0_without_host_is_accepted() {
    let (head, _) = parsed(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(head.version, Version::HTTP_10);
}

#[test]
fn http_1_1_keeps_alive_unless_connection_close() {
    assert!(parsed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").0.keep_alive);
    assert!(
        !parsed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .0
            .keep_alive
    );
    assert!(
        !parsed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, CLOSE\r\n\r\n")
            .0
            .keep_alive
    );
    assert!(
        parsed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
            .0
            .keep_alive
    );
}

#[test]
fn http_1_0_keeps_alive_only_with_connection_keep_alive() {
    assert!(!parsed(b"GET / HTTP/1.0\r\n\r\n").0.keep_alive);
    assert!(
        parsed(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .0
            .keep_alive
    );
    assert!(
        !parsed(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n")
            .0
            .keep_alive
    );
}

#[test]
fn expect_100_continue_is_seen_on_http_1_1_only() {
    let wire = b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n";
    assert!(parsed(wire).0.expect_continue);
    assert!(
        !parsed(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n")
            .0
            .expect_continue
    );
    assert!(
        !parsed(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n")
            .0
            .expect_continue
    );
}

#[test]
fn every_parse_error_names_its_status_and_reads_as_a_message() {
    let cases = [
        (ParseError::BadRequest("x"), 400),
        (ParseError::HeadersTooLarge, 431),
        (ParseError::TooManyHeaders, 431),
        (ParseError::UriTooLong, 414),
        (ParseError::VersionNotSupported, 505),
    ];
    for (error, status) in cases {
        assert_eq!(error.status().as_u16(), status);
        assert!(!error.to_string().is_empty());
    }
    let error: Box<dyn std::error::Error> = Box::new(ParseError::UriTooLong);
    assert_eq!(error.to_string(), "request-target too long");
}

// ---- chunked bodies ---------------------------------------------------------------------

#[test]
fn chunked_body_decodes_and_stops_after_the_last_chunk() {
    let input = b"5\r\nhello\r\n1;a=b\r\n \r\nA\r\n0123456789\r\n0\r\n\r\nNEXT";
    let (body, consumed, done) = decode_all(input).unwrap();
    assert_eq!(body, b"hello 0123456789");
    assert!(done);
    assert_eq!(&input[consumed..], b"NEXT");
}

#[test]
fn decode_returns_one_run_of_data_at_a_time() {
    let mut decoder = ChunkedDecoder::new();
    let input = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    let first = decoder.decode(input).unwrap();
    assert_eq!(
        (first.consumed, first.data, first.done),
        (6, &b"abc"[..], false)
    );
    let second = decoder.decode(&input[6..]).unwrap();
    assert_eq!(second.data, b"de");
    let last = decoder.decode(&input[6 + second.consumed..]).unwrap();
    assert!(last.done && last.data.is_empty() && decoder.is_done());
    assert_eq!(decoder.decode(b"more").unwrap().consumed, 0);
}

#[test]
fn chunk_size_with_a_sign_is_bad_size_cve_2022_24801() {
    assert_eq!(
        decode_all(b"+5\r\nhello\r\n0\r\n\r\n"),
        Err(ChunkError::BadSize)
    );
    assert_eq!(
        decode_all(b"-5\r\nhello\r\n0\r\n\r\n"),
        Err(ChunkError::BadSize)
    );
}

#[test]
fn chunk_size_with_a_0x_prefix_is_bad_size_cve_2022_24801() {
    assert_eq!(
        decode_all(b"0x5\r\nhello\r\n0\r\n\r\n"),
        Err(ChunkError::BadSize)
    );
    assert_eq!(
        decode_all(b"0X5\r\nhello\r\n0\r\n\r\n"),
        Err(ChunkError::BadSize)
    );
}

#[test]
fn chunk_size_with_whitespace_before_it_empty_or_overflowing_is_bad_size() {
    for input in [
        &b" 5\r\nhello\r\n"[..],
        b"\t5\r\nhello\r\n",
        b"\r\n",
        b";ext\r\n",
        b"10000000000000000\r\n",
        b"5 \r\nhello\r\n",
        b"5\nhello\r\n",
        b"g\r\n",
    ] {
        assert_eq!(
            decode_all(input),
            Err(ChunkError::BadSize),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    let (body, _, done) = decode_all(b"ffffffffffffffff\r\nab").unwrap();
    assert_eq!((&body[..], done), (&b"ab"[..], false));
}

#[test]
fn chunk_extensions_are_accepted_and_skipped() {
    let input = b"5;name=value;flag ; q=\"a \\\"quoted\\\" ;=\"\r\nhello\r\n0;last\r\n\r\n";
    let (body, consumed, done) = decode_all(input).unwrap();
    assert_eq!(
        (&body[..], consumed, done),
        (&b"hello"[..], input.len(), true)
    );
}

#[test]
fn chunk_extension_with_control_characters_is_bad_extension_cve_2022_24801() {
    for ext in [
        &b"a\0b"[..],
        b"a\x01",
        b"a\rb",
        b"a\nb",
        b"a\x7f",
        b"\"a\0\"",
        b"\"a\r\n",
    ] {
        let mut input = b"5;".to_vec();
        input.extend_from_slice(ext);
        input.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        assert_eq!(decode_all(&input), Err(ChunkError::BadExtension), "{ext:?}");
    }
    let tab = decode_all(b"5;a=\"x\ty\"\r\nhello\r\n0\r\n\r\n").unwrap();
    assert!(tab.2);
}

#[test]
fn chunk_not_followed_by_crlf_is_bad_terminator() {
    assert_eq!(
        decode_all(b"5\r\nhelloX\r\n0\r\n\r\n"),
        Err(ChunkError::BadTerminator)
    );
    assert_eq!(
        decode_all(b"5\r\nhello\n0\r\n\r\n"),
        Err(ChunkError::BadTerminator)
    );
    assert_eq!(decode_all(b"5\r\nhello\rX"), Err(ChunkError::BadTerminator));
    assert_eq!(decode_all(b"0\r\n\n"), Err(ChunkError::BadTerminator));
}

#[test]
fn chunk_size_line_over_4_kib_is_line_too_long() {
    let mut input = b"5;".to_vec();
    input.resize(4096, b'a');
    input.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
    assert!(decode_all(&input).unwrap().2);
    let mut input = b"5;".to_vec();
    input.resize(4097, b'a');
    assert_eq!(decode_all(&input), Err(ChunkError::LineTooLong));
    assert_eq!(decode_all(&b"0".repeat(5000)), Err(ChunkError::LineTooLong));
}

#[test]
fn trailers_are_parsed_and_discarded() {
    let input = b"3\r\nabc\r\n0\r\nExpires: never\r\nX-Sum: 1\r\n\r\nNEXT";
    let (body, consumed, done) = decode_all(input).unwrap();
    assert_eq!((&body[..], done), (&b"abc"[..], true));
    assert_eq!(&input[consumed..], b"NEXT");
    assert_eq!(
        decode_all(b"0\r\nBad Name: x\r\n\r\n"),
        Err(ChunkError::BadTerminator)
    );
    assert_eq!(
        decode_all(b"0\r\nX: a\0\r\n\r\n"),
        Err(ChunkError::BadTerminator)
    );
    assert_eq!(
        decode_all(b"0\r\nX: a\nY: b\r\n\r\n"),
        Err(ChunkError::BadTerminator)
    );
}

#[test]
fn trailers_over_16_kib_are_trailer_too_large() {
    let mut input = b"0\r\n".to_vec();
    while input.len() < 20 * 1024 {
        input.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    input.extend_from_slice(b"\r\n");
    assert_eq!(decode_all(&input), Err(ChunkError::TrailerTooLarge));
}

#[test]
fn decoder_keeps_reporting_its_error() {
    let mut decoder = ChunkedDecoder::new();
    assert_eq!(decoder.decode(b"x"), Err(ChunkError::BadSize));
    assert_eq!(decoder.decode(b"5\r\nhello\r\n"), Err(ChunkError::BadSize));
    assert_eq!(decoder.decode(b""), Err(ChunkError::BadSize));
    assert!(!decoder.is_done());
}

#[test]
fn chunk_errors_read_as_messages() {
    for error in [
        ChunkError::BadSize,
        ChunkError::BadExtension,
        ChunkError::BadTerminator,
        ChunkError::LineTooLong,
        ChunkError::TrailerTooLarge,
    ] {
        let error: Box<dyn std::error::Error> = Box::new(error);
        assert!(!error.to_string().is_empty());
    }
}

#[test]
fn encode_chunk_writes_the_hex_size_data_and_crlf() {
    let mut out = Vec::new();
    encode_chunk(b"a", &mut out);
    encode_chunk(&[b'x'; 300], &mut out);
    let mut expected = b"1\r\na\r\n12c\r\n".to_vec();
    expected.extend_from_slice(&[b'x'; 300]);
    expected.extend_from_slice(b"\r\n");
    assert_eq!(out, expected);
}

#[test]
fn encode_chunk_of_nothing_writes_nothing() {
    let mut out = b"kept".to_vec();
    encode_chunk(b"", &mut out);
    assert_eq!(out, b"kept");
    assert_eq!(LAST_CHUNK, b"0\r\n\r\n");
}

// ---- pipelining -------------------------------------------------------------------------

/// Reads every request of `wire` in turn, as a server does: head, then its body, then the
/// next head. Returns (method, target, body) for each.
fn read_pipeline(wire: &[u8]) -> Vec<(Method, String, Vec<u8>)> {
    let mut requests = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let (head, n) = parsed(&wire[at..]);
        at += n;
        let body = match head.body {
            BodyLength::Empty => Vec::new(),
            BodyLength::Fixed(len) => {
                let len = usize::try_from(len).unwrap();
                let body = wire[at..at + len].to_vec();
                at += len;
                body
            }
            BodyLength::Chunked => {
                let (body, consumed, done) = decode_all(&wire[at..]).unwrap();
                assert!(done);
                at += consumed;
                body
            }
        };
        requests.push((head.method, head.target, body));
    }
    requests
}

#[test]
fn pipelined_requests_are_read_one_after_another_cve_2023_46137() {
    let wire = b"POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
POST /two HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n\
GET /three HTTP/1.1\r\nHost: a\r\n\r\n";
    let requests = read_pipeline(wire);
    assert_eq!(
        requests,
        [
            (Method::POST, "/one".to_owned(), b"hello".to_vec()),
            (Method::POST, "/two".to_owned(), b"abcde".to_vec()),
            (Method::GET, "/three".to_owned(), Vec::new()),
        ]
    );
}

#[test]
fn a_head_is_parsed_alone_from_a_pipelined_buffer() {
    let first = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut wire = first.to_vec();
    wire.extend_from_slice(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HT");
    let (head, n) = parsed(&wire);
    assert_eq!((head.target.as_str(), n), ("/1", first.len()));
}

// ---- properties -------------------------------------------------------------------------

/// Cut points into a buffer of `len` bytes, sorted.
fn cuts(len: usize, raw: &[usize]) -> Vec<usize> {
    let mut cuts: Vec<usize> = raw.iter().map(|c| c % (len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

/// Bytes that look like a request head, with random damage: enough structure to reach
/// the header checks, enough noise to reach the errors.
fn request_like() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"GET / HTTP/1.1\r\n".to_vec()),
        Just(b"POST /x?y HTTP/1.0\r\n".to_vec()),
        Just(b"PRI * HTTP/2.0\r\n".to_vec()),
        Just(b"Host: a\r\n".to_vec()),
        Just(b"Content-Length: 5\r\n".to_vec()),
        Just(b"Content-Length: 6\r\n".to_vec()),
        Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
        Just(b"Connection: close\r\n".to_vec()),
        Just(b"Expect: 100-continue\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n".to_vec()),
        Just(b":".to_vec()),
        Just(b"HTTP/".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..6),
        proptest::collection::vec(b'a'..=b'z', 0..40),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

fn small_limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        Just(Limits::default()),
        (0usize..96, 0usize..8, 0usize..48).prop_map(
            |(max_head_bytes, max_headers, max_uri_bytes)| {
                Limits {
                    max_head_bytes,
                    max_headers,
                    max_uri_bytes,
                }
            }
        ),
    ]
}

/// Decodes `pieces` fed one after the other, as they would arrive: the body, and either
/// the bytes consumed when the body ended or the error.
fn decode_pieces(pieces: &[&[u8]]) -> (Vec<u8>, Result<Option<usize>, ChunkError>) {
    let mut decoder = ChunkedDecoder::new();
    let mut body = Vec::new();
    let mut offset = 0;
    for piece in pieces {
        let mut at = 0;
        loop {
            match decoder.decode(&piece[at..]) {
                Err(error) => return (body, Err(error)),
                Ok(step) => {
                    body.extend_from_slice(step.data);
                    at += step.consumed;
                    if step.done {
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
            piece.len(),
            "a piece was left unconsumed before the body ended"
        );
        offset += piece.len();
    }
    (body, Ok(None))
}

fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut from = 0;
    for &at in cuts.iter().chain([&bytes.len()]) {
        pieces.push(&bytes[from..at]);
        from = at;
    }
    pieces
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// No input panics the head parser, and every prefix answers "need more" or what the
    /// whole buffer answers.
    #[test]
    fn request_head_never_panics_and_prefixes_agree_with_the_whole(
        bytes in prop_oneof![proptest::collection::vec(any::<u8>(), 0..256), request_like()],
        raw_cuts in proptest::collection::vec(any::<usize>(), 0..8),
        limits in small_limits(),
    ) {
        let whole = parse_request_head(&bytes, &limits);
        if let Ok(Some((_, n))) = &whole {
            prop_assert!(*n <= bytes.len());
        }
        for at in cuts(bytes.len(), &raw_cuts) {
            let prefix = parse_request_head(&bytes[..at], &limits);
            prop_assert!(
                prefix == Ok(None) || prefix == whole,
                "prefix of {} bytes gave {:?}, whole gave {:?}", at, prefix, whole
            );
        }
    }

    /// No input panics the chunked decoder, and input cut anywhere decodes to the same
    /// body, the same end and the same error as input fed whole.
    #[test]
    fn chunked_decoder_never_panics_and_cut_input_decodes_as_whole(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            proptest::collection::vec(
                prop_oneof![
                    Just(b"\r\n".to_vec()), Just(b"0".to_vec()), Just(b"5".to_vec()),
                    Just(b";a=\"b\"".to_vec()), Just(b"hello".to_vec()), Just(b"X: y".to_vec()),
                    proptest::collection::vec(any::<u8>(), 0..4),
                ],
                0..16,
            ).prop_map(|pieces| pieces.concat()),
        ],
        raw_cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let whole = decode_pieces(&[&bytes]);
        let cut = decode_pieces(&split(&bytes, &cuts(bytes.len(), &raw_cuts)));
        prop_assert_eq!(cut, whole);
    }

    /// What `encode_chunk` and `LAST_CHUNK` write decodes back to the data, however cut,
    /// and the decoder stops right after it.
    #[test]
    fn encoded_chunks_decode_back_however_cut(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
        raw_cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut wire = Vec::new();
        for chunk in &chunks {
            encode_chunk(chunk, &mut wire);
        }
        wire.extend_from_slice(LAST_CHUNK);
        let end = wire.len();
        wire.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let (body, ended) = decode_pieces(&split(&wire, &cuts(wire.len(), &raw_cuts)));
        prop_assert_eq!(body, chunks.concat());
        prop_assert_eq!(ended, Ok(Some(end)));
    }
}
