//! Policy plugins (Kuma's `pkg/plugins/policies/<name>`): each reads the policies of its type
//! from the mesh context, works out which apply to a proxy, and changes the proxy's generated
//! resources. They run in Kuma's order, on the [`ResourceSet`] the generator built; adding a
//! policy is adding a module here and an entry to [`PLUGINS`].

mod json_patch;
mod mesh_access_log;
mod mesh_circuit_breaker;
mod mesh_fault_injection;
mod mesh_health_check;
mod mesh_http_route;
mod mesh_load_balancing_strategy;
pub mod mesh_metric;
mod mesh_passthrough;
mod mesh_proxy_patch;
mod mesh_rate_limit;
mod mesh_retry;
mod mesh_tcp_route;
mod mesh_timeout;
pub(crate) mod mesh_tls;
mod mesh_trace;
mod mesh_traffic_permission;

use model::ResourceType;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::context::{DataplaneEntry, MeshContext};
use crate::resources::ResourceSet;
use crate::rules::Matched;
use crate::rules::build::{catch_all, entries, inbound_rules, shared_to_rule};

pub trait PolicyPlugin: Sync {
    /// The policy type this plugin translates.
    fn kind(&self) -> ResourceType;
    /// Changes `rs`, the configuration of `proxy` in `mesh`, as the policies of
    /// [`PolicyPlugin::kind`] that select it say.
    fn apply(&self, rs: &mut ResourceSet, mesh: &MeshContext, proxy: &DataplaneEntry);
}

/// Every plugin, in Kuma's order (each type's `+kuma:policy:order`: MeshHTTPRoute 100,
/// MeshTCPRoute 200, MeshTLS 300, MeshLoadBalancingStrategy 400, MeshPassthrough 500,
/// MeshAccessLog 600, MeshTrace 700, MeshFaultInjection 800, MeshRateLimit 900, MeshTimeout
/// 1000, MeshTrafficPermission 1100, MeshHealthCheck 1200, MeshCircuitBreaker 1300,
/// MeshRetry 1400, MeshMetric 1500, MeshProxyPatch 9999).
pub static PLUGINS: &[&dyn PolicyPlugin] = &[
    &mesh_http_route::Plugin,
    &mesh_tcp_route::Plugin,
    &mesh_tls::Plugin,
    &mesh_load_balancing_strategy::Plugin,
    &mesh_passthrough::Plugin,
    &mesh_access_log::Plugin,
    &mesh_trace::Plugin,
    &mesh_fault_injection::Plugin,
    &mesh_rate_limit::Plugin,
    &mesh_timeout::Plugin,
    &mesh_traffic_permission::Plugin,
    &mesh_health_check::Plugin,
    &mesh_circuit_breaker::Plugin,
    &mesh_retry::Plugin,
    &mesh_metric::Plugin,
    &mesh_proxy_patch::Plugin,
];

/// The policy types plugins read: what a mesh context must hold.
pub fn kinds() -> impl Iterator<Item = ResourceType> {
    PLUGINS.iter().map(|p| p.kind())
}

/// Applies every plugin in order.
pub fn apply_all(rs: &mut ResourceSet, mesh: &MeshContext, proxy: &DataplaneEntry) {
    for plugin in PLUGINS {
        plugin.apply(rs, mesh, proxy);
    }
}

/// A merged conf as its plugin's type; a conf that does not parse is not applied, and says
/// why in `warnings` (the proxy's other configuration stands).
fn parse_conf<T: DeserializeOwned>(
    kind: ResourceType,
    conf: &Value,
    what: &str,
    warnings: &mut Vec<String>,
) -> Option<T> {
    T::deserialize(conf)
        .map_err(|e| warnings.push(format!("{kind:?} for {what} not applied: {e}")))
        .ok()
}

/// The merged conf of the policies of `kind` that configure `proxy` as a whole (a top-level
/// `targetRef` and a `default`: MeshTrace, MeshMetric), if any; one that does not parse is a
/// warning.
fn proxy_conf<T: DeserializeOwned>(
    kind: ResourceType,
    rs: &mut ResourceSet,
    mesh: &MeshContext,
    proxy: &DataplaneEntry,
) -> Option<Applied<T>> {
    let matching = crate::rules::matching::matched_in(mesh, kind, proxy);
    let rule = crate::rules::build::single_item(&matching.matched)?;
    let policies = named(&rule);
    let what = format!("the proxy (from {policies})");
    let conf = parse_conf(kind, &rule.conf, &what, &mut rs.warnings)?;
    Some(Applied { conf, policies })
}

/// A merged conf and the policies it came from (for warnings that name them).
struct Applied<T> {
    conf: T,
    policies: String,
}

pub(crate) fn named(rule: &crate::rules::Rule) -> String {
    let names: Vec<&str> = rule.origins.iter().map(|o| o.name.as_str()).collect();
    names.join(", ")
}

/// For each of the proxy's destinations, the conf its `to` rule gives (`None` without one).
fn destination_confs<T: DeserializeOwned>(
    kind: ResourceType,
    rs: &mut ResourceSet,
    mesh: &MeshContext,
    matched: &[Matched<'_>],
) -> Vec<Option<Applied<T>>> {
    let mut warnings = Vec::new();
    let confs = rs
        .destinations
        .iter()
        .map(|d| {
            let rule = shared_to_rule(mesh, matched, &d.service)?;
            let policies = named(&rule);
            let what = format!("{} (from {policies})", d.service);
            let conf = parse_conf(kind, &rule.conf, &what, &mut warnings)?;
            Some(Applied { conf, policies })
        })
        .collect();
    rs.warnings.extend(warnings);
    confs
}

/// For each of the proxy's inbounds, the conf of the rules matching all its traffic
/// (`rules[]` without matches, and `from[]` entries), as Kuma's `MatchesAllIncomingTraffic`.
fn inbound_confs<T: DeserializeOwned>(
    kind: ResourceType,
    rs: &mut ResourceSet,
    matched: &[Matched<'_>],
    proxy: &DataplaneEntry,
) -> Vec<Option<Applied<T>>> {
    let mut warnings = Vec::new();
    let confs = (0..proxy.spec.networking.inbound.len())
        .map(|i| {
            let rules = inbound_rules(matched, i, true);
            let specific: Vec<&str> = rules
                .iter()
                .filter(|r| r.matches.is_some())
                .map(|r| r.origin.name.as_str())
                .collect();
            if !specific.is_empty() {
                warnings.push(format!(
                    "{kind:?} rules with matches on inbound {i} (from {}) not applied: \
                     per-client matches are not supported yet",
                    specific.join(", ")
                ));
            }
            let rule = catch_all(&rules)?;
            let policies = named(&rule);
            let what = format!("inbound {i} (from {policies})");
            let conf = parse_conf(kind, &rule.conf, &what, &mut warnings)?;
            Some(Applied { conf, policies })
        })
        .collect();
    rs.warnings.extend(warnings);
    confs
}

/// The policies of `matched` that select the builtin gateway's listeners on `port`.
fn on_listener<'m>(matched: &[Matched<'m>], port: u32) -> Vec<Matched<'m>> {
    matched
        .iter()
        .filter(|m| m.selects_listener(port))
        .cloned()
        .collect()
}

/// The ports of the proxy's gateway listeners (none for a sidecar).
fn gateway_ports(rs: &mut ResourceSet) -> Vec<u32> {
    rs.listeners_mut()
        .filter_map(|(o, _)| match o {
            crate::resources::Origin::Gateway { port } => Some(port),
            _ => None,
        })
        .collect()
}

/// For each port of the proxy's gateway listeners, the conf of the `to[]` entries for the
/// whole mesh (`targetRef.kind: Mesh`, what Kuma's gateway rules give the Mesh element) of
/// the policies that select the listener.
fn gateway_listener_confs<T: DeserializeOwned>(
    kind: ResourceType,
    rs: &mut ResourceSet,
    matched: &[Matched<'_>],
) -> std::collections::BTreeMap<u32, Applied<T>> {
    let mut warnings = Vec::new();
    let mut out = std::collections::BTreeMap::new();
    for port in gateway_ports(rs) {
        let on = on_listener(matched, port);
        let Some(rule) = crate::rules::build::to_rule_where(&on, |t| {
            t.kind == model::specs::targetref::TargetRefKind::Mesh
        }) else {
            continue;
        };
        let policies = named(&rule);
        let what = format!("gateway listener {port} (from {policies})");
        if let Some(conf) = parse_conf(kind, &rule.conf, &what, &mut warnings) {
            out.insert(port, Applied { conf, policies });
        }
    }
    rs.warnings.extend(warnings);
    out
}

/// A conf for one route of a gateway listener.
struct GatewayRoute<T> {
    listener: crate::resources::Origin,
    /// The route's index among the listener's route actions.
    action: usize,
    /// The destination the route sends to.
    destination: usize,
    conf: T,
}

/// For each route of the proxy's gateway listeners that sends to one service (every cluster
/// of a split that service's), the `to` conf for that service among the policies selecting
/// the listener, as a sidecar's outbound to it would take.
fn gateway_route_confs<T: DeserializeOwned>(
    kind: ResourceType,
    rs: &mut ResourceSet,
    mesh: &MeshContext,
    matched: &[Matched<'_>],
) -> Vec<GatewayRoute<T>> {
    use crate::resources::Origin;
    // Sidecars (nearly every proxy) have no gateway listener: nothing to index.
    if matched.is_empty() || gateway_ports(rs).is_empty() {
        return Vec::new();
    }
    let by_cluster: std::collections::HashMap<String, usize> = rs
        .destinations
        .iter()
        .enumerate()
        .map(|(d, dest)| (dest.cluster.clone(), d))
        .collect();
    let services: Vec<String> = rs.destinations.iter().map(|d| d.service.clone()).collect();
    let mut routes = Vec::new();
    for (origin, mut listener) in rs.listeners_mut() {
        let Origin::Gateway { port } = origin else {
            continue;
        };
        for (i, (clusters, _)) in listener
            .route_actions_with_clusters()
            .into_iter()
            .enumerate()
        {
            let ds: Vec<usize> = clusters
                .iter()
                .filter_map(|c| by_cluster.get(c).copied())
                .collect();
            let Some(&first) = ds.first() else { continue };
            if ds.len() == clusters.len() && ds.iter().all(|d| services[*d] == services[first]) {
                routes.push((origin, port, i, first));
            }
        }
    }
    let mut warnings = Vec::new();
    let mut out = Vec::new();
    let mut by_listener: std::collections::BTreeMap<u32, Vec<Matched<'_>>> =
        std::collections::BTreeMap::new();
    for (listener, port, action, destination) in routes {
        let on = by_listener
            .entry(port)
            .or_insert_with(|| on_listener(matched, port));
        let service = &services[destination];
        let Some(rule) = shared_to_rule(mesh, on, service) else {
            continue;
        };
        let what = format!(
            "{service} on gateway listener {port} (from {})",
            named(&rule)
        );
        if let Some(conf) = parse_conf(kind, &rule.conf, &what, &mut warnings) {
            out.push(GatewayRoute {
                listener,
                action,
                destination,
                conf,
            });
        }
    }
    rs.warnings.extend(warnings);
    out
}

/// A conf for the routes one MeshHTTPRoute rule made on outbounds to `service` (Kuma's
/// legacy per-route form: a policy whose top-level `targetRef` is that MeshHTTPRoute).
struct RouteScoped {
    /// The outbounds' service; `None` for a gateway's routes (`to[].targetRef.kind: Mesh`).
    service: Option<String>,
    /// Kuma's route name: the hash of the rule's matches.
    route: String,
    conf: Value,
}

/// The per-route confs of `kind` for `proxy`: each policy whose top-level `targetRef` names a
/// MeshHTTPRoute that selects the proxy applies its `to[]` confs to that route's rules, for
/// the services the route's `to[]` entries cover; in policy order (the last one wins).
fn route_scoped(
    kind: ResourceType,
    mesh: &MeshContext,
    proxy: &DataplaneEntry,
) -> Vec<RouteScoped> {
    use model::specs::targetref::{TargetRef, TargetRefKind};
    let mut scoped: Vec<(&crate::context::RawPolicy, TargetRef)> = mesh
        .policies
        .raw(kind)
        .iter()
        .filter_map(|p| {
            let top: TargetRef = serde_json::from_value(p.spec.get("targetRef")?.clone()).ok()?;
            (top.kind == TargetRefKind::MeshHTTPRoute).then_some((p, top))
        })
        .collect();
    if scoped.is_empty() {
        return Vec::new();
    }
    scoped.sort_by(|a, b| crate::rules::order::compare((a.0, &a.1), (b.0, &b.1)));
    let routes = crate::rules::matching::matched_in(mesh, ResourceType::MeshHTTPRoute, proxy);
    let mut out = Vec::new();
    for (policy, top) in scoped {
        let Some(route) = routes.matched.iter().find(|m| {
            m.policy.name == top.name_str()
                || crate::rules::order::display_name(m.policy) == top.name_str()
        }) else {
            continue;
        };
        let confs = entries(&policy.spec, "to")
            .iter()
            .filter_map(|e| e.get("default").cloned());
        let Some(conf) = crate::rules::merge::merge_all(confs) else {
            continue;
        };
        for entry in entries(&route.policy.spec, "to") {
            let target = entry.get("targetRef");
            let service = match target.and_then(|t| t.get("name")).and_then(Value::as_str) {
                Some(name) => Some(name.to_string()),
                None if route.top.kind == TargetRefKind::MeshGateway
                    && target.and_then(|t| t.get("kind")) == Some(&Value::from("Mesh")) =>
                {
                    None
                }
                None => continue,
            };
            for rule in entries(entry, "rules") {
                let Ok(matches) = serde_json::from_value::<Vec<model::specs::policy::HttpRouteMatch>>(
                    rule.get("matches").cloned().unwrap_or_default(),
                ) else {
                    continue;
                };
                out.push(RouteScoped {
                    service: service.clone(),
                    route: crate::envoy::routes::route_name(&matches),
                    conf: conf.clone(),
                });
            }
        }
    }
    out
}

/// For each outbound listener of `rs`, the routes per-route policies of `kind` configure:
/// (listener origin, route name, the outbound's conf with the per-route confs merged over it).
fn per_route_confs<T: DeserializeOwned + Clone>(
    kind: ResourceType,
    rs: &mut ResourceSet,
    mesh: &MeshContext,
    proxy: &DataplaneEntry,
    matched: &[Matched<'_>],
) -> Vec<(crate::resources::Origin, String, T)> {
    let scoped = route_scoped(kind, mesh, proxy);
    if scoped.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for (origin, d) in mesh_http_route::outbounds(rs) {
        let service = rs.destinations[d].service.clone();
        let base = shared_to_rule(mesh, matched, &service).map(|r| r.conf.clone());
        let of_service = scoped
            .iter()
            .filter(|s| s.service.as_deref() == Some(service.as_str()));
        for (route, conf) in merged_by_route(of_service, base) {
            let what = format!("{service} route {route}");
            if let Some(parsed) = parse_conf(kind, &conf, &what, &mut warnings) {
                out.push((origin, route, parsed));
            }
        }
    }
    // A gateway's routes, on every listener (routes are found by name there).
    let gateway_routes = merged_by_route(scoped.iter().filter(|s| s.service.is_none()), None);
    if !gateway_routes.is_empty() {
        let ports = gateway_ports(rs);
        for (route, conf) in gateway_routes {
            let what = format!("gateway route {route}");
            let Some(parsed) = parse_conf::<T>(kind, &conf, &what, &mut warnings) else {
                continue;
            };
            for &port in &ports {
                let origin = crate::resources::Origin::Gateway { port };
                out.push((origin, route.clone(), parsed.clone()));
            }
        }
    }
    rs.warnings.extend(warnings);
    out
}

/// Per-route confs merged by route, in policy order, each over `base` (the conf the routes'
/// outbound has, if any).
fn merged_by_route<'s>(
    scoped: impl Iterator<Item = &'s RouteScoped>,
    base: Option<Value>,
) -> Vec<(String, Value)> {
    let mut by_route: Vec<(String, Value)> = Vec::new();
    for s in scoped {
        match by_route.iter_mut().find(|(r, _)| *r == s.route) {
            Some((_, conf)) => crate::rules::merge(conf, s.conf.clone()),
            None => {
                let mut conf = base
                    .clone()
                    .unwrap_or_else(|| Value::Object(Default::default()));
                crate::rules::merge(&mut conf, s.conf.clone());
                by_route.push((s.route.clone(), conf));
            }
        }
    }
    by_route
}

/// A percentage as Envoy's `FractionalPercent`, as Kuma's `ConvertPercentage` writes it:
/// whole percentages over a hundred, others in millionths so decimals keep their precision.
pub(crate) fn fractional_percent(percent: f64) -> Value {
    let percent = percent.clamp(0.0, 100.0);
    if percent.fract() == 0.0 {
        return serde_json::json!({"numerator": percent as u64, "denominator": "HUNDRED"});
    }
    let millionths = (percent * 10_000.0).round() as u64;
    serde_json::json!({"numerator": millionths, "denominator": "MILLION"})
}
