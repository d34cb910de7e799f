#![allow(clippy::unwrap_used)]
//! A real `kuma-cp` process driven by a real `kumactl`: the README tour, as a test.

use std::time::Duration;

use e2e::{ControlPlane, http_status, kumactl, kumactl_with_stdin, stderr, stdout};

const MESH_WITH_POLICY: &str = r#"
type: Mesh
name: demo
mtls:
  enabledBackend: ca-1
  backends:
  - name: ca-1
    type: builtin
---
type: MeshTimeout
name: timeout-{{ svc }}
mesh: demo
labels:
  team: payments
spec:
  targetRef:
    kind: Mesh
  to:
  - targetRef:
      kind: MeshService
      name: {{ svc }}
    default:
      idleTimeout: 20s
      http:
        requestTimeout: 2s
"#;

fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "kumactl failed:\nstdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

#[test]
fn kumactl_drives_a_standalone_control_plane() {
    let mut cp = ControlPlane::start("tour", &[]);
    cp.wait_ready(Duration::from_secs(60));
    let cfg = cp.work_dir.join("kumactl-config");
    let cfg = cfg.as_path();

    let out = ok(&kumactl(
        cfg,
        &[
            "config",
            "control-planes",
            "add",
            "--name",
            "e2e",
            "--address",
            &cp.api(),
        ],
    ));
    assert!(
        out.contains("switched active Control Plane to \"e2e\""),
        "{out}"
    );
    assert!(ok(&kumactl(cfg, &["config", "control-planes", "list"])).contains(&cp.api()));

    let file = cp.work_dir.join("demo.yaml");
    std::fs::write(&file, MESH_WITH_POLICY).unwrap();
    let file = file.to_str().unwrap();
    let dry = ok(&kumactl(
        cfg,
        &["apply", "-f", file, "-v", "svc=backend", "--dry-run"],
    ));
    assert!(dry.contains("name: timeout-backend"), "{dry}");
    assert!(
        ok(&kumactl(cfg, &["get", "meshes"])).lines().count() == 2,
        "dry run must not create anything"
    );

    let out = ok(&kumactl(cfg, &["apply", "-f", file, "-v", "svc=backend"]));
    assert!(
        out.contains("mesh/demo created") && out.contains("meshtimeout/timeout-backend created"),
        "{out}"
    );
    let out = ok(&kumactl(cfg, &["apply", "-f", file, "-v", "svc=backend"]));
    assert!(
        out.contains("meshtimeout/timeout-backend configured"),
        "{out}"
    );

    let meshes = ok(&kumactl(cfg, &["get", "meshes"]));
    let header: Vec<&str> = meshes.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "mTLS", "LOCALITY", "ZONEEGRESS", "AGE"],
        "Kuma's columns"
    );
    assert!(
        meshes
            .lines()
            .any(|l| l.starts_with("demo") && l.contains("builtin/ca-1")),
        "{meshes}"
    );
    assert!(
        meshes
            .lines()
            .any(|l| l.starts_with("default") && l.contains("off")),
        "{meshes}"
    );

    let timeouts = ok(&kumactl(cfg, &["get", "meshtimeouts", "-m", "demo"]));
    assert!(timeouts.contains("timeout-backend"), "{timeouts}");
    let filtered = ok(&kumactl(
        cfg,
        &[
            "get",
            "meshtimeouts",
            "-m",
            "demo",
            "--label",
            "team=nobody",
        ],
    ));
    assert!(!filtered.contains("timeout-backend"), "{filtered}");

    let yaml = ok(&kumactl(
        cfg,
        &[
            "get",
            "meshtimeout",
            "timeout-backend",
            "-m",
            "demo",
            "-o",
            "yaml",
        ],
    ));
    assert!(
        yaml.contains("requestTimeout: 2s") && yaml.contains("team: payments"),
        "{yaml}"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&kumactl(
        cfg,
        &["get", "meshtimeouts", "-m", "demo", "-o", "json"],
    )))
    .unwrap();
    // The user's policy beside the two MeshTimeouts every new mesh gets.
    assert_eq!(json["total"], 3, "{json}");
    let mut names: Vec<&str> = json["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "mesh-gateways-timeout-all-demo",
            "mesh-timeout-all-demo",
            "timeout-backend"
        ]
    );

    // Errors from the API come back readable, one field per line, with a non-zero exit.
    let bad = "type: MeshTimeout\nname: bad\nmesh: demo\nspec:\n  targetRef:\n    kind: Foo\n  to:\n  - targetRef:\n      kind: Mesh\n    default:\n      idleTimeout: soon\n";
    let o = kumactl_with_stdin(cfg, &["apply", "-f", "-"], Some(bad));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("spec.targetRef.kind: value is not supported"),
        "{err}"
    );
    assert!(err.contains("spec.to[0].default.idleTimeout"), "{err}");
    let o = kumactl(cfg, &["get", "meshtimeout", "nope", "-m", "demo"]);
    assert!(
        !o.status.success() && stderr(&o).contains("Not found"),
        "{}",
        stderr(&o)
    );
    let o = kumactl(cfg, &["get", "unicorns"]);
    assert!(
        !o.status.success() && stderr(&o).contains("unknown resource type"),
        "{}",
        stderr(&o)
    );

    let inspect = ok(&kumactl(cfg, &["inspect", "meshes"]));
    assert!(
        inspect.lines().any(|l| l.starts_with("demo")
            && l.contains("MeshTimeout=3 MeshRetry=1 MeshCircuitBreaker=1")),
        "{inspect}"
    );
    let dps = ok(&kumactl(cfg, &["inspect", "dataplanes"]));
    assert!(dps.starts_with("MESH"), "{dps}");

    let token = ok(&kumactl(
        cfg,
        &[
            "generate",
            "user-token",
            "--name",
            "jane",
            "--group",
            "ops",
            "--valid-for",
            "1h",
        ],
    ));
    assert_eq!(token.trim().split('.').count(), 3, "not a JWT: {token}");
    let o = kumactl(
        cfg,
        &[
            "generate",
            "user-token",
            "--name",
            "jane",
            "--valid-for",
            "forever",
        ],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("validFor"),
        "{}",
        stderr(&o)
    );

    // A second control-plane entry using the token, then switching back and forth.
    let o = kumactl(
        cfg,
        &[
            "config",
            "control-planes",
            "add",
            "--name",
            "as-jane",
            "--address",
            &cp.api(),
            "--auth-type",
            "tokens",
            "--auth-conf",
            &format!("token={}", token.trim()),
        ],
    );
    ok(&o);
    assert!(ok(&kumactl(cfg, &["get", "meshes"])).contains("demo"));
    ok(&kumactl(
        cfg,
        &["config", "control-planes", "switch", "--name", "e2e"],
    ));
    ok(&kumactl(
        cfg,
        &["config", "control-planes", "remove", "--name", "as-jane"],
    ));
    let o = kumactl(
        cfg,
        &["config", "control-planes", "switch", "--name", "as-jane"],
    );
    assert!(!o.status.success());

    let out = ok(&kumactl(
        cfg,
        &["delete", "meshtimeout", "timeout-backend", "-m", "demo"],
    ));
    assert!(out.contains("deleted"), "{out}");
    assert!(
        !kumactl(
            cfg,
            &["delete", "meshtimeout", "timeout-backend", "-m", "demo"]
        )
        .status
        .success()
    );

    // The HTTPS listener with its generated certificate: refused unverified, fine with --skip-verify.
    let https = format!("https://localhost:{}", cp.https_port);
    let o = kumactl(
        cfg,
        &[
            "config",
            "control-planes",
            "add",
            "--name",
            "tls",
            "--address",
            &https,
        ],
    );
    assert!(
        !o.status.success(),
        "an unverifiable certificate must be refused"
    );
    ok(&kumactl(
        cfg,
        &[
            "config",
            "control-planes",
            "add",
            "--name",
            "tls",
            "--address",
            &https,
            "--skip-verify",
        ],
    ));
    assert!(ok(&kumactl(cfg, &["get", "meshes"])).contains("demo"));
    ok(&kumactl(
        cfg,
        &["config", "control-planes", "switch", "--name", "e2e"],
    ));

    let version = ok(&kumactl(cfg, &["version"]));
    assert!(version.contains("Server: Kuma"), "{version}");

    // Diagnostics.
    assert_eq!(http_status(cp.diag_port, "/healthy"), Some(200));
    let status = cp
        .terminate(Duration::from_secs(15))
        .expect("kuma-cp did not stop on SIGTERM");
    assert!(
        status.success(),
        "kuma-cp exited with {status} on SIGTERM:\n{}",
        cp.logs()
    );
}

#[test]
fn metrics_and_readiness() {
    let mut cp = ControlPlane::start("metrics", &[("KUMA_DEFAULTS_SKIP_MESH_CREATION", "true")]);
    cp.wait_ready(Duration::from_secs(60));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::blocking::Client::new();
    let meshes: serde_json::Value = http
        .get(format!("{}/meshes", cp.api()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        meshes["total"], 0,
        "KUMA_DEFAULTS_SKIP_MESH_CREATION must skip the default mesh"
    );
    let metrics = http
        .get(format!("http://127.0.0.1:{}/metrics", cp.diag_port))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for family in [
        "api_server_http_requests_total",
        "api_server_http_request_duration_seconds",
        "store_operations_total",
        "store_operation_duration_seconds",
        "resources_count",
        "leader",
    ] {
        assert!(
            metrics.contains(family),
            "{family} missing from /metrics:\n{metrics}"
        );
    }
    assert!(
        // user-token and zone-token signing keys, admin token, inter-CP and dp-server CAs
        metrics.contains("resources_count{resource_type=\"GlobalSecret\"} 5"),
        "{metrics}"
    );
}

#[test]
fn bad_configuration_stops_start_up_naming_the_key() {
    for (env, key) in [
        (
            ("KUMA_API_SERVER_HTTP_PORT", "not-a-port"),
            "KUMA_API_SERVER_HTTP_PORT",
        ),
        (("KUMA_MODE", "galactic"), "KUMA_MODE"),
        (
            ("KUMA_API_SERVER_HTTP_PROT", "5681"),
            "KUMA_API_SERVER_HTTP_PROT",
        ),
    ] {
        let mut cp = ControlPlane::start("badcfg", &[env]);
        let status = cp.child.wait().unwrap();
        assert!(!status.success());
        assert!(
            cp.logs().contains(key),
            "error does not name {key}:\n{}",
            cp.logs()
        );
    }
}

/// A Kuma user's environment starts kuma-cp: Kuma's documented universal variables, and Kuma
/// keys kuma-cp does not implement yet, each named in one warning.
#[test]
fn kumas_own_environment_starts_with_a_warning_per_unsupported_key() {
    let mut cp = ControlPlane::start(
        "kumaenv",
        &[
            ("KUMA_MODE", "standalone"),
            ("KUMA_ENVIRONMENT", "universal"),
            (
                "KUMA_XDS_SERVER_DATAPLANE_CONFIGURATION_REFRESH_INTERVAL",
                "1s",
            ),
            ("KUMA_DP_SERVER_HDS_ENABLED", "false"),
            ("KUMA_STORE_POSTGRES_TLS_ROOT_CERT_PATH", ""),
        ],
    );
    cp.wait_ready(Duration::from_secs(60));
    let logs = cp.logs();
    for key in [
        "KUMA_XDS_SERVER_DATAPLANE_CONFIGURATION_REFRESH_INTERVAL",
        "KUMA_DP_SERVER_HDS_ENABLED",
    ] {
        let warnings = logs
            .lines()
            .filter(|l| l.contains("not supported yet") && l.contains(key))
            .count();
        assert_eq!(warnings, 1, "{key}:\n{logs}");
    }
    // Kuma's name for a key kuma-cp implements is read, not warned about.
    assert!(
        !logs.contains("KUMA_STORE_POSTGRES_TLS_ROOT_CERT_PATH"),
        "{logs}"
    );
}

#[test]
fn a_taken_port_is_reported() {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let mut cp = ControlPlane::start("port", &[("KUMA_API_SERVER_HTTP_PORT", &port)]);
    let status = cp.child.wait().unwrap();
    assert!(!status.success());
    assert!(cp.logs().contains("apiServer.http.port"), "{}", cp.logs());
}
