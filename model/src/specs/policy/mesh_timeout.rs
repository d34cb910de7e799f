//! MeshTimeout: connection, idle and HTTP request/stream timeouts, inbound (`from`/`rules`) and
//! outbound (`to`).

use super::common::*;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTimeoutSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<FromItem<TimeoutConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<ToItem<TimeoutConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleItem<TimeoutConf>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeoutConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<TimeoutHttp>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeoutHttp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_idle_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stream_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers_timeout: Option<String>,
}

fn check_timeout_conf(v: &mut Validator, conf: &TimeoutConf, top: &K) {
    if conf.connection_timeout.is_none() && conf.idle_timeout.is_none() && conf.http.is_none() {
        v.violation("at least one timeout should be configured");
        return;
    }
    if *top == K::MeshHTTPRoute {
        let msg = "can't be specified when top-level TargetRef is referencing MeshHTTPRoute";
        if conf.connection_timeout.is_some() {
            v.violation_at("connectionTimeout", msg);
        }
        if conf.idle_timeout.is_some() {
            v.violation_at("idleTimeout", msg);
        }
        if let Some(http) = &conf.http {
            v.field("http", |v| {
                if http.max_stream_duration.is_some() {
                    v.violation_at("maxStreamDuration", msg);
                }
                if http.max_connection_duration.is_some() {
                    v.violation_at("maxConnectionDuration", msg);
                }
            });
        }
    }
    duration_positive(v, "connectionTimeout", &conf.connection_timeout);
    duration(v, "idleTimeout", &conf.idle_timeout);
    if let Some(http) = &conf.http {
        v.field("http", |v| {
            if http.request_timeout.is_none()
                && http.stream_idle_timeout.is_none()
                && http.max_stream_duration.is_none()
                && http.max_connection_duration.is_none()
                && http.request_headers_timeout.is_none()
            {
                v.violation("at least one timeout in this section should be configured");
            }
            duration(v, "requestTimeout", &http.request_timeout);
            duration(v, "streamIdleTimeout", &http.stream_idle_timeout);
            duration(v, "maxStreamDuration", &http.max_stream_duration);
            duration(v, "maxConnectionDuration", &http.max_connection_duration);
            duration(v, "requestHeadersTimeout", &http.request_headers_timeout);
        });
    }
}

impl Validate for MeshTimeoutSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(
            v,
            &self.target_ref,
            &[
                K::Mesh,
                K::MeshSubset,
                K::MeshGateway,
                K::MeshService,
                K::MeshServiceSubset,
                K::MeshHTTPRoute,
                K::Dataplane,
            ],
            true,
        );
        let top = top_kind(&self.target_ref);
        let restricted = is_gateway_or_route(&top);
        let to_kinds = if restricted {
            &[K::Mesh, K::MeshExternalService][..]
        } else {
            TO_DESTINATIONS_AND_ROUTES
        };
        let sections = (&self.from[..], &self.to[..], &self.rules[..]);
        check_sections(v, sections, restricted, (ONLY_MESH, to_kinds), |v, c| {
            check_timeout_conf(v, c, &top)
        });
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
    fn mesh_timeout_docs_examples() {
        ok(
            validate::<MeshTimeoutSpec>,
            json!({"to": [{"targetRef": {"kind": "Mesh"},
            "default": {"idleTimeout": "20s", "connectionTimeout": "2s", "http": {"requestTimeout": "2s"}}}]}),
        );
        ok(
            validate::<MeshTimeoutSpec>,
            json!({"targetRef": {"kind": "MeshSubset", "tags": {"app": "frontend"}},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "60s", "connectionTimeout": "2s",
                "http": {"requestTimeout": "10s", "streamIdleTimeout": "1h", "maxStreamDuration": "30m", "maxConnectionDuration": "30m"}}}],
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend", "namespace": "kuma-demo", "sectionName": "http"},
                "default": {"idleTimeout": "60s", "connectionTimeout": "1s", "http": {"requestTimeout": "5s"}}}]}),
        );
        ok(
            validate::<MeshTimeoutSpec>,
            json!({"targetRef": {"kind": "Dataplane", "labels": {"app": "demo-app"}, "sectionName": "http"},
            "rules": [{"default": {"idleTimeout": "1h", "connectionTimeout": "10s"}}]}),
        );
        ok(
            validate::<MeshTimeoutSpec>,
            json!({"targetRef": {"kind": "MeshHTTPRoute", "name": "route-to-backend-v2"},
            "to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"requestTimeout": "5s", "streamIdleTimeout": "1h"}}}]}),
        );
        ok(
            validate::<MeshTimeoutSpec>,
            json!({"targetRef": {"kind": "Mesh", "proxyTypes": ["Gateway"]},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "5m",
                "http": {"streamIdleTimeout": "5s", "requestHeadersTimeout": "500ms"}}}],
            "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "1h", "http": {"streamIdleTimeout": "5s"}}}]}),
        );
    }

    #[test]
    fn mesh_timeout_rejections() {
        err(
            validate::<MeshTimeoutSpec>,
            json!({"targetRef": {"kind": "Mesh"}}),
            "spec",
            "at least one of 'from', 'to' has to be defined",
        );
        err(
            validate::<MeshTimeoutSpec>,
            json!({"to": [{"targetRef": {"kind": "MeshGateway", "name": "gw"}, "default": {"idleTimeout": "1s"}}]}),
            "spec.to[0].targetRef.kind",
            "value is not supported",
        );
        err(
            validate::<MeshTimeoutSpec>,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {}}]}),
            "spec.to[0].default",
            "at least one timeout should be configured",
        );
        err(
            validate::<MeshTimeoutSpec>,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {}}}]}),
            "spec.to[0].default.http",
            "at least one timeout in this section should be configured",
        );
        err(
            validate::<MeshTimeoutSpec>,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"connectionTimeout": "0s"}}]}),
            "spec.to[0].default.connectionTimeout",
            "greater than zero",
        );
        err(
            validate::<MeshTimeoutSpec>,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "soon"}}]}),
            "spec.to[0].default.idleTimeout",
            "invalid duration",
        );
        err(
            validate::<MeshTimeoutSpec>,
            json!({"targetRef": {"kind": "MeshHTTPRoute", "name": "r"},
            "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "1s"}}]}),
            "spec.to[0].default.idleTimeout",
            "can't be specified when top-level TargetRef is referencing MeshHTTPRoute",
        );
        err(
            validate::<MeshTimeoutSpec>,
            json!({"targetRef": {"kind": "MeshGateway", "name": "gw"},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "1s"}}]}),
            "spec.from",
            "must not be defined",
        );
        err(
            validate::<MeshTimeoutSpec>,
            json!({"from": [{"targetRef": {"kind": "MeshSubset", "tags": {"a": "b"}}, "default": {"idleTimeout": "1s"}}]}),
            "spec.from[0].targetRef.kind",
            "value is not supported",
        );
    }
}
