//! Direction, scope and naming: which resource goes which way, and what it is called and
//! labelled on arrival. Pure functions, so both the global and the zone side (and tests) agree.

use model::descriptor::kds::{
    CONSUMED_BY_GLOBAL, CONSUMED_BY_ZONE, PROVIDED_BY_GLOBAL, PROVIDED_BY_ZONE, SYNCED_ACROSS_ZONES,
};
use model::labels::{DISPLAY_NAME, KDS_SYNC, ORIGIN, ZONE};
use model::name::hashed_name;
use model::{Resource, ResourceType};

pub const ORIGIN_GLOBAL: &str = "global";
pub const ORIGIN_ZONE: &str = "zone";
/// Kubernetes namespace label: part of the hash when present, as in Kuma.
pub const NAMESPACE_LABEL: &str = "k8s.kuma.io/namespace";

/// GlobalSecrets that may leave global. Everything else (user-token signing keys, the admin
/// token, the inter-CP CA) stays there.
const GLOBAL_SECRET_PREFIXES_FOR_ZONES: &[&str] =
    &["zone-token-signing-public-key-", "zone-token-revocations"];

/// Types a zone subscribes to from global.
pub fn zone_consumes(kind: ResourceType) -> bool {
    let d = kind.descriptor();
    d.has_flag(CONSUMED_BY_ZONE) || d.has_flag(SYNCED_ACROSS_ZONES)
}

/// Types global subscribes to from zones.
pub fn global_consumes(kind: ResourceType) -> bool {
    kind.descriptor().has_flag(CONSUMED_BY_GLOBAL)
}

pub fn zone_subscriptions() -> Vec<ResourceType> {
    ResourceType::all().filter(|k| zone_consumes(*k)).collect()
}

pub fn global_subscriptions() -> Vec<ResourceType> {
    ResourceType::all()
        .filter(|k| global_consumes(*k))
        .collect()
}

/// Why a receiver refuses a resource its peer sent (the reason goes back in the NACK).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{name}: {peer} may not provide {kind}")]
    NotProvided {
        name: String,
        peer: &'static str,
        kind: ResourceType,
    },
    #[error("{name}: this zone's own resource came back from global")]
    OwnResource { name: String },
    #[error("{name}: belongs to zone {owner:?}, not {zone:?}")]
    OtherZone {
        name: String,
        owner: String,
        zone: String,
    },
    #[error("{name}: missing label {ZONE}")]
    NoZoneLabel { name: String },
}

fn sync_disabled(r: &Resource) -> bool {
    r.label(KDS_SYNC) == Some("disabled")
}

/// The zone a resource came from, if it came from one.
pub fn zone_of(r: &Resource) -> Option<&str> {
    r.label(ZONE).filter(|z| !z.is_empty())
}

/// Whether global sends `r` to zone `zone`. `zone_enabled` says whether a zone is enabled.
pub fn global_sends_to_zone(r: &Resource, zone: &str, zone_enabled: impl Fn(&str) -> bool) -> bool {
    if sync_disabled(r) || !zone_consumes(r.kind) {
        return false;
    }
    let d = r.kind.descriptor();
    match zone_of(r) {
        // Another zone's resource: only types synced across zones, never back to its own zone,
        // and not from a disabled zone.
        Some(origin) => d.has_flag(SYNCED_ACROSS_ZONES) && origin != zone && zone_enabled(origin),
        None => {
            if r.label(ORIGIN).is_some_and(|o| o != ORIGIN_GLOBAL)
                || !d.has_flag(PROVIDED_BY_GLOBAL)
            {
                return false;
            }
            if r.kind == ResourceType::GlobalSecret {
                return GLOBAL_SECRET_PREFIXES_FOR_ZONES
                    .iter()
                    .any(|p| r.meta.name.starts_with(p));
            }
            true
        }
    }
}

/// Whether a zone sends its resource `r` to global.
pub fn zone_sends_to_global(r: &Resource, local_zone: &str) -> bool {
    if sync_disabled(r) || !r.kind.descriptor().has_flag(PROVIDED_BY_ZONE) {
        return false;
    }
    // Only what this zone created: not global's copies, not other zones' copies.
    if r.label(ORIGIN).is_some_and(|o| o != ORIGIN_ZONE) {
        return false;
    }
    if zone_of(r).is_some_and(|z| z != local_zone) {
        return false;
    }
    if r.kind == ResourceType::ZoneIngress
        && r.spec
            .get("zone")
            .and_then(|z| z.as_str())
            .is_some_and(|z| !z.is_empty() && z != local_zone)
    {
        return false;
    }
    true
}

/// Types whose names are not hashed when copied: there is only one of each per name across
/// the federation.
fn keeps_name(kind: ResourceType) -> bool {
    matches!(
        kind,
        ResourceType::Mesh
            | ResourceType::Secret
            | ResourceType::GlobalSecret
            | ResourceType::Config
    )
}

fn display_name(r: &Resource) -> String {
    r.label(DISPLAY_NAME)
        .filter(|d| !d.is_empty())
        .unwrap_or(&r.meta.name)
        .to_string()
}

fn hashed(r: &Resource) -> String {
    hashed_name(
        &r.meta.mesh,
        &display_name(r),
        r.label(ZONE),
        r.label(NAMESPACE_LABEL),
    )
}

/// How global's resource looks on a zone. As in Kuma, everything a zone receives is global's
/// (`kuma.io/origin: global`), other zones' resources included: their `kuma.io/zone` says
/// where they came from. Status stays behind: a zone computes its own.
pub fn to_zone(r: &Resource) -> Resource {
    let mut out = r.clone();
    out.meta
        .labels
        .insert(ORIGIN.to_string(), ORIGIN_GLOBAL.to_string());
    out.status = None;
    if !keeps_name(r.kind) {
        out.meta
            .labels
            .entry(DISPLAY_NAME.to_string())
            .or_insert_with(|| r.meta.name.clone());
        out.meta.name = hashed(&out);
    }
    out
}

/// How a zone's resource looks on global.
pub fn to_global(r: &Resource, zone: &str) -> Resource {
    let mut out = r.clone();
    out.meta
        .labels
        .insert(ORIGIN.to_string(), ORIGIN_ZONE.to_string());
    out.meta.labels.insert(ZONE.to_string(), zone.to_string());
    out.meta
        .labels
        .entry(DISPLAY_NAME.to_string())
        .or_insert_with(|| r.meta.name.clone());
    out.meta.name = hashed(&out);
    if matches!(r.kind, ResourceType::ZoneIngress | ResourceType::ZoneEgress)
        && let Some(obj) = out.spec.as_object_mut()
    {
        obj.insert("zone".into(), serde_json::Value::String(zone.to_string()));
    }
    out
}

/// The delta-xDS resource key: `<name>.<mesh>`, or `<name>.` for global-scoped types.
pub fn resource_key(r: &Resource) -> String {
    format!("{}.{}", r.meta.name, r.meta.mesh)
}

/// Splits a key back into (name, mesh). Names may contain dots; the mesh never does, so the
/// last dot separates them.
pub fn split_key(key: &str) -> Option<(&str, &str)> {
    key.rsplit_once('.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn timeout(name: &str) -> Resource {
        Resource::new(
            ResourceType::MeshTimeout,
            "default",
            name,
            json!({"targetRef": {"kind": "Mesh"}}),
        )
    }

    #[test]
    fn global_policy_is_renamed_for_zones() {
        let r = to_zone(&timeout("default-timeout-global"));
        assert_eq!(r.meta.name, "default-timeout-global-54dbd4c66zwbcf9c");
        assert_eq!(r.label(ORIGIN), Some("global"));
        assert_eq!(r.label(DISPLAY_NAME), Some("default-timeout-global"));
    }

    #[test]
    fn zone_policy_is_renamed_for_global() {
        let r = to_global(&timeout("default-timeout-zone-1"), "zone-1");
        assert_eq!(r.meta.name, "default-timeout-zone-1-c58w24w4vw27f454");
        assert_eq!(r.label(ORIGIN), Some("zone"));
        assert_eq!(r.label(ZONE), Some("zone-1"));
        assert_eq!(r.label(DISPLAY_NAME), Some("default-timeout-zone-1"));
        // Sent on to other zones, it keeps global's name: same display name, same zone label.
        assert_eq!(to_zone(&r).meta.name, r.meta.name);
    }

    /// As Kuma's sync names them: a zone's MeshService reaches other zones with global's hashed
    /// name, `kuma.io/origin: global` and the zone it came from; global's MeshExternalService
    /// and MeshMultiZoneService reach zones hashed without a zone, status left behind.
    #[test]
    fn services_reach_zones_as_kuma_names_them() {
        let mut svc = Resource::new(ResourceType::MeshService, "default", "redis", json!({}));
        svc.status = Some(json!({"vips": [{"ip": "241.0.0.1"}]}));
        let on_global = to_global(&svc, "zone-2");
        let on_zone1 = to_zone(&on_global);
        assert_eq!(
            on_zone1.meta.name,
            hashed_name("default", "redis", Some("zone-2"), None)
        );
        assert_eq!(on_zone1.meta.name, on_global.meta.name);
        assert_eq!(on_zone1.label(ORIGIN), Some("global"));
        assert_eq!(on_zone1.label(ZONE), Some("zone-2"));
        assert_eq!(on_zone1.label(DISPLAY_NAME), Some("redis"));
        assert!(on_zone1.status.is_none());
        for kind in [
            ResourceType::MeshExternalService,
            ResourceType::MeshMultiZoneService,
        ] {
            let r = to_zone(&Resource::new(kind, "default", "ext", json!({})));
            assert_eq!(
                r.meta.name,
                hashed_name("default", "ext", None, None),
                "{kind}"
            );
            assert_eq!(r.label(ORIGIN), Some("global"));
            assert_eq!(r.label(DISPLAY_NAME), Some("ext"));
        }
    }

    #[test]
    fn mesh_and_secrets_keep_their_names() {
        let mesh = Resource::new(ResourceType::Mesh, "", "default", json!({}));
        assert_eq!(to_zone(&mesh).meta.name, "default");
        let secret = Resource::new(
            ResourceType::Secret,
            "default",
            "ca-cert",
            json!({"data": "YQ=="}),
        );
        assert_eq!(to_zone(&secret).meta.name, "ca-cert");
    }

    #[test]
    fn directions() {
        let enabled = |_: &str| true;
        // Global's own policy goes to every zone.
        assert!(global_sends_to_zone(&timeout("t"), "zone-1", enabled));
        // A zone's policy on global does not go to zones.
        let from_zone = to_global(&timeout("t"), "zone-1");
        assert!(!global_sends_to_zone(&from_zone, "zone-2", enabled));
        // A zone's MeshService goes to other zones, never back to its own, not from a disabled zone.
        let svc = to_global(
            &Resource::new(ResourceType::MeshService, "default", "redis", json!({})),
            "zone-1",
        );
        assert!(global_sends_to_zone(&svc, "zone-2", enabled));
        assert!(!global_sends_to_zone(&svc, "zone-1", enabled));
        assert!(!global_sends_to_zone(&svc, "zone-2", |z| z != "zone-1"));
        // Dataplanes never go to zones.
        let dp = to_global(
            &Resource::new(ResourceType::Dataplane, "default", "dp", json!({})),
            "zone-1",
        );
        assert!(!global_sends_to_zone(&dp, "zone-2", enabled));
        // Zones and their insights never sync.
        assert!(!zone_consumes(ResourceType::Zone) && !global_consumes(ResourceType::ZoneInsight));
        // GlobalSecrets stay on global unless allow-listed.
        let key = Resource::new(
            ResourceType::GlobalSecret,
            "",
            "user-token-signing-key-1",
            json!({"data": "YQ=="}),
        );
        assert!(!global_sends_to_zone(&key, "zone-1", enabled));
    }

    #[test]
    fn zone_sends_only_its_own() {
        let local = timeout("t");
        assert!(zone_sends_to_global(&local, "zone-1"));
        assert!(
            !zone_sends_to_global(&to_zone(&timeout("g")), "zone-1"),
            "global's copy went back"
        );
        let mut other = to_global(&timeout("t"), "zone-2");
        assert!(!zone_sends_to_global(&other, "zone-1"));
        other.meta.labels.remove(ORIGIN);
        assert!(
            !zone_sends_to_global(&other, "zone-1"),
            "another zone's resource went up"
        );
        let secret = Resource::new(
            ResourceType::Secret,
            "default",
            "s",
            json!({"data": "YQ=="}),
        );
        assert!(
            !zone_sends_to_global(&secret, "zone-1"),
            "a zone's secret left the zone"
        );
        let mut disabled = timeout("t");
        disabled
            .meta
            .labels
            .insert(KDS_SYNC.into(), "disabled".into());
        assert!(!zone_sends_to_global(&disabled, "zone-1"));
        assert!(!global_sends_to_zone(&disabled, "zone-1", |_| true));
        let dp = Resource::new(ResourceType::Dataplane, "default", "dp", json!({}));
        assert!(zone_sends_to_global(&dp, "zone-1"));
    }

    #[test]
    fn keys() {
        assert_eq!(resource_key(&timeout("a.b")), "a.b.default");
        assert_eq!(split_key("a.b.default"), Some(("a.b", "default")));
        let mesh = Resource::new(ResourceType::Mesh, "", "m", json!({}));
        assert_eq!(resource_key(&mesh), "m.");
        assert_eq!(split_key("m."), Some(("m", "")));
    }

    #[test]
    fn ingress_zone_is_stamped() {
        let zi = Resource::new(
            ResourceType::ZoneIngress,
            "",
            "zi",
            json!({"networking": {"address": "1.1.1.1", "port": 1}}),
        );
        assert_eq!(to_global(&zi, "zone-1").spec["zone"], "zone-1");
    }
}
