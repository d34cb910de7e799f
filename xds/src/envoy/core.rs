//! Envoy's basic messages: addresses, config sources, secrets over SDS.

use serde_json::{Value, json};

/// How long an upstream connection may take to establish.
pub const CONNECT_TIMEOUT: &str = "5s";

/// Every dynamic resource comes over the proxy's one ADS stream.
pub fn ads_config() -> Value {
    json!({"ads": {}, "resource_api_version": "V3"})
}

/// An SDS secret by name, over ADS.
pub fn sds(name: String) -> Value {
    json!({"name": name, "sds_config": ads_config()})
}

pub fn socket_address(address: &str, port: u32) -> Value {
    json!({"socket_address": {"address": address, "port_value": port}})
}
