//! The replicated state machine: the store's resources in memory, changed only by applying
//! committed log entries in order, each change published as a [`ChangeEvent`] as it is
//! applied (on every replica). Snapshots of it live in the replica's redb file, so a restart
//! loads the latest snapshot and replays the committed log after it.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use super::log::LogStore;
use super::types::{Command, LogId, NodeId, Outcome, Refusal, TypeConfig, WireResource, parse_now};
use crate::memory::{Change, Resources};
use crate::{ChangeEvent, Operation, StoreError};

type Entry = openraft::Entry<TypeConfig>;
type SError = StorageError<NodeId>;
type Membership = StoredMembership<NodeId, BasicNode>;

/// Room for bursts, as the memory store; a consumer further behind re-lists.
const EVENT_BUFFER: usize = 16 * 1024;

#[derive(Default)]
pub struct Data {
    pub resources: Resources,
    pub last_applied: Option<LogId>,
    pub membership: Membership,
}

/// What the store handle reads and what the state machine writes.
pub struct Shared {
    data: RwLock<Data>,
    events: broadcast::Sender<ChangeEvent>,
    /// The index of the last applied entry, for a read or a forwarded write waiting to see it.
    applied: watch::Sender<u64>,
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Arc::new(Shared {
            data: RwLock::new(Data::default()),
            events,
            applied: watch::channel(0).0,
        })
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Data> {
        // Every apply mutates under one guard and cannot panic half-way through a write.
        self.data.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Data> {
        self.data.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.events.subscribe()
    }

    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    fn publish(&self, changes: Vec<(Change, Option<Arc<str>>)>, applied: Option<LogId>) {
        for ((op, key, version), cause) in changes {
            // No receivers is fine: nobody is listening yet.
            let _ = self.events.send(ChangeEvent {
                op,
                key,
                version,
                cause,
            });
        }
        if let Some(id) = applied {
            self.applied.send_if_modified(|a| {
                let moved = *a != id.index;
                *a = id.index;
                moved
            });
        }
    }
}

/// The serialized state machine.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId>,
    membership: Membership,
    resources: Vec<WireResource>,
}

pub struct StateMachine {
    shared: Arc<Shared>,
    file: LogStore,
}

impl StateMachine {
    /// Loads the latest snapshot from `file`, if there is one.
    pub fn open(shared: Arc<Shared>, file: LogStore) -> Result<StateMachine, SError> {
        let sm = StateMachine { shared, file };
        if let Some((_, body)) = sm.file.load_snapshot()? {
            let data = sm.decode(&body)?;
            let applied = data.last_applied;
            *sm.shared.write() = data;
            sm.shared.publish(Vec::new(), applied);
        }
        Ok(sm)
    }

    fn decode(&self, body: &[u8]) -> Result<Data, SError> {
        let corrupt = |what: String| -> SError {
            StorageIOError::new(
                ErrorSubject::Snapshot(None),
                ErrorVerb::Read,
                AnyError::error(format!(
                    "raft data file {}: the snapshot {what}",
                    self.file.path().display()
                )),
            )
            .into()
        };
        let body: SnapshotBody =
            serde_json::from_slice(body).map_err(|e| corrupt(format!("is unreadable: {e}")))?;
        let mut resources = BTreeMap::new();
        for wire in body.resources {
            let r = wire
                .into_resource()
                .map_err(|e| corrupt(format!("holds a bad resource: {e}")))?;
            resources.insert(r.key(), r);
        }
        Ok(Data {
            resources: Resources(resources),
            last_applied: body.last_applied,
            membership: body.membership,
        })
    }

    fn apply_command(
        data: &mut Data,
        command: Command,
    ) -> Result<(Outcome, Vec<Change>), StoreError> {
        let result = match command {
            Command::Create { resource, now, .. } => resource
                .into_resource()
                .and_then(|r| data.resources.create(r, parse_now(&now)))
                .map(|(r, change)| (Outcome::Written(WireResource::new(&r)), vec![change])),
            Command::Update { resource, now, .. } => resource
                .into_resource()
                .and_then(|r| data.resources.update(r, parse_now(&now)))
                .map(|(r, change)| (Outcome::Written(WireResource::new(&r)), vec![change])),
            Command::Delete { key, .. } => key
                .into_key()
                .and_then(|k| data.resources.delete(&k))
                .map(|changes| (Outcome::Deleted, changes)),
        };
        match result {
            Ok(applied) => Ok(applied),
            // Only a replica of a newer version writes a type this one does not know; applying
            // the entry as refused here while others apply it would fork the replicas' states.
            Err(e @ StoreError::Unavailable { .. }) => Err(e),
            Err(e) => Ok((Outcome::Refused(Refusal::from_error(e)), Vec::new())),
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), SError> {
        let data = self.shared.read();
        Ok((data.last_applied, data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, SError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut outcomes = Vec::new();
        let mut changes = Vec::new();
        let mut data = self.shared.write();
        for entry in entries {
            data.last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => Outcome::Nothing,
                EntryPayload::Normal(command) => {
                    let cause: Option<Arc<str>> = command.cause().map(Arc::from);
                    let (outcome, applied) =
                        Self::apply_command(&mut data, command).map_err(|e| {
                            StorageIOError::apply(
                                entry.log_id,
                                AnyError::error(format!(
                                    "{e}: upgrade this replica to the version of the others"
                                )),
                            )
                        })?;
                    changes.extend(applied.into_iter().map(|c| (c, cause.clone())));
                    outcome
                }
                EntryPayload::Membership(m) => {
                    data.membership = StoredMembership::new(Some(entry.log_id), m);
                    Outcome::Nothing
                }
            };
            outcomes.push(outcome);
        }
        let applied = data.last_applied;
        drop(data);
        // In log order, after the batch is visible to readers.
        self.shared.publish(changes, applied);
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
            file: self.file.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SError> {
        let body = snapshot.into_inner();
        let incoming = self.decode(&body)?;
        let file = self.file.clone();
        let stored_meta = meta.clone();
        tokio::task::spawn_blocking(move || file.save_snapshot(&stored_meta, &body))
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))??;
        // A replica that was far behind learns of the difference as events, as if it had
        // applied the log entries the snapshot stands for.
        let mut data = self.shared.write();
        let changes = diff(&data.resources, &incoming.resources);
        *data = incoming;
        let applied = data.last_applied;
        drop(data);
        self.shared
            .publish(changes.into_iter().map(|c| (c, None)).collect(), applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SError> {
        Ok(self.file.load_snapshot()?.map(|(meta, body)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(body)),
        }))
    }
}

/// The changes that turn `old` into `new`.
fn diff(old: &Resources, new: &Resources) -> Vec<Change> {
    let mut changes = Vec::new();
    for (key, r) in &new.0 {
        match old.0.get(key) {
            None => changes.push((Operation::Create, key.clone(), r.meta.version)),
            Some(o) if o.meta.version != r.meta.version || o != r => {
                changes.push((Operation::Update, key.clone(), r.meta.version))
            }
            Some(_) => {}
        }
    }
    for (key, r) in &old.0 {
        if !new.0.contains_key(key) {
            changes.push((Operation::Delete, key.clone(), r.meta.version));
        }
    }
    changes
}

pub struct SnapshotBuilder {
    shared: Arc<Shared>,
    file: LogStore,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SError> {
        let (shared, file) = (self.shared.clone(), self.file.clone());
        // Encoding every resource takes a while on a large store: off the async workers.
        let (meta, body) = tokio::task::spawn_blocking(move || {
            let (body, meta) = {
                let data = shared.read();
                let body = SnapshotBody {
                    last_applied: data.last_applied,
                    membership: data.membership.clone(),
                    resources: data.resources.0.values().map(WireResource::new).collect(),
                };
                let id = match data.last_applied {
                    Some(l) => {
                        format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index)
                    }
                    None => "empty".to_string(),
                };
                let meta = SnapshotMeta {
                    last_log_id: data.last_applied,
                    last_membership: data.membership.clone(),
                    snapshot_id: id,
                };
                (body, meta)
            };
            let body = serde_json::to_vec(&body)
                .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
            // Durable before raft may purge the log entries it replaces.
            file.save_snapshot(&meta, &body)?;
            Ok::<_, SError>((meta, body))
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))??;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(body)),
        })
    }
}
