//! KDS figures for the control plane's `/metrics`, per zone (on global: the peer; on a zone:
//! itself) and resource type: deltas this side sent and how the peer answered them, deltas it
//! received and refused, and the sync lag: from the store change a delta carries to the peer's
//! ACK of it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TypeLabels {
    pub zone: String,
    pub resource_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ZoneLabels {
    pub zone: String,
}

/// Every stream's counters, registered once per control plane.
#[derive(Clone, Debug)]
pub struct KdsMetrics {
    pub(crate) sent: Family<TypeLabels, Counter>,
    pub(crate) acked: Family<TypeLabels, Counter>,
    pub(crate) nacked: Family<TypeLabels, Counter>,
    pub(crate) received: Family<TypeLabels, Counter>,
    pub(crate) refused: Family<TypeLabels, Counter>,
    pub(crate) lag: Family<ZoneLabels, Histogram>,
}

impl KdsMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = KdsMetrics {
            sent: Family::default(),
            acked: Family::default(),
            nacked: Family::default(),
            received: Family::default(),
            refused: Family::default(),
            // 100 µs to about 6 minutes.
            lag: Family::new_with_constructor(
                (|| Histogram::new(exponential_buckets(0.0001, 2.5, 17))) as fn() -> Histogram,
            ),
        };
        for (name, help, family) in [
            (
                "kds_responses_sent",
                "KDS deltas this control plane sent, by zone and type",
                &metrics.sent,
            ),
            (
                "kds_responses_acked",
                "KDS deltas this control plane sent that the peer acknowledged",
                &metrics.acked,
            ),
            (
                "kds_responses_nacked",
                "KDS deltas this control plane sent that the peer rejected (NACK)",
                &metrics.nacked,
            ),
            (
                "kds_responses_received",
                "KDS deltas this control plane received, by zone and type",
                &metrics.received,
            ),
            (
                "kds_responses_refused",
                "KDS deltas this control plane received and rejected (NACK)",
                &metrics.refused,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "kds_sync_lag_seconds",
            "From a store change to the peer's acknowledgement of the delta carrying it, by zone",
            metrics.lag.clone(),
        );
        metrics
    }

    /// Metrics not attached to any registry (tests, benchmarks).
    pub fn detached() -> Self {
        Self::register(&mut Registry::default())
    }
}
