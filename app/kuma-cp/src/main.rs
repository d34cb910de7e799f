//! `kuma-cp`: parses configuration, builds components from the library crates and runs them.

use clap::{Parser, Subcommand};

mod backend;
mod config;
mod defaults;
mod intercp;
mod multizone;
mod run;

use config::Config;

const VERSION: &str = env!("CARGO_PKG_VERSION");

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

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let (config_file, log_level, migrate) = match cli.command {
        Command::Version => {
            println!("kuma-cp version {VERSION} (Kuma {VERSION} compatible)");
            return std::process::ExitCode::SUCCESS;
        }
        Command::Run {
            config_file,
            log_level,
        } => (config_file, log_level, false),
        Command::Migrate {
            command: MigrateCommand::Up { config_file },
        } => (config_file, "info".to_string(), true),
    };
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
    let result = if migrate {
        runtime.block_on(backend::migrate_up(&config))
    } else {
        runtime.block_on(run::run(config))
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("kuma-cp: {e:#}");
            std::process::ExitCode::FAILURE
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
