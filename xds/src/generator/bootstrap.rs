//! The Envoy bootstrap a proxy starts from: who it is (node id `<mesh>.<name>`, metadata), an
//! admin listener on loopback only, and one static cluster to the control plane's ADS over TLS,
//! with the dataplane token as gRPC metadata on every ADS stream.

use serde_json::{Value, json};

pub const ADS_CLUSTER: &str = "ads_cluster";

#[derive(Debug, Clone, Default)]
pub struct BootstrapParams {
    pub mesh: String,
    pub name: String,
    /// `dataplane`, `ingress` or `egress`.
    pub proxy_type: String,
    /// Envoy's `node.cluster`: the proxy's first service, or its proxy type.
    pub service: String,
    pub admin_port: u32,
    /// The dataplane server as the proxy reaches it.
    pub cp_host: String,
    pub cp_port: u32,
    /// The CA that signed the dataplane server's certificate; `None` to use the system's roots.
    pub cp_ca_pem: Option<String>,
    pub token: Option<String>,
    /// Extra node metadata (versions, kuma-dp's features).
    pub metadata: serde_json::Map<String, Value>,
}

pub fn node_id(mesh: &str, name: &str) -> String {
    format!("{mesh}.{name}")
}

pub fn generate(p: &BootstrapParams) -> Value {
    let cp_is_ip = p.cp_host.parse::<std::net::IpAddr>().is_ok();
    let mut metadata = p.metadata.clone();
    metadata.insert("dataplane.mesh".into(), json!(p.mesh));
    metadata.insert("dataplane.name".into(), json!(p.name));
    metadata.insert("dataplane.proxyType".into(), json!(p.proxy_type));
    metadata.insert(
        "dataplane.admin.port".into(),
        json!(p.admin_port.to_string()),
    );
    let mut validation = json!({});
    if let Some(ca) = &p.cp_ca_pem {
        validation["trusted_ca"] = json!({"inline_string": ca});
    } else {
        validation["trusted_ca"] = json!({"filename": "/etc/ssl/certs/ca-certificates.crt"});
    }
    let san_type = if cp_is_ip { "IP_ADDRESS" } else { "DNS" };
    validation["match_typed_subject_alt_names"] =
        json!([{"san_type": san_type, "matcher": {"exact": p.cp_host}}]);
    let mut grpc_service = json!({"envoy_grpc": {"cluster_name": ADS_CLUSTER}});
    if let Some(token) = &p.token {
        grpc_service["initial_metadata"] = json!([{"key": "authorization", "value": token}]);
    }
    json!({
        "node": {
            "id": node_id(&p.mesh, &p.name),
            "cluster": p.service,
            "metadata": metadata,
        },
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": p.admin_port}},
            "access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": "/dev/null"}}]
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [grpc_service]
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0s"},
            "lds_config": {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0s"}
        },
        "static_resources": {
            "clusters": [{
                "name": ADS_CLUSTER,
                "type": if cp_is_ip { "STATIC" } else { "STRICT_DNS" },
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {
                        "connection_keepalive": {"interval": "15s", "timeout": "10s"}}}
                }},
                "upstream_connection_options": {"tcp_keepalive": {
                    "keepalive_probes": 3, "keepalive_time": 10, "keepalive_interval": 10}},
                "load_assignment": {
                    "cluster_name": ADS_CLUSTER,
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                        "address": p.cp_host, "port_value": p.cp_port}}}}]}]
                },
                "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": p.cp_host,
                    "common_tls_context": {
                        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                        "alpn_protocols": ["h2"],
                        "validation_context": validation
                    }
                }}
            }]
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_is_valid_envoy_and_keeps_admin_on_loopback() {
        let b = generate(&BootstrapParams {
            mesh: "default".into(),
            name: "web-1".into(),
            proxy_type: "dataplane".into(),
            service: "web".into(),
            admin_port: 9901,
            cp_host: "127.0.0.1".into(),
            cp_port: 5678,
            cp_ca_pem: Some("-----BEGIN CERTIFICATE-----\n".into()),
            token: Some("tok".into()),
            metadata: Default::default(),
        });
        crate::wire::encode(crate::wire::BOOTSTRAP, &b).expect("valid bootstrap");
        assert_eq!(b["node"]["id"], "default.web-1");
        assert_eq!(
            b["admin"]["address"]["socket_address"]["address"],
            "127.0.0.1"
        );
        assert_eq!(
            b["dynamic_resources"]["ads_config"]["grpc_services"][0]["initial_metadata"][0]["value"],
            "tok"
        );
        assert_eq!(b["static_resources"]["clusters"][0]["type"], "STATIC");
    }
}
