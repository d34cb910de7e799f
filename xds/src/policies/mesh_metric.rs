//! MeshMetric (Kuma's `pkg/plugins/policies/meshmetric`): a Prometheus listener per backend on
//! the proxy's address (`_kuma:metrics:prometheus:<clientId>`, port 5670 and `/metrics` by
//! default) whose scrapes Envoy forwards to kuma-dp (`_kuma:metrics:hijacker`, a socket in
//! kuma-dp's working directory). kuma-dp answers them with Envoy's own statistics, filtered by
//! the sidecar profiles, merged with the applications' endpoints and labelled; it reads what
//! to do from Envoy's `_kuma:dynamicconfig` listener (`/meshmetric`), which this plugin fills
//! with the merged conf, as Kuma's kuma-dp does.
//!
//! kuma-dp fetches that configuration on every scrape (a local round trip, answered 304 while
//! unchanged), so a policy change takes effect on the next scrape without a refresh timer.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use model::ResourceType;
use model::labels::{SERVICE_TAG, WORKLOAD, ZONE};
use model::specs::policy::{
    MetricBackendType, MetricConf, MetricSidecar, PrometheusBackend, PrometheusTlsMode,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::context::{DataplaneEntry, MeshContext};
use crate::envoy::core::CONNECT_TIMEOUT;
use crate::envoy::filters::{HCM, ROUTER};
use crate::envoy::listener::{filter_chain, inbound_listener};
use crate::envoy::names::stat_name;
use crate::resources::{Origin, ResourceSet};

pub struct Plugin;

pub const PROMETHEUS_LISTENER_PREFIX: &str = "_kuma:metrics:prometheus";
pub const HIJACKER_CLUSTER: &str = "_kuma:metrics:hijacker";
pub const DYNAMIC_CONFIG_LISTENER: &str = "_kuma:dynamicconfig";
/// The path of MeshMetric's configuration on the dynamic configuration listener, and the path
/// scrapes are rewritten to on their way to kuma-dp.
pub const MESH_METRIC_PATH: &str = "/meshmetric";
/// The backend name of a Prometheus backend without a `clientId`.
pub const DEFAULT_BACKEND: &str = "default-backend";
pub const DEFAULT_PORT: u32 = 5670;
pub const DEFAULT_PATH: &str = "/metrics";

impl super::PolicyPlugin for Plugin {
    fn kind(&self) -> ResourceType {
        ResourceType::MeshMetric
    }

    fn apply(&self, rs: &mut ResourceSet, mesh: &MeshContext, proxy: &DataplaneEntry) {
        let Some(applied) = super::proxy_conf::<MetricConf>(self.kind(), rs, mesh, proxy) else {
            return;
        };
        let conf = applied.conf;
        let what = format!("the proxy (from {})", applied.policies);
        let prometheus: Vec<&PrometheusBackend> = prometheus_backends(&conf).collect();
        if prometheus.is_empty() {
            if conf.backends.as_ref().is_some_and(|b| !b.is_empty()) {
                rs.warnings.push(format!(
                    "MeshMetric OpenTelemetry backends for {what} are not pushed yet: only Prometheus backends are served"
                ));
            }
            return;
        }
        let workdir = rs.env.workdir.clone().unwrap_or_else(|| "/tmp".into());
        let socket = model::proxy_paths::metrics_hijacker_socket(&workdir, &proxy.name, &mesh.mesh);
        let address = proxy.spec.networking.address.clone();
        for backend in &prometheus {
            let name = format!("{PROMETHEUS_LISTENER_PREFIX}:{}", client_id(backend));
            if let Some(tls) = &backend.tls
                && tls.mode != PrometheusTlsMode::Disabled
            {
                rs.warnings.push(format!(
                    "MeshMetric backend {name} for {what}: TLS mode {:?} is not implemented, the endpoint is served without TLS (as Kuma does when no certificate is configured)",
                    tls.mode
                ));
            }
            let port = backend.port.unwrap_or(DEFAULT_PORT);
            let path = backend.path.as_deref().unwrap_or(DEFAULT_PATH);
            let listener = scrape_listener(&name, &address, port, path);
            rs.add_listener(Origin::Policy(self.kind()), listener);
        }
        rs.add_cluster(Origin::Policy(self.kind()), hijacker_cluster(&socket));
        let config = dataplane_config(&conf, mesh, proxy);
        let body = serde_json::to_string(&config).unwrap_or_default();
        let pipe = model::proxy_paths::mesh_metric_config_socket(&workdir);
        rs.add_listener(
            Origin::Policy(self.kind()),
            dynamic_config_listener(&pipe, &body),
        );
    }
}

fn prometheus_backends(conf: &MetricConf) -> impl Iterator<Item = &PrometheusBackend> {
    conf.backends
        .iter()
        .flatten()
        .filter(|b| b.backend_type == MetricBackendType::Prometheus)
        .filter_map(|b| b.prometheus.as_ref())
}

/// The client a Prometheus backend is for (MADS hands its targets to that client only).
pub fn client_id(backend: &PrometheusBackend) -> &str {
    backend.client_id.as_deref().unwrap_or(DEFAULT_BACKEND)
}

/// The listener Prometheus scrapes: `path` (and below) goes to kuma-dp as `/meshmetric`.
fn scrape_listener(name: &str, address: &str, port: u32, path: &str) -> Value {
    let hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_name(name),
        "http_filters": [{"name": ROUTER, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        "route_config": {
            "validate_clusters": false,
            "virtual_hosts": [{
                "name": name,
                "domains": ["*"],
                "routes": [{
                    "match": {"prefix": path},
                    "route": {"cluster": HIJACKER_CLUSTER, "prefix_rewrite": MESH_METRIC_PATH}
                }]
            }]
        },
        // Kuma's setting: only loopback is internal (Envoy warns when this is left unset).
        "internal_address_config": {"cidr_ranges": [{"address_prefix": "127.0.0.1", "prefix_len": 32}]}
    });
    let filter = json!({"name": HCM, "typed_config": hcm});
    inbound_listener(name, address, port, vec![filter_chain(vec![filter])])
}

fn hijacker_cluster(socket: &str) -> Value {
    json!({
        "name": HIJACKER_CLUSTER,
        "alt_stat_name": stat_name(HIJACKER_CLUSTER),
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
        "load_assignment": {
            "cluster_name": HIJACKER_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": socket}}}}]}]
        }
    })
}

/// The listener kuma-dp reads MeshMetric's configuration from: `body` at `/meshmetric`, with
/// an ETag so an unchanged configuration costs kuma-dp a 304.
fn dynamic_config_listener(pipe: &str, body: &str) -> Value {
    let mut hasher = std::hash::DefaultHasher::new();
    body.hash(&mut hasher);
    let etag = format!("{:016x}", hasher.finish());
    let hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_name(DYNAMIC_CONFIG_LISTENER),
        "http_filters": [{"name": ROUTER, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        "route_config": {
            "max_direct_response_body_size_bytes": body.len().max(4096),
            "virtual_hosts": [{
                "name": DYNAMIC_CONFIG_LISTENER,
                "domains": ["*"],
                "routes": [
                    {
                        "match": {"path": MESH_METRIC_PATH, "headers": [
                            {"name": "If-None-Match", "string_match": {"exact": etag}}
                        ]},
                        "direct_response": {"status": 304}
                    },
                    {
                        "name": format!("{DYNAMIC_CONFIG_LISTENER}:{MESH_METRIC_PATH}"),
                        "match": {"path": MESH_METRIC_PATH},
                        "direct_response": {"status": 200, "body": {"inline_string": body}},
                        "response_headers_to_add": [{"header": {"key": "Etag", "value": etag}}]
                    }
                ]
            }]
        }
    });
    json!({
        "name": DYNAMIC_CONFIG_LISTENER,
        "address": {"pipe": {"path": pipe}},
        "filter_chains": [{"filters": [{"name": HCM, "typed_config": hcm}]}]
    })
}

/// What kuma-dp is told (Kuma's `dpapi.MeshMetricDpConfig`, the same JSON).
#[derive(Debug, Serialize)]
struct DataplaneConfig<'a> {
    observability: Observability<'a>,
}

#[derive(Debug, Serialize)]
struct Observability<'a> {
    metrics: Metrics<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Metrics<'a> {
    applications: Vec<Application>,
    backends: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sidecar: Option<&'a MetricSidecar>,
    extra_labels: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct Application {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    path: String,
    port: u32,
    address: String,
}

fn dataplane_config<'a>(
    conf: &'a MetricConf,
    mesh: &MeshContext,
    proxy: &DataplaneEntry,
) -> DataplaneConfig<'a> {
    let applications = conf
        .applications
        .iter()
        .flatten()
        .map(|a| Application {
            name: a.name.clone(),
            path: a.path.clone().unwrap_or_else(|| DEFAULT_PATH.into()),
            port: a.port.unwrap_or_default(),
            address: a.address.clone().unwrap_or_default(),
        })
        .collect();
    DataplaneConfig {
        observability: Observability {
            metrics: Metrics {
                applications,
                backends: vec![json!({"type": "Prometheus", "name": null})],
                sidecar: conf.sidecar.as_ref(),
                extra_labels: extra_labels(mesh, proxy),
            },
        },
    }
}

/// The labels kuma-dp adds to every sample (Kuma's, without unified naming): mesh, zone, the
/// proxy's role and workload, its tags (and `<tag>s` with every value, `,a,b,`), its name and
/// its service.
fn extra_labels(mesh: &MeshContext, proxy: &DataplaneEntry) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert("mesh".into(), mesh.mesh.clone());
    if let Some(zone) = proxy.labels.get(ZONE) {
        labels.insert("zone".into(), zone.clone());
    }
    let role = match proxy.spec.networking.gateway {
        Some(_) => "gateway",
        None => "sidecar",
    };
    labels.insert("kuma.proxy_role".into(), role.into());
    let workload = proxy.labels.get(WORKLOAD);
    if let Some(w) = workload {
        labels.insert("kuma.workload".into(), w.clone());
    }
    let mut tags: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let inbound_tags = proxy.spec.networking.inbound.iter().map(|i| &i.tags);
    let gateway_tags = proxy.spec.networking.gateway.iter().map(|g| &g.tags);
    for set in inbound_tags.chain(gateway_tags) {
        for (k, v) in set {
            let values = tags.entry(k).or_default();
            if !values.contains(&v.as_str()) {
                values.push(v);
            }
        }
    }
    for (key, values) in &tags {
        labels.insert(sanitize_label(key), values[0].to_string());
        labels.insert(
            sanitize_label(&format!("{key}s")),
            format!(",{},", values.join(",")),
        );
    }
    if crate::generator::gateway::is_builtin(proxy) {
        let gateway = crate::rules::matching::serving_gateway(mesh, proxy)
            .map(|g| g.name.clone())
            .unwrap_or_default();
        labels.insert("kuma_io_mesh_gateway".into(), gateway);
    }
    labels.insert("dataplane".into(), proxy.name.clone());
    if workload.is_none()
        && let Some(service) = identifying_service(proxy)
    {
        labels.insert("service".into(), service.to_string());
    }
    labels
}

/// The service a proxy is known by (Kuma's `IdentifyingName`): its workload, else its first
/// inbound's or its gateway's `kuma.io/service`.
pub fn identifying_service(proxy: &DataplaneEntry) -> Option<&str> {
    if let Some(w) = proxy.labels.get(WORKLOAD) {
        return Some(w);
    }
    let networking = &proxy.spec.networking;
    networking
        .inbound
        .iter()
        .find_map(|i| i.tags.get(SERVICE_TAG))
        .or_else(|| networking.gateway.as_ref()?.tags.get(SERVICE_TAG))
        .map(String::as_str)
}

/// A Prometheus label name from a tag: anything but `[a-zA-Z0-9_]` becomes `_`.
pub fn sanitize_label(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
