//! MeshHTTPRoute (Kuma's `pkg/plugins/policies/meshhttproute`) on sidecars: the rules of the
//! routes that select a proxy, merged per destination service, become the route table of
//! the HTTP outbounds to that service ([`crate::generator::routes`] builds it). Gateways
//! get their routes from the gateway generator.

use model::ResourceType;

use super::PolicyPlugin;
use crate::context::{DataplaneEntry, MeshContext};
use crate::generator::routes::build_routes;
use crate::resources::{Origin, ResourceSet};
use crate::rules::build::http_route_rules;
use crate::rules::{Matched, matching::matched_in};

pub struct Plugin;

impl PolicyPlugin for Plugin {
    fn kind(&self) -> ResourceType {
        ResourceType::MeshHTTPRoute
    }

    fn apply(&self, rs: &mut ResourceSet, mesh: &MeshContext, proxy: &DataplaneEntry) {
        let matching = matched_in(mesh, self.kind(), proxy);
        if matching.matched.is_empty() {
            return;
        }
        let mut routed = Vec::new();
        for (origin, destination) in outbounds(rs) {
            let dest = &rs.destinations[destination];
            // Kuma routes HTTP outbounds only; a TCP one keeps its TCP proxy.
            if !dest.protocol.is_http() {
                continue;
            }
            let rules = http_route_rules(&matching.matched, &dest.service);
            if rules.is_empty() {
                continue;
            }
            let routes = build_routes(rs, mesh, proxy, Some(destination), &rules);
            routed.push((origin, routes));
        }
        for (origin, mut listener) in rs.listeners_mut() {
            if let Some((_, routes)) = routed.iter().find(|(o, _)| *o == origin) {
                listener.set_routes(routes);
            }
        }
    }
}

/// The proxy's outbound listeners and the destination each sends to.
pub(super) fn outbounds(rs: &mut ResourceSet) -> Vec<(Origin, usize)> {
    rs.listeners_mut()
        .filter_map(|(origin, _)| match origin {
            Origin::Outbound { destination, .. } => Some((origin, destination)),
            _ => None,
        })
        .collect()
}

/// Whether an HTTP route applies to calls to `service` (it then wins over a TCP route).
pub(super) fn routes_service(matched: &[Matched<'_>], service: &str) -> bool {
    !http_route_rules(matched, service).is_empty()
}
