//! MeshMetric (Kuma's `pkg/plugins/policies/meshmetric`): a Prometheus listener per backend on
//! the proxy's address (`_kuma:metrics:prometheus:<clientId>`, port 5670 and `/metrics` by
//! default) whose scrapes Envoy forwards to kuma-dp (`_kuma:metrics:hijacker`, a socket in
//! kuma-dp's working directory). kuma-dp answers them with Envoy's own statistics, filtered by
//! the sidecar profiles, merged with the applications' endpoints and labelled; it reads what
//! to do from Envoy's `_kuma:dynamicconfig` listener (`/meshmetric`), which this plugin fills
//! with the merged conf, as Kuma's kuma-dp does.
//!
//! An OpenTelemetry backend is a pipe listener `_kuma:metrics:opentelemetry:<backend>` in
//! kuma-dp's working directory (`kuma-otel-<backend>.sock`) that forwards OTLP/gRPC to a
//! cluster of the same name at the collector; kuma-dp pushes the same merged metrics into it
//! every `refreshInterval` (1 minute by default).
//!
//! kuma-dp fetches that configuration on every scrape and every push (a local round trip,
//! answered 304 while unchanged), and learns of a new OpenTelemetry backend when Envoy creates
//! its socket, so a policy change takes effect without a refresh timer.

use std::collections::BTreeMap;

use model::ResourceType;
use model::labels::{SERVICE_TAG, WORKLOAD, ZONE};
use model::prometheus::label_name;
use model::specs::mesh::PrometheusTlsMode as LegacyTlsMode;
use model::specs::policy::{
    MetricBackendType, MetricConf, MetricSidecar, OtelMetricBackend, PrometheusBackend,
    PrometheusTlsMode,
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
pub const DYNAMIC_CONFIG_LISTENER: &str = crate::generator::dynconf::LISTENER;
/// The path of MeshMetric's configuration on the dynamic configuration listener, and the path
/// scrapes are rewritten to on their way to kuma-dp.
pub const MESH_METRIC_PATH: &str = model::proxy_paths::MESH_METRIC_PATH;
/// The backend name of a Prometheus backend without a `clientId`.
pub const DEFAULT_BACKEND: &str = "default-backend";
/// The listener and cluster of an OpenTelemetry backend are `<this>:<backend name>`.
pub const OPENTELEMETRY_PREFIX: &str = "_kuma:metrics:opentelemetry";
/// OTLP/gRPC's port, when an endpoint names none.
const OTLP_GRPC_PORT: u32 = 4317;
/// How often kuma-dp pushes when a backend does not say (Kuma's default, as Go writes it).
const DEFAULT_REFRESH_INTERVAL: &str = "1m0s";
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
        let workdir = rs.env.workdir().to_string();
        let mut otel = Vec::new();
        for backend in otel_backends(&conf) {
            match OtelExport::new(backend, &workdir) {
                Ok(export) => otel.push(export),
                Err(why) => rs.warnings.push(format!(
                    "MeshMetric OpenTelemetry backend for {what} not applied: {why}"
                )),
            }
        }
        if prometheus.is_empty() && otel.is_empty() {
            return;
        }
        // As Kuma: a MeshMetric with backends replaces the Mesh's legacy endpoint.
        rs.remove_origin(Origin::MeshMetrics);
        let socket = model::proxy_paths::metrics_hijacker_socket(&workdir, &proxy.name, &mesh.mesh);
        let address = proxy.spec.networking.address.clone();
        for backend in &prometheus {
            let name = format!("{PROMETHEUS_LISTENER_PREFIX}:{}", client_id(backend));
            let transport = match backend.tls.as_ref().map(|t| t.mode) {
                None | Some(PrometheusTlsMode::Disabled) => None,
                Some(PrometheusTlsMode::ProvidedTLS) => {
                    provided_tls(rs, &format!("MeshMetric backend {name} for {what}"))
                }
                Some(PrometheusTlsMode::ActiveMTLSBackend) if mesh.mtls => {
                    Some(crate::envoy::tls::inbound_mtls(&mesh.mesh))
                }
                Some(PrometheusTlsMode::ActiveMTLSBackend) => {
                    rs.warnings.push(format!(
                        "MeshMetric backend {name} for {what}: TLS mode ActiveMTLSBackend needs the mesh's mTLS, which is off; served without TLS"
                    ));
                    None
                }
            };
            let port = backend.port.unwrap_or(DEFAULT_PORT);
            let path = backend.path.as_deref().unwrap_or(DEFAULT_PATH);
            let mut listener = scrape_listener(&name, &address, port, path);
            if let Some(transport) = transport {
                listener["filter_chains"][0]["transport_socket"] = transport;
            }
            rs.add_listener(Origin::Policy(self.kind()), listener);
        }
        if !prometheus.is_empty() {
            rs.add_cluster(
                Origin::Policy(self.kind()),
                hijacker_cluster(HIJACKER_CLUSTER, &socket),
            );
        }
        for export in &otel {
            let name = format!("{OPENTELEMETRY_PREFIX}:{}", export.name);
            if rs.has_cluster(&name) {
                continue;
            }
            let mut cluster =
                super::mesh_trace::collector_cluster(&name, &export.host, export.port, false);
            crate::envoy::cluster::use_http2_upstream(&mut cluster);
            rs.add_cluster(Origin::Policy(self.kind()), cluster);
            rs.add_listener(
                Origin::Policy(self.kind()),
                otel_listener(&name, &export.socket),
            );
        }
        let config = dataplane_config(&conf, !prometheus.is_empty(), &otel, mesh, proxy);
        let body = serde_json::to_string(&config).unwrap_or_default();
        crate::generator::dynconf::add_route(
            rs,
            Origin::Policy(self.kind()),
            MESH_METRIC_PATH,
            &body,
        );
    }
}

/// The legacy endpoint's listener and cluster (Kuma's `kuma:metrics:prometheus`, served by
/// kuma-dp's hijacker like MeshMetric's).
pub const LEGACY_LISTENER: &str = "kuma:metrics:prometheus";
pub const LEGACY_HIJACKER_CLUSTER: &str = "kuma:metrics:hijacker";

/// The Mesh's legacy Prometheus backend (`spec.metrics`, with the Dataplane's `spec.metrics`
/// over it; Kuma's `PrometheusEndpointGenerator`): a listener on the proxy's address and
/// `port` whose `path` goes to kuma-dp as `/?usedonly&filter=...`, so kuma-dp answers with
/// Envoy's statistics (and the `aggregate` applications, which it learns at bootstrap).
/// Behind the mesh's mTLS unless `skipMTLS` (Prometheus then presents a mesh certificate);
/// `tls.mode: activeMTLSBackend` also lets the proxy's own address in without one.
pub fn legacy_endpoint(rs: &mut ResourceSet, mesh: &MeshContext, proxy: &DataplaneEntry) {
    let (conf, warnings) = legacy_conf(mesh, proxy);
    rs.warnings.extend(warnings);
    let Some(conf) = conf else {
        return;
    };
    let networking = &proxy.spec.networking;
    let mut query = Vec::new();
    if let Some(envoy) = &conf.envoy {
        if !envoy.filter_regex.is_empty() {
            query.push(format!("filter={}", query_escape(&envoy.filter_regex)));
        }
        if envoy.used_only == Some(true) {
            query.push("usedonly".into());
        }
    }
    let rewrite = match query.is_empty() {
        true => "/".to_string(),
        false => format!("/?{}", query.join("&")),
    };
    let filter = http_manager(
        LEGACY_LISTENER,
        forward_to(
            LEGACY_LISTENER,
            &conf.path,
            LEGACY_HIJACKER_CLUSTER,
            Some(&rewrite),
        ),
    );
    let tls_mode = conf.tls.as_ref().map(|t| t.mode);
    let chains = match (mesh.mtls, tls_mode) {
        (true, None) if !conf.skip_mtls => {
            let mut chain = filter_chain(vec![filter]);
            chain["transport_socket"] = crate::envoy::tls::inbound_mtls(&mesh.mesh);
            vec![chain]
        }
        (true, Some(LegacyTlsMode::ActiveMTLSBackend)) => {
            // The proxy's own address scrapes in plaintext (a node-local agent); anyone else
            // presents a mesh certificate.
            let mut local = filter_chain(vec![filter.clone()]);
            local["filter_chain_match"] = json!({"source_prefix_ranges": [
                {"address_prefix": networking.address, "prefix_len": if networking.address.contains(':') { 128 } else { 32 }}
            ]});
            let mut secured = filter_chain(vec![filter]);
            secured["transport_socket"] = crate::envoy::tls::inbound_mtls(&mesh.mesh);
            vec![local, secured]
        }
        (_, Some(LegacyTlsMode::ProvidedTls)) => {
            let mut chain = filter_chain(vec![filter]);
            if let Some(transport) = provided_tls(rs, "the Mesh's Prometheus endpoint") {
                chain["transport_socket"] = transport;
            }
            vec![chain]
        }
        _ => vec![filter_chain(vec![filter])],
    };
    let listener = inbound_listener(LEGACY_LISTENER, &networking.address, conf.port, chains);
    let socket =
        model::proxy_paths::metrics_hijacker_socket(rs.env.workdir(), &proxy.name, &mesh.mesh);
    rs.add_listener(Origin::MeshMetrics, listener);
    rs.add_cluster(
        Origin::MeshMetrics,
        hijacker_cluster(LEGACY_HIJACKER_CLUSTER, &socket),
    );
}

/// TLS with the certificate kuma-dp was given for its metrics listener (`--metrics-cert-path`,
/// `--metrics-key-path`, read by Envoy from the proxy's host); without one, plaintext and a
/// warning, as Kuma falls back.
fn provided_tls(rs: &mut ResourceSet, what: &str) -> Option<Value> {
    let Some((cert, key)) = rs.env.metrics_certificate.clone() else {
        rs.warnings.push(format!(
            "{what}: TLS mode ProvidedTLS needs kuma-dp's --metrics-cert-path and --metrics-key-path, which it was not given; served without TLS, as Kuma does"
        ));
        return None;
    };
    Some(
        json!({"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                "tls_certificates": [{
                    "certificate_chain": {"filename": cert},
                    "private_key": {"filename": key}
                }]
            }
        }}),
    )
}

/// The Mesh's legacy Prometheus configuration as it applies to `proxy` (the Dataplane's
/// `spec.metrics` over the Mesh's), and what to warn about; `None` when the proxy serves no
/// legacy endpoint (none enabled, or its port is one of the proxy's inbounds). MADS lists
/// exactly the proxies this serves.
pub fn legacy_conf(
    mesh: &MeshContext,
    proxy: &DataplaneEntry,
) -> (
    Option<model::specs::mesh::PrometheusMetricsConf>,
    Vec<String>,
) {
    let mut warnings = Vec::new();
    let Some(base) = &mesh.legacy_metrics else {
        return (None, warnings);
    };
    let conf = match base.with_dataplane(proxy.spec.metrics.as_ref()) {
        Ok(conf) => conf,
        Err(e) => {
            warnings.push(format!(
                "the Dataplane's metrics do not read as a Prometheus backend ({e}); the Mesh's are served"
            ));
            base.clone()
        }
    };
    if proxy
        .spec
        .networking
        .inbound
        .iter()
        .any(|i| i.port == conf.port || i.service_port == Some(conf.port))
    {
        warnings.push(format!(
            "the Mesh's Prometheus endpoint is not served: port {} is an inbound's",
            conf.port
        ));
        return (None, warnings);
    }
    (Some(conf), warnings)
}

/// A query parameter value with what would end or confuse it escaped.
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' | '#' | '%' | '+' | ' ' | '?' | '=' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// An OpenTelemetry backend as kuma-dp exports to it: through a socket Envoy listens on,
/// which forwards to the collector (Kuma's `_kuma:metrics:opentelemetry:<name>`).
struct OtelExport {
    /// Kuma's backend name: the endpoint without `/`, `:` as `-`.
    name: String,
    host: String,
    port: u32,
    socket: String,
    refresh_interval: String,
}

impl OtelExport {
    fn new(backend: &OtelMetricBackend, workdir: &str) -> Result<OtelExport, String> {
        if backend.endpoint.is_empty() {
            return Err(if backend.backend_ref.is_some() {
                "openTelemetry.backendRef (MeshOpenTelemetryBackend) is not supported yet".into()
            } else {
                "openTelemetry.endpoint is empty".into()
            });
        }
        let authority = backend
            .endpoint
            .split_once("://")
            .map_or(backend.endpoint.as_str(), |(_, rest)| rest)
            .trim_end_matches('/');
        let (host, port) = super::mesh_trace::host_port(authority, OTLP_GRPC_PORT)?;
        let name = backend.endpoint.replace('/', "").replace(':', "-");
        Ok(OtelExport {
            socket: model::proxy_paths::mesh_metric_otel_socket(workdir, &name),
            host: host.to_string(),
            port,
            refresh_interval: backend
                .refresh_interval
                .clone()
                .unwrap_or_else(|| DEFAULT_REFRESH_INTERVAL.into()),
            name,
        })
    }
}

fn otel_backends(conf: &MetricConf) -> impl Iterator<Item = &OtelMetricBackend> {
    conf.backends
        .iter()
        .flatten()
        .filter(|b| b.backend_type == MetricBackendType::OpenTelemetry)
        .filter_map(|b| b.open_telemetry.as_ref())
}

/// The pipe kuma-dp pushes OTLP/gRPC into; Envoy forwards every call to the collector.
fn otel_listener(name: &str, socket: &str) -> Value {
    let mut filter = http_manager(name, forward_to(name, "/", name, None));
    filter["typed_config"]["codec_type"] = json!("HTTP2");
    pipe_listener(name, socket, filter)
}

/// A listener on the pipe `path` (in kuma-dp's working directory) with one filter.
pub(crate) fn pipe_listener(name: &str, path: &str, filter: Value) -> Value {
    json!({
        "name": name,
        "address": {"pipe": {"path": path}},
        "filter_chains": [{"filters": [filter]}]
    })
}

/// A route configuration sending every request under `prefix` to `cluster`, the prefix
/// rewritten to `rewrite` if given.
fn forward_to(name: &str, prefix: &str, cluster: &str, rewrite: Option<&str>) -> Value {
    let mut route = json!({"cluster": cluster});
    if let Some(rewrite) = rewrite {
        route["prefix_rewrite"] = json!(rewrite);
    }
    json!({
        "validate_clusters": false,
        "virtual_hosts": [{
            "name": name,
            "domains": ["*"],
            "routes": [{"match": {"prefix": prefix}, "route": route}]
        }]
    })
}

/// An HTTP connection manager filter with only the router, serving `route_config`.
pub(crate) fn http_manager(stat_prefix: &str, route_config: Value) -> Value {
    json!({"name": HCM, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_name(stat_prefix),
        "http_filters": [{"name": ROUTER, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        "route_config": route_config
    }})
}

/// A conf's Prometheus backends (what MADS lists, too).
pub fn prometheus_backends(conf: &MetricConf) -> impl Iterator<Item = &PrometheusBackend> {
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
    let mut filter = http_manager(
        name,
        forward_to(name, path, HIJACKER_CLUSTER, Some(MESH_METRIC_PATH)),
    );
    // Kuma's setting: only loopback is internal (Envoy warns when this is left unset).
    filter["typed_config"]["internal_address_config"] =
        json!({"cidr_ranges": [{"address_prefix": "127.0.0.1", "prefix_len": 32}]});
    inbound_listener(name, address, port, vec![filter_chain(vec![filter])])
}

/// The cluster `name` to kuma-dp's metrics socket (MeshMetric's and the legacy endpoint's
/// differ only in name, as in Kuma).
fn hijacker_cluster(name: &str, socket: &str) -> Value {
    json!({
        "name": name,
        "alt_stat_name": stat_name(name),
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": socket}}}}]}]
        }
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
    prometheus: bool,
    otel: &[OtelExport],
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
    let mut backends = Vec::new();
    if prometheus {
        backends.push(json!({"type": "Prometheus", "name": null}));
    }
    for export in otel {
        backends.push(json!({
            "type": "OpenTelemetry",
            "name": export.name,
            "openTelemetry": {"endpoint": export.socket, "refreshInterval": export.refresh_interval}
        }));
    }
    DataplaneConfig {
        observability: Observability {
            metrics: Metrics {
                applications,
                backends,
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
    labels.extend(dataplane_labels(mesh, proxy));
    labels.insert("dataplane".into(), proxy.name.clone());
    if workload.is_none()
        && let Some(service) = identifying_service(proxy)
    {
        labels.insert("service".into(), service.to_string());
    }
    labels
}

/// A proxy's labels as Kuma's MADS gives them (`DataplaneLabels`): each tag (made a label name)
/// with its first value and its plural with every value (`,a,b,`), and `kuma_io_mesh_gateway`
/// on a builtin gateway.
pub fn dataplane_labels(mesh: &MeshContext, proxy: &DataplaneEntry) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
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
        labels.insert(label_name(key), values[0].to_string());
        labels.insert(
            label_name(&format!("{key}s")),
            format!(",{},", values.join(",")),
        );
    }
    if crate::generator::gateway::is_builtin(proxy) {
        let gateway = crate::rules::matching::serving_gateway(mesh, proxy)
            .map(|g| g.name.clone())
            .unwrap_or_default();
        labels.insert("kuma_io_mesh_gateway".into(), gateway);
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
