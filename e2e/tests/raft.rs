//! kuma-cp replicas on the raft store, each in its own network namespace: kill -9 of the leader
//! during writes, a partitioned leader, a whole-cluster restart from disk, replacing a node,
//! and concurrent clients' histories checked for linearizability. After each: no acknowledged
//! write lost, never two control-plane leaders at once (from each replica's leadership log).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use model::Timestamp;
use serde_json::{Value, json};
use store::testing::linearizable::{Call, Register, RegisterOp, RegisterRet, check};
use tokio::time::Instant;

use e2e::netns::Lan;

const TOKEN: &str = "e2e-raft-join-token-0123456789";
const MESH: &str = "raft";

struct Replica {
    node_id: u64,
    host: usize,
    child: Option<Child>,
    log: PathBuf,
    data_dir: PathBuf,
    join: bool,
    /// When this replica was killed, for its last leadership interval.
    killed_at: Vec<Timestamp>,
}

struct Cluster {
    lan: Lan,
    dir: PathBuf,
    peers: BTreeMap<u64, usize>,
    replicas: Vec<Replica>,
    http: reqwest::blocking::Client,
}

fn http() -> reqwest::blocking::Client {
    e2e::blocking_http(Duration::from_secs(15))
}

fn timeout_policy(name: &str, value: &str) -> Value {
    json!({"type": "MeshTimeout", "name": name, "mesh": MESH,
        "labels": {"value": value},
        "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "20s"}}]}})
}

/// Creates or replaces policy `name` through the API at `base`.
fn put_at(
    http: &reqwest::blocking::Client,
    base: &str,
    name: &str,
    value: &str,
) -> Result<(), String> {
    let resp = http
        .put(format!("{base}/meshes/{MESH}/meshtimeouts/{name}"))
        .json(&timeout_policy(name, value))
        .send()
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    match status {
        200 | 201 => Ok(()),
        _ => Err(format!("{status} {}", resp.text().unwrap_or_default())),
    }
}

impl Cluster {
    fn new(n: u64) -> Cluster {
        let lan = Lan::create(n as usize);
        let dir = store::testing::temp_dir("kuma-e2e-raft");
        let mut cluster = Cluster {
            lan,
            dir,
            peers: BTreeMap::new(),
            replicas: Vec::new(),
            http: http(),
        };
        for id in 1..=n {
            cluster.peers.insert(id, id as usize - 1);
            cluster.add_replica(id, id as usize - 1, false);
        }
        cluster
    }

    fn add_replica(&mut self, node_id: u64, host: usize, join: bool) -> usize {
        self.replicas.push(Replica {
            node_id,
            host,
            child: None,
            log: self.dir.join(format!("node-{node_id}.log")),
            data_dir: self.dir.join(format!("node-{node_id}")),
            join,
            killed_at: Vec::new(),
        });
        self.replicas.len() - 1
    }

    fn peers_env(&self) -> String {
        self.peers
            .iter()
            .map(|(id, host)| format!("{id}={}:5684", self.lan.ip(*host)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn start(&mut self, i: usize) {
        let peers = self.peers_env();
        let r = &self.replicas[i];
        let ip = self.lan.ip(r.host);
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&r.log)
            .unwrap();
        let mut cmd = self.lan.command(r.host, &e2e::binary("kuma-cp"));
        cmd.arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.dir)
            .env("KUMA_STORE_TYPE", "raft")
            .env("KUMA_STORE_RAFT_NODE_ID", r.node_id.to_string())
            .env("KUMA_STORE_RAFT_PEERS", peers)
            .env("KUMA_STORE_RAFT_DATA_DIR", &r.data_dir)
            .env("KUMA_STORE_RAFT_JOIN_TOKEN", TOKEN)
            .env("KUMA_STORE_RAFT_JOIN", r.join.to_string())
            .env("KUMA_INTER_CP_CATALOG_INSTANCE_ADDRESS", &ip)
            .env(
                "KUMA_GENERAL_WORK_DIR",
                self.dir.join(format!("work-{}", r.node_id)),
            )
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        self.replicas[i].child = Some(cmd.spawn().unwrap());
    }

    fn url(&self, i: usize, port: u16, path: &str) -> String {
        format!("http://{}:{port}{path}", self.lan.ip(self.replicas[i].host))
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.replicas.len())
            .filter(|i| self.replicas[*i].child.is_some())
            .collect()
    }

    fn logs(&self) -> String {
        self.replicas
            .iter()
            .map(|r| {
                format!(
                    "== node {}\n{}",
                    r.node_id,
                    std::fs::read_to_string(&r.log).unwrap_or_default()
                )
            })
            .collect()
    }

    fn ready(&self, i: usize) -> bool {
        self.http
            .get(self.url(i, 5680, "/ready"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    }

    fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.alive().iter().all(|i| self.ready(*i)) {
            assert!(
                Instant::now() < deadline,
                "replicas not ready in {within:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn is_leader(&self, i: usize) -> bool {
        self.http
            .get(self.url(i, 5680, "/metrics"))
            .send()
            .and_then(|r| r.text())
            .is_ok_and(|m| m.lines().any(|l| l.trim() == "leader 1"))
    }

    /// The one control-plane leader among the live replicas, waiting for it.
    fn wait_leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let leaders: Vec<usize> = self
                .alive()
                .into_iter()
                .filter(|i| self.is_leader(*i))
                .collect();
            if leaders.len() == 1 {
                return leaders[0];
            }
            assert!(leaders.len() < 2, "two leaders at once: {leaders:?}");
            assert!(
                Instant::now() < deadline,
                "no leader in {within:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.replicas[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.replicas[i].killed_at.push(Timestamp::now());
        }
    }

    fn put(&self, i: usize, name: &str, value: &str) -> Result<(), String> {
        put_at(&self.http, &self.url(i, 5681, ""), name, value)
    }

    fn read(&self, i: usize, name: &str) -> Result<Option<String>, String> {
        let resp = self
            .http
            .get(self.url(i, 5681, &format!("/meshes/{MESH}/meshtimeouts/{name}")))
            .send()
            .map_err(|e| e.to_string())?;
        match resp.status().as_u16() {
            200 => {
                let v: Value = resp.json().map_err(|e| e.to_string())?;
                Ok(v["labels"]["value"].as_str().map(String::from))
            }
            404 => Ok(None),
            s => Err(format!("{s} {}", resp.text().unwrap_or_default())),
        }
    }

    /// Every MeshTimeout name in the test mesh, as replica `i` lists them (page by page).
    fn names(&self, i: usize) -> Result<BTreeSet<String>, String> {
        let mut names = BTreeSet::new();
        loop {
            let path = format!(
                "/meshes/{MESH}/meshtimeouts?size=1000&offset={}",
                names.len()
            );
            let resp = self
                .http
                .get(self.url(i, 5681, &path))
                .send()
                .map_err(|e| e.to_string())?;
            let status = resp.status();
            let v: Value = resp.json().map_err(|e| e.to_string())?;
            let items = v["items"]
                .as_array()
                .ok_or_else(|| format!("{status}: {v}"))?;
            names.extend(
                items
                    .iter()
                    .filter_map(|i| i["name"].as_str())
                    .map(String::from),
            );
            if items.is_empty() || v["next"].is_null() {
                return Ok(names);
            }
        }
    }

    /// The API answers writes only for an admin; from another host that takes the admin
    /// user's token, which a call on the replica's own localhost can read.
    fn authenticate(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let host = self.replicas[self.alive()[0]].host;
        let config = self.dir.join("kumactl-local.yaml");
        let kumactl = |args: &[&str]| {
            self.lan
                .command(host, &e2e::binary("kumactl"))
                .arg("--config-file")
                .arg(&config)
                .args(args)
                .output()
                .unwrap()
        };
        let token = loop {
            kumactl(
                &[
                    "config",
                    "control-planes",
                    "add",
                    "--overwrite",
                    "--name",
                    "local",
                ]
                .into_iter()
                .chain(["--address", "http://127.0.0.1:5681"])
                .collect::<Vec<_>>(),
            );
            let out = kumactl(&["get", "global-secret", "admin-user-token", "-o", "json"]);
            let secret: Option<Value> = serde_json::from_slice(&out.stdout).ok();
            if let Some(data) = secret.as_ref().and_then(|s| s["data"].as_str()) {
                use base64::Engine as _;
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .unwrap();
                break String::from_utf8(raw).unwrap().trim().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no admin token: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(300));
        };
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        self.http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(15))
            .default_headers(headers)
            .build()
            .unwrap();
    }

    fn create_mesh(&mut self) {
        self.authenticate();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let leader = self.wait_leader(Duration::from_secs(20));
            let ok = self
                .http
                .put(self.url(leader, 5681, &format!("/meshes/{MESH}")))
                .json(&json!({"type": "Mesh", "name": MESH}))
                .send()
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "mesh not created");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until every live replica lists at least `names`.
    fn wait_converged(&self, names: &BTreeSet<String>, within: Duration) {
        let deadline = Instant::now() + within;
        for i in self.alive() {
            loop {
                let have = self.names(i).unwrap_or_default();
                let missing: Vec<_> = names.difference(&have).collect();
                if missing.is_empty() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} misses {} acknowledged writes, e.g. {:?}",
                    self.replicas[i].node_id,
                    missing.len(),
                    missing.iter().take(5).collect::<Vec<_>>()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// From every replica's log: never two replicas acting as control-plane leader at once,
    /// and never two leaders in one raft term.
    fn assert_one_leader_at_a_time(&self) {
        let mut intervals: Vec<(u64, Timestamp, Timestamp)> = Vec::new();
        let mut terms: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
        for r in &self.replicas {
            let log = std::fs::read_to_string(&r.log).unwrap_or_default();
            let mut kills = r.killed_at.iter();
            let mut since: Option<Timestamp> = None;
            for line in log.lines() {
                // A restart after a kill begins a new life: a held leadership ended at the kill.
                if line.contains("raft store started")
                    && let Some(start) = since.take()
                {
                    let end = kills.next().copied().unwrap_or(start);
                    intervals.push((r.node_id, start, end));
                }
                if !line.contains("control plane leadership (raft)") {
                    continue;
                }
                let at = line
                    .split_whitespace()
                    .next()
                    .and_then(Timestamp::parse)
                    .unwrap_or_else(|| panic!("no timestamp in {line:?}"));
                let term: u64 = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("term="))
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                if line.contains("leader=true") {
                    terms.entry(term).or_default().insert(r.node_id);
                    since = Some(at);
                } else if let Some(start) = since.take() {
                    intervals.push((r.node_id, start, at));
                }
            }
            if let Some(start) = since {
                let end = kills.next().copied().unwrap_or_else(Timestamp::now);
                intervals.push((r.node_id, start, end));
            }
        }
        for (term, nodes) in &terms {
            assert!(nodes.len() <= 1, "term {term} had leaders {nodes:?}");
        }
        for (i, a) in intervals.iter().enumerate() {
            for b in &intervals[i + 1..] {
                if a.0 != b.0 {
                    assert!(
                        a.2 <= b.1 || b.2 <= a.1,
                        "node {} led {:?}..{:?} while node {} led {:?}..{:?}",
                        a.0,
                        a.1,
                        a.2,
                        b.0,
                        b.1,
                        b.2
                    );
                }
            }
        }
        assert!(!intervals.is_empty(), "no leadership was logged");
    }

    fn raft_admin(&self, via: usize, args: &[&str]) -> std::process::Output {
        let mut cmd = self
            .lan
            .command(self.replicas[via].host, &e2e::binary("kuma-cp"));
        cmd.arg("raft")
            .args(args)
            .env_clear()
            .env("KUMA_STORE_TYPE", "raft")
            .env(
                "KUMA_STORE_RAFT_NODE_ID",
                self.replicas[via].node_id.to_string(),
            )
            .env("KUMA_STORE_RAFT_PEERS", self.peers_env())
            .env("KUMA_STORE_RAFT_JOIN_TOKEN", TOKEN);
        cmd.output().unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            if let Some(mut c) = r.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

#[test]
fn the_leader_killed_during_1000_writes_loses_no_acknowledged_write() {
    let mut cluster = Cluster::new(3);
    for i in 0..3 {
        cluster.start(i);
    }
    cluster.wait_ready(Duration::from_secs(60));
    cluster.create_mesh();

    // Two writers run throughout; the leader is killed once 300 writes are acknowledged.
    let bases: Vec<String> = (0..3).map(|i| cluster.url(i, 5681, "")).collect();
    let progress = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..2usize)
        .map(|w| {
            let (http, bases, progress) = (cluster.http.clone(), bases.clone(), progress.clone());
            std::thread::spawn(move || {
                let (mut acked, mut refused) = (BTreeSet::new(), 0);
                for n in (w..1000).step_by(2) {
                    let name = format!("w-{n}");
                    // A refused write is retried on the next replica (PUT is an upsert, so a
                    // retry of a write that did land is no duplicate).
                    for attempt in 0..50 {
                        match put_at(&http, &bases[(n + attempt) % bases.len()], &name, "v") {
                            Ok(()) => {
                                acked.insert(name.clone());
                                progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                break;
                            }
                            Err(_) => {
                                refused += 1;
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                    }
                }
                (acked, refused)
            })
        })
        .collect();
    while progress.load(std::sync::atomic::Ordering::Relaxed) < 300 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let leader = cluster.wait_leader(Duration::from_secs(10));
    let killed = Instant::now();
    cluster.kill(leader);
    let next = cluster.wait_leader(Duration::from_secs(10));
    let failover = killed.elapsed();
    eprintln!(
        "killed node {} (the leader) with writes in flight; node {} leads after {failover:?}",
        cluster.replicas[leader].node_id, cluster.replicas[next].node_id,
    );
    let mut acked = BTreeSet::new();
    let mut failed = 0;
    for w in writers {
        let (a, r) = w.join().unwrap();
        acked.extend(a);
        failed += r;
    }
    eprintln!(
        "{} writes acknowledged, {failed} attempts refused during the failover",
        acked.len()
    );
    assert_eq!(acked.len(), 1000, "every write was eventually acknowledged");
    assert!(
        failover < Duration::from_secs(5),
        "new leader after {failover:?}"
    );

    // The killed replica comes back from its disk and catches up.
    let killed = (0..3)
        .find(|i| cluster.replicas[*i].child.is_none())
        .unwrap();
    cluster.start(killed);
    cluster.wait_ready(Duration::from_secs(60));
    cluster.wait_converged(&acked, Duration::from_secs(30));
    for i in 0..3 {
        let names = cluster.names(i).unwrap();
        let written: BTreeSet<_> = names
            .iter()
            .filter(|n| n.starts_with("w-"))
            .cloned()
            .collect();
        assert_eq!(written, acked, "node {} holds exactly the writes", i + 1);
    }
    cluster.assert_one_leader_at_a_time();
}

#[test]
fn a_partitioned_leader_refuses_writes_and_rejoins_without_divergence() {
    let mut cluster = Cluster::new(3);
    for i in 0..3 {
        cluster.start(i);
    }
    cluster.wait_ready(Duration::from_secs(60));
    cluster.create_mesh();
    let old = cluster.wait_leader(Duration::from_secs(10));
    cluster.put(old, "before", "v").unwrap();

    let cut = Instant::now();
    cluster.lan.partition(cluster.replicas[old].host);
    eprintln!("partitioned in {:?}", cut.elapsed());
    let cut = Instant::now();
    // The majority elects a leader of its own and serves writes.
    let majority: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    let new = loop {
        if let Some(l) = majority.iter().copied().find(|i| cluster.is_leader(*i)) {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "the majority elected no leader:\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("majority leader after {:?}", cut.elapsed());
    assert!(
        !cluster.is_leader(old),
        "the cut-off replica still acts as leader"
    );
    let mut majority_writes = BTreeSet::new();
    for n in 0..20 {
        let name = format!("majority-{n}");
        cluster.put(majority[n % 2], &name, "v").unwrap();
        majority_writes.insert(name);
    }
    // The minority refuses, naming the reason, rather than accept writes it cannot commit.
    let started = Instant::now();
    let refused = cluster.put(old, "minority", "v").unwrap_err();
    eprintln!(
        "the cut-off replica answered in {:?}: {refused}",
        started.elapsed()
    );
    assert!(refused.starts_with("503"), "{refused}");
    assert!(
        refused.contains("quorum") || refused.contains("leader"),
        "{refused}"
    );
    // Its reads refuse too (linearizable), instead of answering stale data.
    assert!(cluster.read(old, "majority-0").is_err());

    let remaining = Duration::from_secs(30).saturating_sub(cut.elapsed());
    std::thread::sleep(remaining);
    cluster.lan.heal(cluster.replicas[old].host);
    let healed = Instant::now();
    cluster.wait_converged(&majority_writes, Duration::from_secs(30));
    eprintln!("the healed replica caught up in {:?}", healed.elapsed());
    for i in 0..3 {
        assert!(
            cluster.read(i, "minority").unwrap().is_none(),
            "a refused write appeared"
        );
        assert_eq!(cluster.read(i, "before").unwrap().as_deref(), Some("v"));
    }
    // One leader after the heal; the healed replica did not disrupt the majority's.
    assert_eq!(cluster.wait_leader(Duration::from_secs(10)), new);
    cluster.assert_one_leader_at_a_time();
}

#[test]
fn a_cluster_restarts_from_disk_and_a_dead_node_is_replaced() {
    let mut cluster = Cluster::new(3);
    for i in 0..3 {
        cluster.start(i);
    }
    cluster.wait_ready(Duration::from_secs(60));
    cluster.create_mesh();
    let mut written = BTreeSet::new();
    for n in 0..100 {
        let name = format!("r-{n}");
        cluster.put(n % 3, &name, "v").unwrap();
        written.insert(name);
    }
    // Every replica at once, as after a power cut.
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.start(i);
    }
    cluster.wait_ready(Duration::from_secs(60));
    cluster.wait_converged(&written, Duration::from_secs(30));
    cluster.put(0, "after-restart", "v").unwrap();
    written.insert("after-restart".into());

    // Node 3 dies for good; node 4 on a new host joins, and the operator removes node 3.
    cluster.kill(2);
    std::fs::remove_dir_all(&cluster.replicas[2].data_dir).unwrap();
    let host = cluster.lan.add_host();
    cluster.peers.insert(4, host);
    let four = cluster.add_replica(4, host, true);
    cluster.start(four);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = cluster.raft_admin(0, &["status"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text
            .lines()
            .any(|l| l.starts_with("4 ") && l.contains("follower"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 4 did not join: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = cluster.raft_admin(1, &["remove", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.lines().any(|l| l.starts_with("3 ")), "{text}");
    cluster.peers.remove(&3);
    cluster.wait_converged(&written, Duration::from_secs(30));

    // kumactl's view: the members with their role and lag, through any replica's API.
    let cp: Value = cluster
        .http
        .get(cluster.url(four, 5681, "/control-planes"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let members: BTreeSet<u64> = cp["raft"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["nodeId"].as_u64().unwrap())
        .collect();
    assert_eq!(members, BTreeSet::from([1, 2, 4]), "{cp}");
    let config = cluster.dir.join("kumactl.yaml");
    e2e::kumactl_config(&config, "four", &cluster.url(four, 5681, ""));
    let kumactl = e2e::kumactl(&config, &["inspect", "control-planes"]);
    let table = String::from_utf8_lossy(&kumactl.stdout);
    assert!(
        table.contains("RAFT NODE") && table.contains("follower"),
        "{table}{}",
        String::from_utf8_lossy(&kumactl.stderr)
    );

    // Node 4 votes: with node 1 gone too, 2 and 4 are a quorum of three.
    cluster.kill(0);
    cluster.wait_leader(Duration::from_secs(15));
    let deadline = Instant::now() + Duration::from_secs(15);
    while cluster.put(four, "with-node-4", "v").is_err() {
        assert!(
            Instant::now() < deadline,
            "2 and 4 do not form a quorum:\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    cluster.assert_one_leader_at_a_time();
}

#[test]
fn register_histories_through_the_api_are_linearizable_across_a_leader_kill() {
    let mut cluster = Cluster::new(3);
    for i in 0..3 {
        cluster.start(i);
    }
    cluster.wait_ready(Duration::from_secs(60));
    cluster.create_mesh();
    let cluster = Arc::new(std::sync::Mutex::new(cluster));
    let base = Instant::now();
    let nanos = move || u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let keys = ["reg-0", "reg-1"];
    let calls_made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for client in 0..4usize {
        let cluster = cluster.clone();
        let calls_made = calls_made.clone();
        clients.push(std::thread::spawn(move || {
            let mut history = Vec::new();
            for n in 0..60usize {
                let key = keys[(client + n) % keys.len()];
                // Each call on some live replica; the lock is held only to pick it.
                let (client_http, url) = {
                    let c = cluster.lock().unwrap();
                    let alive = c.alive();
                    let target = alive[(client + n) % alive.len()];
                    let path = format!("/meshes/{MESH}/meshtimeouts/{key}");
                    (c.http.clone(), c.url(target, 5681, &path))
                };
                calls_made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let invoked = nanos();
                if n % 3 == 0 {
                    let value = format!("c{client}-{n}");
                    let outcome = client_http
                        .put(&url)
                        .json(&timeout_policy(key, &value))
                        .send()
                        .map(|r| r.status().as_u16());
                    let (ret, returned) = match outcome {
                        Ok(200 | 201) => (Some(RegisterRet::Written), Some(nanos())),
                        _ => (None, None),
                    };
                    history.push((
                        key,
                        Call {
                            op: RegisterOp::Write(value),
                            ret,
                            invoked,
                            returned,
                        },
                    ));
                } else {
                    let got =
                        client_http
                            .get(&url)
                            .send()
                            .ok()
                            .and_then(|r| match r.status().as_u16() {
                                200 => r
                                    .json::<Value>()
                                    .ok()
                                    .map(|v| v["labels"]["value"].as_str().map(String::from)),
                                404 => Some(None),
                                _ => None,
                            });
                    if let Some(value) = got {
                        history.push((
                            key,
                            Call {
                                op: RegisterOp::Read,
                                ret: Some(RegisterRet::Read(value)),
                                invoked,
                                returned: Some(nanos()),
                            },
                        ));
                    }
                }
            }
            history
        }));
    }
    // The leader dies once a quarter of the calls are made, the clients still running.
    while calls_made.load(std::sync::atomic::Ordering::Relaxed) < 60 {
        std::thread::sleep(Duration::from_millis(2));
    }
    let killed_at = {
        let mut c = cluster.lock().unwrap();
        let leader = c.wait_leader(Duration::from_secs(10));
        c.kill(leader);
        nanos()
    };
    let mut per_key: BTreeMap<&str, Vec<Call<RegisterOp, RegisterRet>>> = BTreeMap::new();
    for c in clients {
        for (key, call) in c.join().unwrap() {
            per_key.entry(key).or_default().push(call);
        }
    }
    let after_kill = per_key
        .values()
        .flatten()
        .filter(|c| c.invoked > killed_at)
        .count();
    assert!(after_kill > 20, "only {after_kill} calls after the kill");
    for (key, history) in &per_key {
        let unknown = history.iter().filter(|c| c.ret.is_none()).count();
        eprintln!(
            "{key}: {} calls, {unknown} with an unknown outcome",
            history.len()
        );
        if let Err(e) = check(&Register(None), history) {
            panic!("{key}: {e}");
        }
    }
    cluster.lock().unwrap().assert_one_leader_at_a_time();
}
