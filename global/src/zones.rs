//! Zones' `enabled` switches, as the KDS streams consult them: a disabled zone is refused, its
//! streams end, and other zones stop receiving what came from it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use model::{ResourceKey, ResourceType};
use store::{ListQuery, SharedStore, StoreError};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

/// Zones' `enabled` switches, kept current from store events so filters stay synchronous.
///
/// Two signals, so that a thousand zones registering cost nothing per connected zone: `changed`
/// fires only when some zone's effective switch flips (every stream then re-filters what
/// depends on other zones), `closing` only when a zone is disabled or deleted (streams check
/// whether it is theirs). A new, enabled zone fires neither: absent already meant enabled.
pub struct ZoneSwitches {
    enabled: RwLock<HashMap<String, bool>>,
    /// How many times each zone was disabled or deleted.
    closed: RwLock<HashMap<String, u64>>,
    changed: watch::Sender<u64>,
    closing: watch::Sender<u64>,
    /// Every zone's streams are to end: the control plane itself was deleted.
    shut: std::sync::atomic::AtomicBool,
}

impl Default for ZoneSwitches {
    fn default() -> Self {
        ZoneSwitches {
            enabled: RwLock::default(),
            closed: RwLock::default(),
            changed: watch::Sender::new(0),
            closing: watch::Sender::new(0),
            shut: Default::default(),
        }
    }
}

fn switch_of(zone: &model::Resource) -> bool {
    zone.spec
        .get("enabled")
        .and_then(|e| e.as_bool())
        .unwrap_or(true)
}

impl ZoneSwitches {
    /// Fires after each change to the effective switches.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Fires after a zone was disabled or deleted.
    pub fn closings(&self) -> watch::Receiver<u64> {
        self.closing.subscribe()
    }

    /// Ends every zone's streams, now and from now on: a hosted manager deleted this control
    /// plane.
    pub fn shut(&self) {
        self.shut.store(true, std::sync::atomic::Ordering::Release);
        self.closing.send_modify(|n| *n += 1);
    }

    pub fn is_shut(&self) -> bool {
        self.shut.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn enabled(&self, zone: &str) -> bool {
        self.read().get(zone).copied().unwrap_or(true)
    }

    /// How many times `zone` was disabled or deleted: a stream compares it with the count when
    /// it began.
    pub fn times_closed(&self, zone: &str) -> u64 {
        self.closed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(zone)
            .copied()
            .unwrap_or(0)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, bool>> {
        self.enabled.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets one zone's switch (`None`: the zone is gone) and fires what the change calls for.
    fn set(&self, zone: &str, switch: Option<bool>) {
        let before = {
            let mut map = self.enabled.write().unwrap_or_else(|p| p.into_inner());
            match switch {
                Some(on) => map.insert(zone.to_string(), on),
                None => map.remove(zone),
            }
        };
        if before.unwrap_or(true) != switch.unwrap_or(true) {
            self.changed.send_modify(|n| *n += 1);
        }
        let disabled = switch == Some(false) && before != Some(false);
        let deleted = switch.is_none() && before.is_some();
        if disabled || deleted {
            *self
                .closed
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(zone.to_string())
                .or_default() += 1;
            self.closing.send_modify(|n| *n += 1);
        }
    }

    /// Reads every zone again (at start, and after missing events or a failed read), until
    /// the store answers: a switch left stale would keep a disabled zone's streams open.
    async fn refresh(&self, store: &SharedStore) {
        let page = loop {
            if self.is_shut() {
                // Deleted with its control plane: its store will not answer again.
                return;
            }
            match store.list(&ListQuery::all(ResourceType::Zone)).await {
                Ok(page) => break page,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the zones' switches; retrying in 1 s");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        };
        let now: HashMap<String, bool> = page
            .items
            .iter()
            .map(|z| (z.meta.name.clone(), switch_of(z)))
            .collect();
        let gone: Vec<String> = self
            .read()
            .keys()
            .filter(|z| !now.contains_key(*z))
            .cloned()
            .collect();
        for zone in gone {
            self.set(&zone, None);
        }
        for (zone, on) in now {
            if self.read().get(&zone) != Some(&on) {
                self.set(&zone, Some(on));
            }
        }
    }

    /// Keeps the switches current for as long as the store lives: one read per changed zone.
    pub async fn follow(self: Arc<Self>, store: SharedStore) {
        let mut events = store.subscribe();
        self.refresh(&store).await;
        loop {
            if self.is_shut() {
                return;
            }
            match events.recv().await {
                Ok(ev) if ev.key.kind == ResourceType::Zone => {
                    let key = ResourceKey::new(ResourceType::Zone, "", &ev.key.name);
                    match store.get(&key).await {
                        Ok(z) => self.set(&ev.key.name, Some(switch_of(&z))),
                        Err(StoreError::NotFound(_)) => self.set(&ev.key.name, None),
                        Err(e) => {
                            tracing::warn!(zone = %ev.key.name, error = %e, "could not read the zone's switch; reading every zone again");
                            self.refresh(&store).await;
                        }
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => self.refresh(&store).await,
                Err(RecvError::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_flips_and_removals_fire() {
        let switches = ZoneSwitches::default();
        let (changes, closings) = (switches.changes(), switches.closings());
        switches.set("zone-1", Some(true));
        assert!(!changes.has_changed().unwrap() && !closings.has_changed().unwrap());
        assert!(switches.enabled("zone-1"));

        switches.set("zone-1", Some(false));
        assert_eq!(
            (*switches.changed.borrow(), *switches.closing.borrow()),
            (1, 1)
        );
        assert!(!switches.enabled("zone-1"));
        assert_eq!(switches.times_closed("zone-1"), 1);

        // Deleting a disabled zone: it is enabled again (absent), and gone.
        switches.set("zone-1", None);
        assert_eq!(
            (*switches.changed.borrow(), *switches.closing.borrow()),
            (2, 2)
        );
        assert!(switches.enabled("zone-1"));
        assert_eq!(switches.times_closed("zone-1"), 2);

        // Deleting an enabled zone closes its streams without re-filtering anyone's.
        switches.set("zone-2", Some(true));
        switches.set("zone-2", None);
        assert_eq!(
            (*switches.changed.borrow(), *switches.closing.borrow()),
            (2, 3)
        );
        assert_eq!(switches.times_closed("zone-2"), 1);
    }
}
