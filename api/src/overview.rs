//! Overviews join a resource with its insight (`dataplanes+insights`, `zones+insights`, ...),
//! and mesh insights count what each mesh holds.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use model::specs::insight::InsightSpec;
use model::{Resource, ResourceKey, ResourceType, Timestamp};
use serde_json::{Map, Value, json};
use store::{ListQuery, StoreError};

use crate::SharedState;
use crate::error::ApiError;
use crate::paging::{DataplaneFilter, list_page, next_link, parse_list_query};

/// How long a subscription may stay silent before it counts as offline.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// (overview type name, field for the resource, field for the insight)
fn overview_names(kind: ResourceType) -> Option<(&'static str, &'static str, &'static str)> {
    match kind {
        ResourceType::Dataplane => Some(("DataplaneOverview", "dataplane", "dataplaneInsight")),
        ResourceType::Zone => Some(("ZoneOverview", "zone", "zoneInsight")),
        ResourceType::ZoneIngress => {
            Some(("ZoneIngressOverview", "zoneIngress", "zoneIngressInsight"))
        }
        ResourceType::ZoneEgress => Some(("ZoneEgressOverview", "zoneEgress", "zoneEgressInsight")),
        _ => None,
    }
}

fn no_overview(kind: ResourceType) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "Not found",
        format!("{kind} has no insights overview"),
    )
}

fn zone_disabled(r: &Resource) -> bool {
    r.kind == ResourceType::Zone && r.spec.get("enabled").and_then(Value::as_bool) == Some(false)
}

/// A mesh CA closer than this to its end is a warning on the mesh (and the GUI's home page):
/// every proxy certificate it signed stops working with it.
const CA_EXPIRY_WARNING: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// The insight `owner` has (a Dataplane's, a Zone's, ...), `None` before it first connected.
async fn insight_of(
    state: &SharedState,
    owner: &Resource,
) -> Result<Option<InsightSpec>, StoreError> {
    let Some(kind) = owner.kind.owned_insight() else {
        return Ok(None);
    };
    let key = ResourceKey::new(kind, owner.meta.mesh.clone(), owner.meta.name.clone());
    match state.store.get(&key).await {
        Ok(i) => Ok(serde_json::from_value(i.spec).ok()),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the insight of `owner` says it is connected and heard from recently.
async fn is_online(state: &SharedState, owner: &Resource) -> Result<bool, StoreError> {
    Ok(insight_of(state, owner)
        .await?
        .is_some_and(|i| i.is_online(Timestamp::now(), STALE_AFTER))
        && !zone_disabled(owner))
}

async fn overview_value(state: &SharedState, r: &Resource) -> Result<Value, ApiError> {
    let (type_name, res_field, insight_field) =
        overview_names(r.kind).ok_or_else(|| no_overview(r.kind))?;
    let insight_kind = r.kind.owned_insight().ok_or_else(|| no_overview(r.kind))?;
    let insight_key = ResourceKey::new(insight_kind, r.meta.mesh.clone(), r.meta.name.clone());
    let insight = match state.store.get(&insight_key).await {
        Ok(i) => i.spec,
        Err(StoreError::NotFound(_)) => json!({}),
        Err(e) => return Err(ApiError::from_store("Could not retrieve resources", e)),
    };
    // A disabled zone counts as offline even while connected, as in Kuma.
    let online = serde_json::from_value::<InsightSpec>(insight.clone())
        .map(|i| i.is_online(Timestamp::now(), STALE_AFTER))
        .unwrap_or(false)
        && !zone_disabled(r);
    let mut obj = Map::new();
    obj.insert("type".into(), json!(type_name));
    if r.kind.is_mesh_scoped() {
        obj.insert("mesh".into(), json!(r.meta.mesh));
    }
    obj.insert("name".into(), json!(r.meta.name));
    obj.insert(
        "creationTime".into(),
        json!(r.meta.creation_time.to_string()),
    );
    obj.insert(
        "modificationTime".into(),
        json!(r.meta.modification_time.to_string()),
    );
    if !r.meta.labels.is_empty() {
        obj.insert("labels".into(), json!(r.meta.labels));
    }
    obj.insert(res_field.into(), r.spec.clone());
    obj.insert(insight_field.into(), insight);
    // Not in Kuma's shape: the CP's own verdict, so clients need not re-derive staleness.
    obj.insert("online".into(), json!(online));
    Ok(Value::Object(obj))
}

pub async fn list(
    state: &SharedState,
    kind: ResourceType,
    mesh: Option<String>,
    params: &HashMap<String, String>,
    uri: &OriginalUri,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    overview_names(kind).ok_or_else(|| no_overview(kind))?;
    let filter = DataplaneFilter::from_request(kind, mesh.is_some(), uri)?;
    let query = parse_list_query(kind, mesh, params)?;
    let page = list_page(&state.store, &query, filter.as_ref())
        .await
        .map_err(|e| ApiError::from_store("Could not retrieve resources", e))?;
    let mut items = Vec::with_capacity(page.items.len());
    for r in &page.items {
        items.push(overview_value(state, r).await?);
    }
    let next = next_link(uri, headers, page.next_offset, query.size.unwrap_or(100));
    Ok(Json(json!({"total": page.total, "items": items, "next": next})).into_response())
}

pub async fn get(
    state: &SharedState,
    kind: ResourceType,
    mesh: &str,
    name: &str,
) -> Result<Response, ApiError> {
    overview_names(kind).ok_or_else(|| no_overview(kind))?;
    let r = state
        .store
        .get(&ResourceKey::new(kind, mesh, name))
        .await
        .map_err(|e| ApiError::from_store("Could not retrieve a resource", e))?;
    Ok(Json(overview_value(state, &r).await?).into_response())
}

/// Counts computed on request: cheap on every backend because lists of size 0 only count.
async fn mesh_insight_value(state: &SharedState, mesh: &Resource) -> Result<Value, ApiError> {
    let err = |e| ApiError::from_store("Could not retrieve mesh insights", e);
    let name = &mesh.meta.name;
    let dps = state
        .store
        .list(&ListQuery::in_mesh(ResourceType::Dataplane, name))
        .await
        .map_err(err)?;
    let now = Timestamp::now();
    let mut online = 0;
    // Kuma's MeshInsight.MTLS: proxies by the backend that issued their certificate.
    let mut issued: BTreeMap<String, FullStatus> = BTreeMap::new();
    for dp in &dps.items {
        let insight = insight_of(state, dp).await.map_err(err)?;
        let connected = insight
            .as_ref()
            .is_some_and(|i| i.is_online(now, STALE_AFTER));
        if connected {
            online += 1;
        }
        let backend = insight
            .as_ref()
            .and_then(|i| i.mtls.as_ref())
            .and_then(|m| m.get("issuedBackend"))
            .and_then(Value::as_str);
        if let Some(backend) = backend {
            issued
                .entry(backend.to_string())
                .or_default()
                .add(dataplane_health(dp, connected));
        }
    }
    let mut policies = Map::new();
    for kind in ResourceType::all().filter(|k| k.is_mesh_scoped() && *k != ResourceType::Dataplane)
    {
        let mut q = ListQuery::in_mesh(kind, name);
        q.size = Some(0);
        let total = state.store.list(&q).await.map_err(err)?.total;
        if total > 0 {
            policies.insert(kind.name().into(), json!({ "total": total }));
        }
    }
    let mut insight = json!({
        "type": "MeshInsight",
        "name": name,
        "creationTime": mesh.meta.creation_time.to_string(),
        "modificationTime": mesh.meta.modification_time.to_string(),
        "lastSync": now.to_string(),
        "dataplanes": {"total": dps.total, "online": online, "offline": dps.total - online},
        "policies": policies,
    });
    let mut warnings = Vec::new();
    let mut mtls = json!({
        "issuedBackends": issued.iter().map(|(b, h)| (b.clone(), h.json())).collect::<Map<_, _>>(),
    });
    if let Ok(spec) = serde_json::from_value::<model::specs::mesh::MeshSpec>(mesh.spec.clone()) {
        match security::ca::mesh_ca_expiry(&state.store, name, &spec).await {
            Ok(Some((backend, expires))) => {
                let expires = Timestamp::from_unix_seconds(expires);
                // An extension to Kuma's MeshInsight: the CA's own certificate ends the mesh.
                mtls["ca"] = json!({"backend": backend, "expirationTime": expires.to_string()});
                let left = expires.unix_seconds() - now.unix_seconds();
                if left < CA_EXPIRY_WARNING.as_secs() as i64 {
                    warnings.push(if left <= 0 {
                        format!("the CA of mTLS backend {backend:?} expired at {expires}")
                    } else {
                        format!(
                            "the CA of mTLS backend {backend:?} expires at {expires}, in {}",
                            model::time::format_age(std::time::Duration::from_secs(left as u64))
                        )
                    });
                }
            }
            Ok(None) => {}
            Err(e) => warnings.push(format!("the mesh's CA cannot be read: {e}")),
        }
    }
    insight["mTLS"] = mtls;
    // A global control plane allocates no VIP (each zone does, for itself).
    if state.info.mode != "global" {
        let (vips, vip_warnings) = vip_report(state, name).await.map_err(err)?;
        if !vips.is_empty() {
            insight["vips"] = Value::Object(vips);
        }
        warnings.extend(vip_warnings);
    }
    if !warnings.is_empty() {
        insight["warnings"] = json!(warnings);
    }
    Ok(insight)
}

/// The CIDR setting each kind of service takes its VIPs from.
const VIP_POOLS: [(ResourceType, &str); 3] = [
    (ResourceType::MeshService, "KUMA_IPAM_MESH_SERVICE_CIDR"),
    (
        ResourceType::MeshExternalService,
        "KUMA_IPAM_MESH_EXTERNAL_SERVICE_CIDR",
    ),
    (
        ResourceType::MeshMultiZoneService,
        "KUMA_IPAM_MESH_MULTI_ZONE_SERVICE_CIDR",
    ),
];

/// Per kind of service in `mesh`, how many have a VIP here and how many not; a service the
/// zone's controller has passed over and left without one is a pool that has run out (its
/// log names each service), which the mesh reports until the pool is widened or services go.
async fn vip_report(
    state: &SharedState,
    mesh: &str,
) -> Result<(Map<String, Value>, Vec<String>), StoreError> {
    let mut vips = Map::new();
    let mut warnings = Vec::new();
    for (kind, setting) in VIP_POOLS {
        let services = state.store.list(&ListQuery::in_mesh(kind, mesh)).await?;
        if services.items.is_empty() {
            continue;
        }
        let without = services.items.iter().filter(|r| !has_vip(r)).count();
        vips.insert(
            kind.name().into(),
            json!({"total": services.items.len(), "withoutVip": without}),
        );
        if without > 0 {
            warnings.push(format!(
                "{without} {kind} resource(s) have no VIP: the VIP pool ({setting}) is exhausted, \
                 or the zone's service controller has not reached them yet"
            ));
        }
    }
    Ok((vips, warnings))
}

/// Whether a service's status carries a VIP (`vips[]` or, for a MeshExternalService, `vip`).
fn has_vip(r: &Resource) -> bool {
    let Some(status) = &r.status else {
        return false;
    };
    status.pointer("/vip/ip").is_some()
        || status
            .get("vips")
            .and_then(Value::as_array)
            .is_some_and(|v| !v.is_empty())
}

pub async fn mesh_insights(State(state): State<SharedState>) -> Result<Json<Value>, ApiError> {
    let meshes = state
        .store
        .list(&ListQuery::all(ResourceType::Mesh))
        .await
        .map_err(|e| ApiError::from_store("Could not retrieve mesh insights", e))?;
    let mut items = Vec::new();
    for m in &meshes.items {
        items.push(mesh_insight_value(&state, m).await?);
    }
    Ok(Json(
        json!({"total": items.len(), "items": items, "next": null}),
    ))
}

pub async fn mesh_insight(
    State(state): State<SharedState>,
    Path(mesh): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let m = state
        .store
        .get(&ResourceKey::new(ResourceType::Mesh, "", mesh))
        .await
        .map_err(|e| ApiError::from_store("Could not retrieve mesh insights", e))?;
    Ok(Json(mesh_insight_value(&state, &m).await?))
}

/// `GET /control-planes`: the replicas in the leader's catalog, with their last heartbeat.
pub async fn control_planes(State(state): State<SharedState>) -> Result<Json<Value>, ApiError> {
    let key = ResourceKey::new(ResourceType::Config, "", model::catalog::CATALOG_CONFIG);
    let catalog = match state.store.get(&key).await {
        Ok(r) => serde_json::from_value::<model::specs::secret::ConfigSpec>(r.spec)
            .ok()
            .and_then(|c| serde_json::from_str::<model::catalog::Catalog>(&c.config).ok())
            .unwrap_or_default(),
        Err(StoreError::NotFound(_)) => model::catalog::Catalog::default(),
        Err(e) => return Err(ApiError::from_store("Could not retrieve control planes", e)),
    };
    let items: Vec<Value> = catalog.instances.iter().map(|i| json!(i)).collect();
    let mut answer = json!({"total": items.len(), "items": items, "next": null});
    // A store replicated among the replicas (raft) adds its members' view.
    match state.store.cluster_status().await {
        Ok(Some(raft)) => answer["raft"] = json!(raft),
        Ok(None) => {}
        Err(e) => answer["raft"] = json!({"error": e.to_string()}),
    }
    Ok(Json(answer))
}

/// Online/offline/partially degraded counts, as Kuma's `FullStatus`.
#[derive(Default, Clone, Copy)]
struct FullStatus {
    online: u64,
    offline: u64,
    partially_degraded: u64,
}

impl FullStatus {
    fn add(&mut self, health: Health) {
        match health {
            Health::Online => self.online += 1,
            Health::Offline => self.offline += 1,
            Health::Degraded => self.partially_degraded += 1,
        }
    }

    fn json(&self) -> Value {
        json!({
            "online": self.online,
            "offline": self.offline,
            "partiallyDegraded": self.partially_degraded,
            "total": self.online + self.offline + self.partially_degraded,
        })
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Health {
    Online,
    Offline,
    Degraded,
}

/// A connected dataplane is degraded when some of its inbounds report not ready, offline when
/// all do (Kuma's rule).
fn dataplane_health(dp: &Resource, connected: bool) -> Health {
    if !connected {
        return Health::Offline;
    }
    let inbounds = dp.spec["networking"]["inbound"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let unready = inbounds
        .iter()
        // Present health without `ready: true` is unready (proto3 JSON omits `ready: false`).
        .filter(|i| {
            i.get("health")
                .is_some_and(|h| h["ready"].as_bool() != Some(true))
        })
        .count();
    match unready {
        0 => Health::Online,
        n if n == inbounds.len() => Health::Offline,
        _ => Health::Degraded,
    }
}

/// `GET /global-insight`: counts across all meshes and zones, in the shape of Kuma's extended
/// global insight.
pub async fn global_insight(State(state): State<SharedState>) -> Result<Json<Value>, ApiError> {
    let err = |e| ApiError::from_store("Could not retrieve the global insight", e);
    let list = |kind| {
        let state = state.clone();
        async move { state.store.list(&ListQuery::all(kind)).await }
    };
    let mut zone_stats = Map::new();
    for (field, kind) in [
        ("controlPlanes", ResourceType::Zone),
        ("zoneIngresses", ResourceType::ZoneIngress),
        ("zoneEgresses", ResourceType::ZoneEgress),
    ] {
        let items = list(kind).await.map_err(err)?.items;
        let mut online = 0;
        for r in &items {
            online += u64::from(is_online(&state, r).await.map_err(err)?);
        }
        zone_stats.insert(
            field.into(),
            json!({"online": online, "total": items.len()}),
        );
    }

    let mut dataplanes: [FullStatus; 3] = Default::default();
    // (mesh, service) -> health of each instance; per dataplane kind.
    let mut services: [HashMap<(String, String), Vec<Health>>; 3] = Default::default();
    for dp in list(ResourceType::Dataplane).await.map_err(err)?.items {
        let health = dataplane_health(&dp, is_online(&state, &dp).await.map_err(err)?);
        let gateway = &dp.spec["networking"]["gateway"];
        let (slot, tag_sets) = if gateway.is_object() {
            let builtin = gateway["type"].as_str() == Some("BUILTIN");
            (if builtin { 1 } else { 2 }, vec![gateway["tags"].clone()])
        } else {
            let inbound = dp.spec["networking"]["inbound"].as_array();
            (
                0,
                inbound
                    .map(|ins| ins.iter().map(|i| i["tags"].clone()).collect())
                    .unwrap_or_default(),
            )
        };
        dataplanes[slot].add(health);
        for tags in tag_sets {
            if let Some(service) = tags["kuma.io/service"].as_str() {
                services[slot]
                    .entry((dp.meta.mesh.clone(), service.to_string()))
                    .or_default()
                    .push(health);
            }
        }
    }
    let service_status = |instances: &HashMap<(String, String), Vec<Health>>| {
        let mut status = FullStatus::default();
        for healths in instances.values() {
            status.add(if healths.iter().all(|h| *h == Health::Online) {
                Health::Online
            } else if healths.iter().all(|h| *h == Health::Offline) {
                Health::Offline
            } else {
                Health::Degraded
            });
        }
        status.json()
    };
    let mut external = 0;
    let mut policies = 0;
    let mut resources = Map::new();
    for kind in ResourceType::all() {
        let mut q = ListQuery::all(kind);
        q.size = Some(0);
        let total = state.store.list(&q).await.map_err(err)?.total;
        if kind == ResourceType::MeshExternalService {
            external += total;
        }
        if kind.descriptor().is_policy {
            policies += total;
        }
        if total > 0 {
            resources.insert(kind.name().into(), json!({ "total": total }));
        }
    }
    let meshes = resources
        .get(ResourceType::Mesh.name())
        .map_or(json!(0), |m| m["total"].clone());
    Ok(Json(json!({
        "createdAt": Timestamp::now().to_string(),
        "services": {
            "internal": service_status(&services[0]),
            "external": {"total": external},
            "gatewayBuiltin": service_status(&services[1]),
            "gatewayDelegated": service_status(&services[2]),
        },
        "zones": zone_stats,
        "dataplanes": {
            "standard": dataplanes[0].json(),
            "gatewayBuiltin": dataplanes[1].json(),
            "gatewayDelegated": dataplanes[2].json(),
        },
        "policies": {"total": policies},
        "meshes": {"total": meshes},
        "resources": resources,
    })))
}
