//! The mesh's mutual TLS: what a sidecar's inbounds require of callers and what its outbounds
//! present and verify. Certificates come over SDS, never in the listener or cluster.

use serde_json::{Value, json};

use super::core::sds;
use super::names::{identity_secret_name, mesh_ca_secret_name, spiffe_id};

const TLS_SOCKET: &str = "envoy.transport_sockets.tls";

/// An inbound's: a client certificate of this mesh is required.
pub fn inbound_mtls(mesh: &str) -> Value {
    json!({"name": TLS_SOCKET, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": true,
        "common_tls_context": {
            "tls_certificate_sds_secret_configs": [sds(identity_secret_name(mesh))],
            "combined_validation_context": {
                "default_validation_context": {"match_typed_subject_alt_names": [
                    {"san_type": "URI", "matcher": {"prefix": format!("spiffe://{mesh}/")}}
                ]},
                "validation_context_sds_secret_config": sds(mesh_ca_secret_name(mesh))
            }
        }
    }})
}

/// An outbound's: the proxy's identity, and one of `services`' identities expected of the
/// other end; `sni` routes the connection at other zones' ingresses.
pub fn outbound_mtls(mesh: &str, services: &[String], sni: &str) -> Value {
    let sans: Vec<Value> = services
        .iter()
        .map(|s| json!({"san_type": "URI", "matcher": {"exact": spiffe_id(mesh, s)}}))
        .collect();
    json!({"name": TLS_SOCKET, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "sni": sni,
        "common_tls_context": {
            "alpn_protocols": ["kuma"],
            "tls_certificate_sds_secret_configs": [sds(identity_secret_name(mesh))],
            "combined_validation_context": {
                "default_validation_context": {"match_typed_subject_alt_names": sans},
                "validation_context_sds_secret_config": sds(mesh_ca_secret_name(mesh))
            }
        }
    }})
}

/// The two secrets SDS serves a proxy: its certificate chain and key, and the mesh CA.
pub fn secrets(mesh: &str, cert_chain_pem: &str, key_pem: &str, ca_pem: &str) -> Vec<Value> {
    vec![
        json!({
            "name": identity_secret_name(mesh),
            "tls_certificate": {
                "certificate_chain": {"inline_string": cert_chain_pem},
                "private_key": {"inline_string": key_pem},
            }
        }),
        json!({
            "name": mesh_ca_secret_name(mesh),
            "validation_context": {"trusted_ca": {"inline_string": ca_pem}}
        }),
    ]
}

/// SDS name of the certificate a gateway serves from the mesh Secret `secret`.
pub fn gateway_certificate_name(secret: &str) -> String {
    format!("gateway_cert:secret:{secret}")
}

/// A gateway listener's TLS termination with the certificates named `secrets` (one per key
/// type at most, as Kuma allows), offering `alpn` to clients.
pub fn gateway_termination(secrets: &[String], alpn: &[&str]) -> Value {
    let certificates: Vec<Value> = secrets
        .iter()
        .map(|s| sds(gateway_certificate_name(s)))
        .collect();
    let mut common = json!({
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        "tls_certificate_sds_secret_configs": certificates
    });
    if !alpn.is_empty() {
        common["alpn_protocols"] = json!(alpn);
    }
    json!({"name": TLS_SOCKET, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": common
    }})
}

/// The SDS secret of a gateway certificate: the chain (leaf first) and its key.
pub fn gateway_certificate(secret: &str, chain_pem: &str, key_pem: &str) -> Value {
    json!({
        "name": gateway_certificate_name(secret),
        "tls_certificate": {
            "certificate_chain": {"inline_string": chain_pem},
            "private_key": {"inline_string": key_pem},
        }
    })
}
