//! Federation as a hosted manager needs it: a zone whose only way out is the company's forward
//! proxy dials global through it, and trusts global's certificate through its host's trust
//! store (no `rootCaFile`), as it would trust a publicly signed endpoint. The zone runs in its
//! own network namespace with every other egress refused; the proxy is Debian's tinyproxy with
//! basic auth. Needs root, `ip`, `iptables` and `tinyproxy`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e::ControlPlane;
use e2e::netns::Lan;
use e2e::proxies::{Cp, within};
use serde_json::json;

/// Debian's tinyproxy in the foreground, killed with the test.
struct Tinyproxy {
    child: Child,
    log: PathBuf,
}

impl Tinyproxy {
    fn start(dir: &Path, listen: &str, port: u16, user: &str, password: &str) -> Tinyproxy {
        let config = dir.join("tinyproxy.conf");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListen {listen}\nTimeout 600\nMaxClients 50\nLogLevel Connect\n\
                 BasicAuth {user} {password}\n"
            ),
        )
        .expect("writing tinyproxy's configuration");
        let log = dir.join("tinyproxy.log");
        let out = std::fs::File::create(&log).expect("tinyproxy's log file");
        let child = Command::new("tinyproxy")
            .args(["-d", "-c"])
            .arg(&config)
            .stdout(Stdio::from(out.try_clone().expect("tinyproxy's log file")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("tinyproxy (Debian's tinyproxy package; scripts/test.sh installs it)");
        let proxy = Tinyproxy { child, log };
        within(
            Duration::from_secs(10),
            "tinyproxy listening",
            || std::net::TcpStream::connect((listen, port)).is_ok(),
            || proxy.logs(),
        );
        proxy
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A global whose KDS certificate names `host` (zones find it in their host's trust store,
/// `SSL_CERT_FILE`, where a public CA's root would be): the control plane, its KDS port and
/// the certificate's file.
fn start_global(
    dir: &Path,
    host: &str,
    name: &str,
    env: &[(&str, &str)],
) -> (ControlPlane, u16, PathBuf) {
    let cert = security::tls::self_signed(&[host.to_string()]).expect("a KDS certificate");
    let (cert_file, key_file) = (dir.join("kds.crt"), dir.join("kds.key"));
    std::fs::write(&cert_file, &cert.cert_pem).expect("writing the certificate");
    std::fs::write(&key_file, &cert.key_pem).expect("writing the key");
    let kds_port = e2e::free_port();
    let (port, cert_path, key_path) = (
        kds_port.to_string(),
        cert_file.display().to_string(),
        key_file.display().to_string(),
    );
    let mut all = vec![
        ("KUMA_MODE", "global"),
        ("KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT", port.as_str()),
        (
            "KUMA_MULTIZONE_GLOBAL_KDS_TLS_CERT_FILE",
            cert_path.as_str(),
        ),
        ("KUMA_MULTIZONE_GLOBAL_KDS_TLS_KEY_FILE", key_path.as_str()),
    ];
    all.extend_from_slice(env);
    let mut cp = ControlPlane::start(name, &all);
    cp.wait_ready(Duration::from_secs(60));
    (cp, kds_port, cert_file)
}

#[test]
fn a_zone_whose_only_way_out_is_a_forward_proxy_federates_through_it() {
    let lan = Lan::create(1);
    // Global and the proxy listen on the host's side of the namespace's link.
    let host_side = lan.gateway();
    let dir = store::testing::temp_dir("kuma-e2e-federation");
    let (global_cp, kds_port, cert_file) = start_global(&dir, &host_side, "global", &[]);
    let global = Cp::api_only(&global_cp, PathBuf::new());
    let token = std::fs::read_to_string(global.zone_token("zone-1", "cp")).unwrap();

    let proxy_port = e2e::free_port();
    let proxy = Tinyproxy::start(&dir, &host_side, proxy_port, "zone-1", "s3cret");
    lan.only_egress_to(0, &host_side, proxy_port);
    let direct = lan
        .command(0, Path::new("timeout"))
        .args(["5", "bash", "-c"])
        .arg(format!("exec 3<>/dev/tcp/{host_side}/{kds_port}"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        !direct.success(),
        "the zone's namespace reaches global directly; the test would prove nothing"
    );

    let global_address = format!("grpcs://{host_side}:{kds_port}");
    let cert_path = cert_file.display().to_string();
    let start_zone = |proxy_url: &str| {
        let mut zone = ControlPlane::start_on(
            "zone-1",
            &[
                ("KUMA_MODE", "zone"),
                ("KUMA_MULTIZONE_ZONE_NAME", "zone-1"),
                ("KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS", &global_address),
                ("KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_INLINE", token.trim()),
                ("SSL_CERT_FILE", &cert_path),
                ("HTTPS_PROXY", proxy_url),
                ("NO_PROXY", "localhost,127.0.0.1"),
            ],
            Some((&lan, 0)),
        );
        zone.wait_ready(Duration::from_secs(60));
        zone
    };
    let shown_proxy = format!("http://{host_side}:{proxy_port}");

    // Wrong credentials: the zone says which proxy refused and why, never the password, and
    // keeps serving its own API meanwhile.
    let mut zone_cp = start_zone(&format!(
        "http://zone-1:wrong-pass@{host_side}:{proxy_port}"
    ));
    within(
        Duration::from_secs(30),
        "the zone logs the proxy's refusal",
        || {
            let logs = zone_cp.logs();
            logs.contains(&format!("forward proxy {shown_proxy} refused CONNECT"))
                && logs.contains("the proxy refused the credentials in the proxy URL")
        },
        || format!("{}\n--- tinyproxy:\n{}", zone_cp.logs(), proxy.logs()),
    );
    assert!(!zone_cp.logs().contains("wrong-pass"), "{}", zone_cp.logs());
    let zone = Cp::api_only(&zone_cp, PathBuf::new());
    assert!(
        zone.get("/meshes").is_some(),
        "the zone's API answers while global is out of reach"
    );
    assert!(
        global.get("/zones/zone-1").is_none(),
        "zone-1 got past the proxy"
    );
    zone_cp.sigkill();

    let zone_cp = start_zone(&format!("http://zone-1:s3cret@{host_side}:{proxy_port}"));
    let zone = Cp::api_only(&zone_cp, PathBuf::new());
    let logs = || {
        format!(
            "--- global:\n{}\n--- zone-1:\n{}\n--- tinyproxy:\n{}",
            global_cp.logs(),
            zone_cp.logs(),
            proxy.logs()
        )
    };
    within(
        Duration::from_secs(30),
        "the default mesh reaches zone-1 through the proxy",
        || zone.get("/meshes/default").is_some(),
        logs,
    );
    global.put(
        "/meshes/default/meshtimeouts/through-the-proxy",
        json!({
            "type": "MeshTimeout", "mesh": "default", "name": "through-the-proxy",
            "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"},
                "default": {"connectionTimeout": "3s"}}]}
        }),
    );
    within(
        Duration::from_secs(30),
        "global's policy reaches zone-1",
        || {
            zone.get("/meshes/default/meshtimeouts")
                .is_some_and(|list| {
                    list["items"].as_array().is_some_and(|items| {
                        items
                            .iter()
                            .any(|p| p["labels"]["kuma.io/display-name"] == "through-the-proxy")
                    })
                })
        },
        logs,
    );
    // And the zone's side goes up the same tunnel: global sees it online.
    within(
        Duration::from_secs(30),
        "global sees zone-1 online",
        || {
            global
                .get("/zones+insights/zone-1")
                .is_some_and(|z| z["online"] == true)
        },
        logs,
    );
    let proxied = proxy.logs();
    assert!(
        proxied.contains(&format!("CONNECT {host_side}:{kds_port}")),
        "tinyproxy carried no tunnel to global:\n{proxied}"
    );
}

/// The manager's management API, as its admin calls it from the manager's host.
struct Manager {
    api: String,
}

impl Manager {
    /// POSTs `body`, retrying while the control plane's keys are still being created (5xx).
    fn post(&self, path: &str, body: serde_json::Value) -> (u16, String) {
        e2e::proxies::post_until_not_5xx(&format!("{}{path}", self.api), &body)
    }

    fn create(&self, name: &str) -> String {
        let (status, body) = self.post("/v0/mesh/control-planes", json!({"name": name}));
        assert_eq!(status, 201, "{body}");
        let cp: serde_json::Value = serde_json::from_str(&body).expect("a control plane");
        assert_eq!(cp["name"], name);
        cp["id"].as_str().expect("its id").to_string()
    }

    fn token(&self, id: &str, what: &str, body: serde_json::Value) -> String {
        let (status, token) = self.post(&format!("/v0/mesh/control-planes/{id}/{what}"), body);
        assert_eq!(status, 200, "{what}: {token}");
        token
    }

    /// A request to control plane `id`'s own API with `token`: status and body.
    fn call(
        &self,
        method: reqwest::Method,
        id: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = e2e::proxies::client().request(
            method,
            format!("{}/v0/mesh/control-planes/{id}/api{path}", self.api),
        );
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().expect("a control plane's API");
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(serde_json::Value::Null))
    }
}

/// The display names of the MeshTimeouts a zone has in its default mesh.
fn timeouts(zone: &Cp) -> Vec<String> {
    zone.get("/meshes/default/meshtimeouts")
        .and_then(|list| {
            list["items"].as_array().map(|items| {
                items
                    .iter()
                    .filter_map(|p| p["labels"]["kuma.io/display-name"].as_str())
                    .map(str::to_string)
                    .collect()
            })
        })
        .unwrap_or_default()
}

#[test]
fn a_hosted_manager_keeps_its_control_planes_apart() {
    let lan = Lan::create(1);
    let host_side = lan.gateway();
    let dir = store::testing::temp_dir("kuma-e2e-hosted");
    let (manager_cp, kds_port, cert_file) = start_global(
        &dir,
        &host_side,
        "manager",
        &[("KUMA_MULTITENANCY_ENABLED", "true")],
    );
    let manager = Manager {
        api: manager_cp.api(),
    };
    let (a, b) = (manager.create("tenant-a"), manager.create("tenant-b"));
    assert_ne!(a, b);
    let (status, _) = manager.post("/v0/mesh/control-planes", json!({"name": "tenant-a"}));
    assert_eq!(status, 400, "a second control plane named tenant-a");
    let listed = e2e::proxies::client()
        .get(format!("{}/v0/mesh/control-planes", manager.api))
        .send()
        .unwrap()
        .json::<serde_json::Value>()
        .unwrap();
    assert_eq!(listed["meta"]["page"]["total"], 2, "{listed}");

    // Both control planes have a zone-1 and a zone-2: the same names, kept apart.
    let zone_token = |id: &str, zone: &str| {
        manager.token(
            id,
            "zone-tokens",
            json!({"zone": zone, "scope": ["cp"], "validFor": "24h"}),
        )
    };
    let proxy_port = e2e::free_port();
    let proxy = Tinyproxy::start(&dir, &host_side, proxy_port, "zone-1", "s3cret");
    lan.only_egress_to(0, &host_side, proxy_port);
    let global_address = format!("grpcs://{host_side}:{kds_port}");
    let cert_path = cert_file.display().to_string();
    let proxy_url = format!("http://zone-1:s3cret@{host_side}:{proxy_port}");
    let start_zone = |name: &str, token: &str, behind_proxy: bool| {
        let zone = name.rsplit_once('/').map_or(name, |(_, z)| z);
        let mut env = vec![
            ("KUMA_MODE", "zone"),
            ("KUMA_MULTIZONE_ZONE_NAME", zone),
            (
                "KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS",
                global_address.as_str(),
            ),
            ("KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_INLINE", token.trim()),
            ("SSL_CERT_FILE", cert_path.as_str()),
        ];
        if behind_proxy {
            env.extend([
                ("HTTPS_PROXY", proxy_url.as_str()),
                ("NO_PROXY", "localhost,127.0.0.1"),
            ]);
        }
        let mut cp = ControlPlane::start_on(
            &name.replace('/', "-"),
            &env,
            behind_proxy.then_some((&lan, 0)),
        );
        cp.wait_ready(Duration::from_secs(60));
        cp
    };
    let zones_cp = [
        start_zone("a/zone-1", &zone_token(&a, "zone-1"), true),
        start_zone("a/zone-2", &zone_token(&a, "zone-2"), false),
        start_zone("b/zone-1", &zone_token(&b, "zone-1"), false),
        start_zone("b/zone-2", &zone_token(&b, "zone-2"), false),
    ];
    let zones: Vec<Cp> = zones_cp
        .iter()
        .map(|cp| Cp::api_only(cp, PathBuf::new()))
        .collect();
    let (a_zones, b_zones) = (&zones[..2], &zones[2..]);
    let logs = || {
        let mut all = format!("--- manager:\n{}", manager_cp.logs());
        for (name, cp) in ["a/zone-1", "a/zone-2", "b/zone-1", "b/zone-2"]
            .iter()
            .zip(&zones_cp)
        {
            all.push_str(&format!("\n--- {name}:\n{}", cp.logs()));
        }
        all + "\n--- tinyproxy:\n" + &proxy.logs()
    };
    within(
        Duration::from_secs(60),
        "every zone has its control plane's default mesh",
        || zones.iter().all(|z| z.get("/meshes/default").is_some()),
        logs,
    );

    // kumactl against tenant A's API with A's personal access token applies a policy that
    // reaches A's zones only.
    let pat_a = manager.token(
        &a,
        "personal-access-tokens",
        json!({"name": "alice", "validFor": "1h"}),
    );
    let kumactl_config = dir.join("kumactl.yaml");
    let add = e2e::kumactl(
        &kumactl_config,
        &[
            "config",
            "control-planes",
            "add",
            "--name",
            "tenant-a",
            "--address",
            &format!("{}/v0/mesh/control-planes/{a}/api", manager.api),
            "--auth-type=tokens",
            "--auth-conf",
            &format!("token={}", pat_a.trim()),
        ],
    );
    assert!(add.status.success(), "{}", e2e::stderr(&add));
    let policy = "type: MeshTimeout\nmesh: default\nname: only-for-a\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n  - targetRef:\n      kind: Mesh\n    default:\n      connectionTimeout: 3s\n";
    let applied = e2e::kumactl_with_stdin(&kumactl_config, &["apply", "-f", "-"], Some(policy));
    assert!(applied.status.success(), "{}", e2e::stderr(&applied));
    let pat_b = manager.token(
        &b,
        "personal-access-tokens",
        json!({"name": "bob", "validFor": "1h"}),
    );
    let (status, body) = manager.call(
        reqwest::Method::PUT,
        &b,
        "/meshes/default/meshtimeouts/only-for-b",
        Some(pat_b.trim()),
        Some(json!({
            "type": "MeshTimeout", "mesh": "default", "name": "only-for-b",
            "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"},
                "default": {"connectionTimeout": "4s"}}]}
        })),
    );
    assert!(status == 201 || status == 200, "{status} {body}");
    within(
        Duration::from_secs(30),
        "each control plane's policy reaches its own zones",
        || {
            a_zones
                .iter()
                .all(|z| timeouts(z).contains(&"only-for-a".into()))
                && b_zones
                    .iter()
                    .all(|z| timeouts(z).contains(&"only-for-b".into()))
        },
        logs,
    );
    for z in a_zones {
        assert!(!timeouts(z).contains(&"only-for-b".into()), "{}", logs());
    }
    for z in b_zones {
        assert!(!timeouts(z).contains(&"only-for-a".into()), "{}", logs());
    }

    // A dataplane of B's zone-2 reaches B's API only.
    b_zones[1].put(
        "/meshes/default/dataplanes/web-b",
        json!({"type": "Dataplane", "mesh": "default", "name": "web-b",
            "networking": {"address": "10.9.9.9", "inbound": [{"port": 80,
                "tags": {"kuma.io/service": "web-b"}}]}}),
    );
    let dataplanes = |id: &str, token: &str| {
        let (status, list) = manager.call(
            reqwest::Method::GET,
            id,
            "/meshes/default/dataplanes",
            Some(token),
            None,
        );
        assert_eq!(status, 200, "{list}");
        list["total"].as_u64().unwrap_or(0)
    };
    within(
        Duration::from_secs(30),
        "B's dataplane reaches B's control plane",
        || dataplanes(&b, pat_b.trim()) == 1,
        logs,
    );
    assert_eq!(dataplanes(&a, pat_a.trim()), 0, "{}", logs());

    // Another control plane's token, or none, gets nothing; the zones' side is online on
    // each control plane, including the one behind the proxy.
    for (id, token) in [
        (&b, Some(pat_a.trim())),
        (&a, None),
        (&"no-such-cp".to_string(), Some(pat_a.trim())),
    ] {
        let (status, body) = manager.call(reqwest::Method::GET, id, "/meshes", token, None);
        assert_eq!(status, 401, "{body}");
    }
    within(
        Duration::from_secs(30),
        "A sees both its zones online",
        || {
            ["zone-1", "zone-2"].iter().all(|z| {
                manager
                    .call(
                        reqwest::Method::GET,
                        &a,
                        &format!("/zones+insights/{z}"),
                        Some(pat_a.trim()),
                        None,
                    )
                    .1["online"]
                    == true
            })
        },
        logs,
    );
    assert!(
        proxy
            .logs()
            .contains(&format!("CONNECT {host_side}:{kds_port}")),
        "{}",
        logs()
    );

    // Deleting B disconnects its zones, which are refused from then on; A is untouched.
    let deleted = e2e::proxies::client()
        .delete(format!("{}/v0/mesh/control-planes/{b}", manager.api))
        .send()
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    within(
        Duration::from_secs(30),
        "B's zones are refused",
        || {
            zones_cp[2..]
                .iter()
                .all(|z| z.logs().contains("does not exist on this manager"))
        },
        logs,
    );
    let (status, _) = manager.call(
        reqwest::Method::GET,
        &b,
        "/meshes",
        Some(pat_b.trim()),
        None,
    );
    assert_eq!(status, 401);
    assert!(
        a_zones
            .iter()
            .all(|z| timeouts(z).contains(&"only-for-a".into()))
    );
    let (status, _) = manager.call(
        reqwest::Method::GET,
        &a,
        "/meshes/default/meshtimeouts/only-for-a",
        Some(pat_a.trim()),
        None,
    );
    assert_eq!(status, 200);
}

/// What a load balancer in front of a manager's replicas does for the test: each connection
/// goes to the first replica that accepts it.
fn forward_to_first_live(backends: Vec<u16>) -> u16 {
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").expect("the forwarder's port");
    let port = listener.local_addr().expect("its address").port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let backends = backends.clone();
            std::thread::spawn(move || {
                let Some(server) = backends
                    .iter()
                    .find_map(|b| TcpStream::connect(("127.0.0.1", *b)).ok())
                else {
                    return;
                };
                let (Ok(mut client_in), Ok(mut server_in)) =
                    (client.try_clone(), server.try_clone())
                else {
                    return;
                };
                let (mut client_out, mut server_out) = (client, server);
                let up = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut client_in, &mut server_out);
                    let _ = server_out.shutdown(Shutdown::Both);
                });
                let _ = std::io::copy(&mut server_in, &mut client_out);
                let _ = client_out.shutdown(Shutdown::Both);
                let _ = up.join();
            });
        }
    });
    port
}

/// Two manager replicas on one Postgres, behind one address: the zone's replica is killed
/// with SIGKILL; the zone reconnects to the other, which serves the control plane (its API,
/// its KDS, and, once the dead replica's lease runs out, its leader work), and nothing is lost.
#[test]
fn a_hosted_managers_replicas_share_its_control_planes() {
    let Some(pg) = store::testing::postgres::TestPostgres::start() else {
        return;
    };
    let db = pg.create_database("hosted");
    let store_env = e2e::postgres_env(pg.port, store::testing::postgres::TEST_USER, &db);
    let migrated = e2e::migrate(&store_env);
    assert!(migrated.status.success(), "{}", e2e::stderr(&migrated));
    let dir = store::testing::temp_dir("kuma-e2e-hosted-ha");
    let cert = security::tls::self_signed(&["127.0.0.1".to_string()]).expect("a certificate");
    let (cert_file, key_file) = (dir.join("kds.crt"), dir.join("kds.key"));
    std::fs::write(&cert_file, &cert.cert_pem).expect("certificate");
    std::fs::write(&key_file, &cert.key_pem).expect("key");
    let (cert_path, key_path) = (
        cert_file.display().to_string(),
        key_file.display().to_string(),
    );
    let kds_ports = [e2e::free_port(), e2e::free_port()];
    let mut replicas: Vec<ControlPlane> = kds_ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let port = port.to_string();
            let mut env: Vec<(&str, &str)> = store_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            env.extend([
                ("KUMA_MODE", "global"),
                ("KUMA_MULTITENANCY_ENABLED", "true"),
                ("KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT", port.as_str()),
                (
                    "KUMA_MULTIZONE_GLOBAL_KDS_TLS_CERT_FILE",
                    cert_path.as_str(),
                ),
                ("KUMA_MULTIZONE_GLOBAL_KDS_TLS_KEY_FILE", key_path.as_str()),
            ]);
            let mut cp = ControlPlane::start(&format!("manager-{}", i + 1), &env);
            cp.wait_ready(Duration::from_secs(60));
            cp
        })
        .collect();
    let (first, second) = (
        Manager {
            api: replicas[0].api(),
        },
        Manager {
            api: replicas[1].api(),
        },
    );
    let id = first.create("tenant-a");
    // The second replica serves it too: it issues its tokens.
    let token = second.token(
        &id,
        "zone-tokens",
        json!({"zone": "zone-1", "scope": ["cp"], "validFor": "24h"}),
    );
    let pat = second.token(
        &id,
        "personal-access-tokens",
        json!({"name": "alice", "validFor": "1h"}),
    );
    let balancer = forward_to_first_live(kds_ports.to_vec());
    let global_address = format!("grpcs://127.0.0.1:{balancer}");
    let mut zone_cp = ControlPlane::start(
        "zone-1",
        &[
            ("KUMA_MODE", "zone"),
            ("KUMA_MULTIZONE_ZONE_NAME", "zone-1"),
            ("KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS", &global_address),
            ("KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_INLINE", token.trim()),
            ("SSL_CERT_FILE", &cert_path),
        ],
    );
    zone_cp.wait_ready(Duration::from_secs(60));
    let zone = Cp::api_only(&zone_cp, PathBuf::new());
    let logs = |replicas: &[ControlPlane]| {
        let mut all = String::new();
        for (i, r) in replicas.iter().enumerate() {
            all.push_str(&format!("--- manager-{}:\n{}\n", i + 1, r.logs()));
        }
        all + "--- zone-1:\n" + &zone_cp.logs()
    };
    let timeout_policy = |name: &str| {
        json!({
            "type": "MeshTimeout", "mesh": "default", "name": name,
            "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"},
                "default": {"connectionTimeout": "3s"}}]}
        })
    };
    let put = |manager: &Manager, path: &str, body: serde_json::Value| {
        let (status, answer) = manager.call(
            reqwest::Method::PUT,
            &id,
            path,
            Some(pat.trim()),
            Some(body),
        );
        assert!(
            status == 200 || status == 201,
            "PUT {path}: {status} {answer}"
        );
    };
    put(
        &first,
        "/meshes/default/meshtimeouts/before",
        timeout_policy("before"),
    );
    within(
        Duration::from_secs(60),
        "the policy written before the failure reaches the zone",
        || timeouts(&zone).contains(&"before".into()),
        || logs(&replicas),
    );

    replicas[0].sigkill();
    let survivor_get =
        |path: &str| second.call(reqwest::Method::GET, &id, path, Some(pat.trim()), None);
    put(
        &second,
        "/meshes/default/meshtimeouts/after",
        timeout_policy("after"),
    );
    zone.put(
        "/meshes/default/dataplanes/web",
        json!({"type": "Dataplane", "mesh": "default", "name": "web",
            "networking": {"address": "10.1.1.1", "inbound": [{"port": 80,
                "tags": {"kuma.io/service": "web"}}]}}),
    );
    within(
        Duration::from_secs(60),
        "the zone reconnects through the other replica and converges both ways",
        || {
            timeouts(&zone).contains(&"after".into())
                && survivor_get("/meshes/default/dataplanes").1["total"] == 1
        },
        || logs(&replicas),
    );
    // The leader work moved: a new mesh with builtin mTLS gets its CA from the survivor.
    put(
        &second,
        "/meshes/secure",
        json!({"type": "Mesh", "name": "secure", "mtls": {"enabledBackend": "ca-1",
            "backends": [{"name": "ca-1", "type": "builtin"}]}}),
    );
    within(
        Duration::from_secs(60),
        "the surviving replica creates the new mesh's CA",
        || {
            survivor_get("/meshes/secure/secrets").1["total"]
                .as_u64()
                .unwrap_or(0)
                >= 1
        },
        || logs(&replicas),
    );
    let (status, _) = survivor_get("/meshes/default/meshtimeouts/before");
    assert_eq!(status, 200, "{}", logs(&replicas));
    assert!(timeouts(&zone).contains(&"before".into()));
}
