//! MeshCircuitBreaker: connection limits and outlier detection on the clusters of the
//! selected traffic.

use super::common::*;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshCircuitBreakerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<FromItem<CircuitBreakerConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<ToItem<CircuitBreakerConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleItem<CircuitBreakerConf>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreakerConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limits: Option<ConnectionLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_pools: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_external_and_local_errors: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detectors: Option<Detectors>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_panic_threshold: Option<IntOrString>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Detectors {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_failures: Option<ConsecutiveDetector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_failures: Option<ConsecutiveDetector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_origin_failures: Option<ConsecutiveDetector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<SuccessRateDetector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_percentage: Option<FailurePercentageDetector>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsecutiveDetector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SuccessRateDetector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_hosts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_volume: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard_deviation_factor: Option<IntOrString>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailurePercentageDetector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_hosts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_volume: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
}

fn check_circuit_breaker_conf(v: &mut Validator, c: &CircuitBreakerConf) {
    if c.connection_limits.is_none() && c.outlier_detection.is_none() {
        v.violation("at least one of 'connectionLimits', 'outlierDetection' has to be defined");
    }
    if let Some(l) = &c.connection_limits {
        v.field("connectionLimits", |v| {
            if l.max_connections.is_none()
                && l.max_connection_pools.is_none()
                && l.max_pending_requests.is_none()
                && l.max_retries.is_none()
                && l.max_requests.is_none()
            {
                v.violation("at least one of the limits has to be defined");
            }
            for (name, value) in [
                ("maxConnections", l.max_connections),
                ("maxConnectionPools", l.max_connection_pools),
                ("maxPendingRequests", l.max_pending_requests),
                ("maxRetries", l.max_retries),
                ("maxRequests", l.max_requests),
            ] {
                greater_than_zero(v, name, value.map(i64::from));
            }
        });
    }
    if let Some(o) = &c.outlier_detection {
        v.field("outlierDetection", |v| {
            duration_positive(v, "interval", &o.interval);
            duration_positive(v, "baseEjectionTime", &o.base_ejection_time);
            in_range(
                v,
                "maxEjectionPercent",
                o.max_ejection_percent.map(f64::from),
                0.0,
                100.0,
            );
            percentage(
                v,
                "healthyPanicThreshold",
                &o.healthy_panic_threshold,
                false,
            );
            if let Some(d) = &o.detectors {
                v.field("detectors", |v| {
                    for (name, det) in [
                        ("totalFailures", &d.total_failures),
                        ("gatewayFailures", &d.gateway_failures),
                        ("localOriginFailures", &d.local_origin_failures),
                    ] {
                        if let Some(det) = det {
                            v.field(name, |v| {
                                greater_than_zero(v, "consecutive", det.consecutive.map(i64::from))
                            });
                        }
                    }
                    if let Some(sr) = &d.success_rate
                        && let Some(f) = &sr.standard_deviation_factor
                    {
                        v.field("successRate", |v| match f.as_f64() {
                            Some(x) if x >= 0.0 => {}
                            _ => v.violation_at(
                                "standardDeviationFactor",
                                "must be a non-negative number",
                            ),
                        });
                    }
                    if let Some(fp) = &d.failure_percentage {
                        v.field("failurePercentage", |v| {
                            in_range(v, "threshold", fp.threshold.map(f64::from), 0.0, 100.0)
                        });
                    }
                });
            }
        });
    }
}

impl Validate for MeshCircuitBreakerSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(v, &self.target_ref, TOP_PROXY_KINDS, true);
        let gateway = top_kind(&self.target_ref) == K::MeshGateway;
        let to_kinds = if gateway { ONLY_MESH } else { TO_DESTINATIONS };
        let sections = (&self.from[..], &self.to[..], &self.rules[..]);
        check_sections(
            v,
            sections,
            gateway,
            (ONLY_MESH, to_kinds),
            check_circuit_breaker_conf,
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
    fn mesh_circuit_breaker_docs_examples() {
        ok(
            validate::<MeshCircuitBreakerSpec>,
            json!({"targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {
                "connectionLimits": {"maxConnections": 2, "maxPendingRequests": 8, "maxRetries": 2, "maxRequests": 2},
                "outlierDetection": {"disabled": false, "interval": "5s", "baseEjectionTime": "30s", "maxEjectionPercent": 20,
                    "splitExternalAndLocalErrors": true, "healthyPanicThreshold": "60",
                    "detectors": {"totalFailures": {"consecutive": 10}, "gatewayFailures": {"consecutive": 10},
                        "localOriginFailures": {"consecutive": 10},
                        "successRate": {"minimumHosts": 5, "requestVolume": 10, "standardDeviationFactor": "1.9"},
                        "failurePercentage": {"requestVolume": 10, "minimumHosts": 5, "threshold": 85}}}}}]}),
        );
        ok(
            validate::<MeshCircuitBreakerSpec>,
            json!({"targetRef": {"kind": "Dataplane", "labels": {"app": "backend"}},
            "rules": [{"default": {"connectionLimits": {"maxConnections": 1024}}}]}),
        );
    }

    #[test]
    fn mesh_circuit_breaker_rejections() {
        err(
            validate::<MeshCircuitBreakerSpec>,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {}}]}),
            "spec.to[0].default",
            "at least one of 'connectionLimits', 'outlierDetection'",
        );
        err(
            validate::<MeshCircuitBreakerSpec>,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"outlierDetection": {"maxEjectionPercent": 120}}}]}),
            "spec.to[0].default.outlierDetection.maxEjectionPercent",
            "must be in inclusive range [0, 100]",
        );
        err(
            validate::<MeshCircuitBreakerSpec>,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"connectionLimits": {"maxConnections": 0}}}]}),
            "spec.to[0].default.connectionLimits.maxConnections",
            "must be greater than 0",
        );
        err(
            validate::<MeshCircuitBreakerSpec>,
            json!({"to": [{"targetRef": {"kind": "MeshSubset", "tags": {"a": "b"}},
            "default": {"connectionLimits": {"maxConnections": 1}}}]}),
            "spec.to[0].targetRef.kind",
            "value is not supported",
        );
    }
}
