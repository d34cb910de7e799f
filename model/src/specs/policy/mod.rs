//! targetRef policies (Kuma 2.9 - 2.14 data model): typed specs and their validation.
//!
//! Every spec has the same skeleton: an optional top-level `targetRef` (an omitted one means
//! `{kind: Mesh}`) and some of the sections `to[]` (outbound, per destination), `from[]` (inbound,
//! per client), `rules[]` (inbound, 2.10+) or a single `default`. Allowed `targetRef` kinds follow
//! Kuma's "system policy role" (what Universal uses), which is the most permissive of its roles.

mod common;
mod mesh_access_log;
mod mesh_circuit_breaker;
mod mesh_fault_injection;
mod mesh_health_check;
mod mesh_http_route;
mod mesh_load_balancing_strategy;
mod mesh_metric;
mod mesh_passthrough;
mod mesh_proxy_patch;
mod mesh_rate_limit;
mod mesh_retry;
mod mesh_tcp_route;
mod mesh_timeout;
mod mesh_tls;
mod mesh_trace;
mod mesh_traffic_permission;

pub use common::{
    FromItem, HeaderKeyValue, HeaderMatch, HeaderMatchType, HeaderModifier, IntOrString, RuleItem,
    ToItem,
};
pub use mesh_access_log::*;
pub use mesh_circuit_breaker::*;
pub use mesh_fault_injection::*;
pub use mesh_health_check::*;
pub use mesh_http_route::*;
pub use mesh_load_balancing_strategy::*;
pub use mesh_metric::*;
pub use mesh_passthrough::*;
pub use mesh_proxy_patch::*;
pub use mesh_rate_limit::*;
pub use mesh_retry::*;
pub use mesh_tcp_route::*;
pub use mesh_timeout::*;
pub use mesh_tls::*;
pub use mesh_trace::*;
pub use mesh_traffic_permission::*;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::validate::{Validate, ValidationError, validate_as};

/// A targetRef policy's typed spec, tied to its resource type.
pub trait PolicySpec:
    DeserializeOwned + serde::Serialize + Validate + Send + Sync + 'static
{
    const KIND: crate::ResourceType;
}

macro_rules! policy_specs {
    ($($spec:ident => $kind:ident),* $(,)?) => {
        $(impl PolicySpec for $spec {
            const KIND: crate::ResourceType = crate::ResourceType::$kind;
        })*
    };
}

policy_specs! {
    MeshTrafficPermissionSpec => MeshTrafficPermission,
    MeshTimeoutSpec => MeshTimeout,
    MeshRetrySpec => MeshRetry,
    MeshCircuitBreakerSpec => MeshCircuitBreaker,
    MeshHealthCheckSpec => MeshHealthCheck,
    MeshHttpRouteSpec => MeshHTTPRoute,
    MeshTcpRouteSpec => MeshTCPRoute,
    MeshLoadBalancingStrategySpec => MeshLoadBalancingStrategy,
    MeshAccessLogSpec => MeshAccessLog,
    MeshFaultInjectionSpec => MeshFaultInjection,
    MeshRateLimitSpec => MeshRateLimit,
    MeshTlsSpec => MeshTLS,
    MeshTraceSpec => MeshTrace,
    MeshMetricSpec => MeshMetric,
    MeshProxyPatchSpec => MeshProxyPatch,
    MeshPassthroughSpec => MeshPassthrough,
}

/// Validates a policy spec of type `S`: strict structure, then its semantic checks, with paths
/// under `spec` (as Kuma reports them).
pub fn validate<S: DeserializeOwned + Validate>(spec: &Value) -> Result<(), ValidationError> {
    validate_as::<S>(spec, "spec").map(|_| ())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_policy_type_is_validated_by_its_spec() {
        // The descriptor table names a validator per type; the one of each spec's KIND must be
        // that spec's, or a policy would be stored under rules of another kind.
        fn same<S: PolicySpec>() {
            // Serde lists the spec's own fields when it meets an unknown one.
            let bogus = json!({"bogusField": 1});
            let declared = (S::KIND.descriptor().validate)(&bogus).unwrap_err();
            assert_eq!(declared, validate::<S>(&bogus).unwrap_err(), "{}", S::KIND);
            assert!(S::KIND.descriptor().is_policy);
        }
        same::<MeshTrafficPermissionSpec>();
        same::<MeshTimeoutSpec>();
        same::<MeshRetrySpec>();
        same::<MeshCircuitBreakerSpec>();
        same::<MeshHealthCheckSpec>();
        same::<MeshHttpRouteSpec>();
        same::<MeshTcpRouteSpec>();
        same::<MeshLoadBalancingStrategySpec>();
        same::<MeshAccessLogSpec>();
        same::<MeshFaultInjectionSpec>();
        same::<MeshRateLimitSpec>();
        same::<MeshTlsSpec>();
        same::<MeshTraceSpec>();
        same::<MeshMetricSpec>();
        same::<MeshProxyPatchSpec>();
        same::<MeshPassthroughSpec>();
        let policies = crate::ResourceType::all()
            .filter(|k| k.descriptor().is_policy)
            .count();
        assert_eq!(policies, 16);
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let e = validate::<MeshTimeoutSpec>(&json!({
            "targetRef": {"kind": "MeshGateway"},
            "to": [{"targetRef": {"kind": "Mesh"}, "default": {"connectionTimeout": "0s"}},
                   {"targetRef": {"kind": "Foo"}, "default": {"idleTimeout": "1s"}}]}))
        .unwrap_err();
        let fields: Vec<_> = e.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "spec.targetRef.name",
                "spec.to[0].default.connectionTimeout",
                "spec.to[1].targetRef.kind"
            ]
        );
    }
}
