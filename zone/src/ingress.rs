//! Zone ingress bookkeeping: each local ZoneIngress advertises, in `availableServices`, the
//! services of this zone with their tags and ready instance counts. Other zones weight their
//! endpoints by those counts; global carries the ZoneIngress to them.

use std::time::Duration;

use model::ResourceType;
use model::labels::ORIGIN;
use model::specs::zone::ZoneIngressSpec;
use store::{ListQuery, SharedStore, StoreError};
use tokio::sync::watch;

/// How long a burst of changes is gathered before the counts are recomputed.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Rewrites `availableServices` of this zone's ingresses where it changed; returns how many
/// were rewritten.
pub async fn update_available_services(
    store: &SharedStore,
    zone: &str,
) -> Result<usize, StoreError> {
    let meshes = crate::dpserver::snapshot::load_all(store, zone).await?;
    let available = xds::generator::ingress::available_services(&meshes);
    let mut written = 0;
    for r in store
        .list(&ListQuery::all(ResourceType::ZoneIngress))
        .await?
        .items
    {
        // Other zones' ingresses arrive from global; they are theirs to keep.
        if r.label(ORIGIN).is_some_and(|o| o == "global") {
            continue;
        }
        let Ok(spec) = serde_json::from_value::<ZoneIngressSpec>(r.spec.clone()) else {
            continue;
        };
        if spec.zone != zone || spec.available_services == available {
            continue;
        }
        let value = serde_json::to_value(&available).unwrap_or_default();
        let fresh = r.clone();
        store::upsert(store.as_ref(), fresh, |stored| {
            stored.spec["availableServices"] = value.clone();
        })
        .await?;
        written += 1;
    }
    Ok(written)
}

fn relevant(kind: ResourceType) -> bool {
    matches!(
        kind,
        ResourceType::Dataplane | ResourceType::Mesh | ResourceType::ZoneIngress
    )
}

/// Keeps the counts current: on every change to Dataplanes, Meshes or ZoneIngresses, and
/// once a minute in case an event was missed. Runs on the leader.
pub async fn keep_available_services(
    store: SharedStore,
    zone: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut events = store.subscribe();
    loop {
        match update_available_services(&store, &zone).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(ingresses = n, "zone ingress services updated"),
            Err(e) => tracing::warn!(error = %e, "could not update the zone ingresses' services"),
        }
        tokio::select! {
            open = store::next_change(&mut events, |ev| relevant(ev.key.kind)) => if !open { return },
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        tokio::time::sleep(DEBOUNCE).await;
        while events.try_recv().is_ok() {}
    }
}
