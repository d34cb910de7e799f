//! MeshHealthCheck (Kuma's `pkg/plugins/policies/meshhealthcheck`): active health checks on
//! destination clusters, by the `to` rule of the destination: an HTTP check for HTTP
//! destinations, gRPC for gRPC, TCP for TCP (and TCP in place of a disabled HTTP/gRPC check),
//! with Kuma's defaults for what the policy leaves unset; Envoy takes the endpoints that fail
//! out of the load balancer.

use std::time::Duration;

use model::ResourceType;
use model::duration::parse_duration;
use model::specs::policy::{GrpcHealthCheck, HealthCheckConf, HttpHealthCheck, TcpHealthCheck};
use serde_json::{Map, Value, json};

use super::Applied;
use crate::context::{DataplaneEntry, MeshContext, Protocol};
use crate::envoy::core::{duration, header_value_options};
use crate::resources::{Origin, ResourceSet};
use crate::rules::matching::matched_in;

/// Kuma's defaults (`meshhealthcheck/plugin/xds`).
const INTERVAL: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(15);
const UNHEALTHY_THRESHOLD: i32 = 5;
const HEALTHY_THRESHOLD: i32 = 1;

pub struct Plugin;

impl super::PolicyPlugin for Plugin {
    fn kind(&self) -> ResourceType {
        ResourceType::MeshHealthCheck
    }

    fn apply(&self, rs: &mut ResourceSet, mesh: &MeshContext, proxy: &DataplaneEntry) {
        let matching = matched_in(mesh, self.kind(), proxy);
        if matching.matched.is_empty() {
            return;
        }
        let confs: Vec<Option<Applied<HealthCheckConf>>> =
            super::destination_confs(self.kind(), rs, mesh, &matching.matched);
        let protocols: Vec<Protocol> = rs.destinations.iter().map(|d| d.protocol).collect();
        for (d, conf) in confs.into_iter().enumerate() {
            let (Some(Applied { conf, .. }), Some(mut cluster)) =
                (conf, rs.cluster_mut(Origin::Destination(d)))
            else {
                continue;
            };
            let mut fields = Map::new();
            if let Some(check) = health_check(&conf, protocols[d]) {
                fields.insert("health_checks".into(), json!([check]));
            }
            let mut lb = Map::new();
            if let Some(p) = conf
                .healthy_panic_threshold
                .as_ref()
                .and_then(|p| p.as_f64())
            {
                lb.insert("healthy_panic_threshold".into(), json!({"value": p}));
            }
            if let Some(fail) = conf.fail_traffic_on_panic {
                lb.insert(
                    "zone_aware_lb_config".into(),
                    json!({"fail_traffic_on_panic": fail}),
                );
            }
            if !lb.is_empty() {
                fields.insert("common_lb_config".into(), Value::Object(lb));
            }
            cluster.set_fields(fields);
        }
    }
}

fn dur(value: &Option<String>) -> Option<Duration> {
    value.as_deref().and_then(|v| parse_duration(v).ok())
}

fn enabled<T>(check: &Option<T>, disabled: impl Fn(&T) -> Option<bool>) -> Option<&T> {
    check.as_ref().filter(|c| disabled(c) != Some(true))
}

/// Kuma's choice of checker: the protocol's own, or TCP where the protocol's is disabled and
/// a TCP check is configured.
fn health_check(conf: &HealthCheckConf, protocol: Protocol) -> Option<Value> {
    let tcp = enabled(&conf.tcp, |t: &TcpHealthCheck| t.disabled);
    let http = enabled(&conf.http, |h: &HttpHealthCheck| h.disabled);
    let grpc = enabled(&conf.grpc, |g: &GrpcHealthCheck| g.disabled);
    let (key, checker) = match protocol {
        Protocol::Http | Protocol::Http2 if http.is_some() => (
            "http_health_check",
            http.map(|h| http_checker(h, protocol))?,
        ),
        Protocol::Grpc if grpc.is_some() => {
            let g = grpc?;
            let mut checker = Map::new();
            if let Some(name) = &g.service_name {
                checker.insert("service_name".into(), json!(name));
            }
            if let Some(authority) = &g.authority {
                checker.insert("authority".into(), json!(authority));
            }
            ("grpc_health_check", Value::Object(checker))
        }
        Protocol::Tcp if tcp.is_some() => ("tcp_health_check", tcp_checker(tcp?)),
        Protocol::Http | Protocol::Http2 if conf.http.is_some() && tcp.is_some() => {
            ("tcp_health_check", tcp_checker(tcp?))
        }
        Protocol::Grpc if conf.grpc.is_some() && tcp.is_some() => {
            ("tcp_health_check", tcp_checker(tcp?))
        }
        _ => return None,
    };
    let mut check = Map::new();
    let interval = dur(&conf.interval).unwrap_or(INTERVAL);
    check.insert("interval".into(), json!(duration(interval)));
    check.insert(
        "timeout".into(),
        json!(duration(dur(&conf.timeout).unwrap_or(TIMEOUT))),
    );
    check.insert(
        "unhealthy_threshold".into(),
        json!(conf.unhealthy_threshold.unwrap_or(UNHEALTHY_THRESHOLD)),
    );
    check.insert(
        "healthy_threshold".into(),
        json!(conf.healthy_threshold.unwrap_or(HEALTHY_THRESHOLD)),
    );
    for (field, value) in [
        ("unhealthy_interval", &conf.unhealthy_interval),
        ("initial_jitter", &conf.initial_jitter),
        ("interval_jitter", &conf.interval_jitter),
        ("no_traffic_interval", &conf.no_traffic_interval),
    ] {
        if let Some(d) = dur(value) {
            check.insert(field.into(), json!(duration(d)));
        }
    }
    if let Some(p) = conf.interval_jitter_percent {
        check.insert("interval_jitter_percent".into(), json!(p));
    }
    if let Some(path) = &conf.event_log_path {
        check.insert(
            "event_logger".into(),
            json!([{"name": "envoy.health_check.event_sinks.file", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.health_check.event_sinks.file.v3.HealthCheckEventFileSink",
                "event_log_path": path}}]),
        );
    }
    if let Some(always) = conf.always_log_health_check_failures {
        check.insert("always_log_health_check_failures".into(), json!(always));
    }
    if let Some(reuse) = conf.reuse_connection {
        check.insert("reuse_connection".into(), json!(reuse));
    }
    check.insert(key.into(), checker);
    Some(Value::Object(check))
}

/// Payloads go to Envoy hex-encoded.
fn payload(text: &str) -> Value {
    let hex: String = text.bytes().map(|b| format!("{b:02x}")).collect();
    json!({"text": hex})
}

fn tcp_checker(tcp: &TcpHealthCheck) -> Value {
    let mut checker = Map::new();
    if let Some(send) = &tcp.send {
        checker.insert("send".into(), payload(send));
    }
    if let Some(receive) = &tcp.receive {
        let receive: Vec<Value> = receive.iter().map(|r| payload(r)).collect();
        checker.insert("receive".into(), json!(receive));
    }
    Value::Object(checker)
}

fn http_checker(http: &HttpHealthCheck, protocol: Protocol) -> Value {
    let mut checker = json!({
        "path": http.path.as_deref().unwrap_or("/"),
        "codec_client_type": if protocol == Protocol::Http2 { "HTTP2" } else { "HTTP1" },
    });
    let headers = header_value_options(http.request_headers_to_add.as_ref(), true);
    if !headers.is_empty() {
        checker["request_headers_to_add"] = json!(headers);
    }
    if let Some(statuses) = &http.expected_statuses {
        let ranges: Vec<Value> = statuses
            .iter()
            .map(|s| json!({"start": s, "end": s + 1}))
            .collect();
        checker["expected_statuses"] = json!(ranges);
    }
    checker
}
