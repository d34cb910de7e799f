#![allow(clippy::unwrap_used)]
//! What another host may do, checked from another host: global and zone-1 run in their own
//! network namespaces, and this test calls them from the bridge's address (not local to
//! either, so `localhostIsAdmin` does not apply). The API: anonymous reads, no anonymous
//! writes, secrets and tokens for admins only, the bootstrap admin token only on its own host,
//! a user token's group deciding what it may do, oversized bodies refused. KDS: a zone with a
//! wrong or another zone's token refused. ADS: a proxy with another proxy's token refused.
//! Inter-CP: a client without a certificate from the CA refused. Slow clients (slowloris on
//! the API, sockets that never finish a TLS handshake on KDS, ADS and inter-CP) cut off while
//! other clients are served. Needs root, `ip`, `iptables`, `curl` and `envoy`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use e2e::netns::Lan;
use e2e::proxies::{Cp, ProxyType, envoy, within};
use e2e::{ControlPlane, free_port};
use serde_json::{Value, json};
use tokio::time::Instant;

/// A request from this host (the bridge's address): status and body (JSON, or the text).
fn call(method: &str, url: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let client = e2e::blocking_http(Duration::from_secs(10));
    let mut request = client.request(method.parse().unwrap(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let r = request
        .send()
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = r.status().as_u16();
    let text = r.text().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A request with curl over HTTP/2 (gRPC ports negotiate only `h2`), accepting any server
/// certificate: these checks are about what the server refuses, not whom the client trusts.
/// The status, or curl's error.
fn curl_h2(method: &str, url: &str) -> Result<u16, String> {
    let out = std::process::Command::new("curl")
        .args([
            "-sk",
            "--http2",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            method,
        ])
        .arg(url)
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    if out.status.success() && code > 0 {
        Ok(code)
    } else {
        Err(format!(
            "curl exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Opens `n` connections to `address` that each send `prefix` and then, when `trickle`, one
/// more header line a second (a slowloris), or nothing at all. Returns, per connection, how
/// long the server kept it open (`None`: still open after `limit`).
fn slow_clients(
    address: &str,
    n: usize,
    prefix: &'static [u8],
    trickle: bool,
    limit: Duration,
) -> Vec<std::thread::JoinHandle<Option<Duration>>> {
    (0..n)
        .map(|_| {
            let address = address.to_string();
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut socket = TcpStream::connect(&address).ok()?;
                socket
                    .set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let _ = socket.write_all(prefix);
                let mut buffer = [0u8; 4096];
                while start.elapsed() < limit {
                    if trickle && socket.write_all(b"x-slow: 1\r\n").is_err() {
                        return Some(start.elapsed());
                    }
                    match socket.read(&mut buffer) {
                        // The server closed it (after an error response, if any).
                        Ok(0) => return Some(start.elapsed()),
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => return Some(start.elapsed()),
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                None
            })
        })
        .collect()
}

/// Waits for [`slow_clients`]' connections; fails unless every one was cut off. The longest.
fn all_cut_off(what: &str, clients: Vec<std::thread::JoinHandle<Option<Duration>>>) -> Duration {
    let times: Vec<Option<Duration>> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let open = times.iter().filter(|t| t.is_none()).count();
    assert_eq!(open, 0, "{what}: {open} slow connections still open");
    times.into_iter().flatten().max().unwrap_or_default()
}

#[test]
fn another_host_gets_only_what_it_may() {
    let test = "another_host_gets_only_what_it_may";
    let Some(envoy) = envoy(test) else {
        return;
    };
    let lan = Lan::create(2);
    let (global_ip, zone_ip) = (lan.ip(0), lan.ip(1));
    let (kds_port, global_intercp) = (free_port(), free_port());
    let mut global = ControlPlane::start_on(
        "sec-global",
        &[
            ("KUMA_MODE", "global"),
            ("KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT", &kds_port.to_string()),
            ("KUMA_INTER_CP_SERVER_PORT", &global_intercp.to_string()),
            ("KUMA_INTER_CP_CATALOG_INSTANCE_ADDRESS", &global_ip),
        ],
        Some((&lan, 0)),
    );
    global.wait_ready(Duration::from_secs(60));
    let api = global.api();
    assert!(api.contains(&global_ip), "{api}");

    // ---- API ----
    let (status, _) = call("GET", &format!("{api}/meshes"), None, None);
    assert_eq!(status, 200, "anonymous reads, as Kuma allows them");
    let timeout = json!({"type": "MeshTimeout", "mesh": "default", "name": "t",
        "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"},
            "default": {"connectionTimeout": "3s"}}]}});
    let policy = format!("{api}/meshes/default/meshtimeouts/t");
    let (status, body) = call("PUT", &policy, None, Some(&timeout));
    assert_eq!(status, 401, "an anonymous write: {body}");
    assert_eq!(
        body["title"], "Unauthenticated",
        "Kuma's error shape: {body}"
    );
    for path in ["/globalsecrets", "/meshes/default/secrets"] {
        let (status, body) = call("GET", &format!("{api}{path}"), None, None);
        assert_eq!(status, 403, "anonymous {path}: {body}");
    }
    for path in ["/tokens/user", "/tokens/dataplane", "/tokens/zone"] {
        let (status, _) = call("POST", &format!("{api}{path}"), None, Some(&json!({})));
        assert_eq!(status, 401, "anonymous {path}");
    }
    let (status, body) = call("GET", &format!("{api}/meshes"), Some("not.a.token"), None);
    assert_eq!(status, 401, "a forged token: {body}");

    // The bootstrap admin token, read on global's own host (where the caller is admin).
    let api_port = api.rsplit(':').next().unwrap();
    let read = lan
        .command(0, Path::new("curl"))
        .args(["-sf"])
        .arg(format!(
            "http://127.0.0.1:{api_port}/globalsecrets/admin-user-token"
        ))
        .output()
        .unwrap();
    assert!(read.status.success(), "curl on global's host: {read:?}");
    let secret: Value = serde_json::from_slice(&read.stdout).unwrap();
    let admin = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(secret["data"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let admin = Some(admin.trim());
    let (status, body) = call("PUT", &policy, admin, Some(&timeout));
    assert_eq!(
        status, 201,
        "the admin token from another host writes: {body}"
    );
    let (status, _) = call("GET", &format!("{api}/globalsecrets"), admin, None);
    assert_eq!(status, 200, "and reads secrets");
    let (status, body) = call(
        "GET",
        &format!("{api}/globalsecrets/admin-user-token"),
        admin,
        None,
    );
    assert_eq!(
        status, 403,
        "but the bootstrap admin token only on its host: {body}"
    );

    // A user token: its group decides. A member of team-a reads and writes policies, but
    // neither secrets, nor tokens, nor proxies' Envoy configuration.
    let (status, token) = call(
        "POST",
        &format!("{api}/tokens/user"),
        admin,
        Some(&json!({"name": "alice", "groups": ["team-a"], "validFor": "1h"})),
    );
    assert_eq!(status, 200, "{token}");
    let alice = token.as_str().unwrap().trim().to_string();
    let alice = Some(alice.as_str());
    let (status, _) = call("GET", &format!("{api}/meshes"), alice, None);
    assert_eq!(status, 200);
    let (status, body) = call("PUT", &policy, alice, Some(&timeout));
    assert_eq!(status, 200, "alice updates the policy: {body}");
    let refused = [
        ("GET", "/globalsecrets"),
        ("GET", "/meshes/default/secrets"),
        ("POST", "/tokens/dataplane"),
        ("POST", "/tokens/user"),
        ("GET", "/meshes/default/dataplanes/web-1/xds"),
    ];
    for (method, path) in refused {
        let (status, body) = call(method, &format!("{api}{path}"), alice, Some(&json!({})));
        assert_eq!(status, 403, "alice {method} {path}: {body}");
    }
    // A body over the limit is refused with a reason, not a dropped connection.
    let huge = json!({"type": "Mesh", "name": "huge", "x": "a".repeat(5 * 1024 * 1024)});
    let (status, body) = call("PUT", &format!("{api}/meshes/huge"), admin, Some(&huge));
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("must not exceed"), "{body}");

    // ---- KDS: zone-1 with its token; zones with a wrong token or another's refused ----
    let zone_token = |zone: &str| {
        let (status, token) = call(
            "POST",
            &format!("{api}/tokens/zone"),
            admin,
            Some(&json!({"zone": zone, "scope": ["cp"], "validFor": "1h"})),
        );
        assert_eq!(status, 200, "{token}");
        token.as_str().unwrap().trim().to_string()
    };
    let zone1_token = zone_token("zone-1");
    let global_address = format!("grpcs://{global_ip}:{kds_port}");
    let start_zone = |name: &str, token: &str, host: Option<(&Lan, usize)>, address: &str| {
        ControlPlane::start_on(
            name,
            &[
                ("KUMA_MODE", "zone"),
                ("KUMA_MULTIZONE_ZONE_NAME", name),
                ("KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS", &global_address),
                ("KUMA_MULTIZONE_ZONE_KDS_TLS_SKIP_VERIFY", "true"),
                ("KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_INLINE", token),
                ("KUMA_INTER_CP_CATALOG_INSTANCE_ADDRESS", address),
            ],
            host,
        )
    };
    let mut zone1 = start_zone("zone-1", &zone1_token, Some((&lan, 1)), &zone_ip);
    zone1.wait_ready(Duration::from_secs(60));
    let zones_on_global = || {
        call("GET", &format!("{api}/zones+insights"), None, None).1["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|z| {
                (
                    z["name"].as_str().unwrap_or_default().to_string(),
                    z["online"] == true,
                )
            })
            .collect::<Vec<_>>()
    };
    within(
        Duration::from_secs(30),
        "zone-1 online on global",
        || zones_on_global() == [("zone-1".to_string(), true)],
        || format!("{:?}\n{}", zones_on_global(), zone1.logs()),
    );
    // From this host: one zone with zone-1's token under another name, one with garbage.
    let mut impostor = start_zone("zone-2", &zone1_token, None, "127.0.0.1");
    let mut forger = start_zone("zone-3", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln", None, "127.0.0.1");
    for (zone, cp) in [("zone-2", &mut impostor), ("zone-3", &mut forger)] {
        cp.wait_ready(Duration::from_secs(60));
        within(
            Duration::from_secs(30),
            &format!("{zone} told it is refused"),
            || cp.logs().contains("zone token refused"),
            || cp.logs(),
        );
    }
    assert_eq!(
        zones_on_global(),
        [("zone-1".to_string(), true)],
        "only zone-1 is on global"
    );

    // ---- ADS: a proxy with another proxy's token, or none, is refused ----
    let (status, web_token) = call(
        "POST",
        &format!("{api}/tokens/dataplane"),
        admin,
        Some(&json!({"name": "web-1", "mesh": "default"})),
    );
    assert_eq!(status, 200, "{web_token}");
    let proxies = Cp::of(&zone1, envoy);
    let dir = zone1.work_dir.join("rogue");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("web-1.token"), web_token.as_str().unwrap()).unwrap();
    std::fs::write(dir.join("empty.token"), "").unwrap();
    let db = "type: Dataplane\nmesh: default\nname: db-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: 5432\n    tags:\n      kuma.io/service: db\n";
    let rogue_proxy =
        |token: &str| proxies.kuma_dp(ProxyType::Dataplane, "db-1", db, &dir.join(token));
    for token in ["web-1.token", "empty.token"] {
        let proxy = std::cell::RefCell::new(rogue_proxy(token));
        within(
            Duration::from_secs(30),
            &format!("kuma-dp with {token} for db-1 refused"),
            || matches!(proxy.borrow_mut().child.try_wait(), Ok(Some(status)) if !status.success()),
            || proxy.borrow().logs(),
        );
        let log = proxy.borrow().logs();
        assert!(
            log.contains("401") || log.contains("403") || log.contains("token"),
            "{log}"
        );
    }
    let dataplanes = call(
        "GET",
        &format!(
            "http://{zone_ip}:{}/meshes/default/dataplanes",
            zone1.api_port
        ),
        None,
        None,
    )
    .1;
    assert_eq!(dataplanes["total"], 0, "no db-1 in zone-1: {dataplanes}");

    // ---- Inter-CP: only clients with a certificate from the CA ----
    assert!(
        TcpStream::connect((global_ip.as_str(), global_intercp)).is_ok(),
        "inter-CP listens (else the next check proves nothing)"
    );
    let intercp = curl_h2("GET", &format!("https://{global_ip}:{global_intercp}/"));
    assert!(
        intercp.is_err(),
        "inter-CP answered a client without a certificate: {intercp:?}"
    );

    // ---- Slow clients are cut off; the others are served meanwhile ----
    let limit = Duration::from_secs(30);
    let api_address = format!("{global_ip}:{api_port}");
    let slowloris = slow_clients(
        &api_address,
        20,
        b"GET /meshes HTTP/1.1\r\nHost: cp\r\n",
        true,
        limit,
    );
    let kds_idle = slow_clients(&format!("{global_ip}:{kds_port}"), 20, b"", false, limit);
    let ads_idle = slow_clients(
        &format!("{zone_ip}:{}", zone1.dp_port),
        20,
        b"",
        false,
        limit,
    );
    let intercp_idle = slow_clients(
        &format!("{global_ip}:{global_intercp}"),
        20,
        b"",
        false,
        limit,
    );
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let (status, _) = call("GET", &format!("{api}/meshes"), None, None);
    let api_meanwhile = started.elapsed();
    assert_eq!(status, 200);
    let started = Instant::now();
    let bootstrap = curl_h2(
        "POST",
        &format!("https://{zone_ip}:{}/bootstrap", zone1.dp_port),
    );
    let ads_meanwhile = started.elapsed();
    assert!(bootstrap.is_ok(), "a new ADS-port client: {bootstrap:?}");
    let started = Instant::now();
    let kds = curl_h2("POST", &format!("https://{global_ip}:{kds_port}/"));
    let kds_meanwhile = started.elapsed();
    assert!(kds.is_ok(), "a new KDS client: {kds:?}");
    let cut = [
        ("API (slowloris)", all_cut_off("API", slowloris)),
        ("KDS (no TLS handshake)", all_cut_off("KDS", kds_idle)),
        ("ADS (no TLS handshake)", all_cut_off("ADS", ads_idle)),
        (
            "inter-CP (no TLS handshake)",
            all_cut_off("inter-CP", intercp_idle),
        ),
    ];
    println!(
        "meanwhile: API answered in {api_meanwhile:?}, the ADS port in {ads_meanwhile:?}, KDS in {kds_meanwhile:?}"
    );
    for (what, longest) in cut {
        println!("{what}: 20 slow connections, the last cut off after {longest:?}");
        assert!(longest <= Duration::from_secs(15), "{what}: {longest:?}");
    }
    assert!(api_meanwhile < Duration::from_secs(2), "{api_meanwhile:?}");
    assert!(
        zones_on_global().contains(&("zone-1".to_string(), true)),
        "zone-1 stayed connected through it"
    );

    // ---- Oversized gRPC messages: refused by their length, before they are read ----
    // ADS reads the first request before the token (the node names the proxy), so an anonymous
    // one is enough; KDS checks the zone token first, so the sender is a zone with a valid one.
    let zone3_token = zone_token("zone-3");
    let ads = format!(
        "https://{zone_ip}:{}/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources",
        zone1.dp_port
    );
    let kds = format!(
        "https://{global_ip}:{kds_port}/kuma.mesh.v1alpha1.KDSSyncService/ZoneToGlobalSync"
    );
    let oversized = [
        ("ADS", ads.as_str(), 5 << 20, vec![]),
        (
            "KDS",
            kds.as_str(),
            11 << 20,
            vec![
                "client-id: zone-3".to_string(),
                format!("authorization: Bearer {zone3_token}"),
            ],
        ),
    ];
    for (what, url, size, headers) in oversized {
        let started = Instant::now();
        let (status, message) = grpc_oversized(url, size, &headers);
        println!(
            "{what}: a message of {} MiB refused in {:?}: grpc-status {status}, {message}",
            size >> 20,
            started.elapsed()
        );
        assert!(
            status == 11 && message.contains("too large"),
            "{what}: an oversized message answered grpc-status {status}: {message}"
        );
    }
    let started = Instant::now();
    let bootstrap = curl_h2(
        "POST",
        &format!("https://{zone_ip}:{}/bootstrap", zone1.dp_port),
    );
    println!(
        "after them, a new ADS-port client served in {:?}",
        started.elapsed()
    );
    assert!(bootstrap.is_ok(), "{bootstrap:?}");
    assert!(
        zones_on_global().contains(&("zone-1".to_string(), true)),
        "zone-1 stayed connected through the oversized messages"
    );
}

/// Starts one gRPC message declaring `size` bytes (the frame header, then the first 16 KiB, within HTTP/2's first flow-control window) to
/// `url` with curl over HTTP/2 and `headers`: the `grpc-status` and `grpc-message` the server
/// answered. The server refuses by the declared length, without reading the rest (a client
/// that sends it all anyway has its stream reset).
fn grpc_oversized(url: &str, size: usize, headers: &[String]) -> (u32, String) {
    let file = std::env::temp_dir().join(format!("kuma-e2e-grpc-{size}-{}", std::process::id()));
    let mut frame = Vec::with_capacity(5 + 16 * 1024);
    frame.push(0u8);
    frame.extend_from_slice(&u32::try_from(size).unwrap().to_be_bytes());
    frame.resize(5 + 16 * 1024, 0x0a);
    std::fs::write(&file, frame).unwrap();
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-sk",
        "--http2",
        "-m",
        "20",
        "-v",
        "-o",
        "/dev/null",
        "-X",
        "POST",
    ])
    .args(["-H", "content-type: application/grpc", "-H", "te: trailers"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(url)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let verbose = String::from_utf8_lossy(&out.stderr);
    let header = |name: &str| {
        verbose
            .lines()
            .filter_map(|l| l.strip_prefix("< "))
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let status = header("grpc-status:")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // grpc-message is percent-encoded.
    let message = header("grpc-message:")
        .map(|m| m.replace("%20", " "))
        .unwrap_or_else(|| verbose.chars().take(600).collect());
    (status, message)
}
