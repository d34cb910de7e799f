//! A hosted manager: many tenants' global control planes in one process and one store, behind
//! one KDS endpoint (`multitenancy.enabled` on a global).
//!
//! A tenant is a *control plane*. Its record is a `Config` resource in the manager's own scope
//! (`mesh-control-plane-{id}`), so every replica learns of a new or deleted control plane from
//! the store's events, whichever replica's API took the request. Each replica runs a
//! [`TenantRuntime`] per live control plane over the control plane's scope of the store
//! ([`store::tenant`]): its KDS service, its API, and, on the leader, its defaults and CAs.
//! A zone's token names its control plane ([`security::zone::ZoneClaims::control_plane`]);
//! [`ManagerKds`] hands the zone's streams to that control plane's KDS, which verifies the
//! token with that control plane's own keys.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use model::specs::secret::ConfigSpec;
use model::{Resource, ResourceKey, ResourceType, Timestamp};
use proto::kuma::mesh::v1alpha1::global_kds_service_server::GlobalKdsService;
use proto::kuma::mesh::v1alpha1::kds_sync_service_server::KdsSyncService;
use proto::kuma::mesh::v1alpha1::{
    ClustersResponse, StatsResponse, XdsConfigResponse, ZoneHealthCheckRequest,
    ZoneHealthCheckResponse,
};
use serde::{Deserialize, Serialize};
use store::tenant::TenantStores;
use store::{ListQuery, SharedStore, StoreError};
use tonic::{Request, Response, Status, Streaming};

use crate::kds_server::GlobalKds;

/// The manager-scope `Config` resources that hold control plane records.
pub const RECORD_PREFIX: &str = "mesh-control-plane-";
/// Konnect's limit on a control plane's name.
pub const MAX_NAME_LEN: usize = 100;

/// A control plane as the management API shows it (Konnect's field names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlPlane {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// From the record's own timestamps; not part of what is stored.
    #[serde(default, skip_deserializing)]
    pub created_at: Timestamp,
    #[serde(default, skip_deserializing)]
    pub updated_at: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("control plane {0:?} not found")]
    NotFound(String),
    #[error("name: a control plane named {0:?} already exists")]
    NameTaken(String),
    #[error("name: {0}")]
    BadName(&'static str),
    #[error("labels: {0}")]
    BadLabel(String),
    #[error("the control planes' records")]
    Store(#[source] StoreError),
    #[error("control plane record {name} is malformed")]
    Corrupt {
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// What a replica runs for one live control plane. Dropping it stops its work.
pub trait TenantRuntime: Send + Sync + 'static {
    /// The control plane's KDS, to which its zones' streams are handed.
    fn kds(&self) -> &Arc<GlobalKds>;
}

/// Builds a control plane's runtime over its scope of the store.
pub type RuntimeFactory<R> = Box<dyn Fn(&ControlPlane, SharedStore) -> R + Send + Sync>;

/// The control planes this replica serves, kept in step with their records.
pub struct Tenants<R> {
    stores: Arc<TenantStores>,
    live: RwLock<HashMap<String, Arc<R>>>,
    /// Control planes this replica saw deleted.
    deleted: RwLock<HashSet<String>>,
    factory: RuntimeFactory<R>,
}

/// How often a replica sweeps deleted control planes' leftovers.
const SWEEP_EVERY: Duration = Duration::from_secs(300);
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);

fn record_name(id: &str) -> String {
    format!("{RECORD_PREFIX}{id}")
}

fn record_key(id: &str) -> ResourceKey {
    ResourceKey::new(ResourceType::Config, "", record_name(id))
}

fn decode(r: Resource) -> Result<ControlPlane, TenantError> {
    let corrupt = |source| TenantError::Corrupt {
        name: r.meta.name.clone(),
        source,
    };
    let spec: ConfigSpec = serde_json::from_value(r.spec.clone()).map_err(corrupt)?;
    let mut cp: ControlPlane = serde_json::from_str(&spec.config).map_err(corrupt)?;
    cp.created_at = r.meta.creation_time;
    cp.updated_at = r.meta.modification_time;
    Ok(cp)
}

fn check_name(name: &str) -> Result<(), TenantError> {
    if name.trim().is_empty() {
        return Err(TenantError::BadName("must not be empty"));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(TenantError::BadName("must be at most 100 characters long"));
    }
    if name.chars().any(char::is_control) {
        return Err(TenantError::BadName("must not contain control characters"));
    }
    Ok(())
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), TenantError> {
    for (k, v) in labels {
        if let Some(reason) = model::resource::label_key_violation(k) {
            return Err(TenantError::BadLabel(format!("{k:?}: {reason}")));
        }
        if v.len() > 63 {
            return Err(TenantError::BadLabel(format!(
                "{k:?}: value must be at most 63 characters long"
            )));
        }
    }
    Ok(())
}

impl<R: TenantRuntime> Tenants<R> {
    pub fn new(stores: Arc<TenantStores>, factory: RuntimeFactory<R>) -> Arc<Self> {
        Arc::new(Tenants {
            stores,
            live: RwLock::new(HashMap::new()),
            deleted: RwLock::new(HashSet::new()),
            factory,
        })
    }

    fn base(&self) -> &SharedStore {
        self.stores.base()
    }

    /// A live control plane's runtime on this replica.
    pub fn get(&self, id: &str) -> Option<Arc<R>> {
        self.live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// The control plane's runtime, started here first when its record was written (on another
    /// replica) so recently that this replica has not seen the record's event yet: behind a
    /// load balancer, a call right after the create must not find it missing.
    pub async fn serve(&self, id: &str) -> Result<Arc<R>, TenantError> {
        if let Some(runtime) = self.get(id) {
            return Ok(runtime);
        }
        let cp = self.record(id).await?;
        self.start(&cp);
        self.get(id)
            .ok_or_else(|| TenantError::NotFound(id.to_string()))
    }

    /// Keeps this replica's runtimes in step with the records until the store goes away: one
    /// for each record, started when it appears (on any replica), dropped when it goes. A
    /// failed read is retried with backoff; what deleted control planes left behind (a purge
    /// that failed or was cut short, a write racing it) is swept now and then.
    pub async fn follow(self: Arc<Self>) {
        let mut events = self.base().subscribe();
        let mut retry = RETRY_FIRST;
        // Swept once the records are served (a full scan must not delay that), then now and
        // then.
        let mut swept: Option<tokio::time::Instant> = None;
        loop {
            let wait = match self.reconcile_all().await {
                Ok(()) => {
                    retry = RETRY_FIRST;
                    if swept.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
                        self.sweep().await;
                        swept = Some(tokio::time::Instant::now());
                    }
                    SWEEP_EVERY.saturating_sub(swept.map_or(Duration::ZERO, |at| at.elapsed()))
                }
                Err(e) => {
                    tracing::warn!(error = %model::error_chain(&e), retry_in = ?retry, "reading the control planes failed");
                    retry = (retry * 2).min(RETRY_MAX);
                    retry / 2
                }
            };
            let record = |e: &store::ChangeEvent| {
                e.key.kind == ResourceType::Config && e.key.name.starts_with(RECORD_PREFIX)
            };
            tokio::select! {
                open = store::next_change(&mut events, record) => if !open { return },
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Purges the data of tenants that have no record. Data is scanned before records are
    /// read: a record is written before any of its tenant's data, so a control plane being
    /// created meanwhile is seen and kept.
    async fn sweep(&self) {
        let with_data = match self.stores.tenants_with_data().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "sweeping deleted control planes' data: listing failed");
                return;
            }
        };
        let Ok(records) = self.records().await else {
            return;
        };
        for id in with_data {
            if records.iter().any(|cp| cp.id == id) {
                continue;
            }
            self.tombstone(&id);
            match self.stores.purge(&id).await {
                Ok(n) => tracing::info!(%id, resources = n, "swept a deleted control plane's data"),
                Err(e) => {
                    tracing::warn!(%id, error = %e, "sweeping a deleted control plane's data failed")
                }
            }
        }
    }

    /// The control planes' records; a malformed one is logged and left out, so it cannot stop
    /// the others from being served.
    async fn records(&self) -> Result<Vec<ControlPlane>, TenantError> {
        let page = self
            .base()
            .list(&ListQuery {
                name_contains: Some(RECORD_PREFIX.into()),
                ..ListQuery::all(ResourceType::Config)
            })
            .await
            .map_err(TenantError::Store)?;
        Ok(page
            .items
            .into_iter()
            .filter(|r| r.meta.name.starts_with(RECORD_PREFIX) && !r.meta.name.contains('/'))
            .filter_map(|r| match decode(r) {
                Ok(cp) => Some(cp),
                Err(e) => {
                    tracing::warn!(error = %model::error_chain(&e), "a control plane record cannot be read; it is not served");
                    None
                }
            })
            .collect())
    }

    async fn reconcile_all(&self) -> Result<(), TenantError> {
        let records = self.records().await?;
        let wanted: HashMap<&str, &ControlPlane> =
            records.iter().map(|cp| (cp.id.as_str(), cp)).collect();
        let gone: Vec<String> = {
            let live = self.live.read().unwrap_or_else(|p| p.into_inner());
            live.keys()
                .filter(|id| !wanted.contains_key(id.as_str()))
                .cloned()
                .collect()
        };
        for id in gone {
            self.stop(&id).await;
        }
        for cp in records.iter() {
            self.start(cp);
        }
        Ok(())
    }

    fn start(&self, cp: &ControlPlane) {
        if self
            .deleted
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&cp.id)
        {
            // A read from before its deletion: ids are never reused, so it stays deleted.
            return;
        }
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        if live.contains_key(&cp.id) {
            return;
        }
        let runtime = (self.factory)(cp, self.stores.scope(&cp.id));
        live.insert(cp.id.clone(), Arc::new(runtime));
        tracing::info!(id = %cp.id, name = %cp.name, "serving control plane");
    }

    /// Remembers that `id` was deleted, so no late read of its record starts it again.
    fn tombstone(&self, id: &str) {
        self.deleted
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string());
    }

    /// Drops the runtime and whatever of the control plane's data is left (a write its
    /// runtime made while the deleting replica purged it).
    async fn stop(&self, id: &str) {
        self.tombstone(id);
        let runtime = self
            .live
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if runtime.is_none() {
            // Already stopped here (the deleting call and the record's event both stop it).
            return;
        }
        tracing::info!(%id, "control plane deleted; its zones are disconnected");
        drop(runtime);
        if let Err(e) = self.stores.purge(id).await {
            tracing::warn!(%id, error = %e, "removing a deleted control plane's resources failed; the next sweep retries");
        }
    }

    pub async fn create(
        &self,
        name: &str,
        description: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<ControlPlane, TenantError> {
        check_name(name)?;
        check_labels(&labels)?;
        if self.records().await?.iter().any(|cp| cp.name == name) {
            return Err(TenantError::NameTaken(name.to_string()));
        }
        let cp = ControlPlane {
            id: security::random_uuid(),
            name: name.to_string(),
            description: description.to_string(),
            labels,
            created_at: Timestamp::default(),
            updated_at: Timestamp::default(),
        };
        let spec = ConfigSpec {
            config: serde_json::to_string(&cp).map_err(|source| TenantError::Corrupt {
                name: record_name(&cp.id),
                source,
            })?,
        };
        let spec = serde_json::to_value(spec).map_err(|source| TenantError::Corrupt {
            name: record_name(&cp.id),
            source,
        })?;
        let stored = self
            .base()
            .create(Resource::new(
                ResourceType::Config,
                "",
                &record_name(&cp.id),
                spec,
            ))
            .await
            .map_err(TenantError::Store)?;
        let cp = decode(stored)?;
        // Served here at once; other replicas start it from the record's event.
        self.start(&cp);
        Ok(cp)
    }

    pub async fn list(&self) -> Result<Vec<ControlPlane>, TenantError> {
        let mut all = self.records().await?;
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(all)
    }

    pub async fn record(&self, id: &str) -> Result<ControlPlane, TenantError> {
        match self.base().get(&record_key(id)).await {
            Ok(r) => decode(r),
            Err(StoreError::NotFound(_)) => Err(TenantError::NotFound(id.to_string())),
            Err(e) => Err(TenantError::Store(e)),
        }
    }

    /// Deletes a control plane: its record (every replica then drops its runtime), then all
    /// its resources, whose Zones going disconnects its zones.
    pub async fn delete(&self, id: &str) -> Result<(), TenantError> {
        match self.base().delete(&record_key(id)).await {
            Ok(()) => {}
            Err(StoreError::NotFound(_)) => return Err(TenantError::NotFound(id.to_string())),
            Err(e) => return Err(TenantError::Store(e)),
        }
        self.stop(id).await;
        // Whether or not this replica was serving it (the record's event may have stopped it
        // first), its data goes now.
        self.stores.purge(id).await.map_err(TenantError::Store)?;
        Ok(())
    }
}

/// The manager's one KDS endpoint: each stream goes to the control plane its zone token
/// names, whose own KDS then checks the token with that control plane's keys.
pub struct ManagerKds<R> {
    pub tenants: Arc<Tenants<R>>,
}

impl<R: TenantRuntime> ManagerKds<R> {
    async fn route<T>(&self, req: &Request<T>) -> Result<Arc<R>, Status> {
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated(
                    "this manager requires a zone token: issue one with POST /v0/mesh/control-planes/{id}/zone-tokens \
                     and give it to the zone in KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_INLINE or _PATH",
                )
            })?;
        let id = security::zone::claimed_control_plane(token)
            .map_err(|e| Status::unauthenticated(format!("zone token refused: {e}")))?;
        if id.is_empty() {
            return Err(Status::unauthenticated(
                "zone token refused: it names no control plane; issue it with POST /v0/mesh/control-planes/{id}/zone-tokens",
            ));
        }
        self.tenants.serve(&id).await.map_err(|e| match e {
            TenantError::NotFound(_) => Status::unauthenticated(format!(
                "zone token refused: control plane {id:?} does not exist on this manager (deleted?)"
            )),
            e => Status::unavailable(format!(
                "control plane {id:?} cannot be served now: {}",
                model::error_chain(&e)
            )),
        })
    }
}

#[tonic::async_trait]
impl<R: TenantRuntime> KdsSyncService for ManagerKds<R> {
    type GlobalToZoneSyncStream = <GlobalKds as KdsSyncService>::GlobalToZoneSyncStream;
    type ZoneToGlobalSyncStream = <GlobalKds as KdsSyncService>::ZoneToGlobalSyncStream;

    async fn global_to_zone_sync(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::GlobalToZoneSyncStream>, Status> {
        let tenant = self.route(&request).await?;
        tenant.kds().global_to_zone_sync(request).await
    }

    async fn zone_to_global_sync(
        &self,
        request: Request<Streaming<DeltaDiscoveryResponse>>,
    ) -> Result<Response<Self::ZoneToGlobalSyncStream>, Status> {
        let tenant = self.route(&request).await?;
        tenant.kds().zone_to_global_sync(request).await
    }
}

#[tonic::async_trait]
impl<R: TenantRuntime> GlobalKdsService for ManagerKds<R> {
    type StreamXDSConfigsStream = <GlobalKds as GlobalKdsService>::StreamXDSConfigsStream;
    type StreamStatsStream = <GlobalKds as GlobalKdsService>::StreamStatsStream;
    type StreamClustersStream = <GlobalKds as GlobalKdsService>::StreamClustersStream;

    async fn stream_xds_configs(
        &self,
        request: Request<Streaming<XdsConfigResponse>>,
    ) -> Result<Response<Self::StreamXDSConfigsStream>, Status> {
        let tenant = self.route(&request).await?;
        tenant.kds().stream_xds_configs(request).await
    }

    async fn stream_stats(
        &self,
        request: Request<Streaming<StatsResponse>>,
    ) -> Result<Response<Self::StreamStatsStream>, Status> {
        let tenant = self.route(&request).await?;
        tenant.kds().stream_stats(request).await
    }

    async fn stream_clusters(
        &self,
        request: Request<Streaming<ClustersResponse>>,
    ) -> Result<Response<Self::StreamClustersStream>, Status> {
        let tenant = self.route(&request).await?;
        tenant.kds().stream_clusters(request).await
    }

    async fn health_check(
        &self,
        request: Request<ZoneHealthCheckRequest>,
    ) -> Result<Response<ZoneHealthCheckResponse>, Status> {
        let tenant = self.route(&request).await?;
        tenant.kds().health_check(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Runtime(Arc<GlobalKds>);

    impl TenantRuntime for Runtime {
        fn kds(&self) -> &Arc<GlobalKds> {
            &self.0
        }
    }

    fn factory() -> RuntimeFactory<Runtime> {
        let config = crate::KdsServerConfig {
            port: 0,
            max_message: 4 * 1024 * 1024,
            tls: false,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            zone_tokens: true,
            metrics: None,
        };
        let identity = crate::GlobalIdentity {
            hostname: "manager".into(),
            instance_id: "manager-1".into(),
            version: "2.14.0".into(),
        };
        Box::new(move |_, store| {
            Runtime(crate::kds_service(
                &config,
                store,
                &identity,
                Arc::default(),
            ))
        })
    }

    fn manager() -> (Arc<TenantStores>, Arc<Tenants<Runtime>>) {
        let stores = TenantStores::new(Arc::new(store::MemoryStore::new()));
        let tenants = Tenants::new(stores.clone(), factory());
        (stores, tenants)
    }

    #[tokio::test]
    async fn control_planes_are_created_listed_and_deleted_with_their_data() {
        let (stores, tenants) = manager();
        let a = tenants
            .create(
                "tenant-a",
                "",
                BTreeMap::from([("team".into(), "a".into())]),
            )
            .await
            .unwrap();
        assert!(matches!(
            tenants.create("tenant-a", "", BTreeMap::new()).await,
            Err(TenantError::NameTaken(_))
        ));
        assert!(matches!(
            tenants.create(" ", "", BTreeMap::new()).await,
            Err(TenantError::BadName(_))
        ));
        assert!(matches!(
            tenants
                .create("x", "", BTreeMap::from([("-bad".into(), "v".into())]))
                .await,
            Err(TenantError::BadLabel(_))
        ));
        let b = tenants
            .create("tenant-b", "", BTreeMap::new())
            .await
            .unwrap();
        let names: Vec<String> = tenants
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|cp| cp.name)
            .collect();
        assert_eq!(names, ["tenant-a", "tenant-b"]);
        assert_eq!(tenants.record(&a.id).await.unwrap().labels["team"], "a");
        assert!(tenants.get(&a.id).is_some());

        let scope = stores.scope(&a.id);
        scope
            .create(Resource::new(
                ResourceType::Mesh,
                "",
                "default",
                serde_json::json!({}),
            ))
            .await
            .unwrap();
        tenants.delete(&a.id).await.unwrap();
        assert!(tenants.get(&a.id).is_none());
        assert!(matches!(
            tenants.record(&a.id).await,
            Err(TenantError::NotFound(_))
        ));
        assert!(matches!(
            tenants.delete(&a.id).await,
            Err(TenantError::NotFound(_))
        ));
        let meshes = stores
            .base()
            .list(&ListQuery::all(ResourceType::Mesh))
            .await
            .unwrap();
        assert_eq!(meshes.total, 0, "{:?}", meshes.items);
        assert!(tenants.get(&b.id).is_some());
    }

    #[tokio::test]
    async fn leftovers_of_deleted_control_planes_are_swept() {
        let (stores, tenants) = manager();
        let mesh = || Resource::new(ResourceType::Mesh, "", "default", serde_json::json!({}));
        // A purge that never finished: data without a record.
        stores.scope("gone").create(mesh()).await.unwrap();
        let kept = tenants.create("kept", "", BTreeMap::new()).await.unwrap();
        stores.scope(&kept.id).create(mesh()).await.unwrap();
        tokio::spawn(tenants.clone().follow());
        let meshes = || async {
            let all = stores
                .base()
                .list(&ListQuery::all(ResourceType::Mesh))
                .await
                .unwrap();
            all.items
                .into_iter()
                .map(|m| m.meta.name)
                .collect::<Vec<_>>()
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            while meshes().await.len() != 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(meshes().await, [format!("{}/default", kept.id)]);
    }

    #[tokio::test]
    async fn a_replica_follows_the_records_another_replica_writes() {
        let (stores, tenants) = manager();
        // A second replica on the same backend.
        let follower = Tenants::new(stores.clone(), factory());
        tokio::spawn(follower.clone().follow());
        let a = tenants
            .create("tenant-a", "", BTreeMap::new())
            .await
            .unwrap();
        let live = || follower.get(&a.id).is_some();
        tokio::time::timeout(Duration::from_secs(5), async {
            while !live() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        tenants.delete(&a.id).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while live() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_replica_serves_a_control_plane_before_the_records_event_reaches_it() {
        let (stores, tenants) = manager();
        // A replica that has not followed the records yet: only a read of the record tells it.
        let lagging = Tenants::new(stores.clone(), factory());
        let a = tenants
            .create("tenant-a", "", BTreeMap::new())
            .await
            .unwrap();
        assert!(lagging.get(&a.id).is_none());
        assert!(lagging.serve(&a.id).await.is_ok());
        assert!(lagging.get(&a.id).is_some());
        assert!(matches!(
            lagging.serve("no-such-id").await,
            Err(TenantError::NotFound(_))
        ));
        tenants.delete(&a.id).await.unwrap();
        lagging.stop(&a.id).await;
        assert!(matches!(
            lagging.serve(&a.id).await,
            Err(TenantError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_stream_goes_to_the_control_plane_its_token_names() {
        let (stores, tenants) = manager();
        let a = tenants
            .create("tenant-a", "", BTreeMap::new())
            .await
            .unwrap();
        let keys = security::zone::zone_signing_keys(stores.scope(&a.id));
        keys.ensure_key().await.unwrap();
        let hour = Duration::from_secs(3600);
        let token_of = |cp: &str| {
            let (keys, cp) = (&keys, cp.to_string());
            async move {
                security::zone::issue_control_plane_zone_token(keys, &cp, "zone-1", &[], hour)
                    .await
                    .unwrap()
            }
        };
        let kds = ManagerKds {
            tenants: tenants.clone(),
        };
        let request = |token: Option<String>| {
            let mut r = Request::new(());
            if let Some(t) = token {
                r.metadata_mut()
                    .insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
            r
        };
        let refusal = |r: Result<Arc<Runtime>, Status>| match r {
            Ok(_) => panic!("routed"),
            Err(s) => (s.code(), s.message().to_string()),
        };
        let (code, message) = refusal(kds.route(&request(None)).await);
        assert_eq!(code, tonic::Code::Unauthenticated);
        assert!(message.contains("requires a zone token"), "{message}");
        let (_, message) = refusal(kds.route(&request(Some(token_of("").await))).await);
        assert!(message.contains("names no control plane"), "{message}");
        let (_, message) = refusal(kds.route(&request(Some(token_of("gone").await))).await);
        assert!(message.contains("\"gone\" does not exist"), "{message}");
        assert!(
            kds.route(&request(Some(token_of(&a.id).await)))
                .await
                .is_ok()
        );
    }
}
