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
}

/// The tracer provider while tracing is on; [`Telemetry::shutdown`] flushes what is queued.
pub struct Telemetry {
    provider: SdkTracerProvider,
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
    let standard = env.iter().any(|(k, v)| {
        (k == "OTEL_EXPORTER_OTLP_ENDPOINT" || k == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            && !v.is_empty()
    });
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
            .with_batch_exporter(exporter)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
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
