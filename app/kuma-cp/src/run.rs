//! `kuma-cp run`: binds the listeners, opens the store, and starts each mode's components in
//! the order their inputs become available (the leader creates the cluster id and CAs that
//! every replica's servers need).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kds::inspect::{SharedProxyAdmin, ZoneAdminStreams};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use store::{MeteredStore, SharedStore};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::VERSION;
use crate::backend::{self, BackendError};
use crate::components::{Component, ComponentError, Manager, ManagerError};
use crate::config::{Config, Mode};
use crate::defaults;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{key}: bad address {address}")]
    Address {
        key: &'static str,
        address: String,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error("{key}: cannot listen on {address}")]
    Bind {
        key: &'static str,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("store.postgres")]
    Schema(#[source] store::postgres::SchemaError),
    #[error("shut down while {0}")]
    Stopped(&'static str),
    #[error("{0}")]
    Tls(&'static str, #[source] security::tls::TlsError),
    #[error(transparent)]
    Intercp(#[from] intercp::IntercpError),
    #[error("multizone.zone.kds.rootCaFile (KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE): reading {path}")]
    RootCa {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the zone cannot dial global as configured")]
    ZoneClient(#[source] zone::kds_client::ClientError),
    #[error("general.workDir: writing {path}")]
    WorkDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Component(#[from] ManagerError),
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
}

/// Runs the control plane `config` describes until `stop` resolves, then drains and stops
/// every component. Tests call this in-process; `main` calls it with the shutdown signal.
pub async fn run(
    config: Config,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let hostname = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    let instance_id = format!("{hostname}-{:04}", rand::random::<u16>() % 10000);
    tracing::info!(mode = config.mode.as_str(), store = ?config.store.store_type, %instance_id, "starting kuma-cp {VERSION}");

    let shutdown = Arc::new(watch::Sender::new(false));
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            stop.await;
            let _ = shutdown.send(true);
        });
    }
    let stopping = shutdown.subscribe();

    let mut registry = Registry::default();
    let backend = backend::build(&config, &stopping).await?;
    let metered = MeteredStore::new(backend.store.clone(), &mut registry);
    let mut local_reads: SharedStore = Arc::new(metered.sharing(backend.local_reads.clone()));
    let mut store: SharedStore = Arc::new(metered);
    // A hosted manager's own parts (its API, defaults, catalog) see only its own scope; each
    // control plane sees its own.
    let hosted = config.multitenancy.enabled;
    let tenant_stores = hosted.then(|| store::tenant::TenantStores::new(store.clone()));
    if let Some(tenants) = &tenant_stores {
        store = tenants.root();
        local_reads = store.clone();
    }
    let api_metrics = api::api_metrics(&mut registry);
    let kds_metrics = kds::metrics::KdsMetrics::register(&mut registry);
    let xds_metrics = zone::dpserver::metrics::XdsMetrics::register(&mut registry);
    crate::telemetry::register_metrics(&mut registry);
    let leader_gauge = Gauge::<i64>::default();
    registry.register(
        "leader",
        "1 while this replica is the leader, 0 otherwise",
        leader_gauge.clone(),
    );
    let listeners = Listeners::bind(&config).await?;
    let zone_client = match (config.mode, config.multizone.zone.global_address.is_empty()) {
        (Mode::Zone, false) => Some(zone_client_config(&config, kds_metrics.clone())?),
        _ => None,
    };
    let me = intercp::Me {
        id: instance_id.clone(),
        address: match config.inter_cp.catalog.instance_address.as_str() {
            "" => intercp::primary_address(),
            a => a.to_string(),
        },
        port: config.inter_cp.server.port,
        version: VERSION.into(),
    };

    let (leader_tx, leader_rx) = watch::channel(false);
    let mut components = Manager::new(leader_rx.clone(), shutdown.clone());
    let started = Arc::new(AtomicBool::new(false));
    // The unmetered backend, so scrapes do not count themselves as store traffic; read
    // locally, so a scrape answers at once even while raft elects a leader.
    let diagnostics = Arc::new(api::diagnostics::Diagnostics::new(
        registry,
        backend.local_reads.clone(),
        started.clone(),
    ));
    components.start(Component::every_replica(
        "diagnostics",
        serve(
            listeners.diagnostics,
            diagnostics.clone().router(),
            stopping.clone(),
        ),
    ));
    // OpenTelemetry's own variables (`OTEL_EXPORTER_OTLP_*`), read as its SDKs read them.
    let env: Vec<(String, String)> = std::env::vars().collect();
    if let Some(push) = crate::telemetry::MetricsPush::from_config(&config, &env)? {
        let stopping = stopping.clone();
        components.start(Component::every_replica("metrics-otlp", async move {
            push.run(diagnostics, stopping).await;
            Ok::<(), ComponentError>(())
        }));
    }

    if let Some(raft) = backend.raft.clone() {
        let mut stop = stopping.clone();
        components.start(Component::every_replica("raft-store", async move {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => Ok(()),
                reason = raft.stopped() => {
                    Err::<(), ComponentError>(format!("the raft store stopped: {reason}").into())
                }
            }
        }));
    }
    wait_for_store(&store, stopping.clone()).await?;
    if let Some(pool) = &backend.postgres {
        store::postgres::check_schema(pool)
            .await
            .map_err(RunError::Schema)?;
    }

    // Leadership, and what the leader creates before anything else can serve.
    {
        let (elector, id, stop) = (
            backend.elector.clone(),
            instance_id.clone(),
            stopping.clone(),
        );
        components.start(Component::every_replica("leader-election", async move {
            elector.campaign(&id, leader_tx, stop).await;
            Ok::<(), ComponentError>(())
        }));
    }
    components.start(Component::every_replica(
        "leader-gauge",
        follow_leader_gauge(leader_rx.clone(), leader_gauge),
    ));
    let user_keys = Arc::new(security::user::user_signing_keys(store.clone()));
    {
        let (mut config, store, keys) = (config.clone(), store.clone(), user_keys.clone());
        // A hosted manager's own scope holds its control planes' records, not meshes.
        config.defaults.skip_mesh_creation |= hosted;
        config.defaults.skip_hostname_generators |= hosted;
        components.start(Component::leader_only("defaults", move || {
            let (config, store, keys) = (config.clone(), store.clone(), keys.clone());
            async move {
                defaults::ensure(&config, &store, &keys).await?;
                intercp::ensure_ca(&store).await?;
                Ok::<(), ComponentError>(())
            }
        }));
    }
    if config.mode == Mode::Global {
        let store = store.clone();
        components.start(Component::leader_only("zone-key-publisher", move || {
            security::zone::keep_public_keys_published(store.clone())
        }));
    }
    {
        let store = store.clone();
        components.start(Component::leader_only("insight-gc", move || {
            let store = store.clone();
            async move {
                defaults::collect_orphaned_insights(store, Duration::from_secs(30)).await;
                Ok::<(), ComponentError>(())
            }
        }));
    }

    let mut waiting = stopping.clone();
    let (cluster_id, ca) = tokio::select! {
        r = async { (defaults::wait_for_cluster_id(&store).await, intercp::load_ca(&store).await) } => r,
        () = async { let _ = waiting.wait_for(|s| *s).await; } => {
            let _ = components.run().await;
            return Err(RunError::Stopped("waiting for the leader to initialize the cluster"));
        }
    };

    // Inter-CP: serve Ping (and forwarded admin requests), ping the leader when following,
    // keep the catalog when leading.
    let tls = Arc::new(intercp::issue_tls(&ca, &me)?);
    let seen = intercp::Seen::default();
    let tunnels = Arc::new(zone::dpserver::admin::AdminTunnels::default());
    // What this replica reaches by itself: the proxies' admin streams it holds (zone,
    // standalone), or the inspect streams of the zones connected to it (global).
    let zone_streams = Arc::new(ZoneAdminStreams::default());
    let local_admin: SharedProxyAdmin = match config.mode {
        Mode::Global => Arc::new(global::inspect::ZoneProxies {
            store: store.clone(),
            streams: zone_streams.clone(),
        }),
        _ => tunnels.clone(),
    };
    {
        let (tls, me, leader, seen, stop) = (
            tls.clone(),
            me.clone(),
            leader_rx.clone(),
            seen.clone(),
            stopping.clone(),
        );
        let local = local_admin.clone();
        let listener = listeners.inter_cp;
        components.start(Component::every_replica("inter-cp-server", async move {
            intercp::serve(listener, &tls, me, leader, seen, local, stop).await
        }));
    }
    {
        let work = intercp::catalog::heartbeat(
            store.clone(),
            tls.clone(),
            me.clone(),
            leader_rx.clone(),
            stopping.clone(),
        );
        components.start(Component::every_replica("inter-cp-heartbeat", async move {
            work.await;
            Ok::<(), ComponentError>(())
        }));
    }
    {
        let (store, me) = (store.clone(), me.clone());
        components.start(Component::leader_only("cp-catalog", move || {
            let work = intercp::catalog::keep_catalog(store.clone(), me.clone(), seen.clone());
            async move {
                work.await;
                Ok::<(), ComponentError>(())
            }
        }));
    }

    // Proxies' Envoy admin from any replica: through what this replica holds, else forwarded
    // over inter-CP to the replica holding the proxy's stream (zone, standalone) or its
    // zone's inspect stream (global).
    let way = match config.mode {
        Mode::Global => intercp::forward::Way::ZoneStream,
        _ => intercp::forward::Way::ProxyStream,
    };
    let proxy_admin: SharedProxyAdmin = Arc::new(intercp::forward::ReplicaProxyAdmin::new(
        store.clone(),
        tls.clone(),
        me.clone(),
        local_admin,
        way,
    ));
    let mut control_planes: Option<Arc<dyn api::control_planes::ControlPlanes>> = None;
    let identity = global::GlobalIdentity {
        hostname: hostname.clone(),
        instance_id: instance_id.clone(),
        version: VERSION.into(),
    };
    match (tenant_stores, listeners.kds) {
        (Some(tenant_stores), Some(listener)) => {
            let shared = crate::tenancy::Shared {
                config: config.clone(),
                kds: kds_server_config(&config, kds_metrics.clone()),
                identity: identity.clone(),
                api_info: server_info(&config, &hostname, &instance_id, &cluster_id),
                api_metrics: api_metrics.clone(),
                elections: backend.elections.clone(),
            };
            let tenants = global::tenants::Tenants::new(
                tenant_stores,
                crate::tenancy::factory(Arc::new(shared)),
            );
            control_planes = Some(Arc::new(crate::tenancy::Management(tenants.clone())));
            start_manager(
                &mut components,
                &config,
                &store,
                listener,
                identity,
                tenants,
                kds_metrics.clone(),
            );
        }
        (None, Some(listener)) => start_global(
            &mut components,
            &config,
            &local_reads,
            listener,
            identity,
            zone_streams,
            kds_metrics.clone(),
        ),
        (_, None) => {}
    }
    if let Some(zone_config) = zone_client {
        let (store, stop, admin) = (
            local_reads.clone(),
            stopping.clone(),
            Some(proxy_admin.clone()),
        );
        components.start(Component::leader_only("kds-zone-client", move || {
            let work = zone::kds_client::run(
                store.clone(),
                zone_config.clone(),
                admin.clone(),
                stop.clone(),
            );
            async move {
                work.await;
                Ok::<(), ComponentError>(())
            }
        }));
    }
    if let Some(listener) = listeners.dp_server {
        let mut dp_config = dp_server_config(&config, &store, &me, &hostname, &instance_id).await?;
        dp_config.metrics = Some(xds_metrics.clone());
        // One snapshot cache for the proxies' configuration and the ingresses' service counts.
        // A federated zone uses the CAs global creates.
        let view = zone::dpserver::cache::start(
            local_reads.clone(),
            dp_config.zone.clone(),
            !dp_config.federated,
        );
        if !config.multizone.zone.name.is_empty() {
            let (store, stop, view) = (store.clone(), stopping.clone(), view.clone());
            let zone = config.multizone.zone.name.clone();
            components.start(Component::leader_only("zone-ingress-services", move || {
                let work = zone::ingress::keep_available_services(
                    store.clone(),
                    zone.clone(),
                    view.clone(),
                    stop.clone(),
                );
                async move {
                    work.await;
                    Ok::<(), ComponentError>(())
                }
            }));
        }
        // MeshServices, VIPs and hostnames are a zone's (Kuma runs them on zones only).
        {
            let services = zone::services::ServicesConfig {
                zone: config.multizone.zone.name.clone(),
                cidrs: [
                    config.ipam.mesh_service.cidr.clone(),
                    config.ipam.mesh_external_service.cidr.clone(),
                    config.ipam.mesh_multi_zone_service.cidr.clone(),
                ],
                generate: config.mesh_service.generation_enabled(),
                deletion_grace_period: config.mesh_service.deletion_grace_period(),
            };
            let (store, stop) = (store.clone(), stopping.clone());
            components.start(Component::leader_only("mesh-services", move || {
                let work = zone::services::run(store.clone(), services.clone(), stop.clone());
                async move {
                    work.await;
                    Ok::<(), ComponentError>(())
                }
            }));
        }
        if let Some(listener) = listeners.mads {
            let assignments = zone::mads::start(view.clone());
            let router = zone::mads::router(
                assignments,
                config.monitoring_assignment_server.default_fetch_timeout(),
            );
            tracing::info!(
                port = config.monitoring_assignment_server.port,
                "monitoring assignment server listening (MADS v1, /http_sd)"
            );
            components.start(Component::every_replica(
                "mads-server",
                serve(listener, router, stopping.clone()),
            ));
        }
        let work = zone::dpserver::serve(
            listener,
            local_reads.clone(),
            view,
            dp_config,
            tunnels,
            stopping.clone(),
        );
        components.start(Component::every_replica("dp-server", work));
    }

    let state = Arc::new(api::ApiState {
        store: store.clone(),
        user_keys,
        zone_keys: Arc::new(security::zone::zone_signing_keys(store.clone())),
        info: server_info(&config, &hostname, &instance_id, &cluster_id),
        config: shown_config(&config, &instance_id),
        // A hosted manager's own API lists its customers' control planes: tokens only.
        auth: api::AuthConfig {
            localhost_is_admin: config.api_server.authn.localhost_is_admin,
            anonymous_reads: !hosted,
        },
        metrics: api_metrics,
        federation: match config.mode {
            Mode::Global => api::federation::Federation::Global,
            Mode::Zone if !config.multizone.zone.global_address.is_empty() => {
                api::federation::Federation::Zone
            }
            _ => api::federation::Federation::None,
        },
        local_zone: (config.mode == Mode::Zone).then(|| config.multizone.zone.name.clone()),
        origin_label_validation: !config.multizone.zone.disable_origin_label_validation,
        proxy_admin: Some(proxy_admin.clone()),
        control_plane: String::new(),
        control_planes,
    });
    let router = api::router(state);
    let http = &config.api_server.http;
    if http.enabled {
        components.start(Component::every_replica(
            "api-http",
            serve(listeners.api_http, router.clone(), stopping.clone()),
        ));
    }
    if let Some(listener) = listeners.api_https {
        let tls = api_tls(&config, &hostname)?;
        let stop = stopping.clone();
        components.start(Component::every_replica("api-https", async move {
            api::serve_https(listener, router, tls, wait_for(stop)).await;
            Ok::<(), ComponentError>(())
        }));
    }
    started.store(true, Ordering::Release);
    let names: Vec<&str> = components.components().iter().map(|(n, _)| *n).collect();
    tracing::info!(
        api = %format!("http://{}:{}", http.interface, http.port),
        gui = %format!("http://localhost:{}/gui", http.port),
        components = ?names,
        "kuma-cp is ready"
    );
    let result = components.run().await;
    tracing::info!("stopped");
    Ok(result?)
}

/// Every listener, bound before any start-up work so a port clash fails fast and names the
/// setting.
struct Listeners {
    api_http: TcpListener,
    api_https: Option<TcpListener>,
    diagnostics: TcpListener,
    inter_cp: TcpListener,
    /// Global only: zones connect here.
    kds: Option<TcpListener>,
    /// Standalone and zone only: proxies connect here, never to global.
    dp_server: Option<TcpListener>,
    /// Standalone and zone only, as in Kuma: Prometheus's service discovery.
    mads: Option<TcpListener>,
}

impl Listeners {
    async fn bind(config: &Config) -> Result<Listeners, RunError> {
        let http = &config.api_server.http;
        let https = &config.api_server.https;
        let global = config.mode == Mode::Global;
        Ok(Listeners {
            api_http: bind(&http.interface, http.port, "apiServer.http.port").await?,
            api_https: match https.enabled {
                true => Some(bind(&https.interface, https.port, "apiServer.https.port").await?),
                false => None,
            },
            diagnostics: bind(
                "0.0.0.0",
                config.diagnostics.server_port,
                "diagnostics.serverPort",
            )
            .await?,
            inter_cp: bind(
                "0.0.0.0",
                config.inter_cp.server.port,
                "interCp.server.port",
            )
            .await?,
            kds: match global {
                true => {
                    let port = config.multizone.global.kds.grpc_port;
                    Some(bind("0.0.0.0", port, "multizone.global.kds.grpcPort").await?)
                }
                false => None,
            },
            dp_server: match global {
                true => None,
                false => Some(bind("0.0.0.0", config.dp_server.port, "dpServer.port").await?),
            },
            mads: match (global, config.monitoring_assignment_server.enabled) {
                (false, true) => {
                    let port = config.monitoring_assignment_server.port;
                    Some(bind("0.0.0.0", port, "monitoringAssignmentServer.port").await?)
                }
                _ => None,
            },
        })
    }
}

fn server_info(
    config: &Config,
    hostname: &str,
    instance_id: &str,
    cluster_id: &str,
) -> api::ServerInfo {
    api::ServerInfo {
        hostname: hostname.to_string(),
        tagline: "Kuma".into(),
        product: "Kuma".into(),
        version: VERSION.into(),
        instance_id: instance_id.to_string(),
        cluster_id: cluster_id.to_string(),
        gui: "/gui".into(),
        based_on_kuma: VERSION.into(),
        mode: config.mode.as_str().into(),
    }
}

/// The configuration `/config` shows: secrets redacted, this replica's id added.
fn shown_config(config: &Config, instance_id: &str) -> serde_json::Value {
    let mut shown = config.redacted();
    shown["instanceId"] = serde_json::Value::String(instance_id.to_string());
    shown
}

fn kds_server_config(
    config: &Config,
    metrics: kds::metrics::KdsMetrics,
) -> global::KdsServerConfig {
    let kds = &config.multizone.global.kds;
    global::KdsServerConfig {
        port: kds.grpc_port,
        max_message: kds.max_msg_size,
        tls: kds.tls_enabled,
        tls_cert_file: kds.tls_cert_file.clone(),
        tls_key_file: kds.tls_key_file.clone(),
        zone_tokens: kds.auth.auth_type == "zoneToken",
        metrics: Some(metrics),
    }
}

/// A hosted manager's every-replica parts: the control planes kept in step with their
/// records, and the one KDS endpoint that hands each zone to its control plane.
fn start_manager(
    components: &mut Manager,
    config: &Config,
    store: &SharedStore,
    listener: TcpListener,
    identity: global::GlobalIdentity,
    tenants: Arc<global::tenants::Tenants<crate::tenancy::ControlPlaneRuntime>>,
    metrics: kds::metrics::KdsMetrics,
) {
    let kds_config = kds_server_config(config, metrics);
    let follow = tenants.clone().follow();
    components.start(Component::every_replica("control-planes", async move {
        follow.await;
        Ok::<(), ComponentError>(())
    }));
    let (store, stop) = (store.clone(), components.shutdown_signal());
    let service = Arc::new(global::tenants::ManagerKds { tenants });
    components.start(Component::every_replica("kds-server", async move {
        global::serve_kds_service(&kds_config, &store, listener, &identity, service, stop).await
    }));
}

/// Global's every-replica KDS server and leader-only mesh CAs.
fn start_global(
    components: &mut Manager,
    config: &Config,
    store: &SharedStore,
    listener: TcpListener,
    identity: global::GlobalIdentity,
    streams: Arc<ZoneAdminStreams>,
    metrics: kds::metrics::KdsMetrics,
) {
    let kds_config = kds_server_config(config, metrics);
    let (store_kds, stop) = (store.clone(), components.shutdown_signal());
    components.start(Component::every_replica("kds-server", async move {
        global::serve_kds(&kds_config, store_kds, listener, &identity, streams, stop).await
    }));
    let (store, stop) = (store.clone(), components.shutdown_signal());
    components.start(Component::leader_only("mesh-ca", move || {
        let work = global::mesh_ca::keep_mesh_cas(store.clone(), stop.clone());
        async move {
            work.await;
            Ok::<(), ComponentError>(())
        }
    }));
}

fn zone_client_config(
    config: &Config,
    metrics: kds::metrics::KdsMetrics,
) -> Result<zone::kds_client::ZoneClientConfig, RunError> {
    use zone::kds_client::ZoneToken;
    let zone = &config.multizone.zone;
    if zone.kds.tls_skip_verify && zone.global_address.starts_with("grpcs://") {
        tracing::warn!(
            "multizone.zone.kds.tlsSkipVerify: global's certificate is not verified; the KDS connection is encrypted but global is not authenticated"
        );
    }
    let root_ca_pem = match zone.kds.root_ca_file.as_str() {
        "" => None,
        path => Some(
            std::fs::read_to_string(path).map_err(|source| RunError::RootCa {
                path: path.to_string(),
                source,
            })?,
        ),
    };
    let client = zone::kds_client::ZoneClientConfig {
        zone: zone.name.clone(),
        global_address: zone.global_address.clone(),
        cp_version: VERSION.into(),
        max_message: config.multizone.global.kds.max_msg_size,
        root_ca_pem,
        tls_skip_verify: zone.kds.tls_skip_verify,
        proxy_url: Some(zone.kds.proxy_url.clone()).filter(|u| !u.is_empty()),
        metrics: Some(metrics),
        token: match (&zone.kds.auth.cp_token_path, &zone.kds.auth.cp_token_inline) {
            (path, _) if !path.is_empty() => Some(ZoneToken::File(path.clone())),
            (_, inline) if !inline.is_empty() => Some(ZoneToken::Inline(inline.clone())),
            _ => None,
        },
    };
    // A proxy setting or trust store the zone cannot use stops start-up here, rather than
    // leaving a zone that runs but never reaches global.
    zone::kds_client::check(&client).map_err(RunError::ZoneClient)?;
    Ok(client)
}

/// The data plane server's certificate: from files, or issued to this replica by the cluster's
/// data plane server CA (whose certificate is written to `general.workDir` for kuma-dp).
async fn dp_server_config(
    config: &Config,
    store: &SharedStore,
    me: &intercp::Me,
    hostname: &str,
    instance_id: &str,
) -> Result<zone::dpserver::DpServerConfig, RunError> {
    let dp = &config.dp_server;
    let (cert_pem, key_pem, ca_pem) = if dp.tls_cert_file.is_empty() {
        let ca = intercp::load_named_ca(store, intercp::DP_SERVER_CA_SECRET).await;
        let mut dns = vec!["localhost".to_string(), hostname.to_string()];
        let mut ips: Vec<std::net::IpAddr> = vec![std::net::Ipv4Addr::LOCALHOST.into()];
        match me.address.parse::<std::net::IpAddr>() {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) => dns.push(me.address.clone()),
        }
        let pair = ca
            .issue(
                "kuma-control-plane",
                &dns,
                &ips,
                Duration::from_secs(365 * 86400),
            )
            .map_err(|e| RunError::Tls("issuing the data plane server's certificate", e))?;
        (pair.cert_pem, pair.key_pem, ca.cert_pem)
    } else {
        let pair = security::tls::load_pair(&dp.tls_cert_file, &dp.tls_key_file).map_err(|e| {
            RunError::Tls(
                "dpServer.tlsCertFile/tlsKeyFile (KUMA_DP_SERVER_TLS_CERT_FILE/_KEY_FILE)",
                e,
            )
        })?;
        let ca = pair.cert_pem.clone();
        (pair.cert_pem, pair.key_pem, ca)
    };
    if !config.general.work_dir.is_empty() {
        let path = std::path::Path::new(&config.general.work_dir).join("dp-server-ca.pem");
        std::fs::create_dir_all(&config.general.work_dir)
            .and_then(|()| std::fs::write(&path, &ca_pem))
            .map_err(|source| RunError::WorkDir {
                path: path.display().to_string(),
                source,
            })?;
        tracing::info!(path = %path.display(), "data plane server CA written; give it to kuma-dp as --ca-cert-file");
    }
    Ok(zone::dpserver::DpServerConfig {
        port: dp.port,
        cert_pem,
        key_pem,
        ca_pem,
        tokens_required: dp.authn.dp_proxy.auth_type != "none",
        cp_instance_id: instance_id.to_string(),
        zone: config.multizone.zone.name.clone(),
        federated: config.mode == Mode::Zone && !config.multizone.zone.global_address.is_empty(),
        label_zone: (config.mode == Mode::Zone).then(|| config.multizone.zone.name.clone()),
        metrics: None,
    })
}

/// The API's HTTPS certificate: from files, or self-signed for this host.
fn api_tls(config: &Config, hostname: &str) -> Result<Arc<rustls::ServerConfig>, RunError> {
    let https = &config.api_server.https;
    let pair = if https.tls_cert_file.is_empty() {
        let mut names = vec!["localhost".to_string(), hostname.to_string()];
        names.dedup();
        security::tls::self_signed(&names)
            .map_err(|e| RunError::Tls("generating the API server's certificate", e))?
    } else {
        security::tls::load_pair(&https.tls_cert_file, &https.tls_key_file)
            .map_err(|e| RunError::Tls("apiServer.https.tlsCertFile/tlsKeyFile", e))?
    };
    security::tls::server_config(&pair)
        .map_err(|e| RunError::Tls("apiServer.https TLS configuration", e))
}

async fn serve(
    listener: TcpListener,
    router: axum::Router,
    stop: watch::Receiver<bool>,
) -> Result<(), ComponentError> {
    api::serve_http(listener, router, wait_for(stop)).await;
    Ok(())
}

async fn follow_leader_gauge(
    mut leader: watch::Receiver<bool>,
    gauge: Gauge<i64>,
) -> Result<(), ComponentError> {
    loop {
        gauge.set(i64::from(*leader.borrow_and_update()));
        if leader.changed().await.is_err() {
            gauge.set(0);
            return Ok(());
        }
    }
}

async fn bind(interface: &str, port: u16, key: &'static str) -> Result<TcpListener, RunError> {
    let text = format!("{interface}:{port}");
    let address: SocketAddr = text.parse().map_err(|source| RunError::Address {
        key,
        address: text.clone(),
        source,
    })?;
    TcpListener::bind(address)
        .await
        .map_err(|source| RunError::Bind {
            key,
            address,
            source,
        })
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Retries with backoff until the store answers; each failure is logged.
async fn wait_for_store(
    store: &SharedStore,
    mut stop: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match store.ping().await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(attempt, error = %e, retry_in = ?delay, "store is not reachable yet");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|s| *s) => return Err(RunError::Stopped("waiting for the store")),
                }
                delay = (delay * 2).min(Duration::from_secs(10));
                attempt += 1;
            }
        }
    }
}
