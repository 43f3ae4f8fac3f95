//! Certificates made for the TLS tests with `rcgen`: one authority, and server and client
//! certificates it signs (for given names, expired, or from another authority).

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use torsion::tls::{ClientConfig, Identity, Roots, ServerConfig};

/// A number for each authority made, so that two of them never share a name (a client
/// would then take one for the other, and report a bad signature, not an unknown issuer).
fn next_serial() -> usize {
    static SERIAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
    SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A certificate authority for one test.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

impl Pki {
    /// A fresh authority.
    pub fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            DnType::CommonName,
            format!("torsion test authority {}", next_serial()),
        );
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki { ca }
    }

    /// The authority's certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// The authority's certificate, DER, as rustls takes roots.
    pub fn roots_der(&self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        vec![self.ca.der().clone()]
    }

    /// The authority as trust roots.
    pub fn roots(&self) -> Roots {
        let mut roots = Roots::new();
        roots.add(self.ca.der().clone()).unwrap();
        roots
    }

    fn issue(
        &self,
        names: &[&str],
        purpose: ExtendedKeyUsagePurpose,
        expired: bool,
    ) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.extended_key_usages = vec![purpose];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A server certificate for `names`, as PEM (certificate, key).
    pub fn server_pem(&self, names: &[&str]) -> (String, String) {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth, false)
    }

    /// A server identity for `names`.
    pub fn server(&self, names: &[&str]) -> Identity {
        let (cert, key) = self.server_pem(names);
        Identity::from_pem(&cert, &key).unwrap()
    }

    /// A server identity for `names` that expired in 2021.
    pub fn expired_server(&self, names: &[&str]) -> Identity {
        let (cert, key) = self.issue(names, ExtendedKeyUsagePurpose::ServerAuth, true);
        Identity::from_pem(&cert, &key).unwrap()
    }

    /// A client certificate for `name`, as PEM (certificate, key).
    pub fn client_pem(&self, name: &str) -> (String, String) {
        self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth, false)
    }

    /// A client identity for `name`.
    pub fn client(&self, name: &str) -> Identity {
        let (cert, key) = self.client_pem(name);
        Identity::from_pem(&cert, &key).unwrap()
    }

    /// A server configuration for `localhost` and 127.0.0.1.
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig::new(self.server(&["localhost", "127.0.0.1"])).unwrap()
    }

    /// A client configuration trusting this authority only.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::builder().roots(self.roots()).build().unwrap()
    }
}
