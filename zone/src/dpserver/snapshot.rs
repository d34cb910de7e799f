//! What the snapshot cache reads off a mesh's spec and other zones' ingresses.

use model::specs::mesh::MeshSpec;
use model::specs::zone::ZoneIngressSpec;
use xds::RemoteIngress;

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
