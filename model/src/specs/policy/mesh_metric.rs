//! MeshMetric: Prometheus and OpenTelemetry metric backends, sidecar profiles and the
//! applications' own endpoints.

use super::common::*;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshMetricSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<MetricConf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<MetricSidecar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applications: Option<Vec<MetricApplication>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<MetricBackend>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSidecar {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_unused: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profiles: Option<MetricProfiles>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricProfiles {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append_profiles: Option<Vec<MetricProfile>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<MetricSelector>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<MetricSelector>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricProfileName {
    All,
    Basic,
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricProfile {
    pub name: MetricProfileName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricSelectorType {
    Prefix,
    Regex,
    Exact,
    Contains,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSelector {
    #[serde(rename = "type")]
    pub selector_type: MetricSelectorType,
    #[serde(rename = "match", default)]
    pub match_value: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricApplication {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricBackendType {
    Prometheus,
    OpenTelemetry,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricBackend {
    #[serde(rename = "type")]
    pub backend_type: MetricBackendType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_telemetry: Option<OtelMetricBackend>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrometheusTlsMode {
    Disabled,
    ProvidedTLS,
    ActiveMTLSBackend,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusTls {
    pub mode: PrometheusTlsMode,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusBackend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<PrometheusTls>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtelMetricBackend {
    #[serde(default)]
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<Value>,
}

fn check_metric_conf(v: &mut Validator, c: &MetricConf) {
    if let Some(s) = &c.sidecar
        && let Some(p) = &s.profiles
    {
        v.field("sidecar", |v| {
            v.field("profiles", |v| {
                for (name, list) in [("exclude", &p.exclude), ("include", &p.include)] {
                    for (i, sel) in list.iter().flatten().enumerate() {
                        if sel.match_value.is_empty() {
                            v.field(name, |v| {
                                v.index(i, |v| v.violation_at("match", "must not be empty"))
                            });
                        }
                    }
                }
            })
        });
    }
    if let Some(apps) = &c.applications {
        v.field("applications", |v| {
            for (i, a) in apps.iter().enumerate() {
                v.index(i, |v| {
                    match a.port {
                        None => v.violation_at("port", MUST_BE_DEFINED),
                        Some(p) => v.port("port", p),
                    }
                    if let Some(path) = &a.path
                        && !path.starts_with('/')
                    {
                        v.violation_at("path", "must be an absolute path");
                    }
                    if let Some(addr) = &a.address {
                        crate::specs::validate_address(v, "address", addr, false);
                    }
                });
            }
        });
    }
    if let Some(backends) = &c.backends {
        v.field("backends", |v| {
            for (i, b) in backends.iter().enumerate() {
                v.index(i, |v| match b.backend_type {
                    MetricBackendType::Prometheus => {
                        if b.open_telemetry.is_some() {
                            v.violation_at(
                                "openTelemetry",
                                "must not be defined with type Prometheus",
                            );
                        }
                        match &b.prometheus {
                            None => v.violation_at("prometheus", MUST_BE_DEFINED),
                            Some(p) => v.field("prometheus", |v| {
                                if let Some(port) = p.port {
                                    v.port("port", port);
                                }
                                if let Some(path) = &p.path
                                    && !path.starts_with('/')
                                {
                                    v.violation_at("path", "must be an absolute path");
                                }
                            }),
                        }
                    }
                    MetricBackendType::OpenTelemetry => {
                        if b.prometheus.is_some() {
                            v.violation_at(
                                "prometheus",
                                "must not be defined with type OpenTelemetry",
                            );
                        }
                        match &b.open_telemetry {
                            None => v.violation_at("openTelemetry", MUST_BE_DEFINED),
                            Some(o) => v.field("openTelemetry", |v| {
                                if o.endpoint.is_empty() && o.backend_ref.is_none() {
                                    v.violation_at("endpoint", "must not be empty");
                                }
                                duration_positive(v, "refreshInterval", &o.refresh_interval);
                            }),
                        }
                    }
                });
            }
        });
    }
}

impl Validate for MeshMetricSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(v, &self.target_ref, TOP_PROXY_KINDS, false);
        check_default(v, &self.default, &mut check_metric_conf);
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
    fn mesh_metric_docs_examples() {
        ok(
            validate::<MeshMetricSpec>,
            json!({"targetRef": {"kind": "Mesh"}, "default": {
            "sidecar": {"includeUnused": false, "profiles": {"appendProfiles": [{"name": "Basic"}],
                "exclude": [{"type": "Regex", "match": "envoy_cluster_.*"}], "include": [{"type": "Prefix", "match": "envoy_http_"}]}},
            "applications": [{"name": "backend", "path": "/metrics", "port": 8888, "address": "127.0.0.1"}],
            "backends": [{"type": "Prometheus", "prometheus": {"port": 5670, "path": "/metrics", "tls": {"mode": "ActiveMTLSBackend"}}},
                         {"type": "OpenTelemetry", "openTelemetry": {"endpoint": "otel-collector.observability.svc:4317", "refreshInterval": "30s"}}]}}),
        );
    }

    #[test]
    fn mesh_metric_rejections() {
        let f = validate::<MeshMetricSpec>;
        err(
            f,
            json!({"default": {"backends": [{"type": "Prometheus"}]}}),
            "spec.default.backends[0].prometheus",
            "must be defined",
        );
        err(
            f,
            json!({"default": {"applications": [{"port": 0}]}}),
            "spec.default.applications[0].port",
            "port must be in the range",
        );
        err(
            f,
            json!({"default": {"sidecar": {"profiles": {"appendProfiles": [{"name": "Everything"}]}}}}),
            "spec.default.sidecar.profiles.appendProfiles[0].name",
            "unknown variant",
        );
        err(
            f,
            json!({"default": {"backends": [{"type": "OpenTelemetry", "openTelemetry": {"endpoint": "x:4317", "refreshInterval": "0s"}}]}}),
            "spec.default.backends[0].openTelemetry.refreshInterval",
            "greater than zero",
        );
    }
}
