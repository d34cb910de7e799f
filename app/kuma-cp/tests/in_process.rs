//! Whole control planes started in-process from a `Config` (no binary, no child process): a
//! standalone one serves its API and stops cleanly; a global and a zone federate over KDS.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kuma_cp::Config;
use serde_json::Value;
use store::testing::free_port;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct InProcess {
    api: String,
    /// The diagnostics server (`/metrics`).
    diagnostics: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), kuma_cp::RunError>>,
}

/// Starts a control plane on fresh ports with `extra` settings (as `KUMA_*` variables) and
/// waits until its API answers.
async fn start(extra: &[(&str, String)]) -> InProcess {
    let api_port = free_port();
    let diagnostics_port = free_port();
    let mut env: Vec<(String, String)> = vec![
        ("KUMA_API_SERVER_HTTP_PORT".into(), api_port.to_string()),
        ("KUMA_API_SERVER_HTTPS_ENABLED".into(), "false".into()),
        (
            "KUMA_DIAGNOSTICS_SERVER_PORT".into(),
            diagnostics_port.to_string(),
        ),
        ("KUMA_DP_SERVER_PORT".into(), free_port().to_string()),
        (
            "KUMA_MONITORING_ASSIGNMENT_SERVER_PORT".into(),
            free_port().to_string(),
        ),
        ("KUMA_INTER_CP_SERVER_PORT".into(), free_port().to_string()),
        (
            "KUMA_INTER_CP_CATALOG_INSTANCE_ADDRESS".into(),
            "127.0.0.1".into(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let config = Config::load(None, &env).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(kuma_cp::run(config, async move {
        let _ = stopped.await;
    }));
    let api = format!("http://127.0.0.1:{api_port}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client.get(format!("{api}/")).send().await.is_ok() {
            return InProcess {
                api,
                diagnostics: format!("http://127.0.0.1:{diagnostics_port}"),
                stop,
                task,
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the control plane's API did not come up on {api}");
}

async fn get(url: String) -> Value {
    let resp = reqwest::get(&url).await.unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.json().await.unwrap()
}

/// Waits up to 10 s for `check` to hold on `url`'s JSON.
async fn eventually(url: String, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        last = get(url.clone()).await;
        if check(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never satisfied the check; last answer: {last}");
}

/// A global and a zone (`zone-1`) federated to it over plain KDS.
async fn federated() -> (InProcess, InProcess) {
    let kds_port = free_port();
    let global = start(&[
        ("KUMA_MODE", "global".into()),
        ("KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT", kds_port.to_string()),
        ("KUMA_MULTIZONE_GLOBAL_KDS_TLS_ENABLED", "false".into()),
        ("KUMA_MULTIZONE_GLOBAL_KDS_AUTH_TYPE", "none".into()),
    ])
    .await;
    let zone = start(&[
        ("KUMA_MODE", "zone".into()),
        ("KUMA_MULTIZONE_ZONE_NAME", "zone-1".into()),
        (
            "KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS",
            format!("grpc://127.0.0.1:{kds_port}"),
        ),
    ])
    .await;
    (global, zone)
}

impl InProcess {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("stopped within 30 s")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_serves_its_api_and_stops_cleanly() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cp = start(&[]).await;
    let index = get(format!("{}/", cp.api)).await;
    assert_eq!(index["mode"], "standalone");
    assert!(!index["clusterId"].as_str().unwrap().is_empty());
    // The leader-only defaults component created the default mesh.
    eventually(format!("{}/meshes", cp.api), |v| v["total"] == 1).await;
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_federates_to_a_global_in_the_same_process() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (global, zone) = federated().await;
    // Global's default mesh reaches the zone, labelled as global's.
    let meshes = eventually(format!("{}/meshes", zone.api), |v| v["total"] == 1).await;
    assert_eq!(meshes["items"][0]["labels"]["kuma.io/origin"], "global");
    // The zone registered itself on global and shows online.
    eventually(format!("{}/zones+insights", global.api), |v| {
        v["items"][0]["name"] == "zone-1"
    })
    .await;
    zone.stop().await;
    global.stop().await;
}

/// The metric names an exposition declares, as queries name them: a counter `c` as `c_total`,
/// a histogram `h` as `h_bucket`, `h_sum` and `h_count`.
fn exported(exposition: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in exposition.lines() {
        let mut words = line.split_whitespace();
        if (words.next(), words.next()) != (Some("#"), Some("TYPE")) {
            continue;
        }
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{name}{suffix}"));
        }
    }
    names
}

/// The metric names a PromQL expression reads: identifiers outside label matchers, ranges
/// and grouping clauses that are not function calls or operators.
fn queried(expr: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut depth = 0;
    for c in expr.chars() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            c if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    let mut names = Vec::new();
    let chars: Vec<char> = plain.chars().collect();
    let mut i = 0;
    let mut skip_group = false;
    while i < chars.len() {
        let c = chars[i];
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            if c == '(' && skip_group {
                // `by (zone, le)`: label names, not metrics.
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                skip_group = false;
            }
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
        {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let next = chars[i..].iter().find(|c| !c.is_whitespace());
        match word.as_str() {
            "by" | "without" | "on" | "ignoring" | "group_left" | "group_right" => {
                skip_group = true
            }
            // Operators, and aggregations written with their grouping first (`sum by (a) (x)`).
            "and" | "or" | "unless" | "bool" | "offset" | "sum" | "avg" | "min" | "max"
            | "count" | "group" | "stddev" | "stdvar" | "topk" | "bottomk" | "quantile"
            | "count_values" => {}
            _ if next == Some(&'(') => {}
            _ => names.push(word),
        }
    }
    names
}

/// Every metric the Grafana dashboard in `deploy/grafana/` queries is one a global or a zone
/// control plane exports once a zone is connected (counters exist from the subscription on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_queries_only_exported_metrics() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (global, zone) = federated().await;
    eventually(format!("{}/meshes", zone.api), |v| v["total"] == 1).await;
    let mut exported_names = std::collections::BTreeSet::new();
    for cp in [&global, &zone] {
        let exposition = reqwest::get(format!("{}/metrics", cp.diagnostics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        exported_names.extend(exported(&exposition));
    }
    let exported = exported_names;
    let dashboard: Value =
        serde_json::from_str(include_str!("../../../deploy/grafana/kuma-cp.json")).unwrap();
    let mut checked = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names = queried(expr);
            assert!(!names.is_empty(), "no metric found in {expr:?}");
            for name in names {
                assert!(
                    exported.contains(&name),
                    "panel {:?} queries {name}, which kuma-cp does not export; exported: {exported:?}",
                    panel["title"]
                );
                checked.insert(name);
            }
        }
    }
    for needed in [
        "kds_sync_lag_seconds_bucket",
        "kds_responses_nacked_total",
        "xds_push_duration_seconds_bucket",
        "xds_responses_nacked_total",
        "xds_connected_proxies",
        "store_operation_duration_seconds_bucket",
    ] {
        assert!(checked.contains(needed), "the dashboard lost {needed}");
    }
    assert_eq!(
        queried(
            "histogram_quantile(0.99, sum by (zone, le) (rate(kds_sync_lag_seconds_bucket{zone=\"a\"}[5m])))"
        ),
        vec!["kds_sync_lag_seconds_bucket".to_string()]
    );
    zone.stop().await;
    global.stop().await;
}
