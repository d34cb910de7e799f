#![allow(clippy::unwrap_used)]
//! Validators see input from outside the process: none may panic on any JSON. This walks
//! every type's validator over seeded random mutations of realistic documents.

use model::{Resource, ResourceType};
use serde_json::{Map, Value, json};

/// xorshift64*: deterministic, so a failure reproduces from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const STRINGS: &[&str] = &[
    "",
    "Mesh",
    "MeshService",
    "MeshSubset",
    "Dataplane",
    "MeshHTTPRoute",
    "MeshGateway",
    "Allow",
    "Deny",
    "5s",
    "-1s",
    "99999999999999h",
    "1.5.5s",
    "ü",
    "*",
    "*.*",
    "kuma.io/service",
    "{{",
    "}}",
    "{{ .Name }}",
    "0.0.0.0/33",
    "::1",
    "http",
    "HTTP",
    "TCP",
    "Exact",
    "PathPrefix",
    "/",
    "RegularExpression",
    "(",
    "RoundRobin",
    "RingHash",
    "Maglev",
    "LeastRequest",
    "Random",
    "None",
    "Any",
    "AnyExcept",
    "Only",
    "10000%",
    "abc",
    "a.b.c.d",
    "999999",
    "-5",
    "TLS13",
    "TLSAuto",
];

fn random_value(rng: &mut Rng, depth: u32) -> Value {
    match rng.below(if depth > 3 { 5 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => json!(rng.next() as i64 % 70000 - 100),
        3 => json!((rng.next() % 1000) as f64 / 7.0),
        4 => Value::String(STRINGS[rng.below(STRINGS.len() as u64) as usize].to_string()),
        5 => Value::Array(
            (0..rng.below(3))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let mut m = Map::new();
            for _ in 0..rng.below(3) {
                let k = STRINGS[rng.below(STRINGS.len() as u64) as usize].to_string();
                m.insert(k, random_value(rng, depth + 1));
            }
            Value::Object(m)
        }
    }
}

/// Replaces, removes or adds one node somewhere in `v`.
fn mutate(v: &mut Value, rng: &mut Rng, depth: u32) {
    let descend = depth < 6 && rng.below(3) != 0;
    match v {
        Value::Object(m) if descend && !m.is_empty() => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = &keys[rng.below(keys.len() as u64) as usize];
            match rng.below(4) {
                0 => {
                    m.remove(k);
                }
                1 => {
                    m.insert(format!("{k}x"), random_value(rng, depth));
                }
                _ => {
                    if let Some(child) = m.get_mut(k) {
                        mutate(child, rng, depth + 1);
                    }
                }
            }
        }
        Value::Array(a) if descend && !a.is_empty() => {
            let i = rng.below(a.len() as u64) as usize;
            if rng.below(4) == 0 {
                let dup = a[i].clone();
                a.push(dup);
            } else {
                mutate(&mut a[i], rng, depth + 1);
            }
        }
        _ => *v = random_value(rng, depth),
    }
}

fn seeds() -> Vec<Value> {
    let to = json!([{"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {
        "idleTimeout": "5s", "connectionTimeout": "1s", "http": {"requestTimeout": "2s", "numRetries": 3},
        "action": "Allow", "loadBalancer": {"type": "RoundRobin"},
        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                   "default": {"backendRefs": [{"kind": "MeshService", "name": "b", "weight": 1}]}}]}}]);
    let mut docs = Vec::new();
    for kind in ResourceType::all() {
        let d = kind.descriptor();
        let mut doc = json!({"type": d.name, "name": "x", "mesh": "default"});
        match d.layout {
            model::Layout::Spec => {
                doc["spec"] = json!({"targetRef": {"kind": "Mesh"}, "to": to, "from": to, "rules": to,
                    "template": "{{ .Name }}.mesh", "ports": [{"port": 80, "appProtocol": "http"}],
                    "selector": {"meshService": {"matchLabels": {"a": "b"}}},
                    "match": {"type": "HostnameGenerator", "port": 443, "protocol": "tcp"},
                    "endpoints": [{"address": "example.com", "port": 443}]});
            }
            model::Layout::TopLevel => {
                doc["networking"] = json!({"address": "10.0.0.1", "port": 10001,
                    "inbound": [{"port": 80, "tags": {"kuma.io/service": "web"}}],
                    "outbound": [{"port": 81, "tags": {"kuma.io/service": "db"}}]});
                doc["mtls"] = json!({"enabledBackend": "ca", "backends": [{"name": "ca", "type": "builtin"}]});
                doc["data"] = json!("YQ==");
                doc["selectors"] = json!([{"match": {"kuma.io/service": "gw"}}]);
                doc["conf"] =
                    json!({"listeners": [{"port": 80, "protocol": "HTTP", "hostname": "*"}]});
            }
        }
        docs.push(doc);
    }
    docs
}

#[test]
fn validators_never_panic() {
    let docs = seeds();
    let mut rng = Rng(0x9E3779B97F4A7C15);
    let mut checked = 0;
    for round in 0..60 {
        for doc in &docs {
            let mut v = doc.clone();
            for _ in 0..=(round % 6) {
                mutate(&mut v, &mut rng, 0);
            }
            if let Ok(r) = Resource::from_value(v.clone()) {
                let _ = r.validate();
                let _ = r.to_value();
            }
            // Each spec validator directly too, with the raw mutated value.
            for kind in ResourceType::all() {
                let _ = (kind.descriptor().validate)(&v);
                if let Some(spec) = v.get("spec") {
                    let _ = (kind.descriptor().validate)(spec);
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 1000);
}
