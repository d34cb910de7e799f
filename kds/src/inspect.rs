//! Inspecting proxies' Envoy admin (config dump, stats, clusters) from the API.
//!
//! The vocabulary every role shares: which proxy ([`ProxyRef`]), which page ([`AdminOp`]), what
//! answered ([`AdminAnswer`]) and the [`ProxyAdmin`] seam the API asks. Zones and standalone
//! reach their proxies through kuma-dp's admin stream (or the replica holding it); global
//! reaches them through the zones, as Kuma does: each zone opens three long-lived streams to
//! global (`GlobalKDSService.StreamXDSConfigs`, `StreamStats`, `StreamClusters`) on which the
//! roles are reversed: global sends requests naming a proxy and the zone answers with what the
//! proxy's Envoy admin said. Global's API thus reaches proxies it has no connection to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use model::ResourceType;
use proto::kuma::mesh::v1alpha1::{
    AdminOutputFormat, ClustersRequest, ClustersResponse, StatsRequest, StatsResponse,
    XdsConfigRequest, XdsConfigResponse, clusters_response, stats_response, xds_config_response,
};
use tokio::sync::{mpsc, oneshot};

/// Which proxy: a Dataplane (in a mesh), a ZoneIngress or a ZoneEgress (mesh empty).
#[derive(Debug, Clone, Copy)]
pub struct ProxyRef<'a> {
    pub kind: ResourceType,
    pub mesh: &'a str,
    pub name: &'a str,
}

impl std::fmt::Display for ProxyRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.mesh {
            "" => write!(f, "{} {:?}", self.kind, self.name),
            mesh => write!(f, "{} {:?} in mesh {mesh:?}", self.kind, self.name),
        }
    }
}

/// What answered an admin request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// Why a proxy's admin could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{proxy} has no admin stream to this control plane instance (is kuma-dp running?)")]
    NotConnected { proxy: String },
    #[error("{proxy} has never connected (no {insight})")]
    NeverConnected {
        proxy: String,
        insight: ResourceType,
    },
    #[error("{proxy} is not connected")]
    Disconnected { proxy: String },
    #[error(
        "{proxy} is connected to control plane instance {instance:?}, which is not in the catalog of live instances"
    )]
    UnknownInstance { proxy: String, instance: String },
    #[error("the proxy did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the proxy's admin stream closed")]
    Closed,
    #[error("kuma-dp could not reach Envoy's admin: {0}")]
    Envoy(String),
    #[error("Envoy admin answered {status}: {body}")]
    EnvoyStatus { status: u16, body: String },
    #[error("reading {what}")]
    Store {
        what: String,
        #[source]
        source: store::StoreError,
    },
    #[error("reading the proxy's {insight}")]
    Insight {
        insight: ResourceType,
        #[source]
        source: serde_json::Error,
    },
    #[error("{proxy} came from no zone")]
    NoZone { proxy: String },
    #[error(
        "zone {zone:?} holds no inspect stream to this global instance (it is offline, or connected to another global replica)"
    )]
    NoZoneStream { zone: String },
    #[error("zone {zone:?}'s inspect stream ended before it answered")]
    ZoneStreamEnded { zone: String },
    #[error("zone {zone:?} did not answer within {timeout:?}")]
    ZoneTimeout { zone: String, timeout: Duration },
    #[error("zone {zone:?}: {message}")]
    Zone { zone: String, message: String },
    #[error("inter-CP endpoint {endpoint}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("forwarding to control plane instance {instance:?} ({endpoint})")]
    Forward {
        instance: String,
        endpoint: String,
        #[source]
        source: tonic::Status,
    },
    #[error("control plane instance {instance:?}: {message}")]
    Remote { instance: String, message: String },
}

/// Reaches a proxy's Envoy admin; implemented by the data plane server on zones (directly, and
/// through the replica holding the proxy's stream) and by the KDS server on global.
#[async_trait::async_trait]
pub trait ProxyAdmin: Send + Sync {
    /// `query` is Envoy's admin query string, without `?`.
    async fn get(
        &self,
        proxy: ProxyRef<'_>,
        op: AdminOp,
        query: &str,
    ) -> Result<AdminAnswer, AdminError>;
}

pub type SharedProxyAdmin = Arc<dyn ProxyAdmin>;

/// How long a proxy's kuma-dp has to answer an admin request.
pub const PROXY_TIMEOUT: Duration = Duration::from_secs(10);

/// Which Envoy admin page a request asks for: one stream each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminOp {
    ConfigDump,
    Stats,
    Clusters,
}

impl AdminOp {
    /// The op for an Envoy admin path (`config_dump`, `stats`, `clusters`).
    pub fn from_path(path: &str) -> Option<AdminOp> {
        match path {
            "config_dump" => Some(AdminOp::ConfigDump),
            "stats" => Some(AdminOp::Stats),
            "clusters" => Some(AdminOp::Clusters),
            _ => None,
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            AdminOp::ConfigDump => "config_dump",
            AdminOp::Stats => "stats",
            AdminOp::Clusters => "clusters",
        }
    }

    /// What Envoy answers the page as.
    pub fn content_type(self) -> &'static str {
        match self {
            AdminOp::ConfigDump => "application/json",
            AdminOp::Stats | AdminOp::Clusters => "text/plain; charset=utf-8",
        }
    }
}

/// One request as both sides see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminCall {
    /// Dataplane, ZoneIngress or ZoneEgress.
    pub kind: ResourceType,
    pub mesh: String,
    /// The proxy's name in its zone.
    pub name: String,
    pub include_eds: bool,
}

impl AdminCall {
    /// The Envoy admin query string for this call.
    pub fn query(&self) -> &'static str {
        if self.include_eds { "include_eds" } else { "" }
    }
}

/// A request message of one of the three streams.
pub trait RequestMessage: Send + 'static {
    fn new(id: String, call: &AdminCall) -> Self;
    fn id(&self) -> &str;
    fn call(&self) -> Result<AdminCall, String>;
}

/// A response message of one of the three streams.
pub trait ResponseMessage: Send + 'static {
    fn new(id: String, result: Result<Vec<u8>, String>) -> Self;
    fn into_parts(self) -> (String, Result<Vec<u8>, String>);
}

fn kind_of(resource_type: &str) -> Result<ResourceType, String> {
    match ResourceType::from_name(resource_type) {
        Some(
            kind @ (ResourceType::Dataplane | ResourceType::ZoneIngress | ResourceType::ZoneEgress),
        ) => Ok(kind),
        _ => Err(format!(
            "resource type {resource_type:?} is not Dataplane, ZoneIngress or ZoneEgress"
        )),
    }
}

/// What differs between the three request messages: only config dumps carry `include_eds`;
/// stats and clusters are asked for as text, the form Envoy's admin and kumactl use.
trait Extra {
    fn set_extra(&mut self, include_eds: bool);
    fn include_eds(&self) -> bool;
}

impl Extra for XdsConfigRequest {
    fn set_extra(&mut self, include_eds: bool) {
        self.include_eds = include_eds;
    }
    fn include_eds(&self) -> bool {
        self.include_eds
    }
}

impl Extra for StatsRequest {
    fn set_extra(&mut self, _: bool) {
        self.format = AdminOutputFormat::Text as i32;
    }
    fn include_eds(&self) -> bool {
        false
    }
}

impl Extra for ClustersRequest {
    fn set_extra(&mut self, _: bool) {
        self.format = AdminOutputFormat::Text as i32;
    }
    fn include_eds(&self) -> bool {
        false
    }
}

macro_rules! admin_messages {
    ($req:ty, $resp:ident, $result:ident, $bytes:ident) => {
        impl RequestMessage for $req {
            fn new(id: String, call: &AdminCall) -> Self {
                let mut r = <$req>::default();
                r.request_id = id;
                r.resource_type = call.kind.to_string();
                r.resource_name = call.name.clone();
                r.resource_mesh = call.mesh.clone();
                r.set_extra(call.include_eds);
                r
            }
            fn id(&self) -> &str {
                &self.request_id
            }
            fn call(&self) -> Result<AdminCall, String> {
                Ok(AdminCall {
                    kind: kind_of(&self.resource_type)?,
                    mesh: self.resource_mesh.clone(),
                    name: self.resource_name.clone(),
                    include_eds: self.include_eds(),
                })
            }
        }
        impl ResponseMessage for $resp {
            fn new(request_id: String, result: Result<Vec<u8>, String>) -> Self {
                $resp {
                    request_id,
                    result: Some(match result {
                        Ok(b) => $result::Result::$bytes(b),
                        Err(e) => $result::Result::Error(e),
                    }),
                }
            }
            fn into_parts(self) -> (String, Result<Vec<u8>, String>) {
                let result = match self.result {
                    Some($result::Result::$bytes(b)) => Ok(b),
                    Some($result::Result::Error(e)) => Err(e),
                    None => Err("the zone answered neither a result nor an error".into()),
                };
                (self.request_id, result)
            }
        }
    };
}

admin_messages!(
    XdsConfigRequest,
    XdsConfigResponse,
    xds_config_response,
    Config
);
admin_messages!(StatsRequest, StatsResponse, stats_response, Stats);
admin_messages!(
    ClustersRequest,
    ClustersResponse,
    clusters_response,
    Clusters
);

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Result<Vec<u8>, String>>>>>;

struct Session {
    id: u64,
    calls: mpsc::Sender<(String, AdminCall)>,
    waiters: Waiters,
}

/// Global's side: the inspect streams zones hold open, by zone and op.
#[derive(Default)]
pub struct ZoneAdminStreams {
    sessions: Mutex<HashMap<(String, AdminOp), Session>>,
    next: AtomicU64,
}

impl ZoneAdminStreams {
    /// Serves one zone's stream of `op`: requests go out on the returned stream, answers come
    /// in on `responses`. A newer stream of the same zone and op replaces this one.
    pub fn serve<Req: RequestMessage, Resp: ResponseMessage>(
        self: &Arc<Self>,
        zone: String,
        op: AdminOp,
        mut responses: impl Stream<Item = Result<Resp, tonic::Status>> + Send + Unpin + 'static,
    ) -> mpsc::Receiver<Result<Req, tonic::Status>> {
        let (out_tx, out_rx) = mpsc::channel(16);
        let (calls_tx, mut calls_rx) = mpsc::channel::<(String, AdminCall)>(16);
        let waiters: Waiters = Arc::default();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            (zone.clone(), op),
            Session {
                id,
                calls: calls_tx,
                waiters: waiters.clone(),
            },
        );
        let streams = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    call = calls_rx.recv() => {
                        let Some((request_id, call)) = call else { break };
                        if out_tx.send(Ok(Req::new(request_id, &call))).await.is_err() {
                            break;
                        }
                    }
                    response = responses.next() => {
                        let Some(Ok(response)) = response else { break };
                        let (request_id, result) = response.into_parts();
                        let waiter = waiters
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&request_id);
                        if let Some(w) = waiter {
                            let _ = w.send(result);
                        }
                    }
                }
            }
            let mut sessions = streams.lock();
            if sessions
                .get(&(zone.clone(), op))
                .is_some_and(|s| s.id == id)
            {
                sessions.remove(&(zone.clone(), op));
            }
            tracing::debug!(%zone, op = op.path(), "zone inspect stream ended");
        });
        out_rx
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, AdminOp), Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks `zone` for a proxy's admin page and waits up to `timeout` for its answer.
    pub async fn call(
        &self,
        zone: &str,
        op: AdminOp,
        call: AdminCall,
        timeout: Duration,
    ) -> Result<Vec<u8>, AdminError> {
        let request_id = security::random_uuid();
        let (tx, rx) = oneshot::channel();
        let (calls, waiters) = {
            let sessions = self.lock();
            let Some(s) = sessions.get(&(zone.to_string(), op)) else {
                return Err(AdminError::NoZoneStream { zone: zone.into() });
            };
            (s.calls.clone(), s.waiters.clone())
        };
        waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(request_id.clone(), tx);
        let forget = || {
            waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&request_id);
        };
        if calls.send((request_id.clone(), call)).await.is_err() {
            forget();
            return Err(AdminError::ZoneStreamEnded { zone: zone.into() });
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result.map_err(|message| AdminError::Zone {
                zone: zone.into(),
                message,
            }),
            Ok(Err(_)) => Err(AdminError::ZoneStreamEnded { zone: zone.into() }),
            Err(_) => {
                forget();
                Err(AdminError::ZoneTimeout {
                    zone: zone.into(),
                    timeout,
                })
            }
        }
    }
}

/// The zone's side of one inspect stream: answers each request global sends, concurrently,
/// through `admin` (the zone's own way to its proxies), until the stream ends. An Envoy answer
/// other than 200 goes back as an error.
pub async fn answer<Req: RequestMessage, Resp: ResponseMessage>(
    op: AdminOp,
    mut requests: impl Stream<Item = Result<Req, tonic::Status>> + Unpin,
    replies: mpsc::Sender<Resp>,
    admin: SharedProxyAdmin,
) {
    while let Some(Ok(request)) = requests.next().await {
        let id = request.id().to_string();
        let replies = replies.clone();
        let admin = admin.clone();
        tokio::spawn(async move {
            let result = match request.call() {
                Ok(call) => {
                    let proxy = ProxyRef {
                        kind: call.kind,
                        mesh: &call.mesh,
                        name: &call.name,
                    };
                    match admin.get(proxy, op, call.query()).await {
                        Ok(a) if a.status == 200 => Ok(a.body),
                        Ok(a) => Err(AdminError::EnvoyStatus {
                            status: a.status,
                            body: String::from_utf8_lossy(&a.body).into_owned(),
                        }
                        .to_string()),
                        Err(e) => Err(model::error_chain(&e)),
                    }
                }
                Err(e) => Err(e),
            };
            let _ = replies.send(Resp::new(id, result)).await;
        });
    }
}

/// A zone proxy or Dataplane as global stores it, and the zone it came from.
pub async fn proxy_in_zone(
    store: &store::SharedStore,
    proxy: ProxyRef<'_>,
) -> Result<(model::Resource, String), AdminError> {
    let key = model::ResourceKey::new(proxy.kind, proxy.mesh, proxy.name);
    let r = store.get(&key).await.map_err(|source| AdminError::Store {
        what: proxy.to_string(),
        source,
    })?;
    let zone = crate::rules::zone_of(&r)
        .ok_or_else(|| AdminError::NoZone {
            proxy: proxy.to_string(),
        })?
        .to_string();
    Ok((r, zone))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::wrappers::ReceiverStream;

    fn call() -> AdminCall {
        AdminCall {
            kind: ResourceType::ZoneIngress,
            mesh: String::new(),
            name: "ingress-1".into(),
            include_eds: true,
        }
    }

    #[test]
    fn requests_carry_the_call_across() {
        let r = <XdsConfigRequest as RequestMessage>::new("id-1".into(), &call());
        assert_eq!(r.resource_type, "ZoneIngress");
        assert_eq!(r.call(), Ok(call()));
        // Stats have no include_eds: it does not survive the trip.
        let s = <StatsRequest as RequestMessage>::new("id-2".into(), &call());
        assert_eq!(s.format, AdminOutputFormat::Text as i32);
        assert!(!s.call().unwrap_or_else(|e| panic!("{e}")).include_eds);
        let mut bad = r.clone();
        bad.resource_type = "Mesh".into();
        assert!(bad.call().is_err_and(|e| e.contains("\"Mesh\"")));
    }

    #[test]
    fn responses_keep_results_and_errors_apart() {
        let ok = <ClustersResponse as ResponseMessage>::new("a".into(), Ok(b"x".to_vec()));
        assert_eq!(ok.into_parts(), ("a".into(), Ok(b"x".to_vec())));
        let err = <ClustersResponse as ResponseMessage>::new("b".into(), Err("gone".into()));
        assert_eq!(err.into_parts(), ("b".into(), Err("gone".into())));
        let empty = ClustersResponse {
            request_id: "c".into(),
            result: None,
        };
        assert!(empty.into_parts().1.is_err());
    }

    #[tokio::test]
    async fn a_call_goes_down_the_zone_stream_and_its_answer_comes_back() {
        let streams = Arc::new(ZoneAdminStreams::default());
        let timeout = Duration::from_secs(5);
        let missing = streams
            .call("zone-1", AdminOp::Stats, call(), timeout)
            .await;
        assert!(missing.is_err_and(|e| e.to_string().contains("no inspect stream")));

        let (answers_tx, answers_rx) = mpsc::channel::<Result<StatsResponse, tonic::Status>>(4);
        let mut requests: mpsc::Receiver<Result<StatsRequest, tonic::Status>> = streams.serve(
            "zone-1".into(),
            AdminOp::Stats,
            ReceiverStream::new(answers_rx),
        );
        let zone = tokio::spawn(async move {
            let Some(Ok(req)) = requests.recv().await else {
                panic!("no request reached the zone");
            };
            let body = format!("stats of {}", req.resource_name).into_bytes();
            let _ = answers_tx
                .send(Ok(ResponseMessage::new(req.request_id, Ok(body))))
                .await;
            // Never answers the next one.
            let _next = requests.recv().await;
            answers_tx
        });
        let answer = streams
            .call("zone-1", AdminOp::Stats, call(), timeout)
            .await;
        assert_eq!(answer.ok(), Some(b"stats of ingress-1".to_vec()));
        let slow = streams
            .call("zone-1", AdminOp::Stats, call(), Duration::from_millis(100))
            .await;
        assert!(slow.is_err_and(|e| e.to_string().contains("did not answer")));
        // Once the zone's stream ends, the zone is no longer reachable.
        drop(zone.await);
        for _ in 0..50 {
            if streams.lock().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(streams.lock().is_empty(), "the ended stream is forgotten");
    }
}
