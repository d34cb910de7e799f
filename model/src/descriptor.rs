//! One descriptor per resource type: its names in the API and CLI, its scope, how KDS syncs it
//! and how its spec is validated.

use std::fmt;

use crate::validate::ValidationError;

/// Whether a resource lives inside a mesh or beside meshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Scope {
    Mesh,
    Global,
}

/// KDS direction flags, with Kuma's bit values.
pub mod kds {
    pub const CONSUMED_BY_ZONE: u32 = 1;
    pub const CONSUMED_BY_GLOBAL: u32 = 4;
    pub const PROVIDED_BY_ZONE: u32 = 8;
    pub const PROVIDED_BY_GLOBAL: u32 = 16;
    pub const SYNCED_ACROSS_ZONES: u32 = 32;
    pub const DISABLED_BY_DEFAULT: u32 = 64;

    pub const GLOBAL_TO_ZONES: u32 = CONSUMED_BY_ZONE | PROVIDED_BY_GLOBAL;
    pub const ZONE_TO_GLOBAL: u32 = CONSUMED_BY_GLOBAL | PROVIDED_BY_ZONE;
    /// Policies and similar: created on either side, sent the other way.
    pub const BOTH_WAYS: u32 = GLOBAL_TO_ZONES | ZONE_TO_GLOBAL;
}

/// How a type's body is laid out in YAML/JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Legacy (protobuf-era) types: spec fields sit at the top level beside `type`/`name`.
    TopLevel,
    /// New types: the body is under `spec` (and `status` for some).
    Spec,
}

pub type SpecValidator = fn(&serde_json::Value) -> Result<(), ValidationError>;

#[derive(Debug)]
pub struct Descriptor {
    pub kind: ResourceType,
    /// The type name used in `type:` and KDS `type_url`, e.g. `MeshTimeout`.
    pub name: &'static str,
    /// API path segment and kumactl plural, e.g. `meshtimeouts`.
    pub plural: &'static str,
    /// kumactl singular, e.g. `meshtimeout`.
    pub singular: &'static str,
    /// Human names as Kuma's `/_resources` shows them.
    pub singular_display: &'static str,
    pub plural_display: &'static str,
    /// Short aliases kumactl accepts.
    pub short_names: &'static [&'static str],
    pub scope: Scope,
    pub kds_flags: u32,
    pub is_policy: bool,
    pub has_status: bool,
    pub layout: Layout,
    /// Whether the type is read-only over the API even in standalone (insights are written by the CP).
    pub read_only: bool,
    pub validate: SpecValidator,
}

impl Descriptor {
    pub fn has_flag(&self, flag: u32) -> bool {
        self.kds_flags & flag == flag
    }
}

macro_rules! resource_types {
    ($( $variant:ident => {
        plural: $plural:literal, singular: $singular:literal,
        display: ($sd:literal, $pd:literal), short: [$($short:literal),*],
        scope: $scope:ident, kds: $kds:expr, policy: $policy:literal, status: $status:literal,
        layout: $layout:ident, read_only: $ro:literal, validate: $validate:path $(,)?
    } ),* $(,)?) => {
        /// Every resource type the control plane knows.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ResourceType { $($variant),* }

        static DESCRIPTORS: &[Descriptor] = &[$(
            Descriptor {
                kind: ResourceType::$variant,
                name: stringify!($variant),
                plural: $plural,
                singular: $singular,
                singular_display: $sd,
                plural_display: $pd,
                short_names: &[$($short),*],
                scope: Scope::$scope,
                kds_flags: $kds,
                is_policy: $policy,
                has_status: $status,
                layout: Layout::$layout,
                read_only: $ro,
                validate: $validate,
            }
        ),*];
    };
}

use crate::specs;
use kds::*;

resource_types! {
    Mesh => { plural: "meshes", singular: "mesh", display: ("Mesh", "Meshes"), short: ["m"],
        scope: Global, kds: GLOBAL_TO_ZONES, policy: false, status: false, layout: TopLevel, read_only: false,
        validate: specs::mesh::validate },
    Config => { plural: "configs", singular: "config", display: ("Config", "Configs"), short: [],
        scope: Global, kds: 0, policy: false, status: false, layout: TopLevel, read_only: true,
        validate: specs::secret::validate_config },
    Dataplane => { plural: "dataplanes", singular: "dataplane", display: ("Dataplane", "Dataplanes"), short: ["dp"],
        scope: Mesh, kds: ZONE_TO_GLOBAL, policy: false, status: false, layout: TopLevel, read_only: false,
        validate: specs::dataplane::validate },
    DataplaneInsight => { plural: "dataplane-insights", singular: "dataplane-insight", display: ("Dataplane Insight", "Dataplane Insights"), short: [],
        scope: Mesh, kds: ZONE_TO_GLOBAL, policy: false, status: false, layout: TopLevel, read_only: true,
        validate: specs::insight::validate_dataplane_insight },
    Secret => { plural: "secrets", singular: "secret", display: ("Secret", "Secrets"), short: [],
        scope: Mesh, kds: GLOBAL_TO_ZONES, policy: false, status: false, layout: TopLevel, read_only: false,
        validate: specs::secret::validate },
    GlobalSecret => { plural: "globalsecrets", singular: "global-secret", display: ("Global Secret", "Global Secrets"), short: ["global-secrets"],
        scope: Global, kds: GLOBAL_TO_ZONES, policy: false, status: false, layout: TopLevel, read_only: false,
        validate: specs::secret::validate },
    Zone => { plural: "zones", singular: "zone", display: ("Zone", "Zones"), short: [],
        scope: Global, kds: 0, policy: false, status: false, layout: TopLevel, read_only: false,
        validate: specs::zone::validate_zone },
    ZoneInsight => { plural: "zone-insights", singular: "zone-insight", display: ("Zone Insight", "Zone Insights"), short: [],
        scope: Global, kds: 0, policy: false, status: false, layout: TopLevel, read_only: true,
        validate: specs::insight::validate_zone_insight },
    ZoneIngress => { plural: "zoneingresses", singular: "zoneingress", display: ("Zone Ingress", "Zone Ingresses"), short: ["zone-ingress", "zone-ingresses", "zi"],
        scope: Global, kds: ZONE_TO_GLOBAL | SYNCED_ACROSS_ZONES, policy: false, status: false, layout: TopLevel, read_only: false,
        validate: specs::zone::validate_zone_ingress },
    ZoneIngressInsight => { plural: "zone-ingress-insights", singular: "zone-ingress-insight", display: ("Zone Ingress Insight", "Zone Ingress Insights"), short: [],
        scope: Global, kds: ZONE_TO_GLOBAL, policy: false, status: false, layout: TopLevel, read_only: true,
        validate: specs::insight::validate_dataplane_insight },
    ZoneEgress => { plural: "zoneegresses", singular: "zoneegress", display: ("Zone Egress", "Zone Egresses"), short: ["zone-egress", "zone-egresses", "ze"],
        scope: Global, kds: ZONE_TO_GLOBAL, policy: false, status: false, layout: TopLevel, read_only: false,
        validate: specs::zone::validate_zone_egress },
    ZoneEgressInsight => { plural: "zoneegressinsights", singular: "zoneegressinsight", display: ("Zone Egress Insight", "Zone Egress Insights"), short: [],
        scope: Global, kds: ZONE_TO_GLOBAL, policy: false, status: false, layout: TopLevel, read_only: true,
        validate: specs::insight::validate_dataplane_insight },
    MeshGateway => { plural: "meshgateways", singular: "meshgateway", display: ("Mesh Gateway", "Mesh Gateways"), short: [],
        scope: Mesh, kds: BOTH_WAYS, policy: false, status: false, layout: TopLevel, read_only: false,
        validate: specs::gateway::validate },
    MeshService => { plural: "meshservices", singular: "meshservice", display: ("Mesh Service", "Mesh Services"), short: ["msvc"],
        scope: Mesh, kds: ZONE_TO_GLOBAL | SYNCED_ACROSS_ZONES, policy: false, status: true, layout: Spec, read_only: false,
        validate: specs::service::validate_mesh_service },
    MeshMultiZoneService => { plural: "meshmultizoneservices", singular: "meshmultizoneservice", display: ("Mesh Multi Zone Service", "Mesh Multi Zone Services"), short: ["mzsvc"],
        scope: Mesh, kds: GLOBAL_TO_ZONES, policy: false, status: true, layout: Spec, read_only: false,
        validate: specs::service::validate_mesh_multi_zone_service },
    MeshExternalService => { plural: "meshexternalservices", singular: "meshexternalservice", display: ("Mesh External Service", "Mesh External Services"), short: ["extsvc"],
        scope: Mesh, kds: BOTH_WAYS, policy: false, status: true, layout: Spec, read_only: false,
        validate: specs::service::validate_mesh_external_service },
    HostnameGenerator => { plural: "hostnamegenerators", singular: "hostnamegenerator", display: ("Hostname Generator", "Hostname Generators"), short: [],
        scope: Global, kds: BOTH_WAYS, policy: false, status: false, layout: Spec, read_only: false,
        validate: specs::service::validate_hostname_generator },
    MeshTrafficPermission => { plural: "meshtrafficpermissions", singular: "meshtrafficpermission", display: ("Mesh Traffic Permission", "Mesh Traffic Permissions"), short: ["mtp"],
        scope: Mesh, kds: BOTH_WAYS, policy: true, status: false, layout: Spec, read_only: false,
        validate: specs::policy::validate::<specs::policy::MeshTrafficPermissionSpec> },
    MeshTimeout => { plural: "meshtimeouts", singular: "meshtimeout", display: ("Mesh Timeout", "Mesh Timeouts"), short: ["mt"],
        scope: Mesh, kds: BOTH_WAYS, policy: true, status: false, layout: Spec, read_only: false,
        validate: specs::policy::validate::<specs::policy::MeshTimeoutSpec> },
    MeshRetry => { plural: "meshretries", singular: "meshretry", display: ("Mesh Retry", "Mesh Retries"), short: ["mr"],
        scope: Mesh, kds: BOTH_WAYS, policy: true, status: false, layout: Spec, read_only: false,
        validate: specs::policy::validate::<specs::policy::MeshRetrySpec> },
    MeshCircuitBreaker => { plural: "meshcircuitbreakers", singular: "meshcircuitbreaker", display: ("Mesh Circuit Breaker", "Mesh Circuit Breakers"), short: ["mcb"],
        scope: Mesh, kds: BOTH_WAYS, policy: true, status: false, layout: Spec, read_only: false,
        validate: specs::policy::validate::<specs::policy::MeshCircuitBreakerSpec> },
    MeshHealthCheck => { plural: "meshhealthchecks", singular: "meshhealthcheck", display: ("Mesh Health Check", "Mesh Health Checks"), short: ["mhc"],
        scope: Mesh, kds: BOTH_WAYS, policy: true, status: false, layout: Spec, read_only: false,
        validate: specs::policy::validate::<specs::policy::MeshHealthCheckSpec> },
    MeshHTTPRoute => { plural: "meshhttproutes", singular: "meshhttproute", display: ("Mesh HTTP Route", "Mesh HTTP Routes"), short: ["mhr"],
        scope: Mesh, kds: BOTH_WAYS, policy: true, status: false, layout: Spec, read_only: false,
        validate: specs::policy::validate::<specs::policy::MeshHttpRouteSpec> },
    MeshTCPRoute => { plural: "meshtcproutes", singular: "meshtcproute", display: ("Mesh TCP Route", "Mesh TCP Routes"), short: ["mtr"],
        scope: Mesh, kds: BOTH_WAYS, policy: true, status: false, layout: Spec, read_only: false,
        validate: specs::policy::validate::<specs::policy::MeshTcpRouteSpec> },
    MeshLoadBalancingStrategy => { plural: "meshloadbalancingstrategies", singular: "meshloadbalancingstrategy", display: ("Mesh Load Balancing Strategy", "Mesh Load Balancing Strategies"), short: ["mlbs"],
        scope: Mesh, kds: BOTH_WAYS, policy: true, status: false, layout: Spec, read_only: false,
        validate: specs::policy::validate::<specs::policy::MeshLoadBalancingStrategySpec> },
    MeshAccessLog => { plural: "meshaccesslogs", singular: "meshaccesslog", display: ("Mesh Access Log", "Mesh Access Logs"), short: ["mal"],
        scope: Mesh, kds: BOTH_WAYS, policy: true, status: false, layout: Spec, read_only: false,
        validate: specs::policy::validate::<specs::policy::MeshAccessLogSpec> },
    MeshFaultInjection => { plural: "meshfaultinjections", singular: "meshfaultinjection", display: ("Mesh Fault Injection", "Mesh Fault Injections"), short: ["mfi"],
        scope: Mesh, kds: BOTH_WAYS, policy: true, status: false, layout: Spec, read_only: false,
        validate: specs::policy::validate::<specs::policy::MeshFaultInjectionSpec> },
    MeshRateLimit => { plural: "meshratelimits", singular: "meshratelimit", display: ("Mesh Rate Limit", "Mesh Rate Limits"), short: ["mrl"],
        scope: Mesh, kds: BOTH_WAYS, policy: true, status: false, layout: Spec, read_only: false,
        validate: specs::policy::validate::<specs::policy::MeshRateLimitSpec> },
    MeshTLS => { plural: "meshtlses", singular: "meshtls", display: ("Mesh TLS", "Mesh TLSes"), short: [],
        scope: Mesh, kds: BOTH_WAYS, policy: true, status: false, layout: Spec, read_only: false,
        validate: specs::policy::validate::<specs::policy::MeshTlsSpec> },
    MeshTrace => { plural: "meshtraces", singular: "meshtrace", display: ("Mesh Trace", "Mesh Traces"), short: [],
        scope: Mesh, kds: BOTH_WAYS, policy: true, status: false, layout: Spec, read_only: false,
        validate: specs::policy::validate::<specs::policy::MeshTraceSpec> },
    MeshMetric => { plural: "meshmetrics", singular: "meshmetric", display: ("Mesh Metric", "Mesh Metrics"), short: [],
        scope: Mesh, kds: BOTH_WAYS, policy: true, status: false, layout: Spec, read_only: false,
        validate: specs::policy::validate::<specs::policy::MeshMetricSpec> },
    MeshProxyPatch => { plural: "meshproxypatches", singular: "meshproxypatch", display: ("Mesh Proxy Patch", "Mesh Proxy Patches"), short: ["mpp"],
        scope: Mesh, kds: BOTH_WAYS, policy: true, status: false, layout: Spec, read_only: false,
        validate: specs::policy::validate::<specs::policy::MeshProxyPatchSpec> },
    MeshPassthrough => { plural: "meshpassthroughs", singular: "meshpassthrough", display: ("Mesh Passthrough", "Mesh Passthroughs"), short: [],
        scope: Mesh, kds: BOTH_WAYS, policy: true, status: false, layout: Spec, read_only: false,
        validate: specs::policy::validate::<specs::policy::MeshPassthroughSpec> },
}

impl ResourceType {
    pub fn descriptor(self) -> &'static Descriptor {
        // The table is generated in variant order, so the discriminant indexes it.
        &DESCRIPTORS[self as usize]
    }

    pub fn all() -> impl Iterator<Item = ResourceType> {
        DESCRIPTORS.iter().map(|d| d.kind)
    }

    pub fn name(self) -> &'static str {
        self.descriptor().name
    }

    pub fn is_mesh_scoped(self) -> bool {
        self.descriptor().scope == Scope::Mesh
    }

    /// By type name as in `type: MeshTimeout`.
    pub fn from_name(name: &str) -> Option<ResourceType> {
        DESCRIPTORS.iter().find(|d| d.name == name).map(|d| d.kind)
    }

    /// By API path segment (`meshtimeouts`).
    pub fn from_plural(plural: &str) -> Option<ResourceType> {
        DESCRIPTORS
            .iter()
            .find(|d| d.plural == plural)
            .map(|d| d.kind)
    }

    /// By an API path segment: the plural (Kuma's `WsPath`) or Kuma's `AlternativeWsPath`,
    /// which Kuma's API serves the type under too.
    pub fn from_api_path(segment: &str) -> Option<ResourceType> {
        const ALTERNATIVE: [(&str, ResourceType); 2] = [
            ("global-secrets", ResourceType::GlobalSecret),
            ("zone-ingresses", ResourceType::ZoneIngress),
        ];
        Self::from_plural(segment).or_else(|| {
            ALTERNATIVE
                .iter()
                .find(|(path, _)| *path == segment)
                .map(|(_, kind)| *kind)
        })
    }

    /// By any name kumactl accepts: plural, singular, short name or type name (any case).
    pub fn from_cli_name(word: &str) -> Option<ResourceType> {
        let w = word.to_ascii_lowercase();
        DESCRIPTORS
            .iter()
            .find(|d| {
                d.plural == w
                    || d.singular == w
                    || d.short_names.contains(&w.as_str())
                    || d.name.eq_ignore_ascii_case(&w)
            })
            .map(|d| d.kind)
    }

    /// The insight that lives and dies with a resource of this type (same name and mesh).
    pub fn owned_insight(self) -> Option<ResourceType> {
        match self {
            ResourceType::Dataplane => Some(ResourceType::DataplaneInsight),
            ResourceType::Zone => Some(ResourceType::ZoneInsight),
            ResourceType::ZoneIngress => Some(ResourceType::ZoneIngressInsight),
            ResourceType::ZoneEgress => Some(ResourceType::ZoneEgressInsight),
            _ => None,
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_indexed_by_discriminant() {
        for (i, d) in DESCRIPTORS.iter().enumerate() {
            assert_eq!(d.kind as usize, i);
            assert_eq!(d.kind.descriptor().name, d.name);
        }
    }

    #[test]
    fn names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for d in DESCRIPTORS {
            for n in [d.plural, d.singular].iter().chain(d.short_names) {
                assert!(seen.insert(*n), "duplicate name {n}");
            }
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(
            ResourceType::from_cli_name("mesh"),
            Some(ResourceType::Mesh)
        );
        assert_eq!(
            ResourceType::from_cli_name("meshes"),
            Some(ResourceType::Mesh)
        );
        assert_eq!(
            ResourceType::from_cli_name("MeshTimeout"),
            Some(ResourceType::MeshTimeout)
        );
        assert_eq!(
            ResourceType::from_plural("meshretries"),
            Some(ResourceType::MeshRetry)
        );
        assert_eq!(ResourceType::from_name("nope"), None);
        assert!(
            ResourceType::Dataplane
                .descriptor()
                .has_flag(kds::ZONE_TO_GLOBAL)
        );
        assert!(
            !ResourceType::Zone
                .descriptor()
                .has_flag(kds::CONSUMED_BY_ZONE)
        );
    }
}
