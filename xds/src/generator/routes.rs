//! Route tables from merged MeshHTTPRoute rules, for sidecar outbounds and gateway
//! listeners alike. Each rule's matches become Envoy routes (a path prefix is two: the path
//! and its subtree), sorted as Kuma sorts them (exact path, then longer prefixes, then regular
//! expressions; then method, more headers, more query parameters); an outbound's table ends
//! with a catch-all to its own service unless a rule already matches every path. A rule's
//! backendRefs are weighted clusters (each backend a destination of the proxy, in this zone
//! or through other zones' ingresses); its filters modify headers, redirect, rewrite or
//! mirror.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use model::labels::SERVICE_TAG;
use model::specs::policy::{
    HttpFilterType, HttpRouteConf, HttpRouteMatch, PathMatch, PathMatchType,
};
use model::specs::targetref::{BackendRef, TargetRefKind};
use serde_json::{Map, Value};

use crate::context::{DataplaneEntry, MeshContext};
use crate::envoy::routes::{
    forward, mirror, modify_headers, redirect, rewrite, route_matches, route_name,
};
use crate::generator::sidecar::destination_for;
use crate::policies::fractional_percent;
use crate::resources::ResourceSet;
use crate::rules::build::RouteRule;

/// The tags a backend selects its instances by (a MeshService is read as its
/// `kuma.io/service`), or why it cannot be routed to.
pub(crate) fn backend_tags(r: &BackendRef) -> Result<BTreeMap<String, String>, String> {
    let name = r.name.clone().unwrap_or_default();
    match r.kind {
        TargetRefKind::MeshService | TargetRefKind::MeshServiceSubset if !name.is_empty() => {
            let mut tags = if r.kind == TargetRefKind::MeshServiceSubset {
                r.tags.clone()
            } else {
                BTreeMap::new()
            };
            tags.insert(SERVICE_TAG.to_string(), name);
            Ok(tags)
        }
        TargetRefKind::MeshSubset if r.tags.contains_key(SERVICE_TAG) => Ok(r.tags.clone()),
        ref kind => Err(format!(
            "backendRef {} {name:?} is not supported yet",
            kind.as_str()
        )),
    }
}

/// Each weighted backend as (cluster, weight), adding its destination to the proxy; backends
/// of weight 0 are left out, and so are those that cannot be resolved (a warning says why).
pub(crate) fn splits(
    rs: &mut ResourceSet,
    mesh: &MeshContext,
    proxy: &DataplaneEntry,
    refs: &[BackendRef],
    policy: &str,
) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for r in refs {
        let weight = r.weight.unwrap_or(1);
        if weight == 0 {
            continue;
        }
        match backend_tags(r) {
            Ok(tags) => {
                let d = destination_for(mesh, proxy, &tags, rs);
                out.push((rs.destinations[d].cluster.clone(), weight));
            }
            Err(why) => rs.warnings.push(format!("{policy}: {why}")),
        }
    }
    out
}

/// One match of a rule, with what the rule says and where it came from.
struct Route {
    matched: HttpRouteMatch,
    name: String,
    conf: HttpRouteConf,
    policy: String,
}

fn catch_all_match() -> HttpRouteMatch {
    HttpRouteMatch {
        path: Some(PathMatch {
            match_type: PathMatchType::PathPrefix,
            value: "/".into(),
        }),
        ..Default::default()
    }
}

fn is_catch_all(m: &HttpRouteMatch) -> bool {
    m.path
        .as_ref()
        .is_some_and(|p| p.match_type == PathMatchType::PathPrefix && p.value == "/")
        && m.method.is_none()
        && m.headers.as_ref().is_none_or(Vec::is_empty)
        && m.query_params.as_ref().is_none_or(Vec::is_empty)
}

/// Kuma's `CompareMatch`: the more specific match first.
fn compare_match(a: &HttpRouteMatch, b: &HttpRouteMatch) -> Ordering {
    let rank = |t: PathMatchType| match t {
        PathMatchType::Exact => 0,
        PathMatchType::PathPrefix => 1,
        PathMatchType::RegularExpression => 2,
    };
    let path = match (&a.path, &b.path) {
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
        (Some(pa), Some(pb)) => {
            rank(pa.match_type)
                .cmp(&rank(pb.match_type))
                .then_with(|| match pa.match_type {
                    PathMatchType::Exact => Ordering::Equal,
                    _ => pb.value.len().cmp(&pa.value.len()),
                })
        }
    };
    let count = |o: Option<usize>| o.unwrap_or(0);
    path.then_with(|| b.method.is_some().cmp(&a.method.is_some()))
        .then_with(|| {
            count(b.headers.as_ref().map(Vec::len)).cmp(&count(a.headers.as_ref().map(Vec::len)))
        })
        .then_with(|| {
            count(b.query_params.as_ref().map(Vec::len))
                .cmp(&count(a.query_params.as_ref().map(Vec::len)))
        })
}

/// The Envoy routes of one outbound (`default`: its destination, where a rule without
/// backends sends, and the catch-all) or of one gateway virtual host (no default: what no
/// route matches is answered 404 by Envoy) from its merged rules. A rule that does not
/// parse, or that has nowhere to send (every backend of weight 0, or none on a gateway), adds
/// no route, unless it redirects.
pub(crate) fn build_routes(
    rs: &mut ResourceSet,
    mesh: &MeshContext,
    proxy: &DataplaneEntry,
    default: Option<usize>,
    rules: &[RouteRule],
) -> Vec<Value> {
    let mut routes = Vec::new();
    for rule in rules {
        let policy = rule.origin.name.clone();
        let parsed =
            serde_json::from_value::<Vec<HttpRouteMatch>>(rule.matches.clone()).and_then(|m| {
                Ok((
                    m,
                    serde_json::from_value::<HttpRouteConf>(rule.conf.clone())?,
                ))
            });
        let (matches, conf) = match parsed {
            Ok(p) => p,
            Err(e) => {
                rs.warnings
                    .push(format!("MeshHTTPRoute {policy}: a rule not applied: {e}"));
                continue;
            }
        };
        let name = route_name(&matches);
        let matches = if matches.is_empty() {
            vec![HttpRouteMatch::default()]
        } else {
            matches
        };
        for matched in matches {
            routes.push(Route {
                matched,
                name: name.clone(),
                conf: conf.clone(),
                policy: policy.clone(),
            });
        }
    }
    // Stable: equally specific matches keep the merged rules' order.
    routes.sort_by(|a, b| compare_match(&a.matched, &b.matched));
    if default.is_some() && !routes.iter().any(|r| is_catch_all(&r.matched)) {
        let matched = catch_all_match();
        routes.push(Route {
            name: route_name(std::slice::from_ref(&matched)),
            matched,
            conf: HttpRouteConf::default(),
            policy: String::new(),
        });
    }
    let own_cluster = default.map(|d| rs.destinations[d].cluster.clone());
    let mut out = Vec::new();
    for route in routes {
        let splits = match (route.conf.backend_refs.as_deref(), &own_cluster) {
            (None | Some([]), Some(own)) => vec![(own.clone(), 1)],
            (None | Some([]), None) => Vec::new(),
            (Some(refs), _) => splits(
                rs,
                mesh,
                proxy,
                refs,
                &format!("MeshHTTPRoute {}", route.policy),
            ),
        };
        let redirects = route.conf.filters.iter().flatten().any(|f| {
            f.filter_type == HttpFilterType::RequestRedirect && f.request_redirect.is_some()
        });
        if splits.is_empty() && !redirects {
            continue;
        }
        let mirrors = mirror_policies(rs, mesh, proxy, &route);
        for (envoy_match, half) in route_matches(&route.matched) {
            let mut action = match forward(&splits) {
                Value::Object(a) => a,
                _ => Map::new(),
            };
            let mut headers = Map::new();
            let mut redirected = None;
            for filter in route.conf.filters.iter().flatten() {
                match filter.filter_type {
                    HttpFilterType::RequestHeaderModifier => {
                        if let Some(m) = &filter.request_header_modifier {
                            modify_headers(&mut headers, "request", m);
                        }
                    }
                    HttpFilterType::ResponseHeaderModifier => {
                        if let Some(m) = &filter.response_header_modifier {
                            modify_headers(&mut headers, "response", m);
                        }
                    }
                    HttpFilterType::RequestRedirect => {
                        if let Some(r) = &filter.request_redirect {
                            redirected = Some(redirect(r, half));
                        }
                    }
                    HttpFilterType::URLRewrite => {
                        if let Some(r) = &filter.url_rewrite {
                            rewrite(&mut action, r, half);
                        }
                    }
                    HttpFilterType::RequestMirror => {}
                }
            }
            if !mirrors.is_empty() {
                action.insert(
                    "request_mirror_policies".into(),
                    Value::Array(mirrors.clone()),
                );
            }
            let mut envoy_route = Map::new();
            envoy_route.insert("name".into(), Value::String(route.name.clone()));
            envoy_route.insert("match".into(), envoy_match);
            match redirected {
                Some(r) => envoy_route.insert("redirect".into(), r),
                None => envoy_route.insert("route".into(), Value::Object(action)),
            };
            envoy_route.extend(headers);
            out.push(Value::Object(envoy_route));
        }
    }
    out
}

/// The route's RequestMirror filters as Envoy mirror policies (each backend a destination).
fn mirror_policies(
    rs: &mut ResourceSet,
    mesh: &MeshContext,
    proxy: &DataplaneEntry,
    route: &Route,
) -> Vec<Value> {
    let mut out = Vec::new();
    for filter in route.conf.filters.iter().flatten() {
        let Some(m) = filter
            .request_mirror
            .as_ref()
            .filter(|_| filter.filter_type == HttpFilterType::RequestMirror)
        else {
            continue;
        };
        match backend_tags(&m.backend_ref) {
            Ok(tags) => {
                let d = destination_for(mesh, proxy, &tags, rs);
                let fraction = m
                    .percentage
                    .as_ref()
                    .and_then(|p| p.as_f64())
                    .map(fractional_percent);
                out.push(mirror(&rs.destinations[d].cluster, fraction));
            }
            Err(why) => rs
                .warnings
                .push(format!("MeshHTTPRoute {}: mirror: {why}", route.policy)),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(v: Value) -> HttpRouteMatch {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn matches_sort_as_kuma_sorts_them() {
        let mut all = [
            m(json!({})),
            m(json!({"path": {"type": "RegularExpression", "value": "/x.*"}})),
            m(json!({"path": {"type": "PathPrefix", "value": "/a"}})),
            m(json!({"path": {"type": "PathPrefix", "value": "/a/b"}})),
            m(json!({"path": {"type": "PathPrefix", "value": "/a"}, "method": "GET"})),
            m(json!({"path": {"type": "Exact", "value": "/z"}})),
            m(
                json!({"path": {"type": "PathPrefix", "value": "/a"}, "method": "GET",
                     "headers": [{"name": "x", "value": "1"}]}),
            ),
        ];
        all.sort_by(compare_match);
        let order: Vec<Value> = all
            .iter()
            .map(|x| serde_json::to_value(x).unwrap())
            .collect();
        assert_eq!(
            order,
            vec![
                json!({"path": {"type": "Exact", "value": "/z"}}),
                json!({"path": {"type": "PathPrefix", "value": "/a/b"}}),
                json!({"path": {"type": "PathPrefix", "value": "/a"}, "method": "GET",
                       "headers": [{"name": "x", "value": "1"}]}),
                json!({"path": {"type": "PathPrefix", "value": "/a"}, "method": "GET"}),
                json!({"path": {"type": "PathPrefix", "value": "/a"}}),
                json!({"path": {"type": "RegularExpression", "value": "/x.*"}}),
                json!({}),
            ]
        );
    }

    #[test]
    fn backends_resolve_by_service_or_subset() {
        let r: BackendRef = serde_json::from_value(
            json!({"kind": "MeshServiceSubset", "name": "b", "tags": {"version": "v1"}}),
        )
        .unwrap();
        assert_eq!(
            backend_tags(&r).unwrap(),
            BTreeMap::from([
                ("kuma.io/service".to_string(), "b".to_string()),
                ("version".to_string(), "v1".to_string())
            ])
        );
        let r: BackendRef =
            serde_json::from_value(json!({"kind": "MeshExternalService", "name": "ext"})).unwrap();
        assert!(backend_tags(&r).unwrap_err().contains("not supported"));
    }
}
