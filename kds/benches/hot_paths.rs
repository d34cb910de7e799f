//! Micro-benchmarks of the KDS hot paths, so a regression shows in `cargo bench -p kds`:
//! encoding and decoding resources (JSON-spec and legacy protobuf types), KDS name hashing,
//! the per-change delta against what a peer holds, and the shared wire-form cache; and the
//! whole send path in process: a store write on one side until ten receivers (the real sender
//! and receiver halves of KDS, over channels instead of gRPC) have applied it to their stores.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use kds::sync::{SentState, WireForms, delta};
use kds::{codec, rules};
use model::{Resource, ResourceKey, ResourceType, Timestamp};
use serde_json::json;

fn timeout(n: usize) -> Resource {
    let mut r = Resource::new(
        ResourceType::MeshTimeout,
        "default",
        &format!("timeout-{n}"),
        json!({
            "targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "MeshService", "name": format!("backend-{n}")},
                    "default": {"idleTimeout": "20s", "http": {"requestTimeout": "2s"}}}]
        }),
    );
    r.meta.version = 1;
    r.meta.modification_time = Timestamp::now();
    r
}

fn dataplane() -> Resource {
    Resource::new(
        ResourceType::Dataplane,
        "default",
        "web-1",
        json!({"networking": {"address": "10.1.0.1",
            "inbound": [{"port": 80, "servicePort": 8080, "tags": {"kuma.io/service": "web", "kuma.io/protocol": "http"}}],
            "outbound": [{"port": 10001, "tags": {"kuma.io/service": "backend"}}]}}),
    )
}

fn codec_paths(c: &mut Criterion) {
    let policy = timeout(1);
    let dp = dataplane();
    c.bench_function("encode MeshTimeout (JSON spec)", |b| {
        b.iter(|| codec::to_xds_resource(black_box(&policy)))
    });
    c.bench_function("encode Dataplane (Kuma protobuf)", |b| {
        b.iter(|| codec::to_xds_resource(black_box(&dp)))
    });
    let policy_wire = codec::to_xds_resource(&policy);
    let dp_wire = codec::to_xds_resource(&dp);
    c.bench_function("decode MeshTimeout (JSON spec)", |b| {
        b.iter(|| codec::from_xds_resource(ResourceType::MeshTimeout, black_box(&policy_wire)))
    });
    c.bench_function("decode Dataplane (Kuma protobuf)", |b| {
        b.iter(|| codec::from_xds_resource(ResourceType::Dataplane, black_box(&dp_wire)))
    });
}

fn naming(c: &mut Criterion) {
    c.bench_function("hashed_name", |b| {
        b.iter(|| {
            model::name::hashed_name(
                black_box("default"),
                black_box("default-timeout-zone-1"),
                Some("zone-1"),
                None,
            )
        })
    });
    let policy = timeout(1);
    c.bench_function("to_zone (rename + labels)", |b| {
        b.iter(|| rules::to_zone(black_box(&policy)))
    });
}

fn deltas(c: &mut Criterion) {
    // A peer holding 1,000 policies; a burst touches 100 of them: 50 edited, 40 unchanged,
    // 10 deleted.
    let policies: Vec<Resource> = (0..1000).map(timeout).collect();
    let mut held = SentState::new();
    for r in &policies {
        let x = codec::to_xds_resource(r);
        held.insert(r.key(), (x.name.clone(), x.version.clone()));
    }
    let burst: Vec<(ResourceKey, Option<_>)> = policies
        .iter()
        .take(100)
        .enumerate()
        .map(|(i, r)| {
            let wire = match i {
                0..50 => {
                    let mut edited = r.clone();
                    edited.spec["to"][0]["default"]["idleTimeout"] = json!("30s");
                    Some(codec::to_xds_resource(&edited))
                }
                50..90 => Some(codec::to_xds_resource(r)),
                _ => None,
            };
            (r.key(), wire)
        })
        .collect();
    c.bench_function("delta: 100 changes against 1,000 held", |b| {
        b.iter_batched(
            || (held.clone(), burst.clone()),
            |(mut sent, current)| {
                let out = delta(&mut sent, current);
                (sent, out) // dropped outside the timing
            },
            BatchSize::SmallInput,
        )
    });
}

fn wire_cache(c: &mut Criterion) {
    let forms = WireForms::new(rules::to_zone);
    let policy = timeout(1);
    forms.encode(&policy);
    c.bench_function("wire form, cached (per extra zone)", |b| {
        b.iter(|| forms.encode(black_box(&policy)))
    });
    c.bench_function("wire form, uncached (rename + encode)", |b| {
        b.iter(|| codec::to_xds_resource(&rules::to_zone(black_box(&policy))))
    });
}

/// Takes everything, as a zone takes what global sends.
struct TakeAll;

impl kds::sync::Inbound for TakeAll {
    fn accept(&self, r: Resource) -> Result<Resource, rules::Refusal> {
        Ok(r)
    }
    fn owned_by_peer(&self, _: &Resource) -> bool {
        true
    }
}

fn send_path(c: &mut Criterion) {
    use std::sync::Arc;
    use store::{MemoryStore, SharedStore};
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;

    const ZONES: usize = 10;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let origin: SharedStore = Arc::new(MemoryStore::new());
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<()>();
    rt.block_on(async {
        let mesh = Resource::new(ResourceType::Mesh, "", "default", json!({}));
        origin.create(mesh.clone()).await.expect("mesh");
        origin.create(timeout(0)).await.expect("policy");
        let wire = Arc::new(WireForms::new(|r: &Resource| r.clone()));
        let changes = kds::sync::ChangeFeed::follow(
            &origin,
            &[ResourceType::Mesh, ResourceType::MeshTimeout],
        );
        for zone in 0..ZONES {
            let local: SharedStore = Arc::new(MemoryStore::new());
            let (to_receiver, responses) = mpsc::channel(64);
            let (to_sender, requests) = mpsc::channel(64);
            let outbound = kds::sync::Outbound {
                wanted: Arc::new(|_: &Resource| true),
                wire: wire.clone(),
                refilter: None,
                changes: changes.clone(),
                streamed_full_state: true,
            };
            let types = vec![ResourceType::Mesh, ResourceType::MeshTimeout];
            let label = |peer: String| kds::sync::StreamLabel {
                peer,
                stats: Arc::default(),
            };
            tokio::spawn(kds::sync::run_sender(
                origin.clone(),
                types.clone(),
                outbound,
                ReceiverStream::new(requests),
                to_receiver,
                label(format!("zone-{zone}")),
                kds::sync::DEFAULT_MAX_MESSAGE,
            ));
            let mut events = local.subscribe();
            tokio::spawn(kds::sync::run_receiver(
                local.clone(),
                types,
                Arc::new(TakeAll),
                format!("zone-{zone}"),
                ReceiverStream::new(responses),
                to_sender,
                label("origin".into()),
            ));
            let arrived_tx = arrived_tx.clone();
            tokio::spawn(async move {
                while let Ok(ev) = events.recv().await {
                    if ev.key.kind == ResourceType::MeshTimeout {
                        let _ = arrived_tx.send(());
                    }
                }
            });
        }
        // Every zone holds the first version before the timing starts.
        for _ in 0..ZONES {
            arrived.recv().await;
        }
    });
    let mut n = 0u64;
    c.bench_function("send path: a write until 10 receivers applied it", |b| {
        b.iter(|| {
            rt.block_on(async {
                n += 1;
                let mut r = origin.get(&timeout(0).key()).await.expect("the policy");
                r.spec["to"][0]["default"]["idleTimeout"] = json!(format!("{n}s"));
                origin.update(r).await.expect("update");
                for _ in 0..ZONES {
                    arrived.recv().await;
                }
            })
        })
    });
}

criterion_group!(benches, codec_paths, naming, deltas, wire_cache, send_path);
criterion_main!(benches);
