//! Envoy's JSON to protobuf: generated configuration is Envoy's proto3 JSON (readable, and what
//! golden files show); this turns it into the `Any`s ADS sends, against Envoy's real schema, so
//! a misspelt field is an error here rather than a NACK from every proxy.

use std::sync::OnceLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};
use serde_json::Value;

const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINTS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
pub const BOOTSTRAP: &str = "type.googleapis.com/envoy.config.bootstrap.v3.Bootstrap";

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("Envoy's descriptors are unusable: {0}")]
    Descriptors(String),
    #[error("unknown Envoy message type {0:?}")]
    UnknownType(String),
    #[error("{type_url}: {source}")]
    Json {
        type_url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{type_url}: {source}")]
    Decode {
        type_url: String,
        #[source]
        source: prost::DecodeError,
    },
}

fn pool() -> Result<&'static DescriptorPool, WireError> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(DESCRIPTORS).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| WireError::Descriptors(e.clone()))
}

fn descriptor(type_url: &str) -> Result<prost_reflect::MessageDescriptor, WireError> {
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    pool()?
        .get_message_by_name(name)
        .ok_or_else(|| WireError::UnknownType(type_url.to_string()))
}

/// Envoy JSON (snake_case or lowerCamel field names) read as the message `type_url` names.
fn message(type_url: &str, json: &Value) -> Result<DynamicMessage, WireError> {
    let desc = descriptor(type_url)?;
    DynamicMessage::deserialize_with_options(desc, json, &DeserializeOptions::new()).map_err(
        |source| WireError::Json {
            type_url: type_url.to_string(),
            source,
        },
    )
}

/// A message as Envoy JSON, with proto (snake_case) or lowerCamel field names.
fn to_json(type_url: &str, msg: &DynamicMessage, proto_names: bool) -> Result<Value, WireError> {
    let options = SerializeOptions::new().use_proto_field_name(proto_names);
    msg.serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|source| WireError::Json {
            type_url: type_url.to_string(),
            source,
        })
}

/// Encodes Envoy JSON (snake_case or lowerCamel field names) as the message `type_url` names.
pub fn encode(type_url: &str, json: &Value) -> Result<Vec<u8>, WireError> {
    Ok(message(type_url, json)?.encode_to_vec())
}

pub fn to_any(type_url: &str, json: &Value) -> Result<prost_types::Any, WireError> {
    Ok(prost_types::Any {
        type_url: type_url.to_string(),
        value: encode(type_url, json)?,
    })
}

/// Protobuf back to Envoy JSON (proto field names, defaults left out), for config dumps and tests.
pub fn decode(type_url: &str, bytes: &[u8]) -> Result<Value, WireError> {
    let desc = descriptor(type_url)?;
    let msg = DynamicMessage::decode(desc, bytes).map_err(|source| WireError::Decode {
        type_url: type_url.to_string(),
        source,
    })?;
    to_json(type_url, &msg, true)
}

/// `json` read as the message `type_url` names and written back with snake_case
/// (`proto_names`) or lowerCamel field names: values in either spelling come out in one.
pub fn reshape(type_url: &str, json: &Value, proto_names: bool) -> Result<Value, WireError> {
    to_json(type_url, &message(type_url, json)?, proto_names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_a_listener_with_typed_config() {
        let listener = json!({
            "name": "l",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10001}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": "backend", "cluster": "backend"}}]}]
        });
        let bytes = encode(LISTENER, &listener).unwrap();
        let back = decode(LISTENER, &bytes).unwrap();
        assert_eq!(
            back["filter_chains"][0]["filters"][0]["typed_config"]["cluster"],
            "backend"
        );
    }

    #[test]
    fn misspelt_fields_and_unknown_types_are_errors() {
        let err = encode(CLUSTER, &json!({"name": "c", "conect_timeout": "1s"})).unwrap_err();
        assert!(err.to_string().contains("conect_timeout"), "{err}");
        assert!(matches!(
            encode("type.googleapis.com/no.Such", &json!({})),
            Err(WireError::UnknownType(_))
        ));
    }
}
