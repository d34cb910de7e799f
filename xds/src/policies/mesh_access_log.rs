//! MeshAccessLog (Kuma's `pkg/plugins/policies/meshaccesslog`): Envoy access loggers on the
//! connection managers and TCP proxies of a proxy's listeners.
//!
//! - Inbounds: the inbound's catch-all rule (`rules[]`, `from[]` read as rules).
//! - Outbounds: the `to` rule of the destination service.
//! - Builtin gateway listeners: the `to[]` entries for the whole mesh, and the listener's
//!   catch-all rule, of the policies selecting the listener.
//!
//! Backends: `file` (Envoy writes the file), `tcp` (Envoy writes `{"address", "message"}`
//! lines to kuma-dp's pipe, which forwards each message to the address, as Kuma's kuma-dp
//! does), `openTelemetry` (Envoy's OpenTelemetry logger over gRPC to the endpoint, a cluster
//! `meshaccesslog:opentelemetry:<n>` per distinct endpoint, the body and attributes as OTLP
//! values). Formats: plain (Kuma's default line by protocol when none is given) or JSON, with
//! Kuma's `%KUMA_*%` placeholders filled in here.

use model::ResourceType;
use model::labels::{SERVICE_TAG, WORKLOAD, ZONE};
use model::specs::policy::{AccessLogBackend, AccessLogBackendType, AccessLogConf, LogFormat};
use serde_json::{Map, Value, json};

use super::Applied;
use super::mesh_trace::identifying_service;
use crate::context::{DataplaneEntry, MeshContext, Protocol};
use crate::envoy::listener::ListenerMut;
use crate::resources::{Origin, ResourceSet};
use crate::rules::build::{catch_all, listener_rules, shared_to_rule};
use crate::rules::matching::matched_in;

const DEFAULT_TCP: &str = "[%START_TIME%] %RESPONSE_FLAGS% %KUMA_MESH% %KUMA_SOURCE_ADDRESS_WITHOUT_PORT%(%KUMA_SOURCE_SERVICE%)->%UPSTREAM_HOST%(%KUMA_DESTINATION_SERVICE%) took %DURATION%ms, sent %BYTES_SENT% bytes, received: %BYTES_RECEIVED% bytes";
const DEFAULT_HTTP: &str = r#"[%START_TIME%] %KUMA_MESH% "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-B3-TRACEID?X-DATADOG-TRACEID)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%KUMA_SOURCE_SERVICE%" "%KUMA_DESTINATION_SERVICE%" "%KUMA_SOURCE_ADDRESS_WITHOUT_PORT%" "%UPSTREAM_HOST%""#;
const FILE_LOGGER: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";

pub struct Plugin;

/// One listener to log on, with the conf and how Kuma's placeholders read there.
struct LogTarget {
    origin: Origin,
    conf: AccessLogConf,
    /// The listener and policies, for warnings.
    what: String,
    protocol: Protocol,
    source: String,
    destination: String,
    direction: &'static str,
}

/// What Kuma's `%KUMA_*%` placeholders stand for on one listener.
struct KumaValues<'a> {
    mesh: &'a str,
    zone: &'a str,
    workload: &'a str,
    source_ip: &'a str,
    source_service: &'a str,
    destination_service: &'a str,
    direction: &'static str,
}

impl KumaValues<'_> {
    fn interpolate(&self, format: &str) -> String {
        format
            .replace("%KUMA_SOURCE_ADDRESS_WITHOUT_PORT%", self.source_ip)
            .replace("%KUMA_SOURCE_ADDRESS%", &format!("{}:0", self.source_ip))
            .replace("%KUMA_SOURCE_SERVICE%", self.source_service)
            .replace("%KUMA_DESTINATION_SERVICE%", self.destination_service)
            .replace("%KUMA_MESH%", self.mesh)
            .replace("%KUMA_TRAFFIC_DIRECTION%", self.direction)
            .replace("%KUMA_ZONE%", self.zone)
            .replace("%KUMA_WORKLOAD%", self.workload)
    }
}

impl super::PolicyPlugin for Plugin {
    fn kind(&self) -> ResourceType {
        ResourceType::MeshAccessLog
    }

    fn apply(&self, rs: &mut ResourceSet, mesh: &MeshContext, proxy: &DataplaneEntry) {
        let matching = matched_in(mesh, self.kind(), proxy);
        if matching.matched.is_empty() {
            return;
        }
        let pipe = rs.env.access_log_pipe(&proxy.name, &mesh.mesh);
        let zone = proxy
            .labels
            .get(ZONE)
            .map(String::as_str)
            .unwrap_or(&mesh.local_zone);
        let workload = match proxy.labels.get(WORKLOAD) {
            Some(w) => format!(
                "kri_wl_{}_{zone}_{}_{w}_",
                mesh.mesh,
                proxy
                    .labels
                    .get("k8s.kuma.io/namespace")
                    .map_or("", String::as_str)
            ),
            None => String::new(),
        };
        let own_service = identifying_service(proxy);
        let mut warnings = Vec::new();
        let mut attach = Vec::new();
        // Inbounds: the caller is unknown to the proxy (Kuma's `unknown`).
        let inbound: Vec<Option<Applied<AccessLogConf>>> =
            super::inbound_confs(self.kind(), rs, &matching.matched, proxy);
        for (i, applied) in inbound.into_iter().enumerate() {
            let Some(Applied { conf, policies }) = applied else {
                continue;
            };
            let tags = &proxy.spec.networking.inbound[i].tags;
            let service = tags.get(SERVICE_TAG).map_or("", String::as_str);
            attach.push(LogTarget {
                origin: Origin::Inbound(i),
                conf,
                what: format!("inbound {i} (from {policies})"),
                protocol: Protocol::of_tags(tags),
                source: "unknown".into(),
                destination: service.into(),
                direction: "INBOUND",
            });
        }
        // Outbounds: from this proxy's service to the destination's.
        for (origin, d) in super::mesh_http_route::outbounds(rs) {
            let destination = rs.destinations[d].clone();
            let Some(rule) = shared_to_rule(mesh, &matching.matched, &destination.service) else {
                continue;
            };
            let what = format!("{} (from {})", destination.service, super::named(&rule));
            let Some(conf) =
                super::parse_conf::<AccessLogConf>(self.kind(), &rule.conf, &what, &mut warnings)
            else {
                continue;
            };
            attach.push(LogTarget {
                origin,
                conf,
                what,
                protocol: destination.protocol,
                source: own_service.clone(),
                destination: destination.service.clone(),
                direction: "OUTBOUND",
            });
        }
        // Gateway listeners: what they send out (`to: Mesh`) and what they take in (rules).
        let gateway: std::collections::BTreeMap<u32, Applied<AccessLogConf>> =
            super::gateway_listener_confs(self.kind(), rs, &matching.matched);
        let gateway_protocols: Vec<(u32, Protocol)> = rs
            .listeners_mut()
            .filter_map(|(o, mut l)| match o {
                Origin::Gateway { port } => Some((
                    port,
                    if l.is_http() {
                        Protocol::Http
                    } else {
                        Protocol::Tcp
                    },
                )),
                _ => None,
            })
            .collect();
        for (port, protocol) in gateway_protocols {
            let origin = Origin::Gateway { port };
            if let Some(Applied { conf, policies }) = gateway.get(&port) {
                attach.push(LogTarget {
                    origin,
                    conf: conf.clone(),
                    what: format!("gateway listener {port} (from {policies})"),
                    protocol,
                    source: own_service.clone(),
                    destination: "*".into(),
                    direction: "OUTBOUND",
                });
            }
            let rules = listener_rules(&matching.matched, port, true);
            if let Some(rule) = catch_all(&rules) {
                let what = format!("gateway listener {port} (from {})", super::named(&rule));
                if let Some(conf) = super::parse_conf::<AccessLogConf>(
                    self.kind(),
                    &rule.conf,
                    &what,
                    &mut warnings,
                ) {
                    attach.push(LogTarget {
                        origin,
                        conf,
                        what,
                        protocol,
                        source: "unknown".into(),
                        destination: own_service.clone(),
                        direction: "INBOUND",
                    });
                }
            }
        }
        // An OpenTelemetry collector's cluster per distinct endpoint, numbered as Kuma does.
        let mut collectors: Vec<String> = Vec::new();
        for target in attach {
            let values = KumaValues {
                mesh: &mesh.mesh,
                zone,
                workload: &workload,
                source_ip: &proxy.spec.networking.address,
                source_service: &target.source,
                destination_service: &target.destination,
                direction: target.direction,
            };
            let default_format = match target.protocol {
                Protocol::Tcp => DEFAULT_TCP,
                _ => DEFAULT_HTTP,
            };
            let loggers: Vec<Value> = target
                .conf
                .backends
                .iter()
                .flatten()
                .filter_map(
                    |b| match logger(b, default_format, &values, &pipe, &mut collectors) {
                        Ok(l) => Some(l),
                        Err(why) => {
                            warnings.push(format!(
                                "MeshAccessLog backend on {} not applied: {why}",
                                target.what
                            ));
                            None
                        }
                    },
                )
                .collect();
            if loggers.is_empty() {
                continue;
            }
            if let Some(mut listener) = rs.listener_mut(target.origin) {
                add_loggers(&mut listener, &loggers);
            }
        }
        for (i, endpoint) in collectors.iter().enumerate() {
            let name = collector_name(i);
            if rs.has_cluster(&name) {
                continue;
            }
            match super::mesh_trace::host_port(endpoint, 4317) {
                Ok((host, port)) => {
                    let mut cluster =
                        super::mesh_trace::collector_cluster(&name, host, port, false);
                    crate::envoy::cluster::use_http2_upstream(&mut cluster);
                    rs.add_cluster(Origin::Policy(self.kind()), cluster);
                }
                Err(why) => warnings.push(format!("MeshAccessLog OpenTelemetry endpoint: {why}")),
            }
        }
        rs.warnings.extend(warnings);
    }
}

fn collector_name(index: usize) -> String {
    format!("meshaccesslog:opentelemetry:{index}")
}

/// A JSON value as OpenTelemetry's `AnyValue`, strings with Kuma's placeholders filled in.
/// Envoy's logger formats only strings, lists and key-value lists: a number or a boolean is
/// sent as its text.
fn any_value(value: &Value, values: &KumaValues<'_>) -> Value {
    match value {
        Value::String(s) => json!({"string_value": values.interpolate(s)}),
        Value::Bool(_) | Value::Number(_) => json!({"string_value": value.to_string()}),
        Value::Array(items) => {
            json!({"array_value": {"values": items.iter().map(|v| any_value(v, values)).collect::<Vec<_>>()}})
        }
        Value::Object(fields) => json!({"kvlist_value": {"values": fields
            .iter()
            .map(|(k, v)| json!({"key": k, "value": any_value(v, values)}))
            .collect::<Vec<_>>()}}),
        Value::Null => json!({"string_value": ""}),
    }
}

fn backend_type(b: &AccessLogBackend) -> Option<AccessLogBackendType> {
    b.backend_type.or(if b.file.is_some() {
        Some(AccessLogBackendType::File)
    } else if b.tcp.is_some() {
        Some(AccessLogBackendType::Tcp)
    } else if b.open_telemetry.is_some() {
        Some(AccessLogBackendType::OpenTelemetry)
    } else {
        None
    })
}

/// Envoy's `log_format` of a backend: its plain line (with a newline) or JSON fields, each
/// with Kuma's placeholders filled in. `wrap` puts the line (or the fields) under `message`
/// beside other fields, as the TCP backend's pipe lines are.
fn log_format(
    format: Option<&LogFormat>,
    default_format: &str,
    values: &KumaValues<'_>,
    wrap: Option<Map<String, Value>>,
) -> Value {
    let omit_empty = format.and_then(|f| f.omit_empty_values).unwrap_or(false);
    let message = match format.and_then(|f| f.json.as_ref()) {
        Some(fields) => Value::Object(
            fields
                .iter()
                .map(|kv| (kv.key.clone(), json!(values.interpolate(&kv.value))))
                .collect(),
        ),
        None => {
            let plain = format
                .and_then(|f| f.plain.as_deref())
                .unwrap_or(default_format);
            json!(values.interpolate(&format!("{plain}\n")))
        }
    };
    let mut out = match (wrap, message) {
        (Some(mut fields), message) => {
            fields.insert("message".into(), message);
            json!({"json_format": fields})
        }
        (None, Value::Object(fields)) => json!({"json_format": fields}),
        (None, line) => json!({"text_format_source": {"inline_string": line}}),
    };
    if omit_empty {
        out["omit_empty_values"] = json!(true);
    }
    out
}

/// One Envoy access logger for `backend`; an OpenTelemetry one names its collector's cluster
/// by the endpoint's place in `collectors`.
fn logger(
    backend: &AccessLogBackend,
    default_format: &str,
    values: &KumaValues<'_>,
    pipe: &str,
    collectors: &mut Vec<String>,
) -> Result<Value, &'static str> {
    let (path, format) = match backend_type(backend) {
        Some(AccessLogBackendType::File) => {
            let file = backend.file.as_ref().ok_or("type File needs file")?;
            if file.path.is_empty() {
                return Err("file.path is empty");
            }
            let format = log_format(file.format.as_ref(), default_format, values, None);
            (file.path.clone(), format)
        }
        Some(AccessLogBackendType::Tcp) => {
            let tcp = backend.tcp.as_ref().ok_or("type Tcp needs tcp")?;
            if tcp.address.is_empty() {
                return Err("tcp.address is empty");
            }
            let mut wrap = Map::new();
            wrap.insert("address".into(), json!(tcp.address));
            let format = log_format(tcp.format.as_ref(), default_format, values, Some(wrap));
            (pipe.to_string(), format)
        }
        Some(AccessLogBackendType::OpenTelemetry) => {
            let otel = backend
                .open_telemetry
                .as_ref()
                .ok_or("type OpenTelemetry needs openTelemetry")?;
            let endpoint = otel.endpoint.as_deref().filter(|e| !e.is_empty()).ok_or(
                "openTelemetry.backendRef (MeshOpenTelemetryBackend) is not supported yet",
            )?;
            let index = collectors
                .iter()
                .position(|c| c == endpoint)
                .unwrap_or_else(|| {
                    collectors.push(endpoint.to_string());
                    collectors.len() - 1
                });
            let body = otel
                .body
                .clone()
                .unwrap_or_else(|| Value::String(default_format.to_string()));
            let attributes: Vec<Value> = otel
                .attributes
                .iter()
                .flatten()
                .map(|kv| json!({"key": kv.key, "value": any_value(&json!(kv.value), values)}))
                .collect();
            return Ok(
                json!({"name": "envoy.access_loggers.open_telemetry", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig",
                    // The collector's own address as `:authority`: Envoy's default, the cluster
                // name, is not a valid authority, and strict HTTP/2 servers reset the stream.
                "grpc_service": {"envoy_grpc": {"cluster_name": collector_name(index), "authority": endpoint}},
                    "log_name": "MeshAccessLog",
                    "body": any_value(&body, values),
                    "attributes": {"values": attributes},
                    "resource_attributes": {"values": [
                        {"key": "kuma.mesh", "value": {"string_value": values.mesh}}]},
                }}),
            );
        }
        None => return Err("the backend names no type (file, tcp or openTelemetry)"),
    };
    Ok(
        json!({"name": "envoy.access_loggers.file", "typed_config": {
        "@type": FILE_LOGGER, "path": path, "log_format": format}}),
    )
}

/// Appends `loggers` to every connection manager's and TCP proxy's access logs.
fn add_loggers(listener: &mut ListenerMut<'_>, loggers: &[Value]) {
    for owner in listener.access_log_owners() {
        let list = owner.entry("access_log").or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut() {
            list.extend(loggers.iter().cloned());
        }
    }
}
