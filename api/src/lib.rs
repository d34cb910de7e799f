//! The HTTP API on 5681/5682 (Kuma's routes and shapes), the GUI at `/gui`, and the
//! diagnostics server on 5680.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};
use prometheus_client::registry::Registry;
use security::SigningKeys;
use store::SharedStore;
use tracing::Instrument;

pub mod auth;
pub mod control_planes;
pub mod diagnostics;
pub mod error;
pub mod events;
pub mod federation;
mod gui;
pub mod inspect;
pub mod mesh_defaults;
mod metrics;
mod openapi;
mod overview;
mod paging;
mod resources;
mod rules;
pub mod serve;
mod service_insights;
mod tokens;

pub use auth::AuthConfig;
pub use error::ApiError;
pub use metrics::ApiMetrics;
pub use serve::{Peer, serve_http, serve_https};
// What a PUT body goes through; public for the fuzz targets (fuzz/), not an API.
#[doc(hidden)]
pub use resources::decode_put_body;

/// Largest request body the API reads. Big enough for a MeshProxyPatch full of Envoy config.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// How long one request may take end to end.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What `GET /` reports about this control plane.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    pub hostname: String,
    pub tagline: String,
    pub product: String,
    pub version: String,
    pub instance_id: String,
    pub cluster_id: String,
    pub gui: String,
    pub based_on_kuma: String,
    /// `standalone`, `zone` or `global`: kumactl and the GUI show it.
    pub mode: String,
}

pub struct ApiState {
    pub store: SharedStore,
    pub user_keys: Arc<SigningKeys>,
    pub zone_keys: Arc<SigningKeys>,
    pub info: ServerInfo,
    /// The effective configuration, secrets already redacted.
    pub config: serde_json::Value,
    pub auth: AuthConfig,
    pub metrics: ApiMetrics,
    pub federation: federation::Federation,
    /// This zone's name on a zone control plane (`None` on global and standalone): resources
    /// written here are labelled as this zone's. A standalone's are labelled when it joins a
    /// federation, under the zone name it joins with.
    pub local_zone: Option<String>,
    /// Kuma's check that, on a zone under a global, a zone's own policies carry
    /// `kuma.io/origin: zone` (`KUMA_MULTIZONE_ZONE_DISABLE_ORIGIN_LABEL_VALIDATION` turns it
    /// off).
    pub origin_label_validation: bool,
    /// Reaches proxies' Envoy admin; `None` where no proxies connect (global).
    pub proxy_admin: Option<kds::inspect::SharedProxyAdmin>,
    /// The hosted manager's control plane this API serves (its zone tokens name it); empty
    /// for a control plane of its own.
    pub control_plane: String,
    /// A hosted manager's control planes (`/v0/mesh/control-planes`); `None` elsewhere.
    pub control_planes: Option<Arc<dyn control_planes::ControlPlanes>>,
}

pub type SharedState = Arc<ApiState>;

pub fn router(state: SharedState) -> Router {
    // A hosted manager's control planes authenticate their own callers.
    let control_plane_apis = Router::new()
        .route(
            "/v0/mesh/control-planes/{id}/api",
            any(control_planes::control_plane_api),
        )
        .route(
            "/v0/mesh/control-planes/{id}/api/",
            any(control_planes::control_plane_api),
        )
        .route(
            "/v0/mesh/control-planes/{id}/api/{*rest}",
            any(control_planes::control_plane_api),
        )
        .with_state(state.clone());
    let main = Router::new()
        .route("/", get(resources::index))
        .route("/config", get(resources::config))
        .route("/_resources", get(resources::resource_types))
        .route("/who-am-i", get(auth::who_am_i))
        .route("/tokens/user", post(tokens::issue_user_token))
        .route("/tokens/zone", post(tokens::issue_zone_token))
        .route("/tokens/dataplane", post(tokens::issue_dataplane_token))
        // Kuma's legacy path for dataplane tokens, still used by old kumactl versions.
        .route("/tokens", post(tokens::issue_dataplane_token))
        .route("/mesh-insights", get(overview::mesh_insights))
        .route("/global-insight", get(overview::global_insight))
        .route("/control-planes", get(overview::control_planes))
        .route("/events", get(events::stream))
        .route(
            "/v0/mesh/control-planes",
            get(control_planes::list).post(control_planes::create),
        )
        .route(
            "/v0/mesh/control-planes/{id}",
            get(control_planes::get).delete(control_planes::delete),
        )
        .route(
            "/v0/mesh/control-planes/{id}/zone-tokens",
            post(control_planes::zone_token),
        )
        .route(
            "/v0/mesh/control-planes/{id}/personal-access-tokens",
            post(control_planes::personal_access_token),
        )
        .route("/mesh-insights/{mesh}", get(overview::mesh_insight))
        .route("/openapi.yaml", get(openapi::yaml))
        .route("/openapi.json", get(openapi::json))
        .route("/gui", get(gui::page))
        .route("/gui/", get(gui::page))
        .route("/gui/assets/{name}", get(gui::asset))
        .route("/gui/{*page}", get(gui::page))
        .route("/{plural}/{name}/xds", get(inspect::config_dump))
        .route("/{plural}/{name}/stats", get(inspect::stats))
        .route("/{plural}/{name}/clusters", get(inspect::clusters))
        .route("/{plural}", get(resources::list_top))
        .route("/{plural}/_overview", get(resources::list_overview_top))
        .route(
            "/{plural}/{name}/_overview",
            get(resources::get_overview_top),
        )
        .route(
            "/{plural}/{name}",
            get(resources::get_top)
                .put(resources::put_top)
                .delete(resources::delete_top),
        )
        .route(
            "/meshes/{mesh}/service-insights",
            get(service_insights::list),
        )
        .route(
            "/meshes/{mesh}/service-insights/{service}",
            get(service_insights::get),
        )
        .route("/meshes/{mesh}/{plural}", get(resources::list_in_mesh))
        .route(
            "/meshes/{mesh}/{plural}/_overview",
            get(resources::list_overview_in_mesh),
        )
        .route(
            "/meshes/{mesh}/{plural}/{name}",
            get(resources::get_in_mesh)
                .put(resources::put_in_mesh)
                .delete(resources::delete_in_mesh),
        )
        .route(
            "/meshes/{mesh}/dataplanes/{name}/xds",
            get(inspect::config_dump),
        )
        .route(
            "/meshes/{mesh}/dataplanes/{name}/stats",
            get(inspect::stats),
        )
        .route(
            "/meshes/{mesh}/dataplanes/{name}/clusters",
            get(inspect::clusters),
        )
        .route(
            "/meshes/{mesh}/dataplanes/{name}/_rules",
            get(rules::dataplane_rules),
        )
        .route(
            "/meshes/{mesh}/dataplanes/{name}/_policies",
            get(rules::dataplane_policies),
        )
        .route(
            "/meshes/{mesh}/{plural}/{name}/_resources/dataplanes",
            get(rules::policy_dataplanes),
        )
        .route(
            "/meshes/{mesh}/{plural}/{name}/_overview",
            get(resources::get_overview_in_mesh),
        )
        .fallback(resources::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .with_state(state);
    control_plane_apis.merge(main)
}

async fn record_metrics(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    // One span per request, continuing the caller's trace (W3C `traceparent`) when it sends one.
    let span = tracing::info_span!(
        "api request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    if let Some(parent) = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        store::trace::continue_from(&span, parent);
    }
    let start = tokio::time::Instant::now();
    let resp = with_timeout(REQUEST_TIMEOUT, next.run(req))
        .instrument(span.clone())
        .await;
    span.record("http.response.status_code", resp.status().as_u16());
    state
        .metrics
        .observe(&method, &route, resp.status().as_u16(), start.elapsed());
    resp
}

/// Answers 408 when a request outlives `limit` (a slow store, a stuck handler).
pub(crate) async fn with_timeout(
    limit: Duration,
    fut: impl std::future::Future<Output = Response>,
) -> Response {
    match tokio::time::timeout(limit, fut).await {
        Ok(resp) => resp,
        Err(_) => axum::response::IntoResponse::into_response(ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "Request timeout",
            format!("the request did not complete within {limit:?}"),
        )),
    }
}

/// Registers the API's metrics; call once per process.
pub fn api_metrics(registry: &mut Registry) -> ApiMetrics {
    ApiMetrics::register(registry)
}

/// True when the peer is on this host.
pub fn is_local(peer: Option<SocketAddr>) -> bool {
    peer.is_some_and(|p| match p.ip() {
        std::net::IpAddr::V4(ip) => ip.is_loopback(),
        std::net::IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    })
}
