//! `targetRef`: how new-style policies point at proxies, destinations and routes, its validation
//! (Kuma's `ValidateTargetRef` rules and messages) and a small matcher used to pick the policies
//! that apply to a data plane proxy.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::labels::SERVICE_TAG;
use crate::validate::Validator;

/// The kinds a `targetRef` can have. Unknown strings are kept (not rejected by serde) so that
/// validation can report them the way Kuma does: `kind: value is not supported`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum TargetRefKind {
    #[default]
    Mesh,
    MeshSubset,
    MeshService,
    MeshServiceSubset,
    MeshGateway,
    MeshHTTPRoute,
    MeshExternalService,
    MeshMultiZoneService,
    Dataplane,
    /// Anything else, including the empty string when `kind` is missing.
    Unknown(String),
}

impl TargetRefKind {
    pub fn as_str(&self) -> &str {
        match self {
            TargetRefKind::Mesh => "Mesh",
            TargetRefKind::MeshSubset => "MeshSubset",
            TargetRefKind::MeshService => "MeshService",
            TargetRefKind::MeshServiceSubset => "MeshServiceSubset",
            TargetRefKind::MeshGateway => "MeshGateway",
            TargetRefKind::MeshHTTPRoute => "MeshHTTPRoute",
            TargetRefKind::MeshExternalService => "MeshExternalService",
            TargetRefKind::MeshMultiZoneService => "MeshMultiZoneService",
            TargetRefKind::Dataplane => "Dataplane",
            TargetRefKind::Unknown(s) => s,
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "Mesh" => TargetRefKind::Mesh,
            "MeshSubset" => TargetRefKind::MeshSubset,
            "MeshService" => TargetRefKind::MeshService,
            "MeshServiceSubset" => TargetRefKind::MeshServiceSubset,
            "MeshGateway" => TargetRefKind::MeshGateway,
            "MeshHTTPRoute" => TargetRefKind::MeshHTTPRoute,
            "MeshExternalService" => TargetRefKind::MeshExternalService,
            "MeshMultiZoneService" => TargetRefKind::MeshMultiZoneService,
            "Dataplane" => TargetRefKind::Dataplane,
            other => TargetRefKind::Unknown(other.to_string()),
        }
    }

    /// The value serde uses when `kind` is absent; validation reports it as "must be defined".
    pub fn missing() -> Self {
        TargetRefKind::Unknown(String::new())
    }
}

impl fmt::Display for TargetRefKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for TargetRefKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TargetRefKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(TargetRefKind::parse(&s))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProxyType {
    Sidecar,
    Gateway,
}

/// A reference to the resources a policy (or a section of it) applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    #[serde(default = "TargetRefKind::missing")]
    pub kind: TargetRefKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_types: Vec<ProxyType>,
}

impl TargetRef {
    /// `{kind: Mesh}`: what an omitted top-level `targetRef` means.
    pub fn mesh() -> Self {
        TargetRef {
            kind: TargetRefKind::Mesh,
            ..Default::default()
        }
    }

    /// A reference whose `kind` is absent; used as the serde default of required `targetRef`s
    /// inside `to`/`from` items so that the error reads `targetRef.kind: must be defined`.
    pub fn missing() -> Self {
        TargetRef {
            kind: TargetRefKind::missing(),
            ..Default::default()
        }
    }

    pub fn name_str(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

/// A route backend: a `targetRef` plus `weight` and `port`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRef {
    #[serde(default = "TargetRefKind::missing")]
    pub kind: TargetRefKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_types: Vec<ProxyType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

impl BackendRef {
    pub fn target_ref(&self) -> TargetRef {
        TargetRef {
            kind: self.kind.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            section_name: self.section_name.clone(),
            labels: self.labels.clone(),
            tags: self.tags.clone(),
            mesh: self.mesh.clone(),
            proxy_types: self.proxy_types.clone(),
        }
    }
}

/// Options of [`validate_target_ref_with`], mirroring Kuma's `ValidateTargetRefOpts`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TargetRefOpts<'a> {
    pub allowed: &'a [TargetRefKind],
    /// `MeshGateway` may carry listener `tags` (top-level refs of some policies).
    pub gateway_listener_tags_allowed: bool,
    /// `Dataplane` may carry `sectionName` (policies configuring inbounds).
    pub inbound_policy: bool,
    /// Names accepted even though they do not match Kuma's name character set.
    pub allowed_invalid_names: &'a [&'a str],
}

/// Validates `target_ref` mounted at `field_name` against the kinds in `allowed`.
pub fn validate_target_ref(
    v: &mut Validator,
    field_name: &str,
    target_ref: &TargetRef,
    allowed: &[TargetRefKind],
) {
    validate_target_ref_with(
        v,
        field_name,
        target_ref,
        &TargetRefOpts {
            allowed,
            ..Default::default()
        },
    );
}

/// Like [`validate_target_ref`] with every Kuma option; an empty `field_name` validates in place.
pub fn validate_target_ref_with(
    v: &mut Validator,
    field_name: &str,
    target_ref: &TargetRef,
    opts: &TargetRefOpts<'_>,
) {
    if field_name.is_empty() {
        check_target_ref(v, target_ref, opts);
    } else {
        v.field(field_name, |v| check_target_ref(v, target_ref, opts));
    }
}

fn check_target_ref(v: &mut Validator, r: &TargetRef, opts: &TargetRefOpts<'_>) {
    use TargetRefKind as K;
    if r.kind.as_str().is_empty() {
        v.violation_at("kind", "must be defined");
        return;
    }
    if !opts.allowed.contains(&r.kind) {
        v.violation_at("kind", "value is not supported");
        return;
    }
    let kind = r.kind.as_str();
    let name_set = !r.name_str().is_empty();
    let ns_set = r.namespace.as_deref().is_some_and(|s| !s.is_empty());
    let section_set = r.section_name.as_deref().is_some_and(|s| !s.is_empty());
    let mesh_set = r.mesh.as_deref().is_some_and(|s| !s.is_empty());
    let disallow = |v: &mut Validator, field: &str, set: bool| {
        if set {
            v.violation_at(field, format!("must not be set with kind {kind}"));
        }
    };
    let require_name = |v: &mut Validator| {
        if !name_set {
            v.violation_at("name", format!("must be set with kind {kind}"));
        }
    };
    let check_name = |v: &mut Validator| {
        let name = r.name_str();
        if !opts.allowed_invalid_names.contains(&name) && !is_kuma_name(name) {
            v.violation_at(
                "name",
                "invalid characters: must consist of lower case alphanumeric characters, '-', '.' and '_'.",
            );
        }
    };
    match &r.kind {
        K::Mesh => {
            if name_set {
                v.violation_at("name", "using name with kind Mesh is not yet supported");
            }
            disallow(v, "mesh", mesh_set);
            disallow(v, "tags", !r.tags.is_empty());
            disallow(v, "labels", !r.labels.is_empty());
            disallow(v, "namespace", ns_set);
            disallow(v, "sectionName", section_set);
        }
        K::Dataplane => {
            disallow(v, "tags", !r.tags.is_empty());
            disallow(v, "mesh", mesh_set);
            disallow(v, "proxyTypes", !r.proxy_types.is_empty());
            if !r.labels.is_empty() && (name_set || ns_set) {
                v.violation_at(
                    "labels",
                    "either labels or name and namespace must be specified",
                );
            }
            if !opts.inbound_policy && section_set {
                v.violation_at("sectionName", "can only be used with inbound policies");
            }
        }
        K::MeshSubset => {
            disallow(v, "name", name_set);
            disallow(v, "mesh", mesh_set);
            v.field("tags", |v| validate_ref_tags(v, &r.tags, false));
            disallow(v, "labels", !r.labels.is_empty());
            disallow(v, "namespace", ns_set);
            disallow(v, "sectionName", section_set);
        }
        K::MeshService | K::MeshHTTPRoute => {
            check_name(v);
            disallow(v, "mesh", mesh_set);
            disallow(v, "tags", !r.tags.is_empty());
            disallow(v, "proxyTypes", !r.proxy_types.is_empty());
            if r.labels.is_empty() {
                require_name(v);
            } else {
                if name_set || ns_set {
                    v.violation_at(
                        "labels",
                        "either labels or name and namespace must be specified",
                    );
                }
                if section_set {
                    v.violation_at(
                        "sectionName",
                        "sectionName should not be combined with labels",
                    );
                }
            }
        }
        K::MeshServiceSubset | K::MeshGateway => {
            require_name(v);
            check_name(v);
            disallow(v, "mesh", mesh_set);
            disallow(v, "proxyTypes", !r.proxy_types.is_empty());
            v.field("tags", |v| validate_ref_tags(v, &r.tags, true));
            if r.kind == K::MeshGateway && !opts.gateway_listener_tags_allowed {
                disallow(v, "tags", !r.tags.is_empty());
            }
            disallow(v, "labels", !r.labels.is_empty());
            disallow(v, "namespace", ns_set);
            disallow(v, "sectionName", section_set);
        }
        K::MeshExternalService => {
            check_name(v);
            disallow(v, "mesh", mesh_set);
            disallow(v, "tags", !r.tags.is_empty());
            disallow(v, "proxyTypes", !r.proxy_types.is_empty());
            if r.labels.is_empty() {
                require_name(v);
            } else if name_set || ns_set {
                v.violation_at("labels", "either labels or name must be specified");
            }
            disallow(v, "sectionName", section_set);
        }
        K::MeshMultiZoneService => {
            disallow(v, "mesh", mesh_set);
            disallow(v, "tags", !r.tags.is_empty());
            disallow(v, "proxyTypes", !r.proxy_types.is_empty());
            if r.labels.is_empty() {
                require_name(v);
            } else if name_set || ns_set {
                v.violation_at(
                    "labels",
                    "either labels or name and namespace must be specified",
                );
            }
        }
        K::Unknown(_) => v.violation_at("kind", "value is not supported"),
    }
}

/// Kuma's `NameCharacterSet`: `^[0-9a-z.\-_]*$`.
fn is_kuma_name(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c))
}

/// Tags of `MeshSubset` (`selector == false`: plain tag values) or of `MeshServiceSubset` and
/// `MeshGateway` (`selector == true`: values may also hold `/` or be `*`).
pub(crate) fn validate_ref_tags(
    v: &mut Validator,
    tags: &BTreeMap<String, String>,
    selector: bool,
) {
    let name_ok = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:/".contains(c))
    };
    let value_ok = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c))
    };
    let selector_ok = |s: &str| s == "*" || name_ok(s);
    for (key, value) in tags {
        if key.is_empty() {
            v.violation("tag name must be non-empty");
        }
        v.key(key, |v| {
            if !name_ok(key) {
                v.violation(
                    "tag name must consist of alphanumeric characters, dots, dashes, slashes and underscores",
                );
            }
            if value.is_empty() {
                v.violation("tag value must be non-empty");
            } else if selector && !selector_ok(value) {
                v.violation(
                    "tag value must consist of alphanumeric characters, dots, dashes, slashes and underscores or be \"*\"",
                );
            } else if !selector && !value_ok(value) {
                v.violation(
                    "tag value must consist of alphanumeric characters, dots, dashes and underscores",
                );
            }
        });
    }
}

/// `subset` ⊆ `set`, where a `*` value in `subset` matches any present value.
fn tags_subset(subset: &BTreeMap<String, String>, set: &BTreeMap<String, String>) -> bool {
    subset
        .iter()
        .all(|(k, want)| set.get(k).is_some_and(|have| want == "*" || have == want))
}

/// Whether a (top-level) `targetRef` selects a data plane proxy. `dp_tags` are the proxy's
/// inbound tags merged, `dp_labels` its resource labels. Kinds that do not select proxies
/// (routes, external services, ...) never match.
pub fn matches_dataplane(
    target_ref: &TargetRef,
    dp_tags: &BTreeMap<String, String>,
    dp_name: &str,
    dp_labels: &BTreeMap<String, String>,
) -> bool {
    let service_is = |name: &str| dp_tags.get(SERVICE_TAG).is_some_and(|s| s == name);
    match &target_ref.kind {
        TargetRefKind::Mesh => true,
        TargetRefKind::MeshSubset => tags_subset(&target_ref.tags, dp_tags),
        TargetRefKind::MeshService => service_is(target_ref.name_str()),
        TargetRefKind::MeshServiceSubset => {
            service_is(target_ref.name_str()) && tags_subset(&target_ref.tags, dp_tags)
        }
        TargetRefKind::Dataplane => {
            let name = target_ref.name_str();
            if !name.is_empty() {
                match target_ref.namespace.as_deref().filter(|ns| !ns.is_empty()) {
                    Some(ns) => dp_name == name || dp_name == format!("{name}.{ns}"),
                    None => dp_name == name,
                }
            } else {
                tags_subset(&target_ref.labels, dp_labels)
            }
        }
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use TargetRefKind as K;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> TargetRef {
        serde_json::from_value(v).unwrap()
    }

    fn check(tr: &TargetRef, allowed: &[TargetRefKind]) -> Vec<(String, String)> {
        let mut v = Validator::rooted("spec");
        validate_target_ref(&mut v, "targetRef", tr, allowed);
        match v.finish() {
            Ok(()) => vec![],
            Err(e) => e
                .violations
                .into_iter()
                .map(|x| (x.field, x.reason))
                .collect(),
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_field_and_keeps_unknown_kinds() {
        let tr = parse(
            json!({"kind": "MeshService", "name": "backend", "namespace": "kuma-demo",
            "sectionName": "http", "proxyTypes": ["Sidecar", "Gateway"]}),
        );
        assert_eq!(tr.kind, K::MeshService);
        assert_eq!(tr.section_name.as_deref(), Some("http"));
        assert_eq!(tr.proxy_types, vec![ProxyType::Sidecar, ProxyType::Gateway]);
        assert_eq!(parse(json!({"kind": "Foo"})).kind, K::Unknown("Foo".into()));
        assert_eq!(serde_json::to_value(&tr).unwrap()["kind"], "MeshService");
        assert!(serde_json::from_value::<TargetRef>(json!({"kind": "Mesh", "nme": "x"})).is_err());
    }

    #[test]
    fn accepts_valid_refs() {
        let all = [
            K::Mesh,
            K::MeshSubset,
            K::MeshService,
            K::MeshServiceSubset,
            K::MeshGateway,
            K::MeshHTTPRoute,
            K::MeshExternalService,
            K::MeshMultiZoneService,
            K::Dataplane,
        ];
        for tr in [
            json!({"kind": "Mesh"}),
            json!({"kind": "Mesh", "proxyTypes": ["Gateway"]}),
            json!({"kind": "MeshSubset", "tags": {"app": "backend", "kuma.io/zone": "east"}}),
            json!({"kind": "MeshService", "name": "backend_kuma-demo_svc_3001"}),
            json!({"kind": "MeshService", "labels": {"app": "backend"}}),
            json!({"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": "v2"}}),
            json!({"kind": "MeshGateway", "name": "edge-gateway"}),
            json!({"kind": "Dataplane", "labels": {"app": "demo-app"}}),
            json!({"kind": "Dataplane", "name": "dp-1", "namespace": "kuma-demo"}),
            json!({"kind": "MeshMultiZoneService", "labels": {"kuma.io/display-name": "backend"}}),
            json!({"kind": "MeshExternalService", "name": "httpbin"}),
        ] {
            assert_eq!(check(&parse(tr.clone()), &all), vec![], "{tr}");
        }
    }

    #[test]
    fn rejects_like_kuma() {
        let all = [
            K::Mesh,
            K::MeshSubset,
            K::MeshService,
            K::MeshServiceSubset,
            K::MeshGateway,
            K::Dataplane,
            K::MeshExternalService,
        ];
        let cases = [
            (json!({}), "spec.targetRef.kind", "must be defined"),
            (
                json!({"kind": "Foo"}),
                "spec.targetRef.kind",
                "value is not supported",
            ),
            (
                json!({"kind": "MeshHTTPRoute", "name": "r"}),
                "spec.targetRef.kind",
                "value is not supported",
            ),
            (
                json!({"kind": "Mesh", "name": "x"}),
                "spec.targetRef.name",
                "using name with kind Mesh is not yet supported",
            ),
            (
                json!({"kind": "Mesh", "tags": {"a": "b"}}),
                "spec.targetRef.tags",
                "must not be set with kind Mesh",
            ),
            (
                json!({"kind": "MeshService"}),
                "spec.targetRef.name",
                "must be set with kind MeshService",
            ),
            (
                json!({"kind": "MeshService", "name": "Backend"}),
                "spec.targetRef.name",
                "invalid characters: must consist of lower case alphanumeric characters, '-', '.' and '_'.",
            ),
            (
                json!({"kind": "MeshService", "name": "b", "tags": {"a": "b"}}),
                "spec.targetRef.tags",
                "must not be set with kind MeshService",
            ),
            (
                json!({"kind": "MeshServiceSubset", "tags": {"a": "b"}}),
                "spec.targetRef.name",
                "must be set with kind MeshServiceSubset",
            ),
            (
                json!({"kind": "MeshGateway", "name": "gw", "tags": {"port": "80"}}),
                "spec.targetRef.tags",
                "must not be set with kind MeshGateway",
            ),
            (
                json!({"kind": "MeshSubset", "name": "x"}),
                "spec.targetRef.name",
                "must not be set with kind MeshSubset",
            ),
            (
                json!({"kind": "MeshSubset", "tags": {"app": ""}}),
                "spec.targetRef.tags[\"app\"]",
                "tag value must be non-empty",
            ),
            (
                json!({"kind": "Dataplane", "name": "a", "labels": {"x": "y"}}),
                "spec.targetRef.labels",
                "either labels or name and namespace must be specified",
            ),
            (
                json!({"kind": "Dataplane", "sectionName": "http"}),
                "spec.targetRef.sectionName",
                "can only be used with inbound policies",
            ),
            (
                json!({"kind": "MeshExternalService"}),
                "spec.targetRef.name",
                "must be set with kind MeshExternalService",
            ),
        ];
        for (tr, field, reason) in cases {
            let got = check(&parse(tr.clone()), &all);
            assert!(
                got.contains(&(field.to_string(), reason.to_string())),
                "{tr}: {got:?}"
            );
        }
    }

    #[test]
    fn options_relax_gateway_tags_and_section_name() {
        let mut v = Validator::rooted("spec");
        let gw = parse(json!({"kind": "MeshGateway", "name": "gw", "tags": {"port": "http-80"}}));
        let dp = parse(json!({"kind": "Dataplane", "labels": {"app": "a"}, "sectionName": "http"}));
        let opts = TargetRefOpts {
            allowed: &[K::MeshGateway, K::Dataplane],
            gateway_listener_tags_allowed: true,
            inbound_policy: true,
            ..Default::default()
        };
        validate_target_ref_with(&mut v, "targetRef", &gw, &opts);
        validate_target_ref_with(&mut v, "targetRef", &dp, &opts);
        v.finish().unwrap();
    }

    #[test]
    fn matcher_selects_dataplanes() {
        let tags = map(&[
            ("kuma.io/service", "backend"),
            ("version", "v2"),
            ("app", "backend"),
        ]);
        let labels = map(&[("app", "demo-app"), ("k8s.kuma.io/namespace", "kuma-demo")]);
        let m = |tr: serde_json::Value| matches_dataplane(&parse(tr), &tags, "dp-1", &labels);
        assert!(m(json!({"kind": "Mesh"})));
        assert!(m(json!({"kind": "MeshSubset", "tags": {"version": "v2"}})));
        assert!(m(json!({"kind": "MeshSubset"})));
        assert!(m(json!({"kind": "MeshSubset", "tags": {"version": "*"}})));
        assert!(!m(json!({"kind": "MeshSubset", "tags": {"version": "v1"}})));
        assert!(m(json!({"kind": "MeshService", "name": "backend"})));
        assert!(!m(json!({"kind": "MeshService", "name": "web"})));
        assert!(m(
            json!({"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": "v2"}})
        ));
        assert!(!m(
            json!({"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": "v3"}})
        ));
        assert!(m(json!({"kind": "Dataplane", "name": "dp-1"})));
        assert!(!m(json!({"kind": "Dataplane", "name": "dp-2"})));
        assert!(m(
            json!({"kind": "Dataplane", "labels": {"app": "demo-app"}})
        ));
        assert!(!m(json!({"kind": "Dataplane", "labels": {"app": "other"}})));
        assert!(m(json!({"kind": "Dataplane"})));
        assert!(!m(json!({"kind": "MeshHTTPRoute", "name": "r"})));
        assert!(matches_dataplane(
            &parse(json!({"kind": "Dataplane", "name": "dp-1", "namespace": "kuma-demo"})),
            &tags,
            "dp-1.kuma-demo",
            &labels
        ));
    }
}
