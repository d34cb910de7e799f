//! A mesh as the generator needs it, read from the store.

use model::specs::dataplane::DataplaneSpec;
use model::specs::mesh::MeshSpec;
use model::{ResourceKey, ResourceType};
use store::{ListQuery, SharedStore, StoreError};
use xds::{DataplaneEntry, MeshSnapshot, NamedPolicy};

/// The mesh's spec and snapshot. Resources whose spec does not parse are left out with a
/// warning, so one bad Dataplane cannot break every proxy of the mesh.
pub async fn load(store: &SharedStore, mesh: &str) -> Result<(MeshSpec, MeshSnapshot), StoreError> {
    let mesh_resource = store
        .get(&ResourceKey::new(ResourceType::Mesh, "", mesh))
        .await?;
    let spec: MeshSpec = serde_json::from_value(mesh_resource.spec).unwrap_or_else(|e| {
        tracing::warn!(%mesh, error = %e, "mesh spec does not parse; treating it as empty");
        MeshSpec::default()
    });
    let mut dataplanes = Vec::new();
    for r in store
        .list(&ListQuery::in_mesh(ResourceType::Dataplane, mesh))
        .await?
        .items
    {
        match serde_json::from_value::<DataplaneSpec>(r.spec) {
            Ok(spec) => dataplanes.push(DataplaneEntry {
                name: r.meta.name,
                labels: r.meta.labels,
                spec,
            }),
            Err(e) => {
                tracing::warn!(%mesh, dataplane = %r.meta.name, error = %e, "dataplane spec does not parse; left out")
            }
        }
    }
    let mut traffic_permissions = Vec::new();
    for r in store
        .list(&ListQuery::in_mesh(
            ResourceType::MeshTrafficPermission,
            mesh,
        ))
        .await?
        .items
    {
        match serde_json::from_value(r.spec) {
            Ok(spec) => traffic_permissions.push(NamedPolicy {
                name: r.meta.name,
                spec,
            }),
            Err(e) => {
                tracing::warn!(%mesh, policy = %r.meta.name, error = %e, "MeshTrafficPermission does not parse; left out")
            }
        }
    }
    let mtls = spec
        .mtls
        .as_ref()
        .is_some_and(|m| !m.enabled_backend.is_empty());
    Ok((
        spec,
        MeshSnapshot {
            mesh: mesh.to_string(),
            mtls,
            dataplanes,
            traffic_permissions,
        },
    ))
}

/// Whether a change to `key` can alter the configuration of proxies in `mesh`.
pub fn affects(key: &ResourceKey, mesh: &str) -> bool {
    match key.kind {
        ResourceType::Mesh => key.name == mesh,
        ResourceType::Dataplane | ResourceType::MeshTrafficPermission | ResourceType::Secret => {
            key.mesh == mesh
        }
        _ => false,
    }
}
