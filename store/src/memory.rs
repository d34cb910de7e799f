//! The embedded default: everything in one process's memory, gone on restart.

use std::collections::BTreeMap;
use std::sync::RwLock;

use async_trait::async_trait;
use model::{Resource, ResourceKey, ResourceType, Timestamp};
use tokio::sync::broadcast;

use crate::{
    ChangeEvent, ListPage, ListQuery, Operation, ResourceStore, Result, StoreError, page_range,
};

/// Room for bursts; a consumer further behind than this re-lists.
const EVENT_BUFFER: usize = 16 * 1024;

pub struct MemoryStore {
    // A std lock is right here: no critical section awaits, and each is a few map operations.
    resources: RwLock<Resources>,
    events: broadcast::Sender<ChangeEvent>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        MemoryStore {
            resources: RwLock::new(Resources::default()),
            events,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Resources> {
        // A panic while holding the lock cannot leave a half-applied write (each write is a
        // single insert/remove), so a poisoned lock is still consistent.
        self.resources.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Resources> {
        self.resources.write().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, op: Operation, key: ResourceKey, version: u64) {
        // No receivers is fine: nobody is listening yet.
        let _ = self.events.send(ChangeEvent {
            op,
            key,
            version,
            cause: crate::trace::current(),
        });
    }
}

fn mesh_key(mesh: &str) -> ResourceKey {
    ResourceKey::new(ResourceType::Mesh, "", mesh)
}

/// A change a write made, for its event.
pub(crate) type Change = (Operation, ResourceKey, u64);

/// The resources of one store in key order, and the writes on them: the memory store's whole
/// state, and the raft state machine's, which applies the same writes from its log.
#[derive(Default)]
pub(crate) struct Resources(pub(crate) BTreeMap<ResourceKey, Resource>);

impl Resources {
    pub(crate) fn get(&self, key: &ResourceKey) -> Result<Resource> {
        self.0
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key.clone()))
    }

    /// What `query` matches, paging aside. Keys sort by (kind, mesh, name), so a range scan
    /// yields the stable order directly.
    pub(crate) fn matching<'a>(
        &'a self,
        query: &'a ListQuery,
    ) -> impl Iterator<Item = &'a Resource> + 'a {
        self.0
            .range(
                ResourceKey {
                    kind: query.kind,
                    mesh: String::new(),
                    name: String::new(),
                }..,
            )
            .take_while(|(k, _)| k.kind == query.kind)
            .map(|(_, r)| r)
            .filter(|r| query.matches(r))
    }

    /// Shows `visit` up to `limit` of what `query` matches after `after`, in key order; the
    /// last key shown when more may follow.
    pub(crate) fn for_each_after(
        &self,
        query: &ListQuery,
        after: Option<&ResourceKey>,
        limit: usize,
        visit: &mut (dyn for<'r> FnMut(&'r Resource) + Send),
    ) -> Option<ResourceKey> {
        use std::ops::Bound;
        let start = match after {
            Some(key) => Bound::Excluded(key.clone()),
            None => Bound::Included(ResourceKey {
                kind: query.kind,
                mesh: String::new(),
                name: String::new(),
            }),
        };
        let mut last: Option<&ResourceKey> = None;
        for (shown, (key, r)) in self
            .0
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.kind == query.kind)
            .filter(|(_, r)| query.matches(r))
            .enumerate()
        {
            // Another match follows the last shown: resuming after that one shows this one.
            if shown == limit.max(1) {
                return last.cloned();
            }
            visit(r);
            last = Some(key);
        }
        None
    }

    pub(crate) fn list(&self, query: &ListQuery) -> ListPage {
        // Only the requested page is cloned: counting a large type (`?size=1`) stays cheap.
        let matching: Vec<&Resource> = self.matching(query).collect();
        let total = matching.len();
        let (start, end) = page_range(total, query.offset, query.size);
        ListPage {
            items: matching[start..end].iter().map(|r| (*r).clone()).collect(),
            total,
            next_offset: (end < total).then_some(end),
        }
    }

    /// `now` comes from the caller so that replicas applying the same write agree on it.
    pub(crate) fn create(
        &mut self,
        mut resource: Resource,
        now: Timestamp,
    ) -> Result<(Resource, Change)> {
        let key = resource.key();
        if key.kind.is_mesh_scoped() && !self.0.contains_key(&mesh_key(&key.mesh)) {
            return Err(StoreError::MeshNotFound(key.mesh));
        }
        if self.0.contains_key(&key) {
            return Err(StoreError::AlreadyExists(key));
        }
        resource.meta.version = 1;
        resource.meta.creation_time = now;
        resource.meta.modification_time = now;
        self.0.insert(key.clone(), resource.clone());
        Ok((resource, (Operation::Create, key, 1)))
    }

    pub(crate) fn update(
        &mut self,
        mut resource: Resource,
        now: Timestamp,
    ) -> Result<(Resource, Change)> {
        let key = resource.key();
        let current = self
            .0
            .get(&key)
            .ok_or_else(|| StoreError::NotFound(key.clone()))?;
        if current.meta.version != resource.meta.version {
            return Err(StoreError::Conflict {
                key,
                expected: resource.meta.version,
                actual: current.meta.version,
            });
        }
        resource.meta.version = current.meta.version + 1;
        resource.meta.creation_time = current.meta.creation_time;
        resource.meta.modification_time = now.max(current.meta.modification_time);
        let version = resource.meta.version;
        self.0.insert(key.clone(), resource.clone());
        Ok((resource, (Operation::Update, key, version)))
    }

    /// Removes `key` and what it owns (a Mesh's resources, an owner's insight).
    pub(crate) fn delete(&mut self, key: &ResourceKey) -> Result<Vec<Change>> {
        let removed = self
            .0
            .remove(key)
            .ok_or_else(|| StoreError::NotFound(key.clone()))?;
        let mut changes = vec![(Operation::Delete, key.clone(), removed.meta.version)];
        if key.kind == ResourceType::Mesh {
            let owned: Vec<ResourceKey> = self
                .0
                .keys()
                .filter(|k| k.kind.is_mesh_scoped() && k.mesh == key.name)
                .cloned()
                .collect();
            for k in owned {
                if let Some(r) = self.0.remove(&k) {
                    changes.push((Operation::Delete, k, r.meta.version));
                }
            }
        } else if let Some(insight) = key.kind.owned_insight() {
            let k = ResourceKey::new(insight, key.mesh.clone(), key.name.clone());
            if let Some(r) = self.0.remove(&k) {
                changes.push((Operation::Delete, k, r.meta.version));
            }
        }
        Ok(changes)
    }
}

#[async_trait]
impl ResourceStore for MemoryStore {
    async fn get(&self, key: &ResourceKey) -> Result<Resource> {
        self.read().get(key)
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        Ok(self.read().list(query))
    }

    async fn for_each(
        &self,
        query: &ListQuery,
        visit: &mut (dyn for<'r> FnMut(&'r Resource) + Send),
    ) -> Result<()> {
        for r in self.read().matching(query) {
            visit(r);
        }
        Ok(())
    }

    async fn for_each_after(
        &self,
        query: &ListQuery,
        after: Option<&ResourceKey>,
        limit: usize,
        visit: &mut (dyn for<'r> FnMut(&'r Resource) + Send),
    ) -> Result<Option<ResourceKey>> {
        Ok(self.read().for_each_after(query, after, limit, visit))
    }

    async fn create(&self, resource: Resource) -> Result<Resource> {
        let (resource, (op, key, version)) = self.write().create(resource, Timestamp::now())?;
        self.emit(op, key, version);
        Ok(resource)
    }

    async fn update(&self, resource: Resource) -> Result<Resource> {
        let (resource, (op, key, version)) = self.write().update(resource, Timestamp::now())?;
        self.emit(op, key, version);
        Ok(resource)
    }

    async fn delete(&self, key: &ResourceKey) -> Result<()> {
        let changes = self.write().delete(key)?;
        for (op, k, version) in changes {
            self.emit(op, k, version);
        }
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.events.subscribe()
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    crate::conformance_tests!(std::sync::Arc::new(crate::MemoryStore::new()));
}
