//! xDS figures for the control plane's `/metrics`: proxies connected, responses sent to Envoy
//! and how Envoy answered them, by resource type, and how long a change takes to reach a proxy
//! (from the zone's new snapshot arriving at the proxy's stream to its last response handed to
//! the stream: configuration generated, encoded and sent).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TypeLabels {
    pub resource_type: &'static str,
}

#[derive(Clone, Debug)]
pub struct XdsMetrics {
    pub(crate) connected: Gauge,
    pub(crate) sent: Family<TypeLabels, Counter>,
    pub(crate) acked: Family<TypeLabels, Counter>,
    pub(crate) nacked: Family<TypeLabels, Counter>,
    pub(crate) push: Histogram,
}

impl XdsMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = XdsMetrics {
            connected: Gauge::default(),
            sent: Family::default(),
            acked: Family::default(),
            nacked: Family::default(),
            // 50 µs to about 3 minutes.
            push: Histogram::new(exponential_buckets(0.00005, 2.5, 17)),
        };
        // Every type's counters exist from the start, so `increase()` over them works before
        // the first NACK.
        for resource_type in ["cds", "eds", "lds", "rds", "sds"] {
            for family in [&metrics.sent, &metrics.acked, &metrics.nacked] {
                let _ = family.get_or_create(&TypeLabels { resource_type });
            }
        }
        registry.register(
            "xds_connected_proxies",
            "Envoy proxies with an open ADS stream to this replica",
            metrics.connected.clone(),
        );
        for (name, help, family) in [
            (
                "xds_responses_sent",
                "xDS responses sent to proxies, by resource type",
                &metrics.sent,
            ),
            (
                "xds_responses_acked",
                "xDS responses proxies acknowledged, by resource type",
                &metrics.acked,
            ),
            (
                "xds_responses_nacked",
                "xDS responses proxies rejected (NACK), by resource type",
                &metrics.nacked,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "xds_push_duration_seconds",
            "From a mesh change reaching a proxy's stream to the changed configuration sent",
            metrics.push.clone(),
        );
        metrics
    }

    pub(crate) fn observe(
        metrics: &Option<XdsMetrics>,
        family: impl FnOnce(&XdsMetrics) -> &Family<TypeLabels, Counter>,
        resource_type: &'static str,
    ) {
        if let Some(m) = metrics {
            family(m).get_or_create(&TypeLabels { resource_type }).inc();
        }
    }
}

/// Counts a proxy as connected while it lives.
pub(crate) struct Connected(Option<XdsMetrics>);

impl Connected {
    pub(crate) fn new(metrics: &Option<XdsMetrics>) -> Self {
        if let Some(m) = metrics {
            m.connected.inc();
        }
        Connected(metrics.clone())
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        if let Some(m) = &self.0 {
            m.connected.dec();
        }
    }
}
