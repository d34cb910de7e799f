//! The global control plane's role: serving KDS to zones (with their tokens, versions and
//! enabled switches), ZoneInsights, inspecting zones' proxies through the zones, and the mesh
//! CAs every zone shares. `kuma-cp` wires these as components; nothing here reads the
//! environment or configuration files other than the certificate files it is given.

mod certificate;
pub mod insight;
pub mod inspect;
pub mod kds_server;
pub mod mesh_ca;
pub mod tenants;
pub mod zones;

use std::sync::Arc;
use std::time::Duration;

use kds::inspect::ZoneAdminStreams;
use proto::kuma::mesh::v1alpha1::global_kds_service_server::{
    GlobalKdsService, GlobalKdsServiceServer,
};
use proto::kuma::mesh::v1alpha1::kds_sync_service_server::{KdsSyncService, KdsSyncServiceServer};
use store::SharedStore;
use tokio::sync::watch;
use tonic::transport::{Identity, Server, ServerTlsConfig};

pub use certificate::KDS_TLS_SECRET;

/// How often an open zone subscription is written to its ZoneInsight (Kuma's default).
const ZONE_INSIGHT_FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// The health-check interval global asks zones for.
const ZONE_HEALTH_INTERVAL: Duration = Duration::from_secs(10);

/// How global serves KDS (`multizone.global.kds` in kuma-cp's configuration).
#[derive(Debug, Clone)]
pub struct KdsServerConfig {
    pub port: u16,
    pub max_message: usize,
    pub tls: bool,
    /// Certificate and key files; empty to use (or generate) the one kept in the store.
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// Zones must present a zone token signed by global.
    pub zone_tokens: bool,
    /// Where the streams' figures go on `/metrics` (`None`: nowhere).
    pub metrics: Option<kds::metrics::KdsMetrics>,
}

/// Who this global replica is: the name its KDS certificate carries, its instance id and the
/// version zones are compared with.
#[derive(Debug, Clone)]
pub struct GlobalIdentity {
    pub hostname: String,
    pub instance_id: String,
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GlobalError {
    #[error(
        "multizone.global.kds.tlsCertFile/tlsKeyFile (KUMA_MULTIZONE_GLOBAL_KDS_TLS_CERT_FILE/_KEY_FILE)"
    )]
    CertificateFiles(#[source] security::tls::TlsError),
    #[error("generating the KDS certificate")]
    GenerateCertificate(#[source] security::tls::TlsError),
    #[error("the KDS certificate kept in GlobalSecret {KDS_TLS_SECRET}")]
    StoredCertificate(#[source] model::specs::secret::SecretError),
    #[error("encoding the KDS certificate")]
    EncodeCertificate(#[source] serde_json::Error),
    #[error("{0} the KDS certificate")]
    Store(&'static str, #[source] store::StoreError),
    #[error("multizone.global.kds TLS")]
    Tls(#[source] tonic::transport::Error),
    #[error("KDS server")]
    Serve(#[source] tonic::transport::Error),
}

/// Serves KDS to zones on `listener` until `shutdown`; every global replica runs it.
pub async fn serve_kds(
    config: &KdsServerConfig,
    store: SharedStore,
    listener: tokio::net::TcpListener,
    identity: &GlobalIdentity,
    inspect: Arc<ZoneAdminStreams>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), GlobalError> {
    if !config.zone_tokens {
        tracing::warn!(
            "multizone.global.kds.auth.type is none: any zone that reaches the KDS port is accepted"
        );
    }
    let service = kds_service(config, store.clone(), identity, inspect);
    serve_kds_service(config, &store, listener, identity, service, shutdown).await
}

/// One global's KDS (a hosted manager has one per control plane): its zones' switches, tokens,
/// insights and the change feed every zone's stream shares.
pub fn kds_service(
    config: &KdsServerConfig,
    store: SharedStore,
    identity: &GlobalIdentity,
    inspect: Arc<ZoneAdminStreams>,
) -> Arc<kds_server::GlobalKds> {
    let zones = Arc::new(zones::ZoneSwitches::default());
    tokio::spawn(zones.clone().follow(store.clone()));
    let zone_tokens = config
        .zone_tokens
        .then(|| Arc::new(security::zone::zone_signing_keys(store.clone())));
    Arc::new(kds_server::GlobalKds {
        store: store.clone(),
        zones,
        max_message: config.max_message,
        health_interval: ZONE_HEALTH_INTERVAL,
        zone_tokens,
        version: identity.version.clone(),
        insights: Arc::new(insight::ZoneInsights::new(
            store.clone(),
            identity.instance_id.clone(),
            ZONE_INSIGHT_FLUSH_INTERVAL,
            config.metrics.clone(),
        )),
        to_zones: Arc::new(kds_server::zone_wire_forms()),
        inspect,
        admission: Default::default(),
        to_zones_changes: kds::sync::ChangeFeed::follow(&store, &kds::rules::zone_subscriptions()),
    })
}

/// Serves `service` (one global's KDS, or a hosted manager's, which hands each stream to its
/// control plane's) on `listener` until `shutdown`. `store` keeps the generated certificate.
pub async fn serve_kds_service<S>(
    config: &KdsServerConfig,
    store: &SharedStore,
    listener: tokio::net::TcpListener,
    identity: &GlobalIdentity,
    service: Arc<S>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), GlobalError>
where
    S: KdsSyncService + GlobalKdsService,
{
    let max = config.max_message;
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(15)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if config.tls {
        let pair = certificate::server_cert(config, store, &identity.hostname).await?;
        builder = builder
            .tls_config(
                ServerTlsConfig::new()
                    .identity(Identity::from_pem(pair.cert_pem, pair.key_pem))
                    .timeout(security::tls::HANDSHAKE_TIMEOUT),
            )
            .map_err(GlobalError::Tls)?;
    }
    tracing::info!(
        port = config.port,
        tls = config.tls,
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
            // Without TCP_NODELAY a response larger than a segment waits for the peer's
            // delayed ACK (about 40 ms) before its last segment leaves; the builder's TCP
            // options do not reach an incoming stream we hand it, so they are set here.
            tonic::transport::server::TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(30))),
            async move {
                let _ = shutdown.wait_for(|s| *s).await;
            },
        )
        .await
        .map_err(GlobalError::Serve)
}
