//! `kuma-cp`: parses configuration, builds components from the library crates and runs them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use model::specs::secret::ConfigSpec;
use model::{Resource, ResourceKey, ResourceType};
use prometheus_client::registry::Registry;
use store::{MemoryStore, MeteredStore, SharedStore, StoreError};
use tokio::net::TcpListener;
use tokio::sync::watch;

mod config;

use config::Config;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const CLUSTER_ID_CONFIG: &str = "kuma-cluster-id";

#[derive(Parser)]
#[command(name = "kuma-cp", version = VERSION, about = "Kuma-compatible control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane.
    Run {
        /// YAML configuration file; `KUMA_*` environment variables override it.
        #[arg(short = 'c', long)]
        config_file: Option<String>,
        /// Log level: error, warn, info, debug or trace.
        #[arg(long, default_value = "info")]
        log_level: String,
    },
    /// Print the version.
    Version,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("kuma-cp version {VERSION} (Kuma {VERSION} compatible)");
            std::process::ExitCode::SUCCESS
        }
        Command::Run {
            config_file,
            log_level,
        } => {
            init_tracing(&log_level);
            let env: Vec<(String, String)> = std::env::vars().collect();
            let config = match Config::load(config_file.as_deref(), &env) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("kuma-cp: configuration error: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("kuma-cp: cannot start the runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(config)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("kuma-cp: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KUMA_LOG_LEVEL_FILTER")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
}

async fn run(config: Config) -> Result<()> {
    let hostname = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    let instance_id = format!("{hostname}-{:04}", rand::random::<u16>() % 10000);
    tracing::info!(mode = config.mode.as_str(), store = ?config.store.store_type, %instance_id, "starting kuma-cp {VERSION}");

    let mut registry = Registry::with_prefix("kuma_cp");
    let backend: SharedStore = Arc::new(MemoryStore::new());
    let store: SharedStore = Arc::new(MeteredStore::new(backend.clone(), &mut registry));
    let api_metrics = api::api_metrics(&mut registry);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let started = Arc::new(AtomicBool::new(false));
    let user_keys = Arc::new(security::user::user_signing_keys(store.clone()));

    // Listeners are bound before start-up work so a port clash fails fast and names the port.
    let api_http = bind(
        &config.api_server.http.interface,
        config.api_server.http.port,
        "apiServer.http.port",
    )
    .await?;
    let api_https = if config.api_server.https.enabled {
        Some(
            bind(
                &config.api_server.https.interface,
                config.api_server.https.port,
                "apiServer.https.port",
            )
            .await?,
        )
    } else {
        None
    };
    let diag = bind(
        "0.0.0.0",
        config.diagnostics.server_port,
        "diagnostics.serverPort",
    )
    .await?;

    // The unmetered backend, so scrapes do not count themselves as store traffic.
    let diagnostics = api::diagnostics::Diagnostics::new(registry, backend, started.clone());
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(api::serve_http(
        diag,
        diagnostics.router(),
        wait_for(shutdown_rx.clone()),
    ));

    wait_for_store(&store, &shutdown_rx).await?;
    let cluster_id = ensure_defaults(&config, &store, &user_keys).await?;

    let state = Arc::new(api::ApiState {
        store: store.clone(),
        user_keys,
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
        config: config.redacted(),
        auth: api::AuthConfig {
            localhost_is_admin: config.api_server.authn.localhost_is_admin,
        },
        metrics: api_metrics,
    });
    let router = api::router(state);
    if config.api_server.http.enabled {
        tasks.spawn(api::serve_http(
            api_http,
            router.clone(),
            wait_for(shutdown_rx.clone()),
        ));
    }
    if let Some(listener) = api_https {
        let pair = if config.api_server.https.tls_cert_file.is_empty() {
            let mut names = vec!["localhost".to_string(), hostname.clone()];
            names.dedup();
            security::tls::self_signed(&names).context("generating the API server's certificate")?
        } else {
            security::tls::load_pair(
                &config.api_server.https.tls_cert_file,
                &config.api_server.https.tls_key_file,
            )
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
        api = %format!("http://{}:{}", config.api_server.http.interface, config.api_server.http.port),
        gui = %format!("http://localhost:{}/gui", config.api_server.http.port),
        "kuma-cp is ready"
    );

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    while tasks.join_next().await.is_some() {}
    tracing::info!("stopped");
    Ok(())
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

async fn shutdown_signal() {
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
    loop {
        match store.ping().await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "store is not reachable yet");
                if *shutdown.borrow() {
                    anyhow::bail!("shut down while waiting for the store");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// What a fresh control plane creates: the default mesh, the user-token signing key, the admin
/// token and the cluster id. Returns the cluster id.
async fn ensure_defaults(
    config: &Config,
    store: &SharedStore,
    user_keys: &security::SigningKeys,
) -> Result<String> {
    if !config.defaults.skip_mesh_creation {
        match store
            .create(Resource::new(
                ResourceType::Mesh,
                "",
                "default",
                serde_json::json!({}),
            ))
            .await
        {
            Ok(_) => tracing::info!("created Mesh \"default\""),
            Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e).context("creating the default mesh"),
        }
    }
    user_keys
        .ensure_key()
        .await
        .context("creating the user token signing key")?;
    if config.api_server.authn.tokens.bootstrap_admin_token
        && security::user::bootstrap_admin_token(store, user_keys)
            .await
            .context("bootstrapping the admin token")?
    {
        tracing::info!(
            "admin user token stored in GlobalSecret \"admin-user-token\"; read it on this host with: \
             curl -s http://localhost:{}/globalsecrets/admin-user-token | jq -r .data | base64 -d",
            config.api_server.http.port
        );
    }
    let key = ResourceKey::new(ResourceType::Config, "", CLUSTER_ID_CONFIG);
    match store.get(&key).await {
        Ok(r) => Ok(serde_json::from_value::<ConfigSpec>(r.spec)
            .map(|c| c.config)
            .unwrap_or_default()),
        Err(StoreError::NotFound(_)) => {
            let id = security::random_uuid();
            let spec = serde_json::to_value(ConfigSpec { config: id.clone() })?;
            match store
                .create(Resource::new(
                    ResourceType::Config,
                    "",
                    CLUSTER_ID_CONFIG,
                    spec,
                ))
                .await
            {
                Ok(_) => Ok(id),
                Err(StoreError::AlreadyExists(_)) => {
                    let r = store.get(&key).await?;
                    Ok(serde_json::from_value::<ConfigSpec>(r.spec)
                        .map(|c| c.config)
                        .unwrap_or_default())
                }
                Err(e) => Err(e).context("storing the cluster id"),
            }
        }
        Err(e) => Err(e).context("reading the cluster id"),
    }
}
