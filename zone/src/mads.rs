//! The monitoring assignment server (Kuma's `pkg/mads`, port 5676): which proxies Prometheus
//! scrapes, from the MeshMetric policies selecting them. Two ways to ask:
//!
//! - MADS v1 over REST, as Prometheus's `kuma_sd_configs` speaks it: `POST
//!   /v3/discovery:monitoringassignments` with a JSON `DiscoveryRequest`, long-polled (a client
//!   that already has the current version waits up to `?fetch-timeout=` for the next, then gets
//!   304 Not Modified). One `MonitoringAssignment` per proxy and Prometheus backend.
//! - Prometheus's generic HTTP service discovery, `GET /http_sd` (`?mesh=` narrows it,
//!   `?client=` picks a backend's `clientId`), for scrapers without `kuma_sd_configs` (Debian's
//!   Prometheus among them), with the labels `kuma_sd_configs` would give.
//!
//! Assignments are recomputed when the zone's mesh snapshots change (the cache proxies are
//! configured from), not on Kuma's 1 s refresh timer; a waiting client hears of a new proxy as
//! soon as its snapshot is published.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use model::ResourceType;
use model::specs::policy::{MetricConf, PrometheusTlsMode};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use xds::policies::mesh_metric::{
    DEFAULT_PATH, DEFAULT_PORT, dataplane_labels, identifying_service, legacy_conf,
    prometheus_backends,
};
use xds::rules::build::single_item;
use xds::rules::matching::matched_in;

use crate::dpserver::cache::{MeshSnapshot, ZoneView};

pub const TYPE_URL: &str = "type.googleapis.com/kuma.observability.v1.MonitoringAssignment";
/// The client a Prometheus backend without `clientId` serves, and the one a client whose
/// node id names no backend gets (Kuma's `DefaultKumaClientId`).
pub const DEFAULT_CLIENT: &str = "_kuma-default-client";
/// The longest a long poll may wait, whatever the client asks.
const MAX_FETCH_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest request body: a `DiscoveryRequest` is a few hundred bytes.
const MAX_REQUEST: usize = 64 * 1024;

/// One proxy's Prometheus endpoint for one client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub mesh: String,
    pub service: String,
    /// The Dataplane's name.
    pub name: String,
    pub scheme: &'static str,
    pub address: String,
    pub metrics_path: String,
    /// The target's own labels (Kuma's `DataplaneLabels` for the Mesh's legacy backend; none
    /// for MeshMetric, whose labels kuma-dp puts on every sample).
    pub labels: BTreeMap<String, String>,
}

/// A target and the client (`clientId`) it is for; [`EVERY_CLIENT`] for the Mesh's legacy
/// backend, which has no clients.
type ClientTarget = (String, Target);

const EVERY_CLIENT: &str = "";

/// Every client's targets, each list with its version (a hash of its content, so replicas and
/// restarts agree on it).
#[derive(Debug, Default, PartialEq)]
pub struct Assignments {
    pub by_client: BTreeMap<String, (String, Vec<Target>)>,
}

impl Assignments {
    /// The targets of `client`, or of the default client when no backend names it.
    pub fn for_client(&self, client: &str) -> Option<&(String, Vec<Target>)> {
        self.by_client
            .get(client)
            .or_else(|| self.by_client.get(DEFAULT_CLIENT))
    }
}

/// Keeps the assignments of the zone's proxies current from `view`, and returns them.
pub fn start(mut view: watch::Receiver<ZoneView>) -> watch::Receiver<Arc<Assignments>> {
    let (tx, rx) = watch::channel(Arc::new(Assignments::default()));
    tokio::spawn(async move {
        // Each mesh's targets, recomputed only when its snapshot is a new one.
        let mut per_mesh: BTreeMap<String, (Arc<MeshSnapshot>, Vec<ClientTarget>)> =
            BTreeMap::new();
        loop {
            let meshes = view.borrow_and_update().meshes.clone();
            per_mesh.retain(|name, _| meshes.contains_key(name));
            for (name, snapshot) in &meshes {
                let fresh = per_mesh
                    .get(name)
                    .is_some_and(|(seen, _)| Arc::ptr_eq(seen, snapshot));
                if !fresh {
                    per_mesh.insert(name.clone(), (snapshot.clone(), targets(snapshot)));
                }
            }
            let assignments = collect(per_mesh.values().flat_map(|(_, t)| t.iter()));
            tx.send_if_modified(|current| {
                let changed = **current != assignments;
                if changed {
                    *current = Arc::new(assignments);
                }
                changed
            });
            if view.changed().await.is_err() {
                return;
            }
        }
    });
    rx
}

/// The Prometheus endpoints of a mesh's proxies, by client.
fn targets(snapshot: &MeshSnapshot) -> Vec<ClientTarget> {
    let context = &snapshot.context;
    let mesh_metrics = !context.policies.raw(ResourceType::MeshMetric).is_empty();
    if !mesh_metrics && context.legacy_metrics.is_none() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for proxy in &context.dataplanes {
        let service = identifying_service(proxy).unwrap_or("unknown");
        let conf = match mesh_metrics {
            true => {
                let matching = matched_in(context, ResourceType::MeshMetric, proxy);
                // A conf that does not parse configures no listener either (the xDS plugin
                // warns).
                single_item(&matching.matched).and_then(|r| MetricConf::deserialize(&r.conf).ok())
            }
            false => None,
        };
        // As in xDS: a MeshMetric with backends replaces the Mesh's legacy endpoint.
        let conf = match conf {
            Some(conf) if conf.backends.as_ref().is_some_and(|b| !b.is_empty()) => conf,
            _ => {
                if let Some(target) = legacy_target(context, proxy, service) {
                    out.push((EVERY_CLIENT.to_string(), target));
                }
                continue;
            }
        };
        for prometheus in prometheus_backends(&conf) {
            let client = prometheus.client_id.as_deref().unwrap_or(DEFAULT_CLIENT);
            let port = prometheus.port.unwrap_or(DEFAULT_PORT);
            let address = host_port(&proxy.spec.networking.address, port);
            out.push((
                client.to_string(),
                Target {
                    mesh: context.mesh.clone(),
                    service: service.to_string(),
                    name: proxy.name.clone(),
                    // Kuma's: only ProvidedTLS is scraped over TLS (ActiveMTLSBackend is for a
                    // Prometheus in the mesh, whose own sidecar speaks mTLS).
                    scheme: match prometheus.tls.as_ref().map(|t| t.mode) {
                        Some(PrometheusTlsMode::ProvidedTLS) => "https",
                        _ => "http",
                    },
                    address,
                    metrics_path: prometheus
                        .path
                        .clone()
                        .unwrap_or_else(|| DEFAULT_PATH.into()),
                    labels: BTreeMap::new(),
                },
            ));
        }
    }
    out
}

/// A proxy's target for the Mesh's legacy Prometheus backend (Kuma's v1
/// `MonitoringAssignmentsGenerator`), with the Dataplane's override applied.
fn legacy_target(
    context: &xds::context::MeshContext,
    proxy: &xds::context::DataplaneEntry,
    service: &str,
) -> Option<Target> {
    // Its warnings are the xDS side's to give.
    let (conf, _) = legacy_conf(context, proxy);
    let conf = conf?;
    let address = &proxy.spec.networking.address;
    Some(Target {
        mesh: context.mesh.clone(),
        service: service.to_string(),
        name: proxy.name.clone(),
        scheme: match conf.tls.as_ref().map(|t| t.mode) {
            Some(model::specs::mesh::PrometheusTlsMode::ProvidedTls) => "https",
            _ => "http",
        },
        address: host_port(address, conf.port),
        metrics_path: conf.path.clone(),
        labels: dataplane_labels(context, proxy),
    })
}

fn host_port(address: &str, port: u32) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

fn collect<'a>(targets: impl Iterator<Item = &'a ClientTarget>) -> Assignments {
    let mut by_client: BTreeMap<String, Vec<Target>> = BTreeMap::new();
    let mut everyone = Vec::new();
    for (client, target) in targets {
        if client == EVERY_CLIENT {
            everyone.push(target);
            continue;
        }
        by_client
            .entry(client.clone())
            .or_default()
            .push(target.clone());
    }
    if !everyone.is_empty() {
        by_client.entry(DEFAULT_CLIENT.to_string()).or_default();
        for targets in by_client.values_mut() {
            targets.extend(everyone.iter().map(|t| (*t).clone()));
        }
    }
    Assignments {
        by_client: by_client
            .into_iter()
            .map(|(client, mut targets)| {
                targets.sort_by(|a, b| (&a.mesh, &a.name).cmp(&(&b.mesh, &b.name)));
                let mut hasher = std::hash::DefaultHasher::new();
                targets.hash(&mut hasher);
                (client, (format!("{:016x}", hasher.finish()), targets))
            })
            .collect(),
    }
}

#[derive(Clone)]
struct Mads {
    assignments: watch::Receiver<Arc<Assignments>>,
    default_fetch_timeout: Duration,
}

/// The MADS port's routes.
pub fn router(
    assignments: watch::Receiver<Arc<Assignments>>,
    default_fetch_timeout: Duration,
) -> axum::Router {
    axum::Router::new()
        .route(
            "/v3/discovery:monitoringassignments",
            post(fetch_assignments),
        )
        .route("/http_sd", get(http_sd))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST))
        .with_state(Mads {
            assignments,
            default_fetch_timeout,
        })
}

/// The fields of Envoy's `DiscoveryRequest` MADS reads, under protobuf JSON's either name.
#[derive(Debug, Default, Deserialize)]
struct DiscoveryRequest {
    #[serde(default, alias = "versionInfo")]
    version_info: String,
    #[serde(default)]
    node: Option<Node>,
    #[serde(default, alias = "typeUrl")]
    type_url: String,
}

#[derive(Debug, Default, Deserialize)]
struct Node {
    #[serde(default)]
    id: String,
}

#[derive(Debug, Deserialize)]
struct FetchQuery {
    #[serde(rename = "fetch-timeout")]
    fetch_timeout: Option<String>,
}

fn bad_request(title: &str, detail: String) -> Response {
    let body = json!({
        "type": "/std-errors",
        "status": 400,
        "title": title,
        "detail": detail,
    });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

async fn fetch_assignments(
    State(mads): State<Mads>,
    Query(query): Query<FetchQuery>,
    body: axum::body::Bytes,
) -> Response {
    let request: DiscoveryRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request("Could not parse request body", e.to_string()),
    };
    if !request.type_url.is_empty() && request.type_url != TYPE_URL {
        return bad_request(
            "Unsupported type_url",
            format!("type_url must be {TYPE_URL}, not {:?}", request.type_url),
        );
    }
    let timeout = match query.fetch_timeout.as_deref() {
        None | Some("") => mads.default_fetch_timeout,
        Some(t) => match model::duration::parse_duration(t) {
            Ok(d) => d.min(MAX_FETCH_TIMEOUT),
            Err(e) => return bad_request("Could not parse fetch-timeout", e.to_string()),
        },
    };
    let client = request.node.map(|n| n.id).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut rx = mads.assignments.clone();
    loop {
        let current = rx.borrow_and_update().clone();
        let (version, targets) = current
            .for_client(&client)
            .cloned()
            .unwrap_or_else(|| (empty_version(), Vec::new()));
        if version != request.version_info {
            return discovery_response(&version, &targets);
        }
        // A zero timeout is a plain fetch: up to date is Not Modified at once, as in Kuma.
        if timeout.is_zero() {
            return StatusCode::NOT_MODIFIED.into_response();
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            // Timed out, or the server is stopping: nothing new for this client.
            _ => return StatusCode::NOT_MODIFIED.into_response(),
        }
    }
}

/// The version of "no targets": stable, so a client with nothing to scrape long-polls too.
fn empty_version() -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    Vec::<Target>::new().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// A `DiscoveryResponse` in protobuf JSON with the proto field names, as Kuma writes it.
fn discovery_response(version: &str, targets: &[Target]) -> Response {
    let resources: Vec<Value> = targets
        .iter()
        .map(|t| {
            json!({
                "@type": TYPE_URL,
                "mesh": t.mesh,
                "service": t.service,
                "targets": [{
                    "name": t.name,
                    "scheme": t.scheme,
                    "address": t.address,
                    "metrics_path": t.metrics_path,
                    // As Kuma's: MeshMetric labels are added by kuma-dp to every sample, the
                    // legacy backend's are the target's.
                    "labels": t.labels,
                }],
                "labels": {},
            })
        })
        .collect();
    let body = json!({
        "version_info": version,
        "resources": resources,
        "type_url": TYPE_URL,
        "nonce": version,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        axum::Json(body),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct HttpSdQuery {
    mesh: Option<String>,
    client: Option<String>,
}

/// Prometheus's HTTP SD: one target group per proxy, labelled as `kuma_sd_configs` labels it.
async fn http_sd(State(mads): State<Mads>, Query(query): Query<HttpSdQuery>) -> Response {
    let current = mads.assignments.borrow().clone();
    let client = query.client.as_deref().unwrap_or(DEFAULT_CLIENT);
    let groups: Vec<Value> = current
        .for_client(client)
        .map(|(_, targets)| targets.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|t| query.mesh.as_deref().is_none_or(|m| m == t.mesh))
        .map(|t| {
            let mut labels = json!({
                "__meta_kuma_mesh": t.mesh,
                "__meta_kuma_service": t.service,
                "__meta_kuma_dataplane": t.name,
                "__scheme__": t.scheme,
                "__metrics_path__": t.metrics_path,
                "instance": t.name,
            });
            // Prometheus's kuma_sd_configs names a target's own labels so.
            for (k, v) in &t.labels {
                labels[format!("__meta_kuma_label_{k}")] = json!(v);
            }
            json!({"targets": [t.address], "labels": labels})
        })
        .collect();
    axum::Json(groups).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(mesh: &str, name: &str, port: u16) -> Target {
        Target {
            mesh: mesh.into(),
            service: format!("{name}-svc"),
            name: name.into(),
            scheme: "http",
            address: format!("127.0.0.1:{port}"),
            metrics_path: "/metrics".into(),
            labels: BTreeMap::new(),
        }
    }

    fn assignments(entries: &[(&str, Target)]) -> Arc<Assignments> {
        let owned: Vec<(String, Target)> = entries
            .iter()
            .map(|(c, t)| (c.to_string(), t.clone()))
            .collect();
        Arc::new(collect(owned.iter()))
    }

    async fn serve(rx: watch::Receiver<Arc<Assignments>>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = router(rx, Duration::from_secs(30));
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    /// What Prometheus's `kuma_sd_configs` sends: protobuf JSON with camelCase names.
    fn prometheus_request(version: &str) -> Value {
        json!({"versionInfo": version, "node": {"id": "prometheus-host"},
            "typeUrl": TYPE_URL, "resourceNames": []})
    }

    async fn post(base: &str, query: &str, body: String) -> (StatusCode, Option<Value>) {
        let response = raw_post(base, query, body).await;
        let status = StatusCode::from_u16(response.0).unwrap();
        (status, serde_json::from_slice(&response.1).ok())
    }

    /// A minimal HTTP/1.1 POST over a TCP stream (the zone crate has no HTTP client).
    async fn raw_post(base: &str, query: &str, body: String) -> (u16, Vec<u8>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let host = base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
        let request = format!(
            "POST /v3/discovery:monitoringassignments{query} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nX-Prometheus-Refresh-Interval-Seconds: 30\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status: u16 = text[9..12].parse().unwrap();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.as_bytes().to_vec())
            .unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn long_polls_until_the_targets_change() {
        let (tx, rx) = watch::channel(assignments(&[(
            DEFAULT_CLIENT,
            target("default", "web-1", 5670),
        )]));
        let base = serve(rx).await;

        let (status, body) = post(
            &base,
            "?fetch-timeout=2m0s",
            prometheus_request("").to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let body = body.unwrap();
        assert_eq!(body["type_url"], TYPE_URL);
        assert_eq!(body["resources"][0]["@type"], TYPE_URL);
        assert_eq!(
            body["resources"][0]["targets"][0]["address"],
            "127.0.0.1:5670"
        );
        assert_eq!(
            body["resources"][0]["targets"][0]["metrics_path"],
            "/metrics"
        );
        let version = body["version_info"].as_str().unwrap().to_string();

        // Up to date: a plain fetch is a 304 at once, a poll after its timeout.
        let (status, _) = post(
            &base,
            "?fetch-timeout=0s",
            prometheus_request(&version).to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        let (status, _) = post(
            &base,
            "?fetch-timeout=200ms",
            prometheus_request(&version).to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);

        // A new proxy ends the wait at once.
        let waiting = tokio::spawn({
            let base = base.clone();
            let body = prometheus_request(&version).to_string();
            async move { post(&base, "?fetch-timeout=30s", body).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = tokio::time::Instant::now();
        tx.send(assignments(&[
            (DEFAULT_CLIENT, target("default", "web-1", 5670)),
            (DEFAULT_CLIENT, target("default", "web-2", 5671)),
        ]))
        .unwrap();
        let (status, body) = waiting.await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.unwrap()["resources"].as_array().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn bad_requests_get_a_400_naming_the_problem() {
        let (_tx, rx) = watch::channel(Arc::new(Assignments::default()));
        let base = serve(rx).await;
        let (status, body) = post(&base, "", "not json".into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body.unwrap()["title"], "Could not parse request body");
        let (status, body) = post(
            &base,
            "?fetch-timeout=soon",
            prometheus_request("").to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body.unwrap()["title"], "Could not parse fetch-timeout");
        let wrong = json!({"typeUrl": "type.googleapis.com/envoy.config.cluster.v3.Cluster"});
        let (status, _) = post(&base, "", wrong.to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn clients_get_their_backends_or_the_default_ones() {
        let all = assignments(&[
            (DEFAULT_CLIENT, target("default", "web-1", 5670)),
            ("team-b", target("other", "api-1", 5671)),
        ]);
        assert_eq!(all.for_client("team-b").unwrap().1[0].name, "api-1");
        assert_eq!(
            all.for_client("prometheus-host").unwrap().1[0].name,
            "web-1"
        );
        // Versions follow content, not time: the same targets have the same version.
        let again = assignments(&[
            ("team-b", target("other", "api-1", 5671)),
            (DEFAULT_CLIENT, target("default", "web-1", 5670)),
        ]);
        assert_eq!(all, again);
    }

    #[test]
    fn the_meshs_legacy_backend_is_every_clients_with_the_dataplanes_labels() {
        let spec = serde_json::from_value(json!({
            "networking": {"address": "10.0.0.7", "inbound": [
                {"port": 8080, "tags": {"kuma.io/service": "web", "version": "v1"}}]},
            "metrics": {"type": "prometheus", "conf": {"port": 1234}}}))
        .unwrap();
        let context = xds::context::MeshContext {
            mesh: "default".into(),
            legacy_metrics: Some(serde_json::from_value(json!({"path": "/stats"})).unwrap()),
            dataplanes: vec![xds::context::DataplaneEntry {
                name: "web-1".into(),
                labels: BTreeMap::new(),
                spec,
            }],
            ..Default::default()
        };
        let legacy = legacy_target(&context, &context.dataplanes[0], "web").unwrap();
        // A proxy whose inbound has the backend's port serves no endpoint, so is not listed.
        let clash = xds::context::DataplaneEntry {
            name: "clash-1".into(),
            labels: BTreeMap::new(),
            spec: serde_json::from_value(json!({"networking": {"address": "10.0.0.8",
                "inbound": [{"port": 5670, "tags": {"kuma.io/service": "clash"}}]}}))
            .unwrap(),
        };
        assert!(legacy_target(&context, &clash, "clash").is_none());
        assert_eq!(legacy.address, "10.0.0.7:1234");
        assert_eq!(legacy.metrics_path, "/stats");
        assert_eq!(legacy.labels["version"], "v1");
        assert_eq!(legacy.labels["kuma_io_services"], ",web,");
        let entries = [
            (EVERY_CLIENT.to_string(), legacy),
            ("team-b".to_string(), target("default", "api-1", 5671)),
        ];
        let all = collect(entries.iter());
        assert_eq!(all.for_client("team-b").unwrap().1.len(), 2);
        let default = &all.for_client("anyone").unwrap().1;
        assert_eq!(default.len(), 1);
        assert_eq!(default[0].name, "web-1");
    }
}
