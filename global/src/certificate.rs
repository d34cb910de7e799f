//! The KDS server's certificate: from files, or generated once and kept in the store, so every
//! replica and every restart present the same one (zones pin it as their root CA).

use model::specs::secret::SecretSpec;
use model::{Resource, ResourceKey, ResourceType};
use security::tls::CertPair;
use store::{SharedStore, StoreError};

use crate::{GlobalError, KdsServerConfig};

/// GlobalSecret holding the generated KDS server certificate.
pub const KDS_TLS_SECRET: &str = "kds-server-tls";

pub(crate) async fn server_cert(
    config: &KdsServerConfig,
    store: &SharedStore,
    hostname: &str,
) -> Result<CertPair, GlobalError> {
    if !config.tls_cert_file.is_empty() {
        return security::tls::load_pair(&config.tls_cert_file, &config.tls_key_file)
            .map_err(GlobalError::CertificateFiles);
    }
    let key = ResourceKey::new(ResourceType::GlobalSecret, "", KDS_TLS_SECRET);
    loop {
        match store.get(&key).await {
            Ok(r) => {
                return SecretSpec::decode_json(r.spec).map_err(GlobalError::StoredCertificate);
            }
            Err(StoreError::NotFound(_)) => {
                let names = vec![
                    "localhost".to_string(),
                    hostname.to_string(),
                    "127.0.0.1".to_string(),
                ];
                let pair =
                    security::tls::self_signed(&names).map_err(GlobalError::GenerateCertificate)?;
                let spec = SecretSpec::from_json(&pair)
                    .and_then(serde_json::to_value)
                    .map_err(GlobalError::EncodeCertificate)?;
                let secret = Resource::new(ResourceType::GlobalSecret, "", KDS_TLS_SECRET, spec);
                match store.create(secret).await {
                    Ok(_) => {
                        tracing::info!(
                            "generated a self-signed KDS certificate (GlobalSecret {KDS_TLS_SECRET}); zones need it as their root CA"
                        );
                        return Ok(pair);
                    }
                    // Another replica stored one first: use that one.
                    Err(StoreError::AlreadyExists(_)) => continue,
                    Err(e) => return Err(GlobalError::Store("storing", e)),
                }
            }
            Err(e) => return Err(GlobalError::Store("reading", e)),
        }
    }
}
