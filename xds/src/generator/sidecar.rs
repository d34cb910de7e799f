//! Sidecar configuration: an inbound listener per `networking.inbound` forwarding to the
//! application, an outbound listener per `networking.outbound` on loopback, and one EDS cluster
//! per destination whose endpoints are the healthy inbounds in the mesh with matching tags
//! (and, with mTLS, other zones' ingresses that serve them). Policies are applied afterwards,
//! by the plugins, on the [`ResourceSet`] built here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

use model::labels::{PROTOCOL_TAG, SERVICE_TAG};
use model::specs::dataplane::{Inbound, InboundState, Outbound};
use model::specs::policy::LocalityAwareness;

use crate::context::{DataplaneEntry, MeshContext, Protocol};
use crate::envoy::cluster::{
    eds_cluster, set_transport_socket, static_cluster, use_http2_upstream,
};
use crate::envoy::filters::{http_connection_manager, tcp_proxy};
use crate::envoy::listener::{filter_chain, inbound_listener, listener};
use crate::envoy::names::{identity_secret_name, mesh_ca_secret_name, service_sni, spiffe_id};
use crate::envoy::routes::subset_cluster_name;
use crate::envoy::tls::{inbound_mtls, outbound_mtls};
use crate::generator::common::{MAX_SUBSET_TAGS, inbound_address, inbound_ready};
use crate::generator::endpoints::destination_assignment;
use crate::resources::{Destination, LocalEndpoint, Origin, RemoteZone, ResourceSet};

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

/// A cluster per distinct destination: the service name, or Kuma's name for a subset when an
/// outbound selects more than the service.
fn cluster_name(tags: &BTreeMap<String, String>) -> String {
    let service = tags.get(SERVICE_TAG).map(String::as_str).unwrap_or("");
    if tags.len() == 1 {
        return service.to_string();
    }
    subset_cluster_name(service, tags)
}

/// Whether `tags` (an outbound's) select `candidate` (an inbound's or an available service's).
fn selects(tags: &BTreeMap<String, String>, candidate: &BTreeMap<String, String>) -> bool {
    tags.iter().all(|(k, v)| candidate.get(k) == Some(v))
}

/// Healthy inbounds anywhere in the mesh whose tags include every tag of the outbound, and
/// other zones that serve them; the protocol is theirs when they agree, TCP when they do not
/// (or when there are none).
fn resolve(mesh: &MeshContext, tags: BTreeMap<String, String>) -> Destination {
    let mut endpoints = Vec::new();
    let mut protocols = BTreeSet::new();
    for dp in &mesh.dataplanes {
        for inbound in &dp.spec.networking.inbound {
            if !selects(&tags, &inbound.tags) {
                continue;
            }
            protocols.insert(inbound.tags.get(PROTOCOL_TAG).cloned().unwrap_or_default());
            if inbound_ready(inbound) {
                endpoints.push(LocalEndpoint::of(dp, inbound));
            }
        }
    }
    // Cross-zone traffic rides the mesh's mTLS: the remote ingress routes on its SNI.
    let mut remote = Vec::new();
    // Ingresses and egresses route subsets of up to MAX_SUBSET_TAGS tags; a narrower
    // selection stays in this zone rather than reach an ingress that cannot route it.
    let routable = tags.len() <= 1 + MAX_SUBSET_TAGS;
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
    // With `routing.zoneEgress` other zones are reached through this zone's egresses, which
    // pass the connection on by its SNI; with no egress in the zone, nothing leaves it.
    let remote = remote
        .into_iter()
        .map(|(zone, address, port, instances)| RemoteZone {
            zone,
            via: if mesh.zone_egress {
                mesh.local_egresses.clone()
            } else {
                vec![(address, port)]
            },
            instances,
        })
        .collect();
    Destination {
        cluster: cluster_name(&tags),
        service: tags.get(SERVICE_TAG).cloned().unwrap_or_default(),
        tags,
        endpoints,
        remote,
        protocol,
        sni: None,
        identities: Vec::new(),
        external: None,
    }
}

/// The destination `tags` resolve to in `mesh`, resolved once per snapshot when its proxies
/// share work.
pub(crate) fn resolved(mesh: &MeshContext, tags: &BTreeMap<String, String>) -> Arc<Destination> {
    match &mesh.shared {
        // Cloned only the first time: every later proxy finds the resolved destination.
        Some(shared) => shared.destination(tags, || resolve(mesh, tags.clone())),
        None => Arc::new(resolve(mesh, tags.clone())),
    }
}

/// The index in `out` of the destination `tags` resolve to, added with its cluster and load
/// assignment the first time a proxy's outbounds or routes send to it.
pub(crate) fn destination_for(
    mesh: &MeshContext,
    proxy: &DataplaneEntry,
    tags: &BTreeMap<String, String>,
    out: &mut ResourceSet,
) -> usize {
    let dest = resolved(mesh, tags);
    if let Some(d) = out
        .destinations
        .iter()
        .position(|d| d.cluster == dest.cluster)
    {
        return d;
    }
    add_destination(mesh, proxy, dest, out)
}

/// Adds `dest` with its cluster and load assignment; its index in `out`.
pub(crate) fn add_destination(
    mesh: &MeshContext,
    proxy: &DataplaneEntry,
    dest: Arc<Destination>,
    out: &mut ResourceSet,
) -> usize {
    if let Some(Ok(cluster)) = &dest.external {
        let cluster = cluster.clone();
        return out.add_destination(dest, cluster, LocalityAwareness::default(), None);
    }
    let mut cluster = eds_cluster(&dest.cluster);
    if dest.protocol.needs_http2_upstream() {
        use_http2_upstream(&mut cluster);
    }
    if mesh.mtls {
        let sni = match &dest.sni {
            Some(sni) => sni.clone(),
            None => service_sni(&dest.service, &mesh.mesh, &dest.tags),
        };
        let identities = match dest.identities.is_empty() {
            true => std::slice::from_ref(&dest.service),
            false => dest.identities.as_slice(),
        };
        set_transport_socket(&mut cluster, outbound_mtls(&mesh.mesh, identities, &sni));
    }
    let locality = LocalityAwareness::default();
    let assignment = destination_assignment(mesh, &dest, &locality, &proxy.caller_tags());
    out.add_destination(dest, cluster, locality, Some(assignment))
}

fn inbound_resources(
    mesh: &MeshContext,
    proxy: &DataplaneEntry,
    index: usize,
    inbound: &Inbound,
    redirected: bool,
    out: &mut ResourceSet,
) {
    let origin = Origin::Inbound(index);
    let address = inbound_address(proxy, inbound);
    let port = inbound.port;
    let service_port = inbound.effective_service_port();
    let service_address = match inbound.service_address.as_str() {
        "" => "127.0.0.1",
        a => a,
    };
    let protocol = Protocol::of_tags(&inbound.tags);
    let local_cluster = format!("localhost:{service_port}");
    let mut cluster = static_cluster(&local_cluster, service_address, service_port);
    if protocol.needs_http2_upstream() {
        use_http2_upstream(&mut cluster);
    }
    if !out.has_cluster(&local_cluster) {
        out.add_cluster(origin, cluster);
    }

    let listener_name = format!("inbound:{address}:{port}");
    let filter = if protocol.is_http() {
        http_connection_manager(
            &local_cluster,
            &format!("inbound:{}", inbound.service()),
            &local_cluster,
            mesh.mtls,
        )
    } else {
        tcp_proxy(&local_cluster, &local_cluster)
    };
    let mut chain = filter_chain(vec![filter]);
    if mesh.mtls {
        chain["transport_socket"] = inbound_mtls(&mesh.mesh);
    }
    let mut l = inbound_listener(&listener_name, address, port, vec![chain]);
    if redirected {
        // iptables brings its traffic to the inbound passthrough listener, which hands it
        // here; bound, it would take the application's own port.
        l["bind_to_port"] = Value::Bool(false);
    }
    out.add_listener(origin, l);
}

fn outbound_resources(
    mesh: &MeshContext,
    proxy: &DataplaneEntry,
    index: usize,
    outbound: &Outbound,
    tags: BTreeMap<String, String>,
    out: &mut ResourceSet,
) {
    let address = match outbound.address.as_str() {
        "" => "127.0.0.1",
        a => a,
    };
    let destination = destination_for(mesh, proxy, &tags, out);
    let listener_name = format!("outbound:{address}:{}", outbound.port);
    let l = outbound_listener(
        &listener_name,
        address,
        outbound.port,
        &out.destinations[destination],
    );
    out.add_listener(
        Origin::Outbound {
            outbound: Some(index),
            destination,
        },
        l,
    );
}

/// An outbound listener on `address:port` sending to `dest`: HTTP routes for an HTTP
/// destination, a TCP proxy otherwise.
pub(crate) fn outbound_listener(name: &str, address: &str, port: u32, dest: &Destination) -> Value {
    let filter = if dest.protocol.is_http() {
        http_connection_manager(
            &dest.cluster,
            &format!("outbound:{}", dest.service),
            &dest.cluster,
            false,
        )
    } else {
        tcp_proxy(&dest.cluster, &dest.cluster)
    };
    listener(
        name,
        address,
        port,
        "OUTBOUND",
        vec![filter_chain(vec![filter])],
    )
}

/// The configuration of `proxy`, before policies.
pub fn generate(mesh: &MeshContext, proxy: &DataplaneEntry) -> ResourceSet {
    let mut out = ResourceSet::default();
    // Read once: the inbounds, the services' outbounds and the passthrough listeners use it.
    let tp = proxy.spec.networking.transparent_proxy();
    let redirected = tp.as_ref().is_some_and(|t| t.redirect_port_inbound != 0);
    for (i, inbound) in proxy.spec.networking.inbound.iter().enumerate() {
        if inbound.state == Some(InboundState::Ignored) {
            continue;
        }
        inbound_resources(mesh, proxy, i, inbound, redirected, &mut out);
    }
    for (i, outbound) in proxy.spec.networking.outbound.iter().enumerate() {
        // A reference that cannot be resolved yet gets no listener rather than failing the proxy.
        if let Some(tags) = outbound_tags(outbound) {
            outbound_resources(mesh, proxy, i, outbound, tags, &mut out);
        }
    }
    if let Some(tp) = &tp {
        crate::generator::services::add_outbounds(mesh, proxy, tp, &mut out);
        crate::generator::transparent::add(mesh, tp, &mut out);
    }
    if mesh.mtls {
        out.secret_names = vec![
            identity_secret_name(&mesh.mesh),
            mesh_ca_secret_name(&mesh.mesh),
        ];
    }
    out
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
