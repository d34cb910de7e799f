#![allow(clippy::unwrap_used)]
//! Cross-zone traffic with real processes and real Envoy: a global, zone-1 and zone-2 control
//! planes, a zone ingress in each zone, a zone egress in zone-1, echo apps behind kuma-dp
//! sidecars. A client in zone-1 reaches `backend` in zone-2 through zone-2's ingress with mTLS
//! end to end, and through zone-1's egress once the mesh asks for it; a local instance takes the
//! traffic over, hands it back when it stops and takes it again when it returns; calls keep
//! working with zone-2's control plane killed; disabling zone-2 on global removes its endpoints
//! from zone-1. A builtin gateway in zone-1 (HTTP and HTTPS) routes to both zones, and a
//! delegated gateway's outbound reaches zone-2.

use std::time::Duration;

use e2e::free_port;
use e2e::proxies::{
    ProxyType, TwoZones, call, certificate, curl_https, egress_yaml, envoy, ingress_yaml,
    start_two_zones, within,
};
use serde_json::json;

fn mesh(zone_egress: bool) -> serde_json::Value {
    json!({"type": "Mesh", "name": "default",
        "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]},
        "routing": {"zoneEgress": zone_egress}})
}

#[test]
fn cross_zone_traffic_through_the_ingress() {
    let Some(envoy) = envoy("cross_zone_traffic_through_the_ingress") else {
        return;
    };
    let TwoZones {
        global_cp,
        global,
        zone1_cp,
        zone2_cp,
        zone1,
        zone2,
    } = start_two_zones(&envoy);
    let zone2_log = zone2_cp.log.clone();
    let logs = || {
        format!(
            "--- global:\n{}\n--- zone-1:\n{}\n--- zone-2:\n{}",
            global_cp.logs(),
            zone1_cp.logs(),
            std::fs::read_to_string(&zone2_log).unwrap_or_default()
        )
    };

    // mTLS on global: its builtin CA is created there and reaches both zones.
    global.put("/meshes/default", mesh(false));
    for zone in [&zone1, &zone2] {
        within(
            Duration::from_secs(20),
            "the mesh CA arrives from global",
            || {
                zone.get("/meshes/default/secrets/default.ca-builtin-cert-ca-1")
                    .is_some()
            },
            logs,
        );
    }

    // A MeshService made in zone-2 reaches zone-1 through global named and labelled as Kuma's
    // sync names it: `<name>-<hash of mesh, name, zone>`, global's origin, zone-2's zone label
    // and the labels zone-2 computed when it was written.
    zone2.put(
        "/meshes/default/meshservices/redis",
        json!({"type": "MeshService", "mesh": "default", "name": "redis",
            "labels": {"kuma.io/origin": "zone"},
            "spec": {"selector": {"dataplaneTags": {"kuma.io/service": "redis"}},
                "ports": [{"port": 6379, "targetPort": 6379, "appProtocol": "tcp"}]}}),
    );
    let synced_name = model::name::hashed_name("default", "redis", Some("zone-2"), None);
    let path = format!("/meshes/default/meshservices/{synced_name}");
    within(
        Duration::from_secs(20),
        "zone-2's MeshService reaches zone-1",
        || zone1.get(&path).is_some(),
        logs,
    );
    let on_zone1 = zone1.get(&path).unwrap();
    assert_eq!(
        on_zone1["labels"],
        json!({"kuma.io/origin": "global", "kuma.io/zone": "zone-2", "kuma.io/env": "universal",
            "kuma.io/mesh": "default", "kuma.io/display-name": "redis"}),
        "{on_zone1}"
    );
    let on_global = global.get(&path).unwrap();
    assert_eq!(on_global["labels"]["kuma.io/origin"], "zone", "{on_global}");
    assert_eq!(
        zone2.get("/meshes/default/meshservices/redis").unwrap()["labels"],
        json!({"kuma.io/origin": "zone", "kuma.io/zone": "zone-2", "kuma.io/env": "universal",
            "kuma.io/mesh": "default"})
    );

    // An ingress in each zone (zone tokens with scope ingress), an egress in zone-1. Zone-1's
    // ingress and egress share a name, as Kuma allows: each keeps its own admin tunnel (the
    // egress's stats below are read through it).
    let _ingress1 = zone1.kuma_dp(
        ProxyType::Ingress,
        "zone-proxy-1",
        &ingress_yaml("127.0.0.1", free_port()),
        &global.zone_token("zone-1", "ingress"),
    );
    let _ingress2 = zone2.kuma_dp(
        ProxyType::Ingress,
        "ingress-2",
        &ingress_yaml("127.0.0.1", free_port()),
        &global.zone_token("zone-2", "ingress"),
    );
    let egress = zone1.kuma_dp(
        ProxyType::Egress,
        "zone-proxy-1",
        &egress_yaml("127.0.0.1", free_port()),
        &global.zone_token("zone-1", "egress"),
    );

    // zone-2: the only backend.
    let backend2_port = free_port();
    let _backend2_app = zone2.echo("backend-zone-2", backend2_port, Some("zone-2"));
    let _backend2 = zone2.sidecar(
        "backend-zone-2",
        "backend",
        backend2_port,
        None,
        &global.token("backend-zone-2", "default"),
    );

    // zone-1: the client.
    let (web_port, outbound) = (free_port(), free_port());
    let _web_app = zone1.echo("web-1", web_port, Some("zone-1"));
    let web = zone1.sidecar(
        "web-1",
        "web",
        web_port,
        Some(outbound),
        &global.token("web-1", "default"),
    );
    let logs = || {
        format!(
            "{}\n--- kuma-dp web-1:\n{}\n--- kuma-dp egress zone-proxy-1:\n{}",
            logs(),
            web.logs(),
            egress.logs()
        )
    };

    // (a) zone-1 -> zone-2 through zone-2's ingress; the backend sees the caller's identity.
    within(
        Duration::from_secs(60),
        "web in zone-1 reaches backend in zone-2",
        || call(outbound).is_some_and(|b| b["zone"] == "zone-2"),
        logs,
    );
    let answer = call(outbound).unwrap();
    assert_eq!(answer["instance"], "backend-zone-2");
    let xfcc = answer["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_default();
    assert!(xfcc.contains("URI=spiffe://default/web"), "{answer}");
    let ingress = global
        .get("/zoneingresses")
        .and_then(|l| l["items"].as_array().cloned())
        .unwrap_or_default();
    assert_eq!(ingress.len(), 2, "{ingress:?}");
    let zone2_services: Vec<_> = ingress
        .iter()
        .filter(|i| i["zone"] == "zone-2")
        .flat_map(|i| {
            i["availableServices"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|s| s["tags"]["kuma.io/service"].clone())
        .collect();
    assert!(zone2_services.contains(&json!("backend")), "{ingress:?}");

    // MeshTrace across the ingress: web's client span in zone-1 and backend's server span in
    // zone-2 share one trace (the ingress passes the trace context through, untouched).
    let collector = e2e::otlp::otlp_collector();
    global.put(
        "/meshes/default/meshtraces/cross-zone",
        json!({"type": "MeshTrace", "mesh": "default", "name": "cross-zone", "spec": {
            "targetRef": {"kind": "Mesh"},
            "default": {"backends": [{"type": "OpenTelemetry", "openTelemetry": {
                "endpoint": format!("127.0.0.1:{}", collector.port)}}]}}}),
    );
    let zone_of = |span: &proto::kuma::otlp::Span| {
        e2e::otlp::attribute(&span.attributes, "kuma.zone").map(str::to_string)
    };
    let mut spans = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let shared = loop {
        let _ = call(outbound);
        while let Ok(span) = collector.spans.recv_timeout(Duration::from_millis(300)) {
            spans.push(span);
        }
        // OTLP span kinds: 2 server, 3 client.
        let pair = spans.iter().find_map(|client| {
            (client.kind == 3 && zone_of(client).as_deref() == Some("zone-1")).then_some(())?;
            spans
                .iter()
                .find(|server| {
                    server.kind == 2
                        && server.trace_id == client.trace_id
                        && zone_of(server).as_deref() == Some("zone-2")
                })
                .map(|server| server.trace_id.clone())
        });
        if let Some(trace) = pair {
            break trace;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no trace shared by web (zone-1) and backend (zone-2); {} spans: {:?}",
            spans.len(),
            spans
                .iter()
                .map(|s| (s.kind, zone_of(s), s.name.clone()))
                .collect::<Vec<_>>()
        );
    };
    assert_eq!(shared.len(), 16, "a W3C trace id");
    global.delete("/meshes/default/meshtraces/cross-zone");

    // Inspect through global: kumactl pointed at global fetches the config dump of zone-1's
    // web-1 over KDS (global names it with its zone's hash suffix), and the API on global
    // reaches zone-2's ingress the same way.
    let on_global = |list: &str, zone: &str, name: &str| -> String {
        global
            .get(list)
            .and_then(|l| l["items"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .find(|i| {
                i["labels"]["kuma.io/zone"] == zone && i["labels"]["kuma.io/display-name"] == name
            })
            .and_then(|i| i["name"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("{name} of {zone} on global ({list})"))
    };
    let web_on_global = on_global("/meshes/default/dataplanes", "zone-1", "web-1");
    let cfg = global_cp.work_dir.join("kumactl.config");
    e2e::kumactl_config(&cfg, "global", &global.api);
    let dump = e2e::kumactl(
        &cfg,
        &["inspect", "dataplane", &web_on_global, "--type=config-dump"],
    );
    let dump_text = e2e::stdout(&dump);
    assert!(
        dump.status.success() && dump_text.contains(&format!("outbound:127.0.0.1:{outbound}")),
        "config dump through global: {}\n{}",
        e2e::stderr(&dump),
        &dump_text[..dump_text.len().min(2000)]
    );
    let ingress2_on_global = on_global("/zoneingresses", "zone-2", "ingress-2");
    let clusters = global
        .get_text(&format!("/zoneingresses/{ingress2_on_global}/clusters"))
        .expect("zone-2's ingress clusters through global");
    assert!(clusters.contains("default:backend::"), "{clusters}");
    let unknown = e2e::kumactl(&cfg, &["inspect", "dataplane", "nope", "--type=stats"]);
    assert!(!unknown.status.success(), "inspecting a missing dataplane");

    // (a2) Gateways in zone-1, configured on global. A builtin gateway serves HTTP and HTTPS
    // (certificate in a Secret created on global): `/web` goes to web in zone-1, the rest to
    // backend in zone-2 through its ingress. A delegated gateway (an API gateway's sidecar:
    // no inbound, outbounds only) reaches backend in zone-2 with the mesh's mTLS.
    let certs = global_cp.work_dir.join("gateway-certs");
    std::fs::create_dir_all(&certs).unwrap();
    let (ca, pem) = certificate(&certs, "shop.example.com", "shop");
    {
        use base64::Engine;
        let data = base64::engine::general_purpose::STANDARD.encode(&pem);
        global.put(
            "/meshes/default/secrets/shop-cert",
            json!({"type": "Secret", "name": "shop-cert", "mesh": "default", "data": data}),
        );
    }
    let (gw_http, gw_https) = (free_port(), free_port());
    global.put(
        "/meshes/default/meshgateways/edge",
        json!({"type": "MeshGateway", "name": "edge", "mesh": "default",
            "selectors": [{"match": {"kuma.io/service": "edge"}}],
            "conf": {"listeners": [
                {"port": gw_http, "protocol": "HTTP"},
                {"port": gw_https, "protocol": "HTTPS", "hostname": "shop.example.com",
                 "tls": {"mode": "TERMINATE", "certificates": [{"secret": "shop-cert"}]}}]}}),
    );
    global.put(
        "/meshes/default/meshhttproutes/edge-routes",
        json!({"type": "MeshHTTPRoute", "name": "edge-routes", "mesh": "default", "spec": {
            "targetRef": {"kind": "MeshGateway", "name": "edge"},
            "to": [{"targetRef": {"kind": "Mesh"}, "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                 "default": {"backendRefs": [{"kind": "MeshService", "name": "backend"}]}},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/web"}}],
                 "default": {"backendRefs": [{"kind": "MeshService", "name": "web"}]}}]}]}}),
    );
    let gateway = zone1.kuma_dp(
        ProxyType::Dataplane,
        "edge-1",
        "type: Dataplane\nname: {{ name }}\nmesh: default\nnetworking:\n  address: 127.0.0.1\n  gateway:\n    type: BUILTIN\n    tags:\n      kuma.io/service: edge\n",
        &global.token("edge-1", "default"),
    );
    let zone_of = |body: Option<String>| -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(&body?).ok()?;
        v["zone"].as_str().map(str::to_string)
    };
    let http_zone = |path: &str| zone_of(e2e::http_body(gw_http, path));
    within(
        Duration::from_secs(60),
        "the gateway in zone-1 routes / to zone-2 and /web to zone-1",
        || {
            http_zone("/").as_deref() == Some("zone-2")
                && http_zone("/web/x").as_deref() == Some("zone-1")
        },
        || format!("{}\n--- gateway:\n{}", logs(), gateway.logs()),
    );
    within(
        Duration::from_secs(20),
        "the gateway serves shop.example.com over HTTPS",
        || {
            zone_of(curl_https("shop.example.com", gw_https, &ca, "/")).as_deref() == Some("zone-2")
                && zone_of(curl_https("shop.example.com", gw_https, &ca, "/web")).as_deref()
                    == Some("zone-1")
        },
        || format!("{}\n--- gateway:\n{}", logs(), gateway.logs()),
    );
    let delegated_outbound = free_port();
    let delegated = zone1.kuma_dp(
        ProxyType::Dataplane,
        "kong-1",
        &format!("type: Dataplane\nname: {{{{ name }}}}\nmesh: default\nnetworking:\n  address: 127.0.0.1\n  gateway:\n    type: DELEGATED\n    tags:\n      kuma.io/service: kong\n  outbound:\n  - port: {delegated_outbound}\n    tags:\n      kuma.io/service: backend\n"),
        &global.token("kong-1", "default"),
    );
    within(
        Duration::from_secs(30),
        "the delegated gateway reaches backend in zone-2",
        || {
            call(delegated_outbound).is_some_and(|b| {
                b["zone"] == "zone-2"
                    && b["headers"]["x-forwarded-client-cert"]
                        .as_str()
                        .is_some_and(|x| x.contains("URI=spiffe://default/kong"))
            })
        },
        || format!("{}\n--- kong-1:\n{}", logs(), delegated.logs()),
    );
    drop(delegated);
    drop(gateway);

    // (b) With routing.zoneEgress the call leaves zone-1 through its egress, which passes it on
    // by SNI: the backend still sees the caller's identity, and the egress counts connections.
    // Envoy writes the cluster `default:backend` as `default_backend` in stat names.
    let egress_cx = "cluster.default_backend.upstream_cx_total";
    let egress_bytes = "tcp.default_backend.downstream_cx_rx_bytes_total";
    let egress_path = "/zoneegresses/zone-proxy-1";
    global.put("/meshes/default", mesh(true));
    within(
        Duration::from_secs(30),
        "calls pass through zone-1's egress",
        || {
            call(outbound).is_some_and(|b| b["zone"] == "zone-2")
                && zone1.stat(egress_path, egress_cx).is_some_and(|n| n > 0)
        },
        || {
            format!(
                "{}\n--- last call: {:?}\n--- egress stats: {:?}",
                logs(),
                call(outbound),
                zone1.get_text(&format!("{egress_path}/stats")).map(|s| s
                    .lines()
                    .filter(|l| l.contains("default:backend") || l.contains("default_backend"))
                    .collect::<Vec<_>>()
                    .join("\n"))
            )
        },
    );
    let before = zone1.stat(egress_path, egress_bytes).unwrap();
    for _ in 0..5 {
        let b = call(outbound).expect("call through the egress");
        assert_eq!(b["zone"], "zone-2");
        let xfcc = b["headers"]["x-forwarded-client-cert"]
            .as_str()
            .unwrap_or_default();
        assert!(xfcc.contains("URI=spiffe://default/web"), "{b}");
    }
    // The sidecar reuses its upstream connection, so count bytes rather than connections.
    let after = zone1.stat(egress_path, egress_bytes).unwrap();
    assert!(
        after > before,
        "bytes through the egress: {before} -> {after}"
    );
    global.put("/meshes/default", mesh(false));

    // (c) A local instance takes all calls; when it stops they go to zone-2 within 5 s, and
    // they come back when it returns.
    let backend1_port = free_port();
    let _backend1_app = zone1.echo("backend-zone-1", backend1_port, Some("zone-1"));
    let backend1_token = global.token("backend-zone-1", "default");
    let start_backend1 = || {
        let proc = zone1.sidecar(
            "backend-zone-1",
            "backend",
            backend1_port,
            None,
            &backend1_token,
        );
        within(
            Duration::from_secs(30),
            "calls stay in zone-1 while a local backend runs",
            || (0..10).all(|_| call(outbound).is_some_and(|b| b["zone"] == "zone-1")),
            logs,
        );
        proc
    };
    let mut backend1 = start_backend1();
    backend1.signal("-TERM");
    backend1
        .wait(Duration::from_secs(20))
        .expect("kuma-dp stops");
    let took = within(
        Duration::from_secs(5),
        "calls fail over to zone-2",
        || call(outbound).is_some_and(|b| b["zone"] == "zone-2"),
        logs,
    );
    eprintln!("failover to zone-2 took {took:?}");
    let backend1 = start_backend1();

    // A MeshLoadBalancingStrategy on global with locality awareness disabled spreads calls over
    // both zones; deleting it brings them home again.
    global.put(
        "/meshes/default/meshloadbalancingstrategies/spread-backend",
        json!({"type": "MeshLoadBalancingStrategy", "name": "spread-backend", "mesh": "default",
            "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                "default": {"localityAwareness": {"disabled": true}}}]}}),
    );
    within(
        Duration::from_secs(20),
        "with locality awareness disabled, calls reach both zones",
        || {
            let zones: std::collections::BTreeSet<String> = (0..20)
                .filter_map(|_| call(outbound))
                .filter_map(|b| b["zone"].as_str().map(str::to_string))
                .collect();
            zones.len() == 2
        },
        logs,
    );
    global.delete("/meshes/default/meshloadbalancingstrategies/spread-backend");
    within(
        Duration::from_secs(20),
        "without the policy, calls stay in zone-1 again",
        || (0..10).all(|_| call(outbound).is_some_and(|b| b["zone"] == "zone-1")),
        logs,
    );
    drop(backend1);
    within(
        Duration::from_secs(10),
        "calls go to zone-2 again",
        || call(outbound).is_some_and(|b| b["zone"] == "zone-2"),
        logs,
    );

    // (d) The data plane does not depend on zone-2's control plane.
    let mut zone2_cp = zone2_cp;
    zone2_cp.sigkill();
    for _ in 0..10 {
        let b = call(outbound);
        assert!(
            b.as_ref().is_some_and(|b| b["zone"] == "zone-2"),
            "call with zone-2's CP down: {b:?}"
        );
    }

    // (e) zone-2 disabled on global: its endpoints leave zone-1 within 5 s.
    global.put(
        "/zones/zone-2",
        json!({"type": "Zone", "name": "zone-2", "enabled": false}),
    );
    let took = within(
        Duration::from_secs(5),
        "a disabled zone's endpoints vanish",
        || call(outbound).is_none(),
        logs,
    );
    eprintln!("disabled zone's endpoints gone in {took:?}");
}
