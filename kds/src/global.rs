//! The global side: serves `KDSSyncService` to zones. Each zone's connection carries two
//! streams: global sends policies down one and receives the zone's resources on the other.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use model::labels::{ORIGIN, ZONE};
use model::{Resource, ResourceKey, ResourceType};
use proto::kuma::mesh::v1alpha1::global_kds_service_server::GlobalKdsService;
use proto::kuma::mesh::v1alpha1::kds_sync_service_server::KdsSyncService;
use proto::kuma::mesh::v1alpha1::{
    ClustersRequest, ClustersResponse, StatsRequest, StatsResponse, XdsConfigRequest,
    XdsConfigResponse, ZoneHealthCheckRequest, ZoneHealthCheckResponse,
};
use store::{ListQuery, SharedStore, StoreError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::rules;
use crate::sync::{self, Inbound};

/// Zones' `enabled` switches, kept current from store events so filters stay synchronous.
#[derive(Default)]
pub struct ZoneSwitches {
    enabled: RwLock<HashMap<String, bool>>,
}

impl ZoneSwitches {
    pub fn enabled(&self, zone: &str) -> bool {
        self.enabled
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(zone)
            .copied()
            .unwrap_or(true)
    }

    async fn refresh(&self, store: &SharedStore) {
        if let Ok(page) = store.list(&ListQuery::all(ResourceType::Zone)).await {
            let map = page
                .items
                .iter()
                .map(|z| {
                    (
                        z.meta.name.clone(),
                        z.spec
                            .get("enabled")
                            .and_then(|e| e.as_bool())
                            .unwrap_or(true),
                    )
                })
                .collect();
            *self.enabled.write().unwrap_or_else(|p| p.into_inner()) = map;
        }
    }

    /// Keeps the switches current for as long as the store lives.
    pub async fn follow(self: Arc<Self>, store: SharedStore) {
        let mut events = store.subscribe();
        self.refresh(&store).await;
        loop {
            match events.recv().await {
                Ok(ev) if ev.key.kind != ResourceType::Zone => continue,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    self.refresh(&store).await
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

pub struct GlobalKds {
    pub store: SharedStore,
    pub zones: Arc<ZoneSwitches>,
    pub max_message: usize,
    pub health_interval: Duration,
}

fn client_id<T>(req: &Request<T>) -> Result<String, Status> {
    let zone = req
        .metadata()
        .get("client-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| Status::invalid_argument("missing client-id metadata (the zone name)"))?;
    if let Some(reason) = model::name::name_violation(&zone) {
        return Err(Status::invalid_argument(format!(
            "client-id {zone:?}: {reason}"
        )));
    }
    Ok(zone)
}

impl GlobalKds {
    /// Registers the zone on its first stream; a disabled zone is turned away.
    async fn admit(&self, zone: &str) -> Result<(), Status> {
        let key = ResourceKey::new(ResourceType::Zone, "", zone);
        match self.store.get(&key).await {
            Ok(z) if z.spec.get("enabled").and_then(|e| e.as_bool()) == Some(false) => Err(
                Status::permission_denied(format!("zone {zone:?} is disabled on global")),
            ),
            Ok(_) => Ok(()),
            Err(StoreError::NotFound(_)) => {
                match self
                    .store
                    .create(Resource::new(
                        ResourceType::Zone,
                        "",
                        zone,
                        serde_json::json!({"enabled": true}),
                    ))
                    .await
                {
                    Ok(_) => tracing::info!(%zone, "new zone registered"),
                    Err(StoreError::AlreadyExists(_)) => {}
                    Err(e) => return Err(Status::unavailable(e.to_string())),
                }
                Ok(())
            }
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    /// Ends a zone's streams when it is disabled or deleted.
    fn watch_zone(&self, zone: String, tx: impl Fn() + Send + 'static) {
        let mut events = self.store.subscribe();
        let zones = self.zones.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(ev) if ev.key.kind == ResourceType::Zone && ev.key.name == zone => {
                        // Let the switches catch up with the same event first.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        if !zones.enabled(&zone) || ev.op == store::Operation::Delete {
                            tracing::info!(%zone, "zone disabled or removed: closing its streams");
                            tx();
                            return;
                        }
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
}

struct FromZone {
    zone: String,
}

impl Inbound for FromZone {
    fn accept(&self, mut r: Resource) -> Result<Resource, String> {
        if !rules::global_consumes(r.kind) {
            return Err(format!("{}: zones may not provide {}", r.meta.name, r.kind));
        }
        match rules::zone_of(&r) {
            Some(z) if z == self.zone => {}
            Some(z) => {
                return Err(format!(
                    "{}: belongs to zone {z:?}, not {:?}",
                    r.meta.name, self.zone
                ));
            }
            None => return Err(format!("{}: missing label {ZONE}", r.meta.name)),
        }
        r.meta
            .labels
            .insert(ORIGIN.into(), rules::ORIGIN_ZONE.into());
        if matches!(r.kind, ResourceType::ZoneIngress | ResourceType::ZoneEgress)
            && let Some(obj) = r.spec.as_object_mut()
        {
            obj.insert("zone".into(), serde_json::Value::String(self.zone.clone()));
        }
        Ok(r)
    }

    fn owned_by_peer(&self, r: &Resource) -> bool {
        rules::zone_of(r) == Some(self.zone.as_str()) && r.label(ORIGIN) == Some(rules::ORIGIN_ZONE)
    }
}

type ResponseStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;
type RequestStream = ReceiverStream<Result<DeltaDiscoveryRequest, Status>>;

#[tonic::async_trait]
impl KdsSyncService for GlobalKds {
    type GlobalToZoneSyncStream = ResponseStream;
    type ZoneToGlobalSyncStream = RequestStream;

    async fn global_to_zone_sync(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::GlobalToZoneSyncStream>, Status> {
        let zone = client_id(&request)?;
        self.admit(&zone).await?;
        let (tx, rx) = mpsc::channel(64);
        let zones = self.zones.clone();
        let target = zone.clone();
        let outbound: sync::Outbound = Arc::new(move |r: &Resource| {
            rules::global_sends_to_zone(r, &target, |z| zones.enabled(z)).then(|| rules::to_zone(r))
        });
        let (store, max, stream) = (self.store.clone(), self.max_message, request.into_inner());
        let closer = tx.clone();
        self.watch_zone(zone.clone(), move || {
            let _ = closer.try_send(Err(Status::permission_denied("zone disabled on global")));
        });
        tokio::spawn(async move {
            let peer = format!("zone {zone} (global->zone)");
            match sync::run_sender(
                store,
                rules::zone_subscriptions(),
                outbound,
                stream,
                tx,
                peer.clone(),
                max,
            )
            .await
            {
                Ok(c) => {
                    tracing::info!(%peer, sent = c.responses_sent, acks = c.acks, nacks = c.nacks, "stream ended")
                }
                Err(e) => tracing::info!(%peer, error = %e, "stream ended"),
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn zone_to_global_sync(
        &self,
        request: Request<Streaming<DeltaDiscoveryResponse>>,
    ) -> Result<Response<Self::ZoneToGlobalSyncStream>, Status> {
        let zone = client_id(&request)?;
        self.admit(&zone).await?;
        let (tx, rx) = mpsc::channel(64);
        let store = self.store.clone();
        let closer = tx.clone();
        self.watch_zone(zone.clone(), move || {
            let _ = closer.try_send(Err(Status::permission_denied("zone disabled on global")));
        });
        let stream = request.into_inner();
        tokio::spawn(async move {
            let peer = format!("zone {zone} (zone->global)");
            let inbound = Arc::new(FromZone { zone: zone.clone() });
            match sync::run_receiver(
                store,
                rules::global_subscriptions(),
                inbound,
                "global".into(),
                stream,
                tx,
                peer.clone(),
            )
            .await
            {
                Ok(c) => tracing::info!(%peer, acks = c.acks, nacks = c.nacks, "stream ended"),
                Err(e) => tracing::info!(%peer, error = %e, "stream ended"),
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

type Unimplemented<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl GlobalKdsService for GlobalKds {
    type StreamXDSConfigsStream = Unimplemented<XdsConfigRequest>;
    type StreamStatsStream = Unimplemented<StatsRequest>;
    type StreamClustersStream = Unimplemented<ClustersRequest>;

    async fn stream_xds_configs(
        &self,
        _: Request<Streaming<XdsConfigResponse>>,
    ) -> Result<Response<Self::StreamXDSConfigsStream>, Status> {
        Err(Status::unimplemented(
            "inspecting zone proxies from global is not implemented yet",
        ))
    }

    async fn stream_stats(
        &self,
        _: Request<Streaming<StatsResponse>>,
    ) -> Result<Response<Self::StreamStatsStream>, Status> {
        Err(Status::unimplemented(
            "inspecting zone proxies from global is not implemented yet",
        ))
    }

    async fn stream_clusters(
        &self,
        _: Request<Streaming<ClustersResponse>>,
    ) -> Result<Response<Self::StreamClustersStream>, Status> {
        Err(Status::unimplemented(
            "inspecting zone proxies from global is not implemented yet",
        ))
    }

    async fn health_check(
        &self,
        request: Request<ZoneHealthCheckRequest>,
    ) -> Result<Response<ZoneHealthCheckResponse>, Status> {
        let zone = client_id(&request)?;
        tracing::debug!(%zone, "zone health check");
        let interval = prost_types::Duration {
            seconds: self.health_interval.as_secs() as i64,
            nanos: 0,
        };
        Ok(Response::new(ZoneHealthCheckResponse {
            interval: Some(interval),
        }))
    }
}
