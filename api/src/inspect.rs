//! `GET /meshes/{mesh}/dataplanes/{name}/xds|stats|clusters`: a proxy's Envoy config dump,
//! stats and clusters, fetched live through the control plane that holds the proxy's admin
//! stream. Admins only: a config dump describes the whole mesh as the proxy sees it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::SharedState;
use crate::auth::Caller;
use crate::error::ApiError;

/// What answered an admin request.
pub struct AdminAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// Reaches a proxy's Envoy admin; implemented by the data plane server.
#[async_trait::async_trait]
pub trait ProxyAdmin: Send + Sync {
    async fn get(
        &self,
        mesh: &str,
        name: &str,
        path: &str,
        query: &str,
    ) -> Result<AdminAnswer, String>;
}

pub type SharedProxyAdmin = Arc<dyn ProxyAdmin>;

pub const TIMEOUT: Duration = Duration::from_secs(10);

async fn inspect(
    state: &SharedState,
    caller: &Caller,
    mesh: &str,
    name: &str,
    path: &str,
    query: &str,
) -> Result<Response, ApiError> {
    const TITLE: &str = "Could not inspect the proxy";
    if !caller.user.is_admin() {
        return Err(ApiError::forbidden(format!(
            "user {:?} cannot inspect proxies",
            caller.user.name
        )));
    }
    let Some(admin) = &state.proxy_admin else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            TITLE,
            "proxies connect to zone and standalone control planes; inspect it there",
        ));
    };
    let key = model::ResourceKey::new(model::ResourceType::Dataplane, mesh, name);
    state
        .store
        .get(&key)
        .await
        .map_err(|e| ApiError::from_store(TITLE, e))?;
    let answer = admin
        .get(mesh, name, path, query)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, TITLE, e))?;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    Ok((
        status,
        [(header::CONTENT_TYPE, answer.content_type)],
        answer.body,
    )
        .into_response())
}

pub async fn config_dump(
    State(state): State<SharedState>,
    caller: axum::Extension<Caller>,
    Path((mesh, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    // Kuma's `?include_eds=true` is Envoy's `?include_eds`.
    let include_eds = query.as_deref().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "include_eds=true" || p == "include_eds")
    });
    let envoy_query = if include_eds { "include_eds" } else { "" };
    inspect(&state, &caller, &mesh, &name, "config_dump", envoy_query).await
}

pub async fn stats(
    State(state): State<SharedState>,
    caller: axum::Extension<Caller>,
    Path((mesh, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    inspect(&state, &caller, &mesh, &name, "stats", "").await
}

pub async fn clusters(
    State(state): State<SharedState>,
    caller: axum::Extension<Caller>,
    Path((mesh, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    inspect(&state, &caller, &mesh, &name, "clusters", "").await
}
