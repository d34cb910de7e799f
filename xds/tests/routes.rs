//! Golden files of MeshHTTPRoute and MeshTCPRoute on sidecar outbounds
//! (`tests/snapshots/routes__*.snap`), on the shared mesh fixture, each configuration also
//! validated by Envoy itself.

mod common;

use common::{allow_all, check_schema, envoy_validates, mesh, remote_ingress};
use model::specs::policy::{MeshHttpRouteSpec, MeshTcpRouteSpec, PolicySpec};
use serde_json::{Value, json};
use xds::{MeshContext, Policy};

fn policy<S: PolicySpec>(name: &str, spec: Value) -> Policy<S> {
    common::validated(name, spec)
}

fn http_route(name: &str, spec: Value) -> Policy<MeshHttpRouteSpec> {
    policy(name, spec)
}

fn tcp_route(name: &str, spec: Value) -> Policy<MeshTcpRouteSpec> {
    policy(name, spec)
}

fn with<S: PolicySpec>(mut m: MeshContext, p: Vec<Policy<S>>) -> MeshContext {
    m.policies.set(p);
    m
}

/// web-1's configuration, checked against Envoy's schema and by Envoy itself.
fn generated(m: &MeshContext, name: &str) -> xds::ProxyResources {
    let r = xds::sidecar(m, "web-1").expect("generate");
    check_schema(&r);
    envoy_validates(name, &r);
    r
}

fn as_config(r: &xds::ProxyResources) -> Value {
    json!({"listeners": r.listeners, "clusters": r.clusters, "endpoints": r.endpoints})
}

/// The routes of web's backend outbound.
fn backend_routes(r: &xds::ProxyResources) -> Vec<Value> {
    let l = r
        .listeners
        .iter()
        .find(|l| l["name"] == "outbound:127.0.0.1:10001")
        .expect("backend outbound");
    l["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]
        ["routes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn cluster_names(r: &xds::ProxyResources) -> Vec<String> {
    r.clusters
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

/// Where each route sends requests: (path or prefix, cluster or weighted split or redirect).
fn summary(routes: &[Value]) -> Vec<(String, Value)> {
    routes
        .iter()
        .map(|r| {
            let m = &r["match"];
            let path = m["path"]
                .as_str()
                .map(|p| format!("={p}"))
                .or_else(|| m["prefix"].as_str().map(|p| format!("{p}*")))
                .or_else(|| m["safe_regex"]["regex"].as_str().map(|p| format!("~{p}")))
                .unwrap_or_default();
            let to = if let Some(redirect) = r.get("redirect") {
                json!({"redirect": redirect})
            } else if let Some(c) = r["route"]["cluster"].as_str() {
                json!(c)
            } else {
                r["route"]["weighted_clusters"]["clusters"].clone()
            };
            (path, to)
        })
        .collect()
}

// sha256("kuma.io/servicebackendversionv1"), first 8 bytes, as Kuma names the subset clusters.
const V1: &str = "backend-154693772bc47249";
const V2: &str = "backend-5b73b3f4adf20020";

fn subset(version: &str) -> String {
    let tags = std::collections::BTreeMap::from([
        ("kuma.io/service".to_string(), "backend".to_string()),
        ("version".to_string(), version.to_string()),
    ]);
    xds::envoy::routes::subset_cluster_name("backend", &tags)
}

/// Every match kind, every filter and a weighted split, on an mTLS mesh: the golden file, and
/// the routes in Kuma's order (the `/` rule stands for the catch-all, so none is added).
#[test]
fn http_route_matches_filters_and_splits() {
    let route = http_route(
        "route-web",
        json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "default": {"backendRefs": [
                {"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": "v1"}, "weight": 90},
                {"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": "v2"}, "weight": 10}]}},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/v2"}},
                         {"path": {"type": "PathPrefix", "value": "/"}, "headers": [{"type": "Exact", "name": "x-version", "value": "v2"}]}],
             "default": {"backendRefs": [{"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": "v2"}}]}},
            {"matches": [{"path": {"type": "Exact", "value": "/old"}, "method": "GET"}],
             "default": {"filters": [{"type": "RequestRedirect", "requestRedirect":
                 {"scheme": "https", "hostname": "new.example.com", "statusCode": 301}}]}},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"},
                          "queryParams": [{"type": "RegularExpression", "name": "q", "value": "^a.*"}]}],
             "default": {"filters": [
                {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}},
                {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-routed", "value": "api"}], "remove": ["x-internal"]}},
                {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": "x-served-by", "value": "mesh"}]}},
                {"type": "RequestMirror", "requestMirror": {"percentage": 25, "backendRef": {"kind": "MeshService", "name": "missing"}}}]}},
            {"matches": [{"path": {"type": "RegularExpression", "value": "^/re/[0-9]+$"}}],
             "default": {"filters": [{"type": "URLRewrite", "urlRewrite": {"hostname": "backend.internal",
                 "path": {"type": "ReplaceFullPath", "replaceFullPath": "/numbered"}}}]}}
        ]}]}),
    );
    let m = with(mesh("http", true, vec![allow_all()]), vec![route]);
    let r = generated(&m, "route-matches");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    insta::assert_yaml_snapshot!("http_route_web", as_config(&r));

    let (v1, v2) = (subset("v1"), subset("v2"));
    let split = json!([{"name": v1, "weight": 90}, {"name": v2, "weight": 10}]);
    let redirect = json!({"redirect": {"scheme_redirect": "https", "host_redirect": "new.example.com",
        "response_code": "MOVED_PERMANENTLY"}});
    assert_eq!(
        summary(&backend_routes(&r)),
        vec![
            ("=/old".to_string(), redirect),
            ("=/api".to_string(), json!("backend")),
            ("/api/*".to_string(), json!("backend")),
            ("=/v2".to_string(), json!(v2)),
            ("/v2/*".to_string(), json!(v2)),
            // `/` with a header is more specific than `/` alone.
            ("/*".to_string(), json!(v2)),
            ("/*".to_string(), split),
            // Kuma ranks every prefix over regular expressions, `/` included: this route
            // matches only what no prefix does (here nothing).
            ("~^/re/[0-9]+$".to_string(), json!("backend")),
        ]
    );
    let names = cluster_names(&r);
    for c in ["backend", v1.as_str(), v2.as_str(), "missing"] {
        assert!(names.contains(&c.to_string()), "no cluster {c}: {names:?}");
    }
    // Each version's cluster holds only that version's instances.
    let endpoints = |cluster: &str| -> Vec<String> {
        r.endpoints
            .iter()
            .find(|e| e["cluster_name"] == cluster)
            .map(|e| {
                e["endpoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|g| g["lb_endpoints"].as_array().cloned().unwrap_or_default())
                    .map(|ep| ep["endpoint"]["address"]["socket_address"]["address"].to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(endpoints(&v1), vec!["\"10.0.0.2\""]);
    assert_eq!(endpoints(&v2), vec!["\"10.0.0.3\""]);
}

/// Two policies with a rule of the same matches merge it (the more specific policy's
/// backendRefs, the other's filters), and the more specific policy's rules come first among
/// equally specific matches; without a `/` rule a catch-all to backend is added last.
#[test]
fn routes_merge_as_kuma_merges_them() {
    let general = http_route(
        "route-1",
        json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
             "default": {"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-from", "value": "route-1"}]}}],
                         "backendRefs": [{"kind": "MeshService", "name": "missing"}]}},
            {"matches": [{"headers": [{"name": "x-a", "value": "1"}]}],
             "default": {"backendRefs": [{"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": "v1"}}]}}]}]}),
    );
    let specific = http_route(
        "route-2",
        json!({"targetRef": {"kind": "MeshService", "name": "web"}, "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
            {"matches": [{"headers": [{"name": "x-b", "value": "1"}]}],
             "default": {"backendRefs": [{"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": "v2"}}]}},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
             "default": {"backendRefs": [{"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": "v1"}}]}}]}]}),
    );
    let m = with(mesh("http", false, vec![]), vec![general, specific]);
    let r = generated(&m, "route-merge");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let routes = backend_routes(&r);
    let (v1, v2) = (subset("v1"), subset("v2"));
    assert_eq!(
        summary(&routes),
        vec![
            ("=/v1".to_string(), json!(v1)),
            ("/v1/*".to_string(), json!(v1)),
            ("/*".to_string(), json!(v2)),
            ("/*".to_string(), json!(v1)),
            ("/*".to_string(), json!("backend")),
        ]
    );
    assert_eq!(
        routes[0]["request_headers_to_add"],
        json!([{"header": {"key": "x-from", "value": "route-1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]),
        "route-1's filters stay on the merged rule"
    );
    assert_eq!(routes[2]["match"]["headers"][0]["name"], "x-b");
    assert_eq!(
        routes[4]["name"], "9Zuf5Tg79OuZcQITwBbQykxAk2u4fRKrwYn3//AL4Yo=",
        "Kuma's name of the catch-all"
    );
    // `_rules` shows the merged rules of the backend outbound, and both routes as origins.
    let inspected = xds::inspect::rules(&m, m.dataplane("web-1").expect("web-1"));
    let entry = inspected["rules"]
        .as_array()
        .and_then(|r| r.iter().find(|e| e["type"] == "MeshHTTPRoute"))
        .cloned()
        .expect("a MeshHTTPRoute entry");
    let backend = entry["toRules"]
        .as_array()
        .and_then(|t| {
            t.iter()
                .find(|r| r["matchers"][0]["value"] == "backend")
                .cloned()
        })
        .expect("backend's route rules");
    assert_eq!(backend["conf"]["rules"].as_array().map(Vec::len), Some(3));
    assert_eq!(backend["origin"].as_array().map(Vec::len), Some(2));
}

/// A backend that runs only in another zone is reached through that zone's ingress, with
/// mTLS and its SNI, as cross-zone outbounds are; a backend that runs nowhere gets a cluster
/// without endpoints (503 on that route only); a kind not supported yet is a warning and
/// leaves its route out.
#[test]
fn route_backends_across_zones_missing_and_unsupported() {
    let route = http_route(
        "route-zones",
        json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/db"}}],
             "default": {"backendRefs": [{"kind": "MeshService", "name": "db"}]}},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/nowhere"}}],
             "default": {"backendRefs": [{"kind": "MeshService", "name": "nowhere"}]}},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/external"}}],
             "default": {"backendRefs": [{"kind": "MeshExternalService", "name": "httpbin"}]}}]}]}),
    );
    let mut m = with(mesh("http", true, vec![allow_all()]), vec![route]);
    m.local_zone = "zone-1".into();
    m.remote_ingresses = vec![remote_ingress(
        "zone-2",
        "192.168.2.1",
        json!([{"tags": {"kuma.io/service": "db", "kuma.io/protocol": "http"}, "instances": 2, "mesh": "default"}]),
    )];
    let r = generated(&m, "route-zones");
    insta::assert_yaml_snapshot!("route_backends_across_zones", as_config(&r));
    common::assert_through_ingress(&r, "db", "192.168.2.1");
    let nowhere = r
        .endpoints
        .iter()
        .find(|e| e["cluster_name"] == "nowhere")
        .expect("nowhere's load assignment");
    assert!(
        nowhere["endpoints"].as_array().is_none_or(|g| g
            .iter()
            .all(|g| g["lb_endpoints"].as_array().is_none_or(Vec::is_empty))),
        "{nowhere}"
    );
    let paths: Vec<String> = summary(&backend_routes(&r))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert!(!paths.iter().any(|p| p.contains("external")), "{paths:?}");
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(
        r.warnings[0].contains("route-zones") && r.warnings[0].contains("MeshExternalService"),
        "{:?}",
        r.warnings
    );
}

/// MeshTCPRoute: a weighted split of a TCP outbound's connections (golden file); on an HTTP
/// outbound it makes a TCP proxy unless a MeshHTTPRoute routes the same service, which wins.
#[test]
fn tcp_route_splits_and_yields_to_http_routes() {
    let split = || {
        tcp_route(
            "tcp-split",
            json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                "rules": [{"default": {"backendRefs": [
                    {"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": "v1"}, "weight": 50},
                    {"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": "v2"}, "weight": 50}]}}]}]}),
        )
    };
    let tcp = with(mesh("tcp", true, vec![allow_all()]), vec![split()]);
    let r = generated(&tcp, "tcp-route");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    insta::assert_yaml_snapshot!("tcp_route_web", as_config(&r));

    let outbound_filter = |r: &xds::ProxyResources| {
        let l = r
            .listeners
            .iter()
            .find(|l| l["name"] == "outbound:127.0.0.1:10001")
            .expect("backend outbound");
        l["filter_chains"][0]["filters"][0].clone()
    };
    let (v1, v2) = (subset("v1"), subset("v2"));
    let weighted = json!({"clusters": [{"name": v1, "weight": 50}, {"name": v2, "weight": 50}]});
    assert_eq!(
        outbound_filter(&r)["typed_config"]["weighted_clusters"],
        weighted
    );

    let http = with(mesh("http", true, vec![allow_all()]), vec![split()]);
    let r = generated(&http, "tcp-route-on-http");
    let filter = outbound_filter(&r);
    assert_eq!(filter["name"], "envoy.filters.network.tcp_proxy");
    assert_eq!(filter["typed_config"]["weighted_clusters"], weighted);

    let http_route = http_route(
        "route",
        json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
             "default": {"backendRefs": [{"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": "v2"}}]}}]}]}),
    );
    let both = with(http, vec![http_route]);
    let r = generated(&both, "http-wins");
    let filter = outbound_filter(&r);
    assert_eq!(
        filter["name"],
        "envoy.filters.network.http_connection_manager"
    );
    assert_eq!(
        summary(&backend_routes(&r)),
        vec![("/*".to_string(), json!(v2))]
    );
}

#[test]
fn subset_cluster_names_are_stable() {
    // Kuma's names, so a MeshProxyPatch written for Kuma finds the same clusters.
    assert_eq!(subset("v1"), V1);
    assert_eq!(subset("v2"), V2);
}

/// Kuma's per-route form: a MeshTimeout and a MeshRetry whose top-level `targetRef` is a
/// MeshHTTPRoute apply to the routes that route's rules made (by Kuma's route name), merged
/// over the outbound's own conf; the outbound's other routes keep the outbound's conf.
#[test]
fn per_route_timeout_and_retry() {
    use model::specs::policy::{MeshRetrySpec, MeshTimeoutSpec};
    let route = http_route(
        "route-web",
        json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/slow"}}],
             "default": {"backendRefs": [{"kind": "MeshService", "name": "backend"}]}}]}]}),
    );
    let timeouts: Vec<Policy<MeshTimeoutSpec>> = vec![
        policy(
            "everything",
            json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"},
                "default": {"http": {"requestTimeout": "15s", "streamIdleTimeout": "30m"}}}]}),
        ),
        policy(
            "slow-route",
            json!({"targetRef": {"kind": "MeshHTTPRoute", "name": "route-web"},
                "to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"requestTimeout": "2s"}}}]}),
        ),
    ];
    let retries: Vec<Policy<MeshRetrySpec>> = vec![policy(
        "slow-retries",
        json!({"targetRef": {"kind": "MeshHTTPRoute", "name": "route-web"},
            "to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"numRetries": 7}}}]}),
    )];
    let mut m = with(mesh("http", false, vec![]), vec![route]);
    m.policies.set(timeouts);
    m.policies.set(retries);
    let r = generated(&m, "per-route");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let routes = backend_routes(&r);
    let by_path: Vec<(String, Value, Value)> = summary(&routes)
        .into_iter()
        .zip(&routes)
        .map(|((path, _), r)| {
            (
                path,
                r["route"]["timeout"].clone(),
                r["route"]["retry_policy"]["num_retries"].clone(),
            )
        })
        .collect();
    assert_eq!(
        by_path,
        vec![
            ("=/slow".to_string(), json!("2s"), json!(7)),
            ("/slow/*".to_string(), json!("2s"), json!(7)),
            ("/*".to_string(), json!("15s"), Value::Null),
        ]
    );
    // Stream idle comes from the outbound's conf, under the route's own.
    assert_eq!(routes[0]["route"]["idle_timeout"], "1800s");
}
