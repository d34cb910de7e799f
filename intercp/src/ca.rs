//! The cluster's own certificate authorities, kept as GlobalSecrets: one signs each replica's
//! inter-CP certificate, one signs the data plane server's certificate kuma-dp verifies. The
//! leader creates them; every replica waits for them before it serves.

use std::time::Duration;

use model::catalog::INTER_CP_CA_SECRET;
use model::specs::secret::SecretSpec;
use model::{Resource, ResourceKey, ResourceType};
use security::ca::CertificateAuthority;
use store::{SharedStore, StoreError};

use crate::IntercpError;

/// GlobalSecret of the CA that signs each replica's data plane server certificate; kuma-dp
/// verifies the control plane with it (`--ca-cert-file`), and bootstraps carry it to Envoy.
pub const DP_SERVER_CA_SECRET: &str = "dp-server-ca";

/// Creates the inter-CP CA if there is none (leader-only, like every default).
pub async fn ensure_ca(store: &SharedStore) -> Result<(), IntercpError> {
    ensure_named_ca(store, INTER_CP_CA_SECRET, "kuma-inter-cp-ca").await?;
    ensure_named_ca(store, DP_SERVER_CA_SECRET, "kuma-dp-server-ca").await
}

async fn ensure_named_ca(
    store: &SharedStore,
    secret: &'static str,
    common_name: &str,
) -> Result<(), IntercpError> {
    let key = ResourceKey::new(ResourceType::GlobalSecret, "", secret);
    let store_error = |source| IntercpError::CaStore { secret, source };
    match store.get(&key).await {
        Ok(_) => return Ok(()),
        Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(store_error(e)),
    }
    let ca = CertificateAuthority::generate(common_name, Duration::from_secs(10 * 365 * 86400))
        .map_err(|source| IntercpError::Certificate {
            what: secret,
            source,
        })?;
    let spec = SecretSpec::from_json(&ca)
        .and_then(serde_json::to_value)
        .map_err(|source| IntercpError::CaEncoding { secret, source })?;
    match store
        .create(Resource::new(ResourceType::GlobalSecret, "", secret, spec))
        .await
    {
        Ok(_) => {
            tracing::info!(secret, "created a certificate authority");
            Ok(())
        }
        Err(StoreError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(store_error(e)),
    }
}

/// Waits for the leader to have created the inter-CP CA.
pub async fn load_ca(store: &SharedStore) -> CertificateAuthority {
    load_named_ca(store, INTER_CP_CA_SECRET).await
}

/// Waits for the leader to have created the CA kept in GlobalSecret `secret`.
pub async fn load_named_ca(store: &SharedStore, secret: &str) -> CertificateAuthority {
    let key = ResourceKey::new(ResourceType::GlobalSecret, "", secret);
    loop {
        if let Ok(r) = store.get(&key).await
            && let Ok(ca) = SecretSpec::decode_json::<CertificateAuthority>(r.spec)
        {
            return ca;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
