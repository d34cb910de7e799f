//! Listeners, and the accessor policies edit them through.

use serde_json::{Map, Value, json};

use super::core::socket_address;
use super::filters::{HCM, ROUTER, TCP_PROXY};

/// A listener of one filter chain per element of `chains`.
pub fn listener(
    name: &str,
    address: &str,
    port: u32,
    direction: &str,
    chains: Vec<Value>,
) -> Value {
    let listener = json!({
        "name": name,
        "address": socket_address(address, port),
        "traffic_direction": direction,
        "filter_chains": null
    });
    with_chains(listener, chains)
}

/// A sidecar's inbound listener, which does not share its port (`enable_reuse_port: false`).
pub fn inbound_listener(name: &str, address: &str, port: u32, chains: Vec<Value>) -> Value {
    let listener = json!({
        "name": name,
        "address": socket_address(address, port),
        "traffic_direction": "INBOUND",
        "enable_reuse_port": false,
        "filter_chains": null
    });
    with_chains(listener, chains)
}

/// A listener that reads each connection's SNI (TLS inspector) to pick its filter chain.
pub fn sni_listener(name: &str, address: &str, port: u32, chains: Vec<Value>) -> Value {
    let listener = json!({
        "name": name,
        "address": socket_address(address, port),
        "traffic_direction": "INBOUND",
        "listener_filters": [{
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}
        }],
        "filter_chains": null
    });
    with_chains(listener, chains)
}

/// A filter chain of `filters`, moved in (`json!` would copy them).
pub fn filter_chain(filters: Vec<Value>) -> Value {
    let mut chain = serde_json::Map::new();
    chain.insert("filters".into(), Value::Array(filters));
    Value::Object(chain)
}

/// `listener` with `chains` moved in: `json!` would copy them, and they are most of it.
fn with_chains(mut listener: Value, chains: Vec<Value>) -> Value {
    listener["filter_chains"] = Value::Array(chains);
    listener
}

/// A filter chain that passes TLS connections for `sni`, still encrypted, to `cluster`.
pub fn sni_chain(sni: &str, cluster: &str) -> Value {
    json!({
        "filter_chain_match": {"server_names": [sni], "transport_protocol": "tls"},
        "filters": [super::filters::tcp_proxy(cluster, cluster)]
    })
}

/// A listener as a policy edits it.
pub struct ListenerMut<'a>(pub(crate) &'a mut Value);

impl ListenerMut<'_> {
    pub fn name(&self) -> &str {
        self.0["name"].as_str().unwrap_or_default()
    }

    /// The network filters of every filter chain (getters only: nothing is added by looking).
    fn filter_lists(&mut self) -> impl Iterator<Item = &mut Vec<Value>> {
        array_mut(self.0, "filter_chains")
            .flat_map(|c| c.get_mut("filters").and_then(Value::as_array_mut))
    }

    fn typed_configs(&mut self, filter: &'static str) -> impl Iterator<Item = &mut Value> {
        self.filter_lists()
            .flat_map(|f| f.iter_mut())
            .filter(move |f| f.get("name").and_then(Value::as_str) == Some(filter))
            .filter_map(|f| f.get_mut("typed_config"))
    }

    /// Puts `filter` first in every filter chain (authorization runs before anything else).
    pub fn prepend_network_filter(&mut self, filter: Value) {
        for filters in self.filter_lists() {
            filters.insert(0, filter.clone());
        }
    }

    /// Puts an authorization `filter` first in every filter chain that authenticates its
    /// callers (a TLS transport socket): a Permissive inbound's plaintext chain has no
    /// identity to authorize.
    pub fn prepend_authorization(&mut self, filter: Value) {
        for chain in array_mut(self.0, "filter_chains") {
            if chain.get("transport_socket").is_none() {
                continue;
            }
            if let Some(filters) = chain.get_mut("filters").and_then(Value::as_array_mut) {
                filters.insert(0, filter.clone());
            }
        }
    }

    /// Puts an HTTP authorization `filter` first in the HTTP connection managers of the
    /// filter chains that authenticate their callers (see [`Self::prepend_authorization`]).
    pub fn prepend_http_authorization(&mut self, filter: Value) {
        for chain in array_mut(self.0, "filter_chains") {
            if chain.get("transport_socket").is_none() {
                continue;
            }
            for f in array_mut(chain, "filters").filter(|f| f["name"] == HCM) {
                if let Some(list) = f
                    .get_mut("typed_config")
                    .and_then(|c| c.get_mut("http_filters"))
                    .and_then(Value::as_array_mut)
                {
                    list.insert(0, filter.clone());
                }
            }
        }
    }

    /// The TLS contexts (`DownstreamTlsContext`) of the listener's filter chains.
    pub fn downstream_tls_contexts(&mut self) -> Vec<&mut Map<String, Value>> {
        array_mut(self.0, "filter_chains")
            .filter_map(|c| c.get_mut("transport_socket"))
            .filter_map(|t| t.get_mut("typed_config").and_then(Value::as_object_mut))
            .collect()
    }

    /// Accepts plaintext beside TLS: each TLS chain matches TLS connections only, and a copy
    /// of it without the transport socket takes plaintext ones (the TLS inspector tells them
    /// apart).
    pub fn accept_plaintext_too(&mut self) {
        let Some(chains) = self
            .0
            .get_mut("filter_chains")
            .and_then(Value::as_array_mut)
        else {
            return;
        };
        let mut plaintext = Vec::new();
        for chain in chains.iter_mut() {
            let Some(obj) = chain.as_object_mut() else {
                continue;
            };
            if !obj.contains_key("transport_socket") {
                continue;
            }
            obj.insert(
                "filter_chain_match".into(),
                json!({"transport_protocol": "tls"}),
            );
            let mut copy = obj.clone();
            copy.remove("transport_socket");
            copy.insert(
                "filter_chain_match".into(),
                json!({"transport_protocol": "raw_buffer"}),
            );
            plaintext.push(Value::Object(copy));
        }
        if plaintext.is_empty() {
            return;
        }
        chains.extend(plaintext);
        let inspector = json!({
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}
        });
        let Some(listener) = self.0.as_object_mut() else {
            return;
        };
        let filters = listener
            .entry("listener_filters")
            .or_insert_with(|| json!([]));
        if let Some(list) = filters.as_array_mut()
            && !list.iter().any(|f| f["name"] == inspector["name"])
        {
            list.push(inspector);
        }
    }

    /// The HTTP connection managers of the listener.
    pub fn http_connection_managers(&mut self) -> Vec<&mut Map<String, Value>> {
        self.typed_configs(HCM)
            .filter_map(Value::as_object_mut)
            .collect()
    }

    /// The route actions of every HTTP route on the listener.
    pub fn route_actions(&mut self) -> Vec<&mut Map<String, Value>> {
        self.routes().into_iter().filter_map(action_of).collect()
    }

    /// Every HTTP route of the listener (match, action and per-filter configs).
    pub fn routes(&mut self) -> Vec<&mut Map<String, Value>> {
        self.typed_configs(HCM)
            .filter_map(|hcm| hcm.get_mut("route_config"))
            .flat_map(|rc| array_mut(rc, "virtual_hosts"))
            .flat_map(|host| array_mut(host, "routes"))
            .filter_map(Value::as_object_mut)
            .collect()
    }

    /// Replaces the routes of every virtual host of the listener's HTTP connection managers.
    pub fn set_routes(&mut self, routes: &[Value]) {
        for hcm in self.typed_configs(HCM) {
            let Some(rc) = hcm.get_mut("route_config") else {
                continue;
            };
            for host in array_mut(rc, "virtual_hosts") {
                host["routes"] = Value::Array(routes.to_vec());
            }
        }
    }

    /// Makes every filter chain carry `filter` alone (a TCP route turning an HTTP outbound
    /// into a TCP one).
    pub fn replace_network_filters(&mut self, filter: &Value) {
        for filters in self.filter_lists() {
            *filters = vec![filter.clone()];
        }
    }

    /// Every route action on the listener with the clusters it sends to (one, or those of a
    /// weighted split).
    pub fn route_actions_with_clusters(&mut self) -> Vec<(Vec<String>, &mut Map<String, Value>)> {
        self.route_actions()
            .into_iter()
            .map(|action| {
                let clusters = match action.get("cluster").and_then(Value::as_str) {
                    Some(c) => vec![c.to_string()],
                    None => action
                        .get("weighted_clusters")
                        .and_then(|w| w.get("clusters"))
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c["name"].as_str().map(str::to_string))
                        .collect(),
                };
                (clusters, action)
            })
            .collect()
    }

    /// The route actions of the HTTP routes named `name` on the listener.
    pub fn route_actions_named(&mut self, name: &str) -> Vec<&mut Map<String, Value>> {
        self.routes()
            .into_iter()
            .filter(|route| route.get("name").and_then(Value::as_str) == Some(name))
            .filter_map(action_of)
            .collect()
    }

    /// Puts `filter` into every HTTP connection manager just before its router, after the
    /// filters already there (plugins run in Kuma's order, and so do their filters).
    pub fn insert_http_filter_before_router(&mut self, filter: Value) {
        for hcm in self.http_connection_managers() {
            let Some(filters) = hcm.get_mut("http_filters").and_then(Value::as_array_mut) else {
                continue;
            };
            let router = filters
                .iter()
                .position(|f| f["name"] == ROUTER)
                .unwrap_or(filters.len());
            filters.insert(router, filter.clone());
        }
    }

    /// Whether the listener carries HTTP (an HTTP connection manager) rather than TCP.
    pub fn is_http(&mut self) -> bool {
        self.typed_configs(HCM).next().is_some()
    }

    /// The connection managers and TCP proxies of the listener: what carries access logs.
    pub fn access_log_owners(&mut self) -> Vec<&mut Map<String, Value>> {
        self.filter_lists()
            .flat_map(|f| f.iter_mut())
            .filter(|f| matches!(f.get("name").and_then(Value::as_str), Some(HCM | TCP_PROXY)))
            .filter_map(|f| f.get_mut("typed_config").and_then(Value::as_object_mut))
            .collect()
    }

    /// The TCP proxies of the listener.
    pub fn tcp_proxies(&mut self) -> Vec<&mut Map<String, Value>> {
        self.typed_configs(TCP_PROXY)
            .filter_map(Value::as_object_mut)
            .collect()
    }
}

/// A route's action (`route`), if it forwards (a redirect or direct response has none).
fn action_of(route: &mut Map<String, Value>) -> Option<&mut Map<String, Value>> {
    route.get_mut("route").and_then(Value::as_object_mut)
}

/// The elements of the list at `key`, if `value` has one.
fn array_mut<'a>(value: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    value
        .get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flat_map(|a| a.iter_mut())
}
