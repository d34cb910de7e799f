//! `KUMA_STORE_TYPE=raft`: the store replicated among the control plane's own replicas with
//! openraft, no external database. Each replica keeps raft's log, vote and snapshots in one
//! redb file (fsync before acknowledging) and the resources in memory, rebuilt at start from
//! the latest snapshot and the committed log after it.
//!
//! Writes go to the raft leader; a follower forwards them and answers once it has applied the
//! entry itself, so a client reads its own writes on any replica. Reads are linearizable by
//! default (read-index: the leader confirms it still leads, a follower asks the leader for
//! that index and waits to have applied it); [`RaftStore::stale_reads`] gives a handle that
//! reads this replica's state as applied, for consumers that react to this replica's own
//! events (xDS, KDS senders). Events are published on every replica as entries are applied,
//! in log order.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use model::{Resource, ResourceKey};
use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::{
    ChangeEvent, ClusterMember, ClusterStatus, ListPage, ListQuery, ResourceStore, Result,
    StoreError,
};

// openraft's storage traits return its `StorageError` (over 200 bytes); the helpers around
// them return it too rather than convert back and forth.
#[allow(clippy::result_large_err)]
mod elector;
#[allow(clippy::result_large_err)]
mod log;
mod network;
mod server;
#[allow(clippy::result_large_err)]
mod state;
mod tls;
mod types;

pub use elector::RaftLeaderElector;
pub use log::LogError;
pub use network::RpcError;
pub use tls::{RaftTls, TlsError};
pub use types::NodeId;

use log::LogStore;
use network::{Caller, Method, Peers};
use state::{Shared, StateMachine};
use types::{Command, Outcome, Raft, WireKey, WireResource};

/// Raft's clocks. A leader that stops is replaced after about `election_max` plus a vote; a
/// heartbeat every `heartbeat` keeps followers from campaigning.
#[derive(Debug, Clone, Copy)]
pub struct RaftTiming {
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat: Duration::from_millis(150),
            election_min: Duration::from_millis(750),
            election_max: Duration::from_millis(1000),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RaftConfig {
    pub node_id: NodeId,
    /// The initial members (raft addresses `host:port`), this replica among them.
    pub peers: BTreeMap<NodeId, String>,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Every replica of one cluster names the same id; a replica of another is refused.
    pub cluster_id: String,
    pub tls: RaftTls,
    /// Joins a running cluster (asking `peers` to add it) instead of forming one.
    pub join: bool,
    pub timing: RaftTiming,
    /// A write whose entry is larger is refused (HTTP 400), as the other stores do.
    pub max_entry_bytes: usize,
    /// How long a write or a linearizable read waits for the cluster before answering 503.
    pub request_timeout: Duration,
    /// Entries applied since the last snapshot before the next one (and log compaction).
    pub snapshot_every: u64,
    /// Entries kept before a snapshot when the log is compacted, for followers a little behind.
    pub keep_after_snapshot: u64,
}

impl RaftConfig {
    pub fn new(node_id: NodeId, peers: BTreeMap<NodeId, String>, data_dir: PathBuf) -> Self {
        RaftConfig {
            node_id,
            peers,
            data_dir,
            listen: SocketAddr::from(([0, 0, 0, 0], 5684)),
            cluster_id: "kuma".into(),
            tls: RaftTls::JoinToken(String::new()),
            join: false,
            timing: RaftTiming::default(),
            max_entry_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(5),
            snapshot_every: 10_000,
            keep_after_snapshot: 1000,
        }
    }

    /// `1=host:port,2=host:port`: the form of `KUMA_STORE_RAFT_PEERS`.
    pub fn parse_peers(text: &str) -> std::result::Result<BTreeMap<NodeId, String>, String> {
        let mut peers = BTreeMap::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (id, addr) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not id=host:port"))?;
            let id: NodeId = id
                .trim()
                .parse()
                .map_err(|_| format!("{id:?} in {item:?} is not a node id (a number)"))?;
            let addr = addr.trim();
            if addr
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(format!("{addr:?} in {item:?} is not host:port"));
            }
            if peers.insert(id, addr.to_string()).is_some() {
                return Err(format!("node id {id} is listed twice"));
            }
        }
        Ok(peers)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RaftStoreError {
    #[error("raft data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "raft data directory {path} is in use by another process (node ids must not be shared)"
    )]
    Locked { path: PathBuf },
    #[error("raft data directory {path}: {message}")]
    Identity { path: PathBuf, message: String },
    #[error(transparent)]
    File(#[from] LogError),
    #[error("raft storage")]
    Storage(#[source] Box<openraft::StorageError<NodeId>>),
    #[error("raft TLS (KUMA_STORE_RAFT_JOIN_TOKEN or KUMA_STORE_RAFT_TLS_*)")]
    Tls(#[source] TlsError),
    #[error("raft configuration")]
    Config(#[source] Box<openraft::ConfigError>),
    #[error("starting raft")]
    Start(#[source] Box<openraft::error::Fatal<NodeId>>),
    #[error("binding the raft port {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "this replica's node id {0} is not in KUMA_STORE_RAFT_PEERS, which must list it with its own address"
    )]
    NotAPeer(NodeId),
}

/// Who this data directory belongs to, written when it is first used.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DataIdentity {
    cluster_id: String,
    node_id: NodeId,
    instance: String,
}

/// Why a forwarded request was not served.
#[derive(Debug, Serialize, Deserialize)]
enum Redirect {
    /// The receiver is not (or no longer) the leader: ask again.
    NotLeader,
    /// The cluster cannot serve it now.
    Unavailable(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminRequest {
    Add { id: NodeId, address: String },
    Remove { id: NodeId },
    Status,
}

/// One replica: the raft instance, its state, and the way to its peers.
pub(crate) struct Node {
    id: NodeId,
    cluster_id: String,
    raft: Raft,
    shared: Arc<Shared>,
    peers: Peers,
    timing: RaftTiming,
    request_timeout: Duration,
    max_entry_bytes: usize,
    /// Held for the process's life: a second process on this data directory fails to start.
    _lock: File,
}

fn unavailable(message: String) -> StoreError {
    StoreError::Unavailable {
        message,
        source: None,
    }
}

impl Node {
    fn metrics(&self) -> openraft::RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// Whether this replica's raft has stopped (it is shutting down, or failed): it leads
    /// nothing any more, whatever its last metrics say.
    pub(crate) fn stopped(&self) -> bool {
        self.raft.metrics().borrow().running_state.is_err()
    }

    /// The leader as this replica knows it, with its raft address.
    fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())?;
        Some((id, addr))
    }

    fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// Waits (until `deadline`) for the leader this replica knows to change.
    async fn await_leader_change(&self, deadline: Instant) {
        let mut metrics = self.raft.metrics();
        let before = metrics.borrow().current_leader;
        let _ = tokio::time::timeout_at(
            deadline.min(Instant::now() + Duration::from_millis(200)),
            metrics.wait_for(|m| m.current_leader != before),
        )
        .await;
    }

    fn no_leader(&self) -> StoreError {
        let voters = self
            .metrics()
            .membership_config
            .membership()
            .voter_ids()
            .count();
        if voters == 0 {
            return unavailable(
                "this replica is not a member of a raft cluster yet (it is joining, or waiting for the initial members)".into(),
            );
        }
        unavailable(format!(
            "no raft leader is known: this replica cannot reach a quorum of the {voters} voting members"
        ))
    }

    /// A leader that has not heard from a quorum for longer than an election takes may have
    /// been replaced; it refuses at once rather than let the write wait for a quorum.
    fn check_quorum_contact(&self) -> Result<()> {
        // On every write: read the two fields, not a copy of all the metrics.
        let (since_ack, term) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.millis_since_quorum_ack, m.current_term)
        };
        match since_ack {
            Some(ms) if ms <= self.timing.election_max.as_millis() as u64 => Ok(()),
            Some(ms) => Err(unavailable(format!(
                "this replica leads raft term {term} but has not heard from a quorum for {ms} ms: it may be partitioned from the others"
            ))),
            // Just elected: the quorum that voted for it is the contact; the write waits for
            // its first heartbeat round like any other.
            None => Ok(()),
        }
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<()> {
        let mut applied = self.shared.applied();
        match tokio::time::timeout_at(deadline, applied.wait_for(|a| *a >= index)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(unavailable("raft has stopped on this replica".into())),
            Err(_) => Err(unavailable(format!(
                "log entry {index} is committed but this replica has not applied it within {:?} (it is behind the leader): a write is done, but not yet visible here",
                self.request_timeout
            ))),
        }
    }

    /// Commits `command` on the leader this replica is; the index and outcome once applied.
    async fn write_as_leader(
        &self,
        command: Command,
        deadline: Instant,
    ) -> std::result::Result<(u64, Outcome), Redirect> {
        if !self.is_leader() {
            return Err(Redirect::NotLeader);
        }
        self.check_quorum_contact()
            .map_err(|e| Redirect::Unavailable(e.to_string()))?;
        match tokio::time::timeout_at(deadline, self.raft.client_write(command)).await {
            Ok(Ok(resp)) => Ok((resp.log_id.index, resp.data)),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(Redirect::NotLeader)
            }
            Ok(Err(e)) => Err(Redirect::Unavailable(format!("raft: {e}"))),
            Err(_) => Err(Redirect::Unavailable(format!(
                "the write was not committed within {:?}; whether it takes effect is unknown (is a quorum of replicas reachable?)",
                self.request_timeout
            ))),
        }
    }

    fn check_running(&self) -> Result<()> {
        match &self.raft.metrics().borrow().running_state {
            Ok(()) => Ok(()),
            Err(e) => Err(unavailable(format!(
                "raft has stopped on this replica: {e}"
            ))),
        }
    }

    /// Commits `command` wherever the leader is, and returns once this replica has applied it.
    async fn write(&self, command: Command) -> Result<Outcome> {
        self.check_running()?;
        let deadline = Instant::now() + self.request_timeout;
        loop {
            match self.leader() {
                Some((id, _)) if id == self.id => {
                    match self.write_as_leader(command.clone(), deadline).await {
                        Ok((_, outcome)) => return Ok(outcome),
                        Err(Redirect::NotLeader) => {}
                        Err(Redirect::Unavailable(m)) => return Err(unavailable(m)),
                    }
                }
                Some((id, addr)) => {
                    let answer: std::result::Result<
                        std::result::Result<(u64, Outcome), Redirect>,
                        RpcError,
                    > = self
                        .peers
                        .call_json(&addr, Method::Write, &command, remaining(deadline))
                        .await;
                    match answer {
                        Ok(Ok((index, outcome))) => {
                            self.wait_applied(index, deadline).await?;
                            return Ok(outcome);
                        }
                        Ok(Err(Redirect::NotLeader)) => {}
                        Ok(Err(Redirect::Unavailable(m))) => return Err(unavailable(m)),
                        Err(e) if e.not_delivered() && Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => {
                            return Err(unavailable(format!(
                                "forwarding the write to the raft leader (node {id} at {addr}) failed; whether it takes effect is unknown: {e}"
                            )));
                        }
                    }
                }
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(self.no_leader());
            }
            self.await_leader_change(deadline).await;
        }
    }

    /// The index a linearizable read must have applied, as the leader this replica is.
    async fn read_index_as_leader(&self, deadline: Instant) -> std::result::Result<u64, Redirect> {
        if !self.is_leader() {
            return Err(Redirect::NotLeader);
        }
        match tokio::time::timeout_at(deadline, self.raft.get_read_log_id()).await {
            Ok(Ok((read, _))) => Ok(read.map_or(0, |l| l.index)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                Err(Redirect::NotLeader)
            }
            Ok(Err(e)) => Err(Redirect::Unavailable(format!(
                "could not confirm raft leadership for a linearizable read: {e}"
            ))),
            Err(_) => Err(Redirect::Unavailable(format!(
                "could not confirm raft leadership with a quorum within {:?} for a linearizable read",
                self.request_timeout
            ))),
        }
    }

    /// Waits until this replica's state reflects every write acknowledged before the call.
    async fn read_barrier(&self) -> Result<()> {
        self.check_running()?;
        let deadline = Instant::now() + self.request_timeout;
        loop {
            let index = match self.leader() {
                Some((id, _)) if id == self.id => self.read_index_as_leader(deadline).await,
                Some((_, addr)) => {
                    match self
                        .peers
                        .call_json(&addr, Method::ReadIndex, &(), remaining(deadline))
                        .await
                    {
                        Ok(answer) => answer,
                        // A read can be asked again without harm.
                        Err(_) if Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                        Err(e) => {
                            return Err(unavailable(format!(
                                "the raft leader (at {addr}) is unreachable for a linearizable read: {e}"
                            )));
                        }
                    }
                }
                None => Err(Redirect::NotLeader),
            };
            match index {
                Ok(index) => return self.wait_applied(index, deadline).await,
                Err(Redirect::Unavailable(m)) => return Err(unavailable(m)),
                Err(Redirect::NotLeader) if Instant::now() >= deadline => {
                    return Err(self.no_leader());
                }
                Err(Redirect::NotLeader) => self.await_leader_change(deadline).await,
            }
        }
    }

    /// Membership changes and status, on the leader (forwarded there by any replica).
    async fn admin(&self, request: AdminRequest) -> Result<ClusterStatus> {
        // Adding a member waits for it to catch up; the status is asked by pages and tools
        // that should not hang while an election runs.
        let deadline = Instant::now()
            + match request {
                AdminRequest::Status => Duration::from_secs(2),
                _ => self.request_timeout * 6,
            };
        loop {
            match self.leader() {
                Some((id, _)) if id == self.id => {
                    return tokio::time::timeout_at(deadline, self.admin_as_leader(request))
                        .await
                        .map_err(|_| {
                            unavailable("the membership change did not complete in time".into())
                        })?;
                }
                Some((id, addr)) => {
                    let answer: std::result::Result<
                        std::result::Result<ClusterStatus, Redirect>,
                        RpcError,
                    > = self
                        .peers
                        .call_json(&addr, Method::Admin, &request, remaining(deadline))
                        .await;
                    match answer {
                        Ok(Ok(status)) => return Ok(status),
                        Ok(Err(Redirect::NotLeader)) => {}
                        Ok(Err(Redirect::Unavailable(m))) => return Err(unavailable(m)),
                        Err(e) if Instant::now() >= deadline => {
                            return Err(unavailable(format!(
                                "the raft leader (node {id} at {addr}) is unreachable: {e}"
                            )));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                None if Instant::now() >= deadline => return Err(self.no_leader()),
                None => {}
            }
            self.await_leader_change(deadline).await;
        }
    }

    async fn admin_as_leader(&self, request: AdminRequest) -> Result<ClusterStatus> {
        let raft_error = |e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>| {
            unavailable(format!("raft membership change: {e}"))
        };
        match request {
            AdminRequest::Add { id, address } => {
                let m = self.metrics();
                if let Some(node) = m.membership_config.membership().get_node(&id) {
                    // A member that lost its data must not come back as the voter it was.
                    return Err(unavailable(format!(
                        "node {id} is already a member (at {}): to replace it, remove it first with `kuma-cp raft remove {id}`",
                        node.addr
                    )));
                }
                self.raft
                    .add_learner(id, BasicNode::new(address), true)
                    .await
                    .map_err(raft_error)?;
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(raft_error)?;
            }
            AdminRequest::Remove { id } => {
                let m = self.metrics();
                let membership = m.membership_config.membership();
                if membership.get_node(&id).is_none() {
                    return Err(unavailable(format!("node {id} is not a member")));
                }
                if membership.voter_ids().any(|v| v == id) {
                    self.raft
                        .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                        .await
                        .map_err(raft_error)?;
                } else {
                    self.raft
                        .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                        .await
                        .map_err(raft_error)?;
                }
            }
            AdminRequest::Status => {}
        }
        Ok(self.status())
    }

    /// The members as this replica sees them. The leader knows what each member holds (its
    /// replication progress); any other replica, asked when the leader cannot be, gives the
    /// membership and roles only.
    fn status(&self) -> ClusterStatus {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let last = m.last_log_index.unwrap_or(0);
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let matched = m.replication.as_ref().and_then(|r| {
                    if *id == self.id {
                        m.last_log_index
                    } else {
                        r.get(id).and_then(|l| l.map(|l| l.index))
                    }
                });
                ClusterMember {
                    node_id: *id,
                    address: node.addr.clone(),
                    role: match (m.current_leader == Some(*id), voters.contains(id)) {
                        (true, _) => "leader",
                        (false, true) => "follower",
                        (false, false) => "learner",
                    }
                    .to_string(),
                    matched_index: matched,
                    lag: matched.map(|i| last.saturating_sub(i)),
                }
            })
            .collect();
        ClusterStatus {
            cluster_id: self.cluster_id.clone(),
            leader: m.current_leader,
            term: m.current_term,
            commit_index: m.last_applied.map(|l| l.index),
            last_log_index: m.last_log_index,
            members,
        }
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(10))
}

/// How a [`RaftStore`] handle reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    Linearizable,
    Stale,
}

/// A handle on this replica's raft store. Clones share the replica.
#[derive(Clone)]
pub struct RaftStore {
    node: Arc<Node>,
    reads: Reads,
}

impl RaftStore {
    /// Opens the data directory, starts raft and its RPC server, and forms or joins the
    /// cluster. Runs until `shutdown` turns true.
    pub async fn start(
        config: RaftConfig,
        shutdown: watch::Receiver<bool>,
    ) -> std::result::Result<RaftStore, RaftStoreError> {
        let Some(my_addr) = config.peers.get(&config.node_id).cloned() else {
            return Err(RaftStoreError::NotAPeer(config.node_id));
        };
        std::fs::create_dir_all(&config.data_dir).map_err(|source| RaftStoreError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let lock = lock_data_dir(&config.data_dir)?;
        let file = LogStore::open(&config.data_dir.join("raft.redb"))?;
        let identity = check_identity(&file, &config)?;

        let material = tls::TlsMaterial::load(&config.tls).map_err(RaftStoreError::Tls)?;
        let peers = Peers::new(
            material.client(),
            Caller {
                cluster_id: config.cluster_id.clone(),
                node_id: config.node_id,
                instance: identity.instance.clone(),
            },
        );
        let shared = Shared::new();
        let state_machine = StateMachine::open(shared.clone(), file.clone())
            .map_err(|e| RaftStoreError::Storage(Box::new(e)))?;
        let raft_config = openraft::Config {
            cluster_name: config.cluster_id.clone(),
            heartbeat_interval: config.timing.heartbeat.as_millis() as u64,
            election_timeout_min: config.timing.election_min.as_millis() as u64,
            election_timeout_max: config.timing.election_max.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.keep_after_snapshot,
            max_payload_entries: 64,
            ..Default::default()
        }
        .validate()
        .map_err(|e| RaftStoreError::Config(Box::new(e)))?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            peers.clone(),
            file,
            state_machine,
        )
        .await
        .map_err(|e| RaftStoreError::Start(Box::new(e)))?;

        let node = Arc::new(Node {
            id: config.node_id,
            cluster_id: config.cluster_id.clone(),
            raft,
            shared,
            peers,
            timing: config.timing,
            request_timeout: config.request_timeout,
            max_entry_bytes: config.max_entry_bytes,
            _lock: lock,
        });

        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| RaftStoreError::Bind {
                addr: config.listen,
                source,
            })?;
        tokio::spawn(server::serve(
            listener,
            material.server(),
            node.clone(),
            shutdown.clone(),
        ));
        {
            let node = node.clone();
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                let _ = shutdown.wait_for(|s| *s).await;
                let _ = node.raft.shutdown().await;
            });
        }

        let initialized = node
            .raft
            .is_initialized()
            .await
            .map_err(|e| RaftStoreError::Start(Box::new(e)))?;
        if !initialized {
            if config.join {
                tokio::spawn(join(node.clone(), config.peers.clone(), my_addr, shutdown));
            } else {
                let members: BTreeMap<NodeId, BasicNode> = config
                    .peers
                    .iter()
                    .map(|(id, addr)| (*id, BasicNode::new(addr)))
                    .collect();
                // Every initial member does this with the same members: safe, and the cluster
                // forms whichever starts first.
                match node.raft.initialize(members).await {
                    Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                    Err(RaftError::APIError(e)) => {
                        tracing::warn!(error = %e, "raft initialization")
                    }
                    Err(RaftError::Fatal(f)) => return Err(RaftStoreError::Start(Box::new(f))),
                }
            }
        }
        tracing::info!(
            node_id = config.node_id,
            cluster = %config.cluster_id,
            listen = %config.listen,
            data_dir = %config.data_dir.display(),
            "raft store started"
        );
        Ok(RaftStore {
            node,
            reads: Reads::Linearizable,
        })
    }

    /// A handle reading this replica's applied state without asking the leader: it may lag the
    /// cluster by the replication delay, and it always includes every event this replica has
    /// published. Writes behave as on the linearizable handle.
    pub fn stale_reads(&self) -> RaftStore {
        RaftStore {
            node: self.node.clone(),
            reads: Reads::Stale,
        }
    }

    pub fn leader_elector(&self) -> RaftLeaderElector {
        RaftLeaderElector::new(self.node.raft.clone(), self.node.id, self.node.timing)
    }

    pub fn node_id(&self) -> NodeId {
        self.node.id
    }

    /// Resolves when raft stops on its own (a storage error), with the reason.
    pub async fn stopped(&self) -> String {
        let mut metrics = self.node.raft.metrics();
        loop {
            if let Err(e) = &metrics.borrow().running_state {
                return e.to_string();
            }
            if metrics.changed().await.is_err() {
                return "raft has stopped".to_string();
            }
        }
    }

    /// Membership changes and status on any replica (forwarded to the leader).
    pub async fn admin(&self, request: AdminRequest) -> Result<ClusterStatus> {
        self.node.admin(request).await
    }

    async fn barrier(&self) -> Result<()> {
        match self.reads {
            Reads::Stale => Ok(()),
            Reads::Linearizable => self.node.read_barrier().await,
        }
    }

    fn checked(&self, command: Command, key: &ResourceKey) -> Result<Command> {
        let size = serde_json::to_vec(&command)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > self.node.max_entry_bytes {
            return Err(StoreError::TooLarge {
                key: key.clone(),
                size,
                limit: self.node.max_entry_bytes,
            });
        }
        Ok(command)
    }

    async fn write_resource(&self, command: Command, key: &ResourceKey) -> Result<Resource> {
        let command = self.checked(command, key)?;
        match self.node.write(command).await? {
            Outcome::Written(r) => r.into_resource(),
            Outcome::Refused(refusal) => Err(refusal.into_error()),
            other => Err(unavailable(format!(
                "raft applied the write of {key} with an unexpected outcome {other:?}"
            ))),
        }
    }
}

#[async_trait]
impl ResourceStore for RaftStore {
    async fn get(&self, key: &ResourceKey) -> Result<Resource> {
        self.barrier().await?;
        self.node.shared.read().resources.get(key)
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        self.barrier().await?;
        Ok(self.node.shared.read().resources.list(query))
    }

    async fn for_each(
        &self,
        query: &ListQuery,
        visit: &mut (dyn for<'r> FnMut(&'r Resource) + Send),
    ) -> Result<()> {
        self.barrier().await?;
        for r in self.node.shared.read().resources.matching(query) {
            visit(r);
        }
        Ok(())
    }

    async fn for_each_after(
        &self,
        query: &ListQuery,
        after: Option<&ResourceKey>,
        limit: usize,
        visit: &mut (dyn for<'r> FnMut(&'r Resource) + Send),
    ) -> Result<Option<ResourceKey>> {
        self.barrier().await?;
        let shared = self.node.shared.read();
        Ok(shared.resources.for_each_after(query, after, limit, visit))
    }

    async fn create(&self, resource: Resource) -> Result<Resource> {
        let key = resource.key();
        let command = Command::Create {
            resource: WireResource::new(&resource),
            now: Command::now(),
            cause: Command::current_cause(),
        };
        self.write_resource(command, &key).await
    }

    async fn update(&self, resource: Resource) -> Result<Resource> {
        let key = resource.key();
        let command = Command::Update {
            resource: WireResource::new(&resource),
            now: Command::now(),
            cause: Command::current_cause(),
        };
        self.write_resource(command, &key).await
    }

    async fn delete(&self, key: &ResourceKey) -> Result<()> {
        let command = Command::Delete {
            key: WireKey::new(key),
            cause: Command::current_cause(),
        };
        match self.node.write(command).await? {
            Outcome::Deleted => Ok(()),
            Outcome::Refused(refusal) => Err(refusal.into_error()),
            other => Err(unavailable(format!(
                "raft applied the delete of {key} with an unexpected outcome {other:?}"
            ))),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.node.shared.subscribe()
    }

    async fn ping(&self) -> Result<()> {
        self.node.check_running()?;
        match self.node.leader() {
            Some(_) => Ok(()),
            None => Err(self.node.no_leader()),
        }
    }

    fn backend(&self) -> &'static str {
        "raft"
    }

    async fn cluster_status(&self) -> Result<Option<ClusterStatus>> {
        match self.node.admin(AdminRequest::Status).await {
            Ok(status) => Ok(Some(status)),
            Err(e) => {
                tracing::debug!(error = %e, "raft status from the leader; showing this replica's view");
                Ok(Some(self.node.status()))
            }
        }
    }
}

fn lock_data_dir(dir: &std::path::Path) -> std::result::Result<File, RaftStoreError> {
    let path = dir.join("LOCK");
    let file = File::create(&path).map_err(|source| RaftStoreError::DataDir {
        path: path.clone(),
        source,
    })?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |_| RaftStoreError::Locked {
            path: dir.to_path_buf(),
        },
    )?;
    Ok(file)
}

fn check_identity(
    file: &LogStore,
    config: &RaftConfig,
) -> std::result::Result<DataIdentity, RaftStoreError> {
    let error = |message: String| RaftStoreError::Identity {
        path: config.data_dir.clone(),
        message,
    };
    match file
        .read_meta::<DataIdentity>(log::IDENTITY)
        .map_err(|e| RaftStoreError::Storage(Box::new(e)))?
    {
        Some(id) if id.cluster_id != config.cluster_id => Err(error(format!(
            "it belongs to raft cluster {:?}, not {:?} (KUMA_STORE_RAFT_CLUSTER_ID)",
            id.cluster_id, config.cluster_id
        ))),
        Some(id) if id.node_id != config.node_id => Err(error(format!(
            "it belongs to node {}, not {} (KUMA_STORE_RAFT_NODE_ID)",
            id.node_id, config.node_id
        ))),
        Some(id) => Ok(id),
        None => {
            let id = DataIdentity {
                cluster_id: config.cluster_id.clone(),
                node_id: config.node_id,
                instance: format!("{:016x}", rand::random::<u64>()),
            };
            file.write_meta(log::IDENTITY, &id)
                .map_err(|e| RaftStoreError::Storage(Box::new(e)))?;
            Ok(id)
        }
    }
}

/// The node id an operator's tool (`kuma-cp raft ...`) calls with: never a member's.
pub const ADMIN_CALLER: NodeId = 0;

#[derive(Debug, thiserror::Error)]
pub enum AdminCallError {
    #[error("raft TLS (KUMA_STORE_RAFT_JOIN_TOKEN or KUMA_STORE_RAFT_TLS_*)")]
    Tls(#[source] TlsError),
    #[error("calling the replica at {address}")]
    Call {
        address: String,
        #[source]
        source: RpcError,
    },
    #[error("the cluster refused: {0}")]
    Refused(String),
}

/// Sends a membership request or asks for the status, through the replica at `address`, with
/// this configuration's cluster id and credentials.
pub async fn admin_call(
    config: &RaftConfig,
    address: &str,
    request: &AdminRequest,
) -> std::result::Result<ClusterStatus, AdminCallError> {
    let material = tls::TlsMaterial::load(&config.tls).map_err(AdminCallError::Tls)?;
    let peers = Peers::new(
        material.client(),
        Caller {
            cluster_id: config.cluster_id.clone(),
            node_id: ADMIN_CALLER,
            instance: format!("admin-{:016x}", rand::random::<u64>()),
        },
    );
    let answer: std::result::Result<ClusterStatus, Redirect> = peers
        .call_json(address, Method::Admin, request, config.request_timeout * 12)
        .await
        .map_err(|source| AdminCallError::Call {
            address: address.to_string(),
            source,
        })?;
    answer.map_err(|r| match r {
        Redirect::Unavailable(m) => AdminCallError::Refused(m),
        Redirect::NotLeader => AdminCallError::Refused("no leader".into()),
    })
}

/// Asks the running cluster (through any of `peers`) to add this replica, until it is a member.
async fn join(
    node: Arc<Node>,
    peers: BTreeMap<NodeId, String>,
    my_addr: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let request = AdminRequest::Add {
        id: node.id,
        address: my_addr,
    };
    loop {
        for (id, addr) in peers.iter().filter(|(id, _)| **id != node.id) {
            let answer: std::result::Result<
                std::result::Result<ClusterStatus, Redirect>,
                RpcError,
            > = node
                .peers
                .call_json(addr, Method::Admin, &request, Duration::from_secs(30))
                .await;
            match answer {
                Ok(Ok(_)) => {
                    tracing::info!(node_id = node.id, via = id, "joined the raft cluster");
                    return;
                }
                Ok(Err(e)) => tracing::warn!(via = id, reason = ?e, "joining the raft cluster"),
                Err(e) => tracing::warn!(via = id, error = %e, "joining the raft cluster"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests;
