//! The control plane's own traces over OTLP/gRPC (Kuma's `tracing.openTelemetry`): on when
//! `tracing.openTelemetry.enabled` is set (the collector from the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) or when Kuma's deprecated
//! `tracing.openTelemetry.endpoint` names one (`host:port`, plaintext). Every `tracing` span at
//! INFO or above becomes an OpenTelemetry span: API requests, KDS deltas, xDS pushes.
//!
//! Spans leave in batches from a background thread; a collector that is down or slow costs
//! dropped spans (the exporter's queue is bounded), never a blocked request.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::config::{Config, Mode};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("tracing.openTelemetry: building the OTLP exporter")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    #[error("metrics.openTelemetry: the collector endpoint")]
    MetricsEndpoint(#[source] bin_support::otlp_metrics::ExportError),
    #[error("OTEL_METRIC_EXPORT_INTERVAL: {0:?} is not a number of milliseconds")]
    MetricsInterval(String),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct SignalLabels {
    signal: &'static str,
}

/// Exports the collector did not take (down, slow, refusing), by signal (`traces`,
/// `metrics`): what was in them is dropped, never retried into a growing queue. Process-wide,
/// as the span exporter starts before the metrics registry exists.
static EXPORT_FAILURES: std::sync::LazyLock<
    prometheus_client::metrics::family::Family<
        SignalLabels,
        prometheus_client::metrics::counter::Counter,
    >,
> = std::sync::LazyLock::new(Default::default);

/// Adds `otlp_export_failures_total` to `registry`.
pub fn register_metrics(registry: &mut prometheus_client::registry::Registry) {
    // At zero from the start: a rate over the first failure then sees it, and the family is
    // exported before anything failed.
    for signal in ["traces", "metrics"] {
        drop(EXPORT_FAILURES.get_or_create(&SignalLabels { signal }));
    }
    registry.register(
        "otlp_export_failures",
        "OTLP exports the collector did not take (their content is dropped), by signal",
        EXPORT_FAILURES.clone(),
    );
}

fn count_failure(signal: &'static str) {
    EXPORT_FAILURES
        .get_or_create(&SignalLabels { signal })
        .inc();
}

/// The OTLP span exporter, counting the batches it could not deliver.
#[derive(Debug)]
struct CountingExporter(opentelemetry_otlp::SpanExporter);

impl opentelemetry_sdk::trace::SpanExporter for CountingExporter {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        let result = self.0.export(batch).await;
        if result.is_err() {
            count_failure("traces");
        }
        result
    }

    fn shutdown_with_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

/// The tracer provider while tracing is on; [`Telemetry::shutdown`] flushes what is queued.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// The value of the variable `name` in `env`, unless unset or empty.
fn env_var<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// Where spans go, if tracing is on: `Some(None)` leaves the endpoint to the standard
/// `OTEL_EXPORTER_OTLP_*` variables.
fn endpoint(config: &Config, env: &[(String, String)]) -> Option<Option<String>> {
    let otel = &config.tracing.open_telemetry;
    if !otel.endpoint.is_empty() {
        let endpoint = if otel.endpoint.contains("://") {
            otel.endpoint.clone()
        } else {
            format!("http://{}", otel.endpoint)
        };
        return Some(Some(endpoint));
    }
    let standard = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| env_var(env, name).is_some());
    (otel.enabled || standard).then_some(None)
}

impl Telemetry {
    /// Starts exporting when the configuration turns tracing on; `None` when it is off. Must
    /// run inside the Tokio runtime (the gRPC channel lives there).
    pub fn start(
        config: &Config,
        env: &[(String, String)],
    ) -> Result<Option<Telemetry>, TelemetryError> {
        let Some(endpoint) = endpoint(config, env) else {
            return Ok(None);
        };
        if !config.tracing.open_telemetry.endpoint.is_empty() {
            tracing::warn!(
                "tracing.openTelemetry.endpoint (KUMA_TRACING_OPENTELEMETRY_ENDPOINT) is deprecated, as in Kuma: use OTEL_EXPORTER_OTLP_ENDPOINT"
            );
        }
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(endpoint) = endpoint {
            exporter = exporter.with_endpoint(endpoint);
        }
        let exporter = exporter.build().map_err(TelemetryError::Exporter)?;
        let mut attributes = vec![opentelemetry::KeyValue::new(
            "kuma.mode",
            config.mode.as_str(),
        )];
        if config.mode == Mode::Zone {
            attributes.push(opentelemetry::KeyValue::new(
                "kuma.zone",
                config.multizone.zone.name.clone(),
            ));
        }
        let resource = Resource::builder()
            .with_service_name("kuma-cp")
            .with_attributes(attributes)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(CountingExporter(exporter))
            .with_resource(resource)
            .build();
        Ok(Some(Telemetry { provider }))
    }

    /// The layer that turns `tracing` spans into exported spans.
    pub fn layer<S>(
        &self,
    ) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        // Busy/idle time would read the clock on every poll of every instrumented future;
        // code locations and thread names are not what operators read these spans for.
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("kuma-cp"))
            .with_tracked_inactivity(false)
            .with_location(false)
            .with_threads(false)
    }

    /// Sends what is queued and stops the exporter.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "flushing the last spans failed");
        }
    }
}

/// The control plane's `/metrics` pushed over OTLP/gRPC (Kuma's `metrics.openTelemetry`):
/// every `OTEL_METRIC_EXPORT_INTERVAL` milliseconds (60 s by default, as OpenTelemetry's SDKs)
/// to `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`
/// (`http://localhost:4317` by default), and once more when the control plane stops. The
/// Prometheus endpoint stays; both read the same registry.
pub struct MetricsPush {
    exporter: bin_support::otlp_metrics::MetricsExporter,
    interval: std::time::Duration,
    resource: Vec<proto::kuma::otlp::KeyValue>,
}

impl MetricsPush {
    /// `None` unless `metrics.openTelemetry.enabled`. Must run inside the Tokio runtime.
    pub fn from_config(
        config: &Config,
        env: &[(String, String)],
    ) -> Result<Option<MetricsPush>, TelemetryError> {
        if !config.metrics.open_telemetry.enabled {
            return Ok(None);
        }
        let var = |name: &str| env_var(env, name);
        let endpoint = var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .unwrap_or("http://localhost:4317");
        let interval = match var("OTEL_METRIC_EXPORT_INTERVAL") {
            None => std::time::Duration::from_secs(60),
            Some(ms) => ms
                .parse::<u64>()
                .ok()
                .filter(|ms| *ms > 0)
                .map(std::time::Duration::from_millis)
                .ok_or_else(|| TelemetryError::MetricsInterval(ms.to_string()))?,
        };
        let exporter = bin_support::otlp_metrics::MetricsExporter::tcp(endpoint)
            .map_err(TelemetryError::MetricsEndpoint)?;
        let mut resource = vec![
            bin_support::otlp_metrics::attribute("service.name", "kuma-cp"),
            bin_support::otlp_metrics::attribute("kuma.mode", config.mode.as_str()),
        ];
        if config.mode == Mode::Zone {
            resource.push(bin_support::otlp_metrics::attribute(
                "kuma.zone",
                config.multizone.zone.name.clone(),
            ));
        }
        Ok(Some(MetricsPush {
            exporter,
            interval,
            resource,
        }))
    }

    /// Pushes until `stopping` turns true, then once more. A collector that is down is
    /// logged once per outage and counted; the next interval tries again.
    pub async fn run(
        mut self,
        diagnostics: std::sync::Arc<api::diagnostics::Diagnostics>,
        mut stopping: tokio::sync::watch::Receiver<bool>,
    ) {
        tracing::info!(collector = %self.exporter.target(), interval = ?self.interval, "pushing the control plane's metrics over OTLP");
        loop {
            let stop = tokio::select! {
                () = tokio::time::sleep(self.interval) => false,
                _ = stopping.wait_for(|s| *s) => true,
            };
            match diagnostics.exposition().await {
                Ok(text) => {
                    let resource = self.resource.clone();
                    if !self.exporter.push_exposition(&text, resource).await {
                        count_failure("metrics");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "encoding the control plane's metrics failed"),
            }
            if stop {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn metrics_are_pushed_only_when_kuma_turns_them_on() {
        let load = |pairs: &[(&str, &str)]| Config::load(None, &env(pairs)).unwrap();
        assert!(MetricsPush::from_config(&load(&[]), &[]).unwrap().is_none());
        let on = load(&[("KUMA_METRICS_OPENTELEMETRY_ENABLED", "true")]);
        let push = MetricsPush::from_config(
            &on,
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "1500"),
            ]),
        )
        .unwrap()
        .expect("on");
        assert_eq!(push.exporter.target(), "http://collector:4317");
        assert_eq!(push.interval, std::time::Duration::from_millis(1500));
        let bad = MetricsPush::from_config(&on, &env(&[("OTEL_METRIC_EXPORT_INTERVAL", "1m")]));
        assert!(matches!(bad, Err(TelemetryError::MetricsInterval(_))));
    }

    #[tokio::test]
    async fn a_collector_that_is_down_costs_a_counted_failure_not_a_wait() {
        let on = Config::load(
            None,
            &env(&[("KUMA_METRICS_OPENTELEMETRY_ENABLED", "true")]),
        )
        .unwrap();
        // A port nothing listens on: the connection is refused at once.
        let closed = store::testing::free_port();
        let push = MetricsPush::from_config(
            &on,
            &env(&[
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    &format!("http://127.0.0.1:{closed}"),
                ),
                ("OTEL_METRIC_EXPORT_INTERVAL", "20"),
            ]),
        )
        .unwrap()
        .expect("on");
        let mut registry = prometheus_client::registry::Registry::default();
        register_metrics(&mut registry);
        let diagnostics = std::sync::Arc::new(api::diagnostics::Diagnostics::new(
            registry,
            std::sync::Arc::new(store::memory::MemoryStore::new()),
            std::sync::Arc::default(),
        ));
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let pushing = tokio::spawn(push.run(diagnostics.clone(), stopping));
        let failed = "otlp_export_failures_total{signal=\"metrics\"}";
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let text = diagnostics.exposition().await.unwrap();
            if text
                .lines()
                .any(|l| l.starts_with(failed) && !l.ends_with(" 0"))
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no failure counted:\n{text}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        stop.send(true).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(15), pushing)
            .await
            .expect("the push stops when asked, its last export bounded")
            .unwrap();
    }

    #[test]
    fn tracing_is_on_as_kuma_turns_it_on() {
        let load = |pairs: &[(&str, &str)]| Config::load(None, &env(pairs)).unwrap();
        assert_eq!(endpoint(&load(&[]), &[]), None);
        let kuma = load(&[("KUMA_TRACING_OPENTELEMETRY_ENDPOINT", "otel-collector:4317")]);
        assert_eq!(
            endpoint(&kuma, &[]),
            Some(Some("http://otel-collector:4317".into()))
        );
        let enabled = load(&[("KUMA_TRACING_OPENTELEMETRY_ENABLED", "true")]);
        assert_eq!(endpoint(&enabled, &[]), Some(None));
        let standard = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]);
        assert_eq!(endpoint(&load(&[]), &standard), Some(None));
    }
}
