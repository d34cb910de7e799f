//! A hosted manager's management API (`/v0/mesh/control-planes`, Konnect's paths and shapes):
//! control planes are created, listed and deleted by the manager's admins, who also issue each
//! one's zone tokens and personal access tokens. Each control plane's own Kuma API is served
//! under `/v0/mesh/control-planes/{id}/api`, where only that control plane's tokens count.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::SharedState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::resources::read_body;

const TITLE: &str = "Control plane";
/// Kuma's admin group: a personal access token without groups administers its control plane.
const ADMIN_GROUP: &str = "mesh-system:admin";

/// Why a management call failed, as the manager reports it.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("control plane {0:?} not found")]
    NotFound(String),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("the control planes could not be read or written")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A control plane's signing keys, for the tokens the manager issues for it.
pub struct ControlPlaneKeys {
    pub user: Arc<security::SigningKeys>,
    pub zone: Arc<security::SigningKeys>,
}

/// The manager's control planes, as the API needs them (kuma-cp implements it over
/// `global::tenants`).
#[async_trait]
pub trait ControlPlanes: Send + Sync + 'static {
    /// Creates one; answers its JSON form.
    async fn create(
        &self,
        name: &str,
        description: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Value, ControlPlaneError>;
    async fn list(&self) -> Result<Vec<Value>, ControlPlaneError>;
    async fn get(&self, id: &str) -> Result<Value, ControlPlaneError>;
    /// Deletes it with all its resources; its zones are disconnected.
    async fn delete(&self, id: &str) -> Result<(), ControlPlaneError>;
    /// Its Kuma API (served by this replica from then on, if it was not yet).
    async fn api(&self, id: &str) -> Result<axum::Router, ControlPlaneError>;
    async fn keys(&self, id: &str) -> Result<ControlPlaneKeys, ControlPlaneError>;
}

impl From<ControlPlaneError> for ApiError {
    fn from(e: ControlPlaneError) -> Self {
        match e {
            ControlPlaneError::NotFound(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "Not found",
                format!("control plane {id:?} not found"),
            ),
            ControlPlaneError::Invalid { field, reason } => {
                ApiError::bad_request("Invalid control plane", field, reason)
            }
            ControlPlaneError::Unavailable(source) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                TITLE,
                model::error_chain(source.as_ref()),
            ),
        }
    }
}

fn manager(state: &SharedState) -> Result<&Arc<dyn ControlPlanes>, ApiError> {
    state.control_planes.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "Not found",
            "this control plane is not a hosted manager (multitenancy.enabled is off)",
        )
    })
}

fn admin(caller: &Caller) -> Result<(), ApiError> {
    match caller.user.is_admin() {
        true => Ok(()),
        false => Err(ApiError::forbidden(format!(
            "user {:?} cannot manage control planes",
            caller.user.name
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

pub async fn create(
    State(state): State<SharedState>,
    caller: axum::Extension<Caller>,
    body: Body,
) -> Result<Response, ApiError> {
    let manager = manager(&state)?;
    admin(&caller)?;
    let bytes = read_body(body, "Invalid control plane").await?;
    let req: CreateRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("Invalid control plane", "body", e.to_string()))?;
    let cp = manager
        .create(&req.name, &req.description, req.labels)
        .await?;
    Ok((StatusCode::CREATED, Json(cp)).into_response())
}

pub async fn list(
    State(state): State<SharedState>,
    caller: axum::Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let manager = manager(&state)?;
    admin(&caller)?;
    let all = manager.list().await?;
    let total = all.len();
    Ok(Json(json!({
        "data": all,
        "meta": {"page": {"number": 1, "size": total, "total": total}},
    })))
}

pub async fn get(
    State(state): State<SharedState>,
    caller: axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let manager = manager(&state)?;
    admin(&caller)?;
    Ok(Json(manager.get(&id).await?))
}

pub async fn delete(
    State(state): State<SharedState>,
    caller: axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let manager = manager(&state)?;
    admin(&caller)?;
    manager.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The control plane's keys, for a manager's admin.
async fn admin_keys(
    state: &SharedState,
    caller: &Caller,
    id: &str,
) -> Result<ControlPlaneKeys, ApiError> {
    let manager = manager(state)?;
    admin(caller)?;
    Ok(manager.keys(id).await?)
}

/// `{"zone", "scope", "validFor"}` as `/tokens/zone` takes it; the token names the control
/// plane, so the manager's KDS endpoint hands the zone to it.
pub async fn zone_token(
    State(state): State<SharedState>,
    caller: axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let keys = admin_keys(&state, &caller, &id).await?;
    crate::tokens::zone_token(&keys.zone, &id, &caller, body).await
}

/// `{"name", "groups", "validFor"}` as `/tokens/user` takes it: a user token of the control
/// plane, admin of it unless groups are given.
pub async fn personal_access_token(
    State(state): State<SharedState>,
    caller: axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let keys = admin_keys(&state, &caller, &id).await?;
    crate::tokens::user_token(&keys.user, &caller, body, &[ADMIN_GROUP]).await
}

fn not_this_control_planes() -> ApiError {
    ApiError::unauthenticated(
        "a valid token of this control plane is needed: pass 'Authorization: Bearer <token>'",
    )
}

/// `/v0/mesh/control-planes/{id}/api/...`: the control plane's own API, which authenticates
/// the caller with the control plane's own tokens. The manager's admin credentials do not
/// reach it, so this path is outside the manager's authentication.
pub async fn control_plane_api(
    State(state): State<SharedState>,
    Path(params): Path<BTreeMap<String, String>>,
    req: Request,
) -> Result<Response, ApiError> {
    let manager = manager(&state)?;
    let id = params.get("id").cloned().unwrap_or_default();
    let api = match manager.api(&id).await {
        Ok(api) => api,
        // The answer a token of another control plane gets from an existing one: a caller
        // learns nothing of control planes it has no token for.
        Err(ControlPlaneError::NotFound(_)) => return Err(not_this_control_planes()),
        Err(e) => return Err(e.into()),
    };
    let rest = params.get("rest").map(String::as_str).unwrap_or("");
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let uri: axum::http::Uri = format!("/{rest}{query}").parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            format!("path /{rest} is not valid"),
        )
    })?;
    // A fresh request: the manager's route parameters must not reach the control plane's
    // routes. Only who is calling goes along.
    let peer = req.extensions().get::<crate::serve::Peer>().copied();
    // Links the control plane's API writes (a list's `next`) keep the full path.
    let original = req
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .cloned();
    let (parts, body) = req.into_parts();
    let mut inner = Request::new(body);
    *inner.method_mut() = parts.method;
    *inner.uri_mut() = uri;
    *inner.version_mut() = parts.version;
    *inner.headers_mut() = parts.headers;
    if let Some(peer) = peer {
        inner.extensions_mut().insert(peer);
    }
    if let Some(original) = original {
        inner.extensions_mut().insert(original);
    }
    // A Router never fails: its errors are responses.
    let resp = match api.oneshot(inner).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    // Every refusal reads the same, so it tells nothing of why (an unknown control plane,
    // another one's token, none).
    match resp.status() {
        StatusCode::UNAUTHORIZED => Err(not_this_control_planes()),
        _ => Ok(resp),
    }
}
