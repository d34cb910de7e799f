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
    DataplaneEntry, GatewayCertificate, GatewayEntry, MeshContext, Policies, Policy, RawPolicy,
    RemoteIngress, SharedWork, ZoneProxyListener,
};
pub use resources::{EndpointPlan, ProxyEnv, ProxyResources};

#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    #[error("dataplane {0:?} is not in mesh {1:?}")]
    UnknownProxy(String, String),
    #[error(transparent)]
    Wire(#[from] wire::WireError),
}

/// The configuration of Dataplane `proxy_name` in `mesh` (a sidecar, or a builtin gateway):
/// generated, then every policy applied.
pub fn sidecar(mesh: &MeshContext, proxy_name: &str) -> Result<ProxyResources, XdsError> {
    sidecar_in(mesh, proxy_name, &ProxyEnv::default())
}

/// [`sidecar`] for a proxy whose kuma-dp described its host as `env`.
pub fn sidecar_in(
    mesh: &MeshContext,
    proxy_name: &str,
    env: &ProxyEnv,
) -> Result<ProxyResources, XdsError> {
    let proxy = mesh
        .dataplane(proxy_name)
        .ok_or_else(|| XdsError::UnknownProxy(proxy_name.to_string(), mesh.mesh.clone()))?;
    let mut rs = if generator::gateway::is_builtin(proxy) {
        generator::gateway::generate(mesh, proxy)
    } else {
        generator::sidecar::generate(mesh, proxy)
    };
    rs.env = env.clone();
    if !generator::gateway::is_builtin(proxy) {
        generator::dns::add(&mut rs, mesh, proxy);
    }
    policies::mesh_metric::legacy_endpoint(&mut rs, mesh, proxy);
    policies::apply_all(&mut rs, mesh, proxy);
    Ok(rs.into_resources())
}

/// The load assignments of sidecar `proxy_name` in `mesh`, laid out again as `plan` (from its
/// configuration in `previous`) says, when nothing its listeners and clusters are generated
/// from changed between the two contexts: the mesh's settings, the proxy itself, every policy
/// that selects it (before or after the change), and each destination's cluster, service and
/// protocol. Its configuration then differs at most in endpoints. `None` when that cannot be
/// shown: generate the whole configuration again.
///
/// What else a proxy's listeners and clusters read of other Dataplanes or of policies that do
/// not select it must be checked here: today the MeshTLS conf a destination's instances offer
/// (while the mesh has MeshTLS policies, everything is generated again).
pub fn refresh_endpoints(
    previous: &MeshContext,
    mesh: &MeshContext,
    proxy_name: &str,
    plan: &EndpointPlan,
) -> Option<Vec<std::sync::Arc<serde_json::Value>>> {
    use model::ResourceType::MeshTLS;
    let assignments = plan.assignments.as_ref()?;
    if !mesh.same_settings(previous)
        || !mesh.policies.raw(MeshTLS).is_empty()
        || !previous.policies.raw(MeshTLS).is_empty()
    {
        return None;
    }
    let proxy = mesh.dataplane(proxy_name)?;
    // A gateway reads its MeshGateway, its certificates and the routes attached to the
    // MeshGateway (not to it): none of that is compared here.
    if previous.dataplane(proxy_name) != Some(proxy) || generator::gateway::is_builtin(proxy) {
        return None;
    }
    for policy in mesh.policies_changed_since(previous).iter() {
        // One that fails to resolve for the proxy shows in its warnings: that counts too.
        let matching = rules::matching::matched_policies(std::slice::from_ref(policy), proxy);
        if !matching.matched.is_empty() || !matching.warnings.is_empty() {
            return None;
        }
        // A per-route policy selects no proxy as a whole but may shape its routes.
        if rules::matching::names_a_route(policy) {
            return None;
        }
    }
    let caller_tags = proxy.caller_tags();
    assignments
        .iter()
        .map(|(before, locality)| {
            // A service's port is found by its cluster; the rest by the tags they select.
            let now = match before.sni.is_some() {
                true => generator::services::resolved_again(mesh, &before.cluster)?,
                false => generator::sidecar::resolved(mesh, &before.tags),
            };
            let same_shape = now.cluster == before.cluster
                && now.service == before.service
                && now.protocol == before.protocol;
            same_shape.then(|| {
                generator::endpoints::destination_assignment(mesh, &now, locality, &caller_tags)
            })
        })
        .collect()
}
