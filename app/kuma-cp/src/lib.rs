//! The control plane's runtime: configuration (defaults, YAML, `KUMA_*` environment), the
//! store backend and its leader elector, what a fresh control plane creates, and the component
//! list each mode runs. Role logic lives in the `global`, `zone` and `intercp` crates; this
//! crate only wires them.

pub mod backend;
pub mod components;
pub mod config;
pub mod defaults;
mod run;
pub mod telemetry;
pub mod tenancy;

pub use config::{Config, ConfigError, Mode};
pub use run::{RunError, run};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
