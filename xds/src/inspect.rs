//! What the inspect API answers about policies, in Kuma's shapes: the rules a proxy ends up
//! with (`_rules`: per type, the `to` rules of each outbound service, the inbound rules of
//! each inbound, the proxy-wide rule, each with the policies it came from, and what could not
//! be applied), the policies that select a proxy (`_policies`), and the proxies a policy
//! selects (`_resources/dataplanes`). Computed from a mesh context by the same engine that
//! builds Envoy's configuration, so what it shows is what the proxy gets.

use std::collections::{BTreeMap, BTreeSet};

use model::ResourceType;
use serde_json::{Value, json};

use crate::context::{DataplaneEntry, MeshContext};
use crate::rules::build::{catch_all, inbound_rules, single_item, tcp_route_rule, to_rule};
use crate::rules::matching::{Matching, matched_in, matched_with_gateway, serving_gateway};
use crate::rules::{Origin, Rule};

/// Kuma's `Meta` of a resource.
fn meta(kind: ResourceType, mesh: &str, name: &str, labels: &BTreeMap<String, String>) -> Value {
    json!({"type": kind.descriptor().name, "mesh": mesh, "name": name, "labels": labels})
}

/// Every policy type.
fn policy_kinds() -> impl Iterator<Item = ResourceType> {
    ResourceType::all().filter(|k| k.descriptor().is_policy)
}

/// A policy's KRI (`kri_<short>_<mesh>_<zone>_<namespace>_<name>_`), as Kuma names origins.
fn kri(
    kind: ResourceType,
    mesh: &str,
    stored_name: &str,
    labels: &BTreeMap<String, String>,
) -> String {
    let d = kind.descriptor();
    let short = d
        .short_names
        .first()
        .copied()
        .unwrap_or(d.singular)
        .to_string();
    let label = |k: &str| labels.get(k).map(String::as_str).unwrap_or_default();
    let name = labels
        .get("kuma.io/display-name")
        .map(String::as_str)
        .unwrap_or(stored_name);
    format!(
        "kri_{short}_{mesh}_{}_{}_{name}_",
        label("kuma.io/zone"),
        label("k8s.kuma.io/namespace")
    )
}

fn origin_metas(kind: ResourceType, mesh: &str, origins: &[Origin]) -> Vec<Value> {
    origins
        .iter()
        .map(|o| meta(kind, mesh, &o.name, &o.labels))
        .collect()
}

fn rule_origins(kind: ResourceType, mesh: &str, origins: &[Origin]) -> Vec<Value> {
    origins
        .iter()
        .map(|o| json!({"resourceMeta": meta(kind, mesh, &o.name, &o.labels), "ruleIndex": o.rule_index}))
        .collect()
}

fn has_section(matching: &Matching<'_>, section: &str) -> bool {
    matching
        .matched
        .iter()
        .any(|m| m.policy.spec.get(section).is_some_and(|s| !s.is_null()))
}

fn inbound_json(proxy: &DataplaneEntry, i: usize) -> Value {
    let inbound = &proxy.spec.networking.inbound[i];
    let mut v = json!({"port": inbound.port, "tags": inbound.tags});
    if !inbound.name.is_empty() {
        v["name"] = json!(inbound.name);
    }
    v
}

/// A service's MeshHTTPRoute rules as one rule: `{rules: [{matches, default}]}` in the
/// merged order, with the policies they came from.
fn route_rule(matched: &[crate::rules::Matched<'_>], service: &str) -> Option<Rule> {
    let rules = crate::rules::build::http_route_rules(matched, service);
    if rules.is_empty() {
        return None;
    }
    let mut origins: Vec<Origin> = Vec::new();
    for r in &rules {
        if !origins.iter().any(|o| o.name == r.origin.name) {
            origins.push(r.origin.clone());
        }
    }
    let rules: Vec<Value> = rules
        .into_iter()
        .map(|r| json!({"matches": r.matches, "default": r.conf}))
        .collect();
    Some(Rule {
        conf: json!({"rules": rules}),
        origins,
    })
}

/// Whether warning `w` is about policy type `name` (it starts with the type's name).
fn of_type(w: &str, name: &str) -> bool {
    w.starts_with(name) && w[name.len()..].starts_with([' ', ':'])
}

/// `GET /meshes/{mesh}/dataplanes/{name}/_rules`.
pub fn rules(mesh: &MeshContext, proxy: &DataplaneEntry) -> Value {
    let m = mesh.mesh.as_str();
    let plugin_warnings = crate::sidecar(mesh, &proxy.name)
        .map(|r| r.warnings)
        .unwrap_or_default();
    let services: BTreeSet<&str> = proxy
        .spec
        .networking
        .outbound
        .iter()
        .filter_map(|o| o.tags.get("kuma.io/service").map(String::as_str))
        .collect();
    let mut entries = Vec::new();
    let mut shown = BTreeSet::new();
    for kind in policy_kinds() {
        let matching = matched_in(mesh, kind, proxy);
        if matching.matched.is_empty() && matching.warnings.is_empty() {
            continue;
        }
        let name = kind.descriptor().name;
        let mut entry = json!({"type": name});
        if has_section(&matching, "to") {
            let to: Vec<Value> = services
                .iter()
                .filter_map(|s| {
                    let rule = match kind {
                        ResourceType::MeshHTTPRoute => route_rule(&matching.matched, s)?,
                        ResourceType::MeshTCPRoute => tcp_route_rule(&matching.matched, s)?,
                        _ => to_rule(&matching.matched, s)?,
                    };
                    Some(json!({
                        "matchers": [{"key": "kuma.io/service", "value": s, "not": false}],
                        "conf": rule.conf,
                        "origin": origin_metas(kind, m, &rule.origins),
                    }))
                })
                .collect();
            entry["toRules"] = json!(to);
        }
        if has_section(&matching, "from") || has_section(&matching, "rules") {
            let mut inbound = Vec::new();
            for i in 0..proxy.spec.networking.inbound.len() {
                let rules = inbound_rules(&matching.matched, i, true);
                let mut out = Vec::new();
                if let Some(all) = catch_all(&rules) {
                    out.push(
                        json!({"conf": [all.conf], "origin": rule_origins(kind, m, &all.origins)}),
                    );
                }
                for r in rules.iter().filter(|r| r.matches.is_some()) {
                    out.push(json!({"conf": [r.conf], "match": r.matches,
                                    "origin": rule_origins(kind, m, std::slice::from_ref(&r.origin))}));
                }
                if !out.is_empty() {
                    inbound.push(json!({"inbound": inbound_json(proxy, i), "rules": out}));
                }
            }
            entry["inboundRules"] = json!(inbound);
        }
        if let Some(rule) = single_item(&matching.matched) {
            entry["proxyRule"] =
                json!({"conf": rule.conf, "origin": origin_metas(kind, m, &rule.origins)});
        }
        let mut warnings = matching.warnings.clone();
        for w in &plugin_warnings {
            if of_type(w, name) {
                warnings.push(w.clone());
                shown.insert(w.as_str());
            }
        }
        entry["warnings"] = json!(warnings);
        entries.push(entry);
    }
    // What no listed type owns (a gateway's listener that is not served, a route attached
    // to its MeshGateway): beside the rules, so it is never hidden.
    let others: Vec<&String> = plugin_warnings
        .iter()
        .filter(|w| !shown.contains(w.as_str()))
        .collect();
    json!({
        "resource": meta(ResourceType::Dataplane, m, &proxy.name, &proxy.labels),
        "rules": entries,
        "httpMatches": [],
        "warnings": others,
    })
}

/// `GET /meshes/{mesh}/dataplanes/{name}/_policies`: per policy type that selects the proxy,
/// the proxy-wide conf (for the types that have one) and every selecting policy.
pub fn policies(mesh: &MeshContext, proxy: &DataplaneEntry) -> Value {
    let m = mesh.mesh.as_str();
    let mut out = Vec::new();
    for kind in policy_kinds() {
        let matching = matched_in(mesh, kind, proxy);
        if matching.matched.is_empty() {
            continue;
        }
        let conf = single_item(&matching.matched).map_or(json!({}), |r| r.conf);
        let origins: Vec<Value> = matching
            .matched
            .iter()
            .map(|p| json!({"kri": kri(kind, m, &p.policy.name, &p.policy.labels)}))
            .collect();
        out.push(json!({"kind": kind.descriptor().name, "conf": conf, "origins": origins}));
    }
    json!({"policies": out})
}

/// The proxies of the mesh that a policy of `kind` selects (by its top-level `targetRef`).
pub fn selected_dataplanes<'m>(
    mesh: &'m MeshContext,
    kind: ResourceType,
    policy: &str,
) -> Vec<&'m DataplaneEntry> {
    let raw = mesh.policies.raw(kind);
    let Some(p) = raw.iter().find(|p| p.name == policy) else {
        return Vec::new();
    };
    let one = std::slice::from_ref(p);
    mesh.dataplanes
        .iter()
        .filter(|dp| {
            !matched_with_gateway(one, dp, serving_gateway(mesh, dp))
                .matched
                .is_empty()
        })
        .collect()
}

/// The builtin gateways MeshGateway `gateway` serves (for each, it is the one that selects
/// it), for `_resources/dataplanes` of a MeshGateway.
pub fn gateway_dataplanes<'m>(mesh: &'m MeshContext, gateway: &str) -> Vec<&'m DataplaneEntry> {
    use crate::generator::gateway::{is_builtin, select};
    mesh.dataplanes
        .iter()
        .filter(|dp| is_builtin(dp) && select(mesh, dp).is_some_and(|g| g.name == gateway))
        .collect()
}

/// `Meta` of a dataplane, for `_resources/dataplanes` answers.
pub fn dataplane_meta(mesh: &str, dp: &DataplaneEntry) -> Value {
    meta(ResourceType::Dataplane, mesh, &dp.name, &dp.labels)
}
