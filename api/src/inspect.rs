//! `GET /meshes/{mesh}/dataplanes/{name}/xds|stats|clusters` (and the same under
//! `/zoneingresses/{name}` and `/zoneegresses/{name}`): a proxy's Envoy config dump, stats and
//! clusters, fetched live through the control plane that holds the proxy's admin stream (on
//! global: through the zone the proxy runs in). Admins only: a config dump describes the whole
//! mesh as the proxy sees it.

use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use kds::inspect::{AdminOp, ProxyRef};
use model::ResourceType;
use serde::Deserialize;

use crate::SharedState;
use crate::auth::Caller;
use crate::error::ApiError;

async fn inspect(
    state: &SharedState,
    caller: &Caller,
    proxy: ProxyRef<'_>,
    op: AdminOp,
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
            "this control plane reaches no proxies",
        ));
    };
    let key = model::ResourceKey::new(proxy.kind, proxy.mesh, proxy.name);
    state
        .store
        .get(&key)
        .await
        .map_err(|e| ApiError::from_store(TITLE, e))?;
    let answer = admin
        .get(proxy, op, query)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, TITLE, model::error_chain(&e)))?;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    Ok((
        status,
        [(header::CONTENT_TYPE, answer.content_type)],
        answer.body,
    )
        .into_response())
}

/// The proxy a path names: `/meshes/{mesh}/dataplanes/{name}/…` or `/{zoneingresses|zoneegresses}/{name}/…`.
#[derive(Debug, Deserialize)]
pub struct ProxyPath {
    #[serde(default)]
    mesh: String,
    #[serde(default)]
    plural: String,
    name: String,
}

impl ProxyPath {
    fn proxy(&self) -> Result<ProxyRef<'_>, ApiError> {
        let kind = match (
            self.plural.as_str(),
            ResourceType::from_api_path(&self.plural),
        ) {
            ("", _) => ResourceType::Dataplane,
            (_, Some(kind @ (ResourceType::ZoneIngress | ResourceType::ZoneEgress))) => kind,
            (other, _) => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "Not found",
                    format!("{other:?} has no Envoy to inspect"),
                ));
            }
        };
        Ok(ProxyRef {
            kind,
            mesh: &self.mesh,
            name: &self.name,
        })
    }
}

pub async fn config_dump(
    State(state): State<SharedState>,
    caller: axum::Extension<Caller>,
    Path(path): Path<ProxyPath>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    // Kuma's `?include_eds=true` is Envoy's `?include_eds`.
    let include_eds = query.as_deref().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "include_eds=true" || p == "include_eds")
    });
    let envoy_query = if include_eds { "include_eds" } else { "" };
    inspect(
        &state,
        &caller,
        path.proxy()?,
        AdminOp::ConfigDump,
        envoy_query,
    )
    .await
}

pub async fn stats(
    State(state): State<SharedState>,
    caller: axum::Extension<Caller>,
    Path(path): Path<ProxyPath>,
) -> Result<Response, ApiError> {
    inspect(&state, &caller, path.proxy()?, AdminOp::Stats, "").await
}

pub async fn clusters(
    State(state): State<SharedState>,
    caller: axum::Extension<Caller>,
    Path(path): Path<ProxyPath>,
) -> Result<Response, ApiError> {
    inspect(&state, &caller, path.proxy()?, AdminOp::Clusters, "").await
}
