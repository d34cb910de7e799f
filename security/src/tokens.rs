//! RS256 JWTs signed by keys stored as secrets `<prefix><serial>`; the highest serial signs,
//! any stored serial verifies (so rotation does not invalidate issued tokens), and revoked
//! token ids are listed in one more secret. User and zone keys are GlobalSecrets; dataplane
//! keys are Secrets of their mesh, as in Kuma, so they travel with the mesh.

use std::collections::HashMap;
use std::sync::Mutex;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use model::specs::secret::SecretSpec;
use model::{Resource, ResourceKey, ResourceType};
use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey, LineEnding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use store::{ListQuery, SharedStore, StoreError};

const RSA_BITS: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed: {0}")]
    Malformed(#[source] jsonwebtoken::errors::Error),
    #[error("token is invalid: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    #[error("token was signed by unknown signing key {0:?}")]
    UnknownKey(String),
    #[error("token has been revoked")]
    Revoked,
    #[error("no signing key exists yet")]
    NoSigningKey,
    #[error("signing key {name} is unusable: {message}")]
    BadKey { name: String, message: String },
    #[error("store error: {0}")]
    Store(#[from] StoreError),
}

/// What can go wrong with a signing key's PEM.
#[derive(Debug, thiserror::Error)]
pub enum KeyPemError {
    #[error("the key is not UTF-8 text")]
    NotText,
    #[error("not a PEM-encoded RSA private key (PKCS#1 or PKCS#8): {0}")]
    NotPrivateKey(#[source] rsa::pkcs8::Error),
    #[error("could not generate an RSA key: {0}")]
    Generate(#[source] rsa::Error),
    #[error("could not encode the key as PEM: {0}")]
    Encode(#[source] rsa::pkcs1::Error),
    #[error("not a usable RSA key: {0}")]
    Decoding(#[source] jsonwebtoken::errors::Error),
}

/// Where a family of signing keys and its revocation list are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyScope {
    /// GlobalSecrets (user and zone tokens).
    Global,
    /// Secrets of this mesh (dataplane tokens).
    Mesh(String),
}

impl KeyScope {
    fn kind(&self) -> ResourceType {
        match self {
            KeyScope::Global => ResourceType::GlobalSecret,
            KeyScope::Mesh(_) => ResourceType::Secret,
        }
    }

    fn mesh(&self) -> &str {
        match self {
            KeyScope::Global => "",
            KeyScope::Mesh(mesh) => mesh,
        }
    }
}

pub struct SigningKeys {
    store: SharedStore,
    scope: KeyScope,
    prefix: String,
    revocations: String,
    // serial -> (secret version, key): keys are parsed once, not on every request.
    cache: Mutex<HashMap<u64, (u64, DecodingKey)>>,
}

impl SigningKeys {
    /// Keys kept as GlobalSecrets `<prefix><serial>`, revocations in GlobalSecret `revocations`.
    pub fn new(store: SharedStore, prefix: &'static str, revocations: &'static str) -> Self {
        Self::with_scope(store, KeyScope::Global, prefix, revocations)
    }

    /// Keys kept as Secrets `<prefix><serial>` of `mesh`, revocations in its Secret
    /// `revocations`.
    pub fn in_mesh(
        store: SharedStore,
        mesh: &str,
        prefix: impl Into<String>,
        revocations: impl Into<String>,
    ) -> Self {
        Self::with_scope(store, KeyScope::Mesh(mesh.to_string()), prefix, revocations)
    }

    fn with_scope(
        store: SharedStore,
        scope: KeyScope,
        prefix: impl Into<String>,
        revocations: impl Into<String>,
    ) -> Self {
        SigningKeys {
            store,
            scope,
            prefix: prefix.into(),
            revocations: revocations.into(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn scope(&self) -> &KeyScope {
        &self.scope
    }

    fn key_name(&self, serial: u64) -> String {
        format!("{}{serial}", self.prefix)
    }

    /// Kuma writes mesh revocation lists comma-separated and reads only commas, so mesh lists
    /// stay readable by it; the global lists keep the newline they have always had here.
    fn revocation_separator(&self) -> char {
        match self.scope {
            KeyScope::Global => '\n',
            KeyScope::Mesh(_) => ',',
        }
    }

    fn secret_key(&self, name: &str) -> ResourceKey {
        ResourceKey::new(self.scope.kind(), self.scope.mesh(), name)
    }

    async fn serials(&self) -> Result<Vec<u64>, TokenError> {
        let mut q = match &self.scope {
            KeyScope::Global => ListQuery::all(ResourceType::GlobalSecret),
            KeyScope::Mesh(mesh) => ListQuery::in_mesh(ResourceType::Secret, mesh),
        };
        q.name_contains = Some(self.prefix.clone());
        let page = self.store.list(&q).await?;
        let mut serials: Vec<u64> = page
            .items
            .iter()
            .filter_map(|r| r.meta.name.strip_prefix(self.prefix.as_str())?.parse().ok())
            .collect();
        serials.sort_unstable();
        Ok(serials)
    }

    /// Creates signing key 1 if there is none. Safe to race: losing a create is fine.
    pub async fn ensure_key(&self) -> Result<(), TokenError> {
        if !self.serials().await?.is_empty() {
            return Ok(());
        }
        self.create_key(1).await
    }

    /// Adds a key with the next serial; new tokens are signed with it.
    pub async fn rotate(&self) -> Result<u64, TokenError> {
        let next = self.serials().await?.last().copied().unwrap_or(0) + 1;
        self.create_key(next).await?;
        Ok(next)
    }

    async fn create_key(&self, serial: u64) -> Result<(), TokenError> {
        let name = self.key_name(serial);
        let pem = tokio::task::spawn_blocking(new_signing_key_pem)
            .await
            .map_err(|e| TokenError::BadKey {
                name: name.clone(),
                message: e.to_string(),
            })?
            .map_err(|e| TokenError::BadKey {
                name: name.clone(),
                message: e.to_string(),
            })?;
        let spec = serde_json::to_value(SecretSpec::from_bytes(pem.as_bytes())).map_err(|e| {
            TokenError::BadKey {
                name: name.clone(),
                message: e.to_string(),
            }
        })?;
        match self
            .store
            .create(Resource::new(
                self.scope.kind(),
                self.scope.mesh(),
                &name,
                spec,
            ))
            .await
        {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the public half of every signing key as `<public_prefix><serial>` in the same
    /// scope, where it is missing; returns how many were written. What zones verify with.
    pub async fn publish_public_keys(&self, public_prefix: &str) -> Result<usize, TokenError> {
        let mut written = 0;
        for serial in self.serials().await? {
            let name = format!("{public_prefix}{serial}");
            match self.store.get(&self.secret_key(&name)).await {
                Ok(_) => continue,
                Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
            let (_, pem) = self.key_pem(serial).await?;
            let bad = |message: String| TokenError::BadKey {
                name: self.key_name(serial),
                message,
            };
            let public = public_pem(&pem).map_err(|e| bad(e.to_string()))?;
            let spec = serde_json::to_value(SecretSpec::from_bytes(public.as_bytes()))
                .map_err(|e| bad(e.to_string()))?;
            let resource = Resource::new(self.scope.kind(), self.scope.mesh(), &name, spec);
            match self.store.create(resource).await {
                Ok(_) => written += 1,
                Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(written)
    }

    async fn key_pem(&self, serial: u64) -> Result<(u64, Vec<u8>), TokenError> {
        let name = self.key_name(serial);
        let secret = match self.store.get(&self.secret_key(&name)).await {
            Ok(s) => s,
            Err(StoreError::NotFound(_)) => return Err(TokenError::UnknownKey(serial.to_string())),
            Err(e) => return Err(e.into()),
        };
        let spec: SecretSpec =
            serde_json::from_value(secret.spec.clone()).map_err(|e| TokenError::BadKey {
                name: name.clone(),
                message: e.to_string(),
            })?;
        let pem = spec.bytes().map_err(|e| TokenError::BadKey {
            name,
            message: e.to_string(),
        })?;
        Ok((secret.meta.version, pem))
    }

    pub async fn sign<C: Serialize>(&self, claims: &C) -> Result<String, TokenError> {
        let serial = *self
            .serials()
            .await?
            .last()
            .ok_or(TokenError::NoSigningKey)?;
        let (_, pem) = self.key_pem(serial).await?;
        let key = EncodingKey::from_rsa_pem(&pem).map_err(|e| TokenError::BadKey {
            name: self.key_name(serial),
            message: e.to_string(),
        })?;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(serial.to_string());
        jsonwebtoken::encode(&header, claims, &key).map_err(TokenError::Invalid)
    }

    async fn decoding_key(&self, serial: u64) -> Result<DecodingKey, TokenError> {
        let (version, pem) = self.key_pem(serial).await?;
        if let Some((v, key)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&serial)
            && *v == version
        {
            return Ok(key.clone());
        }
        let key = public_decoding_key(&pem).map_err(|e| TokenError::BadKey {
            name: self.key_name(serial),
            message: e.to_string(),
        })?;
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(serial, (version, key.clone()));
        Ok(key)
    }

    /// Checks signature, expiry, not-before and revocation; returns the claims.
    pub async fn verify<C: DeserializeOwned + HasTokenId>(
        &self,
        token: &str,
    ) -> Result<C, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(TokenError::Malformed)?;
        if header.alg != Algorithm::RS256 {
            return Err(TokenError::UnknownKey(format!(
                "algorithm {:?}",
                header.alg
            )));
        }
        let kid = header.kid.unwrap_or_default();
        let serial: u64 = kid
            .parse()
            .map_err(|_| TokenError::UnknownKey(kid.clone()))?;
        let key = self.decoding_key(serial).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_nbf = true;
        validation.leeway = 5;
        validation.required_spec_claims = ["exp".to_string()].into_iter().collect();
        let data =
            jsonwebtoken::decode::<C>(token, &key, &validation).map_err(TokenError::Invalid)?;
        if self.is_revoked(data.claims.token_id()).await? {
            return Err(TokenError::Revoked);
        }
        Ok(data.claims)
    }

    /// Adds a token id to the revocation list (creating it if needed); verification refuses
    /// the token from then on, on every replica.
    pub async fn revoke(&self, jti: &str) -> Result<(), TokenError> {
        let key = self.secret_key(&self.revocations);
        let bad_list = |message: String| TokenError::BadKey {
            name: self.revocations.clone(),
            message,
        };
        loop {
            let (current, mut ids) = match self.store.get(&key).await {
                Ok(r) => {
                    let text = serde_json::from_value::<SecretSpec>(r.spec.clone())
                        .map_err(|e| bad_list(e.to_string()))?
                        .bytes()
                        .map_err(|e| bad_list(e.to_string()))?;
                    (Some(r), String::from_utf8_lossy(&text).trim().to_string())
                }
                Err(StoreError::NotFound(_)) => (None, String::new()),
                Err(e) => return Err(e.into()),
            };
            if ids.split([',', '\n']).any(|id| id.trim() == jti) {
                return Ok(());
            }
            if !ids.is_empty() {
                ids.push(self.revocation_separator());
            }
            ids.push_str(jti);
            let spec = serde_json::to_value(SecretSpec::from_bytes(ids.as_bytes()))
                .map_err(|e| bad_list(e.to_string()))?;
            let result = match current {
                Some(mut r) => {
                    r.spec = spec;
                    self.store.update(r).await.map(|_| ())
                }
                None => self
                    .store
                    .create(Resource::new(
                        self.scope.kind(),
                        self.scope.mesh(),
                        &self.revocations,
                        spec,
                    ))
                    .await
                    .map(|_| ()),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict { .. } | StoreError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn is_revoked(&self, jti: &str) -> Result<bool, TokenError> {
        let key = self.secret_key(&self.revocations);
        let secret = match self.store.get(&key).await {
            Ok(s) => s,
            Err(StoreError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let list = serde_json::from_value::<SecretSpec>(secret.spec)
            .ok()
            .and_then(|s| s.bytes().ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Ok(list
            .split([',', '\n'])
            .map(str::trim)
            .any(|id| !id.is_empty() && id == jti))
    }
}

/// Claims carry their own id so revocation can be checked generically.
pub trait HasTokenId {
    fn token_id(&self) -> &str;
}

/// A new token signing key: RSA 2048, PKCS#1 PEM, as Kuma makes them (and `kumactl generate
/// signing-key` prints).
pub fn new_signing_key_pem() -> Result<String, KeyPemError> {
    let mut rng = rand::thread_rng();
    let key = rsa::RsaPrivateKey::new(&mut rng, RSA_BITS).map_err(KeyPemError::Generate)?;
    key.to_pkcs1_pem(LineEnding::LF)
        .map(|p| p.to_string())
        .map_err(KeyPemError::Encode)
}

/// The public half of a signing key, as PKCS#1 PEM: what zones receive to verify tokens
/// global signed.
pub fn public_pem(private_pem: &[u8]) -> Result<String, KeyPemError> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    let text = std::str::from_utf8(private_pem).map_err(|_| KeyPemError::NotText)?;
    let key = rsa::RsaPrivateKey::from_pkcs1_pem(text)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_pem(text))
        .map_err(KeyPemError::NotPrivateKey)?;
    key.to_public_key()
        .to_pkcs1_pem(LineEnding::LF)
        .map_err(KeyPemError::Encode)
}

/// A decoding key from a private key's PEM or, for published public keys, a public one.
fn public_decoding_key(pem: &[u8]) -> Result<DecodingKey, KeyPemError> {
    if std::str::from_utf8(pem).is_ok_and(|t| t.contains("PUBLIC KEY-----")) {
        return DecodingKey::from_rsa_pem(pem).map_err(KeyPemError::Decoding);
    }
    DecodingKey::from_rsa_pem(public_pem(pem)?.as_bytes()).map_err(KeyPemError::Decoding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::sync::Arc;
    use store::MemoryStore;

    #[derive(Serialize, Deserialize)]
    struct Claims {
        jti: String,
        exp: u64,
    }

    impl HasTokenId for Claims {
        fn token_id(&self) -> &str {
            &self.jti
        }
    }

    fn claims(jti: &str) -> Claims {
        Claims {
            jti: jti.into(),
            exp: crate::unix_now() + 3600,
        }
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

    async fn secret_text(store: &SharedStore, key: ResourceKey) -> String {
        let r = store.get(&key).await.unwrap();
        let spec: SecretSpec = serde_json::from_value(r.spec).unwrap();
        String::from_utf8(spec.bytes().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn mesh_keys_and_revocations_live_in_the_mesh() {
        let store = store_with_meshes(&["a", "b"]).await;
        let a = SigningKeys::in_mesh(store.clone(), "a", "k-a-", "rev-a");
        let b = SigningKeys::in_mesh(store.clone(), "b", "k-a-", "rev-a");
        a.ensure_key().await.unwrap();
        assert_eq!(a.scope(), &KeyScope::Mesh("a".into()));
        store
            .get(&ResourceKey::new(ResourceType::Secret, "a", "k-a-1"))
            .await
            .unwrap();
        let globals = store
            .list(&ListQuery::all(ResourceType::GlobalSecret))
            .await
            .unwrap();
        assert_eq!(globals.total, 0, "mesh keys are not GlobalSecrets");

        // Same names in another mesh are other keys: b has none yet.
        let token = a.sign(&claims("t1")).await.unwrap();
        assert!(matches!(
            b.sign(&claims("x")).await,
            Err(TokenError::NoSigningKey)
        ));
        assert!(matches!(
            b.verify::<Claims>(&token).await,
            Err(TokenError::UnknownKey(_))
        ));
        b.ensure_key().await.unwrap();
        assert!(matches!(
            b.verify::<Claims>(&token).await,
            Err(TokenError::Invalid(_))
        ));
        assert_eq!(a.verify::<Claims>(&token).await.unwrap().jti, "t1");

        a.revoke("t0").await.unwrap();
        a.revoke("t1").await.unwrap();
        a.revoke("t1").await.unwrap();
        assert!(matches!(
            a.verify::<Claims>(&token).await,
            Err(TokenError::Revoked)
        ));
        let list = secret_text(&store, ResourceKey::new(ResourceType::Secret, "a", "rev-a")).await;
        assert_eq!(list, "t0,t1", "Kuma's comma-separated form");
        assert!(
            store
                .get(&ResourceKey::new(ResourceType::Secret, "b", "rev-a"))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn mesh_keys_need_the_mesh() {
        let store = store_with_meshes(&[]).await;
        let keys = SigningKeys::in_mesh(store, "ghost", "k-", "rev");
        assert!(matches!(
            keys.ensure_key().await,
            Err(TokenError::Store(StoreError::MeshNotFound(_)))
        ));
    }

    #[tokio::test]
    async fn revocation_lists_accept_commas_and_newlines() {
        let store = store_with_meshes(&["m"]).await;
        let keys = SigningKeys::in_mesh(store.clone(), "m", "k-", "rev");
        keys.ensure_key().await.unwrap();
        let spec = serde_json::to_value(SecretSpec::from_bytes(b"x, y\nz\n")).unwrap();
        store
            .create(Resource::new(ResourceType::Secret, "m", "rev", spec))
            .await
            .unwrap();
        for jti in ["x", "y", "z"] {
            let token = keys.sign(&claims(jti)).await.unwrap();
            assert!(matches!(
                keys.verify::<Claims>(&token).await,
                Err(TokenError::Revoked)
            ));
        }
        let token = keys.sign(&claims("w")).await.unwrap();
        assert!(keys.verify::<Claims>(&token).await.is_ok());
    }

    #[tokio::test]
    async fn global_keys_keep_their_names() {
        let store = store_with_meshes(&[]).await;
        let keys = SigningKeys::new(store.clone(), "g-key-", "g-rev");
        keys.ensure_key().await.unwrap();
        assert_eq!(keys.scope(), &KeyScope::Global);
        store
            .get(&ResourceKey::new(ResourceType::GlobalSecret, "", "g-key-1"))
            .await
            .unwrap();
        keys.revoke("a").await.unwrap();
        keys.revoke("b").await.unwrap();
        let list = secret_text(
            &store,
            ResourceKey::new(ResourceType::GlobalSecret, "", "g-rev"),
        )
        .await;
        assert_eq!(list, "a\nb");
    }
}
