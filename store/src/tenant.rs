//! Tenants on one store: a hosted manager keeps many tenants' global control planes in one
//! backend. Each tenant sees the store through a [`TenantStore`], which puts the tenant's id in
//! every key it writes and reads (`{tenant}/{mesh}` for mesh-scoped resources, `{tenant}/{name}`
//! for Meshes and global-scoped ones). A resource name can never contain `/`, so no tenant's
//! key can be spelled from another tenant's scope: a query made through a scope can only ever
//! reach that tenant. The backend is unchanged, so every backend (memory, Postgres, etcd, raft)
//! keeps tenants apart the same way, and the manager's replicas learn of each other's writes
//! through the backend's own events.
//!
//! Keys without a `/` are the manager's own (its control plane records, its keys).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use model::{Resource, ResourceKey, ResourceType};
use tokio::sync::broadcast;

use crate::{
    ChangeEvent, ClusterStatus, ListPage, ListQuery, ResourceStore, Result, SharedStore,
    StoreError, paginate,
};

/// Events a tenant's subscribers may fall behind by before they must re-list.
const TENANT_EVENT_BUFFER: usize = 16 * 1024;

/// The tenants of one backend: hands out scopes and routes the backend's events to them.
pub struct TenantStores {
    base: SharedStore,
    // A std lock: sections are map lookups, and the event router takes it once per event.
    tenants: RwLock<HashMap<String, Tenant>>,
    /// The manager's own keys' events.
    root_events: broadcast::Sender<ChangeEvent>,
}

/// A tenant's event channel, and whether it is being deleted (its scopes then refuse
/// everything, so nothing of it is written back meanwhile).
#[derive(Clone)]
struct Tenant {
    events: broadcast::Sender<ChangeEvent>,
    deleted: Arc<AtomicBool>,
}

impl TenantStores {
    /// Starts routing `base`'s events to tenants; the router ends when the backend's event
    /// stream closes.
    pub fn new(base: SharedStore) -> Arc<TenantStores> {
        let stores = Arc::new(TenantStores {
            base: base.clone(),
            tenants: RwLock::new(HashMap::new()),
            root_events: broadcast::channel(TENANT_EVENT_BUFFER).0,
        });
        let mut events = base.subscribe();
        let router = Arc::downgrade(&stores);
        tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // The router only looks events up and forwards them, so it falls behind
                        // only when starved of CPU for a whole buffer of writes.
                        tracing::error!(
                            missed,
                            "the tenants' event router fell behind the store; tenants' consumers may miss those changes until they next re-list"
                        );
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let Some(stores) = router.upgrade() else {
                    return;
                };
                stores.route(event);
            }
        });
        stores
    }

    fn route(&self, mut event: ChangeEvent) {
        let Some((tenant, key)) = split_key(&event.key) else {
            let _ = self.root_events.send(event);
            return;
        };
        let tenants = self.tenants.read().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tenants.get(tenant) {
            event.key = key;
            // No subscriber is fine: nothing of that tenant is listening yet.
            let _ = t.events.send(event);
        }
    }

    /// `tenant`'s view of the store. `tenant` must be a valid resource name.
    pub fn scope(self: &Arc<Self>, tenant: &str) -> SharedStore {
        let deleted = self
            .tenants
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tenant.to_string())
            .or_insert_with(|| Tenant {
                events: broadcast::channel(TENANT_EVENT_BUFFER).0,
                deleted: Arc::default(),
            })
            .deleted
            .clone();
        Arc::new(self.scope_with(tenant, deleted))
    }

    fn scope_with(self: &Arc<Self>, tenant: &str, deleted: Arc<AtomicBool>) -> TenantStore {
        TenantStore {
            base: self.base.clone(),
            routing: self.clone(),
            tenant: tenant.to_string(),
            prefix: format!("{tenant}/"),
            deleted,
        }
    }

    /// The whole backend, every tenant's keys included: only for what reads across tenants
    /// on purpose (the control planes' records beside their data).
    pub fn base(&self) -> &SharedStore {
        &self.base
    }

    /// The manager's own scope: keys without a tenant. The manager's own API and components
    /// use it, so nothing of a tenant shows there.
    pub fn root(self: &Arc<Self>) -> SharedStore {
        Arc::new(RootStore {
            base: self.base.clone(),
            routing: self.clone(),
        })
    }

    /// Deletes everything `tenant` has (Meshes first, which take their resources with them)
    /// and ends its scopes: from the start, they refuse every call, and once done, their
    /// subscribers' streams close. Returns how many resources were deleted.
    pub async fn purge(self: &Arc<Self>, tenant: &str) -> Result<usize> {
        if let Some(t) = self
            .tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
        {
            t.deleted.store(true, Ordering::Release);
        }
        let scope = self.scope_with(tenant, Arc::default());
        let mut deleted = 0;
        let kinds = std::iter::once(ResourceType::Mesh)
            .chain(ResourceType::all().filter(|k| *k != ResourceType::Mesh));
        for kind in kinds {
            for r in scope.list(&ListQuery::all(kind)).await?.items {
                match scope.delete(&r.key()).await {
                    Ok(()) => deleted += 1,
                    // Taken with its Mesh or owner meanwhile.
                    Err(StoreError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.tenants
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tenant);
        Ok(deleted)
    }
}

impl TenantStores {
    /// Every tenant that has data in the backend (a full scan of every type).
    pub async fn tenants_with_data(&self) -> Result<std::collections::BTreeSet<String>> {
        let mut ids = std::collections::BTreeSet::new();
        for kind in ResourceType::all() {
            for r in self.base.list(&ListQuery::all(kind)).await?.items {
                if let Some((tenant, _)) = split_key(&r.key()) {
                    ids.insert(tenant.to_string());
                }
            }
        }
        Ok(ids)
    }
}

/// The tenant a backend key belongs to and the key as the tenant sees it; `None` for the
/// manager's own keys.
fn split_key(key: &ResourceKey) -> Option<(&str, ResourceKey)> {
    if key.kind.is_mesh_scoped() {
        let (tenant, mesh) = key.mesh.split_once('/')?;
        Some((tenant, ResourceKey::new(key.kind, mesh, key.name.clone())))
    } else {
        let (tenant, name) = key.name.split_once('/')?;
        Some((tenant, ResourceKey::new(key.kind, "", name)))
    }
}

/// One tenant's view of the store.
struct TenantStore {
    base: SharedStore,
    /// Keeps the backend's events routed while the scope lives.
    routing: Arc<TenantStores>,
    tenant: String,
    /// `{tenant}/`.
    prefix: String,
    deleted: Arc<AtomicBool>,
}

impl TenantStore {
    fn check_live(&self) -> Result<()> {
        match self.deleted.load(Ordering::Acquire) {
            false => Ok(()),
            true => Err(StoreError::Unavailable {
                message: format!("tenant {} was deleted", self.tenant),
                source: None,
            }),
        }
    }

    fn to_base(&self, key: &ResourceKey) -> ResourceKey {
        let mut key = key.clone();
        match key.kind.is_mesh_scoped() {
            true => key.mesh.insert_str(0, &self.prefix),
            false => key.name.insert_str(0, &self.prefix),
        }
        key
    }

    fn resource_to_base(&self, mut r: Resource) -> Resource {
        match r.kind.is_mesh_scoped() {
            true => r.meta.mesh.insert_str(0, &self.prefix),
            false => r.meta.name.insert_str(0, &self.prefix),
        }
        r
    }

    /// The resource as the tenant sees it, or `None` if it is not the tenant's.
    fn own_view(&self, mut r: Resource) -> Option<Resource> {
        let field = match r.kind.is_mesh_scoped() {
            true => &mut r.meta.mesh,
            false => &mut r.meta.name,
        };
        *field = field.strip_prefix(&self.prefix)?.to_string();
        Some(r)
    }

    fn key_from_base(&self, key: ResourceKey) -> ResourceKey {
        match split_key(&key) {
            Some((_, tenant_key)) => tenant_key,
            None => key,
        }
    }

    fn is_own(&self, key: &ResourceKey) -> bool {
        split_key(key).is_some_and(|(tenant, _)| tenant == self.tenant)
    }

    /// The error with the tenant's own names in it; one about another tenant's data (a corrupt
    /// row met while listing) names nothing of it.
    fn error_from_base(&self, e: StoreError) -> StoreError {
        let foreign = match &e {
            StoreError::NotFound(key)
            | StoreError::AlreadyExists(key)
            | StoreError::Conflict { key, .. }
            | StoreError::TooLarge { key, .. }
            | StoreError::Corrupt { key, .. } => !self.is_own(key),
            StoreError::MeshNotFound(mesh) => !mesh.starts_with(&self.prefix),
            StoreError::Unavailable { .. } => false,
        };
        if foreign {
            return StoreError::Unavailable {
                message: "the store failed on data outside this tenant".into(),
                source: None,
            };
        }
        match e {
            StoreError::NotFound(key) => StoreError::NotFound(self.key_from_base(key)),
            StoreError::AlreadyExists(key) => StoreError::AlreadyExists(self.key_from_base(key)),
            StoreError::Conflict {
                key,
                expected,
                actual,
            } => StoreError::Conflict {
                key: self.key_from_base(key),
                expected,
                actual,
            },
            StoreError::MeshNotFound(mesh) => StoreError::MeshNotFound(
                mesh.strip_prefix(&self.prefix)
                    .map_or(mesh.clone(), str::to_string),
            ),
            StoreError::TooLarge { key, size, limit } => StoreError::TooLarge {
                key: self.key_from_base(key),
                size,
                limit,
            },
            StoreError::Corrupt { key, message } => StoreError::Corrupt {
                key: self.key_from_base(key),
                message,
            },
            e @ StoreError::Unavailable { .. } => e,
        }
    }

    fn returned(&self, r: Resource) -> Result<Resource> {
        let key = r.key();
        self.own_view(r).ok_or_else(|| StoreError::Corrupt {
            key,
            message: "the backend answered with another tenant's resource".into(),
        })
    }
}

#[async_trait]
impl ResourceStore for TenantStore {
    async fn get(&self, key: &ResourceKey) -> Result<Resource> {
        self.check_live()?;
        let r = self
            .base
            .get(&self.to_base(key))
            .await
            .map_err(|e| self.error_from_base(e))?;
        self.returned(r)
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        self.check_live()?;
        if let (true, Some(mesh)) = (query.kind.is_mesh_scoped(), &query.mesh) {
            // One mesh of one tenant is one backend mesh: the backend filters and pages.
            let base_query = ListQuery {
                mesh: Some(format!("{}{mesh}", self.prefix)),
                ..query.clone()
            };
            let mut page = self
                .base
                .list(&base_query)
                .await
                .map_err(|e| self.error_from_base(e))?;
            page.items = page
                .items
                .into_iter()
                .map(|r| self.returned(r))
                .collect::<Result<_>>()?;
            return Ok(page);
        }
        // Across meshes, or a type without meshes: the tenant's part of the backend's list,
        // filtered by name after the tenant's prefix is taken off, then paged here.
        let base_query = ListQuery {
            name_contains: None,
            offset: 0,
            size: None,
            mesh: None,
            ..query.clone()
        };
        let all = self
            .base
            .list(&base_query)
            .await
            .map_err(|e| self.error_from_base(e))?;
        let mine: Vec<Resource> = all
            .items
            .into_iter()
            .filter_map(|r| self.own_view(r))
            .filter(|r| query.matches(r))
            .collect();
        Ok(paginate(mine, query.offset, query.size))
    }

    async fn create(&self, resource: Resource) -> Result<Resource> {
        self.check_live()?;
        let r = self
            .base
            .create(self.resource_to_base(resource))
            .await
            .map_err(|e| self.error_from_base(e))?;
        self.returned(r)
    }

    async fn update(&self, resource: Resource) -> Result<Resource> {
        self.check_live()?;
        let r = self
            .base
            .update(self.resource_to_base(resource))
            .await
            .map_err(|e| self.error_from_base(e))?;
        self.returned(r)
    }

    async fn delete(&self, key: &ResourceKey) -> Result<()> {
        self.check_live()?;
        self.base
            .delete(&self.to_base(key))
            .await
            .map_err(|e| self.error_from_base(e))
    }

    fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        match self
            .routing
            .tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&self.tenant)
        {
            Some(t) => t.events.subscribe(),
            // Deleted: a stream that is already closed.
            None => broadcast::channel(1).1,
        }
    }

    async fn ping(&self) -> Result<()> {
        self.base.ping().await
    }

    fn backend(&self) -> &'static str {
        self.base.backend()
    }

    /// The backend's replication is the manager's business, not a tenant's.
    async fn cluster_status(&self) -> Result<Option<ClusterStatus>> {
        Ok(None)
    }
}

/// The manager's own scope: the backend without any tenant's keys.
struct RootStore {
    base: SharedStore,
    routing: Arc<TenantStores>,
}

fn is_tenant_key(key: &ResourceKey) -> bool {
    split_key(key).is_some()
}

#[async_trait]
impl ResourceStore for RootStore {
    async fn get(&self, key: &ResourceKey) -> Result<Resource> {
        match is_tenant_key(key) {
            true => Err(StoreError::NotFound(key.clone())),
            false => self.base.get(key).await,
        }
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        if let (true, Some(mesh)) = (query.kind.is_mesh_scoped(), &query.mesh) {
            if mesh.contains('/') {
                return Ok(ListPage::default());
            }
            return self.base.list(query).await;
        }
        let all = self
            .base
            .list(&ListQuery {
                offset: 0,
                size: None,
                ..query.clone()
            })
            .await?;
        let mine: Vec<Resource> = all
            .items
            .into_iter()
            .filter(|r| !is_tenant_key(&r.key()))
            .collect();
        Ok(paginate(mine, query.offset, query.size))
    }

    async fn create(&self, resource: Resource) -> Result<Resource> {
        match is_tenant_key(&resource.key()) {
            true => Err(StoreError::MeshNotFound(resource.meta.mesh)),
            false => self.base.create(resource).await,
        }
    }

    async fn update(&self, resource: Resource) -> Result<Resource> {
        match is_tenant_key(&resource.key()) {
            true => Err(StoreError::NotFound(resource.key())),
            false => self.base.update(resource).await,
        }
    }

    async fn delete(&self, key: &ResourceKey) -> Result<()> {
        match is_tenant_key(key) {
            true => Err(StoreError::NotFound(key.clone())),
            false => self.base.delete(key).await,
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.routing.root_events.subscribe()
    }

    async fn ping(&self) -> Result<()> {
        self.base.ping().await
    }

    fn backend(&self) -> &'static str {
        self.base.backend()
    }

    async fn cluster_status(&self) -> Result<Option<ClusterStatus>> {
        self.base.cluster_status().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use crate::conformance::{mesh, timeout};

    /// Keeps writing the suite's own mesh and policy names through `scope` for a while: a key
    /// or event leaking between scopes breaks the suite's checks in the scope beside it.
    fn keep_writing_the_suites_names(scope: SharedStore) {
        tokio::spawn(async move {
            for _ in 0..200 {
                for name in ["c-create", "c-dup", "c-update", "c-events", "c-list"] {
                    let _ = scope.create(mesh(name)).await;
                    let _ = scope.create(timeout(name, "t1")).await;
                    let _ = scope
                        .delete(&ResourceKey::new(ResourceType::Mesh, "", name))
                        .await;
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        });
    }

    /// A tenant's scope beside a neighbour writing the same names.
    fn scope_with_neighbour() -> SharedStore {
        let tenants = TenantStores::new(Arc::new(MemoryStore::new()));
        keep_writing_the_suites_names(tenants.scope("neighbour"));
        tenants.scope("tenant-1")
    }

    crate::conformance_tests!(scope_with_neighbour());

    /// The manager's own scope, beside a tenant writing the suite's names.
    mod manager_scope {
        use super::*;

        fn root_beside_a_tenant() -> SharedStore {
            let tenants = TenantStores::new(Arc::new(MemoryStore::new()));
            keep_writing_the_suites_names(tenants.scope("tenant-1"));
            tenants.root()
        }

        crate::conformance_tests!(root_beside_a_tenant());
    }

    fn global_secret(name: &str) -> Resource {
        Resource::new(
            ResourceType::GlobalSecret,
            "",
            name,
            serde_json::json!({"data": "YQ=="}),
        )
    }

    #[tokio::test]
    async fn tenants_never_see_each_other() {
        let base: SharedStore = Arc::new(MemoryStore::new());
        let tenants = TenantStores::new(base.clone());
        let (a, b) = (tenants.scope("a"), tenants.scope("b"));
        let mut b_events = b.subscribe();
        a.create(mesh("default")).await.unwrap();
        a.create(timeout("default", "t")).await.unwrap();
        a.create(global_secret("s")).await.unwrap();

        for kind in [
            ResourceType::Mesh,
            ResourceType::MeshTimeout,
            ResourceType::GlobalSecret,
        ] {
            assert_eq!(b.list(&ListQuery::all(kind)).await.unwrap().total, 0);
            assert_eq!(a.list(&ListQuery::all(kind)).await.unwrap().total, 1);
        }
        let key = ResourceKey::new(ResourceType::MeshTimeout, "default", "t");
        assert!(matches!(b.get(&key).await, Err(StoreError::NotFound(k)) if k == key));
        assert!(matches!(
            b.create(timeout("default", "t")).await,
            Err(StoreError::MeshNotFound(m)) if m == "default"
        ));
        // b's own mesh of the same name is another mesh.
        b.create(mesh("default")).await.unwrap();
        b.create(timeout("default", "t")).await.unwrap();
        assert_eq!(a.get(&key).await.unwrap().meta.version, 1);

        // b heard only of its own writes, under its own names.
        let first = b_events.recv().await.unwrap();
        assert_eq!(
            first.key,
            ResourceKey::new(ResourceType::Mesh, "", "default")
        );
        assert_eq!(b_events.recv().await.unwrap().key, key);
        assert!(b_events.try_recv().is_err());

        // The manager's own scope sees neither tenant's.
        let root = tenants.root();
        for kind in [
            ResourceType::Mesh,
            ResourceType::MeshTimeout,
            ResourceType::GlobalSecret,
        ] {
            assert_eq!(root.list(&ListQuery::all(kind)).await.unwrap().total, 0);
        }
        assert!(
            root.get(&ResourceKey::new(ResourceType::Mesh, "", "a/default"))
                .await
                .is_err()
        );

        // In the backend, each tenant's mesh carries its tenant's id; none is the manager's.
        let meshes = base
            .list(&ListQuery::all(ResourceType::Mesh))
            .await
            .unwrap();
        let names: Vec<&str> = meshes.items.iter().map(|m| m.meta.name.as_str()).collect();
        assert_eq!(names, ["a/default", "b/default"]);

        // Purging a: its Mesh (which takes the policy) and its secret. Its scopes then refuse
        // everything and its subscribers' streams end; b keeps all it had.
        let mut a_events = a.subscribe();
        assert_eq!(tenants.purge("a").await.unwrap(), 2);
        assert!(matches!(
            a.list(&ListQuery::all(ResourceType::Mesh)).await,
            Err(StoreError::Unavailable { .. })
        ));
        loop {
            match a_events.recv().await {
                Err(broadcast::error::RecvError::Closed) => break,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            }
        }
        for kind in [
            ResourceType::Mesh,
            ResourceType::MeshTimeout,
            ResourceType::GlobalSecret,
        ] {
            let left = base.list(&ListQuery::all(kind)).await.unwrap().items;
            assert!(
                left.iter()
                    .all(|r| !r.meta.name.starts_with("a/") && !r.meta.mesh.starts_with("a/"))
            );
        }
        assert_eq!(b.get(&key).await.unwrap().meta.version, 1);
    }
}
