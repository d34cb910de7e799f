//! Which policies of a type select a proxy (Kuma's `matchers.MatchedPolicies`), and which of
//! its inbounds they select, in Kuma's order.

use std::collections::BTreeMap;

use model::labels::{DISPLAY_NAME, ORIGIN, SERVICE_TAG, ZONE};
use model::specs::targetref::{ProxyType, TargetRef, TargetRefKind};

use super::order::{self, POLICY_ROLE};
use crate::context::{DataplaneEntry, GatewayEntry, MeshContext, RawPolicy};

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
    /// Ports of the builtin gateway's listeners the policy selects (Kuma's `ByListener`).
    pub listeners: Vec<u32>,
}

impl Matched<'_> {
    /// Whether the policy selects the builtin gateway's listeners on `port`.
    pub fn selects_listener(&self, port: u32) -> bool {
        self.listeners.contains(&port)
    }
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

/// What a top-level `targetRef` selects of a proxy.
#[derive(Default)]
struct Selection {
    inbounds: Vec<usize>,
    /// Ports of builtin gateway listeners.
    listeners: Vec<u32>,
    /// A delegated gateway (no inbounds: the proxy as a whole is what a policy selects).
    delegated: bool,
}

impl Selection {
    fn any(&self) -> bool {
        !self.inbounds.is_empty() || !self.listeners.is_empty() || self.delegated
    }
}

fn is_delegated(proxy: &DataplaneEntry) -> bool {
    proxy.spec.networking.gateway.is_some() && !crate::generator::gateway::is_builtin(proxy)
}

/// The tags a builtin gateway's listener is selected by (Kuma's table): the Dataplane's
/// gateway tags, overlaid by the MeshGateway's, overlaid by the listener's own.
pub fn listener_tags(
    proxy: &DataplaneEntry,
    gateway: &GatewayEntry,
    listener: &model::specs::gateway::Listener,
) -> BTreeMap<String, String> {
    let mut tags = proxy
        .spec
        .networking
        .gateway
        .as_ref()
        .map(|g| g.tags.clone())
        .unwrap_or_default();
    tags.extend(gateway.spec.tags.clone());
    tags.extend(listener.tags.clone());
    tags
}

/// Ports of the listeners of `gateway` (serving `proxy`) whose tags `selector` matches.
fn listeners_by_tags(
    proxy: &DataplaneEntry,
    gateway: Option<&GatewayEntry>,
    selector: &BTreeMap<String, String>,
) -> Vec<u32> {
    let Some(gateway) = gateway else {
        return Vec::new();
    };
    let mut ports: Vec<u32> = gateway
        .spec
        .conf
        .iter()
        .flat_map(|c| &c.listeners)
        .filter(|l| tags_match(selector, &listener_tags(proxy, gateway, l)))
        .map(|l| l.port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Inbounds and gateway listeners whose tags `selector` matches, and whether a delegated
/// gateway is selected.
fn by_tags(
    proxy: &DataplaneEntry,
    gateway: Option<&GatewayEntry>,
    selector: &BTreeMap<String, String>,
) -> Selection {
    let inbounds = proxy
        .spec
        .networking
        .inbound
        .iter()
        .enumerate()
        .filter(|(_, i)| tags_match(selector, &i.tags))
        .map(|(n, _)| n)
        .collect();
    let delegated = is_delegated(proxy)
        && proxy
            .spec
            .networking
            .gateway
            .as_ref()
            .is_some_and(|g| tags_match(selector, &g.tags));
    Selection {
        inbounds,
        listeners: listeners_by_tags(proxy, gateway, selector),
        delegated,
    }
}

/// The Dataplane kind: by name (in the policy's zone and namespace), by labels, or every
/// Dataplane; then the inbounds its sectionName names (an inbound's name, else its port).
/// As in Kuma, it never selects a builtin gateway (its listeners are the MeshGateway's).
fn by_dataplane_ref(policy: &RawPolicy, top: &TargetRef, proxy: &DataplaneEntry) -> Selection {
    if crate::generator::gateway::is_builtin(proxy) {
        return Selection::default();
    }
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
        return Selection::default();
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
    Selection {
        inbounds,
        listeners: Vec::new(),
        delegated: is_delegated(proxy),
    }
}

/// What `top` selects of `proxy`, served by builtin gateway `gateway` (if it is one).
fn select(
    policy: &RawPolicy,
    top: &TargetRef,
    proxy: &DataplaneEntry,
    gateway: Option<&GatewayEntry>,
) -> Result<Selection, String> {
    let type_ok = top.proxy_types.is_empty() || top.proxy_types.contains(&proxy_type(proxy));
    Ok(match &top.kind {
        TargetRefKind::Mesh if type_ok => by_tags(proxy, gateway, &BTreeMap::new()),
        TargetRefKind::MeshSubset if type_ok => by_tags(proxy, gateway, &top.tags),
        TargetRefKind::Mesh | TargetRefKind::MeshSubset => Selection::default(),
        // Only the legacy service tag: namespace, labels and sectionName are not read here.
        TargetRefKind::MeshService => by_tags(
            proxy,
            gateway,
            &BTreeMap::from([(SERVICE_TAG.to_string(), top.name_str().to_string())]),
        ),
        TargetRefKind::MeshServiceSubset => {
            let mut selector =
                BTreeMap::from([(SERVICE_TAG.to_string(), top.name_str().to_string())]);
            selector.extend(top.tags.clone());
            by_tags(proxy, gateway, &selector)
        }
        TargetRefKind::Dataplane => by_dataplane_ref(policy, top, proxy),
        // The listeners (by their tags) of the MeshGateway serving a builtin gateway.
        TargetRefKind::MeshGateway => match gateway {
            Some(g) if g.is_named(top.name_str()) => Selection {
                listeners: listeners_by_tags(proxy, Some(g), &top.tags),
                ..Selection::default()
            },
            _ => Selection::default(),
        },
        // Kuma's per-route form: the plugins that support it apply it to the route's rules
        // (`policies::route_scoped`); it selects no proxy as a whole.
        TargetRefKind::MeshHTTPRoute => Selection::default(),
        other => return Err(format!("unsupported targetRef kind '{}'", other.as_str())),
    })
}

/// Whether `policy`'s top-level `targetRef` is a MeshHTTPRoute (Kuma's per-route form).
pub fn names_a_route(policy: &RawPolicy) -> bool {
    top_target(&policy.spec).is_ok_and(|t| t.kind == TargetRefKind::MeshHTTPRoute)
}

/// The policies of `kind` in `mesh` that select `proxy`, least specific first (the last one
/// wins); a builtin gateway's listeners are those of the MeshGateway serving it.
pub fn matched_in<'a>(
    mesh: &'a MeshContext,
    kind: model::ResourceType,
    proxy: &DataplaneEntry,
) -> Matching<'a> {
    matched_with_gateway(mesh.policies.raw(kind), proxy, serving_gateway(mesh, proxy))
}

/// The MeshGateway serving `proxy` when it is a builtin gateway.
pub fn serving_gateway<'a>(
    mesh: &'a MeshContext,
    proxy: &DataplaneEntry,
) -> Option<&'a GatewayEntry> {
    if crate::generator::gateway::is_builtin(proxy) {
        crate::generator::gateway::select(mesh, proxy)
    } else {
        None
    }
}

/// The policies in `policies` that select `proxy` (not a builtin gateway: its listeners
/// are not known here), least specific first (the last one wins).
pub fn matched_policies<'a>(policies: &'a [RawPolicy], proxy: &DataplaneEntry) -> Matching<'a> {
    matched_with_gateway(policies, proxy, None)
}

/// The policies in `policies` that select `proxy`, served by builtin gateway `gateway`.
pub fn matched_with_gateway<'a>(
    policies: &'a [RawPolicy],
    proxy: &DataplaneEntry,
    gateway: Option<&GatewayEntry>,
) -> Matching<'a> {
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
        match select(policy, &top, proxy, gateway) {
            Ok(selection) if selection.any() => {
                out.matched.push(Matched {
                    policy,
                    top,
                    inbounds: selection.inbounds,
                    listeners: selection.listeners,
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
