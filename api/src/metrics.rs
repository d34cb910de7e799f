//! Request counts and latencies per route, for `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status_code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    method: String,
    route: String,
}

#[derive(Clone)]
pub struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
}

impl ApiMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0005, 2.5, 14))) as fn() -> Histogram,
        );
        registry.register(
            "api_server_http_requests",
            "API requests by route and status",
            requests.clone(),
        );
        registry.register(
            "api_server_http_request_duration_seconds",
            "API request latency by route",
            latency.clone(),
        );
        ApiMetrics { requests, latency }
    }

    /// Metrics not attached to any registry, for tests.
    pub fn detached() -> Self {
        Self::register(&mut Registry::default())
    }

    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let (method, route) = (method.to_string(), route.to_string());
        self.requests
            .get_or_create(&RequestLabels {
                method: method.clone(),
                route: route.clone(),
                status_code: status,
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels { method, route })
            .observe(elapsed.as_secs_f64());
    }
}
