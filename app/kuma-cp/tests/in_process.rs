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
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), kuma_cp::RunError>>,
}

/// Starts a control plane on fresh ports with `extra` settings (as `KUMA_*` variables) and
/// waits until its API answers.
async fn start(extra: &[(&str, String)]) -> InProcess {
    let api_port = free_port();
    let mut env: Vec<(String, String)> = vec![
        ("KUMA_API_SERVER_HTTP_PORT".into(), api_port.to_string()),
        ("KUMA_API_SERVER_HTTPS_ENABLED".into(), "false".into()),
        (
            "KUMA_DIAGNOSTICS_SERVER_PORT".into(),
            free_port().to_string(),
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
            return InProcess { api, stop, task };
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
