//! Clusters: EDS clusters of mesh destinations, static clusters of local applications, and the
//! accessor policies edit them through.

use serde_json::{Map, Value, json};

use super::core::{CONNECT_TIMEOUT, ads_config};
use super::endpoints::lb_endpoint;

/// A cluster whose endpoints come over EDS.
pub fn eds_cluster(name: &str) -> Value {
    json!({
        "name": name,
        "type": "EDS",
        "eds_cluster_config": {"eds_config": ads_config()},
        "connect_timeout": CONNECT_TIMEOUT
    })
}

/// A cluster of one fixed endpoint (an inbound's application).
pub fn static_cluster(name: &str, address: &str, port: u32) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [lb_endpoint(address, port, None)]}]
        }
    })
}

/// HTTP/2 to the upstream (gRPC and `http2` services).
pub fn use_http2_upstream(cluster: &mut Value) {
    cluster["typed_extension_protocol_options"] = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}
        }
    });
}

pub fn set_transport_socket(cluster: &mut Value, socket: Value) {
    cluster["transport_socket"] = socket;
}

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// A cluster as a policy edits it.
pub struct ClusterMut<'a>(pub(crate) &'a mut Value);

impl ClusterMut<'_> {
    pub fn name(&self) -> &str {
        self.0["name"].as_str().unwrap_or_default()
    }

    /// Sets `fields`, keeping the transport socket last so a cluster reads: what it is, how it
    /// balances, how it connects.
    pub fn set_fields(&mut self, fields: Map<String, Value>) {
        let Some(cluster) = self.0.as_object_mut() else {
            return;
        };
        let socket = cluster.remove("transport_socket");
        cluster.extend(fields);
        if let Some(s) = socket {
            cluster.insert("transport_socket".into(), s);
        }
    }

    /// The cluster's `UpstreamTlsContext`, when it has a TLS transport socket.
    pub fn upstream_tls_context(&mut self) -> Option<&mut Map<String, Value>> {
        self.0
            .get_mut("transport_socket")?
            .get_mut("typed_config")?
            .as_object_mut()
    }

    /// The cluster's upstream `HttpProtocolOptions`, created (HTTP/1.1 unless the cluster
    /// already speaks HTTP/2 upstream) when it has none; `None` only for a malformed cluster.
    pub fn http_protocol_options(&mut self) -> Option<&mut Map<String, Value>> {
        if self.0.get("typed_extension_protocol_options").is_none() {
            let mut options = Map::new();
            options.insert(
                HTTP_PROTOCOL_OPTIONS.into(),
                json!({
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http_protocol_options": {}}
                }),
            );
            self.set_fields(Map::from_iter([(
                "typed_extension_protocol_options".to_string(),
                Value::Object(options),
            )]));
        }
        let options = self
            .0
            .get_mut("typed_extension_protocol_options")?
            .as_object_mut()?
            .entry(HTTP_PROTOCOL_OPTIONS)
            .or_insert_with(|| {
                json!({
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http_protocol_options": {}}
                })
            });
        options.as_object_mut()
    }
}
