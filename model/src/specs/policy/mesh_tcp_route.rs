//! MeshTCPRoute: weighted backends of a TCP outbound or gateway listener.

use super::common::*;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTcpRouteSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<TcpRouteTo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRouteTo {
    #[serde(default = "TargetRef::missing")]
    pub target_ref: TargetRef,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<TcpRouteRule>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRouteRule {
    #[serde(default)]
    pub default: TcpRouteConf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRouteConf {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<BackendRef>,
}

impl Validate for MeshTcpRouteSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(v, &self.target_ref, TOP_PROXY_KINDS, false);
        let top = top_kind(&self.target_ref);
        let to_kinds = if top == K::MeshGateway {
            ONLY_MESH
        } else {
            ROUTE_DESTINATIONS
        };
        v.field("to", |v| {
            for (i, to) in self.to.iter().enumerate() {
                v.index(i, |v| {
                    check_ref(v, &to.target_ref, to_kinds);
                    v.field("rules", |v| {
                        if to.rules.is_empty() {
                            v.violation("must not be empty");
                        }
                        for (j, rule) in to.rules.iter().enumerate() {
                            v.index(j, |v| {
                                v.field("default", |v| {
                                    v.field("backendRefs", |v| {
                                        if rule.default.backend_refs.is_empty() {
                                            v.violation("must not be empty");
                                        }
                                        check_backend_refs(v, &rule.default.backend_refs);
                                    })
                                })
                            });
                        }
                    });
                });
            }
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
    fn mesh_tcp_route_docs_examples() {
        ok(
            validate::<MeshTcpRouteSpec>,
            json!({"targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                "rules": [{"default": {"backendRefs": [
                    {"kind": "MeshService", "name": "backend-v1", "port": 3001, "weight": 90},
                    {"kind": "MeshService", "name": "backend-v2", "port": 3001, "weight": 10}]}}]}]}),
        );
        ok(
            validate::<MeshTcpRouteSpec>,
            json!({"targetRef": {"kind": "MeshGateway", "name": "edge"},
            "to": [{"targetRef": {"kind": "Mesh"}, "rules": [{"default": {"backendRefs": [{"kind": "MeshService", "name": "redis"}]}}]}]}),
        );
    }

    #[test]
    fn mesh_tcp_route_rejections() {
        err(
            validate::<MeshTcpRouteSpec>,
            json!({"to": [{"targetRef": {"kind": "MeshService", "name": "b"}, "rules": [{"default": {}}]}]}),
            "spec.to[0].rules[0].default.backendRefs",
            "must not be empty",
        );
        err(
            validate::<MeshTcpRouteSpec>,
            json!({"to": [{"targetRef": {"kind": "MeshService", "name": "b"},
            "rules": [{"default": {"backendRefs": [{"kind": "MeshService", "name": "x", "port": 70000}]}}]}]}),
            "spec.to[0].rules[0].default.backendRefs[0].port",
            "port must be in the range [1, 65535]",
        );
        err(
            validate::<MeshTcpRouteSpec>,
            json!({"to": [{"targetRef": {"kind": "MeshService", "name": "b"}}]}),
            "spec.to[0].rules",
            "must not be empty",
        );
    }
}
