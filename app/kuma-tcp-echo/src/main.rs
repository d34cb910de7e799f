//! `kuma-tcp-echo`: the demo app behind the mesh. By default it echoes the bytes of every TCP
//! connection back, as Kuma's `kuma-tcp-echo`; with `--http` it answers every HTTP/1.1 request
//! with JSON naming the instance and zone that answered and what it received, so routing and
//! header policies can be seen from the client. An HTTP request can also ask for trouble, so
//! timeout, retry and circuit-breaker policies can be seen working: `?delay=500ms` answers
//! late, `?status=503` answers with that status, and `?fail=2&key=k` answers 503 to the first
//! two requests that carry key `k` and 200 afterwards; `&only=NAME` keeps the trouble to the
//! instance called NAME (so one of several instances can look unhealthy). `GET /metrics` answers
//! the app's own metrics (`echo_requests_total`) in Prometheus's text format.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use clap::Parser;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Kuma's echo reads in chunks of this size.
const TCP_CHUNK: usize = 1024;

#[derive(Parser, Debug)]
#[command(name = "kuma-tcp-echo", version = VERSION, about = "Echo server for mesh demos and tests")]
struct Cli {
    /// Port to listen on (all interfaces). 0 picks a free port, shown in the log line.
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Answer HTTP/1.1 requests with JSON instead of echoing bytes.
    #[arg(long)]
    http: bool,
    /// Name reported as `instance` (default: the host name).
    #[arg(long, env = "KUMA_ECHO_INSTANCE")]
    instance: Option<String>,
    /// Zone reported as `zone`.
    #[arg(long, env = "KUMA_ECHO_ZONE", default_value = "")]
    zone: String,
    /// HTTP: a client must send a request's headers within this time, counted from when the
    /// connection starts waiting for it (so it also bounds an idle keep-alive connection),
    /// and then its body within as long again.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    header_read_timeout: Duration,
    /// HTTP: a connection on which no byte moves either way for this long is closed (a
    /// stalled body, a client that does not read the response).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// HTTP: largest request body read (and discarded); a larger one gets 413.
    #[arg(long, default_value_t = 64 * 1024)]
    max_body_bytes: usize,
    /// On SIGTERM/SIGINT, open connections get this long to finish.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    drain_timeout: Duration,
}

/// A flag or query value that is not a duration.
#[derive(Debug)]
struct BadDuration(String);

impl std::fmt::Display for BadDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid duration {:?}: expected e.g. 500ms, 10s, 1m, 1h",
            self.0
        )
    }
}

impl std::error::Error for BadDuration {}

/// `500ms`, `10s`, `1m`, `1h`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, BadDuration> {
    let s = s.trim();
    let bad = || BadDuration(s.to_string());
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| bad())
}

/// Kuma's binary is a Go program taking `-port 8000`; accept that spelling too so existing
/// scripts and Dataplane definitions keep working.
fn normalize_args(args: impl Iterator<Item = String>) -> Vec<String> {
    args.map(|a| {
        let single_dash_port = a == "-port" || a.starts_with("-port=");
        if single_dash_port { format!("-{a}") } else { a }
    })
    .collect()
}

/// Log lines go to stdout, ignoring write errors: a closed or full log pipe must not crash
/// or panic the app (println! panics when stdout is gone).
fn log(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(line);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse_from(normalize_args(std::env::args()));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kuma-tcp-echo: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kuma-tcp-echo: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", cli.port)).await?;
    let port = listener.local_addr()?.port();
    let shutdown = bin_support::shutdown_signal()?;
    if cli.http {
        let instance = match cli.instance.clone().filter(|i| !i.is_empty()) {
            Some(i) => i,
            None => hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        log(format_args!(
            "Kuma TCP Echo - Listening to HTTP requests on port {port} (instance {instance:?}, zone {:?})",
            cli.zone
        ));
        let identity = Arc::new(Identity {
            instance,
            zone: cli.zone.clone(),
            failures: Default::default(),
            requests: AtomicU64::new(0),
        });
        serve_http(listener, identity, &cli, shutdown).await;
    } else {
        log(format_args!(
            "Kuma TCP Echo - Listening to connections on port {port}"
        ));
        serve_tcp(listener, cli.drain_timeout, shutdown).await;
    }
    log(format_args!("Kuma TCP Echo - stopped"));
    Ok(())
}

/// Accepts until `shutdown`, then lets open connections finish for `drain` before cutting
/// them.
async fn serve_tcp(listener: TcpListener, drain: Duration, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(echo_connection(stream, peer));
                }
                Err(e) => accept_failed(e).await,
            },
            // Reap finished connections so the set does not grow with every one served.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}

async fn accept_failed(e: std::io::Error) {
    // Usually EMFILE: back off instead of spinning.
    eprintln!("kuma-tcp-echo: accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Echoes each chunk back until the client closes. As in Kuma's echo, a chunk holding a whole
/// HTTP request head is echoed and the connection closed, so `curl` against the TCP echo
/// gets an answer instead of waiting forever.
async fn echo_connection(mut stream: TcpStream, peer: SocketAddr) {
    let mut buf = [0u8; TCP_CHUNK];
    let mut announced = false;
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if let Some((method, target, proto)) = http_request_line(chunk) {
            log(format_args!("{proto} connection: {method} {target}"));
            let _ = stream.write_all(chunk).await;
            let _ = stream.shutdown().await;
            return;
        }
        if !announced {
            log(format_args!("TCP connection from {peer}"));
            announced = true;
        }
        if stream.write_all(chunk).await.is_err() {
            return;
        }
    }
}

/// The request line of `chunk` if it holds a complete HTTP/1.x request head.
fn http_request_line(chunk: &[u8]) -> Option<(&str, &str, &str)> {
    let end = chunk.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&chunk[..end]).ok()?;
    let line = head.split("\r\n").next()?;
    let mut parts = line.split(' ');
    let (method, target, proto) = (parts.next()?, parts.next()?, parts.next()?);
    let method_ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    let proto_ok = proto.starts_with("HTTP/1.");
    (method_ok && proto_ok && !target.is_empty() && parts.next().is_none())
        .then_some((method, target, proto))
}

struct Identity {
    instance: String,
    zone: String,
    /// `?fail=N&key=K`: how many requests of each key were answered so far.
    failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// Requests answered, served on `GET /metrics` (an application's own metrics, for
    /// MeshMetric's `applications` to merge).
    requests: AtomicU64,
}

/// Longest `?delay=` honoured: a test's slow answer, not a way to hold connections forever.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// Keys `?fail=` remembers; a new key beyond this forgets the others.
const MAX_FAIL_KEYS: usize = 10_000;

/// What a request asked for with its query string; unknown or malformed parameters are
/// ignored, as a demo app should.
#[derive(Debug, Default, PartialEq)]
struct Trouble {
    delay: Option<Duration>,
    status: Option<StatusCode>,
    fail: Option<(u32, String)>,
    /// `?only=`: the instance the trouble is for (every instance without it).
    only: Option<String>,
}

fn trouble(query: Option<&str>) -> Trouble {
    let mut out = Trouble::default();
    let mut fail = None;
    let mut key = String::new();
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "delay" => out.delay = parse_duration(v).ok().map(|d| d.min(MAX_DELAY)),
            "status" => {
                out.status = v
                    .parse::<u16>()
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
            }
            "fail" => fail = v.parse::<u32>().ok(),
            "key" => key = v.to_string(),
            "only" => out.only = Some(v.to_string()),
            _ => {}
        }
    }
    out.fail = fail.map(|n| (n, key));
    out
}

impl Identity {
    /// Whether this request of `key` is one of the first `n`.
    fn should_fail(&self, n: u32, key: &str) -> bool {
        let mut seen = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if !seen.contains_key(key) && seen.len() >= MAX_FAIL_KEYS {
            seen.clear();
        }
        let count = seen.entry(key.to_string()).or_insert(0);
        *count += 1;
        *count <= n
    }
}

async fn serve_http(
    listener: TcpListener,
    identity: Arc<Identity>,
    cli: &Cli,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let identity = identity.clone();
        let max_body = cli.max_body_bytes;
        let body_timeout = cli.header_read_timeout;
        let service = hyper::service::service_fn(move |req| {
            answer(req, identity.clone(), max_body, body_timeout)
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(cli.header_read_timeout);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: activity.clone(),
        });
        let conn = graceful.watch(builder.serve_connection(io, service));
        let idle_timeout = cli.idle_timeout;
        tokio::spawn(async move {
            tokio::select! {
                // Errors here are timeouts and clients going away: nothing to report.
                _ = conn => {}
                () = activity.idle_for(idle_timeout) => {
                    log(format_args!("closing connection from {peer}: idle for {idle_timeout:?}"));
                }
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(cli.drain_timeout, graceful.shutdown()).await;
}

/// One JSON answer per request. The body is read (up to `max_body` bytes, within
/// `body_timeout`) and dropped so the connection can be reused.
async fn answer(
    req: Request<Incoming>,
    identity: Arc<Identity>,
    max_body: usize,
    body_timeout: Duration,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    if parts.method == http::Method::GET && parts.uri.path() == "/metrics" {
        return Ok(metrics(&identity));
    }
    identity.requests.fetch_add(1, Ordering::Relaxed);
    let read = tokio::time::timeout(body_timeout, Limited::new(body, max_body).collect()).await;
    let mut status = match read {
        Ok(Ok(_)) => StatusCode::OK,
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => StatusCode::PAYLOAD_TOO_LARGE,
        Ok(Err(_)) => StatusCode::BAD_REQUEST,
        Err(_) => StatusCode::REQUEST_TIMEOUT,
    };
    let mut asked = trouble(parts.uri.query());
    if asked
        .only
        .as_ref()
        .is_some_and(|only| *only != identity.instance)
    {
        asked = Trouble::default();
    }
    if let Some(d) = asked.delay {
        tokio::time::sleep(d).await;
    }
    if status == StatusCode::OK {
        if let Some((n, key)) = &asked.fail
            && identity.should_fail(*n, key)
        {
            status = StatusCode::SERVICE_UNAVAILABLE;
        } else if let Some(s) = asked.status {
            status = s;
        }
    }
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        // Repeated headers are one comma-joined value, as HTTP allows.
        match headers.get_mut(name.as_str()) {
            Some(serde_json::Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_string(), value.into());
            }
        }
    }
    let mut body = serde_json::json!({
        "instance": identity.instance,
        "zone": identity.zone,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "headers": headers,
    });
    if status != StatusCode::OK {
        body["error"] = status.canonical_reason().unwrap_or("error").into();
    }
    let mut text = body.to_string();
    text.push('\n');
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // A host name or flag value that is not a valid header value is left out of the header
    // rather than failing the request; it is still in the body.
    if let Ok(v) = HeaderValue::from_str(&identity.instance) {
        resp.headers_mut().insert("x-echo-instance", v);
    }
    Ok(resp)
}

/// The app's own metrics in Prometheus's text format.
fn metrics(identity: &Identity) -> Response<Full<Bytes>> {
    let escape = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
    let text = format!(
        "# HELP echo_requests_total Requests answered.\n# TYPE echo_requests_total counter\necho_requests_total{{instance=\"{}\",zone=\"{}\"}} {}\n",
        escape(&identity.instance),
        escape(&identity.zone),
        identity.requests.load(Ordering::Relaxed)
    );
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

/// When a byte last moved on a connection, for the idle timeout.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Resolves once nothing has moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let deadline = self.last() + limit;
            tokio::time::sleep_until(deadline).await;
            if self.last() + limit <= Instant::now() {
                return;
            }
        }
    }
}

/// A stream that records activity on every successful read or write.
struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("1d").is_err());
    }

    #[test]
    fn trouble_on_demand() {
        assert_eq!(trouble(None), Trouble::default());
        let t = trouble(Some("delay=250ms&status=418&x=1"));
        assert_eq!(t.delay, Some(Duration::from_millis(250)));
        assert_eq!(t.status, Some(StatusCode::IM_A_TEAPOT));
        assert_eq!(trouble(Some("delay=1h")).delay, Some(MAX_DELAY));
        assert_eq!(trouble(Some("status=1000&delay=soon")), Trouble::default());
        let identity = Identity {
            instance: "i".into(),
            zone: String::new(),
            failures: Default::default(),
            requests: AtomicU64::new(0),
        };
        let t = trouble(Some("fail=2&key=k"));
        let (n, key) = t.fail.unwrap();
        let answers: Vec<bool> = (0..4).map(|_| identity.should_fail(n, &key)).collect();
        assert_eq!(answers, [true, true, false, false]);
        assert!(identity.should_fail(1, "other"), "keys count apart");
        assert_eq!(
            trouble(Some("status=503&only=b")).only.as_deref(),
            Some("b")
        );
    }

    #[test]
    fn go_style_port_flag() {
        let args = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let cli = Cli::parse_from(normalize_args(args(&["echo", "-port", "9000"]).into_iter()));
        assert_eq!(cli.port, 9000);
        let cli = Cli::parse_from(normalize_args(args(&["echo", "-port=9001"]).into_iter()));
        assert_eq!(cli.port, 9001);
        let cli = Cli::parse_from(normalize_args(args(&["echo"]).into_iter()));
        assert_eq!(cli.port, 8000);
        assert!(!cli.http);
    }

    #[test]
    fn detects_whole_http_request_heads() {
        assert_eq!(
            http_request_line(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(("GET", "/x", "HTTP/1.1"))
        );
        assert_eq!(http_request_line(b"GET /x HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(http_request_line(b"hello\r\n\r\n"), None);
        assert_eq!(http_request_line(b"hello world"), None);
    }
}
