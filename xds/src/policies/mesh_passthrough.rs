//! MeshPassthrough (Kuma's `pkg/plugins/policies/meshpassthrough`): what a transparently
//! proxied application may reach outside the mesh, on the outbound passthrough listener.
//! `All` lets everything through, `None` nothing, and `Matched` (the default) only what
//! `appendMatch` lists: a domain (by TLS SNI, or by HTTP `Host` for HTTP protocols), an IP or a
//! CIDR (by destination address), optionally on one port. Each allowed destination gets its own
//! filter chain and original-destination cluster (`meshpassthrough_<protocol>_<value>_<port>`,
//! Kuma's names), so its traffic shows in its own stats; what matches no chain is closed. The
//! policy takes precedence over the Mesh's `networking.outbound.passthrough`.

use std::collections::BTreeMap;

use model::ResourceType;
use model::specs::policy::{
    PassthroughConf, PassthroughMatch, PassthroughMatchType, PassthroughMode, PassthroughProtocol,
};
use serde_json::{Value, json};

use crate::context::{DataplaneEntry, MeshContext};
use crate::envoy::core::CONNECT_TIMEOUT;
use crate::envoy::filters::tcp_proxy;
use crate::envoy::names::stat_name;
use crate::generator::transparent::{NO_DESTINATION, OUTBOUND_PASSTHROUGH};
use crate::resources::{Origin, ResourceSet};

pub struct Plugin;

/// One allowed destination's filter chain, as Envoy selects it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ChainKey {
    port: Option<u32>,
    /// An IP or CIDR (`None`: any destination address).
    prefix: Option<(String, u32)>,
    /// TLS server name (`None`: plaintext).
    server_name: Option<String>,
    http: bool,
}

fn original_destination(name: &str, http2: bool) -> Value {
    let mut c = json!({"name": name, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": CONNECT_TIMEOUT});
    if http2 {
        crate::envoy::cluster::use_http2_upstream(&mut c);
    }
    c
}

fn protocol_name(p: PassthroughProtocol) -> &'static str {
    match p {
        PassthroughProtocol::Tcp => "tcp",
        PassthroughProtocol::Tls => "tls",
        PassthroughProtocol::Grpc => "grpc",
        PassthroughProtocol::Grpcs => "grpcs",
        PassthroughProtocol::Http => "http",
        PassthroughProtocol::Http2 => "http2",
        PassthroughProtocol::Mysql => "mysql",
    }
}

/// `10.0.0.0/8` or `10.0.0.1` as an address prefix.
fn prefix(m: &PassthroughMatch) -> Option<(String, u32)> {
    let (address, bits) = match m.value.split_once('/') {
        Some((a, b)) => (a.to_string(), b.parse().ok()?),
        None => {
            let ip: std::net::IpAddr = m.value.parse().ok()?;
            (m.value.clone(), if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    Some((address, bits))
}

/// The chains, clusters and warnings of `Matched` mode.
fn matched_chains(
    matches: &[PassthroughMatch],
    warnings: &mut Vec<String>,
) -> (Vec<Value>, Vec<Value>) {
    // HTTP matches sharing a chain become virtual hosts of one connection manager.
    let mut chains: BTreeMap<ChainKey, Vec<(String, String, bool)>> = BTreeMap::new();
    let mut clusters = BTreeMap::new();
    for m in matches {
        let protocol = m.protocol.unwrap_or(PassthroughProtocol::Tcp);
        let http = matches!(
            protocol,
            PassthroughProtocol::Http | PassthroughProtocol::Http2 | PassthroughProtocol::Grpc
        );
        let tls = matches!(
            protocol,
            PassthroughProtocol::Tls | PassthroughProtocol::Grpcs
        );
        let port = m.port.map_or(String::new(), |p| p.to_string());
        let cluster = format!(
            "meshpassthrough_{}_{}_{port}",
            protocol_name(protocol),
            m.value
        )
        .trim_end_matches('_')
        .to_string();
        let key = match m.match_type {
            PassthroughMatchType::Domain if tls => ChainKey {
                port: m.port,
                prefix: None,
                server_name: Some(m.value.clone()),
                http: false,
            },
            PassthroughMatchType::Domain if http => ChainKey {
                port: m.port,
                prefix: None,
                server_name: None,
                http: true,
            },
            PassthroughMatchType::Domain => {
                warnings.push(format!(
                    "MeshPassthrough: Domain {:?} over {} cannot be matched (no SNI or Host); ignored",
                    m.value,
                    protocol_name(protocol)
                ));
                continue;
            }
            PassthroughMatchType::IP | PassthroughMatchType::CIDR => {
                let Some(p) = prefix(m) else {
                    warnings.push(format!(
                        "MeshPassthrough: {:?} is not an address; ignored",
                        m.value
                    ));
                    continue;
                };
                ChainKey {
                    port: m.port,
                    prefix: Some(p),
                    server_name: None,
                    http,
                }
            }
        };
        let http2 = matches!(
            protocol,
            PassthroughProtocol::Http2 | PassthroughProtocol::Grpc
        );
        clusters.insert(cluster.clone(), original_destination(&cluster, http2));
        let host = match m.match_type {
            PassthroughMatchType::Domain => m.value.clone(),
            _ => "*".to_string(),
        };
        let hosts = chains.entry(key).or_default();
        if !hosts.iter().any(|(h, _, _)| *h == host) {
            hosts.push((host, cluster, m.port.is_some()));
        }
    }
    let chains = chains
        .into_iter()
        .map(|(key, hosts)| chain(&key, &hosts))
        .collect();
    (chains, clusters.into_values().collect())
}

fn chain(key: &ChainKey, hosts: &[(String, String, bool)]) -> Value {
    let mut matcher = serde_json::Map::new();
    if let Some(port) = key.port {
        matcher.insert("destination_port".into(), json!(port));
    }
    if let Some((address, bits)) = &key.prefix {
        matcher.insert(
            "prefix_ranges".into(),
            json!([{"address_prefix": address, "prefix_len": bits}]),
        );
    }
    if let Some(name) = &key.server_name {
        matcher.insert("server_names".into(), json!([name]));
        matcher.insert("transport_protocol".into(), json!("tls"));
    }
    let (name, filter) = if key.http {
        matcher.insert("transport_protocol".into(), json!("raw_buffer"));
        matcher.insert("application_protocols".into(), json!(["http/1.1", "h2c"]));
        let virtual_hosts: Vec<Value> = hosts
            .iter()
            .map(|(host, cluster, with_port)| {
                let mut domains = vec![host.clone()];
                if let (true, Some(port)) = (*with_port, key.port) {
                    domains.push(format!("{host}:{port}"));
                }
                json!({"name": host, "domains": domains,
                       "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]})
            })
            .collect();
        let name = hosts.first().map_or(String::new(), |h| h.1.clone());
        let filter = json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_name(&name),
            "route_config": {"name": name, "virtual_hosts": virtual_hosts},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
        }});
        (name, filter)
    } else {
        let cluster = hosts.first().map_or(String::new(), |h| h.1.clone());
        (cluster.clone(), tcp_proxy(&cluster, &cluster))
    };
    json!({"name": name, "filter_chain_match": Value::Object(matcher), "filters": [filter]})
}

impl super::PolicyPlugin for Plugin {
    fn kind(&self) -> ResourceType {
        ResourceType::MeshPassthrough
    }

    fn apply(&self, rs: &mut ResourceSet, mesh: &MeshContext, proxy: &DataplaneEntry) {
        let has_listener = rs
            .listeners_mut()
            .any(|(o, l)| o == Origin::Transparent && l.name() == OUTBOUND_PASSTHROUGH);
        if !has_listener {
            return;
        }
        let Some(applied) = super::proxy_conf::<PassthroughConf>(self.kind(), rs, mesh, proxy)
        else {
            return;
        };
        let conf = applied.conf;
        let (chains, clusters, inspect) = match conf
            .passthrough_mode
            .unwrap_or(PassthroughMode::Matched)
        {
            PassthroughMode::All => {
                let c = original_destination(OUTBOUND_PASSTHROUGH, false);
                let chain =
                    json!({"filters": [tcp_proxy(OUTBOUND_PASSTHROUGH, OUTBOUND_PASSTHROUGH)]});
                (vec![chain], vec![c], false)
            }
            PassthroughMode::None => {
                let c = json!({"name": NO_DESTINATION, "type": "STATIC", "connect_timeout": CONNECT_TIMEOUT,
                    "load_assignment": {"cluster_name": NO_DESTINATION, "endpoints": []}});
                let chain = json!({"filters": [tcp_proxy(OUTBOUND_PASSTHROUGH, NO_DESTINATION)]});
                (vec![chain], vec![c], false)
            }
            PassthroughMode::Matched => {
                let (chains, clusters) = matched_chains(&conf.append_match, &mut rs.warnings);
                (chains, clusters, true)
            }
        };
        for c in clusters {
            let name = c["name"].as_str().unwrap_or_default().to_string();
            if !rs.has_cluster(&name) {
                rs.add_cluster(Origin::Policy(self.kind()), c);
            }
        }
        for (origin, l) in rs.listeners_mut() {
            if origin != Origin::Transparent || l.name() != OUTBOUND_PASSTHROUGH {
                continue;
            }
            let listener = &mut *l.0;
            listener["filter_chains"] = json!(chains);
            if inspect {
                // SNI and HTTP Host chains need the first bytes read before a chain is picked.
                listener["listener_filters"] = json!([
                    {"name": "envoy.filters.listener.tls_inspector", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}},
                    {"name": "envoy.filters.listener.http_inspector", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"}}
                ]);
            }
        }
    }
}
