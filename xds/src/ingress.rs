//! Zone ingress configuration: one listener that reads the SNI of incoming TLS connections
//! (the TLS inspector) and passes each, still encrypted, to the local instances of the service
//! it names. The ingress never terminates the mesh's mTLS: the calling sidecar and the called
//! one authenticate each other end to end, and the ingress holds no mesh certificate.

use std::collections::BTreeMap;

use model::labels::SERVICE_TAG;
use serde_json::{Value, json};

use crate::sidecar::{
    CONNECT_TIMEOUT, ads_config, endpoint_address, inbound_ready, lb_endpoint, socket_address,
    tcp_proxy,
};
use crate::{MeshSnapshot, ProxyResources, ZoneProxyListener, service_sni};

/// Ready local endpoints of each destination in `mesh` another zone can ask for: a service,
/// or a service with up to [`MAX_SUBSET_TAGS`] of its instances' other tags (what an outbound
/// selecting a subset puts in its SNI).
fn local_destinations(mesh: &MeshSnapshot) -> BTreeMap<Destination, Vec<(String, u32)>> {
    let mut out: BTreeMap<Destination, Vec<(String, u32)>> = BTreeMap::new();
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

/// A service and a subset of its tags, as a cross-zone SNI names it.
pub(crate) type Destination = (String, BTreeMap<String, String>);

/// How many tags besides the service an SNI may select at an ingress or egress: outbounds that
/// select more cannot be routed across zones (subsets grow exponentially with tags).
pub const MAX_SUBSET_TAGS: usize = 2;

/// Every subset of `tags` other than the service tag with at most [`MAX_SUBSET_TAGS`] entries,
/// the empty one first.
pub(crate) fn tag_subsets(tags: &BTreeMap<String, String>) -> Vec<BTreeMap<String, String>> {
    let extra: Vec<(&String, &String)> = tags.iter().filter(|(k, _)| *k != SERVICE_TAG).collect();
    let mut out = vec![BTreeMap::new()];
    // Subsets of size n+1 extend those of size n with a later tag, so none repeats.
    let mut frontier = vec![(0, BTreeMap::new())];
    for _ in 0..MAX_SUBSET_TAGS {
        let mut next = Vec::new();
        for (start, subset) in &frontier {
            for (i, (k, v)) in extra.iter().enumerate().skip(*start) {
                let mut bigger: BTreeMap<String, String> = subset.clone();
                bigger.insert((*k).clone(), (*v).clone());
                out.push(bigger.clone());
                next.push((i + 1, bigger));
            }
        }
        frontier = next;
    }
    out
}

/// The cluster an ingress or egress passes a destination's connections to.
pub(crate) fn destination_cluster(mesh: &str, (service, subset): &Destination) -> String {
    if subset.is_empty() {
        return format!("{mesh}:{service}");
    }
    let tags: Vec<String> = subset.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{mesh}:{service}{{{}}}", tags.join(","))
}

/// The ingress's listener, clusters and endpoints for every mesh with mTLS (cross-zone
/// traffic needs it: the SNI is what routes).
pub fn generate(listener: &ZoneProxyListener, meshes: &[MeshSnapshot]) -> ProxyResources {
    let mut out = ProxyResources::default();
    let mut chains = Vec::new();
    for mesh in meshes.iter().filter(|m| m.mtls) {
        for (dest, endpoints) in local_destinations(mesh) {
            let sni = service_sni(&dest.0, &mesh.mesh, &dest.1);
            let cluster = destination_cluster(&mesh.mesh, &dest);
            chains.push(sni_chain(&sni, &cluster));
            out.clusters.push(eds_cluster(&cluster));
            let lb_endpoints: Vec<Value> = endpoints
                .iter()
                .map(|(a, p)| lb_endpoint(a, *p, None))
                .collect();
            out.endpoints.push(json!({
                "cluster_name": cluster,
                "endpoints": if lb_endpoints.is_empty() { json!([]) } else { json!([{"lb_endpoints": lb_endpoints}]) }
            }));
        }
    }
    out.listeners.extend(sni_listener(listener, chains));
    out
}

/// A filter chain that passes TLS connections for `sni`, still encrypted, to `cluster`.
pub(crate) fn sni_chain(sni: &str, cluster: &str) -> Value {
    json!({
        "filter_chain_match": {"server_names": [sni], "transport_protocol": "tls"},
        "filters": [tcp_proxy(cluster, cluster)]
    })
}

pub(crate) fn eds_cluster(name: &str) -> Value {
    json!({
        "name": name,
        "type": "EDS",
        "eds_cluster_config": {"eds_config": ads_config()},
        "connect_timeout": CONNECT_TIMEOUT
    })
}

/// The listener that reads each connection's SNI (TLS inspector) and picks its chain; none
/// when there is nothing to serve, as Envoy refuses a listener without filter chains.
pub(crate) fn sni_listener(listener: &ZoneProxyListener, chains: Vec<Value>) -> Option<Value> {
    if chains.is_empty() {
        return None;
    }
    Some(json!({
        "name": format!("inbound:{}:{}", listener.address, listener.port),
        "address": socket_address(&listener.address, listener.port),
        "traffic_direction": "INBOUND",
        "listener_filters": [{
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}
        }],
        "filter_chains": chains
    }))
}

/// What a zone's ingresses advertise: per mesh and distinct inbound tag set, how many ready
/// local instances there are. Kept in `ZoneIngress.availableServices` for other zones.
pub fn available_services(meshes: &[MeshSnapshot]) -> Vec<model::specs::zone::AvailableService> {
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
