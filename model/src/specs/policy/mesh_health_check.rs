//! MeshHealthCheck: active TCP, HTTP and gRPC health checks of the destinations in `to`.

use super::common::*;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshHealthCheckSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<ToItem<HealthCheckConf>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_jitter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_jitter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_jitter_percent: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_panic_threshold: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_traffic_on_panic: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_log_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always_log_health_check_failures: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_traffic_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse_connection: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpHealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers_to_add: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_statuses: Option<Vec<i32>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcHealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

fn is_base64(s: &str) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).is_ok()
}

fn check_health_check_conf(v: &mut Validator, c: &HealthCheckConf) {
    duration_positive(v, "interval", &c.interval);
    duration_positive(v, "unhealthyInterval", &c.unhealthy_interval);
    duration_positive(v, "timeout", &c.timeout);
    duration(v, "initialJitter", &c.initial_jitter);
    duration(v, "intervalJitter", &c.interval_jitter);
    duration_positive(v, "noTrafficInterval", &c.no_traffic_interval);
    greater_than_zero(
        v,
        "unhealthyThreshold",
        c.unhealthy_threshold.map(i64::from),
    );
    greater_than_zero(v, "healthyThreshold", c.healthy_threshold.map(i64::from));
    in_range(
        v,
        "intervalJitterPercent",
        c.interval_jitter_percent.map(f64::from),
        0.0,
        100.0,
    );
    percentage(
        v,
        "healthyPanicThreshold",
        &c.healthy_panic_threshold,
        false,
    );
    if let Some(tcp) = &c.tcp {
        v.field("tcp", |v| {
            if let Some(send) = &tcp.send
                && !is_base64(send)
            {
                v.violation_at("send", "must be a valid base64 string");
            }
            for (i, r) in tcp.receive.iter().flatten().enumerate() {
                if !is_base64(r) {
                    v.field("receive", |v| {
                        v.index(i, |v| v.violation("must be a valid base64 string"))
                    });
                }
            }
        });
    }
    if let Some(http) = &c.http {
        v.field("http", |v| {
            if let Some(p) = &http.path
                && !p.starts_with('/')
            {
                v.violation_at("path", "must be an absolute path");
            }
            if let Some(m) = &http.request_headers_to_add {
                v.field("requestHeadersToAdd", |v| {
                    if m.remove.is_some() {
                        v.violation_at("remove", "must not be defined");
                    }
                    check_header_modifier(v, m);
                });
            }
            for (i, s) in http.expected_statuses.iter().flatten().enumerate() {
                if !(100..=599).contains(s) {
                    v.field("expectedStatuses", |v| {
                        v.index(i, |v| v.violation("must be in inclusive range [100, 599]"))
                    });
                }
            }
        });
    }
}

impl Validate for MeshHealthCheckSpec {
    fn validate(&self, v: &mut Validator) {
        check_to_only(
            v,
            &self.target_ref,
            &self.to,
            TO_DESTINATIONS,
            check_health_check_conf,
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
    fn mesh_health_check_docs_examples() {
        ok(
            validate::<MeshHealthCheckSpec>,
            json!({"targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {
                "interval": "10s", "timeout": "2s", "unhealthyThreshold": 3, "healthyThreshold": 1,
                "failTrafficOnPanic": true, "noTrafficInterval": "1s", "healthyPanicThreshold": 0,
                "reuseConnection": true,
                "tcp": {"disabled": true, "send": "Zm9v", "receive": ["YmFy", "YmF6"]},
                "http": {"path": "/health", "expectedStatuses": [200, 201],
                    "requestHeadersToAdd": {"set": [{"name": "Content-Type", "value": "application/json"}],
                                            "add": [{"name": "Accept", "value": "application/json"}]}},
                "grpc": {"serviceName": "", "authority": ""}}}]}),
        );
    }

    #[test]
    fn mesh_health_check_rejections() {
        err(
            validate::<MeshHealthCheckSpec>,
            json!({}),
            "spec.to",
            "needs at least one item",
        );
        err(
            validate::<MeshHealthCheckSpec>,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"interval": "0s"}}]}),
            "spec.to[0].default.interval",
            "greater than zero",
        );
        err(
            validate::<MeshHealthCheckSpec>,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"tcp": {"send": "not base64!"}}}]}),
            "spec.to[0].default.tcp.send",
            "base64",
        );
        err(
            validate::<MeshHealthCheckSpec>,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"expectedStatuses": [200, 700]}}}]}),
            "spec.to[0].default.http.expectedStatuses[1]",
            "must be in inclusive range [100, 599]",
        );
        err(
            validate::<MeshHealthCheckSpec>,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"healthyThreshold": 0}}]}),
            "spec.to[0].default.healthyThreshold",
            "must be greater than 0",
        );
    }
}
