//! Zone ingress configuration: one listener that reads the SNI of incoming TLS connections
//! (the TLS inspector) and passes each, still encrypted, to the local instances of the service
//! it names. The ingress never terminates the mesh's mTLS: the calling sidecar and the called
//! one authenticate each other end to end, and the ingress holds no mesh certificate.

use std::collections::BTreeMap;

use model::labels::SERVICE_TAG;

use crate::context::{MeshContext, ZoneProxyListener};
use crate::envoy::cluster::eds_cluster;
use crate::envoy::endpoints::single_group;
use crate::envoy::listener::sni_chain;
use crate::envoy::names::service_sni;
use crate::generator::common::{
    SniDestination, destination_cluster, endpoint_address, inbound_ready, tag_subsets,
    zone_proxy_listener,
};
use crate::resources::ProxyResources;

/// Ready local endpoints of each destination in `mesh` another zone can ask for: a service,
/// or a service with up to [`MAX_SUBSET_TAGS`] of its instances' other tags (what an outbound
/// selecting a subset puts in its SNI).
fn local_destinations(mesh: &MeshContext) -> BTreeMap<SniDestination, Vec<(String, u32)>> {
    let mut out: BTreeMap<SniDestination, Vec<(String, u32)>> = BTreeMap::new();
    for dp in &mesh.dataplanes {
        for inbound in &dp.spec.networking.inbound {
            let Some(service) = inbound.tags.get(SERVICE_TAG) else {
                continue;
            };
            for subset in tag_subsets(&inbound.tags) {
                let endpoints = out.entry((service.clone(), subset)).or_default();
                if inbound_ready(inbound) {
                    endpoints.push((endpoint_address(dp, inbound).to_string(), inbound.port));
                }
            }
        }
    }
    for endpoints in out.values_mut() {
        endpoints.sort();
        endpoints.dedup();
    }
    out
}

/// The ingress's listener, clusters and endpoints for every mesh with mTLS (cross-zone
/// traffic needs it: the SNI is what routes).
pub fn generate(listener: &ZoneProxyListener, meshes: &[MeshContext]) -> ProxyResources {
    let mut out = ProxyResources::default();
    let mut chains = Vec::new();
    for mesh in meshes.iter().filter(|m| m.mtls) {
        for (dest, endpoints) in local_destinations(mesh) {
            let sni = service_sni(&dest.0, &mesh.mesh, &dest.1);
            let cluster = destination_cluster(&mesh.mesh, &dest);
            chains.push(sni_chain(&sni, &cluster));
            out.clusters.push(eds_cluster(&cluster));
            out.endpoints
                .push(std::sync::Arc::new(single_group(&cluster, &endpoints)));
        }
        // This zone's MeshServices, by the SNI other zones' sidecars give them.
        for (sni, dest) in super::services::local_service_destinations(mesh) {
            let endpoints: Vec<(String, u32)> = dest
                .endpoints
                .iter()
                .map(|e| (e.address.clone(), e.port))
                .collect();
            chains.push(sni_chain(&sni, &dest.cluster));
            out.clusters.push(eds_cluster(&dest.cluster));
            out.endpoints
                .push(std::sync::Arc::new(single_group(&dest.cluster, &endpoints)));
        }
    }
    out.listeners.extend(zone_proxy_listener(listener, chains));
    out
}

/// What a zone's ingresses advertise: per mesh and distinct inbound tag set, how many ready
/// local instances there are. Kept in `ZoneIngress.availableServices` for other zones.
pub fn available_services<'a>(
    meshes: impl IntoIterator<Item = &'a MeshContext>,
) -> Vec<model::specs::zone::AvailableService> {
    let mut counts: BTreeMap<(String, BTreeMap<String, String>), u32> = BTreeMap::new();
    for mesh in meshes {
        for dp in &mesh.dataplanes {
            for inbound in &dp.spec.networking.inbound {
                if !inbound.tags.contains_key(SERVICE_TAG) || !inbound_ready(inbound) {
                    continue;
                }
                *counts
                    .entry((mesh.mesh.clone(), inbound.tags.clone()))
                    .or_default() += 1;
            }
        }
    }
    counts
        .into_iter()
        .map(
            |((mesh, tags), instances)| model::specs::zone::AvailableService {
                tags,
                instances,
                mesh,
                external_service: false,
            },
        )
        .collect()
}
