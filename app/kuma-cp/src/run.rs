//! `kuma-cp run`: wires the store, leader election, leader-only components and the servers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use store::leader::run_leader_only;
use store::{MeteredStore, SharedStore};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::config::Mode;
use crate::{VERSION, backend, defaults, intercp, multizone};

pub async fn run(config: Config) -> Result<()> {
    let hostname = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    let instance_id = format!("{hostname}-{:04}", rand::random::<u16>() % 10000);
    tracing::info!(mode = config.mode.as_str(), store = ?config.store.store_type, %instance_id, "starting kuma-cp {VERSION}");

    let mut registry = Registry::default();
    let backend = backend::build(&config).await?;
    let store: SharedStore = Arc::new(MeteredStore::new(backend.store.clone(), &mut registry));
    let api_metrics = api::api_metrics(&mut registry);
    let leader_gauge = Gauge::<i64>::default();
    registry.register(
        "leader",
        "1 while this replica is the leader, 0 otherwise",
        leader_gauge.clone(),
    );

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let started = Arc::new(AtomicBool::new(false));
    let user_keys = Arc::new(security::user::user_signing_keys(store.clone()));

    // Listeners are bound before start-up work so a port clash fails fast and names the port.
    let http = &config.api_server.http;
    let api_http = bind(&http.interface, http.port, "apiServer.http.port").await?;
    let https = &config.api_server.https;
    let api_https = match https.enabled {
        true => Some(bind(&https.interface, https.port, "apiServer.https.port").await?),
        false => None,
    };
    let diag = bind(
        "0.0.0.0",
        config.diagnostics.server_port,
        "diagnostics.serverPort",
    )
    .await?;
    let inter_cp = bind(
        "0.0.0.0",
        config.inter_cp.server.port,
        "interCp.server.port",
    )
    .await?;
    let kds_listener = match config.mode {
        Mode::Global => {
            let port = config.multizone.global.kds.grpc_port;
            Some(bind("0.0.0.0", port, "multizone.global.kds.grpcPort").await?)
        }
        _ => None,
    };
    // Proxies connect to standalone and zone control planes, never to global.
    let dp_listener = match config.mode {
        Mode::Global => None,
        _ => Some(bind("0.0.0.0", config.dp_server.port, "dpServer.port").await?),
    };
    let zone_client = match (config.mode, config.multizone.zone.global_address.is_empty()) {
        (Mode::Zone, false) => Some(multizone::zone_client_config(&config)?),
        _ => None,
    };
    let me = intercp::Me {
        id: instance_id.clone(),
        address: match config.inter_cp.catalog.instance_address.as_str() {
            "" => intercp::primary_address(),
            a => a.to_string(),
        },
        port: config.inter_cp.server.port,
    };

    // The unmetered backend, so scrapes do not count themselves as store traffic.
    let diagnostics =
        api::diagnostics::Diagnostics::new(registry, backend.store.clone(), started.clone());
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(api::serve_http(
        diag,
        diagnostics.router(),
        wait_for(shutdown_rx.clone()),
    ));

    wait_for_store(&store, &shutdown_rx).await?;
    if let Some(pool) = &backend.postgres {
        store::postgres::check_schema(pool)
            .await
            .context("store.postgres")?;
    }

    // Leadership, and the components that run only on the leader.
    let (leader_tx, leader_rx) = watch::channel(false);
    {
        let elector = backend.elector.clone();
        let (id, shutdown) = (instance_id.clone(), shutdown_rx.clone());
        tasks.spawn(async move { elector.campaign(&id, leader_tx, shutdown).await });
        let mut rx = leader_rx.clone();
        let gauge = leader_gauge.clone();
        tasks.spawn(async move {
            loop {
                gauge.set(i64::from(*rx.borrow_and_update()));
                if rx.changed().await.is_err() {
                    gauge.set(0);
                    return;
                }
            }
        });
    }
    {
        let (config, store, keys) = (config.clone(), store.clone(), user_keys.clone());
        let (leader, shutdown) = (leader_rx.clone(), shutdown_rx.clone());
        tasks.spawn(async move {
            run_leader_only("defaults", leader, shutdown, || {
                let (config, store, keys) = (config.clone(), store.clone(), keys.clone());
                async move {
                    let mut delay = Duration::from_millis(200);
                    loop {
                        let result = match defaults::ensure(&config, &store, &keys).await {
                            Ok(()) => intercp::ensure_ca(&store).await,
                            Err(e) => Err(e),
                        };
                        let Err(e) = result else { break };
                        tracing::warn!(error = %format!("{e:#}"), "creating defaults failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            })
            .await
        });
    }
    {
        let (store, leader, shutdown) = (store.clone(), leader_rx.clone(), shutdown_rx.clone());
        tasks.spawn(async move {
            run_leader_only("insight-gc", leader, shutdown, || {
                defaults::collect_orphaned_insights(store.clone(), Duration::from_secs(30))
            })
            .await
        });
    }

    let (cluster_id, ca) = tokio::select! {
        r = async { (defaults::wait_for_cluster_id(&store).await, intercp::load_ca(&store).await) } => r,
        () = shutdown_signal() => anyhow::bail!("shut down before the cluster was initialized"),
    };

    // Inter-CP: serve Ping, ping the leader when following, keep the catalog when leading.
    let tls = Arc::new(
        intercp::issue_tls(&ca, &me).context("issuing this replica's inter-CP certificate")?,
    );
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let tunnels = Arc::new(zone::admin::AdminTunnels::default());
    {
        let (tls, me, leader, seen, tunnels, shutdown) = (
            tls.clone(),
            me.clone(),
            leader_rx.clone(),
            seen.clone(),
            tunnels.clone(),
            shutdown_rx.clone(),
        );
        tasks.spawn(async move {
            if let Err(e) =
                intercp::serve(inter_cp, &tls, me, leader, seen, tunnels, shutdown).await
            {
                tracing::error!(error = %format!("{e:#}"), "inter-CP server stopped");
            }
        });
    }
    tasks.spawn(intercp::heartbeat(
        store.clone(),
        tls.clone(),
        me.clone(),
        leader_rx.clone(),
        shutdown_rx.clone(),
    ));
    {
        let (store, leader, shutdown) = (store.clone(), leader_rx.clone(), shutdown_rx.clone());
        let me = me.clone();
        tasks.spawn(async move {
            run_leader_only("cp-catalog", leader, shutdown, || {
                intercp::keep_catalog(store.clone(), me.clone(), seen.clone())
            })
            .await
        });
    }
    // Proxies' Envoy admin: through the admin streams on zones and standalone, through the
    // zones' inspect streams on global.
    let zone_inspect = Arc::new(kds::inspect::ZoneAdminStreams::default());
    let mut proxy_admin: Option<api::inspect::SharedProxyAdmin> =
        dp_listener.is_some().then(|| {
            Arc::new(intercp::ProxyAdmin::new(
                store.clone(),
                tls.clone(),
                me.clone(),
                tunnels.clone(),
            )) as api::inspect::SharedProxyAdmin
        });
    if config.mode == Mode::Global {
        proxy_admin = Some(Arc::new(multizone::ZoneProxies {
            store: store.clone(),
            streams: zone_inspect.clone(),
        }));
    }
    // Multi-zone: global serves KDS on every replica; a zone's leader keeps the one connection.
    if let Some(listener) = kds_listener {
        let (config, store, hostname, id, shutdown) = (
            config.clone(),
            store.clone(),
            hostname.clone(),
            instance_id.clone(),
            shutdown_rx.clone(),
        );
        let inspect = zone_inspect.clone();
        tasks.spawn(async move {
            let identity = multizone::GlobalIdentity {
                hostname: &hostname,
                instance_id: &id,
            };
            if let Err(e) =
                multizone::serve_global(&config, store, listener, identity, inspect, shutdown).await
            {
                tracing::error!(error = %format!("{e:#}"), "KDS server stopped");
            }
        });
    }
    if let Some(zone_config) = zone_client {
        let (store, leader, shutdown) = (store.clone(), leader_rx.clone(), shutdown_rx.clone());
        let admin = proxy_admin.clone().map(multizone::zone_proxy_admin);
        tasks.spawn(async move {
            run_leader_only("kds-zone-client", leader, shutdown.clone(), || {
                kds::zone::run(
                    store.clone(),
                    zone_config.clone(),
                    admin.clone(),
                    shutdown.clone(),
                )
            })
            .await
        });
    }
    if dp_listener.is_some() && !config.multizone.zone.name.is_empty() {
        let (store, leader, shutdown) = (store.clone(), leader_rx.clone(), shutdown_rx.clone());
        let zone = config.multizone.zone.name.clone();
        tasks.spawn(async move {
            run_leader_only("zone-ingress-services", leader, shutdown.clone(), || {
                zone::ingress::keep_available_services(
                    store.clone(),
                    zone.clone(),
                    shutdown.clone(),
                )
            })
            .await
        });
    }
    if config.mode == Mode::Global {
        let (store, leader, shutdown) = (store.clone(), leader_rx.clone(), shutdown_rx.clone());
        tasks.spawn(async move {
            run_leader_only("mesh-ca", leader, shutdown.clone(), || {
                keep_mesh_cas(store.clone(), shutdown.clone())
            })
            .await
        });
    }
    if let Some(listener) = dp_listener {
        let dp_config = dp_server_config(&config, &store, &me, &hostname, &instance_id).await?;
        let (store, shutdown) = (store.clone(), shutdown_rx.clone());
        tasks.spawn(async move {
            if let Err(e) = zone::serve(listener, store, dp_config, tunnels, shutdown).await {
                tracing::error!(error = %format!("{e:#}"), "data plane server stopped");
            }
        });
    }
    let mut shown_config = config.redacted();
    shown_config["instanceId"] = serde_json::Value::String(instance_id.clone());

    let state = Arc::new(api::ApiState {
        store: store.clone(),
        user_keys,
        zone_keys: Arc::new(security::zone::zone_signing_keys(store.clone())),
        info: api::ServerInfo {
            hostname: hostname.clone(),
            tagline: "Kuma".into(),
            product: "Kuma".into(),
            version: VERSION.into(),
            instance_id,
            cluster_id,
            gui: "/gui".into(),
            based_on_kuma: VERSION.into(),
            mode: config.mode.as_str().into(),
        },
        config: shown_config,
        auth: api::AuthConfig {
            localhost_is_admin: config.api_server.authn.localhost_is_admin,
        },
        metrics: api_metrics,
        federation: match config.mode {
            Mode::Global => api::federation::Federation::Global,
            Mode::Zone if !config.multizone.zone.global_address.is_empty() => {
                api::federation::Federation::Zone
            }
            _ => api::federation::Federation::None,
        },
        proxy_admin,
    });
    let router = api::router(state);
    if http.enabled {
        tasks.spawn(api::serve_http(
            api_http,
            router.clone(),
            wait_for(shutdown_rx.clone()),
        ));
    }
    if let Some(listener) = api_https {
        let pair = if https.tls_cert_file.is_empty() {
            let mut names = vec!["localhost".to_string(), hostname.clone()];
            names.dedup();
            security::tls::self_signed(&names).context("generating the API server's certificate")?
        } else {
            security::tls::load_pair(&https.tls_cert_file, &https.tls_key_file)
                .context("apiServer.https.tlsCertFile/tlsKeyFile")?
        };
        let tls =
            security::tls::server_config(&pair).context("apiServer.https TLS configuration")?;
        tasks.spawn(api::serve_https(
            listener,
            router,
            tls,
            wait_for(shutdown_rx.clone()),
        ));
    }
    started.store(true, Ordering::Release);
    tracing::info!(
        api = %format!("http://{}:{}", http.interface, http.port),
        gui = %format!("http://localhost:{}/gui", http.port),
        "kuma-cp is ready"
    );

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    while tasks.join_next().await.is_some() {}
    tracing::info!("stopped");
    Ok(())
}

/// Global: creates each mesh's builtin CA as soon as the mesh asks for one, so that every
/// zone receives the same CA over KDS (zones do not generate their own).
async fn keep_mesh_cas(store: SharedStore, mut shutdown: watch::Receiver<bool>) {
    let mut events = store.subscribe();
    loop {
        let retry = match security::ca::ensure_builtin_cas(&store).await {
            Ok(failed) => !failed.is_empty(),
            Err(e) => {
                tracing::warn!(error = %e, "could not check the meshes' CAs");
                true
            }
        };
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(ev) if ev.key.kind == model::ResourceType::Mesh => return,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await
                    }
                }
            }
        };
        let period = if retry {
            Duration::from_secs(5)
        } else {
            Duration::from_secs(300)
        };
        tokio::select! {
            () = wait => {}
            () = tokio::time::sleep(period) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// The data plane server's certificate: from files, or issued to this replica by the cluster's
/// data plane server CA (whose certificate is written to `general.workDir` for kuma-dp).
async fn dp_server_config(
    config: &Config,
    store: &SharedStore,
    me: &intercp::Me,
    hostname: &str,
    instance_id: &str,
) -> Result<zone::DpServerConfig> {
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
            .context("issuing the data plane server's certificate")?;
        (pair.cert_pem, pair.key_pem, ca.cert_pem)
    } else {
        let pair = security::tls::load_pair(&dp.tls_cert_file, &dp.tls_key_file)
            .context("dpServer.tlsCertFile/tlsKeyFile (KUMA_DP_SERVER_TLS_CERT_FILE/_KEY_FILE)")?;
        let ca = pair.cert_pem.clone();
        (pair.cert_pem, pair.key_pem, ca)
    };
    if !config.general.work_dir.is_empty() {
        let path = std::path::Path::new(&config.general.work_dir).join("dp-server-ca.pem");
        std::fs::create_dir_all(&config.general.work_dir)
            .and_then(|()| std::fs::write(&path, &ca_pem))
            .with_context(|| format!("general.workDir: writing {}", path.display()))?;
        tracing::info!(path = %path.display(), "data plane server CA written; give it to kuma-dp as --ca-cert-file");
    }
    Ok(zone::DpServerConfig {
        port: dp.port,
        cert_pem,
        key_pem,
        ca_pem,
        tokens_required: dp.authn.dp_proxy.auth_type != "none",
        cp_instance_id: instance_id.to_string(),
        zone: config.multizone.zone.name.clone(),
        federated: config.mode == Mode::Zone && !config.multizone.zone.global_address.is_empty(),
    })
}

async fn bind(interface: &str, port: u16, key: &str) -> Result<TcpListener> {
    let addr: SocketAddr = format!("{interface}:{port}")
        .parse()
        .with_context(|| format!("{key}: bad address {interface}:{port}"))?;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("{key}: cannot listen on {addr}"))
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Retries with backoff until the store answers; each failure is logged.
async fn wait_for_store(store: &SharedStore, shutdown: &watch::Receiver<bool>) -> Result<()> {
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match store.ping().await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(attempt, error = %e, retry_in = ?delay, "store is not reachable yet");
                if *shutdown.borrow() {
                    anyhow::bail!("shut down while waiting for the store");
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown_signal() => anyhow::bail!("shut down while waiting for the store"),
                }
                delay = (delay * 2).min(Duration::from_secs(10));
                attempt += 1;
            }
        }
    }
}
