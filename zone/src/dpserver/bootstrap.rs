//! `POST /bootstrap` and `POST /deregister` on the data plane server. kuma-dp sends its
//! Dataplane (or only its name and mesh) and token; the control plane checks both, registers
//! the Dataplane and answers with the Envoy bootstrap, in Kuma's response shape
//! (`{"bootstrap": <base64 bytes>, "kumaSidecarConfiguration": {...}}`). On a clean shutdown
//! kuma-dp deregisters, so the Dataplane does not linger as Offline.

// Failures are finished HTTP responses, built once per request off any hot path; boxing them
// would only add noise.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use model::specs::dataplane::DataplaneSpec;
use model::{Resource, ResourceKey, ResourceType};
use serde::Deserialize;
use serde_json::{Value, json};
use store::{SharedStore, StoreError};

use crate::dpserver::auth::{
    AuthError, ProxyAuth, ProxyIdentity, TOKEN_REQUIRED, ZONE_TOKEN_REQUIRED, is_zone_proxy,
    proxy_resource_type, tag_values,
};

pub struct BootstrapState {
    pub store: SharedStore,
    pub auth: Arc<dyn ProxyAuth>,
    /// Whether a token is required at all (checked here so kuma-dp fails fast, not Envoy).
    pub tokens_required: bool,
    pub dp_server_port: u16,
    /// PEM of what signed the data plane server's certificate, embedded so Envoy verifies it.
    pub ca_pem: String,
    /// This control plane's zone, written into the ZoneIngress/ZoneEgress its proxies register.
    pub zone: String,
    /// The zone for the computed labels of registered proxies (none on standalone).
    pub label_zone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapRequest {
    #[serde(default)]
    pub mesh: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub proxy_type: String,
    #[serde(default)]
    pub dataplane_token: String,
    /// The Dataplane as YAML or JSON, in Kuma's resource shape.
    #[serde(default)]
    pub dataplane_resource: String,
    #[serde(default)]
    pub version: Value,
    /// kuma-dp's working directory: its pipes and sockets (the access-log pipe) live there.
    #[serde(default)]
    pub workdir: String,
    /// The certificate and key kuma-dp has for the metrics listener (`ProvidedTLS`).
    #[serde(default)]
    pub metrics_resources: MetricsResources,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsResources {
    #[serde(default)]
    pub cert_path: String,
    #[serde(default)]
    pub key_path: String,
}

/// Kuma's error body, with the field at fault.
fn error(status: StatusCode, title: &str, field: &str, reason: impl Into<String>) -> Response {
    let reason = reason.into();
    let mut body =
        json!({"type": "/std-errors", "status": status.as_u16(), "title": title, "detail": reason});
    if !field.is_empty() {
        body["invalid_parameters"] = json!([{"field": field, "reason": reason}]);
    }
    (status, Json(body)).into_response()
}

/// 422 in Kuma's error shape, with every violation as an invalid parameter.
fn invalid(title: &str, e: &model::ValidationError) -> Response {
    let mut body =
        json!({"type": "/std-errors", "status": 422, "title": title, "detail": e.to_string()});
    body["invalid_parameters"] = json!(
        e.violations
            .iter()
            .map(|v| json!({"field": v.field, "reason": v.reason}))
            .collect::<Vec<_>>()
    );
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

fn parse_dataplane(req: &BootstrapRequest) -> Result<Option<Resource>, Response> {
    if req.dataplane_resource.trim().is_empty() {
        return Ok(None);
    }
    let bad = |reason: String| {
        error(
            StatusCode::BAD_REQUEST,
            "Invalid dataplane",
            "dataplaneResource",
            reason,
        )
    };
    let value: Value = serde_saphyr::from_str(&req.dataplane_resource)
        .map_err(|e| bad(format!("is not valid YAML or JSON: {e}")))?;
    let resource = Resource::from_value(value).map_err(|e| bad(e.to_string()))?;
    if resource.kind != ResourceType::Dataplane {
        return Err(bad(format!("must be a Dataplane, not {}", resource.kind)));
    }
    resource
        .validate()
        .map_err(|e| invalid("Invalid dataplane", &e))?;
    Ok(Some(resource))
}

async fn check_token(
    state: &BootstrapState,
    req: &BootstrapRequest,
    spec: Option<&DataplaneSpec>,
) -> Result<(), Response> {
    let token = Some(req.dataplane_token.trim()).filter(|t| !t.is_empty());
    if state.tokens_required && token.is_none() {
        let (title, reason) = if is_zone_proxy(&req.proxy_type) {
            ("Zone token required", ZONE_TOKEN_REQUIRED)
        } else {
            ("Dataplane token required", TOKEN_REQUIRED)
        };
        return Err(error(
            StatusCode::UNAUTHORIZED,
            title,
            "dataplaneToken",
            reason,
        ));
    }
    let proxy_type = if req.proxy_type.is_empty() {
        "dataplane"
    } else {
        &req.proxy_type
    };
    let identity = ProxyIdentity {
        mesh: &req.mesh,
        name: &req.name,
        proxy_type,
        tags: spec.map(tag_values).unwrap_or_default(),
    };
    match state.auth.check(token, &identity).await {
        Ok(()) => Ok(()),
        Err(AuthError::Unauthenticated(reason)) => Err(error(
            StatusCode::UNAUTHORIZED,
            "Token refused",
            "dataplaneToken",
            reason,
        )),
        Err(e @ AuthError::Unavailable(_)) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Could not check the token",
            "",
            e.to_string(),
        )),
    }
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::MeshNotFound(m) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid dataplane",
            "mesh",
            format!("mesh {m:?} does not exist"),
        ),
        StoreError::TooLarge { .. } => error(
            StatusCode::BAD_REQUEST,
            "Invalid dataplane",
            "dataplaneResource",
            e.to_string(),
        ),
        e => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Store unavailable",
            "",
            e.to_string(),
        ),
    }
}

/// The request body, with its mesh, name and proxy type checked.
fn parse_request(body: &[u8]) -> Result<BootstrapRequest, Response> {
    let req: BootstrapRequest = serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "body",
            e.to_string(),
        )
    })?;
    check_names(&req)?;
    Ok(req)
}

fn check_names(req: &BootstrapRequest) -> Result<(), Response> {
    let zone_proxy = is_zone_proxy(&req.proxy_type);
    if zone_proxy && !req.mesh.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "mesh",
            format!("must be empty: a zone {} serves every mesh", req.proxy_type),
        ));
    }
    for (field, value) in [("mesh", &req.mesh), ("name", &req.name)] {
        if zone_proxy && field == "mesh" {
            continue;
        }
        if let Some(reason) = model::name::name_violation(value) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "Invalid request",
                field,
                reason,
            ));
        }
    }
    if !matches!(
        req.proxy_type.as_str(),
        "" | "dataplane" | "ingress" | "egress"
    ) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "proxyType",
            format!(
                "{:?} is not one of dataplane, ingress, egress",
                req.proxy_type
            ),
        ));
    }
    Ok(())
}

pub async fn bootstrap(
    State(state): State<Arc<BootstrapState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let req = match parse_request(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let host = cp_host(&uri, &headers);
    if is_zone_proxy(&req.proxy_type) {
        return zone_proxy_bootstrap(&state, &req, host).await;
    }
    let given = match parse_dataplane(&req) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if let Some(d) = &given
        && (d.meta.name != req.name || d.meta.mesh != req.mesh)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid dataplane",
            "dataplaneResource",
            format!(
                "names {:?} in mesh {:?}, but the request is for {:?} in mesh {:?}",
                d.meta.name, d.meta.mesh, req.name, req.mesh
            ),
        );
    }
    let key = ResourceKey::new(ResourceType::Dataplane, &req.mesh, &req.name);
    let stored = match state.store.get(&key).await {
        Ok(r) => Some(r),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => return store_error(e),
    };
    let Some(dataplane) = given.clone().or(stored) else {
        return error(
            StatusCode::NOT_FOUND,
            "Dataplane not found",
            "name",
            format!(
                "dataplane {:?} in mesh {:?} does not exist; create it first or pass it to kuma-dp with --dataplane-file",
                req.name, req.mesh
            ),
        );
    };
    let spec: DataplaneSpec = match serde_json::from_value(dataplane.spec.clone()) {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid dataplane",
                "dataplaneResource",
                e.to_string(),
            );
        }
    };
    if let Err(r) = check_token(&state, &req, Some(&spec)).await {
        return r;
    }
    if let Some(mut d) = given {
        model::labels::compute(&mut d, state.label_zone.as_deref());
        let (spec, labels) = (d.spec.clone(), d.meta.labels.clone());
        if let Err(e) = store::upsert(state.store.as_ref(), d, |r| {
            r.spec = spec.clone();
            r.meta.labels = labels.clone();
        })
        .await
        {
            return store_error(e);
        }
    }
    let admin_port = spec.networking.admin.as_ref().map_or(9901, |a| a.port);
    let service = spec
        .networking
        .inbound
        .first()
        .map(|i| i.service().to_string())
        .unwrap_or_else(|| "dataplane".into());
    let aggregate = match legacy_aggregate(&state, &req.mesh, &spec).await {
        Ok(a) => a,
        Err(e) => return store_error(e),
    };
    let mut answer = bootstrap_answer(&state, &req, host, service, admin_port);
    answer["kumaSidecarConfiguration"]["metrics"]["aggregate"] = aggregate;
    Json(answer).into_response()
}

/// The applications kuma-dp merges into the Mesh's legacy Prometheus endpoint (Kuma hands
/// them over in the bootstrap answer, so a change reaches a proxy when it restarts, as in
/// Kuma).
async fn legacy_aggregate(
    state: &BootstrapState,
    mesh: &str,
    dataplane: &DataplaneSpec,
) -> Result<Value, StoreError> {
    let key = ResourceKey::new(ResourceType::Mesh, "", mesh);
    let spec: model::specs::mesh::MeshSpec = match state.store.get(&key).await {
        Ok(r) => serde_json::from_value(r.spec).unwrap_or_default(),
        Err(StoreError::NotFound(_)) => return Ok(json!([])),
        Err(e) => return Err(e),
    };
    let Some(Ok(conf)) = spec.prometheus_metrics() else {
        return Ok(json!([]));
    };
    let conf = conf
        .with_dataplane(dataplane.metrics.as_ref())
        .unwrap_or(conf);
    let apps: Vec<Value> = conf
        .enabled_aggregates()
        .map(|a| json!({"name": a.name, "path": a.path, "address": a.address, "port": a.port}))
        .collect();
    Ok(Value::Array(apps))
}

/// Envoy's bootstrap for the proxy `req` names, in Kuma's answer shape.
fn bootstrap_answer(
    state: &BootstrapState,
    req: &BootstrapRequest,
    cp_host: String,
    service: String,
    admin_port: u32,
) -> Value {
    let proxy_type = match req.proxy_type.as_str() {
        "" => "dataplane".to_string(),
        t => t.to_string(),
    };
    let mut metadata = serde_json::Map::new();
    metadata.insert("version".into(), req.version.clone());
    if !req.workdir.is_empty() {
        metadata.insert("workdir".into(), json!(req.workdir));
    }
    // Kuma's node metadata keys, read back by the data plane server.
    let metrics = &req.metrics_resources;
    if !metrics.cert_path.is_empty() && !metrics.key_path.is_empty() {
        metadata.insert("metricsCertPath".into(), json!(metrics.cert_path));
        metadata.insert("metricsKeyPath".into(), json!(metrics.key_path));
    }
    let bootstrap =
        xds::generator::bootstrap::generate(&xds::generator::bootstrap::BootstrapParams {
            mesh: req.mesh.clone(),
            name: req.name.clone(),
            proxy_type: proxy_type.clone(),
            service,
            admin_port,
            cp_host,
            cp_port: u32::from(state.dp_server_port),
            cp_ca_pem: Some(state.ca_pem.clone()),
            token: Some(req.dataplane_token.trim().to_string()).filter(|t| !t.is_empty()),
            metadata,
        });
    tracing::info!(mesh = %req.mesh, name = %req.name, %proxy_type, "bootstrap served");
    let bytes = serde_json::to_vec_pretty(&bootstrap).unwrap_or_default();
    json!({
        "bootstrap": base64::engine::general_purpose::STANDARD.encode(bytes),
        "kumaSidecarConfiguration": {"networking": {"isUsingTransparentProxy": false}, "metrics": {"aggregate": []}}
    })
}

/// The address the proxy reached us on is the one Envoy will dial: HTTP/2 carries it as the
/// request's authority, HTTP/1.1 as the Host header.
fn cp_host(uri: &axum::http::Uri, headers: &HeaderMap) -> String {
    let authority = uri.authority().map(|a| a.host().to_string()).or_else(|| {
        let host = headers.get(axum::http::header::HOST)?.to_str().ok()?;
        let authority: axum::http::uri::Authority = host.parse().ok()?;
        Some(authority.host().to_string())
    });
    authority
        .map(|h| h.trim_matches(['[', ']']).to_string())
        .unwrap_or_else(|| "localhost".into())
}

/// A zone ingress or egress: registers its ZoneIngress/ZoneEgress (stamped with this zone)
/// once its zone token is accepted, and answers its bootstrap.
async fn zone_proxy_bootstrap(
    state: &BootstrapState,
    req: &BootstrapRequest,
    host: String,
) -> Response {
    let kind = proxy_resource_type(&req.proxy_type);
    let title = match kind {
        ResourceType::ZoneIngress => "Invalid zone ingress",
        _ => "Invalid zone egress",
    };
    let bad = |reason: String| error(StatusCode::BAD_REQUEST, title, "dataplaneResource", reason);
    let given = if req.dataplane_resource.trim().is_empty() {
        None
    } else {
        let value: Value = match serde_saphyr::from_str(&req.dataplane_resource) {
            Ok(v) => v,
            Err(e) => return bad(format!("is not valid YAML or JSON: {e}")),
        };
        let mut resource = match Resource::from_value(value) {
            Ok(r) => r,
            Err(e) => return bad(e.to_string()),
        };
        if resource.kind != kind {
            return bad(format!("must be a {kind}, not {}", resource.kind));
        }
        if resource.meta.name != req.name {
            return bad(format!(
                "names {:?}, but the request is for {:?}",
                resource.meta.name, req.name
            ));
        }
        let zone = resource
            .spec
            .get("zone")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !zone.is_empty() && zone != state.zone {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                title,
                "zone",
                format!(
                    "is {zone:?}, but this control plane is zone {:?}",
                    state.zone
                ),
            );
        }
        resource.spec["zone"] = json!(state.zone);
        if let Err(e) = resource.validate() {
            return invalid(title, &e);
        }
        Some(resource)
    };
    let key = ResourceKey::new(kind, "", &req.name);
    let stored = match state.store.get(&key).await {
        Ok(r) => Some(r),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => return store_error(e),
    };
    let Some(resource) = given.clone().or(stored) else {
        return error(
            StatusCode::NOT_FOUND,
            title,
            "name",
            format!(
                "{kind} {:?} does not exist; pass it to kuma-dp with --dataplane-file",
                req.name
            ),
        );
    };
    if let Err(r) = check_token(state, req, None).await {
        return r;
    }
    if let Some(mut r) = given {
        model::labels::compute(&mut r, state.label_zone.as_deref());
        // availableServices is the control plane's to keep; a restarting proxy keeps it.
        let networking = r.spec["networking"].clone();
        let zone = state.zone.clone();
        if let Err(e) = store::upsert(state.store.as_ref(), r, |stored| {
            stored.spec["networking"] = networking.clone();
            stored.spec["zone"] = json!(zone);
        })
        .await
        {
            return store_error(e);
        }
    }
    let admin_port = resource.spec["networking"]["admin"]["port"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or(9901);
    Json(bootstrap_answer(
        state,
        req,
        host,
        req.proxy_type.clone(),
        admin_port,
    ))
    .into_response()
}

pub async fn deregister(
    State(state): State<Arc<BootstrapState>>,
    body: axum::body::Bytes,
) -> Response {
    let req = match parse_request(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let kind = proxy_resource_type(&req.proxy_type);
    let key = ResourceKey::new(kind, &req.mesh, &req.name);
    let stored = match state.store.get(&key).await {
        Ok(r) => r,
        Err(StoreError::NotFound(_)) => return StatusCode::NO_CONTENT.into_response(),
        Err(e) => return store_error(e),
    };
    let spec: Option<DataplaneSpec> = (kind == ResourceType::Dataplane)
        .then(|| serde_json::from_value(stored.spec).unwrap_or_default());
    if let Err(r) = check_token(&state, &req, spec.as_ref()).await {
        return r;
    }
    match state.store.delete(&key).await {
        Ok(()) | Err(StoreError::NotFound(_)) => {
            tracing::info!(mesh = %req.mesh, name = %req.name, "dataplane deregistered");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => store_error(e),
    }
}

pub fn router(state: Arc<BootstrapState>) -> axum::Router {
    axum::Router::new()
        .route("/bootstrap", axum::routing::post(bootstrap))
        .route("/deregister", axum::routing::post(deregister))
        .layer(axum::extract::DefaultBodyLimit::max(1024 * 1024))
        .with_state(state)
}
