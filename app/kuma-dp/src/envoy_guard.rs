//! `kuma-dp envoy-guard -- ENVOY ARGS...`: runs Envoy as its child and stops it when kuma-dp
//! is gone, however kuma-dp ended (a SIGKILL included). kuma-dp starts the guard with its
//! stdin a pipe whose write end only kuma-dp holds and never writes to: the kernel closes it
//! when kuma-dp exits, the guard reads end-of-file, kills Envoy and exits. No polling, and no
//! `prctl` (which would need code between fork and exec).

use std::ffi::OsString;
use std::process::{ExitCode, Stdio};

use anyhow::{Context, Result, bail};
use tokio::io::AsyncReadExt;

pub async fn run(command: Vec<OsString>) -> Result<ExitCode> {
    let Some((program, args)) = command.split_first() else {
        bail!("envoy-guard needs the command to run after --");
    };
    // The guard outlives a terminal's Ctrl-C or a SIGTERM to the group: Envoy gets those
    // signals itself, and the guard leaves only when Envoy has.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing the SIGINT handler")?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", program.to_string_lossy()))?;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.context("waiting for Envoy")?;
                let code = status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1);
                return Ok(ExitCode::from(code));
            }
            read = stdin.read(&mut buf) => {
                if matches!(read, Ok(0) | Err(_)) {
                    tracing::warn!("kuma-dp is gone: stopping Envoy");
                    let _ = child.kill().await;
                    return Ok(ExitCode::FAILURE);
                }
            }
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    }
}
