//! MeshTrace (Kuma's `pkg/plugins/policies/meshtrace`): Envoy tracing on every HTTP connection
//! manager of the proxy (inbounds, outbounds, builtin gateway listeners), from the merged
//! `default` of the policies selecting the proxy, and a cluster to the collector. As in Kuma,
//! only the first backend is used: Zipkin (`meshtrace:zipkin`), Datadog (`meshtrace:datadog`)
//! or OpenTelemetry over gRPC (`meshtrace:opentelemetry`). Spans carry Kuma's `kuma.mesh` and
//! `kuma.zone` tags unless the policy names them itself.

use model::ResourceType;
use model::labels::{SERVICE_TAG, ZONE};
use model::specs::policy::{TraceBackend, TraceBackendType, TraceConf};
use serde_json::{Value, json};

use crate::context::{DataplaneEntry, MeshContext};
use crate::envoy::cluster::use_http2_upstream;
use crate::envoy::core::CONNECT_TIMEOUT;
use crate::envoy::endpoints::lb_endpoint;
use crate::resources::{Origin, ResourceSet};

pub struct Plugin;

/// Where spans go: the collector's cluster and Envoy's tracer for it.
struct Collector {
    cluster: Value,
    tracer: Tracer,
}

enum Tracer {
    /// Envoy's ZipkinConfig, the same on every listener.
    Zipkin(Value),
    /// Kuma's split service names a Datadog service per direction and destination.
    Datadog { service: String, split: bool },
    /// `authority`: the collector's address, sent as `:authority` (Envoy's default is the
    /// cluster name, which strict HTTP/2 servers may refuse as an authority).
    OpenTelemetry { service: String, authority: String },
}

impl Tracer {
    /// Envoy's `provider` on a listener whose traffic goes to `destination` (`None`: inbound).
    fn provider(&self, destination: Option<&str>) -> Value {
        match self {
            Tracer::Zipkin(config) => {
                json!({"name": "envoy.tracers.zipkin", "typed_config": config})
            }
            Tracer::Datadog { service, split } => {
                let service_name = match (split, destination) {
                    (false, _) => service.clone(),
                    (true, None) => format!("{service}_inbound"),
                    (true, Some(d)) => format!("{service}_outbound_{d}"),
                };
                json!({"name": "envoy.tracers.datadog", "typed_config": {
                    "@type": "type.googleapis.com/envoy.config.trace.v3.DatadogConfig",
                    "collector_cluster": DATADOG,
                    "service_name": service_name,
                }})
            }
            Tracer::OpenTelemetry { service, authority } => {
                json!({"name": "envoy.tracers.opentelemetry", "typed_config": {
                    "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                    "grpc_service": {"envoy_grpc": {"cluster_name": OPENTELEMETRY, "authority": authority}},
                    "service_name": service,
                }})
            }
        }
    }
}

const ZIPKIN: &str = "meshtrace:zipkin";
const DATADOG: &str = "meshtrace:datadog";
const OPENTELEMETRY: &str = "meshtrace:opentelemetry";

impl super::PolicyPlugin for Plugin {
    fn kind(&self) -> ResourceType {
        ResourceType::MeshTrace
    }

    fn apply(&self, rs: &mut ResourceSet, mesh: &MeshContext, proxy: &DataplaneEntry) {
        let Some(applied) = super::proxy_conf::<TraceConf>(self.kind(), rs, mesh, proxy) else {
            return;
        };
        let conf = applied.conf;
        let Some(backend) = conf.backends.as_ref().and_then(|b| b.first()) else {
            return;
        };
        let collector = match collector(backend, proxy) {
            Ok(c) => c,
            Err(why) => {
                rs.warnings.push(format!(
                    "MeshTrace backend for the proxy (from {}) not applied: {why}",
                    applied.policies
                ));
                return;
            }
        };
        let zone = proxy
            .labels
            .get(ZONE)
            .map(String::as_str)
            .unwrap_or(&mesh.local_zone);
        let tags = custom_tags(&conf, &mesh.mesh, zone);
        let gateway = crate::generator::gateway::is_builtin(proxy);
        let destinations: Vec<String> = rs.destinations.iter().map(|d| d.service.clone()).collect();
        for (origin, mut listener) in rs.listeners_mut() {
            let destination = match origin {
                Origin::Outbound { destination, .. } => {
                    destinations.get(destination).map(String::as_str)
                }
                _ => None,
            };
            let mut tracing = json!({
                "spawn_upstream_span": gateway,
                "provider": collector.tracer.provider(destination),
            });
            if let Some(sampling) = &conf.sampling {
                for (field, value) in [
                    ("overall_sampling", &sampling.overall),
                    ("client_sampling", &sampling.client),
                    ("random_sampling", &sampling.random),
                ] {
                    if let Some(percent) = value.as_ref().and_then(|v| v.as_f64()) {
                        tracing[field] = json!({"value": percent});
                    }
                }
            }
            if !tags.is_empty() {
                tracing["custom_tags"] = json!(tags);
            }
            for hcm in listener.http_connection_managers() {
                hcm.insert("tracing".into(), tracing.clone());
            }
        }
        if !rs.has_cluster(collector.cluster["name"].as_str().unwrap_or("")) {
            rs.add_cluster(Origin::Policy(self.kind()), collector.cluster);
        }
    }
}

/// The policy's tags, then Kuma's `kuma.mesh` and `kuma.zone` unless the policy set them.
fn custom_tags(conf: &TraceConf, mesh: &str, zone: &str) -> Vec<Value> {
    let mut tags: Vec<Value> = conf
        .tags
        .iter()
        .flatten()
        .map(|t| match &t.header {
            Some(h) => {
                let mut header = json!({"name": h.name});
                if let Some(default) = &h.default {
                    header["default_value"] = json!(default);
                }
                json!({"tag": t.name, "request_header": header})
            }
            None => {
                json!({"tag": t.name, "literal": {"value": t.literal.clone().unwrap_or_default()}})
            }
        })
        .collect();
    for (tag, value) in [("kuma.mesh", mesh), ("kuma.zone", zone)] {
        if !value.is_empty() && !tags.iter().any(|t| t["tag"] == tag) {
            tags.push(json!({"tag": tag, "literal": {"value": value}}));
        }
    }
    tags
}

/// `scheme://host:port/path` split as Envoy needs it: (TLS, host, port, path).
fn split_url(url: &str) -> Result<(bool, &str, u32, &str), String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("url {url:?} must start with http:// or https://"));
    };
    let (authority, path) = rest
        .find('/')
        .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let (host, port) = host_port(authority, if tls { 443 } else { 80 })?;
    Ok((tls, host, port, path))
}

/// `host:port` (or a bracketed IPv6 address); `default_port` when there is none.
pub(crate) fn host_port(authority: &str, default_port: u32) -> Result<(&str, u32), String> {
    let (host, port) = match authority.rsplit_once(':') {
        // A bare IPv6 address: its colons are not a port separator.
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (authority, None),
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    let port = match port {
        Some(p) => p
            .parse::<u32>()
            .ok()
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| format!("{authority:?} has no valid port"))?,
        None => default_port,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{authority:?} names no host"));
    }
    Ok((host, port))
}

/// The collector's cluster, resolved by DNS as Kuma's is (an IP address resolves to itself).
pub(crate) fn collector_cluster(name: &str, host: &str, port: u32, tls: bool) -> Value {
    let mut cluster = json!({
        "name": name,
        "alt_stat_name": name.replace(':', "_"),
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_ONLY",
        "connect_timeout": CONNECT_TIMEOUT,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [lb_endpoint(host, port, None)]}]
        }
    });
    if tls {
        cluster["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": host
            }
        });
    }
    cluster
}

fn backend_type(b: &TraceBackend) -> Option<TraceBackendType> {
    b.backend_type.or(if b.zipkin.is_some() {
        Some(TraceBackendType::Zipkin)
    } else if b.datadog.is_some() {
        Some(TraceBackendType::Datadog)
    } else if b.open_telemetry.is_some() {
        Some(TraceBackendType::OpenTelemetry)
    } else {
        None
    })
}

fn collector(backend: &TraceBackend, proxy: &DataplaneEntry) -> Result<Collector, String> {
    let service = identifying_service(proxy);
    let gateway = crate::generator::gateway::is_builtin(proxy);
    match backend_type(backend) {
        Some(TraceBackendType::Zipkin) => {
            let zipkin = backend.zipkin.as_ref().ok_or("type Zipkin needs zipkin")?;
            let (tls, host, port, path) = split_url(&zipkin.url)?;
            let version = match zipkin.api_version.as_deref() {
                Some("httpProto") => "HTTP_PROTO",
                _ => "HTTP_JSON",
            };
            let authority = zipkin
                .url
                .split_once("://")
                .map(|(_, r)| r.split('/').next().unwrap_or(r).to_string())
                .unwrap_or_default();
            let config = json!({
                "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
                "collector_cluster": ZIPKIN,
                "collector_endpoint": path,
                "trace_id_128bit": zipkin.trace_id_128bit.unwrap_or(false),
                "collector_endpoint_version": version,
                // Kuma's default: share the span context with the caller.
                "shared_span_context": zipkin.shared_span_context.unwrap_or(true),
                "collector_hostname": authority,
                "split_spans_for_request": gateway,
            });
            Ok(Collector {
                cluster: collector_cluster(ZIPKIN, host, port, tls),
                tracer: Tracer::Zipkin(config),
            })
        }
        Some(TraceBackendType::Datadog) => {
            let datadog = backend
                .datadog
                .as_ref()
                .ok_or("type Datadog needs datadog")?;
            let (_, host, port, _) = split_url(&datadog.url)?;
            Ok(Collector {
                cluster: collector_cluster(DATADOG, host, port, false),
                tracer: Tracer::Datadog {
                    service,
                    split: datadog.split_service.unwrap_or(false),
                },
            })
        }
        Some(TraceBackendType::OpenTelemetry) => {
            let otel = backend
                .open_telemetry
                .as_ref()
                .ok_or("type OpenTelemetry needs openTelemetry")?;
            if otel.backend_ref.is_some() && otel.endpoint.is_empty() {
                return Err(
                    "openTelemetry.backendRef (MeshOpenTelemetryBackend) is not supported yet"
                        .into(),
                );
            }
            let endpoint = otel
                .endpoint
                .split_once("://")
                .map_or(otel.endpoint.as_str(), |(_, r)| r)
                .trim_end_matches('/');
            let (host, port) = host_port(endpoint, 4317)?;
            let mut cluster = collector_cluster(OPENTELEMETRY, host, port, false);
            use_http2_upstream(&mut cluster);
            Ok(Collector {
                cluster,
                tracer: Tracer::OpenTelemetry {
                    service,
                    authority: format!("{host}:{port}"),
                },
            })
        }
        None => Err("the backend names no type (zipkin, datadog or openTelemetry)".into()),
    }
}

/// The service a proxy speaks as (Kuma's `IdentifyingName`): its first inbound's, or its
/// gateway's.
pub(crate) fn identifying_service(proxy: &DataplaneEntry) -> String {
    let networking = &proxy.spec.networking;
    networking
        .inbound
        .first()
        .map(|i| &i.tags)
        .or(networking.gateway.as_ref().map(|g| &g.tags))
        .and_then(|tags| tags.get(SERVICE_TAG))
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_as_envoy_needs_them() {
        assert_eq!(
            split_url("http://jaeger:9411/api/v2/spans"),
            Ok((false, "jaeger", 9411, "/api/v2/spans"))
        );
        assert_eq!(
            split_url("https://zipkin.example"),
            Ok((true, "zipkin.example", 443, "/"))
        );
        assert_eq!(host_port("[::1]:4317", 1), Ok(("::1", 4317)));
        assert_eq!(host_port("otel:4317", 1), Ok(("otel", 4317)));
        assert!(split_url("jaeger:9411").is_err());
        assert!(host_port("otel:99999", 1).is_err());
    }
}
