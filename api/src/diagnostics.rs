//! The diagnostics server on 5680: `/healthy`, `/ready` (only when the store answers) and
//! `/metrics` in Prometheus text format.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use model::ResourceType;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use store::{ListQuery, SharedStore};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    resource_type: &'static str,
}

pub struct Diagnostics {
    registry: Registry,
    store: SharedStore,
    resource_counts: Family<TypeLabels, Gauge>,
    /// Set once start-up work (defaults, keys) is done.
    pub started: Arc<AtomicBool>,
}

impl Diagnostics {
    /// Takes the registry once every component has registered its metrics.
    pub fn new(mut registry: Registry, store: SharedStore, started: Arc<AtomicBool>) -> Self {
        let resource_counts = Family::<TypeLabels, Gauge>::default();
        registry.register(
            "resources_count",
            "Stored resources by type",
            resource_counts.clone(),
        );
        Diagnostics {
            registry,
            store,
            resource_counts,
            started,
        }
    }

    /// The metrics in Prometheus's text format (OpenMetrics), resource counts read now.
    pub async fn exposition(&self) -> Result<String, std::fmt::Error> {
        // Counted at scrape time: a size-0 page only asks the store for its total.
        for kind in ResourceType::all() {
            let mut q = ListQuery::all(kind);
            q.size = Some(0);
            if let Ok(page) = self.store.list(&q).await {
                self.resource_counts
                    .get_or_create(&TypeLabels {
                        resource_type: kind.name(),
                    })
                    .set(page.total as i64);
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/healthy", get(|| async { "OK" }))
            .route("/ready", get(ready))
            .route("/metrics", get(metrics))
            .layer(axum::middleware::from_fn(
                |req, next: axum::middleware::Next| {
                    crate::with_timeout(std::time::Duration::from_secs(30), next.run(req))
                },
            ))
            .with_state(self)
    }
}

async fn ready(State(d): State<Arc<Diagnostics>>) -> Response {
    if !d.started.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response();
    }
    match tokio::time::timeout(std::time::Duration::from_secs(5), d.store.ping()).await {
        Ok(Ok(())) => "OK".into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store not ready: {e}"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "store did not answer in 5s",
        )
            .into_response(),
    }
}

async fn metrics(State(d): State<Arc<Diagnostics>>) -> Response {
    let out = match d.exposition().await {
        Ok(out) => out,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
