//! MeshAccessLog: file, TCP and OpenTelemetry access-log backends with plain or JSON formats.

use super::common::*;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshAccessLogSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<FromItem<AccessLogConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<ToItem<AccessLogConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleItem<AccessLogConf>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<AccessLogBackend>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessLogBackendType {
    Tcp,
    File,
    OpenTelemetry,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogBackend {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub backend_type: Option<AccessLogBackendType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpLogBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileLogBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_telemetry: Option<OtelLogBackend>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpLogBackend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<LogFormat>,
    #[serde(default)]
    pub address: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileLogBackend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<LogFormat>,
    #[serde(default)]
    pub path: String,
}

/// The OpenTelemetry backend; `body` is the user's own OTLP value and stays opaque.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtelLogBackend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Vec<JsonKeyValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogFormatType {
    Plain,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogFormat {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub format_type: Option<LogFormatType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Vec<JsonKeyValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omit_empty_values: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JsonKeyValue {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub value: String,
}

fn check_log_format(v: &mut Validator, f: &Option<LogFormat>) {
    let Some(f) = f else { return };
    v.field("format", |v| {
        let ty = match (f.format_type, f.plain.is_some(), f.json.is_some()) {
            (_, true, true) => {
                v.violation("format can only have one type defined: plain, json");
                return;
            }
            (Some(t), _, _) => t,
            (None, true, false) => LogFormatType::Plain,
            (None, false, true) => LogFormatType::Json,
            (None, false, false) => {
                v.violation("format has to be defined: plain or json");
                return;
            }
        };
        match ty {
            LogFormatType::Plain => match &f.plain {
                None => v.violation_at("plain", MUST_BE_DEFINED),
                Some(p) if p.is_empty() => v.violation_at("plain", "must not be empty"),
                Some(_) => {}
            },
            LogFormatType::Json => match &f.json {
                None => v.violation_at("json", MUST_BE_DEFINED),
                Some(items) => v.field("json", |v| {
                    if items.is_empty() {
                        v.violation("must not be empty");
                    }
                    for (i, kv) in items.iter().enumerate() {
                        v.index(i, |v| v.require_non_empty("key", &kv.key));
                    }
                }),
            },
        }
    });
}

fn check_access_log_conf(v: &mut Validator, c: &AccessLogConf) {
    let Some(backends) = &c.backends else { return };
    v.field("backends", |v| {
        for (i, b) in backends.iter().enumerate() {
            v.index(i, |v| {
                let defined = [
                    b.tcp.is_some(),
                    b.file.is_some(),
                    b.open_telemetry.is_some(),
                ]
                .iter()
                .filter(|x| **x)
                .count();
                if defined != 1 {
                    v.violation("backend must have exactly one defined: tcp, file, openTelemetry");
                }
                match b.backend_type {
                    Some(AccessLogBackendType::Tcp) if b.tcp.is_none() => {
                        v.violation_at("tcp", MUST_BE_DEFINED)
                    }
                    Some(AccessLogBackendType::File) if b.file.is_none() => {
                        v.violation_at("file", MUST_BE_DEFINED)
                    }
                    Some(AccessLogBackendType::OpenTelemetry) if b.open_telemetry.is_none() => {
                        v.violation_at("openTelemetry", MUST_BE_DEFINED)
                    }
                    _ => {}
                }
                if let Some(tcp) = &b.tcp {
                    v.field("tcp", |v| {
                        check_log_format(v, &tcp.format);
                        if tcp.address.is_empty() {
                            v.violation_at("address", "must not be empty");
                        } else if !is_host_port(&tcp.address) {
                            v.violation_at(
                                "address",
                                "must be a valid address in the form host:port",
                            );
                        }
                    });
                }
                if let Some(file) = &b.file {
                    v.field("file", |v| {
                        check_log_format(v, &file.format);
                        if file.path.is_empty() {
                            v.violation_at("path", "must not be empty");
                        }
                    });
                }
                if let Some(otel) = &b.open_telemetry {
                    v.field("openTelemetry", |v| {
                        if otel.endpoint.as_deref().unwrap_or_default().is_empty()
                            && otel.backend_ref.is_none()
                        {
                            v.violation_at("endpoint", "must not be empty");
                        }
                        for (j, a) in otel.attributes.iter().flatten().enumerate() {
                            v.field("attributes", |v| {
                                v.index(j, |v| v.require_non_empty("key", &a.key))
                            });
                        }
                    });
                }
            });
        }
    });
}

/// `host:port`, `[v6]:port` or `ip:port`, as used by TCP log backends.
fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) && crate::specs::is_address(host)
}

impl Validate for MeshAccessLogSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(v, &self.target_ref, TOP_PROXY_KINDS, true);
        let gateway = top_kind(&self.target_ref) == K::MeshGateway;
        let to_kinds = if gateway { ONLY_MESH } else { TO_DESTINATIONS };
        let sections = (&self.from[..], &self.to[..], &self.rules[..]);
        check_sections(
            v,
            sections,
            false,
            (ONLY_MESH, to_kinds),
            check_access_log_conf,
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::specs::policy::validate;
    use crate::specs::testing::{err, ok};
    use serde_json::json;

    #[test]
    fn mesh_access_log_docs_examples() {
        ok(
            validate::<MeshAccessLogSpec>,
            json!({"targetRef": {"kind": "Mesh"},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"backends": [{"type": "File", "file": {"path": "/dev/stdout",
                "format": {"type": "Plain", "plain": "[%START_TIME%] %KUMA_MESH% %KUMA_SOURCE_SERVICE%"}}}]}}],
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {"backends": [
                {"type": "Tcp", "tcp": {"address": "127.0.0.1:5000", "format": {"type": "Json", "omitEmptyValues": true,
                    "json": [{"key": "start_time", "value": "%START_TIME%"}]}}},
                {"type": "OpenTelemetry", "openTelemetry": {"endpoint": "otel-collector:4317",
                    "attributes": [{"key": "mesh", "value": "%KUMA_MESH%"}],
                    "body": {"kvlistValue": {"values": [{"key": "mesh", "value": {"stringValue": "%KUMA_MESH%"}}]}}}}]}}]}),
        );
        ok(
            validate::<MeshAccessLogSpec>,
            json!({"targetRef": {"kind": "Dataplane", "labels": {"app": "web"}},
            "rules": [{"default": {"backends": [{"file": {"path": "/tmp/access.log"}}]}}]}),
        );
    }

    #[test]
    fn mesh_access_log_rejections() {
        let f = validate::<MeshAccessLogSpec>;
        err(
            f,
            json!({"targetRef": {"kind": "Mesh"}}),
            "spec",
            "at least one of 'from', 'to' has to be defined",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"backends": [{"type": "Tcp", "tcp": {"address": "nowhere"}}]}}]}),
            "spec.to[0].default.backends[0].tcp.address",
            "host:port",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"backends": [{"type": "File"}]}}]}),
            "spec.to[0].default.backends[0].file",
            "must be defined",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"backends": [{"file": {"path": "/x", "format": {"plain": "a", "json": []}}}]}}]}),
            "spec.to[0].default.backends[0].file.format",
            "format can only have one type defined",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"backends": [{"file": {"path": "/x", "fmt": {}}}]}}]}),
            "spec.to[0].default.backends[0].file.fmt",
            "unknown field `fmt`",
        );
    }
}
