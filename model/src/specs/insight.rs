//! Insights are written by the control plane itself; their shape is checked loosely so that
//! insights from Kuma zones of other versions still sync.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time::Timestamp;
use crate::validate::{Validate, ValidationError, Validator, validate_as};

/// One xDS or KDS stream as recorded in an insight.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub control_plane_instance_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_instance_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// A Kuma zone's configuration as a JSON string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token_provided: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_instance_id: Option<String>,
}

impl Subscription {
    /// Last time the peer was heard from: `status.lastUpdateTime`, else the connect time.
    pub fn last_seen(&self) -> Option<Timestamp> {
        self.status
            .as_ref()
            .and_then(|s| s.get("lastUpdateTime"))
            .and_then(Value::as_str)
            .and_then(Timestamp::parse)
            .or(self.connect_time)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InsightSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<Subscription>,
    #[serde(default, rename = "mTLS", skip_serializing_if = "Option::is_none")]
    pub mtls: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_last_seen: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_admin_streams: Option<Value>,
    /// ZoneInsight: when global last heard a zone's health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<Value>,
}

impl InsightSpec {
    /// Online: the newest subscription has no disconnect time and was heard from within
    /// `stale_after` of `now`. A crashed peer never sends a disconnect, so staleness matters.
    pub fn is_online(&self, now: Timestamp, stale_after: std::time::Duration) -> bool {
        self.subscriptions.last().is_some_and(|s| {
            s.disconnect_time.is_none()
                && s.last_seen()
                    .is_some_and(|seen| seen.elapsed_until(now) <= stale_after)
        })
    }

    pub fn last_connected(&self) -> Option<Timestamp> {
        self.subscriptions
            .iter()
            .filter_map(|s| s.connect_time)
            .max()
    }
}

impl Validate for InsightSpec {
    fn validate(&self, _: &mut Validator) {}
}

pub fn validate_dataplane_insight(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<InsightSpec>(spec, "").map(|_| ())
}

pub fn validate_zone_insight(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<InsightSpec>(spec, "").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn online_needs_fresh_open_subscription() {
        let now = Timestamp::parse("2026-01-01T00:01:00Z").unwrap();
        let spec: InsightSpec = serde_json::from_value(json!({"subscriptions": [
            {"id": "1", "controlPlaneInstanceId": "cp", "connectTime": "2026-01-01T00:00:50Z"}]}))
        .unwrap();
        assert!(spec.is_online(now, Duration::from_secs(30)));
        assert!(!spec.is_online(now, Duration::from_secs(5)));
        let closed: InsightSpec = serde_json::from_value(json!({"subscriptions": [
            {"connectTime": "2026-01-01T00:00:50Z", "disconnectTime": "2026-01-01T00:00:55Z"}]}))
        .unwrap();
        assert!(!closed.is_online(now, Duration::from_secs(30)));
    }
}
