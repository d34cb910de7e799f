//! Resources on the wire: each is a `KumaResource` inside an `Any`, keyed `<name>.<mesh>`.
//!
//! Specs of the new (spec-layout) types travel as JSON with an empty type URL, exactly as Kuma
//! sends them. The legacy types (Mesh, Dataplane, insights, zone proxies, MeshGateway, secrets)
//! travel as Kuma's protobuf messages, converted from and to our JSON through their descriptors
//! (proto3 JSON is what Kuma's REST API shows, so the two agree field for field). JSON with an
//! empty type URL is still read for every type, so older peers of ours keep syncing.

use envoy_types::pb::envoy::service::discovery::v3::Resource as XdsResource;
use envoy_types::pb::google::protobuf::Any as XdsAny;
use model::{Resource, ResourceType};
use std::sync::LazyLock;

use prost::Message;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions,
};
use proto::kuma::mesh::v1alpha1::KumaResource;
use proto::kuma::mesh::v1alpha1::kuma_resource::Meta;

pub const KUMA_RESOURCE_TYPE_URL: &str = "type.googleapis.com/kuma.mesh.v1alpha1.KumaResource";

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("resource {key:?}: expected type URL {KUMA_RESOURCE_TYPE_URL}, got {found:?}")]
    WrongTypeUrl { key: String, found: String },
    #[error("resource {key:?}: not a valid KumaResource: {source}")]
    Protobuf {
        key: String,
        #[source]
        source: prost::DecodeError,
    },
    #[error("resource {key:?}: missing {what}")]
    Missing { key: String, what: &'static str },
    #[error("resource {key:?}: {what} is not valid JSON: {source}")]
    Json {
        key: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "resource {key:?}: {what} has type URL {found:?}, which this control plane cannot decode"
    )]
    UnsupportedSpec {
        key: String,
        what: &'static str,
        found: String,
    },
}

fn json_any(value: &serde_json::Value) -> prost_types::Any {
    prost_types::Any {
        type_url: String::new(),
        value: serde_json::to_vec(value).unwrap_or_default(),
    }
}

const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

fn legacy_pool() -> Option<&'static DescriptorPool> {
    static POOL: LazyLock<Option<DescriptorPool>> = LazyLock::new(|| {
        DescriptorPool::decode(proto::KUMA_LEGACY_DESCRIPTORS)
            .inspect_err(
                |e| tracing::error!(error = %e, "embedded Kuma descriptors are unreadable"),
            )
            .ok()
    });
    POOL.as_ref()
}

/// The protobuf message Kuma uses for a legacy type's spec.
fn legacy_message(kind: ResourceType) -> Option<MessageDescriptor> {
    let name = match kind {
        ResourceType::Mesh => "kuma.mesh.v1alpha1.Mesh",
        ResourceType::Dataplane => "kuma.mesh.v1alpha1.Dataplane",
        ResourceType::DataplaneInsight => "kuma.mesh.v1alpha1.DataplaneInsight",
        ResourceType::ZoneIngress => "kuma.mesh.v1alpha1.ZoneIngress",
        ResourceType::ZoneIngressInsight => "kuma.mesh.v1alpha1.ZoneIngressInsight",
        ResourceType::ZoneEgress => "kuma.mesh.v1alpha1.ZoneEgress",
        ResourceType::ZoneEgressInsight => "kuma.mesh.v1alpha1.ZoneEgressInsight",
        ResourceType::MeshGateway => "kuma.mesh.v1alpha1.MeshGateway",
        ResourceType::Secret | ResourceType::GlobalSecret => "kuma.system.v1alpha1.Secret",
        _ => return None,
    };
    legacy_pool()?.get_message_by_name(name)
}

/// A legacy spec as Kuma sends it; JSON if our JSON does not fit the message (then only our
/// own peers can read it, and the reason is logged).
fn spec_any(kind: ResourceType, spec: &serde_json::Value) -> prost_types::Any {
    let Some(desc) = legacy_message(kind) else {
        return json_any(spec);
    };
    // Unknown fields fail rather than vanish: a field Kuma's message lacks must not be lost
    // between two of our own control planes.
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    match DynamicMessage::deserialize_with_options(desc.clone(), spec, &options) {
        Ok(msg) => prost_types::Any {
            type_url: format!("{TYPE_URL_PREFIX}{}", desc.full_name()),
            value: msg.encode_to_vec(),
        },
        Err(e) => {
            tracing::warn!(%kind, error = %e, "spec does not fit Kuma's message; sent as JSON");
            json_any(spec)
        }
    }
}

pub fn to_kuma_resource(r: &Resource) -> KumaResource {
    KumaResource {
        meta: Some(Meta {
            name: r.meta.name.clone(),
            mesh: r.meta.mesh.clone(),
            // Kuma leaves the version empty on the wire; the receiver keeps its own.
            version: String::new(),
            labels: r
                .meta
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }),
        spec: Some(spec_any(r.kind, &r.spec)),
        status: r.status.as_ref().map(json_any),
    }
}

/// FNV-1a over the encoded bytes: a content version, so identical resources compare equal.
fn content_version(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// One delta-xDS resource, ready to send. Encoding happens once per change, so it can be shared
/// by every stream that sends it.
pub fn to_xds_resource(r: &Resource) -> XdsResource {
    let bytes = to_kuma_resource(r).encode_to_vec();
    XdsResource {
        name: crate::rules::resource_key(r),
        version: content_version(&bytes),
        resource: Some(XdsAny {
            type_url: KUMA_RESOURCE_TYPE_URL.to_string(),
            value: bytes,
        }),
        ..Default::default()
    }
}

/// A spec or status: JSON with an empty type URL, or the legacy message `expected`.
fn decode_any(
    key: &str,
    what: &'static str,
    any: &prost_types::Any,
    expected: Option<MessageDescriptor>,
) -> Result<serde_json::Value, CodecError> {
    if any.type_url.is_empty() {
        return serde_json::from_slice(&any.value).map_err(|source| CodecError::Json {
            key: key.into(),
            what,
            source,
        });
    }
    let unsupported = || CodecError::UnsupportedSpec {
        key: key.into(),
        what,
        found: any.type_url.clone(),
    };
    let desc = expected
        .filter(|d| any.type_url.strip_prefix(TYPE_URL_PREFIX) == Some(d.full_name()))
        .ok_or_else(unsupported)?;
    let msg = DynamicMessage::decode(desc, any.value.as_slice()).map_err(|source| {
        CodecError::Protobuf {
            key: key.into(),
            source,
        }
    })?;
    // Kuma's REST API shows proto3 JSON without default values; so does our model.
    let options = SerializeOptions::new().skip_default_fields(true);
    msg.serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|source| CodecError::Json {
            key: key.into(),
            what,
            source,
        })
}

/// Reads one received resource of type `kind`. The result still has to pass validation.
pub fn from_xds_resource(kind: ResourceType, res: &XdsResource) -> Result<Resource, CodecError> {
    let key = res.name.clone();
    let any = res.resource.as_ref().ok_or_else(|| CodecError::Missing {
        key: key.clone(),
        what: "resource",
    })?;
    if any.type_url != KUMA_RESOURCE_TYPE_URL {
        return Err(CodecError::WrongTypeUrl {
            key,
            found: any.type_url.clone(),
        });
    }
    let kr = KumaResource::decode(any.value.as_slice()).map_err(|source| CodecError::Protobuf {
        key: key.clone(),
        source,
    })?;
    let meta = kr.meta.ok_or_else(|| CodecError::Missing {
        key: key.clone(),
        what: "meta",
    })?;
    let spec = match &kr.spec {
        Some(s) => decode_any(&key, "spec", s, legacy_message(kind))?,
        None => serde_json::Value::Object(Default::default()),
    };
    let status = kr
        .status
        .as_ref()
        .map(|s| decode_any(&key, "status", s, None))
        .transpose()?;
    let mut r = Resource::new(kind, &meta.mesh, &meta.name, spec);
    r.meta.labels = meta.labels.into_iter().collect();
    r.status = status;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip() {
        let mut r = Resource::new(
            ResourceType::MeshTimeout,
            "default",
            "t1",
            json!({"targetRef": {"kind": "Mesh"}}),
        );
        r.meta
            .labels
            .insert("kuma.io/origin".into(), "global".into());
        let x = to_xds_resource(&r);
        assert_eq!(x.name, "t1.default");
        assert_eq!(
            x.resource.as_ref().unwrap().type_url,
            KUMA_RESOURCE_TYPE_URL
        );
        let back = from_xds_resource(ResourceType::MeshTimeout, &x).unwrap();
        assert_eq!(back.spec, r.spec);
        assert_eq!(back.meta.labels, r.meta.labels);
        assert_eq!(back.key(), r.key());
        // Same content, same version.
        assert_eq!(to_xds_resource(&r).version, x.version);
    }

    /// Legacy specs travel as Kuma's messages and come back as the same JSON.
    #[test]
    fn legacy_types_round_trip_through_kumas_messages() {
        let cases = [
            (
                ResourceType::Mesh,
                json!({
                    "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]},
                    "metrics": {"enabledBackend": "prom", "backends": [{"name": "prom", "type": "prometheus"}]},
                    "routing": {"zoneEgress": true},
                    "skipCreatingInitialPolicies": ["*"],
                }),
            ),
            (
                ResourceType::Dataplane,
                json!({"networking": {
                    "address": "10.0.0.1",
                    "inbound": [{"port": 8080, "servicePort": 80, "tags": {"kuma.io/service": "web", "kuma.io/protocol": "http"}}],
                    "outbound": [{"port": 10001, "tags": {"kuma.io/service": "db"}}],
                    "admin": {"port": 9901},
                }}),
            ),
            (
                ResourceType::Dataplane,
                json!({"networking": {
                    "address": "10.0.0.2",
                    "gateway": {"type": "BUILTIN", "tags": {"kuma.io/service": "edge"}},
                }}),
            ),
            (
                ResourceType::ZoneIngress,
                json!({
                    "zone": "zone-1",
                    "networking": {"address": "10.0.0.3", "advertisedAddress": "1.2.3.4", "port": 10001, "advertisedPort": 10001},
                    "availableServices": [{"tags": {"kuma.io/service": "web"}, "instances": 2, "mesh": "default"}],
                }),
            ),
            (
                ResourceType::ZoneEgress,
                json!({"zone": "zone-1", "networking": {"address": "10.0.0.4", "port": 10002}}),
            ),
            (ResourceType::Secret, json!({"data": "c2VjcmV0"})),
            (ResourceType::GlobalSecret, json!({"data": "c2VjcmV0"})),
            (
                ResourceType::DataplaneInsight,
                json!({"subscriptions": [{
                    "id": "1", "controlPlaneInstanceId": "cp-1",
                    "connectTime": "2026-01-01T00:00:00Z",
                    "status": {"lastUpdateTime": "2026-01-01T00:00:01Z", "total": {"responsesSent": "3", "responsesAcknowledged": "3"}},
                }]}),
            ),
        ];
        for (kind, spec) in cases {
            let r = Resource::new(
                kind,
                if kind.is_mesh_scoped() { "default" } else { "" },
                "x",
                spec.clone(),
            );
            let x = to_xds_resource(&r);
            let kr = KumaResource::decode(x.resource.as_ref().unwrap().value.as_slice()).unwrap();
            let any = kr.spec.unwrap();
            assert!(
                any.type_url.starts_with("type.googleapis.com/kuma."),
                "{kind} fell back to JSON"
            );
            let back = from_xds_resource(kind, &x).unwrap();
            assert_eq!(back.spec, spec, "{kind}");
        }
    }

    /// Field numbers are Kuma's: a Mesh with only `mtls` (field 1) starts with tag 0x0a, a
    /// Dataplane's networking (field 1) likewise, and a Secret's data (field 1) too.
    #[test]
    fn legacy_field_numbers_match_kuma() {
        let mesh = spec_any(
            ResourceType::Mesh,
            &json!({"mtls": {"enabledBackend": "a"}}),
        );
        assert_eq!(mesh.type_url, "type.googleapis.com/kuma.mesh.v1alpha1.Mesh");
        // Mesh.mtls = 1 { enabledBackend = 1 "a" }
        assert_eq!(mesh.value, [0x0a, 0x03, 0x0a, 0x01, b'a']);
        let secret = spec_any(ResourceType::Secret, &json!({"data": "YQ=="}));
        assert_eq!(
            secret.type_url,
            "type.googleapis.com/kuma.system.v1alpha1.Secret"
        );
        // Secret.data = 1 BytesValue { value = 1 "a" }
        assert_eq!(secret.value, [0x0a, 0x03, 0x0a, 0x01, b'a']);
    }

    #[test]
    fn a_legacy_spec_of_the_wrong_message_is_refused() {
        let mut x = to_xds_resource(&Resource::new(
            ResourceType::Secret,
            "default",
            "s",
            json!({"data": "YQ=="}),
        ));
        // Claim it is a Mesh: the Secret message must not be read as one.
        let err = from_xds_resource(ResourceType::Mesh, &x).unwrap_err();
        assert!(matches!(err, CodecError::UnsupportedSpec { .. }), "{err}");
        x.resource = None;
        assert!(from_xds_resource(ResourceType::Secret, &x).is_err());
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let bad = XdsResource {
            name: "x.default".into(),
            resource: Some(XdsAny {
                type_url: KUMA_RESOURCE_TYPE_URL.into(),
                value: vec![0xff, 0xff, 0xff],
            }),
            ..Default::default()
        };
        assert!(matches!(
            from_xds_resource(ResourceType::MeshTimeout, &bad),
            Err(CodecError::Protobuf { .. })
        ));
        let wrong = XdsResource {
            name: "x.default".into(),
            resource: Some(XdsAny {
                type_url: "type.googleapis.com/other".into(),
                value: vec![],
            }),
            ..Default::default()
        };
        assert!(matches!(
            from_xds_resource(ResourceType::MeshTimeout, &wrong),
            Err(CodecError::WrongTypeUrl { .. })
        ));
        let kr = KumaResource {
            meta: Some(Meta::default()),
            spec: Some(prost_types::Any {
                type_url: String::new(),
                value: b"{nope".to_vec(),
            }),
            status: None,
        };
        let garbage_json = XdsResource {
            name: "x.default".into(),
            resource: Some(XdsAny {
                type_url: KUMA_RESOURCE_TYPE_URL.into(),
                value: kr.encode_to_vec(),
            }),
            ..Default::default()
        };
        assert!(matches!(
            from_xds_resource(ResourceType::MeshTimeout, &garbage_json),
            Err(CodecError::Json { .. })
        ));
        let missing = XdsResource {
            name: "x.default".into(),
            resource: None,
            ..Default::default()
        };
        assert!(from_xds_resource(ResourceType::MeshTimeout, &missing).is_err());
    }
}
