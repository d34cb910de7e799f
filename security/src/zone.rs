//! Zone tokens: what a zone control plane (scope `cp`) or a zone proxy (`ingress`, `egress`)
//! presents to prove which zone it speaks for. Claim names follow Kong Mesh (`Zone`, `Scope`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use store::SharedStore;

use crate::tokens::{HasTokenId, SigningKeys, TokenError};

pub const SIGNING_KEY_PREFIX: &str = "zone-token-signing-key-";
pub const REVOCATIONS: &str = "zone-token-revocations";
/// Public halves of global's signing keys, synced to zones so they can check the zone tokens
/// of their ingress and egress proxies.
pub const PUBLIC_KEY_PREFIX: &str = "zone-token-signing-public-key-";

pub const SCOPE_CP: &str = "cp";
pub const SCOPES: [&str; 3] = [SCOPE_CP, "ingress", "egress"];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ZoneClaims {
    #[serde(rename = "Zone")]
    pub zone: String,
    #[serde(rename = "Scope", default)]
    pub scope: Vec<String>,
    /// The hosted manager's control plane (tenant) the token belongs to; empty for a global of
    /// its own.
    #[serde(
        rename = "ControlPlane",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub control_plane: String,
    pub jti: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

impl HasTokenId for ZoneClaims {
    fn token_id(&self) -> &str {
        &self.jti
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ZoneTokenError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the token was issued for zone {token_zone:?}, not {zone:?}")]
    OtherZone { token_zone: String, zone: String },
    #[error("the token's scope {scope:?} does not include {needed:?}")]
    Scope { scope: Vec<String>, needed: String },
}

pub fn zone_signing_keys(store: SharedStore) -> SigningKeys {
    SigningKeys::new(store, SIGNING_KEY_PREFIX, REVOCATIONS)
}

/// What a federated zone verifies zone tokens with: the public keys global published.
pub fn zone_public_keys(store: SharedStore) -> SigningKeys {
    SigningKeys::new(store, PUBLIC_KEY_PREFIX, REVOCATIONS)
}

/// Global: publishes the public half of each zone token signing key (for zones to receive).
pub async fn publish_public_keys(store: SharedStore) -> Result<usize, TokenError> {
    zone_signing_keys(store)
        .publish_public_keys(PUBLIC_KEY_PREFIX)
        .await
}

/// Keeps the public half of every zone token signing key published (global's leader): at
/// once when called, then whenever a signing key is created or replaced, e.g. by an operator
/// rotating keys with `kumactl generate signing-key`. KDS carries what is published to every
/// zone as soon as it is stored. Returns when the store goes away.
pub async fn keep_public_keys_published(store: SharedStore) -> Result<(), TokenError> {
    // Subscribed before the first pass, so no key created meanwhile goes unseen.
    let mut events = store.subscribe();
    loop {
        let written = publish_public_keys(store.clone()).await?;
        if written > 0 {
            tracing::info!(written, "published zone token signing keys' public halves");
        }
        let new_key = |e: &store::ChangeEvent| {
            e.key.kind == model::ResourceType::GlobalSecret
                && e.key.name.starts_with(SIGNING_KEY_PREFIX)
                && e.op != store::Operation::Delete
        };
        if !store::next_change(&mut events, new_key).await {
            return Ok(());
        }
    }
}

/// An empty scope means every scope, as `kumactl generate zone-token` without `--scope`.
pub async fn issue_zone_token(
    keys: &SigningKeys,
    zone: &str,
    scope: &[String],
    valid_for: Duration,
) -> Result<String, TokenError> {
    issue_control_plane_zone_token(keys, "", zone, scope, valid_for).await
}

/// A zone token of one of a hosted manager's control planes (`keys` are that control plane's).
pub async fn issue_control_plane_zone_token(
    keys: &SigningKeys,
    control_plane: &str,
    zone: &str,
    scope: &[String],
    valid_for: Duration,
) -> Result<String, TokenError> {
    let now = crate::unix_now();
    let scope = if scope.is_empty() {
        SCOPES.iter().map(|s| s.to_string()).collect()
    } else {
        scope.to_vec()
    };
    let claims = ZoneClaims {
        zone: zone.to_string(),
        scope,
        control_plane: control_plane.to_string(),
        jti: crate::random_uuid(),
        iat: now,
        nbf: now.saturating_sub(crate::ALLOWED_CLOCK_SKEW.as_secs()),
        exp: now + valid_for.as_secs(),
    };
    keys.sign(&claims).await
}

/// The control plane a zone token says it belongs to, read before anything is verified: a
/// hosted manager picks the control plane whose keys then verify the token. A forged claim
/// only picks keys that cannot verify it.
pub fn claimed_control_plane(token: &str) -> Result<String, TokenError> {
    jsonwebtoken::dangerous::insecure_decode_claims::<ZoneClaims>(token)
        .map(|claims| claims.control_plane)
        .map_err(TokenError::Malformed)
}

/// Checks signature, expiry, revocation, that the token names `zone` and allows `scope`.
pub async fn verify_zone_token(
    keys: &SigningKeys,
    token: &str,
    zone: &str,
    scope: &str,
) -> Result<ZoneClaims, ZoneTokenError> {
    let claims: ZoneClaims = keys.verify(token).await?;
    if claims.zone != zone {
        return Err(ZoneTokenError::OtherZone {
            token_zone: claims.zone,
            zone: zone.to_string(),
        });
    }
    if !claims.scope.iter().any(|s| s == scope) {
        return Err(ZoneTokenError::Scope {
            scope: claims.scope,
            needed: scope.to_string(),
        });
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use store::MemoryStore;

    #[tokio::test]
    async fn published_public_keys_verify_tokens() {
        let store: SharedStore = Arc::new(MemoryStore::new());
        let keys = zone_signing_keys(store.clone());
        keys.ensure_key().await.unwrap();
        assert_eq!(publish_public_keys(store.clone()).await.unwrap(), 1);
        assert_eq!(publish_public_keys(store.clone()).await.unwrap(), 0);
        let token = issue_zone_token(
            &keys,
            "zone-1",
            &["ingress".into()],
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        let public = zone_public_keys(store.clone());
        verify_zone_token(&public, &token, "zone-1", "ingress")
            .await
            .unwrap();
        // Only public material leaves global.
        let r = store
            .get(&model::ResourceKey::new(
                model::ResourceType::GlobalSecret,
                "",
                "zone-token-signing-public-key-1",
            ))
            .await
            .unwrap();
        let spec: model::specs::secret::SecretSpec = serde_json::from_value(r.spec).unwrap();
        let pem = String::from_utf8(spec.bytes().unwrap()).unwrap();
        assert!(pem.starts_with("-----BEGIN RSA PUBLIC KEY-----"), "{pem}");
    }

    /// A signing key added while global runs (an operator rotating) has its public half
    /// published on the change, with no restart: a token it signs verifies with what zones
    /// receive.
    #[tokio::test]
    async fn a_token_names_its_control_plane_and_only_its_keys_verify_it() {
        let hour = Duration::from_secs(3600);
        let (a, b) = (
            zone_signing_keys(Arc::new(MemoryStore::new())),
            zone_signing_keys(Arc::new(MemoryStore::new())),
        );
        a.ensure_key().await.unwrap();
        b.ensure_key().await.unwrap();
        let token = issue_control_plane_zone_token(&a, "cp-a", "zone-1", &[], hour)
            .await
            .unwrap();
        assert_eq!(claimed_control_plane(&token).unwrap(), "cp-a");
        let claims = verify_zone_token(&a, &token, "zone-1", SCOPE_CP)
            .await
            .unwrap();
        assert_eq!(claims.control_plane, "cp-a");
        // Both key sets have serial 1, so only the signature tells them apart.
        assert!(matches!(
            verify_zone_token(&b, &token, "zone-1", SCOPE_CP).await,
            Err(ZoneTokenError::Token(TokenError::Invalid(_)))
        ));
        let own = issue_zone_token(&a, "zone-1", &[], hour).await.unwrap();
        assert_eq!(claimed_control_plane(&own).unwrap(), "");
        assert!(matches!(
            claimed_control_plane("not-a-token"),
            Err(TokenError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn a_new_signing_key_is_published_at_once() {
        let store: SharedStore = Arc::new(MemoryStore::new());
        let keys = zone_signing_keys(store.clone());
        keys.ensure_key().await.unwrap();
        let mut events = store.subscribe();
        let publisher = tokio::spawn(keep_public_keys_published(store.clone()));
        let published = |serial: u64| {
            let name = format!("{PUBLIC_KEY_PREFIX}{serial}");
            move |e: &store::ChangeEvent| e.key.name == name && e.op == store::Operation::Create
        };
        let within = Duration::from_secs(10);
        assert!(
            tokio::time::timeout(within, store::next_change(&mut events, published(1)))
                .await
                .unwrap()
        );
        assert_eq!(keys.rotate().await.unwrap(), 2);
        assert!(
            tokio::time::timeout(within, store::next_change(&mut events, published(2)))
                .await
                .unwrap()
        );
        let token = issue_zone_token(&keys, "zone-1", &[], Duration::from_secs(60))
            .await
            .unwrap();
        verify_zone_token(&zone_public_keys(store.clone()), &token, "zone-1", SCOPE_CP)
            .await
            .unwrap();
        publisher.abort();
    }

    #[tokio::test]
    async fn zone_scope_expiry_and_revocation_are_checked() {
        let store: SharedStore = Arc::new(MemoryStore::new());
        let keys = zone_signing_keys(store.clone());
        keys.ensure_key().await.unwrap();
        let hour = Duration::from_secs(3600);
        let token = issue_zone_token(&keys, "zone-1", &[], hour).await.unwrap();
        let claims = verify_zone_token(&keys, &token, "zone-1", SCOPE_CP)
            .await
            .unwrap();
        assert_eq!(claims.scope, ["cp", "ingress", "egress"]);
        assert!(matches!(
            verify_zone_token(&keys, &token, "zone-2", SCOPE_CP).await,
            Err(ZoneTokenError::OtherZone { .. })
        ));

        let ingress_only = issue_zone_token(&keys, "zone-1", &["ingress".into()], hour)
            .await
            .unwrap();
        assert!(matches!(
            verify_zone_token(&keys, &ingress_only, "zone-1", SCOPE_CP).await,
            Err(ZoneTokenError::Scope { .. })
        ));

        let expired = keys
            .sign(&ZoneClaims {
                zone: "zone-1".into(),
                control_plane: String::new(),
                scope: vec!["cp".into()],
                jti: "old".into(),
                iat: 1,
                nbf: 1,
                exp: 2,
            })
            .await
            .unwrap();
        assert!(matches!(
            verify_zone_token(&keys, &expired, "zone-1", SCOPE_CP).await,
            Err(ZoneTokenError::Token(TokenError::Invalid(_)))
        ));

        keys.revoke(&claims.jti).await.unwrap();
        assert!(matches!(
            verify_zone_token(&keys, &token, "zone-1", SCOPE_CP).await,
            Err(ZoneTokenError::Token(TokenError::Revoked))
        ));
    }
}
