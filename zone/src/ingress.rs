//! Zone ingress bookkeeping: each local ZoneIngress advertises, in `availableServices`, the
//! services of this zone with their tags and ready instance counts. Other zones weight their
//! endpoints by those counts; global carries the ZoneIngress to them.

use std::time::Duration;

use model::labels::ORIGIN;
use model::{ResourceKey, ResourceType};
use store::{SharedStore, StoreError};
use tokio::sync::watch;

use crate::dpserver::cache::ZoneView;

/// How long a burst of changes is gathered before the counts are recomputed.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Rewrites `availableServices` of this zone's ingresses in `view` where it differs from
/// what the view's meshes count; returns how many were rewritten. Only those are read.
pub async fn update_available_services(
    store: &SharedStore,
    zone: &str,
    view: &ZoneView,
) -> Result<usize, StoreError> {
    let available =
        xds::generator::ingress::available_services(view.meshes.values().map(|m| &m.context));
    let stale: Vec<&String> = view
        .zone_proxies
        .ingresses
        .iter()
        .filter(|(_, spec)| spec.zone == zone && spec.available_services != available)
        .map(|(name, _)| name)
        .collect();
    let mut written = 0;
    for name in stale {
        let key = ResourceKey::new(ResourceType::ZoneIngress, "", name);
        let r = match store.get(&key).await {
            Ok(r) => r,
            Err(StoreError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        // Other zones' ingresses arrive from global; they are theirs to keep.
        if r.label(ORIGIN).is_some_and(|o| o == "global") {
            continue;
        }
        let value = serde_json::to_value(&available).unwrap_or_default();
        store::upsert(store.as_ref(), r, |stored| {
            stored.spec["availableServices"] = value.clone();
        })
        .await?;
        written += 1;
    }
    Ok(written)
}

/// Keeps the counts current from the zone's snapshot cache, which follows every change to
/// Dataplanes, Meshes and ZoneIngresses (so no store read happens unless a count changed),
/// and once a minute in case a write failed. Runs on the leader.
pub async fn keep_available_services(
    store: SharedStore,
    zone: String,
    mut view: watch::Receiver<ZoneView>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Counted only from a fully loaded cache: a mesh still loading would count as empty.
    tokio::select! {
        loaded = view.wait_for(|v| v.ready) => if loaded.is_err() { return },
        _ = shutdown.wait_for(|s| *s) => return,
    }
    loop {
        let current = view.borrow_and_update().clone();
        match update_available_services(&store, &zone, &current).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(ingresses = n, "zone ingress services updated"),
            Err(e) => tracing::warn!(error = %e, "could not update the zone ingresses' services"),
        }
        tokio::select! {
            changed = view.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        // A burst of changes is counted once.
        tokio::time::sleep(DEBOUNCE).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use model::Resource;
    use model::specs::zone::ZoneIngressSpec;
    use serde_json::json;
    use std::sync::Arc;
    use store::MemoryStore;

    fn ingress(name: &str, zone: &str) -> Resource {
        Resource::new(
            ResourceType::ZoneIngress,
            "",
            name,
            json!({"zone": zone, "networking": {"address": "10.0.0.9", "port": 10001}}),
        )
    }

    fn backend(name: &str, ready: bool) -> Resource {
        Resource::new(
            ResourceType::Dataplane,
            "default",
            name,
            json!({"networking": {"address": "10.0.0.1", "inbound": [{"port": 8080,
                "health": {"ready": ready}, "tags": {"kuma.io/service": "backend"}}]}}),
        )
    }

    async fn instances(store: &SharedStore, name: &str, want: u32) {
        let key = ResourceKey::new(ResourceType::ZoneIngress, "", name);
        let mut seen = None;
        for _ in 0..100 {
            let spec: ZoneIngressSpec =
                serde_json::from_value(store.get(&key).await.unwrap().spec).unwrap();
            let count = spec.available_services.first().map(|s| s.instances);
            if count == Some(want) {
                return;
            }
            seen = count;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{name}: {seen:?} instances advertised, not {want}");
    }

    /// The local ingress advertises the zone's ready instances as Dataplanes come and go; an
    /// ingress of another zone is not touched.
    #[tokio::test]
    async fn ingress_counts_follow_dataplanes() {
        let store: SharedStore = Arc::new(MemoryStore::new());
        store
            .create(Resource::new(ResourceType::Mesh, "", "default", json!({})))
            .await
            .unwrap();
        store.create(ingress("local", "zone-1")).await.unwrap();
        store.create(ingress("remote", "zone-2")).await.unwrap();
        store.create(backend("backend-1", true)).await.unwrap();
        let view = crate::dpserver::cache::start(store.clone(), "zone-1".into(), true);
        let (_stop, stopped) = watch::channel(false);
        tokio::spawn(keep_available_services(
            store.clone(),
            "zone-1".into(),
            view,
            stopped,
        ));
        instances(&store, "local", 1).await;
        store.create(backend("backend-2", true)).await.unwrap();
        store.create(backend("backend-down", false)).await.unwrap();
        instances(&store, "local", 2).await;
        store
            .delete(&backend("backend-1", true).key())
            .await
            .unwrap();
        instances(&store, "local", 1).await;
        let remote = store
            .get(&ResourceKey::new(ResourceType::ZoneIngress, "", "remote"))
            .await
            .unwrap();
        assert!(remote.spec.get("availableServices").is_none(), "{remote:?}");
    }
}
