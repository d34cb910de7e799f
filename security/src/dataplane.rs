//! Dataplane tokens: what a data plane proxy on Universal presents to prove which dataplane it
//! is. Kuma's claims (`Name`, `Mesh`, `Tags`, `Type`) and key layout: the keys are Secrets of
//! the mesh named `dataplane-token-signing-key-<mesh>-<serial>`, revoked ids are listed in its
//! Secret `dataplane-token-revocations-<mesh>`.
//!
//! Every claim is optional and only the claims present are checked, so one token can serve a
//! single dataplane (name), every instance of a service (tags) or the whole mesh.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use store::{SharedStore, StoreError};

use crate::tokens::{HasTokenId, SigningKeys, TokenError};

pub const PROXY_TYPE_DATAPLANE: &str = "dataplane";
pub const PROXY_TYPES: [&str; 3] = [PROXY_TYPE_DATAPLANE, "ingress", "egress"];

/// Kuma's default lifetime when `validFor` is not given: 87600h, ten years.
pub const DEFAULT_VALID_FOR: Duration = Duration::from_secs(87_600 * 3600);

pub fn signing_key_prefix(mesh: &str) -> String {
    format!("dataplane-token-signing-key-{mesh}-")
}

pub fn revocations_name(mesh: &str) -> String {
    format!("dataplane-token-revocations-{mesh}")
}

/// Kuma's Go struct has no JSON tags, so the keys are the capitalised field names; Go writes
/// a nil map as `null`, which is read here as no tags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneClaims {
    #[serde(rename = "Name", default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(rename = "Mesh", default, deserialize_with = "null_as_default")]
    pub mesh: String,
    #[serde(rename = "Tags", default, deserialize_with = "null_as_default")]
    pub tags: BTreeMap<String, Vec<String>>,
    /// `dataplane`, `ingress`, `egress`, or empty for any.
    #[serde(rename = "Type", default, deserialize_with = "null_as_default")]
    pub proxy_type: String,
    #[serde(default)]
    pub jti: String,
    #[serde(default)]
    pub iat: u64,
    #[serde(default)]
    pub nbf: u64,
    pub exp: u64,
}

impl HasTokenId for DataplaneClaims {
    fn token_id(&self) -> &str {
        &self.jti
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Go's `%q` of a string slice: `["a" "b"]`, as in Kuma's message.
struct QuotedList<'a>(&'a [String]);

impl fmt::Display for QuotedList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{v:?}")?;
        }
        f.write_str("]")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneTokenError {
    /// The store could not be read: the token may well be valid, so callers should answer
    /// "unavailable, retry" rather than "unauthenticated".
    #[error("cannot check the dataplane token now: {0}")]
    Store(#[source] StoreError),
    /// Bad signature, expired, revoked, unknown or unusable key.
    #[error(transparent)]
    Token(TokenError),
    #[error("proxy name from requestor: {requestor} is different than in token: {token}")]
    Name { requestor: String, token: String },
    #[error("proxy mesh from requestor: {requestor} is different than in token: {token}")]
    Mesh { requestor: String, token: String },
    #[error("proxy type from requestor: {requestor} is different than in token: {token}")]
    ProxyType { requestor: String, token: String },
    #[error("dataplane has no tag {tag:?} required by the token")]
    MissingTag { tag: String },
    #[error(
        "dataplane contains tag {tag:?} with value {value:?} which is not allowed with this token. Allowed values in token are {}",
        QuotedList(allowed)
    )]
    TagValue {
        tag: String,
        value: String,
        allowed: Vec<String>,
    },
}

impl DataplaneTokenError {
    /// True when the check could not be made (store trouble), not when the token was refused.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DataplaneTokenError::Store(_))
    }
}

impl From<TokenError> for DataplaneTokenError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Store(e) => DataplaneTokenError::Store(e),
            other => DataplaneTokenError::Token(other),
        }
    }
}

pub fn dataplane_signing_keys(store: SharedStore, mesh: &str) -> SigningKeys {
    SigningKeys::in_mesh(
        store,
        mesh,
        signing_key_prefix(mesh),
        revocations_name(mesh),
    )
}

/// Signs with the newest key of `keys` (the mesh's; see [`dataplane_signing_keys`]). Empty
/// `name`, `tags` or `proxy_type` leave that claim unchecked.
pub async fn issue_dataplane_token(
    keys: &SigningKeys,
    name: &str,
    mesh: &str,
    tags: &BTreeMap<String, Vec<String>>,
    proxy_type: &str,
    valid_for: Duration,
) -> Result<String, TokenError> {
    let now = crate::unix_now();
    let claims = DataplaneClaims {
        name: name.to_string(),
        mesh: mesh.to_string(),
        tags: tags.clone(),
        proxy_type: proxy_type.to_string(),
        jti: crate::random_uuid(),
        iat: now,
        nbf: now.saturating_sub(crate::ALLOWED_CLOCK_SKEW.as_secs()),
        exp: now.saturating_add(valid_for.as_secs()),
    };
    keys.sign(&claims).await
}

/// Checks signature, expiry and revocation with the keys of the dataplane's mesh, then each
/// claim the token has against the requesting dataplane: `name`, `mesh`, `tags` (its tag
/// values, e.g. gathered over its inbounds) and `proxy_type` (empty means `dataplane`, as
/// kuma-dp's default).
pub async fn verify_dataplane_token(
    keys: &SigningKeys,
    token: &str,
    name: &str,
    mesh: &str,
    tags: &BTreeMap<String, Vec<String>>,
    proxy_type: &str,
) -> Result<DataplaneClaims, DataplaneTokenError> {
    let claims: DataplaneClaims = keys.verify(token).await?;
    if !claims.name.is_empty() && claims.name != name {
        return Err(DataplaneTokenError::Name {
            requestor: name.to_string(),
            token: claims.name,
        });
    }
    if !claims.mesh.is_empty() && claims.mesh != mesh {
        return Err(DataplaneTokenError::Mesh {
            requestor: mesh.to_string(),
            token: claims.mesh,
        });
    }
    let requestor_type = if proxy_type.is_empty() {
        PROXY_TYPE_DATAPLANE
    } else {
        proxy_type
    };
    if !claims.proxy_type.is_empty() && claims.proxy_type != requestor_type {
        return Err(DataplaneTokenError::ProxyType {
            requestor: requestor_type.to_string(),
            token: claims.proxy_type,
        });
    }
    check_tags(&claims.tags, tags)?;
    Ok(claims)
}

/// Every tag in the token must be on the dataplane, and every value the dataplane has for it
/// must be one the token allows (a dataplane with inbounds `web` and `web-api` needs a token
/// allowing both).
fn check_tags(
    token_tags: &BTreeMap<String, Vec<String>>,
    dp_tags: &BTreeMap<String, Vec<String>>,
) -> Result<(), DataplaneTokenError> {
    for (tag, allowed) in token_tags {
        let Some(values) = dp_tags.get(tag) else {
            return Err(DataplaneTokenError::MissingTag { tag: tag.clone() });
        };
        if let Some(value) = values.iter().find(|v| !allowed.contains(v)) {
            let mut allowed = allowed.clone();
            allowed.sort();
            allowed.dedup();
            return Err(DataplaneTokenError::TagValue {
                tag: tag.clone(),
                value: value.clone(),
                allowed,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use base64::Engine;
    use model::{Resource, ResourceKey, ResourceType};
    use std::sync::Arc;
    use store::{ChangeEvent, ListPage, ListQuery, MemoryStore, ResourceStore};

    const HOUR: Duration = Duration::from_secs(3600);

    fn tags(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
            .collect()
    }

    fn web_tags() -> BTreeMap<String, Vec<String>> {
        tags(&[("kuma.io/service", &["web"]), ("version", &["v1"])])
    }

    async fn store_with_meshes(meshes: &[&str]) -> SharedStore {
        let store: SharedStore = Arc::new(MemoryStore::new());
        for mesh in meshes {
            store
                .create(Resource::new(
                    ResourceType::Mesh,
                    "",
                    mesh,
                    serde_json::json!({}),
                ))
                .await
                .unwrap();
        }
        store
    }

    async fn keys_for(store: &SharedStore, mesh: &str) -> SigningKeys {
        let keys = dataplane_signing_keys(store.clone(), mesh);
        keys.ensure_key().await.unwrap();
        keys
    }

    #[tokio::test]
    async fn keys_are_kumas_mesh_secrets() {
        let store = store_with_meshes(&["default"]).await;
        let keys = keys_for(&store, "default").await;
        store
            .get(&ResourceKey::new(
                ResourceType::Secret,
                "default",
                "dataplane-token-signing-key-default-1",
            ))
            .await
            .unwrap();
        let token = issue_dataplane_token(&keys, "web-1", "default", &web_tags(), "", HOUR)
            .await
            .unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some("1"));
        assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
        let payload = token.split('.').nth(1).unwrap();
        let payload: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        for key in ["Name", "Mesh", "Tags", "Type", "jti", "iat", "nbf", "exp"] {
            assert!(payload.get(key).is_some(), "claim {key} in {payload}");
        }

        keys.revoke("some-id").await.unwrap();
        store
            .get(&ResourceKey::new(
                ResourceType::Secret,
                "default",
                "dataplane-token-revocations-default",
            ))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn valid_token_is_accepted() {
        let store = store_with_meshes(&["default"]).await;
        let keys = keys_for(&store, "default").await;
        let token = issue_dataplane_token(
            &keys,
            "web-1",
            "default",
            &tags(&[("kuma.io/service", &["web", "web-api"])]),
            "dataplane",
            HOUR,
        )
        .await
        .unwrap();
        let dp = tags(&[("kuma.io/service", &["web-api", "web"]), ("zone", &["z1"])]);
        let claims = verify_dataplane_token(&keys, &token, "web-1", "default", &dp, "dataplane")
            .await
            .unwrap();
        assert_eq!(claims.name, "web-1");
        assert_eq!(claims.mesh, "default");
        assert_eq!(claims.proxy_type, "dataplane");
        // kuma-dp's default proxy type is dataplane.
        verify_dataplane_token(&keys, &token, "web-1", "default", &dp, "")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn absent_claims_are_not_checked() {
        let store = store_with_meshes(&["default"]).await;
        let keys = keys_for(&store, "default").await;
        let mesh_wide = issue_dataplane_token(&keys, "", "default", &BTreeMap::new(), "", HOUR)
            .await
            .unwrap();
        for (name, proxy_type) in [("web-1", "dataplane"), ("ingress-1", "ingress")] {
            verify_dataplane_token(
                &keys,
                &mesh_wide,
                name,
                "default",
                &BTreeMap::new(),
                proxy_type,
            )
            .await
            .unwrap();
        }
    }

    #[tokio::test]
    async fn wrong_name_is_refused() {
        let store = store_with_meshes(&["default"]).await;
        let keys = keys_for(&store, "default").await;
        let token = issue_dataplane_token(&keys, "web-1", "default", &BTreeMap::new(), "", HOUR)
            .await
            .unwrap();
        let err = verify_dataplane_token(&keys, &token, "web-2", "default", &web_tags(), "")
            .await
            .unwrap_err();
        assert!(matches!(err, DataplaneTokenError::Name { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "proxy name from requestor: web-2 is different than in token: web-1"
        );
        assert!(!err.is_unavailable());
    }

    #[tokio::test]
    async fn wrong_mesh_is_refused() {
        let store = store_with_meshes(&["default"]).await;
        let keys = keys_for(&store, "default").await;
        // A token whose Mesh claim names another mesh, signed with this mesh's key (e.g. a
        // key copied between meshes).
        let token = issue_dataplane_token(&keys, "", "other", &BTreeMap::new(), "", HOUR)
            .await
            .unwrap();
        let err = verify_dataplane_token(&keys, &token, "web-1", "default", &web_tags(), "")
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "proxy mesh from requestor: default is different than in token: other"
        );
    }

    #[tokio::test]
    async fn wrong_proxy_type_is_refused() {
        let store = store_with_meshes(&["default"]).await;
        let keys = keys_for(&store, "default").await;
        let token = issue_dataplane_token(&keys, "", "default", &BTreeMap::new(), "ingress", HOUR)
            .await
            .unwrap();
        let err = verify_dataplane_token(&keys, &token, "web-1", "default", &web_tags(), "")
            .await
            .unwrap_err();
        assert!(
            matches!(err, DataplaneTokenError::ProxyType { .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "proxy type from requestor: dataplane is different than in token: ingress"
        );
    }

    #[tokio::test]
    async fn missing_tag_is_refused() {
        let store = store_with_meshes(&["default"]).await;
        let keys = keys_for(&store, "default").await;
        let token =
            issue_dataplane_token(&keys, "", "default", &tags(&[("team", &["a"])]), "", HOUR)
                .await
                .unwrap();
        let err = verify_dataplane_token(&keys, &token, "web-1", "default", &web_tags(), "")
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "dataplane has no tag \"team\" required by the token"
        );
    }

    #[tokio::test]
    async fn tag_value_not_allowed_is_refused() {
        let store = store_with_meshes(&["default"]).await;
        let keys = keys_for(&store, "default").await;
        let token = issue_dataplane_token(
            &keys,
            "",
            "default",
            &tags(&[("kuma.io/service", &["web", "backend"])]),
            "",
            HOUR,
        )
        .await
        .unwrap();
        // One inbound is allowed, the other is not: the token must cover every value.
        let dp = tags(&[("kuma.io/service", &["web", "web-api"])]);
        let err = verify_dataplane_token(&keys, &token, "web-1", "default", &dp, "")
            .await
            .unwrap_err();
        assert!(
            matches!(err, DataplaneTokenError::TagValue { .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "dataplane contains tag \"kuma.io/service\" with value \"web-api\" which is not \
             allowed with this token. Allowed values in token are [\"backend\" \"web\"]"
        );
    }

    #[tokio::test]
    async fn expired_token_is_refused() {
        let store = store_with_meshes(&["default"]).await;
        let keys = keys_for(&store, "default").await;
        let token = keys
            .sign(&DataplaneClaims {
                mesh: "default".into(),
                jti: "old".into(),
                iat: 1,
                nbf: 1,
                exp: 2,
                ..Default::default()
            })
            .await
            .unwrap();
        let err = verify_dataplane_token(&keys, &token, "web-1", "default", &web_tags(), "")
            .await
            .unwrap_err();
        assert!(
            matches!(err, DataplaneTokenError::Token(TokenError::Invalid(_))),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn revoked_token_is_refused() {
        let store = store_with_meshes(&["default"]).await;
        let keys = keys_for(&store, "default").await;
        let token = issue_dataplane_token(&keys, "web-1", "default", &web_tags(), "", HOUR)
            .await
            .unwrap();
        let other = issue_dataplane_token(&keys, "web-1", "default", &web_tags(), "", HOUR)
            .await
            .unwrap();
        let claims = verify_dataplane_token(&keys, &token, "web-1", "default", &web_tags(), "")
            .await
            .unwrap();
        keys.revoke(&claims.jti).await.unwrap();
        let err = verify_dataplane_token(&keys, &token, "web-1", "default", &web_tags(), "")
            .await
            .unwrap_err();
        assert!(
            matches!(err, DataplaneTokenError::Token(TokenError::Revoked)),
            "{err:?}"
        );
        verify_dataplane_token(&keys, &other, "web-1", "default", &web_tags(), "")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn key_of_another_mesh_is_refused() {
        let store = store_with_meshes(&["default", "demo"]).await;
        let default_keys = keys_for(&store, "default").await;
        let demo_keys = keys_for(&store, "demo").await;
        // Signed by demo's key but claiming mesh default: default's key does not verify it.
        let token = issue_dataplane_token(&demo_keys, "", "default", &BTreeMap::new(), "", HOUR)
            .await
            .unwrap();
        let err =
            verify_dataplane_token(&default_keys, &token, "web-1", "default", &web_tags(), "")
                .await
                .unwrap_err();
        assert!(
            matches!(err, DataplaneTokenError::Token(TokenError::Invalid(_))),
            "{err:?}"
        );
        // A mesh with no key at all does not know the token's key either.
        let store2 = store_with_meshes(&["default"]).await;
        let empty = dataplane_signing_keys(store2, "default");
        let err = verify_dataplane_token(&empty, &token, "web-1", "default", &web_tags(), "")
            .await
            .unwrap_err();
        assert!(
            matches!(err, DataplaneTokenError::Token(TokenError::UnknownKey(_))),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn kuma_null_tags_are_no_tags() {
        let claims: DataplaneClaims = serde_json::from_value(serde_json::json!({
            "Name": "", "Mesh": "default", "Tags": null, "Type": "", "jti": "x", "exp": 5
        }))
        .unwrap();
        assert!(claims.tags.is_empty());
        assert_eq!(claims.mesh, "default");
    }

    /// A store whose reads fail, as when Postgres is down.
    struct DownStore {
        inner: SharedStore,
    }

    #[async_trait]
    impl ResourceStore for DownStore {
        async fn get(&self, _: &ResourceKey) -> store::Result<Resource> {
            Err(StoreError::Unavailable {
                message: "down".into(),
                source: None,
            })
        }
        async fn list(&self, q: &ListQuery) -> store::Result<ListPage> {
            self.inner.list(q).await
        }
        async fn create(&self, r: Resource) -> store::Result<Resource> {
            self.inner.create(r).await
        }
        async fn update(&self, r: Resource) -> store::Result<Resource> {
            self.inner.update(r).await
        }
        async fn delete(&self, key: &ResourceKey) -> store::Result<()> {
            self.inner.delete(key).await
        }
        fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ChangeEvent> {
            self.inner.subscribe()
        }
        async fn ping(&self) -> store::Result<()> {
            Ok(())
        }
        fn backend(&self) -> &'static str {
            "down"
        }
    }

    #[tokio::test]
    async fn store_trouble_is_unavailable_not_refusal() {
        let store = store_with_meshes(&["default"]).await;
        let keys = keys_for(&store, "default").await;
        let token = issue_dataplane_token(&keys, "", "default", &BTreeMap::new(), "", HOUR)
            .await
            .unwrap();
        let down: SharedStore = Arc::new(DownStore { inner: store });
        let keys = dataplane_signing_keys(down, "default");
        let err = verify_dataplane_token(&keys, &token, "web-1", "default", &web_tags(), "")
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
    }
}
