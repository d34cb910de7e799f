#![allow(clippy::unwrap_used)]
//! The GUI in a real browser (Debian's headless chromium through chromedriver) against a
//! standalone control plane with a real sidecar: the home page's onboarding view with no proxy,
//! the proxy arriving live (no reload), links from the home page to the mesh, to the proxy, to
//! its Envoy configuration, the texts checked against the API, a filtered list, markup in a
//! resource shown as text, a narrow window, an unknown page. One screenshot per page under
//! `target/gui-screenshots/`. The second test runs the GUI on a global with two zones. Needs `envoy`, `chromium` and `chromedriver`; outside CI the test
//! is skipped, loudly, without them.

use std::path::PathBuf;
use std::time::Duration;

use e2e::browser::Browser;
use e2e::proxies::{Cp, ProxyType, TwoZones, envoy, ingress_yaml, start_two_zones};
use e2e::{ControlPlane, free_port};
use serde_json::json;

/// Where the screenshots go: the workspace's target directory (or `CARGO_TARGET_DIR`).
fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("gui-screenshots")
}

#[test]
fn the_gui_shows_the_mesh_and_follows_it_live_in_a_real_browser() {
    let test = "the_gui_shows_the_mesh_and_follows_it_live_in_a_real_browser";
    let Some(envoy) = envoy(test) else {
        return;
    };
    let mut cp = ControlPlane::start("gui", &[]);
    cp.wait_ready(Duration::from_secs(60));
    let env = Cp::of(&cp, envoy);
    let Some(browser) = Browser::start(test, &env.dir) else {
        return;
    };
    let shots = screenshots();
    let gui = format!("{}/gui", cp.api());
    let wait = Duration::from_secs(30);

    // No proxy yet: the onboarding view, with this control plane's commands.
    browser.open(&gui);
    browser.wait_for_text("Add a first data plane proxy", wait);
    // This control plane's own port and the CA file it wrote.
    let onboarding = browser.main_text();
    let run = format!(
        "kuma-dp run --cp-address https://127.0.0.1:{} --ca-cert-file {} ",
        cp.dp_port,
        cp.work_dir.join("dp-server-ca.pem").display()
    );
    assert!(onboarding.contains(&run), "{run}\n{onboarding}");
    browser.screenshot(&shots.join("home-onboarding.png"));

    // A real sidecar connects: the page shows it online without being reloaded.
    browser.run("window.notReloaded = true; return null");
    let _web = env.echo_behind_sidecar("web-1", "web", None, &env.token("web-1", "default"));
    let took = browser.wait_for_text("Data plane proxies online\n1 / 1", wait);
    println!("the new proxy showed online {took:?} after kuma-dp started");
    assert_eq!(
        browser.run("return window.notReloaded === true"),
        json!(true)
    );
    browser.screenshot(&shots.join("home.png"));
    assert_eq!(
        browser.run("return document.querySelector('nav').innerText.replace(/\\s+/g, ' ').trim()"),
        json!("Home Zone proxies Meshes Data plane proxies Topology"),
        "a standalone control plane has no zones page"
    );

    // By keyboard: Tab reaches the skip link, then the menu; Enter follows a link and the
    // page's content takes the focus.
    let focused = || {
        browser
            .run("return document.activeElement.id || document.activeElement.textContent.trim()")
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    browser.keys("\u{E004}");
    assert_eq!(focused(), "Skip to content");
    browser.keys("\u{E004}\u{E004}\u{E004}");
    assert_eq!(focused(), "Meshes");
    browser.keys("\u{E007}");
    browser.wait_for_text("Data plane proxies online", wait);
    e2e::proxies::within(
        wait,
        "the page's content has the focus",
        || focused() == "app",
        focused,
    );
    assert!(
        browser
            .run("return location.pathname")
            .as_str()
            .unwrap()
            .ends_with("/gui/meshes")
    );
    browser.screenshot(&shots.join("meshes.png"));
    browser.click_link("default");
    browser.wait_for_text("Mesh default", wait);
    browser.wait_for_text("MeshTrafficPermission", wait);
    assert!(
        !browser.main_text().contains("DataplaneInsight"),
        "only policies under Policies"
    );
    browser.screenshot(&shots.join("mesh.png"));
    // The definition is shown as YAML that reads back as what the API holds.
    let shown = model::resource::parse_yaml_documents(&browser.block_after("Definition")).unwrap();
    assert_eq!(shown, [env.get("/meshes/default").unwrap()]);
    browser.click_link("web-1");
    browser.wait_for_text("Data plane proxy web-1", wait);
    browser.wait_for_text("Online", wait);
    // What it shows is what the API says.
    let overview = env
        .get("/meshes/default/dataplanes/web-1/_overview")
        .unwrap();
    let inbound_port = overview["dataplane"]["networking"]["inbound"][0]["port"]
        .as_u64()
        .unwrap();
    let text = browser.main_text();
    assert!(
        text.contains(&inbound_port.to_string()) && text.contains("kuma.io/service=web"),
        "{text}"
    );
    assert!(
        browser
            .run("return location.pathname")
            .as_str()
            .unwrap()
            .ends_with("/gui/meshes/default/dataplanes/web-1"),
        "a deep link"
    );
    browser.run(
        "[...document.querySelectorAll('button')].find(b => b.textContent.startsWith('Load the Envoy')).click(); return null",
    );
    browser.wait_for_text("type.googleapis.com/envoy.admin.v3", wait);
    browser.screenshot(&shots.join("dataplane.png"));

    // The deep link loads the same page on its own.
    browser.open(&format!("{gui}/meshes/default/dataplanes/web-1"));
    browser.wait_for_text("Data plane proxy web-1", wait);

    // Markup in a resource is shown as text, never run or parsed.
    // (A MeshAccessLog's plain format is free text.)
    let markup = "<img src=x onerror=window.injected=1>";
    env.put(
        "/meshes/default/meshaccesslogs/markup",
        json!({"type": "MeshAccessLog", "name": "markup", "mesh": "default",
            "spec": {"targetRef": {"kind": "Mesh"}, "from": [{"targetRef": {"kind": "Mesh"},
                "default": {"backends": [{"type": "File", "file": {"path": "/tmp/markup.log",
                    "format": {"type": "Plain", "plain": markup}}}]}}]}}),
    );
    browser.open(&format!("{gui}/meshes/default/meshaccesslogs/markup"));
    browser.wait_for_text(markup, wait);
    assert_eq!(
        browser.run(
            "return [document.querySelectorAll('main img').length, window.injected === undefined]"
        ),
        json!([0, true])
    );

    // The proxy list, filtered (the filter is in the URL, so it is a deep link too).
    browser.open(&format!("{gui}/dataplanes?q=web"));
    browser.wait_for_text("web-1", wait);
    browser.open(&format!("{gui}/dataplanes?q=nothing-like-it"));
    browser.wait_for_text("None yet.", wait);
    browser.screenshot(&shots.join("dataplanes.png"));

    // A narrow window: the same page, nothing wider than the window but the tables' own
    // scrolling areas.
    browser.resize(420, 800);
    browser.open(&format!("{gui}/meshes/default"));
    browser.wait_for_text("Mesh default", wait);
    assert_eq!(
        browser.run("return document.documentElement.scrollWidth <= window.innerWidth"),
        json!(true),
        "the page scrolls sideways in a narrow window"
    );
    browser.screenshot(&shots.join("mesh-narrow.png"));
    browser.resize(1280, 800);

    // A page that does not exist, and an API error, are said so on the page.
    browser.open(&format!("{gui}/meshes/default/dataplanes/nope"));
    let error = || {
        browser
            .run("return document.getElementById('error').innerText")
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    e2e::proxies::within(
        wait,
        "the API's error on the page",
        || error().contains("nope"),
        || format!("error box: {:?}\npage: {}", error(), browser.main_text()),
    );
    browser.open(&format!("{gui}/no/such/page/here"));
    browser.wait_for_text("Not found", wait);

    // The control plane goes away: the page says so, and once one answers on the same address
    // again, that it is live again, without a reload.
    browser.open(&format!("{gui}/meshes"));
    browser.wait_for_text("Mesh", wait);
    let live = || browser.live_status();
    e2e::proxies::within(wait, "the stream is live", || live() == "Live", live);
    browser.run("window.notReloaded = true; return null");
    let api_port = cp.api_port.to_string();
    // Its event streams, the proxy's ADS stream and admin tunnel end at once instead of
    // holding the drain (it took 41 s with a proxy connected before they did).
    let stopping = tokio::time::Instant::now();
    assert!(
        cp.terminate(Duration::from_secs(5)).is_some(),
        "kuma-cp did not stop within 5 s with a GUI and a proxy connected:\n{}",
        cp.logs()
    );
    println!("kuma-cp stopped {:?} after SIGTERM", stopping.elapsed());
    e2e::proxies::within(
        wait,
        "the page says the stream is lost",
        || live().contains("lost"),
        live,
    );
    browser.screenshot(&shots.join("stream-lost.png"));
    let mut again = ControlPlane::start("gui-again", &[("KUMA_API_SERVER_HTTP_PORT", &api_port)]);
    again.wait_ready(Duration::from_secs(60));
    e2e::proxies::within(
        wait,
        "the page is live again",
        || live() == "Live again",
        live,
    );
    assert_eq!(
        browser.run("return window.notReloaded === true"),
        json!(true)
    );
}

/// Global with two zones, an ingress in each, a sidecar in each, a policy and a MeshGateway
/// made on global: the GUI on global opens every page, follows links from a zone to a proxy,
/// its rules and its Envoy configuration (read through global from the proxy's zone), draws the
/// topology and shows a new proxy in zone-2 arriving live.
#[test]
fn the_gui_on_global_shows_two_zones_in_a_real_browser() {
    let test = "the_gui_on_global_shows_two_zones_in_a_real_browser";
    let Some(envoy) = envoy(test) else {
        return;
    };
    let TwoZones {
        global_cp,
        global,
        zone1_cp,
        zone2_cp,
        zone1,
        zone2,
    } = start_two_zones(&envoy);
    let Some(browser) = Browser::start(test, &global.dir) else {
        return;
    };
    let shots = screenshots().join("global");
    let wait = Duration::from_secs(60);
    let logs = || {
        format!(
            "--- global:\n{}\n--- zone-1:\n{}\n--- zone-2:\n{}",
            global_cp.logs(),
            zone1_cp.logs(),
            zone2_cp.logs()
        )
    };

    global.put(
        "/meshes/default",
        json!({"type": "Mesh", "name": "default",
            "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}}),
    );
    for zone in [&zone1, &zone2] {
        e2e::proxies::within(
            Duration::from_secs(20),
            "the mesh CA arrives from global",
            || {
                zone.get("/meshes/default/secrets/default.ca-builtin-cert-ca-1")
                    .is_some()
            },
            logs,
        );
    }
    global.put(
        "/meshes/default/meshtimeouts/slow-calls",
        json!({"type": "MeshTimeout", "mesh": "default", "name": "slow-calls", "spec": {
            "targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "Mesh"},
                "default": {"idleTimeout": "20s", "http": {"requestTimeout": "2s"}}}]}}),
    );
    global.put(
        "/meshes/default/meshgateways/edge",
        json!({"type": "MeshGateway", "mesh": "default", "name": "edge",
            "selectors": [{"match": {"kuma.io/service": "edge"}}],
            "conf": {"listeners": [{"port": 8080, "protocol": "HTTP", "hostname": "shop.example.com"}]}}),
    );
    let _ingress1 = zone1.kuma_dp(
        ProxyType::Ingress,
        "ingress-1",
        &ingress_yaml("127.0.0.1", free_port()),
        &global.zone_token("zone-1", "ingress"),
    );
    let _ingress2 = zone2.kuma_dp(
        ProxyType::Ingress,
        "ingress-2",
        &ingress_yaml("127.0.0.1", free_port()),
        &global.zone_token("zone-2", "ingress"),
    );
    let _web = zone1.echo_behind_sidecar(
        "web-1",
        "web",
        Some("zone-1"),
        &global.token("web-1", "default"),
    );
    let _backend = zone2.echo_behind_sidecar(
        "backend-1",
        "backend",
        Some("zone-2"),
        &global.token("backend-1", "default"),
    );

    // Home: both zones and both proxies online, counted from global's own API.
    let gui = format!("{}/gui", global_cp.api());
    browser.open(&gui);
    browser.wait_for_text("Zones online\n2 / 2", wait);
    browser.wait_for_text("Data plane proxies online\n2 / 2", wait);
    browser.wait_for_text("Zone ingresses online\n2 / 2", wait);
    assert!(browser.main_text().contains("Mode global"));
    browser.screenshot(&shots.join("home.png"));

    // Zones, as the API lists them.
    browser.click_link("Zones");
    browser.wait_for_text("zone-2", wait);
    let zones = global.get("/zones+insights").unwrap();
    let text = browser.main_text();
    for zone in zones["items"].as_array().unwrap() {
        let name = zone["name"].as_str().unwrap();
        let row = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{text}"));
        assert!(row.contains("Online"), "{row}");
        assert_eq!(zone["online"], json!(true), "{zone}");
    }
    browser.screenshot(&shots.join("zones.png"));

    // A zone: its proxies and its ingress; then from the zone to its proxy.
    browser.click_link("zone-1");
    browser.wait_for_text("Zone zone-1", wait);
    browser.wait_for_text("ingress-1", wait);
    browser.wait_for_text("web-1", wait);
    assert!(
        !browser.main_text().contains("backend-1"),
        "only zone-1's proxies"
    );
    browser.screenshot(&shots.join("zone.png"));
    browser.click_link("web-1");
    browser.wait_for_text("Data plane proxy web-1", wait);
    browser.wait_for_text("zone zone-1", wait);
    browser.wait_for_text("Policies that apply", wait);
    assert!(
        browser.main_text().contains("MeshTimeout"),
        "{}",
        browser.main_text()
    );
    // The merged rules shown are the API's `_rules`, read back from the YAML on the page.
    // On global, a zone's proxy is stored under a name with its zone's hash.
    let web_on_global = model::name::hashed_name("default", "web-1", Some("zone-1"), None);
    assert!(
        browser.main_text().contains(&web_on_global),
        "{web_on_global}"
    );
    let rules = global
        .get(&format!(
            "/meshes/default/dataplanes/{web_on_global}/_rules"
        ))
        .unwrap();
    let shown = model::resource::parse_yaml_documents(&browser.block_after("Rules")).unwrap();
    assert_eq!(shown, [rules]);
    // Its Envoy configuration, which global reads from zone-1 for the page.
    browser.run(
        "[...document.querySelectorAll('button')].find(b => b.textContent.startsWith('Load the Envoy')).click(); return null",
    );
    browser.wait_for_text("type.googleapis.com/envoy.admin.v3", wait);
    assert!(
        browser.main_text().contains("default.web-1"),
        "the config dump is web-1's"
    );
    browser.screenshot(&shots.join("dataplane.png"));

    // Zone proxies, and zone-2's ingress offering backend to other zones.
    browser.click_link("Zone proxies");
    browser.wait_for_text("ingress-2", wait);
    browser.click_link("ingress-2");
    browser.wait_for_text("Zone ingress ingress-2", wait);
    browser.wait_for_text("kuma.io/service=backend", wait);
    browser.screenshot(&shots.join("zone-ingress.png"));

    // The topology: both zones with their services, and a route into each through its ingress.
    browser.open(&format!("{gui}/meshes/default/topology"));
    browser.wait_for_text("Cross-zone routes", wait);
    browser.wait_for_text("zone-1\tzone-2\tingress ingress-2\tbackend", wait);
    browser.wait_for_text("zone-2\tzone-1\tingress ingress-1\tweb", wait);
    let drawn = browser.run(
        "return [[...document.querySelectorAll('svg.topology text')].map(t => t.textContent), \
         document.querySelectorAll('svg.topology .route').length]",
    );
    let texts: Vec<&str> = drawn[0]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    for expected in [
        "zone zone-1 · online",
        "zone zone-2 · online",
        "ingress ingress-1",
        "ingress ingress-2",
        "web 1/1",
        "backend 1/1",
    ] {
        assert!(texts.contains(&expected), "{expected:?} not in {texts:?}");
    }
    assert_eq!(drawn[1], json!(2), "one route into each zone");
    browser.screenshot(&shots.join("topology.png"));

    // The mesh: its CA, the gateway's listeners; the policy with its YAML and origin.
    browser.open(&format!("{gui}/meshes/default"));
    browser.wait_for_text("CA expires", wait);
    browser.wait_for_text("shop.example.com", wait);
    browser.screenshot(&shots.join("mesh.png"));
    browser.click_link("edge");
    browser.wait_for_text("MeshGateway edge", wait);
    browser.wait_for_text("8080\tHTTP\tshop.example.com", wait);
    browser.screenshot(&shots.join("gateway.png"));
    browser.open(&format!("{gui}/meshes/default/meshtimeouts/slow-calls"));
    browser.wait_for_text("MeshTimeout slow-calls", wait);
    browser.wait_for_text("web-1", wait);
    let shown = model::resource::parse_yaml_documents(&browser.block_after("Definition")).unwrap();
    assert_eq!(
        shown,
        [global
            .get("/meshes/default/meshtimeouts/slow-calls")
            .unwrap()]
    );
    browser.screenshot(&shots.join("policy.png"));

    // A new proxy in zone-2 appears on global's page, filtered to zone-2, without a reload.
    browser.open(&format!("{gui}/dataplanes?zone=zone-2"));
    browser.wait_for_text("backend-1", wait);
    browser.run("window.notReloaded = true; return null");
    let _backend2 = zone2.echo_behind_sidecar(
        "backend-2",
        "backend",
        Some("zone-2"),
        &global.token("backend-2", "default"),
    );
    let took = browser.wait_for_text("backend-2", wait);
    println!("zone-2's new proxy showed on global's page {took:?} after kuma-dp started");
    assert!(
        !browser.main_text().contains("web-1"),
        "the zone filter holds"
    );
    assert_eq!(
        browser.run("return window.notReloaded === true"),
        json!(true)
    );
    browser.screenshot(&shots.join("dataplanes-live.png"));
}

/// A hosted manager's control plane answers only to its own tokens: its GUI, served under the
/// manager's prefix, asks for one, says so when it is refused, and with a personal access token
/// shows the control plane and follows its changes.
#[test]
fn the_gui_of_a_hosted_control_plane_asks_for_a_token() {
    let test = "the_gui_of_a_hosted_control_plane_asks_for_a_token";
    let mut manager = ControlPlane::start(
        "gui-manager",
        &[
            ("KUMA_MODE", "global"),
            ("KUMA_MULTITENANCY_ENABLED", "true"),
        ],
    );
    manager.wait_ready(Duration::from_secs(60));
    let Some(browser) = Browser::start(test, &manager.work_dir) else {
        return;
    };
    let http = e2e::blocking_http(Duration::from_secs(10));
    // The manager creates a control plane's keys on its first request; 5xx until then.
    let post = |path: &str, body: serde_json::Value| {
        e2e::proxies::post_until_not_5xx(&format!("{}{path}", manager.api()), &body)
    };
    let (status, created) = post("/v0/mesh/control-planes", json!({"name": "tenant-a"}));
    assert_eq!(status, 201, "{created}");
    let id = serde_json::from_str::<serde_json::Value>(&created).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, token) = post(
        &format!("/v0/mesh/control-planes/{id}/personal-access-tokens"),
        json!({"name": "alice", "validFor": "1h"}),
    );
    assert_eq!(status, 200, "{token}");
    let shots = screenshots();
    let wait = Duration::from_secs(30);
    let api = format!("{}/v0/mesh/control-planes/{id}/api", manager.api());

    browser.open(&format!("{api}/gui/meshes"));
    browser.wait_for_text("Sign in", wait);
    browser.screenshot(&shots.join("sign-in.png"));
    let sign_in = |token: &str| {
        browser.run(&format!(
            "const i = document.getElementById('token'); i.value = {}; \
             i.form.requestSubmit(); return null",
            json!(token)
        ));
    };
    sign_in("not-a-token");
    browser.wait_for_text("refused that token", wait);
    sign_in(token.trim());
    // The page asked for (the meshes) now shows, and the event stream follows.
    browser.wait_for_text("Meshes", wait);
    browser.wait_for_text("default", wait);
    let live = || browser.live_status();
    e2e::proxies::within(wait, "the stream is live", || live() == "Live", live);
    let (status, _) = {
        let r = http
            .put(format!("{api}/meshes/payments"))
            .bearer_auth(token.trim())
            .json(&json!({"type": "Mesh", "name": "payments"}))
            .send()
            .unwrap();
        (r.status().as_u16(), ())
    };
    assert_eq!(status, 201);
    browser.wait_for_text("payments", wait);
    browser.screenshot(&shots.join("hosted-meshes.png"));
}
