//! ZoneInsight bookkeeping on global: one KDS subscription per zone connection, with connect
//! and disconnect times, the zone's CP version, whether it presented a token and the live
//! per-type counters, flushed to the store periodically and at once on connect and disconnect.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use model::specs::insight::{InsightSpec, Subscription};
use model::{Resource, ResourceKey, ResourceType, Timestamp};
use serde_json::{Value, json};
use store::{SharedStore, StoreError};
use tokio::sync::oneshot;

use kds::metrics::KdsMetrics;
use kds::sync::{StreamStats, TypeCounts};

/// Subscriptions kept per zone; older ones are dropped.
pub const MAX_SUBSCRIPTIONS: usize = 10;

/// What the zone said about itself when it connected.
#[derive(Debug, Clone)]
pub struct ZonePeer {
    pub zone: String,
    pub address: Option<SocketAddr>,
    pub version: String,
    pub version_compatible: bool,
    pub auth_token_provided: bool,
}

/// Held by each stream of a connection; when the last one is dropped the subscription closes.
pub struct Session {
    pub stats: Arc<StreamStats>,
    /// The zone's last health check, written with the subscription's next flush: one insight
    /// write per zone per flush interval, not one more per health check.
    health_check: Arc<Mutex<Option<Timestamp>>>,
    _closed: oneshot::Sender<()>,
}

/// A zone and the address its connection comes from.
type ConnectionKey = (String, Option<SocketAddr>);

pub struct ZoneInsights {
    store: SharedStore,
    global_instance_id: String,
    flush_interval: Duration,
    open: Mutex<HashMap<ConnectionKey, Weak<Session>>>,
    metrics: Option<KdsMetrics>,
}

impl ZoneInsights {
    /// `metrics`: where the zones' streams' figures go on `/metrics`, if anywhere.
    pub fn new(
        store: SharedStore,
        global_instance_id: String,
        flush_interval: Duration,
        metrics: Option<KdsMetrics>,
    ) -> Self {
        ZoneInsights {
            store,
            global_instance_id,
            flush_interval,
            open: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Joins the session of the connection `peer` came on, or starts one. Both KDS streams of a
    /// zone travel on one HTTP/2 connection, so they share its address and one subscription.
    pub fn join(&self, peer: &ZonePeer) -> Arc<Session> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, s| s.strong_count() > 0);
        let key = (peer.zone.clone(), peer.address);
        if let Some(session) = open.get(&key).and_then(Weak::upgrade) {
            return session;
        }
        let (closed_tx, closed_rx) = oneshot::channel();
        let session = Arc::new(Session {
            stats: Arc::new(match &self.metrics {
                Some(m) => StreamStats::metered(m.clone(), peer.zone.clone()),
                None => StreamStats::default(),
            }),
            health_check: Arc::default(),
            _closed: closed_tx,
        });
        open.insert(key, Arc::downgrade(&session));
        let subscription = Subscription {
            id: security::random_uuid(),
            global_instance_id: Some(self.global_instance_id.clone()),
            connect_time: Some(Timestamp::now()),
            version: Some(json!({"kumaCp": {
                "version": peer.version,
                "gitTag": "",
                "gitCommit": "",
                "buildDate": "",
                "kumaCpGlobalCompatible": peer.version_compatible,
            }})),
            auth_token_provided: Some(peer.auth_token_provided),
            ..Default::default()
        };
        tokio::spawn(keep_subscription(
            self.store.clone(),
            peer.zone.clone(),
            subscription,
            session.stats.clone(),
            session.health_check.clone(),
            self.flush_interval,
            closed_rx,
        ));
        session
    }

    /// Notes a health check from `peer`'s connection for its subscription's next flush; false
    /// when that connection has no open subscription (the caller writes it itself).
    pub fn health_checked(&self, peer: &ZonePeer) -> bool {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let Some(session) = open
            .get(&(peer.zone.clone(), peer.address))
            .and_then(Weak::upgrade)
        else {
            return false;
        };
        *session
            .health_check
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Timestamp::now());
        true
    }
}

async fn keep_subscription(
    store: SharedStore,
    zone: String,
    mut sub: Subscription,
    stats: Arc<StreamStats>,
    health_check: Arc<Mutex<Option<Timestamp>>>,
    every: Duration,
    mut closed: oneshot::Receiver<()>,
) {
    loop {
        sub.status = Some(status_json(&stats));
        let checked = health_check
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Err(e) = write(&store, &zone, &sub, checked).await {
            tracing::warn!(%zone, error = %e, "could not record the zone's insight");
        }
        if sub.disconnect_time.is_some() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = &mut closed => sub.disconnect_time = Some(Timestamp::now()),
        }
    }
}

fn counts_json(c: &TypeCounts) -> Value {
    // uint64 counters are strings in protobuf JSON, which is what Kuma's API returns.
    json!({
        "responsesSent": c.responses_sent.to_string(),
        "responsesAcknowledged": c.responses_acknowledged.to_string(),
        "responsesRejected": c.responses_rejected.to_string(),
    })
}

fn status_json(stats: &StreamStats) -> Value {
    let stat: serde_json::Map<String, Value> = stats
        .per_type()
        .iter()
        .map(|(k, c)| (k.to_string(), counts_json(c)))
        .collect();
    // Written on every flush while the stream lives: "heard from recently" is what keeps the
    // zone online, and a global that dies stops refreshing it.
    json!({
        "lastUpdateTime": Timestamp::now().to_string(),
        "total": counts_json(&stats.total()),
        "stat": stat,
    })
}

/// Upserts `sub` into the zone's insight. Earlier subscriptions left open are closed, as Kuma
/// does: a zone keeps one connection, so an older open one is from a global that died.
async fn write(
    store: &SharedStore,
    zone: &str,
    sub: &Subscription,
    health_checked: Option<Timestamp>,
) -> Result<(), StoreError> {
    modify(store, zone, |spec| {
        if let Some(time) = health_checked {
            spec.health_check = Some(health_check_json(time));
        }
        let now = Timestamp::now();
        for old in spec.subscriptions.iter_mut() {
            if old.id != sub.id && old.disconnect_time.is_none() {
                old.disconnect_time = Some(now);
            }
        }
        match spec.subscriptions.iter_mut().find(|s| s.id == sub.id) {
            Some(existing) => *existing = sub.clone(),
            None => spec.subscriptions.push(sub.clone()),
        }
        let excess = spec.subscriptions.len().saturating_sub(MAX_SUBSCRIPTIONS);
        spec.subscriptions.drain(..excess);
    })
    .await
}

/// Records a zone's health check (`GlobalKDSService.HealthCheck`).
pub async fn record_health_check(store: &SharedStore, zone: &str) -> Result<(), StoreError> {
    modify(store, zone, |spec| {
        spec.health_check = Some(health_check_json(Timestamp::now()));
    })
    .await
}

fn health_check_json(time: Timestamp) -> Value {
    json!({"time": time.to_string()})
}

/// Read-modify-write of a ZoneInsight with optimistic concurrency: replicas and the health
/// check write the same insight.
async fn modify(
    store: &SharedStore,
    zone: &str,
    change: impl Fn(&mut InsightSpec),
) -> Result<(), StoreError> {
    let key = ResourceKey::new(ResourceType::ZoneInsight, "", zone);
    loop {
        let current = match store.get(&key).await {
            Ok(r) => Some(r),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let mut spec: InsightSpec = current
            .as_ref()
            .and_then(|r| serde_json::from_value(r.spec.clone()).ok())
            .unwrap_or_default();
        change(&mut spec);
        let value = serde_json::to_value(&spec).map_err(|e| StoreError::Corrupt {
            key: key.clone(),
            message: e.to_string(),
        })?;
        let result = match current {
            Some(mut r) => {
                r.spec = value;
                store.update(r).await.map(|_| ())
            }
            None => store
                .create(Resource::new(ResourceType::ZoneInsight, "", zone, value))
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(StoreError::Conflict { .. } | StoreError::AlreadyExists(_)) => continue,
            Err(e) => return Err(e),
        }
    }
}
