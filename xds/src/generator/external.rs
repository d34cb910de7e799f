//! A MeshExternalService's cluster (Kuma's `createMeshExternalServiceEndpoint` and its
//! `ClientSideTLS`): its endpoints inline (`STATIC` when every address is an IP, `STRICT_DNS`
//! otherwise, by `priority`), and with `tls.enabled` TLS originated by the sidecar: SNI from
//! `verification.serverName` or the first endpoint's host name, the server verified against
//! `caCert` (or the proxy host's system CAs) and `subjectAltNames` (or the server name), a
//! client certificate when both `clientCert` and `clientKey` are given, `version` and
//! `allowRenegotiation`; `verification.mode` relaxes it as Kuma does (SkipSAN, SkipCA, SkipAll).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use model::specs::service::{
    ExternalTls, MeshExternalServiceSpec, SanMatchType, VerificationDataSource, VerificationMode,
};

use crate::envoy::core::CONNECT_TIMEOUT;
use crate::envoy::endpoints::lb_endpoint;

/// Where Debian (and most distributions) keep the system's CA bundle: what Kuma falls back to
/// when a MeshExternalService names no CA.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why a MeshExternalService gets no cluster.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    #[error("{field}: Secret {secret:?} does not exist in the mesh")]
    MissingSecret { field: &'static str, secret: String },
    #[error("{field}: no data source given")]
    NoSource { field: &'static str },
    #[error("endpoints: none given")]
    NoEndpoints,
    #[error(
        "endpoints: unix sockets and host names cannot be mixed (a cluster either resolves names or has fixed addresses)"
    )]
    UnixWithHostNames,
}

/// An Envoy `DataSource` for one of Kuma's data sources; Secrets come from `secrets` (their
/// `data`, base64, by name).
fn data_source(
    field: &'static str,
    ds: &VerificationDataSource,
    secrets: &BTreeMap<String, Option<String>>,
) -> Result<Value, ExternalError> {
    let secret_ref = ds
        .secret_ref
        .as_ref()
        .and_then(|r| r.get("name"))
        .and_then(Value::as_str);
    if let Some(name) = ds.secret.as_deref().or(secret_ref) {
        return match secrets.get(name) {
            Some(Some(data)) => Ok(json!({"inline_bytes": data})),
            _ => Err(ExternalError::MissingSecret {
                field,
                secret: name.to_string(),
            }),
        };
    }
    if let Some(b64) = &ds.inline {
        return Ok(json!({"inline_bytes": b64}));
    }
    if let Some(s) = &ds.inline_string {
        return Ok(json!({"inline_string": s}));
    }
    let nested = |v: &Option<Value>, key: &str| -> Option<String> {
        v.as_ref()?.get(key)?.as_str().map(String::from)
    };
    if let Some(s) = nested(&ds.insecure_inline, "value") {
        return Ok(json!({"inline_string": s}));
    }
    if let Some(path) = nested(&ds.file, "path") {
        return Ok(json!({"filename": path}));
    }
    if let Some(name) = nested(&ds.env_var, "name") {
        return Ok(json!({"environment_variable": name}));
    }
    Err(ExternalError::NoSource { field })
}

fn is_ip(address: &str) -> bool {
    address.parse::<std::net::IpAddr>().is_ok()
}

/// The path of a `unix://` endpoint address (a socket on the proxy's host).
fn unix_path(address: &str) -> Option<&str> {
    address.strip_prefix("unix://")
}

/// The `UpstreamTlsContext` transport socket of a MeshExternalService with TLS enabled.
fn tls_socket(
    tls: &ExternalTls,
    first_host: Option<&str>,
    secrets: &BTreeMap<String, Option<String>>,
) -> Result<Value, ExternalError> {
    let verification = tls.verification.clone().unwrap_or_default();
    let mode = verification.mode.unwrap_or(VerificationMode::Secured);
    let skip_ca = matches!(mode, VerificationMode::SkipCA | VerificationMode::SkipAll);
    let skip_san = matches!(mode, VerificationMode::SkipSAN | VerificationMode::SkipAll);
    let server_name = match mode {
        VerificationMode::SkipSAN | VerificationMode::SkipAll => None,
        _ => verification
            .server_name
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| first_host.map(String::from)),
    };
    let mut common = serde_json::Map::new();
    let mut params = serde_json::Map::new();
    if let Some(v) = &tls.version {
        if let Some(min) = v.min {
            params.insert(
                "tls_minimum_protocol_version".into(),
                json!(crate::policies::mesh_tls::envoy_version(min)),
            );
        }
        if let Some(max) = v.max {
            params.insert(
                "tls_maximum_protocol_version".into(),
                json!(crate::policies::mesh_tls::envoy_version(max)),
            );
        }
    }
    if !params.is_empty() {
        common.insert("tls_params".into(), Value::Object(params));
    }
    if mode != VerificationMode::SkipAll
        && let (Some(cert), Some(key)) = (&verification.client_cert, &verification.client_key)
    {
        common.insert(
            "tls_certificates".into(),
            json!([{
                "certificate_chain": data_source("tls.verification.clientCert", cert, secrets)?,
                "private_key": data_source("tls.verification.clientKey", key, secrets)?,
            }]),
        );
    }
    if !skip_ca {
        let mut validation = serde_json::Map::new();
        let ca = match &verification.ca_cert {
            Some(ds) => data_source("tls.verification.caCert", ds, secrets)?,
            None => json!({"filename": SYSTEM_CA_BUNDLE}),
        };
        validation.insert("trusted_ca".into(), ca);
        if !skip_san {
            let sans: Vec<Value> = match &verification.subject_alt_names {
                Some(sans) if !sans.is_empty() => sans
                    .iter()
                    .map(|s| {
                        let matcher = match s.match_type {
                            SanMatchType::Exact => json!({"exact": s.value}),
                            SanMatchType::Prefix => json!({"prefix": s.value}),
                        };
                        json!({"san_type": "DNS", "matcher": matcher})
                    })
                    .collect(),
                _ => server_name
                    .iter()
                    .map(|n| json!({"san_type": "DNS", "matcher": {"exact": n}}))
                    .collect(),
            };
            if !sans.is_empty() {
                validation.insert("match_typed_subject_alt_names".into(), json!(sans));
            }
        }
        common.insert("validation_context".into(), Value::Object(validation));
    }
    let mut context = json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": Value::Object(common),
    });
    if let Some(sni) = server_name {
        context["sni"] = json!(sni);
    }
    if tls.allow_renegotiation {
        context["allow_renegotiation"] = json!(true);
    }
    Ok(json!({"name": "envoy.transport_sockets.tls", "typed_config": context}))
}

/// The cluster `name` of a MeshExternalService, with its endpoints inline.
pub fn cluster(
    name: &str,
    spec: &MeshExternalServiceSpec,
    secrets: &BTreeMap<String, Option<String>>,
) -> Result<Value, ExternalError> {
    let endpoints = spec.endpoints.as_deref().unwrap_or_default();
    if endpoints.is_empty() {
        return Err(ExternalError::NoEndpoints);
    }
    let default_port = spec.match_.as_ref().map_or(0, |m| m.port);
    // Kuma's priorities: each its own locality, lower first.
    let mut by_priority: BTreeMap<u32, Vec<Value>> = BTreeMap::new();
    for e in endpoints {
        let port = e.port.unwrap_or(default_port);
        let endpoint = match unix_path(&e.address) {
            Some(path) => json!({"endpoint": {"address": {"pipe": {"path": path}}}}),
            None => lb_endpoint(&e.address, port, None),
        };
        by_priority
            .entry(e.priority.unwrap_or(0))
            .or_default()
            .push(endpoint);
    }
    let groups: Vec<Value> = by_priority
        .into_iter()
        .enumerate()
        .map(|(i, (priority, lb_endpoints))| {
            json!({"locality": {"sub_zone": format!("priority-{priority}")},
                   "priority": i, "lb_endpoints": lb_endpoints})
        })
        .collect();
    let fixed = |a: &str| is_ip(a) || unix_path(a).is_some();
    let all_ips = endpoints.iter().all(|e| fixed(&e.address));
    let any_unix = endpoints.iter().any(|e| unix_path(&e.address).is_some());
    if any_unix && !all_ips {
        return Err(ExternalError::UnixWithHostNames);
    }
    let mut cluster = json!({
        "name": name,
        "type": if all_ips { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": CONNECT_TIMEOUT,
        "load_assignment": {"cluster_name": name, "endpoints": groups},
    });
    if !all_ips {
        cluster["dns_lookup_family"] = json!("V4_ONLY");
    }
    if let Some(tls) = spec.tls.as_ref().filter(|t| t.enabled) {
        let first_host = endpoints
            .first()
            .map(|e| e.address.as_str())
            .filter(|a| !fixed(a));
        cluster["transport_socket"] = tls_socket(tls, first_host, secrets)?;
    }
    Ok(cluster)
}

/// The mesh Secrets a MeshExternalService's TLS names.
pub fn secret_names(spec: &MeshExternalServiceSpec) -> Vec<String> {
    let Some(v) = spec.tls.as_ref().and_then(|t| t.verification.as_ref()) else {
        return Vec::new();
    };
    [&v.ca_cert, &v.client_cert, &v.client_key]
        .into_iter()
        .flatten()
        .filter_map(|ds| {
            ds.secret.clone().or_else(|| {
                ds.secret_ref
                    .as_ref()?
                    .get("name")?
                    .as_str()
                    .map(String::from)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: Value) -> MeshExternalServiceSpec {
        serde_json::from_value(v).expect("spec")
    }

    #[test]
    fn tls_origination_as_kuma_configures_it() {
        let s = spec(json!({
            "match": {"type": "HostnameGenerator", "port": 443, "protocol": "http"},
            "endpoints": [{"address": "api.example.com", "port": 8443}],
            "tls": {"enabled": true, "version": {"min": "TLS12"},
                    "verification": {"caCert": {"secret": "ca"},
                                     "subjectAltNames": [{"type": "Prefix", "value": "api."}]}}
        }));
        let secrets = BTreeMap::from([("ca".to_string(), Some("Q0E=".to_string()))]);
        let c = cluster("default_api__extsvc_443", &s, &secrets).unwrap();
        assert_eq!(c["type"], "STRICT_DNS");
        let ctx = &c["transport_socket"]["typed_config"];
        assert_eq!(ctx["sni"], "api.example.com");
        let common = &ctx["common_tls_context"];
        assert_eq!(
            common["validation_context"]["trusted_ca"]["inline_bytes"],
            "Q0E="
        );
        assert_eq!(
            common["validation_context"]["match_typed_subject_alt_names"][0]["matcher"]["prefix"],
            "api."
        );
        assert_eq!(
            common["tls_params"]["tls_minimum_protocol_version"],
            "TLSv1_2"
        );

        // A Secret that is not there: no cluster, and the error names the field.
        let e = cluster("x", &s, &BTreeMap::new()).unwrap_err();
        assert!(e.to_string().starts_with("tls.verification.caCert"), "{e}");

        // SkipAll: no SNI, no validation; IPs only: a static cluster.
        let s = spec(json!({
            "match": {"type": "HostnameGenerator", "port": 443, "protocol": "tcp"},
            "endpoints": [{"address": "10.0.0.9"}],
            "tls": {"enabled": true, "verification": {"mode": "SkipAll"}}
        }));
        let c = cluster("y", &s, &BTreeMap::new()).unwrap();
        assert_eq!(c["type"], "STATIC");
        let ctx = &c["transport_socket"]["typed_config"];
        assert!(ctx.get("sni").is_none());
        assert!(
            ctx["common_tls_context"]
                .get("validation_context")
                .is_none()
        );
        assert_eq!(
            c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
                ["port_value"],
            443
        );
    }

    #[test]
    fn a_unix_socket_endpoint_is_a_pipe_in_a_static_cluster() {
        let s = spec(json!({
            "match": {"type": "HostnameGenerator", "port": 80, "protocol": "http"},
            "endpoints": [{"address": "unix:///tmp/example.sock"}, {"address": "10.0.0.9", "port": 80}]
        }));
        let c = cluster("z", &s, &BTreeMap::new()).unwrap();
        assert_eq!(c["type"], "STATIC");
        let endpoints = &c["load_assignment"]["endpoints"][0]["lb_endpoints"];
        assert_eq!(
            endpoints[0]["endpoint"]["address"]["pipe"]["path"],
            "/tmp/example.sock"
        );
        // With a host name as well it cannot be one cluster: refused, naming the field.
        let s = spec(json!({
            "match": {"type": "HostnameGenerator", "port": 80, "protocol": "http"},
            "endpoints": [{"address": "unix:///tmp/example.sock"}, {"address": "example.com"}]
        }));
        let e = cluster("z", &s, &BTreeMap::new()).unwrap_err();
        assert!(e.to_string().starts_with("endpoints:"), "{e}");
    }
}
