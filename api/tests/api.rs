#![allow(clippy::unwrap_used)]
//! The API against a real server on a loopback port: CRUD, paging, filters, errors, auth.

use std::sync::Arc;
use std::time::Duration;

use api::{ApiState, AuthConfig, ServerInfo};
use async_trait::async_trait;
use model::{Resource, ResourceKey, ResourceType};
use reqwest::StatusCode;
use serde_json::{Value, json};
use store::{ChangeEvent, ListPage, ListQuery, MemoryStore, ResourceStore, SharedStore};
use tokio::sync::broadcast;

struct Server {
    base: String,
    store: SharedStore,
    http: reqwest::Client,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn start_with(store: SharedStore, auth: AuthConfig) -> Server {
    start_in_mode(store, auth, "standalone").await
}

async fn start_in_mode(store: SharedStore, auth: AuthConfig, mode: &str) -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    store
        .create(Resource::new(ResourceType::Mesh, "", "default", json!({})))
        .await
        .unwrap();
    let keys = Arc::new(security::user::user_signing_keys(store.clone()));
    keys.ensure_key().await.unwrap();
    security::user::bootstrap_admin_token(&store, &keys)
        .await
        .unwrap();
    let state = Arc::new(ApiState {
        store: store.clone(),
        user_keys: keys,
        zone_keys: Arc::new(security::zone::zone_signing_keys(store.clone())),
        info: ServerInfo {
            hostname: "test".into(),
            tagline: "Kuma".into(),
            product: "Kuma".into(),
            version: "2.14.0".into(),
            instance_id: "test-1".into(),
            cluster_id: "c".into(),
            gui: "/gui".into(),
            based_on_kuma: "2.14.0".into(),
            mode: mode.trim_start_matches("federated-").into(),
        },
        config: json!({"store": {"postgres": {"password": "*****"}}}),
        auth,
        metrics: api::ApiMetrics::detached(),
        federation: match mode {
            "global" => api::federation::Federation::Global,
            "federated-zone" => api::federation::Federation::Zone,
            _ => api::federation::Federation::None,
        },
        local_zone: mode.ends_with("zone").then(|| "zone-1".to_string()),
        origin_label_validation: true,
        proxy_admin: None,
        control_plane: String::new(),
        control_planes: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(api::serve_http(listener, api::router(state), async move {
        let _ = rx.await;
    }));
    Server {
        base: format!("http://{addr}"),
        store,
        http: reqwest::Client::new(),
        _shutdown: tx,
    }
}

async fn start() -> Server {
    start_with(Arc::new(MemoryStore::new()), AuthConfig::default()).await
}

impl Server {
    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .put(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn delete(&self, path: &str) -> StatusCode {
        self.http
            .delete(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .status()
    }
}

fn timeout(name: &str) -> Value {
    json!({"type": "MeshTimeout", "name": name, "mesh": "default", "spec": {
        "targetRef": {"kind": "Mesh"},
        "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "20s", "connectionTimeout": "2s"}}]}})
}

fn fields(body: &Value) -> Vec<String> {
    body["invalid_parameters"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| p["field"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn index_config_and_resource_types() {
    let s = start().await;
    let (st, body) = s.get("/").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["product"], "Kuma");
    assert_eq!(body["instanceId"], "test-1");
    let (_, cfg) = s.get("/config").await;
    assert_eq!(cfg["store"]["postgres"]["password"], "*****");
    let (_, types) = s.get("/_resources").await;
    let items = types["resources"].as_array().unwrap();
    let mt = items.iter().find(|r| r["name"] == "MeshTimeout").unwrap();
    assert_eq!(mt["path"], "meshtimeouts");
    assert_eq!(mt["scope"], "Mesh");
    assert!(mt["policy"].is_object());
    let (st, _) = s.get("/gui").await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn the_gui_is_served_for_every_page_and_without_credentials() {
    // A remote browser without a token gets the GUI's files (its sign-in form); the data
    // stays behind the API's authentication.
    let s = start_with(
        Arc::new(MemoryStore::new()),
        AuthConfig {
            localhost_is_admin: false,
            anonymous_reads: false,
        },
    )
    .await;
    let get = |path: &str| s.http.get(format!("{}{path}", s.base)).send();
    let r = get("/gui/meshes/default/dataplanes/web-1").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"src="../../../assets/app.js""#), "{html}");
    for (path, kind) in [
        ("/gui/assets/app.js", "text/javascript"),
        ("/gui/assets/style.css", "text/css"),
        ("/gui", "text/html"),
    ] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
    }
    assert_eq!(
        get("/gui/assets/secrets.json").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get("/meshes").await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "the API itself still needs a token"
    );
}

/// Kuma's computed labels on a zone control plane, written with the resource.
#[tokio::test]
async fn labels_are_computed_on_write() {
    let s = start_in_mode(Arc::new(MemoryStore::new()), AuthConfig::default(), "zone").await;
    s.put("/meshes/default/meshtimeouts/t1", timeout("t1"))
        .await;
    let (_, body) = s.get("/meshes/default/meshtimeouts/t1").await;
    assert_eq!(
        body["labels"],
        json!({"kuma.io/mesh": "default", "kuma.io/origin": "zone", "kuma.io/zone": "zone-1",
            "kuma.io/env": "universal"})
    );
    let gw = json!({"type": "Dataplane", "name": "gw-1", "mesh": "default",
        "networking": {"address": "10.0.0.9", "gateway": {"type": "BUILTIN", "tags": {"kuma.io/service": "edge"}}}});
    s.put("/meshes/default/dataplanes/gw-1", gw).await;
    let (_, body) = s.get("/meshes/default/dataplanes/gw-1").await;
    assert_eq!(body["labels"]["kuma.io/proxy-type"], "gateway");
    // A label the writer set is kept; an update leaving the computed ones out keeps them.
    let mut mine = timeout("t2");
    mine["labels"] = json!({"team": "a"});
    s.put("/meshes/default/meshtimeouts/t2", mine.clone()).await;
    s.put("/meshes/default/meshtimeouts/t2", mine).await;
    let (_, body) = s.get("/meshes/default/meshtimeouts/t2").await;
    assert_eq!(body["labels"]["team"], "a");
    assert_eq!(body["labels"]["kuma.io/origin"], "zone");
}

/// Kuma's rules for reserved labels a writer sets, each answered 400 on the label's path.
#[tokio::test]
async fn reserved_labels_follow_kumas_rules() {
    let reason = |body: &Value, field: &str| -> String {
        body["invalid_parameters"]
            .as_array()
            .and_then(|v| v.iter().find(|p| p["field"] == field))
            .map(|p| p["reason"].as_str().unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("no {field} in {body}"))
    };
    let labelled = |name: &str, labels: Value| {
        let mut t = timeout(name);
        t["labels"] = labels;
        t
    };
    let zone = start_in_mode(Arc::new(MemoryStore::new()), AuthConfig::default(), "zone").await;
    for (labels, field, why) in [
        (
            json!({"kuma.io/origin": "mars"}),
            "kuma.io/origin",
            "unknown resource origin \"mars\"",
        ),
        (
            json!({"kuma.io/zone": "zone-9"}),
            "kuma.io/zone",
            "kuma.io/zone label should have zone-1 value",
        ),
        (
            json!({"kuma.io/mesh": "other"}),
            "kuma.io/mesh",
            "kuma.io/mesh label must not differ from mesh set on resource",
        ),
    ] {
        let (st, body) = zone
            .put("/meshes/default/meshtimeouts/t1", labelled("t1", labels))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reason(&body, &format!("labels[{field:?}]")), why);
    }
    let dp = |workload: &str| {
        json!({"type": "Dataplane", "name": "web-1", "mesh": "default",
            "labels": {"kuma.io/workload": workload},
            "networking": {"address": "10.0.0.1", "inbound": [{"port": 80, "tags": {"kuma.io/service": "web"}}]}})
    };
    let (st, body) = zone
        .put("/meshes/default/dataplanes/web-1", dp("Web_1"))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["title"], "Invalid workload label");
    assert!(
        body["detail"].as_str().unwrap().contains("DNS-1035"),
        "{body}"
    );
    let (st, _) = zone
        .put("/meshes/default/dataplanes/web-1", dp("web"))
        .await;
    assert_eq!(st, StatusCode::CREATED);

    // Under a global, a zone's own policy has to say it is the zone's.
    let federated = start_in_mode(
        Arc::new(MemoryStore::new()),
        AuthConfig::default(),
        "federated-zone",
    )
    .await;
    let (st, body) = federated
        .put("/meshes/default/meshtimeouts/t1", timeout("t1"))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        reason(&body, "labels[\"kuma.io/origin\"]"),
        "the origin label must be set to 'zone'"
    );
    let (st, _) = federated
        .put(
            "/meshes/default/meshtimeouts/t1",
            labelled("t1", json!({"kuma.io/origin": "zone"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);

    let global = start_in_mode(
        Arc::new(MemoryStore::new()),
        AuthConfig::default(),
        "global",
    )
    .await;
    let (st, body) = global
        .put(
            "/meshes/default/meshtimeouts/t1",
            labelled("t1", json!({"kuma.io/origin": "zone"})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        reason(&body, "labels[\"kuma.io/origin\"]"),
        "the origin label must be set to 'global'"
    );
}

/// Kuma's Dataplane list parameters `gateway` and `tag` (fuzzy), with paging over matches.
#[tokio::test]
async fn dataplane_list_gateway_and_tag_parameters() {
    let s = start().await;
    for (name, service, version) in [
        ("web-1", "web", "v1"),
        ("web-2", "web", "v2"),
        ("db-1", "db", "v1"),
    ] {
        let dp = json!({"type": "Dataplane", "name": name, "mesh": "default",
            "networking": {"address": "10.0.0.1", "inbound": [{"port": 80,
                "tags": {"kuma.io/service": service, "version": version}}]}});
        s.put(&format!("/meshes/default/dataplanes/{name}"), dp)
            .await;
    }
    let gw = json!({"type": "Dataplane", "name": "edge-1", "mesh": "default",
        "networking": {"address": "10.0.0.9", "gateway": {"type": "BUILTIN", "tags": {"kuma.io/service": "edge"}}}});
    s.put("/meshes/default/dataplanes/edge-1", gw).await;
    let names = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, body) = s.get("/meshes/default/dataplanes?gateway=true").await;
    assert_eq!(names(&body), ["edge-1"]);
    let (_, body) = s.get("/meshes/default/dataplanes?gateway=builtin").await;
    assert_eq!(names(&body), ["edge-1"]);
    let (_, body) = s.get("/meshes/default/dataplanes?gateway=delegated").await;
    assert_eq!(body["total"], 0);
    let (_, body) = s.get("/meshes/default/dataplanes?gateway=false").await;
    assert_eq!(body["total"], 3);
    let (_, body) = s
        .get("/meshes/default/dataplanes?tag=kuma.io/service:we")
        .await;
    assert_eq!(names(&body), ["web-1", "web-2"]);
    let (_, body) = s
        .get("/meshes/default/dataplanes?tag=kuma.io/service:web&tag=version:v2")
        .await;
    assert_eq!(names(&body), ["web-2"]);
    let (_, body) = s
        .get("/meshes/default/dataplanes+insights?tag=version:v1&size=1")
        .await;
    assert_eq!(body["total"], 2);
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    assert!(
        body["next"].as_str().unwrap().contains("offset=1"),
        "{body}"
    );
    let (st, body) = s.get("/meshes/default/dataplanes?gateway=maybe").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["invalid_parameters"][0]["field"],
        "/meshes/{mesh}/dataplanes.gateway"
    );
}

/// Kuma's service insights: per service, online/offline proxies and a status, with the `type`
/// and `name` filters.
#[tokio::test]
async fn service_insights() {
    let s = start().await;
    for (name, service) in [("web-1", "web"), ("web-2", "web"), ("db-1", "db")] {
        let dp = json!({"type": "Dataplane", "name": name, "mesh": "default",
            "networking": {"address": "10.0.0.1", "inbound": [{"port": 80, "tags": {"kuma.io/service": service}}]}});
        assert_eq!(
            s.put(&format!("/meshes/default/dataplanes/{name}"), dp)
                .await
                .0,
            StatusCode::CREATED
        );
    }
    let gw = json!({"type": "Dataplane", "name": "edge-1", "mesh": "default",
        "networking": {"address": "10.0.0.9", "gateway": {"type": "BUILTIN", "tags": {"kuma.io/service": "edge"}}}});
    s.put("/meshes/default/dataplanes/edge-1", gw).await;
    // web-1 is connected; web-2 and db-1 never were.
    s.store
        .create(Resource::new(
            ResourceType::DataplaneInsight,
            "default",
            "web-1",
            json!({
            "subscriptions": [{"id": "1", "controlPlaneInstanceId": "cp",
                "connectTime": model::Timestamp::now().to_string()}],
            "mTLS": {"issuedBackend": "ca-1"}}),
        ))
        .await
        .unwrap();
    let (st, list) = s.get("/meshes/default/service-insights").await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert_eq!(list["total"], 3);
    let by_name = |name: &str| {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .cloned()
            .unwrap()
    };
    let web = by_name("web");
    assert_eq!(web["type"], "ServiceInsight");
    assert_eq!(web["status"], "partially_degraded");
    assert_eq!(
        web["dataplanes"],
        json!({"total": 2, "online": 1, "offline": 1})
    );
    assert_eq!(web["issuedBackends"], json!({"ca-1": 1}));
    assert_eq!(web["addressPort"], "web.mesh:80");
    assert_eq!(by_name("db")["status"], "offline");
    assert_eq!(by_name("edge")["serviceType"], "gateway_builtin");

    let (_, gateways) = s
        .get("/meshes/default/service-insights?type=gateway_builtin,gateway_delegated")
        .await;
    assert_eq!(gateways["total"], 1);
    let (_, named) = s.get("/meshes/default/service-insights?name=we").await;
    assert_eq!(named["total"], 1);
    let (_, page) = s.get("/meshes/default/service-insights?size=2").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert!(page["next"].as_str().unwrap().contains("offset=2"));
    let (st, bad) = s.get("/meshes/default/service-insights?type=sidecar").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(bad["detail"], "unsupported service type");
    let (st, _) = s.get("/meshes/nope/service-insights").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, one) = s.get("/meshes/default/service-insights/db").await;
    assert_eq!(one["dataplanes"]["total"], 1);
    let (_, none) = s.get("/meshes/default/service-insights/ghost").await;
    assert_eq!(none["dataplanes"]["total"], 0);
}

#[tokio::test]
async fn crud_round_trip() {
    let s = start().await;
    let (st, _) = s
        .put("/meshes/default/meshtimeouts/t1", timeout("t1"))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, body) = s.get("/meshes/default/meshtimeouts/t1").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["type"], "MeshTimeout");
    assert_eq!(body["mesh"], "default");
    assert_eq!(body["spec"]["to"][0]["default"]["idleTimeout"], "20s");
    assert!(body["creationTime"].as_str().unwrap().ends_with('Z'));

    let mut changed = timeout("t1");
    changed["spec"]["to"][0]["default"]["idleTimeout"] = json!("1m");
    let (st, _) = s.put("/meshes/default/meshtimeouts/t1", changed).await;
    assert_eq!(st, StatusCode::OK);
    let (_, body) = s.get("/meshes/default/meshtimeouts/t1").await;
    assert_eq!(body["spec"]["to"][0]["default"]["idleTimeout"], "1m");

    // Cross-mesh listing of a mesh-scoped type.
    let (_, all) = s.get("/meshtimeouts").await;
    assert_eq!(all["total"], 1);

    assert_eq!(
        s.delete("/meshes/default/meshtimeouts/t1").await,
        StatusCode::OK
    );
    let (st, body) = s.get("/meshes/default/meshtimeouts/t1").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(body["type"], "/std-errors");
    assert_eq!(body["status"], 404);
    assert_eq!(
        s.delete("/meshes/default/meshtimeouts/t1").await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn global_scoped_and_top_level_layout() {
    let s = start().await;
    let mesh = json!({"type": "Mesh", "name": "demo", "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}});
    assert_eq!(s.put("/meshes/demo", mesh).await.0, StatusCode::CREATED);
    let (_, body) = s.get("/meshes/demo").await;
    assert_eq!(body["mtls"]["enabledBackend"], "ca-1");
    assert!(body.get("mesh").is_none());
    let (_, list) = s.get("/meshes").await;
    assert_eq!(list["total"], 2);
    // A mesh-scoped type under the global path is refused.
    assert_eq!(
        s.put("/meshtimeouts/x", timeout("x")).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    // Deleting the mesh deletes what is in it.
    let mut t = timeout("in-demo");
    t["mesh"] = json!("demo");
    assert_eq!(
        s.put("/meshes/demo/meshtimeouts/in-demo", t).await.0,
        StatusCode::CREATED
    );
    assert_eq!(s.delete("/meshes/demo").await, StatusCode::OK);
    assert_eq!(
        s.get("/meshes/demo/meshtimeouts/in-demo").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn paging_and_label_filters() {
    let s = start().await;
    for i in 0..5 {
        let mut t = timeout(&format!("t{i}"));
        t["labels"] = json!({"team": if i % 2 == 0 { "even" } else { "odd" }});
        assert_eq!(
            s.put(&format!("/meshes/default/meshtimeouts/t{i}"), t)
                .await
                .0,
            StatusCode::CREATED
        );
    }
    let (_, p1) = s.get("/meshes/default/meshtimeouts?size=2").await;
    assert_eq!(p1["total"], 5);
    assert_eq!(p1["items"].as_array().unwrap().len(), 2);
    assert_eq!(p1["items"][0]["name"], "t0");
    let next = p1["next"].as_str().unwrap().to_string();
    assert!(
        next.contains("offset=2") && next.contains("size=2"),
        "{next}"
    );
    let p2: Value = s
        .http
        .get(&next)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(p2["items"][0]["name"], "t2");
    let (_, last) = s.get("/meshes/default/meshtimeouts?size=2&offset=4").await;
    assert!(last["next"].is_null());
    let (_, even) = s
        .get("/meshes/default/meshtimeouts?filter%5Blabels.team%5D=even")
        .await;
    assert_eq!(even["total"], 3);
    let (_, named) = s.get("/meshes/default/meshtimeouts?name=t3").await;
    assert_eq!(named["total"], 1);
    let (st, body) = s.get("/meshes/default/meshtimeouts?size=5000").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(fields(&body), ["size"]);
    let (st, body) = s.get("/meshes/default/meshtimeouts?offset=abc").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(fields(&body), ["offset"]);
}

#[tokio::test]
async fn bad_input_is_400_and_changes_nothing() {
    let s = start().await;
    // Malformed JSON.
    let r = s
        .http
        .put(format!("{}/meshes/default/meshtimeouts/x", s.base))
        .body("{\"type\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(fields(&body), ["body"]);
    // Unknown type in the URL.
    assert_eq!(
        s.put("/meshes/default/nopes/x", timeout("x")).await.0,
        StatusCode::NOT_FOUND
    );
    // Type in body differs from the URL.
    let (st, body) = s.put("/meshes/default/meshretries/x", timeout("x")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(fields(&body), ["type"]);
    // Name in the URL differs from the body.
    let (st, body) = s
        .put("/meshes/default/meshtimeouts/other", timeout("x"))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(fields(&body), ["name"]);
    // Not a DNS-1123 name.
    let (st, body) = s
        .put(
            "/meshes/default/meshtimeouts/Bad_Name!",
            timeout("Bad_Name!"),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(fields(&body), ["name"]);
    // Wrong targetRef kind.
    let mut t = timeout("x");
    t["spec"]["to"][0]["targetRef"]["kind"] = json!("Dataplane");
    let (st, body) = s.put("/meshes/default/meshtimeouts/x", t).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(fields(&body), ["spec.to[0].targetRef.kind"]);
    assert_eq!(body["title"], "Could not process a resource");
    // Dataplane without kuma.io/service.
    let dp = json!({"type": "Dataplane", "name": "dp", "mesh": "default",
        "networking": {"address": "10.0.0.1", "inbound": [{"port": 80, "tags": {"app": "web"}}]}});
    let (st, body) = s.put("/meshes/default/dataplanes/dp", dp).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(fields(&body), ["networking.inbound[0].tags"]);
    // Mesh that does not exist.
    let mut t = timeout("x");
    t["mesh"] = json!("ghost");
    let (st, body) = s.put("/meshes/ghost/meshtimeouts/x", t).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(fields(&body), ["mesh"]);
    // Oversized body.
    let big = json!({"type": "MeshTimeout", "name": "x", "mesh": "default", "spec": {"pad": "a".repeat(5 * 1024 * 1024)}});
    let (st, body) = s.put("/meshes/default/meshtimeouts/x", big).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(fields(&body), ["body"]);
    // Read-only type.
    let insight = json!({"type": "DataplaneInsight", "name": "x", "mesh": "default"});
    assert_eq!(
        s.put("/meshes/default/dataplane-insights/x", insight)
            .await
            .0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    // Nothing was stored by any of it.
    let (_, list) = s.get("/meshtimeouts").await;
    assert_eq!(list["total"], 0);
    let (_, dps) = s.get("/dataplanes").await;
    assert_eq!(dps["total"], 0);
}

/// Lets a competing writer in between the API's read and its write, deterministically.
struct RacingStore {
    inner: SharedStore,
}

#[async_trait]
impl ResourceStore for RacingStore {
    async fn get(&self, key: &ResourceKey) -> store::Result<Resource> {
        self.inner.get(key).await
    }
    async fn list(&self, q: &ListQuery) -> store::Result<ListPage> {
        self.inner.list(q).await
    }
    async fn create(&self, r: Resource) -> store::Result<Resource> {
        self.inner.create(r).await
    }
    async fn update(&self, r: Resource) -> store::Result<Resource> {
        let current = self.inner.get(&r.key()).await?;
        self.inner.update(current).await?;
        self.inner.update(r).await
    }
    async fn delete(&self, key: &ResourceKey) -> store::Result<()> {
        self.inner.delete(key).await
    }
    fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.inner.subscribe()
    }
    async fn ping(&self) -> store::Result<()> {
        Ok(())
    }
    fn backend(&self) -> &'static str {
        "racing"
    }
}

#[tokio::test]
async fn concurrent_update_is_409() {
    let s = start_with(
        Arc::new(RacingStore {
            inner: Arc::new(MemoryStore::new()),
        }),
        AuthConfig::default(),
    )
    .await;
    assert_eq!(
        s.put("/meshes/default/meshtimeouts/t", timeout("t"))
            .await
            .0,
        StatusCode::CREATED
    );
    let (st, body) = s.put("/meshes/default/meshtimeouts/t", timeout("t")).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(body["status"], 409);
}

#[tokio::test]
async fn overviews() {
    let s = start().await;
    let dp = json!({"type": "Dataplane", "name": "web-1", "mesh": "default",
        "networking": {"address": "10.0.0.1", "inbound": [{"port": 80, "tags": {"kuma.io/service": "web"}}]}});
    assert_eq!(
        s.put("/meshes/default/dataplanes/web-1", dp).await.0,
        StatusCode::CREATED
    );
    s.store
        .create(Resource::new(ResourceType::DataplaneInsight, "default", "web-1", json!({"subscriptions": [
            {"id": "1", "controlPlaneInstanceId": "cp", "connectTime": model::Timestamp::now().to_string()}]})))
        .await
        .unwrap();
    let (_, list) = s.get("/meshes/default/dataplanes+insights").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["type"], "DataplaneOverview");
    assert_eq!(
        list["items"][0]["dataplane"]["networking"]["address"],
        "10.0.0.1"
    );
    assert_eq!(list["items"][0]["online"], true);
    let (st, one) = s.get("/meshes/default/dataplanes/web-1/_overview").await;
    assert_eq!(st, StatusCode::OK);
    assert!(one["dataplaneInsight"]["subscriptions"].is_array());
    let (_, mi) = s.get("/mesh-insights/default").await;
    assert_eq!(mi["dataplanes"]["total"], 1);
    assert_eq!(mi["dataplanes"]["online"], 1);
}

#[tokio::test]
async fn a_mesh_reports_services_left_without_a_vip() {
    let s = start().await;
    let service = |name: &str, status: Value| {
        let mut r = Resource::new(
            ResourceType::MeshService,
            "default",
            name,
            json!({"selector": {"dataplaneTags": {"kuma.io/service": name}},
                   "ports": [{"port": 80}]}),
        );
        r.status = Some(status);
        r
    };
    s.store
        .create(service("with-vip", json!({"vips": [{"ip": "241.0.0.1"}]})))
        .await
        .unwrap();
    let (_, mi) = s.get("/mesh-insights/default").await;
    assert_eq!(
        mi["vips"]["MeshService"],
        json!({"total": 1, "withoutVip": 0})
    );
    assert!(mi.get("warnings").is_none(), "{mi}");

    // What an exhausted pool leaves behind: a service the controller gave no VIP.
    s.store
        .create(service("without-vip", json!({"vips": []})))
        .await
        .unwrap();
    let (_, mi) = s.get("/mesh-insights/default").await;
    assert_eq!(
        mi["vips"]["MeshService"],
        json!({"total": 2, "withoutVip": 1})
    );
    let warning = mi["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("1 MeshService") && warning.contains("KUMA_IPAM_MESH_SERVICE_CIDR"),
        "{mi}"
    );
}

#[tokio::test]
async fn a_bad_query_and_a_wrong_method_answer_in_kumas_error_shape() {
    let s = start().await;
    assert_eq!(
        s.put("/meshes/default/meshtimeouts/t", timeout("t"))
            .await
            .0,
        StatusCode::CREATED
    );
    let (st, body) = s
        .get("/meshes/default/meshtimeouts/t/_resources/dataplanes?size=1&size=2")
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["title"], "Invalid query", "{body}");
    assert_eq!(body["invalid_parameters"][0]["field"], "query", "{body}");
    let r = s
        .http
        .delete(format!("{}/_resources", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], 405, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("DELETE"),
        "{body}"
    );
    // The OpenAPI description is served, as YAML and JSON.
    let (st, spec) = s.get("/openapi.json").await;
    assert_eq!(st, StatusCode::OK);
    assert!(spec["paths"]["/meshes/{mesh}/{plural}/{name}"]["put"].is_object());
}

#[tokio::test]
async fn a_mesh_reports_its_ca_expiry_and_certificates_by_backend() {
    let s = start().await;
    // A provided CA that ends in five days: a warning (the GUI's home page shows it).
    let ca = security::ca::CertificateAuthority::generate("short", Duration::from_secs(5 * 86400))
        .unwrap();
    let mesh = json!({"type": "Mesh", "name": "short-lived",
        "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "provided",
            "conf": {"cert": {"inlineString": ca.cert_pem}, "key": {"inlineString": ca.key_pem}}}]}});
    assert_eq!(
        s.put("/meshes/short-lived", mesh).await.0,
        StatusCode::CREATED
    );
    let dp = json!({"type": "Dataplane", "name": "web-1", "mesh": "short-lived",
        "networking": {"address": "10.0.0.1", "inbound": [{"port": 80, "tags": {"kuma.io/service": "web"}}]}});
    assert_eq!(
        s.put("/meshes/short-lived/dataplanes/web-1", dp).await.0,
        StatusCode::CREATED
    );
    s.store
        .create(Resource::new(
            ResourceType::DataplaneInsight,
            "short-lived",
            "web-1",
            json!({
            "subscriptions": [{"id": "1", "controlPlaneInstanceId": "cp",
                "connectTime": model::Timestamp::now().to_string()}],
            "mTLS": {"issuedBackend": "ca-1"}}),
        ))
        .await
        .unwrap();
    let (_, mi) = s.get("/mesh-insights/short-lived").await;
    assert_eq!(
        mi["mTLS"]["issuedBackends"]["ca-1"],
        json!({"online": 1, "offline": 0, "partiallyDegraded": 0, "total": 1}),
        "{mi}"
    );
    assert_eq!(mi["mTLS"]["ca"]["backend"], "ca-1");
    let expires = model::Timestamp::parse(mi["mTLS"]["ca"]["expirationTime"].as_str().unwrap())
        .unwrap()
        .unix_seconds();
    let in_five_days = model::Timestamp::now().unix_seconds() + 5 * 86400;
    assert!((expires - in_five_days).abs() < 60, "{mi}");
    let warning = mi["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("the CA of mTLS backend \"ca-1\" expires at"),
        "{mi}"
    );

    // A CA with years left, or no mTLS: no warning.
    let (_, mi) = s.get("/mesh-insights/default").await;
    assert!(mi.get("warnings").is_none(), "{mi}");
    assert_eq!(mi["mTLS"], json!({"issuedBackends": {}}));
}

#[tokio::test]
async fn tokens_and_anonymous_access() {
    // Local callers are not admins here, so this test sees what a remote caller sees.
    let s = start_with(
        Arc::new(MemoryStore::new()),
        AuthConfig {
            localhost_is_admin: false,
            anonymous_reads: true,
        },
    )
    .await;
    let (st, _) = s.get("/meshes").await;
    assert_eq!(st, StatusCode::OK, "anonymous reads are allowed");
    let (st, body) = s.put("/meshes/default/meshtimeouts/t", timeout("t")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(body["title"], "Unauthenticated");
    assert_eq!(
        s.get("/globalsecrets").await.0,
        StatusCode::FORBIDDEN,
        "secrets are admin-only"
    );

    let admin_secret = s
        .store
        .get(&ResourceKey::new(
            ResourceType::GlobalSecret,
            "",
            "admin-user-token",
        ))
        .await
        .unwrap();
    let spec: model::specs::secret::SecretSpec = serde_json::from_value(admin_secret.spec).unwrap();
    let admin_token = String::from_utf8(spec.bytes().unwrap()).unwrap();

    let r = s
        .http
        .put(format!("{}/meshes/default/meshtimeouts/t", s.base))
        .bearer_auth(&admin_token)
        .json(&timeout("t"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // Admin issues a user token; the user may write policies but not read secrets or issue tokens.
    let r = s
        .http
        .post(format!("{}/tokens/user", s.base))
        .bearer_auth(&admin_token)
        .json(&json!({"name": "john", "groups": ["team-a"], "validFor": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let user_token = r.text().await.unwrap();
    let r = s
        .http
        .get(format!("{}/who-am-i", s.base))
        .bearer_auth(&user_token)
        .send()
        .await
        .unwrap();
    let me: Value = r.json().await.unwrap();
    assert_eq!(me["name"], "john");
    let r = s
        .http
        .put(format!("{}/meshes/default/meshtimeouts/u", s.base))
        .bearer_auth(&user_token)
        .json(&timeout("u"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s
        .http
        .get(format!("{}/globalsecrets", s.base))
        .bearer_auth(&user_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = s
        .http
        .post(format!("{}/tokens/user", s.base))
        .bearer_auth(&user_token)
        .json(&json!({"name": "x", "validFor": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Bad requests for tokens name their fields.
    let r = s
        .http
        .post(format!("{}/tokens/user", s.base))
        .bearer_auth(&admin_token)
        .json(&json!({"name": "", "validFor": "soon"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(fields(&body), ["name", "validFor"]);

    // A forged or garbage token is 401, not anonymous.
    let r = s
        .http
        .get(format!("{}/meshes", s.base))
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = start().await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Never finish the headers: the server must close the connection on its own.
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "server kept a half-sent request open");
}

async fn admin_token(s: &Server) -> String {
    let secret = s
        .store
        .get(&ResourceKey::new(
            ResourceType::GlobalSecret,
            "",
            "admin-user-token",
        ))
        .await
        .unwrap();
    let spec: model::specs::secret::SecretSpec = serde_json::from_value(secret.spec).unwrap();
    String::from_utf8(spec.bytes().unwrap()).unwrap()
}

impl Server {
    async fn post_token(&self, path: &str, token: &str, body: Value) -> (StatusCode, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let content_type = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let text = r.text().await.unwrap();
        if status == StatusCode::OK {
            assert_eq!(content_type.as_deref(), Some("text/plain"));
        }
        (status, text)
    }
}

#[tokio::test]
async fn dataplane_tokens() {
    let s = start_with(
        Arc::new(MemoryStore::new()),
        AuthConfig {
            localhost_is_admin: false,
            anonymous_reads: true,
        },
    )
    .await;
    let admin = admin_token(&s).await;

    let (st, token) = s
        .post_token(
            "/tokens/dataplane",
            &admin,
            json!({"name": "web-1", "mesh": "default", "tags": {"kuma.io/service": ["web", "web-api"]},
                "type": "dataplane", "validFor": "1h"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{token}");
    // The mesh's signing key was created on first use, as a Secret of the mesh.
    s.store
        .get(&ResourceKey::new(
            ResourceType::Secret,
            "default",
            "dataplane-token-signing-key-default-1",
        ))
        .await
        .unwrap();
    let keys = security::dataplane::dataplane_signing_keys(s.store.clone(), "default");
    let dp_tags = [("kuma.io/service".to_string(), vec!["web".to_string()])]
        .into_iter()
        .collect();
    let claims = security::dataplane::verify_dataplane_token(
        &keys,
        token.trim(),
        "web-1",
        "default",
        &dp_tags,
        "dataplane",
    )
    .await
    .unwrap();
    assert_eq!(claims.mesh, "default");
    assert!(claims.exp <= claims.iat + 3600);
    assert!(
        security::dataplane::verify_dataplane_token(
            &keys,
            token.trim(),
            "web-2",
            "default",
            &dp_tags,
            "dataplane",
        )
        .await
        .is_err()
    );

    // Only mesh is needed: no validFor means ten years; Go kumactl sends null tags.
    let (st, token) = s
        .post_token(
            "/tokens/dataplane",
            &admin,
            json!({"mesh": "default", "tags": null}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{token}");
    let claims = security::dataplane::verify_dataplane_token(
        &keys,
        token.trim(),
        "any",
        "default",
        &Default::default(),
        "",
    )
    .await
    .unwrap();
    assert!(claims.exp - claims.iat >= 87_600 * 3600);
    assert!(claims.name.is_empty() && claims.tags.is_empty());
    // The signing key is reused, not rotated, by later requests.
    let secrets = s
        .store
        .list(&ListQuery::in_mesh(ResourceType::Secret, "default"))
        .await
        .unwrap();
    assert_eq!(secrets.total, 1);

    // A non-admin user may not issue dataplane tokens.
    let (st, user_token) = s
        .post_token(
            "/tokens/user",
            &admin,
            json!({"name": "john", "validFor": "1h"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .post_token("/tokens/dataplane", &user_token, json!({"mesh": "default"}))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // Bad requests name their fields.
    for (body, field) in [
        (json!({"name": "web-1"}), "mesh"),
        (json!({"mesh": ""}), "mesh"),
        (json!({"mesh": "ghost"}), "mesh"),
        (json!({"mesh": "default", "validFor": "soon"}), "validFor"),
        (json!({"mesh": "default", "validFor": "0s"}), "validFor"),
        (json!({"mesh": "default", "type": "gateway"}), "type"),
        (json!({"mesh": "default", "name": "Bad_Name!"}), "name"),
        (
            json!({"mesh": "default", "tags": {"team": []}}),
            "tags[\"team\"]",
        ),
        (json!({"mesh": "default", "nmae": "web-1"}), "body"),
        (json!({"mesh": "default", "tags": ["x"]}), "body"),
    ] {
        let (st, text) = s
            .post_token("/tokens/dataplane", &admin, body.clone())
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {text}");
        let err: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(fields(&err), [field], "{body}: {text}");
    }
    let (_, text) = s
        .post_token("/tokens/dataplane", &admin, json!({"mesh": ""}))
        .await;
    assert!(text.contains("cannot be empty"), "{text}");
    // Nothing was created in a mesh that does not exist.
    assert!(
        s.store
            .list(&ListQuery::all(ResourceType::Secret))
            .await
            .unwrap()
            .total
            == 1
    );
}

#[tokio::test]
async fn dataplane_token_signing_key_is_created_once_under_races() {
    let s = start().await;
    let admin = admin_token(&s).await;
    let requests = (0..4).map(|_| {
        s.post_token(
            "/tokens/dataplane",
            &admin,
            json!({"mesh": "default", "validFor": "1h"}),
        )
    });
    let tokens = futures::future::join_all(requests).await;
    let keys = security::dataplane::dataplane_signing_keys(s.store.clone(), "default");
    for (st, token) in tokens {
        assert_eq!(st, StatusCode::OK, "{token}");
        security::dataplane::verify_dataplane_token(
            &keys,
            token.trim(),
            "web-1",
            "default",
            &Default::default(),
            "",
        )
        .await
        .unwrap();
    }
    let secrets = s
        .store
        .list(&ListQuery::in_mesh(ResourceType::Secret, "default"))
        .await
        .unwrap();
    assert_eq!(secrets.total, 1);
}

#[tokio::test]
async fn zone_issues_dataplane_tokens_with_globals_key_only() {
    let s = start_in_mode(Arc::new(MemoryStore::new()), AuthConfig::default(), "zone").await;
    let admin = admin_token(&s).await;
    // No key synced from global yet: the zone does not make one of its own.
    let (st, text) = s
        .post_token("/tokens/dataplane", &admin, json!({"mesh": "default"}))
        .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert!(text.contains("synced from global"), "{text}");
    let secrets = s
        .store
        .list(&ListQuery::in_mesh(ResourceType::Secret, "default"))
        .await
        .unwrap();
    assert_eq!(secrets.total, 0);

    // Once global's key is there (as KDS stores it, same name), the zone signs with it.
    let global_keys = security::dataplane::dataplane_signing_keys(s.store.clone(), "default");
    global_keys.ensure_key().await.unwrap();
    let (st, token) = s
        .post_token("/tokens/dataplane", &admin, json!({"mesh": "default"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{token}");
    security::dataplane::verify_dataplane_token(
        &global_keys,
        token.trim(),
        "web-1",
        "default",
        &Default::default(),
        "",
    )
    .await
    .unwrap();
}

/// Kuma's API paths and list semantics: the alternative paths (`/global-secrets`,
/// `/zone-ingresses`), `_overview` lists and the legacy `zoneegressoverviews`; a list in a
/// mesh that does not exist is 404; a filter other than `filter[labels.<key>]` is 400 naming
/// the parameter under the route's path; page sizes answer Kuma's reasons.
#[tokio::test]
async fn kuma_paths_and_list_semantics() {
    let s = start().await;
    let secret = json!({"type": "GlobalSecret", "name": "g1", "data": "c2VjcmV0"});
    assert_eq!(
        s.put("/global-secrets/g1", secret).await.0,
        StatusCode::CREATED
    );
    let (st, one) = s.get("/globalsecrets/g1").await;
    assert_eq!((st, one["name"].clone()), (StatusCode::OK, json!("g1")));
    let (_, list) = s.get("/global-secrets").await;
    assert!(
        list["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|i| i["name"] == "g1")),
        "{list}"
    );
    assert_eq!(s.delete("/global-secrets/g1").await, StatusCode::OK);
    let (_, list) = s.get("/zone-ingresses").await;
    assert_eq!(list["total"], 0);

    let dp = json!({"type": "Dataplane", "name": "web-1", "mesh": "default",
        "networking": {"address": "10.0.0.1", "inbound": [{"port": 80, "tags": {"kuma.io/service": "web"}}]}});
    assert_eq!(
        s.put("/meshes/default/dataplanes/web-1", dp).await.0,
        StatusCode::CREATED
    );
    let (st, list) = s.get("/meshes/default/dataplanes/_overview").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list["items"][0]["type"], "DataplaneOverview");
    let (st, list) = s.get("/dataplanes/_overview").await;
    assert_eq!((st, list["total"].clone()), (StatusCode::OK, json!(1)));
    let (st, _) = s.get("/zoneegressoverviews").await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s.get("/zones/_overview").await;
    assert_eq!(st, StatusCode::OK);

    for path in [
        "/meshes/nowhere/meshtimeouts",
        "/meshes/nowhere/dataplanes+insights",
        "/meshes/nowhere/dataplanes/_overview",
    ] {
        let (st, body) = s.get(path).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["title"], "Failed to retrieve Mesh", "{path}");
    }

    let (st, body) = s
        .get("/meshes/default/meshtimeouts?filter%5Blabelds.x%5D=1")
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        fields(&body),
        ["/meshes/{mesh}/meshtimeouts.filter[labelds.x]"]
    );
    assert_eq!(
        body["invalid_parameters"][0]["reason"],
        "filters are only supported on labels"
    );
    let (st, body) = s
        .get("/meshes/default/meshtimeouts?filter%5Blabels.k%5D%5Beq%5D=1")
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["invalid_parameters"][0]["reason"],
        "advanced filters are not supported"
    );
    for (size, reason) in [
        ("abc", "invalid format"),
        ("0", "must be greater than 0"),
        (
            "1001",
            "invalid page size of 1001. Maximum page size is 1000",
        ),
    ] {
        let (st, body) = s
            .get(&format!("/meshes/default/meshtimeouts?size={size}"))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert_eq!(body["detail"], "Invalid page size");
        assert_eq!(
            body["invalid_parameters"][0]["reason"], reason,
            "size={size}"
        );
    }
}

/// Kuma's immutable labels: an update that changes `kuma.io/display-name` (or origin, zone)
/// is 400 with Kuma's reason and changes nothing; one that leaves it out keeps it.
#[tokio::test]
async fn identity_labels_are_immutable() {
    let s = start().await;
    let mut t = timeout("t-labels");
    t["labels"] = json!({"kuma.io/display-name": "orig", "team": "a"});
    assert_eq!(
        s.put("/meshes/default/meshtimeouts/t-labels", t.clone())
            .await
            .0,
        StatusCode::CREATED
    );
    let mut other = t.clone();
    other["labels"]["kuma.io/display-name"] = json!("other");
    let (st, body) = s.put("/meshes/default/meshtimeouts/t-labels", other).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(fields(&body), ["labels[\"kuma.io/display-name\"]"]);
    assert_eq!(
        body["invalid_parameters"][0]["reason"],
        "is immutable, cannot be changed from \"orig\" to \"other\""
    );
    let mut without = t.clone();
    without["labels"] = json!({"team": "b"});
    assert_eq!(
        s.put("/meshes/default/meshtimeouts/t-labels", without)
            .await
            .0,
        StatusCode::OK
    );
    let (_, stored) = s.get("/meshes/default/meshtimeouts/t-labels").await;
    assert_eq!(stored["labels"]["kuma.io/display-name"], "orig");
    assert_eq!(stored["labels"]["team"], "b");
}

/// As Kuma: a mesh with Dataplanes in it is not deleted (400 naming `mesh`), and a mesh's CA
/// does not change while mTLS is on (400 naming `mtls.enabledBackend`).
#[tokio::test]
async fn mesh_deletion_and_ca_changes_are_guarded() {
    let s = start().await;
    let ca = |name: &str| {
        json!({"type": "Mesh", "name": "guarded", "mtls": {"enabledBackend": name, "backends": [
            {"name": "ca-1", "type": "builtin"}, {"name": "ca-2", "type": "builtin"}]}})
    };
    assert_eq!(
        s.put("/meshes/guarded", ca("ca-1")).await.0,
        StatusCode::CREATED
    );
    let (st, body) = s.put("/meshes/guarded", ca("ca-2")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(fields(&body), ["mtls.enabledBackend"]);
    let (_, mesh) = s.get("/meshes/guarded").await;
    assert_eq!(mesh["mtls"]["enabledBackend"], "ca-1");

    let dp = json!({"type": "Dataplane", "name": "web-1", "mesh": "guarded",
        "networking": {"address": "10.0.0.1", "inbound": [{"port": 80, "tags": {"kuma.io/service": "web"}}]}});
    assert_eq!(
        s.put("/meshes/guarded/dataplanes/web-1", dp).await.0,
        StatusCode::CREATED
    );
    let r = s
        .http
        .delete(format!("{}/meshes/guarded", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["invalid_parameters"][0]["reason"],
        "unable to delete mesh, there are still some dataplanes attached"
    );
    assert_eq!(s.get("/meshes/guarded").await.0, StatusCode::OK);
    assert_eq!(
        s.delete("/meshes/guarded/dataplanes/web-1").await,
        StatusCode::OK
    );
    assert_eq!(s.delete("/meshes/guarded").await, StatusCode::OK);
}

/// Reads server-sent events off a response: (event name, data) per event.
struct EventReader {
    response: reqwest::Response,
    buffer: String,
}

impl EventReader {
    async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(event) = api::events::take_event(&mut self.buffer) {
                return event.unwrap();
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("the stream stays open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

#[tokio::test]
async fn the_change_stream_reports_writes_by_type_and_mesh() {
    let s = start().await;
    let (st, body) = s.get("/events?types=Dataplane,Bogus").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(fields(&body), ["types"]);

    let response = s
        .http
        .get(format!("{}/events?types=MeshTimeout&mesh=default", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut events = EventReader {
        response,
        buffer: String::new(),
    };
    assert_eq!(events.next().await.0, "ready");
    // Another type and another mesh's policy are left out; the policy and its removal come.
    s.put("/meshes/other", json!({"type": "Mesh", "name": "other"}))
        .await;
    let mut elsewhere = timeout("elsewhere");
    elsewhere["mesh"] = json!("other");
    s.put("/meshes/other/meshtimeouts/elsewhere", elsewhere)
        .await;
    assert_eq!(
        s.put("/meshes/default/meshtimeouts/t1", timeout("t1"))
            .await
            .0,
        StatusCode::CREATED
    );
    let (name, data) = events.next().await;
    assert_eq!(name, "change");
    assert_eq!(
        data,
        json!({"operation": "Create", "type": "MeshTimeout", "mesh": "default", "name": "t1", "version": 1})
    );
    assert_eq!(
        s.delete("/meshes/default/meshtimeouts/t1").await,
        StatusCode::OK
    );
    let (_, data) = events.next().await;
    assert_eq!(data["operation"], "Delete");

    // Secrets' changes are an admin's to follow.
    let anonymous = start_with(
        Arc::new(MemoryStore::new()),
        AuthConfig {
            localhost_is_admin: false,
            anonymous_reads: true,
        },
    )
    .await;
    assert_eq!(
        anonymous.get("/events?types=Secret").await.0,
        StatusCode::FORBIDDEN
    );
}
