//! The bounds a request head must fit in: Twisted's `totalHeadersSize` and `maxHeaders`
//! (`twisted.web.http.HTTPChannel`), and a URI limit as hyper's.
//!
//! The invariant a reader must keep: a limit is enforced as soon as the bytes received
//! exceed it, never only once the head is complete, so a peer cannot make the server
//! buffer more than the limit by never finishing its head.

/// The bounds [`parse_request_head`](super::parse_request_head) enforces on a request head.
///
/// Twisted's defaults are 16,384 bytes of request line and headers and 500 headers;
/// hyper's are 100 headers. torsion takes 16 KiB and 100.
///
/// # Examples
///
/// ```
/// use torsion_web::parse::Limits;
///
/// let strict = Limits { max_headers: 20, ..Limits::default() };
/// assert_eq!(strict.max_head_bytes, 16 * 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes the request line and headers may take, their line endings and the
    /// blank line included (empty lines before the request line are not counted). Past it:
    /// [`ParseError::HeadersTooLarge`](super::ParseError::HeadersTooLarge), 431.
    pub max_head_bytes: usize,
    /// The most header fields a head may hold. Past it:
    /// [`ParseError::TooManyHeaders`](super::ParseError::TooManyHeaders), 431.
    pub max_headers: usize,
    /// The longest request-target. Past it:
    /// [`ParseError::UriTooLong`](super::ParseError::UriTooLong), 414.
    pub max_uri_bytes: usize,
}

impl Default for Limits {
    /// 16 KiB of head, 100 headers, 8 KiB of request-target.
    fn default() -> Self {
        Limits {
            max_head_bytes: 16 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
        }
    }
}
