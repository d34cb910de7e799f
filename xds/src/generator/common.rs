//! What several generators read off Dataplanes and name alike.

use std::collections::BTreeMap;

use model::labels::SERVICE_TAG;
use model::specs::dataplane::{Inbound, InboundState};

use serde_json::Value;

use crate::context::{DataplaneEntry, ZoneProxyListener};
use crate::envoy::listener::sni_listener;

/// Where an inbound listens: its own address, else the Dataplane's.
pub fn inbound_address<'a>(entry: &'a DataplaneEntry, inbound: &'a Inbound) -> &'a str {
    if inbound.address.is_empty() {
        &entry.spec.networking.address
    } else {
        &inbound.address
    }
}

/// Where other proxies reach an inbound: the Dataplane's advertised address, else where the
/// inbound listens.
pub fn endpoint_address<'a>(entry: &'a DataplaneEntry, inbound: &'a Inbound) -> &'a str {
    match entry.spec.networking.advertised_address.as_str() {
        "" => inbound_address(entry, inbound),
        advertised => advertised,
    }
}

/// Kuma's reading of inbound health: `state` wins, then `health.ready`; absent means ready.
pub fn inbound_ready(inbound: &Inbound) -> bool {
    match inbound.state {
        Some(InboundState::Ready) => true,
        Some(InboundState::NotReady | InboundState::Ignored) => false,
        None => inbound.health.as_ref().is_none_or(|h| h.ready),
    }
}

/// A service and a subset of its tags, as a cross-zone SNI names it.
pub type SniDestination = (String, BTreeMap<String, String>);

/// How many tags besides the service an SNI may select at an ingress or egress: outbounds that
/// select more cannot be routed across zones (subsets grow exponentially with tags).
pub const MAX_SUBSET_TAGS: usize = 2;

/// Every subset of `tags` other than the service tag with at most [`MAX_SUBSET_TAGS`] entries,
/// the empty one first.
pub fn tag_subsets(tags: &BTreeMap<String, String>) -> Vec<BTreeMap<String, String>> {
    let extra: Vec<(&String, &String)> = tags.iter().filter(|(k, _)| *k != SERVICE_TAG).collect();
    let mut out = vec![BTreeMap::new()];
    // Subsets of size n+1 extend those of size n with a later tag, so none repeats.
    let mut frontier = vec![(0, BTreeMap::new())];
    for _ in 0..MAX_SUBSET_TAGS {
        let mut next = Vec::new();
        for (start, subset) in &frontier {
            for (i, (k, v)) in extra.iter().enumerate().skip(*start) {
                let mut bigger: BTreeMap<String, String> = subset.clone();
                bigger.insert((*k).clone(), (*v).clone());
                out.push(bigger.clone());
                next.push((i + 1, bigger));
            }
        }
        frontier = next;
    }
    out
}

/// The cluster an ingress or egress passes a destination's connections to.
pub fn destination_cluster(mesh: &str, (service, subset): &SniDestination) -> String {
    if subset.is_empty() {
        return format!("{mesh}:{service}");
    }
    let tags: Vec<String> = subset.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{mesh}:{service}{{{}}}", tags.join(","))
}

/// The listener of a zone proxy's SNI chains; none when there is nothing to serve, as Envoy
/// refuses a listener without filter chains.
pub fn zone_proxy_listener(listener: &ZoneProxyListener, chains: Vec<Value>) -> Option<Value> {
    if chains.is_empty() {
        return None;
    }
    let name = format!("inbound:{}:{}", listener.address, listener.port);
    Some(sni_listener(
        &name,
        &listener.address,
        listener.port,
        chains,
    ))
}
