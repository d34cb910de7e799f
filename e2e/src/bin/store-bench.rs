//! `store-bench`: the raft store beside etcd and Postgres on this machine, same loopback, same
//! resources. Three figures per store:
//!
//! - write: sequential compare-and-set updates of one key (a MeshTimeout of about 1 KiB),
//!   through the store trait; raft on three replicas (through the leader and through a
//!   follower, which forwards), etcd as three members, Postgres as one server;
//! - event: from a write's acknowledgement to the change event on another replica (raft's
//!   follower applying it; for etcd and Postgres another client's watch / LISTEN);
//! - failover: three `kuma-cp` processes on the store, the leader killed with SIGKILL, until
//!   another replica reports `leader 1` on `/metrics`.
//!
//! The raft replicas of the write and event figures run in this process, each on its own
//! runtime, talking gRPC with mutual TLS over loopback and fsyncing their own redb file, as
//! etcd's members fsync their WAL. Prints a table, then one JSON line.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use e2e::{ControlPlane, free_port, pct};
use model::{Resource, ResourceKey, ResourceType};
use serde_json::json;
use store::raft::{RaftConfig, RaftStore, RaftTls};
use store::{ResourceStore, SharedStore};
use tokio::sync::watch;
use tokio::time::Instant;

struct Args {
    writes: usize,
    failovers: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        writes: 1000,
        failovers: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| e2e::flag_number(&mut it, name);
        match flag.as_str() {
            "--writes" => args.writes = value("--writes")?.max(10),
            "--failovers" => args.failovers = value("--failovers")?,
            "-h" | "--help" => {
                println!("store-bench [--writes N] [--failovers N]");
                std::process::exit(0);
            }
            other => bail!("unknown flag {other:?} (see --help)"),
        }
    }
    Ok(args)
}

const MESH: &str = "bench";
const TOKEN: &str = "store-bench-join-token-0123456789";

fn key() -> ResourceKey {
    ResourceKey::new(ResourceType::MeshTimeout, MESH, "hot")
}

/// About 1 KiB encoded, as a typical policy.
fn policy(n: usize) -> Resource {
    let mut r = Resource::new(
        ResourceType::MeshTimeout,
        MESH,
        "hot",
        json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {
            "idleTimeout": format!("{}s", 10 + n % 50), "connectionTimeout": "5s",
            "http": {"requestTimeout": "15s", "streamIdleTimeout": "30m", "maxStreamDuration": "0s"}}}],
            "padding": "x".repeat(700)}),
    );
    r.meta.labels.insert("n".into(), n.to_string());
    r
}

#[derive(Default)]
struct Figures {
    writes: Vec<Duration>,
    events: Vec<Duration>,
    failovers: Vec<Duration>,
}

/// Writes through `writer`; each event seen on `observer` is timed from the write's return.
async fn measure(writer: &SharedStore, observer: &SharedStore, n: usize) -> Result<Figures> {
    let mesh = Resource::new(ResourceType::Mesh, "", MESH, json!({}));
    match writer.create(mesh).await {
        Ok(_) | Err(store::StoreError::AlreadyExists(_)) => {}
        Err(e) => return Err(e).context("creating the mesh"),
    }
    let mut current = match writer.get(&key()).await {
        Ok(r) => r,
        Err(_) => writer.create(policy(0)).await.context("creating the key")?,
    };
    let mut events = observer.subscribe();
    let mut figures = Figures::default();
    for i in 0..n + n / 10 {
        let mut next = policy(i + 1);
        next.meta.version = current.meta.version;
        let started = Instant::now();
        current = writer.update(next).await.context("update")?;
        let acked = Instant::now();
        let version = current.meta.version;
        // The event may even arrive before the acknowledgement: that counts as zero.
        let deadline = acked + Duration::from_secs(5);
        loop {
            let ev = tokio::time::timeout_at(deadline, events.recv())
                .await
                .context("no event within 5 s")?
                .context("event stream")?;
            if ev.key == key() && ev.version >= version {
                break;
            }
        }
        // The first tenth warms connections and caches.
        if i >= n / 10 {
            figures.writes.push(acked - started);
            figures.events.push(acked.elapsed());
        }
    }
    Ok(figures)
}

/// Three raft replicas in this process, each on a runtime of its own; the handles, leader first.
async fn raft_cluster(dir: &std::path::Path) -> Result<(Vec<RaftStore>, Vec<watch::Sender<bool>>)> {
    let peers: BTreeMap<u64, String> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", free_port())))
        .collect();
    let mut stores = Vec::new();
    let mut stops = Vec::new();
    for id in 1..=3u64 {
        let mut config = RaftConfig::new(id, peers.clone(), dir.join(format!("raft-{id}")));
        config.listen = peers[&id].parse()?;
        config.tls = RaftTls::JoinToken(TOKEN.into());
        let (stop, stopped) = watch::channel(false);
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let mut waiting = stopped.clone();
                let _ = tx.send(RaftStore::start(config, stopped).await);
                let _ = waiting.wait_for(|s| *s).await;
            });
        });
        stores.push(rx.await?.context("starting a raft replica")?);
        stops.push(stop);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for (i, s) in stores.iter().enumerate() {
            if let Ok(Some(status)) = s.cluster_status().await
                && status.leader == Some(s.node_id())
                && status.members.iter().all(|m| m.lag == Some(0))
            {
                stores.swap(0, i);
                return Ok((stores, stops));
            }
        }
        if Instant::now() > deadline {
            bail!("no raft leader within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills the leader of three `kuma-cp` replicas `rounds` times; the time to the next leader.
fn failovers(
    label: &str,
    env: &[(String, String)],
    rounds: usize,
    per_replica: impl Fn(usize) -> Vec<(String, String)>,
) -> Result<Vec<Duration>> {
    let start = |i: usize| {
        let mut all: Vec<(String, String)> = env.to_vec();
        all.extend(per_replica(i));
        let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ControlPlane::start(&format!("{label}-{i}"), &all)
    };
    // All three before waiting: a raft replica is ready only once a quorum runs.
    let mut cps: Vec<Option<ControlPlane>> = (0..3).map(|i| Some(start(i))).collect();
    for cp in cps.iter_mut().flatten() {
        cp.wait_ready(Duration::from_secs(60));
    }
    let leader = |cps: &[Option<ControlPlane>], within: Duration| -> Result<usize> {
        let deadline = Instant::now() + within;
        loop {
            let leaders: Vec<usize> = (0..cps.len())
                .filter(|i| cps[*i].as_ref().is_some_and(ControlPlane::is_leader))
                .collect();
            match leaders.as_slice() {
                [one] => return Ok(*one),
                [] if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                [] => bail!("{label}: no leader within {within:?}"),
                many => bail!("{label}: several leaders {many:?}"),
            }
        }
    };
    let mut times = Vec::new();
    for _ in 0..rounds {
        let old = leader(&cps, Duration::from_secs(30))?;
        let killed = Instant::now();
        if let Some(mut cp) = cps[old].take() {
            cp.sigkill();
        }
        leader(&cps, Duration::from_secs(30))?;
        times.push(killed.elapsed());
        let mut back = start(old);
        back.wait_ready(Duration::from_secs(60));
        cps[old] = Some(back);
    }
    Ok(times)
}

fn sorted(mut v: Vec<Duration>) -> Vec<Duration> {
    v.sort();
    v
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = store::testing::temp_dir("kuma-store-bench");
    let mut results: BTreeMap<&str, Figures> = BTreeMap::new();

    eprintln!("raft: three replicas in-process");
    let (raft, _raft_stops) = raft_cluster(&dir).await?;
    let leader: SharedStore = Arc::new(raft[0].clone());
    let follower: SharedStore = Arc::new(raft[1].clone());
    let other_follower: SharedStore = Arc::new(raft[2].clone());
    results.insert(
        "raft (via leader)",
        measure(&leader, &follower, args.writes).await?,
    );
    results.insert(
        "raft (via follower)",
        measure(&follower, &other_follower, args.writes).await?,
    );

    eprintln!("etcd: three members");
    let etcd = store::testing::etcd::TestEtcd::cluster(3).context("etcd is not installed")?;
    let endpoints: Vec<String> = etcd.iter().map(|m| m.endpoint()).collect();
    let etcd_store = |endpoint: &str| {
        let config = store::etcd::EtcdConfig {
            endpoints: vec![endpoint.to_string()],
            ..store::etcd::EtcdConfig::default()
        };
        store::etcd::EtcdStore::connect(config)
    };
    let etcd_writer: SharedStore = Arc::new(etcd_store(&endpoints[0]).await?);
    let etcd_watcher: SharedStore = Arc::new(etcd_store(&endpoints[1]).await?);
    results.insert(
        "etcd",
        measure(&etcd_writer, &etcd_watcher, args.writes).await?,
    );

    eprintln!("postgres: one server, fsync on");
    let pg = store::testing::postgres::TestPostgres::start_durable()
        .context("postgres is not installed")?;
    let db = pg.create_database("storebench");
    let pg_env = e2e::postgres_env(pg.port, store::testing::postgres::TEST_USER, &db);
    let out = e2e::migrate(&pg_env);
    if !out.status.success() {
        bail!("migrate: {}", e2e::stderr(&out));
    }
    let pg_config = store::postgres::PostgresConfig {
        host: "127.0.0.1".into(),
        port: pg.port,
        user: store::testing::postgres::TEST_USER.into(),
        password: "not-needed-with-trust".into(),
        db_name: db.clone(),
        connection_timeout: Duration::from_secs(2),
        max_open_connections: 10,
        tls_mode: store::postgres::TlsMode::Disable,
        tls_ca_path: None,
        tls_cert_path: None,
        tls_key_path: None,
    };
    let pg_writer: SharedStore = Arc::new(store::postgres::PostgresStore::connect(&pg_config));
    let pg_watcher: SharedStore = Arc::new(store::postgres::PostgresStore::connect(&pg_config));
    results.insert(
        "postgres",
        measure(&pg_writer, &pg_watcher, args.writes).await?,
    );

    if args.failovers > 0 {
        eprintln!(
            "failover: three kuma-cp replicas per store, the leader killed {} times",
            args.failovers
        );
        let rounds = args.failovers;
        let envs = e2e::raft_replicas_env(3, &dir, TOKEN);
        let raft_times =
            tokio::task::block_in_place(|| failovers("raft", &[], rounds, |i| envs[i].clone()))?;
        if let Some(f) = results.get_mut("raft (via leader)") {
            f.failovers = raft_times;
        }
        let etcd_env = vec![
            ("KUMA_STORE_TYPE".to_string(), "etcd".to_string()),
            ("KUMA_STORE_ETCD_ENDPOINTS".into(), endpoints.join(",")),
        ];
        let etcd_times =
            tokio::task::block_in_place(|| failovers("etcd", &etcd_env, rounds, |_| Vec::new()))?;
        if let Some(f) = results.get_mut("etcd") {
            f.failovers = etcd_times;
        }
        let pg_times =
            tokio::task::block_in_place(|| failovers("postgres", &pg_env, rounds, |_| Vec::new()))?;
        if let Some(f) = results.get_mut("postgres") {
            f.failovers = pg_times;
        }
    }

    println!(
        "{:<22} {:>10} {:>10} {:>12} {:>12} {:>14} {:>14}",
        "store", "write p50", "write p99", "event p50", "event p99", "failover p50", "failover max"
    );
    let mut report = serde_json::Map::new();
    for (name, f) in results {
        let (w, e, fo) = (sorted(f.writes), sorted(f.events), sorted(f.failovers));
        let ms = |v: f64| {
            if v.is_nan() {
                "-".to_string()
            } else {
                format!("{v:.2} ms")
            }
        };
        println!(
            "{:<22} {:>10} {:>10} {:>12} {:>12} {:>14} {:>14}",
            name,
            ms(pct(&w, 0.5)),
            ms(pct(&w, 0.99)),
            ms(pct(&e, 0.5)),
            ms(pct(&e, 0.99)),
            ms(pct(&fo, 0.5)),
            ms(pct(&fo, 1.0)),
        );
        report.insert(
            name.to_string(),
            json!({"write_p50_ms": pct(&w, 0.5), "write_p99_ms": pct(&w, 0.99),
                "event_p50_ms": pct(&e, 0.5), "event_p99_ms": pct(&e, 0.99),
                "failover_p50_ms": pct(&fo, 0.5), "failover_max_ms": pct(&fo, 1.0),
                "writes": w.len(), "failovers": fo.len()}),
        );
    }
    println!("{}", serde_json::Value::Object(report));
    drop(etcd);
    Ok(())
}
