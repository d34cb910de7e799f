//! The metrics hijacker (Kuma's kuma-dp `metrics`): Envoy's MeshMetric Prometheus listener
//! forwards every scrape to this server, on a socket in kuma-dp's working directory. Each
//! scrape reads MeshMetric's configuration from Envoy's `_kuma:dynamicconfig` listener (a 304
//! while it is unchanged), scrapes Envoy's statistics and the configured applications at
//! once, keeps the Envoy metrics the sidecar profiles select, labels every sample with the
//! proxy's labels, and answers the merge in Prometheus's text format.
//!
//! An application that times out, refuses or answers garbage is left out of that scrape and
//! counted (`kuma_dp_application_scrape_failures_total`); the proxy's own metrics are still
//! served.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use model::prometheus::{label_name, push_escaped, sample_value, split_sample};
use model::proxy_paths::MESH_METRIC_PATH;
use model::specs::policy::{MetricProfileName, MetricSelector, MetricSelectorType, MetricSidecar};
use serde::Deserialize;

/// How long one application may take to answer a scrape.
const APPLICATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Envoy's own statistics are local; a slower answer is a stuck Envoy.
const ENVOY_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest exposition read from Envoy or an application (a larger one is not metrics).
const MAX_EXPOSITION: usize = 64 << 20;
/// The largest configuration read from Envoy's dynamic configuration listener.
const MAX_CONFIG: usize = 1 << 20;

/// MeshMetric's configuration for this proxy, as the control plane renders it.
#[derive(Debug, Default, Deserialize)]
struct DpConfig {
    observability: Observability,
}

#[derive(Debug, Default, Deserialize)]
struct Observability {
    metrics: Metrics,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metrics {
    #[serde(default)]
    applications: Vec<Application>,
    #[serde(default)]
    sidecar: Option<MetricSidecar>,
    #[serde(default)]
    extra_labels: BTreeMap<String, String>,
    #[serde(default)]
    backends: Vec<Backend>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Backend {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    open_telemetry: Option<OtelBackend>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OtelBackend {
    endpoint: PathBuf,
    #[serde(default)]
    refresh_interval: Option<String>,
}

/// An OpenTelemetry backend kuma-dp pushes to: Envoy's socket for it, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OtelTarget {
    pub name: String,
    pub socket: PathBuf,
    pub interval: Duration,
}

/// How often to push when the control plane does not say (Kuma's default).
const DEFAULT_PUSH_INTERVAL: Duration = Duration::from_secs(60);
/// The shortest push interval honoured: a collector is not a busy loop.
const MIN_PUSH_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Deserialize)]
pub(crate) struct Application {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    path: String,
    port: u32,
    #[serde(default)]
    address: String,
}

/// What one configuration means for a scrape, worked out once per configuration.
pub(crate) struct Plan {
    applications: Vec<Application>,
    profile: Profile,
    include_unused: bool,
    /// `name="value"` pairs, label names made valid for Prometheus.
    pub labels: Vec<(String, String)>,
    pub otel: Vec<OtelTarget>,
}

impl Plan {
    fn new(config: DpConfig) -> Plan {
        let metrics = config.observability.metrics;
        let otel = metrics
            .backends
            .iter()
            .filter(|b| b.kind == "OpenTelemetry")
            .filter_map(|b| {
                let otel = b.open_telemetry.as_ref()?;
                let interval = match otel.refresh_interval.as_deref() {
                    None | Some("") => DEFAULT_PUSH_INTERVAL,
                    Some(text) => model::duration::parse_duration(text).unwrap_or_else(|e| {
                        tracing::warn!(backend = b.name.as_deref().unwrap_or(""), interval = text, error = %e, "MeshMetric OpenTelemetry refreshInterval is not a duration; pushing every minute");
                        DEFAULT_PUSH_INTERVAL
                    }),
                };
                Some(OtelTarget {
                    name: b.name.clone().unwrap_or_default(),
                    socket: otel.endpoint.clone(),
                    interval: interval.max(MIN_PUSH_INTERVAL),
                })
            })
            .collect();
        Plan {
            otel,
            profile: Profile::new(metrics.sidecar.as_ref()),
            include_unused: metrics
                .sidecar
                .as_ref()
                .and_then(|s| s.include_unused)
                .unwrap_or(false),
            labels: metrics
                .extra_labels
                .into_iter()
                .map(|(k, v)| (label_name(&k), v))
                .collect(),
            applications: metrics.applications,
        }
    }
}

pub(crate) struct State {
    config_socket: PathBuf,
    /// The Mesh's legacy Prometheus backend's applications (Kuma's `aggregate`), from the
    /// bootstrap.
    legacy_applications: Vec<Application>,
    envoy_admin: String,
    http: reqwest::Client,
    /// The last configuration read and its ETag.
    config: Mutex<Option<(String, Arc<Plan>)>>,
    application_failures: AtomicU64,
    export_failures: AtomicU64,
}

impl State {
    pub(crate) fn count_export_failure(&self) {
        self.export_failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// Serves merged metrics on `socket` (replacing what is there), and pushes them to the
/// OpenTelemetry backends Envoy opens sockets for in `workdir`, until the task is aborted.
pub fn start(
    socket: &Path,
    config_socket: PathBuf,
    workdir: &Path,
    admin_port: u64,
    legacy_applications: Vec<Application>,
) -> Result<tokio::task::JoinHandle<()>> {
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", socket.display())),
    }
    let listener = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("listening on the metrics socket {}", socket.display()))?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .context("building the metrics scrape client")?;
    let state = Arc::new(State {
        config_socket,
        legacy_applications,
        envoy_admin: format!("http://127.0.0.1:{admin_port}"),
        http,
        config: Mutex::new(None),
        application_failures: AtomicU64::new(0),
        export_failures: AtomicU64::new(0),
    });
    tracing::info!(socket = %socket.display(), "serving merged metrics for Envoy's Prometheus listener");
    let watch = crate::otel_metrics::SocketWatch::new(workdir)
        .with_context(|| format!("watching {} for OpenTelemetry sockets", workdir.display()))?;
    Ok(tokio::spawn(async move {
        tokio::join!(
            accept(listener, state.clone()),
            crate::otel_metrics::supervise(state, watch)
        );
    }))
}

async fn accept(listener: tokio::net::UnixListener, state: Arc<State>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting on the metrics socket failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

/// The applications of the bootstrap answer's `kumaSidecarConfiguration.metrics.aggregate`.
pub(crate) fn legacy_applications(aggregate: serde_json::Value) -> Result<Vec<Application>> {
    if aggregate.is_null() {
        return Ok(Vec::new());
    }
    Ok(serde_json::from_value(aggregate)?)
}

async fn handle(state: &State, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let body = if req.uri().path() == MESH_METRIC_PATH {
        let plan = match configuration(state).await {
            Ok(plan) => plan,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "reading MeshMetric's configuration from Envoy failed");
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("MeshMetric configuration unavailable: {e:#}\n"),
                );
            }
        };
        merged(state, &plan).await
    } else {
        // The Mesh's legacy endpoint: Envoy rewrote the scrape to `/?usedonly&filter=...`.
        legacy(state, req.uri().query().unwrap_or("")).await
    };
    match body {
        Ok(body) => text(StatusCode::OK, body),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "scraping Envoy's statistics failed");
            text(StatusCode::BAD_GATEWAY, format!("Envoy: {e:#}\n"))
        }
    }
}

/// What the Mesh's legacy endpoint serves (Kuma's hijacker without MeshMetric): Envoy's
/// statistics as `query` asks (`usedonly`, `filter`), and the aggregate applications', as
/// they are (MADS labels the target).
async fn legacy(state: &State, query: &str) -> Result<String> {
    let mut envoy_query = vec!["text_readouts".to_string()];
    for pair in query.split('&') {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        if matches!(key, "usedonly" | "filter") {
            envoy_query.push(pair.to_string());
        }
    }
    let url = format!(
        "{}/stats/prometheus?{}",
        state.envoy_admin,
        envoy_query.join("&")
    );
    let envoy = fetch(&state.http, &url, ENVOY_TIMEOUT);
    let mut out = combine(state, envoy, &state.legacy_applications, None, &[]).await?;
    append_failure_counters(state, &[], &mut out);
    Ok(out)
}

/// Envoy's statistics the profiles keep and the applications' metrics, labelled, in
/// Prometheus's text format; an error only when Envoy does not answer.
pub(crate) async fn merged(state: &State, plan: &Plan) -> Result<String> {
    let envoy = scrape_envoy(state, plan.include_unused);
    let mut out = combine(
        state,
        envoy,
        &plan.applications,
        Some(&plan.profile),
        &plan.labels,
    )
    .await?;
    append_failure_counters(state, &plan.labels, &mut out);
    Ok(out)
}

/// Envoy's exposition (kept as `profile` says) and the applications' (left out when they
/// fail, counted), each sample with `labels`.
async fn combine(
    state: &State,
    envoy: impl std::future::Future<Output = Result<String>>,
    applications: &[Application],
    profile: Option<&Profile>,
    labels: &[(String, String)],
) -> Result<String> {
    let scrapes = futures::future::join_all(
        applications
            .iter()
            .map(|app| scrape_application(state, app)),
    );
    let (envoy, scrapes) = tokio::join!(envoy, scrapes);
    let envoy = envoy?;
    let mut out = String::with_capacity(envoy.len());
    filter_and_label(&envoy, profile, labels, &mut out);
    for (app, body) in applications.iter().zip(scrapes) {
        match body {
            Ok(body) => filter_and_label(&body, None, labels, &mut out),
            Err(e) => {
                state.application_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    application = app.name.as_deref().unwrap_or(""),
                    port = app.port,
                    error = %format!("{e:#}"),
                    "scraping an application failed; its metrics are left out of this scrape"
                );
            }
        }
    }
    Ok(out)
}

fn append_failure_counters(state: &State, labels: &[(String, String)], out: &mut String) {
    for (name, help, count) in [
        (
            "kuma_dp_application_scrape_failures_total",
            "Application scrapes kuma-dp could not include.",
            &state.application_failures,
        ),
        (
            "kuma_dp_opentelemetry_export_failures_total",
            "Metric pushes to MeshMetric OpenTelemetry backends that failed.",
            &state.export_failures,
        ),
    ] {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        let value = count.load(Ordering::Relaxed).to_string();
        push_sample(name, &value, labels, out);
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The current configuration: the cached one when Envoy answers 304.
pub(crate) async fn configuration(state: &State) -> Result<Arc<Plan>> {
    let cached = state
        .config
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let etag = cached.as_ref().map(|(etag, _)| etag.as_str());
    let (etag, body) =
        match crate::dynconf::fetch(&state.config_socket, MESH_METRIC_PATH, etag, MAX_CONFIG)
            .await?
        {
            crate::dynconf::Fetched::Changed { etag, body } => (etag, body),
            crate::dynconf::Fetched::Unchanged => match cached {
                Some((_, plan)) => return Ok(plan),
                None => bail!("Envoy's configuration listener answered 304 to a first request"),
            },
            crate::dynconf::Fetched::Missing => {
                bail!("Envoy's configuration listener has no MeshMetric configuration")
            }
        };
    let config: DpConfig =
        serde_json::from_slice(&body).context("MeshMetric's configuration is not valid")?;
    let plan = Arc::new(Plan::new(config));
    *state.config.lock().unwrap_or_else(|p| p.into_inner()) = Some((etag, plan.clone()));
    Ok(plan)
}

async fn scrape_envoy(state: &State, include_unused: bool) -> Result<String> {
    let query = if include_unused {
        "text_readouts"
    } else {
        "usedonly&text_readouts"
    };
    let url = format!("{}/stats/prometheus?{query}", state.envoy_admin);
    fetch(&state.http, &url, ENVOY_TIMEOUT).await
}

async fn scrape_application(state: &State, app: &Application) -> Result<String> {
    let host = match app.address.as_str() {
        "" => "127.0.0.1",
        a => a,
    };
    let path = match app.path.as_str() {
        "" => "/metrics",
        p => p,
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let url = format!("http://{host}:{}{path}", app.port);
    fetch(&state.http, &url, APPLICATION_TIMEOUT).await
}

async fn fetch(http: &reqwest::Client, url: &str, timeout: Duration) -> Result<String> {
    let response = http
        .get(url)
        // The text format: what this merge reads and writes.
        .header(reqwest::header::ACCEPT, "text/plain;version=0.0.4")
        .timeout(timeout)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !response.status().is_success() {
        bail!("GET {url} answered {}", response.status());
    }
    if response
        .content_length()
        .is_some_and(|l| l > MAX_EXPOSITION as u64)
    {
        bail!("GET {url}: the answer is larger than {MAX_EXPOSITION} bytes");
    }
    let body = response
        .bytes()
        .await
        .with_context(|| format!("reading GET {url}"))?;
    if body.len() > MAX_EXPOSITION {
        bail!("GET {url}: the answer is larger than {MAX_EXPOSITION} bytes");
    }
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| anyhow::anyhow!("GET {url}: the answer is not UTF-8 text"))?;
    check_exposition(&text).with_context(|| format!("GET {url}"))?;
    Ok(text)
}

/// Refuses what is not Prometheus's text format (an HTML page, JSON), so garbage is not
/// merged into the proxy's metrics.
fn check_exposition(text: &str) -> Result<()> {
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, _, rest)) = split_sample(line) else {
            bail!("line {} is not a Prometheus sample", n + 1);
        };
        if name.is_empty() || sample_value(rest).is_none() {
            bail!("line {} is not a Prometheus sample", n + 1);
        }
    }
    Ok(())
}

/// A selector over metric names (Kuma's `selectorToFilterFunction`).
enum Selector {
    Always,
    Never,
    Contains(String),
    Prefix(String),
    Exact(String),
    Regex(regex::Regex),
}

impl Selector {
    fn of(s: &MetricSelector) -> Selector {
        let m = s.match_value.clone();
        match s.selector_type {
            MetricSelectorType::Contains => Selector::Contains(m),
            MetricSelectorType::Prefix => Selector::Prefix(m),
            MetricSelectorType::Exact => Selector::Exact(m),
            // As Kuma's: an invalid expression selects nothing.
            MetricSelectorType::Regex => regex::Regex::new(&m)
                .map(Selector::Regex)
                .unwrap_or(Selector::Never),
        }
    }

    fn selects(&self, value: &str) -> bool {
        match self {
            Selector::Always => true,
            Selector::Never => false,
            Selector::Contains(m) => value.contains(m.as_str()),
            Selector::Prefix(m) => value.starts_with(m.as_str()),
            Selector::Exact(m) => value == m,
            Selector::Regex(r) => r.is_match(value),
        }
    }
}

/// Kuma's Basic profile: the golden signals, what Kuma's dashboards show, and DNS.
const BASIC_CONTAINS: &[&str] = &[
    "rq_time",
    "cx_length_ms",
    "cx_count",
    "_rq",
    "bytes",
    "timeout",
    "health_check",
    "lb_healthy_panic",
    "cx_destroy",
    "error",
    "fail",
    "reset",
    "eject",
    "overflow",
    "cancelled",
    "max_duration_reached",
    "no_cluster",
    "no_route",
    "no_filter_chain",
    "reject",
    "denied",
    "days_until_first_cert_expiring",
    "rbac",
    "cx_active",
    "cx_connect",
    "circuit_breakers",
    "cx_total",
    "ssl_handshake",
    "ssl_context_update_by_sds",
];
const BASIC_EXACT: &[&str] = &[
    "envoy_cluster_membership_degraded",
    "envoy_cluster_membership_healthy",
    "envoy_cluster_ssl_handshake",
    "envoy_cluster_membership_total",
];
const BASIC_PREFIX: &[&str] = &[
    "envoy_server",
    "envoy_control_plane",
    "envoy_dns_filter",
    "envoy_dns_cares",
    "kuma_dp_dns",
];
/// Labels naming the cluster, connection manager or listener a sample is about.
const ENTITY_LABELS: &[&str] = &[
    "envoy_cluster_name",
    "envoy_http_conn_manager_prefix",
    "envoy_listener_address",
];
/// The control plane's own clusters and listeners as Envoy names them in statistics (`:`
/// becomes `_`): the Basic profile leaves their samples out.
const INTERNAL_PREFIXES: &[&str] = &["_kuma", "kuma_", "meshtrace_", "meshaccesslog_"];
const INTERNAL_EXACT: &[&str] = &["ads_cluster", "access_log_sink"];

fn basic() -> Vec<Selector> {
    let contains = BASIC_CONTAINS
        .iter()
        .map(|m| Selector::Contains(m.to_string()));
    let exact = BASIC_EXACT.iter().map(|m| Selector::Exact(m.to_string()));
    let prefix = BASIC_PREFIX.iter().map(|m| Selector::Prefix(m.to_string()));
    contains.chain(exact).chain(prefix).collect()
}

/// Which of Envoy's metric families a scrape keeps (Kuma's `ProfileMutatorGenerator`).
struct Profile {
    selectors: Vec<Selector>,
    exclude: Vec<Selector>,
    include: Vec<Selector>,
    /// Basic (the broadest profile asked for): internal clusters' samples are left out.
    drops_internal: bool,
}

impl Profile {
    fn new(sidecar: Option<&MetricSidecar>) -> Profile {
        let profiles = sidecar.and_then(|s| s.profiles.as_ref());
        let mut names: Vec<MetricProfileName> = profiles
            .and_then(|p| p.append_profiles.as_ref())
            .map(|a| a.iter().map(|p| p.name).collect())
            .unwrap_or_default();
        if names.is_empty() {
            names.push(MetricProfileName::Basic);
        }
        // The broadest first: All contains Basic contains None.
        let rank = |n: &MetricProfileName| match n {
            MetricProfileName::All => 0,
            MetricProfileName::Basic => 1,
            MetricProfileName::None => 2,
        };
        names.sort_by_key(rank);
        let selectors = match names[0] {
            MetricProfileName::All => vec![Selector::Always],
            MetricProfileName::Basic => basic(),
            MetricProfileName::None => vec![Selector::Never],
        };
        let list = |l: Option<&Vec<MetricSelector>>| -> Vec<Selector> {
            l.map(|l| l.iter().map(Selector::of).collect())
                .unwrap_or_default()
        };
        Profile {
            selectors,
            exclude: list(profiles.and_then(|p| p.exclude.as_ref())),
            include: list(profiles.and_then(|p| p.include.as_ref())),
            drops_internal: names[0] == MetricProfileName::Basic,
        }
    }

    /// Whether the family named `name` is kept (include wins over exclude).
    fn keeps(&self, name: &str) -> bool {
        if self.include.iter().any(|s| s.selects(name)) {
            return true;
        }
        if self.exclude.iter().any(|s| s.selects(name)) {
            return false;
        }
        self.selectors.iter().any(|s| s.selects(name))
    }

    fn keeps_sample(&self, labels: &[(&str, &str)]) -> bool {
        !self.drops_internal
            || !labels.iter().any(|(k, v)| {
                ENTITY_LABELS.contains(k)
                    && (INTERNAL_EXACT.contains(v)
                        || INTERNAL_PREFIXES.iter().any(|p| v.starts_with(p)))
            })
    }
}

/// One metric family's lines while it is read: written out only if a sample survives.
#[derive(Default)]
struct Family<'a> {
    name: &'a str,
    kept: bool,
    comments: Vec<&'a str>,
    samples: Vec<&'a str>,
}

/// Appends `text` to `out`: the families `profile` keeps (every family without one), each
/// sample with `extra` labels it does not carry itself. `# EOF` (OpenMetrics) is dropped, as
/// the merge goes on after it.
fn filter_and_label(
    text: &str,
    profile: Option<&Profile>,
    extra: &[(String, String)],
    out: &mut String,
) {
    let mut family = Family::default();
    let flush = |family: &mut Family<'_>, out: &mut String| {
        if family.kept && !family.samples.is_empty() {
            for c in &family.comments {
                out.push_str(c);
                out.push('\n');
            }
            for s in &family.samples {
                let Some((name, labels, rest)) = split_sample(s) else {
                    continue;
                };
                let mut line = String::with_capacity(s.len() + 64);
                line.push_str(name);
                line.push('{');
                let mut first = true;
                for (k, v) in &labels {
                    if !first {
                        line.push(',');
                    }
                    first = false;
                    line.push_str(k);
                    line.push_str("=\"");
                    line.push_str(v);
                    line.push('"');
                }
                for (k, v) in extra {
                    if labels.iter().any(|(have, _)| have == k) {
                        continue;
                    }
                    if !first {
                        line.push(',');
                    }
                    first = false;
                    line.push_str(k);
                    line.push_str("=\"");
                    push_escaped(v, &mut line);
                    line.push('"');
                }
                line.push('}');
                line.push_str(rest);
                out.push_str(&line);
                out.push('\n');
            }
        }
        *family = Family::default();
    };
    for line in text.lines() {
        let trimmed = line.trim_end();
        if trimmed.is_empty() || trimmed == "# EOF" {
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            let (Some(kind), Some(name)) = (words.next(), words.next()) else {
                continue;
            };
            if !matches!(kind, "HELP" | "TYPE") {
                continue;
            }
            if name != family.name {
                flush(&mut family, out);
                family.name = name;
                family.kept = profile.is_none_or(|p| p.keeps(name));
            }
            family.comments.push(trimmed);
            continue;
        }
        let Some((name, labels, _)) = split_sample(trimmed) else {
            continue;
        };
        if family.name.is_empty() || !name.starts_with(family.name) {
            flush(&mut family, out);
            family.name = name;
            family.kept = profile.is_none_or(|p| p.keeps(name));
        }
        if family.kept && profile.is_none_or(|p| p.keeps_sample(&labels)) {
            family.samples.push(trimmed);
        }
    }
    flush(&mut family, out);
}

fn push_sample(name: &str, value: &str, labels: &[(String, String)], out: &mut String) {
    let line = format!("{name} {value}");
    let mut sample = String::new();
    filter_and_label(&line, None, labels, &mut sample);
    out.push_str(&sample);
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// The sample names of an exposition and how many samples each has.
    fn families(text: &str) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if let Some((name, _, _)) = split_sample(line) {
                *out.entry(name.to_string()).or_default() += 1;
            }
        }
        out
    }

    const ENVOY: &str = "\
# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name=\"backend\"} 7
envoy_cluster_upstream_rq_total{envoy_cluster_name=\"ads_cluster\"} 3
envoy_cluster_upstream_rq_total{envoy_cluster_name=\"_kuma_metrics_hijacker\"} 1
# TYPE envoy_cluster_lb_subsets_active gauge
envoy_cluster_lb_subsets_active{envoy_cluster_name=\"backend\"} 0
# TYPE envoy_server_live gauge
envoy_server_live{} 1
# TYPE envoy_cluster_upstream_rq_time histogram
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"backend\",le=\"0.5\"} 2
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name=\"backend\"} 1.5
envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"backend\"} 2
";

    fn sidecar(yaml: &str) -> MetricSidecar {
        serde_saphyr::from_str(yaml).expect("a valid sidecar")
    }

    fn run(profile: &Profile, labels: &[(String, String)]) -> String {
        let mut out = String::new();
        filter_and_label(ENVOY, Some(profile), labels, &mut out);
        out
    }

    #[test]
    fn basic_profile_keeps_golden_signals_without_internal_clusters() {
        let out = run(&Profile::new(None), &[]);
        let f = families(&out);
        assert_eq!(f.get("envoy_cluster_upstream_rq_total"), Some(&1), "{out}");
        assert!(
            !out.contains("ads_cluster") && !out.contains("hijacker"),
            "{out}"
        );
        assert!(f.contains_key("envoy_server_live"), "{out}");
        assert!(
            f.contains_key("envoy_cluster_upstream_rq_time_bucket"),
            "{out}"
        );
        assert!(!f.contains_key("envoy_cluster_lb_subsets_active"), "{out}");
        // A family whose samples all go loses its TYPE line too.
        let only_internal = "# TYPE envoy_cluster_upstream_rq_total counter\nenvoy_cluster_upstream_rq_total{envoy_cluster_name=\"ads_cluster\"} 3\n";
        let mut out = String::new();
        filter_and_label(only_internal, Some(&Profile::new(None)), &[], &mut out);
        assert_eq!(out, "");
    }

    #[test]
    fn profiles_include_and_exclude_as_kuma_orders_them() {
        let all = Profile::new(Some(&sidecar("profiles: {appendProfiles: [{name: All}]}")));
        let f = families(&run(&all, &[]));
        assert_eq!(f.get("envoy_cluster_upstream_rq_total"), Some(&3));
        assert!(f.contains_key("envoy_cluster_lb_subsets_active"));

        let none = Profile::new(Some(&sidecar(
            "profiles: {appendProfiles: [{name: None}], include: [{type: Regex, match: '^envoy_server_.*'}]}",
        )));
        let f = families(&run(&none, &[]));
        assert_eq!(f.keys().collect::<Vec<_>>(), vec!["envoy_server_live"]);

        let picky = Profile::new(Some(&sidecar(
            "profiles: {appendProfiles: [{name: All}], exclude: [{type: Prefix, match: envoy_cluster_}], include: [{type: Exact, match: envoy_cluster_lb_subsets_active}]}",
        )));
        let f = families(&run(&picky, &[]));
        let mut names: Vec<_> = f.keys().cloned().collect();
        names.sort();
        assert_eq!(
            names,
            vec!["envoy_cluster_lb_subsets_active", "envoy_server_live"]
        );
    }

    #[test]
    fn samples_get_the_extra_labels_they_lack() {
        let labels = vec![
            ("mesh".to_string(), "default".to_string()),
            ("kuma_workload".to_string(), "a \"b\"".to_string()),
        ];
        let mut out = String::new();
        let app = "# HELP app_requests_total Requests.\n# TYPE app_requests_total counter\napp_requests_total{code=\"200\",mesh=\"own\"} 42 1700000000\nup 1\n# EOF\n";
        filter_and_label(app, None, &labels, &mut out);
        assert_eq!(
            out,
            "# HELP app_requests_total Requests.\n# TYPE app_requests_total counter\n\
             app_requests_total{code=\"200\",mesh=\"own\",kuma_workload=\"a \\\"b\\\"\"} 42 1700000000\n\
             up{mesh=\"default\",kuma_workload=\"a \\\"b\\\"\"} 1\n"
        );
    }

    #[test]
    fn garbage_is_not_an_exposition() {
        assert!(check_exposition(ENVOY).is_ok());
        assert!(check_exposition("<html><body>hi</body></html>").is_err());
        assert!(check_exposition("{\"a\": 1}").is_err());
        assert!(check_exposition("metric{a=\"unterminated} 1").is_err());
    }
}
