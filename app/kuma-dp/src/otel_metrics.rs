//! MeshMetric's OpenTelemetry backends (Kuma's kuma-dp `meshmetrics`): kuma-dp pushes the
//! metrics Prometheus would scrape (Envoy's, filtered by the profiles, and the applications',
//! labelled) over OTLP/gRPC into the socket Envoy opens for each backend
//! (`kuma-otel-<backend>.sock`), and Envoy forwards them to the collector.
//!
//! Nothing polls for the configuration: Envoy creates a backend's socket when the policy
//! reaches it, and kuma-dp watches its working directory (inotify) for that. Each push re-reads
//! the configuration (a 304 while it is unchanged), so a new interval or a removed backend is
//! seen at the next push. A collector that is down costs a failed push, logged once per outage
//! and counted in `kuma_dp_opentelemetry_export_failures_total`; it never blocks a scrape.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bin_support::otlp_metrics::{MetricsExporter, attribute};
use model::proxy_paths::MESH_METRIC_OTEL_SOCKET_PREFIX;
use rustix::fs::inotify;

use crate::metrics::{OtelTarget, State, configuration, merged};

/// How long a backend's socket may exist before Envoy's configuration listener lists it (both
/// arrive in one listener update, but not at the same instant).
const CONFIGURATION_GRACE: Duration = Duration::from_secs(2);
const CONFIGURATION_RETRY: Duration = Duration::from_millis(50);
/// Pushes skipped for an unreadable configuration before a pusher takes its backend for gone.
const UNREADABLE_PUSHES: u32 = 3;

/// Sockets created in kuma-dp's working directory: a thread blocks on inotify (no polling)
/// and hands the names of new OpenTelemetry sockets over; it ends with the watch.
pub(crate) struct SocketWatch {
    created: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl SocketWatch {
    pub(crate) fn new(dir: &Path) -> Result<SocketWatch> {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC).context("inotify_init")?;
        inotify::add_watch(
            &fd,
            dir,
            inotify::WatchFlags::CREATE | inotify::WatchFlags::MOVED_TO,
        )
        .context("inotify_add_watch")?;
        let (tx, created) = tokio::sync::mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("otel-socket-watch".into())
            .spawn(move || watch_directory(&fd, &tx))
            .context("starting the socket watch thread")?;
        Ok(SocketWatch { created })
    }

    /// The names of the next OpenTelemetry sockets created (waits for at least one); `None`
    /// when the watch failed.
    async fn created(&mut self) -> Option<Vec<String>> {
        let mut names = vec![self.created.recv().await?];
        while let Ok(name) = self.created.try_recv() {
            names.push(name);
        }
        Some(names)
    }
}

fn watch_directory(fd: &OwnedFd, tx: &tokio::sync::mpsc::UnboundedSender<String>) {
    let mut buffer = [MaybeUninit::<u8>::uninit(); 4096];
    let mut reader = inotify::Reader::new(fd, &mut buffer);
    loop {
        match reader.next() {
            Ok(event) => {
                let Some(name) = event.file_name().and_then(|n| n.to_str().ok()) else {
                    continue;
                };
                if name.starts_with(MESH_METRIC_OTEL_SOCKET_PREFIX) && tx.send(name.into()).is_err()
                {
                    return;
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                tracing::warn!(error = %e, "watching for MeshMetric OpenTelemetry sockets failed; backends added from now on are not pushed to");
                return;
            }
        }
    }
}

/// The running pushers by backend name; dropping this stops them.
#[derive(Default)]
struct Pushers(HashMap<String, tokio::task::JoinHandle<()>>);

impl Drop for Pushers {
    fn drop(&mut self) {
        for task in self.0.values() {
            task.abort();
        }
    }
}

impl Pushers {
    /// Starts a pusher for every backend of the current configuration without one; the
    /// backends' socket file names.
    async fn reconcile(&mut self, state: &Arc<State>) -> Vec<String> {
        self.0.retain(|_, task| !task.is_finished());
        let Ok(plan) = configuration(state).await else {
            return Vec::new();
        };
        for target in &plan.otel {
            if !self.0.contains_key(&target.name) {
                tracing::info!(backend = %target.name, socket = %target.socket.display(), interval = ?target.interval, "pushing metrics to a MeshMetric OpenTelemetry backend");
                let task = tokio::spawn(push(state.clone(), target.clone()));
                self.0.insert(target.name.clone(), task);
            }
        }
        plan.otel
            .iter()
            .filter_map(|t| t.socket.file_name()?.to_str().map(str::to_string))
            .collect()
    }
}

/// Starts and stops the pushers as backends come and go, until aborted.
pub(crate) async fn supervise(state: Arc<State>, mut watch: SocketWatch) {
    let mut pushers = Pushers::default();
    pushers.reconcile(&state).await;
    loop {
        let Some(created) = watch.created().await else {
            // The watch is gone (logged); the running pushers go on.
            std::future::pending::<()>().await;
            return;
        };
        let deadline = tokio::time::Instant::now() + CONFIGURATION_GRACE;
        loop {
            let known = pushers.reconcile(&state).await;
            if created.iter().all(|c| known.contains(c)) || tokio::time::Instant::now() >= deadline
            {
                break;
            }
            tokio::time::sleep(CONFIGURATION_RETRY).await;
        }
    }
}

/// What the pushes are about: the proxy's service, as OpenTelemetry names a source.
fn resource(labels: &[(String, String)]) -> Vec<proto::kuma::otlp::KeyValue> {
    let service = ["kuma_workload", "service"]
        .iter()
        .find_map(|key| labels.iter().find(|(k, _)| k == key))
        .map_or("kuma-dp", |(_, v)| v.as_str());
    vec![attribute("service.name", service)]
}

/// Pushes to one backend every interval (the first at once) while the configuration lists it.
async fn push(state: Arc<State>, target: OtelTarget) {
    let mut exporter = MetricsExporter::unix(target.socket.clone());
    let mut interval = target.interval;
    let mut unreadable = 0;
    loop {
        let plan = match configuration(&state).await {
            Ok(plan) => {
                unreadable = 0;
                plan
            }
            // Envoy replaces the configuration listener on a listener update: a refused read
            // may be that moment. Only a configuration gone for several pushes ends them.
            Err(e) if unreadable + 1 < UNREADABLE_PUSHES => {
                unreadable += 1;
                tracing::debug!(backend = %target.name, error = %format!("{e:#}"), "MeshMetric's configuration could not be read; skipping this push");
                tokio::time::sleep(interval).await;
                continue;
            }
            Err(e) => {
                tracing::info!(backend = %target.name, error = %format!("{e:#}"), "MeshMetric's configuration is gone; stopping the OpenTelemetry pushes");
                return;
            }
        };
        let Some(current) = plan.otel.iter().find(|t| t.name == target.name) else {
            tracing::info!(backend = %target.name, "the MeshMetric OpenTelemetry backend was removed; stopping its pushes");
            return;
        };
        interval = current.interval;
        match merged(&state, &plan).await {
            Ok(text) => {
                if !exporter
                    .push_exposition(&text, resource(&plan.labels))
                    .await
                {
                    state.count_export_failure();
                }
            }
            Err(e) => {
                tracing::warn!(backend = %target.name, error = %format!("{e:#}"), "scraping Envoy's statistics for the OpenTelemetry backend failed");
            }
        }
        tokio::time::sleep(interval).await;
    }
}
