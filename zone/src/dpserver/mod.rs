//! The data plane server on 5678: the bootstrap endpoint kuma-dp calls, Envoy's delta ADS with
//! per-proxy configuration recomputed on store events, SDS certificates from the mesh CA,
//! kuma-dp's admin streams, and DataplaneInsights.

pub mod admin;
pub mod ads;
pub mod auth;
pub mod bootstrap;
pub mod cache;
pub mod encoded;
pub mod insight;
pub mod metrics;
pub mod snapshot;

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use tokio::sync::watch;

pub struct DpServerConfig {
    pub port: u16,
    pub cert_pem: String,
    pub key_pem: String,
    /// What signed `cert_pem`: embedded in bootstraps so Envoy verifies this server.
    pub ca_pem: String,
    /// `false` only when the operator switched dataplane authentication off.
    pub tokens_required: bool,
    pub cp_instance_id: String,
    /// This control plane's zone name (empty on a standalone without one).
    pub zone: String,
    /// A zone connected to global: zone tokens are checked with the public keys global
    /// published, not with keys of its own.
    /// The zone named in the labels of what proxies register (`kuma.io/zone`): this zone on a
    /// zone control plane; none on standalone, whose resources are labelled when it joins a
    /// federation under its zone name.
    pub label_zone: Option<String>,
    pub federated: bool,
    /// Where the proxies' streams' figures go on `/metrics` (`None`: nowhere).
    pub metrics: Option<metrics::XdsMetrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum DpServerError {
    #[error("TLS: {0}")]
    Tls(#[source] tonic::transport::Error),
    #[error("serving: {0}")]
    Serve(#[source] tonic::transport::Error),
}

/// Serves bootstrap (HTTP/1.1 and HTTP/2) and ADS (gRPC) on one TLS port until `shutdown`,
/// with configuration from `view` (the zone's snapshot cache).
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: store::SharedStore,
    view: watch::Receiver<cache::ZoneView>,
    config: DpServerConfig,
    tunnels: Arc<admin::AdminTunnels>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), DpServerError> {
    let auth: Arc<dyn auth::ProxyAuth> = if config.tokens_required {
        let zone_keys = if config.federated {
            security::zone::zone_public_keys(store.clone())
        } else {
            security::zone::zone_signing_keys(store.clone())
        };
        Arc::new(auth::TokenAuth {
            store: store.clone(),
            zone: config.zone.clone(),
            zone_keys: Some(Arc::new(zone_keys)),
        })
    } else {
        tracing::warn!(
            "dpServer.authn.dpProxy.type is none: any client reaching the data plane server gets any proxy's configuration and certificate"
        );
        Arc::new(auth::NoAuth)
    };
    let ads = ads::AdsServer::new(
        store.clone(),
        auth.clone(),
        config.cp_instance_id.clone(),
        view,
    )
    .metered(config.metrics.clone())
    .stopping(shutdown.clone());
    let admin = admin::AdminService {
        store: store.clone(),
        auth: auth.clone(),
        tunnels: tunnels.clone(),
    };
    let bootstrap = bootstrap::router(Arc::new(bootstrap::BootstrapState {
        store,
        auth,
        tokens_required: config.tokens_required,
        dp_server_port: config.port,
        ca_pem: config.ca_pem.clone(),
        zone: config.zone.clone(),
        label_zone: config.label_zone.clone(),
    }))
    .layer(
        tower::ServiceBuilder::new()
            .layer(axum::error_handling::HandleErrorLayer::new(|_| async {
                axum::http::StatusCode::REQUEST_TIMEOUT
            }))
            .timeout(Duration::from_secs(30)),
    );
    let routes = tonic::service::Routes::from(bootstrap)
        .add_service(
            AggregatedDiscoveryServiceServer::new(ads)
                .max_decoding_message_size(4 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
        )
        .add_service(
            proto::kuma::mesh::v1alpha1::dataplane_admin_service_server::DataplaneAdminServiceServer::new(admin)
                // Config dumps of large meshes are big; requests are small.
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024),
        );
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            &config.cert_pem,
            &config.key_pem,
        ))
        .timeout(security::tls::HANDSHAKE_TIMEOUT);
    tracing::info!(
        port = config.port,
        "data plane server listening (bootstrap, ADS)"
    );
    tonic::transport::Server::builder()
        .tls_config(tls)
        .map_err(DpServerError::Tls)?
        .accept_http1(true)
        .http2_keepalive_interval(Some(Duration::from_secs(15)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            // Without TCP_NODELAY a response larger than a segment waits for the peer's
            // delayed ACK (about 40 ms) before its last segment leaves; the builder's TCP
            // options do not reach an incoming stream we hand it, so they are set here.
            tonic::transport::server::TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(30))),
            async move {
                let _ = shutdown.wait_for(|s| *s).await;
                // ADS streams end on their own (`AdsServer::stopping`); admin tunnels here.
                tunnels.close_all();
            },
        )
        .await
        .map_err(DpServerError::Serve)
}
