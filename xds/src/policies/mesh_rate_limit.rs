//! MeshRateLimit (Kuma's `pkg/plugins/policies/meshratelimit`): local rate limits on inbounds,
//! by the inbound's catch-all rule: HTTP requests through `envoy.filters.http.local_ratelimit`
//! (a token bucket of `num` requests per `interval`, answering `onRateLimit.status`, 429 by
//! default, with its headers), TCP connections through `envoy.filters.network.local_ratelimit`.
//! On a builtin gateway's listeners, by the `to[]` entries for the whole mesh of the policies
//! selecting the listener (Kuma's gateway rules): as Kuma does, every HTTP route gets a bucket
//! of its own (a per-route config of the filter), a TCP or TLS listener one for connections.

use model::ResourceType;
use model::duration::parse_duration;
use model::specs::policy::{LocalHttpRateLimit, LocalTcpRateLimit, Rate, RateLimitConf};
use serde_json::{Value, json};

use super::Applied;
use crate::context::{DataplaneEntry, MeshContext};
use crate::envoy::core::{duration, header_value_options};
use crate::envoy::listener::ListenerMut;
use crate::envoy::names::stat_name;
use crate::resources::{Origin, ResourceSet};
use crate::rules::matching::matched_in;

pub struct Plugin;

impl super::PolicyPlugin for Plugin {
    fn kind(&self) -> ResourceType {
        ResourceType::MeshRateLimit
    }

    fn apply(&self, rs: &mut ResourceSet, mesh: &MeshContext, proxy: &DataplaneEntry) {
        let matching = matched_in(mesh, self.kind(), proxy);
        if matching.matched.is_empty() {
            return;
        }
        let confs: Vec<Option<Applied<RateLimitConf>>> =
            super::inbound_confs(self.kind(), rs, &matching.matched, proxy);
        let gateway: std::collections::BTreeMap<u32, Applied<RateLimitConf>> =
            super::gateway_listener_confs(self.kind(), rs, &matching.matched);
        let mut warnings = Vec::new();
        for (origin, mut listener) in rs.listeners_mut() {
            // Kuma gives a gateway's HTTP routes a bucket each; an inbound has one for all.
            let (applied, what, per_route) = match origin {
                Origin::Inbound(i) => (
                    confs.get(i).and_then(Option::as_ref),
                    format!("inbound {i}"),
                    false,
                ),
                Origin::Gateway { port } => {
                    (gateway.get(&port), format!("gateway listener {port}"), true)
                }
                _ => continue,
            };
            if let Some(applied) = applied {
                limit(&mut listener, applied, &what, per_route, &mut warnings);
            }
        }
        rs.warnings.extend(warnings);
    }
}

/// A listener's limits: HTTP requests (one bucket, or one per route with `per_route`) or TCP
/// connections.
fn limit(
    listener: &mut ListenerMut<'_>,
    Applied { conf, policies }: &Applied<RateLimitConf>,
    what: &str,
    per_route: bool,
    warnings: &mut Vec<String>,
) {
    let Some(local) = conf.local.as_ref() else {
        return;
    };
    let prefix = stat_name(listener.name());
    if listener.is_http() {
        let Some(http) = local.http.as_ref().filter(|h| h.disabled != Some(true)) else {
            return;
        };
        let Some(filter) = http_filter(http, &prefix) else {
            warnings.push(format!(
                "MeshRateLimit on {what} (from {policies}) not applied: http.requestRate needs num and interval"
            ));
            return;
        };
        if !per_route {
            listener.insert_http_filter_before_router(filter);
            return;
        }
        // Without a bucket of its own the listener's filter only enforces routes' buckets.
        listener.insert_http_filter_before_router(json!({
            "name": HTTP_FILTER,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                "stat_prefix": format!("rate_limit_{prefix}"),
            }
        }));
        for route in listener.routes() {
            let configs = route
                .entry("typed_per_filter_config")
                .or_insert_with(|| json!({}));
            configs[HTTP_FILTER] = filter["typed_config"].clone();
        }
    } else if let Some(tcp) = local.tcp.as_ref().filter(|t| t.disabled != Some(true)) {
        match tcp_filter(tcp, &prefix) {
            Some(filter) => listener.prepend_network_filter(filter),
            None => warnings.push(format!(
                "MeshRateLimit on {what} (from {policies}) not applied: tcp.connectionRate needs num and interval"
            )),
        }
    }
}

const HTTP_FILTER: &str = "envoy.filters.http.local_ratelimit";

/// A token bucket refilled with `num` tokens every `interval`.
fn token_bucket(rate: Option<&Rate>) -> Option<Value> {
    let rate = rate?;
    let num = rate.num.filter(|n| *n > 0)?;
    let interval = rate
        .interval
        .as_deref()
        .and_then(|i| parse_duration(i).ok())
        .filter(|i| !i.is_zero())?;
    Some(json!({"max_tokens": num, "tokens_per_fill": num, "fill_interval": duration(interval)}))
}

fn http_filter(http: &LocalHttpRateLimit, prefix: &str) -> Option<Value> {
    let bucket = token_bucket(http.request_rate.as_ref())?;
    let always = json!({"default_value": {"numerator": 100, "denominator": "HUNDRED"},
                        "runtime_key": "local_rate_limit_enabled"});
    let mut config = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": format!("rate_limit_{prefix}"),
        "token_bucket": bucket,
        "filter_enabled": always,
        "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"},
                            "runtime_key": "local_rate_limit_enforced"},
    });
    let on_limit = http.on_rate_limit.as_ref();
    if let Some(status) = on_limit.and_then(|o| o.status) {
        config["status"] = json!({"code": status});
    }
    let headers = header_value_options(on_limit.and_then(|o| o.headers.as_ref()), false);
    if !headers.is_empty() {
        config["response_headers_to_add"] = json!(headers);
    }
    Some(json!({"name": HTTP_FILTER, "typed_config": config}))
}

fn tcp_filter(tcp: &LocalTcpRateLimit, prefix: &str) -> Option<Value> {
    let bucket = token_bucket(tcp.connection_rate.as_ref())?;
    Some(
        json!({"name": "envoy.filters.network.local_ratelimit", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": format!("rate_limit_{prefix}"),
            "token_bucket": bucket,
        }}),
    )
}
