//! What the control plane tells kuma-dp through Envoy's dynamic configuration listener
//! (`_kuma:dynamicconfig`, on [`crate::proxy_paths::mesh_metric_config_socket`]): Kuma's
//! `dpapi` packages, the same JSON, so Kuma's kuma-dp reads ours and ours reads Kuma's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where the DNS records are served (Kuma's `dns/dpapi.PATH`).
pub const DNS_PATH: &str = "/dns";

/// One name kuma-dp's DNS answers, and with what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    pub name: String,
    pub ips: Vec<String>,
}

/// Kuma's `DNSProxyConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsProxyConfig {
    pub records: Vec<DnsRecord>,
    /// Seconds an answer may be cached.
    pub ttl: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_labels: BTreeMap<String, String>,
}
