//! MeshTrafficPermission as Envoy's network RBAC filter, first on every mTLS inbound. Clients
//! are told apart by the URI SANs of their verified certificates (`spiffe://<mesh>/<service>`,
//! `kuma://<tag>/<value>`). As in Kuma, the most specific `from` entry that matches a client
//! decides: `MeshServiceSubset` > `MeshService` > `MeshSubset` > `Mesh`; for the same clients,
//! a later policy in Kuma's order ([`crate::rules::order`]) overrides an earlier one. With mTLS
//! on and no permission selecting the inbound, nothing is allowed.

use std::collections::BTreeMap;

use model::ResourceType;
use model::labels::SERVICE_TAG;
use model::specs::policy::MtpAction;
use model::specs::targetref::{TargetRef, TargetRefKind};
use serde_json::{Value, json};

use crate::context::{DataplaneEntry, MeshContext};
use crate::envoy::names::{spiffe_id, stat_name};
use crate::resources::{Origin, ResourceSet};
use crate::rules::matching::{Matched, matched_policies};

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
        let matching = matched_policies(mesh.policies.raw(self.kind()), proxy);
        for (origin, mut listener) in rs.listeners_mut() {
            let Origin::Inbound(i) = origin else { continue };
            if proxy.spec.networking.inbound.get(i).is_none() {
                continue;
            }
            let entries = merged_entries(&matching.matched, i);
            let filter = inbound_filter(&mesh.mesh, &entries, listener.name());
            listener.prepend_authorization(filter);
        }
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

/// The RBAC filter for one mTLS inbound.
fn inbound_filter(mesh: &str, entries: &[(Clients, MtpAction)], listener: &str) -> Value {
    let enforced = |a: MtpAction| matches!(a, MtpAction::Allow | MtpAction::AllowWithShadowDeny);
    let mut config = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
        "stat_prefix": format!("{}.", stat_name(listener)),
        "rules": rules(mesh, entries, enforced),
    });
    let shadowed = entries.iter().any(|(_, a)| {
        matches!(
            a,
            MtpAction::AllowWithShadowDeny | MtpAction::DenyWithShadowAllow
        )
    });
    if shadowed {
        // What would happen with the shadow actions applied: counted in `shadow_` stats only.
        let shadow = |a: MtpAction| matches!(a, MtpAction::Allow | MtpAction::DenyWithShadowAllow);
        config["shadow_rules"] = rules(mesh, entries, shadow);
        config["shadow_rules_stat_prefix"] = json!("shadow_");
    }
    json!({"name": "envoy.filters.network.rbac", "typed_config": config})
}
