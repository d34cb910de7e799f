//! W3C trace context for spans that continue a trace made elsewhere: a store change's cause,
//! a KDS delta's sender, an API caller. Without an OpenTelemetry layer installed (tracing off)
//! spans carry no context: nothing is read or attached.

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";

/// The `traceparent` of `span`, if it is part of a trace.
pub fn traceparent(span: &tracing::Span) -> Option<Arc<str>> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT).map(Arc::from)
}

/// The `traceparent` of the current span, if any (what a store write records as its cause).
pub fn current() -> Option<Arc<str>> {
    traceparent(&tracing::Span::current())
}

/// Makes `span` a child of the remote span `traceparent` names; a malformed value is ignored
/// (the span stays a root).
pub fn continue_from(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}
