//! Golden files of the policy plugins (`tests/snapshots/policies__*.snap`), on the shared mesh
//! fixture, each configuration also validated by Envoy itself.

mod common;

use common::{allow_all, check_schema, config, envoy_validates, mesh};
use model::specs::policy::{
    MeshAccessLogSpec, MeshCircuitBreakerSpec, MeshFaultInjectionSpec, MeshHealthCheckSpec,
    MeshMetricSpec, MeshProxyPatchSpec, MeshRateLimitSpec, MeshRetrySpec, MeshTimeoutSpec,
    MeshTlsSpec, MeshTraceSpec, MeshTrafficPermissionSpec,
};
use serde_json::{Value, json};
use xds::{MeshContext, Policy};

fn timeout(name: &str, spec: Value) -> Policy<MeshTimeoutSpec> {
    Policy::new(
        name,
        serde_json::from_value(spec).expect("MeshTimeout spec"),
    )
}

/// Kuma's `mesh-timeout-all-<mesh>`, as a new mesh gets it.
fn default_timeouts() -> Policy<MeshTimeoutSpec> {
    timeout(
        "mesh-timeout-all-default",
        json!({"targetRef": {"kind": "Mesh", "proxyTypes": ["Sidecar"]},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"connectionTimeout": "10s", "idleTimeout": "2h",
                "http": {"requestTimeout": "0s", "streamIdleTimeout": "1h", "maxStreamDuration": "0s"}}}],
            "to": [{"targetRef": {"kind": "Mesh"}, "default": {"connectionTimeout": "5s", "idleTimeout": "1h",
                "http": {"requestTimeout": "15s", "streamIdleTimeout": "30m"}}}]}),
    )
}

fn with_timeouts(mut m: MeshContext, timeouts: Vec<Policy<MeshTimeoutSpec>>) -> MeshContext {
    m.policies.set(timeouts);
    m
}

/// `proxy`'s resources generated for a kuma-dp whose working directory is a fresh temporary
/// one (Envoy's validate mode binds the pipes there, so it must exist), checked against the
/// schema and validated by Envoy as `name`; the directory's path, removed again.
fn in_workdir(m: &MeshContext, proxy: &str, name: &str) -> (xds::ProxyResources, String) {
    in_workdir_with(m, proxy, name, false)
}

/// [`in_workdir`], kuma-dp having a metrics certificate (written to the working directory)
/// when `metrics_certificate`.
fn in_workdir_with(
    m: &MeshContext,
    proxy: &str,
    name: &str,
    metrics_certificate: bool,
) -> (xds::ProxyResources, String) {
    let workdir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&workdir).expect("workdir");
    let mut env = xds::ProxyEnv {
        workdir: Some(workdir.display().to_string()),
        ..Default::default()
    };
    if metrics_certificate {
        let pair = security::tls::self_signed(&["web-1".into()]).expect("certificate");
        let (cert, key) = (workdir.join("metrics.crt"), workdir.join("metrics.key"));
        std::fs::write(&cert, pair.cert_pem).expect("cert file");
        std::fs::write(&key, pair.key_pem).expect("key file");
        env.metrics_certificate = Some((cert.display().to_string(), key.display().to_string()));
    }
    let r = xds::sidecar_in(m, proxy, &env).expect("generate");
    check_schema(&r);
    envoy_validates(name, &r);
    let _ = std::fs::remove_dir_all(&workdir);
    (r, workdir.display().to_string())
}

fn checked(m: &MeshContext, proxy: &str, name: &str) -> Value {
    let r = xds::sidecar(m, proxy).expect("generate");
    check_schema(&r);
    envoy_validates(name, &r);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    config(m, proxy)
}

#[test]
fn timeout_defaults_http() {
    let m = with_timeouts(
        mesh("http", true, vec![allow_all()]),
        vec![default_timeouts()],
    );
    insta::assert_yaml_snapshot!(
        "timeout_defaults_client",
        checked(&m, "web-1", "timeout-client")
    );
    insta::assert_yaml_snapshot!(
        "timeout_defaults_server",
        checked(&m, "backend-1", "timeout-server")
    );
}

#[test]
fn timeout_defaults_tcp() {
    let m = with_timeouts(mesh("tcp", false, vec![]), vec![default_timeouts()]);
    insta::assert_yaml_snapshot!(checked(&m, "web-1", "timeout-tcp"));
}

/// A service's own timeouts over the mesh-wide ones: the caller's `to` for backend, and the
/// callee's inbound `rules` catch-all.
#[test]
fn timeout_overrides() {
    let m = with_timeouts(
        mesh("http", false, vec![]),
        vec![
            default_timeouts(),
            timeout(
                "web-to-backend",
                json!({"targetRef": {"kind": "MeshService", "name": "web"},
                    "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                            "default": {"idleTimeout": "20s", "http": {"requestTimeout": "2s", "maxStreamDuration": "30s"}}}]}),
            ),
            timeout(
                "backend-inbound",
                json!({"targetRef": {"kind": "MeshService", "name": "backend"},
                    "rules": [{"default": {"connectionTimeout": "1s", "http": {"requestTimeout": "3s", "requestHeadersTimeout": "500ms"}}}]}),
            ),
        ],
    );
    let client = checked(&m, "web-1", "timeout-override-client");
    let backend_route = &client["listeners"][1]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
        ["virtual_hosts"][0]["routes"][0]["route"];
    assert_eq!(backend_route["timeout"], "2s");
    // The outbound without an override (TCP: nothing serves it yet) keeps the mesh-wide idle.
    let other = &client["listeners"][2]["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(other["idle_timeout"], "3600s");
    insta::assert_yaml_snapshot!("timeout_overrides_client", client);
    let server = checked(&m, "backend-1", "timeout-override-server");
    insta::assert_yaml_snapshot!("timeout_overrides_server", server);
}

/// Without any MeshTimeout nothing changes: routes keep no timeout (streams stay open).
#[test]
fn no_timeout_policy_changes_nothing() {
    let plain = config(&mesh("http", false, vec![]), "web-1");
    let route = &plain["listeners"][1]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
        ["virtual_hosts"][0]["routes"][0]["route"];
    assert_eq!(route["timeout"], "0s");
    assert!(route.get("idle_timeout").is_none());
}

fn policy<S: model::specs::policy::PolicySpec>(name: &str, spec: Value) -> Policy<S> {
    Policy::new(
        name,
        serde_json::from_value(spec).unwrap_or_else(|e| panic!("{name}: {e}")),
    )
}

fn with<S: model::specs::policy::PolicySpec>(mut m: MeshContext, p: Vec<Policy<S>>) -> MeshContext {
    m.policies.set(p);
    m
}

fn listener<'v>(config: &'v Value, name: &str) -> &'v Value {
    config["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == name))
        .unwrap_or_else(|| panic!("no listener {name}"))
}

fn cluster<'v>(config: &'v Value, name: &str) -> &'v Value {
    config["clusters"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

/// MeshRetry: HTTP retry policy on the backend outbound's route (status codes, methods,
/// back-off, host selection), TCP connect attempts on a TCP outbound.
#[test]
fn retry_http_and_tcp() {
    let http = with(
        mesh("http", false, vec![]),
        vec![policy::<MeshRetrySpec>(
            "retry",
            json!({"targetRef": {"kind": "Mesh"},
                "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {
                    "tcp": {"maxConnectAttempt": 3},
                    "http": {"numRetries": 4, "perTryTimeout": "200ms",
                        "backOff": {"baseInterval": "10ms", "maxInterval": "1s"},
                        "rateLimitedBackOff": {"resetHeaders": [{"name": "retry-after", "format": "Seconds"}], "maxInterval": "5s"},
                        "retryOn": ["5xx", "503", "HttpMethodGet", "Reset", "Retriable4xx"],
                        "retriableResponseHeaders": [{"name": "x-retry", "type": "Present"}],
                        "retriableRequestHeaders": [{"name": "x-idempotent", "value": "yes"}],
                        "hostSelection": [{"predicate": "OmitPreviousHosts"}, {"predicate": "OmitPreviousPriorities", "updateFrequency": 2}],
                        "hostSelectionMaxAttempts": 3}}}]}),
        )],
    );
    let client = checked(&http, "web-1", "retry-http");
    let route = &listener(&client, "outbound:127.0.0.1:10001")["filter_chains"][0]["filters"][0]["typed_config"]
        ["route_config"]["virtual_hosts"][0]["routes"][0]["route"];
    insta::assert_yaml_snapshot!("retry_http_route", route);
    let tcp = with(
        mesh("tcp", false, vec![]),
        vec![policy::<MeshRetrySpec>(
            "retry",
            json!({"targetRef": {"kind": "Mesh"},
                "to": [{"targetRef": {"kind": "Mesh"}, "default": {"tcp": {"maxConnectAttempt": 3}}}]}),
        )],
    );
    let client = checked(&tcp, "web-1", "retry-tcp");
    let proxy = &listener(&client, "outbound:127.0.0.1:10001")["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(proxy["max_connect_attempts"], 3);
}

/// `numRetries: 0` turns retries off, as in Kuma (no retry policy at all).
#[test]
fn retry_zero_retries_is_none() {
    let m = with(
        mesh("http", false, vec![]),
        vec![policy::<MeshRetrySpec>(
            "no-retry",
            json!({"targetRef": {"kind": "Mesh"},
                "to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"numRetries": 0}}}]}),
        )],
    );
    let client = checked(&m, "web-1", "retry-zero");
    let route = &listener(&client, "outbound:127.0.0.1:10001")["filter_chains"][0]["filters"][0]["typed_config"]
        ["route_config"]["virtual_hosts"][0]["routes"][0]["route"];
    assert!(route.get("retry_policy").is_none(), "{route}");
}

/// MeshCircuitBreaker: thresholds and outlier detection on the destination cluster (by `to`)
/// and on the inbound's application cluster (by `from`).
#[test]
fn circuit_breaker_clusters() {
    let m = with(
        mesh("http", false, vec![]),
        vec![policy::<MeshCircuitBreakerSpec>(
            "cb",
            json!({"targetRef": {"kind": "Mesh"},
                "from": [{"targetRef": {"kind": "Mesh"}, "default": {"connectionLimits": {"maxConnections": 100}}}],
                "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {
                    "connectionLimits": {"maxConnections": 2, "maxPendingRequests": 1, "maxRequests": 3, "maxRetries": 1, "maxConnectionPools": 4},
                    "outlierDetection": {"interval": "5s", "baseEjectionTime": "30s", "maxEjectionPercent": 50,
                        "splitExternalAndLocalErrors": true, "healthyPanicThreshold": 40,
                        "detectors": {"totalFailures": {"consecutive": 5}, "gatewayFailures": {"consecutive": 3},
                            "successRate": {"minimumHosts": 2, "requestVolume": 10, "standardDeviationFactor": "1.9"},
                            "failurePercentage": {"threshold": 85}}}}}]}),
        )],
    );
    let client = checked(&m, "web-1", "circuit-breaker-client");
    insta::assert_yaml_snapshot!(
        "circuit_breaker_backend_cluster",
        cluster(&client, "backend")
    );
    let inbound = cluster(&client, "localhost:8080");
    assert_eq!(
        inbound["circuit_breakers"]["thresholds"][0]["max_connections"],
        100
    );
    assert!(inbound.get("outlier_detection").is_none());
}

/// MeshHealthCheck: an HTTP check on an HTTP destination, TCP on a TCP one.
#[test]
fn health_check_clusters() {
    let spec = json!({"targetRef": {"kind": "Mesh"},
        "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {
            "interval": "2s", "timeout": "1s", "unhealthyThreshold": 2, "healthyThreshold": 1,
            "initialJitter": "100ms", "failTrafficOnPanic": true, "healthyPanicThreshold": 0,
            "http": {"path": "/health", "expectedStatuses": [200, 204],
                     "requestHeadersToAdd": {"add": [{"name": "x-check", "value": "a,b"}]}},
            "tcp": {"send": "ping", "receive": ["pong"]}}}]});
    let http = with(
        mesh("http", false, vec![]),
        vec![policy::<MeshHealthCheckSpec>("hc", spec.clone())],
    );
    let client = checked(&http, "web-1", "health-check-http");
    insta::assert_yaml_snapshot!("health_check_http_cluster", cluster(&client, "backend"));
    let tcp = with(
        mesh("tcp", false, vec![]),
        vec![policy::<MeshHealthCheckSpec>("hc", spec)],
    );
    let client = checked(&tcp, "web-1", "health-check-tcp");
    let check = &cluster(&client, "backend")["health_checks"][0];
    assert_eq!(
        check["tcp_health_check"],
        json!({"send": {"text": "70696e67"}, "receive": [{"text": "706f6e67"}]})
    );
}

/// MeshFaultInjection: fault filters before the router on backend's HTTP inbound.
#[test]
fn fault_injection_inbound() {
    let m = with(
        mesh("http", false, vec![]),
        vec![policy::<MeshFaultInjectionSpec>(
            "faults",
            json!({"targetRef": {"kind": "MeshService", "name": "backend"},
                "from": [{"targetRef": {"kind": "Mesh"}, "default": {"http": [
                    {"abort": {"httpStatus": 503, "percentage": 50}},
                    {"delay": {"value": "2s", "percentage": "12.5"},
                     "responseBandwidth": {"limit": "100kbps", "percentage": 100}}]}}]}),
        )],
    );
    let server = checked(&m, "backend-1", "fault-injection");
    let hcm = &listener(&server, "inbound:10.0.0.2:20081")["filter_chains"][0]["filters"][0]["typed_config"];
    insta::assert_yaml_snapshot!("fault_injection_http_filters", hcm["http_filters"]);
    // The caller is untouched.
    let client = checked(&m, "web-1", "fault-injection-client");
    let filters = &listener(&client, "inbound:10.0.0.1:20080")["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"];
    assert_eq!(filters.as_array().map(Vec::len), Some(1));
}

/// MeshRateLimit: HTTP local rate limit on an HTTP inbound, connection rate limit on TCP.
#[test]
fn rate_limit_inbound() {
    let spec = json!({"targetRef": {"kind": "MeshService", "name": "backend"},
        "rules": [{"default": {"local": {
            "http": {"requestRate": {"num": 5, "interval": "10s"},
                     "onRateLimit": {"status": 429, "headers": {"set": [{"name": "x-limited", "value": "true"}]}}},
            "tcp": {"connectionRate": {"num": 2, "interval": "1s"}}}}}]});
    let http = with(
        mesh("http", false, vec![]),
        vec![policy::<MeshRateLimitSpec>("limit", spec.clone())],
    );
    let server = checked(&http, "backend-1", "rate-limit-http");
    let hcm = &listener(&server, "inbound:10.0.0.2:20081")["filter_chains"][0]["filters"][0]["typed_config"];
    insta::assert_yaml_snapshot!("rate_limit_http_filters", hcm["http_filters"]);
    let tcp = with(
        mesh("tcp", false, vec![]),
        vec![policy::<MeshRateLimitSpec>("limit", spec)],
    );
    let server = checked(&tcp, "backend-1", "rate-limit-tcp");
    let filters = &listener(&server, "inbound:10.0.0.2:20081")["filter_chains"][0]["filters"];
    insta::assert_yaml_snapshot!("rate_limit_tcp_filters", filters);
}

/// A conf that cannot be applied is reported and leaves the rest of the proxy as it was.
#[test]
fn unappliable_conf_is_a_warning() {
    let m = with(
        mesh("http", false, vec![]),
        vec![policy::<MeshFaultInjectionSpec>(
            "bad-delay",
            json!({"targetRef": {"kind": "Mesh"},
                "from": [{"targetRef": {"kind": "Mesh"}, "default": {"http": [
                    {"delay": {"value": "soon", "percentage": 10}}]}}]}),
        )],
    );
    let r = xds::sidecar(&m, "backend-1").expect("generate");
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(
        r.warnings[0].contains("delay.value") && r.warnings[0].contains("bad-delay"),
        "the warning names the field and the policy: {}",
        r.warnings[0]
    );
    assert_eq!(r, {
        let mut plain = xds::sidecar(&mesh("http", false, vec![]), "backend-1").expect("generate");
        plain.warnings = r.warnings.clone();
        plain
    });
}

/// MeshProxyPatch: every kind of modification, applied last and in order, on one proxy.
#[test]
fn proxy_patch_modifications() {
    let m = with(
        mesh("http", false, vec![]),
        vec![policy::<MeshProxyPatchSpec>(
            "patch",
            json!({"targetRef": {"kind": "MeshService", "name": "web"}, "default": {"appendModifications": [
                {"cluster": {"operation": "Add", "value": "name: extra\ntype: STATIC\nconnect_timeout: 1s\nload_assignment:\n  cluster_name: extra\n  endpoints:\n  - lb_endpoints:\n    - endpoint:\n        address:\n          socket_address: {address: 127.0.0.1, port_value: 9999}\n"}},
                {"cluster": {"operation": "Patch", "match": {"name": "backend", "origin": "outbound"},
                             "value": "connectTimeout: 7s\nper_connection_buffer_limit_bytes: 32768\n"}},
                {"cluster": {"operation": "Patch", "match": {"origin": "inbound"},
                             "jsonPatches": [{"op": "replace", "path": "/connectTimeout", "value": "2s"}]}},
                {"cluster": {"operation": "Remove", "match": {"name": "missing"}}},
                {"listener": {"operation": "Patch", "match": {"origin": "inbound", "tags": {"kuma.io/service": "web"}},
                              "jsonPatches": [{"op": "add", "path": "/perConnectionBufferLimitBytes", "value": 65536}]}},
                {"networkFilter": {"operation": "AddFirst", "match": {"origin": "outbound", "listenerName": "outbound:127.0.0.1:10002"},
                                   "value": "name: envoy.filters.network.local_ratelimit\ntyped_config:\n  '@type': type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit\n  stat_prefix: patched\n  token_bucket: {max_tokens: 10, fill_interval: 1s}\n"}},
                {"httpFilter": {"operation": "AddBefore", "match": {"name": "envoy.filters.http.router", "origin": "inbound"},
                                "value": "name: envoy.filters.http.fault\ntyped_config:\n  '@type': type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\n  abort: {http_status: 500, percentage: {numerator: 1}}\n"}},
                {"httpFilter": {"operation": "Patch", "match": {"name": "envoy.filters.http.router", "origin": "outbound"},
                                "value": "typed_config:\n  '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n  suppress_envoy_headers: true\n"}},
                {"virtualHost": {"operation": "Patch", "match": {"routeConfigurationName": "outbound:backend"},
                                 "jsonPatches": [{"op": "add", "path": "/domains/-", "value": "backend.mesh"}]}}
            ]}}),
        )],
    );
    let r = xds::sidecar(&m, "web-1").expect("generate");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let patched = checked(&m, "web-1", "proxy-patch");
    assert!(
        patched["clusters"]
            .as_array()
            .is_some_and(|cs| cs.iter().all(|c| c["name"] != "missing")),
        "the missing cluster is removed"
    );
    insta::assert_yaml_snapshot!("proxy_patch_web", patched);
}

/// A modification that cannot apply is a warning naming the policy; the others still apply.
#[test]
fn proxy_patch_bad_modification_is_a_warning() {
    let m = with(
        mesh("http", false, vec![]),
        vec![policy::<MeshProxyPatchSpec>(
            "half-bad",
            json!({"targetRef": {"kind": "Mesh"}, "default": {"appendModifications": [
                {"listener": {"operation": "Patch", "match": {"name": "no-such-listener"},
                              "value": "per_connection_buffer_limit_bytes: 1"}},
                {"cluster": {"operation": "Patch", "match": {"name": "backend"},
                             "jsonPatches": [{"op": "replace", "path": "/noSuchField/x", "value": 1}]}},
                {"cluster": {"operation": "Add", "value": "name: [not a cluster"}},
                {"cluster": {"operation": "Patch", "match": {"name": "backend"}, "value": "connect_timeout: 9s"}}
            ]}}),
        )],
    );
    let r = xds::sidecar(&m, "web-1").expect("generate");
    assert_eq!(r.warnings.len(), 3, "{:#?}", r.warnings);
    for (w, why) in r
        .warnings
        .iter()
        .zip(["nothing matches listener", "jsonPatches", "YAML"])
    {
        assert!(
            w.contains("MeshProxyPatch half-bad") && w.contains(why),
            "{w}"
        );
    }
    let backend = r
        .clusters
        .iter()
        .find(|c| c["name"] == "backend")
        .expect("backend cluster");
    assert_eq!(
        backend["connect_timeout"], "9s",
        "the good modification applied"
    );
}

fn labelled<S: model::specs::policy::PolicySpec>(
    name: &str,
    labels: &[(&str, &str)],
    spec: Value,
) -> Policy<S> {
    let mut p = policy::<S>(name, spec);
    p.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    p
}

/// `_rules` for a proxy selected by three MeshTimeouts: one synced from global (Mesh), one
/// created in the zone (Mesh, to backend), one for the proxy itself (Dataplane). Kuma's order
/// (global before zone at the same level, Dataplane above Mesh) gives the merged conf, with
/// the origins in merge order; the inbound and proxy views follow the same engine.
#[test]
fn inspect_rules_of_three_timeouts() {
    let mut m = mesh("http", false, vec![]);
    // Kuma's zone control plane labels what is created in it with its zone.
    for dp in &mut m.dataplanes {
        dp.labels.insert("kuma.io/zone".into(), "zone-1".into());
        dp.labels.insert("kuma.io/origin".into(), "zone".into());
    }
    m.policies.set(vec![
        labelled::<MeshTimeoutSpec>(
            "mesh-wide-x8f2k",
            &[
                ("kuma.io/origin", "global"),
                ("kuma.io/display-name", "mesh-wide"),
            ],
            json!({"targetRef": {"kind": "Mesh"},
                "to": [{"targetRef": {"kind": "Mesh"},
                        "default": {"connectionTimeout": "3s", "idleTimeout": "1h", "http": {"requestTimeout": "10s"}}}],
                "from": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "2h"}}]}),
        ),
        labelled::<MeshTimeoutSpec>(
            "zone-backend",
            &[("kuma.io/origin", "zone"), ("kuma.io/zone", "zone-1")],
            json!({"targetRef": {"kind": "Mesh"},
                "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                        "default": {"http": {"requestTimeout": "5s", "streamIdleTimeout": "20m"}}}]}),
        ),
        labelled::<MeshTimeoutSpec>(
            "web-1-only",
            &[("kuma.io/origin", "zone"), ("kuma.io/zone", "zone-1")],
            json!({"targetRef": {"kind": "Dataplane", "name": "web-1"},
                "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "30m"}}]}),
        ),
    ]);
    let proxy = m.dataplane("web-1").expect("web-1").clone();
    let rules = xds::inspect::rules(&m, &proxy);
    assert_eq!(rules["resource"]["name"], "web-1");
    let timeouts = rules["rules"]
        .as_array()
        .and_then(|r| r.iter().find(|e| e["type"] == "MeshTimeout"))
        .expect("MeshTimeout rules");
    let backend = timeouts["toRules"]
        .as_array()
        .and_then(|r| r.iter().find(|e| e["matchers"][0]["value"] == "backend"))
        .expect("backend rule");
    assert_eq!(
        backend["conf"],
        json!({"connectionTimeout": "3s", "idleTimeout": "30m",
               "http": {"requestTimeout": "5s", "streamIdleTimeout": "20m"}})
    );
    let origins: Vec<&Value> = backend["origin"]
        .as_array()
        .map(|o| o.iter().map(|x| &x["name"]).collect())
        .unwrap_or_default();
    assert_eq!(
        origins,
        [
            &json!("mesh-wide-x8f2k"),
            &json!("zone-backend"),
            &json!("web-1-only")
        ]
    );
    let missing = timeouts["toRules"]
        .as_array()
        .and_then(|r| r.iter().find(|e| e["matchers"][0]["value"] == "missing"))
        .expect("rule for the other outbound");
    assert_eq!(
        missing["conf"],
        json!({"connectionTimeout": "3s", "idleTimeout": "30m", "http": {"requestTimeout": "10s"}})
    );
    let inbound = &timeouts["inboundRules"][0];
    assert_eq!(inbound["inbound"]["port"], 20080);
    assert_eq!(inbound["rules"][0]["conf"], json!([{"idleTimeout": "2h"}]));
    assert_eq!(timeouts["warnings"], json!([]));
    // The proxies each policy selects.
    let selected = |name: &str| -> Vec<String> {
        xds::inspect::selected_dataplanes(&m, model::ResourceType::MeshTimeout, name)
            .iter()
            .map(|d| d.name.clone())
            .collect()
    };
    assert_eq!(selected("web-1-only"), ["web-1"]);
    assert_eq!(selected("mesh-wide-x8f2k").len(), 4);
    let policies = xds::inspect::policies(&m, &proxy);
    assert_eq!(policies["policies"][0]["kind"], "MeshTimeout");
    assert_eq!(
        policies["policies"][0]["origins"][0]["kri"],
        "kri_mt_default___mesh-wide_"
    );
    assert_eq!(
        policies["policies"][0]["origins"][2]["kri"],
        "kri_mt_default_zone-1__web-1-only_"
    );
}

/// A conf that cannot be applied shows on `_rules` as a warning of its type.
#[test]
fn inspect_rules_show_what_was_not_applied() {
    let m = with(
        mesh("http", false, vec![]),
        vec![policy::<MeshFaultInjectionSpec>(
            "bad-delay",
            json!({"targetRef": {"kind": "Mesh"},
                "from": [{"targetRef": {"kind": "Mesh"}, "default": {"http": [
                    {"delay": {"value": "soon", "percentage": 10}}]}}]}),
        )],
    );
    let proxy = m.dataplane("backend-1").expect("backend-1").clone();
    let rules = xds::inspect::rules(&m, &proxy);
    let warnings = &rules["rules"][0]["warnings"];
    assert_eq!(rules["rules"][0]["type"], "MeshFaultInjection");
    assert!(
        warnings[0]
            .as_str()
            .is_some_and(|w| w.contains("not applied")),
        "{warnings}"
    );
}

/// MeshTLS: backend's inbound accepts plaintext beside mTLS (Permissive), only TLS 1.2-1.3
/// with the listed ciphers; RBAC guards the mTLS chain only (plaintext has no identity); web's
/// cluster for backend offers what backend accepts.
#[test]
fn mesh_tls_permissive_and_versions() {
    let m = with(
        mesh("http", true, vec![allow_all()]),
        vec![policy::<MeshTlsSpec>(
            "backend-tls",
            json!({"targetRef": {"kind": "MeshService", "name": "backend"},
                "rules": [{"default": {"mode": "Permissive",
                    "tlsVersion": {"min": "TLS12", "max": "TLS13"},
                    "tlsCiphers": ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"]}}]}),
        )],
    );
    let server = checked(&m, "backend-1", "mesh-tls-server");
    let inbound = listener(&server, "inbound:10.0.0.2:20081");
    insta::assert_yaml_snapshot!("mesh_tls_permissive_inbound", inbound);
    let chains = inbound["filter_chains"].as_array().expect("chains");
    assert_eq!(chains.len(), 2);
    let first_http_filter =
        |chain: &Value| chain["filters"][0]["typed_config"]["http_filters"][0]["name"].clone();
    assert_eq!(
        first_http_filter(&chains[0]),
        "envoy.filters.http.rbac",
        "the mTLS chain authorizes"
    );
    assert_eq!(
        first_http_filter(&chains[1]),
        "envoy.filters.http.router",
        "the plaintext chain has no identity to authorize"
    );
    let client = checked(&m, "web-1", "mesh-tls-client");
    let params = &cluster(&client, "backend")["transport_socket"]["typed_config"]["common_tls_context"]
        ["tls_params"];
    assert_eq!(params["tls_minimum_protocol_version"], "TLSv1_2");
    assert_eq!(params["cipher_suites"][1], "ECDHE-RSA-AES128-GCM-SHA256");
    // Strict, the mesh's default, keeps one mTLS-only chain.
    let strict = with(
        mesh("http", true, vec![allow_all()]),
        vec![policy::<MeshTlsSpec>(
            "strict",
            json!({"targetRef": {"kind": "Mesh"}, "from": [{"targetRef": {"kind": "Mesh"}, "default": {"mode": "Strict"}}]}),
        )],
    );
    let server = checked(&strict, "backend-1", "mesh-tls-strict");
    let chains = &listener(&server, "inbound:10.0.0.2:20081")["filter_chains"];
    assert_eq!(chains.as_array().map(Vec::len), Some(1));
    assert!(chains[0].get("transport_socket").is_some());
}

/// MeshTrafficPermission's 2.x `rules` form: deny wins over allow, `allowWithShadowDeny`
/// allows and counts as denied in the shadow stats; on an HTTP inbound the HTTP RBAC filter,
/// on a TCP one the network filter. Where a policy has `rules`, `from` entries of others
/// selecting the same inbound do not count (as in Kuma).
#[test]
fn traffic_permission_rules_form() {
    let spec = json!({"targetRef": {"kind": "MeshService", "name": "backend"},
        "rules": [{"default": {
            "allow": [{"spiffeID": {"type": "Prefix", "value": "spiffe://default/"}}],
            "deny": [{"spiffeID": {"type": "Exact", "value": "spiffe://default/web"}}],
            "allowWithShadowDeny": [{"spiffeID": {"type": "Exact", "value": "spiffe://default/legacy"}}]}}]});
    for protocol in ["http", "tcp"] {
        let m = with(
            mesh(protocol, true, vec![]),
            vec![
                policy::<MeshTrafficPermissionSpec>("rules-form", spec.clone()),
                policy::<MeshTrafficPermissionSpec>(
                    "legacy-allow-all",
                    json!({"targetRef": {"kind": "Mesh"},
                        "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}),
                ),
            ],
        );
        let server = checked(&m, "backend-1", &format!("mtp-rules-{protocol}"));
        let chain = &listener(&server, "inbound:10.0.0.2:20081")["filter_chains"][0];
        let rbac = if protocol == "http" {
            chain["filters"][0]["typed_config"]["http_filters"][0].clone()
        } else {
            chain["filters"][0].clone()
        };
        insta::assert_yaml_snapshot!(format!("traffic_permission_rules_{protocol}"), rbac);
    }
}

/// MeshAccessLog: a file logger with Kuma's default HTTP line on backend's inbound (the
/// caller unknown, Kuma's placeholders filled in); on web's outbound to backend a JSON file
/// line and a TCP backend, which Envoy writes to kuma-dp's pipe (in the proxy's workdir) as
/// `{"address", "message"}`; on a TCP mesh Kuma's default TCP line; OpenTelemetry backends.
#[test]
fn access_log_backends() {
    let spec = json!({"targetRef": {"kind": "Mesh"},
        "from": [{"targetRef": {"kind": "Mesh"}, "default": {"backends": [
            {"type": "File", "file": {"path": "/tmp/inbound.log"}}]}}],
        "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {"backends": [
            {"type": "File", "file": {"path": "/tmp/outbound.json", "format": {"type": "Json",
                "json": [{"key": "src", "value": "%KUMA_SOURCE_SERVICE%"}, {"key": "dst", "value": "%KUMA_DESTINATION_SERVICE%"},
                         {"key": "status", "value": "%RESPONSE_CODE%"}], "omitEmptyValues": true}}},
            {"type": "Tcp", "tcp": {"address": "logstash:5000", "format": {"type": "Plain",
                "plain": "%KUMA_MESH% %KUMA_TRAFFIC_DIRECTION% %KUMA_SOURCE_ADDRESS% %RESPONSE_CODE%"}}}]}}]});
    let http = with(
        mesh("http", false, vec![]),
        vec![policy::<MeshAccessLogSpec>("logs", spec.clone())],
    );
    let server = checked(&http, "backend-1", "access-log-server");
    let hcm = &listener(&server, "inbound:10.0.0.2:20081")["filter_chains"][0]["filters"][0]["typed_config"];
    insta::assert_yaml_snapshot!("access_log_inbound_http", hcm["access_log"]);
    // Envoy's validate mode opens the pipe's path: a directory that exists.
    let (r, workdir) = in_workdir(&http, "web-1", "access-log-client");
    let outbound = r
        .listeners
        .iter()
        .find(|l| l["name"] == "outbound:127.0.0.1:10001")
        .expect("backend outbound");
    let logs = &outbound["filter_chains"][0]["filters"][0]["typed_config"]["access_log"];
    assert_eq!(
        logs[1]["typed_config"]["path"],
        format!("{workdir}/kuma-al-web-1-default.sock")
    );
    let mut logs = logs.clone();
    logs[1]["typed_config"]["path"] = json!("<workdir>/kuma-al-web-1-default.sock");
    insta::assert_yaml_snapshot!("access_log_outbound_http", logs);
    // The outbound to `missing`, which no `to` entry covers, logs nothing.
    let missing = r
        .listeners
        .iter()
        .find(|l| l["name"] == "outbound:127.0.0.1:10002")
        .expect("missing outbound");
    assert!(missing.to_string().find("access_log").is_none());

    let tcp = with(
        mesh("tcp", false, vec![]),
        vec![policy::<MeshAccessLogSpec>("logs", spec)],
    );
    let server = checked(&tcp, "backend-1", "access-log-tcp");
    let proxy = &listener(&server, "inbound:10.0.0.2:20081")["filter_chains"][0]["filters"][0]["typed_config"];
    insta::assert_yaml_snapshot!("access_log_inbound_tcp", proxy["access_log"]);

    // OpenTelemetry: Envoy's OTLP logger to a collector cluster per endpoint, Kuma's default
    // line as the body unless one is given, attributes with the placeholders filled in; a
    // backendRef (MeshOpenTelemetryBackend) is a warning and the other backends stand.
    let otel = with(
        mesh("http", false, vec![]),
        vec![policy::<MeshAccessLogSpec>(
            "otel",
            json!({"targetRef": {"kind": "Mesh"}, "from": [{"targetRef": {"kind": "Mesh"}, "default": {"backends": [
                {"type": "OpenTelemetry", "openTelemetry": {"endpoint": "otel-collector:4317",
                    "attributes": [{"key": "mesh", "value": "%KUMA_MESH%"}]}},
                {"type": "OpenTelemetry", "openTelemetry": {"endpoint": "otel-collector:4317",
                    "body": {"kvlistValue": "%REQ(:PATH)%", "n": 1}}},
                {"type": "OpenTelemetry", "openTelemetry": {"backendRef": {"kind": "MeshOpenTelemetryBackend", "name": "x"}}},
                {"type": "File", "file": {"path": "/dev/stdout"}}]}}]}),
        )],
    );
    let r = xds::sidecar(&otel, "backend-1").expect("generate");
    check_schema(&r);
    envoy_validates("access-log-otel", &r);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("MeshOpenTelemetryBackend")),
        "{:?}",
        r.warnings
    );
    let inbound = r
        .listeners
        .iter()
        .find(|l| l["name"] == "inbound:10.0.0.2:20081")
        .expect("inbound");
    let logs = &inbound["filter_chains"][0]["filters"][0]["typed_config"]["access_log"];
    assert_eq!(logs.as_array().map(Vec::len), Some(3));
    assert_eq!(logs[2]["typed_config"]["path"], "/dev/stdout");
    insta::assert_yaml_snapshot!("access_log_otel", logs[0]);
    assert_eq!(
        logs[1]["typed_config"]["body"]["kvlist_value"]["values"][0]["value"],
        json!({"string_value": "%REQ(:PATH)%"})
    );
    let clusters: Vec<&Value> = r
        .clusters
        .iter()
        .filter(|c| {
            c["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("meshaccesslog:"))
        })
        .collect();
    assert_eq!(clusters.len(), 1, "one cluster per distinct endpoint");
    assert_eq!(clusters[0]["name"], "meshaccesslog:opentelemetry:0");
}

/// MeshMetric: a Prometheus listener per backend on the proxy's address, routing its path to
/// kuma-dp's socket (rewritten to `/meshmetric`), and the dynamic configuration listener kuma-dp
/// reads the merged conf from: applications, profiles and the proxy's labels, with an ETag.
#[test]
fn metric_prometheus_backends() {
    let m = with(
        mesh("http", true, vec![allow_all()]),
        vec![policy::<MeshMetricSpec>(
            "metrics",
            json!({"targetRef": {"kind": "Mesh"}, "default": {
            "sidecar": {"includeUnused": true, "profiles": {"appendProfiles": [{"name": "Basic"}],
                "include": [{"type": "Prefix", "match": "envoy_http_"}]}},
            "applications": [{"name": "app", "port": 8080}],
            "backends": [
                {"type": "Prometheus", "prometheus": {"port": 5670, "path": "/metrics"}},
                {"type": "Prometheus", "prometheus": {"clientId": "team-b", "port": 5671, "path": "/stats"}}
            ]}}),
        )],
    );
    let (r, workdir) = in_workdir(&m, "web-1", "mesh-metric");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let named = |name: &str| {
        r.listeners
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .clone()
    };
    let default = named("_kuma:metrics:prometheus:default-backend");
    assert_eq!(default["address"]["socket_address"]["port_value"], 5670);
    let route = &default["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
        [0]["routes"][0];
    assert_eq!(route["match"]["prefix"], "/metrics");
    assert_eq!(route["route"]["cluster"], "_kuma:metrics:hijacker");
    assert_eq!(route["route"]["prefix_rewrite"], "/meshmetric");
    let team_b = named("_kuma:metrics:prometheus:team-b");
    assert_eq!(team_b["address"]["socket_address"]["port_value"], 5671);
    let hijacker = r
        .clusters
        .iter()
        .find(|c| c["name"] == "_kuma:metrics:hijacker")
        .expect("hijacker cluster");
    assert_eq!(
        hijacker["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]
            ["path"],
        format!("{workdir}/kuma-mh-web-1-default.sock")
    );
    let mut dynconf = named("_kuma:dynamicconfig");
    assert_eq!(
        dynconf["address"]["pipe"]["path"],
        format!("{workdir}/kuma-mesh-metric-config.sock")
    );
    dynconf["address"]["pipe"]["path"] = json!("<workdir>/kuma-mesh-metric-config.sock");
    let routes = &dynconf["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
        [0]["routes"];
    let body: Value = serde_json::from_str(
        routes[1]["direct_response"]["body"]["inline_string"]
            .as_str()
            .expect("config body"),
    )
    .expect("JSON config");
    // The ETag kuma-dp sends back gets a 304.
    assert_eq!(
        routes[0]["match"]["headers"][0]["string_match"]["exact"],
        routes[1]["response_headers_to_add"][0]["header"]["value"]
    );
    insta::assert_yaml_snapshot!("metric_dataplane_config", body);

    // Without a MeshMetric there is no metrics listener at all.
    let plain = config(&mesh("http", true, vec![allow_all()]), "web-1");
    assert!(!plain.to_string().contains("_kuma:metrics"), "{plain}");
}

/// MeshMetric's Prometheus TLS modes: ProvidedTLS serves kuma-dp's certificate files (plaintext
/// and a warning when kuma-dp has none, as Kuma), ActiveMTLSBackend requires a mesh certificate
/// (a warning when the mesh has no mTLS). Validated by Envoy, which reads the files.
#[test]
fn metric_prometheus_tls_modes() {
    let with_mode = |mode: &str, mtls: bool| {
        with(
            mesh("http", mtls, vec![allow_all()]),
            vec![policy::<MeshMetricSpec>(
                "metrics",
                json!({"targetRef": {"kind": "Mesh"}, "default": {"backends": [
                    {"type": "Prometheus", "prometheus": {"port": 5670, "tls": {"mode": mode}}}]}}),
            )],
        )
    };
    let chain = |r: &xds::ProxyResources| {
        r.listeners
            .iter()
            .find(|l| l["name"] == "_kuma:metrics:prometheus:default-backend")
            .expect("the listener")["filter_chains"][0]
            .clone()
    };
    let (r, workdir) = in_workdir_with(
        &with_mode("ProvidedTLS", false),
        "web-1",
        "metric-provided-tls",
        true,
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let tls =
        &chain(&r)["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificates"][0];
    assert_eq!(
        tls["certificate_chain"]["filename"],
        format!("{workdir}/metrics.crt")
    );
    assert_eq!(
        tls["private_key"]["filename"],
        format!("{workdir}/metrics.key")
    );

    let (r, _) = in_workdir(
        &with_mode("ProvidedTLS", false),
        "web-1",
        "metric-provided-none",
    );
    assert!(chain(&r).get("transport_socket").is_none());
    assert!(
        r.warnings[0].contains("--metrics-cert-path"),
        "{:?}",
        r.warnings
    );

    let (r, _) = in_workdir(
        &with_mode("ActiveMTLSBackend", true),
        "web-1",
        "metric-active",
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(
        chain(&r)["transport_socket"]["typed_config"]["require_client_certificate"],
        true
    );
    let (r, _) = in_workdir(
        &with_mode("ActiveMTLSBackend", false),
        "web-1",
        "metric-active-off",
    );
    assert!(chain(&r).get("transport_socket").is_none());
    assert!(
        r.warnings[0].contains("mTLS, which is off"),
        "{:?}",
        r.warnings
    );
}

/// The Mesh's legacy Prometheus backend (`spec.metrics`): `kuma:metrics:prometheus` on the
/// proxy's address forwarding to kuma-dp's hijacker with Envoy's query (`usedonly`, `filter`),
/// behind the mesh's mTLS unless `skipMTLS`; `activeMTLSBackend` lets the proxy's own address
/// in without a certificate; a Dataplane's `metrics` overrides the port; a MeshMetric with
/// backends replaces it all. Validated by Envoy.
#[test]
fn legacy_mesh_metrics() {
    let legacy = |conf: Value, mtls: bool| {
        let mut m = mesh("http", mtls, vec![allow_all()]);
        let spec: model::specs::mesh::MeshSpec = serde_json::from_value(json!({"metrics": {
            "enabledBackend": "prometheus-1",
            "backends": [{"name": "prometheus-1", "type": "prometheus", "conf": conf}]}}))
        .expect("mesh spec");
        m.legacy_metrics = spec.prometheus_metrics().map(|c| c.expect("conf"));
        m
    };
    let listener_of = |r: &xds::ProxyResources| {
        r.listeners
            .iter()
            .find(|l| l["name"] == "kuma:metrics:prometheus")
            .cloned()
            .expect("the legacy listener")
    };
    let plain = legacy(
        json!({"skipMTLS": true, "path": "/stats", "envoy": {"usedOnly": true, "filterRegex": "http|tcp"}}),
        true,
    );
    let (r, workdir) = in_workdir(&plain, "web-1", "legacy-metrics-plain");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let listener = listener_of(&r);
    assert_eq!(listener["address"]["socket_address"]["address"], "10.0.0.1");
    assert_eq!(listener["address"]["socket_address"]["port_value"], 5670);
    let chain = &listener["filter_chains"][0];
    assert!(chain.get("transport_socket").is_none(), "{chain}");
    let route =
        &chain["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0];
    assert_eq!(route["match"]["prefix"], "/stats");
    assert_eq!(route["route"]["cluster"], "kuma:metrics:hijacker");
    assert_eq!(
        route["route"]["prefix_rewrite"],
        "/?filter=http|tcp&usedonly"
    );
    let cluster = r
        .clusters
        .iter()
        .find(|c| c["name"] == "kuma:metrics:hijacker")
        .expect("hijacker cluster");
    assert_eq!(
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]
            ["path"],
        format!("{workdir}/kuma-mh-web-1-default.sock")
    );

    // The mesh's mTLS: a mesh certificate is required.
    let secured = legacy(json!({}), true);
    let (r, _) = in_workdir(&secured, "web-1", "legacy-metrics-mtls");
    let listener = listener_of(&r);
    let chains = listener["filter_chains"].as_array().expect("chains");
    assert_eq!(chains.len(), 1);
    assert_eq!(
        chains[0]["transport_socket"]["typed_config"]["require_client_certificate"],
        true
    );
    // activeMTLSBackend: the proxy's own address in plaintext, others with a certificate.
    let active = legacy(json!({"tls": {"mode": "activeMTLSBackend"}}), true);
    let (r, _) = in_workdir(&active, "web-1", "legacy-metrics-active");
    let listener = listener_of(&r);
    let chains = listener["filter_chains"].as_array().expect("chains");
    assert_eq!(chains.len(), 2);
    assert_eq!(
        chains[0]["filter_chain_match"]["source_prefix_ranges"][0]["address_prefix"],
        "10.0.0.1"
    );
    assert!(chains[0].get("transport_socket").is_none());
    assert!(chains[1].get("transport_socket").is_some());
    // Without mTLS there is nothing to secure with.
    let (r, _) = in_workdir(&legacy(json!({}), false), "web-1", "legacy-metrics-no-mtls");
    assert!(
        listener_of(&r)["filter_chains"][0]
            .get("transport_socket")
            .is_none()
    );

    // A Dataplane's own metrics override the Mesh's.
    let mut overridden = legacy(json!({"skipMTLS": true}), true);
    let web = overridden
        .dataplanes
        .iter_mut()
        .find(|d| d.name == "web-1")
        .expect("web-1");
    web.spec.metrics = Some(json!({"type": "prometheus", "conf": {"port": 9999}}));
    let (r, _) = in_workdir(&overridden, "web-1", "legacy-metrics-override");
    assert_eq!(
        listener_of(&r)["address"]["socket_address"]["port_value"],
        9999
    );

    // A MeshMetric with backends takes over.
    let mut both = legacy(json!({"skipMTLS": true}), true);
    both.policies.set(vec![policy::<MeshMetricSpec>(
        "metrics",
        json!({"targetRef": {"kind": "Mesh"}, "default": {
            "backends": [{"type": "Prometheus", "prometheus": {"port": 5671}}]}}),
    )]);
    let (r, _) = in_workdir(&both, "web-1", "legacy-metrics-replaced");
    assert!(
        !r.listeners
            .iter()
            .any(|l| l["name"] == "kuma:metrics:prometheus")
    );
    assert!(
        !r.clusters
            .iter()
            .any(|c| c["name"] == "kuma:metrics:hijacker")
    );
    assert!(
        r.listeners
            .iter()
            .any(|l| l["name"] == "_kuma:metrics:prometheus:default-backend")
    );
}

/// MeshMetric's OpenTelemetry backends: per backend a pipe listener in kuma-dp's working
/// directory (`kuma-otel-<endpoint as a name>.sock`) forwarding gRPC to a cluster at the
/// collector, and the backend in kuma-dp's configuration with its socket and interval; no
/// Prometheus listener or hijacker cluster when there is no Prometheus backend. Validated by
/// Envoy.
#[test]
fn metric_opentelemetry_backends() {
    let m = with(
        mesh("http", true, vec![allow_all()]),
        vec![policy::<MeshMetricSpec>(
            "metrics",
            json!({"targetRef": {"kind": "Mesh"}, "default": {
            "backends": [
                {"type": "OpenTelemetry", "openTelemetry": {"endpoint": "otel-collector.observability:4317", "refreshInterval": "10s"}},
                {"type": "OpenTelemetry", "openTelemetry": {"endpoint": "127.0.0.1"}},
                {"type": "OpenTelemetry", "openTelemetry": {"backendRef": {"kind": "MeshOpenTelemetryBackend", "name": "otel"}}}
            ]}}),
        )],
    );
    let (r, workdir) = in_workdir(&m, "web-1", "mesh-metric-otel");
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(
        r.warnings[0].contains("backendRef (MeshOpenTelemetryBackend) is not supported yet"),
        "{:?}",
        r.warnings
    );
    let text = serde_json::to_string(&r.listeners).expect("json");
    assert!(!text.contains("_kuma:metrics:prometheus"), "{text}");
    assert!(
        !r.clusters
            .iter()
            .any(|c| c["name"] == "_kuma:metrics:hijacker")
    );
    let named = |name: &str| {
        r.listeners
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .clone()
    };
    let name = "_kuma:metrics:opentelemetry:otel-collector.observability-4317";
    let listener = named(name);
    assert_eq!(
        listener["address"]["pipe"]["path"],
        format!("{workdir}/kuma-otel-otel-collector.observability-4317.sock")
    );
    let hcm = &listener["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(hcm["codec_type"], "HTTP2");
    assert_eq!(
        hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"],
        name
    );
    let cluster = r
        .clusters
        .iter()
        .find(|c| c["name"] == name)
        .expect("collector cluster");
    let address = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"];
    assert_eq!(address["address"], "otel-collector.observability");
    assert_eq!(address["port_value"], 4317);
    assert!(
        cluster["typed_extension_protocol_options"]
            .to_string()
            .contains("http2_protocol_options"),
        "{cluster}"
    );
    let default_port = r
        .clusters
        .iter()
        .find(|c| c["name"] == "_kuma:metrics:opentelemetry:127.0.0.1")
        .expect("second collector");
    assert_eq!(
        default_port["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
            ["port_value"],
        4317
    );
    let dynconf = named("_kuma:dynamicconfig");
    let routes = &dynconf["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
        [0]["routes"];
    let body: Value = serde_json::from_str(
        routes[1]["direct_response"]["body"]["inline_string"]
            .as_str()
            .expect("config body"),
    )
    .expect("JSON config");
    let mut backends = body["observability"]["metrics"]["backends"].clone();
    for backend in backends.as_array_mut().expect("backends") {
        let socket = backend["openTelemetry"]["endpoint"]
            .as_str()
            .expect("socket")
            .replace(&workdir, "<workdir>");
        backend["openTelemetry"]["endpoint"] = json!(socket);
    }
    insta::assert_yaml_snapshot!("metric_opentelemetry_backends", backends);
}

/// MeshTrace: Kuma's tracing on every connection manager (web's outbounds, backend's inbound),
/// sampling, the policy's tags then `kuma.mesh` and `kuma.zone`, and a cluster to the collector;
/// Zipkin, Datadog (split service: one service name per direction and destination) and
/// OpenTelemetry over gRPC. Each configuration is validated by Envoy.
#[test]
fn trace_backends() {
    let traced = |backend: Value| {
        with(
            mesh("http", false, vec![]),
            vec![policy::<MeshTraceSpec>(
                "trace",
                json!({"targetRef": {"kind": "Mesh"}, "default": {"backends": [backend],
                    "sampling": {"overall": 80, "client": "50.5", "random": 10},
                    "tags": [{"name": "team", "literal": "a"},
                             {"name": "client", "header": {"name": "x-client", "default": "none"}}]}}),
            )],
        )
    };
    let zipkin = traced(json!({"type": "Zipkin", "zipkin": {
        "url": "http://jaeger-collector.observability:9411/api/v2/spans", "traceId128bit": true}}));
    let client = checked(&zipkin, "web-1", "trace-zipkin-client");
    let hcm = &listener(&client, "outbound:127.0.0.1:10001")["filter_chains"][0]["filters"][0]["typed_config"];
    insta::assert_yaml_snapshot!("trace_zipkin_outbound", hcm["tracing"]);
    insta::assert_yaml_snapshot!("trace_zipkin_cluster", cluster(&client, "meshtrace:zipkin"));
    let server = checked(&zipkin, "backend-1", "trace-zipkin-server");
    let inbound = &listener(&server, "inbound:10.0.0.2:20081")["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(inbound["tracing"], hcm["tracing"]);

    let datadog = traced(json!({"type": "Datadog", "datadog": {
        "url": "http://127.0.0.1:8126", "splitService": true}}));
    let client = checked(&datadog, "web-1", "trace-datadog-client");
    let provider = &listener(&client, "outbound:127.0.0.1:10001")["filter_chains"][0]["filters"][0]
        ["typed_config"]["tracing"]["provider"];
    assert_eq!(
        provider["typed_config"]["service_name"],
        "web_outbound_backend"
    );
    let server = checked(&datadog, "backend-1", "trace-datadog-server");
    let provider = &listener(&server, "inbound:10.0.0.2:20081")["filter_chains"][0]["filters"][0]["typed_config"]
        ["tracing"]["provider"];
    assert_eq!(provider["typed_config"]["service_name"], "backend_inbound");

    let otel = traced(
        json!({"type": "OpenTelemetry", "openTelemetry": {"endpoint": "otel-collector:4317"}}),
    );
    let client = checked(&otel, "web-1", "trace-otel-client");
    let hcm = &listener(&client, "outbound:127.0.0.1:10001")["filter_chains"][0]["filters"][0]["typed_config"];
    insta::assert_yaml_snapshot!("trace_otel_provider", hcm["tracing"]["provider"]);
    let collector = cluster(&client, "meshtrace:opentelemetry");
    assert!(
        collector["typed_extension_protocol_options"].is_object(),
        "{collector}"
    );

    // A backend that cannot be reached leaves the proxy untraced and says why.
    let bad = traced(json!({"type": "Zipkin", "zipkin": {"url": "jaeger:9411"}}));
    let r = xds::sidecar(&bad, "web-1").expect("generate");
    assert!(
        r.warnings.iter().any(|w| w.contains("MeshTrace")),
        "{:?}",
        r.warnings
    );
    assert!(
        !r.listeners
            .iter()
            .any(|l| l.to_string().contains("tracing"))
    );
}
