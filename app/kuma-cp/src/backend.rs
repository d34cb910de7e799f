//! The configured store and its leader elector.

use std::sync::Arc;

use anyhow::{Context, Result};
use store::leader::{AlwaysLeader, LeaderElector, LeaseTiming};
use store::{MemoryStore, SharedStore};

use crate::config::{Config, StoreType};

/// The election all replicas of one control plane campaign in.
pub const LEADER_ELECTION: &str = "kuma-cp-leader";

pub struct Backend {
    pub store: SharedStore,
    pub elector: Arc<dyn LeaderElector>,
    /// Set for Postgres, whose schema is checked once the database answers.
    pub postgres: Option<sqlx_pool::Pool>,
}

/// Keeps the sqlx type out of the rest of the binary.
pub mod sqlx_pool {
    pub type Pool = sqlx::PgPool;
}

pub async fn build(config: &Config) -> Result<Backend> {
    match config.store.store_type {
        StoreType::Memory => Ok(Backend {
            store: Arc::new(MemoryStore::new()),
            elector: Arc::new(AlwaysLeader),
            postgres: None,
        }),
        StoreType::Postgres => {
            let store = store::postgres::PostgresStore::connect(&config.postgres());
            let pool = store.pool().clone();
            let elector = store::postgres::PostgresLeaderElector::new(
                pool.clone(),
                LEADER_ELECTION,
                LeaseTiming::default(),
            );
            Ok(Backend {
                store: Arc::new(store),
                elector,
                postgres: Some(pool),
            })
        }
        StoreType::Etcd => build_etcd(config).await,
    }
}

/// Connects with backoff: etcd may come up after the control plane.
#[cfg(feature = "etcd")]
async fn build_etcd(config: &Config) -> Result<Backend> {
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
                    () = crate::run::shutdown_signal() => anyhow::bail!("shut down while waiting for etcd"),
                }
                delay = (delay * 2).min(std::time::Duration::from_secs(10));
                attempt += 1;
            }
        }
    };
    let elector = Arc::new(store.leader_elector(LEADER_ELECTION, LeaseTiming::default()));
    Ok(Backend {
        store: Arc::new(store),
        elector,
        postgres: None,
    })
}

#[cfg(not(feature = "etcd"))]
async fn build_etcd(_: &Config) -> Result<Backend> {
    anyhow::bail!("store.type (KUMA_STORE_TYPE): this kuma-cp was built without etcd support")
}

/// `kuma-cp migrate up`.
pub async fn migrate_up(config: &Config) -> Result<()> {
    match config.store.store_type {
        StoreType::Postgres => {
            let store = store::postgres::PostgresStore::connect(&config.postgres());
            let applied = store::postgres::migrate_up(store.pool())
                .await
                .context("migrating the Postgres schema")?;
            if applied.is_empty() {
                println!(
                    "schema is up to date (version {})",
                    store::postgres::latest_schema_version()
                );
            } else {
                println!(
                    "applied migrations {applied:?}; schema is at version {}",
                    store::postgres::latest_schema_version()
                );
            }
            Ok(())
        }
        other => {
            println!("store type {other:?} has no schema to migrate");
            Ok(())
        }
    }
}
