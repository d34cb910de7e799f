//! Kuma's service insights (`/meshes/{mesh}/service-insights`): per `kuma.io/service`, how
//! many of its proxies are online, of which kind it is and which CA issued its certificates.
//! Kuma keeps them in a resource a resyncer rewrites; here they are counted on request from
//! the Dataplanes and their insights, so they are never stale.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::Json;
use axum::extract::{OriginalUri, Path, State};
use axum::http::HeaderMap;
use model::specs::insight::InsightSpec;
use model::{ResourceKey, ResourceType, Timestamp};
use serde_json::{Value, json};
use store::{ListQuery, StoreError};

use crate::SharedState;
use crate::error::{ApiError, ApiQuery};
use crate::overview::STALE_AFTER;
use crate::paging::{next_link, parse_page};

/// Kuma's `ServiceInsight.Service.Type` names, as the `type` filter spells them.
const SERVICE_TYPES: [&str; 4] = [
    "internal",
    "external",
    "gateway_delegated",
    "gateway_builtin",
];

#[derive(Default)]
struct ServiceStat {
    service_type: &'static str,
    online: u64,
    offline: u64,
    issued_backends: BTreeMap<String, u64>,
    zones: BTreeSet<String>,
    created: Option<Timestamp>,
    modified: Option<Timestamp>,
}

impl ServiceStat {
    /// Kuma's rule: nothing online is offline, everything online is online, else degraded.
    fn status(&self) -> &'static str {
        match (self.online, self.offline) {
            (0, _) => "offline",
            (_, 0) => "online",
            _ => "partially_degraded",
        }
    }

    fn to_json(&self, mesh: &str, name: &str) -> Value {
        let mut out = json!({
            "type": "ServiceInsight",
            "mesh": mesh,
            "name": name,
            "creationTime": self.created.unwrap_or_else(Timestamp::now).to_string(),
            "modificationTime": self.modified.unwrap_or_else(Timestamp::now).to_string(),
            "status": self.status(),
            "dataplanes": {
                "total": self.online + self.offline,
                "online": self.online,
                "offline": self.offline,
            },
        });
        if !self.issued_backends.is_empty() {
            out["issuedBackends"] = json!(self.issued_backends);
        }
        // Kuma omits the default type (internal) and gives internal services the address
        // its DNS serves them at (`<service>.mesh:80`).
        if self.service_type == "internal" {
            out["addressPort"] = json!(format!("{name}.mesh:80"));
        } else {
            out["serviceType"] = json!(self.service_type);
        }
        if !self.zones.is_empty() {
            out["zones"] = json!(self.zones);
        }
        out
    }
}

/// Every service of a mesh with its counts, by name.
async fn services(
    state: &SharedState,
    mesh: &str,
) -> Result<BTreeMap<String, ServiceStat>, ApiError> {
    let err = |e| ApiError::from_store("Could not retrieve resources", e);
    let mesh_spec = state
        .store
        .get(&ResourceKey::new(ResourceType::Mesh, "", mesh))
        .await
        .map_err(|e| ApiError::from_store("Failed to retrieve Mesh", e))?
        .spec;
    // In Exclusive mode MeshServices stand for sidecar services; only delegated gateways stay.
    let exclusive = mesh_spec["meshServices"]["mode"] == "Exclusive";
    let dataplanes = state
        .store
        .list(&ListQuery::in_mesh(ResourceType::Dataplane, mesh))
        .await
        .map_err(err)?;
    let now = Timestamp::now();
    let mut out: BTreeMap<String, ServiceStat> = BTreeMap::new();
    for dp in &dataplanes.items {
        let key = ResourceKey::new(ResourceType::DataplaneInsight, mesh, dp.meta.name.clone());
        let insight = match state.store.get(&key).await {
            Ok(i) => serde_json::from_value::<InsightSpec>(i.spec).unwrap_or_default(),
            Err(StoreError::NotFound(_)) => InsightSpec::default(),
            Err(e) => return Err(err(e)),
        };
        let connected = insight.is_online(now, STALE_AFTER);
        let backend = insight
            .mtls
            .as_ref()
            .and_then(|m| m["issuedBackend"].as_str())
            .filter(|b| !b.is_empty());
        let networking = &dp.spec["networking"];
        let inbounds = networking["inbound"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // A proxy with an unready inbound counts as offline, as Kuma counts a degraded one.
        let online = connected && inbounds.iter().all(|i| i["health"]["ready"] != false);
        let mut add = |service: &str, service_type: &'static str, zone: Option<&str>| {
            if service.is_empty() {
                return;
            }
            let stat = out
                .entry(service.to_string())
                .or_insert_with(|| ServiceStat {
                    service_type,
                    ..ServiceStat::default()
                });
            if online {
                stat.online += 1;
            } else {
                stat.offline += 1;
            }
            if let Some(b) = backend {
                *stat.issued_backends.entry(b.to_string()).or_default() += 1;
            }
            if let Some(z) = zone.filter(|z| !z.is_empty()) {
                stat.zones.insert(z.to_string());
            }
            stat.created = Some(
                stat.created
                    .map_or(dp.meta.creation_time, |c| c.min(dp.meta.creation_time)),
            );
            stat.modified = Some(stat.modified.map_or(dp.meta.modification_time, |m| {
                m.max(dp.meta.modification_time)
            }));
        };
        let gateway = &networking["gateway"];
        if gateway.is_object() {
            let (service_type, counted) = match gateway["type"].as_str() {
                Some("BUILTIN") => ("gateway_builtin", !exclusive),
                _ => ("gateway_delegated", true),
            };
            if counted {
                let tags = &gateway["tags"];
                add(
                    tags["kuma.io/service"].as_str().unwrap_or(""),
                    service_type,
                    tags["kuma.io/zone"].as_str(),
                );
            }
            continue;
        }
        if exclusive {
            continue;
        }
        for inbound in &inbounds {
            if inbound["state"] == "Ignored" {
                continue;
            }
            let tags = &inbound["tags"];
            add(
                tags["kuma.io/service"].as_str().unwrap_or(""),
                "internal",
                tags["kuma.io/zone"].as_str(),
            );
        }
    }
    Ok(out)
}

pub async fn list(
    State(state): State<SharedState>,
    Path(mesh): Path<String>,
    ApiQuery(params): ApiQuery<HashMap<String, String>>,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    // Reading the mesh's services reads the mesh first: a missing mesh is 404 before any
    // parameter is looked at, as Kuma answers.
    let services = services(&state, &mesh).await?;
    let page = parse_page(&params)?;
    let mut wanted = BTreeSet::new();
    for t in params
        .get("type")
        .map(String::as_str)
        .unwrap_or("")
        .split(',')
    {
        let t = t.trim().to_ascii_lowercase();
        if t.is_empty() {
            continue;
        }
        if !SERVICE_TYPES.contains(&t.as_str()) {
            let mut e = ApiError::bad_request(
                "Invalid response type",
                "type",
                format!("must be one of {}", SERVICE_TYPES.join(", ")),
            );
            e.detail = "unsupported service type".into();
            return Err(e);
        }
        wanted.insert(t);
    }
    let name_contains = params.get("name").map(String::as_str).unwrap_or("");
    let items: Vec<Value> = services
        .into_iter()
        .filter(|(name, stat)| {
            name.contains(name_contains)
                && (wanted.is_empty() || wanted.contains(stat.service_type))
        })
        .map(|(name, stat)| stat.to_json(&mesh, &name))
        .collect();
    let total = items.len();
    let (items, next_offset) = page.cut(items);
    let next = next_link(&uri, &headers, next_offset, page.size);
    Ok(Json(json!({"total": total, "items": items, "next": next})))
}

/// One service; a service no proxy has is answered with zero counts, as Kuma does.
pub async fn get(
    State(state): State<SharedState>,
    Path((mesh, service)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let mut all = services(&state, &mesh).await?;
    let stat = all.remove(&service).unwrap_or(ServiceStat {
        service_type: "internal",
        ..ServiceStat::default()
    });
    Ok(Json(stat.to_json(&mesh, &service)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_kumas_rule() {
        let stat = |online, offline| ServiceStat {
            service_type: "internal",
            online,
            offline,
            ..ServiceStat::default()
        };
        assert_eq!(stat(0, 0).status(), "offline");
        assert_eq!(stat(0, 2).status(), "offline");
        assert_eq!(stat(2, 0).status(), "online");
        assert_eq!(stat(1, 1).status(), "partially_degraded");
        let json = stat(1, 1).to_json("default", "backend");
        assert_eq!(json["addressPort"], "backend.mesh:80");
        assert_eq!(json["dataplanes"]["total"], 2);
        assert!(json.get("serviceType").is_none());
    }
}
