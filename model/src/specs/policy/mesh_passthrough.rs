//! MeshPassthrough: which destinations outside the mesh the transparent proxy passes through.

use super::common::*;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshPassthroughSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<PassthroughConf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PassthroughMode {
    All,
    Matched,
    None,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PassthroughConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passthrough_mode: Option<PassthroughMode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub append_match: Vec<PassthroughMatch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PassthroughMatchType {
    Domain,
    IP,
    CIDR,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PassthroughProtocol {
    Tcp,
    Tls,
    Grpc,
    Grpcs,
    Http,
    Http2,
    /// Kuma 2.14's MySQL protocol match.
    Mysql,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PassthroughMatch {
    #[serde(rename = "type")]
    pub match_type: PassthroughMatchType,
    #[serde(default)]
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<PassthroughProtocol>,
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits <= 32,
        Ok(std::net::IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

fn check_passthrough_conf(v: &mut Validator, c: &PassthroughConf) {
    let mode = c.passthrough_mode.unwrap_or(PassthroughMode::None);
    v.field("appendMatch", |v| {
        if mode != PassthroughMode::Matched && !c.append_match.is_empty() {
            v.violation("can only be defined with passthroughMode Matched");
        }
        for (i, m) in c.append_match.iter().enumerate() {
            v.index(i, |v| {
                let ok = match m.match_type {
                    PassthroughMatchType::Domain => {
                        let host = m.value.strip_prefix("*.").unwrap_or(&m.value);
                        crate::specs::is_hostname(host)
                    }
                    PassthroughMatchType::IP => m.value.parse::<std::net::IpAddr>().is_ok(),
                    PassthroughMatchType::CIDR => is_cidr(&m.value),
                };
                if m.value.is_empty() {
                    v.violation_at("value", "must not be empty");
                } else if !ok {
                    v.violation_at(
                        "value",
                        format!("{:?} is not a valid {:?}", m.value, m.match_type),
                    );
                }
                if let Some(p) = m.port {
                    v.port("port", p);
                }
            });
        }
    });
}

impl Validate for MeshPassthroughSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(
            v,
            &self.target_ref,
            &[K::Mesh, K::MeshSubset, K::Dataplane],
            false,
        );
        check_default(v, &self.default, &mut check_passthrough_conf);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::specs::policy::validate;
    use crate::specs::testing::{err, ok};
    use serde_json::json;

    #[test]
    fn mesh_passthrough_docs_examples() {
        ok(
            validate::<MeshPassthroughSpec>,
            json!({"targetRef": {"kind": "Mesh"}, "default": {"passthroughMode": "Matched", "appendMatch": [
            {"type": "Domain", "value": "httpbin.org", "protocol": "tls", "port": 443},
            {"type": "IP", "value": "10.240.15.39", "protocol": "tcp", "port": 8888},
            {"type": "CIDR", "value": "10.250.0.0/16", "protocol": "tcp", "port": 10000},
            {"type": "Domain", "value": "*.wikipedia.org", "protocol": "tls", "port": 443},
            {"type": "Domain", "value": "api.example.com", "protocol": "http", "port": 80}]}}),
        );
        ok(
            validate::<MeshPassthroughSpec>,
            json!({"default": {"passthroughMode": "All"}}),
        );
    }

    #[test]
    fn mesh_passthrough_rejections() {
        let f = validate::<MeshPassthroughSpec>;
        err(
            f,
            json!({"default": {"passthroughMode": "Matched", "appendMatch": [{"type": "CIDR", "value": "10.0.0.0/40"}]}}),
            "spec.default.appendMatch[0].value",
            "is not a valid CIDR",
        );
        err(
            f,
            json!({"default": {"passthroughMode": "Matched", "appendMatch": [{"type": "IP", "value": "1.2.3.4", "port": 0}]}}),
            "spec.default.appendMatch[0].port",
            "port must be in the range",
        );
        err(
            f,
            json!({"default": {"passthroughMode": "Matched", "appendMatch": [{"type": "Domain", "value": "a.com", "protocol": "udp"}]}}),
            "spec.default.appendMatch[0].protocol",
            "unknown variant",
        );
        err(
            f,
            json!({"targetRef": {"kind": "MeshService", "name": "x"}, "default": {}}),
            "spec.targetRef.kind",
            "value is not supported",
        );
    }
}
