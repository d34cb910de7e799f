//! A small certificate authority: generated once, kept in the store as a secret, issuing
//! short-lived leaf certificates (inter-CP mTLS now; per-mesh CAs later).

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};

use crate::tls::{CertPair, TlsError};

/// The CA's certificate and key, both PEM; serialized as JSON inside a secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateAuthority {
    pub cert_pem: String,
    pub key_pem: String,
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = std::time::SystemTime::now();
    // Backdated a little for peers whose clocks run behind.
    params.not_before = (now - Duration::from_secs(300)).into();
    params.not_after = (now + lifetime).into();
}

impl CertificateAuthority {
    pub fn generate(common_name: &str, lifetime: Duration) -> Result<Self, TlsError> {
        let key = KeyPair::generate().map_err(TlsError::Generate)?;
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(TlsError::Generate)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        validity(&mut params, lifetime);
        let cert = params.self_signed(&key).map_err(TlsError::Generate)?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A leaf for both server and client use, naming `dns_names` and `ips`.
    pub fn issue(
        &self,
        common_name: &str,
        dns_names: &[String],
        ips: &[std::net::IpAddr],
        lifetime: Duration,
    ) -> Result<CertPair, TlsError> {
        let ca_key = KeyPair::from_pem(&self.key_pem).map_err(TlsError::Generate)?;
        let issuer =
            Issuer::from_ca_cert_pem(&self.cert_pem, ca_key).map_err(TlsError::Generate)?;
        let key = KeyPair::generate().map_err(TlsError::Generate)?;
        let mut params = CertificateParams::new(dns_names.to_vec()).map_err(TlsError::Generate)?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity(&mut params, lifetime);
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(TlsError::Generate)?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_leaves_that_chain_to_the_ca() {
        let ca = CertificateAuthority::generate("test-ca", Duration::from_secs(3600)).unwrap();
        let leaf = ca
            .issue(
                "cp-1",
                &["localhost".into()],
                &["127.0.0.1".parse().unwrap()],
                Duration::from_secs(600),
            )
            .unwrap();
        let config = crate::tls::server_config(&leaf);
        assert!(config.is_ok());
        // A round trip through JSON, as it is stored.
        let json = serde_json::to_string(&ca).unwrap();
        let back: CertificateAuthority = serde_json::from_str(&json).unwrap();
        assert!(
            back.issue("cp-2", &[], &[], Duration::from_secs(60))
                .is_ok()
        );
    }
}
