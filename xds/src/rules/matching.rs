//! Which policies of a type select a proxy (Kuma's `matchers.MatchedPolicies`), and which of
//! its inbounds they select, in Kuma's order.

use std::collections::BTreeMap;

use model::labels::{DISPLAY_NAME, ORIGIN, SERVICE_TAG, ZONE};
use model::specs::targetref::{ProxyType, TargetRef, TargetRefKind};

use super::order::{self, POLICY_ROLE};
use crate::context::{DataplaneEntry, RawPolicy};

const NAMESPACE: &str = "k8s.kuma.io/namespace";
/// Policies labelled so are stored and synced but take no effect.
const EFFECT: &str = "kuma.io/effect";

/// A policy that selects the proxy.
#[derive(Debug, Clone)]
pub struct Matched<'a> {
    pub policy: &'a RawPolicy,
    /// The top-level `targetRef` (`Mesh` when omitted).
    pub top: TargetRef,
    /// Indices of the proxy's `networking.inbound` the policy selects.
    pub inbounds: Vec<usize>,
}

/// The policies of a type that select a proxy, least specific first, and why any could not
/// be evaluated.
#[derive(Debug, Default)]
pub struct Matching<'a> {
    pub matched: Vec<Matched<'a>>,
    pub warnings: Vec<String>,
}

fn top_target(spec: &serde_json::Value) -> Result<TargetRef, serde_json::Error> {
    match spec.get("targetRef") {
        None | Some(serde_json::Value::Null) => Ok(TargetRef::mesh()),
        Some(t) => serde_json::from_value(t.clone()),
    }
}

fn tags_match(selector: &BTreeMap<String, String>, tags: &BTreeMap<String, String>) -> bool {
    selector
        .iter()
        .all(|(k, v)| tags.get(k).is_some_and(|t| v == "*" || t == v))
}

fn label<'a>(labels: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    labels.get(key).map(String::as_str).unwrap_or("")
}

/// Kuma's zone filter: a zone's own policy applies only to that zone's proxies.
fn selected_by_zone(policy: &RawPolicy, proxy: &DataplaneEntry) -> bool {
    if label(&policy.labels, POLICY_ROLE) == "producer" {
        return true;
    }
    match label(&proxy.labels, ORIGIN) {
        "" | "global" => true,
        _ => {
            let zone = label(&policy.labels, ZONE);
            if label(&policy.labels, ORIGIN) == "zone" && !zone.is_empty() {
                let proxy_zone = label(&proxy.labels, ZONE);
                proxy_zone.is_empty() || proxy_zone == zone
            } else {
                true
            }
        }
    }
}

/// Consumer and workload-owner policies apply in their own namespace only.
fn selected_by_namespace(policy: &RawPolicy, proxy: &DataplaneEntry) -> bool {
    match label(&policy.labels, POLICY_ROLE) {
        "consumer" | "workload-owner" => {
            let ns = label(&policy.labels, NAMESPACE);
            !ns.is_empty() && ns == label(&proxy.labels, NAMESPACE)
        }
        _ => true,
    }
}

fn proxy_type(proxy: &DataplaneEntry) -> ProxyType {
    match proxy.spec.networking.gateway {
        Some(_) => ProxyType::Gateway,
        None => ProxyType::Sidecar,
    }
}

/// Whether `proxy` is a gateway (delegated or builtin: no inbounds, the proxy as a whole is
/// what a policy selects) whose tags `selector` matches.
fn gateway(proxy: &DataplaneEntry, selector: &BTreeMap<String, String>) -> bool {
    proxy
        .spec
        .networking
        .gateway
        .as_ref()
        .is_some_and(|g| tags_match(selector, &g.tags))
}

/// Inbounds whose tags `selector` matches, and whether a gateway is selected.
fn by_tags(proxy: &DataplaneEntry, selector: &BTreeMap<String, String>) -> (Vec<usize>, bool) {
    let inbounds = proxy
        .spec
        .networking
        .inbound
        .iter()
        .enumerate()
        .filter(|(_, i)| tags_match(selector, &i.tags))
        .map(|(n, _)| n)
        .collect();
    (inbounds, gateway(proxy, selector))
}

/// The Dataplane kind: by name (in the policy's zone and namespace), by labels, or every
/// Dataplane; then the inbounds its sectionName names (an inbound's name, else its port).
fn by_dataplane_ref(
    policy: &RawPolicy,
    top: &TargetRef,
    proxy: &DataplaneEntry,
) -> (Vec<usize>, bool) {
    let name = top.name_str();
    let ns = top
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(label(&policy.labels, NAMESPACE));
    let selected = if name.is_empty() && top.labels.is_empty() {
        true
    } else if !name.is_empty() {
        let proxy_name = proxy
            .labels
            .get(DISPLAY_NAME)
            .filter(|n| !n.is_empty())
            .unwrap_or(&proxy.name);
        label(&policy.labels, ZONE) == label(&proxy.labels, ZONE)
            && ns == label(&proxy.labels, NAMESPACE)
            && name == proxy_name
    } else {
        top.labels
            .iter()
            .all(|(k, v)| proxy.labels.get(k) == Some(v))
    };
    if !selected {
        return (Vec::new(), false);
    }
    let section = top.section_name.as_deref().unwrap_or("");
    let inbounds = proxy
        .spec
        .networking
        .inbound
        .iter()
        .enumerate()
        .filter(|(_, i)| section.is_empty() || i.name == section || i.port.to_string() == section)
        .map(|(n, _)| n)
        .collect();
    (inbounds, proxy.spec.networking.gateway.is_some())
}

/// What `top` selects of `proxy`: its inbounds, and whether a gateway is selected.
fn select(
    policy: &RawPolicy,
    top: &TargetRef,
    proxy: &DataplaneEntry,
) -> Result<(Vec<usize>, bool), String> {
    let type_ok = top.proxy_types.is_empty() || top.proxy_types.contains(&proxy_type(proxy));
    Ok(match &top.kind {
        TargetRefKind::Mesh if type_ok => by_tags(proxy, &BTreeMap::new()),
        TargetRefKind::MeshSubset if type_ok => by_tags(proxy, &top.tags),
        TargetRefKind::Mesh | TargetRefKind::MeshSubset => (Vec::new(), false),
        // Only the legacy service tag: namespace, labels and sectionName are not read here.
        TargetRefKind::MeshService => by_tags(
            proxy,
            &BTreeMap::from([(SERVICE_TAG.to_string(), top.name_str().to_string())]),
        ),
        TargetRefKind::MeshServiceSubset => {
            let mut selector =
                BTreeMap::from([(SERVICE_TAG.to_string(), top.name_str().to_string())]);
            selector.extend(top.tags.clone());
            by_tags(proxy, &selector)
        }
        TargetRefKind::Dataplane => by_dataplane_ref(policy, top, proxy),
        // Which MeshGateway serves a builtin gateway is known to the gateway generator, which
        // reads the routes attached to it; other policy types do not select by it yet.
        TargetRefKind::MeshGateway => (Vec::new(), false),
        // Kuma's per-route form: the plugins that support it apply it to the route's rules
        // (`policies::route_scoped`); it selects no proxy as a whole.
        TargetRefKind::MeshHTTPRoute => (Vec::new(), false),
        other => return Err(format!("unsupported targetRef kind '{}'", other.as_str())),
    })
}

/// Whether `policy`'s top-level `targetRef` is a MeshHTTPRoute (Kuma's per-route form).
pub fn names_a_route(policy: &RawPolicy) -> bool {
    top_target(&policy.spec).is_ok_and(|t| t.kind == TargetRefKind::MeshHTTPRoute)
}

/// The policies in `policies` that select `proxy`, least specific first (the last one wins).
pub fn matched_policies<'a>(policies: &'a [RawPolicy], proxy: &DataplaneEntry) -> Matching<'a> {
    let mut out = Matching::default();
    for policy in policies {
        if label(&policy.labels, EFFECT) == "shadow" {
            continue;
        }
        if !selected_by_zone(policy, proxy) || !selected_by_namespace(policy, proxy) {
            continue;
        }
        let top = match top_target(&policy.spec) {
            Ok(t) => t,
            Err(e) => {
                out.warnings.push(format!(
                    "unable to resolve TargetRef on policy {:?}: {e}",
                    policy.name
                ));
                continue;
            }
        };
        match select(policy, &top, proxy) {
            Ok((inbounds, gateway)) if !inbounds.is_empty() || gateway => {
                out.matched.push(Matched {
                    policy,
                    top,
                    inbounds,
                });
            }
            Ok(_) => {}
            Err(e) => out.warnings.push(format!(
                "unable to resolve TargetRef on policy {:?}: {e}",
                policy.name
            )),
        }
    }
    out.matched
        .sort_by(|a, b| order::compare((a.policy, &a.top), (b.policy, &b.top)));
    out
}
