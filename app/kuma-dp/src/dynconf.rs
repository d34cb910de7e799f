//! Reading a document from Envoy's dynamic configuration listener (`_kuma:dynamicconfig`, on a
//! socket in kuma-dp's working directory): MeshMetric's `/meshmetric`, the DNS records'
//! `/dns`. The ETag of the copy held is sent along, so an unchanged document costs a 304.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

/// A local Envoy that does not answer within this is stuck.
const TIMEOUT: Duration = Duration::from_secs(10);

pub enum Fetched {
    /// The copy held (its ETag was sent) is current.
    Unchanged,
    Changed {
        etag: String,
        body: Bytes,
    },
    /// Envoy serves no such document (the control plane has nothing to say there).
    Missing,
}

pub async fn fetch(socket: &Path, path: &str, etag: Option<&str>, max: usize) -> Result<Fetched> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake with Envoy's configuration listener")?;
    tokio::spawn(connection);
    let mut request = Request::get(path).header(hyper::header::HOST, "kuma-dp");
    if let Some(etag) = etag {
        request = request.header(hyper::header::IF_NONE_MATCH, etag);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .context("building the configuration request")?;
    let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
        .await
        .context("Envoy's configuration listener did not answer")??;
    match response.status() {
        StatusCode::NOT_MODIFIED if etag.is_some() => return Ok(Fetched::Unchanged),
        StatusCode::NOT_FOUND => return Ok(Fetched::Missing),
        StatusCode::OK => {}
        status => bail!("Envoy's configuration listener answered {status} for {path}"),
    }
    let etag = response
        .headers()
        .get(hyper::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = Limited::new(response.into_body(), max)
        .collect()
        .await
        .map_err(|e| anyhow!("reading {path}: {e}"))?
        .to_bytes();
    Ok(Fetched::Changed { etag, body })
}
