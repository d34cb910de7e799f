//! The rules plugins read, built from the matched policies (least specific first):
//! - [`to_rule`]: the conf for calls to one destination service, from `to[]` entries
//!   (Kuma's legacy `ToRules`, which a `kuma.io/service` destination reads);
//! - [`inbound_rules`] and [`catch_all`]: an inbound's rules from `rules[]` (2.10+), and from
//!   `from[]` for the types Kuma reads as rules (their `from[].targetRef` is not used);
//! - [`single_item`]: one conf for the whole proxy, from `default`.

use std::collections::BTreeMap;

use model::labels::SERVICE_TAG;
use model::specs::targetref::{TargetRef, TargetRefKind};
use serde::Serialize;
use serde_json::Value;

use super::matching::Matched;
use super::merge::{merge, merge_all};
use crate::context::MeshContext;

/// A policy (and which of its entries) a rule came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The entry's index in the section it came from.
    pub rule_index: usize,
}

/// A merged conf and where it came from, the winner last.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub conf: Value,
    pub origins: Vec<Origin>,
}

/// One inbound rule as written: its match (none for a catch-all) and conf.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundRule {
    pub matches: Option<Value>,
    pub conf: Value,
    pub origin: Origin,
}

fn origin(m: &Matched<'_>, rule_index: usize) -> Origin {
    Origin {
        name: m.policy.name.clone(),
        labels: m.policy.labels.clone(),
        rule_index,
    }
}

/// The entries of a policy's `section` (`to`, `from`, `rules`), none when it has none.
pub(crate) fn entries<'v>(spec: &'v Value, section: &str) -> &'v [Value] {
    spec.get(section)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn entry_target(entry: &Value) -> Option<TargetRef> {
    serde_json::from_value(entry.get("targetRef")?.clone()).ok()
}

/// Whether a `to[].targetRef` covers calls to `service` as a `kuma.io/service` subset does:
/// `Mesh` everything, a service (or a subset of nothing but the service tag) that service.
fn covers(target: &TargetRef, service: &str) -> bool {
    let only_service = |tags: &BTreeMap<String, String>| {
        tags.iter().all(|(k, v)| k == SERVICE_TAG && v == service)
    };
    match target.kind {
        TargetRefKind::Mesh => true,
        TargetRefKind::MeshService => target.name_str() == service,
        TargetRefKind::MeshSubset => only_service(&target.tags),
        TargetRefKind::MeshServiceSubset => {
            target.name_str() == service && only_service(&target.tags)
        }
        _ => false,
    }
}

fn dedup_by_policy(origins: Vec<Origin>) -> Vec<Origin> {
    let mut out: Vec<Origin> = Vec::new();
    for o in origins {
        if !out.iter().any(|e| e.name == o.name) {
            out.push(o);
        }
    }
    out
}

/// The merged conf of every `to[]` entry that covers `service`, in policy order and then
/// entry order. A policy with a `to[]` entry for a MeshHTTPRoute is left out entirely, as
/// Kuma's legacy rules do (its route rules apply per route).
pub fn to_rule(matched: &[Matched<'_>], service: &str) -> Option<Rule> {
    to_rule_where(matched, |target| covers(target, service))
}

/// [`to_rule`] of the `to[]` entries whose `targetRef` `keep` accepts (a gateway listener's
/// conf for the whole mesh, say).
pub fn to_rule_where(matched: &[Matched<'_>], keep: impl Fn(&TargetRef) -> bool) -> Option<Rule> {
    let mut confs = Vec::new();
    let mut origins = Vec::new();
    for m in matched {
        let to = entries(&m.policy.spec, "to");
        let routed = to
            .iter()
            .any(|e| entry_target(e).is_some_and(|t| t.kind == TargetRefKind::MeshHTTPRoute));
        if routed {
            continue;
        }
        for (i, entry) in to.iter().enumerate() {
            let (Some(target), Some(conf)) = (entry_target(entry), entry.get("default")) else {
                continue;
            };
            if keep(&target) {
                confs.push(conf.clone());
                origins.push(origin(m, i));
            }
        }
    }
    Some(Rule {
        conf: merge_all(confs)?,
        origins: dedup_by_policy(origins),
    })
}

/// One MeshHTTPRoute rule for calls to a service, after merging: its `matches` and its
/// `default` (filters and backendRefs), and the policy whose rule won.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteRule {
    pub matches: Value,
    pub conf: Value,
    pub origin: Origin,
}

/// The MeshHTTPRoute rules for calls to `service`, as Kuma merges them (`mergeValuesByKey`):
/// every covering `to[]` entry's rules, the most specific policy's first in the order written;
/// rules with equal `matches` are one rule whose `default` is merged, the more specific
/// policy's fields winning (lists replaced whole).
pub fn http_route_rules(matched: &[Matched<'_>], service: &str) -> Vec<RouteRule> {
    route_rules_where(matched, |target, _| covers(target, service))
}

/// [`http_route_rules`] of the `to[]` entries `keep` accepts (by their `targetRef` and the
/// entry itself), e.g. a gateway's routes for one hostname.
pub fn route_rules_where(
    matched: &[Matched<'_>],
    keep: impl Fn(&TargetRef, &Value) -> bool,
) -> Vec<RouteRule> {
    let mut merged: Vec<RouteRule> = Vec::new();
    for m in matched {
        for (i, entry) in entries(&m.policy.spec, "to").iter().enumerate() {
            if !entry_target(entry).is_some_and(|t| keep(&t, entry)) {
                continue;
            }
            // Reversed in, reversed out: a policy's own rules keep the order written.
            for rule in entries(entry, "rules").iter().rev() {
                let matches = rule
                    .get("matches")
                    .cloned()
                    .unwrap_or_else(|| Value::Array(Vec::new()));
                let conf = rule
                    .get("default")
                    .cloned()
                    .unwrap_or_else(|| Value::Object(Default::default()));
                let origin = origin(m, i);
                match merged.iter().position(|r| r.matches == matches) {
                    Some(p) => {
                        let mut r = merged.remove(p);
                        merge(&mut r.conf, conf);
                        r.origin = origin;
                        merged.push(r);
                    }
                    None => merged.push(RouteRule {
                        matches,
                        conf,
                        origin,
                    }),
                }
            }
        }
    }
    merged.reverse();
    merged
}

/// The MeshTCPRoute conf for calls to `service`: each covering `to[]` entry's first rule's
/// `default`, merged (the most specific policy's backendRefs win whole).
pub fn tcp_route_rule(matched: &[Matched<'_>], service: &str) -> Option<Rule> {
    tcp_route_rule_where(matched, |target| covers(target, service))
}

/// [`tcp_route_rule`] of the `to[]` entries whose `targetRef` `keep` accepts.
pub fn tcp_route_rule_where(
    matched: &[Matched<'_>],
    keep: impl Fn(&TargetRef) -> bool,
) -> Option<Rule> {
    let mut confs = Vec::new();
    let mut origins = Vec::new();
    for m in matched {
        for (i, entry) in entries(&m.policy.spec, "to").iter().enumerate() {
            if !entry_target(entry).is_some_and(|t| keep(&t)) {
                continue;
            }
            if let Some(conf) = entries(entry, "rules")
                .first()
                .and_then(|r| r.get("default"))
            {
                confs.push(conf.clone());
                origins.push(origin(m, i));
            }
        }
    }
    Some(Rule {
        conf: merge_all(confs)?,
        origins: dedup_by_policy(origins),
    })
}

/// [`to_rule`], computed once per snapshot for all the proxies the same policies select.
pub fn shared_to_rule(
    mesh: &MeshContext,
    matched: &[Matched<'_>],
    service: &str,
) -> Option<std::sync::Arc<Rule>> {
    match &mesh.shared {
        Some(shared) => {
            // Addresses identify the policies: they live in the context as long as the memo.
            let policies = matched
                .iter()
                .map(|m| std::ptr::from_ref(m.policy) as usize)
                .collect();
            shared.to_rule(policies, service, || to_rule(matched, service))
        }
        None => to_rule(matched, service).map(std::sync::Arc::new),
    }
}

/// How specific a rule's match is: SPIFFE id (exact over prefix) first, then SNI.
fn specificity(matches: &Option<Value>) -> (u8, u8) {
    let Some(m) = matches else { return (0, 0) };
    let spiffe = match m
        .get("spiffeID")
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str)
    {
        Some("Exact") => 3,
        Some("Prefix") => 2,
        Some(_) => 1,
        None if m.get("spiffeID").is_some() => 1,
        None => 0,
    };
    (spiffe, u8::from(m.get("sni").is_some()))
}

/// The rules of inbound `inbound`: each `rules[]` entry (one rule per match), or, for the
/// types Kuma reads `from[]` as rules (`from_as_rules`), each `from[]` entry as a catch-all.
/// Nothing is merged here: specific matches first, then catch-alls, each group least
/// specific policy first.
pub fn inbound_rules(
    matched: &[Matched<'_>],
    inbound: usize,
    from_as_rules: bool,
) -> Vec<InboundRule> {
    incoming_rules(matched, |m| m.inbounds.contains(&inbound), from_as_rules)
}

/// [`inbound_rules`] for the builtin gateway's listeners on `port` (Kuma's gateway
/// `InboundRules`: what applies to the traffic the listener takes in).
pub fn listener_rules(matched: &[Matched<'_>], port: u32, from_as_rules: bool) -> Vec<InboundRule> {
    incoming_rules(matched, |m| m.selects_listener(port), from_as_rules)
}

fn incoming_rules(
    matched: &[Matched<'_>],
    selects: impl Fn(&Matched<'_>) -> bool,
    from_as_rules: bool,
) -> Vec<InboundRule> {
    let mut out = Vec::new();
    for m in matched.iter().filter(|m| selects(m)) {
        let rules = entries(&m.policy.spec, "rules");
        let from = entries(&m.policy.spec, "from");
        let (section, as_rules) = if !rules.is_empty() {
            (rules, true)
        } else if from_as_rules {
            (from, false)
        } else {
            continue;
        };
        for (i, entry) in section.iter().enumerate() {
            let Some(conf) = entry.get("default") else {
                continue;
            };
            let matches = if as_rules {
                entry.get("matches").and_then(Value::as_array)
            } else {
                None
            };
            match matches.filter(|ms| !ms.is_empty()) {
                Some(ms) => out.extend(ms.iter().map(|one| InboundRule {
                    matches: Some(one.clone()),
                    conf: conf.clone(),
                    origin: origin(m, i),
                })),
                None => out.push(InboundRule {
                    matches: None,
                    conf: conf.clone(),
                    origin: origin(m, i),
                }),
            }
        }
    }
    // Stable: equal specificity keeps the policy order.
    out.sort_by_key(|r| std::cmp::Reverse(specificity(&r.matches)));
    out
}

/// Kuma's `MatchesAllIncomingTraffic`: the catch-all rules merged, the last one winning.
pub fn catch_all(rules: &[InboundRule]) -> Option<Rule> {
    let all: Vec<&InboundRule> = rules.iter().filter(|r| r.matches.is_none()).collect();
    Some(Rule {
        conf: merge_all(all.iter().map(|r| r.conf.clone()))?,
        origins: all.iter().map(|r| r.origin.clone()).collect(),
    })
}

/// The proxy-wide conf of policies with a single `default` (MeshTrace, MeshMetric,
/// MeshPassthrough, MeshProxyPatch): every matched policy's, merged.
pub fn single_item(matched: &[Matched<'_>]) -> Option<Rule> {
    let with_default: Vec<&Matched<'_>> = matched
        .iter()
        .filter(|m| m.policy.spec.get("default").is_some())
        .collect();
    Some(Rule {
        conf: merge_all(
            with_default
                .iter()
                .filter_map(|m| m.policy.spec.get("default").cloned()),
        )?,
        origins: with_default.iter().map(|m| origin(m, 0)).collect(),
    })
}
