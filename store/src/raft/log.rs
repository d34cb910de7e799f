//! The durable half of a replica, in one redb file: raft's log, vote and commit index, the
//! latest snapshot, and the replica's identity. Every write commits with fsync (redb's default
//! `Durability::Immediate`) before raft is told it is done.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, RaftLogReader, StorageError, StorageIOError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{LogId, NodeId, TypeConfig};

pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;

type Entry = openraft::Entry<TypeConfig>;
type Vote = openraft::Vote<NodeId>;
type SError = StorageError<NodeId>;

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "purged";
const SNAPSHOT_META: &str = "snapshot.meta";
const SNAPSHOT_BODY: &str = "snapshot.body";
pub(crate) const IDENTITY: &str = "identity";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("raft data file {path}: {message}")]
    File { path: PathBuf, message: String },
}

/// One replica's redb file, shared by the log store, the state machine's snapshots and the
/// identity check at start.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    path: Arc<PathBuf>,
}

impl LogStore {
    pub fn open(path: &Path) -> Result<LogStore, LogError> {
        let file_error = |message: String| LogError::File {
            path: path.to_path_buf(),
            message,
        };
        let fix = "restore the replica from a backup, or remove the file and re-add the node";
        // redb checksums its pages, but some damage makes it panic rather than return an
        // error; either way the replica stops here with the file's name.
        let panicked =
            |what: &str| file_error(format!("is corrupt (redb failed while {what}); {fix}"));
        let mut db = std::panic::catch_unwind(|| Database::create(path))
            .map_err(|_| panicked("opening it"))?
            .map_err(|e| file_error(format!("cannot be opened ({e}); {fix}")))?;
        // Verified once, before raft reads any of it.
        let checked =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.check_integrity()))
                .map_err(|_| panicked("verifying it"))?;
        match checked {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(path = %path.display(), "raft data file was repaired after an unclean shutdown")
            }
            Err(e) => return Err(file_error(format!("is corrupt ({e}); {fix}"))),
        }
        let txn = db.begin_write().map_err(|e| file_error(e.to_string()))?;
        txn.open_table(LOGS)
            .map_err(|e| file_error(e.to_string()))?;
        txn.open_table(META)
            .map_err(|e| file_error(e.to_string()))?;
        txn.commit().map_err(|e| file_error(e.to_string()))?;
        Ok(LogStore {
            db: Arc::new(db),
            path: Arc::new(path.to_path_buf()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An error about this file that stops the replica, naming the file.
    fn corrupt(&self, subject: ErrorSubject<NodeId>, what: String) -> SError {
        StorageIOError::new(
            subject,
            ErrorVerb::Read,
            AnyError::error(format!("raft data file {}: {what}", self.path.display())),
        )
        .into()
    }

    fn io(&self, subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: impl ToString) -> SError {
        StorageIOError::new(
            subject,
            verb,
            AnyError::error(format!(
                "raft data file {}: {}",
                self.path.display(),
                e.to_string()
            )),
        )
        .into()
    }

    /// Runs redb's blocking calls (an fsync among them) off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&LogStore) -> Result<T, SError> + Send + 'static,
    ) -> Result<T, SError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| self.io(ErrorSubject::Store, ErrorVerb::Write, e))?
    }

    pub fn read_meta<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, SError> {
        let subject = ErrorSubject::Store;
        let txn = self
            .db
            .begin_read()
            .map_err(|e| self.io(subject.clone(), ErrorVerb::Read, e))?;
        let table = txn
            .open_table(META)
            .map_err(|e| self.io(subject.clone(), ErrorVerb::Read, e))?;
        let Some(raw) = table
            .get(name)
            .map_err(|e| self.io(subject.clone(), ErrorVerb::Read, e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(raw.value())
            .map(Some)
            .map_err(|e| self.corrupt(subject, format!("record {name:?} is unreadable: {e}")))
    }

    pub fn write_meta<T: Serialize>(&self, name: &str, value: &T) -> Result<(), SError> {
        let subject = ErrorSubject::Store;
        let raw =
            serde_json::to_vec(value).map_err(|e| self.io(subject.clone(), ErrorVerb::Write, e))?;
        let w = |e: &dyn ToString| self.io(ErrorSubject::Store, ErrorVerb::Write, e.to_string());
        let txn = self.db.begin_write().map_err(|e| w(&e))?;
        {
            let mut table = txn.open_table(META).map_err(|e| w(&e))?;
            table.insert(name, raw.as_slice()).map_err(|e| w(&e))?;
        }
        txn.commit().map_err(|e| w(&e))
    }

    /// The snapshot's description and body, written together, unless the stored snapshot is
    /// as new or newer: a snapshot built from older state can finish after one installed from
    /// the leader, and the log before the newer one may already be gone.
    pub fn save_snapshot(&self, meta: &SnapshotMeta, body: &[u8]) -> Result<(), SError> {
        let w = |e: &dyn ToString| {
            self.io(
                ErrorSubject::Snapshot(None),
                ErrorVerb::Write,
                e.to_string(),
            )
        };
        let raw_meta = serde_json::to_vec(meta).map_err(|e| w(&e))?;
        let txn = self.db.begin_write().map_err(|e| w(&e))?;
        {
            let mut table = txn.open_table(META).map_err(|e| w(&e))?;
            let stored: Option<SnapshotMeta> = table
                .get(SNAPSHOT_META)
                .map_err(|e| w(&e))?
                .and_then(|raw| serde_json::from_slice(raw.value()).ok());
            if stored.is_some_and(|s| s.last_log_id >= meta.last_log_id) {
                return Ok(());
            }
            table
                .insert(SNAPSHOT_META, raw_meta.as_slice())
                .map_err(|e| w(&e))?;
            table.insert(SNAPSHOT_BODY, body).map_err(|e| w(&e))?;
        }
        txn.commit().map_err(|e| w(&e))
    }

    pub fn load_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, SError> {
        let Some(meta) = self.read_meta::<SnapshotMeta>(SNAPSHOT_META)? else {
            return Ok(None);
        };
        let r = |e: &dyn ToString| {
            self.io(ErrorSubject::Snapshot(None), ErrorVerb::Read, e.to_string())
        };
        let txn = self.db.begin_read().map_err(|e| r(&e))?;
        let table = txn.open_table(META).map_err(|e| r(&e))?;
        let body = table
            .get(SNAPSHOT_BODY)
            .map_err(|e| r(&e))?
            .ok_or_else(|| {
                self.corrupt(
                    ErrorSubject::Snapshot(None),
                    "the snapshot's description is there but not its body".into(),
                )
            })?;
        Ok(Some((meta, body.value().to_vec())))
    }

    fn decode_entry(&self, index: u64, raw: &[u8]) -> Result<Entry, SError> {
        serde_json::from_slice(raw).map_err(|e| {
            self.corrupt(
                ErrorSubject::LogIndex(index),
                format!("log entry {index} is unreadable: {e}"),
            )
        })
    }

    fn read_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<Vec<Entry>, SError> {
        let r = |e: &dyn ToString| self.io(ErrorSubject::Logs, ErrorVerb::Read, e.to_string());
        let txn = self.db.begin_read().map_err(|e| r(&e))?;
        let table = txn.open_table(LOGS).map_err(|e| r(&e))?;
        let mut out = Vec::new();
        for item in table.range((start, end)).map_err(|e| r(&e))? {
            let (k, v) = item.map_err(|e| r(&e))?;
            let index = k.value();
            let entry = self.decode_entry(index, v.value())?;
            if entry.log_id.index != index {
                return Err(self.corrupt(
                    ErrorSubject::LogIndex(index),
                    format!("slot {index} holds entry {}", entry.log_id.index),
                ));
            }
            out.push(entry);
        }
        Ok(out)
    }

    fn last_entry(&self) -> Result<Option<Entry>, SError> {
        let r = |e: &dyn ToString| self.io(ErrorSubject::Logs, ErrorVerb::Read, e.to_string());
        let txn = self.db.begin_read().map_err(|e| r(&e))?;
        let table = txn.open_table(LOGS).map_err(|e| r(&e))?;
        match table.last().map_err(|e| r(&e))? {
            Some((k, v)) => self.decode_entry(k.value(), v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn append_blocking(&self, entries: Vec<Entry>) -> Result<(), SError> {
        let w = |e: &dyn ToString| self.io(ErrorSubject::Logs, ErrorVerb::Write, e.to_string());
        let txn = self.db.begin_write().map_err(|e| w(&e))?;
        {
            let mut table = txn.open_table(LOGS).map_err(|e| w(&e))?;
            for entry in &entries {
                let raw = serde_json::to_vec(entry).map_err(|e| w(&e))?;
                table
                    .insert(entry.log_id.index, raw.as_slice())
                    .map_err(|e| w(&e))?;
            }
        }
        txn.commit().map_err(|e| w(&e))
    }

    /// Removes the entries in `range`, with `then` written in the same transaction.
    fn remove_range(
        &self,
        range: (Bound<u64>, Bound<u64>),
        then: Option<(&str, Vec<u8>)>,
    ) -> Result<(), SError> {
        let w = |e: &dyn ToString| self.io(ErrorSubject::Logs, ErrorVerb::Write, e.to_string());
        let txn = self.db.begin_write().map_err(|e| w(&e))?;
        {
            let mut table = txn.open_table(LOGS).map_err(|e| w(&e))?;
            table.retain_in(range, |_, _| false).map_err(|e| w(&e))?;
            if let Some((name, raw)) = &then {
                let mut meta = txn.open_table(META).map_err(|e| w(&e))?;
                meta.insert(*name, raw.as_slice()).map_err(|e| w(&e))?;
            }
        }
        txn.commit().map_err(|e| w(&e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, SError> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        self.blocking(move |s| s.read_range(start, end)).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SError> {
        let purged: Option<LogId> = self.read_meta(PURGED)?;
        let last = self.last_entry()?.map(|e| e.log_id).or(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), SError> {
        let vote = *vote;
        self.blocking(move |s| s.write_meta(VOTE, &vote)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, SError> {
        self.read_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), SError> {
        self.blocking(move |s| s.write_meta(COMMITTED, &committed))
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, SError> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), SError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let result = self.blocking(move |s| s.append_blocking(entries)).await;
        callback.log_io_completed(
            result
                .as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string())),
        );
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), SError> {
        self.blocking(move |s| {
            s.remove_range((Bound::Included(log_id.index), Bound::Unbounded), None)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), SError> {
        let raw = serde_json::to_vec(&Some(log_id))
            .map_err(|e| self.io(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        self.blocking(move |s| {
            s.remove_range(
                (Bound::Unbounded, Bound::Included(log_id.index)),
                Some((PURGED, raw)),
            )
        })
        .await
    }
}
