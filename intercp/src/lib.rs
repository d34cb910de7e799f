//! Replica-to-replica gRPC on 5683 with mutual TLS. Every replica serves `Ping`; followers ping
//! the leader, and the leader keeps the catalog of live replicas in the store. A replica that
//! is asked for a proxy's Envoy admin it does not hold forwards the request to the replica the
//! proxy is connected to ([`forward`]).

pub mod ca;
pub mod catalog;
pub mod forward;
mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kds::inspect::{AdminOp, ProxyRef, SharedProxyAdmin};
use model::ResourceType;
use model::Timestamp;
use model::catalog::Instance;
use proto::kuma::system::v1alpha1::inter_cp_envoy_admin_forward_service_server::{
    InterCpEnvoyAdminForwardService, InterCpEnvoyAdminForwardServiceServer,
};
use proto::kuma::system::v1alpha1::inter_cp_ping_service_server::{
    InterCpPingService, InterCpPingServiceServer,
};
use proto::kuma::system::v1alpha1::{
    EnvoyAdminForwardRequest, EnvoyAdminForwardResponse, PingRequest, PingResponse,
};
use tokio::sync::watch;
use tonic::transport::{Certificate, Server, ServerTlsConfig};

pub use ca::{DP_SERVER_CA_SECRET, ensure_ca, load_ca, load_named_ca};
pub use tls::{Tls, issue_tls};

/// Requests between replicas are small; forwarded config dumps of large meshes are not.
const MAX_MESSAGE: usize = 64 * 1024;
const MAX_ADMIN_ANSWER: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum IntercpError {
    #[error("issuing {what}")]
    Certificate {
        what: &'static str,
        #[source]
        source: security::tls::TlsError,
    },
    #[error("GlobalSecret {secret}")]
    CaStore {
        secret: &'static str,
        #[source]
        source: store::StoreError,
    },
    #[error("encoding GlobalSecret {secret}")]
    CaEncoding {
        secret: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("interCp.server TLS")]
    Tls(#[source] tonic::transport::Error),
    #[error("inter-CP server")]
    Serve(#[source] tonic::transport::Error),
}

/// Replicas seen by the leader's Ping service, by instance id; the catalog is written from it.
pub type Seen = Arc<Mutex<HashMap<String, Instance>>>;

/// Who this replica is, as others should reach it.
#[derive(Debug, Clone)]
pub struct Me {
    pub id: String,
    pub address: String,
    pub port: u16,
    /// The control plane's version, as the catalog shows it.
    pub version: String,
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

struct PingService {
    me: Me,
    leader: watch::Receiver<bool>,
    seen: Seen,
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

pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: &Tls,
    me: Me,
    leader: watch::Receiver<bool>,
    seen: Seen,
    local_admin: SharedProxyAdmin,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), IntercpError> {
    let tls_config = ServerTlsConfig::new()
        .identity(tls.identity.clone())
        .client_ca_root(Certificate::from_pem(&tls.ca_pem))
        .timeout(security::tls::HANDSHAKE_TIMEOUT);
    let service = InterCpPingServiceServer::new(PingService { me, leader, seen })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let forward = InterCpEnvoyAdminForwardServiceServer::new(ForwardService { local_admin })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_ADMIN_ANSWER);
    Server::builder()
        .tls_config(tls_config)
        .map_err(IntercpError::Tls)?
        .timeout(Duration::from_secs(10))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .concurrency_limit_per_connection(32)
        .add_service(service)
        .add_service(forward)
        .serve_with_incoming_shutdown(
            // Without TCP_NODELAY a response larger than a segment waits for the peer's
            // delayed ACK (about 40 ms) before its last segment leaves.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                let _ = shutdown.wait_for(|s| *s).await;
            },
        )
        .await
        .map_err(IntercpError::Serve)
}

/// Answers forwarded admin requests from the streams this replica holds.
struct ForwardService {
    local_admin: SharedProxyAdmin,
}

#[tonic::async_trait]
impl InterCpEnvoyAdminForwardService for ForwardService {
    async fn forward(
        &self,
        request: tonic::Request<EnvoyAdminForwardRequest>,
    ) -> Result<tonic::Response<EnvoyAdminForwardResponse>, tonic::Status> {
        let r = request.into_inner();
        let Some(op) = AdminOp::from_path(&r.path) else {
            return Err(tonic::Status::invalid_argument(format!(
                "path {:?} is not one of config_dump, stats, clusters",
                r.path,
            )));
        };
        // The forwarding side names the proxy as its API did; only Dataplanes have a mesh.
        let kind = match r.resource_type.as_str() {
            "" => ResourceType::Dataplane,
            name => match ResourceType::from_name(name) {
                Some(
                    k @ (ResourceType::Dataplane
                    | ResourceType::ZoneIngress
                    | ResourceType::ZoneEgress),
                ) => k,
                _ => {
                    return Err(tonic::Status::invalid_argument(format!(
                        "resource_type {name:?} is not Dataplane, ZoneIngress or ZoneEgress"
                    )));
                }
            },
        };
        let mesh_ok = match kind {
            ResourceType::Dataplane => !r.mesh.is_empty() && r.mesh.len() <= 253,
            _ => r.mesh.is_empty(),
        };
        if !mesh_ok || r.name.is_empty() || r.name.len() > 253 {
            return Err(tonic::Status::invalid_argument(
                "name must be 1 to 253 characters, and mesh too for a Dataplane (none otherwise)",
            ));
        }
        let proxy = ProxyRef {
            kind,
            mesh: &r.mesh,
            name: &r.name,
        };
        let answer = match self.local_admin.get(proxy, op, &r.query).await {
            Ok(a) => EnvoyAdminForwardResponse {
                status: u32::from(a.status),
                body: a.body,
                content_type: a.content_type,
                error: String::new(),
            },
            Err(e) => EnvoyAdminForwardResponse {
                error: model::error_chain(&e),
                ..Default::default()
            },
        };
        Ok(tonic::Response::new(answer))
    }
}
