//! What a fresh control plane creates (leader-only), what every replica waits for, and the
//! leader's garbage collection of insights whose owners are gone.

use std::time::Duration;

use model::specs::secret::ConfigSpec;
use model::{Resource, ResourceKey, ResourceType};
use store::{ListQuery, SharedStore, StoreError};

use crate::config::{Config, Mode};

#[derive(Debug, thiserror::Error)]
pub enum DefaultsError {
    #[error("creating {0}")]
    Store(&'static str, #[source] StoreError),
    #[error("{0}")]
    Keys(&'static str, #[source] security::TokenError),
    #[error("the default mesh's defaults")]
    MeshDefaults(#[source] api::mesh_defaults::MeshDefaultsError),
    #[error("encoding the cluster id")]
    Encode(#[source] serde_json::Error),
}

pub const CLUSTER_ID_CONFIG: &str = "kuma-cluster-id";
/// The MeshTrafficPermission created with the default mesh.
pub const DEFAULT_ALLOW_ALL: &str = "allow-all-default";

/// The default mesh, the user-token signing key, the admin token and the cluster id. Each step
/// tolerates a concurrent creator, so a leader handover mid-way is harmless.
pub async fn ensure(
    config: &Config,
    store: &SharedStore,
    user_keys: &security::SigningKeys,
) -> Result<(), DefaultsError> {
    // A zone connected to global gets its meshes from global.
    let federated_zone =
        config.mode == Mode::Zone && !config.multizone.zone.global_address.is_empty();
    // Kuma's computed labels name the zone on a zone control plane; a standalone's resources
    // get them when it joins a federation under its zone name.
    let local_zone = (config.mode == Mode::Zone).then_some(config.multizone.zone.name.as_str());
    if !config.defaults.skip_mesh_creation && !federated_zone {
        let mut mesh = Resource::new(ResourceType::Mesh, "", "default", serde_json::json!({}));
        model::labels::compute(&mut mesh, local_zone);
        match store.create(mesh).await {
            Ok(mesh) => {
                tracing::info!("created Mesh \"default\"");
                api::mesh_defaults::ensure(store, &mesh, local_zone)
                    .await
                    .map_err(DefaultsError::MeshDefaults)?;
                // As Kuma does for the default mesh: traffic keeps flowing when mTLS is turned
                // on, until the operator narrows it. Only with the mesh, so a deleted policy
                // stays deleted across restarts.
                let allow_all = serde_json::json!({
                    "targetRef": {"kind": "Mesh"},
                    "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]
                });
                let mut allow_all = Resource::new(
                    ResourceType::MeshTrafficPermission,
                    "default",
                    DEFAULT_ALLOW_ALL,
                    allow_all,
                );
                model::labels::compute(&mut allow_all, local_zone);
                match store.create(allow_all).await {
                    Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
                    Err(e) => {
                        return Err(DefaultsError::Store(
                            "the default mesh's allow-all permission",
                            e,
                        ));
                    }
                }
            }
            Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(DefaultsError::Store("the default mesh", e)),
        }
    }
    user_keys
        .ensure_key()
        .await
        .map_err(|e| DefaultsError::Keys("creating the user token signing key", e))?;
    // Zone tokens are issued where zones (and their proxies) are accepted: global, or a
    // standalone CP that may become a global's zone later and keep its proxies' tokens.
    if config.mode != Mode::Zone {
        security::zone::zone_signing_keys(store.clone())
            .ensure_key()
            .await
            .map_err(|e| DefaultsError::Keys("creating the zone token signing key", e))?;
    }
    // The zone-key-publisher component publishes the keys' public halves (run.rs).
    if config.api_server.authn.tokens.bootstrap_admin_token
        && security::user::bootstrap_admin_token(store, user_keys)
            .await
            .map_err(|e| DefaultsError::Keys("bootstrapping the admin token", e))?
    {
        tracing::info!(
            "admin user token stored in GlobalSecret \"admin-user-token\"; read it on this host with: \
             curl -s http://localhost:{}/globalsecrets/admin-user-token | jq -r .data | base64 -d",
            config.api_server.http.port
        );
    }
    ensure_hostname_generators(config, store).await?;
    let spec = serde_json::to_value(ConfigSpec {
        config: security::random_uuid(),
    })
    .map_err(DefaultsError::Encode)?;
    match store
        .create(Resource::new(
            ResourceType::Config,
            "",
            CLUSTER_ID_CONFIG,
            spec,
        ))
        .await
    {
        Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(DefaultsError::Store("the cluster id", e)),
    }
}

/// Kuma's default HostnameGenerators (its `pkg/defaults/hostname_generator.go`): on global,
/// names for what other zones provide (`backend.svc.zone-2.mesh.local`); on a zone or a
/// standalone control plane, names for its own services (`backend.svc.mesh.local`). An
/// existing generator of the same name is left as the operator made it.
async fn ensure_hostname_generators(
    config: &Config,
    store: &SharedStore,
) -> Result<(), DefaultsError> {
    if config.defaults.skip_hostname_generators {
        return Ok(());
    }
    let synced = |labels: serde_json::Value| serde_json::json!({"matchLabels": labels});
    let generators: Vec<(&str, serde_json::Value, bool)> = if config.mode == Mode::Global {
        vec![
            (
                "synced-mesh-multi-zone-service",
                serde_json::json!({"template": "{{ .DisplayName }}.mzsvc.mesh.local",
                    "selector": {"meshMultiZoneService": synced(serde_json::json!({"kuma.io/origin": "global"}))}}),
                false,
            ),
            (
                "synced-kube-mesh-service",
                serde_json::json!({"template": "{{ .DisplayName }}.{{ .Namespace }}.svc.{{ .Zone }}.mesh.local",
                    "selector": {"meshService": synced(serde_json::json!({
                        "kuma.io/origin": "global", "k8s.kuma.io/is-headless-service": "false", "kuma.io/env": "kubernetes"}))}}),
                false,
            ),
            (
                "synced-headless-kube-mesh-service",
                serde_json::json!({"template": "{{ label \"statefulset.kubernetes.io/pod-name\" }}.{{ label \"k8s.kuma.io/service-name\" }}.{{ .Namespace }}.svc.{{ .Zone }}.mesh.local",
                    "selector": {"meshService": synced(serde_json::json!({
                        "kuma.io/origin": "global", "k8s.kuma.io/is-headless-service": "true", "kuma.io/env": "kubernetes"}))}}),
                false,
            ),
            (
                "synced-universal-mesh-service",
                serde_json::json!({"template": "{{ .DisplayName }}.svc.{{ .Zone }}.mesh.local",
                    "selector": {"meshService": synced(serde_json::json!({"kuma.io/origin": "global", "kuma.io/env": "universal"}))}}),
                false,
            ),
            (
                "synced-mesh-external-service",
                serde_json::json!({"template": "{{ .DisplayName }}.extsvc.mesh.local",
                    "selector": {"meshExternalService": synced(serde_json::json!({"kuma.io/origin": "global"}))}}),
                false,
            ),
        ]
    } else {
        vec![
            (
                "local-mesh-external-service",
                serde_json::json!({"template": "{{ .DisplayName }}.extsvc.mesh.local",
                    "selector": {"meshExternalService": synced(serde_json::json!({"kuma.io/origin": "zone"}))}}),
                true,
            ),
            (
                "local-universal-mesh-service",
                serde_json::json!({"template": "{{ .DisplayName }}.svc.mesh.local",
                    "selector": {"meshService": synced(serde_json::json!({"kuma.io/origin": "zone"}))}}),
                true,
            ),
        ]
    };
    for (name, spec, zone_labelled) in generators {
        let mut r = Resource::new(ResourceType::HostnameGenerator, "", name, spec);
        if zone_labelled {
            r.meta
                .labels
                .insert(model::labels::ORIGIN.into(), "zone".into());
        }
        match store.create(r).await {
            Ok(_) => tracing::info!(name, "created HostnameGenerator"),
            Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(DefaultsError::Store("a default HostnameGenerator", e)),
        }
    }
    Ok(())
}

/// Waits until the leader has stored the cluster id; every replica needs it before serving.
pub async fn wait_for_cluster_id(store: &SharedStore) -> String {
    let key = ResourceKey::new(ResourceType::Config, "", CLUSTER_ID_CONFIG);
    let mut logged = false;
    loop {
        match store.get(&key).await {
            Ok(r) => {
                if let Ok(c) = serde_json::from_value::<ConfigSpec>(r.spec) {
                    return c.config;
                }
                tracing::warn!(
                    "cluster id record is malformed; waiting for the leader to repair it"
                );
            }
            Err(StoreError::NotFound(_)) if !logged => {
                tracing::info!("waiting for the leader to initialize the cluster");
                logged = true;
            }
            Err(StoreError::NotFound(_)) => {}
            Err(e) => tracing::warn!(error = %e, "reading the cluster id failed"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Deletes insights whose Dataplane, Zone, ZoneIngress or ZoneEgress is gone (left behind when
/// an owner was removed by a replica that crashed mid-way, or by older versions).
pub async fn collect_orphaned_insights(store: SharedStore, every: Duration) {
    let owners = [
        ResourceType::Dataplane,
        ResourceType::Zone,
        ResourceType::ZoneIngress,
        ResourceType::ZoneEgress,
    ];
    loop {
        for owner in owners {
            let Some(insight) = owner.owned_insight() else {
                continue;
            };
            let page = match store.list(&ListQuery::all(insight)).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "insight GC: listing failed");
                    continue;
                }
            };
            for i in page.items {
                let owner_key = ResourceKey::new(owner, i.meta.mesh.clone(), i.meta.name.clone());
                if let Err(StoreError::NotFound(_)) = store.get(&owner_key).await {
                    match store.delete(&i.key()).await {
                        Ok(()) => {
                            tracing::info!(insight = %i.key(), "deleted an insight whose owner is gone")
                        }
                        Err(StoreError::NotFound(_)) => {}
                        Err(e) => tracing::warn!(error = %e, "insight GC: delete failed"),
                    }
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}
