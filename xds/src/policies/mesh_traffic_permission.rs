//! MeshTrafficPermission as Envoy RBAC, first on every mTLS inbound: the HTTP RBAC filter in
//! an HTTP inbound's connection manager (per-request decisions and stats, as Kuma does),
//! the network RBAC filter otherwise. Clients are told apart by the URI SANs of their verified
//! certificates (`spiffe://<mesh>/<service>`, `kuma://<tag>/<value>`).
//!
//! - The 2.x form, `spec.rules[].default.{allow, deny, allowWithShadowDeny}` (lists of
//!   `spiffeID` matches, Exact or Prefix), merged over the inbound's policies: a client is
//!   allowed when an `allow` or `allowWithShadowDeny` match takes it and no `deny` match does
//!   (deny wins, as Kuma emits deny matchers first); `allowWithShadowDeny` is counted as a
//!   denial in the shadow stats. When any policy selecting the inbound has `rules`, only
//!   `rules` count for it, as in Kuma.
//! - The legacy form, `from[]`: the most specific entry that matches a client decides:
//!   `MeshServiceSubset` > `MeshService` > `MeshSubset` > `Mesh`; for the same clients, a
//!   later policy in Kuma's order ([`crate::rules::order`]) overrides an earlier one.
//!
//! With mTLS on and no permission selecting the inbound, nothing is allowed.

use std::collections::BTreeMap;

use model::ResourceType;
use model::labels::SERVICE_TAG;
use model::specs::policy::{MtpAction, MtpRuleConf};
use model::specs::targetref::{TargetRef, TargetRefKind};
use serde_json::{Map, Value, json};

use crate::context::{DataplaneEntry, MeshContext};
use crate::envoy::names::{spiffe_id, stat_name};
use crate::resources::{Origin, ResourceSet};
use crate::rules::build::{catch_all, inbound_rules};
use crate::rules::matching::{Matched, matched_in};

pub struct Plugin;

impl super::PolicyPlugin for Plugin {
    fn kind(&self) -> ResourceType {
        ResourceType::MeshTrafficPermission
    }

    /// Without mTLS there is no client identity to authorize, so nothing is enforced.
    fn apply(&self, rs: &mut ResourceSet, mesh: &MeshContext, proxy: &DataplaneEntry) {
        if !mesh.mtls {
            return;
        }
        let matching = matched_in(mesh, self.kind(), proxy);
        let mut rs_warnings = Vec::new();
        for (origin, mut listener) in rs.listeners_mut() {
            let Origin::Inbound(i) = origin else { continue };
            if proxy.spec.networking.inbound.get(i).is_none() {
                continue;
            }
            let rules = inbound_rules(&matching.matched, i, false);
            let config = if rules.is_empty() {
                let entries = merged_entries(&matching.matched, i);
                legacy_config(&mesh.mesh, &entries)
            } else {
                let conf = catch_all(&rules)
                    .and_then(|r| serde_json::from_value::<MtpRuleConf>(r.conf).ok())
                    .unwrap_or_default();
                if rules.iter().any(|r| r.matches.is_some()) {
                    rs_warnings.push(format!(
                        "MeshTrafficPermission rules with matches on inbound {i} not applied: \
                         MeshTrafficPermission rules take no matches"
                    ));
                }
                rules_config(&conf, &mut rs_warnings, i)
            };
            if listener.is_http() {
                listener.prepend_http_authorization(http_filter(config));
            } else {
                let filter = network_filter(config, listener.name());
                listener.prepend_authorization(filter);
            }
        }
        rs.warnings.extend(rs_warnings);
    }
}

/// A client selector from `from[].targetRef`, ordered by how specific it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Clients {
    rank: u8,
    service: Option<String>,
    tags: BTreeMap<String, String>,
}

impl Clients {
    fn from_target_ref(r: &TargetRef) -> Option<Clients> {
        let name = || Some(r.name_str().to_string()).filter(|n| !n.is_empty());
        let (rank, service, tags) = match r.kind {
            TargetRefKind::Mesh => (0, None, BTreeMap::new()),
            TargetRefKind::MeshSubset => (1, None, r.tags.clone()),
            TargetRefKind::MeshService => (2, Some(name()?), BTreeMap::new()),
            TargetRefKind::MeshServiceSubset => (3, Some(name()?), r.tags.clone()),
            _ => return None,
        };
        Some(Clients {
            rank,
            service,
            tags,
        })
    }

    fn label(&self) -> String {
        let mut parts: Vec<String> = self.service.iter().cloned().collect();
        parts.extend(self.tags.iter().map(|(k, v)| format!("{k}={v}")));
        match (self.rank, parts.is_empty()) {
            (0, _) | (_, true) => "Mesh".to_string(),
            (1, _) => format!("MeshSubset[{}]", parts.join(",")),
            (2, _) => format!("MeshService[{}]", parts.join(",")),
            _ => format!("MeshServiceSubset[{}]", parts.join(",")),
        }
    }

    fn principal(&self, mesh: &str) -> Value {
        let uri = |m: Value| json!({"authenticated": {"principal_name": m}});
        let mut ids = Vec::new();
        if let Some(s) = &self.service {
            ids.push(uri(json!({"exact": spiffe_id(mesh, s)})));
        }
        for (k, v) in &self.tags {
            ids.push(if k == SERVICE_TAG {
                uri(json!({"exact": spiffe_id(mesh, v)}))
            } else {
                uri(json!({"exact": format!("kuma://{k}/{v}")}))
            });
        }
        match ids.len() {
            0 => uri(json!({"prefix": format!("spiffe://{mesh}/")})),
            1 => ids.remove(0),
            _ => json!({"and_ids": {"ids": ids}}),
        }
    }
}

/// The merged `from` entries of the policies selecting inbound `inbound`, most specific
/// first; for the same clients the later policy (in Kuma's order) wins.
fn merged_entries(matched: &[Matched<'_>], inbound: usize) -> Vec<(Clients, MtpAction)> {
    let mut merged: BTreeMap<Clients, MtpAction> = BTreeMap::new();
    for m in matched.iter().filter(|m| m.inbounds.contains(&inbound)) {
        let from = m.policy.spec.get("from").and_then(Value::as_array);
        for entry in from.into_iter().flatten() {
            let target = entry
                .get("targetRef")
                .and_then(|t| serde_json::from_value::<TargetRef>(t.clone()).ok());
            let action = entry
                .get("default")
                .and_then(|d| d.get("action"))
                .and_then(|a| serde_json::from_value::<MtpAction>(a.clone()).ok());
            let (Some(clients), Some(action)) =
                (target.as_ref().and_then(Clients::from_target_ref), action)
            else {
                continue;
            };
            merged.insert(clients, action);
        }
    }
    let mut entries: Vec<_> = merged.into_iter().collect();
    entries.sort_by(|a, b| b.0.cmp(&a.0));
    entries
}

/// RBAC rules allowing every client whose most specific entry `allows`.
fn rules(
    mesh: &str,
    entries: &[(Clients, MtpAction)],
    allows: impl Fn(MtpAction) -> bool,
) -> Value {
    let mut policies = serde_json::Map::new();
    for (i, (clients, action)) in entries.iter().enumerate() {
        if !allows(*action) {
            continue;
        }
        // More specific entries come first; those that deny carve their clients out of this one.
        let carve_outs: Vec<Value> = entries[..i]
            .iter()
            .filter(|(c, a)| c.rank > clients.rank && !allows(*a))
            .map(|(c, _)| c.principal(mesh))
            .collect();
        let principal = if carve_outs.is_empty() {
            clients.principal(mesh)
        } else {
            json!({"and_ids": {"ids": [
                clients.principal(mesh),
                {"not_id": {"or_ids": {"ids": carve_outs}}}
            ]}})
        };
        policies.insert(
            format!("MeshTrafficPermission {}", clients.label()),
            json!({"permissions": [{"any": true}], "principals": [principal]}),
        );
    }
    json!({"action": "ALLOW", "policies": policies})
}

/// The RBAC rules (and shadow rules) of the legacy `from` form for one inbound.
fn legacy_config(mesh: &str, entries: &[(Clients, MtpAction)]) -> Map<String, Value> {
    let enforced = |a: MtpAction| matches!(a, MtpAction::Allow | MtpAction::AllowWithShadowDeny);
    let mut config = Map::new();
    config.insert("rules".into(), rules(mesh, entries, enforced));
    let shadowed = entries.iter().any(|(_, a)| {
        matches!(
            a,
            MtpAction::AllowWithShadowDeny | MtpAction::DenyWithShadowAllow
        )
    });
    if shadowed {
        // What would happen with the shadow actions applied: counted in `shadow_` stats only.
        let shadow = |a: MtpAction| matches!(a, MtpAction::Allow | MtpAction::DenyWithShadowAllow);
        config.insert("shadow_rules".into(), rules(mesh, entries, shadow));
        config.insert("shadow_rules_stat_prefix".into(), json!("shadow_"));
    }
    config
}

/// A `spiffeID` match as an RBAC principal; `None` (with a warning) for what is not one.
fn spiffe_principal(m: &Value, warnings: &mut Vec<String>, inbound: usize) -> Option<Value> {
    let id = m.get("spiffeID");
    let value = id.and_then(|i| i.get("value")).and_then(Value::as_str);
    let kind = id
        .and_then(|i| i.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("Exact");
    let matcher = match (kind, value) {
        ("Exact", Some(v)) => json!({"exact": v}),
        ("Prefix", Some(v)) => json!({"prefix": v}),
        _ => {
            warnings.push(format!(
                "MeshTrafficPermission match {m} on inbound {inbound} not applied: only spiffeID matches (Exact or Prefix) are supported"
            ));
            return None;
        }
    };
    Some(json!({"authenticated": {"principal_name": matcher}}))
}

/// One ALLOW policy: a client any of `allow` takes and none of `deny` does.
fn allow_unless_denied(allow: &[Value], deny: &[Value]) -> Value {
    let mut policies = Map::new();
    if !allow.is_empty() {
        let allowed = json!({"or_ids": {"ids": allow}});
        let principal = if deny.is_empty() {
            allowed
        } else {
            json!({"and_ids": {"ids": [allowed, {"not_id": {"or_ids": {"ids": deny}}}]}})
        };
        policies.insert(
            "MeshTrafficPermission rules".into(),
            json!({"permissions": [{"any": true}], "principals": [principal]}),
        );
    }
    json!({"action": "ALLOW", "policies": policies})
}

/// The RBAC rules of the 2.x `rules` form: deny wins over allow; `allowWithShadowDeny`
/// allows, and counts as denied in the shadow stats.
fn rules_config(
    conf: &MtpRuleConf,
    warnings: &mut Vec<String>,
    inbound: usize,
) -> Map<String, Value> {
    let mut principals = |list: &Option<Vec<Value>>| -> Vec<Value> {
        list.iter()
            .flatten()
            .filter_map(|m| spiffe_principal(m, warnings, inbound))
            .collect()
    };
    let allow = principals(&conf.allow);
    let deny = principals(&conf.deny);
    let shadow_deny = principals(&conf.allow_with_shadow_deny);
    let mut enforced_allow = allow.clone();
    enforced_allow.extend(shadow_deny.iter().cloned());
    let mut config = Map::new();
    config.insert("rules".into(), allow_unless_denied(&enforced_allow, &deny));
    if !shadow_deny.is_empty() {
        let mut shadow_denied = deny;
        shadow_denied.extend(shadow_deny);
        config.insert(
            "shadow_rules".into(),
            allow_unless_denied(&allow, &shadow_denied),
        );
        config.insert("shadow_rules_stat_prefix".into(), json!("shadow_"));
    }
    config
}

/// The network RBAC filter for one mTLS TCP inbound.
fn network_filter(config: Map<String, Value>, listener: &str) -> Value {
    let mut typed = Map::new();
    typed.insert(
        "@type".into(),
        json!("type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"),
    );
    typed.insert(
        "stat_prefix".into(),
        json!(format!("{}.", stat_name(listener))),
    );
    typed.extend(config);
    json!({"name": "envoy.filters.network.rbac", "typed_config": typed})
}

/// The HTTP RBAC filter for one mTLS HTTP inbound (denied requests get 403).
fn http_filter(config: Map<String, Value>) -> Value {
    let mut typed = Map::new();
    typed.insert(
        "@type".into(),
        json!("type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"),
    );
    typed.extend(config);
    json!({"name": "envoy.filters.http.rbac", "typed_config": typed})
}
