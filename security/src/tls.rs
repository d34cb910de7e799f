//! TLS material for the control plane's listeners: load given PEM files, or generate a
//! self-signed certificate when none is configured.

use std::sync::Arc;

/// How long a client gets to finish a TLS handshake on the gRPC ports (KDS, ADS, inter-CP):
/// long for a handshake, short for a socket someone opened and says nothing on, which would
/// otherwise be held for as long as the peer likes.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} from {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} in {path} is not valid PEM: {message}")]
    Pem {
        what: &'static str,
        path: String,
        message: String,
    },
    #[error("cannot generate a certificate: {0}")]
    Generate(#[source] rcgen::Error),
    #[error("certificate and key do not form a usable TLS configuration: {0}")]
    Config(#[source] rustls::Error),
    #[error("the private key is not the key of the (first) certificate")]
    KeyMismatch,
    #[error("cannot generate an RSA key: {0}")]
    Rsa(#[source] rsa::Error),
    #[error("cannot encode the RSA key: {0}")]
    Pkcs8(#[source] rsa::pkcs8::Error),
    #[error(
        "no trusted root certificate found on this host (searched: {searched}); give the CA instead"
    )]
    NoSystemRoots { searched: String },
}

/// Whom a TLS client trusts to sign its server's certificate.
#[derive(Debug, Clone, Copy)]
pub enum TrustRoots<'a> {
    /// The CA certificates of this PEM document only.
    Pem(&'a str),
    /// The host's trust store (`SSL_CERT_FILE` / `SSL_CERT_DIR` where set, else the system's),
    /// for a server with a publicly signed certificate.
    System,
}

/// A certificate chain and key, both PEM.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn self_signed(hostnames: &[String]) -> Result<CertPair, TlsError> {
    let key = rcgen::KeyPair::generate().map_err(TlsError::Generate)?;
    let mut params =
        rcgen::CertificateParams::new(hostnames.to_vec()).map_err(TlsError::Generate)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kuma-control-plane");
    let cert = params.self_signed(&key).map_err(TlsError::Generate)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// What a generated certificate is for (its extended key usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertUsage {
    Server,
    Client,
}

/// The key a generated certificate carries: RSA 2048 (Kuma's default) or ECDSA P-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa,
    Ecdsa,
}

/// A self-signed certificate for `hostnames` (its SANs; the first is the common name), valid
/// for `lifetime`, as `kumactl generate tls-certificate` makes one for a gateway listener.
pub fn self_signed_certificate(
    usage: CertUsage,
    key_type: KeyType,
    hostnames: &[String],
    lifetime: std::time::Duration,
) -> Result<CertPair, TlsError> {
    let key = match key_type {
        KeyType::Ecdsa => rcgen::KeyPair::generate().map_err(TlsError::Generate)?,
        KeyType::Rsa => {
            use rsa::pkcs8::EncodePrivateKey;
            let mut rng = rand::thread_rng();
            let rsa_key = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(TlsError::Rsa)?;
            let pem = rsa_key
                .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
                .map_err(TlsError::Pkcs8)?;
            rcgen::KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256)
                .map_err(TlsError::Generate)?
        }
    };
    let mut params =
        rcgen::CertificateParams::new(hostnames.to_vec()).map_err(TlsError::Generate)?;
    if let Some(first) = hostnames.first() {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, first.as_str());
    }
    params.extended_key_usages = vec![match usage {
        CertUsage::Server => rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        CertUsage::Client => rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    }];
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    crate::ca::validity(&mut params, lifetime);
    let cert = params.self_signed(&key).map_err(TlsError::Generate)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

pub fn load_pair(cert_path: &str, key_path: &str) -> Result<CertPair, TlsError> {
    let read = |what, path: &str| {
        std::fs::read_to_string(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_string(),
            source,
        })
    };
    Ok(CertPair {
        cert_pem: read("certificate", cert_path)?,
        key_pem: read("key", key_path)?,
    })
}

/// The certificates of a PEM document, at least one.
fn pem_certificates(
    pem: &str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |message: String| TlsError::Pem {
        what,
        path: "<pem>".into(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid("no certificate found".into()));
    }
    Ok(certs)
}

pub fn server_config(pair: &CertPair) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = pem_certificates(&pair.cert_pem, "certificate")?;
    let key =
        PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).map_err(|e| TlsError::Pem {
            what: "key",
            path: "<pem>".into(),
            message: e.to_string(),
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A gateway's certificate as Kuma keeps it in a mesh Secret: one PEM document holding the
/// private key and the certificate chain (leaf first; RSA or ECDSA). Checked as a TLS server
/// would load it: the certificates parse, a key is there, and the key is the leaf's.
pub fn pem_bundle(bundle: &str) -> Result<CertPair, TlsError> {
    let pem = |message: &str| TlsError::Pem {
        what: "certificate bundle",
        path: "<secret>".into(),
        message: message.to_string(),
    };
    let mut certs = Vec::new();
    let mut key = None;
    for block in pem_blocks(bundle) {
        if block.contains("-----BEGIN CERTIFICATE-----") {
            certs.push(block);
        } else if block.contains("PRIVATE KEY-----") && key.is_none() {
            key = Some(block);
        }
    }
    if certs.is_empty() {
        return Err(pem("no certificate found"));
    }
    let key = key.ok_or_else(|| pem("no private key found"))?;
    let chain = certs.concat();
    let ders: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| pem(&e.to_string()))?;
    let key_der = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| pem(&e.to_string()))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified =
        rustls::sign::CertifiedKey::from_der(ders, key_der, &provider).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch,
            e => TlsError::Config(e),
        })?;
    // `from_der` lets a key whose public half it cannot derive pass; a gateway must not.
    certified.keys_match().map_err(|_| TlsError::KeyMismatch)?;
    Ok(CertPair {
        cert_pem: chain,
        key_pem: key.to_string(),
    })
}

/// A gateway certificate from a mesh Secret's `spec` (base64 `data` of one PEM document with
/// the key and the chain), checked as [`pem_bundle`] checks it.
pub fn gateway_secret(spec: serde_json::Value) -> Result<CertPair, TlsError> {
    let secret = |message: String| TlsError::Pem {
        what: "Secret",
        path: "data".into(),
        message,
    };
    let spec: model::specs::secret::SecretSpec =
        serde_json::from_value(spec).map_err(|e| secret(e.to_string()))?;
    let bytes = spec
        .bytes()
        .map_err(|e| secret(format!("not base64: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| secret("not PEM text".into()))?;
    pem_bundle(&text)
}

/// The `-----BEGIN ...-----` to `-----END ...-----` blocks of a PEM document, each with its
/// trailing newline.
fn pem_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim_end();
        if line.starts_with("-----BEGIN ") {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
            if line.starts_with("-----END ") {
                blocks.extend(current.take());
            }
        }
    }
    blocks
}

/// Accepts any server certificate (signatures over the handshake are still checked), for
/// `KUMA_MULTIZONE_ZONE_KDS_TLS_SKIP_VERIFY`: traffic is encrypted but the peer is not
/// authenticated, which Kuma's federation guide accepts for a global with a self-signed cert.
#[derive(Debug)]
struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A gRPC (HTTP/2) client configuration that verifies the server's certificate against
/// `roots`.
pub fn grpc_client_config(roots: TrustRoots<'_>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    match roots {
        TrustRoots::Pem(pem) => {
            for cert in pem_certificates(pem, "CA certificate")? {
                store.add(cert).map_err(TlsError::Config)?;
            }
        }
        TrustRoots::System => {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "skipping part of the host's trust store");
            }
            // A store holding one unparsable certificate among hundreds is still usable.
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let searched = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
                    .iter()
                    .filter_map(|v| std::env::var(v).ok().map(|p| format!("{v}={p}")))
                    .chain(std::iter::once(
                        "the system's certificate bundle".to_string(),
                    ))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(TlsError::NoSystemRoots { searched });
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A gRPC (HTTP/2) client configuration that does not verify the server's certificate.
pub fn skip_verify_grpc_client_config() -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_makes_a_server_config() {
        let pair = self_signed(&["localhost".to_string()]).unwrap();
        server_config(&pair).unwrap();
    }

    #[test]
    fn a_gateway_bundle_is_key_and_chain_that_agree() {
        let pair = self_signed(&["foo.example.com".to_string()]).unwrap();
        let bundle = format!("{}\n{}", pair.key_pem, pair.cert_pem);
        let split = pem_bundle(&bundle).unwrap();
        assert!(split.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(split.key_pem.contains("PRIVATE KEY-----"));
        server_config(&split).unwrap();

        let other = self_signed(&["bar.example.com".to_string()]).unwrap();
        let mismatched = format!("{}{}", other.key_pem, pair.cert_pem);
        let err = pem_bundle(&mismatched).unwrap_err().to_string();
        assert!(err.contains("not the key of"), "{err}");
        let no_key = pem_bundle(&pair.cert_pem).unwrap_err().to_string();
        assert!(no_key.contains("no private key"), "{no_key}");
        let no_cert = pem_bundle(&pair.key_pem).unwrap_err().to_string();
        assert!(no_cert.contains("no certificate"), "{no_cert}");
        assert!(pem_bundle("not pem at all").is_err());
    }

    #[test]
    fn generated_certificates_serve_their_hostnames() {
        use x509_parser::prelude::*;
        let hosts = vec!["foo.example.com".to_string(), "bar.example.com".to_string()];
        for key_type in [KeyType::Rsa, KeyType::Ecdsa] {
            let pair = self_signed_certificate(
                CertUsage::Server,
                key_type,
                &hosts,
                std::time::Duration::from_secs(86400),
            )
            .unwrap();
            let bundle = format!("{}{}", pair.key_pem, pair.cert_pem);
            pem_bundle(&bundle).unwrap();
            let (_, pem) = parse_x509_pem(pair.cert_pem.as_bytes()).unwrap();
            let cert = pem.parse_x509().unwrap();
            let sans = cert.subject_alternative_name().unwrap().unwrap();
            assert_eq!(sans.value.general_names.len(), 2, "{key_type:?}");
            let rsa = pair.key_pem.contains("BEGIN PRIVATE KEY")
                && cert.public_key().algorithm.algorithm.to_id_string() == "1.2.840.113549.1.1.1";
            assert_eq!(rsa, key_type == KeyType::Rsa);
        }
    }

    #[test]
    fn garbage_pem_is_an_error() {
        let pair = CertPair {
            cert_pem: "nope".into(),
            key_pem: "nope".into(),
        };
        assert!(server_config(&pair).is_err());
    }
}
