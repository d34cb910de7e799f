//! Kuma's order of policies: ascending specificity, so merging left to right lets the most
//! specific win. Keys: the top-level `targetRef` kind, between two `Dataplane` refs name over
//! labels and then a sectionName, the origin (global < unknown < zone), the policy role
//! (system < producer < consumer < workload-owner), then the display name *descending*
//! (`aaa` sorts after `bbb` and wins). Display names, not stored names, so a copy synced under
//! a hashed name keeps its place.

use std::cmp::Ordering;

use model::labels::{DISPLAY_NAME, ORIGIN};
use model::specs::targetref::{TargetRef, TargetRefKind};

use crate::context::RawPolicy;

/// `kuma.io/policy-role`.
pub const POLICY_ROLE: &str = "kuma.io/policy-role";

/// How specific a top-level kind is; unknown kinds sort first.
pub fn kind_rank(kind: &TargetRefKind) -> u8 {
    match kind {
        TargetRefKind::Mesh => 1,
        TargetRefKind::Dataplane => 2,
        TargetRefKind::MeshSubset => 3,
        TargetRefKind::MeshGateway => 4,
        TargetRefKind::MeshService => 5,
        TargetRefKind::MeshExternalService => 6,
        TargetRefKind::MeshMultiZoneService => 7,
        TargetRefKind::MeshServiceSubset => 8,
        TargetRefKind::MeshHTTPRoute => 9,
        TargetRefKind::Unknown(_) => 0,
    }
}

/// Between two `Dataplane` refs: by name over by labels, then with a sectionName over without.
fn compare_dataplane_refs(a: &TargetRef, b: &TargetRef) -> Ordering {
    if a.kind != TargetRefKind::Dataplane || b.kind != TargetRefKind::Dataplane {
        return Ordering::Equal;
    }
    let named = |t: &TargetRef| !t.name_str().is_empty();
    let labelled = |t: &TargetRef| !t.labels.is_empty();
    if named(a) && labelled(b) {
        return Ordering::Greater;
    }
    if labelled(a) && named(b) {
        return Ordering::Less;
    }
    let section = |t: &TargetRef| t.section_name.as_deref().is_some_and(|s| !s.is_empty());
    section(a).cmp(&section(b))
}

fn origin_rank(p: &RawPolicy) -> u8 {
    match p.labels.get(ORIGIN).map(String::as_str) {
        Some("global") => 1,
        None | Some("") => 2,
        Some("zone") => 3,
        Some(_) => 0,
    }
}

fn role_rank(p: &RawPolicy) -> u8 {
    match p.labels.get(POLICY_ROLE).map(String::as_str) {
        None | Some("") | Some("system") => 1,
        Some("producer") => 2,
        Some("consumer") => 3,
        Some("workload-owner") => 4,
        Some(_) => 0,
    }
}

pub fn display_name(p: &RawPolicy) -> &str {
    p.labels
        .get(DISPLAY_NAME)
        .map(String::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or(&p.name)
}

/// Kuma's `CompareByPolicyAttributes`: kind, Dataplane refs, origin, role.
pub fn compare_attributes(
    (a, a_top): (&RawPolicy, &TargetRef),
    (b, b_top): (&RawPolicy, &TargetRef),
) -> Ordering {
    kind_rank(&a_top.kind)
        .cmp(&kind_rank(&b_top.kind))
        .then_with(|| compare_dataplane_refs(a_top, b_top))
        .then_with(|| origin_rank(a).cmp(&origin_rank(b)))
        .then_with(|| role_rank(a).cmp(&role_rank(b)))
}

/// Kuma's tie break: display names descending.
pub fn compare_display_names(a: &RawPolicy, b: &RawPolicy) -> Ordering {
    display_name(b).cmp(display_name(a))
}

/// The whole policy order. Kuma's sort is unstable; ours is stable, so policies with equal
/// display names (the same name in two namespaces) keep the store's name order.
pub fn compare(a: (&RawPolicy, &TargetRef), b: (&RawPolicy, &TargetRef)) -> Ordering {
    compare_attributes(a, b)
        .then_with(|| {
            if a.1.kind == TargetRefKind::MeshGateway {
                a.1.tags.len().cmp(&b.1.tags.len())
            } else {
                Ordering::Equal
            }
        })
        .then_with(|| compare_display_names(a.0, b.0))
}
