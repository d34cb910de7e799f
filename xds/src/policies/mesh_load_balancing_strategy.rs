//! MeshLoadBalancingStrategy: which endpoints of a destination a sidecar prefers, and how it
//! picks among them. Without a policy, this zone's instances come first and other zones are
//! used only when none is healthy (Envoy priorities), which is the behaviour operators expect
//! and not Kuma's old default of spreading across zones.
//!
//! A policy's `localityAwareness` reshapes the priorities of the destination's load
//! assignment ([`crate::generator::endpoints`]); `loadBalancer` picks Envoy's algorithm, and
//! hash policies (for RingHash and Maglev) go on the outbound route.

use model::ResourceType;
use model::specs::policy::{
    HashPolicy, HashPolicyType, LoadBalancer, LoadBalancerType, LoadBalancingConf,
    LocalityAwareness,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::context::{DataplaneEntry, MeshContext};
use crate::generator::endpoints::destination_assignment;
use crate::resources::{Origin, ResourceSet};
use crate::rules::build::shared_to_rule;
use crate::rules::matching::{Matched, matched_in};

pub struct Plugin;

impl super::PolicyPlugin for Plugin {
    fn kind(&self) -> ResourceType {
        ResourceType::MeshLoadBalancingStrategy
    }

    fn apply(&self, rs: &mut ResourceSet, mesh: &MeshContext, proxy: &DataplaneEntry) {
        let matching = matched_in(mesh, self.kind(), proxy);
        let caller_tags = proxy.caller_tags();
        let confs: Vec<Effective> = rs
            .destinations
            .iter()
            .map(|d| effective(mesh, &matching.matched, &d.service))
            .collect();
        for (d, conf) in confs.iter().enumerate() {
            let dest = &rs.destinations[d];
            let assignment = destination_assignment(mesh, dest, &conf.locality, &caller_tags);
            rs.lay_out_endpoints(d, &conf.locality, assignment);
            if let Some(mut cluster) = rs.cluster_mut(Origin::Destination(d)) {
                cluster.set_fields(cluster_fields(conf));
            }
        }
        for (origin, mut listener) in rs.listeners_mut() {
            let Origin::Outbound { destination, .. } = origin else {
                continue;
            };
            let Some(conf) = confs.get(destination) else {
                continue;
            };
            let route_policies = route_hash_policies(conf);
            if !route_policies.is_empty() {
                for action in listener.route_actions() {
                    action.insert("hash_policy".into(), json!(route_policies));
                }
            }
            let tcp_policies = tcp_hash_policies(conf);
            if !tcp_policies.is_empty() {
                for tcp in listener.tcp_proxies() {
                    tcp.insert("hash_policy".into(), json!(tcp_policies));
                }
            }
        }
    }
}

/// The merged configuration one proxy applies to one destination service.
#[derive(Debug, Clone, Default)]
struct Effective {
    pub locality: LocalityAwareness,
    pub load_balancer: Option<LoadBalancer>,
    pub hash_policies: Option<Vec<HashPolicy>>,
}

/// The merged `to[]` confs for calls to `service` (Kuma's rules: a later policy in Kuma's
/// order overrides an earlier one, objects merge field by field, lists are replaced).
fn effective(mesh: &MeshContext, matched: &[Matched<'_>], service: &str) -> Effective {
    let conf: LoadBalancingConf = shared_to_rule(mesh, matched, service)
        .and_then(|r| LoadBalancingConf::deserialize(&r.conf).ok())
        .unwrap_or_default();
    Effective {
        locality: conf.locality_awareness.unwrap_or_default(),
        load_balancer: conf.load_balancer,
        hash_policies: conf.hash_policies,
    }
}

/// Whether the cluster needs Envoy's locality-weighted balancing (affinity groups).
fn locality_weighted(conf: &Effective) -> bool {
    conf.locality
        .local_zone
        .as_ref()
        .and_then(|z| z.affinity_tags.as_ref())
        .is_some_and(|t| !t.is_empty())
}

/// The cluster fields of `loadBalancer` (and locality weighting), to merge into the cluster.
fn cluster_fields(conf: &Effective) -> serde_json::Map<String, Value> {
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
fn route_hash_policies(conf: &Effective) -> Vec<Value> {
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
fn tcp_hash_policies(conf: &Effective) -> Vec<Value> {
    let by_source = route_hash_policies(conf)
        .iter()
        .any(|p| p.get("connection_properties").is_some());
    if by_source {
        vec![json!({"source_ip": {}})]
    } else {
        Vec::new()
    }
}
