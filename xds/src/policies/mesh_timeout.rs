//! MeshTimeout (Kuma's `pkg/plugins/policies/meshtimeout`): once any MeshTimeout selects a
//! proxy, its listeners and clusters carry explicit timeouts, the policy's where it sets them
//! and Kuma's defaults elsewhere.
//!
//! - Inbounds (the catch-all of the inbound's rules, `from[]` read as rules): the route's
//!   request and stream-idle timeouts, the HCM's request-headers timeout (its connection idle
//!   timeout off: the application cluster's applies), the TCP proxy's idle timeout, and the
//!   application cluster's connect, idle, max stream and max connection durations.
//! - Outbounds (the `to[]` rules of the destination service): the same on the outbound
//!   listener, when a rule covers the destination; the destination cluster always.
//! - Builtin gateway listeners (the policies selecting the listener): the connection manager's
//!   idle, request-headers and stream-idle timeouts (and a request timeout when set) or the TCP
//!   proxy's idle timeout from the listener's catch-all rule, Kuma's gateway defaults
//!   elsewhere; each route the `to` conf of the service it sends to.

use std::time::Duration;

use model::ResourceType;
use model::duration::parse_duration;
use model::specs::policy::{TimeoutConf, TimeoutHttp};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::context::{DataplaneEntry, MeshContext, Protocol};
use crate::envoy::cluster::ClusterMut;
use crate::envoy::core::duration;
use crate::envoy::listener::ListenerMut;
use crate::resources::{Origin, ResourceSet};
use crate::rules::build::{catch_all, inbound_rules, listener_rules, shared_to_rule};
use crate::rules::matching::matched_in;

/// Kuma's defaults for what a MeshTimeout leaves unset (`policies/core/defaults`).
const CONNECT: Duration = Duration::from_secs(5);
const IDLE: Duration = Duration::from_secs(3600);
const STREAM_IDLE: Duration = Duration::from_secs(30 * 60);
const REQUEST: Duration = Duration::from_secs(15);
/// Kuma's gateway listener defaults (`DefaultGateway*Timeout`).
const GATEWAY_IDLE: Duration = Duration::from_secs(300);
const GATEWAY_STREAM_IDLE: Duration = Duration::from_secs(5);
const GATEWAY_REQUEST_HEADERS: Duration = Duration::from_millis(500);

pub struct Plugin;

impl super::PolicyPlugin for Plugin {
    fn kind(&self) -> ResourceType {
        ResourceType::MeshTimeout
    }

    fn apply(&self, rs: &mut ResourceSet, mesh: &MeshContext, proxy: &DataplaneEntry) {
        let matching = matched_in(mesh, self.kind(), proxy);
        let per_route: Vec<(Origin, String, TimeoutConf)> =
            super::per_route_confs(self.kind(), rs, mesh, proxy, &matching.matched);
        if matching.matched.is_empty() && per_route.is_empty() {
            return;
        }
        let mut warnings = Vec::new();
        let mut parse = |conf: Option<&Value>, what: &str| -> TimeoutConf {
            let Some(conf) = conf else {
                return TimeoutConf::default();
            };
            TimeoutConf::deserialize(conf).unwrap_or_else(|e| {
                warnings.push(format!("MeshTimeout for {what} not applied: {e}"));
                TimeoutConf::default()
            })
        };
        // Inbounds: each inbound's catch-all rule, or Kuma's defaults when it has no rules.
        let mut inbound_confs = Vec::new();
        for (i, inbound) in proxy.spec.networking.inbound.iter().enumerate() {
            let rules = inbound_rules(&matching.matched, i, true);
            let common = rules.is_empty() || rules.iter().any(|r| r.matches.is_none());
            let conf = parse(catch_all(&rules).as_ref().map(|r| &r.conf), "inbound");
            inbound_confs.push((common, conf, Protocol::of_tags(&inbound.tags)));
        }
        // Destinations: the service's `to` rule; clusters take Kuma's defaults without one.
        let dest_confs: Vec<(Option<TimeoutConf>, Protocol)> = rs
            .destinations
            .iter()
            .map(|d| {
                let rule = shared_to_rule(mesh, &matching.matched, &d.service);
                (rule.map(|r| parse(Some(&r.conf), &d.service)), d.protocol)
            })
            .collect();
        // Gateway listeners: the listener's catch-all rule, or Kuma's gateway defaults.
        let mut gateway_confs = std::collections::BTreeMap::new();
        for port in super::gateway_ports(rs) {
            let rules = listener_rules(&matching.matched, port, true);
            if rules.is_empty() || rules.iter().any(|r| r.matches.is_none()) {
                let what = format!("gateway listener {port}");
                gateway_confs.insert(
                    port,
                    parse(catch_all(&rules).as_ref().map(|r| &r.conf), &what),
                );
            }
        }
        rs.warnings.extend(warnings);
        let gateway_routes: Vec<super::GatewayRoute<TimeoutConf>> =
            super::gateway_route_confs(self.kind(), rs, mesh, &matching.matched);
        for (origin, mut listener) in rs.listeners_mut() {
            match origin {
                Origin::Inbound(i) => {
                    if let Some((true, conf, _)) = inbound_confs.get(i) {
                        configure_listener(&mut listener, conf);
                    }
                }
                Origin::Gateway { port } => {
                    if let Some(conf) = gateway_confs.get(&port) {
                        configure_gateway_listener(&mut listener, conf);
                    }
                    let mut actions = listener.route_actions_with_clusters();
                    for route in gateway_routes.iter().filter(|r| r.listener == origin) {
                        if let Some((_, action)) = actions.get_mut(route.action) {
                            configure_route(action, &route.conf.http.clone().unwrap_or_default());
                        }
                    }
                }
                Origin::Outbound { destination, .. } => {
                    if let Some((Some(conf), _)) = dest_confs.get(destination) {
                        configure_listener(&mut listener, conf);
                    }
                }
                _ => {}
            }
            // Routes a per-route MeshTimeout names (outbound or gateway routes), over what
            // they have.
            for (_, route, conf) in per_route.iter().filter(|(o, _, _)| *o == origin) {
                let http = conf.http.clone().unwrap_or_default();
                for action in listener.route_actions_named(route) {
                    configure_route(action, &http);
                }
            }
        }
        for (i, (common, conf, protocol)) in inbound_confs.iter().enumerate() {
            if *common && let Some(mut cluster) = rs.cluster_mut(Origin::Inbound(i)) {
                configure_cluster(&mut cluster, conf, *protocol);
            }
        }
        for (d, (conf, protocol)) in dest_confs.iter().enumerate() {
            if let Some(mut cluster) = rs.cluster_mut(Origin::Destination(d)) {
                let conf = conf.clone().unwrap_or_default();
                configure_cluster(&mut cluster, &conf, *protocol);
            }
        }
    }
}

fn or_default(value: &Option<String>, default: Duration) -> String {
    duration(
        value
            .as_deref()
            .and_then(|v| parse_duration(v).ok())
            .unwrap_or(default),
    )
}

/// Routes, HCM and TCP proxy.
fn configure_listener(listener: &mut ListenerMut<'_>, conf: &TimeoutConf) {
    let http = conf.http.clone().unwrap_or_default();
    for action in listener.route_actions() {
        configure_route(action, &http);
    }
    for hcm in listener.http_connection_managers() {
        hcm.insert(
            "request_headers_timeout".into(),
            json!(or_default(&http.request_headers_timeout, Duration::ZERO)),
        );
        // The cluster's idle timeout governs connections; the HCM's would cut streams.
        hcm.insert(
            "common_http_protocol_options".into(),
            json!({"idle_timeout": "0s"}),
        );
    }
    for tcp in listener.tcp_proxies() {
        tcp.insert(
            "idle_timeout".into(),
            json!(or_default(&conf.idle_timeout, IDLE)),
        );
    }
}

/// A gateway listener's connection manager or TCP proxy.
fn configure_gateway_listener(listener: &mut ListenerMut<'_>, conf: &TimeoutConf) {
    let http = conf.http.clone().unwrap_or_default();
    for hcm in listener.http_connection_managers() {
        hcm.insert(
            "common_http_protocol_options".into(),
            json!({"idle_timeout": or_default(&conf.idle_timeout, GATEWAY_IDLE)}),
        );
        hcm.insert(
            "request_headers_timeout".into(),
            json!(or_default(
                &http.request_headers_timeout,
                GATEWAY_REQUEST_HEADERS
            )),
        );
        hcm.insert(
            "stream_idle_timeout".into(),
            json!(or_default(&http.stream_idle_timeout, GATEWAY_STREAM_IDLE)),
        );
        if http.request_timeout.is_some() {
            hcm.insert(
                "request_timeout".into(),
                json!(or_default(&http.request_timeout, REQUEST)),
            );
        }
    }
    for tcp in listener.tcp_proxies() {
        tcp.insert(
            "idle_timeout".into(),
            json!(or_default(&conf.idle_timeout, GATEWAY_IDLE)),
        );
    }
}

fn configure_route(action: &mut Map<String, Value>, http: &TimeoutHttp) {
    action.insert(
        "timeout".into(),
        json!(or_default(&http.request_timeout, REQUEST)),
    );
    match &http.stream_idle_timeout {
        Some(_) => {
            action.insert(
                "idle_timeout".into(),
                json!(or_default(&http.stream_idle_timeout, STREAM_IDLE)),
            );
        }
        None => {
            action
                .entry("idle_timeout")
                .or_insert_with(|| json!(duration(STREAM_IDLE)));
        }
    }
}

/// Connect timeout; for HTTP/1.1 and HTTP/2 (not gRPC, as in Kuma) the connection idle
/// timeout and the stream and connection duration limits.
fn configure_cluster(cluster: &mut ClusterMut<'_>, conf: &TimeoutConf, protocol: Protocol) {
    let mut fields = Map::new();
    fields.insert(
        "connect_timeout".into(),
        json!(or_default(&conf.connection_timeout, CONNECT)),
    );
    cluster.set_fields(fields);
    if !matches!(protocol, Protocol::Http | Protocol::Http2) {
        return;
    }
    let http = conf.http.clone().unwrap_or_default();
    let common = json!({
        "idle_timeout": or_default(&conf.idle_timeout, IDLE),
        "max_stream_duration": or_default(&http.max_stream_duration, Duration::ZERO),
        "max_connection_duration": or_default(&http.max_connection_duration, Duration::ZERO),
    });
    if let Some(options) = cluster.http_protocol_options() {
        options.insert("common_http_protocol_options".into(), common);
    }
}
