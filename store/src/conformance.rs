//! The conformance suite every backend must pass, written once. A backend's tests call
//! [`conformance_tests!`] with an async expression that yields a fresh or shared store; each
//! case works in meshes named after itself so cases can share one database.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use model::{Resource, ResourceKey, ResourceType};
use serde_json::json;
use tokio::sync::broadcast;

use crate::{ChangeEvent, ListQuery, Operation, SharedStore, StoreError};

/// Generates one `#[tokio::test]` per conformance case.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            create_then_get, create_duplicate_fails, create_requires_mesh, update_bumps_version,
            stale_update_conflicts, update_and_delete_missing, list_is_ordered_and_paged,
            list_filters, for_each_sees_what_list_lists, for_each_after_resumes_by_key, list_across_meshes, global_scoped_ignore_mesh, delete_mesh_cascades,
            delete_owner_removes_insight, events_follow_writes, events_carry_the_writes_trace,
            concurrent_updates_one_wins, content_round_trips);
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store: $crate::SharedStore = $make;
                $crate::conformance::$case(store).await;
            }
        )*
    };
}

/// A Mesh named `name`, for the suite and backends' own tests.
pub fn mesh(name: &str) -> Resource {
    Resource::new(ResourceType::Mesh, "", name, json!({}))
}

/// A MeshTimeout in `mesh`.
pub fn timeout(mesh: &str, name: &str) -> Resource {
    Resource::new(
        ResourceType::MeshTimeout,
        mesh,
        name,
        json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "20s"}}]}),
    )
}

fn dataplane(mesh: &str, name: &str) -> Resource {
    Resource::new(
        ResourceType::Dataplane,
        mesh,
        name,
        json!({"networking": {"address": "10.0.0.1", "inbound": [{"port": 80, "tags": {"kuma.io/service": "web"}}]}}),
    )
}

async fn fresh_mesh(store: &SharedStore, name: &str) {
    // Cases may share a database across runs: start from nothing.
    let _ = store
        .delete(&ResourceKey::new(ResourceType::Mesh, "", name))
        .await;
    store.create(mesh(name)).await.expect("create mesh");
}

async fn next_event_in_mesh(rx: &mut broadcast::Receiver<ChangeEvent>, mesh: &str) -> ChangeEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("timed out waiting for a change event")
            .expect("event stream closed or lagged");
        let ev_mesh = if ev.key.kind == ResourceType::Mesh {
            &ev.key.name
        } else {
            &ev.key.mesh
        };
        if ev_mesh == mesh {
            return ev;
        }
    }
}

pub async fn create_then_get(store: SharedStore) {
    fresh_mesh(&store, "c-create").await;
    let created = store
        .create(timeout("c-create", "t1"))
        .await
        .expect("create");
    assert_eq!(created.meta.version, 1);
    assert!(created.meta.creation_time.0 > 0);
    assert_eq!(created.meta.creation_time, created.meta.modification_time);
    let got = store.get(&created.key()).await.expect("get");
    assert_eq!(got.spec, created.spec);
    assert_eq!(got.meta.version, 1);
    assert_eq!(got.meta.creation_time, created.meta.creation_time);
}

pub async fn create_duplicate_fails(store: SharedStore) {
    fresh_mesh(&store, "c-dup").await;
    store.create(timeout("c-dup", "t1")).await.expect("create");
    let err = store
        .create(timeout("c-dup", "t1"))
        .await
        .expect_err("duplicate");
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err:?}");
}

pub async fn create_requires_mesh(store: SharedStore) {
    let err = store
        .create(timeout("c-no-such-mesh", "t1"))
        .await
        .expect_err("no mesh");
    assert!(
        matches!(err, StoreError::MeshNotFound(ref m) if m == "c-no-such-mesh"),
        "{err:?}"
    );
}

pub async fn update_bumps_version(store: SharedStore) {
    fresh_mesh(&store, "c-update").await;
    let created = store
        .create(timeout("c-update", "t1"))
        .await
        .expect("create");
    let mut changed = created.clone();
    changed.spec["to"][0]["default"]["idleTimeout"] = json!("30s");
    changed.meta.labels.insert("team".into(), "a".into());
    let updated = store.update(changed).await.expect("update");
    assert_eq!(updated.meta.version, 2);
    assert_eq!(updated.meta.creation_time, created.meta.creation_time);
    assert!(updated.meta.modification_time >= created.meta.modification_time);
    let got = store.get(&created.key()).await.expect("get");
    assert_eq!(got.spec["to"][0]["default"]["idleTimeout"], "30s");
    assert_eq!(got.meta.labels.get("team").map(String::as_str), Some("a"));
    assert_eq!(got.meta.version, 2);
}

pub async fn stale_update_conflicts(store: SharedStore) {
    fresh_mesh(&store, "c-stale").await;
    let created = store
        .create(timeout("c-stale", "t1"))
        .await
        .expect("create");
    let mut first = created.clone();
    first.spec["to"][0]["default"]["idleTimeout"] = json!("1s");
    store.update(first).await.expect("first update");
    let mut stale = created.clone();
    stale.spec["to"][0]["default"]["idleTimeout"] = json!("2s");
    let err = store
        .update(stale)
        .await
        .expect_err("stale update must fail");
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 1,
                actual: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let got = store.get(&created.key()).await.expect("get");
    assert_eq!(
        got.spec["to"][0]["default"]["idleTimeout"], "1s",
        "a failed update changed data"
    );
}

pub async fn update_and_delete_missing(store: SharedStore) {
    fresh_mesh(&store, "c-missing").await;
    let mut r = timeout("c-missing", "ghost");
    r.meta.version = 1;
    assert!(matches!(
        store.update(r).await,
        Err(StoreError::NotFound(_))
    ));
    let key = ResourceKey::new(ResourceType::MeshTimeout, "c-missing", "ghost");
    assert!(matches!(
        store.delete(&key).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.get(&key).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn list_is_ordered_and_paged(store: SharedStore) {
    fresh_mesh(&store, "c-page").await;
    for name in ["e", "b", "d", "a", "c"] {
        store.create(timeout("c-page", name)).await.expect("create");
    }
    let mut q = ListQuery::in_mesh(ResourceType::MeshTimeout, "c-page");
    q.size = Some(2);
    let p1 = store.list(&q).await.expect("page 1");
    assert_eq!(p1.total, 5);
    assert_eq!(names(&p1.items), ["a", "b"]);
    assert_eq!(p1.next_offset, Some(2));
    q.offset = 2;
    let p2 = store.list(&q).await.expect("page 2");
    assert_eq!(names(&p2.items), ["c", "d"]);
    q.offset = 4;
    let p3 = store.list(&q).await.expect("page 3");
    assert_eq!(names(&p3.items), ["e"]);
    assert_eq!(p3.next_offset, None);
    q.offset = 10;
    let past = store.list(&q).await.expect("past the end");
    assert!(past.items.is_empty());
    assert_eq!(past.total, 5);
}

pub async fn list_filters(store: SharedStore) {
    fresh_mesh(&store, "c-filter").await;
    for (name, team) in [("web-a", "a"), ("web-b", "b"), ("db-a", "a")] {
        let mut r = timeout("c-filter", name);
        r.meta.labels.insert("team".into(), team.into());
        store.create(r).await.expect("create");
    }
    let mut q = ListQuery::in_mesh(ResourceType::MeshTimeout, "c-filter");
    q.labels = BTreeMap::from([("team".to_string(), "a".to_string())]);
    assert_eq!(
        names(&store.list(&q).await.expect("labels").items),
        ["db-a", "web-a"]
    );
    q.name_contains = Some("web".into());
    assert_eq!(names(&store.list(&q).await.expect("both").items), ["web-a"]);
    q.labels.clear();
    assert_eq!(
        names(&store.list(&q).await.expect("name").items),
        ["web-a", "web-b"]
    );
    q.labels.insert("team".into(), "nobody".into());
    assert_eq!(store.list(&q).await.expect("none").total, 0);
    // Another type in the same mesh is not listed.
    store
        .create(dataplane("c-filter", "web-dp"))
        .await
        .expect("dp");
    let q = ListQuery::in_mesh(ResourceType::MeshTimeout, "c-filter");
    assert_eq!(store.list(&q).await.expect("type").total, 3);
}

pub async fn for_each_sees_what_list_lists(store: SharedStore) {
    fresh_mesh(&store, "c-each").await;
    for (name, team) in [
        ("web-a", "a"),
        ("web-b", "b"),
        ("db-a", "a"),
        ("api-a", "a"),
    ] {
        let mut r = timeout("c-each", name);
        r.meta.labels.insert("team".into(), team.into());
        store.create(r).await.expect("create");
    }
    let mut q = ListQuery::in_mesh(ResourceType::MeshTimeout, "c-each");
    q.labels = BTreeMap::from([("team".to_string(), "a".to_string())]);
    // Paging is the list's: for_each shows every match.
    q.offset = 1;
    q.size = Some(1);
    let mut seen = Vec::new();
    store
        .for_each(&q, &mut |r| seen.push(r.meta.name.clone()))
        .await
        .expect("for_each");
    assert_eq!(seen, ["api-a", "db-a", "web-a"]);
}

pub async fn for_each_after_resumes_by_key(store: SharedStore) {
    fresh_mesh(&store, "c-after").await;
    for name in ["a", "b", "c", "d", "e"] {
        store
            .create(timeout("c-after", name))
            .await
            .expect("create");
    }
    let q = ListQuery::in_mesh(ResourceType::MeshTimeout, "c-after");
    // Parts of two, resumed after the last key each returns, show every match once and in
    // order, on backends that page as on those that show everything at once.
    let (mut seen, mut after, mut calls) = (Vec::new(), None, 0);
    loop {
        calls += 1;
        let next = store
            .for_each_after(&q, after.as_ref(), 2, &mut |r| {
                seen.push(r.meta.name.clone())
            })
            .await
            .expect("for_each_after");
        match next {
            Some(key) => {
                assert_eq!(Some(&key.name), seen.last(), "resumes after the last shown");
                if key.name == "b" {
                    // Deleted behind the cursor, created ahead of it: neither is skipped or
                    // shown twice.
                    store
                        .delete(&ResourceKey::new(ResourceType::MeshTimeout, "c-after", "a"))
                        .await
                        .expect("delete");
                    store.create(timeout("c-after", "f")).await.expect("f");
                }
                after = Some(key);
            }
            None => break,
        }
        assert!(calls < 10, "for_each_after does not end");
    }
    let shown: Vec<&str> = seen.iter().map(String::as_str).collect();
    match calls {
        // Everything at once: what was there then.
        1 => assert_eq!(shown, ["a", "b", "c", "d", "e"]),
        _ => assert_eq!(shown, ["a", "b", "c", "d", "e", "f"]),
    }
    let none = store
        .for_each_after(
            &q,
            Some(&ResourceKey::new(ResourceType::MeshTimeout, "c-after", "z")),
            2,
            &mut |_| panic!("nothing sorts after z"),
        )
        .await
        .expect("after the last");
    assert_eq!(none, None);
}

pub async fn list_across_meshes(store: SharedStore) {
    fresh_mesh(&store, "c-across-1").await;
    fresh_mesh(&store, "c-across-2").await;
    store
        .create(timeout("c-across-1", "x-across"))
        .await
        .expect("1");
    store
        .create(timeout("c-across-2", "x-across"))
        .await
        .expect("2");
    let mut q = ListQuery::all(ResourceType::MeshTimeout);
    q.name_contains = Some("x-across".into());
    let page = store.list(&q).await.expect("list");
    let meshes: Vec<&str> = page.items.iter().map(|r| r.meta.mesh.as_str()).collect();
    assert_eq!(meshes, ["c-across-1", "c-across-2"]);
}

pub async fn global_scoped_ignore_mesh(store: SharedStore) {
    let key = ResourceKey::new(ResourceType::Zone, "", "c-zone-1");
    let _ = store.delete(&key).await;
    let zone = Resource::new(
        ResourceType::Zone,
        "ignored",
        "c-zone-1",
        json!({"enabled": true}),
    );
    assert_eq!(zone.meta.mesh, "");
    store.create(zone).await.expect("create zone");
    let got = store.get(&key).await.expect("get zone");
    assert_eq!(got.spec["enabled"], true);
    store.delete(&key).await.expect("delete zone");
}

pub async fn delete_mesh_cascades(store: SharedStore) {
    fresh_mesh(&store, "c-cascade").await;
    fresh_mesh(&store, "c-cascade-other").await;
    store.create(timeout("c-cascade", "t1")).await.expect("t1");
    store
        .create(dataplane("c-cascade", "dp1"))
        .await
        .expect("dp1");
    store
        .create(timeout("c-cascade-other", "t1"))
        .await
        .expect("other");
    let mut rx = store.subscribe();
    store
        .delete(&ResourceKey::new(ResourceType::Mesh, "", "c-cascade"))
        .await
        .expect("delete mesh");
    for kind in [ResourceType::MeshTimeout, ResourceType::Dataplane] {
        let left = store
            .list(&ListQuery::in_mesh(kind, "c-cascade"))
            .await
            .expect("list");
        assert_eq!(left.total, 0, "{kind} left behind in a deleted mesh");
    }
    let other = store
        .list(&ListQuery::in_mesh(
            ResourceType::MeshTimeout,
            "c-cascade-other",
        ))
        .await
        .expect("list");
    assert_eq!(other.total, 1, "deleting one mesh touched another");
    let mut deleted = Vec::new();
    while deleted.len() < 3 {
        let ev = next_event_in_mesh(&mut rx, "c-cascade").await;
        // Backends that deliver events asynchronously may still be announcing the creates.
        if ev.op == Operation::Create {
            continue;
        }
        assert_eq!(ev.op, Operation::Delete);
        deleted.push(ev.key.kind);
    }
    deleted.sort();
    assert_eq!(
        deleted,
        [
            ResourceType::Mesh,
            ResourceType::Dataplane,
            ResourceType::MeshTimeout
        ]
    );
}

pub async fn delete_owner_removes_insight(store: SharedStore) {
    fresh_mesh(&store, "c-owner").await;
    store.create(dataplane("c-owner", "dp1")).await.expect("dp");
    let insight = Resource::new(
        ResourceType::DataplaneInsight,
        "c-owner",
        "dp1",
        json!({"subscriptions": []}),
    );
    store.create(insight).await.expect("insight");
    store
        .delete(&ResourceKey::new(ResourceType::Dataplane, "c-owner", "dp1"))
        .await
        .expect("delete dp");
    let err = store
        .get(&ResourceKey::new(
            ResourceType::DataplaneInsight,
            "c-owner",
            "dp1",
        ))
        .await;
    assert!(
        matches!(err, Err(StoreError::NotFound(_))),
        "insight outlived its dataplane"
    );

    let zone_key = ResourceKey::new(ResourceType::Zone, "", "c-owner-zone");
    let _ = store.delete(&zone_key).await;
    store
        .create(Resource::new(
            ResourceType::Zone,
            "",
            "c-owner-zone",
            json!({}),
        ))
        .await
        .expect("zone");
    store
        .create(Resource::new(
            ResourceType::ZoneInsight,
            "",
            "c-owner-zone",
            json!({}),
        ))
        .await
        .expect("zi");
    store.delete(&zone_key).await.expect("delete zone");
    let err = store
        .get(&ResourceKey::new(
            ResourceType::ZoneInsight,
            "",
            "c-owner-zone",
        ))
        .await;
    assert!(
        matches!(err, Err(StoreError::NotFound(_))),
        "zone insight outlived its zone"
    );
}

pub async fn events_follow_writes(store: SharedStore) {
    let mut rx = store.subscribe();
    fresh_mesh(&store, "c-events").await;
    // fresh_mesh may delete a leftover mesh first; skip to the create.
    loop {
        let ev = next_event_in_mesh(&mut rx, "c-events").await;
        if ev.op == Operation::Create && ev.key.kind == ResourceType::Mesh {
            break;
        }
    }
    let created = store
        .create(timeout("c-events", "t1"))
        .await
        .expect("create");
    let ev = next_event_in_mesh(&mut rx, "c-events").await;
    assert_eq!(
        (ev.op, ev.key.clone(), ev.version),
        (Operation::Create, created.key(), 1)
    );
    let updated = store.update(created.clone()).await.expect("update");
    let ev = next_event_in_mesh(&mut rx, "c-events").await;
    assert_eq!(
        (ev.op, ev.version),
        (Operation::Update, updated.meta.version)
    );
    store.delete(&created.key()).await.expect("delete");
    let ev = next_event_in_mesh(&mut rx, "c-events").await;
    assert_eq!((ev.op, ev.key), (Operation::Delete, created.key()));
}

/// A write made in a trace (an API request's span) gives its change event that trace as its
/// cause, whatever the backend's events come from (Postgres's NOTIFY, etcd's watch); a write
/// outside one gives none.
pub async fn events_carry_the_writes_trace(store: SharedStore) {
    use opentelemetry::trace::TracerProvider as _;
    use tracing::Instrument;
    use tracing_subscriber::layer::SubscriberExt;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("conformance")));
    // The test's own future runs on this thread: its spans and the store's reads of them see
    // this subscriber.
    let _default = tracing::subscriber::set_default(subscriber);
    let mut rx = store.subscribe();
    fresh_mesh(&store, "c-trace").await;
    let span = tracing::info_span!("api request");
    let expected = crate::trace::traceparent(&span).expect("a span in a trace");
    let created = store
        .create(timeout("c-trace", "t1"))
        .instrument(span)
        .await
        .expect("create");
    loop {
        let ev = next_event_in_mesh(&mut rx, "c-trace").await;
        if ev.key == created.key() {
            assert_eq!(ev.cause.as_deref(), Some(&*expected), "{ev:?}");
            break;
        }
    }
    let updated = store.update(created).await.expect("update");
    loop {
        let ev = next_event_in_mesh(&mut rx, "c-trace").await;
        if ev.key == updated.key() && ev.version == updated.meta.version {
            assert_eq!(ev.cause, None, "an untraced write has no cause");
            break;
        }
    }
}

pub async fn concurrent_updates_one_wins(store: SharedStore) {
    fresh_mesh(&store, "c-race").await;
    let created = store.create(timeout("c-race", "t1")).await.expect("create");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = Arc::clone(&store);
        let mut r = created.clone();
        r.spec["to"][0]["default"]["idleTimeout"] = json!(format!("{}s", i + 1));
        tasks.push(tokio::spawn(async move { store.update(r).await }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(wins, 1, "exactly one writer of the same version must win");
    assert_eq!(
        store.get(&created.key()).await.expect("get").meta.version,
        2
    );
}

pub async fn content_round_trips(store: SharedStore) {
    fresh_mesh(&store, "c-content").await;
    let mut r = timeout("c-content", "t1");
    r.spec = json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"},
        "default": {"idleTimeout": "20s", "http": {"requestTimeout": "2s"}}}],
        "note": "ünïcödé ✓", "big": 12345678901234_i64, "list": [1, 2.5, null, true]});
    r.meta.labels = BTreeMap::from([
        ("kuma.io/origin".to_string(), "zone".to_string()),
        ("a".to_string(), "".to_string()),
    ]);
    let created = store.create(r.clone()).await.expect("create");
    let got = store.get(&created.key()).await.expect("get");
    assert_eq!(got.spec, r.spec);
    assert_eq!(got.meta.labels, r.meta.labels);
    let mut with_status = Resource::new(
        ResourceType::MeshService,
        "c-content",
        "svc",
        json!({"ports": []}),
    );
    with_status.status = Some(json!({"vips": [{"ip": "241.0.0.1"}]}));
    store
        .create(with_status.clone())
        .await
        .expect("create with status");
    let got = store
        .get(&with_status.key())
        .await
        .expect("get with status");
    assert_eq!(got.status, with_status.status);
}

fn names(items: &[Resource]) -> Vec<&str> {
    items.iter().map(|r| r.meta.name.as_str()).collect()
}
