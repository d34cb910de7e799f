//! Which writes a control plane accepts given its place in a federation: global owns what it
//! sends to zones, each zone owns what it sends to global, and copies are read-only.

use model::descriptor::kds::{PROVIDED_BY_GLOBAL, PROVIDED_BY_ZONE};
use model::labels::{ORIGIN, ZONE};
use model::{Resource, ResourceType};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Federation {
    /// Standalone, or a zone not connected to a global.
    #[default]
    None,
    Global,
    /// A zone connected to a global.
    Zone,
}

/// Why this control plane refuses to write (create, update or delete) a resource of `kind`,
/// given the stored copy if there is one.
pub fn write_refusal(
    federation: Federation,
    kind: ResourceType,
    existing: Option<&Resource>,
) -> Option<String> {
    let d = kind.descriptor();
    let origin = existing.and_then(|r| r.label(ORIGIN));
    match federation {
        Federation::None => None,
        Federation::Global => {
            if d.has_flag(PROVIDED_BY_ZONE) && !d.has_flag(PROVIDED_BY_GLOBAL) {
                return Some(format!(
                    "{kind} resources are created on zones and synced to global: change them on the zone"
                ));
            }
            if origin == Some("zone") {
                let zone = existing.and_then(|r| r.label(ZONE)).unwrap_or("?");
                return Some(format!(
                    "this {kind} is synced from zone {zone:?}: change it on that zone"
                ));
            }
            None
        }
        Federation::Zone => {
            if origin.is_some_and(|o| o != "zone") {
                return Some(format!(
                    "this {kind} is synced from global: change it on global"
                ));
            }
            let zone_may_create = d.has_flag(PROVIDED_BY_ZONE)
                || matches!(kind, ResourceType::Secret | ResourceType::GlobalSecret);
            if existing.is_none() && d.has_flag(PROVIDED_BY_GLOBAL) && !zone_may_create {
                return Some(format!(
                    "{kind} resources are created on global and synced to zones: create it on global"
                ));
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with_labels(kind: ResourceType, labels: &[(&str, &str)]) -> Resource {
        let mut r = Resource::new(kind, "default", "x", json!({}));
        for (k, v) in labels {
            r.meta.labels.insert(k.to_string(), v.to_string());
        }
        r
    }

    #[test]
    fn global_refuses_zone_resources() {
        assert!(write_refusal(Federation::Global, ResourceType::Dataplane, None).is_some());
        assert!(write_refusal(Federation::Global, ResourceType::ZoneIngress, None).is_some());
        assert!(write_refusal(Federation::Global, ResourceType::MeshTimeout, None).is_none());
        let copy = with_labels(
            ResourceType::MeshTimeout,
            &[("kuma.io/origin", "zone"), ("kuma.io/zone", "zone-1")],
        );
        assert!(
            write_refusal(Federation::Global, ResourceType::MeshTimeout, Some(&copy))
                .unwrap()
                .contains("zone-1")
        );
        assert!(write_refusal(Federation::Global, ResourceType::Zone, None).is_none());
    }

    #[test]
    fn zone_refuses_global_copies() {
        let copy = with_labels(ResourceType::MeshTimeout, &[("kuma.io/origin", "global")]);
        assert!(
            write_refusal(Federation::Zone, ResourceType::MeshTimeout, Some(&copy))
                .unwrap()
                .contains("global")
        );
        assert!(write_refusal(Federation::Zone, ResourceType::MeshTimeout, None).is_none());
        assert!(write_refusal(Federation::Zone, ResourceType::Mesh, None).is_some());
        assert!(write_refusal(Federation::Zone, ResourceType::Secret, None).is_none());
        assert!(write_refusal(Federation::Zone, ResourceType::Dataplane, None).is_none());
        assert!(write_refusal(Federation::None, ResourceType::Mesh, Some(&copy)).is_none());
    }
}
