//! Envoy configuration for data plane proxies: pure functions from a mesh snapshot (its
//! Dataplanes, mTLS state and policies) to the listeners, clusters, endpoints and secrets one
//! proxy needs, written as Envoy's JSON; [`wire`] turns them into protobuf for ADS.

use std::collections::BTreeMap;

use model::specs::dataplane::DataplaneSpec;
use model::specs::policy::{MeshLoadBalancingStrategySpec, MeshTrafficPermissionSpec};
use serde_json::Value;

pub mod bootstrap;
pub mod egress;
pub mod ingress;
pub mod lb;
pub mod rbac;
pub mod sidecar;
pub mod wire;

/// One Dataplane of the mesh, as the generator sees it.
#[derive(Debug, Clone)]
pub struct DataplaneEntry {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub spec: DataplaneSpec,
}

#[derive(Debug, Clone)]
pub struct NamedPolicy<S> {
    pub name: String,
    pub spec: S,
}

/// Everything in a mesh that shapes its sidecars' configuration.
#[derive(Debug, Clone, Default)]
pub struct MeshSnapshot {
    pub mesh: String,
    /// Whether the mesh has an enabled mTLS backend: inbounds then require mesh certificates,
    /// outbounds present the proxy's identity, and MeshTrafficPermissions are enforced.
    pub mtls: bool,
    pub dataplanes: Vec<DataplaneEntry>,
    pub traffic_permissions: Vec<NamedPolicy<MeshTrafficPermissionSpec>>,
    pub load_balancing: Vec<NamedPolicy<MeshLoadBalancingStrategySpec>>,
    /// The zone these dataplanes run in (empty on a standalone control plane).
    pub local_zone: String,
    /// Other zones' ingresses: where this zone's sidecars reach services that run there.
    pub remote_ingresses: Vec<RemoteIngress>,
    /// The mesh's `routing.zoneEgress`: cross-zone traffic leaves through this zone's egress.
    pub zone_egress: bool,
    /// This zone's egresses (address, port) sidecars dial when `zone_egress` is on.
    pub local_egresses: Vec<(String, u32)>,
}

/// Where a zone proxy (ingress or egress) listens.
#[derive(Debug, Clone)]
pub struct ZoneProxyListener {
    pub address: String,
    pub port: u32,
}

/// A ZoneIngress of another zone as sidecars dial it: its advertised address (an IP; the
/// control plane resolves host names) and port, and what it serves.
#[derive(Debug, Clone)]
pub struct RemoteIngress {
    pub zone: String,
    pub address: String,
    pub port: u32,
    pub services: Vec<model::specs::zone::AvailableService>,
}

/// Envoy resources for one proxy, each Envoy's JSON for its message type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyResources {
    pub listeners: Vec<Value>,
    pub clusters: Vec<Value>,
    /// `ClusterLoadAssignment`s, one per EDS cluster.
    pub endpoints: Vec<Value>,
    /// Names of the SDS secrets the configuration refers to.
    pub secret_names: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    #[error("dataplane {0:?} is not in mesh {1:?}")]
    UnknownProxy(String, String),
    #[error(transparent)]
    Wire(#[from] wire::WireError),
}

/// SDS name of a proxy's identity certificate in `mesh` (Kuma's name).
pub fn identity_secret_name(mesh: &str) -> String {
    format!("identity_cert:secret:{mesh}")
}

/// SDS name of `mesh`'s CA bundle (Kuma's name).
pub fn mesh_ca_secret_name(mesh: &str) -> String {
    format!("mesh_ca:secret:{mesh}")
}

/// The SPIFFE identity of a service in a mesh, carried as a URI SAN.
pub fn spiffe_id(mesh: &str, service: &str) -> String {
    format!("spiffe://{mesh}/{service}")
}

/// The SNI cross-zone routing uses for a service: Kuma's legacy `<service>{mesh=<mesh>,k=v}`,
/// extra tags sorted by name.
pub fn service_sni(service: &str, mesh: &str, extra_tags: &BTreeMap<String, String>) -> String {
    let mut parts = vec![format!("mesh={mesh}")];
    parts.extend(
        extra_tags
            .iter()
            .filter(|(k, _)| k.as_str() != model::labels::SERVICE_TAG)
            .map(|(k, v)| format!("{k}={v}")),
    );
    format!("{service}{{{}}}", parts.join(","))
}

/// The two secrets SDS serves a proxy: its certificate chain and key, and the mesh CA.
pub fn secrets(mesh: &str, cert_chain_pem: &str, key_pem: &str, ca_pem: &str) -> Vec<Value> {
    vec![
        serde_json::json!({
            "name": identity_secret_name(mesh),
            "tls_certificate": {
                "certificate_chain": {"inline_string": cert_chain_pem},
                "private_key": {"inline_string": key_pem},
            }
        }),
        serde_json::json!({
            "name": mesh_ca_secret_name(mesh),
            "validation_context": {"trusted_ca": {"inline_string": ca_pem}}
        }),
    ]
}

/// Stat prefixes may not carry `:` or `.` (Envoy splits stat names on dots).
pub(crate) fn stat_name(name: &str) -> String {
    name.chars()
        .map(|c| if c == ':' || c == '.' { '_' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_is_kumas_legacy_form() {
        let mut tags = BTreeMap::new();
        assert_eq!(
            service_sni("backend", "default", &tags),
            "backend{mesh=default}"
        );
        tags.insert("version".to_string(), "v2".to_string());
        tags.insert("kuma.io/service".to_string(), "backend".to_string());
        assert_eq!(
            service_sni("backend", "default", &tags),
            "backend{mesh=default,version=v2}"
        );
    }
}
