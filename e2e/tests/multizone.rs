//! A global and two zones as real `kuma-cp` processes, syncing over KDS on loopback.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::time::Instant;

use e2e::{ControlPlane, free_port};
use serde_json::{Value, json};

fn http() -> reqwest::blocking::Client {
    e2e::blocking_http(Duration::from_secs(10))
}

type CertFiles = (std::path::PathBuf, std::path::PathBuf);

/// TLS is on, as by default; with `cert` the certificate comes from files instead of being
/// generated (a restarted global on a memory store keeps its certificate that way).
fn start_global(
    kds_port: u16,
    store_env: &[(String, String)],
    cert: Option<&CertFiles>,
) -> ControlPlane {
    let port = kds_port.to_string();
    let (c, k) = cert
        .map(|(c, k)| (c.display().to_string(), k.display().to_string()))
        .unwrap_or_default();
    let mut env = vec![
        ("KUMA_MODE", "global"),
        ("KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT", port.as_str()),
    ];
    env.extend(store_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if cert.is_some() {
        env.push(("KUMA_MULTIZONE_GLOBAL_KDS_TLS_CERT_FILE", &c));
        env.push(("KUMA_MULTIZONE_GLOBAL_KDS_TLS_KEY_FILE", &k));
    }
    let mut cp = ControlPlane::start("global", &env);
    cp.wait_ready(Duration::from_secs(60));
    cp
}

/// A zone token from global's API (as admin: the test runs on global's host), in a file.
fn issue_token(global: &ControlPlane, zone: &str, file: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http()
            .post(format!("{}/tokens/zone", global.api()))
            .json(&json!({"zone": zone, "scope": ["cp"], "validFor": "24h"}))
            .send()
            .unwrap();
        let status = r.status();
        let body = r.text().unwrap();
        if status.is_success() {
            std::fs::write(file, body).unwrap();
            return;
        }
        // The signing key is created by the leader just after start-up.
        assert!(Instant::now() < deadline, "zone token: {status} {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Global's generated KDS certificate and key, read the way an operator would (the GlobalSecret,
/// from global's host) and kept in files.
fn kds_cert_files(global: &ControlPlane) -> CertFiles {
    use base64::Engine;
    let deadline = Instant::now() + Duration::from_secs(10);
    let secret: Value = loop {
        let r = http()
            .get(format!("{}/globalsecrets/kds-server-tls", global.api()))
            .send()
            .unwrap();
        if r.status().is_success() {
            break r.json().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no KDS certificate secret on global"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(secret["data"].as_str().unwrap())
        .unwrap();
    let pair: Value = serde_json::from_slice(&bytes).unwrap();
    let dir = std::env::temp_dir().join(format!("kuma-e2e-kds-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("kds.crt"), dir.join("kds.key"));
    std::fs::write(&cert, pair["cert_pem"].as_str().unwrap()).unwrap();
    std::fs::write(&key, pair["key_pem"].as_str().unwrap()).unwrap();
    (cert, key)
}

fn start_zone(
    name: &str,
    kds_port: u16,
    root_ca: Option<&std::path::Path>,
    token: Option<&std::path::Path>,
    store_env: &[(String, String)],
) -> ControlPlane {
    let address = format!("grpcs://127.0.0.1:{kds_port}");
    // Without a root CA the zone encrypts but skips verifying global, as Kuma's guide does.
    let ca = root_ca.map(|c| c.display().to_string());
    let token = token.map(|t| t.display().to_string());
    let mut env = vec![
        ("KUMA_MODE", "zone"),
        ("KUMA_MULTIZONE_ZONE_NAME", name),
        ("KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS", &address),
    ];
    match &ca {
        Some(ca) => env.push(("KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE", ca)),
        None => env.push(("KUMA_MULTIZONE_ZONE_KDS_TLS_SKIP_VERIFY", "true")),
    }
    if let Some(t) = &token {
        env.push(("KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_PATH", t));
    }
    env.extend(store_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut cp = ControlPlane::start(name, &env);
    cp.wait_ready(Duration::from_secs(60));
    cp
}

fn put(cp: &ControlPlane, path: &str, body: Value) {
    let r = http()
        .put(format!("{}{path}", cp.api()))
        .json(&body)
        .send()
        .unwrap();
    assert!(
        r.status().is_success(),
        "PUT {path}: {} {}",
        r.status(),
        r.text().unwrap_or_default()
    );
}

fn get(cp: &ControlPlane, path: &str) -> Value {
    http()
        .get(format!("{}{path}", cp.api()))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn list(cp: &ControlPlane, path: &str) -> Vec<Value> {
    get(cp, path)["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Polls until `check` holds for the document at `path`, or fails with what was last seen.
fn eventually_json(
    cp: &ControlPlane,
    path: &str,
    within: Duration,
    what: &str,
    check: impl Fn(&Value) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        let doc = get(cp, path);
        if check(&doc) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not true within {within:?}; {path} = {doc:#}\n{}",
            cp.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn eventually(
    cp: &ControlPlane,
    path: &str,
    within: Duration,
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) {
    eventually_json(cp, path, within, what, |doc| {
        check(doc["items"].as_array().map_or(&[], Vec::as_slice))
    });
}

fn wait_for_log(cp: &ControlPlane, needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !cp.logs().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} not logged within {within:?}:\n{}",
            cp.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn kumactl_ok(cfg: &std::path::Path, args: &[&str]) -> String {
    let out = e2e::kumactl(cfg, args);
    assert!(
        out.status.success(),
        "kumactl {args:?}: {}",
        e2e::stderr(&out)
    );
    e2e::stdout(&out)
}

/// Points kumactl's config at `cp` under `name`, making it the active control plane.
fn add_control_plane(cfg: &std::path::Path, name: &str, cp: &ControlPlane) {
    e2e::kumactl_config(cfg, name, &cp.api());
}

/// The status column of `name`'s row in a kumactl table.
fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default()
}

fn timeout(name: &str) -> Value {
    json!({"type": "MeshTimeout", "name": name, "mesh": "default", "spec": {
        "targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "20s"}}]}})
}

/// The names of `items`, leaving out the policies a control plane creates with every mesh
/// (`mesh-timeout-all-<mesh>` and the others), which the checks below are not about.
fn names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .filter(|i| !is_mesh_default(i))
        .map(|i| i["name"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Whether `item` is one of the default policies of its mesh (by its name on the control plane
/// that created it, its display name where it was synced to).
fn is_mesh_default(item: &Value) -> bool {
    let name = item["labels"]["kuma.io/display-name"]
        .as_str()
        .or(item["name"].as_str())
        .unwrap_or("");
    let mesh = item["mesh"].as_str().unwrap_or("");
    [
        "mesh-timeout-all",
        "mesh-gateways-timeout-all",
        "mesh-circuit-breaker-all",
        "mesh-retry-all",
    ]
    .iter()
    .any(|prefix| name == format!("{prefix}-{mesh}"))
}

#[test]
fn global_and_two_zones_sync_both_ways() {
    scenario(&[], false);
}

/// A test Postgres with a migrated database, and the `KUMA_STORE_*` to use it; `None` where
/// Postgres cannot run (the harness fails the test instead under CI).
fn migrated_postgres(
    db_prefix: &str,
) -> Option<(
    store::testing::postgres::TestPostgres,
    Vec<(String, String)>,
)> {
    let pg = store::testing::postgres::TestPostgres::start()?;
    let db = pg.create_database(db_prefix);
    let env = e2e::postgres_env(pg.port, store::testing::postgres::TEST_USER, &db);
    let out = e2e::migrate(&env);
    assert!(out.status.success(), "{}", e2e::stderr(&out));
    Some((pg, env))
}

#[test]
fn global_on_postgres_and_two_zones_sync_both_ways() {
    let Some((_pg, env)) = migrated_postgres("multizone") else {
        return;
    };
    scenario(&env, true);
}

/// Global as three replicas on the raft store (loopback ports): the scenario talks to replica
/// 1, kills and restarts it; replicas 2 and 3 keep the cluster's quorum throughout.
#[test]
fn global_on_three_raft_replicas_and_two_zones_sync_both_ways() {
    let dir = store::testing::temp_dir("kuma-e2e-raft-global");
    let envs = e2e::raft_replicas_env(3, &dir, "multizone-raft-token-0123");
    let env = |id: usize| envs[id - 1].clone();
    let mut others: Vec<ControlPlane> = [2, 3]
        .into_iter()
        .map(|id| {
            let mut e = env(id);
            e.push(("KUMA_MODE".into(), "global".into()));
            let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            ControlPlane::start(&format!("global-{id}"), &e)
        })
        .collect();
    scenario(&env(1), true);
    for other in &mut others {
        assert!(
            other.child.try_wait().unwrap().is_none(),
            "a global replica exited:\n{}",
            other.logs()
        );
        other.wait_ready(Duration::from_secs(10));
    }
}

/// The multi-zone story end to end. `durable`: global's store survives its restart, so its
/// certificate, zone-token signing key and zone resources come back with it.
fn scenario(global_store: &[(String, String)], durable: bool) {
    let kds_port = free_port();
    let mut global = start_global(kds_port, global_store, None);
    let cert = kds_cert_files(&global);
    let tokens = cert.0.parent().unwrap().to_path_buf();
    let (token1, token2) = (tokens.join("zone-1.token"), tokens.join("zone-2.token"));
    let kumactl_cfg = tokens.join("kumactl.config");
    add_control_plane(&kumactl_cfg, "global", &global);
    issue_token(&global, "zone-2", &token2);
    // zone-1's token the way the docs say: kumactl against global.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = e2e::kumactl(
            &kumactl_cfg,
            &[
                "generate",
                "zone-token",
                "--zone=zone-1",
                "--scope=cp",
                "--valid-for=24h",
            ],
        );
        if out.status.success() {
            std::fs::write(&token1, e2e::stdout(&out)).unwrap();
            break;
        }
        assert!(Instant::now() < deadline, "{}", e2e::stderr(&out));
        std::thread::sleep(Duration::from_millis(100));
    }
    let zone1 = start_zone("zone-1", kds_port, Some(&cert.0), Some(&token1), &[]);
    let zone2 = start_zone("zone-2", kds_port, Some(&cert.0), Some(&token2), &[]);
    let t = Duration::from_secs(10);

    // A zone without a token is refused, says why, and is not registered.
    let stranger = start_zone("zone-3", kds_port, Some(&cert.0), None, &[]);
    wait_for_log(&stranger, "global requires a zone token", t);
    drop(stranger);

    // Meshes come from global; zones register themselves.
    eventually(&zone1, "/meshes", t, "default mesh synced to zone-1", |i| {
        names(i) == ["default"] && i[0]["labels"]["kuma.io/origin"] == "global"
    });
    eventually(&global, "/zones", t, "both zones registered", |i| {
        names(i) == ["zone-1", "zone-2"]
    });

    // Global records each zone's subscription: version, token, counters; both are online.
    eventually(
        &global,
        "/zones+insights",
        t,
        "zones online with insights",
        |i| {
            i.len() == 2
                && i.iter().all(|z| {
                    let sub = &z["zoneInsight"]["subscriptions"][0];
                    z["online"] == true
                        && sub["version"]["kumaCp"]["version"] == "2.14.0"
                        && sub["authTokenProvided"] == true
                        && sub["connectTime"].is_string()
                        && sub["status"]["total"]["responsesSent"]
                            .as_str()
                            .is_some_and(|n| n != "0")
                })
        },
    );
    eventually_json(
        &global,
        "/global-insight",
        t,
        "global insight counts zones",
        |g| g["zones"]["controlPlanes"] == json!({"online": 2, "total": 2}),
    );
    let inspect = kumactl_ok(&kumactl_cfg, &["inspect", "zones"]);
    assert!(inspect.starts_with("NAME"), "{inspect}");
    for zone in ["zone-1", "zone-2"] {
        let r = row(&inspect, zone);
        assert_eq!(r.get(1), Some(&"Online"), "{inspect}");
        assert!(r.contains(&"2.14.0"), "{inspect}");
    }
    let get_zones = kumactl_ok(&kumactl_cfg, &["get", "zones"]);
    assert_eq!(
        row(&get_zones, "zone-1").get(1..3),
        Some(&["Online", "2.14.0"][..]),
        "{get_zones}"
    );

    // A policy applied on global reaches both zones, hashed, marked as from global.
    put(
        &global,
        "/meshes/default/meshtimeouts/default-timeout-global",
        timeout("default-timeout-global"),
    );
    for zone in [&zone1, &zone2] {
        eventually(
            zone,
            "/meshes/default/meshtimeouts",
            t,
            "global policy on the zone",
            |i| {
                names(i) == ["default-timeout-global-54dbd4c66zwbcf9c"]
                    && i.iter().any(|p| {
                        p["labels"]["kuma.io/origin"] == "global"
                            && p["labels"]["kuma.io/display-name"] == "default-timeout-global"
                    })
            },
        );
        // The mesh's defaults came from global too: the zone made none of its own.
        let defaults: Vec<Value> = list(zone, "/meshes/default/meshtimeouts")
            .into_iter()
            .filter(is_mesh_default)
            .collect();
        assert_eq!(
            defaults.len(),
            2,
            "global's two default MeshTimeouts: {defaults:?}"
        );
        assert!(
            defaults
                .iter()
                .all(|p| p["labels"]["kuma.io/origin"] == "global"),
            "a zone created defaults of its own: {defaults:?}"
        );
    }

    // A policy applied on zone-1 reaches global with its zone, and not zone-2.
    // As Kuma asks on a zone under a global, it says it is the zone's own.
    let mut own = timeout("default-timeout-zone-1");
    own["labels"] = json!({"kuma.io/origin": "zone"});
    put(
        &zone1,
        "/meshes/default/meshtimeouts/default-timeout-zone-1",
        own,
    );
    eventually(
        &global,
        "/meshes/default/meshtimeouts",
        t,
        "zone policy on global",
        |i| {
            i.iter().any(|p| {
                p["name"] == "default-timeout-zone-1-c58w24w4vw27f454"
                    && p["labels"]["kuma.io/zone"] == "zone-1"
                    && p["labels"]["kuma.io/origin"] == "zone"
            })
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        names(&list(&zone2, "/meshes/default/meshtimeouts")),
        ["default-timeout-global-54dbd4c66zwbcf9c"],
        "zone-1's policy leaked to zone-2"
    );

    // A dataplane registered on zone-1 appears on global.
    put(
        &zone1,
        "/meshes/default/dataplanes/web-1",
        json!({"type": "Dataplane", "name": "web-1", "mesh": "default",
        "networking": {"address": "10.0.0.1", "inbound": [{"port": 80, "tags": {"kuma.io/service": "web"}}]}}),
    );
    eventually(
        &global,
        "/meshes/default/dataplanes",
        t,
        "zone-1's dataplane on global",
        |i| {
            i.len() == 1
                && i[0]["labels"]["kuma.io/display-name"] == "web-1"
                && i[0]["labels"]["kuma.io/zone"] == "zone-1"
        },
    );

    // Copies are read-only where they land: on global for zone resources, on zones for global's.
    let r = http().put(format!("{}/meshes/default/dataplanes/web-1", global.api())).json(&json!({"type": "Dataplane", "name": "web-1", "mesh": "default",
        "networking": {"address": "10.0.0.9", "inbound": [{"port": 80, "tags": {"kuma.io/service": "web"}}]}})).send().unwrap();
    assert_eq!(
        r.status(),
        405,
        "global accepted a write to a zone resource"
    );
    let r = http()
        .delete(format!(
            "{}/meshes/default/meshtimeouts/default-timeout-global-54dbd4c66zwbcf9c",
            zone1.api()
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), 405, "a zone deleted global's copy");
    assert!(r.text().unwrap().contains("change it on global"));

    // Deleting on the origin deletes the copies.
    assert!(
        http()
            .delete(format!(
                "{}/meshes/default/meshtimeouts/default-timeout-global",
                global.api()
            ))
            .send()
            .unwrap()
            .status()
            .is_success()
    );
    for zone in [&zone1, &zone2] {
        eventually(
            zone,
            "/meshes/default/meshtimeouts",
            t,
            "deleted policy gone from the zone",
            |i| !names(i).contains(&"default-timeout-global-54dbd4c66zwbcf9c".to_string()),
        );
    }
    assert!(
        http()
            .delete(format!(
                "{}/meshes/default/meshtimeouts/default-timeout-zone-1",
                zone1.api()
            ))
            .send()
            .unwrap()
            .status()
            .is_success()
    );
    eventually(
        &global,
        "/meshes/default/meshtimeouts",
        t,
        "zone policy gone from global",
        |i| names(i).is_empty(),
    );

    // Global dies (SIGKILL). Meanwhile zone-1 registers another dataplane. On a memory store
    // global comes back empty, with a new signing key: the operator issues new tokens (zones
    // re-read the token file on every attempt). On Postgres everything comes back as it was.
    global.sigkill();
    put(
        &zone1,
        "/meshes/default/dataplanes/web-2",
        json!({"type": "Dataplane", "name": "web-2", "mesh": "default",
        "networking": {"address": "10.0.0.2", "inbound": [{"port": 80, "tags": {"kuma.io/service": "web"}}]}}),
    );
    let global = if durable {
        start_global(kds_port, global_store, None)
    } else {
        let g = start_global(kds_port, global_store, Some(&cert));
        issue_token(&g, "zone-1", &token1);
        issue_token(&g, "zone-2", &token2);
        g
    };
    add_control_plane(&kumactl_cfg, "global-restarted", &global);
    put(
        &global,
        "/meshes/default/meshtimeouts/after-restart",
        timeout("after-restart"),
    );
    let t = Duration::from_secs(30);
    for zone in [&zone1, &zone2] {
        eventually(
            zone,
            "/meshes/default/meshtimeouts",
            t,
            "zone converged after global restart",
            |i| {
                let ours: Vec<&Value> = i.iter().filter(|p| !is_mesh_default(p)).collect();
                ours.len() == 1 && ours[0]["labels"]["kuma.io/display-name"] == "after-restart"
            },
        );
    }
    eventually(
        &global,
        "/meshes/default/dataplanes",
        t,
        "zone-1's dataplanes back on global",
        |i| i.len() == 2,
    );

    // Disabling zone-2 on global closes its streams: new policies stop reaching it.
    put(
        &global,
        "/zones/zone-2",
        json!({"type": "Zone", "name": "zone-2", "enabled": false}),
    );
    std::thread::sleep(Duration::from_secs(1));
    put(
        &global,
        "/meshes/default/meshtimeouts/after-disable",
        timeout("after-disable"),
    );
    eventually(
        &zone1,
        "/meshes/default/meshtimeouts",
        Duration::from_secs(10),
        "zone-1 still syncing",
        |i| names(i).len() == 2,
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        names(&list(&zone2, "/meshes/default/meshtimeouts")).len(),
        1,
        "a disabled zone kept receiving policies"
    );
    assert!(
        zone2.logs().contains("zone disabled on global"),
        "{}",
        zone2.logs()
    );

    // A zone killed outright turns Offline, with its subscription closed.
    let mut zone1 = zone1;
    zone1.sigkill();
    eventually(&global, "/zones+insights", t, "killed zone offline", |i| {
        i.iter().any(|z| {
            z["name"] == "zone-1"
                && z["online"] == false
                && z["zoneInsight"]["subscriptions"]
                    .as_array()
                    .and_then(|s| s.last())
                    .is_some_and(|s| s["disconnectTime"].is_string())
        })
    });
    let inspect = kumactl_ok(&kumactl_cfg, &["inspect", "zones"]);
    assert_eq!(
        row(&inspect, "zone-1").get(1),
        Some(&"Offline"),
        "{inspect}"
    );
    // Disabled counts as offline even though zone-2 keeps trying.
    assert_eq!(
        row(&inspect, "zone-2").get(1),
        Some(&"Offline"),
        "{inspect}"
    );
}

/// Kuma's "federate a zone control plane" guide: a standalone CP with its own state exports it,
/// global takes it, and the standalone restarts as a zone without losing anything.
#[test]
fn standalone_federates_with_global_and_keeps_its_resources() {
    let Some((_pg, store_env)) = migrated_postgres("federation") else {
        return;
    };
    let env: Vec<(&str, &str)> = store_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut standalone = ControlPlane::start("standalone", &env);
    standalone.wait_ready(Duration::from_secs(60));
    let t = Duration::from_secs(15);
    eventually(&standalone, "/meshes", t, "default mesh", |i| {
        names(i) == ["default"]
    });
    put(
        &standalone,
        "/meshes/payments",
        json!({"type": "Mesh", "name": "payments"}),
    );
    put(
        &standalone,
        "/meshes/default/secrets/db-password",
        json!({"type": "Secret", "name": "db-password", "mesh": "default", "data": "c2VjcmV0"}),
    );
    put(
        &standalone,
        "/meshes/default/meshtimeouts/legacy",
        timeout("legacy"),
    );
    put(
        &standalone,
        "/meshes/default/dataplanes/web-1",
        json!({"type": "Dataplane", "name": "web-1", "mesh": "default",
        "networking": {"address": "10.0.0.1", "inbound": [{"port": 80, "tags": {"kuma.io/service": "web"}}]}}),
    );

    // Export what global needs, with the policies.
    let dir = standalone.work_dir.clone();
    let cfg = dir.join("kumactl.config");
    add_control_plane(&cfg, "standalone", &standalone);
    let exported = kumactl_ok(&cfg, &["export", "--profile=federation-with-policies"]);
    assert!(exported.starts_with("# Product: Kuma"), "{exported}");
    for wanted in [
        "name: payments",
        "name: db-password",
        "name: legacy",
        "skipCreatingInitialPolicies",
        // Kuma exports a mesh's dataplane token signing key, so its proxies' tokens stay valid.
        "name: dataplane-token-signing-key-payments-1",
    ] {
        assert!(exported.contains(wanted), "{wanted} missing:\n{exported}");
    }
    for unwanted in [
        "type: Dataplane",
        "admin-user-token",
        "user-token-signing-key",
        "zone-token-signing-key",
        "inter-cp-ca",
        "kuma-cluster-id",
    ] {
        assert!(
            !exported.contains(unwanted),
            "{unwanted} exported:\n{exported}"
        );
    }
    let plain = kumactl_ok(&cfg, &["export"]);
    assert!(
        plain.contains("name: payments") && !plain.contains("type: MeshTimeout"),
        "{plain}"
    );
    let file = dir.join("resources.yaml");
    std::fs::write(&file, &exported).unwrap();

    // Global takes the exported resources.
    let kds_port = free_port();
    let global = start_global(kds_port, &[], None);
    add_control_plane(&cfg, "global", &global);
    kumactl_ok(&cfg, &["apply", "-f", file.to_str().unwrap()]);
    eventually(&global, "/meshes", t, "meshes on global", |i| {
        names(i) == ["default", "payments"]
    });
    let token = dir.join("zone-1.token");
    issue_token(&global, "zone-1", &token);

    // The standalone comes back as zone-1 of that global, on the same database.
    standalone.terminate(Duration::from_secs(20));
    let zone = start_zone("zone-1", kds_port, None, Some(&token), &store_env);
    eventually(
        &zone,
        "/meshes/default/meshtimeouts",
        t,
        "own policy kept, global's copy added",
        |i| {
            let n = names(i);
            n.contains(&"legacy".to_string())
                && i.iter().any(|p| {
                    p["labels"]["kuma.io/origin"] == "global"
                        && p["labels"]["kuma.io/display-name"] == "legacy"
                })
        },
    );
    eventually(&zone, "/meshes", t, "meshes now owned by global", |i| {
        names(i) == ["default", "payments"]
            && i.iter().all(|m| m["labels"]["kuma.io/origin"] == "global")
    });
    eventually(
        &zone,
        "/meshes/default/dataplanes",
        t,
        "dataplane kept",
        |i| names(i) == ["web-1"],
    );
    eventually(&zone, "/meshes/default/secrets", t, "secret kept", |i| {
        let mut n = names(i);
        n.retain(|n| !n.starts_with("dataplane-token-signing-key-"));
        n == ["db-password"]
    });
    eventually(
        &global,
        "/meshes/default/dataplanes",
        t,
        "zone's dataplane on global",
        |i| i.len() == 1 && i[0]["labels"]["kuma.io/zone"] == "zone-1",
    );
    let admin = http()
        .get(format!("{}/globalsecrets/admin-user-token", zone.api()))
        .send()
        .unwrap();
    assert!(
        admin.status().is_success(),
        "the zone lost its own admin token"
    );
}

/// The MeshService era across zones: a mesh with `meshServices.mode: Exclusive` on global; a
/// Dataplane registered on zone-1 becomes a MeshService there with a VIP and its local
/// hostname; global holds zone-1's copy with zone-1's status; zone-2 gets the service with a
/// VIP from its own pool and the cross-zone hostname Kuma's `synced-universal-mesh-service`
/// generator (created on global) names it with, and keeps that status when global's copy
/// changes.
#[test]
fn mesh_services_are_generated_and_named_in_every_zone() {
    let kds_port = free_port();
    let global = start_global(kds_port, &[], None);
    let cert = kds_cert_files(&global);
    let dir = cert.0.parent().unwrap().to_path_buf();
    let (token1, token2) = (dir.join("zone-1.token"), dir.join("zone-2.token"));
    issue_token(&global, "zone-1", &token1);
    issue_token(&global, "zone-2", &token2);
    let zone1 = start_zone("zone-1", kds_port, Some(&cert.0), Some(&token1), &[]);
    let zone2 = start_zone("zone-2", kds_port, Some(&cert.0), Some(&token2), &[]);
    let t = Duration::from_secs(15);

    put(
        &global,
        "/meshes/services",
        json!({"type": "Mesh", "name": "services", "meshServices": {"mode": "Exclusive"}}),
    );
    eventually(&zone1, "/meshes", t, "the mesh on zone-1", |i| {
        names(i).contains(&"services".to_string())
    });
    put(
        &zone1,
        "/meshes/services/dataplanes/backend-1",
        json!({"type": "Dataplane", "name": "backend-1", "mesh": "services",
        "networking": {"address": "10.0.0.1", "inbound": [
            {"port": 8080, "tags": {"kuma.io/service": "backend", "kuma.io/protocol": "http"}}]}}),
    );
    eventually(
        &zone1,
        "/meshes/services/meshservices",
        t,
        "backend generated on zone-1 with a VIP and its local hostname",
        |i| {
            i.len() == 1
                && i[0]["name"] == "backend"
                && i[0]["labels"]["kuma.io/managed-by"] == "meshservice-generator"
                && i[0]["spec"]["ports"]
                    == json!([{"name": "8080", "port": 8080, "targetPort": 8080, "appProtocol": "http"}])
                && i[0]["status"]["vips"] == json!([{"ip": "241.0.0.1"}])
                && i[0]["status"]["addresses"][0]["hostname"] == "backend.svc.mesh.local"
                && i[0]["status"]["dataplaneProxies"]["total"] == 1
        },
    );
    eventually(
        &global,
        "/meshes/services/meshservices",
        t,
        "zone-1's MeshService on global, with zone-1's status",
        |i| {
            i.len() == 1
                && i[0]["labels"]["kuma.io/display-name"] == "backend"
                && i[0]["labels"]["kuma.io/zone"] == "zone-1"
                && i[0]["status"]["vips"] == json!([{"ip": "241.0.0.1"}])
        },
    );
    // zone-2 has a service of its own, so the synced one's VIP is not the same by chance.
    put(
        &zone2,
        "/meshes/services/dataplanes/web-1",
        json!({"type": "Dataplane", "name": "web-1", "mesh": "services",
        "networking": {"address": "10.0.0.2", "inbound": [{"port": 80, "tags": {"kuma.io/service": "web"}}]}}),
    );
    eventually_json(
        &zone2,
        "/meshes/services/meshservices/web",
        t,
        "web on zone-2",
        |d| d["status"]["vips"][0]["ip"].is_string(),
    );
    let synced_status = |i: &[Value]| {
        i.iter()
            .find(|s| s["labels"]["kuma.io/zone"] == "zone-1")
            .map(|s| s["status"].clone())
    };
    eventually(
        &zone2,
        "/meshes/services/meshservices",
        t,
        "zone-1's backend on zone-2 with zone-2's VIP and the cross-zone hostname",
        |i| {
            synced_status(i).is_some_and(|s| {
                s["addresses"][0]["hostname"] == "backend.svc.zone-1.mesh.local"
                    && s["addresses"][0]["hostnameGeneratorRef"]["coreName"]
                        .as_str()
                        .is_some_and(|g| g.starts_with("synced-universal-mesh-service"))
                    && s["vips"][0]["ip"]
                        .as_str()
                        .is_some_and(|ip| ip.starts_with("241."))
            })
        },
    );
    let before = synced_status(&list(&zone2, "/meshes/services/meshservices")).unwrap();
    let web_vip =
        get(&zone2, "/meshes/services/meshservices/web")["status"]["vips"][0]["ip"].clone();
    assert_ne!(
        before["vips"][0]["ip"], web_vip,
        "two services, two VIPs on zone-2"
    );

    // A second backend instance changes zone-1's status; global's copy follows, and zone-2
    // keeps the VIP and hostname it gave the service.
    put(
        &zone1,
        "/meshes/services/dataplanes/backend-2",
        json!({"type": "Dataplane", "name": "backend-2", "mesh": "services",
        "networking": {"address": "10.0.0.3", "inbound": [
            {"port": 8080, "tags": {"kuma.io/service": "backend", "kuma.io/protocol": "http"}}]}}),
    );
    eventually(
        &global,
        "/meshes/services/meshservices",
        t,
        "global's copy counts two proxies",
        |i| {
            i.iter().any(|s| {
                s["labels"]["kuma.io/display-name"] == "backend"
                    && s["status"]["dataplaneProxies"]["total"] == 2
            })
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let after = synced_status(&list(&zone2, "/meshes/services/meshservices")).unwrap();
    assert_eq!(after["vips"], before["vips"], "zone-2 kept its VIP");
    assert_eq!(after["addresses"], before["addresses"]);
}
