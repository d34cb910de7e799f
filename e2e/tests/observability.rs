#![allow(clippy::unwrap_used)]
//! MeshMetric and the monitoring assignment server with a real Prometheus (Debian's package,
//! which has no `kuma_sd_configs`: it discovers targets through each zone's `/http_sd`). A
//! global and two zones, an echo app behind a sidecar in each, MeshMetrics applied on global:
//! Prometheus lists every proxy as a healthy target, and queries return Envoy's metrics and the
//! app's own (`echo_requests_total`, merged by kuma-dp) labelled with the proxy. A proxy
//! started after Prometheus shows up too, and a MADS client long-polling as Prometheus's
//! `kuma_sd_configs` does hears of it at once.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tokio::time::Instant;

use e2e::proxies::{Cp, Proc, TwoZones, client, envoy, installed, start_two_zones, within};
use e2e::{free_port, http_response};
use serde_json::{Value, json};

/// A MeshMetric for the proxies of `service`: Prometheus on `port`, the app on `app_port`.
fn mesh_metric(service: &str, port: u16, app_port: u16) -> Value {
    json!({"type": "MeshMetric", "mesh": "default", "name": format!("metrics-{service}"),
    "spec": {
        "targetRef": {"kind": "MeshSubset", "tags": {"kuma.io/service": service}},
        "default": {
            "sidecar": {"profiles": {"appendProfiles": [{"name": "Basic"}]}},
            "applications": [{"name": "echo", "port": app_port, "path": "/metrics"}],
            "backends": [{"type": "Prometheus", "prometheus": {"port": port, "path": "/metrics"}}]
        }
    }})
}

/// Prometheus's query API: the result vector of `query`.
fn query(port: u16, query: &str) -> Vec<Value> {
    let url = format!("http://127.0.0.1:{port}/api/v1/query");
    client()
        .get(url)
        .query(&[("query", query)])
        .send()
        .ok()
        .and_then(|r| r.json::<Value>().ok())
        .and_then(|v| v["data"]["result"].as_array().cloned())
        .unwrap_or_default()
}

/// Prometheus's healthy targets, by the `dataplane` name the service discovery gave them.
fn healthy_targets(port: u16) -> Vec<String> {
    e2e::prometheus_healthy_targets(port)
        .iter()
        .filter_map(|t| t["discoveredLabels"]["__meta_kuma_dataplane"].as_str())
        .map(str::to_string)
        .collect()
}

/// One MADS fetch as Prometheus's `kuma_sd_configs` sends it (protobuf JSON, camelCase names,
/// its headers and `fetch-timeout`): the status and the body.
fn mads_fetch(port: u16, version: &str, fetch_timeout: &str) -> (u16, Value) {
    let body = json!({"versionInfo": version, "node": {"id": "prometheus-e2e"},
        "typeUrl": "type.googleapis.com/kuma.observability.v1.MonitoringAssignment",
        "resourceNames": []});
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
        .post(format!(
            "http://127.0.0.1:{port}/v3/discovery:monitoringassignments?fetch-timeout={fetch_timeout}"
        ))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .header("User-Agent", "Prometheus/2.42.0")
        .header("X-Prometheus-Refresh-Interval-Seconds", "30")
        .body(body.to_string())
        .send()
        .expect("MADS fetch");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn dataplanes_in(response: &Value) -> Vec<String> {
    response["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["targets"][0]["name"].as_str())
        .map(str::to_string)
        .collect()
}

#[test]
fn prometheus_scrapes_every_proxy_through_the_service_discovery() {
    let Some(envoy) = envoy("prometheus_scrapes_every_proxy_through_the_service_discovery") else {
        return;
    };
    let Some(prometheus) = installed(
        "prometheus",
        "apt-get install prometheus",
        "prometheus_scrapes_every_proxy_through_the_service_discovery",
    ) else {
        return;
    };
    let TwoZones {
        global_cp,
        global,
        zone1_cp,
        zone2_cp,
        zone1,
        zone2,
    } = start_two_zones(&envoy);

    global.put(
        "/meshes/default",
        json!({"type": "Mesh", "name": "default",
            "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}}),
    );
    // One echo app and sidecar per zone, each with its own Prometheus port (they share 127.0.0.1).
    let (web_app_port, web_metrics) = (free_port(), free_port());
    let (backend_app_port, backend_metrics) = (free_port(), free_port());
    let (late_app_port, late_metrics) = (free_port(), free_port());
    global.put(
        "/meshes/default/meshmetrics/metrics-web",
        mesh_metric("web", web_metrics, web_app_port),
    );
    global.put(
        "/meshes/default/meshmetrics/metrics-backend",
        mesh_metric("backend", backend_metrics, backend_app_port),
    );
    global.put(
        "/meshes/default/meshmetrics/metrics-late",
        mesh_metric("late", late_metrics, late_app_port),
    );
    let _web_app = zone1.echo("web-1", web_app_port, Some("zone-1"));
    let web = zone1.sidecar(
        "web-1",
        "web",
        web_app_port,
        None,
        &global.token("web-1", "default"),
    );
    let _backend_app = zone2.echo("backend-1", backend_app_port, Some("zone-2"));
    let backend = zone2.sidecar(
        "backend-1",
        "backend",
        backend_app_port,
        None,
        &global.token("backend-1", "default"),
    );
    let logs = || {
        format!(
            "--- global:\n{}\n--- zone-1:\n{}\n--- zone-2:\n{}\n--- web-1:\n{}\n--- backend-1:\n{}",
            global_cp.logs(),
            zone1_cp.logs(),
            zone2_cp.logs(),
            web.logs(),
            backend.logs()
        )
    };

    // Each proxy serves the merge itself: Envoy's Basic profile, the app's counter, labels.
    within(
        Duration::from_secs(60),
        "web-1 serves merged metrics on its MeshMetric port",
        || {
            http_response(web_metrics, "/metrics").is_some_and(|(status, body)| {
                status == 200
                    && body.contains("envoy_server_live{")
                    && body.contains("echo_requests_total{")
            })
        },
        logs,
    );
    let (_, merged) = http_response(web_metrics, "/metrics").unwrap();
    let app_line = merged
        .lines()
        .find(|l| l.starts_with("echo_requests_total{"))
        .unwrap();
    for label in [
        "mesh=\"default\"",
        "zone=\"zone-1\"",
        "dataplane=\"web-1\"",
        "kuma_io_service=\"web\"",
        "kuma_proxy_role=\"sidecar\"",
    ] {
        assert!(app_line.contains(label), "{label} missing: {app_line}");
    }
    assert!(
        !merged.contains("envoy_cluster_name=\"ads_cluster\""),
        "the Basic profile leaves the control plane's own clusters out:\n{merged}"
    );

    // Prometheus, started now, finds both zones' proxies through their zones' /http_sd.
    let prom_port = free_port();
    let prom_dir = global_cp.work_dir.join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n\
         - job_name: zone-1\n  http_sd_configs:\n  - url: http://127.0.0.1:{}/http_sd\n    refresh_interval: 1s\n\
         - job_name: zone-2\n  http_sd_configs:\n  - url: http://127.0.0.1:{}/http_sd\n    refresh_interval: 1s\n",
        zone1_cp.mads_port, zone2_cp.mads_port
    );
    std::fs::write(prom_dir.join("prometheus.yml"), config).unwrap();
    let _prometheus = Proc::start(
        Command::new(&prometheus)
            .arg(format!(
                "--config.file={}",
                prom_dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}")),
        prom_dir.join("prometheus.log"),
    );
    let prom_log = prom_dir.join("prometheus.log");
    let logs = || {
        format!(
            "{}\n--- prometheus:\n{}",
            logs(),
            std::fs::read_to_string(&prom_log).unwrap_or_default()
        )
    };
    within(
        Duration::from_secs(60),
        "Prometheus scrapes web-1 (zone-1) and backend-1 (zone-2)",
        || {
            let up = healthy_targets(prom_port);
            up.contains(&"web-1".to_string()) && up.contains(&"backend-1".to_string())
        },
        logs,
    );
    // Traffic to the app, then its counter through Prometheus.
    for _ in 0..3 {
        let _ = http_response(web_app_port, "/");
    }
    within(
        Duration::from_secs(30),
        "Prometheus has web-1's app counter and backend-1's Envoy metrics",
        || {
            let app = query(
                prom_port,
                "echo_requests_total{dataplane=\"web-1\",mesh=\"default\"}",
            );
            let envoy = query(
                prom_port,
                "envoy_server_live{dataplane=\"backend-1\",zone=\"zone-2\"}",
            );
            app.first()
                .and_then(|s| s["value"][1].as_str())
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v >= 3.0)
                && envoy.first().is_some_and(|s| s["value"][1] == "1")
        },
        logs,
    );

    // MADS as Prometheus's kuma_sd_configs speaks it: the current assignments, then a long
    // poll that a proxy started meanwhile ends.
    let (status, first) = mads_fetch(zone1_cp.mads_port, "", "2m0s");
    assert_eq!(status, 200, "{first}");
    assert_eq!(dataplanes_in(&first), vec!["web-1".to_string()]);
    assert_eq!(first["resources"][0]["mesh"], "default");
    assert_eq!(first["resources"][0]["service"], "web");
    assert_eq!(
        first["resources"][0]["targets"][0]["address"],
        format!("127.0.0.1:{web_metrics}")
    );
    let version = first["version_info"].as_str().unwrap().to_string();
    let (status, _) = mads_fetch(zone1_cp.mads_port, &version, "500ms");
    assert_eq!(status, 304, "nothing changed: Not Modified");
    let mads_port = zone1_cp.mads_port;
    let poll = std::thread::spawn(move || {
        let (status, body) = mads_fetch(mads_port, &version, "60s");
        (status, body, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(300));
    let _late_app = zone1.echo("late-1", late_app_port, Some("zone-1"));
    let late_started = Instant::now();
    let late = zone1.sidecar(
        "late-1",
        "late",
        late_app_port,
        None,
        &global.token("late-1", "default"),
    );
    let (status, body, answered) = poll.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let mut names = dataplanes_in(&body);
    names.sort();
    assert_eq!(names, vec!["late-1".to_string(), "web-1".to_string()]);
    eprintln!(
        "MADS long poll answered {:?} after kuma-dp late-1 was started",
        answered - late_started
    );

    // And Prometheus scrapes the proxy that started after it.
    within(
        Duration::from_secs(60),
        "Prometheus scrapes late-1, started after it",
        || healthy_targets(prom_port).contains(&"late-1".to_string()),
        || format!("{}\n--- late-1:\n{}", logs(), late.logs()),
    );
    within(
        Duration::from_secs(30),
        "late-1's Envoy metrics are queryable",
        || !query(prom_port, "envoy_server_live{dataplane=\"late-1\"}").is_empty(),
        logs,
    );
}

/// The Mesh's legacy Prometheus backend (`spec.metrics`, before MeshMetric): a sidecar started
/// after it is enabled serves Envoy's statistics and its app's own (`aggregate`, handed to
/// kuma-dp in the bootstrap) on the backend's port, and the zone's service discovery lists it
/// with the Dataplane's tags as labels. A Dataplane overriding it with `tls.mode: providedTLS`
/// serves the certificate its kuma-dp was given.
#[test]
fn the_meshs_legacy_prometheus_backend_serves_envoy_and_the_app() {
    let Some(envoy) = envoy("the_meshs_legacy_prometheus_backend_serves_envoy_and_the_app") else {
        return;
    };
    let mut cp = e2e::ControlPlane::start("legacy-metrics", &[]);
    cp.wait_ready(Duration::from_secs(60));
    let env = Cp::of(&cp, envoy);
    let (app_port, metrics_port) = (free_port(), free_port());
    env.put(
        "/meshes/default",
        json!({"type": "Mesh", "name": "default",
            "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]},
            "metrics": {"enabledBackend": "prometheus-1", "backends": [{"name": "prometheus-1", "type": "prometheus",
                "conf": {"port": metrics_port, "path": "/metrics", "skipMTLS": true,
                    "aggregate": [{"name": "echo", "port": app_port, "path": "/metrics"}]}}]}}),
    );
    let _app = env.echo("web-1", app_port, None);
    let web = env.sidecar(
        "web-1",
        "web",
        app_port,
        None,
        &env.token("web-1", "default"),
    );
    let logs = || format!("{}\n--- web-1:\n{}", cp.logs(), web.logs());
    within(
        Duration::from_secs(60),
        "web-1 serves Envoy's and the app's metrics on the Mesh's Prometheus port",
        || {
            // The app counts this scrape's own request only once it has been asked.
            let _ = http_response(app_port, "/");
            http_response(metrics_port, "/metrics").is_some_and(|(status, body)| {
                status == 200
                    && body.contains("envoy_server_live")
                    && body.contains("echo_requests_total")
            })
        },
        logs,
    );
    let sd: Value = client()
        .get(format!("http://127.0.0.1:{}/http_sd", cp.mads_port))
        .send()
        .and_then(|r| r.json())
        .unwrap();
    let group = sd
        .as_array()
        .and_then(|groups| {
            groups
                .iter()
                .find(|g| g["labels"]["__meta_kuma_dataplane"] == "web-1")
        })
        .unwrap_or_else(|| panic!("web-1 is not discovered: {sd}"));
    assert_eq!(group["targets"][0], format!("127.0.0.1:{metrics_port}"));
    assert_eq!(group["labels"]["__meta_kuma_label_kuma_io_service"], "web");
    assert_eq!(
        group["labels"]["__meta_kuma_label_kuma_io_services"],
        ",web,"
    );

    // A Dataplane asking for providedTLS gets kuma-dp's own certificate on its endpoint.
    let (cert, _) = e2e::proxies::certificate(&env.dir, "metrics.local", "metrics");
    let key = env.dir.join("metrics-key.pem");
    let tls_port = free_port();
    let yaml = format!(
        "type: Dataplane\nname: {{{{ name }}}}\nmesh: default\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    servicePort: {app_port}\n    tags:\n      kuma.io/service: web\nmetrics:\n  type: prometheus\n  conf:\n    port: {tls_port}\n    tls:\n      mode: providedTLS\n",
        free_port()
    );
    let web2 = env.kuma_dp_with(
        e2e::proxies::ProxyType::Dataplane,
        "web-2",
        &yaml,
        &env.token("web-2", "default"),
        &[
            "--metrics-cert-path".as_ref(),
            cert.as_os_str(),
            "--metrics-key-path".as_ref(),
            key.as_os_str(),
        ],
    );
    within(
        Duration::from_secs(60),
        "web-2 serves its metrics over TLS with kuma-dp's certificate",
        || {
            e2e::proxies::curl_https("metrics.local", tls_port, &cert, "/metrics")
                .is_some_and(|body| body.contains("envoy_server_live"))
        },
        || format!("{}\n--- web-2:\n{}", cp.logs(), web2.logs()),
    );
    assert!(
        http_response(tls_port, "/metrics").is_none_or(|(status, _)| status != 200),
        "plaintext is refused"
    );
}

/// A span's id or trace id as hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first span, among those already received or arriving within `limit`, that `pick`
/// accepts. Spans are exported as they end, so a child (a KDS send made while the API request
/// was still answering) can arrive before its parent: every search looks at all of them.
fn wait_span(
    spans: &e2e::otlp::Received<proto::kuma::otlp::Span>,
    seen: &mut Vec<proto::kuma::otlp::Span>,
    limit: Duration,
    pick: impl Fn(&proto::kuma::otlp::Span) -> bool,
) -> Option<proto::kuma::otlp::Span> {
    if let Some(span) = seen.iter().find(|s| pick(s)) {
        return Some(span.clone());
    }
    let deadline = Instant::now() + limit;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(span) = spans.recv_timeout(left) else {
            break;
        };
        seen.push(span.clone());
        if pick(&span) {
            return Some(span);
        }
    }
    None
}

/// What a collector received, for a failure message.
fn describe(spans: &[proto::kuma::otlp::Span]) -> Vec<String> {
    spans
        .iter()
        .map(|span| {
            format!(
                "{} trace={} span={} parent={}",
                span.name,
                hex(&span.trace_id),
                hex(&span.span_id),
                hex(&span.parent_span_id)
            )
        })
        .collect()
}

/// The control plane's own OpenTelemetry: `kumactl apply` inside a trace (`TRACEPARENT`) on
/// global; global exports the API request's span as a child of the caller's, and the KDS delta
/// that carries the policy to the zone as a child of the request; the zone exports its receipt
/// of that delta as a child of global's send. Each control plane exports to its own collector
/// over OTLP/gRPC, with Kuma's key on global and the standard variable on the zone. Global also
/// pushes its metrics there (`metrics.openTelemetry`), the apply's KDS counters among them.
#[test]
fn the_control_plane_traces_an_apply_across_global_and_a_zone() {
    let global_otlp = e2e::otlp::otlp_collector();
    let zone_otlp = e2e::otlp::otlp_collector();
    let (global_collector, global_spans) = (global_otlp.port, &global_otlp.spans);
    let (zone_collector, zone_spans) = (zone_otlp.port, &zone_otlp.spans);
    let kds_port = free_port();
    let kds = kds_port.to_string();
    let global_endpoint = format!("127.0.0.1:{global_collector}");
    let mut global_cp = e2e::ControlPlane::start(
        "global",
        &[
            ("KUMA_MODE", "global"),
            ("KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT", &kds),
            ("KUMA_TRACING_OPENTELEMETRY_ENDPOINT", &global_endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            // And its metrics, pushed to the same collector.
            ("KUMA_METRICS_OPENTELEMETRY_ENABLED", "true"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                &format!("http://{global_endpoint}"),
            ),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
        ],
    );
    global_cp.wait_ready(Duration::from_secs(60));
    let global = Cp::api_only(&global_cp, PathBuf::new());
    let token = global.zone_token("zone-1", "cp").display().to_string();
    let zone_endpoint = format!("http://127.0.0.1:{zone_collector}");
    let mut zone_cp = e2e::ControlPlane::start(
        "zone-1",
        &[
            ("KUMA_MODE", "zone"),
            ("KUMA_MULTIZONE_ZONE_NAME", "zone-1"),
            (
                "KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS",
                &format!("grpcs://127.0.0.1:{kds_port}"),
            ),
            ("KUMA_MULTIZONE_ZONE_KDS_TLS_SKIP_VERIFY", "true"),
            ("KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_PATH", &token),
            ("KUMA_TRACING_OPENTELEMETRY_ENABLED", "true"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &zone_endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    zone_cp.wait_ready(Duration::from_secs(60));
    let zone = Cp::api_only(&zone_cp, PathBuf::new());
    let logs = || {
        format!(
            "--- global:\n{}\n--- zone-1:\n{}",
            global_cp.logs(),
            zone_cp.logs()
        )
    };
    within(
        Duration::from_secs(30),
        "the default mesh reaches zone-1",
        || zone.get("/meshes/default").is_some(),
        logs,
    );

    let config = global_cp.work_dir.join("kumactl.config");
    e2e::kumactl_config(&config, "global", &global_cp.api());
    let policy = global_cp.work_dir.join("timeout.yaml");
    std::fs::write(
        &policy,
        "type: MeshTimeout\nmesh: default\nname: traced-timeout\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n  - targetRef:\n      kind: Mesh\n    default:\n      connectionTimeout: 7s\n",
    )
    .unwrap();
    let (trace_id, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let apply = Command::new(e2e::binary("kumactl"))
        .arg("--config-file")
        .arg(&config)
        .args(["apply", "-f"])
        .arg(&policy)
        .env("TRACEPARENT", format!("00-{trace_id}-{caller_span}-01"))
        .output()
        .unwrap();
    assert!(
        apply.status.success(),
        "kumactl apply: {}",
        e2e::stderr(&apply)
    );

    let mut seen = Vec::new();
    let in_trace = |s: &proto::kuma::otlp::Span| hex(&s.trace_id) == trace_id;
    let request = wait_span(global_spans, &mut seen, Duration::from_secs(20), |s| {
        in_trace(s) && s.name.starts_with("PUT ") && hex(&s.parent_span_id) == caller_span
    })
    .unwrap_or_else(|| {
        panic!(
            "no API span continuing the caller's; global sent {:#?}\n{}",
            describe(&seen),
            logs()
        )
    });
    assert_eq!(request.name, "PUT /meshes/{mesh}/{plural}/{name}");
    let send = wait_span(global_spans, &mut seen, Duration::from_secs(20), |s| {
        in_trace(s) && s.name == "kds send MeshTimeout"
    })
    .unwrap_or_else(|| {
        panic!(
            "no KDS send in the trace; global sent {:#?}\n{}",
            describe(&seen),
            logs()
        )
    });
    assert_eq!(
        hex(&send.parent_span_id),
        hex(&request.span_id),
        "the KDS send is a child of the API request"
    );
    let mut seen = Vec::new();
    let receive = wait_span(zone_spans, &mut seen, Duration::from_secs(20), |s| {
        in_trace(s) && s.name == "kds receive MeshTimeout"
    })
    .unwrap_or_else(|| {
        panic!(
            "no KDS receive in the trace on zone-1; it sent {:#?}\n{}",
            describe(&seen),
            logs()
        )
    });
    assert_eq!(
        hex(&receive.parent_span_id),
        hex(&send.span_id),
        "the zone's receipt is a child of global's send"
    );

    // Global's /metrics over OTLP too: the KDS counters of this very apply, as a cumulative sum.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut names = std::collections::BTreeSet::new();
    let sent = loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| {
                panic!(
                    "no kds_responses_sent for MeshTimeout over OTLP; metrics seen: {names:?}\n{}",
                    logs()
                )
            });
        let Ok(resource) = global_otlp.metrics.recv_timeout(left) else {
            continue;
        };
        let attributes = resource.resource.map(|r| r.attributes).unwrap_or_default();
        assert_eq!(
            e2e::otlp::attribute(&attributes, "service.name"),
            Some("kuma-cp")
        );
        assert_eq!(
            e2e::otlp::attribute(&attributes, "kuma.mode"),
            Some("global")
        );
        let metrics = resource.scope_metrics.into_iter().flat_map(|s| s.metrics);
        let found = metrics
            .inspect(|m| {
                names.insert(m.name.clone());
            })
            .find(|m| m.name == "kds_responses_sent");
        let Some(proto::kuma::otlp::metric::Data::Sum(sum)) = found.and_then(|m| m.data) else {
            continue;
        };
        // An export can catch the counter after it was created and before the send was
        // counted (value 0): wait for the next export then.
        if let Some(point) = sum.data_points.into_iter().find(|p| {
            e2e::otlp::attribute(&p.attributes, "resource_type") == Some("MeshTimeout")
                && e2e::otlp::attribute(&p.attributes, "zone") == Some("zone-1")
                && matches!(p.value, Some(proto::kuma::otlp::number_data_point::Value::AsDouble(v)) if v >= 1.0)
        }) {
            break point;
        }
    };
    assert!(
        matches!(sent.value, Some(proto::kuma::otlp::number_data_point::Value::AsDouble(v)) if v >= 1.0),
        "{sent:?}"
    );
}
