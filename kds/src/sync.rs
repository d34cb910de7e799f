//! The two halves of a KDS stream, independent of direction: the *sender* answers a peer's
//! subscriptions with resources from its store and follows store events; the *receiver*
//! subscribes and applies what arrives to its store. Global→zone uses a global sender and a zone
//! receiver; zone→global the reverse, on the same connection.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{Metadata, Node};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as XdsResource,
};
use envoy_types::pb::google::rpc::Status;
use model::{Resource, ResourceKey, ResourceType};
use store::{ListQuery, SharedStore, StoreError};
use tokio::sync::{broadcast, mpsc};
use tracing::Instrument;

use crate::codec;
use crate::metrics::{KdsMetrics, TypeLabels, ZoneLabels};
use prometheus_client::metrics::counter::Counter;

/// How long a sender waits for the peer to answer a delta before it sends the next one of the
/// same type anyway. Peers answer every delta (Kuma's do too); this only bounds what a peer that
/// stopped answering costs in latency, it is never on the path of a healthy stream.
pub const ANSWER_PATIENCE: Duration = Duration::from_secs(5);
/// `system_version_info` of a full-state response that more responses complete.
pub const FULL_STATE_CONTINUES: &str = "kuma-rs/full-state-continues";
/// The `features` value of a zone whose receiver applies a full state as its parts arrive
/// ([`FULL_STATE_CONTINUES`]): global then streams large full states in parts, encoding the next
/// while the zone stores the last, instead of encoding the whole type before the first leaves.
/// Kuma's zones do not send it and get a full state in as few responses as fit.
pub const FEATURE_STREAMED_FULL_STATE: &str = "kuma-rs-streamed-full-state";
/// Resources per part of a streamed full state: small enough that the peer starts storing
/// within a few milliseconds, large enough that per-response costs stay negligible.
const FULL_STATE_PART: usize = 512;
/// Resources a receiver applies before it lets other tasks run.
const APPLY_BATCH: usize = 64;
/// Responses are split to stay under this many bytes of resources.
pub const DEFAULT_MAX_MESSAGE: usize = 10 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the peer closed the stream")]
    Closed,
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The peer's stream failed: a message that did not decode or was over the size limit,
    /// or the transport. Kept whole so a server can answer with its gRPC code.
    #[error("protocol: {0}")]
    Protocol(#[source] tonic::Status),
}

/// Why one resource of a response is not taken; the reasons of a response make up its NACK.
#[derive(Debug, thiserror::Error)]
enum Rejection {
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
    #[error("{name}: {source}")]
    Invalid {
        name: String,
        #[source]
        source: model::ValidationError,
    },
    #[error(transparent)]
    Refused(#[from] crate::rules::Refusal),
}

/// Where messages go: a server answers with `Result`s, a client's request stream takes plain
/// messages. Returns false once the other end is gone.
pub trait Outgoing<T>: Send {
    fn put(&self, msg: T) -> impl std::future::Future<Output = bool> + Send;
}

impl<T: Send> Outgoing<T> for mpsc::Sender<T> {
    async fn put(&self, msg: T) -> bool {
        self.send(msg).await.is_ok()
    }
}

impl<T: Send> Outgoing<T> for mpsc::Sender<Result<T, tonic::Status>> {
    async fn put(&self, msg: T) -> bool {
        self.send(Ok(msg)).await.is_ok()
    }
}

/// A store change as a sender sees it: one event, or word that events were missed (the
/// sender then recomputes what its peer lacks).
#[derive(Debug, Clone)]
pub enum Change {
    Event(store::ChangeEvent),
    Missed,
}

/// Change events buffered per feed before a slow reader lags (and resyncs).
const FEED_BUFFER: usize = 16 * 1024;

/// The store's changes of the synced types only, shared by every stream of one direction.
/// Without it each stream would wake for every write to the store: on a global with a thousand
/// zones, every ZoneInsight flush and every zone's Dataplane would wake a thousand senders
/// that then ignore it. One task filters; the streams wake only for what they may send.
pub struct ChangeFeed {
    tx: broadcast::Sender<Change>,
    /// Dropped with the feed: its task stops at once, even on a store that stays quiet.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl ChangeFeed {
    /// Starts following `store` for `types`; stops when the last handle is dropped or the store
    /// goes away. Must be called within a Tokio runtime.
    pub fn follow(store: &SharedStore, types: &[ResourceType]) -> Arc<ChangeFeed> {
        let (tx, _) = broadcast::channel(FEED_BUFFER);
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let feed = Arc::new(ChangeFeed { tx, _stop: stop });
        let mut events = store.subscribe();
        let wanted: HashSet<ResourceType> = types.iter().copied().collect();
        let handle = Arc::downgrade(&feed);
        // Unconstrained: a forwarder held to Tokio's per-poll budget would pass on fewer events
        // per turn than a writer applying a full state makes, and fall behind the store.
        tokio::spawn(tokio::task::unconstrained(async move {
            loop {
                let received = tokio::select! {
                    received = events.recv() => received,
                    _ = &mut stopped => return,
                };
                let change = match received {
                    Ok(ev) if wanted.contains(&ev.key.kind) => Change::Event(ev),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => Change::Missed,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let Some(feed) = handle.upgrade() else {
                    return;
                };
                // No receiver is fine: no stream is open.
                let _ = feed.tx.send(change);
            }
        }));
        feed
    }

    /// Changes from now on. A change already in the store is seen by a listing made after
    /// this call, so subscribe first, then list.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.tx.subscribe()
    }
}

/// What a sender sends: which stored resources this peer gets, and the shared wire form.
#[derive(Clone)]
pub struct Outbound {
    pub wanted: Arc<dyn Fn(&Resource) -> bool + Send + Sync>,
    pub wire: Arc<WireForms>,
    /// Fires when `wanted` changed its mind about resources that did not change themselves (a
    /// zone was disabled): the types synced across zones are filtered again.
    pub refilter: Option<tokio::sync::watch::Receiver<u64>>,
    /// The store's changes of (at least) the types sent.
    pub changes: Arc<ChangeFeed>,
    /// The peer announced [`FEATURE_STREAMED_FULL_STATE`].
    pub streamed_full_state: bool,
}

/// Stored resources as peers see them (renamed, relabelled, encoded), made once per resource
/// version and shared by every stream whose peers see the same form: one global->zone change is
/// encoded once, not once per zone.
pub struct WireForms {
    rewrite: Box<dyn Fn(&Resource) -> Resource + Send + Sync>,
    // key -> (store version, modification time, wire form). The time tells a re-created
    // resource (whose version starts again at 1) from the one it replaced.
    cache: Mutex<HashMap<ResourceKey, (u64, model::Timestamp, XdsResource)>>,
}

impl WireForms {
    pub fn new(rewrite: impl Fn(&Resource) -> Resource + Send + Sync + 'static) -> Self {
        WireForms {
            rewrite: Box::new(rewrite),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ResourceKey, (u64, model::Timestamp, XdsResource)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn encode(&self, r: &Resource) -> XdsResource {
        let key = r.key();
        if let Some((version, time, x)) = self.lock().get(&key)
            && *version == r.meta.version
            && *time == r.meta.modification_time
        {
            return x.clone();
        }
        // Encoded outside the lock: two streams racing on one change both encode, harmlessly.
        let x = codec::to_xds_resource(&(self.rewrite)(r));
        self.lock()
            .insert(key, (r.meta.version, r.meta.modification_time, x.clone()));
        x
    }

    fn forget(&self, key: &ResourceKey) {
        self.lock().remove(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Responses exchanged for one type on a stream, whichever side sent them, and how many the
/// receiving side acknowledged or rejected. Shared live with the insight writer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TypeCounts {
    pub responses_sent: u64,
    pub responses_acknowledged: u64,
    pub responses_rejected: u64,
}

impl TypeCounts {
    fn add(&mut self, other: &TypeCounts) {
        self.responses_sent += other.responses_sent;
        self.responses_acknowledged += other.responses_acknowledged;
        self.responses_rejected += other.responses_rejected;
    }
}

/// Deltas sent and not yet answered, with the moment their oldest change happened; a peer that
/// never answers cannot grow it past this.
const MAX_IN_FLIGHT: usize = 4096;

#[derive(Debug, Default)]
struct StatsInner {
    per_type: BTreeMap<&'static str, TypeCounts>,
    last_update: Option<model::Timestamp>,
    /// Nonce of each delta this side sent and the peer has not answered -> when the change it
    /// carries happened.
    in_flight: HashMap<u64, tokio::time::Instant>,
    /// Each type's counters on `/metrics`, looked up once: a delta then costs an atomic add,
    /// not a label lookup (this runs once per zone per change).
    meters: HashMap<ResourceType, TypeMeters>,
}

#[derive(Debug)]
struct TypeMeters {
    sent: Counter,
    acked: Counter,
    nacked: Counter,
    received: Counter,
    refused: Counter,
}

/// Where a stream's figures go on `/metrics`, and under which zone.
#[derive(Debug)]
struct Meter {
    metrics: KdsMetrics,
    zone: String,
    lag: prometheus_client::metrics::histogram::Histogram,
}

impl Meter {
    fn type_meters(&self, kind: ResourceType) -> TypeMeters {
        let labels = TypeLabels {
            zone: self.zone.clone(),
            resource_type: kind.name(),
        };
        let m = &self.metrics;
        TypeMeters {
            sent: m.sent.get_or_create(&labels).clone(),
            acked: m.acked.get_or_create(&labels).clone(),
            nacked: m.nacked.get_or_create(&labels).clone(),
            received: m.received.get_or_create(&labels).clone(),
            refused: m.refused.get_or_create(&labels).clone(),
        }
    }
}

/// Live counters of one connection's streams, read by insights, logs and `/metrics`.
#[derive(Debug, Default)]
pub struct StreamStats {
    inner: Mutex<StatsInner>,
    meter: Option<Meter>,
}

impl StreamStats {
    /// Counters that also go to `metrics`, labelled with `zone`.
    pub fn metered(metrics: KdsMetrics, zone: impl Into<String>) -> Self {
        let zone = zone.into();
        let lag = metrics
            .lag
            .get_or_create(&ZoneLabels { zone: zone.clone() })
            .clone();
        StreamStats {
            inner: Mutex::default(),
            meter: Some(Meter { metrics, zone, lag }),
        }
    }

    /// Updates the counts of `kind`, the deltas in flight and `kind`'s meters (when metered)
    /// under one lock.
    fn record(
        &self,
        kind: ResourceType,
        f: impl FnOnce(&mut TypeCounts, &mut HashMap<u64, tokio::time::Instant>, Option<&TypeMeters>),
    ) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *guard;
        let meters = self.meter.as_ref().map(|m| {
            &*inner
                .meters
                .entry(kind)
                .or_insert_with(|| m.type_meters(kind))
        });
        let counts = inner.per_type.entry(kind.name()).or_default();
        f(counts, &mut inner.in_flight, meters);
        inner.last_update = Some(model::Timestamp::now());
    }

    /// The peer subscribed to `kind`: its counters start at zero, so they exist (and
    /// `increase()` over them works) before the first delta.
    fn sending(&self, kind: ResourceType) {
        self.start_meters(kind);
    }

    /// This side subscribed to `kind` from the peer (see [`StreamStats::sending`]).
    fn receiving(&self, kind: ResourceType) {
        self.start_meters(kind);
    }

    fn start_meters(&self, kind: ResourceType) {
        if let Some(m) = &self.meter {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner
                .meters
                .entry(kind)
                .or_insert_with(|| m.type_meters(kind));
        }
    }

    /// This side sent a delta (`nonce`) carrying changes made at `origin`.
    fn delta_sent(&self, kind: ResourceType, nonce: u64, origin: tokio::time::Instant) {
        self.record(kind, |counts, in_flight, meters| {
            counts.responses_sent += 1;
            if in_flight.len() >= MAX_IN_FLIGHT {
                in_flight.clear();
            }
            in_flight.insert(nonce, origin);
            if let Some(m) = meters {
                m.sent.inc();
            }
        });
    }

    /// The peer acknowledged the delta `nonce` this side sent.
    fn peer_acknowledged(&self, kind: ResourceType, nonce: &str) {
        let mut origin = None;
        self.record(kind, |counts, in_flight, meters| {
            counts.responses_acknowledged += 1;
            origin = nonce.parse().ok().and_then(|n| in_flight.remove(&n));
            if let Some(m) = meters {
                m.acked.inc();
            }
        });
        if let (Some(m), Some(origin)) = (&self.meter, origin) {
            m.lag.observe(origin.elapsed().as_secs_f64());
        }
    }

    /// The peer rejected the delta `nonce` this side sent.
    fn peer_rejected(&self, kind: ResourceType, nonce: &str) {
        self.record(kind, |counts, in_flight, meters| {
            counts.responses_rejected += 1;
            if let Ok(n) = nonce.parse() {
                in_flight.remove(&n);
            }
            if let Some(m) = meters {
                m.nacked.inc();
            }
        });
    }

    /// A delta the peer sent arrived.
    fn delta_received(&self, kind: ResourceType) {
        self.record(kind, |counts, _, meters| {
            counts.responses_sent += 1;
            if let Some(m) = meters {
                m.received.inc();
            }
        });
    }

    /// This side acknowledged a delta the peer sent.
    fn acknowledged(&self, kind: ResourceType) {
        self.record(kind, |counts, _, _| counts.responses_acknowledged += 1);
    }

    /// This side rejected a delta the peer sent.
    fn refused(&self, kind: ResourceType) {
        self.record(kind, |counts, _, meters| {
            counts.responses_rejected += 1;
            if let Some(m) = meters {
                m.refused.inc();
            }
        });
    }

    /// A resource too large to send (counted with the rejections, as the peer never gets it).
    fn unsendable(&self, kind: ResourceType) {
        self.record(kind, |counts, _, _| counts.responses_rejected += 1);
    }

    pub fn per_type(&self) -> BTreeMap<&'static str, TypeCounts> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .per_type
            .clone()
    }

    pub fn total(&self) -> TypeCounts {
        let mut total = TypeCounts::default();
        for c in self.per_type().values() {
            total.add(c);
        }
        total
    }

    /// When anything was last exchanged, if ever.
    pub fn last_update(&self) -> Option<model::Timestamp> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_update
    }
}

/// Whom a stream talks to (for logs) and where its counters go.
#[derive(Clone)]
pub struct StreamLabel {
    pub peer: String,
    pub stats: Arc<StreamStats>,
}

/// Numbering and sizing of outgoing responses on one stream, and which the peer has yet to
/// answer.
struct Responder<'a, R> {
    out: &'a R,
    nonce: u64,
    max_message: usize,
    stats: &'a StreamStats,
    peer: &'a str,
    unanswered: Unanswered,
}

/// One span per KDS delta, sent or received.
fn delta_span(
    direction: &'static str,
    peer: &str,
    kind: ResourceType,
    resources: usize,
    removed: usize,
) -> tracing::Span {
    tracing::info_span!(
        "kds delta",
        otel.name = %format!("{direction} {}", kind.name()),
        otel.kind = if direction == "kds send" { "producer" } else { "consumer" },
        kds.peer = %peer,
        kds.resource_type = kind.name(),
        kds.resources = resources,
        kds.removed = removed,
    )
}

/// Where a delta's resources carry the `traceparent` of the span that sent them (Envoy's
/// `Resource.metadata`, meant for such debugging data; Kuma's receivers ignore it).
const TRACE_METADATA: &str = "kuma.trace";

fn trace_metadata(traceparent: &str) -> Metadata {
    let fields = HashMap::from([(
        "traceparent".to_string(),
        envoy_types::pb::google::protobuf::Value {
            kind: Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(
                traceparent.to_string(),
            )),
        },
    )]);
    Metadata {
        filter_metadata: HashMap::from([(
            TRACE_METADATA.to_string(),
            envoy_types::pb::google::protobuf::Struct { fields },
        )]),
        ..Default::default()
    }
}

/// The `traceparent` a received delta's resources carry, if any.
fn sent_traceparent(resp: &DeltaDiscoveryResponse) -> Option<&str> {
    resp.resources.iter().find_map(|r| {
        let field = r
            .metadata
            .as_ref()?
            .filter_metadata
            .get(TRACE_METADATA)?
            .fields
            .get("traceparent")?;
        match &field.kind {
            Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) => {
                Some(s.as_str())
            }
            _ => None,
        }
    })
}

/// Serves `types` to a peer: full state first, then changes as the store reports them.
pub async fn run_sender(
    store: SharedStore,
    types: Vec<ResourceType>,
    outbound: Outbound,
    mut requests: impl futures::Stream<Item = Result<DeltaDiscoveryRequest, tonic::Status>> + Unpin,
    responses: impl Outgoing<DeltaDiscoveryResponse>,
    label: StreamLabel,
    max_message: usize,
) -> Result<(), SyncError> {
    use futures::{FutureExt, StreamExt};
    use tokio_stream::wrappers::{BroadcastStream, WatchStream, errors::BroadcastStreamRecvError};
    let StreamLabel { peer, stats } = label;
    // Subscribe before the first listing so no change falls between the two. As streams, the
    // waits persist across the loop's turns: a plain `recv()` would register and deregister
    // this stream with the feed (a lock shared by every stream) on every turn.
    let mut events = BroadcastStream::new(outbound.changes.subscribe());
    let mut subscribed: HashSet<ResourceType> = HashSet::new();
    let mut sent = SentState::new();
    let mut responder = Responder {
        out: &responses,
        nonce: 0,
        max_message,
        stats: &stats,
        peer: &peer,
        unanswered: Unanswered::default(),
    };
    let mut pending = Pending::default();
    let mut resync: HashSet<ResourceType> = HashSet::new();
    let mut refilter = outbound.refilter.clone().map(WatchStream::from_changes);
    // Flow control instead of a debounce: a type with nothing unanswered sends a change at
    // once; changes arriving while its last delta is unanswered gather into the next one,
    // which leaves when the peer answers. Idle streams pay no delay, busy ones batch.
    loop {
        let refiltered = async {
            match refilter.as_mut() {
                Some(changes) => changes.next().await.is_some(),
                None => std::future::pending().await,
            }
        };
        // Only armed while a change waits behind a delta the peer has not answered.
        let patience = responder.unanswered.give_up_at(&pending);
        let out_of_patience = async {
            match patience {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = out_of_patience => {
                tracing::warn!(%peer, "the peer has not answered a delta for {ANSWER_PATIENCE:?}; sending the next one anyway");
                responder.unanswered.forget_older_than(tokio::time::Instant::now() - ANSWER_PATIENCE);
                let now = tokio::time::Instant::now();
                flush_pending(&store, &types, &outbound, &mut pending, &mut sent, &mut responder, now).await?;
            }
            open = refiltered => {
                if !open {
                    refilter = None;
                    continue;
                }
                resync.extend(subscribed.iter().copied().filter(|k| {
                    k.descriptor().has_flag(model::descriptor::kds::SYNCED_ACROSS_ZONES)
                }));
                expand_resync(&store, &mut resync, &mut pending, &sent).await?;
                let now = tokio::time::Instant::now();
                flush_pending(&store, &types, &outbound, &mut pending, &mut sent, &mut responder, now).await?;
            }
            req = requests.next() => {
                let req = match req {
                    None => return Ok(()),
                    Some(Err(status)) => return Err(SyncError::Protocol(status)),
                    Some(Ok(r)) => r,
                };
                let Some(kind) = ResourceType::from_name(&req.type_url).filter(|k| types.contains(k)) else {
                    tracing::warn!(%peer, type_url = %req.type_url, "subscription to a type this side does not provide");
                    continue;
                };
                if !req.response_nonce.is_empty() {
                    if let Some(err) = &req.error_detail {
                        stats.peer_rejected(kind, &req.response_nonce);
                        tracing::warn!(%peer, %kind, nonce = %req.response_nonce, reason = %err.message, "peer rejected resources (NACK)");
                    } else {
                        stats.peer_acknowledged(kind, &req.response_nonce);
                    }
                    // What gathered while the peer was busy goes now, as one delta (and what waited
                    // for a mesh this answer confirms).
                    if responder.unanswered.answered(kind, &req.response_nonce) && !pending.keys.is_empty() {
                        flush_pending(&store, &types, &outbound, &mut pending, &mut sent, &mut responder, tokio::time::Instant::now()).await?;
                    }
                    continue;
                }
                if req.error_detail.is_some() {
                    tracing::warn!(%peer, %kind, "a NACK without a nonce; ignored");
                    continue;
                }
                // A new subscription: the full state of the type.
                subscribed.insert(kind);
                stats.sending(kind);
                sent.retain(|k, _| k.kind != kind);
                // The full state supersedes whatever of this type was waiting.
                pending.keys.remove(&kind);
                pending.since.remove(&kind);
                send_full_state(&store, kind, &outbound, &mut sent, &mut responder, &peer).await?;
                // Sending woke the connection's writer into this worker's LIFO slot, where no
                // other worker can take it: without a yield, the next type's full state (maybe
                // 100,000 resources listed and encoded without an await that blocks) would run
                // first, and this one would leave only after it.
                tokio::task::yield_now().await;
            }
            ev = events.next() => {
                let changed_at = tokio::time::Instant::now();
                let mut note = |change: Change| {
                    let Change::Event(ev) = change else {
                        // Events were lost before this stream's feed: recompute everything.
                        resync.extend(subscribed.iter().copied());
                        return;
                    };
                    if subscribed.contains(&ev.key.kind) {
                        if let Some(cause) = ev.cause {
                            pending.causes.insert(ev.key.clone(), cause);
                        }
                        pending.since.entry(ev.key.kind).or_insert(changed_at);
                        pending.keys.entry(ev.key.kind).or_default().insert(ev.key);
                    }
                };
                match ev {
                    Some(Ok(change)) => note(change),
                    Some(Err(BroadcastStreamRecvError::Lagged(n))) => {
                        // Too far behind to trust the events: recompute every subscribed type.
                        tracing::warn!(%peer, missed = n, "change events lagged; resyncing");
                        note(Change::Missed);
                    }
                    None => return Err(SyncError::Closed),
                }
                // What is already queued goes in the same delta; nothing waits for more.
                while let Some(Some(ev)) = events.next().now_or_never() {
                    note(ev.unwrap_or(Change::Missed));
                }
                expand_resync(&store, &mut resync, &mut pending, &sent).await?;
                flush_pending(&store, &types, &outbound, &mut pending, &mut sent, &mut responder, changed_at).await?;
            }
        }
    }
}

/// A type's full state. To a peer that takes it streamed, in parts of [`FULL_STATE_PART`]
/// resources, each read from the store and encoded just before it leaves: the peer stores one
/// part while the next is read and encoded, instead of waiting for the whole type. Parts resume
/// by key, so a resource deleted or created between two parts is neither skipped nor sent
/// twice; such changes (this stream's events were subscribed before) reach the peer as deltas
/// right after the full state, as changes made after a single-part full state do. Other peers,
/// and stores that cannot resume cheaply, get the whole type as one part (split only to fit
/// the message size).
async fn send_full_state<R: Outgoing<DeltaDiscoveryResponse>>(
    store: &SharedStore,
    kind: ResourceType,
    outbound: &Outbound,
    sent: &mut SentState,
    responder: &mut Responder<'_, R>,
    peer: &str,
) -> Result<(), SyncError> {
    let query = ListQuery::all(kind);
    let part_size = match outbound.streamed_full_state {
        true => FULL_STATE_PART,
        false => usize::MAX,
    };
    let now = tokio::time::Instant::now();
    let mut after = None;
    loop {
        let mut part = Vec::new();
        let next = store
            .for_each_after(&query, after.as_ref(), part_size, &mut |r| {
                if (outbound.wanted)(r) {
                    let x = outbound.wire.encode(r);
                    sent.insert(r.key(), (x.name.clone(), x.version.clone()));
                    part.push(x);
                }
            })
            .await?;
        let span = delta_span("kds send", peer, kind, part.len(), 0);
        responder
            .send_part(kind, part, next.is_none(), now)
            .instrument(span)
            .await?;
        let Some(key) = next else {
            return Ok(());
        };
        after = Some(key);
        // Lets the connection's writer send this part while the next is read and encoded.
        tokio::task::yield_now().await;
    }
}

/// Changes not sent yet: the keys by type, and the trace of each change made in this process
/// with tracing on.
#[derive(Default)]
struct Pending {
    keys: HashMap<ResourceType, HashSet<ResourceKey>>,
    causes: HashMap<ResourceKey, Arc<str>>,
    /// When the oldest change of each type began waiting: the delta that carries it is timed
    /// from then.
    since: HashMap<ResourceType, tokio::time::Instant>,
}

/// Deltas sent on a stream that the peer has not answered (ACK or NACK), by type.
#[derive(Default)]
struct Unanswered {
    by_type: HashMap<ResourceType, HashMap<u64, tokio::time::Instant>>,
}

impl Unanswered {
    fn sent(&mut self, kind: ResourceType, nonces: Vec<u64>, at: tokio::time::Instant) {
        if nonces.is_empty() {
            return;
        }
        let waiting = self.by_type.entry(kind).or_default();
        waiting.extend(nonces.into_iter().map(|n| (n, at)));
        // A peer that skips answers cannot grow this past a bound.
        if waiting.len() > MAX_IN_FLIGHT {
            waiting.clear();
        }
    }

    /// Records the answer to `nonce`; true once nothing of `kind` is unanswered.
    fn answered(&mut self, kind: ResourceType, nonce: &str) -> bool {
        match self.by_type.get_mut(&kind) {
            Some(waiting) => {
                if let Ok(n) = nonce.parse() {
                    waiting.remove(&n);
                }
                if waiting.is_empty() {
                    self.by_type.remove(&kind);
                    true
                } else {
                    false
                }
            }
            None => true,
        }
    }

    fn busy(&self, kind: ResourceType) -> bool {
        self.by_type.contains_key(&kind)
    }

    /// When to stop waiting for the peer, if a pending change is held back by it.
    fn give_up_at(&self, pending: &Pending) -> Option<tokio::time::Instant> {
        pending
            .keys
            .keys()
            .filter_map(|kind| self.by_type.get(kind)?.values().min().copied())
            .min()
            .map(|oldest| oldest + ANSWER_PATIENCE)
    }

    fn forget_older_than(&mut self, cutoff: tokio::time::Instant) {
        self.by_type.retain(|_, waiting| {
            waiting.retain(|_, at| *at > cutoff);
            !waiting.is_empty()
        });
    }
}

/// Every key of each type to resync, stored or held by the peer, becomes pending.
async fn expand_resync(
    store: &SharedStore,
    resync: &mut HashSet<ResourceType>,
    pending: &mut Pending,
    sent: &SentState,
) -> Result<(), SyncError> {
    for kind in resync.drain() {
        let keys = pending.keys.entry(kind).or_default();
        store
            .for_each(&ListQuery::all(kind), &mut |r| {
                keys.insert(r.key());
            })
            .await?;
        keys.extend(sent.keys().filter(|k| k.kind == kind).cloned());
    }
    Ok(())
}

/// Sends what changed among the `pending` keys, in subscription order, so a Mesh reaches the
/// peer before what lives in it; while a Mesh change waits for the peer's answer, the meshes'
/// resources wait with it.
async fn flush_pending(
    store: &SharedStore,
    types: &[ResourceType],
    outbound: &Outbound,
    pending: &mut Pending,
    sent: &mut SentState,
    responder: &mut Responder<'_, impl Outgoing<DeltaDiscoveryResponse>>,
    changed_at: tokio::time::Instant,
) -> Result<(), SyncError> {
    for &kind in types {
        if !pending.keys.contains_key(&kind) {
            continue;
        }
        let since = *pending.since.entry(kind).or_insert(changed_at);
        if responder.unanswered.busy(kind) {
            continue;
        }
        // A mesh's resources wait for the mesh itself: the peer drops (and ACKs) a resource
        // whose mesh it does not have yet, and would never ask for it again.
        if kind != ResourceType::Mesh && pending.keys.contains_key(&ResourceType::Mesh) {
            continue;
        }
        pending.since.remove(&kind);
        let Some(keys) = pending.keys.remove(&kind) else {
            continue;
        };
        let mut current = Vec::with_capacity(keys.len());
        // The delta continues the trace of (the first traced of) the changes it carries.
        let cause = keys.iter().find_map(|k| pending.causes.remove(k));
        pending.causes.retain(|k, _| !keys.contains(k));
        for key in keys {
            let wire = match store.get(&key).await {
                Ok(r) => (outbound.wanted)(&r).then(|| outbound.wire.encode(&r)),
                Err(StoreError::NotFound(_)) => {
                    outbound.wire.forget(&key);
                    None
                }
                Err(e) => return Err(e.into()),
            };
            current.push((key, wire));
        }
        let (changed, removed) = delta(sent, current);
        if !changed.is_empty() || !removed.is_empty() {
            let span = delta_span(
                "kds send",
                responder.peer,
                kind,
                changed.len(),
                removed.len(),
            );
            if let Some(cause) = &cause {
                store::trace::continue_from(&span, cause);
            }
            responder
                .send_split(kind, changed, removed, since)
                .instrument(span)
                .await?;
        }
    }
    Ok(())
}

/// What the peer holds: our key -> (the peer's name for it, content version).
pub type SentState = HashMap<ResourceKey, (String, String)>;

/// Compares what changed (`None`: gone, or no longer for this peer) with what the peer holds:
/// the resources to send, and the names to remove (the names they were sent under). `sent` is
/// updated to what the peer will hold.
pub fn delta(
    sent: &mut SentState,
    current: Vec<(ResourceKey, Option<XdsResource>)>,
) -> (Vec<XdsResource>, Vec<String>) {
    let mut changed = Vec::new();
    let mut removed = Vec::new();
    for (key, wire) in current {
        match wire {
            Some(x) => {
                if sent.get(&key).map(|(_, v)| v) != Some(&x.version) {
                    sent.insert(key, (x.name.clone(), x.version.clone()));
                    changed.push(x);
                }
            }
            None => {
                if let Some((name, _)) = sent.remove(&key) {
                    removed.push(name);
                }
            }
        }
    }
    (changed, removed)
}

/// What one entry adds to a response: its encoding, its field tag and length prefix.
fn encoded_entry_len(bytes: usize) -> usize {
    bytes + 1 + prost::length_delimiter_len(bytes)
}

/// Splits `resources` into responses of at most `budget` encoded bytes each, the last with
/// room for the `removed` names too; a resource that fits no response goes to `refuse`.
fn batches(
    resources: Vec<XdsResource>,
    removed: &[String],
    budget: usize,
    mut refuse: impl FnMut(&XdsResource, usize),
) -> Vec<Vec<XdsResource>> {
    let mut batches: Vec<Vec<XdsResource>> = vec![vec![]];
    let mut size = 0;
    for r in resources {
        let len = encoded_entry_len(prost::Message::encoded_len(&r));
        if len > budget {
            refuse(&r, len);
            continue;
        }
        if size + len > budget && batches.last().is_some_and(|b| !b.is_empty()) {
            batches.push(vec![]);
            size = 0;
        }
        size += len;
        if let Some(b) = batches.last_mut() {
            b.push(r);
        }
    }
    let removed_len: usize = removed.iter().map(|n| encoded_entry_len(n.len())).sum();
    if size + removed_len > budget && batches.last().is_some_and(|b| !b.is_empty()) {
        batches.push(vec![]);
    }
    batches
}

/// Whether the responses of a full state's part end the full state.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FullStatePart {
    MoreFollow,
    Last,
}

impl<R: Outgoing<DeltaDiscoveryResponse>> Responder<'_, R> {
    /// A delta of `kind`, split to fit the message size.
    async fn send_split(
        &mut self,
        kind: ResourceType,
        resources: Vec<XdsResource>,
        removed: Vec<String>,
        changed_at: tokio::time::Instant,
    ) -> Result<(), SyncError> {
        self.send_batches(kind, resources, removed, None, changed_at)
            .await
    }

    /// One part of a full state; the peer prunes after the `last`.
    async fn send_part(
        &mut self,
        kind: ResourceType,
        resources: Vec<XdsResource>,
        last: bool,
        changed_at: tokio::time::Instant,
    ) -> Result<(), SyncError> {
        let part = match last {
            true => FullStatePart::Last,
            false => FullStatePart::MoreFollow,
        };
        self.send_batches(kind, resources, vec![], Some(part), changed_at)
            .await
    }

    async fn send_batches(
        &mut self,
        kind: ResourceType,
        mut resources: Vec<XdsResource>,
        removed: Vec<String>,
        full_state: Option<FullStatePart>,
        changed_at: tokio::time::Instant,
    ) -> Result<(), SyncError> {
        let stats = self.stats;
        // Sent within the delta's span: the receiver continues its trace.
        if let Some(traceparent) = store::trace::current() {
            let metadata = trace_metadata(&traceparent);
            for r in &mut resources {
                r.metadata = Some(metadata.clone());
            }
        }
        // Bytes per response, leaving room for the envelope (type URL, nonce, removed names'
        // framing): a sixteenth of the limit, at most 64 KiB.
        let envelope = (self.max_message / 16).min(64 * 1024);
        let budget = self.max_message.saturating_sub(envelope).max(1024);
        let batches = batches(resources, &removed, budget, |r, bytes| {
            // The peer could not decode it and would drop the whole stream: refuse it here,
            // loudly, and keep syncing everything else.
            tracing::error!(%kind, name = %r.name, bytes, limit = budget, "resource is larger than a KDS message may be; not sent");
            stats.unsendable(kind);
        });
        let last = batches.len() - 1;
        let mut nonces = Vec::with_capacity(batches.len());
        for (i, batch) in batches.into_iter().enumerate() {
            self.nonce += 1;
            let resp = DeltaDiscoveryResponse {
                type_url: kind.name().to_string(),
                resources: batch,
                removed_resources: if i == last { removed.clone() } else { vec![] },
                nonce: self.nonce.to_string(),
                // A full state split over several responses marks all but the last, so the receiver
                // prunes only once it has everything (Kuma's senders never split).
                system_version_info: if full_state
                    .is_some_and(|part| part == FullStatePart::MoreFollow || i != last)
                {
                    FULL_STATE_CONTINUES.into()
                } else {
                    String::new()
                },
                ..Default::default()
            };
            if !self.out.put(resp).await {
                return Err(SyncError::Closed);
            }
            stats.delta_sent(kind, self.nonce, changed_at);
            nonces.push(self.nonce);
        }
        self.unanswered
            .sent(kind, nonces, tokio::time::Instant::now());
        Ok(())
    }
}

/// How a receiver treats what arrives: accept (possibly rewritten) or reject with a reason, and
/// which local resources of a type belong to the peer (and may be deleted by a full state).
pub trait Inbound: Send + Sync {
    fn accept(&self, r: Resource) -> Result<Resource, crate::rules::Refusal>;
    fn owned_by_peer(&self, r: &Resource) -> bool;
    /// A zone keeps the status it computed for what global sends (VIPs, hostnames): global's
    /// copy carries none (Kuma's `IgnoreStatusChange` on the zone side).
    fn keeps_local_status(&self) -> bool {
        false
    }
}

/// Subscribes to `types` and keeps the local store in step with the peer.
pub async fn run_receiver(
    store: SharedStore,
    types: Vec<ResourceType>,
    inbound: Arc<dyn Inbound>,
    node_id: String,
    mut responses: impl futures::Stream<Item = Result<DeltaDiscoveryResponse, tonic::Status>> + Unpin,
    requests: impl Outgoing<DeltaDiscoveryRequest>,
    label: StreamLabel,
) -> Result<(), SyncError> {
    use futures::StreamExt;
    let StreamLabel { peer, stats } = label;
    for kind in &types {
        stats.receiving(*kind);
        let req = DeltaDiscoveryRequest {
            node: Some(Node {
                id: node_id.clone(),
                ..Default::default()
            }),
            type_url: kind.name().to_string(),
            resource_names_subscribe: vec!["*".to_string()],
            ..Default::default()
        };
        if !requests.put(req).await {
            return Err(SyncError::Closed);
        }
    }
    // The first response per type is its full state (possibly continued over several);
    // keys gathered so far, per type, until the state is complete.
    let mut assembling: HashMap<ResourceType, HashSet<ResourceKey>> =
        types.iter().map(|k| (*k, HashSet::new())).collect();
    while let Some(resp) = responses.next().await {
        let resp = resp.map_err(SyncError::Protocol)?;
        let Some(kind) = ResourceType::from_name(&resp.type_url).filter(|k| types.contains(k))
        else {
            let nack = nack(
                &resp,
                &node_id,
                format!("type {:?} was not subscribed", resp.type_url),
            );
            if !requests.put(nack).await {
                return Err(SyncError::Closed);
            }
            continue;
        };
        let span = delta_span(
            "kds receive",
            &peer,
            kind,
            resp.resources.len(),
            resp.removed_resources.len(),
        );
        if let Some(parent) = sent_traceparent(&resp) {
            store::trace::continue_from(&span, parent);
        }
        // Applied within the delta's span: what the changes cause continues its trace.
        let reply = async {
            let mut errors = Vec::new();
            let mut accepted = Vec::new();
            for x in &resp.resources {
                let checked = codec::from_xds_resource(kind, x)
                    .map_err(Rejection::from)
                    .and_then(|r| {
                        r.validate().map_err(|source| Rejection::Invalid {
                            name: x.name.clone(),
                            source,
                        })?;
                        inbound.accept(r).map_err(Rejection::from)
                    });
                match checked {
                    Ok(r) => accepted.push(r),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            // A full state in progress remembers what it brought, for the prune at its end.
            let full_state = assembling.contains_key(&kind);
            let keep_status = inbound.keeps_local_status();
            let mut keys = Vec::with_capacity(if full_state { accepted.len() } else { 0 });
            for (i, r) in accepted.into_iter().enumerate() {
                if full_state {
                    keys.push(r.key());
                }
                apply(&store, r, keep_status).await?;
                // A store that never suspends (memory) would otherwise apply a whole full state
                // (tens of thousands) without letting this connection's sender, or the tasks
                // that feed it the changes just made, run: they would fall behind and relist.
                if (i + 1) % APPLY_BATCH == 0 {
                    tokio::task::yield_now().await;
                }
            }
            for key in &resp.removed_resources {
                if let Some((name, mesh)) = crate::rules::split_key(key) {
                    let k = ResourceKey::new(kind, mesh, name);
                    if let Ok(local) = store.get(&k).await
                        && inbound.owned_by_peer(&local)
                    {
                        match store.delete(&k).await {
                            Ok(()) | Err(StoreError::NotFound(_)) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            }
            if let Some(assembled) = assembling.get_mut(&kind) {
                assembled.extend(keys);
                if resp.system_version_info != FULL_STATE_CONTINUES
                    && let Some(keep) = assembling.remove(&kind)
                {
                    prune(&store, kind, &keep, inbound.as_ref()).await?;
                }
            }
            stats.delta_received(kind);
            let reply = if errors.is_empty() {
                stats.acknowledged(kind);
                DeltaDiscoveryRequest {
                    type_url: resp.type_url.clone(),
                    response_nonce: resp.nonce.clone(),
                    ..Default::default()
                }
            } else {
                stats.refused(kind);
                tracing::warn!(%peer, %kind, errors = ?errors, "rejected resources from the peer (NACK)");
                nack(&resp, &node_id, errors.join("; "))
            };
            Ok::<_, SyncError>(reply)
        }
        .instrument(span)
        .await?;
        if !requests.put(reply).await {
            return Err(SyncError::Closed);
        }
    }
    Ok(())
}

fn nack(resp: &DeltaDiscoveryResponse, node_id: &str, message: String) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(Node {
            id: node_id.to_string(),
            ..Default::default()
        }),
        type_url: resp.type_url.clone(),
        response_nonce: resp.nonce.clone(),
        error_detail: Some(Status {
            code: 3,
            message,
            details: vec![],
        }),
        ..Default::default()
    }
}

/// Creates or updates a copy, writing only when spec, labels or status changed.
async fn apply(store: &SharedStore, mut r: Resource, keep_status: bool) -> Result<(), SyncError> {
    let key = r.key();
    loop {
        match store.get(&key).await {
            Ok(current) => {
                if keep_status {
                    r.status.clone_from(&current.status);
                }
                if current.spec == r.spec
                    && current.meta.labels == r.meta.labels
                    && current.status == r.status
                {
                    return Ok(());
                }
                r.meta.version = current.meta.version;
                match store.update(r.clone()).await {
                    Ok(_) => return Ok(()),
                    Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound(_)) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(StoreError::NotFound(_)) => match store.create(r.clone()).await {
                Ok(_) => return Ok(()),
                Err(StoreError::AlreadyExists(_)) => continue,
                // The mesh has not arrived yet: its own subscription will bring it and the next
                // full state of this type will bring this resource again.
                Err(StoreError::MeshNotFound(mesh)) => {
                    tracing::debug!(%mesh, %key, "mesh not synced yet; resource deferred");
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        }
    }
}

/// Deletes the peer's copies of `kind` that the full state no longer has.
async fn prune(
    store: &SharedStore,
    kind: ResourceType,
    keep: &HashSet<ResourceKey>,
    inbound: &dyn Inbound,
) -> Result<(), SyncError> {
    let mut gone = Vec::new();
    store
        .for_each(&ListQuery::all(kind), &mut |local| {
            if inbound.owned_by_peer(local) {
                let key = local.key();
                if !keep.contains(&key) {
                    gone.push(key);
                }
            }
        })
        .await?;
    for key in gone {
        match store.delete(&key).await {
            Ok(()) | Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn wire_forms_encode_once_per_version_and_tell_recreated_resources_apart() {
        let rewrites = Arc::new(AtomicUsize::new(0));
        let counter = rewrites.clone();
        let forms = WireForms::new(move |r: &Resource| {
            counter.fetch_add(1, Ordering::Relaxed);
            crate::rules::to_zone(r)
        });
        let mut r = Resource::new(
            ResourceType::MeshTimeout,
            "default",
            "t1",
            serde_json::json!({"targetRef": {"kind": "Mesh"}}),
        );
        r.meta.version = 1;
        r.meta.modification_time = model::Timestamp::now();
        let first = forms.encode(&r);
        assert_eq!(forms.encode(&r), first);
        assert_eq!(rewrites.load(Ordering::Relaxed), 1);

        r.meta.version = 2;
        r.spec = serde_json::json!({"targetRef": {"kind": "Mesh"}, "to": []});
        assert_ne!(forms.encode(&r).version, first.version);
        assert_eq!(rewrites.load(Ordering::Relaxed), 2);

        // Deleted and created again: version 1 again, but another modification time.
        r.meta.version = 1;
        r.meta.modification_time = model::Timestamp::from_unix_seconds(1);
        forms.encode(&r);
        assert_eq!(rewrites.load(Ordering::Relaxed), 3);

        forms.forget(&r.key());
        assert_eq!(forms.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn metered_streams_count_per_zone_and_measure_the_lag_to_the_ack() {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = KdsMetrics::register(&mut registry);
        let stats = StreamStats::metered(metrics, "zone-1");
        let kind = ResourceType::MeshTimeout;
        stats.sending(kind);
        stats.receiving(ResourceType::Dataplane);
        let changed_at = tokio::time::Instant::now();
        tokio::time::advance(Duration::from_millis(30)).await;
        stats.delta_sent(kind, 1, changed_at);
        stats.delta_sent(kind, 2, tokio::time::Instant::now());
        stats.peer_acknowledged(kind, "1");
        stats.peer_rejected(kind, "2");
        // An ACK for a nonce never sent (or already answered) counts, without a lag.
        stats.peer_acknowledged(kind, "1");
        stats.delta_received(ResourceType::Dataplane);
        stats.refused(ResourceType::Dataplane);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "kds_responses_sent_total{zone=\"zone-1\",resource_type=\"MeshTimeout\"} 2",
            "kds_responses_acked_total{zone=\"zone-1\",resource_type=\"MeshTimeout\"} 2",
            "kds_responses_nacked_total{zone=\"zone-1\",resource_type=\"MeshTimeout\"} 1",
            "kds_responses_received_total{zone=\"zone-1\",resource_type=\"Dataplane\"} 1",
            "kds_responses_refused_total{zone=\"zone-1\",resource_type=\"Dataplane\"} 1",
            "kds_sync_lag_seconds_count{zone=\"zone-1\"} 1",
            "kds_sync_lag_seconds_sum{zone=\"zone-1\"} 0.03",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        let totals = stats.per_type()[kind.name()];
        assert_eq!(totals.responses_sent, 2);
        assert_eq!(totals.responses_acknowledged, 2);
        assert_eq!(totals.responses_rejected, 1);
    }

    /// A sender over channels, as a stream would run it, for the `MeshTimeout` type.
    struct SenderUnderTest {
        store: SharedStore,
        requests: mpsc::Sender<Result<DeltaDiscoveryRequest, tonic::Status>>,
        responses: mpsc::Receiver<DeltaDiscoveryResponse>,
    }

    impl SenderUnderTest {
        async fn start() -> Self {
            Self::start_with(&[ResourceType::MeshTimeout]).await
        }

        /// A sender of `types`, each subscribed and its full state answered.
        async fn start_with(types: &[ResourceType]) -> Self {
            let store: SharedStore = Arc::new(store::MemoryStore::new());
            store
                .create(Resource::new(
                    ResourceType::Mesh,
                    "",
                    "default",
                    serde_json::json!({}),
                ))
                .await
                .unwrap();
            let mut s = Self::spawn(store, types, false);
            for kind in types {
                s.request(DeltaDiscoveryRequest {
                    type_url: kind.name().into(),
                    resource_names_subscribe: vec!["*".into()],
                    ..Default::default()
                })
                .await;
                let full = s.next().await;
                s.answer(&full, false).await;
            }
            s
        }

        /// A sender of `types` over `store`, nothing subscribed yet.
        fn spawn(store: SharedStore, types: &[ResourceType], streamed: bool) -> Self {
            let (requests, rx) = mpsc::channel(16);
            let (tx, responses) = mpsc::channel(16);
            let outbound = Outbound {
                wanted: Arc::new(|_: &Resource| true),
                wire: Arc::new(WireForms::new(|r: &Resource| r.clone())),
                refilter: None,
                changes: ChangeFeed::follow(&store, types),
                streamed_full_state: streamed,
            };
            tokio::spawn(run_sender(
                store.clone(),
                types.to_vec(),
                outbound,
                tokio_stream::wrappers::ReceiverStream::new(rx),
                tx,
                StreamLabel {
                    peer: "test".into(),
                    stats: Arc::default(),
                },
                DEFAULT_MAX_MESSAGE,
            ));
            SenderUnderTest {
                store,
                requests,
                responses,
            }
        }

        async fn request(&mut self, req: DeltaDiscoveryRequest) {
            self.requests.send(Ok(req)).await.unwrap();
        }

        async fn answer(&mut self, resp: &DeltaDiscoveryResponse, nack: bool) {
            self.request(DeltaDiscoveryRequest {
                type_url: resp.type_url.clone(),
                response_nonce: resp.nonce.clone(),
                error_detail: nack.then(|| Status {
                    code: 3,
                    message: "no".into(),
                    details: vec![],
                }),
                ..Default::default()
            })
            .await;
        }

        async fn write(&self, name: &str) {
            self.write_in("default", name).await;
        }

        async fn write_in(&self, mesh: &str, name: &str) {
            self.store
                .create(Resource::new(
                    ResourceType::MeshTimeout,
                    mesh,
                    name,
                    serde_json::json!({"targetRef": {"kind": "Mesh"}}),
                ))
                .await
                .unwrap();
        }

        async fn create_mesh(&self, name: &str) {
            self.store
                .create(Resource::new(
                    ResourceType::Mesh,
                    "",
                    name,
                    serde_json::json!({}),
                ))
                .await
                .unwrap();
        }

        async fn next(&mut self) -> DeltaDiscoveryResponse {
            tokio::time::timeout(Duration::from_secs(60), self.responses.recv())
                .await
                .expect("a delta")
                .expect("the sender runs")
        }

        /// Lets every task run until it waits on something, without moving the clock.
        async fn settle(&mut self) -> Option<DeltaDiscoveryResponse> {
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
            self.responses.try_recv().ok()
        }
    }

    fn names(resp: &DeltaDiscoveryResponse) -> Vec<&str> {
        let mut v: Vec<&str> = resp.resources.iter().map(|r| r.name.as_str()).collect();
        v.sort();
        v
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_sends_at_once_and_a_busy_one_gathers_until_the_peer_answers() {
        let mut s = SenderUnderTest::start().await;
        // Idle: the change goes without the clock moving at all.
        s.write("a").await;
        let first = s.settle().await.expect("sent at once, with no timer");
        assert_eq!(names(&first), ["a.default"]);

        // Unanswered: later changes wait, however long, and then leave as one delta.
        s.write("b").await;
        s.write("c").await;
        assert!(
            s.settle().await.is_none(),
            "nothing goes while a delta is unanswered"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(s.settle().await.is_none());
        s.answer(&first, false).await;
        let second = s.settle().await.expect("sent when the peer answered");
        assert_eq!(names(&second), ["b.default", "c.default"]);

        // A NACK is an answer too.
        s.write("d").await;
        assert!(s.settle().await.is_none());
        s.answer(&second, true).await;
        assert_eq!(
            names(&s.settle().await.expect("sent after the NACK")),
            ["d.default"]
        );
    }

    #[tokio::test]
    async fn a_streamed_full_state_comes_in_parts_the_last_of_which_ends_it() {
        let store: SharedStore = Arc::new(store::MemoryStore::new());
        let mesh = Resource::new(ResourceType::Mesh, "", "default", serde_json::json!({}));
        store.create(mesh).await.unwrap();
        let total = 2 * FULL_STATE_PART + 3;
        for i in 0..total {
            let r = Resource::new(
                ResourceType::MeshTimeout,
                "default",
                &format!("t-{i:05}"),
                serde_json::json!({"targetRef": {"kind": "Mesh"}}),
            );
            store.create(r).await.unwrap();
        }
        let mut s = SenderUnderTest::spawn(store, &[ResourceType::MeshTimeout], true);
        s.request(DeltaDiscoveryRequest {
            type_url: ResourceType::MeshTimeout.name().into(),
            resource_names_subscribe: vec!["*".into()],
            ..Default::default()
        })
        .await;
        let mut sent = Vec::new();
        for part in 0..3 {
            let resp = s.next().await;
            let continues = resp.system_version_info == FULL_STATE_CONTINUES;
            assert_eq!(continues, part < 2, "part {part}");
            sent.extend(resp.resources.iter().map(|r| r.name.clone()));
        }
        let expected: Vec<String> = (0..total).map(|i| format!("t-{i:05}.default")).collect();
        assert_eq!(sent, expected, "every resource once, in key order");
        // Sent as a single full state would be: a later change is a delta of that one alone.
        s.write("t-new").await;
        let delta = s.next().await;
        assert_eq!(names(&delta), ["t-new.default"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_meshs_resources_never_overtake_the_mesh() {
        let mut s =
            SenderUnderTest::start_with(&[ResourceType::Mesh, ResourceType::MeshTimeout]).await;
        s.create_mesh("a").await;
        let first = s.settle().await.expect("an idle stream sends at once");
        assert_eq!(names(&first), ["a."]);
        // Mesh "b" waits behind the unanswered "a"; its policy, of an idle type, waits too: the
        // peer would drop a policy whose mesh it lacks, and never be sent it again.
        s.create_mesh("b").await;
        s.write_in("b", "t").await;
        assert!(
            s.settle().await.is_none(),
            "the policy of mesh b went before mesh b"
        );
        s.answer(&first, false).await;
        let mesh = s.settle().await.expect("mesh b, once a is answered");
        assert_eq!((mesh.type_url.as_str(), names(&mesh)), ("Mesh", vec!["b."]));
        let policy = s
            .settle()
            .await
            .expect("then its policy, on the same stream");
        assert_eq!(names(&policy), ["t.b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_answering_delays_changes_by_the_patience_only() {
        let mut s = SenderUnderTest::start().await;
        s.write("a").await;
        let _unanswered = s.next().await;
        s.write("b").await;
        assert!(s.settle().await.is_none());
        let waited = tokio::time::Instant::now();
        let late = s.next().await;
        assert_eq!(names(&late), ["b.default"]);
        assert!(waited.elapsed() <= ANSWER_PATIENCE);
    }

    #[test]
    fn responses_stay_within_the_budget_by_their_real_encoding() {
        // Resources whose names, versions and type URLs are a large part of their size, as
        // small policies are: estimating from the payload alone overshot the budget.
        let resource = |n: usize| XdsResource {
            name: format!("timeout-{n}-0123456789abcdef.default"),
            version: format!("{n:064}"),
            resource: Some(envoy_types::pb::google::protobuf::Any {
                type_url: "type.googleapis.com/kuma.mesh.v1alpha1.KumaResource".into(),
                value: vec![7; 40],
            }),
            ..Default::default()
        };
        let budget = 16 * 1024;
        let removed: Vec<String> = (0..200).map(|n| format!("gone-{n}.default")).collect();
        let mut refused = vec![];
        let mut huge = resource(0);
        huge.resource.as_mut().unwrap().value = vec![0; budget];
        let mut all: Vec<XdsResource> = (1..=2000).map(resource).collect();
        all.insert(5, huge);
        let split = batches(all, &removed, budget, |r, _| refused.push(r.name.clone()));
        assert_eq!(refused, ["timeout-0-0123456789abcdef.default"]);
        assert!(split.len() > 10);
        assert_eq!(split.iter().map(Vec::len).sum::<usize>(), 2000);
        let last = split.len() - 1;
        for (i, batch) in split.into_iter().enumerate() {
            let resp = DeltaDiscoveryResponse {
                resources: batch,
                removed_resources: if i == last { removed.clone() } else { vec![] },
                ..Default::default()
            };
            assert!(
                prost::Message::encoded_len(&resp) <= budget,
                "response {i} over budget"
            );
        }
    }

    #[test]
    fn delta_sends_what_changed_and_removes_what_went_under_its_sent_name() {
        let wire = |name: &str, version: &str| XdsResource {
            name: name.into(),
            version: version.into(),
            ..Default::default()
        };
        let key = |n: &str| ResourceKey::new(ResourceType::MeshTimeout, "default", n);
        let mut sent = SentState::new();
        sent.insert(key("same"), ("same-h.default".into(), "v1".into()));
        sent.insert(key("edited"), ("edited-h.default".into(), "v1".into()));
        sent.insert(key("gone"), ("gone-h.default".into(), "v1".into()));
        let (changed, removed) = delta(
            &mut sent,
            vec![
                (key("same"), Some(wire("same-h.default", "v1"))),
                (key("edited"), Some(wire("edited-h.default", "v2"))),
                (key("gone"), None),
                (key("never-sent"), None),
                (key("new"), Some(wire("new-h.default", "v1"))),
            ],
        );
        let names: Vec<_> = changed.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["edited-h.default", "new-h.default"]);
        assert_eq!(removed, ["gone-h.default"]);
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[&key("edited")].1, "v2");
    }
}
