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

#[test]
fn a_zone_whose_only_way_out_is_a_forward_proxy_federates_through_it() {
    let lan = Lan::create(1);
    // Global and the proxy listen on the host's side of the namespace's link.
    let host_side = lan.gateway();
    let dir = store::testing::temp_dir("kuma-e2e-federation");
    // Global's KDS certificate names the address zones dial; the zone finds it in its host's
    // trust store (SSL_CERT_FILE), where a public CA's root would be.
    let cert = security::tls::self_signed(std::slice::from_ref(&host_side)).unwrap();
    let (cert_file, key_file) = (dir.join("kds.crt"), dir.join("kds.key"));
    std::fs::write(&cert_file, &cert.cert_pem).unwrap();
    std::fs::write(&key_file, &cert.key_pem).unwrap();
    let kds_port = e2e::free_port();
    let mut global_cp = ControlPlane::start(
        "global",
        &[
            ("KUMA_MODE", "global"),
            ("KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT", &kds_port.to_string()),
            (
                "KUMA_MULTIZONE_GLOBAL_KDS_TLS_CERT_FILE",
                &cert_file.display().to_string(),
            ),
            (
                "KUMA_MULTIZONE_GLOBAL_KDS_TLS_KEY_FILE",
                &key_file.display().to_string(),
            ),
        ],
    );
    global_cp.wait_ready(Duration::from_secs(60));
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
