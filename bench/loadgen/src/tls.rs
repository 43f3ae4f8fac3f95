//! TLS for the load generator: the rustls client configuration (ring provider,
//! rustls's safe default versions, server name `localhost`), throw-away
//! certificates made with `rcgen`, and the `handshake` mode's loop.
//!
//! The `handshake` loop runs on an OS thread with a blocking socket, as the
//! `connect` mode's does: connect, full TLS handshake (or a resumed one when the
//! client's session cache holds a ticket), a 1-byte echo, close with RST.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConnection, Resumption};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, HandshakeKind, RootCertStore, SignatureScheme};

use crate::{MEASURE, STOP, Shared, Tally};

/// The name the client asks for (SNI) and checks the certificate against.
pub const SERVER_NAME: &str = "localhost";

/// Accepts any certificate chain, but still checks the handshake signature
/// against the certificate's key, so the client does the same signature work
/// as a verifying one short of walking the chain.
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A client configuration: trusting the certificates in `ca` (or any
/// certificate without it), with rustls's default in-memory session cache
/// when `resumption` is on and none when it is off.
pub fn client_config(
    ca: Option<&Path>,
    resumption: bool,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = match ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth(),
    };
    if !resumption {
        config.resumption = Resumption::disabled();
    }
    Ok(Arc::new(config))
}

pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
}

/// Completes the handshake of a fresh connection on a blocking socket.
pub fn handshake(
    stream: &mut TcpStream,
    config: &Arc<rustls::ClientConfig>,
) -> io::Result<ClientConnection> {
    let mut conn =
        ClientConnection::new(config.clone(), server_name()).map_err(io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(stream)?;
    }
    Ok(conn)
}

/// Writes a throw-away authority (`ca.pem`) and a server certificate for
/// `localhost` and 127.0.0.1 it signs (`cert.pem`, `key.pem`; ECDSA P-256)
/// into `dir`.
pub fn write_certificates(dir: &Path) -> Result<(), String> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let err = |e: rcgen::Error| e.to_string();
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "loadgen throw-away authority");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca =
        CertifiedIssuer::self_signed(params, KeyPair::generate().map_err(err)?).map_err(err)?;
    let mut params = CertificateParams::new(vec![SERVER_NAME.to_string(), "127.0.0.1".to_string()])
        .map_err(err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, SERVER_NAME);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, &ca).map_err(err)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (name, text) in [
        ("ca.pem", ca.pem()),
        ("cert.pem", cert.pem()),
        ("key.pem", key.serialize_pem()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// One handshake: connect, handshake, echo one byte. Returns the socket (to be
/// closed with RST) and whether the session was resumed.
fn handshake_once(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> io::Result<(TcpStream, bool)> {
    let mut sock = TcpStream::connect(addr)?;
    sock.set_nodelay(true)?;
    let mut conn = handshake(&mut sock, config)?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(b"x")?;
    tls.flush()?;
    let mut b = [0u8; 1];
    tls.read_exact(&mut b)?;
    let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
    Ok((sock, resumed))
}

/// What a handshake loop measured, and how many of its measured handshakes
/// were resumptions.
pub fn handshake_loop(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    shared: &Shared,
) -> (Tally, u64) {
    let mut tally = Tally::default();
    let mut resumed = 0;
    while shared.phase() != STOP {
        let t = Instant::now();
        match handshake_once(addr, config) {
            Ok((sock, was_resumed)) => {
                let dt = t.elapsed().as_nanos() as u64;
                // Close with RST (no close_notify): no TIME_WAIT, as in `connect`.
                let _ = socket2::SockRef::from(&sock).set_linger(Some(Duration::ZERO));
                drop(sock);
                tally.total += 1;
                if shared.phase() == MEASURE {
                    tally.hist.record(dt);
                    resumed += u64::from(was_resumed);
                }
            }
            Err(e) => {
                shared.error("connect+handshake+echo", e);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    (tally, resumed)
}
