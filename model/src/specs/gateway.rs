//! MeshGateway (the builtin gateway; a legacy top-level type, so paths have no `spec.` prefix):
//! which proxies it runs on (`selectors`) and its listeners (`conf.listeners`).

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::targetref::validate_ref_tags;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
    // Kuma reads protobuf JSON, which takes the proto field name as well.
    #[serde(
        default,
        alias = "connection_limit",
        skip_serializing_if = "Option::is_none"
    )]
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
        if base64::engine::general_purpose::STANDARD
            .decode(inline)
            .is_err()
        {
            v.violation_at("inline", "must be valid base64");
        }
    }
}

/// Tag keys that describe a Dataplane and so cannot be set on a gateway or its listeners.
const RESERVED_TAGS: &[&str] = &[
    "kuma.io/external-service-name",
    "kuma.io/protocol",
    SERVICE_TAG,
    "kuma.io/zone",
];

/// Kuma's `ValidateSelector` with the reserved keys forbidden (gateway and listener `tags`).
fn check_gateway_tags(v: &mut Validator, tags: &BTreeMap<String, String>) {
    if tags.is_empty() {
        return;
    }
    v.field("tags", |v| {
        validate_ref_tags(v, tags, true);
        for key in tags.keys() {
            if RESERVED_TAGS.contains(&key.as_str()) {
                v.key(key, |v| {
                    v.violation(format!("tag name must not be {key:?}"))
                });
            }
        }
    });
}

fn check_listener(v: &mut Validator, l: &Listener) {
    if let Some(h) = &l.hostname
        && !h.is_empty()
        && let Err(e) = check_gateway_hostname(h)
    {
        v.violation_at("hostname", e);
    }
    v.port("port", l.port);
    match l.protocol {
        None => v.violation_at("protocol", "cannot be empty"),
        Some(ListenerProtocol::Https) => {
            if l.cross_mesh {
                v.violation_at("protocol", "protocol is not supported with crossMesh");
            } else if l.tls.is_none() {
                v.violation_at("tls", "cannot be empty");
            } else if l.tls.as_ref().and_then(|t| t.mode) == Some(TlsMode::Passthrough) {
                v.field("tls", |v| {
                    v.violation_at("mode", "mode is not supported on HTTPS listeners")
                });
            }
        }
        Some(_) => {}
    }
    if let Some(tls) = &l.tls {
        v.field("tls", |v| {
            if l.cross_mesh {
                if tls.mode.is_some_and(|m| m != TlsMode::None) || !tls.certificates.is_empty() {
                    v.violation("must be empty with crossMesh");
                }
                return;
            }
            match tls.mode.unwrap_or(TlsMode::None) {
                TlsMode::None => v.violation_at("mode", "cannot be empty"),
                TlsMode::Terminate => match tls.certificates.len() {
                    0 => v.violation_at("certificates", "cannot be empty in TLS termination mode"),
                    1 | 2 => {}
                    _ => v.violation_at("certificates", "cannot have more than 2 certificates"),
                },
                TlsMode::Passthrough => {}
            }
            v.field("certificates", |v| {
                for (i, c) in tls.certificates.iter().enumerate() {
                    v.index(i, |v| check_data_source(v, c));
                }
            });
        });
    }
    check_gateway_tags(v, &l.tags);
}

/// Listeners sharing a port are merged into one Envoy listener, so they must agree.
fn check_listener_collapsibility(v: &mut Validator, listeners: &[Listener]) {
    let mut protocols: BTreeMap<u32, BTreeMap<Option<ListenerProtocol>, Vec<usize>>> =
        BTreeMap::new();
    let mut hostnames: BTreeMap<(u32, &str), Vec<usize>> = BTreeMap::new();
    let mut limits: BTreeMap<u32, (HashSet<u32>, Vec<usize>)> = BTreeMap::new();
    for (i, l) in listeners.iter().enumerate() {
        protocols
            .entry(l.port)
            .or_default()
            .entry(l.protocol)
            .or_default()
            .push(i);
        hostnames
            .entry((l.port, l.hostname_or_wildcard()))
            .or_default()
            .push(i);
        if let Some(limit) = l.resources.as_ref().and_then(|r| r.connection_limit)
            && limit != 0
        {
            let entry = limits.entry(l.port).or_default();
            entry.0.insert(limit);
            entry.1.push(i);
        }
    }
    let mut found: Vec<(usize, &str, &str)> = Vec::new();
    for by_protocol in protocols.values().filter(|p| p.len() > 1) {
        for &i in by_protocol.values().flatten() {
            found.push((
                i,
                "",
                "protocol conflicts with other listeners on this port",
            ));
        }
    }
    for indexes in hostnames.values().filter(|ix| ix.len() > 1) {
        for &i in indexes {
            found.push((i, "", "multiple listeners for hostname on this port"));
        }
    }
    for (_, indexes) in limits.values().filter(|(vals, _)| vals.len() > 1) {
        for &i in indexes {
            found.push((
                i,
                "resources.connectionLimit",
                "conflicting values for this port",
            ));
        }
    }
    found.sort_by_key(|(i, _, _)| *i);
    for (i, field, reason) in found {
        v.index(i, |v| {
            if field.is_empty() {
                v.violation(reason);
            } else {
                v.field("resources", |v| v.violation_at("connectionLimit", reason));
            }
        });
    }
}

impl Validate for MeshGatewaySpec {
    fn validate(&self, v: &mut Validator) {
        let cross_mesh = self
            .conf
            .as_ref()
            .is_some_and(|c| c.listeners.iter().any(|l| l.cross_mesh));
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
                        validate_ref_tags(v, &s.match_tags, true);
                        if !s.match_tags.contains_key(SERVICE_TAG) {
                            v.violation(format!("mandatory tag {SERVICE_TAG:?} is missing"));
                        }
                    });
                    if i > 0 && cross_mesh {
                        v.violation("there can be at most one selector");
                    }
                });
            }
        });
        check_gateway_tags(v, &self.tags);
        let Some(conf) = &self.conf else {
            v.violation_at("conf", "cannot be empty");
            return;
        };
        v.field("conf", |v| {
            v.field("listeners", |v| {
                if conf.listeners.is_empty() {
                    v.violation("cannot be empty");
                }
                for (i, l) in conf.listeners.iter().enumerate() {
                    v.index(i, |v| check_listener(v, l));
                }
                check_listener_collapsibility(v, &conf.listeners);
            })
        });
    }
}

pub fn validate(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<MeshGatewaySpec>(spec, "").map(|_| ())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::specs::testing;
    use serde_json::json;

    #[track_caller]
    fn err(spec: Value, field: &str, reason: &str) {
        testing::err(validate, spec, field, reason);
    }

    fn docs_gateway() -> Value {
        json!({
            "selectors": [{"match": {"kuma.io/service": "edge-gateway"}}],
            "conf": {"listeners": [
                {"port": 8080, "protocol": "HTTP", "hostname": "foo.example.com", "tags": {"port": "http-8080"}},
                {"port": 8080, "protocol": "HTTP", "hostname": "*.example.org"},
                {"port": 8443, "protocol": "HTTPS", "hostname": "secure.example.com",
                 "tls": {"mode": "TERMINATE", "certificates": [{"secret": "example-com-certificate"}]}},
                {"port": 9000, "protocol": "TCP", "resources": {"connectionLimit": 10000}},
                {"port": 9443, "protocol": "TLS", "tls": {"mode": "PASSTHROUGH"}},
                {"port": 8090, "protocol": "HTTP", "crossMesh": true}
            ]}
        })
    }

    #[test]
    fn accepts_docs_gateway() {
        validate(&docs_gateway()).unwrap();
        validate(&json!({"selectors": [{"match": {"kuma.io/service": "gw"}}],
            "conf": {"listeners": [{"port": 80, "protocol": "HTTP"}]}, "tags": {"team": "edge"}}))
        .unwrap();
    }

    #[test]
    fn default_hostname_is_wildcard() {
        let spec: MeshGatewaySpec = serde_json::from_value(docs_gateway()).unwrap();
        let listeners = &spec.conf.unwrap().listeners;
        assert_eq!(listeners[3].hostname_or_wildcard(), "*");
        assert_eq!(listeners[0].hostname_or_wildcard(), "foo.example.com");
    }

    #[test]
    fn rejects_bad_selectors() {
        err(
            json!({"conf": {"listeners": [{"port": 80, "protocol": "HTTP"}]}}),
            "selectors",
            "must have at least one element",
        );
        err(
            json!({"selectors": [{"match": {"app": "gw"}}], "conf": {"listeners": [{"port": 80, "protocol": "HTTP"}]}}),
            "selectors[0].match",
            "mandatory tag \"kuma.io/service\" is missing",
        );
    }

    #[test]
    fn rejects_bad_listeners() {
        let sel = json!([{"match": {"kuma.io/service": "gw"}}]);
        err(json!({"selectors": sel}), "conf", "cannot be empty");
        err(
            json!({"selectors": sel, "conf": {"listeners": []}}),
            "conf.listeners",
            "cannot be empty",
        );
        err(
            json!({"selectors": sel, "conf": {"listeners": [{"port": 70000, "protocol": "HTTP"}]}}),
            "conf.listeners[0].port",
            "port must be in the range [1, 65535]",
        );
        err(
            json!({"selectors": sel, "conf": {"listeners": [{"port": 80}]}}),
            "conf.listeners[0].protocol",
            "cannot be empty",
        );
        err(
            json!({"selectors": sel, "conf": {"listeners": [{"port": 80, "protocol": "UDP"}]}}),
            "conf.listeners[0].protocol",
            "unknown variant",
        );
        err(
            json!({"selectors": sel, "conf": {"listeners": [{"port": 443, "protocol": "HTTPS"}]}}),
            "conf.listeners[0].tls",
            "cannot be empty",
        );
        err(
            json!({"selectors": sel, "conf": {"listeners": [{"port": 443, "protocol": "HTTPS", "tls": {"mode": "TERMINATE"}}]}}),
            "conf.listeners[0].tls.certificates",
            "cannot be empty in TLS termination mode",
        );
        err(
            json!({"selectors": sel, "conf": {"listeners": [{"port": 443, "protocol": "TLS", "tls": {"mode": "TERMINATE", "certificates": []}}]}}),
            "conf.listeners[0].tls.certificates",
            "cannot be empty in TLS termination mode",
        );
        err(
            json!({"selectors": sel, "conf": {"listeners": [{"port": 443, "protocol": "TLS", "tls": {"certificates": [{"secret": "c"}]}}]}}),
            "conf.listeners[0].tls.mode",
            "cannot be empty",
        );
        err(
            json!({"selectors": sel, "conf": {"listeners": [{"port": 443, "protocol": "HTTPS", "tls": {"mode": "TERMINATE",
                "certificates": [{"secret": "a"}, {"secret": "b"}, {"secret": "c"}]}}]}}),
            "conf.listeners[0].tls.certificates",
            "cannot have more than 2 certificates",
        );
        err(
            json!({"selectors": sel, "conf": {"listeners": [{"port": 443, "protocol": "HTTPS", "crossMesh": true}]}}),
            "conf.listeners[0].protocol",
            "protocol is not supported with crossMesh",
        );
        err(
            json!({"selectors": sel, "conf": {"listeners": [{"port": 80, "protocol": "HTTP", "tags": {"kuma.io/service": "x"}}]}}),
            "conf.listeners[0].tags[\"kuma.io/service\"]",
            "tag name must not be \"kuma.io/service\"",
        );
        err(
            json!({"selectors": sel, "conf": {"listeners": [
                {"port": 80, "protocol": "HTTP", "hostname": "a.com", "resources": {"connectionLimit": 10}},
                {"port": 80, "protocol": "HTTP", "hostname": "b.com", "resources": {"connectionLimit": 20}}]}}),
            "conf.listeners[1].resources.connectionLimit",
            "conflicting values for this port",
        );
        err(
            json!({"selectors": sel, "conf": {"listeners": [{"port": 443, "protocol": "HTTPS", "tls": {"mode": "PASSTHROUGH"}}]}}),
            "conf.listeners[0].tls.mode",
            "mode is not supported on HTTPS listeners",
        );
        err(
            json!({"selectors": sel, "conf": {"listeners": [{"port": 80, "protocol": "HTTP", "hostname": "Bad_Host"}]}}),
            "conf.listeners[0].hostname",
            "invalid hostname",
        );
        err(
            json!({"selectors": sel, "conf": {"listeners": [{"port": 80, "protocol": "HTTP", "hostname": "*.-bad"}]}}),
            "conf.listeners[0].hostname",
            "invalid wildcard domain",
        );
        err(
            json!({"selectors": sel, "conf": {"listeners": [
                {"port": 80, "protocol": "HTTP", "hostname": "a.com"}, {"port": 80, "protocol": "HTTP", "hostname": "a.com"}]}}),
            "conf.listeners[1]",
            "multiple listeners for hostname on this port",
        );
        err(
            json!({"selectors": sel, "conf": {"listeners": [{"port": 80, "protocol": "HTTP"}, {"port": 80, "protocol": "TCP", "hostname": "x.com"}]}}),
            "conf.listeners[1]",
            "protocol conflicts with other listeners on this port",
        );
        err(
            json!({"selectors": sel, "conf": {"listeners": [{"port": 443, "protocol": "HTTPS",
                "tls": {"certificates": [{"secret": "a", "file": "/b"}]}}]}}),
            "conf.listeners[0].tls.certificates[0]",
            "exactly one of",
        );
        err(
            json!({"selectors": sel, "conf": {"listeners": [{"port": 80, "protocol": "HTTP", "prot": 1}]}}),
            "conf.listeners[0].prot",
            "unknown field",
        );
    }

    #[test]
    fn hostname_rules() {
        assert!(check_gateway_hostname("*").is_ok());
        assert!(check_gateway_hostname("*.example.com").is_ok());
        assert!(check_gateway_hostname("example.com").is_ok());
        assert!(check_gateway_hostname("exa mple.com").is_err());
        assert!(check_gateway_hostname("foo.*.com").is_err());
        assert!(check_gateway_hostname(&"a".repeat(254)).is_err());
    }
}
