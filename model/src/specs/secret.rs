//! Secret and GlobalSecret: base64 `data`.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::validate::{Validate, ValidationError, Validator, validate_as};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSpec {
    #[serde(default)]
    pub data: String,
}

impl SecretSpec {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        SecretSpec {
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    pub fn bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(self.data.trim())
    }
}

impl Validate for SecretSpec {
    fn validate(&self, v: &mut Validator) {
        if self.data.is_empty() {
            v.violation_at("data", "cannot be empty");
        } else if self.bytes().is_err() {
            v.violation_at("data", "must be valid base64");
        }
    }
}

pub fn validate(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<SecretSpec>(spec, "").map(|_| ())
}

/// `Config`: an opaque string the control plane keeps for itself (cluster id and the like).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigSpec {
    #[serde(default)]
    pub config: String,
}

impl Validate for ConfigSpec {
    fn validate(&self, _: &mut Validator) {}
}

pub fn validate_config(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<ConfigSpec>(spec, "").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets() {
        validate(&json!({"data": "dmFsdWU="})).unwrap();
        assert_eq!(
            validate(&json!({"data": "!!"})).unwrap_err().violations[0].field,
            "data"
        );
        assert_eq!(
            validate(&json!({})).unwrap_err().violations[0].field,
            "data"
        );
    }
}
