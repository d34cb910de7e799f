//! Golden files of the builtin gateway (`tests/snapshots/gateway__*.snap`): every listener
//! protocol, hostnames merged on one port, TLS termination with certificates from mesh
//! Secrets, passthrough, routes attached to the MeshGateway (in this zone and through another
//! zone's ingress), each configuration also validated by Envoy itself.

mod common;

use std::collections::BTreeMap;

use common::{allow_all, check_schema, dataplane, envoy_validates, mesh, remote_ingress};
use model::specs::policy::{MeshHttpRouteSpec, MeshTcpRouteSpec, PolicySpec};
use serde_json::{Value, json};
use xds::{GatewayCertificate, GatewayEntry, MeshContext, Policy};

fn policy<S: PolicySpec>(name: &str, spec: Value) -> Policy<S> {
    common::validated(name, spec)
}

fn gateway(name: &str, spec: Value) -> GatewayEntry {
    let errors = model::ResourceType::MeshGateway.descriptor().validate;
    if let Err(e) = errors(&spec) {
        panic!("MeshGateway {name} does not validate: {e}");
    }
    GatewayEntry {
        name: name.into(),
        labels: BTreeMap::new(),
        spec: serde_json::from_value(spec).expect("MeshGateway spec"),
    }
}

fn valid(tag: &str) -> GatewayCertificate {
    GatewayCertificate::Valid {
        chain_pem: format!("-----BEGIN CERTIFICATE-----\n{tag}\n-----END CERTIFICATE-----\n"),
        key_pem: format!("-----BEGIN PRIVATE KEY-----\n{tag}\n-----END PRIVATE KEY-----\n"),
    }
}

/// The shared fixture plus `edge-1`, a builtin gateway tagged `kuma.io/service: edge`, the
/// MeshGateway `edge` selecting it, and `db`, which runs only in zone-2.
fn gateway_mesh() -> MeshContext {
    let mut m = mesh("http", true, vec![allow_all()]);
    m.local_zone = "zone-1".into();
    m.remote_ingresses = vec![remote_ingress(
        "zone-2",
        "192.168.2.1",
        json!([{"tags": {"kuma.io/service": "db", "kuma.io/protocol": "http"}, "instances": 1, "mesh": "default"}]),
    )];
    m.dataplanes.push(dataplane(
        "edge-1",
        json!({"networking": {"address": "10.0.0.9",
            "gateway": {"type": "BUILTIN", "tags": {"kuma.io/service": "edge"}}}}),
    ));
    m.gateways = vec![gateway(
        "edge",
        json!({"selectors": [{"match": {"kuma.io/service": "edge"}}],
        "conf": {"listeners": [
            {"port": 8080, "protocol": "HTTP", "hostname": "foo.example.com", "tags": {"port": "http"}},
            {"port": 8080, "protocol": "HTTP", "hostname": "*.example.org", "tags": {"port": "http"}},
            {"port": 8443, "protocol": "HTTPS", "hostname": "foo.example.com",
             "tls": {"mode": "TERMINATE", "certificates": [{"secret": "foo-cert"}, {"secret": "foo-ecdsa"}]}},
            {"port": 8443, "protocol": "HTTPS", "hostname": "bad.example.com",
             "tls": {"mode": "TERMINATE", "certificates": [{"secret": "bad-cert"}]}},
            {"port": 8443, "protocol": "HTTPS", "hostname": "gone.example.com",
             "tls": {"mode": "TERMINATE", "certificates": [{"secret": "missing-cert"}]}},
            {"port": 9000, "protocol": "TCP", "tags": {"port": "tcp"}},
            {"port": 9443, "protocol": "TLS", "hostname": "db.example.com", "tls": {"mode": "PASSTHROUGH"}}
        ]}}),
    )];
    m.gateway_certificates = BTreeMap::from([
        ("foo-cert".to_string(), valid("rsa")),
        ("foo-ecdsa".to_string(), valid("ecdsa")),
        (
            "bad-cert".to_string(),
            GatewayCertificate::Invalid {
                reason: "key and certificate do not match".into(),
            },
        ),
    ]);
    let http: Vec<Policy<MeshHttpRouteSpec>> = vec![
        policy(
            "edge-foo",
            json!({"targetRef": {"kind": "MeshGateway", "name": "edge"},
                "to": [{"targetRef": {"kind": "Mesh"}, "hostnames": ["foo.example.com"], "rules": [
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                     "default": {"backendRefs": [{"kind": "MeshService", "name": "backend"}]}},
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/db"}}],
                     "default": {"backendRefs": [{"kind": "MeshService", "name": "db"}]}}]}]}),
        ),
        policy(
            "edge-any",
            json!({"targetRef": {"kind": "MeshGateway", "name": "edge"},
                "to": [{"targetRef": {"kind": "Mesh"}, "rules": [
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
                     "default": {"backendRefs": [{"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": "v2"}}]}},
                    {"matches": [{"path": {"type": "Exact", "value": "/moved"}}],
                     "default": {"filters": [{"type": "RequestRedirect", "requestRedirect": {"hostname": "foo.example.com", "statusCode": 308}}]}}]}]}),
        ),
    ];
    let tcp: Vec<Policy<MeshTcpRouteSpec>> = vec![policy(
        "edge-tcp",
        json!({"targetRef": {"kind": "MeshGateway", "name": "edge"},
            "to": [{"targetRef": {"kind": "Mesh"}, "rules": [{"default": {"backendRefs": [
                {"kind": "MeshService", "name": "backend"}]}}]}]}),
    )];
    m.policies.set(http);
    m.policies.set(tcp);
    m
}

fn listener<'r>(r: &'r xds::ProxyResources, name: &str) -> &'r Value {
    r.listeners
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no listener {name}: {:?}", names(&r.listeners)))
}

fn names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| i["name"].as_str().map(str::to_string))
        .collect()
}

/// The virtual hosts of an HCM, as (name, route prefixes or paths).
fn hosts(hcm: &Value) -> Vec<(String, Vec<String>)> {
    hcm["typed_config"]["route_config"]["virtual_hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            let routes = h["routes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    let m = &r["match"];
                    m["path"]
                        .as_str()
                        .map(|p| format!("={p}"))
                        .or_else(|| m["prefix"].as_str().map(|p| format!("{p}*")))
                        .unwrap_or_default()
                })
                .collect();
            (h["name"].as_str().unwrap_or_default().to_string(), routes)
        })
        .collect()
}

#[test]
fn builtin_gateway_listeners() {
    let m = gateway_mesh();
    let r = xds::sidecar(&m, "edge-1").expect("generate");
    check_schema(&r);
    envoy_validates("gateway", &r);
    insta::assert_yaml_snapshot!(
        "gateway_edge",
        json!({"listeners": r.listeners, "clusters": r.clusters, "endpoints": r.endpoints,
               "secrets": r.secrets, "secret_names": r.secret_names, "warnings": r.warnings})
    );

    assert_eq!(
        names(&r.listeners),
        vec![
            "edge:HTTP:8080",
            "edge:HTTPS:8443",
            "edge:TCP:9000",
            "edge:TLS:9443"
        ]
    );
    // Two hostnames on one HTTP port: one connection manager, a virtual host each; the
    // route for foo.example.com only is not on *.example.org.
    let http = listener(&r, "edge:HTTP:8080");
    let chains = http["filter_chains"].as_array().expect("chains");
    assert_eq!(chains.len(), 1);
    // Equal-length prefixes keep the merged order: the more specific policy (by Kuma's
    // tie-break, the smaller name, edge-any) first.
    assert_eq!(
        hosts(&chains[0]["filters"][0]),
        vec![
            (
                "foo.example.com".to_string(),
                vec![
                    "=/moved".to_string(),
                    "=/v2".into(),
                    "/v2/*".into(),
                    "=/db".into(),
                    "/db/*".into(),
                    "/*".into()
                ]
            ),
            (
                "*.example.org".to_string(),
                vec!["=/moved".to_string(), "=/v2".into(), "/v2/*".into()]
            ),
        ]
    );
    // HTTPS: one chain per servable hostname, by SNI, terminating with its certificates.
    let https = listener(&r, "edge:HTTPS:8443");
    let chains = https["filter_chains"].as_array().expect("chains");
    assert_eq!(
        chains.len(),
        1,
        "bad and missing certificates are not served"
    );
    assert_eq!(
        chains[0]["filter_chain_match"]["server_names"],
        json!(["foo.example.com"])
    );
    let sds = &chains[0]["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificate_sds_secret_configs"];
    assert_eq!(
        names(sds.as_array().expect("certificates")),
        vec![
            "gateway_cert:secret:foo-cert",
            "gateway_cert:secret:foo-ecdsa"
        ]
    );
    assert_eq!(
        names(&r.secrets),
        vec![
            "gateway_cert:secret:foo-cert",
            "gateway_cert:secret:foo-ecdsa"
        ]
    );
    let warnings = r.warnings.join("\n");
    assert!(
        warnings.contains("bad.example.com") && warnings.contains("do not match"),
        "{warnings}"
    );
    assert!(
        warnings.contains("gone.example.com") && warnings.contains("does not exist"),
        "{warnings}"
    );
    let served: Vec<&str> = xds::inspect::gateway_dataplanes(&m, "edge")
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(served, vec!["edge-1"]);
    // `_rules` shows why a listener is not served.
    let inspected = xds::inspect::rules(&m, m.dataplane("edge-1").expect("edge-1"));
    let shown = inspected["warnings"].to_string();
    assert!(shown.contains("bad.example.com"), "{inspected}");
    // TLS passthrough by SNI, with no termination.
    let tls = listener(&r, "edge:TLS:9443");
    assert_eq!(
        tls["filter_chains"][0]["filter_chain_match"]["server_names"],
        json!(["db.example.com"])
    );
    assert!(tls["filter_chains"][0].get("transport_socket").is_none());
    // db is reached through zone-2's ingress, with the mesh's mTLS.
    common::assert_through_ingress(&r, "db", "192.168.2.1");
}

/// A gateway no MeshGateway selects serves nothing and says so; sidecars are untouched by
/// gateways, and a gateway is never refreshed by endpoints alone (it reads its MeshGateway,
/// certificates and routes, which the refresh does not compare).
#[test]
fn unselected_gateway_and_refresh() {
    let mut m = gateway_mesh();
    let web_before = xds::sidecar(&m, "web-1").expect("web");
    let first = xds::sidecar(&m, "edge-1").expect("edge");
    assert_eq!(
        xds::refresh_endpoints(&m, &m, "edge-1", &first.plan),
        None,
        "a gateway is generated again"
    );
    m.gateways.clear();
    let r = xds::sidecar(&m, "edge-1").expect("generate");
    assert!(r.listeners.is_empty());
    assert!(
        r.warnings.iter().any(|w| w.contains("no MeshGateway")),
        "{:?}",
        r.warnings
    );
    assert_eq!(xds::sidecar(&m, "web-1").expect("web"), web_before);
}

/// On a zone, a MeshGateway created on global has a hashed name and keeps the original in
/// `kuma.io/display-name`; routes written on global name the original, and still attach.
#[test]
fn routes_attach_to_a_gateway_synced_from_global() {
    let mut m = gateway_mesh();
    let local = xds::sidecar(&m, "edge-1").expect("generate");
    let g = &mut m.gateways[0];
    g.name = "edge-54dbd4c66zwbcf9c".into();
    g.labels
        .insert("kuma.io/display-name".into(), "edge".into());
    g.labels.insert("kuma.io/origin".into(), "global".into());
    let synced = xds::sidecar(&m, "edge-1").expect("generate");
    let routes = |r: &xds::ProxyResources| -> Vec<Value> {
        r.listeners
            .iter()
            .flat_map(|l| l["filter_chains"].as_array().cloned().unwrap_or_default())
            .map(|c| c["filters"][0]["typed_config"]["route_config"]["virtual_hosts"].clone())
            .collect()
    };
    assert_eq!(routes(&synced), routes(&local));
    assert!(!routes(&synced).is_empty());
}

/// Mesh-wide policies select builtin gateways too (as Kuma's do): a MeshCircuitBreaker's
/// thresholds reach the clusters of the gateway's backends; one for sidecars only does not.
#[test]
fn mesh_wide_cluster_policies_reach_gateway_backends() {
    use model::specs::policy::MeshCircuitBreakerSpec;
    let breaker = |name: &str, top: Value| -> Policy<MeshCircuitBreakerSpec> {
        policy(
            name,
            json!({"targetRef": top, "to": [{"targetRef": {"kind": "Mesh"},
                "default": {"connectionLimits": {"maxConnections": 7}}}]}),
        )
    };
    let thresholds = |m: &MeshContext| {
        let r = xds::sidecar(m, "edge-1").expect("generate");
        let backend = r.clusters.iter().find(|c| c["name"] == "backend").cloned();
        backend.map(|c| c["circuit_breakers"]["thresholds"][0]["max_connections"].clone())
    };
    let mut m = gateway_mesh();
    m.policies
        .set(vec![breaker("all", json!({"kind": "Mesh"}))]);
    assert_eq!(thresholds(&m), Some(json!(7)));
    m.policies.set(vec![breaker(
        "sidecars",
        json!({"kind": "Mesh", "proxyTypes": ["Sidecar"]}),
    )]);
    assert_eq!(thresholds(&m), Some(Value::Null));
}

/// A gateway route takes the `to` conf of the service it sends to, as a sidecar's outbound
/// does: a MeshTimeout and a MeshRetry for backend set the timeout and retries of the routes
/// to backend; the route to db, which no rule covers, keeps Envoy's defaults.
#[test]
fn gateway_routes_take_their_backends_timeouts_and_retries() {
    use model::specs::policy::{MeshRetrySpec, MeshTimeoutSpec};
    let mut m = gateway_mesh();
    let timeout: Policy<MeshTimeoutSpec> = policy(
        "backend-3s",
        json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
            "default": {"http": {"requestTimeout": "3s"}}}]}),
    );
    let retry: Policy<MeshRetrySpec> = policy(
        "backend-retries",
        json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
            "default": {"http": {"numRetries": 4}}}]}),
    );
    m.policies.set(vec![timeout]);
    m.policies.set(vec![retry]);
    let r = xds::sidecar(&m, "edge-1").expect("generate");
    check_schema(&r);
    let http = listener(&r, "edge:HTTP:8080");
    let routes =
        http["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]
            ["routes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
    let of = |cluster: &str| {
        routes
            .iter()
            .find(|r| r["route"]["cluster"] == cluster)
            .map(|r| {
                (
                    r["route"]["timeout"].clone(),
                    r["route"]["retry_policy"]["num_retries"].clone(),
                )
            })
            .unwrap_or_else(|| panic!("no route to {cluster}"))
    };
    assert_eq!(of("backend"), (json!("3s"), json!(4)));
    assert_eq!(of("db"), (json!("0s"), Value::Null));
}

/// Policies select a gateway's listeners by their tags (the Dataplane's gateway tags, the
/// MeshGateway's and the listener's own, as Kuma's table overlays them): a MeshTimeout and a
/// MeshRateLimit for the listeners tagged `port: http` shape port 8080 only; a TCP rate limit
/// for `port: tcp` limits the TCP listener's connections; a mesh-wide MeshFaultInjection's
/// `to` faults reach every HTTP listener; a Dataplane-kind policy never selects a builtin
/// gateway (Kuma: its listeners are the MeshGateway's). Envoy accepts the result.
#[test]
fn gateway_policies_select_listeners_by_tags() {
    use model::specs::policy::{
        MeshAccessLogSpec, MeshFaultInjectionSpec, MeshRateLimitSpec, MeshTimeoutSpec,
    };
    let mut m = gateway_mesh();
    let on_http = json!({"kind": "MeshGateway", "name": "edge", "tags": {"port": "http"}});
    let timeouts: Vec<Policy<MeshTimeoutSpec>> = vec![
        policy(
            "http-3s",
            json!({"targetRef": on_http, "to": [{"targetRef": {"kind": "Mesh"},
                "default": {"http": {"requestTimeout": "3s"}}}]}),
        ),
        policy(
            "tcp-idle",
            json!({"targetRef": {"kind": "MeshGateway", "name": "edge", "tags": {"port": "tcp"}},
                "rules": [{"default": {"idleTimeout": "20s"}}]}),
        ),
        policy(
            "http-headers",
            json!({"targetRef": on_http,
                "rules": [{"default": {"http": {"requestHeadersTimeout": "2s", "streamIdleTimeout": "7s"}}}]}),
        ),
        policy(
            "by-dataplane",
            json!({"targetRef": {"kind": "Dataplane", "name": "edge-1"}, "to": [{"targetRef": {"kind": "Mesh"},
                "default": {"http": {"requestTimeout": "9s"}}}]}),
        ),
    ];
    let limits: Vec<Policy<MeshRateLimitSpec>> = vec![
        policy(
            "http-5rps",
            json!({"targetRef": on_http, "to": [{"targetRef": {"kind": "Mesh"},
                "default": {"local": {"http": {"requestRate": {"num": 5, "interval": "1s"},
                    "onRateLimit": {"status": 423}}}}}]}),
        ),
        policy(
            "tcp-2cps",
            json!({"targetRef": {"kind": "MeshGateway", "name": "edge", "tags": {"port": "tcp"}},
                "to": [{"targetRef": {"kind": "Mesh"},
                "default": {"local": {"tcp": {"connectionRate": {"num": 2, "interval": "1s"}}}}}]}),
        ),
    ];
    let faults: Vec<Policy<MeshFaultInjectionSpec>> = vec![policy(
        "abort-half",
        json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"},
            "default": {"http": [{"abort": {"httpStatus": 503, "percentage": 50}}]}}]}),
    )];
    m.policies.set(timeouts);
    m.policies.set(limits);
    let logs: Vec<Policy<MeshAccessLogSpec>> = vec![policy(
        "gateway-logs",
        json!({"targetRef": {"kind": "MeshGateway", "name": "edge"}, "to": [{"targetRef": {"kind": "Mesh"},
            "default": {"backends": [{"type": "File", "file": {"path": "/tmp/gateway.log",
                "format": {"type": "Plain", "plain": "%KUMA_SOURCE_SERVICE%->%KUMA_DESTINATION_SERVICE% %RESPONSE_CODE%"}}}]}}]}),
    )];
    m.policies.set(faults);
    m.policies.set(logs);
    let r = xds::sidecar(&m, "edge-1").expect("generate");
    check_schema(&r);
    envoy_validates("gateway-policies", &r);

    let hcms = |name: &str| -> Vec<Value> {
        listener(&r, name)["filter_chains"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["filters"].as_array()?.last().cloned())
            .map(|f| f["typed_config"].clone())
            .collect()
    };
    let routes = |name: &str| -> Vec<Value> {
        hcms(name)
            .iter()
            .flat_map(|h| {
                h["route_config"]["virtual_hosts"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .flat_map(|vh| vh["routes"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let filters = |hcm: &Value| -> Vec<String> {
        hcm["http_filters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["name"].as_str().map(str::to_string))
            .collect()
    };
    let http = routes("edge:HTTP:8080");
    assert!(!http.is_empty());
    for route in &http {
        if route["route"].is_object() {
            assert_eq!(route["route"]["timeout"], "3s", "{route}");
        }
        let limit = &route["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"];
        assert_eq!(limit["token_bucket"]["max_tokens"], 5, "{route}");
        assert_eq!(limit["status"]["code"], 423);
    }
    for hcm in hcms("edge:HTTP:8080") {
        // The listener's own rule, and Kuma's gateway default for what it leaves out.
        assert_eq!(hcm["request_headers_timeout"], "2s");
        assert_eq!(hcm["stream_idle_timeout"], "7s");
        assert_eq!(hcm["common_http_protocol_options"]["idle_timeout"], "300s");
        assert_eq!(
            filters(&hcm),
            [
                "envoy.filters.http.fault.0",
                "envoy.filters.http.local_ratelimit",
                "envoy.filters.http.router"
            ]
        );
    }
    // Port 8443's listeners carry other tags: neither the timeout nor the limit is theirs,
    // and the Dataplane-kind policy (9s) reaches no listener.
    let https = routes("edge:HTTPS:8443");
    assert!(!https.is_empty());
    for route in &https {
        assert_ne!(route["route"]["timeout"], "3s", "{route}");
        assert_ne!(route["route"]["timeout"], "9s", "{route}");
        assert!(route.get("typed_per_filter_config").is_none(), "{route}");
    }
    for hcm in hcms("edge:HTTPS:8443") {
        assert_eq!(hcm["request_headers_timeout"], "0.5s");
        assert_eq!(
            filters(&hcm),
            ["envoy.filters.http.fault.0", "envoy.filters.http.router"]
        );
    }
    let tcp = &listener(&r, "edge:TCP:9000")["filter_chains"][0]["filters"];
    assert_eq!(tcp[0]["name"], "envoy.filters.network.local_ratelimit");
    assert_eq!(tcp[0]["typed_config"]["token_bucket"]["max_tokens"], 2);
    assert_eq!(tcp[1]["typed_config"]["idle_timeout"], "20s");
    // MeshAccessLog: every listener of the gateway logs, as the gateway's service to any.
    for hcm in hcms("edge:HTTP:8080")
        .into_iter()
        .chain(hcms("edge:HTTPS:8443"))
    {
        assert_eq!(
            hcm["access_log"][0]["typed_config"]["log_format"]["text_format_source"]["inline_string"],
            "edge->* %RESPONSE_CODE%\n"
        );
    }
    assert_eq!(
        tcp[1]["typed_config"]["access_log"][0]["typed_config"]["path"],
        "/tmp/gateway.log"
    );
    let tls = &listener(&r, "edge:TLS:9443")["filter_chains"][0]["filters"];
    assert_eq!(tls[0]["name"], "envoy.filters.network.tcp_proxy");
}

/// Kuma's per-route form on a gateway: a MeshTimeout and a MeshRetry whose top-level
/// `targetRef` is a MeshHTTPRoute attached to the gateway shape the routes that route's rules
/// made (`/v2` here), and no other route.
#[test]
fn per_route_policies_reach_gateway_routes() {
    use model::specs::policy::{MeshRetrySpec, MeshTimeoutSpec};
    let mut m = gateway_mesh();
    let timeout: Policy<MeshTimeoutSpec> = policy(
        "edge-any-7s",
        json!({"targetRef": {"kind": "MeshHTTPRoute", "name": "edge-any"},
            "to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"requestTimeout": "7s"}}}]}),
    );
    let retry: Policy<MeshRetrySpec> = policy(
        "edge-any-retries",
        json!({"targetRef": {"kind": "MeshHTTPRoute", "name": "edge-any"},
            "to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"numRetries": 6}}}]}),
    );
    m.policies.set(vec![timeout]);
    m.policies.set(vec![retry]);
    let r = xds::sidecar(&m, "edge-1").expect("generate");
    check_schema(&r);
    envoy_validates("gateway-per-route", &r);
    let http = listener(&r, "edge:HTTP:8080");
    let mut v2 = 0;
    for host in
        http["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
            .as_array()
            .into_iter()
            .flatten()
    {
        for route in host["routes"].as_array().into_iter().flatten() {
            let path = route["match"]["path"]
                .as_str()
                .or(route["match"]["prefix"].as_str())
                .or(route["match"]["path_separated_prefix"].as_str())
                .unwrap_or_default();
            if path.starts_with("/v2") {
                v2 += 1;
                assert_eq!(route["route"]["timeout"], "7s", "{route}");
                assert_eq!(route["route"]["retry_policy"]["num_retries"], 6, "{route}");
            } else if route["route"].is_object() {
                assert_ne!(route["route"]["timeout"], "7s", "{route}");
                assert!(route["route"].get("retry_policy").is_none(), "{route}");
            }
        }
    }
    assert!(v2 > 0, "the /v2 routes are there");
}
