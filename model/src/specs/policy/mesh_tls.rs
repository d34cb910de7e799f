//! MeshTLS: inbound mTLS mode (Strict/Permissive), TLS versions and ciphers.

use super::common::*;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTlsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<FromItem<TlsConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleItem<TlsConf>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TlsVersion {
    TLSAuto,
    TLS10,
    TLS11,
    TLS12,
    TLS13,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsVersionRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<TlsVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<TlsVersion>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsMode {
    Permissive,
    Strict,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<TlsVersionRange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_ciphers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TlsMode>,
}

const TLS_CIPHERS: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305",
];

/// `min <= max`, where `TLSAuto` is only comparable to itself. Shared with MeshExternalService.
pub(crate) fn check_tls_version_range(v: &mut Validator, name: &str, r: &Option<TlsVersionRange>) {
    let Some(r) = r else { return };
    if let (Some(min), Some(max)) = (r.min, r.max)
        && min != TlsVersion::TLSAuto
        && max != TlsVersion::TLSAuto
        && min > max
    {
        v.field(name, |v| {
            v.violation_at("min", "min version must be lower than max")
        });
    }
}

fn check_tls_conf(v: &mut Validator, c: &TlsConf) {
    check_tls_version_range(v, "tlsVersion", &c.tls_version);
    v.field("tlsCiphers", |v| {
        let mut seen = HashSet::new();
        for (i, cipher) in c.tls_ciphers.iter().enumerate() {
            v.index(i, |v| {
                if !TLS_CIPHERS.contains(&cipher.as_str()) {
                    v.violation(format!("must be one of: {}", TLS_CIPHERS.join(", ")));
                } else if !seen.insert(cipher.as_str()) {
                    v.violation("duplicate cipher");
                }
            });
        }
    });
}

impl Validate for MeshTlsSpec {
    fn validate(&self, v: &mut Validator) {
        check_top(
            v,
            &self.target_ref,
            &[
                K::Mesh,
                K::MeshSubset,
                K::MeshService,
                K::MeshServiceSubset,
                K::Dataplane,
            ],
            true,
        );
        if self.from.is_empty() && self.rules.is_empty() {
            v.violation_at("from", "needs at least one item");
        }
        check_from(v, &self.from, ONLY_MESH, check_tls_conf);
        check_rules(v, &self.rules, check_tls_conf);
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
    fn mesh_tls_docs_examples() {
        ok(
            validate::<MeshTlsSpec>,
            json!({"targetRef": {"kind": "Mesh"},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {
                "tlsVersion": {"min": "TLS13", "max": "TLS13"},
                "tlsCiphers": ["ECDHE-ECDSA-AES256-GCM-SHA384"], "mode": "Strict"}}]}),
        );
        ok(
            validate::<MeshTlsSpec>,
            json!({"targetRef": {"kind": "Dataplane", "labels": {"app": "legacy"}},
            "rules": [{"default": {"mode": "Permissive"}}]}),
        );
    }

    #[test]
    fn mesh_tls_rejections() {
        let f = validate::<MeshTlsSpec>;
        err(
            f,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {"tlsVersion": {"min": "TLS13", "max": "TLS12"}}}]}),
            "spec.from[0].default.tlsVersion.min",
            "min version must be lower than max",
        );
        err(
            f,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {"tlsCiphers": ["RC4"]}}]}),
            "spec.from[0].default.tlsCiphers[0]",
            "must be one of",
        );
        err(
            f,
            json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {"mode": "Lax"}}]}),
            "spec.from[0].default.mode",
            "unknown variant",
        );
        err(
            f,
            json!({"targetRef": {"kind": "MeshGateway", "name": "gw"}, "from": [{"targetRef": {"kind": "Mesh"}, "default": {}}]}),
            "spec.targetRef.kind",
            "value is not supported",
        );
        err(f, json!({}), "spec.from", "needs at least one item");
    }
}
