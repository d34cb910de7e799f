//! Endpoints of a `ClusterLoadAssignment`.

use serde_json::{Value, json};

use super::core::socket_address;

/// One endpoint of a load assignment, with its weight when it has one.
pub fn lb_endpoint(address: &str, port: u32, weight: Option<u32>) -> Value {
    let mut e = json!({"endpoint": {"address": socket_address(address, port)}});
    if let Some(w) = weight {
        e["load_balancing_weight"] = json!(w);
    }
    e
}

/// The assignment of `cluster`: one group of equally weighted endpoints, or none.
pub fn single_group(cluster: &str, endpoints: &[(String, u32)]) -> Value {
    let lb_endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(a, p)| lb_endpoint(a, *p, None))
        .collect();
    json!({
        "cluster_name": cluster,
        "endpoints": if lb_endpoints.is_empty() { json!([]) } else { json!([{"lb_endpoints": lb_endpoints}]) }
    })
}
