//! The Postgres backend (sqlx, no compile-time query macros). Writes are plain SQL with the
//! version column as the optimistic-concurrency check; a trigger announces every change with
//! NOTIFY, and each replica turns those into its change events. After a lost listener
//! connection a replica re-lists and diffs against what it last saw, so nothing is missed.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use model::{Resource, ResourceKey, ResourceType, Timestamp};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgSslMode};
// Dynamic SQL here is only ever assembled from constants in this file.
use sqlx::{AssertSqlSafe, Postgres, Row, Transaction};
use tokio::sync::{broadcast, watch};

use crate::leader::{LeaderElector, LeaseTiming};
use crate::trace::PendingCauses;
use crate::{ChangeEvent, ListPage, ListQuery, Operation, ResourceStore, Result, StoreError};

const EVENT_CHANNEL: &str = "kuma_resource_events";
const EVENT_BUFFER: usize = 16 * 1024;

/// Schema migrations, applied in order by `kuma-cp migrate up`.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "resources",
    include_str!("../migrations/postgres/0001_resources.sql"),
)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    /// Encrypt, but do not check the server's certificate.
    VerifyNone,
    /// Check the certificate chains to the given CA.
    VerifyCa,
    /// Check the chain and that the certificate names the host.
    VerifyFull,
}

impl FromStr for TlsMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "disable" => Ok(TlsMode::Disable),
            "verifyNone" => Ok(TlsMode::VerifyNone),
            "verifyCa" => Ok(TlsMode::VerifyCa),
            "verifyFull" => Ok(TlsMode::VerifyFull),
            other => Err(format!(
                "{other:?} is not one of disable, verifyNone, verifyCa, verifyFull"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub db_name: String,
    pub connection_timeout: Duration,
    pub max_open_connections: u32,
    pub tls_mode: TlsMode,
    pub tls_ca_path: Option<PathBuf>,
    pub tls_cert_path: Option<PathBuf>,
    pub tls_key_path: Option<PathBuf>,
}

impl PostgresConfig {
    pub fn connect_options(&self) -> PgConnectOptions {
        let mut o = PgConnectOptions::new_without_pgpass()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .database(&self.db_name)
            .application_name("kuma-cp");
        if !self.password.is_empty() {
            o = o.password(&self.password);
        }
        o = o.ssl_mode(match self.tls_mode {
            TlsMode::Disable => PgSslMode::Disable,
            TlsMode::VerifyNone => PgSslMode::Require,
            TlsMode::VerifyCa => PgSslMode::VerifyCa,
            TlsMode::VerifyFull => PgSslMode::VerifyFull,
        });
        if let Some(ca) = &self.tls_ca_path {
            o = o.ssl_root_cert(ca);
        }
        if let Some(cert) = &self.tls_cert_path {
            o = o.ssl_client_cert(cert);
        }
        if let Some(key) = &self.tls_key_path {
            o = o.ssl_client_key(key);
        }
        o
    }
}

fn unavailable(context: &str, e: sqlx::Error) -> StoreError {
    // A TLS failure is almost always configuration, not an outage: say which settings.
    let hint = if matches!(e, sqlx::Error::Tls(_)) {
        " (check store.postgres.tls.mode, caPath, certPath and keyPath: KUMA_STORE_POSTGRES_TLS_*)"
    } else {
        ""
    };
    StoreError::Unavailable {
        message: format!("postgres: {context}: {e}{hint}"),
        source: Some(Box::new(e)),
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "23505")
}

fn nanos(t: Timestamp) -> i64 {
    t.0.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

pub struct PostgresStore {
    pool: PgPool,
    events: broadcast::Sender<ChangeEvent>,
    causes: PendingCauses,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PostgresStore {
    /// Builds the pool without connecting, so a control plane can start (not ready) while the
    /// database is still down; the event listener connects and reconnects on its own.
    pub fn connect(config: &PostgresConfig) -> PostgresStore {
        let pool = PgPoolOptions::new()
            .max_connections(config.max_open_connections.max(2))
            .acquire_timeout(config.connection_timeout)
            .connect_lazy_with(config.connect_options());
        Self::from_pool(pool)
    }

    pub fn from_pool(pool: PgPool) -> PostgresStore {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let causes = PendingCauses::default();
        let listener = tokio::spawn(listen_for_changes(
            pool.clone(),
            events.clone(),
            causes.clone(),
        ));
        PostgresStore {
            pool,
            events,
            causes,
            listener,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn mesh_exists(tx: &mut Transaction<'_, Postgres>, mesh: &str) -> Result<bool> {
        // FOR SHARE holds off a concurrent delete of the mesh until this transaction ends.
        let row = sqlx::query(
            "SELECT 1 FROM resources WHERE type = 'Mesh' AND mesh = '' AND name = $1 FOR SHARE",
        )
        .bind(mesh)
        .fetch_optional(&mut **tx)
        .await
        .map_err(|e| unavailable("checking the mesh", e))?;
        Ok(row.is_some())
    }

    fn decode_row(row: &sqlx::postgres::PgRow) -> Result<Resource> {
        let get_err = |e: sqlx::Error| unavailable("reading a row", e);
        let type_name: String = row.try_get("type").map_err(get_err)?;
        let mesh: String = row.try_get("mesh").map_err(get_err)?;
        let name: String = row.try_get("name").map_err(get_err)?;
        let kind = ResourceType::from_name(&type_name).ok_or_else(|| StoreError::Corrupt {
            key: ResourceKey::new(ResourceType::Config, "", name.clone()),
            message: format!("unknown type {type_name:?}"),
        })?;
        let key = ResourceKey::new(kind, mesh.clone(), name.clone());
        let corrupt = |message: String| StoreError::Corrupt {
            key: key.clone(),
            message,
        };
        let spec_text: String = row.try_get("spec").map_err(get_err)?;
        let status_text: Option<String> = row.try_get("status").map_err(get_err)?;
        let labels: Value = row.try_get("labels").map_err(get_err)?;
        let spec: Value =
            serde_json::from_str(&spec_text).map_err(|e| corrupt(format!("spec: {e}")))?;
        let status = status_text
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| corrupt(format!("status: {e}")))?;
        let labels: BTreeMap<String, String> =
            serde_json::from_value(labels).map_err(|e| corrupt(format!("labels: {e}")))?;
        let version: i64 = row.try_get("version").map_err(get_err)?;
        let created: i64 = row.try_get("creation_time").map_err(get_err)?;
        let modified: i64 = row.try_get("modification_time").map_err(get_err)?;
        Ok(Resource {
            kind,
            meta: model::Meta {
                name,
                mesh,
                version: version as u64,
                labels,
                creation_time: Timestamp(created as i128),
                modification_time: Timestamp(modified as i128),
            },
            spec,
            status,
        })
    }
}

fn encode(r: &Resource) -> Result<(String, Option<String>, Value)> {
    let key = r.key();
    let corrupt = |e: serde_json::Error| StoreError::Corrupt {
        key: key.clone(),
        message: e.to_string(),
    };
    let spec = serde_json::to_string(&r.spec).map_err(corrupt)?;
    let status = r
        .status
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(corrupt)?;
    let labels = serde_json::to_value(&r.meta.labels).map_err(corrupt)?;
    Ok((spec, status, labels))
}

const COLUMNS: &str =
    "type, mesh, name, version, spec, status, labels, creation_time, modification_time";

#[async_trait]
impl ResourceStore for PostgresStore {
    async fn get(&self, key: &ResourceKey) -> Result<Resource> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM resources WHERE type = $1 AND mesh = $2 AND name = $3"
        )))
        .bind(key.kind.name())
        .bind(&key.mesh)
        .bind(&key.name)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| unavailable("get", e))?;
        match row {
            Some(row) => Self::decode_row(&row),
            None => Err(StoreError::NotFound(key.clone())),
        }
    }

    async fn list(&self, q: &ListQuery) -> Result<ListPage> {
        let labels = serde_json::to_value(&q.labels).unwrap_or(Value::Object(Default::default()));
        let filter = "type = $1 AND ($2::text IS NULL OR mesh = $2) AND labels @> $3::jsonb \
                      AND ($4::text IS NULL OR strpos(name, $4) > 0)";
        let total: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM resources WHERE {filter}"
        )))
        .bind(q.kind.name())
        .bind(&q.mesh)
        .bind(&labels)
        .bind(&q.name_contains)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| unavailable("list", e))?;
        let total = total as usize;
        if q.size == Some(0) || q.offset >= total {
            return Ok(ListPage {
                items: vec![],
                total,
                next_offset: None,
            });
        }
        let limit = q.size.map(|s| s as i64);
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM resources WHERE {filter} ORDER BY mesh, name OFFSET $5 LIMIT $6"
        )))
        .bind(q.kind.name())
        .bind(&q.mesh)
        .bind(&labels)
        .bind(&q.name_contains)
        .bind(q.offset as i64)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable("list", e))?;
        let items = rows
            .iter()
            .map(Self::decode_row)
            .collect::<Result<Vec<_>>>()?;
        let end = q.offset + items.len();
        Ok(ListPage {
            items,
            total,
            next_offset: (end < total).then_some(end),
        })
    }

    async fn create(&self, mut resource: Resource) -> Result<Resource> {
        let key = resource.key();
        let (spec, status, labels) = encode(&resource)?;
        let now = Timestamp::now();
        let pending = self.causes.expect(&key);
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| unavailable("create", e))?;
        if key.kind.is_mesh_scoped() && !Self::mesh_exists(&mut tx, &key.mesh).await? {
            return Err(StoreError::MeshNotFound(key.mesh));
        }
        let res = sqlx::query(
            "INSERT INTO resources (type, mesh, name, version, spec, status, labels, creation_time, modification_time) \
             VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $7)",
        )
        .bind(key.kind.name())
        .bind(&key.mesh)
        .bind(&key.name)
        .bind(&spec)
        .bind(&status)
        .bind(&labels)
        .bind(nanos(now))
        .execute(&mut *tx)
        .await;
        match res {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(StoreError::AlreadyExists(key)),
            Err(e) => return Err(unavailable("create", e)),
        }
        tx.commit().await.map_err(|e| unavailable("create", e))?;
        pending.committed();
        resource.meta.version = 1;
        resource.meta.creation_time = Timestamp(nanos(now) as i128);
        resource.meta.modification_time = resource.meta.creation_time;
        Ok(resource)
    }

    async fn update(&self, mut resource: Resource) -> Result<Resource> {
        let key = resource.key();
        let (spec, status, labels) = encode(&resource)?;
        let now = nanos(Timestamp::now());
        let pending = self.causes.expect(&key);
        let row = sqlx::query(
            "UPDATE resources SET version = version + 1, spec = $5, status = $6, labels = $7, \
             modification_time = GREATEST($8, modification_time) \
             WHERE type = $1 AND mesh = $2 AND name = $3 AND version = $4 \
             RETURNING version, creation_time, modification_time",
        )
        .bind(key.kind.name())
        .bind(&key.mesh)
        .bind(&key.name)
        .bind(resource.meta.version as i64)
        .bind(&spec)
        .bind(&status)
        .bind(&labels)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| unavailable("update", e))?;
        let Some(row) = row else {
            // Tell a stale version apart from a missing resource.
            let current = self.get(&key).await?;
            return Err(StoreError::Conflict {
                key,
                expected: resource.meta.version,
                actual: current.meta.version,
            });
        };
        pending.committed();
        let get_err = |e: sqlx::Error| unavailable("update", e);
        resource.meta.version = row.try_get::<i64, _>("version").map_err(get_err)? as u64;
        resource.meta.creation_time =
            Timestamp(row.try_get::<i64, _>("creation_time").map_err(get_err)? as i128);
        resource.meta.modification_time = Timestamp(
            row.try_get::<i64, _>("modification_time")
                .map_err(get_err)? as i128,
        );
        Ok(resource)
    }

    async fn delete(&self, key: &ResourceKey) -> Result<()> {
        let pending = self.causes.expect(key);
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| unavailable("delete", e))?;
        let deleted =
            sqlx::query("DELETE FROM resources WHERE type = $1 AND mesh = $2 AND name = $3")
                .bind(key.kind.name())
                .bind(&key.mesh)
                .bind(&key.name)
                .execute(&mut *tx)
                .await
                .map_err(|e| unavailable("delete", e))?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound(key.clone()));
        }
        if key.kind == ResourceType::Mesh {
            // Mesh-scoped rows carry the mesh name; global-scoped rows have an empty mesh.
            sqlx::query("DELETE FROM resources WHERE mesh = $1")
                .bind(&key.name)
                .execute(&mut *tx)
                .await
                .map_err(|e| unavailable("delete", e))?;
        } else if let Some(insight) = key.kind.owned_insight() {
            sqlx::query("DELETE FROM resources WHERE type = $1 AND mesh = $2 AND name = $3")
                .bind(insight.name())
                .bind(&key.mesh)
                .bind(&key.name)
                .execute(&mut *tx)
                .await
                .map_err(|e| unavailable("delete", e))?;
        }
        tx.commit().await.map_err(|e| unavailable("delete", e))?;
        pending.committed();
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.events.subscribe()
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| unavailable("ping", e))
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}

// ---- change events ----

#[derive(serde::Deserialize)]
struct Notification {
    op: String,
    #[serde(rename = "type")]
    kind: String,
    mesh: String,
    name: String,
    version: u64,
}

/// What this replica has announced, so replays after a reconnect are not announced twice.
type Seen = HashMap<ResourceKey, u64>;

fn apply_event(
    seen: &mut Seen,
    events: &broadcast::Sender<ChangeEvent>,
    causes: &PendingCauses,
    op: Operation,
    key: ResourceKey,
    version: u64,
) {
    let fresh = match op {
        Operation::Delete => seen.remove(&key).is_some(),
        Operation::Create | Operation::Update => seen.insert(key.clone(), version) != Some(version),
    };
    if fresh {
        let cause = causes.take(&key);
        let _ = events.send(ChangeEvent {
            op,
            key,
            version,
            cause,
        });
    }
}

async fn snapshot(pool: &PgPool) -> std::result::Result<Seen, sqlx::Error> {
    let rows = sqlx::query("SELECT type, mesh, name, version FROM resources")
        .fetch_all(pool)
        .await?;
    let mut seen = Seen::with_capacity(rows.len());
    for row in rows {
        let type_name: String = row.try_get("type")?;
        let Some(kind) = ResourceType::from_name(&type_name) else {
            continue;
        };
        let version: i64 = row.try_get("version")?;
        seen.insert(
            ResourceKey::new(
                kind,
                row.try_get::<String, _>("mesh")?,
                row.try_get::<String, _>("name")?,
            ),
            version as u64,
        );
    }
    Ok(seen)
}

/// Announces differences between what was seen and what is stored now.
fn reconcile(
    seen: &mut Seen,
    now: Seen,
    events: &broadcast::Sender<ChangeEvent>,
    causes: &PendingCauses,
) {
    let gone: Vec<(ResourceKey, u64)> = seen
        .iter()
        .filter(|(k, _)| !now.contains_key(*k))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    for (key, version) in gone {
        apply_event(seen, events, causes, Operation::Delete, key, version);
    }
    for (key, version) in now {
        let op = if seen.contains_key(&key) {
            Operation::Update
        } else {
            Operation::Create
        };
        apply_event(seen, events, causes, op, key, version);
    }
}

async fn listen_for_changes(
    pool: PgPool,
    events: broadcast::Sender<ChangeEvent>,
    causes: PendingCauses,
) {
    let mut backoff = Duration::from_millis(100);
    let mut seen: Option<Seen> = None;
    loop {
        // (Re)establish LISTEN first, then snapshot: a change racing the snapshot is either in
        // it or notified after, and `seen` drops the duplicate.
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "postgres event listener cannot connect yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(e) = listener.listen(EVENT_CHANNEL).await {
            tracing::warn!(error = %e, "postgres LISTEN failed");
            tokio::time::sleep(backoff).await;
            continue;
        }
        match snapshot(&pool).await {
            Ok(now) => match seen.as_mut() {
                Some(s) => {
                    tracing::info!(
                        "postgres event listener reconnected; reconciling missed changes"
                    );
                    reconcile(s, now, &events, &causes);
                }
                None => seen = Some(now),
            },
            Err(e) => {
                tracing::warn!(error = %e, "postgres snapshot for change events failed");
                tokio::time::sleep(backoff).await;
                continue;
            }
        }
        backoff = Duration::from_millis(100);
        let Some(state) = seen.as_mut() else { continue };
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => match serde_json::from_str::<Notification>(n.payload()) {
                    Ok(n) => {
                        let Some(kind) = ResourceType::from_name(&n.kind) else {
                            continue;
                        };
                        let op = match n.op.as_str() {
                            "insert" => Operation::Create,
                            "update" => Operation::Update,
                            _ => Operation::Delete,
                        };
                        apply_event(
                            state,
                            &events,
                            &causes,
                            op,
                            ResourceKey::new(kind, n.mesh, n.name),
                            n.version,
                        );
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, payload = n.payload(), "malformed change notification")
                    }
                },
                Ok(None) => {
                    tracing::warn!("postgres event connection lost; reconnecting");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "postgres event connection failed; reconnecting");
                    tokio::time::sleep(backoff).await;
                    break;
                }
            }
        }
    }
}

// ---- schema ----

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "database schema is at version {current}, this kuma-cp needs {latest}: run `kuma-cp migrate up`"
    )]
    Behind { current: i64, latest: i64 },
    #[error(
        "database schema is at version {current}, newer than this kuma-cp knows ({latest}): upgrade kuma-cp"
    )]
    Ahead { current: i64, latest: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub fn latest_schema_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

pub async fn schema_version(pool: &PgPool) -> Result<i64> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('kuma_schema_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await
            .map_err(|e| unavailable("reading the schema version", e))?;
    if !exists {
        return Ok(0);
    }
    let v: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM kuma_schema_migrations")
        .fetch_one(pool)
        .await
        .map_err(|e| unavailable("reading the schema version", e))?;
    Ok(v.unwrap_or(0))
}

/// Refuses a schema that is behind (or ahead of) this build.
pub async fn check_schema(pool: &PgPool) -> std::result::Result<(), SchemaError> {
    let (current, latest) = (schema_version(pool).await?, latest_schema_version());
    match current.cmp(&latest) {
        std::cmp::Ordering::Less => Err(SchemaError::Behind { current, latest }),
        std::cmp::Ordering::Greater => Err(SchemaError::Ahead { current, latest }),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// Applies missing migrations, each in its own transaction, under an advisory lock so
/// replicas migrating at once do not collide. Returns the versions applied.
pub async fn migrate_up(pool: &PgPool) -> Result<Vec<i64>> {
    let err = |e| unavailable("migrating", e);
    let mut conn = pool.acquire().await.map_err(err)?;
    sqlx::query("SELECT pg_advisory_lock(764312)")
        .execute(&mut *conn)
        .await
        .map_err(err)?;
    let result = async {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS kuma_schema_migrations \
             (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .execute(&mut *conn)
        .await
        .map_err(err)?;
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM kuma_schema_migrations")
            .fetch_all(&mut *conn)
            .await
            .map_err(err)?;
        let mut done = Vec::new();
        for (version, name, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(err)?;
            sqlx::raw_sql(*sql).execute(&mut *tx).await.map_err(err)?;
            sqlx::query("INSERT INTO kuma_schema_migrations (version, name) VALUES ($1, $2)")
                .bind(version)
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            tx.commit().await.map_err(err)?;
            done.push(*version);
        }
        Ok(done)
    }
    .await;
    let _ = sqlx::query("SELECT pg_advisory_unlock(764312)")
        .execute(&mut *conn)
        .await;
    result
}

// ---- leader election ----

/// A lease row renewed by its holder; anyone may take it once it has expired (judged by the
/// database's clock, so replicas' clocks do not matter).
pub struct PostgresLeaderElector {
    pool: PgPool,
    election: String,
    timing: LeaseTiming,
}

impl PostgresLeaderElector {
    pub fn new(pool: PgPool, election: &str, timing: LeaseTiming) -> Arc<Self> {
        Arc::new(PostgresLeaderElector {
            pool,
            election: election.to_string(),
            timing,
        })
    }

    async fn try_acquire(&self, holder: &str) -> std::result::Result<bool, sqlx::Error> {
        let row = sqlx::query(
            "INSERT INTO leader_leases (name, holder, expires_at) \
             VALUES ($1, $2, now() + $3 * interval '1 millisecond') \
             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
             WHERE leader_leases.holder = EXCLUDED.holder OR leader_leases.expires_at < now() \
             RETURNING holder",
        )
        .bind(&self.election)
        .bind(holder)
        .bind(self.timing.ttl.as_millis() as f64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }
}

#[async_trait]
impl LeaderElector for PostgresLeaderElector {
    async fn campaign(
        &self,
        instance_id: &str,
        leader: watch::Sender<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let sent = tokio::time::Instant::now();
            let attempt =
                tokio::time::timeout(self.timing.renew_every, self.try_acquire(instance_id)).await;
            match attempt {
                Ok(Ok(true)) => {
                    deadline = Some(self.timing.self_deadline(sent));
                    if !*leader.borrow() {
                        tracing::info!(instance = instance_id, election = %self.election, "became leader");
                        let _ = leader.send(true);
                    }
                }
                Ok(Ok(false)) => {
                    deadline = None;
                    if *leader.borrow() {
                        tracing::warn!(
                            instance = instance_id,
                            "lease taken by another replica; stepping down"
                        );
                        let _ = leader.send(false);
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "renewing the leader lease failed"),
                Err(_) => tracing::warn!("renewing the leader lease timed out"),
            }
            // Sleep until the next renewal, but step down the moment the lease might lapse.
            let next = sent + self.timing.renew_every;
            let wake = match deadline {
                Some(d) if *leader.borrow() => next.min(d),
                _ => next,
            };
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
            if let Some(d) = deadline
                && tokio::time::Instant::now() >= d
                && *leader.borrow()
            {
                tracing::warn!(
                    instance = instance_id,
                    "could not renew the leader lease in time; stepping down"
                );
                let _ = leader.send(false);
                deadline = None;
            }
        }
        if *leader.borrow() {
            let _ = leader.send(false);
            let _ = sqlx::query("DELETE FROM leader_leases WHERE name = $1 AND holder = $2")
                .bind(&self.election)
                .bind(instance_id)
                .execute(&self.pool)
                .await;
        }
    }
}
