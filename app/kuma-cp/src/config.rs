//! kuma-cp configuration: defaults, then a YAML file, then `KUMA_*` environment variables.
//! Env names derive from YAML paths the way Kuma's do (`apiServer.http.port` ->
//! `KUMA_API_SERVER_HTTP_PORT`), so every key has exactly one env var without a hand table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid YAML: {message}")]
    Yaml { path: String, message: String },
    #[error("invalid value for {key}: {message}")]
    Invalid { key: String, message: String },
    #[error("unknown configuration key {key}{hint}")]
    Unknown { key: String, hint: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Standalone,
    Zone,
    Global,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Standalone => "standalone",
            Mode::Zone => "zone",
            Mode::Global => "global",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreType {
    Memory,
    Postgres,
    Etcd,
    /// Replicated among the control plane's own replicas (ours; Kuma has no such store).
    Raft,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    pub mode: Mode,
    pub environment: String,
    pub store: StoreConfig,
    pub api_server: ApiServerConfig,
    pub diagnostics: DiagnosticsConfig,
    pub monitoring_assignment_server: MonitoringAssignmentServerConfig,
    pub dp_server: DpServerConfig,
    pub inter_cp: InterCpConfig,
    pub multizone: MultizoneConfig,
    pub general: GeneralConfig,
    pub defaults: DefaultsConfig,
    pub tracing: TracingConfig,
    pub metrics: MetricsConfig,
    pub multitenancy: MultitenancyConfig,
    pub ipam: IpamConfig,
    pub mesh_service: MeshServiceConfig,
    /// Kuma's keys that were set but are not implemented yet, by the name they were set under
    /// (YAML path or env variable); kuma-cp warns about each once at start-up.
    #[serde(skip)]
    pub unsupported_kuma_keys: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Standalone,
            environment: "universal".into(),
            store: StoreConfig::default(),
            api_server: ApiServerConfig::default(),
            diagnostics: DiagnosticsConfig { server_port: 5680 },
            monitoring_assignment_server: MonitoringAssignmentServerConfig::default(),
            dp_server: DpServerConfig::default(),
            inter_cp: InterCpConfig::default(),
            multizone: MultizoneConfig::default(),
            general: GeneralConfig::default(),
            defaults: DefaultsConfig::default(),
            tracing: TracingConfig::default(),
            metrics: MetricsConfig::default(),
            multitenancy: MultitenancyConfig::default(),
            ipam: IpamConfig::default(),
            mesh_service: MeshServiceConfig::default(),
            unsupported_kuma_keys: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StoreConfig {
    #[serde(rename = "type")]
    pub store_type: StoreType,
    pub postgres: PostgresStoreConfig,
    pub etcd: EtcdStoreConfig,
    pub raft: RaftStoreConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            store_type: StoreType::Memory,
            postgres: PostgresStoreConfig::default(),
            etcd: EtcdStoreConfig::default(),
            raft: RaftStoreConfig::default(),
        }
    }
}

/// `store.raft` (`KUMA_STORE_RAFT_*`): this replica's place in the replicated store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RaftStoreConfig {
    /// This replica's node id, 1 or more, unique in the cluster.
    pub node_id: u64,
    /// The initial members as `1=host:port,2=host:port,3=host:port` (raft addresses), this
    /// replica among them.
    pub peers: String,
    pub data_dir: String,
    /// The port raft's RPCs listen on (all interfaces).
    pub port: u16,
    /// Every replica of one cluster names the same id.
    pub cluster_id: String,
    /// Replicas derive their mutual TLS from this shared secret (at least 16 characters)...
    pub join_token: String,
    /// ...or read it from files (the leaf must name `kuma-raft`).
    pub tls: TlsFilesConfig,
    /// Join a running cluster through `peers` instead of forming one.
    pub join: bool,
    /// Seconds a write or a linearizable read waits for the cluster before answering 503.
    pub request_timeout: u64,
}

impl Default for RaftStoreConfig {
    fn default() -> Self {
        RaftStoreConfig {
            node_id: 0,
            peers: String::new(),
            data_dir: "/var/lib/kuma-cp/raft".into(),
            port: 5684,
            cluster_id: "kuma".into(),
            join_token: String::new(),
            tls: TlsFilesConfig::default(),
            join: false,
            request_timeout: 5,
        }
    }
}

/// Kuma's `store.postgres` block, with its defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PostgresStoreConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub db_name: String,
    /// Seconds to wait for a connection.
    pub connection_timeout: u64,
    pub max_open_connections: u32,
    pub tls: PostgresTlsConfig,
}

impl Default for PostgresStoreConfig {
    fn default() -> Self {
        PostgresStoreConfig {
            host: "127.0.0.1".into(),
            port: 15432,
            user: "kuma".into(),
            password: "kuma".into(),
            db_name: "kuma".into(),
            connection_timeout: 5,
            max_open_connections: 50,
            tls: PostgresTlsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PostgresTlsConfig {
    pub mode: String,
    pub ca_path: String,
    pub cert_path: String,
    pub key_path: String,
}

impl Default for PostgresTlsConfig {
    fn default() -> Self {
        PostgresTlsConfig {
            mode: "disable".into(),
            ca_path: String::new(),
            cert_path: String::new(),
            key_path: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EtcdStoreConfig {
    pub endpoints: Vec<String>,
    pub key_prefix: String,
    pub username: String,
    pub password: String,
    /// Seconds to wait when dialing.
    pub dial_timeout: u64,
    pub tls: TlsFilesConfig,
}

impl Default for EtcdStoreConfig {
    fn default() -> Self {
        EtcdStoreConfig {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            key_prefix: "/kuma".into(),
            username: String::new(),
            password: String::new(),
            dial_timeout: 5,
            tls: TlsFilesConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TlsFilesConfig {
    pub ca_path: String,
    pub cert_path: String,
    pub key_path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ApiServerConfig {
    pub http: ListenerConfig,
    pub https: HttpsConfig,
    pub authn: AuthnConfig,
    pub read_only: bool,
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        ApiServerConfig {
            http: ListenerConfig {
                enabled: true,
                interface: "0.0.0.0".into(),
                port: 5681,
            },
            https: HttpsConfig {
                enabled: true,
                interface: "0.0.0.0".into(),
                port: 5682,
                tls_cert_file: String::new(),
                tls_key_file: String::new(),
            },
            authn: AuthnConfig::default(),
            read_only: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerConfig {
    pub enabled: bool,
    pub interface: String,
    pub port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpsConfig {
    pub enabled: bool,
    pub interface: String,
    pub port: u16,
    pub tls_cert_file: String,
    pub tls_key_file: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AuthnConfig {
    #[serde(rename = "type")]
    pub authn_type: String,
    pub localhost_is_admin: bool,
    pub tokens: TokensConfig,
}

impl Default for AuthnConfig {
    fn default() -> Self {
        AuthnConfig {
            authn_type: "tokens".into(),
            localhost_is_admin: true,
            tokens: TokensConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TokensConfig {
    pub bootstrap_admin_token: bool,
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            bootstrap_admin_token: true,
        }
    }
}

/// `multitenancy` (ours; Kuma only has hooks for it): a global that hosts many tenants'
/// control planes behind one KDS endpoint, managed at `/v0/mesh/control-planes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MultitenancyConfig {
    pub enabled: bool,
}

/// Kuma's `tracing`: the control plane's own spans over OTLP.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TracingConfig {
    pub open_telemetry: OpenTelemetryTracingConfig,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OpenTelemetryTracingConfig {
    /// Export spans to the collector the standard `OTEL_EXPORTER_OTLP_*` variables name.
    pub enabled: bool,
    /// Kuma's deprecated way: the collector's `host:port` (OTLP/gRPC, plaintext); setting it
    /// turns tracing on.
    pub endpoint: String,
}

/// Kuma's `metrics`, of which kuma-cp reads the OpenTelemetry push (the rest is Kuma's
/// per-resource metric tuning, accepted with a warning).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub open_telemetry: OpenTelemetryMetricsConfig,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OpenTelemetryMetricsConfig {
    /// Push `/metrics` over OTLP/gRPC to the collector the standard `OTEL_EXPORTER_OTLP_*`
    /// variables name, every `OTEL_METRIC_EXPORT_INTERVAL` milliseconds (60 s by default).
    pub enabled: bool,
}

/// Kuma's `monitoringAssignmentServer` (MADS, Prometheus's service discovery): on zone and
/// standalone control planes, as in Kuma.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MonitoringAssignmentServerConfig {
    pub enabled: bool,
    pub port: u16,
    /// How long a long-polling client waits for a change when it does not say (`30s`).
    pub default_fetch_timeout: String,
}

impl Default for MonitoringAssignmentServerConfig {
    fn default() -> Self {
        MonitoringAssignmentServerConfig {
            enabled: true,
            port: 5676,
            default_fetch_timeout: "30s".into(),
        }
    }
}

impl MonitoringAssignmentServerConfig {
    pub fn default_fetch_timeout(&self) -> std::time::Duration {
        model::duration::parse_duration(&self.default_fetch_timeout)
            .unwrap_or(std::time::Duration::from_secs(30))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiagnosticsConfig {
    pub server_port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortConfig {
    pub port: u16,
}

/// Kuma's `dpServer` block: where kuma-dp bootstraps and Envoy fetches its configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DpServerConfig {
    pub port: u16,
    /// Certificate and key for the port; empty generates one, kept in the store.
    pub tls_cert_file: String,
    pub tls_key_file: String,
    pub authn: DpServerAuthnConfig,
}

impl Default for DpServerConfig {
    fn default() -> Self {
        DpServerConfig {
            port: 5678,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            authn: DpServerAuthnConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DpServerAuthnConfig {
    pub dp_proxy: DpProxyAuthnConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DpProxyAuthnConfig {
    /// `dpToken` (proxies present a dataplane token) or `none` (demos only).
    #[serde(rename = "type")]
    pub auth_type: String,
}

impl Default for DpProxyAuthnConfig {
    fn default() -> Self {
        DpProxyAuthnConfig {
            auth_type: "dpToken".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct InterCpConfig {
    pub server: PortConfig,
    pub catalog: CatalogConfig,
}

impl Default for InterCpConfig {
    fn default() -> Self {
        InterCpConfig {
            server: PortConfig { port: 5683 },
            catalog: CatalogConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// The address other replicas reach this one on; empty picks the primary interface's.
    pub instance_address: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MultizoneConfig {
    pub global: GlobalConfig,
    pub zone: ZoneConfig,
}

impl Default for MultizoneConfig {
    fn default() -> Self {
        MultizoneConfig {
            global: GlobalConfig {
                kds: GlobalKdsConfig::default(),
            },
            zone: ZoneConfig {
                name: "default".into(),
                global_address: String::new(),
                kds: ZoneKdsConfig::default(),
                disable_origin_label_validation: false,
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalConfig {
    pub kds: GlobalKdsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalKdsConfig {
    pub grpc_port: u16,
    /// Largest KDS message in bytes, both directions.
    pub max_msg_size: usize,
    pub tls_enabled: bool,
    pub tls_cert_file: String,
    pub tls_key_file: String,
    #[serde(default)]
    pub auth: GlobalKdsAuthConfig,
}

impl Default for GlobalKdsConfig {
    fn default() -> Self {
        GlobalKdsConfig {
            grpc_port: 5685,
            max_msg_size: 10 * 1024 * 1024,
            tls_enabled: true,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            auth: GlobalKdsAuthConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GlobalKdsAuthConfig {
    /// `zoneToken` (zones must present a token global issued) or `none`.
    #[serde(rename = "type")]
    pub auth_type: String,
}

impl Default for GlobalKdsAuthConfig {
    fn default() -> Self {
        GlobalKdsAuthConfig {
            auth_type: "zoneToken".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneConfig {
    pub name: String,
    pub global_address: String,
    pub kds: ZoneKdsConfig,
    /// Kuma's switch for the check that a federated zone's own policies are labelled
    /// `kuma.io/origin: zone` when written.
    #[serde(default)]
    pub disable_origin_label_validation: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ZoneKdsConfig {
    /// CA that signed global's KDS certificate, for `grpcs://` addresses.
    pub root_ca_file: String,
    pub tls_skip_verify: bool,
    pub auth: ZoneKdsAuthConfig,
    /// Forward proxy to dial global through (`http://[user:password@]host:port`, HTTP
    /// CONNECT); empty: `HTTPS_PROXY` / `NO_PROXY` from the environment, as gRPC reads them.
    pub proxy_url: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ZoneKdsAuthConfig {
    /// File holding the zone token global issued (`kumactl generate zone-token`).
    pub cp_token_path: String,
    /// The token itself, for environments where a file is awkward.
    pub cp_token_inline: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GeneralConfig {
    pub work_dir: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DefaultsConfig {
    pub skip_mesh_creation: bool,
    /// Kuma's default HostnameGenerators (`local-universal-mesh-service`, ...) are not created.
    pub skip_hostname_generators: bool,
}

/// Kuma's `ipam` block: where VIPs come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IpamConfig {
    pub mesh_service: CidrConfig,
    pub mesh_external_service: CidrConfig,
    pub mesh_multi_zone_service: CidrConfig,
}

impl Default for IpamConfig {
    fn default() -> Self {
        let cidr = |c: &str| CidrConfig { cidr: c.into() };
        IpamConfig {
            mesh_service: cidr("241.0.0.0/8"),
            mesh_external_service: cidr("242.0.0.0/8"),
            mesh_multi_zone_service: cidr("243.0.0.0/8"),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CidrConfig {
    pub cidr: String,
}

/// Kuma's `meshService` block.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MeshServiceConfig {
    /// Kuma's generation timer. MeshServices follow Dataplanes as they change here, so the
    /// only meaning left is Kuma's: `0s` turns generation off.
    pub generation_interval: String,
    /// How long a generated MeshService stays after its last Dataplane went away.
    pub deletion_grace_period: String,
}

impl Default for MeshServiceConfig {
    fn default() -> Self {
        MeshServiceConfig {
            generation_interval: "2s".into(),
            deletion_grace_period: "1h".into(),
        }
    }
}

impl MeshServiceConfig {
    pub fn generation_enabled(&self) -> bool {
        model::duration::parse_duration(&self.generation_interval).is_ok_and(|d| !d.is_zero())
    }

    pub fn deletion_grace_period(&self) -> std::time::Duration {
        model::duration::parse_duration(&self.deletion_grace_period)
            .unwrap_or(std::time::Duration::from_secs(3600))
    }
}

/// Env names that mean the same as a derived one (the issue tracker's and older spellings).
const ENV_ALIASES: &[(&str, &str)] = &[(
    "KUMA_DEFAULTS_SKIP_MESH",
    "KUMA_DEFAULTS_SKIP_MESH_CREATION",
)];

/// Kuma's own configuration keys: a Kuma user's file or environment must never stop kuma-cp.
const KUMA_KEYS: &str = include_str!("kuma-cp-keys.txt");

/// One of Kuma's configuration keys: its YAML path, its env variable and Kuma's default.
struct KumaKey {
    path: &'static str,
    env: &'static str,
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "the tests load Kuma's defaults as a Kuma user's file"
        )
    )]
    default: &'static str,
}

fn kuma_keys() -> impl Iterator<Item = KumaKey> {
    KUMA_KEYS
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut parts = l.splitn(3, ' ');
            Some(KumaKey {
                path: parts.next()?,
                env: parts.next()?,
                default: parts.next().unwrap_or(""),
            })
        })
}

/// Where a key of a user's file stands against ours and Kuma's.
enum KeyStanding {
    /// kuma-cp reads it (or something below it).
    Ours,
    /// Kuma's key that kuma-cp does not implement yet: accepted, warned about, dropped.
    KumaOnly,
    /// Neither ours nor Kuma's leaf, but above some of Kuma's keys: look inside.
    KumaSection,
    Unknown,
}

fn standing(path: &str, ours: &BTreeMap<String, (Vec<String>, Value)>) -> KeyStanding {
    let below = format!("{path}.");
    let ours_has = ours.values().any(|(segs, _)| {
        let joined = segs.join(".");
        joined == path || joined.starts_with(&below)
    });
    if ours_has {
        KeyStanding::Ours
    } else if kuma_keys().any(|k| k.path == path) {
        KeyStanding::KumaOnly
    } else if kuma_keys().any(|k| k.path.starts_with(&below)) {
        KeyStanding::KumaSection
    } else {
        KeyStanding::Unknown
    }
}

/// Drops Kuma's keys that kuma-cp does not implement from a user's file (recording them), and
/// refuses keys neither has, with the closest known key as a hint.
fn sift_file_keys(
    doc: &mut Value,
    prefix: &str,
    ours: &BTreeMap<String, (Vec<String>, Value)>,
    unsupported: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let Value::Object(map) = doc else {
        return Ok(());
    };
    let mut dropped = Vec::new();
    for (key, child) in map.iter_mut() {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let standing = standing(&path, ours);
        match standing {
            KeyStanding::Ours | KeyStanding::KumaSection if child.is_object() => {
                sift_file_keys(child, &path, ours, unsupported)?;
                if matches!(standing, KeyStanding::KumaSection) {
                    dropped.push(key.clone());
                }
            }
            KeyStanding::Ours => {}
            KeyStanding::KumaOnly => {
                unsupported.push(path);
                dropped.push(key.clone());
            }
            KeyStanding::KumaSection | KeyStanding::Unknown => {
                let known = ours
                    .values()
                    .map(|(segs, _)| segs.join("."))
                    .chain(kuma_keys().map(|k| k.path.to_string()))
                    .collect::<Vec<_>>();
                let hint = closest(&path, known.iter())
                    .map(|k| format!(" (did you mean {k}?)"))
                    .unwrap_or_default();
                return Err(ConfigError::Unknown { key: path, hint });
            }
        }
    }
    for key in dropped {
        map.remove(&key);
    }
    Ok(())
}

/// `KUMA_*` variables that belong to other programs (kuma-dp, kumactl) or are read outside the
/// configuration (the log filter, before the configuration is loaded), and are ignored here.
const FOREIGN_ENV_PREFIXES: &[&str] = &[
    "KUMA_LOG_LEVEL_FILTER",
    "KUMA_CONTROL_PLANE_",
    "KUMA_DATAPLANE",
    "KUMA_DNS_",
    "KUMACTL_",
];

/// Keys whose values never leave the process (shown as `*****` in `/config`).
const SECRET_KEYS: &[&str] = &["password", "token", "key", "tokeninline"];

fn env_name(path: &[String]) -> String {
    let mut out = String::from("KUMA");
    for seg in path {
        out.push('_');
        for (i, c) in seg.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_uppercase());
        }
    }
    out
}

/// Every leaf of the defaults, by env name: (YAML path, default value).
fn env_table() -> BTreeMap<String, (Vec<String>, Value)> {
    fn walk(v: &Value, path: &mut Vec<String>, out: &mut BTreeMap<String, (Vec<String>, Value)>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    path.push(k.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            leaf => {
                out.insert(env_name(path), (path.clone(), leaf.clone()));
            }
        }
    }
    let mut out = BTreeMap::new();
    let defaults = serde_json::to_value(Config::default()).unwrap_or(Value::Null);
    walk(&defaults, &mut Vec::new(), &mut out);
    out
}

fn parse_env_value(raw: &str, like: &Value) -> Result<Value, String> {
    match like {
        Value::Bool(_) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(Value::Bool(true)),
            "false" | "0" | "no" | "" => Ok(Value::Bool(false)),
            other => Err(format!("expected true or false, got {other:?}")),
        },
        Value::Number(_) => raw
            .trim()
            .parse::<u64>()
            .map(Value::from)
            .map_err(|_| format!("expected a non-negative whole number, got {raw:?}")),
        Value::Array(_) => Ok(Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.into()))
                .collect(),
        )),
        _ => Ok(Value::String(raw.to_string())),
    }
}

fn set_path(root: &mut Value, path: &[String], value: Value) {
    let mut cur = root;
    for seg in path {
        if !cur.is_object() {
            *cur = Value::Object(Default::default());
        }
        let Value::Object(map) = cur else { return };
        cur = map.entry(seg.clone()).or_insert(Value::Null);
    }
    *cur = value;
}

impl Config {
    /// Loads defaults <- file <- env. `env` is passed in so tests need not touch the process env.
    pub fn load(file: Option<&str>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut doc =
            serde_json::to_value(Config::default()).map_err(|e| ConfigError::Invalid {
                key: "<defaults>".into(),
                message: e.to_string(),
            })?;
        let table = env_table();
        let mut unsupported = Vec::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_string(),
                source,
            })?;
            let from_file: Value =
                serde_saphyr::from_str(&text).map_err(|e| ConfigError::Yaml {
                    path: path.to_string(),
                    message: e.to_string(),
                })?;
            let mut from_file = from_file;
            sift_file_keys(&mut from_file, "", &table, &mut unsupported)?;
            merge(&mut doc, from_file);
        }
        for (name, raw) in env {
            if !name.starts_with("KUMA_") {
                continue;
            }
            let canonical = ENV_ALIASES
                .iter()
                .find(|(a, _)| a == name)
                .map(|(_, c)| c.to_string())
                .or_else(|| {
                    // Kuma's env name for a key we read under another name (Kuma's env names do
                    // not always follow the YAML path).
                    let kuma = kuma_keys().find(|k| k.env == name)?;
                    let derived =
                        env_name(&kuma.path.split('.').map(String::from).collect::<Vec<_>>());
                    table.contains_key(&derived).then_some(derived)
                })
                .unwrap_or_else(|| name.clone());
            match table.get(&canonical) {
                Some((path, like)) => {
                    let value =
                        parse_env_value(raw, like).map_err(|message| ConfigError::Invalid {
                            key: name.clone(),
                            message,
                        })?;
                    set_path(&mut doc, path, value);
                }
                None if kuma_keys().any(|k| k.env == name) => unsupported.push(name.clone()),
                None if FOREIGN_ENV_PREFIXES.iter().any(|p| name.starts_with(p)) => {}
                None => {
                    let known = table
                        .keys()
                        .cloned()
                        .chain(kuma_keys().map(|k| k.env.to_string()))
                        .collect::<Vec<_>>();
                    let hint = closest(&canonical, known.iter())
                        .map(|k| format!(" (did you mean {k}?)"))
                        .unwrap_or_default();
                    return Err(ConfigError::Unknown {
                        key: name.clone(),
                        hint,
                    });
                }
            }
        }
        let config: Config = serde_path_to_error::deserialize(doc).map_err(|e| {
            let path = e.path().to_string();
            let key = format!(
                "{path} ({})",
                env_name(&path.split('.').map(String::from).collect::<Vec<_>>())
            );
            let message = e.inner().to_string();
            if message.starts_with("unknown field") {
                ConfigError::Unknown {
                    key: path,
                    hint: format!(": {message}"),
                }
            } else {
                ConfigError::Invalid { key, message }
            }
        })?;
        config.validate()?;
        Ok(Config {
            unsupported_kuma_keys: unsupported,
            ..config
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                message: message.into(),
            })
        };
        let https = &self.api_server.https;
        if https.tls_cert_file.is_empty() != https.tls_key_file.is_empty() {
            return invalid(
                "apiServer.https.tlsCertFile (KUMA_API_SERVER_HTTPS_TLS_CERT_FILE)",
                "tlsCertFile and tlsKeyFile have to be specified together",
            );
        }
        for (key, iface) in [
            (
                "apiServer.http.interface (KUMA_API_SERVER_HTTP_INTERFACE)",
                &self.api_server.http.interface,
            ),
            (
                "apiServer.https.interface (KUMA_API_SERVER_HTTPS_INTERFACE)",
                &https.interface,
            ),
        ] {
            if iface.parse::<std::net::IpAddr>().is_err() {
                return invalid(
                    key,
                    "must be an IP address to listen on, e.g. 0.0.0.0 or 127.0.0.1",
                );
            }
        }
        if self.multitenancy.enabled && self.mode != Mode::Global {
            return invalid(
                "multitenancy.enabled (KUMA_MULTITENANCY_ENABLED)",
                "a hosted manager is a global control plane: set mode global (KUMA_MODE=global)",
            );
        }
        if self.multitenancy.enabled && self.multizone.global.kds.auth.auth_type != "zoneToken" {
            return invalid(
                "multizone.global.kds.auth.type (KUMA_MULTIZONE_GLOBAL_KDS_AUTH_TYPE)",
                "a hosted manager tells its control planes' zones apart by their zone tokens: it must be zoneToken",
            );
        }
        if self.api_server.authn.authn_type != "tokens" {
            return invalid(
                "apiServer.authn.type (KUMA_API_SERVER_AUTHN_TYPE)",
                "only \"tokens\" is supported",
            );
        }
        self.validate_store()?;
        for (key, cidr) in [
            (
                "ipam.meshService.cidr (KUMA_IPAM_MESH_SERVICE_CIDR)",
                &self.ipam.mesh_service.cidr,
            ),
            (
                "ipam.meshExternalService.cidr (KUMA_IPAM_MESH_EXTERNAL_SERVICE_CIDR)",
                &self.ipam.mesh_external_service.cidr,
            ),
            (
                "ipam.meshMultiZoneService.cidr (KUMA_IPAM_MESH_MULTI_ZONE_SERVICE_CIDR)",
                &self.ipam.mesh_multi_zone_service.cidr,
            ),
        ] {
            if let Err(e) = zone::services::ipam::Pool::new(cidr) {
                return invalid(key, &e.to_string());
            }
        }
        for (key, value) in [
            (
                "meshService.generationInterval (KUMA_MESH_SERVICE_GENERATION_INTERVAL)",
                &self.mesh_service.generation_interval,
            ),
            (
                "meshService.deletionGracePeriod (KUMA_MESH_SERVICE_DELETION_GRACE_PERIOD)",
                &self.mesh_service.deletion_grace_period,
            ),
        ] {
            if let Err(e) = model::duration::parse_duration(value) {
                return invalid(key, &e.to_string());
            }
        }
        if let Err(e) = model::duration::parse_duration(
            &self.monitoring_assignment_server.default_fetch_timeout,
        ) {
            return invalid(
                "monitoringAssignmentServer.defaultFetchTimeout (KUMA_MONITORING_ASSIGNMENT_SERVER_DEFAULT_FETCH_TIMEOUT)",
                &e.to_string(),
            );
        }
        let dp = &self.dp_server;
        if dp.tls_cert_file.is_empty() != dp.tls_key_file.is_empty() {
            return invalid(
                "dpServer.tlsCertFile (KUMA_DP_SERVER_TLS_CERT_FILE)",
                "tlsCertFile and tlsKeyFile have to be specified together",
            );
        }
        // Empty, as in Kuma's defaults, is the environment's default: dpToken on universal.
        if !matches!(
            dp.authn.dp_proxy.auth_type.as_str(),
            "" | "dpToken" | "none"
        ) {
            return invalid(
                "dpServer.authn.dpProxy.type (KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE)",
                "must be \"dpToken\" or \"none\"",
            );
        }
        if self.mode == Mode::Zone {
            if let Some(reason) = model::name::name_violation(&self.multizone.zone.name) {
                return invalid("multizone.zone.name (KUMA_MULTIZONE_ZONE_NAME)", &reason);
            }
            let address = &self.multizone.zone.global_address;
            if !(address.is_empty()
                || address.starts_with("grpc://")
                || address.starts_with("grpcs://"))
            {
                return invalid(
                    "multizone.zone.globalAddress (KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS)",
                    "must be grpcs://host:port (or grpc://host:port without TLS)",
                );
            }
            let auth = &self.multizone.zone.kds.auth;
            if !auth.cp_token_path.is_empty() && !auth.cp_token_inline.is_empty() {
                return invalid(
                    "multizone.zone.kds.auth.cpTokenInline (KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_INLINE)",
                    "give the zone token either inline or as cpTokenPath, not both",
                );
            }
            // Without rootCaFile a grpcs:// global is verified against the host's trust store,
            // as Kuma does: a hosted manager's certificate is publicly signed.
            let proxy_url = &self.multizone.zone.kds.proxy_url;
            if !proxy_url.is_empty()
                && let Err(e) = zone::kds_dial::ForwardProxy::parse(
                    "multizone.zone.kds.proxyUrl (KUMA_MULTIZONE_ZONE_KDS_PROXY_URL)",
                    proxy_url,
                )
            {
                return invalid(
                    "multizone.zone.kds.proxyUrl (KUMA_MULTIZONE_ZONE_KDS_PROXY_URL)",
                    &model::error_chain(&e),
                );
            }
        }
        if self.mode == Mode::Global {
            let kds = &self.multizone.global.kds;
            if kds.tls_cert_file.is_empty() != kds.tls_key_file.is_empty() {
                return invalid(
                    "multizone.global.kds.tlsCertFile (KUMA_MULTIZONE_GLOBAL_KDS_TLS_CERT_FILE)",
                    "tlsCertFile and tlsKeyFile have to be specified together",
                );
            }
            if !matches!(kds.auth.auth_type.as_str(), "zoneToken" | "none") {
                return invalid(
                    "multizone.global.kds.auth.type (KUMA_MULTIZONE_GLOBAL_KDS_AUTH_TYPE)",
                    "must be \"zoneToken\" or \"none\"",
                );
            }
            if kds.max_msg_size < 64 * 1024 {
                return invalid(
                    "multizone.global.kds.maxMsgSize (KUMA_MULTIZONE_GLOBAL_KDS_MAX_MSG_SIZE)",
                    "must be at least 65536",
                );
            }
        }
        Ok(())
    }

    fn validate_store(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| {
            Err(ConfigError::Invalid {
                key: key.into(),
                message,
            })
        };
        match self.store.store_type {
            StoreType::Memory => Ok(()),
            StoreType::Etcd if !cfg!(feature = "etcd") => invalid(
                "store.type (KUMA_STORE_TYPE)",
                "this kuma-cp was built without etcd support (cargo feature \"etcd\")".into(),
            ),
            StoreType::Etcd => {
                let etcd = &self.store.etcd;
                if etcd.endpoints.is_empty() {
                    return invalid(
                        "store.etcd.endpoints (KUMA_STORE_ETCD_ENDPOINTS)",
                        "at least one endpoint is needed".into(),
                    );
                }
                for (key, path) in [
                    (
                        "store.etcd.tls.caPath (KUMA_STORE_ETCD_TLS_CA_PATH)",
                        &etcd.tls.ca_path,
                    ),
                    (
                        "store.etcd.tls.certPath (KUMA_STORE_ETCD_TLS_CERT_PATH)",
                        &etcd.tls.cert_path,
                    ),
                    (
                        "store.etcd.tls.keyPath (KUMA_STORE_ETCD_TLS_KEY_PATH)",
                        &etcd.tls.key_path,
                    ),
                ] {
                    if !path.is_empty() && !std::path::Path::new(path).is_file() {
                        return invalid(key, format!("file {path:?} does not exist"));
                    }
                }
                if etcd.tls.cert_path.is_empty() != etcd.tls.key_path.is_empty() {
                    return invalid(
                        "store.etcd.tls.certPath (KUMA_STORE_ETCD_TLS_CERT_PATH)",
                        "certPath and keyPath go together".into(),
                    );
                }
                Ok(())
            }
            StoreType::Raft => self.raft().map(|_| ()),
            StoreType::Postgres => {
                let pg = &self.store.postgres;
                let mode: store::postgres::TlsMode =
                    pg.tls
                        .mode
                        .parse()
                        .map_err(|message| ConfigError::Invalid {
                            key: "store.postgres.tls.mode (KUMA_STORE_POSTGRES_TLS_MODE)".into(),
                            message,
                        })?;
                use store::postgres::TlsMode;
                if matches!(mode, TlsMode::VerifyCa | TlsMode::VerifyFull)
                    && pg.tls.ca_path.is_empty()
                {
                    return invalid(
                        "store.postgres.tls.caPath (KUMA_STORE_POSTGRES_TLS_CA_PATH)",
                        format!(
                            "tls mode {} needs the CA certificate that signed the server's",
                            pg.tls.mode
                        ),
                    );
                }
                for (key, path) in [
                    (
                        "store.postgres.tls.caPath (KUMA_STORE_POSTGRES_TLS_CA_PATH)",
                        &pg.tls.ca_path,
                    ),
                    (
                        "store.postgres.tls.certPath (KUMA_STORE_POSTGRES_TLS_CERT_PATH)",
                        &pg.tls.cert_path,
                    ),
                    (
                        "store.postgres.tls.keyPath (KUMA_STORE_POSTGRES_TLS_KEY_PATH)",
                        &pg.tls.key_path,
                    ),
                ] {
                    if !path.is_empty() && !std::path::Path::new(path).is_file() {
                        return invalid(key, format!("file {path:?} does not exist"));
                    }
                }
                if pg.tls.cert_path.is_empty() != pg.tls.key_path.is_empty() {
                    return invalid(
                        "store.postgres.tls.certPath (KUMA_STORE_POSTGRES_TLS_CERT_PATH)",
                        "certPath and keyPath go together".into(),
                    );
                }
                if mode == TlsMode::Disable && !pg.tls.cert_path.is_empty() {
                    return invalid(
                        "store.postgres.tls.mode (KUMA_STORE_POSTGRES_TLS_MODE)",
                        "a client certificate is set but TLS is disabled".into(),
                    );
                }
                if pg.max_open_connections < 2 {
                    return invalid(
                        "store.postgres.maxOpenConnections (KUMA_STORE_POSTGRES_MAX_OPEN_CONNECTIONS)",
                        "must be at least 2".into(),
                    );
                }
                Ok(())
            }
        }
    }

    /// The Postgres settings for the store crate; only call after validation.
    pub fn postgres(&self) -> store::postgres::PostgresConfig {
        let pg = &self.store.postgres;
        let opt = |p: &str| (!p.is_empty()).then(|| std::path::PathBuf::from(p));
        store::postgres::PostgresConfig {
            host: pg.host.clone(),
            port: pg.port,
            user: pg.user.clone(),
            password: pg.password.clone(),
            db_name: pg.db_name.clone(),
            connection_timeout: std::time::Duration::from_secs(pg.connection_timeout.max(1)),
            max_open_connections: pg.max_open_connections,
            tls_mode: pg
                .tls
                .mode
                .parse()
                .unwrap_or(store::postgres::TlsMode::Disable),
            tls_ca_path: opt(&pg.tls.ca_path),
            tls_cert_path: opt(&pg.tls.cert_path),
            tls_key_path: opt(&pg.tls.key_path),
        }
    }

    /// The etcd settings for the store crate; only call after validation.
    #[cfg(feature = "etcd")]
    pub fn etcd(&self) -> store::etcd::EtcdConfig {
        let e = &self.store.etcd;
        let opt = |p: &str| (!p.is_empty()).then(|| p.to_string());
        store::etcd::EtcdConfig {
            endpoints: e.endpoints.clone(),
            key_prefix: e.key_prefix.clone(),
            username: opt(&e.username),
            password: opt(&e.password),
            ca_cert_path: opt(&e.tls.ca_path),
            client_cert_path: opt(&e.tls.cert_path),
            client_key_path: opt(&e.tls.key_path),
            dial_timeout: std::time::Duration::from_secs(e.dial_timeout.max(1)),
            ..store::etcd::EtcdConfig::default()
        }
    }

    /// The raft store's settings, checked.
    pub fn raft(&self) -> Result<store::raft::RaftConfig, ConfigError> {
        let r = &self.store.raft;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        if r.node_id == 0 {
            return Err(invalid(
                "store.raft.nodeId (KUMA_STORE_RAFT_NODE_ID)",
                "a node id of 1 or more is needed".into(),
            ));
        }
        let peers = store::raft::RaftConfig::parse_peers(&r.peers)
            .map_err(|m| invalid("store.raft.peers (KUMA_STORE_RAFT_PEERS)", m))?;
        if !peers.contains_key(&r.node_id) {
            return Err(invalid(
                "store.raft.peers (KUMA_STORE_RAFT_PEERS)",
                format!(
                    "it must list this replica (node {}) with its own raft address",
                    r.node_id
                ),
            ));
        }
        if let Some(port) = peers[&r.node_id]
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            && port != r.port
        {
            return Err(invalid(
                "store.raft.port (KUMA_STORE_RAFT_PORT)",
                format!(
                    "it is {} but store.raft.peers gives this replica (node {}) port {port}: the others could not reach it",
                    r.port, r.node_id
                ),
            ));
        }
        if peers.contains_key(&0) {
            return Err(invalid(
                "store.raft.peers (KUMA_STORE_RAFT_PEERS)",
                "node ids start at 1".into(),
            ));
        }
        if r.cluster_id.is_empty() || !r.cluster_id.chars().all(|c| c.is_ascii_graphic()) {
            return Err(invalid(
                "store.raft.clusterId (KUMA_STORE_RAFT_CLUSTER_ID)",
                "it must be printable ASCII without spaces".into(),
            ));
        }
        if r.data_dir.is_empty() {
            return Err(invalid(
                "store.raft.dataDir (KUMA_STORE_RAFT_DATA_DIR)",
                "a directory is needed".into(),
            ));
        }
        let files = [&r.tls.ca_path, &r.tls.cert_path, &r.tls.key_path];
        let tls = match (r.join_token.is_empty(), files.iter().all(|f| f.is_empty())) {
            (false, true) if r.join_token.len() < 16 => {
                return Err(invalid(
                    "store.raft.joinToken (KUMA_STORE_RAFT_JOIN_TOKEN)",
                    "it must be at least 16 characters".into(),
                ));
            }
            (false, true) => store::raft::RaftTls::JoinToken(r.join_token.clone()),
            (true, false) => {
                if let Some(missing) = [
                    (
                        "store.raft.tls.caPath (KUMA_STORE_RAFT_TLS_CA_PATH)",
                        &r.tls.ca_path,
                    ),
                    (
                        "store.raft.tls.certPath (KUMA_STORE_RAFT_TLS_CERT_PATH)",
                        &r.tls.cert_path,
                    ),
                    (
                        "store.raft.tls.keyPath (KUMA_STORE_RAFT_TLS_KEY_PATH)",
                        &r.tls.key_path,
                    ),
                ]
                .into_iter()
                .find(|(_, p)| !std::path::Path::new(p.as_str()).is_file())
                {
                    return Err(invalid(
                        missing.0,
                        format!(
                            "file {:?} does not exist (caPath, certPath and keyPath go together)",
                            missing.1
                        ),
                    ));
                }
                store::raft::RaftTls::Files {
                    ca: r.tls.ca_path.clone().into(),
                    cert: r.tls.cert_path.clone().into(),
                    key: r.tls.key_path.clone().into(),
                }
            }
            (false, false) => {
                return Err(invalid(
                    "store.raft.joinToken (KUMA_STORE_RAFT_JOIN_TOKEN)",
                    "give either a join token or TLS files, not both".into(),
                ));
            }
            (true, true) => {
                return Err(invalid(
                    "store.raft.joinToken (KUMA_STORE_RAFT_JOIN_TOKEN)",
                    "replicas authenticate each other with mutual TLS: give a join token shared by all replicas, or store.raft.tls.* files".into(),
                ));
            }
        };
        let mut config = store::raft::RaftConfig::new(r.node_id, peers, r.data_dir.clone().into());
        config.listen = std::net::SocketAddr::from(([0, 0, 0, 0], r.port));
        config.cluster_id = r.cluster_id.clone();
        config.tls = tls;
        config.join = r.join;
        config.request_timeout = std::time::Duration::from_secs(r.request_timeout.max(1));
        Ok(config)
    }

    /// The configuration as `/config` shows it: secrets replaced.
    pub fn redacted(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        redact(&mut v);
        v
    }
}

fn redact(v: &mut Value) {
    if let Value::Object(map) = v {
        for (k, child) in map.iter_mut() {
            let lower = k.to_ascii_lowercase();
            if child.is_string() && SECRET_KEYS.iter().any(|s| lower.ends_with(s)) && child != "" {
                *child = Value::String("*****".into());
            } else if lower == "proxyurl"
                && let Some(url) = child.as_str().filter(|u| !u.is_empty())
            {
                // Which proxy is worth showing; its credentials are not.
                *child = Value::String(
                    zone::kds_dial::ForwardProxy::parse("proxyUrl", url)
                        .map(|p| p.to_string())
                        .unwrap_or_else(|_| "*****".into()),
                );
            } else {
                redact(child);
            }
        }
    }
}

fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    // `key:` with nothing after it keeps the default, as in Kuma's own file.
                    Some(_) if v.is_null() => {}
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) if !o.is_null() => *b = o,
        _ => {}
    }
}

/// The known key with the longest common prefix, to suggest on a typo.
fn closest<'a>(name: &str, keys: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    keys.map(|k| {
        (
            k.chars()
                .zip(name.chars())
                .take_while(|(a, b)| a == b)
                .count(),
            k,
        )
    })
    .filter(|(n, _)| *n > 8)
    .max_by_key(|(n, _)| *n)
    .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_kuma_ports() {
        let c = Config::load(None, &[]).unwrap();
        assert_eq!(c.mode, Mode::Standalone);
        assert_eq!(c.api_server.http.port, 5681);
        assert_eq!(c.api_server.https.port, 5682);
        assert_eq!(c.diagnostics.server_port, 5680);
        assert_eq!(c.dp_server.port, 5678);
        assert_eq!(c.inter_cp.server.port, 5683);
        assert_eq!(c.multizone.global.kds.grpc_port, 5685);
    }

    #[test]
    fn multitenancy_needs_a_global_with_zone_tokens() {
        let load = |pairs: &[(&str, &str)]| Config::load(None, &env(pairs));
        let c = load(&[
            ("KUMA_MODE", "global"),
            ("KUMA_MULTITENANCY_ENABLED", "true"),
        ])
        .unwrap();
        assert!(c.multitenancy.enabled);
        let err = load(&[("KUMA_MULTITENANCY_ENABLED", "true")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("KUMA_MULTITENANCY_ENABLED"), "{err}");
        let err = load(&[
            ("KUMA_MODE", "global"),
            ("KUMA_MULTITENANCY_ENABLED", "true"),
            ("KUMA_MULTIZONE_GLOBAL_KDS_AUTH_TYPE", "none"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("KUMA_MULTIZONE_GLOBAL_KDS_AUTH_TYPE"), "{err}");
    }

    #[test]
    fn zone_settings_are_checked_and_the_inline_token_never_shown() {
        let zone = |extra: &[(&str, &str)]| {
            let mut e = env(&[
                ("KUMA_MODE", "zone"),
                ("KUMA_MULTIZONE_ZONE_NAME", "zone-1"),
                ("KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS", "grpcs://global:5685"),
            ]);
            e.extend(env(extra));
            Config::load(None, &e)
        };
        // No CA: the host's trust store verifies global.
        zone(&[]).unwrap();
        let err = zone(&[("KUMA_MULTIZONE_ZONE_KDS_PROXY_URL", "socks5://proxy:1080")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("KUMA_MULTIZONE_ZONE_KDS_PROXY_URL") && err.contains("http://"),
            "{err}"
        );
        let c = zone(&[(
            "KUMA_MULTIZONE_ZONE_KDS_PROXY_URL",
            "http://zone:hunter2@proxy:3128",
        )])
        .unwrap();
        assert_eq!(
            c.redacted()["multizone"]["zone"]["kds"]["proxyUrl"],
            "http://proxy:3128"
        );
        let c = zone(&[
            ("KUMA_MULTIZONE_ZONE_KDS_TLS_SKIP_VERIFY", "true"),
            ("KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_INLINE", "eyJsecret"),
        ])
        .unwrap();
        assert_eq!(
            c.redacted()["multizone"]["zone"]["kds"]["auth"]["cpTokenInline"],
            "*****"
        );
        let err = zone(&[
            ("KUMA_MULTIZONE_ZONE_KDS_TLS_SKIP_VERIFY", "true"),
            ("KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_INLINE", "a"),
            ("KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_PATH", "/b"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("not both"), "{err}");
        let err = Config::load(
            None,
            &env(&[
                ("KUMA_MODE", "global"),
                ("KUMA_MULTIZONE_GLOBAL_KDS_AUTH_TYPE", "cpToken"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("zoneToken"), "{err}");
    }

    #[test]
    fn env_names_follow_kuma() {
        let t = env_table();
        for name in [
            "KUMA_API_SERVER_HTTP_PORT",
            "KUMA_API_SERVER_HTTPS_PORT",
            "KUMA_DIAGNOSTICS_SERVER_PORT",
            "KUMA_DP_SERVER_PORT",
            "KUMA_INTER_CP_SERVER_PORT",
            "KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT",
            "KUMA_MULTIZONE_GLOBAL_KDS_AUTH_TYPE",
            "KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_PATH",
            "KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_INLINE",
            "KUMA_MULTIZONE_ZONE_KDS_TLS_SKIP_VERIFY",
            "KUMA_GENERAL_WORK_DIR",
            "KUMA_STORE_TYPE",
            "KUMA_MODE",
            "KUMA_DEFAULTS_SKIP_MESH_CREATION",
            "KUMA_API_SERVER_AUTHN_LOCALHOST_IS_ADMIN",
            "KUMA_MULTIZONE_ZONE_NAME",
        ] {
            assert!(t.contains_key(name), "{name} missing");
        }
    }

    #[test]
    fn env_overrides_file_and_aliases_work() {
        let dir = std::env::temp_dir().join(format!("kcp-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.yaml");
        std::fs::write(
            &file,
            "apiServer:\n  http:\n    port: 1000\ndiagnostics:\n  serverPort: 2000\n",
        )
        .unwrap();
        let c = Config::load(
            Some(file.to_str().unwrap()),
            &env(&[
                ("KUMA_API_SERVER_HTTP_PORT", "3000"),
                ("KUMA_DEFAULTS_SKIP_MESH", "true"),
                ("KUMA_LOG_LEVEL_FILTER", "info,kds=debug"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.api_server.http.port, 3000);
        assert_eq!(c.diagnostics.server_port, 2000);
        assert!(c.defaults.skip_mesh_creation);
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Config::load(None, &env(&[("KUMA_API_SERVER_HTTP_PORT", "http")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("KUMA_API_SERVER_HTTP_PORT"), "{e}");
        let e = Config::load(None, &env(&[("KUMA_API_SERVER_HTTP_PORT", "70000")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("KUMA_API_SERVER_HTTP_PORT"), "{e}");
        let e = Config::load(None, &env(&[("KUMA_IPAM_MESH_SERVICE_CIDR", "241.0.0.0")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("KUMA_IPAM_MESH_SERVICE_CIDR") && e.contains("no /prefix length"),
            "{e}"
        );
        let e = Config::load(
            None,
            &env(&[("KUMA_MESH_SERVICE_DELETION_GRACE_PERIOD", "soon")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("KUMA_MESH_SERVICE_DELETION_GRACE_PERIOD"), "{e}");
        let c = Config::load(
            None,
            &env(&[("KUMA_MESH_SERVICE_GENERATION_INTERVAL", "0s")]),
        )
        .unwrap();
        assert!(
            !c.mesh_service.generation_enabled(),
            "Kuma's 0s turns generation off"
        );
        let e = Config::load(None, &env(&[("KUMA_MODE", "galactic")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("KUMA_MODE"), "{e}");
        let e = Config::load(None, &env(&[("KUMA_API_SERVER_HTTP_PROT", "1")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("KUMA_API_SERVER_HTTP_PROT")
                && e.contains("did you mean KUMA_API_SERVER_HTTP_PORT"),
            "{e}"
        );
    }

    #[test]
    fn unknown_file_keys_fail() {
        let dir = std::env::temp_dir().join(format!("kcp-config-u-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.yaml");
        std::fs::write(&file, "apiServer:\n  htp:\n    port: 1000\n").unwrap();
        let e = Config::load(Some(file.to_str().unwrap()), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("htp"), "{e}");
    }

    /// Kuma's defaults as a YAML file, the way a Kuma user's `kuma-cp.yaml` starts out.
    fn kumas_defaults_document() -> Value {
        let mut doc = Value::Object(Default::default());
        for key in kuma_keys() {
            let value: Value = serde_saphyr::from_str(key.default).unwrap_or(Value::Null);
            let path: Vec<String> = key.path.split('.').map(String::from).collect();
            set_path(&mut doc, &path, value);
        }
        doc
    }

    fn as_env_value(v: &Value) -> Option<String> {
        match v {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            Value::Array(items) => Some(
                items
                    .iter()
                    .filter_map(as_env_value)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            Value::Object(_) => None,
            other => Some(other.to_string()),
        }
    }

    #[test]
    fn kumas_own_defaults_file_loads_and_names_what_is_not_implemented() {
        let dir = std::env::temp_dir().join(format!("kcp-config-k-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("kuma-cp.defaults.yaml");
        let yaml = serde_saphyr::to_string(&kumas_defaults_document()).unwrap();
        std::fs::write(&file, yaml).unwrap();
        let c = Config::load(Some(file.to_str().unwrap()), &[]).unwrap();
        // Kuma's default mode is zone (standalone is its deprecated spelling).
        assert_eq!(c.mode, Mode::Zone);
        assert_eq!(c.api_server.http.port, 5681);
        let table = env_table();
        let not_ours: Vec<&str> = kuma_keys()
            .filter(|k| matches!(standing(k.path, &table), KeyStanding::KumaOnly))
            .map(|k| k.path)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut warned = c.unsupported_kuma_keys.clone();
        warned.sort();
        assert_eq!(warned, not_ours);
        assert!(
            warned.iter().any(|k| k == "metrics.dataplane.idleTimeout"),
            "{warned:?}"
        );
        assert!(!warned.iter().any(|k| k == "metrics.openTelemetry.enabled"));
        assert!(!warned.iter().any(|k| k == "apiServer.http.port"));
    }

    #[test]
    fn every_kuma_env_variable_is_read_or_named_as_not_implemented() {
        let table = env_table();
        for key in kuma_keys() {
            let default: Value = serde_saphyr::from_str(key.default).unwrap_or(Value::Null);
            let raw = as_env_value(&default).unwrap_or_else(|| "x".into());
            let loaded = Config::load(None, &env(&[(key.env, &raw)]));
            match standing(key.path, &table) {
                KeyStanding::KumaOnly => {
                    let c = loaded.unwrap_or_else(|e| panic!("{}: {e}", key.env));
                    assert_eq!(c.unsupported_kuma_keys, vec![key.env.to_string()]);
                }
                _ if default.is_null() || default.is_object() => {}
                _ => {
                    let c = loaded.unwrap_or_else(|e| panic!("{}={raw}: {e}", key.env));
                    assert!(c.unsupported_kuma_keys.is_empty(), "{}", key.env);
                    let mut at = serde_json::to_value(&c).unwrap();
                    for seg in key.path.split('.') {
                        at = at[seg].clone();
                    }
                    assert_eq!(
                        as_env_value(&at),
                        Some(raw),
                        "{} sets {}",
                        key.env,
                        key.path
                    );
                }
            }
        }
    }

    #[test]
    fn kumas_documented_universal_env_loads() {
        let postgres = [
            ("KUMA_ENVIRONMENT", "universal"),
            ("KUMA_STORE_TYPE", "postgres"),
            ("KUMA_STORE_POSTGRES_HOST", "db"),
            ("KUMA_STORE_POSTGRES_PORT", "5432"),
            ("KUMA_STORE_POSTGRES_USER", "kuma"),
            ("KUMA_STORE_POSTGRES_PASSWORD", "kuma"),
            ("KUMA_STORE_POSTGRES_DB_NAME", "kuma"),
        ];
        let mut global = env(&postgres);
        global.extend(env(&[("KUMA_MODE", "global")]));
        assert_eq!(Config::load(None, &global).unwrap().mode, Mode::Global);
        let mut zone = env(&postgres);
        zone.extend(env(&[
            ("KUMA_MODE", "zone"),
            ("KUMA_MULTIZONE_ZONE_NAME", "zone-1"),
            ("KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS", "grpcs://global:5685"),
            ("KUMA_MULTIZONE_ZONE_KDS_TLS_SKIP_VERIFY", "true"),
            ("KUMA_DP_SERVER_HDS_ENABLED", "false"),
            (
                "KUMA_XDS_SERVER_DATAPLANE_CONFIGURATION_REFRESH_INTERVAL",
                "1s",
            ),
        ]));
        let c = Config::load(None, &zone).unwrap();
        assert_eq!(c.multizone.zone.name, "zone-1");
        assert_eq!(
            c.unsupported_kuma_keys,
            [
                "KUMA_DP_SERVER_HDS_ENABLED",
                "KUMA_XDS_SERVER_DATAPLANE_CONFIGURATION_REFRESH_INTERVAL"
            ]
        );
        let standalone = env(&[
            ("KUMA_MODE", "standalone"),
            ("KUMA_ENVIRONMENT", "universal"),
        ]);
        assert_eq!(
            Config::load(None, &standalone).unwrap().mode,
            Mode::Standalone
        );
        // A key neither Kuma nor kuma-cp has is still an error, with the closest key as a hint.
        let e = Config::load(None, &env(&[("KUMA_TRACING_OPENTELEMETRY_ENDPOIT", "x")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("did you mean KUMA_TRACING_OPENTELEMETRY_ENDPOINT"),
            "{e}"
        );
    }

    #[test]
    fn foreign_kuma_vars_are_ignored() {
        Config::load(
            None,
            &env(&[
                ("KUMA_CONTROL_PLANE_URL", "x"),
                ("KUMA_DATAPLANE_NAME", "y"),
            ]),
        )
        .unwrap();
    }
}
