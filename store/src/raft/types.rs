//! What travels through the raft log: the store's writes and their outcomes, and the JSON form
//! of a resource inside them.

use std::io::Cursor;

use model::{Resource, ResourceKey, ResourceType, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{StoreError, record};

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type NodeId = u64;
pub type LogId = openraft::LogId<NodeId>;

/// A resource as the log and snapshots carry it: the key, the version and the record the etcd
/// backend stores too.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireResource {
    #[serde(rename = "type")]
    pub kind: String,
    pub mesh: String,
    pub name: String,
    pub version: u64,
    pub record: Value,
}

impl WireResource {
    pub fn new(resource: &Resource) -> Self {
        WireResource {
            kind: resource.kind.name().to_string(),
            mesh: resource.meta.mesh.clone(),
            name: resource.meta.name.clone(),
            version: resource.meta.version,
            record: record::encode(resource),
        }
    }

    pub fn into_resource(self) -> Result<Resource, StoreError> {
        let key = WireKey {
            kind: self.kind,
            mesh: self.mesh,
            name: self.name,
        }
        .into_key()?;
        record::decode(key, self.version, self.record)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireKey {
    #[serde(rename = "type")]
    pub kind: String,
    pub mesh: String,
    pub name: String,
}

impl WireKey {
    pub fn new(key: &ResourceKey) -> Self {
        WireKey {
            kind: key.kind.name().to_string(),
            mesh: key.mesh.clone(),
            name: key.name.clone(),
        }
    }

    pub fn into_key(self) -> Result<ResourceKey, StoreError> {
        match ResourceType::from_name(&self.kind) {
            Some(kind) => Ok(ResourceKey::new(kind, self.mesh, self.name)),
            // Only a replica of a newer version could have written it; refusing beats guessing.
            None => Err(StoreError::Unavailable {
                message: format!(
                    "the raft log holds a resource of type {:?}, which this version does not know",
                    self.kind
                ),
                source: None,
            }),
        }
    }
}

/// A write. Timestamps are taken where the write enters the cluster, so every replica applies
/// the same values.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    Create {
        resource: WireResource,
        now: String,
        cause: Option<String>,
    },
    Update {
        resource: WireResource,
        now: String,
        cause: Option<String>,
    },
    Delete {
        key: WireKey,
        cause: Option<String>,
    },
}

impl Command {
    pub fn now() -> String {
        Timestamp::now().0.to_string()
    }

    /// The traceparent of the span making the write, for its events on every replica.
    pub fn current_cause() -> Option<String> {
        crate::trace::current().map(|c| c.to_string())
    }

    pub fn cause(&self) -> Option<&str> {
        match self {
            Command::Create { cause, .. }
            | Command::Update { cause, .. }
            | Command::Delete { cause, .. } => cause.as_deref(),
        }
    }
}

pub fn parse_now(now: &str) -> Timestamp {
    // Written by `Command::now`; a replica of another build could only differ in precision.
    Timestamp(now.parse().unwrap_or_default())
}

/// What applying a write did, the same on every replica.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub enum Outcome {
    /// Blank and membership entries.
    #[default]
    Nothing,
    Written(WireResource),
    Deleted,
    Refused(Refusal),
}

/// The store errors a write can end in; the rest are the transport's, not the log's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Refusal {
    NotFound(WireKey),
    AlreadyExists(WireKey),
    Conflict {
        key: WireKey,
        expected: u64,
        actual: u64,
    },
    MeshNotFound(String),
    Corrupt(String),
}

impl Refusal {
    pub fn from_error(e: StoreError) -> Refusal {
        match e {
            StoreError::NotFound(k) => Refusal::NotFound(WireKey::new(&k)),
            StoreError::AlreadyExists(k) => Refusal::AlreadyExists(WireKey::new(&k)),
            StoreError::Conflict {
                key,
                expected,
                actual,
            } => Refusal::Conflict {
                key: WireKey::new(&key),
                expected,
                actual,
            },
            StoreError::MeshNotFound(m) => Refusal::MeshNotFound(m),
            other => Refusal::Corrupt(other.to_string()),
        }
    }

    pub fn into_error(self) -> StoreError {
        let key = |k: WireKey| k.into_key();
        let result = match self {
            Refusal::NotFound(k) => key(k).map(StoreError::NotFound),
            Refusal::AlreadyExists(k) => key(k).map(StoreError::AlreadyExists),
            Refusal::Conflict {
                key: k,
                expected,
                actual,
            } => key(k).map(|key| StoreError::Conflict {
                key,
                expected,
                actual,
            }),
            Refusal::MeshNotFound(m) => Ok(StoreError::MeshNotFound(m)),
            Refusal::Corrupt(message) => Ok(StoreError::Unavailable {
                message,
                source: None,
            }),
        };
        result.unwrap_or_else(|e| e)
    }
}
