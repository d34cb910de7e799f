//! MeshTCPRoute (Kuma's `pkg/plugins/policies/meshtcproute`): weighted backends of an
//! outbound's connections. On an HTTP outbound a MeshHTTPRoute for the same service wins;
//! without one, the TCP route makes the outbound a TCP proxy, as in Kuma.

use model::ResourceType;
use model::specs::policy::TcpRouteConf;

use super::PolicyPlugin;
use super::mesh_http_route::{outbounds, routes_service};
use crate::context::{DataplaneEntry, MeshContext};
use crate::envoy::filters::tcp_proxy_split;
use crate::generator::routes::splits;
use crate::resources::ResourceSet;
use crate::rules::build::tcp_route_rule;
use crate::rules::matching::matched_in;

pub struct Plugin;

fn dest_service(rs: &ResourceSet, d: usize) -> &str {
    &rs.destinations[d].service
}

impl PolicyPlugin for Plugin {
    fn kind(&self) -> ResourceType {
        ResourceType::MeshTCPRoute
    }

    fn apply(&self, rs: &mut ResourceSet, mesh: &MeshContext, proxy: &DataplaneEntry) {
        let matching = matched_in(mesh, self.kind(), proxy);
        if matching.matched.is_empty() {
            return;
        }
        let http = matched_in(mesh, ResourceType::MeshHTTPRoute, proxy);
        let mut routed = Vec::new();
        for (origin, destination) in outbounds(rs) {
            let dest = &rs.destinations[destination];
            if dest.protocol.is_http() && routes_service(&http.matched, &dest.service) {
                continue;
            }
            let Some(rule) = tcp_route_rule(&matching.matched, &dest.service) else {
                continue;
            };
            let policies = super::named(&rule);
            let stat_prefix = dest.cluster.clone();
            let what = format!("{} (from {policies})", dest.service);
            let mut warnings = Vec::new();
            let conf: Option<TcpRouteConf> =
                super::parse_conf(self.kind(), &rule.conf, &what, &mut warnings);
            rs.warnings.extend(warnings);
            let Some(conf) = conf else { continue };
            let policy = format!("MeshTCPRoute {policies}");
            let to = splits(rs, mesh, proxy, &conf.backend_refs, &policy);
            if to.is_empty() {
                rs.warnings.push(format!(
                    "{policy}: no backend of {} has a weight; the outbound is left as it was",
                    dest_service(rs, destination)
                ));
                continue;
            }
            routed.push((origin, tcp_proxy_split(&stat_prefix, &to)));
        }
        for (origin, mut listener) in rs.listeners_mut() {
            if let Some((_, filter)) = routed.iter().find(|(o, _)| *o == origin) {
                listener.replace_network_filters(filter);
            }
        }
    }
}
