#![allow(clippy::unwrap_used)]
//! Cross-zone traffic with real processes and real Envoy: a global, zone-1 and zone-2 control
//! planes, a zone ingress in zone-2, echo apps behind kuma-dp sidecars. A client in zone-1
//! reaches `backend` in zone-2 through zone-2's ingress with mTLS end to end; a local instance
//! takes the traffic over and hands it back when it stops; calls keep working with zone-2's
//! control plane killed; disabling zone-2 on global removes its endpoints from zone-1.

use std::time::Duration;

use e2e::proxies::{Cp, ProxyType, call, envoy, within};
use e2e::{ControlPlane, free_port};
use serde_json::json;

fn start_zone(name: &str, kds_port: u16, token: &std::path::Path) -> ControlPlane {
    let address = format!("grpcs://127.0.0.1:{kds_port}");
    let token = token.display().to_string();
    let mut cp = ControlPlane::start(
        name,
        &[
            ("KUMA_MODE", "zone"),
            ("KUMA_MULTIZONE_ZONE_NAME", name),
            ("KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS", &address),
            ("KUMA_MULTIZONE_ZONE_KDS_TLS_SKIP_VERIFY", "true"),
            ("KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_PATH", &token),
        ],
    );
    cp.wait_ready(Duration::from_secs(60));
    cp
}

fn ingress_yaml(port: u16) -> String {
    format!(
        "type: ZoneIngress\nname: {{{{ name }}}}\nnetworking:\n  address: 127.0.0.1\n  port: {port}\n  advertisedAddress: 127.0.0.1\n  advertisedPort: {port}\n"
    )
}

#[test]
fn cross_zone_traffic_through_the_ingress() {
    let Some(envoy) = envoy("cross_zone_traffic_through_the_ingress") else {
        return;
    };
    let kds_port = free_port();
    let kds = kds_port.to_string();
    let mut global_cp = ControlPlane::start(
        "global",
        &[
            ("KUMA_MODE", "global"),
            ("KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT", &kds),
        ],
    );
    global_cp.wait_ready(Duration::from_secs(60));
    let global = Cp {
        api: global_cp.api(),
        dp_port: 0,
        ca: Default::default(),
        dir: global_cp.work_dir.clone(),
        envoy: envoy.clone(),
    };
    let zone1_cp = start_zone("zone-1", kds_port, &global.zone_token("zone-1", "cp"));
    let zone2_cp = start_zone("zone-2", kds_port, &global.zone_token("zone-2", "cp"));
    let zone2_log = zone2_cp.log.clone();
    let (zone1, zone2) = (
        Cp::of(&zone1_cp, envoy.clone()),
        Cp::of(&zone2_cp, envoy.clone()),
    );
    let logs = || {
        format!(
            "--- global:\n{}\n--- zone-1:\n{}\n--- zone-2:\n{}",
            global_cp.logs(),
            zone1_cp.logs(),
            std::fs::read_to_string(&zone2_log).unwrap_or_default()
        )
    };

    // mTLS on global: its builtin CA is created there and reaches both zones.
    global.put(
        "/meshes/default",
        json!({"type": "Mesh", "name": "default", "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}}),
    );
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

    // zone-2: an ingress (zone token with scope ingress) and the only backend.
    let ingress_port = free_port();
    let _ingress = zone2.kuma_dp(
        ProxyType::Ingress,
        "ingress-2",
        &ingress_yaml(ingress_port),
        &global.zone_token("zone-2", "ingress"),
    );
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
    let logs = || format!("{}\n--- kuma-dp web-1:\n{}", logs(), web.logs());

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
    assert_eq!(ingress.len(), 1, "{ingress:?}");
    assert_eq!(
        ingress[0]["availableServices"][0]["tags"]["kuma.io/service"],
        "backend"
    );

    // (c) A local instance takes all calls; when it stops they go back to zone-2 within 5 s.
    let backend1_port = free_port();
    let _backend1_app = zone1.echo("backend-zone-1", backend1_port, Some("zone-1"));
    let mut backend1 = zone1.sidecar(
        "backend-zone-1",
        "backend",
        backend1_port,
        None,
        &global.token("backend-zone-1", "default"),
    );
    within(
        Duration::from_secs(30),
        "calls stay in zone-1 once a local backend runs",
        || (0..10).all(|_| call(outbound).is_some_and(|b| b["zone"] == "zone-1")),
        logs,
    );
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
