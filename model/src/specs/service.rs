//! The MeshService family: MeshService, MeshMultiZoneService, MeshExternalService and the
//! HostnameGenerator that names them. All use the `spec:` layout, so paths start with `spec.`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::policy::{IntOrString, TlsVersionRange, check_tls_version_range};
use crate::validate::{Validate, ValidationError, Validator, validate_as};

/// Application protocols Kuma knows (`kuma.io/protocol` values).
const APP_PROTOCOLS: &[&str] = &["tcp", "tls", "http", "http2", "grpc", "kafka"];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

fn check_ports(v: &mut Validator, ports: &[ServicePort]) {
    v.field("ports", |v| {
        let mut seen = std::collections::HashSet::new();
        for (i, p) in ports.iter().enumerate() {
            v.index(i, |v| {
                v.port("port", p.port);
                if let Some(name) = &p.name
                    && name.is_empty()
                {
                    v.violation_at("name", "must not be empty");
                }
                match &p.target_port {
                    None => {}
                    Some(IntOrString::Int(t)) if (1..=65535).contains(t) => {}
                    Some(IntOrString::String(s)) if !s.is_empty() => {}
                    Some(_) => v.violation_at(
                        "targetPort",
                        "must be a port in the range [1, 65535] or a port name",
                    ),
                }
                if let Some(proto) = &p.app_protocol
                    && !APP_PROTOCOLS.contains(&proto.as_str())
                {
                    v.violation_at(
                        "appProtocol",
                        format!("must be one of: {}", APP_PROTOCOLS.join(", ")),
                    );
                }
                let proto = p.app_protocol.as_deref().unwrap_or("tcp");
                if !seen.insert((p.port, proto)) {
                    v.violation_at("port", "port and appProtocol must be unique");
                }
            });
        }
    });
}

fn check_match_labels(v: &mut Validator, name: &str, selector: &Option<LabelSelector>) {
    if let Some(s) = selector {
        v.field(name, |v| {
            if s.match_labels.is_empty() {
                v.violation_at("matchLabels", "must not be empty");
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// MeshService
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshServiceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<MeshServiceSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identities: Option<Vec<MeshServiceIdentity>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<MeshServiceState>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshServiceSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane_tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane_ref: Option<DataplaneRef>,
    /// Kuma 2.14's `dataplaneLabels`; `dataplane` is the spelling of earlier 2.x releases.
    #[serde(default, alias = "dataplane", skip_serializing_if = "Option::is_none")]
    pub dataplane_labels: Option<LabelSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataplaneRef {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MeshServiceIdentityType {
    ServiceTag,
    SpiffeID,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshServiceIdentity {
    #[serde(rename = "type")]
    pub identity_type: MeshServiceIdentityType,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MeshServiceState {
    Available,
    Unavailable,
}

impl Validate for MeshServiceSpec {
    fn validate(&self, v: &mut Validator) {
        if let Some(sel) = &self.selector {
            v.field("selector", |v| {
                let defined = [
                    sel.dataplane_tags.is_some(),
                    sel.dataplane_ref.is_some(),
                    sel.dataplane_labels.is_some(),
                ]
                .iter()
                .filter(|x| **x)
                .count();
                if defined > 1 {
                    v.violation(
                        "at most one of dataplaneTags, dataplaneRef, dataplaneLabels can be defined",
                    );
                }
                if let Some(tags) = &sel.dataplane_tags {
                    v.field("dataplaneTags", |v| super::validate_tags(v, tags));
                }
                if let Some(r) = &sel.dataplane_ref {
                    v.field("dataplaneRef", |v| v.require_non_empty("name", &r.name));
                }
                check_match_labels(v, "dataplaneLabels", &sel.dataplane_labels);
            });
        }
        check_ports(v, &self.ports);
        if let Some(ids) = &self.identities {
            v.field("identities", |v| {
                for (i, id) in ids.iter().enumerate() {
                    v.index(i, |v| v.require_non_empty("value", &id.value));
                }
            });
        }
    }
}

pub fn validate_mesh_service(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<MeshServiceSpec>(spec, "spec").map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// MeshMultiZoneService
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshMultiZoneServiceSpec {
    #[serde(default)]
    pub selector: MultiZoneSelector,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MultiZoneSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_service: Option<LabelSelector>,
}

impl Validate for MeshMultiZoneServiceSpec {
    fn validate(&self, v: &mut Validator) {
        v.field("selector", |v| match &self.selector.mesh_service {
            None => v.violation_at("meshService", "must be defined"),
            Some(_) => check_match_labels(v, "meshService", &self.selector.mesh_service),
        });
        if self.ports.is_empty() {
            v.violation_at("ports", "must not be empty");
        }
        check_ports(v, &self.ports);
    }
}

pub fn validate_mesh_multi_zone_service(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<MeshMultiZoneServiceSpec>(spec, "spec").map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// MeshExternalService
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshExternalServiceSpec {
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub match_: Option<ExternalMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<Extension>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<ExternalEndpoint>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ExternalTls>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ExternalMatchType {
    #[default]
    HostnameGenerator,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExternalProtocol {
    #[default]
    Tcp,
    Grpc,
    Http,
    Http2,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalMatch {
    #[serde(rename = "type", default)]
    pub match_type: ExternalMatchType,
    #[serde(default)]
    pub port: u32,
    #[serde(default)]
    pub protocol: ExternalProtocol,
}

/// A plugin's configuration; `config` is free-form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Extension {
    #[serde(rename = "type", default)]
    pub extension_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalEndpoint {
    #[serde(default)]
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalTls {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<TlsVersionRange>,
    #[serde(default)]
    pub allow_renegotiation: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VerificationMode {
    SkipSAN,
    SkipCA,
    SkipAll,
    Secured,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Verification {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<VerificationMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_alt_names: Option<Vec<SanMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<VerificationDataSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<VerificationDataSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<VerificationDataSource>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SanMatchType {
    #[default]
    Exact,
    Prefix,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SanMatch {
    #[serde(rename = "type", default)]
    pub match_type: SanMatchType,
    #[serde(default)]
    pub value: String,
}

/// Legacy (`secret`, `inline`, `inlineString`) and newer (`type` + `secretRef`/`insecureInline`)
/// data source shapes; the newer sub-objects stay opaque.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerificationDataSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_string: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub source_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_inline: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_var: Option<Value>,
}

fn check_verification_source(v: &mut Validator, name: &str, ds: &Option<VerificationDataSource>) {
    let Some(ds) = ds else { return };
    v.field(name, |v| {
        let legacy = [
            ds.secret.is_some(),
            ds.inline.is_some(),
            ds.inline_string.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        match (legacy, &ds.source_type) {
            (0, None) => v.violation("must have one of: secret, inline, inlineString, type"),
            (1, None) => {}
            (0, Some(t)) => match t.as_str() {
                "Secret" if ds.secret_ref.is_none() => {
                    v.violation_at("secretRef", "must be defined")
                }
                "InsecureInline" if ds.insecure_inline.is_none() => {
                    v.violation_at("insecureInline", "must be defined")
                }
                "Secret" | "InsecureInline" => {}
                "File" | "EnvVar" => v.violation_at("type", "value is not supported"),
                _ => v.violation_at("type", "must be one of: Secret, InsecureInline"),
            },
            _ => v.violation("must have exactly one of: secret, inline, inlineString, type"),
        }
        if ds.file.is_some() {
            v.violation_at("file", "must not be defined");
        }
        if ds.env_var.is_some() {
            v.violation_at("envVar", "must not be defined");
        }
        if let Some(inline) = &ds.inline {
            use base64::Engine;
            if base64::engine::general_purpose::STANDARD
                .decode(inline)
                .is_err()
            {
                v.violation_at("inline", "must be valid base64");
            }
        }
    });
}

/// `unix://<absolute path>`, which Kuma accepts as an endpoint address.
fn is_unix_path(s: &str) -> bool {
    s.strip_prefix("unix://")
        .is_some_and(|p| p.starts_with('/') && p.len() > 1)
}

impl Validate for MeshExternalServiceSpec {
    fn validate(&self, v: &mut Validator) {
        match &self.match_ {
            None => v.violation_at("match", "must be defined"),
            Some(m) => v.field("match", |v| {
                if m.port == 0 || m.port > 65535 {
                    v.violation_at("port", "port must be a valid (1-65535)");
                }
            }),
        }
        if let Some(ext) = &self.extension
            && ext.extension_type.is_empty()
        {
            v.field("extension", |v| v.violation_at("type", "must not be empty"));
        }
        // With an extension, endpoints and tls are the extension's business.
        if self.extension.is_some() {
            return;
        }
        if let Some(endpoints) = &self.endpoints {
            v.field("endpoints", |v| {
                for (i, e) in endpoints.iter().enumerate() {
                    v.index(i, |v| {
                        let is_ip = e.address.parse::<std::net::IpAddr>().is_ok();
                        let is_unix = is_unix_path(&e.address);
                        let is_host = !is_ip && super::is_hostname(&e.address);
                        if !(is_ip || is_unix || is_host) {
                            v.violation_at(
                                "address",
                                "address has to be a valid IP or hostname or a unix path",
                            );
                        }
                        match (e.port, is_unix) {
                            (None, false) if is_ip => {
                                v.violation_at("port", "must be defined when endpoint is an IP")
                            }
                            (None, false) if is_host => v.violation_at(
                                "port",
                                "must be defined when endpoint is a hostname",
                            ),
                            (Some(_), true) => v.violation_at(
                                "port",
                                "must not be defined when endpoint is a unix path",
                            ),
                            (Some(p), false) if p == 0 || p > 65535 => {
                                v.violation_at("port", "port must be a valid (1-65535)")
                            }
                            _ => {}
                        }
                        if let Some(p) = e.priority
                            && p > 128
                        {
                            v.violation_at("priority", "must be in inclusive range [0, 128]");
                        }
                    });
                }
            });
        }
        if let Some(tls) = &self.tls {
            v.field("tls", |v| {
                check_tls_version_range(v, "version", &tls.version);
                if let Some(ver) = &tls.verification {
                    v.field("verification", |v| {
                        for (i, san) in ver.subject_alt_names.iter().flatten().enumerate() {
                            if san.value.is_empty() {
                                v.field("subjectAltNames", |v| {
                                    v.index(i, |v| v.violation_at("value", "must not be empty"))
                                });
                            }
                        }
                        check_verification_source(v, "caCert", &ver.ca_cert);
                        check_verification_source(v, "clientCert", &ver.client_cert);
                        check_verification_source(v, "clientKey", &ver.client_key);
                        if ver.client_cert.is_some() && ver.client_key.is_none() {
                            v.violation_at(
                                "clientKey",
                                "must be defined when clientCert is defined",
                            );
                        }
                        if ver.client_cert.is_none() && ver.client_key.is_some() {
                            v.violation_at(
                                "clientCert",
                                "must be defined when clientKey is defined",
                            );
                        }
                    });
                }
            });
        }
    }
}

pub fn validate_mesh_external_service(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<MeshExternalServiceSpec>(spec, "spec").map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// HostnameGenerator
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostnameGeneratorSpec {
    #[serde(default)]
    pub template: String,
    #[serde(default)]
    pub selector: HostnameGeneratorSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<Extension>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostnameGeneratorSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_service: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_external_service: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_multi_zone_service: Option<LabelSelector>,
}

/// Go-template delimiters must pair up: every `{{` closes with `}}` before the next opens.
fn template_delimiters_balanced(t: &str) -> bool {
    let mut rest = t;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return false;
        };
        if after[..close].contains("{{") {
            return false;
        }
        rest = &after[close + 2..];
    }
    !rest.contains("}}")
}

impl Validate for HostnameGeneratorSpec {
    fn validate(&self, v: &mut Validator) {
        if self.template.is_empty() {
            v.violation_at("template", "must not be empty");
        } else if !template_delimiters_balanced(&self.template) {
            v.violation_at(
                "template",
                "couldn't parse template: unbalanced {{ }} delimiters",
            );
        }
        v.field("selector", |v| {
            let s = &self.selector;
            let defined = [
                s.mesh_service.is_some(),
                s.mesh_external_service.is_some(),
                s.mesh_multi_zone_service.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            if defined != 1 {
                v.violation(
                    "exactly one of meshService, meshExternalService, meshMultiZoneService has to be defined",
                );
            }
        });
        if let Some(ext) = &self.extension
            && ext.extension_type.is_empty()
        {
            v.field("extension", |v| v.violation_at("type", "must not be empty"));
        }
    }
}

pub fn validate_hostname_generator(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<HostnameGeneratorSpec>(spec, "spec").map(|_| ())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::specs::testing::{err, ok};
    use serde_json::json;

    #[test]
    fn mesh_service_docs_examples() {
        ok(
            validate_mesh_service,
            json!({
            "selector": {"dataplaneTags": {"app": "redis", "k8s.kuma.io/namespace": "kuma-demo"}},
            "ports": [{"port": 6739, "targetPort": 6739, "appProtocol": "tcp"},
                      {"name": "some-port", "port": 16739, "targetPort": "target-port-from-container", "appProtocol": "tcp"}],
            "identities": [{"type": "ServiceTag", "value": "redis"}],
            "state": "Available"}),
        );
        ok(
            validate_mesh_service,
            json!({"selector": {"dataplaneRef": {"name": "redis-0"}},
            "ports": [{"port": 80, "appProtocol": "http"}]}),
        );
        ok(
            validate_mesh_service,
            json!({"selector": {"dataplane": {"matchLabels": {"app": "redis"}}}, "ports": []}),
        );
    }

    #[test]
    fn mesh_service_rejections() {
        let f = validate_mesh_service;
        err(
            f,
            json!({"ports": [{"port": 0}]}),
            "spec.ports[0].port",
            "port must be in the range [1, 65535]",
        );
        err(
            f,
            json!({"ports": [{"port": 80, "targetPort": 70000}]}),
            "spec.ports[0].targetPort",
            "range",
        );
        err(
            f,
            json!({"ports": [{"port": 80, "appProtocol": "smtp"}]}),
            "spec.ports[0].appProtocol",
            "must be one of",
        );
        err(
            f,
            json!({"ports": [{"port": 80}, {"port": 80, "appProtocol": "tcp"}]}),
            "spec.ports[1].port",
            "must be unique",
        );
        err(
            f,
            json!({"selector": {"dataplaneRef": {"name": ""}}}),
            "spec.selector.dataplaneRef.name",
            "must not be empty",
        );
        err(
            f,
            json!({"selector": {"dataplaneTags": {"app": "a"}, "dataplaneRef": {"name": "x"}}}),
            "spec.selector",
            "at most one",
        );
        err(f, json!({"state": "Gone"}), "spec.state", "unknown variant");
        err(
            f,
            json!({"identities": [{"type": "Email", "value": "x"}]}),
            "spec.identities[0].type",
            "unknown variant",
        );
    }

    #[test]
    fn mesh_multi_zone_service_docs_examples() {
        ok(
            validate_mesh_multi_zone_service,
            json!({
            "selector": {"meshService": {"matchLabels": {"kuma.io/display-name": "test-server", "k8s.kuma.io/namespace": "kuma-demo"}}},
            "ports": [{"port": 80, "appProtocol": "http"}]}),
        );
    }

    #[test]
    fn mesh_multi_zone_service_rejections() {
        let f = validate_mesh_multi_zone_service;
        err(
            f,
            json!({"ports": [{"port": 80}]}),
            "spec.selector.meshService",
            "must be defined",
        );
        err(
            f,
            json!({"selector": {"meshService": {"matchLabels": {}}}, "ports": [{"port": 80}]}),
            "spec.selector.meshService.matchLabels",
            "must not be empty",
        );
        err(
            f,
            json!({"selector": {"meshService": {"matchLabels": {"a": "b"}}}}),
            "spec.ports",
            "must not be empty",
        );
    }

    #[test]
    fn mesh_external_service_docs_examples() {
        ok(
            validate_mesh_external_service,
            json!({
            "match": {"type": "HostnameGenerator", "port": 443, "protocol": "http"},
            "endpoints": [{"address": "httpbin.org", "port": 443}, {"address": "1.1.1.1", "port": 443, "priority": 1}],
            "tls": {"enabled": true, "allowRenegotiation": false, "version": {"min": "TLS12", "max": "TLS13"},
                "verification": {"mode": "Secured", "serverName": "httpbin.org",
                    "subjectAltNames": [{"type": "Exact", "value": "httpbin.org"}, {"type": "Prefix", "value": "httpbin"}],
                    "caCert": {"inline": "dGVzdA=="},
                    "clientCert": {"secret": "client-cert"},
                    "clientKey": {"secret": "client-key"}}}}),
        );
        ok(
            validate_mesh_external_service,
            json!({"match": {"port": 5432}, "endpoints": [{"address": "unix:///tmp/pg.sock"}]}),
        );
        ok(
            validate_mesh_external_service,
            json!({"match": {"port": 443}, "extension": {"type": "Lambda", "config": {"arn": "x"}}}),
        );
    }

    #[test]
    fn mesh_external_service_rejections() {
        let f = validate_mesh_external_service;
        err(f, json!({}), "spec.match", "must be defined");
        err(
            f,
            json!({"match": {"port": 0}}),
            "spec.match.port",
            "port must be a valid (1-65535)",
        );
        err(
            f,
            json!({"match": {"port": 80, "protocol": "kafka"}}),
            "spec.match.protocol",
            "unknown variant",
        );
        err(
            f,
            json!({"match": {"port": 80, "type": "Regex"}}),
            "spec.match.type",
            "unknown variant",
        );
        err(
            f,
            json!({"match": {"port": 80}, "endpoints": [{"address": "1.2.3.4"}]}),
            "spec.endpoints[0].port",
            "must be defined when endpoint is an IP",
        );
        err(
            f,
            json!({"match": {"port": 80}, "endpoints": [{"address": "not a host", "port": 80}]}),
            "spec.endpoints[0].address",
            "valid IP or hostname",
        );
        err(
            f,
            json!({"match": {"port": 80}, "tls": {"verification": {"clientCert": {"secret": "c"}}}}),
            "spec.tls.verification.clientKey",
            "must be defined when clientCert is defined",
        );
        err(
            f,
            json!({"match": {"port": 80}, "tls": {"version": {"min": "TLS13", "max": "TLS10"}}}),
            "spec.tls.version.min",
            "min version must be lower than max",
        );
        err(
            f,
            json!({"match": {"port": 80}, "tls": {"verification": {"mode": "Trusting"}}}),
            "spec.tls.verification.mode",
            "unknown variant",
        );
        err(
            f,
            json!({"match": {"port": 80}, "extension": {"type": ""}}),
            "spec.extension.type",
            "must not be empty",
        );
    }

    #[test]
    fn hostname_generator_docs_examples() {
        ok(
            validate_hostname_generator,
            json!({
            "selector": {"meshService": {"matchLabels": {"kuma.io/origin": "zone", "kuma.io/env": "universal"}}},
            "template": "{{ .DisplayName }}.svc.mesh.local"}),
        );
        ok(
            validate_hostname_generator,
            json!({
            "selector": {"meshExternalService": {"matchLabels": {"kuma.io/origin": "global"}}},
            "template": "{{ .DisplayName }}.extsvc.{{ .Zone }}.mesh.local"}),
        );
        ok(
            validate_hostname_generator,
            json!({
            "selector": {"meshMultiZoneService": {"matchLabels": {}}},
            "template": "{{ .DisplayName }}.mzsvc.mesh.local"}),
        );
    }

    #[test]
    fn hostname_generator_rejections() {
        let f = validate_hostname_generator;
        err(
            f,
            json!({"selector": {"meshService": {"matchLabels": {}}}}),
            "spec.template",
            "must not be empty",
        );
        err(
            f,
            json!({"selector": {"meshService": {}}, "template": "{{ .DisplayName .mesh"}),
            "spec.template",
            "couldn't parse template",
        );
        err(
            f,
            json!({"template": "{{ .DisplayName }}.mesh"}),
            "spec.selector",
            "exactly one of",
        );
        err(
            f,
            json!({"template": "x", "selector": {"meshGateway": {}}}),
            "spec.selector.meshGateway",
            "unknown field",
        );
    }
}
