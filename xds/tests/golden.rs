//! Golden files of generated sidecar configuration (`tests/snapshots/`), reviewed like code.
//! Every resource is also encoded against Envoy's schema, so a golden file cannot hold a field
//! Envoy would not accept.

mod common;

use common::{allow_all, check_schema, config, mesh, permission, remote_ingress};
use std::borrow::Borrow;

use serde_json::{Value, json};
use xds::generator::{egress, ingress};
use xds::{MeshContext, Policy};

#[test]
fn plain_tcp() {
    insta::assert_yaml_snapshot!(config(&mesh("tcp", false, vec![]), "web-1"));
}

#[test]
fn http() {
    insta::assert_yaml_snapshot!(config(&mesh("http", false, vec![]), "web-1"));
}

#[test]
fn mtls_on() {
    let m = mesh("http", true, vec![allow_all()]);
    insta::assert_yaml_snapshot!("mtls_on_client", config(&m, "web-1"));
    insta::assert_yaml_snapshot!("mtls_on_server", config(&m, "backend-1"));
}

#[test]
fn traffic_permission_deny() {
    let deny_web = permission(
        "deny-web",
        json!({"targetRef": {"kind": "MeshService", "name": "backend"},
        "from": [{"targetRef": {"kind": "MeshService", "name": "web"}, "default": {"action": "Deny"}},
                 {"targetRef": {"kind": "MeshSubset", "tags": {"team": "ops"}}, "default": {"action": "AllowWithShadowDeny"}}]}),
    );
    insta::assert_yaml_snapshot!(config(
        &mesh("tcp", true, vec![allow_all(), deny_web]),
        "backend-1"
    ));
}

#[test]
fn mtls_without_permissions_allows_nobody() {
    let r = xds::sidecar(&mesh("tcp", true, vec![]), "backend-1").unwrap();
    let rbac = &r.listeners[0]["filter_chains"][0]["filters"][0];
    assert_eq!(rbac["name"], "envoy.filters.network.rbac");
    assert_eq!(
        rbac["typed_config"]["rules"],
        json!({"action": "ALLOW", "policies": {}})
    );
}

#[test]
fn unknown_proxy_is_an_error() {
    assert!(xds::sidecar(&mesh("tcp", false, vec![]), "nope").is_err());
}

#[test]
fn identity_names_every_service_and_tag() {
    let m = mesh("http", true, vec![]);
    let uris = xds::generator::sidecar::identity_uris("default", &m.dataplanes[1]);
    assert_eq!(
        uris,
        [
            "spiffe://default/backend",
            "kuma://kuma.io/protocol/http",
            "kuma://version/v1"
        ]
    );
}

/// zone-1's view: backend runs here (two ready instances) and in zone-2 and zone-3, whose
/// ingresses are priority 1, weighted by their instance counts; zone-1's own ingress, another
/// mesh's services and zone-4 (which has no backend) contribute nothing.
#[test]
fn cross_zone_endpoints() {
    let mut m = mesh("http", true, vec![allow_all()]);
    m.local_zone = "zone-1".into();
    m.remote_ingresses = vec![
        remote_ingress(
            "zone-2",
            "192.168.2.1",
            json!([{"tags": {"kuma.io/service": "backend", "kuma.io/protocol": "http"}, "instances": 3, "mesh": "default"},
                   {"tags": {"kuma.io/service": "backend", "kuma.io/protocol": "http"}, "instances": 9, "mesh": "other"}]),
        ),
        remote_ingress(
            "zone-3",
            "192.168.3.1",
            json!([{"tags": {"kuma.io/service": "backend", "kuma.io/protocol": "http", "version": "v3"}, "instances": 1, "mesh": "default"}]),
        ),
        remote_ingress(
            "zone-4",
            "192.168.4.1",
            json!([{"tags": {"kuma.io/service": "web"}, "instances": 1, "mesh": "default"}]),
        ),
        remote_ingress(
            "zone-1",
            "192.168.1.1",
            json!([{"tags": {"kuma.io/service": "backend"}, "instances": 2, "mesh": "default"}]),
        ),
    ];
    let r = xds::sidecar(&m, "web-1").expect("generate");
    check_schema(&r);
    insta::assert_yaml_snapshot!(r.endpoints);

    // Without mTLS nothing leaves the zone: the remote ingress routes on the TLS SNI.
    m.mtls = false;
    let plain = xds::sidecar(&m, "web-1").expect("generate");
    let backend = plain
        .endpoints
        .iter()
        .find(|e| e["cluster_name"] == "backend")
        .expect("backend endpoints");
    assert_eq!(backend["endpoints"].as_array().map(Vec::len), Some(1));
}

#[test]
fn zone_ingress() {
    let mut other = mesh("tcp", true, vec![]);
    other.mesh = "other".into();
    let plain = {
        let mut m = mesh("tcp", false, vec![]);
        m.mesh = "plain".into();
        m
    };
    let meshes = [mesh("http", true, vec![allow_all()]), other, plain];
    let listener = xds::ZoneProxyListener {
        address: "10.0.0.9".into(),
        port: 10001,
    };
    let r = ingress::generate(&listener, &meshes);
    check_schema(&r);
    insta::assert_yaml_snapshot!(
        json!({"listeners": r.listeners, "clusters": r.clusters, "endpoints": r.endpoints})
    );
    assert!(
        r.secret_names.is_empty(),
        "the ingress holds no mesh secret"
    );

    let available = serde_json::to_value(ingress::available_services(&meshes[..1])).unwrap();
    insta::assert_yaml_snapshot!("zone_ingress_available_services", available);

    // Nothing to serve: no listener (Envoy refuses one without filter chains).
    assert!(ingress::generate(&listener, &[]).listeners.is_empty());
}

fn zone_1_view() -> MeshContext {
    let mut m = mesh("http", true, vec![allow_all()]);
    m.local_zone = "zone-1".into();
    m.remote_ingresses = vec![
        remote_ingress(
            "zone-1",
            "192.168.1.1",
            json!([{"tags": {"kuma.io/service": "backend"}, "instances": 2, "mesh": "default"}]),
        ),
        remote_ingress(
            "zone-2",
            "192.168.2.1",
            json!([{"tags": {"kuma.io/service": "backend", "version": "v1"}, "instances": 2, "mesh": "default"},
                   {"tags": {"kuma.io/service": "backend", "version": "v2"}, "instances": 1, "mesh": "default"},
                   {"tags": {"kuma.io/service": "db"}, "instances": 1, "mesh": "default"},
                   {"tags": {"kuma.io/service": "billing"}, "instances": 4, "mesh": "other"}]),
        ),
        remote_ingress(
            "zone-3",
            "192.168.3.1",
            json!([{"tags": {"kuma.io/service": "backend"}, "instances": 1, "mesh": "default"},
                   {"tags": {"kuma.io/service": "httpbin"}, "instances": 1, "mesh": "default", "externalService": true}]),
        ),
    ];
    m.zone_egress = true;
    m
}

/// zone-1's egress: one SNI chain per service that runs in other zones, passed (still
/// encrypted) to those zones' ingresses weighted by their instances. Its own zone's ingress,
/// external services and meshes that do not route through egresses contribute nothing.
#[test]
fn zone_egress() {
    let default = zone_1_view();
    let mut direct = zone_1_view();
    direct.mesh = "other".into();
    direct.zone_egress = false;
    let listener = xds::ZoneProxyListener {
        address: "10.0.0.8".into(),
        port: 10002,
    };
    let r = egress::generate(&listener, &[default, direct], &Default::default());
    check_schema(&r);
    insta::assert_yaml_snapshot!(
        json!({"listeners": r.listeners, "clusters": r.clusters, "endpoints": r.endpoints})
    );
    assert!(r.secret_names.is_empty(), "the egress holds no mesh secret");
    assert!(
        egress::generate(&listener, &[], &Default::default())
            .listeners
            .is_empty()
    );
}

/// With `routing.zoneEgress`, a sidecar's cross-zone endpoints are this zone's egresses (one
/// group per remote zone, so priorities and weights stay as without it); with no egress in the
/// zone nothing leaves it.
#[test]
fn sidecar_through_zone_egress() {
    let mut m = zone_1_view();
    m.local_egresses = vec![("10.0.0.8".into(), 10002)];
    let r = xds::sidecar(&m, "web-1").expect("generate");
    check_schema(&r);
    let backend = r
        .endpoints
        .iter()
        .find(|e| e["cluster_name"] == "backend")
        .expect("backend endpoints");
    insta::assert_yaml_snapshot!(backend);

    m.local_egresses.clear();
    let r = xds::sidecar(&m, "web-1").expect("generate");
    let backend = r
        .endpoints
        .iter()
        .find(|e| e["cluster_name"] == "backend")
        .expect("backend endpoints");
    let groups = backend["endpoints"].as_array().expect("groups");
    assert_eq!(groups.len(), 1, "only the local instances: {backend}");
    assert!(groups[0].get("priority").is_none());
}

fn lb_policy(
    name: &str,
    spec: Value,
) -> Policy<model::specs::policy::MeshLoadBalancingStrategySpec> {
    Policy::new(
        name,
        serde_json::from_value(spec).expect("MeshLoadBalancingStrategy spec"),
    )
}

/// The parts of web-1's config a MeshLoadBalancingStrategy shapes: the backend cluster, its
/// endpoints and the outbound route.
fn backend_view(m: &MeshContext) -> Value {
    let r = xds::sidecar(m, "web-1").expect("generate");
    check_schema(&r);
    fn find<T: std::borrow::Borrow<Value>>(items: &[T], field: &str) -> Value {
        items
            .iter()
            .map(Borrow::borrow)
            .find(|i: &&Value| i[field] == "backend")
            .cloned()
            .expect("backend")
    }
    let listener = r
        .listeners
        .iter()
        .find(|l| l["name"] == "outbound:127.0.0.1:10001")
        .expect("backend outbound");
    json!({
        "cluster": find(&r.clusters, "name"),
        "endpoints": find(&r.endpoints, "cluster_name"),
        "route": listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0],
    })
}

fn zone_1_with_three_remote_zones() -> MeshContext {
    let mut m = zone_1_view();
    m.zone_egress = false;
    m.remote_ingresses.push(remote_ingress(
        "zone-4",
        "192.168.4.1",
        json!([{"tags": {"kuma.io/service": "backend"}, "instances": 5, "mesh": "default"}]),
    ));
    // Every backend speaks HTTP, so the outbound is an HTTP route that can hash requests.
    for ingress in &mut m.remote_ingresses {
        for s in &mut ingress.services {
            s.tags.insert("kuma.io/protocol".into(), "http".into());
        }
    }
    // web-1 and backend-1 run on host-a; backend-2 elsewhere in the same rack.
    let label = |m: &mut MeshContext, dp: &str, labels: Value| {
        let entry = m.dataplanes.iter_mut().find(|d| d.name == dp).expect("dp");
        entry.labels = serde_json::from_value(labels).expect("labels");
    };
    label(&mut m, "web-1", json!({"host": "host-a", "rack": "r1"}));
    label(&mut m, "backend-1", json!({"host": "host-a", "rack": "r1"}));
    label(&mut m, "backend-2", json!({"host": "host-b", "rack": "r1"}));
    m
}

/// Affinity groups in zone-1 (same host 90, same rack 9, the rest 1, locality-weighted), then
/// zone-3 (Only) and everything but zone-3 (AnyExcept) as the next priorities; a rule for
/// callers in another zone does not apply; a 70% threshold; RingHash from the mesh-wide entry
/// merged field by field with the backend entry (its hash list replaces the mesh-wide one).
#[test]
fn load_balancing_strategy() {
    let mut m = zone_1_with_three_remote_zones();
    m.policies.set(vec![
        lb_policy(
            "mesh-wide",
            json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {
                "loadBalancer": {"type": "RingHash", "ringHash": {"minRingSize": 64, "hashPolicies": [{"type": "Header", "header": {"name": "x-user"}}]}}}}]}),
        ),
        lb_policy(
            "backend",
            json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {
                "localityAwareness": {
                    "localZone": {"affinityTags": [{"key": "host"}, {"key": "rack"}]},
                    "crossZone": {
                        "failover": [
                            {"from": {"zones": ["zone-9"]}, "to": {"type": "Only", "zones": ["zone-2"]}},
                            {"to": {"type": "Only", "zones": ["zone-3"]}},
                            {"to": {"type": "None"}},
                            {"to": {"type": "AnyExcept", "zones": ["zone-3"]}}
                        ],
                        "failoverThreshold": {"percentage": 70}
                    }
                },
                "loadBalancer": {"type": "RingHash", "ringHash": {"hashFunction": "MurmurHash2", "maxRingSize": 4096,
                    "hashPolicies": [{"type": "Header", "header": {"name": "x-user"}, "terminal": true},
                                     {"type": "Cookie", "cookie": {"name": "session", "ttl": "1h", "path": "/"}},
                                     {"type": "Connection", "connection": {"sourceIP": true}}]}}}}]}),
        ),
    ]);
    insta::assert_yaml_snapshot!(backend_view(&m));
}

/// `disabled: true`: every zone at the same priority, weighted by instances; LeastRequest.
#[test]
fn load_balancing_disabled_locality() {
    let mut m = zone_1_with_three_remote_zones();
    m.policies.set(vec![lb_policy(
        "spread",
        json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {
            "localityAwareness": {"disabled": true},
            "loadBalancer": {"type": "LeastRequest", "leastRequest": {"choiceCount": 3, "activeRequestBias": "1.5"}}}}]}),
    )]);
    let view = backend_view(&m);
    insta::assert_yaml_snapshot!(view);
    let groups = view["endpoints"]["endpoints"].as_array().expect("groups");
    assert!(
        groups.iter().all(|g| g.get("priority").is_none()),
        "{groups:?}"
    );

    // A policy for another destination or for other proxies changes nothing.
    let mut other = zone_1_with_three_remote_zones();
    other.policies.set(vec![
        lb_policy(
            "db-only",
            json!({"to": [{"targetRef": {"kind": "MeshService", "name": "db"}, "default": {"localityAwareness": {"disabled": true}}}]}),
        ),
        lb_policy(
            "others",
            json!({"targetRef": {"kind": "MeshSubset", "tags": {"team": "ops"}}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {"localityAwareness": {"disabled": true}}}]}),
        ),
    ]);
    assert_eq!(
        backend_view(&other),
        backend_view(&zone_1_with_three_remote_zones())
    );
}

/// Envoy itself accepts the load-balancing shapes (priorities, locality weights, hash
/// policies): each backend view becomes a static bootstrap for `envoy --mode validate`.
#[test]
fn envoy_validates_load_balancing_configs() {
    let Some(envoy) = common::envoy_or_skip("the load-balancing configs") else {
        return;
    };
    let views = [
        ("strategy", {
            let mut m = zone_1_with_three_remote_zones();
            m.policies.set(vec![lb_policy(
                "p",
                json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {
                    "localityAwareness": {"localZone": {"affinityTags": [{"key": "host"}, {"key": "rack"}]},
                        "crossZone": {"failover": [{"to": {"type": "Only", "zones": ["zone-3"]}}, {"to": {"type": "Any"}}],
                                      "failoverThreshold": {"percentage": 70}}},
                    "loadBalancer": {"type": "Maglev", "maglev": {"tableSize": 65537,
                        "hashPolicies": [{"type": "QueryParameter", "queryParameter": {"name": "u"}}]}}}}]}),
            )]);
            backend_view(&m)
        }),
        ("least-request", {
            let mut m = zone_1_with_three_remote_zones();
            m.policies.set(vec![lb_policy(
                "p",
                json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"localityAwareness": {"disabled": true},
                    "loadBalancer": {"type": "LeastRequest", "leastRequest": {"choiceCount": 3, "activeRequestBias": "1.5"}}}}]}),
            )]);
            backend_view(&m)
        }),
    ];
    for (name, view) in views {
        let mut cluster = view["cluster"].clone();
        let c = cluster.as_object_mut().expect("cluster object");
        // Static, without the SDS-backed TLS: what is checked is the balancing.
        c.remove("transport_socket");
        c.remove("eds_cluster_config");
        c.insert("type".into(), json!("STATIC"));
        c.insert("load_assignment".into(), view["endpoints"].clone());
        let bootstrap = json!({"static_resources": {
            "clusters": [cluster],
            "listeners": [{
                "name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10001}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "l",
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                    "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [view["route"].clone()]}]}
                }}]}]
            }]
        }});
        common::envoy_accepts(&envoy, name, &bootstrap);
    }
}

/// An outbound selecting a subset reaches only the zones whose ingress advertises it, with
/// their count of matching instances; the ingress routes that SNI (see the zone_ingress golden
/// file). A subset wider than ingresses route stays in this zone.
#[test]
fn subset_outbounds_across_zones() {
    let mut m = zone_1_view();
    m.zone_egress = false;
    let web = m
        .dataplanes
        .iter_mut()
        .find(|d| d.name == "web-1")
        .expect("web-1");
    web.spec.networking.outbound = serde_json::from_value(json!([
        {"port": 10003, "tags": {"kuma.io/service": "backend", "version": "v2"}},
        {"port": 10004, "tags": {"kuma.io/service": "backend", "version": "v2", "a": "1", "b": "2"}}
    ]))
    .expect("outbounds");
    let r = xds::sidecar(&m, "web-1").expect("generate");
    check_schema(&r);
    let cluster_of = |port: u16| {
        let l = r
            .listeners
            .iter()
            .find(|l| l["name"] == format!("outbound:127.0.0.1:{port}"))
            .expect("outbound listener");
        let filter = &l["filter_chains"][0]["filters"][0]["typed_config"];
        filter["cluster"]
            .as_str()
            .or(
                filter["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"]
                    .as_str(),
            )
            .expect("cluster")
            .to_string()
    };
    let groups = |cluster: &str| {
        r.endpoints
            .iter()
            .find(|e| e["cluster_name"] == cluster)
            .and_then(|e| e["endpoints"].as_array().cloned())
            .expect("endpoints")
    };
    let v2 = groups(&cluster_of(10003));
    let remote: Vec<_> = v2.iter().filter(|g| g["priority"] == 1).collect();
    assert_eq!(remote.len(), 1, "{v2:?}");
    assert_eq!(remote[0]["locality"]["zone"], "zone-2");
    assert_eq!(remote[0]["lb_endpoints"][0]["load_balancing_weight"], 1);
    let sni = r
        .clusters
        .iter()
        .find(|c| c["name"] == cluster_of(10003))
        .map(|c| c["transport_socket"]["typed_config"]["sni"].clone());
    assert_eq!(sni, Some(json!("backend{mesh=default,version=v2}")));

    let wide = groups(&cluster_of(10004));
    assert!(wide.iter().all(|g| g.get("priority").is_none()), "{wide:?}");
}

/// A snapshot's proxies share resolved destinations and endpoint layouts; what each gets must
/// be exactly what it gets computing everything alone, in every context above, with and
/// without a caller-dependent layout (affinity tags), and the second proxy must reuse the
/// first one's work.
#[test]
fn shared_work_changes_no_proxy_config() {
    let mut with_lb = zone_1_with_three_remote_zones();
    with_lb.policies.set(vec![lb_policy(
        "disabled",
        json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {
            "localityAwareness": {"disabled": true}, "loadBalancer": {"type": "LeastRequest"}}}]}),
    )]);
    let mut with_affinity = zone_1_with_three_remote_zones();
    with_affinity.policies.set(vec![lb_policy(
        "affinity",
        json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {
            "localityAwareness": {"localZone": {"affinityTags": [{"key": "version"}]}}}}]}),
    )]);
    // Proxies selected by different policies must not share each other's rules.
    let mut with_timeouts = zone_1_view();
    let mut web_2 = with_timeouts.dataplane("web-1").expect("web-1").clone();
    web_2.name = "web-2".into();
    with_timeouts.dataplanes.push(web_2);
    let timeout = |name: &str, spec: Value| -> Policy<model::specs::policy::MeshTimeoutSpec> {
        Policy::new(
            name,
            serde_json::from_value(spec).expect("MeshTimeout spec"),
        )
    };
    with_timeouts.policies.set(vec![
        timeout(
            "all",
            json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"},
                "default": {"connectionTimeout": "3s", "http": {"requestTimeout": "10s"}}}]}),
        ),
        timeout(
            "web-1-only",
            json!({"targetRef": {"kind": "Dataplane", "name": "web-1"}, "to": [{"targetRef": {"kind": "Mesh"},
                "default": {"http": {"requestTimeout": "2s"}}}]}),
        ),
    ]);
    for (what, alone) in [
        ("timeouts", with_timeouts),
        ("plain", mesh("tcp", false, vec![])),
        ("mtls", mesh("http", true, vec![allow_all()])),
        ("zone-1", zone_1_view()),
        ("lb", with_lb),
        ("affinity", with_affinity),
    ] {
        let mut shared = alone.clone();
        let work = std::sync::Arc::new(xds::SharedWork::default());
        shared.shared = Some(work.clone());
        let names: Vec<String> = alone.dataplanes.iter().map(|d| d.name.clone()).collect();
        for name in names.iter().chain(&names) {
            let want = xds::sidecar(&alone, name).expect("alone");
            let got = xds::sidecar(&shared, name).expect("shared");
            assert_eq!(got.listeners, want.listeners, "{what}: {name} listeners");
            assert_eq!(got.clusters, want.clusters, "{what}: {name} clusters");
            assert_eq!(got.endpoints, want.endpoints, "{what}: {name} endpoints");
        }
        // web-1 calls backend in every context: its destination was resolved for all.
        assert_ne!(
            format!("{work:?}"),
            "SharedWork { destinations: 0, assignments: 0 }",
            "{what}: nothing was shared"
        );
    }
}

/// When only other Dataplanes, or policies that select other proxies, change, a proxy's
/// endpoints laid out again from its plan are exactly what generating everything again gives,
/// and its listeners and clusters are indeed unchanged; whatever could change them (the proxy
/// itself, a policy selecting it, a destination's protocol, MeshTLS) asks for a whole
/// generation instead.
#[test]
fn endpoints_refresh_like_a_full_generation() {
    let mut with_affinity = zone_1_with_three_remote_zones();
    with_affinity.policies.set(vec![lb_policy(
        "affinity",
        json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {
            "localityAwareness": {"localZone": {"affinityTags": [{"key": "version"}]}}}}]}),
    )]);
    let backend = |name: &str, address: &str, protocol: &str, ready: bool| {
        common::dataplane(
            name,
            json!({"networking": {"address": address, "inbound": [{"port": 20081,
                "servicePort": 8081, "health": {"ready": ready},
                "tags": {"kuma.io/service": "backend", "kuma.io/protocol": protocol, "version": "v1"}}]}}),
        )
    };
    let snapshot = |mut m: MeshContext| {
        m.shared = Some(std::sync::Arc::default());
        m
    };
    // Routes split backend's traffic over its versions: each version is a destination too.
    let mut routed = mesh("http", true, vec![allow_all()]);
    routed.policies.set(vec![Policy::new(
        "split",
        serde_json::from_value::<model::specs::policy::MeshHttpRouteSpec>(json!({
            "targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "default": {"backendRefs": [
                    {"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": "v1"}, "weight": 90},
                    {"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": "v2"}, "weight": 10}]}}]}]}))
        .expect("MeshHTTPRoute spec"),
    )]);
    let mut refreshed = 0;
    // Whether backend is TCP already (zone-1's ingresses advertise it without a protocol).
    for (what, before, backend_tcp) in [
        ("plain", mesh("tcp", false, vec![]), true),
        ("mtls", mesh("http", true, vec![allow_all()]), false),
        ("zone-1", zone_1_view(), true),
        ("affinity", with_affinity, false),
        ("routes", routed, false),
    ] {
        let protocol = if before.mtls { "http" } else { "tcp" };
        let added = {
            let mut m = before.clone();
            m.dataplanes
                .push(backend("backend-9", "10.0.0.9", protocol, true));
            m
        };
        let down = {
            let mut m = before.clone();
            m.dataplanes.retain(|d| d.name != "backend-1");
            m.dataplanes
                .push(backend("backend-1", "10.0.0.2", protocol, false));
            m
        };
        let other_protocol = {
            let mut m = before.clone();
            m.dataplanes
                .push(backend("backend-9", "10.0.0.9", "grpc", true));
            m
        };
        let proxy_changed = {
            let mut m = added.clone();
            let web = m
                .dataplanes
                .iter_mut()
                .find(|d| d.name == "web-1")
                .expect("web-1");
            web.labels.insert("team".into(), "a".into());
            m
        };
        let policy_changed = {
            let mut m = added.clone();
            m.policies.set(vec![lb_policy(
                "random",
                json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"},
                    "default": {"loadBalancer": {"type": "Random"}}}]}),
            )]);
            m
        };
        // Selects only backend-1: web-1's listeners and clusters stay as they were.
        let other_proxy_policy = {
            let mut m = added.clone();
            let mut lbs = m
                .policies
                .of::<model::specs::policy::MeshLoadBalancingStrategySpec>()
                .to_vec();
            lbs.push(lb_policy(
                "backend-1-only",
                json!({"targetRef": {"kind": "Dataplane", "name": "backend-1"},
                    "to": [{"targetRef": {"kind": "Mesh"}, "default": {"loadBalancer": {"type": "Random"}}}]}),
            ));
            m.policies.set(lbs);
            m
        };
        let with_tls = {
            let mut m = added.clone();
            m.policies.set(vec![Policy::new(
                "tls",
                serde_json::from_value::<model::specs::policy::MeshTlsSpec>(json!({
                    "targetRef": {"kind": "Mesh"},
                    "from": [{"targetRef": {"kind": "Mesh"}, "default": {"mode": "Permissive"}}]}))
                .expect("MeshTLS spec"),
            )]);
            m
        };
        // A per-route policy (top-level MeshHTTPRoute) selects no proxy as a whole.
        let per_route = {
            let mut m = added.clone();
            m.policies.set(vec![Policy::new(
                "per-route",
                serde_json::from_value::<model::specs::policy::MeshTimeoutSpec>(json!({
                    "targetRef": {"kind": "MeshHTTPRoute", "name": "split"},
                    "to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"requestTimeout": "2s"}}}]}))
                .expect("MeshTimeout spec"),
            )]);
            m
        };
        let before = snapshot(before);
        let first = xds::sidecar(&before, "web-1").expect("generate");
        for (change, after, expect_refresh) in [
            ("an instance added", added, true),
            ("an instance down", down, true),
            // Disagreeing protocols make TCP: a change only where backend was not TCP already.
            ("protocols disagree", other_protocol, backend_tcp),
            ("the proxy changed", proxy_changed, false),
            ("a policy changed", policy_changed, false),
            ("another proxy's policy", other_proxy_policy, true),
            ("MeshTLS in the mesh", with_tls, false),
            ("a per-route policy", per_route, false),
        ] {
            let after = snapshot(after);
            let full = xds::sidecar(&after, "web-1").expect("generate");
            match xds::refresh_endpoints(&before, &after, "web-1", &first.plan) {
                Some(endpoints) => {
                    assert!(expect_refresh, "{what}, {change}: laid out again");
                    refreshed += 1;
                    assert_eq!(endpoints, full.endpoints, "{what}, {change}: endpoints");
                    assert_eq!(full.listeners, first.listeners, "{what}, {change}");
                    assert_eq!(full.clusters, first.clusters, "{what}, {change}");
                }
                None => assert!(!expect_refresh, "{what}, {change}: not laid out again"),
            }
        }
    }
    assert_eq!(refreshed, 17);
}
