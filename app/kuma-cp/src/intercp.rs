//! Replica-to-replica gRPC on 5683 with mutual TLS. Every replica serves `Ping`; followers ping
//! the leader, and the leader keeps the catalog of live replicas in the store.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use api::inspect::{AdminAnswer, ProxyRef};
use model::catalog::{CATALOG_CONFIG, Catalog, INTER_CP_CA_SECRET, Instance};
use model::specs::secret::{ConfigSpec, SecretSpec};
use model::{Resource, ResourceKey, ResourceType, Timestamp};
use proto::kuma::system::v1alpha1::inter_cp_envoy_admin_forward_service_client::InterCpEnvoyAdminForwardServiceClient;
use proto::kuma::system::v1alpha1::inter_cp_envoy_admin_forward_service_server::{
    InterCpEnvoyAdminForwardService, InterCpEnvoyAdminForwardServiceServer,
};
use proto::kuma::system::v1alpha1::inter_cp_ping_service_client::InterCpPingServiceClient;
use proto::kuma::system::v1alpha1::inter_cp_ping_service_server::{
    InterCpPingService, InterCpPingServiceServer,
};
use proto::kuma::system::v1alpha1::{
    EnvoyAdminForwardRequest, EnvoyAdminForwardResponse, PingRequest, PingResponse,
};
use security::ca::CertificateAuthority;
use store::{SharedStore, StoreError};
use tokio::sync::watch;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, Server, ServerTlsConfig};
use zone::admin::{AdminError, AdminTunnels};

use crate::VERSION;

/// How often followers ping the leader and the leader rewrites the catalog.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A replica not heard from for this long leaves the catalog.
const EXPIRY: Duration = Duration::from_secs(15);
const MAX_MESSAGE: usize = 64 * 1024;
/// Forwarded config dumps of large meshes are big.
const MAX_ADMIN_ANSWER: usize = 64 * 1024 * 1024;

/// Who this replica is, as others should reach it.
#[derive(Debug, Clone)]
pub struct Me {
    pub id: String,
    pub address: String,
    pub port: u16,
}

/// The address this host uses to reach other hosts: the source address of a route, found
/// without sending anything (a UDP connect only consults the routing table).
pub fn primary_address() -> String {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("10.255.255.255:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .map_or_else(|| "127.0.0.1".to_string(), |ip| ip.to_string())
}

/// GlobalSecret of the CA that signs each replica's data plane server certificate; kuma-dp
/// verifies the control plane with it (`--ca-cert-file`), and bootstraps carry it to Envoy.
pub const DP_SERVER_CA_SECRET: &str = "dp-server-ca";

/// Creates the inter-CP CA if there is none (leader-only, like every default).
pub async fn ensure_ca(store: &SharedStore) -> Result<()> {
    ensure_named_ca(store, INTER_CP_CA_SECRET, "kuma-inter-cp-ca").await?;
    ensure_named_ca(store, DP_SERVER_CA_SECRET, "kuma-dp-server-ca").await
}

async fn ensure_named_ca(store: &SharedStore, secret: &str, common_name: &str) -> Result<()> {
    let key = ResourceKey::new(ResourceType::GlobalSecret, "", secret);
    match store.get(&key).await {
        Ok(_) => return Ok(()),
        Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(e).with_context(|| format!("reading GlobalSecret {secret}")),
    }
    let ca = CertificateAuthority::generate(common_name, Duration::from_secs(10 * 365 * 86400))?;
    let spec = serde_json::to_value(SecretSpec::from_bytes(&serde_json::to_vec(&ca)?))?;
    match store
        .create(Resource::new(ResourceType::GlobalSecret, "", secret, spec))
        .await
    {
        Ok(_) => {
            tracing::info!(secret, "created a certificate authority");
            Ok(())
        }
        Err(StoreError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("storing GlobalSecret {secret}")),
    }
}

/// Waits for the leader to have created the inter-CP CA.
pub async fn load_ca(store: &SharedStore) -> CertificateAuthority {
    load_named_ca(store, INTER_CP_CA_SECRET).await
}

/// Waits for the leader to have created the CA kept in GlobalSecret `secret`.
pub async fn load_named_ca(store: &SharedStore, secret: &str) -> CertificateAuthority {
    let key = ResourceKey::new(ResourceType::GlobalSecret, "", secret);
    loop {
        if let Ok(r) = store.get(&key).await
            && let Ok(spec) = serde_json::from_value::<SecretSpec>(r.spec)
            && let Ok(bytes) = spec.bytes()
            && let Ok(ca) = serde_json::from_slice::<CertificateAuthority>(&bytes)
        {
            return ca;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

struct PingService {
    me: Me,
    leader: watch::Receiver<bool>,
    seen: Arc<Mutex<HashMap<String, Instance>>>,
}

#[tonic::async_trait]
impl InterCpPingService for PingService {
    async fn ping(
        &self,
        request: tonic::Request<PingRequest>,
    ) -> Result<tonic::Response<PingResponse>, tonic::Status> {
        let r = request.into_inner();
        if r.instance_id.is_empty() || r.instance_id.len() > 253 || r.address.len() > 253 {
            return Err(tonic::Status::invalid_argument(
                "instance_id must be 1 to 253 characters, address at most 253",
            ));
        }
        let port = u16::try_from(r.inter_cp_port)
            .map_err(|_| tonic::Status::invalid_argument("inter_cp_port is not a port"))?;
        let leader = *self.leader.borrow();
        if leader {
            let instance = Instance {
                id: r.instance_id.clone(),
                address: r.address,
                inter_cp_port: port,
                leader: false,
                ready: r.ready,
                version: r.version,
                last_heartbeat: Timestamp::now(),
            };
            self.seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(r.instance_id, instance);
        }
        Ok(tonic::Response::new(PingResponse {
            leader,
            leader_instance_id: if leader {
                self.me.id.clone()
            } else {
                String::new()
            },
        }))
    }
}

/// mTLS material for this replica: a fresh leaf from the shared CA.
pub struct Tls {
    ca_pem: String,
    identity: Identity,
}

pub fn issue_tls(ca: &CertificateAuthority, me: &Me) -> Result<Tls> {
    let mut dns = vec!["localhost".to_string(), me.id.clone()];
    let mut ips: Vec<IpAddr> = vec!["127.0.0.1".parse()?];
    match me.address.parse::<IpAddr>() {
        Ok(ip) => ips.push(ip),
        Err(_) => dns.push(me.address.clone()),
    }
    let pair = ca.issue(&me.id, &dns, &ips, Duration::from_secs(365 * 86400))?;
    Ok(Tls {
        ca_pem: ca.cert_pem.clone(),
        identity: Identity::from_pem(pair.cert_pem, pair.key_pem),
    })
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: &Tls,
    me: Me,
    leader: watch::Receiver<bool>,
    seen: Arc<Mutex<HashMap<String, Instance>>>,
    tunnels: Arc<AdminTunnels>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let tls_config = ServerTlsConfig::new()
        .identity(tls.identity.clone())
        .client_ca_root(Certificate::from_pem(&tls.ca_pem));
    let service = InterCpPingServiceServer::new(PingService { me, leader, seen })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let forward = InterCpEnvoyAdminForwardServiceServer::new(ForwardService { tunnels })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_ADMIN_ANSWER);
    Server::builder()
        .tls_config(tls_config)
        .context("interCp.server TLS")?
        .timeout(Duration::from_secs(10))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .concurrency_limit_per_connection(32)
        .add_service(service)
        .add_service(forward)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async move {
                let _ = shutdown.wait_for(|s| *s).await;
            },
        )
        .await
        .context("inter-CP server")
}

async fn read_catalog(store: &SharedStore) -> Option<Catalog> {
    let r = store
        .get(&ResourceKey::new(ResourceType::Config, "", CATALOG_CONFIG))
        .await
        .ok()?;
    let spec: ConfigSpec = serde_json::from_value(r.spec).ok()?;
    serde_json::from_str(&spec.config).ok()
}

/// Leader-only: rewrites the catalog with itself and every replica heard from recently.
pub async fn keep_catalog(store: SharedStore, me: Me, seen: Arc<Mutex<HashMap<String, Instance>>>) {
    loop {
        let now = Timestamp::now();
        let mut instances = vec![Instance {
            id: me.id.clone(),
            address: me.address.clone(),
            inter_cp_port: me.port,
            leader: true,
            ready: true,
            version: VERSION.into(),
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
                    version: VERSION.into(),
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

/// A mutually authenticated channel to another replica; `timeout` bounds each call.
fn channel(
    endpoint: &str,
    host: &str,
    tls: &Tls,
    timeout: Duration,
) -> Result<tonic::transport::Endpoint, String> {
    let tls_config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&tls.ca_pem))
        .identity(tls.identity.clone())
        .domain_name(host.to_string());
    Ok(Channel::from_shared(endpoint.to_string())
        .map_err(|e| e.to_string())?
        .tls_config(tls_config)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout))
}

async fn connect(
    endpoint: &str,
    host: &str,
    tls: &Tls,
) -> Option<InterCpPingServiceClient<Channel>> {
    let connected = match channel(endpoint, host, tls, Duration::from_secs(5)) {
        Ok(c) => c.connect().await.map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match connected {
        Ok(ch) => Some(InterCpPingServiceClient::new(ch).max_decoding_message_size(MAX_MESSAGE)),
        Err(e) => {
            tracing::warn!(%endpoint, error = %e, "cannot connect to the leader over inter-CP");
            None
        }
    }
}

/// Answers forwarded admin requests from the streams this replica holds.
struct ForwardService {
    tunnels: Arc<AdminTunnels>,
}

#[tonic::async_trait]
impl InterCpEnvoyAdminForwardService for ForwardService {
    async fn forward(
        &self,
        request: tonic::Request<EnvoyAdminForwardRequest>,
    ) -> Result<tonic::Response<EnvoyAdminForwardResponse>, tonic::Status> {
        let r = request.into_inner();
        if !zone::admin::PATHS.contains(&r.path.as_str()) {
            return Err(tonic::Status::invalid_argument(format!(
                "path {:?} is not one of {:?}",
                r.path,
                zone::admin::PATHS
            )));
        }
        if r.mesh.is_empty() || r.name.is_empty() || r.mesh.len() > 253 || r.name.len() > 253 {
            return Err(tonic::Status::invalid_argument(
                "mesh and name must be 1 to 253 characters",
            ));
        }
        let answer = match self
            .tunnels
            .request(&r.mesh, &r.name, &r.path, &r.query, ADMIN_TIMEOUT)
            .await
        {
            Ok(a) => EnvoyAdminForwardResponse {
                status: a.status,
                body: a.body,
                content_type: a.content_type,
                error: String::new(),
            },
            Err(e) => EnvoyAdminForwardResponse {
                error: e.to_string(),
                ..Default::default()
            },
        };
        Ok(tonic::Response::new(answer))
    }
}

/// How long a proxy's kuma-dp has to answer an admin request.
const ADMIN_TIMEOUT: Duration = api::inspect::TIMEOUT;

/// Reaches a proxy's Envoy admin from any replica: through the stream this replica holds, or
/// by forwarding to the replica its DataplaneInsight names as the one it is connected to.
pub struct ProxyAdmin {
    pub store: SharedStore,
    pub tls: Arc<Tls>,
    pub me: Me,
    pub tunnels: Arc<AdminTunnels>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl ProxyAdmin {
    pub fn new(store: SharedStore, tls: Arc<Tls>, me: Me, tunnels: Arc<AdminTunnels>) -> Self {
        ProxyAdmin {
            store,
            tls,
            me,
            tunnels,
            channels: Mutex::default(),
        }
    }

    /// The replica the proxy's newest open xDS subscription is with, if it is another one.
    async fn holder(&self, proxy: ProxyRef<'_>) -> Result<Instance, String> {
        let who = match proxy.mesh {
            "" => format!("{} {:?}", proxy.kind, proxy.name),
            mesh => format!("{} {:?} in mesh {mesh:?}", proxy.kind, proxy.name),
        };
        let insight_kind = proxy
            .kind
            .owned_insight()
            .unwrap_or(ResourceType::DataplaneInsight);
        let key = ResourceKey::new(insight_kind, proxy.mesh, proxy.name);
        let insight = match self.store.get(&key).await {
            Ok(r) => serde_json::from_value::<model::specs::insight::InsightSpec>(r.spec)
                .map_err(|e| format!("reading the proxy's {insight_kind}: {e}"))?,
            Err(StoreError::NotFound(_)) => {
                return Err(format!("{who} has never connected (no {insight_kind})"));
            }
            Err(e) => return Err(format!("reading the proxy's {insight_kind}: {e}")),
        };
        let holder = insight
            .subscriptions
            .last()
            .filter(|s| s.disconnect_time.is_none())
            .map(|s| s.control_plane_instance_id.clone())
            .ok_or_else(|| format!("{who} is not connected"))?;
        if holder == self.me.id {
            return Err(format!(
                "{who} is connected to this instance, but its kuma-dp holds no admin stream (is kuma-dp running?)"
            ));
        }
        read_catalog(&self.store)
            .await
            .and_then(|c| c.instances.into_iter().find(|i| i.id == holder))
            .ok_or_else(|| {
                format!(
                    "{who} is connected to control plane instance {holder:?}, which is not in the catalog of live instances"
                )
            })
    }

    async fn forward(
        &self,
        proxy: ProxyRef<'_>,
        path: &str,
        query: &str,
    ) -> Result<AdminAnswer, String> {
        let target = self.holder(proxy).await?;
        let endpoint = format!("https://{}:{}", target.address, target.inter_cp_port);
        let ch = {
            let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
            match channels.get(&endpoint) {
                Some(c) => c.clone(),
                None => {
                    let c = channel(&endpoint, &target.address, &self.tls, ADMIN_TIMEOUT * 2)
                        .map_err(|e| format!("inter-CP endpoint {endpoint}: {e}"))?
                        .connect_lazy();
                    channels.insert(endpoint.clone(), c.clone());
                    c
                }
            }
        };
        let mut client = InterCpEnvoyAdminForwardServiceClient::new(ch)
            .max_decoding_message_size(MAX_ADMIN_ANSWER);
        let request = EnvoyAdminForwardRequest {
            mesh: proxy.mesh.into(),
            name: proxy.name.into(),
            path: path.into(),
            query: query.into(),
        };
        let answer = client
            .forward(request)
            .await
            .map_err(|s| {
                format!(
                    "forwarding to control plane instance {:?} ({endpoint}): {}",
                    target.id,
                    s.message()
                )
            })?
            .into_inner();
        if !answer.error.is_empty() {
            return Err(format!(
                "control plane instance {:?}: {}",
                target.id, answer.error
            ));
        }
        Ok(answer_of(answer.status, answer.content_type, answer.body))
    }
}

fn answer_of(status: u32, content_type: String, body: Vec<u8>) -> AdminAnswer {
    AdminAnswer {
        status: u16::try_from(status).unwrap_or(502),
        content_type,
        body,
    }
}

/// The API's view of the proxies' admin streams, held here or by another replica.
#[async_trait::async_trait]
impl api::inspect::ProxyAdmin for ProxyAdmin {
    async fn get(
        &self,
        proxy: ProxyRef<'_>,
        path: &str,
        query: &str,
    ) -> Result<AdminAnswer, String> {
        match self
            .tunnels
            .request(proxy.mesh, proxy.name, path, query, ADMIN_TIMEOUT)
            .await
        {
            Ok(r) => Ok(answer_of(r.status, r.content_type, r.body)),
            Err(AdminError::NotConnected { .. }) => self.forward(proxy, path, query).await,
            Err(e) => Err(e.to_string()),
        }
    }
}
