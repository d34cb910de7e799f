#![allow(clippy::unwrap_used)]
//! kuma-dp's DNS proxy with real Envoy: a sidecar behind a transparent proxy resolves the
//! mesh's generated MeshServices' hostnames (`backend.svc.mesh.local`) to their VIPs, from the
//! records the control plane serves through Envoy's dynamic configuration listener; a new
//! service resolves soon after its first Dataplane registers; other names go to the host's
//! resolver. Prints the figures of issue 22's DNS targets (new service resolvable, answer
//! latency at 1,000 records). Needs `envoy`; outside CI the test is skipped, loudly.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use e2e::proxies::{Cp, ProxyType, envoy, within};
use e2e::{ControlPlane, free_port};
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::json;
use tokio::time::Instant;

/// One A question to the proxy at `port`: the answer's first address, or the response code.
fn resolve(port: u16, name: &str) -> Result<Option<Ipv4Addr>, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(6)))
        .unwrap();
    let mut query = Message::new();
    query
        .set_id(7)
        .set_message_type(MessageType::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    socket
        .send_to(&query.to_vec().unwrap(), ("127.0.0.1", port))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).map_err(|e| e.to_string())?;
    let reply = Message::from_vec(&buf[..n]).map_err(|e| e.to_string())?;
    if reply.response_code() != ResponseCode::NoError {
        return Err(format!("{}", reply.response_code()));
    }
    Ok(reply.answers().iter().find_map(|a| match a.data() {
        RData::A(a) => Some(a.0),
        _ => None,
    }))
}

fn dataplane(env: &Cp, name: &str, service: &str) {
    env.put(
        &format!("/meshes/default/dataplanes/{name}"),
        json!({"type": "Dataplane", "name": name, "mesh": "default",
            "networking": {"address": "10.1.0.1", "inbound": [
                {"port": 8080, "tags": {"kuma.io/service": service, "kuma.io/protocol": "http"}}]}}),
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[test]
fn sidecars_resolve_mesh_service_hostnames_through_kuma_dp() {
    let Some(envoy) = envoy("sidecars_resolve_mesh_service_hostnames_through_kuma_dp") else {
        return;
    };
    let mut cp = ControlPlane::start("dns", &[]);
    cp.wait_ready(Duration::from_secs(60));
    let env = Cp::of(&cp, envoy);
    env.put(
        "/meshes/default",
        json!({"type": "Mesh", "name": "default", "meshServices": {"mode": "Exclusive"}}),
    );
    dataplane(&env, "backend-1", "backend");

    let dns_port = free_port();
    let yaml = format!(
        "type: Dataplane\nname: {{{{ name }}}}\nmesh: default\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    servicePort: {}\n    tags:\n      kuma.io/service: client\n  transparentProxying:\n    redirectPortInbound: {}\n    redirectPortOutbound: {}\n",
        free_port(),
        free_port(),
        // Its passthrough listeners bind on the host: ports no one else holds.
        free_port(),
        free_port()
    );
    let port_arg = dns_port.to_string();
    let client = env.kuma_dp_with(
        ProxyType::Dataplane,
        "client-1",
        &yaml,
        &env.token("client-1", "default"),
        &["--dns-proxy-port".as_ref(), port_arg.as_ref()],
    );
    let logs = || format!("{}\n--- kuma-dp client-1:\n{}", cp.logs(), client.logs());

    within(
        Duration::from_secs(30),
        "backend.svc.mesh.local resolves to backend's VIP",
        || resolve(dns_port, "backend.svc.mesh.local.") == Ok(Some(Ipv4Addr::new(241, 0, 0, 1))),
        logs,
    );
    // The client's own service is named too, with the next VIP.
    assert_eq!(
        resolve(dns_port, "client.svc.mesh.local."),
        Ok(Some(Ipv4Addr::new(241, 0, 0, 2)))
    );
    // A name outside the mesh is the host's resolver's to answer (or to fail): never a hang,
    // and never one of the mesh's VIPs.
    if let Ok(Some(ip)) = resolve(dns_port, "nothing.invalid.") {
        assert!(ip.octets()[0] != 241, "{ip}");
    }

    // A new service: from its first Dataplane's registration to resolvable, 20 times.
    let mut took = Vec::new();
    for n in 0..20 {
        let service = format!("api-{n}");
        let start = Instant::now();
        dataplane(&env, &format!("{service}-1"), &service);
        let host = format!("{service}.svc.mesh.local.");
        within(
            Duration::from_secs(10),
            "a new service resolvable",
            || matches!(resolve(dns_port, &host), Ok(Some(_))),
            logs,
        );
        took.push(start.elapsed());
    }
    took.sort();
    println!(
        "new service resolvable through kuma-dp after its Dataplane's registration: p50 {:.1} ms, p99 {:.1} ms (20 samples; target p99 <= 100 ms)",
        percentile(&took, 0.5).as_secs_f64() * 1e3,
        percentile(&took, 0.99).as_secs_f64() * 1e3
    );

    // 1,000 records: answers stay local and fast.
    for n in 0..1000 {
        dataplane(&env, &format!("bulk-{n}-1"), &format!("bulk-{n}"));
    }
    within(
        Duration::from_secs(60),
        "1,000 more names resolvable",
        || matches!(resolve(dns_port, "bulk-999.svc.mesh.local."), Ok(Some(_))),
        logs,
    );
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut latencies = Vec::new();
    for n in 0..2000 {
        let mut query = Message::new();
        query
            .set_id(n as u16)
            .set_message_type(MessageType::Query)
            .add_query(Query::query(
                Name::from_ascii(format!("bulk-{}.svc.mesh.local.", n % 1000)).unwrap(),
                RecordType::A,
            ));
        let bytes = query.to_vec().unwrap();
        let start = Instant::now();
        socket.send_to(&bytes, ("127.0.0.1", dns_port)).unwrap();
        let mut buf = [0u8; 512];
        socket.recv(&mut buf).unwrap();
        latencies.push(start.elapsed());
    }
    latencies.sort();
    println!(
        "kuma-dp DNS answers with 1,000+ records: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (2,000 queries; target p99 <= 1 ms)",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
}
