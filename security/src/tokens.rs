//! RS256 JWTs signed by keys stored as GlobalSecrets `<prefix><serial>`; the highest serial
//! signs, any stored serial verifies (so rotation does not invalidate issued tokens), and
//! revoked token ids are listed in one more GlobalSecret.

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

pub struct SigningKeys {
    store: SharedStore,
    prefix: &'static str,
    revocations: &'static str,
    // serial -> (secret version, key): keys are parsed once, not on every request.
    cache: Mutex<HashMap<u64, (u64, DecodingKey)>>,
}

impl SigningKeys {
    pub fn new(store: SharedStore, prefix: &'static str, revocations: &'static str) -> Self {
        SigningKeys {
            store,
            prefix,
            revocations,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn key_name(&self, serial: u64) -> String {
        format!("{}{serial}", self.prefix)
    }

    async fn serials(&self) -> Result<Vec<u64>, TokenError> {
        let mut q = ListQuery::all(ResourceType::GlobalSecret);
        q.name_contains = Some(self.prefix.to_string());
        let page = self.store.list(&q).await?;
        let mut serials: Vec<u64> = page
            .items
            .iter()
            .filter_map(|r| r.meta.name.strip_prefix(self.prefix)?.parse().ok())
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
        let pem = tokio::task::spawn_blocking(generate_rsa_pem)
            .await
            .map_err(|e| TokenError::BadKey {
                name: name.clone(),
                message: e.to_string(),
            })?
            .map_err(|message| TokenError::BadKey {
                name: name.clone(),
                message,
            })?;
        let spec = serde_json::to_value(SecretSpec::from_bytes(pem.as_bytes())).map_err(|e| {
            TokenError::BadKey {
                name: name.clone(),
                message: e.to_string(),
            }
        })?;
        match self
            .store
            .create(Resource::new(ResourceType::GlobalSecret, "", &name, spec))
            .await
        {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn key_pem(&self, serial: u64) -> Result<(u64, Vec<u8>), TokenError> {
        let name = self.key_name(serial);
        let secret = match self
            .store
            .get(&ResourceKey::new(ResourceType::GlobalSecret, "", &name))
            .await
        {
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
        let key = public_decoding_key(&pem).map_err(|message| TokenError::BadKey {
            name: self.key_name(serial),
            message,
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
        let key = ResourceKey::new(ResourceType::GlobalSecret, "", self.revocations);
        let bad_list = |message: String| TokenError::BadKey {
            name: self.revocations.to_string(),
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
                ids.push('\n');
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
                        ResourceType::GlobalSecret,
                        "",
                        self.revocations,
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
        let key = ResourceKey::new(ResourceType::GlobalSecret, "", self.revocations);
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

fn generate_rsa_pem() -> Result<String, String> {
    let mut rng = rand::thread_rng();
    let key = rsa::RsaPrivateKey::new(&mut rng, RSA_BITS).map_err(|e| e.to_string())?;
    key.to_pkcs1_pem(LineEnding::LF)
        .map(|p| p.to_string())
        .map_err(|e| e.to_string())
}

fn public_decoding_key(private_pem: &[u8]) -> Result<DecodingKey, String> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    let text = std::str::from_utf8(private_pem).map_err(|e| e.to_string())?;
    let key = rsa::RsaPrivateKey::from_pkcs1_pem(text)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_pem(text))
        .map_err(|e| e.to_string())?;
    let public = key
        .to_public_key()
        .to_pkcs1_pem(LineEnding::LF)
        .map_err(|e| e.to_string())?;
    DecodingKey::from_rsa_pem(public.as_bytes()).map_err(|e| e.to_string())
}
