//! MeshLoadBalancingStrategy: which endpoints of a destination a sidecar prefers, and how it
//! picks among them. Without a policy, this zone's instances come first and other zones are
//! used only when none is healthy (Envoy priorities), which is the behaviour operators expect
//! and not Kuma's old default of spreading across zones.
//!
//! A policy's `localityAwareness` reshapes the priorities: `disabled` puts every zone at the
//! same priority, `localZone.affinityTags` splits this zone's instances into weighted groups by
//! the tag values they share with the caller, `crossZone.failover` orders other zones (a zone
//! no applicable rule names gets no traffic) and `failoverThreshold` says how unhealthy a
//! priority may get before traffic spills to the next. `loadBalancer` picks Envoy's algorithm,
//! and hash policies (for RingHash and Maglev) go on the outbound route.

use std::collections::BTreeMap;

use model::labels::SERVICE_TAG;
use model::specs::policy::{
    HashPolicy, HashPolicyType, LoadBalancer, LoadBalancerType, LoadBalancingConf,
    LocalityAwareness, MeshLoadBalancingStrategySpec, ToZoneType,
};
use model::specs::targetref::{TargetRef, TargetRefKind, matches_dataplane};
use serde_json::{Value, json};

use crate::rbac::top_rank;
use crate::sidecar::lb_endpoint;
use crate::{DataplaneEntry, NamedPolicy};

/// The merged configuration one proxy applies to one destination service.
#[derive(Debug, Clone, Default)]
pub struct Effective {
    pub locality: LocalityAwareness,
    pub load_balancer: Option<LoadBalancer>,
    pub hash_policies: Option<Vec<HashPolicy>>,
}

/// Whether a `to[].targetRef` names `service` (Mesh names every destination).
fn to_rank(target: &TargetRef, service: &str) -> Option<u8> {
    match target.kind {
        TargetRefKind::Mesh => Some(0),
        TargetRefKind::MeshService | TargetRefKind::MeshMultiZoneService
            if target.name_str() == service =>
        {
            Some(1)
        }
        TargetRefKind::MeshService | TargetRefKind::MeshMultiZoneService
            if target.name.is_none()
                && target
                    .labels
                    .get(model::labels::DISPLAY_NAME)
                    .is_some_and(|n| n == service) =>
        {
            Some(1)
        }
        _ => None,
    }
}

/// Merges every `to` entry that applies to `proxy` calling `service`: a more specific
/// destination wins over `Mesh`, then a more specific top-level `targetRef`, then the later
/// policy name. Objects merge field by field; lists are replaced, not appended.
pub fn effective(
    policies: &[NamedPolicy<MeshLoadBalancingStrategySpec>],
    proxy: &DataplaneEntry,
    service: &str,
) -> Effective {
    let proxy_tags: BTreeMap<String, String> = proxy
        .spec
        .networking
        .inbound
        .iter()
        .flat_map(|i| i.tags.clone())
        .collect();
    let mut entries: Vec<(u8, u8, &str, usize, &LoadBalancingConf)> = Vec::new();
    for p in policies {
        let top = p.spec.target_ref.clone().unwrap_or_else(TargetRef::mesh);
        let selected = match top.kind {
            // A proxy with several inbounds is selected if any of them is.
            TargetRefKind::MeshService | TargetRefKind::MeshServiceSubset => proxy
                .spec
                .networking
                .inbound
                .iter()
                .any(|i| matches_dataplane(&top, &i.tags, &proxy.name, &proxy.labels)),
            _ => matches_dataplane(&top, &proxy_tags, &proxy.name, &proxy.labels),
        };
        if !selected {
            continue;
        }
        for (i, to) in p.spec.to.iter().enumerate() {
            if let (Some(rank), Some(conf)) = (to_rank(&to.target_ref, service), &to.default) {
                entries.push((rank, top_rank(&top.kind), &p.name, i, conf));
            }
        }
    }
    entries.sort_by(|a, b| (a.0, a.1, a.2, a.3).cmp(&(b.0, b.1, b.2, b.3)));
    let mut merged = Value::Object(Default::default());
    for (.., conf) in entries {
        if let Ok(v) = serde_json::to_value(conf) {
            merge(&mut merged, v);
        }
    }
    // Every part was a valid conf, and a merge of valid confs is one; default if not.
    let conf: LoadBalancingConf = serde_json::from_value(merged).unwrap_or_default();
    Effective {
        locality: conf.locality_awareness.unwrap_or_default(),
        load_balancer: conf.load_balancer,
        hash_policies: conf.hash_policies,
    }
}

/// Kuma's merge of policy confs: objects field by field, anything else (lists included)
/// replaced by the later value.
fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// One local instance: where it is and the tags and labels affinity compares.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalEndpoint {
    pub address: String,
    pub port: u32,
    pub tags: BTreeMap<String, String>,
}

/// Another zone that runs the destination: where its traffic goes (its ingress, or this
/// zone's egresses) and how many instances it has.
#[derive(Debug, Clone)]
pub struct RemoteZone {
    pub zone: String,
    pub via: Vec<(String, u32)>,
    pub instances: u32,
}

/// The `ClusterLoadAssignment` of `cluster`, shaped by `conf`, for a caller with `caller_tags`
/// (its inbound tags and labels) in `local_zone`.
pub fn load_assignment(
    cluster: &str,
    conf: &Effective,
    local_zone: &str,
    caller_tags: &BTreeMap<String, String>,
    local: &[LocalEndpoint],
    remote: &[RemoteZone],
) -> Value {
    let la = &conf.locality;
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

/// Whether the cluster needs Envoy's locality-weighted balancing (affinity groups).
pub fn locality_weighted(conf: &Effective) -> bool {
    conf.locality
        .local_zone
        .as_ref()
        .and_then(|z| z.affinity_tags.as_ref())
        .is_some_and(|t| !t.is_empty())
}

/// The cluster fields of `loadBalancer` (and locality weighting), to merge into the cluster.
pub fn cluster_fields(conf: &Effective) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    if locality_weighted(conf) {
        out.insert(
            "common_lb_config".into(),
            json!({"locality_weighted_lb_config": {}}),
        );
    }
    let Some(lb) = &conf.load_balancer else {
        return out;
    };
    let policy = match lb.lb_type {
        LoadBalancerType::RoundRobin => "ROUND_ROBIN",
        LoadBalancerType::LeastRequest => "LEAST_REQUEST",
        LoadBalancerType::RingHash => "RING_HASH",
        LoadBalancerType::Random => "RANDOM",
        LoadBalancerType::Maglev => "MAGLEV",
    };
    out.insert("lb_policy".into(), json!(policy));
    match lb.lb_type {
        LoadBalancerType::LeastRequest => {
            if let Some(lr) = &lb.least_request {
                let mut c = serde_json::Map::new();
                if let Some(n) = lr.choice_count {
                    c.insert("choice_count".into(), json!(n));
                }
                if let Some(bias) = lr.active_request_bias.as_ref().and_then(|b| b.as_f64()) {
                    c.insert(
                        "active_request_bias".into(),
                        json!({"default_value": bias, "runtime_key": "upstream.least_request.active_request_bias"}),
                    );
                }
                out.insert("least_request_lb_config".into(), Value::Object(c));
            }
        }
        LoadBalancerType::RingHash => {
            if let Some(rh) = &lb.ring_hash {
                let mut c = serde_json::Map::new();
                if let Some(f) = rh.hash_function {
                    let name = match f {
                        model::specs::policy::HashFunction::XXHash => "XX_HASH",
                        model::specs::policy::HashFunction::MurmurHash2 => "MURMUR_HASH_2",
                    };
                    c.insert("hash_function".into(), json!(name));
                }
                if let Some(n) = rh.min_ring_size {
                    c.insert("minimum_ring_size".into(), json!(n));
                }
                if let Some(n) = rh.max_ring_size {
                    c.insert("maximum_ring_size".into(), json!(n));
                }
                out.insert("ring_hash_lb_config".into(), Value::Object(c));
            }
        }
        LoadBalancerType::Maglev => {
            if let Some(size) = lb.maglev.as_ref().and_then(|m| m.table_size) {
                out.insert("maglev_lb_config".into(), json!({"table_size": size}));
            }
        }
        LoadBalancerType::RoundRobin | LoadBalancerType::Random => {}
    }
    out
}

/// The hash policies of an HTTP outbound route: the destination's own, else those of its
/// RingHash or Maglev settings.
pub fn route_hash_policies(conf: &Effective) -> Vec<Value> {
    let lb_policies = conf.load_balancer.as_ref().and_then(|lb| match lb.lb_type {
        LoadBalancerType::RingHash => lb.ring_hash.as_ref()?.hash_policies.as_ref(),
        LoadBalancerType::Maglev => lb.maglev.as_ref()?.hash_policies.as_ref(),
        _ => None,
    });
    let Some(policies) = conf.hash_policies.as_ref().or(lb_policies) else {
        return Vec::new();
    };
    policies.iter().filter_map(route_hash_policy).collect()
}

fn route_hash_policy(p: &HashPolicy) -> Option<Value> {
    let mut v = match p.policy_type {
        HashPolicyType::Header => json!({"header": {"header_name": p.header.as_ref()?.name}}),
        HashPolicyType::Cookie => {
            let c = p.cookie.as_ref()?;
            let mut cookie = json!({"name": c.name});
            if let Some(ttl) = c
                .ttl
                .as_deref()
                .and_then(|t| model::duration::parse_duration(t).ok())
            {
                cookie["ttl"] = json!(format!("{}s", ttl.as_secs_f64()));
            }
            if let Some(path) = &c.path {
                cookie["path"] = json!(path);
            }
            json!({"cookie": cookie})
        }
        HashPolicyType::Connection | HashPolicyType::SourceIP => {
            let on = p
                .connection
                .as_ref()
                .and_then(|c| c.source_ip)
                .unwrap_or(p.policy_type == HashPolicyType::SourceIP);
            if !on {
                return None;
            }
            json!({"connection_properties": {"source_ip": true}})
        }
        HashPolicyType::QueryParameter => {
            json!({"query_parameter": {"name": p.query_parameter.as_ref()?.name}})
        }
        HashPolicyType::FilterState => {
            json!({"filter_state": {"key": p.filter_state.as_ref()?.key}})
        }
    };
    if p.terminal == Some(true) {
        v["terminal"] = json!(true);
    }
    Some(v)
}

/// A TCP outbound can hash only on the caller's address.
pub fn tcp_hash_policies(conf: &Effective) -> Vec<Value> {
    let by_source = route_hash_policies(conf)
        .iter()
        .any(|p| p.get("connection_properties").is_some());
    if by_source {
        vec![json!({"source_ip": {}})]
    } else {
        Vec::new()
    }
}

/// The caller's tags as affinity compares them: its inbounds' tags and its labels.
pub fn caller_tags(proxy: &DataplaneEntry) -> BTreeMap<String, String> {
    let mut tags = proxy.labels.clone();
    for i in &proxy.spec.networking.inbound {
        for (k, v) in &i.tags {
            if k != SERVICE_TAG {
                tags.insert(k.clone(), v.clone());
            }
        }
    }
    tags
}
