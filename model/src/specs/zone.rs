//! Zone (global's record of a zone), ZoneIngress and ZoneEgress.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{validate_address, validate_tags};
use crate::validate::{Validate, ValidationError, Validator, validate_as};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneSpec {
    #[serde(default = "enabled_default")]
    pub enabled: bool,
}

fn enabled_default() -> bool {
    true
}

impl Validate for ZoneSpec {
    fn validate(&self, _: &mut Validator) {}
}

pub fn validate_zone(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<ZoneSpec>(spec, "").map(|_| ())
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneIngressSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    pub networking: IngressNetworking,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub available_services: Vec<AvailableService>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressNetworking {
    #[serde(default)]
    pub address: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub advertised_address: String,
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertised_port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<super::dataplane::Admin>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AvailableService {
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub instances: u32,
    #[serde(default)]
    pub mesh: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external_service: bool,
}

impl Validate for ZoneIngressSpec {
    fn validate(&self, v: &mut Validator) {
        v.field("networking", |v| {
            let n = &self.networking;
            validate_address(v, "address", &n.address, true);
            validate_address(v, "advertisedAddress", &n.advertised_address, false);
            v.port("port", n.port);
            if let Some(p) = n.advertised_port {
                v.port("advertisedPort", p);
            }
            if n.advertised_port.is_some() == n.advertised_address.is_empty() {
                v.violation("advertisedAddress and advertisedPort must be set together");
            }
            if let Some(admin) = &n.admin {
                v.field("admin", |v| v.port("port", admin.port));
            }
        });
        v.field("availableServices", |v| {
            for (i, s) in self.available_services.iter().enumerate() {
                v.index(i, |v| {
                    v.field("tags", |v| {
                        if !s.tags.contains_key(crate::labels::SERVICE_TAG) {
                            v.violation("tag \"kuma.io/service\" has to exist");
                        }
                        validate_tags(v, &s.tags);
                    });
                });
            }
        });
    }
}

pub fn validate_zone_ingress(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<ZoneIngressSpec>(spec, "").map(|_| ())
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneEgressSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    pub networking: EgressNetworking,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressNetworking {
    #[serde(default)]
    pub address: String,
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<super::dataplane::Admin>,
}

impl Validate for ZoneEgressSpec {
    fn validate(&self, v: &mut Validator) {
        v.field("networking", |v| {
            validate_address(v, "address", &self.networking.address, true);
            v.port("port", self.networking.port);
            if let Some(admin) = &self.networking.admin {
                v.field("admin", |v| v.port("port", admin.port));
            }
        });
    }
}

pub fn validate_zone_egress(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<ZoneEgressSpec>(spec, "").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn zone_ingress() {
        validate_zone_ingress(&json!({"networking": {"address": "192.168.0.1", "advertisedAddress": "10.0.0.1", "port": 10001, "advertisedPort": 10000},
            "availableServices": [{"tags": {"kuma.io/service": "backend"}, "instances": 2, "mesh": "default"}]})).unwrap();
        let e =
            validate_zone_ingress(&json!({"networking": {"address": "192.168.0.1", "port": 0}}))
                .unwrap_err();
        assert_eq!(e.violations[0].field, "networking.port");
    }

    #[test]
    fn zone_egress_and_zone() {
        validate_zone_egress(&json!({"networking": {"address": "192.168.0.1", "port": 10002}}))
            .unwrap();
        validate_zone(&json!({"enabled": false})).unwrap();
        validate_zone(&json!({})).unwrap();
        assert!(validate_zone(&json!({"enabled": "no"})).is_err());
    }
}
