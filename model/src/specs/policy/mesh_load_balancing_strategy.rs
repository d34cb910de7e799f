//! MeshLoadBalancingStrategy: locality awareness (local zone affinity, cross-zone failover)
//! and the load-balancing algorithm of the destinations in `to`.

use super::common::*;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshLoadBalancingStrategySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<ToItem<LoadBalancingConf>>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancingConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_awareness: Option<LocalityAwareness>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    /// 2.11+: hash policies applied to the whole destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_policies: Option<Vec<HashPolicy>>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityAwareness {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_zone: Option<LocalZone>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_zone: Option<CrossZone>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalZone {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_tags: Option<Vec<AffinityTag>>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AffinityTag {
    #[serde(default)]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CrossZone {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<Failover>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_threshold: Option<FailoverThreshold>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Failover {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<FromZones>,
    pub to: ToZones,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FromZones {
    #[serde(default)]
    pub zones: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToZoneType {
    None,
    Only,
    Any,
    AnyExcept,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToZones {
    #[serde(rename = "type")]
    pub zone_type: ToZoneType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailoverThreshold {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<IntOrString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoadBalancerType {
    RoundRobin,
    LeastRequest,
    RingHash,
    Random,
    Maglev,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancer {
    #[serde(rename = "type")]
    pub lb_type: LoadBalancerType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_robin: Option<EmptyConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub least_request: Option<LeastRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random: Option<EmptyConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<Maglev>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyConf {}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeastRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_request_bias: Option<IntOrString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HashFunction {
    XXHash,
    MurmurHash2,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_function: Option<HashFunction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ring_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ring_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_policies: Option<Vec<HashPolicy>>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Maglev {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_policies: Option<Vec<HashPolicy>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HashPolicyType {
    Header,
    Cookie,
    SourceIP,
    Connection,
    QueryParameter,
    FilterState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HashPolicy {
    #[serde(rename = "type")]
    pub policy_type: HashPolicyType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<NamedKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<CookieHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_parameter: Option<NamedKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_state: Option<FilterStateHash>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamedKey {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieHash {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionHash {
    #[serde(default, rename = "sourceIP", skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterStateHash {
    #[serde(default)]
    pub key: String,
}

fn check_hash_policies(v: &mut Validator, policies: &Option<Vec<HashPolicy>>) {
    let Some(policies) = policies else { return };
    v.field("hashPolicies", |v| {
        for (i, p) in policies.iter().enumerate() {
            v.index(i, |v| match p.policy_type {
                HashPolicyType::Header => match &p.header {
                    None => v.violation_at("header", MUST_BE_DEFINED),
                    Some(h) => v.field("header", |v| v.require_non_empty("name", &h.name)),
                },
                HashPolicyType::Cookie => match &p.cookie {
                    None => v.violation_at("cookie", MUST_BE_DEFINED),
                    Some(c) => v.field("cookie", |v| {
                        v.require_non_empty("name", &c.name);
                        duration(v, "ttl", &c.ttl);
                    }),
                },
                HashPolicyType::SourceIP | HashPolicyType::Connection => {
                    if p.connection.is_none() && p.policy_type == HashPolicyType::Connection {
                        v.violation_at("connection", MUST_BE_DEFINED);
                    }
                }
                HashPolicyType::QueryParameter => match &p.query_parameter {
                    None => v.violation_at("queryParameter", MUST_BE_DEFINED),
                    Some(q) => v.field("queryParameter", |v| v.require_non_empty("name", &q.name)),
                },
                HashPolicyType::FilterState => match &p.filter_state {
                    None => v.violation_at("filterState", MUST_BE_DEFINED),
                    Some(f) => v.field("filterState", |v| v.require_non_empty("key", &f.key)),
                },
            });
        }
    });
}

fn check_load_balancing_conf(v: &mut Validator, c: &LoadBalancingConf) {
    if let Some(la) = &c.locality_awareness {
        v.field("localityAwareness", |v| {
            if let Some(lz) = &la.local_zone
                && let Some(tags) = &lz.affinity_tags
            {
                v.field("localZone", |v| {
                    v.field("affinityTags", |v| {
                        let weighted = tags.iter().filter(|t| t.weight.is_some()).count();
                        if weighted != 0 && weighted != tags.len() {
                            v.violation("all or none affinity tags should have weight");
                        }
                        for (i, t) in tags.iter().enumerate() {
                            v.index(i, |v| v.require_non_empty("key", &t.key));
                        }
                    })
                });
            }
            if let Some(cz) = &la.cross_zone {
                v.field("crossZone", |v| {
                    v.field("failover", |v| {
                        for (i, f) in cz.failover.iter().enumerate() {
                            v.index(i, |v| {
                                if let Some(from) = &f.from
                                    && from.zones.is_empty()
                                {
                                    v.field("from", |v| {
                                        v.violation_at("zones", "must not be empty")
                                    });
                                }
                                v.field("to", |v| {
                                    let has_zones =
                                        f.to.zones.as_ref().is_some_and(|z| !z.is_empty());
                                    match f.to.zone_type {
                                        ToZoneType::Only | ToZoneType::AnyExcept if !has_zones => {
                                            v.violation_at(
                                                "zones",
                                                "must not be empty when type is Only or AnyExcept",
                                            );
                                        }
                                        ToZoneType::Any | ToZoneType::None
                                            if f.to.zones.is_some() =>
                                        {
                                            v.violation_at(
                                                "zones",
                                                "must be empty when type is Any or None",
                                            );
                                        }
                                        _ => {}
                                    }
                                });
                            });
                        }
                    });
                    if let Some(ft) = &cz.failover_threshold {
                        v.field("failoverThreshold", |v| {
                            match ft.percentage.as_ref().map(IntOrString::as_f64) {
                                None => v.violation_at("percentage", MUST_BE_DEFINED),
                                Some(None) => {
                                    v.violation_at("percentage", "must be a valid number")
                                }
                                Some(Some(p)) if p <= 0.0 || p > 100.0 => v.violation_at(
                                    "percentage",
                                    "must be greater than 0 and at most 100",
                                ),
                                Some(Some(_)) => {}
                            }
                        });
                    }
                });
            }
        });
    }
    if let Some(lb) = &c.load_balancer {
        v.field("loadBalancer", |v| {
            let others = [
                (
                    "roundRobin",
                    lb.round_robin.is_some(),
                    LoadBalancerType::RoundRobin,
                ),
                (
                    "leastRequest",
                    lb.least_request.is_some(),
                    LoadBalancerType::LeastRequest,
                ),
                (
                    "ringHash",
                    lb.ring_hash.is_some(),
                    LoadBalancerType::RingHash,
                ),
                ("random", lb.random.is_some(), LoadBalancerType::Random),
                ("maglev", lb.maglev.is_some(), LoadBalancerType::Maglev),
            ];
            for (name, set, ty) in others {
                if set && ty != lb.lb_type {
                    v.violation_at(
                        name,
                        format!("must not be defined with type {:?}", lb.lb_type),
                    );
                }
            }
            if let Some(lr) = &lb.least_request {
                v.field("leastRequest", |v| {
                    if let Some(n) = lr.choice_count
                        && n < 2
                    {
                        v.violation_at("choiceCount", "must be greater than or equal to 2");
                    }
                    if let Some(b) = &lr.active_request_bias
                        && b.as_f64().is_none_or(|x| x < 0.0)
                    {
                        v.violation_at("activeRequestBias", "must be a non-negative number");
                    }
                });
            }
            if let Some(rh) = &lb.ring_hash {
                v.field("ringHash", |v| {
                    in_range(
                        v,
                        "minRingSize",
                        rh.min_ring_size.map(f64::from),
                        1.0,
                        8_000_000.0,
                    );
                    in_range(
                        v,
                        "maxRingSize",
                        rh.max_ring_size.map(f64::from),
                        1.0,
                        8_000_000.0,
                    );
                    if let (Some(min), Some(max)) = (rh.min_ring_size, rh.max_ring_size)
                        && min > max
                    {
                        v.violation_at("minRingSize", "must be less than or equal to maxRingSize");
                    }
                    check_hash_policies(v, &rh.hash_policies);
                });
            }
            if let Some(m) = &lb.maglev {
                v.field("maglev", |v| {
                    in_range(
                        v,
                        "tableSize",
                        m.table_size.map(f64::from),
                        1.0,
                        5_000_011.0,
                    );
                    check_hash_policies(v, &m.hash_policies);
                });
            }
        });
    }
    check_hash_policies(v, &c.hash_policies);
}

impl Validate for MeshLoadBalancingStrategySpec {
    fn validate(&self, v: &mut Validator) {
        check_to_only(
            v,
            &self.target_ref,
            &self.to,
            TO_DESTINATIONS_AND_ROUTES,
            check_load_balancing_conf,
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::specs::policy::validate;
    use crate::specs::testing::{err, ok};
    use serde_json::json;

    #[test]
    fn mesh_load_balancing_strategy_docs_examples() {
        ok(
            validate::<MeshLoadBalancingStrategySpec>,
            json!({"targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {
                "localityAwareness": {
                    "localZone": {"affinityTags": [{"key": "k8s.io/node", "weight": 9000}, {"key": "k8s.io/az", "weight": 9}]},
                    "crossZone": {"failover": [
                        {"from": {"zones": ["zone-1"]}, "to": {"type": "Only", "zones": ["zone-2"]}},
                        {"to": {"type": "AnyExcept", "zones": ["zone-3"]}},
                        {"to": {"type": "Any"}}],
                        "failoverThreshold": {"percentage": 70}}},
                "loadBalancer": {"type": "RingHash", "ringHash": {"hashFunction": "MurmurHash2", "minRingSize": 64, "maxRingSize": 1024,
                    "hashPolicies": [{"type": "Header", "header": {"name": "x-header"}, "terminal": true},
                                     {"type": "Connection", "connection": {"sourceIP": true}}]}}}}]}),
        );
        ok(
            validate::<MeshLoadBalancingStrategySpec>,
            json!({"to": [{"targetRef": {"kind": "Mesh"},
            "default": {"localityAwareness": {"disabled": true}, "loadBalancer": {"type": "LeastRequest", "leastRequest": {"choiceCount": 4}}}}]}),
        );
    }

    #[test]
    fn mesh_load_balancing_strategy_rejections() {
        let f = validate::<MeshLoadBalancingStrategySpec>;
        err(f, json!({}), "spec.to", "needs at least one item");
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"localityAwareness": {"crossZone": {"failover": [{"to": {"type": "Only"}}]}}}}]}),
            "spec.to[0].default.localityAwareness.crossZone.failover[0].to.zones",
            "must not be empty",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"localityAwareness": {"localZone": {"affinityTags": [{"key": "a", "weight": 1}, {"key": "b"}]}}}}]}),
            "spec.to[0].default.localityAwareness.localZone.affinityTags",
            "all or none affinity tags should have weight",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"loadBalancer": {"type": "RingHash", "ringHash": {"minRingSize": 9000000}}}}]}),
            "spec.to[0].default.loadBalancer.ringHash.minRingSize",
            "must be in inclusive range",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"loadBalancer": {"type": "Random", "maglev": {}}}}]}),
            "spec.to[0].default.loadBalancer.maglev",
            "must not be defined with type Random",
        );
        err(
            f,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"loadBalancer": {"type": "Fastest"}}}]}),
            "spec.to[0].default.loadBalancer.type",
            "unknown variant",
        );
    }
}
