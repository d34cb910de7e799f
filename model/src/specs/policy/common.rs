//! What every policy spec shares: the section item types, the allowed targetRef kinds and
//! the checks of targetRefs, durations, percentages and header matches.

pub(super) use std::collections::{BTreeMap, HashSet};

pub(super) use serde::{Deserialize, Serialize};
pub(super) use serde_json::Value;

pub(super) use crate::duration::parse_duration;
pub(super) use crate::specs::gateway::check_gateway_hostname;
pub(super) use crate::specs::targetref::{
    BackendRef, TargetRef, TargetRefKind as K, TargetRefOpts, validate_target_ref_with,
};
pub(super) use crate::validate::{Validate, Validator};

/// An outbound section: destinations selected by `targetRef` get `default`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToItem<C> {
    #[serde(default = "TargetRef::missing")]
    pub target_ref: TargetRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<C>,
}

/// An inbound section: clients selected by `targetRef` get `default`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FromItem<C> {
    #[serde(default = "TargetRef::missing")]
    pub target_ref: TargetRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<C>,
}

/// An inbound rule (2.10+): `default` applied to the traffic `matches` selects (all if absent).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleItem<C> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<C>,
}

/// Kubernetes' IntOrString, plus plain decimals which Kuma's docs sometimes write unquoted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    Float(f64),
    String(String),
}

impl IntOrString {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            IntOrString::Int(i) => Some(*i as f64),
            IntOrString::Float(f) => Some(*f),
            IntOrString::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeaderMatchType {
    Exact,
    Present,
    RegularExpression,
    Absent,
    Prefix,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub match_type: Option<HeaderMatchType>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderKeyValue {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderModifier {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Vec<HeaderKeyValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<Vec<HeaderKeyValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove: Option<Vec<String>>,
}

pub(super) const MUST_BE_DEFINED: &str = "must be defined";

/// Kinds a top-level `targetRef` may have in most policies (2.9 - 2.14, system role).
pub(super) const TOP_PROXY_KINDS: &[K] = &[
    K::Mesh,
    K::MeshSubset,
    K::MeshGateway,
    K::MeshService,
    K::MeshServiceSubset,
    K::Dataplane,
];
/// Outbound destinations of sidecars.
pub(super) const TO_DESTINATIONS: &[K] = &[
    K::Mesh,
    K::MeshService,
    K::MeshExternalService,
    K::MeshMultiZoneService,
];
/// Outbound destinations of sidecars for the policies that may also target a route (2.11+).
pub(super) const TO_DESTINATIONS_AND_ROUTES: &[K] = &[
    K::Mesh,
    K::MeshService,
    K::MeshExternalService,
    K::MeshMultiZoneService,
    K::MeshHTTPRoute,
];
pub(super) const ONLY_MESH: &[K] = &[K::Mesh];
/// Clients in `from[]` for policies that distinguish clients (MeshTrafficPermission, MeshFaultInjection).
pub(super) const FROM_CLIENTS: &[K] =
    &[K::Mesh, K::MeshSubset, K::MeshService, K::MeshServiceSubset];
/// Destinations of routes (`to[].targetRef` when the route is not on a gateway).
pub(super) const ROUTE_DESTINATIONS: &[K] = &[
    K::MeshService,
    K::MeshExternalService,
    K::MeshMultiZoneService,
];
pub(super) const BACKEND_REF_KINDS: &[K] = &[
    K::MeshService,
    K::MeshServiceSubset,
    K::MeshExternalService,
    K::MeshMultiZoneService,
];
/// Name Kuma gives a backend it could not resolve when converting Gateway API routes.
pub(super) const UNRESOLVED_BACKEND: &str = "kuma.io/unresolved-backend";

pub(super) fn top_kind(target_ref: &Option<TargetRef>) -> K {
    target_ref
        .as_ref()
        .map(|t| t.kind.clone())
        .unwrap_or(K::Mesh)
}

pub(super) fn is_gateway_or_route(kind: &K) -> bool {
    matches!(kind, K::MeshGateway | K::MeshHTTPRoute)
}

/// Validates the (optional) top-level `targetRef`.
pub(super) fn check_top(
    v: &mut Validator,
    target_ref: &Option<TargetRef>,
    allowed: &[K],
    inbound: bool,
) {
    if let Some(tr) = target_ref {
        let opts = TargetRefOpts {
            allowed,
            gateway_listener_tags_allowed: true,
            inbound_policy: inbound,
            ..Default::default()
        };
        validate_target_ref_with(v, "targetRef", tr, &opts);
    }
}

pub(super) fn check_ref(v: &mut Validator, target_ref: &TargetRef, allowed: &[K]) {
    let opts = TargetRefOpts {
        allowed,
        ..Default::default()
    };
    validate_target_ref_with(v, "targetRef", target_ref, &opts);
}

pub(super) fn check_default<C>(
    v: &mut Validator,
    default: &Option<C>,
    conf: &mut impl FnMut(&mut Validator, &C),
) {
    match default {
        Some(c) => v.field("default", |v| conf(v, c)),
        None => v.violation_at("default", MUST_BE_DEFINED),
    }
}

pub(super) fn check_to<C>(
    v: &mut Validator,
    to: &[ToItem<C>],
    allowed: &[K],
    mut conf: impl FnMut(&mut Validator, &C),
) {
    v.field("to", |v| {
        for (i, item) in to.iter().enumerate() {
            v.index(i, |v| {
                check_ref(v, &item.target_ref, allowed);
                check_default(v, &item.default, &mut conf);
            });
        }
    });
}

pub(super) fn check_from<C>(
    v: &mut Validator,
    from: &[FromItem<C>],
    allowed: &[K],
    mut conf: impl FnMut(&mut Validator, &C),
) {
    v.field("from", |v| {
        for (i, item) in from.iter().enumerate() {
            v.index(i, |v| {
                check_ref(v, &item.target_ref, allowed);
                check_default(v, &item.default, &mut conf);
            });
        }
    });
}

/// Outbound-only policies (`to` with at least one item). Under a gateway only `Mesh` may be
/// targeted; otherwise `kinds`.
pub(super) fn check_to_only<C>(
    v: &mut Validator,
    target_ref: &Option<TargetRef>,
    to: &[ToItem<C>],
    kinds: &[K],
    conf: impl FnMut(&mut Validator, &C),
) {
    check_top(v, target_ref, TOP_PROXY_KINDS, false);
    if to.is_empty() {
        v.violation_at("to", "needs at least one item");
    }
    let to_kinds = if top_kind(target_ref) == K::MeshGateway {
        ONLY_MESH
    } else {
        kinds
    };
    check_to(v, to, to_kinds, conf);
}

/// A policy's `from`, `to` and `rules` sections.
type Sections<'a, C> = (&'a [FromItem<C>], &'a [ToItem<C>], &'a [RuleItem<C>]);

/// The sections inbound-and-outbound policies share. At least one must be present; `from` is
/// refused where the top-level target has no inbound side (gateways, routes).
pub(super) fn check_sections<C>(
    v: &mut Validator,
    (from, to, rules): Sections<'_, C>,
    from_forbidden: bool,
    (from_kinds, to_kinds): (&[K], &[K]),
    mut conf: impl FnMut(&mut Validator, &C),
) {
    if to.is_empty() && from.is_empty() && rules.is_empty() {
        v.violation("at least one of 'from', 'to' has to be defined");
    }
    if from_forbidden && !from.is_empty() {
        v.violation_at("from", "must not be defined");
    } else {
        check_from(v, from, from_kinds, &mut conf);
    }
    check_to(v, to, to_kinds, &mut conf);
    check_rules(v, rules, &mut conf);
}

pub(super) fn check_rules<C>(
    v: &mut Validator,
    rules: &[RuleItem<C>],
    mut conf: impl FnMut(&mut Validator, &C),
) {
    v.field("rules", |v| {
        for (i, item) in rules.iter().enumerate() {
            v.index(i, |v| check_default(v, &item.default, &mut conf));
        }
    });
}

/// Any duration; Go syntax, not negative.
pub(super) fn duration(v: &mut Validator, name: &str, value: &Option<String>) {
    v.duration(name, value);
}

/// A duration that, when present, must be greater than zero.
pub(super) fn duration_positive(v: &mut Validator, name: &str, value: &Option<String>) {
    if let Some(d) = value {
        match parse_duration(d) {
            Err(e) => v.violation_at(name, e.to_string()),
            Ok(d) if d.is_zero() => v.violation_at(name, "must be greater than zero when defined"),
            Ok(_) => {}
        }
    }
}

pub(super) fn in_range(v: &mut Validator, name: &str, value: Option<f64>, min: f64, max: f64) {
    if let Some(x) = value
        && !(min..=max).contains(&x)
    {
        v.violation_at(name, format!("must be in inclusive range [{min}, {max}]"));
    }
}

pub(super) fn greater_than_zero(v: &mut Validator, name: &str, value: Option<i64>) {
    if let Some(x) = value
        && x <= 0
    {
        v.violation_at(name, "must be greater than 0");
    }
}

/// A percentage as IntOrString: a number in [0, 100].
pub(super) fn percentage(
    v: &mut Validator,
    name: &str,
    value: &Option<IntOrString>,
    required: bool,
) {
    match value {
        None if required => v.violation_at(name, MUST_BE_DEFINED),
        None => {}
        Some(p) => match p.as_f64() {
            None => v.violation_at(name, "must be a valid number"),
            Some(x) => in_range(v, name, Some(x), 0.0, 100.0),
        },
    }
}

pub(super) fn check_header_matches(
    v: &mut Validator,
    name: &str,
    headers: &Option<Vec<HeaderMatch>>,
) {
    let Some(headers) = headers else { return };
    v.field(name, |v| {
        for (i, h) in headers.iter().enumerate() {
            v.index(i, |v| {
                if h.name.is_empty() {
                    v.violation_at("name", "must not be empty");
                }
                let has_value = h.value.as_deref().is_some_and(|s| !s.is_empty());
                match h.match_type.unwrap_or(HeaderMatchType::Exact) {
                    HeaderMatchType::Present | HeaderMatchType::Absent if has_value => {
                        v.violation_at("value", "must not be defined");
                    }
                    _ => {}
                }
            });
        }
    });
}

pub(super) fn check_header_modifier(v: &mut Validator, m: &HeaderModifier) {
    if m.set.is_none() && m.add.is_none() && m.remove.is_none() {
        v.violation("must have at least one defined: set, add, remove");
        return;
    }
    let mut seen = HashSet::new();
    let mut check = |v: &mut Validator, field: &str, i: usize, name: &str| {
        v.field(field, |v| {
            v.index(i, |v| {
                if name.is_empty() {
                    v.violation_at("name", "must not be empty");
                } else if !seen.insert(name.to_ascii_lowercase()) {
                    v.violation_at("name", "duplicate header name");
                }
            })
        });
    };
    for (i, h) in m.set.iter().flatten().enumerate() {
        check(v, "set", i, &h.name);
    }
    for (i, h) in m.add.iter().flatten().enumerate() {
        check(v, "add", i, &h.name);
    }
    for (i, name) in m.remove.iter().flatten().enumerate() {
        v.field("remove", |v| {
            v.index(i, |v| {
                if name.is_empty() {
                    v.violation("must not be empty");
                } else if !seen.insert(name.to_ascii_lowercase()) {
                    v.violation_at("name", "duplicate header name");
                }
            })
        });
    }
}

pub(super) fn check_backend_refs(v: &mut Validator, refs: &[BackendRef]) {
    for (i, r) in refs.iter().enumerate() {
        v.index(i, |v| {
            let opts = TargetRefOpts {
                allowed: BACKEND_REF_KINDS,
                allowed_invalid_names: &[UNRESOLVED_BACKEND],
                ..Default::default()
            };
            validate_target_ref_with(v, "", &r.target_ref(), &opts);
            if let Some(p) = r.port {
                v.port("port", p);
            }
        });
    }
}
