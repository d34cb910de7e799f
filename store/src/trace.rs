//! W3C trace context for spans that continue a trace made elsewhere: a store change's cause,
//! a KDS delta's sender, an API caller. Without an OpenTelemetry layer installed (tracing off)
//! spans carry no context: nothing is read or attached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use model::ResourceKey;

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

/// The causes of this replica's own writes, kept until the backend's change notification for
/// them comes back (Postgres's NOTIFY, etcd's watch), so the change event carries the trace of
/// the write that made it, as the memory store's do. A write made through another replica
/// arrives without one.
#[derive(Clone, Default)]
pub struct PendingCauses(Arc<Mutex<HashMap<ResourceKey, Arc<str>>>>);

impl PendingCauses {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<ResourceKey, Arc<str>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Before writing `key`: the current span's trace becomes the cause of its next change
    /// event. Recorded before the write, as the notification may arrive before the write
    /// returns; dropping the guard without [`Pending::committed`] forgets it again.
    pub fn expect(&self, key: &ResourceKey) -> Pending {
        let mut map = self.map();
        match current() {
            Some(cause) => {
                map.insert(key.clone(), cause);
            }
            None => {
                map.remove(key);
            }
        }
        Pending {
            causes: self.clone(),
            key: Some(key.clone()),
        }
    }

    /// The cause of `key`'s change event, if this replica wrote it in a trace.
    pub fn take(&self, key: &ResourceKey) -> Option<Arc<str>> {
        self.map().remove(key)
    }
}

/// A write in progress; see [`PendingCauses::expect`].
pub struct Pending {
    causes: PendingCauses,
    key: Option<ResourceKey>,
}

impl Pending {
    /// The write happened: its change event will come.
    pub fn committed(mut self) {
        self.key = None;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.causes.map().remove(&key);
        }
    }
}
