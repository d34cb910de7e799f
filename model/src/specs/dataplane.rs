//! Dataplane: a proxy's inbounds, outbounds, gateway role and admin port (Kuma 2.x shape).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{validate_address, validate_tags};
use crate::labels::SERVICE_TAG;
use crate::validate::{Validate, ValidationError, Validator, validate_as};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataplaneSpec {
    pub networking: Networking,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<Value>,
    /// Envoy settings Kuma zones send (`xdsTransportProtocolVariant`, ...); kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Networking {
    #[serde(default)]
    pub address: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub advertised_address: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound: Vec<Inbound>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound: Vec<Outbound>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Gateway>,
    // Kuma reads protobuf JSON, which takes the proto field name as well.
    #[serde(
        default,
        alias = "transparent_proxying",
        skip_serializing_if = "Option::is_none"
    )]
    pub transparent_proxying: Option<Value>,
    /// Kuma 2.14's zone ingress and egress listeners on a Dataplane: stored and synced, not
    /// served yet (docs/api.md, compatibility).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listeners: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<Admin>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inbound {
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_port: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_address: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_probe: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<InboundState>,
    /// Newer Kuma zones send the inbound's protocol here as well as in the tags.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InboundState {
    Ready,
    NotReady,
    Ignored,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Health {
    #[serde(default)]
    pub ready: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Outbound {
    pub port: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<BackendRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRef {
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum GatewayType {
    #[default]
    #[serde(rename = "DELEGATED")]
    Delegated,
    #[serde(rename = "BUILTIN")]
    Builtin,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    #[serde(rename = "type", default)]
    pub gateway_type: GatewayType,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Admin {
    pub port: u32,
}

impl Inbound {
    pub fn service(&self) -> &str {
        self.tags.get(SERVICE_TAG).map(String::as_str).unwrap_or("")
    }

    /// The port the application listens on; Kuma defaults it to the inbound port.
    pub fn effective_service_port(&self) -> u32 {
        self.service_port.unwrap_or(self.port)
    }
}

impl Validate for DataplaneSpec {
    fn validate(&self, v: &mut Validator) {
        v.field("networking", |v| self.networking.validate(v));
    }
}

impl Validate for Networking {
    fn validate(&self, v: &mut Validator) {
        validate_address(v, "address", &self.address, true);
        validate_address(v, "advertisedAddress", &self.advertised_address, false);
        if self.inbound.is_empty() && self.gateway.is_none() {
            v.violation("has to contain at least one inbound interface or gateway");
        }
        if !self.inbound.is_empty() && self.gateway.is_some() {
            v.violation("inbound cannot be defined both with gateway");
        }
        let mut seen_ports: HashMap<(String, u32), usize> = HashMap::new();
        v.field("inbound", |v| {
            for (i, inbound) in self.inbound.iter().enumerate() {
                v.index(i, |v| {
                    v.port("port", inbound.port);
                    if let Some(sp) = inbound.service_port {
                        v.port("servicePort", sp);
                    }
                    validate_address(v, "address", &inbound.address, false);
                    validate_address(v, "serviceAddress", &inbound.service_address, false);
                    let address = if inbound.address.is_empty() {
                        self.address.clone()
                    } else {
                        inbound.address.clone()
                    };
                    if let Some(first) = seen_ports.insert((address, inbound.port), i) {
                        v.violation_at(
                            "port",
                            format!(
                                "port {} clashes with networking.inbound[{first}].port",
                                inbound.port
                            ),
                        );
                    }
                    v.field("tags", |v| {
                        match inbound.tags.get(SERVICE_TAG) {
                            None => v.violation(format!("tag {SERVICE_TAG:?} has to exist")),
                            Some(s) if s.is_empty() => {
                                v.key(SERVICE_TAG, |v| v.violation("tag value cannot be empty"))
                            }
                            Some(_) => {}
                        }
                        validate_tags(v, &inbound.tags);
                    });
                });
            }
        });
        v.field("outbound", |v| {
            for (i, outbound) in self.outbound.iter().enumerate() {
                v.index(i, |v| {
                    v.port("port", outbound.port);
                    validate_address(v, "address", &outbound.address, false);
                    match (&outbound.backend_ref, outbound.tags.is_empty()) {
                        (Some(_), false) => {
                            v.violation("tags and backendRef cannot be defined at the same time")
                        }
                        (None, true) => v.violation("either tags or backendRef has to be defined"),
                        (None, false) => v.field("tags", |v| {
                            if !outbound.tags.contains_key(SERVICE_TAG) {
                                v.violation(format!("tag {SERVICE_TAG:?} has to exist"));
                            }
                            validate_tags(v, &outbound.tags);
                        }),
                        (Some(r), true) => v.field("backendRef", |v| {
                            const KINDS: &[&str] =
                                &["MeshService", "MeshExternalService", "MeshMultiZoneService"];
                            if !KINDS.contains(&r.kind.as_str()) {
                                v.violation_at(
                                    "kind",
                                    format!("value is not supported, must be one of {KINDS:?}"),
                                );
                            }
                            if r.name.is_empty() && r.labels.is_empty() {
                                v.violation("either name or labels has to be defined");
                            }
                            if let Some(p) = r.port {
                                v.port("port", p);
                            }
                        }),
                    }
                });
            }
        });
        if let Some(gw) = &self.gateway {
            v.field("gateway", |v| {
                v.field("tags", |v| {
                    if !gw.tags.contains_key(SERVICE_TAG) {
                        v.violation(format!("tag {SERVICE_TAG:?} has to exist"));
                    }
                    validate_tags(v, &gw.tags);
                });
            });
        }
        if let Some(admin) = &self.admin {
            v.field("admin", |v| v.port("port", admin.port));
        }
    }
}

pub fn validate(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<DataplaneSpec>(spec, "").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_docs_dataplane() {
        validate(&json!({"networking": {
            "address": "192.168.0.1",
            "inbound": [{"port": 9000, "servicePort": 6379, "tags": {"kuma.io/service": "redis", "kuma.io/protocol": "tcp"}}],
            "outbound": [{"port": 10001, "tags": {"kuma.io/service": "backend"}},
                         {"port": 10002, "backendRef": {"kind": "MeshService", "name": "web", "port": 8080}}],
            "admin": {"port": 9901}
        }}))
        .unwrap();
        validate(&json!({"networking": {"address": "10.0.0.1", "gateway": {"type": "BUILTIN", "tags": {"kuma.io/service": "edge"}}}})).unwrap();
    }

    #[test]
    fn requires_service_tag() {
        let e = validate(&json!({"networking": {"address": "10.0.0.1", "inbound": [{"port": 1, "tags": {"version": "v1"}}]}})).unwrap_err();
        assert_eq!(e.violations[0].field, "networking.inbound[0].tags");
        assert!(e.violations[0].reason.contains("kuma.io/service"));
    }

    #[test]
    fn rejects_clashing_ports_and_bad_address() {
        let e = validate(&json!({"networking": {"address": "not an address!", "inbound": [
            {"port": 80, "tags": {"kuma.io/service": "a"}}, {"port": 80, "tags": {"kuma.io/service": "b"}}]}})).unwrap_err();
        let fields: Vec<_> = e.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["networking.address", "networking.inbound[1].port"]);
    }

    #[test]
    fn rejects_out_of_range_port() {
        let e = validate(&json!({"networking": {"address": "10.0.0.1", "inbound": [{"port": 70000, "tags": {"kuma.io/service": "a"}}]}})).unwrap_err();
        assert_eq!(e.violations[0].field, "networking.inbound[0].port");
    }

    #[test]
    fn rejects_empty_networking() {
        let e = validate(&json!({"networking": {"address": "10.0.0.1"}})).unwrap_err();
        assert_eq!(e.violations[0].field, "networking");
        let e = validate(&json!({})).unwrap_err();
        assert!(e.violations[0].reason.contains("networking"), "{e}");
    }
}

/// What a Dataplane's `networking.transparentProxying` says, as the control plane reads it
/// (the stored value stays as given, so keys added by a newer Kuma survive a round trip).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransparentProxying {
    /// Where iptables sends the application's outgoing TCP: Envoy's `outbound:passthrough`
    /// listener (Kuma's 15001). Zero: outgoing traffic is not redirected.
    #[serde(default, alias = "redirect_port_outbound")]
    pub redirect_port_outbound: u32,
    /// Where iptables sends incoming TCP: Envoy's `inbound:passthrough` listener (15006).
    #[serde(default, alias = "redirect_port_inbound")]
    pub redirect_port_inbound: u32,
    /// Kuma's legacy list of `kuma.io/service` names this proxy may reach.
    #[serde(default, alias = "reachable_services")]
    pub reachable_services: Vec<String>,
    /// The MeshServices, MeshExternalServices and MeshMultiZoneServices this proxy reaches;
    /// absent: all of them (unless the mesh's `meshServices.mode` is `ReachableBackends`).
    #[serde(default, alias = "reachable_backends")]
    pub reachable_backends: Option<ReachableBackends>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ReachableBackends {
    #[serde(default)]
    pub refs: Vec<ReachableBackendRef>,
}

/// One reachable backend: by name, or every one of `kind` carrying `labels`; `port` narrows
/// it to one port.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ReachableBackendRef {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub port: Option<u32>,
}

impl Networking {
    /// The transparent proxy settings, when the Dataplane has them in a readable form.
    pub fn transparent_proxy(&self) -> Option<TransparentProxying> {
        let value = self.transparent_proxying.as_ref()?;
        serde_json::from_value(value.clone()).ok()
    }
}
