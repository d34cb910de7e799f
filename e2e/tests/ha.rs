//! Several `kuma-cp` replicas on one real Postgres: migrations, one leader, failover after
//! SIGKILL, shared writes, and riding out a database outage.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::time::Instant;

use e2e::{ControlPlane, free_port, http_status};
use store::testing::postgres::{TEST_USER, TestPostgres};

fn pg_env(pg: &TestPostgres, db: &str) -> Vec<(String, String)> {
    e2e::postgres_env(pg.port, TEST_USER, db)
}

fn start(name: &str, env: &[(String, String)]) -> ControlPlane {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ControlPlane::start(name, &env)
}

fn http() -> reqwest::blocking::Client {
    e2e::blocking_http(Duration::from_secs(10))
}

fn leaders(cps: &[ControlPlane]) -> Vec<usize> {
    cps.iter()
        .enumerate()
        .filter(|(_, c)| c.is_leader())
        .map(|(i, _)| i)
        .collect()
}

fn wait_single_leader(cps: &[ControlPlane], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let l = leaders(cps);
        if l.len() == 1 {
            return l[0];
        }
        assert!(
            Instant::now() < deadline,
            "expected one leader, found {l:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const TIMEOUT_POLICY: &str = r#"{"type":"MeshTimeout","name":"t1","mesh":"default","spec":{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"idleTimeout":"20s"}}]}}"#;

#[test]
fn replicas_on_postgres_fail_over_and_share_state() {
    let Some(mut pg) = TestPostgres::start() else {
        return;
    };
    let db = pg.create_database("ha");
    let env = pg_env(&pg, &db);

    // A schema that is behind is refused with the way out.
    let mut early = start("early", &env);
    let status = early.child.wait().unwrap();
    assert!(!status.success());
    assert!(
        early.logs().contains("kuma-cp migrate up"),
        "{}",
        early.logs()
    );

    let out = e2e::migrate(&env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied migrations [1]"));
    assert!(String::from_utf8_lossy(&e2e::migrate(&env).stdout).contains("up to date"));

    let mut cps: Vec<ControlPlane> = (0..3).map(|i| start(&format!("r{i}"), &env)).collect();
    for cp in &mut cps {
        cp.wait_ready(Duration::from_secs(60));
    }
    let first = wait_single_leader(&cps, Duration::from_secs(15));

    // The leader's catalog lists every replica once, itself as leader, over mutual-TLS pings.
    let client = http();
    let leader_id = client
        .get(format!("{}/", cps[first].api()))
        .send()
        .unwrap()
        .json::<serde_json::Value>()
        .unwrap()["instanceId"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let catalog = loop {
        let list: serde_json::Value = client
            .get(format!("{}/control-planes", cps[(first + 1) % 3].api()))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if list["total"] == 3 {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "catalog never listed 3 replicas: {list}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let items = catalog["items"].as_array().unwrap();
    let leaders_in_catalog: Vec<&str> = items
        .iter()
        .filter(|i| i["leader"] == true)
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(leaders_in_catalog, vec![leader_id.as_str()]);
    let config: serde_json::Value = client
        .get(format!("{}/config", cps[first].api()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(config["instanceId"], leader_id.as_str());
    assert_eq!(
        config["store"]["postgres"]["password"], "*****",
        "the password must not be shown"
    );
    let kcfg = cps[0].work_dir.join("kumactl");
    let out = e2e::kumactl(
        &kcfg,
        &[
            "config",
            "control-planes",
            "add",
            "--name",
            "ha",
            "--address",
            &cps[0].api(),
        ],
    );
    assert!(out.status.success());
    let out = e2e::stdout(&e2e::kumactl(&kcfg, &["inspect", "control-planes"]));
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(&leader_id) && l.contains("yes")),
        "{out}"
    );

    // A write through one replica is read through another.
    let (a, b) = ((first + 1) % 3, (first + 2) % 3);
    let r = client
        .put(format!("{}/meshes/default/meshtimeouts/t1", cps[a].api()))
        .header("content-type", "application/json")
        .body(TIMEOUT_POLICY)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let got: serde_json::Value = client
        .get(format!("{}/meshes/default/meshtimeouts/t1", cps[b].api()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(got["spec"]["to"][0]["default"]["idleTimeout"], "20s");

    // SIGKILL the leader: exactly one of the others takes over within 10 s.
    let killed_at = Instant::now();
    cps[first].sigkill();
    let mut survivors: Vec<ControlPlane> = cps
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != first)
        .map(|(_, c)| c)
        .collect();
    let new = wait_single_leader(&survivors, Duration::from_secs(10));
    eprintln!("new leader after SIGKILL in {:?}", killed_at.elapsed());
    // Still exactly one a while later.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(leaders(&survivors), vec![new]);

    // Leader-only work ran once: the default mesh was created by exactly one replica, ever.
    let all_logs: String = survivors
        .iter()
        .map(|c| c.logs())
        .collect::<Vec<_>>()
        .join("\n");
    let created = all_logs.matches("created Mesh \"default\"").count();
    assert!(created <= 1, "default mesh created {created} times");

    // The database goes away: writes fail with 503, then everything recovers by itself.
    pg.stop();
    let r = client
        .put(format!(
            "{}/meshes/default/meshtimeouts/t2",
            survivors[0].api()
        ))
        .header("content-type", "application/json")
        .body(TIMEOUT_POLICY.replace("\"t1\"", "\"t2\""))
        .send()
        .unwrap();
    assert_eq!(r.status(), 503, "{}", r.text().unwrap_or_default());
    assert_ne!(
        http_status(survivors[0].diag_port, "/ready"),
        Some(200),
        "ready without a database"
    );
    pg.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client
            .put(format!(
                "{}/meshes/default/meshtimeouts/t2",
                survivors[1].api()
            ))
            .header("content-type", "application/json")
            .body(TIMEOUT_POLICY.replace("\"t1\"", "\"t2\""))
            .send();
        if r.as_ref().is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after the database returned: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let got = client
        .get(format!(
            "{}/meshes/default/meshtimeouts/t1",
            survivors[0].api()
        ))
        .send()
        .unwrap();
    assert_eq!(
        got.status(),
        200,
        "a write acknowledged before the outage was lost"
    );
    wait_single_leader(&survivors, Duration::from_secs(15));
    for cp in &mut survivors {
        assert!(
            cp.terminate(Duration::from_secs(15))
                .is_some_and(|s| s.success())
        );
    }
}

#[test]
fn unreachable_database_at_start_up_is_retried() {
    let port = free_port().to_string();
    let env = vec![
        ("KUMA_STORE_TYPE".to_string(), "postgres".to_string()),
        (
            "KUMA_STORE_POSTGRES_HOST".to_string(),
            "127.0.0.1".to_string(),
        ),
        ("KUMA_STORE_POSTGRES_PORT".to_string(), port),
        (
            "KUMA_STORE_POSTGRES_CONNECTION_TIMEOUT".to_string(),
            "1".to_string(),
        ),
    ];
    let mut cp = start("nodb", &env);
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        cp.child.try_wait().unwrap().is_none(),
        "kuma-cp exited instead of retrying:\n{}",
        cp.logs()
    );
    assert_eq!(http_status(cp.diag_port, "/healthy"), Some(200));
    assert_ne!(http_status(cp.diag_port, "/ready"), Some(200));
    let logs = cp.logs();
    assert!(
        logs.matches("store is not reachable yet").count() >= 2,
        "{logs}"
    );
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(
        cp.terminate(Duration::from_secs(10)).is_some(),
        "kuma-cp did not stop while waiting for its store"
    );
}

#[test]
fn wrong_tls_settings_name_the_setting() {
    let env = vec![
        ("KUMA_STORE_TYPE".to_string(), "postgres".to_string()),
        (
            "KUMA_STORE_POSTGRES_TLS_MODE".to_string(),
            "verifyCa".to_string(),
        ),
    ];
    let mut cp = start("tls", &env);
    assert!(!cp.child.wait().unwrap().success());
    assert!(
        cp.logs().contains("KUMA_STORE_POSTGRES_TLS_CA_PATH"),
        "{}",
        cp.logs()
    );
    let env = vec![
        ("KUMA_STORE_TYPE".to_string(), "postgres".to_string()),
        (
            "KUMA_STORE_POSTGRES_TLS_MODE".to_string(),
            "sometimes".to_string(),
        ),
    ];
    let mut cp = start("tls2", &env);
    assert!(!cp.child.wait().unwrap().success());
    assert!(
        cp.logs().contains("KUMA_STORE_POSTGRES_TLS_MODE"),
        "{}",
        cp.logs()
    );
}

#[cfg(feature = "etcd")]
#[test]
fn replicas_on_etcd_elect_one_leader_and_fail_over() {
    let Some(etcd) = store::testing::etcd::TestEtcd::new() else {
        return;
    };
    let env: Vec<(String, String)> = vec![
        ("KUMA_STORE_TYPE".into(), "etcd".into()),
        ("KUMA_STORE_ETCD_ENDPOINTS".into(), etcd.endpoint()),
        (
            "KUMA_STORE_ETCD_KEY_PREFIX".into(),
            format!("/kuma-e2e-{}", free_port()),
        ),
        (
            "KUMA_INTER_CP_CATALOG_INSTANCE_ADDRESS".into(),
            "127.0.0.1".into(),
        ),
    ];
    let mut cps: Vec<ControlPlane> = (0..2).map(|i| start(&format!("etcd{i}"), &env)).collect();
    for cp in &mut cps {
        cp.wait_ready(Duration::from_secs(60));
    }
    let first = wait_single_leader(&cps, Duration::from_secs(15));
    let client = http();
    let other = 1 - first;
    let r = client
        .put(format!(
            "{}/meshes/default/meshtimeouts/t1",
            cps[first].api()
        ))
        .header("content-type", "application/json")
        .body(TIMEOUT_POLICY)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        client
            .get(format!(
                "{}/meshes/default/meshtimeouts/t1",
                cps[other].api()
            ))
            .send()
            .unwrap()
            .status(),
        200
    );
    let killed_at = Instant::now();
    cps[first].sigkill();
    let survivors: Vec<ControlPlane> = cps
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != first)
        .map(|(_, c)| c)
        .collect();
    wait_single_leader(&survivors, Duration::from_secs(10));
    eprintln!(
        "etcd: new leader after SIGKILL in {:?}",
        killed_at.elapsed()
    );
}
