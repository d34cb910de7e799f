//! Envoy's basic messages: addresses, config sources, secrets over SDS, durations, headers.

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

/// Envoy's `HeaderValueOption`s for a Kuma header modifier's `add` (appended) and `set`
/// (overwritten) lists; with `split_commas`, each comma-separated value is its own header,
/// as Kuma writes health-check headers.
pub fn header_value_options(
    modifier: Option<&model::specs::policy::HeaderModifier>,
    split_commas: bool,
) -> Vec<Value> {
    let Some(m) = modifier else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (list, action) in [
        (&m.add, "APPEND_IF_EXISTS_OR_ADD"),
        (&m.set, "OVERWRITE_IF_EXISTS_OR_ADD"),
    ] {
        for header in list.iter().flatten() {
            let values: Vec<&str> = if split_commas {
                header.value.split(',').collect()
            } else {
                vec![header.value.as_str()]
            };
            for value in values {
                out.push(json!({"header": {"key": header.name, "value": value},
                                "append_action": action}));
            }
        }
    }
    out
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
