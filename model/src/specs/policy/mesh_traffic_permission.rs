//! MeshTrafficPermission: which clients may reach the selected proxies' inbounds (`from`,
//! and the 2.10+ `rules` with SPIFFE id matches).

use super::common::*;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTrafficPermissionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<FromItem<MtpConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleItem<MtpRuleConf>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MtpAction {
    Allow,
    Deny,
    AllowWithShadowDeny,
    DenyWithShadowAllow,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MtpConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<MtpAction>,
}

/// `rules[].default` (2.11+): lists of identity matches to allow or deny.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MtpRuleConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_with_shadow_deny: Option<Vec<Value>>,
}

impl Validate for MeshTrafficPermissionSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(
            v,
            &self.target_ref,
            &[
                K::Mesh,
                K::MeshSubset,
                K::MeshService,
                K::MeshServiceSubset,
                K::Dataplane,
            ],
            true,
        );
        if self.from.is_empty() && self.rules.is_empty() {
            v.violation_at("from", "needs at least one item");
        }
        check_from(v, &self.from, FROM_CLIENTS, |v, conf| {
            if conf.action.is_none() {
                v.violation_at("action", MUST_BE_DEFINED);
            }
        });
        check_rules(v, &self.rules, |v, conf| {
            if conf.allow.is_none() && conf.deny.is_none() && conf.allow_with_shadow_deny.is_none()
            {
                v.violation("must have at least one defined: allow, deny, allowWithShadowDeny");
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
    fn mtp_docs_examples() {
        ok(
            validate::<MeshTrafficPermissionSpec>,
            json!({
            "targetRef": {"kind": "MeshSubset", "tags": {"app": "backend"}},
            "from": [{"targetRef": {"kind": "MeshSubset", "tags": {"kuma.io/service": "frontend"}},
                      "default": {"action": "Allow"}}]}),
        );
        ok(
            validate::<MeshTrafficPermissionSpec>,
            json!({
            "targetRef": {"kind": "Dataplane", "labels": {"app": "backend"}},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Deny"}},
                     {"targetRef": {"kind": "MeshService", "name": "frontend"}, "default": {"action": "AllowWithShadowDeny"}}]}),
        );
        ok(
            validate::<MeshTrafficPermissionSpec>,
            json!({
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}),
        );
        ok(
            validate::<MeshTrafficPermissionSpec>,
            json!({
            "rules": [{"default": {"allow": [{"spiffeID": {"type": "Prefix", "value": "spiffe://trust-domain.mesh/"}}]}}]}),
        );
    }

    #[test]
    fn mtp_rejections() {
        err(
            validate::<MeshTrafficPermissionSpec>,
            json!({"targetRef": {"kind": "Mesh"}}),
            "spec.from",
            "needs at least one item",
        );
        err(
            validate::<MeshTrafficPermissionSpec>,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {}}]}),
            "spec.from[0].default.action",
            "must be defined",
        );
        err(
            validate::<MeshTrafficPermissionSpec>,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Maybe"}}]}),
            "spec.from[0].default.action",
            "unknown variant",
        );
        err(
            validate::<MeshTrafficPermissionSpec>,
            json!({"targetRef": {"kind": "MeshGateway", "name": "gw"},
                   "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}),
            "spec.targetRef.kind",
            "value is not supported",
        );
        err(
            validate::<MeshTrafficPermissionSpec>,
            json!({"from": [{"targetRef": {"kind": "MeshExternalService", "name": "x"}, "default": {"action": "Allow"}}]}),
            "spec.from[0].targetRef.kind",
            "value is not supported",
        );
        err(
            validate::<MeshTrafficPermissionSpec>,
            json!({"from": [{"default": {"action": "Allow"}}]}),
            "spec.from[0].targetRef.kind",
            "must be defined",
        );
        err(
            validate::<MeshTrafficPermissionSpec>,
            json!({"form": []}),
            "spec.form",
            "unknown field `form`",
        );
    }
}
