//! Multi-zone wiring: the KDS server on a global control plane, the KDS client on a zone.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use api::inspect::{AdminAnswer, ProxyAdmin, ProxyRef, SharedProxyAdmin};
use kds::global::{GlobalKds, ZoneSwitches};
use kds::inspect::{AdminCall, AdminOp, ZoneAdminStreams, ZoneProxyAdmin};
use model::specs::secret::SecretSpec;
use model::{Resource, ResourceKey, ResourceType};
use proto::kuma::mesh::v1alpha1::global_kds_service_server::GlobalKdsServiceServer;
use proto::kuma::mesh::v1alpha1::kds_sync_service_server::KdsSyncServiceServer;
use security::tls::CertPair;
use store::{SharedStore, StoreError};
use tokio::sync::watch;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::VERSION;
use crate::config::Config;

/// GlobalSecret holding the generated KDS server certificate, so restarts keep it.
pub const KDS_TLS_SECRET: &str = "kds-server-tls";

/// The KDS server's certificate: from files, or generated once and kept in the store.
async fn server_cert(config: &Config, store: &SharedStore, hostname: &str) -> Result<CertPair> {
    let kds = &config.multizone.global.kds;
    if !kds.tls_cert_file.is_empty() {
        return security::tls::load_pair(&kds.tls_cert_file, &kds.tls_key_file)
            .context("multizone.global.kds.tlsCertFile/tlsKeyFile (KUMA_MULTIZONE_GLOBAL_KDS_TLS_CERT_FILE/_KEY_FILE)");
    }
    let key = ResourceKey::new(ResourceType::GlobalSecret, "", KDS_TLS_SECRET);
    loop {
        match store.get(&key).await {
            Ok(r) => {
                let spec: SecretSpec =
                    serde_json::from_value(r.spec).context("KDS certificate secret")?;
                return serde_json::from_slice(&spec.bytes().context("KDS certificate secret")?)
                    .context("KDS certificate secret");
            }
            Err(StoreError::NotFound(_)) => {
                let names = vec![
                    "localhost".to_string(),
                    hostname.to_string(),
                    "127.0.0.1".to_string(),
                ];
                let pair =
                    security::tls::self_signed(&names).context("generating the KDS certificate")?;
                let spec =
                    serde_json::to_value(SecretSpec::from_bytes(&serde_json::to_vec(&pair)?))?;
                match store
                    .create(Resource::new(
                        ResourceType::GlobalSecret,
                        "",
                        KDS_TLS_SECRET,
                        spec,
                    ))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(
                            "generated a self-signed KDS certificate (GlobalSecret {KDS_TLS_SECRET}); zones need it as their root CA"
                        );
                        return Ok(pair);
                    }
                    Err(StoreError::AlreadyExists(_)) => continue,
                    Err(e) => return Err(e).context("storing the KDS certificate"),
                }
            }
            Err(e) => return Err(e).context("reading the KDS certificate"),
        }
    }
}

/// How often an open zone subscription is written to its ZoneInsight (Kuma's default).
const ZONE_INSIGHT_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// Who this global replica is: the name its KDS certificate carries and its instance id.
pub struct GlobalIdentity<'a> {
    pub hostname: &'a str,
    pub instance_id: &'a str,
}

pub async fn serve_global(
    config: &Config,
    store: SharedStore,
    listener: tokio::net::TcpListener,
    identity: GlobalIdentity<'_>,
    inspect: Arc<ZoneAdminStreams>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let (hostname, instance_id) = (identity.hostname, identity.instance_id);
    let kds_config = &config.multizone.global.kds;
    let zones = Arc::new(ZoneSwitches::default());
    tokio::spawn(zones.clone().follow(store.clone()));
    let zone_tokens = (kds_config.auth.auth_type == "zoneToken")
        .then(|| Arc::new(security::zone::zone_signing_keys(store.clone())));
    if zone_tokens.is_none() {
        tracing::warn!(
            "multizone.global.kds.auth.type is none: any zone that reaches the KDS port is accepted"
        );
    }
    let service = Arc::new(GlobalKds {
        store: store.clone(),
        zones,
        max_message: kds_config.max_msg_size,
        health_interval: Duration::from_secs(10),
        zone_tokens,
        version: VERSION.into(),
        insights: Arc::new(kds::insight::ZoneInsights::new(
            store.clone(),
            instance_id.to_string(),
            ZONE_INSIGHT_FLUSH_INTERVAL,
        )),
        to_zones: Arc::new(kds::global::zone_wire_forms()),
        inspect,
    });
    let max = kds_config.max_msg_size;
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(15)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_keepalive(Some(Duration::from_secs(30)));
    if kds_config.tls_enabled {
        let pair = server_cert(config, &store, hostname).await?;
        builder = builder
            .tls_config(
                ServerTlsConfig::new().identity(Identity::from_pem(pair.cert_pem, pair.key_pem)),
            )
            .context("multizone.global.kds TLS")?;
    }
    tracing::info!(
        port = kds_config.grpc_port,
        tls = kds_config.tls_enabled,
        "KDS server listening for zones"
    );
    builder
        .add_service(
            KdsSyncServiceServer::from_arc(service.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            GlobalKdsServiceServer::from_arc(service)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async move {
                let _ = shutdown.wait_for(|s| *s).await;
            },
        )
        .await
        .context("KDS server")
}

pub fn zone_client_config(config: &Config) -> Result<kds::zone::ZoneClientConfig> {
    let zone = &config.multizone.zone;
    if zone.kds.tls_skip_verify && zone.global_address.starts_with("grpcs://") {
        tracing::warn!(
            "multizone.zone.kds.tlsSkipVerify: global's certificate is not verified; the KDS connection is encrypted but global is not authenticated"
        );
    }
    let root_ca_pem = match zone.kds.root_ca_file.as_str() {
        "" => None,
        path => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("multizone.zone.kds.rootCaFile (KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE): reading {path}"))?,
        ),
    };
    Ok(kds::zone::ZoneClientConfig {
        zone: zone.name.clone(),
        global_address: zone.global_address.clone(),
        cp_version: VERSION.into(),
        max_message: config.multizone.global.kds.max_msg_size,
        root_ca_pem,
        tls_skip_verify: zone.kds.tls_skip_verify,
        token: match (&zone.kds.auth.cp_token_path, &zone.kds.auth.cp_token_inline) {
            (path, _) if !path.is_empty() => Some(kds::zone::ZoneToken::File(path.clone())),
            (_, inline) if !inline.is_empty() => Some(kds::zone::ZoneToken::Inline(inline.clone())),
            _ => None,
        },
    })
}

/// How long global waits for a zone to answer an inspect request: the zone may itself forward
/// to the replica holding the proxy, which waits [`api::inspect::TIMEOUT`] for kuma-dp.
const ZONE_INSPECT_TIMEOUT: Duration = Duration::from_secs(25);

/// Global's way to proxies: through the inspect streams of the zone a proxy's resource came
/// from, naming it as that zone does.
pub struct ZoneProxies {
    pub store: SharedStore,
    pub streams: Arc<ZoneAdminStreams>,
}

#[async_trait::async_trait]
impl ProxyAdmin for ZoneProxies {
    async fn get(
        &self,
        proxy: ProxyRef<'_>,
        path: &str,
        query: &str,
    ) -> Result<AdminAnswer, String> {
        let op = AdminOp::from_path(path).ok_or_else(|| format!("{path:?} cannot be inspected"))?;
        let key = ResourceKey::new(proxy.kind, proxy.mesh, proxy.name);
        let r = self.store.get(&key).await.map_err(|e| e.to_string())?;
        let zone = kds::rules::zone_of(&r)
            .ok_or_else(|| format!("{} {:?} came from no zone", proxy.kind, proxy.name))?;
        let call = AdminCall {
            kind: proxy.kind,
            mesh: proxy.mesh.to_string(),
            name: r
                .label(model::labels::DISPLAY_NAME)
                .unwrap_or(&r.meta.name)
                .to_string(),
            include_eds: query.split('&').any(|p| p == "include_eds"),
        };
        let body = self
            .streams
            .call(zone, op, call, ZONE_INSPECT_TIMEOUT)
            .await?;
        let content_type = match op {
            AdminOp::ConfigDump => "application/json",
            AdminOp::Stats | AdminOp::Clusters => "text/plain; charset=utf-8",
        };
        Ok(AdminAnswer {
            status: 200,
            content_type: content_type.into(),
            body,
        })
    }
}

/// A zone's answer to global's inspect requests: its own way to the proxy (the admin stream
/// it holds, or the replica that holds it). An Envoy answer other than 200 is an error.
pub fn zone_proxy_admin(admin: SharedProxyAdmin) -> ZoneProxyAdmin {
    Arc::new(move |op: AdminOp, call: AdminCall| {
        let admin = admin.clone();
        Box::pin(async move {
            let proxy = ProxyRef {
                kind: call.kind,
                mesh: &call.mesh,
                name: &call.name,
            };
            let answer = admin.get(proxy, op.path(), call.query()).await?;
            if answer.status == 200 {
                Ok(answer.body)
            } else {
                Err(format!(
                    "Envoy admin answered {}: {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                ))
            }
        })
    })
}
