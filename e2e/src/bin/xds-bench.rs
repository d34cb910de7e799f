//! `xds-bench`: how fast a zone control plane's xDS reaches its proxies, and what each costs.
//!
//! The control plane is a real `kuma-cp` process running the zone role's data plane server
//! (standalone, so it issues the dataplane tokens itself; memory store, or Postgres with
//! `--store postgres`). The proxies are simulated in this process: each holds its own TLS
//! connection to the data plane server, presents its own dataplane token, and speaks delta ADS
//! as Envoy does (wildcard CDS and LDS, EDS for the clusters it receives, an ACK for every
//! response), so N proxies cost the control plane what N Envoys would without N Envoy
//! processes. Prints a table, then one JSON line.
//!
//! Figures: (a) a Dataplane added -> every proxy has its new EDS; (b) a policy written ->
//! every selected proxy has its new CDS; (c) a proxy connecting -> its first full
//! configuration; (d) control-plane RSS per connected proxy; (e) store reads per change; (f) a
//! policy for one proxy -> its CDS; (g) a MeshHTTPRoute changed -> a builtin gateway with
//! `--gateway-routes` routes attached has its new listener; (h) a Dataplane added -> a MADS
//! client long-polling as Prometheus does has it in its next response; (i) one MADS response
//! listing every proxy's Prometheus target (a MeshMetric selects them all); and the floor: one
//! request/response round trip on an open ADS stream.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use e2e::{ControlPlane, pct};
use proto::envoy_types::pb::envoy::config::core::v3::Node;
use proto::envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use proto::envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use proto::envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// How long idle store reads are counted for, before the changes.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// The destination every proxy calls, and so every change below concerns.
const TARGET: &str = "svc-0";

struct Args {
    proxies: usize,
    services: usize,
    outbounds: usize,
    changes: usize,
    postgres: bool,
    floor_samples: usize,
    gateway_routes: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        proxies: 100,
        services: 50,
        outbounds: 5,
        changes: 20,
        postgres: false,
        floor_samples: 200,
        gateway_routes: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| e2e::flag_number(&mut it, name);
        match flag.as_str() {
            "--proxies" => args.proxies = value("--proxies")?.max(1),
            "--services" => args.services = value("--services")?.max(1),
            "--outbounds" => args.outbounds = value("--outbounds")?.max(1),
            "--changes" => args.changes = value("--changes")?.max(1),
            "--floor" => args.floor_samples = value("--floor")?.max(10),
            "--gateway-routes" => args.gateway_routes = value("--gateway-routes")?.max(1),
            "--store" => match it.next().as_deref() {
                Some("memory") => args.postgres = false,
                Some("postgres") => args.postgres = true,
                other => bail!("--store must be memory or postgres, not {other:?}"),
            },
            "-h" | "--help" => {
                println!(
                    "xds-bench [--proxies N] [--services N] [--outbounds N] [--changes N] [--floor N] [--gateway-routes N] [--store memory|postgres]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown flag {other:?} (see --help)"),
        }
    }
    args.outbounds = args.outbounds.min(args.services);
    Ok(args)
}

struct Zone {
    cp: ControlPlane,
    http: reqwest::Client,
}

impl Zone {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cp.api())
    }

    async fn put(&self, path: &str, body: &Value) -> Result<()> {
        let r = self.http.put(self.url(path)).json(body).send().await?;
        if !r.status().is_success() {
            bail!(
                "PUT {path}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    async fn token(&self, name: &str) -> Result<String> {
        let r = self
            .http
            .post(self.url("/tokens/dataplane"))
            .json(&json!({"name": name, "mesh": "default"}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("dataplane token for {name}: {}", r.status());
        }
        Ok(r.text().await?)
    }

    /// Store reads (gets and lists) so far, from the control plane's `/metrics`.
    async fn store_reads(&self) -> Result<f64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.cp.diag_port);
        let text = self.http.get(url).send().await?.text().await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with("store_operations_total{"))
            .filter(|l| l.contains("operation=\"get\"") || l.contains("operation=\"list\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

async fn start_zone(store_env: &[(String, String)]) -> Result<Zone> {
    // Standalone runs the zone role's data plane server and issues dataplane tokens itself
    // (a federated zone's come from global).
    let mut env: Vec<(&str, &str)> = vec![
        ("KUMA_MODE", "standalone"),
        ("KUMA_MULTIZONE_ZONE_NAME", "zone-1"),
        ("KUMA_LOG_LEVEL_FILTER", "warn"),
    ];
    env.extend(store_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut cp = ControlPlane::start("xds-bench", &env);
    tokio::task::block_in_place(|| cp.wait_ready(Duration::from_secs(120)));
    // The API closes a keep-alive connection idle for 10 s (its header read timeout): a
    // pooled one must not be reused after the bench's 10 s idle window.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(5))
        .build()?;
    let zone = Zone { cp, http };
    // The default mesh comes from the leader's defaults, right after start.
    let deadline = Instant::now() + Duration::from_secs(30);
    while zone.token("probe").await.is_err() {
        if Instant::now() > deadline {
            bail!(
                "the zone never issued a dataplane token:\n{}",
                zone.cp.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(zone)
}

fn dataplane(name: &str, address: &str, service: &str, outbounds: &[String]) -> Value {
    let outbound: Vec<Value> = outbounds
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"port": 10001 + i, "tags": {"kuma.io/service": s}}))
        .collect();
    json!({"type": "Dataplane", "name": name, "mesh": "default",
        "networking": {"address": address,
            "inbound": [{"port": 20000, "servicePort": 8080, "tags": {"kuma.io/service": service}}],
            "outbound": outbound}})
}

/// What a simulated proxy tells the benchmark.
enum Event {
    /// A response arrived (and was ACKed): its type and resource names.
    Received {
        proxy: usize,
        type_url: String,
        names: Vec<String>,
        at: Instant,
    },
    /// The proxy holds clusters, their endpoints and listeners: its first full configuration.
    Configured {
        proxy: usize,
        at: Instant,
    },
    Failed {
        proxy: usize,
        error: String,
    },
}

fn string_value(s: &str) -> PbValue {
    PbValue {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

fn request(type_url: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.into(),
        ..Default::default()
    }
}

/// One simulated Envoy: subscribes as Envoy does, ACKs everything, subscribes EDS for the EDS
/// clusters it receives, and reports what arrives.
async fn run_proxy(
    index: usize,
    channel: Channel,
    name: String,
    token: String,
    requests: mpsc::Sender<DeltaDiscoveryRequest>,
    outgoing: mpsc::Receiver<DeltaDiscoveryRequest>,
    events: mpsc::UnboundedSender<Event>,
) {
    let outcome = async {
        let mut first = request(CDS);
        first.node = Some(Node {
            id: format!("default.{name}"),
            metadata: Some(Struct {
                fields: [
                    ("dataplane.mesh".to_string(), string_value("default")),
                    ("dataplane.name".to_string(), string_value(&name)),
                    ("dataplane.proxyType".to_string(), string_value("dataplane")),
                ]
                .into_iter()
                .collect(),
            }),
            ..Default::default()
        });
        requests.send(first).await?;
        requests.send(request(LDS)).await?;
        let mut call = tonic::Request::new(ReceiverStream::new(outgoing));
        call.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let mut client =
            AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20);
        let mut responses = client.delta_aggregated_resources(call).await?.into_inner();
        let (mut clusters, mut listeners) = (false, false);
        let mut waiting_eds: HashSet<String> = HashSet::new();
        let mut subscribed: HashSet<String> = HashSet::new();
        let mut configured = false;
        while let Some(resp) = responses.message().await? {
            let at = Instant::now();
            let resp: DeltaDiscoveryResponse = resp;
            requests
                .send(DeltaDiscoveryRequest {
                    type_url: resp.type_url.clone(),
                    response_nonce: resp.nonce.clone(),
                    ..Default::default()
                })
                .await?;
            let names: Vec<String> = resp.resources.iter().map(|r| r.name.clone()).collect();
            match resp.type_url.as_str() {
                CDS => {
                    clusters = true;
                    // Applications' clusters are static; the mesh's come over EDS.
                    let fresh: Vec<String> = names
                        .iter()
                        .filter(|n| !n.starts_with("localhost:") && !subscribed.contains(*n))
                        .cloned()
                        .collect();
                    if !fresh.is_empty() {
                        subscribed.extend(fresh.iter().cloned());
                        waiting_eds.extend(fresh.iter().cloned());
                        let mut eds = request(EDS);
                        eds.resource_names_subscribe = fresh;
                        requests.send(eds).await?;
                    }
                }
                EDS => {
                    for n in &names {
                        waiting_eds.remove(n);
                    }
                }
                LDS => listeners = true,
                _ => {}
            }
            let _ = events.send(Event::Received {
                proxy: index,
                type_url: resp.type_url,
                names,
                at,
            });
            if !configured && clusters && listeners && waiting_eds.is_empty() {
                configured = true;
                let _ = events.send(Event::Configured { proxy: index, at });
            }
        }
        anyhow::Ok(())
    };
    if let Err(e) = outcome.await {
        let _ = events.send(Event::Failed {
            proxy: index,
            error: format!("{e:#}"),
        });
    }
}

async fn connect(port: u16, ca_pem: &str) -> Result<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    Ok(Channel::from_shared(format!("https://127.0.0.1:{port}"))?
        .tls_config(tls)?
        .connect()
        .await?)
}

fn rss_kb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .unwrap_or(f64::NAN)
}

/// Which proxies a change must reach.
#[derive(Clone, Copy)]
enum Reach {
    /// The first N.
    All(usize),
    /// This one alone.
    One(usize),
}

/// Waits until every proxy `reach` names reports a response of `type_url` naming `resource`
/// after `since`; returns each proxy's latency.
async fn wait_every(
    events: &mut mpsc::UnboundedReceiver<Event>,
    reach: Reach,
    type_url: &str,
    resource: &str,
    since: Instant,
) -> Result<Vec<Duration>> {
    let mut seen: HashMap<usize, Duration> = HashMap::new();
    let deadline = since + Duration::from_secs(60);
    let (proxies, wanted) = match reach {
        Reach::All(n) => (n, None),
        Reach::One(p) => (1, Some(p)),
    };
    while seen.len() < proxies {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| {
                anyhow::anyhow!("{} of {proxies} proxies saw {resource} in 60 s", seen.len())
            })?
            .context("every proxy stopped")?;
        match ev {
            Event::Received {
                proxy,
                type_url: t,
                names,
                at,
            } if t == type_url
                && at >= since
                && wanted.is_none_or(|w| w == proxy)
                && names.iter().any(|n| n == resource) =>
            {
                seen.entry(proxy).or_insert(at - since);
            }
            Event::Failed { proxy, error } => bail!("proxy {proxy}: {error}"),
            _ => {}
        }
    }
    Ok(seen.into_values().collect())
}

/// The listener of the bench's gateway (routes are inline in it, so a route change is LDS).
const GATEWAY_LISTENER: &str = "bench-gw:HTTP:8080";

fn gateway_route(i: usize, services: usize, version: usize) -> Value {
    json!({"type": "MeshHTTPRoute", "name": format!("gw-route-{i}"), "mesh": "default",
        "spec": {"targetRef": {"kind": "MeshGateway", "name": "bench-gw"},
            "to": [{"targetRef": {"kind": "Mesh"}, "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": format!("/r{i}")}}],
                 "default": {
                    "filters": [{"type": "RequestHeaderModifier",
                        "requestHeaderModifier": {"set": [{"name": "x-route-version", "value": version.to_string()}]}}],
                    "backendRefs": [{"kind": "MeshService", "name": format!("svc-{}", 1 + i % (services.max(2) - 1))}]}}]}]}})
}

/// (g): a builtin gateway (one more simulated proxy) with `gateway_routes` MeshHTTPRoutes
/// attached; each change rewrites one route, timed until the gateway has its new listener.
async fn gateway_routes(
    zone: &Zone,
    ca_pem: &str,
    args: &Args,
    events_tx: &mpsc::UnboundedSender<Event>,
    events: &mut mpsc::UnboundedReceiver<Event>,
) -> Result<Vec<Duration>> {
    eprintln!(
        "(g) a gateway with {} routes; {} route changes",
        args.gateway_routes, args.changes
    );
    zone.put(
        "/meshes/default/meshgateways/bench-gw",
        &json!({"type": "MeshGateway", "name": "bench-gw", "mesh": "default",
            "selectors": [{"match": {"kuma.io/service": "bench-gw"}}],
            "conf": {"listeners": [{"port": 8080, "protocol": "HTTP"}]}}),
    )
    .await?;
    for i in 0..args.gateway_routes {
        zone.put(
            &format!("/meshes/default/meshhttproutes/gw-route-{i}"),
            &gateway_route(i, args.services, 0),
        )
        .await?;
    }
    let name = "bench-gw-1";
    zone.put(
        &format!("/meshes/default/dataplanes/{name}"),
        &json!({"type": "Dataplane", "name": name, "mesh": "default",
            "networking": {"address": "10.4.0.1",
                "gateway": {"type": "BUILTIN", "tags": {"kuma.io/service": "bench-gw"}}}}),
    )
    .await?;
    let gateway = args.proxies;
    let channel = connect(zone.cp.dp_port, ca_pem).await?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(run_proxy(
        gateway,
        channel,
        name.to_string(),
        zone.token(name).await?,
        tx,
        rx,
        events_tx.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| anyhow::anyhow!("the gateway was not configured in 60 s"))?
            .context("every proxy stopped")?
        {
            Event::Configured { proxy, .. } if proxy == gateway => break,
            Event::Failed { proxy, error } => bail!("proxy {proxy}: {error}"),
            _ => {}
        }
    }
    let mut latency = Vec::new();
    for n in 0..args.changes {
        let i = (n * 13) % args.gateway_routes;
        let since = Instant::now();
        zone.put(
            &format!("/meshes/default/meshhttproutes/gw-route-{i}"),
            &gateway_route(i, args.services, n + 1),
        )
        .await?;
        latency
            .extend(wait_every(events, Reach::One(gateway), LDS, GATEWAY_LISTENER, since).await?);
        while events.try_recv().is_ok() {}
    }
    latency.sort();
    Ok(latency)
}

/// One MADS request as Prometheus's `kuma_sd_configs` sends it: (status, body, when it answered).
async fn mads_fetch(
    http: &reqwest::Client,
    port: u16,
    version: &str,
    fetch_timeout: &str,
) -> Result<(u16, Value, Instant)> {
    let r = http
        .post(format!(
            "http://127.0.0.1:{port}/v3/discovery:monitoringassignments?fetch-timeout={fetch_timeout}"
        ))
        .json(&json!({"versionInfo": version, "node": {"id": "xds-bench"},
            "typeUrl": "type.googleapis.com/kuma.observability.v1.MonitoringAssignment"}))
        .send()
        .await?;
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    Ok((status, body, Instant::now()))
}

/// (h) and (i): a MeshMetric selecting every proxy, then MADS as Prometheus uses it.
async fn mads(
    zone: &Zone,
    args: &Args,
    events: &mut mpsc::UnboundedReceiver<Event>,
) -> Result<(Vec<Duration>, Vec<Duration>, usize)> {
    eprintln!("(h), (i) MADS with a MeshMetric on every proxy");
    zone.put(
        "/meshes/default/meshmetrics/bench",
        &json!({"type": "MeshMetric", "name": "bench", "mesh": "default",
            "spec": {"targetRef": {"kind": "Mesh"}, "default": {"backends": [
                {"type": "Prometheus", "prometheus": {"port": 5670, "path": "/metrics"}}]}}}),
    )
    .await?;
    // Every proxy gets its metrics listener; let that settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    while events.try_recv().is_ok() {}
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let port = zone.cp.mads_port;
    let mut fetches = Vec::new();
    let mut targets = 0;
    for _ in 0..args.changes {
        let since = Instant::now();
        let (status, body, at) = mads_fetch(&http, port, "", "0s").await?;
        if status != 200 {
            bail!("MADS fetch answered {status}: {body}");
        }
        targets = body["resources"].as_array().map_or(0, Vec::len);
        fetches.push(at - since);
    }
    fetches.sort();
    let mut polls = Vec::new();
    for n in 0..args.changes {
        let (_, current, _) = mads_fetch(&http, port, "", "0s").await?;
        let version = current["version_info"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let poll = tokio::spawn({
            let http = http.clone();
            async move { mads_fetch(&http, port, &version, "30s").await }
        });
        // The poll is waiting before the change is made.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let name = format!("mads-extra-{n}");
        let address = format!("10.4.{}.{}", n / 250, n % 250 + 1);
        let since = Instant::now();
        zone.put(
            &format!("/meshes/default/dataplanes/{name}"),
            &dataplane(&name, &address, "mads", &[]),
        )
        .await?;
        let (status, body, at) = poll.await??;
        let listed = body["resources"]
            .as_array()
            .is_some_and(|r| r.iter().any(|a| a["targets"][0]["name"] == name.as_str()));
        if status != 200 || !listed {
            bail!("the MADS long poll answered {status} without {name}: {body}");
        }
        polls.push(at - since);
        while events.try_recv().is_ok() {}
    }
    polls.sort();
    Ok((polls, fetches, targets))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut _pg = None;
    let store_env = if args.postgres {
        let pg = store::testing::postgres::TestPostgres::start()
            .context("--store postgres needs a local PostgreSQL (initdb, pg_ctl)")?;
        let db = pg.create_database("xdsbench");
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
    let store_name = if args.postgres { "postgres" } else { "memory" };
    eprintln!("starting a zone control plane ({store_name})");
    let zone = start_zone(&store_env).await?;
    let ca_pem = std::fs::read_to_string(zone.cp.work_dir.join("dp-server-ca.pem"))
        .context("the data plane server's CA in the work dir")?;

    // Destinations: one backend instance per service; svc-0 is in every proxy's outbounds.
    eprintln!(
        "creating {} services and {} proxies' Dataplanes",
        args.services, args.proxies
    );
    for s in 0..args.services {
        let name = format!("backend-{s}");
        let address = format!("10.2.{}.{}", s / 250, s % 250 + 1);
        zone.put(
            &format!("/meshes/default/dataplanes/{name}"),
            &dataplane(&name, &address, &format!("svc-{s}"), &[]),
        )
        .await?;
    }
    let mut tokens = Vec::with_capacity(args.proxies);
    for p in 0..args.proxies {
        let name = format!("proxy-{p}");
        let outbounds: Vec<String> = (0..args.outbounds)
            .map(|k| format!("svc-{}", (p + k * 7) % args.services))
            .chain([TARGET.to_string()])
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let address = format!("10.1.{}.{}", p / 250, p % 250 + 1);
        zone.put(
            &format!("/meshes/default/dataplanes/{name}"),
            &dataplane(&name, &address, &format!("client-{}", p % 10), &outbounds),
        )
        .await?;
        tokens.push(zone.token(&name).await?);
    }

    let rss_before = rss_kb(zone.cp.child.id());
    eprintln!("(c) connecting {} proxies", args.proxies);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut senders = Vec::with_capacity(args.proxies);
    let mut connect_started = HashMap::new();
    for (p, token) in tokens.into_iter().enumerate() {
        let channel = connect(zone.cp.dp_port, &ca_pem).await?;
        let (tx, rx) = mpsc::channel(64);
        senders.push(tx.clone());
        connect_started.insert(p, Instant::now());
        tokio::spawn(run_proxy(
            p,
            channel,
            format!("proxy-{p}"),
            token,
            tx,
            rx,
            events_tx.clone(),
        ));
    }
    let mut first_config = Vec::with_capacity(args.proxies);
    let deadline = Instant::now() + Duration::from_secs(300);
    while first_config.len() < args.proxies {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "{} of {} proxies configured in 5 minutes",
                    first_config.len(),
                    args.proxies
                )
            })?
            .context("every proxy stopped")?;
        match ev {
            Event::Configured { proxy, at } => {
                first_config.push(at - connect_started[&proxy]);
            }
            Event::Failed { proxy, error } => bail!("proxy {proxy}: {error}"),
            Event::Received { .. } => {}
        }
    }
    first_config.sort();
    // Let the connection burst settle before measuring memory and changes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    while events.try_recv().is_ok() {}
    let rss_after = rss_kb(zone.cp.child.id());
    let rss_per_proxy_kb = (rss_after - rss_before) / args.proxies as f64;

    eprintln!(
        "floor: {} EDS round trips on one stream",
        args.floor_samples
    );
    let mut floor = Vec::with_capacity(args.floor_samples);
    for _ in 0..args.floor_samples {
        // A resubscription makes the server send the resource again at once.
        let mut again = request(EDS);
        again.resource_names_subscribe = vec![TARGET.to_string()];
        let since = Instant::now();
        senders[0].send(again).await?;
        loop {
            match events.recv().await.context("proxy 0 stopped")? {
                Event::Received {
                    proxy: 0,
                    type_url,
                    names,
                    at,
                } if type_url == EDS && names.iter().any(|n| n == TARGET) => {
                    floor.push(at - since);
                    break;
                }
                Event::Failed { proxy, error } => bail!("proxy {proxy}: {error}"),
                _ => {}
            }
        }
    }
    floor.sort();

    // Proxy streams flush their DataplaneInsights every few seconds whatever changes; the
    // idle rate of reads is measured first and taken out of (e), so (e) is what a change costs.
    eprintln!("idle store reads over {IDLE_WINDOW:?}");
    let idle_start = zone.store_reads().await?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle_per_second = (zone.store_reads().await? - idle_start) / IDLE_WINDOW.as_secs_f64();

    eprintln!("(a) {} Dataplanes of {TARGET} added", args.changes);
    let reads_before = zone.store_reads().await?;
    let changes_start = Instant::now();
    let mut eds_latency = Vec::new();
    for n in 0..args.changes {
        let name = format!("backend-0-extra-{n}");
        let address = format!("10.3.{}.{}", n / 250, n % 250 + 1);
        let since = Instant::now();
        zone.put(
            &format!("/meshes/default/dataplanes/{name}"),
            &dataplane(&name, &address, TARGET, &[]),
        )
        .await?;
        eds_latency
            .extend(wait_every(&mut events, Reach::All(args.proxies), EDS, TARGET, since).await?);
        while events.try_recv().is_ok() {}
    }
    eds_latency.sort();
    let raw_reads = zone.store_reads().await? - reads_before;
    let idle_reads = idle_per_second * changes_start.elapsed().as_secs_f64();
    let raw_reads_per_change = raw_reads / args.changes as f64;
    let reads_per_change = ((raw_reads - idle_reads) / args.changes as f64).max(0.0);

    eprintln!("(b) {} MeshLoadBalancingStrategy writes", args.changes);
    let mut policy_latency = Vec::new();
    for n in 0..args.changes {
        let lb = if n % 2 == 0 { "LeastRequest" } else { "Random" };
        let since = Instant::now();
        zone.put(
            "/meshes/default/meshloadbalancingstrategies/bench",
            &json!({"type": "MeshLoadBalancingStrategy", "name": "bench", "mesh": "default",
                "spec": {"targetRef": {"kind": "Mesh"},
                    "to": [{"targetRef": {"kind": "MeshService", "name": TARGET},
                            "default": {"loadBalancer": {"type": lb}}}]}}),
        )
        .await?;
        policy_latency
            .extend(wait_every(&mut events, Reach::All(args.proxies), CDS, TARGET, since).await?);
        while events.try_recv().is_ok() {}
    }
    policy_latency.sort();

    // A policy for one proxy (overriding (b)'s mesh-wide one): the others, but the one it
    // selected before, need not generate anything.
    eprintln!(
        "(f) {} MeshLoadBalancingStrategy writes for one proxy each",
        args.changes
    );
    let mut targeted_latency = Vec::new();
    for n in 0..args.changes {
        let p = (n * 37) % args.proxies;
        let since = Instant::now();
        zone.put(
            "/meshes/default/meshloadbalancingstrategies/bench-one",
            &json!({"type": "MeshLoadBalancingStrategy", "name": "bench-one", "mesh": "default",
                "spec": {"targetRef": {"kind": "Dataplane", "name": format!("proxy-{p}")},
                    "to": [{"targetRef": {"kind": "MeshService", "name": TARGET},
                            "default": {"loadBalancer": {"type": "RoundRobin"}}}]}}),
        )
        .await?;
        targeted_latency.extend(wait_every(&mut events, Reach::One(p), CDS, TARGET, since).await?);
        while events.try_recv().is_ok() {}
    }
    targeted_latency.sort();

    let gateway_latency = gateway_routes(&zone, &ca_pem, &args, &events_tx, &mut events).await?;
    let (mads_poll_latency, mads_fetch_latency, mads_targets) =
        mads(&zone, &args, &mut events).await?;

    println!(
        "xds-bench: {} proxies, {} services, {} outbounds each, store {store_name}",
        args.proxies, args.services, args.outbounds
    );
    println!("{:<46} {:>9} {:>9} {:>9}", "", "p50 ms", "p99 ms", "max ms");
    for (label, samples) in [
        ("floor (ADS round trip on an open stream)", &floor),
        ("(a) Dataplane added -> every proxy's EDS", &eds_latency),
        ("(b) policy written -> every proxy's CDS", &policy_latency),
        ("(c) proxy connects -> first full config", &first_config),
        ("(f) policy for one proxy -> its CDS", &targeted_latency),
        ("(g) MeshHTTPRoute -> the gateway's LDS", &gateway_latency),
        (
            "(h) Dataplane added -> MADS long poll answers",
            &mads_poll_latency,
        ),
        ("(i) MADS fetch of every target", &mads_fetch_latency),
    ] {
        println!(
            "{label:<46} {:>9.2} {:>9.2} {:>9.2}",
            pct(samples, 0.5),
            pct(samples, 0.99),
            pct(samples, 1.0)
        );
    }
    println!(
        "(d) control-plane RSS: {:.1} MB before proxies, {:.1} MB with them: {rss_per_proxy_kb:.0} KB per proxy",
        rss_before / 1024.0,
        rss_after / 1024.0
    );
    println!(
        "(e) store reads per Dataplane change: {reads_per_change:.1} ({raw_reads_per_change:.1} with the insight flushes of the same time, {idle_per_second:.1} reads/s idle)"
    );
    println!("(i) one MADS response listed {mads_targets} targets");
    println!(
        "Kuma regenerates every proxy's configuration every 1 s (dataplaneConfigurationRefreshInterval), and MADS assignments every 1 s (assignmentRefreshInterval)."
    );
    println!(
        "{}",
        json!({
            "proxies": args.proxies,
            "store": store_name,
            "floor_p50_ms": pct(&floor, 0.5),
            "floor_p99_ms": pct(&floor, 0.99),
            "eds_p50_ms": pct(&eds_latency, 0.5),
            "eds_p99_ms": pct(&eds_latency, 0.99),
            "eds_max_ms": pct(&eds_latency, 1.0),
            "policy_p50_ms": pct(&policy_latency, 0.5),
            "policy_p99_ms": pct(&policy_latency, 0.99),
            "policy_max_ms": pct(&policy_latency, 1.0),
            "targeted_policy_p50_ms": pct(&targeted_latency, 0.5),
            "targeted_policy_p99_ms": pct(&targeted_latency, 0.99),
            "gateway_routes": args.gateway_routes,
            "gateway_route_p50_ms": pct(&gateway_latency, 0.5),
            "gateway_route_p99_ms": pct(&gateway_latency, 0.99),
            "gateway_route_max_ms": pct(&gateway_latency, 1.0),
            "mads_poll_p50_ms": pct(&mads_poll_latency, 0.5),
            "mads_poll_p99_ms": pct(&mads_poll_latency, 0.99),
            "mads_fetch_p50_ms": pct(&mads_fetch_latency, 0.5),
            "mads_fetch_p99_ms": pct(&mads_fetch_latency, 0.99),
            "mads_targets": mads_targets,
            "first_config_p50_ms": pct(&first_config, 0.5),
            "first_config_p99_ms": pct(&first_config, 0.99),
            "rss_per_proxy_kb": rss_per_proxy_kb,
            "store_reads_per_change": reads_per_change,
            "store_reads_per_change_raw": raw_reads_per_change,
            "idle_store_reads_per_second": idle_per_second,
        })
    );
    Ok(())
}
