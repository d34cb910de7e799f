//! MeshRateLimit: local HTTP request and TCP connection rate limits on inbounds.

use super::common::*;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshRateLimitSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<FromItem<RateLimitConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<ToItem<RateLimitConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleItem<RateLimitConf>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalRateLimit>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalRateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<LocalHttpRateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<LocalTcpRateLimit>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalHttpRateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_rate_limit: Option<OnRateLimit>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalTcpRateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_rate: Option<Rate>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OnRateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderModifier>,
}

fn check_rate(v: &mut Validator, name: &str, rate: &Option<Rate>, disabled: bool) {
    match rate {
        None if !disabled => v.violation_at(name, MUST_BE_DEFINED),
        None => {}
        Some(r) => v.field(name, |v| {
            match r.num {
                None => v.violation_at("num", MUST_BE_DEFINED),
                Some(0) => v.violation_at("num", "must be greater than 0"),
                Some(_) => {}
            }
            match &r.interval {
                None => v.violation_at("interval", MUST_BE_DEFINED),
                Some(i) => match parse_duration(i) {
                    Err(e) => v.violation_at("interval", e.to_string()),
                    Ok(d) if d < std::time::Duration::from_millis(50) => {
                        v.violation_at("interval", "must be greater than or equal to: 50ms")
                    }
                    Ok(_) => {}
                },
            }
        }),
    }
}

fn check_rate_limit_conf(v: &mut Validator, c: &RateLimitConf) {
    let Some(local) = &c.local else {
        v.violation_at("local", MUST_BE_DEFINED);
        return;
    };
    v.field("local", |v| {
        if local.http.is_none() && local.tcp.is_none() {
            v.violation("must have at least one defined: http, tcp");
        }
        if let Some(http) = &local.http {
            v.field("http", |v| {
                check_rate(
                    v,
                    "requestRate",
                    &http.request_rate,
                    http.disabled == Some(true),
                );
                if let Some(o) = &http.on_rate_limit {
                    v.field("onRateLimit", |v| {
                        if let Some(s) = o.status
                            && !(100..=599).contains(&s)
                        {
                            v.violation_at("status", "must be in inclusive range [100, 599]");
                        }
                        if let Some(h) = &o.headers {
                            v.field("headers", |v| {
                                if h.remove.is_some() {
                                    v.violation_at("remove", "must not be defined");
                                }
                                check_header_modifier(v, h);
                            });
                        }
                    });
                }
            });
        }
        if let Some(tcp) = &local.tcp {
            v.field("tcp", |v| {
                check_rate(
                    v,
                    "connectionRate",
                    &tcp.connection_rate,
                    tcp.disabled == Some(true),
                )
            });
        }
    });
}

impl Validate for MeshRateLimitSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(v, &self.target_ref, TOP_PROXY_KINDS, true);
        let gateway = top_kind(&self.target_ref) == K::MeshGateway;
        let sections = (&self.from[..], &self.to[..], &self.rules[..]);
        check_sections(
            v,
            sections,
            gateway,
            (ONLY_MESH, ONLY_MESH),
            check_rate_limit_conf,
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
    fn mesh_rate_limit_docs_examples() {
        ok(
            validate::<MeshRateLimitSpec>,
            json!({"targetRef": {"kind": "MeshSubset", "proxyTypes": ["Sidecar"], "tags": {"k8s.kuma.io/namespace": "mesh-a"}},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"local": {
                "http": {"requestRate": {"num": 1, "interval": "5s"},
                    "onRateLimit": {"status": 423, "headers": {"set": [{"name": "x-kuma-rate-limited", "value": "true"}]}}},
                "tcp": {"connectionRate": {"num": 5, "interval": "10s"}}}}}]}),
        );
        ok(
            validate::<MeshRateLimitSpec>,
            json!({"targetRef": {"kind": "MeshGateway", "name": "edge"},
            "to": [{"targetRef": {"kind": "Mesh"}, "default": {"local": {"http": {"disabled": true}}}}]}),
        );
    }

    #[test]
    fn mesh_rate_limit_rejections() {
        let f = validate::<MeshRateLimitSpec>;
        err(
            f,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {"local": {"tcp": {"connectionRate": {"num": 5, "interval": "10ms"}}}}}]}),
            "spec.from[0].default.local.tcp.connectionRate.interval",
            "50ms",
        );
        err(
            f,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {"local": {"http": {}}}}]}),
            "spec.from[0].default.local.http.requestRate",
            "must be defined",
        );
        err(
            f,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {}}]}),
            "spec.from[0].default.local",
            "must be defined",
        );
        err(
            f,
            json!({"from": [{"targetRef": {"kind": "MeshService", "name": "x"}, "default": {"local": {"http": {"disabled": true}}}}]}),
            "spec.from[0].targetRef.kind",
            "value is not supported",
        );
    }
}
