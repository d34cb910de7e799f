//! Policy plugins (Kuma's `pkg/plugins/policies/<name>`): each reads the policies of its type
//! from the mesh context, works out which apply to a proxy, and changes the proxy's generated
//! resources. They run in Kuma's order, on the [`ResourceSet`] the generator built; adding a
//! policy is adding a module here and an entry to [`PLUGINS`].

mod mesh_load_balancing_strategy;
mod mesh_timeout;
mod mesh_traffic_permission;

use model::ResourceType;

use crate::context::{DataplaneEntry, MeshContext};
use crate::resources::ResourceSet;

pub trait PolicyPlugin: Sync {
    /// The policy type this plugin translates.
    fn kind(&self) -> ResourceType;
    /// Changes `rs`, the configuration of `proxy` in `mesh`, as the policies of
    /// [`PolicyPlugin::kind`] that select it say.
    fn apply(&self, rs: &mut ResourceSet, mesh: &MeshContext, proxy: &DataplaneEntry);
}

/// Every plugin, in Kuma's order (each type's `+kuma:policy:order`: MeshHTTPRoute 100,
/// MeshTCPRoute 200, MeshTLS 300, MeshLoadBalancingStrategy 400, MeshPassthrough 500,
/// MeshAccessLog 600, MeshTrace 700, MeshFaultInjection 800, MeshRateLimit 900, MeshTimeout
/// 1000, MeshTrafficPermission 1100, MeshHealthCheck 1200, MeshCircuitBreaker 1300,
/// MeshRetry 1400, MeshMetric 1500, MeshProxyPatch 9999).
pub static PLUGINS: &[&dyn PolicyPlugin] = &[
    &mesh_load_balancing_strategy::Plugin,
    &mesh_timeout::Plugin,
    &mesh_traffic_permission::Plugin,
];

/// The policy types plugins read: what a mesh context must hold.
pub fn kinds() -> impl Iterator<Item = ResourceType> {
    PLUGINS.iter().map(|p| p.kind())
}

/// Applies every plugin in order.
pub fn apply_all(rs: &mut ResourceSet, mesh: &MeshContext, proxy: &DataplaneEntry) {
    for plugin in PLUGINS {
        plugin.apply(rs, mesh, proxy);
    }
}
