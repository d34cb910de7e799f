//! Zone egress configuration. In a mesh with `routing.zoneEgress`, sidecars send cross-zone
//! traffic to their zone's egress instead of straight to the other zones' ingresses. The
//! egress reads the SNI the sidecar set (`<service>{mesh=<mesh>}`) and passes the connection,
//! still encrypted, to the ingresses of the zones that run the service. Like the ingress it
//! never terminates the mesh's mTLS: the caller's identity reaches the called sidecar intact.

use std::collections::BTreeMap;

use model::labels::SERVICE_TAG;
use serde_json::{Value, json};

use crate::context::{MeshContext, ZoneProxyListener};
use crate::envoy::cluster::eds_cluster;
use crate::envoy::endpoints::lb_endpoint;
use crate::envoy::listener::sni_chain;
use crate::envoy::names::service_sni;
use crate::generator::common::{
    SniDestination, destination_cluster, tag_subsets, zone_proxy_listener,
};
use crate::resources::ProxyResources;

/// Per destination of `mesh` (a service, or a service with a subset of tags) that runs in
/// other zones: (zone, ingress address, port, instances).
fn remote_destinations(
    mesh: &MeshContext,
) -> BTreeMap<SniDestination, Vec<(String, String, u32, u32)>> {
    let mut out: BTreeMap<SniDestination, Vec<(String, String, u32, u32)>> = BTreeMap::new();
    for ingress in &mesh.remote_ingresses {
        if ingress.zone == mesh.local_zone {
            continue;
        }
        let mut counts: BTreeMap<SniDestination, u32> = BTreeMap::new();
        for s in &ingress.services {
            if s.mesh != mesh.mesh || s.external_service {
                continue;
            }
            if let Some(service) = s.tags.get(SERVICE_TAG) {
                for subset in tag_subsets(&s.tags) {
                    *counts.entry((service.clone(), subset)).or_default() += s.instances;
                }
            }
        }
        for (dest, instances) in counts.into_iter().filter(|(_, n)| *n > 0) {
            out.entry(dest).or_default().push((
                ingress.zone.clone(),
                ingress.address.clone(),
                ingress.port,
                instances,
            ));
        }
    }
    for ingresses in out.values_mut() {
        ingresses.sort();
    }
    out
}

/// The egress's listener, clusters and endpoints for every mesh that routes through egresses
/// (and so has mTLS: the SNI is what routes).
pub fn generate(listener: &ZoneProxyListener, meshes: &[MeshContext]) -> ProxyResources {
    let mut out = ProxyResources::default();
    let mut chains = Vec::new();
    for mesh in meshes.iter().filter(|m| m.mtls && m.zone_egress) {
        for (dest, ingresses) in remote_destinations(mesh) {
            let sni = service_sni(&dest.0, &mesh.mesh, &dest.1);
            let cluster = destination_cluster(&mesh.mesh, &dest);
            chains.push(sni_chain(&sni, &cluster));
            out.clusters.push(eds_cluster(&cluster));
            // Every zone that has the service shares the load by its instance count.
            let groups: Vec<Value> = ingresses
                .iter()
                .map(|(zone, address, port, instances)| {
                    json!({
                        "locality": {"zone": zone},
                        "lb_endpoints": [lb_endpoint(address, *port, Some(*instances))]
                    })
                })
                .collect();
            out.endpoints.push(std::sync::Arc::new(
                json!({"cluster_name": cluster, "endpoints": groups}),
            ));
        }
    }
    out.listeners.extend(zone_proxy_listener(listener, chains));
    out
}
