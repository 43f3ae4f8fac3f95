//! What can go wrong with a request besides the connection itself (the errors of Twisted's
//! `twisted.web._newclient` and `twisted.web.client`: `ResponseFailed`,
//! `ResponseNeverReceived`, `PageRedirect`, `InfiniteRedirection`, `WrongBodyLength`, …),
//! in one enum.
//!
//! Invariant: every failure the client reports that is not the connection's own (refused,
//! reset, a TLS error) is one of these variants, and each message says what to do about it.

use std::fmt;
use std::time::Duration;

use http::{Method, StatusCode};

/// What can go wrong with a request besides the connection itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentError {
    /// The URL cannot be requested (not `http:` or `https:`, no host, a bad port, a space
    /// or a control character in its host or path).
    InvalidUrl(String),
    /// The server's response is not valid HTTP.
    BadResponse(String),
    /// The connection ended before the response was complete: the body is truncated
    /// (Twisted's `ResponseFailed` with `PotentialDataLoss` or `ConnectionLost`).
    Incomplete,
    /// The connection closed before any byte of the response arrived (Twisted's
    /// `ResponseNeverReceived`): the server may or may not have processed the request.
    /// A request on a reused connection is retried once when that is safe (its method is
    /// idempotent and its body can be sent again); otherwise it fails with this.
    ResponseNeverReceived {
        /// The request's method.
        method: Method,
        /// Whether the connection had carried an earlier request (a kept-alive one the
        /// server closed).
        reused: bool,
        /// How the connection ended.
        reason: String,
    },
    /// The whole request (connecting, the response head and the whole body) took longer
    /// than the agent's timeout.
    Timeout(Duration),
    /// `get_page`: the server answered with an error status (Twisted's `web.error.Error`).
    Status(StatusCode),
    /// A request body producer wrote more or fewer bytes than the length it announced
    /// (Twisted's `WrongBodyLength` and `ExcessWrite`).
    WrongBodyLength {
        /// The length the producer announced.
        declared: u64,
        /// What it wrote.
        written: u64,
    },
    /// The body was stopped by its receiver ([`BodyControl::stop`](crate::agent::BodyControl::stop))
    /// before its end (Twisted's `stopProducing` on the body's transport).
    BodyStopped,
    /// A redirect the [`RedirectAgent`](crate::agent::RedirectAgent) does not follow for
    /// this method: 301, 302, 307 or 308 to a request other than GET or HEAD (Twisted's
    /// `PageRedirect`). Follow `location` yourself if resending is safe.
    PageRedirect {
        /// The redirect's status.
        status: StatusCode,
        /// Where it points (resolved against the request's URL).
        location: String,
    },
    /// A redirect without a `Location` header (Twisted's `RedirectWithNoLocation`).
    RedirectWithNoLocation {
        /// The redirect's status.
        status: StatusCode,
        /// The URL that answered it.
        url: String,
    },
    /// More redirects than the limit (Twisted's `InfiniteRedirection`): most likely a loop.
    InfiniteRedirection {
        /// The limit.
        limit: usize,
        /// Where the last redirect pointed.
        location: String,
    },
    /// A content-encoded body could not be decoded (Twisted's `_ContentDecoder` failing
    /// with a `zlib.error`): it is corrupt or truncated.
    Decoding(String),
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentError::InvalidUrl(why) => write!(f, "cannot request this URL: {why}"),
            AgentError::BadResponse(why) => {
                write!(f, "the server's response is not valid HTTP: {why}")
            }
            AgentError::Incomplete => {
                f.write_str("the connection ended before the response was complete")
            }
            AgentError::ResponseNeverReceived {
                method,
                reused,
                reason,
            } => {
                write!(
                    f,
                    "the connection closed before any response arrived ({reason}): the {method} \
                     request may or may not have been processed by the server"
                )?;
                if *reused {
                    f.write_str(
                        "; it went on a reused connection and was not retried, as its method \
                         is not idempotent or its body cannot be sent again",
                    )?;
                }
                Ok(())
            }
            AgentError::Timeout(t) => write!(f, "no complete response within {t:?}"),
            AgentError::Status(code) => write!(f, "the server answered {code}"),
            AgentError::WrongBodyLength { declared, written } => write!(
                f,
                "the request body producer announced {declared} bytes and wrote {written}"
            ),
            AgentError::BodyStopped => f.write_str("the response body was stopped by its reader"),
            AgentError::PageRedirect { status, location } => write!(
                f,
                "the server answered {status} to {location}, which is not followed for this \
                 method: follow it yourself if sending the request again is safe"
            ),
            AgentError::RedirectWithNoLocation { status, url } => {
                write!(f, "{url} answered {status} without a Location header")
            }
            AgentError::InfiniteRedirection { limit, location } => write!(
                f,
                "more than {limit} redirects (the last to {location}): a redirect loop?"
            ),
            AgentError::Decoding(why) => {
                write!(f, "the response body could not be decoded: {why}")
            }
        }
    }
}

impl std::error::Error for AgentError {}
