//! Outbounds from services (Kuma 2.x's VIP outbounds): a transparently proxied sidecar gets a
//! listener on every port of every MeshService it may reach, on the service's VIP, that the
//! `outbound:passthrough` listener hands the application's redirected connections to. A
//! MeshService of this zone sends to the Dataplanes its selector picks (the inbound its port's
//! `targetPort` names); one synced from another zone sends to that zone's ingresses, with
//! Kuma's hashed SNI the ingress routes on. `reachableBackends` and the mesh's
//! `meshServices.mode` restrict which services a proxy gets.

use std::collections::BTreeMap;
use std::sync::Arc;

use model::ResourceType;
use model::specs::dataplane::{Inbound, TransparentProxying};
use model::specs::mesh::MeshServicesMode;
use model::specs::policy::IntOrString;
use model::specs::service::{MeshMultiZoneServiceSpec, MeshServiceSpec, ServicePort};

use crate::context::{DataplaneEntry, MeshContext, Protocol, ServiceEntry, ServiceSpec};
use crate::generator::common::inbound_ready;
use crate::generator::sidecar::{add_destination, outbound_listener};
use crate::resources::{Destination, LocalEndpoint, Origin, RemoteZone, ResourceSet};

/// Kuma's SNI for a port of a MeshService, MeshExternalService or MeshMultiZoneService
/// (`tls.SNIForResource`, format "a"): what other zones' ingresses route on.
pub fn resource_sni(name: &str, mesh: &str, kind: ResourceType, port: u32) -> String {
    let abbreviation = match kind {
        ResourceType::MeshExternalService => "mes",
        ResourceType::MeshMultiZoneService => "mzms",
        _ => "ms",
    };
    let hash = fnv1a64(format!("{name};{mesh};").as_bytes());
    format!(
        "a{hash:016x}.{}.{port}.{}.{abbreviation}",
        dns_label(name),
        dns_label(mesh)
    )
}

/// A name cut to fit a DNS label, as Kuma cuts it (62 characters and an `x`).
fn dns_label(s: &str) -> String {
    const LIMIT: usize = 63;
    if s.len() > LIMIT - 1 {
        let mut cut = LIMIT - 1;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}x", &s[..cut])
    } else {
        s.to_string()
    }
}

/// FNV-1a, 64 bits: the hash Kuma's SNI carries.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The name a MeshService's SNI carries (Kuma's `SNIName` without a system namespace): a
/// copy synced from elsewhere is known by the name and namespace it was created with.
pub fn sni_name(service: &ServiceEntry) -> String {
    if service.kind != ResourceType::MeshService {
        return service.display_name().to_string();
    }
    let namespace = service.labels.get(model::labels::KUBE_NAMESPACE);
    let origin = service
        .labels
        .get(model::labels::ORIGIN)
        .map(String::as_str);
    match (origin, namespace) {
        (Some("global"), Some(ns)) => format!("{}.{ns}", service.display_name()),
        (Some("global"), None) => service.display_name().to_string(),
        (Some("zone"), Some(ns)) => format!("{}.{ns}", service.name),
        _ => service.name.clone(),
    }
}

/// Whether `inbound` of a Dataplane serves `port` of a MeshService: the inbound its
/// `targetPort` names (a number is the inbound's port, a name the inbound's name), or the
/// service port itself when there is no `targetPort`.
pub fn serves_port(inbound: &Inbound, port: &ServicePort) -> bool {
    match &port.target_port {
        Some(IntOrString::String(name)) if name.parse::<u32>().is_err() => inbound.name == *name,
        Some(number) => number.as_f64() == Some(f64::from(inbound.port)),
        None => inbound.port == port.port,
    }
}

/// Whether a MeshService's selector picks `inbound` of `dp`.
pub fn selects(spec: &MeshServiceSpec, dp: &DataplaneEntry, inbound: &Inbound) -> bool {
    let Some(selector) = &spec.selector else {
        return false;
    };
    if let Some(r) = &selector.dataplane_ref {
        return r.name == dp.name;
    }
    if let Some(labels) = &selector.dataplane_labels {
        return labels
            .match_labels
            .iter()
            .all(|(k, v)| dp.labels.get(k) == Some(v));
    }
    selector
        .dataplane_tags
        .as_ref()
        .is_some_and(|tags| tags.iter().all(|(k, v)| inbound.tags.get(k) == Some(v)))
}

fn protocol_of(port: &ServicePort) -> Protocol {
    Protocol::from_tag(port.app_protocol.as_ref())
}

/// Whether `service` runs in this zone (created here, or with no zone of its own).
fn is_here(mesh: &MeshContext, service: &ServiceEntry) -> bool {
    let zone = service.zone();
    service.is_local() || zone.is_empty() || zone == mesh.local_zone
}

/// This zone's ready instances of `port` of a MeshService.
fn local_endpoints(
    mesh: &MeshContext,
    spec: &MeshServiceSpec,
    port: &ServicePort,
) -> Vec<LocalEndpoint> {
    let mut endpoints = Vec::new();
    for dp in &mesh.dataplanes {
        for inbound in &dp.spec.networking.inbound {
            if !selects(spec, dp, inbound) || !serves_port(inbound, port) || !inbound_ready(inbound)
            {
                continue;
            }
            endpoints.push(LocalEndpoint::of(dp, inbound));
        }
    }
    endpoints
}

/// The `kuma.io/service` a zone egress's certificate names (Kuma's `ZoneEgressServiceName`):
/// what a sidecar expects of the egress it sends MeshExternalService traffic to.
pub const ZONE_EGRESS_IDENTITY: &str = "zone-egress";

/// Whether a sidecar reaches MeshExternalServices through this zone's egresses.
fn through_egress(mesh: &MeshContext, sender: Sender) -> bool {
    sender == Sender::Sidecar && mesh.mtls && !mesh.local_egresses.is_empty()
}

/// Who sends to a service: a sidecar (which reaches other zones through this zone's egresses
/// when the mesh says so), or this zone's egress (which passes on what sidecars sent it to
/// other zones' ingresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    Sidecar,
    Egress,
}

/// The way to another zone's instances: its ingresses (or this zone's egresses), which only
/// route the mesh's mTLS (the SNI names the service).
fn remote_via(mesh: &MeshContext, zone: &str, sender: Sender) -> Option<RemoteZone> {
    if !mesh.mtls {
        return None;
    }
    let via: Vec<(String, u32)> = if mesh.zone_egress && sender == Sender::Sidecar {
        mesh.local_egresses.clone()
    } else {
        mesh.remote_ingresses
            .iter()
            .filter(|i| i.zone == zone)
            .map(|i| (i.address.clone(), i.port))
            .collect()
    };
    (!via.is_empty()).then(|| RemoteZone {
        zone: zone.to_string(),
        via,
        instances: 1,
    })
}

/// The `kuma.io/service` identities a service's instances present.
fn identities(service: &ServiceEntry) -> Vec<String> {
    match service.identities.is_empty() {
        true => vec![service.display_name().to_string()],
        false => service.identities.clone(),
    }
}

/// The MeshServices a MeshMultiZoneService's selector picks (in every zone).
fn matched_services<'a>(
    mesh: &'a MeshContext,
    spec: &'a MeshMultiZoneServiceSpec,
) -> impl Iterator<Item = &'a ServiceEntry> {
    let labels = spec.selector.mesh_service.as_ref().map(|s| &s.match_labels);
    // Labels as global's copy of each MeshService has them: a zone's own copy lacks the
    // display name global's carries (what selectors usually name).
    let label = |s: &'a ServiceEntry, k: &str| -> Option<&'a str> {
        match s.labels.get(k) {
            Some(v) => Some(v.as_str()),
            None if k == model::labels::DISPLAY_NAME => Some(s.display_name()),
            None => None,
        }
    };
    mesh.services.iter().filter(move |s| {
        s.kind == ResourceType::MeshService
            && labels.is_some_and(|l| l.iter().all(|(k, v)| label(s, k) == Some(v.as_str())))
    })
}

/// Where a port of a service sends: a MeshService to this zone's instances or its zone's
/// ingresses; a MeshMultiZoneService to every MeshService it selects, this zone's first (the
/// locality-aware layout puts other zones behind); a MeshExternalService to its endpoints,
/// in its cluster. An egress gets only the other zones' part.
fn resolve_service(
    mesh: &MeshContext,
    service: &ServiceEntry,
    port: &ServicePort,
    sender: Sender,
) -> Destination {
    let mut endpoints = Vec::new();
    let mut remote: Vec<RemoteZone> = Vec::new();
    let mut ids = Vec::new();
    let mut external = None;
    match service.spec.as_deref() {
        Some(ServiceSpec::Mesh(spec)) => {
            ids = identities(service);
            match is_here(mesh, service) {
                true if sender == Sender::Egress => {}
                true => endpoints = local_endpoints(mesh, spec, port),
                false => remote.extend(remote_via(mesh, service.zone(), sender)),
            }
        }
        Some(ServiceSpec::MultiZone(spec)) => {
            for ms in matched_services(mesh, spec) {
                let Some(Some(ServiceSpec::Mesh(ms_spec))) = Some(ms.spec.as_deref()) else {
                    continue;
                };
                let Some(ms_port) = ms.ports.iter().find(|p| p.port == port.port) else {
                    continue;
                };
                ids.extend(identities(ms));
                if is_here(mesh, ms) {
                    if sender == Sender::Sidecar {
                        endpoints.extend(local_endpoints(mesh, ms_spec, ms_port));
                    }
                } else if !remote.iter().any(|r| r.zone == ms.zone()) {
                    remote.extend(remote_via(mesh, ms.zone(), sender));
                }
            }
            ids.sort();
            ids.dedup();
            remote.sort_by(|a, b| a.zone.cmp(&b.zone));
        }
        // As Kuma: through this zone's egresses when the mesh has mTLS and the zone has one
        // (the egress originates the TLS); straight to the endpoints otherwise.
        Some(ServiceSpec::External(_)) if through_egress(mesh, sender) => {
            ids = vec![ZONE_EGRESS_IDENTITY.to_string()];
            endpoints = mesh
                .local_egresses
                .iter()
                .map(|(address, port)| LocalEndpoint {
                    address: address.clone(),
                    port: *port,
                    tags: BTreeMap::new(),
                })
                .collect();
        }
        Some(ServiceSpec::External(spec)) => {
            let name = service.cluster_name(&mesh.mesh, port.port);
            external = Some(super::external::cluster(
                &name,
                spec,
                &mesh.external_secrets,
            ));
        }
        None => {}
    }
    endpoints.sort();
    endpoints.dedup_by(|a, b| (&a.address, a.port) == (&b.address, b.port));
    Destination {
        cluster: service.cluster_name(&mesh.mesh, port.port),
        service: service.display_name().to_string(),
        tags: BTreeMap::new(),
        protocol: protocol_of(port),
        endpoints,
        remote,
        sni: Some(resource_sni(
            &sni_name(service),
            &mesh.mesh,
            service.kind,
            port.port,
        )),
        identities: ids,
        external: external.map(|r| r.map_err(|e| e.to_string())),
    }
}

/// Every port of this zone's MeshServices, and of the MeshMultiZoneServices that select
/// them, with the SNI other zones reach it by and this zone's instances: what a zone ingress
/// routes.
pub fn local_service_destinations(mesh: &MeshContext) -> Vec<(String, Destination)> {
    sni_destinations(mesh, Sender::Sidecar)
}

/// Every port of other zones' MeshServices and of the MeshMultiZoneServices with instances
/// in other zones, with the SNI this zone's sidecars give them and the other zones' ingresses
/// that serve them: what a zone egress routes (when the mesh sends cross-zone traffic through
/// egresses, its sidecars dial the egress with the SNI they would give the ingress).
pub fn remote_service_destinations(mesh: &MeshContext) -> Vec<(String, Destination)> {
    sni_destinations(mesh, Sender::Egress)
}

/// The service ports a zone proxy routes by SNI: for an ingress (whose destinations are what
/// a sidecar here would send to) this zone's MeshServices, for an egress other zones'; both
/// route every MeshMultiZoneService.
fn sni_destinations(mesh: &MeshContext, sender: Sender) -> Vec<(String, Destination)> {
    let mut out = Vec::new();
    for service in &mesh.services {
        let routed = match (service.kind, sender) {
            (ResourceType::MeshService, Sender::Sidecar) => {
                service.is_local() && is_here(mesh, service)
            }
            (ResourceType::MeshService, Sender::Egress) => !is_here(mesh, service),
            (ResourceType::MeshMultiZoneService, _) => true,
            _ => false,
        };
        if !routed {
            continue;
        }
        for port in &service.ports {
            let dest = resolve_service(mesh, service, port, sender);
            if sender == Sender::Egress && dest.remote.is_empty() {
                continue;
            }
            if let Some(sni) = dest.sni.clone() {
                out.push((sni, dest));
            }
        }
    }
    out
}

/// The destination of `port` of `service`, resolved once per snapshot.
fn service_destination(
    mesh: &MeshContext,
    service: &ServiceEntry,
    port: &ServicePort,
) -> Arc<Destination> {
    let resolve = || resolve_service(mesh, service, port, Sender::Sidecar);
    match &mesh.shared {
        Some(shared) => {
            shared.service_destination(&service.cluster_name(&mesh.mesh, port.port), resolve)
        }
        None => Arc::new(resolve()),
    }
}

/// The destination of the service port whose cluster is `cluster`, in `mesh` (a snapshot
/// later than the one the destination was first resolved in); `None` when it is gone.
pub(crate) fn resolved_again(mesh: &MeshContext, cluster: &str) -> Option<Arc<Destination>> {
    let (service, port) = mesh.service_port(cluster)?;
    Some(service_destination(mesh, service, port))
}

/// The ports of `service` a proxy with `tp` reaches: all of them unless `reachableBackends`
/// lists others (or lists none, or the mesh wants them listed).
fn reachable_ports<'a>(
    mesh: &MeshContext,
    tp: &TransparentProxying,
    service: &'a ServiceEntry,
) -> Vec<&'a ServicePort> {
    let Some(backends) = &tp.reachable_backends else {
        // Kuma: a proxy that lists `reachableServices` (legacy) or a mesh in
        // `ReachableBackends` mode gets no service it did not list.
        let listed_only = !tp.reachable_services.is_empty()
            || mesh.mesh_services_mode() == MeshServicesMode::ReachableBackends;
        return match listed_only {
            true => Vec::new(),
            false => service.ports.iter().collect(),
        };
    };
    let kind = service.kind.to_string();
    let mut ports: Vec<&ServicePort> = Vec::new();
    for r in backends.refs.iter().filter(|r| r.kind == kind) {
        let named = !r.name.is_empty();
        let matches = match named {
            true => r.name == service.name || r.name == service.display_name(),
            false => r
                .labels
                .iter()
                .all(|(k, v)| service.labels.get(k) == Some(v)),
        };
        if !matches {
            continue;
        }
        for p in &service.ports {
            if r.port.is_none_or(|want| want == p.port) && !ports.contains(&p) {
                ports.push(p);
            }
        }
    }
    ports
}

/// The listeners and clusters of the services `proxy`, transparently proxied as `tp` says,
/// reaches when the mesh uses MeshServices.
pub fn add_outbounds(
    mesh: &MeshContext,
    proxy: &DataplaneEntry,
    tp: &TransparentProxying,
    out: &mut ResourceSet,
) {
    if tp.redirect_port_outbound == 0 || mesh.mesh_services_mode() == MeshServicesMode::Disabled {
        return;
    }
    for service in &mesh.services {
        let Some(vip) = service.vip.as_deref() else {
            continue;
        };
        for port in reachable_ports(mesh, tp, service) {
            // A service the proxy itself serves on the same address and port (Kuma skips it).
            let own = proxy.spec.networking.inbound.iter().any(|i| {
                i.port == port.port && crate::generator::common::inbound_address(proxy, i) == vip
            });
            if own {
                continue;
            }
            let dest = service_destination(mesh, service, port);
            if let Some(Err(e)) = &dest.external {
                out.warnings.push(format!(
                    "{} {}: no outbound: {e}",
                    service.kind, service.name
                ));
                continue;
            }
            let destination = match out
                .destinations
                .iter()
                .position(|d| d.cluster == dest.cluster)
            {
                Some(d) => d,
                None => add_destination(mesh, proxy, dest, out),
            };
            let name = format!("outbound:{vip}:{}", port.port);
            let mut l = outbound_listener(&name, vip, port.port, &out.destinations[destination]);
            let d = &out.destinations[destination];
            if d.external.is_some() && d.protocol.is_http() {
                // Straight to a server outside the mesh: it sees its own name as Host.
                if let Some(hcm) = l.pointer_mut("/filter_chains/0/filters/0") {
                    crate::envoy::filters::rewrite_host_to_upstream(hcm);
                }
            }
            // Reached through the passthrough listener's original destination, never bound.
            l["bind_to_port"] = serde_json::Value::Bool(false);
            out.add_listener(
                Origin::Outbound {
                    outbound: None,
                    destination,
                },
                l,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_is_kumas() {
        // Kuma's own test vectors (pkg/xds/envoy/tls/sni_test.go).
        assert_eq!(
            resource_sni("backend", "demo", ResourceType::MeshService, 8080),
            "ae10a8071b8a8eeb8.backend.8080.demo.ms"
        );
        assert_eq!(
            resource_sni("backend", "demo", ResourceType::MeshMultiZoneService, 8080),
            "ae10a8071b8a8eeb8.backend.8080.demo.mzms"
        );
        // Known vector of FNV-1a 64.
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        let long = "x".repeat(70);
        let sni = resource_sni(&long, "m", ResourceType::MeshMultiZoneService, 80);
        assert!(
            sni.contains(&format!(".{}x.80.m.mzms", "x".repeat(62))),
            "{sni}"
        );
    }
}
