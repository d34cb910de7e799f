//! Sidecar configuration: an inbound listener per `networking.inbound` forwarding to the
//! application, an outbound listener per `networking.outbound` on loopback, and one EDS cluster
//! per destination whose endpoints are the healthy inbounds in the mesh with matching tags.

use std::collections::{BTreeMap, BTreeSet};

use model::labels::{PROTOCOL_TAG, SERVICE_TAG};
use model::specs::dataplane::{Inbound, InboundState, Outbound};
use serde_json::{Value, json};

use crate::lb::{self, LocalEndpoint, RemoteZone};
use crate::{
    DataplaneEntry, MeshSnapshot, ProxyResources, XdsError, identity_secret_name,
    mesh_ca_secret_name, rbac, service_sni, spiffe_id, stat_name,
};

pub(crate) const CONNECT_TIMEOUT: &str = "5s";
const TLS_SOCKET: &str = "envoy.transport_sockets.tls";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Tcp,
    Http,
    Http2,
    Grpc,
}

impl Protocol {
    fn from_tag(tag: Option<&String>) -> Protocol {
        match tag.map(String::as_str) {
            Some("http") => Protocol::Http,
            Some("http2") => Protocol::Http2,
            Some("grpc") => Protocol::Grpc,
            _ => Protocol::Tcp,
        }
    }

    fn is_http(self) -> bool {
        self != Protocol::Tcp
    }

    fn needs_http2_upstream(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }
}

pub(crate) fn ads_config() -> Value {
    json!({"ads": {}, "resource_api_version": "V3"})
}

fn sds(name: String) -> Value {
    json!({"name": name, "sds_config": ads_config()})
}

pub(crate) fn socket_address(address: &str, port: u32) -> Value {
    json!({"socket_address": {"address": address, "port_value": port}})
}

/// One endpoint of a load assignment, with its weight when it has one.
pub(crate) fn lb_endpoint(address: &str, port: u32, weight: Option<u32>) -> Value {
    let mut e = json!({"endpoint": {"address": socket_address(address, port)}});
    if let Some(w) = weight {
        e["load_balancing_weight"] = json!(w);
    }
    e
}

fn http2_upstream_options() -> Value {
    json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}}
    }})
}

fn http_connection_manager(
    stat_prefix: &str,
    route_name: &str,
    cluster: &str,
    inbound_mtls: bool,
) -> Value {
    let mut hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_name(stat_prefix),
        "codec_type": "AUTO",
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        "route_config": {
            "name": route_name,
            "validate_clusters": false,
            "virtual_hosts": [{
                "name": cluster,
                "domains": ["*"],
                // No route timeout by default: streaming and long-polling calls stay open.
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}]
            }]
        }
    });
    if inbound_mtls {
        // The application learns who called it from the verified client certificate; any
        // XFCC header the caller sent itself is replaced.
        hcm["forward_client_cert_details"] = json!("SANITIZE_SET");
        hcm["set_current_client_cert_details"] = json!({"uri": true});
    }
    json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm})
}

pub(crate) fn tcp_proxy(stat_prefix: &str, cluster: &str) -> Value {
    json!({"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": stat_name(stat_prefix),
        "cluster": cluster
    }})
}

/// Where an inbound listens: its own address, else the Dataplane's.
fn inbound_address<'a>(entry: &'a DataplaneEntry, inbound: &'a Inbound) -> &'a str {
    if inbound.address.is_empty() {
        &entry.spec.networking.address
    } else {
        &inbound.address
    }
}

/// Where other proxies reach an inbound: the Dataplane's advertised address, else where the
/// inbound listens.
pub(crate) fn endpoint_address<'a>(entry: &'a DataplaneEntry, inbound: &'a Inbound) -> &'a str {
    match entry.spec.networking.advertised_address.as_str() {
        "" => inbound_address(entry, inbound),
        advertised => advertised,
    }
}

/// Kuma's reading of inbound health: `state` wins, then `health.ready`; absent means ready.
pub(crate) fn inbound_ready(inbound: &Inbound) -> bool {
    match inbound.state {
        Some(InboundState::Ready) => true,
        Some(InboundState::NotReady | InboundState::Ignored) => false,
        None => inbound.health.as_ref().is_none_or(|h| h.ready),
    }
}

/// The tags an outbound selects destinations by (`backendRef` to a MeshService by name is
/// read as `kuma.io/service: <name>`); `None` for references this generator cannot resolve.
fn outbound_tags(outbound: &Outbound) -> Option<BTreeMap<String, String>> {
    if !outbound.tags.is_empty() {
        return Some(outbound.tags.clone());
    }
    let r = outbound.backend_ref.as_ref()?;
    (r.kind == "MeshService" && !r.name.is_empty())
        .then(|| BTreeMap::from([(SERVICE_TAG.to_string(), r.name.clone())]))
}

/// A cluster per distinct destination: the service name, or the name with a hash of the extra
/// tags when an outbound selects a subset.
fn cluster_name(tags: &BTreeMap<String, String>) -> String {
    let service = tags.get(SERVICE_TAG).map(String::as_str).unwrap_or("");
    if tags.len() == 1 {
        return service.to_string();
    }
    let text: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.join(",").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{service}-{h:016x}")
}

struct Destination {
    cluster: String,
    tags: BTreeMap<String, String>,
    endpoints: Vec<LocalEndpoint>,
    /// Other zones' ingresses that serve it: (zone, address, port, instances behind it).
    remote: Vec<(String, String, u32, u32)>,
    protocol: Protocol,
}

/// Whether `tags` (an outbound's) select `candidate` (an inbound's or an available service's).
fn selects(tags: &BTreeMap<String, String>, candidate: &BTreeMap<String, String>) -> bool {
    tags.iter().all(|(k, v)| candidate.get(k) == Some(v))
}

/// Healthy inbounds anywhere in the mesh whose tags include every tag of the outbound; the
/// protocol is theirs when they agree, TCP when they do not (or when there are none).
fn resolve(mesh: &MeshSnapshot, tags: BTreeMap<String, String>) -> Destination {
    let mut endpoints = Vec::new();
    let mut protocols = BTreeSet::new();
    for dp in &mesh.dataplanes {
        for inbound in &dp.spec.networking.inbound {
            if !selects(&tags, &inbound.tags) {
                continue;
            }
            protocols.insert(inbound.tags.get(PROTOCOL_TAG).cloned().unwrap_or_default());
            if inbound_ready(inbound) {
                let mut tags = dp.labels.clone();
                tags.extend(inbound.tags.clone());
                endpoints.push(LocalEndpoint {
                    address: endpoint_address(dp, inbound).to_string(),
                    port: inbound.port,
                    tags,
                });
            }
        }
    }
    // Cross-zone traffic rides the mesh's mTLS: the remote ingress routes on its SNI.
    let mut remote = Vec::new();
    // Ingresses and egresses route subsets of up to MAX_SUBSET_TAGS tags; a narrower
    // selection stays in this zone rather than reach an ingress that cannot route it.
    let routable = tags.len() <= 1 + crate::ingress::MAX_SUBSET_TAGS;
    if mesh.mtls && routable {
        for ingress in &mesh.remote_ingresses {
            if ingress.zone == mesh.local_zone {
                continue;
            }
            let mut instances = 0;
            for s in &ingress.services {
                if s.mesh == mesh.mesh && !s.external_service && selects(&tags, &s.tags) {
                    instances += s.instances;
                    protocols.insert(s.tags.get(PROTOCOL_TAG).cloned().unwrap_or_default());
                }
            }
            if instances > 0 {
                remote.push((
                    ingress.zone.clone(),
                    ingress.address.clone(),
                    ingress.port,
                    instances,
                ));
            }
        }
        remote.sort();
    }
    let protocol = match protocols.len() {
        1 => Protocol::from_tag(protocols.iter().next()),
        _ => Protocol::Tcp,
    };
    endpoints.sort();
    endpoints.dedup_by(|a, b| (&a.address, a.port) == (&b.address, b.port));
    Destination {
        cluster: cluster_name(&tags),
        tags,
        endpoints,
        remote,
        protocol,
    }
}

fn inbound_resources(
    mesh: &MeshSnapshot,
    proxy: &DataplaneEntry,
    inbound: &Inbound,
    out: &mut ProxyResources,
) {
    let address = inbound_address(proxy, inbound);
    let port = inbound.port;
    let service_port = inbound.effective_service_port();
    let service_address = match inbound.service_address.as_str() {
        "" => "127.0.0.1",
        a => a,
    };
    let protocol = Protocol::from_tag(inbound.tags.get(PROTOCOL_TAG));
    let local_cluster = format!("localhost:{service_port}");
    let mut cluster = json!({
        "name": local_cluster,
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
        "load_assignment": {
            "cluster_name": local_cluster,
            "endpoints": [{"lb_endpoints": [lb_endpoint(service_address, service_port, None)]}]
        }
    });
    if protocol.needs_http2_upstream() {
        cluster["typed_extension_protocol_options"] = http2_upstream_options();
    }
    if !out.clusters.iter().any(|c| c["name"] == local_cluster) {
        out.clusters.push(cluster);
    }

    let listener_name = format!("inbound:{address}:{port}");
    let mut filters = Vec::new();
    if mesh.mtls {
        filters.push(rbac::inbound_filter(mesh, proxy, inbound, &listener_name));
    }
    filters.push(if protocol.is_http() {
        http_connection_manager(
            &local_cluster,
            &format!("inbound:{}", inbound.service()),
            &local_cluster,
            mesh.mtls,
        )
    } else {
        tcp_proxy(&local_cluster, &local_cluster)
    });
    let mut chain = json!({"filters": filters});
    if mesh.mtls {
        chain["transport_socket"] = json!({"name": TLS_SOCKET, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": true,
            "common_tls_context": {
                "tls_certificate_sds_secret_configs": [sds(identity_secret_name(&mesh.mesh))],
                "combined_validation_context": {
                    "default_validation_context": {"match_typed_subject_alt_names": [
                        {"san_type": "URI", "matcher": {"prefix": format!("spiffe://{}/", mesh.mesh)}}
                    ]},
                    "validation_context_sds_secret_config": sds(mesh_ca_secret_name(&mesh.mesh))
                }
            }
        }});
    }
    out.listeners.push(json!({
        "name": listener_name,
        "address": socket_address(address, port),
        "traffic_direction": "INBOUND",
        "enable_reuse_port": false,
        "filter_chains": [chain]
    }));
}

fn outbound_resources(
    mesh: &MeshSnapshot,
    proxy: &DataplaneEntry,
    outbound: &Outbound,
    tags: BTreeMap<String, String>,
    out: &mut ProxyResources,
) {
    let address = match outbound.address.as_str() {
        "" => "127.0.0.1",
        a => a,
    };
    let dest = resolve(mesh, tags);
    let service = dest.tags.get(SERVICE_TAG).cloned().unwrap_or_default();
    let lb = lb::effective(&mesh.load_balancing, proxy, &service);
    if !out.clusters.iter().any(|c| c["name"] == dest.cluster) {
        let mut cluster = json!({
            "name": dest.cluster,
            "type": "EDS",
            "eds_cluster_config": {"eds_config": ads_config()},
            "connect_timeout": CONNECT_TIMEOUT
        });
        if dest.protocol.needs_http2_upstream() {
            cluster["typed_extension_protocol_options"] = http2_upstream_options();
        }
        if let Some(c) = cluster.as_object_mut() {
            c.extend(lb::cluster_fields(&lb));
        }
        if mesh.mtls {
            cluster["transport_socket"] = json!({"name": TLS_SOCKET, "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": service_sni(&service, &mesh.mesh, &dest.tags),
                "common_tls_context": {
                    "alpn_protocols": ["kuma"],
                    "tls_certificate_sds_secret_configs": [sds(identity_secret_name(&mesh.mesh))],
                    "combined_validation_context": {
                        "default_validation_context": {"match_typed_subject_alt_names": [
                            {"san_type": "URI", "matcher": {"exact": spiffe_id(&mesh.mesh, &service)}}
                        ]},
                        "validation_context_sds_secret_config": sds(mesh_ca_secret_name(&mesh.mesh))
                    }
                }
            }});
        }
        out.clusters.push(cluster);
        out.endpoints
            .push(load_assignment(&dest, mesh, &lb, &lb::caller_tags(proxy)));
    }
    let listener_name = format!("outbound:{address}:{}", outbound.port);
    let filter = if dest.protocol.is_http() {
        let mut hcm = http_connection_manager(
            &dest.cluster,
            &format!("outbound:{service}"),
            &dest.cluster,
            false,
        );
        let hash_policy = lb::route_hash_policies(&lb);
        if !hash_policy.is_empty() {
            hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["hash_policy"] =
                json!(hash_policy);
        }
        hcm
    } else {
        let mut tcp = tcp_proxy(&dest.cluster, &dest.cluster);
        let hash_policy = lb::tcp_hash_policies(&lb);
        if !hash_policy.is_empty() {
            tcp["typed_config"]["hash_policy"] = json!(hash_policy);
        }
        tcp
    };
    out.listeners.push(json!({
        "name": listener_name,
        "address": socket_address(address, outbound.port),
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"filters": [filter]}]
    }));
}

/// Endpoints by locality: this zone's instances at priority 0, each other zone's ingress at
/// priority 1 weighted by the instances behind it, unless a MeshLoadBalancingStrategy says
/// otherwise ([`lb`]). Envoy sends traffic to another zone only when this zone has no healthy
/// instance left, so calls stay local by default. With `routing.zoneEgress` the other zones
/// are reached through this zone's egresses, which pass the connection on by its SNI; with no
/// egress in the zone, nothing leaves it.
fn load_assignment(
    dest: &Destination,
    mesh: &MeshSnapshot,
    conf: &lb::Effective,
    caller_tags: &BTreeMap<String, String>,
) -> Value {
    let remote: Vec<RemoteZone> = dest
        .remote
        .iter()
        .map(|(zone, address, port, instances)| RemoteZone {
            zone: zone.clone(),
            via: if mesh.zone_egress {
                mesh.local_egresses.clone()
            } else {
                vec![(address.clone(), *port)]
            },
            instances: *instances,
        })
        .collect();
    lb::load_assignment(
        &dest.cluster,
        conf,
        &mesh.local_zone,
        caller_tags,
        &dest.endpoints,
        &remote,
    )
}

/// The configuration of sidecar `proxy_name` in `mesh`.
pub fn generate(mesh: &MeshSnapshot, proxy_name: &str) -> Result<ProxyResources, XdsError> {
    let proxy = mesh
        .dataplanes
        .iter()
        .find(|d| d.name == proxy_name)
        .ok_or_else(|| XdsError::UnknownProxy(proxy_name.to_string(), mesh.mesh.clone()))?;
    let mut out = ProxyResources::default();
    for inbound in &proxy.spec.networking.inbound {
        if inbound.state == Some(InboundState::Ignored) {
            continue;
        }
        inbound_resources(mesh, proxy, inbound, &mut out);
    }
    for outbound in &proxy.spec.networking.outbound {
        // A reference that cannot be resolved yet gets no listener rather than failing the proxy.
        if let Some(tags) = outbound_tags(outbound) {
            outbound_resources(mesh, proxy, outbound, tags, &mut out);
        }
    }
    if mesh.mtls {
        out.secret_names = vec![
            identity_secret_name(&mesh.mesh),
            mesh_ca_secret_name(&mesh.mesh),
        ];
    }
    Ok(out)
}

/// The URI SANs of a proxy's certificate: `spiffe://<mesh>/<service>` per inbound service and
/// `kuma://<tag>/<value>` for its other tags (what MeshSubset permissions match on).
pub fn identity_uris(mesh: &str, proxy: &DataplaneEntry) -> Vec<String> {
    let mut services = BTreeSet::new();
    let mut tags = BTreeSet::new();
    let gateway_tags = proxy.spec.networking.gateway.iter().map(|g| &g.tags);
    for t in proxy
        .spec
        .networking
        .inbound
        .iter()
        .map(|i| &i.tags)
        .chain(gateway_tags)
    {
        for (k, v) in t {
            if k == SERVICE_TAG {
                services.insert(spiffe_id(mesh, v));
            } else {
                tags.insert(format!("kuma://{k}/{v}"));
            }
        }
    }
    services.into_iter().chain(tags).collect()
}
