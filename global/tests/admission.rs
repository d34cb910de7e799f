//! Global's KDS server over real gRPC on loopback: who gets in (tokens, versions), what a zone
//! may send, and that bad clients do not disturb good ones.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as XdsResource,
};
use envoy_types::pb::google::protobuf::Any;
use global::insight::ZoneInsights;
use global::kds_server::GlobalKds;
use global::zones::ZoneSwitches;
use model::specs::secret::SecretSpec;
use model::{Resource, ResourceKey, ResourceType};
use proto::envoy_types;
use proto::kuma::mesh::v1alpha1::ZoneHealthCheckRequest;
use proto::kuma::mesh::v1alpha1::global_kds_service_client::GlobalKdsServiceClient;
use proto::kuma::mesh::v1alpha1::global_kds_service_server::GlobalKdsServiceServer;
use proto::kuma::mesh::v1alpha1::kds_sync_service_client::KdsSyncServiceClient;
use proto::kuma::mesh::v1alpha1::kds_sync_service_server::KdsSyncServiceServer;
use security::SigningKeys;
use security::zone::{ZoneClaims, issue_zone_token, zone_signing_keys};
use serde_json::json;
use store::{MemoryStore, SharedStore};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// 64 KiB of envelope plus 8 KiB for resources: small enough to overflow in a test.
const MAX_MESSAGE: usize = 72 * 1024;

struct Global {
    store: SharedStore,
    keys: Arc<SigningKeys>,
    address: String,
}

async fn start_global() -> Global {
    start_global_admitting(Default::default()).await
}

async fn start_global_admitting(admission: global::kds_server::AdmissionGate) -> Global {
    let store: SharedStore = Arc::new(MemoryStore::new());
    store
        .create(Resource::new(ResourceType::Mesh, "", "default", json!({})))
        .await
        .unwrap();
    let keys = Arc::new(zone_signing_keys(store.clone()));
    keys.ensure_key().await.unwrap();
    let service = Arc::new(GlobalKds {
        store: store.clone(),
        zones: Arc::new(ZoneSwitches::default()),
        max_message: MAX_MESSAGE,
        health_interval: Duration::from_secs(1),
        zone_tokens: Some(keys.clone()),
        version: "2.14.0".into(),
        insights: Arc::new(ZoneInsights::new(
            store.clone(),
            "global-1".into(),
            Duration::from_secs(1),
            None,
        )),
        to_zones: Arc::new(global::kds_server::zone_wire_forms()),
        inspect: Default::default(),
        admission,
        to_zones_changes: kds::sync::ChangeFeed::follow(&store, &kds::rules::zone_subscriptions()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KdsSyncServiceServer::from_arc(service.clone()))
            .add_service(GlobalKdsServiceServer::from_arc(service))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    Global {
        store,
        keys,
        address,
    }
}

async fn channel(g: &Global) -> Channel {
    Channel::from_shared(g.address.clone())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn request<T>(msg: T, zone: &str, version: &str, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    let md = req.metadata_mut();
    md.insert("client-id", zone.parse().unwrap());
    md.insert("version", version.parse().unwrap());
    if let Some(t) = token {
        md.insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    req
}

async fn health_check(
    g: &Global,
    zone: &str,
    version: &str,
    token: Option<&str>,
) -> Result<(), tonic::Status> {
    GlobalKdsServiceClient::new(channel(g).await)
        .health_check(request(ZoneHealthCheckRequest {}, zone, version, token))
        .await
        .map(|_| ())
}

async fn token(g: &Global, zone: &str) -> String {
    issue_zone_token(&g.keys, zone, &["cp".into()], Duration::from_secs(600))
        .await
        .unwrap()
}

#[tokio::test]
async fn tokens_are_checked_before_anything_is_written() {
    let g = start_global().await;
    let good = token(&g, "zone-1").await;

    let err = health_check(&g, "zone-1", "2.14.0", None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(
        err.message().contains("kumactl generate zone-token"),
        "{err}"
    );

    let err = health_check(&g, "zone-2", "2.14.0", Some(&good))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(
        err.message().contains("issued for zone \"zone-1\""),
        "{err}"
    );

    let err = health_check(&g, "zone-1", "2.14.0", Some("not-a-jwt"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let expired = g
        .keys
        .sign(&ZoneClaims {
            zone: "zone-1".into(),
            control_plane: String::new(),
            scope: vec!["cp".into()],
            jti: "expired".into(),
            iat: 1,
            nbf: 1,
            exp: 2,
        })
        .await
        .unwrap();
    let err = health_check(&g, "zone-1", "2.14.0", Some(&expired))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(err.message().contains("xpired"), "{err}");

    let ingress_only = issue_zone_token(
        &g.keys,
        "zone-1",
        &["ingress".into()],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let err = health_check(&g, "zone-1", "2.14.0", Some(&ingress_only))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // None of the refused callers got a Zone created.
    let zones = g
        .store
        .list(&store::ListQuery::all(ResourceType::Zone))
        .await
        .unwrap();
    assert_eq!(zones.total, 0);

    health_check(&g, "zone-1", "2.14.0", Some(&good))
        .await
        .unwrap();
    let insight = g
        .store
        .get(&ResourceKey::new(ResourceType::ZoneInsight, "", "zone-1"))
        .await
        .unwrap();
    assert!(insight.spec["healthCheck"]["time"].is_string());

    // Revoking the token's id shuts the zone out.
    let claims: ZoneClaims = g.keys.verify(&good).await.unwrap();
    g.keys.revoke(&claims.jti).await.unwrap();
    let err = health_check(&g, "zone-1", "2.14.0", Some(&good))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(err.message().contains("revoked"), "{err}");
}

#[tokio::test]
async fn unauthenticated_streams_do_not_use_up_the_admissions_of_real_zones() {
    // One admission a minute, after a burst of two.
    let g = start_global_admitting(global::kds_server::AdmissionGate::new(1.0 / 60.0, 2.0)).await;
    let open = |token: Option<String>| {
        let g = &g;
        async move {
            let (_tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(1);
            KdsSyncServiceClient::new(channel(g).await)
                .global_to_zone_sync(request(
                    ReceiverStream::new(rx),
                    "zone-1",
                    "2.14.0",
                    token.as_deref(),
                ))
                .await
                .map(|_| ())
        }
    };
    for _ in 0..5 {
        let refused = open(Some("not-a-jwt".into())).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    }
    let good = token(&g, "zone-1").await;
    open(Some(good.clone())).await.unwrap();
    open(Some(good.clone())).await.unwrap();
    // The gate still works for real zones.
    let held = open(Some(good)).await.unwrap_err();
    assert_eq!(held.code(), tonic::Code::Unavailable, "{held}");
}

#[tokio::test]
async fn zones_too_new_or_too_old_are_refused_naming_both_versions() {
    let g = start_global().await;
    let t = token(&g, "zone-1").await;
    for version in ["2.15.0", "2.14.1", "3.0.0", "2.11.9", "1.8.0"] {
        let err = health_check(&g, "zone-1", version, Some(&t))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{version}");
        assert!(
            err.message().contains(version) && err.message().contains("2.14.0"),
            "{err}"
        );
    }
    for version in ["2.14.0", "2.13.2", "2.12.0", "2.14.0-rc1", "dev"] {
        health_check(&g, "zone-1", version, Some(&t))
            .await
            .unwrap_or_else(|e| panic!("{version}: {e}"));
    }
}

/// The next ACK or NACK, skipping subscriptions.
async fn next_reply(
    requests: &mut tonic::Streaming<DeltaDiscoveryRequest>,
) -> DeltaDiscoveryRequest {
    let fut = async {
        loop {
            let req = requests.next().await.unwrap().unwrap();
            if !req.response_nonce.is_empty() {
                return req;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .unwrap()
}

fn any_resource(r: &Resource) -> XdsResource {
    kds::codec::to_xds_resource(r)
}

fn timeout(name: &str, zone: &str) -> Resource {
    let mut r = Resource::new(
        ResourceType::MeshTimeout,
        "default",
        name,
        json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "20s"}}]}),
    );
    r.meta.labels.insert("kuma.io/zone".into(), zone.into());
    r.meta.labels.insert("kuma.io/origin".into(), "zone".into());
    r
}

/// The zone->global stream driven by hand: each bad response is NACKed with its reason, nothing
/// is stored, and a good response on the same stream is still accepted.
#[tokio::test]
async fn bad_resources_from_a_zone_are_nacked_and_the_stream_survives() {
    let g = start_global().await;
    let t = token(&g, "zone-1").await;
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryResponse>(16);
    let mut requests = KdsSyncServiceClient::new(channel(&g).await)
        .zone_to_global_sync(request(
            ReceiverStream::new(rx),
            "zone-1",
            "2.14.0",
            Some(&t),
        ))
        .await
        .unwrap()
        .into_inner();
    // Global subscribes to every type it consumes first.
    let mut subscribed = 0;
    while let Some(Ok(req)) = requests.next().await {
        assert!(req.response_nonce.is_empty());
        subscribed += 1;
        if req.type_url == "MeshTimeout" {
            break;
        }
    }
    assert!(subscribed > 1);
    let malformed = XdsResource {
        name: "broken.default".into(),
        resource: Some(Any {
            type_url: kds::codec::KUMA_RESOURCE_TYPE_URL.into(),
            value: vec![0xff, 0xff, 0xff],
        }),
        ..Default::default()
    };
    let mut invalid = timeout("invalid", "zone-1");
    invalid.spec = json!({"targetRef": {"kind": "Nonsense"}});
    let cases: Vec<(&str, Vec<XdsResource>, &str)> = vec![
        (
            "MeshTimeout",
            vec![any_resource(&timeout("other", "zone-2"))],
            "belongs to zone",
        ),
        ("MeshTimeout", vec![malformed], "not a valid KumaResource"),
        ("MeshTimeout", vec![any_resource(&invalid)], "targetRef"),
        (
            "Mesh",
            vec![any_resource(&Resource::new(
                ResourceType::Mesh,
                "",
                "evil",
                json!({}),
            ))],
            "not subscribed",
        ),
    ];
    for (i, (type_url, resources, reason)) in cases.into_iter().enumerate() {
        tx.send(DeltaDiscoveryResponse {
            type_url: type_url.into(),
            resources,
            nonce: format!("bad-{i}"),
            ..Default::default()
        })
        .await
        .unwrap();
        let reply = next_reply(&mut requests).await;
        assert_eq!(reply.response_nonce, format!("bad-{i}"));
        let detail = reply.error_detail.expect("a NACK");
        assert!(
            detail.message.contains(reason),
            "{reason}: {}",
            detail.message
        );
    }
    let stored = g
        .store
        .list(&store::ListQuery::all(ResourceType::MeshTimeout))
        .await
        .unwrap();
    assert_eq!(stored.total, 0);
    assert!(
        g.store
            .get(&ResourceKey::new(ResourceType::Mesh, "", "evil"))
            .await
            .is_err()
    );

    tx.send(DeltaDiscoveryResponse {
        type_url: "MeshTimeout".into(),
        resources: vec![any_resource(&timeout("good", "zone-1"))],
        nonce: "good".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let reply = next_reply(&mut requests).await;
    assert!(reply.error_detail.is_none(), "{reply:?}");
    g.store
        .get(&ResourceKey::new(
            ResourceType::MeshTimeout,
            "default",
            "good",
        ))
        .await
        .unwrap();
}

/// A garbage client on the KDS port is dropped; a real zone syncs regardless, and a resource
/// too large for one message is held back while the rest still arrives.
#[tokio::test]
async fn garbage_and_oversized_resources_do_not_stop_a_zone() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let g = start_global().await;
    let addr = g.address.trim_start_matches("http://").to_string();
    let mut junk = tokio::net::TcpStream::connect(&addr).await.unwrap();
    junk.write_all(b"GET / HTTP/1.0\r\n\r\n\x00\x01\x02 garbage garbage")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match junk.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the garbage connection was kept open");

    let big = "x".repeat(MAX_MESSAGE + 1024);
    for (name, data) in [("huge", big.as_str()), ("small", "hello")] {
        let spec = serde_json::to_value(SecretSpec::from_bytes(data.as_bytes())).unwrap();
        g.store
            .create(Resource::new(ResourceType::Secret, "default", name, spec))
            .await
            .unwrap();
    }

    let zone_store: SharedStore = Arc::new(MemoryStore::new());
    let config = zone::kds_client::ZoneClientConfig {
        zone: "zone-1".into(),
        global_address: g.address.replace("http://", "grpc://"),
        cp_version: "2.14.0".into(),
        max_message: MAX_MESSAGE,
        root_ca_pem: None,
        proxy_url: None,
        tls_skip_verify: false,
        metrics: None,
        token: Some(zone::kds_client::ZoneToken::Inline(
            token(&g, "zone-1").await,
        )),
    };
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(zone::kds_client::run(
        zone_store.clone(),
        config,
        None,
        stop,
    ));
    let small = ResourceKey::new(ResourceType::Secret, "default", "small");
    tokio::time::timeout(Duration::from_secs(10), async {
        while zone_store.get(&small).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the small secret reached the zone");
    assert!(
        zone_store
            .get(&ResourceKey::new(ResourceType::Secret, "default", "huge"))
            .await
            .is_err()
    );

    // Still connected: a later change arrives on the same stream.
    g.store
        .create(Resource::new(ResourceType::Mesh, "", "later", json!({})))
        .await
        .unwrap();
    let later = ResourceKey::new(ResourceType::Mesh, "", "later");
    tokio::time::timeout(Duration::from_secs(10), async {
        while zone_store.get(&later).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a later mesh reached the zone");
    let insight = g
        .store
        .get(&ResourceKey::new(ResourceType::ZoneInsight, "", "zone-1"))
        .await
        .unwrap();
    let sub = &insight.spec["subscriptions"][0];
    assert_eq!(sub["authTokenProvided"], true);
    assert_eq!(sub["version"]["kumaCp"]["version"], "2.14.0");
}
