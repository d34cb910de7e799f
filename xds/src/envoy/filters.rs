//! Network filters: the HTTP connection manager and the TCP proxy.

use serde_json::{Value, json};

use super::names::stat_name;

/// An HTTP connection manager routing everything to `cluster`. On an mTLS inbound the
/// application learns who called it from the verified client certificate; any XFCC header the
/// caller sent itself is replaced.
pub fn http_connection_manager(
    stat_prefix: &str,
    route_name: &str,
    cluster: &str,
    inbound_mtls: bool,
) -> Value {
    let mut hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_name(stat_prefix),
        "codec_type": "AUTO",
        "http_filters": [{"name": ROUTER, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        "route_config": {
            "name": route_name,
            "validate_clusters": false,
            "virtual_hosts": [{
                "name": cluster,
                "domains": ["*"],
                // No route timeout by default: streaming and long-polling calls stay open.
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}]
            }]
        }
    });
    if inbound_mtls {
        hcm["forward_client_cert_details"] = json!("SANITIZE_SET");
        hcm["set_current_client_cert_details"] = json!({"uri": true});
    }
    // Moved in, not copied as `json!` would.
    let mut filter = json!({"name": HCM, "typed_config": null});
    filter["typed_config"] = hcm;
    filter
}

/// Has the catch-all route of an [`http_connection_manager`] filter rewrite `Host` to the
/// upstream host's name (a `STRICT_DNS` endpoint's), so a server outside the mesh sees its own
/// name, not the mesh's hostname for it.
pub fn rewrite_host_to_upstream(hcm: &mut Value) {
    if let Some(route) = hcm
        .pointer_mut("/typed_config/route_config/virtual_hosts/0/routes/0/route")
        .and_then(Value::as_object_mut)
    {
        route.insert("auto_host_rewrite".into(), Value::Bool(true));
    }
}

pub fn tcp_proxy(stat_prefix: &str, cluster: &str) -> Value {
    json!({"name": TCP_PROXY, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": stat_name(stat_prefix),
        "cluster": cluster
    }})
}

/// A TCP proxy splitting connections over `splits` (cluster, weight); one cluster is a plain
/// [`tcp_proxy`].
pub fn tcp_proxy_split(stat_prefix: &str, splits: &[(String, u32)]) -> Value {
    if let [(cluster, _)] = splits {
        return tcp_proxy(stat_prefix, cluster);
    }
    let clusters: Vec<Value> = splits
        .iter()
        .map(|(name, weight)| json!({"name": name, "weight": weight}))
        .collect();
    json!({"name": TCP_PROXY, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": stat_name(stat_prefix),
        "weighted_clusters": {"clusters": clusters}
    }})
}

pub const HCM: &str = "envoy.filters.network.http_connection_manager";
pub const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
pub const ROUTER: &str = "envoy.filters.http.router";
