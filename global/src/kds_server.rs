//! Global's KDS services: `KDSSyncService` (each zone's connection carries two streams:
//! global sends policies down one and receives the zone's resources on the other) and
//! `GlobalKDSService` (health checks and the zones' inspect streams). Every stream admits its
//! zone the same way: name, version skew, zone token, then registration.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use model::labels::ORIGIN;
use model::{Resource, ResourceKey, ResourceType};
use proto::kuma::mesh::v1alpha1::global_kds_service_server::GlobalKdsService;
use proto::kuma::mesh::v1alpha1::kds_sync_service_server::KdsSyncService;
use proto::kuma::mesh::v1alpha1::{
    ClustersRequest, ClustersResponse, StatsRequest, StatsResponse, XdsConfigRequest,
    XdsConfigResponse, ZoneHealthCheckRequest, ZoneHealthCheckResponse,
};
use store::{SharedStore, StoreError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use security::zone as zone_token;
use security::{SigningKeys, TokenError};

use kds::inspect::{AdminOp, RequestMessage, ResponseMessage, ZoneAdminStreams};
use kds::rules::{self, Refusal};
use kds::sync::{self, Inbound};

use crate::insight::{ZoneInsights, ZonePeer};
use crate::zones::ZoneSwitches;

pub struct GlobalKds {
    pub store: SharedStore,
    pub zones: Arc<ZoneSwitches>,
    pub max_message: usize,
    pub health_interval: Duration,
    /// Zone-token signing keys; `None` when global accepts zones without tokens.
    pub zone_tokens: Option<Arc<SigningKeys>>,
    /// This global's CP version, against which zones' versions are checked.
    pub version: String,
    pub insights: Arc<ZoneInsights>,
    /// What zones receive looks the same for every zone, so it is encoded once for all.
    pub to_zones: Arc<sync::WireForms>,
    /// Zones' inspect streams, through which global's API reaches their proxies.
    pub inspect: Arc<ZoneAdminStreams>,
    /// How fast new sync streams are let in, so a reconnect storm spreads out.
    pub admission: AdmissionGate,
    /// The store's changes of what zones receive, shared by every zone's stream.
    pub to_zones_changes: Arc<sync::ChangeFeed>,
}

/// New sync streams a global replica admits per second, and how many at once after a quiet
/// spell. A zone opens two; its full resyncs are most of what a connecting zone costs. When a
/// thousand zones reconnect at once (global restarted), those beyond the burst are told to come
/// back, and their jittered backoff (1 s doubling to 1 min, plus up to half) spreads them out.
pub const ADMISSIONS_PER_SECOND: f64 = 200.0;
pub const ADMISSION_BURST: f64 = 400.0;

/// A token bucket in front of the sync streams.
pub struct AdmissionGate {
    rate: f64,
    burst: f64,
    bucket: std::sync::Mutex<(f64, tokio::time::Instant)>,
}

impl Default for AdmissionGate {
    fn default() -> Self {
        AdmissionGate::new(ADMISSIONS_PER_SECOND, ADMISSION_BURST)
    }
}

impl AdmissionGate {
    pub fn new(rate: f64, burst: f64) -> Self {
        AdmissionGate {
            rate,
            burst,
            bucket: std::sync::Mutex::new((burst, tokio::time::Instant::now())),
        }
    }

    /// Takes one admission, or says why not.
    fn admit(&self) -> Result<(), Status> {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        let (tokens, last) = *bucket;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
        if tokens < 1.0 {
            *bucket = (tokens, now);
            return Err(Status::unavailable(format!(
                "global is admitting zone streams at its limit ({} per second); retry with backoff",
                self.rate
            )));
        }
        *bucket = (tokens - 1.0, now);
        Ok(())
    }
}

/// The wire forms zones receive, shared by every zone's stream.
pub fn zone_wire_forms() -> sync::WireForms {
    sync::WireForms::new(rules::to_zone)
}

/// A zone whose version global does not serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionSkew {
    #[error(
        "zone control plane version {zone} is newer than global's {global}: upgrade global first"
    )]
    ZoneNewer { zone: String, global: String },
    #[error(
        "zone control plane version {zone} is more than two minor versions older than global's {global}: upgrade the zone"
    )]
    ZoneTooOld { zone: String, global: String },
}

/// Refuses zones newer than global or more than two minor versions older. Versions that do not
/// parse as `major.minor.patch` (development builds) are let through.
pub fn check_version_skew(global: &str, zone: &str) -> Result<(), VersionSkew> {
    fn parse(v: &str) -> Option<(u64, u64, u64)> {
        let core = v.trim_start_matches('v').split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
        Some((parts.next()??, parts.next()??, parts.next()??))
    }
    let (Some(g), Some(z)) = (parse(global), parse(zone)) else {
        return Ok(());
    };
    let versions = || (zone.to_string(), global.to_string());
    if z > g {
        let (zone, global) = versions();
        return Err(VersionSkew::ZoneNewer { zone, global });
    }
    if z.0 < g.0 || g.1 - z.1 > 2 {
        let (zone, global) = versions();
        return Err(VersionSkew::ZoneTooOld { zone, global });
    }
    Ok(())
}

fn metadata_str<'a, T>(req: &'a Request<T>, key: &str) -> Option<&'a str> {
    req.metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// Whether the zone lists `feature` among its `features` (one value each, or comma-separated).
fn has_feature<T>(req: &Request<T>, feature: &str) -> bool {
    req.metadata()
        .get_all("features")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|f| f.trim() == feature)
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
    /// Who is calling, checked in order: name, version, token; then the zone is registered.
    /// Nothing is written for a caller that fails a check.
    async fn admit<T>(&self, req: &Request<T>) -> Result<ZonePeer, Status> {
        let zone = client_id(req)?;
        let version = metadata_str(req, "version").unwrap_or_default().to_string();
        if version.is_empty() {
            tracing::warn!(%zone, "zone did not send its control plane version");
        }
        if let Err(skew) = check_version_skew(&self.version, &version) {
            tracing::warn!(%zone, message = %skew, "zone refused");
            return Err(Status::failed_precondition(skew.to_string()));
        }
        let token = metadata_str(req, "authorization")
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim());
        if let Some(keys) = &self.zone_tokens {
            let Some(token) = token else {
                return Err(Status::unauthenticated(format!(
                    "global requires a zone token: generate one on global with `kumactl generate zone-token --zone={zone} --scope=cp` \
                     and give it to the zone in KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_PATH"
                )));
            };
            match zone_token::verify_zone_token(keys, token, &zone, zone_token::SCOPE_CP).await {
                Ok(_) => {}
                Err(zone_token::ZoneTokenError::Token(TokenError::Store(e))) => {
                    return Err(Status::unavailable(format!(
                        "cannot check the zone token: {e}"
                    )));
                }
                Err(e) => {
                    tracing::warn!(%zone, error = %e, "zone token refused");
                    return Err(Status::unauthenticated(format!("zone token refused: {e}")));
                }
            }
        }
        self.register(&zone).await?;
        Ok(ZonePeer {
            zone,
            address: req.remote_addr(),
            version_compatible: !version.is_empty(),
            version,
            auth_token_provided: token.is_some(),
        })
    }

    /// Registers the zone on its first stream; a disabled zone is turned away.
    async fn register(&self, zone: &str) -> Result<(), Status> {
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

    /// Resolves, with the reason, when the zone is disabled or deleted on global.
    fn closing(&self, zone: &str) -> impl Future<Output = &'static str> + Send + 'static {
        let zones = self.zones.clone();
        let mut closings = zones.closings();
        let closed_before = zones.times_closed(zone);
        let zone = zone.to_string();
        async move {
            loop {
                // Checked before the first wait: a switch that flipped before this watch began
                // counts too.
                if zones.is_shut() {
                    return "control plane deleted on the manager";
                }
                if !zones.enabled(&zone) {
                    return "zone disabled on global";
                }
                if zones.times_closed(&zone) != closed_before {
                    return "zone deleted on global";
                }
                if closings.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }
}

/// Runs one of a zone's sync streams until it ends, the zone is closed on global, or it fails;
/// then ends the response stream with a status the zone sees (so it reconnects or stops),
/// rather than leaving it open and silent.
fn serve_stream<T: Send + 'static>(
    peer: String,
    responses: mpsc::Sender<Result<T, Status>>,
    sync: impl Future<Output = Result<(), sync::SyncError>> + Send + 'static,
    closing: impl Future<Output = &'static str> + Send + 'static,
    session: Arc<crate::insight::Session>,
) {
    tokio::spawn(async move {
        let ending = tokio::select! {
            r = sync => match r {
                Ok(()) => {
                    tracing::info!(%peer, "stream ended");
                    None
                }
                Err(e) => {
                    tracing::info!(%peer, error = %model::error_chain(&e), "stream ended");
                    // What the zone sent is refused with its own code (a message over the size
                    // limit is OUT_OF_RANGE); anything else is global's side, worth a retry.
                    let code = match &e {
                        sync::SyncError::Protocol(status) => status.code(),
                        _ => tonic::Code::Unavailable,
                    };
                    Some(Status::new(code, format!("global ended the stream: {e}")))
                }
            },
            reason = closing => {
                tracing::info!(%peer, reason, "closing the zone's stream");
                Some(Status::permission_denied(reason))
            }
        };
        // The sync's own handle on the stream is gone now; this is the last one. A zone that
        // reads nothing gets the stream ended without the status after a while.
        if let Some(status) = ending {
            let _ = tokio::time::timeout(Duration::from_secs(5), responses.send(Err(status))).await;
        }
        drop(responses);
        drop(session);
    });
}

// Public for the fuzz targets (fuzz/), not an API.
#[doc(hidden)]
pub struct FromZone {
    pub zone: String,
}

impl Inbound for FromZone {
    fn accept(&self, mut r: Resource) -> Result<Resource, Refusal> {
        if !rules::global_consumes(r.kind) {
            return Err(Refusal::NotProvided {
                name: r.meta.name,
                peer: "zones",
                kind: r.kind,
            });
        }
        match rules::zone_of(&r) {
            Some(z) if z == self.zone => {}
            Some(z) => {
                return Err(Refusal::OtherZone {
                    owner: z.to_string(),
                    name: r.meta.name,
                    zone: self.zone.clone(),
                });
            }
            None => return Err(Refusal::NoZoneLabel { name: r.meta.name }),
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
        // Watched from before admission: a zone disabled or deleted while its stream is being
        // admitted gets that stream closed too.
        let closing = self.closing(&client_id(&request)?);
        // Authenticated first: streams with no valid token must not use up the admissions
        // real zones need.
        let peer = self.admit(&request).await?;
        self.admission.admit()?;
        let session = self.insights.join(&peer);
        let zone = peer.zone;
        let (tx, rx) = mpsc::channel(64);
        let zones = self.zones.clone();
        let target = zone.clone();
        let outbound = sync::Outbound {
            wanted: Arc::new(move |r: &Resource| {
                rules::global_sends_to_zone(r, &target, |z| zones.enabled(z))
            }),
            wire: self.to_zones.clone(),
            refilter: Some(self.zones.changes()),
            changes: self.to_zones_changes.clone(),
            streamed_full_state: has_feature(&request, sync::FEATURE_STREAMED_FULL_STATE),
        };
        let (store, max, stream) = (self.store.clone(), self.max_message, request.into_inner());
        let peer = format!("zone {zone} (global->zone)");
        let sync = sync::run_sender(
            store,
            rules::zone_subscriptions(),
            outbound,
            stream,
            tx.clone(),
            sync::StreamLabel {
                peer: peer.clone(),
                stats: session.stats.clone(),
            },
            max,
        );
        serve_stream(peer, tx, sync, closing, session);
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn zone_to_global_sync(
        &self,
        request: Request<Streaming<DeltaDiscoveryResponse>>,
    ) -> Result<Response<Self::ZoneToGlobalSyncStream>, Status> {
        // Watched from before admission: a zone disabled or deleted while its stream is being
        // admitted gets that stream closed too.
        let closing = self.closing(&client_id(&request)?);
        // Authenticated first: streams with no valid token must not use up the admissions
        // real zones need.
        let peer = self.admit(&request).await?;
        self.admission.admit()?;
        let session = self.insights.join(&peer);
        let zone = peer.zone;
        let (tx, rx) = mpsc::channel(64);
        let peer = format!("zone {zone} (zone->global)");
        let sync = sync::run_receiver(
            self.store.clone(),
            rules::global_subscriptions(),
            Arc::new(FromZone { zone: zone.clone() }),
            "global".into(),
            request.into_inner(),
            tx.clone(),
            sync::StreamLabel {
                peer: peer.clone(),
                stats: session.stats.clone(),
            },
        );
        serve_stream(peer, tx, sync, closing, session);
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

type AdminStream<T> = ReceiverStream<Result<T, Status>>;

impl GlobalKds {
    /// A zone's inspect stream of `op`: admitted like its sync streams, then held for the API.
    async fn inspect_stream<Req: RequestMessage, Resp: ResponseMessage>(
        &self,
        op: AdminOp,
        request: Request<Streaming<Resp>>,
    ) -> Result<Response<AdminStream<Req>>, Status> {
        let peer = self.admit(&request).await?;
        tracing::debug!(zone = %peer.zone, op = op.path(), "zone opened an inspect stream");
        let closing = self.closing(&peer.zone);
        let mut served = self.inspect.serve(peer.zone, op, request.into_inner());
        // Ended with the zone's other streams when the zone is closed on global (or its
        // control plane deleted on a manager).
        let (out, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            tokio::pin!(closing);
            loop {
                tokio::select! {
                    next = served.recv() => match next {
                        Some(message) => {
                            if out.send(message).await.is_err() {
                                return;
                            }
                        }
                        None => return,
                    },
                    reason = &mut closing => {
                        let _ = out.send(Err(Status::permission_denied(reason))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl GlobalKdsService for GlobalKds {
    type StreamXDSConfigsStream = AdminStream<XdsConfigRequest>;
    type StreamStatsStream = AdminStream<StatsRequest>;
    type StreamClustersStream = AdminStream<ClustersRequest>;

    async fn stream_xds_configs(
        &self,
        request: Request<Streaming<XdsConfigResponse>>,
    ) -> Result<Response<Self::StreamXDSConfigsStream>, Status> {
        self.inspect_stream(AdminOp::ConfigDump, request).await
    }

    async fn stream_stats(
        &self,
        request: Request<Streaming<StatsResponse>>,
    ) -> Result<Response<Self::StreamStatsStream>, Status> {
        self.inspect_stream(AdminOp::Stats, request).await
    }

    async fn stream_clusters(
        &self,
        request: Request<Streaming<ClustersResponse>>,
    ) -> Result<Response<Self::StreamClustersStream>, Status> {
        self.inspect_stream(AdminOp::Clusters, request).await
    }

    async fn health_check(
        &self,
        request: Request<ZoneHealthCheckRequest>,
    ) -> Result<Response<ZoneHealthCheckResponse>, Status> {
        let peer = self.admit(&request).await?;
        tracing::debug!(zone = %peer.zone, "zone health check");
        if !self.insights.health_checked(&peer)
            && let Err(e) = crate::insight::record_health_check(&self.store, &peer.zone).await
        {
            tracing::warn!(zone = %peer.zone, error = %e, "could not record the zone's health check");
        }
        let interval = prost_types::Duration {
            seconds: self.health_interval.as_secs() as i64,
            nanos: 0,
        };
        Ok(Response::new(ZoneHealthCheckResponse {
            interval: Some(interval),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_gate_lets_a_burst_in_then_the_rate() {
        let gate = AdmissionGate::new(10.0, 5.0);
        for _ in 0..5 {
            gate.admit().unwrap();
        }
        let refused = gate.admit().unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(
            refused.message().contains("10 per second"),
            "{}",
            refused.message()
        );
        tokio::time::advance(Duration::from_millis(250)).await;
        gate.admit().unwrap();
        gate.admit().unwrap();
        assert!(gate.admit().is_err());
    }

    #[test]
    fn features_are_read_from_every_value_and_from_lists() {
        let with = |values: &[&str]| {
            let mut req = Request::new(());
            for v in values {
                req.metadata_mut().append("features", v.parse().unwrap());
            }
            has_feature(&req, sync::FEATURE_STREAMED_FULL_STATE)
        };
        // Kuma's zones: only hash-suffix.
        assert!(!with(&["hash-suffix"]));
        assert!(!with(&[]));
        // Ours, as separate values or as one list.
        assert!(with(&["hash-suffix", sync::FEATURE_STREAMED_FULL_STATE]));
        assert!(with(&["hash-suffix, kuma-rs-streamed-full-state"]));
        assert!(!with(&["kuma-rs-streamed-full-state-v2"]));
    }
}
