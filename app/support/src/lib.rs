//! What the binaries share: the shutdown signal, and metrics pushed over OTLP.

pub mod otlp_metrics;

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};

/// Resolves on the first SIGTERM or SIGINT (what systemd, Docker, Kubernetes and a terminal's
/// Ctrl-C send to stop a process). The handlers are installed when this is called, not when the
/// future is first polled, so a signal that arrives during start-up is not lost; call it from
/// within the Tokio runtime.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
