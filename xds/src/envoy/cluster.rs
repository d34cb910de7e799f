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
}
