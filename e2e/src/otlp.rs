//! An OTLP/gRPC collector (traces, logs and metrics) for the suites that check what Envoy,
//! kuma-dp or the control plane export: everything received goes to channels the test reads.

/// What the test's OTLP collector received.
#[derive(Clone)]
pub struct OtlpSink {
    spans: std::sync::mpsc::Sender<proto::kuma::otlp::Span>,
    logs: std::sync::mpsc::Sender<proto::kuma::otlp::LogRecord>,
    metrics: std::sync::mpsc::Sender<proto::kuma::otlp::ResourceMetrics>,
}

#[tonic::async_trait]
impl proto::opentelemetry::proto::collector::metrics::v1::metrics_service_server::MetricsService
    for OtlpSink
{
    async fn export(
        &self,
        request: tonic::Request<proto::kuma::otlp::ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<proto::kuma::otlp::ExportMetricsServiceResponse>, tonic::Status>
    {
        for resource in request.into_inner().resource_metrics {
            let _ = self.metrics.send(resource);
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tonic::async_trait]
impl proto::opentelemetry::proto::collector::trace::v1::trace_service_server::TraceService
    for OtlpSink
{
    async fn export(
        &self,
        request: tonic::Request<proto::kuma::otlp::ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<proto::kuma::otlp::ExportTraceServiceResponse>, tonic::Status> {
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let _ = self.spans.send(span);
                }
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tonic::async_trait]
impl proto::opentelemetry::proto::collector::logs::v1::logs_service_server::LogsService
    for OtlpSink
{
    async fn export(
        &self,
        request: tonic::Request<proto::kuma::otlp::ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<proto::kuma::otlp::ExportLogsServiceResponse>, tonic::Status> {
        for resource in request.into_inner().resource_logs {
            for scope in resource.scope_logs {
                for record in scope.log_records {
                    let _ = self.logs.send(record);
                }
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

pub type Received<T> = std::sync::mpsc::Receiver<T>;

/// The test's collector: its port and what it received.
pub struct Collector {
    pub port: u16,
    pub spans: Received<proto::kuma::otlp::Span>,
    pub logs: Received<proto::kuma::otlp::LogRecord>,
    /// Each export's metrics with the resource they are about.
    pub metrics: Received<proto::kuma::otlp::ResourceMetrics>,
}

/// A string attribute's value, if `attributes` has `key`.
pub fn attribute<'a>(attributes: &'a [proto::kuma::otlp::KeyValue], key: &str) -> Option<&'a str> {
    use proto::kuma::otlp::any_value::Value;
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// An OTLP/gRPC collector for the test (traces, logs, metrics), on its own runtime and thread.
pub fn otlp_collector() -> Collector {
    use proto::opentelemetry::proto::collector::{
        logs::v1::logs_service_server::LogsServiceServer,
        metrics::v1::metrics_service_server::MetricsServiceServer,
        trace::v1::trace_service_server::TraceServiceServer,
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a collector port");
    let port = listener.local_addr().expect("collector address").port();
    listener.set_nonblocking(true).expect("non-blocking");
    let (spans_tx, spans) = std::sync::mpsc::channel();
    let (logs_tx, logs) = std::sync::mpsc::channel();
    let (metrics_tx, metrics) = std::sync::mpsc::channel();
    let sink = OtlpSink {
        spans: spans_tx,
        logs: logs_tx,
        metrics: metrics_tx,
    };
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(sink.clone()))
                .add_service(LogsServiceServer::new(sink.clone()))
                .add_service(MetricsServiceServer::new(sink))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
    });
    Collector {
        port,
        spans,
        logs,
        metrics,
    }
}
