//! The HTTP/1.1 wire format, sans I/O: request heads, chunked bodies, and the errors of
//! both.
//!
//! This stands for the parsing half of Twisted's `twisted.web.http` (`HTTPChannel`'s
//! `lineReceived`/`headerReceived` and `_ChunkedTransferDecoder`), with the strictness
//! Twisted gained through its CVEs (CVE-2020-10108, CVE-2020-10109, CVE-2022-24801,
//! CVE-2023-46137) built in from the start:
//!
//! - [`parse_request_head`] reads one request line and its headers (through `httparse`)
//!   and decides how the body is framed ([`BodyLength`]); it never reads past the blank
//!   line, so pipelined requests are read one after the other by the caller.
//! - [`ChunkedDecoder`] reads a `Transfer-Encoding: chunked` body incrementally, and
//!   [`encode_chunk`] / [`LAST_CHUNK`] write one.
//! - [`parse_response_head`] reads a response's status line and headers for the client,
//!   and how its body is framed ([`ResponseBody`]).
//! - [`ParseError`] and [`ChunkError`] say what was wrong, and [`ParseError::status`] the
//!   status code to answer with.
//!
//! The invariant a reader must keep: every function here gives the same answer for a
//! buffer whether it arrived whole or in pieces (a parser that answers early on a prefix
//! must answer the same on the whole), and none panics on any input. The property tests in
//! `tests/parse.rs` and the fuzz targets `http_request_head` and `http_chunked` check both.
//!
//! # Examples
//!
//! ```
//! use torsion_web::parse::{BodyLength, Limits, parse_request_head};
//!
//! let wire = b"POST /submit HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello";
//! let (head, n) = parse_request_head(wire, &Limits::default())
//!     .expect("a well-formed head")
//!     .expect("a complete head");
//! assert_eq!(head.target, "/submit");
//! assert_eq!(head.body, BodyLength::Fixed(5));
//! assert_eq!(&wire[n..], b"hello");
//! ```

mod chunked;
mod error;
mod head;
mod limits;
mod response;

pub use chunked::{ChunkedDecoder, Decoded, LAST_CHUNK, encode_chunk};
pub use error::{ChunkError, ParseError};
pub use head::{BodyLength, RequestHead, parse_request_head};
pub use limits::Limits;
pub use response::{
    MAX_RESPONSE_HEAD, ResponseBody, ResponseError, ResponseHead, parse_response_head,
};
