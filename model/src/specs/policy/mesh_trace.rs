//! MeshTrace: Zipkin, Datadog and OpenTelemetry tracing backends, sampling and tags.

use super::common::*;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTraceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<TraceConf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<TraceBackend>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<TraceSampling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<TraceTag>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TraceBackendType {
    Zipkin,
    Datadog,
    OpenTelemetry,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceBackend {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub backend_type: Option<TraceBackendType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<ZipkinBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datadog: Option<DatadogBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_telemetry: Option<OtelTraceBackend>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZipkinBackend {
    #[serde(default)]
    pub url: String,
    #[serde(
        default,
        rename = "traceId128bit",
        skip_serializing_if = "Option::is_none"
    )]
    pub trace_id_128bit: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_span_context: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatadogBackend {
    #[serde(default)]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_service: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtelTraceBackend {
    #[serde(default)]
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceSampling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overall: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random: Option<IntOrString>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceTag {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<TraceHeaderTag>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceHeaderTag {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
}

fn check_trace_conf(v: &mut Validator, c: &TraceConf) {
    if let Some(backends) = &c.backends {
        v.field("backends", |v| {
            if backends.len() > 1 {
                v.violation("must have zero or one backend defined");
            }
            for (i, b) in backends.iter().enumerate() {
                v.index(i, |v| {
                    let defined = [
                        b.zipkin.is_some(),
                        b.datadog.is_some(),
                        b.open_telemetry.is_some(),
                    ]
                    .iter()
                    .filter(|x| **x)
                    .count();
                    if defined != 1 {
                        v.violation(
                            "backend must have exactly one defined: zipkin, datadog, openTelemetry",
                        );
                    }
                    match b.backend_type {
                        Some(TraceBackendType::Zipkin) if b.zipkin.is_none() => {
                            v.violation_at("zipkin", MUST_BE_DEFINED)
                        }
                        Some(TraceBackendType::Datadog) if b.datadog.is_none() => {
                            v.violation_at("datadog", MUST_BE_DEFINED)
                        }
                        Some(TraceBackendType::OpenTelemetry) if b.open_telemetry.is_none() => {
                            v.violation_at("openTelemetry", MUST_BE_DEFINED)
                        }
                        _ => {}
                    }
                    if let Some(z) = &b.zipkin {
                        v.field("zipkin", |v| {
                            if !is_http_url(&z.url) {
                                v.violation_at("url", "must be a valid url");
                            }
                            if let Some(api) = &z.api_version
                                && !["httpJson", "httpProto"].contains(&api.as_str())
                            {
                                v.violation_at("apiVersion", "must be one of: httpJson, httpProto");
                            }
                        });
                    }
                    if let Some(d) = &b.datadog {
                        v.field("datadog", |v| {
                            if !is_http_url(&d.url) {
                                v.violation_at("url", "must be a valid url");
                            }
                        });
                    }
                    if let Some(o) = &b.open_telemetry
                        && o.endpoint.is_empty()
                        && o.backend_ref.is_none()
                    {
                        v.field("openTelemetry", |v| {
                            v.violation_at("endpoint", "must not be empty")
                        });
                    }
                });
            }
        });
    }
    if let Some(s) = &c.sampling {
        v.field("sampling", |v| {
            percentage(v, "overall", &s.overall, false);
            percentage(v, "client", &s.client, false);
            percentage(v, "random", &s.random, false);
        });
    }
    if let Some(tags) = &c.tags {
        v.field("tags", |v| {
            for (i, t) in tags.iter().enumerate() {
                v.index(i, |v| {
                    v.require_non_empty("name", &t.name);
                    match (&t.literal, &t.header) {
                        (Some(_), Some(_)) | (None, None) => {
                            v.violation("tag must have exactly one defined: literal, header")
                        }
                        (None, Some(h)) => {
                            v.field("header", |v| v.require_non_empty("name", &h.name))
                        }
                        (Some(_), None) => {}
                    }
                });
            }
        });
    }
}

impl Validate for MeshTraceSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(v, &self.target_ref, TOP_PROXY_KINDS, false);
        check_default(v, &self.default, &mut check_trace_conf);
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
    fn mesh_trace_docs_examples() {
        ok(
            validate::<MeshTraceSpec>,
            json!({"targetRef": {"kind": "Mesh"}, "default": {
            "tags": [{"name": "team", "literal": "core"}, {"name": "env", "header": {"name": "x-env", "default": "prod"}}],
            "sampling": {"overall": 80, "random": 60, "client": "40"},
            "backends": [{"type": "Zipkin", "zipkin": {"url": "http://jaeger-collector:9411/api/v2/spans", "apiVersion": "httpJson"}}]}}),
        );
        ok(
            validate::<MeshTraceSpec>,
            json!({"default": {"backends": [{"type": "OpenTelemetry", "openTelemetry": {"endpoint": "otel-collector:4317"}}]}}),
        );
        ok(
            validate::<MeshTraceSpec>,
            json!({"default": {"backends": [{"type": "Datadog", "datadog": {"url": "http://127.0.0.1:8126", "splitService": true}}]}}),
        );
    }

    #[test]
    fn mesh_trace_rejections() {
        let f = validate::<MeshTraceSpec>;
        err(
            f,
            json!({"targetRef": {"kind": "Mesh"}}),
            "spec.default",
            "must be defined",
        );
        err(
            f,
            json!({"default": {"backends": [{"zipkin": {"url": "http://a:1"}}, {"zipkin": {"url": "http://b:1"}}]}}),
            "spec.default.backends",
            "must have zero or one backend defined",
        );
        err(
            f,
            json!({"default": {"sampling": {"overall": 101}}}),
            "spec.default.sampling.overall",
            "must be in inclusive range [0, 100]",
        );
        err(
            f,
            json!({"default": {"tags": [{"name": "t"}]}}),
            "spec.default.tags[0]",
            "exactly one defined: literal, header",
        );
        err(
            f,
            json!({"default": {"backends": [{"type": "Zipkin", "zipkin": {"url": "jaeger:9411"}}]}}),
            "spec.default.backends[0].zipkin.url",
            "must be a valid url",
        );
    }
}
