//! MeshFaultInjection: HTTP aborts, delays and bandwidth limits injected on inbounds.

use super::common::*;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshFaultInjectionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<FromItem<FaultInjectionConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<ToItem<FaultInjectionConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleItem<FaultInjectionConf>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultInjectionConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Vec<HttpFault>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortFault>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DelayFault>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_bandwidth: Option<BandwidthFault>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AbortFault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<IntOrString>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DelayFault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<IntOrString>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BandwidthFault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<IntOrString>,
}

/// `<number><unit>` with unit kbps, Mbps or Gbps (any case), e.g. `10kbps`.
fn is_bandwidth(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    ["kbps", "mbps", "gbps"].iter().any(|unit| {
        lower
            .strip_suffix(unit)
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    })
}

fn check_fault_injection_conf(v: &mut Validator, c: &FaultInjectionConf) {
    let Some(faults) = &c.http else { return };
    v.field("http", |v| {
        for (i, f) in faults.iter().enumerate() {
            v.index(i, |v| {
                if f.abort.is_none() && f.delay.is_none() && f.response_bandwidth.is_none() {
                    v.violation("must have at least one defined: abort, delay, responseBandwidth");
                }
                if let Some(a) = &f.abort {
                    v.field("abort", |v| {
                        match a.http_status {
                            None => v.violation_at("httpStatus", MUST_BE_DEFINED),
                            Some(s) if !(100..=599).contains(&s) => v.violation_at(
                                "httpStatus",
                                "must be in inclusive range [100, 599]",
                            ),
                            Some(_) => {}
                        }
                        percentage(v, "percentage", &a.percentage, true);
                    });
                }
                if let Some(d) = &f.delay {
                    v.field("delay", |v| {
                        if d.value.is_none() {
                            v.violation_at("value", MUST_BE_DEFINED);
                        }
                        duration(v, "value", &d.value);
                        percentage(v, "percentage", &d.percentage, true);
                    });
                }
                if let Some(b) = &f.response_bandwidth {
                    v.field("responseBandwidth", |v| {
                        match &b.limit {
                            None => v.violation_at("limit", MUST_BE_DEFINED),
                            Some(l) if !is_bandwidth(l) => v.violation_at(
                                "limit",
                                "has to be in kbps/mbps/gbps units, e.g. 10kbps",
                            ),
                            Some(_) => {}
                        }
                        percentage(v, "percentage", &b.percentage, true);
                    });
                }
            });
        }
    });
}

impl Validate for MeshFaultInjectionSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(v, &self.target_ref, TOP_PROXY_KINDS, true);
        let gateway = top_kind(&self.target_ref) == K::MeshGateway;
        let to_kinds = if gateway { ONLY_MESH } else { TO_DESTINATIONS };
        let sections = (&self.from[..], &self.to[..], &self.rules[..]);
        check_sections(
            v,
            sections,
            gateway,
            (FROM_CLIENTS, to_kinds),
            check_fault_injection_conf,
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
    fn mesh_fault_injection_docs_examples() {
        ok(
            validate::<MeshFaultInjectionSpec>,
            json!({"targetRef": {"kind": "MeshService", "name": "backend"},
            "from": [{"targetRef": {"kind": "MeshSubset", "tags": {"kuma.io/service": "frontend"}},
                "default": {"http": [
                    {"abort": {"httpStatus": 500, "percentage": 50}},
                    {"delay": {"value": "5s", "percentage": "50.5"}},
                    {"responseBandwidth": {"limit": "50mbps", "percentage": 50}}]}}]}),
        );
        ok(
            validate::<MeshFaultInjectionSpec>,
            json!({"targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                "default": {"http": [{"abort": {"httpStatus": 503, "percentage": 10}}]}}]}),
        );
    }

    #[test]
    fn mesh_fault_injection_rejections() {
        let f = validate::<MeshFaultInjectionSpec>;
        err(
            f,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {"http": [{"abort": {"httpStatus": 900, "percentage": 50}}]}}]}),
            "spec.from[0].default.http[0].abort.httpStatus",
            "must be in inclusive range [100, 599]",
        );
        err(
            f,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {"http": [{"delay": {"value": "5s", "percentage": 150}}]}}]}),
            "spec.from[0].default.http[0].delay.percentage",
            "must be in inclusive range [0, 100]",
        );
        err(
            f,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {"http": [{"responseBandwidth": {"limit": "fast", "percentage": 1}}]}}]}),
            "spec.from[0].default.http[0].responseBandwidth.limit",
            "kbps",
        );
        err(
            f,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {"http": [{"abort": {"httpStatus": 500}}]}}]}),
            "spec.from[0].default.http[0].abort.percentage",
            "must be defined",
        );
    }
}
