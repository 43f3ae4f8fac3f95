//! Reading a request head: the request line and header fields, through `httparse`, then
//! the checks that decide how the body is framed. This stands for the head half of
//! Twisted's `twisted.web.http.HTTPChannel` (`lineReceived`, `headerReceived`,
//! `allHeadersReceived`).
//!
//! The invariant a reader must keep: [`parse_request_head`] answers on a prefix of a
//! buffer only what it would answer on the whole buffer. Each limit therefore cuts the
//! bytes handed to `httparse` at the first byte that breaks it, so an error `httparse`
//! would find past that byte can never win over the limit on a longer buffer; and the
//! errors are told apart only by bytes `httparse` has already read.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};

use super::error::ParseError;
use super::limits::Limits;

/// How many empty lines may come before a request line (RFC 9112 §2.2 asks a server to
/// skip at least one).
const MAX_EMPTY_LINES: usize = 8;

/// Header slots kept on the stack; a larger [`Limits::max_headers`] uses the heap.
const STACK_HEADERS: usize = 100;

/// From this many headers on, their values are slices of one copy of the head.
const SHARED_VALUES_FROM: usize = 3;

/// How a request's body is framed, as its head says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No body: neither `Content-Length` nor `Transfer-Encoding`, or `Content-Length: 0`.
    Empty,
    /// Exactly this many bytes follow the head (`Content-Length`, never 0).
    Fixed(u64),
    /// A chunked body follows (`Transfer-Encoding: chunked`): read it with
    /// [`ChunkedDecoder`](super::ChunkedDecoder).
    Chunked,
}

/// A parsed request head: Twisted's `Request` before its content arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The request method.
    pub method: Method,
    /// The request-target as sent: origin-form (`/a/b?x=1`), `*`, authority-form or
    /// absolute-form (`http://host/path`).
    pub target: String,
    /// [`Version::HTTP_10`] or [`Version::HTTP_11`]; no other version gets this far.
    pub version: Version,
    /// The header fields, in the order received, repeated names kept.
    pub headers: HeaderMap,
    /// How the body is framed.
    pub body: BodyLength,
    /// Whether the connection stays open after this request: on HTTP/1.1 unless
    /// `Connection: close`, on HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// Whether an HTTP/1.1 client sent `Expect: 100-continue` and waits for a
    /// `100 Continue` before sending its body.
    pub expect_continue: bool,
}

/// Parses one request head from the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete and within the limits: call again
/// with more bytes. Returns `Ok(Some((head, n)))` once the head is complete: it was read
/// from `buf[..n]`, `n` counting the empty lines skipped before it and its blank line;
/// the body (if [`RequestHead::body`] announces one) and any pipelined request start at
/// `buf[n]`. Only the first request of a pipelined buffer is read.
///
/// Strictness, after Twisted's CVEs: one `Content-Length` value (repeats of the same value
/// are one), digits only; no `Content-Length` with `Transfer-Encoding`; no
/// `Transfer-Encoding` but exactly `chunked`, and none on HTTP/1.0; exactly one `Host` on
/// HTTP/1.1; no NUL, bare CR, folded line or space before a colon in the headers.
///
/// # Errors
///
/// A [`ParseError`] saying what was wrong and, through [`ParseError::status`], the status
/// to answer with. Limits are enforced as soon as `buf` breaks them, complete or not:
/// [`ParseError::UriTooLong`] once the request-target passes
/// [`Limits::max_uri_bytes`], [`ParseError::HeadersTooLarge`] once the head passes
/// [`Limits::max_head_bytes`].
///
/// # Examples
///
/// ```
/// use torsion_web::parse::{Limits, ParseError, parse_request_head};
///
/// let limits = Limits::default();
/// assert!(parse_request_head(b"GET / HTTP/1.1\r\nHost: a\r\n", &limits).unwrap().is_none());
/// let (head, n) = parse_request_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &limits)
///     .unwrap()
///     .unwrap();
/// assert!(head.keep_alive);
/// assert_eq!(n, 27);
/// assert_eq!(
///     parse_request_head(b"GET / HTTP/2.0\r\n\r\n", &limits).unwrap_err(),
///     ParseError::VersionNotSupported
/// );
/// ```
pub fn parse_request_head(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(RequestHead, usize)>, ParseError> {
    let Some(start) = skip_empty_lines(buf)? else {
        return Ok(None);
    };
    let head = &buf[start..];

    // The first byte breaking a limit, if it has arrived; httparse sees nothing past it.
    // A target reaching past the head limit is refused as HeadersTooLarge whatever it
    // holds, so the scan for it can stop there.
    let scanned = &head[..head.len().min(limits.max_head_bytes.saturating_add(1))];
    let uri_over = target_overflow(scanned, limits.max_uri_bytes);
    let size_over = head.len() > limits.max_head_bytes;
    let mut cap = head.len();
    if let Some(at) = uri_over {
        cap = cap.min(at);
    }
    if size_over {
        cap = cap.min(limits.max_head_bytes);
    }
    let window = &head[..cap];

    // A header line takes at least 3 bytes ("a:\n"): more slots than that could never fill.
    let slots = limits.max_headers.min(limits.max_head_bytes / 3 + 1);
    // Left uninitialized: httparse initializes the slots it fills (filling 100 empty
    // ones first was a tenth of the parse).
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let headers: &mut [MaybeUninit<httparse::Header<'_>>] = if slots <= STACK_HEADERS {
        &mut stack[..slots]
    } else {
        heap.resize_with(slots, MaybeUninit::uninit);
        &mut heap
    };
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(window, headers) {
        Ok(httparse::Status::Complete(n)) => {
            let head = build(&request, &window[..n])?;
            Ok(Some((head, start + n)))
        }
        Ok(httparse::Status::Partial) => {
            if uri_over.is_some_and(|at| at <= limits.max_head_bytes) {
                Err(ParseError::UriTooLong)
            } else if size_over {
                Err(ParseError::HeadersTooLarge)
            } else {
                Ok(None)
            }
        }
        Err(error) => Err(classify(error, window)),
    }
}

/// Skips the empty lines (CRLF, or a lone LF) before the request line: `Ok(Some(at))`
/// where the request line starts, `Ok(None)` if `buf` ends first.
fn skip_empty_lines(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    let mut at = 0;
    let mut lines = 0;
    loop {
        let line = match buf.get(at..) {
            Some([b'\r', b'\n', ..]) => 2,
            Some([b'\n', ..]) => 1,
            Some([b'\r']) | Some([]) | None => return Ok(None),
            Some([b'\r', ..]) => {
                return Err(ParseError::BadRequest("bare CR before the request line"));
            }
            Some(_) => return Ok(Some(at)),
        };
        lines += 1;
        if lines > MAX_EMPTY_LINES {
            return Err(ParseError::BadRequest(
                "too many empty lines before the request line",
            ));
        }
        at += line;
    }
}

/// Where, in `head`, the request-target's byte number `max + 1` sits, if it has arrived.
fn target_overflow(head: &[u8], max: usize) -> Option<usize> {
    let method_end = head
        .iter()
        .position(|&b| matches!(b, b' ' | b'\r' | b'\n'))?;
    if head[method_end] != b' ' {
        return None;
    }
    let target = &head[method_end + 1..];
    let len = target
        .iter()
        .position(|&b| matches!(b, b' ' | b'\r' | b'\n'))
        .unwrap_or(target.len());
    (len > max).then_some(method_end + 1 + max)
}

/// Names an `httparse` error, looking only at bytes `httparse` has read.
fn classify(error: httparse::Error, window: &[u8]) -> ParseError {
    match error {
        httparse::Error::TooManyHeaders => ParseError::TooManyHeaders,
        httparse::Error::Version => version_error(window),
        httparse::Error::Token if is_http09(window) => {
            ParseError::BadRequest("request line without an HTTP version (HTTP/0.9)")
        }
        httparse::Error::Token => ParseError::BadRequest("invalid character in the request line"),
        httparse::Error::HeaderName => ParseError::BadRequest(
            "invalid header name (a folded line, whitespace before the colon, or a character \
             outside a token)",
        ),
        httparse::Error::HeaderValue => ParseError::BadRequest(
            "invalid character in a header value (NUL, bare CR or another control character)",
        ),
        httparse::Error::NewLine => ParseError::BadRequest("malformed line ending"),
        httparse::Error::Status => ParseError::BadRequest("malformed request line"),
    }
}

/// The method and request-target of a request line whose version `httparse` refused, or
/// that has none: `(method, target, rest)`.
fn split_request_line(window: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let method_end = window.iter().position(|&b| b == b' ')?;
    let after = &window[method_end + 1..];
    let target_end = after
        .iter()
        .position(|&b| matches!(b, b' ' | b'\r' | b'\n'))?;
    Some((
        &window[..method_end],
        &after[..target_end],
        &after[target_end..],
    ))
}

/// A version `httparse` refused: `HTTP/` and a digit other than 1, or `HTTP/1.` and a
/// digit, is a version we do not speak (505); anything else is not a version (400).
/// `httparse` refuses `HTTP/2` at its sixth byte and `HTTP/1.x` at its eighth, so these
/// are the bytes it has read.
fn version_error(window: &[u8]) -> ParseError {
    let Some((_, _, rest)) = split_request_line(window) else {
        return ParseError::BadRequest("malformed HTTP version");
    };
    let version = rest.get(1..).unwrap_or_default();
    let speaks = match version {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor, ..] => minor.is_ascii_digit(),
        [b'H', b'T', b'T', b'P', b'/', major, ..] => major.is_ascii_digit() && *major != b'1',
        _ => false,
    };
    if speaks {
        ParseError::VersionNotSupported
    } else {
        ParseError::BadRequest("malformed HTTP version")
    }
}

/// Whether a request line `httparse` refused is a well-formed method and target ended by
/// the line's end: HTTP/0.9's `GET /`, which has no version.
fn is_http09(window: &[u8]) -> bool {
    let Some((method, target, rest)) = split_request_line(window) else {
        return false;
    };
    !method.is_empty()
        && method.iter().all(|&b| is_tchar(b))
        && !target.is_empty()
        && target
            .iter()
            .all(|&b| matches!(b, b'!'..=0x7e | 0x80..=0xff))
        && matches!(rest.first(), Some(b'\r' | b'\n'))
}

/// A token character (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Optional whitespace (SP, HTAB) trimmed from both ends.
fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|&b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |at| at + 1);
    &value[start..end]
}

/// The head `httparse` read from `wire`, checked and framed.
fn build(request: &httparse::Request<'_, '_>, wire: &[u8]) -> Result<RequestHead, ParseError> {
    let method = request
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or(ParseError::BadRequest("invalid method"))?;
    let target = request
        .path
        .ok_or(ParseError::BadRequest("no request-target"))?
        .to_owned();
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(ParseError::VersionNotSupported),
    };

    // The headers that frame the request are looked at on the way, as raw bytes (one
    // pass, no map lookups).
    let mut headers = HeaderMap::try_with_capacity(request.headers.len())
        .map_err(|_| ParseError::TooManyHeaders)?;
    let mut hosts = 0;
    let mut content_length = None;
    let mut encodings = 0;
    let mut chunked = false;
    let (mut close, mut keep) = (false, false);
    let mut expect_continue = false;
    // With a few headers or more, their values share one copy of the head instead of
    // each having its own.
    let shared =
        (request.headers.len() >= SHARED_VALUES_FROM).then(|| Bytes::copy_from_slice(wire));
    for header in request.headers.iter() {
        let raw = trim_ows(header.value);
        let name = header.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_content_length(raw)?;
            if content_length.is_some_and(|seen| seen != n) {
                return Err(ParseError::BadRequest("conflicting Content-Length values"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encodings += 1;
            chunked = raw.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            let (c, k) = connection_options(raw);
            close |= c;
            keep |= k;
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue |= raw.eq_ignore_ascii_case(b"100-continue");
        }
        let name = HeaderName::from_bytes(name)
            .map_err(|_| ParseError::BadRequest("invalid header name"))?;
        // `raw` lies within `wire`, which `shared` copies.
        let value = match (&shared, offset_in(wire, raw)) {
            (Some(shared), Some(at)) => {
                HeaderValue::from_maybe_shared(shared.slice(at..at + raw.len()))
            }
            _ => HeaderValue::from_bytes(raw),
        }
        .map_err(|_| ParseError::BadRequest("invalid character in a header value"))?;
        headers
            .try_append(name, value)
            .map_err(|_| ParseError::TooManyHeaders)?;
    }

    if hosts > 1 {
        return Err(ParseError::BadRequest("more than one Host header"));
    }
    if hosts == 0 && version == Version::HTTP_11 {
        return Err(ParseError::BadRequest(
            "HTTP/1.1 request without a Host header",
        ));
    }

    let body = match (encodings, content_length) {
        (0, None | Some(0)) => BodyLength::Empty,
        (0, Some(n)) => BodyLength::Fixed(n),
        (_, content_length) => {
            if version == Version::HTTP_10 {
                return Err(ParseError::BadRequest("Transfer-Encoding on HTTP/1.0"));
            }
            if content_length.is_some() {
                return Err(ParseError::BadRequest(
                    "both Transfer-Encoding and Content-Length (a request smuggling attempt)",
                ));
            }
            if encodings > 1 {
                return Err(ParseError::BadRequest(
                    "more than one Transfer-Encoding header",
                ));
            }
            if !chunked {
                return Err(ParseError::BadRequest(
                    "Transfer-Encoding other than chunked",
                ));
            }
            BodyLength::Chunked
        }
    };

    let keep_alive = match version {
        Version::HTTP_11 => !close,
        _ => keep && !close,
    };
    let expect_continue = version == Version::HTTP_11 && expect_continue;

    Ok(RequestHead {
        method,
        target,
        version,
        headers,
        body,
        keep_alive,
        expect_continue,
    })
}

/// Where `inner`, a slice of `outer`, starts in it (`None` if it is not one).
fn offset_in(outer: &[u8], inner: &[u8]) -> Option<usize> {
    let at = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    (at + inner.len() <= outer.len()).then_some(at)
}

/// One `Content-Length` value: digits only (RFC 9110 §8.6; CVE-2020-10108); the
/// caller checks that repeated values agree.
fn parse_content_length(digits: &[u8]) -> Result<u64, ParseError> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::BadRequest(
            "Content-Length is not a single decimal number",
        ));
    }
    digits
        .iter()
        .try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(ParseError::BadRequest("Content-Length overflows"))
}

/// Whether a `Connection` header's value holds the options `close` and `keep-alive`.
fn connection_options(value: &[u8]) -> (bool, bool) {
    let mut close = false;
    let mut keep = false;
    for option in value.split(|&b| b == b',') {
        let option = trim_ows(option);
        close |= option.eq_ignore_ascii_case(b"close");
        keep |= option.eq_ignore_ascii_case(b"keep-alive");
    }
    (close, keep)
}
