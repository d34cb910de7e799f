//! Mutual TLS between replicas: certificates from files, or derived from a join token every
//! replica is given. A token determines the cluster's CA key (an Ed25519 key whose seed is an
//! HMAC of the token), so replicas agree on one CA without exchanging anything; each replica
//! then signs a fresh leaf of its own with it. A replica holding another token cannot complete
//! a handshake.

use std::path::PathBuf;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ED25519,
};
use rustls_pki_types::PrivatePkcs8KeyDer;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The name every replica's leaf carries and every client checks: identities between replicas
/// are their node ids, carried in each request and bound to the cluster by the CA.
pub const PEER_NAME: &str = "kuma-raft";

#[derive(Debug, Clone)]
pub enum RaftTls {
    /// `KUMA_STORE_RAFT_JOIN_TOKEN`: at least 16 characters, the same on every replica.
    JoinToken(String),
    /// `KUMA_STORE_RAFT_TLS_{CA,CERT,KEY}_PATH`: PEM files; the leaf must name `kuma-raft`.
    Files {
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the join token must be at least 16 characters")]
    ShortToken,
    #[error("generating this replica's certificate")]
    Generate(#[source] rcgen::Error),
}

pub struct TlsMaterial {
    ca_pem: String,
    identity: Identity,
}

impl TlsMaterial {
    pub fn load(tls: &RaftTls) -> Result<TlsMaterial, TlsError> {
        match tls {
            RaftTls::JoinToken(token) => from_token(token),
            RaftTls::Files { ca, cert, key } => {
                let read = |path: &PathBuf| {
                    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
                        path: path.clone(),
                        source,
                    })
                };
                Ok(TlsMaterial {
                    ca_pem: read(ca)?,
                    identity: Identity::from_pem(read(cert)?, read(key)?),
                })
            }
        }
    }

    pub fn server(&self) -> ServerTlsConfig {
        // A peer that opens the port and says nothing is cut off (the store cannot use
        // `security::tls::HANDSHAKE_TIMEOUT`: security depends on the store).
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .timeout(std::time::Duration::from_secs(10))
    }

    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(self.identity.clone())
            .domain_name(PEER_NAME)
    }
}

/// PKCS#8 v1 wrapping of a raw Ed25519 seed (RFC 8410): a fixed prefix, then the 32 bytes.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

fn from_token(token: &str) -> Result<TlsMaterial, TlsError> {
    if token.len() < 16 {
        return Err(TlsError::ShortToken);
    }
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token.as_bytes()),
        b"kuma-cp raft cluster CA v1",
    );
    let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(tag.as_ref());
    let ca_key =
        KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(pkcs8), &PKCS_ED25519)
            .map_err(TlsError::Generate)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(TlsError::Generate)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.distinguished_name
        .push(DnType::CommonName, "kuma-cp raft cluster");
    validity(&mut ca, Duration::from_secs(10 * 365 * 86400));
    let ca_pem = ca.self_signed(&ca_key).map_err(TlsError::Generate)?.pem();
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().map_err(TlsError::Generate)?;
    let mut leaf =
        CertificateParams::new(vec![PEER_NAME.to_string()]).map_err(TlsError::Generate)?;
    leaf.distinguished_name.push(DnType::CommonName, PEER_NAME);
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut leaf, Duration::from_secs(365 * 86400));
    let cert = leaf.signed_by(&key, &issuer).map_err(TlsError::Generate)?;
    Ok(TlsMaterial {
        ca_pem,
        identity: Identity::from_pem(cert.pem(), key.serialize_pem()),
    })
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = std::time::SystemTime::now();
    // Backdated for replicas whose clocks run behind.
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + lifetime).into();
}
