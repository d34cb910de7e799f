//! The receiving side of the replicas' RPCs: checks who calls, then hands openraft its
//! messages and serves forwarded writes, read indexes and membership requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::kuma::raft::v1::RaftPayload;
use proto::kuma::raft::v1::raft_service_server::{RaftService, RaftServiceServer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::{Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use super::network::{CLUSTER_HEADER, INSTANCE_HEADER, MAX_MESSAGE, NODE_HEADER};
use super::types::{Command, NodeId, TypeConfig};
use super::{AdminRequest, Node};

/// How long a node id stays bound to the instance last seen using it: a second process with
/// the same id is refused while the first one is alive, a replacement is accepted after it.
const INSTANCE_BINDING: Duration = Duration::from_secs(10);

pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    tls: ServerTlsConfig,
    node: Arc<Node>,
    mut shutdown: watch::Receiver<bool>,
) {
    let service = RaftServiceServer::new(Service {
        node,
        seen: Mutex::new(HashMap::new()),
    })
    .max_decoding_message_size(MAX_MESSAGE)
    .max_encoding_message_size(MAX_MESSAGE);
    let server = match Server::builder().tls_config(tls) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "raft RPC server TLS");
            return;
        }
    };
    let result = server
        // Membership changes wait for a learner to catch up; everything else is far shorter.
        .timeout(Duration::from_secs(60))
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .concurrency_limit_per_connection(256)
        .add_service(service)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                let _ = shutdown.wait_for(|s| *s).await;
            },
        )
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "raft RPC server stopped");
    }
}

struct Service {
    node: Arc<Node>,
    /// node id -> (instance, last seen)
    seen: Mutex<HashMap<NodeId, (String, Instant)>>,
}

fn header<'a>(request: &'a Request<RaftPayload>, name: &str) -> Result<&'a str, Status> {
    request
        .metadata()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Status::permission_denied(format!("the {name} header is missing")))
}

impl Service {
    /// Refuses another cluster's replicas and a second process using a live node's id; an
    /// operator's tool (node id 0) may only make admin requests.
    fn admit(&self, request: &Request<RaftPayload>, admin: bool) -> Result<(), Status> {
        let cluster = header(request, CLUSTER_HEADER)?;
        if cluster != self.node.cluster_id {
            return Err(Status::permission_denied(format!(
                "the caller belongs to raft cluster {cluster:?}, this replica to {:?} (KUMA_STORE_RAFT_CLUSTER_ID)",
                self.node.cluster_id
            )));
        }
        let node_id: NodeId = header(request, NODE_HEADER)?
            .parse()
            .map_err(|_| Status::permission_denied("the node id header is not a number"))?;
        let instance = header(request, INSTANCE_HEADER)?;
        if node_id == super::ADMIN_CALLER {
            return if admin {
                Ok(())
            } else {
                Err(Status::permission_denied(
                    "node id 0 may only make admin requests",
                ))
            };
        }
        if node_id == self.node.id {
            return Err(Status::permission_denied(format!(
                "node id {node_id} is this replica's own: two replicas are configured with the same KUMA_STORE_RAFT_NODE_ID"
            )));
        }
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get(&node_id) {
            Some((known, at))
                if known != instance && now.duration_since(*at) < INSTANCE_BINDING =>
            {
                Err(Status::permission_denied(format!(
                    "node id {node_id} is in use by another replica (instance {known}, seen {} ms ago): two replicas are configured with the same KUMA_STORE_RAFT_NODE_ID",
                    now.duration_since(*at).as_millis()
                )))
            }
            _ => {
                seen.insert(node_id, (instance.to_string(), now));
                Ok(())
            }
        }
    }

    fn decode<T: DeserializeOwned>(&self, request: Request<RaftPayload>) -> Result<T, Status> {
        self.admit(&request, false)?;
        Self::payload(request)
    }

    fn payload<T: DeserializeOwned>(request: Request<RaftPayload>) -> Result<T, Status> {
        serde_json::from_slice(&request.into_inner().payload)
            .map_err(|e| Status::invalid_argument(format!("the raft message is not valid: {e}")))
    }
}

fn reply<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    serde_json::to_vec(value)
        .map(|payload| Response::new(RaftPayload { payload }))
        .map_err(|e| Status::internal(format!("encoding the answer: {e}")))
}

#[tonic::async_trait]
impl RaftService for Service {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> = self.decode(request)?;
        reply(&self.node.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: openraft::raft::VoteRequest<NodeId> = self.decode(request)?;
        reply(&self.node.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: openraft::raft::InstallSnapshotRequest<TypeConfig> = self.decode(request)?;
        reply(&self.node.raft.install_snapshot(rpc).await)
    }

    async fn write(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let command: Command = self.decode(request)?;
        let deadline = Instant::now() + self.node.request_timeout;
        reply(&self.node.write_as_leader(command, deadline).await)
    }

    async fn read_index(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let () = self.decode(request)?;
        let deadline = Instant::now() + self.node.request_timeout;
        reply(&self.node.read_index_as_leader(deadline).await)
    }

    async fn admin(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.admit(&request, true)?;
        let admin: AdminRequest = Self::payload(request)?;
        let answer = match self.node.admin(admin).await {
            Ok(status) => Ok(status),
            // A leader that is stopping sends the caller on to the next one, which an
            // election is about to make.
            Err(_) if self.node.stopped() => Err(super::Redirect::NotLeader),
            Err(e) => Err(super::Redirect::Unavailable(e.to_string())),
        };
        reply(&answer)
    }
}
