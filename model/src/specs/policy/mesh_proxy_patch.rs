//! MeshProxyPatch: modifications of the generated Envoy resources (clusters, listeners,
//! filters, virtual hosts) by merge or JSON patch.

use super::common::*;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshProxyPatchSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<ProxyPatchConf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyPatchConf {
    #[serde(default)]
    pub append_modifications: Vec<Modification>,
}

/// One modification: exactly one of the five resource kinds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Modification {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ResourceModification>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<ResourceModification>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_filter: Option<ResourceModification>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_filter: Option<ResourceModification>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_host: Option<ResourceModification>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModificationOperation {
    Add,
    AddFirst,
    AddLast,
    AddBefore,
    AddAfter,
    Remove,
    Patch,
}

/// The Envoy-facing parts (`match`, `value`, `jsonPatches`) stay untyped JSON/YAML.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceModification {
    pub operation: ModificationOperation,
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub match_: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_patches: Option<Vec<JsonPatch>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonPatchOp {
    Add,
    Remove,
    Replace,
    Move,
    Copy,
    Test,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JsonPatch {
    pub op: JsonPatchOp,
    #[serde(default)]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

fn check_modification(v: &mut Validator, kind: &str, m: &ResourceModification) {
    use ModificationOperation as Op;
    let allowed: &[Op] = match kind {
        "networkFilter" | "httpFilter" => &[
            Op::AddFirst,
            Op::AddLast,
            Op::AddBefore,
            Op::AddAfter,
            Op::Remove,
            Op::Patch,
        ],
        _ => &[Op::Add, Op::Remove, Op::Patch],
    };
    if !allowed.contains(&m.operation) {
        v.violation_at("operation", "value is not supported");
        return;
    }
    match m.operation {
        Op::Remove => {
            if m.value.is_some() {
                v.violation_at("value", "must not be defined");
            }
            if m.json_patches.is_some() {
                v.violation_at("jsonPatches", "must not be defined");
            }
        }
        Op::Patch => match (&m.value, &m.json_patches) {
            (None, None) => v.violation("value or jsonPatches has to be defined"),
            (Some(_), Some(_)) => v.violation("only one of value or jsonPatches can be defined"),
            _ => {}
        },
        _ => {
            if m.value.as_deref().is_none_or(str::is_empty) {
                v.violation_at("value", MUST_BE_DEFINED);
            }
            if m.json_patches.is_some() {
                v.violation_at("jsonPatches", "must not be defined");
            }
        }
    }
    if matches!(m.operation, Op::AddBefore | Op::AddAfter)
        && m.match_.as_ref().and_then(|x| x.get("name")).is_none()
    {
        v.field("match", |v| {
            v.violation_at("name", "must be defined for AddBefore and AddAfter")
        });
    }
    for (i, p) in m.json_patches.iter().flatten().enumerate() {
        v.field("jsonPatches", |v| {
            v.index(i, |v| {
                if !p.path.starts_with('/') {
                    v.violation_at("path", "must be a JSON pointer starting with '/'");
                }
                match p.op {
                    JsonPatchOp::Add | JsonPatchOp::Replace | JsonPatchOp::Test
                        if p.value.is_none() =>
                    {
                        v.violation_at("value", MUST_BE_DEFINED)
                    }
                    JsonPatchOp::Move | JsonPatchOp::Copy if p.from.is_none() => {
                        v.violation_at("from", MUST_BE_DEFINED)
                    }
                    _ => {}
                }
            })
        });
    }
}

fn check_proxy_patch_conf(v: &mut Validator, c: &ProxyPatchConf) {
    v.field("appendModifications", |v| {
        if c.append_modifications.is_empty() {
            v.violation("must not be empty");
        }
        for (i, m) in c.append_modifications.iter().enumerate() {
            v.index(i, |v| {
                let kinds = [
                    ("cluster", &m.cluster),
                    ("listener", &m.listener),
                    ("networkFilter", &m.network_filter),
                    ("httpFilter", &m.http_filter),
                    ("virtualHost", &m.virtual_host),
                ];
                let defined: Vec<_> = kinds.iter().filter(|(_, x)| x.is_some()).collect();
                if defined.len() != 1 {
                    v.violation(
                        "exactly one of cluster, listener, networkFilter, httpFilter, virtualHost has to be defined",
                    );
                }
                for (name, m) in kinds {
                    if let Some(m) = m {
                        v.field(name, |v| check_modification(v, name, m));
                    }
                }
            });
        }
    });
}

impl Validate for MeshProxyPatchSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(v, &self.target_ref, TOP_PROXY_KINDS, false);
        check_default(v, &self.default, &mut check_proxy_patch_conf);
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
    fn mesh_proxy_patch_docs_examples() {
        ok(
            validate::<MeshProxyPatchSpec>,
            json!({"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {"appendModifications": [
            {"cluster": {"operation": "Patch", "match": {"name": "demo-app_kuma-demo_svc_5000", "origin": "outbound"},
                "value": "connectTimeout: 10s\n"}},
            {"httpFilter": {"operation": "Patch", "match": {"name": "envoy.filters.http.router", "origin": "inbound"},
                "jsonPatches": [{"op": "add", "path": "/dynamicStats", "value": false}]}},
            {"networkFilter": {"operation": "AddFirst", "match": {"origin": "inbound", "listenerTags": {"kuma.io/service": "backend"}},
                "value": "name: envoy.filters.network.local_ratelimit\n"}},
            {"listener": {"operation": "Remove", "match": {"origin": "inbound"}}},
            {"virtualHost": {"operation": "Add", "value": "name: vh\ndomains: [\"*\"]\n"}}]}}),
        );
    }

    #[test]
    fn mesh_proxy_patch_rejections() {
        let f = validate::<MeshProxyPatchSpec>;
        err(
            f,
            json!({"default": {"appendModifications": []}}),
            "spec.default.appendModifications",
            "must not be empty",
        );
        err(
            f,
            json!({"default": {"appendModifications": [{"cluster": {"operation": "Add"}}]}}),
            "spec.default.appendModifications[0].cluster.value",
            "must be defined",
        );
        err(
            f,
            json!({"default": {"appendModifications": [{"cluster": {"operation": "AddFirst", "value": "x: y"}}]}}),
            "spec.default.appendModifications[0].cluster.operation",
            "value is not supported",
        );
        err(
            f,
            json!({"default": {"appendModifications": [{"cluster": {"operation": "Patch"}}]}}),
            "spec.default.appendModifications[0].cluster",
            "value or jsonPatches has to be defined",
        );
        err(
            f,
            json!({"default": {"appendModifications": [{}]}}),
            "spec.default.appendModifications[0]",
            "exactly one of cluster",
        );
    }
}
