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

/// A duration as Envoy's JSON writes one: seconds with up to nine decimals.
pub fn duration(d: std::time::Duration) -> String {
    match d.subsec_nanos() {
        0 => format!("{}s", d.as_secs()),
        n => {
            let frac = format!("{n:09}");
            format!("{}.{}s", d.as_secs(), frac.trim_end_matches('0'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_read_as_envoy_writes_them() {
        assert_eq!(duration(Duration::from_secs(15)), "15s");
        assert_eq!(duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration(Duration::from_millis(25)), "0.025s");
        assert_eq!(duration(Duration::ZERO), "0s");
    }
}
