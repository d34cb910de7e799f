//! Kuma's resource model: types, descriptors, validation with field paths and codecs.
//! Pure data: nothing here does I/O.

pub mod catalog;
pub mod descriptor;
pub mod dpapi;
pub mod duration;
pub mod name;
pub mod prometheus;
pub mod proxy_paths;
pub mod resource;
pub mod specs;
pub mod template;
pub mod time;
pub mod validate;

pub use descriptor::{Descriptor, Layout, ResourceType, Scope};
pub use resource::{Meta, Resource, ResourceKey};
pub use time::Timestamp;
pub use validate::{ValidationError, Validator, Violation};

/// An error and its causes on one line (`outer: cause: root cause`), for logs and for
/// messages that cross the wire as text.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let message = c.to_string();
        // Wrappers that show their source's message and also return it as the source (hyper's,
        // `#[error(transparent)]`) would print it twice.
        if !out.ends_with(&message) {
            out.push_str(": ");
            out.push_str(&message);
        }
        cause = c.source();
    }
    out
}

/// Labels Kuma reserves, written by the control plane.
pub mod labels {
    pub const ORIGIN: &str = "kuma.io/origin";
    pub const ZONE: &str = "kuma.io/zone";
    pub const DISPLAY_NAME: &str = "kuma.io/display-name";
    pub const KDS_SYNC: &str = "kuma.io/kds-sync";
    pub const MESH: &str = "kuma.io/mesh";
    pub const ENV: &str = "kuma.io/env";
    pub const SERVICE_TAG: &str = "kuma.io/service";
    pub const PROTOCOL_TAG: &str = "kuma.io/protocol";
    pub const PROXY_TYPE: &str = "kuma.io/proxy-type";
    pub const WORKLOAD: &str = "kuma.io/workload";
    pub const KUBE_NAMESPACE: &str = "k8s.kuma.io/namespace";

    use crate::descriptor::kds::PROVIDED_BY_ZONE;
    use crate::{Resource, ResourceType};

    /// The labels Kuma's control plane computes when a resource is written (Kuma's
    /// `resource_labels.Compute`): `kuma.io/mesh` on mesh-scoped resources; on a zone control
    /// plane (`local_zone`; Kuma's standalone is a zone too), what the zone itself provides is
    /// marked as this zone's (`kuma.io/origin: zone`, `kuma.io/zone`, `kuma.io/env`); proxies
    /// carry their kind in `kuma.io/proxy-type`. Labels the writer already set are kept,
    /// except the proxy type, which follows the spec.
    pub fn compute(r: &mut Resource, local_zone: Option<&str>) {
        let labels = &mut r.meta.labels;
        if r.kind.is_mesh_scoped() {
            let mesh = if r.meta.mesh.is_empty() {
                "default"
            } else {
                &r.meta.mesh
            };
            labels
                .entry(MESH.to_string())
                .or_insert_with(|| mesh.to_string());
        }
        if let Some(zone) = local_zone
            && r.kind.descriptor().has_flag(PROVIDED_BY_ZONE)
        {
            let origin = labels
                .entry(ORIGIN.to_string())
                .or_insert_with(|| "zone".to_string());
            if origin != "global" {
                labels
                    .entry(ZONE.to_string())
                    .or_insert_with(|| zone.to_string());
                labels
                    .entry(ENV.to_string())
                    .or_insert_with(|| "universal".to_string());
            }
        }
        let proxy_type = match r.kind {
            ResourceType::Dataplane if r.spec["networking"]["gateway"]["type"] == "BUILTIN" => {
                "gateway"
            }
            ResourceType::Dataplane => "sidecar",
            ResourceType::ZoneIngress => "zoneingress",
            ResourceType::ZoneEgress => "zoneegress",
            _ => return,
        };
        labels.insert(PROXY_TYPE.to_string(), proxy_type.to_string());
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("root cause")]
    struct Root;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Repeats(#[source] Root);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot connect")]
    struct Outer(#[source] Repeats);

    #[test]
    fn a_cause_repeating_its_wrapper_is_shown_once() {
        assert_eq!(
            super::error_chain(&Outer(Repeats(Root))),
            "cannot connect: root cause"
        );
    }
}
