//! Global creates each mesh's builtin CA as soon as the mesh asks for one, so that every zone
//! receives the same CA over KDS (zones never generate their own) and mTLS works across zones.

use std::time::Duration;

use store::SharedStore;
use tokio::sync::watch;

/// Leader-only: ensures the CAs on start and on every Mesh change; a failure is retried soon,
/// and a periodic pass catches anything an event could not (a lagging subscriber).
pub async fn keep_mesh_cas(store: SharedStore, mut shutdown: watch::Receiver<bool>) {
    let mut events = store.subscribe();
    loop {
        let retry = match security::ca::ensure_builtin_cas(&store).await {
            Ok(failed) => !failed.is_empty(),
            Err(e) => {
                tracing::warn!(error = %e, "could not check the meshes' CAs");
                true
            }
        };
        let period = if retry {
            Duration::from_secs(5)
        } else {
            Duration::from_secs(300)
        };
        let events_open = tokio::select! {
            open = store::next_change(&mut events, |ev| ev.key.kind == model::ResourceType::Mesh) => open,
            () = tokio::time::sleep(period) => true,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        if !events_open {
            // The store is going away: nothing more to watch until shutdown.
            let _ = shutdown.wait_for(|s| *s).await;
            return;
        }
    }
}
