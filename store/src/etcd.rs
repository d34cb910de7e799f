//! The etcd backend (etcd v3 API, tested against etcd 3.4).
//!
//! Key layout, under a configurable prefix (default `/kuma`):
//!
//! ```text
//! <prefix>/resources/<Type>/<mesh>/<name>   mesh-scoped types
//! <prefix>/resources/<Type>/_/<name>        global-scoped types (Mesh, Zone, ...)
//! <prefix>/leader/<election name>           leader election, attached to a lease
//! ```
//!
//! Type first so that a list is one range scan of `<prefix>/resources/<Type>/` (or of
//! `<Type>/<mesh>/` for one mesh). Deleting a Mesh removes its contents with one transaction
//! holding one range delete per mesh-scoped type (about two dozen, well under etcd's default
//! `--max-txn-ops` of 128), so the cascade is atomic. Mesh and name segments are escaped (`%`
//! and `/`), so keys stay unambiguous even for names the validator would reject; `_` cannot
//! collide with a mesh because the type says whether the segment is a mesh at all.
//!
//! The value is a JSON record of our own (spec, status, labels, creation and modification time
//! as nanosecond strings), not Kuma's wire shape, so a read returns exactly what was written.
//! The resource version is etcd's per-key `version` (1 on create, +1 per put), so optimistic
//! concurrency is a compare on the key inside a transaction, with no extra bookkeeping.
//!
//! Change events come only from one watch per store instance, including for this instance's own
//! writes, so every replica sees the same stream and nothing is reported twice. When the watch
//! breaks (disconnect, compaction, restart of etcd) the task re-lists everything and diffs it
//! against the key -> version index it keeps, emitting synthetic events for what changed while
//! it was blind.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions,
    Identity, KeyValue, KvClient, LeaseClient, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse,
    WatchClient, WatchOptions,
};
use model::{Resource, ResourceKey, ResourceType, Timestamp};
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::leader::{LeaderElector, LeaseTiming};
use crate::trace::PendingCauses;
use crate::{
    ChangeEvent, ListPage, ListQuery, Operation, ResourceStore, Result, StoreError, paginate,
};

/// Room for bursts; a consumer further behind than this re-lists (same as the memory store).
const EVENT_BUFFER: usize = 16 * 1024;

/// Keys per range request. Ranges are paged because one response must fit the gRPC message
/// limit below, and a type can hold many thousands of resources.
const RANGE_PAGE: i64 = 256;

/// Largest response we accept. A page of `RANGE_PAGE` values near etcd's 1.5 MiB request limit
/// is far above tonic's 4 MiB default, so raise it well beyond the worst case.
const MAX_DECODING_BYTES: usize = 512 * 1024 * 1024;

/// HTTP/2 pings detect a dead etcd on idle connections (the watch stream would otherwise wait
/// forever for a half-open TCP connection). etcd answers pings more frequent than every 5 s
/// (`--grpc-keepalive-min-time`) with GOAWAY, so stay above that.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// The mesh segment of global-scoped keys.
const NO_MESH: &str = "_";

/// How to reach etcd and where our keys live.
#[derive(Clone)]
pub struct EtcdConfig {
    /// `http://host:port` or `https://host:port`; a bare `host:port` uses TLS when TLS is set.
    pub endpoints: Vec<String>,
    /// Every key starts with this; lets several control planes share one etcd.
    pub key_prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// TLS is used when a CA or a client certificate is given (endpoints must be `https://`).
    pub ca_cert_path: Option<String>,
    pub client_cert_path: Option<String>,
    pub client_key_path: Option<String>,
    /// Bound on establishing a connection.
    pub dial_timeout: Duration,
    /// Bound on each request; a slower answer is reported as unavailable.
    pub request_timeout: Duration,
    /// Largest stored record (key plus JSON value) we send. etcd refuses requests above its
    /// `--max-request-bytes` (1.5 MiB by default) with an opaque error; checking first names
    /// the resource instead.
    pub max_value_bytes: usize,
    /// Backoff between attempts to re-establish the watch; doubles up to the maximum.
    pub reconnect_min_backoff: Duration,
    pub reconnect_max_backoff: Duration,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            key_prefix: "/kuma".to_string(),
            username: None,
            password: None,
            ca_cert_path: None,
            client_cert_path: None,
            client_key_path: None,
            dial_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            max_value_bytes: 1024 * 1024,
            reconnect_min_backoff: Duration::from_millis(100),
            reconnect_max_backoff: Duration::from_secs(5),
        }
    }
}

// By hand so the password never reaches a log line.
impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("key_prefix", &self.key_prefix)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_cert_path", &self.ca_cert_path)
            .field("client_cert_path", &self.client_cert_path)
            .field("client_key_path", &self.client_key_path)
            .field("dial_timeout", &self.dial_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("reconnect_min_backoff", &self.reconnect_min_backoff)
            .field("reconnect_max_backoff", &self.reconnect_max_backoff)
            .finish()
    }
}

fn unavailable(message: impl Into<String>, source: etcd_client::Error) -> StoreError {
    StoreError::Unavailable {
        message: message.into(),
        source: Some(Box::new(source)),
    }
}

/// Runs one etcd call with a deadline. Without it a request to an unreachable etcd waits for
/// the channel to become ready, which may be forever.
async fn bounded<T>(
    what: &str,
    limit: Duration,
    call: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unavailable(format!("etcd {what} failed: {e}"), e)),
        Err(_) => Err(StoreError::Unavailable {
            message: format!("etcd {what} timed out after {limit:?}"),
            source: None,
        }),
    }
}

async fn connect_client(config: &EtcdConfig) -> Result<Client> {
    if config.endpoints.is_empty() {
        return Err(StoreError::Unavailable {
            message: "no etcd endpoints configured".into(),
            source: None,
        });
    }
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.dial_timeout)
        .with_keep_alive(KEEPALIVE_INTERVAL, config.request_timeout)
        .with_keep_alive_while_idle(true);
    if let Some(user) = &config.username {
        options = options
            .with_user(user.clone(), config.password.clone().unwrap_or_default())
            .with_auto_token_refresh(true);
    }
    if config.ca_cert_path.is_some() || config.client_cert_path.is_some() {
        options = options.with_tls(tls_options(config).await?);
    }
    // With credentials, connecting authenticates (a request); otherwise it is lazy.
    bounded(
        "connect",
        config.dial_timeout,
        Client::connect(&config.endpoints, Some(options)),
    )
    .await
}

async fn tls_options(config: &EtcdConfig) -> Result<TlsOptions> {
    async fn read(what: &str, path: &str) -> Result<Vec<u8>> {
        tokio::fs::read(path)
            .await
            .map_err(|e| StoreError::Unavailable {
                message: format!("cannot read etcd {what} {path:?}: {e}"),
                source: Some(Box::new(e)),
            })
    }
    let mut tls = TlsOptions::new();
    if let Some(path) = &config.ca_cert_path {
        tls = tls.ca_certificate(Certificate::from_pem(read("CA certificate", path).await?));
    }
    match (&config.client_cert_path, &config.client_key_path) {
        (Some(cert), Some(key)) => {
            let cert = read("client certificate", cert).await?;
            let key = read("client key", key).await?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        (None, None) => {}
        _ => {
            return Err(StoreError::Unavailable {
                message: "etcd client certificate and key must be given together".into(),
                source: None,
            });
        }
    }
    Ok(tls)
}

/// Escapes a key segment so it cannot contain the separator.
fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for c in segment.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The smallest key greater than every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: everything from the prefix on ("\0" means no upper bound to etcd).
    vec![0]
}

/// Maps resource keys to etcd keys and back.
#[derive(Debug, Clone)]
struct Layout {
    /// `<prefix>/resources/`
    resources: String,
}

impl Layout {
    fn new(key_prefix: &str) -> Self {
        Layout {
            resources: format!("{}/resources/", key_prefix.trim_end_matches('/')),
        }
    }

    fn type_prefix(&self, kind: ResourceType) -> String {
        format!("{}{}/", self.resources, kind.name())
    }

    fn mesh_prefix(&self, kind: ResourceType, mesh: &str) -> String {
        format!("{}{}/", self.type_prefix(kind), escape(mesh))
    }

    fn key(&self, key: &ResourceKey) -> String {
        let mesh = if key.kind.is_mesh_scoped() {
            escape(&key.mesh)
        } else {
            NO_MESH.to_string()
        };
        format!("{}{mesh}/{}", self.type_prefix(key.kind), escape(&key.name))
    }

    fn parse(&self, raw: &[u8]) -> Option<ResourceKey> {
        let rest = std::str::from_utf8(raw)
            .ok()?
            .strip_prefix(&self.resources)?;
        let mut parts = rest.split('/');
        let (kind, mesh, name) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let kind = ResourceType::from_name(kind)?;
        let mesh = if kind.is_mesh_scoped() {
            unescape(mesh)?
        } else if mesh == NO_MESH {
            String::new()
        } else {
            return None;
        };
        Some(ResourceKey {
            kind,
            mesh,
            name: unescape(name)?,
        })
    }
}

fn version_of(kv: &KeyValue) -> u64 {
    u64::try_from(kv.version()).unwrap_or(0)
}

fn encode(resource: &Resource) -> Vec<u8> {
    crate::record::encode(resource).to_string().into_bytes()
}

fn decode(key: ResourceKey, kv: &KeyValue) -> Result<Resource> {
    let value: Value = serde_json::from_slice(kv.value()).map_err(|e| StoreError::Corrupt {
        key: key.clone(),
        message: format!("value is not JSON: {e}"),
    })?;
    crate::record::decode(key, version_of(kv), value)
}

/// Reads every key in `[start, end)` as of one revision, in pages. Returns the revision.
async fn range_all(
    kv: &KvClient,
    start: &[u8],
    end: &[u8],
    limit: Duration,
    count_only: bool,
) -> Result<(Vec<KeyValue>, i64, i64)> {
    let mut kv = kv.clone();
    let mut out = Vec::new();
    let mut from = start.to_vec();
    let mut revision = 0;
    loop {
        let mut options = GetOptions::new()
            .with_range(end.to_vec())
            .with_limit(RANGE_PAGE)
            .with_revision(revision);
        if count_only {
            options = options.with_count_only();
        }
        let mut resp = bounded("range", limit, kv.get(from.clone(), Some(options))).await?;
        if revision == 0 {
            revision = resp.header().map_or(0, |h| h.revision());
        }
        if count_only {
            return Ok((out, revision, resp.count()));
        }
        let more = resp.more();
        let kvs = resp.take_kvs();
        if let Some(last) = kvs.last() {
            from = last.key().to_vec();
            // The next key after `last`.
            from.push(0);
        }
        let page_len = kvs.len();
        out.extend(kvs);
        if !more || page_len == 0 {
            let total = out.len() as i64;
            return Ok((out, revision, total));
        }
    }
}

/// Aborts the watch task when the store goes away.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A [`ResourceStore`] on etcd.
pub struct EtcdStore {
    client: Client,
    kv: KvClient,
    layout: Layout,
    key_prefix: String,
    request_timeout: Duration,
    max_value_bytes: usize,
    events: broadcast::Sender<ChangeEvent>,
    causes: PendingCauses,
    _watcher: AbortOnDrop,
}

impl EtcdStore {
    /// Connects, reads the current state (which fails fast when etcd is unreachable) and starts
    /// the watch that feeds [`ResourceStore::subscribe`].
    pub async fn connect(config: EtcdConfig) -> Result<EtcdStore> {
        let client = connect_client(&config).await?;
        let kv = client
            .kv_client()
            .max_decoding_message_size(MAX_DECODING_BYTES);
        let layout = Layout::new(&config.key_prefix);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let causes = PendingCauses::default();
        let mut watcher = Watcher {
            causes: causes.clone(),
            kv: kv.clone(),
            watch: client
                .watch_client()
                .max_decoding_message_size(MAX_DECODING_BYTES),
            layout: layout.clone(),
            events: events.clone(),
            index: HashMap::new(),
            revision: 0,
            request_timeout: config.request_timeout,
            min_backoff: config.reconnect_min_backoff,
            max_backoff: config
                .reconnect_max_backoff
                .max(config.reconnect_min_backoff),
        };
        // Before returning: every write after `connect` then has a later revision than the
        // watch start, so no event for it can be lost.
        watcher.resync(false).await?;
        let task = tokio::spawn(watcher.run());
        Ok(EtcdStore {
            client,
            kv,
            layout,
            key_prefix: config.key_prefix.trim_end_matches('/').to_string(),
            request_timeout: config.request_timeout,
            max_value_bytes: config.max_value_bytes,
            events,
            causes,
            _watcher: AbortOnDrop(task.abort_handle()),
        })
    }

    /// An elector for `name` sharing this store's connection and key prefix.
    pub fn leader_elector(&self, name: &str, timing: LeaseTiming) -> EtcdLeaderElector {
        EtcdLeaderElector {
            kv: self.kv.clone(),
            lease: self.client.lease_client(),
            key: format!("{}/leader/{}", self.key_prefix, escape(name)),
            timing,
            request_timeout: self.request_timeout,
        }
    }

    async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        bounded(what, self.request_timeout, call).await
    }

    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse> {
        let mut kv = self.kv.clone();
        self.call("transaction", kv.txn(txn)).await
    }

    async fn get_kv(&self, key: &str) -> Result<Option<KeyValue>> {
        let mut kv = self.kv.clone();
        let mut resp = self.call("get", kv.get(key, None)).await?;
        Ok(resp.take_kvs().into_iter().next())
    }

    fn encode_checked(&self, resource: &Resource, etcd_key: &str) -> Result<Vec<u8>> {
        let value = encode(resource);
        let size = value.len() + etcd_key.len();
        if size > self.max_value_bytes {
            return Err(StoreError::TooLarge {
                key: resource.key(),
                size,
                limit: self.max_value_bytes,
            });
        }
        Ok(value)
    }
}

/// The key a resource is stored under; a global-scoped type never has a mesh.
fn normalized_key(resource: &mut Resource) -> ResourceKey {
    if !resource.kind.is_mesh_scoped() {
        resource.meta.mesh.clear();
    }
    resource.key()
}

fn first_get(responses: &[TxnOpResponse], index: usize) -> Option<&etcd_client::GetResponse> {
    match responses.get(index) {
        Some(TxnOpResponse::Get(get)) => Some(get),
        _ => None,
    }
}

#[async_trait]
impl ResourceStore for EtcdStore {
    async fn get(&self, key: &ResourceKey) -> Result<Resource> {
        let key = ResourceKey::new(key.kind, key.mesh.clone(), key.name.clone());
        match self.get_kv(&self.layout.key(&key)).await? {
            Some(kv) => decode(key, &kv),
            None => Err(StoreError::NotFound(key)),
        }
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        let prefix = match &query.mesh {
            Some(mesh) if query.kind.is_mesh_scoped() => self.layout.mesh_prefix(query.kind, mesh),
            _ => self.layout.type_prefix(query.kind),
        };
        let end = prefix_end(prefix.as_bytes());
        // Only counting needs no values when nothing filters on them.
        let count_only = query.size == Some(0)
            && query.labels.is_empty()
            && query.name_contains.is_none()
            && (query.mesh.is_none() || query.kind.is_mesh_scoped());
        let (kvs, _, count) = range_all(
            &self.kv,
            prefix.as_bytes(),
            &end,
            self.request_timeout,
            count_only,
        )
        .await?;
        if count_only {
            // Same paging rule as `paginate` with an empty page.
            let total = usize::try_from(count).unwrap_or(0);
            let start = query.offset.min(total);
            return Ok(ListPage {
                items: Vec::new(),
                total,
                next_offset: (start < total).then_some(start),
            });
        }
        let mut items = Vec::with_capacity(kvs.len());
        for kv in &kvs {
            let key = self
                .layout
                .parse(kv.key())
                .ok_or_else(|| StoreError::Corrupt {
                    key: ResourceKey::new(
                        query.kind,
                        "",
                        String::from_utf8_lossy(kv.key()).into_owned(),
                    ),
                    message: "key does not follow the layout <Type>/<mesh>/<name>".into(),
                })?;
            let resource = decode(key, kv)?;
            if query.matches(&resource) {
                items.push(resource);
            }
        }
        // Escaped keys do not sort like (mesh, name): `a-b/` < `a/` bytewise.
        items.sort_by(|a, b| (&a.meta.mesh, &a.meta.name).cmp(&(&b.meta.mesh, &b.meta.name)));
        Ok(paginate(items, query.offset, query.size))
    }

    async fn create(&self, mut resource: Resource) -> Result<Resource> {
        let key = normalized_key(&mut resource);
        let etcd_key = self.layout.key(&key);
        let pending = self.causes.expect(&key);
        let now = Timestamp::now();
        resource.meta.version = 1;
        resource.meta.creation_time = now;
        resource.meta.modification_time = now;
        let value = self.encode_checked(&resource, &etcd_key)?;
        let mut when = vec![Compare::create_revision(
            etcd_key.clone(),
            CompareOp::Equal,
            0,
        )];
        let count = || Some(GetOptions::new().with_count_only());
        let mut otherwise = vec![TxnOp::get(etcd_key.clone(), count())];
        if key.kind.is_mesh_scoped() {
            // In the same transaction, so a concurrent Mesh delete cannot leave an orphan.
            let mesh_key =
                self.layout
                    .key(&ResourceKey::new(ResourceType::Mesh, "", key.mesh.clone()));
            when.push(Compare::create_revision(
                mesh_key.clone(),
                CompareOp::Greater,
                0,
            ));
            otherwise.push(TxnOp::get(mesh_key, count()));
        }
        let txn = Txn::new()
            .when(when)
            .and_then(vec![TxnOp::put(etcd_key, value, None)])
            .or_else(otherwise);
        let resp = self.txn(txn).await?;
        if resp.succeeded() {
            pending.committed();
            return Ok(resource);
        }
        let responses = resp.op_responses();
        let mesh_missing =
            key.kind.is_mesh_scoped() && first_get(&responses, 1).is_some_and(|g| g.count() == 0);
        if mesh_missing {
            return Err(StoreError::MeshNotFound(key.mesh));
        }
        Err(StoreError::AlreadyExists(key))
    }

    async fn update(&self, mut resource: Resource) -> Result<Resource> {
        let key = normalized_key(&mut resource);
        let etcd_key = self.layout.key(&key);
        let pending = self.causes.expect(&key);
        let expected = resource.meta.version;
        // A lost race re-reads; after a few the caller gets the conflict it would get anyway.
        for _ in 0..4 {
            let current = self
                .get_kv(&etcd_key)
                .await?
                .ok_or_else(|| StoreError::NotFound(key.clone()))?;
            let actual = version_of(&current);
            if actual != expected {
                return Err(StoreError::Conflict {
                    key,
                    expected,
                    actual,
                });
            }
            let stored = decode(key.clone(), &current)?;
            resource.meta.version = actual + 1;
            resource.meta.creation_time = stored.meta.creation_time;
            resource.meta.modification_time = Timestamp::now().max(stored.meta.modification_time);
            let value = self.encode_checked(&resource, &etcd_key)?;
            // mod_revision, not version: a delete and re-create in between restarts the
            // version, and the creation time read above would then be the old one's.
            let txn = Txn::new()
                .when(vec![Compare::mod_revision(
                    etcd_key.clone(),
                    CompareOp::Equal,
                    current.mod_revision(),
                )])
                .and_then(vec![TxnOp::put(etcd_key.clone(), value, None)])
                .or_else(vec![TxnOp::get(etcd_key.clone(), None)]);
            let resp = self.txn(txn).await?;
            if resp.succeeded() {
                pending.committed();
                return Ok(resource);
            }
            let responses = resp.op_responses();
            match first_get(&responses, 0).and_then(|g| g.kvs().first()) {
                None => return Err(StoreError::NotFound(key)),
                Some(now) if version_of(now) != expected => {
                    return Err(StoreError::Conflict {
                        key,
                        expected,
                        actual: version_of(now),
                    });
                }
                // Re-created at the same version in between: read again.
                Some(_) => continue,
            }
        }
        Err(StoreError::Conflict {
            key,
            expected,
            actual: 0,
        })
    }

    async fn delete(&self, key: &ResourceKey) -> Result<()> {
        let key = ResourceKey::new(key.kind, key.mesh.clone(), key.name.clone());
        let etcd_key = self.layout.key(&key);
        let pending = self.causes.expect(&key);
        let mut ops = vec![TxnOp::delete(etcd_key.clone(), None)];
        if key.kind == ResourceType::Mesh {
            for kind in ResourceType::all().filter(|k| k.is_mesh_scoped()) {
                ops.push(TxnOp::delete(
                    self.layout.mesh_prefix(kind, &key.name),
                    Some(DeleteOptions::new().with_prefix()),
                ));
            }
        } else if let Some(insight) = key.kind.owned_insight() {
            let insight = ResourceKey::new(insight, key.mesh.clone(), key.name.clone());
            ops.push(TxnOp::delete(self.layout.key(&insight), None));
        }
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                etcd_key,
                CompareOp::Greater,
                0,
            )])
            .and_then(ops);
        if self.txn(txn).await?.succeeded() {
            pending.committed();
            Ok(())
        } else {
            Err(StoreError::NotFound(key))
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.events.subscribe()
    }

    async fn ping(&self) -> Result<()> {
        // A linearizable read: succeeds only when the cluster has a leader and quorum.
        let mut kv = self.kv.clone();
        let key = format!("{}/ping", self.key_prefix);
        self.call(
            "ping",
            kv.get(key, Some(GetOptions::new().with_count_only())),
        )
        .await
        .map(|_| ())
    }

    fn backend(&self) -> &'static str {
        "etcd"
    }
}

/// What the watch task knows about one key.
#[derive(Debug, Clone)]
struct Seen {
    key: ResourceKey,
    version: u64,
    create_revision: i64,
    mod_revision: i64,
}

/// The single watch of one store instance, and the index that lets it catch up after a gap.
struct Watcher {
    causes: PendingCauses,
    kv: KvClient,
    watch: WatchClient,
    layout: Layout,
    events: broadcast::Sender<ChangeEvent>,
    index: HashMap<Vec<u8>, Seen>,
    /// The revision the index reflects; the watch resumes right after it.
    revision: i64,
    request_timeout: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
}

impl Watcher {
    fn emit(&self, op: Operation, key: ResourceKey, version: u64) {
        // No receivers is fine: nobody is listening yet.
        let cause = self.causes.take(&key);
        let _ = self.events.send(ChangeEvent {
            op,
            key,
            version,
            cause,
        });
    }

    async fn run(mut self) {
        loop {
            let reason = self.follow().await;
            tracing::warn!(%reason, "etcd watch interrupted; re-listing to catch up");
            let mut backoff = self.min_backoff;
            loop {
                tokio::time::sleep(backoff).await;
                match self.resync(true).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "etcd re-list failed");
                        backoff = (backoff * 2).min(self.max_backoff);
                    }
                }
            }
        }
    }

    /// Applies watch events until the watch breaks; returns why.
    async fn follow(&mut self) -> String {
        let start = self.layout.resources.clone();
        let options = WatchOptions::new()
            .with_range(prefix_end(start.as_bytes()))
            .with_start_revision(self.revision + 1)
            .with_prev_key()
            .with_fragment();
        let mut watch = self.watch.clone();
        let mut stream = match bounded(
            "watch",
            self.request_timeout,
            watch.watch(start, Some(options)),
        )
        .await
        {
            Ok(stream) => stream,
            Err(e) => return e.to_string(),
        };
        loop {
            let resp = match stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => return "watch stream closed".into(),
                Err(e) => return format!("watch stream failed: {e}"),
            };
            if resp.compact_revision() > 0 {
                return format!(
                    "watch start revision compacted (oldest kept is {})",
                    resp.compact_revision()
                );
            }
            if resp.canceled() {
                return format!("watch canceled: {}", resp.cancel_reason());
            }
            for event in resp.events() {
                self.apply(event);
            }
        }
    }

    fn apply(&mut self, event: &etcd_client::Event) {
        let Some(kv) = event.kv() else { return };
        let Some(key) = self.layout.parse(kv.key()) else {
            tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "ignoring a foreign key under the resources prefix");
            return;
        };
        match event.event_type() {
            EventType::Put => {
                let version = version_of(kv);
                let op = if version == 1 {
                    Operation::Create
                } else {
                    Operation::Update
                };
                self.index.insert(
                    kv.key().to_vec(),
                    Seen {
                        key: key.clone(),
                        version,
                        create_revision: kv.create_revision(),
                        mod_revision: kv.mod_revision(),
                    },
                );
                self.revision = self.revision.max(kv.mod_revision());
                self.emit(op, key, version);
            }
            EventType::Delete => {
                let seen = self.index.remove(kv.key());
                // A delete's kv carries no version; the previous one (or our index) does.
                let version = event
                    .prev_kv()
                    .map(version_of)
                    .or(seen.map(|s| s.version))
                    .unwrap_or(0);
                self.revision = self.revision.max(kv.mod_revision());
                self.emit(Operation::Delete, key, version);
            }
        }
    }

    /// Re-reads all resources and, with `emit`, reports the difference to the index as events.
    async fn resync(&mut self, emit: bool) -> Result<()> {
        let start = self.layout.resources.as_bytes().to_vec();
        let end = prefix_end(&start);
        let (kvs, revision, _) =
            range_all(&self.kv, &start, &end, self.request_timeout, false).await?;
        let mut old = std::mem::take(&mut self.index);
        let mut changes = Vec::new();
        for kv in kvs {
            let Some(key) = self.layout.parse(kv.key()) else {
                continue;
            };
            let now = Seen {
                key,
                version: version_of(&kv),
                create_revision: kv.create_revision(),
                mod_revision: kv.mod_revision(),
            };
            match old.remove(kv.key()) {
                None => changes.push((Operation::Create, now.key.clone(), now.version)),
                Some(was) if was.create_revision != now.create_revision => {
                    changes.push((Operation::Delete, was.key, was.version));
                    changes.push((Operation::Create, now.key.clone(), now.version));
                }
                Some(was) if was.mod_revision != now.mod_revision => {
                    changes.push((Operation::Update, now.key.clone(), now.version));
                }
                Some(_) => {}
            }
            self.index.insert(kv.key().to_vec(), now);
        }
        for (_, was) in old {
            changes.push((Operation::Delete, was.key, was.version));
        }
        self.revision = revision;
        if emit {
            if !changes.is_empty() {
                tracing::info!(changes = changes.len(), "etcd watch caught up after a gap");
            }
            for (op, key, version) in changes {
                self.emit(op, key, version);
            }
        }
        Ok(())
    }
}

/// Leader election on an etcd lease: the leader holds `<prefix>/leader/<name>`, attached to a
/// lease it keeps alive. The key disappears with the lease, so a crashed leader is replaced
/// after at most `ttl` plus one follower poll.
pub struct EtcdLeaderElector {
    kv: KvClient,
    lease: LeaseClient,
    key: String,
    timing: LeaseTiming,
    request_timeout: Duration,
}

fn publish(leader: &watch::Sender<bool>, value: bool) {
    leader.send_if_modified(|l| {
        let changed = *l != value;
        *l = value;
        changed
    });
}

/// An etcd lease TTL in whole seconds, rounded up: a longer lease only makes others wait
/// longer, while a shorter one than we plan with would break the safety rule.
fn ttl_seconds(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

impl EtcdLeaderElector {
    /// Connects on its own; see also [`EtcdStore::leader_elector`].
    pub async fn connect(config: &EtcdConfig, name: &str, timing: LeaseTiming) -> Result<Self> {
        let client = connect_client(config).await?;
        Ok(EtcdLeaderElector {
            kv: client.kv_client(),
            lease: client.lease_client(),
            key: format!(
                "{}/leader/{}",
                config.key_prefix.trim_end_matches('/'),
                escape(name)
            ),
            timing,
            request_timeout: config.request_timeout,
        })
    }

    fn limit(&self) -> Duration {
        self.request_timeout.min(self.timing.ttl)
    }

    /// One attempt to become leader. On success returns the lease and the local deadline.
    async fn try_acquire(&self, instance_id: &str) -> Result<Option<(i64, Instant)>> {
        let mut kv = self.kv.clone();
        let held = bounded(
            "leader get",
            self.limit(),
            kv.get(self.key.clone(), Some(GetOptions::new().with_count_only())),
        )
        .await?;
        if held.count() > 0 {
            return Ok(None);
        }
        // Measured before the grant: the lease's clock may start as soon as etcd sees it.
        let sent = Instant::now();
        let mut lease = self.lease.clone();
        let granted = bounded(
            "lease grant",
            self.limit(),
            lease.grant(ttl_seconds(self.timing.ttl), None),
        )
        .await?;
        let id = granted.id();
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                self.key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(
                self.key.clone(),
                instance_id,
                Some(PutOptions::new().with_lease(id)),
            )]);
        let won = bounded("leader transaction", self.limit(), kv.txn(txn)).await;
        match won {
            Ok(resp) if resp.succeeded() => {
                let deadline = self.timing.self_deadline(sent);
                if Instant::now() >= deadline {
                    // Too slow to be sure the lease still holds: give it back.
                    self.revoke(id).await;
                    return Ok(None);
                }
                Ok(Some((id, deadline)))
            }
            Ok(_) => {
                self.revoke(id).await;
                Ok(None)
            }
            Err(e) => {
                // The put may have happened; revoking removes the key either way.
                self.revoke(id).await;
                Err(e)
            }
        }
    }

    async fn revoke(&self, id: i64) {
        let mut lease = self.lease.clone();
        if let Err(e) = bounded("lease revoke", self.limit(), lease.revoke(id)).await {
            // The lease then runs out on its own after its TTL.
            tracing::debug!(error = %e, lease = id, "could not revoke the leader lease");
        }
    }

    /// One renewal: keep the lease alive and check the key is still ours (someone may have
    /// deleted it by hand, letting another replica in while our lease lives on).
    async fn renew(&self, id: i64) -> Result<()> {
        let mut lease = self.lease.clone();
        // Opening a keep-alive stream sends one keep-alive and waits for its answer; an
        // expired lease is an error there.
        bounded("lease keep-alive", self.limit(), lease.keep_alive(id)).await?;
        let mut kv = self.kv.clone();
        let mut resp = bounded("leader get", self.limit(), kv.get(self.key.clone(), None)).await?;
        match resp.take_kvs().first() {
            Some(kv) if kv.lease() == id => Ok(()),
            _ => Err(StoreError::Unavailable {
                message: "the leader key is no longer held by our lease".into(),
                source: None,
            }),
        }
    }

    /// Leads until the lease cannot be renewed in time or shutdown; always ends with `false`
    /// published and the lease given back. Returns whether shutdown was requested.
    async fn lead(
        &self,
        id: i64,
        mut deadline: Instant,
        leader: &watch::Sender<bool>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        publish(leader, true);
        tracing::info!(key = %self.key, "became leader");
        let mut next_renewal = Instant::now() + self.timing.renew_every;
        let stop = loop {
            tokio::select! {
                () = tokio::time::sleep_until(next_renewal.min(deadline)) => {}
                _ = shutdown.wait_for(|s| *s) => break true,
            }
            if Instant::now() >= deadline {
                tracing::warn!(key = %self.key, "leader lease not renewed in time");
                break false;
            }
            let sent = Instant::now();
            next_renewal = sent + self.timing.renew_every;
            let renewed = tokio::select! {
                r = tokio::time::timeout_at(deadline, self.renew(id)) => r,
                _ = shutdown.wait_for(|s| *s) => break true,
            };
            match renewed {
                Ok(Ok(())) => deadline = self.timing.self_deadline(sent),
                Ok(Err(e)) => {
                    tracing::warn!(key = %self.key, error = %e, "leader lease renewal failed");
                    break false;
                }
                Err(_) => {
                    tracing::warn!(key = %self.key, "leader lease renewal timed out");
                    break false;
                }
            }
        };
        // False first: the safety rule is about what we publish, revoking is a courtesy.
        publish(leader, false);
        tracing::info!(key = %self.key, "no longer leader");
        self.revoke(id).await;
        stop
    }
}

#[async_trait]
impl LeaderElector for EtcdLeaderElector {
    async fn campaign(
        &self,
        instance_id: &str,
        leader: watch::Sender<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        publish(&leader, false);
        loop {
            // A dropped shutdown sender means nobody can stop us: treat it as a stop.
            if *shutdown.borrow() || shutdown.has_changed().is_err() {
                break;
            }
            match self.try_acquire(instance_id).await {
                Ok(Some((id, deadline))) => {
                    if self.lead(id, deadline, &leader, &mut shutdown).await {
                        break;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(key = %self.key, error = %e, "leader election attempt failed")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.timing.renew_every) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        publish(&leader, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_stay_unambiguous() {
        let layout = Layout::new("/kuma/");
        let cases = [
            ResourceKey::new(ResourceType::MeshTimeout, "default", "t1"),
            ResourceKey::new(ResourceType::MeshTimeout, "a/b", "c"),
            ResourceKey::new(ResourceType::MeshTimeout, "a", "b/c"),
            ResourceKey::new(ResourceType::MeshTimeout, "_", "100%"),
            ResourceKey::new(ResourceType::Mesh, "", "default"),
            ResourceKey::new(ResourceType::Zone, "", "zone-1"),
        ];
        let mut seen = std::collections::HashSet::new();
        for key in cases {
            let raw = layout.key(&key);
            assert!(raw.starts_with("/kuma/resources/"), "{raw}");
            assert!(seen.insert(raw.clone()), "{raw} is not unique");
            assert_eq!(layout.parse(raw.as_bytes()), Some(key));
        }
        assert_eq!(
            layout.key(&ResourceKey::new(ResourceType::Zone, "", "z")),
            "/kuma/resources/Zone/_/z"
        );
        assert_eq!(layout.parse(b"/kuma/resources/Zone/x/z"), None);
        assert_eq!(layout.parse(b"/kuma/resources/Nope/_/z"), None);
        assert_eq!(layout.parse(b"/kuma/resources/Zone/_/z/extra"), None);
    }

    #[test]
    fn mesh_prefix_does_not_cover_longer_mesh_names() {
        let layout = Layout::new("/kuma");
        let prefix = layout.mesh_prefix(ResourceType::MeshTimeout, "m");
        let other = layout.key(&ResourceKey::new(ResourceType::MeshTimeout, "m-2", "t"));
        assert!(!other.starts_with(&prefix));
    }

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xff]), vec![0]);
    }

    #[test]
    fn records_keep_nanoseconds() {
        let mut r = Resource::new(
            ResourceType::MeshService,
            "m",
            "svc",
            serde_json::json!({"ports": [1, 2.5, null]}),
        );
        r.status = Some(serde_json::json!({"vips": []}));
        r.meta.labels.insert("a".into(), "".into());
        r.meta.creation_time = Timestamp(1_700_000_000_123_456_789);
        r.meta.modification_time = Timestamp(1_700_000_001_000_000_000);
        let kv_json = encode(&r);
        let value: Value = serde_json::from_slice(&kv_json).unwrap();
        assert_eq!(value["creationTime"], "1700000000123456789");
        assert_eq!(value["status"], serde_json::json!({"vips": []}));
    }

    #[test]
    fn lease_ttl_rounds_up() {
        assert_eq!(ttl_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(ttl_seconds(Duration::from_secs(5)), 5);
        assert_eq!(ttl_seconds(Duration::ZERO), 1);
    }
}
