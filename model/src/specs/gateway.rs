//! MeshGateway (placeholder, filled in with the policy specs).
use serde_json::Value;
use crate::validate::ValidationError;
pub fn validate(_spec: &Value) -> Result<(), ValidationError> { Ok(()) }
