//! The zone leader's service controller: MeshServices generated from Dataplanes, VIPs,
//! hostnames and status for MeshServices, MeshExternalServices and MeshMultiZoneServices.
//!
//! Kuma runs a generator, an IP allocator, a hostname generator and a status updater, each on
//! its own timer (2 s to 5 s) over a full listing. Here one task follows the store's events:
//! it loads everything it reads once, then reads only the keys that changed (skipping its own
//! writes, whose versions it already holds), recomputes the meshes they touch and writes each
//! service that differs, once. Changes that arrive while a pass runs make up the next pass.
//! The only clock is a deletion grace period's end.

pub mod hostname;
pub mod ipam;
pub mod reconcile;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use model::specs::mesh::MeshSpec;
use model::{Resource, ResourceKey, ResourceType, Timestamp};
use store::{ChangeEvent, ListQuery, Operation, SharedStore, StoreError};
use tokio::sync::{broadcast, watch};

use hostname::Generator;
use reconcile::{InsightFacts, MeshState, Outcome, Proxy, SERVICE_KINDS, Settings, Vips, Write};

pub use ipam::IpamError;

#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error("reading {0} from the store")]
    Read(String, #[source] StoreError),
}

#[derive(Debug, Clone)]
pub struct ServicesConfig {
    pub zone: String,
    /// `ipam.meshService.cidr`, `ipam.meshExternalService.cidr`, `ipam.meshMultiZoneService.cidr`.
    pub cidrs: [String; 3],
    /// `meshService.generationInterval` is Kuma's timer; a zero turns generation off, which
    /// is all it means here.
    pub generate: bool,
    pub deletion_grace_period: Duration,
}

/// What the controller follows.
const FOLLOWED: [ResourceType; 7] = [
    ResourceType::Mesh,
    ResourceType::Dataplane,
    ResourceType::DataplaneInsight,
    ResourceType::MeshService,
    ResourceType::MeshExternalService,
    ResourceType::MeshMultiZoneService,
    ResourceType::HostnameGenerator,
];

struct Controller {
    store: SharedStore,
    settings: Settings,
    cidrs: [String; 3],
    vips: Vips,
    meshes: BTreeMap<String, MeshState>,
    generators: BTreeMap<String, Resource>,
    generators_changed: bool,
    sorted_generators: Vec<Generator>,
    /// The version of every key held, so the controller's own writes are not read back.
    versions: HashMap<ResourceKey, u64>,
    wake_at: Option<Timestamp>,
    /// Problems already logged, so a standing one is logged once, not on every pass.
    reported: BTreeSet<String>,
}

/// Runs until `shutdown`; a store that fails is retried with backoff. Leader-only.
pub async fn run(store: SharedStore, config: ServicesConfig, mut shutdown: watch::Receiver<bool>) {
    let vips = match new_vips(&config.cidrs) {
        Ok(v) => v,
        Err(e) => {
            // The configuration is checked at start-up; this is a programming error.
            tracing::error!(error = %e, "service controller not started");
            return;
        }
    };
    let mut controller = Controller {
        store: store.clone(),
        settings: Settings {
            zone: config.zone,
            generate: config.generate,
            deletion_grace_period: config.deletion_grace_period,
        },
        cidrs: config.cidrs,
        vips,
        meshes: BTreeMap::new(),
        generators: BTreeMap::new(),
        generators_changed: false,
        sorted_generators: Vec::new(),
        versions: HashMap::new(),
        wake_at: None,
        reported: BTreeSet::new(),
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let events = store.subscribe();
        let outcome = tokio::select! {
            r = controller.follow(events) => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match outcome {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %model::error_chain(&e), "service controller: store failed; reloading");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

fn new_vips(cidrs: &[String; 3]) -> Result<Vips, IpamError> {
    Vips::new([&cidrs[0], &cidrs[1], &cidrs[2]])
}

impl Controller {
    /// Loads everything, then follows `events`; returns `Ok` when the store goes away.
    async fn follow(
        &mut self,
        mut events: broadcast::Receiver<ChangeEvent>,
    ) -> Result<(), ServicesError> {
        self.load().await?;
        loop {
            self.pass().await?;
            let first = match self.wake_at {
                Some(at) => {
                    // Just past the end, so the grace period has ended when the pass looks.
                    let wait = Timestamp::now().elapsed_until(at) + Duration::from_millis(1);
                    tokio::select! {
                        ev = events.recv() => Some(ev),
                        () = tokio::time::sleep(wait) => None,
                    }
                }
                None => Some(events.recv().await),
            };
            // The last operation on a key is what counts.
            let mut changed = BTreeMap::new();
            let mut next = first;
            loop {
                match next {
                    None => break,
                    Some(Ok(ev)) => {
                        // A delete carries the last version the resource had, which is
                        // the one held.
                        if FOLLOWED.contains(&ev.key.kind)
                            && (ev.op == Operation::Delete
                                || self.versions.get(&ev.key) != Some(&ev.version))
                        {
                            changed.insert(ev.key, ev.op);
                        }
                    }
                    Some(Err(broadcast::error::RecvError::Lagged(missed))) => {
                        tracing::warn!(
                            missed,
                            "service controller fell behind the store's events; reloading"
                        );
                        self.load().await?;
                        changed.clear();
                    }
                    Some(Err(broadcast::error::RecvError::Closed)) => return Ok(()),
                }
                // Everything already queued joins this pass.
                next = match events.try_recv() {
                    Ok(ev) => Some(Ok(ev)),
                    Err(broadcast::error::TryRecvError::Empty) => None,
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        Some(Err(broadcast::error::RecvError::Lagged(n)))
                    }
                    Err(broadcast::error::TryRecvError::Closed) => {
                        Some(Err(broadcast::error::RecvError::Closed))
                    }
                };
            }
            for (key, op) in changed {
                let unneeded = matches!(
                    key.kind,
                    ResourceType::Dataplane | ResourceType::DataplaneInsight
                ) && op != Operation::Delete
                    && self
                        .meshes
                        .get(&key.mesh)
                        .is_some_and(|m| !m.needs_proxies());
                if unneeded {
                    self.versions.remove(&key);
                    self.mesh(&key.mesh).mark_proxies_stale();
                    continue;
                }
                self.read(&key, op).await?;
            }
        }
    }

    async fn list(&self, kind: ResourceType) -> Result<Vec<Resource>, ServicesError> {
        Ok(self
            .store
            .list(&ListQuery::all(kind))
            .await
            .map_err(|e| ServicesError::Read(format!("every {kind}"), e))?
            .items)
    }

    async fn load(&mut self) -> Result<(), ServicesError> {
        self.meshes.clear();
        self.generators.clear();
        // Rebuilt from the statuses, as a new leader would.
        if let Ok(vips) = new_vips(&self.cidrs) {
            self.vips = vips;
        }
        self.versions.clear();
        for kind in FOLLOWED {
            for r in self.list(kind).await? {
                self.put(r, false);
            }
        }
        self.generators_changed = true;
        Ok(())
    }

    async fn read(&mut self, key: &ResourceKey, op: Operation) -> Result<(), ServicesError> {
        let current = if op == Operation::Delete {
            None
        } else {
            match self.store.get(key).await {
                Ok(r) => Some(r),
                Err(StoreError::NotFound(_)) => None,
                Err(e) => return Err(ServicesError::Read(key.to_string(), e)),
            }
        };
        match current {
            Some(r) => self.put(r, false),
            None => self.remove(key),
        }
        Ok(())
    }

    /// Holds `r`; `echo` is the controller's own write, which changes nothing the pass that
    /// made it did not already account for.
    fn put(&mut self, r: Resource, echo: bool) {
        let key = r.key();
        self.versions.insert(key.clone(), r.meta.version);
        match r.kind {
            ResourceType::HostnameGenerator => {
                self.generators.insert(key.name, r);
                self.generators_changed = true;
            }
            ResourceType::Mesh => {
                let spec: MeshSpec = serde_json::from_value(r.spec.clone()).unwrap_or_default();
                let mtls = spec.mtls_enabled();
                self.mesh(&key.name)
                    .set_mesh(spec.mesh_services.and_then(|m| m.mode), mtls);
            }
            ResourceType::Dataplane => {
                let mesh = self.mesh(&key.mesh);
                match Proxy::from_resource(&r) {
                    Some(p) => mesh.put_proxy(p),
                    None => mesh.remove_proxy(&key.name),
                }
            }
            ResourceType::DataplaneInsight => {
                self.mesh(&key.mesh)
                    .put_insight(&key.name, InsightFacts::from_resource(&r));
            }
            kind if SERVICE_KINDS.contains(&kind) => {
                self.vips.observe(&r);
                self.mesh(&key.mesh).put_service(r, echo);
            }
            _ => {}
        }
    }

    fn mesh(&mut self, name: &str) -> &mut MeshState {
        self.meshes
            .entry(name.to_string())
            .or_insert_with(|| MeshState::new(name))
    }

    fn remove(&mut self, key: &ResourceKey) {
        self.versions.remove(key);
        match key.kind {
            ResourceType::HostnameGenerator => {
                self.generators.remove(&key.name);
                self.generators_changed = true;
            }
            ResourceType::Mesh => {
                if let Some(mesh) = self.meshes.remove(&key.name) {
                    for k in mesh.service_keys() {
                        self.vips.forget(k);
                        self.versions.remove(k);
                    }
                }
            }
            kind => {
                let Some(mesh) = self.meshes.get_mut(&key.mesh) else {
                    return;
                };
                match kind {
                    ResourceType::Dataplane => mesh.remove_proxy(&key.name),
                    ResourceType::DataplaneInsight => mesh.remove_insight(&key.name),
                    _ => {
                        mesh.remove_service(key);
                        self.vips.forget(key);
                    }
                }
            }
        }
    }

    fn sort_generators(&mut self) {
        let mut gens: Vec<Generator> = self
            .generators
            .values()
            .filter_map(Generator::from_resource)
            .collect();
        hostname::sort(&mut gens);
        self.sorted_generators = gens;
    }

    /// Lists again the Dataplanes and insights of a mesh that did not need them and now does
    /// (it gained a MeshService or a generating mode).
    async fn refresh_proxies(&mut self, mesh: &str) -> Result<(), ServicesError> {
        let mut proxies = Vec::new();
        let mut insights = Vec::new();
        for kind in [ResourceType::Dataplane, ResourceType::DataplaneInsight] {
            let listed = self
                .store
                .list(&ListQuery::in_mesh(kind, mesh))
                .await
                .map_err(|e| ServicesError::Read(format!("the {kind}s of mesh {mesh}"), e))?;
            for r in listed.items {
                self.versions.insert(r.key(), r.meta.version);
                if kind == ResourceType::Dataplane {
                    proxies.extend(Proxy::from_resource(&r));
                } else {
                    insights.push((r.meta.name.clone(), InsightFacts::from_resource(&r)));
                }
            }
        }
        self.mesh(mesh).replace_proxies(proxies, insights);
        Ok(())
    }

    /// Recomputes what changed and writes what differs.
    async fn pass(&mut self) -> Result<(), ServicesError> {
        let stale: Vec<String> = self
            .meshes
            .iter()
            .filter(|(_, m)| m.proxies_stale())
            .map(|(n, _)| n.clone())
            .collect();
        for mesh in stale {
            self.refresh_proxies(&mesh).await?;
        }
        if std::mem::take(&mut self.generators_changed) {
            self.sort_generators();
            for mesh in self.meshes.values_mut() {
                mesh.mark_all();
            }
        }
        let now = Timestamp::now();
        let grace = self.settings.deletion_grace_period;
        let names: Vec<String> = self.meshes.keys().cloned().collect();
        let mut problems = BTreeSet::new();
        for name in names {
            let Some(mesh) = self.meshes.get_mut(&name) else {
                continue;
            };
            mesh.mark_expired(now, grace);
            if !mesh.is_dirty() {
                continue;
            }
            let Outcome {
                writes,
                problems: found,
            } = reconcile::reconcile(
                mesh,
                &self.sorted_generators,
                &mut self.vips,
                &self.settings,
                now,
            );
            problems.extend(found);
            for write in writes {
                self.write(write).await?;
            }
        }
        for p in problems.difference(&self.reported) {
            tracing::warn!("{p}");
        }
        self.reported = problems;
        self.wake_at = self
            .meshes
            .values()
            .filter_map(|m| m.next_deadline(grace))
            .min();
        Ok(())
    }

    /// One write; a conflict means someone else wrote first, and their event brings the
    /// resource back for another pass.
    async fn write(&mut self, write: Write) -> Result<(), ServicesError> {
        let result = match write {
            Write::Create(r) => {
                let (kind, name) = (r.kind, r.meta.name.clone());
                match self.store.create(r).await {
                    Ok(stored) => {
                        tracing::info!(%kind, name, mesh = %stored.meta.mesh, "created");
                        Ok(Some(stored))
                    }
                    Err(e) => Err(e),
                }
            }
            Write::Update(r) => self.store.update(r).await.map(Some),
            Write::Delete(key) => match self.store.delete(&key).await {
                Ok(()) => {
                    tracing::info!(kind = %key.kind, name = key.name, mesh = key.mesh, "deleted");
                    self.remove(&key);
                    Ok(None)
                }
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(Some(stored)) => self.put(stored, true),
            Ok(None) => {}
            Err(
                StoreError::Conflict { .. }
                | StoreError::AlreadyExists(_)
                | StoreError::NotFound(_)
                | StoreError::MeshNotFound(_),
            ) => {}
            Err(e) => return Err(ServicesError::Read("a service write".into(), e)),
        }
        Ok(())
    }
}
