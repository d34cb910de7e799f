//! Writes the seed corpus, `fuzz/corpus/<target>/`, from the repository's own examples: the
//! resources in docs/ and model's test data, KDS and ADS messages encoded from them as the
//! control plane and Envoy send them, bootstrap requests as kuma-dp sends them, and tokens
//! signed with the fixed key. Run from the repository root after a fuzz build:
//! `fuzz/target/<triple>/release/seed` (the corpus is committed; CI does not run this).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest,
};
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use envoy_types::pb::google::rpc::Status;
use model::{Resource, ResourceType};
use prost::Message;
use serde_json::{Value, json};
use xds_wire::{CLUSTER, ENDPOINTS, LISTENER, SECRET};

// A fuzz build instruments every crate, so this program needs libFuzzer's coverage callbacks
// too; its own `main` stands in for libFuzzer's.
use libfuzzer_sys as _;

/// Envoy's type URLs, as `xds::wire` names them (not a dependency of the fuzz crate).
mod xds_wire {
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const ENDPOINTS: &str =
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
}

struct Corpus {
    root: PathBuf,
}

impl Corpus {
    fn write(&self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        std::fs::write(dir.join(name), bytes).expect("seed file");
    }
}

/// One example resource: its text as written, and where it came from.
struct Example {
    source: String,
    text: String,
    value: Value,
}

fn yaml_blocks(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_start().starts_with("```yaml") => current = Some(String::new()),
            Some(block) if line.trim_start().starts_with("```") => {
                out.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    out
}

fn split_documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(d) = docs.last_mut() {
            d.push_str(line);
            d.push('\n');
        }
    }
    docs.into_iter()
        .filter(|d| d.lines().any(|l| l.starts_with("type:")))
        .collect()
}

fn examples(repo: &Path) -> Vec<Example> {
    let mut texts: Vec<(String, String)> = Vec::new();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo.join("docs"))
        .expect("docs/")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    for path in docs {
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let markdown = std::fs::read_to_string(&path).expect("doc");
        for (i, block) in yaml_blocks(&markdown).into_iter().enumerate() {
            for (j, doc) in split_documents(&block).into_iter().enumerate() {
                texts.push((format!("docs-{stem}-{i}-{j}"), doc));
            }
        }
    }
    let services =
        std::fs::read_to_string(repo.join("model/tests/data/kuma-docs-services.yaml")).unwrap();
    for (i, doc) in split_documents(&services).into_iter().enumerate() {
        texts.push((format!("kuma-docs-services-{i}"), doc));
    }
    for r in fuzz::baseline(None) {
        texts.push((
            format!("baseline-{}", r.meta.name),
            model::resource::to_yaml(&strip_times(r.to_value())),
        ));
    }
    for (name, text) in [
        (
            "secret",
            "type: Secret\nname: tls-cert\nmesh: default\ndata: dGVzdA==\n",
        ),
        (
            "global-secret",
            "type: GlobalSecret\nname: ca-bundle\ndata: dGVzdA==\n",
        ),
        ("zone", "type: Zone\nname: zone-2\nenabled: true\n"),
        (
            "mesh-mtls",
            "type: Mesh\nname: secure\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n",
        ),
    ] {
        texts.push((format!("extra-{name}"), text.to_string()));
    }
    let mut out: Vec<Example> = texts
        .into_iter()
        .filter_map(|(source, text)| {
            // Templated examples (`{{ name }}`) are kumactl's; they are not resources yet.
            let value = model::resource::parse_resource_text(&text).ok()?;
            value.get("type")?.as_str()?;
            Some(Example {
                source,
                text,
                value,
            })
        })
        .collect();
    // Every field Kuma 2.14 has, per type (as model/tests/kuma_shapes.rs builds them).
    let shapes: serde_json::Map<String, Value> = serde_json::from_str(
        &std::fs::read_to_string(repo.join("model/tests/data/kuma-2.14-shapes.json")).unwrap(),
    )
    .unwrap();
    for (kind, shape) in shapes {
        let mut obj = serde_json::Map::new();
        obj.insert("type".into(), json!(kind));
        obj.insert("name".into(), json!("kuma-shape"));
        if !matches!(kind.as_str(), "ZoneIngress" | "ZoneEgress" | "Mesh") {
            obj.insert("mesh".into(), json!("default"));
        }
        if let Some(spec) = shape.get("spec") {
            obj.insert("spec".into(), spec.clone());
        }
        if let Some(Value::Object(inline)) = shape.get("inline") {
            obj.extend(inline.clone());
        }
        let value = Value::Object(obj);
        out.push(Example {
            source: format!("kuma-shape-{kind}"),
            text: serde_json::to_string_pretty(&value).unwrap(),
            value,
        });
    }
    out
}

fn strip_times(mut v: Value) -> Value {
    if let Value::Object(obj) = &mut v {
        obj.remove("creationTime");
        obj.remove("modificationTime");
    }
    v
}

fn type_index(kind: ResourceType) -> u8 {
    let index = ResourceType::all().position(|k| k == kind).unwrap();
    u8::try_from(index).unwrap()
}

fn api_resource(corpus: &Corpus, examples: &[Example]) {
    for e in examples {
        let kind = ResourceType::from_name(e.value["type"].as_str().unwrap()).unwrap();
        let name = e.value["name"].as_str().unwrap_or("x");
        let mesh = e.value["mesh"].as_str().unwrap_or("default");
        for (ext, body) in [
            ("yaml", e.text.clone()),
            ("json", serde_json::to_string(&e.value).unwrap()),
        ] {
            let mut seed = vec![type_index(kind)];
            seed.extend_from_slice(format!("{name}\n{mesh}\n{body}").as_bytes());
            corpus.write("api_resource", &format!("{}.{ext}", e.source), &seed);
        }
    }
}

fn kumactl_yaml(corpus: &Corpus, repo: &Path, examples: &[Example]) {
    for e in examples {
        corpus.write(
            "kumactl_yaml",
            &format!("{}.yaml", e.source),
            e.text.as_bytes(),
        );
    }
    // Whole multi-document files, as `kumactl apply -f` takes them.
    let services =
        std::fs::read_to_string(repo.join("model/tests/data/kuma-docs-services.yaml")).unwrap();
    corpus.write(
        "kumactl_yaml",
        "kuma-docs-services-all.yaml",
        services.as_bytes(),
    );
    let all: Vec<&str> = examples.iter().take(12).map(|e| e.text.as_str()).collect();
    corpus.write(
        "kumactl_yaml",
        "docs-first-12.yaml",
        all.join("---\n").as_bytes(),
    );
    // Templates with `-v`, as docs/dataplane.md and quickstart use them.
    let dataplane = std::fs::read_to_string(repo.join("docs/dataplane.md")).unwrap();
    for (i, block) in yaml_blocks(&dataplane)
        .iter()
        .filter(|b| b.contains("{{"))
        .enumerate()
    {
        let seed = format!("name=backend-1\0{block}");
        corpus.write(
            "kumactl_yaml",
            &format!("docs-dataplane-template-{i}.yaml"),
            seed.as_bytes(),
        );
    }
    let templated = "type: Dataplane\nmesh: {{ mesh }}\nname: {{name}}\nnetworking:\n  address: {{ address }}\n  inbound:\n  - port: {{ port }}\n    tags:\n      kuma.io/service: {{ service }}\n---\ntype: HostnameGenerator\nname: gen\nspec:\n  selector:\n    meshService:\n      matchLabels:\n        kuma.io/origin: zone\n  template: \"{{ .DisplayName }}.{{ label \\\"team\\\" }}.{{ suffix }}\"\n";
    corpus.write(
        "kumactl_yaml",
        "template-vars.yaml",
        format!("mesh=default\nname=web-1\naddress=10.0.0.9\nport=8080\nservice=web\nsuffix=mesh.local\0{templated}").as_bytes(),
    );
    corpus.write(
        "kumactl_yaml",
        "template-json.json",
        b"name=web-1\0{\"type\": \"Mesh\", \"name\": \"{{ name }}\"}",
    );
}

/// The wire form of `r` as its sender sends it: global's to a zone, or a zone's to global.
fn kds_resource(
    r: &Resource,
    to_zone: bool,
) -> envoy_types::pb::envoy::service::discovery::v3::Resource {
    let mut r = r.clone();
    if to_zone {
        model::labels::compute(&mut r, None);
        kds::codec::to_xds_resource(&kds::rules::to_zone(&r))
    } else {
        model::labels::compute(&mut r, Some(fuzz::ZONE));
        kds::codec::to_xds_resource(&kds::rules::to_global(&r, fuzz::ZONE))
    }
}

fn kds_delta(corpus: &Corpus, examples: &[Example]) {
    let resources: Vec<Resource> = examples
        .iter()
        .filter_map(|e| {
            let r = Resource::from_value(e.value.clone()).ok()?;
            r.validate().ok()?;
            Some(r)
        })
        .collect();
    let mesh = fuzz::parse_resource("type: Mesh\nname: default\n");
    for (mode, to_zone, consumes) in [
        (
            0u8,
            true,
            kds::rules::zone_consumes as fn(ResourceType) -> bool,
        ),
        (1u8, false, kds::rules::global_consumes),
    ] {
        let mut by_type: BTreeMap<ResourceType, Vec<&Resource>> = BTreeMap::new();
        for r in &resources {
            if consumes(r.kind) {
                by_type.entry(r.kind).or_default().push(r);
            }
        }
        for (kind, rs) in &by_type {
            let response = DeltaDiscoveryResponse {
                type_url: kind.name().into(),
                resources: rs
                    .iter()
                    .take(4)
                    .map(|r| kds_resource(r, to_zone))
                    .collect(),
                nonce: "1".into(),
                ..Default::default()
            };
            let mut messages = Vec::new();
            // The mesh first, as senders order them, so mesh-scoped resources are applied.
            if to_zone && *kind != ResourceType::Mesh {
                messages.push(
                    DeltaDiscoveryResponse {
                        type_url: ResourceType::Mesh.name().into(),
                        resources: vec![kds_resource(&mesh, true)],
                        nonce: "1".into(),
                        ..Default::default()
                    }
                    .encode_to_vec(),
                );
            }
            messages.push(response.encode_to_vec());
            let mut seed = vec![mode];
            seed.extend(fuzz::join_messages(&messages));
            corpus.write("kds_delta", &format!("{mode}-{}", kind.name()), &seed);
        }
        // A full state split in two, then a delta removing what it brought.
        if let Some((kind, rs)) = by_type.iter().find(|(_, rs)| rs.len() > 1) {
            let first = DeltaDiscoveryResponse {
                type_url: kind.name().into(),
                resources: vec![kds_resource(rs[0], to_zone)],
                nonce: "1".into(),
                system_version_info: kds::sync::FULL_STATE_CONTINUES.into(),
                ..Default::default()
            };
            let second = DeltaDiscoveryResponse {
                type_url: kind.name().into(),
                resources: vec![kds_resource(rs[1], to_zone)],
                nonce: "2".into(),
                ..Default::default()
            };
            let removal = DeltaDiscoveryResponse {
                type_url: kind.name().into(),
                removed_resources: vec![kds_resource(rs[0], to_zone).name],
                nonce: "3".into(),
                ..Default::default()
            };
            let mut seed = vec![mode];
            seed.extend(fuzz::join_messages(&[
                first.encode_to_vec(),
                second.encode_to_vec(),
                removal.encode_to_vec(),
            ]));
            corpus.write(
                "kds_delta",
                &format!("{mode}-split-full-state-and-removal"),
                &seed,
            );
        }
    }
    // The requests a sender answers: subscriptions, then an ACK and a NACK.
    for (mode, types, node) in [
        (2u8, kds::rules::zone_subscriptions(), fuzz::ZONE),
        (3u8, zone::kds_client::zone_provided_types(), "global"),
    ] {
        for chunk in types.chunks(6) {
            let mut messages = Vec::new();
            for kind in chunk {
                messages.push(
                    DeltaDiscoveryRequest {
                        node: Some(Node {
                            id: node.into(),
                            ..Default::default()
                        }),
                        type_url: kind.name().into(),
                        resource_names_subscribe: vec!["*".into()],
                        ..Default::default()
                    }
                    .encode_to_vec(),
                );
            }
            let kind = chunk[0];
            messages.push(
                DeltaDiscoveryRequest {
                    type_url: kind.name().into(),
                    response_nonce: "1".into(),
                    ..Default::default()
                }
                .encode_to_vec(),
            );
            messages.push(
                DeltaDiscoveryRequest {
                    type_url: kind.name().into(),
                    response_nonce: "2".into(),
                    error_detail: Some(Status {
                        code: 3,
                        message: "rejected".into(),
                        details: vec![],
                    }),
                    ..Default::default()
                }
                .encode_to_vec(),
            );
            let mut seed = vec![mode];
            seed.extend(fuzz::join_messages(&messages));
            corpus.write(
                "kds_delta",
                &format!("{mode}-subscribe-{}", kind.name()),
                &seed,
            );
        }
    }
}

fn pb_string(s: &str) -> PbValue {
    PbValue {
        kind: Some(Kind::StringValue(s.into())),
    }
}

fn pb_struct(fields: &[(&str, PbValue)]) -> Struct {
    Struct {
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

/// The node kuma-dp's bootstrap gives Envoy.
fn node(id: &str, mesh: &str, name: &str, proxy_type: &str) -> Node {
    let version = pb_struct(&[
        (
            "kumaDp",
            PbValue {
                kind: Some(Kind::StructValue(pb_struct(&[(
                    "version",
                    pb_string("2.14.0"),
                )]))),
            },
        ),
        (
            "envoy",
            PbValue {
                kind: Some(Kind::StructValue(pb_struct(&[(
                    "version",
                    pb_string("1.34.1"),
                )]))),
            },
        ),
    ]);
    Node {
        id: id.into(),
        cluster: name.into(),
        metadata: Some(pb_struct(&[
            ("dataplane.mesh", pb_string(mesh)),
            ("dataplane.name", pb_string(name)),
            ("dataplane.proxyType", pb_string(proxy_type)),
            ("workdir", pb_string("/tmp/kuma-dp")),
            (
                "version",
                PbValue {
                    kind: Some(Kind::StructValue(version)),
                },
            ),
        ])),
        ..Default::default()
    }
}

fn ads_request(corpus: &Corpus) {
    let proxies = [
        ("default.web-1", "default", "web-1", "dataplane"),
        ("default.backend-1", "default", "backend-1", "dataplane"),
        (
            "default.edge-gateway",
            "default",
            "edge-gateway",
            "dataplane",
        ),
        (".ingress-1", "", "ingress-1", "ingress"),
        (".egress-1", "", "egress-1", "egress"),
    ];
    for (id, mesh, name, proxy_type) in proxies {
        let first = DeltaDiscoveryRequest {
            node: Some(node(id, mesh, name, proxy_type)),
            type_url: CLUSTER.into(),
            ..Default::default()
        };
        let messages = vec![
            first.encode_to_vec(),
            DeltaDiscoveryRequest {
                type_url: LISTENER.into(),
                ..Default::default()
            }
            .encode_to_vec(),
            DeltaDiscoveryRequest {
                type_url: CLUSTER.into(),
                response_nonce: "1".into(),
                ..Default::default()
            }
            .encode_to_vec(),
            DeltaDiscoveryRequest {
                type_url: ENDPOINTS.into(),
                resource_names_subscribe: vec!["backend".into(), "*".into()],
                ..Default::default()
            }
            .encode_to_vec(),
            DeltaDiscoveryRequest {
                type_url: LISTENER.into(),
                response_nonce: "2".into(),
                error_detail: Some(Status {
                    code: 13,
                    message: "Error adding/updating listener(s)".into(),
                    details: vec![],
                }),
                ..Default::default()
            }
            .encode_to_vec(),
            DeltaDiscoveryRequest {
                type_url: SECRET.into(),
                resource_names_subscribe: vec!["identity_cert:secret:default".into()],
                ..Default::default()
            }
            .encode_to_vec(),
            DeltaDiscoveryRequest {
                type_url: ENDPOINTS.into(),
                resource_names_unsubscribe: vec!["backend".into()],
                initial_resource_versions: [("backend".to_string(), "1".to_string())].into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ];
        let mut seed = vec![0];
        seed.extend(fuzz::join_messages(&messages));
        corpus.write("ads_request", &format!("delta-{name}"), &seed);
        let mut seed = vec![0];
        seed.extend(first.encode_to_vec());
        corpus.write("ads_request", &format!("delta-first-only-{name}"), &seed);
    }
    // Envoy without delta: told to use it.
    let sotw = DiscoveryRequest {
        node: Some(node("default.web-1", "default", "web-1", "dataplane")),
        type_url: CLUSTER.into(),
        ..Default::default()
    };
    let mut seed = vec![1];
    seed.extend(sotw.encode_to_vec());
    corpus.write("ads_request", "sotw-web-1", &seed);
}

async fn tokens(keys: &fuzz::TokenKeys) -> BTreeMap<&'static str, String> {
    use security::dataplane::issue_dataplane_token;
    let valid = fuzz::SEED_TOKEN_VALIDITY;
    let mut out = BTreeMap::new();
    out.insert(
        "user-admin",
        security::user::issue_user_token(
            &keys.user,
            "admin",
            &["mesh-system:admin".to_string()],
            valid,
        )
        .await
        .unwrap(),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    out.insert(
        "user-revoked",
        keys.user
            .sign(&security::user::UserClaims {
                name: "alice".into(),
                groups: vec![],
                jti: fuzz::REVOKED_JTI.into(),
                iat: now,
                nbf: now - 300,
                exp: now + valid.as_secs(),
            })
            .await
            .unwrap(),
    );
    out.insert(
        "user-expired",
        keys.user
            .sign(&security::user::UserClaims {
                name: "alice".into(),
                groups: vec![],
                jti: "expired".into(),
                iat: 1_000_000,
                nbf: 1_000_000,
                exp: 1_000_060,
            })
            .await
            .unwrap(),
    );
    out.insert(
        "zone-any-scope",
        security::zone::issue_zone_token(&keys.zone, fuzz::ZONE, &[], valid)
            .await
            .unwrap(),
    );
    out.insert(
        "zone-ingress",
        security::zone::issue_zone_token(&keys.zone, fuzz::ZONE, &["ingress".into()], valid)
            .await
            .unwrap(),
    );
    out.insert(
        "zone-egress",
        security::zone::issue_zone_token(&keys.zone, fuzz::ZONE, &["egress".into()], valid)
            .await
            .unwrap(),
    );
    out.insert(
        "zone-other",
        security::zone::issue_zone_token(&keys.zone, "zone-2", &["cp".into()], valid)
            .await
            .unwrap(),
    );
    out.insert(
        "zone-control-plane",
        security::zone::issue_control_plane_zone_token(
            &keys.zone,
            "tenant-1",
            fuzz::ZONE,
            &["cp".into()],
            valid,
        )
        .await
        .unwrap(),
    );
    let (no_tags, web_tags) = (BTreeMap::new(), fuzz::web_tags());
    for (seed, name, tags, proxy_type) in [
        ("dataplane-web-1", "web-1", &no_tags, ""),
        ("dataplane-web-tags", "", &web_tags, "dataplane"),
        ("dataplane-other-name", "db-1", &no_tags, ""),
        ("dataplane-ingress", "", &no_tags, "ingress"),
    ] {
        let token =
            issue_dataplane_token(&keys.dataplane, name, "default", tags, proxy_type, valid)
                .await
                .unwrap();
        out.insert(seed, token);
    }
    out
}

fn jwt(corpus: &Corpus, tokens: &BTreeMap<&'static str, String>) {
    for (name, token) in tokens {
        let selectors: &[u8] = match name.split('-').next().unwrap() {
            "user" => &[0],
            "zone" => &[1, 2, 3, 7, 13],
            _ => &[4, 5, 11],
        };
        for s in selectors {
            let mut seed = vec![*s];
            seed.extend_from_slice(token.as_bytes());
            corpus.write("jwt", &format!("{s}-{name}"), &seed);
        }
    }
    // Headers the verifiers must refuse: another algorithm, no key id.
    for (name, header) in [
        ("hs256", r#"{"alg":"HS256","typ":"JWT","kid":"1"}"#),
        ("no-kid", r#"{"alg":"RS256","typ":"JWT"}"#),
        ("none", r#"{"alg":"none"}"#),
    ] {
        use base64_url as b64;
        let token = format!(
            "{}.{}.c2ln",
            b64::encode(header.as_bytes()),
            b64::encode(br#"{"Name":"x","jti":"1","iat":1,"nbf":1,"exp":99999999999}"#)
        );
        let mut seed = vec![0];
        seed.extend_from_slice(token.as_bytes());
        corpus.write("jwt", &format!("0-{name}"), &seed);
    }
}

/// Unpadded base64url, as JWTs use it.
mod base64_url {
    pub fn encode(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    }
}

fn bootstrap_request(corpus: &Corpus, tokens: &BTreeMap<&'static str, String>) {
    let dp = fuzz::parse_resource(&fuzz::dataplane_yaml("web-1"));
    let dp_json = strip_times(dp.to_value()).to_string();
    let new_dp = strip_times(fuzz::parse_resource(&fuzz::dataplane_yaml("web-2")).to_value());
    let version = json!({"kumaDp": {"version": "2.14.0", "gitTag": "", "gitCommit": "", "buildDate": ""},
                         "envoy": {"version": "1.34.1", "build": "", "kumaDpCompatible": true}});
    let request = |mesh: &str, name: &str, proxy_type: &str, token: &str, resource: &str| {
        json!({
            "mesh": mesh,
            "name": name,
            "proxyType": proxy_type,
            "dataplaneToken": token,
            "dataplaneResource": resource,
            "version": version,
            "workdir": "/tmp/kuma-dp-default-web-1-42",
            "metricsResources": {"certPath": "", "keyPath": ""},
        })
    };
    let ingress = json!({"type": "ZoneIngress", "name": "ingress-1",
        "networking": {"address": "10.0.0.4", "port": 10001, "advertisedAddress": "192.0.2.4", "advertisedPort": 10001}});
    let egress = json!({"type": "ZoneEgress", "name": "egress-2",
        "networking": {"address": "10.0.0.6", "port": 10002}});
    let seeds = [
        (
            "dataplane-with-resource",
            request(
                "default",
                "web-1",
                "dataplane",
                &tokens["dataplane-web-1"],
                &dp_json,
            ),
        ),
        (
            "dataplane-stored",
            request("default", "web-1", "", &tokens["dataplane-web-tags"], ""),
        ),
        (
            "dataplane-new-yaml",
            request(
                "default",
                "web-2",
                "dataplane",
                &tokens["dataplane-web-tags"],
                &fuzz::dataplane_yaml("web-2"),
            ),
        ),
        (
            "dataplane-new-json",
            request(
                "default",
                "web-2",
                "dataplane",
                &tokens["dataplane-web-tags"],
                &new_dp.to_string(),
            ),
        ),
        (
            "dataplane-wrong-token",
            request(
                "default",
                "web-1",
                "dataplane",
                &tokens["dataplane-other-name"],
                "",
            ),
        ),
        (
            "ingress",
            request(
                "",
                "ingress-1",
                "ingress",
                &tokens["zone-ingress"],
                &ingress.to_string(),
            ),
        ),
        (
            "egress",
            request(
                "",
                "egress-2",
                "egress",
                &tokens["zone-egress"],
                &egress.to_string(),
            ),
        ),
    ];
    for (name, body) in &seeds {
        for mode in [0u8, 2] {
            let mut seed = vec![mode];
            seed.extend(serde_json::to_vec(body).unwrap());
            corpus.write(
                "bootstrap_request",
                &format!("{mode}-bootstrap-{name}"),
                &seed,
            );
        }
    }
    // kuma-dp's deregistration on a clean stop.
    for (name, mesh, proxy, proxy_type, token) in [
        ("web-1", "default", "web-1", "dataplane", "dataplane-web-1"),
        ("ingress", "", "ingress-1", "ingress", "zone-ingress"),
    ] {
        let body = json!({"mesh": mesh, "name": proxy, "proxyType": proxy_type, "dataplaneToken": tokens[token]});
        for mode in [1u8, 3] {
            let mut seed = vec![mode];
            seed.extend(serde_json::to_vec(&body).unwrap());
            corpus.write(
                "bootstrap_request",
                &format!("{mode}-deregister-{name}"),
                &seed,
            );
        }
    }
}

fn main() {
    let repo = std::env::current_dir().unwrap();
    assert!(
        repo.join("fuzz/Cargo.toml").exists(),
        "run from the repository root"
    );
    let corpus = Corpus {
        root: repo.join("fuzz/corpus"),
    };
    let _ = std::fs::remove_dir_all(&corpus.root);
    let examples = examples(&repo);
    api_resource(&corpus, &examples);
    kumactl_yaml(&corpus, &repo, &examples);
    kds_delta(&corpus, &examples);
    ads_request(&corpus);
    let rt = fuzz::runtime();
    let tokens = rt.block_on(async { tokens(&fuzz::token_keys().await).await });
    jwt(&corpus, &tokens);
    bootstrap_request(&corpus, &tokens);
    println!(
        "{} examples; corpus written to {}",
        examples.len(),
        corpus.root.display()
    );
}
