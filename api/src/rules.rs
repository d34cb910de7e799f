//! Policy inspection: `GET /meshes/{mesh}/dataplanes/{name}/_rules` and `_policies`, and
//! `GET /meshes/{mesh}/{policy-plural}/{name}/_resources/dataplanes`. Answered from this
//! control plane's own store by the rule engine the data plane server uses, so it works on a
//! zone and on global alike (global holds every zone's Dataplanes and every policy).

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use model::specs::dataplane::DataplaneSpec;
use model::specs::mesh::MeshSpec;
use model::{ResourceKey, ResourceType};
use serde::Deserialize;
use store::ListQuery;
use xds::{DataplaneEntry, GatewayCertificate, GatewayEntry, MeshContext, RawPolicy};

use crate::SharedState;
use crate::error::{ApiError, ApiQuery};
use crate::resources::resolve_type;

const TITLE: &str = "Could not inspect policies";

/// The mesh as the rule engine sees it: its Dataplanes and every policy type. A Dataplane or
/// policy that does not parse is left out, as the data plane server leaves it out.
async fn mesh_context(state: &SharedState, mesh: &str) -> Result<MeshContext, ApiError> {
    let store_err = |e| ApiError::from_store(TITLE, e);
    let stored = state
        .store
        .get(&ResourceKey::new(ResourceType::Mesh, "", mesh))
        .await
        .map_err(store_err)?;
    let spec: MeshSpec = serde_json::from_value(stored.spec).unwrap_or_default();
    let dataplanes = state
        .store
        .list(&ListQuery::in_mesh(ResourceType::Dataplane, mesh))
        .await
        .map_err(store_err)?
        .items
        .into_iter()
        .filter_map(|r| {
            let spec = serde_json::from_value::<DataplaneSpec>(r.spec).ok()?;
            Some(DataplaneEntry {
                name: r.meta.name,
                labels: r.meta.labels,
                spec,
            })
        })
        .collect();
    let gateways: Vec<GatewayEntry> = state
        .store
        .list(&ListQuery::in_mesh(ResourceType::MeshGateway, mesh))
        .await
        .map_err(store_err)?
        .items
        .into_iter()
        .filter_map(|r| {
            Some(GatewayEntry {
                spec: serde_json::from_value(r.spec).ok()?,
                name: r.meta.name,
                labels: r.meta.labels,
            })
        })
        .collect();
    // A gateway's warnings name the certificates it cannot serve: read them as the data
    // plane server does.
    let mut gateway_certificates = std::collections::BTreeMap::new();
    for secret in xds::context::certificate_secrets(&gateways) {
        let key = ResourceKey::new(ResourceType::Secret, mesh, &secret);
        let certificate = match state.store.get(&key).await {
            Ok(r) => GatewayCertificate::checked(
                security::tls::gateway_secret(r.spec).map(|p| (p.cert_pem, p.key_pem)),
            ),
            Err(store::StoreError::NotFound(_)) => GatewayCertificate::missing(),
            Err(e) => return Err(store_err(e)),
        };
        gateway_certificates.insert(secret, certificate);
    }
    let mut context = MeshContext {
        mesh: mesh.to_string(),
        mtls: spec.mtls_enabled(),
        dataplanes,
        gateways,
        gateway_certificates,
        ..Default::default()
    };
    for kind in ResourceType::all().filter(|k| k.descriptor().is_policy) {
        let raw = state
            .store
            .list(&ListQuery::in_mesh(kind, mesh))
            .await
            .map_err(store_err)?
            .items
            .into_iter()
            .map(|r| RawPolicy {
                name: r.meta.name,
                labels: r.meta.labels,
                spec: r.spec,
            })
            .collect();
        context.policies.load(kind, raw);
    }
    Ok(context)
}

fn dataplane<'m>(mesh: &'m MeshContext, name: &str) -> Result<&'m DataplaneEntry, ApiError> {
    mesh.dataplane(name)
        .ok_or_else(|| ApiError::not_found(format!("dataplane {name:?} in mesh {:?}", mesh.mesh)))
}

pub async fn dataplane_rules(
    State(state): State<SharedState>,
    Path((mesh, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let context = mesh_context(&state, &mesh).await?;
    let proxy = dataplane(&context, &name)?;
    Ok(Json(xds::inspect::rules(&context, proxy)).into_response())
}

pub async fn dataplane_policies(
    State(state): State<SharedState>,
    Path((mesh, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let context = mesh_context(&state, &mesh).await?;
    let proxy = dataplane(&context, &name)?;
    Ok(Json(xds::inspect::policies(&context, proxy)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    offset: Option<String>,
    #[serde(default)]
    size: Option<String>,
    /// Only dataplanes whose name contains this.
    #[serde(default)]
    name: Option<String>,
}

fn number(field: &str, value: &Option<String>, default: usize) -> Result<usize, ApiError> {
    match value {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            ApiError::bad_request(TITLE, field, format!("{v:?} is not a non-negative integer"))
        }),
    }
}

pub async fn policy_dataplanes(
    State(state): State<SharedState>,
    Path((mesh, plural, name)): Path<(String, String, String)>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Response, ApiError> {
    let kind = resolve_type(&plural, true)?;
    if !kind.descriptor().is_policy && kind != ResourceType::MeshGateway {
        return Err(ApiError::bad_request(
            TITLE,
            "policyType",
            format!("{plural} is not a policy type"),
        ));
    }
    let offset = number("offset", &page.offset, 0)?;
    let size = number("size", &page.size, 100)?.clamp(1, 1000);
    // A policy that does not exist is 404, not an empty list.
    state
        .store
        .get(&ResourceKey::new(kind, &mesh, &name))
        .await
        .map_err(|e| ApiError::from_store(TITLE, e))?;
    let context = mesh_context(&state, &mesh).await?;
    let selected = match kind {
        ResourceType::MeshGateway => xds::inspect::gateway_dataplanes(&context, &name),
        _ => xds::inspect::selected_dataplanes(&context, kind, &name),
    };
    let selected: Vec<_> = selected
        .into_iter()
        .filter(|dp| {
            page.name
                .as_ref()
                .is_none_or(|n| dp.name.contains(n.as_str()))
        })
        .collect();
    let items: Vec<_> = selected
        .iter()
        .skip(offset)
        .take(size)
        .map(|dp| xds::inspect::dataplane_meta(&mesh, dp))
        .collect();
    let mut body = serde_json::json!({"total": selected.len(), "items": items});
    if offset + size < selected.len() {
        body["next"] = serde_json::json!(format!(
            "/meshes/{mesh}/{plural}/{name}/_resources/dataplanes?offset={}&size={size}",
            offset + size
        ));
    }
    Ok(Json(body).into_response())
}
