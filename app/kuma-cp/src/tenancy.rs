//! `multitenancy.enabled` on global: what each replica of a hosted manager runs for one of its
//! control planes (`global::tenants` keeps the set), and the management API's view of them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api::control_planes::{ControlPlaneError, ControlPlaneKeys, ControlPlanes};
use global::kds_server::GlobalKds;
use global::tenants::{ControlPlane, RuntimeFactory, TenantError, TenantRuntime, Tenants};
use kds::inspect::ZoneAdminStreams;
use security::SigningKeys;
use store::SharedStore;
use tokio::sync::watch;

use crate::config::Config;
use crate::defaults;

/// One control plane on this replica: its KDS, its API, its keys. Dropping it stops its
/// leader work and the tasks its KDS started.
pub struct ControlPlaneRuntime {
    kds: Arc<GlobalKds>,
    api: axum::Router,
    user_keys: Arc<SigningKeys>,
    zone_keys: Arc<SigningKeys>,
    stop: watch::Sender<bool>,
}

impl TenantRuntime for ControlPlaneRuntime {
    fn kds(&self) -> &Arc<GlobalKds> {
        &self.kds
    }
}

impl Drop for ControlPlaneRuntime {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        // Streams hold the KDS service, so they would outlive this runtime unless told.
        self.kds.zones.shut();
    }
}

/// A control plane's leader election is this followed by its id.
pub const CONTROL_PLANE_ELECTION_PREFIX: &str = "kuma-cp-leader-cp-";

/// What every control plane on this replica shares.
pub struct Shared {
    pub config: Config,
    pub kds: global::KdsServerConfig,
    pub identity: global::GlobalIdentity,
    pub api_info: api::ServerInfo,
    pub api_metrics: api::ApiMetrics,
    /// Each control plane's leader among the replicas is elected on its own.
    pub elections: crate::backend::Elections,
}

pub fn factory(shared: Arc<Shared>) -> RuntimeFactory<ControlPlaneRuntime> {
    Box::new(move |cp, store| runtime(&shared, cp, store))
}

fn runtime(shared: &Shared, cp: &ControlPlane, store: SharedStore) -> ControlPlaneRuntime {
    let (stop, stopped) = watch::channel(false);
    let streams = Arc::new(ZoneAdminStreams::default());
    let kds = global::kds_service(
        &shared.kds,
        store.clone(),
        &shared.identity,
        streams.clone(),
    );
    let user_keys = Arc::new(security::user::user_signing_keys(store.clone()));
    let zone_keys = Arc::new(security::zone::zone_signing_keys(store.clone()));
    let state = api::ApiState {
        store: store.clone(),
        user_keys: user_keys.clone(),
        zone_keys: zone_keys.clone(),
        info: api::ServerInfo {
            cluster_id: cp.id.clone(),
            ..shared.api_info.clone()
        },
        // The manager's own settings (its store, its addresses) are not a tenant's business.
        config: serde_json::json!({"mode": "global", "controlPlaneId": cp.id}),
        // Tenants answer only to their own tokens: being on the manager's host makes no one
        // a tenant's admin.
        auth: api::AuthConfig {
            localhost_is_admin: false,
            anonymous_reads: false,
        },
        metrics: shared.api_metrics.clone(),
        federation: api::federation::Federation::Global,
        local_zone: None,
        origin_label_validation: true,
        proxy_admin: Some(Arc::new(global::inspect::ZoneProxies {
            store: store.clone(),
            streams,
        })),
        control_plane: cp.id.clone(),
        control_planes: None,
    };
    let api = api::router(Arc::new(state));

    // A control plane's own admin token is a personal access token the manager issues.
    let mut config = shared.config.clone();
    config.api_server.authn.tokens.bootstrap_admin_token = false;
    let (keys, id) = (user_keys.clone(), cp.id.clone());
    let (leader_tx, leader) = watch::channel(false);
    let elector = (shared.elections)(&format!("{CONTROL_PLANE_ELECTION_PREFIX}{}", cp.id));
    let (instance, campaign_stop) = (shared.identity.instance_id.clone(), stopped.clone());
    tokio::spawn(async move {
        elector.campaign(&instance, leader_tx, campaign_stop).await;
    });
    let work_stop = stopped.clone();
    let make: Box<dyn Fn() -> crate::components::Work + Send + Sync> = Box::new(move || {
        Box::pin(leader_work(
            config.clone(),
            store.clone(),
            keys.clone(),
            id.clone(),
            work_stop.clone(),
        ))
    });
    // As a leader-only component: each term it runs, retried on failure, dropped when the
    // term ends.
    tokio::spawn(crate::components::follow_leadership(
        "control-plane-leader-work",
        make,
        leader,
        stopped,
    ));
    ControlPlaneRuntime {
        kds,
        api,
        user_keys,
        zone_keys,
        stop,
    }
}

/// What the leader does for a control plane, as a global of its own does it: the defaults
/// (default mesh, signing keys), the zone keys' public halves for zones, the mesh CAs and
/// insight garbage collection.
async fn leader_work(
    config: Config,
    store: SharedStore,
    user_keys: Arc<SigningKeys>,
    id: String,
    stop: watch::Receiver<bool>,
) -> Result<(), crate::components::ComponentError> {
    defaults::ensure(&config, &store, &user_keys)
        .await
        .map_err(|e| {
            format!(
                "control plane {id}: creating its defaults: {}",
                model::error_chain(&e)
            )
        })?;
    let publish = {
        let store = store.clone();
        async move {
            if let Err(e) = security::zone::keep_public_keys_published(store).await {
                tracing::warn!(control_plane = %id, error = %e, "publishing zone token keys stopped");
            }
        }
    };
    tokio::join!(
        publish,
        global::mesh_ca::keep_mesh_cas(store.clone(), stop),
        defaults::collect_orphaned_insights(store, Duration::from_secs(30)),
    );
    Ok(())
}

/// The management API's view of the control planes.
pub struct Management(pub Arc<Tenants<ControlPlaneRuntime>>);

fn to_api(e: TenantError) -> ControlPlaneError {
    match e {
        TenantError::NotFound(id) => ControlPlaneError::NotFound(id),
        e @ (TenantError::NameTaken(_) | TenantError::BadName(_)) => ControlPlaneError::Invalid {
            field: "name",
            reason: e.to_string().trim_start_matches("name: ").to_string(),
        },
        TenantError::BadLabel(reason) => ControlPlaneError::Invalid {
            field: "labels",
            reason,
        },
        e @ (TenantError::Store(_) | TenantError::Corrupt { .. }) => {
            ControlPlaneError::Unavailable(Box::new(e))
        }
    }
}

fn to_json(cp: ControlPlane) -> Result<serde_json::Value, ControlPlaneError> {
    serde_json::to_value(cp).map_err(|e| ControlPlaneError::Unavailable(Box::new(e)))
}

#[async_trait::async_trait]
impl ControlPlanes for Management {
    async fn create(
        &self,
        name: &str,
        description: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<serde_json::Value, ControlPlaneError> {
        to_json(
            self.0
                .create(name, description, labels)
                .await
                .map_err(to_api)?,
        )
    }

    async fn list(&self) -> Result<Vec<serde_json::Value>, ControlPlaneError> {
        self.0
            .list()
            .await
            .map_err(to_api)?
            .into_iter()
            .map(to_json)
            .collect()
    }

    async fn get(&self, id: &str) -> Result<serde_json::Value, ControlPlaneError> {
        to_json(self.0.record(id).await.map_err(to_api)?)
    }

    async fn delete(&self, id: &str) -> Result<(), ControlPlaneError> {
        self.0.delete(id).await.map_err(to_api)
    }

    async fn api(&self, id: &str) -> Result<axum::Router, ControlPlaneError> {
        let runtime = self.0.serve(id).await.map_err(to_api)?;
        Ok(runtime.api.clone())
    }

    async fn keys(&self, id: &str) -> Result<ControlPlaneKeys, ControlPlaneError> {
        let runtime = self.0.serve(id).await.map_err(to_api)?;
        Ok(ControlPlaneKeys {
            user: runtime.user_keys.clone(),
            zone: runtime.zone_keys.clone(),
        })
    }
}
