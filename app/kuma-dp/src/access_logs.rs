//! TCP access logs (Kuma's kuma-dp `accesslogs`): the control plane points Envoy's file access
//! logger at a pipe in kuma-dp's working directory; each line Envoy writes there is
//! `{"address": "host:port", "message": ...}`, and kuma-dp sends the message to the address
//! over TCP (one connection per address, opened on first use). A line that cannot be
//! delivered is dropped (retrying would let the pipe back up and stall Envoy's logging).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest line accepted from the pipe: a longer one is a broken writer, not a log.
const MAX_LINE: usize = 1 << 20;

/// Makes the pipe at `path` (replacing what is there) and forwards its lines until the task
/// is dropped.
pub fn start(path: &Path) -> Result<tokio::task::JoinHandle<()>> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        0,
    )
    .with_context(|| format!("making the access-log pipe {}", path.display()))?;
    // Opened for writing too, so the pipe never reads as closed while Envoy reopens it.
    let pipe = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
        .with_context(|| format!("opening the access-log pipe {}", path.display()))?;
    tracing::info!(pipe = %path.display(), "forwarding TCP access logs");
    Ok(tokio::spawn(forward(BufReader::new(pipe))))
}

async fn forward(mut reader: BufReader<tokio::net::unix::pipe::Receiver>) {
    let mut senders: HashMap<String, TcpStream> = HashMap::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading the access-log pipe failed; TCP access logs stop");
                return;
            }
        }
        let Some((address, message)) = parse(&line) else {
            tracing::warn!("an access-log line is not {{\"address\", \"message\"}} JSON; dropped");
            continue;
        };
        if !senders.contains_key(&address) {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&address)).await {
                Ok(Ok(stream)) => {
                    tracing::info!(%address, "connected to a TCP access-log destination");
                    senders.insert(address.clone(), stream);
                }
                Ok(Err(e)) => {
                    tracing::warn!(%address, error = %e, "cannot reach the TCP access-log destination; log dropped");
                    continue;
                }
                Err(_) => {
                    tracing::warn!(%address, "connecting to the TCP access-log destination timed out; log dropped");
                    continue;
                }
            }
        }
        if let Some(stream) = senders.get_mut(&address)
            && let Err(e) = stream.write_all(&message).await
        {
            tracing::warn!(%address, error = %e, "sending to the TCP access-log destination failed; log dropped, reconnecting on the next");
            senders.remove(&address);
        }
    }
}

/// The destination and the bytes to send of one pipe line: a string message as written (it
/// ends with its newline), a JSON one as a JSON line.
fn parse(line: &[u8]) -> Option<(String, Vec<u8>)> {
    let value: Value = serde_json::from_slice(line).ok()?;
    let address = value.get("address")?.as_str()?.to_string();
    let message = match value.get("message")? {
        Value::String(s) => s.clone().into_bytes(),
        other => {
            let mut bytes = serde_json::to_vec(other).ok()?;
            bytes.push(b'\n');
            bytes
        }
    };
    Some((address, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_their_destination() {
        let (address, message) =
            parse(br#"{"address":"127.0.0.1:5000","message":"GET / 200\n"}"#).expect("line");
        assert_eq!(address, "127.0.0.1:5000");
        assert_eq!(message, b"GET / 200\n");
        let (_, json) = parse(br#"{"address":"a:1","message":{"code":"200"}}"#).expect("json");
        assert_eq!(json, b"{\"code\":\"200\"}\n");
        assert!(parse(b"not json").is_none());
        assert!(parse(br#"{"message":"x"}"#).is_none());
    }
}
