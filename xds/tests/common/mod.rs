//! The mesh fixture and the checks the golden suites share: every resource is encoded
//! against Envoy's schema, and, where `ENVOY_BINARY` is set, whole configurations pass
//! `envoy --mode validate`.
#![allow(dead_code)]

use model::specs::dataplane::DataplaneSpec;
use model::specs::policy::MeshTrafficPermissionSpec;
use serde_json::{Value, json};
use xds::{DataplaneEntry, MeshContext, Policies, Policy, ProxyResources, RemoteIngress, wire};

pub fn dataplane(name: &str, spec: Value) -> DataplaneEntry {
    DataplaneEntry {
        name: name.into(),
        labels: Default::default(),
        spec: serde_json::from_value::<DataplaneSpec>(spec).expect("dataplane spec"),
    }
}

/// Another zone's ingress at `address`, serving `services` (Kuma's `availableServices`).
pub fn remote_ingress(zone: &str, address: &str, services: Value) -> RemoteIngress {
    RemoteIngress {
        zone: zone.into(),
        address: address.into(),
        port: 10001,
        services: serde_json::from_value(services).expect("available services"),
    }
}

pub fn permission(name: &str, spec: Value) -> Policy<MeshTrafficPermissionSpec> {
    Policy::new(name, serde_json::from_value(spec).expect("permission spec"))
}

pub fn mesh(
    protocol: &str,
    mtls: bool,
    permissions: Vec<Policy<MeshTrafficPermissionSpec>>,
) -> MeshContext {
    MeshContext {
        mesh: "default".into(),
        mtls,
        dataplanes: vec![
            dataplane(
                "web-1",
                json!({"networking": {"address": "10.0.0.1",
                "inbound": [{"port": 20080, "servicePort": 8080, "tags": {"kuma.io/service": "web", "kuma.io/protocol": protocol}}],
                "outbound": [{"port": 10001, "tags": {"kuma.io/service": "backend"}},
                             {"port": 10002, "tags": {"kuma.io/service": "missing"}}]}}),
            ),
            dataplane(
                "backend-1",
                json!({"networking": {"address": "10.0.0.2",
                "inbound": [{"port": 20081, "servicePort": 8081, "tags": {"kuma.io/service": "backend", "kuma.io/protocol": protocol, "version": "v1"}}]}}),
            ),
            dataplane(
                "backend-2",
                json!({"networking": {"address": "10.0.0.3",
                "inbound": [{"port": 20081, "servicePort": 8081, "tags": {"kuma.io/service": "backend", "kuma.io/protocol": protocol, "version": "v2"}}]}}),
            ),
            dataplane(
                "backend-down",
                json!({"networking": {"address": "10.0.0.4",
                "inbound": [{"port": 20081, "servicePort": 8081, "health": {"ready": false}, "tags": {"kuma.io/service": "backend", "kuma.io/protocol": protocol}}]}}),
            ),
        ],
        policies: Policies::default().with(permissions),
        ..Default::default()
    }
}

pub fn check_schema(r: &ProxyResources) {
    for l in &r.listeners {
        wire::encode(wire::LISTENER, l).unwrap_or_else(|e| panic!("listener {}: {e}", l["name"]));
    }
    for c in &r.clusters {
        wire::encode(wire::CLUSTER, c).unwrap_or_else(|e| panic!("cluster {}: {e}", c["name"]));
    }
    for e in &r.endpoints {
        wire::encode(wire::ENDPOINTS, e)
            .unwrap_or_else(|err| panic!("endpoints {}: {err}", e["cluster_name"]));
    }
}

pub fn config(mesh: &MeshContext, proxy: &str) -> Value {
    let r = xds::sidecar(mesh, proxy).expect("generate");
    check_schema(&r);
    json!({"listeners": r.listeners, "clusters": r.clusters, "endpoints": r.endpoints, "secrets": r.secret_names})
}

pub fn allow_all() -> Policy<MeshTrafficPermissionSpec> {
    permission(
        "allow-all-default",
        json!({"targetRef": {"kind": "Mesh"},
        "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}),
    )
}

/// Envoy itself accepts `r` (a sidecar's listeners, clusters and endpoints), as a static
/// bootstrap: EDS clusters get their endpoints inline and TLS is left out (its secrets come
/// over SDS, which validate mode has no server for). Skipped, saying so, without
/// `ENVOY_BINARY`; CI sets it.
pub fn envoy_validates(name: &str, r: &ProxyResources) {
    let Some(envoy) = envoy_or_skip(name) else {
        return;
    };
    let mut clusters = Vec::new();
    for c in &r.clusters {
        let mut c = c.clone();
        let Some(obj) = c.as_object_mut() else {
            continue;
        };
        obj.remove("transport_socket");
        if obj.remove("eds_cluster_config").is_some() {
            obj.insert("type".into(), json!("STATIC"));
            let assignment = r
                .endpoints
                .iter()
                .find(|e| e["cluster_name"] == obj["name"])
                .map(|e| Value::clone(e))
                .unwrap_or_else(|| json!({"cluster_name": obj["name"]}));
            obj.insert("load_assignment".into(), assignment);
        }
        clusters.push(c);
    }
    let mut listeners = Vec::new();
    for l in &r.listeners {
        let mut l = l.clone();
        if let Some(chains) = l["filter_chains"].as_array_mut() {
            for chain in chains {
                if let Some(chain) = chain.as_object_mut() {
                    chain.remove("transport_socket");
                }
            }
        }
        listeners.push(l);
    }
    let bootstrap = json!({"static_resources": {"clusters": clusters, "listeners": listeners}});
    envoy_accepts(&envoy, name, &bootstrap);
}

/// `envoy --mode validate` accepts `bootstrap` (a test failure naming `name` otherwise).
pub fn envoy_accepts(envoy: &std::ffi::OsStr, name: &str, bootstrap: &Value) {
    let dir = std::env::temp_dir().join(format!("xds-validate-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bootstrap.json");
    std::fs::write(&file, bootstrap.to_string()).expect("bootstrap file");
    let out = std::process::Command::new(envoy)
        .args(["--mode", "validate", "-l", "error", "-c"])
        .arg(&file)
        .output()
        .expect("running envoy");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "envoy rejected the {name} config: {}\n{bootstrap}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ENVOY_BINARY`, or `None` after saying that `what` is skipped; CI must set it.
pub fn envoy_or_skip(what: &str) -> Option<std::ffi::OsString> {
    let envoy = std::env::var_os("ENVOY_BINARY");
    if envoy.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "CI must run this with ENVOY_BINARY set (scripts/test.sh sets it)"
        );
        eprintln!("SKIPPED envoy validation of {what}: ENVOY_BINARY is not set");
    }
    envoy
}

/// A policy as the API would accept it: its spec must validate (what the API would refuse
/// must not be tested as if it were accepted).
pub fn validated<S: model::specs::policy::PolicySpec>(name: &str, spec: Value) -> Policy<S> {
    if let Err(e) = model::specs::policy::validate::<S>(&spec) {
        panic!("{name} does not validate: {e}");
    }
    Policy::new(
        name,
        serde_json::from_value(spec).unwrap_or_else(|e| panic!("{name}: {e}")),
    )
}

/// `r` reaches `cluster` (a service that runs only in another zone) through the ingress at
/// `ingress`, with the mesh's mTLS and the service's SNI.
pub fn assert_through_ingress(r: &ProxyResources, cluster: &str, ingress: &str) {
    assert_through_ingress_with_sni(r, cluster, ingress, &format!("{cluster}{{mesh=default}}"));
}

/// [`assert_through_ingress`] with the SNI `sni` (a MeshService's, Kuma's hashed one).
pub fn assert_through_ingress_with_sni(
    r: &ProxyResources,
    cluster: &str,
    ingress: &str,
    sni: &str,
) {
    let assignment = r
        .endpoints
        .iter()
        .find(|e| e["cluster_name"] == cluster)
        .unwrap_or_else(|| panic!("no load assignment for {cluster}"));
    assert_eq!(
        assignment["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"],
        ingress,
        "{cluster} through the ingress: {assignment}"
    );
    let c = r
        .clusters
        .iter()
        .find(|c| c["name"] == cluster)
        .unwrap_or_else(|| panic!("no cluster {cluster}"));
    assert_eq!(c["transport_socket"]["typed_config"]["sni"], sni);
}
