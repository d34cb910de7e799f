//! Zones' `enabled` switches, as the KDS streams consult them: a disabled zone is refused, its
//! streams end, and other zones stop receiving what came from it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use model::ResourceType;
use store::{ListQuery, SharedStore};

/// Zones' `enabled` switches, kept current from store events so filters stay synchronous.
pub struct ZoneSwitches {
    enabled: RwLock<HashMap<String, bool>>,
    /// Bumped after every refresh, so streams re-filter what depends on other zones only once
    /// the new switches are in place.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for ZoneSwitches {
    fn default() -> Self {
        ZoneSwitches {
            enabled: RwLock::default(),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl ZoneSwitches {
    /// Fires after each change to the switches.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn enabled(&self, zone: &str) -> bool {
        self.enabled
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(zone)
            .copied()
            .unwrap_or(true)
    }

    async fn refresh(&self, store: &SharedStore) {
        if let Ok(page) = store.list(&ListQuery::all(ResourceType::Zone)).await {
            let map = page
                .items
                .iter()
                .map(|z| {
                    (
                        z.meta.name.clone(),
                        z.spec
                            .get("enabled")
                            .and_then(|e| e.as_bool())
                            .unwrap_or(true),
                    )
                })
                .collect();
            let mut enabled = self.enabled.write().unwrap_or_else(|p| p.into_inner());
            if *enabled != map {
                *enabled = map;
                self.changed.send_modify(|n| *n += 1);
            }
        }
    }

    /// Keeps the switches current for as long as the store lives.
    pub async fn follow(self: Arc<Self>, store: SharedStore) {
        let mut events = store.subscribe();
        self.refresh(&store).await;
        while store::next_change(&mut events, |ev| ev.key.kind == ResourceType::Zone).await {
            self.refresh(&store).await;
        }
    }
}
