//! Response heads, for the client (the parsing half of Twisted's `_newclient.HTTPParser`
//! for responses): the status line and headers through `httparse`, and how the body is
//! framed given the request's method.
//!
//! Invariant: as for requests, the answer for a buffer is the same whole or in pieces, and
//! no input panics; a head larger than the limit is an error, never a growing buffer.

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};

/// How a response's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    /// No body: HEAD, 1xx, 204, 304.
    Empty,
    /// Exactly this many bytes.
    Fixed(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the server closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// The status.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The headers.
    pub headers: HeaderMap,
    /// How the body is framed.
    pub body: ResponseBody,
    /// Whether the connection may carry another request after this response.
    pub keep_alive: bool,
}

/// Why a response head is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseError(pub String);

impl std::fmt::Display for ResponseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad HTTP response: {}", self.0)
    }
}

impl std::error::Error for ResponseError {}

/// The largest response head read (64 KiB).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Parses a response head from `buf` for a request of `method`: `Ok(None)` until the head
/// is complete, then the head and how many bytes it took.
///
/// # Errors
///
/// A malformed status line or header, a head over [`MAX_RESPONSE_HEAD`], conflicting
/// lengths, or a transfer coding other than chunked.
pub fn parse_response_head(
    buf: &[u8],
    method: &Method,
) -> Result<Option<(ResponseHead, usize)>, ResponseError> {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut response = httparse::Response::new(&mut slots);
    let used = match response.parse(buf) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Err(ResponseError("the head is over 64 KiB".into()));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ResponseError(e.to_string())),
    };
    if used > MAX_RESPONSE_HEAD {
        return Err(ResponseError("the head is over 64 KiB".into()));
    }
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| ResponseError(format!("status {code}")))?;
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::new();
    for header in response.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| ResponseError(format!("header name {:?}", header.name)))?;
        let value = HeaderValue::from_bytes(header.value)
            .map_err(|_| ResponseError(format!("the value of {name}")))?;
        headers.append(name, value);
    }
    let body = framing(&headers, status, method)?;
    let connection = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect::<Vec<_>>();
    let keep_alive = body != ResponseBody::UntilClose
        && if version == Version::HTTP_11 {
            !connection.iter().any(|t| t == "close")
        } else {
            connection.iter().any(|t| t == "keep-alive")
        };
    Ok(Some((
        ResponseHead {
            status,
            version,
            headers,
            body,
            keep_alive,
        },
        used,
    )))
}

fn framing(
    headers: &HeaderMap,
    status: StatusCode,
    method: &Method,
) -> Result<ResponseBody, ResponseError> {
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(ResponseBody::Empty);
    }
    if let Some(coding) = headers.get(TRANSFER_ENCODING) {
        let chunked = coding
            .to_str()
            .is_ok_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        if !chunked || headers.get_all(TRANSFER_ENCODING).iter().count() > 1 {
            return Err(ResponseError("a transfer coding other than chunked".into()));
        }
        return Ok(ResponseBody::Chunked);
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let text = value
            .to_str()
            .map_err(|_| ResponseError("Content-Length".into()))?;
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ResponseError(format!("Content-Length {text:?}")));
            }
            let n: u64 = part
                .parse()
                .map_err(|_| ResponseError(format!("Content-Length {text:?}")))?;
            if length.is_some_and(|l| l != n) {
                return Err(ResponseError("conflicting Content-Length values".into()));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => ResponseBody::Empty,
        Some(n) => ResponseBody::Fixed(n),
        None => ResponseBody::UntilClose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_with_their_framing() {
        let (head, n) = parse_response_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (head.status, head.body, head.keep_alive, n),
            (StatusCode::OK, ResponseBody::Fixed(5), true, 38)
        );
        let (head, _) = parse_response_head(b"HTTP/1.0 200 OK\r\n\r\n", &Method::GET)
            .unwrap()
            .unwrap();
        assert_eq!(
            (head.body, head.keep_alive),
            (ResponseBody::UntilClose, false)
        );
        let (head, _) = parse_response_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            &Method::HEAD,
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.body, ResponseBody::Empty);
        let (head, _) = parse_response_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.body, ResponseBody::Chunked);
        assert!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Len", &Method::GET)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn bad_heads_are_errors() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"NOTHTTP 200\r\n\r\n",
        ] {
            assert!(
                parse_response_head(bad, &Method::GET).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
