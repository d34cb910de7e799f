//! The configured store and its leader elector.

use std::sync::Arc;

use store::leader::{AlwaysLeader, LeaderElector, LeaseTiming};
use store::{MemoryStore, SharedStore};
use tokio::sync::watch;

use crate::config::{Config, StoreType};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("store.type (KUMA_STORE_TYPE): this kuma-cp was built without etcd support")]
    NoEtcd,
    #[error("shut down while waiting for etcd")]
    StoppedWaiting,
    #[error("migrating the Postgres schema")]
    Migrate(#[source] store::StoreError),
    #[error("store.raft")]
    RaftConfig(#[source] crate::config::ConfigError),
    #[error("starting the raft store")]
    Raft(#[source] store::raft::RaftStoreError),
}

/// The election all replicas of one control plane campaign in.
pub const LEADER_ELECTION: &str = "kuma-cp-leader";

pub struct Backend {
    pub store: SharedStore,
    /// The same store for readers that tolerate reading this replica's applied state (xDS,
    /// KDS senders reacting to its events): raft's stale reads, the store itself elsewhere.
    pub local_reads: SharedStore,
    /// Set for raft: its failure stops the control plane.
    pub raft: Option<store::raft::RaftStore>,
    pub elector: Arc<dyn LeaderElector>,
    /// Electors of other elections on the same backend, by name: a hosted manager elects a
    /// leader per control plane, so their leader work spreads over the replicas and moves
    /// when one is lost.
    pub elections: Elections,
    /// Set for Postgres, whose schema is checked once the database answers.
    pub postgres: Option<sqlx_pool::Pool>,
}

/// An elector for the named election.
pub type Elections = Arc<dyn Fn(&str) -> Arc<dyn LeaderElector> + Send + Sync>;

/// Keeps the sqlx type out of the rest of the binary.
pub mod sqlx_pool {
    pub type Pool = sqlx::PgPool;
}

impl Backend {
    /// A store every replica reads and writes alike (memory, Postgres, etcd).
    fn shared(
        store: SharedStore,
        elector: Arc<dyn LeaderElector>,
        elections: Elections,
        postgres: Option<sqlx_pool::Pool>,
    ) -> Backend {
        Backend {
            local_reads: store.clone(),
            store,
            raft: None,
            elector,
            elections,
            postgres,
        }
    }
}

/// The store and elector `config` names; `shutdown` ends a wait for a store not up yet.
pub async fn build(
    config: &Config,
    shutdown: &watch::Receiver<bool>,
) -> Result<Backend, BackendError> {
    match config.store.store_type {
        StoreType::Memory => Ok(Backend::shared(
            Arc::new(MemoryStore::new()),
            Arc::new(AlwaysLeader),
            Arc::new(|_: &str| Arc::new(AlwaysLeader) as Arc<dyn LeaderElector>),
            None,
        )),
        StoreType::Postgres => {
            let store = store::postgres::PostgresStore::connect(&config.postgres());
            let pool = store.pool().clone();
            let elector = store::postgres::PostgresLeaderElector::new(
                pool.clone(),
                LEADER_ELECTION,
                LeaseTiming::default(),
            );
            let elections = {
                let pool = pool.clone();
                Arc::new(move |name: &str| {
                    store::postgres::PostgresLeaderElector::new(
                        pool.clone(),
                        name,
                        LeaseTiming::default(),
                    ) as Arc<dyn LeaderElector>
                })
            };
            Ok(Backend::shared(
                Arc::new(store),
                elector,
                elections,
                Some(pool),
            ))
        }
        StoreType::Etcd => build_etcd(config, shutdown.clone()).await,
        StoreType::Raft => {
            let raft_config = config.raft().map_err(BackendError::RaftConfig)?;
            let store = store::raft::RaftStore::start(raft_config, shutdown.clone())
                .await
                .map_err(BackendError::Raft)?;
            // Raft has one leader: every election follows it.
            let elector: Arc<dyn LeaderElector> = Arc::new(store.leader_elector());
            let elections = {
                let store = store.clone();
                Arc::new(move |_: &str| Arc::new(store.leader_elector()) as Arc<dyn LeaderElector>)
            };
            Ok(Backend {
                local_reads: Arc::new(store.stale_reads()),
                elector,
                elections,
                store: Arc::new(store.clone()),
                raft: Some(store),
                postgres: None,
            })
        }
    }
}

/// Connects with backoff: etcd may come up after the control plane.
#[cfg(feature = "etcd")]
async fn build_etcd(
    config: &Config,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Backend, BackendError> {
    let cfg = config.etcd();
    let mut delay = std::time::Duration::from_millis(200);
    let mut attempt = 1;
    let store = loop {
        match store::etcd::EtcdStore::connect(cfg.clone()).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(attempt, error = %e, retry_in = ?delay, "store is not reachable yet (store.etcd.endpoints)");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait_for(|s| *s) => return Err(BackendError::StoppedWaiting),
                }
                delay = (delay * 2).min(std::time::Duration::from_secs(10));
                attempt += 1;
            }
        }
    };
    let store = Arc::new(store);
    let elector = Arc::new(store.leader_elector(LEADER_ELECTION, LeaseTiming::default()));
    let elections = {
        let store = store.clone();
        Arc::new(move |name: &str| {
            Arc::new(store.leader_elector(name, LeaseTiming::default())) as Arc<dyn LeaderElector>
        })
    };
    Ok(Backend::shared(store, elector, elections, None))
}

#[cfg(not(feature = "etcd"))]
async fn build_etcd(_: &Config, _: watch::Receiver<bool>) -> Result<Backend, BackendError> {
    Err(BackendError::NoEtcd)
}

/// `kuma-cp migrate up`: what was done, for the operator.
pub async fn migrate_up(config: &Config) -> Result<String, BackendError> {
    let StoreType::Postgres = config.store.store_type else {
        return Ok(format!(
            "store type {:?} has no schema to migrate",
            config.store.store_type
        ));
    };
    let store = store::postgres::PostgresStore::connect(&config.postgres());
    let applied = store::postgres::migrate_up(store.pool())
        .await
        .map_err(BackendError::Migrate)?;
    let latest = store::postgres::latest_schema_version();
    Ok(if applied.is_empty() {
        format!("schema is up to date (version {latest})")
    } else {
        format!("applied migrations {applied:?}; schema is at version {latest}")
    })
}
