#![allow(clippy::unwrap_used)]
//! The transparent proxy end to end, in network namespaces: `kumactl install transparent-proxy`
//! in a client's and a backend's namespace, kuma-dp with real Envoy in each, and an unmodified
//! client (`curl http://backend.svc.mesh.local:8080`, run as another user than the proxy) that
//! reaches the backend's generated MeshService by its hostname: DNS answered by the client's
//! kuma-dp, the VIP's connection redirected to Envoy's outbound passthrough listener, handed to
//! the MeshService's outbound, and redirected again into the backend's inbound; a MeshHTTPRoute
//! to the MeshService changes the call; a MeshExternalService (an HTTPS server outside the mesh,
//! TLS originated by the sidecar) and a MeshPassthrough domain are reached the same way; in
//! another test, a client in zone-1 reaches zone-2's service and a MeshMultiZoneService by
//! their hostnames through zone-2's ingress, then, once zone-1 has an egress, a
//! MeshExternalService through that egress (as in Kuma) and, with `routing.zoneEgress`, the
//! cross-zone calls too (the egress's Envoy stats show it). `install` refuses a second time and changes
//! nothing; `uninstall` leaves the namespace's iptables as they were (`iptables-save` before
//! and after). Needs root, `ip`, `iptables`, `curl`, `setpriv` and `envoy`; outside CI the
//! test is skipped, loudly, without them.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use e2e::netns::Lan;
use e2e::proxies::{Cp, Proc, envoy, within};
use e2e::{ControlPlane, binary, free_port};
use serde_json::json;

/// A server outside the mesh (`python3 -c EXTERNAL_SERVER ADDRESS PORT tls|plain [CERT KEY]`)
/// answering every GET with the Host it was asked for.
const EXTERNAL_SERVER: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("external says hello to " + self.headers.get("Host", "")).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
s = http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), H)
if sys.argv[3] == "tls":
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain(sys.argv[4], sys.argv[5])
    s.socket = c.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#;

/// The UID curl runs as: not the proxy's (root), so iptables redirects it.
const CLIENT_UID: &str = "65534";

fn run_in(lan: &Lan, host: usize, program: &str, args: &[&str]) -> Output {
    lan.command(host, Path::new(program))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

/// The namespace's nat and filter tables as `iptables-save` prints them, without what
/// changes by itself (comments with the time, packet counters).
fn iptables_state(lan: &Lan, host: usize) -> String {
    let out = run_in(lan, host, "iptables-save", &[]);
    assert!(out.status.success(), "iptables-save: {}", e2e::stderr(&out));
    e2e::stdout(&out)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.split_once(" [") {
            Some((chain, _)) if l.starts_with(':') => chain.to_string(),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn kumactl_in(lan: &Lan, host: usize, args: &[&str]) -> Output {
    lan.command(host, &binary("kumactl"))
        .args(args)
        .output()
        .expect("running kumactl")
}

/// kuma-dp inside `host`'s namespace for a Dataplane at the host's address with one inbound
/// of `service` on `port`, behind a transparent proxy; its control plane (on the test's side)
/// is reached at the LAN's gateway address.
fn kuma_dp_in(
    lan: &Lan,
    host: usize,
    cp: &Cp,
    name: &str,
    service: &str,
    port: u16,
    token: &Path,
) -> Proc {
    let gateway = lan.gateway();
    let yaml = format!(
        "type: Dataplane\nname: {name}\nmesh: default\nnetworking:\n  address: {}\n  inbound:\n  - port: {port}\n    tags:\n      kuma.io/service: {service}\n      kuma.io/protocol: http\n  transparentProxying:\n    redirectPortInbound: 15006\n    redirectPortOutbound: 15001\n",
        lan.ip(host)
    );
    let file = cp.dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    let mut cmd = lan.command(host, &binary("kuma-dp"));
    cmd.arg("run")
        .args(["--cp-address", &format!("https://{gateway}:{}", cp.dp_port)])
        .arg("--ca-cert-file")
        .arg(&cp.ca)
        .arg("--dataplane-token-file")
        .arg(token)
        .arg("--dataplane-file")
        .arg(&file)
        .args(["--admin-port", &free_port().to_string()])
        .arg("--binary-path")
        .arg(&cp.envoy)
        .arg("--config-dir")
        .arg(cp.dir.join(format!("envoy-{name}")))
        .args(["--drain-time", "1s"]);
    Proc::start(&mut cmd, cp.dir.join(format!("kuma-dp-{name}.log")))
}

#[test]
fn an_unmodified_client_reaches_a_mesh_service_by_hostname_through_the_transparent_proxy() {
    let test = "an_unmodified_client_reaches_a_mesh_service_by_hostname";
    let Some(envoy) = envoy(test) else {
        return;
    };
    if !tools_present(test) {
        return;
    }
    let lan = Lan::create(2);
    let (backend, client) = (0, 1);
    let gateway = lan.gateway();
    for host in [backend, client] {
        // Applications connect to VIPs, which need a route to be dialled at all.
        let out = run_in(
            &lan,
            host,
            "ip",
            &["route", "add", "default", "via", &gateway],
        );
        assert!(out.status.success(), "{}", e2e::stderr(&out));
        // Rules of the host's own, in the tables the transparent proxy uses: they must be
        // there, unchanged, after uninstall.
        let own: [&[&str]; 2] = [
            &[
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-p",
                "tcp",
                "-d",
                "192.0.2.1",
                "--dport",
                "9",
                "-j",
                "RETURN",
            ],
            &["-A", "INPUT", "-p", "tcp", "--dport", "9", "-j", "ACCEPT"],
        ];
        for rule in own {
            let out = run_in(&lan, host, "iptables", rule);
            assert!(out.status.success(), "{}", e2e::stderr(&out));
        }
    }

    let mut cp = ControlPlane::start(
        "transparent-proxy",
        &[("KUMA_INTER_CP_CATALOG_INSTANCE_ADDRESS", gateway.as_str())],
    );
    cp.wait_ready(Duration::from_secs(60));
    let env = Cp::of(&cp, envoy);
    env.put(
        "/meshes/default",
        json!({"type": "Mesh", "name": "default", "meshServices": {"mode": "Exclusive"}}),
    );

    // The backend: an HTTP echo on 8080 behind its own transparent proxy (inbound redirected).
    let mut echo_cmd = lan.command(backend, &binary("kuma-tcp-echo"));
    echo_cmd.args(["--http", "--port", "8080", "--instance", "backend-1"]);
    let echo = Proc::start(&mut echo_cmd, env.dir.join("echo-backend-1.log"));
    let before_backend = iptables_state(&lan, backend);
    let install = [
        "install",
        "transparent-proxy",
        "--kuma-dp-user",
        "0",
        "--redirect-all-dns-traffic",
        "--exclude-inbound-ports",
        "22",
    ];
    let out = kumactl_in(&lan, backend, &install);
    assert!(out.status.success(), "install: {}", e2e::stderr(&out));
    let backend_dp = kuma_dp_in(
        &lan,
        backend,
        &env,
        "backend-1",
        "backend",
        8080,
        &env.token("backend-1", "default"),
    );

    // The client: nothing listens on its inbound; it only calls out.
    let before_client = iptables_state(&lan, client);
    let out = kumactl_in(&lan, client, &install);
    assert!(out.status.success(), "install: {}", e2e::stderr(&out));
    let installed = iptables_state(&lan, client);
    assert_ne!(installed, before_client);
    let client_dp = kuma_dp_in(
        &lan,
        client,
        &env,
        "client-1",
        "client",
        9090,
        &env.token("client-1", "default"),
    );

    let logs = || {
        format!(
            "{}\n--- kuma-dp backend-1:\n{}\n--- kuma-dp client-1:\n{}\n--- echo:\n{}",
            cp.logs(),
            backend_dp.logs(),
            client_dp.logs(),
            echo.logs()
        )
    };
    let took = curl_until(
        &lan,
        client,
        Duration::from_secs(60),
        "http://backend.svc.mesh.local:8080/",
        "backend-1",
        || true,
        logs,
    );
    println!("first answer through both transparent proxies {took:?} after kuma-dp started");
    // Envoy carried it (the VIP has no route but through it): the request has the id Envoy's
    // connection managers add.
    let (ok, said) = curl_as_client(&lan, client, &["http://backend.svc.mesh.local:8080/"]);
    assert!(ok && said.contains("x-request-id"), "{said}");

    // A policy keyed to the MeshService applies to its outbound: a MeshHTTPRoute to
    // `backend` adds a header the backend echoes back.
    env.put(
        "/meshes/default/meshhttproutes/backend-route",
        json!({"type": "MeshHTTPRoute", "name": "backend-route", "mesh": "default",
            "spec": {"targetRef": {"kind": "Mesh"},
                "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                    "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                        "default": {"filters": [{"type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"add": [{"name": "x-routed", "value": "by-mesh-service"}]}}]}}]}]}}),
    );
    within(
        Duration::from_secs(30),
        "the MeshHTTPRoute to the MeshService takes effect",
        || {
            let (ok, said) = curl_as_client(&lan, client, &["http://backend.svc.mesh.local:8080/"]);
            ok && said.contains("by-mesh-service")
        },
        logs,
    );

    // A MeshExternalService: an HTTPS server outside the mesh (on the test's side of the LAN)
    // the client calls in plain HTTP by its hostname; its sidecar originates the TLS and
    // verifies the server against the CA the service names.
    let (cert_file, key_and_cert) =
        e2e::proxies::certificate(&env.dir, "external.example", "external");
    let key_file = env.dir.join("external-key.pem");
    let https_port = free_port();
    let server = EXTERNAL_SERVER;
    let mut https_cmd = Command::new("python3");
    https_cmd
        .args(["-c", server, &gateway, &https_port.to_string(), "tls"])
        .arg(&cert_file)
        .arg(&key_file);
    let _https = Proc::start(&mut https_cmd, env.dir.join("external-https.log"));
    let ca = std::fs::read_to_string(&cert_file).unwrap();
    assert!(key_and_cert.contains("BEGIN"));
    env.put(
        "/meshes/default/meshexternalservices/external",
        json!({"type": "MeshExternalService", "name": "external", "mesh": "default",
            "spec": {"match": {"type": "HostnameGenerator", "port": 80, "protocol": "http"},
                "endpoints": [{"address": gateway, "port": https_port}],
                "tls": {"enabled": true, "verification": {
                    "serverName": "external.example", "caCert": {"inlineString": ca}}}}}),
    );
    // Answered over TLS by the external server.
    curl_until(
        &lan,
        client,
        Duration::from_secs(30),
        "http://external.extsvc.mesh.local/",
        "external says hello",
        || true,
        logs,
    );

    // MeshPassthrough: of two plain HTTP names on one server outside the mesh, only the one
    // it matches gets through.
    let http_port = free_port();
    let mut http_cmd = Command::new("python3");
    http_cmd.args(["-c", server, &gateway, &http_port.to_string(), "plain"]);
    let _http = Proc::start(&mut http_cmd, env.dir.join("external-http.log"));
    env.put(
        "/meshes/default/meshpassthroughs/allow-one",
        json!({"type": "MeshPassthrough", "name": "allow-one", "mesh": "default",
            "spec": {"targetRef": {"kind": "Mesh"}, "default": {"passthroughMode": "Matched",
                "appendMatch": [{"type": "Domain", "value": "allowed.example", "port": http_port, "protocol": "http"}]}}}),
    );
    let via = |name: &str| -> (bool, String) {
        let resolve = format!("{name}:{http_port}:{gateway}");
        let url = format!("http://{name}:{http_port}/");
        curl_as_client(&lan, client, &["--resolve", &resolve, &url])
    };
    within(
        Duration::from_secs(30),
        "the matched domain passes through, the other does not",
        || {
            let (allowed_ok, allowed) = via("allowed.example");
            let (other_ok, other) = via("other.example");
            let denied = !other_ok || !other.contains("external says hello");
            allowed_ok && allowed.contains("says hello to allowed.example") && denied
        },
        logs,
    );

    // A second install finds the rules and changes nothing.
    let out = kumactl_in(&lan, client, &install);
    assert!(!out.status.success(), "a second install must refuse");
    assert!(
        e2e::stderr(&out).contains("already installed"),
        "{}",
        e2e::stderr(&out)
    );
    assert_eq!(iptables_state(&lan, client), installed);

    // Uninstall restores both namespaces exactly.
    drop(client_dp);
    drop(backend_dp);
    for (host, before) in [(client, &before_client), (backend, &before_backend)] {
        let out = kumactl_in(&lan, host, &["uninstall", "transparent-proxy"]);
        assert!(out.status.success(), "uninstall: {}", e2e::stderr(&out));
        assert_eq!(&iptables_state(&lan, host), before, "after uninstall");
    }
    // Nothing left to remove: says so, still succeeds.
    let out = kumactl_in(&lan, client, &["uninstall", "transparent-proxy"]);
    assert!(out.status.success());
    assert!(
        e2e::stdout(&out).contains("nothing changed"),
        "{}",
        e2e::stdout(&out)
    );
}

/// curl with `args` as [`CLIENT_UID`] in `host`'s namespace: whether it succeeded, and what
/// it printed.
fn curl_as_client(lan: &Lan, host: usize, args: &[&str]) -> (bool, String) {
    let mut all = vec![
        "--reuid",
        CLIENT_UID,
        "--regid",
        CLIENT_UID,
        "--clear-groups",
        "curl",
        "-sS",
        "-m",
        "3",
    ];
    all.extend_from_slice(args);
    let out = run_in(lan, host, "setpriv", &all);
    let said = format!("{}{}", e2e::stdout(&out), e2e::stderr(&out));
    (out.status.success(), said)
}

/// Curls `url` as the client in `host` until its answer contains `expect` and `also()` holds,
/// within `limit`; how long that took. Fails with the last answer and `logs()` otherwise.
fn curl_until(
    lan: &Lan,
    host: usize,
    limit: Duration,
    url: &str,
    expect: &str,
    also: impl Fn() -> bool,
    logs: impl Fn() -> String,
) -> Duration {
    let last = std::cell::RefCell::new(String::new());
    within(
        limit,
        &format!("curl {url} answered with {expect:?}"),
        || {
            let (ok, said) = curl_as_client(lan, host, &[url]);
            let answered = ok && said.contains(expect);
            *last.borrow_mut() = said;
            answered && also()
        },
        || format!("{url}: last curl: {}\n{}", last.borrow(), logs()),
    )
}

/// Whether the tools the namespace tests need are here (CI must have them).
fn tools_present(test: &str) -> bool {
    for tool in ["ip", "iptables-save", "iptables-restore", "curl", "setpriv"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            assert!(std::env::var("CI").is_err(), "CI must have {tool}");
            eprintln!("SKIPPED {test}: {tool} is not installed");
            return false;
        }
    }
    true
}

#[test]
fn an_unmodified_client_reaches_another_zones_service_and_a_multi_zone_service_by_hostname() {
    use e2e::proxies::{ProxyType, start_global, start_zone, start_zone_with};
    let test = "an_unmodified_client_reaches_another_zones_service";
    let Some(envoy) = envoy(test) else {
        return;
    };
    if !tools_present(test) {
        return;
    }
    let lan = Lan::create(1);
    let client = 0;
    let gateway = lan.gateway();
    let out = run_in(
        &lan,
        client,
        "ip",
        &["route", "add", "default", "via", &gateway],
    );
    assert!(out.status.success(), "{}", e2e::stderr(&out));

    let (global_cp, kds_port) = start_global();
    let global = Cp::api_only(&global_cp, envoy.clone());
    let zone1_cp = start_zone_with(
        "zone-1",
        kds_port,
        &global.zone_token("zone-1", "cp"),
        &[("KUMA_INTER_CP_CATALOG_INSTANCE_ADDRESS", gateway.as_str())],
    );
    let zone2_cp = start_zone("zone-2", kds_port, &global.zone_token("zone-2", "cp"));
    let (zone1, zone2) = (Cp::of(&zone1_cp, envoy.clone()), Cp::of(&zone2_cp, envoy));
    // Cross-zone traffic rides the mesh's mTLS.
    global.put(
        "/meshes/default",
        json!({"type": "Mesh", "name": "default", "meshServices": {"mode": "Exclusive"},
            "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}}),
    );
    let base_logs = || {
        format!(
            "--- global:\n{}\n--- zone-1:\n{}\n--- zone-2:\n{}",
            global_cp.logs(),
            zone1_cp.logs(),
            zone2_cp.logs()
        )
    };
    for zone in [&zone1, &zone2] {
        within(
            Duration::from_secs(20),
            "the mesh CA arrives from global",
            || {
                zone.get("/meshes/default/secrets/default.ca-builtin-cert-ca-1")
                    .is_some()
            },
            base_logs,
        );
    }

    // Zone-2: backend and an ingress on the LAN's gateway address, which the client's
    // namespace reaches.
    let ingress_port = free_port();
    let ingress_yaml = e2e::proxies::ingress_yaml(&gateway, ingress_port);
    let ingress = zone2.kuma_dp(
        ProxyType::Ingress,
        "ingress-2",
        &ingress_yaml,
        &global.zone_token("zone-2", "ingress"),
    );
    let app_port = free_port();
    let _app = zone2.echo("backend-zone-2", app_port, Some("zone-2"));
    let backend = zone2.sidecar(
        "backend-zone-2",
        "backend",
        app_port,
        None,
        &global.token("backend-zone-2", "default"),
    );
    // The port the generated MeshService has: the backend's inbound port.
    let mut service_port = 0;
    within(
        Duration::from_secs(30),
        "zone-2's backend MeshService on zone-1 with its cross-zone hostname",
        || {
            let synced = zone1
                .get("/meshes/default/meshservices")
                .and_then(|l| l["items"].as_array().cloned())
                .unwrap_or_default()
                .into_iter()
                .find(|s| s["labels"]["kuma.io/display-name"] == "backend");
            let Some(s) = synced else {
                return false;
            };
            service_port = s["spec"]["ports"][0]["port"].as_u64().unwrap_or(0) as u16;
            s["status"]["addresses"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|h| h["hostname"] == "backend.svc.zone-2.mesh.local")
            })
        },
        base_logs,
    );
    global.put(
        "/meshes/default/meshmultizoneservices/backend-mz",
        json!({"type": "MeshMultiZoneService", "name": "backend-mz", "mesh": "default",
            "spec": {"selector": {"meshService": {"matchLabels": {"kuma.io/display-name": "backend"}}},
                "ports": [{"port": service_port, "appProtocol": "http"}]}}),
    );

    // Zone-1: the client in its namespace behind a transparent proxy.
    let out = kumactl_in(
        &lan,
        client,
        &[
            "install",
            "transparent-proxy",
            "--kuma-dp-user",
            "0",
            "--redirect-all-dns-traffic",
        ],
    );
    assert!(out.status.success(), "install: {}", e2e::stderr(&out));
    let client_dp = kuma_dp_in(
        &lan,
        client,
        &zone1,
        "client-1",
        "client",
        9090,
        &global.token("client-1", "default"),
    );
    let logs = || {
        format!(
            "{}\n--- kuma-dp client-1:\n{}\n--- ingress-2:\n{}\n--- backend-zone-2:\n{}",
            base_logs(),
            client_dp.logs(),
            ingress.logs(),
            backend.logs()
        )
    };
    // Another zone's MeshService, and a MeshMultiZoneService, by their hostnames.
    let cross_zone = [
        (
            format!("http://backend.svc.zone-2.mesh.local:{service_port}/"),
            format!("default_backend__zone-2_msvc_{service_port}"),
        ),
        (
            format!("http://backend-mz.mzsvc.mesh.local:{service_port}/"),
            format!("default_backend-mz___mzsvc_{service_port}"),
        ),
    ];
    for (url, _) in &cross_zone {
        let limit = Duration::from_secs(60);
        curl_until(&lan, client, limit, url, "backend-zone-2", || true, logs);
    }

    // Zone-1 gets an egress (on the LAN's gateway, which the client's namespace reaches).
    // A MeshExternalService now leaves through it, as in Kuma: the egress terminates the
    // mesh's mTLS with its own certificate of the mesh and originates the external TLS.
    let egress_port = free_port();
    let egress_yaml = e2e::proxies::egress_yaml(&gateway, egress_port);
    let egress = zone1.kuma_dp(
        ProxyType::Egress,
        "egress-1",
        &egress_yaml,
        &global.zone_token("zone-1", "egress"),
    );
    let egress_path = "/zoneegresses/egress-1";
    let logs = || format!("{}\n--- egress-1:\n{}", logs(), egress.logs());
    let env_dir = zone1.dir.clone();
    let (cert_file, _) = e2e::proxies::certificate(&env_dir, "external.example", "external");
    let https_port = free_port();
    let mut https_cmd = Command::new("python3");
    https_cmd
        .args([
            "-c",
            EXTERNAL_SERVER,
            &gateway,
            &https_port.to_string(),
            "tls",
        ])
        .arg(&cert_file)
        .arg(env_dir.join("external-key.pem"));
    let _https = Proc::start(&mut https_cmd, env_dir.join("external-https.log"));
    let ca = std::fs::read_to_string(&cert_file).unwrap();
    global.put(
        "/meshes/default/meshexternalservices/external",
        json!({"type": "MeshExternalService", "name": "external", "mesh": "default",
            "spec": {"match": {"type": "HostnameGenerator", "port": 80, "protocol": "http"},
                "endpoints": [{"address": gateway, "port": https_port}],
                "tls": {"enabled": true, "verification": {
                    "serverName": "external.example", "caCert": {"inlineString": ca}}}}}),
    );
    let through_egress = |cluster: &str| {
        zone1
            .stat(egress_path, &format!("cluster.{cluster}.upstream_cx_total"))
            .is_some_and(|n| n > 0)
    };
    curl_until(
        &lan,
        client,
        Duration::from_secs(60),
        "http://external.extsvc.mesh.local/",
        "external says hello",
        || through_egress("default_external___extsvc_80"),
        logs,
    );

    // With routing.zoneEgress the cross-zone calls leave through the egress too, which
    // passes them on to zone-2's ingress by their SNI.
    global.put(
        "/meshes/default",
        json!({"type": "Mesh", "name": "default", "meshServices": {"mode": "Exclusive"},
            "routing": {"zoneEgress": true},
            "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}}),
    );
    for (url, cluster) in &cross_zone {
        let limit = Duration::from_secs(60);
        let via_egress = || through_egress(cluster);
        curl_until(&lan, client, limit, url, "backend-zone-2", via_egress, logs);
    }

    // The MeshMultiZoneService's status on zone-1 lists the MeshService it matches.
    let mz = zone1
        .get("/meshes/default/meshmultizoneservices")
        .and_then(|l| l["items"].as_array()?.first().cloned())
        .expect("the MeshMultiZoneService on zone-1");
    assert_eq!(mz["status"]["meshServices"][0]["zone"], "zone-2", "{mz}");
    assert_eq!(mz["status"]["meshServices"][0]["name"], "backend", "{mz}");

    let out = kumactl_in(&lan, client, &["uninstall", "transparent-proxy"]);
    assert!(out.status.success(), "uninstall: {}", e2e::stderr(&out));
}
