//! What configuration is generated from: a mesh's context (its Dataplanes, mTLS state,
//! policies by type, other zones' ingresses) and the zone proxies' listeners.

use std::any::Any;
use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use model::ResourceType;
use model::labels::{PROTOCOL_TAG, SERVICE_TAG};
use model::specs::dataplane::DataplaneSpec;
use model::specs::mesh::MeshServicesMode;
use model::specs::policy::PolicySpec;
use model::specs::service::{
    MeshExternalServiceSpec, MeshMultiZoneServiceSpec, MeshServiceSpec, ServicePort,
};
use serde_json::Value;

use crate::resources::Destination;
use crate::rules::Rule;

/// One Dataplane of the mesh, as the generators see it.
#[derive(Debug, Clone, PartialEq)]
pub struct DataplaneEntry {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub spec: DataplaneSpec,
}

impl DataplaneEntry {
    /// The proxy's tags as locality affinity compares them: its labels and its inbounds' tags
    /// other than the service.
    pub fn caller_tags(&self) -> BTreeMap<String, String> {
        let mut tags = self.labels.clone();
        for i in &self.spec.networking.inbound {
            for (k, v) in &i.tags {
                if k != SERVICE_TAG {
                    tags.insert(k.clone(), v.clone());
                }
            }
        }
        tags
    }
}

/// One policy of a mesh with its parsed spec.
#[derive(Debug, Clone)]
pub struct Policy<S> {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub spec: S,
}

impl<S> Policy<S> {
    pub fn new(name: impl Into<String>, spec: S) -> Self {
        Policy {
            name: name.into(),
            labels: BTreeMap::new(),
            spec,
        }
    }
}

/// A stored policy before parsing.
#[derive(Debug, Clone, PartialEq)]
pub struct RawPolicy {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub spec: Value,
}

/// A policy that did not parse, and so is left out of the context.
#[derive(Debug, thiserror::Error)]
#[error("{kind} {name:?} does not parse")]
pub struct ParseFailure {
    pub kind: ResourceType,
    pub name: String,
    #[source]
    pub error: serde_json::Error,
}

/// One policy type's policies: parsed once into the typed spec, and as stored (what the rule
/// engine reads, so it treats every type alike).
#[derive(Clone)]
struct OfKind {
    typed: Arc<dyn Any + Send + Sync>,
    raw: Arc<Vec<RawPolicy>>,
}

/// A mesh's policies, by type.
#[derive(Clone, Default)]
pub struct Policies {
    by_kind: BTreeMap<ResourceType, OfKind>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.by_kind.iter().map(|(k, p)| (k, p.raw.len())))
            .finish()
    }
}

impl Policies {
    /// The policies of `S`'s type (none if that type was not loaded).
    pub fn of<S: PolicySpec>(&self) -> &[Policy<S>] {
        self.by_kind
            .get(&S::KIND)
            .and_then(|p| p.typed.downcast_ref::<Vec<Policy<S>>>())
            .map_or(&[], Vec::as_slice)
    }

    /// The policies of `kind` as stored, in name order (none if that type was not loaded).
    pub fn raw(&self, kind: ResourceType) -> &[RawPolicy] {
        self.by_kind.get(&kind).map_or(&[], |p| p.raw.as_slice())
    }

    /// The policies that differ between `previous` and this set (added, removed or changed,
    /// as they were and as they are); a type loaded again with the same policies contributes
    /// none.
    pub fn changed_since<'a>(&'a self, previous: &'a Policies) -> Vec<&'a RawPolicy> {
        let mut changed = Vec::new();
        let kinds: std::collections::BTreeSet<_> =
            self.by_kind.keys().chain(previous.by_kind.keys()).collect();
        for kind in kinds {
            let (now, before) = (self.by_kind.get(kind), previous.by_kind.get(kind));
            if let (Some(a), Some(b)) = (now, before)
                && Arc::ptr_eq(&a.raw, &b.raw)
            {
                continue;
            }
            let by_name = |p: Option<&'a OfKind>| -> BTreeMap<&'a str, &'a RawPolicy> {
                p.map(|p| p.raw.iter().map(|r| (r.name.as_str(), r)).collect())
                    .unwrap_or_default()
            };
            let (now, before) = (by_name(now), by_name(before));
            for (name, policy) in &now {
                if before.get(name) != Some(policy) {
                    changed.push(*policy);
                }
            }
            for (name, policy) in &before {
                if now.get(name) != Some(policy) {
                    changed.push(*policy);
                }
            }
        }
        changed
    }

    pub fn set<S: PolicySpec>(&mut self, policies: Vec<Policy<S>>) {
        let raw = policies
            .iter()
            .map(|p| RawPolicy {
                name: p.name.clone(),
                labels: p.labels.clone(),
                spec: serde_json::to_value(&p.spec).unwrap_or_default(),
            })
            .collect();
        self.insert(S::KIND, policies, raw);
    }

    fn insert<S: PolicySpec>(
        &mut self,
        kind: ResourceType,
        typed: Vec<Policy<S>>,
        raw: Vec<RawPolicy>,
    ) {
        let entry = OfKind {
            typed: Arc::new(typed),
            raw: Arc::new(raw),
        };
        self.by_kind.insert(kind, entry);
    }

    pub fn with<S: PolicySpec>(mut self, policies: Vec<Policy<S>>) -> Self {
        self.set(policies);
        self
    }

    /// Parses `raw` as policies of `kind` (a type whose descriptor says it is a policy) and
    /// keeps those that parse; the others are returned, so one bad policy never hides the rest.
    pub fn load(&mut self, kind: ResourceType, raw: Vec<RawPolicy>) -> Vec<ParseFailure> {
        use model::specs::policy::*;
        macro_rules! by_kind {
            ($($spec:ty),* $(,)?) => {
                $(if kind == <$spec as PolicySpec>::KIND {
                    return self.load_typed::<$spec>(raw);
                })*
            };
        }
        by_kind!(
            MeshTrafficPermissionSpec,
            MeshTimeoutSpec,
            MeshRetrySpec,
            MeshCircuitBreakerSpec,
            MeshHealthCheckSpec,
            MeshHttpRouteSpec,
            MeshTcpRouteSpec,
            MeshLoadBalancingStrategySpec,
            MeshAccessLogSpec,
            MeshFaultInjectionSpec,
            MeshRateLimitSpec,
            MeshTlsSpec,
            MeshTraceSpec,
            MeshMetricSpec,
            MeshProxyPatchSpec,
            MeshPassthroughSpec,
        );
        // Not a policy type: nothing of it belongs here.
        Vec::new()
    }

    fn load_typed<S: PolicySpec>(&mut self, raw: Vec<RawPolicy>) -> Vec<ParseFailure> {
        let mut parsed = Vec::with_capacity(raw.len());
        let mut kept = Vec::with_capacity(raw.len());
        let mut failures = Vec::new();
        for r in raw {
            match serde_json::from_value::<S>(r.spec.clone()) {
                Ok(spec) => {
                    parsed.push(Policy {
                        name: r.name.clone(),
                        labels: r.labels.clone(),
                        spec,
                    });
                    kept.push(r);
                }
                Err(error) => failures.push(ParseFailure {
                    kind: S::KIND,
                    name: r.name,
                    error,
                }),
            }
        }
        self.insert(S::KIND, parsed, kept);
        failures
    }
}

/// Everything in a mesh that shapes its sidecars' configuration.
#[derive(Debug, Clone, Default)]
pub struct MeshContext {
    pub mesh: String,
    /// Whether the mesh has an enabled mTLS backend: inbounds then require mesh certificates,
    /// outbounds present the proxy's identity, and MeshTrafficPermissions are enforced.
    pub mtls: bool,
    pub dataplanes: Vec<DataplaneEntry>,
    pub policies: Policies,
    /// The zone these dataplanes run in (empty on a standalone control plane).
    pub local_zone: String,
    /// Other zones' ingresses: where this zone's sidecars reach services that run there.
    pub remote_ingresses: Vec<RemoteIngress>,
    /// The mesh's `routing.zoneEgress`: cross-zone traffic leaves through this zone's egress.
    pub zone_egress: bool,
    /// This zone's egresses (address, port) when the mesh has mTLS: sidecars dial them for
    /// other zones when `zone_egress` is on, and for MeshExternalServices always (as Kuma).
    pub local_egresses: Vec<(String, u32)>,
    /// The Mesh's `routing.defaultForbidMeshExternalServiceAccess`: zone egresses refuse
    /// MeshExternalService traffic.
    pub forbid_external_access: bool,
    /// The mesh's MeshGateways: what builtin gateway Dataplanes serve.
    pub gateways: Vec<GatewayEntry>,
    /// The certificates gateway listeners name (`tls.certificates[].secret`), by Secret name,
    /// as read from the mesh's Secrets.
    pub gateway_certificates: BTreeMap<String, GatewayCertificate>,
    /// The Mesh's enabled legacy Prometheus backend (`spec.metrics`), if any.
    pub legacy_metrics: Option<model::specs::mesh::PrometheusMetricsConf>,
    /// The mesh's MeshServices, MeshExternalServices and MeshMultiZoneServices with their VIP
    /// and hostnames in this zone, by kind and name.
    pub services: Vec<ServiceEntry>,
    /// The mesh Secrets MeshExternalServices name for their TLS (`data`, base64), by name;
    /// `None` for one that does not exist.
    pub external_secrets: BTreeMap<String, Option<String>>,
    /// The Mesh's `meshServices.mode` (absent: Kuma's `Disabled`).
    pub mesh_services: Option<MeshServicesMode>,
    /// The Mesh's `networking.outbound.passthrough`: whether a transparently proxied
    /// application may reach what the mesh does not know (absent: Kuma's default, yes).
    pub passthrough: Option<bool>,
    /// Work every proxy generated from this context can share. Only for a context that is not
    /// changed once built (the zone's mesh snapshots): what is shared is computed from the
    /// context as it was first read. `None` computes everything for each proxy.
    pub shared: Option<Arc<SharedWork>>,
}

/// What one mesh snapshot's proxies would otherwise each compute alike: the destination an
/// outbound's tags resolve to, and a destination's endpoints laid out for a locality
/// awareness that does not depend on the caller. A thousand proxies calling one service
/// then cost one resolution and one layout per snapshot, not a thousand.
#[derive(Default)]
pub struct SharedWork {
    destinations: RwLock<HashMap<BTreeMap<String, String>, Arc<Destination>>>,
    /// Destinations of services' ports, by cluster name.
    service_destinations: RwLock<HashMap<String, Arc<Destination>>>,
    assignments: RwLock<HashMap<(String, String), Arc<Value>>>,
    to_rules: RwLock<HashMap<PoliciesAndService, Option<Arc<Rule>>>>,
    /// Where each Dataplane is in the context's list, by name.
    dataplane_index: OnceLock<HashMap<String, usize>>,
    /// Which service and port each service outbound cluster is, by cluster name.
    service_index: OnceLock<HashMap<String, (usize, usize)>>,
    /// The policies that changed since a previous snapshot, and that snapshot (weakly: its
    /// allocation, so its address, stays reserved while the memo names it).
    changed: RwLock<Option<ChangedSince>>,
}

/// A previous snapshot's shared work and the policies changed since it.
type ChangedSince = (std::sync::Weak<SharedWork>, Arc<Vec<RawPolicy>>);

/// The addresses of the policies that select a proxy, in order, and a destination service.
type PoliciesAndService = (Vec<usize>, String);

impl std::fmt::Debug for SharedWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWork")
            .field("destinations", &locked(&self.destinations).len())
            .field("assignments", &locked(&self.assignments).len())
            .field("to_rules", &locked(&self.to_rules).len())
            .finish()
    }
}

// A poisoned lock only means another proxy's generation panicked; the maps hold whole
// entries. Read-mostly: every proxy after the first finds what it needs.
fn locked<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn locked_mut<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The value of `key` in `map`, computed by `compute` (outside the lock) the first time.
fn memoized<K, Q, V>(map: &RwLock<HashMap<K, V>>, key: &Q, compute: impl FnOnce() -> V) -> V
where
    K: Borrow<Q> + Hash + Eq,
    Q: ToOwned<Owned = K> + Hash + Eq + ?Sized,
    V: Clone,
{
    if let Some(v) = locked(map).get(key) {
        return v.clone();
    }
    let v = compute();
    locked_mut(map).insert(key.to_owned(), v.clone());
    v
}

impl SharedWork {
    /// The policies that differ between the snapshot `previous` shares work for and this
    /// one, computed by `diff` the first time (every proxy of the mesh asks the same).
    pub(crate) fn changed_since(
        &self,
        previous: &Arc<SharedWork>,
        diff: impl FnOnce() -> Vec<RawPolicy>,
    ) -> Arc<Vec<RawPolicy>> {
        if let Some((p, changed)) = locked(&self.changed).as_ref()
            && std::sync::Weak::ptr_eq(p, &Arc::downgrade(previous))
        {
            return changed.clone();
        }
        let changed = Arc::new(diff());
        *locked_mut(&self.changed) = Some((Arc::downgrade(previous), changed.clone()));
        changed
    }

    /// The destination `tags` resolve to, computed by `resolve` the first time.
    pub(crate) fn destination(
        &self,
        tags: &BTreeMap<String, String>,
        resolve: impl FnOnce() -> Destination,
    ) -> Arc<Destination> {
        memoized(&self.destinations, tags, || Arc::new(resolve()))
    }

    /// The destination of a service's port (its cluster `cluster`), computed by `resolve`
    /// the first time.
    pub(crate) fn service_destination(
        &self,
        cluster: &str,
        resolve: impl FnOnce() -> Destination,
    ) -> Arc<Destination> {
        memoized(&self.service_destinations, cluster, || Arc::new(resolve()))
    }

    /// The `to` rule for calls to `service` of proxies the same policies select (`policies`:
    /// their addresses in this context, in order), computed by `merge` the first time.
    pub(crate) fn to_rule(
        &self,
        policies: Vec<usize>,
        service: &str,
        merge: impl FnOnce() -> Option<Rule>,
    ) -> Option<Arc<Rule>> {
        let key = (policies, service.to_string());
        memoized(&self.to_rules, &key, || merge().map(Arc::new))
    }

    /// The load assignment of `cluster` under a locality awareness (`la`, as JSON text),
    /// computed by `layout` the first time.
    pub(crate) fn assignment(
        &self,
        cluster: &str,
        la: String,
        layout: impl FnOnce() -> Value,
    ) -> Arc<Value> {
        let key = (cluster.to_string(), la);
        memoized(&self.assignments, &key, || Arc::new(layout()))
    }
}

impl MeshContext {
    pub fn dataplane(&self, name: &str) -> Option<&DataplaneEntry> {
        match &self.shared {
            // Every proxy of a snapshot looks itself up: one index instead of a scan each.
            Some(shared) => {
                let index = shared.dataplane_index.get_or_init(|| {
                    let names = self.dataplanes.iter().enumerate();
                    names.map(|(i, d)| (d.name.clone(), i)).collect()
                });
                index.get(name).and_then(|i| self.dataplanes.get(*i))
            }
            None => self.dataplanes.iter().find(|d| d.name == name),
        }
    }

    /// The service and port whose outbound cluster is `cluster` (a proxy's destination
    /// found again in a later snapshot).
    pub(crate) fn service_port(&self, cluster: &str) -> Option<(&ServiceEntry, &ServicePort)> {
        let clusters = || {
            self.services.iter().enumerate().flat_map(|(si, s)| {
                let ports = s.ports.iter().enumerate();
                ports.map(move |(pi, p)| (s.cluster_name(&self.mesh, p.port), (si, pi)))
            })
        };
        let at = match &self.shared {
            // Every proxy of a snapshot looks its destinations up: one index for them all.
            Some(shared) => shared
                .service_index
                .get_or_init(|| clusters().collect())
                .get(cluster)
                .copied(),
            None => clusters().find(|(c, _)| c == cluster).map(|(_, at)| at),
        };
        let (si, pi) = at?;
        let service = self.services.get(si)?;
        Some((service, service.ports.get(pi)?))
    }

    /// The policies that differ from `previous`'s (added, removed or changed, as they were
    /// and as they are), once per pair of snapshots when both share work.
    pub(crate) fn policies_changed_since(&self, previous: &MeshContext) -> Arc<Vec<RawPolicy>> {
        let diff = || {
            self.policies
                .changed_since(&previous.policies)
                .into_iter()
                .cloned()
                .collect()
        };
        match (&self.shared, &previous.shared) {
            (Some(now), Some(before)) => now.changed_since(before, diff),
            _ => Arc::new(diff()),
        }
    }

    /// Whether the mesh's settings and the zone proxies are as in `previous` (its Dataplanes
    /// and policies may differ).
    pub(crate) fn same_settings(&self, previous: &MeshContext) -> bool {
        self.mesh == previous.mesh
            && self.mtls == previous.mtls
            && self.local_zone == previous.local_zone
            && self.zone_egress == previous.zone_egress
            && self.local_egresses == previous.local_egresses
            && self.forbid_external_access == previous.forbid_external_access
            && self.remote_ingresses == previous.remote_ingresses
            && self.services == previous.services
            && self.mesh_services == previous.mesh_services
            && self.passthrough == previous.passthrough
            && self.external_secrets == previous.external_secrets
    }

    /// The Mesh's `meshServices.mode`.
    pub fn mesh_services_mode(&self) -> MeshServicesMode {
        self.mesh_services.unwrap_or(MeshServicesMode::Disabled)
    }

    /// Whether traffic to destinations the mesh does not know passes through.
    pub fn allows_passthrough(&self) -> bool {
        self.passthrough != Some(false)
    }
}

/// The hostnames a service's status gives it (`status.addresses[].hostname`).
pub fn status_hostnames(status: Option<&Value>) -> Vec<String> {
    status
        .and_then(|s| s.get("addresses"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.get("hostname")?.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A MeshService, MeshExternalService or MeshMultiZoneService as proxies see it: what it is
/// called in this zone, the VIP it answers on, and what its outbounds send to.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceEntry {
    pub kind: ResourceType,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
    pub vip: Option<String>,
    pub hostnames: Vec<String>,
    /// What the service selects (a MeshService's Dataplanes, a MeshMultiZoneService's
    /// MeshServices) or where it is (a MeshExternalService's endpoints); `None` when the
    /// spec does not parse.
    pub spec: Option<Arc<ServiceSpec>>,
    /// The `kuma.io/service` identities its instances present (a MeshService's status).
    pub identities: Vec<String>,
}

/// A service's parsed spec, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceSpec {
    Mesh(MeshServiceSpec),
    MultiZone(MeshMultiZoneServiceSpec),
    External(Box<MeshExternalServiceSpec>),
}

impl ServiceEntry {
    /// What a stored service gives proxies; its status's proxy counts and conditions, which
    /// change often and shape no proxy's configuration, are left behind.
    pub fn from_resource(r: &model::Resource) -> ServiceEntry {
        let status = r.status.as_ref();
        let vip = status.and_then(|s| match r.kind {
            ResourceType::MeshExternalService => s.pointer("/vip/ip"),
            _ => s.pointer("/vips/0/ip"),
        });
        let hostnames = status_hostnames(status);
        let spec = match r.kind {
            ResourceType::MeshService => serde_json::from_value(r.spec.clone())
                .ok()
                .map(ServiceSpec::Mesh),
            ResourceType::MeshMultiZoneService => serde_json::from_value(r.spec.clone())
                .ok()
                .map(ServiceSpec::MultiZone),
            ResourceType::MeshExternalService => serde_json::from_value(r.spec.clone())
                .ok()
                .map(|s| ServiceSpec::External(Box::new(s))),
            _ => None,
        };
        let ports = match &spec {
            Some(ServiceSpec::Mesh(s)) => s.ports.clone(),
            Some(ServiceSpec::MultiZone(s)) => s.ports.clone(),
            // A MeshExternalService has one port, under `match`.
            Some(ServiceSpec::External(s)) => s
                .match_
                .iter()
                .map(|m| ServicePort {
                    port: m.port,
                    app_protocol: serde_json::to_value(m.protocol)
                        .ok()
                        .and_then(|p| p.as_str().map(String::from)),
                    ..ServicePort::default()
                })
                .collect(),
            None => Vec::new(),
        };
        let identities = status
            .and_then(|s| s.get("identities"))
            .and_then(Value::as_array)
            .map(|ids| {
                ids.iter()
                    .filter(|i| i.get("type").and_then(Value::as_str) == Some("ServiceTag"))
                    .filter_map(|i| i.get("value")?.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        ServiceEntry {
            kind: r.kind,
            name: r.meta.name.clone(),
            labels: r.meta.labels.clone(),
            ports,
            vip: vip.and_then(Value::as_str).map(String::from),
            hostnames,
            spec: spec.map(Arc::new),
            identities,
        }
    }

    /// The name it was given where it was created (a synced copy's `kuma.io/display-name`).
    pub fn display_name(&self) -> &str {
        self.labels
            .get(model::labels::DISPLAY_NAME)
            .map_or(&self.name, String::as_str)
    }

    /// The zone it runs in (`kuma.io/zone`); empty for one created on global or standalone.
    pub fn zone(&self) -> &str {
        self.labels
            .get(model::labels::ZONE)
            .map_or("", String::as_str)
    }

    /// Whether it was created in this zone (not synced from global or another zone).
    pub fn is_local(&self) -> bool {
        self.labels
            .get(model::labels::ORIGIN)
            .is_none_or(|o| o == "zone")
    }

    /// Kuma's name for its outbound cluster on `port` (`destinationname` without unified
    /// naming): `<mesh>_<name>_<namespace>_<zone>_<msvc|mzsvc|extsvc>_<port>`.
    pub fn cluster_name(&self, mesh: &str, port: u32) -> String {
        let short = match self.kind {
            ResourceType::MeshMultiZoneService => "mzsvc",
            ResourceType::MeshExternalService => "extsvc",
            _ => "msvc",
        };
        let namespace = self
            .labels
            .get(model::labels::KUBE_NAMESPACE)
            .map_or("", String::as_str);
        format!(
            "{mesh}_{}_{namespace}_{}_{short}_{port}",
            self.display_name(),
            self.zone()
        )
    }
}

/// A MeshGateway of the mesh.
#[derive(Debug, Clone)]
pub struct GatewayEntry {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub spec: model::specs::gateway::MeshGatewaySpec,
}

impl GatewayEntry {
    /// Whether a `targetRef` naming `name` means this gateway: its name, or the name it was
    /// given where it was created (a copy synced from global carries a hashed name and the
    /// original in `kuma.io/display-name`, which routes written there refer to).
    pub fn is_named(&self, name: &str) -> bool {
        self.name == name
            || self
                .labels
                .get(model::labels::DISPLAY_NAME)
                .is_some_and(|d| d == name)
    }
}

/// A certificate a gateway listener terminates TLS with: PEM chain (leaf first) and key, or
/// why the Secret cannot serve (missing, not PEM, no key, key and certificate disagree).
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayCertificate {
    Valid { chain_pem: String, key_pem: String },
    Invalid { reason: String },
}

impl GatewayCertificate {
    /// A certificate as checked when its Secret was read: the chain and key, or why not.
    pub fn checked<E: std::error::Error>(pair: Result<(String, String), E>) -> Self {
        match pair {
            Ok((chain_pem, key_pem)) => GatewayCertificate::Valid { chain_pem, key_pem },
            Err(e) => GatewayCertificate::Invalid {
                reason: model::error_chain(&e),
            },
        }
    }

    /// A Secret a gateway names that is not there.
    pub fn missing() -> Self {
        GatewayCertificate::Invalid {
            reason: "does not exist".into(),
        }
    }
}

/// The mesh Secrets the gateways' listeners name as certificates.
pub fn certificate_secrets<'a>(
    gateways: impl IntoIterator<Item = &'a GatewayEntry>,
) -> std::collections::BTreeSet<String> {
    gateways
        .into_iter()
        .filter_map(|g| g.spec.conf.as_ref())
        .flat_map(|c| c.listeners.iter())
        .filter_map(|l| l.tls.as_ref())
        .flat_map(|t| t.certificates.iter())
        .filter_map(|c| c.secret.clone())
        .collect()
}

/// Where a zone proxy (ingress or egress) listens.
#[derive(Debug, Clone)]
pub struct ZoneProxyListener {
    pub address: String,
    pub port: u32,
}

/// A ZoneIngress of another zone as sidecars dial it: its advertised address (an IP; the
/// control plane resolves host names) and port, and what it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteIngress {
    pub zone: String,
    pub address: String,
    pub port: u32,
    pub services: Vec<model::specs::zone::AvailableService>,
}

/// An inbound's or destination's `kuma.io/protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Http,
    Http2,
    Grpc,
}

impl Protocol {
    pub fn from_tag(tag: Option<&String>) -> Protocol {
        match tag.map(String::as_str) {
            Some("http") => Protocol::Http,
            Some("http2") => Protocol::Http2,
            Some("grpc") => Protocol::Grpc,
            _ => Protocol::Tcp,
        }
    }

    pub fn of_tags(tags: &BTreeMap<String, String>) -> Protocol {
        Protocol::from_tag(tags.get(PROTOCOL_TAG))
    }

    pub fn is_http(self) -> bool {
        self != Protocol::Tcp
    }

    pub fn needs_http2_upstream(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }
}
