//! What can be wrong with a request head or a chunked body, as Twisted's `web.http`
//! answers it: each request-head error names its status code, and every chunked-body
//! error is a 400.
//!
//! The invariant a reader must keep: a [`ParseError`] is the whole answer to a bad head
//! (the connection answers with [`ParseError::status`] and closes); nothing here carries
//! a borrow of the input, so errors can outlive the buffer.

use std::fmt;

use http::StatusCode;

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The head is malformed or ambiguous (400 Bad Request); the text says how.
    BadRequest(&'static str),
    /// The request line and headers exceed
    /// [`Limits::max_head_bytes`](super::Limits::max_head_bytes)
    /// (431 Request Header Fields Too Large).
    HeadersTooLarge,
    /// The head holds more than [`Limits::max_headers`](super::Limits::max_headers) fields
    /// (431 Request Header Fields Too Large).
    TooManyHeaders,
    /// The request-target exceeds [`Limits::max_uri_bytes`](super::Limits::max_uri_bytes)
    /// (414 URI Too Long).
    UriTooLong,
    /// The request names an HTTP version other than 1.0 and 1.1, HTTP/2's preface
    /// included (505 HTTP Version Not Supported).
    VersionNotSupported,
}

impl ParseError {
    /// The status code to answer this error with: 400, 431, 431, 414 or 505.
    ///
    /// # Examples
    ///
    /// ```
    /// use torsion_web::parse::ParseError;
    ///
    /// assert_eq!(ParseError::UriTooLong.status(), http::StatusCode::URI_TOO_LONG);
    /// ```
    pub fn status(&self) -> StatusCode {
        match self {
            ParseError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ParseError::HeadersTooLarge | ParseError::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            ParseError::UriTooLong => StatusCode::URI_TOO_LONG,
            ParseError::VersionNotSupported => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::BadRequest(why) => write!(f, "bad request: {why}"),
            ParseError::HeadersTooLarge => f.write_str("request line and headers too large"),
            ParseError::TooManyHeaders => f.write_str("too many header fields"),
            ParseError::UriTooLong => f.write_str("request-target too long"),
            ParseError::VersionNotSupported => {
                f.write_str("HTTP version not supported (only HTTP/1.0 and HTTP/1.1 are)")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// Why a chunked body was refused. Every one of them is answered with 400 Bad Request
/// and ends the connection: after a framing error, where the next request starts is
/// unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk size that is not one or more hexadecimal digits (a sign, a `0x` prefix,
    /// whitespace before it, nothing at all) or that overflows 64 bits (CVE-2022-24801).
    BadSize,
    /// A chunk extension holding a character outside tokens and quoted strings: a control
    /// character other than HTAB, NUL, a bare CR or LF (CVE-2022-24801).
    BadExtension,
    /// A line of the chunked framing not ended by CRLF: the chunk data not followed by
    /// CRLF, or a trailer line with a bare CR or LF, a control character or no colon.
    BadTerminator,
    /// A chunk-size line (size and extensions) longer than 4 KiB.
    LineTooLong,
    /// Trailer fields longer than 16 KiB in all.
    TrailerTooLarge,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkError::BadSize => "invalid chunk size (hexadecimal digits only)",
            ChunkError::BadExtension => "invalid character in a chunk extension",
            ChunkError::BadTerminator => "chunked framing line not ended by CRLF",
            ChunkError::LineTooLong => "chunk-size line longer than 4 KiB",
            ChunkError::TrailerTooLarge => "trailer fields larger than 16 KiB",
        })
    }
}

impl std::error::Error for ChunkError {}
