//! Raft's RPCs between replicas: gRPC (tonic) with mutual TLS on `KUMA_STORE_RAFT_PORT`.
//! openraft's messages travel as JSON; every request carries the sender's cluster id, node id
//! and instance (its data directory's random id), which the receiver checks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use proto::kuma::raft::v1::RaftPayload;
use proto::kuma::raft::v1::raft_service_client::RaftServiceClient;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::types::{NodeId, TypeConfig};

/// Large enough for a batch of entries at the size limit, and a snapshot chunk.
pub const MAX_MESSAGE: usize = 128 * 1024 * 1024;

pub const CLUSTER_HEADER: &str = "x-kuma-raft-cluster";
pub const NODE_HEADER: &str = "x-kuma-raft-node";
pub const INSTANCE_HEADER: &str = "x-kuma-raft-instance";

/// Who is calling: checked by every receiver.
#[derive(Debug, Clone)]
pub struct Caller {
    pub cluster_id: String,
    pub node_id: NodeId,
    pub instance: String,
}

#[derive(Debug, Clone, Copy)]
pub enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
    Write,
    ReadIndex,
    Admin,
}

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("{addr} is not a valid raft address")]
    Address {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("calling {addr}: {}", .status.message())]
    Status {
        addr: String,
        #[source]
        status: tonic::Status,
    },
    #[error("encoding or decoding a raft message")]
    Codec(#[source] serde_json::Error),
}

impl RpcError {
    /// Whether the request certainly never reached the peer (no connection was made), so that
    /// sending it again cannot apply it twice.
    pub fn not_delivered(&self) -> bool {
        match self {
            RpcError::Address { .. } => true,
            RpcError::Status { status, .. } => {
                status.code() == tonic::Code::Unavailable && status.message().contains("connect")
            }
            RpcError::Codec(_) => false,
        }
    }
}

/// Channels to the other replicas, one per address, reconnecting by themselves.
#[derive(Clone)]
pub struct Peers {
    tls: ClientTlsConfig,
    me: Arc<Caller>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// When a peer's TLS refusal was last logged: it repeats every retry, the log need not.
    tls_refusals: Arc<Mutex<HashMap<String, tokio::time::Instant>>>,
}

impl Peers {
    pub fn new(tls: ClientTlsConfig, me: Caller) -> Peers {
        Peers {
            tls,
            me: Arc::new(me),
            channels: Arc::new(Mutex::new(HashMap::new())),
            tls_refusals: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Says once in a while that `addr` and this replica do not trust each other, which no
    /// retry fixes: the likely cause is a different join token or CA.
    fn report_tls_refusal(&self, addr: &str, error: &RpcError) {
        let chain = model::error_chain(error);
        if !chain.contains("certificate") && !chain.contains("handshake") {
            return;
        }
        let now = tokio::time::Instant::now();
        let mut last = self.tls_refusals.lock().unwrap_or_else(|p| p.into_inner());
        if last
            .get(addr)
            .is_some_and(|at| now.duration_since(*at) < Duration::from_secs(30))
        {
            return;
        }
        last.insert(addr.to_string(), now);
        tracing::error!(peer = addr, error = %chain, "the TLS handshake with a raft peer fails: do all replicas have the same KUMA_STORE_RAFT_JOIN_TOKEN (or CA)?");
    }

    fn channel(&self, addr: &str) -> Result<Channel, RpcError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let error = |source| RpcError::Address {
            addr: addr.to_string(),
            source,
        };
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(error)?
            .tls_config(self.tls.clone())
            .map_err(error)?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    pub async fn call(
        &self,
        addr: &str,
        method: Method,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        let mut client = RaftServiceClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let mut request = tonic::Request::new(RaftPayload { payload });
        request.set_timeout(timeout);
        let md = request.metadata_mut();
        for (name, value) in [
            (CLUSTER_HEADER, self.me.cluster_id.clone()),
            (NODE_HEADER, self.me.node_id.to_string()),
            (INSTANCE_HEADER, self.me.instance.clone()),
        ] {
            // Validated at start: printable ASCII.
            if let Ok(v) = MetadataValue::try_from(value) {
                md.insert(name, v);
            }
        }
        let response = match method {
            Method::AppendEntries => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::InstallSnapshot => client.install_snapshot(request).await,
            Method::Write => client.write(request).await,
            Method::ReadIndex => client.read_index(request).await,
            Method::Admin => client.admin(request).await,
        };
        response
            .map(|r| r.into_inner().payload)
            .map_err(|status| RpcError::Status {
                addr: addr.to_string(),
                status,
            })
    }

    /// A JSON request answered by a JSON `Result`.
    pub async fn call_json<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        method: Method,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError> {
        let payload = serde_json::to_vec(request).map_err(RpcError::Codec)?;
        let answer = self.call(addr, method, payload, timeout).await?;
        serde_json::from_slice(&answer).map_err(RpcError::Codec)
    }
}

/// openraft's connection to one peer.
pub struct PeerConnection {
    peers: Peers,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Peers {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            peers: self.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

type RaftRpcError<E> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

impl PeerConnection {
    async fn raft_call<Req, Resp, E>(
        &self,
        method: Method,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RaftRpcError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let answer: Result<Result<Resp, RaftError<NodeId, E>>, RpcError> = self
            .peers
            .call_json(&self.addr, method, request, option.hard_ttl())
            .await;
        match answer {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                BasicNode::new(&self.addr),
                e,
            ))),
            Err(RpcError::Codec(e)) => Err(RPCError::Network(NetworkError::new(&e))),
            Err(e) => {
                self.peers.report_tls_refusal(&self.addr, &e);
                if let RpcError::Status { status, .. } = &e
                    && status.code() == tonic::Code::PermissionDenied
                {
                    // The peer refused who we are: say so loudly, it will not fix itself.
                    tracing::error!(peer = self.target, addr = %self.addr, reason = status.message(), "a raft peer refuses this replica");
                }
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RaftRpcError<openraft::error::Infallible>> {
        self.raft_call(Method::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RaftRpcError<InstallSnapshotError>> {
        self.raft_call(Method::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RaftRpcError<openraft::error::Infallible>> {
        self.raft_call(Method::Vote, &rpc, &option).await
    }
}
