//! MeshProxyPatch (Kuma's `pkg/plugins/policies/meshproxypatch`): the merged
//! `default.appendModifications` of every policy selecting the proxy, applied last, in order,
//! to its clusters, listeners, network filters, HTTP filters and virtual hosts. `Add` and the
//! filter insertions take an Envoy resource in YAML (`value`); `Patch` merges a `value` into
//! each match as protobuf merges (messages field by field, lists appended) or applies
//! RFC 6902 `jsonPatches` to its JSON in Envoy's lowerCamel names, as Kuma does; `Remove` drops
//! the matches. A modification that cannot be applied (a YAML value that is not the resource,
//! a JSON patch whose path is missing, nothing matching a `Patch`) is a warning naming the
//! policy, and leaves the configuration as it was.

use std::collections::BTreeMap;

use model::ResourceType;
use model::specs::policy::{
    JsonPatch, Modification, ModificationOperation as Op, ProxyPatchConf, ResourceModification,
};
use serde_json::Value;

use super::json_patch;
use crate::context::{DataplaneEntry, MeshContext};
use crate::envoy::filters::HCM;
use crate::resources::{Origin, ResourceSet};
use crate::rules::build::single_item;
use crate::rules::matching::matched_in;
use crate::wire;

const FILTER: &str = "type.googleapis.com/envoy.config.listener.v3.Filter";
const HTTP_FILTER: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter";
const VIRTUAL_HOST: &str = "type.googleapis.com/envoy.config.route.v3.VirtualHost";

pub struct Plugin;

impl super::PolicyPlugin for Plugin {
    fn kind(&self) -> ResourceType {
        ResourceType::MeshProxyPatch
    }

    fn apply(&self, rs: &mut ResourceSet, mesh: &MeshContext, proxy: &DataplaneEntry) {
        let matching = matched_in(mesh, self.kind(), proxy);
        let Some(rule) = single_item(&matching.matched) else {
            return;
        };
        let policies: Vec<&str> = rule.origins.iter().map(|o| o.name.as_str()).collect();
        let who = format!("MeshProxyPatch {}", policies.join(", "));
        let Some(conf) = super::parse_conf::<ProxyPatchConf>(
            self.kind(),
            &rule.conf,
            "the proxy",
            &mut rs.warnings,
        ) else {
            return;
        };
        let tags: Vec<BTreeMap<String, String>> = proxy
            .spec
            .networking
            .inbound
            .iter()
            .map(|i| i.tags.clone())
            .collect();
        let mut patcher = Patcher {
            rs,
            inbound_tags: &tags,
            warnings: Vec::new(),
        };
        for (i, m) in conf.append_modifications.iter().enumerate() {
            if let Err(why) = patcher.apply(m) {
                patcher
                    .warnings
                    .push(format!("{who}: modification {i} not applied: {why}"));
            }
        }
        let warnings = std::mem::take(&mut patcher.warnings);
        rs.warnings.extend(warnings);
        rs.drop_orphan_endpoints();
    }
}

#[derive(Debug, thiserror::Error)]
enum ModificationError {
    #[error("value is not YAML: {0}")]
    Yaml(#[source] serde_saphyr::Error),
    #[error("value is not an Envoy {kind}: {source}")]
    Shape {
        kind: &'static str,
        #[source]
        source: wire::WireError,
    },
    #[error("{0} needs a value or jsonPatches")]
    NoValue(&'static str),
    #[error("{0} needs match.name")]
    NoName(&'static str),
    #[error("nothing matches {0}")]
    NoMatch(String),
    #[error("jsonPatches: {0}")]
    Patch(#[source] json_patch::PatchError),
    #[error("the patched resource is not an Envoy {kind}: {source}")]
    Patched {
        kind: &'static str,
        #[source]
        source: wire::WireError,
    },
    #[error("{0:?} is not an operation on {1}")]
    Operation(Op, &'static str),
}

/// Kuma's origin names for what a resource was generated for.
fn origin_name(origin: Origin) -> &'static str {
    match origin {
        Origin::Inbound(_) => "inbound",
        Origin::Outbound { .. } | Origin::Destination(_) => "outbound",
        Origin::ZoneProxy => "ingress",
        // Kuma's `OriginGateway`.
        Origin::Gateway { .. } => "gateway",
        Origin::Patch => "",
        // Kuma's `OriginPrometheus`.
        Origin::MeshMetrics => "prometheus",
        // Kuma's dynconf `OriginDynamicConfig`.
        Origin::DynamicConfig => "dynamic-config",
        // Kuma's `OriginTransparent`.
        Origin::Transparent => "transparent",
        Origin::Policy(model::ResourceType::MeshTrace) => "meshtrace",
        Origin::Policy(_) => "",
    }
}

/// A modification's `match`, as the fields Kuma reads.
#[derive(Default)]
struct Match {
    name: Option<String>,
    origin: Option<String>,
    listener_name: Option<String>,
    listener_tags: Option<BTreeMap<String, String>>,
    route_configuration_name: Option<String>,
}

impl Match {
    fn of(m: &ResourceModification) -> Match {
        let Some(v) = m.match_.as_ref() else {
            return Match::default();
        };
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let tags = |k: &str| {
            v.get(k)
                .and_then(|t| serde_json::from_value::<BTreeMap<String, String>>(t.clone()).ok())
        };
        Match {
            name: text("name"),
            origin: text("origin"),
            listener_name: text("listenerName"),
            // Listeners match on `tags`, filters on `listenerTags`.
            listener_tags: tags("listenerTags").or_else(|| tags("tags")),
            route_configuration_name: text("routeConfigurationName"),
        }
    }
}

struct Patcher<'a> {
    rs: &'a mut ResourceSet,
    inbound_tags: &'a [BTreeMap<String, String>],
    warnings: Vec<String>,
}

/// `value` (YAML) as the Envoy message `type_url`, in snake_case.
fn parse_value(
    value: &str,
    type_url: &str,
    kind: &'static str,
) -> Result<Value, ModificationError> {
    let json: Value = serde_saphyr::from_str(value).map_err(ModificationError::Yaml)?;
    wire::reshape(type_url, &json, true).map_err(|source| ModificationError::Shape { kind, source })
}

/// Protobuf's merge on Envoy JSON: objects field by field, lists appended, the rest replaced.
fn proto_merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => proto_merge(existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => a.extend(b),
        (into, from) => *into = from,
    }
}

/// Patches one resource: merges `value`, or applies `jsonPatches` to its lowerCamel JSON,
/// then writes it back in snake_case.
fn patch(
    target: &mut Value,
    m: &ResourceModification,
    type_url: &str,
    kind: &'static str,
) -> Result<(), ModificationError> {
    let mut patched = target.clone();
    if let Some(value) = &m.value {
        proto_merge(&mut patched, parse_value(value, type_url, kind)?);
    }
    if let Some(patches) = &m.json_patches {
        patched = json_patch_camel(&patched, patches, type_url, kind)?;
    }
    if m.value.is_none() && m.json_patches.is_none() {
        return Err(ModificationError::NoValue(kind));
    }
    *target = wire::reshape(type_url, &patched, true)
        .map_err(|source| ModificationError::Patched { kind, source })?;
    Ok(())
}

fn json_patch_camel(
    target: &Value,
    patches: &[JsonPatch],
    type_url: &str,
    kind: &'static str,
) -> Result<Value, ModificationError> {
    let mut camel = wire::reshape(type_url, target, false)
        .map_err(|source| ModificationError::Patched { kind, source })?;
    json_patch::apply(&mut camel, patches).map_err(ModificationError::Patch)?;
    Ok(camel)
}

/// Whether a listener is one `want` names (by name, origin, and an inbound's tags).
fn listener_matches(
    inbound_tags: &[BTreeMap<String, String>],
    origin: Origin,
    listener: &Value,
    want: &Match,
) -> bool {
    let name_ok = want
        .listener_name
        .as_ref()
        .is_none_or(|n| listener["name"] == n.as_str());
    let origin_ok = want
        .origin
        .as_ref()
        .is_none_or(|o| o == origin_name(origin));
    let tags_ok = want.listener_tags.as_ref().is_none_or(|tags| match origin {
        Origin::Inbound(i) => inbound_tags
            .get(i)
            .is_some_and(|have| tags.iter().all(|(k, v)| have.get(k) == Some(v))),
        _ => false,
    });
    name_ok && origin_ok && tags_ok
}

impl Patcher<'_> {
    fn apply(&mut self, m: &Modification) -> Result<(), ModificationError> {
        if let Some(c) = &m.cluster {
            self.resources(c, true)?;
        }
        if let Some(l) = &m.listener {
            self.resources(l, false)?;
        }
        if let Some(f) = &m.network_filter {
            self.network_filters(f)?;
        }
        if let Some(f) = &m.http_filter {
            self.http_filters(f)?;
        }
        if let Some(v) = &m.virtual_host {
            self.virtual_hosts(v)?;
        }
        Ok(())
    }

    /// Clusters (`clusters`) or listeners: Add, Remove, Patch.
    fn resources(
        &mut self,
        m: &ResourceModification,
        clusters: bool,
    ) -> Result<(), ModificationError> {
        let (kind, type_url) = if clusters {
            ("cluster", wire::CLUSTER)
        } else {
            ("listener", wire::LISTENER)
        };
        let mut want = Match::of(m);
        // A listener's own `name` is what filters call `listenerName`.
        if !clusters {
            want.listener_name = want.name.take();
        }
        let inbound_tags = self.inbound_tags;
        let matches = |origin: Origin, r: &Value| -> bool {
            if clusters {
                want.name.as_ref().is_none_or(|n| r["name"] == n.as_str())
                    && want
                        .origin
                        .as_ref()
                        .is_none_or(|o| o == origin_name(origin))
            } else {
                listener_matches(inbound_tags, origin, r, &want)
            }
        };
        let list = if clusters {
            self.rs.clusters_raw()
        } else {
            self.rs.listeners_raw()
        };
        match m.operation {
            Op::Add => {
                let value = m.value.as_deref().ok_or(ModificationError::NoValue(kind))?;
                let added = parse_value(value, type_url, kind)?;
                // An added resource replaces one of the same name, as in Kuma.
                list.retain(|(_, r)| r["name"] != added["name"]);
                list.push((Origin::Patch, added));
            }
            Op::Remove => list.retain(|(o, r)| !matches(*o, r)),
            Op::Patch => {
                let mut any = false;
                for (o, r) in list.iter_mut() {
                    if matches(*o, r) {
                        patch(r, m, type_url, kind)?;
                        any = true;
                    }
                }
                if !any {
                    return Err(ModificationError::NoMatch(kind.into()));
                }
            }
            op => return Err(ModificationError::Operation(op, kind)),
        }
        Ok(())
    }

    /// The filter lists of the listeners `want` selects: each filter chain's network filters,
    /// or (`http`) each HTTP connection manager's HTTP filters.
    fn filter_lists(&mut self, want: &Match, http: bool) -> Vec<&mut Vec<Value>> {
        let selected: Vec<bool> = self
            .rs
            .listeners_raw()
            .iter()
            .map(|(o, l)| listener_matches(self.inbound_tags, *o, l, want))
            .collect();
        let mut out = Vec::new();
        for ((_, listener), selected) in self.rs.listeners_raw().iter_mut().zip(selected) {
            if !selected {
                continue;
            }
            let chains = listener
                .get_mut("filter_chains")
                .and_then(Value::as_array_mut);
            for chain in chains.into_iter().flatten() {
                let Some(filters) = chain.get_mut("filters").and_then(Value::as_array_mut) else {
                    continue;
                };
                if !http {
                    out.push(filters);
                    continue;
                }
                for f in filters.iter_mut().filter(|f| f["name"] == HCM) {
                    if let Some(list) = f
                        .get_mut("typed_config")
                        .and_then(|c| c.get_mut("http_filters"))
                        .and_then(Value::as_array_mut)
                    {
                        out.push(list);
                    }
                }
            }
        }
        out
    }

    fn network_filters(&mut self, m: &ResourceModification) -> Result<(), ModificationError> {
        self.filters(m, false, FILTER, "network filter")
    }

    fn http_filters(&mut self, m: &ResourceModification) -> Result<(), ModificationError> {
        self.filters(m, true, HTTP_FILTER, "HTTP filter")
    }

    fn filters(
        &mut self,
        m: &ResourceModification,
        http: bool,
        type_url: &str,
        kind: &'static str,
    ) -> Result<(), ModificationError> {
        let want = Match::of(m);
        let name = want.name.clone();
        let value = match m.operation {
            Op::AddFirst | Op::AddLast | Op::AddBefore | Op::AddAfter => {
                let v = m.value.as_deref().ok_or(ModificationError::NoValue(kind))?;
                Some(parse_value(v, type_url, kind)?)
            }
            _ => None,
        };
        let named = |f: &Value| name.as_ref().is_none_or(|n| f["name"] == n.as_str());
        let mut any = false;
        for list in self.filter_lists(&want, http) {
            match (m.operation, &value) {
                (Op::AddFirst, Some(v)) => {
                    list.insert(0, v.clone());
                    any = true;
                }
                (Op::AddLast, Some(v)) => {
                    // HTTP filters go before the router, which must stay last.
                    let at = if http {
                        list.iter()
                            .position(|f| f["name"] == crate::envoy::filters::ROUTER)
                            .unwrap_or(list.len())
                    } else {
                        list.len()
                    };
                    list.insert(at, v.clone());
                    any = true;
                }
                (Op::AddBefore | Op::AddAfter, Some(v)) => {
                    let target = name.as_ref().ok_or(ModificationError::NoName(kind))?;
                    if let Some(i) = list.iter().position(|f| f["name"] == target.as_str()) {
                        let at = if m.operation == Op::AddAfter {
                            i + 1
                        } else {
                            i
                        };
                        list.insert(at, v.clone());
                        any = true;
                    }
                }
                (Op::Remove, _) => {
                    let before = list.len();
                    list.retain(|f| !named(f));
                    any |= list.len() != before;
                }
                (Op::Patch, _) => {
                    for f in list.iter_mut().filter(|f| named(f)) {
                        patch(f, m, type_url, kind)?;
                        any = true;
                    }
                }
                (op, _) => return Err(ModificationError::Operation(op, kind)),
            }
        }
        if !any && m.operation != Op::Remove {
            return Err(ModificationError::NoMatch(kind.into()));
        }
        Ok(())
    }

    fn virtual_hosts(&mut self, m: &ResourceModification) -> Result<(), ModificationError> {
        let kind = "virtual host";
        let want = Match::of(m);
        let added = match m.operation {
            Op::Add => {
                let v = m.value.as_deref().ok_or(ModificationError::NoValue(kind))?;
                Some(parse_value(v, VIRTUAL_HOST, kind)?)
            }
            Op::Remove | Op::Patch => None,
            op => return Err(ModificationError::Operation(op, kind)),
        };
        let any_listener = Match {
            origin: want.origin.clone(),
            ..Match::default()
        };
        let mut any = false;
        for list in self.filter_lists(&any_listener, false) {
            for f in list.iter_mut().filter(|f| f["name"] == HCM) {
                let Some(rc) = f
                    .get_mut("typed_config")
                    .and_then(|c| c.get_mut("route_config"))
                else {
                    continue;
                };
                let rc_ok = want
                    .route_configuration_name
                    .as_ref()
                    .is_none_or(|n| rc["name"] == n.as_str());
                let Some(hosts) = rc
                    .get_mut("virtual_hosts")
                    .and_then(Value::as_array_mut)
                    .filter(|_| rc_ok)
                else {
                    continue;
                };
                let named = |h: &Value| want.name.as_ref().is_none_or(|n| h["name"] == n.as_str());
                match &added {
                    Some(v) => {
                        hosts.push(v.clone());
                        any = true;
                    }
                    None if m.operation == Op::Remove => hosts.retain(|h| !named(h)),
                    None => {
                        for h in hosts.iter_mut().filter(|h| named(h)) {
                            patch(h, m, VIRTUAL_HOST, kind)?;
                            any = true;
                        }
                    }
                }
            }
        }
        if !any && m.operation != Op::Remove {
            return Err(ModificationError::NoMatch(kind.into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_is_protobufs() {
        let mut a = json!({"name": "c", "lb": {"x": 1, "y": 2}, "list": [1]});
        proto_merge(&mut a, json!({"lb": {"y": 3}, "list": [2], "new": true}));
        assert_eq!(
            a,
            json!({"name": "c", "lb": {"x": 1, "y": 3}, "list": [1, 2], "new": true})
        );
    }

    #[test]
    fn values_in_either_spelling_come_out_snake_case() {
        let v = parse_value(
            "name: c\nconnectTimeout: 3s\ntype: STATIC\n",
            wire::CLUSTER,
            "cluster",
        )
        .expect("cluster");
        assert_eq!(v["connect_timeout"], "3s");
        let err = parse_value("name: c\nnot_a_field: 1\n", wire::CLUSTER, "cluster")
            .expect_err("unknown field");
        assert!(err.to_string().contains("not an Envoy cluster"), "{err}");
    }
}
