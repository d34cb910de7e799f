//! `kds-bench`: how fast KDS moves changes between a real global `kuma-cp` and zones.
//!
//! Global is a real process (memory store, or Postgres with `--store postgres`). Zones are
//! simulated in this process: each runs the real zone KDS client (`zone::kds_client::run`) over its own
//! TLS connection with its own zone token, into its own in-memory store, so they speak exactly
//! what a zone `kuma-cp` speaks without N processes. Prints a table, then one JSON line.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use anyhow::{Context, Result, bail};
use e2e::{ControlPlane, pct};
use model::{Resource, ResourceType};
use proto::envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use serde_json::{Value, json};
use store::{MemoryStore, SharedStore};
use tokio::sync::{mpsc, watch};

#[derive(Clone, Copy, PartialEq, Eq)]
enum StoreKind {
    Memory,
    Postgres,
    /// One raft replica with its data in global's work directory: kept across a restart
    /// without an external database.
    Raft,
}

impl StoreKind {
    fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Postgres => "postgres",
            StoreKind::Raft => "raft",
        }
    }
}

struct Args {
    zones: usize,
    writes: usize,
    store: StoreKind,
    /// After the other phases: kill -9 global, restart it, and time every zone's return.
    reconnect_storm: bool,
    resync: usize,
    rss_dataplanes: usize,
    floor_samples: usize,
    slow_zone: bool,
    /// Global exports its spans over OTLP to a collector in this process.
    otlp: bool,
    /// A hosted manager with this many control planes, each with `zones` zones (0: one
    /// global of its own).
    tenants: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        zones: 10,
        writes: 1000,
        store: StoreKind::Memory,
        reconnect_storm: false,
        resync: 10_000,
        rss_dataplanes: 1000,
        floor_samples: 1000,
        slow_zone: false,
        otlp: false,
        tenants: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| e2e::flag_number(&mut it, name);
        match flag.as_str() {
            "--zones" => args.zones = value("--zones")?.max(1),
            "--writes" => args.writes = value("--writes")?.max(10),
            "--resync" => args.resync = value("--resync")?,
            "--rss-dataplanes" => args.rss_dataplanes = value("--rss-dataplanes")?,
            "--floor" => args.floor_samples = value("--floor")?.max(10),
            "--slow-zone" => args.slow_zone = true,
            "--otlp" => args.otlp = true,
            "--tenants" => args.tenants = value("--tenants")?,
            "--reconnect-storm" => args.reconnect_storm = true,
            "--store" => {
                args.store = match it.next().as_deref() {
                    Some("memory") => StoreKind::Memory,
                    Some("postgres") => StoreKind::Postgres,
                    Some("raft") => StoreKind::Raft,
                    other => bail!("--store must be memory, postgres or raft, not {other:?}"),
                }
            }
            "-h" | "--help" => {
                println!(
                    "kds-bench [--zones N] [--writes N] [--resync N] [--rss-dataplanes N] [--floor N] [--slow-zone] [--otlp] [--store memory|postgres|raft] [--reconnect-storm] [--tenants T]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown flag {other:?} (see --help)"),
        }
    }
    if args.reconnect_storm && args.tenants > 0 {
        bail!("--reconnect-storm restarts a global of its own; it does not run with --tenants");
    }
    if args.reconnect_storm && args.store == StoreKind::Memory {
        bail!(
            "--reconnect-storm restarts global, which must keep its zone-token keys: use --store raft or postgres"
        );
    }
    Ok(args)
}

#[derive(Clone)]
struct Global {
    /// Shared by a hosted manager's control planes' views.
    cp: Arc<ControlPlane>,
    kds_port: u16,
    /// What global was started with, to start it again the same way.
    env: Vec<(String, String)>,
    http: reqwest::Client,
    root_ca: String,
    /// Where its Kuma API is: global's own, or one of a manager's control planes'.
    base: String,
    /// A manager's control plane answers only to its own tokens.
    bearer: Option<String>,
}

impl Global {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.bearer {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// A manager's control plane `id`, through its own API with `token`.
    fn control_plane(&self, id: &str, token: &str) -> Global {
        Global {
            env: Vec::new(),
            base: format!("{}/v0/mesh/control-planes/{id}/api", self.cp.api()),
            bearer: Some(token.trim().to_string()),
            ..self.clone()
        }
    }

    async fn put(&self, path: &str, body: &Value) -> Result<()> {
        let r = self
            .authed(self.http.put(self.url(path)))
            .json(body)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!(
                "PUT {path}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let r = self.authed(self.http.delete(self.url(path))).send().await?;
        if !r.status().is_success() {
            bail!("DELETE {path}: {}", r.status());
        }
        Ok(())
    }

    async fn total(&self, path: &str) -> Result<u64> {
        let v: Value = self
            .authed(self.http.get(self.url(path)))
            .send()
            .await?
            .json()
            .await?;
        Ok(v["total"].as_u64().unwrap_or(0))
    }

    async fn zone_token(&self, zone: &str) -> Result<String> {
        let r = self
            .authed(self.http.post(self.url("/tokens/zone")))
            .json(&json!({"zone": zone, "scope": ["cp"], "validFor": "24h"}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("zone token for {zone}: {}", r.status());
        }
        Ok(r.text().await?)
    }
}

/// Spans global exported to the bench's collector (`--otlp`).
static SPANS_RECEIVED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn start_global(store_env: &[(String, String)], otlp: bool, hosted: bool) -> Result<Global> {
    let kds_port = e2e::free_port();
    let port = kds_port.to_string();
    let mut env: Vec<(&str, &str)> = vec![
        ("KUMA_MODE", "global"),
        ("KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT", &port),
        ("KUMA_LOG_LEVEL_FILTER", "warn"),
    ];
    if hosted {
        env.push(("KUMA_MULTITENANCY_ENABLED", "true"));
    }
    let collector;
    if otlp {
        let e2e::otlp::Collector { port, spans, .. } = e2e::otlp::otlp_collector();
        std::thread::spawn(move || {
            for _ in spans {
                SPANS_RECEIVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        collector = format!("127.0.0.1:{port}");
        env.push(("KUMA_TRACING_OPENTELEMETRY_ENDPOINT", &collector));
    }
    env.extend(store_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let env: Vec<(String, String)> = env
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let cp = Arc::new(launch_global(&env));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut global = Global {
        base: cp.api(),
        cp,
        kds_port,
        env,
        http,
        root_ca: String::new(),
        bearer: None,
    };
    // The generated KDS certificate, read as an operator on global's host would.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = global
            .http
            .get(global.url("/globalsecrets/kds-server-tls"))
            .send()
            .await?;
        if r.status().is_success() {
            use base64::Engine;
            let secret: Value = r.json().await?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(secret["data"].as_str().unwrap_or_default())?;
            let pair: Value = serde_json::from_slice(&bytes)?;
            global.root_ca = pair["cert_pem"].as_str().unwrap_or_default().to_string();
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "global never stored its KDS certificate:\n{}",
                global.cp.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The zone-token signing key is created by the leader right after start.
    let deadline = Instant::now() + Duration::from_secs(30);
    while global.zone_token("probe").await.is_err() {
        if Instant::now() > deadline {
            bail!("global never issued a zone token");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(global)
}

fn launch_global(env: &[(String, String)]) -> ControlPlane {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut cp = ControlPlane::start("bench-global", &env);
    tokio::task::block_in_place(|| cp.wait_ready(Duration::from_secs(120)));
    cp
}

/// Figures of a reconnect storm.
struct Storm {
    /// From global answering ready again to every zone being back in sync both ways.
    converged: Duration,
    peak_rss_mb: f64,
    zones: usize,
}

/// Kills global (-9) while every zone is connected, lets each zone register one more dataplane
/// meanwhile, restarts global on the same store and port, writes one policy, and waits until
/// every zone has the policy and global has every zone's new dataplane: all zones reconnect at
/// once, which global's admission limit and the zones' jittered backoff spread out.
async fn reconnect_storm(global: &mut Global, zones: &[Zone]) -> Result<Storm> {
    let before = global.total("/meshes/default/dataplanes?size=1").await?;
    Arc::get_mut(&mut global.cp)
        .context("global is shared; the storm runs without --tenants")?
        .sigkill();
    for z in zones {
        let dp = Resource::new(
            ResourceType::Dataplane,
            "default",
            "storm",
            json!({"networking": {"address": "10.2.0.1", "inbound": [{"port": 80, "tags": {"kuma.io/service": "storm"}}]}}),
        );
        z.store.create(dp).await?;
    }
    let env = global.env.clone();
    global.cp = Arc::new(tokio::task::spawn_blocking(move || launch_global(&env)).await?);
    // The restarted process listens on ports of its own.
    global.base = global.cp.api();
    let restarted = Instant::now();
    global
        .put(
            "/meshes/default/meshtimeouts/storm",
            &timeout_policy("storm", "default"),
        )
        .await?;
    let pid = global.cp.child.id();
    let mut peak_rss_mb = rss_mb(pid);
    let want = before + zones.len() as u64;
    let key = model::ResourceKey::new(
        ResourceType::MeshTimeout,
        "default",
        model::name::hashed_name("default", "storm", None, None),
    );
    let mut zones_done = vec![false; zones.len()];
    loop {
        peak_rss_mb = peak_rss_mb.max(rss_mb(pid));
        for (z, done) in zones.iter().zip(zones_done.iter_mut()) {
            if !*done {
                *done = z.store.get(&key).await.is_ok();
            }
        }
        let have = global.total("/meshes/default/dataplanes?size=1").await?;
        if have >= want && zones_done.iter().all(|d| *d) {
            break;
        }
        if restarted.elapsed() > Duration::from_secs(600) {
            let missing = zones_done.iter().filter(|d| !**d).count();
            bail!(
                "after 10 minutes, {missing} zones lack global's policy and global has {have} of {want} dataplanes"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Storm {
        converged: restarted.elapsed(),
        peak_rss_mb,
        zones: zones.len(),
    })
}

/// A simulated zone: the real zone KDS client feeding its own memory store.
struct Zone {
    name: String,
    store: SharedStore,
    _stop: watch::Sender<bool>,
}

async fn start_zone(global: &Global, name: &str) -> Result<Zone> {
    start_zone_with(global, name, Arc::new(MemoryStore::new())).await
}

async fn start_zone_with(global: &Global, name: &str, store: SharedStore) -> Result<Zone> {
    let config = zone::kds_client::ZoneClientConfig {
        zone: name.to_string(),
        global_address: format!("grpcs://127.0.0.1:{}", global.kds_port),
        cp_version: env!("CARGO_PKG_VERSION").into(),
        max_message: 10 * 1024 * 1024,
        root_ca_pem: Some(global.root_ca.clone()),
        proxy_url: None,
        tls_skip_verify: false,
        metrics: None,
        token: Some(zone::kds_client::ZoneToken::Inline(
            global.zone_token(name).await?,
        )),
    };
    let (stop, stop_rx) = watch::channel(false);
    tokio::spawn(zone::kds_client::run(store.clone(), config, None, stop_rx));
    Ok(Zone {
        name: name.to_string(),
        store,
        _stop: stop,
    })
}

/// Waits until every zone holds `key` (by polling its store, cheap in memory).
async fn wait_all(
    zones: &[Zone],
    kind: ResourceType,
    mesh: &str,
    name: &str,
    within: Duration,
) -> Result<()> {
    let deadline = Instant::now() + within;
    let key = model::ResourceKey::new(kind, mesh, name);
    for z in zones {
        while z.store.get(&key).await.is_err() {
            if Instant::now() > deadline {
                bail!("{} never received {key}", z.name);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(())
}

/// Arrival times of MeshTimeouts in every zone, from each zone store's change events.
fn watch_arrivals(zones: &[Zone]) -> mpsc::UnboundedReceiver<(usize, String, Instant)> {
    let (tx, rx) = mpsc::unbounded_channel();
    for (i, z) in zones.iter().enumerate() {
        let (tx, store) = (tx.clone(), z.store.clone());
        tokio::spawn(async move {
            let mut events = store.subscribe();
            let mut seen = HashSet::new();
            loop {
                match events.recv().await {
                    Ok(ev)
                        if ev.key.kind == ResourceType::MeshTimeout
                            && ev.op == store::Operation::Create =>
                    {
                        if seen.insert(ev.key.name.clone()) {
                            let _ = tx.send((i, ev.key.name, Instant::now()));
                        }
                    }
                    Ok(_) => {}
                    // Behind: whatever is in the store now arrived no later than now.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let now = Instant::now();
                        if let Ok(page) = store
                            .list(&store::ListQuery::all(ResourceType::MeshTimeout))
                            .await
                        {
                            for r in page.items {
                                if seen.insert(r.meta.name.clone()) {
                                    let _ = tx.send((i, r.meta.name, now));
                                }
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
    rx
}

fn timeout_policy(name: &str, mesh: &str) -> Value {
    json!({"type": "MeshTimeout", "name": name, "mesh": mesh, "spec": {
        "targetRef": {"kind": "Mesh"},
        "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "20s"}}]}})
}

/// Global-to-zones latency: from the API's answer to the last zone's arrival, per write.
async fn g2z(
    global: &Global,
    zones: &[Zone],
    writes: usize,
    burst: usize,
    tag: &str,
) -> Result<Vec<Duration>> {
    g2z_watched(
        global,
        zones,
        &mut watch_arrivals(zones),
        writes,
        burst,
        tag,
    )
    .await
}

/// [`g2z`] with the zones' arrivals already being watched.
async fn g2z_watched(
    global: &Global,
    zones: &[Zone],
    arrivals: &mut mpsc::UnboundedReceiver<(usize, String, Instant)>,
    writes: usize,
    burst: usize,
    tag: &str,
) -> Result<Vec<Duration>> {
    let mut acked: HashMap<String, Instant> = HashMap::new();
    let mut last: HashMap<String, (usize, Instant)> = HashMap::new();
    let mut latencies = Vec::with_capacity(writes);
    let mut i = 0;
    while i < writes {
        let batch: Vec<String> = (i..(i + burst).min(writes))
            .map(|n| format!("{tag}-{n}"))
            .collect();
        for name in &batch {
            global
                .put(
                    &format!("/meshes/default/meshtimeouts/{name}"),
                    &timeout_policy(name, "default"),
                )
                .await?;
            acked.insert(
                model::name::hashed_name("default", name, None, None),
                Instant::now(),
            );
        }
        let mut pending: HashSet<String> = batch
            .iter()
            .map(|n| model::name::hashed_name("default", n, None, None))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !pending.is_empty() {
            let (_zone, name, at) = tokio::time::timeout_at(deadline, arrivals.recv())
                .await
                .context("writes did not reach every zone within 60 s")?
                .context("arrival watchers stopped")?;
            let entry = last.entry(name.clone()).or_insert((0, at));
            entry.0 += 1;
            entry.1 = entry.1.max(at);
            if entry.0 == zones.len() && pending.remove(&name) {
                let ack = acked.get(&name).copied().unwrap_or(entry.1);
                latencies.push(entry.1.saturating_duration_since(ack));
            }
        }
        i += burst;
    }
    latencies.sort();
    Ok(latencies)
}

/// Global's change stream (`GET /events`), read as server-sent events: each change's
/// (operation, name) as it arrives.
struct GlobalEvents {
    response: reqwest::Response,
    buffer: String,
}

impl GlobalEvents {
    async fn open(global: &Global, types: &str) -> Result<GlobalEvents> {
        // Its own client: the shared one times requests out after 30 s.
        let response = global
            .authed(reqwest::Client::new().get(global.url(&format!("/events?types={types}"))))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("GET /events: {}", response.status());
        }
        let mut events = GlobalEvents {
            response,
            buffer: String::new(),
        };
        // `ready` means global's subscription is in place: nothing after it is missed.
        while events.next().await?.0 != "ready" {}
        Ok(events)
    }

    /// The next event: its name and data.
    async fn next(&mut self) -> Result<(String, Value)> {
        loop {
            if let Some(event) = api::events::take_event(&mut self.buffer) {
                return Ok(event?);
            }
            let chunk = self
                .response
                .chunk()
                .await?
                .context("global closed its event stream")?;
            self.buffer.push_str(std::str::from_utf8(&chunk)?);
        }
    }
}

/// Zone-to-global latency: a Dataplane created in a zone's store until global's change stream
/// reports its copy stored (no polling: global's own event, over a connection already open).
async fn z2g(global: &Global, zone: &Zone, samples: usize) -> Result<Vec<Duration>> {
    let mut events = GlobalEvents::open(global, "Dataplane").await?;
    let mut latencies = Vec::with_capacity(samples);
    for n in 0..samples {
        let name = format!("z2g-{n}");
        let dp = Resource::new(
            ResourceType::Dataplane,
            "default",
            &name,
            json!({"networking": {"address": "10.0.0.1", "inbound": [{"port": 80, "tags": {"kuma.io/service": "bench"}}]}}),
        );
        let on_global = model::name::hashed_name("default", &name, Some(&zone.name), None);
        let start = Instant::now();
        zone.store.create(dp).await?;
        loop {
            let (event, data) = tokio::time::timeout(Duration::from_secs(30), events.next())
                .await
                .with_context(|| format!("{name} never reached global"))??;
            if event == "change" && data["operation"] == "Create" && data["name"] == on_global {
                break;
            }
        }
        latencies.push(start.elapsed());
    }
    latencies.sort();
    Ok(latencies)
}

/// A zone holding nothing connects while global has `count` policies: time until it has them.
async fn resync(global: &Global, count: usize, zone_name: &str) -> Result<Duration> {
    global
        .put("/meshes/resync", &json!({"type": "Mesh", "name": "resync"}))
        .await?;
    let names: Vec<String> = (0..count).map(|n| format!("r-{n}")).collect();
    // Eight writers keep the API busy without queuing thousands of requests.
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in names.chunks(names.len().div_ceil(8).max(1)) {
        let chunk = chunk.to_vec();
        let put = |name: &str| {
            global.authed(
                global
                    .http
                    .put(global.url(&format!("/meshes/resync/meshtimeouts/{name}"))),
            )
        };
        let requests: Vec<(String, reqwest::RequestBuilder)> =
            chunk.iter().map(|name| (name.clone(), put(name))).collect();
        tasks.spawn(async move {
            for (name, request) in requests {
                let r = request
                    .json(&timeout_policy(&name, "resync"))
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("PUT {name}: {}", r.status());
                }
            }
            Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    // Arrivals counted from the zone store's own events (polling a list of 100,000 would
    // compete with the very writes it waits for); a lag is settled by one count.
    let local: SharedStore = Arc::new(MemoryStore::new());
    let mut events = local.subscribe();
    let start = Instant::now();
    let zone = start_zone_with(global, zone_name, local.clone()).await?;
    let mut arrived = 0usize;
    let deadline = start + Duration::from_secs(120);
    while arrived < count {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .with_context(|| format!("resync of {count} resources took over 2 minutes"))?;
        match event {
            Ok(ev)
                if ev.key.kind == ResourceType::MeshTimeout
                    && ev.op == store::Operation::Create =>
            {
                arrived += 1;
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                let mut q = store::ListQuery::in_mesh(ResourceType::MeshTimeout, "resync");
                q.size = Some(0);
                arrived = local.list(&q).await?.total as usize;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => bail!("the zone store closed"),
        }
    }
    let took = start.elapsed();
    drop(zone);
    global.delete("/meshes/resync").await?;
    Ok(took)
}

/// A zone that subscribes to everything and never reads: HTTP/2 flow control stalls global's
/// sends to it. Held open for as long as the value lives.
struct SlowZone {
    _requests: mpsc::Sender<DeltaDiscoveryRequest>,
    _responses: tonic::Streaming<DeltaDiscoveryResponse>,
}

async fn start_slow_zone(global: &Global) -> Result<SlowZone> {
    use proto::envoy_types::pb::envoy::config::core::v3::Node;
    use proto::kuma::mesh::v1alpha1::kds_sync_service_client::KdsSyncServiceClient;
    let channel = tls_channel(global).await?;
    let token = global.zone_token("slow-zone").await?;
    let (tx, rx) = mpsc::channel(64);
    for kind in kds::rules::zone_subscriptions() {
        tx.send(DeltaDiscoveryRequest {
            node: Some(Node {
                id: "slow-zone".into(),
                ..Default::default()
            }),
            type_url: kind.name().into(),
            resource_names_subscribe: vec!["*".into()],
            ..Default::default()
        })
        .await?;
    }
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    authenticate(&mut req, "slow-zone", &token)?;
    let responses = KdsSyncServiceClient::new(channel)
        .global_to_zone_sync(req)
        .await?
        .into_inner();
    Ok(SlowZone {
        _requests: tx,
        _responses: responses,
    })
}

async fn tls_channel(global: &Global) -> Result<tonic::transport::Channel> {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&global.root_ca))
        .domain_name("localhost");
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{}", global.kds_port))?;
    Ok(endpoint.tls_config(tls)?.connect().await?)
}

/// The metadata a zone sends with every stream.
fn authenticate<T>(req: &mut tonic::Request<T>, zone: &str, token: &str) -> Result<()> {
    let md = req.metadata_mut();
    md.insert("client-id", zone.parse()?);
    md.insert("version", env!("CARGO_PKG_VERSION").parse()?);
    md.insert("authorization", format!("Bearer {token}").parse()?);
    Ok(())
}

/// The same processes' plain unary gRPC round trip (KDS HealthCheck over TLS), the floor any
/// KDS latency here stands on.
async fn floor(global: &Global, samples: usize) -> Result<Vec<Duration>> {
    use proto::kuma::mesh::v1alpha1::ZoneHealthCheckRequest;
    use proto::kuma::mesh::v1alpha1::global_kds_service_client::GlobalKdsServiceClient;
    let channel = tls_channel(global).await?;
    let token = global.zone_token("floor").await?;
    let mut client = GlobalKdsServiceClient::new(channel);
    let mut latencies = Vec::with_capacity(samples);
    for n in 0..samples + 20 {
        let mut req = tonic::Request::new(ZoneHealthCheckRequest {});
        authenticate(&mut req, "floor", &token)?;
        let start = Instant::now();
        client.health_check(req).await?;
        // The first calls warm the connection and caches.
        if n >= 20 {
            latencies.push(start.elapsed());
        }
    }
    latencies.sort();
    Ok(latencies)
}

/// CPU time a process has used (user + system), from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; the kernel
    // reports them in USER_HZ, which is 100 on every Linux architecture that matters here.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Global's store writes so far (creates, updates, deletes), from its `/metrics`.
fn store_writes(global: &Global) -> f64 {
    let text = e2e::http_body(global.cp.diag_port, "/metrics").unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("store_operations_total{"))
        .filter(|l| {
            ["create", "update", "delete"]
                .iter()
                .any(|op| l.contains(&format!("operation=\"{op}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Every zone registers `per_zone` dataplanes; global's memory once it holds them all.
async fn rss(global: &Global, zones: &[Zone], per_zone: usize) -> Result<(f64, Duration)> {
    let start = Instant::now();
    for z in zones {
        for n in 0..per_zone {
            let dp = Resource::new(
                ResourceType::Dataplane,
                "default",
                &format!("rss-{n}"),
                json!({"networking": {"address": "10.1.0.1", "inbound": [{"port": 80, "tags": {"kuma.io/service": format!("svc-{}", n % 50)}}]}}),
            );
            z.store.create(dp).await?;
        }
    }
    let want = (zones.len() * per_zone) as u64;
    loop {
        let have = global.total("/meshes/default/dataplanes?size=1").await?;
        if have >= want {
            break;
        }
        if start.elapsed() > Duration::from_secs(240) {
            bail!("global has {have} of {want} dataplanes after 4 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok((rss_mb(global.cp.child.id()), start.elapsed()))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut _pg = None;
    let raft_dir = std::env::temp_dir().join(format!("kds-bench-raft-{}", std::process::id()));
    let store_env = if args.store == StoreKind::Raft {
        e2e::raft_replicas_env(1, &raft_dir, "kds-bench-raft-token").remove(0)
    } else if args.store == StoreKind::Postgres {
        let pg = store::testing::postgres::TestPostgres::start()
            .context("--store postgres needs a local PostgreSQL (initdb, pg_ctl)")?;
        let db = pg.create_database("bench");
        let env = e2e::postgres_env(pg.port, store::testing::postgres::TEST_USER, &db);
        let out = e2e::migrate(&env);
        if !out.status.success() {
            bail!("migrate: {}", e2e::stderr(&out));
        }
        _pg = Some(pg);
        env
    } else {
        vec![]
    };
    eprintln!("starting global ({})", args.store.name());
    if args.tenants > 0 {
        let global = start_global(&store_env, args.otlp, true).await?;
        return hosted(&global, &args).await;
    }
    let mut global = start_global(&store_env, args.otlp, false).await?;

    eprintln!("floor: unary gRPC round trips");
    let floor = floor(&global, args.floor_samples).await?;

    let resync_took = if args.resync > 0 {
        eprintln!("resync: {} resources to a fresh zone", args.resync);
        Some(resync(&global, args.resync, "resync-zone").await?)
    } else {
        None
    };

    eprintln!("connecting {} zones", args.zones);
    let mut zones = Vec::with_capacity(args.zones);
    for n in 0..args.zones {
        zones.push(start_zone(&global, &format!("zone-{n}")).await?);
    }
    wait_all(
        &zones,
        ResourceType::Mesh,
        "",
        "default",
        Duration::from_secs(120),
    )
    .await?;

    let slow = if args.slow_zone {
        eprintln!("slow zone: subscribed, never reading");
        Some(start_slow_zone(&global).await?)
    } else {
        None
    };
    let rss_before_g2z = rss_mb(global.cp.child.id());
    let pid = global.cp.child.id();
    let (cpu_before, writes_before, g2z_start) =
        (cpu_time(pid), store_writes(&global), Instant::now());
    eprintln!("g2z: {} paced writes", args.writes);
    let paced = g2z(&global, &zones, args.writes, 1, "paced").await?;
    eprintln!("g2z: {} writes in bursts of 50", args.writes);
    let bursts = g2z(&global, &zones, args.writes, 50, "burst").await?;
    // Global's CPU for the whole fan-out (API, store, every zone's stream) per change delivered
    // to one zone: comparable between runs however busy the machine is.
    let deliveries = (2 * args.writes * zones.len()) as f64;
    let cpu_per_delivery_us = (cpu_time(pid) - cpu_before).as_secs_f64() * 1e6 / deliveries;
    // Global's own writes meanwhile (zone insights, mostly), net of the bench's policies.
    let background_writes_per_s =
        (store_writes(&global) - writes_before - (2 * args.writes) as f64).max(0.0)
            / g2z_start.elapsed().as_secs_f64();
    // Compared between runs with and without --slow-zone: what global holds for a zone it
    // cannot send to.
    let g2z_growth = rss_mb(global.cp.child.id()) - rss_before_g2z;
    drop(slow);
    eprintln!("z2g: 200 dataplanes");
    let up = z2g(&global, &zones[0], 200).await?;
    let rss = if args.rss_dataplanes > 0 {
        eprintln!(
            "rss: {} zones x {} dataplanes",
            zones.len(),
            args.rss_dataplanes
        );
        Some(rss(&global, &zones, args.rss_dataplanes).await?)
    } else {
        None
    };
    let storm = if args.reconnect_storm {
        eprintln!(
            "reconnect storm: kill -9 global, restart, {} zones return at once",
            zones.len()
        );
        Some(reconnect_storm(&mut global, &zones).await?)
    } else {
        None
    };

    let floor_p99 = pct(&floor, 0.99);
    let row = |what: &str, s: &[Duration]| {
        println!(
            "{what:<24} {:>8.2} {:>8.2} {:>8.2} {:>10.1}x",
            pct(s, 0.5),
            pct(s, 0.99),
            pct(s, 1.0),
            pct(s, 0.99) / floor_p99
        )
    };
    println!(
        "{:<24} {:>8} {:>8} {:>8} {:>11}",
        "latency (ms)", "p50", "p99", "max", "p99/floor"
    );
    row("floor (unary gRPC)", &floor);
    row("g2z paced", &paced);
    row("g2z bursts of 50", &bursts);
    row("z2g", &up);
    println!(
        "global CPU per delivered change: {cpu_per_delivery_us:.1} us ({} zones x {} writes)",
        zones.len(),
        2 * args.writes
    );
    println!("global's own store writes during g2z: {background_writes_per_s:.1}/s");
    if let Some(t) = resync_took {
        println!(
            "resync {} resources      {:.2} s",
            args.resync,
            t.as_secs_f64()
        );
    }
    if let Some((mb, took)) = rss {
        println!(
            "global RSS with {} x {} dataplanes: {mb:.0} MB (synced in {:.1} s)",
            zones.len(),
            args.rss_dataplanes,
            took.as_secs_f64()
        );
    }
    if let Some(s) = &storm {
        println!(
            "reconnect storm: {} zones back in sync both ways {:.1} s after global restarted; global peak RSS {:.0} MB",
            s.zones,
            s.converged.as_secs_f64(),
            s.peak_rss_mb
        );
    }
    println!(
        "global RSS growth over the g2z phases{}: {g2z_growth:.1} MB",
        if args.slow_zone {
            " (with a slow zone)"
        } else {
            ""
        }
    );
    if args.otlp {
        println!(
            "OTLP: global exported {} spans to the bench's collector",
            SPANS_RECEIVED.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    let g2z_all: Vec<Duration> = {
        let mut v: Vec<Duration> = paced.iter().chain(&bursts).copied().collect();
        v.sort();
        v
    };
    println!(
        "{}",
        json!({
            "zones": args.zones,
            "store": args.store.name(),
            "writes": args.writes * 2,
            "g2z_p50_ms": pct(&g2z_all, 0.5),
            "g2z_p99_ms": pct(&g2z_all, 0.99),
            "g2z_max_ms": pct(&g2z_all, 1.0),
            "g2z_paced_p99_ms": pct(&paced, 0.99),
            "g2z_burst_p99_ms": pct(&bursts, 0.99),
            "z2g_p50_ms": pct(&up, 0.5),
            "z2g_p99_ms": pct(&up, 0.99),
            "z2g_max_ms": pct(&up, 1.0),
            "g2z_paced_p50_ms": pct(&paced, 0.5),
            "g2z_burst_p50_ms": pct(&bursts, 0.5),
            "global_cpu_us_per_delivery": cpu_per_delivery_us,
            "global_background_writes_per_s": background_writes_per_s,
            "resync_10k_s": resync_took.map(|t| t.as_secs_f64()),
            "resync_resources": args.resync,
            "rss_mb_100x1000": rss.map(|(mb, _)| mb),
            "rss_zones_x_dataplanes": format!("{}x{}", args.zones, args.rss_dataplanes),
            "floor_p50_ms": pct(&floor, 0.5),
            "floor_p99_ms": floor_p99,
            "slow_zone": args.slow_zone,
            "g2z_rss_growth_mb": g2z_growth,
            "otlp": args.otlp,
            "storm_converged_s": storm.as_ref().map(|s| s.converged.as_secs_f64()),
            "storm_peak_rss_mb": storm.as_ref().map(|s| s.peak_rss_mb),
            "otlp_spans": SPANS_RECEIVED.load(std::sync::atomic::Ordering::Relaxed),
        })
    );
    Ok(())
}

/// `writes` writes in bursts of `burst`, each burst to the next control plane in turn, timed
/// until that control plane's zones all have it.
async fn rounds(
    planes: &mut [ControlPlaneUnderTest],
    writes: usize,
    burst: usize,
    tag: &str,
) -> Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(writes);
    let mut written = 0;
    let mut turn = 0;
    while written < writes {
        let n = planes.len();
        let plane = &mut planes[turn % n];
        let tag = format!("{tag}-{turn}");
        latencies.extend(
            g2z_watched(
                &plane.api,
                &plane.zones,
                &mut plane.arrivals,
                burst,
                burst,
                &tag,
            )
            .await?,
        );
        written += burst;
        turn += 1;
    }
    latencies.sort();
    Ok(latencies)
}

/// One of a hosted manager's control planes, its zones and their arrivals.
struct ControlPlaneUnderTest {
    api: Global,
    zones: Vec<Zone>,
    arrivals: mpsc::UnboundedReceiver<(usize, String, Instant)>,
}

/// POSTs to the manager's management API (as its admin, from its host), retrying while a new
/// control plane's keys are still being created.
async fn manage(global: &Global, path: &str, body: Value) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = global
            .http
            .post(format!("{}{path}", global.cp.api()))
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        if status.is_success() {
            return Ok(text);
        }
        if !status.is_server_error() || Instant::now() > deadline {
            bail!("POST {path}: {status} {text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `--tenants T`: a hosted manager with T control planes of `--zones` zones each. Writes go to
/// the control planes in turn, each timed until that control plane's zones all have it; then
/// one control plane's full resync, alone and while another control plane takes a write storm.
async fn hosted(manager: &Global, args: &Args) -> Result<()> {
    eprintln!(
        "hosted manager: {} control planes x {} zones",
        args.tenants, args.zones
    );
    let mut planes = Vec::with_capacity(args.tenants);
    for t in 0..args.tenants {
        let created: Value = serde_json::from_str(
            &manage(
                manager,
                "/v0/mesh/control-planes",
                json!({"name": format!("tenant-{t}")}),
            )
            .await?,
        )?;
        let id = created["id"].as_str().context("a control plane's id")?;
        let token = manage(
            manager,
            &format!("/v0/mesh/control-planes/{id}/personal-access-tokens"),
            json!({"name": "bench", "validFor": "24h"}),
        )
        .await?;
        let api = manager.control_plane(id, &token);
        let deadline = Instant::now() + Duration::from_secs(60);
        while api.zone_token("probe").await.is_err() {
            if Instant::now() > deadline {
                bail!("control plane {id} never issued a zone token");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut zones = Vec::with_capacity(args.zones);
        for n in 0..args.zones {
            zones.push(start_zone(&api, &format!("zone-{n}")).await?);
        }
        planes.push(ControlPlaneUnderTest {
            api,
            arrivals: watch_arrivals(&zones),
            zones,
        });
    }
    for plane in &planes {
        wait_all(
            &plane.zones,
            ResourceType::Mesh,
            "",
            "default",
            Duration::from_secs(300),
        )
        .await?;
    }
    let pid = manager.cp.child.id();
    let rss_connected = rss_mb(pid);
    let cpu_before = cpu_time(pid);
    eprintln!(
        "g2z: {} paced writes across the control planes",
        args.writes
    );
    let paced = rounds(&mut planes, args.writes, 1, "paced").await?;
    eprintln!("g2z: {} writes in bursts of 50", args.writes);
    let bursts = rounds(&mut planes, args.writes, 50, "burst").await?;
    let deliveries = (2 * args.writes * args.zones) as f64;
    let cpu_per_delivery_us = (cpu_time(pid) - cpu_before).as_secs_f64() * 1e6 / deliveries;
    let rss_after = rss_mb(pid);

    // One control plane's resync, alone, then while another takes a write storm.
    let (quiet, stormy) = if args.resync > 0 && planes.len() > 1 {
        let samples = 3;
        let mut quiet = Vec::with_capacity(samples);
        for k in 0..samples {
            eprintln!("resync {} (quiet) {k}", args.resync);
            quiet.push(resync(&planes[0].api, args.resync, &format!("resync-quiet-{k}")).await?);
        }
        let (stop, stopped) = watch::channel(false);
        // Eight writers, as many as the resync's own, so the storm is not the smaller load.
        let mut storm = tokio::task::JoinSet::new();
        for writer in 0..8 {
            let (api, stopped) = (planes[1].api.clone(), stopped.clone());
            storm.spawn(async move {
                let mut n = 0u64;
                while !*stopped.borrow() {
                    let name = format!("storm-{writer}-{}", n % 100);
                    if let Err(e) = api
                        .put(
                            &format!("/meshes/default/meshtimeouts/{name}"),
                            &timeout_policy(&name, "default"),
                        )
                        .await
                    {
                        eprintln!("storm write failed: {e}");
                    }
                    n += 1;
                }
                n
            });
        }
        let storm_started = Instant::now();
        let mut stormy = Vec::with_capacity(samples);
        for k in 0..samples {
            eprintln!(
                "resync {} (another control plane's write storm) {k}",
                args.resync
            );
            stormy.push(resync(&planes[0].api, args.resync, &format!("resync-storm-{k}")).await?);
        }
        let _ = stop.send(true);
        let mut storm_writes = 0;
        while let Some(writes) = storm.join_next().await {
            storm_writes += writes?;
        }
        eprintln!(
            "storm: {:.0} writes/s on another control plane",
            storm_writes as f64 / storm_started.elapsed().as_secs_f64()
        );
        quiet.sort();
        stormy.sort();
        (quiet, stormy)
    } else {
        (Vec::new(), Vec::new())
    };

    println!(
        "{:<32} {:>8} {:>8} {:>8}",
        "latency (ms)", "p50", "p99", "max"
    );
    let row = |what: &str, s: &[Duration]| {
        println!(
            "{what:<32} {:>8.2} {:>8.2} {:>8.2}",
            pct(s, 0.5),
            pct(s, 0.99),
            pct(s, 1.0)
        )
    };
    row("g2z paced", &paced);
    row("g2z bursts of 50", &bursts);
    if !quiet.is_empty() {
        row(&format!("resync {} alone", args.resync), &quiet);
        row(&format!("resync {} beside a storm", args.resync), &stormy);
    }
    println!(
        "manager RSS: {rss_connected:.0} MB with {} zones connected, {rss_after:.0} MB after g2z",
        args.tenants * args.zones
    );
    println!(
        "manager CPU per delivered change: {cpu_per_delivery_us:.1} us ({} zones per control plane x {} writes)",
        args.zones,
        2 * args.writes
    );
    let ms = |d: Option<&Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    println!(
        "{}",
        json!({
            "tenants": args.tenants,
            "zones_per_tenant": args.zones,
            "writes": 2 * args.writes,
            "g2z_paced_p50_ms": pct(&paced, 0.5),
            "g2z_paced_p99_ms": pct(&paced, 0.99),
            "g2z_burst_p50_ms": pct(&bursts, 0.5),
            "g2z_burst_p99_ms": pct(&bursts, 0.99),
            "rss_mb_connected": rss_connected,
            "rss_mb_after": rss_after,
            "cpu_us_per_delivery": cpu_per_delivery_us,
            "resync_resources": args.resync,
            "resync_alone_max_ms": ms(quiet.last()),
            "resync_beside_storm_max_ms": ms(stormy.last()),
        })
    );
    Ok(())
}
