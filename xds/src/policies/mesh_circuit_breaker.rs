//! MeshCircuitBreaker (Kuma's `pkg/plugins/policies/meshcircuitbreaker`): connection limits
//! as the cluster's default-priority `circuit_breakers` threshold (with `track_remaining`, as
//! Kuma sets it) and outlier detection, on destination clusters (by `to`) and on inbound
//! application clusters (by the inbound's catch-all rules, `from[]` read as rules).

use model::ResourceType;
use model::duration::parse_duration;
use model::specs::policy::{CircuitBreakerConf, ConnectionLimits, Detectors, OutlierDetection};
use serde_json::{Map, Value, json};

use super::Applied;
use crate::context::{DataplaneEntry, MeshContext};
use crate::envoy::cluster::ClusterMut;
use crate::envoy::core::duration;
use crate::resources::{Origin, ResourceSet};
use crate::rules::matching::matched_in;

pub struct Plugin;

impl super::PolicyPlugin for Plugin {
    fn kind(&self) -> ResourceType {
        ResourceType::MeshCircuitBreaker
    }

    fn apply(&self, rs: &mut ResourceSet, mesh: &MeshContext, proxy: &DataplaneEntry) {
        let matching = matched_in(mesh, self.kind(), proxy);
        if matching.matched.is_empty() {
            return;
        }
        let inbound: Vec<Option<Applied<CircuitBreakerConf>>> =
            super::inbound_confs(self.kind(), rs, &matching.matched, proxy);
        let outbound: Vec<Option<Applied<CircuitBreakerConf>>> =
            super::destination_confs(self.kind(), rs, mesh, &matching.matched);
        let targets = inbound
            .into_iter()
            .enumerate()
            .map(|(i, c)| (Origin::Inbound(i), c))
            .chain(
                outbound
                    .into_iter()
                    .enumerate()
                    .map(|(d, c)| (Origin::Destination(d), c)),
            );
        for (origin, conf) in targets {
            if let (Some(applied), Some(mut cluster)) = (conf, rs.cluster_mut(origin)) {
                configure(&mut cluster, &applied.conf);
            }
        }
    }
}

fn configure(cluster: &mut ClusterMut<'_>, conf: &CircuitBreakerConf) {
    let mut fields = Map::new();
    fields.insert(
        "circuit_breakers".into(),
        json!({"thresholds": [thresholds(conf.connection_limits.as_ref())]}),
    );
    if let Some(od) = conf
        .outlier_detection
        .as_ref()
        .filter(|od| od.disabled != Some(true))
    {
        fields.insert("outlier_detection".into(), outlier_detection(od));
        if let Some(p) = od.healthy_panic_threshold.as_ref().and_then(|p| p.as_f64()) {
            fields.insert(
                "common_lb_config".into(),
                json!({"healthy_panic_threshold": {"value": p}}),
            );
        }
    }
    cluster.set_fields(fields);
}

fn thresholds(limits: Option<&ConnectionLimits>) -> Value {
    let mut t = json!({"priority": "DEFAULT", "track_remaining": true});
    if let Some(l) = limits {
        for (key, value) in [
            ("max_connections", l.max_connections),
            ("max_connection_pools", l.max_connection_pools),
            ("max_pending_requests", l.max_pending_requests),
            ("max_requests", l.max_requests),
            ("max_retries", l.max_retries),
        ] {
            if let Some(v) = value {
                t[key] = json!(v);
            }
        }
    }
    t
}

fn set_duration(out: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(d) = value.as_deref().and_then(|v| parse_duration(v).ok()) {
        out.insert(key.into(), json!(duration(d)));
    }
}

/// Kuma enforces exactly the detectors a policy names (100%) and turns the others off (0%),
/// where Envoy would enforce consecutive 5xx and success rate by default.
fn outlier_detection(od: &OutlierDetection) -> Value {
    let mut out = Map::new();
    set_duration(&mut out, "interval", &od.interval);
    set_duration(&mut out, "base_ejection_time", &od.base_ejection_time);
    if let Some(p) = od.max_ejection_percent {
        out.insert("max_ejection_percent".into(), json!(p));
    }
    if let Some(split) = od.split_external_and_local_errors {
        out.insert("split_external_local_origin_errors".into(), json!(split));
    }
    let d = od.detectors.clone().unwrap_or_default();
    let enforce = |on: bool| json!(if on { 100 } else { 0 });
    let Detectors {
        total_failures,
        gateway_failures,
        local_origin_failures,
        success_rate,
        failure_percentage,
    } = d;
    let consecutive = [
        (
            "consecutive_5xx",
            "enforcing_consecutive_5xx",
            total_failures,
        ),
        (
            "consecutive_gateway_failure",
            "enforcing_consecutive_gateway_failure",
            gateway_failures,
        ),
        (
            "consecutive_local_origin_failure",
            "enforcing_consecutive_local_origin_failure",
            local_origin_failures,
        ),
    ];
    for (count_key, enforce_key, detector) in consecutive {
        let count = detector.and_then(|d| d.consecutive);
        out.insert(enforce_key.into(), enforce(count.is_some()));
        if let Some(c) = count {
            out.insert(count_key.into(), json!(c));
        }
    }
    out.insert(
        "enforcing_success_rate".into(),
        enforce(success_rate.is_some()),
    );
    out.insert(
        "enforcing_local_origin_success_rate".into(),
        enforce(success_rate.is_some()),
    );
    if let Some(sr) = success_rate {
        if let Some(v) = sr.minimum_hosts {
            out.insert("success_rate_minimum_hosts".into(), json!(v));
        }
        if let Some(v) = sr.request_volume {
            out.insert("success_rate_request_volume".into(), json!(v));
        }
        if let Some(f) = sr.standard_deviation_factor.and_then(|f| f.as_f64()) {
            // Envoy reads the factor in thousandths.
            out.insert(
                "success_rate_stdev_factor".into(),
                json!((f * 1000.0).round() as u64),
            );
        }
    }
    let failure_percentage_on = failure_percentage.is_some();
    out.insert(
        "enforcing_failure_percentage".into(),
        enforce(failure_percentage_on),
    );
    out.insert(
        "enforcing_failure_percentage_local_origin".into(),
        enforce(failure_percentage_on),
    );
    if let Some(fp) = failure_percentage {
        for (key, value) in [
            ("failure_percentage_minimum_hosts", fp.minimum_hosts),
            ("failure_percentage_request_volume", fp.request_volume),
            ("failure_percentage_threshold", fp.threshold),
        ] {
            if let Some(v) = value {
                out.insert(key.into(), json!(v));
            }
        }
    }
    Value::Object(out)
}
