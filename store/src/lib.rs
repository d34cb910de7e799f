//! Resource storage: the [`ResourceStore`] trait every backend implements, change events, and
//! the backends themselves. Every state change goes through a store and produces a
//! [`ChangeEvent`]; consumers react to events instead of polling.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use model::{Resource, ResourceKey, ResourceType};
use tokio::sync::broadcast;

pub mod leader;
pub mod memory;
pub mod metered;
#[cfg(any(feature = "etcd", feature = "raft"))]
mod record;
pub mod tenant;
pub mod trace;

#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "raft")]
pub mod raft;

#[cfg(feature = "testing")]
pub mod conformance;
#[cfg(feature = "testing")]
pub mod testing;

pub use memory::MemoryStore;
pub use metered::MeteredStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(ResourceKey),
    #[error("{0} already exists")]
    AlreadyExists(ResourceKey),
    #[error("{key} was changed concurrently (expected version {expected}, found {actual})")]
    Conflict {
        key: ResourceKey,
        expected: u64,
        actual: u64,
    },
    #[error("mesh {0:?} not found")]
    MeshNotFound(String),
    #[error("store unavailable: {message}")]
    Unavailable {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("{key} is {size} bytes encoded, over the store's limit of {limit} bytes")]
    TooLarge {
        key: ResourceKey,
        size: usize,
        limit: usize,
    },
    #[error("stored data for {key} is corrupt: {message}")]
    Corrupt { key: ResourceKey, message: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    pub op: Operation,
    pub key: ResourceKey,
    /// The version after the change (for deletes, the last version the resource had).
    pub version: u64,
    /// The W3C `traceparent` of the span that made the change, when it was made by this
    /// process with tracing on: what reacts to the change (a KDS send) continues that trace.
    pub cause: Option<std::sync::Arc<str>>,
}

/// Waits for a change that `relevant` picks, or for a lag (after which anything may have
/// changed). `false` once the store has gone away.
pub async fn next_change(
    events: &mut broadcast::Receiver<ChangeEvent>,
    relevant: impl Fn(&ChangeEvent) -> bool,
) -> bool {
    loop {
        match events.recv().await {
            Ok(ev) if relevant(&ev) => return true,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return true,
            Err(broadcast::error::RecvError::Closed) => return false,
        }
    }
}

/// What to list. Items come back ordered by (mesh, name), so offsets are stable.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub kind: ResourceType,
    /// `None` lists across all meshes.
    pub mesh: Option<String>,
    /// Every label here must match exactly.
    pub labels: BTreeMap<String, String>,
    pub name_contains: Option<String>,
    pub offset: usize,
    /// `None` returns everything from `offset` on.
    pub size: Option<usize>,
}

impl ListQuery {
    pub fn all(kind: ResourceType) -> Self {
        ListQuery {
            kind,
            mesh: None,
            labels: BTreeMap::new(),
            name_contains: None,
            offset: 0,
            size: None,
        }
    }

    pub fn in_mesh(kind: ResourceType, mesh: &str) -> Self {
        ListQuery {
            mesh: Some(mesh.to_string()),
            ..Self::all(kind)
        }
    }

    /// Whether a resource satisfies the filters (not the paging).
    pub fn matches(&self, r: &Resource) -> bool {
        r.kind == self.kind
            && self.mesh.as_ref().is_none_or(|m| *m == r.meta.mesh)
            && self
                .labels
                .iter()
                .all(|(k, v)| r.meta.labels.get(k) == Some(v))
            && self
                .name_contains
                .as_ref()
                .is_none_or(|n| r.meta.name.contains(n.as_str()))
    }
}

#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub items: Vec<Resource>,
    /// Matching items in all pages.
    pub total: usize,
    /// Where the next page starts, if there is one.
    pub next_offset: Option<usize>,
}

/// Where a page starts and ends in `total` ordered items.
pub fn page_range(total: usize, offset: usize, size: Option<usize>) -> (usize, usize) {
    let start = offset.min(total);
    let end = size.map_or(total, |s| start.saturating_add(s).min(total));
    (start, end)
}

/// Cuts one page out of a fully filtered, ordered list.
pub fn paginate(mut all: Vec<Resource>, offset: usize, size: Option<usize>) -> ListPage {
    let total = all.len();
    let (start, end) = page_range(total, offset, size);
    let items: Vec<Resource> = all.drain(start..end).collect();
    ListPage {
        items,
        total,
        next_offset: (end < total).then_some(end),
    }
}

/// Whether `r`'s key sorts after `key` (without building `r`'s key).
fn sorts_after(r: &Resource, key: &ResourceKey) -> bool {
    (r.kind, r.meta.mesh.as_str(), r.meta.name.as_str())
        > (key.kind, key.mesh.as_str(), key.name.as_str())
}

#[async_trait]
pub trait ResourceStore: Send + Sync + 'static {
    async fn get(&self, key: &ResourceKey) -> Result<Resource>;

    async fn list(&self, query: &ListQuery) -> Result<ListPage>;

    /// Shows `visit` every resource `query` matches (paging aside), in list order, without
    /// copying them where the backend holds them in memory: a caller that needs a few fields
    /// of many resources (the keys to prune after a full state, a full state's wire forms)
    /// does not clone a hundred thousand specs to read them. `visit` runs while the backend
    /// may hold a lock: it must not call the store.
    async fn for_each(
        &self,
        query: &ListQuery,
        visit: &mut (dyn for<'r> FnMut(&'r Resource) + Send),
    ) -> Result<()> {
        let all = ListQuery {
            offset: 0,
            size: None,
            ..query.clone()
        };
        for r in self.list(&all).await?.items {
            visit(&r);
        }
        Ok(())
    }

    /// [`ResourceStore::for_each`], resumable by key: shows the matches whose keys sort after
    /// `after` (from the first when `None`), in key order, and stops after `limit` when the
    /// backend can resume cheaply, returning the last key shown; `None` when nothing follows.
    /// A caller streams a large type in parts, each read under the backend's lock only while
    /// it is shown. Backends that cannot resume cheaply show every remaining match at once and
    /// return `None`, so the caller gets a single part from them. Each call is consistent on
    /// its own; what changes between calls shows in the store's events.
    async fn for_each_after(
        &self,
        query: &ListQuery,
        after: Option<&ResourceKey>,
        limit: usize,
        visit: &mut (dyn for<'r> FnMut(&'r Resource) + Send),
    ) -> Result<Option<ResourceKey>> {
        let _ = limit;
        self.for_each(query, &mut |r| {
            if after.is_none_or(|a| sorts_after(r, a)) {
                visit(r);
            }
        })
        .await?;
        Ok(None)
    }

    /// Stores a new resource. The store sets version 1 and both timestamps; a mesh-scoped
    /// resource needs its Mesh to exist.
    async fn create(&self, resource: Resource) -> Result<Resource>;

    /// Replaces a resource if `resource.meta.version` is still the stored version
    /// (optimistic concurrency); otherwise fails with [`StoreError::Conflict`].
    async fn update(&self, resource: Resource) -> Result<Resource>;

    /// Deletes a resource and what it owns: a Mesh takes every resource in it, a Dataplane,
    /// Zone, ZoneIngress or ZoneEgress its insight.
    async fn delete(&self, key: &ResourceKey) -> Result<()>;

    /// Events for every change after the call (a backend that learns of changes
    /// asynchronously may also deliver a few made just before). A receiver that falls behind
    /// gets `RecvError::Lagged` and must re-list what it cares about.
    fn subscribe(&self) -> broadcast::Receiver<ChangeEvent>;

    /// Cheap liveness check of the backend, for `/ready`.
    async fn ping(&self) -> Result<()>;

    /// Short name of the backend for logs and metrics.
    fn backend(&self) -> &'static str;

    /// The replication state of a store that replicates itself among the control plane's
    /// replicas (raft); `None` for the others.
    async fn cluster_status(&self) -> Result<Option<ClusterStatus>> {
        Ok(None)
    }
}

/// A self-replicating store's members as its leader sees them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub cluster_id: String,
    pub leader: Option<u64>,
    pub term: u64,
    /// The leader's applied index: entries up to it are committed and visible.
    pub commit_index: Option<u64>,
    pub last_log_index: Option<u64>,
    pub members: Vec<ClusterMember>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterMember {
    pub node_id: u64,
    pub address: String,
    /// `leader`, `follower` (a voter) or `learner` (catching up, not voting yet).
    pub role: String,
    /// The last log index the leader knows this member holds.
    pub matched_index: Option<u64>,
    /// Entries this member is behind the leader's log.
    pub lag: Option<u64>,
}

pub type SharedStore = Arc<dyn ResourceStore>;

/// Creates or replaces a resource, retrying on a concurrent change. `apply` may edit the
/// resource it is given (the stored one, or `fresh` when there is none) before it is written.
pub async fn upsert(
    store: &dyn ResourceStore,
    fresh: Resource,
    apply: impl Fn(&mut Resource),
) -> Result<(Resource, bool)> {
    let key = fresh.key();
    for _ in 0..8 {
        match store.get(&key).await {
            Ok(mut current) => {
                apply(&mut current);
                match store.update(current).await {
                    Ok(r) => return Ok((r, false)),
                    Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(StoreError::NotFound(_)) => {
                let mut r = fresh.clone();
                apply(&mut r);
                match store.create(r).await {
                    Ok(r) => return Ok((r, true)),
                    Err(StoreError::AlreadyExists(_)) => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict {
        key,
        expected: 0,
        actual: 0,
    })
}
