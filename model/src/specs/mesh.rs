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

    /// The enabled legacy `metrics` backend's Prometheus configuration (Kuma's
    /// `GetEnabledMetricsBackend`), with Kuma's defaults filled in; `None` when no backend is
    /// enabled. A `conf` that does not read as one is `Err`.
    pub fn prometheus_metrics(&self) -> Option<Result<PrometheusMetricsConf, serde_json::Error>> {
        let metrics = self.metrics.as_ref()?;
        if metrics.enabled_backend.is_empty() {
            return None;
        }
        let backend = metrics
            .backends
            .iter()
            .find(|b| b.name == metrics.enabled_backend)?;
        if !matches!(backend.backend_type.as_str(), "" | "prometheus") {
            return None;
        }
        let conf = backend
            .conf
            .clone()
            .unwrap_or(Value::Object(Default::default()));
        Some(serde_json::from_value(conf))
    }
}

/// A legacy Prometheus metrics backend (Kuma's `PrometheusMetricsBackendConfig`): the Mesh's,
/// possibly overridden per Dataplane (`spec.metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusMetricsConf {
    #[serde(default = "default_prometheus_port")]
    pub port: u32,
    #[serde(default = "default_prometheus_path")]
    pub path: String,
    /// Labels Kuma adds to the MADS target (kept for compatibility; Kuma's v1 MADS ignores them).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
    /// Serve the endpoint in plaintext even when the mesh has mTLS.
    #[serde(default, rename = "skipMTLS")]
    pub skip_mtls: bool,
    /// Applications' own endpoints merged into the proxy's metrics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aggregate: Vec<PrometheusAggregate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy: Option<PrometheusEnvoy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<PrometheusTlsConf>,
}

fn default_prometheus_port() -> u32 {
    5670
}

fn default_prometheus_path() -> String {
    "/metrics".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusAggregate {
    pub name: String,
    #[serde(default = "default_prometheus_path")]
    pub path: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Kuma's `enabled` (a BoolValue): absent means enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusEnvoy {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter_regex: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_only: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PrometheusTlsMode {
    ActiveMTLSBackend,
    #[serde(rename = "providedTLS")]
    ProvidedTls,
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrometheusTlsConf {
    pub mode: PrometheusTlsMode,
}

impl PrometheusMetricsConf {
    /// The Mesh's configuration with a Dataplane's `spec.metrics` over it (Kuma's
    /// `GetPrometheusConfig`): the Dataplane's fields win, aggregates merge by name.
    pub fn with_dataplane(
        &self,
        dataplane_metrics: Option<&Value>,
    ) -> Result<PrometheusMetricsConf, serde_json::Error> {
        let Some(metrics) = dataplane_metrics else {
            return Ok(self.clone());
        };
        if !matches!(
            metrics.get("type").and_then(Value::as_str),
            Some("prometheus")
        ) {
            return Ok(self.clone());
        }
        let Some(Value::Object(over)) = metrics.get("conf") else {
            return Ok(self.clone());
        };
        let mut merged = serde_json::to_value(self)?;
        let mut aggregate = self.aggregate.clone();
        if let Value::Object(base) = &mut merged {
            for (key, value) in over {
                if key == "aggregate" {
                    let theirs: Vec<PrometheusAggregate> = serde_json::from_value(value.clone())?;
                    for a in theirs {
                        match aggregate.iter_mut().find(|mine| mine.name == a.name) {
                            Some(mine) => *mine = a,
                            None => aggregate.push(a),
                        }
                    }
                } else if let (Some(Value::Object(into)), Value::Object(from)) =
                    (base.get_mut(key), value)
                {
                    into.extend(from.clone());
                } else {
                    base.insert(key.clone(), value.clone());
                }
            }
        }
        let mut conf: PrometheusMetricsConf = serde_json::from_value(merged)?;
        conf.aggregate = aggregate;
        Ok(conf)
    }

    /// The aggregates kuma-dp scrapes: those not switched off.
    pub fn enabled_aggregates(&self) -> impl Iterator<Item = &PrometheusAggregate> {
        self.aggregate.iter().filter(|a| a.enabled != Some(false))
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

    #[test]
    fn legacy_prometheus_metrics_merge_a_dataplanes_override_as_kuma_does() {
        let spec: MeshSpec = serde_json::from_value(json!({"metrics": {
            "enabledBackend": "prometheus-1",
            "backends": [{"name": "prometheus-1", "type": "prometheus", "conf": {
                "skipMTLS": true, "envoy": {"usedOnly": true},
                "aggregate": [{"name": "app", "port": 8080}, {"name": "sidecar", "port": 9000, "path": "/stats"}]}}]}}))
        .unwrap();
        let mesh = spec.prometheus_metrics().expect("enabled").expect("parses");
        assert_eq!((mesh.port, mesh.path.as_str()), (5670, "/metrics"));
        assert!(mesh.skip_mtls);
        let dataplane = json!({"type": "prometheus", "conf": {"port": 1234, "envoy": {"filterRegex": "http"},
            "aggregate": [{"name": "app", "port": 8081, "enabled": false}, {"name": "extra", "port": 7000}]}});
        let merged = mesh.with_dataplane(Some(&dataplane)).unwrap();
        assert_eq!((merged.port, merged.path.as_str()), (1234, "/metrics"));
        let envoy = merged.envoy.clone().unwrap();
        assert_eq!(
            (envoy.filter_regex.as_str(), envoy.used_only),
            ("http", Some(true))
        );
        let enabled: Vec<(&str, u32)> = merged
            .enabled_aggregates()
            .map(|a| (a.name.as_str(), a.port))
            .collect();
        assert_eq!(enabled, vec![("sidecar", 9000), ("extra", 7000)]);
        let disabled: MeshSpec = serde_json::from_value(json!({"metrics": {
            "backends": [{"name": "prometheus-1", "type": "prometheus"}]}}))
        .unwrap();
        assert!(disabled.prometheus_metrics().is_none());
    }
}
