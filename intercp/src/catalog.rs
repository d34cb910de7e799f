//! The catalog of live replicas (a Config resource the leader rewrites every heartbeat), and
//! the followers' heartbeat to the leader it names.

use std::sync::Arc;
use std::time::Duration;

use model::catalog::{CATALOG_CONFIG, Catalog, Instance};
use model::specs::secret::ConfigSpec;
use model::{Resource, ResourceKey, ResourceType, Timestamp};
use proto::kuma::system::v1alpha1::PingRequest;
use proto::kuma::system::v1alpha1::inter_cp_ping_service_client::InterCpPingServiceClient;
use store::SharedStore;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::{MAX_MESSAGE, Me, Seen, Tls};

/// How often followers ping the leader and the leader rewrites the catalog.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A replica not heard from for this long leaves the catalog.
const EXPIRY: Duration = Duration::from_secs(15);

pub async fn read_catalog(store: &SharedStore) -> Option<Catalog> {
    let r = store
        .get(&ResourceKey::new(ResourceType::Config, "", CATALOG_CONFIG))
        .await
        .ok()?;
    let spec: ConfigSpec = serde_json::from_value(r.spec).ok()?;
    serde_json::from_str(&spec.config).ok()
}

/// Leader-only: rewrites the catalog with itself and every replica heard from recently.
pub async fn keep_catalog(store: SharedStore, me: Me, seen: Seen) {
    loop {
        let now = Timestamp::now();
        let mut instances = vec![Instance {
            id: me.id.clone(),
            address: me.address.clone(),
            inter_cp_port: me.port,
            leader: true,
            ready: true,
            version: me.version.clone(),
            last_heartbeat: now,
        }];
        {
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.retain(|_, i| i.last_heartbeat.elapsed_until(now) < EXPIRY);
            instances.extend(seen.values().filter(|i| i.id != me.id).cloned());
        }
        instances[1..].sort_by(|a, b| a.id.cmp(&b.id));
        let catalog = Catalog { instances };
        match serde_json::to_string(&catalog) {
            Ok(text) => {
                let fresh = Resource::new(
                    ResourceType::Config,
                    "",
                    CATALOG_CONFIG,
                    serde_json::json!({}),
                );
                let spec = serde_json::json!({ "config": text });
                if let Err(e) =
                    store::upsert(store.as_ref(), fresh, |r| r.spec = spec.clone()).await
                {
                    tracing::warn!(error = %e, "writing the control-plane catalog failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "encoding the control-plane catalog failed"),
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}

/// Every replica: while not leading, ping the leader named in the catalog.
pub async fn heartbeat(
    store: SharedStore,
    tls: Arc<Tls>,
    me: Me,
    leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut client: Option<(String, InterCpPingServiceClient<Channel>)> = None;
    loop {
        if !*leader.borrow()
            && let Some(target) = read_catalog(&store).await.and_then(|c| c.leader().cloned())
            && target.id != me.id
        {
            let endpoint = format!("https://{}:{}", target.address, target.inter_cp_port);
            if client.as_ref().is_none_or(|(e, _)| *e != endpoint) {
                client = connect(&endpoint, &target.address, &tls)
                    .await
                    .map(|c| (endpoint.clone(), c));
            }
            if let Some((_, c)) = client.as_mut() {
                let req = PingRequest {
                    instance_id: me.id.clone(),
                    address: me.address.clone(),
                    inter_cp_port: u32::from(me.port),
                    ready: true,
                    version: me.version.clone(),
                };
                match tokio::time::timeout(HEARTBEAT * 2, c.ping(req)).await {
                    Ok(Ok(resp)) if !resp.get_ref().leader => {
                        tracing::debug!(target = %target.id, "pinged instance is no longer the leader");
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(status)) => {
                        tracing::warn!(target = %target.id, %status, "ping to the leader failed");
                        client = None;
                    }
                    Err(_) => {
                        tracing::warn!(target = %target.id, "ping to the leader timed out");
                        client = None;
                    }
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(HEARTBEAT) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

async fn connect(
    endpoint: &str,
    host: &str,
    tls: &Tls,
) -> Option<InterCpPingServiceClient<Channel>> {
    let connected = match crate::tls::channel(endpoint, host, tls, Duration::from_secs(5)) {
        Ok(c) => c.connect().await.map_err(Into::into),
        Err(e) => Err(e),
    };
    match connected {
        Ok(ch) => Some(InterCpPingServiceClient::new(ch).max_decoding_message_size(MAX_MESSAGE)),
        Err(e) => {
            let error = model::error_chain(e.as_ref());
            tracing::warn!(%endpoint, %error, "cannot connect to the leader over inter-CP");
            None
        }
    }
}
