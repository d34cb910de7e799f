//! A mesh's context as the generators need it, read from the store, and which store changes
//! can alter a proxy's configuration.

use model::specs::dataplane::DataplaneSpec;
use model::specs::mesh::MeshSpec;
use model::specs::zone::{ZoneEgressSpec, ZoneIngressSpec};
use model::{ResourceKey, ResourceType};
use store::{ListQuery, SharedStore, StoreError};
use xds::{DataplaneEntry, MeshContext, Policies, RawPolicy, RemoteIngress};

/// The mesh's spec and snapshot as a sidecar in `local_zone` sees it: its dataplanes and
/// policies, and, with mTLS on, other zones' ingresses.
pub async fn load(
    store: &SharedStore,
    mesh: &str,
    local_zone: &str,
) -> Result<(MeshSpec, MeshContext), StoreError> {
    let (spec, mut snapshot) = load_local(store, mesh, local_zone).await?;
    if snapshot.mtls {
        snapshot.remote_ingresses = remote_ingresses(store, local_zone).await?;
        if snapshot.zone_egress {
            snapshot.local_egresses = local_egresses(store, local_zone).await?;
        }
    }
    Ok((spec, snapshot))
}

/// The mesh's policies of every type a plugin translates; one that does not parse is left out
/// with a warning, so it cannot stop the others.
async fn load_policies(store: &SharedStore, mesh: &str) -> Result<Policies, StoreError> {
    let mut policies = Policies::default();
    for kind in xds::policies::kinds() {
        let raw = store
            .list(&ListQuery::in_mesh(kind, mesh))
            .await?
            .items
            .into_iter()
            .map(|r| RawPolicy {
                name: r.meta.name,
                labels: r.meta.labels,
                spec: r.spec,
            })
            .collect();
        for failure in policies.load(kind, raw) {
            let error = model::error_chain(&failure);
            tracing::warn!(%mesh, policy = %failure.name, %kind, %error, "policy left out");
        }
    }
    Ok(policies)
}

/// This zone's egresses, where sidecars of meshes with `routing.zoneEgress` send cross-zone
/// traffic.
async fn local_egresses(
    store: &SharedStore,
    local_zone: &str,
) -> Result<Vec<(String, u32)>, StoreError> {
    let mut out = Vec::new();
    for r in store
        .list(&ListQuery::all(ResourceType::ZoneEgress))
        .await?
        .items
    {
        let Ok(spec) = serde_json::from_value::<ZoneEgressSpec>(r.spec) else {
            tracing::warn!(egress = %r.meta.name, "ZoneEgress spec does not parse; left out");
            continue;
        };
        if spec.zone == local_zone && !spec.networking.address.is_empty() {
            out.push((spec.networking.address, spec.networking.port));
        }
    }
    out.sort();
    Ok(out)
}

/// Every mesh that routes through zone egresses, with the other zones' ingresses: what this
/// zone's egresses pass traffic to.
pub async fn load_for_egress(
    store: &SharedStore,
    local_zone: &str,
) -> Result<Vec<MeshContext>, StoreError> {
    let mut out = Vec::new();
    let mut ingresses = None;
    for m in store.list(&ListQuery::all(ResourceType::Mesh)).await?.items {
        let Ok(spec) = serde_json::from_value::<MeshSpec>(m.spec) else {
            tracing::warn!(mesh = %m.meta.name, "mesh spec does not parse; left out");
            continue;
        };
        if !(mtls_enabled(&spec) && zone_egress(&spec)) {
            continue;
        }
        if ingresses.is_none() {
            ingresses = Some(remote_ingresses(store, local_zone).await?);
        }
        out.push(MeshContext {
            mesh: m.meta.name,
            mtls: true,
            zone_egress: true,
            local_zone: local_zone.to_string(),
            remote_ingresses: ingresses.clone().unwrap_or_default(),
            ..Default::default()
        });
    }
    Ok(out)
}

fn mtls_enabled(spec: &MeshSpec) -> bool {
    spec.mtls
        .as_ref()
        .is_some_and(|m| !m.enabled_backend.is_empty())
}

fn zone_egress(spec: &MeshSpec) -> bool {
    spec.routing.as_ref().is_some_and(|r| r.zone_egress)
}

/// The mesh's spec and this zone's part of it (no other zones' ingresses, so no name is
/// resolved). Resources whose spec does not parse are left out with a warning, so one bad
/// Dataplane cannot break every proxy of the mesh.
async fn load_local(
    store: &SharedStore,
    mesh: &str,
    local_zone: &str,
) -> Result<(MeshSpec, MeshContext), StoreError> {
    let mesh_resource = store
        .get(&ResourceKey::new(ResourceType::Mesh, "", mesh))
        .await?;
    let spec: MeshSpec = serde_json::from_value(mesh_resource.spec).unwrap_or_else(|e| {
        tracing::warn!(%mesh, error = %e, "mesh spec does not parse; treating it as empty");
        MeshSpec::default()
    });
    let mut dataplanes = Vec::new();
    for r in store
        .list(&ListQuery::in_mesh(ResourceType::Dataplane, mesh))
        .await?
        .items
    {
        match serde_json::from_value::<DataplaneSpec>(r.spec) {
            Ok(spec) => dataplanes.push(DataplaneEntry {
                name: r.meta.name,
                labels: r.meta.labels,
                spec,
            }),
            Err(e) => {
                tracing::warn!(%mesh, dataplane = %r.meta.name, error = %e, "dataplane spec does not parse; left out")
            }
        }
    }
    let snapshot = MeshContext {
        mesh: mesh.to_string(),
        mtls: mtls_enabled(&spec),
        zone_egress: zone_egress(&spec),
        dataplanes,
        policies: load_policies(store, mesh).await?,
        local_zone: local_zone.to_string(),
        ..Default::default()
    };
    Ok((spec, snapshot))
}

/// Other zones' ingresses (synced from global) that advertise where to reach them. A host name
/// is resolved here: EDS endpoints must be IP addresses.
async fn remote_ingresses(
    store: &SharedStore,
    local_zone: &str,
) -> Result<Vec<RemoteIngress>, StoreError> {
    let mut out = Vec::new();
    for r in store
        .list(&ListQuery::all(ResourceType::ZoneIngress))
        .await?
        .items
    {
        let Ok(spec) = serde_json::from_value::<ZoneIngressSpec>(r.spec) else {
            tracing::warn!(ingress = %r.meta.name, "ZoneIngress spec does not parse; left out");
            continue;
        };
        let n = &spec.networking;
        let (Some(port), false) = (n.advertised_port, n.advertised_address.is_empty()) else {
            continue;
        };
        if spec.zone.is_empty() || spec.zone == local_zone || spec.available_services.is_empty() {
            continue;
        }
        let address = match n.advertised_address.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => match resolve(&n.advertised_address, port).await {
                Some(ip) => ip,
                None => {
                    tracing::warn!(ingress = %r.meta.name, address = %n.advertised_address, "cannot resolve the ingress's advertised address; its zone is unreachable for now");
                    continue;
                }
            },
        };
        out.push(RemoteIngress {
            zone: spec.zone,
            address,
            port,
            services: spec.available_services,
        });
    }
    out.sort_by(|a, b| (&a.zone, &a.address).cmp(&(&b.zone, &b.address)));
    Ok(out)
}

async fn resolve(host: &str, port: u32) -> Option<String> {
    let port = u16::try_from(port).ok()?;
    let lookup = tokio::net::lookup_host((host, port));
    let addrs = tokio::time::timeout(std::time::Duration::from_secs(2), lookup)
        .await
        .ok()?
        .ok()?;
    let mut addrs: Vec<_> = addrs.map(|a| a.ip()).collect();
    // Prefer IPv4, and one stable choice across recomputations.
    addrs.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    addrs.first().map(ToString::to_string)
}

/// This zone's part of every mesh, for a zone ingress (which serves them all) and the counts it
/// advertises.
pub async fn load_all(
    store: &SharedStore,
    local_zone: &str,
) -> Result<Vec<MeshContext>, StoreError> {
    let mut out = Vec::new();
    for m in store.list(&ListQuery::all(ResourceType::Mesh)).await?.items {
        out.push(load_local(store, &m.meta.name, local_zone).await?.1);
    }
    Ok(out)
}

/// Which proxy a configuration is for: what it is built from differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    Sidecar,
    /// Serves every mesh's local instances to other zones.
    Ingress,
    /// Passes every mesh's cross-zone traffic to other zones' ingresses.
    Egress,
}

/// Whether a change to `key` can alter the configuration of a proxy of `kind` in `mesh`
/// (empty for zone proxies, which serve every mesh).
pub fn affects(key: &ResourceKey, kind: ProxyKind, mesh: &str) -> bool {
    match kind {
        ProxyKind::Ingress => {
            return matches!(
                key.kind,
                ResourceType::Mesh | ResourceType::Dataplane | ResourceType::ZoneIngress
            );
        }
        ProxyKind::Egress => {
            return matches!(
                key.kind,
                ResourceType::Mesh | ResourceType::ZoneIngress | ResourceType::ZoneEgress
            );
        }
        ProxyKind::Sidecar => {}
    }
    match key.kind {
        ResourceType::ZoneIngress | ResourceType::ZoneEgress => true,
        ResourceType::Mesh => key.name == mesh,
        // Dataplanes are endpoints and identities; Secrets hold the mesh's CA.
        ResourceType::Dataplane | ResourceType::Secret => key.mesh == mesh,
        kind => kind.descriptor().is_policy && key.mesh == mesh,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_changes_reach_sidecars_of_their_mesh_only() {
        let key = |kind, mesh: &str| ResourceKey::new(kind, mesh, "x");
        // Every policy type, from the descriptors: the ones without a plugin yet included.
        for kind in ResourceType::all().filter(|k| k.descriptor().is_policy) {
            assert!(
                affects(&key(kind, "default"), ProxyKind::Sidecar, "default"),
                "{kind}"
            );
            assert!(
                !affects(&key(kind, "other"), ProxyKind::Sidecar, "default"),
                "{kind}"
            );
            assert!(
                !affects(&key(kind, "default"), ProxyKind::Ingress, ""),
                "{kind}"
            );
        }
        assert!(!affects(
            &key(ResourceType::DataplaneInsight, "default"),
            ProxyKind::Sidecar,
            "default"
        ));
        assert!(affects(
            &ResourceKey::new(ResourceType::Mesh, "", "default"),
            ProxyKind::Sidecar,
            "default"
        ));
        assert!(affects(
            &key(ResourceType::Dataplane, "default"),
            ProxyKind::Ingress,
            ""
        ));
    }
}
