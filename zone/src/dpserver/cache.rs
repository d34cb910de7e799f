//! The per-mesh snapshot cache. One task per mesh keeps that mesh's context (its spec and CA,
//! Dataplanes, policies by type, and the zone's ingresses and egresses) current from store
//! change events, reading only the resources that changed, and publishes a new snapshot once
//! per batch of changes. Proxy streams recompute from the published snapshots and never read
//! the store: a change costs one store read per changed resource, however many proxies there
//! are. There is no timer: a batch is whatever arrived while the previous one was applied.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use model::specs::dataplane::DataplaneSpec;
use model::specs::mesh::MeshSpec;
use model::specs::zone::{ZoneEgressSpec, ZoneIngressSpec};
use model::{Resource, ResourceKey, ResourceType};
use security::ca::{MeshCa, MeshCaError};
use store::{ListQuery, SharedStore, StoreError};
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;
use xds::{
    DataplaneEntry, GatewayCertificate, GatewayEntry, MeshContext, Policies, RawPolicy,
    RemoteIngress,
};

use crate::dpserver::encoded::EncodedCache;
use crate::dpserver::snapshot::{mtls_enabled, remote_ingress, zone_egress};
use crate::services::reconcile::SERVICE_KINDS;
use xds::context::ServiceEntry;

/// A mesh as every proxy of it sees it.
#[derive(Debug)]
pub struct MeshSnapshot {
    pub spec: MeshSpec,
    pub context: MeshContext,
    /// The CA of the enabled mTLS backend: `None` without mTLS.
    pub ca: Result<Option<MeshCa>, Arc<MeshCaError>>,
    /// Encoded resources the mesh's proxies share (one cache for all the mesh's snapshots).
    pub encoded: Arc<EncodedCache>,
}

/// The zone's own ZoneIngresses and ZoneEgresses, and other zones' ingresses.
#[derive(Debug, Default)]
pub struct ZoneProxies {
    pub ingresses: BTreeMap<String, ZoneIngressSpec>,
    pub egresses: BTreeMap<String, ZoneEgressSpec>,
    /// Other zones' ingresses that advertise an address, resolved to IPs.
    pub remote_ingresses: Vec<RemoteIngress>,
    /// This zone's egresses (address, port).
    pub local_egresses: Vec<(String, u32)>,
}

/// What proxy streams watch: every mesh's latest snapshot. An unchanged mesh keeps its `Arc`,
/// so a stream tells in one pointer comparison whether its mesh changed.
#[derive(Debug, Clone, Default)]
pub struct ZoneView {
    /// Whether the first full load finished: before it, a missing mesh may only be late.
    pub ready: bool,
    pub meshes: BTreeMap<String, Arc<MeshSnapshot>>,
    pub zone_proxies: Arc<ZoneProxies>,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("reading {0}")]
    Store(String, #[source] StoreError),
    #[error("the mesh is gone")]
    MeshGone,
}

/// Starts the cache for the proxies of `zone` and returns what they watch.
pub fn start(store: SharedStore, zone: String, generates_ca: bool) -> watch::Receiver<ZoneView> {
    let (view, rx) = watch::channel(ZoneView::default());
    let events = store.subscribe();
    let supervisor = Supervisor {
        store,
        zone,
        generates_ca,
        view: Arc::new(view),
        meshes: HashMap::new(),
    };
    tokio::spawn(supervisor.run(events));
    rx
}

/// Changes waiting for one mesh task: coalesced, so a burst is applied as one batch.
#[derive(Default)]
struct Pending {
    keys: HashSet<ResourceKey>,
    zone_proxies: Option<Arc<ZoneProxies>>,
    resync: bool,
}

struct Inbox {
    pending: Mutex<Pending>,
    notify: Notify,
}

impl Inbox {
    fn post(&self, change: impl FnOnce(&mut Pending)) {
        change(&mut self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        self.notify.notify_one();
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

struct MeshTask {
    inbox: Arc<Inbox>,
    handle: JoinHandle<()>,
}

impl Drop for MeshTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

struct Supervisor {
    store: SharedStore,
    zone: String,
    generates_ca: bool,
    view: Arc<watch::Sender<ZoneView>>,
    meshes: HashMap<String, MeshTask>,
}

/// Which part of the cache a change of `kind` concerns.
enum Route {
    Mesh,
    InMesh,
    ZoneProxy,
    Ignored,
}

fn route(kind: ResourceType) -> Route {
    match kind {
        ResourceType::Mesh => Route::Mesh,
        ResourceType::ZoneIngress | ResourceType::ZoneEgress => Route::ZoneProxy,
        // Dataplanes are endpoints and identities, Secrets hold the mesh's CA, and every policy
        // type can shape configuration.
        // MeshGateways shape builtin gateways, whose certificates are Secrets too.
        ResourceType::Dataplane | ResourceType::Secret | ResourceType::MeshGateway => Route::InMesh,
        kind if SERVICE_KINDS.contains(&kind) => Route::InMesh,
        kind if kind.descriptor().is_policy => Route::InMesh,
        _ => Route::Ignored,
    }
}

impl Supervisor {
    async fn run(mut self, mut events: broadcast::Receiver<store::ChangeEvent>) {
        let mut zone_proxies = ZoneProxiesState::default();
        // Subscribed before listing, so nothing between the two is missed.
        loop {
            match self.resync(&mut zone_proxies).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %model::error_chain(&e), "loading the meshes for proxies failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
        self.view.send_modify(|v| v.ready = true);
        loop {
            let ev = match events.recv().await {
                Ok(ev) => ev,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "proxy cache fell behind the store's events; reloading"
                    );
                    if let Err(e) = self.resync(&mut zone_proxies).await {
                        tracing::warn!(error = %model::error_chain(&e), "reloading the proxy cache failed");
                    }
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            match route(ev.key.kind) {
                Route::Mesh => self.mesh_changed(&ev),
                Route::InMesh => {
                    if let Some(task) = self.meshes.get(&ev.key.mesh) {
                        task.inbox.post(|p| {
                            p.keys.insert(ev.key.clone());
                        });
                    }
                }
                Route::ZoneProxy => {
                    match zone_proxies.apply(&self.store, &ev.key, &self.zone).await {
                        Ok(()) => self.publish_zone_proxies(&zone_proxies).await,
                        Err(e) => {
                            tracing::warn!(error = %model::error_chain(&e), "reading a zone proxy failed")
                        }
                    }
                }
                Route::Ignored => {}
            }
        }
    }

    fn mesh_changed(&mut self, ev: &store::ChangeEvent) {
        let name = ev.key.name.clone();
        if ev.op == store::Operation::Delete {
            self.meshes.remove(&name);
            self.view.send_modify(|v| {
                v.meshes.remove(&name);
            });
            return;
        }
        match self.meshes.get(&name) {
            Some(task) => task.inbox.post(|p| {
                p.keys.insert(ev.key.clone());
            }),
            None => {
                let zone_proxies = self.view.borrow().zone_proxies.clone();
                self.spawn_mesh(name, zone_proxies);
            }
        }
    }

    fn spawn_mesh(&mut self, name: String, zone_proxies: Arc<ZoneProxies>) {
        let inbox = Arc::new(Inbox {
            pending: Mutex::default(),
            notify: Notify::new(),
        });
        let state = MeshState {
            name: name.clone(),
            store: self.store.clone(),
            zone: self.zone.clone(),
            generates_ca: self.generates_ca,
            spec: MeshSpec::default(),
            dataplanes: BTreeMap::new(),
            gateways: BTreeMap::new(),
            gateway_certificates: BTreeMap::new(),
            external_secrets: BTreeMap::new(),
            raw_policies: BTreeMap::new(),
            policies: Policies::default(),
            services: BTreeMap::new(),
            zone_proxies,
            ca: Ok(None),
            encoded: Arc::default(),
        };
        let handle = tokio::spawn(state.run(inbox.clone(), self.view.clone()));
        self.meshes.insert(name, MeshTask { inbox, handle });
    }

    /// Lists everything again: after start and after falling behind the events.
    async fn resync(&mut self, zone_proxies: &mut ZoneProxiesState) -> Result<(), CacheError> {
        zone_proxies.load(&self.store, &self.zone).await?;
        let shared = Arc::new(zone_proxies.build(&self.zone));
        self.view.send_modify(|v| v.zone_proxies = shared.clone());
        let meshes = self
            .store
            .list(&ListQuery::all(ResourceType::Mesh))
            .await
            .map_err(|e| CacheError::Store("the meshes".into(), e))?
            .items;
        let names: HashSet<String> = meshes.iter().map(|m| m.meta.name.clone()).collect();
        self.meshes.retain(|name, _| names.contains(name));
        self.view
            .send_modify(|v| v.meshes.retain(|name, _| names.contains(name)));
        let mut loading = Vec::new();
        for name in names {
            match self.meshes.get(&name) {
                Some(task) => task.inbox.post(|p| {
                    p.resync = true;
                    p.zone_proxies = Some(shared.clone());
                }),
                None => {
                    self.spawn_mesh(name.clone(), shared.clone());
                    loading.push(name);
                }
            }
        }
        // The first load of each new mesh is awaited, so `ready` means every mesh is there.
        // A mesh deleted between the listing and its load never appears: bounded wait.
        let mut view = self.view.subscribe();
        let loaded = view.wait_for(|v| loading.iter().all(|m| v.meshes.contains_key(m)));
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), loaded).await;
        Ok(())
    }

    async fn publish_zone_proxies(&mut self, state: &ZoneProxiesState) {
        let shared = Arc::new(state.build(&self.zone));
        self.view.send_modify(|v| v.zone_proxies = shared.clone());
        for task in self.meshes.values() {
            task.inbox.post(|p| p.zone_proxies = Some(shared.clone()));
        }
    }
}

/// The zone proxies as stored, kept by name so one change is one read.
#[derive(Default)]
struct ZoneProxiesState {
    ingresses: BTreeMap<String, ZoneIngressSpec>,
    egresses: BTreeMap<String, ZoneEgressSpec>,
    /// Resolved addresses of other zones' ingresses, by name.
    remote: BTreeMap<String, RemoteIngress>,
}

impl ZoneProxiesState {
    async fn load(&mut self, store: &SharedStore, zone: &str) -> Result<(), CacheError> {
        *self = ZoneProxiesState::default();
        for kind in [ResourceType::ZoneIngress, ResourceType::ZoneEgress] {
            let items = store
                .list(&ListQuery::all(kind))
                .await
                .map_err(|e| CacheError::Store(format!("the {kind}s"), e))?
                .items;
            for r in items {
                self.put(r, zone).await;
            }
        }
        Ok(())
    }

    async fn apply(
        &mut self,
        store: &SharedStore,
        key: &ResourceKey,
        zone: &str,
    ) -> Result<(), CacheError> {
        match store.get(key).await {
            Ok(r) => self.put(r, zone).await,
            Err(StoreError::NotFound(_)) if key.kind == ResourceType::ZoneEgress => {
                self.egresses.remove(&key.name);
            }
            Err(StoreError::NotFound(_)) => {
                self.ingresses.remove(&key.name);
                self.remote.remove(&key.name);
            }
            Err(e) => return Err(CacheError::Store(key.to_string(), e)),
        }
        Ok(())
    }

    async fn put(&mut self, r: Resource, zone: &str) {
        let name = r.meta.name.clone();
        match r.kind {
            ResourceType::ZoneIngress => {
                let Ok(spec) = serde_json::from_value::<ZoneIngressSpec>(r.spec) else {
                    tracing::warn!(ingress = %name, "ZoneIngress spec does not parse; left out");
                    return;
                };
                match remote_ingress(&name, &spec, zone).await {
                    Some(remote) => self.remote.insert(name.clone(), remote),
                    None => self.remote.remove(&name),
                };
                self.ingresses.insert(name, spec);
            }
            ResourceType::ZoneEgress => {
                let Ok(spec) = serde_json::from_value::<ZoneEgressSpec>(r.spec) else {
                    tracing::warn!(egress = %name, "ZoneEgress spec does not parse; left out");
                    return;
                };
                self.egresses.insert(name, spec);
            }
            _ => {}
        }
    }

    fn build(&self, zone: &str) -> ZoneProxies {
        let mut remote_ingresses: Vec<RemoteIngress> = self.remote.values().cloned().collect();
        remote_ingresses.sort_by(|a, b| (&a.zone, &a.address).cmp(&(&b.zone, &b.address)));
        let mut local_egresses: Vec<(String, u32)> = self
            .egresses
            .values()
            .filter(|e| e.zone == zone && !e.networking.address.is_empty())
            .map(|e| (e.networking.address.clone(), e.networking.port))
            .collect();
        local_egresses.sort();
        ZoneProxies {
            ingresses: self.ingresses.clone(),
            egresses: self.egresses.clone(),
            remote_ingresses,
            local_egresses,
        }
    }
}

/// One mesh task's state: the mesh's resources as last read.
struct MeshState {
    name: String,
    store: SharedStore,
    zone: String,
    generates_ca: bool,
    spec: MeshSpec,
    dataplanes: BTreeMap<String, DataplaneEntry>,
    gateways: BTreeMap<String, GatewayEntry>,
    /// The certificates the gateways name, by Secret name.
    gateway_certificates: BTreeMap<String, GatewayCertificate>,
    raw_policies: BTreeMap<ResourceType, BTreeMap<String, RawPolicy>>,
    policies: Policies,
    /// What proxies read of the mesh's services (VIPs, hostnames): their proxy counts change
    /// with every connection and are not kept, so such a change publishes nothing.
    services: BTreeMap<(ResourceType, String), ServiceEntry>,
    /// The Secrets MeshExternalServices name for their TLS, by name (`None`: missing).
    external_secrets: BTreeMap<String, Option<String>>,
    zone_proxies: Arc<ZoneProxies>,
    ca: Result<Option<MeshCa>, Arc<MeshCaError>>,
    encoded: Arc<EncodedCache>,
}

impl MeshState {
    async fn run(mut self, inbox: Arc<Inbox>, view: Arc<watch::Sender<ZoneView>>) {
        let mut resync = true;
        loop {
            if resync {
                match self.load().await {
                    Ok(()) => resync = false,
                    // Deleted meanwhile: its delete event ends this task; a new Upsert event
                    // (the mesh created again) wakes it to load it.
                    Err(CacheError::MeshGone) => {
                        inbox.notify.notified().await;
                        inbox.take();
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(mesh = %self.name, error = %model::error_chain(&e), "loading the mesh for its proxies failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        continue;
                    }
                }
            } else {
                inbox.notify.notified().await;
                let pending = inbox.take();
                let zone_proxies_changed = pending.zone_proxies.is_some();
                if let Some(z) = pending.zone_proxies {
                    self.zone_proxies = z;
                }
                if pending.resync {
                    resync = true;
                    continue;
                }
                match self.apply(pending.keys).await {
                    Ok(changed) if !changed && !zone_proxies_changed => continue,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(mesh = %self.name, error = %model::error_chain(&e), "reading a change failed; reloading the mesh");
                        resync = true;
                        continue;
                    }
                }
            }
            // Proxies rebuild from the new snapshot: what none of them uses any more ages out.
            self.encoded.turn();
            let snapshot = Arc::new(self.snapshot());
            let name = self.name.clone();
            view.send_modify(|v| {
                v.meshes.insert(name, snapshot);
            });
        }
    }

    /// Everything of the mesh, read afresh.
    /// Every resource of `kind` in the mesh; `what` names them in an error.
    async fn list_in_mesh(
        &self,
        kind: ResourceType,
        what: &str,
    ) -> Result<Vec<Resource>, CacheError> {
        self.store
            .list(&ListQuery::in_mesh(kind, &self.name))
            .await
            .map(|page| page.items)
            .map_err(|e| CacheError::Store(format!("{what} of mesh {}", self.name), e))
    }

    async fn load(&mut self) -> Result<(), CacheError> {
        let mesh = self.name.clone();
        let read = |what: &str, e| CacheError::Store(format!("{what} of mesh {mesh}"), e);
        let r = match self
            .store
            .get(&ResourceKey::new(ResourceType::Mesh, "", &self.name))
            .await
        {
            Ok(r) => r,
            Err(StoreError::NotFound(_)) => return Err(CacheError::MeshGone),
            Err(e) => return Err(read("the spec", e)),
        };
        self.set_spec(r);
        self.dataplanes.clear();
        for r in self
            .list_in_mesh(ResourceType::Dataplane, "the dataplanes")
            .await?
        {
            self.put_dataplane(r);
        }
        self.gateways.clear();
        for r in self
            .list_in_mesh(ResourceType::MeshGateway, "the gateways")
            .await?
        {
            self.put_gateway(r);
        }
        self.load_gateway_certificates().await?;
        self.services.clear();
        for kind in SERVICE_KINDS {
            for r in self.list_in_mesh(kind, kind.name()).await? {
                self.services
                    .insert((kind, r.meta.name.clone()), ServiceEntry::from_resource(&r));
            }
        }
        self.load_external_secrets().await?;
        self.raw_policies.clear();
        self.policies = Policies::default();
        for kind in xds::policies::kinds() {
            let items = self.list_in_mesh(kind, kind.name()).await?;
            let raws = self.raw_policies.entry(kind).or_default();
            for r in items {
                raws.insert(r.meta.name.clone(), raw_policy(r));
            }
            self.reparse(kind);
        }
        self.load_ca().await;
        Ok(())
    }

    /// Applies a batch of changed keys, reading each once; `false` when nothing proxies read
    /// changed.
    async fn apply(&mut self, keys: HashSet<ResourceKey>) -> Result<bool, CacheError> {
        let mut changed = false;
        let mut reparse = HashSet::new();
        let mut ca = false;
        let mut certificates = false;
        let mut external_secrets = false;
        for key in keys {
            let current = match self.store.get(&key).await {
                Ok(r) => Some(r),
                Err(StoreError::NotFound(_)) => None,
                Err(e) => return Err(CacheError::Store(key.to_string(), e)),
            };
            if SERVICE_KINDS.contains(&key.kind) {
                let slot = (key.kind, key.name.clone());
                let entry = current.as_ref().map(ServiceEntry::from_resource);
                if self.services.get(&slot) != entry.as_ref() {
                    changed = true;
                    external_secrets |= key.kind == ResourceType::MeshExternalService;
                    match entry {
                        Some(e) => self.services.insert(slot, e),
                        None => self.services.remove(&slot),
                    };
                }
                continue;
            }
            changed = true;
            match key.kind {
                ResourceType::Mesh => {
                    if let Some(r) = current {
                        self.set_spec(r);
                        ca = true;
                    }
                }
                ResourceType::Dataplane => match current {
                    Some(r) => self.put_dataplane(r),
                    None => {
                        self.dataplanes.remove(&key.name);
                    }
                },
                ResourceType::Secret => {
                    ca = true;
                    certificates |= self.gateway_certificates.contains_key(&key.name);
                    external_secrets |= self.external_secrets.contains_key(&key.name);
                }
                ResourceType::MeshGateway => {
                    match current {
                        Some(r) => self.put_gateway(r),
                        None => {
                            self.gateways.remove(&key.name);
                        }
                    }
                    certificates = true;
                }
                kind if self.raw_policies.contains_key(&kind) => {
                    let raws = self.raw_policies.entry(kind).or_default();
                    match current {
                        Some(r) => raws.insert(key.name.clone(), raw_policy(r)),
                        None => raws.remove(&key.name),
                    };
                    reparse.insert(kind);
                }
                // A policy type no plugin translates yet: nothing here depends on it.
                _ => {}
            }
        }
        for kind in reparse {
            self.reparse(kind);
        }
        if ca {
            self.load_ca().await;
        }
        if certificates {
            self.load_gateway_certificates().await?;
        }
        if external_secrets {
            self.load_external_secrets().await?;
        }
        Ok(changed)
    }

    /// A MeshGateway whose spec does not parse is left out (its gateways serve nothing).
    fn put_gateway(&mut self, r: Resource) {
        let name = r.meta.name;
        match serde_json::from_value(r.spec) {
            Ok(spec) => {
                let entry = GatewayEntry {
                    name: name.clone(),
                    labels: r.meta.labels,
                    spec,
                };
                self.gateways.insert(name, entry);
            }
            Err(e) => {
                tracing::warn!(mesh = %self.name, gateway = %name, error = %e, "MeshGateway spec does not parse; left out");
                self.gateways.remove(&name);
            }
        }
    }

    /// Reads every Secret a gateway listener names as its certificate (one read each): a
    /// missing or unusable one is kept with the reason, which the gateway reports.
    async fn load_gateway_certificates(&mut self) -> Result<(), CacheError> {
        let names = xds::context::certificate_secrets(self.gateways.values());
        let mut certificates = BTreeMap::new();
        for name in names {
            let key = ResourceKey::new(ResourceType::Secret, &self.name, &name);
            let certificate = match self.store.get(&key).await {
                Ok(r) => GatewayCertificate::checked(
                    security::tls::gateway_secret(r.spec).map(|p| (p.cert_pem, p.key_pem)),
                ),
                Err(StoreError::NotFound(_)) => GatewayCertificate::missing(),
                Err(e) => return Err(CacheError::Store(key.to_string(), e)),
            };
            certificates.insert(name, certificate);
        }
        self.gateway_certificates = certificates;
        Ok(())
    }

    /// Reads every Secret a MeshExternalService's TLS names (one read each).
    async fn load_external_secrets(&mut self) -> Result<(), CacheError> {
        let names: std::collections::BTreeSet<String> = self
            .services
            .values()
            .filter_map(|s| match s.spec.as_deref() {
                Some(xds::context::ServiceSpec::External(spec)) => {
                    Some(xds::generator::external::secret_names(spec))
                }
                _ => None,
            })
            .flatten()
            .collect();
        let mut secrets = BTreeMap::new();
        for name in names {
            let key = ResourceKey::new(ResourceType::Secret, &self.name, &name);
            let data = match self.store.get(&key).await {
                Ok(r) => r
                    .spec
                    .get("data")
                    .and_then(serde_json::Value::as_str)
                    .map(String::from),
                Err(StoreError::NotFound(_)) => None,
                Err(e) => return Err(CacheError::Store(key.to_string(), e)),
            };
            secrets.insert(name, data);
        }
        self.external_secrets = secrets;
        Ok(())
    }

    fn set_spec(&mut self, r: Resource) {
        self.spec = serde_json::from_value(r.spec).unwrap_or_else(|e| {
            tracing::warn!(mesh = %self.name, error = %e, "mesh spec does not parse; treating it as empty");
            MeshSpec::default()
        });
    }

    /// A Dataplane whose spec does not parse is left out, so it cannot break the mesh's other
    /// proxies.
    fn put_dataplane(&mut self, r: Resource) {
        let name = r.meta.name;
        match serde_json::from_value::<DataplaneSpec>(r.spec) {
            Ok(spec) => {
                let entry = DataplaneEntry {
                    name: name.clone(),
                    labels: r.meta.labels,
                    spec,
                };
                self.dataplanes.insert(name, entry);
            }
            Err(e) => {
                tracing::warn!(mesh = %self.name, dataplane = %name, error = %e, "dataplane spec does not parse; left out");
                self.dataplanes.remove(&name);
            }
        }
    }

    fn reparse(&mut self, kind: ResourceType) {
        let raws = self
            .raw_policies
            .get(&kind)
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default();
        for failure in self.policies.load(kind, raws) {
            let error = model::error_chain(&failure);
            tracing::warn!(mesh = %self.name, policy = %failure.name, %kind, %error, "policy left out");
        }
    }

    fn has_external_services(&self) -> bool {
        self.services
            .keys()
            .any(|(kind, _)| *kind == ResourceType::MeshExternalService)
    }

    async fn load_ca(&mut self) {
        self.ca = if mtls_enabled(&self.spec) {
            security::ca::mesh_ca(&self.store, &self.name, &self.spec, self.generates_ca)
                .await
                .map_err(Arc::new)
        } else {
            Ok(None)
        };
    }

    fn snapshot(&self) -> MeshSnapshot {
        let mtls = mtls_enabled(&self.spec);
        let egress = zone_egress(&self.spec);
        let zp = &self.zone_proxies;
        let context = MeshContext {
            mesh: self.name.clone(),
            mtls,
            dataplanes: self.dataplanes.values().cloned().collect(),
            policies: self.policies.clone(),
            local_zone: self.zone.clone(),
            remote_ingresses: match mtls {
                true => zp.remote_ingresses.clone(),
                false => Vec::new(),
            },
            zone_egress: egress,
            // Only where a sidecar dials them: with `zoneEgress`, or for a MeshExternalService
            // (which leaves through egresses without it); elsewhere an egress coming or going
            // would regenerate every sidecar for nothing.
            local_egresses: if mtls && (egress || self.has_external_services()) {
                zp.local_egresses.clone()
            } else {
                Vec::new()
            },
            forbid_external_access: self
                .spec
                .routing
                .as_ref()
                .is_some_and(|r| r.default_forbid_mesh_external_service_access),
            gateways: self.gateways.values().cloned().collect(),
            gateway_certificates: self.gateway_certificates.clone(),
            legacy_metrics: legacy_metrics(&self.name, &self.spec),
            services: self.services.values().cloned().collect(),
            external_secrets: self.external_secrets.clone(),
            mesh_services: self.spec.mesh_services.as_ref().and_then(|m| m.mode),
            passthrough: self
                .spec
                .networking
                .as_ref()
                .and_then(|n| n.outbound.as_ref())
                .and_then(|o| o.passthrough),
            // A snapshot is never changed once published, so its proxies share work.
            shared: Some(Arc::default()),
        };
        MeshSnapshot {
            spec: self.spec.clone(),
            context,
            ca: self.ca.clone(),
            encoded: self.encoded.clone(),
        }
    }
}

/// The Mesh's enabled legacy Prometheus backend; one whose `conf` does not read is left out
/// (and logged), as no proxy could be given it.
fn legacy_metrics(
    mesh: &str,
    spec: &MeshSpec,
) -> Option<model::specs::mesh::PrometheusMetricsConf> {
    match spec.prometheus_metrics()? {
        Ok(conf) => Some(conf),
        Err(e) => {
            tracing::warn!(%mesh, error = %e, "the Mesh's enabled metrics backend does not read as Prometheus's; not served");
            None
        }
    }
}

fn raw_policy(r: Resource) -> RawPolicy {
    RawPolicy {
        name: r.meta.name,
        labels: r.meta.labels,
        spec: r.spec,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;
    use serde_json::json;
    use std::time::Duration;
    use store::{MemoryStore, MeteredStore};

    fn dataplane(name: &str, service: &str) -> Resource {
        Resource::new(
            ResourceType::Dataplane,
            "default",
            name,
            json!({"networking": {"address": "10.0.0.1",
                "inbound": [{"port": 8080, "tags": {"kuma.io/service": service}}]}}),
        )
    }

    /// Store reads (gets and lists) so far, from the metered store's counters.
    fn reads(registry: &Registry) -> u64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text.lines()
            .filter(|l| l.starts_with("store_operations_total{"))
            .filter(|l| l.contains("operation=\"get\"") || l.contains("operation=\"list\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    async fn next(
        view: &mut watch::Receiver<ZoneView>,
        check: impl Fn(&ZoneView) -> bool,
    ) -> ZoneView {
        let seen = tokio::time::timeout(Duration::from_secs(5), view.wait_for(|v| check(v)))
            .await
            .expect("the cache published within 5 s")
            .unwrap();
        seen.clone()
    }

    #[tokio::test]
    async fn changes_reach_the_view_with_one_read_each() {
        let mut registry = Registry::default();
        let store: SharedStore = Arc::new(MeteredStore::new(
            Arc::new(MemoryStore::new()),
            &mut registry,
        ));
        for mesh in ["default", "other"] {
            store
                .create(Resource::new(ResourceType::Mesh, "", mesh, json!({})))
                .await
                .unwrap();
        }
        store.create(dataplane("web-1", "web")).await.unwrap();
        let mut view = start(store.clone(), "zone-1".into(), true);
        let first = next(&mut view, |v| v.ready).await;
        assert_eq!(first.meshes["default"].context.dataplanes.len(), 1);
        assert_eq!(first.meshes["other"].context.dataplanes.len(), 0);

        let before = reads(&registry);
        store
            .create(dataplane("backend-1", "backend"))
            .await
            .unwrap();
        let second = next(&mut view, |v| {
            v.meshes["default"].context.dataplanes.len() == 2
        })
        .await;
        assert_eq!(
            reads(&registry) - before,
            1,
            "one read for one changed Dataplane"
        );
        assert!(
            Arc::ptr_eq(&first.meshes["other"], &second.meshes["other"]),
            "another mesh's snapshot was rebuilt"
        );

        // A policy the plugins read, then its deletion.
        let mtp = Resource::new(
            ResourceType::MeshTrafficPermission,
            "default",
            "allow",
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}),
        );
        store.create(mtp.clone()).await.unwrap();
        next(&mut view, |v| {
            v.meshes["default"]
                .context
                .policies
                .of::<model::specs::policy::MeshTrafficPermissionSpec>()
                .len()
                == 1
        })
        .await;
        store.delete(&mtp.key()).await.unwrap();
        next(&mut view, |v| {
            v.meshes["default"]
                .context
                .policies
                .of::<model::specs::policy::MeshTrafficPermissionSpec>()
                .is_empty()
        })
        .await;

        // A Dataplane that does not parse is left out; the mesh's others stay.
        let mut broken = dataplane("broken", "x");
        broken.spec = json!({"networking": "not an object"});
        store.create(broken).await.unwrap();
        store
            .delete(&dataplane("web-1", "web").key())
            .await
            .unwrap();
        let after = next(&mut view, |v| {
            v.meshes["default"].context.dataplanes.len() == 1
                && v.meshes["default"].context.dataplanes[0].name == "backend-1"
        })
        .await;
        assert!(
            after.meshes["default"]
                .context
                .dataplane("broken")
                .is_none()
        );

        store
            .delete(&ResourceKey::new(ResourceType::Mesh, "", "other"))
            .await
            .unwrap();
        next(&mut view, |v| !v.meshes.contains_key("other")).await;
    }

    #[tokio::test]
    async fn zone_proxies_reach_every_mesh() {
        let store: SharedStore = Arc::new(MemoryStore::new());
        store
            .create(Resource::new(
                ResourceType::Mesh,
                "",
                "default",
                json!({"mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]},
                       "routing": {"zoneEgress": true}}),
            ))
            .await
            .unwrap();
        // mTLS without `zoneEgress`: its sidecars dial egresses only for MeshExternalServices.
        store
            .create(Resource::new(
                ResourceType::Mesh,
                "",
                "direct",
                json!({"mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}}),
            ))
            .await
            .unwrap();
        let mut view = start(store.clone(), "zone-1".into(), true);
        let first = next(&mut view, |v| v.ready).await;
        assert!(
            first.meshes["default"].ca.as_ref().unwrap().is_some(),
            "the builtin CA"
        );
        let remote = Resource::new(
            ResourceType::ZoneIngress,
            "",
            "zone-2-ingress",
            json!({"zone": "zone-2", "networking": {"address": "10.2.0.1", "port": 10001,
                   "advertisedAddress": "192.168.2.1", "advertisedPort": 10001},
                   "availableServices": [{"tags": {"kuma.io/service": "backend"}, "instances": 2, "mesh": "default"}]}),
        );
        store.create(remote).await.unwrap();
        let egress = Resource::new(
            ResourceType::ZoneEgress,
            "",
            "egress-1",
            json!({"zone": "zone-1", "networking": {"address": "10.1.0.9", "port": 10002}}),
        );
        store.create(egress).await.unwrap();
        let v = next(&mut view, |v| {
            let c = &v.meshes["default"].context;
            !c.remote_ingresses.is_empty() && !c.local_egresses.is_empty()
        })
        .await;
        let c = &v.meshes["default"].context;
        assert_eq!(c.remote_ingresses[0].address, "192.168.2.1");
        assert_eq!(c.local_egresses, vec![("10.1.0.9".to_string(), 10002)]);
        assert!(v.zone_proxies.egresses.contains_key("egress-1"));
        assert!(
            v.meshes["direct"].context.local_egresses.is_empty(),
            "no sidecar of the mesh dials an egress"
        );
        store
            .create(Resource::new(
                ResourceType::MeshExternalService,
                "direct",
                "httpbin",
                json!({"match": {"type": "HostnameGenerator", "port": 443, "protocol": "tcp"},
                       "endpoints": [{"address": "httpbin.org", "port": 443}]}),
            ))
            .await
            .unwrap();
        next(&mut view, |v| {
            v.meshes["direct"].context.local_egresses == [("10.1.0.9".to_string(), 10002)]
        })
        .await;
        store
            .delete(&ResourceKey::new(ResourceType::ZoneEgress, "", "egress-1"))
            .await
            .unwrap();
        next(&mut view, |v| {
            v.meshes["default"].context.local_egresses.is_empty()
        })
        .await;
    }
}
