#![allow(clippy::unwrap_used)]
//! The fault suite: what the control plane promises when a process dies, a link fails, the
//! store goes away or a clock is wrong, each case bounded in time and printing its figures
//! (`-- --nocapture`; docs/reliability.md keeps them). Zones run in their own network
//! namespaces (`e2e::netns`), so a partition is a real one; global and the replicas that share a
//! Postgres or etcd run beside the store, on the test's host. Envoy is real.
//!
//! The clock case runs its zones under libfaketime, their wall clocks minutes off.
//!
//! Needs root, `ip`, `iptables`, `envoy`, Debian's postgresql, etcd-server and faketime.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use e2e::netns::Lan;
use e2e::proxies::{Cp, Proc, call, envoy, within};
use e2e::{ControlPlane, free_port};
use serde_json::{Value, json};
use store::testing::postgres::{TEST_USER, TestPostgres};
use tokio::time::Instant;

fn http() -> reqwest::blocking::Client {
    e2e::blocking_http(Duration::from_secs(5))
}

fn timeout_policy(name: &str) -> Value {
    json!({"type": "MeshTimeout", "name": name, "mesh": "default",
        "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"},
            "default": {"idleTimeout": "21s"}}]}})
}

fn mtls_mesh() -> Value {
    json!({"type": "Mesh", "name": "default",
        "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}})
}

/// PUTs `body` at `base` + `path`: `Ok` on a 2xx, else the status and body (or the error).
fn put(base: &str, path: &str, body: &Value) -> Result<(), String> {
    match http().put(format!("{base}{path}")).json(body).send() {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("{} {}", r.status(), r.text().unwrap_or_default())),
        Err(e) => Err(e.to_string()),
    }
}

/// The display names of the resources listed at `path` that start with `prefix`, duplicates
/// kept (a synced copy is named by a hash, its display name is the original's), following the
/// API's pages (`next`).
fn display_names(api: &str, path: &str, prefix: &str) -> Option<Vec<String>> {
    let mut names = Vec::new();
    let mut url = format!("{api}{path}?size=1000");
    loop {
        let page: Value = http().get(&url).send().ok()?.json().ok()?;
        names.extend(
            page["items"]
                .as_array()?
                .iter()
                .filter_map(|i| {
                    i["labels"]["kuma.io/display-name"]
                        .as_str()
                        .or(i["name"].as_str())
                        .map(str::to_string)
                })
                .filter(|n| n.starts_with(prefix)),
        );
        match page["next"].as_str() {
            Some(next) => url = next.to_string(),
            None => return Some(names),
        }
    }
}

/// Writes policies `prefix-0` .. `prefix-{n-1}` with two clients, each retrying a refused write
/// on the next base (a PUT is an upsert, so retrying a write that did land duplicates nothing)
/// until acknowledged. Counts acknowledgements in `acked` as they come. The acknowledged names
/// and the number of refused attempts.
fn writers(
    bases: Vec<String>,
    prefix: &'static str,
    n: usize,
    acked: Arc<AtomicUsize>,
) -> Vec<std::thread::JoinHandle<(BTreeSet<String>, usize)>> {
    (0..2usize)
        .map(|w| {
            let (bases, acked) = (bases.clone(), acked.clone());
            std::thread::spawn(move || {
                let (mut done, mut refused) = (BTreeSet::new(), 0);
                let deadline = Instant::now() + Duration::from_secs(180);
                for i in (w..n).step_by(2) {
                    let name = format!("{prefix}-{i}");
                    let path = format!("/meshes/default/meshtimeouts/{name}");
                    let mut attempt = 0;
                    while Instant::now() < deadline {
                        match put(
                            &bases[(i + attempt) % bases.len()],
                            &path,
                            &timeout_policy(&name),
                        ) {
                            Ok(()) => {
                                done.insert(name);
                                acked.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Err(_) => {
                                refused += 1;
                                attempt += 1;
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                }
                (done, refused)
            })
        })
        .collect()
}

fn join_writers(
    writers: Vec<std::thread::JoinHandle<(BTreeSet<String>, usize)>>,
) -> (BTreeSet<String>, usize) {
    let (mut acked, mut refused) = (BTreeSet::new(), 0);
    for w in writers {
        let (a, r) = w.join().unwrap();
        acked.extend(a);
        refused += r;
    }
    (acked, refused)
}

/// Whether `api` lists exactly `expected` under `prefix`, each once.
fn holds_exactly(api: &str, prefix: &str, expected: &BTreeSet<String>) -> bool {
    display_names(api, "/meshes/default/meshtimeouts", prefix).is_some_and(|names| {
        names.len() == expected.len() && names.into_iter().collect::<BTreeSet<_>>() == *expected
    })
}

/// What `api` lists under `prefix` against `expected`, for a failure message.
fn census(api: &str, prefix: &str, expected: &BTreeSet<String>) -> String {
    let names = display_names(api, "/meshes/default/meshtimeouts", prefix).unwrap_or_default();
    let unique: BTreeSet<String> = names.iter().cloned().collect();
    let missing: Vec<&String> = expected.difference(&unique).take(5).collect();
    let extra: Vec<&String> = unique.difference(expected).take(5).collect();
    format!(
        "{api}: {} listed, {} distinct, {} missing (e.g. {missing:?}), extra {extra:?}",
        names.len(),
        unique.len(),
        expected.difference(&unique).count(),
    )
}

/// Requests through a sidecar's outbound on `port` every 20 ms until stopped: (answered, failed).
struct Traffic {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(usize, usize)>,
}

impl Traffic {
    fn start(port: u16) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, 0);
            while !flag.load(Ordering::Relaxed) {
                match call(port) {
                    Some(_) => ok += 1,
                    None => failed += 1,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (ok, failed)
        });
        Traffic { stop, handle }
    }

    fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// Global in the test's host with `store` settings, KDS on `kds_port`.
fn start_global(name: &str, kds_port: u16, store: &[(String, String)]) -> ControlPlane {
    let kds = kds_port.to_string();
    let mut env = vec![
        ("KUMA_MODE", "global"),
        ("KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT", kds.as_str()),
    ];
    env.extend(store.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    ControlPlane::start(name, &env)
}

/// Zone `name` on `lan`'s `host`, dialling global's KDS at `global` with `token`; `extra`
/// settings or environment on top. Not waited for.
fn start_zone(
    name: &str,
    global: &str,
    token: &Path,
    place: Option<(&Lan, usize)>,
    extra: &[(&str, &str)],
) -> ControlPlane {
    let ip = place.map_or("127.0.0.1".to_string(), |(lan, host)| lan.ip(host));
    let mut env = vec![("KUMA_INTER_CP_CATALOG_INSTANCE_ADDRESS", ip.as_str())];
    env.extend_from_slice(extra);
    e2e::proxies::spawn_zone(name, global, token, place, &env)
}

/// The items of the list at `path` on `cp` (none when it does not answer).
fn items(cp: &Cp, path: &str) -> Vec<Value> {
    cp.get(path)
        .and_then(|l| l["items"].as_array().cloned())
        .unwrap_or_default()
}

/// Waits until global lists exactly `zones`, all online.
fn zones_online(global: &Cp, zones: &[&str], logs: impl Fn() -> String) -> Duration {
    let online = || -> Vec<String> {
        items(global, "/zones+insights")
            .iter()
            .filter(|z| z["online"] == true)
            .filter_map(|z| z["name"].as_str().map(str::to_string))
            .collect()
    };
    within(
        Duration::from_secs(60),
        "every zone online on global",
        || {
            let mut o = online();
            o.sort();
            o == zones
        },
        &logs,
    )
}

/// The logs of `cps`, read when called (it holds their paths, not the control planes, so they
/// can be killed and restarted meanwhile).
fn logs_of(cps: &[&ControlPlane]) -> Box<dyn Fn() -> String> {
    let paths: Vec<PathBuf> = cps.iter().map(|c| c.log.clone()).collect();
    Box::new(move || {
        paths
            .iter()
            .map(|p| {
                format!(
                    "--- {}:\n{}",
                    p.display(),
                    std::fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect()
    })
}

/// backend-1 (an echo app behind its sidecar) and web-1, whose sidecar has an outbound to
/// backend, on `zone` with tokens from `issuer`, once web reaches backend: the processes
/// (stopped when dropped) and the outbound's port.
fn backend_and_web(
    zone: &Cp,
    issuer: &Cp,
    zone_name: Option<&str>,
    logs: &dyn Fn() -> String,
) -> (Vec<Proc>, u16) {
    let (backend_app, backend) = zone.echo_behind_sidecar(
        "backend-1",
        "backend",
        zone_name,
        &issuer.token("backend-1", "default"),
    );
    let (web_port, outbound) = (free_port(), free_port());
    let web_app = zone.echo("web-1", web_port, zone_name);
    let web = zone.sidecar(
        "web-1",
        "web",
        web_port,
        Some(outbound),
        &issuer.token("web-1", "default"),
    );
    within(
        Duration::from_secs(60),
        "web reaches backend through the sidecars",
        || call(outbound).is_some(),
        logs,
    );
    (vec![backend_app, backend, web_app, web], outbound)
}

// ---- kill -9 of global during 1,000 acknowledged writes ----

enum GlobalStore {
    Postgres,
    Etcd,
    Raft,
}

fn global_killed_during_writes(kind: GlobalStore) {
    const WRITES: usize = 1000;
    // Kept alive to the end: the store global runs on.
    let (_pg, _etcd, stores, label) = match kind {
        GlobalStore::Postgres => {
            let Some(pg) = TestPostgres::start() else {
                return;
            };
            let db = pg.create_database("faults");
            let env = e2e::postgres_env(pg.port, TEST_USER, &db);
            let out = e2e::migrate(&env);
            assert!(out.status.success(), "{}", e2e::stderr(&out));
            (Some(pg), None, vec![env], "Postgres")
        }
        GlobalStore::Etcd => {
            let Some(etcd) = store::testing::etcd::TestEtcd::new() else {
                return;
            };
            let env = vec![
                ("KUMA_STORE_TYPE".to_string(), "etcd".to_string()),
                ("KUMA_STORE_ETCD_ENDPOINTS".to_string(), etcd.endpoint()),
                (
                    "KUMA_STORE_ETCD_KEY_PREFIX".to_string(),
                    format!("/faults-{}", free_port()),
                ),
            ];
            (None, Some(etcd), vec![env], "etcd")
        }
        GlobalStore::Raft => {
            let dir = store::testing::temp_dir("kuma-faults-raft");
            let envs = e2e::raft_replicas_env(3, &dir, "faults-raft-join-token-0123456789");
            (None, None, envs, "raft (3 replicas, all killed)")
        }
    };
    let lan = Lan::create(2);
    let kds_port = free_port();
    // Every replica serves KDS; the zones dial the first (as through a load balancer).
    let mut globals: Vec<ControlPlane> = stores
        .iter()
        .enumerate()
        .map(|(i, env)| {
            let port = if i == 0 { kds_port } else { free_port() };
            start_global(&format!("fault-global-{i}"), port, env)
        })
        .collect();
    for g in &mut globals {
        g.wait_ready(Duration::from_secs(60));
    }
    let admin = Cp::api_only(&globals[0], PathBuf::new());
    let kds = format!("{}:{kds_port}", lan.gateway());
    let mut zones: Vec<ControlPlane> = (0..2)
        .map(|i| {
            let name = format!("zone-{}", i + 1);
            start_zone(
                &name,
                &kds,
                &admin.zone_token(&name, "cp"),
                Some((&lan, i)),
                &[],
            )
        })
        .collect();
    for z in &mut zones {
        z.wait_ready(Duration::from_secs(60));
    }
    let logs = logs_of(&globals.iter().chain(&zones).collect::<Vec<_>>());
    zones_online(&admin, &["zone-1", "zone-2"], &logs);

    let bases: Vec<String> = globals.iter().map(ControlPlane::api).collect();
    let progress = Arc::new(AtomicUsize::new(0));
    let running = writers(bases, "w", WRITES, progress.clone());
    while progress.load(Ordering::Relaxed) < 300 {
        std::thread::sleep(Duration::from_millis(2));
    }
    let at_kill = progress.load(Ordering::Relaxed);
    for g in &mut globals {
        g.sigkill();
    }
    let killed = Instant::now();
    for g in &mut globals {
        g.restart();
    }
    let restarted = Instant::now();
    for g in &mut globals {
        g.wait_ready(Duration::from_secs(60));
    }
    let ready = restarted.elapsed();
    let (acked, refused) = join_writers(running);
    let writes_took = killed.elapsed();
    assert_eq!(acked.len(), WRITES, "every write acknowledged in the end");

    // Every acknowledged write on global and on both zones, each exactly once.
    let converged = within(
        Duration::from_secs(60),
        "every acknowledged write on global and on every zone, once",
        || {
            holds_exactly(&globals[0].api(), "w-", &acked)
                && zones.iter().all(|z| holds_exactly(&z.api(), "w-", &acked))
        },
        || {
            let apis = globals.iter().chain(&zones).map(ControlPlane::api);
            let counts: Vec<String> = apis.map(|a| census(&a, "w-", &acked)).collect();
            format!("{}\n{}", counts.join("\n"), logs())
        },
    );
    let global_names =
        display_names(&globals[0].api(), "/meshes/default/meshtimeouts", "w-").unwrap_or_default();
    eprintln!(
        "FIGURES global on {label}: kill -9 after {at_kill} acknowledged writes; restarted and \
         ready in {:.2} s; {refused} attempts refused while it was down; the {WRITES} writes took \
         {:.2} s in all; {} on global, each once, and on zone-1 and zone-2 {:.2} s after the \
         writers finished",
        ready.as_secs_f64(),
        writes_took.as_secs_f64(),
        global_names.len(),
        converged.as_secs_f64(),
    );
}

#[test]
fn global_on_postgres_killed_during_1000_writes_loses_none() {
    global_killed_during_writes(GlobalStore::Postgres);
}

#[test]
fn global_on_etcd_killed_during_1000_writes_loses_none() {
    global_killed_during_writes(GlobalStore::Etcd);
}

#[test]
fn global_on_raft_killed_during_1000_writes_loses_none() {
    global_killed_during_writes(GlobalStore::Raft);
}

// ---- a zone cut off from global for 60 s ----

/// The zone's view of its proxies: the display names of its dataplanes under `prefix`.
fn dataplanes(api: &str, prefix: &str) -> Vec<String> {
    let mut names = display_names(api, "/meshes/default/dataplanes", prefix).unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_zone_cut_off_from_global_for_60s_serves_its_proxies_and_converges() {
    let Some(envoy) = envoy("a_zone_cut_off_from_global_for_60s") else {
        return;
    };
    let partition = Duration::from_secs(
        std::env::var("KUMA_FAULTS_PARTITION_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let lan = Lan::create(1);
    let kds_port = free_port();
    let mut global_cp = start_global("part-global", kds_port, &[]);
    global_cp.wait_ready(Duration::from_secs(60));
    let global = Cp::api_only(&global_cp, envoy.clone());
    let mut zone_cp = start_zone(
        "zone-1",
        &format!("{}:{kds_port}", lan.gateway()),
        &global.zone_token("zone-1", "cp"),
        Some((&lan, 0)),
        &[],
    );
    zone_cp.wait_ready(Duration::from_secs(60));
    let logs = logs_of(&[&global_cp, &zone_cp]);
    zones_online(&global, &["zone-1"], &logs);
    global.put("/meshes/default", mtls_mesh());
    let zone = Cp::of(&zone_cp, envoy);
    within(
        Duration::from_secs(20),
        "the mTLS mesh reaches the zone",
        || {
            zone.get("/meshes/default")
                .is_some_and(|m| m["mtls"]["enabledBackend"] == "ca-1")
        },
        &logs,
    );
    let (_proxies, outbound) = backend_and_web(&zone, &global, Some("zone-1"), &logs);
    let spare = zone.echo_behind_sidecar(
        "spare-1",
        "backend",
        Some("zone-1"),
        &global.token("spare-1", "default"),
    );
    within(
        Duration::from_secs(20),
        "the zone's proxies on global",
        || dataplanes(&global.api, "") == ["backend-1", "spare-1", "web-1"],
        &logs,
    );
    let backend2_token = global.token("backend-2", "default");

    // The cut: the zone's only link to global (KDS) drops every packet, both ways.
    let traffic = Traffic::start(outbound);
    let cut = Instant::now();
    lan.cut(0, &lan.gateway(), kds_port);
    let mut written = BTreeSet::new();
    let mut backend2 = None;
    let mut spare = Some(spare);
    let mut step = 0;
    while cut.elapsed() < partition {
        // Policies change on global, proxies come and go in the zone.
        if step < 10 {
            let name = format!("p-{step}");
            global.put(
                &format!("/meshes/default/meshtimeouts/{name}"),
                timeout_policy(&name),
            );
            written.insert(name);
        }
        if step == 2 {
            backend2 = Some(zone.echo_behind_sidecar(
                "backend-2",
                "backend",
                Some("zone-1"),
                &backend2_token,
            ));
        }
        if step == 4 {
            spare = None;
        }
        step += 1;
        std::thread::sleep(Duration::from_secs(1).min(partition / 20));
    }
    assert!(spare.is_none() && backend2.is_some());
    // Meanwhile the zone served: its own view changed, global's did not.
    assert_eq!(
        dataplanes(&zone_cp.api(), ""),
        ["backend-1", "backend-2", "web-1"],
        "the zone's own proxies, while cut off"
    );
    assert!(
        holds_exactly(&zone_cp.api(), "p-", &BTreeSet::new()),
        "no policy crossed the cut"
    );
    let offline_on_global = items(&global, "/zones+insights")
        .first()
        .is_some_and(|z| z["online"] == false);

    lan.heal(0);
    let healed = Instant::now();
    let (mut g2z, mut z2g) = (None, None);
    while g2z.is_none() || z2g.is_none() {
        assert!(
            healed.elapsed() < Duration::from_secs(120),
            "not converged 120 s after the heal: policies on the zone {}, proxies on global {}\n{}",
            g2z.is_some(),
            z2g.is_some(),
            logs()
        );
        if g2z.is_none() && holds_exactly(&zone_cp.api(), "p-", &written) {
            g2z = Some(healed.elapsed());
        }
        if z2g.is_none() && dataplanes(&global.api, "") == ["backend-1", "backend-2", "web-1"] {
            z2g = Some(healed.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (g2z, z2g) = (g2z.unwrap_or_default(), z2g.unwrap_or_default());
    let converged = healed.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let (answered, failed) = traffic.stop();
    eprintln!(
        "FIGURES partition of {:.0} s: {answered} requests through the zone's sidecars, {failed} \
         failed; global saw the zone offline by the end of the cut: {offline_on_global}; after \
         the heal, global's 10 policies on the zone in {:.2} s, the zone's proxy changes on \
         global in {:.2} s, both in {:.2} s",
        partition.as_secs_f64(),
        g2z.as_secs_f64(),
        z2g.as_secs_f64(),
        converged.as_secs_f64(),
    );
    assert_eq!(
        failed, 0,
        "a request to a local service failed during the cut"
    );
    drop(backend2);
}

// ---- kill -9 of the leader replica, of global and of a zone, under load ----

fn leader_of(cps: &[ControlPlane], within_limit: Duration) -> (usize, Duration) {
    let start = Instant::now();
    loop {
        let leaders: Vec<usize> = (0..cps.len()).filter(|i| cps[*i].is_leader()).collect();
        if leaders.len() == 1 {
            return (leaders[0], start.elapsed());
        }
        assert!(
            start.elapsed() < within_limit,
            "no single leader within {within_limit:?}: {leaders:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One write a 20 ms to `base` until stopped: (acknowledged, failed).
fn api_load(
    base: String,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, usize)> {
    std::thread::spawn(move || {
        let (mut ok, mut failed, mut i) = (0, 0, 0);
        while !stop.load(Ordering::Relaxed) {
            let name = format!("{prefix}-{i}");
            match put(
                &base,
                &format!("/meshes/default/meshtimeouts/{name}"),
                &timeout_policy(&name),
            ) {
                Ok(()) => ok += 1,
                Err(_) => failed += 1,
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        (ok, failed)
    })
}

#[test]
fn a_killed_leader_replica_is_replaced_under_load() {
    let Some(envoy) = envoy("a_killed_leader_replica_is_replaced_under_load") else {
        return;
    };
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let migrated = |name: &str| {
        let env = e2e::postgres_env(pg.port, TEST_USER, &pg.create_database(name));
        let out = e2e::migrate(&env);
        assert!(out.status.success(), "{}", e2e::stderr(&out));
        env
    };
    let (global_store, zone_store) = (migrated("global"), migrated("zone"));
    let kds_ports = [free_port(), free_port()];
    let mut globals: Vec<ControlPlane> = (0..2)
        .map(|i| start_global(&format!("ha-global-{i}"), kds_ports[i], &global_store))
        .collect();
    for g in &mut globals {
        g.wait_ready(Duration::from_secs(60));
    }
    let (global_leader, _) = leader_of(&globals, Duration::from_secs(20));
    let global_other = 1 - global_leader;
    let admin = Cp::api_only(&globals[global_other], envoy.clone());
    // The zone replicas dial the global replica that survives, as a load balancer would send
    // them once the other is gone.
    let kds = format!("127.0.0.1:{}", kds_ports[global_other]);
    let token = admin.zone_token("zone-1", "cp");
    let zone_env: Vec<(&str, &str)> = zone_store
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut zones: Vec<ControlPlane> = (0..2)
        .map(|_| start_zone("zone-1", &kds, &token, None, &zone_env))
        .collect();
    for z in &mut zones {
        z.wait_ready(Duration::from_secs(60));
    }
    let logs = logs_of(&globals.iter().chain(&zones).collect::<Vec<_>>());
    let (zone_leader, _) = leader_of(&zones, Duration::from_secs(20));
    let zone_other = 1 - zone_leader;
    zones_online(&admin, &["zone-1"], &logs);

    // Proxies on the zone replica that survives, traffic through them.
    let zone = Cp::of(&zones[zone_other], envoy);
    let (_proxies, outbound) = backend_and_web(&zone, &admin, Some("zone-1"), &logs);
    let traffic = Traffic::start(outbound);
    let stop = Arc::new(AtomicBool::new(false));
    let load = api_load(admin.api.clone(), "load", stop.clone());
    std::thread::sleep(Duration::from_secs(2));

    // Global's leader.
    globals[global_leader].sigkill();
    let (_, global_failover) = leader_of(
        &globals[global_other..=global_other],
        Duration::from_secs(30),
    );
    let after_global = {
        let name = "after-global-kill";
        admin.put(
            &format!("/meshes/default/meshtimeouts/{name}"),
            timeout_policy(name),
        );
        let written = Instant::now();
        let expected: BTreeSet<String> = [name.to_string()].into();
        within(
            Duration::from_secs(30),
            "a policy written after global's leader died reaches the zone",
            || holds_exactly(&zones[zone_other].api(), name, &expected),
            &logs,
        );
        written.elapsed()
    };

    // The zone's leader (the replica syncing with global).
    let killed_zone = Instant::now();
    zones[zone_leader].sigkill();
    let (_, zone_failover) = leader_of(&zones[zone_other..=zone_other], Duration::from_secs(30));
    let name = "after-zone-kill";
    admin.put(
        &format!("/meshes/default/meshtimeouts/{name}"),
        timeout_policy(name),
    );
    let expected: BTreeSet<String> = [name.to_string()].into();
    let resumed = within(
        Duration::from_secs(60),
        "a policy written after the zone's leader died reaches the zone",
        || holds_exactly(&zones[zone_other].api(), name, &expected),
        &logs,
    );
    let zone_sync_back = killed_zone.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let (writes, writes_failed) = load.join().unwrap();
    let (answered, failed) = traffic.stop();
    eprintln!(
        "FIGURES leader kill (Postgres, 2 replicas each): global's new leader {:.2} s after kill -9; \
         a policy written then reached the zone in {:.3} s; the zone's new leader {:.2} s after \
         kill -9, syncing again with global (a policy written then arrived {:.2} s after the kill, \
         {:.2} s after it was written); meanwhile {writes} API writes to the surviving global \
         replica acknowledged, {writes_failed} failed; {answered} requests through the zone's \
         proxies, {failed} failed",
        global_failover.as_secs_f64(),
        after_global.as_secs_f64(),
        zone_failover.as_secs_f64(),
        zone_sync_back.as_secs_f64(),
        resumed.as_secs_f64(),
    );
    assert_eq!(writes_failed, 0, "writes to the surviving replica failed");
    assert_eq!(failed, 0, "requests through the proxies failed");
}

// ---- the store down for 30 s, then the control plane down ----

fn store_then_control_plane_down(test: &str, cp_down: Duration) {
    let Some(envoy) = envoy(test) else {
        return;
    };
    let Some(mut pg) = TestPostgres::start() else {
        return;
    };
    let store = e2e::postgres_env(pg.port, TEST_USER, &pg.create_database("outage"));
    let out = e2e::migrate(&store);
    assert!(out.status.success(), "{}", e2e::stderr(&out));
    let env: Vec<(&str, &str)> = store
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut cp_proc = ControlPlane::start("outage", &env);
    cp_proc.wait_ready(Duration::from_secs(60));
    let logs = logs_of(&[&cp_proc]);
    let cp = Cp::of(&cp_proc, envoy);
    cp.put("/meshes/default", mtls_mesh());
    let (_proxies, outbound) = backend_and_web(&cp, &cp, None, &logs);
    let mut acked = BTreeSet::new();
    for i in 0..100 {
        let name = format!("s-{i}");
        put(
            &cp.api,
            &format!("/meshes/default/meshtimeouts/{name}"),
            &timeout_policy(&name),
        )
        .unwrap();
        acked.insert(name);
    }
    let traffic = Traffic::start(outbound);

    // The database goes away for 30 s.
    pg.stop();
    let down = Instant::now();
    let (mut writes, mut reads) = (
        std::collections::BTreeMap::new(),
        std::collections::BTreeMap::new(),
    );
    let mut reason = String::new();
    let mut ready_while_down = false;
    let mut slowest = Duration::ZERO;
    while down.elapsed() < Duration::from_secs(30) {
        let asked = Instant::now();
        let w = http()
            .put(format!("{}/meshes/default/meshtimeouts/while-down", cp.api))
            .json(&timeout_policy("while-down"))
            .send();
        slowest = slowest.max(asked.elapsed());
        let status = w.map_or(0, |r| {
            let s = r.status().as_u16();
            if s == 503 {
                reason = r.text().unwrap_or_default();
            }
            s
        });
        *writes.entry(status).or_insert(0) += 1;
        let r = http()
            .get(format!("{}/meshes/default/meshtimeouts", cp.api))
            .send()
            .map_or(0, |r| r.status().as_u16());
        *reads.entry(r).or_insert(0) += 1;
        ready_while_down |= e2e::http_status(cp_proc.diag_port, "/ready") == Some(200);
        std::thread::sleep(Duration::from_secs(1));
    }
    pg.restart();
    let recovery = within(
        Duration::from_secs(60),
        "writes accepted once the database is back",
        || {
            put(
                &cp.api,
                "/meshes/default/meshtimeouts/after-outage",
                &timeout_policy("after-outage"),
            )
            .is_ok()
        },
        &logs,
    );
    assert_eq!(
        writes.keys().copied().collect::<Vec<_>>(),
        [503],
        "every write while the database was down answered 503: {writes:?}"
    );
    let reason: Value = serde_json::from_str(&reason).unwrap_or_default();
    assert!(
        reason["title"].is_string() && reason["detail"].is_string(),
        "Kuma's error shape with a reason: {reason}"
    );
    assert!(!ready_while_down, "/ready answered 200 without a database");
    assert!(
        holds_exactly(&cp.api, "s-", &acked),
        "a write acknowledged before the outage was lost: {}",
        census(&cp.api, "s-", &acked)
    );
    eprintln!(
        "FIGURES store down 30 s: writes answered {writes:?} (status: count), the slowest in \
         {:.2} s, with {}; reads answered {reads:?}; /ready not 200 throughout; writes accepted \
         again {:.2} s after the database came back; the 100 writes acknowledged before, all \
         there",
        slowest.as_secs_f64(),
        reason["detail"],
        recovery.as_secs_f64(),
    );

    // The control plane itself goes away: the proxies serve on with what they have.
    let expiry = items(&cp, "/meshes/default/dataplanes+insights")
        .iter()
        .filter_map(|d| {
            d["dataplaneInsight"]["mTLS"]["certificateExpirationTime"]
                .as_str()
                .map(str::to_string)
        })
        .min()
        .expect("the proxies' certificate expiry");
    cp_proc.sigkill();
    std::thread::sleep(cp_down);
    cp_proc.restart();
    let restarted = Instant::now();
    cp_proc.wait_ready(Duration::from_secs(60));
    // Once the proxies are back on their streams, a new policy reaches their Envoy (a field
    // the other policies leave alone, so it wins the merge).
    put(
        &cp.api,
        "/meshes/default/meshtimeouts/after-restart",
        &json!({"type": "MeshTimeout", "name": "after-restart", "mesh": "default",
            "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"},
                "default": {"connectionTimeout": "1717s"}}]}}),
    )
    .unwrap();
    let reconnected = within(
        Duration::from_secs(60),
        "the proxies reconnect and get the new policy",
        || {
            cp.get_text("/meshes/default/dataplanes/web-1/xds")
                .is_some_and(|d| d.contains("1717s"))
        },
        &logs,
    );
    let (answered, failed) = traffic.stop();
    eprintln!(
        "FIGURES control plane down {:.0} s (kill -9): {answered} requests through the proxies \
         over the whole test, {failed} failed; the proxies' certificates were valid until \
         {expiry}; after the restart, a new policy in Envoy {:.2} s after ready ({:.2} s after \
         the restart)",
        cp_down.as_secs_f64(),
        reconnected.as_secs_f64(),
        restarted.elapsed().as_secs_f64(),
    );
    assert_eq!(
        failed, 0,
        "a request failed while the store or the control plane was down"
    );
}

#[test]
fn the_store_down_30s_then_the_control_plane_down_30s() {
    store_then_control_plane_down(
        "the_store_down_30s_then_the_control_plane_down_30s",
        Duration::from_secs(30),
    );
}

/// The long mode of the case above: the control plane down for 5 minutes.
#[test]
#[ignore = "long mode (about 6 minutes): cargo test -p e2e --test faults -- --ignored"]
fn the_store_down_30s_then_the_control_plane_down_5_minutes() {
    store_then_control_plane_down(
        "the_store_down_30s_then_the_control_plane_down_5_minutes",
        Duration::from_secs(300),
    );
}

// ---- zones whose clocks are 5 minutes off ----

/// libfaketime's preload for multi-threaded programs, shifting only the wall clock (timers and
/// timeouts run on the monotonic clock, which a skewed machine keeps right).
fn faketime() -> Option<String> {
    let found = std::fs::read_dir("/usr/lib")
        .ok()?
        .flatten()
        .map(|d| d.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "libfaketime is not installed (apt-get install faketime); CI must run the clock skew case"
        );
        eprintln!("SKIPPED: no libfaketime (apt-get install faketime)");
    }
    found.map(|p| p.display().to_string())
}

/// The `iat` claim of a JWT: when its issuer's clock said it was issued.
fn issued_at(token: &Path) -> i64 {
    use base64::Engine as _;
    let token = std::fs::read_to_string(token).unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .unwrap(),
    )
    .unwrap();
    claims["iat"].as_i64().unwrap()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn zones_with_clocks_5_minutes_off_federate_and_serve_across_zones() {
    let Some(envoy) = envoy("zones_with_clocks_5_minutes_off") else {
        return;
    };
    let Some(preload) = faketime() else {
        return;
    };
    let kds_port = free_port();
    let mut global_cp = start_global("skew-global", kds_port, &[]);
    global_cp.wait_ready(Duration::from_secs(60));
    let global = Cp::api_only(&global_cp, envoy.clone());
    let kds = format!("127.0.0.1:{kds_port}");
    // zone-1 runs 5 minutes ahead of global and of every proxy, zone-2 5 minutes behind
    // (`KUMA_FAULTS_SKEW_MINUTES` tries another skew, up to the 10 minutes documented).
    let minutes: i64 = std::env::var("KUMA_FAULTS_SKEW_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(5);
    let skews = [format!("+{minutes}m"), format!("-{minutes}m")];
    let mut zones: Vec<ControlPlane> = [("zone-1", &skews[0]), ("zone-2", &skews[1])]
        .iter()
        .map(|(name, skew)| {
            start_zone(
                name,
                &kds,
                &global.zone_token(name, "cp"),
                None,
                &[
                    ("LD_PRELOAD", preload.as_str()),
                    ("FAKETIME", skew.as_str()),
                    ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
                ],
            )
        })
        .collect();
    for z in &mut zones {
        z.wait_ready(Duration::from_secs(60));
    }
    let logs = logs_of(&[&global_cp, &zones[0], &zones[1]]);
    // The zone tokens global issued (its clock) were accepted by global from both zones.
    zones_online(&global, &["zone-1", "zone-2"], &logs);
    global.put("/meshes/default", mtls_mesh());
    let (zone1, zone2) = (Cp::of(&zones[0], envoy.clone()), Cp::of(&zones[1], envoy));
    // Zone ingresses with zone tokens from global, validated by each zone's skewed clock.
    let _ingresses: Vec<Proc> = [(&zone1, "zone-1"), (&zone2, "zone-2")]
        .iter()
        .map(|(zone, name)| {
            zone.kuma_dp(
                e2e::proxies::ProxyType::Ingress,
                &format!("ingress-{name}"),
                &e2e::proxies::ingress_yaml("127.0.0.1", free_port()),
                &global.zone_token(name, "ingress"),
            )
        })
        .collect();
    // Dataplane tokens from global (its clock), certificates from each zone's CA (its clock),
    // checked by Envoys on the real clock.
    let _backend = zone2.echo_behind_sidecar(
        "backend-2",
        "backend",
        Some("zone-2"),
        &global.token("backend-2", "default"),
    );
    let (web_port, outbound) = (free_port(), free_port());
    let _web_app = zone1.echo("web-1", web_port, Some("zone-1"));
    let _web = zone1.sidecar(
        "web-1",
        "web",
        web_port,
        Some(outbound),
        &global.token("web-1", "default"),
    );
    let first = within(
        Duration::from_secs(90),
        "web in zone-1 (+5 min) reaches backend in zone-2 (-5 min) with mTLS",
        || call(outbound).is_some_and(|b| b["zone"] == "zone-2"),
        &logs,
    );
    // The clocks really were off: tokens each zone issues carry its time.
    let skew: Vec<i64> = [&zone1, &zone2]
        .iter()
        .map(|z| {
            let before = unix_now();
            issued_at(&z.token("probe", "default")) - before
        })
        .collect();
    let expected = minutes * 60;
    assert!(
        (skew[0] - expected).abs() <= 30 && (skew[1] + expected).abs() <= 30,
        "zone clocks were {skew:?} s off, not ±{expected} s"
    );
    eprintln!(
        "FIGURES clock skew: zone-1 {:+} s, zone-2 {:+} s against global and the proxies; both \
         zones online on global; ingresses and sidecars accepted with tokens from global; web \
         in zone-1 answered by backend in zone-2 over mTLS {:.2} s after its kuma-dp started",
        skew[0],
        skew[1],
        first.as_secs_f64()
    );
}
