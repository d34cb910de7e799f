//! The service controller at scale, on the memory store: 10,000 Dataplanes of 10,000 services
//! in one mesh become 10,000 MeshServices with a VIP and a hostname each (target: all in
//! <= 5 s), then one more Dataplane's service appears with its VIP and hostname, 100 times
//! (the control plane's share of a new service being resolvable). Prints the figures:
//! `cargo bench -p zone --bench services` (`-- --services N` for another size).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use model::{Resource, ResourceType};
use serde_json::json;
use store::{ListQuery, MemoryStore, Operation, SharedStore};
use tokio::sync::watch;
use zone::services::{ServicesConfig, run};

fn dataplane(n: usize) -> Resource {
    Resource::new(
        ResourceType::Dataplane,
        "default",
        &format!("svc-{n}-1"),
        json!({"networking": {"address": format!("10.{}.{}.{}", n / 65536, (n / 256) % 256, n % 256),
            "inbound": [{"port": 8080, "tags": {"kuma.io/service": format!("svc-{n}"), "kuma.io/protocol": "http"}}]}}),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn main() {
    // `cargo test` runs this too (without `--bench`): a quick smoke run then.
    let benching = std::env::args().any(|a| a == "--bench");
    let services: usize = std::env::args()
        .skip_while(|a| a != "--services")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(if benching { 10_000 } else { 200 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let store: SharedStore = Arc::new(MemoryStore::new());
        store
            .create(Resource::new(ResourceType::Mesh, "", "default", json!({"meshServices": {"mode": "Exclusive"}})))
            .await
            .expect("mesh");
        let mut generator = Resource::new(
            ResourceType::HostnameGenerator,
            "",
            "local-universal-mesh-service",
            json!({"template": "{{ .DisplayName }}.svc.mesh.local",
                   "selector": {"meshService": {"matchLabels": {"kuma.io/origin": "zone"}}}}),
        );
        generator.meta.labels.insert("kuma.io/origin".into(), "zone".into());
        store.create(generator).await.expect("generator");
        for n in 0..services {
            store.create(dataplane(n)).await.expect("dataplane");
        }
        let mut events = store.subscribe();
        let (_stop_tx, stop) = watch::channel(false);
        let config = ServicesConfig {
            zone: "zone-1".into(),
            cidrs: ["241.0.0.0/8".into(), "242.0.0.0/8".into(), "243.0.0.0/8".into()],
            generate: true,
            deletion_grace_period: Duration::from_secs(3600),
        };
        let started = Instant::now();
        tokio::spawn(run(store.clone(), config, stop));
        let mut created = 0;
        while created < services {
            match events.recv().await {
                Ok(ev) if ev.key.kind == ResourceType::MeshService && ev.op == Operation::Create => created += 1,
                Ok(_) => {}
                Err(e) => panic!("events: {e}"),
            }
        }
        let all_in = started.elapsed();
        let listed = store
            .list(&ListQuery::all(ResourceType::MeshService))
            .await
            .expect("list")
            .items;
        let complete = listed
            .iter()
            .filter(|r| {
                r.status.as_ref().is_some_and(|s| {
                    s.pointer("/vips/0/ip").is_some() && s.pointer("/addresses/0/hostname").is_some()
                })
            })
            .count();
        assert_eq!(complete, services, "every MeshService has a VIP and a hostname");
        println!(
            "{services} MeshServices generated with VIPs and hostnames in {:.3} s (target <= 5 s)",
            all_in.as_secs_f64()
        );

        let mut latencies = Vec::new();
        for n in services..services + 100 {
            let mut events = store.subscribe();
            let t = Instant::now();
            store.create(dataplane(n)).await.expect("dataplane");
            let name = format!("svc-{n}");
            loop {
                match events.recv().await {
                    Ok(ev) if ev.key.kind == ResourceType::MeshService && ev.key.name == name => break,
                    Ok(_) => {}
                    Err(e) => panic!("events: {e}"),
                }
            }
            latencies.push(t.elapsed());
        }
        latencies.sort();
        println!(
            "one more service beside {services}: Dataplane written -> its MeshService stored with VIP and hostname: \
             p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (100 samples)",
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        );
    });
}
