//! What goes wrong with TLS (Twisted's `SSL.Error` as `connectionLost` reasons, and its
//! `certificateError`s): [`TlsError`] for a connection, [`TlsConfigError`] for a
//! configuration that cannot be built.
//!
//! Invariant: every rustls error a connection meets is classified here, once, into a
//! [`TlsErrorKind`] a program can match on; the rustls error stays its `source()`.

use std::error::Error;
use std::fmt;
use std::path::Path;

use rustls::{AlertDescription, CertificateError, PeerIncompatible};

/// Why a TLS connection ended badly: the reason its protocol's `connection_lost` (and, for
/// a handshake that failed on a client, its factory's `client_connection_failed`) gets.
///
/// # Examples
///
/// ```
/// use torsion::tls::{TlsError, TlsErrorKind};
///
/// fn why(reason: &torsion::Failure) -> &'static str {
///     match reason.downcast_ref::<TlsError>().map(TlsError::kind) {
///         Some(TlsErrorKind::CertificateExpired) => "renew the certificate",
///         Some(TlsErrorKind::Truncated) => "the stream may be cut short",
///         Some(_) => "another TLS failure",
///         None => "not a TLS failure",
///     }
/// }
/// # let _ = why;
/// ```
#[derive(Debug, Clone)]
pub struct TlsError {
    kind: TlsErrorKind,
    during_handshake: bool,
    source: Option<rustls::Error>,
}

/// What kind of TLS failure a [`TlsError`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsErrorKind {
    /// The peer's certificate has expired (or is not valid yet).
    CertificateExpired,
    /// The peer's certificate is not for the name we connected to.
    CertificateNotValidForName,
    /// The peer's certificate is not signed by a root we trust.
    UnknownIssuer,
    /// The peer's certificate is malformed, revoked or otherwise refused.
    BadCertificate,
    /// A client certificate is required and the client sent none.
    CertificateRequired,
    /// The two sides share no protocol version.
    NoSharedVersion,
    /// The two sides share no cipher suite, key exchange group or signature scheme.
    NoSharedParameters,
    /// The server offers none of the application protocols (ALPN) the client asked for.
    NoApplicationProtocol,
    /// What arrived is not TLS (plaintext or random bytes where a ClientHello should be).
    NotTls,
    /// The peer refused the handshake with this alert (for example `BadCertificate` when
    /// it does not trust our certificate).
    AlertReceived(AlertDescription),
    /// The peer closed the TCP connection without a TLS `close_notify`: what was received
    /// may have been cut short by an attacker or a crash (rustls's `UnexpectedEof`).
    Truncated,
    /// The peer closed the connection before the handshake completed.
    ClosedDuringHandshake,
    /// The handshake did not complete within the configuration's handshake timeout.
    HandshakeTimeout,
    /// `start_tls` was called on a transport that cannot carry TLS, or twice.
    CannotStart(&'static str),
    /// Another violation of the protocol (a bad record, a failed decryption, …).
    Protocol,
}

impl TlsError {
    /// The kind of failure.
    pub fn kind(&self) -> &TlsErrorKind {
        &self.kind
    }

    /// Whether the handshake had not completed: the connection never carried the
    /// application's data.
    pub fn during_handshake(&self) -> bool {
        self.during_handshake
    }

    /// The rustls error behind it, if there is one.
    pub fn rustls_error(&self) -> Option<&rustls::Error> {
        self.source.as_ref()
    }

    pub(crate) fn new(kind: TlsErrorKind, during_handshake: bool) -> TlsError {
        TlsError {
            kind,
            during_handshake,
            source: None,
        }
    }

    /// `start_tls` cannot go ahead, for this reason.
    pub(crate) fn cannot_start(why: &'static str) -> TlsError {
        TlsError::new(TlsErrorKind::CannotStart(why), true)
    }

    /// The connection failed (reset, or an I/O error) before the handshake completed.
    pub(crate) fn closed_during_handshake(what: String) -> TlsError {
        TlsError {
            kind: TlsErrorKind::ClosedDuringHandshake,
            during_handshake: true,
            source: Some(rustls::Error::General(what)),
        }
    }

    /// Input rustls would not read at all: not TLS during the handshake, a protocol error
    /// after it.
    pub(crate) fn malformed(what: String, during_handshake: bool) -> TlsError {
        TlsError {
            kind: if during_handshake {
                TlsErrorKind::NotTls
            } else {
                TlsErrorKind::Protocol
            },
            during_handshake,
            source: Some(rustls::Error::General(what)),
        }
    }

    /// Classifies a rustls error.
    pub(crate) fn from_rustls(error: rustls::Error, during_handshake: bool) -> TlsError {
        use rustls::Error as E;
        let kind = match &error {
            E::InvalidCertificate(cert) => match cert {
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => TlsErrorKind::CertificateExpired,
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    TlsErrorKind::CertificateNotValidForName
                }
                CertificateError::UnknownIssuer => TlsErrorKind::UnknownIssuer,
                _ => TlsErrorKind::BadCertificate,
            },
            E::NoCertificatesPresented => TlsErrorKind::CertificateRequired,
            E::AlertReceived(AlertDescription::CertificateRequired) => {
                TlsErrorKind::CertificateRequired
            }
            E::AlertReceived(AlertDescription::ProtocolVersion) => TlsErrorKind::NoSharedVersion,
            E::AlertReceived(AlertDescription::CloseNotify) if during_handshake => {
                TlsErrorKind::ClosedDuringHandshake
            }
            E::AlertReceived(AlertDescription::NoApplicationProtocol)
            | E::NoApplicationProtocol => TlsErrorKind::NoApplicationProtocol,
            E::AlertReceived(alert) => TlsErrorKind::AlertReceived(*alert),
            E::PeerIncompatible(incompatible) => match incompatible {
                PeerIncompatible::ServerDoesNotSupportTls12Or13
                | PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
                | PeerIncompatible::SupportedVersionsExtensionRequired
                | PeerIncompatible::Tls12NotOffered
                | PeerIncompatible::Tls12NotOfferedOrEnabled => TlsErrorKind::NoSharedVersion,
                _ => TlsErrorKind::NoSharedParameters,
            },
            E::InvalidMessage(_) | E::InappropriateMessage { .. } if during_handshake => {
                TlsErrorKind::NotTls
            }
            _ => TlsErrorKind::Protocol,
        };
        TlsError {
            kind,
            during_handshake,
            source: Some(error),
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let when = if self.during_handshake {
            "TLS handshake failed"
        } else {
            "TLS connection failed"
        };
        let what = match &self.kind {
            TlsErrorKind::CertificateExpired => {
                "the peer's certificate has expired or is not valid yet"
            }
            TlsErrorKind::CertificateNotValidForName => {
                "the peer's certificate is not valid for the name connected to"
            }
            TlsErrorKind::UnknownIssuer => "the peer's certificate is not signed by a trusted root",
            TlsErrorKind::BadCertificate => "the peer's certificate was refused",
            TlsErrorKind::CertificateRequired => {
                "a client certificate is required and none was sent"
            }
            TlsErrorKind::NoSharedVersion => "no protocol version in common",
            TlsErrorKind::NoSharedParameters => {
                "no cipher suite, group or signature scheme in common"
            }
            TlsErrorKind::NoApplicationProtocol => "no application protocol (ALPN) in common",
            TlsErrorKind::NotTls => "the peer does not speak TLS",
            TlsErrorKind::AlertReceived(alert) => {
                return write!(f, "{when}: the peer sent the alert {alert:?}");
            }
            TlsErrorKind::Truncated => {
                return f.write_str(
                    "connection lost: the peer closed TCP without a TLS close_notify, so the data \
                     received may be truncated",
                );
            }
            TlsErrorKind::ClosedDuringHandshake => "the peer closed the connection",
            TlsErrorKind::HandshakeTimeout => "it did not complete in time",
            TlsErrorKind::CannotStart(why) => return write!(f, "cannot start TLS: {why}"),
            TlsErrorKind::Protocol => "protocol error",
        };
        match &self.source {
            Some(source) => write!(f, "{when}: {what} ({source})"),
            None => write!(f, "{when}: {what}"),
        }
    }
}

impl Error for TlsError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_ref().map(|e| e as &(dyn Error + 'static))
    }
}

/// A TLS configuration that cannot be built: a PEM file that cannot be read or holds no
/// certificate or key, a key that does not match, a bad ALPN name.
#[derive(Debug)]
pub struct TlsConfigError {
    message: String,
    source: Option<Box<dyn Error + Send + Sync>>,
}

impl TlsConfigError {
    pub(crate) fn new(message: impl Into<String>) -> TlsConfigError {
        TlsConfigError {
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        message: impl Into<String>,
        source: impl Into<Box<dyn Error + Send + Sync>>,
    ) -> TlsConfigError {
        TlsConfigError {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    pub(crate) fn file(
        what: &str,
        path: &Path,
        source: impl Into<Box<dyn Error + Send + Sync>>,
    ) -> TlsConfigError {
        TlsConfigError::with_source(
            format!("cannot load the {what} from {}", path.display()),
            source,
        )
    }
}

impl fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl Error for TlsConfigError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_says_the_data_may_be_cut_short() {
        let text = TlsError::new(TlsErrorKind::Truncated, false).to_string();
        assert!(text.contains("without a TLS close_notify"), "{text}");
        assert!(text.contains("truncated"), "{text}");
    }

    #[test]
    fn a_handshake_failure_names_its_cause_and_keeps_the_rustls_error() {
        let err = TlsError::from_rustls(
            rustls::Error::InvalidCertificate(CertificateError::Expired),
            true,
        );
        assert_eq!(err.kind(), &TlsErrorKind::CertificateExpired);
        assert!(err.during_handshake());
        assert!(
            err.to_string()
                .starts_with("TLS handshake failed: the peer's certificate has expired")
        );
        assert!(err.source().is_some());
    }
}
