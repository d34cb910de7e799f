//! Envoy's delta ADS. Each stream serves one proxy: the first request names it (node id
//! `<mesh>.<name>`, or the `dataplane.mesh`/`dataplane.name` metadata kuma-dp's bootstrap
//! sets), its token is checked, and from then on its configuration is recomputed whenever the
//! snapshot cache publishes a new snapshot of its mesh ([`crate::dpserver::cache`]; zone
//! proxies: of any mesh), its certificate nears expiry, or Envoy subscribes to more. Streams
//! never read the store for configuration. Only resources whose content changed are sent. A NACK is logged with
//! Envoy's reason; Envoy keeps the last configuration it accepted and nothing is resent until
//! the configuration changes again.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    Resource as XdsResource,
};
use futures::{Stream, StreamExt};
use model::Timestamp;
use serde_json::{Value, json};
use store::SharedStore;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use xds::wire::{self, WireError};

use crate::dpserver::auth::ProxyAuth;
use crate::dpserver::cache::{MeshSnapshot, ZoneProxies, ZoneView};
use crate::dpserver::encoded::{self, Encoded, EncodedCache};
use crate::dpserver::insight::{CertState, Rejection, StreamRecord};
use crate::dpserver::metrics::{Connected, XdsMetrics};
use tracing::Instrument;

/// Which proxy a configuration is for: what it is built from differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    Sidecar,
    /// Serves every mesh's local instances to other zones.
    Ingress,
    /// Passes every mesh's cross-zone traffic to other zones' ingresses.
    Egress,
}

/// Why a proxy's configuration could not be rebuilt (the last one stays in place).
#[derive(Debug, thiserror::Error)]
enum BuildError {
    #[error("the mesh is not loaded (yet)")]
    NoMesh,
    #[error("no {0} of this name in this zone")]
    NoZoneProxy(model::ResourceType),
    #[error(transparent)]
    Generate(#[from] xds::XdsError),
    #[error("encoding {name:?}")]
    Encode {
        name: String,
        #[source]
        source: wire::WireError,
    },
    #[error("the mesh CA")]
    Ca(#[source] Arc<security::ca::MeshCaError>),
    #[error("mTLS has no enabled backend")]
    NoBackend,
    #[error("the proxy's Dataplane is gone")]
    ProxyGone,
    #[error("issuing the proxy certificate")]
    Issue(#[source] security::tls::TlsError),
    #[error("no proxy certificate was issued")]
    NoCertificate,
}

/// How often an open stream refreshes its DataplaneInsight (so a lost proxy turns Offline).
pub const INSIGHT_FLUSH: Duration = Duration::from_secs(10);

/// Types in the order configuration is pushed: clusters before the endpoints and listeners
/// that use them, secrets when Envoy asks for them.
const ORDER: [&str; 4] = [wire::CLUSTER, wire::ENDPOINTS, wire::LISTENER, wire::SECRET];

fn short_name(type_url: &str) -> &'static str {
    match type_url {
        wire::CLUSTER => "cds",
        wire::ENDPOINTS => "eds",
        wire::LISTENER => "lds",
        wire::SECRET => "sds",
        _ => "rds",
    }
}

/// Wildcard types get every resource; the others only those Envoy names.
fn is_wildcard_type(type_url: &str) -> bool {
    type_url == wire::CLUSTER || type_url == wire::LISTENER
}

pub struct AdsServer {
    store: SharedStore,
    auth: Arc<dyn ProxyAuth>,
    cp_instance_id: String,
    /// What every stream's configuration is computed from.
    view: watch::Receiver<ZoneView>,
    metrics: Option<XdsMetrics>,
    /// Turns true when the control plane stops: streams end then, so their proxies reconnect
    /// (to another replica) at once instead of holding the server's drain.
    stopping: Option<watch::Receiver<bool>>,
}

impl AdsServer {
    /// An ADS server for proxies whose configuration comes from `view` (the zone's snapshot
    /// cache, [`crate::dpserver::cache::start`]).
    pub fn new(
        store: SharedStore,
        auth: Arc<dyn ProxyAuth>,
        cp_instance_id: String,
        view: watch::Receiver<ZoneView>,
    ) -> Self {
        AdsServer {
            store,
            auth,
            cp_instance_id,
            view,
            metrics: None,
            stopping: None,
        }
    }

    /// The server with its streams ending when `stopping` turns true.
    pub fn stopping(mut self, stopping: watch::Receiver<bool>) -> Self {
        self.stopping = Some(stopping);
        self
    }

    /// The server with its streams' figures going to `metrics`.
    pub fn metered(mut self, metrics: Option<XdsMetrics>) -> Self {
        self.metrics = metrics;
        self
    }
}

type DeltaStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;
type SotwStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = SotwStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        _: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        Err(Status::unimplemented(
            "this control plane serves delta xDS only: set ads_config.api_type to DELTA_GRPC (kuma-dp's bootstrap does)",
        ))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_string())
            .filter(|v| !v.is_empty());
        let peer = request.remote_addr();
        let mut requests = request.into_inner();
        // Envoy sends its node in the first request; nothing is served before it is known.
        let first = match tokio::time::timeout(Duration::from_secs(30), requests.next()).await {
            Ok(Some(Ok(r))) => r,
            Ok(Some(Err(status))) => return Err(status),
            Ok(None) => return Err(Status::cancelled("stream closed before the first request")),
            Err(_) => return Err(Status::deadline_exceeded("no request within 30 s")),
        };
        let (mesh, name, metadata) = identify(&first)?;
        let proxy_type = metadata
            .get("dataplane.proxyType")
            .and_then(Value::as_str)
            .unwrap_or("dataplane")
            .to_string();
        let owner = crate::dpserver::auth::proxy_resource_type(&proxy_type);
        crate::dpserver::auth::admit_stored_proxy(
            &self.store,
            self.auth.as_ref(),
            token.as_deref(),
            &mesh,
            &name,
            &proxy_type,
        )
        .await?;
        tracing::info!(%mesh, %name, ?peer, "proxy connected");
        let (tx, rx) = mpsc::channel(16);
        let record = StreamRecord {
            owner,
            mesh: mesh.clone(),
            name: name.clone(),
            subscription_id: security::random_uuid(),
            cp_instance_id: self.cp_instance_id.clone(),
            connect_time: Timestamp::now(),
            disconnect_time: None,
            version: metadata
                .get("version")
                .cloned()
                .unwrap_or_else(|| json!({})),
            counts: BTreeMap::new(),
            cert: None,
            generation: 0,
            rejection: None,
        };
        let text = |key: &str| {
            metadata
                .get(key)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let mut stream = ProxyStream {
            store: self.store.clone(),
            view: self.view.clone(),
            seen: Fingerprint::default(),
            kind: match owner {
                model::ResourceType::ZoneIngress => ProxyKind::Ingress,
                model::ResourceType::ZoneEgress => ProxyKind::Egress,
                _ => ProxyKind::Sidecar,
            },
            mesh,
            name,
            out: tx,
            subscriptions: HashMap::new(),
            sent: HashMap::new(),
            config: HashMap::new(),
            nonce: 0,
            record,
            certs: BTreeMap::new(),
            warnings: Vec::new(),
            env: xds::ProxyEnv {
                workdir: text("workdir"),
                metrics_certificate: text("metricsCertPath").zip(text("metricsKeyPath")),
            },
            built_from: None,
            metrics: self.metrics.clone(),
        };
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            let _connected = Connected::new(&stream.metrics);
            let result = match stopping.as_mut() {
                Some(stopping) => tokio::select! {
                    result = stream.run(first, requests) => result,
                    _ = stopping.wait_for(|s| *s) => Err(StreamError::Stopping),
                },
                None => stream.run(first, requests).await,
            };
            stream.record.disconnect_time = Some(Timestamp::now());
            if let Err(e) = crate::dpserver::insight::write(&stream.store, &stream.record).await {
                tracing::warn!(mesh = %stream.mesh, name = %stream.name, error = %e, "could not record the disconnect");
            }
            match result {
                Ok(()) => {
                    tracing::info!(mesh = %stream.mesh, name = %stream.name, "proxy disconnected")
                }
                Err(e) => {
                    tracing::info!(mesh = %stream.mesh, name = %stream.name, error = %e, "proxy stream ended")
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// `(mesh, name, node metadata as JSON)` from the first request.
fn identify(
    req: &DeltaDiscoveryRequest,
) -> Result<(String, String, serde_json::Map<String, Value>), Status> {
    let node = req
        .node
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("the first request must carry the node"))?;
    let metadata = node
        .metadata
        .as_ref()
        .map(struct_to_json)
        .unwrap_or_default();
    let from_metadata = |k: &str| {
        metadata
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let (mesh, name) = match (
        from_metadata("dataplane.mesh"),
        from_metadata("dataplane.name"),
    ) {
        (Some(m), Some(n)) => (m, n),
        _ => {
            let (m, n) = node.id.split_once('.').ok_or_else(|| {
                Status::invalid_argument(format!("node id {:?} is not <mesh>.<name>", node.id))
            })?;
            (m.to_string(), n.to_string())
        }
    };
    // Zone ingress and egress belong to no mesh.
    let zone_proxy = metadata
        .get("dataplane.proxyType")
        .and_then(Value::as_str)
        .is_some_and(crate::dpserver::auth::is_zone_proxy);
    if (mesh.is_empty() && !zone_proxy) || name.is_empty() {
        return Err(Status::invalid_argument(format!(
            "node id {:?} is not <mesh>.<name>",
            node.id
        )));
    }
    Ok((mesh, name, metadata))
}

fn struct_to_json(s: &envoy_types::pb::google::protobuf::Struct) -> serde_json::Map<String, Value> {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), value_to_json(v)))
        .collect()
}

fn value_to_json(v: &envoy_types::pb::google::protobuf::Value) -> Value {
    use envoy_types::pb::google::protobuf::value::Kind;
    match &v.kind {
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::NumberValue(n)) => json!(n),
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value_to_json).collect()),
        Some(Kind::NullValue(_)) | None => Value::Null,
    }
}

#[derive(Debug, Default)]
struct Subscription {
    wildcard: bool,
    names: BTreeSet<String>,
}

/// The proxy's current certificate and when to replace it.
struct IssuedCert {
    ca_pem: String,
    uris: Vec<String>,
    backend: String,
    cert_pem: String,
    key_pem: String,
    rotate_at: tokio::time::Instant,
}

impl IssuedCert {
    /// Whether the mesh's current CA (and backend) issued it.
    fn issued_by(&self, ca: &security::ca::MeshCa) -> bool {
        self.ca_pem == ca.ca.cert_pem && self.backend == ca.backend
    }
}

/// The snapshots a configuration was last computed from. It holds them, not their addresses: a freed
/// snapshot's address can be reused by the next one, which would then look unchanged.
#[derive(Default)]
struct Fingerprint {
    meshes: Vec<Arc<MeshSnapshot>>,
    zone_proxies: Option<Arc<ZoneProxies>>,
}

impl PartialEq for Fingerprint {
    fn eq(&self, other: &Self) -> bool {
        let same = |a: &Arc<MeshSnapshot>, b: &Arc<MeshSnapshot>| Arc::ptr_eq(a, b);
        self.meshes.len() == other.meshes.len()
            && self
                .meshes
                .iter()
                .zip(&other.meshes)
                .all(|(a, b)| same(a, b))
            && match (&self.zone_proxies, &other.zone_proxies) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

struct ProxyStream {
    /// For insights only: configuration comes from `view`.
    store: SharedStore,
    view: watch::Receiver<ZoneView>,
    seen: Fingerprint,
    /// A sidecar, or a zone ingress or egress (whose mesh is empty).
    kind: ProxyKind,
    mesh: String,
    name: String,
    out: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    subscriptions: HashMap<String, Subscription>,
    /// What Envoy holds: type -> name -> version.
    sent: HashMap<String, HashMap<String, String>>,
    /// The current configuration: type -> name -> encoded message.
    config: Config,
    nonce: u64,
    record: StreamRecord,
    /// The proxy's certificates, by mesh: a sidecar's one, or a zone egress's one per mesh
    /// whose MeshExternalService traffic it terminates.
    certs: BTreeMap<String, IssuedCert>,
    /// What policy plugins could not apply, as last logged: logged again only when it changes.
    warnings: Vec<String>,
    /// The proxy's host as its kuma-dp described it (where its access-log pipe is).
    env: xds::ProxyEnv,
    /// The snapshot a sidecar's current configuration was generated from, and how its
    /// endpoints were laid out: when the next snapshot changes nothing else the configuration
    /// comes from (other Dataplanes, policies for other proxies), only the endpoints are laid
    /// out again ([`xds::refresh_endpoints`]).
    built_from: Option<(Arc<MeshSnapshot>, xds::EndpointPlan)>,
    metrics: Option<XdsMetrics>,
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("Envoy closed the stream")]
    Closed,
    #[error("the control plane is stopping; the proxy reconnects")]
    Stopping,
    #[error("{0}")]
    Status(#[from] Status),
}

impl ProxyStream {
    async fn run(
        &mut self,
        first: DeltaDiscoveryRequest,
        mut requests: Streaming<DeltaDiscoveryRequest>,
    ) -> Result<(), StreamError> {
        self.recompute();
        self.handle(first).await?;
        self.flush_insight().await;
        let mut flush = tokio::time::interval(INSIGHT_FLUSH);
        flush.tick().await;
        loop {
            let rotate_at = self
                .certs
                .values()
                .map(|c| c.rotate_at)
                .min()
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                req = requests.next() => match req {
                    None => return Ok(()),
                    Some(Err(status)) => return Err(status.into()),
                    Some(Ok(req)) => self.handle(req).await?,
                },
                changed = self.view.changed() => {
                    if changed.is_err() {
                        // The cache stopped: the server is going away.
                        return Ok(());
                    }
                    if self.fingerprint() == self.seen {
                        continue;
                    }
                    let started = tokio::time::Instant::now();
                    let changed = self.recompute();
                    if changed.is_empty() {
                        continue;
                    }
                    let span = tracing::info_span!(
                        "xds push",
                        mesh = %self.mesh,
                        proxy = %self.name,
                        xds.types = tracing::field::Empty,
                    );
                    // Only when the span is recorded (tracing on): no list built per push
                    // otherwise.
                    if !span.is_disabled() {
                        let types: Vec<&str> = changed.iter().map(|t| short_name(t)).collect();
                        span.record("xds.types", types.join(","));
                    }
                    self.push_types(changed).instrument(span).await?;
                    if let Some(m) = &self.metrics {
                        m.push.observe(started.elapsed().as_secs_f64());
                    }
                }
                () = tokio::time::sleep_until(rotate_at) => {
                    tracing::info!(mesh = %self.mesh, name = %self.name, "rotating the proxy certificate");
                    let now = tokio::time::Instant::now();
                    self.certs.retain(|_, c| c.rotate_at > now);
                    let changed = self.recompute();
                    self.push_types(changed).await?;
                }
                _ = flush.tick() => self.flush_insight().await,
            }
        }
    }

    async fn flush_insight(&self) {
        if let Err(e) = crate::dpserver::insight::write(&self.store, &self.record).await {
            tracing::warn!(mesh = %self.mesh, name = %self.name, error = %e, "could not write the DataplaneInsight");
        }
    }

    async fn handle(&mut self, req: DeltaDiscoveryRequest) -> Result<(), StreamError> {
        let type_url = req.type_url.clone();
        let counts = self.record.counts.entry(short_name(&type_url)).or_default();
        let kind = short_name(&type_url);
        if let Some(err) = &req.error_detail {
            counts.rejected += 1;
            XdsMetrics::observe(&self.metrics, |m| &m.nacked, kind);
            tracing::warn!(mesh = %self.mesh, name = %self.name, type_url = %type_url, nonce = %req.response_nonce, reason = %err.message, "Envoy rejected the configuration (NACK); it keeps the last one it accepted");
            // Envoy holds the older versions; nothing is resent until the configuration changes.
            if let Some(sent) = self.sent.get_mut(&type_url) {
                sent.clear();
            }
            // On the insight at once: an operator looking at the proxy sees why.
            self.record.rejection = Some(Rejection {
                kind,
                reason: err.message.clone(),
                time: Timestamp::now(),
            });
            self.flush_insight().await;
        } else if !req.response_nonce.is_empty() {
            counts.acknowledged += 1;
            XdsMetrics::observe(&self.metrics, |m| &m.acked, kind);
            if self
                .record
                .rejection
                .as_ref()
                .is_some_and(|r| r.kind == kind)
            {
                self.record.rejection = None;
                self.flush_insight().await;
            }
        }
        let first_for_type = !self.subscriptions.contains_key(&type_url);
        let sub = self.subscriptions.entry(type_url.clone()).or_default();
        if first_for_type && req.resource_names_subscribe.is_empty() && is_wildcard_type(&type_url)
        {
            sub.wildcard = true;
        }
        let sent = self.sent.entry(type_url.clone()).or_default();
        for name in &req.resource_names_subscribe {
            if name == "*" {
                sub.wildcard = true;
            } else {
                sub.names.insert(name.clone());
                // A (re)subscription wants the resource now, even one it was sent before: a
                // cluster Envoy replaced waits, warming, for its endpoints to arrive again.
                sent.remove(name);
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                sub.wildcard = false;
            } else {
                sub.names.remove(name);
            }
            if let Some(sent) = self.sent.get_mut(&type_url) {
                sent.remove(name);
            }
        }
        // A reconnecting Envoy says what it already holds, so unchanged resources are not resent.
        if !req.initial_resource_versions.is_empty() {
            self.sent
                .entry(type_url.clone())
                .or_default()
                .extend(req.initial_resource_versions.clone());
        }
        if req.error_detail.is_none() {
            self.push(&type_url).await?;
        }
        Ok(())
    }

    /// Sends what changed of `types` (in [`ORDER`]).
    async fn push_types(&mut self, types: &[&str]) -> Result<(), StreamError> {
        for type_url in types {
            self.push(type_url).await?;
        }
        Ok(())
    }

    /// Sends what changed of one type since Envoy last received it.
    async fn push(&mut self, type_url: &str) -> Result<(), StreamError> {
        let Some(sub) = self.subscriptions.get(type_url) else {
            return Ok(());
        };
        let empty = BTreeMap::new();
        let current = self.config.get(type_url).unwrap_or(&empty);
        let sent = self.sent.entry(type_url.to_string()).or_default();
        let mut resources = Vec::new();
        for (name, encoded) in current {
            if !(sub.wildcard || sub.names.contains(name)) {
                continue;
            }
            if sent.get(name) != Some(&encoded.version) {
                resources.push(XdsResource {
                    name: name.clone(),
                    version: encoded.version.clone(),
                    resource: Some(envoy_types::pb::google::protobuf::Any {
                        type_url: type_url.to_string(),
                        value: encoded.bytes.clone(),
                    }),
                    ..Default::default()
                });
            }
        }
        let removed: Vec<String> = sent
            .keys()
            .filter(|n| !current.contains_key(*n))
            .cloned()
            .collect();
        if resources.is_empty() && removed.is_empty() {
            return Ok(());
        }
        for r in &resources {
            sent.insert(r.name.clone(), r.version.clone());
        }
        let replaced_clusters: Vec<String> = if type_url == wire::CLUSTER {
            resources.iter().map(|r| r.name.clone()).collect()
        } else {
            vec![]
        };
        for n in &removed {
            sent.remove(n);
        }
        self.nonce += 1;
        let response = DeltaDiscoveryResponse {
            type_url: type_url.to_string(),
            resources,
            removed_resources: removed,
            nonce: self.nonce.to_string(),
            system_version_info: self.record.generation.to_string(),
            ..Default::default()
        };
        self.out
            .send(Ok(response))
            .await
            .map_err(|_| StreamError::Closed)?;
        self.record
            .counts
            .entry(short_name(type_url))
            .or_default()
            .sent += 1;
        XdsMetrics::observe(&self.metrics, |m| &m.sent, short_name(type_url));
        if !replaced_clusters.is_empty() {
            // An updated cluster warms until its endpoints arrive, and Envoy does not ask for
            // a name it already subscribes to: send them again right after.
            if let Some(eds) = self.sent.get_mut(wire::ENDPOINTS) {
                for name in &replaced_clusters {
                    eds.remove(name);
                }
            }
            Box::pin(self.push(wire::ENDPOINTS)).await?;
        }
        Ok(())
    }

    /// Which snapshots this proxy's configuration depends on: its mesh's (a sidecar), or every
    /// mesh's and the zone proxies' (an ingress or egress). Unchanged snapshots keep their
    /// pointers, so comparing pointers says whether anything it depends on changed.
    fn fingerprint(&self) -> Fingerprint {
        let view = self.view.borrow();
        match self.kind {
            ProxyKind::Sidecar => Fingerprint {
                meshes: view.meshes.get(&self.mesh).cloned().into_iter().collect(),
                zone_proxies: None,
            },
            ProxyKind::Ingress | ProxyKind::Egress => Fingerprint {
                meshes: view.meshes.values().cloned().collect(),
                zone_proxies: Some(view.zone_proxies.clone()),
            },
        }
    }

    /// Rebuilds the proxy's configuration from the latest snapshots (on failure the last one
    /// stays) and says which types may have changed.
    fn recompute(&mut self) -> &'static [&'static str] {
        self.seen = self.fingerprint();
        if let Some(endpoints) = self.refreshed_endpoints() {
            match endpoints {
                Ok(endpoints) => {
                    let config = self.config.entry(wire::ENDPOINTS.to_string()).or_default();
                    if *config != endpoints {
                        *config = endpoints;
                        self.record.generation += 1;
                        return &[wire::ENDPOINTS];
                    }
                }
                Err(e) => {
                    let error = model::error_chain(&e);
                    tracing::warn!(mesh = %self.mesh, name = %self.name, %error, "endpoints not recomputed; the last ones stay")
                }
            }
            return &[];
        }
        self.built_from = None;
        match self.build() {
            Ok(config) => {
                if config != self.config {
                    self.record.generation += 1;
                    self.config = config;
                    return &ORDER;
                }
            }
            // Only while the cache loads at start-up (a proxy is admitted only with its mesh).
            Err(BuildError::NoMesh) => {
                tracing::debug!(mesh = %self.mesh, name = %self.name, "mesh not loaded yet");
            }
            Err(e) => {
                let error = model::error_chain(&e);
                tracing::warn!(mesh = %self.mesh, name = %self.name, %error, "configuration not recomputed; the last one stays")
            }
        }
        &[]
    }

    /// The sidecar's endpoints laid out again from the latest snapshot, when that is all that
    /// changed since its configuration was generated (and its certificate stands); `None`
    /// when the whole configuration must be generated again.
    fn refreshed_endpoints(
        &mut self,
    ) -> Option<Result<BTreeMap<String, Arc<Encoded>>, BuildError>> {
        let (before, plan) = self.built_from.take()?;
        let now = self.seen.meshes.first()?.clone();
        if now.context.mtls {
            let ca = now.ca.as_ref().ok()?.as_ref()?;
            if !self.certs.get(&self.mesh)?.issued_by(ca) {
                return None;
            }
        }
        let endpoints = xds::refresh_endpoints(&before.context, &now.context, &self.name, &plan)?;
        let mut config = Config::new();
        let encoded = add(
            &mut config,
            wire::ENDPOINTS,
            "cluster_name",
            &endpoints,
            |type_url, assignment| now.encoded.encode_shared(type_url, assignment),
        );
        self.built_from = Some((now, plan));
        Some(encoded.map(|()| config.remove(wire::ENDPOINTS).unwrap_or_default()))
    }

    fn build(&mut self) -> Result<Config, BuildError> {
        match self.kind {
            ProxyKind::Ingress => return self.build_zone_proxy(),
            ProxyKind::Egress => return self.build_zone_proxy(),
            ProxyKind::Sidecar => {}
        }
        let snapshot = self
            .view
            .borrow()
            .meshes
            .get(&self.mesh)
            .cloned()
            .ok_or(BuildError::NoMesh)?;
        let resources = xds::sidecar_in(&snapshot.context, &self.name, &self.env)?;
        self.log_warnings(&resources.warnings);
        let mut config = encode(&resources, Some(&snapshot.encoded))?;
        // A gateway's certificates: private keys, so encoded for this proxy alone.
        add(
            &mut config,
            wire::SECRET,
            "name",
            &resources.secrets,
            encoded::encode_alone,
        )?;
        let plan = resources.plan;
        if snapshot.context.mtls {
            let proxy = snapshot
                .context
                .dataplane(&self.name)
                .ok_or(BuildError::ProxyGone)?;
            let uris = xds::generator::sidecar::identity_uris(&self.mesh, proxy);
            let secrets = self.certificate(&self.mesh.clone(), &snapshot, uris)?;
            add_own_secrets(&mut config, &secrets)?;
        } else {
            self.certs.clear();
            self.record.cert = None;
        }
        self.built_from = Some((snapshot, plan));
        Ok(config)
    }

    /// A zone ingress (SNI passthrough to the local instances of every mesh's services) or a
    /// zone egress (SNI passthrough to other zones' ingresses, for every mesh that routes
    /// cross-zone traffic through egresses, and the MeshExternalServices of every mesh with
    /// mTLS, with a certificate of that mesh).
    fn build_zone_proxy(&mut self) -> Result<Config, BuildError> {
        let view = self.view.borrow().clone();
        let meshes: Vec<xds::MeshContext> =
            view.meshes.values().map(|m| m.context.clone()).collect();
        let zp = &view.zone_proxies;
        match self.kind {
            ProxyKind::Egress => {
                let spec = zp
                    .egresses
                    .get(&self.name)
                    .ok_or(BuildError::NoZoneProxy(model::ResourceType::ZoneEgress))?;
                let listener = listener(&spec.networking.address, spec.networking.port);
                let (identities, secrets, problems) = self.egress_certificates(&view);
                let mut resources =
                    xds::generator::egress::generate(&listener, &meshes, &identities);
                resources.warnings.extend(problems);
                self.log_warnings(&resources.warnings);
                let mut config = encode(&resources, None)?;
                add_own_secrets(&mut config, &secrets)?;
                Ok(config)
            }
            _ => {
                let spec = zp
                    .ingresses
                    .get(&self.name)
                    .ok_or(BuildError::NoZoneProxy(model::ResourceType::ZoneIngress))?;
                let listener = listener(&spec.networking.address, spec.networking.port);
                encode(&xds::generator::ingress::generate(&listener, &meshes), None)
            }
        }
    }
}

/// Where a zone proxy listens: its address, else every address.
fn listener(address: &str, port: u32) -> xds::ZoneProxyListener {
    xds::ZoneProxyListener {
        address: if address.is_empty() {
            "0.0.0.0"
        } else {
            address
        }
        .to_string(),
        port,
    }
}

/// type -> name -> encoded message.
type Config = HashMap<String, BTreeMap<String, Arc<Encoded>>>;

/// Adds resources of one type to `config`, each encoded by `encode`.
fn add<T: Borrow<Value>>(
    config: &mut Config,
    type_url: &str,
    name_field: &str,
    items: &[T],
    encode: impl Fn(&str, &T) -> Result<Arc<Encoded>, WireError>,
) -> Result<(), BuildError> {
    for item in items {
        let name = item.borrow()[name_field]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let encoded = encode(type_url, item).map_err(|source| BuildError::Encode {
            name: name.clone(),
            source,
        })?;
        config
            .entry(type_url.to_string())
            .or_default()
            .insert(name, encoded);
    }
    Ok(())
}

/// The proxy's resources encoded through `shared` (the mesh's cache) when given.
fn encode(
    resources: &xds::ProxyResources,
    shared: Option<&EncodedCache>,
) -> Result<Config, BuildError> {
    let by_content = |type_url: &str, v: &Value| match shared {
        Some(cache) => cache.encode(type_url, v),
        None => encoded::encode_alone(type_url, v),
    };
    let mut config = Config::new();
    add(
        &mut config,
        wire::LISTENER,
        "name",
        &resources.listeners,
        by_content,
    )?;
    add(
        &mut config,
        wire::CLUSTER,
        "name",
        &resources.clusters,
        by_content,
    )?;
    add(
        &mut config,
        wire::ENDPOINTS,
        "cluster_name",
        &resources.endpoints,
        |type_url, assignment| match shared {
            Some(cache) => cache.encode_shared(type_url, assignment),
            None => encoded::encode_alone(type_url, assignment),
        },
    )?;
    Ok(config)
}

/// Adds a proxy's certificate secrets: its own keys, so never in a cache other proxies read.
fn add_own_secrets(config: &mut Config, secrets: &[Value]) -> Result<(), BuildError> {
    add(config, wire::SECRET, "name", secrets, encoded::encode_alone)
}

impl ProxyStream {
    /// The SDS secrets of the proxy's certificate for `mesh` (with `uris` as its names),
    /// issuing one when there is none, the mesh's CA changed or the names changed.
    fn certificate(
        &mut self,
        mesh: &str,
        snapshot: &MeshSnapshot,
        uris: Vec<String>,
    ) -> Result<Vec<Value>, BuildError> {
        let ca = snapshot
            .ca
            .as_ref()
            .map_err(|e| BuildError::Ca(e.clone()))?
            .as_ref()
            .ok_or(BuildError::NoBackend)?;
        let current = self
            .certs
            .get(mesh)
            .is_some_and(|c| c.issued_by(ca) && c.uris == uris);
        if !current {
            let pair = ca
                .ca
                .issue_workload(&uris, ca.cert_lifetime)
                .map_err(BuildError::Issue)?;
            let now = Timestamp::now();
            // Replaced at 80% of its life, well before Envoy would present an expired one.
            let rotate_after = ca.cert_lifetime.mul_f64(0.8);
            let regenerations = self.record.cert.as_ref().map_or(0, |c| c.regenerations + 1);
            self.record.cert = Some(CertState {
                expiration: Timestamp::from_unix_millis(
                    now.unix_millis() + ca.cert_lifetime.as_millis() as i64,
                ),
                last_regeneration: now,
                regenerations,
                backend: ca.backend.clone(),
            });
            self.certs.insert(
                mesh.to_string(),
                IssuedCert {
                    ca_pem: ca.ca.cert_pem.clone(),
                    uris,
                    backend: ca.backend.clone(),
                    cert_pem: pair.cert_pem,
                    key_pem: pair.key_pem,
                    rotate_at: tokio::time::Instant::now() + rotate_after,
                },
            );
        }
        let cert = self.certs.get(mesh).ok_or(BuildError::NoCertificate)?;
        Ok(xds::envoy::tls::secrets(
            mesh,
            &cert.cert_pem,
            &cert.key_pem,
            &cert.ca_pem,
        ))
    }

    /// Logs what could not be applied, when it differs from what was last logged.
    fn log_warnings(&mut self, warnings: &[String]) {
        if warnings != self.warnings {
            for warning in warnings {
                tracing::warn!(mesh = %self.mesh, name = %self.name, %warning, "part of this proxy's configuration not applied; the rest stands");
            }
            self.warnings = warnings.to_vec();
        }
    }

    /// A zone egress's certificates: one per mesh whose MeshExternalService traffic it
    /// terminates, named `zone-egress` in that mesh; the meshes it has one of, their secrets,
    /// and why a mesh has none. A mesh whose CA cannot issue one is left out (its
    /// MeshExternalServices are not routed here) rather than failing the others.
    fn egress_certificates(
        &mut self,
        view: &ZoneView,
    ) -> (BTreeSet<String>, Vec<Value>, Vec<String>) {
        let mut identities = BTreeSet::new();
        let mut secrets = Vec::new();
        let mut problems = Vec::new();
        for (mesh, snapshot) in &view.meshes {
            if !xds::generator::egress::terminates_mtls(&snapshot.context) {
                continue;
            }
            let service = xds::generator::services::ZONE_EGRESS_IDENTITY;
            let uris = vec![xds::envoy::names::spiffe_id(mesh, service)];
            match self.certificate(mesh, snapshot, uris) {
                Ok(s) => {
                    identities.insert(mesh.clone());
                    secrets.extend(s);
                }
                Err(e) => problems.push(format!(
                    "mesh {mesh}: no certificate for the egress, so its MeshExternalServices are not routed here: {e}"
                )),
            }
        }
        self.certs.retain(|mesh, _| identities.contains(mesh));
        (identities, secrets, problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Arc<MeshSnapshot> {
        Arc::new(MeshSnapshot {
            spec: Default::default(),
            context: Default::default(),
            ca: Ok(None),
            encoded: Default::default(),
        })
    }

    /// What a stream has seen stays distinct from every later snapshot, even once the cache
    /// has dropped it (compared by address alone, the allocator hands the freed address to the
    /// next snapshot, which then looks unchanged).
    #[test]
    fn a_replaced_snapshot_never_looks_unchanged() {
        let seen = Fingerprint {
            meshes: vec![snapshot()],
            zone_proxies: None,
        };
        for _ in 0..1000 {
            let next = Fingerprint {
                meshes: vec![snapshot()],
                zone_proxies: None,
            };
            assert!(seen != next);
        }
        let same = Fingerprint {
            meshes: seen.meshes.clone(),
            zone_proxies: None,
        };
        assert!(seen == same);
    }
}
