//! The ADS server against a scripted Envoy over real gRPC: who is refused and why, what is
//! sent and when, and that a NACK leaves everything else alone.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use futures::StreamExt;
use model::{Resource, ResourceType};
use serde_json::json;
use store::{MemoryStore, SharedStore};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use xds::wire;
use zone::dpserver::ads::AdsServer;
use zone::dpserver::auth::TokenAuth;

struct Fixture {
    store: SharedStore,
    address: String,
    /// Where the server's figures go.
    registry: prometheus_client::registry::Registry,
}

impl Fixture {
    fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }
}

async fn start() -> Fixture {
    let store: SharedStore = Arc::new(MemoryStore::new());
    for mesh in ["default", "other"] {
        store
            .create(Resource::new(ResourceType::Mesh, "", mesh, json!({})))
            .await
            .unwrap();
    }
    for (name, port, service) in [("web-1", 20080, "web"), ("backend-1", 20081, "backend")] {
        let mut spec = json!({"networking": {"address": "127.0.0.1",
            "inbound": [{"port": port, "servicePort": port + 1000, "tags": {"kuma.io/service": service}}]}});
        if service == "web" {
            spec["networking"]["outbound"] =
                json!([{"port": 10001, "tags": {"kuma.io/service": "backend"}}]);
        }
        store
            .create(Resource::new(
                ResourceType::Dataplane,
                "default",
                name,
                spec,
            ))
            .await
            .unwrap();
    }
    let server = AdsServer::new(
        store.clone(),
        Arc::new(TokenAuth {
            store: store.clone(),
            zone: String::new(),
            zone_keys: None,
        }),
        "cp-1".into(),
        zone::dpserver::cache::start(store.clone(), String::new(), true),
    );
    let mut registry = prometheus_client::registry::Registry::default();
    let server = server.metered(Some(zone::dpserver::metrics::XdsMetrics::register(
        &mut registry,
    )));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(server))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    Fixture {
        store,
        address,
        registry,
    }
}

async fn token(store: &SharedStore, name: &str, mesh: &str) -> String {
    let keys = security::dataplane::dataplane_signing_keys(store.clone(), mesh);
    keys.ensure_key().await.unwrap();
    security::dataplane::issue_dataplane_token(
        &keys,
        name,
        mesh,
        &BTreeMap::new(),
        "",
        Duration::from_secs(600),
    )
    .await
    .unwrap()
}

fn request(type_url: &str, node_id: Option<&str>) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.into(),
        node: node_id.map(|id| Node {
            id: id.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

struct FakeEnvoy {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    responses: tonic::Streaming<DeltaDiscoveryResponse>,
}

impl FakeEnvoy {
    async fn connect(
        f: &Fixture,
        token: Option<&str>,
        first: DeltaDiscoveryRequest,
    ) -> Result<FakeEnvoy, tonic::Status> {
        let mut client = AggregatedDiscoveryServiceClient::connect(f.address.clone())
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.unwrap();
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(t) = token {
            req.metadata_mut()
                .insert("authorization", t.parse().unwrap());
        }
        let responses = client.delta_aggregated_resources(req).await?.into_inner();
        Ok(FakeEnvoy { tx, responses })
    }

    async fn next(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(5), self.responses.next())
            .await
            .expect("a response within 5 s")
            .expect("stream open")
            .expect("not an error")
    }

    async fn quiet(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.responses.next())
            .await
            .is_err()
    }

    async fn send(&self, r: DeltaDiscoveryRequest) {
        self.tx.send(r).await.unwrap();
    }
}

async fn refused(f: &Fixture, token: Option<&str>, node: Option<&str>) -> tonic::Status {
    match FakeEnvoy::connect(f, token, request(wire::CLUSTER, node)).await {
        Ok(_) => panic!("{node:?} was let in"),
        Err(status) => status,
    }
}

#[tokio::test]
async fn refuses_missing_node_unknown_proxy_and_bad_tokens_with_reasons() {
    let f = start().await;
    let err = refused(&f, None, None).await;
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");

    let err = refused(&f, None, Some("garbage")).await;
    assert!(err.message().contains("<mesh>.<name>"), "{err}");

    let err = refused(&f, None, Some("default.nope")).await;
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");

    let err = refused(&f, None, Some("default.web-1")).await;
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(
        err.message().contains("Dataplane Token is required"),
        "{err}"
    );

    let other_mesh = token(&f.store, "web-1", "other").await;
    let err = refused(&f, Some(&other_mesh), Some("default.web-1")).await;
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");

    let backend = token(&f.store, "backend-1", "default").await;
    let err = refused(&f, Some(&backend), Some("default.web-1")).await;
    assert!(err.message().contains("different than in token"), "{err}");
}

#[tokio::test]
async fn sends_changes_only_and_survives_a_nack() {
    let f = start().await;
    let t = token(&f.store, "web-1", "default").await;
    let mut envoy = FakeEnvoy::connect(&f, Some(&t), request(wire::CLUSTER, Some("default.web-1")))
        .await
        .unwrap();
    let cds = envoy.next().await;
    assert_eq!(cds.type_url, wire::CLUSTER);
    let mut names: Vec<_> = cds.resources.iter().map(|r| r.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["backend", "localhost:21080"]);

    // Envoy subscribes to the endpoints of its EDS cluster, then to listeners.
    let mut eds = request(wire::ENDPOINTS, None);
    eds.resource_names_subscribe = vec!["backend".into()];
    envoy.send(eds).await;
    let cla = envoy.next().await;
    assert_eq!(cla.type_url, wire::ENDPOINTS);
    let any = cla.resources[0].resource.as_ref().unwrap();
    let value = wire::decode(wire::ENDPOINTS, &any.value).unwrap();
    assert_eq!(
        value["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"],
        20081
    );
    envoy.send(request(wire::LISTENER, None)).await;
    let lds = envoy.next().await;
    assert_eq!(lds.resources.len(), 2);

    // A NACK is not answered by resending the same thing.
    let mut nack = request(wire::LISTENER, None);
    nack.response_nonce = lds.nonce.clone();
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "listener rejected for the test".into(),
        ..Default::default()
    });
    envoy.send(nack).await;
    assert!(
        envoy.quiet(Duration::from_millis(300)).await,
        "nothing resent after a NACK"
    );

    // A new backend instance: only the endpoints change, and arrive promptly.
    f.store
        .create(Resource::new(
            ResourceType::Dataplane,
            "default",
            "backend-2",
            json!({"networking": {"address": "127.0.0.2",
                "inbound": [{"port": 20081, "tags": {"kuma.io/service": "backend"}}]}}),
        ))
        .await
        .unwrap();
    let update = envoy.next().await;
    assert_eq!(update.type_url, wire::ENDPOINTS);
    let any = update.resources[0].resource.as_ref().unwrap();
    let value = wire::decode(wire::ENDPOINTS, &any.value).unwrap();
    assert_eq!(
        value["endpoints"][0]["lb_endpoints"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(
        envoy.quiet(Duration::from_millis(300)).await,
        "a new instance changes endpoints only: nothing else is pushed"
    );
    let metrics = f.metrics();
    for line in [
        "xds_connected_proxies 1",
        "xds_responses_nacked_total{resource_type=\"lds\"} 1",
        "xds_responses_sent_total{resource_type=\"eds\"} 2",
        "xds_push_duration_seconds_count 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }

    // A policy for another proxy changes nothing of web-1's; one for web-1 changes its clusters.
    let timeout = |name: &str, target: serde_json::Value| {
        Resource::new(
            ResourceType::MeshTimeout,
            "default",
            name,
            json!({"targetRef": target, "to": [{"targetRef": {"kind": "Mesh"},
                "default": {"connectionTimeout": "7s"}}]}),
        )
    };
    f.store
        .create(timeout(
            "backend-only",
            json!({"kind": "Dataplane", "name": "backend-1"}),
        ))
        .await
        .unwrap();
    assert!(
        envoy.quiet(Duration::from_millis(300)).await,
        "a policy for another proxy pushed something"
    );
    f.store
        .create(timeout(
            "web-only",
            json!({"kind": "Dataplane", "name": "web-1"}),
        ))
        .await
        .unwrap();
    let update = envoy.next().await;
    assert_eq!(update.type_url, wire::CLUSTER);
    let backend = update
        .resources
        .iter()
        .find(|r| r.name == "backend")
        .expect("the backend cluster");
    let value = wire::decode(wire::CLUSTER, &backend.resource.as_ref().unwrap().value).unwrap();
    assert_eq!(value["connect_timeout"], "7s");

    // The insight records the open stream (counters are flushed every 10 s).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let insight = f
        .store
        .get(&model::ResourceKey::new(
            ResourceType::DataplaneInsight,
            "default",
            "web-1",
        ))
        .await
        .unwrap();
    let sub = &insight.spec["subscriptions"][0];
    assert_eq!(sub["controlPlaneInstanceId"], "cp-1");
    assert!(sub["disconnectTime"].is_null());

    // Gone, and no longer counted as connected.
    drop(envoy);
    for _ in 0..100 {
        if f.metrics().contains("xds_connected_proxies 0") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the proxy is still counted as connected:\n{}", f.metrics());
}

/// Passes bytes through untouched, so a test can put garbage on the wire.
#[derive(Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

#[tokio::test]
async fn garbage_mid_stream_ends_only_that_stream() {
    let f = start().await;
    let web_token = token(&f.store, "web-1", "default").await;
    let mut web = FakeEnvoy::connect(
        &f,
        Some(&web_token),
        request(wire::CLUSTER, Some("default.web-1")),
    )
    .await
    .unwrap();
    web.next().await;
    let mut eds = request(wire::ENDPOINTS, None);
    eds.resource_names_subscribe = vec!["backend".into()];
    web.send(eds).await;
    web.next().await;

    // backend-1 starts like Envoy, then sends bytes that are not a DeltaDiscoveryRequest.
    let backend_token = token(&f.store, "backend-1", "default").await;
    let channel = tonic::transport::Endpoint::from_shared(f.address.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
    tx.send(prost::Message::encode_to_vec(&request(
        wire::CLUSTER,
        Some("default.backend-1"),
    )))
    .await
    .unwrap();
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("authorization", backend_token.parse().unwrap());
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources",
    );
    let mut responses = grpc
        .streaming(req, path, RawCodec)
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), responses.next())
        .await
        .unwrap();
    assert!(matches!(first, Some(Ok(_))), "CDS for backend-1: {first:?}");
    tx.send(vec![0xff, 0xff, 0xff, 0x0f, 0x08]).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), responses.next())
        .await
        .expect("the server ends the stream");
    match end {
        Some(Err(status)) => assert_eq!(status.code(), tonic::Code::Internal, "{status:?}"),
        None => {}
        Some(Ok(r)) => panic!("answered garbage with {} bytes", r.len()),
    }

    // web-1 is untouched: a new backend instance still reaches it.
    f.store
        .create(Resource::new(
            ResourceType::Dataplane,
            "default",
            "backend-2",
            json!({"networking": {"address": "127.0.0.2",
                "inbound": [{"port": 20081, "tags": {"kuma.io/service": "backend"}}]}}),
        ))
        .await
        .unwrap();
    let update = web.next().await;
    assert_eq!(update.type_url, wire::ENDPOINTS);
}
