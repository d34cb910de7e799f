//! A destination's endpoints by locality. By default this zone's instances are at priority 0
//! and each other zone's ingress at priority 1, weighted by the instances behind it: Envoy
//! sends traffic to another zone only when this zone has no healthy instance left, so calls
//! stay local. A MeshLoadBalancingStrategy's `localityAwareness` reshapes the groups:
//! `disabled` puts every zone at the same priority, `localZone.affinityTags` splits this zone's
//! instances into weighted groups by the tag values they share with the caller,
//! `crossZone.failover` orders other zones (a zone no applicable rule names gets no traffic)
//! and `failoverThreshold` says how unhealthy a priority may get before traffic spills over.

use std::collections::BTreeMap;
use std::sync::Arc;

use model::specs::policy::{LocalityAwareness, ToZoneType};
use serde_json::{Value, json};

use crate::context::MeshContext;
use crate::envoy::endpoints::lb_endpoint;
use crate::resources::{Destination, LocalEndpoint, RemoteZone};

/// The `ClusterLoadAssignment` of `dest` for a caller with `caller_tags`, laid out once per
/// snapshot for all callers when the layout does not depend on the caller (no affinity tags).
pub fn destination_assignment(
    mesh: &MeshContext,
    dest: &Destination,
    la: &LocalityAwareness,
    caller_tags: &BTreeMap<String, String>,
) -> Arc<Value> {
    let layout = || {
        load_assignment(
            &dest.cluster,
            la,
            &mesh.local_zone,
            caller_tags,
            &dest.endpoints,
            &dest.remote,
        )
    };
    let by_caller = la
        .local_zone
        .as_ref()
        .and_then(|z| z.affinity_tags.as_ref())
        .is_some_and(|t| !t.is_empty());
    let shared = mesh.shared.as_ref().filter(|_| !by_caller);
    match shared.map(|s| (s, serde_json::to_string(la))) {
        Some((shared, Ok(key))) => shared.assignment(&dest.cluster, key, layout),
        _ => Arc::new(layout()),
    }
}

/// The `ClusterLoadAssignment` of `cluster`, shaped by `la`, for a caller with `caller_tags`
/// (its inbound tags and labels) in `local_zone`.
pub fn load_assignment(
    cluster: &str,
    la: &LocalityAwareness,
    local_zone: &str,
    caller_tags: &BTreeMap<String, String>,
    local: &[LocalEndpoint],
    remote: &[RemoteZone],
) -> Value {
    let explicit = la.local_zone.is_some() || la.cross_zone.is_some();
    let flat = la.disabled == Some(true) && !explicit;
    let mut groups: Vec<Value> = Vec::new();
    let mut weighted = false;

    // This zone, priority 0: one group, or weighted groups by affinity with the caller.
    let affinity = la
        .local_zone
        .as_ref()
        .and_then(|z| z.affinity_tags.as_ref())
        .filter(|t| !t.is_empty());
    match affinity {
        Some(tags) => {
            weighted = true;
            let n = tags.len() as u32;
            let mut buckets: Vec<(String, u32, Vec<&LocalEndpoint>)> = tags
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    // Kuma's default weights fall tenfold down the list: 90, 9 for two tags.
                    let weight = t
                        .weight
                        .unwrap_or_else(|| 9 * 10u32.saturating_pow(n - 1 - i as u32));
                    (t.key.clone(), weight, Vec::new())
                })
                .collect();
            let mut rest = Vec::new();
            for e in local {
                let bucket = buckets.iter_mut().find(|(key, ..)| {
                    caller_tags
                        .get(key)
                        .is_some_and(|v| e.tags.get(key) == Some(v))
                });
                match bucket {
                    Some((.., members)) => members.push(e),
                    None => rest.push(e),
                }
            }
            for (key, weight, members) in &buckets {
                if !members.is_empty() {
                    let value = caller_tags.get(key).map(String::as_str).unwrap_or("");
                    let sub_zone = format!("{key}={value}");
                    groups.push(local_group(local_zone, Some(&sub_zone), members, *weight));
                }
            }
            if !rest.is_empty() {
                groups.push(local_group(local_zone, None, &rest, 1));
            }
        }
        None if !local.is_empty() => {
            let all: Vec<&LocalEndpoint> = local.iter().collect();
            groups.push(local_group(local_zone, None, &all, 1));
        }
        None => {}
    }

    // Other zones: priority 1 each by default, 0 with locality awareness disabled, or the
    // priority of the first failover rule that names them (unnamed zones get nothing).
    let rules: Vec<_> = la
        .cross_zone
        .as_ref()
        .map(|c| {
            c.failover
                .iter()
                .filter(|f| {
                    f.from
                        .as_ref()
                        .is_none_or(|from| from.zones.iter().any(|z| z == local_zone))
                })
                .collect()
        })
        .unwrap_or_default();
    for r in remote {
        if r.via.is_empty() || r.zone == local_zone {
            continue;
        }
        let priority = if flat {
            0
        } else if la.cross_zone.is_some() {
            let named =
                |zones: &Option<Vec<String>>| zones.as_ref().is_some_and(|z| z.contains(&r.zone));
            let rank = rules.iter().position(|f| match f.to.zone_type {
                ToZoneType::Any => true,
                ToZoneType::Only => named(&f.to.zones),
                ToZoneType::AnyExcept => !named(&f.to.zones),
                ToZoneType::None => false,
            });
            match rank {
                Some(i) => 1 + i as u32,
                None => continue,
            }
        } else if la.local_zone.is_some() {
            // Explicit local groups without failover rules: traffic stays in the zone.
            continue;
        } else {
            1
        };
        let lb_endpoints: Vec<Value> = r
            .via
            .iter()
            .map(|(a, p)| lb_endpoint(a, *p, Some(r.instances)))
            .collect();
        let mut group = json!({"locality": {"zone": r.zone}, "lb_endpoints": lb_endpoints});
        if priority > 0 {
            group["priority"] = json!(priority);
        }
        groups.push(group);
    }
    compact_priorities(&mut groups);
    if weighted {
        // With locality weights on, a locality without a weight gets no traffic at all.
        for g in &mut groups {
            if g.get("load_balancing_weight").is_none() {
                g["load_balancing_weight"] = json!(1);
            }
        }
    }
    let mut cla = json!({"cluster_name": cluster, "endpoints": groups});
    if let Some(factor) = overprovisioning_factor(la) {
        cla["policy"] = json!({"overprovisioning_factor": factor});
    }
    cla
}

fn local_group(
    zone: &str,
    sub_zone: Option<&str>,
    members: &[&LocalEndpoint],
    weight: u32,
) -> Value {
    let lb_endpoints: Vec<Value> = members
        .iter()
        .map(|e| lb_endpoint(&e.address, e.port, None))
        .collect();
    let mut group = json!({"lb_endpoints": lb_endpoints});
    if !zone.is_empty() || sub_zone.is_some() {
        let mut locality = json!({"zone": zone});
        if let Some(s) = sub_zone {
            locality["sub_zone"] = json!(s);
        }
        group["locality"] = locality;
    }
    if sub_zone.is_some() || weight != 1 {
        group["load_balancing_weight"] = json!(weight);
    }
    group
}

/// Envoy wants priorities without gaps; failover rules that matched no zone leave some.
fn compact_priorities(groups: &mut [Value]) {
    let mut used: Vec<u64> = groups
        .iter()
        .map(|g| g["priority"].as_u64().unwrap_or(0))
        .collect();
    used.sort_unstable();
    used.dedup();
    for g in groups.iter_mut() {
        let p = g["priority"].as_u64().unwrap_or(0);
        let compact = used.iter().position(|u| *u == p).unwrap_or(0) as u64;
        if compact == 0 {
            if let Some(o) = g.as_object_mut() {
                o.remove("priority");
            }
        } else {
            g["priority"] = json!(compact);
        }
    }
}

/// `failoverThreshold.percentage` as Envoy's overprovisioning factor: a priority keeps all its
/// traffic while its healthy share times the factor is at least 100%.
fn overprovisioning_factor(la: &LocalityAwareness) -> Option<u32> {
    let p = la
        .cross_zone
        .as_ref()?
        .failover_threshold
        .as_ref()?
        .percentage
        .as_ref()?
        .as_f64()?;
    (p > 0.0 && p <= 100.0).then(|| (10_000.0 / p).round() as u32)
}
