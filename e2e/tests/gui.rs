#![allow(clippy::unwrap_used)]
//! The GUI in a real browser (Debian's headless chromium through chromedriver) against a
//! standalone control plane with a real sidecar: the home page's onboarding view with no proxy,
//! the proxy arriving live (no reload), links from the home page to the mesh, to the proxy, to
//! its Envoy configuration, the texts checked against the API, a filtered list, markup in a
//! resource shown as text, a narrow window, an unknown page. One screenshot per page under
//! `target/gui-screenshots/`. Needs `envoy`, `chromium` and `chromedriver`; outside CI the test
//! is skipped, loudly, without them.

use std::path::PathBuf;
use std::time::Duration;

use e2e::browser::Browser;
use e2e::proxies::{Cp, envoy};
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
    assert!(
        browser
            .main_text()
            .contains("kuma-dp run --cp-address https://")
    );
    browser.screenshot(&shots.join("home-onboarding.png"));

    // A real sidecar connects: the page shows it online without being reloaded.
    browser.run("window.notReloaded = true; return null");
    let app_port = free_port();
    let _app = env.echo("web-1", app_port, None);
    let _web = env.sidecar(
        "web-1",
        "web",
        app_port,
        None,
        &env.token("web-1", "default"),
    );
    let took = browser.wait_for_text("Data plane proxies online\n1 / 1", wait);
    println!("the new proxy showed online {took:?} after kuma-dp started");
    assert_eq!(
        browser.run("return window.notReloaded === true"),
        json!(true)
    );
    browser.screenshot(&shots.join("home.png"));
    assert_eq!(
        browser.run("return document.querySelector('nav').innerText.replace(/\\s+/g, ' ').trim()"),
        json!("Home Meshes Data plane proxies"),
        "a standalone control plane has no zones page"
    );

    // Home -> Meshes -> default -> web-1 -> its Envoy configuration, by clicking links.
    browser.click_link("Meshes");
    browser.wait_for_text("Data plane proxies online", wait);
    browser.screenshot(&shots.join("meshes.png"));
    browser.click_link("default");
    browser.wait_for_text("Mesh default", wait);
    browser.wait_for_text("MeshTrafficPermission", wait);
    assert!(
        !browser.main_text().contains("DataplaneInsight"),
        "only policies under Policies"
    );
    browser.screenshot(&shots.join("mesh.png"));
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
        error,
    );
    browser.open(&format!("{gui}/no/such/page/here"));
    browser.wait_for_text("Not found", wait);
}
