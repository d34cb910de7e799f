//! The DNS records a proxy's kuma-dp answers (Kuma's `DNSGenerator` with the embedded DNS
//! proxy): every hostname of the mesh's MeshServices, MeshExternalServices and
//! MeshMultiZoneServices that has a VIP in this zone, served at `/dns` on the dynamic
//! configuration listener. Only a proxy behind a transparent proxy gets them: without one, the
//! application's DNS never reaches kuma-dp.

use std::collections::BTreeMap;

use model::dpapi::{DNS_PATH, DnsProxyConfig, DnsRecord};

use crate::context::{DataplaneEntry, MeshContext};
use crate::resources::{Origin, ResourceSet};

/// Kuma's TTL for the answers.
const TTL: u32 = 30;

/// The records for `proxy`, or `None` when it has no transparent proxy.
pub fn config(mesh: &MeshContext, proxy: &DataplaneEntry) -> Option<DnsProxyConfig> {
    proxy.spec.networking.transparent_proxying.as_ref()?;
    // Two services with one hostname: the status already gave it to one of them only.
    let mut by_name: BTreeMap<&str, &str> = BTreeMap::new();
    for service in &mesh.services {
        let Some(vip) = service.vip.as_deref() else {
            continue;
        };
        for hostname in &service.hostnames {
            by_name.entry(hostname).or_insert(vip);
        }
    }
    let mut extra_labels = BTreeMap::from([("mesh".to_string(), mesh.mesh.clone())]);
    if let Some(zone) = proxy.labels.get(model::labels::ZONE) {
        extra_labels.insert("kuma_io_zone".into(), zone.clone());
    }
    if let Some(workload) = proxy.labels.get(model::labels::WORKLOAD) {
        extra_labels.insert("kuma_workload".into(), workload.clone());
    }
    Some(DnsProxyConfig {
        records: by_name
            .into_iter()
            .map(|(name, vip)| DnsRecord {
                name: name.to_string(),
                ips: vec![vip.to_string()],
            })
            .collect(),
        ttl: TTL,
        extra_labels,
    })
}

/// Adds the records' route for `proxy`, if it gets records.
pub fn add(rs: &mut ResourceSet, mesh: &MeshContext, proxy: &DataplaneEntry) {
    if let Some(config) = config(mesh, proxy) {
        let body = serde_json::to_string(&config).unwrap_or_default();
        super::dynconf::add_route(rs, Origin::DynamicConfig, DNS_PATH, &body);
    }
}
