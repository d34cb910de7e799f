//! API users and their tokens, with Kuma's claim names (`Name`, `Groups`).

use std::time::Duration;

use model::specs::secret::SecretSpec;
use model::{Resource, ResourceKey, ResourceType};
use serde::{Deserialize, Serialize};
use store::{SharedStore, StoreError};

use crate::tokens::{HasTokenId, SigningKeys, TokenError};

pub const ADMIN_NAME: &str = "mesh-system:admin";
pub const ADMIN_GROUP: &str = "mesh-system:admin";
pub const AUTHENTICATED_GROUP: &str = "mesh-system:authenticated";
pub const ANONYMOUS_NAME: &str = "mesh-system:anonymous";
pub const UNAUTHENTICATED_GROUP: &str = "mesh-system:unauthenticated";

pub const SIGNING_KEY_PREFIX: &str = "user-token-signing-key-";
pub const REVOCATIONS: &str = "user-token-revocations";
pub const ADMIN_TOKEN_SECRET: &str = "admin-user-token";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn admin() -> Self {
        User {
            name: ADMIN_NAME.into(),
            groups: vec![ADMIN_GROUP.into(), AUTHENTICATED_GROUP.into()],
        }
    }

    pub fn anonymous() -> Self {
        User {
            name: ANONYMOUS_NAME.into(),
            groups: vec![UNAUTHENTICATED_GROUP.into()],
        }
    }

    pub fn is_admin(&self) -> bool {
        self.name == ADMIN_NAME || self.groups.iter().any(|g| g == ADMIN_GROUP)
    }

    pub fn is_anonymous(&self) -> bool {
        self.name == ANONYMOUS_NAME
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserClaims {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Groups", default)]
    pub groups: Vec<String>,
    pub jti: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

impl HasTokenId for UserClaims {
    fn token_id(&self) -> &str {
        &self.jti
    }
}

pub fn user_signing_keys(store: SharedStore) -> SigningKeys {
    SigningKeys::new(store, SIGNING_KEY_PREFIX, REVOCATIONS)
}

pub async fn issue_user_token(
    keys: &SigningKeys,
    name: &str,
    groups: &[String],
    valid_for: Duration,
) -> Result<String, TokenError> {
    let now = crate::unix_now();
    let claims = UserClaims {
        name: name.to_string(),
        groups: groups.to_vec(),
        jti: crate::random_uuid(),
        iat: now,
        nbf: now.saturating_sub(crate::ALLOWED_CLOCK_SKEW.as_secs()),
        exp: now + valid_for.as_secs(),
    };
    keys.sign(&claims).await
}

pub async fn authenticate(keys: &SigningKeys, token: &str) -> Result<User, TokenError> {
    let claims: UserClaims = keys.verify(token).await?;
    let mut groups = claims.groups;
    if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
        groups.push(AUTHENTICATED_GROUP.into());
    }
    Ok(User {
        name: claims.name,
        groups,
    })
}

/// Issues the admin token once and keeps it in a GlobalSecret, as Kuma does, so an operator on
/// the control plane's host can read it and configure kumactl.
pub async fn bootstrap_admin_token(
    store: &SharedStore,
    keys: &SigningKeys,
) -> Result<bool, TokenError> {
    let key = ResourceKey::new(ResourceType::GlobalSecret, "", ADMIN_TOKEN_SECRET);
    match store.get(&key).await {
        Ok(_) => return Ok(false),
        Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let ten_years = Duration::from_secs(10 * 365 * 24 * 3600);
    let token = issue_user_token(keys, ADMIN_NAME, &[ADMIN_GROUP.to_string()], ten_years).await?;
    let spec = serde_json::to_value(SecretSpec::from_bytes(token.as_bytes())).map_err(|e| {
        TokenError::BadKey {
            name: ADMIN_TOKEN_SECRET.into(),
            message: e.to_string(),
        }
    })?;
    match store
        .create(Resource::new(
            ResourceType::GlobalSecret,
            "",
            ADMIN_TOKEN_SECRET,
            spec,
        ))
        .await
    {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use store::MemoryStore;

    #[tokio::test]
    async fn issue_verify_revoke_rotate() {
        let store: SharedStore = Arc::new(MemoryStore::new());
        let keys = user_signing_keys(store.clone());
        keys.ensure_key().await.unwrap();
        let token = issue_user_token(&keys, "john", &["team-a".into()], Duration::from_secs(3600))
            .await
            .unwrap();
        let user = authenticate(&keys, &token).await.unwrap();
        assert_eq!(user.name, "john");
        assert!(user.groups.contains(&"team-a".to_string()));
        assert!(!user.is_admin());

        // Tampering breaks the signature.
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        parts[1] = parts[1].chars().rev().collect();
        assert!(authenticate(&keys, &parts.join(".")).await.is_err());
        assert!(authenticate(&keys, "garbage").await.is_err());

        // Rotation: old tokens still verify, new ones use the new key.
        assert_eq!(keys.rotate().await.unwrap(), 2);
        assert!(authenticate(&keys, &token).await.is_ok());
        let newer = issue_user_token(&keys, "jane", &[], Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&newer).unwrap().kid.as_deref(),
            Some("2")
        );

        // Revocation by jti.
        let claims: UserClaims = keys.verify(&token).await.unwrap();
        keys.revoke(&claims.jti).await.unwrap();
        assert!(matches!(
            authenticate(&keys, &token).await,
            Err(TokenError::Revoked)
        ));
        assert!(authenticate(&keys, &newer).await.is_ok());
    }

    #[tokio::test]
    async fn expired_tokens_fail() {
        let store: SharedStore = Arc::new(MemoryStore::new());
        let keys = user_signing_keys(store.clone());
        keys.ensure_key().await.unwrap();
        let claims = UserClaims {
            name: "x".into(),
            groups: vec![],
            jti: "1".into(),
            iat: 1,
            nbf: 1,
            exp: 2,
        };
        let token = keys.sign(&claims).await.unwrap();
        assert!(matches!(
            authenticate(&keys, &token).await,
            Err(TokenError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn admin_token_bootstraps_once() {
        let store: SharedStore = Arc::new(MemoryStore::new());
        let keys = user_signing_keys(store.clone());
        keys.ensure_key().await.unwrap();
        assert!(bootstrap_admin_token(&store, &keys).await.unwrap());
        assert!(!bootstrap_admin_token(&store, &keys).await.unwrap());
        let secret = store
            .get(&ResourceKey::new(
                ResourceType::GlobalSecret,
                "",
                ADMIN_TOKEN_SECRET,
            ))
            .await
            .unwrap();
        let spec: SecretSpec = serde_json::from_value(secret.spec).unwrap();
        let token = String::from_utf8(spec.bytes().unwrap()).unwrap();
        assert!(authenticate(&keys, &token).await.unwrap().is_admin());
    }
}
