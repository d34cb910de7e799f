//! The Postgres backend against a real server: the shared conformance suite, plus replicas
//! sharing one database, reconnects, schema checks and leader election.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use model::{Resource, ResourceKey, ResourceType};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use store::leader::{LeaderElector, LeaseTiming};
use store::postgres::{
    PostgresLeaderElector, PostgresStore, SchemaError, check_schema, migrate_up,
};
use store::testing::postgres::TestPostgres;
use store::{ResourceStore, SharedStore, StoreError};
use tokio::sync::watch;

/// One cluster for the whole binary; each test gets its own database.
fn cluster() -> Option<&'static TestPostgres> {
    static PG: OnceLock<Option<TestPostgres>> = OnceLock::new();
    PG.get_or_init(TestPostgres::start).as_ref()
}

fn pool_for(url: &str) -> sqlx::PgPool {
    PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy(url)
        .unwrap()
}

async fn fresh_db(prefix: &str) -> Option<String> {
    let pg = tokio::task::block_in_place(cluster)?;
    let db = tokio::task::block_in_place(|| pg.create_database(prefix));
    let url = pg.url(&db);
    migrate_up(&pool_for(&url)).await.unwrap();
    Some(url)
}

async fn store_on(url: &str) -> Arc<PostgresStore> {
    let store = Arc::new(PostgresStore::from_pool(pool_for(url)));
    // Let the event listener attach before the test writes anything.
    tokio::time::sleep(Duration::from_millis(300)).await;
    store
}

macro_rules! skip_unless {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return,
        }
    };
}

store::conformance_tests!({
    let url = skip_unless!(fresh_db("conf").await);
    store_on(&url).await as SharedStore
});

fn mesh(name: &str) -> Resource {
    Resource::new(ResourceType::Mesh, "", name, json!({}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_see_each_others_writes_and_events() {
    let url = skip_unless!(fresh_db("share").await);
    let a = store_on(&url).await;
    let b = store_on(&url).await;
    let mut b_events = b.subscribe();
    let start = Instant::now();
    a.create(mesh("shared")).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(2), b_events.recv())
        .await
        .unwrap()
        .unwrap();
    let latency = start.elapsed();
    assert_eq!(ev.key, ResourceKey::new(ResourceType::Mesh, "", "shared"));
    eprintln!("cross-replica event latency: {latency:?}");
    assert!(latency < Duration::from_secs(1), "event took {latency:?}");
    assert_eq!(b.get(&ev.key).await.unwrap().meta.version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_two_replicas() {
    let url = skip_unless!(fresh_db("race").await);
    let a = store_on(&url).await;
    let b = store_on(&url).await;
    let created = a.create(mesh("race")).await.unwrap();
    let mut tasks = Vec::new();
    for (i, s) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        let mut r = created.clone();
        r.meta.labels.insert("writer".into(), i.to_string());
        tasks.push(tokio::spawn(async move { s.update(r).await }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(wins, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_is_checked_and_migrations_are_idempotent() {
    let pg = skip_unless!(tokio::task::block_in_place(cluster));
    let db = tokio::task::block_in_place(|| pg.create_database("schema"));
    let pool = pool_for(&pg.url(&db));
    match check_schema(&pool).await {
        Err(SchemaError::Behind { current: 0, latest }) => assert!(latest >= 1),
        other => panic!("expected Behind, got {other:?}"),
    }
    assert_eq!(migrate_up(&pool).await.unwrap(), vec![1]);
    assert!(migrate_up(&pool).await.unwrap().is_empty());
    check_schema(&pool).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_event_connection_is_reconciled() {
    let url = skip_unless!(fresh_db("reconcile").await);
    let a = store_on(&url).await;
    let b = store_on(&url).await;
    let mut a_events = a.subscribe();
    // Cut every LISTEN connection, then write at once: A either gets the NOTIFY after its
    // listener reconnects or finds the row when it reconciles. Either way it must hear of it.
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%' AND datname = current_database()")
        .execute(b.pool())
        .await
        .unwrap();
    b.create(mesh("while-away")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline, a_events.recv())
            .await
            .expect("event never arrived")
            .unwrap();
        if ev.key.name == "while-away" {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_database_restart_and_steps_down_while_it_is_gone() {
    // A cluster of its own: this test stops it.
    let mut pg = skip_unless!(tokio::task::block_in_place(TestPostgres::start));
    let db = tokio::task::block_in_place(|| pg.create_database("restart"));
    let url = pg.url(&db);
    migrate_up(&pool_for(&url)).await.unwrap();
    let a = store_on(&url).await;
    let mut events = a.subscribe();
    a.create(mesh("before")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), events.recv())
        .await
        .unwrap()
        .unwrap();

    let timing = LeaseTiming {
        ttl: Duration::from_secs(2),
        renew_every: Duration::from_millis(200),
    };
    let elector = PostgresLeaderElector::new(a.pool().clone(), "restart", timing);
    let (leader_tx, mut leader_rx) = watch::channel(false);
    let (_shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move { elector.campaign("only", leader_tx, shutdown_rx).await });
    tokio::time::timeout(Duration::from_secs(5), leader_rx.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();

    tokio::task::block_in_place(|| pg.stop());
    let start = Instant::now();
    let err = a
        .get(&ResourceKey::new(ResourceType::Mesh, "", "before"))
        .await;
    assert!(
        matches!(err, Err(StoreError::Unavailable { .. })),
        "{err:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "a down database must fail fast"
    );
    // The leader must give up before its lease could have expired for anyone else.
    tokio::time::timeout(timing.ttl, leader_rx.wait_for(|l| !*l))
        .await
        .expect("leader kept leading without its database")
        .unwrap();

    tokio::task::block_in_place(|| pg.restart());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match a.create(mesh("after")).await {
            Ok(_) => break,
            Err(StoreError::Unavailable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("store did not recover: {e:?}"),
        }
    }
    assert_eq!(
        a.get(&ResourceKey::new(ResourceType::Mesh, "", "before"))
            .await
            .unwrap()
            .meta
            .version,
        1,
        "a write acknowledged before the restart was lost"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("no event after restart")
            .unwrap();
        if ev.key.name == "after" {
            break;
        }
    }
    tokio::time::timeout(Duration::from_secs(10), leader_rx.wait_for(|l| *l))
        .await
        .expect("leadership not regained")
        .unwrap();
}

type Replica = (
    &'static str,
    watch::Receiver<bool>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
);

fn leaders(replicas: &[Replica]) -> Vec<&'static str> {
    replicas
        .iter()
        .filter(|r| *r.1.borrow())
        .map(|r| r.0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_fast_handover() {
    let url = skip_unless!(fresh_db("leader").await);
    let timing = LeaseTiming {
        ttl: Duration::from_secs(2),
        renew_every: Duration::from_millis(200),
    };
    let mut replicas: Vec<Replica> = Vec::new();
    for id in ["a", "b", "c"] {
        let elector = PostgresLeaderElector::new(pool_for(&url), "kuma-cp-leader", timing);
        let (leader_tx, leader_rx) = watch::channel(false);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(async move { elector.campaign(id, leader_tx, shutdown_rx).await });
        replicas.push((id, leader_rx, shutdown_tx, task));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while leaders(&replicas).len() != 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(leaders(&replicas).len(), 1, "expected exactly one leader");
    // Stable: still exactly one a few renewals later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first = leaders(&replicas);
    assert_eq!(first.len(), 1);
    let first = first[0];

    // Crash the leader: its task dies without releasing the lease, like SIGKILL.
    let idx = replicas.iter().position(|r| r.0 == first).unwrap();
    let (_, _, _, task) = replicas.remove(idx);
    task.abort();
    let start = Instant::now();
    while leaders(&replicas).len() != 1 && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        leaders(&replicas).len(),
        1,
        "no single new leader within 10 s"
    );
    eprintln!("takeover after a crashed leader: {:?}", start.elapsed());

    // A clean shutdown releases the lease: the last replica takes over within a renewal or two.
    let second = leaders(&replicas)[0];
    let idx = replicas.iter().position(|r| r.0 == second).unwrap();
    let (_, _, shutdown, task) = replicas.remove(idx);
    shutdown.send(true).unwrap();
    task.await.unwrap();
    let start = Instant::now();
    let last = &mut replicas[0].1;
    tokio::time::timeout(Duration::from_secs(2), last.wait_for(|l| *l))
        .await
        .expect("no handover after a clean shutdown")
        .unwrap();
    eprintln!("takeover after a clean shutdown: {:?}", start.elapsed());
}

/// A hosted manager's tenants on one database: the suite through one tenant's scope, while
/// another tenant's scope on a second replica writes the suite's own names.
mod tenant_scope {
    use super::*;
    use store::tenant::TenantStores;

    async fn scope_beside_a_neighbour() -> Option<SharedStore> {
        let url = fresh_db("tenant").await?;
        let (ours, theirs) = (store_on(&url).await, store_on(&url).await);
        let neighbour = TenantStores::new(theirs).scope("neighbour");
        tokio::spawn(async move {
            for _ in 0..50 {
                for name in ["c-create", "c-dup", "c-update", "c-events", "c-list"] {
                    let _ = neighbour.create(mesh(name)).await;
                    let _ = neighbour
                        .create(store::conformance::timeout(name, "t1"))
                        .await;
                    let _ = neighbour
                        .delete(&ResourceKey::new(ResourceType::Mesh, "", name))
                        .await;
                }
            }
        });
        Some(TenantStores::new(ours).scope("tenant-1"))
    }

    store::conformance_tests!(skip_unless!(scope_beside_a_neighbour().await));
}
