//! Envoy configuration for data plane proxies, as pure functions: from a mesh's context
//! ([`context`]) a generator ([`generator`]) builds one proxy's listeners, clusters and
//! endpoints as a [`resources::ResourceSet`], the policy plugins ([`policies`], applied in
//! Kuma's order with the matching of [`rules`]) change it, and [`wire`] turns the result into
//! protobuf for ADS. Envoy's field paths are known only to [`envoy`] and the resource set's
//! accessors.

pub mod context;
pub mod envoy;
pub mod generator;
pub mod inspect;
pub mod policies;
pub mod resources;
pub mod rules;
pub mod wire;

pub use context::{
    DataplaneEntry, MeshContext, Policies, Policy, RawPolicy, RemoteIngress, SharedWork,
    ZoneProxyListener,
};
pub use resources::ProxyResources;

#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    #[error("dataplane {0:?} is not in mesh {1:?}")]
    UnknownProxy(String, String),
    #[error(transparent)]
    Wire(#[from] wire::WireError),
}

/// The configuration of sidecar `proxy_name` in `mesh`: generated, then every policy applied.
pub fn sidecar(mesh: &MeshContext, proxy_name: &str) -> Result<ProxyResources, XdsError> {
    let proxy = mesh
        .dataplane(proxy_name)
        .ok_or_else(|| XdsError::UnknownProxy(proxy_name.to_string(), mesh.mesh.clone()))?;
    let mut rs = generator::sidecar::generate(mesh, proxy);
    policies::apply_all(&mut rs, mesh, proxy);
    Ok(rs.into_resources())
}
