//! A small certificate authority: generated once, kept in the store as a secret, issuing
//! short-lived leaf certificates: inter-CP mTLS, and each mesh's CA (`builtin`, generated and
//! kept as two mesh Secrets as Kuma does, or `provided` from Secrets the operator made) issuing
//! proxies' SPIFFE certificates.

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

pub(crate) fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = std::time::SystemTime::now();
    params.not_before = (now - crate::ALLOWED_CLOCK_SKEW).into();
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
        let mut params = CertificateParams::new(dns_names.to_vec()).map_err(TlsError::Generate)?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        self.sign_leaf(params, lifetime)
    }

    /// Signs a leaf usable as both TLS server and client.
    fn sign_leaf(
        &self,
        mut params: CertificateParams,
        lifetime: Duration,
    ) -> Result<CertPair, TlsError> {
        let ca_key = KeyPair::from_pem(&self.key_pem).map_err(TlsError::Generate)?;
        let issuer =
            Issuer::from_ca_cert_pem(&self.cert_pem, ca_key).map_err(TlsError::Generate)?;
        let key = KeyPair::generate().map_err(TlsError::Generate)?;
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

impl CertificateAuthority {
    /// A workload certificate whose only names are URI SANs (SPIFFE and `kuma://` tag URIs),
    /// for both ends of mesh mTLS.
    pub fn issue_workload(
        &self,
        uris: &[String],
        lifetime: Duration,
    ) -> Result<CertPair, TlsError> {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(TlsError::Generate)?;
        for uri in uris {
            let ia5 =
                rcgen::string::Ia5String::try_from(uri.as_str()).map_err(TlsError::Generate)?;
            params.subject_alt_names.push(SanType::URI(ia5));
        }
        self.sign_leaf(params, lifetime)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MeshCaError {
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    #[error("mesh {mesh:?}: {message}")]
    Config { mesh: String, message: String },
    #[error("secret {name:?} in mesh {mesh:?}: {message}")]
    Secret {
        mesh: String,
        name: String,
        message: String,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The CA of a mesh's enabled mTLS backend.
#[derive(Debug, Clone)]
pub struct MeshCa {
    pub backend: String,
    pub ca: CertificateAuthority,
    /// How long proxy certificates live (`dpCert.rotation.expiration`, Kuma's default 24h).
    pub cert_lifetime: Duration,
}

/// Kuma's names for a builtin backend's CA: `<mesh>.ca-builtin-cert-<backend>` and `-key-`.
pub fn builtin_secret_names(mesh: &str, backend: &str) -> (String, String) {
    (
        format!("{mesh}.ca-builtin-cert-{backend}"),
        format!("{mesh}.ca-builtin-key-{backend}"),
    )
}

const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn secret_bytes(r: &model::Resource) -> Result<Vec<u8>, String> {
    let spec: model::specs::secret::SecretSpec =
        serde_json::from_value(r.spec.clone()).map_err(|e| e.to_string())?;
    spec.bytes().map_err(|e| e.to_string())
}

async fn read_secret(
    store: &store::SharedStore,
    mesh: &str,
    name: &str,
) -> Result<Option<Vec<u8>>, MeshCaError> {
    let key = model::ResourceKey::new(model::ResourceType::Secret, mesh, name);
    match store.get(&key).await {
        Ok(r) => secret_bytes(&r)
            .map(Some)
            .map_err(|message| MeshCaError::Secret {
                mesh: mesh.into(),
                name: name.into(),
                message,
            }),
        Err(store::StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A `provided` backend's `conf.cert` / `conf.key`: a Secret, or the PEM inline.
async fn data_source(
    store: &store::SharedStore,
    mesh: &str,
    conf: Option<&serde_json::Value>,
    field: &str,
) -> Result<String, MeshCaError> {
    let config = |message: String| MeshCaError::Config {
        mesh: mesh.into(),
        message,
    };
    let source = conf
        .and_then(|c| c.get(field))
        .ok_or_else(|| config(format!("provided CA backend has no conf.{field}")))?;
    if let Some(name) = source.get("secret").and_then(|s| s.as_str()) {
        let bytes = read_secret(store, mesh, name)
            .await?
            .ok_or_else(|| config(format!("conf.{field}.secret {name:?} does not exist")))?;
        return String::from_utf8(bytes)
            .map_err(|e| config(format!("conf.{field}.secret {name:?}: {e}")));
    }
    if let Some(text) = source.get("inlineString").and_then(|s| s.as_str()) {
        return Ok(text.to_string());
    }
    if let Some(b64) = source.get("inline").and_then(|s| s.as_str()) {
        let secret = model::specs::secret::SecretSpec { data: b64.into() };
        let bytes = secret
            .bytes()
            .map_err(|e| config(format!("conf.{field}.inline: {e}")))?;
        return String::from_utf8(bytes).map_err(|e| config(format!("conf.{field}.inline: {e}")));
    }
    Err(config(format!(
        "conf.{field} needs secret, inline or inlineString"
    )))
}

/// The CA for `mesh`'s enabled backend, creating a builtin one on first use when `generate`
/// (any replica may: the cert secret is created first, so of two racing replicas only one
/// writes a pair). A federated zone passes `false`: every zone must share global's CA, which
/// arrives over KDS. `None` when the mesh has mTLS off.
pub async fn mesh_ca(
    store: &store::SharedStore,
    mesh: &str,
    spec: &model::specs::mesh::MeshSpec,
    generate: bool,
) -> Result<Option<MeshCa>, MeshCaError> {
    use model::specs::mesh::CaType;
    let Some(backend) = enabled_backend(mesh, spec)? else {
        return Ok(None);
    };
    let cert_lifetime = backend
        .dp_cert
        .as_ref()
        .and_then(|d| d.rotation.as_ref())
        .and_then(|r| model::duration::parse_duration(&r.expiration).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_CERT_LIFETIME);
    let ca = match backend.ca_type {
        CaType::Provided => CertificateAuthority {
            cert_pem: data_source(store, mesh, backend.conf.as_ref(), "cert").await?,
            key_pem: data_source(store, mesh, backend.conf.as_ref(), "key").await?,
        },
        CaType::Builtin => {
            builtin_ca(store, mesh, &backend.name, backend.conf.as_ref(), generate).await?
        }
    };
    Ok(Some(MeshCa {
        backend: backend.name.clone(),
        ca,
        cert_lifetime,
    }))
}

/// The mesh's enabled mTLS backend; `None` with mTLS off, an error when `enabledBackend` names
/// none of the backends.
fn enabled_backend<'a>(
    mesh: &str,
    spec: &'a model::specs::mesh::MeshSpec,
) -> Result<Option<&'a model::specs::mesh::CaBackend>, MeshCaError> {
    let Some(mtls) = spec.mtls.as_ref().filter(|m| !m.enabled_backend.is_empty()) else {
        return Ok(None);
    };
    mtls.backends
        .iter()
        .find(|b| b.name == mtls.enabled_backend)
        .map(Some)
        .ok_or_else(|| MeshCaError::Config {
            mesh: mesh.into(),
            message: format!(
                "enabledBackend {:?} is not among the backends",
                mtls.enabled_backend
            ),
        })
}

/// The enabled backend of `mesh` and when its CA certificate expires (Unix seconds), read
/// without creating anything: `None` with mTLS off or a builtin CA not generated yet.
pub async fn mesh_ca_expiry(
    store: &store::SharedStore,
    mesh: &str,
    spec: &model::specs::mesh::MeshSpec,
) -> Result<Option<(String, i64)>, MeshCaError> {
    use model::specs::mesh::CaType;
    // A backend that is not there has no CA to expire (`mesh_ca` reports it).
    let Some(backend) = enabled_backend(mesh, spec).ok().flatten() else {
        return Ok(None);
    };
    let pem = match backend.ca_type {
        CaType::Provided => data_source(store, mesh, backend.conf.as_ref(), "cert")
            .await?
            .into_bytes(),
        CaType::Builtin => {
            let (cert_name, _) = builtin_secret_names(mesh, &backend.name);
            match read_secret(store, mesh, &cert_name).await? {
                Some(pem) => pem,
                None => return Ok(None),
            }
        }
    };
    let unreadable = |message: String| MeshCaError::Config {
        mesh: mesh.into(),
        message: format!(
            "the CA certificate of backend {:?}: {message}",
            backend.name
        ),
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).map_err(|e| unreadable(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| unreadable(e.to_string()))?;
    Ok(Some((
        backend.name.clone(),
        cert.validity().not_after.timestamp(),
    )))
}

async fn builtin_ca(
    store: &store::SharedStore,
    mesh: &str,
    backend: &str,
    conf: Option<&serde_json::Value>,
    generate: bool,
) -> Result<CertificateAuthority, MeshCaError> {
    let (cert_name, key_name) = builtin_secret_names(mesh, backend);
    let text = |name: &str, bytes: Vec<u8>| {
        String::from_utf8(bytes).map_err(|e| MeshCaError::Secret {
            mesh: mesh.into(),
            name: name.into(),
            message: e.to_string(),
        })
    };
    for attempt in 0..50 {
        let cert = read_secret(store, mesh, &cert_name).await?;
        let key = read_secret(store, mesh, &key_name).await?;
        match (cert, key) {
            (Some(cert), Some(key)) => {
                return Ok(CertificateAuthority {
                    cert_pem: text(&cert_name, cert)?,
                    key_pem: text(&key_name, key)?,
                });
            }
            (None, _) if !generate => {
                return Err(MeshCaError::Config {
                    mesh: mesh.into(),
                    message: format!(
                        "the builtin CA {cert_name:?} is generated on global and has not arrived from it yet"
                    ),
                });
            }
            (None, _) if attempt == 0 => {
                let lifetime = conf
                    .and_then(|c| c.pointer("/caCert/expiration"))
                    .and_then(|e| e.as_str())
                    .and_then(|e| model::duration::parse_duration(e).ok())
                    .unwrap_or(DEFAULT_CA_LIFETIME);
                let ca = CertificateAuthority::generate(&format!("{mesh} mesh CA"), lifetime)?;
                let secret = |name: &str, pem: &str| {
                    let spec = serde_json::to_value(model::specs::secret::SecretSpec::from_bytes(
                        pem.as_bytes(),
                    ))
                    .unwrap_or_default();
                    model::Resource::new(model::ResourceType::Secret, mesh, name, spec)
                };
                match store.create(secret(&cert_name, &ca.cert_pem)).await {
                    Ok(_) => {
                        store.create(secret(&key_name, &ca.key_pem)).await?;
                        tracing::info!(%mesh, %backend, "generated the mesh's builtin CA");
                        return Ok(ca);
                    }
                    // Another replica is creating it: read theirs.
                    Err(store::StoreError::AlreadyExists(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(MeshCaError::Secret {
        mesh: mesh.into(),
        name: key_name,
        message: "the CA certificate exists but its key does not".into(),
    })
}

/// Global: makes sure every mesh with an enabled builtin backend has its CA, so zones receive
/// one shared CA instead of each generating its own. Returns the meshes that failed.
pub async fn ensure_builtin_cas(store: &store::SharedStore) -> Result<Vec<String>, MeshCaError> {
    let mut failed = Vec::new();
    let meshes = store
        .list(&store::ListQuery::all(model::ResourceType::Mesh))
        .await?;
    for m in meshes.items {
        let Ok(spec) = serde_json::from_value::<model::specs::mesh::MeshSpec>(m.spec) else {
            continue;
        };
        if let Err(e) = mesh_ca(store, &m.meta.name, &spec, true).await {
            tracing::warn!(mesh = %m.meta.name, error = %e, "could not create the mesh's CA");
            failed.push(m.meta.name);
        }
    }
    Ok(failed)
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

    #[tokio::test]
    async fn builtin_mesh_ca_is_created_once_and_issues_spiffe_certificates() {
        use std::sync::Arc;
        let store: store::SharedStore = Arc::new(store::MemoryStore::new());
        store
            .create(model::Resource::new(
                model::ResourceType::Mesh,
                "",
                "demo",
                serde_json::json!({}),
            ))
            .await
            .unwrap();
        let spec: model::specs::mesh::MeshSpec = serde_json::from_value(serde_json::json!({
            "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin",
                "dpCert": {"rotation": {"expiration": "1h"}}}]}
        }))
        .unwrap();
        assert!(
            mesh_ca_expiry(&store, "demo", &spec)
                .await
                .unwrap()
                .is_none(),
            "reading the expiry creates no CA"
        );
        let first = mesh_ca(&store, "demo", &spec, true).await.unwrap().unwrap();
        let (backend, expires) = mesh_ca_expiry(&store, "demo", &spec)
            .await
            .unwrap()
            .unwrap();
        let ten_years =
            model::Timestamp::now().unix_seconds() + DEFAULT_CA_LIFETIME.as_secs() as i64;
        assert_eq!(backend, "ca-1");
        assert!((ten_years - expires).abs() < 60, "{expires} vs {ten_years}");
        let again = mesh_ca(&store, "demo", &spec, true).await.unwrap().unwrap();
        assert_eq!(first.ca.cert_pem, again.ca.cert_pem);
        assert_eq!(first.cert_lifetime, Duration::from_secs(3600));
        let (cert_name, _) = builtin_secret_names("demo", "ca-1");
        assert_eq!(cert_name, "demo.ca-builtin-cert-ca-1");

        let leaf = first
            .ca
            .issue_workload(
                &["spiffe://demo/web".into(), "kuma://version/v1".into()],
                first.cert_lifetime,
            )
            .unwrap();
        let der =
            <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::from_pem_slice(
                leaf.cert_pem.as_bytes(),
            )
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(sans, ["URI(spiffe://demo/web)", "URI(kuma://version/v1)"]);

        let off: model::specs::mesh::MeshSpec =
            serde_json::from_value(serde_json::json!({})).unwrap();
        assert!(mesh_ca(&store, "demo", &off, true).await.unwrap().is_none());
    }
}
