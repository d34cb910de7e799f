//! Reading a mesh's parts from the store: what the snapshot cache and the ingress bookkeeping
//! share.

use model::ResourceType;
use model::specs::dataplane::DataplaneSpec;
use model::specs::mesh::MeshSpec;
use model::specs::zone::ZoneIngressSpec;
use store::{ListQuery, SharedStore, StoreError};
use xds::{DataplaneEntry, MeshContext, RemoteIngress};

pub(crate) fn mtls_enabled(spec: &MeshSpec) -> bool {
    spec.mtls_enabled()
}

pub(crate) fn zone_egress(spec: &MeshSpec) -> bool {
    spec.routing.as_ref().is_some_and(|r| r.zone_egress)
}

/// Another zone's ingress as sidecars dial it, if it advertises where and serves something.
/// A host name is resolved here: EDS endpoints must be IP addresses.
pub(crate) async fn remote_ingress(
    name: &str,
    spec: &ZoneIngressSpec,
    local_zone: &str,
) -> Option<RemoteIngress> {
    let n = &spec.networking;
    let (Some(port), false) = (n.advertised_port, n.advertised_address.is_empty()) else {
        return None;
    };
    if spec.zone.is_empty() || spec.zone == local_zone || spec.available_services.is_empty() {
        return None;
    }
    let address = match n.advertised_address.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => match resolve(&n.advertised_address, port).await {
            Some(ip) => ip,
            None => {
                tracing::warn!(ingress = %name, address = %n.advertised_address, "cannot resolve the ingress's advertised address; its zone is unreachable for now");
                return None;
            }
        },
    };
    Some(RemoteIngress {
        zone: spec.zone.clone(),
        address,
        port,
        services: spec.available_services.clone(),
    })
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

/// Every mesh's Dataplanes in this zone (with mTLS state, no policies): what the zone's
/// ingresses serve and advertise. A Dataplane whose spec does not parse is left out.
pub async fn load_all(
    store: &SharedStore,
    local_zone: &str,
) -> Result<Vec<MeshContext>, StoreError> {
    let mut out = Vec::new();
    for m in store.list(&ListQuery::all(ResourceType::Mesh)).await?.items {
        let spec: MeshSpec = serde_json::from_value(m.spec).unwrap_or_default();
        let mesh = m.meta.name;
        let mut dataplanes = Vec::new();
        for r in store
            .list(&ListQuery::in_mesh(ResourceType::Dataplane, &mesh))
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
        out.push(MeshContext {
            mtls: mtls_enabled(&spec),
            zone_egress: zone_egress(&spec),
            mesh,
            dataplanes,
            local_zone: local_zone.to_string(),
            ..Default::default()
        });
    }
    Ok(out)
}
