//! MeshRetry (Kuma's `pkg/plugins/policies/meshretry`): on each outbound, by the `to` rule of
//! its destination and the destination's protocol: a `retry_policy` on the routes of HTTP
//! (`http`) and gRPC (`grpc`) outbounds, `max_connect_attempts` on the TCP proxy of TCP ones.

use model::ResourceType;
use model::duration::parse_duration;
use model::specs::policy::{
    BackOff, HeaderMatch, HeaderMatchType, HostPredicate, RateLimitFormat, RateLimitedBackOff,
    RetryConf, RetryGrpc, RetryHttp,
};
use serde_json::{Map, Value, json};

use super::Applied;
use crate::context::{DataplaneEntry, MeshContext, Protocol};
use crate::envoy::core::duration;
use crate::resources::{Origin, ResourceSet};
use crate::rules::matching::matched_in;

/// Kuma's `retryOn` when a policy lists none.
const HTTP_RETRY_ON: &str = "gateway-error,connect-failure,refused-stream";
const GRPC_RETRY_ON: &str =
    "cancelled,connect-failure,gateway-error,refused-stream,reset,resource-exhausted,unavailable";

pub struct Plugin;

impl super::PolicyPlugin for Plugin {
    fn kind(&self) -> ResourceType {
        ResourceType::MeshRetry
    }

    fn apply(&self, rs: &mut ResourceSet, mesh: &MeshContext, proxy: &DataplaneEntry) {
        let matching = matched_in(mesh, self.kind(), proxy);
        let per_route: Vec<(Origin, String, RetryConf)> =
            super::per_route_confs(self.kind(), rs, mesh, proxy, &matching.matched);
        if matching.matched.is_empty() && per_route.is_empty() {
            return;
        }
        let confs: Vec<Option<Applied<RetryConf>>> =
            super::destination_confs(self.kind(), rs, mesh, &matching.matched);
        let protocols: Vec<Protocol> = rs.destinations.iter().map(|d| d.protocol).collect();
        for (origin, mut listener) in rs.listeners_mut() {
            let Origin::Outbound { destination, .. } = origin else {
                continue;
            };
            let Some(Some(Applied { conf, .. })) = confs.get(destination) else {
                continue;
            };
            match protocols[destination] {
                Protocol::Tcp => {
                    let attempts = conf.tcp.as_ref().and_then(|t| t.max_connect_attempt);
                    if let Some(attempts) = attempts {
                        for tcp in listener.tcp_proxies() {
                            tcp.insert("max_connect_attempts".into(), json!(attempts));
                        }
                    }
                }
                protocol => {
                    let policy = match protocol {
                        Protocol::Grpc => conf.grpc.as_ref().and_then(grpc_policy),
                        _ => conf.http.as_ref().and_then(http_policy),
                    };
                    if let Some(policy) = policy {
                        for action in listener.route_actions() {
                            action.insert("retry_policy".into(), policy.clone());
                        }
                    }
                }
            }
        }
        // A gateway route takes the `to` conf of the service it sends to, from the
        // policies selecting its listener.
        let gateway_routes: Vec<super::GatewayRoute<RetryConf>> =
            super::gateway_route_confs(self.kind(), rs, mesh, &matching.matched);
        for (origin, mut listener) in rs.listeners_mut() {
            let mut actions = listener.route_actions_with_clusters();
            for route in gateway_routes.iter().filter(|r| r.listener == origin) {
                let conf = &route.conf;
                let policy = match protocols[route.destination] {
                    Protocol::Grpc => conf.grpc.as_ref().and_then(grpc_policy),
                    _ => conf.http.as_ref().and_then(http_policy),
                };
                if let (Some(p), Some((_, action))) = (policy, actions.get_mut(route.action)) {
                    action.insert("retry_policy".into(), p);
                }
            }
        }
        // Routes a per-route MeshRetry names: the outbound's conf with the route's over it.
        for (origin, mut listener) in rs.listeners_mut() {
            let protocol = match origin {
                Origin::Outbound { destination, .. } => protocols[destination],
                Origin::Gateway { .. } => Protocol::Http,
                _ => continue,
            };
            for (_, route, conf) in per_route.iter().filter(|(o, _, _)| *o == origin) {
                let policy = match protocol {
                    Protocol::Grpc => conf.grpc.as_ref().and_then(grpc_policy),
                    _ => conf.http.as_ref().and_then(http_policy),
                };
                for action in listener.route_actions_named(route) {
                    match &policy {
                        Some(p) => action.insert("retry_policy".into(), p.clone()),
                        None => action.remove("retry_policy"),
                    };
                }
            }
        }
    }
}

fn dur(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .and_then(|v| parse_duration(v).ok())
        .map(duration)
}

/// The parts HTTP and gRPC retries share; `None` when `numRetries` is 0 (no retries).
fn common(
    num_retries: Option<u32>,
    per_try_timeout: &Option<String>,
    back_off: &Option<BackOff>,
    rate_limited: &Option<RateLimitedBackOff>,
    retry_on: String,
) -> Option<Map<String, Value>> {
    let mut policy = Map::new();
    policy.insert("retry_on".into(), json!(retry_on));
    match num_retries {
        Some(0) => return None,
        Some(n) => {
            policy.insert("num_retries".into(), json!(n));
        }
        None => {}
    }
    if let Some(t) = dur(per_try_timeout) {
        policy.insert("per_try_timeout".into(), json!(t));
    }
    if let Some(b) = back_off {
        // Envoy requires a base interval; Kuma's default is 25 ms.
        let base = dur(&b.base_interval).unwrap_or_else(|| "0.025s".into());
        let mut back_off = json!({"base_interval": base});
        if let Some(max) = dur(&b.max_interval) {
            back_off["max_interval"] = json!(max);
        }
        policy.insert("retry_back_off".into(), back_off);
    }
    if let Some(r) = rate_limited {
        let headers: Vec<Value> = r
            .reset_headers
            .iter()
            .flatten()
            .map(|h| {
                let format = match h.format {
                    RateLimitFormat::Seconds => "SECONDS",
                    RateLimitFormat::UnixTimestamp => "UNIX_TIMESTAMP",
                };
                json!({"name": h.name, "format": format})
            })
            .collect();
        let mut back_off = json!({"reset_headers": headers});
        if let Some(max) = dur(&r.max_interval) {
            back_off["max_interval"] = json!(max);
        }
        policy.insert("rate_limited_retry_back_off".into(), back_off);
    }
    Some(policy)
}

/// Kuma's PascalCase `retryOn` values as Envoy's conditions (`GatewayError` is
/// `gateway-error`; `5xx` is already Envoy's).
fn envoy_condition(value: &str) -> String {
    match value {
        "Retriable4xx" => "retriable-4xx".into(),
        "Canceled" => "cancelled".into(),
        other => {
            let mut out = String::new();
            for (i, c) in other.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    out.push('-');
                }
                out.push(c.to_ascii_lowercase());
            }
            out
        }
    }
}

fn http_policy(http: &RetryHttp) -> Option<Value> {
    let mut conditions = Vec::new();
    let mut status_codes = Vec::new();
    let mut methods = Vec::new();
    for item in http.retry_on.iter().flatten() {
        if let Ok(code) = item.parse::<u16>() {
            status_codes.push(code);
        } else if let Some(method) = item.strip_prefix("HttpMethod") {
            methods.push(method.to_ascii_uppercase());
        } else {
            conditions.push(envoy_condition(item));
        }
    }
    let mut retry_on = if conditions.is_empty() {
        HTTP_RETRY_ON.to_string()
    } else {
        conditions.join(",")
    };
    if !status_codes.is_empty() && !retry_on.split(',').any(|c| c == "retriable-status-codes") {
        retry_on.push_str(",retriable-status-codes");
    }
    let mut policy = common(
        http.num_retries,
        &http.per_try_timeout,
        &http.back_off,
        &http.rate_limited_back_off,
        retry_on,
    )?;
    if !status_codes.is_empty() {
        policy.insert("retriable_status_codes".into(), json!(status_codes));
    }
    let mut request_headers: Vec<Value> = methods
        .iter()
        .map(|m| json!({"name": ":method", "string_match": {"exact": m}}))
        .collect();
    request_headers.extend(
        http.retriable_request_headers
            .iter()
            .flatten()
            .map(header_matcher),
    );
    if !request_headers.is_empty() {
        policy.insert("retriable_request_headers".into(), json!(request_headers));
    }
    if let Some(headers) = &http.retriable_response_headers {
        let headers: Vec<Value> = headers.iter().map(header_matcher).collect();
        policy.insert("retriable_headers".into(), json!(headers));
    }
    if let Some(predicates) = &http.host_selection {
        host_selection(&mut policy, predicates);
    }
    if let Some(attempts) = http.host_selection_max_attempts {
        policy.insert("host_selection_retry_max_attempts".into(), json!(attempts));
    }
    Some(Value::Object(policy))
}

fn grpc_policy(grpc: &RetryGrpc) -> Option<Value> {
    let conditions: Vec<String> = grpc
        .retry_on
        .iter()
        .flatten()
        .map(|c| envoy_condition(c))
        .collect();
    let retry_on = if conditions.is_empty() {
        GRPC_RETRY_ON.to_string()
    } else {
        conditions.join(",")
    };
    common(
        grpc.num_retries,
        &grpc.per_try_timeout,
        &grpc.back_off,
        &grpc.rate_limited_back_off,
        retry_on,
    )
    .map(Value::Object)
}

fn header_matcher(header: &HeaderMatch) -> Value {
    let value = header.value.clone().unwrap_or_default();
    let specifier = match header.match_type.unwrap_or(HeaderMatchType::Exact) {
        HeaderMatchType::Exact => json!({"string_match": {"exact": value}}),
        HeaderMatchType::Prefix => json!({"string_match": {"prefix": value}}),
        HeaderMatchType::RegularExpression => {
            json!({"string_match": {"safe_regex": {"regex": value}}})
        }
        HeaderMatchType::Present => json!({"present_match": true}),
        HeaderMatchType::Absent => json!({"present_match": false}),
    };
    let mut matcher = json!({"name": header.name});
    if let (Some(m), Value::Object(s)) = (matcher.as_object_mut(), specifier) {
        m.extend(s);
    }
    matcher
}

fn host_selection(policy: &mut Map<String, Value>, predicates: &[HostPredicate]) {
    let mut hosts = Vec::new();
    for p in predicates {
        match p.predicate.as_str() {
            "OmitPreviousHosts" => hosts.push(json!({
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}
            })),
            "OmitHostsWithTags" => {
                let tags: Map<String, Value> = p
                    .tags
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect();
                hosts.push(json!({
                    "name": "envoy.retry_host_predicates.omit_host_metadata",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.retry.host.omit_host_metadata.v3.OmitHostMetadataConfig",
                        "metadata_match": {"filter_metadata": {"envoy.lb": tags}}
                    }
                }));
            }
            "OmitPreviousPriorities" => {
                policy.insert(
                    "retry_priority".into(),
                    json!({
                        "name": "envoy.retry_priorities.previous_priorities",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                            "update_frequency": p.update_frequency.unwrap_or(2)
                        }
                    }),
                );
            }
            _ => {}
        }
    }
    if !hosts.is_empty() {
        policy.insert("retry_host_predicate".into(), json!(hosts));
    }
}
