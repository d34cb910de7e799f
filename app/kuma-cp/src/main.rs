//! `kuma-cp`: parses the command line and configuration, then runs the control plane library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kuma_cp::telemetry::Telemetry;
use kuma_cp::{Config, VERSION};

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
    /// Database schema management (Postgres).
    Migrate {
        #[command(subcommand)]
        command: MigrateCommand,
    },
    /// The raft store's membership (KUMA_STORE_TYPE=raft), through any replica.
    Raft {
        #[command(subcommand)]
        command: RaftCommand,
        /// YAML configuration file; `KUMA_*` environment variables override it. Its
        /// `store.raft` block gives the cluster id and credentials.
        #[arg(short = 'c', long, global = true)]
        config_file: Option<String>,
        /// A replica's raft address (host:port); this configuration's own by default.
        #[arg(long, global = true)]
        address: Option<String>,
    },
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum RaftCommand {
    /// Each member's role, matched log index and lag, as the leader sees them.
    Status,
    /// Add a replica (started with KUMA_STORE_RAFT_JOIN=true, or not started yet) as a voter.
    Add {
        /// Its node id.
        id: u64,
        /// Its raft address, host:port.
        address: String,
    },
    /// Remove a replica (a dead one, or one being retired).
    Remove {
        /// Its node id.
        id: u64,
    },
}

#[derive(Subcommand)]
enum MigrateCommand {
    /// Apply missing schema migrations to the configured store.
    Up {
        #[arg(short = 'c', long)]
        config_file: Option<String>,
    },
}

fn main() -> ExitCode {
    let (config_file, log_level, migrate) = match Cli::parse().command {
        Command::Raft {
            command,
            config_file,
            address,
        } => return raft_admin(command, config_file, address),
        Command::Version => {
            println!("kuma-cp version {VERSION} (Kuma {VERSION} compatible)");
            return ExitCode::SUCCESS;
        }
        Command::Run {
            config_file,
            log_level,
        } => (config_file, log_level, false),
        Command::Migrate {
            command: MigrateCommand::Up { config_file },
        } => (config_file, "info".to_string(), true),
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = match Config::load(config_file.as_deref(), &env) {
        Ok(c) => c,
        Err(e) => {
            init_tracing(&log_level, None);
            eprintln!("kuma-cp: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kuma-cp: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The exporter's gRPC channel lives on the runtime.
    let telemetry = {
        let _runtime = runtime.enter();
        match Telemetry::start(&config, &env) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("kuma-cp: {e}");
                return ExitCode::from(2);
            }
        }
    };
    init_tracing(&log_level, telemetry.as_ref());
    for key in &config.unsupported_kuma_keys {
        tracing::warn!(key = %key, "Kuma configuration key is not supported yet; its value is ignored");
    }
    if telemetry.is_some() {
        tracing::info!("exporting the control plane's spans over OTLP");
    }
    let result = runtime.block_on(async {
        if migrate {
            let done = kuma_cp::backend::migrate_up(&config).await?;
            println!("{done}");
            return Ok(());
        }
        let stop = bin_support::shutdown_signal()?;
        kuma_cp::run(config, stop).await?;
        Ok::<(), anyhow::Error>(())
    });
    if let Some(t) = telemetry {
        let _runtime = runtime.enter();
        t.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("kuma-cp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `kuma-cp raft ...`: one admin request, its answer as a table.
fn raft_admin(
    command: RaftCommand,
    config_file: Option<String>,
    address: Option<String>,
) -> ExitCode {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let raft = match Config::load(config_file.as_deref(), &env).map(|c| c.raft()) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) | Err(e) => {
            eprintln!("kuma-cp: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let address = address
        .or_else(|| raft.peers.get(&raft.node_id).cloned())
        .unwrap_or_default();
    let request = match command {
        RaftCommand::Status => store::raft::AdminRequest::Status,
        RaftCommand::Add { id, address } => store::raft::AdminRequest::Add { id, address },
        RaftCommand::Remove { id } => store::raft::AdminRequest::Remove { id },
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(store::raft::admin_call(&raft, &address, &request))
                .map_err(anyhow::Error::from)
        });
    match answer {
        Ok(status) => {
            println!(
                "cluster {} term {} leader {} commit index {}",
                status.cluster_id,
                status.term,
                status.leader.map_or("none".into(), |l| l.to_string()),
                status.commit_index.map_or("-".into(), |i| i.to_string()),
            );
            println!(
                "{:<6} {:<28} {:<9} {:>8} {:>6}",
                "NODE", "ADDRESS", "ROLE", "MATCHED", "LAG"
            );
            for m in &status.members {
                let num = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
                println!(
                    "{:<6} {:<28} {:<9} {:>8} {:>6}",
                    m.node_id,
                    m.address,
                    m.role,
                    num(m.matched_index),
                    num(m.lag)
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kuma-cp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stdout at `level` (or `KUMA_LOG_LEVEL_FILTER`), and exports spans at INFO and above
/// when `telemetry` is on (whatever the log level).
fn init_tracing(level: &str, telemetry: Option<&Telemetry>) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("KUMA_LOG_LEVEL_FILTER")
        // openraft narrates every election and vote at INFO; its warnings are what matter.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},openraft=warn")));
    let logs = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_filter(filter);
    // Spans at INFO and above; inside them, only warnings and errors become span events (the
    // INFO log lines are the log's, and would cost every span a formatted event).
    let spans = telemetry.map(|t| {
        t.layer()
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                let most_verbose = if meta.is_span() {
                    tracing::Level::INFO
                } else {
                    tracing::Level::WARN
                };
                *meta.level() <= most_verbose
            }))
    });
    tracing_subscriber::registry().with(logs).with(spans).init();
}
