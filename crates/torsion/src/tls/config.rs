//! TLS configurations (Twisted's `CertificateOptions`, `optionsForClientTLS`,
//! `PrivateCertificate` and `trustRootFromCertificates`), wrapping rustls's: a server's
//! [`ServerConfig`] (its certificate, one per name for SNI, ALPN, client certificates),
//! a client's [`ClientConfig`] (trust roots, hostname verification, its own certificate,
//! ALPN), and the pieces they are built from, [`Identity`] and [`Roots`], read from PEM
//! files through `rustls-pki-types`.
//!
//! Every configuration is built on rustls's `ring` provider with its safe defaults (TLS
//! 1.2 and 1.3), named explicitly rather than through rustls's process-wide default, so a
//! program that links another provider does not make the choice ambiguous.
//!
//! Invariant: a client verifies the server's certificate and name unless the program
//! called the one method named for turning that off
//! ([`ClientConfigBuilder::dangerous_accept_any_certificate`]).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::TlsConfigError;

/// How long a handshake may take before the connection is closed with
/// [`HandshakeTimeout`](super::TlsErrorKind::HandshakeTimeout) (30 s, as a connect's
/// timeout), so a peer that connects and never finishes (or never starts) its handshake
/// does not hold a connection for ever.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The crypto provider every configuration uses (rustls's `ring`).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Reads every certificate in a PEM file, in order.
///
/// # Errors
///
/// The file cannot be read, is not PEM, or holds no certificate.
pub fn load_certificates(
    path: impl AsRef<Path>,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let path = path.as_ref();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsConfigError::file("certificates", path, e))?;
    if certs.is_empty() {
        return Err(TlsConfigError::new(format!(
            "{} holds no certificate (no -----BEGIN CERTIFICATE----- block)",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
///
/// # Errors
///
/// The file cannot be read or holds no private key.
pub fn load_private_key(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    let path = path.as_ref();
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsConfigError::file("private key", path, e))
}

/// A certificate chain and its private key: who one side says it is (Twisted's
/// `PrivateCertificate`).
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// The chain (the end-entity certificate first) and its key.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Identity {
        Identity { chain, key }
    }

    /// Reads the chain from `certificates` and the key from `private_key` (which may be the
    /// same file, as Twisted's `ssl:` endpoint allows).
    ///
    /// # Errors
    ///
    /// As for [`load_certificates`] and [`load_private_key`].
    pub fn from_pem_files(
        certificates: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
    ) -> Result<Identity, TlsConfigError> {
        Ok(Identity {
            chain: load_certificates(certificates)?,
            key: load_private_key(private_key)?,
        })
    }

    /// Identity from PEM text: the certificates and the key (one string may hold both).
    ///
    /// # Errors
    ///
    /// The text holds no certificate or no key.
    pub fn from_pem(certificates: &str, private_key: &str) -> Result<Identity, TlsConfigError> {
        let chain = CertificateDer::pem_slice_iter(certificates.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsConfigError::with_source("bad certificate PEM", e))?;
        if chain.is_empty() {
            return Err(TlsConfigError::new("the PEM text holds no certificate"));
        }
        let key = PrivateKeyDer::from_pem_slice(private_key.as_bytes())
            .map_err(|e| TlsConfigError::with_source("bad private key PEM", e))?;
        Ok(Identity { chain, key })
    }

    /// Appends the intermediate certificates in `path` to the chain (the `ssl:` endpoint's
    /// `extraCertChain`).
    ///
    /// # Errors
    ///
    /// As for [`load_certificates`].
    pub fn with_extra_chain(mut self, path: impl AsRef<Path>) -> Result<Identity, TlsConfigError> {
        self.chain.extend(load_certificates(path)?);
        Ok(self)
    }

    /// The certificate chain.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    fn certified_key(self) -> Result<Arc<CertifiedKey>, TlsConfigError> {
        let key = CertifiedKey::from_der(self.chain, self.key, &provider()).map_err(|e| {
            TlsConfigError::with_source("the private key does not fit the certificate", e)
        })?;
        Ok(Arc::new(key))
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// The certificate authorities one side trusts (Twisted's `trustRootFromCertificates`,
/// `platformTrust`).
#[derive(Clone, Debug)]
pub struct Roots(RootCertStore);

impl Default for Roots {
    fn default() -> Roots {
        Roots(RootCertStore::empty())
    }
}

impl Roots {
    /// No roots at all.
    pub fn new() -> Roots {
        Roots::default()
    }

    /// The operating system's trust store (through `rustls-native-certs`, which honours
    /// `SSL_CERT_FILE` and `SSL_CERT_DIR`), read once per process.
    ///
    /// # Errors
    ///
    /// The store holds no certificate we can use (no `ca-certificates` installed).
    pub fn system() -> Result<Roots, TlsConfigError> {
        static SYSTEM: OnceLock<Result<RootCertStore, String>> = OnceLock::new();
        let store = SYSTEM.get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                return Err(format!(
                    "the system trust store holds no usable certificate{}",
                    if errors.is_empty() {
                        " (install ca-certificates, or set SSL_CERT_FILE)".to_string()
                    } else {
                        format!(": {}", errors.join("; "))
                    }
                ));
            }
            Ok(store)
        });
        match store {
            Ok(store) => Ok(Roots(store.clone())),
            Err(message) => Err(TlsConfigError::new(message.clone())),
        }
    }

    /// The certificates of a PEM file, or of every `*.pem`, `*.crt` and `*.cer` file of a
    /// directory, passing over files that hold no certificate (the `tls:` endpoint's
    /// `trustRoots`).
    ///
    /// # Errors
    ///
    /// The path cannot be read, or holds no certificate.
    pub fn from_pem_path(path: impl AsRef<Path>) -> Result<Roots, TlsConfigError> {
        let path = path.as_ref();
        let mut roots = Roots::new();
        if path.is_dir() {
            let entries = std::fs::read_dir(path)
                .map_err(|e| TlsConfigError::file("trust roots", path, e))?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| matches!(e, "pem" | "crt" | "cer"))
                })
                .collect();
            files.sort();
            for file in files {
                // A key or other PEM file beside the certificates is passed over.
                let certs = CertificateDer::pem_file_iter(&file)
                    .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| TlsConfigError::file("trust roots", &file, e))?;
                for cert in certs {
                    roots.add(cert)?;
                }
            }
            if roots.0.is_empty() {
                return Err(TlsConfigError::new(format!(
                    "{} holds no *.pem, *.crt or *.cer certificate file",
                    path.display()
                )));
            }
        } else {
            roots.add_pem_file(path)?;
        }
        Ok(roots)
    }

    /// Adds the certificates of a PEM file.
    ///
    /// # Errors
    ///
    /// As for [`load_certificates`], or a certificate is not a usable authority.
    pub fn add_pem_file(&mut self, path: impl AsRef<Path>) -> Result<(), TlsConfigError> {
        for cert in load_certificates(path.as_ref())? {
            self.add(cert)?;
        }
        Ok(())
    }

    /// Adds one certificate authority.
    ///
    /// # Errors
    ///
    /// The certificate cannot be parsed as a trust anchor.
    pub fn add(&mut self, certificate: CertificateDer<'static>) -> Result<(), TlsConfigError> {
        self.0
            .add(certificate)
            .map_err(|e| TlsConfigError::with_source("not a usable certificate authority", e))
    }

    /// How many authorities there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether a server asks clients for certificates (Twisted's `verify` and
/// `requireCertificate` options of `CertificateOptions`).
#[derive(Clone, Debug, Default)]
pub enum ClientAuth {
    /// No client certificates (the default).
    #[default]
    None,
    /// A client may send a certificate; if it does, it must be signed by one of these.
    Optional(Roots),
    /// A client must send a certificate signed by one of these.
    Required(Roots),
}

/// A server's TLS configuration (Twisted's `CertificateOptions` for a server), shared by
/// every connection it serves; cloning is cheap.
///
/// # Examples
///
/// ```no_run
/// use torsion::tls::{Identity, ServerConfig};
///
/// let identity = Identity::from_pem_files("cert.pem", "key.pem").unwrap();
/// let config = ServerConfig::builder(identity)
///     .alpn_protocols(&["h2", "http/1.1"])
///     .build()
///     .unwrap();
/// # let _ = config;
/// ```
#[derive(Clone)]
pub struct ServerConfig {
    pub(crate) rustls: Arc<rustls::ServerConfig>,
    pub(crate) handshake_timeout: Option<Duration>,
}

impl ServerConfig {
    /// A configuration that presents `identity` and asks nothing of clients.
    ///
    /// # Errors
    ///
    /// The key does not fit the certificate.
    pub fn new(identity: Identity) -> Result<ServerConfig, TlsConfigError> {
        ServerConfig::builder(identity).build()
    }

    /// The certificates in `certificates` and the key in `private_key`.
    ///
    /// # Errors
    ///
    /// As for [`Identity::from_pem_files`] and [`new`](ServerConfig::new).
    pub fn from_pem_files(
        certificates: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
    ) -> Result<ServerConfig, TlsConfigError> {
        ServerConfig::new(Identity::from_pem_files(certificates, private_key)?)
    }

    /// Starts a configuration presenting `identity` by default.
    pub fn builder(identity: Identity) -> ServerConfigBuilder {
        ServerConfigBuilder {
            default: identity,
            by_name: Vec::new(),
            alpn: Vec::new(),
            client_auth: ClientAuth::None,
            resumption: true,
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
        }
    }

    /// Wraps a rustls configuration built elsewhere (with the default handshake timeout).
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> ServerConfig {
        ServerConfig {
            rustls: config,
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
        }
    }

    /// With another handshake timeout (`None`: wait for ever).
    pub fn with_handshake_timeout(mut self, timeout: Option<Duration>) -> ServerConfig {
        self.handshake_timeout = timeout;
        self
    }

    /// The rustls configuration.
    pub fn rustls(&self) -> &Arc<rustls::ServerConfig> {
        &self.rustls
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig").finish_non_exhaustive()
    }
}

/// Builds a [`ServerConfig`].
#[derive(Debug)]
pub struct ServerConfigBuilder {
    default: Identity,
    by_name: Vec<(String, Identity)>,
    alpn: Vec<Vec<u8>>,
    client_auth: ClientAuth,
    resumption: bool,
    handshake_timeout: Option<Duration>,
}

impl ServerConfigBuilder {
    /// How long a client may take to complete its handshake
    /// ([`DEFAULT_HANDSHAKE_TIMEOUT`]; `None`: for ever).
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> ServerConfigBuilder {
        self.handshake_timeout = timeout;
        self
    }

    /// Presents `identity` to clients asking for `name` by SNI (`*.example.com` covers one
    /// label); the default identity answers every other name and clients sending none.
    pub fn sni(mut self, name: &str, identity: Identity) -> ServerConfigBuilder {
        self.by_name.push((name.to_ascii_lowercase(), identity));
        self
    }

    /// The application protocols offered (ALPN), in order of preference; a client asking
    /// only for others is refused with [`NoApplicationProtocol`](super::TlsErrorKind::NoApplicationProtocol).
    pub fn alpn_protocols(mut self, protocols: &[&str]) -> ServerConfigBuilder {
        self.alpn = protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
        self
    }

    /// Whether clients get certificates (see [`ClientAuth`]).
    pub fn client_auth(mut self, auth: ClientAuth) -> ServerConfigBuilder {
        self.client_auth = auth;
        self
    }

    /// Whether sessions can be resumed (on by default: a cache of 256 sessions, and
    /// TLS 1.3 tickets).
    pub fn session_resumption(mut self, on: bool) -> ServerConfigBuilder {
        self.resumption = on;
        self
    }

    /// The configuration.
    ///
    /// # Errors
    ///
    /// A key does not fit its certificate, or the client roots cannot verify.
    pub fn build(self) -> Result<ServerConfig, TlsConfigError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsConfigError::with_source("no protocol version available", e))?;
        let builder = match self.client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Optional(roots) | ClientAuth::Required(roots) if roots.is_empty() => {
                return Err(TlsConfigError::new(
                    "client certificates need at least one root to check them against",
                ));
            }
            ClientAuth::Optional(roots) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots.0), provider())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| {
                        TlsConfigError::with_source("cannot verify client certificates", e)
                    })?,
            ),
            ClientAuth::Required(roots) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots.0), provider())
                    .build()
                    .map_err(|e| {
                        TlsConfigError::with_source("cannot verify client certificates", e)
                    })?,
            ),
        };
        let mut by_name = HashMap::new();
        for (name, identity) in self.by_name {
            by_name.insert(name, identity.certified_key()?);
        }
        let resolver = Arc::new(SniResolver {
            default: self.default.certified_key()?,
            by_name,
        });
        let mut config = builder.with_cert_resolver(resolver);
        config.alpn_protocols = self.alpn;
        if self.resumption {
            config.ticketer = rustls::crypto::ring::Ticketer::new()
                .map_err(|e| TlsConfigError::with_source("cannot make session tickets", e))?;
        } else {
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
        Ok(ServerConfig {
            rustls: Arc::new(config),
            handshake_timeout: self.handshake_timeout,
        })
    }
}

/// Picks the server's certificate from the name the client asked for.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        if let Some(key) = self.by_name.get(&name) {
            return Some(key.clone());
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(key) = self.by_name.get(&format!("*.{parent}"))
        {
            return Some(key.clone());
        }
        Some(self.default.clone())
    }
}

/// A client's TLS configuration (Twisted's `optionsForClientTLS`), shared by every
/// connection made with it; cloning is cheap.
///
/// [`ClientConfig::new`] verifies servers against the system's trust store and checks
/// that the certificate is for the name connected to.
///
/// # Examples
///
/// ```no_run
/// use torsion::tls::{ClientConfig, Roots};
///
/// // The system's roots:
/// let public = ClientConfig::new().unwrap();
/// // A private authority, and ALPN:
/// let private = ClientConfig::builder()
///     .roots(Roots::from_pem_path("ca.pem").unwrap())
///     .alpn_protocols(&["http/1.1"])
///     .build()
///     .unwrap();
/// # let _ = (public, private);
/// ```
#[derive(Clone)]
pub struct ClientConfig {
    pub(crate) rustls: Arc<rustls::ClientConfig>,
    pub(crate) handshake_timeout: Option<Duration>,
}

impl ClientConfig {
    /// Verifies servers against the system's trust roots ([`Roots::system`]).
    ///
    /// # Errors
    ///
    /// The system has no trust roots.
    pub fn new() -> Result<ClientConfig, TlsConfigError> {
        ClientConfig::builder().build()
    }

    /// Starts a configuration (the system's roots unless [`roots`](ClientConfigBuilder::roots)
    /// says otherwise).
    pub fn builder() -> ClientConfigBuilder {
        ClientConfigBuilder {
            roots: None,
            identity: None,
            alpn: Vec::new(),
            resumption: true,
            verify: true,
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
        }
    }

    /// Wraps a rustls configuration built elsewhere (with the default handshake timeout).
    pub fn from_rustls(config: Arc<rustls::ClientConfig>) -> ClientConfig {
        ClientConfig {
            rustls: config,
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
        }
    }

    /// With another handshake timeout (`None`: wait for ever).
    pub fn with_handshake_timeout(mut self, timeout: Option<Duration>) -> ClientConfig {
        self.handshake_timeout = timeout;
        self
    }

    /// The rustls configuration.
    pub fn rustls(&self) -> &Arc<rustls::ClientConfig> {
        &self.rustls
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig").finish_non_exhaustive()
    }
}

/// Builds a [`ClientConfig`].
#[derive(Debug)]
pub struct ClientConfigBuilder {
    roots: Option<Roots>,
    identity: Option<Identity>,
    alpn: Vec<Vec<u8>>,
    resumption: bool,
    verify: bool,
    handshake_timeout: Option<Duration>,
}

impl ClientConfigBuilder {
    /// How long the server may take to complete the handshake
    /// ([`DEFAULT_HANDSHAKE_TIMEOUT`]; `None`: for ever).
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> ClientConfigBuilder {
        self.handshake_timeout = timeout;
        self
    }

    /// Trusts these authorities instead of the system's.
    pub fn roots(mut self, roots: Roots) -> ClientConfigBuilder {
        self.roots = Some(roots);
        self
    }

    /// Presents this certificate when the server asks for one.
    pub fn identity(mut self, identity: Identity) -> ClientConfigBuilder {
        self.identity = Some(identity);
        self
    }

    /// The application protocols asked for (ALPN), in order of preference.
    pub fn alpn_protocols(mut self, protocols: &[&str]) -> ClientConfigBuilder {
        self.alpn = protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
        self
    }

    /// Whether to resume sessions with servers seen before (on by default).
    pub fn session_resumption(mut self, on: bool) -> ClientConfigBuilder {
        self.resumption = on;
        self
    }

    /// Accepts any certificate for any name: **no authentication of the server at all**,
    /// so anyone on the path can read and change the traffic. For tests against
    /// throw-away certificates only; the signatures of the handshake are still checked.
    pub fn dangerous_accept_any_certificate(mut self) -> ClientConfigBuilder {
        self.verify = false;
        self
    }

    /// The configuration.
    ///
    /// # Errors
    ///
    /// No roots (the system has none), or the identity's key does not fit.
    pub fn build(self) -> Result<ClientConfig, TlsConfigError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsConfigError::with_source("no protocol version available", e))?;
        let builder = if self.verify {
            let roots = match self.roots {
                Some(roots) => roots,
                None => Roots::system()?,
            };
            if roots.is_empty() {
                return Err(TlsConfigError::new(
                    "no trust roots: a client that trusts nobody can connect to nobody",
                ));
            }
            builder.with_root_certificates(roots.0)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
        };
        let mut config = match self.identity {
            Some(identity) => builder
                .with_client_auth_cert(identity.chain, identity.key)
                .map_err(|e| {
                    TlsConfigError::with_source("the client key does not fit its certificate", e)
                })?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn;
        if !self.resumption {
            config.resumption = rustls::client::Resumption::disabled();
        }
        Ok(ClientConfig {
            rustls: Arc::new(config),
            handshake_timeout: self.handshake_timeout,
        })
    }
}

/// The verifier of [`ClientConfigBuilder::dangerous_accept_any_certificate`].
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
