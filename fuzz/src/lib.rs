//! What the fuzz targets share: their runtime, the stores they start from, the fixed token
//! signing key, and how one input carries several protocol messages.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use model::specs::secret::SecretSpec;
use model::{Resource, ResourceType};
use security::tokens::SigningKeys;
use store::SharedStore;

/// A test-only RSA key, fixed so the committed JWT seeds verify (and the fuzzer starts past the
/// signature check). It signs nothing outside fuzz/.
pub const SIGNING_KEY_PEM: &str = include_str!("../fixtures/token-signing-key.pem");

/// Splits one input into several protocol messages. A separator rather than length prefixes:
/// libFuzzer's byte insertions and deletions then change one message, not the framing of all
/// the ones after it.
pub const SEPARATOR: &[u8] = b"\xfe\xed\xfa\xce";

/// The zone the zone-side targets run as, and the one global-side targets hear from.
pub const ZONE: &str = "zone-1";

pub fn split_messages(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        out.push(&rest[..i]);
        rest = &rest[i + SEPARATOR.len()..];
    }
    out.push(rest);
    out
}

pub fn join_messages(messages: &[Vec<u8>]) -> Vec<u8> {
    messages.join(SEPARATOR)
}

/// One runtime for the whole run: building one per input would cost more than most inputs.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

/// The type a selector byte names, so one byte of the input reaches every type.
pub fn resource_type(selector: u8) -> ResourceType {
    let all: Vec<ResourceType> = ResourceType::all().collect();
    all[usize::from(selector) % all.len()]
}

pub fn parse_resource(yaml: &str) -> Resource {
    let value = model::resource::parse_resource_text(yaml).expect("fixture parses");
    let r = Resource::from_value(value).expect("fixture is a resource");
    r.validate().expect("fixture is valid");
    r
}

/// A sidecar's Dataplane as kuma-dp registers it; `web-1`'s token seeds and the ADS and
/// bootstrap targets use it.
pub fn dataplane_yaml(name: &str) -> String {
    format!(
        "type: Dataplane
mesh: default
name: {name}
networking:
  address: 10.0.0.1
  inbound:
  - port: 8080
    servicePort: 18080
    tags:
      kuma.io/service: web
      kuma.io/protocol: http
  outbound:
  - port: 10001
    tags:
      kuma.io/service: backend
"
    )
}

/// What every target's store starts with: a mesh, proxies of each kind and a few policies, so
/// inputs that name them get past "not found". Labelled as written on a control plane of
/// `zone` (`None`: global).
pub fn baseline(zone: Option<&str>) -> Vec<Resource> {
    let mut out = vec![
        parse_resource("type: Mesh\nname: default\n"),
        parse_resource(&dataplane_yaml("web-1")),
        parse_resource(
            "type: Dataplane
mesh: default
name: backend-1
networking:
  address: 10.0.0.2
  inbound:
  - port: 9090
    tags:
      kuma.io/service: backend
      kuma.io/protocol: tcp
",
        ),
        parse_resource(
            "type: Dataplane
mesh: default
name: edge-gateway
networking:
  address: 10.0.0.3
  gateway:
    type: BUILTIN
    tags:
      kuma.io/service: edge-gateway
",
        ),
        parse_resource(
            "type: ZoneIngress
name: ingress-1
zone: zone-1
networking:
  address: 10.0.0.4
  port: 10001
",
        ),
        parse_resource(
            "type: ZoneEgress
name: egress-1
zone: zone-1
networking:
  address: 10.0.0.5
  port: 10002
",
        ),
        parse_resource(
            "type: MeshTimeout
name: timeout-web
mesh: default
spec:
  targetRef: {kind: Mesh}
  to:
  - targetRef: {kind: Mesh}
    default: {connectionTimeout: 2s, idleTimeout: 20s}
",
        ),
        parse_resource(
            "type: MeshTrafficPermission
name: allow-all
mesh: default
spec:
  targetRef: {kind: Mesh}
  from:
  - targetRef: {kind: Mesh}
    default: {action: Allow}
",
        ),
    ];
    for r in &mut out {
        model::labels::compute(r, zone);
    }
    out
}

pub async fn store_with(resources: &[Resource]) -> SharedStore {
    let store: SharedStore = Arc::new(store::memory::MemoryStore::new());
    for r in resources {
        store.create(r.clone()).await.expect("baseline resource");
    }
    store
}

fn secret(kind: ResourceType, mesh: &str, name: &str, bytes: &[u8]) -> Resource {
    let spec = serde_json::to_value(SecretSpec::from_bytes(bytes)).expect("secret spec");
    Resource::new(kind, mesh, name, spec)
}

/// Token verifiers of each family, all over the fixed key, with one revoked token id each.
pub struct TokenKeys {
    pub store: SharedStore,
    pub user: SigningKeys,
    pub zone: SigningKeys,
    /// What a federated zone verifies zone tokens with: the public half global published.
    pub zone_public: SigningKeys,
    pub dataplane: SigningKeys,
}

pub const REVOKED_JTI: &str = "revoked-token-id";

/// The fixed key as each token family's signing key 1.
pub fn signing_key_secrets() -> Vec<Resource> {
    let pem = SIGNING_KEY_PEM.as_bytes();
    let dp_prefix = security::dataplane::signing_key_prefix("default");
    vec![
        secret(
            ResourceType::GlobalSecret,
            "",
            &format!("{}1", security::user::SIGNING_KEY_PREFIX),
            pem,
        ),
        secret(
            ResourceType::GlobalSecret,
            "",
            &format!("{}1", security::zone::SIGNING_KEY_PREFIX),
            pem,
        ),
        secret(
            ResourceType::Secret,
            "default",
            &format!("{dp_prefix}1"),
            pem,
        ),
    ]
}

pub async fn token_keys() -> TokenKeys {
    let mut resources = baseline(Some(ZONE));
    resources.extend(signing_key_secrets());
    let store = store_with(&resources).await;
    let keys = TokenKeys {
        user: security::user::user_signing_keys(store.clone()),
        zone: security::zone::zone_signing_keys(store.clone()),
        zone_public: security::zone::zone_public_keys(store.clone()),
        dataplane: security::dataplane::dataplane_signing_keys(store.clone(), "default"),
        store,
    };
    security::zone::publish_public_keys(keys.store.clone())
        .await
        .expect("public zone keys");
    for k in [&keys.user, &keys.zone, &keys.dataplane] {
        k.revoke(REVOKED_JTI).await.expect("revocation list");
    }
    keys
}

/// The tag values `web-1`'s inbounds give it, as the data plane server gathers them.
pub fn web_tags() -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([
        ("kuma.io/service".to_string(), vec!["web".to_string()]),
        ("kuma.io/protocol".to_string(), vec!["http".to_string()]),
    ])
}

/// How long seed tokens stay valid: past any CI run of this corpus.
pub const SEED_TOKEN_VALIDITY: Duration = Duration::from_secs(50 * 365 * 24 * 3600);
