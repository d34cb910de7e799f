//! Harness for end-to-end tests: builds and finds the workspace binaries, picks free loopback
//! ports, and runs control planes as child processes that are killed when dropped.

pub mod browser;
pub mod netns;
pub mod otlp;
pub mod proxies;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// `target/<profile>`, derived from the running executable: a test lives in
/// `target/<profile>/deps/`, a binary such as kds-bench in `target/<profile>/`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable dir");
    match dir.file_name() {
        Some(d) if d == "deps" => dir.parent().expect("target dir").to_path_buf(),
        _ => dir.to_path_buf(),
    }
}

/// Path to a workspace binary, built once per test process so it is never stale.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet"]);
        for package in ["kuma-cp", "kumactl", "kuma-dp", "kuma-tcp-echo"] {
            cmd.args(["-p", package]);
        }
        if cfg!(feature = "etcd") {
            cmd.args(["--features", "kuma-cp/etcd"]);
        }
        if target_dir().file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build");
        assert!(status.success(), "cargo build of the binaries failed");
    });
    let path = target_dir().join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

pub use store::testing::free_port;

/// A blocking HTTP client whose requests time out after `timeout`.
pub fn blocking_http(timeout: Duration) -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
        .expect("an HTTP client with default settings builds")
}

/// The number following flag `name` on a bench's command line.
pub fn flag_number(args: &mut impl Iterator<Item = String>, name: &str) -> anyhow::Result<usize> {
    use anyhow::Context as _;
    args.next()
        .with_context(|| format!("{name} needs a value"))?
        .parse()
        .with_context(|| format!("{name} must be a number"))
}

/// Percentile `p` (0 to 1) of sorted samples, in milliseconds; NaN when there are none.
pub fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

pub struct ControlPlane {
    pub child: Child,
    pub api_port: u16,
    pub https_port: u16,
    pub diag_port: u16,
    pub dp_port: u16,
    /// The monitoring assignment server (MADS, `/http_sd`).
    pub mads_port: u16,
    pub log: PathBuf,
    pub work_dir: PathBuf,
    /// Where the test reaches its ports: loopback, or its network namespace's address.
    pub ip: String,
    namespace: Option<String>,
    env: Vec<(String, String)>,
}

/// `kuma-cp run` with exactly `env`, in `namespace` when given, appending to `log`.
fn spawn_cp(namespace: Option<&str>, env: &[(String, String)], log: &Path) -> Child {
    let mut cmd = match namespace {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]).arg(binary("kuma-cp"));
            cmd
        }
        None => Command::new(binary("kuma-cp")),
    };
    let out = std::fs::File::options()
        .append(true)
        .open(log)
        .expect("log file");
    let err = out.try_clone().expect("log file");
    cmd.arg("run")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawning kuma-cp")
}

impl ControlPlane {
    /// Starts `kuma-cp run` with fresh ports and the given extra environment.
    pub fn start(name: &str, env: &[(&str, &str)]) -> ControlPlane {
        ControlPlane::start_on(name, env, None)
    }

    /// As [`ControlPlane::start`], inside `host`'s network namespace of a [`netns::Lan`] when
    /// given (the test then reaches it at that host's address).
    pub fn start_on(
        name: &str,
        env: &[(&str, &str)],
        host: Option<(&netns::Lan, usize)>,
    ) -> ControlPlane {
        let work_dir = std::env::temp_dir().join(format!(
            "kuma-e2e-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&work_dir).expect("work dir");
        let log = work_dir.join("kuma-cp.log");
        std::fs::File::create(&log).expect("log file");
        let api_port = free_port();
        let diag_port = free_port();
        let https_port = free_port();
        let dp_port = free_port();
        let mads_port = free_port();
        let (namespace, ip) = match host {
            Some((lan, host)) => (Some(lan.namespace(host).to_string()), lan.ip(host)),
            None => (None, "127.0.0.1".to_string()),
        };
        let mut all_env: Vec<(String, String)> = [
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("HOME", work_dir.display().to_string()),
            ("KUMA_API_SERVER_HTTP_PORT", api_port.to_string()),
            ("KUMA_API_SERVER_HTTPS_PORT", https_port.to_string()),
            ("KUMA_DIAGNOSTICS_SERVER_PORT", diag_port.to_string()),
            ("KUMA_DP_SERVER_PORT", dp_port.to_string()),
            (
                "KUMA_MONITORING_ASSIGNMENT_SERVER_PORT",
                mads_port.to_string(),
            ),
            ("KUMA_INTER_CP_SERVER_PORT", free_port().to_string()),
            (
                "KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT",
                free_port().to_string(),
            ),
            ("KUMA_GENERAL_WORK_DIR", work_dir.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        all_env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let child = spawn_cp(namespace.as_deref(), &all_env, &log);
        ControlPlane {
            child,
            api_port,
            https_port,
            diag_port,
            dp_port,
            mads_port,
            log,
            work_dir,
            ip,
            namespace,
            env: all_env,
        }
    }

    /// Starts it again, after [`ControlPlane::sigkill`], with the same ports, work directory,
    /// host and settings (its log goes on in the same file).
    pub fn restart(&mut self) {
        self.child = spawn_cp(self.namespace.as_deref(), &self.env, &self.log);
    }

    pub fn api(&self) -> String {
        format!("http://{}:{}", self.ip, self.api_port)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/ready` answers 200, or panics with the log.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("kuma-cp exited early with {status}:\n{}", self.logs());
            }
            if http_status_at(&self.ip, self.diag_port, "/ready") == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("kuma-cp not ready in {timeout:?}:\n{}", self.logs());
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl ControlPlane {
    /// Whether `/metrics` says this replica leads (`leader 1`).
    pub fn is_leader(&self) -> bool {
        http_body(self.diag_port, "/metrics")
            .is_some_and(|m| m.lines().any(|l| l.trim() == "leader 1"))
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status and body of a GET (chunked framing is left in; fine for line-based checks).
pub fn http_response(port: u16, path: &str) -> Option<(u16, String)> {
    let raw = http_get(port, path)?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Minimal HTTP GET over a raw socket so readiness polling needs no client library.
fn http_get(port: u16, path: &str) -> Option<String> {
    http_get_at("127.0.0.1", port, path)
}

fn http_get_at(ip: &str, port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect((ip, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    Some(buf)
}

pub fn http_status(port: u16, path: &str) -> Option<u16> {
    http_status_at("127.0.0.1", port, path)
}

fn http_status_at(ip: &str, port: u16, path: &str) -> Option<u16> {
    http_get_at(ip, port, path)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The body of a 200 answer (chunked framing is left in; fine for line-based checks).
pub fn http_body(port: u16, path: &str) -> Option<String> {
    let raw = http_get(port, path)?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The active targets a Prometheus on `port` last scraped successfully (its
/// `/api/v1/targets` entries), none while it does not answer.
pub fn prometheus_healthy_targets(port: u16) -> Vec<serde_json::Value> {
    // Prometheus answers in chunks, which `http_response` does not read.
    let body: serde_json::Value = crate::proxies::client()
        .get(format!(
            "http://127.0.0.1:{port}/api/v1/targets?state=active"
        ))
        .send()
        .ok()
        .and_then(|r| r.json().ok())
        .unwrap_or_default();
    body["data"]["activeTargets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["health"] == "up")
        .cloned()
        .collect()
}

/// Writes a kumactl config file at `config_file` pointing at the API `address` as `name`.
pub fn kumactl_config(config_file: &Path, name: &str, address: &str) {
    let add = kumactl(
        config_file,
        &[
            "config",
            "control-planes",
            "add",
            "--name",
            name,
            "--address",
            address,
        ],
    );
    assert!(add.status.success(), "kumactl config: {}", stderr(&add));
}

/// Runs kumactl with its own config file and returns the output.
pub fn kumactl(config_file: &Path, args: &[&str]) -> Output {
    kumactl_with_stdin(config_file, args, None)
}

pub fn kumactl_with_stdin(config_file: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(binary("kumactl"));
    cmd.arg("--config-file").arg(config_file).args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning kumactl");
    if let Some(input) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        pipe.write_all(input.as_bytes()).expect("writing stdin");
    }
    child.wait_with_output().expect("kumactl output")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `KUMA_STORE_*` for a database on a local test Postgres (trust authentication).
pub fn postgres_env(port: u16, user: &str, db: &str) -> Vec<(String, String)> {
    vec![
        ("KUMA_STORE_TYPE".into(), "postgres".into()),
        ("KUMA_STORE_POSTGRES_HOST".into(), "127.0.0.1".into()),
        ("KUMA_STORE_POSTGRES_PORT".into(), port.to_string()),
        ("KUMA_STORE_POSTGRES_USER".into(), user.into()),
        (
            "KUMA_STORE_POSTGRES_PASSWORD".into(),
            "not-needed-with-trust".into(),
        ),
        ("KUMA_STORE_POSTGRES_DB_NAME".into(), db.into()),
        ("KUMA_STORE_POSTGRES_CONNECTION_TIMEOUT".into(), "2".into()),
        (
            "KUMA_INTER_CP_CATALOG_INSTANCE_ADDRESS".into(),
            "127.0.0.1".into(),
        ),
    ]
}

/// `KUMA_STORE_RAFT_*` for `n` kuma-cp replicas forming one raft store on loopback ports, each
/// with its data directory under `dir`: the environment of replica `i` is element `i`.
pub fn raft_replicas_env(n: usize, dir: &Path, token: &str) -> Vec<Vec<(String, String)>> {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let peers = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    (0..n)
        .map(|i| {
            let data_dir = dir.join(format!("raft-node-{}", i + 1));
            [
                ("KUMA_STORE_TYPE", "raft".to_string()),
                ("KUMA_STORE_RAFT_NODE_ID", (i + 1).to_string()),
                ("KUMA_STORE_RAFT_PEERS", peers.clone()),
                ("KUMA_STORE_RAFT_PORT", ports[i].to_string()),
                ("KUMA_STORE_RAFT_DATA_DIR", data_dir.display().to_string()),
                ("KUMA_STORE_RAFT_JOIN_TOKEN", token.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
        })
        .collect()
}

/// `kuma-cp migrate up` with exactly `env`.
pub fn migrate(env: &[(String, String)]) -> Output {
    let mut cmd = Command::new(binary("kuma-cp"));
    cmd.args(["migrate", "up"]).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running kuma-cp migrate up")
}
