//! The builtin gateway (Kuma 2.14's `pkg/plugins/runtime/gateway`): a Dataplane with
//! `networking.gateway.type: BUILTIN` serves the listeners of the MeshGateway that selects it.
//! Listeners on one port are one Envoy listener: HTTP has a virtual host per hostname, HTTPS a
//! filter chain per hostname (picked by SNI) terminating TLS with certificates from mesh
//! Secrets (over SDS), TCP a TCP proxy, TLS a filter chain per hostname passing TLS through or
//! terminating it. Routes are the MeshHTTPRoutes and MeshTCPRoutes whose top-level
//! `targetRef` is the MeshGateway; their backends are destinations as a sidecar's are (mesh
//! mTLS, other zones through their ingresses). A listener that cannot be served (a bad
//! certificate) is left out with a warning; the gateway's other listeners stand.

use std::collections::{BTreeMap, BTreeSet};

use model::specs::gateway::{Listener, ListenerProtocol, TlsMode};
use model::specs::targetref::{TargetRef, TargetRefKind};
use serde_json::{Value, json};

use crate::context::{DataplaneEntry, GatewayCertificate, GatewayEntry, MeshContext};
use crate::envoy::filters::{HCM, ROUTER, tcp_proxy_split};
use crate::envoy::listener::filter_chain;
use crate::envoy::names::{identity_secret_name, mesh_ca_secret_name, stat_name};
use crate::envoy::tls::{gateway_certificate, gateway_termination};
use crate::generator::routes::{build_routes, splits};
use crate::resources::{Origin, ResourceSet};
use crate::rules::Matched;
use crate::rules::build::{entries, route_rules_where, tcp_route_rule_where};
use crate::rules::matching::listener_tags;
use crate::rules::order;

/// Whether `proxy` is a builtin gateway.
pub fn is_builtin(proxy: &DataplaneEntry) -> bool {
    proxy
        .spec
        .networking
        .gateway
        .as_ref()
        .is_some_and(|g| g.gateway_type == model::specs::dataplane::GatewayType::Builtin)
}

/// The MeshGateway serving `proxy`: of those with a selector its gateway tags satisfy, the
/// one whose best selector names the most tags (then the first by name).
pub fn select<'a>(mesh: &'a MeshContext, proxy: &DataplaneEntry) -> Option<&'a GatewayEntry> {
    let tags = &proxy.spec.networking.gateway.as_ref()?.tags;
    let mut best: Option<(usize, &GatewayEntry)> = None;
    for g in &mesh.gateways {
        let score = g
            .spec
            .selectors
            .iter()
            .filter(|s| {
                s.match_tags
                    .iter()
                    .all(|(k, v)| tags.get(k).is_some_and(|t| v == "*" || t == v))
            })
            .map(|s| s.match_tags.len())
            .max();
        let Some(score) = score else { continue };
        let better = match best {
            None => true,
            Some((s, b)) => score > s || (score == s && g.name < b.name),
        };
        if better {
            best = Some((score, g));
        }
    }
    best.map(|(_, g)| g)
}

/// The gateway's configuration, before policies.
pub fn generate(mesh: &MeshContext, proxy: &DataplaneEntry) -> ResourceSet {
    let mut out = ResourceSet::default();
    if mesh.mtls {
        out.secret_names = vec![
            identity_secret_name(&mesh.mesh),
            mesh_ca_secret_name(&mesh.mesh),
        ];
    }
    let Some(gateway) = select(mesh, proxy) else {
        out.warnings.push(format!(
            "no MeshGateway selects builtin gateway {}: it serves nothing",
            proxy.name
        ));
        return out;
    };
    let listeners = gateway
        .spec
        .conf
        .as_ref()
        .map(|c| c.listeners.as_slice())
        .unwrap_or_default();
    let mut by_port: BTreeMap<u32, Vec<&Listener>> = BTreeMap::new();
    for l in listeners {
        by_port.entry(l.port).or_default().push(l);
    }
    let address = match proxy.spec.networking.address.as_str() {
        "" => "0.0.0.0",
        a => a,
    };
    let mut certificates = BTreeSet::new();
    for (port, group) in by_port {
        let Some(protocol) = group[0].protocol else {
            continue;
        };
        let built = PortBuild {
            mesh,
            proxy,
            gateway,
            port,
            protocol,
        };
        let chains = built.chains(&group, &mut out, &mut certificates);
        if chains.is_empty() {
            continue;
        }
        let name = format!("{}:{}:{port}", gateway.name, protocol_name(protocol));
        let mut listener = json!({
            "name": name,
            "address": crate::envoy::core::socket_address(address, port),
            "traffic_direction": "INBOUND",
            "filter_chains": chains,
        });
        if matches!(protocol, ListenerProtocol::Https | ListenerProtocol::Tls) {
            listener["listener_filters"] = json!([{
                "name": "envoy.filters.listener.tls_inspector",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}
            }]);
        }
        if let Some(limit) = group
            .iter()
            .filter_map(|l| l.resources.as_ref()?.connection_limit)
            .find(|l| *l > 0)
        {
            limit_connections(&mut listener, &name, limit);
        }
        out.add_listener(Origin::Gateway { port }, listener);
    }
    for secret in certificates {
        if let Some(GatewayCertificate::Valid { chain_pem, key_pem }) =
            mesh.gateway_certificates.get(&secret)
        {
            out.secrets
                .push(gateway_certificate(&secret, chain_pem, key_pem));
        }
    }
    out
}

fn protocol_name(p: ListenerProtocol) -> &'static str {
    match p {
        ListenerProtocol::Http => "HTTP",
        ListenerProtocol::Https => "HTTPS",
        ListenerProtocol::Tcp => "TCP",
        ListenerProtocol::Tls => "TLS",
    }
}

/// Puts Envoy's connection limit first in every filter chain of `listener`.
fn limit_connections(listener: &mut Value, name: &str, limit: u32) {
    let filter = json!({"name": "envoy.filters.network.connection_limit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
        "stat_prefix": stat_name(name),
        "max_connections": limit
    }});
    if let Some(chains) = listener["filter_chains"].as_array_mut() {
        for chain in chains {
            if let Some(filters) = chain["filters"].as_array_mut() {
                filters.insert(0, filter.clone());
            }
        }
    }
}

/// Whether a route hostname `route` applies to requests for `host` (a virtual host's or
/// listener's hostname): equal, or `route` a wildcard covering it.
fn host_covers(route: &str, host: &str) -> bool {
    route == host
        || route == "*"
        || route
            .strip_prefix('*')
            .is_some_and(|suffix| suffix.starts_with('.') && host.ends_with(suffix))
}

/// The more specific of a listener hostname and a route hostname that overlap, which names
/// the virtual host they share; `None` when they do not overlap.
fn narrower(listener: &str, route: &str) -> Option<String> {
    if host_covers(listener, route) {
        Some(route.to_string())
    } else if host_covers(route, listener) {
        Some(listener.to_string())
    } else {
        None
    }
}

/// The hostnames of a route's `to[]` entry (none: every hostname).
fn entry_hostnames(entry: &Value) -> Vec<&str> {
    entry
        .get("hostnames")
        .and_then(Value::as_array)
        .map(|h| h.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// One port of the gateway being built.
struct PortBuild<'a> {
    mesh: &'a MeshContext,
    proxy: &'a DataplaneEntry,
    gateway: &'a GatewayEntry,
    port: u32,
    protocol: ListenerProtocol,
}

impl PortBuild<'_> {
    /// The routes of `kind` attached to listener `l`: top-level `targetRef` this MeshGateway,
    /// with any `tags` there matching the listener's, in Kuma's policy order.
    fn attached(&self, kind: model::ResourceType, l: &Listener) -> Vec<Matched<'_>> {
        let tags = listener_tags(self.proxy, self.gateway, l);
        let mut matched: Vec<Matched<'_>> = self
            .mesh
            .policies
            .raw(kind)
            .iter()
            .filter_map(|p| {
                let top: TargetRef =
                    serde_json::from_value(p.spec.get("targetRef")?.clone()).ok()?;
                let selects = top.kind == TargetRefKind::MeshGateway
                    && self.gateway.is_named(top.name_str())
                    && top.tags.iter().all(|(k, v)| tags.get(k) == Some(v));
                selects.then_some(Matched {
                    policy: p,
                    top,
                    inbounds: Vec::new(),
                    listeners: vec![l.port],
                })
            })
            .collect();
        matched.sort_by(|a, b| order::compare((a.policy, &a.top), (b.policy, &b.top)));
        matched
    }

    fn chains(
        &self,
        group: &[&Listener],
        out: &mut ResourceSet,
        certificates: &mut BTreeSet<String>,
    ) -> Vec<Value> {
        let mut chains = Vec::new();
        match self.protocol {
            ListenerProtocol::Http => {
                // One HCM for every hostname on the port: virtual hosts pick by Host.
                let mut hosts = Vec::new();
                for l in group {
                    hosts.extend(self.virtual_hosts(l, out));
                }
                if !hosts.is_empty() {
                    chains.push(filter_chain(vec![self.hcm(None, hosts)]));
                }
            }
            ListenerProtocol::Https => {
                for l in group {
                    let Some(tls) = self.termination(l, out, certificates, &["h2", "http/1.1"])
                    else {
                        continue;
                    };
                    let host = l.hostname_or_wildcard();
                    let hosts = self.virtual_hosts(l, out);
                    let mut chain = filter_chain(vec![self.hcm(Some(host), hosts)]);
                    sni_match(&mut chain, host);
                    chain["transport_socket"] = tls;
                    chains.push(chain);
                }
            }
            ListenerProtocol::Tcp => {
                if let Some(l) = group.first()
                    && let Some(proxy) = self.tcp_proxy(l, out)
                {
                    chains.push(filter_chain(vec![proxy]));
                }
            }
            ListenerProtocol::Tls => {
                for l in group {
                    let passthrough =
                        l.tls.as_ref().and_then(|t| t.mode) == Some(TlsMode::Passthrough);
                    let tls = if passthrough {
                        None
                    } else {
                        match self.termination(l, out, certificates, &[]) {
                            Some(t) => Some(t),
                            None => continue,
                        }
                    };
                    let Some(proxy) = self.tcp_proxy(l, out) else {
                        continue;
                    };
                    let mut chain = filter_chain(vec![proxy]);
                    sni_match(&mut chain, l.hostname_or_wildcard());
                    if let Some(tls) = tls {
                        chain["transport_socket"] = tls;
                    }
                    chains.push(chain);
                }
            }
        }
        // Envoy tries specific server names before a chain without any.
        chains
    }

    /// The virtual hosts of listener `l`: one for its hostname with the routes for every
    /// hostname, and one per narrower hostname its routes name.
    fn virtual_hosts(&self, l: &Listener, out: &mut ResourceSet) -> Vec<Value> {
        let matched = self.attached(model::ResourceType::MeshHTTPRoute, l);
        let listener_host = l.hostname_or_wildcard();
        let mut hosts: BTreeSet<String> = BTreeSet::from([listener_host.to_string()]);
        for m in &matched {
            for entry in entries(&m.policy.spec, "to") {
                for h in entry_hostnames(entry) {
                    if let Some(n) = narrower(listener_host, h) {
                        hosts.insert(n);
                    }
                }
            }
        }
        let mut out_hosts = Vec::new();
        for host in hosts {
            let rules = route_rules_where(&matched, |target, entry| {
                let names = entry_hostnames(entry);
                target.kind == TargetRefKind::Mesh
                    && (names.is_empty() || names.iter().any(|n| host_covers(n, &host)))
            });
            let routes = build_routes(out, self.mesh, self.proxy, None, &rules);
            if routes.is_empty() {
                continue;
            }
            let domains = if host == "*" {
                json!(["*"])
            } else {
                json!([host])
            };
            out_hosts.push(json!({"name": host, "domains": domains, "routes": routes}));
        }
        out_hosts
    }

    /// The HTTP connection manager of the port (or of one HTTPS hostname's chain) with
    /// Kuma's gateway defaults: the client's address is the remote one, paths normalized,
    /// the Host's port ignored when matching hostnames, and the idle and header timeouts of
    /// Kuma's `mesh-gateways-timeout-all`.
    fn hcm(&self, host: Option<&str>, hosts: Vec<Value>) -> Value {
        let name = match host {
            Some(h) => format!(
                "{}:{}:{}:{h}",
                self.gateway.name,
                protocol_name(self.protocol),
                self.port
            ),
            None => format!(
                "{}:{}:{}",
                self.gateway.name,
                protocol_name(self.protocol),
                self.port
            ),
        };
        let mut hcm = json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_name(&self.gateway.name),
            "codec_type": "AUTO",
            "use_remote_address": true,
            "normalize_path": true,
            "merge_slashes": true,
            "strip_any_host_port": true,
            "common_http_protocol_options": {"idle_timeout": "300s"},
            "stream_idle_timeout": "5s",
            "request_headers_timeout": "0.500s",
            "http_filters": [{"name": ROUTER, "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            "route_config": {"name": name, "validate_clusters": false, "virtual_hosts": null}
        });
        hcm["route_config"]["virtual_hosts"] = Value::Array(hosts);
        let mut filter = json!({"name": HCM, "typed_config": null});
        filter["typed_config"] = hcm;
        filter
    }

    /// A TCP proxy to the backends of the TCP routes attached to `l`; `None` without any.
    fn tcp_proxy(&self, l: &Listener, out: &mut ResourceSet) -> Option<Value> {
        let matched = self.attached(model::ResourceType::MeshTCPRoute, l);
        let rule = tcp_route_rule_where(&matched, |t| t.kind == TargetRefKind::Mesh)?;
        let policies = crate::policies::named(&rule);
        let backends: Vec<model::specs::targetref::BackendRef> =
            match serde_json::from_value(rule.conf.get("backendRefs").cloned().unwrap_or_default())
            {
                Ok(b) => b,
                Err(e) => {
                    out.warnings
                        .push(format!("MeshTCPRoute {policies} not applied: {e}"));
                    return None;
                }
            };
        let policy = format!("MeshTCPRoute {policies}");
        let to = splits(out, self.mesh, self.proxy, &backends, &policy);
        if to.is_empty() {
            return None;
        }
        let name = format!(
            "{}:{}:{}",
            self.gateway.name,
            protocol_name(self.protocol),
            self.port
        );
        Some(tcp_proxy_split(&name, &to))
    }

    /// The TLS termination of listener `l` with its certificates, or `None` (and a warning
    /// naming the listener and why) when one of them cannot serve.
    fn termination(
        &self,
        l: &Listener,
        out: &mut ResourceSet,
        certificates: &mut BTreeSet<String>,
        alpn: &[&str],
    ) -> Option<Value> {
        let what = format!(
            "MeshGateway {} listener {} {} (hostname {})",
            self.gateway.name,
            protocol_name(self.protocol),
            self.port,
            l.hostname_or_wildcard()
        );
        let sources = l
            .tls
            .as_ref()
            .map(|t| t.certificates.as_slice())
            .unwrap_or_default();
        if sources.is_empty() {
            out.warnings
                .push(format!("{what} not served: it has no certificate"));
            return None;
        }
        let mut names = Vec::new();
        for source in sources {
            let Some(secret) = &source.secret else {
                out.warnings.push(format!(
                    "{what} not served: only certificates from mesh Secrets are supported yet"
                ));
                return None;
            };
            match self.mesh.gateway_certificates.get(secret) {
                Some(GatewayCertificate::Valid { .. }) => names.push(secret.clone()),
                Some(GatewayCertificate::Invalid { reason }) => {
                    out.warnings.push(format!(
                        "{what} not served: certificate Secret {secret:?} {reason}"
                    ));
                    return None;
                }
                None => {
                    out.warnings.push(format!(
                        "{what} not served: certificate Secret {secret:?} does not exist"
                    ));
                    return None;
                }
            }
        }
        certificates.extend(names.iter().cloned());
        Some(gateway_termination(&names, alpn))
    }
}

/// Makes `chain` match connections whose SNI is `host` (any connection for `*`).
fn sni_match(chain: &mut Value, host: &str) {
    if host != "*" {
        chain["filter_chain_match"] = json!({"server_names": [host]});
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_overlap_as_kuma_reads_them() {
        assert!(host_covers("*.example.com", "foo.example.com"));
        assert!(!host_covers("*.example.com", "example.com"));
        assert!(host_covers("*", "foo.example.com"));
        assert_eq!(
            narrower("*", "foo.example.com").as_deref(),
            Some("foo.example.com")
        );
        assert_eq!(
            narrower("foo.example.com", "*.example.com").as_deref(),
            Some("foo.example.com")
        );
        assert_eq!(narrower("foo.example.com", "bar.example.com"), None);
    }
}
