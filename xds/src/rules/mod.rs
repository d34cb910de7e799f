//! Which policies select a proxy, and how the confs of several matching policies merge.
//!
//! The ranking here is what the two translated policies have used so far (MeshTrafficPermission
//! and MeshLoadBalancingStrategy); Kuma's full rule engine (its targetRef order, origins, policy
//! roles and display-name tie-breaks) replaces it with the policies issue.

use std::collections::BTreeMap;

use model::specs::dataplane::Inbound;
use model::specs::targetref::{TargetRef, TargetRefKind, matches_dataplane};
use serde_json::Value;

use crate::context::DataplaneEntry;

/// How specific a top-level `targetRef` is: a more specific one overrides a broader one.
pub fn top_rank(kind: &TargetRefKind) -> u8 {
    match kind {
        TargetRefKind::Mesh => 0,
        TargetRefKind::MeshSubset => 1,
        TargetRefKind::MeshService => 2,
        TargetRefKind::MeshServiceSubset => 3,
        TargetRefKind::Dataplane => 4,
        _ => 5,
    }
}

/// An omitted top-level `targetRef` means the whole mesh.
pub fn top_target(target: &Option<TargetRef>) -> TargetRef {
    target.clone().unwrap_or_else(TargetRef::mesh)
}

/// Whether a top-level `targetRef` selects one of the proxy's inbounds.
pub fn selects_inbound(target: &TargetRef, proxy: &DataplaneEntry, inbound: &Inbound) -> bool {
    matches_dataplane(target, &inbound.tags, &proxy.name, &proxy.labels)
}

/// Whether a top-level `targetRef` selects the proxy: by service kinds if any of its inbounds
/// is selected, by the others on the union of its inbounds' tags.
pub fn selects_proxy(target: &TargetRef, proxy: &DataplaneEntry) -> bool {
    match target.kind {
        TargetRefKind::MeshService | TargetRefKind::MeshServiceSubset => proxy
            .spec
            .networking
            .inbound
            .iter()
            .any(|i| selects_inbound(target, proxy, i)),
        _ => {
            let tags: BTreeMap<String, String> = proxy
                .spec
                .networking
                .inbound
                .iter()
                .flat_map(|i| i.tags.clone())
                .collect();
            matches_dataplane(target, &tags, &proxy.name, &proxy.labels)
        }
    }
}

/// How specifically a `to[].targetRef` names destination `service`; `None` when it does not
/// name it at all (`Mesh` names every destination).
pub fn to_rank(target: &TargetRef, service: &str) -> Option<u8> {
    match target.kind {
        TargetRefKind::Mesh => Some(0),
        TargetRefKind::MeshService | TargetRefKind::MeshMultiZoneService
            if target.name_str() == service =>
        {
            Some(1)
        }
        TargetRefKind::MeshService | TargetRefKind::MeshMultiZoneService
            if target.name.is_none()
                && target
                    .labels
                    .get(model::labels::DISPLAY_NAME)
                    .is_some_and(|n| n == service) =>
        {
            Some(1)
        }
        _ => None,
    }
}

/// Kuma's merge of policy confs: objects field by field, anything else (lists included)
/// replaced by the later value.
pub fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_replaces_lists_and_merges_objects() {
        let mut a = json!({"x": {"a": 1, "b": [1, 2]}, "y": 1});
        merge(&mut a, json!({"x": {"b": [3], "c": 2}}));
        assert_eq!(a, json!({"x": {"a": 1, "b": [3], "c": 2}, "y": 1}));
    }
}
