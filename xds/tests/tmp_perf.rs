mod common;
use serde_json::json;
use xds::{GatewayEntry, Policy};
#[test]
fn gw_perf() {
    let mut m = common::mesh("http", false, vec![]);
    m.dataplanes.push(common::dataplane("gw", json!({"networking": {"address": "10.0.0.9", "gateway": {"type": "BUILTIN", "tags": {"kuma.io/service": "gw"}}}})));
    m.gateways = vec![GatewayEntry{name: "bench-gw".into(), labels: Default::default(), spec: serde_json::from_value(json!({"selectors": [{"match": {"kuma.io/service": "gw"}}], "conf": {"listeners": [{"port": 8080, "protocol": "HTTP"}]}})).unwrap()}];
    let routes: Vec<Policy<model::specs::policy::MeshHttpRouteSpec>> = (0..100).map(|i| Policy::new(format!("r{i}"), serde_json::from_value(json!({"targetRef": {"kind": "MeshGateway", "name": "bench-gw"},
            "to": [{"targetRef": {"kind": "Mesh"}, "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": format!("/r{i}")}}],
                 "default": {"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-route-version", "value": "1"}]}}], "backendRefs": [{"kind": "MeshService", "name": format!("svc-{}", i % 50)}]}}]}]})).unwrap())).collect();
    m.policies.set(routes);
    m.shared = Some(Default::default());
    let t = std::time::Instant::now();
    let mut r = None;
    for _ in 0..10 { r = Some(xds::sidecar(&m, "gw").unwrap()); }
    eprintln!("per generation: {:?}", t.elapsed() / 10);
    let r = r.unwrap();
    let t = std::time::Instant::now();
    for _ in 0..10 { for l in &r.listeners { xds::wire::encode(xds::wire::LISTENER, l).unwrap(); } }
    eprintln!("per encode: {:?}", t.elapsed() / 10);
}
