//! MeshFaultInjection (Kuma's `pkg/plugins/policies/meshfaultinjection`): on HTTP inbounds,
//! one `envoy.filters.http.fault` filter per fault of the inbound's catch-all rule (abort with
//! a status, fixed delay, response bandwidth limit, each for a percentage of requests), before
//! the router. TCP inbounds have no faults to inject. On a builtin gateway's HTTP and HTTPS
//! listeners, the faults of the `to[]` entries for the whole mesh of the policies selecting
//! the listener (Kuma's gateway rules).

use model::ResourceType;
use model::duration::parse_duration;
use model::specs::policy::{FaultInjectionConf, HttpFault, IntOrString};
use serde_json::{Map, Value, json};

use super::Applied;
use crate::context::{DataplaneEntry, MeshContext};
use crate::envoy::core::duration;
use crate::resources::{Origin, ResourceSet};
use crate::rules::matching::matched_in;

pub struct Plugin;

impl super::PolicyPlugin for Plugin {
    fn kind(&self) -> ResourceType {
        ResourceType::MeshFaultInjection
    }

    fn apply(&self, rs: &mut ResourceSet, mesh: &MeshContext, proxy: &DataplaneEntry) {
        let matching = matched_in(mesh, self.kind(), proxy);
        if matching.matched.is_empty() {
            return;
        }
        let confs: Vec<Option<Applied<FaultInjectionConf>>> =
            super::inbound_confs(self.kind(), rs, &matching.matched, proxy);
        let gateway: std::collections::BTreeMap<u32, Applied<FaultInjectionConf>> =
            super::gateway_listener_confs(self.kind(), rs, &matching.matched);
        let mut warnings = Vec::new();
        for (origin, mut listener) in rs.listeners_mut() {
            let (applied, what) = match origin {
                Origin::Inbound(i) => (
                    confs.get(i).and_then(Option::as_ref),
                    format!("inbound {i}"),
                ),
                Origin::Gateway { port } => {
                    (gateway.get(&port), format!("gateway listener {port}"))
                }
                _ => continue,
            };
            let Some(Applied { conf, policies }) = applied else {
                continue;
            };
            if !listener.is_http() {
                continue;
            }
            for (n, fault) in conf.http.iter().flatten().enumerate() {
                match fault_filter(fault) {
                    Ok(config) => listener.insert_http_filter_before_router(json!({
                        "name": format!("envoy.filters.http.fault.{n}"),
                        "typed_config": config,
                    })),
                    Err(why) => warnings.push(format!(
                        "MeshFaultInjection fault {n} on {what} (from {policies}) not applied: {why}"
                    )),
                }
            }
        }
        rs.warnings.extend(warnings);
    }
}

fn percentage(p: &Option<IntOrString>) -> Result<Value, &'static str> {
    let value = match p {
        None => 100.0,
        Some(p) => p.as_f64().ok_or("percentage is not a number")?,
    };
    Ok(super::fractional_percent(value))
}

fn fault_filter(fault: &HttpFault) -> Result<Value, &'static str> {
    let mut config = Map::new();
    config.insert(
        "@type".into(),
        json!("type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"),
    );
    if let Some(delay) = &fault.delay {
        let value = delay
            .value
            .as_deref()
            .and_then(|v| parse_duration(v).ok())
            .ok_or("delay.value is not a duration")?;
        config.insert(
            "delay".into(),
            json!({"fixed_delay": duration(value), "percentage": percentage(&delay.percentage)?}),
        );
    }
    if let Some(abort) = &fault.abort {
        let status = abort.http_status.ok_or("abort.httpStatus is missing")?;
        config.insert(
            "abort".into(),
            json!({"http_status": status, "percentage": percentage(&abort.percentage)?}),
        );
    }
    if let Some(bandwidth) = &fault.response_bandwidth {
        let kbps = bandwidth
            .limit
            .as_deref()
            .and_then(kbps)
            .ok_or("responseBandwidth.limit is not a bandwidth such as 10kbps")?;
        config.insert(
            "response_rate_limit".into(),
            json!({"fixed_limit": {"limit_kbps": kbps},
                   "percentage": percentage(&bandwidth.percentage)?}),
        );
    }
    Ok(Value::Object(config))
}

/// Kuma's bandwidth units (`gbps`, `mbps`, `kbps`, `bps`) in kilobits per second.
fn kbps(limit: &str) -> Option<u64> {
    let digits = limit.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let value: u64 = digits.parse().ok()?;
    match &limit[digits.len()..] {
        "gbps" => Some(value * 1_000_000),
        "mbps" => Some(value * 1_000),
        "kbps" => Some(value),
        "bps" => Some(value / 1_000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::kbps;

    #[test]
    fn bandwidth_units() {
        assert_eq!(kbps("10kbps"), Some(10));
        assert_eq!(kbps("2mbps"), Some(2000));
        assert_eq!(kbps("1gbps"), Some(1_000_000));
        assert_eq!(kbps("5000bps"), Some(5));
        assert_eq!(kbps("10"), None);
        assert_eq!(kbps("mbps"), None);
    }
}
