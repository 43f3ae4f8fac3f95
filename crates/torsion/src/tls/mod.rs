//! TLS on rustls between a connection and its protocol (Twisted's `twisted.internet.ssl`,
//! `twisted.protocols.tls.TLSMemoryBIOProtocol` and `ITLSTransport.startTLS`).
//!
//! A protocol runs over TLS unchanged: its transport encrypts what it writes and decrypts
//! what it reads. There are three ways in:
//!
//! - [`Reactor::listen_tls`](crate::Reactor::listen_tls) and [`Reactor::connect_tls`](crate::Reactor::connect_tls) (Twisted's `listenSSL` and
//!   `connectSSL`), or the endpoints `ssl:` and `tls:`
//!   ([`TlsServerEndpoint`](crate::endpoints::TlsServerEndpoint),
//!   [`TlsClientEndpoint`](crate::endpoints::TlsClientEndpoint));
//! - [`TlsServerFactory`] and [`TlsClientFactory`] around any factory, over any listening
//!   port or connector (Twisted's `TLSMemoryBIOFactory`);
//! - [`TransportOps::start_tls`](crate::net::TransportOps::start_tls) on an established
//!   connection (STARTTLS): what was written before the call goes out in the clear, what
//!   is written after it is encrypted.
//!
//! The protocol's `connection_made` comes when the connection is up, before the handshake,
//! as in Twisted: what it writes waits (under the usual water marks) until the handshake
//! completes, then goes out coalesced into full records.
//! [`Protocol::handshake_completed`](crate::protocol::Protocol::handshake_completed) then
//! says the peer is authenticated, and
//! [`TransportOps::tls_info`](crate::net::TransportOps::tls_info) gives the version, cipher
//! suite, ALPN protocol and peer certificates.
//!
//! Closing: `lose_connection` sends `close_notify` after the buffered data; a peer's
//! `close_notify` ends the connection with [`ConnectionDone`](crate::error::ConnectionDone);
//! a TCP close without it ends it with a [`TlsError`] of kind
//! [`Truncated`](TlsErrorKind::Truncated). A failed handshake ends the connection with a
//! [`TlsError`] saying why (and goes to a client factory's `client_connection_failed`;
//! under TLS 1.3 a server's refusal of our client certificate comes after our side of the
//! handshake completed, so it goes to `client_connection_lost`).
//!
//! Trust roots: clients verify servers against the system's store through
//! `rustls-native-certs`, as Twisted's `platformTrust` uses OpenSSL's: an administrator's
//! own authority in `/etc/ssl/certs` is trusted, and `SSL_CERT_FILE` works, which the
//! bundled copy of `webpki-roots` would not do.
//!
//! # Examples
//!
//! An echo server and a client that trusts it, with a certificate made on the spot:
//!
//! ```
//! use std::cell::RefCell;
//! use std::rc::Rc;
//! use torsion::prelude::*;
//! use torsion::net::tcp::ListenOptions;
//! use torsion::tls::{ClientConfig, Identity, Roots, ServerConfig};
//!
//! #[derive(Default)]
//! struct Echo(Option<Transport>);
//! impl Protocol for Echo {
//!     fn connection_made(&mut self, transport: Transport) {
//!         self.0 = Some(transport);
//!     }
//!     fn data_received(&mut self, data: &[u8]) {
//!         self.0.as_ref().unwrap().write(data);
//!     }
//! }
//!
//! struct Hello(Rc<RefCell<Vec<u8>>>, Option<Transport>);
//! impl Protocol for Hello {
//!     fn connection_made(&mut self, transport: Transport) {
//!         transport.write(b"hello"); // waits for the handshake
//!         self.1 = Some(transport);
//!     }
//!     fn data_received(&mut self, data: &[u8]) {
//!         self.0.borrow_mut().extend_from_slice(data);
//!         self.1.as_ref().unwrap().lose_connection(); // close_notify, then close
//!     }
//!     fn connection_lost(&mut self, _reason: Failure) {
//!         let _ = Reactor::current().unwrap().stop();
//!     }
//! }
//!
//! # fn main() -> Result<(), Failure> {
//! let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
//! let identity = Identity::from_pem(&made.cert.pem(), &made.signing_key.serialize_pem())?;
//! let mut roots = Roots::new();
//! roots.add(made.cert.der().clone())?;
//!
//! let reactor = Reactor::new()?;
//! let options = ListenOptions { interface: [127, 0, 0, 1].into(), ..Default::default() };
//! let port = reactor.listen_tls_with(0, Rc::new(Echo::default), &ServerConfig::new(identity)?, options)?;
//! let got = Rc::new(RefCell::new(Vec::new()));
//! let g = got.clone();
//! let client = ClientConfig::builder().roots(roots).build()?;
//! reactor.connect_tls("localhost", port.host().port().unwrap(), Rc::new(move || Hello(g.clone(), None)), &client);
//! reactor.run()?;
//! assert_eq!(&*got.borrow(), b"hello");
//! # Ok(())
//! # }
//! ```
//!
//! Invariant: the TLS state lives in the socket connection that carries it
//! (`net/connection.rs` drives a `session::TlsSession` through the stream core); the wrappers here only
//! start it and pass events on.

mod config;
mod error;
mod factory;
pub(crate) mod session;

pub use config::{
    ClientAuth, ClientConfig, ClientConfigBuilder, DEFAULT_HANDSHAKE_TIMEOUT, Identity, Roots,
    ServerConfig, ServerConfigBuilder, load_certificates, load_private_key,
};
pub use error::{TlsConfigError, TlsError, TlsErrorKind};
pub use factory::{TlsClientFactory, TlsServerFactory};
pub use rustls::pki_types::CertificateDer;
pub use rustls::{CipherSuite, ProtocolVersion};

/// How to start TLS on a connection: which side we are, with which configuration, and any
/// bytes already received that belong to the TLS stream (the argument of
/// [`TransportOps::start_tls`](crate::net::TransportOps::start_tls)).
#[derive(Debug, Clone)]
pub struct StartTls {
    pub(crate) side: Side,
    pub(crate) received: Vec<u8>,
}

#[derive(Debug, Clone)]
pub(crate) enum Side {
    Server(ServerConfig),
    Client(ClientConfig, String),
}

impl StartTls {
    /// We are the server.
    pub fn server(config: &ServerConfig) -> StartTls {
        StartTls {
            side: Side::Server(config.clone()),
            received: Vec::new(),
        }
    }

    /// We are the client, connecting to `server_name` (a DNS name or an IP address: what
    /// the certificate must be for, and the SNI sent).
    pub fn client(config: &ClientConfig, server_name: &str) -> StartTls {
        StartTls {
            side: Side::Client(config.clone(), server_name.to_string()),
            received: Vec::new(),
        }
    }

    /// Bytes the protocol received and did not use, which are the start of the TLS stream
    /// (a line receiver's buffer after the `STARTTLS` line): they are decrypted first.
    pub fn with_received(mut self, bytes: Vec<u8>) -> StartTls {
        self.received = bytes;
        self
    }

    /// Whether we are the client.
    pub fn is_client(&self) -> bool {
        matches!(self.side, Side::Client(..))
    }

    /// How long the handshake may take, from the configuration.
    pub(crate) fn handshake_timeout(&self) -> Option<std::time::Duration> {
        match &self.side {
            Side::Server(config) => config.handshake_timeout,
            Side::Client(config, _) => config.handshake_timeout,
        }
    }
}

/// What a TLS connection negotiated (Twisted's `ISSLTransport.getPeerCertificate`,
/// `negotiatedProtocol`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsInfo {
    /// Whether the handshake has completed (until then the rest is mostly empty).
    pub handshake_complete: bool,
    /// TLS 1.2 or 1.3.
    pub protocol_version: Option<ProtocolVersion>,
    /// The cipher suite.
    pub cipher_suite: Option<CipherSuite>,
    /// The application protocol agreed by ALPN.
    pub alpn_protocol: Option<Vec<u8>>,
    /// The peer's certificate chain, its own first (empty for a client that sent none).
    pub peer_certificates: Vec<CertificateDer<'static>>,
    /// On a server, the name the client asked for by SNI.
    pub server_name: Option<String>,
}
