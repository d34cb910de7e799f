//! MeshTLS (Kuma's `pkg/plugins/policies/meshtls`): on an mTLS mesh, each inbound's catch-all
//! rule (`rules[]` or `from[]`) sets its mode (`Strict`, as the mesh is without the policy:
//! only mTLS callers; `Permissive`: plaintext callers too, through a second filter chain the
//! TLS inspector picks) and the TLS versions and ciphers it accepts. Outbound clusters offer
//! what the destination's own MeshTLS accepts (the policy that selects the destination's
//! proxies), as Kuma does, so both ends agree. Without mTLS there is no TLS to shape.

use model::ResourceType;
use model::specs::policy::{TlsConf, TlsMode, TlsVersion};
use serde_json::{Map, Value, json};

use super::Applied;
use crate::context::{DataplaneEntry, MeshContext};
use crate::resources::{Origin, ResourceSet};
use crate::rules::build::{catch_all, inbound_rules};
use crate::rules::matching::matched_policies;

pub struct Plugin;

impl super::PolicyPlugin for Plugin {
    fn kind(&self) -> ResourceType {
        ResourceType::MeshTLS
    }

    fn apply(&self, rs: &mut ResourceSet, mesh: &MeshContext, proxy: &DataplaneEntry) {
        if !mesh.mtls {
            return;
        }
        let policies = mesh.policies.raw(self.kind());
        if policies.is_empty() {
            return;
        }
        let matching = matched_policies(policies, proxy);
        let inbound: Vec<Option<Applied<TlsConf>>> =
            super::inbound_confs(self.kind(), rs, &matching.matched, proxy);
        for (origin, mut listener) in rs.listeners_mut() {
            let Origin::Inbound(i) = origin else {
                continue;
            };
            let Some(Some(Applied { conf, .. })) = inbound.get(i) else {
                continue;
            };
            for context in listener.downstream_tls_contexts() {
                set_tls_params(context, conf);
            }
            if conf.mode == Some(TlsMode::Permissive) {
                listener.accept_plaintext_too();
            }
        }
        let offered: Vec<Option<TlsConf>> = rs
            .destinations
            .iter()
            .map(|d| destination_conf(mesh, &d.service))
            .collect();
        for (d, conf) in offered.into_iter().enumerate() {
            let (Some(conf), Some(mut cluster)) = (conf, rs.cluster_mut(Origin::Destination(d)))
            else {
                continue;
            };
            if let Some(context) = cluster.upstream_tls_context() {
                set_tls_params(context, &conf);
            }
        }
    }
}

/// What the proxies of `service` accept: the catch-all MeshTLS conf of the first inbound of
/// the first proxy that serves it (instances of one service share their policies).
fn destination_conf(mesh: &MeshContext, service: &str) -> Option<TlsConf> {
    let policies = mesh.policies.raw(ResourceType::MeshTLS);
    mesh.dataplanes.iter().find_map(|dp| {
        let i = dp
            .spec
            .networking
            .inbound
            .iter()
            .position(|i| i.tags.get("kuma.io/service").map(String::as_str) == Some(service))?;
        let matching = matched_policies(policies, dp);
        let rule = catch_all(&inbound_rules(&matching.matched, i, true))?;
        serde_json::from_value::<TlsConf>(rule.conf).ok()
    })
}

pub(crate) fn envoy_version(v: TlsVersion) -> &'static str {
    match v {
        TlsVersion::TLSAuto => "TLS_AUTO",
        TlsVersion::TLS10 => "TLSv1_0",
        TlsVersion::TLS11 => "TLSv1_1",
        TlsVersion::TLS12 => "TLSv1_2",
        TlsVersion::TLS13 => "TLSv1_3",
    }
}

/// `common_tls_context.tls_params` from the conf's versions and ciphers.
fn set_tls_params(context: &mut Map<String, Value>, conf: &TlsConf) {
    let mut params = Map::new();
    if let Some(range) = &conf.tls_version {
        if let Some(min) = range.min {
            params.insert(
                "tls_minimum_protocol_version".into(),
                json!(envoy_version(min)),
            );
        }
        if let Some(max) = range.max {
            params.insert(
                "tls_maximum_protocol_version".into(),
                json!(envoy_version(max)),
            );
        }
    }
    if !conf.tls_ciphers.is_empty() {
        params.insert("cipher_suites".into(), json!(conf.tls_ciphers));
    }
    if params.is_empty() {
        return;
    }
    if let Some(common) = context
        .get_mut("common_tls_context")
        .and_then(Value::as_object_mut)
    {
        common.insert("tls_params".into(), Value::Object(params));
    }
}
