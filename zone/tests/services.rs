//! The service controller against a real store: MeshServices follow Dataplanes, get a VIP and
//! hostnames, keep them across a restart of the controller, and go after their grace period.

use std::sync::Arc;
use std::time::Duration;

use model::{Resource, ResourceKey, ResourceType};
use serde_json::{Value, json};
use store::{ListQuery, MemoryStore, SharedStore};
use tokio::sync::watch;
use zone::services::{ServicesConfig, run};

fn config(grace: Duration) -> ServicesConfig {
    ServicesConfig {
        zone: "zone-1".into(),
        cidrs: [
            "241.0.0.0/8".into(),
            "242.0.0.0/8".into(),
            "243.0.0.0/8".into(),
        ],
        generate: true,
        deletion_grace_period: grace,
    }
}

fn dataplane(name: &str, service: &str, port: u32) -> Resource {
    Resource::new(
        ResourceType::Dataplane,
        "default",
        name,
        json!({"networking": {"address": "10.0.0.1", "inbound": [
            {"port": port, "tags": {"kuma.io/service": service, "kuma.io/protocol": "http"}}]}}),
    )
}

fn service_key(name: &str) -> ResourceKey {
    ResourceKey::new(ResourceType::MeshService, "default", name)
}

/// Waits (on the store's events, not a poll) until `check` holds for what the store has.
async fn until<T>(store: &SharedStore, what: &str, check: impl Fn(&[Resource]) -> Option<T>) -> T {
    let mut events = store.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let all = store
            .list(&ListQuery::all(ResourceType::MeshService))
            .await
            .expect("the memory store lists")
            .items;
        if let Some(found) = check(&all) {
            return found;
        }
        tokio::select! {
            _ = events.recv() => {}
            () = tokio::time::sleep_until(deadline) => panic!("timed out waiting for {what}: {all:#?}"),
        }
    }
}

fn status<'a>(all: &'a [Resource], name: &str) -> Option<&'a Value> {
    all.iter().find(|r| r.meta.name == name)?.status.as_ref()
}

#[tokio::test]
async fn services_follow_dataplanes_with_vips_hostnames_and_status() {
    let store: SharedStore = Arc::new(MemoryStore::new());
    store
        .create(Resource::new(
            ResourceType::Mesh,
            "",
            "default",
            json!({"meshServices": {"mode": "Exclusive"}}),
        ))
        .await
        .unwrap();
    let mut generator = Resource::new(
        ResourceType::HostnameGenerator,
        "",
        "local-universal-mesh-service",
        json!({"template": "{{ .DisplayName }}.svc.mesh.local",
               "selector": {"meshService": {"matchLabels": {"kuma.io/origin": "zone"}}}}),
    );
    generator
        .meta
        .labels
        .insert("kuma.io/origin".into(), "zone".into());
    store.create(generator).await.unwrap();
    store
        .create(dataplane("backend-1", "backend", 8080))
        .await
        .unwrap();
    store
        .create(dataplane("backend-2", "backend", 8080))
        .await
        .unwrap();

    let (stop_tx, stop) = watch::channel(false);
    let controller = tokio::spawn(run(store.clone(), config(Duration::from_millis(300)), stop));

    let backend = until(&store, "backend's VIP, hostname and proxies", |all| {
        let s = status(all, "backend")?;
        (s.pointer("/dataplaneProxies/total") == Some(&json!(2)) && s.get("addresses").is_some())
            .then(|| s.clone())
    })
    .await;
    assert_eq!(backend["vips"], json!([{"ip": "241.0.0.1"}]));
    assert_eq!(
        backend["addresses"][0]["hostname"],
        "backend.svc.mesh.local"
    );
    assert_eq!(backend["tls"]["status"], "NotReady");

    // A new service's Dataplane: its MeshService arrives with the next VIP.
    store.create(dataplane("web-1", "web", 80)).await.unwrap();
    let web = until(&store, "web", |all| status(all, "web").cloned()).await;
    assert_eq!(web["vips"], json!([{"ip": "241.0.0.2"}]));

    // A restarted controller (a new leader) keeps every VIP and writes nothing.
    stop_tx.send(true).unwrap();
    controller.await.unwrap();
    let before = store.get(&service_key("backend")).await.unwrap();
    let (stop_tx, stop) = watch::channel(false);
    let controller = tokio::spawn(run(store.clone(), config(Duration::from_millis(300)), stop));
    store.create(dataplane("api-1", "api", 81)).await.unwrap();
    let api = until(&store, "api", |all| status(all, "api").cloned()).await;
    assert_eq!(
        api["vips"],
        json!([{"ip": "241.0.0.3"}]),
        "no live VIP is handed out again"
    );
    let after = store.get(&service_key("backend")).await.unwrap();
    assert_eq!(
        before.meta.version, after.meta.version,
        "backend was not rewritten"
    );

    // Its Dataplanes gone, backend waits out the grace period and then goes.
    for dp in ["backend-1", "backend-2"] {
        store
            .delete(&ResourceKey::new(ResourceType::Dataplane, "default", dp))
            .await
            .unwrap();
    }
    until(&store, "backend's grace period to start", |all| {
        all.iter()
            .find(|r| r.meta.name == "backend")?
            .label("kuma.io/deletion-grace-period-started-at")
            .map(|_| ())
    })
    .await;
    until(&store, "backend to be deleted", |all| {
        (!all.iter().any(|r| r.meta.name == "backend")).then_some(())
    })
    .await;
    stop_tx.send(true).unwrap();
    controller.await.unwrap();
}

/// A mesh that generates nothing and has no MeshService does not read its Dataplanes' changes;
/// a MeshService applied later still counts every proxy it selects, including those that
/// changed meanwhile.
#[tokio::test]
async fn a_mesh_without_services_lists_its_proxies_once_it_needs_them() {
    let store: SharedStore = Arc::new(MemoryStore::new());
    store
        .create(Resource::new(ResourceType::Mesh, "", "default", json!({})))
        .await
        .unwrap();
    let (_stop, stopped) = watch::channel(false);
    tokio::spawn(run(store.clone(), config(Duration::from_secs(60)), stopped));
    store.create(dataplane("web-1", "web", 8080)).await.unwrap();
    let mut second = store
        .create(dataplane("web-2", "other", 8080))
        .await
        .unwrap();
    // Changed while the mesh needed no proxies: the later MeshService must see it as it is now.
    second.spec["networking"]["inbound"][0]["tags"]["kuma.io/service"] = json!("web");
    store.update(second).await.unwrap();
    store
        .create(Resource::new(
            ResourceType::MeshService,
            "default",
            "web",
            json!({"selector": {"dataplaneTags": {"kuma.io/service": "web"}},
                   "ports": [{"port": 8080, "targetPort": 8080, "appProtocol": "http"}]}),
        ))
        .await
        .unwrap();
    until(
        &store,
        "the user's MeshService counting both proxies",
        |all| {
            let total = status(all, "web")?
                .pointer("/dataplaneProxies/total")?
                .as_u64()?;
            (total == 2).then_some(())
        },
    )
    .await;
    // Nothing was generated in a Disabled mesh.
    let all = store
        .list(&ListQuery::all(ResourceType::MeshService))
        .await
        .unwrap()
        .items;
    assert_eq!(all.len(), 1, "{all:#?}");
}
