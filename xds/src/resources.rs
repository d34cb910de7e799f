//! A proxy's configuration while it is built: the generator's listeners, clusters and
//! endpoints, each indexed by what it came from, and the destinations the outbounds resolved
//! to, so policy plugins find what they change without parsing names.

use std::collections::BTreeMap;
use std::sync::Arc;

use model::specs::policy::LocalityAwareness;
use serde_json::Value;

use crate::context::Protocol;
use crate::envoy::cluster::ClusterMut;
use crate::envoy::listener::ListenerMut;

/// What a resource was generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The proxy's `networking.inbound[i]`: its listener and its application's cluster.
    Inbound(usize),
    /// The proxy's `networking.outbound[outbound]` (`None`: a service's port on its VIP,
    /// reached through the transparent proxy), whose traffic goes to
    /// [`ResourceSet::destinations`]`[destination]`.
    Outbound {
        outbound: Option<usize>,
        destination: usize,
    },
    /// The transparent proxy's passthrough listeners and clusters.
    Transparent,
    /// [`ResourceSet::destinations`]`[i]`: its cluster and endpoints.
    Destination(usize),
    /// A zone ingress's or egress's passthrough.
    ZoneProxy,
    /// A builtin gateway's listener on a port.
    Gateway { port: u32 },
    /// Added by a MeshProxyPatch.
    Patch,
    /// Added by a policy for a backend it sends to (a tracing collector).
    Policy(model::ResourceType),
    /// The Mesh's legacy Prometheus metrics endpoint (`spec.metrics`).
    MeshMetrics,
    /// The dynamic configuration kuma-dp reads (DNS records).
    DynamicConfig,
}

/// One local instance of a destination: where it is and the tags and labels locality
/// affinity compares.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalEndpoint {
    pub address: String,
    pub port: u32,
    pub tags: BTreeMap<String, String>,
}

impl LocalEndpoint {
    /// `inbound` of `dp` as an endpoint, tagged with the Dataplane's labels and the inbound's
    /// tags (what locality affinity compares).
    pub fn of(
        dp: &crate::context::DataplaneEntry,
        inbound: &model::specs::dataplane::Inbound,
    ) -> LocalEndpoint {
        let mut tags = dp.labels.clone();
        tags.extend(inbound.tags.clone());
        LocalEndpoint {
            address: crate::generator::common::endpoint_address(dp, inbound).to_string(),
            port: inbound.port,
            tags,
        }
    }
}

/// Another zone that runs a destination: where its traffic goes (its ingress, or this zone's
/// egresses) and how many instances it has.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteZone {
    pub zone: String,
    pub via: Vec<(String, u32)>,
    pub instances: u32,
}

/// A destination outbounds send to: one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    pub cluster: String,
    pub service: String,
    pub tags: BTreeMap<String, String>,
    pub protocol: Protocol,
    pub endpoints: Vec<LocalEndpoint>,
    pub remote: Vec<RemoteZone>,
    /// The SNI its connections carry, when not the `kuma.io/service` one built from
    /// `service` and `tags` (a MeshService's: Kuma's hashed name other zones' ingresses route).
    pub sni: Option<String>,
    /// The `kuma.io/service` identities its instances may present; empty: `service`.
    pub identities: Vec<String>,
    /// A MeshExternalService's whole cluster, endpoints inline, or why it has none; its
    /// cluster is not an EDS one and carries no mesh mTLS.
    pub external: Option<Result<Value, String>>,
}

/// What a proxy's kuma-dp told the control plane about its host (Envoy node metadata) that
/// the proxy's configuration depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    /// kuma-dp's working directory (`workdir`), where its sockets and pipes live; the
    /// system's temporary directory when kuma-dp did not say.
    pub workdir: Option<String>,
    /// The certificate and key files (on the proxy's host) kuma-dp has for the metrics
    /// listener (Kuma's `metricsCertPath`, `metricsKeyPath`).
    pub metrics_certificate: Option<(String, String)>,
}

impl ProxyEnv {
    /// The pipe kuma-dp forwards TCP access logs from.
    pub fn access_log_pipe(&self, name: &str, mesh: &str) -> String {
        model::proxy_paths::access_log_pipe(self.workdir(), name, mesh)
    }

    /// kuma-dp's working directory, or `/tmp` when kuma-dp did not say.
    pub fn workdir(&self) -> &str {
        self.workdir.as_deref().unwrap_or("/tmp")
    }
}

#[derive(Debug, Clone, Default)]
pub struct ResourceSet {
    /// The proxy's host, as its kuma-dp described it.
    pub env: ProxyEnv,
    listeners: Vec<(Origin, Value)>,
    clusters: Vec<(Origin, Value)>,
    /// `ClusterLoadAssignment`s, one per EDS cluster.
    endpoints: Vec<(Origin, Arc<Value>)>,
    pub destinations: Vec<Arc<Destination>>,
    /// How each destination's endpoints are laid out, by destination (the default until a
    /// MeshLoadBalancingStrategy says otherwise).
    localities: Vec<LocalityAwareness>,
    /// Names of the SDS secrets the configuration refers to.
    pub secret_names: Vec<String>,
    /// SDS secrets the configuration itself carries (a gateway's certificates from mesh
    /// Secrets); the proxy's identity is issued by the control plane, not here.
    pub secrets: Vec<Value>,
    /// What a plugin could not apply, for the control plane to log and show.
    pub warnings: Vec<String>,
}

/// Envoy resources for one proxy, each Envoy's JSON for its message type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyResources {
    pub listeners: Vec<Value>,
    pub clusters: Vec<Value>,
    /// `ClusterLoadAssignment`s, one per EDS cluster: shared, as the proxies of a snapshot
    /// that call one service get one and the same.
    pub endpoints: Vec<Arc<Value>>,
    /// Names of the SDS secrets the configuration refers to.
    pub secret_names: Vec<String>,
    /// SDS secrets the configuration carries (a gateway's certificates).
    pub secrets: Vec<Value>,
    /// What a plugin could not apply (the rest of the configuration stands).
    pub warnings: Vec<String>,
    /// How `endpoints` were laid out, to lay them out again from a later context.
    pub plan: EndpointPlan,
}

/// What each of a proxy's load assignments was laid out from: its destination and the
/// locality awareness applied to it, in the order of [`ProxyResources::endpoints`]. `None`
/// when an assignment did not come from a destination, which a plan cannot redo.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointPlan {
    pub(crate) assignments: Option<Vec<(Arc<Destination>, LocalityAwareness)>>,
}

impl ResourceSet {
    pub fn add_listener(&mut self, origin: Origin, listener: Value) {
        self.listeners.push((origin, listener));
    }

    pub fn add_cluster(&mut self, origin: Origin, cluster: Value) {
        self.clusters.push((origin, cluster));
    }

    pub fn add_endpoints(&mut self, origin: Origin, assignment: Arc<Value>) {
        self.endpoints.push((origin, assignment));
    }

    /// Drops every listener and cluster `origin` added.
    pub fn remove_origin(&mut self, origin: Origin) {
        self.listeners.retain(|(o, _)| *o != origin);
        self.clusters.retain(|(o, _)| *o != origin);
    }

    pub fn has_cluster(&self, name: &str) -> bool {
        self.clusters.iter().any(|(_, c)| c["name"] == name)
    }

    /// The listeners, with what each came from, for a plugin to edit.
    pub fn listeners_mut(&mut self) -> impl Iterator<Item = (Origin, ListenerMut<'_>)> {
        self.listeners.iter_mut().map(|(o, l)| (*o, ListenerMut(l)))
    }

    pub fn listener_mut(&mut self, origin: Origin) -> Option<ListenerMut<'_>> {
        self.listeners
            .iter_mut()
            .find(|(o, _)| *o == origin)
            .map(|(_, l)| ListenerMut(l))
    }

    pub fn cluster_mut(&mut self, origin: Origin) -> Option<ClusterMut<'_>> {
        self.clusters
            .iter_mut()
            .find(|(o, _)| *o == origin)
            .map(|(_, c)| ClusterMut(c))
    }

    /// Every listener and what it came from, to add, remove or rewrite (MeshProxyPatch).
    pub(crate) fn listeners_raw(&mut self) -> &mut Vec<(Origin, Value)> {
        &mut self.listeners
    }

    /// Every cluster and what it came from, to add, remove or rewrite (MeshProxyPatch).
    pub(crate) fn clusters_raw(&mut self) -> &mut Vec<(Origin, Value)> {
        &mut self.clusters
    }

    /// Drops the load assignments of clusters that are gone (removed by a MeshProxyPatch).
    pub(crate) fn drop_orphan_endpoints(&mut self) {
        let clusters = &self.clusters;
        self.endpoints
            .retain(|(_, e)| clusters.iter().any(|(_, c)| c["name"] == e["cluster_name"]));
    }

    /// Adds a destination with its cluster and its load assignment (laid out by `locality`);
    /// returns its index in [`ResourceSet::destinations`].
    pub fn add_destination(
        &mut self,
        destination: Arc<Destination>,
        cluster: Value,
        locality: LocalityAwareness,
        assignment: Option<Arc<Value>>,
    ) -> usize {
        let d = self.destinations.len();
        self.add_cluster(Origin::Destination(d), cluster);
        if let Some(assignment) = assignment {
            self.add_endpoints(Origin::Destination(d), assignment);
        }
        self.destinations.push(destination);
        self.localities.push(locality);
        d
    }

    /// Replaces destination `d`'s load assignment with one laid out by `locality`.
    pub fn lay_out_endpoints(
        &mut self,
        d: usize,
        locality: &LocalityAwareness,
        assignment: Arc<Value>,
    ) {
        let origin = Origin::Destination(d);
        if let Some((_, e)) = self.endpoints.iter_mut().find(|(o, _)| *o == origin) {
            *e = assignment;
        }
        if let Some(l) = self.localities.get_mut(d) {
            *l = locality.clone();
        }
    }

    /// The finished configuration, in the order it was generated.
    pub fn into_resources(self) -> ProxyResources {
        fn values<T>(v: Vec<(Origin, T)>) -> Vec<T> {
            v.into_iter().map(|(_, x)| x).collect()
        }
        let assignments = self
            .endpoints
            .iter()
            .map(|(origin, _)| match origin {
                Origin::Destination(d) => Some((
                    self.destinations.get(*d)?.clone(),
                    self.localities.get(*d)?.clone(),
                )),
                _ => None,
            })
            .collect();
        ProxyResources {
            listeners: values(self.listeners),
            clusters: values(self.clusters),
            endpoints: values(self.endpoints),
            secret_names: self.secret_names,
            secrets: self.secrets,
            warnings: self.warnings,
            plan: EndpointPlan { assignments },
        }
    }
}
