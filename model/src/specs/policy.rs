//! targetRef policies (Kuma 2.9 - 2.14 data model): typed specs and their validation.
//!
//! Every spec has the same skeleton: an optional top-level `targetRef` (an omitted one means
//! `{kind: Mesh}`) and some of the sections `to[]` (outbound, per destination), `from[]` (inbound,
//! per client), `rules[]` (inbound, 2.10+) or a single `default`. Allowed `targetRef` kinds follow
//! Kuma's "system policy role" (what Universal uses), which is the most permissive of its roles.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::gateway::check_gateway_hostname;
use super::targetref::{
    BackendRef, TargetRef, TargetRefKind as K, TargetRefOpts, validate_target_ref_with,
};
use crate::duration::parse_duration;
use crate::validate::{Validate, ValidationError, Validator, validate_as};

// ---------------------------------------------------------------------------------------------
// Shared building blocks
// ---------------------------------------------------------------------------------------------

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

const MUST_BE_DEFINED: &str = "must be defined";

/// Kinds a top-level `targetRef` may have in most policies (2.9 - 2.14, system role).
const TOP_PROXY_KINDS: &[K] = &[
    K::Mesh,
    K::MeshSubset,
    K::MeshGateway,
    K::MeshService,
    K::MeshServiceSubset,
    K::Dataplane,
];
/// Outbound destinations of sidecars.
const TO_DESTINATIONS: &[K] = &[
    K::Mesh,
    K::MeshService,
    K::MeshExternalService,
    K::MeshMultiZoneService,
];
/// Outbound destinations of sidecars for the policies that may also target a route (2.11+).
const TO_DESTINATIONS_AND_ROUTES: &[K] = &[
    K::Mesh,
    K::MeshService,
    K::MeshExternalService,
    K::MeshMultiZoneService,
    K::MeshHTTPRoute,
];
const ONLY_MESH: &[K] = &[K::Mesh];
/// Clients in `from[]` for policies that distinguish clients (MeshTrafficPermission, MeshFaultInjection).
const FROM_CLIENTS: &[K] = &[K::Mesh, K::MeshSubset, K::MeshService, K::MeshServiceSubset];
/// Destinations of routes (`to[].targetRef` when the route is not on a gateway).
const ROUTE_DESTINATIONS: &[K] = &[
    K::MeshService,
    K::MeshExternalService,
    K::MeshMultiZoneService,
];
const BACKEND_REF_KINDS: &[K] = &[
    K::MeshService,
    K::MeshServiceSubset,
    K::MeshExternalService,
    K::MeshMultiZoneService,
];
/// Name Kuma gives a backend it could not resolve when converting Gateway API routes.
const UNRESOLVED_BACKEND: &str = "kuma.io/unresolved-backend";

fn top_kind(target_ref: &Option<TargetRef>) -> K {
    target_ref
        .as_ref()
        .map(|t| t.kind.clone())
        .unwrap_or(K::Mesh)
}

fn is_gateway_or_route(kind: &K) -> bool {
    matches!(kind, K::MeshGateway | K::MeshHTTPRoute)
}

/// Validates the (optional) top-level `targetRef`.
fn check_top(v: &mut Validator, target_ref: &Option<TargetRef>, allowed: &[K], inbound: bool) {
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

fn check_ref(v: &mut Validator, target_ref: &TargetRef, allowed: &[K]) {
    let opts = TargetRefOpts {
        allowed,
        ..Default::default()
    };
    validate_target_ref_with(v, "targetRef", target_ref, &opts);
}

fn check_default<C>(
    v: &mut Validator,
    default: &Option<C>,
    conf: &mut impl FnMut(&mut Validator, &C),
) {
    match default {
        Some(c) => v.field("default", |v| conf(v, c)),
        None => v.violation_at("default", MUST_BE_DEFINED),
    }
}

fn check_to<C>(
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

fn check_from<C>(
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
fn check_to_only<C>(
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
fn check_sections<C>(
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

fn check_rules<C>(
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
fn duration(v: &mut Validator, name: &str, value: &Option<String>) {
    v.duration(name, value);
}

/// A duration that, when present, must be greater than zero.
fn duration_positive(v: &mut Validator, name: &str, value: &Option<String>) {
    if let Some(d) = value {
        match parse_duration(d) {
            Err(e) => v.violation_at(name, e.to_string()),
            Ok(d) if d.is_zero() => v.violation_at(name, "must be greater than zero when defined"),
            Ok(_) => {}
        }
    }
}

fn in_range(v: &mut Validator, name: &str, value: Option<f64>, min: f64, max: f64) {
    if let Some(x) = value
        && !(min..=max).contains(&x)
    {
        v.violation_at(name, format!("must be in inclusive range [{min}, {max}]"));
    }
}

fn greater_than_zero(v: &mut Validator, name: &str, value: Option<i64>) {
    if let Some(x) = value
        && x <= 0
    {
        v.violation_at(name, "must be greater than 0");
    }
}

/// A percentage as IntOrString: a number in [0, 100].
fn percentage(v: &mut Validator, name: &str, value: &Option<IntOrString>, required: bool) {
    match value {
        None if required => v.violation_at(name, MUST_BE_DEFINED),
        None => {}
        Some(p) => match p.as_f64() {
            None => v.violation_at(name, "must be a valid number"),
            Some(x) => in_range(v, name, Some(x), 0.0, 100.0),
        },
    }
}

fn check_header_matches(v: &mut Validator, name: &str, headers: &Option<Vec<HeaderMatch>>) {
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

fn check_header_modifier(v: &mut Validator, m: &HeaderModifier) {
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

fn check_backend_refs(v: &mut Validator, refs: &[BackendRef]) {
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

// ---------------------------------------------------------------------------------------------
// MeshTrafficPermission
// ---------------------------------------------------------------------------------------------

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

pub fn validate_mesh_traffic_permission(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<MeshTrafficPermissionSpec>(spec, "spec").map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// MeshTimeout
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTimeoutSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<FromItem<TimeoutConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<ToItem<TimeoutConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleItem<TimeoutConf>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeoutConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<TimeoutHttp>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeoutHttp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_idle_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stream_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers_timeout: Option<String>,
}

fn check_timeout_conf(v: &mut Validator, conf: &TimeoutConf, top: &K) {
    if conf.connection_timeout.is_none() && conf.idle_timeout.is_none() && conf.http.is_none() {
        v.violation("at least one timeout should be configured");
        return;
    }
    if *top == K::MeshHTTPRoute {
        let msg = "can't be specified when top-level TargetRef is referencing MeshHTTPRoute";
        if conf.connection_timeout.is_some() {
            v.violation_at("connectionTimeout", msg);
        }
        if conf.idle_timeout.is_some() {
            v.violation_at("idleTimeout", msg);
        }
        if let Some(http) = &conf.http {
            v.field("http", |v| {
                if http.max_stream_duration.is_some() {
                    v.violation_at("maxStreamDuration", msg);
                }
                if http.max_connection_duration.is_some() {
                    v.violation_at("maxConnectionDuration", msg);
                }
            });
        }
    }
    duration_positive(v, "connectionTimeout", &conf.connection_timeout);
    duration(v, "idleTimeout", &conf.idle_timeout);
    if let Some(http) = &conf.http {
        v.field("http", |v| {
            if http.request_timeout.is_none()
                && http.stream_idle_timeout.is_none()
                && http.max_stream_duration.is_none()
                && http.max_connection_duration.is_none()
                && http.request_headers_timeout.is_none()
            {
                v.violation("at least one timeout in this section should be configured");
            }
            duration(v, "requestTimeout", &http.request_timeout);
            duration(v, "streamIdleTimeout", &http.stream_idle_timeout);
            duration(v, "maxStreamDuration", &http.max_stream_duration);
            duration(v, "maxConnectionDuration", &http.max_connection_duration);
            duration(v, "requestHeadersTimeout", &http.request_headers_timeout);
        });
    }
}

impl Validate for MeshTimeoutSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(
            v,
            &self.target_ref,
            &[
                K::Mesh,
                K::MeshSubset,
                K::MeshGateway,
                K::MeshService,
                K::MeshServiceSubset,
                K::MeshHTTPRoute,
                K::Dataplane,
            ],
            true,
        );
        let top = top_kind(&self.target_ref);
        let restricted = is_gateway_or_route(&top);
        let to_kinds = if restricted {
            &[K::Mesh, K::MeshExternalService][..]
        } else {
            TO_DESTINATIONS_AND_ROUTES
        };
        let sections = (&self.from[..], &self.to[..], &self.rules[..]);
        check_sections(v, sections, restricted, (ONLY_MESH, to_kinds), |v, c| {
            check_timeout_conf(v, c, &top)
        });
    }
}

pub fn validate_mesh_timeout(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<MeshTimeoutSpec>(spec, "spec").map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// MeshRetry
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshRetrySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<ToItem<RetryConf>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<RetryTcp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<RetryHttp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<RetryGrpc>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryTcp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connect_attempt: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryHttp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_off: Option<BackOff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited_back_off: Option<RateLimitedBackOff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retriable_response_headers: Option<Vec<HeaderMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retriable_request_headers: Option<Vec<HeaderMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_selection: Option<Vec<HostPredicate>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_selection_max_attempts: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryGrpc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_off: Option<BackOff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited_back_off: Option<RateLimitedBackOff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackOff {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_interval: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitedBackOff {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_headers: Option<Vec<ResetHeader>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_interval: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RateLimitFormat {
    Seconds,
    UnixTimestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResetHeader {
    #[serde(default)]
    pub name: String,
    pub format: RateLimitFormat,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPredicate {
    #[serde(default)]
    pub predicate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_frequency: Option<i32>,
}

const HTTP_RETRY_ON: &[&str] = &[
    "5xx",
    "5XX",
    "GatewayError",
    "Reset",
    "Retriable4xx",
    "ConnectFailure",
    "EnvoyRatelimited",
    "RefusedStream",
    "Http3PostConnectFailure",
    "HttpMethodConnect",
    "HttpMethodDelete",
    "HttpMethodGet",
    "HttpMethodHead",
    "HttpMethodOptions",
    "HttpMethodPatch",
    "HttpMethodPost",
    "HttpMethodPut",
    "HttpMethodTrace",
];
const GRPC_RETRY_ON: &[&str] = &[
    "Canceled",
    "DeadlineExceeded",
    "Internal",
    "ResourceExhausted",
    "Unavailable",
];

/// Status codes Go's `http.StatusText` knows, which Kuma accepts as `retryOn` items.
fn is_known_http_status(code: u16) -> bool {
    matches!(code,
        100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429
        | 431 | 451 | 500..=508 | 510 | 511)
}

fn check_back_off(v: &mut Validator, b: &Option<BackOff>) {
    let Some(b) = b else { return };
    v.field("backOff", |v| {
        if b.base_interval.is_none() && b.max_interval.is_none() {
            v.violation("must not be empty");
        }
        duration_positive(v, "baseInterval", &b.base_interval);
        duration_positive(v, "maxInterval", &b.max_interval);
    });
}

fn check_rate_limited_back_off(v: &mut Validator, r: &Option<RateLimitedBackOff>) {
    let Some(r) = r else { return };
    v.field("rateLimitedBackOff", |v| {
        duration_positive(v, "maxInterval", &r.max_interval);
        match &r.reset_headers {
            None => v.violation_at("resetHeaders", MUST_BE_DEFINED),
            Some(headers) => v.field("resetHeaders", |v| {
                for (i, h) in headers.iter().enumerate() {
                    if h.name.is_empty() {
                        v.index(i, |v| v.violation_at("name", MUST_BE_DEFINED));
                    }
                }
            }),
        }
    });
}

fn check_retry_on(v: &mut Validator, items: &Option<Vec<String>>, allowed: &[&str], http: bool) {
    let Some(items) = items else { return };
    v.field("retryOn", |v| {
        for (i, item) in items.iter().enumerate() {
            let status_ok = http && item.parse::<u16>().is_ok_and(is_known_http_status);
            if !allowed.contains(&item.as_str()) && !status_ok {
                v.index(i, |v| v.violation(format!("unknown item '{item}'")));
            }
        }
    });
}

fn check_retry_conf(v: &mut Validator, c: &RetryConf) {
    if c.tcp.is_none() && c.http.is_none() && c.grpc.is_none() {
        v.violation("at least one of the 'tcp', 'http', 'grpc' must be specified");
    }
    if let Some(tcp) = &c.tcp
        && tcp.max_connect_attempt.is_none()
    {
        v.violation_at("tcp", "must not be empty");
    }
    if let Some(h) = &c.http {
        v.field("http", |v| {
            if h.num_retries.is_none()
                && h.per_try_timeout.is_none()
                && h.back_off.is_none()
                && h.retry_on.is_none()
                && h.retriable_request_headers.is_none()
                && h.retriable_response_headers.is_none()
                && h.rate_limited_back_off.is_none()
                && h.host_selection.is_none()
                && h.host_selection_max_attempts.is_none()
            {
                v.violation("must not be empty");
            }
            duration(v, "perTryTimeout", &h.per_try_timeout);
            check_back_off(v, &h.back_off);
            check_rate_limited_back_off(v, &h.rate_limited_back_off);
            check_retry_on(v, &h.retry_on, HTTP_RETRY_ON, true);
            check_header_matches(v, "retriableResponseHeaders", &h.retriable_response_headers);
            check_header_matches(v, "retriableRequestHeaders", &h.retriable_request_headers);
            if let Some(preds) = &h.host_selection {
                v.field("hostSelection", |v| {
                    let mut priority_set = false;
                    for (i, p) in preds.iter().enumerate() {
                        v.index(i, |v| match p.predicate.as_str() {
                            "OmitPreviousHosts" => {}
                            "OmitHostsWithTags" => {
                                if p.tags.is_none() {
                                    v.violation_at("tags", MUST_BE_DEFINED);
                                }
                            }
                            "OmitPreviousPriorities" => {
                                if priority_set {
                                    v.violation_at(
                                        "predicate",
                                        "OmitPreviousPriorities must only be specified once",
                                    );
                                }
                                priority_set = true;
                                if p.update_frequency.unwrap_or(0) <= 0 {
                                    v.violation_at(
                                        "updateFrequency",
                                        "must be defined and greater than zero",
                                    );
                                }
                            }
                            other => v.violation_at(
                                "predicate",
                                format!("unknown predicate type '{other}'"),
                            ),
                        });
                    }
                });
            }
            greater_than_zero(v, "hostSelectionMaxAttempts", h.host_selection_max_attempts);
        });
    }
    if let Some(g) = &c.grpc {
        v.field("grpc", |v| {
            if g.num_retries.is_none()
                && g.per_try_timeout.is_none()
                && g.back_off.is_none()
                && g.retry_on.is_none()
                && g.rate_limited_back_off.is_none()
            {
                v.violation("must not be empty");
            }
            duration(v, "perTryTimeout", &g.per_try_timeout);
            check_back_off(v, &g.back_off);
            check_rate_limited_back_off(v, &g.rate_limited_back_off);
            check_retry_on(v, &g.retry_on, GRPC_RETRY_ON, false);
        });
    }
}

impl Validate for MeshRetrySpec {
    fn validate(&self, v: &mut Validator) {
        check_top(
            v,
            &self.target_ref,
            &[
                K::Mesh,
                K::MeshSubset,
                K::MeshGateway,
                K::MeshService,
                K::MeshServiceSubset,
                K::MeshHTTPRoute,
                K::Dataplane,
            ],
            false,
        );
        if self.to.is_empty() {
            v.violation_at("to", "needs at least one item");
        }
        let to_kinds = if is_gateway_or_route(&top_kind(&self.target_ref)) {
            &[K::Mesh, K::MeshExternalService][..]
        } else {
            TO_DESTINATIONS_AND_ROUTES
        };
        check_to(v, &self.to, to_kinds, check_retry_conf);
    }
}

pub fn validate_mesh_retry(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<MeshRetrySpec>(spec, "spec").map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// MeshCircuitBreaker
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshCircuitBreakerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<FromItem<CircuitBreakerConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<ToItem<CircuitBreakerConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleItem<CircuitBreakerConf>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreakerConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limits: Option<ConnectionLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_pools: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_external_and_local_errors: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detectors: Option<Detectors>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_panic_threshold: Option<IntOrString>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Detectors {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_failures: Option<ConsecutiveDetector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_failures: Option<ConsecutiveDetector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_origin_failures: Option<ConsecutiveDetector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<SuccessRateDetector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_percentage: Option<FailurePercentageDetector>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsecutiveDetector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SuccessRateDetector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_hosts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_volume: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard_deviation_factor: Option<IntOrString>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailurePercentageDetector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_hosts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_volume: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
}

fn check_circuit_breaker_conf(v: &mut Validator, c: &CircuitBreakerConf) {
    if c.connection_limits.is_none() && c.outlier_detection.is_none() {
        v.violation("at least one of 'connectionLimits', 'outlierDetection' has to be defined");
    }
    if let Some(l) = &c.connection_limits {
        v.field("connectionLimits", |v| {
            if l.max_connections.is_none()
                && l.max_connection_pools.is_none()
                && l.max_pending_requests.is_none()
                && l.max_retries.is_none()
                && l.max_requests.is_none()
            {
                v.violation("at least one of the limits has to be defined");
            }
            for (name, value) in [
                ("maxConnections", l.max_connections),
                ("maxConnectionPools", l.max_connection_pools),
                ("maxPendingRequests", l.max_pending_requests),
                ("maxRetries", l.max_retries),
                ("maxRequests", l.max_requests),
            ] {
                greater_than_zero(v, name, value.map(i64::from));
            }
        });
    }
    if let Some(o) = &c.outlier_detection {
        v.field("outlierDetection", |v| {
            duration_positive(v, "interval", &o.interval);
            duration_positive(v, "baseEjectionTime", &o.base_ejection_time);
            in_range(
                v,
                "maxEjectionPercent",
                o.max_ejection_percent.map(f64::from),
                0.0,
                100.0,
            );
            percentage(
                v,
                "healthyPanicThreshold",
                &o.healthy_panic_threshold,
                false,
            );
            if let Some(d) = &o.detectors {
                v.field("detectors", |v| {
                    for (name, det) in [
                        ("totalFailures", &d.total_failures),
                        ("gatewayFailures", &d.gateway_failures),
                        ("localOriginFailures", &d.local_origin_failures),
                    ] {
                        if let Some(det) = det {
                            v.field(name, |v| {
                                greater_than_zero(v, "consecutive", det.consecutive.map(i64::from))
                            });
                        }
                    }
                    if let Some(sr) = &d.success_rate
                        && let Some(f) = &sr.standard_deviation_factor
                    {
                        v.field("successRate", |v| match f.as_f64() {
                            Some(x) if x >= 0.0 => {}
                            _ => v.violation_at(
                                "standardDeviationFactor",
                                "must be a non-negative number",
                            ),
                        });
                    }
                    if let Some(fp) = &d.failure_percentage {
                        v.field("failurePercentage", |v| {
                            in_range(v, "threshold", fp.threshold.map(f64::from), 0.0, 100.0)
                        });
                    }
                });
            }
        });
    }
}

impl Validate for MeshCircuitBreakerSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(v, &self.target_ref, TOP_PROXY_KINDS, true);
        let gateway = top_kind(&self.target_ref) == K::MeshGateway;
        let to_kinds = if gateway { ONLY_MESH } else { TO_DESTINATIONS };
        let sections = (&self.from[..], &self.to[..], &self.rules[..]);
        check_sections(
            v,
            sections,
            gateway,
            (ONLY_MESH, to_kinds),
            check_circuit_breaker_conf,
        );
    }
}

pub fn validate_mesh_circuit_breaker(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<MeshCircuitBreakerSpec>(spec, "spec").map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// MeshHealthCheck
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshHealthCheckSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<ToItem<HealthCheckConf>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_jitter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_jitter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_jitter_percent: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_panic_threshold: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_traffic_on_panic: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_log_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always_log_health_check_failures: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_traffic_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse_connection: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpHealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers_to_add: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_statuses: Option<Vec<i32>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcHealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

fn is_base64(s: &str) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).is_ok()
}

fn check_health_check_conf(v: &mut Validator, c: &HealthCheckConf) {
    duration_positive(v, "interval", &c.interval);
    duration_positive(v, "unhealthyInterval", &c.unhealthy_interval);
    duration_positive(v, "timeout", &c.timeout);
    duration(v, "initialJitter", &c.initial_jitter);
    duration(v, "intervalJitter", &c.interval_jitter);
    duration_positive(v, "noTrafficInterval", &c.no_traffic_interval);
    greater_than_zero(
        v,
        "unhealthyThreshold",
        c.unhealthy_threshold.map(i64::from),
    );
    greater_than_zero(v, "healthyThreshold", c.healthy_threshold.map(i64::from));
    in_range(
        v,
        "intervalJitterPercent",
        c.interval_jitter_percent.map(f64::from),
        0.0,
        100.0,
    );
    percentage(
        v,
        "healthyPanicThreshold",
        &c.healthy_panic_threshold,
        false,
    );
    if let Some(tcp) = &c.tcp {
        v.field("tcp", |v| {
            if let Some(send) = &tcp.send
                && !is_base64(send)
            {
                v.violation_at("send", "must be a valid base64 string");
            }
            for (i, r) in tcp.receive.iter().flatten().enumerate() {
                if !is_base64(r) {
                    v.field("receive", |v| {
                        v.index(i, |v| v.violation("must be a valid base64 string"))
                    });
                }
            }
        });
    }
    if let Some(http) = &c.http {
        v.field("http", |v| {
            if let Some(p) = &http.path
                && !p.starts_with('/')
            {
                v.violation_at("path", "must be an absolute path");
            }
            if let Some(m) = &http.request_headers_to_add {
                v.field("requestHeadersToAdd", |v| {
                    if m.remove.is_some() {
                        v.violation_at("remove", "must not be defined");
                    }
                    check_header_modifier(v, m);
                });
            }
            for (i, s) in http.expected_statuses.iter().flatten().enumerate() {
                if !(100..=599).contains(s) {
                    v.field("expectedStatuses", |v| {
                        v.index(i, |v| v.violation("must be in inclusive range [100, 599]"))
                    });
                }
            }
        });
    }
}

impl Validate for MeshHealthCheckSpec {
    fn validate(&self, v: &mut Validator) {
        check_to_only(
            v,
            &self.target_ref,
            &self.to,
            TO_DESTINATIONS,
            check_health_check_conf,
        );
    }
}

pub fn validate_mesh_health_check(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<MeshHealthCheckSpec>(spec, "spec").map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// MeshHTTPRoute
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshHttpRouteSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<HttpRouteTo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteTo {
    #[serde(default = "TargetRef::missing")]
    pub target_ref: TargetRef,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HttpRouteRule>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpRouteMatch>,
    #[serde(default)]
    pub default: HttpRouteConf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_params: Option<Vec<QueryParamsMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<HeaderMatch>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathMatchType {
    Exact,
    PathPrefix,
    RegularExpression,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatch {
    #[serde(rename = "type")]
    pub match_type: PathMatchType,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Connect,
    Delete,
    Get,
    Head,
    Options,
    Patch,
    Post,
    Put,
    Trace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryParamsMatchType {
    Exact,
    RegularExpression,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryParamsMatch {
    #[serde(rename = "type")]
    pub match_type: QueryParamsMatchType,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<HttpFilter>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_refs: Option<Vec<BackendRef>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HttpFilterType {
    RequestHeaderModifier,
    ResponseHeaderModifier,
    RequestRedirect,
    URLRewrite,
    RequestMirror,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFilter {
    #[serde(rename = "type")]
    pub filter_type: HttpFilterType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<UrlRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirror>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedirectScheme {
    Http,
    Https,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestRedirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<RedirectScheme>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathRewriteType {
    ReplaceFullPath,
    ReplacePrefixMatch,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathRewrite {
    #[serde(rename = "type")]
    pub rewrite_type: PathRewriteType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_to_backend_hostname: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMirror {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<IntOrString>,
    #[serde(default = "BackendRef::default")]
    pub backend_ref: BackendRef,
}

fn check_precise_hostname(v: &mut Validator, name: &str, hostname: &Option<String>) {
    let Some(h) = hostname else { return };
    if h.parse::<std::net::IpAddr>().is_ok() {
        v.violation_at(name, "cannot be an IP address");
    } else if !super::gateway::is_dns1123_subdomain(h) {
        v.violation_at(
            name,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        );
    }
}

fn check_path_rewrite(v: &mut Validator, p: &PathRewrite, matches: &[HttpRouteMatch]) {
    v.field("path", |v| match p.rewrite_type {
        PathRewriteType::ReplaceFullPath => {
            if p.replace_full_path.is_none() {
                v.violation_at("replaceFullPath", MUST_BE_DEFINED);
            }
            if p.replace_prefix_match.is_some() {
                v.violation_at("replacePrefixMatch", "must not be defined");
            }
        }
        PathRewriteType::ReplacePrefixMatch => {
            if p.replace_prefix_match.is_none() {
                v.violation_at("replacePrefixMatch", MUST_BE_DEFINED);
            } else if matches.iter().any(|m| {
                m.path
                    .as_ref()
                    .is_none_or(|p| p.match_type != PathMatchType::PathPrefix)
            }) {
                v.violation_at(
                    "replacePrefixMatch",
                    "can only appear if all matches match a path prefix",
                );
            }
            if p.replace_full_path.is_some() {
                v.violation_at("replaceFullPath", "must not be defined");
            }
        }
    });
}

fn check_http_rule(v: &mut Validator, rule: &HttpRouteRule, top: &K) {
    v.field("matches", |v| {
        for (i, m) in rule.matches.iter().enumerate() {
            v.index(i, |v| {
                if let Some(p) = &m.path {
                    v.field("path", |v| match p.match_type {
                        PathMatchType::RegularExpression => {
                            if p.value.is_empty() {
                                v.violation_at("value", "must not be empty");
                            }
                        }
                        PathMatchType::PathPrefix => {
                            if p.value != "/" && p.value.ends_with('/') {
                                v.violation_at("value", "does not need a trailing slash because only a `/`-separated prefix or an entire path is matched");
                            }
                            if !p.value.starts_with('/') {
                                v.violation_at("value", "must be an absolute path");
                            }
                        }
                        PathMatchType::Exact => {
                            if !p.value.starts_with('/') {
                                v.violation_at("value", "must be an absolute path");
                            }
                        }
                    });
                }
                if let Some(qps) = &m.query_params {
                    v.field("queryParams", |v| {
                        let mut names = HashSet::new();
                        for (j, q) in qps.iter().enumerate() {
                            v.index(j, |v| {
                                if q.name.is_empty() {
                                    v.violation_at("name", "must not be empty");
                                } else if !names.insert(q.name.as_str()) {
                                    v.violation_at("name", format!("multiple entries for name {}", q.name));
                                }
                            });
                        }
                    });
                }
                check_header_matches(v, "headers", &m.headers);
            });
        }
    });
    v.field("default", |v| {
        let filters = rule.default.filters.as_deref().unwrap_or_default();
        v.field("filters", |v| {
            for (i, f) in filters.iter().enumerate() {
                v.index(i, |v| check_http_filter(v, f, &rule.matches, top));
            }
        });
        let refs = rule.default.backend_refs.as_deref().unwrap_or_default();
        v.field("backendRefs", |v| {
            if refs.is_empty()
                && *top == K::MeshGateway
                && !filters
                    .iter()
                    .any(|f| f.filter_type == HttpFilterType::RequestRedirect)
            {
                v.violation("must not be empty");
            }
            check_backend_refs(v, refs);
        });
    });
}

fn check_http_filter(v: &mut Validator, f: &HttpFilter, matches: &[HttpRouteMatch], top: &K) {
    match f.filter_type {
        HttpFilterType::RequestHeaderModifier => match &f.request_header_modifier {
            None => v.violation_at("requestHeaderModifier", MUST_BE_DEFINED),
            Some(m) => v.field("requestHeaderModifier", |v| check_header_modifier(v, m)),
        },
        HttpFilterType::ResponseHeaderModifier => match &f.response_header_modifier {
            None => v.violation_at("responseHeaderModifier", MUST_BE_DEFINED),
            Some(m) => v.field("responseHeaderModifier", |v| check_header_modifier(v, m)),
        },
        HttpFilterType::RequestRedirect => match &f.request_redirect {
            None => v.violation_at("requestRedirect", MUST_BE_DEFINED),
            Some(r) => v.field("requestRedirect", |v| {
                check_precise_hostname(v, "hostname", &r.hostname);
                if let Some(p) = &r.path {
                    check_path_rewrite(v, p, matches);
                }
                if let Some(port) = r.port {
                    v.port("port", port);
                }
                if let Some(code) = r.status_code
                    && ![301, 302, 303, 307, 308].contains(&code)
                {
                    v.violation_at("statusCode", "must be one of 301, 302, 303, 307, 308");
                }
            }),
        },
        HttpFilterType::URLRewrite => match &f.url_rewrite {
            None => v.violation_at("urlRewrite", MUST_BE_DEFINED),
            Some(r) => v.field("urlRewrite", |v| {
                check_precise_hostname(v, "hostname", &r.hostname);
                if let Some(p) = &r.path {
                    check_path_rewrite(v, p, matches);
                }
                if r.host_to_backend_hostname == Some(true) {
                    if *top != K::MeshGateway {
                        v.violation_at("hostToBackendHostname", "can only be set with MeshGateway");
                    }
                    if r.hostname.is_some() {
                        v.violation_at(
                            "hostToBackendHostname",
                            "cannot be set together with hostname",
                        );
                    }
                }
            }),
        },
        HttpFilterType::RequestMirror => match &f.request_mirror {
            None => v.violation_at("requestMirror", MUST_BE_DEFINED),
            Some(m) => v.field("requestMirror", |v| {
                percentage(v, "percentage", &m.percentage, false);
                let opts = TargetRefOpts {
                    allowed: &[
                        K::MeshService,
                        K::MeshServiceSubset,
                        K::MeshMultiZoneService,
                    ],
                    ..Default::default()
                };
                validate_target_ref_with(v, "backendRef", &m.backend_ref.target_ref(), &opts);
                if let Some(p) = m.backend_ref.port {
                    v.field("backendRef", |v| v.port("port", p));
                }
            }),
        },
    }
}

impl Validate for MeshHttpRouteSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(v, &self.target_ref, TOP_PROXY_KINDS, false);
        let top = top_kind(&self.target_ref);
        let to_kinds = if top == K::MeshGateway {
            ONLY_MESH
        } else {
            ROUTE_DESTINATIONS
        };
        v.field("to", |v| {
            for (i, to) in self.to.iter().enumerate() {
                v.index(i, |v| {
                    check_ref(v, &to.target_ref, to_kinds);
                    v.field("hostnames", |v| {
                        if top != K::MeshGateway {
                            if !to.hostnames.is_empty() {
                                v.violation("must not be defined");
                            }
                        } else {
                            for (j, h) in to.hostnames.iter().enumerate() {
                                if let Err(e) = check_gateway_hostname(h) {
                                    v.index(j, |v| v.violation(e));
                                }
                            }
                        }
                    });
                    v.field("rules", |v| {
                        for (j, rule) in to.rules.iter().enumerate() {
                            v.index(j, |v| check_http_rule(v, rule, &top));
                        }
                    });
                });
            }
        });
    }
}

pub fn validate_mesh_http_route(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<MeshHttpRouteSpec>(spec, "spec").map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// MeshTCPRoute
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTcpRouteSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<TcpRouteTo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRouteTo {
    #[serde(default = "TargetRef::missing")]
    pub target_ref: TargetRef,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<TcpRouteRule>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRouteRule {
    #[serde(default)]
    pub default: TcpRouteConf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRouteConf {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<BackendRef>,
}

impl Validate for MeshTcpRouteSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(v, &self.target_ref, TOP_PROXY_KINDS, false);
        let top = top_kind(&self.target_ref);
        let to_kinds = if top == K::MeshGateway {
            ONLY_MESH
        } else {
            ROUTE_DESTINATIONS
        };
        v.field("to", |v| {
            for (i, to) in self.to.iter().enumerate() {
                v.index(i, |v| {
                    check_ref(v, &to.target_ref, to_kinds);
                    v.field("rules", |v| {
                        if to.rules.is_empty() {
                            v.violation("must not be empty");
                        }
                        for (j, rule) in to.rules.iter().enumerate() {
                            v.index(j, |v| {
                                v.field("default", |v| {
                                    v.field("backendRefs", |v| {
                                        if rule.default.backend_refs.is_empty() {
                                            v.violation("must not be empty");
                                        }
                                        check_backend_refs(v, &rule.default.backend_refs);
                                    })
                                })
                            });
                        }
                    });
                });
            }
        });
    }
}

pub fn validate_mesh_tcp_route(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<MeshTcpRouteSpec>(spec, "spec").map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// MeshLoadBalancingStrategy
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshLoadBalancingStrategySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<ToItem<LoadBalancingConf>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancingConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_awareness: Option<LocalityAwareness>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    /// 2.11+: hash policies applied to the whole destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_policies: Option<Vec<HashPolicy>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityAwareness {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_zone: Option<LocalZone>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_zone: Option<CrossZone>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalZone {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_tags: Option<Vec<AffinityTag>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AffinityTag {
    #[serde(default)]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CrossZone {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<Failover>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_threshold: Option<FailoverThreshold>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Failover {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<FromZones>,
    pub to: ToZones,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FromZones {
    #[serde(default)]
    pub zones: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToZoneType {
    None,
    Only,
    Any,
    AnyExcept,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToZones {
    #[serde(rename = "type")]
    pub zone_type: ToZoneType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailoverThreshold {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<IntOrString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoadBalancerType {
    RoundRobin,
    LeastRequest,
    RingHash,
    Random,
    Maglev,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancer {
    #[serde(rename = "type")]
    pub lb_type: LoadBalancerType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_robin: Option<EmptyConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub least_request: Option<LeastRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random: Option<EmptyConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<Maglev>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyConf {}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeastRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_request_bias: Option<IntOrString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HashFunction {
    XXHash,
    MurmurHash2,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_function: Option<HashFunction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ring_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ring_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_policies: Option<Vec<HashPolicy>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Maglev {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_policies: Option<Vec<HashPolicy>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HashPolicyType {
    Header,
    Cookie,
    SourceIP,
    Connection,
    QueryParameter,
    FilterState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HashPolicy {
    #[serde(rename = "type")]
    pub policy_type: HashPolicyType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<NamedKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<CookieHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_parameter: Option<NamedKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_state: Option<FilterStateHash>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamedKey {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieHash {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionHash {
    #[serde(default, rename = "sourceIP", skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterStateHash {
    #[serde(default)]
    pub key: String,
}

fn check_hash_policies(v: &mut Validator, policies: &Option<Vec<HashPolicy>>) {
    let Some(policies) = policies else { return };
    v.field("hashPolicies", |v| {
        for (i, p) in policies.iter().enumerate() {
            v.index(i, |v| match p.policy_type {
                HashPolicyType::Header => match &p.header {
                    None => v.violation_at("header", MUST_BE_DEFINED),
                    Some(h) => v.field("header", |v| v.require_non_empty("name", &h.name)),
                },
                HashPolicyType::Cookie => match &p.cookie {
                    None => v.violation_at("cookie", MUST_BE_DEFINED),
                    Some(c) => v.field("cookie", |v| {
                        v.require_non_empty("name", &c.name);
                        duration(v, "ttl", &c.ttl);
                    }),
                },
                HashPolicyType::SourceIP | HashPolicyType::Connection => {
                    if p.connection.is_none() && p.policy_type == HashPolicyType::Connection {
                        v.violation_at("connection", MUST_BE_DEFINED);
                    }
                }
                HashPolicyType::QueryParameter => match &p.query_parameter {
                    None => v.violation_at("queryParameter", MUST_BE_DEFINED),
                    Some(q) => v.field("queryParameter", |v| v.require_non_empty("name", &q.name)),
                },
                HashPolicyType::FilterState => match &p.filter_state {
                    None => v.violation_at("filterState", MUST_BE_DEFINED),
                    Some(f) => v.field("filterState", |v| v.require_non_empty("key", &f.key)),
                },
            });
        }
    });
}

fn check_load_balancing_conf(v: &mut Validator, c: &LoadBalancingConf) {
    if let Some(la) = &c.locality_awareness {
        v.field("localityAwareness", |v| {
            if let Some(lz) = &la.local_zone
                && let Some(tags) = &lz.affinity_tags
            {
                v.field("localZone", |v| {
                    v.field("affinityTags", |v| {
                        let weighted = tags.iter().filter(|t| t.weight.is_some()).count();
                        if weighted != 0 && weighted != tags.len() {
                            v.violation("all or none affinity tags should have weight");
                        }
                        for (i, t) in tags.iter().enumerate() {
                            v.index(i, |v| v.require_non_empty("key", &t.key));
                        }
                    })
                });
            }
            if let Some(cz) = &la.cross_zone {
                v.field("crossZone", |v| {
                    v.field("failover", |v| {
                        for (i, f) in cz.failover.iter().enumerate() {
                            v.index(i, |v| {
                                if let Some(from) = &f.from
                                    && from.zones.is_empty()
                                {
                                    v.field("from", |v| {
                                        v.violation_at("zones", "must not be empty")
                                    });
                                }
                                v.field("to", |v| {
                                    let has_zones =
                                        f.to.zones.as_ref().is_some_and(|z| !z.is_empty());
                                    match f.to.zone_type {
                                        ToZoneType::Only | ToZoneType::AnyExcept if !has_zones => {
                                            v.violation_at(
                                                "zones",
                                                "must not be empty when type is Only or AnyExcept",
                                            );
                                        }
                                        ToZoneType::Any | ToZoneType::None
                                            if f.to.zones.is_some() =>
                                        {
                                            v.violation_at(
                                                "zones",
                                                "must be empty when type is Any or None",
                                            );
                                        }
                                        _ => {}
                                    }
                                });
                            });
                        }
                    });
                    if let Some(ft) = &cz.failover_threshold {
                        v.field("failoverThreshold", |v| {
                            match ft.percentage.as_ref().map(IntOrString::as_f64) {
                                None => v.violation_at("percentage", MUST_BE_DEFINED),
                                Some(None) => {
                                    v.violation_at("percentage", "must be a valid number")
                                }
                                Some(Some(p)) if p <= 0.0 || p > 100.0 => v.violation_at(
                                    "percentage",
                                    "must be greater than 0 and at most 100",
                                ),
                                Some(Some(_)) => {}
                            }
                        });
                    }
                });
            }
        });
    }
    if let Some(lb) = &c.load_balancer {
        v.field("loadBalancer", |v| {
            let others = [
                (
                    "roundRobin",
                    lb.round_robin.is_some(),
                    LoadBalancerType::RoundRobin,
                ),
                (
                    "leastRequest",
                    lb.least_request.is_some(),
                    LoadBalancerType::LeastRequest,
                ),
                (
                    "ringHash",
                    lb.ring_hash.is_some(),
                    LoadBalancerType::RingHash,
                ),
                ("random", lb.random.is_some(), LoadBalancerType::Random),
                ("maglev", lb.maglev.is_some(), LoadBalancerType::Maglev),
            ];
            for (name, set, ty) in others {
                if set && ty != lb.lb_type {
                    v.violation_at(
                        name,
                        format!("must not be defined with type {:?}", lb.lb_type),
                    );
                }
            }
            if let Some(lr) = &lb.least_request {
                v.field("leastRequest", |v| {
                    if let Some(n) = lr.choice_count
                        && n < 2
                    {
                        v.violation_at("choiceCount", "must be greater than or equal to 2");
                    }
                    if let Some(b) = &lr.active_request_bias
                        && b.as_f64().is_none_or(|x| x < 0.0)
                    {
                        v.violation_at("activeRequestBias", "must be a non-negative number");
                    }
                });
            }
            if let Some(rh) = &lb.ring_hash {
                v.field("ringHash", |v| {
                    in_range(
                        v,
                        "minRingSize",
                        rh.min_ring_size.map(f64::from),
                        1.0,
                        8_000_000.0,
                    );
                    in_range(
                        v,
                        "maxRingSize",
                        rh.max_ring_size.map(f64::from),
                        1.0,
                        8_000_000.0,
                    );
                    if let (Some(min), Some(max)) = (rh.min_ring_size, rh.max_ring_size)
                        && min > max
                    {
                        v.violation_at("minRingSize", "must be less than or equal to maxRingSize");
                    }
                    check_hash_policies(v, &rh.hash_policies);
                });
            }
            if let Some(m) = &lb.maglev {
                v.field("maglev", |v| {
                    in_range(
                        v,
                        "tableSize",
                        m.table_size.map(f64::from),
                        1.0,
                        5_000_011.0,
                    );
                    check_hash_policies(v, &m.hash_policies);
                });
            }
        });
    }
    check_hash_policies(v, &c.hash_policies);
}

impl Validate for MeshLoadBalancingStrategySpec {
    fn validate(&self, v: &mut Validator) {
        check_to_only(
            v,
            &self.target_ref,
            &self.to,
            TO_DESTINATIONS_AND_ROUTES,
            check_load_balancing_conf,
        );
    }
}

pub fn validate_mesh_load_balancing_strategy(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<MeshLoadBalancingStrategySpec>(spec, "spec").map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// MeshAccessLog
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshAccessLogSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<FromItem<AccessLogConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<ToItem<AccessLogConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleItem<AccessLogConf>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<AccessLogBackend>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessLogBackendType {
    Tcp,
    File,
    OpenTelemetry,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogBackend {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub backend_type: Option<AccessLogBackendType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpLogBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileLogBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_telemetry: Option<OtelLogBackend>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpLogBackend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<LogFormat>,
    #[serde(default)]
    pub address: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileLogBackend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<LogFormat>,
    #[serde(default)]
    pub path: String,
}

/// The OpenTelemetry backend; `body` is the user's own OTLP value and stays opaque.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtelLogBackend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Vec<JsonKeyValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogFormatType {
    Plain,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogFormat {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub format_type: Option<LogFormatType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Vec<JsonKeyValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omit_empty_values: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JsonKeyValue {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub value: String,
}

fn check_log_format(v: &mut Validator, f: &Option<LogFormat>) {
    let Some(f) = f else { return };
    v.field("format", |v| {
        let ty = match (f.format_type, f.plain.is_some(), f.json.is_some()) {
            (_, true, true) => {
                v.violation("format can only have one type defined: plain, json");
                return;
            }
            (Some(t), _, _) => t,
            (None, true, false) => LogFormatType::Plain,
            (None, false, true) => LogFormatType::Json,
            (None, false, false) => {
                v.violation("format has to be defined: plain or json");
                return;
            }
        };
        match ty {
            LogFormatType::Plain => match &f.plain {
                None => v.violation_at("plain", MUST_BE_DEFINED),
                Some(p) if p.is_empty() => v.violation_at("plain", "must not be empty"),
                Some(_) => {}
            },
            LogFormatType::Json => match &f.json {
                None => v.violation_at("json", MUST_BE_DEFINED),
                Some(items) => v.field("json", |v| {
                    if items.is_empty() {
                        v.violation("must not be empty");
                    }
                    for (i, kv) in items.iter().enumerate() {
                        v.index(i, |v| v.require_non_empty("key", &kv.key));
                    }
                }),
            },
        }
    });
}

fn check_access_log_conf(v: &mut Validator, c: &AccessLogConf) {
    let Some(backends) = &c.backends else { return };
    v.field("backends", |v| {
        for (i, b) in backends.iter().enumerate() {
            v.index(i, |v| {
                let defined = [
                    b.tcp.is_some(),
                    b.file.is_some(),
                    b.open_telemetry.is_some(),
                ]
                .iter()
                .filter(|x| **x)
                .count();
                if defined != 1 {
                    v.violation("backend must have exactly one defined: tcp, file, openTelemetry");
                }
                match b.backend_type {
                    Some(AccessLogBackendType::Tcp) if b.tcp.is_none() => {
                        v.violation_at("tcp", MUST_BE_DEFINED)
                    }
                    Some(AccessLogBackendType::File) if b.file.is_none() => {
                        v.violation_at("file", MUST_BE_DEFINED)
                    }
                    Some(AccessLogBackendType::OpenTelemetry) if b.open_telemetry.is_none() => {
                        v.violation_at("openTelemetry", MUST_BE_DEFINED)
                    }
                    _ => {}
                }
                if let Some(tcp) = &b.tcp {
                    v.field("tcp", |v| {
                        check_log_format(v, &tcp.format);
                        if tcp.address.is_empty() {
                            v.violation_at("address", "must not be empty");
                        } else if !is_host_port(&tcp.address) {
                            v.violation_at(
                                "address",
                                "must be a valid address in the form host:port",
                            );
                        }
                    });
                }
                if let Some(file) = &b.file {
                    v.field("file", |v| {
                        check_log_format(v, &file.format);
                        if file.path.is_empty() {
                            v.violation_at("path", "must not be empty");
                        }
                    });
                }
                if let Some(otel) = &b.open_telemetry {
                    v.field("openTelemetry", |v| {
                        if otel.endpoint.as_deref().unwrap_or_default().is_empty()
                            && otel.backend_ref.is_none()
                        {
                            v.violation_at("endpoint", "must not be empty");
                        }
                        for (j, a) in otel.attributes.iter().flatten().enumerate() {
                            v.field("attributes", |v| {
                                v.index(j, |v| v.require_non_empty("key", &a.key))
                            });
                        }
                    });
                }
            });
        }
    });
}

/// `host:port`, `[v6]:port` or `ip:port`, as used by TCP log backends.
fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) && super::is_address(host)
}

impl Validate for MeshAccessLogSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(v, &self.target_ref, TOP_PROXY_KINDS, true);
        let gateway = top_kind(&self.target_ref) == K::MeshGateway;
        let to_kinds = if gateway { ONLY_MESH } else { TO_DESTINATIONS };
        let sections = (&self.from[..], &self.to[..], &self.rules[..]);
        check_sections(
            v,
            sections,
            false,
            (ONLY_MESH, to_kinds),
            check_access_log_conf,
        );
    }
}

pub fn validate_mesh_access_log(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<MeshAccessLogSpec>(spec, "spec").map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// MeshFaultInjection
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshFaultInjectionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<FromItem<FaultInjectionConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<ToItem<FaultInjectionConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleItem<FaultInjectionConf>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultInjectionConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Vec<HttpFault>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortFault>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DelayFault>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_bandwidth: Option<BandwidthFault>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AbortFault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<IntOrString>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DelayFault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<IntOrString>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BandwidthFault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<IntOrString>,
}

/// `<number><unit>` with unit kbps, Mbps or Gbps (any case), e.g. `10kbps`.
fn is_bandwidth(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    ["kbps", "mbps", "gbps"].iter().any(|unit| {
        lower
            .strip_suffix(unit)
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    })
}

fn check_fault_injection_conf(v: &mut Validator, c: &FaultInjectionConf) {
    let Some(faults) = &c.http else { return };
    v.field("http", |v| {
        for (i, f) in faults.iter().enumerate() {
            v.index(i, |v| {
                if f.abort.is_none() && f.delay.is_none() && f.response_bandwidth.is_none() {
                    v.violation("must have at least one defined: abort, delay, responseBandwidth");
                }
                if let Some(a) = &f.abort {
                    v.field("abort", |v| {
                        match a.http_status {
                            None => v.violation_at("httpStatus", MUST_BE_DEFINED),
                            Some(s) if !(100..=599).contains(&s) => v.violation_at(
                                "httpStatus",
                                "must be in inclusive range [100, 599]",
                            ),
                            Some(_) => {}
                        }
                        percentage(v, "percentage", &a.percentage, true);
                    });
                }
                if let Some(d) = &f.delay {
                    v.field("delay", |v| {
                        if d.value.is_none() {
                            v.violation_at("value", MUST_BE_DEFINED);
                        }
                        duration(v, "value", &d.value);
                        percentage(v, "percentage", &d.percentage, true);
                    });
                }
                if let Some(b) = &f.response_bandwidth {
                    v.field("responseBandwidth", |v| {
                        match &b.limit {
                            None => v.violation_at("limit", MUST_BE_DEFINED),
                            Some(l) if !is_bandwidth(l) => v.violation_at(
                                "limit",
                                "has to be in kbps/mbps/gbps units, e.g. 10kbps",
                            ),
                            Some(_) => {}
                        }
                        percentage(v, "percentage", &b.percentage, true);
                    });
                }
            });
        }
    });
}

impl Validate for MeshFaultInjectionSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(v, &self.target_ref, TOP_PROXY_KINDS, true);
        let gateway = top_kind(&self.target_ref) == K::MeshGateway;
        let to_kinds = if gateway { ONLY_MESH } else { TO_DESTINATIONS };
        let sections = (&self.from[..], &self.to[..], &self.rules[..]);
        check_sections(
            v,
            sections,
            gateway,
            (FROM_CLIENTS, to_kinds),
            check_fault_injection_conf,
        );
    }
}

pub fn validate_mesh_fault_injection(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<MeshFaultInjectionSpec>(spec, "spec").map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// MeshRateLimit
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshRateLimitSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<FromItem<RateLimitConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<ToItem<RateLimitConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleItem<RateLimitConf>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalRateLimit>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalRateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<LocalHttpRateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<LocalTcpRateLimit>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalHttpRateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_rate_limit: Option<OnRateLimit>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalTcpRateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_rate: Option<Rate>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OnRateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderModifier>,
}

fn check_rate(v: &mut Validator, name: &str, rate: &Option<Rate>, disabled: bool) {
    match rate {
        None if !disabled => v.violation_at(name, MUST_BE_DEFINED),
        None => {}
        Some(r) => v.field(name, |v| {
            match r.num {
                None => v.violation_at("num", MUST_BE_DEFINED),
                Some(0) => v.violation_at("num", "must be greater than 0"),
                Some(_) => {}
            }
            match &r.interval {
                None => v.violation_at("interval", MUST_BE_DEFINED),
                Some(i) => match parse_duration(i) {
                    Err(e) => v.violation_at("interval", e.to_string()),
                    Ok(d) if d < std::time::Duration::from_millis(50) => {
                        v.violation_at("interval", "must be greater than or equal to: 50ms")
                    }
                    Ok(_) => {}
                },
            }
        }),
    }
}

fn check_rate_limit_conf(v: &mut Validator, c: &RateLimitConf) {
    let Some(local) = &c.local else {
        v.violation_at("local", MUST_BE_DEFINED);
        return;
    };
    v.field("local", |v| {
        if local.http.is_none() && local.tcp.is_none() {
            v.violation("must have at least one defined: http, tcp");
        }
        if let Some(http) = &local.http {
            v.field("http", |v| {
                check_rate(
                    v,
                    "requestRate",
                    &http.request_rate,
                    http.disabled == Some(true),
                );
                if let Some(o) = &http.on_rate_limit {
                    v.field("onRateLimit", |v| {
                        if let Some(s) = o.status
                            && !(100..=599).contains(&s)
                        {
                            v.violation_at("status", "must be in inclusive range [100, 599]");
                        }
                        if let Some(h) = &o.headers {
                            v.field("headers", |v| {
                                if h.remove.is_some() {
                                    v.violation_at("remove", "must not be defined");
                                }
                                check_header_modifier(v, h);
                            });
                        }
                    });
                }
            });
        }
        if let Some(tcp) = &local.tcp {
            v.field("tcp", |v| {
                check_rate(
                    v,
                    "connectionRate",
                    &tcp.connection_rate,
                    tcp.disabled == Some(true),
                )
            });
        }
    });
}

impl Validate for MeshRateLimitSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(v, &self.target_ref, TOP_PROXY_KINDS, true);
        let gateway = top_kind(&self.target_ref) == K::MeshGateway;
        let sections = (&self.from[..], &self.to[..], &self.rules[..]);
        check_sections(
            v,
            sections,
            gateway,
            (ONLY_MESH, ONLY_MESH),
            check_rate_limit_conf,
        );
    }
}

pub fn validate_mesh_rate_limit(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<MeshRateLimitSpec>(spec, "spec").map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// MeshTLS
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTlsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<FromItem<TlsConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleItem<TlsConf>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TlsVersion {
    TLSAuto,
    TLS10,
    TLS11,
    TLS12,
    TLS13,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsVersionRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<TlsVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<TlsVersion>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsMode {
    Permissive,
    Strict,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<TlsVersionRange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_ciphers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TlsMode>,
}

const TLS_CIPHERS: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305",
];

/// `min <= max`, where `TLSAuto` is only comparable to itself. Shared with MeshExternalService.
pub(crate) fn check_tls_version_range(v: &mut Validator, name: &str, r: &Option<TlsVersionRange>) {
    let Some(r) = r else { return };
    if let (Some(min), Some(max)) = (r.min, r.max)
        && min != TlsVersion::TLSAuto
        && max != TlsVersion::TLSAuto
        && min > max
    {
        v.field(name, |v| {
            v.violation_at("min", "min version must be lower than max")
        });
    }
}

fn check_tls_conf(v: &mut Validator, c: &TlsConf) {
    check_tls_version_range(v, "tlsVersion", &c.tls_version);
    v.field("tlsCiphers", |v| {
        let mut seen = HashSet::new();
        for (i, cipher) in c.tls_ciphers.iter().enumerate() {
            v.index(i, |v| {
                if !TLS_CIPHERS.contains(&cipher.as_str()) {
                    v.violation(format!("must be one of: {}", TLS_CIPHERS.join(", ")));
                } else if !seen.insert(cipher.as_str()) {
                    v.violation("duplicate cipher");
                }
            });
        }
    });
}

impl Validate for MeshTlsSpec {
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
        check_from(v, &self.from, ONLY_MESH, check_tls_conf);
        check_rules(v, &self.rules, check_tls_conf);
    }
}

pub fn validate_mesh_tls(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<MeshTlsSpec>(spec, "spec").map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// MeshTrace
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTraceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<TraceConf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<TraceBackend>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<TraceSampling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<TraceTag>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TraceBackendType {
    Zipkin,
    Datadog,
    OpenTelemetry,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceBackend {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub backend_type: Option<TraceBackendType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<ZipkinBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datadog: Option<DatadogBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_telemetry: Option<OtelTraceBackend>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZipkinBackend {
    #[serde(default)]
    pub url: String,
    #[serde(
        default,
        rename = "traceId128bit",
        skip_serializing_if = "Option::is_none"
    )]
    pub trace_id_128bit: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_span_context: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatadogBackend {
    #[serde(default)]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_service: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtelTraceBackend {
    #[serde(default)]
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceSampling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overall: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random: Option<IntOrString>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceTag {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<TraceHeaderTag>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceHeaderTag {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
}

fn check_trace_conf(v: &mut Validator, c: &TraceConf) {
    if let Some(backends) = &c.backends {
        v.field("backends", |v| {
            if backends.len() > 1 {
                v.violation("must have zero or one backend defined");
            }
            for (i, b) in backends.iter().enumerate() {
                v.index(i, |v| {
                    let defined = [
                        b.zipkin.is_some(),
                        b.datadog.is_some(),
                        b.open_telemetry.is_some(),
                    ]
                    .iter()
                    .filter(|x| **x)
                    .count();
                    if defined != 1 {
                        v.violation(
                            "backend must have exactly one defined: zipkin, datadog, openTelemetry",
                        );
                    }
                    match b.backend_type {
                        Some(TraceBackendType::Zipkin) if b.zipkin.is_none() => {
                            v.violation_at("zipkin", MUST_BE_DEFINED)
                        }
                        Some(TraceBackendType::Datadog) if b.datadog.is_none() => {
                            v.violation_at("datadog", MUST_BE_DEFINED)
                        }
                        Some(TraceBackendType::OpenTelemetry) if b.open_telemetry.is_none() => {
                            v.violation_at("openTelemetry", MUST_BE_DEFINED)
                        }
                        _ => {}
                    }
                    if let Some(z) = &b.zipkin {
                        v.field("zipkin", |v| {
                            if !is_http_url(&z.url) {
                                v.violation_at("url", "must be a valid url");
                            }
                            if let Some(api) = &z.api_version
                                && !["httpJson", "httpProto"].contains(&api.as_str())
                            {
                                v.violation_at("apiVersion", "must be one of: httpJson, httpProto");
                            }
                        });
                    }
                    if let Some(d) = &b.datadog {
                        v.field("datadog", |v| {
                            if !is_http_url(&d.url) {
                                v.violation_at("url", "must be a valid url");
                            }
                        });
                    }
                    if let Some(o) = &b.open_telemetry
                        && o.endpoint.is_empty()
                        && o.backend_ref.is_none()
                    {
                        v.field("openTelemetry", |v| {
                            v.violation_at("endpoint", "must not be empty")
                        });
                    }
                });
            }
        });
    }
    if let Some(s) = &c.sampling {
        v.field("sampling", |v| {
            percentage(v, "overall", &s.overall, false);
            percentage(v, "client", &s.client, false);
            percentage(v, "random", &s.random, false);
        });
    }
    if let Some(tags) = &c.tags {
        v.field("tags", |v| {
            for (i, t) in tags.iter().enumerate() {
                v.index(i, |v| {
                    v.require_non_empty("name", &t.name);
                    match (&t.literal, &t.header) {
                        (Some(_), Some(_)) | (None, None) => {
                            v.violation("tag must have exactly one defined: literal, header")
                        }
                        (None, Some(h)) => {
                            v.field("header", |v| v.require_non_empty("name", &h.name))
                        }
                        (Some(_), None) => {}
                    }
                });
            }
        });
    }
}

impl Validate for MeshTraceSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(v, &self.target_ref, TOP_PROXY_KINDS, false);
        check_default(v, &self.default, &mut check_trace_conf);
    }
}

pub fn validate_mesh_trace(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<MeshTraceSpec>(spec, "spec").map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// MeshMetric
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshMetricSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<MetricConf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<MetricSidecar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applications: Option<Vec<MetricApplication>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<MetricBackend>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSidecar {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_unused: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profiles: Option<MetricProfiles>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricProfiles {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append_profiles: Option<Vec<MetricProfile>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<MetricSelector>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<MetricSelector>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricProfileName {
    All,
    Basic,
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricProfile {
    pub name: MetricProfileName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricSelectorType {
    Prefix,
    Regex,
    Exact,
    Contains,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSelector {
    #[serde(rename = "type")]
    pub selector_type: MetricSelectorType,
    #[serde(rename = "match", default)]
    pub match_value: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricApplication {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricBackendType {
    Prometheus,
    OpenTelemetry,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricBackend {
    #[serde(rename = "type")]
    pub backend_type: MetricBackendType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_telemetry: Option<OtelMetricBackend>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrometheusTlsMode {
    Disabled,
    ProvidedTLS,
    ActiveMTLSBackend,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusTls {
    pub mode: PrometheusTlsMode,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusBackend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<PrometheusTls>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtelMetricBackend {
    #[serde(default)]
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<Value>,
}

fn check_metric_conf(v: &mut Validator, c: &MetricConf) {
    if let Some(s) = &c.sidecar
        && let Some(p) = &s.profiles
    {
        v.field("sidecar", |v| {
            v.field("profiles", |v| {
                for (name, list) in [("exclude", &p.exclude), ("include", &p.include)] {
                    for (i, sel) in list.iter().flatten().enumerate() {
                        if sel.match_value.is_empty() {
                            v.field(name, |v| {
                                v.index(i, |v| v.violation_at("match", "must not be empty"))
                            });
                        }
                    }
                }
            })
        });
    }
    if let Some(apps) = &c.applications {
        v.field("applications", |v| {
            for (i, a) in apps.iter().enumerate() {
                v.index(i, |v| {
                    match a.port {
                        None => v.violation_at("port", MUST_BE_DEFINED),
                        Some(p) => v.port("port", p),
                    }
                    if let Some(path) = &a.path
                        && !path.starts_with('/')
                    {
                        v.violation_at("path", "must be an absolute path");
                    }
                    if let Some(addr) = &a.address {
                        super::validate_address(v, "address", addr, false);
                    }
                });
            }
        });
    }
    if let Some(backends) = &c.backends {
        v.field("backends", |v| {
            for (i, b) in backends.iter().enumerate() {
                v.index(i, |v| match b.backend_type {
                    MetricBackendType::Prometheus => {
                        if b.open_telemetry.is_some() {
                            v.violation_at(
                                "openTelemetry",
                                "must not be defined with type Prometheus",
                            );
                        }
                        match &b.prometheus {
                            None => v.violation_at("prometheus", MUST_BE_DEFINED),
                            Some(p) => v.field("prometheus", |v| {
                                if let Some(port) = p.port {
                                    v.port("port", port);
                                }
                                if let Some(path) = &p.path
                                    && !path.starts_with('/')
                                {
                                    v.violation_at("path", "must be an absolute path");
                                }
                            }),
                        }
                    }
                    MetricBackendType::OpenTelemetry => {
                        if b.prometheus.is_some() {
                            v.violation_at(
                                "prometheus",
                                "must not be defined with type OpenTelemetry",
                            );
                        }
                        match &b.open_telemetry {
                            None => v.violation_at("openTelemetry", MUST_BE_DEFINED),
                            Some(o) => v.field("openTelemetry", |v| {
                                if o.endpoint.is_empty() && o.backend_ref.is_none() {
                                    v.violation_at("endpoint", "must not be empty");
                                }
                                duration_positive(v, "refreshInterval", &o.refresh_interval);
                            }),
                        }
                    }
                });
            }
        });
    }
}

impl Validate for MeshMetricSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(v, &self.target_ref, TOP_PROXY_KINDS, false);
        check_default(v, &self.default, &mut check_metric_conf);
    }
}

pub fn validate_mesh_metric(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<MeshMetricSpec>(spec, "spec").map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// MeshProxyPatch
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshProxyPatchSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<ProxyPatchConf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyPatchConf {
    #[serde(default)]
    pub append_modifications: Vec<Modification>,
}

/// One modification: exactly one of the five resource kinds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Modification {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ResourceModification>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<ResourceModification>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_filter: Option<ResourceModification>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_filter: Option<ResourceModification>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_host: Option<ResourceModification>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModificationOperation {
    Add,
    AddFirst,
    AddLast,
    AddBefore,
    AddAfter,
    Remove,
    Patch,
}

/// The Envoy-facing parts (`match`, `value`, `jsonPatches`) stay untyped JSON/YAML.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceModification {
    pub operation: ModificationOperation,
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub match_: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_patches: Option<Vec<JsonPatch>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonPatchOp {
    Add,
    Remove,
    Replace,
    Move,
    Copy,
    Test,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JsonPatch {
    pub op: JsonPatchOp,
    #[serde(default)]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

fn check_modification(v: &mut Validator, kind: &str, m: &ResourceModification) {
    use ModificationOperation as Op;
    let allowed: &[Op] = match kind {
        "networkFilter" | "httpFilter" => &[
            Op::AddFirst,
            Op::AddLast,
            Op::AddBefore,
            Op::AddAfter,
            Op::Remove,
            Op::Patch,
        ],
        _ => &[Op::Add, Op::Remove, Op::Patch],
    };
    if !allowed.contains(&m.operation) {
        v.violation_at("operation", "value is not supported");
        return;
    }
    match m.operation {
        Op::Remove => {
            if m.value.is_some() {
                v.violation_at("value", "must not be defined");
            }
            if m.json_patches.is_some() {
                v.violation_at("jsonPatches", "must not be defined");
            }
        }
        Op::Patch => match (&m.value, &m.json_patches) {
            (None, None) => v.violation("value or jsonPatches has to be defined"),
            (Some(_), Some(_)) => v.violation("only one of value or jsonPatches can be defined"),
            _ => {}
        },
        _ => {
            if m.value.as_deref().is_none_or(str::is_empty) {
                v.violation_at("value", MUST_BE_DEFINED);
            }
            if m.json_patches.is_some() {
                v.violation_at("jsonPatches", "must not be defined");
            }
        }
    }
    if matches!(m.operation, Op::AddBefore | Op::AddAfter)
        && m.match_.as_ref().and_then(|x| x.get("name")).is_none()
    {
        v.field("match", |v| {
            v.violation_at("name", "must be defined for AddBefore and AddAfter")
        });
    }
    for (i, p) in m.json_patches.iter().flatten().enumerate() {
        v.field("jsonPatches", |v| {
            v.index(i, |v| {
                if !p.path.starts_with('/') {
                    v.violation_at("path", "must be a JSON pointer starting with '/'");
                }
                match p.op {
                    JsonPatchOp::Add | JsonPatchOp::Replace | JsonPatchOp::Test
                        if p.value.is_none() =>
                    {
                        v.violation_at("value", MUST_BE_DEFINED)
                    }
                    JsonPatchOp::Move | JsonPatchOp::Copy if p.from.is_none() => {
                        v.violation_at("from", MUST_BE_DEFINED)
                    }
                    _ => {}
                }
            })
        });
    }
}

fn check_proxy_patch_conf(v: &mut Validator, c: &ProxyPatchConf) {
    v.field("appendModifications", |v| {
        if c.append_modifications.is_empty() {
            v.violation("must not be empty");
        }
        for (i, m) in c.append_modifications.iter().enumerate() {
            v.index(i, |v| {
                let kinds = [
                    ("cluster", &m.cluster),
                    ("listener", &m.listener),
                    ("networkFilter", &m.network_filter),
                    ("httpFilter", &m.http_filter),
                    ("virtualHost", &m.virtual_host),
                ];
                let defined: Vec<_> = kinds.iter().filter(|(_, x)| x.is_some()).collect();
                if defined.len() != 1 {
                    v.violation(
                        "exactly one of cluster, listener, networkFilter, httpFilter, virtualHost has to be defined",
                    );
                }
                for (name, m) in kinds {
                    if let Some(m) = m {
                        v.field(name, |v| check_modification(v, name, m));
                    }
                }
            });
        }
    });
}

impl Validate for MeshProxyPatchSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(v, &self.target_ref, TOP_PROXY_KINDS, false);
        check_default(v, &self.default, &mut check_proxy_patch_conf);
    }
}

pub fn validate_mesh_proxy_patch(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<MeshProxyPatchSpec>(spec, "spec").map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// MeshPassthrough
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshPassthroughSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<PassthroughConf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PassthroughMode {
    All,
    Matched,
    None,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PassthroughConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passthrough_mode: Option<PassthroughMode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub append_match: Vec<PassthroughMatch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PassthroughMatchType {
    Domain,
    IP,
    CIDR,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PassthroughProtocol {
    Tcp,
    Tls,
    Grpc,
    Grpcs,
    Http,
    Http2,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PassthroughMatch {
    #[serde(rename = "type")]
    pub match_type: PassthroughMatchType,
    #[serde(default)]
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<PassthroughProtocol>,
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits <= 32,
        Ok(std::net::IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

fn check_passthrough_conf(v: &mut Validator, c: &PassthroughConf) {
    let mode = c.passthrough_mode.unwrap_or(PassthroughMode::None);
    v.field("appendMatch", |v| {
        if mode != PassthroughMode::Matched && !c.append_match.is_empty() {
            v.violation("can only be defined with passthroughMode Matched");
        }
        for (i, m) in c.append_match.iter().enumerate() {
            v.index(i, |v| {
                let ok = match m.match_type {
                    PassthroughMatchType::Domain => {
                        let host = m.value.strip_prefix("*.").unwrap_or(&m.value);
                        super::is_hostname(host)
                    }
                    PassthroughMatchType::IP => m.value.parse::<std::net::IpAddr>().is_ok(),
                    PassthroughMatchType::CIDR => is_cidr(&m.value),
                };
                if m.value.is_empty() {
                    v.violation_at("value", "must not be empty");
                } else if !ok {
                    v.violation_at(
                        "value",
                        format!("{:?} is not a valid {:?}", m.value, m.match_type),
                    );
                }
                if let Some(p) = m.port {
                    v.port("port", p);
                }
            });
        }
    });
}

impl Validate for MeshPassthroughSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(
            v,
            &self.target_ref,
            &[K::Mesh, K::MeshSubset, K::Dataplane],
            false,
        );
        check_default(v, &self.default, &mut check_passthrough_conf);
    }
}

pub fn validate_mesh_passthrough(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<MeshPassthroughSpec>(spec, "spec").map(|_| ())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    type Validate = fn(&Value) -> Result<(), ValidationError>;

    #[track_caller]
    fn ok(f: Validate, spec: Value) {
        if let Err(e) = f(&spec) {
            panic!("expected valid, got {e}\nspec: {spec}");
        }
    }

    #[track_caller]
    fn err(f: Validate, spec: Value, field: &str, reason: &str) {
        let e = f(&spec).expect_err("expected a validation error");
        assert!(
            e.violations
                .iter()
                .any(|x| x.field == field && x.reason.contains(reason)),
            "expected {field}: {reason}, got {e:?}"
        );
    }

    // --- MeshTrafficPermission ---

    #[test]
    fn mtp_docs_examples() {
        ok(
            validate_mesh_traffic_permission,
            json!({
            "targetRef": {"kind": "MeshSubset", "tags": {"app": "backend"}},
            "from": [{"targetRef": {"kind": "MeshSubset", "tags": {"kuma.io/service": "frontend"}},
                      "default": {"action": "Allow"}}]}),
        );
        ok(
            validate_mesh_traffic_permission,
            json!({
            "targetRef": {"kind": "Dataplane", "labels": {"app": "backend"}},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Deny"}},
                     {"targetRef": {"kind": "MeshService", "name": "frontend"}, "default": {"action": "AllowWithShadowDeny"}}]}),
        );
        ok(
            validate_mesh_traffic_permission,
            json!({
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}),
        );
        ok(
            validate_mesh_traffic_permission,
            json!({
            "rules": [{"default": {"allow": [{"spiffeID": {"type": "Prefix", "value": "spiffe://trust-domain.mesh/"}}]}}]}),
        );
    }

    #[test]
    fn mtp_rejections() {
        err(
            validate_mesh_traffic_permission,
            json!({"targetRef": {"kind": "Mesh"}}),
            "spec.from",
            "needs at least one item",
        );
        err(
            validate_mesh_traffic_permission,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {}}]}),
            "spec.from[0].default.action",
            "must be defined",
        );
        err(
            validate_mesh_traffic_permission,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Maybe"}}]}),
            "spec.from[0].default.action",
            "unknown variant",
        );
        err(
            validate_mesh_traffic_permission,
            json!({"targetRef": {"kind": "MeshGateway", "name": "gw"},
                   "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}),
            "spec.targetRef.kind",
            "value is not supported",
        );
        err(
            validate_mesh_traffic_permission,
            json!({"from": [{"targetRef": {"kind": "MeshExternalService", "name": "x"}, "default": {"action": "Allow"}}]}),
            "spec.from[0].targetRef.kind",
            "value is not supported",
        );
        err(
            validate_mesh_traffic_permission,
            json!({"from": [{"default": {"action": "Allow"}}]}),
            "spec.from[0].targetRef.kind",
            "must be defined",
        );
        err(
            validate_mesh_traffic_permission,
            json!({"form": []}),
            "spec.form",
            "unknown field `form`",
        );
    }

    // --- MeshTimeout ---

    #[test]
    fn mesh_timeout_docs_examples() {
        ok(
            validate_mesh_timeout,
            json!({"to": [{"targetRef": {"kind": "Mesh"},
            "default": {"idleTimeout": "20s", "connectionTimeout": "2s", "http": {"requestTimeout": "2s"}}}]}),
        );
        ok(
            validate_mesh_timeout,
            json!({"targetRef": {"kind": "MeshSubset", "tags": {"app": "frontend"}},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "60s", "connectionTimeout": "2s",
                "http": {"requestTimeout": "10s", "streamIdleTimeout": "1h", "maxStreamDuration": "30m", "maxConnectionDuration": "30m"}}}],
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend", "namespace": "kuma-demo", "sectionName": "http"},
                "default": {"idleTimeout": "60s", "connectionTimeout": "1s", "http": {"requestTimeout": "5s"}}}]}),
        );
        ok(
            validate_mesh_timeout,
            json!({"targetRef": {"kind": "Dataplane", "labels": {"app": "demo-app"}, "sectionName": "http"},
            "rules": [{"default": {"idleTimeout": "1h", "connectionTimeout": "10s"}}]}),
        );
        ok(
            validate_mesh_timeout,
            json!({"targetRef": {"kind": "MeshHTTPRoute", "name": "route-to-backend-v2"},
            "to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"requestTimeout": "5s", "streamIdleTimeout": "1h"}}}]}),
        );
        ok(
            validate_mesh_timeout,
            json!({"targetRef": {"kind": "Mesh", "proxyTypes": ["Gateway"]},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "5m",
                "http": {"streamIdleTimeout": "5s", "requestHeadersTimeout": "500ms"}}}],
            "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "1h", "http": {"streamIdleTimeout": "5s"}}}]}),
        );
    }

    #[test]
    fn mesh_timeout_rejections() {
        err(
            validate_mesh_timeout,
            json!({"targetRef": {"kind": "Mesh"}}),
            "spec",
            "at least one of 'from', 'to' has to be defined",
        );
        err(
            validate_mesh_timeout,
            json!({"to": [{"targetRef": {"kind": "MeshGateway", "name": "gw"}, "default": {"idleTimeout": "1s"}}]}),
            "spec.to[0].targetRef.kind",
            "value is not supported",
        );
        err(
            validate_mesh_timeout,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {}}]}),
            "spec.to[0].default",
            "at least one timeout should be configured",
        );
        err(
            validate_mesh_timeout,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {}}}]}),
            "spec.to[0].default.http",
            "at least one timeout in this section should be configured",
        );
        err(
            validate_mesh_timeout,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"connectionTimeout": "0s"}}]}),
            "spec.to[0].default.connectionTimeout",
            "greater than zero",
        );
        err(
            validate_mesh_timeout,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "soon"}}]}),
            "spec.to[0].default.idleTimeout",
            "invalid duration",
        );
        err(
            validate_mesh_timeout,
            json!({"targetRef": {"kind": "MeshHTTPRoute", "name": "r"},
            "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "1s"}}]}),
            "spec.to[0].default.idleTimeout",
            "can't be specified when top-level TargetRef is referencing MeshHTTPRoute",
        );
        err(
            validate_mesh_timeout,
            json!({"targetRef": {"kind": "MeshGateway", "name": "gw"},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "1s"}}]}),
            "spec.from",
            "must not be defined",
        );
        err(
            validate_mesh_timeout,
            json!({"from": [{"targetRef": {"kind": "MeshSubset", "tags": {"a": "b"}}, "default": {"idleTimeout": "1s"}}]}),
            "spec.from[0].targetRef.kind",
            "value is not supported",
        );
    }

    // --- MeshRetry ---

    #[test]
    fn mesh_retry_docs_examples() {
        ok(
            validate_mesh_retry,
            json!({"targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {
                "tcp": {"maxConnectAttempt": 5},
                "http": {"numRetries": 10, "perTryTimeout": "5s", "backOff": {"baseInterval": "15s", "maxInterval": "20m"},
                    "retryOn": ["5xx", "GatewayError", "Reset", "HttpMethodGet", "503"],
                    "rateLimitedBackOff": {"maxInterval": "1m", "resetHeaders": [{"name": "retry-after", "format": "Seconds"}]},
                    "retriableResponseHeaders": [{"name": "x-retry", "type": "Exact", "value": "true"}],
                    "hostSelection": [{"predicate": "OmitPreviousHosts"}, {"predicate": "OmitPreviousPriorities", "updateFrequency": 2}],
                    "hostSelectionMaxAttempts": 3},
                "grpc": {"numRetries": 5, "perTryTimeout": "2s", "retryOn": ["Canceled", "Unavailable"]}}}]}),
        );
    }

    #[test]
    fn mesh_retry_rejections() {
        err(
            validate_mesh_retry,
            json!({"targetRef": {"kind": "Mesh"}}),
            "spec.to",
            "needs at least one item",
        );
        err(
            validate_mesh_retry,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {}}]}),
            "spec.to[0].default",
            "at least one of the 'tcp', 'http', 'grpc' must be specified",
        );
        err(
            validate_mesh_retry,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"tcp": {}}}]}),
            "spec.to[0].default.tcp",
            "must not be empty",
        );
        err(
            validate_mesh_retry,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"backOff": {}}}}]}),
            "spec.to[0].default.http.backOff",
            "must not be empty",
        );
        err(
            validate_mesh_retry,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"retryOn": ["5xx", "Sometimes"]}}}]}),
            "spec.to[0].default.http.retryOn[1]",
            "unknown item 'Sometimes'",
        );
        err(
            validate_mesh_retry,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"grpc": {"retryOn": ["5xx"]}}}]}),
            "spec.to[0].default.grpc.retryOn[0]",
            "unknown item '5xx'",
        );
        err(
            validate_mesh_retry,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"hostSelection": [{"predicate": "OmitHostsWithTags"}]}}}]}),
            "spec.to[0].default.http.hostSelection[0].tags",
            "must be defined",
        );
        err(
            validate_mesh_retry,
            json!({"targetRef": {"kind": "MeshGateway", "name": "gw"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "b"}, "default": {"tcp": {"maxConnectAttempt": 1}}}]}),
            "spec.to[0].targetRef.kind",
            "value is not supported",
        );
    }

    // --- MeshCircuitBreaker ---

    #[test]
    fn mesh_circuit_breaker_docs_examples() {
        ok(
            validate_mesh_circuit_breaker,
            json!({"targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {
                "connectionLimits": {"maxConnections": 2, "maxPendingRequests": 8, "maxRetries": 2, "maxRequests": 2},
                "outlierDetection": {"disabled": false, "interval": "5s", "baseEjectionTime": "30s", "maxEjectionPercent": 20,
                    "splitExternalAndLocalErrors": true, "healthyPanicThreshold": "60",
                    "detectors": {"totalFailures": {"consecutive": 10}, "gatewayFailures": {"consecutive": 10},
                        "localOriginFailures": {"consecutive": 10},
                        "successRate": {"minimumHosts": 5, "requestVolume": 10, "standardDeviationFactor": "1.9"},
                        "failurePercentage": {"requestVolume": 10, "minimumHosts": 5, "threshold": 85}}}}}]}),
        );
        ok(
            validate_mesh_circuit_breaker,
            json!({"targetRef": {"kind": "Dataplane", "labels": {"app": "backend"}},
            "rules": [{"default": {"connectionLimits": {"maxConnections": 1024}}}]}),
        );
    }

    #[test]
    fn mesh_circuit_breaker_rejections() {
        err(
            validate_mesh_circuit_breaker,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {}}]}),
            "spec.to[0].default",
            "at least one of 'connectionLimits', 'outlierDetection'",
        );
        err(
            validate_mesh_circuit_breaker,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"outlierDetection": {"maxEjectionPercent": 120}}}]}),
            "spec.to[0].default.outlierDetection.maxEjectionPercent",
            "must be in inclusive range [0, 100]",
        );
        err(
            validate_mesh_circuit_breaker,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"connectionLimits": {"maxConnections": 0}}}]}),
            "spec.to[0].default.connectionLimits.maxConnections",
            "must be greater than 0",
        );
        err(
            validate_mesh_circuit_breaker,
            json!({"to": [{"targetRef": {"kind": "MeshSubset", "tags": {"a": "b"}},
            "default": {"connectionLimits": {"maxConnections": 1}}}]}),
            "spec.to[0].targetRef.kind",
            "value is not supported",
        );
    }

    // --- MeshHealthCheck ---

    #[test]
    fn mesh_health_check_docs_examples() {
        ok(
            validate_mesh_health_check,
            json!({"targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {
                "interval": "10s", "timeout": "2s", "unhealthyThreshold": 3, "healthyThreshold": 1,
                "failTrafficOnPanic": true, "noTrafficInterval": "1s", "healthyPanicThreshold": 0,
                "reuseConnection": true,
                "tcp": {"disabled": true, "send": "Zm9v", "receive": ["YmFy", "YmF6"]},
                "http": {"path": "/health", "expectedStatuses": [200, 201],
                    "requestHeadersToAdd": {"set": [{"name": "Content-Type", "value": "application/json"}],
                                            "add": [{"name": "Accept", "value": "application/json"}]}},
                "grpc": {"serviceName": "", "authority": ""}}}]}),
        );
    }

    #[test]
    fn mesh_health_check_rejections() {
        err(
            validate_mesh_health_check,
            json!({}),
            "spec.to",
            "needs at least one item",
        );
        err(
            validate_mesh_health_check,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"interval": "0s"}}]}),
            "spec.to[0].default.interval",
            "greater than zero",
        );
        err(
            validate_mesh_health_check,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"tcp": {"send": "not base64!"}}}]}),
            "spec.to[0].default.tcp.send",
            "base64",
        );
        err(
            validate_mesh_health_check,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"expectedStatuses": [200, 700]}}}]}),
            "spec.to[0].default.http.expectedStatuses[1]",
            "must be in inclusive range [100, 599]",
        );
        err(
            validate_mesh_health_check,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"healthyThreshold": 0}}]}),
            "spec.to[0].default.healthyThreshold",
            "must be greater than 0",
        );
    }

    // --- MeshHTTPRoute ---

    fn http_route_example() -> Value {
        json!({"targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend", "namespace": "kuma-demo", "sectionName": "http"},
                "rules": [{
                    "matches": [{"path": {"type": "PathPrefix", "value": "/v2"}, "method": "GET",
                        "headers": [{"type": "Exact", "name": "x-version", "value": "v2"}, {"type": "Present", "name": "x-canary"}],
                        "queryParams": [{"type": "Exact", "name": "v", "value": "2"}]}],
                    "default": {
                        "filters": [
                            {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-custom", "value": "xyz"}], "remove": ["x-remove"]}},
                            {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}},
                            {"type": "RequestMirror", "requestMirror": {"percentage": 30, "backendRef": {"kind": "MeshService", "name": "backend-mirror", "port": 3001}}}],
                        "backendRefs": [{"kind": "MeshService", "name": "backend-v2", "namespace": "kuma-demo", "port": 3001, "weight": 100}]}}]}]})
    }

    #[test]
    fn mesh_http_route_docs_examples() {
        ok(validate_mesh_http_route, http_route_example());
        ok(
            validate_mesh_http_route,
            json!({"targetRef": {"kind": "MeshSubset", "tags": {"app": "frontend"}},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                "rules": [{"matches": [{"path": {"type": "Exact", "value": "/"}}],
                    "default": {"backendRefs": [{"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": "v2"}, "weight": 10}]}}]}]}),
        );
        ok(
            validate_mesh_http_route,
            json!({"targetRef": {"kind": "MeshGateway", "name": "edge-gateway"},
            "to": [{"targetRef": {"kind": "Mesh"}, "hostnames": ["example.com", "*.example.org"],
                "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "default": {"backendRefs": [{"kind": "MeshService", "name": "demo-app_kuma-demo_svc_5000"}]}},
                    {"matches": [{"path": {"type": "Exact", "value": "/old"}}],
                    "default": {"filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301, "hostname": "new.example.com"}}]}}]}]}),
        );
    }

    #[test]
    fn mesh_http_route_rejections() {
        let f = validate_mesh_http_route;
        let mut bad = http_route_example();
        bad["to"][0]["rules"][0]["matches"][0]["path"]["value"] = json!("v2/");
        err(
            f,
            bad.clone(),
            "spec.to[0].rules[0].matches[0].path.value",
            "must be an absolute path",
        );
        err(
            f,
            bad,
            "spec.to[0].rules[0].matches[0].path.value",
            "does not need a trailing slash",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "rules": []}]}),
            "spec.to[0].targetRef.kind",
            "value is not supported",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "MeshService", "name": "b"}, "hostnames": ["a.com"]}]}),
            "spec.to[0].hostnames",
            "must not be defined",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "MeshService", "name": "b"}, "rules": [{"matches": [{"path": {"type": "Exact", "value": "/"}}],
            "default": {"filters": [{"type": "RequestHeaderModifier"}]}}]}]}),
            "spec.to[0].rules[0].default.filters[0].requestHeaderModifier",
            "must be defined",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "MeshService", "name": "b"}, "rules": [{"matches": [{"path": {"type": "Exact", "value": "/"}}],
            "default": {"backendRefs": [{"kind": "Mesh"}]}}]}]}),
            "spec.to[0].rules[0].default.backendRefs[0].kind",
            "value is not supported",
        );
        err(
            f,
            json!({"targetRef": {"kind": "MeshGateway", "name": "gw"}, "to": [{"targetRef": {"kind": "Mesh"},
            "rules": [{"matches": [{"path": {"type": "Exact", "value": "/"}}], "default": {}}]}]}),
            "spec.to[0].rules[0].default.backendRefs",
            "must not be empty",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "MeshService", "name": "b"}, "rules": [{"matches": [{"method": "FETCH"}], "default": {}}]}]}),
            "spec.to[0].rules[0].matches[0].method",
            "unknown variant",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "MeshService", "name": "b"}, "rules": [{"matches": [{"path": {"type": "Exact", "value": "/a"}}],
            "default": {"filters": [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/b"}}}]}}]}]}),
            "spec.to[0].rules[0].default.filters[0].urlRewrite.path.replacePrefixMatch",
            "can only appear if all matches match a path prefix",
        );
    }

    // --- MeshTCPRoute ---

    #[test]
    fn mesh_tcp_route_docs_examples() {
        ok(
            validate_mesh_tcp_route,
            json!({"targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                "rules": [{"default": {"backendRefs": [
                    {"kind": "MeshService", "name": "backend-v1", "port": 3001, "weight": 90},
                    {"kind": "MeshService", "name": "backend-v2", "port": 3001, "weight": 10}]}}]}]}),
        );
        ok(
            validate_mesh_tcp_route,
            json!({"targetRef": {"kind": "MeshGateway", "name": "edge"},
            "to": [{"targetRef": {"kind": "Mesh"}, "rules": [{"default": {"backendRefs": [{"kind": "MeshService", "name": "redis"}]}}]}]}),
        );
    }

    #[test]
    fn mesh_tcp_route_rejections() {
        err(
            validate_mesh_tcp_route,
            json!({"to": [{"targetRef": {"kind": "MeshService", "name": "b"}, "rules": [{"default": {}}]}]}),
            "spec.to[0].rules[0].default.backendRefs",
            "must not be empty",
        );
        err(
            validate_mesh_tcp_route,
            json!({"to": [{"targetRef": {"kind": "MeshService", "name": "b"},
            "rules": [{"default": {"backendRefs": [{"kind": "MeshService", "name": "x", "port": 70000}]}}]}]}),
            "spec.to[0].rules[0].default.backendRefs[0].port",
            "port must be in the range [1, 65535]",
        );
        err(
            validate_mesh_tcp_route,
            json!({"to": [{"targetRef": {"kind": "MeshService", "name": "b"}}]}),
            "spec.to[0].rules",
            "must not be empty",
        );
    }

    // --- MeshLoadBalancingStrategy ---

    #[test]
    fn mesh_load_balancing_strategy_docs_examples() {
        ok(
            validate_mesh_load_balancing_strategy,
            json!({"targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {
                "localityAwareness": {
                    "localZone": {"affinityTags": [{"key": "k8s.io/node", "weight": 9000}, {"key": "k8s.io/az", "weight": 9}]},
                    "crossZone": {"failover": [
                        {"from": {"zones": ["zone-1"]}, "to": {"type": "Only", "zones": ["zone-2"]}},
                        {"to": {"type": "AnyExcept", "zones": ["zone-3"]}},
                        {"to": {"type": "Any"}}],
                        "failoverThreshold": {"percentage": 70}}},
                "loadBalancer": {"type": "RingHash", "ringHash": {"hashFunction": "MurmurHash2", "minRingSize": 64, "maxRingSize": 1024,
                    "hashPolicies": [{"type": "Header", "header": {"name": "x-header"}, "terminal": true},
                                     {"type": "Connection", "connection": {"sourceIP": true}}]}}}}]}),
        );
        ok(
            validate_mesh_load_balancing_strategy,
            json!({"to": [{"targetRef": {"kind": "Mesh"},
            "default": {"localityAwareness": {"disabled": true}, "loadBalancer": {"type": "LeastRequest", "leastRequest": {"choiceCount": 4}}}}]}),
        );
    }

    #[test]
    fn mesh_load_balancing_strategy_rejections() {
        let f = validate_mesh_load_balancing_strategy;
        err(f, json!({}), "spec.to", "needs at least one item");
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"localityAwareness": {"crossZone": {"failover": [{"to": {"type": "Only"}}]}}}}]}),
            "spec.to[0].default.localityAwareness.crossZone.failover[0].to.zones",
            "must not be empty",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"localityAwareness": {"localZone": {"affinityTags": [{"key": "a", "weight": 1}, {"key": "b"}]}}}}]}),
            "spec.to[0].default.localityAwareness.localZone.affinityTags",
            "all or none affinity tags should have weight",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"loadBalancer": {"type": "RingHash", "ringHash": {"minRingSize": 9000000}}}}]}),
            "spec.to[0].default.loadBalancer.ringHash.minRingSize",
            "must be in inclusive range",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"loadBalancer": {"type": "Random", "maglev": {}}}}]}),
            "spec.to[0].default.loadBalancer.maglev",
            "must not be defined with type Random",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"loadBalancer": {"type": "Fastest"}}}]}),
            "spec.to[0].default.loadBalancer.type",
            "unknown variant",
        );
    }

    // --- MeshAccessLog ---

    #[test]
    fn mesh_access_log_docs_examples() {
        ok(
            validate_mesh_access_log,
            json!({"targetRef": {"kind": "Mesh"},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"backends": [{"type": "File", "file": {"path": "/dev/stdout",
                "format": {"type": "Plain", "plain": "[%START_TIME%] %KUMA_MESH% %KUMA_SOURCE_SERVICE%"}}}]}}],
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {"backends": [
                {"type": "Tcp", "tcp": {"address": "127.0.0.1:5000", "format": {"type": "Json", "omitEmptyValues": true,
                    "json": [{"key": "start_time", "value": "%START_TIME%"}]}}},
                {"type": "OpenTelemetry", "openTelemetry": {"endpoint": "otel-collector:4317",
                    "attributes": [{"key": "mesh", "value": "%KUMA_MESH%"}],
                    "body": {"kvlistValue": {"values": [{"key": "mesh", "value": {"stringValue": "%KUMA_MESH%"}}]}}}}]}}]}),
        );
        ok(
            validate_mesh_access_log,
            json!({"targetRef": {"kind": "Dataplane", "labels": {"app": "web"}},
            "rules": [{"default": {"backends": [{"file": {"path": "/tmp/access.log"}}]}}]}),
        );
    }

    #[test]
    fn mesh_access_log_rejections() {
        let f = validate_mesh_access_log;
        err(
            f,
            json!({"targetRef": {"kind": "Mesh"}}),
            "spec",
            "at least one of 'from', 'to' has to be defined",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"backends": [{"type": "Tcp", "tcp": {"address": "nowhere"}}]}}]}),
            "spec.to[0].default.backends[0].tcp.address",
            "host:port",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"backends": [{"type": "File"}]}}]}),
            "spec.to[0].default.backends[0].file",
            "must be defined",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"backends": [{"file": {"path": "/x", "format": {"plain": "a", "json": []}}}]}}]}),
            "spec.to[0].default.backends[0].file.format",
            "format can only have one type defined",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"backends": [{"file": {"path": "/x", "fmt": {}}}]}}]}),
            "spec.to[0].default.backends[0].file.fmt",
            "unknown field `fmt`",
        );
    }

    // --- MeshFaultInjection ---

    #[test]
    fn mesh_fault_injection_docs_examples() {
        ok(
            validate_mesh_fault_injection,
            json!({"targetRef": {"kind": "MeshService", "name": "backend"},
            "from": [{"targetRef": {"kind": "MeshSubset", "tags": {"kuma.io/service": "frontend"}},
                "default": {"http": [
                    {"abort": {"httpStatus": 500, "percentage": 50}},
                    {"delay": {"value": "5s", "percentage": "50.5"}},
                    {"responseBandwidth": {"limit": "50mbps", "percentage": 50}}]}}]}),
        );
        ok(
            validate_mesh_fault_injection,
            json!({"targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                "default": {"http": [{"abort": {"httpStatus": 503, "percentage": 10}}]}}]}),
        );
    }

    #[test]
    fn mesh_fault_injection_rejections() {
        let f = validate_mesh_fault_injection;
        err(
            f,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {"http": [{"abort": {"httpStatus": 900, "percentage": 50}}]}}]}),
            "spec.from[0].default.http[0].abort.httpStatus",
            "must be in inclusive range [100, 599]",
        );
        err(
            f,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {"http": [{"delay": {"value": "5s", "percentage": 150}}]}}]}),
            "spec.from[0].default.http[0].delay.percentage",
            "must be in inclusive range [0, 100]",
        );
        err(
            f,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {"http": [{"responseBandwidth": {"limit": "fast", "percentage": 1}}]}}]}),
            "spec.from[0].default.http[0].responseBandwidth.limit",
            "kbps",
        );
        err(
            f,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {"http": [{"abort": {"httpStatus": 500}}]}}]}),
            "spec.from[0].default.http[0].abort.percentage",
            "must be defined",
        );
    }

    // --- MeshRateLimit ---

    #[test]
    fn mesh_rate_limit_docs_examples() {
        ok(
            validate_mesh_rate_limit,
            json!({"targetRef": {"kind": "MeshSubset", "proxyTypes": ["Sidecar"], "tags": {"k8s.kuma.io/namespace": "mesh-a"}},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"local": {
                "http": {"requestRate": {"num": 1, "interval": "5s"},
                    "onRateLimit": {"status": 423, "headers": {"set": [{"name": "x-kuma-rate-limited", "value": "true"}]}}},
                "tcp": {"connectionRate": {"num": 5, "interval": "10s"}}}}}]}),
        );
        ok(
            validate_mesh_rate_limit,
            json!({"targetRef": {"kind": "MeshGateway", "name": "edge"},
            "to": [{"targetRef": {"kind": "Mesh"}, "default": {"local": {"http": {"disabled": true}}}}]}),
        );
    }

    #[test]
    fn mesh_rate_limit_rejections() {
        let f = validate_mesh_rate_limit;
        err(
            f,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {"local": {"tcp": {"connectionRate": {"num": 5, "interval": "10ms"}}}}}]}),
            "spec.from[0].default.local.tcp.connectionRate.interval",
            "50ms",
        );
        err(
            f,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {"local": {"http": {}}}}]}),
            "spec.from[0].default.local.http.requestRate",
            "must be defined",
        );
        err(
            f,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {}}]}),
            "spec.from[0].default.local",
            "must be defined",
        );
        err(
            f,
            json!({"from": [{"targetRef": {"kind": "MeshService", "name": "x"}, "default": {"local": {"http": {"disabled": true}}}}]}),
            "spec.from[0].targetRef.kind",
            "value is not supported",
        );
    }

    // --- MeshTLS ---

    #[test]
    fn mesh_tls_docs_examples() {
        ok(
            validate_mesh_tls,
            json!({"targetRef": {"kind": "Mesh"},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {
                "tlsVersion": {"min": "TLS13", "max": "TLS13"},
                "tlsCiphers": ["ECDHE-ECDSA-AES256-GCM-SHA384"], "mode": "Strict"}}]}),
        );
        ok(
            validate_mesh_tls,
            json!({"targetRef": {"kind": "Dataplane", "labels": {"app": "legacy"}},
            "rules": [{"default": {"mode": "Permissive"}}]}),
        );
    }

    #[test]
    fn mesh_tls_rejections() {
        let f = validate_mesh_tls;
        err(
            f,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {"tlsVersion": {"min": "TLS13", "max": "TLS12"}}}]}),
            "spec.from[0].default.tlsVersion.min",
            "min version must be lower than max",
        );
        err(
            f,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {"tlsCiphers": ["RC4"]}}]}),
            "spec.from[0].default.tlsCiphers[0]",
            "must be one of",
        );
        err(
            f,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {"mode": "Lax"}}]}),
            "spec.from[0].default.mode",
            "unknown variant",
        );
        err(
            f,
            json!({"targetRef": {"kind": "MeshGateway", "name": "gw"}, "from": [{"targetRef": {"kind": "Mesh"}, "default": {}}]}),
            "spec.targetRef.kind",
            "value is not supported",
        );
        err(f, json!({}), "spec.from", "needs at least one item");
    }

    // --- MeshTrace ---

    #[test]
    fn mesh_trace_docs_examples() {
        ok(
            validate_mesh_trace,
            json!({"targetRef": {"kind": "Mesh"}, "default": {
            "tags": [{"name": "team", "literal": "core"}, {"name": "env", "header": {"name": "x-env", "default": "prod"}}],
            "sampling": {"overall": 80, "random": 60, "client": "40"},
            "backends": [{"type": "Zipkin", "zipkin": {"url": "http://jaeger-collector:9411/api/v2/spans", "apiVersion": "httpJson"}}]}}),
        );
        ok(
            validate_mesh_trace,
            json!({"default": {"backends": [{"type": "OpenTelemetry", "openTelemetry": {"endpoint": "otel-collector:4317"}}]}}),
        );
        ok(
            validate_mesh_trace,
            json!({"default": {"backends": [{"type": "Datadog", "datadog": {"url": "http://127.0.0.1:8126", "splitService": true}}]}}),
        );
    }

    #[test]
    fn mesh_trace_rejections() {
        let f = validate_mesh_trace;
        err(
            f,
            json!({"targetRef": {"kind": "Mesh"}}),
            "spec.default",
            "must be defined",
        );
        err(
            f,
            json!({"default": {"backends": [{"zipkin": {"url": "http://a:1"}}, {"zipkin": {"url": "http://b:1"}}]}}),
            "spec.default.backends",
            "must have zero or one backend defined",
        );
        err(
            f,
            json!({"default": {"sampling": {"overall": 101}}}),
            "spec.default.sampling.overall",
            "must be in inclusive range [0, 100]",
        );
        err(
            f,
            json!({"default": {"tags": [{"name": "t"}]}}),
            "spec.default.tags[0]",
            "exactly one defined: literal, header",
        );
        err(
            f,
            json!({"default": {"backends": [{"type": "Zipkin", "zipkin": {"url": "jaeger:9411"}}]}}),
            "spec.default.backends[0].zipkin.url",
            "must be a valid url",
        );
    }

    // --- MeshMetric ---

    #[test]
    fn mesh_metric_docs_examples() {
        ok(
            validate_mesh_metric,
            json!({"targetRef": {"kind": "Mesh"}, "default": {
            "sidecar": {"includeUnused": false, "profiles": {"appendProfiles": [{"name": "Basic"}],
                "exclude": [{"type": "Regex", "match": "envoy_cluster_.*"}], "include": [{"type": "Prefix", "match": "envoy_http_"}]}},
            "applications": [{"name": "backend", "path": "/metrics", "port": 8888, "address": "127.0.0.1"}],
            "backends": [{"type": "Prometheus", "prometheus": {"port": 5670, "path": "/metrics", "tls": {"mode": "ActiveMTLSBackend"}}},
                         {"type": "OpenTelemetry", "openTelemetry": {"endpoint": "otel-collector.observability.svc:4317", "refreshInterval": "30s"}}]}}),
        );
    }

    #[test]
    fn mesh_metric_rejections() {
        let f = validate_mesh_metric;
        err(
            f,
            json!({"default": {"backends": [{"type": "Prometheus"}]}}),
            "spec.default.backends[0].prometheus",
            "must be defined",
        );
        err(
            f,
            json!({"default": {"applications": [{"port": 0}]}}),
            "spec.default.applications[0].port",
            "port must be in the range",
        );
        err(
            f,
            json!({"default": {"sidecar": {"profiles": {"appendProfiles": [{"name": "Everything"}]}}}}),
            "spec.default.sidecar.profiles.appendProfiles[0].name",
            "unknown variant",
        );
        err(
            f,
            json!({"default": {"backends": [{"type": "OpenTelemetry", "openTelemetry": {"endpoint": "x:4317", "refreshInterval": "0s"}}]}}),
            "spec.default.backends[0].openTelemetry.refreshInterval",
            "greater than zero",
        );
    }

    // --- MeshProxyPatch ---

    #[test]
    fn mesh_proxy_patch_docs_examples() {
        ok(
            validate_mesh_proxy_patch,
            json!({"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {"appendModifications": [
            {"cluster": {"operation": "Patch", "match": {"name": "demo-app_kuma-demo_svc_5000", "origin": "outbound"},
                "value": "connectTimeout: 10s\n"}},
            {"httpFilter": {"operation": "Patch", "match": {"name": "envoy.filters.http.router", "origin": "inbound"},
                "jsonPatches": [{"op": "add", "path": "/dynamicStats", "value": false}]}},
            {"networkFilter": {"operation": "AddFirst", "match": {"origin": "inbound", "listenerTags": {"kuma.io/service": "backend"}},
                "value": "name: envoy.filters.network.local_ratelimit\n"}},
            {"listener": {"operation": "Remove", "match": {"origin": "inbound"}}},
            {"virtualHost": {"operation": "Add", "value": "name: vh\ndomains: [\"*\"]\n"}}]}}),
        );
    }

    #[test]
    fn mesh_proxy_patch_rejections() {
        let f = validate_mesh_proxy_patch;
        err(
            f,
            json!({"default": {"appendModifications": []}}),
            "spec.default.appendModifications",
            "must not be empty",
        );
        err(
            f,
            json!({"default": {"appendModifications": [{"cluster": {"operation": "Add"}}]}}),
            "spec.default.appendModifications[0].cluster.value",
            "must be defined",
        );
        err(
            f,
            json!({"default": {"appendModifications": [{"cluster": {"operation": "AddFirst", "value": "x: y"}}]}}),
            "spec.default.appendModifications[0].cluster.operation",
            "value is not supported",
        );
        err(
            f,
            json!({"default": {"appendModifications": [{"cluster": {"operation": "Patch"}}]}}),
            "spec.default.appendModifications[0].cluster",
            "value or jsonPatches has to be defined",
        );
        err(
            f,
            json!({"default": {"appendModifications": [{}]}}),
            "spec.default.appendModifications[0]",
            "exactly one of cluster",
        );
    }

    // --- MeshPassthrough ---

    #[test]
    fn mesh_passthrough_docs_examples() {
        ok(
            validate_mesh_passthrough,
            json!({"targetRef": {"kind": "Mesh"}, "default": {"passthroughMode": "Matched", "appendMatch": [
            {"type": "Domain", "value": "httpbin.org", "protocol": "tls", "port": 443},
            {"type": "IP", "value": "10.240.15.39", "protocol": "tcp", "port": 8888},
            {"type": "CIDR", "value": "10.250.0.0/16", "protocol": "tcp", "port": 10000},
            {"type": "Domain", "value": "*.wikipedia.org", "protocol": "tls", "port": 443},
            {"type": "Domain", "value": "api.example.com", "protocol": "http", "port": 80}]}}),
        );
        ok(
            validate_mesh_passthrough,
            json!({"default": {"passthroughMode": "All"}}),
        );
    }

    #[test]
    fn mesh_passthrough_rejections() {
        let f = validate_mesh_passthrough;
        err(
            f,
            json!({"default": {"passthroughMode": "Matched", "appendMatch": [{"type": "CIDR", "value": "10.0.0.0/40"}]}}),
            "spec.default.appendMatch[0].value",
            "is not a valid CIDR",
        );
        err(
            f,
            json!({"default": {"passthroughMode": "Matched", "appendMatch": [{"type": "IP", "value": "1.2.3.4", "port": 0}]}}),
            "spec.default.appendMatch[0].port",
            "port must be in the range",
        );
        err(
            f,
            json!({"default": {"passthroughMode": "Matched", "appendMatch": [{"type": "Domain", "value": "a.com", "protocol": "udp"}]}}),
            "spec.default.appendMatch[0].protocol",
            "unknown variant",
        );
        err(
            f,
            json!({"targetRef": {"kind": "MeshService", "name": "x"}, "default": {}}),
            "spec.targetRef.kind",
            "value is not supported",
        );
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let e = validate_mesh_timeout(&json!({
            "targetRef": {"kind": "MeshGateway"},
            "to": [{"targetRef": {"kind": "Mesh"}, "default": {"connectionTimeout": "0s"}},
                   {"targetRef": {"kind": "Foo"}, "default": {"idleTimeout": "1s"}}]}))
        .unwrap_err();
        let fields: Vec<_> = e.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "spec.targetRef.name",
                "spec.to[0].default.connectionTimeout",
                "spec.to[1].targetRef.kind"
            ]
        );
    }
}
