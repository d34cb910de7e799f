//! What a new mesh gets, as Kuma's `pkg/defaults/mesh` gives it: the dataplane token signing
//! key and four policies (`mesh-timeout-all-`, `mesh-gateways-timeout-all-`,
//! `mesh-circuit-breaker-all-`, `mesh-retry-all-<mesh>`), with Kuma's specs. The mesh's
//! `skipCreatingInitialPolicies` names policy types to leave out, or `'*'` for all of them.
//!
//! Only at the mesh's creation: a default the operator deleted stays deleted. A zone connected
//! to global never gets here (it cannot create meshes) and receives global's defaults by KDS.

use model::specs::mesh::MeshSpec;
use model::{Resource, ResourceType};
use serde_json::{Value, json};
use store::{SharedStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum MeshDefaultsError {
    #[error("creating the default {kind} {name:?}")]
    Store {
        kind: ResourceType,
        name: String,
        #[source]
        source: StoreError,
    },
    #[error("creating the dataplane token signing key")]
    SigningKey(#[source] security::TokenError),
}

/// Kuma's `skipCreatingInitialPolicies` entry that skips every default policy.
const SKIP_ALL: &str = "*";

/// The default policies of `mesh`, before `skipCreatingInitialPolicies` is applied.
pub fn default_policies(mesh: &str) -> Vec<Resource> {
    let policy = |kind: ResourceType, prefix: &str, spec: Value| {
        Resource::new(kind, mesh, &format!("{prefix}-{mesh}"), spec)
    };
    vec![
        policy(
            ResourceType::MeshTimeout,
            "mesh-timeout-all",
            sidecar_timeouts(),
        ),
        policy(
            ResourceType::MeshTimeout,
            "mesh-gateways-timeout-all",
            gateway_timeouts(),
        ),
        policy(
            ResourceType::MeshCircuitBreaker,
            "mesh-circuit-breaker-all",
            json!({
                "targetRef": {"kind": "Mesh"},
                "to": [{"targetRef": {"kind": "Mesh"}, "default": {"connectionLimits": {
                    "maxConnections": 1024,
                    "maxPendingRequests": 1024,
                    "maxRequests": 1024,
                    "maxRetries": 3,
                }}}],
            }),
        ),
        policy(ResourceType::MeshRetry, "mesh-retry-all", retries()),
    ]
}

/// Outbound: Kuma's default connect (5s), idle (1h), request (15s) and stream idle (30m)
/// timeouts. Inbound: twice those, with request and stream durations off, so the caller's side
/// always gives up first.
fn sidecar_timeouts() -> Value {
    json!({
        "targetRef": {"kind": "Mesh", "proxyTypes": ["Sidecar"]},
        "from": [{"targetRef": {"kind": "Mesh"}, "default": {
            "connectionTimeout": "10s",
            "idleTimeout": "2h0m0s",
            "http": {"requestTimeout": "0s", "streamIdleTimeout": "1h0m0s", "maxStreamDuration": "0s"},
        }}],
        "to": [{"targetRef": {"kind": "Mesh"}, "default": {
            "connectionTimeout": "5s",
            "idleTimeout": "1h0m0s",
            "http": {"requestTimeout": "15s", "streamIdleTimeout": "30m0s"},
        }}],
    })
}

/// Gateways face clients on the internet: short header and stream idle timeouts.
fn gateway_timeouts() -> Value {
    json!({
        "targetRef": {"kind": "Mesh", "proxyTypes": ["Gateway"]},
        "from": [{"targetRef": {"kind": "Mesh"}, "default": {
            "idleTimeout": "5m0s",
            "http": {"streamIdleTimeout": "5s", "requestHeadersTimeout": "500ms"},
        }}],
        "to": [{"targetRef": {"kind": "Mesh"}, "default": {
            "idleTimeout": "1h0m0s",
            "http": {"streamIdleTimeout": "5s"},
        }}],
    })
}

fn retries() -> Value {
    let http_like = json!({
        "numRetries": 5,
        "perTryTimeout": "16s",
        "backOff": {"baseInterval": "25ms", "maxInterval": "250ms"},
    });
    json!({
        "targetRef": {"kind": "Mesh"},
        "to": [{"targetRef": {"kind": "Mesh"}, "default": {
            "tcp": {"maxConnectAttempt": 5},
            "http": http_like,
            "grpc": http_like,
        }}],
    })
}

/// Creates what a new mesh gets. Each step tolerates an existing resource, so a retried or
/// concurrent creation is harmless.
/// `local_zone` is this zone's name on a zone or standalone control plane: the policies are
/// labelled as written there, as Kuma labels its defaults.
pub async fn ensure(
    store: &SharedStore,
    mesh: &Resource,
    local_zone: Option<&str>,
) -> Result<(), MeshDefaultsError> {
    let name = mesh.meta.name.as_str();
    security::dataplane::dataplane_signing_keys(store.clone(), name)
        .ensure_key()
        .await
        .map_err(MeshDefaultsError::SigningKey)?;
    // An unreadable spec has been refused by validation before; read it as "skip nothing".
    let skipped = serde_json::from_value::<MeshSpec>(mesh.spec.clone())
        .map(|s| s.skip_creating_initial_policies)
        .unwrap_or_default();
    if skipped.iter().any(|s| s == SKIP_ALL) {
        tracing::info!(mesh = name, "skipping all default policies");
        return Ok(());
    }
    for mut policy in default_policies(name) {
        model::labels::compute(&mut policy, local_zone);
        let (kind, policy_name) = (policy.kind, policy.meta.name.clone());
        if skipped.iter().any(|s| s == kind.name()) {
            tracing::info!(mesh = name, "skipping default {kind} {policy_name:?}");
            continue;
        }
        match store.create(policy).await {
            Ok(_) => tracing::info!(mesh = name, "created default {kind} {policy_name:?}"),
            Err(StoreError::AlreadyExists(_)) => {}
            Err(source) => {
                return Err(MeshDefaultsError::Store {
                    kind,
                    name: policy_name,
                    source,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_policy_is_valid_as_kuma_writes_it() {
        let policies = default_policies("payments");
        let names: Vec<_> = policies.iter().map(|p| p.meta.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "mesh-timeout-all-payments",
                "mesh-gateways-timeout-all-payments",
                "mesh-circuit-breaker-all-payments",
                "mesh-retry-all-payments",
            ]
        );
        for policy in &policies {
            assert_eq!(policy.meta.mesh, "payments");
            policy
                .validate()
                .unwrap_or_else(|e| panic!("{}: {e}", policy.meta.name));
        }
    }

    async fn names_in(store: &SharedStore, kind: ResourceType) -> Vec<String> {
        store
            .list(&store::ListQuery::all(kind))
            .await
            .expect("list")
            .items
            .into_iter()
            .map(|r| r.meta.name)
            .collect()
    }

    #[tokio::test]
    async fn skip_creating_initial_policies_names_types_or_all() {
        let store: SharedStore = std::sync::Arc::new(store::MemoryStore::new());
        let mesh = |name: &str, skip: Value| {
            Resource::new(
                ResourceType::Mesh,
                "",
                name,
                json!({"skipCreatingInitialPolicies": skip}),
            )
        };
        for name in ["a", "b"] {
            store.create(mesh(name, json!([]))).await.expect("mesh");
        }
        ensure(
            &store,
            &mesh("a", json!(["MeshTimeout", "MeshRetry"])),
            None,
        )
        .await
        .expect("a");
        ensure(&store, &mesh("b", json!(["*"])), None)
            .await
            .expect("b");
        assert_eq!(
            names_in(&store, ResourceType::MeshCircuitBreaker).await,
            ["mesh-circuit-breaker-all-a"]
        );
        assert!(names_in(&store, ResourceType::MeshTimeout).await.is_empty());
        assert!(names_in(&store, ResourceType::MeshRetry).await.is_empty());
        // Both meshes get their signing key whatever they skip.
        let secrets = names_in(&store, ResourceType::Secret).await;
        assert!(
            secrets
                .iter()
                .any(|s| s.starts_with("dataplane-token-signing-key-a-"))
                && secrets
                    .iter()
                    .any(|s| s.starts_with("dataplane-token-signing-key-b-")),
            "{secrets:?}"
        );
        // A retried creation tolerates the defaults that exist and adds the missing ones.
        ensure(&store, &mesh("a", json!([])), None)
            .await
            .expect("again");
        assert_eq!(names_in(&store, ResourceType::MeshTimeout).await.len(), 2);
    }
}
