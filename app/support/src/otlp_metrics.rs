//! Metrics pushed over OTLP/gRPC, made from a Prometheus text exposition: kuma-dp's MeshMetric
//! OpenTelemetry backends and the control plane's own metrics (`metrics.openTelemetry`). Both
//! already render that exposition for Prometheus, so converting it keeps one source for both
//! ways out, as Kuma's kuma-dp and its Prometheus bridge do.
//!
//! The mapping is Kuma's: a counter is a cumulative monotonic sum, a gauge (or an untyped
//! family) a gauge, a histogram an explicit-bucket histogram, and a summary a gauge per
//! quantile (the `quantile` attribute) with `<name>_count` and `<name>_sum` as sums. Labels
//! become the data points' attributes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use model::prometheus::{sample_value, split_sample, unescape};
use proto::kuma::otlp::{
    AggregationTemporality, AnyValue, ExportMetricsServiceRequest, Gauge, Histogram,
    HistogramDataPoint, InstrumentationScope, KeyValue, Metric, NumberDataPoint, Resource,
    ResourceMetrics, ScopeMetrics, Sum, any_value, metric, number_data_point,
};
use proto::opentelemetry::proto::collector::metrics::v1::metrics_service_client::MetricsServiceClient;

/// How long one export may take (OTLP's default `OTEL_EXPORTER_OTLP_TIMEOUT`).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the OTLP endpoint {0:?} is not a valid URI")]
    Endpoint(String, #[source] tonic::transport::Error),
    #[error("exporting metrics to {target}")]
    Rejected {
        target: String,
        #[source]
        status: tonic::Status,
    },
    #[error("exporting metrics to {target}: no answer within {EXPORT_TIMEOUT:?}")]
    Timeout { target: String },
}

/// A string attribute.
pub fn attribute(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
    }
}

/// One export: `metrics` under a resource with `resource` attributes and Kuma's scope.
fn request(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "kuma".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                metrics,
            }],
        }],
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl Kind {
    fn from_type(word: &str) -> Kind {
        match word {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "histogram" => Kind::Histogram,
            "summary" => Kind::Summary,
            _ => Kind::Untyped,
        }
    }

    /// The suffixes a family of this kind writes its samples under.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            Kind::Counter => &["_total", "_created"],
            Kind::Histogram => &["_bucket", "_sum", "_count", "_created"],
            Kind::Summary => &["_sum", "_count", "_created"],
            Kind::Gauge | Kind::Untyped => &[],
        }
    }
}

struct Sample {
    /// What follows the family's name (`""`, `"_bucket"`, `"_total"`, ...).
    suffix: String,
    labels: Vec<(String, String)>,
    value: f64,
    time_unix_nano: u64,
}

struct Family {
    name: String,
    help: String,
    kind: Kind,
    samples: Vec<Sample>,
}

impl Family {
    fn new(name: &str, kind: Kind) -> Family {
        Family {
            name: name.to_string(),
            help: String::new(),
            kind,
            samples: Vec::new(),
        }
    }

    fn suffix_of<'a>(&self, sample: &'a str) -> Option<&'a str> {
        let rest = sample.strip_prefix(self.name.as_str())?;
        (rest.is_empty() || self.kind.suffixes().contains(&rest)).then_some(rest)
    }
}

/// The families of an exposition with their samples; lines that are not samples are skipped.
fn families(text: &str, now_unix_nano: u64) -> Vec<Family> {
    let mut out: Vec<Family> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let (Some(what), Some(name)) = (words.next(), words.next()) else {
                continue;
            };
            let rest = words.next().unwrap_or("").trim();
            if !matches!(what, "TYPE" | "HELP") {
                continue;
            }
            if out.last().is_none_or(|f| f.name != name) {
                out.push(Family::new(name, Kind::Untyped));
            }
            let Some(family) = out.last_mut() else {
                continue;
            };
            if what == "TYPE" {
                family.kind = Kind::from_type(rest);
            } else {
                family.help = unescape(rest);
            }
            continue;
        }
        let Some((name, labels, rest)) = split_sample(line) else {
            continue;
        };
        let Some(value) = sample_value(rest) else {
            continue;
        };
        let time_unix_nano = rest
            .split_whitespace()
            .nth(1)
            .and_then(|ms| ms.parse::<u64>().ok())
            .map_or(now_unix_nano, |ms| ms.saturating_mul(1_000_000));
        let suffix = match out.last().and_then(|f| f.suffix_of(name)) {
            Some(suffix) => suffix.to_string(),
            None => {
                out.push(Family::new(name, Kind::Untyped));
                String::new()
            }
        };
        let Some(family) = out.last_mut() else {
            continue;
        };
        family.samples.push(Sample {
            suffix,
            labels: labels
                .into_iter()
                .map(|(k, v)| (k.to_string(), unescape(v)))
                .collect(),
            value,
            time_unix_nano,
        });
    }
    out
}

fn attributes(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| attribute(k, v)).collect()
}

fn number_point(sample: &Sample, start_unix_nano: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes(&sample.labels),
        start_time_unix_nano: start_unix_nano,
        time_unix_nano: sample.time_unix_nano,
        value: Some(number_data_point::Value::AsDouble(sample.value)),
    }
}

fn gauge(name: &str, help: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.to_string(),
        description: help.to_string(),
        unit: String::new(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
    }
}

fn cumulative_sum(name: &str, help: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.to_string(),
        description: help.to_string(),
        unit: String::new(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
    }
}

/// The histogram points of a family: one per label set (without `le`), buckets made
/// non-cumulative as OTLP counts them.
fn histogram_points(family: &Family, start_unix_nano: u64) -> Vec<HistogramDataPoint> {
    struct Acc {
        labels: Vec<(String, String)>,
        buckets: Vec<(f64, f64)>,
        sum: Option<f64>,
        count: Option<f64>,
        time_unix_nano: u64,
    }
    let mut series: Vec<Acc> = Vec::new();
    for sample in &family.samples {
        let labels: Vec<(String, String)> = sample
            .labels
            .iter()
            .filter(|(k, _)| k != "le")
            .cloned()
            .collect();
        let index = match series.iter().position(|s| s.labels == labels) {
            Some(i) => i,
            None => {
                series.push(Acc {
                    labels,
                    buckets: Vec::new(),
                    sum: None,
                    count: None,
                    time_unix_nano: sample.time_unix_nano,
                });
                series.len() - 1
            }
        };
        let acc = &mut series[index];
        match sample.suffix.as_str() {
            "_bucket" => {
                let le = sample
                    .labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .and_then(|(_, v)| sample_value(&format!(" {v}")));
                if let Some(le) = le {
                    acc.buckets.push((le, sample.value));
                }
            }
            "_sum" => acc.sum = Some(sample.value),
            "_count" => acc.count = Some(sample.value),
            _ => {}
        }
    }
    series
        .into_iter()
        .map(|mut acc| {
            acc.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let total = acc
                .count
                .or_else(|| acc.buckets.last().map(|b| b.1))
                .unwrap_or(0.0);
            let mut bounds = Vec::new();
            let mut counts = Vec::new();
            let mut below = 0.0;
            for (le, cumulative) in &acc.buckets {
                if le.is_infinite() {
                    continue;
                }
                bounds.push(*le);
                counts.push((cumulative - below).max(0.0) as u64);
                below = *cumulative;
            }
            counts.push((total - below).max(0.0) as u64);
            HistogramDataPoint {
                attributes: attributes(&acc.labels),
                start_time_unix_nano: start_unix_nano,
                time_unix_nano: acc.time_unix_nano,
                count: total as u64,
                sum: acc.sum,
                bucket_counts: counts,
                explicit_bounds: bounds,
            }
        })
        .collect()
}

/// The metrics of a Prometheus text exposition. `start_unix_nano` is when counting started
/// (the process's start); samples without a timestamp are stamped `now_unix_nano`.
fn metrics_from_exposition(text: &str, start_unix_nano: u64, now_unix_nano: u64) -> Vec<Metric> {
    let mut out = Vec::new();
    for family in families(text, now_unix_nano) {
        if family.samples.is_empty() {
            continue;
        }
        let points = |suffixes: &[&str]| -> Vec<NumberDataPoint> {
            family
                .samples
                .iter()
                .filter(|s| suffixes.contains(&s.suffix.as_str()))
                .map(|s| number_point(s, start_unix_nano))
                .collect()
        };
        match family.kind {
            Kind::Counter => out.push(cumulative_sum(
                &family.name,
                &family.help,
                points(&["", "_total"]),
            )),
            Kind::Gauge | Kind::Untyped => {
                out.push(gauge(&family.name, &family.help, points(&[""])));
            }
            Kind::Histogram => out.push(Metric {
                name: family.name.clone(),
                description: family.help.clone(),
                unit: String::new(),
                data: Some(metric::Data::Histogram(Histogram {
                    data_points: histogram_points(&family, start_unix_nano),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                })),
            }),
            Kind::Summary => {
                let quantiles = points(&[""]);
                if !quantiles.is_empty() {
                    out.push(gauge(&family.name, &family.help, quantiles));
                }
                for suffix in ["_count", "_sum"] {
                    let points = points(&[suffix]);
                    if !points.is_empty() {
                        let name = format!("{}{suffix}", family.name);
                        out.push(cumulative_sum(&name, &family.help, points));
                    }
                }
            }
        }
    }
    out
}

/// Nanoseconds since the Unix epoch, as OTLP stamps points.
fn unix_nanos(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// An OTLP/gRPC metrics client. The connection is made on first use and remade after a
/// failure, so a collector that is down costs a failed export, never a blocked caller.
pub struct MetricsExporter {
    client: MetricsServiceClient<tonic::transport::Channel>,
    target: String,
    /// When counting started: the start of every cumulative point pushed.
    started_unix_nano: u64,
    /// Whether the last push failed (an outage is logged at its start and end only).
    failing: bool,
}

impl MetricsExporter {
    /// A collector at `endpoint` (`http://host:4317`; a bare `host:port` is plaintext).
    pub fn tcp(endpoint: &str) -> Result<MetricsExporter, ExportError> {
        let uri = if endpoint.contains("://") {
            endpoint.to_string()
        } else {
            format!("http://{endpoint}")
        };
        let channel = tonic::transport::Endpoint::from_shared(uri.clone())
            .map_err(|e| ExportError::Endpoint(endpoint.to_string(), e))?
            .connect_timeout(EXPORT_TIMEOUT)
            .connect_lazy();
        Ok(MetricsExporter::new(channel, uri))
    }

    /// A collector behind a Unix socket (Envoy's MeshMetric OpenTelemetry listener).
    pub fn unix(socket: PathBuf) -> MetricsExporter {
        let target = socket.display().to_string();
        let socket = Arc::new(socket);
        let connector = tower::service_fn(move |_: http::Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket.as_path()).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        let channel = tonic::transport::Endpoint::from_static("http://localhost")
            .connect_timeout(EXPORT_TIMEOUT)
            .connect_with_connector_lazy(connector);
        MetricsExporter::new(channel, target)
    }

    fn new(channel: tonic::transport::Channel, target: String) -> MetricsExporter {
        MetricsExporter {
            client: MetricsServiceClient::new(channel),
            target,
            started_unix_nano: unix_nanos(std::time::SystemTime::now()),
            failing: false,
        }
    }

    /// Pushes the metrics of a Prometheus exposition about `resource`; false when the
    /// collector did not take them (they are dropped). The first failure of an outage and
    /// the recovery are logged, not every failed push.
    pub async fn push_exposition(&mut self, exposition: &str, resource: Vec<KeyValue>) -> bool {
        let now = unix_nanos(std::time::SystemTime::now());
        let metrics = metrics_from_exposition(exposition, self.started_unix_nano, now);
        match self.export(request(resource, metrics)).await {
            Ok(()) => {
                if self.failing {
                    tracing::info!(collector = %self.target, "the OTLP collector takes metrics again");
                    self.failing = false;
                }
                true
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(error = %model::error_chain(&e), "pushing metrics over OTLP failed; retrying every interval");
                    self.failing = true;
                }
                false
            }
        }
    }

    /// Where this exporter sends.
    pub fn target(&self) -> &str {
        &self.target
    }

    async fn export(&mut self, request: ExportMetricsServiceRequest) -> Result<(), ExportError> {
        match tokio::time::timeout(EXPORT_TIMEOUT, self.client.export(request)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(ExportError::Rejected {
                target: self.target.clone(),
                status,
            }),
            Err(_) => Err(ExportError::Timeout {
                target: self.target.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(metrics: &'a [Metric], name: &str) -> &'a metric::Data {
        metrics
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.data.as_ref())
            .unwrap_or_else(|| panic!("no metric {name} in {metrics:?}"))
    }

    fn label<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
        attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
            match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.as_str()),
                _ => None,
            }
        })
    }

    const EXPOSITION: &str = "\
# HELP http_requests_total Requests \\\\ served.
# TYPE http_requests_total counter
http_requests_total{code=\"200\",path=\"/a\\\"b\"} 7
http_requests_total{code=\"500\",path=\"/\"} 1 1700000000000
# TYPE temperature gauge
temperature 21.5
untyped_thing{x=\"y\"} 3
# TYPE latency_seconds histogram
latency_seconds_bucket{route=\"r\",le=\"0.1\"} 2
latency_seconds_bucket{route=\"r\",le=\"1\"} 5
latency_seconds_bucket{route=\"r\",le=\"+Inf\"} 6
latency_seconds_sum{route=\"r\"} 3.5
latency_seconds_count{route=\"r\"} 6
# TYPE rpc_duration summary
rpc_duration{quantile=\"0.5\"} 0.2
rpc_duration{quantile=\"0.99\"} 0.9
rpc_duration_sum 12
rpc_duration_count 40
";

    #[test]
    fn an_exposition_maps_onto_otlp_as_kumas_kuma_dp_maps_it() {
        let metrics = metrics_from_exposition(EXPOSITION, 10, 20);
        let metric::Data::Sum(requests) = find(&metrics, "http_requests_total") else {
            panic!("a counter is a sum");
        };
        assert!(requests.is_monotonic);
        assert_eq!(
            requests.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        assert_eq!(requests.data_points.len(), 2);
        let first = &requests.data_points[0];
        assert_eq!(label(&first.attributes, "path"), Some("/a\"b"));
        assert_eq!(first.value, Some(number_data_point::Value::AsDouble(7.0)));
        assert_eq!((first.start_time_unix_nano, first.time_unix_nano), (10, 20));
        assert_eq!(
            requests.data_points[1].time_unix_nano,
            1_700_000_000_000_000_000
        );
        let help = metrics
            .iter()
            .find(|m| m.name == "http_requests_total")
            .map(|m| m.description.as_str());
        assert_eq!(help, Some("Requests \\ served."));

        assert!(
            matches!(find(&metrics, "temperature"), metric::Data::Gauge(g) if g.data_points.len() == 1)
        );
        assert!(matches!(
            find(&metrics, "untyped_thing"),
            metric::Data::Gauge(_)
        ));

        let metric::Data::Histogram(latency) = find(&metrics, "latency_seconds") else {
            panic!("a histogram is a histogram");
        };
        let point = &latency.data_points[0];
        assert_eq!(point.explicit_bounds, vec![0.1, 1.0]);
        assert_eq!(point.bucket_counts, vec![2, 3, 1]);
        assert_eq!((point.count, point.sum), (6, Some(3.5)));
        assert_eq!(label(&point.attributes, "route"), Some("r"));
        assert_eq!(label(&point.attributes, "le"), None);

        let metric::Data::Gauge(quantiles) = find(&metrics, "rpc_duration") else {
            panic!("a summary's quantiles are a gauge");
        };
        assert_eq!(quantiles.data_points.len(), 2);
        assert_eq!(
            label(&quantiles.data_points[1].attributes, "quantile"),
            Some("0.99")
        );
        assert!(
            matches!(find(&metrics, "rpc_duration_count"), metric::Data::Sum(s) if s.is_monotonic)
        );
        assert!(matches!(
            find(&metrics, "rpc_duration_sum"),
            metric::Data::Sum(_)
        ));
    }

    #[test]
    fn garbage_lines_are_skipped_not_fatal() {
        let metrics = metrics_from_exposition("<html>\nok 1\nbroken{a=\"x} 2\n# TYPE\n", 0, 1);
        assert_eq!(metrics.len(), 1);
        assert_eq!(metrics[0].name, "ok");
    }

    #[tokio::test]
    async fn a_collector_that_is_down_is_an_error_not_a_hang() {
        let mut exporter =
            MetricsExporter::unix(std::env::temp_dir().join("kuma-no-collector-here.sock"));
        let result = exporter.export(request(Vec::new(), Vec::new())).await;
        assert!(result.is_err(), "{result:?}");
        assert!(MetricsExporter::tcp("http://bad host:1").is_err());
    }
}
