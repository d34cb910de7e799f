//! MeshGateway (the builtin gateway; a legacy top-level type, so paths have no `spec.` prefix):
//! which proxies it runs on (`selectors`) and its listeners (`conf.listeners`).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::validate_tags;
use crate::labels::SERVICE_TAG;
use crate::validate::{Validate, ValidationError, Validator, validate_as};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshGatewaySpec {
    #[serde(default)]
    pub selectors: Vec<GatewaySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<GatewayConf>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySelector {
    #[serde(rename = "match", default)]
    pub match_tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayConf {
    #[serde(default)]
    pub listeners: Vec<Listener>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ListenerProtocol {
    Http,
    Https,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listener {
    /// Defaults to `*` (every hostname).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ListenerProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cross_mesh: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ListenerResources>,
}

impl Listener {
    pub fn hostname_or_wildcard(&self) -> &str {
        match self.hostname.as_deref() {
            None | Some("") => "*",
            Some(h) => h,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TlsMode {
    None,
    Terminate,
    Passthrough,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TlsMode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<DataSource>,
    /// Envoy TLS options; kept opaque.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
}

/// Kuma's `DataSource`: exactly one of a secret name, a file, or inline (base64) data.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_string: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limit: Option<u32>,
}

/// A lowercase RFC 1123 subdomain (what Kuma's `domainRegexp` accepts).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Kuma's `ValidateHostname`: `*`, `*.domain.name` or `domain.name`.
pub fn check_gateway_hostname(hostname: &str) -> Result<(), &'static str> {
    if hostname == "*" {
        return Ok(());
    }
    if hostname.len() > 253 {
        return Err("must be at most 253 characters");
    }
    if let Some(domain) = hostname.strip_prefix("*.") {
        return if is_dns1123_subdomain(domain) {
            Ok(())
        } else {
            Err("invalid wildcard domain")
        };
    }
    if is_dns1123_subdomain(hostname) {
        Ok(())
    } else {
        Err("invalid hostname")
    }
}

fn check_data_source(v: &mut Validator, ds: &DataSource) {
    let set = [
        ds.secret.is_some(),
        ds.file.is_some(),
        ds.inline.is_some(),
        ds.inline_string.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if set != 1 {
        v.violation("data source must have exactly one of: secret, file, inline, inlineString");
        return;
    }
    for (name, value) in [
        ("secret", &ds.secret),
        ("file", &ds.file),
        ("inlineString", &ds.inline_string),
    ] {
        if value.as_deref() == Some("") {
            v.violation_at(name, "cannot be empty");
        }
    }
    if let Some(inline) = &ds.inline {
        use base64::Engine;
        if base64::engine::general_purpose::STANDARD.decode(inline).is_err() {
            v.violation_at("inline", "must be valid base64");
        }
    }
}

fn check_listener(v: &mut Validator, l: &Listener) {
    v.port("port", l.port);
    if let Some(h) = &l.hostname
        && !h.is_empty()
        && let Err(e) = check_gateway_hostname(h)
    {
        v.violation_at("hostname", e);
    }
    let Some(protocol) = l.protocol else {
        v.violation_at("protocol", "cannot be empty");
        return;
    };
    match (protocol, &l.tls) {
        (ListenerProtocol::Http | ListenerProtocol::Tcp, Some(_)) => {
            v.violation_at(
                "tls",
                format!("must not be defined for protocol {}", protocol_name(protocol)),
            );
        }
        (ListenerProtocol::Https, None) => v.violation_at("tls", "cannot be empty"),
        (ListenerProtocol::Https | ListenerProtocol::Tls, Some(tls)) => v.field("tls", |v| {
            let mode = tls.mode.unwrap_or(TlsMode::Terminate);
            match mode {
                TlsMode::None => v.violation_at("mode", "value is not supported"),
                TlsMode::Passthrough => {
                    if protocol == ListenerProtocol::Https {
                        v.violation_at("mode", "mode is not allowed on a protocol other than TLS");
                    }
                    if !tls.certificates.is_empty() {
                        v.violation_at("certificates", "must be empty in TLS passthrough mode");
                    }
                }
                TlsMode::Terminate => {
                    if tls.certificates.is_empty() {
                        v.violation_at("certificates", "cannot be empty in TLS termination mode");
                    } else if tls.certificates.len() > 2 {
                        v.violation_at("certificates", "cannot have more than 2 certificates");
                    }
                }
            }
            v.field("certificates", |v| {
                for (i, c) in tls.certificates.iter().enumerate() {
                    v.index(i, |v| check_data_source(v, c));
                }
            });
        }),
        (ListenerProtocol::Tls, None) => {}
        (ListenerProtocol::Http | ListenerProtocol::Tcp, None) => {}
    }
    if l.cross_mesh && !matches!(protocol, ListenerProtocol::Http | ListenerProtocol::Https) {
        v.violation_at("crossMesh", "cross mesh is only supported with HTTP or HTTPS listeners");
    }
    if !l.tags.is_empty() {
        v.field("tags", |v| validate_tags(v, &l.tags));
    }
    if let Some(r) = &l.resources
        && r.connection_limit == Some(0)
    {
        v.field("resources", |v| v.violation_at("connectionLimit", "must be greater than 0"));
    }
}

impl Validate for MeshGatewaySpec {
    fn validate(&self, v: &mut Validator) {
        v.field("selectors", |v| {
            if self.selectors.is_empty() {
                v.violation("must have at least one element");
            }
            for (i, s) in self.selectors.iter().enumerate() {
                v.index(i, |v| {
                    v.field("match", |v| {
                        if s.match_tags.is_empty() {
                            v.violation("must have at least one tag");
                        }
                        validate_tags(v, &s.match_tags);
                        if !s.match_tags.contains_key(SERVICE_TAG) {
                            v.violation(format!("mandatory tag {SERVICE_TAG:?} is missing"));
                        }
                    })
                });
            }
        });
        if !self.tags.is_empty() {
            v.field("tags", |v| validate_tags(v, &self.tags));
        }
        let Some(conf) = &self.conf else {
            v.violation_at("conf", "cannot be empty");
            return;
        };
        v.field("conf", |v| {
            v.field("listeners", |v| {
                if conf.listeners.is_empty() {
                    v.violation("cannot be empty");
                }
                let mut by_endpoint: HashMap<(u32, &str), usize> = HashMap::new();
                let mut protocol_by_port: HashMap<u32, ListenerProtocol> = HashMap::new();
                for (i, l) in conf.listeners.iter().enumerate() {
                    v.index(i, |v| {
                        check_listener(v, l);
                        let host = l.hostname_or_wildcard();
                        if let Some(first) = by_endpoint.insert((l.port, host), i) {
                            v.violation_at(
                                "hostname",
                                format!("hostname {host:?} on port {} is already used by listener {first}", l.port),
                            );
                        }
                        if let Some(p) = l.protocol {
                            match protocol_by_port.get(&l.port) {
                                Some(other) if *other != p => v.violation_at(
                                    "protocol",
                                    format!(
                                        "cannot collocate {} and {} listeners on port {}",
                                        protocol_name(*other),
                                        protocol_name(p),
                                        l.port
                                    ),
                                ),
                                Some(_) => {}
                                None => {
                                    protocol_by_port.insert(l.port, p);
                                }
                            }
                        }
                    });
                }
            })
        });
    }
}

fn protocol_name(p: ListenerProtocol) -> &'static str {
    match p {
        ListenerProtocol::Http => "HTTP",
        ListenerProtocol::Https => "HTTPS",
        ListenerProtocol::Tcp => "TCP",
        ListenerProtocol::Tls => "TLS",
    }
}

pub fn validate(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<MeshGatewaySpec>(spec, "").map(|_| ())
}
