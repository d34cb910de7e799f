//! Envoy's ADS requests into the data plane server, through the tonic service it registers
//! (`zone::dpserver::ads::AdsServer` behind `AggregatedDiscoveryServiceServer`, with the
//! decoding limit `dpserver::serve` sets): tonic decodes each gRPC message (prost), the first
//! names the proxy (node id, node metadata), and the stream then handles subscriptions,
//! resource names, type URLs, ACKs and NACKs against a zone's real snapshot cache.
//!
//! Input: one byte choosing delta or state-of-the-world ADS, then the request messages split
//! by `fuzz::SEPARATOR`, each sent as one gRPC message.
#![no_main]

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use zone::dpserver::ads::AdsServer;

const DELTA: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
const SOTW: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

struct Setup {
    rt: tokio::runtime::Runtime,
    server: AggregatedDiscoveryServiceServer<AdsServer>,
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    let rt = fuzz::runtime();
    let server = rt.block_on(async {
        let resources = fuzz::baseline(Some(fuzz::ZONE));
        // The cache reads one store; streams admit proxies and write their insights to
        // another, so what inputs write never changes the snapshots later inputs are served.
        let cached = fuzz::store_with(&resources).await;
        let mut view = zone::dpserver::cache::start(cached, fuzz::ZONE.into(), false);
        view.wait_for(|v| v.ready && v.meshes.contains_key("default"))
            .await
            .expect("the snapshot cache loads");
        let proxies = fuzz::store_with(&resources).await;
        let ads = AdsServer::new(
            proxies,
            Arc::new(zone::dpserver::auth::NoAuth),
            "fuzz-cp".into(),
            view,
        );
        AggregatedDiscoveryServiceServer::new(ads)
            .max_decoding_message_size(4 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    });
    Setup { rt, server }
});

/// gRPC's length-prefixed framing, uncompressed.
fn grpc_body(messages: &[&[u8]]) -> Option<Bytes> {
    let mut body = Vec::new();
    for m in messages {
        body.push(0);
        body.extend_from_slice(&u32::try_from(m.len()).ok()?.to_be_bytes());
        body.extend_from_slice(m);
    }
    Some(body.into())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some(body) = grpc_body(&fuzz::split_messages(rest)) else {
        return;
    };
    let path = if mode % 2 == 0 { DELTA } else { SOTW };
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://cp.fuzz:5678{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(body))
        .expect("a gRPC request");
    let Setup { rt, server } = &*SETUP;
    rt.block_on(async {
        let Ok(response) = server.clone().oneshot(request).await;
        // The stream ends once every request is handled and the proxy's insight is written.
        let _ = response.into_body().collect().await;
    });
});
