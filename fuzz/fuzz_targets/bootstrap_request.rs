//! kuma-dp's `POST /bootstrap` (and `POST /deregister`) body, through the data plane server's
//! own router (`zone::dpserver::bootstrap::router`): JSON request, names, the Dataplane given
//! as YAML or JSON, the dataplane or zone token, registration, the bootstrap answer.
//!
//! Input: one byte choosing the endpoint and whether tokens are required, then the body.
#![no_main]

use std::sync::{Arc, LazyLock};

use axum::body::Body;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use zone::dpserver::auth::{NoAuth, ProxyAuth, TokenAuth};
use zone::dpserver::bootstrap::{BootstrapState, router};

static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(fuzz::runtime);

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let path = if mode & 1 == 0 {
        "/bootstrap"
    } else {
        "/deregister"
    };
    let tokens_required = mode & 2 == 0;
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("https://cp.fuzz:5678{path}"))
        .header("host", "cp.fuzz:5678")
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .expect("a request");
    RT.block_on(async {
        // A fresh store per input: a registration must not change how the next input runs.
        let mut resources = fuzz::baseline(Some(fuzz::ZONE));
        resources.extend(fuzz::signing_key_secrets());
        let store = fuzz::store_with(&resources).await;
        let auth: Arc<dyn ProxyAuth> = if tokens_required {
            Arc::new(TokenAuth {
                store: store.clone(),
                zone: fuzz::ZONE.into(),
                zone_keys: Some(Arc::new(security::zone::zone_signing_keys(store.clone()))),
            })
        } else {
            Arc::new(NoAuth)
        };
        let app = router(Arc::new(BootstrapState {
            store,
            auth,
            tokens_required,
            dp_server_port: 5678,
            ca_pem: "-----BEGIN CERTIFICATE-----\nfuzz\n-----END CERTIFICATE-----\n".into(),
            zone: fuzz::ZONE.into(),
            label_zone: Some(fuzz::ZONE.into()),
        }));
        let Ok(response) = app.oneshot(request).await;
        let _ = axum::body::to_bytes(response.into_body(), usize::MAX).await;
    });
});
