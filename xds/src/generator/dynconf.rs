//! Envoy's dynamic configuration listener (Kuma's `pkg/xds/dynconf`): `_kuma:dynamicconfig` on
//! a pipe in kuma-dp's working directory, with one route per document kuma-dp reads
//! (`/meshmetric`, `/dns`), each with an ETag so an unchanged document costs kuma-dp a 304.

use std::hash::{Hash, Hasher};

use serde_json::{Value, json};

use crate::policies::mesh_metric::{http_manager, pipe_listener};
use crate::resources::{Origin, ResourceSet};

pub const LISTENER: &str = "_kuma:dynamicconfig";

/// Envoy's floor for a direct response's body limit, kept so small documents never trip it.
const MIN_BODY_LIMIT: usize = 4096;

/// Serves `body` at `path` on the proxy's dynamic configuration listener, adding the listener
/// (as `origin`'s) if the proxy has none yet.
pub fn add_route(rs: &mut ResourceSet, origin: Origin, path: &str, body: &str) {
    let new_routes = routes(path, body);
    for (_, mut listener) in rs.listeners_mut() {
        if listener.name() != LISTENER {
            continue;
        }
        let mut all: Vec<Value> = listener
            .routes()
            .into_iter()
            .map(|r| Value::Object(r.clone()))
            .collect();
        all.extend(new_routes);
        listener.set_routes(&all);
        for hcm in listener.http_connection_managers() {
            if let Some(rc) = hcm.get_mut("route_config") {
                let limit = rc["max_direct_response_body_size_bytes"]
                    .as_u64()
                    .unwrap_or(0)
                    .max(body.len() as u64);
                rc["max_direct_response_body_size_bytes"] = json!(limit);
            }
        }
        return;
    }
    let pipe = model::proxy_paths::mesh_metric_config_socket(rs.env.workdir());
    rs.add_listener(origin, listener(&pipe, new_routes, body.len()));
}

fn routes(path: &str, body: &str) -> Vec<Value> {
    let mut hasher = std::hash::DefaultHasher::new();
    body.hash(&mut hasher);
    let etag = format!("{:016x}", hasher.finish());
    vec![
        json!({
            "match": {"path": path, "headers": [
                {"name": "If-None-Match", "string_match": {"exact": etag}}
            ]},
            "direct_response": {"status": 304}
        }),
        json!({
            "name": format!("{LISTENER}:{path}"),
            "match": {"path": path},
            "direct_response": {"status": 200, "body": {"inline_string": body}},
            "response_headers_to_add": [{"header": {"key": "Etag", "value": etag}}]
        }),
    ]
}

fn listener(pipe: &str, routes: Vec<Value>, body_len: usize) -> Value {
    let route_config = json!({
        "max_direct_response_body_size_bytes": body_len.max(MIN_BODY_LIMIT),
        "virtual_hosts": [{"name": LISTENER, "domains": ["*"], "routes": routes}]
    });
    pipe_listener(LISTENER, pipe, http_manager(LISTENER, route_config))
}
