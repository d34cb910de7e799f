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
    /// Print the version.
    Version,
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

/// Logs to stdout at `level` (or `KUMA_LOG_LEVEL_FILTER`), and exports spans at INFO and above
/// when `telemetry` is on (whatever the log level).
fn init_tracing(level: &str, telemetry: Option<&Telemetry>) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("KUMA_LOG_LEVEL_FILTER")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
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
