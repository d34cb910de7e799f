//! MeshService family (placeholder).
use serde_json::Value;
use crate::validate::ValidationError;
pub fn validate_mesh_service(_spec: &Value) -> Result<(), ValidationError> { Ok(()) }
pub fn validate_mesh_multi_zone_service(_spec: &Value) -> Result<(), ValidationError> { Ok(()) }
pub fn validate_mesh_external_service(_spec: &Value) -> Result<(), ValidationError> { Ok(()) }
pub fn validate_hostname_generator(_spec: &Value) -> Result<(), ValidationError> { Ok(()) }
