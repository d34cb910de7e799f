#![allow(clippy::unwrap_used)]
//! `kumactl generate dataplane-token` against a real API server on a loopback port.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;

use api::{ApiState, AuthConfig, ServerInfo};
use model::{Resource, ResourceType};
use serde_json::json;
use store::{MemoryStore, SharedStore};

struct Server {
    store: SharedStore,
    config_file: PathBuf,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config_file);
    }
}

async fn start() -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store: SharedStore = Arc::new(MemoryStore::new());
    store
        .create(Resource::new(ResourceType::Mesh, "", "default", json!({})))
        .await
        .unwrap();
    let keys = Arc::new(security::user::user_signing_keys(store.clone()));
    keys.ensure_key().await.unwrap();
    let state = Arc::new(ApiState {
        store: store.clone(),
        user_keys: keys,
        zone_keys: Arc::new(security::zone::zone_signing_keys(store.clone())),
        info: ServerInfo {
            hostname: "test".into(),
            tagline: "Kuma".into(),
            product: "Kuma".into(),
            version: "2.14.0".into(),
            instance_id: "test-1".into(),
            cluster_id: "c".into(),
            gui: "/gui".into(),
            based_on_kuma: "2.14.0".into(),
            mode: "standalone".into(),
        },
        config: json!({}),
        // kumactl calls from this host, so it is admin without a token.
        auth: AuthConfig::default(),
        metrics: api::ApiMetrics::detached(),
        federation: api::federation::Federation::None,
        local_zone: None,
        origin_label_validation: true,
        proxy_admin: None,
        control_plane: String::new(),
        control_planes: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(api::serve_http(listener, api::router(state), async move {
        let _ = rx.await;
    }));
    let config_file = std::env::temp_dir().join(format!(
        "kumactl-generate-test-{}-{}.yaml",
        std::process::id(),
        addr.port()
    ));
    let out = kumactl_at(
        &config_file,
        &[
            "config",
            "control-planes",
            "add",
            "--name",
            "test",
            "--address",
            &format!("http://{addr}"),
            "--skip-check",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    Server {
        store,
        config_file,
        _shutdown: tx,
    }
}

async fn kumactl_at(config_file: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kumactl"));
    cmd.arg("--config-file").arg(config_file).args(args);
    // The server runs on this runtime: wait for the process off it.
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

impl Server {
    async fn kumactl(&self, args: &[&str]) -> Output {
        kumactl_at(&self.config_file, args).await
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_dataplane_token_verifies() {
    let s = start().await;
    let out = s
        .kumactl(&[
            "generate",
            "dataplane-token",
            "--name",
            "web-1",
            "--mesh",
            "default",
            "--tag",
            "kuma.io/service=web,web-api",
            "--proxy-type",
            "dataplane",
            "--valid-for",
            "24h",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let token = String::from_utf8(out.stdout).unwrap();
    let keys = security::dataplane::dataplane_signing_keys(s.store.clone(), "default");
    let dp_tags = BTreeMap::from([(
        "kuma.io/service".to_string(),
        vec!["web".to_string(), "web-api".to_string()],
    )]);
    let claims = security::dataplane::verify_dataplane_token(
        &keys,
        token.trim(),
        "web-1",
        "default",
        &dp_tags,
        "dataplane",
    )
    .await
    .unwrap();
    assert_eq!(claims.tags, dp_tags);
    assert_eq!(claims.exp - claims.iat, 24 * 3600);

    // Defaults: mesh "default", any name, ten years.
    let out = s.kumactl(&["generate", "dataplane-token"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let token = String::from_utf8(out.stdout).unwrap();
    let claims = security::dataplane::verify_dataplane_token(
        &keys,
        token.trim(),
        "anything",
        "default",
        &BTreeMap::new(),
        "",
    )
    .await
    .unwrap();
    assert_eq!(claims.exp - claims.iat, 87_600 * 3600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_dataplane_token_bad_flags_fail_clearly() {
    let s = start().await;
    for (args, expected) in [
        (&["--tag", "web"][..], "--tag \"web\""),
        (&["--tag", "k="][..], "empty value"),
        (&["--valid-for", "soon"][..], "--valid-for \"soon\""),
        (&["--proxy-type", "gateway"][..], "gateway"),
        (&["--mesh", "ghost"][..], "mesh of name ghost is not found"),
        (&["--mesh", "default", "--valid-for", "0s"][..], "validFor"),
    ] {
        let mut all = vec!["generate", "dataplane-token"];
        all.extend_from_slice(args);
        let out = s.kumactl(&all).await;
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(out.stdout.is_empty(), "{args:?} printed a token");
        let err = stderr(&out);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

/// `generate signing-key` (Kuma's formats) and `generate public-key` from it; a file that is
/// not a signing key is a non-zero exit naming it. No control plane is asked.
#[test]
fn signing_key_and_its_public_key() {
    use base64::Engine;
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kumactl"))
            .args(args)
            .output()
            .unwrap()
    };
    let encoded = run(&["generate", "signing-key"]);
    assert!(encoded.status.success(), "{}", stderr(&encoded));
    let pem = base64::engine::general_purpose::STANDARD
        .decode(&encoded.stdout)
        .expect("pem-base64 is base64");
    assert!(String::from_utf8_lossy(&pem).starts_with("-----BEGIN RSA PRIVATE KEY-----"));

    let dir = std::env::temp_dir().join(format!("kumactl-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("key.pem");
    let plain = run(&["generate", "signing-key", "--format=pem"]);
    std::fs::write(&key_file, &plain.stdout).unwrap();
    let public = run(&[
        "generate",
        "public-key",
        "--signing-key-path",
        key_file.to_str().unwrap(),
    ]);
    assert!(public.status.success(), "{}", stderr(&public));
    let public_pem = String::from_utf8_lossy(&public.stdout).into_owned();
    assert!(
        public_pem.starts_with("-----BEGIN RSA PUBLIC KEY-----"),
        "{public_pem}"
    );
    assert_eq!(
        public_pem,
        security::tokens::public_pem(&plain.stdout).unwrap(),
        "the public half of the key given"
    );

    std::fs::write(&key_file, "not a key").unwrap();
    let bad = run(&[
        "generate",
        "public-key",
        "--signing-key-path",
        key_file.to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("is not a PEM-encoded signing key"),
        "{}",
        stderr(&bad)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kumactl inspect services` prints Kuma's SERVICE / STATUS / DATAPLANES table from the
/// control plane's service insights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_services_as_kuma_prints_it() {
    let s = start().await;
    s.store
        .create(Resource::new(
            ResourceType::Dataplane,
            "default",
            "web-1",
            json!({"networking": {"address": "10.0.0.1",
                "inbound": [{"port": 80, "tags": {"kuma.io/service": "web"}}]}}),
        ))
        .await
        .unwrap();
    let out = s.kumactl(&["inspect", "services"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["SERVICE", "STATUS", "DATAPLANES"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row, ["web", "offline", "0/1"]);
}

/// `kumactl completion bash|zsh|fish` prints a script naming kumactl's commands; another shell
/// is refused naming the ones there are. No control plane is asked.
#[test]
fn completion_scripts() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_kumactl"))
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("kumactl") && script.contains("inspect"),
            "{shell}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_kumactl"))
        .args(["completion", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("bash, zsh, fish"), "{}", stderr(&out));
}
