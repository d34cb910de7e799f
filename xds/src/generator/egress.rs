//! Zone egress configuration. In a mesh with `routing.zoneEgress`, sidecars send cross-zone
//! traffic to their zone's egress instead of straight to the other zones' ingresses. The
//! egress reads the SNI the sidecar set (`<service>{mesh=<mesh>}`) and passes the connection,
//! still encrypted, to the ingresses of the zones that run the service. Like the ingress it
//! never terminates the mesh's mTLS: the caller's identity reaches the called sidecar intact.
//! Other zones' MeshServices and MeshMultiZoneServices are routed the same way, by the hashed
//! SNI (`...ms`, `...mzms`) the sidecars give them.
//!
//! MeshExternalServices are the exception, as in Kuma: a sidecar of a mesh with mTLS sends
//! them to its zone's egress (SNI `...mes`), which terminates the mesh's mTLS with a
//! certificate of its own for that mesh (`spiffe://<mesh>/zone-egress`), checks the caller is
//! of the mesh, and opens the connection to the external endpoints itself, originating TLS as
//! the MeshExternalService says. The mesh's `routing.defaultForbidMeshExternalServiceAccess`
//! makes it refuse them.

use std::collections::{BTreeMap, BTreeSet};

use model::ResourceType;
use model::labels::SERVICE_TAG;
use serde_json::{Value, json};

use crate::context::{MeshContext, Protocol, ServiceSpec, ZoneProxyListener};
use crate::envoy::cluster::eds_cluster;
use crate::envoy::endpoints::lb_endpoint;
use crate::envoy::filters::{http_connection_manager, rewrite_host_to_upstream, tcp_proxy};
use crate::envoy::listener::sni_chain;
use crate::envoy::names::{service_sni, stat_name};
use crate::envoy::tls::inbound_mtls;
use crate::generator::common::{
    SniDestination, destination_cluster, tag_subsets, zone_proxy_listener,
};
use crate::generator::external;
use crate::generator::services::{resource_sni, sni_name};
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

/// Whether an egress terminates `mesh`'s mTLS, and so needs a certificate of that mesh: its
/// sidecars send it MeshExternalServices.
pub fn terminates_mtls(mesh: &MeshContext) -> bool {
    mesh.mtls
        && mesh
            .services
            .iter()
            .any(|s| s.kind == ResourceType::MeshExternalService)
}

/// The egress's filter chain and cluster for every port of every MeshExternalService of
/// `mesh`; what cannot be built is in `warnings`.
fn external_services(mesh: &MeshContext, out: &mut ProxyResources, chains: &mut Vec<Value>) {
    for service in &mesh.services {
        let Some(ServiceSpec::External(spec)) = service.spec.as_deref() else {
            continue;
        };
        for port in &service.ports {
            let name = service.cluster_name(&mesh.mesh, port.port);
            let cluster = match external::cluster(&name, spec, &mesh.external_secrets) {
                Ok(c) => c,
                Err(e) => {
                    out.warnings.push(format!(
                        "MeshExternalService {} in mesh {}: not routed: {e}",
                        service.name, mesh.mesh
                    ));
                    continue;
                }
            };
            let sni = resource_sni(
                &sni_name(service),
                &mesh.mesh,
                ResourceType::MeshExternalService,
                port.port,
            );
            let mut filters = Vec::new();
            if mesh.forbid_external_access {
                // An RBAC filter that allows no one.
                filters.push(json!({"name": "envoy.filters.network.rbac", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
                    "stat_prefix": stat_name(&name),
                    "rules": {}
                }}));
            }
            match Protocol::from_tag(port.app_protocol.as_ref()).is_http() {
                true => {
                    let mut hcm = http_connection_manager(&name, &name, &name, false);
                    rewrite_host_to_upstream(&mut hcm);
                    filters.push(hcm);
                }
                false => filters.push(tcp_proxy(&name, &name)),
            }
            chains.push(json!({
                "name": name,
                "filter_chain_match": {"server_names": [sni], "transport_protocol": "tls"},
                "filters": filters,
                "transport_socket": inbound_mtls(&mesh.mesh),
            }));
            out.clusters.push(cluster);
        }
    }
}

/// The egress's listener, clusters and endpoints for every mesh that routes through egresses
/// (and so has mTLS: the SNI is what routes), and for the MeshExternalServices of the meshes
/// in `identities` (those the egress has a certificate of).
pub fn generate(
    listener: &ZoneProxyListener,
    meshes: &[MeshContext],
    identities: &BTreeSet<String>,
) -> ProxyResources {
    let mut out = ProxyResources::default();
    let mut chains = Vec::new();
    for mesh in meshes
        .iter()
        .filter(|m| terminates_mtls(m) && identities.contains(&m.mesh))
    {
        external_services(mesh, &mut out, &mut chains);
    }
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
        // Other zones' MeshServices and the MeshMultiZoneServices that reach into other
        // zones, by the hashed SNI sidecars give them, to those zones' ingresses.
        for (sni, dest) in super::services::remote_service_destinations(mesh) {
            chains.push(sni_chain(&sni, &dest.cluster));
            out.clusters.push(eds_cluster(&dest.cluster));
            out.endpoints
                .push(std::sync::Arc::new(super::endpoints::load_assignment(
                    &dest.cluster,
                    &Default::default(),
                    &mesh.local_zone,
                    &BTreeMap::new(),
                    &[],
                    &dest.remote,
                )));
        }
    }
    out.listeners.extend(zone_proxy_listener(listener, chains));
    out
}
