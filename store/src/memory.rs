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
    resources: RwLock<BTreeMap<ResourceKey, Resource>>,
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
            resources: RwLock::new(BTreeMap::new()),
            events,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<ResourceKey, Resource>> {
        // A panic while holding the lock cannot leave a half-applied write (each write is a
        // single insert/remove), so a poisoned lock is still consistent.
        self.resources.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<ResourceKey, Resource>> {
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

#[async_trait]
impl ResourceStore for MemoryStore {
    async fn get(&self, key: &ResourceKey) -> Result<Resource> {
        self.read()
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key.clone()))
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        let map = self.read();
        // Keys sort by (kind, mesh, name), so a range scan yields the stable order directly.
        // Only the requested page is cloned: counting a large type (`?size=1`) stays cheap.
        let matching: Vec<&Resource> = map
            .range(
                ResourceKey {
                    kind: query.kind,
                    mesh: String::new(),
                    name: String::new(),
                }..,
            )
            .take_while(|(k, _)| k.kind == query.kind)
            .filter(|(_, r)| query.matches(r))
            .map(|(_, r)| r)
            .collect();
        let total = matching.len();
        let (start, end) = page_range(total, query.offset, query.size);
        Ok(ListPage {
            items: matching[start..end].iter().map(|r| (*r).clone()).collect(),
            total,
            next_offset: (end < total).then_some(end),
        })
    }

    async fn create(&self, mut resource: Resource) -> Result<Resource> {
        let key = resource.key();
        let mut map = self.write();
        if key.kind.is_mesh_scoped() && !map.contains_key(&mesh_key(&key.mesh)) {
            return Err(StoreError::MeshNotFound(key.mesh));
        }
        if map.contains_key(&key) {
            return Err(StoreError::AlreadyExists(key));
        }
        let now = Timestamp::now();
        resource.meta.version = 1;
        resource.meta.creation_time = now;
        resource.meta.modification_time = now;
        map.insert(key.clone(), resource.clone());
        drop(map);
        self.emit(Operation::Create, key, 1);
        Ok(resource)
    }

    async fn update(&self, mut resource: Resource) -> Result<Resource> {
        let key = resource.key();
        let mut map = self.write();
        let current = map
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
        resource.meta.modification_time = Timestamp::now().max(current.meta.modification_time);
        let version = resource.meta.version;
        map.insert(key.clone(), resource.clone());
        drop(map);
        self.emit(Operation::Update, key, version);
        Ok(resource)
    }

    async fn delete(&self, key: &ResourceKey) -> Result<()> {
        let mut map = self.write();
        let removed = map
            .remove(key)
            .ok_or_else(|| StoreError::NotFound(key.clone()))?;
        let mut events = vec![(key.clone(), removed.meta.version)];
        if key.kind == ResourceType::Mesh {
            let owned: Vec<ResourceKey> = map
                .keys()
                .filter(|k| k.kind.is_mesh_scoped() && k.mesh == key.name)
                .cloned()
                .collect();
            for k in owned {
                if let Some(r) = map.remove(&k) {
                    events.push((k, r.meta.version));
                }
            }
        } else if let Some(insight) = key.kind.owned_insight() {
            let k = ResourceKey::new(insight, key.mesh.clone(), key.name.clone());
            if let Some(r) = map.remove(&k) {
                events.push((k, r.meta.version));
            }
        }
        drop(map);
        for (k, version) in events {
            self.emit(Operation::Delete, k, version);
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
