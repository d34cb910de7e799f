//! Golden files of the policy plugins (`tests/snapshots/policies__*.snap`), on the shared mesh
//! fixture, each configuration also validated by Envoy itself.

mod common;

use common::{allow_all, check_schema, config, envoy_validates, mesh};
use model::specs::policy::MeshTimeoutSpec;
use serde_json::{Value, json};
use xds::{MeshContext, Policy};

fn timeout(name: &str, spec: Value) -> Policy<MeshTimeoutSpec> {
    Policy::new(
        name,
        serde_json::from_value(spec).expect("MeshTimeout spec"),
    )
}

/// Kuma's `mesh-timeout-all-<mesh>`, as a new mesh gets it.
fn default_timeouts() -> Policy<MeshTimeoutSpec> {
    timeout(
        "mesh-timeout-all-default",
        json!({"targetRef": {"kind": "Mesh", "proxyTypes": ["Sidecar"]},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"connectionTimeout": "10s", "idleTimeout": "2h",
                "http": {"requestTimeout": "0s", "streamIdleTimeout": "1h", "maxStreamDuration": "0s"}}}],
            "to": [{"targetRef": {"kind": "Mesh"}, "default": {"connectionTimeout": "5s", "idleTimeout": "1h",
                "http": {"requestTimeout": "15s", "streamIdleTimeout": "30m"}}}]}),
    )
}

fn with_timeouts(mut m: MeshContext, timeouts: Vec<Policy<MeshTimeoutSpec>>) -> MeshContext {
    m.policies.set(timeouts);
    m
}

fn checked(m: &MeshContext, proxy: &str, name: &str) -> Value {
    let r = xds::sidecar(m, proxy).expect("generate");
    check_schema(&r);
    envoy_validates(name, &r);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    config(m, proxy)
}

#[test]
fn timeout_defaults_http() {
    let m = with_timeouts(
        mesh("http", true, vec![allow_all()]),
        vec![default_timeouts()],
    );
    insta::assert_yaml_snapshot!(
        "timeout_defaults_client",
        checked(&m, "web-1", "timeout-client")
    );
    insta::assert_yaml_snapshot!(
        "timeout_defaults_server",
        checked(&m, "backend-1", "timeout-server")
    );
}

#[test]
fn timeout_defaults_tcp() {
    let m = with_timeouts(mesh("tcp", false, vec![]), vec![default_timeouts()]);
    insta::assert_yaml_snapshot!(checked(&m, "web-1", "timeout-tcp"));
}

/// A service's own timeouts over the mesh-wide ones: the caller's `to` for backend, and the
/// callee's inbound `rules` catch-all.
#[test]
fn timeout_overrides() {
    let m = with_timeouts(
        mesh("http", false, vec![]),
        vec![
            default_timeouts(),
            timeout(
                "web-to-backend",
                json!({"targetRef": {"kind": "MeshService", "name": "web"},
                    "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                            "default": {"idleTimeout": "20s", "http": {"requestTimeout": "2s", "maxStreamDuration": "30s"}}}]}),
            ),
            timeout(
                "backend-inbound",
                json!({"targetRef": {"kind": "MeshService", "name": "backend"},
                    "rules": [{"default": {"connectionTimeout": "1s", "http": {"requestTimeout": "3s", "requestHeadersTimeout": "500ms"}}}]}),
            ),
        ],
    );
    let client = checked(&m, "web-1", "timeout-override-client");
    let backend_route = &client["listeners"][1]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
        ["virtual_hosts"][0]["routes"][0]["route"];
    assert_eq!(backend_route["timeout"], "2s");
    // The outbound without an override (TCP: nothing serves it yet) keeps the mesh-wide idle.
    let other = &client["listeners"][2]["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(other["idle_timeout"], "3600s");
    insta::assert_yaml_snapshot!("timeout_overrides_client", client);
    let server = checked(&m, "backend-1", "timeout-override-server");
    insta::assert_yaml_snapshot!("timeout_overrides_server", server);
}

/// Without any MeshTimeout nothing changes: routes keep no timeout (streams stay open).
#[test]
fn no_timeout_policy_changes_nothing() {
    let plain = config(&mesh("http", false, vec![]), "web-1");
    let route = &plain["listeners"][1]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
        ["virtual_hosts"][0]["routes"][0]["route"];
    assert_eq!(route["timeout"], "0s");
    assert!(route.get("idle_timeout").is_none());
}
