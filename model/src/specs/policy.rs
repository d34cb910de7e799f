//! targetRef policies (placeholder).
use serde_json::Value;
use crate::validate::ValidationError;
pub fn validate_mesh_traffic_permission(_spec: &Value) -> Result<(), ValidationError> { Ok(()) }
pub fn validate_mesh_timeout(_spec: &Value) -> Result<(), ValidationError> { Ok(()) }
pub fn validate_mesh_retry(_spec: &Value) -> Result<(), ValidationError> { Ok(()) }
pub fn validate_mesh_circuit_breaker(_spec: &Value) -> Result<(), ValidationError> { Ok(()) }
pub fn validate_mesh_health_check(_spec: &Value) -> Result<(), ValidationError> { Ok(()) }
pub fn validate_mesh_http_route(_spec: &Value) -> Result<(), ValidationError> { Ok(()) }
pub fn validate_mesh_tcp_route(_spec: &Value) -> Result<(), ValidationError> { Ok(()) }
pub fn validate_mesh_load_balancing_strategy(_spec: &Value) -> Result<(), ValidationError> { Ok(()) }
pub fn validate_mesh_access_log(_spec: &Value) -> Result<(), ValidationError> { Ok(()) }
pub fn validate_mesh_fault_injection(_spec: &Value) -> Result<(), ValidationError> { Ok(()) }
pub fn validate_mesh_rate_limit(_spec: &Value) -> Result<(), ValidationError> { Ok(()) }
pub fn validate_mesh_tls(_spec: &Value) -> Result<(), ValidationError> { Ok(()) }
pub fn validate_mesh_trace(_spec: &Value) -> Result<(), ValidationError> { Ok(()) }
pub fn validate_mesh_metric(_spec: &Value) -> Result<(), ValidationError> { Ok(()) }
pub fn validate_mesh_proxy_patch(_spec: &Value) -> Result<(), ValidationError> { Ok(()) }
pub fn validate_mesh_passthrough(_spec: &Value) -> Result<(), ValidationError> { Ok(()) }
