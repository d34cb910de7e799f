//! One mesh's services as they should be, computed from what the controller holds: the
//! MeshServices generated from Dataplanes (Kuma's `meshservice/generate`), every service's VIP
//! (Kuma's IPAM), hostnames (Kuma's HostnameGenerator), and a local MeshService's proxies,
//! TLS readiness, identities and availability (Kuma's MeshService status updater). Kuma runs
//! these as four timers that each write; here one pass computes them together, so a service
//! is written once per change, and only when something differs from what is stored.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use model::labels::{DISPLAY_NAME, ENV, MESH, ORIGIN, PROTOCOL_TAG, SERVICE_TAG, WORKLOAD, ZONE};
use model::specs::dataplane::{DataplaneSpec, InboundState};
use model::specs::mesh::MeshServicesMode;
use model::specs::policy::IntOrString;
use model::specs::service::{MeshServiceSpec, ServicePort};
use model::{Resource, ResourceKey, ResourceType, Timestamp};
use serde_json::{Value, json};

use super::hostname::{self, Generator, TemplateInput};
use super::ipam::{IpamError, Pool};

pub const MANAGED_BY: &str = "kuma.io/managed-by";
pub const GENERATOR_VALUE: &str = "meshservice-generator";
pub const GRACE_STARTED: &str = "kuma.io/deletion-grace-period-started-at";

/// The types that carry VIPs and hostnames.
pub const SERVICE_KINDS: [ResourceType; 3] = [
    ResourceType::MeshService,
    ResourceType::MeshExternalService,
    ResourceType::MeshMultiZoneService,
];

/// Protocols a generated port may carry (Kuma's `ParseProtocol`); anything else is `tcp`.
const KNOWN_PROTOCOLS: &[&str] = &["tcp", "tls", "http", "http2", "grpc", "kafka"];

/// An inbound of a Dataplane, as generation and the status read it.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundFacts {
    pub name: String,
    pub port: u32,
    pub tags: BTreeMap<String, String>,
    pub protocol: String,
    pub ready: bool,
}

/// A Dataplane, parsed once when it is read.
#[derive(Debug, Clone, PartialEq)]
pub struct Proxy {
    pub name: String,
    pub created: Timestamp,
    pub labels: BTreeMap<String, String>,
    pub inbounds: Vec<InboundFacts>,
}

impl Proxy {
    /// `None` for a Dataplane whose spec does not parse (the API refuses such).
    pub fn from_resource(r: &Resource) -> Option<Proxy> {
        let spec: DataplaneSpec = serde_json::from_value(r.spec.clone()).ok()?;
        let inbounds = spec
            .networking
            .inbound
            .into_iter()
            .map(|i| {
                let ready = !matches!(
                    i.state,
                    Some(InboundState::NotReady | InboundState::Ignored)
                ) && i.health.as_ref().is_none_or(|h| h.ready);
                let protocol = if i.protocol.is_empty() {
                    i.tags.get(PROTOCOL_TAG).cloned().unwrap_or_default()
                } else {
                    i.protocol.clone()
                };
                InboundFacts {
                    name: i.name,
                    port: i.port,
                    tags: i.tags,
                    protocol,
                    ready,
                }
            })
            .collect();
        Some(Proxy {
            name: r.meta.name.clone(),
            created: r.meta.creation_time,
            labels: r.meta.labels.clone(),
            inbounds,
        })
    }
}

/// What a DataplaneInsight tells the status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsightFacts {
    pub connected: bool,
    pub issued_certificate: bool,
}

impl InsightFacts {
    /// Connected as Kuma counts it: the newest stream has no disconnect time.
    pub fn from_resource(r: &Resource) -> InsightFacts {
        let spec: model::specs::insight::InsightSpec =
            serde_json::from_value(r.spec.clone()).unwrap_or_default();
        InsightFacts {
            connected: spec
                .subscriptions
                .last()
                .is_some_and(|s| s.connect_time.is_some() && s.disconnect_time.is_none()),
            issued_certificate: spec
                .mtls
                .as_ref()
                .and_then(|m| m.get("issuedBackend"))
                .and_then(Value::as_str)
                .is_some_and(|b| !b.is_empty()),
        }
    }
}

/// A term a MeshService selector is looked up by, so a Dataplane's change finds the services
/// it may count for without scanning them all.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Term {
    Tag(String, String),
    Label(String, String),
    Ref(String),
}

/// The names held in `held` that `listed` does not name.
fn unlisted<'a, V>(
    held: &BTreeMap<String, V>,
    listed: impl Iterator<Item = &'a str>,
) -> Vec<String> {
    let listed: BTreeSet<&str> = listed.collect();
    held.keys()
        .filter(|n| !listed.contains(n.as_str()))
        .cloned()
        .collect()
}

/// One mesh as the controller holds it, with the indexes that let a change recompute only
/// the services it can affect.
#[derive(Debug, Default)]
pub struct MeshState {
    name: String,
    mode: Option<MeshServicesMode>,
    mtls: bool,
    proxies: BTreeMap<String, Arc<Proxy>>,
    insights: BTreeMap<String, InsightFacts>,
    /// MeshServices, MeshExternalServices and MeshMultiZoneServices, as stored.
    services: BTreeMap<ResourceKey, Resource>,
    /// Per generated name, what each Dataplane (in Kuma's order: oldest first) asks for.
    wants: BTreeMap<String, BTreeMap<(Timestamp, String), Value>>,
    /// Why a Dataplane generates nothing for some of its inbounds.
    proxy_problems: BTreeMap<String, Vec<String>>,
    proxies_by_tag: HashMap<(String, String), BTreeSet<String>>,
    proxies_by_label: HashMap<(String, String), BTreeSet<String>>,
    selecting: HashMap<Term, BTreeSet<ResourceKey>>,
    /// Who holds each hostname, by the stored statuses.
    holders: HashMap<(ResourceType, String), ResourceKey>,
    /// Services a hostname collision left without one: looked at on every pass.
    colliding: BTreeSet<ResourceKey>,
    /// Generated services in their deletion grace period, and when it started.
    in_grace: BTreeMap<ResourceKey, Timestamp>,
    dirty_all: bool,
    dirty: BTreeSet<ResourceKey>,
    /// Dataplanes or insights changed while nothing here needed them (see
    /// [`MeshState::needs_proxies`]): the held ones are stale and are listed again once needed.
    proxies_stale: bool,
}

impl MeshState {
    pub fn new(name: &str) -> MeshState {
        MeshState {
            name: name.to_string(),
            dirty_all: true,
            ..MeshState::default()
        }
    }

    fn mode(&self) -> MeshServicesMode {
        self.mode.unwrap_or(MeshServicesMode::Disabled)
    }

    /// Whether the mesh's Dataplanes and insights shape anything: it generates services, or
    /// has MeshServices whose status counts proxies. A mesh that needs none is spared reading
    /// every Dataplane change (the snapshot cache reads it already).
    pub fn needs_proxies(&self) -> bool {
        self.mode() != MeshServicesMode::Disabled
            || self
                .services
                .keys()
                .any(|k| k.kind == ResourceType::MeshService)
    }

    /// A Dataplane or insight changed and was not read (the mesh did not need it).
    pub fn mark_proxies_stale(&mut self) {
        self.proxies_stale = true;
    }

    /// Whether the held Dataplanes must be listed again before this mesh is reconciled.
    pub fn proxies_stale(&self) -> bool {
        self.proxies_stale && self.needs_proxies()
    }

    /// Replaces the held Dataplanes and insights with a fresh listing.
    pub fn replace_proxies(&mut self, proxies: Vec<Proxy>, insights: Vec<(String, InsightFacts)>) {
        for name in unlisted(&self.proxies, proxies.iter().map(|p| p.name.as_str())) {
            self.remove_proxy(&name);
        }
        for p in proxies {
            self.put_proxy(p);
        }
        for name in unlisted(&self.insights, insights.iter().map(|(n, _)| n.as_str())) {
            self.remove_insight(&name);
        }
        for (name, facts) in insights {
            self.put_insight(&name, facts);
        }
        self.proxies_stale = false;
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty_all || !self.dirty.is_empty()
    }

    /// Everything is looked at on the next pass.
    pub fn mark_all(&mut self) {
        self.dirty_all = true;
    }

    pub fn set_mesh(&mut self, mode: Option<MeshServicesMode>, mtls: bool) {
        if self.mode == mode && self.mtls == mtls {
            return;
        }
        let mode_changed = self.mode != mode;
        self.mode = mode;
        self.mtls = mtls;
        if mode_changed {
            self.wants.clear();
            self.proxy_problems.clear();
            let proxies: Vec<Arc<Proxy>> = self.proxies.values().cloned().collect();
            for p in proxies {
                self.add_wants(&p);
            }
        }
        self.dirty_all = true;
    }

    fn service_key(&self, name: &str) -> ResourceKey {
        ResourceKey::new(ResourceType::MeshService, &self.name, name)
    }

    fn add_wants(&mut self, p: &Proxy) {
        let mut problems = Vec::new();
        for (name, spec) in wanted_by(p, self.mode(), &mut problems) {
            self.wants
                .entry(name)
                .or_default()
                .insert((p.created, p.name.clone()), spec);
        }
        if !problems.is_empty() {
            self.proxy_problems.insert(p.name.clone(), problems);
        }
    }

    fn remove_wants(&mut self, p: &Proxy) {
        let mut ignored = Vec::new();
        for name in wanted_by(p, self.mode(), &mut ignored).into_keys() {
            if let Some(asks) = self.wants.get_mut(&name) {
                asks.remove(&(p.created, p.name.clone()));
                if asks.is_empty() {
                    self.wants.remove(&name);
                }
            }
        }
        self.proxy_problems.remove(&p.name);
    }

    /// Marks what a Dataplane's presence touches: the services it generates and those whose
    /// selectors may pick it.
    fn touch_proxy(&mut self, p: &Proxy) {
        let mut ignored = Vec::new();
        for name in wanted_by(p, self.mode(), &mut ignored).into_keys() {
            self.dirty.insert(self.service_key(&name));
        }
        let mut terms = vec![Term::Ref(p.name.clone())];
        for i in &p.inbounds {
            terms.extend(i.tags.iter().map(|(k, v)| Term::Tag(k.clone(), v.clone())));
        }
        terms.extend(
            p.labels
                .iter()
                .map(|(k, v)| Term::Label(k.clone(), v.clone())),
        );
        for t in terms {
            if let Some(keys) = self.selecting.get(&t) {
                self.dirty.extend(keys.iter().cloned());
            }
        }
    }

    fn index_proxy(&mut self, p: &Proxy, add: bool) {
        if p.inbounds.is_empty() {
            return;
        }
        let mut entries: Vec<(bool, (String, String))> = Vec::new();
        for i in &p.inbounds {
            entries.extend(i.tags.iter().map(|(k, v)| (true, (k.clone(), v.clone()))));
        }
        entries.extend(
            p.labels
                .iter()
                .map(|(k, v)| (false, (k.clone(), v.clone()))),
        );
        for (is_tag, term) in entries {
            let index = if is_tag {
                &mut self.proxies_by_tag
            } else {
                &mut self.proxies_by_label
            };
            if add {
                index.entry(term).or_default().insert(p.name.clone());
            } else if let Some(names) = index.get_mut(&term) {
                names.remove(&p.name);
                if names.is_empty() {
                    index.remove(&term);
                }
            }
        }
    }

    pub fn put_proxy(&mut self, p: Proxy) {
        if self.proxies.get(&p.name).is_some_and(|old| **old == p) {
            return;
        }
        self.remove_proxy(&p.name.clone());
        let p = Arc::new(p);
        self.index_proxy(&p, true);
        self.add_wants(&p);
        self.touch_proxy(&p);
        self.proxies.insert(p.name.clone(), p);
    }

    pub fn remove_proxy(&mut self, name: &str) {
        if let Some(old) = self.proxies.remove(name) {
            self.index_proxy(&old, false);
            self.remove_wants(&old);
            self.touch_proxy(&old);
        }
    }

    pub fn put_insight(&mut self, name: &str, facts: InsightFacts) {
        if self.insights.get(name) == Some(&facts) {
            return;
        }
        self.insights.insert(name.to_string(), facts);
        if let Some(p) = self.proxies.get(name).cloned() {
            self.touch_proxy(&p);
        }
    }

    pub fn remove_insight(&mut self, name: &str) {
        self.put_insight(name, InsightFacts::default());
        self.insights.remove(name);
    }

    fn terms_of(r: &Resource) -> Vec<Term> {
        if r.kind != ResourceType::MeshService {
            return Vec::new();
        }
        let Ok(spec) = serde_json::from_value::<MeshServiceSpec>(r.spec.clone()) else {
            return Vec::new();
        };
        let Some(sel) = spec.selector else {
            return Vec::new();
        };
        let mut terms = Vec::new();
        if let Some(r) = sel.dataplane_ref {
            terms.push(Term::Ref(r.name));
        }
        for (k, v) in sel.dataplane_tags.unwrap_or_default() {
            terms.push(Term::Tag(k, v));
        }
        for (k, v) in sel
            .dataplane_labels
            .map(|l| l.match_labels)
            .unwrap_or_default()
        {
            terms.push(Term::Label(k, v));
        }
        terms
    }

    fn collides(r: &Resource) -> bool {
        r.status
            .as_ref()
            .and_then(|s| s.get("hostnameGenerators"))
            .and_then(Value::as_array)
            .is_some_and(|gens| {
                gens.iter().any(|g| {
                    g.get("conditions")
                        .and_then(Value::as_array)
                        .is_some_and(|c| c.iter().any(|c| c["reason"] == "Collision"))
                })
            })
    }

    fn index_service(&mut self, r: &Resource, add: bool) {
        let key = r.key();
        for t in Self::terms_of(r) {
            if add {
                self.selecting.entry(t).or_default().insert(key.clone());
            } else if let Some(keys) = self.selecting.get_mut(&t) {
                keys.remove(&key);
                if keys.is_empty() {
                    self.selecting.remove(&t);
                }
            }
        }
        for h in xds::context::status_hostnames(r.status.as_ref()) {
            let slot = (r.kind, h);
            if add {
                self.holders.insert(slot, key.clone());
            } else if self.holders.get(&slot) == Some(&key) {
                self.holders.remove(&slot);
            }
        }
        let grace = is_generated(r)
            .then(|| r.label(GRACE_STARTED).and_then(Timestamp::parse))
            .flatten();
        if add {
            if Self::collides(r) {
                self.colliding.insert(key.clone());
            }
            if let Some(t) = grace {
                self.in_grace.insert(key, t);
            }
        } else {
            self.colliding.remove(&key);
            self.in_grace.remove(&key);
        }
    }

    /// Holds a stored service; `echo` is the controller's own write, which the pass that made
    /// it already accounted for.
    pub fn put_service(&mut self, r: Resource, echo: bool) {
        let key = r.key();
        if let Some(old) = self.services.remove(&key) {
            self.index_service(&old, false);
        }
        self.index_service(&r, true);
        self.services.insert(key.clone(), r);
        if !echo {
            self.dirty.insert(key);
        }
    }

    pub fn remove_service(&mut self, key: &ResourceKey) {
        if let Some(old) = self.services.remove(key) {
            self.index_service(&old, false);
            // Generated again if Dataplanes still ask for it; its hostnames are free again.
            self.dirty.insert(key.clone());
        }
    }

    pub fn service_keys(&self) -> impl Iterator<Item = &ResourceKey> {
        self.services.keys()
    }

    /// When the earliest deletion grace period ends.
    pub fn next_deadline(&self, grace: Duration) -> Option<Timestamp> {
        self.in_grace
            .values()
            .min()
            .map(|t| Timestamp(t.0 + grace.as_nanos() as i128))
    }

    /// Marks the services whose grace period has ended by `now`.
    pub fn mark_expired(&mut self, now: Timestamp, grace: Duration) {
        let ended: Vec<ResourceKey> = self
            .in_grace
            .iter()
            .filter(|(_, t)| Timestamp(t.0 + grace.as_nanos() as i128) < now)
            .map(|(k, _)| k.clone())
            .collect();
        self.dirty.extend(ended);
    }

    /// Kuma's `MatchDataplanesWithMeshServices`: by name, by tags (all on one inbound), or by
    /// labels; Dataplanes without inbounds never match.
    fn select(&self, spec: &MeshServiceSpec) -> Vec<&Proxy> {
        let Some(selector) = &spec.selector else {
            return Vec::new();
        };
        let get = |name: &String| self.proxies.get(name).map(Arc::as_ref);
        if let Some(r) = &selector.dataplane_ref {
            return get(&r.name)
                .filter(|p| !p.inbounds.is_empty())
                .into_iter()
                .collect();
        }
        let narrowest = |index: &'_ HashMap<(String, String), BTreeSet<String>>,
                         wanted: &BTreeMap<String, String>|
         -> Option<Vec<String>> {
            let mut best: Option<&BTreeSet<String>> = None;
            for (k, v) in wanted {
                let found = index.get(&(k.clone(), v.clone()))?;
                if best.is_none_or(|b| found.len() < b.len()) {
                    best = Some(found);
                }
            }
            best.map(|b| b.iter().cloned().collect())
        };
        if let Some(tags) = &selector.dataplane_tags {
            let Some(candidates) = narrowest(&self.proxies_by_tag, tags) else {
                return Vec::new();
            };
            return candidates
                .iter()
                .filter_map(get)
                .filter(|p| {
                    p.inbounds
                        .iter()
                        .any(|i| tags.iter().all(|(k, v)| i.tags.get(k) == Some(v)))
                })
                .collect();
        }
        if let Some(labels) = &selector.dataplane_labels {
            let Some(candidates) = narrowest(&self.proxies_by_label, &labels.match_labels) else {
                return Vec::new();
            };
            return candidates.iter().filter_map(get).collect();
        }
        Vec::new()
    }
}

pub struct Settings {
    pub zone: String,
    /// Kuma's `meshService.generationInterval` set to 0 turns generation off.
    pub generate: bool,
    pub deletion_grace_period: Duration,
}

/// The VIP pools, and which VIPs each service holds, so a write that failed does not leak
/// the VIP it was to store: the next attempt gets the same one.
pub struct Vips {
    pools: [Pool; 3],
    held: HashMap<ResourceKey, Vec<Ipv4Addr>>,
}

impl Vips {
    /// Pools for MeshService, MeshExternalService and MeshMultiZoneService, in that order.
    pub fn new(cidrs: [&str; 3]) -> Result<Vips, IpamError> {
        Ok(Vips {
            pools: [
                Pool::new(cidrs[0])?,
                Pool::new(cidrs[1])?,
                Pool::new(cidrs[2])?,
            ],
            held: HashMap::new(),
        })
    }

    fn pool(&mut self, kind: ResourceType) -> &mut Pool {
        let i = SERVICE_KINDS.iter().position(|k| *k == kind).unwrap_or(0);
        &mut self.pools[i]
    }

    /// Takes note of the VIPs a stored service holds (at start, or when another writer set
    /// them), releasing any it held before and no longer does.
    pub fn observe(&mut self, r: &Resource) {
        let now: Vec<Ipv4Addr> = stored_vips(r);
        let key = r.key();
        let before = self.held.remove(&key).unwrap_or_default();
        let pool = self.pool(r.kind);
        for ip in before.iter().filter(|ip| !now.contains(ip)) {
            pool.release(*ip);
        }
        for ip in &now {
            pool.reserve(*ip);
        }
        if !now.is_empty() {
            self.held.insert(key, now);
        }
    }

    pub fn forget(&mut self, key: &ResourceKey) {
        if let Some(ips) = self.held.remove(key) {
            let pool = self.pool(key.kind);
            for ip in ips {
                pool.release(ip);
            }
        }
    }

    fn vip_for(&mut self, key: &ResourceKey) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = self.held.get(key).and_then(|ips| ips.first()) {
            return Ok(*ip);
        }
        let ip = self.pool(key.kind).allocate()?;
        self.held.insert(key.clone(), vec![ip]);
        Ok(ip)
    }

    pub fn in_use(&self) -> [usize; 3] {
        [
            self.pools[0].in_use(),
            self.pools[1].in_use(),
            self.pools[2].in_use(),
        ]
    }
}

fn stored_vips(r: &Resource) -> Vec<Ipv4Addr> {
    let Some(status) = &r.status else {
        return Vec::new();
    };
    let ip = |v: &Value| v.get("ip").and_then(Value::as_str)?.parse().ok();
    match r.kind {
        ResourceType::MeshExternalService => status.get("vip").and_then(ip).into_iter().collect(),
        _ => status
            .get("vips")
            .and_then(Value::as_array)
            .map(|vips| vips.iter().filter_map(ip).collect())
            .unwrap_or_default(),
    }
}

#[derive(Debug, PartialEq)]
pub enum Write {
    Create(Resource),
    Update(Resource),
    Delete(ResourceKey),
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub writes: Vec<Write>,
    /// What could not be done (a VIP pool exhausted, an invalid service name), for the log.
    pub problems: Vec<String>,
}

/// Computes the writes that bring `mesh`'s services to what they should be: all of them after
/// [`MeshState::mark_all`], else only those the changes since the last pass can affect.
pub fn reconcile(
    mesh: &mut MeshState,
    generators: &[Generator],
    vips: &mut Vips,
    settings: &Settings,
    now: Timestamp,
) -> Outcome {
    let mut out = Outcome::default();
    let full = std::mem::take(&mut mesh.dirty_all);
    let dirty = std::mem::take(&mut mesh.dirty);
    let mut scope: BTreeSet<ResourceKey> = if full {
        let mut all: BTreeSet<ResourceKey> = mesh.services.keys().cloned().collect();
        all.extend(mesh.wants.keys().map(|n| mesh.service_key(n)));
        all
    } else {
        dirty
    };
    // Who lost a hostname may win it now that something changed.
    scope.extend(mesh.colliding.iter().cloned());
    out.problems
        .extend(mesh.proxy_problems.values().flatten().cloned());

    let mut working: BTreeMap<ResourceKey, Resource> = scope
        .iter()
        .filter_map(|k| mesh.services.get(k).map(|r| (k.clone(), r.clone())))
        .collect();
    generate(mesh, &scope, settings, now, &mut working, &mut out);
    add_hostname_contenders(mesh, generators, &settings.zone, &mut working);
    // A MeshService that comes, goes or changes its labels changes which ones each
    // MeshMultiZoneService matches.
    if scope
        .iter()
        .chain(working.keys())
        .any(|k| k.kind == ResourceType::MeshService)
    {
        for (k, r) in &mesh.services {
            if k.kind == ResourceType::MeshMultiZoneService && !working.contains_key(k) {
                working.insert(k.clone(), r.clone());
            }
        }
    }
    scope.extend(working.keys().cloned());
    multi_zone_statuses(mesh, &scope, &mut working);

    for kind in SERVICE_KINDS {
        let mut of_kind: Vec<&mut Resource> =
            working.values_mut().filter(|r| r.kind == kind).collect();
        // Kuma's order: the oldest service keeps a hostname two would get.
        of_kind.sort_by(|a, b| {
            a.meta
                .creation_time
                .cmp(&b.meta.creation_time)
                .then_with(|| a.meta.name.cmp(&b.meta.name))
        });
        assign_hostnames(&mut of_kind, generators, &settings.zone);
        for r in of_kind {
            match vips.vip_for(&r.key()) {
                Ok(ip) => set_vip(r, ip),
                Err(e) => out.problems.push(format!(
                    "{kind} {:?} in mesh {:?} has no VIP: {e}",
                    r.meta.name, mesh.name
                )),
            }
        }
    }
    for r in working.values_mut() {
        if r.kind == ResourceType::MeshService && is_local(r) {
            local_status(r, mesh);
        }
    }

    for key in scope {
        match (mesh.services.get(&key), working.remove(&key)) {
            (Some(_), None) => out.writes.push(Write::Delete(key)),
            (None, Some(r)) => out.writes.push(Write::Create(r)),
            (Some(stored), Some(r))
                if stored.spec != r.spec
                    || stored.meta.labels != r.meta.labels
                    || stored.status != r.status =>
            {
                out.writes.push(Write::Update(r))
            }
            _ => {}
        }
    }
    out
}

/// Brings into `working` every stored service holding a hostname a service in `working`
/// would get, so the collision between them is settled with both in view.
fn add_hostname_contenders(
    mesh: &MeshState,
    generators: &[Generator],
    zone: &str,
    working: &mut BTreeMap<ResourceKey, Resource>,
) {
    let mut frontier: Vec<ResourceKey> = working.keys().cloned().collect();
    while let Some(key) = frontier.pop() {
        let Some(r) = working.get(&key) else {
            continue;
        };
        let mut found = Vec::new();
        for g in generators {
            let Some(selector) = g.selector(r.kind) else {
                continue;
            };
            if !hostname::selects(selector, &r.meta.labels) {
                continue;
            }
            let input = TemplateInput {
                resource: r,
                local_zone: zone,
            };
            if let Ok(h) = hostname::evaluate(&g.spec.template, &input)
                && let Some(holder) = mesh.holders.get(&(r.kind, h))
                && !working.contains_key(holder)
                && let Some(stored) = mesh.services.get(holder)
            {
                found.push(stored.clone());
            }
        }
        for stored in found {
            frontier.push(stored.key());
            working.insert(stored.key(), stored);
        }
    }
}

fn is_local(r: &Resource) -> bool {
    r.label(ORIGIN).is_none_or(|o| o == "zone")
}

fn is_generated(r: &Resource) -> bool {
    r.kind == ResourceType::MeshService
        && is_local(r)
        && r.label(MANAGED_BY) == Some(GENERATOR_VALUE)
}

/// A DNS-1035 label (what a generated MeshService's name must be, as Kuma checks it).
fn dns_label(s: &str) -> bool {
    s.len() <= 63
        && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn generated_port(i: &InboundFacts) -> Value {
    let name = if i.name.is_empty() {
        i.port.to_string()
    } else {
        i.name.clone()
    };
    let protocol = if KNOWN_PROTOCOLS.contains(&i.protocol.as_str()) {
        i.protocol.as_str()
    } else {
        "tcp"
    };
    json!({"name": name, "port": i.port, "targetPort": i.port, "appProtocol": protocol})
}

/// The MeshServices one Dataplane asks for, by name: one per `kuma.io/service` of its
/// inbounds; in Exclusive mode, a Dataplane labelled `kuma.io/workload` asks for one per
/// workload with all its inbounds.
fn wanted_by(
    p: &Proxy,
    mode: MeshServicesMode,
    problems: &mut Vec<String>,
) -> BTreeMap<String, Value> {
    let mut wanted = BTreeMap::new();
    if mode == MeshServicesMode::Exclusive
        && let Some(workload) = p.labels.get(WORKLOAD).filter(|w| !w.is_empty())
    {
        if !dns_label(workload) {
            problems.push(format!(
                "Dataplane {:?}: no MeshService for kuma.io/workload {workload:?}: not a DNS-1035 label",
                p.name
            ));
            return wanted;
        }
        let ports: Vec<Value> = p.inbounds.iter().map(generated_port).collect();
        if !ports.is_empty() {
            wanted.insert(
                workload.clone(),
                json!({"selector": {"dataplaneLabels": {"matchLabels": {WORKLOAD: workload}}},
                       "ports": ports}),
            );
        }
        return wanted;
    }
    let mut ports: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for i in &p.inbounds {
        let Some(service) = i.tags.get(SERVICE_TAG) else {
            continue;
        };
        if !dns_label(service) {
            problems.push(format!(
                "Dataplane {:?}: no MeshService for kuma.io/service {service:?}: not a DNS-1035 label",
                p.name
            ));
            continue;
        }
        ports.entry(service).or_default().push(generated_port(i));
    }
    for (service, ports) in ports {
        wanted.insert(
            service.to_string(),
            json!({"selector": {"dataplaneTags": {SERVICE_TAG: service}}, "ports": ports}),
        );
    }
    wanted
}

/// Generation for the MeshService names in `scope`: creates, updates, starts and ends
/// deletion grace periods of the generated MeshServices in `working`.
fn generate(
    mesh: &MeshState,
    scope: &BTreeSet<ResourceKey>,
    settings: &Settings,
    now: Timestamp,
    working: &mut BTreeMap<ResourceKey, Resource>,
    out: &mut Outcome,
) {
    if !settings.generate {
        return;
    }
    let mode = mesh.mode();
    let mesh_name = mesh.name.as_str();
    let desired_labels = |name: &str| {
        BTreeMap::from([
            (MESH.to_string(), mesh_name.to_string()),
            (DISPLAY_NAME.to_string(), name.to_string()),
            (MANAGED_BY.to_string(), GENERATOR_VALUE.to_string()),
            (ENV.to_string(), "universal".to_string()),
            (ZONE.to_string(), settings.zone.clone()),
            (ORIGIN.to_string(), "zone".to_string()),
        ])
    };
    // Kuma's consistency rule: the stored ports win if any Dataplane agrees with them, else
    // the first Dataplane's; Dataplanes that disagree are reported.
    let choose = |name: &str,
                  stored: Option<&Value>,
                  asks: &BTreeMap<(Timestamp, String), Value>,
                  out: &mut Outcome| {
        let ports = |spec: &Value| spec.get("ports").cloned();
        let first = asks.values().next().cloned().unwrap_or_default();
        let chosen = stored
            .filter(|s| asks.values().any(|a| ports(a) == ports(s)))
            .cloned()
            .unwrap_or(first);
        let conflicting: Vec<&str> = asks
            .iter()
            .filter(|(_, a)| ports(a) != ports(&chosen))
            .map(|((_, dp), _)| dp.as_str())
            .collect();
        if !conflicting.is_empty() {
            out.problems.push(format!(
                "MeshService {name:?} in mesh {mesh_name:?}: port conflict, ports must be \
                 identical across Dataplane inbounds grouped into a single MeshService; \
                 Dataplanes {conflicting:?} differ"
            ));
        }
        chosen
    };
    let grace = settings.deletion_grace_period.as_nanos() as i128;
    for key in scope.iter().filter(|k| k.kind == ResourceType::MeshService) {
        let asks = mesh.wants.get(&key.name).filter(|a| !a.is_empty());
        match working.get_mut(key) {
            Some(r) if is_generated(r) => {
                if mode == MeshServicesMode::Disabled {
                    // Kuma removes what it generated once a mesh turns generation off.
                    working.remove(key);
                    continue;
                }
                match asks {
                    Some(asks) => {
                        let chosen = choose(&key.name, Some(&r.spec), asks, out);
                        if r.spec.get("ports") != chosen.get("ports")
                            || r.spec.get("selector") != chosen.get("selector")
                        {
                            let mut spec = chosen;
                            // What the status pass owns stays; it is recomputed below.
                            for field in ["identities", "state"] {
                                if let Some(v) = r.spec.get(field) {
                                    spec[field] = v.clone();
                                }
                            }
                            r.spec = spec;
                        }
                        r.meta.labels.remove(GRACE_STARTED);
                        r.meta.labels.extend(desired_labels(&key.name));
                    }
                    None => match r.label(GRACE_STARTED).and_then(Timestamp::parse) {
                        Some(started) if now.0 > started.0 + grace => {
                            working.remove(key);
                        }
                        Some(_) => {}
                        None => {
                            r.meta
                                .labels
                                .insert(GRACE_STARTED.to_string(), now.to_string());
                        }
                    },
                }
            }
            // A MeshService of that name that the generator does not manage (created by a
            // user, or synced from elsewhere) is left alone, as Kuma does.
            Some(_) => {}
            None => {
                if mode == MeshServicesMode::Disabled || mesh.services.contains_key(key) {
                    continue;
                }
                if let Some(asks) = asks {
                    let spec = choose(&key.name, None, asks, out);
                    let mut r =
                        Resource::new(ResourceType::MeshService, mesh_name, &key.name, spec);
                    r.meta.labels = desired_labels(&key.name);
                    r.meta.creation_time = now;
                    working.insert(key.clone(), r);
                }
            }
        }
    }
}

/// Addresses and HostnameGenerator conditions of services of one kind in one mesh.
fn assign_hostnames(services: &mut [&mut Resource], generators: &[Generator], zone: &str) {
    struct Entry {
        hostname: Option<String>,
        condition: Value,
    }
    let kind = match services.first() {
        Some(r) => r.kind,
        None => return,
    };
    // Per service (by index), per generator name.
    let mut per_service: Vec<BTreeMap<String, Entry>> =
        (0..services.len()).map(|_| BTreeMap::new()).collect();
    let mut taken: HashMap<String, usize> = HashMap::new();
    for g in generators {
        let Some(selector) = g.selector(kind) else {
            continue;
        };
        for (i, r) in services.iter().enumerate() {
            if !hostname::selects(selector, &r.meta.labels) {
                continue;
            }
            let input = TemplateInput {
                resource: r,
                local_zone: zone,
            };
            let entry = match hostname::evaluate(&g.spec.template, &input) {
                Err(e) => Entry {
                    hostname: None,
                    condition: condition("False", "TemplateError", &e.to_string()),
                },
                Ok(h) => match taken.get(&h) {
                    Some(&owner) if owner != i => {
                        let message = format!(
                            "Hostname collision with {kind}: {}",
                            services[owner].meta.name
                        );
                        // The service keeping the hostname says so too.
                        let winner_note = format!(
                            "{h} is also generated for {kind} {}; this one keeps it",
                            r.meta.name
                        );
                        if let Some(w) = per_service[owner].get_mut(&g.name)
                            && w.hostname.as_deref() == Some(h.as_str())
                        {
                            w.condition["message"] = Value::String(winner_note);
                        } else if let Some(w) = per_service[owner]
                            .values_mut()
                            .find(|e| e.hostname.as_deref() == Some(h.as_str()))
                        {
                            w.condition["message"] = Value::String(winner_note);
                        }
                        Entry {
                            hostname: None,
                            condition: condition("False", "Collision", &message),
                        }
                    }
                    _ => {
                        taken.insert(h.clone(), i);
                        Entry {
                            hostname: Some(h),
                            condition: condition("True", "Generated", ""),
                        }
                    }
                },
            };
            per_service[i].insert(g.name.clone(), entry);
        }
    }
    for (r, entries) in services.iter_mut().zip(per_service) {
        let mut addresses = Vec::new();
        let mut statuses = Vec::new();
        for (generator, e) in entries {
            let reference = json!({"coreName": generator});
            if let Some(h) = e.hostname {
                addresses.push(json!({
                    "hostname": h,
                    "origin": "HostnameGenerator",
                    "hostnameGeneratorRef": reference.clone(),
                }));
            }
            statuses.push(json!({"hostnameGeneratorRef": reference, "conditions": [e.condition]}));
        }
        let status = status_object(r);
        set_or_remove(status, "addresses", addresses);
        set_or_remove(status, "hostnameGenerators", statuses);
    }
}

/// Each MeshMultiZoneService's `status.meshServices` and its `MeshServicesMatched`
/// condition, from the MeshServices this zone holds (its own and other zones' copies), as
/// Kuma's zone status updater computes them; services in `scope` are as `working` leaves them.
fn multi_zone_statuses(
    mesh: &MeshState,
    scope: &BTreeSet<ResourceKey>,
    working: &mut BTreeMap<ResourceKey, Resource>,
) {
    let selectors: Vec<(ResourceKey, serde_json::Map<String, Value>)> = working
        .values()
        .filter(|r| r.kind == ResourceType::MeshMultiZoneService)
        .filter_map(|r| {
            let labels = r.spec.pointer("/selector/meshService/matchLabels")?;
            Some((r.key(), labels.as_object()?.clone()))
        })
        .collect();
    if selectors.is_empty() {
        return;
    }
    let stored = mesh
        .services
        .iter()
        .filter(|(k, _)| !scope.contains(k))
        .map(|(_, r)| r);
    let services: Vec<&Resource> = stored
        .chain(working.values())
        .filter(|r| r.kind == ResourceType::MeshService)
        .collect();
    let mut statuses = Vec::with_capacity(selectors.len());
    for (key, labels) in selectors {
        let mut matched: Vec<(String, Value)> = services
            .iter()
            .filter(|ms| {
                labels
                    .iter()
                    .all(|(k, v)| v.as_str() == service_label(ms, k))
            })
            .map(|ms| {
                let name = ms.label(DISPLAY_NAME).unwrap_or(&ms.meta.name);
                let namespace = ms.label(model::labels::KUBE_NAMESPACE).unwrap_or_default();
                let zone = ms.label(ZONE).unwrap_or_default();
                (
                    format!("{name}/{namespace}/{zone}/{}", ms.meta.mesh),
                    json!({"name": name, "namespace": namespace, "zone": zone,
                           "mesh": ms.meta.mesh}),
                )
            })
            .collect();
        // Kuma's order: by fully qualified name.
        matched.sort_by(|a, b| a.0.cmp(&b.0));
        statuses.push((key, matched.into_iter().map(|(_, m)| m).collect()));
    }
    for (key, matched) in statuses {
        let Some(r) = working.get_mut(&key) else {
            continue;
        };
        set_matched(r, matched);
    }
}

/// Sets a MeshMultiZoneService's matched MeshServices and its `MeshServicesMatched` condition,
/// keeping its other conditions.
fn set_matched(r: &mut Resource, matched: Vec<Value>) {
    let found = match matched.len() {
        0 => json!({"type": "MeshServicesMatched", "status": "False",
                    "reason": "NoMatchesFound",
                    "message": "Selector does not match any MeshService in this zone"}),
        n => json!({"type": "MeshServicesMatched", "status": "True",
                    "reason": "MatchesFound",
                    "message": format!("Matched {n} MeshService(s)")}),
    };
    let status = status_object(r);
    let mut conditions: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match conditions
        .iter_mut()
        .find(|c| c["type"] == "MeshServicesMatched")
    {
        Some(c) => *c = found,
        None => conditions.push(found),
    }
    set_or_remove(status, "meshServices", matched);
    status.insert("conditions".into(), Value::Array(conditions));
}

/// A MeshService's label as a MeshMultiZoneService's selector reads it: a zone's own
/// MeshService is matched by the display name its copy on global carries.
fn service_label<'a>(ms: &'a Resource, key: &str) -> Option<&'a str> {
    ms.label(key)
        .or_else(|| (key == DISPLAY_NAME).then_some(ms.meta.name.as_str()))
}

fn condition(status: &str, reason: &str, message: &str) -> Value {
    json!({"type": "Generated", "status": status, "reason": reason, "message": message})
}

fn status_object(r: &mut Resource) -> &mut serde_json::Map<String, Value> {
    let status = r.status.get_or_insert_with(|| json!({}));
    if !status.is_object() {
        *status = json!({});
    }
    match status {
        Value::Object(map) => map,
        _ => unreachable!("made an object above"),
    }
}

/// Kuma's `omitempty`: an empty list is left out.
fn set_or_remove(map: &mut serde_json::Map<String, Value>, field: &str, items: Vec<Value>) {
    if items.is_empty() {
        map.remove(field);
    } else {
        map.insert(field.to_string(), Value::Array(items));
    }
}

fn set_vip(r: &mut Resource, ip: Ipv4Addr) {
    let kind = r.kind;
    let status = status_object(r);
    let vip = json!({"ip": ip.to_string()});
    match kind {
        ResourceType::MeshExternalService => {
            if status.get("vip").and_then(|v| v.get("ip")).is_none() {
                status.insert("vip".into(), vip);
            }
        }
        _ => {
            let has = status
                .get("vips")
                .and_then(Value::as_array)
                .is_some_and(|v| !v.is_empty());
            if !has {
                status.insert("vips".into(), json!([vip]));
            }
        }
    }
}

fn inbound_serves(i: &InboundFacts, port: &ServicePort) -> bool {
    match &port.target_port {
        Some(IntOrString::Int(t)) => u32::try_from(*t).is_ok_and(|t| t == i.port),
        Some(IntOrString::String(name)) => *name == i.name,
        Some(IntOrString::Float(_)) => false,
        // Kuma never matches a port without targetPort; the port itself is what a user who
        // left it out means.
        None => port.port == i.port,
    }
}

/// A local MeshService's proxies, TLS readiness, identities and availability.
fn local_status(r: &mut Resource, mesh: &MeshState) {
    let Ok(spec) = serde_json::from_value::<MeshServiceSpec>(r.spec.clone()) else {
        return;
    };
    let proxies = mesh.select(&spec);
    let (mut connected, mut healthy, mut issued) = (0u64, 0u64, 0usize);
    let mut identities = BTreeSet::new();
    for p in &proxies {
        let facts = mesh.insights.get(&p.name).copied().unwrap_or_default();
        connected += u64::from(facts.connected);
        issued += usize::from(facts.issued_certificate);
        let serves_all = spec.ports.iter().all(|port| {
            p.inbounds
                .iter()
                .any(|i| i.ready && inbound_serves(i, port))
        });
        healthy += u64::from(serves_all);
        let services: Vec<&String> = p
            .inbounds
            .iter()
            .filter_map(|i| i.tags.get(SERVICE_TAG))
            .collect();
        if services.is_empty() {
            if let Some(w) = p.labels.get(WORKLOAD).filter(|w| !w.is_empty()) {
                identities.insert(w.clone());
            }
        } else {
            identities.extend(services.into_iter().cloned());
        }
    }
    let total = proxies.len() as u64;
    let existing_tls_ready = r
        .status
        .as_ref()
        .and_then(|s| s.pointer("/tls/status"))
        .and_then(Value::as_str)
        == Some("Ready");
    let tls = if !mesh.mtls {
        "NotReady"
    } else if existing_tls_ready || issued == proxies.len() {
        "Ready"
    } else {
        "NotReady"
    };
    let mut counts = serde_json::Map::new();
    for (field, n) in [
        ("connected", connected),
        ("healthy", healthy),
        ("total", total),
    ] {
        if n > 0 {
            counts.insert(field.into(), json!(n));
        }
    }
    let status = status_object(r);
    status.insert("dataplaneProxies".into(), Value::Object(counts));
    status.insert("tls".into(), json!({"status": tls}));

    if !identities.is_empty() || r.spec.get("identities").is_some() {
        let list: Vec<Value> = identities
            .into_iter()
            .map(|v| json!({"type": "ServiceTag", "value": v}))
            .collect();
        r.spec["identities"] = Value::Array(list);
    }
    r.spec["state"] = json!(if healthy > 0 {
        "Available"
    } else {
        "Unavailable"
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            zone: "zone-1".into(),
            generate: true,
            deletion_grace_period: Duration::from_secs(3600),
        }
    }

    /// One pass at `secs` with the default settings.
    fn pass(m: &mut MeshState, gens: &[Generator], v: &mut Vips, secs: i64) -> Outcome {
        reconcile(m, gens, v, &settings(), Timestamp::from_unix_seconds(secs))
    }

    fn vips() -> Vips {
        Vips::new(["241.0.0.0/8", "242.0.0.0/8", "243.0.0.0/8"]).unwrap()
    }

    fn proxy(name: &str, created: i64, inbounds: &[(&str, u32, &str)]) -> Proxy {
        let inbound: Vec<Value> = inbounds
            .iter()
            .map(|(service, port, proto)| {
                json!({"port": port, "tags": {SERVICE_TAG: service, PROTOCOL_TAG: proto}})
            })
            .collect();
        let mut r = Resource::new(
            ResourceType::Dataplane,
            "default",
            name,
            json!({"networking": {"address": "10.0.0.1", "inbound": inbound}}),
        );
        r.meta.creation_time = Timestamp::from_unix_seconds(created);
        Proxy::from_resource(&r).unwrap()
    }

    fn mesh(mode: MeshServicesMode, proxies: Vec<Proxy>) -> MeshState {
        let mut m = MeshState::new("default");
        m.set_mesh(Some(mode), false);
        for p in proxies {
            m.put_proxy(p);
        }
        m
    }

    fn local_generator() -> Vec<Generator> {
        let mut r = Resource::new(
            ResourceType::HostnameGenerator,
            "",
            "local-universal-mesh-service",
            json!({"template": "{{ .DisplayName }}.svc.mesh.local",
                   "selector": {"meshService": {"matchLabels": {ORIGIN: "zone"}}}}),
        );
        r.meta.labels.insert(ORIGIN.into(), "zone".into());
        vec![Generator::from_resource(&r).unwrap()]
    }

    fn created(out: &Outcome) -> Vec<&Resource> {
        out.writes
            .iter()
            .filter_map(|w| match w {
                Write::Create(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// Stores what the writes say, as the controller does after writing them.
    fn apply(m: &mut MeshState, out: Outcome) {
        for w in out.writes {
            match w {
                Write::Create(r) | Write::Update(r) => m.put_service(r, true),
                Write::Delete(k) => m.remove_service(&k),
            }
        }
    }

    #[test]
    fn one_service_per_service_tag_with_vip_hostname_and_status_in_one_write() {
        let mut m = mesh(
            MeshServicesMode::Exclusive,
            vec![
                proxy(
                    "backend-1",
                    1,
                    &[("backend", 8080, "http"), ("admin", 9901, "tcp")],
                ),
                proxy("backend-2", 2, &[("backend", 8080, "http")]),
            ],
        );
        m.put_insight(
            "backend-1",
            InsightFacts {
                connected: true,
                issued_certificate: false,
            },
        );
        let mut v = vips();
        let out = pass(&mut m, &local_generator(), &mut v, 10);
        let made = created(&out);
        assert_eq!(made.len(), 2, "{:?}", out.writes);
        let backend = made.iter().find(|r| r.meta.name == "backend").unwrap();
        assert_eq!(
            backend.spec["ports"],
            json!([{"name": "8080", "port": 8080, "targetPort": 8080, "appProtocol": "http"}])
        );
        assert_eq!(
            backend.spec["selector"],
            json!({"dataplaneTags": {SERVICE_TAG: "backend"}})
        );
        assert_eq!(backend.spec["state"], "Available");
        // Kuma's identities: every service tag of the selected Dataplanes.
        assert_eq!(
            backend.spec["identities"],
            json!([{"type": "ServiceTag", "value": "admin"}, {"type": "ServiceTag", "value": "backend"}])
        );
        assert_eq!(backend.label(MANAGED_BY), Some(GENERATOR_VALUE));
        assert_eq!(backend.label(ZONE), Some("zone-1"));
        let status = backend.status.as_ref().unwrap();
        assert_eq!(
            status["vips"],
            json!([{"ip": "241.0.0.2"}]),
            "admin sorts first"
        );
        assert_eq!(status["addresses"][0]["hostname"], "backend.svc.mesh.local");
        assert_eq!(
            status["dataplaneProxies"],
            json!({"connected": 1, "healthy": 2, "total": 2})
        );
        assert_eq!(status["tls"], json!({"status": "NotReady"}));
        assert_eq!(
            status["hostnameGenerators"][0]["conditions"][0]["reason"],
            "Generated"
        );
        apply(&mut m, out);
        m.mark_all();
        let again = pass(&mut m, &local_generator(), &mut v, 11);
        assert!(again.writes.is_empty(), "stable: {:?}", again.writes);
        assert_eq!(v.in_use(), [2, 0, 0]);
    }

    #[test]
    fn a_service_without_dataplanes_waits_out_the_grace_period_then_goes() {
        let mut m = mesh(
            MeshServicesMode::Everywhere,
            vec![proxy("web-1", 1, &[("web", 80, "http")])],
        );
        let mut v = vips();
        let s = settings();
        let out = reconcile(&mut m, &[], &mut v, &s, Timestamp::from_unix_seconds(10));
        apply(&mut m, out);
        m.remove_proxy("web-1");
        let out = reconcile(&mut m, &[], &mut v, &s, Timestamp::from_unix_seconds(20));
        let Write::Update(r) = &out.writes[0] else {
            panic!("{:?}", out.writes)
        };
        assert!(r.label(GRACE_STARTED).is_some());
        apply(&mut m, out);
        assert_eq!(
            m.next_deadline(s.deletion_grace_period),
            Some(Timestamp::from_unix_seconds(20 + 3600))
        );
        m.mark_all();
        let out = reconcile(&mut m, &[], &mut v, &s, Timestamp::from_unix_seconds(100));
        assert!(out.writes.is_empty(), "still in its grace period");
        // The Dataplane comes back: the grace period ends.
        m.put_proxy(proxy("web-1", 1, &[("web", 80, "http")]));
        let out = reconcile(&mut m, &[], &mut v, &s, Timestamp::from_unix_seconds(200));
        let Write::Update(r) = &out.writes[0] else {
            panic!("{:?}", out.writes)
        };
        assert!(r.label(GRACE_STARTED).is_none());
        apply(&mut m, out);
        m.remove_proxy("web-1");
        let out = reconcile(&mut m, &[], &mut v, &s, Timestamp::from_unix_seconds(300));
        apply(&mut m, out);
        let later = Timestamp::from_unix_seconds(300 + 3601);
        m.mark_expired(later, s.deletion_grace_period);
        let out = reconcile(
            &mut m,
            &[],
            &mut v,
            &s,
            Timestamp::from_unix_seconds(300 + 3601),
        );
        assert!(
            matches!(&out.writes[..], [Write::Delete(k)] if k.name == "web"),
            "{:?}",
            out.writes
        );
    }

    /// A mesh whose one Dataplane (`web-1`, service `web`) has had its MeshService generated.
    fn web_generated() -> (MeshState, Vips) {
        let mut m = mesh(
            MeshServicesMode::Everywhere,
            vec![proxy("web-1", 1, &[("web", 80, "http")])],
        );
        let mut v = vips();
        let out = pass(&mut m, &[], &mut v, 1);
        apply(&mut m, out);
        (m, v)
    }

    #[test]
    fn disabled_mode_removes_generated_services_and_keeps_users() {
        let (mut m, mut v) = web_generated();
        let mine = Resource::new(
            ResourceType::MeshService,
            "default",
            "mine",
            json!({"selector": {"dataplaneTags": {SERVICE_TAG: "web"}}, "ports": [{"port": 80, "targetPort": 80}]}),
        );
        m.put_service(mine, false);
        m.set_mesh(Some(MeshServicesMode::Disabled), false);
        let out = pass(&mut m, &[], &mut v, 2);
        assert!(out.writes.contains(&Write::Delete(ResourceKey::new(
            ResourceType::MeshService,
            "default",
            "web"
        ))));
        // The user's own MeshService still gets its VIP and status.
        let mine = out
            .writes
            .iter()
            .find_map(|w| match w {
                Write::Update(r) if r.meta.name == "mine" => Some(r),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            mine.status.as_ref().unwrap()["dataplaneProxies"]["healthy"],
            1
        );
        assert_eq!(mine.spec["state"], "Available");
    }

    #[test]
    fn ports_that_disagree_keep_the_first_dataplanes_and_are_reported() {
        let mut m = mesh(
            MeshServicesMode::Everywhere,
            vec![
                proxy("a", 1, &[("api", 80, "http")]),
                proxy("b", 2, &[("api", 81, "http")]),
            ],
        );
        let out = pass(&mut m, &[], &mut vips(), 1);
        assert_eq!(created(&out)[0].spec["ports"][0]["port"], 80);
        assert!(
            out.problems
                .iter()
                .any(|p| p.contains("port conflict") && p.contains("\"b\""))
        );
    }

    #[test]
    fn workloads_in_exclusive_mode_and_bad_names_reported() {
        let mut r = Resource::new(
            ResourceType::Dataplane,
            "default",
            "w-1",
            json!({"networking": {"address": "10.0.0.1", "inbound": [
                {"port": 80, "name": "main", "tags": {SERVICE_TAG: "ignored-here"}}]}}),
        );
        r.meta.labels.insert(WORKLOAD.into(), "shop".into());
        let mut m = mesh(
            MeshServicesMode::Exclusive,
            vec![
                Proxy::from_resource(&r).unwrap(),
                proxy("x", 2, &[("Bad_Name", 80, "tcp")]),
            ],
        );
        let out = pass(&mut m, &[], &mut vips(), 1);
        let made = created(&out);
        assert_eq!(made.len(), 1);
        assert_eq!(made[0].meta.name, "shop");
        assert_eq!(
            made[0].spec["selector"],
            json!({"dataplaneLabels": {"matchLabels": {WORKLOAD: "shop"}}})
        );
        assert_eq!(made[0].spec["ports"][0]["name"], "main");
        assert!(out.problems.iter().any(|p| p.contains("Bad_Name")));
    }

    #[test]
    fn hostname_collisions_show_on_both_and_the_oldest_keeps_the_name() {
        let mut m = mesh(MeshServicesMode::Disabled, vec![]);
        for (name, t) in [("b", 2), ("a", 1)] {
            let mut r = Resource::new(
                ResourceType::MeshExternalService,
                "default",
                name,
                json!({}),
            );
            r.meta.creation_time = Timestamp::from_unix_seconds(t);
            r.meta.labels.insert("team".into(), "x".into());
            m.put_service(r, false);
        }
        let g = Resource::new(
            ResourceType::HostnameGenerator,
            "",
            "team",
            json!({"template": "{{ label \"team\" }}.extsvc.mesh.local",
                   "selector": {"meshExternalService": {"matchLabels": {"team": "x"}}}}),
        );
        let gens = vec![Generator::from_resource(&g).unwrap()];
        let out = pass(&mut m, &gens, &mut vips(), 5);
        let status = |name: &str| {
            out.writes
                .iter()
                .find_map(|w| match w {
                    Write::Update(r) if r.meta.name == name => r.status.clone(),
                    _ => None,
                })
                .unwrap()
        };
        let (a, b) = (status("a"), status("b"));
        assert_eq!(a["addresses"][0]["hostname"], "x.extsvc.mesh.local");
        assert_eq!(a["vip"], json!({"ip": "242.0.0.1"}));
        assert!(
            a["hostnameGenerators"][0]["conditions"][0]["message"]
                .as_str()
                .unwrap()
                .contains("also generated for MeshExternalService b")
        );
        assert!(b.get("addresses").is_none());
        assert_eq!(
            b["hostnameGenerators"][0]["conditions"][0]["reason"],
            "Collision"
        );
        assert_eq!(b["vip"], json!({"ip": "242.0.0.2"}));
    }

    #[test]
    fn scoped_passes_find_what_a_change_affects() {
        let mut m = mesh(MeshServicesMode::Disabled, vec![]);
        let mut by_label = Resource::new(
            ResourceType::MeshService,
            "default",
            "team-a",
            json!({"selector": {"dataplaneLabels": {"matchLabels": {"team": "a"}}},
                   "ports": [{"port": 80, "targetPort": 80}]}),
        );
        by_label.meta.creation_time = Timestamp::from_unix_seconds(1);
        let mut same_host = by_label.clone();
        same_host.meta.name = "team-a-copy".into();
        same_host.meta.creation_time = Timestamp::from_unix_seconds(2);
        m.put_service(by_label, false);
        m.put_service(same_host, false);
        let g = Resource::new(
            ResourceType::HostnameGenerator,
            "",
            "fixed",
            json!({"template": "team.svc.mesh.local",
                   "selector": {"meshService": {"matchLabels": {}}}}),
        );
        let gens = vec![Generator::from_resource(&g).unwrap()];
        let (mut v, s) = (vips(), settings());
        let out = reconcile(&mut m, &gens, &mut v, &s, Timestamp::from_unix_seconds(5));
        apply(&mut m, out);
        let held = |m: &MeshState, name: &str| {
            m.services[&ResourceKey::new(ResourceType::MeshService, "default", name)]
                .status
                .as_ref()
                .and_then(|st| st.pointer("/addresses/0/hostname").cloned())
        };
        assert_eq!(held(&m, "team-a"), Some(json!("team.svc.mesh.local")));
        assert_eq!(held(&m, "team-a-copy"), None);

        // A labelled Dataplane arrives: only the services selecting it are recomputed.
        let mut r = Resource::new(
            ResourceType::Dataplane,
            "default",
            "a-1",
            json!({"networking": {"address": "10.0.0.1", "inbound": [{"port": 80, "tags": {SERVICE_TAG: "x"}}]}}),
        );
        r.meta.labels.insert("team".into(), "a".into());
        m.put_proxy(Proxy::from_resource(&r).unwrap());
        let out = reconcile(&mut m, &gens, &mut v, &s, Timestamp::from_unix_seconds(6));
        assert_eq!(out.writes.len(), 2, "both select it: {:?}", out.writes);
        apply(&mut m, out);

        // The holder goes: the one that lost the hostname gets it, though nothing else of it
        // changed.
        m.remove_service(&ResourceKey::new(
            ResourceType::MeshService,
            "default",
            "team-a",
        ));
        let out = reconcile(&mut m, &gens, &mut v, &s, Timestamp::from_unix_seconds(7));
        apply(&mut m, out);
        assert_eq!(held(&m, "team-a-copy"), Some(json!("team.svc.mesh.local")));
    }

    #[test]
    fn a_multi_zone_service_lists_the_mesh_services_it_matches() {
        let (mut m, mut v) = web_generated();
        let mut mz = Resource::new(
            ResourceType::MeshMultiZoneService,
            "default",
            "web-mz",
            json!({"selector": {"meshService": {"matchLabels": {DISPLAY_NAME: "web"}}},
                   "ports": [{"port": 80}]}),
        );
        mz.meta.labels.insert(ORIGIN.into(), "global".into());
        m.put_service(mz, false);
        let mut copy = Resource::new(
            ResourceType::MeshService,
            "default",
            "web-7c9f8b",
            json!({"selector": {"dataplaneTags": {SERVICE_TAG: "web"}}, "ports": [{"port": 80}]}),
        );
        for (k, val) in [(ORIGIN, "global"), (ZONE, "zone-2"), (DISPLAY_NAME, "web")] {
            copy.meta.labels.insert(k.into(), val.into());
        }
        m.put_service(copy.clone(), false);
        let status_of_mz = |out: &Outcome| -> Value {
            out.writes
                .iter()
                .find_map(|w| match w {
                    Write::Update(r) | Write::Create(r) if r.meta.name == "web-mz" => {
                        r.status.clone()
                    }
                    _ => None,
                })
                .unwrap_or_else(|| panic!("no write of web-mz: {:?}", out.writes))
        };
        let out = pass(&mut m, &[], &mut v, 2);
        let status = status_of_mz(&out);
        assert_eq!(
            status["meshServices"],
            json!([
                {"name": "web", "namespace": "", "zone": "zone-1", "mesh": "default"},
                {"name": "web", "namespace": "", "zone": "zone-2", "mesh": "default"},
            ])
        );
        assert_eq!(status["conditions"][0]["type"], "MeshServicesMatched");
        assert_eq!(status["conditions"][0]["status"], "True");
        assert_eq!(
            status["conditions"][0]["message"],
            "Matched 2 MeshService(s)"
        );
        assert!(status["vips"][0]["ip"].is_string(), "{status}");
        apply(&mut m, out);

        // Zone-2's copy goes: only this zone's web is left.
        m.remove_service(&copy.key());
        let out = pass(&mut m, &[], &mut v, 3);
        let status = status_of_mz(&out);
        assert_eq!(status["meshServices"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            status["conditions"][0]["message"],
            "Matched 1 MeshService(s)"
        );
        apply(&mut m, out);

        // Nothing changed since: nothing is written.
        m.put_proxy(proxy("web-1", 1, &[("web", 80, "http")]));
        let out = pass(&mut m, &[], &mut v, 4);
        assert!(
            out.writes
                .iter()
                .all(|w| !matches!(w, Write::Update(r) if r.meta.name == "web-mz")),
            "{:?}",
            out.writes
        );
    }

    #[test]
    fn exhausted_pool_is_reported_and_no_live_vip_is_reused() {
        let mut m = mesh(MeshServicesMode::Everywhere, vec![]);
        for n in 0..3 {
            m.put_proxy(proxy(&format!("p{n}"), n, &[(&format!("s{n}"), 80, "tcp")]));
        }
        let mut v = Vips::new(["10.0.0.0/30", "242.0.0.0/8", "243.0.0.0/8"]).unwrap(); // two VIPs
        let out = pass(&mut m, &[], &mut v, 1);
        let ips: BTreeSet<String> = created(&out)
            .iter()
            .filter_map(|r| {
                r.status
                    .as_ref()?
                    .pointer("/vips/0/ip")?
                    .as_str()
                    .map(String::from)
            })
            .collect();
        assert_eq!(ips.len(), 2);
        assert!(
            out.problems
                .iter()
                .any(|p| p.contains("every address of 10.0.0.0/30"))
        );
    }
}
