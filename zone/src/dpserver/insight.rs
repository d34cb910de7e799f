//! DataplaneInsight bookkeeping: one subscription per ADS stream with connect and disconnect
//! times, the proxy's versions and per-type counters, refreshed while connected so a proxy that
//! vanished without closing its stream turns Offline; plus the proxy's certificate state.

use std::collections::BTreeMap;

use model::specs::insight::{InsightSpec, Subscription};
use model::{Resource, ResourceKey, ResourceType, Timestamp};
use serde_json::{Value, json};
use store::{SharedStore, StoreError};

/// Subscriptions kept per proxy; older ones are dropped.
pub const MAX_SUBSCRIPTIONS: usize = 10;

/// Responses of one type on a stream.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub sent: u64,
    pub acknowledged: u64,
    pub rejected: u64,
}

impl Counts {
    fn to_json(self) -> Value {
        json!({
            "responsesSent": self.sent.to_string(),
            "responsesAcknowledged": self.acknowledged.to_string(),
            "responsesRejected": self.rejected.to_string(),
        })
    }
}

/// The proxy's certificate, as shown under `mTLS`.
#[derive(Debug, Clone)]
pub struct CertState {
    pub expiration: Timestamp,
    pub last_regeneration: Timestamp,
    pub regenerations: u32,
    pub backend: String,
}

/// One stream's subscription, kept by the stream and written on every flush.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    /// Dataplane, ZoneIngress or ZoneEgress: whose insight this stream writes.
    pub owner: ResourceType,
    pub mesh: String,
    pub name: String,
    pub subscription_id: String,
    pub cp_instance_id: String,
    pub connect_time: Timestamp,
    pub disconnect_time: Option<Timestamp>,
    pub version: Value,
    /// Keyed by Kuma's short names: `cds`, `eds`, `lds`, `rds`, `sds`.
    pub counts: BTreeMap<&'static str, Counts>,
    pub cert: Option<CertState>,
    /// Bumped whenever the configuration sent changes.
    pub generation: u64,
    /// The last configuration Envoy rejected and why, until it accepts that type again.
    pub rejection: Option<Rejection>,
}

/// A NACK's reason (an access-log file Envoy cannot open, a certificate file missing, ...),
/// shown on the insight as `metadata.lastRejection`: Kuma's subscriptions only count
/// rejections, and `metadata` is the one free-form field of Kuma's DataplaneInsight.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// Kuma's short name of the xDS type: `lds`, `cds`, ...
    pub kind: &'static str,
    pub reason: String,
    pub time: Timestamp,
}

/// The key of [`Rejection`] in the insight's `metadata`.
pub const LAST_REJECTION: &str = "lastRejection";

impl StreamRecord {
    fn subscription(&self, now: Timestamp) -> Subscription {
        let mut total = Counts::default();
        let mut status = serde_json::Map::new();
        for (kind, c) in &self.counts {
            total.sent += c.sent;
            total.acknowledged += c.acknowledged;
            total.rejected += c.rejected;
            if *kind != "sds" {
                status.insert((*kind).to_string(), c.to_json());
            }
        }
        status.insert("total".into(), total.to_json());
        status.insert("lastUpdateTime".into(), json!(now.to_string()));
        Subscription {
            id: self.subscription_id.clone(),
            control_plane_instance_id: self.cp_instance_id.clone(),
            connect_time: Some(self.connect_time),
            disconnect_time: self.disconnect_time,
            status: Some(Value::Object(status)),
            version: Some(self.version.clone()),
            generation: Some(self.generation),
            ..Default::default()
        }
    }
}

/// Writes the record into the proxy's DataplaneInsight (creating it), replacing the
/// subscription with the same id. Does nothing once the Dataplane itself is gone.
pub async fn write(store: &SharedStore, record: &StreamRecord) -> Result<(), StoreError> {
    let owner = ResourceKey::new(record.owner, &record.mesh, &record.name);
    let Some(insight_kind) = record.owner.owned_insight() else {
        return Ok(());
    };
    match store.get(&owner).await {
        Ok(_) => {}
        Err(StoreError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e),
    }
    let now = Timestamp::now();
    let subscription = record.subscription(now);
    let mtls = record.cert.as_ref().map(|c| {
        json!({
            "certificateExpirationTime": c.expiration.to_string(),
            "lastCertificateRegeneration": c.last_regeneration.to_string(),
            "certificateRegenerations": c.regenerations,
            "issuedBackend": c.backend,
            "supportedBackends": [c.backend],
        })
    });
    let fresh = Resource::new(insight_kind, &record.mesh, &record.name, json!({}));
    store::upsert(store.as_ref(), fresh, |r| {
        let mut spec: InsightSpec = serde_json::from_value(r.spec.clone()).unwrap_or_default();
        match spec
            .subscriptions
            .iter_mut()
            .find(|s| s.id == subscription.id)
        {
            Some(s) => *s = subscription.clone(),
            None => {
                // A proxy reconnecting to this replica ends what an older stream left open.
                for s in spec.subscriptions.iter_mut() {
                    if s.disconnect_time.is_none()
                        && s.control_plane_instance_id == subscription.control_plane_instance_id
                    {
                        s.disconnect_time = Some(now);
                    }
                }
                spec.subscriptions.push(subscription.clone());
            }
        }
        let excess = spec.subscriptions.len().saturating_sub(MAX_SUBSCRIPTIONS);
        spec.subscriptions.drain(..excess);
        if let Some(m) = &mtls {
            spec.mtls = Some(m.clone());
        }
        let mut metadata = match spec.metadata.take() {
            Some(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        match &record.rejection {
            Some(r) => {
                metadata.insert(
                    LAST_REJECTION.into(),
                    json!({"type": r.kind, "reason": r.reason, "time": r.time.to_string()}),
                );
            }
            None => {
                metadata.remove(LAST_REJECTION);
            }
        }
        spec.metadata = (!metadata.is_empty()).then_some(Value::Object(metadata));
        r.spec = serde_json::to_value(&spec).unwrap_or_else(|_| json!({}));
    })
    .await
    .map(|_| ())
}
