//! Mesh: mTLS backends, routing switches and the observability backends.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::validate::{Validate, ValidationError, Validator, validate_as};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<Mtls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Routing>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<Networking>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Backends>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Backends>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsBackends>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_services: Option<MeshServices>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_creating_initial_policies: Vec<String>,
}

impl MeshSpec {
    /// Whether mutual TLS is on: an enabled backend is named.
    pub fn mtls_enabled(&self) -> bool {
        self.mtls
            .as_ref()
            .is_some_and(|m| !m.enabled_backend.is_empty())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mtls {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub enabled_backend: String,
    #[serde(default)]
    pub backends: Vec<CaBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_validation: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaType {
    Builtin,
    Provided,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MtlsMode {
    #[serde(rename = "STRICT")]
    Strict,
    #[serde(rename = "PERMISSIVE")]
    Permissive,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaBackend {
    pub name: String,
    #[serde(rename = "type")]
    pub ca_type: CaType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp_cert: Option<DpCert>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_chain: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DpCert {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rotation {
    pub expiration: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Routing {
    #[serde(default)]
    pub locality_aware_load_balancing: bool,
    #[serde(default)]
    pub zone_egress: bool,
    #[serde(default)]
    pub default_forbid_mesh_external_service_access: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Networking {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<OutboundNetworking>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundNetworking {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passthrough: Option<bool>,
}

/// Tracing and logging share this shape: named backends and a default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backends {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_backend: String,
    #[serde(default)]
    pub backends: Vec<NamedBackend>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsBackends {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub enabled_backend: String,
    #[serde(default)]
    pub backends: Vec<NamedBackend>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamedBackend {
    pub name: String,
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub backend_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshServices {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MeshServicesMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MeshServicesMode {
    Disabled,
    Everywhere,
    ReachableBackends,
    Exclusive,
}

impl Validate for MeshSpec {
    fn validate(&self, v: &mut Validator) {
        if let Some(mtls) = &self.mtls {
            v.field("mtls", |v| mtls.validate(v));
        }
        if let Some(t) = &self.tracing {
            v.field("tracing", |v| {
                validate_backends(v, "defaultBackend", &t.default_backend, &t.backends)
            });
        }
        if let Some(l) = &self.logging {
            v.field("logging", |v| {
                validate_backends(v, "defaultBackend", &l.default_backend, &l.backends)
            });
        }
        if let Some(m) = &self.metrics {
            v.field("metrics", |v| {
                validate_backends(v, "enabledBackend", &m.enabled_backend, &m.backends);
                for (i, b) in m.backends.iter().enumerate() {
                    if !b.backend_type.is_empty() && b.backend_type != "prometheus" {
                        v.field("backends", |v| {
                            v.index(i, |v| {
                                v.violation_at(
                                    "type",
                                    "unknown backend type. Available backends: \"prometheus\"",
                                )
                            })
                        });
                    }
                }
            });
        }
    }
}

impl Validate for Mtls {
    fn validate(&self, v: &mut Validator) {
        let mut names = std::collections::HashSet::new();
        v.field("backends", |v| {
            for (i, b) in self.backends.iter().enumerate() {
                v.index(i, |v| {
                    if b.name.is_empty() {
                        v.violation_at("name", "must not be empty");
                    } else if !names.insert(b.name.as_str()) {
                        v.violation_at(
                            "name",
                            format!("{:?} name is already used for another backend", b.name),
                        );
                    }
                    if let Some(dp) = &b.dp_cert {
                        v.field("dpCert", |v| {
                            if let Some(r) = &dp.rotation {
                                v.field("rotation", |v| {
                                    if let Err(e) = parse_cert_duration(&r.expiration) {
                                        v.violation_at("expiration", e);
                                    }
                                });
                            }
                            v.duration("requestTimeout", &dp.request_timeout);
                        });
                    }
                    if b.ca_type == CaType::Provided {
                        v.field("conf", |v| validate_provided_conf(v, b.conf.as_ref()));
                    }
                    if b.ca_type == CaType::Builtin
                        && let Some(conf) = &b.conf
                    {
                        v.field("conf", |v| validate_builtin_conf(v, conf));
                    }
                });
            }
        });
        if !self.enabled_backend.is_empty()
            && !self.backends.iter().any(|b| b.name == self.enabled_backend)
        {
            v.violation_at(
                "enabledBackend",
                "has to be set to one of the backends in the mesh",
            );
        }
    }
}

/// Provided CAs point at a certificate and a key, each as `secret`, `file`, `inline` or `inlineString`.
fn validate_provided_conf(v: &mut Validator, conf: Option<&Value>) {
    let Some(Value::Object(conf)) = conf else {
        v.violation("must be defined for a provided CA with cert and key");
        return;
    };
    for field in ["cert", "key"] {
        v.field(field, |v| match conf.get(field) {
            Some(Value::Object(src)) => {
                let known = ["secret", "file", "inline", "inlineString"];
                if src.len() != 1 || !src.keys().all(|k| known.contains(&k.as_str())) {
                    v.violation("must have exactly one of secret, file, inline or inlineString");
                }
            }
            _ => v.violation("must be defined"),
        });
    }
}

fn validate_builtin_conf(v: &mut Validator, conf: &Value) {
    let Value::Object(conf) = conf else {
        v.violation("must be an object");
        return;
    };
    for key in conf.keys() {
        if key != "caCert" {
            v.violation_at(key, "unknown field");
        }
    }
    if let Some(ca) = conf.get("caCert") {
        v.field("caCert", |v| {
            let Value::Object(ca) = ca else {
                v.violation("must be an object");
                return;
            };
            for (k, val) in ca {
                match k.as_str() {
                    "RSAbits" => {
                        if !val.as_u64().is_some_and(|b| (2048..=8192).contains(&b)) {
                            v.violation_at("RSAbits", "must be a number between 2048 and 8192");
                        }
                    }
                    "expiration" => match val.as_str() {
                        Some(s) => {
                            if let Err(e) = parse_cert_duration(s) {
                                v.violation_at("expiration", e);
                            }
                        }
                        None => v.violation_at("expiration", "must be a string such as \"10y\""),
                    },
                    other => v.violation_at(other, "unknown field"),
                }
            }
        });
    }
}

/// Certificate lifetimes in Kuma also accept days (`d`) and years (`y`), on top of Go units.
pub fn parse_cert_duration(s: &str) -> Result<std::time::Duration, String> {
    let day = 24 * 3600;
    for (suffix, secs) in [("y", 365 * day), ("d", day)] {
        if let Some(n) = s.strip_suffix(suffix)
            && let Ok(n) = n.parse::<u64>()
        {
            return if n == 0 {
                Err("must be positive".into())
            } else {
                Ok(std::time::Duration::from_secs(n * secs))
            };
        }
    }
    match crate::duration::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be positive".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

fn validate_backends(
    v: &mut Validator,
    default_field: &str,
    default: &str,
    backends: &[NamedBackend],
) {
    let mut names = std::collections::HashSet::new();
    v.field("backends", |v| {
        for (i, b) in backends.iter().enumerate() {
            v.index(i, |v| {
                if b.name.is_empty() {
                    v.violation_at("name", "must not be empty");
                } else if !names.insert(b.name.as_str()) {
                    v.violation_at(
                        "name",
                        format!("{:?} name is already used for another backend", b.name),
                    );
                }
                if let Some(s) = b.sampling
                    && !(0.0..=100.0).contains(&s)
                {
                    v.violation_at("sampling", "must be in the range [0.0, 100.0]");
                }
            });
        }
    });
    if !default.is_empty() && !backends.iter().any(|b| b.name == default) {
        v.violation_at(
            default_field,
            "has to be set to one of the backends in the mesh",
        );
    }
}

pub fn validate(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<MeshSpec>(spec, "").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_docs_mesh_with_builtin_mtls() {
        let spec = json!({
            "mtls": {"enabledBackend": "ca-1", "backends": [
                {"name": "ca-1", "type": "builtin", "dpCert": {"rotation": {"expiration": "1d"}},
                 "conf": {"caCert": {"RSAbits": 2048, "expiration": "10y"}}}]},
            "routing": {"localityAwareLoadBalancing": true, "zoneEgress": true},
            "metrics": {"enabledBackend": "prometheus-1", "backends": [{"name": "prometheus-1", "type": "prometheus", "conf": {"port": 5670, "path": "/metrics"}}]},
            "meshServices": {"mode": "Exclusive"}
        });
        validate(&spec).unwrap();
    }

    #[test]
    fn accepts_provided_ca() {
        let spec = json!({"mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "provided",
            "conf": {"cert": {"secret": "my-cert"}, "key": {"secret": "my-key"}}}]}});
        validate(&spec).unwrap();
    }

    #[test]
    fn rejects_unknown_enabled_backend_and_type() {
        let e = validate(&json!({"mtls": {"enabledBackend": "x", "backends": [{"name": "ca-1", "type": "builtin"}]}})).unwrap_err();
        assert_eq!(e.violations[0].field, "mtls.enabledBackend");
        let e = validate(&json!({"mtls": {"backends": [{"name": "ca-1", "type": "vault"}]}}))
            .unwrap_err();
        assert_eq!(e.violations[0].field, "mtls.backends[0].type");
        let e = validate(&json!({"mtls": {"backends": [{"name": "ca-1", "type": "provided"}]}}))
            .unwrap_err();
        assert_eq!(e.violations[0].field, "mtls.backends[0].conf");
    }

    #[test]
    fn rejects_unknown_top_level_field() {
        let e = validate(&json!({"mtsl": {}})).unwrap_err();
        assert!(e.violations[0].reason.contains("unknown field"));
    }
}
