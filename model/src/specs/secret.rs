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

    /// A secret whose data is a JSON document (the control plane keeps CAs and certificates so).
    pub fn from_json<T: Serialize>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self::from_bytes(&serde_json::to_vec(value)?))
    }

    /// The JSON document a stored secret's `spec` holds.
    pub fn decode_json<T: serde::de::DeserializeOwned>(spec: Value) -> Result<T, SecretError> {
        let secret: SecretSpec = serde_json::from_value(spec).map_err(SecretError::Json)?;
        serde_json::from_slice(&secret.bytes().map_err(SecretError::Base64)?)
            .map_err(SecretError::Json)
    }
}

/// Why a stored secret could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("data is not base64")]
    Base64(#[source] base64::DecodeError),
    #[error("not the expected JSON document")]
    Json(#[source] serde_json::Error),
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
