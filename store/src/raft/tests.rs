#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use model::{Resource, ResourceKey, ResourceType};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::*;
use crate::{ListQuery, Operation, ResourceStore, SharedStore, StoreError};

use crate::testing::{free_port, temp_dir as scratch_dir};

pub(crate) struct TestCluster {
    pub stores: Vec<RaftStore>,
    pub configs: Vec<RaftConfig>,
    pub shutdowns: Vec<watch::Sender<bool>>,
}

fn configs(n: u64, dir: &std::path::Path) -> Vec<RaftConfig> {
    let ports: BTreeMap<u64, u16> = (1..=n).map(|id| (id, free_port())).collect();
    let peers: BTreeMap<u64, String> = ports
        .iter()
        .map(|(id, port)| (*id, format!("127.0.0.1:{port}")))
        .collect();
    (1..=n)
        .map(|id| {
            let mut c = RaftConfig::new(id, peers.clone(), dir.join(format!("node-{id}")));
            c.listen = SocketAddr::from(([127, 0, 0, 1], ports[&id]));
            c.tls = RaftTls::JoinToken("test-join-token-0123456789".into());
            c.cluster_id = "test".into();
            c.timing = RaftTiming {
                heartbeat: Duration::from_millis(50),
                election_min: Duration::from_millis(300),
                election_max: Duration::from_millis(450),
            };
            c
        })
        .collect()
}

/// Starts every replica without waiting for a leader.
async fn start_each(configs: &[RaftConfig]) -> (Vec<RaftStore>, Vec<watch::Sender<bool>>) {
    let mut stores = Vec::new();
    let mut shutdowns = Vec::new();
    for c in configs {
        let (tx, rx) = watch::channel(false);
        stores.push(RaftStore::start(c.clone(), rx).await.unwrap());
        shutdowns.push(tx);
    }
    (stores, shutdowns)
}

async fn start_all(configs: Vec<RaftConfig>) -> TestCluster {
    let (stores, shutdowns) = start_each(&configs).await;
    let cluster = TestCluster {
        stores,
        configs,
        shutdowns,
    };
    cluster.wait_leader().await;
    cluster
}

impl TestCluster {
    pub async fn start(n: u64) -> TestCluster {
        start_all(configs(n, &scratch_dir("cluster"))).await
    }

    pub async fn wait_leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = self.stores.iter().position(|s| s.node.is_leader()) {
                // Every replica must know it before the cluster is usable everywhere.
                if self.stores.iter().all(|s| s.node.leader().is_some()) {
                    return i;
                }
            }
            assert!(Instant::now() < deadline, "no raft leader within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A follower's handle, the cluster running for the rest of the test: the conformance
    /// suite then exercises forwarding too.
    pub async fn into_follower(self) -> SharedStore {
        let leader = self.wait_leader().await;
        let store = self.stores[(leader + 1) % self.stores.len()].clone();
        // A dropped shutdown sender stops the replicas.
        std::mem::forget(self.shutdowns);
        Arc::new(store)
    }

    async fn follower(&self) -> RaftStore {
        let leader = self.wait_leader().await;
        self.stores[(leader + 1) % self.stores.len()].clone()
    }

    async fn stop(self) -> Vec<RaftConfig> {
        for s in &self.shutdowns {
            s.send(true).unwrap();
        }
        let nodes: Vec<std::sync::Weak<Node>> = self
            .stores
            .iter()
            .map(|s| Arc::downgrade(&s.node))
            .collect();
        drop(self.stores);
        // The data directories are free once every task holding a replica has ended.
        let deadline = Instant::now() + Duration::from_secs(10);
        while nodes.iter().any(|n| n.strong_count() > 0) {
            assert!(Instant::now() < deadline, "replicas did not stop");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.configs
    }
}

mod conformance {
    crate::conformance_tests!(super::TestCluster::start(3).await.into_follower().await);
}

use crate::conformance::{mesh, timeout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_publishes_the_events_in_log_order() {
    let cluster = TestCluster::start(3).await;
    let mut receivers: Vec<_> = cluster.stores.iter().map(|s| s.subscribe()).collect();
    let writer = &cluster.stores[0];
    writer.create(mesh("ev")).await.unwrap();
    for i in 0..5 {
        writer
            .create(timeout("ev", &format!("t{i}")))
            .await
            .unwrap();
    }
    writer
        .delete(&ResourceKey::new(ResourceType::Mesh, "", "ev"))
        .await
        .unwrap();
    for rx in &mut receivers {
        let mut seen = Vec::new();
        while seen.len() < 12 {
            let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("an event within 5 s")
                .unwrap();
            seen.push((ev.op, ev.key.name.clone()));
        }
        assert_eq!(seen[0], (Operation::Create, "ev".to_string()));
        let created: Vec<_> = seen[1..6].iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(created, ["t0", "t1", "t2", "t3", "t4"]);
        assert_eq!(seen[6], (Operation::Delete, "ev".to_string()));
        assert!(seen[7..].iter().all(|(op, _)| *op == Operation::Delete));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_cluster_recovers_from_snapshot_and_log() {
    let dir = scratch_dir("restart");
    let mut configs = configs(3, &dir);
    for c in &mut configs {
        c.snapshot_every = 20;
        c.keep_after_snapshot = 0;
    }
    let cluster = start_all(configs).await;
    let store = cluster.stores[1].clone();
    store.create(mesh("r")).await.unwrap();
    for i in 0..50 {
        store.create(timeout("r", &format!("t{i}"))).await.unwrap();
    }
    let mut t7 = store
        .get(&ResourceKey::new(ResourceType::MeshTimeout, "r", "t7"))
        .await
        .unwrap();
    t7.meta.labels.insert("edited".into(), "yes".into());
    store.update(t7).await.unwrap();
    for s in &cluster.stores {
        let m = s.node.metrics();
        // The restart must rebuild from a snapshot: the log before it is gone.
        assert!(
            m.snapshot.is_some() && m.purged.is_some(),
            "snapshot and purge: {m:?}"
        );
    }
    drop(store);
    let configs = cluster.stop().await;

    let cluster = start_all(configs).await;
    for s in &cluster.stores {
        let page = s
            .list(&ListQuery::in_mesh(ResourceType::MeshTimeout, "r"))
            .await
            .unwrap();
        assert_eq!(page.total, 50);
        let t7 = s
            .stale_reads()
            .get(&ResourceKey::new(ResourceType::MeshTimeout, "r", "t7"))
            .await
            .unwrap();
        assert_eq!(t7.meta.version, 2);
        assert_eq!(
            t7.meta.labels.get("edited").map(String::as_str),
            Some("yes")
        );
    }
    // And it keeps serving writes.
    cluster.stores[2]
        .create(timeout("r", "after"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_catches_up_from_a_snapshot_and_a_dead_one_is_removed() {
    let dir = scratch_dir("membership");
    let mut all = configs(4, &dir);
    for c in &mut all {
        c.snapshot_every = 10;
        c.keep_after_snapshot = 0;
    }
    // Three form the cluster; the fourth joins later.
    let mut fourth = all.pop().unwrap();
    let three: BTreeMap<u64, String> = all
        .iter()
        .map(|c| (c.node_id, c.peers[&c.node_id].clone()))
        .collect();
    for c in &mut all {
        c.peers = three.clone();
    }
    let mut cluster = start_all(all).await;
    let store = cluster.stores[0].clone();
    store.create(mesh("m")).await.unwrap();
    for i in 0..40 {
        store.create(timeout("m", &format!("t{i}"))).await.unwrap();
    }
    fourth.join = true;
    fourth.peers.extend(three.clone());
    let (tx, rx) = watch::channel(false);
    let joined = RaftStore::start(fourth, rx).await.unwrap();
    let mut events = joined.subscribe();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = store.cluster_status().await.unwrap().unwrap();
        if status
            .members
            .iter()
            .any(|m| m.node_id == 4 && m.role == "follower")
        {
            break;
        }
        assert!(Instant::now() < deadline, "node 4 did not join: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = joined
        .list(&ListQuery::in_mesh(ResourceType::MeshTimeout, "m"))
        .await
        .unwrap();
    assert_eq!(page.total, 40);
    // It caught up from a snapshot (the log before it was gone), and what the snapshot held
    // arrived as events: the mesh and its 40 policies.
    assert!(joined.node.metrics().snapshot.is_some());
    let mut created = std::collections::BTreeSet::new();
    while let Ok(Ok(ev)) = tokio::time::timeout(Duration::from_millis(500), events.recv()).await {
        if ev.op == Operation::Create {
            created.insert(ev.key.name.clone());
        }
    }
    assert!(
        created.len() >= 41,
        "{} creates published: {created:?}",
        created.len()
    );

    // The leader dies, the worst case for the operator who removes it: the request, made
    // through the new member, must wait for the next leader rather than fail on the stopping
    // one. Writes go on with the other three.
    let leader = cluster.wait_leader().await;
    let dead = cluster.configs[leader].node_id;
    cluster.shutdowns[leader].send(true).unwrap();
    let removed = joined
        .admin(AdminRequest::Remove { id: dead })
        .await
        .unwrap();
    assert!(
        removed.members.iter().all(|m| m.node_id != dead),
        "{removed:?}"
    );
    joined.create(timeout("m", "after-removal")).await.unwrap();
    cluster.shutdowns.push(tx);
    cluster.stores.push(joined);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_misconfiguration_are_refused_with_the_reason() {
    let cluster = TestCluster::start(3).await;
    let store = cluster.follower().await;
    store.create(mesh("big")).await.unwrap();
    let huge = Resource::new(
        ResourceType::MeshTimeout,
        "big",
        "huge",
        json!({"blob": "x".repeat(2 * 1024 * 1024)}),
    );
    match store.create(huge).await {
        Err(StoreError::TooLarge { limit, .. }) => assert_eq!(limit, 1024 * 1024),
        other => panic!("expected TooLarge, got {other:?}"),
    }

    // A second process on a running replica's data directory.
    let mut again = cluster.configs[0].clone();
    again.listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let err = RaftStore::start(again, watch::channel(false).1)
        .await
        .err()
        .expect("a second replica on one data directory is refused");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );

    // Another cluster's data directory.
    drop(store);
    let configs = cluster.stop().await;
    let mut other = configs[0].clone();
    other.cluster_id = "another".into();
    let err = RaftStore::start(other, watch::channel(false).1)
        .await
        .err()
        .expect("another cluster's data directory is refused");
    assert!(err.to_string().contains("data directory"), "{err}");
    let source = std::error::Error::source(&err).map(|s| s.to_string());
    assert!(format!("{err} {source:?}").contains("another"), "{err}");

    // A corrupt data file stops the replica with the file's name.
    let path = configs[1].data_dir.join("raft.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    for b in &mut bytes[len / 4..len / 2] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, bytes).unwrap();
    let err = RaftStore::start(configs[1].clone(), watch::channel(false).1).await;
    match err {
        Ok(_) => panic!("a corrupt data file was accepted"),
        Err(e) => {
            let text = format!("{e}: {:?}", std::error::Error::source(&e));
            assert!(text.contains("raft.redb"), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_another_join_token_cannot_take_part() {
    let dir = scratch_dir("token");
    let mut configs = configs(3, &dir);
    configs[2].tls = RaftTls::JoinToken("a-different-token-0123456789".into());
    let (stores, _shutdowns) = start_each(&configs).await;
    // Nodes 1 and 2 form a quorum; node 3 never learns of a leader.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stores[..2].iter().any(|s| s.node.is_leader()) {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stores[0].create(mesh("tok")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(stores[2].node.leader().is_none());
    assert!(matches!(
        stores[2]
            .stale_reads()
            .get(&ResourceKey::new(ResourceType::Mesh, "", "tok"))
            .await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cas_histories_are_linearizable_across_a_leader_stop() {
    use crate::testing::linearizable::{Call, CasOp, CasRet, Versioned, check};

    let cluster = TestCluster::start(3).await;
    let keys: Vec<ResourceKey> = (0..3)
        .map(|i| ResourceKey::new(ResourceType::MeshTimeout, "lin", format!("k{i}")))
        .collect();
    cluster.stores[0].create(mesh("lin")).await.unwrap();
    for k in &keys {
        let mut r = timeout("lin", &k.name);
        r.meta.labels.insert("value".into(), "init".into());
        cluster.stores[0].create(r).await.unwrap();
    }
    let start = Instant::now();
    let nanos = move || u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let leader = cluster.wait_leader().await;
    let calls_made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for client in 0..4usize {
        let stores = cluster.stores.clone();
        let keys = keys.clone();
        let calls_made = calls_made.clone();
        clients.push(tokio::spawn(async move {
            let mut history: Vec<(usize, Call<CasOp, CasRet>)> = Vec::new();
            let mut known: Vec<u64> = vec![1; keys.len()];
            for n in 0..40usize {
                let k = (client + n) % keys.len();
                let store = &stores[(client + n / 3) % stores.len()];
                calls_made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let invoked = nanos();
                if n % 2 == 0 {
                    // A failed read changed nothing.
                    if let Ok(r) = store.get(&keys[k]).await {
                        known[k] = r.meta.version;
                        let value = r.meta.labels.get("value").cloned().unwrap_or_default();
                        history.push((
                            k,
                            Call {
                                op: CasOp::Read,
                                ret: Some(CasRet::Read {
                                    version: r.meta.version,
                                    value,
                                }),
                                invoked,
                                returned: Some(nanos()),
                            },
                        ));
                    }
                } else {
                    let value = format!("c{client}-{n}");
                    let mut r = timeout("lin", &keys[k].name);
                    r.meta.version = known[k];
                    r.meta.labels.insert("value".into(), value.clone());
                    let op = CasOp::Cas {
                        expected: known[k],
                        value,
                    };
                    let (ret, returned) = match store.update(r).await {
                        Ok(r) => {
                            known[k] = r.meta.version;
                            (
                                Some(CasRet::Updated {
                                    version: r.meta.version,
                                }),
                                Some(nanos()),
                            )
                        }
                        Err(StoreError::Conflict { actual, .. }) => {
                            known[k] = actual;
                            (Some(CasRet::Conflict), Some(nanos()))
                        }
                        Err(_) => (None, None),
                    };
                    history.push((
                        k,
                        Call {
                            op,
                            ret,
                            invoked,
                            returned,
                        },
                    ));
                }
            }
            history
        }));
    }
    // The leader stops while the clients run: after a quarter of their calls.
    while calls_made.load(std::sync::atomic::Ordering::Relaxed) < 40 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    cluster.shutdowns[leader].send(true).unwrap();
    let mut per_key: Vec<Vec<Call<CasOp, CasRet>>> = vec![Vec::new(); keys.len()];
    for c in clients {
        for (k, call) in c.await.unwrap() {
            per_key[k].push(call);
        }
    }
    let init = Versioned {
        version: 1,
        value: "init".into(),
    };
    let unknown = per_key.iter().flatten().filter(|c| c.ret.is_none()).count();
    let total: usize = per_key.iter().map(Vec::len).sum();
    eprintln!("{total} calls recorded, {unknown} with an unknown outcome");
    for (k, history) in per_key.iter().enumerate() {
        assert!(history.len() > 10, "key {k}: too few calls recorded");
        if let Err(e) = check(&init, history) {
            panic!("key {k}: {e}");
        }
    }
}

/// openraft's own storage suite against the redb log store and the state machine.
struct SuiteBuilder;

impl openraft::testing::StoreBuilder<types::TypeConfig, LogStore, StateMachine, PathBuf>
    for SuiteBuilder
{
    async fn build(
        &self,
    ) -> std::result::Result<(PathBuf, LogStore, StateMachine), openraft::StorageError<NodeId>>
    {
        let dir = scratch_dir("suite");
        let file = LogStore::open(&dir.join("raft.redb"))
            .map_err(|e| openraft::StorageIOError::write(openraft::AnyError::new(&e)))?;
        let sm = StateMachine::open(Shared::new(), file.clone())?;
        Ok((dir, file, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    openraft::testing::Suite::test_all(SuiteBuilder).unwrap();
}

/// A CA and a leaf naming `kuma-raft` for both server and client use, as PEM files.
fn tls_files(dir: &std::path::Path) -> RaftTls {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["kuma-raft".to_string()]).unwrap();
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_path, ca_pem).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    RaftTls::Files {
        ca: ca_path,
        cert: cert_path,
        key: key_path,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_authenticate_with_certificate_files_too() {
    let dir = scratch_dir("files");
    let tls = tls_files(&dir);
    let mut configs = configs(3, &dir);
    for c in &mut configs {
        c.tls = tls.clone();
    }
    let cluster = start_all(configs).await;
    let store = cluster.follower().await;
    store.create(mesh("files")).await.unwrap();
    assert!(
        cluster.stores[0]
            .stale_reads()
            .get(&ResourceKey::new(ResourceType::Mesh, "", "files"))
            .await
            .is_ok()
            || cluster.stores[0]
                .get(&ResourceKey::new(ResourceType::Mesh, "", "files"))
                .await
                .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_a_live_nodes_id_is_refused() {
    let cluster = TestCluster::start(3).await;
    cluster.stores[0].create(mesh("dup")).await.unwrap();
    // The leader replicates to the followers; another process claims to be the leader.
    let leader = cluster.stores[cluster.wait_leader().await].node_id();
    let follower = if leader == 1 { 2 } else { 1 };
    let follower_addr = cluster.configs[0].peers[&follower].clone();
    let material = tls::TlsMaterial::load(&cluster.configs[0].tls).unwrap();
    let claiming = |node_id| {
        network::Peers::new(
            material.client(),
            network::Caller {
                cluster_id: cluster.configs[0].cluster_id.clone(),
                node_id,
                instance: "another-data-directory".into(),
            },
        )
    };
    let vote = |peers: network::Peers| {
        let addr = follower_addr.clone();
        async move {
            peers
                .call(
                    &addr,
                    network::Method::Vote,
                    b"{}".to_vec(),
                    Duration::from_secs(5),
                )
                .await
                .unwrap_err()
                .to_string()
        }
    };
    let refused = vote(claiming(leader)).await;
    assert!(refused.contains("in use by another replica"), "{refused}");
    // ...or to be the replica it talks to.
    let refused = vote(claiming(follower)).await;
    assert!(refused.contains("this replica's own"), "{refused}");
    // Another cluster's replica is refused too, saying which.
    let stranger = network::Peers::new(
        material.client(),
        network::Caller {
            cluster_id: "elsewhere".into(),
            node_id: 7,
            instance: "x".into(),
        },
    );
    let refused = vote(stranger).await;
    assert!(refused.contains("\"elsewhere\""), "{refused}");
    // And the cluster is undisturbed.
    cluster.stores[2].create(mesh("dup-2")).await.unwrap();
}
