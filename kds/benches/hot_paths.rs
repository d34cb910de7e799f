//! Micro-benchmarks of the KDS hot paths, so a regression shows in `cargo bench -p kds`:
//! encoding and decoding resources (JSON-spec and legacy protobuf types), KDS name hashing,
//! the per-change delta against what a peer holds, and the shared wire-form cache.

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

criterion_group!(benches, codec_paths, naming, deltas, wire_cache);
criterion_main!(benches);
