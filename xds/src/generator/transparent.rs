//! The transparent proxy's listeners (Kuma's `TransparentProxyGenerator`): iptables sends the
//! application's outgoing TCP to `outbound:passthrough:ipv4` (Kuma's port 15001) and incoming
//! TCP to `inbound:passthrough:ipv4` (15006). Both read each connection's original destination
//! and hand it to the listener for that address and port (an outbound on a service's VIP, an
//! inbound), which then is not bound itself; what no listener takes goes on to where it was
//! going (the mesh's `passthrough`), or nowhere when the mesh forbids it.

use serde_json::{Value, json};

use model::specs::dataplane::TransparentProxying;

use crate::context::MeshContext;
use crate::envoy::core::CONNECT_TIMEOUT;
use crate::envoy::filters::tcp_proxy;
use crate::envoy::listener::{filter_chain, listener};
use crate::resources::{Origin, ResourceSet};

pub const OUTBOUND_PASSTHROUGH: &str = "outbound:passthrough:ipv4";
pub const INBOUND_PASSTHROUGH: &str = "inbound:passthrough:ipv4";
/// Where traffic no outbound takes goes when the mesh forbids passthrough: a cluster with
/// no endpoints, so the connection is closed.
pub const NO_DESTINATION: &str = "outbound:no-destination";
/// The source address of connections the inbound passthrough makes to the application, which
/// iptables leaves alone (Kuma's `InboundPassthroughSourceAddressCIDRIPv4`).
pub const INBOUND_PASSTHROUGH_SOURCE: &str = "127.0.0.6";

/// A cluster that connects to each connection's original destination.
fn original_destination_cluster(name: &str, bind_source: Option<&str>) -> Value {
    let mut cluster = json!({
        "name": name,
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": CONNECT_TIMEOUT
    });
    if let Some(source) = bind_source {
        cluster["upstream_bind_config"] =
            json!({"source_address": {"address": source, "port_value": 0}});
    }
    cluster
}

/// A listener on every address that hands connections to the listener of their original
/// destination, and sends the rest to `cluster`.
fn passthrough_listener(name: &str, port: u32, direction: &str, cluster: &str) -> Value {
    let chains = vec![filter_chain(vec![tcp_proxy(name, cluster)])];
    let mut l = listener(name, "0.0.0.0", port, direction, chains);
    l["use_original_dst"] = Value::Bool(true);
    l
}

/// Adds the passthrough listeners and clusters of a proxy transparently proxied as `tp` says.
pub fn add(mesh: &MeshContext, tp: &TransparentProxying, out: &mut ResourceSet) {
    if tp.redirect_port_outbound != 0 {
        let cluster = match mesh.allows_passthrough() {
            true => {
                let c = original_destination_cluster(OUTBOUND_PASSTHROUGH, None);
                out.add_cluster(Origin::Transparent, c);
                OUTBOUND_PASSTHROUGH
            }
            false => {
                let c = json!({"name": NO_DESTINATION, "type": "STATIC",
                    "connect_timeout": CONNECT_TIMEOUT,
                    "load_assignment": {"cluster_name": NO_DESTINATION, "endpoints": []}});
                out.add_cluster(Origin::Transparent, c);
                NO_DESTINATION
            }
        };
        out.add_listener(
            Origin::Transparent,
            passthrough_listener(
                OUTBOUND_PASSTHROUGH,
                tp.redirect_port_outbound,
                "OUTBOUND",
                cluster,
            ),
        );
    }
    if tp.redirect_port_inbound != 0 {
        let c = original_destination_cluster(INBOUND_PASSTHROUGH, Some(INBOUND_PASSTHROUGH_SOURCE));
        out.add_cluster(Origin::Transparent, c);
        out.add_listener(
            Origin::Transparent,
            passthrough_listener(
                INBOUND_PASSTHROUGH,
                tp.redirect_port_inbound,
                "INBOUND",
                INBOUND_PASSTHROUGH,
            ),
        );
    }
}
